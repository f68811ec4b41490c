"""
HTTP/2 on h2: the HTTP/2-only component, the connection protocol and the per-stream state.

Data flow: the transport's bytes go into an :class:`h2.connection.H2Connection`; each request
head opens an :class:`H2State` (the stream's ``wsgi.input``) and a handler task that runs the
app. Request DATA is fed into the state; flow-control credit goes back to the client only as the
app consumes it. The response goes out through :meth:`H2KyoukaiProtocol.sending_loop`, which
never sends more than the stream window, the connection window, the peer's frame size and the
transport's buffer allow. h2's pending bytes are flushed once per batch of events.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import struct
from collections.abc import AsyncIterator
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.connection import ConnectionInputs
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from h2.stream import StreamClosedBy, StreamInputs
from hyperframe.frame import GoAwayFrame, RstStreamFrame
from werkzeug.exceptions import InternalServerError

from kyoukai.asphalt import KyoukaiBaseComponent
from kyoukai.backends.h2_closed import ClosedStreams
from kyoukai.backends.h2_guard import ConnectionGuard, Opening, Violation
from kyoukai.backends.h2_hpack import MemoDecoder, MemoEncoder, quiet_hpack_debug_logging
from kyoukai.backends.h2_validation import check_request_headers, check_trailers
from kyoukai.backends.transport import abort_transport, close_transport, transport_ends
from kyoukai.body import RequestBody
from kyoukai.protocol.fields import InvalidFieldError, check_informational_status, checked_names
from kyoukai.tls import create_server_context, negotiated_protocol
from kyoukai.wsgi import prepare_response, to_wsgi_environment

if TYPE_CHECKING:
    from asphalt.core import Context

    from kyoukai.app import Kyoukai

logger = logging.getLogger("kyoukai.http2")

#: Response headers that are meaningful only to HTTP/1.1 (RFC 9113 section 8.2.2).
_CONNECTION_SPECIFIC = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})
_NOT_HTTP2_BODY = (
    b"This port speaks HTTP/2 only (RFC 9113). Connect with an HTTP/2 client, e.g. curl --http2-prior-knowledge "
    b"on cleartext, or negotiate h2 by ALPN over TLS.\n"
)
_NOT_HTTP2 = (
    b"HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_NOT_HTTP2_BODY)).encode() + b"\r\n\r\n" + _NOT_HTTP2_BODY
)


def _code_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)


#: A frame header: 24-bit length (as 16 + 8 bits), type, flags, stream id.
_FRAME_HEADER = struct.Struct(">HBBBL")
#: Frame types and flags (RFC 9113 section 6) of the frames Kyoukai writes itself.
_DATA, _HEADERS, _CONTINUATION = 0x0, 0x1, 0x9
_END_STREAM, _END_HEADERS = 0x1, 0x4


class _H2Connection(h2.connection.H2Connection):
    """
    h2's connection with three changes:

    - RFC 9113 section 5.1 says an endpoint ignores the frames it receives on a stream it has
      reset, where h2 answers every DATA frame on it with another RST_STREAM (a client still
      uploading would get one per frame).
    - Closed streams are remembered in a :class:`ClosedStreams` ring, not an ordered dict.
    - :meth:`_receive_frame` does not build ``repr(frame)`` for a trace line nobody logs: for a
      DATA frame that hex-encodes the whole payload, which took 44% of the server's time in the
      1 MiB upload benchmark.

    And it reports every RST_STREAM it sends with an error code, the ones h2 makes on its own
    (a stream window pushed past 2**31-1, DATA after END_STREAM) as well as the server's, to
    ``count_reset``; the first :class:`Violation` that returns is kept in
    :attr:`reset_violation` for the protocol to act on once h2 is done with the frame.
    """

    _reset_earlier = False
    #: The reset budget's verdict, once a reset was one too many.
    reset_violation: Violation | None = None

    def __init__(self, config: h2.config.H2Configuration, count_reset: Any = None) -> None:
        super().__init__(config)
        self._count_reset = count_reset
        # How the last 4096 client streams were closed (to tell a late frame from a protocol
        # error) in 40 KiB at most, where h2's ordered dict takes about 120 bytes a stream.
        self._closed_streams = ClosedStreams()  # type: ignore[assignment]

    def _receive_frame(self, frame: Any) -> list:
        # h2 4.x's H2Connection._receive_frame without its eager repr(frame); the same error
        # handling otherwise.
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except h2.exceptions.StreamClosedError as e:
            # Closed by RST_STREAM: answer with RST_STREAM; otherwise a connection error.
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = e.error_code
                self._prepare_for_sending([f])
                events = e._events
            else:
                raise
        except h2.exceptions.StreamIDTooLowError as e:
            # A frame on a stream closed earlier, or implicitly by a higher stream id: a stream
            # error after a reset, a connection error after END_STREAM or with no record.
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([f])
                events = []
            elif self._stream_is_closed_by_end(e.stream_id):
                raise h2.exceptions.StreamClosedError(e.stream_id) from e
            else:
                raise
        else:
            self._prepare_for_sending(frames)
        return events

    def _prepare_for_sending(self, frames: list) -> None:
        # Every frame h2 sends passes here: the one place to see each RST_STREAM.
        count_reset = self._count_reset
        if count_reset is not None:
            for frame in frames:
                if frame.__class__ is RstStreamFrame and frame.error_code:
                    violation = count_reset()
                    if violation is not None and self.reset_violation is None:
                        self.reset_violation = violation
        super()._prepare_for_sending(frames)

    def _receive_data_frame(self, frame: Any) -> tuple[list, list]:
        # Whether we had reset this stream before this frame came (rather than this frame
        # being the stream error that resets it now).
        self._reset_earlier = self._stream_closed_by(frame.stream_id) is StreamClosedBy.SEND_RST_STREAM
        return super()._receive_data_frame(frame)

    def _handle_data_on_closed_stream(self, events: list, exc: Exception, frame: Any) -> tuple[list, list]:
        frames, events = super()._handle_data_on_closed_stream(events, exc, frame)
        if self._reset_earlier:
            frames = [f for f in frames if not isinstance(f, RstStreamFrame)]
        return frames, events


class _StreamClosed(Exception):
    """The stream was reset or the connection is gone: stop sending on it."""


class _Discard:
    """A stream whose response is complete while its client is still sending the request."""

    __slots__ = ("remaining", "timer")

    def __init__(self, remaining: int, timer: asyncio.TimerHandle) -> None:
        #: Body bytes the stream may still send before it is reset.
        self.remaining = remaining
        self.timer = timer


class H2State(RequestBody):
    """
    One HTTP/2 stream: the request (its environ, and its body as ``wsgi.input``) and the state
    of its response.

    :param headers: the request's header block, as ``(name, value)`` byte pairs.
    :param stream_id: the stream's id.
    :param protocol: the connection's protocol object.
    """

    def __init__(self, headers: list[tuple[bytes, bytes]], stream_id: int, protocol: H2KyoukaiProtocol) -> None:
        super().__init__(
            max_size=protocol.settings.max_body_size, on_consumed=self._consumed, timeout=protocol.settings.body_timeout
        )
        self.stream_id = stream_id
        self.protocol = protocol
        self.headers = headers
        #: The request's WSGI environ (``wsgi.input`` is this object).
        self.environ = protocol.build_environ(headers, self)
        length = self.environ.get("CONTENT_LENGTH")
        if length is not None and length.isdigit():
            self.expected_length = int(length)
        #: The handler task of this stream.
        self.task: asyncio.Task | None = None
        #: Whether the response headers went out.
        self.headers_sent = False
        #: Whether the stream is gone (reset, or the connection lost).
        self.closed = False
        self._status: str | None = None
        self._response_headers: list[tuple[str, str]] = []
        self._window_waiter: asyncio.Future | None = None
        #: The protocol's send turn in which this stream last sent DATA.
        self.last_send_turn = 0
        self._response_body: Any = None
        #: The response whose ``trailers`` end the stream, if it has that attribute.
        self._trailers_from: Any = None

    def _consumed(self, size: int) -> None:
        self.protocol.acknowledge(self.stream_id, size)

    def insert_data(self, data: bytes, wake: bool = True) -> None:
        """Add request body data received on the stream (see :meth:`feed` for ``wake``)."""
        self.feed(data, wake)

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        """The WSGI ``start_response`` callable: records the status and headers to send."""
        self._status = status.split(" ", 1)[0]
        self._response_headers = list(headers)

    def get_response_headers(self) -> list[tuple[str, str]]:
        """The HTTP/2 header block of the response: ``:status`` first, lowercase names."""
        block = [(":status", self._status or "200")]
        for name, value in self._response_headers:
            lname = name.lower()
            if lname not in _CONNECTION_SPECIFIC:
                block.append((lname, value))
        return block

    # flow control waits

    def window_waiter(self) -> asyncio.Future:
        """
        A future that :meth:`window_opened` (a WINDOW_UPDATE or SETTINGS change that may have
        opened the window) or :meth:`close` completes. It exists from this call on, so a wake-up
        that comes before the sender awaits it is not lost; the sender checks the window again
        after taking it (see :meth:`H2KyoukaiProtocol._wait_for_window`).
        """
        waiter = self._window_waiter
        if waiter is None or waiter.done():
            waiter = self._window_waiter = self.protocol.loop.create_future()
        return waiter

    def window_opened(self) -> None:
        """Wake a sender waiting for window."""
        waiter = self._window_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """Mark the stream gone; wake its sender so it stops."""
        self.closed = True
        self.window_opened()


class H2KyoukaiProtocol(asyncio.Protocol):
    """
    Serves one HTTP/2 connection.

    :param component: the component that accepted the connection.
    :param parent_context: the parent of the request contexts.
    """

    def __init__(self, component: KyoukaiBaseComponent, parent_context: Context) -> None:
        self.component = component
        self.app: Kyoukai = component.app
        self.parent_context = parent_context
        self.settings = component.settings
        #: The abuse budgets of this connection.
        self.guard = ConnectionGuard(component.settings, is_active=self._is_active)
        self.conn = _H2Connection(
            h2.config.H2Configuration(
                client_side=False,
                header_encoding=None,
                # Request headers are checked by check_request_headers (one pass, and a malformed
                # request is a stream error, not a connection error).
                validate_inbound_headers=False,
                # Response headers are built here (lowercase names, no connection-specific
                # fields) and checked in one pass by kyoukai.protocol.fields, so h2's outbound
                # checks are skipped.
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            ),
            count_reset=self.guard.count_reset,
        )
        self.metrics = component.metrics
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Open streams by id.
        self.streams: dict[int, H2State] = {}
        #: Streams whose response ended before their request: how many more body bytes each
        #: may send (to be read and thrown away) and the timer that resets it.
        self._discarding: dict[int, _Discard] = {}
        #: Counts the turns streams take at sending DATA (see :meth:`_wake_senders`).
        self._send_turns = 0
        self.scheme = "http"
        self.server_address: tuple[str, int] | None = None
        self.peer: tuple[str, int] | None = None
        self._write_paused = False
        self._writable_waiters: collections.deque[asyncio.Future] = collections.deque()
        self._preface_checked = False
        self._closed = False
        self._draining = False
        self._last_stream_id = 0
        self._timer: asyncio.TimerHandle | None = None
        self._block_timer: asyncio.TimerHandle | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._join_writes = False
        self._fed: set[H2State] = set()
        self._event_handlers = {
            h2.events.RequestReceived: self.request_received,
            h2.events.DataReceived: self.receive_data,
            h2.events.StreamEnded: self.stream_complete,
            h2.events.WindowUpdated: self.window_opened,
            h2.events.StreamReset: self.stream_reset,
            h2.events.RemoteSettingsChanged: self.settings_changed,
            h2.events.TrailersReceived: self.trailers_received,
            h2.events.ConnectionTerminated: self.connection_terminated,
        }

    def _is_active(self, stream_id: int) -> bool:
        return stream_id in self.streams or stream_id in self._discarding

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A new connection that speaks HTTP/2 from its first byte."""
        self._start(transport)
        self.component.connection_opened(self)

    def adopt(
        self, transport: asyncio.BaseTransport, data: bytes = b"", *, upgrade: dict[str, Any] | None = None
    ) -> None:
        """
        Take over a connection from the HTTP/1.1 protocol: after the HTTP/2 preface was seen
        (``data`` starts with it), or after ``101 Switching Protocols`` for an h2c upgrade
        (``upgrade`` is the environ of the request that asked, served as stream 1).
        """
        self._start(transport, upgrade)
        if data:
            self.data_received(data)

    def _start(self, transport: asyncio.BaseTransport, upgrade: dict[str, Any] | None = None) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.scheme, self.server_address, self.peer = transport_ends(transport)
        # asyncio's TLS transport encrypts each buffer of writelines() as a TLS record of its
        # own (a 9-byte record for each DATA frame header), so over TLS a batch is joined into
        # one write; cleartext batches go out as they are (sendmsg), without the copy.
        self._join_writes = self.scheme == "https"
        self._configure()
        if upgrade is None:
            self.conn.initiate_connection()
        else:
            settings = upgrade.get("HTTP_HTTP2_SETTINGS", "").strip()
            self.conn.initiate_upgrade_connection((settings + "=" * (-len(settings) % 4)).encode("latin-1"))
        self._allow_extra_streams()
        extra_window = self.settings.connection_window_size - 65535
        if extra_window > 0:
            self.conn.increment_flow_control_window(extra_window)
        if upgrade is not None:
            self._flush()
        # Otherwise our preface waits for the client's first bytes, so that a client speaking
        # HTTP/1.1 gets a readable refusal instead of a binary SETTINGS frame.
        self._set_timer(self.settings.header_timeout, self._on_preface_timeout)
        if upgrade is not None:
            self._preface_checked = True
            self._serve_upgrade_request(upgrade)

    def _configure(self) -> None:
        """
        Our SETTINGS. They are set as the initial local settings (not through
        ``update_settings``), and the decoder's and frame buffer's limits are set to match, so
        the limits advertised are the limits enforced from the first frame on.
        """
        settings = self.settings
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: settings.max_header_size,
                SettingCodes.INITIAL_WINDOW_SIZE: settings.stream_window_size,
                SettingCodes.MAX_FRAME_SIZE: settings.max_frame_size,
                SettingCodes.ENABLE_PUSH: 0,
            },
        )
        # HPACK coders that remember repeated header blocks (see h2_hpack); the tables are
        # still empty here, so swapping them in keeps both ends in step.
        quiet_hpack_debug_logging()
        self.conn.encoder = MemoEncoder()
        self.conn.decoder = MemoDecoder(settings.max_header_size)
        self.conn.max_inbound_frame_size = settings.max_frame_size

    def _allow_extra_streams(self) -> None:
        """
        h2 treats one stream over MAX_CONCURRENT_STREAMS as a connection error. We refuse such
        a stream alone (RST_STREAM REFUSED_STREAM, RFC 9113 section 5.1.2), so h2's own check is
        lifted after the advertised value has been serialised.
        """
        self.conn.local_settings._settings[SettingCodes.MAX_CONCURRENT_STREAMS] = collections.deque([2**31 - 1])

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self.metrics.bytes_in += len(data)
        if not self._preface_checked:
            if not self._check_preface(data):
                return
        violation = self.guard.feed(data)
        if violation is not None:
            self._calm_down(violation)
            return
        if self.guard.reserved_bits:
            data = self.guard.clear_reserved_bits(data)
        if self.guard.header_block_open:
            if self._block_timer is None:
                self._block_timer = self.loop.call_later(self.settings.header_timeout, self._on_header_block_timeout)
        elif self._block_timer is not None:
            self._block_timer.cancel()
            self._block_timer = None
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            code = getattr(e, "error_code", ErrorCodes.PROTOCOL_ERROR)
            logger.info("Closing the HTTP/2 connection from %s: %s (error code %s).", self.peer, e, _code_name(code))
            self.close(code)
            return
        for event in events:
            self._dispatch_event(event)
            if self._closed:
                return
        if self.conn.reset_violation is not None:
            self._calm_down(self.conn.reset_violation)
            return
        if self._fed:
            for state in self._fed:
                state.wake()
            self._fed.clear()
        self._flush()

    def _check_preface(self, data: bytes) -> bool:
        """
        Read the connection's first bytes up to the end of the preface: whether ``data`` goes on
        to h2. Anything else is a connection error PROTOCOL_ERROR (RFC 9113 section 3.4), except
        an HTTP/1.x request line where ALPN did not choose h2: that client gets a plain 505.
        """
        alpn_h2 = negotiated_protocol(self.transport) == "h2"
        opening = self.guard.read_opening(data, http1_allowed=not alpn_h2)
        if opening is Opening.PREFACE:
            self._preface_checked = True
        if opening in (Opening.PREFACE, Opening.PARTIAL_PREFACE):
            return True
        if opening is Opening.INVALID:
            seen = "after ALPN chose h2" if alpn_h2 else "nor an HTTP/1.x request line"
            self._calm_down(Violation(ErrorCodes.PROTOCOL_ERROR, f"the connection opens with no HTTP/2 preface {seen}"))
        elif opening is Opening.HTTP1:
            logger.info("Refused a client from %s that does not speak HTTP/2 on this HTTP/2-only port.", self.peer)
            self._closed = True
            self.transport.write(_NOT_HTTP2)
            close_transport(self.transport, self.loop, self.settings.send_timeout)
        return False

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._cancel_timer()
        if self._block_timer is not None:
            self._block_timer.cancel()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for discard in self._discarding.values():
            discard.timer.cancel()
        self._discarding.clear()
        for state in list(self.streams.values()):
            state.abort()
            state.close()
            if state.task is not None:
                state.task.cancel()
        self.streams.clear()
        while self._writable_waiters:
            waiter = self._writable_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        self.component.connection_closed(self)

    def pause_writing(self) -> None:
        # Stop reading too: what the client sends next (PINGs, SETTINGS) would only queue
        # more acknowledgements behind the data it does not read.
        self._write_paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if not self._closed:
            self.transport.resume_reading()
        waiters = self._writable_waiters
        while waiters and not self._write_paused:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # events

    def _dispatch_event(self, event: h2.events.Event) -> None:
        # PING, SETTINGS acks, PRIORITY and unknown frames have no handler: h2 answers PINGs
        # and SETTINGS itself, and priority signals are advisory.
        handler = self._event_handlers.get(type(event))
        if handler is not None:
            handler(event)

    def request_received(self, event: h2.events.RequestReceived) -> None:
        """A request head arrived: open its :class:`H2State` and start its handler."""
        stream_id = event.stream_id
        self._last_stream_id = max(self._last_stream_id, stream_id)
        self.metrics.streams_opened += 1
        problem = check_request_headers(event.headers, event.stream_ended is not None)
        if problem is not None:
            logger.info("Reset stream %d from %s: malformed request (%s).", stream_id, self.peer, problem)
            self._reset(stream_id, ErrorCodes.PROTOCOL_ERROR)
            return
        if self._draining:
            self._refuse(stream_id)
            return
        # Streams still sending a body after their response count too (half-closed, RFC 9113
        # section 5.1.2).
        if len(self.streams) + len(self._discarding) >= self.settings.max_concurrent_streams:
            logger.info(
                "Refused stream %d from %s: max_concurrent_streams=%d streams are open.",
                stream_id,
                self.peer,
                self.settings.max_concurrent_streams,
            )
            self._refuse(stream_id)
            return
        self._cancel_timer()
        state = H2State(event.headers, stream_id, self)
        self.streams[stream_id] = state
        if len(event.headers) > self.settings.max_header_count and (
            sum(1 for name, _ in event.headers if name[:1] != b":") > self.settings.max_header_count
        ):
            logger.info(
                "Stream %d from %s has more than max_header_count=%d headers.",
                stream_id,
                self.peer,
                self.settings.max_header_count,
            )
            state.task = self.loop.create_task(self._refuse_headers(state))
            return
        state.task = self.loop.create_task(self._handle(state))

    def receive_data(self, event: h2.events.DataReceived) -> None:
        """Request body data: into the stream's state; credit is returned when it is read."""
        state = self.streams.get(event.stream_id)
        padding = event.flow_controlled_length - len(event.data)
        if state is None or state.closed:
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            discard = self._discarding.get(event.stream_id)
            if discard is not None:
                discard.remaining -= event.flow_controlled_length
                if discard.remaining < 0:
                    self._end_discard(event.stream_id, "max_discard_size")
            return
        if padding:
            self.conn.acknowledge_received_data(padding, event.stream_id)
        # Woken once per read (in data_received), not once per DATA frame.
        state.insert_data(event.data, wake=False)
        self._fed.add(state)

    def stream_complete(self, event: h2.events.StreamEnded) -> None:
        """The client finished the request body."""
        state = self.streams.get(event.stream_id)
        if state is not None:
            state.feed_eof()
        elif self._discarding:
            self._end_discard(event.stream_id, None)

    def trailers_received(self, event: h2.events.TrailersReceived) -> None:
        """Request trailers: kept in the environ as ``kyoukai.trailers``."""
        problem = check_trailers(event.headers)
        if problem is not None:
            logger.info("Reset stream %d from %s: malformed trailers (%s).", event.stream_id, self.peer, problem)
            self._reset(event.stream_id, ErrorCodes.PROTOCOL_ERROR)
            self._drop_stream(event.stream_id)
            return
        state = self.streams.get(event.stream_id)
        if state is not None:
            state.environ["kyoukai.trailers"] = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers]

    def window_opened(self, event: h2.events.WindowUpdated) -> None:
        """Flow-control window opened on a stream (or the connection: every stream)."""
        if event.stream_id == 0:
            self._wake_senders()
        else:
            state = self.streams.get(event.stream_id)
            if state is not None:
                state.window_opened()

    def _wake_senders(self) -> None:
        """
        Wake every stream waiting for window, the one that sent longest ago first: the first
        to run may take the whole window, so this order is what shares the connection fairly.
        """
        for state in sorted(self.streams.values(), key=attrgetter("last_send_turn")):
            state.window_opened()

    def settings_changed(self, event: h2.events.RemoteSettingsChanged) -> None:
        """The client's SETTINGS: a new initial window or frame size may unblock senders."""
        self._cancel_timer()
        changed = event.changed_settings
        if SettingCodes.INITIAL_WINDOW_SIZE in changed or SettingCodes.MAX_FRAME_SIZE in changed:
            self._wake_senders()
        if not self.streams and not self._draining:
            self._set_timer(self.settings.keep_alive_timeout, self._on_idle_timeout)

    def stream_reset(self, event: h2.events.StreamReset) -> None:
        """The client reset a stream: cancel its handler and free its state."""
        if self._drop_stream(event.stream_id):
            self.metrics.streams_reset += 1

    def _drop_stream(self, stream_id: int) -> bool:
        """Forget a stream that is gone: cancel its handler, free its state."""
        state = self.streams.pop(stream_id, None)
        if state is None:
            if self._discarding:
                self._end_discard(stream_id, None)
            return False
        self._release(state)
        if state.task is not None:
            state.task.cancel()
        self._maybe_idle()
        return True

    def connection_terminated(self, event: h2.events.ConnectionTerminated) -> None:
        """The client sent GOAWAY: h2 will send nothing more, so stop every stream and close."""
        logger.debug("The client at %s sent GOAWAY (%s).", self.peer, event.error_code)
        for state in list(self.streams.values()):
            self._release(state)
            if state.task is not None:
                state.task.cancel()
        self.streams.clear()
        self._closed = True
        self._flush_raw()
        close_transport(self.transport, self.loop, self.settings.send_timeout)

    # request handling

    def build_environ(self, headers: list[tuple[bytes, bytes]], body: H2State) -> dict[str, Any]:
        """The WSGI environ of a request head received on this connection."""
        method = path = authority = ""
        scheme = self.scheme
        regular: list[tuple[str, str]] = []
        for name, value in headers:
            if name[:1] == b":":
                if name == b":method":
                    method = value.decode("ascii")
                elif name == b":path":
                    path = value.decode("latin-1")
                elif name == b":authority":
                    authority = value.decode("latin-1")
                elif name == b":scheme":
                    scheme = value.decode("ascii")
            else:
                regular.append((name.decode("latin-1"), value.decode("latin-1")))
        return to_wsgi_environment(
            regular,
            method,
            path,
            "2",
            body,
            scheme=scheme,
            server=self.server_address,
            peer=self.peer,
            protocol=self,
            authority=authority or None,
        )

    def _serve_upgrade_request(self, environ: dict[str, Any]) -> None:
        """Serve the request that asked for ``Upgrade: h2c`` as stream 1."""
        headers = [
            (b":method", environ["REQUEST_METHOD"].encode("latin-1")),
            (b":scheme", b"http"),
            (b":authority", environ.get("HTTP_HOST", "").encode("latin-1")),
            (b":path", environ["RAW_URI"].encode("latin-1")),
        ]
        skip = {"HTTP_CONNECTION", "HTTP_UPGRADE", "HTTP_HTTP2_SETTINGS", "HTTP_HOST"}
        for key, value in environ.items():
            if key.startswith("HTTP_") and key not in skip:
                headers.append((key[5:].lower().replace("_", "-").encode("latin-1"), value.encode("latin-1")))
            elif key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
                # (Kept outside HTTP_* by PEP 3333.)
                headers.append((key.lower().replace("_", "-").encode("latin-1"), value.encode("latin-1")))
        self._last_stream_id = 1
        state = H2State(headers, 1, self)
        state.feed_eof()
        self.streams[1] = state
        state.task = self.loop.create_task(self._handle(state))

    async def _handle(self, state: H2State) -> None:
        environ = state.environ
        try:
            request = self.app.request_class(environ)
            response = await self.app.process_request(request, self.parent_context)
            await self._send_response(state, response)
        except _StreamClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if isinstance(e, InvalidFieldError):
                logger.error(
                    "Stream %d (%s %s): %s; %s.",
                    state.stream_id,
                    environ["REQUEST_METHOD"],
                    environ["PATH_INFO"],
                    e,
                    "resetting it" if state.headers_sent else "sending 500 instead",
                )
            else:
                logger.exception(
                    "Stream %d (%s %s) failed.", state.stream_id, environ["REQUEST_METHOD"], environ["PATH_INFO"]
                )
            if not state.headers_sent and not state.closed:
                try:
                    await self._send_response(state, InternalServerError().get_response(environ))
                except _StreamClosed:
                    pass
            else:
                self._reset(state.stream_id, ErrorCodes.INTERNAL_ERROR)
        finally:
            self._processing_done(environ, state.stream_id)

    async def _refuse_headers(self, state: H2State) -> None:
        try:
            response = self.app.response_class(
                f"More than max_header_count={self.settings.max_header_count} header fields\n", status=431
            )
            await self._send_response(state, response)
        except _StreamClosed:
            pass
        finally:
            self._processing_done(state.environ, state.stream_id)

    def _processing_done(self, environ: dict[str, Any], stream_id: int) -> None:
        """A stream's handler finished: free its state; reset it if the client is still sending."""
        state = self.streams.pop(stream_id, None)
        if state is None:
            return
        if state.headers_sent:
            self.metrics.requests += 1
        if not state.closed and not state.complete and not self._closed:
            self._discard_rest(state)
        self._release(state)
        state.release()
        # werkzeug's request and its environ point at each other; cut the cycle so the request
        # (and the body it cached) is freed now rather than at the next cyclic collection.
        environ.pop("werkzeug.request", None)
        environ.pop("wsgi.input", None)  # the other cycle: the state holds the environ
        self._flush()
        self._maybe_idle()

    def _discard_rest(self, state: H2State) -> None:
        """
        The response is complete but the request is not: read and throw away what the client
        still sends (credit returned, so it can finish), up to ``max_discard_size`` bytes and
        ``discard_timeout`` seconds, then RST_STREAM NO_ERROR, which RFC 9113 section 8.1
        allows at once. Waiting lets clients that treat that reset as a failure (curl 7.88)
        finish the upload and report the response, an early 413 above all.
        """
        budget = self.settings.max_discard_size
        stream_id = state.stream_id
        if state.expected_length is not None and state.expected_length - state.received > budget:
            self._reset(stream_id, ErrorCodes.NO_ERROR)
            return
        timer = self.loop.call_later(self.settings.discard_timeout, self._end_discard, stream_id, "discard_timeout")
        self._discarding[stream_id] = _Discard(budget, timer)

    def _end_discard(self, stream_id: int, limit: str | None) -> None:
        """
        Stop discarding the body of ``stream_id``: it ended or was reset (``limit`` is
        ``None``), or it went past ``limit`` and is reset now.
        """
        discard = self._discarding.pop(stream_id, None)
        if discard is None:
            return
        discard.timer.cancel()
        if limit is not None and not self._closed:
            logger.debug(
                "Reset stream %d from %s: its request body went on past %s after the response.",
                stream_id,
                self.peer,
                limit,
            )
            self._reset(stream_id, ErrorCodes.NO_ERROR)
            self._flush()
        self._maybe_idle()

    def _release(self, state: H2State) -> None:
        """Return the connection credit of unread body bytes and close the state."""
        unread = state.buffered
        state.abort()
        state.close()
        if unread and not self._closed:
            try:
                self.conn.acknowledge_received_data(unread, state.stream_id)
            except h2.exceptions.ProtocolError:
                pass

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Return ``size`` bytes of flow-control credit (the app consumed them)."""
        if self._closed or size <= 0:
            return
        try:
            self.conn.acknowledge_received_data(size, stream_id)
        except h2.exceptions.ProtocolError:
            return
        self._flush()

    # response sending

    async def _send_response(self, state: H2State, response: Any) -> None:
        parts = prepare_response(response, state.environ)
        state.start_response(str(parts.status), parts.headers)
        headers = state.get_response_headers()
        body = parts.body
        ends_now = parts.stream is None and not body
        if not ends_now and getattr(response, "trailers", None) is not None:
            state._trailers_from = response
        if parts.stream is None and state._trailers_from is None and self._send_complete(state, headers, body):
            return
        self._send_headers(state, headers, ends_now)
        if parts.stream is not None:
            self._flush()
            state._response_body = parts.stream
            await self.sending_loop(state.stream_id)
        elif body:
            self._flush()
            state._response_body = body
            await self.sending_loop(state.stream_id)

    def _send_complete(self, state: H2State, headers: list[tuple[str, str]], body: bytes) -> bool:
        """
        Send a whole final response, head and body, if the body fits in one DATA frame that
        the windows allow now; return whether it was sent. The frames are written here, with
        every state change h2's ``send_headers`` and ``send_data`` make (the connection and
        stream state machines, the HPACK encoder, both windows), and without their per-call
        frame objects, header conversion and checks that cannot fail for a response built
        here (lowercase names, no connection-specific fields; see :meth:`H2State.get_response_headers`).
        """
        conn = self.conn
        stream_id = state.stream_id
        stream = conn.streams.get(stream_id)
        size = len(body)
        frame_size = conn.max_outbound_frame_size
        if (
            stream is None
            or state.closed
            or self._closed
            or self._write_paused
            or headers[0][1][:1] == "1"  # an informational status is never a whole response
            or size > frame_size
            or size > conn.outbound_flow_control_window
            or size > stream.outbound_flow_control_window
        ):
            return False
        try:
            conn.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
            stream.state_machine.process_input(StreamInputs.SEND_HEADERS)
            # Encoded after the state change, as h2 does: the encoder's table changes for good.
            block = conn.encoder.encode(headers)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as e:
            raise _StreamClosed from e
        stream.request_method = None  # as h2's send_headers leaves it for a response
        state.headers_sent = True
        # Whatever h2 has queued (earlier header blocks above all: HPACK order) goes first.
        self._flush()
        pending = self._pending
        ends_with_headers = 0 if size else _END_STREAM
        written = 0
        for start in range(0, len(block), frame_size):
            piece = block[start : start + frame_size]
            first = start == 0
            flags = (ends_with_headers if first else 0) | (_END_HEADERS if start + frame_size >= len(block) else 0)
            kind = _HEADERS if first else _CONTINUATION
            pending.append(_FRAME_HEADER.pack(len(piece) >> 8, len(piece) & 0xFF, kind, flags, stream_id))
            pending.append(piece)
            written += 9 + len(piece)
        try:
            if size:
                conn.state_machine.process_input(ConnectionInputs.SEND_DATA)
                stream.state_machine.process_input(StreamInputs.SEND_DATA)
            stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as e:
            raise _StreamClosed from e
        if size:
            pending.append(_FRAME_HEADER.pack(size >> 8, size & 0xFF, _DATA, _END_STREAM, stream_id))
            pending.append(body)
            written += 9 + size
            stream.outbound_flow_control_window -= size
            conn.outbound_flow_control_window -= size
        self._queued(written)
        return True

    def _send_headers(self, state: H2State, headers: list[tuple[str, str]], end_stream: bool) -> None:
        if state.closed or self._closed:
            raise _StreamClosed
        try:
            self.conn.send_headers(state.stream_id, headers, end_stream=end_stream)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as e:
            raise _StreamClosed from e
        state.headers_sent = True
        if end_stream:
            self._flush()

    async def sending_loop(self, stream_id: int) -> None:
        """
        Send the response body of ``stream_id`` (bytes, or an async iterator of chunks as the
        handler produces them), frame by frame, within the stream and connection windows and
        the peer's max frame size, waiting while the transport is over its high-water mark;
        then end the stream.
        """
        state = self.streams.get(stream_id)
        if state is None:
            raise _StreamClosed
        body = state._response_body
        state._response_body = None
        ends_with_data = state._trailers_from is None
        if isinstance(body, (bytes, bytearray, memoryview)):
            await self._send_data(state, memoryview(body), end_stream=ends_with_data)
            if not ends_with_data:
                self._send_trailers(state)
            return
        chunks: AsyncIterator[bytes] = body
        try:
            async for chunk in chunks:
                await self._send_data(state, memoryview(chunk), end_stream=False)
        finally:
            # A reset or lost stream stops the loop mid-body: close the app's generator now
            # rather than whenever it is garbage collected.
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        if ends_with_data:
            await self._send_data(state, memoryview(b""), end_stream=True)
        else:
            self._send_trailers(state)

    def _send_trailers(self, state: H2State) -> None:
        """
        End the stream with the response's ``trailers`` (read now, after the body, so a body
        generator may fill them in), as a HEADERS frame.
        """
        trailers = state._trailers_from.trailers or ()
        if hasattr(trailers, "items"):
            trailers = trailers.items()
        block = [(name.lower(), str(value)) for name, value in trailers if name.lower() not in _CONNECTION_SPECIFIC]
        checked_names(block, "trailer")
        try:
            if block:
                self.conn.send_headers(state.stream_id, block, end_stream=True)
            else:
                self.conn.end_stream(state.stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as e:
            raise _StreamClosed from e
        self._flush()

    async def _send_data(self, state: H2State, view: memoryview, end_stream: bool) -> None:
        conn = self.conn
        stream_id = state.stream_id
        while True:
            if state.closed or self._closed:
                raise _StreamClosed
            if self._write_paused:
                await self._wait_writable()
                continue
            if not view:
                if end_stream:
                    try:
                        conn.end_stream(stream_id)
                    except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as e:
                        raise _StreamClosed from e
                    self._flush()
                return
            try:
                window = conn.local_flow_control_window(stream_id)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as e:
                raise _StreamClosed from e
            if window <= 0:
                await self._wait_for_window(state)
                continue
            budget = min(window, len(view))
            ends_here = end_stream and budget == len(view)
            try:
                self._queue_data_frames(stream_id, view[:budget], ends_here)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError) as e:
                raise _StreamClosed from e
            view = view[budget:]
            self._send_turns += 1
            state.last_send_turn = self._send_turns
            if ends_here:
                return

    def _queue_data_frames(self, stream_id: int, view: memoryview, end_stream: bool) -> None:
        """
        Queue ``view`` as DATA frames of at most the peer's frame size; the caller checked the
        windows. The frames before the last are written here as a frame header plus a slice of
        the body (no copy), with the flow-control windows charged exactly as h2 would; the last
        goes through h2, which then makes the stream's END_STREAM transition.
        """
        conn = self.conn
        frame_size = conn.max_outbound_frame_size
        self._flush()  # whatever h2 has queued (HEADERS, acks) goes first
        stream = conn.streams[stream_id]
        if not stream.open or conn.state_machine.state is h2.connection.ConnectionState.CLOSED:
            raise h2.exceptions.StreamClosedError(stream_id)
        total = len(view)
        last_start = total - (total % frame_size or frame_size) if total else 0
        pending = self._pending
        for start in range(0, last_start, frame_size):
            pending.append(_FRAME_HEADER.pack(frame_size >> 8, frame_size & 0xFF, _DATA, 0, stream_id))
            pending.append(view[start : start + frame_size])
        if last_start:
            conn.outbound_flow_control_window -= last_start
            stream.outbound_flow_control_window -= last_start
            self._queued(last_start + 9 * (last_start // frame_size))
        conn.send_data(stream_id, view[last_start:], end_stream=end_stream)
        self._flush()

    async def _wait_for_window(self, state: H2State) -> None:
        """
        Wait until the stream's window may have opened. The waiter is taken before the window
        is looked at again, and awaited as it is (no task in between): whatever opens the
        window, before or after this point, either shows in the window or completes the waiter.
        """
        waiter = state.window_waiter()
        if state.closed or self._closed:
            raise _StreamClosed
        try:
            if self.conn.local_flow_control_window(state.stream_id) > 0:
                return
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as e:
            raise _StreamClosed from e
        try:
            await asyncio.wait_for(waiter, self.settings.send_timeout)
        except TimeoutError:
            logger.info(
                "Reset stream %d from %s: its flow-control window stayed closed for send_timeout=%ss.",
                state.stream_id,
                self.peer,
                self.settings.send_timeout,
            )
            self._reset(state.stream_id, ErrorCodes.CANCEL)
            self._flush()
            raise _StreamClosed from None

    async def _wait_writable(self) -> None:
        waiter = self.loop.create_future()
        self._writable_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, self.settings.send_timeout)
        except TimeoutError:
            if not self._closed:
                logger.info(
                    "Dropped the connection from %s: it read nothing for send_timeout=%ss.",
                    self.peer,
                    self.settings.send_timeout,
                )
                self.abort()
            raise _StreamClosed from None

    async def send_informational(self, environ: dict[str, Any], status: int, headers: list[tuple[str, str]]) -> None:
        """
        Send a 1xx response (e.g. 103 Early Hints) on the request's stream before its response.

        :raises InvalidFieldError: when a header name is not a token or a value holds CR, LF or NUL.
        """
        check_informational_status(status)
        state = environ.get("wsgi.input")
        if not isinstance(state, H2State) or state.protocol is not self:
            raise ValueError("send_informational needs the environ of a request on this connection")
        fields = [(name.lower(), str(value)) for name, value in headers if name.lower() not in _CONNECTION_SPECIFIC]
        checked_names(fields, "informational response")
        if state.headers_sent or state.closed or self._closed:
            return
        block = [(":status", str(status)), *fields]
        try:
            self.conn.send_headers(state.stream_id, block)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self._flush()

    # writing and closing

    def raw_write(self, data: bytes) -> None:
        """Write bytes to the transport as they are, after anything already queued."""
        if not self._closed and data:
            self._write_pending()
            self.transport.write(data)
            self.metrics.bytes_out += len(data)

    def _flush(self) -> None:
        """
        Queue what h2 has to send. Small amounts go out once per event-loop iteration, so the
        frames of many streams share one write; past 64 KiB they go out at once, so the
        transport's backpressure is seen by the sender.
        """
        data = self.conn.data_to_send()
        if not data or self._closed:
            return
        self._pending.append(data)
        self._queued(len(data))

    def _queued(self, size: int) -> None:
        """``size`` more bytes are in ``_pending``: write them now past 64 KiB, else this turn."""
        self._pending_size += size
        if self._pending_size >= 65536:
            self._write_pending()
        elif self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._write_pending)

    def _write_pending(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        pending, size = self._pending, self._pending_size
        if not pending:
            return
        self._pending = []
        self._pending_size = 0
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if len(pending) == 1:
            transport.write(pending[0])
        elif self._join_writes:
            transport.write(b"".join(pending))
        else:
            transport.writelines(pending)
        self.metrics.bytes_out += size

    def _flush_raw(self) -> None:
        self._flush()
        self._write_pending()

    def _reset(self, stream_id: int, code: ErrorCodes) -> None:
        try:
            self.conn.reset_stream(stream_id, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        # (The connection counted the reset, if it carries an error code.)
        violation = self.conn.reset_violation
        if violation is not None and not self._closed:
            self._calm_down(violation)

    def _refuse(self, stream_id: int) -> None:
        """Refuse one stream (REFUSED_STREAM): the client may retry it elsewhere."""
        self.metrics.streams_refused += 1
        self._reset(stream_id, ErrorCodes.REFUSED_STREAM)

    def _calm_down(self, violation: Violation) -> None:
        """A budget is exhausted (or the preface is wrong): log it, then GOAWAY and close."""
        level = logging.WARNING if violation.error_code == ErrorCodes.ENHANCE_YOUR_CALM else logging.INFO
        logger.log(level, "Closing the HTTP/2 connection from %s: %s.", self.peer, violation.message)
        self.close(violation.error_code)

    def close(self, error_code: int = 0) -> None:
        """
        End the connection: GOAWAY with ``error_code``, flush, then close the transport (so a
        peer never sees a GOAWAY on a socket that stays open).
        """
        if self._closed:
            return
        self.metrics.goaways[_code_name(error_code)] += 1
        if self.conn.state_machine.state is not h2.connection.ConnectionState.CLOSED:
            self.conn.close_connection(error_code=error_code, last_stream_id=self._last_stream_id)
            self._flush_raw()
        else:
            # h2 ended the connection on a protocol error and queued its own GOAWAY: a second
            # one would contradict its last stream id.
            self._flush_raw()
        self._closed = True
        for state in list(self.streams.values()):
            self._release(state)
            if state.task is not None:
                state.task.cancel()
        self.streams.clear()
        close_transport(self.transport, self.loop, self.settings.send_timeout)

    def shutdown(self) -> None:
        """
        Graceful shutdown: GOAWAY naming the last stream we will serve, let those streams
        finish, then close. The GOAWAY is written outside h2's state machine, because after
        ``close_connection`` h2 would refuse to send the rest of the responses.
        """
        if self._closed or self._draining:
            return
        self._draining = True
        self._flush()
        self.metrics.goaways["NO_ERROR"] += 1
        self.raw_write(GoAwayFrame(0, last_stream_id=self._last_stream_id, error_code=0).serialize())
        self._maybe_idle()

    def abort(self) -> None:
        """Drop the connection now (with a TCP reset)."""
        if self.transport is not None:
            abort_transport(self.transport)

    def _maybe_idle(self) -> None:
        if self.streams or self._discarding or self._closed:
            return
        if self._draining:
            self._flush_raw()
            self._closed = True
            close_transport(self.transport, self.loop, self.settings.send_timeout)
        else:
            self._set_timer(self.settings.keep_alive_timeout, self._on_idle_timeout)

    # timers

    def _set_timer(self, delay: float, callback: Any) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_preface_timeout(self) -> None:
        self._timer = None
        logger.info(
            "Closing the connection from %s: no HTTP/2 preface and SETTINGS within header_timeout=%ss.",
            self.peer,
            self.settings.header_timeout,
        )
        self.close(ErrorCodes.SETTINGS_TIMEOUT if self._preface_checked else ErrorCodes.PROTOCOL_ERROR)

    def _on_header_block_timeout(self) -> None:
        self._block_timer = None
        if self.guard.header_block_open and not self._closed:
            self._calm_down(
                Violation(
                    ErrorCodes.ENHANCE_YOUR_CALM,
                    f"a header block left unfinished for header_timeout={self.settings.header_timeout}s",
                )
            )

    def _on_idle_timeout(self) -> None:
        self._timer = None
        if not self.streams:
            logger.debug(
                "Closing the idle HTTP/2 connection from %s (keep_alive_timeout=%ss).",
                self.peer,
                self.settings.keep_alive_timeout,
            )
            self.close(ErrorCodes.NO_ERROR)


class H2KyoukaiComponent(KyoukaiBaseComponent):
    """
    An HTTP/2-only port. With a key and certificate it serves TLS (1.2 or newer, ALPN ``h2``,
    RFC 9113 cipher rules); without them, cleartext HTTP/2 with prior knowledge (behind a
    proxy). A client that does not speak HTTP/2 gets a short HTTP/1.1 505 saying so.

    :param app: the app, or a ``"module:attribute"`` reference to it.
    :param ssl_keyfile: the private key file (``None`` for cleartext).
    :param ssl_certfile: the certificate chain file (``None`` for cleartext).
    :param ip: the address to listen on.
    :param port: the port to listen on.
    :param cfg: the :class:`~.ServerSettings` limits.
    """

    def __init__(
        self,
        app: Kyoukai | str,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        *,
        ip: str = "",
        port: int = 4444,
        **cfg: Any,
    ) -> None:
        super().__init__(app, ip, port, **cfg)
        self.ssl_keyfile = ssl_keyfile
        self.ssl_certfile = ssl_certfile
        if bool(ssl_keyfile) != bool(ssl_certfile):
            raise ValueError("H2KyoukaiComponent needs both ssl_keyfile and ssl_certfile, or neither (cleartext)")

    def describe(self) -> str:
        return "HTTP/2 only"

    def create_ssl_context(self) -> Any:
        """The TLS context (ALPN ``h2`` only), or ``None`` for cleartext prior knowledge."""
        if not self.ssl_certfile:
            return None
        return create_server_context(self.ssl_certfile, self.ssl_keyfile, alpn_protocols=("h2",))

    def get_protocol(self, ctx: Context) -> H2KyoukaiProtocol:
        """A protocol object for a new connection."""
        return H2KyoukaiProtocol(self, ctx)

    async def start(self, ctx: Context) -> None:
        """Start listening."""
        await self._serve(ctx, lambda: self.get_protocol(ctx), self.create_ssl_context())
