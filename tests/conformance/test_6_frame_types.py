"""
RFC 9113 section 6: the rules of each frame type. DATA (6.1), HEADERS (6.2), PRIORITY (6.3),
RST_STREAM (6.4), SETTINGS (6.5), PUSH_PROMISE (6.6), PING (6.7), GOAWAY (6.8) and CONTINUATION
(6.10). WINDOW_UPDATE (6.9) is in test_6_9_flow_control.py; wrong lengths in test_4_frames.py.
"""

from __future__ import annotations

import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import DataFrame, HeadersFrame, PingFrame

from .conftest import INDEX_BODY, LARGE_BODY
from .h2conf import (
    DATA,
    ENABLE_PUSH,
    HEADER_TABLE_SIZE,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_FRAME_SIZE,
    PUSH_PROMISE,
    SETTINGS,
    continuation_frame,
    data_frame,
    expect_connection_error,
    expect_ignored,
    frame,
    goaway_frame,
    headers_frame,
    ping_frame,
    priority_fields,
    priority_frame,
    rst_stream_frame,
    settings_frame,
)


def post_echo(client, *, end_stream: bool = False) -> int:
    stream_id = client.next_id()
    client.send_raw(headers_frame(stream_id, client.request_block("/echo", "POST"), end_stream=end_stream))
    return stream_id


def assert_index(client, stream_id: int) -> None:
    stream = client.response(stream_id)
    assert stream.status == 200 and bytes(stream.data) == INDEX_BODY


# 6.1 DATA


def test_data_on_stream_zero(client):
    """DATA on stream 0: connection error PROTOCOL_ERROR."""
    client.send_with_probe(data_frame(0, b"test"))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


@pytest.mark.parametrize("pad", [0, 10, 255])
def test_padded_data(client, pad):
    """Padded DATA: the padding is removed and the body arrives as sent."""
    stream_id = post_echo(client)
    client.send_raw(
        data_frame(stream_id, b"hello ", pad=pad) + data_frame(stream_id, b"world", end_stream=True, pad=pad)
    )
    stream = client.response(stream_id)
    assert stream.status == 200 and bytes(stream.data) == b"hello world"


@pytest.mark.parametrize("excess", [0, 1], ids=["equal", "longer"])
def test_data_padding_not_shorter_than_payload(client, excess):
    """Padding as long as the frame payload or longer: connection error PROTOCOL_ERROR."""
    stream_id = post_echo(client)
    payload = bytes([5 + excess]) + b"\0" * 4  # 5 octets of payload, pad length 5 or 6
    client.send_with_probe(frame(DATA, 0x8 | 0x1, stream_id, payload))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


# 6.2 HEADERS


def test_headers_on_stream_zero(client):
    """HEADERS on stream 0: connection error PROTOCOL_ERROR."""
    client.send_with_probe(headers_frame(0, client.request_block("/")))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "pad,priority",
    [(8, None), (0, None), (None, priority_fields(0, 256)), (17, priority_fields(0, 1, exclusive=True))],
    ids=["padded", "padded-zero", "priority", "padded-priority"],
)
def test_headers_with_padding_and_priority(client, pad, priority):
    """HEADERS with padding and/or priority fields is a normal request."""
    stream_id = client.next_id()
    client.send_raw(headers_frame(stream_id, client.request_block("/"), pad=pad, priority=priority))
    assert_index(client, stream_id)


def test_headers_priority_on_other_stream(client):
    """A HEADERS frame whose priority depends on another (open) stream is a normal request."""
    hold = client.next_id()
    client.send_raw(headers_frame(hold, client.request_block("/hold")))
    stream_id = client.next_id()
    client.send_raw(headers_frame(stream_id, client.request_block("/"), priority=priority_fields(hold, 100, True)))
    assert_index(client, stream_id)


def test_headers_padding_not_shorter_than_payload(client):
    """HEADERS padding as long as the rest of the payload: connection error PROTOCOL_ERROR."""
    stream_id = client.next_id()
    block = client.request_block("/")
    payload = bytes([len(block) + 1]) + block
    client.send_with_probe(frame(HEADERS, 0x8 | 0x4 | 0x1, stream_id, payload))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


def test_headers_too_short_for_priority(client):
    """A HEADERS frame with PRIORITY set but fewer than 5 octets: connection error FRAME_SIZE_ERROR."""
    client.send_with_probe(frame(HEADERS, 0x20 | 0x4 | 0x1, 1, b"\0\0\0"))
    expect_connection_error(client, ErrorCodes.FRAME_SIZE_ERROR)


# 6.3 PRIORITY


def test_priority_on_stream_zero(client):
    """PRIORITY on stream 0: connection error PROTOCOL_ERROR."""
    client.send_with_probe(priority_frame(0, 1))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


def test_priority_on_open_stream(target, client):
    """PRIORITY on an open stream (exclusive, on another stream) is accepted."""
    first = client.next_id()
    client.send_raw(headers_frame(first, client.request_block("/hold"), end_stream=False))
    second = client.next_id()
    client.send_raw(headers_frame(second, client.request_block("/hold"), end_stream=False))
    expect_ignored(client, priority_frame(first, second, 256, exclusive=True))
    target.assert_serves(client)


# 6.4 RST_STREAM


def test_rst_stream_on_stream_zero(client):
    """RST_STREAM on stream 0: connection error PROTOCOL_ERROR."""
    client.send_with_probe(rst_stream_frame(0, ErrorCodes.CANCEL))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


def test_nothing_sent_after_rst_stream(target):
    """After the client resets a stream the server sends no more frames on it, even when windows open."""
    client = target.ready(settings={INITIAL_WINDOW_SIZE: 0}, auto_ack=False)
    stream_id = client.request("/large", scheme=client.scheme)
    client.read_until(lambda: client.response_headers_seen(stream_id))
    client.send_raw(rst_stream_frame(stream_id, ErrorCodes.CANCEL))
    client.update_settings(INITIAL_WINDOW_SIZE=65535)
    seen = len(client.frames)
    client.ping_round_trip()
    client.ping_round_trip()
    late = [f for f in client.frames[seen:] if f.stream_id == stream_id]
    assert not late, f"frames after RST_STREAM: {late}"
    target.assert_serves(client)


# 6.5 SETTINGS


def test_settings_are_acknowledged(client):
    """A SETTINGS frame is acknowledged with an empty SETTINGS ACK."""
    before = client.settings_acks
    client.send_raw(settings_frame((MAX_FRAME_SIZE, 20000)))
    client.read_until(lambda: client.settings_acks > before)


def test_settings_ack_with_payload(client):
    """A SETTINGS ACK with a payload: connection error FRAME_SIZE_ERROR."""
    client.send_with_probe(frame(SETTINGS, 0x1, 0, b"\0\x03\0\0\0\x64"))
    expect_connection_error(client, ErrorCodes.FRAME_SIZE_ERROR)


def test_settings_on_nonzero_stream(client):
    """SETTINGS on a stream other than 0: connection error PROTOCOL_ERROR."""
    client.send_with_probe(settings_frame((MAX_FRAME_SIZE, 20000), stream_id=1))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


def test_settings_enable_push_invalid(client):
    """SETTINGS_ENABLE_PUSH other than 0 or 1: connection error PROTOCOL_ERROR."""
    client.send_with_probe(settings_frame((ENABLE_PUSH, 2)))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


def test_settings_initial_window_size_too_large(client):
    """SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1: connection error FLOW_CONTROL_ERROR."""
    client.send_with_probe(settings_frame((INITIAL_WINDOW_SIZE, 2**31)))
    expect_connection_error(client, ErrorCodes.FLOW_CONTROL_ERROR)


@pytest.mark.parametrize("value", [16383, 2**24], ids=["below-2^14", "above-2^24-1"])
def test_settings_max_frame_size_out_of_range(client, value):
    """SETTINGS_MAX_FRAME_SIZE outside 2^14 .. 2^24-1: connection error PROTOCOL_ERROR."""
    client.send_with_probe(settings_frame((MAX_FRAME_SIZE, value)))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


def test_settings_unknown_identifier_ignored(target, client):
    """An unknown SETTINGS parameter is ignored (and the frame acknowledged)."""
    before = client.settings_acks
    expect_ignored(client, settings_frame((0xFF, 1), (0x4242, 0xFFFFFFFF)))
    client.read_until(lambda: client.settings_acks > before)
    target.assert_serves(client)


def test_settings_enable_push_one_from_client(target, client):
    """A client may send SETTINGS_ENABLE_PUSH = 1 (it is the server that may not)."""
    expect_ignored(client, settings_frame((ENABLE_PUSH, 1)))
    target.assert_serves(client)


def test_settings_repeated_parameter_last_wins(target):
    """Parameters are processed in order: with INITIAL_WINDOW_SIZE 100 then 1, the window is 1."""
    client = target.ready(auto_ack=False)
    stream_id = client.next_id()
    client.settings[INITIAL_WINDOW_SIZE] = 1
    client.streams[stream_id].recv_window = 1
    client.send_raw(
        settings_frame((INITIAL_WINDOW_SIZE, 100), (INITIAL_WINDOW_SIZE, 1))
        + headers_frame(stream_id, client.request_block("/large"))
    )
    client.read_until(lambda: bool(client.data_frames(stream_id)))
    client.ping_round_trip()
    client.ping_round_trip()
    sizes = [len(f.data) for f in client.data_frames(stream_id)]
    assert sizes == [1], f"DATA frame sizes {sizes} with an initial window of 1"


@pytest.mark.parametrize("max_frame_size", [16384, 65536])
def test_server_respects_max_frame_size(target, max_frame_size):
    """Response DATA frames never exceed the client's SETTINGS_MAX_FRAME_SIZE (checked by the client)."""
    client = target.ready(
        settings={MAX_FRAME_SIZE: max_frame_size, INITIAL_WINDOW_SIZE: 1 << 20}, connection_window=1 << 22
    )
    stream = client.get("/large")
    assert stream.status == 200 and bytes(stream.data) == LARGE_BODY
    assert stream.largest_frame <= max_frame_size
    assert all(len(f.data) <= max_frame_size for f in client.frames if isinstance(f, DataFrame))


def test_settings_header_table_size_zero(target):
    """
    With SETTINGS_HEADER_TABLE_SIZE 0 the server's encoder may not use its dynamic table: the
    responses decode with a decoder whose table holds nothing (RFC 7541 section 4.2).
    """
    client = target.connect(settings={HEADER_TABLE_SIZE: 0})
    client.decoder.header_table_size = 0
    client.decoder.max_allowed_table_size = 0
    client.wait_ready()
    for _ in range(3):
        stream = client.get("/")
        assert stream.status == 200 and bytes(stream.data) == INDEX_BODY
    first = next(f for f in client.frames if isinstance(f, HeadersFrame))
    assert first.data[:1] == b"\x20", "the first header block must start with a table size update to 0"


def test_settings_header_table_size_reduced_mid_connection(client):
    """
    SETTINGS_HEADER_TABLE_SIZE lowered to 0 after responses filled the server's dynamic table: the
    next response block starts with a table size update to 0 and uses no dynamic entry (RFC 7541
    section 4.2), also when it is the same response as before.
    """
    for _ in range(2):
        assert client.get("/").status == 200
    acks = client.settings_acks
    client.update_settings(HEADER_TABLE_SIZE=0)
    client.read_until(lambda: client.settings_acks > acks)
    client.decoder.max_allowed_table_size = 0
    seen = len(client.frames)
    for _ in range(2):
        stream = client.get("/")
        assert stream.status == 200 and bytes(stream.data) == INDEX_BODY
    first = next(f for f in client.frames[seen:] if isinstance(f, HeadersFrame))
    assert first.data[:1] == b"\x20", f"no table size update to 0 at the start of {bytes(first.data[:8])!r}"
    assert len(client.decoder.header_table.dynamic_entries) == 0


# 6.6 PUSH_PROMISE


def test_push_promise_from_client(client):
    """A client cannot push: PUSH_PROMISE from it is a connection error PROTOCOL_ERROR."""
    stream_id = client.next_id()
    client.send_raw(headers_frame(stream_id, client.request_block("/hold", "POST"), end_stream=False))
    promise = (2).to_bytes(4, "big") + client.request_block("/")
    client.send_with_probe(frame(PUSH_PROMISE, 0x4, stream_id, promise))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


# 6.7 PING


def test_ping_is_acknowledged_with_same_payload(client):
    """A PING gets a PING with ACK and the same 8 octets."""
    payload = b"\x01\x02\x03\x04\xfa\xfb\xfc\xfd"
    ack = client.ping_round_trip(payload)
    assert ack.opaque_data == payload and ack.flags == {"ACK"} and ack.stream_id == 0


def test_ping_ack_is_not_answered(client):
    """An unsolicited PING ACK is ignored: the server does not respond to it."""
    payload = b"unasked!"
    expect_ignored(client, ping_frame(payload, ack=True))
    assert not [f for f in client.frames if isinstance(f, PingFrame) and f.opaque_data == payload]


def test_ping_on_nonzero_stream(client):
    """PING on a stream other than 0: connection error PROTOCOL_ERROR."""
    client.send_with_probe(ping_frame(b"\0" * 8, stream_id=1))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


# 6.8 GOAWAY


def test_goaway_on_nonzero_stream(client):
    """GOAWAY on a stream other than 0: connection error PROTOCOL_ERROR."""
    client.send_with_probe(goaway_frame(0, 0, stream_id=1))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


def test_client_goaway_lets_open_request_finish(client):
    """
    A client's GOAWAY (NO_ERROR) says it will accept no new server-initiated streams; its own
    request already sent is still answered (RFC 9113 section 6.8: streams are not cancelled by a
    graceful GOAWAY; Go's ``ClientConn.Shutdown`` relies on it), then the connection may close.
    """
    stream_id = client.next_id()
    client.send_raw(headers_frame(stream_id, client.request_block("/")) + goaway_frame(0, ErrorCodes.NO_ERROR))
    assert_index(client, stream_id)


# 6.10 CONTINUATION


def split(block: bytes, parts: int) -> list[bytes]:
    step = max(1, -(-len(block) // parts))
    return [block[i : i + step] for i in range(0, len(block), step)]


def test_headers_with_continuations(client):
    """A header block in a HEADERS and several CONTINUATION frames is one request."""
    stream_id = client.next_id()
    pieces = split(client.request_block("/", extra=[("x-filler", "f" * 40)]), 4)
    frames = [headers_frame(stream_id, pieces[0], end_headers=False)]
    frames += [continuation_frame(stream_id, p, end_headers=False) for p in pieces[1:-1]]
    frames.append(continuation_frame(stream_id, pieces[-1]))
    client.send_raw(b"".join(frames))
    assert_index(client, stream_id)


def test_empty_continuation_frames(client):
    """Empty CONTINUATION frames inside a header block are legal."""
    stream_id = client.next_id()
    client.send_raw(
        headers_frame(stream_id, client.request_block("/"), end_headers=False)
        + continuation_frame(stream_id, b"", end_headers=False)
        + continuation_frame(stream_id, b"")
    )
    assert_index(client, stream_id)


INTERLEAVED = {
    "data-same-stream": lambda sid: data_frame(sid, b"x"),
    "priority-same-stream": lambda sid: priority_frame(sid, 0, 16),
    "ping": lambda sid: ping_frame(b"\0" * 8),
    "settings": lambda sid: settings_frame(),
    "window-update-connection": lambda sid: frame(0x8, 0, 0, (1000).to_bytes(4, "big")),
    "rst-stream-same-stream": lambda sid: rst_stream_frame(sid),
    "headers-other-stream": None,
    "continuation-other-stream": None,
}


@pytest.mark.parametrize("kind", list(INTERLEAVED))
def test_frame_inside_header_block(client, kind):
    """
    Between HEADERS without END_HEADERS and its last CONTINUATION no other frame may come (of any
    type, on any stream): connection error PROTOCOL_ERROR. The header block is then completed, so
    a server that let the frame through answers the probe PING instead.
    """
    stream_id = client.next_id()
    block = client.request_block("/echo", "POST")
    if kind == "headers-other-stream":
        other = client.next_id()
        interloper = headers_frame(other, client.request_block("/"))
    elif kind == "continuation-other-stream":
        interloper = continuation_frame(stream_id + 2, block[:1], end_headers=False)
    else:
        interloper = INTERLEAVED[kind](stream_id)
    client.send_with_probe(
        headers_frame(stream_id, block[:2], end_stream=False, end_headers=False),
        interloper,
        continuation_frame(stream_id, block[2:]),
        data_frame(stream_id, b"", end_stream=True),
    )
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


def test_frame_after_continuation_without_end_headers(client):
    """HEADERS, CONTINUATION (no END_HEADERS), then DATA: connection error PROTOCOL_ERROR."""
    stream_id = client.next_id()
    block = client.request_block("/echo", "POST")
    client.send_with_probe(
        headers_frame(stream_id, block[:1], end_stream=False, end_headers=False),
        continuation_frame(stream_id, block[1:2], end_headers=False),
        data_frame(stream_id, b"x"),
        continuation_frame(stream_id, block[2:]),
        data_frame(stream_id, b"", end_stream=True),
    )
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


def test_continuation_after_continuation_with_end_headers(client):
    """A CONTINUATION after the CONTINUATION that ended the block: connection error PROTOCOL_ERROR."""
    stream_id = client.next_id()
    block = client.request_block("/hold", "POST")
    client.send_with_probe(
        headers_frame(stream_id, block[:2], end_stream=False, end_headers=False),
        continuation_frame(stream_id, block[2:]),
        continuation_frame(stream_id, client.block([("x-late", "1")])),
    )
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


def test_continuation_after_end_headers(client):
    """CONTINUATION after a HEADERS that had END_HEADERS (stream still open): connection error PROTOCOL_ERROR."""
    stream_id = client.next_id()
    client.send_raw(headers_frame(stream_id, client.request_block("/hold", "POST"), end_stream=False))
    client.send_with_probe(continuation_frame(stream_id, client.block([("x-late", "1")])))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


def test_continuation_after_data(client):
    """CONTINUATION after a DATA frame: connection error PROTOCOL_ERROR."""
    stream_id = post_echo(client)
    client.send_with_probe(data_frame(stream_id, b"x"), continuation_frame(stream_id, client.block([("x-late", "1")])))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


def test_continuation_on_stream_zero(client):
    """CONTINUATION on stream 0 (a header block open on stream 1): connection error PROTOCOL_ERROR."""
    stream_id = client.next_id()
    block = client.request_block("/")
    client.send_with_probe(
        headers_frame(stream_id, block[:2], end_headers=False),
        continuation_frame(0, block[2:]),
        continuation_frame(stream_id, b""),
    )
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)
