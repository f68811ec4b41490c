"""
Tests for examples/hello through a real socket: the component serves on a free port inside
the test's event loop and httpx talks to it over HTTP/1.1 and HTTP/2.
"""

import httpx
import pytest
from asphalt.core import Context

from examples.hello.app import app
from kyoukai.asphalt import KyoukaiComponent

pytestmark = pytest.mark.asyncio


# [server]
@pytest.fixture
async def base_url():
    async with Context() as ctx:
        # port=0: the system picks a free port; component.port tells which.
        component = KyoukaiComponent(app, ip="127.0.0.1", port=0, http2=True)
        await component.start(ctx)
        yield f"http://127.0.0.1:{component.port}"
    # Leaving the context stops the server (gracefully).


async def test_http11(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await client.get("/hello/Ada")
    assert response.http_version == "HTTP/1.1"
    assert response.text == "Hello, Ada!\n"


async def test_http2(base_url: str) -> None:
    # http1=False: HTTP/2 with prior knowledge, as on a cleartext port with http2: true.
    async with httpx.AsyncClient(base_url=base_url, http1=False, http2=True) as client:
        response = await client.get("/")
    assert response.http_version == "HTTP/2"
    assert response.text == "Hello from Kyoukai!\n"


# [server-end]
