"""
WebSockets over HTTP/2 (RFC 8441 extended CONNECT) on every kind of HTTP/2 port, with a raw
HTTP/2 client (tests/h2client.py) carrying wsproto's client frames in the stream's DATA: the
SETTINGS, echo, flow control both ways, subprotocols, close codes, refusals, errors, resets,
graceful shutdown, other streams meanwhile, and the requests the server must refuse. Also the
chat example (examples/chat).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import wsproto.events as wse
from conftest import RunningServer, serve
from h2.errors import ErrorCodes
from h2client import (
    PREFACE,
    Gate,
    H2Client,
    H2WebSocket,
    on_loop,
    only_connection,
    read_head,
    stoppable_server,
    upgrade_request,
    wait_on_loop,
)
from hyperframe.frame import GoAwayFrame, SettingsFrame
from werkzeug.exceptions import Forbidden

from kyoukai import Kyoukai, WebSocketDisconnect
from kyoukai.asphalt import KyoukaiComponent
from kyoukai.backends.http2 import H2KyoukaiComponent

pytestmark = pytest.mark.timeout(60)

MiB = 1 << 20
#: Our receive windows: large, so that a 16 MiB message comes back quickly.
CLIENT_SETTINGS = {SettingsFrame.INITIAL_WINDOW_SIZE: 4 * MiB, SettingsFrame.ENABLE_PUSH: 0}


class Record:
    """What the handlers saw, for the test thread (events set from the server's loop)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.done = threading.Event()

    def set(self, **values: Any) -> None:
        self.values.update(values)
        self.done.set()

    def wait(self) -> dict[str, Any]:
        assert self.done.wait(10), "the handler never got there"
        return self.values


def make_app(record: Record | None = None, gate: Gate | None = None) -> Kyoukai:
    app = Kyoukai("wsh2")
    record = record or Record()

    @app.before_request
    def guard(ctx):
        if ctx.request.args.get("deny"):
            raise Forbidden()

    @app.route("/")
    async def index(ctx):
        return "plain page\n"

    @app.websocket("/echo")
    async def echo(ctx):
        async for message in ctx.websocket:
            await ctx.websocket.send(message)

    @app.websocket("/info")
    async def info(ctx):
        await ctx.websocket.send(
            f"{ctx.environ['REQUEST_METHOD']} {ctx.environ['kyoukai.method']} {ctx.environ['SERVER_PROTOCOL']} "
            f"{ctx.request.args.get('q')} {ctx.request.headers.get('x-token')}"
        )
        await ctx.websocket.close()

    @app.websocket("/subprotocol")
    async def subprotocol(ctx):
        websocket = ctx.websocket
        await websocket.accept(subprotocol=websocket.subprotocols[-1])
        await websocket.send(f"{websocket.subprotocol} of {','.join(websocket.subprotocols)}")
        await websocket.close()

    @app.websocket("/close/<int:code>")
    async def close(ctx, code: int):
        await ctx.websocket.accept()
        await ctx.websocket.close(code, "server says bye")

    @app.websocket("/watch")
    async def watch(ctx):
        websocket = ctx.websocket
        try:
            while True:
                await websocket.send(await websocket.receive())
        except WebSocketDisconnect as e:
            record.set(code=e.code, reason=e.reason)

    @app.websocket("/deaf")
    async def deaf(ctx):
        await ctx.websocket.accept()
        try:
            await asyncio.Event().wait()  # touches its WebSocket no more
        except asyncio.CancelledError:
            record.set(cancelled=True)
            raise

    @app.websocket("/boom")
    async def boom(ctx):
        await ctx.websocket.accept()
        raise RuntimeError("the handler failed after accepting")

    @app.websocket("/push/<int:size>")
    async def push(ctx, size: int):
        await ctx.websocket.send(bytes(size))
        record.set(sent=size)
        await ctx.websocket.close()

    @app.websocket("/slow")
    async def slow(ctx):
        websocket = ctx.websocket
        await websocket.accept()
        assert gate is not None
        await gate.wait()
        total = 0
        async for message in websocket:
            total += len(message)
            if message == b"end":
                break
        await websocket.send(str(total))

    return app


def h2_client(port: int, ssl_context: ssl.SSLContext | None = None, **kwargs: Any) -> H2Client:
    kwargs.setdefault("settings", CLIENT_SETTINGS)
    kwargs.setdefault("connection_window", 16 * MiB)
    client = H2Client(port, ssl_context=ssl_context, **kwargs)
    client.wait_ready()
    return client


def upgraded_client(port: int) -> H2Client:
    """An HTTP/2 connection that began as HTTP/1.1 and asked for ``Upgrade: h2c`` (served as stream 1)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    preface = PREFACE + SettingsFrame(0, settings=CLIENT_SETTINGS).serialize()
    sock.sendall(upgrade_request(port, path="/") + preface)
    head, rest = read_head(sock)
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols"), head
    client = H2Client(port, sock=sock, initial_data=rest, handshake=False, settings=CLIENT_SETTINGS)
    client.open_stream(1)
    assert client.response(1).status == 200
    return client


KINDS = ["h2-tls", "h2-cleartext", "http2-tls", "http2-prior-knowledge", "http2-h2c-upgrade"]


@contextlib.contextmanager
def connected(
    kind: str, app: Kyoukai, tls_files: dict[str, str], *, stoppable: bool = False, **cfg: Any
) -> Iterator[tuple[RunningServer, H2Client, str]]:
    """
    A server of ``kind`` for ``app`` and an HTTP/2 connection to it; the ``:scheme`` to use.
    With ``stoppable`` the test may stop the server itself.
    """
    tls = kind.endswith("-tls")
    start = stoppable_server if stoppable else serve
    if kind.startswith("h2-"):
        files = {"ssl_keyfile": tls_files["key"], "ssl_certfile": tls_files["cert"]} if tls else {}
        context = start(app, H2KyoukaiComponent, **files, **cfg)
    else:
        ssl_config = {"enabled": True, "ssl_certfile": tls_files["cert"], "ssl_keyfile": tls_files["key"]}
        context = start(app, KyoukaiComponent, http2=True, **({"ssl": ssl_config} if tls else {}), **cfg)
    with context as server:
        if kind == "http2-h2c-upgrade":
            client = upgraded_client(server.port)
        else:
            client_context = ssl.create_default_context(cafile=tls_files["ca"]) if tls else None
            client = h2_client(server.port, client_context)
        with client:
            yield server, client, "https" if tls else "http"


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


class TestEveryPort:
    def test_settings_enable_connect_protocol(self, kind: str, tls_files) -> None:
        with connected(kind, make_app(), tls_files) as (_, client, _scheme):
            client.read_until(lambda: bool(client.remote_settings))
            assert client.remote_settings[SettingsFrame.ENABLE_CONNECT_PROTOCOL] == 1

    def test_text_and_binary_echo(self, kind: str, tls_files) -> None:
        with connected(kind, make_app(), tls_files) as (_, client, scheme):
            websocket = H2WebSocket(client, "/echo", scheme=scheme)
            stream = websocket.opened()
            assert stream.status == 200
            assert not stream.ended and stream.reset_code is None
            websocket.send("hello over HTTP/2")
            assert websocket.receive() == "hello over HTTP/2"
            websocket.send(b"\x00\x01\xfe\xff")
            assert websocket.receive() == b"\x00\x01\xfe\xff"
            websocket.close(1000)
            close = websocket.receive()
            assert isinstance(close, wse.CloseConnection) and close.code == 1000
            assert websocket.wait_ended().ended

    def test_the_environ_of_the_handshake(self, kind: str, tls_files) -> None:
        """Routed as a GET (the WebSocket rule), with the method sent, the query and the fields at hand."""
        with connected(kind, make_app(), tls_files) as (_, client, scheme):
            websocket = H2WebSocket(client, "/info?q=42", scheme=scheme, headers=[("x-token", "abc")])
            assert websocket.opened().status == 200
            assert websocket.receive() == "GET CONNECT HTTP/2 42 abc"

    def test_other_streams_are_served_meanwhile(self, kind: str, tls_files) -> None:
        with connected(kind, make_app(), tls_files) as (_, client, scheme):
            websocket = H2WebSocket(client, "/echo", scheme=scheme)
            assert websocket.opened().status == 200
            websocket.send("before")
            assert websocket.receive() == "before"
            pages = [client.request("/", scheme=scheme) for _ in range(3)]
            for stream_id in pages:
                response = client.response(stream_id)
                assert response.status == 200 and bytes(response.data) == b"plain page\n"
            websocket.send("after")
            assert websocket.receive() == "after"
            assert not websocket.stream.done


@pytest.fixture
def clear_server() -> Iterator[RunningServer]:
    with serve(make_app(), H2KyoukaiComponent) as server:
        yield server


@pytest.fixture
def client(clear_server: RunningServer) -> Iterator[H2Client]:
    with h2_client(clear_server.port) as client:
        yield client


class TestMessages:
    @pytest.mark.parametrize("kind", ["h2-tls", "http2-prior-knowledge"])
    def test_a_16_mib_message_both_ways(self, kind: str, tls_files) -> None:
        """Far over every window: flow control paces it both ways, and it arrives whole."""
        payload = hashlib.shake_256(b"sixteen").digest(16 * MiB)
        with connected(kind, make_app(), tls_files) as (_, client, scheme):
            websocket = H2WebSocket(client, "/echo", scheme=scheme)
            assert websocket.opened().status == 200
            websocket.send(payload)
            echoed = websocket.receive(timeout=30)
            assert isinstance(echoed, bytes) and len(echoed) == len(payload)
            assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
            largest = max(frame.flow_controlled_length for frame in client.data_frames(websocket.stream_id))
            assert largest <= client.max_frame_size

    def test_messages_sent_before_the_200_are_kept(self, client: H2Client) -> None:
        websocket = H2WebSocket(client, "/echo")
        websocket.send("early")
        websocket.send(b"bird")
        assert websocket.opened().status == 200
        assert websocket.receive() == "early"
        assert websocket.receive() == b"bird"

    def test_subprotocol(self, client: H2Client) -> None:
        websocket = H2WebSocket(client, "/subprotocol", subprotocols=["chat.v1", "chat.v2"])
        stream = websocket.opened()
        assert stream.status == 200
        assert stream.header("sec-websocket-protocol") == "chat.v2"
        assert websocket.receive() == "chat.v2 of chat.v1,chat.v2"

    @pytest.mark.parametrize("code", [1000, 1001, 4000])
    def test_the_server_closes_with_a_code(self, client: H2Client, code: int) -> None:
        websocket = H2WebSocket(client, f"/close/{code}")
        assert websocket.opened().status == 200
        close = websocket.receive()
        assert isinstance(close, wse.CloseConnection)
        assert (close.code, close.reason) == (code, "server says bye")
        # Our answer completes the closing handshake; then the server ends the stream.
        assert websocket.wait_ended().ended

    @pytest.mark.parametrize("code", [1000, 4001])
    def test_the_client_closes_with_a_code(self, code: int) -> None:
        record = Record()
        with serve(make_app(record), H2KyoukaiComponent) as server, h2_client(server.port) as client:
            websocket = H2WebSocket(client, "/watch")
            websocket.send("ping")
            assert websocket.receive() == "ping"
            websocket.close(code, "client says bye")
            echoed = websocket.receive()
            assert isinstance(echoed, wse.CloseConnection) and echoed.code == code
            assert record.wait() == {"code": code, "reason": "client says bye"}
            assert websocket.wait_ended().ended

    def test_a_handler_error_after_accepting_closes_with_1011(self, client: H2Client) -> None:
        websocket = H2WebSocket(client, "/boom")
        assert websocket.opened().status == 200
        close = websocket.receive()
        assert isinstance(close, wse.CloseConnection) and close.code == 1011
        assert websocket.wait_ended().ended
        # The connection goes on.
        assert client.response(client.request("/")).status == 200


class TestRefusals:
    def test_a_before_request_hook_refuses_with_403(self, client: H2Client) -> None:
        websocket = H2WebSocket(client, "/echo?deny=1")
        stream = websocket.opened()
        assert stream.status == 403
        client.read_until(lambda: stream.done)
        assert stream.ended and stream.reset_code is None

    def test_no_websocket_route_is_a_404(self, client: H2Client) -> None:
        stream = H2WebSocket(client, "/nowhere").opened()
        assert stream.status == 404

    def test_a_plain_route_refuses_a_websocket(self, client: H2Client) -> None:
        stream = H2WebSocket(client, "/").opened()
        assert stream.status == 400

    def test_without_sec_websocket_version_is_a_400(self, client: H2Client) -> None:
        stream_id = client.request("/echo", "CONNECT", [(":protocol", "websocket")], end_stream=False)
        stream = client.response(stream_id)
        assert stream.status == 400
        assert stream.header("sec-websocket-version") == "13"

    def test_another_protocol_is_501(self, client: H2Client) -> None:
        stream_id = client.request("/echo", "CONNECT", [(":protocol", "webtransport")], end_stream=False)
        stream = client.response(stream_id)
        assert stream.status == 501
        assert b"webtransport" in stream.data
        assert client.response(client.request("/")).status == 200

    def test_plain_connect_is_refused_as_before(self, client: H2Client) -> None:
        stream = client.open_stream()
        head = [(":method", "CONNECT"), (":authority", "example.com:443")]
        client.send(*client.headers_frames(stream.stream_id, head, end_stream=False))
        client.response(stream.stream_id)
        # (Routed as before: a CONNECT names no path, so no rule matches.)
        assert stream.status == 404 and stream.ended

    @pytest.mark.parametrize(
        "head",
        [
            [
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "x"),
                (":path", "/echo"),
                (":protocol", "websocket"),
            ],
            [(":method", "CONNECT"), (":authority", "x"), (":protocol", "websocket")],
            [(":method", "CONNECT"), (":scheme", "http"), (":path", "/echo"), (":protocol", "websocket")],
            [
                (":method", "CONNECT"),
                (":scheme", "http"),
                (":authority", "x"),
                (":path", "echo"),
                (":protocol", "websocket"),
            ],
        ],
        ids=["protocol-on-get", "no-scheme-or-path", "no-authority", "path-not-origin-form"],
    )
    def test_malformed_is_a_stream_error(self, client: H2Client, head: list[tuple[str, str]]) -> None:
        stream = client.open_stream()
        client.send(
            *client.headers_frames(stream.stream_id, [*head, ("sec-websocket-version", "13")], end_stream=False)
        )
        client.response(stream.stream_id)
        assert stream.reset_code == ErrorCodes.PROTOCOL_ERROR
        assert stream.status is None
        # A stream error: the connection serves on.
        assert client.response(client.request("/")).status == 200


class TestStreamLife:
    def test_the_clients_reset_ends_the_handler_with_websocket_disconnect(self) -> None:
        record = Record()
        with serve(make_app(record), H2KyoukaiComponent) as server, h2_client(server.port) as client:
            websocket = H2WebSocket(client, "/watch")
            websocket.send("ping")
            assert websocket.receive() == "ping"
            client.reset(websocket.stream_id)
            assert record.wait()["code"] == 1006
            assert client.response(client.request("/")).status == 200
            protocol = only_connection(server)
            wait_on_loop(server, lambda: not protocol.core.streams)

    def test_a_handler_deaf_to_its_websocket_is_cancelled_after_ws_close_timeout(self) -> None:
        record = Record()
        with (
            serve(make_app(record), H2KyoukaiComponent, ws_close_timeout=0.2) as server,
            h2_client(server.port) as client,
        ):
            websocket = H2WebSocket(client, "/deaf")
            assert websocket.opened().status == 200
            client.reset(websocket.stream_id)
            assert record.wait() == {"cancelled": True}
            protocol = only_connection(server)
            wait_on_loop(server, lambda: not protocol.core.streams)

    def test_a_client_that_keeps_its_side_open_is_reset_after_discard_timeout(self) -> None:
        with serve(make_app(), H2KyoukaiComponent, discard_timeout=0.2) as server, h2_client(server.port) as client:
            websocket = H2WebSocket(client, "/close/1000")
            assert isinstance(websocket.receive(), wse.CloseConnection)  # answered, but no END_STREAM
            stream = websocket.wait_ended()
            assert stream.ended and stream.reset_code is None
            client.read_until(lambda: stream.reset_code is not None)
            assert stream.reset_code == ErrorCodes.NO_ERROR
            protocol = only_connection(server)
            wait_on_loop(server, lambda: not protocol.core.streams)

    def test_the_clients_end_stream_ends_the_websocket(self) -> None:
        record = Record()
        with serve(make_app(record), H2KyoukaiComponent) as server, h2_client(server.port) as client:
            websocket = H2WebSocket(client, "/watch")
            websocket.send("last words")
            assert websocket.receive() == "last words"
            websocket.send_raw(b"", end_stream=True)
            assert record.wait()["code"] == 1006
            assert websocket.wait_ended().ended

    @pytest.mark.parametrize("kind", KINDS)
    def test_graceful_shutdown_closes_with_1001(self, kind: str, tls_files) -> None:
        with connected(kind, make_app(), tls_files, stoppable=True) as (server, client, scheme):
            websocket = H2WebSocket(client, "/echo", scheme=scheme)
            websocket.send("hello")
            assert websocket.receive() == "hello"
            stopper = threading.Thread(target=server.stop)
            stopper.start()
            try:
                close = websocket.receive()
                assert isinstance(close, wse.CloseConnection) and close.code == 1001
                websocket.send_raw(b"", end_stream=True)
                assert websocket.wait_ended().ended
                client.wait_closed()
                client.close()  # (over TLS the server's close waits for ours)
            finally:
                stopper.join(30)
            assert any(isinstance(frame, GoAwayFrame) for frame in client.frames)
            assert not stopper.is_alive()

    def test_a_handler_that_does_not_read_stops_the_client(self) -> None:
        """Credit is withheld once ws_buffer_size of messages wait; reading returns it."""
        gate = Gate()
        window = 64 * 1024
        message = bytes(64 * 1024)
        with serve(make_app(gate=gate), H2KyoukaiComponent, stream_window_size=window) as server:
            gate.server = server
            with h2_client(server.port) as client:
                websocket = H2WebSocket(client, "/slow")
                assert websocket.opened().status == 200
                assert gate.reached.wait(10)
                frames = b"".join(websocket.ws.send(wse.BytesMessage(data=message)) for _ in range(48))
                protocol = only_connection(server)
                record = on_loop(server, lambda: protocol.core.streams[websocket.stream_id])
                sent = 0
                while sent < len(frames):
                    sent += client.send_available(websocket.stream_id, frames[sent:])
                    if websocket.stream.send_window > 0:
                        continue
                    # Once the server has taken in all we sent, a PING round trip brings any
                    # credit it returned; none means it holds it back.
                    wait_on_loop(server, lambda sent=sent: record.received == sent)
                    client.sync()
                    if websocket.stream.send_window == 0:
                        break
                assert sent < len(frames)
                # The server holds about ws_buffer_size (1 MiB) of messages and a window more.
                assert sent <= MiB + 4 * window
                assert on_loop(server, lambda: record.app_state.channel._reading_paused)
                # The connection window is not taken: other streams go on.
                assert client.response(client.request("/")).status == 200
                gate.open()
                websocket.send_raw(frames[sent:])
                websocket.send(b"end")
                assert websocket.receive() == str(48 * len(message) + 3)

    def test_send_waits_for_a_client_that_does_not_read(self) -> None:
        """The client returns no credit: the message waits in the stream's queue, and send() with it."""
        record = Record()
        with serve(make_app(record), H2KyoukaiComponent) as server:
            # A 64 KiB stream window that we never refill by ourselves; a large connection window.
            with h2_client(server.port, settings={}, auto_ack=False) as client:
                websocket = H2WebSocket(client, f"/push/{MiB}")
                assert websocket.opened().status == 200
                protocol = only_connection(server)
                stream = on_loop(server, lambda: protocol.core.streams[websocket.stream_id])
                wait_on_loop(server, lambda: stream in protocol.core.scheduler.stalled)
                assert not record.done.is_set()
                assert client.response(client.request("/")).status == 200
                client.window_update(websocket.stream_id, 2 * MiB)
                message = websocket.receive()
                assert message == bytes(MiB)
                assert record.wait() == {"sent": MiB}


class TestChatExample:
    def test_two_members_of_a_room_see_each_others_messages(self, tls_files) -> None:
        from examples.chat.app import app, rooms

        with connected("http2-tls", app, tls_files) as (server, client, scheme):
            page = client.response(client.request("/", scheme=scheme))
            assert page.status == 200 and b"new WebSocket" in page.data
            alice = H2WebSocket(client, "/ws/lobby", scheme=scheme)
            assert alice.opened().status == 200
            client_context = ssl.create_default_context(cafile=tls_files["ca"])
            with h2_client(server.port, client_context) as other:
                bob = H2WebSocket(other, "/ws/lobby", scheme=scheme)
                carol = H2WebSocket(other, "/ws/attic", scheme=scheme)
                assert bob.opened().status == 200 and carol.opened().status == 200
                wait_on_loop(server, lambda: len(rooms.get("lobby", ())) == 2 and len(rooms.get("attic", ())) == 1)
                alice.send("alice: hi bob")
                assert bob.receive() == "alice: hi bob"
                assert alice.receive() == "alice: hi bob"
                bob.send("bob: hi alice")
                assert alice.receive() == "bob: hi alice"
                assert bob.receive() == "bob: hi alice"
                carol.send("carol: anyone?")
                assert carol.receive() == "carol: anyone?"
                alice.send("alice: bye")
                assert bob.receive() == "alice: bye"
                bob.close()
                assert isinstance(bob.receive(), wse.CloseConnection)
                wait_on_loop(server, lambda: len(rooms.get("lobby", ())) == 1)
            assert alice.receive() == "alice: bye"
