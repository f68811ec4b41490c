"""
Properties of the HTTP/2 core under random but well-formed clients and apps (hypothesis).

Each example is a list of actions: the client opens streams (GET, or POST with a body), sends
request bodies, opens its windows, changes its SETTINGS and resets streams; the app answers
(a whole body or chunks, with or without trailers), finishes or abandons streams and returns
body credit; the server writes in batches of random size; time passes. After every action the
bytes the server sent are checked against what the client allowed, and the events against
what the app did. At the end the client reads everything and opens its windows, the app
finishes every stream, and the core must have forgotten them all.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import h2.events
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from test_h2_core import DEFAULT_WINDOW, GET, OK, FakeClock, body_of, post

from kyoukai.protocol import events as ev
from kyoukai.protocol.h2 import compat
from kyoukai.protocol.h2.connection import H2ServerConnection
from kyoukai.settings import KiB, ServerSettings

TRAILERS = [("x-checksum", "abc")]


class ServerBytes:
    """
    Reads the server's bytes as frames and checks each against the client's side of the
    protocol, kept here independently of h2: the windows the client allowed (its SETTINGS
    take effect when their ACK arrives, in order), its largest frame size, and the end of each
    stream (nothing after RST_STREAM either way; no HEADERS or DATA after END_STREAM).
    """

    def __init__(self) -> None:
        self._buffer = b""
        self.connection_window = DEFAULT_WINDOW
        self.initial_window = DEFAULT_WINDOW
        self.max_frame_size = 16 * KiB
        self.stream_windows: dict[int, int] = {}
        #: SETTINGS the client sent that no ACK has answered yet, oldest first.
        self.unacked_settings: deque[dict[int, int]] = deque()
        self.ended: set[int] = set()
        self.reset: set[int] = set()
        self.goaway = False

    def opened(self, stream_id: int) -> None:
        self.stream_windows[stream_id] = self.initial_window

    def granted(self, stream_id: int | None, size: int) -> None:
        if stream_id is None:
            self.connection_window += size
        else:
            self.stream_windows[stream_id] += size

    def feed(self, data: bytes) -> list[bytes]:
        """Check the frames that ``data`` completes; their bytes, frame by frame."""
        data = self._buffer + data
        view = memoryview(data)
        frames = []
        while len(view) >= 9:
            frame, length = Frame.parse_frame_header(view[:9])
            if len(view) < 9 + length:
                break
            assert length <= self.max_frame_size, f"a {length}-byte frame past the client's {self.max_frame_size}"
            frame.parse_body(view[9 : 9 + length])
            self._check(frame)
            frames.append(bytes(view[: 9 + length]))
            view = view[9 + length :]
        self._buffer = bytes(view)
        return frames

    def _check(self, frame: Frame) -> None:
        stream_id = frame.stream_id
        if isinstance(frame, SettingsFrame):
            if "ACK" in frame.flags:
                self._settings_acked(self.unacked_settings.popleft())
            return
        if isinstance(frame, GoAwayFrame):
            self.goaway = True
            return
        if not stream_id or isinstance(frame, PriorityFrame):
            return
        assert stream_id not in self.reset, f"{frame} after RST_STREAM on stream {stream_id}"
        if isinstance(frame, RstStreamFrame):
            self.reset.add(stream_id)
            return
        if isinstance(frame, WindowUpdateFrame):
            return
        assert isinstance(frame, (HeadersFrame, ContinuationFrame, DataFrame)), frame
        assert stream_id not in self.ended, f"{frame} after END_STREAM on stream {stream_id}"
        if isinstance(frame, DataFrame):
            size = frame.flow_controlled_length
            self.connection_window -= size
            self.stream_windows[stream_id] -= size
            assert self.connection_window >= 0, f"DATA past the connection window by {-self.connection_window}"
            assert self.stream_windows[stream_id] >= 0, (
                f"DATA past the window of stream {stream_id} by {-self.stream_windows[stream_id]}"
            )
        if "END_STREAM" in frame.flags:
            self.ended.add(stream_id)

    def _settings_acked(self, changes: dict[int, int]) -> None:
        if SettingCodes.INITIAL_WINDOW_SIZE in changes:
            new = changes[SettingCodes.INITIAL_WINDOW_SIZE]
            delta, self.initial_window = new - self.initial_window, new
            for stream_id in self.stream_windows:
                self.stream_windows[stream_id] += delta
        if SettingCodes.MAX_FRAME_SIZE in changes:
            self.max_frame_size = changes[SettingCodes.MAX_FRAME_SIZE]


@dataclass
class ClientStream:
    """A stream as the client sees it."""

    body: bytes = b""
    sent: int = 0
    request_ended: bool = False
    #: The client reset it.
    cancelled: bool = False
    head: list[tuple[str, str]] | None = None
    trailers: list[tuple[str, str]] | None = None
    received: bytearray = field(default_factory=bytearray)
    #: The response ended (END_STREAM), or the server reset the stream (its code).
    ended_by_server: bool = False
    reset_code: int | None = None

    @property
    def receiving(self) -> bool:
        """Its response is still coming."""
        return not self.cancelled and self.reset_code is None and not self.ended_by_server

    @property
    def uploading(self) -> bool:
        """Its request body is still going."""
        return not self.cancelled and self.reset_code is None and not self.request_ended


@dataclass
class AppStream:
    """A stream as the app sees it (and what it sent)."""

    request: bytearray = field(default_factory=bytearray)
    request_ended: bool = False
    unacked: int = 0
    started: bool = False
    body: bytes = b""
    chunks: deque[bytes] = field(default_factory=deque)
    trailers: list[tuple[str, str]] | None = None
    end_with_data: bool = False
    #: Its end (END_STREAM or trailers) is queued.
    end_queued: bool = False
    #: It queued bytes that were not out yet when it looked: it waits for StreamSendable.
    waiting: bool = False
    #: It called finish (``abandoned``: before its response was complete).
    finished: bool = False
    abandoned: bool = False
    #: The core told it the stream is gone.
    closed: bool = False

    @property
    def alive(self) -> bool:
        return not self.finished and not self.closed


class World:
    """One connection: the core, h2's client, the app, the checks."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.core = H2ServerConnection(ServerSettings(), self.clock)
        self.client = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.wire = ServerBytes()
        self.client_streams: dict[int, ClientStream] = {}
        self.app: dict[int, AppStream] = {}
        self.closed = False
        self.client_closed = False
        #: The last MAX_FRAME_SIZE the client asked for.
        self.max_frame_size = 16 * KiB
        self.client.initiate_connection()
        self.wire.unacked_settings.append({})  # the client's first SETTINGS, with the defaults
        self.to_server()
        self.flush()

    # moving bytes

    def to_server(self) -> None:
        data = self.client.data_to_send()
        if data:
            self.absorb(self.core.receive_data(data))

    def flush(self, limit: int = 65536, batches: int | None = None) -> None:
        """The server writes (``batches`` batches of ``limit`` bytes, or until it has nothing); the client reads."""
        count = 0
        while batches is None or count < batches:
            out = self.core.data_to_send(limit)
            self.absorb(self.core.take_events())
            if not out:
                break
            self.deliver(b"".join(out))
            count += 1
        self.absorb(self.core.take_events())

    def deliver(self, data: bytes) -> None:
        # h2's client, one frame at a time: it takes the frame size limit for a whole read from
        # the settings in force at its start, so a SETTINGS ACK that raises it would not count
        # for the frames after it in the same read.
        for frame in self.wire.feed(data):
            if not self.client_closed:
                self._client_reads(frame)

    def _client_reads(self, frame: bytes) -> None:
        for event in self.client.receive_data(frame):
            stream = self.client_streams.get(getattr(event, "stream_id", 0) or 0)
            if isinstance(event, h2.events.ResponseReceived):
                assert stream is not None and stream.head is None
                stream.head = list(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                assert stream is not None
                stream.received += event.data
            elif isinstance(event, h2.events.TrailersReceived):
                assert stream is not None
                stream.trailers = list(event.headers)
            elif isinstance(event, h2.events.StreamEnded):
                assert stream is not None
                stream.ended_by_server = True
            elif isinstance(event, h2.events.StreamReset):
                assert stream is not None
                stream.reset_code = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.client_closed = True
        if not self.client_closed:
            self.to_server()  # its SETTINGS and PING ACKs

    # what the core tells the app

    def absorb(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, ev.ConnectionClosed):
                assert not self.closed, "ConnectionClosed twice"
                self.closed = True
                continue
            stream_id = event.stream_id
            app = self.app.get(stream_id)
            if isinstance(event, ev.RequestReceived):
                assert app is None, f"RequestReceived twice for stream {stream_id}"
                assert stream_id in self.client_streams
                self.app[stream_id] = AppStream(request_ended=event.ended)
                continue
            assert app is not None, f"{event} for a stream the app never saw"
            if isinstance(event, ev.StreamSendable):
                app.waiting = False
                continue
            assert app.alive, f"{event} after the stream ended for the app (finished={app.finished})"
            if isinstance(event, ev.StreamClosed):
                app.closed = True
            elif isinstance(event, ev.RequestData):
                assert not app.request_ended
                app.request += event.data
                app.unacked += len(event.data)
            elif isinstance(event, ev.RequestEnded):
                app.request_ended = True
                assert bytes(app.request) == self.client_streams[stream_id].body
            else:
                raise AssertionError(f"unexpected {event}")

    # the client's actions

    def open(self, method: str, size: int, declare_length: bool) -> None:
        stream_id = self.client.get_next_available_stream_id()
        stream = ClientStream()
        self.client_streams[stream_id] = stream
        self.wire.opened(stream_id)
        if method == "GET":
            stream.request_ended = True
            self.client.send_headers(stream_id, GET, end_stream=True)
        else:
            stream.body = body_of(size, stream_id + 7)
            stream.request_ended = size == 0
            head = post(size if declare_length else None)
            self.client.send_headers(stream_id, head, end_stream=size == 0)
        self.to_server()

    def send_body(self, stream_id: int, size: int) -> None:
        stream = self.client_streams[stream_id]
        size = min(size, len(stream.body) - stream.sent, self.client.local_flow_control_window(stream_id))
        if size <= 0:
            return
        frame_size = self.client.max_outbound_frame_size
        for start in range(stream.sent, stream.sent + size, frame_size):
            piece = stream.body[start : min(start + frame_size, stream.sent + size)]
            ends = start + len(piece) == len(stream.body)
            self.client.send_data(stream_id, piece, end_stream=ends)
        stream.sent += size
        stream.request_ended = stream.sent == len(stream.body)
        self.to_server()

    def grant(self, stream_id: int | None, size: int) -> None:
        self.client.increment_flow_control_window(size, stream_id)
        self.wire.granted(stream_id, size)
        self.to_server()

    def change_settings(self, initial_window: int, max_frame_size: int) -> None:
        # Both settings every time: h2's client applies its pending changes per setting, one
        # per ACK, so SETTINGS frames that named different settings would be applied early.
        changes = {SettingCodes.INITIAL_WINDOW_SIZE: initial_window, SettingCodes.MAX_FRAME_SIZE: max_frame_size}
        self.max_frame_size = max_frame_size
        self.client.update_settings(changes)
        self.wire.unacked_settings.append(changes)
        self.to_server()

    def cancel(self, stream_id: int) -> None:
        # The client reads what the server has written first: frames already on their way when
        # a RST_STREAM arrives are allowed (RFC 9113 section 5.1), those made after it are not.
        self.flush()
        stream = self.client_streams[stream_id]
        if self.client_closed or not (stream.receiving or stream.uploading):
            return
        stream.cancelled = True
        self.client.reset_stream(stream_id, ErrorCodes.CANCEL)
        data = self.client.data_to_send()
        self.absorb(self.core.receive_data(data))
        self.wire.reset.add(stream_id)

    # the app's actions

    def respond(self, stream_id: int, size: int, mode: str, pieces: int) -> None:
        app = self.app[stream_id]
        app.started = True
        app.body = body_of(size, stream_id)
        if mode == "whole":
            assert self.core.send_response(stream_id, OK, app.body)
            app.end_queued = True
            self._look_at_pending(stream_id)
            return
        assert self.core.send_response(stream_id, OK)
        step = -(-size // pieces) if size else 1
        app.chunks = deque(app.body[start : start + step] for start in range(0, size, step))
        app.trailers = TRAILERS if mode == "trailers" else None
        app.end_with_data = mode == "data-end" and bool(app.chunks)
        self.send_next(stream_id)

    def send_next(self, stream_id: int) -> None:
        app = self.app[stream_id]
        if app.chunks:
            chunk = app.chunks.popleft()
            last = not app.chunks and app.end_with_data
            assert self.core.send_data(stream_id, chunk, end_stream=last)
            app.end_queued = last
        else:
            assert self.core.end_stream(stream_id, app.trailers)
            app.end_queued = True
        self._look_at_pending(stream_id)

    def _look_at_pending(self, stream_id: int) -> None:
        pending = self.core.pending(stream_id)
        assert pending is not None, "the core forgot a stream it did not close"
        self.app[stream_id].waiting = pending > 0

    def finish(self, stream_id: int) -> None:
        app = self.app[stream_id]
        app.finished = True
        app.abandoned = not app.end_queued
        self.core.finish(stream_id)
        self.absorb(self.core.take_events())

    def acknowledge(self, stream_id: int) -> None:
        app = self.app[stream_id]
        self.core.acknowledge(stream_id, app.unacked)
        app.unacked = 0
        self.absorb(self.core.take_events())

    # time

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        deadline = self.core.next_deadline()
        while deadline is not None and deadline <= self.clock.now:
            self.absorb(self.core.handle_timeout())
            after = self.core.next_deadline()
            # A deadline left in the past would spin the shell's timer.
            assert after is None or after > self.clock.now, (deadline, after, self.clock.now)
            deadline = after

    # checks

    def check(self) -> None:
        core = self.core
        if self.closed:
            assert core.streams == {}
            return
        alive = {stream_id for stream_id, app in self.app.items() if app.alive}
        unfinished = {stream_id for stream_id, stream in core.streams.items() if not stream.finished}
        assert alive == unfinished, (alive, unfinished)
        assert set(core.scheduler.stalled) <= set(core.streams.values())
        for stream_id, stream in self.client_streams.items():
            if stream.ended_by_server:
                app = self.app[stream_id]
                assert not app.abandoned, f"stream {stream_id} ended normally though the app abandoned it"
                assert stream.head == OK
                assert bytes(stream.received) == app.body, f"stream {stream_id}: the body differs"
                assert stream.trailers == app.trailers

    def client_streams_where(self, condition: str) -> list[int]:
        """The client's streams that are ``receiving``, ``uploading`` or ``open`` (either)."""
        if self.client_closed:
            return []
        return [
            stream_id
            for stream_id, stream in self.client_streams.items()
            if (stream.receiving or stream.uploading if condition == "open" else getattr(stream, condition))
        ]

    def alive_app_streams(self) -> list[int]:
        return [s for s, app in self.app.items() if app.alive] if not self.closed else []

    def settle(self, by_settings: bool = False) -> None:
        """
        The client reads, opens its windows and sends its bodies; the app finishes every stream.
        The streams' windows open by WINDOW_UPDATE, or ``by_settings`` alone (a larger
        INITIAL_WINDOW_SIZE).
        """
        self.core.resume_output()
        for _ in range(500):
            if self.closed:
                return
            for stream_id in self.alive_app_streams():
                app = self.app[stream_id]
                if app.unacked:
                    self.acknowledge(stream_id)
                if not app.started:
                    self.respond(stream_id, 10, "whole", 1)
                elif not app.end_queued and not app.waiting:
                    self.send_next(stream_id)
                elif app.end_queued and not app.waiting:
                    self.finish(stream_id)
            if self.wire.connection_window < 2**20:
                self.grant(None, 2**21 - self.wire.connection_window)
            receiving = self.client_streams_where("receiving")
            if by_settings:
                smallest = min((self.wire.stream_windows[s] for s in receiving), default=2**20)
                if smallest < 2**20 and not self.wire.unacked_settings:
                    self.change_settings(self.wire.initial_window + 2**21 - smallest, self.max_frame_size)
            else:
                for stream_id in receiving:
                    window = self.wire.stream_windows[stream_id]
                    if window < 2**20:
                        self.grant(stream_id, 2**21 - window)
            for stream_id in self.client_streams_where("uploading"):
                self.send_body(stream_id, 1 << 20)
            self.flush()
            for stream_id in self.alive_app_streams():
                if self.app[stream_id].waiting:
                    assert self.core.pending(stream_id), f"stream {stream_id} sent all it had and its app was not told"
            if not self.core.streams and not self.client_streams_where("open"):
                return
        raise AssertionError("the connection did not settle")


def pick(candidates: list[int], index: int) -> int | None:
    return candidates[index % len(candidates)] if candidates else None


def run(world: World, action: tuple) -> None:
    kind, *args = action
    if kind == "flush":
        limit, batches = args
        world.flush(limit, batches)
    elif kind == "advance":
        world.advance(args[0])
    elif kind == "pause":
        if args[0]:
            world.core.pause_output()
        else:
            world.core.resume_output()
    elif world.client_closed or world.closed:
        return
    elif kind == "open":
        world.open(*args)
    elif kind == "settings":
        world.change_settings(*args)
    elif kind == "grant":
        index, size = args
        if index is None:
            world.grant(None, size)
        elif (stream_id := pick(world.client_streams_where("receiving"), index)) is not None:
            world.grant(stream_id, size)
    elif kind == "body":
        index, size = args
        if (stream_id := pick(world.client_streams_where("uploading"), index)) is not None:
            world.send_body(stream_id, size)
    elif kind == "cancel":
        if (stream_id := pick(world.client_streams_where("open"), args[0])) is not None:
            world.cancel(stream_id)
    elif kind == "respond":
        index, size, mode, pieces = args
        waiting = [s for s in world.alive_app_streams() if not world.app[s].started]
        if (stream_id := pick(waiting, index)) is not None:
            world.respond(stream_id, size, mode, pieces)
    elif kind == "continue":
        apps = world.app
        ready = [
            s for s in world.alive_app_streams() if apps[s].started and not (apps[s].end_queued or apps[s].waiting)
        ]
        if (stream_id := pick(ready, args[0])) is not None:
            world.send_next(stream_id)
    elif kind == "finish":
        index, abandon = args
        # Done: its end is queued and the app is not waiting for it to go out (as the shell
        # finishes); abandoned: at any moment (a handler that failed or was cancelled).
        apps = world.app
        done = [s for s in world.alive_app_streams() if abandon or (apps[s].end_queued and not apps[s].waiting)]
        if (stream_id := pick(done, index)) is not None:
            world.finish(stream_id)
    elif kind == "acknowledge":
        if (stream_id := pick(world.alive_app_streams(), args[0])) is not None:
            world.acknowledge(stream_id)
    else:
        raise AssertionError(kind)


index = st.integers(0, 63)
opens = st.tuples(st.just("open"), st.sampled_from(["GET", "POST"]), st.integers(0, 100_000), st.booleans())
uploads = st.tuples(st.just("body"), index, st.integers(1, 70_000))
grants = st.tuples(st.just("grant"), st.none() | index, st.integers(1, 2**20))
settings_changes = st.tuples(
    st.just("settings"),
    st.integers(0, 2**20),
    st.sampled_from([16 * KiB, 16 * KiB + 1, 20_000, 64 * KiB, 2**24 - 1]),
)
cancels = st.tuples(st.just("cancel"), index)
# Bodies that fit the first windows, and bodies several times larger.
body_sizes = st.integers(0, 20_000) | st.integers(60_000, 300_000)
responses = st.tuples(
    st.just("respond"),
    index,
    body_sizes,
    st.sampled_from(["whole", "chunks", "trailers", "data-end"]),
    st.integers(1, 5),
)
continues = st.tuples(st.just("continue"), index)
finishes = st.tuples(st.just("finish"), index, st.booleans())
acknowledgements = st.tuples(st.just("acknowledge"), index)
writes = st.tuples(st.just("flush"), st.sampled_from([1, 100, 16 * KiB, 64 * KiB, 1 << 20]), st.none() | st.just(1))
time_passing = st.tuples(st.just("advance"), st.sampled_from([0.5, 2.0, 6.0, 31.0]))
pauses = st.tuples(st.just("pause"), st.booleans())
# The app's sending and the client's windows come up most often: they are what the core schedules.
actions = st.one_of(
    opens,
    uploads,
    grants,
    grants,
    settings_changes,
    cancels,
    responses,
    responses,
    continues,
    continues,
    finishes,
    acknowledgements,
    writes,
    writes,
    time_passing,
    pauses,
)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    st.sampled_from([0, 1000, DEFAULT_WINDOW, 2**20]) | st.integers(0, 2**20),
    st.lists(opens, min_size=1, max_size=4),
    st.lists(actions, min_size=10, max_size=60),
    st.booleans(),
)
def test_random_clients_and_apps_keep_the_invariants(
    client_window: int, first: list[tuple], then: list[tuple], by_settings: bool
) -> None:
    world = World()
    world.change_settings(client_window, 16 * KiB)
    for action in first + then:
        run(world, action)
        world.check()
    world.settle(by_settings)
    world.check()

    # Every stream the app saw ended for it exactly once (the checks in absorb keep "at most").
    assert all(app.finished or app.closed for app in world.app.values())
    core = world.core
    assert core.streams == {}
    assert not core.scheduler.ready
    assert not core.scheduler.stalled
    if world.closed:
        return
    assert not world.client_streams_where("open")
    for stream_id, app in world.app.items():
        stream = world.client_streams[stream_id]
        if app.abandoned and not stream.cancelled:
            assert stream.reset_code in (ErrorCodes.CANCEL, ErrorCodes.INTERNAL_ERROR), (stream_id, stream.reset_code)

    # One more request, and the core holds nothing of the streams before it.
    world.open("GET", 0, False)
    (last,) = world.alive_app_streams()
    world.settle()
    assert world.client_streams[last].ended_by_server
    assert core.streams == {}
    assert compat.open_stream_count(core.h2) <= 1
    assert core.h2._closed_streams.nbytes <= 40 * KiB  # the ring of closed streams, at its largest
