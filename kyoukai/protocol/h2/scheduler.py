"""
Which stream sends next, how much, and the frames that carry it.

Streams with response bytes queued wait in a ready queue and take turns (round robin, at most
:data:`QUANTUM` bytes a turn), each within the smaller of its own window and the connection's
and in frames no larger than the client's maximum frame size. DATA frames are written as a
9-byte header followed by a slice of the app's own buffer: the body is never copied here.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any

from kyoukai.protocol.h2 import compat
from kyoukai.protocol.h2.stream import Stream

#: A frame header: 24-bit length (as 16 + 8 bits), type, flags, stream id.
FRAME_HEADER = struct.Struct(">HBBBL")
DATA, HEADERS, CONTINUATION = 0x0, 0x1, 0x9
END_STREAM, END_HEADERS = 0x1, 0x4
#: The most a stream sends in one turn while others wait (less when they share a smaller
#: connection window; one frame at least).
QUANTUM = 64 * 1024
#: The ready queue of a scheduler that never had a stream to send.
_NO_STREAMS: tuple = ()


def header_frames(out: list, stream_id: int, block: bytes, frame_size: int, end_stream: bool) -> int:
    """Append ``block`` as a HEADERS frame (and CONTINUATIONs past ``frame_size``); the bytes appended."""
    total = len(block)
    if total <= frame_size:
        flags = END_HEADERS | (END_STREAM if end_stream else 0)
        out.append(FRAME_HEADER.pack(total >> 8, total & 0xFF, HEADERS, flags, stream_id))
        out.append(block)
        return 9 + total
    written = 0
    for start in range(0, total, frame_size):
        piece = block[start : start + frame_size]
        first = start == 0
        flags = (END_STREAM if first and end_stream else 0) | (END_HEADERS if start + frame_size >= total else 0)
        out.append(
            FRAME_HEADER.pack(len(piece) >> 8, len(piece) & 0xFF, HEADERS if first else CONTINUATION, flags, stream_id)
        )
        out.append(piece)
        written += 9 + len(piece)
    return written


class Scheduler:
    """The ready queue of streams with something to send, and the DATA frame writer."""

    __slots__ = ("ready", "stalled")

    def __init__(self) -> None:
        #: The streams waiting for a turn, in order (an empty tuple until the first one: an idle
        #: connection holds no deque).
        self.ready: deque[Stream] = _NO_STREAMS  # type: ignore[assignment]
        #: Streams with bytes to send that a closed window stops (each since ``stalled_since``),
        #: as the keys of a dict.
        self.stalled: dict[Stream, None] = {}

    def mark_ready(self, stream: Stream) -> None:
        """Queue ``stream`` for a turn if it has bytes or an end of stream to send."""
        if not stream.in_ready and (stream.pending_size or stream.end_pending):
            stream.in_ready = True
            if self.ready is _NO_STREAMS:
                self.ready = deque()
            self.ready.append(stream)

    def clear(self) -> None:
        """Forget every stream (the connection is over)."""
        self.ready = _NO_STREAMS  # type: ignore[assignment]
        self.stalled.clear()

    def write(self, conn: Any, out: list, limit: int, now: float, sendable: list[int]) -> int:
        """
        Frame queued response bytes into ``out`` while the windows allow, up to about ``limit``
        bytes; return the bytes appended. Streams that sent all they had are added to
        ``sendable``; streams a closed window stops are marked stalled (since ``now``) and
        leave the queue until a window opens (see :meth:`mark_ready`).
        """
        written = 0
        ready = self.ready
        frame_size = conn.max_outbound_frame_size
        while ready and written < limit:
            if conn.outbound_flow_control_window <= 0:
                # Only ends of streams (no bytes) can go; the others wait in their place, stalled.
                ending = [stream for stream in ready if not stream.pending_size]
                for stream in ready:
                    if stream.pending_size and stream.stalled_since is None:
                        stream.stalled_since = now
                        self.stalled[stream] = None
                for stream in ending:
                    ready.remove(stream)
                    stream.in_ready = False
                    h2_stream = compat.stream_or_none(conn, stream.stream_id)
                    if h2_stream is None:
                        stream.clear()
                        continue
                    written += self._turn(conn, h2_stream, stream, 0, frame_size, out, sendable)
                break
            stream = ready.popleft()
            stream.in_ready = False
            h2_stream = compat.stream_or_none(conn, stream.stream_id)
            if h2_stream is None:
                stream.clear()
                continue
            size = stream.pending_size
            window = min(conn.outbound_flow_control_window, h2_stream.outbound_flow_control_window)
            # Alone, a stream sends what the windows and the batch allow; with others waiting,
            # QUANTUM a turn, or its share of a smaller connection window (a frame at least).
            if ready:
                share = conn.outbound_flow_control_window // (len(ready) + 1)
                quantum = max(frame_size, min(QUANTUM, share))
            else:
                quantum = max(frame_size, limit - written)
            take = min(size, window, quantum)
            if size and take <= 0:
                # Its own window is closed: out of the queue until a WINDOW_UPDATE or SETTINGS.
                if stream.stalled_since is None:
                    stream.stalled_since = now
                    self.stalled[stream] = None
                continue
            written += self._turn(conn, h2_stream, stream, take, frame_size, out, sendable)
        return written

    def remove(self, stream: Stream) -> None:
        """Take a stream that is gone out of the queue and the stalled set."""
        if stream.in_ready:
            self.ready.remove(stream)
            stream.in_ready = False
        self.stalled.pop(stream, None)

    def _turn(
        self, conn: Any, h2_stream: Any, stream: Stream, take: int, frame_size: int, out: list, sendable: list[int]
    ) -> int:
        """Send ``take`` queued bytes of ``stream`` (and its end, if they are the last); the bytes appended."""
        written = 0
        ends = stream.end_pending and take == stream.pending_size and stream.trailers is None
        if take or ends:
            written += self._frames(out, stream, take, frame_size, ends)
            compat.charge_data(conn, h2_stream, take, ends)
        if stream.stalled_since is not None:
            stream.stalled_since = None
            self.stalled.pop(stream, None)
        if stream.pending_size:
            stream.in_ready = True
            self.ready.append(stream)
            return written
        if ends:
            stream.end_pending = False
            stream.response_ended = True
        elif stream.trailers is not None and stream.end_pending:
            fields, stream.trailers = stream.trailers, None
            stream.end_pending = False
            stream.response_ended = True
            conn.send_headers(stream.stream_id, fields, end_stream=True)
            data = conn.data_to_send()
            out.append(data)
            written += len(data)
        sendable.append(stream.stream_id)
        return written

    @staticmethod
    def _frames(out: list, stream: Stream, take: int, frame_size: int, ends: bool) -> int:
        """Append ``take`` queued bytes of ``stream`` as DATA frames (END_STREAM on the last if ``ends``)."""
        stream_id = stream.stream_id
        pending = stream.pending
        pack = FRAME_HEADER.pack
        left = take
        written = 0
        if not take:
            out.append(pack(0, 0, DATA, END_STREAM if ends else 0, stream_id))
            return 9
        while left:
            chunk = pending[0]
            n = len(chunk)
            if n > left:
                pending[0] = chunk[left:]
                chunk = chunk[:left]
                n = left
            else:
                pending.popleft()
            left -= n
            for start in range(0, n, frame_size):
                piece = chunk[start : start + frame_size]
                length = len(piece)
                flags = END_STREAM if ends and not left and start + frame_size >= n else 0
                out.append(pack(length >> 8, length & 0xFF, DATA, flags, stream_id))
                out.append(piece)
                written += 9 + length
        stream.pending_size -= take
        return written
