"""
HPACK with memory of repeated header blocks.

Most responses of a server repeat the header list of the one before (same content type, same
``server``, same date within a second), and most requests of a client repeat their header
block byte for byte once every field is in the dynamic table. While the dynamic table is
unchanged, the same input codes to the same output, so these subclasses of hpack's
:class:`~hpack.Encoder` and :class:`~hpack.Decoder` remember the blocks they coded without
touching the table, and forget everything as soon as the table changes (an entry added, a
size change). Every block that adds to the table still goes through hpack itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from hpack import Decoder, Encoder
from hpack.exceptions import HPACKError, OversizedHeaderListError

from kyoukai.protocol.h2.compat import VersionedHeaderTable

#: Blocks remembered per connection and direction, and the largest block remembered.
MEMO_ENTRIES = 64
MEMO_MAX_BLOCK = 1024
_ONLY_TUPLES = frozenset({tuple})


class CompressionError(ProtocolError):
    """
    A field block that cannot be decoded: RFC 9113 section 4.3 makes it a connection error of
    type COMPRESSION_ERROR, where h2 would report a plain PROTOCOL_ERROR.
    """

    error_code = ErrorCodes.COMPRESSION_ERROR


class MemoEncoder(Encoder):
    """An HPACK encoder that reuses the encoding of a header list seen since the table last changed."""

    def __init__(self) -> None:
        super().__init__()
        self.header_table = self._table = VersionedHeaderTable()
        self._memo: dict[tuple, bytes] = {}
        self._memo_version = 0

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        if headers.__class__ is not list:
            headers = list(headers)
        table = self._table
        if table.version != self._memo_version:
            self._memo.clear()
            self._memo_version = table.version
        # Only plain tuples: hpack's HeaderTuple subclasses carry an "indexable" flag that
        # changes the encoding but not the tuple's equality.
        key = (huffman, *headers) if _ONLY_TUPLES.issuperset(map(type, headers)) else None
        if key is not None and not self.table_size_changes:
            cached = self._memo.get(key)
            if cached is not None:
                return cached
        version = table.version
        encoded = super().encode(headers, huffman)
        if key is not None and table.version == version and len(self._memo) < MEMO_ENTRIES:
            self._memo[key] = encoded
        return encoded


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
