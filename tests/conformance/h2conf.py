"""
Raw-frame tools of the conformance suite: a frame builder that can write any byte sequence
(wrong lengths, reserved bits, bad padding), and :class:`ConformanceClient`, the frame client of
``tests/h2client.py`` plus the checks a conformance case needs.

How a case sees the server's reaction without sleeping: the offending bytes go out in one write
together with a PING carrying a fresh marker. The server handles frames in order, so a server
that ignores the offence answers the PING; one that objects sends RST_STREAM or GOAWAY first.
Before a case concludes "ignored", a second PING round trip gives the server's tasks a few
event-loop turns to react late (e.g. to send a response and then reset).
"""

from __future__ import annotations

import contextlib
import itertools
import ssl
import time
from dataclasses import dataclass, field

from h2.errors import ErrorCodes
from h2client import H2Client
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, PingFrame, RstStreamFrame

# frame types (RFC 9113 section 6)
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9
UNKNOWN_TYPE = 0x16

# flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# SETTINGS parameters (RFC 9113 section 6.5.2)
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

MAX_WINDOW = 2**31 - 1
#: The server's advertised SETTINGS_MAX_FRAME_SIZE (the default of ``max_frame_size``).
SERVER_MAX_FRAME_SIZE = 16384
#: The server's advertised stream window (the default of ``stream_window_size``).
SERVER_STREAM_WINDOW = 1 << 20
#: The server's connection window (the default of ``connection_window_size``).
SERVER_CONNECTION_WINDOW = 4 << 20

TIMEOUT = 5.0

_markers = itertools.count(1)


# frame building


def frame(
    frame_type: int, flags: int = 0, stream_id: int = 0, payload: bytes = b"", *, reserved: bool = False
) -> bytes:
    """One frame, byte for byte: the length is the payload's, the R bit set on request."""
    sid = stream_id | (0x80000000 if reserved else 0)
    return len(payload).to_bytes(3, "big") + bytes([frame_type, flags]) + sid.to_bytes(4, "big") + payload


def data_frame(stream_id: int, data: bytes, *, end_stream: bool = False, pad: int | None = None) -> bytes:
    flags = END_STREAM if end_stream else 0
    payload = data
    if pad is not None:
        flags |= PADDED
        payload = bytes([pad]) + data + b"\0" * pad
    return frame(DATA, flags, stream_id, payload)


def priority_fields(depends_on: int = 0, weight: int = 16, exclusive: bool = False) -> bytes:
    """Stream dependency (with the E bit) and weight; ``weight`` is the real weight 1-256."""
    return (depends_on | (0x80000000 if exclusive else 0)).to_bytes(4, "big") + bytes([weight - 1])


def headers_frame(
    stream_id: int,
    block: bytes,
    *,
    end_stream: bool = True,
    end_headers: bool = True,
    pad: int | None = None,
    priority: bytes | None = None,
    extra_flags: int = 0,
) -> bytes:
    flags = extra_flags | (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    payload = block
    if priority is not None:
        flags |= PRIORITY_FLAG
        payload = priority + payload
    if pad is not None:
        flags |= PADDED
        payload = bytes([pad]) + payload + b"\0" * pad
    return frame(HEADERS, flags, stream_id, payload)


def continuation_frame(stream_id: int, block: bytes, *, end_headers: bool = True) -> bytes:
    return frame(CONTINUATION, END_HEADERS if end_headers else 0, stream_id, block)


def priority_frame(stream_id: int, depends_on: int = 0, weight: int = 16, exclusive: bool = False) -> bytes:
    return frame(PRIORITY, 0, stream_id, priority_fields(depends_on, weight, exclusive))


def rst_stream_frame(stream_id: int, error_code: int = ErrorCodes.CANCEL) -> bytes:
    return frame(RST_STREAM, 0, stream_id, error_code.to_bytes(4, "big"))


def settings_frame(*pairs: tuple[int, int], ack: bool = False, stream_id: int = 0) -> bytes:
    """SETTINGS with the parameters in this order (repeats allowed)."""
    payload = b"".join(ident.to_bytes(2, "big") + value.to_bytes(4, "big") for ident, value in pairs)
    return frame(SETTINGS, ACK if ack else 0, stream_id, payload)


def ping_frame(opaque: bytes = b"\0" * 8, *, ack: bool = False, stream_id: int = 0, flags: int = 0) -> bytes:
    return frame(PING, flags | (ACK if ack else 0), stream_id, opaque)


def goaway_frame(last_stream_id: int = 0, error_code: int = 0, debug: bytes = b"", *, stream_id: int = 0) -> bytes:
    return frame(GOAWAY, 0, stream_id, last_stream_id.to_bytes(4, "big") + error_code.to_bytes(4, "big") + debug)


def window_update_frame(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, increment.to_bytes(4, "big"))


def request_headers(
    path: str = "/", method: str = "GET", *, scheme: str = "https", authority: str = "127.0.0.1"
) -> list[tuple[str, str]]:
    """A valid request head, pseudo-header fields first."""
    return [(":method", method), (":scheme", scheme), (":path", path), (":authority", authority)]


def code_name(code: int | None) -> str:
    if code is None:
        return "-"
    try:
        return ErrorCodes(code).name
    except ValueError:
        return hex(code)


# the client


@dataclass
class Reaction:
    """What the server did after an offence."""

    #: ``goaway``, ``rst``, ``ignored`` (it answered our PINGs), ``closed`` (EOF without
    #: GOAWAY) or ``timeout``.
    kind: str
    code: int | None = None
    stream_id: int | None = None
    frames: list[Frame] = field(default_factory=list)

    def __str__(self) -> str:
        seen = ", ".join(describe(f) for f in self.frames[-12:]) or "nothing"
        return f"{self.kind} {code_name(self.code)} (frames: {seen})"


def describe(f: Frame) -> str:
    text = f"{type(f).__name__}(stream={f.stream_id}"
    if isinstance(f, (GoAwayFrame, RstStreamFrame)):
        text += f", {code_name(f.error_code)}"
    if f.flags:
        text += f", flags={sorted(f.flags)}"
    return text + ")"


class ConformanceClient(H2Client):
    """:class:`H2Client` with raw writes that survive a closed socket, and reaction checks."""

    def __init__(self, port: int, *, scheme: str = "http", **kwargs) -> None:
        kwargs.setdefault("timeout", TIMEOUT)
        #: The ``:scheme`` of our requests (``https`` on TLS ports).
        self.scheme = scheme
        super().__init__(port, **kwargs)
        self._markers: list[bytes] = []
        self.write_failed = False

    # writing

    def send_raw(self, data: bytes) -> None:
        """Write bytes; a server that already closed the connection is not an error here."""
        try:
            self.sock.sendall(data)
        except (TimeoutError, BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.write_failed = True

    def send(self, *frames: Frame) -> None:
        self.send_raw(b"".join(f.serialize() for f in frames))

    def new_marker(self) -> bytes:
        marker = next(_markers).to_bytes(8, "big")
        self._markers.append(marker)
        return marker

    def send_with_probe(self, *chunks: bytes) -> None:
        """Write ``chunks`` and a PING with a new marker in one write."""
        self.send_raw(b"".join(chunks) + ping_frame(self.new_marker()))

    def block(self, headers: list[tuple[str, str]]) -> bytes:
        """A header block from the connection's HPACK encoder."""
        return self.encoder.encode(headers)

    def head(self, path: str = "/", method: str = "GET", extra: list[tuple[str, str]] | None = None) -> list:
        """A valid request head for this connection, plus ``extra`` fields."""
        return request_headers(path, method, scheme=self.scheme) + list(extra or [])

    def request_block(self, path: str = "/", method: str = "GET", extra: list[tuple[str, str]] | None = None) -> bytes:
        """The encoded header block of :meth:`head`."""
        return self.block(self.head(path, method, extra))

    def claim(self, stream_id: int) -> int:
        """Note that we use ``stream_id`` (later requests get higher ids)."""
        if stream_id not in self.streams:
            self.open_stream(stream_id)
        return stream_id

    def next_id(self) -> int:
        return self.claim(self.next_stream_id)

    # reading

    def await_reaction(self, stream_id: int | None = None, rounds: int = 2, timeout: float | None = None) -> Reaction:
        """
        Read until the server sends GOAWAY, RST_STREAM (on ``stream_id``, or any stream if
        ``None``), closes the socket, or answers ``rounds`` probe PINGs without objecting.
        Expects a probe PING to be on its way (:meth:`send_with_probe`).
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        seen: list[Frame] = []
        answered = 0
        while True:
            try:
                f = self.read_frame(deadline)
            except TimeoutError:
                return Reaction("timeout", frames=seen)
            if f is None:
                return Reaction("closed", frames=seen)
            seen.append(f)
            if isinstance(f, GoAwayFrame):
                return Reaction("goaway", f.error_code, f.stream_id, seen)
            if isinstance(f, RstStreamFrame) and (stream_id is None or f.stream_id == stream_id):
                return Reaction("rst", f.error_code, f.stream_id, seen)
            if isinstance(f, PingFrame) and "ACK" in f.flags and self._markers and f.opaque_data == self._markers[-1]:
                answered += 1
                if answered >= rounds:
                    return Reaction("ignored", frames=seen)
                self.send_raw(ping_frame(self.new_marker()))

    def settle(self, rounds: int = 2) -> list[Frame]:
        """
        Send ``rounds`` probe PINGs one after another and read everything until each is answered
        (or the connection ends); the frames seen. Nothing the server sends counts as an objection.
        """
        deadline = time.monotonic() + self.timeout
        seen: list[Frame] = []
        for _ in range(rounds):
            marker = self.new_marker()
            self.send_raw(ping_frame(marker))
            while True:
                try:
                    f = self.read_frame(deadline)
                except TimeoutError:
                    raise AssertionError(f"PING not answered; frames: {self.describe_frames()}") from None
                if f is None:
                    return seen
                seen.append(f)
                if isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == marker:
                    break
        return seen

    def assert_closed(self, timeout: float = TIMEOUT) -> None:
        """The server closes the socket (recv gives b"") within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                f = self.read_frame(deadline)
            except TimeoutError:
                raise AssertionError(
                    f"the server sent GOAWAY but kept the socket open for {timeout}s; frames: {self.describe_frames()}"
                ) from None
            if f is None:
                return

    def ping_round_trip(self, payload: bytes | None = None) -> PingFrame:
        """Send a PING; the server's ACK of it (AssertionError if it objects or closes)."""
        marker = payload if payload is not None else self.new_marker()
        if payload is not None:
            self._markers.append(payload)
        self.send_raw(ping_frame(marker))
        reaction = self.await_reaction(rounds=1)
        assert reaction.kind == "ignored", f"PING not answered: {reaction}"
        ack = reaction.frames[-1]
        assert isinstance(ack, PingFrame)
        return ack

    def get(self, path: str = "/", timeout: float | None = None):
        """A GET on a new stream; the finished :class:`~h2client.Stream`."""
        stream_id = self.request(path, scheme=self.scheme)
        return self.response(stream_id, timeout)

    def describe_frames(self, last: int = 20) -> str:
        return ", ".join(describe(f) for f in self.frames[-last:])

    def response_headers_seen(self, stream_id: int) -> bool:
        return any(isinstance(f, HeadersFrame) and f.stream_id == stream_id for f in self.frames)

    @property
    def open(self) -> bool:
        return self.goaway is None and not self.eof and not self.write_failed

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


# expectations


def expect_connection_error(client: ConformanceClient, *codes: int) -> Reaction:
    """A connection error: GOAWAY with one of ``codes``, then the socket closes."""
    reaction = client.await_reaction()
    wanted = " or ".join(code_name(c) for c in codes)
    assert reaction.kind == "goaway", f"expected GOAWAY {wanted} and close, got {reaction}"
    assert reaction.code in codes, f"expected GOAWAY {wanted}, got {reaction}"
    client.assert_closed()
    return reaction


def expect_stream_error(client: ConformanceClient, stream_id: int, *codes: int) -> Reaction:
    """
    A stream error: RST_STREAM on ``stream_id`` with one of ``codes``, or (as h2spec accepts) a
    connection error with one of them: GOAWAY, then the socket closes.
    """
    reaction = client.await_reaction(stream_id, rounds=3)
    wanted = " or ".join(code_name(c) for c in codes)
    assert reaction.kind in ("rst", "goaway"), f"expected RST_STREAM/GOAWAY {wanted}, got {reaction}"
    assert reaction.code in codes, f"expected RST_STREAM/GOAWAY {wanted}, got {reaction}"
    if reaction.kind == "goaway":
        client.assert_closed()
    return reaction


def expect_ignored(client: ConformanceClient, *chunks: bytes) -> None:
    """Send ``chunks``: the server neither objects nor closes (it answers the probe PINGs)."""
    client.send_with_probe(*chunks)
    reaction = client.await_reaction()
    assert reaction.kind == "ignored", f"expected the server to carry on, got {reaction}"
