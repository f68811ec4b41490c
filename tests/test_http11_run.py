"""The ways users start a server: ``asphalt run config.yml`` and ``app.run()``, as subprocesses."""

from __future__ import annotations

import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello"
STARTUP_DEADLINE = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_listening(process: subprocess.Popen, port: int) -> str:
    """
    Read the server's output (unbuffered, so select sees every byte) until it logs that it
    serves ``port``; that log line.
    """
    deadline = time.monotonic() + STARTUP_DEADLINE
    expected = re.compile(rf"Kyoukai serving .+ on https?://127\.0\.0\.1:{port}\.")
    seen = []
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([process.stdout], [], [], left)
        if not readable:
            break
        line = process.stdout.readline().decode()
        if not line:
            pytest.fail(f"the server exited with {process.wait(5)}: {''.join(seen)}")
        seen.append(line)
        if expected.search(line):
            return line
    pytest.fail(f"no {expected.pattern!r} within {STARTUP_DEADLINE}s: {''.join(seen)}")


@pytest.fixture
def stop_on_exit() -> Iterator[list[subprocess.Popen]]:
    processes: list[subprocess.Popen] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        process.stdout.close()


def stop(process: subprocess.Popen) -> str:
    """SIGTERM, as a service manager would; the output, once it has exited."""
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=15)
    return output.decode()


def test_asphalt_run_serves_the_hello_example(tmp_path: Path, stop_on_exit: list[subprocess.Popen]) -> None:
    port = free_port()
    shipped = (HELLO / "config.yml").read_text()
    assert "port: 4444" in shipped
    config = tmp_path / "config.yml"
    config.write_text(shipped.replace("port: 4444", f"port: {port}"))
    asphalt = Path(sys.executable).with_name("asphalt")
    process = subprocess.Popen(
        [str(asphalt), "run", str(config)], cwd=HELLO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0
    )
    stop_on_exit.append(process)
    wait_until_listening(process, port)
    # The example serves HTTPS with a self-signed development certificate.
    assert httpx.get(f"https://127.0.0.1:{port}/", verify=False).text == "Hello from Kyoukai!\n"
    assert httpx.get(f"https://127.0.0.1:{port}/hello/asphalt", verify=False).text == "Hello, asphalt!\n"
    output = stop(process)
    assert process.returncode == 0, output


def test_app_run_serves(stop_on_exit: list[subprocess.Popen]) -> None:
    port = free_port()
    code = "import sys; from examples.hello.app import app; app.run('127.0.0.1', int(sys.argv[1]))"
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0
    )
    stop_on_exit.append(process)
    wait_until_listening(process, port)
    response = httpx.get(f"http://127.0.0.1:{port}/hello/run")
    assert response.status_code == 200
    assert response.text == "Hello, run!\n"
    output = stop(process)
    assert process.returncode == 0, output
