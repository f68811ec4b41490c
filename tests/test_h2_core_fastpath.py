"""
The HTTP/2 core's fast paths (:mod:`kyoukai.protocol.h2.compat`: request heads read without
h2's frame parser, h2's state machines stepped directly for the common transitions) change
nothing a client or the app can see: the same client bytes, fed to a core with them and to one
without (everything through h2), give the same events and the same bytes back, read by read,
for well-formed and malformed clients alike.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import hpack
import pytest
from h2.errors import ErrorCodes

from kyoukai.protocol import events as ev
from kyoukai.protocol.h2 import compat
from kyoukai.protocol.h2.connection import H2ServerConnection
from kyoukai.settings import ServerSettings

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 2, 3, 4, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
GET = [(":method", "GET"), (":scheme", "https"), (":authority", "example.com"), (":path", "/")]
OK = [(":status", "200"), ("content-type", "text/plain")]


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream_id) + payload


class Script:
    """The client's bytes, read by read (one HPACK encoder for the whole connection)."""

    def __init__(self) -> None:
        self.encoder = hpack.Encoder()
        self.reads: list[bytes] = [PREFACE + frame(SETTINGS, 0, 0), frame(SETTINGS, ACK, 0)]

    def block(self, fields: list[tuple[str, str]]) -> bytes:
        return self.encoder.encode(fields)

    def head(self, stream_id: int, fields: list[tuple[str, str]] = GET, flags: int = END_HEADERS | END_STREAM) -> bytes:
        return frame(HEADERS, flags, stream_id, self.block(fields))

    def read(self, *pieces: bytes) -> Script:
        self.reads.append(b"".join(pieces))
        return self


def post(length: int | None = None) -> list[tuple[str, str]]:
    fields = [(":method", "POST"), (":scheme", "https"), (":authority", "example.com"), (":path", "/up")]
    return fields if length is None else [*fields, ("content-length", str(length))]


def gets_in_one_read(s: Script) -> None:
    s.read(*(s.head(stream_id) for stream_id in (1, 3, 5, 7)))
    s.read(*(s.head(stream_id) for stream_id in (9, 11)))


def head_split_across_reads(s: Script) -> None:
    data = s.head(1) + s.head(3)
    s.read(data[:5]).read(data[5:20]).read(data[20:])


def heads_between_body_frames(s: Script) -> None:
    s.read(s.head(1, post(10), END_HEADERS))
    s.read(frame(DATA, 0, 1, b"x" * 4), s.head(3), frame(DATA, END_STREAM, 1, b"y" * 6), s.head(5))


def head_after_a_partial_data_frame(s: Script) -> None:
    s.read(s.head(1, post(), END_HEADERS))
    data = frame(DATA, END_STREAM, 1, b"z" * 300)
    s.read(data[:100]).read(data[100:], s.head(3))


def priority_padding_and_other_flags(s: Script) -> None:
    block = s.block(GET)
    prioritised = struct.pack(">IB", 0, 15) + block
    s.read(frame(HEADERS, END_HEADERS | END_STREAM | PRIORITY_FLAG, 1, prioritised))
    s.read(frame(HEADERS, END_HEADERS | END_STREAM | PADDED, 3, bytes([4]) + s.block(GET) + b"\0" * 4))
    s.read(frame(HEADERS, END_HEADERS | END_STREAM | 0x2 | 0x10, 5, s.block(GET)))


def continuation(s: Script) -> None:
    block = s.block([*GET, ("x-long", "v" * 300)])
    s.read(frame(HEADERS, END_STREAM, 1, block[:100]), frame(CONTINUATION, END_HEADERS, 1, block[100:]), s.head(3))


def cookie_crumbs_and_trailers(s: Script) -> None:
    s.read(s.head(1, [*GET, ("cookie", "a=1"), ("accept", "*/*"), ("cookie", "b=2")]))
    s.read(s.head(3, post(), END_HEADERS), frame(DATA, 0, 3, b"body"))
    s.read(s.head(3, [("x-checksum", "abc")], END_HEADERS | END_STREAM), s.head(5))


def head_request_with_a_length(s: Script) -> None:
    head = [(":method", "HEAD"), (":scheme", "https"), (":authority", "example.com"), (":path", "/")]
    s.read(
        s.head(1, [*head, ("content-length", "0")]), s.head(3, post(3), END_HEADERS), frame(DATA, END_STREAM, 3, b"abc")
    )


def body_longer_than_its_length(s: Script) -> None:
    s.read(s.head(1, post(2), END_HEADERS), frame(DATA, END_STREAM, 1, b"abcd"), s.head(3))


def reset_and_goaway_between_heads(s: Script) -> None:
    s.read(s.head(1, post(), END_HEADERS), frame(RST_STREAM, 0, 1, struct.pack(">I", ErrorCodes.CANCEL)), s.head(3))
    s.read(frame(GOAWAY, 0, 0, struct.pack(">II", 3, 0)), s.head(5))


def small_window_updates_and_many_streams(s: Script) -> None:
    for first in range(1, 80, 16):
        s.read(
            *(s.head(stream_id) for stream_id in range(first, first + 16, 2)),
            frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 20)),
        )


def invalid_content_length(s: Script) -> None:
    s.read(s.head(1), s.head(3, [*post(), ("content-length", "12x")], END_HEADERS), s.head(5))


def conflicting_content_lengths(s: Script) -> None:
    s.read(s.head(1, [*post(4), ("content-length", "5")], END_HEADERS))


def status_in_a_request(s: Script) -> None:
    s.read(s.head(1), s.head(3, [(":status", "100"), *GET]))


def malformed_request_is_a_stream_error(s: Script) -> None:
    s.read(s.head(1, [(":method", "GET"), (":path", "/")]), s.head(3, [*GET, ("Upper", "x")]), s.head(5))


def stream_id_reused(s: Script) -> None:
    s.read(s.head(1), s.head(3))
    s.read(s.head(1))


def stream_id_reused_once_forgotten(s: Script) -> None:
    # h2 forgets a closed stream when the next one opens; then only its record says how it ended.
    s.read(s.head(1)).read(s.head(3)).read(s.head(1))


def reset_stream_id_reused_once_forgotten(s: Script) -> None:
    s.read(s.head(1, post(), END_HEADERS), frame(RST_STREAM, 0, 1, struct.pack(">I", ErrorCodes.CANCEL)))
    s.read(s.head(3)).read(s.head(1))


def head_inside_an_open_header_block(s: Script) -> None:
    s.read(frame(HEADERS, END_STREAM, 1, s.block(GET)), s.head(3))


def stream_id_lower_than_the_last(s: Script) -> None:
    s.read(s.head(5), s.head(3))


def even_stream_id(s: Script) -> None:
    s.read(s.head(1), s.head(2))


def undecodable_block(s: Script) -> None:
    s.read(s.head(1), frame(HEADERS, END_HEADERS | END_STREAM, 3, b"\xff\xff\xff\xff\xff"))


def oversized_header_list(s: Script) -> None:
    # Small blocks (the field is in the HPACK table after the first) that decode past the limit.
    big = ("x-big", "v" * 3000)
    s.read(s.head(1, [*GET, big]), s.head(3, [*GET, *[big] * 12]))


def frame_larger_than_allowed(s: Script) -> None:
    s.read(s.head(1), s.head(3, [*GET, ("x-big", "v" * 20_000)]))


SCRIPTS: list[Callable[[Script], None]] = [
    gets_in_one_read,
    head_split_across_reads,
    heads_between_body_frames,
    head_after_a_partial_data_frame,
    priority_padding_and_other_flags,
    continuation,
    cookie_crumbs_and_trailers,
    head_request_with_a_length,
    body_longer_than_its_length,
    reset_and_goaway_between_heads,
    small_window_updates_and_many_streams,
    invalid_content_length,
    conflicting_content_lengths,
    status_in_a_request,
    malformed_request_is_a_stream_error,
    stream_id_reused,
    stream_id_reused_once_forgotten,
    reset_stream_id_reused_once_forgotten,
    head_inside_an_open_header_block,
    stream_id_lower_than_the_last,
    even_stream_id,
    undecodable_block,
    oversized_header_list,
    frame_larger_than_allowed,
]


def h2_state(core: H2ServerConnection) -> Any:
    """What h2 holds of the connection and its streams (both paths must leave it the same)."""
    conn = core.h2
    streams = {
        stream_id: (
            vars(stream.state_machine),
            stream.outbound_flow_control_window,
            stream.inbound_flow_control_window,
            stream.request_method,
            stream.max_outbound_frame_size,
            stream._expected_content_length,
            stream._actual_content_length,
        )
        for stream_id, stream in conn.streams.items()
    }
    closed = [
        (stream_id, conn._closed_streams.get(stream_id))
        for stream_id in range(1, 100)
        if stream_id in conn._closed_streams
    ]
    windows = (conn.outbound_flow_control_window, conn.inbound_flow_control_window)
    return conn.state_machine.state, conn.highest_inbound_stream_id, windows, streams, closed


def transcript(reads: list[bytes], answer_at_once: bool) -> list[Any]:
    """
    What a core does with ``reads``, read by read: its events, its bytes and h2's state. The
    app answers each request once it is complete, or (``answer_at_once``) as soon as it
    arrives, before its body.
    """
    core = H2ServerConnection(ServerSettings(max_header_size=32 * 1024), lambda: 1000.0)
    seen: list[Any] = []
    # h2's own events too, as h2 gives them to the core.
    h2_events: list[Any] = []
    receive = core.h2.receive_data_and_heads

    def receive_and_record(data: bytes, heads: Any) -> list[Any]:
        events = receive(data, heads)
        h2_events.append([(type(event).__name__, repr(vars(event))) for event in events])
        return events

    core.h2.receive_data_and_heads = receive_and_record  # type: ignore[method-assign]
    for data in reads:
        events = core.receive_data(data)
        for event in events:
            if isinstance(event, ev.RequestReceived) and (event.ended or answer_at_once):
                core.send_response(event.stream_id, OK, b"hello")
                core.finish(event.stream_id)
            elif isinstance(event, ev.RequestEnded) and not answer_at_once:
                core.send_response(event.stream_id, OK)
                core.finish(event.stream_id)
        out = b"".join(b"".join(batch) for batch in iter(core.data_to_send, []))
        seen.append((events, core.take_events(), out, core.closed, h2_state(core)))
    return [*seen, h2_events]


@pytest.mark.parametrize("answer_at_once", [False, True], ids=["answer-complete-requests", "answer-at-once"])
@pytest.mark.parametrize("script", SCRIPTS, ids=[script.__name__ for script in SCRIPTS])
def test_with_and_without_the_fast_paths_alike(
    script: Callable[[Script], None], answer_at_once: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Script()
    script(client)
    fast = transcript(client.reads, answer_at_once)
    monkeypatch.setattr(compat, "FAST_TRANSITIONS", False)
    assert transcript(client.reads, answer_at_once) == fast


def test_the_fast_paths_hold_on_the_installed_h2() -> None:
    assert compat.FAST_TRANSITIONS


def test_request_heads_skip_h2s_frame_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    client = Script()
    gets_in_one_read(client)
    parsed: list[Any] = []
    original = compat.ServerH2Connection._receive_headers_frame

    def counting(conn: Any, frame: Any) -> Any:
        parsed.append(frame.stream_id)
        return original(conn, frame)

    monkeypatch.setattr(compat.ServerH2Connection, "_receive_headers_frame", counting)
    *steps, _ = transcript(client.reads, answer_at_once=False)
    assert parsed == []
    answered = [e.stream_id for events, *_ in steps for e in events if isinstance(e, ev.RequestReceived)]
    assert answered == [1, 3, 5, 7, 9, 11]
