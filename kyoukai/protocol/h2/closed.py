"""
A compact record of how recent streams were closed, in place of h2's ``SizeLimitDict``.

h2 remembers, for each closed stream, whether it ended normally or by a reset, so that a frame
arriving late on it gets the answer RFC 9113 section 5.1 asks for: ignored or a stream error
after a reset, a connection error after END_STREAM. h2 keeps this in an ordered dict (one node
and one int object per stream, about 120 bytes), so a connection that served thousands of
requests holds several hundred KiB for it, and ten such connections several MiB.

Client stream ids only grow, so the last ``span`` ids fit a ring: slot ``id % span`` holds the
id and a one-byte code. A stream's record is forgotten once a stream ``span`` ids later closes;
a frame on a stream that old is then treated as on a stream closed without a record (h2's
connection error), which the RFC allows for frames that come "a significant time" late.
"""

from __future__ import annotations

from array import array

from h2.stream import StreamClosedBy

#: Code 0 is "closed, cause unknown" (h2 records ``None`` for implicitly closed streams).
_MEMBERS: tuple[StreamClosedBy | None, ...] = (None, *StreamClosedBy)
#: The code of each cause, by its value (an int hashes in C, an Enum member in Python).
_CODES = {member._value_: code for code, member in enumerate(_MEMBERS) if member is not None}

#: The ring starts this small and doubles as stream ids grow, up to ``max_span``.
_FIRST_SPAN = 64
#: The record of a connection whose streams are all open yet: one slot that is never written
#: (stream 0 is never recorded, every other id grows the ring first).
_NO_IDS = array("I", [0])
_NO_CODES = bytearray(1)


class ClosedStreams:
    """
    How each of the last ``max_span`` stream ids was closed; the mapping h2 keeps as
    its closed-stream record (see :mod:`kyoukai.protocol.h2.compat`; it sets, tests and reads items).

    :param max_span: a power of two; 8192 remembers the last 4096 client streams.
    """

    __slots__ = ("_ids", "_codes", "_mask", "_max_span")

    def __init__(self, max_span: int = 8192) -> None:
        if max_span < _FIRST_SPAN or max_span & (max_span - 1):
            raise ValueError(f"max_span must be a power of two of at least {_FIRST_SPAN}, not {max_span}")
        self._max_span = max_span
        # One empty slot, shared, until the first stream closes (then _FIRST_SPAN slots).
        self._ids = _NO_IDS
        self._codes = _NO_CODES
        self._mask = 0

    def _grow(self, stream_id: int) -> None:
        span = max(len(self._codes), _FIRST_SPAN)
        while span <= stream_id and span < self._max_span:
            span *= 2
        ids, codes = self._ids, self._codes
        self._ids = array("I", bytes(4 * span))
        self._codes = bytearray(span)
        self._mask = mask = span - 1
        for old_id, code in zip(ids, codes, strict=True):
            if old_id:
                self._ids[old_id & mask] = old_id
                self._codes[old_id & mask] = code

    def __setitem__(self, stream_id: int, closed_by: StreamClosedBy | None) -> None:
        if stream_id > self._mask and len(self._codes) < self._max_span:
            self._grow(stream_id)
        slot = stream_id & self._mask
        self._ids[slot] = stream_id
        self._codes[slot] = 0 if closed_by is None else _CODES[closed_by._value_]

    def __contains__(self, stream_id: object) -> bool:
        return isinstance(stream_id, int) and stream_id > 0 and self._ids[stream_id & self._mask] == stream_id

    def __getitem__(self, stream_id: int) -> StreamClosedBy | None:
        if stream_id not in self:
            raise KeyError(stream_id)
        return _MEMBERS[self._codes[stream_id & self._mask]]

    def get(self, stream_id: int, default: StreamClosedBy | None = None) -> StreamClosedBy | None:
        return self[stream_id] if stream_id in self else default

    def __len__(self) -> int:
        return len(self._codes) - self._ids.count(0)

    @property
    def nbytes(self) -> int:
        """The memory the record's arrays take."""
        return self._ids.itemsize * len(self._ids) + len(self._codes)
