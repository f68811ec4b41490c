"""
Microseconds per small HTTP/1.1 GET through Kyoukai's HTTP/1.1 engine, without sockets, serving
the bare ASGI benchmark app (``--app asgi``, the default) or the Kyoukai one (``--app kyoukai``).
Unlike ``micro_h1.py`` the requests come one at a time on each of ``--connections``
connections (10 by default) as ``h2load --h1 -c 10`` without ``-m`` sends them: one request on
each connection, the next once all are answered, so the per-request work of connections that
do not pipeline (the answering task, the pause in between) is measured and the event loop's
rounds are shared by the connections as on a real server; ``--batch 10`` pipelines as
``micro_h1.py`` does. The responses go to transports that only count bytes. The time is the
process's CPU time, the best of ``--rounds`` runs; ``--profile`` prints cProfile's top
functions.

    python bench/micro_h1_asgi.py [--app asgi|kyoukai] [--connections N] [--batch N] [--profile]
                                  [--requests N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).with_name("apps")))

from micro_h2 import CountingTransport, best_of  # noqa: E402

from kyoukai.asphalt import KyoukaiComponent  # noqa: E402
from kyoukai.backends.httptools_ import KyoukaiProtocol  # noqa: E402

#: What ``h2load --h1`` sends.
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:4444\r\nUser-Agent: h2load nghttp2/1.52.0\r\nAccept: */*\r\n\r\n"


def served_app(kind: str) -> object:
    """The benchmark app of ``kind``: ``asgi`` (bench/apps/asgi_app.py) or ``kyoukai``."""
    if kind == "asgi":
        from asgi_app import app as asgi_app

        return asgi_app
    from kyoukai_app import app as kyoukai_app

    return kyoukai_app


async def measure(
    kind: str, requests: int, connections: int, batch: int, profiler: cProfile.Profile | None = None
) -> float:
    rounds = requests // (batch * connections)
    data = REQUEST * batch
    component = KyoukaiComponent(served_app(kind), ip="127.0.0.1", port=0, lifespan="off")
    app = component.app
    app.component = component
    app.config.update(component.cfg)
    app.finalize()
    transports = [CountingTransport() for _ in range(connections)]
    protocols = [KyoukaiProtocol(component, None) for _ in range(connections)]
    for protocol, transport in zip(protocols, transports, strict=True):
        protocol.connection_made(transport)
    metrics = component.metrics
    if profiler is not None:
        profiler.enable()
    start = time.process_time()
    for _ in range(rounds):
        expected = metrics.requests + batch * connections
        for protocol in protocols:
            protocol.data_received(data)
        while metrics.requests < expected:
            await asyncio.sleep(0)
        # The app's task (ASGI) ends after the response is handed over: let it finish, as it
        # does before the client's next request arrives over a socket.
        await asyncio.sleep(0)
    elapsed = time.process_time() - start
    if profiler is not None:
        profiler.disable()
    if any(transport.closing for transport in transports):
        raise RuntimeError("the server closed a connection during the run")
    for protocol in protocols:
        protocol.connection_lost(None)
    return elapsed / (rounds * batch * connections) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--app", choices=("asgi", "kyoukai"), default="asgi", help="the app served")
    parser.add_argument("--connections", type=int, default=10, help="connections served side by side")
    parser.add_argument("--batch", type=int, default=1, help="requests fed at once on each (pipelined above 1)")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top 30 functions")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5, help="print the best of N runs")
    args = parser.parse_args()
    micros, rounds = best_of(
        lambda profiler: measure(args.app, args.requests, args.connections, args.batch, profiler),
        args.rounds,
        args.profile,
    )
    what = f"{args.app} app, {args.connections} connections, batch {args.batch}"
    print(f"{micros:.2f} us per request (Kyoukai, HTTP/1.1, {what}, best of {rounds})")


if __name__ == "__main__":
    main()
