"""
The HTTP/2 server connection, without I/O: :class:`H2ServerConnection`.

Bytes from the client go in through :meth:`~H2ServerConnection.receive_data`; what happened
comes out as events (:mod:`kyoukai.protocol.events`); the app's responses go in through
:meth:`~H2ServerConnection.send_response`, :meth:`~H2ServerConnection.send_data` and
:meth:`~H2ServerConnection.send_trailers`; the bytes for the client come out of
:meth:`~H2ServerConnection.data_to_send`. Time comes from a clock the shell gives; the next
moment the core needs to be woken is :meth:`~H2ServerConnection.next_deadline`, and
:meth:`~H2ServerConnection.handle_timeout` is that wake-up.

The core owns the stream table (its records hang the shell's per-stream state off
:attr:`Stream.app_state`), the send scheduler, the abuse budgets, every timer, the refusal
policy and the connection's ending: graceful shutdown with the two-step GOAWAY of RFC 9113
section 6.8, a client's GOAWAY served to its last stream, and connection errors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import h2.config
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame, PingFrame, RstStreamFrame

from kyoukai.metrics import Metrics
from kyoukai.protocol import events as ev
from kyoukai.protocol.core import ProtocolCore
from kyoukai.protocol.fields import CONNECTION_SPECIFIC_NAMES
from kyoukai.protocol.h2 import compat
from kyoukai.protocol.h2.guard import ConnectionGuard, Opening, Violation
from kyoukai.protocol.h2.hpack import MemoDecoder, MemoEncoder
from kyoukai.protocol.h2.scheduler import DATA, END_STREAM, FRAME_HEADER, Scheduler, header_frames
from kyoukai.protocol.h2.stream import Stream
from kyoukai.protocol.h2.validation import SUPPORTED_PROTOCOLS, check_trailers, inspect_request
from kyoukai.settings import ServerSettings
from kyoukai.wsgi import format_head

logger = logging.getLogger("kyoukai.http2")

#: h2's configuration, the same for every connection (h2 only reads it).
_H2_CONFIG = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,
    # Request headers are checked by inspect_request (one pass, and a malformed request
    # is a stream error); response fields by kyoukai.protocol.fields.
    validate_inbound_headers=False,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)

#: The opaque data of the PING that makes the first step of a graceful shutdown.
DRAIN_PING = b"kyoukai\x01"
#: Seconds the first GOAWAY of a shutdown waits for its PING's ACK before the last stream id is fixed.
DRAIN_PING_TIMEOUT = 2.0
_MAX_STREAM_ID = 2**31 - 1
_NOT_HTTP2_BODY = (
    b"This port speaks HTTP/2 only (RFC 9113). Connect with an HTTP/2 client, e.g. curl --http2-prior-knowledge "
    b"on cleartext, or negotiate h2 by ALPN over TLS.\n"
)


def response_block(status: int | str, fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """
    The HTTP/2 header block of a response: ``:status``, then ``fields`` with lowercase names,
    less the connection-specific ones.
    """
    block = [(":status", str(status))]
    names = _block_names
    for name, value in fields:
        lname = names.get(name, _UNSEEN)
        if lname is _UNSEEN:
            lname = _block_name(name)
        if lname is not None:
            block.append((lname, value))
    return block


#: Field names as a response block has them: lowercase, or ``None`` for a connection-specific
#: field (left out). Most responses repeat a few names: they are looked up, not lowercased.
_block_names: dict[str, str | None] = {}
#: How many names are remembered (all are forgotten when full), and the longest.
_BLOCK_NAMES_KEPT = 512
_BLOCK_NAME_LENGTH = 64
_UNSEEN: Any = object()


def _block_name(name: str) -> str | None:
    lname: str | None = name.lower()
    if lname in CONNECTION_SPECIFIC_NAMES:
        lname = None
    if len(name) <= _BLOCK_NAME_LENGTH:
        if len(_block_names) >= _BLOCK_NAMES_KEPT:
            _block_names.clear()
        _block_names[name] = lname
    return lname


def code_name(code: int) -> str:
    """The name of an HTTP/2 error code (its number if unknown)."""
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)


class H2ServerConnection(ProtocolCore):
    """
    One HTTP/2 connection, server side.

    :param settings: the limits (see :class:`~kyoukai.settings.ServerSettings`).
    :param clock: the time in seconds (the shell's loop time).
    :param metrics: the component's counters.
    :param peer: the client, for log lines.
    :param alpn_h2: TLS chose h2 by ALPN (so anything but the preface is a protocol error).
    :param upgrade_settings: the ``HTTP2-Settings`` of an h2c upgrade; the request that asked
        is then stream 1, given by :meth:`receive_upgraded_request`.
    :param preface_deadline: when the preface and the client's SETTINGS are due, if not
        ``header_timeout`` from now (HTTP/1.1 had the connection while its first bytes came).
    """

    def __init__(
        self,
        settings: ServerSettings,
        clock: Callable[[], float],
        *,
        metrics: Metrics | None = None,
        peer: Any = None,
        alpn_h2: bool = False,
        upgrade_settings: str | None = None,
        preface_deadline: float | None = None,
    ) -> None:
        self.settings = settings
        super().__init__(clock)
        self.metrics = metrics if metrics is not None else Metrics()
        self.peer = peer
        self._alpn_h2 = alpn_h2
        #: The abuse budgets.
        self.guard = ConnectionGuard(settings, clock, is_active=self._is_active)
        # HPACK coders that remember repeated header blocks.
        compat.quiet_hpack_debug_logging()
        self.h2 = compat.ServerH2Connection(
            _H2_CONFIG,
            count_reset=self.guard.count_reset,
            encoder=MemoEncoder(),
            decoder=MemoDecoder(settings.max_header_size),
        )
        #: Open streams by id (a stream whose body is being thrown away included).
        self.streams: dict[int, Stream] = {}
        self.scheduler = Scheduler()
        #: Streams throwing their request body away (each has a deadline), as the keys of a dict
        #: (smaller than a set when empty, as it is on most connections).
        self._timed: dict[Stream, None] = {}
        #: Whether the core is done: nothing more is read or sent.
        self.closed = False
        self._control: list[Any] = []
        self._preface_read = upgrade_settings is not None
        self._settings_seen = False
        self._last_stream_id = 0
        #: Graceful shutdown: 0 no, 1 the first GOAWAY is out (its PING not acked), 2 the last
        #: stream id is fixed.
        self._drain_step = 0
        self._drain_deadline = 0.0
        self._client_goaway = False
        self._idle_deadline: float | None = (
            clock() + settings.header_timeout if preface_deadline is None else preface_deadline
        )
        self._block_deadline: float | None = None
        self._configure(upgrade_settings)

    # setting up

    def _configure(self, upgrade_settings: str | None) -> None:
        """
        Our SETTINGS, as the initial local settings (not through ``update_settings``), with
        the decoder's and frame buffer's limits to match, so that the limits advertised are the
        limits enforced from the first frame on.
        """
        settings = self.settings
        conn = self.h2
        conn.local_settings = compat.compact_settings(
            False,
            {
                SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: settings.max_header_size,
                SettingCodes.INITIAL_WINDOW_SIZE: settings.stream_window_size,
                SettingCodes.MAX_FRAME_SIZE: settings.max_frame_size,
                SettingCodes.ENABLE_PUSH: 0,
                # WebSockets over HTTP/2 (RFC 8441): extended CONNECT is welcome.
                SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
            },
        )
        conn.max_inbound_frame_size = settings.max_frame_size
        extra_window = settings.connection_window_size - 65535
        if upgrade_settings is None:
            compat.initiate_server_connection(conn, extra_window)
        else:
            value = upgrade_settings.strip()
            conn.initiate_upgrade_connection((value + "=" * (-len(value) % 4)).encode("latin-1"))
            if extra_window > 0:
                conn.increment_flow_control_window(extra_window)
        compat.allow_unlimited_streams(conn)
        if upgrade_settings is not None:
            self._pull_h2()
        # Otherwise the server's preface waits for the client's first bytes (see
        # data_to_send), so that a client speaking HTTP/1.1 gets a readable refusal.

    def _is_active(self, stream_id: int) -> bool:
        return stream_id in self.streams

    def receive_upgraded_request(self, headers: list[tuple[bytes, bytes]]) -> list[Any]:
        """Serve the request that asked for ``Upgrade: h2c`` (no body) as stream 1."""
        self._last_stream_id = 1
        self.metrics.streams_opened += 1
        stream = Stream(1)
        stream.request_ended = True
        self.streams[1] = stream
        self._idle_deadline = None
        self._events.append(ev.RequestReceived(1, headers, True))
        return self.take_events()

    # input

    def receive_data(self, data: bytes) -> list[Any]:
        """Feed bytes received from the client; the events they caused."""
        if self.closed:
            return []
        if not self._preface_read:
            data = self._read_opening(data)
            if not data:
                return self.take_events()
        guard = self.guard
        violation = guard.feed(data)
        if violation is not None:
            self._violated(violation)
            return self.take_events()
        data = guard.passed(data)
        for stream_id, code, what in guard.stream_errors:
            self._stream_error(stream_id, code, what)
            if self.closed:
                return self.take_events()
        if guard.header_block_open:
            if self._block_deadline is None:
                self._block_deadline = self.clock() + self.settings.header_timeout
        else:
            self._block_deadline = None
        try:
            h2_events = self.h2.receive_data_and_heads(data, guard.request_heads)
        except compat.ResetBudgetExceeded as e:
            self._violated(e.violation)
            return self.take_events()
        except h2.exceptions.ProtocolError as e:
            code = getattr(e, "error_code", ErrorCodes.PROTOCOL_ERROR)
            logger.info("Closing the HTTP/2 connection from %s: %s (error code %s).", self.peer, e, code_name(code))
            self.close(code)
            return self.take_events()
        handlers = self._handlers
        for event in h2_events:
            handler = handlers.get(event.__class__)
            if handler is not None:
                handler(self, event)
                if self.closed:
                    break
        self._pull_h2()
        return self.take_events()

    def _stream_error(self, stream_id: int, code: int, what: str) -> None:
        """A stream error the guard found in a frame it cut out: reset that stream alone."""
        logger.info("Reset stream %d from %s: %s (%s).", stream_id, self.peer, what, code_name(code))
        if compat.stream_or_none(self.h2, stream_id) is not None:
            self.reset(stream_id, code)
            return
        # A stream h2 does not hold open: the reset is written here.
        self._pull_h2()
        self._control.append(RstStreamFrame(stream_id, error_code=code).serialize())
        violation = self.guard.count_reset(what)
        if violation is not None:
            self._violated(violation)

    def _read_opening(self, data: bytes) -> bytes:
        """
        The connection's first bytes, up to the end of the preface: what goes on to h2. Anything
        else is a connection error PROTOCOL_ERROR (RFC 9113 section 3.4), except an HTTP/1.x
        request line where ALPN did not choose h2: that client gets a plain 505.
        """
        opening = self.guard.read_opening(data, http1_allowed=not self._alpn_h2)
        if opening is Opening.PREFACE:
            self._preface_read = True
        if opening in (Opening.PREFACE, Opening.PARTIAL_PREFACE):
            return data
        if opening is Opening.INVALID:
            seen = "after ALPN chose h2" if self._alpn_h2 else "nor an HTTP/1.x request line"
            self._violated(Violation(ErrorCodes.PROTOCOL_ERROR, f"the connection opens with no HTTP/2 preface {seen}"))
        elif opening is Opening.HTTP1:
            logger.info("Refused a client from %s that does not speak HTTP/2 on this HTTP/2-only port.", self.peer)
            self.h2.data_to_send()  # the server's preface stays unsent: this client reads HTTP/1.1
            head = format_head(
                505,
                "HTTP Version Not Supported",
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Connection", "close"),
                    ("Content-Length", str(len(_NOT_HTTP2_BODY))),
                ],
            )
            self._control = [head + _NOT_HTTP2_BODY]
            self._end(abort=False)
        return b""

    # h2 events

    def _request_received(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        if stream_id > self._last_stream_id:
            self._last_stream_id = stream_id
        self.metrics.streams_opened += 1
        headers = event.headers
        head = inspect_request(headers, event.stream_ended is not None)
        problem = head.problem
        if problem is not None:
            logger.info("Reset stream %d from %s: malformed request (%s).", stream_id, self.peer, problem)
            self._reset_h2(stream_id, ErrorCodes.PROTOCOL_ERROR)
            return
        if self._client_goaway or (self._drain_step == 2 and stream_id > self._drain_last_stream_id):
            self._refuse(stream_id)
            return
        if len(self.streams) >= self.settings.max_concurrent_streams:
            logger.info(
                "Refused stream %d from %s: max_concurrent_streams=%d streams are open.",
                stream_id,
                self.peer,
                self.settings.max_concurrent_streams,
            )
            self._refuse(stream_id)
            return
        self._idle_deadline = None
        stream = Stream(stream_id)
        stream.request_ended = event.stream_ended is not None
        self.streams[stream_id] = stream
        stream.expected_length = head.content_length
        if head.regular_fields > self.settings.max_header_count:
            logger.info(
                "Stream %d from %s has more than max_header_count=%d headers.",
                stream_id,
                self.peer,
                self.settings.max_header_count,
            )
            self._answer(stream_id, 431, f"More than max_header_count={self.settings.max_header_count} header fields")
            return
        protocol = head.protocol
        if protocol is not None and protocol.lower() not in SUPPORTED_PROTOCOLS:
            # A well-formed extended CONNECT for a protocol this server does not speak: the
            # request is refused, not malformed (RFC 9110 section 15.6.2).
            asked = protocol[:64].decode("latin-1")
            logger.info("Stream %d from %s: extended CONNECT for :protocol %r: 501.", stream_id, self.peer, asked)
            self._answer(stream_id, 501, f"This server speaks no :protocol {asked!r} over CONNECT, only 'websocket'")
            return
        self._events.append(ev.RequestReceived(stream_id, headers, stream.request_ended))

    def _answer(self, stream_id: int, status: int, text: str) -> None:
        """Answer a request the app will not see with a short plain-text response."""
        body = (text + "\n").encode()
        fields = [("content-type", "text/plain; charset=utf-8"), ("content-length", str(len(body)))]
        self.send_response(stream_id, response_block(status, fields), body)
        self.finish(stream_id)

    def _data_received(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id
        stream = self.streams.get(stream_id)
        length = event.flow_controlled_length
        if stream is None or stream.finished:
            self.h2.acknowledge_received_data(length, stream_id)
            if stream is not None and stream.discard_left is not None:
                stream.discard_left -= length
                stream.discard_deadline = self.clock() + self.settings.discard_timeout
                if stream.discard_left < 0:
                    self._end_discard(stream, "max_discard_size")
            return
        padding = length - len(event.data)
        if padding:
            self.h2.acknowledge_received_data(padding, stream_id)
        stream.unacked += len(event.data)
        stream.received += len(event.data)
        self._events.append(ev.RequestData(stream_id, event.data))

    def _stream_ended(self, event: h2.events.StreamEnded) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None or stream.request_ended:
            return  # (gone, or the request head ended it: RequestReceived said so)
        stream.request_ended = True
        if stream.finished:
            self._settle(stream)
        else:
            self._events.append(ev.RequestEnded(event.stream_id))

    def _trailers_received(self, event: h2.events.TrailersReceived) -> None:
        problem = check_trailers(event.headers)
        if problem is not None:
            logger.info("Reset stream %d from %s: malformed trailers (%s).", event.stream_id, self.peer, problem)
            self.reset(event.stream_id, ErrorCodes.PROTOCOL_ERROR)
            return
        stream = self.streams.get(event.stream_id)
        if stream is not None and not stream.finished:
            self._events.append(ev.RequestTrailers(event.stream_id, list(event.headers)))

    def _window_updated(self, event: h2.events.WindowUpdated) -> None:
        if event.stream_id:
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                self.scheduler.mark_ready(stream)
        # (Streams waiting for the connection's window wait in the ready queue.)

    def _wake_all_senders(self) -> None:
        mark_ready = self.scheduler.mark_ready
        for stream in self.streams.values():
            if stream.pending_size or stream.end_pending:
                mark_ready(stream)

    def _settings_changed(self, event: h2.events.RemoteSettingsChanged) -> None:
        if not self._settings_seen:
            # The preface is complete: from header_timeout to keep_alive_timeout. Only the first
            # SETTINGS: later ones (or PINGs) do not keep an idle connection open.
            self._settings_seen = True
            if not self.streams and self._idle_deadline is not None and not self._drain_step:
                self._idle_deadline = self.clock() + self.settings.keep_alive_timeout
        changed = event.changed_settings
        if SettingCodes.INITIAL_WINDOW_SIZE in changed or SettingCodes.MAX_FRAME_SIZE in changed:
            self._wake_all_senders()

    def _stream_reset(self, event: h2.events.StreamReset) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return
        if event.remote_reset:
            self.metrics.streams_reset += 1
        self._drop(stream)

    def _connection_terminated(self, event: h2.events.ConnectionTerminated) -> None:
        """
        The client's GOAWAY. With NO_ERROR it is graceful: the streams it opened are served to
        the end, any newer one is refused, then the connection closes. With an error code the
        client gave up on the connection: close now.
        """
        logger.debug("The client at %s sent GOAWAY (%s).", self.peer, code_name(event.error_code or 0))
        if event.error_code:
            self.close(ErrorCodes.NO_ERROR)
            return
        self._client_goaway = True
        self._maybe_idle()

    def _ping_acked(self, event: h2.events.PingAckReceived) -> None:
        if self._drain_step == 1 and event.ping_data == DRAIN_PING:
            self._final_goaway()

    _handlers: dict[type, Callable[[H2ServerConnection, Any], None]] = {
        h2.events.RequestReceived: _request_received,
        h2.events.DataReceived: _data_received,
        h2.events.StreamEnded: _stream_ended,
        h2.events.TrailersReceived: _trailers_received,
        h2.events.WindowUpdated: _window_updated,
        h2.events.RemoteSettingsChanged: _settings_changed,
        h2.events.StreamReset: _stream_reset,
        h2.events.ConnectionTerminated: _connection_terminated,
        h2.events.PingAckReceived: _ping_acked,
    }

    # the app's side

    def acknowledge(self, stream_id: int, size: int) -> None:
        """The app consumed ``size`` body bytes of ``stream_id``: return their credit."""
        stream = self.streams.get(stream_id)
        if stream is None or size <= 0 or self.closed:
            return
        size = min(size, stream.unacked)
        if size:
            stream.unacked -= size
            self._acknowledge(stream_id, size)

    def _acknowledge(self, stream_id: int, size: int) -> None:
        try:
            self.h2.acknowledge_received_data(size, stream_id)
        except h2.exceptions.ProtocolError:
            return
        self._pull_h2()

    def send_informational(self, stream_id: int, status: int, fields: list[tuple[str, str]]) -> None:
        """A 1xx response before the final one (``fields``: lowercase names, checked)."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.response_started or self.closed:
            return
        try:
            self.h2.send_headers(stream_id, [(":status", str(status)), *fields])
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self._pull_h2()

    def send_response(self, stream_id: int, block: list[tuple[str, str]], body: bytes | None = None) -> bool:
        """
        The final response head of ``stream_id``: ``block`` is ``:status`` then the fields,
        with lowercase names, no connection-specific field, every name and value checked (see
        :func:`response_block`). With ``body`` (bytes) the response is complete: head and body
        go out at once when the windows allow, else the body waits its turn; with ``None``,
        :meth:`send_data` and :meth:`end_stream` follow. Whether the stream was still open.
        """
        stream = self.streams.get(stream_id)
        if stream is None or stream.response_started or self.closed:
            return False
        conn = self.h2
        h2_stream = compat.stream_or_none(conn, stream_id)
        if h2_stream is None:
            return False
        size = len(body) if body is not None else -1
        frame_size = conn.max_outbound_frame_size
        # The whole response in one go: the body fits a frame and the windows, nothing waits.
        whole = (
            0 <= size <= frame_size
            and size <= conn.outbound_flow_control_window
            and size <= h2_stream.outbound_flow_control_window
            and self._output_paused_since is None
        )
        ends_with_head = size == 0
        try:
            encoded = compat.send_response_head(conn, h2_stream, block, ends_with_head)
        except h2.exceptions.ProtocolError:
            return False
        stream.response_started = True
        self._pull_h2()  # anything h2 queued goes before this head
        header_frames(self._control, stream_id, encoded, frame_size, ends_with_head)
        if ends_with_head:
            stream.response_ended = True
        elif whole:
            assert body is not None
            try:
                compat.charge_data(conn, h2_stream, size, True)
            except h2.exceptions.ProtocolError:
                return False
            self._control.append(FRAME_HEADER.pack(size >> 8, size & 0xFF, DATA, END_STREAM, stream_id))
            self._control.append(body)
            stream.response_ended = True
        elif body is not None:
            stream.queue(body)
            stream.end_pending = True
            self.scheduler.mark_ready(stream)
        return True

    def send_data(self, stream_id: int, data: bytes | memoryview, end_stream: bool = False) -> bool:
        """
        Queue response body bytes (and the end of the stream); they go out as the windows
        allow. Whether the stream is still open. Wait for :class:`~.events.StreamSendable`
        while :meth:`pending` is not zero before queueing more.
        """
        stream = self.streams.get(stream_id)
        if stream is None or not stream.response_started or stream.response_ended or self.closed:
            return False
        stream.queue(data)
        if end_stream:
            stream.end_pending = True
        self.scheduler.mark_ready(stream)
        return True

    def end_stream(self, stream_id: int, trailers: list[tuple[str, str]] | None = None) -> bool:
        """End the response, with trailer fields (checked, lowercase names) if any."""
        stream = self.streams.get(stream_id)
        if stream is None or not stream.response_started or stream.response_ended or self.closed:
            return False
        if trailers:
            stream.trailers = [(n, v) for n, v in trailers if n not in CONNECTION_SPECIFIC_NAMES] or None
        stream.end_pending = True
        self.scheduler.mark_ready(stream)
        return True

    def pending(self, stream_id: int) -> int | None:
        """Response bytes of ``stream_id`` queued and not yet sent (``None``: the stream is gone)."""
        stream = self.streams.get(stream_id)
        if stream is None or self.closed:
            return None
        return stream.pending_size + (1 if stream.end_pending else 0)

    def reset(self, stream_id: int, code: int = ErrorCodes.CANCEL) -> None:
        """Reset a stream (RST_STREAM ``code``) and forget it."""
        self._reset_h2(stream_id, code)
        stream = self.streams.get(stream_id)
        if stream is not None:
            self._drop(stream)

    def finish(self, stream_id: int) -> None:
        """
        The app is done with ``stream_id``. Unread body credit goes back; if the client is still
        sending the request, the rest of its body is read and thrown away (credit returned, so
        it can finish and see the response, an early 413 above all) up to ``max_discard_size``
        bytes, with at most ``discard_timeout`` seconds between its frames, then RST_STREAM
        NO_ERROR, which RFC 9113 section 8.1 allows at once but which some clients (curl 7.88)
        report as a failed upload.
        """
        stream = self.streams.get(stream_id)
        if stream is None or stream.finished:
            return
        stream.finished = True
        if stream.response_started:
            self.metrics.requests += 1
        if stream.unacked and not self.closed:
            unacked, stream.unacked = stream.unacked, 0
            self._acknowledge(stream_id, unacked)
        self._settle(stream)

    def _settle(self, stream: Stream) -> None:
        """
        A finished stream, once its response is out: forgotten when its request is over too,
        else its body is thrown away (see :meth:`finish`); reset if the app left without
        ending its response.
        """
        if not stream.finished or stream.pending_size or stream.end_pending or self.closed:
            return
        stream_id = stream.stream_id
        if not stream.response_ended:
            self.reset(stream_id, ErrorCodes.INTERNAL_ERROR if stream.response_started else ErrorCodes.CANCEL)
        elif stream.request_ended:
            self._forget(stream)
        elif stream.discard_left is None:
            budget = self.settings.max_discard_size
            if stream.expected_length is not None and stream.expected_length - stream.received > budget:
                self.reset(stream_id, ErrorCodes.NO_ERROR)
                return
            stream.discard_left = budget
            stream.discard_deadline = self.clock() + self.settings.discard_timeout
            self._timed[stream] = None

    def _forget(self, stream: Stream) -> None:
        self.streams.pop(stream.stream_id, None)
        self._timed.pop(stream, None)
        self.scheduler.remove(stream)
        self._maybe_idle()

    def _end_discard(self, stream: Stream, limit: str) -> None:
        logger.debug(
            "Reset stream %d from %s: its request body went on past %s after the response.",
            stream.stream_id,
            self.peer,
            limit,
        )
        self.reset(stream.stream_id, ErrorCodes.NO_ERROR)

    def _drop(self, stream: Stream) -> None:
        """Forget a stream that is gone; tell the shell if its app was still at it."""
        self.streams.pop(stream.stream_id, None)
        self._timed.pop(stream, None)
        self.scheduler.remove(stream)
        stream.clear()
        if stream.unacked and not self.closed:
            unacked, stream.unacked = stream.unacked, 0
            self._acknowledge(stream.stream_id, unacked)
        if not stream.finished:
            stream.finished = True
            self._events.append(ev.StreamClosed(stream.stream_id, stream.app_state))
        self._maybe_idle()

    def _refuse(self, stream_id: int) -> None:
        """Refuse one stream (REFUSED_STREAM): the client may retry it elsewhere."""
        self.metrics.streams_refused += 1
        self._reset_h2(stream_id, ErrorCodes.REFUSED_STREAM)

    def _reset_h2(self, stream_id: int, code: int) -> None:
        if self.closed:
            return
        try:
            self.h2.reset_stream(stream_id, code)
        except compat.ResetBudgetExceeded as e:
            self._pull_h2()
            self._violated(e.violation)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        else:
            self._pull_h2()

    # output

    def data_to_send(self, limit: int = 1 << 20) -> list[Any]:
        """
        Bytes for the client, as a list of buffers (frame headers and slices of response
        bodies): everything pending of the connection's own frames and response heads, then
        response body frames while the windows allow, up to about ``limit`` bytes, unless
        :meth:`pause_output` is in force. Streams that sent all they had come out as
        :class:`~.events.StreamSendable` events (see :meth:`take_events`).
        """
        if not self._preface_read and not self.closed:
            return []
        self._pull_h2()
        out = self._control
        self._control = []
        if self._output_paused_since is None and self.scheduler.ready and not self.closed:
            sendable: list[int] = []
            self.scheduler.write(self.h2, out, limit, self.clock(), sendable)
            for stream_id in sendable:
                self._events.append(ev.StreamSendable(stream_id))
                stream = self.streams.get(stream_id)
                if stream is not None and stream.finished:
                    self._settle(stream)
        return out

    @property
    def has_output(self) -> bool:
        """Whether :meth:`data_to_send` has something to give."""
        return bool(self._control) or bool(self.scheduler.ready)

    def _pull_h2(self) -> None:
        """Move what h2 queued (acks, WINDOW_UPDATEs, resets, its own header blocks) to the output, in order."""
        data = compat.take_output(self.h2)
        if data:
            self._control.append(data)

    # ending

    def start_drain(self) -> None:
        """
        Graceful shutdown, in the two steps of RFC 9113 section 6.8: GOAWAY with the largest
        stream id and a PING; once the PING is acknowledged (so every stream the client opened
        before it saw the GOAWAY has arrived), GOAWAY with the last stream id that will be
        served. Those streams finish; then the connection closes.
        """
        if self.closed or self._drain_step:
            return
        self._drain_step = 1
        self._drain_deadline = self.clock() + DRAIN_PING_TIMEOUT
        self._pull_h2()
        self.metrics.goaways["NO_ERROR"] += 1
        self._control.append(GoAwayFrame(0, last_stream_id=_MAX_STREAM_ID, error_code=0).serialize())
        self._control.append(PingFrame(0, opaque_data=DRAIN_PING).serialize())
        self._idle_deadline = None
        self._maybe_idle()

    def _final_goaway(self) -> None:
        self._drain_step = 2
        self._drain_last_stream_id = self._last_stream_id
        self._pull_h2()
        self.metrics.goaways["NO_ERROR"] += 1
        self._control.append(GoAwayFrame(0, last_stream_id=self._last_stream_id, error_code=0).serialize())
        self._maybe_idle()

    _drain_last_stream_id = 0

    @property
    def draining(self) -> bool:
        """Whether a graceful shutdown is under way."""
        return self._drain_step > 0

    def close(self, error_code: int = ErrorCodes.NO_ERROR, *, goaway: bool = True) -> None:
        """
        End the connection: GOAWAY with ``error_code`` (if ``goaway``, and unless h2 ended it on
        a protocol error and queued its own), every stream gone, then
        :class:`~.events.ConnectionClosed`.
        """
        if self.closed:
            return
        if goaway and not compat.connection_closed(self.h2):
            self.metrics.goaways[code_name(error_code)] += 1
            self.h2.close_connection(error_code=error_code, last_stream_id=self._last_stream_id)
        self._pull_h2()
        self._end(abort=False)

    def _end(self, abort: bool) -> None:
        self.closed = True
        for stream in list(self.streams.values()):
            stream.clear()
            if not stream.finished:
                stream.finished = True
                self._events.append(ev.StreamClosed(stream.stream_id, stream.app_state))
        self.streams.clear()
        self.scheduler.clear()
        self._timed.clear()
        self._events.append(ev.ConnectionClosed(abort))

    def connection_lost(self) -> list[Any]:
        """The transport is gone: every stream with it."""
        if not self.closed:
            self._control = []
            self._end(abort=False)
        return self.take_events()

    def _violated(self, violation: Violation) -> None:
        """A budget is exhausted or a rule broken: log it, then GOAWAY and close."""
        level = logging.WARNING if violation.error_code == ErrorCodes.ENHANCE_YOUR_CALM else logging.INFO
        logger.log(level, "Closing the HTTP/2 connection from %s: %s.", self.peer, violation.message)
        self.close(violation.error_code)

    def _maybe_idle(self) -> None:
        if self.streams or self.closed:
            return
        if self._drain_step == 2 or self._client_goaway:
            # (After a shutdown's last GOAWAY, no other.)
            self.close(ErrorCodes.NO_ERROR, goaway=self._drain_step != 2)
        elif self._drain_step == 0 and self._idle_deadline is None:
            self._idle_deadline = self.clock() + self.settings.keep_alive_timeout

    # time

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timeout` must run next (``None``: nothing is timed)."""
        if self.closed:
            return None
        deadline = self._idle_deadline
        for candidate in (self._block_deadline, self._output_paused_since):
            if candidate is not None:
                if candidate is self._output_paused_since:
                    candidate = candidate + self.settings.send_timeout
                if deadline is None or candidate < deadline:
                    deadline = candidate
        if self._drain_step == 1 and (deadline is None or self._drain_deadline < deadline):
            deadline = self._drain_deadline
        send_timeout = self.settings.send_timeout
        for stream in self.scheduler.stalled:
            candidate = stream.stalled_since + send_timeout  # type: ignore[operator]
            if deadline is None or candidate < deadline:
                deadline = candidate
        for stream in self._timed:
            if deadline is None or stream.discard_deadline < deadline:
                deadline = stream.discard_deadline
        return deadline

    def handle_timeout(self) -> list[Any]:
        """Act on every deadline that has passed; the events that caused."""
        if self.closed:
            return []
        now = self.clock()
        settings = self.settings
        if self._output_paused_since is not None and now >= self._output_paused_since + settings.send_timeout:
            logger.info(
                "Dropped the connection from %s: it read nothing for send_timeout=%ss.",
                self.peer,
                settings.send_timeout,
            )
            self._control = []
            self._end(abort=True)
            return self.take_events()
        if self._block_deadline is not None and now >= self._block_deadline and self.guard.header_block_open:
            self._violated(
                Violation(
                    ErrorCodes.ENHANCE_YOUR_CALM,
                    f"a header block left unfinished for header_timeout={settings.header_timeout}s",
                )
            )
            return self.take_events()
        if self._idle_deadline is not None and now >= self._idle_deadline and not self.streams:
            if not (self._preface_read and self._settings_seen):
                logger.info(
                    "Closing the connection from %s: no HTTP/2 preface and SETTINGS within header_timeout=%ss.",
                    self.peer,
                    settings.header_timeout,
                )
                self.close(ErrorCodes.SETTINGS_TIMEOUT if self._preface_read else ErrorCodes.PROTOCOL_ERROR)
            else:
                logger.debug(
                    "Closing the idle HTTP/2 connection from %s (keep_alive_timeout=%ss).",
                    self.peer,
                    settings.keep_alive_timeout,
                )
                self.close(ErrorCodes.NO_ERROR)
            return self.take_events()
        if self._drain_step == 1 and now >= self._drain_deadline:
            self._final_goaway()
        for stream in [*self.scheduler.stalled, *self._timed]:
            if stream.stalled_since is not None and now >= stream.stalled_since + settings.send_timeout:
                logger.info(
                    "Reset stream %d from %s: its flow-control window stayed closed for send_timeout=%ss.",
                    stream.stream_id,
                    self.peer,
                    settings.send_timeout,
                )
                self.reset(stream.stream_id, ErrorCodes.CANCEL)
            elif stream.discard_left is not None and now >= stream.discard_deadline:
                self._end_discard(stream, "discard_timeout")
        return self.take_events()
