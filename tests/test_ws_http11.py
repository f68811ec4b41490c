"""
WebSockets over HTTP/1.1 (RFC 6455 Upgrade) against a live server, with the ``websockets``
client: messages both ways, subprotocols, close codes, handshakes refused by the app, TLS, a
port with ``http2: true``, permessage-deflate, backpressure both ways, the access log and
metrics, and graceful shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RunningServer, serve
from h2client import Gate, on_loop, wait_on_loop
from http11_client import RawClient, request
from test_ws_limits import RawWebSocket
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from werkzeug.exceptions import Forbidden
from wsproto import events as wse

from kyoukai import Kyoukai, WebSocketDisconnect
from kyoukai.asphalt import KyoukaiComponent
from kyoukai.backends.h11_websocket import H11WebSocketChannel
from kyoukai.protocol import events as ev
from kyoukai.protocol.h11.connection import H11ServerConnection
from kyoukai.protocol.ws.handshake import HandshakeRejection, WebSocketOffer
from kyoukai.settings import ServerSettings

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0
MiB = 1024 * 1024


class Seen:
    """What the handlers saw, readable from the test thread."""

    def __init__(self) -> None:
        self.disconnects: queue.Queue[int] = queue.Queue()
        self.gate = Gate()
        self.received = 0


def make_app(seen: Seen) -> Kyoukai:
    app = Kyoukai("ws")

    @app.route("/")
    async def index(ctx):
        return "hello"

    @app.websocket("/echo")
    async def echo(ctx):
        async for message in ctx.websocket:
            await ctx.websocket.send(message)

    @app.websocket("/protocols")
    async def protocols(ctx):
        ws = ctx.websocket
        await ws.accept(subprotocol="v2" if "v2" in ws.subprotocols else None)
        await ws.send(f"offered {','.join(ws.subprotocols)}")

    @app.websocket("/closer")
    async def closer(ctx):
        await ctx.websocket.receive()
        await ctx.websocket.close(4000, "that will do")

    @app.websocket("/watch")
    async def watch(ctx):
        try:
            while True:
                await ctx.websocket.receive()
        except WebSocketDisconnect as e:
            seen.disconnects.put(e.code)

    @app.before_request
    async def require_token(ctx):
        if ctx.request.path.startswith("/private") and ctx.request.args.get("token") != "secret":
            raise Forbidden("a token is needed")
        return ctx

    @app.websocket("/private")
    async def private(ctx):
        await ctx.websocket.send("welcome")

    @app.websocket("/fails")
    async def fails(ctx):
        await ctx.websocket.accept()
        raise RuntimeError("the handler broke")

    @app.websocket("/sink")
    async def sink(ctx):
        # Reads nothing until the test opens the gate, then counts what came.
        await ctx.websocket.accept()
        await seen.gate.wait()
        async for message in ctx.websocket:
            if message == "end":
                await ctx.websocket.send(str(seen.received))
                return
            seen.received += len(message)

    @app.websocket("/flood")
    async def flood(ctx):
        try:
            while True:
                await ctx.websocket.send(bytes(64 * 1024))
        except WebSocketDisconnect as e:
            seen.disconnects.put(e.code)

    @app.websocket("/slow")
    async def slow(ctx):
        # Outlasts the HTTP/1.1 header and keep-alive timeouts several times over.
        await asyncio.sleep(1.0)
        await ctx.websocket.send("still here")

    return app


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def server(seen: Seen) -> Iterator[RunningServer]:
    with serve(make_app(seen)) as running:
        seen.gate.server = running
        yield running


def ws_url(server: RunningServer, path: str, scheme: str = "ws") -> str:
    return f"{scheme}://127.0.0.1:{server.port}{path}"


def open_ws(server: RunningServer, path: str = "/echo", **options: Any) -> Any:
    options.setdefault("open_timeout", WAIT)
    options.setdefault("close_timeout", WAIT)
    return connect(ws_url(server, path), **options)


class TestCore:
    """The HTTP/1.1 core with a handshake, without I/O: what follows the head waits for the answer."""

    @staticmethod
    def core() -> H11ServerConnection:
        return H11ServerConnection(ServerSettings(), lambda: 0.0, server=("127.0.0.1", 80))

    def test_accepted_the_bytes_after_the_head_are_the_websockets(self) -> None:
        core = self.core()
        events = core.receive_data(RawWebSocket.handshake_request("/chat") + b"frames")
        (handshake,) = [e.request for e in events if isinstance(e, ev.H11RequestReceived)]
        assert isinstance(handshake.websocket, WebSocketOffer)
        assert core.should_pause_reading()
        assert core.receive_data(b" and more") == []
        head, data = core.accept_websocket(handshake, 101, [("Upgrade", "websocket"), ("Connection", "Upgrade")])
        assert head == b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        assert data == b"frames and more"
        assert core.closed and core.next_deadline() is None

    def test_refused_the_bytes_after_the_head_are_the_next_requests(self) -> None:
        core = self.core()
        events = core.receive_data(RawWebSocket.handshake_request("/chat") + request("GET", "/next"))
        (handshake,) = [e.request for e in events if isinstance(e, ev.H11RequestReceived)]
        core.response_head(handshake, 403, "Forbidden", [("Content-Length", "0")], streamed=False)
        events = core.response_done(handshake)
        (following,) = [e.request for e in events if isinstance(e, ev.H11RequestReceived)]
        assert following.environ["PATH_INFO"] == "/next" and following.websocket is None
        with pytest.raises(RuntimeError):
            core.accept_websocket(handshake, 101, [])

    def test_an_invalid_handshake_is_read_as_a_rejection_and_not_held(self) -> None:
        core = self.core()
        events = core.receive_data(RawWebSocket.handshake_request("/chat", {"Sec-WebSocket-Key": "short"}))
        (handshake,) = [e.request for e in events if isinstance(e, ev.H11RequestReceived)]
        assert isinstance(handshake.websocket, HandshakeRejection) and handshake.websocket.status == 400
        assert not core.should_pause_reading()

    def test_a_plain_request_has_no_handshake(self) -> None:
        core = self.core()
        (event, _) = core.receive_data(request("GET", "/"))
        assert event.request.websocket is None


class TestMessages:
    def test_text_and_binary_echo(self, server: RunningServer) -> None:
        with open_ws(server) as ws:
            ws.send("héllo")
            assert ws.recv(timeout=WAIT) == "héllo"
            ws.send(b"\x00\x01\xff")
            assert ws.recv(timeout=WAIT) == b"\x00\x01\xff"
            assert ws.response.status_code == 101

    def test_16_mib_both_ways(self, server: RunningServer) -> None:
        payload = os.urandom(16 * MiB)
        with open_ws(server, max_size=None, compression=None) as ws:
            ws.send(payload)
            assert ws.recv(timeout=WAIT) == payload

    def test_many_messages_in_order(self, server: RunningServer) -> None:
        with open_ws(server) as ws:
            for i in range(200):
                ws.send(f"message {i}")
            assert [ws.recv(timeout=WAIT) for _ in range(200)] == [f"message {i}" for i in range(200)]

    def test_frames_sent_with_the_handshake_are_not_lost(self, server: RunningServer) -> None:
        client = RawWebSocket(server.port)
        with client:
            frame = client.conn.send(wse.TextMessage(data="eager"))
            assert client.handshake(then=frame) == 101
            event = client.next_event()
            assert isinstance(event, wse.TextMessage) and event.data == "eager"


class TestHandshake:
    def test_subprotocol_negotiation(self, server: RunningServer) -> None:
        with open_ws(server, "/protocols", subprotocols=["v1", "v2"]) as ws:
            assert ws.subprotocol == "v2"
            assert ws.response.headers["Sec-WebSocket-Protocol"] == "v2"
            assert ws.recv(timeout=WAIT) == "offered v1,v2"

    def test_no_subprotocol_chosen(self, server: RunningServer) -> None:
        with open_ws(server, "/protocols", subprotocols=["v1"]) as ws:
            assert ws.subprotocol is None
            assert "Sec-WebSocket-Protocol" not in ws.response.headers
            assert ws.recv(timeout=WAIT) == "offered v1"

    def test_a_hook_refuses_with_403(self, server: RunningServer) -> None:
        with pytest.raises(InvalidStatus) as refused:
            open_ws(server, "/private")
        assert refused.value.response.status_code == 403
        with open_ws(server, "/private?token=secret") as ws:
            assert ws.recv(timeout=WAIT) == "welcome"

    def test_after_a_refused_handshake_the_connection_serves_http(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(RawWebSocket.handshake_request("/private") + request("GET", "/"))
            assert client.read_response().status == 403
            response = client.read_response()
            assert (response.status, response.body) == (200, b"hello")

    def test_a_handshake_behind_a_pipelined_request(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("GET", "/") + RawWebSocket.handshake_request("/private?token=secret"))
            assert client.read_response().body == b"hello"
            head = client.read_head()
            assert (head.status, head.header("Upgrade")) == (101, "websocket")
            assert client.read_exactly(9) == b"\x81\x07welcome"

    @pytest.mark.parametrize(("path", "status"), [("/", 400), ("/nowhere", 404)])
    def test_a_handshake_to_a_plain_route(self, server: RunningServer, path: str, status: int) -> None:
        with RawClient(server.port) as client:
            client.send(RawWebSocket.handshake_request(path) + request("GET", "/"))
            assert client.read_response().status == status
            response = client.read_response()
            assert (response.status, response.body) == (200, b"hello")

    def test_a_bad_version_is_refused_with_426(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(RawWebSocket.handshake_request("/echo", {"Sec-WebSocket-Version": "8"}))
            response = client.read_response()
        assert response.status == 426
        assert response.header("Sec-WebSocket-Version") == "13"
        assert response.body == b"Sec-WebSocket-Version must be 13 (RFC 6455), not 8.\n"

    def test_a_handshake_with_a_body_is_refused(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(RawWebSocket.handshake_request("/echo", {"Content-Length": "2"}) + b"hi")
            response = client.read_response()
        assert response.status == 400
        assert b"must not have a body" in response.body


class TestClosing:
    def test_the_handler_closes_with_a_code_and_reason(self, server: RunningServer) -> None:
        with open_ws(server, "/closer") as ws:
            ws.send("go")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=WAIT)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "that will do")

    def test_the_handler_sees_the_clients_code(self, server: RunningServer, seen: Seen) -> None:
        with open_ws(server, "/watch") as ws:
            ws.close(1001)
        assert seen.disconnects.get(timeout=WAIT) == 1001

    def test_a_client_that_vanishes_is_a_1006(self, server: RunningServer, seen: Seen) -> None:
        with RawWebSocket(server.port) as client:
            assert client.handshake("/watch") == 101
        assert seen.disconnects.get(timeout=WAIT) == 1006

    def test_a_handler_that_raises_closes_with_1011(self, server: RunningServer) -> None:
        with open_ws(server, "/fails") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011

    def test_a_handler_that_returns_closes_with_1000(self, server: RunningServer) -> None:
        with open_ws(server, "/private?token=secret") as ws:
            assert ws.recv(timeout=WAIT) == "welcome"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000

    def test_http11_timeouts_do_not_close_a_websocket(self, seen: Seen) -> None:
        with serve(make_app(seen), keep_alive_timeout=0.2, header_timeout=0.2) as server:
            with open_ws(server, "/slow") as ws:
                assert ws.recv(timeout=WAIT) == "still here"

    def test_shutdown_closes_with_1001(self, seen: Seen, caplog: pytest.LogCaptureFixture) -> None:
        running = RunningServer(KyoukaiComponent(make_app(seen), ip="127.0.0.1", port=0)).start()
        try:
            ws = open_ws(running, "/watch")
        except BaseException:
            running.stop()
            raise
        with ws:
            running.stop()
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert seen.disconnects.get(timeout=WAIT) == 1001
        assert not [r for r in caplog.records if "still busy" in r.getMessage()]


class TestTransports:
    def test_over_tls(self, seen: Seen, ssl_config: dict[str, Any], client_ssl_context: ssl.SSLContext) -> None:
        with serve(make_app(seen), ssl=ssl_config) as server:
            with connect(ws_url(server, "/echo", "wss"), ssl=client_ssl_context, max_size=None) as ws:
                ws.send("over tls")
                assert ws.recv(timeout=WAIT) == "over tls"
                ws.send(os.urandom(2 * MiB))
                assert len(ws.recv(timeout=WAIT)) == 2 * MiB

    def test_http2_port_over_tls_with_alpn_http11(
        self, seen: Seen, ssl_config: dict[str, Any], client_ssl_context: ssl.SSLContext
    ) -> None:
        client_ssl_context.set_alpn_protocols(["http/1.1"])
        with serve(make_app(seen), ssl=ssl_config, http2=True) as server:
            with connect(ws_url(server, "/echo", "wss"), ssl=client_ssl_context, open_timeout=WAIT) as ws:
                assert ws.socket.selected_alpn_protocol() == "http/1.1"
                ws.send("h1 on an h2 port")
                assert ws.recv(timeout=WAIT) == "h1 on an h2 port"

    def test_http2_port_cleartext(self, seen: Seen) -> None:
        with serve(make_app(seen), http2=True) as server:
            with open_ws(server) as ws:
                ws.send("cleartext")
                assert ws.recv(timeout=WAIT) == "cleartext"


class TestDeflate:
    def test_negotiated_and_round_trips(self, server: RunningServer) -> None:
        text = "compressible " * 100_000
        with open_ws(server, max_size=None) as ws:
            assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
            for _ in range(3):  # the compression context carries over between messages
                ws.send(text)
                assert ws.recv(timeout=WAIT) == text
            ws.send(b"binary too")
            assert ws.recv(timeout=WAIT) == b"binary too"
        assert server.component.metrics.bytes_in < len(text)

    def test_off_with_ws_compression_false(self, seen: Seen) -> None:
        with serve(make_app(seen), ws_compression=False) as server:
            with open_ws(server) as ws:
                assert "Sec-WebSocket-Extensions" not in ws.response.headers
                ws.send("plain")
                assert ws.recv(timeout=WAIT) == "plain"


def websocket_channel(server: RunningServer) -> H11WebSocketChannel:
    channels = on_loop(server, lambda: [c for c in server.component.connections if isinstance(c, H11WebSocketChannel)])
    assert len(channels) == 1, channels
    return channels[0]


class TestBackpressure:
    def test_a_handler_that_does_not_read_stops_the_server_reading(self, seen: Seen) -> None:
        with serve(make_app(seen), ws_buffer_size=64 * 1024) as server:
            seen.gate.server = server
            with RawWebSocket(server.port) as client:
                assert client.handshake("/sink") == 101
                assert seen.gate.reached.wait(WAIT)
                message = client.conn.send(wse.BytesMessage(data=bytes(16 * 1024)))
                client.sock.setblocking(False)
                sent = 0
                pending = b""
                # Send until the socket has had no room for a second: the server has stopped reading.
                while select.select([], [client.sock], [], 1.0)[1]:
                    pending = pending or message
                    try:
                        done = client.sock.send(pending)
                    except BlockingIOError:
                        continue
                    sent += done
                    pending = pending[done:]
                transport = websocket_channel(server).transport
                assert transport is not None
                assert not on_loop(server, transport.is_reading)
                received = server.component.metrics.bytes_in
                # What the server took is bounded by ws_buffer_size and one read, not by what was sent.
                assert received < 1 * MiB < sent
                seen.gate.open()
                client.sock.setblocking(True)
                client.send_raw(pending)
                client.send(wse.TextMessage(data="end"))
                event = client.next_event()
                assert isinstance(event, wse.TextMessage)
                assert int(event.data) == (sent + len(pending)) // len(message) * 16 * 1024

    def test_a_client_that_does_not_read_is_dropped_after_ws_send_timeout(self, seen: Seen) -> None:
        with serve(make_app(seen), ws_send_timeout=0.5, ws_close_timeout=0.5) as server:
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            with sock:
                sock.sendall(RawWebSocket.handshake_request("/flood"))
                # The client reads nothing from here on.
                assert seen.disconnects.get(timeout=WAIT) == 1006
                with RawClient(server.port) as other:
                    other.send(request("GET", "/"))
                    assert other.read_response().body == b"hello"
                wait_on_loop(server, lambda: not server.component.connections)


class TestAccounting:
    def test_access_log_and_metrics(self, server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
        logged = threading.Event()

        class Watch(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if '"GET /echo HTTP/1.1" 101' in record.getMessage():
                    logged.set()

        access = logging.getLogger("kyoukai.access")
        watch = Watch()
        access.addHandler(watch)
        caplog.set_level(logging.INFO, logger="kyoukai.access")
        try:
            with open_ws(server) as ws:
                ws.send("counted")
                assert ws.recv(timeout=WAIT) == "counted"
                assert server.component.metrics.responses[("HTTP/1.1", 101)] == 1
                assert not logged.is_set()  # the line is written when the handler ends
            assert logged.wait(WAIT)
        finally:
            access.removeHandler(watch)
