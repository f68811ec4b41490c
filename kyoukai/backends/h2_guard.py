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
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from h2.errors import ErrorCodes

from kyoukai.settings import ServerSettings

PREFACE_LENGTH = 24
FRAME_HEADER_LENGTH = 9

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = 0x1
ACK = 0x1
PADDED = 0x8
END_HEADERS = 0x4
#: WINDOW_UPDATE increments below this are counted as control frames: real clients return
#: credit in large steps, a flood of tiny increments is work for nothing.
SMALL_WINDOW_INCREMENT = 8192


class Violation(NamedTuple):
    """A budget the client exhausted: the GOAWAY error code and what happened."""

    error_code: int
    message: str


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
        # Streams opened by HEADERS in the bytes being scanned: h2 has not seen them yet, so
        # the server does not know them, but they are active.
        self._opening: set[int] = set()
        self._control = RateBudget(settings.max_control_frames, settings.control_frame_rate, clock)
        self._resets = RateBudget(settings.max_stream_resets, settings.stream_reset_rate, clock)
        self._max_block = 2 * settings.max_header_size
        self._skip = PREFACE_LENGTH
        self._partial = bytearray()
        self._payload_left = 0
        self._block_size = 0
        self._first_frame = True
        #: Offsets, in the bytes last fed, of WINDOW_UPDATE increments with the reserved bit
        #: set (see :meth:`clear_reserved_bits`).
        self.reserved_bits: list[int] = []
        #: Whether a header block is open (HEADERS seen, END_HEADERS not yet).
        self.header_block_open = False
        #: Frames seen, by type.
        self.frame_counts: dict[int, int] = {}

    def feed(self, data: bytes) -> Violation | None:
        """Scan the next bytes received; the first budget they exhaust, if any."""
        pos = 0
        end = len(data)
        if self.reserved_bits:
            self.reserved_bits = []
        if self._opening:
            self._opening.clear()
        if self._skip:
            pos = min(self._skip, end)
            self._skip -= pos
        while pos < end:
            if self._payload_left:
                step = min(self._payload_left, end - pos)
                self._payload_left -= step
                pos += step
                continue
            if self._partial or end - pos < FRAME_HEADER_LENGTH:
                take = FRAME_HEADER_LENGTH - len(self._partial)
                self._partial += data[pos : pos + take]
                pos += min(take, end - pos)
                if len(self._partial) < FRAME_HEADER_LENGTH:
                    break
                head = bytes(self._partial)
                self._partial.clear()
            else:
                head = data[pos : pos + FRAME_HEADER_LENGTH]
                pos += FRAME_HEADER_LENGTH
            length = int.from_bytes(head[0:3], "big")
            stream_id = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            violation = self._check(head[3], head[4], length, stream_id, data, pos)
            if violation is not None:
                return violation
            self._payload_left = length
        return None

    def _check(
        self, frame_type: int, flags: int, length: int, stream_id: int, data: bytes, pos: int
    ) -> Violation | None:
        if self._first_frame:
            # RFC 9113 section 3.4: the preface ends with a SETTINGS frame (h2 does not check).
            self._first_frame = False
            if frame_type != SETTINGS or flags & ACK:
                return Violation(ErrorCodes.PROTOCOL_ERROR, "the connection preface is not followed by SETTINGS")
            self.frame_counts[SETTINGS] = 1
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
                self._opening.add(stream_id)
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
            return self.count_reset("RST_STREAM from the client")
        elif frame_type == WINDOW_UPDATE:
            increment = 0
            if len(data) >= pos + 4:
                if data[pos] & 0x80 and length == 4:
                    self.reserved_bits.append(pos)
                increment = int.from_bytes(data[pos : pos + 4], "big") & 0x7FFFFFFF
            if increment < SMALL_WINDOW_INCREMENT or (stream_id and not self._active(stream_id)):
                return self._spend_control("WINDOW_UPDATE that is small or for a closed stream")
        elif frame_type in (SETTINGS, PING, PRIORITY) or frame_type > CONTINUATION:
            return self._spend_control("SETTINGS/PING/PRIORITY/unknown")
        return None

    def _active(self, stream_id: int) -> bool:
        return stream_id in self._opening or self._is_active(stream_id)

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
