"""TestKyoukai.websocket_connect: a WebSocket to the app without a network."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from werkzeug.exceptions import Forbidden

from kyoukai import Kyoukai, WebSocketDisconnect
from kyoukai.testing import TestKyoukai, WebSocketRefused
from kyoukai.util import SERVER_TOKEN


def make_app(**config: object) -> TestKyoukai:
    app = TestKyoukai("ws-testing", **config)
    app.config["events"] = []

    @app.route("/")
    async def index(ctx):
        return "hello"

    @app.websocket("/echo")
    async def echo(ctx):
        try:
            async for message in ctx.websocket:
                await ctx.websocket.send(message)
        finally:
            app.config["events"].append("echo returned")

    @app.websocket("/rooms/<room>")
    async def room(ctx, room: str):
        ws = ctx.websocket
        await ws.accept(subprotocol="chat.v2" if "chat.v2" in ws.subprotocols else None)
        await ws.send(f"{room} {ctx.request.headers.get('X-User', '-')} {ws.subprotocol}")
        try:
            await ws.receive()
        except WebSocketDisconnect as e:
            app.config["events"].append(("disconnect", e.code, e.reason))

    @app.websocket("/closer")
    async def closer(ctx):
        await ctx.websocket.accept()
        await ctx.websocket.close(4001, "go away")

    @app.websocket("/fails")
    async def fails(ctx):
        await ctx.websocket.send("about to fail")
        raise RuntimeError("broken")

    @app.before_request
    async def require_token(ctx):
        if ctx.request.path.startswith("/private") and ctx.request.args.get("token") != "secret":
            raise Forbidden("a token is needed")
        return ctx

    @app.websocket("/private")
    async def private(ctx):
        await ctx.websocket.send("welcome")

    return app


@pytest.fixture
def app() -> TestKyoukai:
    return make_app()


class TestMessages:
    async def test_echo_text_and_binary(self, app: TestKyoukai) -> None:
        async with app.websocket_connect("/echo") as ws:
            assert ws.status == 101
            await ws.send("hello")
            assert await ws.receive() == "hello"
            await ws.send(b"\x00\xff")
            assert await ws.receive() == b"\x00\xff"
        # Leaving the block closed the WebSocket and waited for the handler.
        assert app.config["events"] == ["echo returned"]

    async def test_the_opening_response_names_the_server(self, app: TestKyoukai) -> None:
        async with app.websocket_connect("/echo") as ws:
            headers = {name.lower(): value for name, value in ws.headers}
        assert headers["server"] == headers["x-powered-by"] == SERVER_TOKEN

    async def test_server_header_false_leaves_them_out(self) -> None:
        async with make_app(server_header=False).websocket_connect("/echo") as ws:
            names = {name.lower() for name, _ in ws.headers}
        assert "server" not in names and "x-powered-by" not in names

    async def test_url_parameters_headers_and_subprotocols(self, app: TestKyoukai) -> None:
        async with app.websocket_connect(
            "/rooms/lobby", headers={"X-User": "ann"}, subprotocols=["chat.v1", "chat.v2"]
        ) as ws:
            assert ws.subprotocol == "chat.v2"
            assert await ws.receive() == "lobby ann chat.v2"
            await ws.close(1001, "leaving")
        assert app.config["events"] == [("disconnect", 1001, "leaving")]

    async def test_limits_come_from_the_config(self) -> None:
        app = make_app(ws_max_message_size=100)
        async with app.websocket_connect("/echo") as ws:
            await ws.send("x" * 101)
            with pytest.raises(WebSocketDisconnect) as closed:
                await ws.receive()
        assert closed.value.code == 1009


class TestClosing:
    async def test_the_app_closes_with_a_code(self, app: TestKyoukai) -> None:
        async with app.websocket_connect("/closer") as ws:
            with pytest.raises(WebSocketDisconnect) as closed:
                await ws.receive()
            assert (closed.value.code, closed.value.reason) == (4001, "go away")
            assert (ws.close_code, ws.close_reason) == (4001, "go away")
            with pytest.raises(WebSocketDisconnect):
                await ws.send("too late")

    async def test_a_handler_that_returns_closes_with_1000(self, app: TestKyoukai) -> None:
        async with app.websocket_connect("/private?token=secret") as ws:
            assert await ws.receive() == "welcome"
            with pytest.raises(WebSocketDisconnect) as closed:
                await ws.receive()
        assert closed.value.code == 1000

    async def test_a_handler_that_raises_closes_with_1011(self, app: TestKyoukai) -> None:
        async with app.websocket_connect("/fails") as ws:
            assert await ws.receive() == "about to fail"
            with pytest.raises(WebSocketDisconnect) as closed:
                await ws.receive()
        assert closed.value.code == 1011


class TestRefused:
    async def test_a_hook_refuses_with_403(self, app: TestKyoukai) -> None:
        with pytest.raises(WebSocketRefused) as refused:
            async with app.websocket_connect("/private"):
                pass
        assert refused.value.status_code == 403
        assert b"a token is needed" in refused.value.response.get_data()

    async def test_a_plain_route_and_no_route(self, app: TestKyoukai) -> None:
        for url, status in (("/", 400), ("/nowhere", 404)):
            with pytest.raises(WebSocketRefused) as refused:
                async with app.websocket_connect(url):
                    pass
            assert refused.value.status_code == status

    async def test_a_broken_handshake(self, app: TestKyoukai) -> None:
        with pytest.raises(WebSocketRefused) as refused:
            async with app.websocket_connect("/echo", headers={"Sec-WebSocket-Version": "8"}):
                pass
        assert refused.value.status_code == 426


async def test_wrap_existing_app() -> None:
    real = Kyoukai("real")

    @real.websocket("/echo")
    async def echo(ctx):
        await ctx.websocket.send(await ctx.websocket.receive())

    app = TestKyoukai.wrap_existing_app(real)
    async with app.websocket_connect("/echo") as ws:
        await ws.send("wrapped")
        assert await ws.receive() == "wrapped"


def test_the_websocket_page_samples_pass() -> None:
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "examples" / "websocket")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b3 passed\b", result.stdout), result.stdout
