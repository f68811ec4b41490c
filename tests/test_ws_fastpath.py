"""
The session's own reading and writing of whole data frames (kyoukai.protocol.ws.frames) against
wsproto alone: the same byte streams, valid and hostile, cut anywhere, fed to a session with and
without it must give the same events, the same bytes out and the same close, chunk by chunk.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from conftest import serve
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ws_limits import RawWebSocket
from wsproto import events as wse
from wsproto.connection import Connection, ConnectionType

from kyoukai import Kyoukai
from kyoukai.protocol.ws.deflate import DeflateParameters
from kyoukai.protocol.ws.frames import frame_length, read_messages, write_message
from kyoukai.protocol.ws.handshake import WebSocketOffer
from kyoukai.protocol.ws.session import Failed, Message, WebSocketSession
from kyoukai.protocol.ws.settings import WebSocketSettings
from kyoukai.testing import _MemoryChannel
from kyoukai.websocket import WebSocket

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
KEY = b"\x37\xfa\x21\x3d"
LIMIT = 256
#: Settings the streams run under: a small message limit, and ones where floods trip quickly.
SETTINGS = [
    {"ws_max_message_size": LIMIT},
    {"ws_max_message_size": LIMIT, "ws_max_control_frames": 2, "ws_control_frame_rate": 0.001},
    {"ws_max_message_size": LIMIT, "ws_fragment_grace": 0, "ws_min_fragment_size": 8},
    {"ws_max_message_size": LIMIT, "ws_fragment_grace": 2, "ws_min_fragment_size": 64},
]


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = KEY,
    form: str = "short",
) -> bytes:
    """A frame as a client sends it (``key=None``: unmasked); ``form`` forces a longer length encoding."""
    length = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    mask_bit = 0x80 if key is not None else 0
    if form == "64" or (form == "short" and length > 0xFFFF):
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    elif form == "16" or (form == "short" and length > 125):
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | length])
    if key is None:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def run(chunks: list[bytes], config: dict[str, Any], *, fast: bool) -> list[Any]:
    """Feed ``chunks`` to a session, echoing each message: what came out after each chunk and at the end."""
    session = WebSocketSession(WebSocketSettings(**config), lambda: 0.0)
    assert session._fast
    session._fast = fast
    trace: list[Any] = []
    for chunk in [*chunks, None]:
        events = session.receive_data(chunk)
        for event in events:
            if isinstance(event, Message):
                session.message_consumed(event)
                if session.open:
                    session.send_message(event.data)
        trace.append((events, session.data_to_send(), session.closed, session.open, session.buffered_bytes))
        if fast and session.open:
            check_handover(session)
    return trace


def check_handover(session: WebSocketSession) -> None:
    """wsproto is between frames exactly when the session says it gave it every byte of its frame."""
    decoder = session._ws._proto._frame_decoder
    between_frames = decoder.header is None and not len(decoder.buffer)
    assert between_frames == (session._owed == 0 and not session._head)


def assert_same(chunks: list[bytes], config: dict[str, Any]) -> list[Any]:
    fast = run(chunks, config, fast=True)
    assert fast == run(chunks, config, fast=False)
    return fast


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


# streams split at every position

VALID = b"".join(
    [
        frame(BINARY, b"\x00\x01binary" * 3),
        frame(TEXT, "h\u00e9llo \u2603 \U0001f600".encode()),
        frame(TEXT, b""),
        frame(BINARY, bytes(range(200))),
        frame(PING, b"are you there"),
        frame(TEXT, b"frag", fin=False),
        frame(PONG, b"interleaved"),
        frame(CONTINUATION, b"ment", fin=False),
        frame(CONTINUATION, "ed \u00e9".encode()),
        frame(BINARY, b"x" * 126),
        frame(BINARY, b"y" * LIMIT),
        frame(CLOSE, close_payload(1000, b"bye")),
        frame(BINARY, b"after the close"),
    ]
)
HOSTILE = {
    "unmasked": frame(TEXT, b"ok") + frame(BINARY, b"plain", key=None) + frame(TEXT, b"never"),
    "bad opcode": frame(BINARY, b"ok") + frame(0x3, b"what") + frame(TEXT, b"never"),
    "control opcode": frame(TEXT, b"ok") + frame(0xB, b"what"),
    "rsv1": frame(TEXT, b"ok") + frame(TEXT, b"deflated?", rsv=4),
    "rsv2 rsv3": frame(BINARY, b"ok") + frame(BINARY, b"ext", rsv=3),
    "too big": frame(TEXT, b"ok") + frame(BINARY, b"z" * (LIMIT + 1)),
    "too big 16": frame(BINARY, b"z" * 300, form="16"),
    "long 16": frame(TEXT, b"ok") + frame(BINARY, b"short", form="16") + frame(TEXT, b"never"),
    "long 64": frame(BINARY, b"ok") + frame(TEXT, b"x" * 200, form="64"),
    "bad utf-8": frame(TEXT, b"good") + frame(TEXT, b"bad \xff byte") + frame(TEXT, b"never"),
    "surrogate": frame(TEXT, b"\xed\xa0\x80"),
    "utf-8 across fragments": frame(TEXT, b"\xe2\x82", fin=False) + frame(CONTINUATION, b"\xac ok"),
    "bad utf-8 across fragments": frame(TEXT, b"\xe2\x82", fin=False) + frame(CONTINUATION, b"\x41"),
    "continuation first": frame(BINARY, b"ok") + frame(CONTINUATION, b"orphan"),
    "continuation after whole": frame(BINARY, b"w" * 200) + frame(CONTINUATION, b"v" * 100),
    "new message in fragments": frame(TEXT, b"a", fin=False) + frame(BINARY, b"b"),
    "fragmented ping": frame(BINARY, b"ok") + frame(PING, b"p", fin=False),
    "long ping": frame(TEXT, b"ok") + frame(PING, b"p" * 126),
    "ping flood": frame(BINARY, b"ok") + frame(PING) * 4 + frame(BINARY, b"never"),
    "tiny fragments": frame(TEXT, b"a", fin=False) + frame(CONTINUATION, b"b", fin=False) * 4 + frame(CONTINUATION),
    "close 1 byte": frame(TEXT, b"ok") + frame(CLOSE, b"\x03"),
    "close bad code": frame(TEXT, b"ok") + frame(CLOSE, close_payload(999)),
    "close local code": frame(TEXT, b"ok") + frame(CLOSE, close_payload(1006)),
    "close reserved": frame(TEXT, b"ok") + frame(CLOSE, close_payload(2999)),
    "close app code": frame(TEXT, b"ok") + frame(CLOSE, close_payload(4000, "\u00e9".encode())),
    "close bad reason": frame(TEXT, b"ok") + frame(CLOSE, close_payload(1000, b"\xff")),
    "close empty": frame(BINARY, b"ok") + frame(CLOSE) + frame(BINARY, b"after"),
}


@pytest.mark.parametrize("config", SETTINGS, ids=["limits", "control flood", "no grace", "fragment flood"])
@pytest.mark.parametrize("name", ["valid", *HOSTILE])
def test_split_anywhere(name: str, config: dict[str, Any]) -> None:
    stream = VALID if name == "valid" else HOSTILE[name]
    for position in range(len(stream) + 1):
        assert_same([stream[:position], stream[position:]], config)
    whole = assert_same([stream], config)
    if name == "valid" and config is SETTINGS[0]:
        messages = [event.data for events, *_ in whole for event in events if isinstance(event, Message)]
        assert messages[:4] == [b"\x00\x01binary" * 3, "h\u00e9llo \u2603 \U0001f600", "", bytes(range(200))]
        assert messages[4] == "fragmented \u00e9"
        assert len(messages) == 7  # nothing after the close


def test_byte_by_byte() -> None:
    for config in SETTINGS:
        for stream in [VALID, *HOSTILE.values()]:
            assert_same([stream[i : i + 1] for i in range(len(stream))], config)


def test_hostile_streams_fail_as_before() -> None:
    """The fast path does not just agree with wsproto: these streams do end the connection."""
    expected = {"unmasked": 1002, "bad utf-8": 1007, "too big": 1009, "continuation after whole": 1009}
    for name, code in expected.items():
        trace = assert_same([HOSTILE[name]], SETTINGS[0])
        failures = [event for events, *_ in trace for event in events if isinstance(event, Failed)]
        assert [failure.code for failure in failures] == [code], name


# random streams

payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100).map(str.encode),
    st.sampled_from([b"\xff", b"\xc3", b"ok\xed\xa0\x80", b"\xe2\x82", b"\xe2\x82\xac"]),
    st.integers(min_value=LIMIT - 2, max_value=LIMIT + 2).map(lambda n: b"s" * n),
)
close_payloads = st.one_of(
    st.just(b""),
    st.just(b"\x03"),
    st.tuples(
        st.sampled_from([1000, 1001, 1002, 999, 1004, 1005, 1006, 1015, 2999, 3000, 4999, 5000]),
        st.sampled_from([b"", b"bye", b"\xff", "\u00e9".encode()]),
    ).map(lambda t: close_payload(*t)),
)
frames = st.one_of(
    st.builds(
        frame,
        st.sampled_from([TEXT, BINARY] * 6 + [CONTINUATION, PING, PONG, 0x3, 0xB]),
        payloads,
        fin=st.sampled_from([True] * 5 + [False]),
        rsv=st.sampled_from([0] * 10 + [1, 2, 4]),
        key=st.sampled_from([KEY] * 10 + [None, b"\x00\x00\x00\x00", b"\xff\x01\x80\x7f"]),
        form=st.sampled_from(["short"] * 10 + ["16", "64"]),
    ),
    st.builds(lambda payload: frame(CLOSE, payload), close_payloads),
)
streams = st.tuples(
    st.lists(frames, min_size=1, max_size=8).map(b"".join),
    st.lists(st.integers(min_value=0, max_value=4000), max_size=6),
    st.sampled_from(SETTINGS),
)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(streams)
def test_random_streams(case: tuple[bytes, list[int], dict[str, Any]]) -> None:
    stream, cuts, config = case
    assert_same(cut(stream, cuts), config)


# the pieces


def test_read_messages_stops_at_anything_else() -> None:
    good = frame(BINARY, b"one") + frame(TEXT, "tw\u00f6".encode()) + frame(BINARY, b"3" * 70000)
    messages, pos, last = read_messages(good + frame(PING), 0, 1 << 20, 0)
    assert messages == [b"one", "tw\u00f6", b"3" * 70000]
    assert (pos, last) == (len(good), 70000)
    for rest in (frame(TEXT, b"\xff"), frame(BINARY, b"x", rsv=4), frame(BINARY, b"x", key=None), b"\x82"):
        assert read_messages(good + rest, 0, 1 << 20, 0)[:2] == ([b"one", "tw\u00f6", b"3" * 70000], len(good))
    assert read_messages(frame(BINARY, b"x" * 10), 0, 9, 0) == ([], 0, -1)
    assert read_messages(frame(BINARY, b"x" * 10), 0, 10, 11) == ([], 0, -1)
    assert read_messages(frame(BINARY, b"x" * 10)[:-1], 0, 10, 0) == ([], 0, -1)


def test_frame_length() -> None:
    for payload in (b"", b"a" * 125, b"b" * 126, b"c" * 70000):
        data = frame(BINARY, payload)
        assert frame_length(data, 0) == len(data)
        assert frame_length(b"??" + data, 2) == len(data)
        assert frame_length(data[:1], 0) is None
    assert frame_length(frame(BINARY, b"b" * 126)[:3], 0) is None
    assert frame_length(frame(BINARY, b"c" * 70000)[:9], 0) is None


@pytest.mark.parametrize("size", [0, 1, 125, 126, 0xFFFF, 0x10000])
def test_written_frames_match_wsproto(size: int) -> None:
    fast = WebSocketSession(WebSocketSettings(), lambda: 0.0)
    slow = WebSocketSession(WebSocketSettings(), lambda: 0.0)
    slow._fast = False
    for message in (b"\x00" * size, "\u00e9" * (size // 2), "a" * size):
        fast.send_message(message)
        slow.send_message(message)
    assert fast.data_to_send() == slow.data_to_send()
    out = bytearray()
    write_message(out, b"abc")
    assert out == b"\x82\x03abc"


def test_unencodable_text_is_refused_alike() -> None:
    for fast in (True, False):
        session = WebSocketSession(WebSocketSettings(), lambda: 0.0)
        session._fast = fast
        with pytest.raises(UnicodeEncodeError):
            session.send_message("\ud800")
        assert session.data_to_send() == b""


def test_deflate_sessions_leave_frames_to_wsproto() -> None:
    session = WebSocketSession(WebSocketSettings(), lambda: 0.0, deflate=DeflateParameters())
    assert not session._fast
    session.send_message(b"a" * 100)
    assert session.data_to_send()[0] == 0xC2  # FIN, RSV1 (compressed), binary


# the shell: replies to a burst of messages go out in one write


class RecordingChannel(_MemoryChannel):
    """The test client's channel, keeping what is written, one entry per write."""

    def __init__(self) -> None:
        offer = WebSocketOffer(key="dGhlIHNhbXBsZSBub25jZQ==", subprotocols=(), extensions=(), http2=False)
        super().__init__(offer, WebSocketSettings())
        self.writes: list[bytes] = []

    async def send_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        await super().send_head(status, headers)
        self.writes.append(b"head")

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes.append(data)


async def open_websocket() -> tuple[WebSocket, RecordingChannel]:
    channel = RecordingChannel()
    websocket = WebSocket(channel)
    await websocket.accept()
    assert channel.writes == [b"head"]
    channel.writes.clear()
    return websocket, channel


def server_frames(data: bytes) -> list[str | bytes]:
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(data)
    return [event.data for event in client.events() if isinstance(event, wse.Message)]


async def test_replies_to_a_burst_are_one_write() -> None:
    websocket, channel = await open_websocket()
    websocket.feed_data(b"".join(frame(BINARY, b"%d" % i) for i in range(20)))
    for _ in range(20):
        await websocket.send(await websocket.receive())
    assert len(channel.writes) == 1
    assert server_frames(channel.writes[0]) == [b"%d" % i for i in range(20)]
    await asyncio.sleep(0)  # the flush scheduled for the burst finds nothing left
    assert len(channel.writes) == 1


async def test_a_reply_held_back_goes_out_on_the_next_turn() -> None:
    websocket, channel = await open_websocket()
    websocket.feed_data(frame(TEXT, b"first") + frame(TEXT, b"second"))
    await websocket.send(await websocket.receive())
    assert channel.writes == []  # "second" waits to be read: the reply may have company
    await asyncio.sleep(0)
    assert [server_frames(data) for data in channel.writes] == [["first"]]


async def test_a_send_with_nothing_waiting_is_written_at_once() -> None:
    websocket, channel = await open_websocket()
    await websocket.send("pushed")
    assert [server_frames(data) for data in channel.writes] == [["pushed"]]
    websocket.feed_data(frame(TEXT, b"one"))
    await websocket.send(await websocket.receive())
    assert [server_frames(data) for data in channel.writes] == [["pushed"], ["one"]]


async def test_held_back_replies_precede_the_close() -> None:
    websocket, channel = await open_websocket()
    websocket.feed_data(frame(TEXT, b"a") + frame(TEXT, b"b"))
    await websocket.send(await websocket.receive())
    closing = asyncio.ensure_future(websocket.close(4000, "done"))
    await asyncio.sleep(0)
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(b"".join(channel.writes))
    events = list(client.events())
    assert isinstance(events[0], wse.TextMessage) and events[0].data == "a"
    assert isinstance(events[1], wse.CloseConnection) and events[1].code == 4000
    websocket.feed_data(frame(CLOSE, close_payload(4000)))
    await closing
    assert channel.finished


# a live server


def test_burst_over_a_real_connection() -> None:
    """Frames of every size and kind in one write, echoed in order (most read by the fast path)."""
    app = Kyoukai("ws-fastpath")

    @app.websocket("/echo")
    async def echo(ctx):
        async for message in ctx.websocket:
            await ctx.websocket.send(message)

    messages: list[str | bytes] = [b"", "", "h\u00e9llo", bytes(125), bytes(126), b"\xff" * 70000, "\u2603" * 30000]
    messages += [b"%d" % i for i in range(200)]
    frames = [frame(TEXT, m.encode()) if isinstance(m, str) else frame(BINARY, m) for m in messages]
    frames.insert(4, frame(PING, b"still there?"))
    with serve(app) as server, RawWebSocket(server.port) as ws:
        assert ws.handshake("/echo") == 101
        ws.send_raw(b"".join(frames))
        echoed: list[str | bytes] = []
        pieces: list[Any] = []
        pongs = 0
        while len(echoed) < len(messages):
            event = ws.next_event()
            if isinstance(event, wse.Message):
                pieces.append(event.data)
                if event.message_finished:
                    echoed.append("".join(pieces) if isinstance(event.data, str) else b"".join(pieces))
                    pieces = []
            else:
                assert isinstance(event, wse.Pong)
                pongs += 1
        ws.send(wse.CloseConnection(1000))
        assert ws.close_event().code == 1000
    assert echoed == messages
    assert pongs == 1
