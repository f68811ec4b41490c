"""
The WebSocket load client of the benchmark: connections to one ``ws://`` URL, each keeping a
window of binary messages in flight and counting the echoes. A window of 1 measures round
trips (send, wait for the echo, send again); a larger window measures messages per second.

    python bench/ws_client.py --port 8000 [--path /ws] [--connections 50] [--window 64]
                              [--size 1024] [--warmup 1] [--duration 5] [--messages N]

It prints one JSON line: the echoes counted in the measured period (warm-up excluded), their
rate, the client's own CPU use over that period (near 1.0 means the client, not the server,
was the limit) and the errors, if any (the exit status is then 1). With ``--messages N`` each
connection sends exactly N messages instead, and the run lasts as long as they take.

The client is built to cost the server's core nothing and its own little: raw asyncio
protocols (on uvloop when it is installed), the HTTP/1.1 upgrade written by hand without
offering permessage-deflate, one masked frame computed once and written as many times as
needed, and each echo checked by comparing the bytes that arrive with the frame expected.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import json
import os
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import cast

from kyoukai import loops

#: The suffix of the key in ``Sec-WebSocket-Accept`` (RFC 6455 section 1.3).
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Longest handshake response read before giving up.
_MAX_HEAD = 64 * 1024
_OP_CLOSE, _OP_PING, _OP_PONG = 0x8, 0x9, 0xA


def frame_header(opcode: int, length: int, *, masked: bool) -> bytes:
    """The header of a final frame: FIN, opcode, the mask bit and the payload length (RFC 6455 5.2)."""
    mask_bit = 0x80 if masked else 0
    if length < 126:
        return bytes((0x80 | opcode, mask_bit | length))
    if length < 1 << 16:
        return bytes((0x80 | opcode, mask_bit | 126)) + struct.pack("!H", length)
    return bytes((0x80 | opcode, mask_bit | 127)) + struct.pack("!Q", length)


def client_frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """A masked final frame, as a client must send it."""
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")
    return frame_header(opcode, len(payload), masked=True) + mask + masked


def accept_value(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` a server must answer ``key`` with."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


@dataclass
class LoadResult:
    """What one run measured."""

    connections: int
    window: int
    size: int
    #: Echoes received in the measured period (with ``messages``: in the whole run).
    echoes: int
    #: Length of the measured period in seconds.
    seconds: float
    #: ``echoes / seconds``.
    per_second: float
    #: The client's CPU seconds over the measured period divided by its length.
    client_cpu: float
    #: Messages sent and echoes received over the whole run, warm-up and drain included.
    sent_total: int
    received_total: int
    #: Connections that ended with the server's Close frame answering ours.
    closed_cleanly: int
    errors: list[str] = field(default_factory=list)


class _Shared:
    """The counters and the stop signal of all connections of one run."""

    def __init__(self) -> None:
        self.received = 0
        self.stopping = False


class EchoConnection(asyncio.Protocol):
    """
    One WebSocket connection: the upgrade, then a window of messages in flight, each echo
    answered by the next message, until told to stop (or ``limit`` messages were sent); then the
    echoes still in flight are awaited and the connection is closed with a Close handshake.
    """

    def __init__(
        self, shared: _Shared, request: bytes, key: bytes, payload: bytes, window: int, limit: int | None
    ) -> None:
        self.shared = shared
        self._request = request
        self._accept = accept_value(key)
        self._mask = os.urandom(4)
        frame = client_frame(0x2, payload, self._mask)
        self._frame_len = len(frame)
        #: ``window`` copies of the frame: a refill of n messages is one slice and one write.
        self._frames = frame * window
        #: The echo exactly as the server must send it: unmasked, same payload.
        self._echo = frame_header(0x2, len(payload), masked=False) + payload
        self._window = window
        self._limit = limit
        self.sent = 0
        self.received = 0
        #: Resolved when the handshake is answered (or the connection failed before that).
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Resolved when the connection is over, cleanly or not.
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Why the connection failed, if it did.
        self.error: str | None = None
        self.closed_cleanly = False
        self._open = False
        self._close_sent = False
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._open:
            self._read_head()
            if not self._open:
                return
        echo, echo_len = self._echo, len(self._echo)
        offset = count = 0
        while True:
            if buffer.startswith(echo, offset):
                offset += echo_len
                count += 1
                continue
            used = self._other_frame(offset)
            if not used:
                break
            offset += used
        if offset:
            del buffer[:offset]
        if count:
            self.received += count
            self.shared.received += count
            if self.received > self.sent:
                self.fail(f"{self.received} echoes for {self.sent} messages sent")
                return
            self._refill()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._open:
            self.fail(f"the connection ended during the handshake ({exc or 'EOF'})")
        elif not self.closed_cleanly:
            self.fail(f"the connection ended without a Close frame ({exc or 'EOF'})")
        self._resolve()

    # the exchange

    def _read_head(self) -> None:
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > _MAX_HEAD:
                self.fail(f"no end of the handshake response within {_MAX_HEAD} bytes")
            return
        head = bytes(buffer[:end]).decode("latin-1")
        del buffer[: end + 4]
        status, *lines = head.split("\r\n")
        if not status.startswith("HTTP/1.1 101 ") and status != "HTTP/1.1 101":
            self.fail(f"the handshake was answered with {status!r}, not 101")
            return
        fields = {}
        for line in lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if fields.get("sec-websocket-accept", "").encode() != self._accept:
            self.fail(f"wrong Sec-WebSocket-Accept {fields.get('sec-websocket-accept')!r}")
            return
        if "sec-websocket-extensions" in fields:
            self.fail(f"an extension nobody offered: {fields['sec-websocket-extensions']!r}")
            return
        self._open = True
        self.opened.set_result(None)
        self._refill()

    def _refill(self) -> None:
        """Send as many messages as the window has room for, or close once all echoes are in."""
        if self._close_sent:
            return
        in_flight = self.sent - self.received
        if self.shared.stopping or (self._limit is not None and self.sent >= self._limit):
            if in_flight == 0:
                self._send_close(1000)
            return
        room = self._window - in_flight
        if self._limit is not None:
            room = min(room, self._limit - self.sent)
        if room > 0:
            assert self.transport is not None
            self.transport.write(self._frames[: room * self._frame_len])
            self.sent += room

    def stop(self) -> None:
        """Send no new message; close once the echoes in flight are in."""
        if self._open:
            self._refill()

    def _other_frame(self, offset: int) -> int:
        """
        Handle a frame at ``offset`` that is not the expected echo; the bytes it took, or 0 if
        it is not complete yet (or the connection failed).
        """
        buffer = self._buffer
        available = len(buffer) - offset
        if available < 2:
            return 0
        first, second = buffer[offset], buffer[offset + 1]
        opcode, length = first & 0x0F, second & 0x7F
        if second & 0x80:
            self.fail("the server sent a masked frame")
            return 0
        start = offset + 2
        if length == 126:
            if available < 4:
                return 0
            (length,) = struct.unpack_from("!H", buffer, offset + 2)
            start += 2
        elif length == 127:
            if available < 10:
                return 0
            (length,) = struct.unpack_from("!Q", buffer, offset + 2)
            start += 8
        end = start + length
        if len(buffer) < end:
            return 0
        payload = bytes(buffer[start:end])
        if opcode == _OP_PING:
            assert self.transport is not None
            self.transport.write(client_frame(_OP_PONG, payload, self._mask))
        elif opcode == _OP_CLOSE:
            self._close_received(payload)
        elif opcode != _OP_PONG:
            self.fail(f"an unexpected frame: first byte {first:#04x}, {length} payload bytes (not the echo)")
            return 0
        return end - offset

    def _send_close(self, code: int) -> None:
        assert self.transport is not None
        self._close_sent = True
        self.transport.write(client_frame(_OP_CLOSE, struct.pack("!H", code), self._mask))

    def _close_received(self, payload: bytes) -> None:
        assert self.transport is not None
        if not self._close_sent:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.fail(f"the server closed with {code} {payload[2:].decode(errors='replace')!r}")
            return
        self.closed_cleanly = True
        self.transport.close()

    def fail(self, reason: str) -> None:
        """Record the first failure, end the connection."""
        if self.error is None:
            self.error = reason
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()
        self._resolve()

    def _resolve(self) -> None:
        for future in (self.opened, self.done):
            if not future.done():
                future.set_result(None)


async def run_load(
    host: str,
    port: int,
    path: str = "/ws",
    *,
    connections: int = 1,
    window: int = 1,
    size: int = 1024,
    warmup: float = 1.0,
    duration: float = 5.0,
    messages: int | None = None,
    timeout: float = 10.0,
) -> LoadResult:
    """
    Open ``connections`` WebSockets to ``ws://host:port/path`` and echo ``size``-byte binary
    messages, ``window`` in flight on each, for ``warmup`` then ``duration`` seconds (only the
    latter counted), or, with ``messages``, until each connection has had that many echoed.

    The handshakes get ``timeout`` seconds, and so does the closing drain (with ``messages``:
    the whole exchange). Failures are listed in :attr:`LoadResult.errors`, not raised.
    """
    if connections < 1 or window < 1 or size < 0:
        raise ValueError(f"connections ({connections}) and window ({window}) must be at least 1, size at least 0")
    loop = asyncio.get_running_loop()
    shared = _Shared()
    payload = os.urandom(size)
    conns: list[EchoConnection] = []
    refused: list[str] = []

    async def connect() -> None:
        key = base64.b64encode(os.urandom(16))
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        conn = EchoConnection(shared, request, key, payload, window, messages)
        try:
            await loop.create_connection(lambda: conn, host, port)
        except OSError as e:
            refused.append(f"cannot connect to {host}:{port}: {e}")
            return
        conns.append(conn)
        await conn.opened

    def snapshot() -> tuple[int, float, float]:
        return shared.received, time.process_time(), time.perf_counter()

    first = last = snapshot()
    opening = [asyncio.ensure_future(connect()) for _ in range(connections)]
    _, late = await asyncio.wait(opening, timeout=timeout)
    for task in late:
        task.cancel()
    for conn in conns:
        if not conn.opened.done():
            conn.fail(f"no answer to the handshake within {timeout}s")
    failed = bool(refused) or any(conn.error for conn in conns)
    if not failed and messages is None:
        await asyncio.sleep(warmup)
        first = snapshot()
        await asyncio.sleep(duration)
        last = snapshot()
    if failed or messages is None:
        shared.stopping = True
        for conn in conns:
            conn.stop()
    # With ``messages`` the connections close by themselves; otherwise they drain and close now.
    if conns:
        await asyncio.wait([conn.done for conn in conns], timeout=timeout)
    for conn in conns:
        if not conn.done.done():
            conn.fail(f"no Close within {timeout}s after the last message")
    if messages is not None:
        last = snapshot()
    errors = _count_alike(refused + [conn.error for conn in conns if conn.error])
    if errors:
        last = first
    echoes = last[0] - first[0]
    seconds = last[2] - first[2]
    return LoadResult(
        connections=connections,
        window=window,
        size=size,
        echoes=echoes,
        seconds=seconds,
        per_second=echoes / seconds if seconds > 0 else 0.0,
        client_cpu=(last[1] - first[1]) / seconds if seconds > 0 else 0.0,
        sent_total=sum(c.sent for c in conns),
        received_total=sum(c.received for c in conns),
        closed_cleanly=sum(c.closed_cleanly for c in conns),
        errors=errors,
    )


def _count_alike(errors: list[str]) -> list[str]:
    """Each distinct error once, with the number of connections that had it."""
    counts = collections.Counter(errors)
    return [f"{error} ({n} connections)" if n > 1 else error for error, n in counts.items()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/ws")
    parser.add_argument("--connections", type=int, default=1, help="WebSocket connections (default 1)")
    parser.add_argument(
        "--window", type=int, default=1, help="messages in flight per connection (default 1: round trips)"
    )
    parser.add_argument("--size", type=int, default=1024, help="bytes per binary message (default 1024)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before counting (default 1)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds counted (default 5)")
    parser.add_argument("--messages", type=int, help="send this many messages per connection instead of timing")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds for the handshakes and for the close")
    parser.add_argument("--no-uvloop", action="store_true", help="use asyncio's own loop even if uvloop is installed")
    args = parser.parse_args(argv)
    if args.warmup < 0 or args.duration <= 0 or (args.messages is not None and args.messages < 1):
        parser.error("--warmup must be at least 0, --duration above 0, --messages at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    factory = loops.loop_factory("asyncio" if args.no_uvloop else "auto")
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(
            run_load(
                args.host,
                args.port,
                args.path,
                connections=args.connections,
                window=args.window,
                size=args.size,
                warmup=args.warmup,
                duration=args.duration,
                messages=args.messages,
                timeout=args.timeout,
            )
        )
    line = asdict(result)
    line["loop"] = "uvloop" if factory else "asyncio"
    print(json.dumps(line), flush=True)
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
