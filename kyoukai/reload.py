"""
``kyoukai run --reload``: serve from a child process and replace it when the code changes.

The supervisor (the ``kyoukai`` process) binds the listening sockets once and hands them to
each server process it starts (``--serve-fd``), so the port stays open across restarts and a
client never sees a refused connection. It watches a folder with :mod:`watchfiles`; on a
change it starts a new server process while the old one still serves, and stops the old one
only once the new one reports, over a socket pair (``--supervisor-fd``), that it serves: the
old one is told to stop accepting, then gets SIGTERM (a graceful stop: requests in progress
finish). New code that does not start (a syntax error, an import error, a start-up failure)
leaves the old process serving; the next change tries again.

Each server process runs in its own process group, so Ctrl-C in the terminal reaches the
supervisor only, which stops them all. One whose supervisor is killed outright sees its end of
the socket pair close and stops by itself.
"""

from __future__ import annotations

import importlib.machinery
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: What a server process writes on its supervisor socket once it serves (see ``kyoukai.cli``).
READY = b"ready\n"
#: What the supervisor writes to a replaced server process: stop accepting connections.
RETIRE = b"retire\n"
#: Its answer, :data:`RETIRE_GRACE` seconds after it stopped accepting.
RETIRED = b"retired\n"
#: Seconds a retiring server process leaves the connections it just accepted to send their
#: request before it is told to stop (which closes the idle ones).
RETIRE_GRACE = 0.1
#: Seconds the supervisor waits for :data:`RETIRED` before stopping the old process anyway.
RETIRE_TIMEOUT = 5.0
#: Seconds a new server process gets to report that it serves before it is given up.
START_TIMEOUT = 30.0
#: Seconds a stopped server process gets to finish before it is killed (its graceful stop
#: itself waits up to ``shutdown_timeout``, 10 s by default).
STOP_TIMEOUT = 15.0
#: Seconds between looks at a stopping server process (and at a second Ctrl-C).
STOP_POLL = 0.05
#: The exit status after a second Ctrl-C killed the server processes (128 + SIGINT).
INTERRUPTED = 130
#: How often (milliseconds) the watch loop wakes up without a change to reap stopped processes.
TICK_MS = 200


def module_folder(module_name: str) -> Path:
    """
    The folder to watch for the app's module: its top-level package's folder, or the folder
    holding it if it is a plain module; the working directory if it is not found. Found without
    importing anything, so the supervisor never runs the app's code.
    """
    top = module_name.split(".")[0]
    spec = importlib.machinery.PathFinder.find_spec(top, [os.getcwd(), *sys.path])
    if spec is not None:
        if spec.submodule_search_locations:
            return Path(next(iter(spec.submodule_search_locations)))
        if spec.origin:
            return Path(spec.origin).parent
    return Path.cwd()


@dataclass
class ServerProcess:
    """A server process started by the :class:`Reloader`, and the supervisor's end of its socket pair."""

    process: subprocess.Popen[bytes]
    channel: socket.socket
    #: Whether it was sent SIGTERM.
    signalled: bool = False

    def stop(self) -> None:
        """Ask for a graceful stop (SIGTERM), once: a second SIGTERM would cut the graceful stop short."""
        if not self.signalled and self.process.poll() is None:
            self.signalled = True
            self.process.send_signal(signal.SIGTERM)


class Reloader:
    """
    Runs ``command`` (a ``kyoukai run`` command line) as a server process serving ``sockets``, and
    replaces it whenever a ``.py`` file (or one of ``extra_extensions``) under ``folder`` changes.
    """

    def __init__(
        self,
        command: Sequence[str],
        sockets: Sequence[socket.socket],
        folder: Path,
        *,
        extra_extensions: Sequence[str] = (),
    ) -> None:
        self.command = list(command)
        self.sockets = list(sockets)
        self.folder = folder
        self.extra_extensions = tuple(extra_extensions)
        #: The process serving now, if any.
        self.current: ServerProcess | None = None
        #: Processes told to stop and not yet exited.
        self.stopping: list[ServerProcess] = []
        #: Set by SIGINT or SIGTERM: stop watching, stop every server process gracefully.
        self.stop_requested = threading.Event()
        #: Set by a second Ctrl-C: kill the server processes instead of waiting for them.
        self.hurry = False

    def run(self) -> int:
        """Serve and reload until SIGINT or SIGTERM; the exit status (the first server's if it fails to start)."""
        import watchfiles

        # A flag, not a KeyboardInterrupt raised wherever the code is: that could land between
        # starting a server process and keeping hold of it, and leave the process behind.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        watch_filter = watchfiles.PythonFilter(extra_extensions=self.extra_extensions)
        try:
            changes = watchfiles.watch(
                self.folder,
                watch_filter=watch_filter,
                rust_timeout=TICK_MS,
                yield_on_timeout=True,
                stop_event=self.stop_requested,
            )
            # The first step sets the watch up, so a change made once the server serves is seen.
            next(changes, None)
            if self.stop_requested.is_set():
                return 0
            status = self._start()
            if status is not None:
                return status
            if not self.stop_requested.is_set():
                self._say(f"Reloading on changes to {self._watched()} under {self.folder}")
            for changed in changes:
                self._reap()
                if changed and not self.stop_requested.is_set():
                    self._reload(sorted({path for _, path in changed}))
        finally:
            self._stop_all()
        return INTERRUPTED if self.hurry else 0

    def _on_signal(self, signum: int, frame: object) -> None:
        # Nothing printed here: the main thread may be in the middle of a print itself.
        if self.stop_requested.is_set():
            self.hurry = self.hurry or signum == signal.SIGINT
        self.stop_requested.set()

    def _watched(self) -> str:
        return ", ".join(("*.py", *(f"*{extension}" for extension in self.extra_extensions)))

    def _reload(self, paths: list[str]) -> None:
        names = ", ".join(os.path.relpath(path, self.folder) for path in paths)
        self._say(f"Changed: {names}; starting the new code")
        old = self.current
        if self._start() is not None:
            still = "the previous version keeps serving" if old is not None else "nothing is serving"
            self._say(f"The changed code did not start (see above); {still}. Save a fix to try again.")
            return
        if old is not None:
            self._retire(old)

    def _retire(self, server: ServerProcess) -> None:
        """
        Stop a replaced process: first it stops accepting, so that a connection it accepts just as
        SIGTERM comes is not closed before its first request is read; then SIGTERM.
        """
        try:
            server.channel.sendall(RETIRE)
            server.channel.settimeout(RETIRE_TIMEOUT)
            server.channel.recv(len(RETIRED))
        except OSError:
            pass  # it exited, or did not answer in time: SIGTERM it all the same
        server.stop()
        self.stopping.append(server)

    def _start(self) -> int | None:
        """Start a server process; ``None`` once it serves, else its exit status (it has exited)."""
        channel, child_end = socket.socketpair()
        fds = [sock.fileno() for sock in self.sockets]
        command = [*self.command, *(f"--serve-fd={fd}" for fd in fds), f"--supervisor-fd={child_end.fileno()}"]
        try:
            process = subprocess.Popen(command, pass_fds=[*fds, child_end.fileno()], process_group=0)
        finally:
            child_end.close()
        server = ServerProcess(process, channel)
        deadline = time.monotonic() + START_TIMEOUT
        reported = b""
        try:
            # In short waits, so that a stop asked for meanwhile is not held up by a slow start.
            while not self.stop_requested.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._say(f"The new server did not start within {START_TIMEOUT:g} s; stopping it.")
                    process.kill()
                    break
                channel.settimeout(min(remaining, STOP_POLL))
                try:
                    reported = channel.recv(len(READY))
                    break
                except TimeoutError:
                    continue
            else:
                # Stopping: this one stops with the others (its own runner stops it once started).
                self.current = server
                return None
        except BaseException:
            process.kill()
            process.wait()
            channel.close()
            raise
        if reported == READY:
            self.current = server
            return None
        channel.close()
        return process.wait() or 1

    def _reap(self) -> None:
        """Forget the processes that exited; say so if the serving one did."""
        for server in [s for s in self.stopping if s.process.poll() is not None]:
            self.stopping.remove(server)
            server.channel.close()
        current = self.current
        if current is not None and current.process.poll() is not None:
            self.current = None
            current.channel.close()
            self._say(f"The server exited (status {current.process.returncode}); it restarts on the next change.")

    def _stop_all(self) -> None:
        """Stop every server process gracefully, killing one that outlives :data:`STOP_TIMEOUT`."""
        servers = [*self.stopping, *([self.current] if self.current is not None else [])]
        self.stopping, self.current = [], None
        if any(server.process.poll() is None for server in servers):
            self._say("Stopping the server gracefully (Ctrl-C again to stop it at once)")
        for server in servers:
            server.stop()
        deadline = time.monotonic() + STOP_TIMEOUT
        for server in servers:
            # In short waits, so that a second Ctrl-C (which sets ``hurry``) is acted on at once.
            while not self.hurry and time.monotonic() < deadline:
                try:
                    server.process.wait(STOP_POLL)
                    break
                except subprocess.TimeoutExpired:
                    pass
            if server.process.poll() is None:
                if self.hurry:
                    self._say("Interrupted again: stopping the server at once")
                server.process.kill()
                server.process.wait()
            server.channel.close()
        for sock in self.sockets:
            sock.close()

    @staticmethod
    def _say(message: str) -> None:
        print(f"kyoukai --reload: {message}", flush=True)
