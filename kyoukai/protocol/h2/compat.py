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

import collections
import logging
from collections.abc import Callable
from typing import Any

import h2
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack.hpack
from h2.connection import ConnectionInputs, ConnectionState
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from h2.stream import StreamClosedBy, StreamInputs
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
    "connection_closed",
    "install_coders",
    "open_stream_count",
    "quiet_hpack_debug_logging",
    "send_response_head",
    "stream_or_none",
]


class ResetBudgetExceeded(h2.exceptions.ProtocolError):
    """One reset too many: raised out of h2's frame loop, so that no frame after it is processed."""

    error_code = ErrorCodes.ENHANCE_YOUR_CALM

    def __init__(self, violation: Any) -> None:
        super().__init__(violation.message)
        self.violation = violation


class ServerH2Connection(h2.connection.H2Connection):
    """
    h2's connection with these changes:

    - RFC 9113 section 5.1 says an endpoint ignores the frames it receives on a stream it has
      reset, where h2 answers every DATA frame on it with another RST_STREAM (a client still
      uploading would get one per frame).
    - Closed streams are remembered in a :class:`ClosedStreams` ring, not an ordered dict.
    - :meth:`_receive_frame` does not build ``repr(frame)`` for a trace line nobody logs: for a
      DATA frame that hex-encodes the whole payload.
    - DATA that does not add up to the request's ``content-length`` is a stream error
      PROTOCOL_ERROR (RFC 9113 section 8.1.1), where h2 ends the connection.
    - A client's GOAWAY does not close h2's state machine: the streams it already opened are
      served to the end (RFC 9113 section 6.8); the core decides when to close.
    - Every RST_STREAM it sends with an error code is reported to ``count_reset``; the first
      verdict that returns is kept in :attr:`reset_violation` and raised as
      :class:`ResetBudgetExceeded`, which stops h2 from reading any frame after it.
    """

    _reset_earlier = False
    #: The reset budget's verdict, once a reset was one too many.
    reset_violation: Any = None

    def __init__(self, config: h2.config.H2Configuration, count_reset: Callable[[], Any] | None = None) -> None:
        super().__init__(config)
        # How the last 4096 client streams were closed, in 40 KiB at most.
        self._closed_streams = ClosedStreams()  # type: ignore[assignment]
        self._count_reset = count_reset

    def _receive_frame(self, frame: Any) -> list:
        # h2 4.x's H2Connection._receive_frame without its eager repr(frame).
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
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
            self._prepare_for_sending(frames)
        return events

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
    conn.local_settings._settings[SettingCodes.MAX_CONCURRENT_STREAMS] = collections.deque([2**31 - 1])


def install_coders(conn: h2.connection.H2Connection, encoder: Any, decoder: Any) -> None:
    """
    Put HPACK coders of our own in place of h2's (before any header block, so that both ends'
    tables stay in step).
    """
    conn.encoder = encoder
    conn.decoder = decoder


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
    conn.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
    stream.state_machine.process_input(StreamInputs.SEND_HEADERS)
    block = conn.encoder.encode(headers)
    stream.request_method = None  # as h2's send_headers leaves it for a response
    if end_stream:
        stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)
    return block


def charge_data(conn: h2.connection.H2Connection, stream: Any, size: int, end_stream: bool) -> None:
    """
    Make the state changes h2's ``send_data`` makes for ``size`` bytes of DATA (in any number
    of frames) on ``stream``: the state machines (checked once for the whole run of frames,
    since sending DATA does not change an open stream's state), both windows, and END_STREAM.

    :raises h2.exceptions.ProtocolError: if the stream cannot send data now.
    """
    if size:
        conn.state_machine.process_input(ConnectionInputs.SEND_DATA)
        stream.state_machine.process_input(StreamInputs.SEND_DATA)
        conn.outbound_flow_control_window -= size
        stream.outbound_flow_control_window -= size
    if end_stream:
        stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)


class VersionedHeaderTable(HeaderTable):
    """hpack's dynamic table, counting its changes in :attr:`version`."""

    def __init__(self) -> None:
        super().__init__()
        self.version = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.version += 1
        super().add(name, value)

    def _set_maxsize(self, newmax: int) -> None:
        self.version += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]

    maxsize = property(HeaderTable.maxsize.fget, _set_maxsize)  # type: ignore[attr-defined]


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
