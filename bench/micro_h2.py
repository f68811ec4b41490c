"""
Microseconds per small HTTP/2 GET through Kyoukai's protocol, without sockets: client frames
(made with h2) are fed to ``H2KyoukaiProtocol.data_received`` in batches of 10 requests and the
responses are written to a transport that only counts bytes. It isolates the server's own cost
from the network and the load generator, for profiling work; ``--bare`` measures a bare
protocol around h2 the same way (the ceiling), ``--profile`` prints cProfile's top functions.

    python bench/micro_h2.py [--bare] [--profile] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.settings

sys.path.insert(0, str(Path(__file__).with_name("apps")))

from bare_h2 import BareH2  # noqa: E402
from kyoukai_app import app  # noqa: E402

from kyoukai.backends.http2 import H2KyoukaiComponent, H2KyoukaiProtocol  # noqa: E402

BATCH = 10


class CountingTransport(asyncio.Transport):
    """A transport that accepts every write and counts the bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.closing = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 4444), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writelines(self, chunks: list) -> None:
        self.written += sum(map(len, chunks))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def client_frames(batches: int) -> tuple[bytes, list[bytes]]:
    """The client's preface and SETTINGS, then one chunk of bytes per batch of GETs."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**20})
    first = client.data_to_send()
    headers = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "127.0.0.1:4444")]
    headers += [("accept", "*/*"), ("user-agent", "h2load nghttp2/1.52.0")]
    chunks = []
    stream_id = 1
    for _ in range(batches):
        for _ in range(BATCH):
            client.send_headers(stream_id, headers, end_stream=True)
            stream_id += 2
        chunks.append(client.data_to_send())
    return first, chunks


async def measure(requests: int, bare: bool, profiler: cProfile.Profile | None = None) -> float:
    first, chunks = client_frames(requests // BATCH)
    transport = CountingTransport()
    if bare:
        protocol = BareH2()
    else:
        component = H2KyoukaiComponent(app, ip="127.0.0.1", port=0)
        app.finalize()
        protocol = H2KyoukaiProtocol(component, None)
    protocol.connection_made(transport)
    protocol.data_received(first)
    if profiler is not None:
        profiler.enable()
    start = time.perf_counter()
    for chunk in chunks:
        protocol.data_received(chunk)
        if bare:
            continue
        while protocol.streams or protocol._flush_handle is not None:
            await asyncio.sleep(0)
    elapsed = time.perf_counter() - start
    if profiler is not None:
        profiler.disable()
    return elapsed / (len(chunks) * BATCH) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bare", action="store_true", help="measure the bare h2 protocol instead")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top 30 functions")
    parser.add_argument("--requests", type=int, default=4000)
    args = parser.parse_args()
    profiler = cProfile.Profile() if args.profile else None
    micros = asyncio.run(measure(args.requests, args.bare, profiler))
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    print(f"{micros:.1f} us per request ({'bare h2' if args.bare else 'Kyoukai'})")


if __name__ == "__main__":
    main()
