"""RFC 9113 section 4: frame format (4.1), frame size (4.2) and header compression (4.3)."""

from __future__ import annotations

import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import HeadersFrame, PingFrame

from .conftest import INDEX_BODY
from .h2conf import (
    DATA,
    HEADERS,
    PING,
    PRIORITY,
    RST_STREAM,
    SERVER_MAX_FRAME_SIZE,
    SETTINGS,
    UNKNOWN_TYPE,
    WINDOW_UPDATE,
    data_frame,
    expect_connection_error,
    expect_ignored,
    expect_stream_error,
    frame,
    headers_frame,
)

# 4.1 frame format


def test_unknown_frame_type_is_ignored(target, client):
    """Frames of an unknown type are ignored and discarded (on stream 0 and on a stream)."""
    expect_ignored(client, frame(UNKNOWN_TYPE, 0, 0, b"ignore me"), frame(0xFA, 0xFF, 1, b"\0" * 20))
    target.assert_serves(client)


@pytest.mark.parametrize("flags", [0x16, 0xFE], ids=["0x16", "0xfe"])
def test_ping_with_undefined_flags(client, flags):
    """Undefined flags are ignored: a PING with flags 0x16/0xfe (ACK clear) is still acknowledged."""
    marker = client.new_marker()
    client.send_raw(frame(PING, flags, 0, marker))
    client.read_until(lambda: any(isinstance(f, PingFrame) and f.opaque_data == marker for f in client.frames))
    ack = next(f for f in client.frames if isinstance(f, PingFrame) and f.opaque_data == marker)
    assert ack.flags == {"ACK"}, "the ACK must carry only the ACK flag"


def test_headers_with_undefined_flags(target, client):
    """A request whose HEADERS frame has undefined flags (0x2, 0x10, 0x40, 0x80) is served normally."""
    stream_id = client.next_id()
    client.send_raw(headers_frame(stream_id, client.request_block("/"), extra_flags=0x02 | 0x10 | 0x40 | 0x80))
    stream = client.response(stream_id)
    assert stream.status == 200 and bytes(stream.data) == INDEX_BODY


def test_ping_with_reserved_bit(client):
    """The reserved bit of the stream identifier is ignored on receipt: a PING with R set is answered."""
    marker = client.new_marker()
    client.send_raw(frame(PING, 0, 0, marker, reserved=True))
    client.read_until(lambda: any(isinstance(f, PingFrame) and f.opaque_data == marker for f in client.frames))


def test_headers_with_reserved_bit(client):
    """A HEADERS frame with the R bit set on its stream id opens that stream (the bit is ignored)."""
    stream_id = client.next_id()
    client.send_raw(frame(HEADERS, 0x5, stream_id, client.request_block("/"), reserved=True))
    stream = client.response(stream_id)
    assert stream.status == 200 and bytes(stream.data) == INDEX_BODY


# 4.2 frame size


def test_data_frame_of_max_frame_size(client):
    """A DATA frame of exactly SETTINGS_MAX_FRAME_SIZE (16,384) octets is accepted."""
    body = bytes(range(256)) * (SERVER_MAX_FRAME_SIZE // 256)
    stream_id = client.next_id()
    client.send_raw(
        headers_frame(stream_id, client.request_block("/echo", "POST"), end_stream=False)
        + data_frame(stream_id, body, end_stream=True)
    )
    stream = client.response(stream_id)
    assert stream.status == 200 and bytes(stream.data) == body


def test_data_frame_over_max_frame_size(target, client):
    """A DATA frame one octet over SETTINGS_MAX_FRAME_SIZE: FRAME_SIZE_ERROR (stream or connection)."""
    stream_id = client.next_id()
    client.send_with_probe(
        headers_frame(stream_id, client.request_block("/echo", "POST"), end_stream=False),
        data_frame(stream_id, b"x" * (SERVER_MAX_FRAME_SIZE + 1), end_stream=True),
    )
    expect_stream_error(client, stream_id, ErrorCodes.FRAME_SIZE_ERROR)
    target.assert_serves(client)


def test_headers_frame_over_max_frame_size(client):
    """
    A HEADERS frame over SETTINGS_MAX_FRAME_SIZE alters the connection's HPACK state: connection
    error FRAME_SIZE_ERROR.
    """
    stream_id = client.next_id()
    filler = [(f"x-filler-{i}", "v" * 100) for i in range(200)]
    block = client.request_block("/", extra=filler)
    assert len(block) > SERVER_MAX_FRAME_SIZE
    client.send_with_probe(headers_frame(stream_id, block))
    expect_connection_error(client, ErrorCodes.FRAME_SIZE_ERROR)


def test_unknown_frame_over_max_frame_size(target, client):
    """Even an unknown frame type may not exceed SETTINGS_MAX_FRAME_SIZE: FRAME_SIZE_ERROR."""
    client.send_with_probe(frame(UNKNOWN_TYPE, 0, 0, b"\0" * (SERVER_MAX_FRAME_SIZE + 1)))
    expect_connection_error(client, ErrorCodes.FRAME_SIZE_ERROR)


# bad lengths per frame type (sections 6.3, 6.4, 6.5, 6.7, 6.9)


@pytest.mark.parametrize("length", [0, 7, 9])
def test_ping_with_wrong_length(client, length):
    """A PING whose payload is not 8 octets: connection error FRAME_SIZE_ERROR."""
    client.send_with_probe(frame(PING, 0, 0, b"\0" * length))
    expect_connection_error(client, ErrorCodes.FRAME_SIZE_ERROR)


@pytest.mark.parametrize("length", [4, 6])
def test_priority_with_wrong_length(target, client, length):
    """A PRIORITY frame whose payload is not 5 octets: stream error FRAME_SIZE_ERROR."""
    stream_id = client.next_id()
    client.send_with_probe(frame(PRIORITY, 0, stream_id, b"\0" * length))
    expect_stream_error(client, stream_id, ErrorCodes.FRAME_SIZE_ERROR)
    target.assert_serves(client)


@pytest.mark.parametrize("length", [3, 5])
def test_rst_stream_with_wrong_length(client, length):
    """An RST_STREAM frame whose payload is not 4 octets: connection error FRAME_SIZE_ERROR."""
    stream_id = client.next_id()
    client.send_raw(headers_frame(stream_id, client.request_block("/hold"), end_stream=True))
    client.send_with_probe(frame(RST_STREAM, 0, stream_id, b"\0" * length))
    expect_connection_error(client, ErrorCodes.FRAME_SIZE_ERROR)


@pytest.mark.parametrize("length", [3, 5])
def test_window_update_with_wrong_length(client, length):
    """A WINDOW_UPDATE frame whose payload is not 4 octets: connection error FRAME_SIZE_ERROR."""
    client.send_with_probe(frame(WINDOW_UPDATE, 0, 0, b"\0\0\0\1\0"[:length]))
    expect_connection_error(client, ErrorCodes.FRAME_SIZE_ERROR)


@pytest.mark.parametrize("length", [3, 7])
def test_settings_length_not_multiple_of_six(client, length):
    """A SETTINGS frame whose length is not a multiple of 6: connection error FRAME_SIZE_ERROR."""
    client.send_with_probe(frame(SETTINGS, 0, 0, b"\0\x03\0\0\0\x64\0"[:length]))
    expect_connection_error(client, ErrorCodes.FRAME_SIZE_ERROR)


def test_goaway_too_short(client):
    """
    A GOAWAY frame shorter than its 8 fixed octets is too small to contain mandatory frame data
    (RFC 9113 section 4.2): connection error FRAME_SIZE_ERROR.
    """
    client.send_with_probe(frame(0x7, 0, 0, b"\0\0\0\0"))
    expect_connection_error(client, ErrorCodes.FRAME_SIZE_ERROR)


def test_data_shorter_than_pad_length_field(client):
    """
    A PADDED DATA frame too small to hold its Pad Length octet is "too small to contain mandatory
    frame data" (RFC 9113 section 4.2): connection error FRAME_SIZE_ERROR.
    """
    stream_id = client.next_id()
    client.send_raw(headers_frame(stream_id, client.request_block("/echo", "POST"), end_stream=False))
    client.send_with_probe(frame(DATA, 0x8, stream_id, b""))
    expect_connection_error(client, ErrorCodes.FRAME_SIZE_ERROR)


# 4.3 field section compression and decompression


def test_invalid_header_block_fragment(client):
    """A header block that cannot be decoded (a literal cut short): connection error COMPRESSION_ERROR."""
    stream_id = client.next_id()
    # literal with incremental indexing, new name of 5 octets... but only 2 present
    client.send_with_probe(headers_frame(stream_id, b"\x40\x05ab"))
    expect_connection_error(client, ErrorCodes.COMPRESSION_ERROR)


def test_server_header_blocks_decode(client):
    """The server's header blocks decode in sequence with one HPACK decoder (its dynamic table stays in sync)."""
    for _ in range(3):
        stream = client.get("/")
        assert stream.status == 200 and bytes(stream.data) == INDEX_BODY
    assert sum(isinstance(f, HeadersFrame) for f in client.frames) == 3
