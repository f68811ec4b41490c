"""
Several ``asphalt run`` processes on one port with ``reuse_port: true`` (SO_REUSEPORT): each
binds the port, and the kernel spreads the new connections over them.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from test_examples import EXAMPLES, START_DEADLINE, RunningExample, asphalt_command, free_port

pytestmark = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="the platform has no SO_REUSEPORT")

DEPLOY = EXAMPLES / "deploy"
CLIENT_TIMEOUT = 10.0


def asphalt_run(tmp_path: Path, name: str, port: int, reuse_port: bool) -> RunningExample:
    """``asphalt run config.yml`` of examples/deploy on ``port``."""
    args = asphalt_command() + ["run", "config.yml", "--set", f"component.port={port}"]
    args += ["--set", f"component.reuse_port={'true' if reuse_port else 'false'}"]
    return RunningExample(DEPLOY, args, tmp_path / f"{name}.log")


def wait_serving(server: RunningExample) -> None:
    """Poll the log for the start-up line; fail if the process exits or the deadline passes."""
    deadline = time.monotonic() + START_DEADLINE
    while "Kyoukai serving" not in server.output():
        if time.monotonic() > deadline:
            pytest.fail(f"no start-up line within {START_DEADLINE}s:\n{server.output()}")
        try:
            code = server.process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"asphalt run exited with {code}:\n{server.output()}")


def stop(server: RunningExample) -> None:
    output = server.stop()
    assert server.process.returncode == 0, output
    assert "Traceback" not in output, output


def served_by(port: int) -> int:
    """The pid of the process that answers a request on a new connection."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=CLIENT_TIMEOUT)
    assert response.status_code == 200
    return response.json()["pid"]


def test_two_processes_serve_one_port(tmp_path: Path) -> None:
    port = free_port()
    servers = [asphalt_run(tmp_path, name, port, reuse_port=True) for name in ("first", "second")]
    try:
        for server in servers:
            wait_serving(server)
        expected = {server.process.pid for server in servers}
        seen: set[int] = set()
        deadline = time.monotonic() + START_DEADLINE
        while seen != expected:
            assert time.monotonic() < deadline, f"only {seen} of {expected} answered"
            seen.add(served_by(port))
            assert seen <= expected
        # One stops (gracefully); the other takes every new connection.
        stop(servers[0])
        assert {served_by(port) for _ in range(20)} == {servers[1].process.pid}
    finally:
        for server in servers:
            stop(server)


def test_without_reuse_port_the_second_process_cannot_bind(tmp_path: Path) -> None:
    port = free_port()
    first = asphalt_run(tmp_path, "first", port, reuse_port=False)
    try:
        wait_serving(first)
        second = asphalt_run(tmp_path, "second", port, reuse_port=False)
        code = second.process.wait(timeout=START_DEADLINE)
        second.stop()
        assert code != 0
        assert "address already in use" in second.output()
        assert served_by(port) == first.process.pid
    finally:
        stop(first)
