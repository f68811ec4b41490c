"""
Tests for examples/websocket with TestKyoukai.websocket_connect: the WebSocket goes straight
into the app, no network. Run them with ``pytest examples/websocket``.
"""

import pytest

from examples.websocket.app import app
from kyoukai import WebSocketDisconnect
from kyoukai.testing import TestKyoukai, WebSocketRefused

pytestmark = pytest.mark.asyncio


@pytest.fixture
def test_app() -> TestKyoukai:
    return TestKyoukai.wrap_existing_app(app)


# [echo]
async def test_echo(test_app: TestKyoukai) -> None:
    async with test_app.websocket_connect("/echo") as ws:
        await ws.send("hello")
        assert await ws.receive() == "hello"
        await ws.send(b"\x00\x01")
        assert await ws.receive() == b"\x00\x01"


# [echo-end]


async def test_subprotocol_and_close_code(test_app: TestKyoukai) -> None:
    async with test_app.websocket_connect("/versions", subprotocols=["v1", "v2"]) as ws:
        assert ws.subprotocol == "v2"
        assert await ws.receive() == "speaking v2"
        await ws.send("hi")
        assert await ws.receive() == "HI"
        await ws.send("bye")
        with pytest.raises(WebSocketDisconnect):
            await ws.receive()
        assert (ws.close_code, ws.close_reason) == (4000, "asked to leave")


# [refused]
async def test_a_missing_token_is_refused(test_app: TestKyoukai) -> None:
    with pytest.raises(WebSocketRefused) as refused:
        async with test_app.websocket_connect("/private/feed"):
            pass
    assert refused.value.status_code == 403
    async with test_app.websocket_connect("/private/feed?token=secret") as ws:
        assert await ws.receive() == "welcome"


# [refused-end]
