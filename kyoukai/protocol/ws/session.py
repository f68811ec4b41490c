"""
One WebSocket after its opening handshake, without I/O: :class:`WebSocketSession`.

Bytes from the peer go in through :meth:`~WebSocketSession.receive_data` (``None`` for its end:
EOF on HTTP/1.1, END_STREAM on HTTP/2); what happened comes out as events (:class:`Message`,
:class:`PeerClosed`, :class:`Closed`, :class:`Failed`); the app's messages go in through
:meth:`~WebSocketSession.send_message` and :meth:`~WebSocketSession.close`; the bytes for the
peer come out of :meth:`~WebSocketSession.data_to_send` (an HTTP/2 shell puts them in DATA
frames). Time comes from a clock; :meth:`~WebSocketSession.next_deadline` says when
:meth:`~WebSocketSession.handle_timeout` must run.

wsproto parses and writes the frames. The limits are checked where wsproto reads each frame
header (:class:`FrameLimits`) and where a compressed message is inflated
(:class:`~kyoukai.protocol.ws.deflate.DeflateExtension`), so an oversized message or a flood
is refused before its payload is buffered. Without permessage-deflate, whole text and binary
frames, most of the traffic, are read and written by :mod:`kyoukai.protocol.ws.frames` instead,
with the same checks; every other frame goes to wsproto whole, as it arrives.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import wsproto.events as wse
from wsproto.connection import Connection, ConnectionType
from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

from kyoukai.protocol.core import ProtocolCore
from kyoukai.protocol.h2.guard import RateBudget
from kyoukai.protocol.ws.deflate import DeflateExtension, DeflateParameters
from kyoukai.protocol.ws.frames import frame_length, read_messages, write_message
from kyoukai.protocol.ws.settings import WebSocketSettings

#: Close codes an endpoint may send (RFC 6455 section 7.4, and the IANA registry's 1012 and
#: 1013); 3000 to 4999 are for libraries and apps. 1010 is the client's, 1005, 1006 and 1015
#: are never sent.
SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1012, 1013})
_NO_RSV_BITS = RsvBits(False, False, False)


@dataclass(slots=True)
class Message:
    """A whole message from the peer; give it back to :meth:`WebSocketSession.message_consumed` once read."""

    data: str | bytes
    #: The memory it holds (``sys.getsizeof``, so an empty message counts too), as counted in
    #: :attr:`WebSocketSession.buffered_bytes`.
    size: int


@dataclass(slots=True)
class PeerClosed:
    """The peer closed (its Close is answered), or its end came without a Close (1006). The session is closed."""

    code: int
    reason: str


@dataclass(slots=True)
class Closed:
    """
    Our Close was answered (``code`` is the peer's), or no answer came within
    ``ws_close_timeout`` (1006). The session is closed.
    """

    code: int
    reason: str


@dataclass(slots=True)
class Failed:
    """
    We ended the WebSocket: a protocol error, a limit, a dead peer or one that reads nothing.
    The Close frame with ``code`` is in :meth:`~WebSocketSession.data_to_send` unless the code
    is 1006 (the peer cannot be reached). The session is closed.
    """

    code: int
    reason: str


class SessionClosedError(RuntimeError):
    """A message was sent on a WebSocket that is closing or closed."""


class FrameLimits(Extension):
    """
    The per-frame limits: message size by the lengths frame headers announce, PING/PONG floods
    and tiny-fragment floods. Not an extension on the wire (it claims no reserved bit and is
    never negotiated): wsproto calls every extension at each frame header, before the payload
    is read, which is where these checks belong.
    """

    name = "kyoukai-frame-limits"

    def __init__(self, settings: WebSocketSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        #: Why the limits ended the connection, once they have.
        self.problem: str | None = None
        self._control = RateBudget(settings.ws_max_control_frames, settings.ws_control_frame_rate, clock)
        #: Between a frame's header and its end: wsproto reads a header again when its masking
        #: key had not all arrived, and that second reading must not count twice.
        self._in_frame = False
        self._fragments = 0
        self._wire_size = 0
        self._wire_limit = settings.ws_max_message_size

    def enabled(self) -> bool:
        """Always."""
        return True

    def offer(self) -> bool:
        """Never offered: it is no extension of the protocol."""
        return False

    def frame_inbound_header(
        self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits, payload_length: int
    ) -> CloseReason | RsvBits:
        """Count the frame against the limits."""
        if self._in_frame:
            return _NO_RSV_BITS
        self._in_frame = True
        settings = self.settings
        if opcode.iscontrol():
            if opcode is not Opcode.CLOSE and not self._control.spend():
                return self._fail(
                    CloseReason.POLICY_VIOLATION,
                    f"more than ws_max_control_frames={settings.ws_max_control_frames} PING/PONG frames "
                    f"in a burst (ws_control_frame_rate={settings.ws_control_frame_rate}/s)",
                )
            return _NO_RSV_BITS
        if opcode is Opcode.CONTINUATION:
            self._fragments += 1
            self._wire_size += payload_length
        else:
            limit = settings.ws_max_message_size
            self._fragments = 1
            self._wire_size = payload_length
            # Compressed, a message may be a little larger than inflated (deflate stores what it
            # cannot compress, adding a few bytes per block); inflated, it is bounded exactly.
            self._wire_limit = limit + (limit >> 10) + 64 if rsv.rsv1 else limit
        if self._wire_size > self._wire_limit:
            return self._fail(
                CloseReason.MESSAGE_TOO_BIG,
                f"message larger than ws_max_message_size={settings.ws_max_message_size} bytes",
            )
        if self._fragments > settings.ws_fragment_grace and (
            self._wire_size < self._fragments * settings.ws_min_fragment_size
        ):
            return self._fail(
                CloseReason.POLICY_VIOLATION,
                f"a message of {self._fragments} fragments averaging under ws_min_fragment_size="
                f"{settings.ws_min_fragment_size} bytes (ws_fragment_grace={settings.ws_fragment_grace})",
            )
        return _NO_RSV_BITS

    def frame_inbound_complete(self, proto: FrameDecoder | FrameProtocol, fin: bool) -> None:
        """The frame is over: the next header is a new frame."""
        self._in_frame = False

    def whole_message(self, length: int) -> None:
        """A whole uncompressed message of ``length`` bytes was read without wsproto: count it as wsproto would."""
        self._fragments = 1
        self._wire_size = length
        self._wire_limit = self.settings.ws_max_message_size

    def _fail(self, code: CloseReason, problem: str) -> CloseReason:
        self.problem = problem
        return code


class WebSocketSession(ProtocolCore):
    """
    One WebSocket, server side, once the handshake is done (over HTTP/1.1 or HTTP/2 alike).

    :param settings: the limits (see :class:`~.WebSocketSettings`).
    :param clock: the time in seconds (the shell's loop time).
    :param deflate: the permessage-deflate agreement of the handshake, if any.
    """

    def __init__(
        self,
        settings: WebSocketSettings,
        clock: Callable[[], float],
        *,
        deflate: DeflateParameters | None = None,
    ) -> None:
        super().__init__(clock)
        self.settings = settings
        self._limits = FrameLimits(settings, clock)
        self._deflate = DeflateExtension(deflate, settings.ws_max_message_size) if deflate is not None else None
        extensions: list[Extension] = [self._limits]
        if self._deflate is not None:
            extensions.append(self._deflate)
        self._ws = Connection(ConnectionType.SERVER, extensions)
        #: Whether whole data frames are read and written by :mod:`~kyoukai.protocol.ws.frames`
        #: (compressed ones need the extension's state, so never with permessage-deflate).
        self._fast = self._deflate is None
        #: Bytes of the frame wsproto is reading that it has not been given yet.
        self._owed = 0
        #: The start of a frame head given to wsproto, too short yet to tell the frame's length.
        self._head = b""
        #: A whole message smaller than this fails the tiny-fragment check (only when
        #: ``ws_fragment_grace`` is 0): wsproto must read it.
        self._fast_min_size = settings.ws_min_fragment_size if settings.ws_fragment_grace < 1 else 0
        self._out = bytearray()
        #: The message being received (``None`` between messages).
        self._incoming: io.StringIO | io.BytesIO | None = None
        #: Memory held by messages handed out and not yet given back to :meth:`message_consumed`.
        self.buffered_bytes = 0
        #: Whether the session is over: nothing more is read or sent once ``data_to_send`` is empty.
        self.closed = False
        #: Since our Close went out, when we stop waiting for the peer's (``None``: not closing).
        self._close_deadline: float | None = None
        now = clock()
        self._last_received = now
        self._last_message = now
        #: When our unanswered ping went out.
        self._ping_sent_at: float | None = None

    @property
    def open(self) -> bool:
        """Whether messages may be sent: neither side has started closing."""
        return not self.closed and self._close_deadline is None

    # input

    def receive_data(self, data: bytes | None) -> list[Any]:
        """Feed bytes from the peer, or ``None`` at its end (EOF, END_STREAM); the events they caused."""
        if self.closed:
            return []
        if data is None:
            if self._close_deadline is None:
                self._finish(PeerClosed(CloseReason.ABNORMAL_CLOSURE, "the peer ended without a Close frame"))
            else:
                self._finish(Closed(CloseReason.ABNORMAL_CLOSURE, "the peer ended without answering our Close"))
            return self.take_events()
        if data:
            now = self._last_received = self.clock()
            self._ping_sent_at = None
            if self._fast and self.open:
                self._receive_frames(data, now)
                return self.take_events()
        self._to_wsproto(data)
        return self.take_events()

    def _receive_frames(self, data: bytes, now: float) -> None:
        """
        Read the whole data frames in ``data`` here and give wsproto the others, each whole
        (as far as it has arrived): wsproto then always starts at a frame's head, in the state
        it would have reached reading every frame itself.
        """
        pos = 0
        end = len(data)
        if self._head:
            head = self._head + data[:14]
            length = frame_length(head, 0)
            if length is None:
                self._head = head
                self._to_wsproto(data)
                return
            self._owed = length - len(self._head)
            self._head = b""
        settings = self.settings
        while True:
            owed = self._owed
            if owed:
                if owed >= end - pos:
                    self._owed = owed - (end - pos)
                    self._to_wsproto(data[pos:] if pos else data)
                    return
                self._owed = 0
                self._to_wsproto(data[pos : pos + owed])
                pos += owed
                if self.closed:
                    return
            if self._incoming is None:  # (else a fragmented message is under way: wsproto reads it)
                messages, pos, last = read_messages(data, pos, settings.ws_max_message_size, self._fast_min_size)
                if messages:
                    for message_data in messages:
                        self._deliver(message_data)
                    self._last_message = now
                    self._limits.whole_message(last)
            if pos == end:
                return
            length = frame_length(data, pos)
            if length is None:
                self._head = data[pos:]
                self._to_wsproto(self._head)
                return
            self._owed = length

    def _to_wsproto(self, data: bytes) -> None:
        state_before = self._ws.state
        self._ws.receive_data(data)
        for event in self._ws.events():
            if isinstance(event, wse.Message):
                self._receive_piece(event)
            elif isinstance(event, wse.Ping):
                if self.open:
                    self._out += self._ws.send(event.response())
            elif isinstance(event, wse.CloseConnection):
                self._receive_close(event, state_before)
                break
            # A Pong needs nothing: any byte received already shows the peer is alive.

    def _receive_piece(self, event: wse.Message[Any]) -> None:
        if not self.open:
            return  # we are closing: what the peer still sends is dropped
        incoming = self._incoming
        if incoming is None:
            incoming = self._incoming = io.StringIO() if isinstance(event.data, str) else io.BytesIO()
        incoming.write(event.data)
        if event.message_finished:
            self._incoming = None
            self._deliver(incoming.getvalue())
            self._last_message = self.clock()

    def _deliver(self, data: str | bytes) -> None:
        """A whole message for the handler, counted in what it has not read yet."""
        message = Message(data, sys.getsizeof(data))
        self.buffered_bytes += message.size
        self._events.append(message)

    def _receive_close(self, event: wse.CloseConnection, state_before: object) -> None:
        code, reason = int(event.code), event.reason or ""
        if self._ws.state is state_before:
            # wsproto reports a protocol error (or a limit) as a Close it did not receive, and
            # only a Close received moves its state: fail the connection (RFC 6455 section 7.1.7).
            problem = self._limits.problem or (self._deflate.problem if self._deflate is not None else None)
            self._fail(code, problem or reason)
        elif self._close_deadline is None:
            # The peer closes: echo its code (none if it gave none, RFC 6455 section 5.5.1).
            echo = CloseReason.NO_STATUS_RCVD if code == CloseReason.NO_STATUS_RCVD else code
            self._out += self._ws.send(wse.CloseConnection(code=echo))
            self._finish(PeerClosed(code, reason))
        else:
            self._finish(Closed(code, reason))

    def message_consumed(self, message: Message) -> None:
        """The app has read ``message``: its memory no longer counts in :attr:`buffered_bytes`."""
        self.buffered_bytes -= message.size

    def should_pause_reading(self) -> bool:
        """Whether the app is behind by ``ws_buffer_size`` or more: read nothing (or give no credit) for now."""
        return self.buffered_bytes >= self.settings.ws_buffer_size

    # output

    def send_message(self, data: str | bytes) -> None:
        """
        Queue a message: text for ``str``, binary for ``bytes``.

        :raises SessionClosedError: if the WebSocket is closing or closed.
        """
        if not self.open:
            state = "closing" if not self.closed else "closed"
            raise SessionClosedError(f"cannot send a message: the WebSocket is {state}")
        if self._fast:
            write_message(self._out, data)
        else:
            event = wse.TextMessage(data=data) if isinstance(data, str) else wse.BytesMessage(data=data)
            self._out += self._ws.send(event)
        self._last_message = self.clock()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """
        Start the closing handshake: our Close goes out, and the session waits up to
        ``ws_close_timeout`` for the peer's (then :class:`Closed`). Does nothing if the
        WebSocket is already closing or closed. A reason longer than 123 bytes is cut.

        :raises ValueError: if ``code`` may not be sent (RFC 6455 section 7.4).
        """
        if not (code in SENDABLE_CLOSE_CODES or 3000 <= code <= 4999):
            raise ValueError(
                f"close code {code} may not be sent: use 1000 to 1003, 1007 to 1009, 1011 to 1013 or 3000 to 4999"
            )
        if not self.open:
            return
        self._out += self._ws.send(wse.CloseConnection(code=code, reason=reason))
        self._close_deadline = self.clock() + self.settings.ws_close_timeout
        self._incoming = None

    @property
    def output_size(self) -> int:
        """Bytes queued for the peer that :meth:`data_to_send` has not handed out yet."""
        return len(self._out)

    def data_to_send(self) -> bytes:
        """The bytes for the peer queued so far."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _fail(self, code: int, reason: str) -> None:
        if self._close_deadline is None:  # else our Close is out already
            self._out += self._ws.send(wse.CloseConnection(code=code, reason=reason))
        self._finish(Failed(code, reason))

    def _finish(self, event: PeerClosed | Closed | Failed) -> None:
        self.closed = True
        self._incoming = None
        self._events.append(event)

    # time

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timeout` must run next (``None``: nothing is timed)."""
        if self.closed:
            return None
        settings = self.settings
        deadlines = []
        if self._output_paused_since is not None:
            deadlines.append(self._output_paused_since + settings.ws_send_timeout)
        if self._close_deadline is not None:
            deadlines.append(self._close_deadline)
        else:
            if self._ping_sent_at is not None:
                deadlines.append(self._ping_sent_at + settings.ws_ping_timeout)
            elif settings.ws_ping_interval:
                deadlines.append(self._last_received + settings.ws_ping_interval)
            if settings.ws_idle_timeout:
                deadlines.append(self._last_message + settings.ws_idle_timeout)
        return min(deadlines, default=None)

    def handle_timeout(self) -> list[Any]:
        """Act on the deadline that has passed, if any; the events that caused."""
        if self.closed:
            return []
        now = self.clock()
        settings = self.settings
        paused = self._output_paused_since
        if paused is not None and now >= paused + settings.ws_send_timeout:
            self._out.clear()
            self._finish(
                Failed(
                    CloseReason.ABNORMAL_CLOSURE,
                    f"the peer read nothing for ws_send_timeout={settings.ws_send_timeout}s",
                )
            )
        elif self._close_deadline is not None:
            if now >= self._close_deadline:
                self._finish(
                    Closed(
                        CloseReason.ABNORMAL_CLOSURE,
                        f"no Close from the peer within ws_close_timeout={settings.ws_close_timeout}s",
                    )
                )
        elif self._ping_sent_at is not None and now >= self._ping_sent_at + settings.ws_ping_timeout:
            self._fail(
                CloseReason.INTERNAL_ERROR,
                f"no answer to a ping within ws_ping_timeout={settings.ws_ping_timeout}s: the peer is taken for dead",
            )
        elif settings.ws_idle_timeout and now >= self._last_message + settings.ws_idle_timeout:
            self.close(CloseReason.GOING_AWAY, f"idle for ws_idle_timeout={settings.ws_idle_timeout}s")
        elif (
            settings.ws_ping_interval
            and self._ping_sent_at is None
            and now >= self._last_received + settings.ws_ping_interval
        ):
            self._out += self._ws.send(wse.Ping())
            self._ping_sent_at = now
        return self.take_events()
