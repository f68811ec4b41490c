"""
HPACK with memory of repeated header blocks.

Most responses of a server repeat the header list of the one before (same content type, same
``server``, same date within a second), and most requests of a client repeat their header
block byte for byte once every field is in the dynamic table. While the dynamic table is
unchanged, the same input codes to the same output, so these subclasses of hpack's
:class:`~hpack.Encoder` and :class:`~hpack.Decoder` remember the blocks they coded without
touching the table, and forget everything as soon as the table changes (an entry added, a
size change). Every block that adds to the table still goes through hpack itself.

The ``date`` field of a response changes every second. Indexed, it would add an entry to the
table once a second on every connection, and with it make the next two responses re-encode
the whole block; with hundreds of connections each sees only a few responses a second, so
most responses would. The encoder sends it as a literal without indexing (RFC 7541 section
6.2.2, its name from the static table), which leaves the table alone, and remembers the rest
of the block around it.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import itemgetter
from typing import Any

from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from hpack import Decoder, Encoder, HeaderTuple
from hpack.exceptions import HPACKError, OversizedHeaderListError

from kyoukai.protocol.h2.compat import VersionedHeaderTable, unindexed_date_field

#: Blocks remembered per connection and direction, and the largest block remembered.
MEMO_ENTRIES = 64
MEMO_MAX_BLOCK = 1024
_ONLY_TUPLES = frozenset({tuple})

_DATE_NAMES = frozenset({"date", b"date"})
#: Stands for the date field in a remembered block's key.
_DATE_MARK = object()
_NAME = itemgetter(0)


def _indexable_date(field: Any) -> bool:
    """Whether ``field``, a ``date``, is one hpack would index (not one marked never to be indexed)."""
    if isinstance(field, HeaderTuple):
        return field.indexable
    return len(field) < 3 or not field[2]


def _date_positions(headers: list) -> list[int]:
    """Where the ``date`` fields that hpack would index are in ``headers``."""
    # (Searched in C: a response block has one date field or none.)
    names = list(map(_NAME, headers))
    count = names.count("date") + names.count(b"date")
    if count == 0:
        return []
    if count == 1:
        at = names.index("date") if "date" in names else names.index(b"date")
        return [at] if _indexable_date(headers[at]) else []
    return [at for at, name in enumerate(names) if name in _DATE_NAMES and _indexable_date(headers[at])]


class CompressionError(ProtocolError):
    """
    A field block that cannot be decoded: RFC 9113 section 4.3 makes it a connection error of
    type COMPRESSION_ERROR, where h2 would report a plain PROTOCOL_ERROR.
    """

    error_code = ErrorCodes.COMPRESSION_ERROR


class MemoEncoder(Encoder):
    """
    An HPACK encoder that reuses the encoding of a header list seen since the table last
    changed, and never indexes ``date``: its value does not take part in what is remembered.
    """

    def __init__(self) -> None:
        super().__init__()
        self.header_table = self._table = VersionedHeaderTable()
        #: Blocks remembered, by header list.
        self._memo: dict[tuple, bytes] = {}
        #: Blocks with a date field, by header list less the date's value: the encoding before
        #: and after it (the first block of each second is made from them).
        self._shapes: dict[tuple, tuple[bytes, bytes]] = {}
        self._memo_version = 0

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        if headers.__class__ is not list:
            headers = list(headers)
        table = self._table
        if table.version != self._memo_version:
            self._memo.clear()
            self._shapes.clear()
            self._memo_version = table.version
        # Only plain tuples: hpack's HeaderTuple subclasses carry an "indexable" flag that
        # changes the encoding but not the tuple's equality.
        plain = not self.table_size_changes and _ONLY_TUPLES.issuperset(map(type, headers))
        key = shape = None
        if plain:
            key = (huffman, *headers)
            cached = self._memo.get(key)
            if cached is not None:
                return cached
        dates = _date_positions(headers)
        if plain and len(dates) == 1:
            fields = headers.copy()
            fields[dates[0]] = _DATE_MARK
            shape = (huffman, *fields)
            around = self._shapes.get(shape)
            if around is not None:
                encoded = around[0] + unindexed_date_field(headers[dates[0]][1], huffman) + around[1]
                _remember(self._memo, key, encoded)
                return encoded
        version = table.version
        pieces = self._encode_around_dates(headers, dates, huffman)
        encoded = b"".join(pieces)
        if key is not None and table.version == version:
            _remember(self._memo, key, encoded)
            if shape is not None:
                _remember(self._shapes, shape, (pieces[0], pieces[2]))
        return encoded

    def _encode_around_dates(self, headers: list, dates: list[int], huffman: bool) -> list[bytes]:
        """The block in pieces: the fields before each date field (coded by hpack), the date's literal, and so on."""
        pieces = []
        start = 0
        for at in dates:
            pieces.append(super().encode(headers[start:at], huffman))
            pieces.append(unindexed_date_field(headers[at][1], huffman))
            start = at + 1
        pieces.append(super().encode(headers[start:] if start else headers, huffman))
        return pieces


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    """Keep ``value`` under ``key``; a full memo starts again (entries of past seconds among them)."""
    if len(memo) >= MEMO_ENTRIES:
        memo.clear()
    memo[key] = value


class MemoDecoder(Decoder):
    """An HPACK decoder that reuses the decoding of a header block seen since the table last changed."""

    def __init__(self, max_header_list_size: int = 2**16) -> None:
        super().__init__(max_header_list_size)
        self.header_table = self._table = VersionedHeaderTable()
        self._memo: dict[tuple[bytes, bool], list] = {}
        self._memo_state: tuple[int, int] = (0, max_header_list_size)

    def decode(self, data: bytes, raw: bool = False) -> list:
        table = self._table
        state = (table.version, self.max_header_list_size)
        if state != self._memo_state:
            self._memo.clear()
            self._memo_state = state
        key = (bytes(data), raw) if len(data) <= MEMO_MAX_BLOCK else None
        if key is not None:
            cached = self._memo.get(key)
            if cached is not None:
                return list(cached)
        version = table.version
        try:
            headers = list(super().decode(data, raw))
        except OversizedHeaderListError:
            raise  # h2 answers this one itself, with ENHANCE_YOUR_CALM
        except (HPACKError, IndexError) as e:
            raise CompressionError(f"undecodable field block: {e}") from e
        if key is not None and table.version == version and len(self._memo) < MEMO_ENTRIES:
            self._memo[key] = headers
            return list(headers)
        return headers
