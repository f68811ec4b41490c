"""
The HTTP/2 core, :class:`~kyoukai.protocol.h2.connection.H2ServerConnection`, driven with bytes
and a fake clock: no socket, no event loop. h2's own client speaks for well-behaved clients (it
raises on a flow-control or frame-size violation by the server); :class:`RawClient`, made of
hyperframe frames and an HPACK codec, sends what h2 refuses to and keeps reading after a GOAWAY.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections import defaultdict
from typing import Any

import h2.events
import hpack
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import InvalidSettingsValueError
from h2.settings import SettingCodes, Settings
from h2client import parse_frames
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from kyoukai.protocol import events as ev
from kyoukai.protocol.h2 import compat
from kyoukai.protocol.h2.connection import DRAIN_PING, DRAIN_PING_TIMEOUT, H2ServerConnection
from kyoukai.protocol.h2.scheduler import QUANTUM
from kyoukai.settings import ServerSettings

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GET = [(":method", "GET"), (":scheme", "https"), (":authority", "example.com"), (":path", "/")]
OK = [(":status", "200"), ("content-type", "text/plain")]
#: A client's windows before any SETTINGS or WINDOW_UPDATE (RFC 9113 section 6.9.2).
DEFAULT_WINDOW = 65535


def post(length: int | None = None) -> list[tuple[str, str]]:
    """A POST head, with a content-length if ``length`` is given."""
    head = [(":method", "POST"), (":scheme", "https"), (":authority", "example.com"), (":path", "/upload")]
    return head if length is None else [*head, ("content-length", str(length))]


def body_of(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that are not all alike (so that a misplaced slice shows)."""
    pattern = bytes((seed + i) % 251 for i in range(251))
    return (pattern * (size // 251 + 1))[:size]


class FakeClock:
    """The core's clock: a float the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def of_type(items: list[Any], kind: type) -> list[Any]:
    return [item for item in items if isinstance(item, kind)]


class Link:
    """
    A core and h2's client, joined by a pipe the test pumps by hand. The client returns no
    flow-control credit unless the test gives it (h2 acknowledges nothing by itself).

    :param client_window: the client's ``SETTINGS_INITIAL_WINDOW_SIZE``, if not the default.
    """

    def __init__(self, clock: FakeClock | None = None, client_window: int | None = None, **settings: Any) -> None:
        self.clock = clock or FakeClock()
        self.core = H2ServerConnection(ServerSettings(**settings), self.clock)
        self.client = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        #: What the core told the app, in order.
        self.events: list[Any] = []
        #: What h2's client made of the server's bytes, in order.
        self.client_events: list[Any] = []
        self.bodies: dict[int, bytearray] = defaultdict(bytearray)
        self.client.initiate_connection()
        if client_window is not None:
            self.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: client_window})
        self.to_server()
        self.to_client()
        self.to_server()

    def to_server(self) -> list[Any]:
        """What the client has to send, into the core; the events that came of it."""
        events = self.core.receive_data(self.client.data_to_send())
        self.events += events
        return events

    def to_client(self, limit: int = 65536) -> list[Any]:
        """
        What the core has to send, into the client; what the client made of it. Like the
        shell, the core is asked for batches of ``limit`` bytes until it has nothing more.
        """
        data = bytearray()
        while batch := self.core.data_to_send(limit):
            data += b"".join(batch)
        self.events += self.core.take_events()
        events = self.client.receive_data(data)
        for event in of_type(events, h2.events.DataReceived):
            self.bodies[event.stream_id] += event.data
        self.client_events += events
        return events

    def request(self, headers: list[tuple[str, str]] = GET, end_stream: bool = True) -> int:
        """Open a stream; its id."""
        stream_id = self.client.get_next_available_stream_id()
        self.client.send_headers(stream_id, headers, end_stream=end_stream)
        self.to_server()
        return stream_id

    def grant(self, stream_id: int | None, size: int) -> None:
        """The client opens a window (``None``: the connection's) by ``size`` bytes."""
        self.client.increment_flow_control_window(size, stream_id)
        self.to_server()

    def resets(self) -> dict[int, int]:
        """The RST_STREAMs the client received: error code by stream id."""
        return {e.stream_id: e.error_code for e in of_type(self.client_events, h2.events.StreamReset)}


class RawClient:
    """
    A client of hyperframe frames and an HPACK codec, for what h2's client will not send
    (malformed requests, frames after its own GOAWAY) or read (frames after the server's).
    """

    def __init__(self, core: H2ServerConnection | None = None, clock: FakeClock | None = None, **settings: Any) -> None:
        self.clock = clock or FakeClock()
        self.core = core or H2ServerConnection(ServerSettings(**settings), self.clock)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.events: list[Any] = []
        #: Every frame the server sent, in order.
        self.frames: list[Frame] = []
        #: The decoded header blocks the server sent, by stream.
        self.heads: dict[int, list[list[tuple[str, str]]]] = defaultdict(list)

    def handshake(self) -> RawClient:
        self.send_bytes(PREFACE + SettingsFrame(0).serialize())
        self.read()
        self.send(SettingsFrame(0, flags=["ACK"]))
        return self

    def send_bytes(self, data: bytes) -> list[Any]:
        events = self.core.receive_data(data)
        self.events += events
        return events

    def send(self, *frames: Frame) -> list[Any]:
        return self.send_bytes(b"".join(frame.serialize() for frame in frames))

    def request(self, stream_id: int, headers: list[tuple[str, str]] = GET, end_stream: bool = True) -> list[Any]:
        flags = ["END_HEADERS", "END_STREAM"] if end_stream else ["END_HEADERS"]
        return self.send(HeadersFrame(stream_id, self.encoder.encode(headers), flags=flags))

    def read(self) -> list[Frame]:
        """The frames the core has to send (every header block decoded, to keep HPACK in step)."""
        data = bytearray()
        while batch := self.core.data_to_send():
            data += b"".join(batch)
        frames = parse_frames(bytes(data))
        self.events += self.core.take_events()
        for frame in frames:
            if isinstance(frame, HeadersFrame):
                headers = self.decoder.decode(frame.data, raw=False)
                self.heads[frame.stream_id].append(list(headers))
        self.frames += frames
        return frames

    def goaways(self) -> list[tuple[int, int]]:
        """``(last_stream_id, error_code)`` of each GOAWAY received."""
        return [(f.last_stream_id, f.error_code) for f in self.frames if isinstance(f, GoAwayFrame)]

    def resets(self) -> dict[int, int]:
        return {f.stream_id: f.error_code for f in self.frames if isinstance(f, RstStreamFrame)}

    def requests_seen(self) -> list[int]:
        return [e.stream_id for e in of_type(self.events, ev.RequestReceived)]


def answer(core: H2ServerConnection, stream_id: int, body: bytes = b"hi") -> None:
    """The app's whole response, then it is done with the stream."""
    assert core.send_response(stream_id, OK, body)
    core.finish(stream_id)


# a request and its response


def test_get_is_answered_and_the_stream_forgotten() -> None:
    link = Link()
    stream_id = link.request()
    received = of_type(link.events, ev.RequestReceived)
    assert received == [ev.RequestReceived(stream_id, [(n.encode(), v.encode()) for n, v in GET], True)]

    link.clock.now += 3.0
    answer(link.core, stream_id)
    link.to_client()

    response = of_type(link.client_events, h2.events.ResponseReceived)
    assert [r.headers for r in response] == [OK]
    assert bytes(link.bodies[stream_id]) == b"hi"
    assert [e.stream_id for e in of_type(link.client_events, h2.events.StreamEnded)] == [stream_id]
    assert link.core.streams == {}
    assert link.core.next_deadline() == link.clock.now + link.core.settings.keep_alive_timeout
    assert not of_type(link.events, ev.StreamClosed)


def test_continuation_header_blocks_are_read() -> None:
    client = RawClient().handshake()
    block = client.encoder.encode([*GET, ("x-long", "v" * 100)])
    client.send(
        HeadersFrame(1, block[:10], flags=["END_STREAM"]),
        ContinuationFrame(1, block[10:], flags=["END_HEADERS"]),
    )
    assert client.requests_seen() == [1]


def test_streamed_body_stays_within_the_client_windows() -> None:
    # The stream's window (20000) and the connection's (65535) each stop the body in turn; the
    # client acknowledges nothing, so what it received is what it allowed.
    link = Link(client_window=20_000)
    stream_id = link.request()
    assert link.core.send_response(stream_id, OK)
    body = body_of(150_000)
    stream_allowed, connection_allowed = 20_000, DEFAULT_WINDOW
    queued = connection_stalls = 0
    for start in range(0, len(body), 40_000):
        chunk = body[start : start + 40_000]
        assert link.core.send_data(stream_id, chunk)
        queued += len(chunk)
        while True:
            link.events.clear()
            link.to_client()
            got = len(link.bodies[stream_id])
            # All it may send, and not a byte more.
            assert got == min(queued, stream_allowed, connection_allowed)
            sendable = ev.StreamSendable(stream_id) in link.events
            if link.core.pending(stream_id) == 0:
                assert sendable
                break
            assert not sendable
            # A closed window stays closed until the client opens it: nothing moves.
            assert link.to_client() == []
            grant = 10_000
            if got == connection_allowed:
                # The stream's window alone moves nothing while the connection's is closed.
                connection_stalls += 1
                link.grant(stream_id, grant)
                stream_allowed += grant
                link.to_client()
                assert len(link.bodies[stream_id]) == got
                link.grant(None, grant)
                connection_allowed += grant
            else:
                link.grant(stream_id, grant)
                stream_allowed += grant
    assert connection_stalls  # each window stopped the body at least once
    assert link.core.end_stream(stream_id)
    link.to_client()
    assert bytes(link.bodies[stream_id]) == body
    assert ev.StreamSendable(stream_id) in link.events
    link.core.finish(stream_id)
    assert link.core.streams == {}


def test_window_update_between_send_data_and_the_pending_check_is_not_lost() -> None:
    link = Link(client_window=0)
    stream_id = link.request()
    assert link.core.send_response(stream_id, OK)
    link.to_client()
    assert link.core.send_data(stream_id, b"x" * 1000)
    link.to_client()
    assert link.core.pending(stream_id) == 1000  # the window is closed: the sender waits
    link.events.clear()

    assert link.core.send_data(stream_id, b"y" * 500)
    link.grant(stream_id, 5000)  # arrives before the sender looks at pending()
    assert link.core.pending(stream_id) == 1500  # nothing goes out inside receive_data
    link.to_client()
    assert link.core.pending(stream_id) == 0
    assert link.events.count(ev.StreamSendable(stream_id)) == 1
    assert bytes(link.bodies[stream_id]) == b"x" * 1000 + b"y" * 500


def test_end_of_stream_is_not_held_back_by_a_closed_connection_window() -> None:
    # An empty DATA frame with END_STREAM (or trailers) costs no window (RFC 9113 section 6.9.1).
    link = Link(client_window=1 << 20)
    stream_id = link.request()
    assert link.core.send_response(stream_id, OK)
    assert link.core.send_data(stream_id, body_of(DEFAULT_WINDOW))
    link.to_client()
    assert link.core.pending(stream_id) == 0  # the connection window is now 0
    assert link.core.end_stream(stream_id)
    link.core.finish(stream_id)
    link.to_client()
    assert of_type(link.client_events, h2.events.StreamEnded)
    assert link.core.streams == {}


def test_streams_share_a_small_connection_window_in_turn() -> None:
    link = Link(client_window=1 << 20)
    stream_ids = [link.request() for _ in range(3)]
    for stream_id in stream_ids:
        assert link.core.send_response(stream_id, OK, body_of(200_000, stream_id))
    totals = [0, 0, 0]
    for _ in range(5):
        link.to_client()
        before, totals = totals, [len(link.bodies[s]) for s in stream_ids]
        assert sum(totals) - sum(before) == DEFAULT_WINDOW  # the connection's window, all of it
        assert all(after > earlier for after, earlier in zip(totals, before, strict=True)), totals
        assert max(totals) - min(totals) <= QUANTUM, totals
        link.grant(None, DEFAULT_WINDOW)


def test_reset_stream_leaves_the_ready_queue() -> None:
    link = Link(client_window=1 << 20)
    first, second = link.request(), link.request()
    assert link.core.send_response(first, OK, body_of(DEFAULT_WINDOW))
    link.core.finish(first)
    link.to_client()
    assert link.core.send_response(second, OK, body_of(1000))
    link.to_client()  # the connection window is closed: the second waits in the queue
    link.client.reset_stream(second)
    link.to_server()
    assert link.core.streams == {}
    assert not link.core.has_output
    assert not link.core.scheduler.ready


def test_trailers_end_the_response() -> None:
    link = Link()
    stream_id = link.request()
    assert link.core.send_response(stream_id, OK)
    assert link.core.send_data(stream_id, b"part")
    assert link.core.end_stream(stream_id, [("x-checksum", "abc")])
    link.to_client()
    kinds = [type(e) for e in link.client_events if getattr(e, "stream_id", None) == stream_id]
    assert kinds == [
        h2.events.ResponseReceived,
        h2.events.DataReceived,
        h2.events.TrailersReceived,
        h2.events.StreamEnded,
    ]
    assert of_type(link.client_events, h2.events.TrailersReceived)[0].headers == [("x-checksum", "abc")]
    assert link.core.pending(stream_id) == 0
    link.core.finish(stream_id)
    assert link.core.streams == {}


def test_informational_response_goes_before_the_final_one() -> None:
    link = Link()
    stream_id = link.request()
    link.core.send_informational(stream_id, 103, [("link", "</style.css>; rel=preload")])
    answer(link.core, stream_id)
    link.to_client()
    informational = of_type(link.client_events, h2.events.InformationalResponseReceived)
    assert [e.headers for e in informational] == [[(":status", "103"), ("link", "</style.css>; rel=preload")]]
    assert [e.headers for e in of_type(link.client_events, h2.events.ResponseReceived)] == [OK]
    assert link.client_events.index(informational[0]) < link.client_events.index(
        of_type(link.client_events, h2.events.ResponseReceived)[0]
    )


# the connection's end


def test_client_goaway_no_error_serves_open_streams_then_closes() -> None:
    link = Link()
    first, second = link.request(), link.request()
    # The GOAWAY goes in behind h2's back, so that its client still opens a stream after it.
    link.events += link.core.receive_data(GoAwayFrame(0, last_stream_id=0, error_code=0).serialize())
    late = link.request()
    link.to_client()
    assert [e.stream_id for e in of_type(link.events, ev.RequestReceived)] == [first, second]
    assert link.resets() == {late: ErrorCodes.REFUSED_STREAM}

    answer(link.core, first)
    link.to_client()
    assert not of_type(link.events, ev.ConnectionClosed)
    answer(link.core, second)
    assert of_type(link.events + link.core.take_events(), ev.ConnectionClosed) == [ev.ConnectionClosed(False)]
    link.to_client()
    assert bytes(link.bodies[first]) == bytes(link.bodies[second]) == b"hi"
    assert [e.error_code for e in of_type(link.client_events, h2.events.ConnectionTerminated)] == [0]
    assert not of_type(link.events, ev.StreamClosed)


def test_client_goaway_with_an_error_ends_the_connection_at_once() -> None:
    link = Link()
    first, second = link.request(), link.request()
    events = link.core.receive_data(GoAwayFrame(0, last_stream_id=0, error_code=ErrorCodes.INTERNAL_ERROR).serialize())
    assert sorted(e.stream_id for e in of_type(events, ev.StreamClosed)) == [first, second]
    assert events[-1] == ev.ConnectionClosed(False)
    assert link.core.streams == {}
    assert link.core.send_response(first, OK, b"late") is False


def test_drain_serves_the_streams_opened_before_the_ping_ack() -> None:
    client = RawClient().handshake()
    client.request(1)
    client.core.start_drain()
    first = client.read()
    assert [type(f) for f in first] == [GoAwayFrame, PingFrame]
    assert client.goaways() == [(2**31 - 1, 0)]
    assert first[1].opaque_data == DRAIN_PING and "ACK" not in first[1].flags

    client.request(3)  # in flight when the client saw the GOAWAY
    assert client.requests_seen() == [1, 3]
    client.send(PingFrame(0, flags=["ACK"], opaque_data=DRAIN_PING))
    client.read()
    assert client.goaways() == [(2**31 - 1, 0), (3, 0)]

    client.request(5)
    client.read()
    assert client.requests_seen() == [1, 3]
    assert client.resets() == {5: ErrorCodes.REFUSED_STREAM}

    answer(client.core, 1)
    client.read()
    assert not of_type(client.events, ev.ConnectionClosed)
    answer(client.core, 3)
    client.read()
    assert of_type(client.events, ev.ConnectionClosed) == [ev.ConnectionClosed(False)]
    assert client.heads[1] == client.heads[3] == [OK]
    assert [f.stream_id for f in client.frames if isinstance(f, DataFrame) and "END_STREAM" in f.flags] == [1, 3]
    assert len(client.goaways()) == 2


def test_drain_fixes_the_last_stream_id_when_the_ping_is_never_acked() -> None:
    client = RawClient().handshake()
    client.request(1)
    client.core.start_drain()
    client.read()
    assert client.core.next_deadline() == client.clock.now + DRAIN_PING_TIMEOUT
    client.clock.now += DRAIN_PING_TIMEOUT
    client.core.handle_timeout()
    client.read()
    assert client.goaways() == [(2**31 - 1, 0), (1, 0)]
    client.request(3)
    client.read()
    assert client.resets() == {3: ErrorCodes.REFUSED_STREAM}
    answer(client.core, 1)
    client.read()
    assert of_type(client.events, ev.ConnectionClosed) == [ev.ConnectionClosed(False)]


# timers


def advance_to_deadline(core: H2ServerConnection, clock: FakeClock) -> list[Any]:
    """Nothing happens just before the core's next deadline; at it, what it did."""
    deadline = core.next_deadline()
    assert deadline is not None
    clock.now = deadline - 0.001
    assert core.handle_timeout() == []
    clock.now = deadline
    return core.handle_timeout()


def test_no_preface_within_header_timeout_is_goaway() -> None:
    clock = FakeClock()
    core = H2ServerConnection(ServerSettings(), clock)
    assert core.next_deadline() == clock.now + core.settings.header_timeout
    assert advance_to_deadline(core, clock) == [ev.ConnectionClosed(False)]
    frames = parse_frames(b"".join(core.data_to_send()))
    assert [(f.last_stream_id, f.error_code) for f in of_type(frames, GoAwayFrame)] == [(0, ErrorCodes.PROTOCOL_ERROR)]


def test_preface_without_settings_within_header_timeout_is_settings_timeout() -> None:
    client = RawClient()
    client.send_bytes(PREFACE)
    assert advance_to_deadline(client.core, client.clock) == [ev.ConnectionClosed(False)]
    client.read()
    assert client.goaways() == [(0, ErrorCodes.SETTINGS_TIMEOUT)]


def test_unfinished_header_block_within_header_timeout_is_goaway() -> None:
    client = RawClient().handshake()
    client.send(HeadersFrame(1, client.encoder.encode(GET), flags=["END_STREAM"]))
    assert advance_to_deadline(client.core, client.clock) == [ev.ConnectionClosed(False)]
    client.read()
    assert client.goaways() == [(0, ErrorCodes.ENHANCE_YOUR_CALM)]


def test_idle_connection_closes_after_keep_alive_timeout() -> None:
    link = Link()
    stream_id = link.request()
    link.clock.now += 7.0
    answer(link.core, stream_id)
    link.to_client()
    assert link.core.next_deadline() == link.clock.now + link.core.settings.keep_alive_timeout
    assert advance_to_deadline(link.core, link.clock) == [ev.ConnectionClosed(False)]
    link.to_client()
    assert [(e.error_code, e.last_stream_id) for e in of_type(link.client_events, h2.events.ConnectionTerminated)] == [
        (ErrorCodes.NO_ERROR, stream_id)
    ]


def test_a_preface_begun_over_http11_is_due_by_the_deadline_it_brings() -> None:
    clock = FakeClock()
    core = H2ServerConnection(ServerSettings(header_timeout=10), clock, preface_deadline=clock.now + 3)
    core.receive_data(b"PRI * HTTP/2.0\r\n")
    assert core.next_deadline() == clock.now + 3
    clock.now += 3
    assert [type(e) for e in core.handle_timeout()] == [ev.ConnectionClosed]


@pytest.mark.parametrize("frame", ["settings", "ping", "window_update"])
def test_control_frames_do_not_keep_an_idle_connection_open(frame: str) -> None:
    """
    Only a request makes a connection busy: a client sending SETTINGS, PING or WINDOW_UPDATE
    every so often, and nothing else, is still closed keep_alive_timeout after its last stream.
    """
    link = Link()
    stream_id = link.request()
    answer(link.core, stream_id)
    link.to_client()
    idle_since = link.clock.now
    timeout = link.core.settings.keep_alive_timeout
    for _ in range(3):
        link.clock.now += timeout / 2
        if frame == "settings":
            link.client.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 10})
        elif frame == "ping":
            link.client.ping(b"12345678")
        else:
            link.client.increment_flow_control_window(1)
        link.to_server()
        link.to_client()
        link.to_server()  # the client's SETTINGS acknowledgement, if any
        assert link.core.next_deadline() == idle_since + timeout
    assert advance_to_deadline(link.core, link.clock) == [ev.ConnectionClosed(False)]


def test_stream_stalled_on_a_closed_window_for_send_timeout_is_cancelled() -> None:
    link = Link()
    other = link.request()
    stalled = link.request()
    assert link.core.send_response(stalled, OK, body_of(100_000))
    stalled_at = link.clock.now
    link.to_client()  # the client's windows are full
    link.clock.now += 1.0
    assert link.core.next_deadline() == stalled_at + link.core.settings.send_timeout
    assert advance_to_deadline(link.core, link.clock) == [ev.StreamClosed(stalled)]
    link.to_client()
    assert link.resets() == {stalled: ErrorCodes.CANCEL}
    assert list(link.core.streams) == [other]
    assert not link.core.scheduler.stalled


def test_request_body_left_after_the_response_is_reset_no_error_after_discard_timeout() -> None:
    link = Link()
    stream_id = link.request(post(1000), end_stream=False)
    link.client.send_data(stream_id, b"a" * 100)
    link.to_server()
    # An early answer (413): the app is done while the client is still uploading.
    assert link.core.send_response(stream_id, [(":status", "413")], b"too large")
    link.core.finish(stream_id)
    link.to_client()
    assert of_type(link.client_events, h2.events.StreamEnded)
    assert list(link.core.streams) == [stream_id]  # the rest of the body is read and thrown away
    link.clock.now += link.core.settings.discard_timeout - 1
    link.client.send_data(stream_id, b"b" * 300)
    link.to_server()
    assert [e.data for e in of_type(link.events, ev.RequestData)] == [b"a" * 100]  # the rest is thrown away
    # discard_timeout is the time allowed without data, from the last frame.
    assert link.core.next_deadline() == link.clock.now + link.core.settings.discard_timeout
    assert advance_to_deadline(link.core, link.clock) == []  # the app had finished: nothing to tell it
    link.to_client()
    assert link.resets() == {stream_id: ErrorCodes.NO_ERROR}
    assert link.core.streams == {}


def test_paused_output_for_send_timeout_aborts_the_connection() -> None:
    link = Link()
    stream_id = link.request()
    link.core.pause_output()
    assert link.core.send_response(stream_id, OK, body_of(30_000))
    assert advance_to_deadline(link.core, link.clock) == [ev.StreamClosed(stream_id), ev.ConnectionClosed(True)]
    assert link.core.closed
    assert link.core.data_to_send() == []


def test_resumed_output_is_not_timed_out() -> None:
    link = Link()
    link.request()
    link.core.pause_output()
    link.core.resume_output()
    assert link.core.next_deadline() is None


# limits


def test_stream_over_max_concurrent_streams_is_refused_alone() -> None:
    client = RawClient(max_concurrent_streams=2).handshake()
    for stream_id in (1, 3, 5):
        client.request(stream_id)
    client.read()
    assert client.requests_seen() == [1, 3]
    assert client.resets() == {5: ErrorCodes.REFUSED_STREAM}
    answer(client.core, 1)
    client.request(7)
    client.read()
    assert client.requests_seen() == [1, 3, 7]
    assert client.goaways() == []


@pytest.mark.parametrize(
    "headers",
    [
        [(":method", "GET"), (":scheme", "https"), (":authority", "example.com"), (":path", "index.html")],
        [*GET, ("X-Upper", "1")],
        [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "example.com"), (":path", "/")],
    ],
    ids=["path-without-slash", "uppercase-name", "duplicate-pseudo-header"],
)
def test_malformed_request_is_a_stream_error(headers: list[tuple[str, str]]) -> None:
    client = RawClient().handshake()
    client.request(1, headers)
    client.request(3)
    client.read()
    assert client.requests_seen() == [3]
    assert client.resets() == {1: ErrorCodes.PROTOCOL_ERROR}
    assert client.goaways() == []


@pytest.mark.parametrize("sent", [5, 15], ids=["short", "long"])
def test_body_not_adding_up_to_content_length_resets_that_stream_only(sent: int) -> None:
    link = Link()
    other = link.request(post(10), end_stream=False)
    bad = link.request(post(10), end_stream=False)
    link.client.send_data(other, b"o" * 4)
    link.client.send_data(bad, b"b" * sent, end_stream=True)
    link.to_server()
    link.client.send_data(other, b"o" * 6, end_stream=True)
    link.to_server()
    assert ev.StreamClosed(bad) in link.events
    assert ev.RequestEnded(bad) not in link.events
    assert ev.RequestEnded(other) in link.events
    answer(link.core, other)
    link.to_client()
    assert link.resets() == {bad: ErrorCodes.PROTOCOL_ERROR}
    assert bytes(link.bodies[other]) == b"hi"
    assert not of_type(link.client_events, h2.events.ConnectionTerminated)
    assert link.core.streams == {}


def test_provoked_resets_end_in_enhance_your_calm() -> None:
    client = RawClient(max_stream_resets=20).handshake()
    malformed = [(":method", "GET"), (":scheme", "https"), (":authority", "example.com"), (":path", "x")]
    for number in range(300):
        client.request(1 + 2 * number, malformed)
        if client.core.closed:
            break
    client.read()
    assert client.core.closed
    assert 20 <= len(client.resets()) < 300
    assert client.goaways()[-1][1] == ErrorCodes.ENHANCE_YOUR_CALM
    assert of_type(client.events, ev.ConnectionClosed) == [ev.ConnectionClosed(False)]
    assert client.requests_seen() == []


def test_client_rapid_reset_ends_in_enhance_your_calm() -> None:
    client = RawClient(max_stream_resets=20).handshake()
    for number in range(300):
        client.request(1 + 2 * number)
        client.send(RstStreamFrame(1 + 2 * number, error_code=ErrorCodes.CANCEL))
        if client.core.closed:
            break
    client.read()
    assert client.goaways()[-1][1] == ErrorCodes.ENHANCE_YOUR_CALM
    closed = [e.stream_id for e in of_type(client.events, ev.StreamClosed)]
    assert closed == client.requests_seen()  # each stream the app saw ended once, by its reset
    assert client.core.streams == {}


# what the connection opens with


def test_http11_request_line_gets_the_505_and_nothing_else() -> None:
    core = H2ServerConnection(ServerSettings(), FakeClock())
    assert core.receive_data(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n") == [ev.ConnectionClosed(False)]
    response = b"".join(core.data_to_send())
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")
    # Only the response: not the server's HTTP/2 preface (SETTINGS, WINDOW_UPDATE) after it.
    assert f"Content-Length: {len(body)}".encode() in head.split(b"\r\n")
    assert b"HTTP/2" in body


@pytest.mark.parametrize(
    ("alpn_h2", "opening"),
    [
        (True, b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
        (True, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
        (False, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
        (False, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"),
    ],
    ids=["http11-after-alpn-h2", "garbage-after-alpn-h2", "garbage", "broken-preface"],
)
def test_an_opening_that_is_not_the_preface_is_protocol_error(alpn_h2: bool, opening: bytes) -> None:
    core = H2ServerConnection(ServerSettings(), FakeClock(), alpn_h2=alpn_h2)
    assert core.receive_data(opening) == [ev.ConnectionClosed(False)]
    frames = parse_frames(b"".join(core.data_to_send()))
    assert [(f.last_stream_id, f.error_code) for f in of_type(frames, GoAwayFrame)] == [(0, ErrorCodes.PROTOCOL_ERROR)]


def test_h2c_upgrade_serves_stream_1() -> None:
    client = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
    settings = client.initiate_upgrade_connection()
    core = H2ServerConnection(ServerSettings(), FakeClock(), upgrade_settings=settings.decode())
    headers = [(n.encode(), v.encode()) for n, v in GET]
    assert core.receive_upgraded_request(headers) == [ev.RequestReceived(1, headers, True)]
    assert core.receive_data(client.data_to_send()) == []
    answer(core, 1)
    events = client.receive_data(b"".join(core.data_to_send()))
    assert [e.headers for e in of_type(events, h2.events.ResponseReceived)] == [OK]
    assert [e.data for e in of_type(events, h2.events.DataReceived)] == [b"hi"]
    assert of_type(events, h2.events.StreamEnded)
    assert core.streams == {}


# memory


def test_an_idle_connection_holds_little_memory() -> None:
    # Past the SETTINGS exchange and before any stream: no deques, rings or tables yet (h2's
    # settings alone held a dozen deques, about 700 bytes each).
    settings = ServerSettings()

    def idle() -> H2ServerConnection:
        core = H2ServerConnection(settings, FakeClock())
        assert core.receive_data(PREFACE + SettingsFrame(0).serialize()) == []
        assert core.data_to_send()  # its SETTINGS, and the ACK of the client's
        assert core.receive_data(SettingsFrame(0, flags=["ACK"]).serialize()) == []
        return core

    idle()  # what the first connection makes once (caches, module state) is not counted
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        cores = [idle() for _ in range(50)]
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert not any(core.closed for core in cores)
    assert grown / len(cores) < 10 * 1024, f"{grown / len(cores):.0f} bytes per idle connection"


def test_compact_settings_answer_as_h2s_own() -> None:
    steps: list[dict[int, int] | None] = [
        {SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20, SettingCodes.MAX_HEADER_LIST_SIZE: 8192},
        None,  # an ACK
        {SettingCodes.MAX_FRAME_SIZE: 20_000},
        {SettingCodes.MAX_FRAME_SIZE: 30_000, 0x99: 7},  # two changes in flight, an unknown setting
        None,
        None,
    ]

    def acknowledged(settings: Settings) -> dict[int, tuple[int | None, int]]:
        return {key: (change.original_value, change.new_value) for key, change in settings.acknowledge().items()}

    def values(settings: Settings) -> dict[int, int | None]:
        return {key: settings.get(key) for key in settings}  # (None: proposed, not in force yet)

    ours, theirs = compat.compact_settings(False), Settings(client=False)
    for step in steps:
        if step is None:
            assert acknowledged(ours) == acknowledged(theirs)
        else:
            ours.update(step)
            theirs.update(step)
        assert values(ours) == values(theirs)
    with pytest.raises(InvalidSettingsValueError):
        ours[SettingCodes.ENABLE_PUSH] = 2
    assert values(ours) == values(theirs)
