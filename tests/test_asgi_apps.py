"""
Real ASGI applications on Kyoukai's engines: Starlette (routing, streaming both ways, a
background task, a WebSocket, lifespan state), FastAPI (JSON, validation errors, a dependency)
and Quart, each over HTTP/1.1 and HTTP/2 (h2c, and TLS on the HTTP/2-only component), with
httpx, curl and the ``websockets`` client; and the Starlette example run as users run it:
``kyoukai run``, ``asphalt run examples/asgi/config.yml`` and the gunicorn worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import signal
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.sync.client as ws_client
from conftest import RunningServer, serve
from fastapi import Depends, FastAPI, HTTPException
from fastapi import WebSocket as FastAPIWebSocket
from pydantic import BaseModel
from quart import Quart
from quart import request as quart_request
from quart import websocket as quart_websocket
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from test_cli import KyoukaiCommand, run_to_exit
from test_examples import RunningExample, asphalt_command, free_port
from test_gunicorn import Gunicorn

from kyoukai.asgi.lifespan import LifespanError
from kyoukai.asphalt import KyoukaiComponent
from kyoukai.backends.http2 import H2KyoukaiComponent

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0
STATIC = Path(__file__).resolve()

# Starlette

background_done: queue.Queue[str] = queue.Queue()


@contextlib.asynccontextmanager
async def starlette_lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {"database": "connected"}


async def homepage(request: Request) -> PlainTextResponse:
    async def after() -> None:
        background_done.put(request.url.path)

    version = request.scope["http_version"]
    return PlainTextResponse(f"Starlette over HTTP/{version}", background=BackgroundTask(after))


async def item(request: Request) -> JSONResponse:
    return JSONResponse({"item": request.path_params["item_id"], "database": request.state.database})


async def lines(request: Request) -> StreamingResponse:
    async def generate() -> AsyncIterator[str]:
        for n in range(1000):
            yield f"line {n}\n"

    return StreamingResponse(generate(), media_type="text/plain")


async def upload(request: Request) -> JSONResponse:
    digest, size = hashlib.sha256(), 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return JSONResponse({"size": size, "sha256": digest.hexdigest()})


async def source(request: Request) -> FileResponse:
    return FileResponse(STATIC)


async def starlette_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for message in websocket.iter_text():
        await websocket.send_text(f"starlette: {message}")


starlette_app = Starlette(
    routes=[
        Route("/", homepage),
        Route("/items/{item_id:int}", item),
        Route("/lines", lines),
        Route("/upload", upload, methods=["POST"]),
        Route("/source", source),
        WebSocketRoute("/ws", starlette_echo),
    ],
    lifespan=starlette_lifespan,
)

# FastAPI

fastapi_app = FastAPI()


class Item(BaseModel):
    name: str
    price: float


def pagination(limit: int = 10, offset: int = 0) -> dict[str, int]:
    return {"limit": limit, "offset": offset}


@fastapi_app.get("/items/{item_id}")
async def read_item(item_id: int, page: dict[str, int] = Depends(pagination)) -> dict[str, Any]:
    if item_id == 404:
        raise HTTPException(status_code=404, detail="no such item")
    return {"item_id": item_id, **page}


@fastapi_app.post("/items")
async def create_item(new: Item) -> dict[str, Any]:
    return {"created": new.name, "price": new.price}


@fastapi_app.websocket("/ws")
async def fastapi_echo(websocket: FastAPIWebSocket) -> None:
    await websocket.accept()
    async for message in websocket.iter_text():
        await websocket.send_text(f"fastapi: {message}")


# Quart

quart_app = Quart("quart_on_kyoukai")


@quart_app.route("/")
async def quart_index() -> str:
    return f"Quart over HTTP/{quart_request.http_version}"


@quart_app.route("/echo", methods=["POST"])
async def quart_echo() -> bytes:
    return await quart_request.get_data()


@quart_app.route("/stream")
async def quart_stream() -> Any:
    async def generate() -> AsyncIterator[bytes]:
        for n in range(100):
            yield f"chunk {n}\n".encode()

    return generate(), 200, {"Content-Type": "text/plain"}


@quart_app.websocket("/ws")
async def quart_ws() -> None:
    while True:
        message = await quart_websocket.receive()
        await quart_websocket.send(f"quart: {message}")


# clients


def h1() -> httpx.Client:
    return httpx.Client(timeout=TIMEOUT)


def h2() -> httpx.Client:
    return httpx.Client(http1=False, http2=True, timeout=TIMEOUT)


def curl(*args: str) -> str:
    result = subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", str(TIMEOUT), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT + 5,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


CLIENTS = [pytest.param(h1, id="http1.1"), pytest.param(h2, id="h2c")]


@pytest.fixture(scope="module")
def starlette_server() -> Iterator[RunningServer]:
    with serve(starlette_app, http2=True) as server:
        yield server


@pytest.fixture(scope="module")
def fastapi_server() -> Iterator[RunningServer]:
    with serve(fastapi_app, http2=True) as server:
        yield server


@pytest.fixture(scope="module")
def quart_server() -> Iterator[RunningServer]:
    with serve(quart_app, http2=True) as server:
        yield server


class TestStarlette:
    @pytest.mark.parametrize("client", CLIENTS)
    def test_routing_and_background_task(self, starlette_server: RunningServer, client: Any) -> None:
        with client() as c:
            response = c.get(starlette_server.url("/"))
            version = "2" if client is h2 else "1.1"
            assert (response.status_code, response.text) == (200, f"Starlette over HTTP/{version}")
            assert background_done.get(timeout=TIMEOUT) == "/"
            assert c.get(starlette_server.url("/items/7")).json() == {"item": 7, "database": "connected"}
            assert c.get(starlette_server.url("/items/x")).status_code == 404

    @pytest.mark.parametrize("client", CLIENTS)
    def test_streaming_response(self, starlette_server: RunningServer, client: Any) -> None:
        with client() as c, c.stream("GET", starlette_server.url("/lines")) as response:
            assert "content-length" not in response.headers
            received = list(response.iter_lines())
        assert received == [f"line {n}" for n in range(1000)]

    @pytest.mark.parametrize("client", CLIENTS)
    def test_request_streaming(self, starlette_server: RunningServer, client: Any) -> None:
        body = bytes(range(256)) * 8192  # 2 MiB

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(body), 100_000):
                yield body[start : start + 100_000]

        with client() as c:
            result = c.post(starlette_server.url("/upload"), content=chunks()).json()
        assert result == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}

    @pytest.mark.parametrize("client", CLIENTS)
    def test_file_response(self, starlette_server: RunningServer, client: Any) -> None:
        with client() as c:
            response = c.get(starlette_server.url("/source"))
        assert response.content == STATIC.read_bytes()
        assert response.headers["content-length"] == str(STATIC.stat().st_size)

    def test_curl(self, starlette_server: RunningServer) -> None:
        assert curl(starlette_server.url("/")) == "Starlette over HTTP/1.1"
        assert curl("--http2-prior-knowledge", starlette_server.url("/")) == "Starlette over HTTP/2"
        assert curl("--http2", starlette_server.url("/")) == "Starlette over HTTP/2", "Upgrade: h2c"
        lines_h2 = curl("--http2-prior-knowledge", starlette_server.url("/lines")).splitlines()
        assert lines_h2[0] == "line 0" and lines_h2[-1] == "line 999"

    def test_websocket(self, starlette_server: RunningServer) -> None:
        with ws_client.connect(f"ws://127.0.0.1:{starlette_server.port}/ws") as ws:
            ws.send("hello")
            assert ws.recv() == "starlette: hello"

    def test_http2_over_tls(self, tls_files: dict[str, str]) -> None:
        component = {"ssl_keyfile": tls_files["key"], "ssl_certfile": tls_files["cert"]}
        with serve(starlette_app, H2KyoukaiComponent, **component) as server:
            verify = ssl.create_default_context(cafile=tls_files["ca"])
            with httpx.Client(http2=True, verify=verify, timeout=TIMEOUT) as c:
                response = c.get(server.url("/items/3", "https"))
            assert response.http_version == "HTTP/2"
            assert response.json() == {"item": 3, "database": "connected"}
            output = curl("--cacert", tls_files["ca"], "--http2", f"https://localhost:{server.port}/")
            assert output == "Starlette over HTTP/2"

    def test_failing_startup_stops_the_start(self) -> None:
        @contextlib.asynccontextmanager
        async def broken(app: Starlette) -> AsyncIterator[None]:
            raise ConnectionRefusedError("the database is down")
            yield

        server = RunningServer(KyoukaiComponent(Starlette(lifespan=broken), ip="127.0.0.1", port=0))
        with pytest.raises(LifespanError, match="ConnectionRefusedError: the database is down"):
            server.start()
        assert server.component.server is None, "nothing listens"
        server.stop()


class TestFastAPI:
    @pytest.mark.parametrize("client", CLIENTS)
    def test_json_and_a_dependency(self, fastapi_server: RunningServer, client: Any) -> None:
        with client() as c:
            assert c.get(fastapi_server.url("/items/5?limit=3")).json() == {"item_id": 5, "limit": 3, "offset": 0}
            created = c.post(fastapi_server.url("/items"), json={"name": "widget", "price": 2.5})
            assert created.json() == {"created": "widget", "price": 2.5}
            missing = c.get(fastapi_server.url("/items/404"))
            assert (missing.status_code, missing.json()) == (404, {"detail": "no such item"})

    @pytest.mark.parametrize("client", CLIENTS)
    def test_validation_error_is_422(self, fastapi_server: RunningServer, client: Any) -> None:
        with client() as c:
            bad_path = c.get(fastapi_server.url("/items/seven"))
            bad_body = c.post(fastapi_server.url("/items"), json={"name": "widget"})
        assert bad_path.status_code == bad_body.status_code == 422
        assert bad_body.json()["detail"][0]["loc"] == ["body", "price"]

    def test_curl(self, fastapi_server: RunningServer) -> None:
        url = fastapi_server.url("/items/9")
        assert curl(url) == curl("--http2-prior-knowledge", url) == '{"item_id":9,"limit":10,"offset":0}'
        invalid = curl("--http2-prior-knowledge", "--json", '{"name": "x"}', fastapi_server.url("/items"))
        assert '"loc":["body","price"]' in invalid

    def test_websocket(self, fastapi_server: RunningServer) -> None:
        with ws_client.connect(f"ws://127.0.0.1:{fastapi_server.port}/ws") as ws:
            ws.send("hello")
            assert ws.recv() == "fastapi: hello"


class TestQuart:
    @pytest.mark.parametrize("client", CLIENTS)
    def test_requests(self, quart_server: RunningServer, client: Any) -> None:
        version = "2" if client is h2 else "1.1"
        with client() as c:
            assert c.get(quart_server.url("/")).text == f"Quart over HTTP/{version}"
            assert c.post(quart_server.url("/echo"), content=b"x" * 300_000).content == b"x" * 300_000
            assert c.get(quart_server.url("/stream")).text == "".join(f"chunk {n}\n" for n in range(100))

    def test_curl(self, quart_server: RunningServer) -> None:
        assert curl(quart_server.url("/")) == "Quart over HTTP/1.1"
        assert curl("--http2-prior-knowledge", quart_server.url("/")) == "Quart over HTTP/2"

    def test_websocket(self, quart_server: RunningServer) -> None:
        with ws_client.connect(f"ws://127.0.0.1:{quart_server.port}/ws") as ws:
            ws.send("hello")
            assert ws.recv() == "quart: hello"


class TestTheExample:
    """examples/asgi: the Starlette app of the docs, run as users run it."""

    def test_kyoukai_run(self, tmp_path: Path) -> None:
        command = KyoukaiCommand(
            ["run", "examples.asgi.starlette_app:app", "--port", "0", "--http2"], ROOT, tmp_path / "stderr.log"
        )
        try:
            serving = command.serving()
            assert serving["protocols"] == "HTTP/1.1, h2c"
            url = serving["url"]
            with h2() as c:
                assert c.get(url + "/").text == "Hello from Starlette on Kyoukai over HTTP/2!\n"
                assert c.get(url + "/visits").json() == {"visits": 1}
                assert c.get(url + "/countdown?from=2").text == "2\n1\nlift-off\n"
                assert c.post(url + "/upload", content=b"x" * 1000).json() == {"received": 1000}
            with ws_client.connect(url.replace("http", "ws") + "/echo") as ws:
                ws.send("ping")
                assert ws.recv() == "ping"
        finally:
            status = command.stop(signal.SIGTERM)
        assert status == 0, command.output()
        assert command.wait_for_line("served 1 visits"), "the lifespan shutdown ran"
        assert "Traceback" not in command.stderr(), command.output()

    def test_kyoukai_run_interface_kyoukai_refuses_it(self) -> None:
        result = run_to_exit(["run", "examples.asgi.starlette_app:app", "--interface", "kyoukai"], ROOT)
        assert result.returncode == 2
        assert "is a Starlette, not a Kyoukai application (kyoukai.Kyoukai; --interface kyoukai)" in result.stderr

    def test_asphalt_run_config(self, tmp_path: Path) -> None:
        port = free_port()
        args = [*asphalt_command(), "run", "examples/asgi/config.yml", "--set", f"component.port={port}"]
        example = RunningExample(ROOT, args, tmp_path / "asphalt.log")
        try:
            example.wait_for_port(port)
            assert curl("--http2-prior-knowledge", f"http://127.0.0.1:{port}/countdown?from=1") == "1\nlift-off\n"
            assert curl(f"http://127.0.0.1:{port}/") == "Hello from Starlette on Kyoukai over HTTP/1.1!\n"
        finally:
            output = example.stop()
        assert example.process.returncode == 0, output
        assert "served 1 visits" in output and "Traceback" not in output, output

    def test_gunicorn_worker(self, tmp_path: Path) -> None:
        server = Gunicorn(tmp_path / "gunicorn.log", "examples.asgi.starlette_app:app", workers=1)
        try:
            server.start()
            with h1() as c:
                assert c.get(server.url("/")).text == "Hello from Starlette on Kyoukai over HTTP/1.1!\n"
        finally:
            output = server.stop()
        assert "Traceback" not in output, output
