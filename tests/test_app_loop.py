"""``app.loop``, kept from Kyoukai 2.2: the loop serving the app, never captured at construction."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from conftest import serve

from kyoukai import Kyoukai
from kyoukai.testing import TestKyoukai


def test_no_loop_before_serving() -> None:
    with pytest.raises(RuntimeError, match="app.loop: the app has no event loop yet"):
        assert Kyoukai("idle").loop is None


def test_the_loop_serving_the_app() -> None:
    app = Kyoukai("served")
    seen: list[bool] = []

    @app.route("/")
    async def index(ctx):
        seen.append(ctx.app.loop is asyncio.get_running_loop())
        return "ok"

    with serve(app) as server:
        assert httpx.get(server.url("/"), timeout=10).text == "ok"
        # Seen from another thread, it is the server's loop.
        assert app.loop.is_running()
    assert seen == [True]


async def test_inside_a_running_loop_it_is_that_loop() -> None:
    app = TestKyoukai("injected")
    assert app.loop is asyncio.get_running_loop()


def test_a_loop_given_as_in_2_2_is_accepted() -> None:
    loop = asyncio.new_event_loop()
    try:
        app = Kyoukai("given", loop=loop)
        assert app.loop is loop
        assert "loop" not in app.config
    finally:
        loop.close()
