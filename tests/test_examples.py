"""
Every example under examples/, started the way a user starts it (``asphalt run config.yml``
from its folder, on a free port) and talked to with real clients (httpx, curl).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kyoukai import __version__, devcert

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
START_DEADLINE = 30.0
STOP_DEADLINE = 20.0
CLIENT_TIMEOUT = 10.0


def free_port() -> int:
    """A port that was free a moment ago (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def asphalt_command() -> list[str]:
    """The ``asphalt`` script of this interpreter's environment."""
    script = Path(sys.executable).with_name("asphalt")
    return [str(script)] if script.exists() else ["asphalt"]


class RunningExample:
    """``asphalt run`` in a subprocess, its output in a log file."""

    def __init__(self, cwd: Path, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        #: Set by a test that provokes a logged traceback on purpose.
        self.tracebacks_expected = False
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(
            args, cwd=cwd, stdout=self._log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_port(self, port: int) -> None:
        """Poll until ``port`` accepts connections; fail if the process exits or the deadline passes."""
        deadline = time.monotonic() + START_DEADLINE
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"nothing listened on port {port} within {START_DEADLINE}s:\n{self.output()}")
            try:
                # Doubles as the pause between attempts: returns early if the process died.
                code = self.process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"asphalt run exited with {code} before serving:\n{self.output()}")

    def stop(self) -> str:
        """SIGTERM (asphalt's graceful stop) and wait; the output."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self._log_file.close()
            pytest.fail(f"asphalt run did not stop within {STOP_DEADLINE}s of SIGTERM:\n{self.output()}")
        self._log_file.close()
        return self.output()


@pytest.fixture
def run_command(tmp_path: Path) -> Iterator:
    """Start a server command: ``run_command(folder, args, ports, env)``; stopped after the test."""
    started: list[RunningExample] = []

    def start(cwd: Path, args: list[str], ports: list[int], env: dict[str, str] | None = None) -> RunningExample:
        example = RunningExample(cwd, args, tmp_path / f"server-{len(started)}.log", env)
        started.append(example)
        for port in ports:
            example.wait_for_port(port)
        return example

    yield start
    for example in started:
        output = example.stop()
        if not example.tracebacks_expected:
            assert "Traceback" not in output, output
        assert example.process.returncode == 0, output


@pytest.fixture
def run_example(run_command) -> Iterator:
    """``asphalt run CONFIG --set key=value...`` in ``folder``: ``run_example(folder, config, sets, ports)``."""

    def start(cwd: Path, config: str, sets: dict[str, object], ports: list[int], options: tuple = ()):
        args = asphalt_command() + ["run", *options, config]
        for key, value in sets.items():
            args += ["--set", f"{key}={value}"]
        return run_command(cwd, args, ports)

    return start


def curl(*args: str) -> str:
    """Run curl, return what it printed (headers with ``-i``)."""
    result = subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", str(CLIENT_TIMEOUT), *args],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT + 5,
    )
    assert result.returncode == 0, result.stderr
    # curl writes "HTTP/2 200 " (no reason phrase on HTTP/2): drop trailing spaces per line.
    return "\n".join(line.rstrip() for line in result.stdout.replace("\r\n", "\n").split("\n"))


def h2_client(**kwargs) -> httpx.Client:
    """An httpx client speaking HTTP/2 with prior knowledge on cleartext."""
    return httpx.Client(http1=False, http2=True, timeout=CLIENT_TIMEOUT, **kwargs)


def h1_client(**kwargs) -> httpx.Client:
    return httpx.Client(timeout=CLIENT_TIMEOUT, **kwargs)


class TestHello:
    def test_pages(self, run_example) -> None:
        port = free_port()
        run_example(EXAMPLES / "hello", "config.yml", {"component.port": port}, [port])
        # Served over TLS with a self-signed development certificate, HTTP/2 by ALPN.
        with httpx.Client(
            http2=True, verify=False, timeout=CLIENT_TIMEOUT, base_url=f"https://127.0.0.1:{port}"
        ) as client:
            response = client.get("/")
            assert response.status_code == 200
            assert response.http_version == "HTTP/2"
            assert response.text == "Hello from Kyoukai!\n"
            assert response.headers["server"] == f"Kyoukai/{__version__}"
            assert client.get("/hello/World").text == "Hello, World!\n"
            assert client.get("/nowhere").status_code == 404

    @pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
    def test_a_browser_gets_the_page_over_http2(self, run_example, tmp_path: Path) -> None:
        """Headless Chromium loads the README's example over HTTPS; the access log shows HTTP/2."""
        port = free_port()
        example = run_example(EXAMPLES / "hello", "config.yml", {"component.port": port}, [port])
        browser = subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--ignore-certificate-errors",
                f"--user-data-dir={tmp_path / 'chromium'}",
                "--dump-dom",
                f"https://localhost:{port}/",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "Hello from Kyoukai!" in browser.stdout, browser.stdout + browser.stderr
        output = example.stop()
        assert '"GET / HTTP/2" 200' in output, output

    def test_curl_gets_http2_over_tls(self, run_example) -> None:
        """The README's first command, as a new user tries it: curl -k --http2 prints HTTP/2 200."""
        port = free_port()
        example = run_example(EXAMPLES / "hello", "config.yml", {"component.port": port}, [port], ("--loop", "uvloop"))
        out = curl("-k", "-i", "--http2", f"https://localhost:{port}/")
        assert out.startswith("HTTP/2 200\n"), out
        assert out.endswith("\n\nHello from Kyoukai!\n")
        http11 = curl("-k", "-i", "--http1.1", f"https://localhost:{port}/")
        assert http11.startswith("HTTP/1.1 200 OK\n"), http11
        # On uvloop, as the command asks: no hint to use it.
        assert "uvloop is installed" not in example.output()


class TestHttp2Config:
    def test_prior_knowledge_upgrade_and_http11(self, run_example) -> None:
        port = free_port()
        run_example(ROOT, "examples/http2/config.yml", {"component.port": port}, [port])
        url = f"http://127.0.0.1:{port}/"
        out = curl("-i", "--http2-prior-knowledge", url)
        assert out.startswith("HTTP/2 200\n"), out
        assert out.endswith("\n\nHello from Kyoukai!\n")
        upgraded = curl("-i", "--http2", url)
        assert upgraded.startswith("HTTP/1.1 101 Switching Protocols\n"), upgraded
        assert "\nHTTP/2 200\n" in upgraded
        assert upgraded.endswith("Hello from Kyoukai!\n")
        plain = curl("-i", "--http1.1", url)
        assert plain.startswith("HTTP/1.1 200 OK\n"), plain


class TestSideBySide:
    def test_two_ports(self, run_example) -> None:
        http11, http2 = free_port(), free_port()
        sets = {"component.components.http11.port": http11, "component.components.http2.port": http2}
        run_example(ROOT, "examples/side_by_side/config.yml", sets, [http11, http2])
        out = curl("-i", f"http://127.0.0.1:{http11}/hello/one")
        assert out.startswith("HTTP/1.1 200 OK\n") and out.endswith("Hello, one!\n"), out
        out = curl("-i", "--http2-prior-knowledge", f"http://127.0.0.1:{http2}/hello/two")
        assert out.startswith("HTTP/2 200\n") and out.endswith("Hello, two!\n"), out
        # The HTTP/1.1 port does not take HTTP/2 (http2 is off there) ...
        with socket.create_connection(("127.0.0.1", http11), timeout=CLIENT_TIMEOUT) as sock:
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)
            answer = b"".join(iter(lambda: sock.recv(4096), b""))
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
        # ... and the HTTP/2-only port tells an HTTP/1.1 client so.
        refused = h1_client().get(f"http://127.0.0.1:{http2}/")
        assert refused.status_code == 505
        assert "HTTP/2 only" in refused.text


class TestJsonApi:
    def test_notes(self, run_example) -> None:
        port = free_port()
        run_example(EXAMPLES / "json_api", "config.yml", {"component.port": port}, [port])
        with h1_client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/api/").json() == {"notes": "/api/notes/"}
            created = client.post("/api/notes/", json={"text": "milk"})
            assert created.status_code == 201
            assert created.headers["content-type"] == "application/json"
            note = created.json()
            assert note["text"] == "milk"
            assert created.headers["location"] == f"/api/notes/{note['id']}"
            assert client.get(created.headers["location"]).json() == note
            assert client.get("/api/notes/").json() == [note]
            assert client.delete(f"/api/notes/{note['id']}").status_code == 204
            assert client.get("/api/notes/").json() == []

    def test_errors_are_json_under_api(self, run_example) -> None:
        port = free_port()
        example = run_example(EXAMPLES / "json_api", "config.yml", {"component.port": port}, [port])
        example.tracebacks_expected = True
        with h1_client(base_url=f"http://127.0.0.1:{port}") as client:
            missing = client.get("/api/notes/999")
            assert missing.status_code == 404
            assert missing.json() == {"status": 404, "error": "Not Found", "detail": "There is no note 999."}
            unknown = client.get("/api/elsewhere")
            assert unknown.status_code == 404 and unknown.json()["error"] == "Not Found"
            bad = client.post("/api/notes/", json=["not", "a", "note"])
            assert bad.status_code == 400
            assert bad.json()["detail"] == 'A note is a JSON object with a string "text".'
            crash = client.get("/api/notes/crash")
            assert crash.status_code == 500
            assert crash.json()["error"] == "Internal Server Error"
            assert "a bug in a handler" not in crash.text, "the exception must not leak to the client"
            outside = client.get("/elsewhere")
            assert outside.status_code == 404
            assert outside.headers["content-type"].startswith("text/html")
        output = example.stop()
        assert "RuntimeError: a bug in a handler" in output, "the 500 is logged with its traceback"


class TestFiles:
    def test_form_upload_and_download(self, run_example, tmp_path: Path) -> None:
        port = free_port()
        uploads = tmp_path / "uploads"
        sets = {"component.port": port, "component.upload_dir": str(uploads)}
        run_example(EXAMPLES / "files", "config.yml", sets, [port])
        content = os.urandom(200_000)
        with h1_client(base_url=f"http://127.0.0.1:{port}") as client:
            sent = client.post("/upload", files={"file": ("../report 1.bin", content)})
            assert sent.status_code == 303 and sent.headers["location"].endswith("/")
            assert (uploads / "report_1.bin").read_bytes() == content
            assert 'href="/files/report_1.bin"' in client.get("/").text
            got = client.get("/files/report_1.bin")
            assert got.status_code == 200
            assert got.content == content
            assert got.headers["content-length"] == str(len(content))
            assert got.headers["content-disposition"] == 'attachment; filename="report_1.bin"'
            head = client.head("/files/report_1.bin")
            assert head.status_code == 200 and head.content == b""
            assert client.post("/upload", files={}).status_code == 400
            assert client.get("/files/absent.txt").status_code == 404

    def test_streaming_upload_and_download_over_http2(self, run_example, tmp_path: Path) -> None:
        port = free_port()
        uploads = tmp_path / "uploads"
        # A body over max_body_size: the streaming route is not bound by it.
        sets = {"component.port": port, "component.upload_dir": str(uploads), "component.max_body_size": 1_000_000}
        run_example(EXAMPLES / "files", "config.yml", sets, [port])
        content = os.urandom(3 * 1024 * 1024 + 5)

        def body() -> Iterator[bytes]:
            for start in range(0, len(content), 100_000):
                yield content[start : start + 100_000]

        with h2_client(base_url=f"http://127.0.0.1:{port}") as client:
            put = client.put("/files/big.bin", content=body())
            assert put.http_version == "HTTP/2"
            assert put.status_code == 201
            assert put.json() == {"name": "big.bin", "size": len(content)}
            with client.stream("GET", "/files/big.bin") as got:
                assert got.status_code == 200
                received = b"".join(got.iter_bytes())
            assert received == content
        assert (uploads / "big.bin").read_bytes() == content
        # A form upload arrives complete, so max_body_size applies: 413 before the client has
        # sent it all; the rest of the upload is read and thrown away (max_discard_size), so
        # the client finishes it and reports the 413, with no reset.
        big_file = tmp_path / "big.bin"
        big_file.write_bytes(content)
        out = subprocess.run(
            ["nghttp", "-v", "-d", str(big_file), f"http://127.0.0.1:{port}/upload"],
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT,
        ).stdout
        assert ":status: 413" in out, out
        assert "RST_STREAM" not in out, out


def next_fields(lines: Iterator[str], count: int) -> list[str]:
    """The next ``count`` field lines of an event stream (blank lines and comments skipped)."""
    fields: list[str] = []
    while len(fields) < count:
        line = next(lines)
        if line and not line.startswith(":"):
            fields.append(line)
    return fields


class TestServerSentEvents:
    @pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
    def test_events_reach_every_listener(self, run_example, http2: bool) -> None:
        port = free_port()
        run_example(EXAMPLES / "sse", "config.yml", {"component.port": port}, [port])
        base = f"http://127.0.0.1:{port}"
        make_client = h2_client if http2 else h1_client
        with make_client(base_url=base) as listener, h1_client(base_url=base) as poster:
            assert "EventSource" in listener.get("/").text
            with listener.stream("GET", "/events") as one, listener.stream("GET", "/events") as two:
                assert one.headers["content-type"] == "text/event-stream"
                assert one.headers["cache-control"] == "no-cache"
                lines_one, lines_two = one.iter_lines(), two.iter_lines()
                # The first comment means the listener is registered.
                assert next(lines_one) == ": connected"
                assert next(lines_two) == ": connected"
                for text in ("hello", "again"):
                    posted = poster.post("/messages", data={"text": text})
                    assert posted.status_code == 202
                    assert posted.json() == {"delivered": 2}
                    for lines in (lines_one, lines_two):
                        assert next_fields(lines, 2) == ["event: message", f'data: {{"text": "{text}"}}']
            assert poster.post("/messages", data={"text": " "}).status_code == 400

    @pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
    def test_stopping_ends_the_streams_at_once(self, run_command, sig: signal.Signals) -> None:
        """Listeners connected do not hold up a stop: their streams end, cleanly, first."""
        port = free_port()
        # Ctrl+C as in a terminal: a shell that starts a job in the background ignores SIGINT
        # for it, and an ignored signal stays ignored across exec.
        restore_sigint = (
            "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
        )
        # A stop that waited for the streams would take shutdown_timeout, past STOP_DEADLINE.
        args = [sys.executable, "-c", restore_sigint, *asphalt_command(), "run", "config.yml"]
        args += ["--set", f"component.port={port}", "--set", f"component.shutdown_timeout={STOP_DEADLINE * 3}"]
        example = run_command(EXAMPLES / "sse", args, [port])
        url = f"http://127.0.0.1:{port}/events"
        # curl for HTTP/2: httpx's h2 fails on the PING that follows the server's first GOAWAY.
        command = ["curl", "--silent", "--show-error", "--no-buffer", "--max-time", str(STOP_DEADLINE)]
        h2 = subprocess.Popen([*command, "--http2-prior-knowledge", url], stdout=subprocess.PIPE, text=True)
        with h2, h1_client() as h1, h1.stream("GET", url) as one:
            lines = one.iter_lines()
            assert next(lines) == ": connected"
            assert h2.stdout.readline() == ": connected\n"
            example.process.send_signal(sig)
            assert [line for line in lines if line] == []  # the end, with no error
            assert h2.wait(STOP_DEADLINE) == 0 and h2.stdout.read() == "\n"
        try:
            example.process.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the example did not stop within {STOP_DEADLINE}s:\n{example.output()}")
        output = example.output()
        assert example.process.returncode == 0, output
        assert "Application stopped" in output
        assert "aclose()" not in output and "still busy after shutdown_timeout" not in output, output


class TestTls:
    def test_http2_over_tls_with_a_development_certificate(self, run_example, tmp_path: Path) -> None:
        paths = devcert.write(tmp_path)
        port = free_port()
        sets = {
            "component.port": port,
            "component.ssl.ssl_certfile": paths.certfile,
            "component.ssl.ssl_keyfile": paths.keyfile,
        }
        run_example(EXAMPLES / "tls", "config.yml", sets, [port])
        out = curl("-i", "-k", "--http2", f"https://localhost:{port}/")
        assert out.startswith("HTTP/2 200\n"), out
        assert out.endswith("\n\nHello from Kyoukai over HTTP/2 (https)!\n"), out
        out = curl("-i", "--cacert", str(paths.certfile), "--http1.1", f"https://localhost:{port}/")
        assert out.startswith("HTTP/1.1 200 OK\n"), out
        assert out.endswith("Hello from Kyoukai over HTTP/1.1 (https)!\n")

    @pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
    def test_a_browser_negotiates_http2(self, run_example, tmp_path: Path) -> None:
        paths = devcert.write(tmp_path)
        port = free_port()
        sets = {
            "component.port": port,
            "component.ssl.ssl_certfile": paths.certfile,
            "component.ssl.ssl_keyfile": paths.keyfile,
        }
        run_example(EXAMPLES / "tls", "config.yml", sets, [port])
        browser = subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--ignore-certificate-errors",
                f"--user-data-dir={tmp_path / 'chromium'}",
                "--dump-dom",
                f"https://localhost:{port}/",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        # The page names the protocol the server saw (SERVER_PROTOCOL): ALPN chose h2.
        assert "Hello from Kyoukai over HTTP/2 (https)!" in browser.stdout, browser.stdout + browser.stderr


class TestDeploy:
    def test_behind_a_proxy_with_uvloop(self, run_example) -> None:
        pytest.importorskip("uvloop")
        port = free_port()
        run_example(EXAMPLES / "deploy", "config.yml", {"component.port": port}, [port], ("--loop", "uvloop"))
        with h1_client(base_url=f"http://127.0.0.1:{port}") as client:
            direct = client.get("/")
            assert direct.text == "Hello 127.0.0.1, you came over http.\n"
            proxied = client.get(
                "/", headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.7", "X-Forwarded-Proto": "https"}
            )
            assert proxied.text == "Hello 198.51.100.7, you came over https.\n"

    def test_the_service_and_proxy_files_match_the_config(self) -> None:
        folder = EXAMPLES / "deploy"
        config = folder / "config.yml"
        port = re.search(r"^  port: (\d+)", config.read_text(), re.M).group(1)
        assert f"server 127.0.0.1:{port};" in (folder / "nginx.conf").read_text()
        assert (
            "ExecStart=/srv/myapp/venv/bin/asphalt run --loop uvloop config.yml"
            in (folder / "kyoukai.service").read_text()
        )


class TestRunDirectly:
    def test_app_run(self, run_command) -> None:
        port = free_port()
        run_command(EXAMPLES / "guide", [sys.executable, "run_directly.py"], [port], {"PORT": str(port)})
        with h1_client() as client:
            assert client.get(f"http://127.0.0.1:{port}/").text == "Served by app.run()\n"
