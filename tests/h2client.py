"""
A blocking HTTP/2 client made of hyperframe frames and an HPACK codec, for the HTTP/2 tests.

It does no more than a test asks: every frame the server sends is recorded and checked against
the windows and frame size we advertised; SETTINGS and PING are acknowledged; flow-control
credit for response bodies is returned only when ``auto_ack`` is on (half a window at a time,
as h2 does) or when a test sends WINDOW_UPDATE itself. Unlike h2's client it keeps parsing
after a GOAWAY, which the graceful shutdown tests need.

Also here: :class:`H2WebSocket`, a WebSocket over one extended CONNECT stream (RFC 8441) with
wsproto's client-side framing; a server that a test can stop while it keeps its socket, and
small helpers to look at the server's state from the test thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import hpack
import wsproto.events as wse
from conftest import RunningServer
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from wsproto.connection import Connection, ConnectionType

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_WINDOW = 65535
DEFAULT_FRAME_SIZE = 16384
TIMEOUT = 10.0


@dataclass
class Stream:
    """What the server sent on one stream."""

    stream_id: int
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    informational: list[list[tuple[str, str]]] = field(default_factory=list)
    trailers: list[tuple[str, str]] | None = None
    data: bytearray = field(default_factory=bytearray)
    #: Keep the body in :attr:`data`; when false only :attr:`received` and :attr:`digest` grow.
    keep_data: bool = True
    received: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    data_frames: int = 0
    largest_frame: int = 0
    ended: bool = False
    reset_code: int | None = None
    send_window: int = DEFAULT_WINDOW
    recv_window: int = DEFAULT_WINDOW
    unacked: int = 0

    @property
    def done(self) -> bool:
        return self.ended or self.reset_code is not None

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class H2Client:
    """
    One HTTP/2 connection to 127.0.0.1.

    :param port: the server's port.
    :param ssl_context: a client TLS context (``alpn`` is set on it), or ``None`` for cleartext.
    :param settings: our SETTINGS (``SettingsFrame.INITIAL_WINDOW_SIZE: 0`` ...).
    :param connection_window: our connection window (WINDOW_UPDATE on stream 0 past 65,535).
    :param auto_ack: return credit for received DATA as it arrives.
    :param auto_ping_ack: acknowledge the server's PINGs as they arrive.
    :param handshake: send the preface and SETTINGS at once.
    :param sock: an already connected socket to use (``port`` is then ignored).
    :param initial_data: bytes already read from ``sock`` that belong to the HTTP/2 connection.
    """

    def __init__(
        self,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        alpn: Iterable[str] = ("h2",),
        settings: dict[int, int] | None = None,
        connection_window: int = DEFAULT_WINDOW,
        auto_ack: bool = True,
        auto_ping_ack: bool = True,
        handshake: bool = True,
        timeout: float = TIMEOUT,
        sock: socket.socket | None = None,
        initial_data: bytes = b"",
    ) -> None:
        self.timeout = timeout
        if sock is None:
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            ssl_context.set_alpn_protocols(list(alpn))
            sock = ssl_context.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.settings = {SettingsFrame.ENABLE_PUSH: 0, **(settings or {})}
        self.auto_ack = auto_ack
        self.auto_ping_ack = auto_ping_ack
        #: The opaque data of the PINGs received (not ACKs), and of the ACKs of ours.
        self.pings_received: list[bytes] = []
        self.ping_acks: list[bytes] = []
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.streams: dict[int, Stream] = {}
        self.frames: list[Frame] = []
        self.remote_settings: dict[int, int] = {}
        self.goaway: GoAwayFrame | None = None
        self.settings_acks = 0
        self.eof = False
        self.next_stream_id = 1
        self.conn_send_window = DEFAULT_WINDOW
        self.conn_recv_window = DEFAULT_WINDOW
        self.conn_window_size = connection_window
        self.conn_unacked = 0
        self._buffer = bytearray(initial_data)
        self._header_block: tuple[HeadersFrame, bytearray] | None = None
        if handshake:
            self.send_raw(PREFACE)
            self.send(SettingsFrame(0, settings=self.settings))
            if connection_window > DEFAULT_WINDOW:
                self.window_update(0, connection_window - DEFAULT_WINDOW)

    # settings we advertised

    @property
    def initial_window(self) -> int:
        return self.settings.get(SettingsFrame.INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)

    @property
    def max_frame_size(self) -> int:
        return self.settings.get(SettingsFrame.MAX_FRAME_SIZE, DEFAULT_FRAME_SIZE)

    @property
    def remote_frame_size(self) -> int:
        return self.remote_settings.get(SettingsFrame.MAX_FRAME_SIZE, DEFAULT_FRAME_SIZE)

    # sending

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, *frames: Frame) -> None:
        self.sock.sendall(b"".join(f.serialize() for f in frames))

    def window_update(self, stream_id: int, increment: int) -> None:
        """Give the server ``increment`` more bytes of window on ``stream_id`` (0: the connection)."""
        if stream_id == 0:
            self.conn_recv_window += increment
        else:
            self.streams[stream_id].recv_window += increment
        self.send(WindowUpdateFrame(stream_id, window_increment=increment))

    def update_settings(self, **changes: int) -> None:
        """Send new SETTINGS, e.g. ``update_settings(INITIAL_WINDOW_SIZE=1 << 20)``."""
        values = {getattr(SettingsFrame, name): value for name, value in changes.items()}
        old_window = self.initial_window
        self.settings.update(values)
        delta = self.initial_window - old_window
        for stream in self.streams.values():
            stream.recv_window += delta
        self.send(SettingsFrame(0, settings=values))

    def headers_frames(self, stream_id: int, headers: list[tuple[str, str]], end_stream: bool) -> list[Frame]:
        block = self.encoder.encode(headers)
        flags = ["END_HEADERS"] + (["END_STREAM"] if end_stream else [])
        return [HeadersFrame(stream_id, block, flags=flags)]

    def open_stream(self, stream_id: int | None = None, *, keep_data: bool = True) -> Stream:
        if stream_id is None:
            stream_id = self.next_stream_id
        self.next_stream_id = max(self.next_stream_id, stream_id + 2)
        stream = Stream(
            stream_id,
            keep_data=keep_data,
            send_window=self.remote_settings.get(SettingsFrame.INITIAL_WINDOW_SIZE, DEFAULT_WINDOW),
            recv_window=self.initial_window,
        )
        self.streams[stream_id] = stream
        return stream

    def request(
        self,
        path: str = "/",
        method: str = "GET",
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
        *,
        end_stream: bool = True,
        keep_data: bool = True,
        authority: str = "127.0.0.1",
        scheme: str = "http",
    ) -> int:
        """Send a request head (and a small body); the stream id."""
        stream = self.open_stream(keep_data=keep_data)
        block = [(":method", method), (":scheme", scheme), (":authority", authority), (":path", path)]
        block.extend(headers)
        ends_now = end_stream and not body
        self.send(*self.headers_frames(stream.stream_id, block, ends_now))
        if body:
            self.send_body(stream.stream_id, body, end_stream=end_stream)
        return stream.stream_id

    def send_available(self, stream_id: int, data: bytes | memoryview) -> int:
        """Send as much of ``data`` as the server's windows allow now (no END_STREAM); how much."""
        stream = self.streams[stream_id]
        budget = min(stream.send_window, self.conn_send_window, len(data))
        view = memoryview(data)[:budget]
        frame_size = self.remote_frame_size
        frames = [DataFrame(stream_id, view[i : i + frame_size]) for i in range(0, budget, frame_size)]
        stream.send_window -= budget
        self.conn_send_window -= budget
        if frames:
            self.send(*frames)
        return budget

    def send_body(self, stream_id: int, data: bytes | memoryview, *, end_stream: bool = True) -> None:
        """Send ``data`` on ``stream_id`` within the server's windows and frame size."""
        stream = self.streams[stream_id]
        view = memoryview(data)
        deadline = time.monotonic() + self.timeout
        while view:
            budget = min(stream.send_window, self.conn_send_window, len(view))
            if budget <= 0:
                if not self.read_frame(deadline):
                    raise AssertionError(f"connection closed while stream {stream_id} waited for window")
                if stream.reset_code is not None:
                    raise AssertionError(f"stream {stream_id} was reset ({stream.reset_code}) during the upload")
                continue
            frame_size = self.remote_frame_size
            out = []
            sent = 0
            while sent < budget:
                size = min(frame_size, budget - sent)
                last = end_stream and sent + size == len(view)
                out.append(DataFrame(stream_id, view[sent : sent + size], flags=["END_STREAM"] if last else []))
                sent += size
            stream.send_window -= sent
            self.conn_send_window -= sent
            self.send(*out)
            view = view[sent:]
            deadline = time.monotonic() + self.timeout
        if end_stream and not data:
            self.send(DataFrame(stream_id, b"", flags=["END_STREAM"]))

    def send_trailers(self, stream_id: int, trailers: list[tuple[str, str]]) -> None:
        self.send(*self.headers_frames(stream_id, trailers, end_stream=True))

    def reset(self, stream_id: int, error_code: int = 8) -> None:
        """RST_STREAM (CANCEL by default)."""
        self.send(RstStreamFrame(stream_id, error_code=error_code))

    def send_goaway(self, error_code: int = 0, last_stream_id: int = 0) -> None:
        self.send(GoAwayFrame(0, last_stream_id=last_stream_id, error_code=error_code))

    # receiving

    def _recv(self, deadline: float) -> bool:
        """Read from the socket; False at EOF. Raises TimeoutError past ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 18)
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            data = b""
        except TimeoutError as e:
            raise TimeoutError from e
        if not data:
            self.eof = True
            return False
        self._buffer += data
        return True

    def read_frame(self, deadline: float | None = None) -> Frame | None:
        """The next frame (handled and recorded), ``None`` at EOF; TimeoutError past ``deadline``."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        buf = self._buffer
        while True:
            if len(buf) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(buf)[:9])
                if len(buf) >= 9 + length:
                    frame.parse_body(memoryview(bytes(buf[9 : 9 + length])))
                    del buf[: 9 + length]
                    self._handle(frame)
                    return frame
            if self.eof or not self._recv(deadline):
                return None

    def _handle(self, frame: Frame) -> None:
        self.frames.append(frame)
        if isinstance(frame, SettingsFrame):
            if "ACK" in frame.flags:
                self.settings_acks += 1
                return
            old = self.remote_settings.get(SettingsFrame.INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)
            self.remote_settings.update(frame.settings)
            delta = self.remote_settings.get(SettingsFrame.INITIAL_WINDOW_SIZE, DEFAULT_WINDOW) - old
            for stream in self.streams.values():
                stream.send_window += delta
            self.send(SettingsFrame(0, flags=["ACK"]))
        elif isinstance(frame, PingFrame):
            if "ACK" in frame.flags:
                self.ping_acks.append(frame.opaque_data)
            else:
                self.pings_received.append(frame.opaque_data)
                if self.auto_ping_ack:
                    self.send(PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]))
        elif isinstance(frame, WindowUpdateFrame):
            if frame.stream_id == 0:
                self.conn_send_window += frame.window_increment
            elif frame.stream_id in self.streams:
                self.streams[frame.stream_id].send_window += frame.window_increment
        elif isinstance(frame, GoAwayFrame):
            self.goaway = frame
        elif isinstance(frame, RstStreamFrame):
            self._stream(frame.stream_id).reset_code = frame.error_code
        elif isinstance(frame, HeadersFrame):
            self._header_block = (frame, bytearray(frame.data))
            if "END_HEADERS" in frame.flags:
                self._end_header_block()
        elif isinstance(frame, ContinuationFrame):
            assert self._header_block is not None, "CONTINUATION without HEADERS"
            self._header_block[1].extend(frame.data)
            if "END_HEADERS" in frame.flags:
                self._end_header_block()
        elif isinstance(frame, DataFrame):
            self._data(frame)

    def _stream(self, stream_id: int) -> Stream:
        stream = self.streams.get(stream_id)
        if stream is None:
            stream = self.open_stream(stream_id)
        return stream

    def _end_header_block(self) -> None:
        first, block = self._header_block
        self._header_block = None
        headers = [(n.decode(), v.decode()) for n, v in self.decoder.decode(bytes(block), raw=True)]
        stream = self._stream(first.stream_id)
        if headers and headers[0][0] == ":status":
            status = int(headers[0][1])
            if status < 200:
                stream.informational.append(headers)
            else:
                stream.status = status
                stream.headers = headers
        else:
            stream.trailers = headers
        if "END_STREAM" in first.flags:
            stream.ended = True

    def _data(self, frame: DataFrame) -> None:
        stream = self._stream(frame.stream_id)
        size = frame.flow_controlled_length
        assert size <= self.max_frame_size, f"DATA frame of {size} bytes over our MAX_FRAME_SIZE {self.max_frame_size}"
        assert size <= stream.recv_window, f"{size} bytes over the stream {frame.stream_id} window {stream.recv_window}"
        assert size <= self.conn_recv_window, f"{size} bytes over the connection window {self.conn_recv_window}"
        stream.recv_window -= size
        self.conn_recv_window -= size
        stream.received += len(frame.data)
        stream.data_frames += 1
        stream.largest_frame = max(stream.largest_frame, len(frame.data))
        if stream.keep_data:
            stream.data += frame.data
        else:
            stream.digest.update(frame.data)
        if "END_STREAM" in frame.flags:
            stream.ended = True
        if self.auto_ack:
            self._ack(stream, size)

    def _ack(self, stream: Stream, size: int) -> None:
        """Return credit half a window at a time, like h2's acknowledge_received_data."""
        out = []
        self.conn_unacked += size
        if self.conn_unacked >= self.conn_window_size // 2:
            out.append(WindowUpdateFrame(0, window_increment=self.conn_unacked))
            self.conn_recv_window += self.conn_unacked
            self.conn_unacked = 0
        if not stream.ended:
            stream.unacked += size
            if stream.unacked >= self.initial_window // 2:
                out.append(WindowUpdateFrame(stream.stream_id, window_increment=stream.unacked))
                stream.recv_window += stream.unacked
                stream.unacked = 0
        if out:
            self.send(*out)

    # waiting

    def read_until(self, condition: Callable[[], bool], timeout: float | None = None) -> None:
        """Read frames until ``condition()`` holds; AssertionError at EOF or past the timeout."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not condition():
            try:
                frame = self.read_frame(deadline)
            except TimeoutError:
                raise AssertionError(f"timed out; frames so far: {self.describe_frames()}") from None
            if frame is None and not condition():
                raise AssertionError(f"connection closed; frames so far: {self.describe_frames()}")

    def sync(self, timeout: float | None = None) -> None:
        """A PING round trip: every frame the server sent before its ACK has been read."""
        data = len(self.ping_acks).to_bytes(8, "big")
        self.send(PingFrame(0, opaque_data=data))
        self.read_until(lambda: data in self.ping_acks, timeout)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait for the server's SETTINGS and its ACK of ours (its opening frames are in by then)."""
        self.read_until(lambda: bool(self.remote_settings) and self.settings_acks > 0, timeout)

    def response(self, stream_id: int, timeout: float | None = None) -> Stream:
        """Wait until ``stream_id`` ends or is reset."""
        stream = self._stream(stream_id)
        self.read_until(lambda: stream.done, timeout)
        return stream

    def frames_within(self, duration: float) -> list[Frame]:
        """The frames that arrive within ``duration`` seconds (a bounded wait for silence)."""
        deadline = time.monotonic() + duration
        seen: list[Frame] = []
        while True:
            try:
                frame = self.read_frame(deadline)
            except TimeoutError:
                return seen
            if frame is None:
                return seen
            seen.append(frame)

    def wait_closed(self, timeout: float | None = None) -> list[Frame]:
        """Read until the server closes the connection; the frames seen on the way."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        seen: list[Frame] = []
        while True:
            try:
                frame = self.read_frame(deadline)
            except TimeoutError:
                raise AssertionError(f"the server kept the connection open; frames: {self.describe_frames()}") from None
            if frame is None:
                return seen
            seen.append(frame)

    def describe_frames(self, last: int = 20) -> str:
        return ", ".join(
            f"{type(f).__name__}(stream={f.stream_id}, flags={sorted(f.flags)})" for f in self.frames[-last:]
        )

    def data_frames(self, stream_id: int) -> list[DataFrame]:
        return [f for f in self.frames if isinstance(f, DataFrame) and f.stream_id == stream_id]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class H2WebSocket:
    """
    A WebSocket over an extended CONNECT stream of ``client`` (RFC 8441): the CONNECT goes out
    at once; :meth:`opened` waits for the answer. Frames are wsproto's, masked as a client's,
    carried in DATA frames within the server's windows.

    :param client: the HTTP/2 connection.
    :param path: the ``:path``.
    :param subprotocols: offered in ``sec-websocket-protocol``.
    :param headers: more request fields.
    """

    def __init__(
        self,
        client: H2Client,
        path: str = "/ws",
        *,
        subprotocols: Iterable[str] = (),
        headers: Iterable[tuple[str, str]] = (),
        scheme: str = "http",
    ) -> None:
        self.client = client
        fields = [(":protocol", "websocket"), ("sec-websocket-version", "13")]
        if subprotocols:
            fields.append(("sec-websocket-protocol", ", ".join(subprotocols)))
        self.stream_id = client.request(path, "CONNECT", [*fields, *headers], end_stream=False, scheme=scheme)
        self.stream = client.streams[self.stream_id]
        self.ws = Connection(ConnectionType.CLIENT)
        self._read = 0
        self._pending: list[Any] = []
        self._text: list[str] = []
        self._binary: list[bytes] = []

    def opened(self) -> Stream:
        """Wait for the answer to the CONNECT (its status in ``stream.status``)."""
        self.client.read_until(lambda: self.stream.status is not None or self.stream.done)
        return self.stream

    def send(self, message: str | bytes, *, end_stream: bool = False) -> None:
        """Send a message (waiting for window as needed)."""
        event = wse.TextMessage(data=message) if isinstance(message, str) else wse.BytesMessage(data=message)
        self.send_raw(self.ws.send(event), end_stream=end_stream)

    def send_raw(self, data: bytes, *, end_stream: bool = False) -> None:
        self.client.send_body(self.stream_id, data, end_stream=end_stream)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a Close."""
        self.send_raw(self.ws.send(wse.CloseConnection(code=code, reason=reason)))

    def _events(self) -> list[Any]:
        stream = self.stream
        if len(stream.data) > self._read:
            self.ws.receive_data(bytes(stream.data[self._read :]))
            self._read = len(stream.data)
        for event in self.ws.events():
            if isinstance(event, wse.TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    self._pending.append("".join(self._text))
                    self._text = []
            elif isinstance(event, wse.BytesMessage):
                self._binary.append(event.data)
                if event.message_finished:
                    self._pending.append(b"".join(self._binary))
                    self._binary = []
            elif isinstance(event, wse.Ping):
                self.send_raw(self.ws.send(event.response()))
            elif isinstance(event, wse.CloseConnection):
                self._pending.append(event)
        return self._pending

    def receive(self, timeout: float | None = None) -> str | bytes | wse.CloseConnection:
        """The next message, or the server's Close (answered)."""
        self.client.read_until(lambda: bool(self._events()) or self.stream.done, timeout)
        if not self._pending:
            raise AssertionError(f"stream ended with no message (reset code {self.stream.reset_code})")
        event = self._pending.pop(0)
        if isinstance(event, wse.CloseConnection) and self.ws.state.name == "REMOTE_CLOSING":
            self.send_raw(self.ws.send(event.response()))
        return event

    def wait_ended(self, timeout: float | None = None) -> Stream:
        """Wait for the server's END_STREAM or RST_STREAM."""
        self.client.read_until(lambda: self.stream.done, timeout)
        return self.stream


def parse_frames(data: bytes) -> list[Frame]:
    """The complete HTTP/2 frames at the start of ``data`` (the server's side of a connection)."""
    frames = []
    view = memoryview(data)
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(view[:9])
        if len(view) < 9 + length:
            break
        frame.parse_body(view[9 : 9 + length])
        frames.append(frame)
        view = view[9 + length :]
    return frames


def http11_exchange(sock: socket.socket, request: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send ``request`` and read until the server closes the connection or ``timeout``."""
    sock.settimeout(timeout)
    sock.sendall(request)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def read_http11_responses(sock: socket.socket, count: int, timeout: float = TIMEOUT) -> list[tuple[bytes, bytes]]:
    """Read ``count`` HTTP/1.1 responses with Content-Length bodies: ``(head, body)`` pairs."""
    sock.settimeout(timeout)
    buf = b""
    out: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if head.startswith(b"HTTP/1.1 1"):
                buf = buf[end + 4 :]
                continue
            if len(buf) >= end + 4 + length:
                out.append((head, buf[end + 4 : end + 4 + length]))
                buf = buf[end + 4 + length :]
                continue
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out reading responses; got {out!r} and {buf!r}")
        data = sock.recv(65536)
        if not data:
            raise AssertionError(f"connection closed after {len(out)} responses; rest {buf!r}")
        buf += data
    return out


def h2c_settings_header(settings: dict[int, int] | None = None) -> str:
    """The ``HTTP2-Settings`` header value of an h2c upgrade request."""
    payload = SettingsFrame(0, settings=settings or {SettingsFrame.ENABLE_PUSH: 0}).serialize_body()
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


def upgrade_request(port: int, path: str = "/proto", method: str = "GET", extra: str = "") -> bytes:
    """An HTTP/1.1 request asking for ``Upgrade: h2c``; ``extra`` holds further header lines."""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        f"Upgrade: h2c\r\nHTTP2-Settings: {h2c_settings_header()}\r\n{extra}\r\n"
    ).encode()


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read one HTTP/1.1 response head: the head and the bytes that followed it."""
    buf = b""
    deadline = time.monotonic() + 10
    while b"\r\n\r\n" not in buf:
        assert time.monotonic() < deadline, buf
        data = sock.recv(65536)
        assert data, f"connection closed after {buf!r}"
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


# the server side


@contextlib.contextmanager
def stoppable_server(app: Any, component_class: type, **cfg: Any) -> Iterator[RunningServer]:
    """Like ``conftest.serve``, but the test may call ``server.stop()`` itself."""
    cfg.setdefault("ip", "127.0.0.1")
    cfg.setdefault("port", 0)
    server = RunningServer(component_class(app, **cfg)).start()
    try:
        yield server
    finally:
        if not server.loop.is_closed():
            server.stop()


def on_loop(server: RunningServer, fn: Callable[[], Any]) -> Any:
    """Run ``fn()`` on the server's event loop and return its result."""

    async def call() -> Any:
        return fn()

    return server.call(call(), timeout=TIMEOUT)


def only_connection(server: RunningServer) -> Any:
    """The protocol object of the server's one open connection."""
    connections = on_loop(server, lambda: list(server.component.connections))
    assert len(connections) == 1, connections
    return connections[0]


def wait_on_loop(server: RunningServer, condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll ``condition()`` on the server's loop, between its callbacks, until it holds."""

    async def poll() -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s on the server")
            await asyncio.sleep(0.01)

    server.call(poll(), timeout=timeout + 5)


class Gate:
    """An :class:`asyncio.Event` a handler awaits on the server loop and a test opens from its thread."""

    def __init__(self, server: RunningServer | None = None) -> None:
        self.event = asyncio.Event()
        self.server = server
        #: Set (from the handler) once the handler is waiting.
        self.reached = threading.Event()

    async def wait(self) -> None:
        self.reached.set()
        await self.event.wait()

    def open(self) -> None:
        self.server.loop.call_soon_threadsafe(self.event.set)
