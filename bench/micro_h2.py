"""
Microseconds per small HTTP/2 GET through Kyoukai's protocol, without sockets: client frames
are fed to ``H2KyoukaiProtocol.data_received`` in batches of 10 requests, and the responses go
to a transport that plays the client's part: it reads the frames the server writes, counts the
responses, and answers as a real client must (SETTINGS and PING acknowledgements, and a
WINDOW_UPDATE once half of the connection's flow-control window is used), so any number of
requests can run. It isolates the server's own cost from the network and the load generator,
for profiling work; ``--bare`` measures a bare protocol around h2 the same way (the ceiling),
``--profile`` prints cProfile's top functions.

The time is the process's CPU time, the best of ``--rounds`` runs (default 1), minus the
client's part: the request frames are made before the clock starts, and the client's reading
of the responses is measured after each run (a fresh reader reads the same bytes again) and
subtracted; it is printed too, about 1% of the figure. Instruction counts (callgrind at two
``--requests``, one round, the difference per request) cannot subtract it: they include the
making of the frames and the reading (twice), a few percent, the same for every server. A
server that stops answering fails the run, saying how many responses arrived.

``--connections N`` spreads the requests over N connections, round-robin, one at a time on
each (as ``h2load -c N -m 1``): every connection is set up (preface, SETTINGS and their
acknowledgements) before the clock starts, and the figure is per request. With it,
``--requests 0`` only sets the connections up and closes them: callgrind at two N gives the
instructions of one connection's life without a request. ``--rate R`` makes the ``Date`` field
change every R responses (a clock of R responses a second) instead of with the real clock, so
that the figures do not depend on how fast the run goes (under callgrind, about 50 times slower,
the date would change every few requests).

    python bench/micro_h2.py [--bare] [--profile] [--requests N] [--rounds N] [--connections N] [--rate R]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import TypeVar

import h2.config
import h2.connection
import h2.settings

sys.path.insert(0, str(Path(__file__).with_name("apps")))

from bare_h2 import BareH2  # noqa: E402
from kyoukai_app import app  # noqa: E402

import kyoukai.wsgi  # noqa: E402
from kyoukai.backends.http2 import H2KyoukaiComponent, H2KyoukaiProtocol  # noqa: E402

BATCH = 10
#: What ``h2load`` sends for ``GET /``.
REQUEST_FIELDS = [
    (":method", "GET"),
    (":path", "/"),
    (":scheme", "http"),
    (":authority", "127.0.0.1:4444"),
    ("accept", "*/*"),
    ("user-agent", "h2load nghttp2/1.52.0"),
]
#: Seconds a wait loop goes on without a new response before the run fails (callgrind included).
STALL_SECONDS = 10.0
#: Event-loop turns between two looks at the clock while waiting (a batch takes a few).
TURNS_PER_CHECK = 64
#: Seconds of the header and keep-alive timeouts with ``--connections``: no run is that slow.
LONG_TIMEOUT = 86_400.0

#: A frame head: the 24-bit length (as 8 + 16 bits), type, flags, stream id.
FRAME_HEAD = struct.Struct(">BHBBI")
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
#: The connection's initial flow-control window (RFC 9113 section 6.9.2): a client credits
#: the DATA it read once half of it is used, as h2 and nghttp2 do.
INITIAL_WINDOW = 65_535
SETTINGS_ACK = FRAME_HEAD.pack(0, 0, SETTINGS, ACK, 0)


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


class Deadline:
    """
    Fails a run whose server stops answering instead of letting it spin forever: the wait loop
    calls :meth:`check` every :data:`TURNS_PER_CHECK` turns of the event loop.
    """

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = STALL_SECONDS if seconds is None else seconds
        self.answered = -1
        self.since = 0.0

    def check(self, answered: int, expected: int, transport: CountingTransport, failure: str | None = None) -> None:
        """Raise when the server closed, failed, or gave no new response for :attr:`seconds`."""
        if failure is not None or transport.closing:
            reason = failure or "the server closed the connection"
            raise RuntimeError(f"{reason}: {answered} of {expected} responses arrived")
        now = time.monotonic()
        if answered != self.answered:
            self.answered, self.since = answered, now
        elif now - self.since > self.seconds:
            raise RuntimeError(
                f"the server stopped answering: {answered} of {expected} responses arrived, "
                f"none in the last {self.seconds:.0f} s"
            )


class ClientReader:
    """
    The client's reading of the server's bytes: frame heads only (header blocks and bodies are
    not decoded, the cheapest reading that keeps the connection going). It counts the responses
    ended, notes a reset or a GOAWAY as :attr:`failure`, and collects in :attr:`replies` what
    the client must send back.
    """

    def __init__(self) -> None:
        #: The start of a frame that the next read completes.
        self.rest = b""
        #: Streams the server ended (``END_STREAM`` on DATA or HEADERS).
        self.responses = 0
        #: DATA bytes read and not yet credited back with a WINDOW_UPDATE.
        self.unacknowledged = 0
        self.replies: list[bytes] = []
        self.failure: str | None = None

    def read(self, data: bytes) -> None:
        """Read what arrived (a frame may span reads)."""
        if self.rest:
            data = self.rest + data
        end = len(data)
        pos = 0
        while end - pos >= 9:
            high, low, kind, flags, stream_id = FRAME_HEAD.unpack_from(data, pos)
            length = high << 16 | low
            if end - pos - 9 < length:
                break
            if kind == DATA:
                self.unacknowledged += length
                self.responses += flags & END_STREAM
            elif kind == HEADERS:
                self.responses += flags & END_STREAM
            elif kind == SETTINGS:
                if not flags & ACK:
                    self.replies.append(SETTINGS_ACK)
            elif kind == PING:
                if not flags & ACK:
                    self.replies.append(FRAME_HEAD.pack(0, 8, PING, ACK, 0) + data[pos + 9 : pos + 17])
            elif kind == RST_STREAM or kind == GOAWAY:
                code = int.from_bytes(data[pos + 9 : pos + 13] if kind == RST_STREAM else data[pos + 13 : pos + 17])
                what = f"reset stream {stream_id}" if kind == RST_STREAM else "sent GOAWAY"
                self.failure = self.failure or f"the server {what} (error code {code})"
            pos += 9 + length
        self.rest = data[pos:]
        if self.unacknowledged >= INITIAL_WINDOW // 2:
            credit = FRAME_HEAD.pack(0, 4, WINDOW_UPDATE, 0, 0) + self.unacknowledged.to_bytes(4, "big")
            self.replies.append(credit)
            self.unacknowledged = 0

    def take_replies(self) -> bytes:
        """The client's frames to send, as one write."""
        replies = b"".join(self.replies)
        self.replies.clear()
        return replies


class ClientTransport(CountingTransport):
    """
    The server's transport, with the client at its other end: the writes wait, as in a socket
    buffer, until :meth:`deliver` hands them to the :class:`ClientReader` in one read.
    """

    def __init__(self) -> None:
        super().__init__()
        self.client = ClientReader()
        self.unread: list[bytes] = []
        #: What each read delivered, in order, for :meth:`reading_time`.
        self.reads: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.unread.append(data)

    def writelines(self, chunks: list) -> None:
        self.unread.extend(chunks)

    def deliver(self) -> None:
        """The client reads what the server wrote since the last read."""
        if self.unread:
            data = b"".join(self.unread)
            self.unread.clear()
            self.written += len(data)
            self.reads.append(data)
            self.client.read(data)

    def reading_time(self) -> float:
        """The CPU seconds a fresh client takes to read every read of the run again."""
        reader = ClientReader()
        start = time.process_time()
        for data in self.reads:
            reader.read(data)
        return time.process_time() - start


class ClientRequests:
    """
    What a client sends: its preface and SETTINGS (:attr:`first`), then the GET of stream 1,
    whose fields go into the HPACK table, then the same indexed block on every later stream.
    """

    def __init__(self) -> None:
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**20})
        self.first = client.data_to_send()
        # Once the first request's fields are in the HPACK table every later block is the same
        # bytes (all indexed): h2 codes streams 1 and 3, and every later stream reuses the block
        # of 3. (h2 itself would take time quadratic in the number of streams it keeps open.)
        client.send_headers(1, REQUEST_FIELDS, end_stream=True)
        self.opening = client.data_to_send()
        client.send_headers(3, REQUEST_FIELDS, end_stream=True)
        self.block = client.data_to_send()[9:]

    def frame(self, stream_id: int) -> bytes:
        """The HEADERS frame of the GET on ``stream_id``."""
        if stream_id == 1:
            return self.opening
        return FRAME_HEAD.pack(0, len(self.block), HEADERS, END_STREAM | END_HEADERS, stream_id) + self.block


def client_frames(batches: int) -> tuple[bytes, list[bytes]]:
    """The client's preface and SETTINGS, then one chunk of bytes per batch of GETs."""
    requests = ClientRequests()
    first, opening, frame = requests.first, requests.opening, requests.frame
    chunks = []
    stream_id = 3
    for number in range(batches):
        frames = [opening] if number == 0 else []
        while len(frames) < BATCH:
            frames.append(frame(stream_id))
            stream_id += 2
        chunks.append(b"".join(frames))
    return first, chunks


def server_factory(bare: bool, **cfg: float) -> Callable[[], asyncio.Protocol]:
    """Makes the protocol object of a new connection: Kyoukai's (with settings ``cfg``), or the bare h2 one."""
    if bare:
        return BareH2
    component = H2KyoukaiComponent(app, ip="127.0.0.1", port=0, **cfg)
    app.finalize()
    return lambda: H2KyoukaiProtocol(component, None)


async def open_connection(protocol: asyncio.Protocol, transport: ClientTransport, first: bytes) -> None:
    """The connection's start: the client's preface and SETTINGS, the server's, both acknowledged."""
    protocol.connection_made(transport)
    protocol.data_received(first)
    await asyncio.sleep(0)  # Kyoukai writes its SETTINGS in the next turn of the loop
    transport.deliver()
    protocol.data_received(transport.client.take_replies())


class SimulatedDate:
    """
    Stands in for :func:`kyoukai.wsgi.http_date`: a clock that moves one second every ``rate``
    calls (one call per response), from the real time at the start.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.calls = 0
        self.start = int(time.time())
        self._second = -1
        self._value = ""

    def __call__(self) -> str:
        second = self.start + self.calls // self.rate
        self.calls += 1
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True)
        return self._value


@contextlib.contextmanager
def date_clock(rate: int | None) -> Iterator[None]:
    """With ``rate``, the ``Date`` field changes every ``rate`` responses while in the block."""
    if rate is None:
        yield
        return
    real = kyoukai.wsgi.http_date
    kyoukai.wsgi.http_date = SimulatedDate(rate)  # type: ignore[assignment]
    try:
        yield
    finally:
        kyoukai.wsgi.http_date = real


async def measure(requests: int, bare: bool, profiler: cProfile.Profile | None = None) -> tuple[float, float]:
    """One run: (server, client) CPU microseconds per request."""
    first, chunks = client_frames(requests // BATCH)
    transport = ClientTransport()
    client = transport.client
    protocol = server_factory(bare)()
    await open_connection(protocol, transport, first)
    deadline = Deadline()
    expected = 0
    if profiler is not None:
        profiler.enable()
    start = time.process_time()
    for chunk in chunks:
        expected += BATCH
        protocol.data_received(chunk)
        transport.deliver()
        turns = 0
        while client.responses < expected:
            await asyncio.sleep(0)
            transport.deliver()
            turns += 1
            if turns == TURNS_PER_CHECK:
                turns = 0
                deadline.check(client.responses, expected, transport, client.failure)
                if client.replies:  # a window the batch itself closed
                    protocol.data_received(client.take_replies())
        if client.replies:
            protocol.data_received(client.take_replies())
    elapsed = time.process_time() - start
    if profiler is not None:
        profiler.disable()
    deadline.check(client.responses, expected, transport, client.failure)
    protocol.connection_lost(None)
    reading = transport.reading_time()
    return (elapsed - reading) / expected * 1e6, reading / expected * 1e6


class EagerTransport(ClientTransport):
    """
    A :class:`ClientTransport` whose client reads every write at once (with hundreds of
    connections, looking at each for unread bytes would cost more than the server's work),
    adding the responses it completes to a count shared by every connection.
    """

    def __init__(self, tally: list[int]) -> None:
        super().__init__()
        self.tally = tally

    def write(self, data: bytes) -> None:
        self.unread.append(data)
        client = self.client
        before = client.responses
        self.deliver()
        self.tally[0] += client.responses - before

    def writelines(self, chunks: list) -> None:
        self.write(b"".join(chunks))


async def measure_connections(
    requests: int, connections: int, bare: bool, profiler: cProfile.Profile | None = None
) -> tuple[float, float]:
    """
    One run over ``connections`` connections, the requests spread round-robin with one at a
    time on each: (server, client) CPU microseconds per request; with no requests, per
    connection set up and closed.
    """
    frames = ClientRequests()
    # A connection waits for its next request while every other one is served: under callgrind
    # (about 50 times slower) that would be longer than the default timeouts.
    make_protocol = server_factory(bare, header_timeout=LONG_TIMEOUT, keep_alive_timeout=LONG_TIMEOUT)
    tally = [0]
    links: list[tuple[asyncio.Protocol, EagerTransport]] = []
    if profiler is not None:
        profiler.enable()
    start = time.process_time()
    for _ in range(connections):
        transport = EagerTransport(tally)
        protocol = make_protocol()
        await open_connection(protocol, transport, frames.first)
        links.append((protocol, transport))
    if requests:
        start = time.process_time()  # the requests alone are timed
        await serve_round_robin(links, requests, frames, tally)
    else:
        for protocol, _ in links:
            protocol.connection_lost(None)
        await asyncio.sleep(0)
    elapsed = time.process_time() - start
    if profiler is not None:
        profiler.disable()
    if requests:
        for protocol, _ in links:
            protocol.connection_lost(None)
    reading = sum(transport.reading_time() for _, transport in links)
    per = requests or connections
    return (elapsed - reading) / per * 1e6, reading / per * 1e6


async def serve_round_robin(
    links: list[tuple[asyncio.Protocol, EagerTransport]], requests: int, frames: ClientRequests, tally: list[int]
) -> None:
    """Send ``requests`` GETs, one to each connection in turn, each round waiting for its responses."""
    deadline = Deadline()
    expected = 0
    stream_id = 1
    while expected < requests:
        stream_frame = frames.frame(stream_id)
        stream_id += 2
        active = links[: requests - expected]
        expected += len(active)
        for protocol, _ in active:
            protocol.data_received(stream_frame)
        turns = 0
        while tally[0] < expected:
            await asyncio.sleep(0)
            turns += 1
            if turns == TURNS_PER_CHECK:
                turns = 0
                for protocol, transport in active:
                    deadline.check(tally[0], expected, transport, transport.client.failure)
                    if transport.client.replies:  # a window the round itself closed
                        protocol.data_received(transport.client.take_replies())
        for protocol, transport in active:
            if transport.client.replies:
                protocol.data_received(transport.client.take_replies())
    for _, transport in links:
        deadline.check(tally[0], expected, transport, transport.client.failure)


T = TypeVar("T")


def best_of(run: Callable[[cProfile.Profile | None], Awaitable[T]], rounds: int, profile: bool) -> tuple[T, int]:
    """
    The smallest result of ``rounds`` runs of ``run`` (one, under cProfile, whose top 30
    functions are printed, with ``profile``), and how many runs that was.
    """
    profiler = cProfile.Profile() if profile else None
    rounds = 1 if profiler else max(rounds, 1)
    best = min(asyncio.run(run(profiler)) for _ in range(rounds))
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return best, rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bare", action="store_true", help="measure the bare h2 protocol instead")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top 30 functions")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=1, help="print the best of N runs")
    parser.add_argument("--connections", type=int, help="spread the requests over N connections, one at a time on each")
    parser.add_argument("--rate", type=int, help="the Date field changes every R responses (default: the real clock)")
    args = parser.parse_args()
    connections = args.connections
    if connections is None and args.requests < BATCH:
        parser.error(f"--requests must be at least {BATCH} (one batch), not {args.requests}")
    if connections is not None and (connections < 1 or args.requests < 0):
        parser.error(
            f"--connections must be at least 1 and --requests at least 0, not {connections} and {args.requests}"
        )
    if args.rate is not None and args.rate < 1:
        parser.error(f"--rate must be at least 1 response a second, not {args.rate}")
    with date_clock(args.rate):
        if connections is None:
            (micros, reading), rounds = best_of(
                lambda profiler: measure(args.requests, args.bare, profiler), args.rounds, args.profile
            )
        else:
            (micros, reading), rounds = best_of(
                lambda profiler: measure_connections(args.requests, connections, args.bare, profiler),
                args.rounds,
                args.profile,
            )
    server = "bare h2" if args.bare else "Kyoukai"
    unit = "request" if connections is None or args.requests else "connection set up and closed"
    spread = "" if connections is None else f", {connections} connections"
    print(
        f"{micros:.2f} us per {unit} ({server}, HTTP/2{spread}, best of {rounds}; "
        f"the client's reading, {reading:.2f} us, subtracted)"
    )


if __name__ == "__main__":
    main()
