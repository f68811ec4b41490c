"""
RFC 7541 (HPACK), as the server's decoder sees it: index address space (2.3.3), table size
(4.2, 6.3), integer and string representations (5.1, 5.2) and the field representations (6.1,
6.2). A decoding error is a connection error COMPRESSION_ERROR (RFC 9113 section 4.3).
Header blocks are written byte by byte here, so each case controls exactly what is sent.
"""

from __future__ import annotations

import pytest
from h2.errors import ErrorCodes

from .conftest import INDEX_BODY
from .h2conf import expect_connection_error, headers_frame

STATIC_TABLE_SIZE = 61


def integer(value: int, prefix_bits: int, first_byte_flags: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 section 5.1) with ``first_byte_flags`` in the high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = bytearray([first_byte_flags | limit])
    value -= limit
    while value >= 128:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def raw_string(value: bytes) -> bytes:
    return integer(len(value), 7) + value


def huffman_string(encoded: bytes) -> bytes:
    return integer(len(encoded), 7, 0x80) + encoded


def size_update(size: int) -> bytes:
    return integer(size, 5, 0x20)


def static_request(client, path: bytes = b"/") -> bytes:
    """GET ``path`` from static-table entries and literals that are not indexed (no dynamic table use)."""
    scheme = b"\x87" if client.scheme == "https" else b"\x86"
    path_field = b"\x84" if path == b"/" else integer(4, 4) + raw_string(path)  # :path literal, not indexed
    authority = integer(1, 4) + raw_string(b"127.0.0.1")  # :authority literal, not indexed
    return b"\x82" + scheme + path_field + authority


def send_block(client, block: bytes) -> int:
    stream_id = client.next_id()
    client.send_with_probe(headers_frame(stream_id, block))
    return stream_id


def served(client, block: bytes, body: bytes = INDEX_BODY) -> None:
    stream_id = client.next_id()
    client.send_raw(headers_frame(stream_id, block))
    stream = client.response(stream_id)
    assert stream.status == 200 and bytes(stream.data) == body


def test_static_request_control(client):
    """Control case: the hand-written request block is served."""
    served(client, static_request(client))


# 2.3.3 index address space, 6.1 indexed header field


def test_indexed_field_index_zero(client):
    """An indexed header field with index 0: COMPRESSION_ERROR."""
    send_block(client, static_request(client) + b"\x80")
    expect_connection_error(client, ErrorCodes.COMPRESSION_ERROR)


@pytest.mark.parametrize("index", [STATIC_TABLE_SIZE + 1, 70, 1 << 20])
def test_indexed_field_index_past_tables(client, index):
    """An indexed header field past the static and (empty) dynamic table: COMPRESSION_ERROR."""
    send_block(client, static_request(client) + integer(index, 7, 0x80))
    expect_connection_error(client, ErrorCodes.COMPRESSION_ERROR)


@pytest.mark.parametrize("prefix", ["incremental", "without-indexing", "never-indexed"])
def test_literal_with_name_index_past_tables(client, prefix):
    """A literal field whose name index is past the tables: COMPRESSION_ERROR."""
    index = STATIC_TABLE_SIZE + 1
    field = {
        "incremental": integer(index, 6, 0x40),
        "without-indexing": integer(index, 4, 0x00),
        "never-indexed": integer(index, 4, 0x10),
    }[prefix]
    send_block(client, static_request(client) + field + raw_string(b"value"))
    expect_connection_error(client, ErrorCodes.COMPRESSION_ERROR)


def test_index_past_dynamic_table_after_use(client):
    """With one entry in the dynamic table, index 62 is valid and 63 is not: COMPRESSION_ERROR."""
    served(client, static_request(client, b"/header") + b"\x40" + raw_string(b"x-probe") + raw_string(b"one"), b"one")
    served(client, static_request(client, b"/header") + integer(62, 7, 0x80), b"one")
    send_block(client, static_request(client) + integer(63, 7, 0x80))
    expect_connection_error(client, ErrorCodes.COMPRESSION_ERROR)


# 4.2 maximum table size, 6.3 dynamic table size update


def test_size_update_larger_than_settings(client):
    """A dynamic table size update above SETTINGS_HEADER_TABLE_SIZE (default 4,096): COMPRESSION_ERROR."""
    limit = client.remote_settings.get(0x1, 4096)
    send_block(client, size_update(limit + 1) + static_request(client))
    expect_connection_error(client, ErrorCodes.COMPRESSION_ERROR)


def test_size_update_after_field(client):
    """A dynamic table size update after a header field (not at the block start): COMPRESSION_ERROR."""
    send_block(client, static_request(client) + size_update(0))
    expect_connection_error(client, ErrorCodes.COMPRESSION_ERROR)


def test_size_updates_at_block_start(client):
    """Two size updates at the start of a block (0, then 4,096) are valid."""
    served(client, size_update(0) + size_update(4096) + static_request(client))


def test_size_update_evicts_entries(client):
    """A size update to 0 empties the dynamic table: its old index is then a COMPRESSION_ERROR."""
    served(client, static_request(client, b"/header") + b"\x40" + raw_string(b"x-probe") + raw_string(b"one"), b"one")
    send_block(client, size_update(0) + size_update(4096) + static_request(client) + integer(62, 7, 0x80))
    expect_connection_error(client, ErrorCodes.COMPRESSION_ERROR)


# 5.1 integers, 5.2 string literals


def test_truncated_integer(client):
    """An integer whose continuation octets are missing at the end of the block: COMPRESSION_ERROR."""
    send_block(client, static_request(client) + b"\xff")
    expect_connection_error(client, ErrorCodes.COMPRESSION_ERROR)


def test_string_longer_than_block(client):
    """A string literal whose length runs past the end of the block: COMPRESSION_ERROR."""
    send_block(client, static_request(client) + integer(58, 4) + integer(10, 7) + b"abc")
    expect_connection_error(client, ErrorCodes.COMPRESSION_ERROR)


def test_huffman_containing_eos(client):
    """A Huffman string containing the EOS symbol (30 one bits): COMPRESSION_ERROR."""
    send_block(client, static_request(client) + integer(58, 4) + huffman_string(b"\xff\xff\xff\xff"))
    expect_connection_error(client, ErrorCodes.COMPRESSION_ERROR)


def test_huffman_padding_too_long(client):
    """A Huffman string with more than 7 bits of padding ("a" then 11 one bits): COMPRESSION_ERROR."""
    send_block(client, static_request(client) + integer(58, 4) + huffman_string(b"\x1f\xff"))
    expect_connection_error(client, ErrorCodes.COMPRESSION_ERROR)


def test_huffman_padding_not_eos_prefix(client):
    """A Huffman string padded with zero bits instead of the EOS prefix: COMPRESSION_ERROR."""
    send_block(client, static_request(client) + integer(58, 4) + huffman_string(b"\x18"))
    expect_connection_error(client, ErrorCodes.COMPRESSION_ERROR)


def test_huffman_valid(client):
    """A valid Huffman string ("a": 00011 plus 3 padding one bits) decodes: x-probe: a."""
    served(
        client, static_request(client, b"/header") + b"\x00" + raw_string(b"x-probe") + huffman_string(b"\x1f"), b"a"
    )


# 6.2 literal representations, and the dynamic table across streams


def test_never_indexed_literal(client):
    """A never-indexed literal with a new name is decoded (and not added to the table)."""
    served(
        client, static_request(client, b"/header") + b"\x10" + raw_string(b"x-probe") + raw_string(b"secret"), b"secret"
    )


def test_dynamic_table_across_streams(client):
    """
    A request that uses dynamic table entries added by an earlier request on the connection is
    decoded with them (the encoder's second block is an index, so it is much shorter).
    """
    head = client.head("/header", extra=[("x-probe", "shared-value-" + "v" * 40)])
    first = client.block(head)
    second = client.block(head)
    assert len(second) < len(first) // 4, (len(first), len(second))
    expected = ("shared-value-" + "v" * 40).encode()
    for block in (first, second):
        served(client, block, expected)


def test_same_block_bytes_follow_the_current_table(client):
    """
    Identical header block bytes mean what the dynamic table says at the time: index 62 names the
    newest entry, so the same block decodes differently once an entry is added (a decoder that
    caches blocks must notice), and a repeated block with an incremental-indexing literal adds its
    entry each time (RFC 7541 sections 2.3.2 and 4.1).
    """
    path = b"/header"
    add = static_request(client, path) + b"\x40" + raw_string(b"x-probe")  # + value: literal, indexed
    newest = static_request(client, path) + integer(62, 7, 0x80)
    served(client, add + raw_string(b"one"), b"one")
    served(client, newest, b"one")
    served(client, add + raw_string(b"two"), b"two")
    served(client, newest, b"two")
    served(client, static_request(client, path) + integer(63, 7, 0x80), b"one")
    served(client, add + raw_string(b"two"), b"two")  # the same bytes as before: a third entry
    served(client, static_request(client, path) + integer(64, 7, 0x80), b"one")
    served(client, size_update(0) + size_update(4096) + add + raw_string(b"three"), b"three")
    served(client, newest, b"three")
