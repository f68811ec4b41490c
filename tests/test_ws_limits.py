"""
The WebSocket limits over HTTP/1.1, against a live server: each attack (a message too large, a
dead peer, an idle one, floods of control frames and of tiny fragments, a deflate bomb) ends
with the right close code, and a second client is served while it runs.

:class:`RawWebSocket` is a client on a plain socket with wsproto for the frames, so a test can
send what a well-behaved client would not, and not answer what it would.
"""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RunningServer, serve
from http11_client import RawClient, request
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from wsproto import events as wse
from wsproto.connection import Connection, ConnectionType
from wsproto.extensions import Extension, PerMessageDeflate

from kyoukai import Kyoukai
from kyoukai.protocol.ws.settings import WebSocketSettings
from kyoukai.settings import ServerSettings

pytestmark = pytest.mark.timeout(60)

#: Deadline of any wait for the server (a safety net, not a timing assertion).
WAIT = 10.0


class RawWebSocket:
    """
    A WebSocket client on a plain socket: :meth:`handshake`, then frames through a client-side
    wsproto connection (:meth:`send`) or raw bytes (:meth:`send_raw`); :meth:`next_event` reads
    until the server's next frame. Nothing is answered unless the test does it.
    """

    def __init__(self, port: int, timeout: float = WAIT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.conn = Connection(ConnectionType.CLIENT)

    def __enter__(self) -> RawWebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    @staticmethod
    def handshake_request(path: str, headers: dict[str, str] | None = None) -> bytes:
        fields = {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version": "13",
            **(headers or {}),
        }
        return request("GET", path, fields)

    def handshake(self, path: str = "/echo", *, deflate: bool = False, then: bytes = b"") -> int:
        """Send the handshake (and ``then`` in the same write); read the response head; its status."""
        headers = {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"} if deflate else {}
        self.sock.sendall(self.handshake_request(path, headers) + then)
        while b"\r\n\r\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed during the handshake; got {self.buffer!r}")
            self.buffer += data
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ", 2)[1])
        self.headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
        extensions: list[Extension] = []
        agreed = self.headers.get("sec-websocket-extensions")
        if agreed is not None:
            extension = PerMessageDeflate()
            extension.finalize(agreed)
            extensions.append(extension)
        self.conn = Connection(ConnectionType.CLIENT, extensions)
        if self.status == 101:
            self.conn.receive_data(self.buffer)
            self.buffer = b""
        return self.status

    def send(self, *events: wse.Event) -> None:
        self.sock.sendall(b"".join(self.conn.send(event) for event in events))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_event(self) -> wse.Event:
        """The server's next frame as a wsproto event (``CloseConnection(1006)`` at EOF)."""
        while True:
            event = next(self.conn.events(), None)
            if event is not None:
                return event
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            self.conn.receive_data(data or None)

    def close_event(self) -> wse.CloseConnection:
        """Read (and drop) frames until the server's Close."""
        while True:
            event = self.next_event()
            if isinstance(event, wse.CloseConnection):
                return event

    def closed_by_server(self) -> bool:
        """Whether the server ends the connection after its Close (the socket reads EOF)."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True


def make_app() -> Kyoukai:
    app = Kyoukai("ws-limits")

    @app.route("/")
    async def index(ctx):
        return "hello"

    @app.websocket("/echo")
    async def echo(ctx):
        async for message in ctx.websocket:
            await ctx.websocket.send(message)

    return app


@pytest.fixture
def limited() -> Iterator[RunningServer]:
    with serve(
        make_app(),
        ws_max_message_size=1024 * 1024,
        ws_ping_interval=None,
        ws_max_control_frames=50,
        ws_control_frame_rate=1.0,
    ) as server:
        yield server


def assert_second_client_served(server: RunningServer) -> None:
    """An HTTP request and a WebSocket echo on new connections, answered while the attack goes on."""
    with RawClient(server.port) as client:
        client.send(request("GET", "/"))
        assert client.read_response().body == b"hello"
    with connect(f"ws://127.0.0.1:{server.port}/echo", open_timeout=WAIT, close_timeout=WAIT) as ws:
        ws.send("still served")
        assert ws.recv(timeout=WAIT) == "still served"


class TestMessageSize:
    def test_a_message_over_the_limit_closes_with_1009(self, limited: RunningServer) -> None:
        with RawWebSocket(limited.port) as attacker:
            assert attacker.handshake() == 101
            # The frame head announces the size: the server refuses before the payload comes.
            attacker.send(wse.BytesMessage(data=b"x" * 1000, message_finished=False))
            assert_second_client_served(limited)
            attacker.send(wse.BytesMessage(data=os.urandom(1024 * 1024)))
            close = attacker.close_event()
            assert close.code == 1009
            assert "ws_max_message_size=1048576" in close.reason
            assert attacker.closed_by_server()

    def test_with_the_websockets_client(self, limited: RunningServer) -> None:
        with connect(f"ws://127.0.0.1:{limited.port}/echo", max_size=None, compression=None) as ws:
            ws.send(os.urandom(1024 * 1024 + 1))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

    def test_a_message_at_the_limit_is_served(self, limited: RunningServer) -> None:
        payload = os.urandom(1024 * 1024)
        with connect(f"ws://127.0.0.1:{limited.port}/echo", max_size=None, compression=None) as ws:
            ws.send(payload)
            assert ws.recv(timeout=WAIT) == payload

    def test_a_deflate_bomb_closes_with_1009(self, limited: RunningServer) -> None:
        with RawWebSocket(limited.port) as attacker:
            assert attacker.handshake(deflate=True) == 101
            assert attacker.headers["sec-websocket-extensions"].startswith("permessage-deflate")
            bomb = attacker.conn.send(wse.BytesMessage(data=bytes(64 * 1024 * 1024)))
            assert len(bomb) < 128 * 1024  # 64 MiB of zeros, compressed
            assert_second_client_served(limited)
            attacker.send_raw(bomb)
            close = attacker.close_event()
            assert close.code == 1009
            assert "once inflated" in close.reason


class TestDeadPeers:
    def test_a_peer_that_never_answers_pings_is_closed_with_1011(self) -> None:
        with serve(make_app(), ws_ping_interval=0.2, ws_ping_timeout=0.2) as server:
            with RawWebSocket(server.port) as dead:
                assert dead.handshake() == 101
                assert isinstance(dead.next_event(), wse.Ping)
                assert_second_client_served(server)
                close = dead.close_event()
                assert close.code == 1011
                assert "ws_ping_timeout=0.2s" in close.reason
                assert dead.closed_by_server()

    def test_a_peer_that_answers_pings_stays(self) -> None:
        with serve(make_app(), ws_ping_interval=0.2, ws_ping_timeout=0.2) as server:
            with RawWebSocket(server.port) as alive:
                assert alive.handshake() == 101
                for _ in range(3):
                    ping = alive.next_event()
                    assert isinstance(ping, wse.Ping)
                    alive.send(ping.response())
                alive.send(wse.TextMessage(data="still here"))
                event = alive.next_event()
                assert isinstance(event, wse.TextMessage) and event.data == "still here"

    def test_an_idle_websocket_is_closed_with_1001(self) -> None:
        with serve(make_app(), ws_idle_timeout=0.3, ws_ping_interval=0) as server:
            with connect(f"ws://127.0.0.1:{server.port}/echo", ping_interval=None) as ws:
                assert_second_client_served(server)
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=WAIT)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1001
            assert "ws_idle_timeout=0.3s" in closed.value.rcvd.reason


class TestFloods:
    def test_a_ping_flood_closes_with_1008(self, limited: RunningServer) -> None:
        with RawWebSocket(limited.port) as attacker:
            assert attacker.handshake() == 101
            attacker.send(*[wse.Ping(payload=b"%d" % i) for i in range(40)])
            pongs = 0
            while pongs < 40:
                assert isinstance(attacker.next_event(), wse.Pong)
                pongs += 1
            assert_second_client_served(limited)
            attacker.send(*[wse.Ping() for _ in range(1000)])
            close = attacker.close_event()
            assert close.code == 1008
            assert "ws_max_control_frames=50" in close.reason
            assert attacker.closed_by_server()

    def test_a_tiny_fragment_flood_closes_with_1008(self, limited: RunningServer) -> None:
        with RawWebSocket(limited.port) as attacker:
            assert attacker.handshake() == 101
            attacker.send(*[wse.TextMessage(data="a", message_finished=False) for _ in range(32)])
            assert_second_client_served(limited)
            attacker.send(*[wse.TextMessage(data="a", message_finished=False) for _ in range(1000)])
            close = attacker.close_event()
            assert close.code == 1008
            assert "ws_min_fragment_size=256" in close.reason
            assert attacker.closed_by_server()

    def test_large_fragments_are_served(self, limited: RunningServer) -> None:
        with RawWebSocket(limited.port) as client:
            assert client.handshake() == 101
            pieces = [wse.TextMessage(data="b" * 300, message_finished=False) for _ in range(200)]
            client.send(*pieces, wse.TextMessage(data="end"))
            received: list[Any] = []
            while not received or not received[-1].message_finished:
                event = client.next_event()
                assert isinstance(event, wse.TextMessage)
                received.append(event)
            assert "".join(e.data for e in received) == "b" * 300 * 200 + "end"


class TestSettings:
    def test_the_ws_keys_make_the_websocket_settings(self) -> None:
        settings = ServerSettings.from_config(
            {"ws_max_message_size": 4096, "ws_ping_interval": 0, "ws_idle_timeout": None, "ws_compression": False}
        )
        assert settings.websocket == WebSocketSettings(
            ws_max_message_size=4096, ws_ping_interval=None, ws_idle_timeout=None, ws_compression=False
        )
        assert settings.websocket is settings.websocket
        assert ServerSettings().websocket == WebSocketSettings()

    @pytest.mark.parametrize(
        ("key", "value", "message"),
        [
            ("ws_compression", "yes", "must be true or false, not 'yes'"),
            ("ws_ping_timeout", 0, "must be a positive number, not 0"),
            ("ws_ping_interval", -1, "must be a positive number, not -1"),
            ("ws_max_message_size", 1.5, "must be a whole number, not 1.5"),
        ],
    )
    def test_bad_values_are_refused(self, key: str, value: object, message: str) -> None:
        with pytest.raises(ValueError, match=f"config key '{key}' {message}"):
            ServerSettings.from_config({key: value})
