"""
Every reach into the private parts of h2 and hpack, and nothing else.

Kyoukai uses h2 for what it does well (parsing frames, the stream state machines, HPACK,
inbound flow control) and changes a few of its behaviours where RFC 9113 asks for something
else or where h2's generality costs too much on a server's hot path. Each such change needs
h2's internals, so all of them live here, behind small functions, and the version of h2 is
checked at import against the range these were written and tested for: a new h2 release is a
deliberate step (extend :data:`TESTED_H2`, run the HTTP/2 tests on both ends of the range).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import h2
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import h2.stream
import hpack.hpack
from h2.connection import ConnectionInputs, ConnectionState, H2ConnectionStateMachine
from h2.errors import ErrorCodes
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes
from h2.stream import H2Stream, H2StreamStateMachine, StreamClosedBy, StreamInputs, StreamState
from h2.utilities import is_informational_response, normalize_inbound_headers
from h2.windows import WindowManager
from hpack import Decoder, Encoder
from hpack.table import HeaderTable
from hyperframe.frame import RstStreamFrame

from kyoukai.protocol.h2.closed import ClosedStreams
from kyoukai.version import __version__

#: The h2 releases this module was written for: from the first, up to (not including) the second.
TESTED_H2 = ((4, 1, 0), (4, 5, 0))


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts + [0] * (3 - len(parts)))


def check_h2_version(version: str = h2.__version__) -> None:
    """
    :raises ImportError: naming both versions, when ``version`` of h2 is outside :data:`TESTED_H2`.
    """
    low, high = TESTED_H2
    if not low <= _release(version) < high:
        raise ImportError(
            f"Kyoukai {__version__} works with h2 {'.'.join(map(str, low))} up to (not including) "
            f"{'.'.join(map(str, high))}, and h2 {version} is installed: "
            f"pip install 'h2>={'.'.join(map(str, low))},<{'.'.join(map(str, high))}'"
        )


check_h2_version()

#: Names the rest of Kyoukai uses from here (so that no other module imports them from h2).
__all__ = [
    "ResetBudgetExceeded",
    "ServerH2Connection",
    "VersionedHeaderTable",
    "allow_unlimited_streams",
    "charge_data",
    "check_h2_version",
    "compact_settings",
    "connection_closed",
    "initiate_server_connection",
    "open_stream_count",
    "quiet_hpack_debug_logging",
    "send_response_head",
    "stream_or_none",
    "take_output",
    "unindexed_date_field",
]


class _SettingValues(list):
    """The current value of a setting and those proposed after it, while some are (h2 keeps a deque)."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


#: One-value tuples of the setting values seen, shared by every connection (up to a bound: the
#: peer chooses its values).
_SETTLED: dict[int | None, tuple[int | None]] = {}
_SETTLED_KEPT = 256


def _settled(value: int | None) -> tuple[int | None]:
    settled = _SETTLED.get(value)
    if settled is None:
        settled = (value,)
        if len(_SETTLED) < _SETTLED_KEPT:
            _SETTLED[value] = settled
    return settled


class CompactSettings(h2.settings.Settings):
    """
    h2's settings, small: a setting with no change in flight is a one-value tuple shared by
    every connection, where h2 keeps a deque for each (about 700 bytes, a dozen per
    connection); a change made turns it into a list until it is acknowledged.
    """

    def __init__(self, client: bool = True, initial_values: dict[Any, int] | None = None) -> None:
        super().__init__(client, initial_values)
        self._settings = {key: _settled(values[0]) for key, values in self._settings.items()}  # type: ignore[misc]

    def __setitem__(self, key: Any, value: int) -> None:
        values = self._settings.get(key)
        if values.__class__ is tuple:
            self._settings[key] = _SettingValues(values)
        super().__setitem__(key, value)

    def acknowledge(self) -> dict:
        changed = super().acknowledge()
        settings = self._settings
        for key in changed:
            if len(settings[key]) == 1:
                settings[key] = _settled(settings[key][0])  # type: ignore[assignment]
        return changed

    def copy(self) -> CompactSettings:
        """The same settings, as a new object (the one-value tuples shared; no change may be in flight)."""
        settings = CompactSettings.__new__(CompactSettings)
        settings.__dict__.update(self.__dict__)
        settings._settings = dict(self._settings)
        return settings


#: Whether a Settings object holds nothing but its table (and which side it is for): then a
#: copy of one made earlier stands for a new one, without h2's checks of the values again.
_SETTINGS_COPY = set(vars(h2.settings.Settings())) <= {"_client", "_settings"}
#: Settings made, by side and initial values: each connection gets a copy.
_SETTINGS_MADE: dict[tuple, CompactSettings] = {}
_SETTINGS_MADE_KEPT = 16


def compact_settings(client: bool, initial_values: dict[Any, int] | None = None) -> h2.settings.Settings:
    """A settings object for h2's ``local_settings`` or ``remote_settings``, small in memory."""
    if not _SETTINGS_COPY:
        return CompactSettings(client, initial_values)
    key = (client, *initial_values.items()) if initial_values else (client,)
    made = _SETTINGS_MADE.get(key)
    if made is None:
        made = CompactSettings(client, initial_values)
        if len(_SETTINGS_MADE) >= _SETTINGS_MADE_KEPT:
            _SETTINGS_MADE.clear()
        _SETTINGS_MADE[key] = made
    return made.copy()


def _transitions_hold() -> bool:
    """
    Whether h2's state machines make the transitions the fast paths below make without them:
    the first request head opens a server connection, and on an open one headers and data in
    either direction change nothing; a request head opens a stream (and its END_STREAM
    half-closes it); a response head, data and the end of the stream change what h2's tables
    say they change.
    """
    streams: dict = h2.stream._transitions
    connection: dict = H2ConnectionStateMachine._transitions
    machine = H2StreamStateMachine
    open_, remote_closed = StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE
    expected = {
        (StreamState.IDLE, StreamInputs.RECV_HEADERS): (machine.request_received, open_),
        (open_, StreamInputs.RECV_END_STREAM): (machine.stream_half_closed, remote_closed),
        (open_, StreamInputs.SEND_HEADERS): (machine.response_sent, open_),
        (remote_closed, StreamInputs.SEND_HEADERS): (machine.response_sent, remote_closed),
        (open_, StreamInputs.SEND_DATA): (None, open_),
        (remote_closed, StreamInputs.SEND_DATA): (None, remote_closed),
        (open_, StreamInputs.SEND_END_STREAM): (None, StreamState.HALF_CLOSED_LOCAL),
        (remote_closed, StreamInputs.SEND_END_STREAM): (machine.send_end_stream, StreamState.CLOSED),
    }
    server_open = ConnectionState.SERVER_OPEN
    unchanged = (ConnectionInputs.RECV_HEADERS, ConnectionInputs.SEND_HEADERS, ConnectionInputs.SEND_DATA)
    return (
        all(streams.get(key) == value for key, value in expected.items())
        and all(connection.get((server_open, step)) == (None, server_open) for step in unchanged)
        and connection.get((ConnectionState.IDLE, ConnectionInputs.RECV_HEADERS)) == (None, server_open)
    )


#: Whether the fast paths may stand in for h2's state machines (checked against h2's own tables).
FAST_TRANSITIONS = _transitions_hold()
_SERVER_OPEN, _IDLE_CONNECTION = ConnectionState.SERVER_OPEN, ConnectionState.IDLE
_END_STREAM_FLAG = 0x1
_INITIAL_WINDOW_SIZE = SettingCodes.INITIAL_WINDOW_SIZE
_OPEN, _CLOSED = StreamState.OPEN, StreamState.CLOSED
_HALF_CLOSED_REMOTE, _HALF_CLOSED_LOCAL = StreamState.HALF_CLOSED_REMOTE, StreamState.HALF_CLOSED_LOCAL
#: h2 4.3 made its events dataclasses that take their fields as arguments.
_EVENTS_TAKE_FIELDS = dataclasses.is_dataclass(h2.events.RequestReceived)


def _stream_event(kind: type, stream_id: int) -> Any:
    """An h2 event of ``kind`` for ``stream_id``, made the way the installed h2 makes them."""
    if _EVENTS_TAKE_FIELDS:
        return kind(stream_id=stream_id)
    event = kind()
    event.stream_id = stream_id
    return event


class ResetBudgetExceeded(h2.exceptions.ProtocolError):
    """One reset too many: raised out of h2's frame loop, so that no frame after it is processed."""

    error_code = ErrorCodes.ENHANCE_YOUR_CALM

    def __init__(self, violation: Any) -> None:
        super().__init__(violation.message)
        self.violation = violation


#: Per class of connection: frame class to the function receiving it (made from h2's table).
_FRAME_FUNCTIONS: dict[type, dict[type, Callable[..., tuple[list, list]]]] = {}

#: Every attribute h2's H2Connection.__init__ sets: ServerH2Connection sets the same itself.
_H2_CONNECTION_ATTRIBUTES = frozenset(
    {
        "state_machine",
        "streams",
        "highest_inbound_stream_id",
        "highest_outbound_stream_id",
        "encoder",
        "decoder",
        "config",
        "local_settings",
        "remote_settings",
        "outbound_flow_control_window",
        "max_outbound_frame_size",
        "max_inbound_frame_size",
        "incoming_buffer",
        "_header_frames",
        "_data_to_send",
        "_closed_streams",
        "_inbound_flow_control_window_manager",
        "_frame_dispatch_table",
    }
)
#: Whether the installed h2's connection sets exactly those (else ServerH2Connection lets h2 do it).
LEAN_INIT = _SETTINGS_COPY and _H2_CONNECTION_ATTRIBUTES == set(
    vars(h2.connection.H2Connection(h2.config.H2Configuration(client_side=False)))
)


class _Stream(H2Stream):
    """
    h2's stream, except that a ``content-length`` that is not a number (or too long for
    ``int()``) leaves the length unknown instead of ending the connection: the core's check of
    the head finds the request malformed and resets that stream alone (RFC 9113 section 8.1.1).
    """

    def _initialize_content_length(self, headers: Any) -> None:
        try:
            super()._initialize_content_length(headers)
        except h2.exceptions.ProtocolError:
            self._expected_content_length = None


class ServerH2Connection(h2.connection.H2Connection):
    """
    h2's connection with these changes:

    - RFC 9113 section 5.1 says an endpoint ignores the frames it receives on a stream it has
      reset, where h2 answers every DATA frame on it with another RST_STREAM (a client still
      uploading would get one per frame).
    - Closed streams are remembered in a :class:`ClosedStreams` ring, not an ordered dict.
    - The settings are :class:`CompactSettings`, and frames are dispatched through a table of
      the class's functions rather than a dict of bound methods made for each connection
      (which also kept every connection in a reference cycle).
    - It is set up without what h2's ``__init__`` makes only for it to be replaced (settings
      objects, HPACK coders, the dict of bound methods): the coders are given, the settings
      copied from ones made earlier (see :data:`LEAN_INIT`, checked at import).
    - A request head that opens a stream (the usual HEADERS frame) is read in fewer steps
      (:meth:`receive_data_and_heads`, :meth:`_open_request_stream`): same checks, same state,
      same events, tested against h2's own path by ``tests/test_h2_core_fastpath.py``.
    - :meth:`_receive_frame` does not build ``repr(frame)`` for a trace line nobody logs: for a
      DATA frame that hex-encodes the whole payload.
    - DATA that does not add up to the request's ``content-length`` is a stream error
      PROTOCOL_ERROR (RFC 9113 section 8.1.1), where h2 ends the connection; so is a
      ``content-length`` that is not a number (its streams are :class:`_Stream`).
    - A client's GOAWAY does not close h2's state machine: the streams it already opened are
      served to the end (RFC 9113 section 6.8); the core decides when to close.
    - Every RST_STREAM it sends with an error code is reported to ``count_reset``; the first
      verdict that returns is kept in :attr:`reset_violation` and raised as
      :class:`ResetBudgetExceeded`, which stops h2 from reading any frame after it.
    """

    _reset_earlier = False
    #: The reset budget's verdict, once a reset was one too many.
    reset_violation: Any = None

    def __init__(
        self,
        config: h2.config.H2Configuration,
        count_reset: Callable[[], Any] | None = None,
        *,
        encoder: Encoder | None = None,
        decoder: Decoder | None = None,
    ) -> None:
        if LEAN_INIT:
            self._set_up(config, Encoder() if encoder is None else encoder, decoder)
        else:
            super().__init__(config)
            del self._frame_dispatch_table
            self.remote_settings = CompactSettings(client=not config.client_side)
            if encoder is not None:
                self.encoder = encoder
            if decoder is not None:
                self.decoder = decoder
        # How the last 4096 client streams were closed, in 40 KiB at most.
        self._closed_streams = ClosedStreams()  # type: ignore[assignment]
        self._count_reset = count_reset
        functions = _FRAME_FUNCTIONS.get(type(self))
        if functions is None:
            table = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))._frame_dispatch_table
            functions = _FRAME_FUNCTIONS[type(self)] = {
                kind: getattr(type(self), method.__name__) for kind, method in table.items()
            }
        #: Frame class to the function that receives it, shared by the connections of a class.
        self._frame_functions = functions
        #: Whether h2 hands request heads over as they are decoded, cookies joined (what
        #: _open_request_stream does itself).
        self._plain_heads = (
            not config.validate_inbound_headers and not config.header_encoding and config.normalize_inbound_headers
        )

    def _set_up(self, config: h2.config.H2Configuration, encoder: Encoder, decoder: Decoder | None) -> None:
        """
        What h2's ``__init__`` sets, the same values, less what it makes only to be replaced:
        its settings are copies of ones made earlier, and no table of bound methods.
        """
        self.state_machine = H2ConnectionStateMachine()
        self.streams = {}
        self.highest_inbound_stream_id = 0
        self.highest_outbound_stream_id = 0
        self.encoder = encoder
        if decoder is None:
            decoder = Decoder()
            decoder.max_header_list_size = self.DEFAULT_MAX_HEADER_LIST_SIZE
        self.decoder = decoder
        self.config = config
        self.local_settings = compact_settings(
            config.client_side,
            {
                SettingCodes.MAX_CONCURRENT_STREAMS: 100,
                SettingCodes.MAX_HEADER_LIST_SIZE: self.DEFAULT_MAX_HEADER_LIST_SIZE,
            },
        )
        self.remote_settings = compact_settings(not config.client_side)
        self.outbound_flow_control_window = self.remote_settings.initial_window_size
        self.max_outbound_frame_size = self.remote_settings.max_frame_size
        self.max_inbound_frame_size = self.local_settings.max_frame_size
        self.incoming_buffer = FrameBuffer(server=not config.client_side)
        self._header_frames = []
        self._data_to_send = bytearray()
        self._inbound_flow_control_window_manager = WindowManager(
            max_window_size=self.local_settings.initial_window_size
        )

    def _receive_frame(self, frame: Any) -> list:
        # h2 4.x's H2Connection._receive_frame without its eager repr(frame).
        try:
            frames, events = self._frame_functions[frame.__class__](self, frame)
        except h2.exceptions.StreamClosedError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = e.error_code
                self._prepare_for_sending([f])
                events = e._events
            else:
                raise
        except h2.exceptions.StreamIDTooLowError as e:
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
            if frames:
                self._prepare_for_sending(frames)
        return events

    def receive_data_and_heads(self, data: bytes, heads: Iterable[int]) -> list:
        """
        h2's ``receive_data``, except that the request heads at offsets ``heads`` of ``data``
        (whole HEADERS frames with END_HEADERS, no padding and no priority, from the guard) are
        read here without h2's frame parser when they open a new stream outside a header block;
        every other frame, in order, goes through h2.
        """
        if not FAST_TRANSITIONS:
            return self.receive_data(data)
        events: list = []
        pos = 0
        buffer = self.incoming_buffer
        for start in heads:
            if start > pos:
                # (Whole frames, the preface included: h2 holds no partial frame after them.)
                events += self.receive_data(data[pos:start])
                pos = start
            stream_id = int.from_bytes(data[start + 5 : start + 9], "big") & 0x7FFFFFFF
            length = int.from_bytes(data[start : start + 3], "big")
            if buffer._headers_buffer or length > self.max_inbound_frame_size or not self._opens_stream(stream_id):
                continue  # h2 reads it with what follows (and finds what is wrong with it)
            try:
                _, opened = self._open_request_stream(
                    stream_id, bool(data[start + 4] & _END_STREAM_FLAG), data[start + 9 : start + 9 + length]
                )
            except h2.exceptions.ProtocolError as e:
                # As h2's receive_data does.
                self._terminate_connection(e.error_code)
                raise
            events += opened
            pos = start + 9 + length
        if pos < len(data):
            events += self.receive_data(data[pos:] if pos else data)
        return events

    def _opens_stream(self, stream_id: int) -> bool:
        """Whether a HEADERS frame on ``stream_id`` opens a new client stream on a connection still open."""
        # (A server's streams are the client's: push is off, every id h2 holds is at most the highest.)
        return (
            stream_id & 1 == 1
            and stream_id > self.highest_inbound_stream_id
            and (self.state_machine.state is _SERVER_OPEN or self.state_machine.state is _IDLE_CONNECTION)
        )

    def _begin_new_stream(self, stream_id: int, allowed_ids: Any) -> H2Stream:
        stream = super()._begin_new_stream(stream_id, allowed_ids)
        stream.__class__ = _Stream  # (adds a method only: the object is the same)
        return stream

    def _receive_headers_frame(self, frame: Any) -> tuple[list, list]:
        if not FAST_TRANSITIONS or not self._opens_stream(frame.stream_id) or "PRIORITY" in frame.flags:
            return super()._receive_headers_frame(frame)
        return self._open_request_stream(frame.stream_id, "END_STREAM" in frame.flags, frame.data)

    def _open_request_stream(self, stream_id: int, end_stream: bool, block: bytes) -> tuple[list, list]:
        """
        A request head opening a new stream, the common case, in fewer steps than h2's
        ``_receive_headers_frame`` (same checks, same state, same events).
        """
        # As open_inbound_streams does before a new stream: forget the closed ones (the count
        # itself is not needed, h2's limit is lifted).
        streams = self.streams
        closed = [sid for sid, stream in streams.items() if stream.state_machine.state is _CLOSED]
        for sid in closed:
            self._closed_streams[sid] = streams.pop(sid).state_machine.stream_closed_by
        headers = h2.connection._decode_headers(self.decoder, block)
        # IDLE, RECV_HEADERS: SERVER_OPEN (SERVER_OPEN stays).
        self.state_machine.state = _SERVER_OPEN
        # h2's _begin_new_stream, less the checks made before and its debug log calls.
        stream = _Stream(
            stream_id,
            config=self.config,
            inbound_window_size=self.local_settings._settings[_INITIAL_WINDOW_SIZE][0],
            outbound_window_size=self.remote_settings._settings[_INITIAL_WINDOW_SIZE][0],
        )
        stream.max_outbound_frame_size = self.max_outbound_frame_size
        streams[stream_id] = stream
        self.highest_inbound_stream_id = stream_id
        if not self._plain_heads or is_informational_response(headers):
            return stream.receive_headers(headers, end_stream, self.config.header_encoding)
        machine = stream.state_machine
        # IDLE, RECV_HEADERS: request_received, OPEN.
        machine.state = _OPEN
        machine.client = False
        machine.headers_received = True
        event = _stream_event(h2.events.RequestReceived, stream_id)
        events = [event]
        if end_stream:
            # OPEN, RECV_END_STREAM: stream_half_closed, HALF_CLOSED_REMOTE.
            machine.state = _HALF_CLOSED_REMOTE
            event.stream_ended = ended = _stream_event(h2.events.StreamEnded, stream_id)
            events.append(ended)
        stream._initialize_content_length(headers)
        for name, _ in headers:
            if name == b"cookie":
                headers = normalize_inbound_headers(headers, None)  # type: ignore[arg-type]
                break
        event.headers = headers if headers.__class__ is list else list(headers)
        return [], events

    def _prepare_for_sending(self, frames: list) -> None:
        count_reset = self._count_reset
        exceeded = None
        if count_reset is not None:
            for frame in frames:
                if frame.__class__ is RstStreamFrame and frame.error_code:
                    violation = count_reset()
                    if violation is not None and self.reset_violation is None:
                        self.reset_violation = exceeded = violation
        super()._prepare_for_sending(frames)
        if exceeded is not None:
            raise ResetBudgetExceeded(exceeded)

    def _receive_data_frame(self, frame: Any) -> tuple[list, list]:
        self._reset_earlier = self._stream_closed_by(frame.stream_id) is StreamClosedBy.SEND_RST_STREAM
        try:
            return super()._receive_data_frame(frame)
        except h2.exceptions.InvalidBodyLengthError:
            # The connection window was charged; the stream's state took the DATA.
            self.reset_stream(frame.stream_id, ErrorCodes.PROTOCOL_ERROR)
            self.acknowledge_received_data(frame.flow_controlled_length, frame.stream_id)
            return [], [_local_reset_event(frame.stream_id, ErrorCodes.PROTOCOL_ERROR)]

    def _handle_data_on_closed_stream(
        self, events: list, exc: h2.exceptions.StreamClosedError, frame: Any
    ) -> tuple[list, list]:
        frames, events = super()._handle_data_on_closed_stream(events, exc, frame)
        if self._reset_earlier:
            frames = [f for f in frames if not isinstance(f, RstStreamFrame)]
        return frames, events

    def _receive_goaway_frame(self, frame: Any) -> tuple[list, list]:
        event = h2.events.ConnectionTerminated()
        event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


def _local_reset_event(stream_id: int, code: ErrorCodes) -> h2.events.StreamReset:
    """h2's event for a stream it reset itself (h2 4.3 and later take its fields as arguments)."""
    try:
        return h2.events.StreamReset(stream_id=stream_id, error_code=code, remote_reset=False)
    except TypeError:
        event = h2.events.StreamReset()  # type: ignore[call-arg]
        event.stream_id = stream_id
        event.error_code = code
        event.remote_reset = False
        return event


def allow_unlimited_streams(conn: h2.connection.H2Connection) -> None:
    """
    Lift h2's own MAX_CONCURRENT_STREAMS check (one stream over it is a connection error in
    h2; the core refuses such a stream alone, RFC 9113 section 5.1.2). Call it after the
    advertised value was serialised.
    """
    conn.local_settings._settings[SettingCodes.MAX_CONCURRENT_STREAMS] = _settled(2**31 - 1)  # type: ignore[assignment]


#: A server's first frames (its SETTINGS, then the connection's WINDOW_UPDATE if any), by
#: window increment and local settings: the same bytes for every connection of a component.
_OPENINGS: dict[tuple, bytes] = {}
_OPENINGS_KEPT = 16


def initiate_server_connection(conn: ServerH2Connection, window_increment: int) -> None:
    """
    h2's ``initiate_connection``, then ``increment_flow_control_window(window_increment)`` when
    it is positive: the same state changes and the same bytes queued, the bytes made by h2 for
    the first connection with these settings and copied for the others.
    """
    # (A client's opening starts with the preface: the bytes kept are a server's only.)
    assert not conn.config.client_side, "initiate_server_connection is for a server's connection"
    settings = conn.local_settings._settings
    key = (window_increment, *settings.items()) if all(v.__class__ is tuple for v in settings.values()) else None
    opening = _OPENINGS.get(key) if key is not None else None
    if opening is None:
        start = len(conn._data_to_send)
        conn.initiate_connection()
        if window_increment > 0:
            conn.increment_flow_control_window(window_increment)
        if key is not None:
            if len(_OPENINGS) >= _OPENINGS_KEPT:
                _OPENINGS.clear()
            _OPENINGS[key] = bytes(conn._data_to_send[start:])
        return
    # (The increment was checked by h2 when the bytes were made.)
    conn.state_machine.process_input(ConnectionInputs.SEND_SETTINGS)
    if window_increment > 0:
        conn.state_machine.process_input(ConnectionInputs.SEND_WINDOW_UPDATE)
        conn._inbound_flow_control_window_manager.window_opened(window_increment)
    conn._data_to_send += opening


def take_output(conn: h2.connection.H2Connection) -> bytes:
    """What h2 queued to send (``data_to_send``), without making two empty buffers when it is nothing."""
    return conn.data_to_send() if conn._data_to_send else b""


def connection_closed(conn: h2.connection.H2Connection) -> bool:
    """Whether h2 has closed the connection (it then sent its own GOAWAY)."""
    return conn.state_machine.state is ConnectionState.CLOSED


def stream_or_none(conn: h2.connection.H2Connection, stream_id: int) -> Any:
    """h2's stream object of ``stream_id`` while it is open for sending, else ``None``."""
    stream = conn.streams.get(stream_id)
    if stream is None or not stream.open or conn.state_machine.state is ConnectionState.CLOSED:
        return None
    return stream


def open_stream_count(conn: h2.connection.H2Connection) -> int:
    """How many streams h2 counts as open (for tests and invariants)."""
    return len(conn.streams)


def send_response_head(conn: h2.connection.H2Connection, stream: Any, headers: list, end_stream: bool) -> bytes:
    """
    Make every state change h2's ``send_headers`` makes for a final response head on
    ``stream`` (connection and stream state machines, then the HPACK encoder, whose table
    changes for good) and return the encoded header block, for the caller to frame.

    :raises h2.exceptions.ProtocolError: if the stream cannot send headers now.
    """
    if conn.state_machine.state is not _SERVER_OPEN or not FAST_TRANSITIONS:
        conn.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
    machine = stream.state_machine
    state = machine.state
    if (
        (state is _HALF_CLOSED_REMOTE or state is _OPEN)
        and machine.client is False
        and not machine.headers_sent
        and FAST_TRANSITIONS
    ):
        # The first response head on a server stream: response_sent, the state unchanged.
        machine.headers_sent = True
    else:
        machine.process_input(StreamInputs.SEND_HEADERS)
    block = conn.encoder.encode(headers)
    stream.request_method = None  # as h2's send_headers leaves it for a response
    if end_stream:
        _send_end_stream(machine)
    return block


def _send_end_stream(machine: Any) -> None:
    state = machine.state
    if state is _HALF_CLOSED_REMOTE and FAST_TRANSITIONS:
        machine.state = _CLOSED
        machine.stream_closed_by = StreamClosedBy.SEND_END_STREAM
    elif state is _OPEN and FAST_TRANSITIONS:
        machine.state = _HALF_CLOSED_LOCAL
    else:
        machine.process_input(StreamInputs.SEND_END_STREAM)


def charge_data(conn: h2.connection.H2Connection, stream: Any, size: int, end_stream: bool) -> None:
    """
    Make the state changes h2's ``send_data`` makes for ``size`` bytes of DATA (in any number
    of frames) on ``stream``: the state machines (checked once for the whole run of frames,
    since sending DATA does not change an open stream's state), both windows, and END_STREAM.

    :raises h2.exceptions.ProtocolError: if the stream cannot send data now.
    """
    machine = stream.state_machine
    if size:
        if conn.state_machine.state is not _SERVER_OPEN or not FAST_TRANSITIONS:
            conn.state_machine.process_input(ConnectionInputs.SEND_DATA)
        state = machine.state
        if not (state is _HALF_CLOSED_REMOTE or state is _OPEN) or not FAST_TRANSITIONS:
            machine.process_input(StreamInputs.SEND_DATA)
        conn.outbound_flow_control_window -= size
        stream.outbound_flow_control_window -= size
    if end_stream:
        _send_end_stream(machine)


class _NoEntries(tuple):
    """An empty dynamic table's entries, shared: the deque (about 700 bytes) comes with the first entry."""

    __slots__ = ()

    def clear(self) -> None:
        return None


_NO_ENTRIES = _NoEntries()


class VersionedHeaderTable(HeaderTable):
    """hpack's dynamic table, counting its changes in :attr:`version`; its deque made at the first entry."""

    def __init__(self) -> None:
        super().__init__()
        self.dynamic_entries = _NO_ENTRIES  # type: ignore[assignment]
        self.version = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.version += 1
        if self.dynamic_entries is _NO_ENTRIES:
            self.dynamic_entries = deque()
        super().add(name, value)

    def _set_maxsize(self, newmax: int) -> None:
        self.version += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]

    maxsize = property(HeaderTable.maxsize.fget, _set_maxsize)  # type: ignore[attr-defined]


#: The static table's index of ``date``, and the coder that writes it as a literal without
#: indexing (RFC 7541 section 6.2.2): hpack's own code for the field, on no table of ours.
_DATE_INDEX = HeaderTable.STATIC_TABLE.index((b"date", b"")) + 1
_DATE_CODER = Encoder()
#: Coded date fields by (value, huffman), shared by every connection (one new value a second).
_date_fields: dict[tuple[Any, bool], bytes] = {}
_DATE_FIELDS_KEPT = 8


def unindexed_date_field(value: Any, huffman: bool) -> bytes:
    """The HPACK representation of a ``date`` field of ``value`` that leaves the dynamic table alone."""
    field = _date_fields.get((value, huffman))
    if field is None:
        data = hpack.hpack._to_bytes(value)
        field = bytes(_DATE_CODER._encode_indexed_literal(_DATE_INDEX, data, hpack.hpack.INDEX_NONE, huffman))
        if len(_date_fields) >= _DATE_FIELDS_KEPT:
            _date_fields.clear()
        _date_fields[value, huffman] = field
    return field


class _NoLog:
    """Stands in for hpack's module logger while its DEBUG level is off."""

    @staticmethod
    def debug(*args: Any, **kwargs: Any) -> None:
        return None


def quiet_hpack_debug_logging() -> None:
    """
    hpack calls ``log.debug`` for every integer and header it codes (about 25 calls per
    request). When its logger is not enabled for DEBUG (the usual case), point those calls at
    a no-op; enabling DEBUG logging for ``hpack`` before the first connection keeps them.
    """
    if not isinstance(hpack.hpack.log, _NoLog) and not hpack.hpack.log.isEnabledFor(logging.DEBUG):
        hpack.hpack.log = _NoLog()  # type: ignore[assignment]
