"""
Properties of the WebSocket session under random clients (hypothesis): messages come out the
same however the bytes are split, sizes are enforced exactly, and arbitrary bytes end in one
orderly failure, never an exception.
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from wsproto import events as wse
from wsproto.connection import Connection, ConnectionType
from wsproto.extensions import Extension, PerMessageDeflate

from kyoukai.protocol.ws.handshake import negotiate_deflate
from kyoukai.protocol.ws.session import Closed, Failed, Message, PeerClosed, WebSocketSession
from kyoukai.protocol.ws.settings import WebSocketSettings

LIMIT = 4096
#: A message: its data and where it is cut into fragments.
messages = st.lists(
    st.tuples(
        st.one_of(st.text(max_size=300), st.binary(max_size=LIMIT + 50)),
        st.lists(st.integers(min_value=0, max_value=LIMIT + 50), max_size=4),
    ),
    max_size=6,
)
offers = st.sampled_from(
    [None, "permessage-deflate", "permessage-deflate; client_no_context_takeover; server_max_window_bits=9"]
)


def session_and_client(offer: str | None) -> tuple[WebSocketSession, Connection]:
    deflate = negotiate_deflate([offer]) if offer is not None else None
    client_extensions: list[Extension] = []
    if deflate is not None:
        extension = PerMessageDeflate()
        extension.finalize(deflate.header_value())
        client_extensions.append(extension)
    session = WebSocketSession(WebSocketSettings(ws_max_message_size=LIMIT), lambda: 0.0, deflate=deflate)
    return session, Connection(ConnectionType.CLIENT, client_extensions)


def client_bytes(client: Connection, message: str | bytes, cuts: list[int]) -> bytes:
    """``message`` sent by ``client`` in fragments cut at ``cuts``, a ping after the first."""
    bounds = sorted({0, len(message), *(cut for cut in cuts if cut < len(message))})
    pieces = [message[start:end] for start, end in zip(bounds, bounds[1:], strict=False)] or [message]
    out = b""
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        event = (
            wse.TextMessage(piece, message_finished=last)
            if isinstance(piece, str)
            else wse.BytesMessage(piece, message_finished=last)
        )
        out += client.send(event)
        if index == 0 and not last:
            out += client.send(wse.Ping(b"between"))
    return out


def size_of(message: str | bytes) -> int:
    return len(message.encode()) if isinstance(message, str) else len(message)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(messages, offers, st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=30))
def test_messages_come_out_whole_and_in_order_however_the_bytes_are_split(
    sent: list[tuple[str | bytes, list[int]]], offer: str | None, splits: list[int]
) -> None:
    session, client = session_and_client(offer)
    stream = b"".join(client_bytes(client, message, cuts) for message, cuts in sent)
    events: list[Any] = []
    position = 0
    index = 0
    while position < len(stream):
        step = splits[index % len(splits)]
        events += session.receive_data(stream[position : position + step])
        position += step
        index += 1
    expected: list[str | bytes] = []
    for message, _ in sent:
        if size_of(message) > LIMIT:
            assert events[len(expected) :] == [Failed(1009, events[-1].reason)]
            assert "ws_max_message_size=4096" in events[-1].reason
            break
        expected.append(message)
    else:
        assert [e.data for e in events] == expected
        assert all(isinstance(e, Message) for e in events)


def server_opcodes(data: bytes) -> list[int]:
    """The opcodes of the server's frames in ``data`` (unmasked control frames, as sent here)."""
    opcodes, pos = [], 0
    while pos < len(data):
        opcodes.append(data[pos] & 0x0F)
        length = data[pos + 1] & 0x7F
        assert length < 126, "a control frame's payload is at most 125 bytes"
        pos += 2 + length
    return opcodes


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=400), offers, st.integers(min_value=1, max_value=64))
# A Ping, then a frame with reserved bits: a Pong goes out before the Close.
@example(garbage=b"\x89\x80\x00\x00\x00\x00\xc1\x80", offer=None, step=1)
def test_arbitrary_bytes_end_in_one_orderly_failure(garbage: bytes, offer: str | None, step: int) -> None:
    session, client = session_and_client(offer)
    stream = client.send(wse.TextMessage("hello")) + garbage
    events: list[Any] = []
    for start in range(0, len(stream), step):
        events += session.receive_data(stream[start : start + step])
    events += session.receive_data(None)
    assert events[0] == Message("hello", events[0].size)
    ends = [e for e in events if not isinstance(e, Message)]
    assert len(ends) == 1 and events[-1] is ends[0]
    assert session.closed and session.next_deadline() is None
    end = ends[0]
    if isinstance(end, Failed):
        assert end.code in (1002, 1007, 1008, 1009)
        # The Close, after the Pongs owed to the Pings that came before the error.
        opcodes = server_opcodes(session.data_to_send())
        assert opcodes[-1] == 0x8 and all(opcode == 0xA for opcode in opcodes[:-1]), opcodes
    else:
        assert isinstance(end, PeerClosed | Closed)
