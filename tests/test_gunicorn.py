"""
The gunicorn worker (kyoukai.backends.gunicorn), in real gunicorn processes on 127.0.0.1:
HTTP/1.1 and HTTP/2 (h2c, TLS ALPN), graceful reload (HUP) and stop (TERM) under traffic,
--max-requests recycling, the --timeout heartbeat, and asphalt config.yml mode.

The workers import this module (``test_gunicorn:app``) to serve the app below.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from h2client import H2Client
from test_examples import free_port
from werkzeug.wrappers import Response

from kyoukai import Kyoukai
from kyoukai.util import as_json

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
WORKER = "kyoukai.backends.gunicorn.KyoukaiWorker"
DEADLINE = 20.0
CLIENT_TIMEOUT = 10.0
REFUSED_STREAM = 7

app = Kyoukai("gunicorn_test")


@app.route("/")
async def whoami(ctx):
    return as_json({"pid": os.getpid(), "protocol": ctx.environ["SERVER_PROTOCOL"], "scheme": ctx.request.scheme})


@app.route("/slow")
async def slow(ctx):
    """``started``, then ``finished`` after ``seconds``: a response a test can catch in flight."""
    seconds = float(ctx.request.args["seconds"])

    async def body():
        yield b"started\n"
        await asyncio.sleep(seconds)
        yield b"finished\n"

    return Response(body())


@app.route("/block")
def block(ctx):
    """Blocks the worker's event loop (a sync handler runs on it)."""
    time.sleep(float(ctx.request.args["seconds"]))
    return "unblocked"


class Gunicorn:
    """``gunicorn -k KyoukaiWorker`` in a subprocess on a free port, its log in a file."""

    def __init__(
        self, log: Path, *args: str, workers: int = 2, cwd: Path = ROOT, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.workers = workers
        self.log = log
        self._log_file = log.open("wb")
        command = [sys.executable, "-m", "gunicorn", "-k", WORKER, "-w", str(workers)]
        command += ["-b", f"127.0.0.1:{self.port}", "--no-control-socket", "--pythonpath", str(TESTS), *args]
        self.process = subprocess.Popen(
            command, cwd=cwd, stdout=self._log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def booted(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", self.output())]

    def exited(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"Worker exiting \(pid: (\d+)\)", self.output())]

    def live(self) -> set[int]:
        """The workers booted and not exited."""
        return set(self.booted()) - set(self.exited())

    def started_components(self) -> int:
        """How many times a worker's component started listening."""
        return self.output().count("Kyoukai serving")

    def wait_for(self, condition: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
        """Poll ``condition`` until it holds; fail with the log if gunicorn exits or time runs out."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn: no {what} within {timeout}s:\n{self.output()}")
            try:
                code = self.process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"gunicorn exited with {code} while waiting for {what}:\n{self.output()}")

    def start(self) -> Gunicorn:
        self.wait_for(lambda: self.started_components() >= self.workers, f"{self.workers} serving workers")
        return self

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def refused(self) -> str:
        """Wait for a gunicorn that must not start to exit with an error; its log."""
        try:
            code = self.process.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"gunicorn did not exit within {DEADLINE}s:\n{self.output()}")
        finally:
            self._log_file.close()
        output = self.output()
        assert code != 0, output
        return output

    def stop(self) -> str:
        """TERM (gunicorn's graceful stop), wait, and check the exit; the log."""
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"gunicorn did not stop within {DEADLINE}s of SIGTERM:\n{self.output()}")
        finally:
            self._log_file.close()
        output = self.output()
        assert code == 0, output
        return output


@pytest.fixture
def gunicorn(tmp_path: Path):
    """``gunicorn(*args, workers=2)``: a started gunicorn, stopped (and checked) after the test."""
    started: list[Gunicorn] = []

    def start(*args: str, workers: int = 2, cwd: Path = ROOT, wait: bool = True) -> Gunicorn:
        server = Gunicorn(tmp_path / f"gunicorn-{len(started)}.log", *args, workers=workers, cwd=cwd)
        started.append(server)
        return server.start() if wait else server

    yield start
    for server in started:
        output = server.stop()
        assert "Traceback" not in output, output


def h2load(*args: str) -> str:
    """Run h2load; its report."""
    result = subprocess.run(["h2load", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


class Traffic:
    """
    Requests in background threads until stopped, each retried only where the protocol says it
    was not processed: HTTP/2 streams above a GOAWAY's last stream id or refused with
    REFUSED_STREAM (RFC 9113 section 8.7), and HTTP/1.1 requests on a connection the server
    closed before answering (RFC 9112 section 9.3.1; httpx does not retry by itself). Anything
    else that does not end in a 200 is a failure. The server's access log tells whether a
    retried request had in fact been processed.
    """

    def __init__(self, port: int, *, http11_clients: int = 2, http2_clients: int = 2, streams: int = 8) -> None:
        self.port = port
        self.streams = streams
        self.ok: list[tuple[str, int]] = []
        self.failures: list[str] = []
        self.retried = {"HTTP/1.1": 0, "HTTP/2": 0}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._http11, daemon=True) for _ in range(http11_clients)]
        self._threads += [threading.Thread(target=self._http2, daemon=True) for _ in range(http2_clients)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(DEADLINE)
            assert not thread.is_alive(), "a traffic thread is stuck"

    def served_by(self) -> set[int]:
        with self._lock:
            return {pid for _, pid in self.ok}

    def count(self) -> int:
        with self._lock:
            return len(self.ok)

    def _record(self, protocol: str, pid: int | None = None, failure: str | None = None) -> None:
        with self._lock:
            if failure is not None:
                self.failures.append(failure)
            else:
                self.ok.append((protocol, pid))

    def _http11(self) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=CLIENT_TIMEOUT) as client:
            while not self._stop.is_set():
                try:
                    response = client.get("/")
                except (httpx.RemoteProtocolError, httpx.ReadError) as e:
                    if isinstance(e, httpx.ReadError) or "without sending a response" in str(e):
                        with self._lock:
                            self.retried["HTTP/1.1"] += 1
                    else:
                        self._record("HTTP/1.1", failure=f"HTTP/1.1: {e!r}")
                    continue
                except httpx.HTTPError as e:
                    self._record("HTTP/1.1", failure=f"HTTP/1.1: {e!r}")
                    continue
                if response.status_code == 200:
                    self._record("HTTP/1.1", response.json()["pid"])
                else:
                    self._record("HTTP/1.1", failure=f"HTTP/1.1: status {response.status_code}")

    def _http2(self) -> None:
        pending = 0
        while not self._stop.is_set():
            with H2Client(self.port, timeout=CLIENT_TIMEOUT) as client:
                while not self._stop.is_set() and client.goaway is None and not client.eof:
                    count = self.streams + pending
                    sent: list[int] = []
                    try:
                        for _ in range(count):
                            sent.append(client.request("/"))
                    except OSError:
                        pass  # the server closed the connection: what was not sent is sent again
                    pending = count - len(sent) + self._h2_batch(client, sent)

    def _h2_batch(self, client: H2Client, stream_ids: list[int]) -> int:
        """Read the batch's responses; how many must be sent again on a new connection."""
        streams = [client.streams[i] for i in stream_ids]
        deadline = time.monotonic() + CLIENT_TIMEOUT
        try:
            while not all(s.done for s in streams) and not client.eof:
                if client.read_frame(deadline) is None:
                    break
        except TimeoutError:
            self._record("HTTP/2", failure=f"HTTP/2: no answer within {CLIENT_TIMEOUT}s")
        if client.eof and not client.frames:
            # Closed before the server said a word (not even its SETTINGS): nothing was processed.
            with self._lock:
                self.retried["HTTP/2"] += len(streams)
            return len(streams)
        retry = 0
        for stream in streams:
            last = client.goaway.last_stream_id if client.goaway is not None else None
            if stream.ended and stream.status == 200:
                body = bytes(stream.data)
                self._record("HTTP/2", int(re.search(rb'"pid": (\d+)', body).group(1)))
            elif stream.reset_code == REFUSED_STREAM or (last is not None and stream.stream_id > last):
                retry += 1
            else:
                self._record(
                    "HTTP/2",
                    failure=f"HTTP/2 stream {stream.stream_id}: status {stream.status}, reset {stream.reset_code}, "
                    f"GOAWAY last stream {last}, eof {client.eof}",
                )
        with self._lock:
            self.retried["HTTP/2"] += retry
        return retry


def wait_until(condition: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout}s")
        time.sleep(0.01)


class TestProtocols:
    def test_http11_http2_and_upgrade(self, gunicorn) -> None:
        server = gunicorn("--http-protocols", "h1,h2", "test_gunicorn:app")
        with httpx.Client(timeout=CLIENT_TIMEOUT) as client:
            assert client.get(server.url()).json()["protocol"] == "HTTP/1.1"
        with httpx.Client(http1=False, http2=True, timeout=CLIENT_TIMEOUT) as client:
            response = client.get(server.url())
            assert response.http_version == "HTTP/2"
            assert response.json()["protocol"] == "HTTP/2"
        upgraded = subprocess.run(
            ["curl", "-si", "--http2", "--max-time", "10", server.url()], capture_output=True, text=True, timeout=15
        ).stdout
        assert upgraded.startswith("HTTP/1.1 101 Switching Protocols"), upgraded
        assert '"protocol": "HTTP/2"' in upgraded
        for mode in ((), ("--h1",)):
            report = h2load("-n", "2000", "-c", "10", "-m", "10", *mode, server.url())
            assert "2000 succeeded, 0 failed, 0 errored" in report, report

    def test_http11_only_without_h2(self, gunicorn) -> None:
        server = gunicorn("test_gunicorn:app", workers=1)
        with socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT) as sock:
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)
            answer = b"".join(iter(lambda: sock.recv(4096), b""))
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
        with httpx.Client(timeout=CLIENT_TIMEOUT) as client:
            assert client.get(server.url()).json()["protocol"] == "HTTP/1.1"

    def test_tls_alpn(self, gunicorn, tls_files: dict[str, str]) -> None:
        server = gunicorn(
            "--certfile", tls_files["cert"], "--keyfile", tls_files["key"], "--http-protocols", "h2,h1",
            "test_gunicorn:app", workers=1,
        )  # fmt: skip
        context = ssl.create_default_context(cafile=tls_files["ca"])
        with httpx.Client(http2=True, verify=context, timeout=CLIENT_TIMEOUT) as client:
            response = client.get(server.url(scheme="https"))
            assert response.http_version == "HTTP/2"
            assert response.json() == {"pid": min(server.live()), "protocol": "HTTP/2", "scheme": "https"}
        with httpx.Client(verify=context, timeout=CLIENT_TIMEOUT) as client:
            assert client.get(server.url(scheme="https")).json()["protocol"] == "HTTP/1.1"


class TestLifecycle:
    @pytest.mark.parametrize("sockets", [(), ("--reuse-port",)], ids=["shared-socket", "reuse-port"])
    def test_hup_under_traffic_loses_nothing(self, gunicorn, sockets: tuple[str, ...]) -> None:
        server = gunicorn(
            "--http-protocols", "h1,h2", "--graceful-timeout", "10", "--access-logfile", "-", *sockets,
            "test_gunicorn:app",
        )  # fmt: skip
        old = server.live()
        with Traffic(server.port) as traffic:
            wait_until(lambda: traffic.count() >= 200, "traffic before the reload")
            server.signal(signal.SIGHUP)
            server.wait_for(lambda: old <= set(server.exited()), "exit of the old workers")
            server.wait_for(lambda: server.started_components() >= 4, "the new workers serving")
            new = server.live()
            assert len(new) == 2 and not new & old
            served_before = traffic.count()
            wait_until(lambda: traffic.served_by() & new and traffic.count() >= served_before + 200, "traffic after")
        assert traffic.failures == [], traffic.failures[:10]
        protocols = {protocol for protocol, _ in traffic.ok}
        assert protocols == {"HTTP/1.1", "HTTP/2"}
        assert traffic.served_by() & old and traffic.served_by() & new
        # Every request the workers processed reached its client: none of the retried ones had
        # been processed, and no answer was lost.
        processed = len(re.findall(r'"GET / HTTP/(?:1\.1|2)" 200', server.output()))
        assert processed == len(traffic.ok), (processed, len(traffic.ok), traffic.retried)
        # An HTTP/1.1 client loses at most its idle connection to each old worker.
        assert traffic.retried["HTTP/1.1"] <= 2 * len(old), traffic.retried

    @pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
    def test_term_lets_a_slow_response_finish(self, gunicorn, http2: bool) -> None:
        server = gunicorn("--http-protocols", "h1,h2", "--graceful-timeout", "10", "test_gunicorn:app", workers=1)
        if http2:
            with H2Client(server.port, timeout=CLIENT_TIMEOUT) as client:
                stream = client.streams[client.request("/slow?seconds=1")]
                client.read_until(lambda: bytes(stream.data) == b"started\n")
                server.signal(signal.SIGTERM)
                # The two-step GOAWAY: 2**31-1 and a PING, then the last stream id.
                client.read_until(lambda: client.goaway is not None and client.goaway.last_stream_id != 2**31 - 1)
                assert client.goaway.error_code == 0 and client.goaway.last_stream_id == stream.stream_id
                client.response(stream.stream_id)
                assert (stream.status, bytes(stream.data)) == (200, b"started\nfinished\n")
                client.wait_closed()
        else:
            with httpx.Client(timeout=CLIENT_TIMEOUT) as client:
                with client.stream("GET", server.url("/slow?seconds=1")) as response:
                    lines = response.iter_lines()
                    assert next(lines) == "started"
                    server.signal(signal.SIGTERM)
                    assert list(lines) == ["finished"]
        output = server.stop()
        assert "Shutting down: Master" in output

    def test_max_requests_recycles_workers(self, gunicorn) -> None:
        server = gunicorn(
            "--http-protocols", "h1,h2", "--max-requests", "50", "--max-requests-jitter", "0",
            "--access-logfile", "-", "test_gunicorn:app",
        )  # fmt: skip
        first = server.live()
        with Traffic(server.port, http11_clients=1, http2_clients=1, streams=4) as traffic:
            wait_until(lambda: len(set(server.booted()) - first) >= 4, "four replacement workers")
            wait_until(lambda: traffic.served_by() - first, "a request served by a replacement")
        assert traffic.failures == [], traffic.failures[:10]
        processed = len(re.findall(r'"GET / HTTP/(?:1\.1|2)" 200', server.output()))
        assert processed == len(traffic.ok), (processed, len(traffic.ok), traffic.retried)
        assert server.output().count("Autorestarting worker after current request (max_requests=50)") >= 4
        server.wait_for(lambda: len(server.live()) == 2, "two workers after recycling")

    def test_blocked_worker_is_killed_idle_one_lives(self, gunicorn) -> None:
        server = gunicorn("--timeout", "2", "test_gunicorn:app")
        idle_and_blocked = server.live()

        def request_block() -> None:
            try:
                httpx.get(server.url("/block?seconds=30"), timeout=DEADLINE)
            except httpx.HTTPError:
                pass  # its worker is killed: no answer is expected

        blocker = threading.Thread(target=request_block, daemon=True)
        blocker.start()
        server.wait_for(lambda: "WORKER TIMEOUT" in server.output(), "WORKER TIMEOUT", timeout=15)
        killed = {int(pid) for pid in re.findall(r"WORKER TIMEOUT \(pid:(\d+)\)", server.output())}
        assert len(killed) == 1 and killed < idle_and_blocked
        # The other worker was idle just as long, and its heartbeat kept it alive.
        survivor = idle_and_blocked - killed
        server.wait_for(lambda: len(server.live()) == 2 and survivor < server.live(), "a replacement")
        blocker.join(DEADLINE)
        with httpx.Client(timeout=CLIENT_TIMEOUT) as client:
            assert client.get(server.url()).status_code == 200


class TestAsphaltConfig:
    def test_config_yml_serves_on_gunicorn_sockets(self, gunicorn) -> None:
        folder = ROOT / "examples" / "deploy"
        server = gunicorn("-c", "gunicorn.conf.py", "config.yml", cwd=folder)
        with httpx.Client(timeout=CLIENT_TIMEOUT) as client:
            direct = client.get(server.url())
            assert direct.text == "Hello 127.0.0.1, you came over http.\n"
            proxied = client.get(server.url(), headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
            assert proxied.text == "Hello 203.0.113.9, you came over https.\n"
            pids = {client.get(server.url("/metrics")).json()["pid"] for _ in range(20)}
        assert pids <= server.live()
        # config.yml's port (8000) is not gunicorn's: the component took gunicorn's socket, with
        # gunicorn.conf.py's http_protocols.
        assert f"Kyoukai serving HTTP/1.1 and HTTP/2 on http://127.0.0.1:{server.port}" in server.output()
        server.wait_for(lambda: '"GET / HTTP/1.1" 200' in server.output(), "access log lines")
        assert re.search(r'203\.0\.113\.9 - - \[[^]]+\] "GET / HTTP/1\.1" 200 \d+ \d+\.\d{6}', server.output())


def write_config(folder: Path, component: str) -> Path:
    """A config.yml in ``folder`` whose root component is the YAML ``component`` (indented by 2)."""
    path = folder / "config.yml"
    path.write_text("component:\n" + textwrap.indent(textwrap.dedent(component).strip(), "  ") + "\n")
    return path


KYOUKAI_ON_8000 = """
    type: kyoukai
    app: test_gunicorn:app
    ip: 127.0.0.1
    port: 8000
"""


class TestAsphaltConfigTLSAndHTTP2:
    """gunicorn's --certfile/--keyfile and --http-protocols in config.yml mode."""

    @pytest.mark.parametrize("h2", [True, False], ids=["h2,h1", "h1"])
    def test_gunicorn_tls_and_h2_reach_the_component(
        self, gunicorn, tls_files: dict[str, str], tmp_path: Path, h2: bool
    ) -> None:
        write_config(tmp_path, KYOUKAI_ON_8000)
        protocols = ("--http-protocols", "h2,h1") if h2 else ()
        tls = ("--certfile", tls_files["cert"], "--keyfile", tls_files["key"])
        server = gunicorn(*tls, *protocols, "config.yml", workers=1, cwd=tmp_path)
        assert f"Listening at: https://127.0.0.1:{server.port}" in server.output()
        served = "HTTP/1.1 and HTTP/2" if h2 else "HTTP/1.1"
        assert f"Kyoukai serving {served} on https://127.0.0.1:{server.port}" in server.output()
        context = ssl.create_default_context(cafile=tls_files["ca"])
        with httpx.Client(http2=True, verify=context, timeout=CLIENT_TIMEOUT) as client:
            response = client.get(server.url(scheme="https"))
        expected = "HTTP/2" if h2 else "HTTP/1.1"
        assert response.http_version == expected
        assert response.json() == {"pid": min(server.live()), "protocol": expected, "scheme": "https"}

    def test_h2_on_cleartext(self, gunicorn, tmp_path: Path) -> None:
        write_config(tmp_path, KYOUKAI_ON_8000)
        server = gunicorn("--http-protocols", "h1,h2", "config.yml", workers=1, cwd=tmp_path)
        with httpx.Client(http1=False, http2=True, timeout=CLIENT_TIMEOUT) as client:
            assert client.get(server.url()).json()["protocol"] == "HTTP/2"

    @pytest.mark.parametrize(
        ("component", "args", "message"),
        [
            (
                KYOUKAI_ON_8000 + "    http2: false\n",
                ("--http-protocols", "h1,h2"),
                "config.yml: component has http2: false, but gunicorn's --http-protocols includes h2: remove one",
            ),
            (
                KYOUKAI_ON_8000 + "    ssl: {enabled: true, dev_certificate: true}\n",
                ("--certfile", "{cert}", "--keyfile", "{key}"),
                "config.yml: component has an ssl block of its own",
            ),
            (
                KYOUKAI_ON_8000,
                ("--certfile", "{cert}", "--keyfile", "{key}", "--cert-reqs", "2", "--ca-certs", "{ca}"),
                "--cert-reqs 2: KyoukaiWorker does not check client certificates",
            ),
            (
                # Two components, neither on gunicorn's port: the worker cannot tell which one
                # will take gunicorn's socket, and the one that does serves it in cleartext.
                """
                type: asphalt.core:ContainerComponent
                components:
                  one: {type: kyoukai, app: "test_gunicorn:app", ip: 127.0.0.1, port: 0}
                  two: {type: kyoukai, app: "test_gunicorn:app", ip: 127.0.0.1, port: 0}
                """,
                ("--certfile", "{cert}", "--keyfile", "{key}"),
                "serves cleartext, but gunicorn was given --certfile and announces https: give it gunicorn's port",
            ),
        ],
        ids=["http2-false", "own-ssl", "client-certificates", "not-on-gunicorns-port"],
    )
    def test_conflicts_stop_the_start_up(
        self, tmp_path: Path, tls_files: dict[str, str], component: str, args: tuple[str, ...], message: str
    ) -> None:
        write_config(tmp_path, component)
        args = tuple(arg.format(**tls_files) for arg in args)
        server = Gunicorn(tmp_path / "gunicorn.log", *args, "config.yml", workers=1, cwd=tmp_path)
        output = server.refused()
        assert message in output, output
        assert "App failed to load" in output or "Worker failed to boot" in output, output


class TestGunicornAdapter:
    def test_the_22_name_says_what_to_run(self) -> None:
        from kyoukai.backends.gunicorn import GunicornAdapter, KyoukaiWorker

        assert WORKER == f"{KyoukaiWorker.__module__}.{KyoukaiWorker.__name__}"
        with pytest.raises(RuntimeError, match="gaiohttp") as raised:
            GunicornAdapter(app)
        assert f"gunicorn -k {WORKER} myapp:app" in str(raised.value)
        with pytest.raises(RuntimeError) as raised:
            GunicornAdapter.from_asphalt_config("config.yml")
        assert f"gunicorn -k {WORKER} config.yml" in str(raised.value)
