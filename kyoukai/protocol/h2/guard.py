"""
Abuse limits for HTTP/2 connections, without I/O.

A :class:`ConnectionGuard` reads the frame headers of the bytes a client sends, before h2
parses them, and keeps the budgets that bound the known HTTP/2 attacks:

- control frames that cost the server work but carry no request (SETTINGS, PING, PRIORITY,
  small WINDOW_UPDATEs, empty DATA or CONTINUATION, unknown frame types): a token bucket of
  ``max_control_frames`` refilled at ``control_frame_rate`` per second;
- stream resets, sent by the client (rapid reset) or provoked from the server: a bucket of
  ``max_stream_resets`` refilled at ``stream_reset_rate`` per second;
- header blocks (HEADERS plus CONTINUATIONs) larger than twice ``max_header_size`` compressed,
  refused before they are buffered.

An exhausted budget is a :class:`Violation`: the connection ends with GOAWAY
ENHANCE_YOUR_CALM. The guard never sees the payloads except a WINDOW_UPDATE's increment, so it
costs a few operations per frame.

It also reads the connection's opening (:meth:`ConnectionGuard.read_opening`): the preface of
RFC 9113 section 3.4, or else the request line of a client that does not speak HTTP/2 at all;
and it keeps two rules h2 does not: SETTINGS follows the preface, and no RST_STREAM names a
stream the client never opened (sections 5.1 and 6.4). Breaking either is a connection error
PROTOCOL_ERROR.
"""

from __future__ import annotations

import enum
import re
import struct
import time
from collections.abc import Callable
from typing import NamedTuple

from h2.errors import ErrorCodes

from kyoukai.settings import ServerSettings

#: The client connection preface (RFC 9113 section 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PREFACE_LENGTH = len(PREFACE)
#: Its first line: a client that sent it has declared HTTP/2, whatever follows.
_PREFACE_REQUEST_LINE = PREFACE[:16]
#: The longest first line read to tell a client speaking HTTP/1.x (which deserves a readable
#: refusal) from other bytes; a longer one is a connection error.
MAX_REQUEST_LINE = 8192
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"
#: An HTTP/1.x request line (RFC 9112 section 3): method, target, version.
_request_line = re.compile(_TOKEN + rb"+ [^\x00-\x20\x7f]+ HTTP/1\.[0-9]\r\n").fullmatch
#: What can start one, loosely (the whole line is checked once it has ended).
_request_line_start = re.compile(_TOKEN + rb"*(?: [^\x00-\x20\x7f]*(?: [HTP/1.0-9]{0,8}\r?)?)?").fullmatch
#: How much of the first line :data:`_request_line_start` looks at, so that a line trickled
#: in byte by byte costs linear time.
_START_CHECKED = 64
FRAME_HEADER_LENGTH = 9
#: A frame header: the 24-bit length (as 8 + 16 bits), type, flags, stream id (with its reserved bit).
_FRAME_HEADER = struct.Struct(">BHBBL")

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = 0x1
ACK = 0x1
PADDED = 0x8
END_HEADERS = 0x4
PRIORITY_FLAG = 0x20
#: WINDOW_UPDATE increments below this are counted as control frames: real clients return
#: credit in large steps, a flood of tiny increments is work for nothing.
SMALL_WINDOW_INCREMENT = 8192


class Violation(NamedTuple):
    """A budget the client exhausted: the GOAWAY error code and what happened."""

    error_code: int
    message: str


class Opening(enum.Enum):
    """What the first bytes of a connection are (see :meth:`ConnectionGuard.read_opening`)."""

    #: The start of the preface: the bytes go on to h2.
    PARTIAL_PREFACE = enum.auto()
    #: The whole preface (frames may follow in the same bytes): the bytes go on to h2.
    PREFACE = enum.auto()
    #: Not the preface, but maybe the start of an HTTP/1.x request line: wait for more.
    UNDECIDED = enum.auto()
    #: An HTTP/1.x request line: a client that does not speak HTTP/2.
    HTTP1 = enum.auto()
    #: Neither: a connection error PROTOCOL_ERROR (RFC 9113 section 3.4).
    INVALID = enum.auto()


class RateBudget:
    """A token bucket: ``burst`` tokens, refilled at ``rate`` per second."""

    __slots__ = ("burst", "rate", "tokens", "_stamp", "_clock")

    def __init__(self, burst: float, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.rate = rate
        self.tokens = float(burst)
        self._clock = clock
        self._stamp = clock()

    def spend(self, amount: float = 1.0) -> bool:
        """Take ``amount`` tokens; ``False`` once the bucket is empty."""
        now = self._clock()
        tokens = self.tokens + (now - self._stamp) * self.rate
        self.tokens = (tokens if tokens < self.burst else self.burst) - amount
        self._stamp = now
        return self.tokens >= 0


class ConnectionGuard:
    """
    Scans a client's frame headers and spends the connection's abuse budgets.

    :param settings: the limits (see :class:`~.ServerSettings`).
    :param clock: the time source of the budgets (injectable for tests).
    """

    def __init__(
        self,
        settings: ServerSettings,
        clock: Callable[[], float] = time.monotonic,
        is_active: Callable[[int], bool] = lambda stream_id: True,
    ) -> None:
        self.settings = settings
        #: Whether a stream id is one the server is still serving (frames on others are
        #: answered or dropped by h2 at a cost: they spend the reset budget).
        self._is_active = is_active
        self._highest_stream_id = 0
        #: The stream an h2c upgrade opened without a HEADERS frame (1), if any.
        self._upgrade_stream = 0
        # Streams opened by HEADERS in the bytes being scanned: h2 has not seen them yet, so
        # the server does not know them, but they are active. (The keys of a dict: smaller
        # than a set when empty.)
        self._opening: dict[int, None] = {}
        self._control = RateBudget(settings.max_control_frames, settings.control_frame_rate, clock)
        self._resets = RateBudget(settings.max_stream_resets, settings.stream_reset_rate, clock)
        self._max_block = 2 * settings.max_header_size
        #: Whether :meth:`read_opening` saw the whole preface.
        self.preface_read = False
        self._head = bytearray()
        self._skip = PREFACE_LENGTH
        self._payload_left = 0
        self._block_size = 0
        self._first_frame = True
        #: Offsets, in the bytes last fed, of WINDOW_UPDATE increments with the reserved bit
        #: set (see :meth:`clear_reserved_bits`).
        self.reserved_bits: list[int] = []
        #: Stream errors found by the last :meth:`feed`, as ``(stream_id, error code, what)``:
        #: frames h2 would take for a connection error where RFC 9113 asks for a stream error.
        #: They are cut out of the bytes h2 gets (see :meth:`passed`).
        self.stream_errors: list[tuple[int, int, str]] = []
        #: Offsets, in the bytes last fed, of the HEADERS frames that may open a stream and are
        #: whole, with END_HEADERS and neither padding nor priority: h2 can be spared parsing them
        #: (see :meth:`passed`).
        self.request_heads: list[int] = []
        #: Spans of the last fed bytes to cut (offsets in them; a start below 0 is in the bytes
        #: held back from the read before).
        self._drops: list[tuple[int, int]] = []
        #: Payload bytes of a cut frame still to come in the next read.
        self._drop_left = 0
        #: An incomplete frame at the end of the last bytes fed, read again with the next
        #: (and held back from h2 until then).
        self._rescan = b""
        self._buf = b""
        #: Whether a header block is open (HEADERS seen, END_HEADERS not yet).
        self.header_block_open = False
        #: Frames seen, by type.
        self.frame_counts: dict[int, int] = {}

    def read_opening(self, data: bytes, http1_allowed: bool) -> Opening:
        """
        Read the first bytes of the connection (``data``: the next of them) until the preface
        is complete. Bytes that depart from it are :attr:`Opening.INVALID` at once if the
        client has declared HTTP/2 (``http1_allowed`` false: ALPN chose h2; or they start with
        the preface's request line); otherwise they are kept until their first line shows
        whether it is an HTTP/1.x request line.
        """
        head = self._head
        checked = len(head)
        head += data[: MAX_REQUEST_LINE - checked]
        if head.startswith(PREFACE):
            self.preface_read = True
            return self._decided(Opening.PREFACE)
        if PREFACE.startswith(head):
            return Opening.PARTIAL_PREFACE
        if not http1_allowed or head.startswith(_PREFACE_REQUEST_LINE):
            return self._decided(Opening.INVALID)
        end = head.find(b"\r\n", max(checked - 1, 0))
        if end < 0:
            if len(head) < MAX_REQUEST_LINE and _request_line_start(head[:_START_CHECKED]):
                return Opening.UNDECIDED
            return self._decided(Opening.INVALID)
        return self._decided(Opening.HTTP1 if _request_line(head[: end + 2]) else Opening.INVALID)

    def _decided(self, opening: Opening) -> Opening:
        self._head = bytearray()
        return opening

    def feed(self, data: bytes) -> Violation | None:
        """
        Scan the next bytes received (from the first, the preface included); the first budget
        they exhaust or rule they break, if any. A connection whose preface was not read by
        :meth:`read_opening` came by an h2c upgrade: h2 checks its preface, and its stream 1,
        the request that asked for the upgrade, is open before any frame.
        """
        if self._rescan:
            data = self._rescan + data
            self._rescan = b""
        self._buf = data
        pos = 0
        end = len(data)
        if self.reserved_bits:
            self.reserved_bits = []
        if self._opening:
            self._opening.clear()
        if self.stream_errors:
            self.stream_errors = []
        if self.request_heads:
            self.request_heads = []
        if self._drop_left:
            step = min(self._drop_left, end)
            self._drops.append((0, step))
            self._drop_left -= step
            self._payload_left -= step
            pos = step
        if self._skip:
            pos = min(self._skip, end)
            self._skip -= pos
        while pos < end:
            if self._payload_left:
                step = self._payload_left if self._payload_left < end - pos else end - pos
                self._payload_left -= step
                pos += step
                continue
            start = pos
            if end - start < FRAME_HEADER_LENGTH:
                # An incomplete frame header: read again with what follows.
                self._rescan = bytes(data[start:])
                break
            high, low, frame_type, flags, stream_id = _FRAME_HEADER.unpack_from(data, start)
            length = high << 16 | low
            if frame_type == WINDOW_UPDATE and length >= 4 and end - start < FRAME_HEADER_LENGTH + 4:
                # A WINDOW_UPDATE is looked at whole (its increment decides what it is): likewise.
                self._rescan = bytes(data[start:])
                break
            pos += FRAME_HEADER_LENGTH
            errors = len(self.stream_errors)
            violation = self._check(frame_type, flags, length, stream_id & 0x7FFFFFFF, data, pos)
            if violation is not None:
                return violation
            self._payload_left = length
            if len(self.stream_errors) > errors:
                # Cut the frame: its header, and its payload as far as it is here.
                stop = min(pos + length, end)
                self._drops.append((start, stop))
                self._drop_left = pos + length - stop
        return None

    def passed(self, data: bytes) -> bytes:
        """
        The bytes of the last :meth:`feed` that go on to h2: reserved bits cleared, the frames
        of :attr:`stream_errors` cut out, and an incomplete frame at the end held back until
        the rest of it comes (``data``: the bytes given to that :meth:`feed`).
        """
        buf = self._buf
        self._buf = b""
        hold = len(self._rescan)
        if not hold and not self._drops and not self.reserved_bits and buf is data:
            return data
        if self._drops and self.request_heads:
            self.request_heads = []  # (their offsets would move)
        if self.reserved_bits:
            buf = self.clear_reserved_bits(buf)
        pieces = []
        cursor = 0
        for start, stop in self._drops:
            if start > cursor:
                pieces.append(buf[cursor:start])
            cursor = max(cursor, stop)
        self._drops.clear()
        pieces.append(buf[cursor : len(buf) - hold])
        return b"".join(pieces)

    def _check(
        self, frame_type: int, flags: int, length: int, stream_id: int, data: bytes, pos: int
    ) -> Violation | None:
        if self._first_frame:
            # RFC 9113 section 3.4: the preface ends with a SETTINGS frame (h2 does not check).
            self._first_frame = False
            if frame_type != SETTINGS or flags & ACK:
                return Violation(ErrorCodes.PROTOCOL_ERROR, "the connection preface is not followed by SETTINGS")
            self.frame_counts[SETTINGS] = 1
            if not self.preface_read:
                self._upgrade_stream = 1  # see feed
            return None
        counts = self.frame_counts
        counts[frame_type] = counts.get(frame_type, 0) + 1
        if frame_type == SETTINGS and flags & ACK and length:
            return Violation(ErrorCodes.FRAME_SIZE_ERROR, "a SETTINGS ACK with a payload (RFC 9113 section 6.5)")
        if frame_type == DATA:
            if stream_id and not self._active(stream_id):
                return self.count_reset("DATA on a closed or reset stream")
            payload = length
            if flags & PADDED:
                payload -= 1 + (data[pos] if len(data) > pos else 0)
            if payload <= 0 and not flags & END_STREAM:
                return self._spend_control("empty DATA")
        elif frame_type == HEADERS:
            if stream_id > self._highest_stream_id:
                self._highest_stream_id = stream_id
                self._opening[stream_id] = None
                if flags & (END_HEADERS | PADDED | PRIORITY_FLAG) == END_HEADERS and pos + length <= len(data):
                    self.request_heads.append(pos - FRAME_HEADER_LENGTH)
            elif not self._active(stream_id):
                # Not a new stream and not trailers of an active one.
                return self.count_reset("HEADERS on a closed stream")
            self._block_size = length
            self.header_block_open = not flags & END_HEADERS
            return self._check_block()
        elif frame_type == CONTINUATION:
            self._block_size += length
            if flags & END_HEADERS:
                self.header_block_open = False
            violation = self._check_block()
            if violation is None and length == 0:
                violation = self._spend_control("empty CONTINUATION")
            return violation
        elif frame_type == RST_STREAM:
            if self._idle(stream_id):
                # h2 drops these; RFC 9113 sections 5.1 and 6.4 make them a connection error.
                return Violation(ErrorCodes.PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
            return self.count_reset("RST_STREAM from the client")
        elif frame_type == WINDOW_UPDATE:
            increment = 0
            if len(data) >= pos + 4:
                if data[pos] & 0x80 and length == 4:
                    self.reserved_bits.append(pos)
                increment = int.from_bytes(data[pos : pos + 4], "big") & 0x7FFFFFFF
                if increment == 0 and stream_id and length == 4:
                    # RFC 9113 section 6.9: a stream error PROTOCOL_ERROR (h2 ends the connection).
                    self.stream_errors.append((stream_id, ErrorCodes.PROTOCOL_ERROR, "a WINDOW_UPDATE of 0"))
            if increment < SMALL_WINDOW_INCREMENT or (stream_id and not self._active(stream_id)):
                return self._spend_control("WINDOW_UPDATE that is small or for a closed stream")
        elif frame_type == PRIORITY and length != 5 and stream_id:
            # RFC 9113 section 6.3: a stream error FRAME_SIZE_ERROR (h2 ends the connection).
            self.stream_errors.append((stream_id, ErrorCodes.FRAME_SIZE_ERROR, f"a PRIORITY frame of {length} bytes"))
            return self._spend_control("PRIORITY")
        elif frame_type in (SETTINGS, PING, PRIORITY) or frame_type > CONTINUATION:
            return self._spend_control("SETTINGS/PING/PRIORITY/unknown")
        return None

    def _active(self, stream_id: int) -> bool:
        return stream_id in self._opening or self._is_active(stream_id)

    def _idle(self, stream_id: int) -> bool:
        """
        Whether the client never opened ``stream_id``: above every HEADERS it sent (a PRIORITY
        frame opens nothing), or even (the server's ids, and it opens none: push is off).
        Stream 0 is the connection, not a stream.
        """
        if stream_id == 0 or stream_id == self._upgrade_stream:
            return False
        return stream_id > self._highest_stream_id or not stream_id & 1

    def clear_reserved_bits(self, data: bytes) -> bytes:
        """
        ``data`` with the reserved bit of the WINDOW_UPDATE increments found by the last
        :meth:`feed` cleared: RFC 9113 section 6.9 says to ignore it, hyperframe rejects it.
        """
        fixed = bytearray(data)
        for pos in self.reserved_bits:
            fixed[pos] &= 0x7F
        return bytes(fixed)

    def _check_block(self) -> Violation | None:
        if self._block_size > self._max_block:
            return Violation(
                ErrorCodes.ENHANCE_YOUR_CALM,
                f"a header block of over {self._block_size} bytes (max_header_size="
                f"{self.settings.max_header_size}, at most twice that compressed)",
            )
        return None

    def _spend_control(self, kind: str) -> Violation | None:
        if self._control.spend():
            return None
        return Violation(
            ErrorCodes.ENHANCE_YOUR_CALM,
            f"control frame flood ({kind}): over max_control_frames={self.settings.max_control_frames} "
            f"at control_frame_rate={self.settings.control_frame_rate}/s",
        )

    def count_reset(self, kind: str = "stream reset by the server") -> Violation | None:
        """Spend the reset budget for one reset (the client's or one the server had to send)."""
        if self._resets.spend():
            return None
        return Violation(
            ErrorCodes.ENHANCE_YOUR_CALM,
            f"too many stream resets ({kind}): over max_stream_resets={self.settings.max_stream_resets} "
            f"at stream_reset_rate={self.settings.stream_reset_rate}/s",
        )
