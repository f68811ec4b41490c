"""
A Kyoukai app on other ASGI servers (``app.asgi``, :func:`kyoukai.asgi.to_asgi`): real uvicorn
and Hypercorn on 127.0.0.1, talked to with httpx (HTTP/1.1, and HTTP/2 with prior knowledge on
Hypercorn), the ``websockets`` client, and a raw HTTP/2 client for Early Hints and trailers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import hypercorn.asyncio
import hypercorn.config
import pytest
import uvicorn
import websockets.exceptions
import websockets.sync.client
from asphalt.core import Component, Context
from h2client import H2Client, read_http11_responses
from hypercorn.utils import LifespanFailureError
from werkzeug.exceptions import Forbidden
from werkzeug.wrappers import Response

from kyoukai import Kyoukai, WebSocketDisconnect
from kyoukai.asgi import KyoukaiASGI, to_asgi
from kyoukai.util import SERVER_TOKEN

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0
ROOT_PATH = "/api"


class Greeting(Component):
    """Publishes a resource, and records when its context is torn down."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.closed = threading.Event()

    async def start(self, ctx: Context) -> None:
        ctx.add_resource("Hello", "greeting")
        ctx.add_teardown_callback(self.closed.set)
        self.started.set()


def make_app() -> tuple[Kyoukai, dict[str, Any]]:
    """The app under test, and what its handlers record (read from the test thread)."""
    app = Kyoukai("asgitest", max_body_size=1024)
    seen: dict[str, Any] = {"stream_closed": threading.Event(), "ws_disconnects": queue.Queue()}

    @app.before_request
    async def refuse_private(ctx):
        if ctx.request.path.startswith("/ws/private") and ctx.request.args.get("token") != "secret":
            raise Forbidden("a token is needed")
        return ctx

    @app.after_request
    async def mark(ctx, response):
        response.headers["X-After"] = "yes"
        return response

    @app.errorhandler(404)
    async def not_found(ctx, exc):
        return f"no page at {ctx.request.path}", 404

    @app.route("/")
    async def index(ctx):
        return "hello"

    @app.route("/users/<int:user_id>")
    async def user(ctx, user_id: int):
        return {"id": user_id, "url": ctx.url_for("asgitest.user", user_id=user_id)}

    @app.route("/info")
    async def info(ctx):
        environ = ctx.request.environ
        return {
            "protocol": environ["SERVER_PROTOCOL"],
            "script_name": environ["SCRIPT_NAME"],
            "path_info": environ["PATH_INFO"],
            "query": ctx.request.args.get("q"),
            "remote_addr": ctx.request.remote_addr,
            "greeting": ctx.require_resource(str, "greeting"),
        }

    @app.route("/files/<path:name>")
    async def files(ctx, name: str):
        return {"name": name}

    @app.route("/stream")
    async def stream(ctx):
        async def parts():
            for word in ("one ", "two ", "three"):
                yield word
                await asyncio.sleep(0)

        return Response(parts(), content_type="text/plain")

    @app.route("/forever")
    async def forever(ctx):
        async def parts():
            try:
                yield b"first\n"
                await asyncio.Event().wait()  # until the client leaves
            finally:
                seen["stream_closed"].set()

        return Response(parts(), content_type="text/plain")

    @app.route("/upload", methods=["POST"], stream_body=True)
    async def upload(ctx):
        digest = hashlib.sha256()
        size = 0
        async for chunk in ctx.request.stream:
            digest.update(chunk)
            size += len(chunk)
        return {"size": size, "sha256": digest.hexdigest()}

    @app.route("/echo", methods=["POST"], stream_body=True)
    async def echo_body(ctx):
        async def parts():
            async for chunk in ctx.request.stream:  # read while the response is sent
                yield chunk

        return Response(parts(), content_type="application/octet-stream")

    @app.route("/form", methods=["POST"])
    async def form(ctx):
        return {"name": ctx.request.form["name"]}

    @app.route("/boom")
    async def boom(ctx):
        raise RuntimeError("the handler failed")

    @app.route("/hints")
    async def hints(ctx):
        await ctx.send_informational(103, [("Link", "</style.css>; rel=preload")])
        response = Response("hinted")
        response.trailers = [("X-Checksum", "abc")]
        return response

    @app.websocket("/ws/echo")
    async def echo(ctx):
        ws = ctx.websocket
        await ws.accept(subprotocol="v2" if "v2" in ws.subprotocols else None)
        try:
            while True:
                message = await ws.receive()
                if message == "bye":
                    await ws.close(4000, "asked to leave")
                    return
                await ws.send(message)
        except WebSocketDisconnect as e:
            seen["ws_disconnects"].put(e.code)

    @app.websocket("/ws/private")
    async def private(ctx):
        await ctx.websocket.send("welcome")

    @app.websocket("/ws/refused")
    async def refused(ctx):
        await ctx.websocket.close()

    @app.websocket("/ws/fail")
    async def fail(ctx):
        await ctx.websocket.send("about to fail")
        raise RuntimeError("the WebSocket handler failed")

    return app, seen


ServeFunction = Callable[[Any, socket.socket, asyncio.Event], Awaitable[None]]


class ServerExited(Exception):
    """uvicorn called ``sys.exit(code)`` (its startup failed)."""


async def run_uvicorn(asgi: Any, sock: socket.socket, stop: asyncio.Event, *, lifespan: str = "on") -> None:
    config = uvicorn.Config(asgi, lifespan=lifespan, log_config=None, log_level="warning", root_path=ROOT_PATH)
    server = uvicorn.Server(config)

    async def exit_on_stop() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.ensure_future(exit_on_stop())
    try:
        await server.serve(sockets=[sock])
    except SystemExit as e:
        # Caught here, in the coroutine: out of a task it would escape the event loop and
        # leave that task's exception unretrieved.
        raise ServerExited(e.code) from None
    finally:
        watcher.cancel()


async def run_hypercorn(asgi: Any, sock: socket.socket, stop: asyncio.Event) -> None:
    config = hypercorn.config.Config()
    config.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns the socket from here
    config.root_path = ROOT_PATH
    await hypercorn.asyncio.serve(asgi, config, shutdown_trigger=stop.wait)


SERVERS: dict[str, ServeFunction] = {"uvicorn": run_uvicorn, "hypercorn": run_hypercorn}


class ServerThread:
    """An ASGI server on a listening socket bound here, in its own thread and event loop."""

    def __init__(self, kind: str, asgi: Any, serve: ServeFunction | None = None) -> None:
        self.kind = kind
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        # Listening before the server starts: the first requests wait in the backlog until it
        # has started (lifespan included), with no polling.
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        # (A loop factory: the runner then leaves the main thread's event loop alone.)
        self._runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
        self.loop = self._runner.get_loop()
        self._stop = asyncio.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(serve or SERVERS[kind], asgi), daemon=True)
        self._thread.start()

    def _run(self, serve: ServeFunction, asgi: Any) -> None:
        try:
            # The runner cancels what is left when the server stops, or fails.
            with self._runner:
                self._runner.run(serve(asgi, self.sock, self._stop))
        except BaseException as e:  # reported by stop()
            self.error = e
        finally:
            self.sock.close()

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed already if the server failed
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), f"{self.kind} did not stop"
        if self.error is not None:
            raise self.error


@contextlib.contextmanager
def served(kind: str, asgi: Any, serve: ServeFunction | None = None) -> Iterator[ServerThread]:
    server = ServerThread(kind, asgi, serve)
    try:
        yield server
    finally:
        server.stop()


class Served:
    """A server running the test app, what its handlers recorded, and a client."""

    def __init__(self, server: ServerThread, seen: dict[str, Any]) -> None:
        self.server = server
        self.seen = seen
        self.client = httpx.Client(base_url=server.url(), timeout=TIMEOUT)

    @property
    def kind(self) -> str:
        return self.server.kind


@pytest.fixture(scope="module", params=sorted(SERVERS))
def on(request: pytest.FixtureRequest) -> Iterator[Served]:
    """The test app served by each server in turn."""
    app, seen = make_app()
    with served(request.param, to_asgi(app, component=Greeting())) as server:
        target = Served(server, seen)
        with target.client:
            yield target


class TestHTTP:
    def test_route_with_hooks_and_server_headers(self, on: Served) -> None:
        response = on.client.get("/")
        assert response.status_code == 200
        assert response.text == "hello"
        assert response.headers["x-after"] == "yes"
        assert response.headers["x-powered-by"] == SERVER_TOKEN
        assert SERVER_TOKEN in response.headers.get_list("server")
        # The server adds its own Date: Kyoukai does not add a second one.
        assert len(response.headers.get_list("date")) == 1

    def test_path_parameters_json_and_url_for(self, on: Served) -> None:
        response = on.client.get("/users/42")
        assert response.headers["content-type"] == "application/json"
        # url_for includes the root path the server was told about (SCRIPT_NAME).
        assert response.json() == {"id": 42, "url": f"{ROOT_PATH}/users/42"}

    def test_environ(self, on: Served) -> None:
        info = on.client.get("/info", params={"q": "a b"}).json()
        assert info == {
            "protocol": "HTTP/1.1",
            "script_name": ROOT_PATH,
            "path_info": "/info",
            "query": "a b",
            "remote_addr": "127.0.0.1",
            "greeting": "Hello",  # the resource the component published at startup
        }

    def test_path_is_percent_decoded(self, on: Served) -> None:
        # %2F stays inside the one parameter (raw_path), UTF-8 is decoded as PEP 3333 says.
        response = on.client.get("/files/a%2Fb/%C3%A9t%C3%A9.txt")
        assert response.json() == {"name": "a/b/été.txt"}

    def test_streaming_response(self, on: Served) -> None:
        with on.client.stream("GET", "/stream") as response:
            assert response.headers["transfer-encoding"] == "chunked"
            assert "content-length" not in response.headers
            assert b"".join(response.iter_raw()) == b"one two three"

    def test_head_has_no_body(self, on: Served) -> None:
        response = on.client.head("/")
        assert response.status_code == 200
        assert response.headers["content-length"] == "5"
        assert response.content == b""

    def test_streamed_upload_is_not_bound_by_max_body_size(self, on: Served) -> None:
        pieces = [os.urandom(64 * 1024) for _ in range(8)]
        response = on.client.post("/upload", content=iter(pieces))
        whole = b"".join(pieces)
        assert response.json() == {"size": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}

    def test_request_body_read_by_the_streaming_response(self, on: Served) -> None:
        pieces = [os.urandom(32 * 1024) for _ in range(4)]
        response = on.client.post("/echo", content=iter(pieces))
        assert response.content == b"".join(pieces)

    def test_form_body(self, on: Served) -> None:
        response = on.client.post("/form", data={"name": "Kyoukai"})
        assert response.json() == {"name": "Kyoukai"}
        assert "connection" not in response.headers

    def test_body_over_max_body_size_is_413(self, on: Served) -> None:
        response = on.client.post("/form", content=b"name=" + b"x" * 2000)
        assert response.status_code == 413
        response = on.client.post("/form", content=iter([b"name=", b"x" * 2000]))  # chunked: no length
        assert response.status_code == 413

    @pytest.mark.parametrize("path", ["/form", "/nowhere"])
    def test_connection_kept_after_an_unread_body(self, on: Served, path: str) -> None:
        # A 413, and a 404 to a POST: the app reads no body, the adapter drops it, and the
        # server keeps the connection for the next request.
        body = b"name=" + b"x" * 2000
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n"
        with socket.create_connection(("127.0.0.1", on.server.port), timeout=TIMEOUT) as sock:
            sock.sendall(head.encode())
            sock.sendall(body)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            (refused, _), (second, text) = read_http11_responses(sock, 2)
        assert refused.startswith(b"HTTP/1.1 413" if path == "/form" else b"HTTP/1.1 404")
        assert second.startswith(b"HTTP/1.1 200") and text == b"hello"

    def test_not_found_goes_to_the_error_handler(self, on: Served) -> None:
        response = on.client.get("/nowhere")
        assert response.status_code == 404
        assert response.text == "no page at /nowhere"

    def test_method_not_allowed(self, on: Served) -> None:
        response = on.client.post("/")
        assert response.status_code == 405
        assert {"GET", "HEAD"} <= set(response.headers["allow"].split(", "))

    def test_exception_is_500(self, on: Served) -> None:
        response = on.client.get("/boom")
        assert response.status_code == 500
        assert "Internal Server Error" in response.text
        assert response.headers["x-powered-by"] == SERVER_TOKEN

    def test_early_hints_are_skipped_where_unsupported(self, on: Served) -> None:
        response = on.client.get("/hints")
        assert (response.status_code, response.text) == (200, "hinted")

    def test_client_leaving_stops_a_streaming_response(self, on: Served) -> None:
        on.seen["stream_closed"].clear()
        with on.client.stream("GET", "/forever") as response:
            assert next(response.iter_raw()) == b"first\n"
        # Closing the response closed the connection: the generator is closed in turn.
        assert on.seen["stream_closed"].wait(TIMEOUT)


@pytest.fixture(scope="module")
def hypercorn_on() -> Iterator[Served]:
    """The test app on Hypercorn alone (uvicorn serves HTTP/1.1 only)."""
    app, seen = make_app()
    with served("hypercorn", to_asgi(app, component=Greeting())) as server:
        target = Served(server, seen)
        with target.client:
            yield target


class TestHypercornHTTP2:
    def test_prior_knowledge(self, hypercorn_on: Served) -> None:
        with httpx.Client(http1=False, http2=True, base_url=hypercorn_on.server.url(), timeout=TIMEOUT) as client:
            response = client.get("/info")
            assert response.http_version == "HTTP/2"
            assert response.json()["protocol"] == "HTTP/2"
            with client.stream("GET", "/stream") as streamed:
                assert b"".join(streamed.iter_raw()) == b"one two three"

    def test_early_hints_and_trailers(self, hypercorn_on: Served) -> None:
        with H2Client(hypercorn_on.server.port) as client:
            stream_id = client.request("/hints", headers=[("te", "trailers")])
            stream = client.response(stream_id)
        assert stream.status == 200
        [hints] = stream.informational
        assert hints[0] == (":status", "103")
        assert ("link", "</style.css>; rel=preload") in hints
        assert bytes(stream.data) == b"hinted"
        assert stream.trailers == [("x-checksum", "abc")]


class TestWebSocket:
    def test_echo_with_subprotocol(self, on: Served) -> None:
        url = on.server.url("/ws/echo", "ws")
        with websockets.sync.client.connect(url, subprotocols=["v1", "v2"], open_timeout=TIMEOUT) as ws:
            assert ws.subprotocol == "v2"
            assert ws.response.headers["X-Powered-By"] == SERVER_TOKEN
            ws.send("text")
            assert ws.recv(TIMEOUT) == "text"
            ws.send(b"\x00binary")
            assert ws.recv(TIMEOUT) == b"\x00binary"
            ws.send("bye")
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                ws.recv(TIMEOUT)
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "asked to leave")

    def test_client_close_ends_the_handler(self, on: Served) -> None:
        with websockets.sync.client.connect(on.server.url("/ws/echo", "ws"), open_timeout=TIMEOUT) as ws:
            ws.send("ping")
            assert ws.recv(TIMEOUT) == "ping"
            ws.close(4001, "done")
        # The handler's receive() raised WebSocketDisconnect with the code the server reports:
        # uvicorn passes the client's code on, Hypercorn says 1000 or 1006 whatever the client sent.
        code = on.seen["ws_disconnects"].get(timeout=TIMEOUT)
        assert code == (4001 if on.kind == "uvicorn" else 1006)

    def test_refused_by_a_hook(self, on: Served) -> None:
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            websockets.sync.client.connect(on.server.url("/ws/private", "ws"), open_timeout=TIMEOUT)
        assert refused.value.response.status_code == 403
        # Both servers offer websocket.http.response: the app's own 403 page goes out.
        assert b"a token is needed" in refused.value.response.body
        with websockets.sync.client.connect(on.server.url("/ws/private?token=secret", "ws")) as ws:
            assert ws.recv(TIMEOUT) == "welcome"

    def test_refused_by_the_handler(self, on: Served) -> None:
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            websockets.sync.client.connect(on.server.url("/ws/refused", "ws"), open_timeout=TIMEOUT)
        assert refused.value.response.status_code == 403

    def test_no_such_route(self, on: Served) -> None:
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            websockets.sync.client.connect(on.server.url("/ws/nowhere", "ws"), open_timeout=TIMEOUT)
        assert refused.value.response.status_code == 404
        assert refused.value.response.body == b"no page at /ws/nowhere"

    def test_handler_error_closes_with_1011(self, on: Served) -> None:
        with websockets.sync.client.connect(on.server.url("/ws/fail", "ws"), open_timeout=TIMEOUT) as ws:
            assert ws.recv(TIMEOUT) == "about to fail"
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                ws.recv(TIMEOUT)
        assert closed.value.rcvd.code == 1011


class TestLifespan:
    @pytest.mark.parametrize("kind", sorted(SERVERS))
    def test_startup_and_shutdown(self, kind: str) -> None:
        app, _ = make_app()
        component = Greeting()
        asgi = to_asgi(app, component=component)
        with served(kind, asgi) as server:
            assert httpx.get(server.url("/info"), timeout=TIMEOUT).json()["greeting"] == "Hello"
            assert component.started.is_set()
            assert asgi.context is not None
            assert not component.closed.is_set()
        assert component.closed.is_set()
        assert asgi.context is None

    def test_failed_startup_stops_uvicorn(self, caplog: pytest.LogCaptureFixture) -> None:
        server = ServerThread("uvicorn", Kyoukai("broken", max_body_size=-1).asgi)
        with pytest.raises(ServerExited) as exited:
            server.stop()
        assert exited.value.args == (3,)  # uvicorn's "startup failed"
        assert "config key 'max_body_size' must be a positive number, not -1" in caplog.text

    async def test_failed_startup_stops_hypercorn(self) -> None:
        config = hypercorn.config.Config()
        config.bind = ["127.0.0.1:0"]  # never bound: the lifespan comes first
        asgi = Kyoukai("broken", max_body_size=-1).asgi
        with pytest.raises(LifespanFailureError) as failed:
            # (A shutdown trigger of our own: without one Hypercorn takes over the signals.)
            await asyncio.wait_for(
                hypercorn.asyncio.serve(asgi, config, shutdown_trigger=asyncio.Event().wait), TIMEOUT
            )
        assert "config key 'max_body_size' must be a positive number, not -1" in str(failed.value)

    def test_without_lifespan_the_first_request_starts_the_app(self) -> None:
        app, _ = make_app()
        component = Greeting()
        asgi = to_asgi(app, component=component)
        with served("uvicorn", asgi, functools.partial(run_uvicorn, lifespan="off")) as server:
            assert not component.started.is_set()
            assert httpx.get(server.url("/info"), timeout=TIMEOUT).json()["greeting"] == "Hello"
        assert not component.closed.is_set()  # nothing tells the app the server stopped


def test_app_asgi_is_one_adapter() -> None:
    app, _ = make_app()
    assert isinstance(app.asgi, KyoukaiASGI)
    assert app.asgi is app.asgi
    assert app.asgi.app is app


class TestExample:
    def test_uvicorn_command_line(self, tmp_path: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        log = (tmp_path / "uvicorn.log").open("w+")
        command = [sys.executable, "-m", "uvicorn", "examples.asgi.kyoukai_on_uvicorn:asgi", "--port", str(port)]
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(process, port)
            base = f"http://127.0.0.1:{port}"
            assert httpx.get(base + "/", timeout=TIMEOUT).text == "Hello from Kyoukai on an ASGI server!\n"
            assert httpx.get(base + "/hello/World", timeout=TIMEOUT).json() == {"hello": "World"}
            with websockets.sync.client.connect(f"ws://127.0.0.1:{port}/echo", open_timeout=TIMEOUT) as ws:
                ws.send("echo?")
                assert ws.recv(TIMEOUT) == "echo?"
        finally:
            process.send_signal(signal.SIGINT)
            code = process.wait(TIMEOUT)
            log.seek(0)
            output = log.read()
            log.close()
        assert code == 0, output
        assert "Application startup complete" in output
        assert "Application shutdown complete" in output


def wait_for_port(process: subprocess.Popen, port: int) -> None:
    """Poll until the external process accepts connections on ``port``."""
    deadline = time.monotonic() + 20
    while True:
        assert process.poll() is None, "the server exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
