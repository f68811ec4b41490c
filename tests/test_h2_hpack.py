"""
The memoising HPACK coders give the same headers as hpack itself, whatever the sequence: the
decoder the same lists, the encoder the same bytes, except that ``date`` is sent as a literal
without indexing and never enters the dynamic table.
"""

from __future__ import annotations

import random

import pytest
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple

from kyoukai.protocol.h2.hpack import MemoDecoder, MemoEncoder

NAMES = [b"content-type", b"server", b"date", b"x-a", b"x-b", b"set-cookie", b":status", b"content-length"]
VALUES = [b"text/plain", b"Kyoukai/3", b"Tue, 24 Nov 2026 08:00:00 GMT", b"1", b"22", b"a" * 300, b"", b"z"]


def random_lists(rng: random.Random, count: int) -> list[list[tuple[bytes, bytes]]]:
    pool = [[(rng.choice(NAMES), rng.choice(VALUES)) for _ in range(rng.randint(1, 6))] for _ in range(8)]
    return [
        rng.choice(pool)
        if rng.random() < 0.8
        else [(rng.choice(NAMES), bytes([rng.randrange(97, 123)]) * rng.randint(1, 40))]
        for _ in range(count)
    ]


def without_dates(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if name != b"date"]


@pytest.mark.parametrize("seed", range(20))
def test_encoder_and_decoder_agree_with_hpack(seed: int) -> None:
    # hpack fed the same lists less their date fields has the same table as the memo encoder
    # after every block, and codes a block without a date field to the same bytes.
    rng = random.Random(seed)
    plain_enc, memo_enc = Encoder(), MemoEncoder()
    plain_dec, memo_dec = Decoder(), MemoDecoder()
    for step, headers in enumerate(random_lists(rng, 400)):
        if step % 97 == 50:
            size = rng.choice([0, 64, 256, 4096])
            plain_enc.header_table_size = memo_enc.header_table_size = size
        expected = plain_enc.encode(without_dates(headers))
        got = memo_enc.encode(headers)
        if without_dates(headers) == headers:
            assert got == expected, step
        assert list(memo_enc.header_table.dynamic_entries) == list(plain_enc.header_table.dynamic_entries), step
        decoded = plain_dec.decode(got, raw=True)
        assert decoded == headers, step
        assert memo_dec.decode(got, raw=True) == decoded, step


def test_repeated_blocks_are_remembered() -> None:
    enc = MemoEncoder()
    headers = [(b"content-type", b"text/plain"), (b"server", b"Kyoukai")]
    first = enc.encode(headers)  # adds both fields to the table
    second = enc.encode(headers)  # all indexed now: remembered
    assert enc.encode(headers) is second and second != first
    dec = MemoDecoder()
    dec.decode(first)
    assert dec.decode(second) == dec.decode(second) == [("content-type", "text/plain"), ("server", "Kyoukai")]


def test_a_table_change_forgets_remembered_blocks() -> None:
    dec = MemoDecoder()
    enc = Encoder()
    dec.decode(enc.encode([(b"x-a", b"1")]))
    indexed = enc.encode([(b"x-a", b"1")])
    assert dec.decode(indexed) == [("x-a", "1")]
    # A new entry shifts the dynamic indices: the same bytes now mean another field.
    dec.decode(enc.encode([(b"x-b", b"2")]))
    assert dec.decode(indexed) == [("x-b", "2")]


def response(date: str, length: str = "14") -> list[tuple[str, str]]:
    return [
        (":status", "200"),
        ("content-type", "text/plain; charset=utf-8"),
        ("content-length", length),
        ("date", date),
        ("server", "Kyoukai/3.0"),
        ("x-powered-by", "Kyoukai/3.0"),
    ]


@pytest.mark.parametrize("huffman", [True, False])
def test_a_date_change_leaves_the_table_and_the_remembered_block_alone(huffman: bool) -> None:
    enc, dec = MemoEncoder(), Decoder()
    seconds = ["Sun, 29 Nov 2026 21:00:00 GMT", "Sun, 29 Nov 2026 21:00:01 GMT", "Sun, 29 Nov 2026 21:00:02 GMT"]
    blocks = []
    for date in seconds:
        for _ in range(3):
            block = enc.encode(response(date), huffman)
            assert dec.decode(block) == response(date)
            blocks.append(block)
    # The first block added every field but the date to both tables, and nothing since.
    assert [name for name, _ in dec.header_table.dynamic_entries] == [
        b"x-powered-by",
        b"server",
        b"content-length",
        b"content-type",
    ]
    assert list(enc.header_table.dynamic_entries) == list(dec.header_table.dynamic_entries)
    assert enc.header_table.version == 4
    # One shape remembered for all three seconds; within a second, the same bytes.
    assert len(enc._shapes) == 1
    assert blocks[1] == blocks[2] and blocks[4] == blocks[5] and blocks[1] != blocks[4]
    assert len(blocks[1]) == len(blocks[4])


def test_the_date_literal_is_the_one_rfc_7541_spells() -> None:
    date = "Mon, 21 Oct 2013 20:13:21 GMT"
    block = MemoEncoder().encode([("date", date)], huffman=False)
    # Literal without indexing (0000), name index 33 on 4 bits (15 + 18), then the raw value.
    assert block == b"\x0f\x12" + bytes([len(date)]) + date.encode()


def test_a_date_marked_never_indexed_stays_so() -> None:
    headers = [(":status", "200"), NeverIndexedHeaderTuple("date", "Sun, 29 Nov 2026 21:00:00 GMT")]
    assert MemoEncoder().encode(headers) == Encoder().encode(headers)


def test_several_date_fields_each_go_unindexed() -> None:
    headers = [("date", "a"), ("x-a", "1"), (b"date", b"b"), ("x-b", "2")]
    enc, dec = MemoEncoder(), Decoder()
    for _ in range(2):
        assert dec.decode(enc.encode(headers), raw=True) == [
            (b"date", b"a"),
            (b"x-a", b"1"),
            (b"date", b"b"),
            (b"x-b", b"2"),
        ]
    assert [name for name, _ in dec.header_table.dynamic_entries] == [b"x-b", b"x-a"]
