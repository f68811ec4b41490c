"""
Microseconds per small HTTP/1.1 GET through Kyoukai's protocol, without sockets: pipelined
requests are fed to ``KyoukaiProtocol.data_received`` in batches of 10 and the responses are
written to a transport that only counts bytes. It isolates the server's own cost from the
network and the load generator, for profiling work; ``--profile`` prints cProfile's top
functions. The time is the process's CPU time (steadier than the wall clock on a busy machine),
the best of ``--rounds`` runs. A server that stops answering fails the run, saying how many
responses arrived, instead of hanging it.

    python bench/micro_h1.py [--profile] [--requests N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).with_name("apps")))

from kyoukai_app import app  # noqa: E402
from micro_h2 import TURNS_PER_CHECK, CountingTransport, Deadline, best_of  # noqa: E402

from kyoukai.asphalt import KyoukaiComponent  # noqa: E402
from kyoukai.backends.httptools_ import KyoukaiProtocol  # noqa: E402

BATCH = 10
#: What ``h2load --h1`` sends.
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:4444\r\nUser-Agent: h2load nghttp2/1.52.0\r\nAccept: */*\r\n\r\n"


async def measure(requests: int, profiler: cProfile.Profile | None = None) -> float:
    batches = requests // BATCH
    chunk = REQUEST * BATCH
    transport = CountingTransport()
    component = KyoukaiComponent(app, ip="127.0.0.1", port=0)
    app.finalize()
    protocol = KyoukaiProtocol(component, None)
    protocol.connection_made(transport)
    metrics = protocol.metrics
    deadline = Deadline()
    if profiler is not None:
        profiler.enable()
    start = time.process_time()
    for _ in range(batches):
        expected = metrics.requests + BATCH
        protocol.data_received(chunk)
        turns = 0
        while metrics.requests < expected:
            await asyncio.sleep(0)
            turns += 1
            if turns == TURNS_PER_CHECK:
                turns = 0
                deadline.check(metrics.requests, expected, transport)
    elapsed = time.process_time() - start
    if profiler is not None:
        profiler.disable()
    deadline.check(metrics.requests, batches * BATCH, transport)
    protocol.connection_lost(None)
    return elapsed / (batches * BATCH) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top 30 functions")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5, help="print the best of N runs")
    args = parser.parse_args()
    micros, rounds = best_of(lambda profiler: measure(args.requests, profiler), args.rounds, args.profile)
    print(f"{micros:.2f} us per request (Kyoukai, HTTP/1.1, best of {rounds})")


if __name__ == "__main__":
    main()
