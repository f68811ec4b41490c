"""
Requests lost to graceful reloads: the gunicorn worker (two workers, HTTP/1.1 and h2c on one
port) under h2load load while gunicorn is sent SIGHUP three times, a second apart; h2load's
report tells how many requests failed or errored.

    python bench/reload.py [--h1] [--rounds N] [--duration S]

Run from the repository root; needs gunicorn (``pip install -e '.[gunicorn]'``) and h2load
(Debian's nghttp2-client). The app is ``bench/apps/kyoukai_app.py`` (``GET /``: 14 bytes).
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "bench" / "apps"


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


def one_round(h1: bool, duration: int, hups: int) -> dict[str, int]:
    port = free_port()
    with tempfile.TemporaryFile() as log:
        gunicorn = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "-k", "kyoukai.backends.gunicorn.KyoukaiWorker", "-w", "2",
                "-b", f"127.0.0.1:{port}", "--http-protocols", "h1,h2", "--graceful-timeout", "10",
                "--no-control-socket", "--pythonpath", str(APPS), "kyoukai_app:app",
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_listening(port, time.monotonic() + 30)
            time.sleep(1)  # both workers up
            mode = ["--h1"] if h1 else []
            load = subprocess.Popen(
                ["h2load", *mode, "-c", "4", "-m", "5", "-D", str(duration), f"http://127.0.0.1:{port}/"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(hups):
                time.sleep(duration / (hups + 1))
                gunicorn.send_signal(signal.SIGHUP)
            report, _ = load.communicate(timeout=duration + 60)
        finally:
            gunicorn.send_signal(signal.SIGTERM)
            gunicorn.wait(timeout=30)
    found = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", report
    )
    if found is None:
        raise SystemExit(f"no h2load summary:\n{report}")
    keys = ("total", "started", "done", "succeeded", "failed", "errored")
    return dict(zip(keys, map(int, found.groups()), strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--h1", action="store_true", help="HTTP/1.1 instead of h2c")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8, help="seconds of load per round")
    args = parser.parse_args()
    failed = 0
    for number in range(1, args.rounds + 1):
        result = one_round(args.h1, args.duration, hups=3)
        failed += result["failed"] + result["errored"]
        print(f"round {number}: {result}")
    print(f"{'HTTP/1.1' if args.h1 else 'h2c'}: {failed} requests failed or errored in {args.rounds} rounds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
