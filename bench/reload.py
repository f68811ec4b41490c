"""
Requests lost to graceful reloads: the gunicorn worker (two workers, HTTP/1.1 and h2c on one
port) under load while gunicorn is sent SIGHUP three times, evenly spread over the load.

    python bench/reload.py [--h1] [--rounds N] [--duration S]

h2c (the default): each round runs two loads of 4 connections with 5 requests in flight on
each, on a fresh server each time.

- ``bench/h2_load_client.py``, the figures that count. Like a browser it opens a new connection
  after a GOAWAY and sends again only what RFC 9113 section 8.7 says the server did not
  process; it reports requests completed, retried (not processed, so safe to send again) and
  failed. The server's access log then tells whether a request was processed twice, which is
  a failure too.
- ``h2load -c 4 -m 5``, its own figures, for comparison. h2load sends nothing more on a
  connection after a GOAWAY, even the first of the two-step one, and does not reconnect: its
  requests that were not sent count as failed, whatever the server does.

``--h1``: ``h2load --h1 -c 4 -m 5``, whose figures hold for HTTP/1.1 (h2load reconnects after
``Connection: close``).

The exit status is 1 when a request was lost (failed or processed twice; for ``--h1``, failed
or errored in h2load's figures). Run from the repository root; needs gunicorn (``pip install
-e '.[gunicorn]'``) and h2load (Debian's nghttp2-client). The app is
``bench/apps/kyoukai_app.py`` (``GET /``: 14 bytes).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "bench" / "apps"
CLIENT = ROOT / "bench" / "h2_load_client.py"
HUPS = 3
#: An HTTP/2 request of the client in the access log: its number and the status.
ACCESS_LINE = re.compile(r'"GET /\?n=(\d+) HTTP/2" (\d{3})')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"gunicorn did not listen on {port}")


@contextlib.contextmanager
def gunicorn(port: int, access_log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """The gunicorn worker serving the benchmark app on ``port`` until the block ends (then SIGTERM)."""
    logging = ["--access-logfile", str(access_log)] if access_log is not None else []
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "-k", "kyoukai.backends.gunicorn.KyoukaiWorker", "-w", "2",
                "-b", f"127.0.0.1:{port}", "--http-protocols", "h1,h2", "--graceful-timeout", "10",
                "--no-control-socket", *logging, "--pythonpath", str(APPS), "kyoukai_app:app",
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_listening(port, time.monotonic() + 30)
            time.sleep(1)  # both workers up
            yield server
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


def under_reloads(server: subprocess.Popen[bytes], load: list[str], duration: float) -> str:
    """Run the ``load`` command while ``server`` gets SIGHUP three times; its output."""
    process = subprocess.Popen(load, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(HUPS):
        time.sleep(duration / (HUPS + 1))
        server.send_signal(signal.SIGHUP)
    output, _ = process.communicate(timeout=duration + 60)
    return output


def h2load_round(h1: bool, duration: int) -> dict[str, int]:
    """h2load's figures for one round."""
    port = free_port()
    mode = ["--h1"] if h1 else []
    with gunicorn(port) as server:
        report = under_reloads(
            server, ["h2load", *mode, "-c", "4", "-m", "5", "-D", str(duration), f"http://127.0.0.1:{port}/"], duration
        )
    found = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", report
    )
    if found is None:
        raise SystemExit(f"no h2load summary:\n{report}")
    keys = ("total", "started", "done", "succeeded", "failed", "errored")
    return dict(zip(keys, map(int, found.groups()), strict=True))


def client_round(duration: int) -> dict[str, Any]:
    """The figures of ``bench/h2_load_client.py`` for one round, with what the access log shows."""
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        access_log = Path(folder) / "access.log"
        with gunicorn(port, access_log) as server:
            command = [sys.executable, str(CLIENT), "--port", str(port), "--duration", str(duration)]
            output = under_reloads(server, command, duration)
        # Read once gunicorn has stopped: every worker has written its lines by then.
        processed = collections.Counter(number for number, _ in ACCESS_LINE.findall(access_log.read_text()))
    try:
        result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise SystemExit(f"no result from {CLIENT.name}:\n{output}") from None
    result["processed"] = sum(processed.values())
    result["processed_twice"] = sum(count - 1 for count in processed.values() if count > 1)
    return result


def h2load_version() -> str:
    output = subprocess.run(["h2load", "--version"], capture_output=True, text=True, check=True).stdout
    return output.strip().split("/")[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--h1", action="store_true", help="HTTP/1.1 instead of h2c")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8, help="seconds of load per round")
    args = parser.parse_args()
    if args.h1:
        failed = 0
        for number in range(1, args.rounds + 1):
            result = h2load_round(True, args.duration)
            failed += result["failed"] + result["errored"]
            print(f"round {number}: {result}")
        print(f"HTTP/1.1: {failed} requests failed or errored in {args.rounds} rounds")
        return 1 if failed else 0
    lost = h2load_failed = 0
    h2load_name = f"h2load {h2load_version()}"
    for number in range(1, args.rounds + 1):
        result = client_round(args.duration)
        lost += result["failed"] + result["processed_twice"]
        print(
            f"round {number}, {CLIENT.name}: {result['completed']} completed, {result['retried']} retried "
            f"(not processed, safe), {result['failed']} failed; server log: {result['processed']} processed, "
            f"{result['processed_twice']} twice; {result['connections']} connections, {result['goaways']} GOAWAY"
            + (f"; failures: {result['failures']}" if result["failures"] else "")
        )
        figures = h2load_round(False, args.duration)
        h2load_failed += figures["failed"] + figures["errored"]
        print(f"round {number}, {h2load_name}'s own figures (no new stream or connection after a GOAWAY): {figures}")
    print(f"h2c: {lost} requests lost in {args.rounds} rounds ({CLIENT.name}: failed or processed twice)")
    print(f"h2c, {h2load_name}'s figures: {h2load_failed} requests failed or errored in {args.rounds} rounds")
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
