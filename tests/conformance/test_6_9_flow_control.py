"""
RFC 9113 sections 5.2 and 6.9: flow control. WINDOW_UPDATE rules (6.9), the window limit of
2^31-1 (6.9.1), SETTINGS_INITIAL_WINDOW_SIZE and negative windows (6.9.2), and the server's
advertised windows (data over them is FLOW_CONTROL_ERROR).
"""

from __future__ import annotations

from h2.errors import ErrorCodes
from hyperframe.frame import RstStreamFrame

from .conftest import LARGE_BODY
from .h2conf import (
    INITIAL_WINDOW_SIZE,
    MAX_WINDOW,
    SERVER_CONNECTION_WINDOW,
    SERVER_MAX_FRAME_SIZE,
    SERVER_STREAM_WINDOW,
    data_frame,
    describe,
    expect_connection_error,
    expect_stream_error,
    headers_frame,
    settings_frame,
    window_update_frame,
)


def open_upload(client, path: str = "/hold") -> int:
    """A POST whose body is still to come (on /hold the server never reads it, so no credit returns)."""
    stream_id = client.next_id()
    client.send_raw(headers_frame(stream_id, client.request_block(path, "POST"), end_stream=False))
    return stream_id


def data_sizes(client, stream_id: int) -> list[int]:
    return [len(f.data) for f in client.data_frames(stream_id)]


# 6.9 WINDOW_UPDATE


def test_window_update_zero_on_connection(client):
    """A WINDOW_UPDATE of 0 on the connection: connection error PROTOCOL_ERROR."""
    client.send_with_probe(window_update_frame(0, 0))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


def test_window_update_zero_on_stream(target, client):
    """A WINDOW_UPDATE of 0 on a stream: stream error PROTOCOL_ERROR."""
    stream_id = open_upload(client)
    client.send_with_probe(window_update_frame(stream_id, 0))
    expect_stream_error(client, stream_id, ErrorCodes.PROTOCOL_ERROR)
    target.assert_serves(client)


def test_window_update_reserved_bit_ignored(target):
    """The reserved bit of a WINDOW_UPDATE increment is ignored: R + 1 is an increment of 1, not an overflow."""
    client = target.ready(settings={INITIAL_WINDOW_SIZE: 0}, auto_ack=False)
    stream_id = client.request("/large", scheme=client.scheme)
    client.read_until(lambda: client.response_headers_seen(stream_id))
    client.streams[stream_id].recv_window += 1
    client.send_raw(window_update_frame(stream_id, 0x80000001))
    client.read_until(lambda: bool(client.data_frames(stream_id)))
    client.ping_round_trip()
    assert data_sizes(client, stream_id) == [1]


# 6.9.1 the flow-control window


def test_stream_window_overflow(target, client):
    """WINDOW_UPDATEs taking a stream window past 2^31-1: stream error FLOW_CONTROL_ERROR."""
    stream_id = open_upload(client)
    client.send_with_probe(window_update_frame(stream_id, MAX_WINDOW), window_update_frame(stream_id, MAX_WINDOW))
    expect_stream_error(client, stream_id, ErrorCodes.FLOW_CONTROL_ERROR)
    target.assert_serves(client)


def test_connection_window_overflow(client):
    """WINDOW_UPDATEs taking the connection window past 2^31-1: connection error FLOW_CONTROL_ERROR."""
    client.send_with_probe(window_update_frame(0, MAX_WINDOW), window_update_frame(0, MAX_WINDOW))
    expect_connection_error(client, ErrorCodes.FLOW_CONTROL_ERROR)


def test_window_exactly_max_is_fine(target, client):
    """Windows may reach exactly 2^31-1 (stream and connection)."""
    stream_id = open_upload(client)
    client.send_with_probe(
        window_update_frame(stream_id, MAX_WINDOW - 65535), window_update_frame(0, MAX_WINDOW - 65535)
    )
    reaction = client.await_reaction()
    assert reaction.kind == "ignored", reaction
    target.assert_serves(client)


def test_initial_window_of_one(target):
    """With SETTINGS_INITIAL_WINDOW_SIZE 1 the server sends a 1-octet DATA frame and waits."""
    client = target.ready(settings={INITIAL_WINDOW_SIZE: 1}, auto_ack=False)
    stream_id = client.request("/large", scheme=client.scheme)
    client.read_until(lambda: bool(client.data_frames(stream_id)))
    client.ping_round_trip()
    client.ping_round_trip()
    assert data_sizes(client, stream_id) == [1]


def test_data_over_stream_window(target, client):
    """
    DATA beyond the stream window the server advertised (nothing read, so no credit returned):
    FLOW_CONTROL_ERROR, as a stream or connection error.
    """
    stream_id = open_upload(client)
    window = SERVER_STREAM_WINDOW
    assert client.remote_settings[INITIAL_WINDOW_SIZE] == window
    chunk = b"\0" * SERVER_MAX_FRAME_SIZE
    frames = [data_frame(stream_id, chunk) for _ in range(window // SERVER_MAX_FRAME_SIZE)]
    rest = window % SERVER_MAX_FRAME_SIZE
    frames.append(data_frame(stream_id, b"\0" * (rest + 1)))
    client.send_with_probe(*frames)
    expect_stream_error(client, stream_id, ErrorCodes.FLOW_CONTROL_ERROR)
    target.assert_serves(client)


def test_data_over_connection_window(client):
    """
    DATA beyond the connection window the server advertised, spread over streams that each stay
    within their own window: connection error FLOW_CONTROL_ERROR.
    """
    stream_window = SERVER_STREAM_WINDOW
    connection_window = SERVER_CONNECTION_WINDOW
    assert client.remote_settings[INITIAL_WINDOW_SIZE] == stream_window
    chunk = b"\0" * SERVER_MAX_FRAME_SIZE
    frames = []
    sent = 0
    while sent <= connection_window:
        stream_id = open_upload(client)
        in_stream = 0
        while in_stream + len(chunk) <= stream_window and sent <= connection_window:
            frames.append(data_frame(stream_id, chunk))
            in_stream += len(chunk)
            sent += len(chunk)
    client.send_with_probe(*frames)
    expect_connection_error(client, ErrorCodes.FLOW_CONTROL_ERROR)


# 6.9.2 initial flow-control window size


def test_initial_window_change_after_headers(target):
    """A stream opened with window 0 starts sending when SETTINGS_INITIAL_WINDOW_SIZE grows to 1."""
    client = target.ready(settings={INITIAL_WINDOW_SIZE: 0}, auto_ack=False)
    stream_id = client.request("/large", scheme=client.scheme)
    client.read_until(lambda: client.response_headers_seen(stream_id))
    client.ping_round_trip()
    assert data_sizes(client, stream_id) == []
    client.update_settings(INITIAL_WINDOW_SIZE=1)
    client.read_until(lambda: bool(client.data_frames(stream_id)))
    client.ping_round_trip()
    assert data_sizes(client, stream_id) == [1]


def test_initial_window_does_not_change_connection_window(target):
    """
    SETTINGS_INITIAL_WINDOW_SIZE changes stream windows only, not the connection window: with
    stream windows raised to 1 MiB and our connection window still 65,535, the server sends
    exactly 65,535 octets, then the rest once the connection window opens.
    """
    client = target.ready(settings={INITIAL_WINDOW_SIZE: 0}, auto_ack=False)
    stream_id = client.request("/large", scheme=client.scheme)
    client.read_until(lambda: client.response_headers_seen(stream_id))
    client.update_settings(INITIAL_WINDOW_SIZE=1 << 20)
    client.read_until(lambda: sum(data_sizes(client, stream_id)) >= 65535)
    client.ping_round_trip()
    client.ping_round_trip()
    assert sum(data_sizes(client, stream_id)) == 65535
    client.window_update(0, len(LARGE_BODY))
    stream = client.response(stream_id)
    assert bytes(stream.data) == LARGE_BODY


def test_negative_window(target):
    """
    SETTINGS_INITIAL_WINDOW_SIZE shrinking below what the server already sent makes the window
    negative: the server sends no DATA until WINDOW_UPDATEs make it positive again, then exactly
    what it allows, and the body arrives whole in the end.
    """
    client = target.ready(settings={INITIAL_WINDOW_SIZE: 100}, auto_ack=False)
    stream_id = client.request("/large", scheme=client.scheme)
    client.read_until(lambda: sum(data_sizes(client, stream_id)) == 100)
    client.update_settings(INITIAL_WINDOW_SIZE=0)  # window 0 - 100 = -100
    client.ping_round_trip()
    client.window_update(stream_id, 60)  # -40
    client.ping_round_trip()
    client.ping_round_trip()
    assert sum(data_sizes(client, stream_id)) == 100, "DATA sent on a negative window"
    client.window_update(stream_id, 70)  # 30
    client.read_until(lambda: sum(data_sizes(client, stream_id)) > 100)
    client.ping_round_trip()
    client.ping_round_trip()
    assert sum(data_sizes(client, stream_id)) == 130, data_sizes(client, stream_id)
    client.window_update(stream_id, len(LARGE_BODY))
    client.window_update(0, len(LARGE_BODY))
    stream = client.response(stream_id)
    assert bytes(stream.data) == LARGE_BODY


def test_initial_window_change_overflows_stream_window(client):
    """
    A SETTINGS_INITIAL_WINDOW_SIZE change that takes an open stream's window past 2^31-1:
    connection error FLOW_CONTROL_ERROR.
    """
    stream_id = open_upload(client)
    client.send_raw(window_update_frame(stream_id, 1000))
    client.send_with_probe(settings_frame((INITIAL_WINDOW_SIZE, MAX_WINDOW)))
    expect_connection_error(client, ErrorCodes.FLOW_CONTROL_ERROR)


def streams_reset_by_server(client, count: int) -> list[int]:
    """``count`` malformed POSTs (an uppercase field name) left open; returns once the server reset each."""
    ids = [client.next_id() for _ in range(count)]
    client.send_with_probe(
        *(headers_frame(sid, client.request_block("/echo", "POST", [("X-Bad", "1")]), end_stream=False) for sid in ids)
    )
    client.read_until(lambda: all(client.streams[sid].reset_code is not None for sid in ids))
    assert all(client.streams[sid].reset_code == ErrorCodes.PROTOCOL_ERROR for sid in ids)
    return ids


def late_data(client, ids: list[int], size: int) -> bytes:
    """``size`` octets of DATA on each stream, as frames, counted in our view of the windows."""
    chunk = b"\0" * min(SERVER_MAX_FRAME_SIZE, size)
    out = []
    for sid in ids:
        out += [data_frame(sid, chunk) for _ in range(size // len(chunk))]
        client.streams[sid].send_window -= size
        client.conn_send_window -= size
    return b"".join(out)


def test_data_on_stream_reset_by_server_is_ignored(target, client):
    """
    DATA the client sent before it saw the server's RST_STREAM MUST be ignored (RFC 9113 section
    5.1, closed: "An endpoint MUST ignore frames that it receives on closed streams after it has
    sent a RST_STREAM frame"): no RST_STREAM in answer to each late frame.
    """
    ids = streams_reset_by_server(client, 1)
    seen_before = len(client.frames)
    client.send_raw(late_data(client, ids, 3 * SERVER_MAX_FRAME_SIZE))
    client.settle(2)
    late = [describe(f) for f in client.frames[seen_before:] if isinstance(f, RstStreamFrame)]
    assert not late, f"RST_STREAMs sent for late DATA: {late}"
    assert client.goaway is None, client.describe_frames()
    target.assert_serves(client)


def test_discarded_data_still_returns_connection_credit(target, client):
    """
    DATA the server discards still counts against the connection window (RFC 9113 section 6.9),
    so the server must give that credit back: after 3 MiB of late DATA on three streams it reset,
    the connection window is open again (at least half of it).
    """
    ids = streams_reset_by_server(client, 3)
    client.send_raw(late_data(client, ids, SERVER_STREAM_WINDOW))
    client.settle(3)
    assert client.goaway is None, client.describe_frames()
    assert client.conn_send_window >= SERVER_CONNECTION_WINDOW // 2, (
        f"connection window {client.conn_send_window} after 3 MiB of discarded DATA: credit not returned"
    )
    target.assert_serves(client)
