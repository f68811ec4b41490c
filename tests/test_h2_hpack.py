"""The memoising HPACK coder gives the same bytes and headers as hpack itself, whatever the sequence."""

from __future__ import annotations

import random

import pytest
from hpack import Decoder, Encoder

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


@pytest.mark.parametrize("seed", range(20))
def test_encoder_and_decoder_agree_with_hpack(seed: int) -> None:
    rng = random.Random(seed)
    plain_enc, memo_enc = Encoder(), MemoEncoder()
    plain_dec, memo_dec = Decoder(), MemoDecoder()
    for step, headers in enumerate(random_lists(rng, 400)):
        if step % 97 == 50:
            size = rng.choice([0, 64, 256, 4096])
            plain_enc.header_table_size = memo_enc.header_table_size = size
        expected = plain_enc.encode(headers)
        got = memo_enc.encode(headers)
        assert got == expected, step
        assert memo_dec.decode(got) == plain_dec.decode(expected), step


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
