"""
RFC 9113 section 5: stream states (5.1), stream identifiers (5.1.1), concurrency (5.1.2),
dependencies (5.3.1), connection error handling (5.4.1) and extensions (5.5).
"""

from __future__ import annotations

from h2.errors import ErrorCodes

from .conftest import INDEX_BODY
from .h2conf import (
    UNKNOWN_TYPE,
    continuation_frame,
    data_frame,
    expect_connection_error,
    expect_ignored,
    expect_stream_error,
    frame,
    headers_frame,
    ping_frame,
    priority_fields,
    priority_frame,
    rst_stream_frame,
    window_update_frame,
)


def open_hold(client, *, end_stream: bool = True) -> int:
    """A stream on /hold: the server never answers, so it stays open (or half-closed remote)."""
    stream_id = client.next_id()
    client.send_raw(headers_frame(stream_id, client.request_block("/hold", "POST"), end_stream=end_stream))
    return stream_id


def finished_stream(client) -> int:
    """A stream closed in both directions: GET / answered in full."""
    stream_id = client.next_id()
    client.send_raw(headers_frame(stream_id, client.request_block("/")))
    stream = client.response(stream_id)
    assert stream.ended and stream.status == 200
    return stream_id


# 5.1 idle


def test_idle_data(client):
    """DATA on an idle stream: connection error PROTOCOL_ERROR."""
    client.send_with_probe(data_frame(1, b"test", end_stream=True))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


def test_idle_rst_stream(client):
    """RST_STREAM on an idle stream: connection error PROTOCOL_ERROR."""
    client.send_with_probe(rst_stream_frame(1, ErrorCodes.CANCEL))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


def test_idle_window_update(client):
    """WINDOW_UPDATE on an idle stream: connection error PROTOCOL_ERROR."""
    client.send_with_probe(window_update_frame(1, 100))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


def test_idle_continuation(client):
    """CONTINUATION on an idle stream: connection error PROTOCOL_ERROR."""
    client.send_with_probe(continuation_frame(1, client.request_block("/")))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


def test_idle_priority_then_headers(client):
    """PRIORITY is allowed on an idle stream; a HEADERS frame then opens that stream as usual."""
    stream_id = client.next_id()
    expect_ignored(client, priority_frame(stream_id, 0, 32))
    client.send_raw(headers_frame(stream_id, client.request_block("/")))
    stream = client.response(stream_id)
    assert stream.status == 200 and bytes(stream.data) == INDEX_BODY


# 5.1 half-closed (remote)


def test_half_closed_remote_data(target, client):
    """DATA after END_STREAM, while the server still owes the response: stream error STREAM_CLOSED."""
    stream_id = open_hold(client)
    client.send_with_probe(data_frame(stream_id, b"test", end_stream=True))
    expect_stream_error(client, stream_id, ErrorCodes.STREAM_CLOSED)
    target.assert_serves(client)


def test_half_closed_remote_headers(target, client):
    """A second HEADERS after END_STREAM on a half-closed (remote) stream: stream error STREAM_CLOSED."""
    stream_id = open_hold(client)
    client.send_with_probe(headers_frame(stream_id, client.request_block("/hold")))
    expect_stream_error(client, stream_id, ErrorCodes.STREAM_CLOSED)
    target.assert_serves(client)


def test_half_closed_remote_continuation(target, client):
    """CONTINUATION after a complete HEADERS with END_STREAM: STREAM_CLOSED or PROTOCOL_ERROR."""
    stream_id = open_hold(client)
    client.send_with_probe(continuation_frame(stream_id, client.block([("x-late", "1")])))
    expect_stream_error(client, stream_id, ErrorCodes.STREAM_CLOSED, ErrorCodes.PROTOCOL_ERROR)
    target.assert_serves(client)


def test_half_closed_remote_allows_window_update_priority_rst(target, client):
    """WINDOW_UPDATE, PRIORITY and RST_STREAM are allowed on a half-closed (remote) stream."""
    stream_id = open_hold(client)
    expect_ignored(client, window_update_frame(stream_id, 1000), priority_frame(stream_id, 0, 200))
    expect_ignored(client, rst_stream_frame(stream_id, ErrorCodes.CANCEL))
    target.assert_serves(client)


# 5.1 closed, after the client's RST_STREAM


def reset_stream(client) -> int:
    stream_id = open_hold(client, end_stream=False)
    client.send_raw(rst_stream_frame(stream_id, ErrorCodes.CANCEL))
    return stream_id


def test_closed_after_rst_data(target, client):
    """DATA on a stream the client reset: STREAM_CLOSED (stream or connection error)."""
    stream_id = reset_stream(client)
    client.send_with_probe(data_frame(stream_id, b"test", end_stream=True))
    expect_stream_error(client, stream_id, ErrorCodes.STREAM_CLOSED)
    target.assert_serves(client)


def test_closed_after_rst_headers(target, client):
    """HEADERS on a stream the client reset: STREAM_CLOSED (stream or connection error)."""
    stream_id = reset_stream(client)
    client.send_with_probe(headers_frame(stream_id, client.request_block("/")))
    expect_stream_error(client, stream_id, ErrorCodes.STREAM_CLOSED, ErrorCodes.PROTOCOL_ERROR)
    target.assert_serves(client)


def test_closed_after_rst_continuation(target, client):
    """CONTINUATION on a stream the client reset: STREAM_CLOSED or PROTOCOL_ERROR."""
    stream_id = reset_stream(client)
    client.send_with_probe(continuation_frame(stream_id, client.block([("x-late", "1")])))
    expect_stream_error(client, stream_id, ErrorCodes.STREAM_CLOSED, ErrorCodes.PROTOCOL_ERROR)
    target.assert_serves(client)


def test_closed_after_rst_priority(target, client):
    """PRIORITY on a stream the client reset is allowed."""
    stream_id = reset_stream(client)
    expect_ignored(client, priority_frame(stream_id, 0, 16))
    target.assert_serves(client)


# 5.1 closed, after END_STREAM both ways


def test_closed_data(target, client):
    """DATA on a stream closed in both directions: STREAM_CLOSED (stream or connection error)."""
    stream_id = finished_stream(client)
    client.send_with_probe(data_frame(stream_id, b"test", end_stream=True))
    expect_stream_error(client, stream_id, ErrorCodes.STREAM_CLOSED)
    target.assert_serves(client)


def test_closed_headers(target, client):
    """HEADERS on a stream closed in both directions: STREAM_CLOSED (or PROTOCOL_ERROR: a reused id)."""
    stream_id = finished_stream(client)
    client.send_with_probe(headers_frame(stream_id, client.request_block("/")))
    expect_stream_error(client, stream_id, ErrorCodes.STREAM_CLOSED, ErrorCodes.PROTOCOL_ERROR)
    target.assert_serves(client)


def test_closed_continuation(target, client):
    """CONTINUATION on a stream closed in both directions: STREAM_CLOSED or PROTOCOL_ERROR."""
    stream_id = finished_stream(client)
    client.send_with_probe(continuation_frame(stream_id, client.block([("x-late", "1")])))
    expect_stream_error(client, stream_id, ErrorCodes.STREAM_CLOSED, ErrorCodes.PROTOCOL_ERROR)
    target.assert_serves(client)


def test_closed_allows_window_update_and_rst(target, client):
    """
    WINDOW_UPDATE and RST_STREAM may arrive on a stream just closed by END_STREAM; they MUST be
    ignored (RFC 9113 sections 5.1 and 6.9).
    """
    stream_id = finished_stream(client)
    expect_ignored(client, window_update_frame(stream_id, 1000), rst_stream_frame(stream_id, ErrorCodes.CANCEL))
    target.assert_serves(client)


def test_closed_priority(target, client):
    """PRIORITY on a closed stream is allowed."""
    stream_id = finished_stream(client)
    expect_ignored(client, priority_frame(stream_id, 0, 16))
    target.assert_serves(client)


# 5.1.1 stream identifiers


def test_even_stream_id(client):
    """A client-initiated stream with an even identifier: connection error PROTOCOL_ERROR."""
    client.send_with_probe(headers_frame(2, client.request_block("/")))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


def test_decreasing_stream_id(client):
    """A new stream with a lower identifier than one already opened: connection error PROTOCOL_ERROR."""
    client.send_raw(headers_frame(5, client.request_block("/hold")))
    client.send_with_probe(headers_frame(3, client.request_block("/")))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


# 5.1.2 stream concurrency


def test_streams_over_max_concurrent_streams(target, client):
    """
    One stream over SETTINGS_MAX_CONCURRENT_STREAMS: stream error PROTOCOL_ERROR or REFUSED_STREAM,
    for that stream alone; the others stay open, and a new stream is served once one closes.
    """
    limit = client.remote_settings[0x3]
    ids = [client.next_id() for _ in range(limit + 1)]
    client.send_with_probe(*(headers_frame(sid, client.request_block("/hold")) for sid in ids))
    reaction = expect_stream_error(client, ids[-1], ErrorCodes.REFUSED_STREAM, ErrorCodes.PROTOCOL_ERROR)
    assert reaction.kind == "rst", f"the whole connection was closed for one stream too many: {reaction}"
    assert client.streams[ids[0]].reset_code is None
    client.send_raw(rst_stream_frame(ids[0], ErrorCodes.CANCEL))
    target.assert_serves(client)


# 5.3.1 stream dependencies


def test_headers_depending_on_itself(target, client):
    """A HEADERS frame whose stream depends on itself: stream error PROTOCOL_ERROR."""
    stream_id = client.next_id()
    client.send_with_probe(headers_frame(stream_id, client.request_block("/"), priority=priority_fields(stream_id)))
    expect_stream_error(client, stream_id, ErrorCodes.PROTOCOL_ERROR)
    target.assert_serves(client)


def test_priority_depending_on_itself(target, client):
    """A PRIORITY frame making a stream depend on itself: stream error PROTOCOL_ERROR."""
    stream_id = client.next_id()
    client.send_with_probe(priority_frame(stream_id, stream_id))
    expect_stream_error(client, stream_id, ErrorCodes.PROTOCOL_ERROR)
    target.assert_serves(client)


# 5.4.1 connection error handling


def test_goaway_names_last_processed_stream(client):
    """After streams 1 and 3 were served, a connection error's GOAWAY carries last stream id 3."""
    first = finished_stream(client)
    second = finished_stream(client)
    assert (first, second) == (1, 3)
    client.send_with_probe(ping_frame(b"\0" * 6))
    reaction = expect_connection_error(client, ErrorCodes.FRAME_SIZE_ERROR)
    assert client.goaway.last_stream_id == 3, reaction


# 5.5 extending HTTP/2


def test_unknown_frame_on_open_stream_ignored(target, client):
    """An unknown frame type on an open stream is ignored."""
    stream_id = open_hold(client, end_stream=False)
    expect_ignored(client, frame(UNKNOWN_TYPE, 0xFF, stream_id, b"extension"))
    client.send_raw(rst_stream_frame(stream_id, ErrorCodes.CANCEL))
    target.assert_serves(client)


def test_unknown_frame_inside_header_block(client):
    """An extension frame in the middle of a field block: connection error PROTOCOL_ERROR."""
    stream_id = client.next_id()
    block = client.request_block("/")
    client.send_with_probe(
        headers_frame(stream_id, block[:3], end_headers=False),
        frame(UNKNOWN_TYPE, 0, stream_id, b"extension"),
        continuation_frame(stream_id, block[3:]),
    )
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)
