"""
A request leaves no reference cycle behind: its objects are freed by reference counting as soon
as it is answered, so the cyclic collector, whose pauses show in the tail latency, has nothing
of theirs to find. Checked over real connections, on both protocols.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import httpx
import pytest
from conftest import serve

from kyoukai import Kyoukai
from kyoukai.backends.http2 import H2KyoukaiComponent, H2State
from kyoukai.body import RequestBody
from kyoukai.context import HTTPRequestContext

REQUESTS = 50


@pytest.fixture
def app() -> Kyoukai:
    app = Kyoukai("cycles")

    @app.route("/")
    async def index(ctx):
        return "hello"

    @app.route("/json", methods=["POST"])
    async def echo(ctx):
        return {"length": len(ctx.request.get_data())}

    return app


@pytest.fixture
def garbage_saved() -> Iterator[list]:
    """Everything the cyclic collector finds during the test, kept in ``gc.garbage`` instead of freed."""
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def ours(garbage: list) -> list[str]:
    """The request objects of the server among ``garbage``."""
    kinds = (H2State, RequestBody, HTTPRequestContext)
    return [type(o).__qualname__ for o in garbage if isinstance(o, kinds)]


def exchange(client: httpx.Client, url: str) -> None:
    for i in range(REQUESTS):
        assert client.get(url + "/").text == "hello"
        assert client.post(url + "/json", content=b"x" * i).json() == {"length": i}


@pytest.mark.parametrize("http2", [False, True], ids=["http11", "h2c"])
def test_no_request_object_is_left_to_the_cyclic_collector(app: Kyoukai, garbage_saved: list, http2: bool) -> None:
    component = H2KyoukaiComponent if http2 else None
    with serve(app, **({"component_class": component} if component else {})) as server:
        with httpx.Client(http1=not http2, http2=http2, timeout=10) as client:
            exchange(client, server.url("").rstrip("/"))
            # The server answered every request (the collector would see the objects of each).
            assert server.component.metrics.requests >= 2 * REQUESTS
        gc.collect()
        assert ours(garbage_saved) == []
