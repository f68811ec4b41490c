"""The life of HTTP/2 streams and connections: resets, GOAWAY both ways, lost connections, the
concurrent stream limit, protocol errors and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading

import pytest
from conftest import serve
from h2.errors import ErrorCodes
from h2client import (
    PREFACE,
    Gate,
    H2Client,
    on_loop,
    only_connection,
    read_head,
    stoppable_server,
    upgrade_request,
    wait_on_loop,
)
from hyperframe.frame import (
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from werkzeug.wrappers import Response

from kyoukai import Kyoukai
from kyoukai.asphalt import KyoukaiComponent
from kyoukai.backends.http2 import H2KyoukaiComponent, H2KyoukaiProtocol

pytestmark = pytest.mark.timeout(60)


class Probe:
    """What the handlers of one test saw: the protocol, and whether their code was torn down."""

    def __init__(self) -> None:
        self.protocols: list = []
        self.tasks: list[asyncio.Task] = []
        self.started = threading.Event()
        self.finished = threading.Event()
        self.response_closed = threading.Event()


def make_app(probe: Probe, gate: Gate | None = None) -> Kyoukai:
    app = Kyoukai("h2life")

    @app.route("/")
    async def index(ctx):
        return "index"

    @app.route("/forever")
    async def forever(ctx):
        probe.protocols.append(ctx.proto)
        probe.tasks.append(asyncio.current_task())

        async def body():
            try:
                while True:
                    yield b"x" * 4096
            finally:
                probe.finished.set()

        response = Response(body())
        response.call_on_close(probe.response_closed.set)
        return response

    @app.route("/forever-waiting")
    async def forever_waiting(ctx):
        probe.protocols.append(ctx.proto)
        probe.tasks.append(asyncio.current_task())

        async def body():
            try:
                yield b"first"
                probe.started.set()
                await asyncio.Event().wait()
            finally:
                probe.finished.set()

        response = Response(body())
        response.call_on_close(probe.response_closed.set)
        return response

    @app.route("/hang", methods=["GET", "POST"], stream_body=True)
    async def hang(ctx):
        probe.protocols.append(ctx.proto)
        try:
            probe.started.set()
            await asyncio.Event().wait()
        finally:
            probe.finished.set()

    @app.route("/count", methods=["POST"])
    async def count(ctx):
        return str(len(ctx.request.get_data()))

    @app.route("/gated/<int:n>")
    async def gated(ctx, n: int):
        await gate.wait()
        return f"gated {n}"

    return app


def streams_of(server, protocol) -> int:
    return on_loop(server, lambda: len(protocol.streams))


class TestResets:
    def reset_mid_response(self, path: str) -> tuple[Probe, H2Client]:
        """Reset a streaming response once it has started; wait until its handler task ended."""
        probe = Probe()
        with serve(make_app(probe), H2KyoukaiComponent) as server:
            with H2Client(server.port, auto_ack=False) as client:
                sid = client.request(path)
                stream = client.streams[sid]
                client.read_until(lambda: stream.received > 0)
                client.reset(sid)
                (protocol,) = probe.protocols
                wait_on_loop(server, lambda: not protocol.streams and all(t.done() for t in probe.tasks))
                # Give back the connection credit the reset stream used; the connection serves on.
                client.window_update(0, stream.received)
                after = client.response(client.request("/"))
        assert stream.status == 200 and not stream.ended
        assert after.status == 200
        assert client.goaway is None
        return probe, client

    @pytest.mark.parametrize("path", ["/forever", "/forever-waiting"], ids=["blocked-on-window", "blocked-in-body"])
    def test_reset_mid_response_frees_the_stream_and_closes_the_body(self, path: str) -> None:
        probe, _ = self.reset_mid_response(path)
        assert probe.finished.is_set(), "the handler's body generator was not closed when its stream was reset"
        assert probe.response_closed.is_set(), "Response.close() (call_on_close) did not run after the reset"

    def test_client_reset_of_a_running_handler(self) -> None:
        probe = Probe()
        with serve(make_app(probe), H2KyoukaiComponent) as server:
            with H2Client(server.port) as client:
                sid = client.request("/hang", "POST", end_stream=False)
                assert probe.started.wait(10)
                client.reset(sid)
                assert probe.finished.wait(10), "the handler was not cancelled"
                (protocol,) = probe.protocols
                wait_on_loop(server, lambda: not protocol.streams)
                assert client.response(client.request("/")).status == 200


class TestConnectionEnd:
    def test_client_goaway_lets_open_streams_finish(self) -> None:
        """
        A client's GOAWAY (NO_ERROR) is graceful (RFC 9113 section 6.8): the stream it opened
        before is served to the end, a stream it opens after is refused, then the server
        closes the connection with a GOAWAY of its own.
        """
        probe = Probe()
        gate = Gate()
        with serve(make_app(probe, gate), H2KyoukaiComponent) as server:
            gate.server = server
            with H2Client(server.port) as client:
                sid = client.request("/gated/1")
                assert gate.reached.wait(10)
                client.send_goaway(ErrorCodes.NO_ERROR)
                late = client.request("/")
                client.read_until(lambda: client.streams[late].done)
                assert client.streams[late].reset_code == ErrorCodes.REFUSED_STREAM
                assert not client.eof
                gate.open()
                stream = client.response(sid)
                client.wait_closed()
                wait_on_loop(server, lambda: not server.component.connections)
        assert stream.status == 200 and bytes(stream.data) == b"gated 1"
        assert client.goaway is not None and client.goaway.error_code == ErrorCodes.NO_ERROR

    def test_client_goaway_with_an_error_closes_and_cancels_handlers(self) -> None:
        probe = Probe()
        with serve(make_app(probe), H2KyoukaiComponent) as server:
            with H2Client(server.port) as client:
                client.request("/hang")
                assert probe.started.wait(10)
                client.send_goaway(ErrorCodes.INTERNAL_ERROR)
                client.wait_closed()
                assert probe.finished.wait(10), "the handler was not cancelled"
                wait_on_loop(server, lambda: not server.component.connections)
                assert streams_of(server, probe.protocols[0]) == 0

    def test_lost_connection_cancels_handlers(self) -> None:
        probe = Probe()
        with serve(make_app(probe), H2KyoukaiComponent) as server:
            client = H2Client(server.port)
            client.request("/hang")
            assert probe.started.wait(10)
            client.close()
            assert probe.finished.wait(10), "the handler was not cancelled"
            wait_on_loop(server, lambda: not server.component.connections)
            assert streams_of(server, probe.protocols[0]) == 0

    def test_third_stream_over_max_concurrent_streams_is_refused(self, caplog) -> None:
        caplog.set_level(logging.INFO, logger="kyoukai.http2")
        probe = Probe()
        gate = Gate()
        with serve(make_app(probe, gate), H2KyoukaiComponent, max_concurrent_streams=2) as server:
            gate.server = server
            with H2Client(server.port) as client:
                client.wait_ready()
                assert client.remote_settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == 2
                first, second, third = (client.request(f"/gated/{n}") for n in range(3))
                client.read_until(lambda: client.streams[third].done)
                assert client.streams[third].reset_code == ErrorCodes.REFUSED_STREAM
                assert not client.streams[first].done and not client.streams[second].done
                gate.open()
                client.read_until(lambda: client.streams[first].done and client.streams[second].done)
                fourth = client.response(client.request("/gated/4"))
        assert [bytes(client.streams[s].data) for s in (first, second)] == [b"gated 0", b"gated 1"]
        assert fourth.status == 200
        assert client.goaway is None
        assert "max_concurrent_streams=2" in caplog.text

    def test_body_of_a_refused_stream_does_not_use_up_the_connection_window(self) -> None:
        probe = Probe()
        gate = Gate()
        cfg = {"max_concurrent_streams": 1, "connection_window_size": 65535, "stream_window_size": 65535}
        with serve(make_app(probe, gate), H2KyoukaiComponent, **cfg) as server:
            gate.server = server
            with H2Client(server.port) as client:
                client.wait_ready()
                first = client.request("/gated/1")
                assert gate.reached.wait(10)
                refused = client.request("/count", "POST", end_stream=False)
                assert client.send_available(refused, b"r" * 65535) == 65535
                client.read_until(lambda: client.streams[refused].done and client.conn_send_window > 0)
                gate.open()
                assert client.response(first).status == 200
                upload = client.response(client.request("/count", "POST", body=b"u" * 100_000))
        resets = [f for f in client.frames if isinstance(f, RstStreamFrame) and f.stream_id == refused]
        assert resets[0].error_code == ErrorCodes.REFUSED_STREAM
        assert bytes(upload.data) == b"100000"


class TestConnectionSignals:
    @pytest.mark.parametrize("mode", ["h2-only", "alpn", "prior-knowledge", "h2c"])
    def test_made_and_lost_fire_once_per_http2_connection(self, mode: str, ssl_config, client_ssl_context) -> None:
        probe = Probe()
        made, lost = [], []
        closed = threading.Event()

        def on_lost(event) -> None:
            lost.append(event.protocol)
            closed.set()

        if mode == "h2-only":
            cfg, component = {}, H2KyoukaiComponent
        else:
            cfg, component = {"http2": True}, KyoukaiComponent
            if mode == "alpn":
                cfg["ssl"] = ssl_config
        with serve(make_app(probe), component, **cfg) as server:
            server.component.connection_made.connect(lambda event: made.append(event.protocol))
            server.component.connection_lost.connect(on_lost)
            if mode == "h2c":
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                sock.sendall(upgrade_request(server.port, "/"))
                head, rest = read_head(sock)
                assert head.startswith(b"HTTP/1.1 101")
                client = H2Client(server.port, sock=sock, initial_data=rest)
                client.open_stream(1)
                sid = 1
            else:
                client = H2Client(server.port, ssl_context=client_ssl_context if mode == "alpn" else None)
                sid = client.request("/", scheme="https" if mode == "alpn" else "http")
            with client:
                assert client.response(sid).status == 200
            assert closed.wait(10)
            wait_on_loop(server, lambda: not server.component.connections)
        assert len(made) == 1
        assert len(lost) == 1
        assert isinstance(lost[0], H2KyoukaiProtocol)


class TestTimeouts:
    def test_idle_connection_closes_after_keep_alive_timeout(self) -> None:
        probe = Probe()
        with serve(make_app(probe), H2KyoukaiComponent, keep_alive_timeout=0.2) as server:
            with H2Client(server.port) as client:
                assert client.response(client.request("/")).status == 200
                client.wait_closed(timeout=5)
        assert client.goaway is not None and client.goaway.error_code == ErrorCodes.NO_ERROR

    def test_preface_without_settings_times_out(self) -> None:
        probe = Probe()
        with serve(make_app(probe), H2KyoukaiComponent, header_timeout=0.2) as server:
            with H2Client(server.port, handshake=False) as client:
                client.send_raw(PREFACE)
                client.wait_closed(timeout=5)
        assert client.goaway is not None, client.describe_frames()
        # This client acknowledges the server's SETTINGS, so its first frame after the preface
        # is a SETTINGS ACK rather than its own SETTINGS: an invalid preface (RFC 9113 3.4).
        # A client that sends nothing at all gets SETTINGS_TIMEOUT instead.
        assert client.goaway.error_code in (ErrorCodes.PROTOCOL_ERROR, ErrorCodes.SETTINGS_TIMEOUT)


def raw_frame(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([frame_type, flags]) + struct.pack(">I", stream_id) + payload


class TestGoawayInTheSameRead:
    def test_requests_and_goaway_together(self, caplog) -> None:
        """A GOAWAY right behind new requests: no send on a closed h2 connection, no error."""
        probe = Probe()
        with serve(make_app(probe), H2KyoukaiComponent) as server:
            with H2Client(server.port) as client:
                client.wait_ready()
                frames = []
                for n in range(3):
                    frames += client.headers_frames(
                        1 + 2 * n, [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "x")], True
                    )
                client.send(*frames, GoAwayFrame(0, last_stream_id=0, error_code=0))
                client.wait_closed()
                wait_on_loop(server, lambda: not server.component.connections)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == []


class TestProtocolErrors:
    @pytest.mark.parametrize(
        ("name", "code"),
        [
            ("data-on-stream-0", ErrorCodes.PROTOCOL_ERROR),
            ("frame-over-max-frame-size", ErrorCodes.FRAME_SIZE_ERROR),
            ("connection-window-overflow", ErrorCodes.FLOW_CONTROL_ERROR),
            ("data-beyond-the-stream-window", ErrorCodes.FLOW_CONTROL_ERROR),
            ("headers-on-an-even-stream", ErrorCodes.PROTOCOL_ERROR),
        ],
    )
    def test_goaway_with_the_code_then_close(self, name: str, code: ErrorCodes) -> None:
        probe = Probe()
        with serve(make_app(probe), H2KyoukaiComponent, stream_window_size=65535) as server:
            with H2Client(server.port) as client:
                client.wait_ready()
                if name == "data-on-stream-0":
                    client.send_raw(raw_frame(0, 0, 0, b"abc"))
                elif name == "frame-over-max-frame-size":
                    sid = client.request("/hang", "POST", end_stream=False)
                    client.send(DataFrame(sid, b"x" * 20000))
                elif name == "connection-window-overflow":
                    client.send(WindowUpdateFrame(0, window_increment=2**31 - 1))
                elif name == "data-beyond-the-stream-window":
                    sid = client.request("/hang", "POST", end_stream=False)
                    client.send(*(DataFrame(sid, b"x" * 16384) for _ in range(4)), DataFrame(sid, b"x"))
                else:
                    client.send(*client.headers_frames(2, [(":method", "GET"), (":path", "/")], True))
                client.wait_closed(timeout=5)
        assert client.goaway is not None, client.describe_frames()
        assert client.goaway.error_code == code
        assert client.frames[-1] is client.goaway, "the server sent more after its GOAWAY"
        assert len([f for f in client.frames if isinstance(f, GoAwayFrame)]) == 1

    def test_malformed_request_is_a_stream_error(self) -> None:
        probe = Probe()
        with serve(make_app(probe), H2KyoukaiComponent) as server:
            with H2Client(server.port) as client:
                client.wait_ready()
                bad = client.open_stream()
                block = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "x"), ("Upper", "1")]
                client.send(*client.headers_frames(bad.stream_id, block, True))
                client.read_until(lambda: bad.done or client.goaway is not None)
                assert client.goaway is None, f"GOAWAY {client.goaway.error_code} for one malformed request"
                assert bad.reset_code == ErrorCodes.PROTOCOL_ERROR
                assert client.response(client.request("/")).status == 200

    def test_invalid_preface_after_its_first_bytes(self) -> None:
        probe = Probe()
        with serve(make_app(probe), H2KyoukaiComponent) as server:
            with H2Client(server.port, handshake=False) as client:
                client.send_raw(PREFACE[:16] + b"XX\r\n\r\n" + SettingsFrame(0).serialize())
                client.wait_closed()
        assert client.goaway is not None, client.describe_frames()
        assert client.goaway.error_code == ErrorCodes.PROTOCOL_ERROR

    def test_first_frame_not_settings(self) -> None:
        probe = Probe()
        with serve(make_app(probe), H2KyoukaiComponent) as server:
            with H2Client(server.port, handshake=False) as client:
                client.send_raw(PREFACE)
                client.send(*client.headers_frames(1, [(":method", "GET"), (":path", "/")], True))
                client.wait_closed()
        assert client.goaway is not None, client.describe_frames()
        assert client.goaway.error_code == ErrorCodes.PROTOCOL_ERROR
        assert not any(isinstance(f, HeadersFrame) for f in client.frames)


class TestGracefulShutdown:
    def test_in_flight_response_completes_after_goaway(self) -> None:
        probe = Probe()
        gate = Gate()
        with stoppable_server(make_app(probe, gate), H2KyoukaiComponent, shutdown_timeout=20) as server:
            gate.server = server
            with H2Client(server.port) as client:
                sid = client.request("/gated/1")
                assert gate.reached.wait(10)
                stopper = threading.Thread(target=server.stop)
                stopper.start()
                # Two steps (RFC 9113 section 6.8): GOAWAY 2**31-1 and a PING, then, once the
                # PING is acknowledged (the client does it at once), the real last stream id.
                client.read_until(lambda: client.goaway is not None and client.goaway.last_stream_id != 2**31 - 1)
                assert client.goaway.error_code == ErrorCodes.NO_ERROR
                assert client.goaway.last_stream_id == sid
                assert not client.eof and not client.streams[sid].done

                # Streams opened after the GOAWAY are refused; the in-flight one goes on.
                late = client.request("/")
                client.read_until(lambda: client.streams[late].done)
                assert client.streams[late].reset_code == ErrorCodes.REFUSED_STREAM
                assert stopper.is_alive()

                gate.open()
                stream = client.response(sid)
                client.wait_closed()
                stopper.join(30)
        assert not stopper.is_alive()
        assert stream.status == 200
        assert bytes(stream.data) == b"gated 1"
        goaways = [f.last_stream_id for f in client.frames if isinstance(f, GoAwayFrame)]
        assert goaways == [2**31 - 1, sid]
        assert not [f for f in client.frames if isinstance(f, RstStreamFrame) and f.stream_id == sid]

    def test_stream_opened_before_the_client_saw_the_goaway_is_served(self) -> None:
        """
        A request the client sends while the first GOAWAY is on its way (before it acknowledges
        the PING that follows it) is served, not refused: a graceful reload loses nothing.
        """
        probe = Probe()
        with stoppable_server(make_app(probe), H2KyoukaiComponent, shutdown_timeout=20) as server:
            with H2Client(server.port, auto_ping_ack=False) as client:
                client.wait_ready()
                stopper = threading.Thread(target=server.stop)
                stopper.start()
                client.read_until(lambda: client.goaway is not None)
                assert client.goaway.last_stream_id == 2**31 - 1
                client.read_until(lambda: client.pings_received)
                # In flight: the client has not seen the GOAWAY when it sends this one.
                sid = client.request("/")
                client.send(PingFrame(0, opaque_data=client.pings_received[0], flags=["ACK"]))
                stream = client.response(sid)
                client.wait_closed()
                stopper.join(30)
        assert stream.status == 200 and stream.reset_code is None
        goaways = [f.last_stream_id for f in client.frames if isinstance(f, GoAwayFrame)]
        assert goaways == [2**31 - 1, sid]

    def test_idle_connection_gets_goaway_and_closes(self) -> None:
        probe = Probe()
        with stoppable_server(make_app(probe), H2KyoukaiComponent) as server:
            with H2Client(server.port) as client:
                assert client.response(client.request("/")).status == 200
                protocol = only_connection(server)
                assert protocol.streams == {}
                stopper = threading.Thread(target=server.stop)
                stopper.start()
                client.wait_closed()
                stopper.join(30)
        assert not stopper.is_alive()
        assert client.goaway is not None and client.goaway.error_code == ErrorCodes.NO_ERROR

    def test_streams_still_running_at_shutdown_timeout_are_cut_off(self) -> None:
        probe = Probe()
        with stoppable_server(make_app(probe), H2KyoukaiComponent, shutdown_timeout=0.5) as server:
            with H2Client(server.port) as client:
                sid = client.request("/hang")
                assert probe.started.wait(10)
                stopper = threading.Thread(target=server.stop)
                stopper.start()
                client.read_until(lambda: client.goaway is not None)
                client.wait_closed()
                stopper.join(30)
        assert not stopper.is_alive()
        assert client.goaway.error_code == ErrorCodes.NO_ERROR
        assert not client.streams[sid].ended
        assert probe.finished.is_set(), "the handler was not cancelled when the connection was closed"
