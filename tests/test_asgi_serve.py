"""
ASGI applications served on Kyoukai's engines (kyoukai.asgi.serve), with raw ASGI apps: the
scope, request bodies as they arrive, responses whole and streamed with backpressure,
``http.disconnect`` on client close and stream reset, the app's errors, trailers, early hints,
``pathsend``, the limits, WebSockets over HTTP/1.1 and HTTP/2, the lifespan protocol, and how
an app is recognised as ASGI.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.sync.client as ws_client
from conftest import RunningServer, serve
from h2client import H2Client, H2WebSocket
from websockets.exceptions import ConnectionClosed, InvalidStatus

from kyoukai import Kyoukai
from kyoukai.asgi.lifespan import LifespanError
from kyoukai.asgi.serve import ASGIApplication, is_asgi_app, served_application
from kyoukai.asphalt import KyoukaiComponent
from kyoukai.backends.http2 import H2KyoukaiComponent

TIMEOUT = 10.0
CHUNK = 64 * 1024
INTERNAL_ERROR = 2


class Probe:
    """What an app saw, handed from the server's thread to the test's."""

    def __init__(self) -> None:
        self._items: queue.Queue[Any] = queue.Queue()
        #: Sends that returned, per streaming response.
        self.sent = 0

    def put(self, item: Any) -> None:
        self._items.put(item)

    def get(self, timeout: float = TIMEOUT) -> Any:
        return self._items.get(timeout=timeout)


def scope_summary(scope: dict[str, Any]) -> dict[str, Any]:
    """The scope as JSON."""
    summary = {k: v for k, v in scope.items() if k not in ("headers", "raw_path", "query_string", "extensions")}
    summary["headers"] = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]]
    summary["raw_path"] = scope["raw_path"].decode("latin-1")
    summary["query_string"] = scope["query_string"].decode("latin-1")
    summary["extensions"] = sorted(scope["extensions"])
    return summary


async def read_body(receive: Any) -> tuple[bytes, list[tuple[int, bool]]]:
    """The whole body, and the size and ``more_body`` of each message."""
    parts, seen = [], []
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        parts.append(message["body"])
        seen.append((len(message["body"]), message["more_body"]))
        if not message["more_body"]:
            return b"".join(parts), seen


async def respond(send: Any, status: int, body: bytes, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


def make_app(probe: Probe) -> Any:
    """A raw ASGI app (a new one per test: each gets its own wrapper and config)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan here")
        if scope["type"] == "websocket":
            return await websocket_app(probe, scope, receive, send)
        path = scope["path"]
        if path.endswith("/scope"):
            await read_body(receive)
            await respond(send, 200, json.dumps(scope_summary(scope)).encode())
        elif path == "/echo":
            body, seen = await read_body(receive)
            await respond(send, 200, json.dumps({"length": len(body), "messages": seen}).encode())
        elif path == "/big":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            chunk = b"x" * CHUNK
            for _ in range(int(scope["query_string"] or 64)):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                probe.sent += 1
            await send({"type": "http.response.body", "body": b""})
        elif path == "/hold":
            await read_body(receive)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"started\n", "more_body": True})
            probe.put(await receive())
            try:
                await send({"type": "http.response.body", "body": b"more\n", "more_body": True})
            except OSError as e:
                probe.put(e)
        elif path == "/thinking":
            await read_body(receive)
            probe.put("thinking")
            probe.put(await receive())  # no response yet: only the client's going away ends this
            await respond(send, 200, b"too late")
        elif path == "/ignore":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"started\n", "more_body": True})
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                probe.put("cancelled")
                raise
        elif path == "/fail-before":
            raise LookupError("no such widget")
        elif path == "/fail-after":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"started\n", "more_body": True})
            raise LookupError("lost the widget")
        elif path == "/nothing":
            return
        elif path == "/short":
            await respond(send, 200, b"12345", [(b"content-length", b"10")])
        elif path == "/bad-header":
            await respond(send, 200, b"x", [(b"x-bad", b"one\r\ntwo")])
        elif path == "/head":
            await respond(send, 200, b"a body HEAD must not carry", [(b"content-length", b"26")])
        elif path == "/trailers":
            start = {"type": "http.response.start", "status": 200, "headers": [], "trailers": True}
            await send(start)
            await send({"type": "http.response.body", "body": b"data", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]})
        elif path == "/hints":
            assert "http.response.early_hint" in scope["extensions"]
            await send({"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload; as=style"]})
            await respond(send, 200, b"hinted")
        elif path == "/file":
            start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
            await send(start)
            await send({"type": "http.response.pathsend", "path": probe.get(0)})
        else:
            await respond(send, 404, b"not found")

    return app


async def websocket_app(probe: Probe, scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert (await receive())["type"] == "websocket.connect"
    path = scope["path"]
    if path == "/refuse":
        await send({"type": "websocket.close", "code": 1008})
        return
    if path == "/deny":
        headers = [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]
        await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": b"who are you?", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"\n"})
        return
    if path == "/silent":
        return
    subprotocol = "v2" if "v2" in scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": [(b"x-room", b"lobby")]})
    await send({"type": "websocket.send", "text": f"{scope['scheme']} {scope['http_version']} {subprotocol}"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            probe.put(message)
            return
        if message.get("text") == "bye":
            await send({"type": "websocket.close", "code": 4000, "reason": "asked to leave"})
            probe.put(await receive())
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"].upper()})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def server(probe: Probe) -> Iterator[RunningServer]:
    """The raw app on a port serving HTTP/1.1 and h2c."""
    with serve(make_app(probe), http2=True, disconnect_timeout=0.5) as running:
        yield running


def h1() -> httpx.Client:
    return httpx.Client(timeout=TIMEOUT)


def h2() -> httpx.Client:
    return httpx.Client(http1=False, http2=True, timeout=TIMEOUT)


def raw_connection(server: RunningServer, request: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    sock.sendall(request)
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before {marker!r}: {data!r}"
        data += chunk
    return data


def read_to_close(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(1 << 20):
        data += chunk
    return bytes(data)


def exchange(server: RunningServer, request: bytes) -> bytes:
    """Send ``request`` on a new connection; what the server sent until it closed."""
    with raw_connection(server, request) as sock:
        return read_to_close(sock)


async def settled(probe: Probe) -> int:
    """``probe.sent`` once the app made no progress for a hundred turns of the loop."""
    while True:
        before = probe.sent
        for _ in range(100):
            await asyncio.sleep(0)
        if probe.sent == before:
            return before


class TestScope:
    @pytest.mark.parametrize("client", [h1, h2])
    def test_http_scope(self, server: RunningServer, client: Any) -> None:
        with client() as c:
            response = c.get(server.url("/caf%C3%A9/scope?q=1&q=2"), headers={"X-Trace": "abc"})
        assert response.status_code == 200
        scope = response.json()
        version = "1.1" if client is h1 else "2"
        assert scope["type"] == "http" and scope["http_version"] == version
        assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
        assert (scope["method"], scope["scheme"]) == ("GET", "http")
        assert scope["path"] == "/café/scope" and scope["raw_path"] == "/caf%C3%A9/scope"
        assert scope["query_string"] == "q=1&q=2" and scope["root_path"] == ""
        assert ["x-trace", "abc"] in scope["headers"]
        assert ["host", f"127.0.0.1:{server.port}"] in scope["headers"]
        assert scope["client"][0] == "127.0.0.1" and scope["server"] == ["127.0.0.1", server.port]
        assert scope["state"] == {}
        assert {"http.response.trailers", "http.response.pathsend", "http.response.early_hint"} <= set(
            scope["extensions"]
        )
        assert response.headers["server"].startswith("Kyoukai/")

    def test_root_path_is_in_path(self, probe: Probe) -> None:
        with serve(make_app(probe), root_path="/api") as server, h1() as c:
            scope = c.get(server.url("/scope")).json()
        assert (scope["root_path"], scope["path"], scope["raw_path"]) == ("/api", "/api/scope", "/api/scope")

    def test_https_scheme_over_tls(self, probe: Probe, tls_files: dict[str, str]) -> None:
        app = make_app(probe)
        with serve(app, H2KyoukaiComponent, ssl_keyfile=tls_files["key"], ssl_certfile=tls_files["cert"]) as server:
            with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=tls_files["ca"])) as c:
                response = c.get(server.url("/scope", "https"))
        assert response.http_version == "HTTP/2"
        assert response.json()["scheme"] == "https"


class TestRequestBody:
    @pytest.mark.parametrize("client", [h1, h2])
    def test_body_arrives_in_messages_with_more_body(self, server: RunningServer, client: Any) -> None:
        body = bytes(range(256)) * 12_000  # 3 MB: more than the windows and buffers
        with client() as c:
            result = c.post(server.url("/echo"), content=body).json()
        assert result["length"] == len(body)
        assert len(result["messages"]) > 1, "the body came in one message"
        assert all(more for _, more in result["messages"][:-1]) and not result["messages"][-1][1]

    def test_no_body(self, server: RunningServer) -> None:
        with h1() as c:
            assert c.get(server.url("/echo")).json() == {"length": 0, "messages": [[0, False]]}

    def test_declared_length_over_max_body_size_is_413_without_the_app(self, probe: Probe) -> None:
        with serve(make_app(probe), max_body_size=1000) as server, h1() as c:
            response = c.post(server.url("/echo"), content=b"x" * 1001)
        assert response.status_code == 413
        assert "max_body_size of 1000 bytes" in response.text

    @pytest.mark.parametrize("client", [h1, h2])
    def test_streamed_body_over_max_body_size_is_413(self, probe: Probe, client: Any) -> None:
        def chunks() -> Iterator[bytes]:
            for _ in range(100):
                yield b"x" * 1000

        with serve(make_app(probe), http2=True, max_body_size=10_000) as server, client() as c:
            response = c.post(server.url("/echo"), content=chunks())
        assert response.status_code == 413


class TestResponses:
    @pytest.mark.parametrize("client", [h1, h2])
    def test_streamed_response(self, server: RunningServer, client: Any) -> None:
        with client() as c:
            response = c.get(server.url("/big"))
        assert response.status_code == 200 and response.content == b"x" * CHUNK * 64

    def test_head_sends_no_body(self, server: RunningServer) -> None:
        with h1() as c:
            response = c.head(server.url("/head"))
            assert (response.status_code, response.content) == (200, b"")
            assert response.headers["content-length"] == "26"
            assert c.get(server.url("/head")).text == "a body HEAD must not carry", "the connection still works"

    def test_trailers_over_http2(self, server: RunningServer) -> None:
        with H2Client(server.port) as client:
            stream = client.response(client.request("/trailers", headers=[("te", "trailers")]))
        assert (stream.status, bytes(stream.data), stream.trailers) == (200, b"data", [("x-checksum", "abc")])

    def test_trailers_over_http11(self, server: RunningServer) -> None:
        request = b"GET /trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n"
        data = exchange(server, request)
        assert b"Transfer-Encoding: chunked" in data
        assert data.endswith(b"4\r\ndata\r\n0\r\nx-checksum: abc\r\n\r\n")

    def test_early_hints(self, server: RunningServer) -> None:
        with H2Client(server.port) as client:
            stream = client.response(client.request("/hints"))
        assert stream.informational == [[(":status", "103"), ("link", "</style.css>; rel=preload; as=style")]]
        assert (stream.status, bytes(stream.data)) == (200, b"hinted")
        request = b"GET /hints HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        data = exchange(server, request)
        assert data.startswith(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n")
        assert b"HTTP/1.1 200 OK\r\n" in data and data.endswith(b"hinted")

    @pytest.mark.parametrize("client", [h1, h2])
    def test_pathsend(self, server: RunningServer, probe: Probe, client: Any, tmp_path: Path) -> None:
        path = tmp_path / "page.txt"
        path.write_bytes(b"from the disk\n" * 10_000)
        probe.put(str(path))
        with client() as c:
            response = c.get(server.url("/file"))
        assert response.content == path.read_bytes()


class TestBackpressure:
    def test_http2_send_waits_for_the_window(self, server: RunningServer, probe: Probe) -> None:
        with H2Client(server.port, auto_ack=False) as client:
            stream_id = client.request("/big")
            stream = client.streams[stream_id]
            client.read_until(lambda: stream.received >= 65535)
            blocked_at = server.call(settled(probe))
            # A chunk being sent, one in the slot, and the send that waits: nothing piles up.
            assert blocked_at <= 3
            client.auto_ack = True
            client.window_update(0, stream.received)
            client.window_update(stream_id, stream.received)
            client.read_until(lambda: stream.done)
        assert stream.received == CHUNK * 64 and probe.sent == 64

    def test_http11_slow_reader(self, server: RunningServer, probe: Probe) -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /big?1024 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head = read_until(sock, b"\r\n\r\n")
            blocked_at = server.call(settled(probe))
            # What the socket buffers take (the kernel's send buffer may grow to a few MiB), and
            # no more: far from the 64 MiB of the response.
            assert blocked_at < 256
            data = head + read_to_close(sock)
        assert probe.sent == 1024 and data.endswith(b"x\r\n0\r\n\r\n") and data.count(b"x") == 1024 * CHUNK


class TestDisconnect:
    def test_http11_client_close(self, server: RunningServer, probe: Probe) -> None:
        with raw_connection(server, b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n") as sock:
            read_until(sock, b"started\n")
        assert probe.get() == {"type": "http.disconnect"}
        assert isinstance(probe.get(), OSError), "send after the disconnect raises OSError (ASGI 2.4)"

    @pytest.mark.parametrize("client", ["h1", "h2"])
    def test_before_the_response(self, server: RunningServer, probe: Probe, client: str) -> None:
        if client == "h1":
            with raw_connection(server, b"GET /thinking HTTP/1.1\r\nHost: x\r\n\r\n"):
                assert probe.get() == "thinking"
        else:
            with H2Client(server.port) as h2_client:
                stream_id = h2_client.request("/thinking")
                assert probe.get() == "thinking"
                h2_client.reset(stream_id)
        assert probe.get() == {"type": "http.disconnect"}

    def test_http2_stream_reset(self, server: RunningServer, probe: Probe) -> None:
        with H2Client(server.port) as client:
            stream_id = client.request("/hold")
            client.read_until(lambda: bytes(client.streams[stream_id].data) == b"started\n")
            client.reset(stream_id)
            assert probe.get() == {"type": "http.disconnect"}
            assert isinstance(probe.get(), OSError)
            other = client.response(client.request("/echo"))
            assert other.status == 200, "the connection serves on"

    @pytest.mark.parametrize("client", ["h1", "h2"])
    def test_an_app_that_ignores_it_is_cancelled(self, server: RunningServer, probe: Probe, client: str) -> None:
        if client == "h1":
            with raw_connection(server, b"GET /ignore HTTP/1.1\r\nHost: x\r\n\r\n") as sock:
                read_until(sock, b"started\n")
        else:
            with H2Client(server.port) as h2_client:
                stream_id = h2_client.request("/ignore")
                h2_client.read_until(lambda: bytes(h2_client.streams[stream_id].data) == b"started\n")
                h2_client.reset(stream_id)
        assert probe.get() == "cancelled"

    def test_disconnect_after_the_response(self, probe: Probe) -> None:
        seen: list[dict[str, Any]] = []
        done = threading.Event()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            await read_body(receive)
            await respond(send, 200, b"done")
            seen.append(await receive())  # the response is over: at once
            done.set()

        with serve(app) as server, h1() as c:
            assert c.get(server.url("/")).text == "done"
            assert done.wait(TIMEOUT)
        assert seen == [{"type": "http.disconnect"}]


class TestErrors:
    @pytest.mark.parametrize("client", [h1, h2])
    def test_raising_before_the_response_is_500(
        self, server: RunningServer, client: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        with client() as c:
            response = c.get(server.url("/fail-before"))
        assert response.status_code == 500
        assert "LookupError on GET /fail-before; sending 500" in caplog.text

    def test_raising_after_the_head_cuts_http11(self, server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
        with h1() as c, pytest.raises(httpx.RemoteProtocolError):
            c.get(server.url("/fail-after"))
        assert "lost the widget" in caplog.text

    def test_raising_after_the_head_resets_http2(self, server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
        with H2Client(server.port) as client:
            stream = client.response(client.request("/fail-after"))
        assert stream.status == 200 and stream.reset_code == INTERNAL_ERROR
        assert "lost the widget" in caplog.text

    def test_no_response_is_500(self, server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
        with h1() as c:
            assert c.get(server.url("/nothing")).status_code == 500
        assert "returned without sending a response to GET /nothing" in caplog.text

    @pytest.mark.parametrize("path", ["/short", "/bad-header"])
    def test_a_response_that_cannot_be_sent_is_500(
        self, server: RunningServer, path: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        with h1() as c:
            assert c.get(server.url(path)).status_code == 500
            assert c.get(server.url("/echo")).status_code == 200
        assert "cannot be sent" in caplog.text

    def test_debug_page(self, probe: Probe) -> None:
        with serve(make_app(probe), debug=True) as server, h1() as c:
            response = c.get(server.url("/fail-before"))
        assert response.status_code == 500 and "no such widget" in response.text

    def test_access_log_and_metrics(self, server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, "kyoukai.access")
        with h1() as c1, h2() as c2:
            c1.get(server.url("/echo"))
            c2.get(server.url("/big?1"))
        assert '"GET /echo HTTP/1.1" 200' in caplog.text and '"GET /big?1 HTTP/2" 200' in caplog.text
        snapshot = server.component.metrics.snapshot()
        assert snapshot["requests"] == 2


class TestWebSocket:
    def test_echo_over_http11(self, server: RunningServer, probe: Probe) -> None:
        with ws_client.connect(f"ws://127.0.0.1:{server.port}/chat", subprotocols=["v1", "v2"]) as ws:
            assert ws.subprotocol == "v2" and ws.response.headers["x-room"] == "lobby"
            assert ws.recv() == "ws 1.1 v2"
            ws.send("hello")
            assert ws.recv() == "HELLO"
            ws.send(b"abc")
            assert ws.recv() == b"cba"
        assert probe.get() == {"type": "websocket.disconnect", "code": 1000, "reason": ""}

    def test_close_with_a_code(self, server: RunningServer, probe: Probe) -> None:
        with ws_client.connect(f"ws://127.0.0.1:{server.port}/chat") as ws:
            ws.recv()
            ws.send("bye")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv()
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "asked to leave")
        assert probe.get()["type"] == "websocket.disconnect"

    def test_close_before_accept_is_403(self, server: RunningServer) -> None:
        with pytest.raises(InvalidStatus) as refused:
            ws_client.connect(f"ws://127.0.0.1:{server.port}/refuse")
        assert refused.value.response.status_code == 403

    def test_denial_response(self, server: RunningServer) -> None:
        with pytest.raises(InvalidStatus) as denied:
            ws_client.connect(f"ws://127.0.0.1:{server.port}/deny")
        response = denied.value.response
        assert (response.status_code, response.body) == (401, b"who are you?\n")
        assert response.headers["www-authenticate"] == "Bearer"

    def test_returning_without_an_answer_is_500(self, server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
        with pytest.raises(InvalidStatus) as refused:
            ws_client.connect(f"ws://127.0.0.1:{server.port}/silent")
        assert refused.value.response.status_code == 500
        assert "without accepting or closing the WebSocket" in caplog.text

    def test_server_stop_closes_with_1001(self, probe: Probe) -> None:
        server = RunningServer(KyoukaiComponent(make_app(probe), ip="127.0.0.1", port=0)).start()
        try:
            with ws_client.connect(f"ws://127.0.0.1:{server.port}/chat") as ws:
                ws.recv()
                server.call(server.component.stop())
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv()
        finally:
            server.stop()
        assert closed.value.rcvd.code == 1001
        assert probe.get() == {"type": "websocket.disconnect", "code": 1001, "reason": "the server is shutting down"}

    def test_over_http2(self, server: RunningServer, probe: Probe) -> None:
        with H2Client(server.port) as client:
            client.wait_ready()
            ws = H2WebSocket(client, "/chat", subprotocols=["v2"])
            assert ws.opened().status == 200
            assert ws.receive() == "ws 2 v2"
            ws.send("over h2")
            assert ws.receive() == "OVER H2"
            ws.close()
            ws.wait_ended()
        assert probe.get() == {"type": "websocket.disconnect", "code": 1000, "reason": ""}

    def test_denial_over_http2(self, server: RunningServer) -> None:
        with H2Client(server.port) as client:
            client.wait_ready()
            ws = H2WebSocket(client, "/deny")
            stream = ws.wait_ended()
        assert (stream.status, bytes(stream.data)) == (401, b"who are you?\n")


class TestLifespan:
    def test_startup_state_and_shutdown(self) -> None:
        events: list[str] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    events.append(message["type"])
                    if message["type"] == "lifespan.startup":
                        scope["state"]["pool"] = "connected"
                        await send({"type": "lifespan.startup.complete"})
                    else:
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            await read_body(receive)
            scope["state"]["pool"] += " (changed by a request)"
            await respond(send, 200, scope["state"]["pool"].encode())

        with serve(app) as server:
            assert events == ["lifespan.startup"], "the startup runs before the server listens"
            with h1() as c:
                assert c.get(server.url("/")).text == "connected (changed by a request)"
                assert c.get(server.url("/")).text == "connected (changed by a request)", "each gets a copy"
        assert events == ["lifespan.startup", "lifespan.shutdown"]

    @pytest.mark.parametrize("how", ["failed", "raised"])
    def test_failed_startup_stops_the_start(self, how: str) -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            assert scope["type"] == "lifespan"
            await receive()
            if how == "raised":
                raise ConnectionRefusedError("the database is down")
            await send({"type": "lifespan.startup.failed", "message": "the database is down"})

        component = KyoukaiComponent(app, ip="127.0.0.1", port=0)
        server = RunningServer(component)
        with pytest.raises(LifespanError, match="the database is down"):
            server.start()
        assert component.server is None, "nothing listens"
        server.stop()

    def test_an_app_without_lifespan_is_served(self, server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
        with h1() as c:
            assert c.get(server.url("/echo")).status_code == 200

    def test_unsupported_is_logged(self, probe: Probe, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, "kyoukai.asgi")
        with serve(make_app(probe)):
            pass
        assert "does not support the lifespan protocol (it raised RuntimeError: no lifespan here" in caplog.text

    def test_lifespan_on_refuses_an_app_without_it(self, probe: Probe) -> None:
        server = RunningServer(KyoukaiComponent(make_app(probe), ip="127.0.0.1", port=0, lifespan="on"))
        with pytest.raises(LifespanError, match="does not support the lifespan protocol"):
            server.start()
        server.stop()

    def test_one_lifespan_for_two_ports(self) -> None:
        events: list[str] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    events.append(message["type"])
                    await send({"type": message["type"] + ".complete"})
                    if message["type"] == "lifespan.shutdown":
                        return
            await read_body(receive)
            await respond(send, 200, b"ok")

        with serve(app) as first, serve(app, H2KyoukaiComponent) as second:
            with h1() as c1, h2() as c2:
                assert c1.get(first.url()).text == c2.get(second.url()).text == "ok"
            assert events == ["lifespan.startup"]
        assert events == ["lifespan.startup", "lifespan.shutdown"]


async def asgi_function(scope: Any, receive: Any, send: Any) -> None:
    """A module-level ASGI app, for references."""
    if scope["type"] != "http":
        return
    await read_body(receive)
    await respond(send, 200, b"by reference")


class ASGIClass:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await asgi_function(scope, receive, send)


class TestRecognising:
    def test_asgi_apps(self) -> None:
        assert is_asgi_app(asgi_function) and is_asgi_app(ASGIClass())

    @pytest.mark.parametrize("obj", [ASGIClass, print, lambda scope, receive, send: None, "text", None])
    def test_not_asgi_apps(self, obj: Any) -> None:
        assert not is_asgi_app(obj)

    def test_two_arguments_is_not_asgi3(self) -> None:
        async def asgi2_style(scope: Any, receive: Any) -> None: ...

        assert not is_asgi_app(asgi2_style)

    def test_served_application(self) -> None:
        kyoukai_app = Kyoukai("k")
        assert served_application(kyoukai_app) is kyoukai_app
        wrapped = served_application(asgi_function)
        assert isinstance(wrapped, ASGIApplication) and wrapped.asgi_app is asgi_function
        assert served_application(asgi_function) is wrapped, "one wrapper per app: one lifespan"

    def test_interface_asgi_serves_a_callable_auto_does_not_recognise(self) -> None:
        def sync_wrapper(scope: Any, receive: Any, send: Any) -> Any:
            return asgi_function(scope, receive, send)

        with pytest.raises(TypeError, match="interface: asgi"):
            served_application(sync_wrapper)
        assert isinstance(served_application(sync_wrapper, "asgi"), ASGIApplication)

    @pytest.mark.parametrize(
        ("app", "interface", "message"),
        [
            (asgi_function, "kyoukai", "must be a Kyoukai application"),
            (Kyoukai("k"), "asgi", "is a Kyoukai application"),
            (ASGIClass, "auto", "not the class ASGIClass"),
            (object(), "auto", "or an ASGI 3 application"),
        ],
    )
    def test_mismatches(self, app: Any, interface: str, message: str) -> None:
        with pytest.raises(TypeError, match=message):
            KyoukaiComponent(app, interface=interface)

    def test_unknown_interface(self) -> None:
        with pytest.raises(ValueError, match="config key 'interface' must be one of auto, kyoukai, asgi"):
            KyoukaiComponent(asgi_function, interface="wsgi")

    def test_a_reference(self) -> None:
        with serve("test_asgi_serve:asgi_function") as server, h1() as c:
            assert c.get(server.url()).text == "by reference"

    @pytest.mark.parametrize(
        ("key", "value", "message"),
        [
            ("root_path", "api", "'root_path' must be empty or a path starting with '/'"),
            ("lifespan", "sometimes", "'lifespan' must be one of auto, on, off"),
            ("disconnect_timeout", 0, "'disconnect_timeout' must be a positive number"),
        ],
    )
    def test_bad_config(self, key: str, value: Any, message: str) -> None:
        app = ASGIApplication(ASGIClass(), **{key: value})
        with pytest.raises(ValueError, match=message):
            app.finalize()
