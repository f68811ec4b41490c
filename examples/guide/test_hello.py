"""
Tests for examples/hello with TestKyoukai: requests go straight into the app, no network.
Run them with ``pytest examples/guide`` (pytest-asyncio runs the coroutines).
"""

import pytest

from examples.hello.app import app
from kyoukai.testing import TestKyoukai

pytestmark = pytest.mark.asyncio


# [fixture]
@pytest.fixture
def test_app() -> TestKyoukai:
    # Shares the routes of the real app; requests are injected, not sent over a socket.
    return TestKyoukai.wrap_existing_app(app)


async def test_index(test_app: TestKyoukai) -> None:
    response = await test_app.inject_request({"Accept": "text/plain"}, "/")
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "Hello from Kyoukai!\n"


async def test_hello_takes_a_name(test_app: TestKyoukai) -> None:
    response = await test_app.inject_request({}, "/hello/Ada")
    assert response.get_data(as_text=True) == "Hello, Ada!\n"


async def test_unknown_page(test_app: TestKyoukai) -> None:
    response = await test_app.inject_request({}, "/nowhere")
    assert response.status_code == 404


# [fixture-end]


# [testing-bp]
async def test_a_throwaway_route(test_app: TestKyoukai) -> None:
    # testing_bp() swaps in an empty root blueprint for the block: only these routes exist.
    with test_app.testing_bp() as bp:

        @bp.route("/echo", methods=["POST"])
        async def echo(ctx):
            return ctx.request.get_data()

        response = await test_app.inject_request({}, "/echo", method="POST", body=b"ping")
        assert response.get_data() == b"ping"
        assert (await test_app.inject_request({}, "/")).status_code == 404
    assert (await test_app.inject_request({}, "/")).status_code == 200


# [testing-bp-end]
