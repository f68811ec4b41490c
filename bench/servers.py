"""
The servers under test: a self-signed certificate, the command line of each server, which rows
each one runs, and one running server process (start, readiness, peak RSS, stop).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workloads import Workload

APPS = Path(__file__).resolve().parent / "apps"
REPO = APPS.parent.parent
HOST = "127.0.0.1"
#: The ceiling for a server built on h2: a bare asyncio protocol around h2, no framework.
BARE_H2 = APPS / "bare_h2.py"
#: The pair ``bench/websocket.py`` compares: Kyoukai with its own app, Hypercorn with the ASGI app.
SERVERS = ("kyoukai", "hypercorn")
#: What ``bench/run.py`` runs when no ``--server`` is given: the pair, uvicorn (HTTP/1.1) and the
#: bare h2 server (small GETs on HTTP/2), so that every goal is measured in one run.
DEFAULT_SERVERS = ("kyoukai", "hypercorn", "uvicorn", "bare-h2")
#: Every server ``server_command`` knows. ``kyoukai-asgi`` is Kyoukai serving the ASGI app the
#: others serve; ``uvicorn`` speaks HTTP/1.1 only, ``bare-h2`` HTTP/2 only and answers ``GET /``.
ALL_SERVERS = ("kyoukai", "kyoukai-asgi", "hypercorn", "uvicorn", "bare-h2")
#: The servers that are Kyoukai (the access log row runs on these only).
KYOUKAI_SERVERS = ("kyoukai", "kyoukai-asgi")
#: The servers the idle-connection rows measure.
IDLE_SERVERS = ("kyoukai", "kyoukai-asgi", "hypercorn")
#: The ASGI apps (modules in ``apps/``) that ``kyoukai-asgi``, ``hypercorn`` and ``uvicorn`` serve.
ASGI_APPS = {"asgi": "asgi_app", "starlette": "starlette_app"}
#: Seconds a server gets to accept TCP connections on its port.
READY_TIMEOUT = 30.0
#: Seconds a server gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 3.0
#: Runs a script (the first argument, the rest its own) on uvloop: ``bare_h2.py`` has no switch
#: of its own, and ``asyncio.run`` takes its loop from the policy.
UVLOOP_RUNNER = (
    "import asyncio, runpy, sys, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


class ServerError(RuntimeError):
    """A server did not start, or died while under load."""


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for ``localhost`` / ``127.0.0.1``; return ``(certfile, keyfile)``."""
    # Imported here: deps.ensure_dependencies() may have just installed Kyoukai and cryptography.
    from kyoukai import devcert

    return tuple(devcert.write(directory, days=1))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def speaks(server: str, protocol: str) -> bool:
    """Whether ``server`` speaks ``protocol`` (uvicorn has no HTTP/2, the bare h2 server nothing else)."""
    if server == "uvicorn":
        return protocol in ("h1", "h1tls")
    if server == "bare-h2":
        return protocol in ("h2", "h2c")
    return True


def runs(server: str, workload: Workload) -> bool:
    """
    Whether ``server`` has a figure in ``workload``'s row: it speaks the protocol, the bare h2
    server only answers ``GET /``, the access log row is Kyoukai's alone and the idle rows
    compare Kyoukai with Hypercorn.
    """
    if not speaks(server, workload.protocol):
        return False
    if workload.access_log:
        return server in KYOUKAI_SERVERS
    if workload.kind == "idle":
        return server in IDLE_SERVERS
    return server != "bare-h2" or workload.small_get


def server_command(
    server: str,
    protocol: str,
    port: int,
    certs: tuple[Path, Path] | None,
    uvloop: bool,
    app: str = "asgi",
    *,
    access_log: bool = False,
) -> tuple[list[str], Path]:
    """
    The command line and working directory serving the bench app with ``server``.

    :param protocol: ``"h2"`` (HTTP/2 over TLS), ``"h2c"`` (cleartext, prior knowledge), ``"h1"``
        (cleartext HTTP/1.1) or ``"h1tls"`` (HTTP/1.1 over TLS).
    :param certs: ``(certfile, keyfile)``, needed for ``"h2"`` and ``"h1tls"``.
    :param app: which ASGI app (a key of :data:`ASGI_APPS`) the servers of ASGI apps serve.
    :param access_log: Kyoukai logs every request at INFO to stderr (asphalt's default logging).
    """
    tls = protocol in ("h2", "h1tls")
    if tls and certs is None:
        raise ValueError(f"{protocol} (TLS) needs a certificate")
    if not speaks(server, protocol):
        raise ValueError(f"{server} does not serve {protocol}")
    if access_log and server not in KYOUKAI_SERVERS:
        raise ValueError(f"access_log: only Kyoukai's servers ({', '.join(KYOUKAI_SERVERS)}) have the switch")
    module = ASGI_APPS[app]
    if server in KYOUKAI_SERVERS:
        cmd = [sys.executable, str(APPS / "serve_kyoukai.py"), "--protocol", protocol, "--port", str(port)]
        if server == "kyoukai-asgi":
            cmd += ["--app", module]
        if tls:
            cmd += ["--certfile", str(certs[0]), "--keyfile", str(certs[1])]
        if uvloop:
            cmd.append("--uvloop")
        if access_log:
            cmd.append("--access-log")
        return cmd, REPO
    if server == "hypercorn":
        # The hypercorn CLI (plus a reason phrase on HTTP/1.1 responses, see serve_hypercorn.py).
        # One bind serves h11 and h2c (prior knowledge) in cleartext, or h2 and HTTP/1.1 by ALPN
        # with TLS.
        cmd = [sys.executable, "serve_hypercorn.py", "--config", "hypercorn.toml", "--bind", f"{HOST}:{port}"]
        if tls:
            cmd += ["--certfile", str(certs[0]), "--keyfile", str(certs[1])]
        cmd += ["--worker-class", "uvloop" if uvloop else "asyncio", f"{module}:app"]
        return cmd, APPS
    if server == "uvicorn":
        # One process serving (no supervisor process), httptools, no access log.
        cmd = [sys.executable, "-m", "uvicorn", "--host", HOST, "--port", str(port), "--http", "httptools"]
        cmd += ["--loop", "uvloop" if uvloop else "asyncio", "--log-level", "warning", "--no-access-log"]
        if tls:
            cmd += ["--ssl-certfile", str(certs[0]), "--ssl-keyfile", str(certs[1])]
        cmd.append(f"{module}:app")
        return cmd, APPS
    if server == "bare-h2":
        cmd = [sys.executable, "-c", UVLOOP_RUNNER] if uvloop else [sys.executable]
        cmd += [str(BARE_H2), str(port)]
        if tls:
            cmd += ["--certfile", str(certs[0]), "--keyfile", str(certs[1])]
        return cmd, APPS
    raise ValueError(f"unknown server {server!r}; expected one of {ALL_SERVERS}")


class ServerProcess:
    """
    One server process, started fresh, in its own process group. Use as a context manager: the
    process is stopped on exit, whatever happened.

    :param cpu: the core to pin the server to with ``taskset``, or ``None``.
    :param log_path: where the server's stdout and stderr go.
    """

    def __init__(self, cmd: list[str], cwd: Path, port: int, cpu: int | None, log_path: Path) -> None:
        self.cmd = (["taskset", "-c", str(cpu)] if cpu is not None else []) + cmd
        self.cwd = cwd
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and wait until its port accepts connections."""
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.cmd,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll the port until it accepts a connection; raise if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive("while starting")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"{self.cmd_text()} did not listen on {HOST}:{self.port} within {timeout}s\n{self.log_tail()}"
                    ) from None
                time.sleep(0.05)

    def check_alive(self, when: str) -> None:
        """Raise :class:`ServerError` with the server's output if the process has exited."""
        code = self.process.poll() if self.process else None
        if code is not None:
            raise ServerError(f"{self.cmd_text()} exited with code {code} {when}\n{self.log_tail()}")

    def peak_rss_kib(self) -> int | None:
        """The process's peak resident set size (``VmHWM``) in KiB, or ``None`` if unreadable."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return None

    def stop(self) -> None:
        """SIGTERM the process group; SIGKILL it if it has not exited within ``STOP_TIMEOUT``."""
        if self.process is None or self.process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(STOP_TIMEOUT)
                return
            except subprocess.TimeoutExpired:
                continue

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the server wrote."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server output)"
        tail = text.splitlines()[-lines:]
        return "server output:\n" + "\n".join(tail) if tail else "(no server output)"

    def cmd_text(self) -> str:
        return " ".join(self.cmd)
