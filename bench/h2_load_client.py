"""
The HTTP/2 load client of the reload check (``bench/reload.py``). It loads a server as
``h2load -c 4 -m 5`` does (connections over cleartext with prior knowledge, each keeping a
number of small GETs in flight, for a duration), but it takes a GOAWAY the way a browser
does: as a reason to move to a new connection, not to stop.

    python bench/h2_load_client.py --port 8000 [--host 127.0.0.1] [--path /] [--connections 4]
                                   [--streams 5] [--duration 8] [--drain-timeout 30]

It prints one JSON line: the requests completed (a 2xx answer), retried and failed, the
connections opened, the GOAWAY frames received and the failures by kind; the exit status is 1
when a request failed.

What became of each request follows RFC 9113 section 8.7:

- A connection that received a GOAWAY opens no new stream. The client opens a new connection
  for the next requests at once; the old one keeps the streams the server will still answer
  and is closed when they are done.
- A request the server says it did not process is *retried*: sent again, before any new
  request, on a connection that can take it. These are the streams above a GOAWAY's last
  stream id and the streams reset with REFUSED_STREAM, and nothing else.
- Every other request that does not end in a 2xx answer *failed*: a reset with another code,
  a connection closed or broken before the answer ended, a non-2xx status, no answer within
  ``--drain-timeout`` seconds after the duration.

A request the server processed twice (one it said it had not processed) cannot be seen from
here: each request's path carries its number (``/?n=17``), so that the server's access log
shows it (``bench/reload.py`` counts them).

h2load (1.52 in Debian 12, and nghttp2's source up to 1.70) sends no new request on a
connection after any GOAWAY, not even the first of a graceful two-step one, and never opens a
new HTTP/2 connection; each of its connections then counts a request as failed and stops.

The client is plain asyncio protocols (on uvloop when installed) with hyperframe's frames:
h2's client state machine stops reading after a GOAWAY, before the streams the server still
answers have ended. Request heads are written by hand from HPACK's static table and literals
without indexing, so the client never uses the server's dynamic table; answers are decoded
with hpack.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import sys
from dataclasses import dataclass, field
from typing import Any, cast

import hpack
from h2.errors import ErrorCodes
from hpack.hpack import encode_integer
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from kyoukai import loops

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: The receive window advertised for every stream and for the connection: h2load's default
#: (``-w 30 -W 30``). Credit is returned when half of it is used.
WINDOW = 2**30 - 1
_DEFAULT_WINDOW = 65535
_MAX_STREAM_ID = 2**31 - 1
_FRAME_HEAD = 9
_HEADERS_END_STREAM_END_HEADERS = b"\x01\x05"
#: An HPACK dynamic table size update to 0, at the start of a connection's first request head:
#: the client's header blocks never refer to the server's dynamic table.
_NO_DYNAMIC_TABLE = b"\x20"


def _literal(name_index: int, value: bytes) -> bytes:
    """A field line without indexing, its name from the static table (RFC 7541 section 6.2.2)."""
    return bytes(encode_integer(name_index, 4) + encode_integer(len(value), 7)) + value


@dataclass
class LoadResult:
    """The figures of a run."""

    #: Requests answered with a 2xx status.
    completed: int = 0
    #: Requests sent again because the server said it had not processed them.
    retried: int = 0
    #: Requests lost: anything else that did not end in a 2xx answer.
    failed: int = 0
    #: Connections opened, connection attempts that failed, GOAWAY frames received.
    connections: int = 0
    connect_errors: int = 0
    goaways: int = 0
    #: The failed requests by kind ("status 503", "reset with CANCEL", ...).
    failures: collections.Counter[str] = field(default_factory=collections.Counter)

    def as_dict(self) -> dict[str, Any]:
        """The figures as plain JSON types."""
        return {
            "completed": self.completed,
            "retried": self.retried,
            "failed": self.failed,
            "connections": self.connections,
            "connect_errors": self.connect_errors,
            "goaways": self.goaways,
            "failures": dict(self.failures),
        }


@dataclass(slots=True)
class _Request:
    """One request in flight on a stream."""

    number: int
    status: int | None = None
    #: The stream's receive credit not yet returned.
    window: int = WINDOW


class _ProtocolViolation(Exception):
    """The server broke HTTP/2 in a way that ends the connection."""


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection of the load."""

    def __init__(self, load: H2Load) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        #: The requests in flight, by stream id.
        self.streams: dict[int, _Request] = {}
        #: The lowest last stream id of the GOAWAY frames received; None before the first.
        self.last_stream_id: int | None = None
        self.closed: asyncio.Future[None] = load.loop.create_future()
        self._max_streams = load.streams
        self._next_stream_id = 1
        self._buffer = b""
        self._out: list[bytes] = []
        self._window = WINDOW
        self._decoder = hpack.Decoder()
        #: The header block being received: its stream, fragments and END_STREAM flag.
        self._block_stream = 0
        self._block: list[bytes] = []
        self._block_ends_stream = False
        self._lost_reason: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        settings = SettingsFrame(0, settings={SettingsFrame.ENABLE_PUSH: 0, SettingsFrame.INITIAL_WINDOW_SIZE: WINDOW})
        credit = WindowUpdateFrame(0, window_increment=WINDOW - _DEFAULT_WINDOW)
        self._out += [PREFACE, settings.serialize(), credit.serialize()]
        self.load.opened(self)
        self.fill()
        self.flush()

    def fill(self) -> None:
        """Open streams up to the limit, for retried requests first."""
        if self.last_stream_id is not None or self.transport is None or self.transport.is_closing():
            return
        limit = min(self.load.streams, self._max_streams)
        while len(self.streams) < limit:
            number = self.load.take_request()
            if number is None:
                break
            stream_id = self._next_stream_id
            self._next_stream_id += 2
            self.streams[stream_id] = _Request(number)
            self._out.append(self.load.request_frame(stream_id, number, first=stream_id == 1))

    def flush(self) -> None:
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        view = memoryview(buffer)
        position, size = 0, len(buffer)
        try:
            while size - position >= _FRAME_HEAD:
                end = position + _FRAME_HEAD + int.from_bytes(buffer[position : position + 3], "big")
                if end > size:
                    break
                frame, _ = Frame.parse_frame_header(view[position : position + _FRAME_HEAD])
                frame.parse_body(view[position + _FRAME_HEAD : end])
                position = end
                self._on_frame(frame)
        except (HyperframeError, hpack.HPACKError, _ProtocolViolation, ValueError) as e:
            self._lost_reason = f"protocol error: {e}"
            self._out.clear()
            assert self.transport is not None
            self.transport.abort()
            return
        self._buffer = buffer[position:]
        self.fill()
        self.flush()
        self.load.check_done()

    def connection_lost(self, exc: Exception | None) -> None:
        after = "" if self.last_stream_id is None else " after a GOAWAY"
        for request in self.streams.values():
            if self._lost_reason is not None:
                self.load.fail(self._lost_reason)
            else:
                self.load.fail(f"connection lost {'during' if request.status else 'before'} the answer{after}")
        self.streams.clear()
        self.load.closed(self)
        self.closed.set_result(None)

    def close_if_idle(self) -> None:
        """Close the connection once it has nothing in flight and will not get more."""
        if not self.streams and self.transport is not None and (self.last_stream_id is not None or self.load.done):
            self.transport.close()

    # frames received

    def _on_frame(self, frame: Frame) -> None:
        if self._block and not isinstance(frame, ContinuationFrame):
            raise _ProtocolViolation(f"{type(frame).__name__} inside a header block")
        if isinstance(frame, DataFrame):
            self._on_data(frame)
        elif isinstance(frame, HeadersFrame | ContinuationFrame):
            if isinstance(frame, HeadersFrame):
                self._block_stream, self._block_ends_stream = frame.stream_id, "END_STREAM" in frame.flags
            elif frame.stream_id != self._block_stream or not self._block:
                raise _ProtocolViolation("CONTINUATION without its HEADERS")
            self._block.append(frame.data)
            if "END_HEADERS" in frame.flags:
                block, self._block = b"".join(self._block), []
                self._on_head(self._block_stream, block, self._block_ends_stream)
        elif isinstance(frame, RstStreamFrame):
            self._on_reset(frame.stream_id, frame.error_code)
        elif isinstance(frame, SettingsFrame):
            if "ACK" not in frame.flags:
                self._max_streams = frame.settings.get(SettingsFrame.MAX_CONCURRENT_STREAMS, self._max_streams)
                self._out.append(SettingsFrame(0, flags=["ACK"]).serialize())
        elif isinstance(frame, PingFrame):
            if "ACK" not in frame.flags:
                self._out.append(PingFrame(0, flags=["ACK"], opaque_data=frame.opaque_data).serialize())
        elif isinstance(frame, GoAwayFrame):
            self._on_goaway(frame.last_stream_id & _MAX_STREAM_ID)
        elif isinstance(frame, PushPromiseFrame):
            raise _ProtocolViolation("PUSH_PROMISE with push disabled")
        # WINDOW_UPDATE, PRIORITY and unknown frames: nothing to do for a client that sends no body.

    def _on_head(self, stream_id: int, block: bytes, ends_stream: bool) -> None:
        # Decoded even for a stream given up, to keep the dynamic table in step.
        fields = self._decoder.decode(block, raw=True)
        request = self.streams.get(stream_id)
        if request is None:
            return
        if request.status is None:
            status = next((int(value) for name, value in fields if name == b":status"), None)
            if status is None:
                self.streams.pop(stream_id)
                self.load.fail("answer without :status")
                return
            if status < 200:
                return  # informational; the answer follows
            request.status = status
        if ends_stream:
            self._end(stream_id)

    def _on_data(self, frame: DataFrame) -> None:
        length = frame.flow_controlled_length
        self._window -= length
        if self._window < WINDOW // 2:
            self._out.append(WindowUpdateFrame(0, window_increment=WINDOW - self._window).serialize())
            self._window = WINDOW
        request = self.streams.get(frame.stream_id)
        if request is None:
            return
        if "END_STREAM" in frame.flags:
            self._end(frame.stream_id)
            return
        request.window -= length
        if request.window < WINDOW // 2:
            increment = WINDOW - request.window
            self._out.append(WindowUpdateFrame(frame.stream_id, window_increment=increment).serialize())
            request.window = WINDOW

    def _end(self, stream_id: int) -> None:
        request = self.streams.pop(stream_id)
        if request.status is None:
            self.load.fail("stream ended without an answer")
        else:
            self.load.answered(request.status)
        self.close_if_idle()

    def _on_reset(self, stream_id: int, error_code: int) -> None:
        request = self.streams.pop(stream_id, None)
        if request is None:
            return
        if error_code == ErrorCodes.REFUSED_STREAM:
            self.load.retry(request.number)
        else:
            self.load.fail(f"reset with {_error_name(error_code)}")
        self.close_if_idle()

    def _on_goaway(self, last_stream_id: int) -> None:
        self.load.result.goaways += 1
        if self.last_stream_id is None:
            self.last_stream_id = last_stream_id
            self.load.released(self)
        else:
            self.last_stream_id = last_stream_id = min(self.last_stream_id, last_stream_id)
        for stream_id in [stream_id for stream_id in self.streams if stream_id > last_stream_id]:
            self.load.retry(self.streams.pop(stream_id).number)
        self.close_if_idle()


def _error_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"error code {code:#x}"


class H2Load:
    """
    A load of ``connections`` connections with ``streams`` GETs of ``path`` in flight on each,
    for ``duration`` seconds; then the answers in flight (and the retries they cause) are
    awaited up to ``drain_timeout`` seconds. Run it with :meth:`run`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        path: str = "/",
        connections: int = 4,
        streams: int = 5,
        duration: float = 8.0,
        drain_timeout: float = 30.0,
    ) -> None:
        if connections < 1 or streams < 1 or duration < 0 or drain_timeout <= 0:
            raise ValueError(
                f"connections ({connections}) and streams ({streams}) must be at least 1, duration ({duration}) "
                f"at least 0 and drain_timeout ({drain_timeout}) above 0"
            )
        if not path.startswith("/") or len(path) > 1000:
            raise ValueError(f"path {path!r} must start with '/' and be at most 1000 characters")
        self.host, self.port = host, port
        self.connections, self.streams = connections, streams
        self.duration, self.drain_timeout = duration, drain_timeout
        self.result = LoadResult()
        #: True once every request is answered or given up: nothing new is started.
        self.done = False
        self._path = path.encode() + (b"&n=" if "?" in path else b"?n=")
        # :method GET and :scheme http are static table entries 2 and 6; :authority is name 1.
        self._head_start = b"\x82\x86" + _literal(1, f"{host}:{port}".encode())
        self._numbers = itertools.count(1)
        self._retries: collections.deque[int] = collections.deque()
        self._active: set[_Connection] = set()
        self._open: set[_Connection] = set()
        self._connecting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadline = 0.0
        self._finished: asyncio.Future[None] | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "the load is not running"
        return self._loop

    async def run(self) -> LoadResult:
        """Run the load and return its figures."""
        self._loop = asyncio.get_running_loop()
        self._finished = self.loop.create_future()
        self._deadline = self.loop.time() + self.duration
        deadline_check = self.loop.call_at(self._deadline, self.check_done)
        self._top_up()
        try:
            await asyncio.wait_for(asyncio.shield(self._finished), self.duration + self.drain_timeout)
        except TimeoutError:
            self.done = True
        finally:
            deadline_check.cancel()
        for task in self._tasks:
            task.cancel()
        for _ in self._retries:
            self.fail("not sent again before the drain timeout")
        self._retries.clear()
        connections = list(self._open)
        for connection in connections:
            assert connection.transport is not None
            if connection.streams:
                for _ in connection.streams:
                    self.fail("no answer before the drain timeout")
                connection.streams.clear()
                connection.transport.abort()
            else:
                connection.transport.close()
        await asyncio.gather(*(connection.closed for connection in connections))
        return self.result

    def stop(self) -> None:
        """End the duration now: no new request; the ones in flight and their retries finish."""
        self._deadline = min(self._deadline, self.loop.time())
        self.check_done()

    def when_completed(self, count: int) -> asyncio.Future[None]:
        """A future set once ``count`` requests have completed (it may be asked before :meth:`run` starts)."""
        future = asyncio.get_running_loop().create_future()
        if self.result.completed >= count:
            future.set_result(None)
        else:
            self._waiters.append((count, future))
        return future

    # used by the connections

    def request_frame(self, stream_id: int, number: int, *, first: bool) -> bytes:
        """The HEADERS frame of request ``number`` (END_STREAM, END_HEADERS)."""
        block = self._head_start + _literal(4, self._path + str(number).encode())
        if first:
            block = _NO_DYNAMIC_TABLE + block
        return len(block).to_bytes(3, "big") + _HEADERS_END_STREAM_END_HEADERS + stream_id.to_bytes(4, "big") + block

    def take_request(self) -> int | None:
        """The number of the next request to send, a retried one first; None when there is none."""
        if self._retries:
            return self._retries.popleft()
        if not self.done and self.loop.time() < self._deadline:
            return next(self._numbers)
        return None

    def answered(self, status: int) -> None:
        if 200 <= status < 300:
            self.result.completed += 1
            if self._waiters:
                self._wake()
        else:
            self.fail(f"status {status}")

    def retry(self, number: int) -> None:
        """Send request ``number`` again: the server did not process it."""
        self.result.retried += 1
        self._retries.append(number)
        for connection in list(self._active):
            connection.fill()
            connection.flush()
        self._top_up()

    def fail(self, reason: str) -> None:
        self.result.failed += 1
        self.result.failures[reason] += 1

    def opened(self, connection: _Connection) -> None:
        self.result.connections += 1
        self._open.add(connection)
        self._active.add(connection)

    def released(self, connection: _Connection) -> None:
        """``connection`` takes no new request any more: another one takes its place."""
        self._active.discard(connection)
        self._top_up()

    def closed(self, connection: _Connection) -> None:
        self._open.discard(connection)
        self.released(connection)
        self.check_done()

    def check_done(self) -> None:
        """Finish the run once the duration is over and nothing is in flight or waiting to be sent again."""
        if self.done or self.loop.time() < self._deadline or self._retries:
            return
        if any(connection.streams for connection in self._open):
            return
        self.done = True
        for connection in list(self._open):
            connection.close_if_idle()
        assert self._finished is not None
        if not self._finished.done():
            self._finished.set_result(None)

    def _wants_connection(self) -> bool:
        return not self.done and (bool(self._retries) or self.loop.time() < self._deadline)

    def _top_up(self) -> None:
        """Open connections until ``connections`` of them take new requests (or are being opened)."""
        while self._wants_connection() and len(self._active) + self._connecting < self.connections:
            self._connecting += 1
            task = self.loop.create_task(self._connect())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connect(self) -> None:
        try:
            await self.loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except OSError:
            self.result.connect_errors += 1
            self._connecting -= 1
            # The server may be between two listeners: try again shortly, not in a tight loop.
            self.loop.call_later(0.05, self._top_up)
            return
        self._connecting -= 1

    def _wake(self) -> None:
        waiting = []
        for count, future in self._waiters:
            if self.result.completed >= count:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((count, future))
        self._waiters = waiting


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--connections", "-c", type=int, default=4)
    parser.add_argument("--streams", "-m", type=int, default=5, help="requests in flight on each connection")
    parser.add_argument("--duration", "-D", type=float, default=8.0, help="seconds during which requests are started")
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to wait for answers after it")
    parser.add_argument("--no-uvloop", action="store_true", help="use asyncio's own loop even if uvloop is installed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        load = H2Load(
            args.host,
            args.port,
            path=args.path,
            connections=args.connections,
            streams=args.streams,
            duration=args.duration,
            drain_timeout=args.drain_timeout,
        )
    except ValueError as e:
        print(f"h2_load_client: {e}", file=sys.stderr)
        return 2
    with asyncio.Runner(loop_factory=loops.loop_factory("asyncio" if args.no_uvloop else "auto")) as runner:
        result = runner.run(load.run())
    print(json.dumps(result.as_dict()), flush=True)
    return 1 if result.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
