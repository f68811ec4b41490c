"""
KiB per idle HTTP/2 connection, two ways:

- ``--mode tracemalloc`` (the default): N ``H2KyoukaiProtocol`` objects on fake transports,
  each past the preface and SETTINGS exchange, in this process; the growth of Python's heap
  between two snapshots, divided by N, and the largest allocation sites. No sockets, no TLS:
  the objects Kyoukai and h2 keep per connection, and nothing else.
- ``--mode rss``: a real server (``bench/apps/serve_kyoukai.py --protocol h2c``, or
  Hypercorn with ``--server hypercorn``) and N idle h2c connections held open by
  ``bench/idle.py`` (the benchmark's idle rows); the growth of the server's settled VmRSS
  divided by N (the asyncio transport, its socket and buffers included).

    python bench/idle_h2.py [--mode tracemalloc|rss] [--connections N] [--server kyoukai|hypercorn]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import linecache
import sys
import tempfile
import tracemalloc
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH / "apps"))

#: The client preface and an empty SETTINGS frame, then the ACK of the server's SETTINGS.
CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


class IdleTransport(asyncio.Transport):
    """A transport that accepts every write and drops it."""

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 4444), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes) -> None:
        pass

    def writelines(self, chunks: list) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _open_idle(count: int) -> list:
    from kyoukai_app import app

    from kyoukai.backends.http2 import H2KyoukaiComponent, H2KyoukaiProtocol

    component = H2KyoukaiComponent(app, ip="127.0.0.1", port=0)
    app.finalize()
    protocols = []

    async def one() -> None:
        protocol = H2KyoukaiProtocol(component, None)
        protocol.connection_made(IdleTransport())
        protocol.data_received(CLIENT_PREFACE)
        await asyncio.sleep(0)  # the flush of the server's SETTINGS
        protocol.data_received(SETTINGS_ACK)
        await asyncio.sleep(0)
        protocols.append(protocol)

    await one()  # the first connection makes the caches and the module-level state
    gc.collect()
    protocols.clear()
    tracemalloc.start(8)
    before = tracemalloc.take_snapshot()
    for _ in range(count):
        await one()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    return [protocols, before, after]


def measure_tracemalloc(count: int, top: int) -> float:
    """Bytes per idle connection by tracemalloc; prints the largest allocation sites."""
    protocols, before, after = asyncio.run(_open_idle(count))
    stats = after.compare_to(before, "traceback")
    total = sum(stat.size_diff for stat in stats)
    print(f"{count} idle connections: {total / count / 1024:.2f} KiB each (tracemalloc)")
    # By allocation site, and the nearest frame of Kyoukai's (or the bench's) that led there.
    sites: dict[tuple[str, str], list[int]] = {}
    for stat in stats:
        frames = list(stat.traceback)  # oldest first
        site = frames[-1]
        ours = next((f for f in reversed(frames) if "/kyoukai/" in f.filename), site)
        key = (f"{Path(site.filename).name}:{site.lineno}", f"{Path(ours.filename).name}:{ours.lineno}")
        sizes = sites.setdefault(key, [0, 0])
        sizes[0] += stat.size_diff
        sizes[1] += stat.count_diff
    for (site, ours), (size, blocks) in sorted(sites.items(), key=lambda item: -item[1][0])[:top]:
        filename, lineno = site.rsplit(":", 1)
        text = next(
            (
                linecache.getline(f.filename, f.lineno)
                for s in stats
                for f in s.traceback
                if Path(f.filename).name == filename and f.lineno == int(lineno)
            ),
            "",
        ).strip()
        print(f"{size / count:8.0f} B {blocks / count:5.1f} blocks  {site:28} {text[:58]:58}  via {ours}")
    del protocols
    return total / count


def measure_rss(count: int, server: str, rounds: int) -> float:
    """KiB of server RSS per idle connection (the best of ``rounds`` fresh servers), by ``bench/idle.py``."""
    sys.path.insert(0, str(BENCH))
    import idle  # type: ignore[import-not-found]
    from servers import ServerProcess, free_port, server_command  # type: ignore[import-not-found]

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            port = free_port()
            cmd, cwd = server_command(server, "h2c", port, None, False)
            with ServerProcess(cmd, cwd, port, None, Path(tmp) / "server.log") as proc:
                assert proc.process is not None
                results.append(idle.measure(proc.process.pid, port, "h2c", count)["kib_per_conn"])
    print(f"{count} idle h2c connections on {server}: {min(results):.1f} KiB each (RSS, best of {rounds})")
    return min(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("tracemalloc", "rss"), default="tracemalloc")
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--server", choices=("kyoukai", "hypercorn"), default="kyoukai")
    parser.add_argument("--rounds", type=int, default=3, help="fresh servers measured (rss)")
    parser.add_argument("--top", type=int, default=25, help="allocation sites shown (tracemalloc)")
    args = parser.parse_args()
    if args.mode == "tracemalloc":
        if args.server != "kyoukai":
            parser.error("--mode tracemalloc measures Kyoukai's objects only")
        measure_tracemalloc(args.connections, args.top)
    else:
        measure_rss(args.connections, args.server, args.rounds)


if __name__ == "__main__":
    main()
