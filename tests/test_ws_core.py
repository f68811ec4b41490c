"""
The WebSocket core without I/O: the opening handshake functions, and the session driven with
bytes from a client-side wsproto connection (raw frames where a client would not send them)
and a fake clock.
"""

from __future__ import annotations

import struct
import sys
import tracemalloc
import zlib
from typing import Any

import pytest
from wsproto import events as wse
from wsproto.connection import Connection, ConnectionType
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import XorMaskerSimple

from kyoukai.protocol.ws.deflate import DeflateParameters
from kyoukai.protocol.ws.handshake import (
    HandshakeRejection,
    WebSocketOffer,
    accept_headers,
    check_connect_request,
    check_upgrade_request,
    negotiate_deflate,
)
from kyoukai.protocol.ws.session import (
    Closed,
    Failed,
    Message,
    PeerClosed,
    SessionClosedError,
    WebSocketSession,
)
from kyoukai.protocol.ws.settings import MiB, WebSocketSettings

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Peer:
    """A session and the wsproto client talking to it."""

    def __init__(self, deflate_offer: str | None = None, **settings: Any) -> None:
        self.clock = FakeClock()
        client_extensions: list[Extension] = []
        deflate = None
        if deflate_offer is not None:
            deflate = negotiate_deflate([deflate_offer])
            assert deflate is not None
            extension = PerMessageDeflate()
            extension.finalize(deflate.header_value())
            client_extensions.append(extension)
        self.session = WebSocketSession(WebSocketSettings(**settings), self.clock, deflate=deflate)
        self.client = Connection(ConnectionType.CLIENT, client_extensions)

    def send(self, event: wse.Event) -> list[Any]:
        """The client sends ``event``; the session's events."""
        return self.session.receive_data(self.client.send(event))

    def received(self) -> list[wse.Event]:
        """What the client makes of the bytes the session queued."""
        self.client.receive_data(self.session.data_to_send())
        return list(self.client.events())


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False, rsv2: bool = False, length: int = -1
) -> bytes:
    """A masked frame as a client sends it; ``length`` announces another payload length."""
    length = len(payload) if length < 0 else length
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | (0x20 if rsv2 else 0) | opcode])
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    key = b"\x37\xfa\x21\x3d"
    return head + key + bytes(XorMaskerSimple(key).process(bytearray(payload)))


def close_code_sent(session: WebSocketSession) -> int | None:
    """The code of the Close frame the session queued (``None``: a Close without code)."""
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(session.data_to_send())
    (event,) = list(client.events())
    assert isinstance(event, wse.CloseConnection)
    return None if event.code == 1005 else int(event.code)


def compress(data: bytes, bits: int = 15) -> bytes:
    """A permessage-deflate payload (RFC 7692 section 7.2.1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -bits)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


# messages


def test_text_and_binary_messages_both_ways() -> None:
    peer = Peer()
    assert peer.send(wse.TextMessage("héllo ☃")) == [Message("héllo ☃", sys.getsizeof("héllo ☃"))]
    (message,) = peer.send(wse.BytesMessage(b"\x00\xff"))
    assert message.data == b"\x00\xff"
    peer.session.send_message("réponse")
    peer.session.send_message(b"\x01\x02")
    assert peer.received() == [
        wse.TextMessage("réponse"),
        wse.BytesMessage(b"\x01\x02"),
    ]


def test_empty_messages() -> None:
    peer = Peer()
    assert [m.data for m in peer.send(wse.TextMessage(""))] == [""]
    assert [m.data for m in peer.send(wse.BytesMessage(b""))] == [b""]


def test_fragments_are_reassembled_and_pings_between_them_answered() -> None:
    peer = Peer()
    assert peer.send(wse.TextMessage("frag", message_finished=False)) == []
    assert peer.send(wse.Ping(b"mid")) == []
    assert peer.send(wse.TextMessage("mént", message_finished=False)) == []
    assert [m.data for m in peer.send(wse.TextMessage("s", message_finished=True))] == ["fragménts"]
    assert peer.received() == [wse.Pong(b"mid")]


def test_bytes_split_anywhere_give_the_same_messages() -> None:
    # Fed one byte at a time, wsproto reads some frame headers twice (when the masking key is
    # incomplete): the limits must count each frame once, or these tight budgets would trip.
    peer = Peer(ws_max_control_frames=2, ws_control_frame_rate=0.001, ws_fragment_grace=3, ws_min_fragment_size=1000)
    client = peer.client
    stream = client.send(wse.Ping(b"1")) + client.send(wse.Ping(b"2"))
    stream += client.send(wse.BytesMessage(b"ab", message_finished=False))
    stream += client.send(wse.BytesMessage(b"c" * 300, message_finished=False))
    stream += client.send(wse.BytesMessage(b"d", message_finished=True))
    events = []
    for index in range(len(stream)):
        events += peer.session.receive_data(stream[index : index + 1])
    assert [m.data for m in events] == [b"ab" + b"c" * 300 + b"d"]
    assert peer.received() == [wse.Pong(b"1"), wse.Pong(b"2")]


@pytest.mark.parametrize("kind", ["text", "binary"])
def test_a_message_of_exactly_the_limit_arrives_whole(kind: str) -> None:
    peer = Peer()
    size = 16 * MiB
    payload = ("é" * (size // 2)).encode() if kind == "text" else bytes(range(256)) * (size // 256)
    stream = frame(TEXT if kind == "text" else BINARY, payload)
    events = []
    for start in range(0, len(stream), 256 * 1024):
        events += peer.session.receive_data(stream[start : start + 256 * 1024])
    (message,) = events
    assert message.data == (payload.decode() if kind == "text" else payload)


def test_a_message_over_the_limit_is_refused_at_its_header() -> None:
    peer = Peer(ws_max_message_size=1000)
    header = frame(BINARY, length=1001)[:8]  # 2 bytes, 2 of length, the masking key
    (failed,) = peer.session.receive_data(header)
    assert failed == Failed(1009, "message larger than ws_max_message_size=1000 bytes")
    assert close_code_sent(peer.session) == 1009
    assert peer.session.closed
    assert peer.session.receive_data(b"x" * 1001) == []


def test_a_fragmented_message_over_the_limit_is_refused_at_the_fragment_that_passes_it() -> None:
    peer = Peer(ws_max_message_size=1000)
    assert peer.session.receive_data(frame(TEXT, b"a" * 600, fin=False)) == []
    (failed,) = peer.session.receive_data(frame(CONTINUATION, length=401)[:8])
    assert isinstance(failed, Failed) and failed.code == 1009


def test_a_message_at_the_limit_is_not_refused() -> None:
    peer = Peer(ws_max_message_size=1000)
    stream = frame(TEXT, b"a" * 600, fin=False) + frame(CONTINUATION, b"b" * 400)
    assert [m.data for m in peer.session.receive_data(stream)] == ["a" * 600 + "b" * 400]


# permessage-deflate

OFFERS = [
    "permessage-deflate",
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; client_max_window_bits=9; server_max_window_bits=9",
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    'permessage-deflate; client_max_window_bits="15"',
]


@pytest.mark.parametrize("offer", OFFERS)
def test_deflate_round_trip(offer: str) -> None:
    peer = Peer(offer)
    text = "the same words again and again, " * 200
    for _ in range(3):
        data = peer.client.send(wse.TextMessage(text))
        assert data[0] & 0x40, "the client compressed"
        assert len(data) < len(text) // 4
        assert [m.data for m in peer.session.receive_data(data)] == [text]
        peer.session.send_message(text)
        peer.session.send_message(text.encode())
        wire = peer.session.data_to_send()
        assert wire[0] & 0x40 and len(wire) < len(text) // 2
        peer.client.receive_data(wire)
        assert list(peer.client.events()) == [wse.TextMessage(text), wse.BytesMessage(text.encode())]


def test_deflate_context_takeover_is_used_unless_refused() -> None:
    sizes = {}
    for offer in ("permessage-deflate", "permessage-deflate; server_no_context_takeover"):
        peer = Peer(offer)
        peer.session.send_message("a message that repeats")
        first = len(peer.session.data_to_send())
        peer.session.send_message("a message that repeats")
        sizes[offer] = (first, len(peer.session.data_to_send()))
    assert sizes["permessage-deflate"][1] < sizes["permessage-deflate"][0]
    assert (
        sizes["permessage-deflate; server_no_context_takeover"][1]
        == sizes["permessage-deflate; server_no_context_takeover"][0]
    )


def test_uncompressed_messages_pass_when_deflate_is_agreed() -> None:
    peer = Peer("permessage-deflate")
    assert [m.data for m in peer.session.receive_data(frame(TEXT, b"plain"))] == ["plain"]


def test_a_compressed_message_split_into_fragments() -> None:
    peer = Peer("permessage-deflate")
    payload = compress(b"x" * 5000 + bytes(range(256)))
    stream = frame(BINARY, payload[:5], fin=False, rsv1=True) + frame(PING, b"p")
    stream += frame(CONTINUATION, payload[5:-3], fin=False) + frame(CONTINUATION, payload[-3:])
    assert [m.data for m in peer.session.receive_data(stream)] == [b"x" * 5000 + bytes(range(256))]


def test_a_message_ending_with_a_final_block_is_read_and_the_next_starts_afresh() -> None:
    peer = Peer("permessage-deflate")
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    final = compressor.compress(b"last block") + compressor.flush(zlib.Z_FINISH)
    stream = frame(TEXT, final, rsv1=True) + frame(TEXT, compress(b"next"), rsv1=True)
    assert [m.data for m in peer.session.receive_data(stream)] == ["last block", "next"]


def test_a_compressed_message_over_the_limit_once_inflated() -> None:
    peer = Peer("permessage-deflate", ws_max_message_size=1000)
    assert [m.data for m in peer.session.receive_data(frame(BINARY, compress(b"a" * 1000), rsv1=True))] == [b"a" * 1000]
    (failed,) = peer.session.receive_data(frame(BINARY, compress(b"a" * 1001), rsv1=True))
    assert failed == Failed(1009, "message larger than ws_max_message_size=1000 bytes once inflated")
    assert close_code_sent(peer.session) == 1009


def deflate_bomb(mebibytes: int) -> bytes:
    """``mebibytes`` MiB of zeros as one permessage-deflate payload (about 1 KiB per MiB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    # A full flush forgets the history, so each MiB of zeros compresses to the same bytes.
    mebibyte = compressor.compress(bytes(MiB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return (mebibyte * mebibytes)[:-4]


@pytest.mark.parametrize(("limit", "mebibytes"), [(1 * MiB, 256), (16 * MiB, 1024)])
def test_a_deflate_bomb_is_refused_without_inflating_it(limit: int, mebibytes: int) -> None:
    bomb = frame(BINARY, deflate_bomb(mebibytes), rsv1=True)
    assert len(bomb) < limit  # so the frame header does not give it away
    peer = Peer("permessage-deflate", ws_max_message_size=limit)
    events: list[Any] = []
    tracemalloc.start()
    try:
        for start in range(0, len(bomb), 64 * 1024):
            events += peer.session.receive_data(bomb[start : start + 64 * 1024])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert events == [Failed(1009, f"message larger than ws_max_message_size={limit} bytes once inflated")]
    assert peak < limit + 4 * MiB
    assert close_code_sent(peer.session) == 1009


def test_a_compressed_message_announcing_more_than_the_limit_is_refused_at_its_header() -> None:
    peer = Peer("permessage-deflate", ws_max_message_size=1 * MiB)
    (failed,) = peer.session.receive_data(frame(BINARY, length=MiB + MiB // 1024 + 65, rsv1=True)[:14])
    assert failed == Failed(1009, f"message larger than ws_max_message_size={MiB} bytes")


def test_invalid_compressed_data_fails_with_1007() -> None:
    peer = Peer("permessage-deflate")
    (failed,) = peer.session.receive_data(frame(TEXT, b"\xff\xff\xff\xff", rsv1=True))
    assert failed.code == 1007 and "invalid compressed data" in failed.reason


@pytest.mark.parametrize(
    "stream",
    [
        frame(TEXT, compress(b"ab"), fin=False, rsv1=True) + frame(CONTINUATION, b"", rsv1=True),
        frame(PING, b"", rsv1=True),
    ],
    ids=["continuation", "control"],
)
def test_rsv1_outside_a_message_start_fails_with_1002(stream: bytes) -> None:
    peer = Peer("permessage-deflate")
    (failed,) = peer.session.receive_data(stream)
    assert failed.code == 1002 and "RSV1" in failed.reason


# keepalive and idle time


def test_a_ping_goes_out_when_the_peer_is_quiet_and_an_answer_keeps_it_alive() -> None:
    peer = Peer(ws_ping_interval=20, ws_ping_timeout=5)
    assert peer.session.next_deadline() == 20
    peer.clock.now = 19.9
    assert peer.session.handle_timeout() == []
    assert peer.session.data_to_send() == b""
    peer.clock.now = 20
    assert peer.session.handle_timeout() == []
    assert peer.received() == [wse.Ping(b"")]
    assert peer.session.next_deadline() == 25
    peer.clock.now = 24
    assert peer.send(wse.Pong(b"")) == []
    assert peer.session.next_deadline() == 44
    peer.clock.now = 44
    peer.session.handle_timeout()
    assert peer.received() == [wse.Ping(b"")]


def test_a_dead_peer_is_detected() -> None:
    peer = Peer(ws_ping_interval=20, ws_ping_timeout=5)
    peer.clock.now = 20
    peer.session.handle_timeout()
    peer.received()
    peer.clock.now = 25
    (failed,) = peer.session.handle_timeout()
    assert failed == Failed(1011, "no answer to a ping within ws_ping_timeout=5s: the peer is taken for dead")
    assert close_code_sent(peer.session) == 1011
    assert peer.session.closed and peer.session.next_deadline() is None


def test_any_bytes_from_the_peer_count_as_alive() -> None:
    peer = Peer(ws_ping_interval=20, ws_ping_timeout=5)
    peer.clock.now = 20
    peer.session.handle_timeout()
    peer.clock.now = 22
    peer.send(wse.TextMessage("still here"))
    assert peer.session.next_deadline() == 42


def test_no_timers_when_pings_and_idle_timeout_are_off() -> None:
    peer = Peer(ws_ping_interval=None, ws_idle_timeout=0)
    assert peer.session.next_deadline() is None


def test_idle_timeout_closes_with_1001() -> None:
    peer = Peer(ws_ping_interval=None, ws_idle_timeout=60, ws_close_timeout=5)
    peer.clock.now = 30
    peer.send(wse.TextMessage("hi"))
    peer.clock.now = 80
    peer.session.send_message("back")
    assert peer.session.next_deadline() == 140
    peer.clock.now = 140
    assert peer.session.handle_timeout() == []
    (_, close) = peer.received()
    assert close == wse.CloseConnection(1001, "idle for ws_idle_timeout=60s")
    assert not peer.session.open and not peer.session.closed
    assert peer.session.next_deadline() == 145
    assert peer.session.receive_data(frame(CLOSE, struct.pack("!H", 1001))) == [Closed(1001, "")]


# floods


def test_a_ping_flood_is_answered_up_to_the_budget_then_closed_with_1008() -> None:
    peer = Peer(ws_max_control_frames=100, ws_control_frame_rate=10)
    assert peer.session.receive_data(frame(PING, b"x") * 100) == []
    (failed,) = peer.session.receive_data(frame(PING, b"x"))
    assert failed.code == 1008 and "ws_max_control_frames=100" in failed.reason
    events = peer.received()
    assert events[:-1] == [wse.Pong(b"x")] * 100
    assert events[-1] == wse.CloseConnection(1008, failed.reason[:123])


def test_the_control_budget_refills_with_time() -> None:
    peer = Peer(ws_max_control_frames=10, ws_control_frame_rate=10)
    for _ in range(50):
        assert peer.session.receive_data(frame(PING) * 5 + frame(PONG) * 5) == []
        peer.clock.now += 1
    assert len(peer.received()) == 250


def test_a_tiny_fragment_flood_is_closed_with_1008() -> None:
    peer = Peer(ws_fragment_grace=64, ws_min_fragment_size=256)
    stream = frame(BINARY, b"x", fin=False) + frame(CONTINUATION, b"x", fin=False) * 1000
    (failed,) = peer.session.receive_data(stream)
    assert failed.code == 1008
    assert failed.reason == (
        "a message of 65 fragments averaging under ws_min_fragment_size=256 bytes (ws_fragment_grace=64)"
    )


def test_empty_fragments_forever_are_a_flood_too() -> None:
    peer = Peer()
    (failed,) = peer.session.receive_data(frame(TEXT, fin=False) + frame(CONTINUATION, fin=False) * 100)
    assert failed.code == 1008


def test_many_fragments_of_a_fair_size_are_fine() -> None:
    peer = Peer()
    stream = frame(BINARY, b"a" * 1024, fin=False) + frame(CONTINUATION, b"b" * 1024, fin=False) * 500
    stream += frame(CONTINUATION, b"c")
    (message,) = peer.session.receive_data(stream)
    assert len(message.data) == 1024 * 501 + 1


# closing


def test_the_peers_close_is_echoed_and_ends_the_session() -> None:
    peer = Peer()
    assert peer.send(wse.CloseConnection(4000, "bye")) == [PeerClosed(4000, "bye")]
    assert peer.session.closed and not peer.session.open
    assert peer.received() == [wse.CloseConnection(4000, "")]
    assert peer.session.next_deadline() is None


def test_a_close_without_code_is_answered_without_code() -> None:
    peer = Peer()
    assert peer.session.receive_data(frame(CLOSE)) == [PeerClosed(1005, "")]
    assert peer.session.data_to_send() == b"\x88\x00"


def test_our_close_waits_for_the_peers_and_drops_what_comes_meanwhile() -> None:
    peer = Peer(ws_close_timeout=10)
    peer.session.close(1000, "done")
    assert peer.received() == [wse.CloseConnection(1000, "done")]
    assert peer.session.receive_data(frame(TEXT, b"late") + frame(PING)) == []
    assert peer.session.data_to_send() == b""
    with pytest.raises(SessionClosedError, match="closing"):
        peer.session.send_message("more")
    peer.session.close(1001)  # a second close does nothing
    assert peer.session.data_to_send() == b""
    assert peer.session.receive_data(frame(CLOSE, struct.pack("!H", 1000))) == [Closed(1000, "")]
    assert peer.session.closed
    with pytest.raises(SessionClosedError, match="closed"):
        peer.session.send_message("more")


def test_our_close_ends_after_the_close_timeout() -> None:
    peer = Peer(ws_close_timeout=10)
    peer.clock.now = 3
    peer.session.close(1000)
    assert peer.session.next_deadline() == 13
    peer.clock.now = 13
    assert peer.session.handle_timeout() == [Closed(1006, "no Close from the peer within ws_close_timeout=10s")]
    assert peer.session.closed


def test_the_peers_end_without_close_is_1006() -> None:
    peer = Peer()
    assert peer.session.receive_data(None) == [PeerClosed(1006, "the peer ended without a Close frame")]
    assert peer.session.data_to_send() == b""
    closing = Peer()
    closing.session.close()
    assert closing.session.receive_data(None) == [Closed(1006, "the peer ended without answering our Close")]


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1010, 1014, 1015, 2999, 5000])
def test_close_codes_that_may_not_be_sent(code: int) -> None:
    with pytest.raises(ValueError, match=f"close code {code} may not be sent"):
        Peer().session.close(code)


@pytest.mark.parametrize("code", [1000, 1001, 1008, 1011, 1013, 3000, 4999])
def test_close_codes_that_may_be_sent(code: int) -> None:
    peer = Peer()
    peer.session.close(code)
    assert close_code_sent(peer.session) == code


def test_a_peer_that_reads_nothing_is_dropped_after_the_send_timeout() -> None:
    peer = Peer(ws_send_timeout=30, ws_ping_interval=None)
    peer.session.send_message(b"x" * 1000)
    peer.clock.now = 5
    peer.session.pause_output()
    assert peer.session.next_deadline() == 35
    peer.clock.now = 35
    assert peer.session.handle_timeout() == [Failed(1006, "the peer read nothing for ws_send_timeout=30s")]
    assert peer.session.data_to_send() == b""


def test_output_resumed_in_time_keeps_the_session() -> None:
    peer = Peer(ws_send_timeout=30, ws_ping_interval=None)
    peer.session.pause_output()
    peer.clock.now = 29
    peer.session.resume_output()
    peer.clock.now = 40
    assert peer.session.handle_timeout() == [] and peer.session.open


# protocol errors


def test_invalid_utf8_fails_with_1007() -> None:
    peer = Peer()
    (failed,) = peer.session.receive_data(frame(TEXT, b"ok \xff"))
    assert failed.code == 1007
    assert close_code_sent(peer.session) == 1007


def test_utf8_split_between_fragments_is_fine_but_a_truncated_one_is_not() -> None:
    snowman = "☃".encode()
    peer = Peer()
    stream = frame(TEXT, snowman[:1], fin=False) + frame(CONTINUATION, snowman[1:])
    assert [m.data for m in peer.session.receive_data(stream)] == ["☃"]
    (failed,) = peer.session.receive_data(frame(TEXT, snowman[:2]))
    assert failed.code == 1007


def test_invalid_utf8_in_a_compressed_message_fails_with_1007() -> None:
    peer = Peer("permessage-deflate")
    (failed,) = peer.session.receive_data(frame(TEXT, compress(b"\xc3\x28"), rsv1=True))
    assert failed.code == 1007


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (frame(0x3, b"x"), "Invalid opcode 0x3"),
        (frame(TEXT, b"x", rsv2=True), "Reserved bit set unexpectedly"),
        (frame(TEXT, b"x", rsv1=True), "Reserved bit set unexpectedly"),
        (bytes([0x81, 0x01]) + b"x", "server received unexpected unmasked frame"),
        (frame(PING, b"x", fin=False), "Invalid attempt to fragment control frame"),
        (frame(CONTINUATION, b"x"), "unexpected CONTINUATION"),
        (frame(TEXT, b"x", fin=False) + frame(TEXT, b"y"), "expected CONTINUATION"),
        (frame(CLOSE, b"\x03"), "CLOSE with 1 byte payload"),
        (frame(CLOSE, struct.pack("!H", 1006)), "remote CLOSE with local-only reason"),
    ],
)
def test_protocol_errors_fail_with_1002(stream: bytes, reason: str) -> None:
    peer = Peer()
    (failed,) = peer.session.receive_data(stream)
    assert failed.code == 1002 and reason in failed.reason
    assert close_code_sent(peer.session) == 1002
    assert peer.session.closed


# backpressure


def test_unread_messages_are_counted_until_consumed() -> None:
    peer = Peer(ws_buffer_size=1000)
    messages = peer.session.receive_data(frame(BINARY, b"x" * 400) * 2)
    assert peer.session.buffered_bytes == sum(m.size for m in messages) >= 800
    assert not peer.session.should_pause_reading()
    messages += peer.session.receive_data(frame(TEXT, b"y" * 400))
    assert peer.session.should_pause_reading()
    for message in messages:
        peer.session.message_consumed(message)
    assert peer.session.buffered_bytes == 0 and not peer.session.should_pause_reading()


def test_empty_messages_count_too() -> None:
    peer = Peer(ws_buffer_size=10_000)
    peer.session.receive_data(frame(BINARY) * 1000)
    assert peer.session.should_pause_reading()


def test_a_message_larger_than_the_buffer_still_arrives() -> None:
    peer = Peer(ws_buffer_size=1000)
    stream = frame(BINARY, b"z" * 5000)
    assert peer.session.receive_data(stream[:3000]) == []
    assert not peer.session.should_pause_reading()
    (message,) = peer.session.receive_data(stream[3000:])
    assert len(message.data) == 5000 and peer.session.should_pause_reading()


# the opening handshake, HTTP/1.1

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3
BROWSER = [
    ("Host", "example.com"),
    ("Connection", "keep-alive, Upgrade"),
    ("Upgrade", "WebSocket"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Protocol", "chat.v2, chat"),
    ("sec-websocket-protocol", "superchat"),
    ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits, x-webkit-deflate-frame"),
]


def replace(headers: list[tuple[str, str]], name: str, value: str | None) -> list[tuple[str, str]]:
    """``headers`` without the fields named ``name``, plus ``name: value`` unless ``value`` is ``None``."""
    kept = [(n, v) for n, v in headers if n.lower() != name.lower()]
    return kept if value is None else [*kept, (name, value)]


def test_a_browser_upgrade_is_read() -> None:
    offer = check_upgrade_request("GET", BROWSER)
    assert offer == WebSocketOffer(
        KEY,
        ("chat.v2", "chat", "superchat"),
        ("permessage-deflate; client_max_window_bits", "x-webkit-deflate-frame"),
        http2=False,
    )


UPGRADE_REJECTIONS = [
    (
        "GET",
        replace(BROWSER, "Upgrade", None),
        "1.1",
        HandshakeRejection(
            426,
            "This resource speaks WebSocket only: send a GET with 'Upgrade: websocket' (RFC 6455).",
            (("Upgrade", "websocket"), ("Connection", "Upgrade")),
        ),
    ),
    (
        "GET",
        replace(BROWSER, "Upgrade", "h2c"),
        "1.1",
        HandshakeRejection(
            426,
            "This resource speaks WebSocket only: send a GET with 'Upgrade: websocket' (RFC 6455).",
            (("Upgrade", "websocket"), ("Connection", "Upgrade")),
        ),
    ),
    (
        "POST",
        BROWSER,
        "1.1",
        HandshakeRejection(405, "A WebSocket handshake is a GET request, not POST.", (("Allow", "GET"),)),
    ),
    ("GET", BROWSER, "1.0", HandshakeRejection(400, "A WebSocket handshake needs HTTP/1.1, not HTTP/1.0.")),
    (
        "GET",
        replace(BROWSER, "Connection", "keep-alive"),
        "1.1",
        HandshakeRejection(400, "The Connection header of a WebSocket handshake must list 'upgrade'."),
    ),
    (
        "GET",
        replace(BROWSER, "Sec-WebSocket-Version", "8"),
        "1.1",
        HandshakeRejection(
            426,
            "Sec-WebSocket-Version must be 13 (RFC 6455), not 8.",
            (("Sec-WebSocket-Version", "13"),),
        ),
    ),
    (
        "GET",
        replace(BROWSER, "Sec-WebSocket-Version", None),
        "1.1",
        HandshakeRejection(
            426,
            "Sec-WebSocket-Version must be 13 (RFC 6455), not none.",
            (("Sec-WebSocket-Version", "13"),),
        ),
    ),
    (
        "GET",
        replace(BROWSER, "Sec-WebSocket-Key", None),
        "1.1",
        HandshakeRejection(400, "Sec-WebSocket-Key must be one base64-encoded 16-byte value, not none."),
    ),
    (
        "GET",
        replace(BROWSER, "Sec-WebSocket-Key", "c2hvcnQ="),
        "1.1",
        HandshakeRejection(400, "Sec-WebSocket-Key must be one base64-encoded 16-byte value, not 'c2hvcnQ='."),
    ),
    (
        "GET",
        replace(BROWSER, "Sec-WebSocket-Key", "not base64 at all!!!!!!"),
        "1.1",
        HandshakeRejection(
            400, "Sec-WebSocket-Key must be one base64-encoded 16-byte value, not 'not base64 at all!!!!!!'."
        ),
    ),
    (
        "GET",
        [*BROWSER, ("Sec-WebSocket-Key", KEY)],
        "1.1",
        HandshakeRejection(400, "Sec-WebSocket-Key must be one base64-encoded 16-byte value, not 2 of them."),
    ),
    (
        "GET",
        replace(BROWSER, "Sec-WebSocket-Protocol", "chat, a b"),
        "1.1",
        HandshakeRejection(400, "Sec-WebSocket-Protocol offers 'a b', which is not a token (RFC 6455 section 4.1)."),
    ),
]


@pytest.mark.parametrize(
    ("method", "headers", "version", "rejection"),
    UPGRADE_REJECTIONS,
    ids=[
        "no-upgrade",
        "other-upgrade",
        "post",
        "http10",
        "no-connection-upgrade",
        "version-8",
        "no-version",
        "no-key",
        "short-key",
        "not-base64-key",
        "two-keys",
        "bad-subprotocol",
    ],
)
def test_upgrade_rejections(
    method: str, headers: list[tuple[str, str]], version: str, rejection: HandshakeRejection
) -> None:
    assert check_upgrade_request(method, headers, version) == rejection


def test_the_accept_response_of_http11() -> None:
    offer = check_upgrade_request("GET", BROWSER)
    assert isinstance(offer, WebSocketOffer)
    deflate = negotiate_deflate(offer.extensions)
    assert accept_headers(offer, subprotocol="chat", deflate=deflate) == (
        101,
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ("Sec-WebSocket-Protocol", "chat"),
            ("Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
        ],
    )
    assert accept_headers(offer) == (101, accept_headers(offer, subprotocol="chat")[1][:3])


def test_a_subprotocol_not_offered_is_refused() -> None:
    offer = check_upgrade_request("GET", BROWSER)
    assert isinstance(offer, WebSocketOffer)
    with pytest.raises(ValueError, match=r"subprotocol 'Chat' was not offered .* \['chat.v2', 'chat', 'superchat'\]"):
        accept_headers(offer, subprotocol="Chat")


# the opening handshake, HTTP/2 (RFC 8441)

CONNECT = [
    (b":method", b"CONNECT"),
    (b":protocol", b"websocket"),
    (b":scheme", b"https"),
    (b":path", b"/chat"),
    (b":authority", b"example.com"),
    (b"sec-websocket-version", b"13"),
    (b"sec-websocket-protocol", b"chat, superchat"),
    (b"sec-websocket-extensions", b"permessage-deflate"),
]


def replace_h2(name: bytes, value: bytes | None) -> list[tuple[bytes, bytes]]:
    kept = [(n, v) for n, v in CONNECT if n != name]
    return kept if value is None else [*kept, (name, value)]


def test_an_extended_connect_is_read_and_accepted() -> None:
    offer = check_connect_request(CONNECT)
    assert offer == WebSocketOffer(None, ("chat", "superchat"), ("permessage-deflate",), http2=True)
    assert accept_headers(offer, subprotocol="superchat", deflate=DeflateParameters()) == (
        200,
        [
            ("sec-websocket-protocol", "superchat"),
            ("sec-websocket-extensions", "permessage-deflate; server_max_window_bits=12"),
        ],
    )
    assert accept_headers(offer) == (200, [])


@pytest.mark.parametrize(
    ("headers", "rejection"),
    [
        (
            replace_h2(b":method", b"GET"),
            HandshakeRejection(400, "A WebSocket over HTTP/2 opens with an extended CONNECT (RFC 8441), not GET."),
        ),
        (
            replace_h2(b":protocol", None),
            HandshakeRejection(400, "A CONNECT without :protocol does not open a WebSocket (RFC 8441)."),
        ),
        (
            replace_h2(b":protocol", b"webtransport"),
            HandshakeRejection(400, ":protocol must be 'websocket', not 'webtransport'."),
        ),
        (
            replace_h2(b":path", None),
            HandshakeRejection(
                400, "An extended CONNECT needs :scheme, :path and :authority (RFC 8441); missing :path."
            ),
        ),
        (
            [(n, v) for n, v in CONNECT if n not in (b":scheme", b":authority")],
            HandshakeRejection(
                400, "An extended CONNECT needs :scheme, :path and :authority (RFC 8441); missing :scheme, :authority."
            ),
        ),
        (
            replace_h2(b"sec-websocket-version", b"8"),
            HandshakeRejection(
                400, "sec-websocket-version must be 13 (RFC 6455), not 8.", (("sec-websocket-version", "13"),)
            ),
        ),
        (
            replace_h2(b"sec-websocket-version", None),
            HandshakeRejection(
                400, "sec-websocket-version must be 13 (RFC 6455), not none.", (("sec-websocket-version", "13"),)
            ),
        ),
        (
            replace_h2(b"sec-websocket-protocol", b"ok, not/ok"),
            HandshakeRejection(
                400, "Sec-WebSocket-Protocol offers 'not/ok', which is not a token (RFC 6455 section 4.1)."
            ),
        ),
    ],
    ids=[
        "get",
        "no-protocol",
        "other-protocol",
        "no-path",
        "no-scheme-authority",
        "version-8",
        "no-version",
        "bad-sub",
    ],
)
def test_connect_rejections(headers: list[tuple[bytes, bytes]], rejection: HandshakeRejection) -> None:
    assert check_connect_request(headers) == rejection


# permessage-deflate negotiation

NEGOTIATIONS = [
    (["permessage-deflate"], "permessage-deflate; server_max_window_bits=12"),
    (
        ["permessage-deflate; client_max_window_bits"],
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
    ),
    (
        ["permessage-deflate; client_max_window_bits=10"],
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10",
    ),
    (
        ["permessage-deflate; client_max_window_bits=8"],
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=8",
    ),
    (["permessage-deflate; server_max_window_bits=10"], "permessage-deflate; server_max_window_bits=10"),
    (["permessage-deflate; server_max_window_bits=15"], "permessage-deflate; server_max_window_bits=12"),
    (['permessage-deflate; server_max_window_bits="9"'], "permessage-deflate; server_max_window_bits=9"),
    (
        ["permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12",
    ),
    (["x-webkit-deflate-frame", "permessage-deflate"], "permessage-deflate; server_max_window_bits=12"),
    # declined offers, and a fallback after one
    (["permessage-deflate; server_max_window_bits=8"], None),
    (
        ["permessage-deflate; server_max_window_bits=8", "permessage-deflate; client_max_window_bits"],
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
    ),
    (["permessage-deflate; server_max_window_bits"], None),
    (["permessage-deflate; server_max_window_bits=16"], None),
    (["permessage-deflate; client_max_window_bits=08"], None),
    (["permessage-deflate; client_max_window_bits=x"], None),
    (["permessage-deflate; server_no_context_takeover=1"], None),
    (["permessage-deflate; server_no_context_takeover; server_no_context_takeover"], None),
    (["permessage-deflate; unknown_parameter"], None),
    (["permessage-deflate;"], None),
    (["x-webkit-deflate-frame"], None),
    ([], None),
]


@pytest.mark.parametrize(("offers", "response"), NEGOTIATIONS)
def test_deflate_negotiation(offers: list[str], response: str | None) -> None:
    agreed = negotiate_deflate(offers)
    assert (agreed.header_value() if agreed is not None else None) == response


def test_offers_are_split_from_the_header_as_sent() -> None:
    headers = replace(
        BROWSER, "Sec-WebSocket-Extensions", 'permessage-deflate; server_max_window_bits="8", foo; a="x,y"'
    )
    offer = check_upgrade_request("GET", [*headers, ("Sec-WebSocket-Extensions", "permessage-deflate")])
    assert isinstance(offer, WebSocketOffer)
    assert offer.extensions == (
        'permessage-deflate; server_max_window_bits="8"',
        'foo; a="x,y"',
        "permessage-deflate",
    )
    agreed = negotiate_deflate(offer.extensions)
    assert agreed is not None and agreed.header_value() == "permessage-deflate; server_max_window_bits=12"


def test_a_client_limited_to_8_bits_is_read() -> None:
    # zlib-based clients cannot make 8-bit streams and use 9 bits instead (zlib refuses 8 here,
    # older versions silently gave 9): the session's decompressor must read that.
    deflate = negotiate_deflate(["permessage-deflate; client_max_window_bits=8"])
    assert deflate is not None and deflate.client_max_window_bits == 8
    session = WebSocketSession(WebSocketSettings(), FakeClock(), deflate=deflate)
    data = (bytes(range(256)) + b"x" * 44) * 40  # repeats every 300 bytes: past an 8-bit window
    stream = frame(BINARY, compress(data, bits=9), rsv1=True)
    events = []
    for start in range(0, len(stream), 20):
        events += session.receive_data(stream[start : start + 20])
    assert [m.data for m in events] == [data]
