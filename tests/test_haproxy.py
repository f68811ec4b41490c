"""
The HAProxy recipe of examples/deploy: haproxy.cfg (TLS and HTTP/2 to clients, cleartext
HTTP/2 with prior knowledge to the backends) in front of two ``asphalt run h2_backend.yml``
processes serving the app below (they import this module as ``test_haproxy:app``).

The client connects from 127.0.0.2 and HAProxy from 127.0.0.1, so the backends can tell the
real client from the proxy.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from test_examples import EXAMPLES, START_DEADLINE, RunningExample, asphalt_command, free_port

from kyoukai import Kyoukai
from kyoukai.util import as_json

#: Debian installs it in /usr/sbin, which a user's PATH may lack.
HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (Debian: apt-get install haproxy)")

DEPLOY = EXAMPLES / "deploy"
TESTS = Path(__file__).resolve().parent
CLIENT = "127.0.0.2"
TIMEOUT = 10.0

app = Kyoukai("behind_haproxy")


@app.route("/")
async def who(ctx):
    request = ctx.request
    return as_json(
        {
            "pid": os.getpid(),
            "client": request.remote_addr,
            "scheme": request.scheme,
            "host": request.host,
            "protocol": ctx.environ["SERVER_PROTOCOL"],
        }
    )


@app.route("/work")
async def work(ctx):
    """A request that takes a while; says whether its server had begun to stop meanwhile."""
    await asyncio.sleep(0.1)
    return as_json({"pid": os.getpid(), "draining": ctx.app.component.server is None})


@dataclass
class Deployment:
    front: int
    backends: list[RunningExample]
    backend_ports: list[int]
    haproxy: subprocess.Popen

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.front}{path}"


def wait_serving(server: RunningExample) -> None:
    deadline = time.monotonic() + START_DEADLINE
    while "Kyoukai serving" not in server.output():
        if time.monotonic() > deadline:
            pytest.fail(f"the backend did not start within {START_DEADLINE}s:\n{server.output()}")
        try:
            code = server.process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"the backend exited with {code}:\n{server.output()}")


def wait_listening(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"haproxy did not listen within {START_DEADLINE}s:\n{log.read_text()}")
        try:
            code = process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"haproxy exited with {code}:\n{log.read_text()}")


def haproxy_config(front: int, backends: list[int], pem: Path) -> str:
    """examples/deploy/haproxy.cfg with this test's ports and certificate."""
    config = (DEPLOY / "haproxy.cfg").read_text()
    replacements = {
        "127.0.0.1:8443": f"127.0.0.1:{front}",
        "/etc/haproxy/site.pem": str(pem),
        "127.0.0.1:8001": f"127.0.0.1:{backends[0]}",
        "127.0.0.1:8002": f"127.0.0.1:{backends[1]}",
    }
    for old, new in replacements.items():
        assert config.count(old) == 1, f"haproxy.cfg should name {old} once"
        config = config.replace(old, new)
    return config


@pytest.fixture
def deployment(tmp_path: Path, tls_files: dict[str, str]) -> Iterator[Deployment]:
    ports = [free_port(), free_port()]
    backends = []
    for i, port in enumerate(ports):
        args = asphalt_command() + ["run", "h2_backend.yml", "--set", f"component.port={port}"]
        args += ["--set", "component.app=test_haproxy:app"]
        backends.append(RunningExample(DEPLOY, args, tmp_path / f"backend-{i}.log", {"PYTHONPATH": str(TESTS)}))
    pem = tmp_path / "site.pem"
    pem.write_text(Path(tls_files["cert"]).read_text() + Path(tls_files["key"]).read_text())
    front = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(front, ports, pem))
    log = tmp_path / "haproxy.log"
    haproxy: subprocess.Popen | None = None
    try:
        # The backends first: a server HAProxy finds down at start stays down for two checks.
        for backend in backends:
            wait_serving(backend)
        with log.open("wb") as out:
            haproxy = subprocess.Popen([HAPROXY, "-f", str(config), "-db"], stdout=out, stderr=subprocess.STDOUT)
        wait_listening(haproxy, front, log)
        yield Deployment(front, backends, ports, haproxy)
    finally:
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(TIMEOUT)
        for backend in backends:
            output = backend.stop()
            assert backend.process.returncode == 0, output
            assert "Traceback" not in output, output


def client_transport(tls_files: dict[str, str], **kwargs) -> dict:
    context = ssl.create_default_context(cafile=tls_files["ca"])
    return {"verify": context, "local_address": CLIENT, "http2": True, **kwargs}


def test_h2_end_to_end_and_the_real_client(deployment: Deployment, tls_files: dict[str, str]) -> None:
    options = client_transport(tls_files)
    with httpx.Client(transport=httpx.HTTPTransport(**options), http2=True, timeout=TIMEOUT) as client:
        answers = []
        for _ in range(6):
            response = client.get(deployment.url("/"))
            assert response.http_version == "HTTP/2"
            answers.append(response.json())
        # Headers a client sends to pass for someone else: HAProxy replaces or drops them.
        spoofed = client.get(
            deployment.url("/"),
            headers={"X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6.6.6.6;proto=http", "X-Forwarded-Host": "evil"},
        ).json()
    host = f"127.0.0.1:{deployment.front}"
    for answer in answers + [spoofed]:
        assert {k: answer[k] for k in ("client", "scheme", "host", "protocol")} == {
            "client": CLIENT,
            "scheme": "https",
            "host": host,
            "protocol": "HTTP/2",
        }
    assert {answer["pid"] for answer in answers} == {backend.process.pid for backend in deployment.backends}


def test_a_backend_is_believed_only_from_the_proxy(deployment: Deployment) -> None:
    backend_port = deployment.backend_ports[0]
    transport = httpx.HTTPTransport(local_address=CLIENT, http1=False, http2=True)
    with httpx.Client(transport=transport, http1=False, http2=True, timeout=TIMEOUT) as client:
        direct = client.get(f"http://127.0.0.1:{backend_port}/", headers={"X-Forwarded-For": "6.6.6.6"}).json()
    assert (direct["client"], direct["scheme"]) == (CLIENT, "http")


async def test_a_backend_stopping_loses_no_request(deployment: Deployment, tls_files: dict[str, str]) -> None:
    leaving, staying = deployment.backends
    total, concurrency, stop_after = 300, 30, 60
    done = asyncio.Event()
    finished = 0
    transport = httpx.AsyncHTTPTransport(**client_transport(tls_files))

    async with httpx.AsyncClient(transport=transport, http2=True, timeout=TIMEOUT) as client:
        slots = asyncio.Semaphore(concurrency)

        async def one() -> tuple[int, dict | str]:
            nonlocal finished
            async with slots:
                response = await client.get(deployment.url("/work"))
            finished += 1
            if finished == stop_after:
                done.set()
            ok = response.status_code == 200
            return response.status_code, response.json() if ok else response.text

        batch = asyncio.gather(*(one() for _ in range(total)))
        await done.wait()
        leaving.process.send_signal(signal.SIGTERM)  # asphalt's graceful stop: GOAWAY, then drain
        results = await batch

    failed = [result for result in results if result[0] != 200]
    assert failed == [], failed[:5]
    answers = [answer for _, answer in results]
    by_leaving = [a for a in answers if a["pid"] == leaving.process.pid]
    by_staying = [a for a in answers if a["pid"] == staying.process.pid]
    assert len(by_leaving) + len(by_staying) == total
    # Requests in flight on the leaving backend when it was told to stop were finished there ...
    assert any(a["draining"] for a in by_leaving), "no request was in flight when the backend stopped"
    # ... and it stopped cleanly while the batch went on on the other one.
    assert leaving.process.wait(TIMEOUT) == 0
    assert len(by_staying) > total // 2
