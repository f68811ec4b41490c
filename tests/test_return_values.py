"""
What a handler returns, on the wire: dicts and lists as JSON, tuples with status and headers,
and a value that cannot be a response as a 500 that the log explains and the access log records.
"""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from conftest import serve
from werkzeug.wrappers import Response

from kyoukai import Kyoukai

TIMEOUT = 10.0


def make_app(**config) -> Kyoukai:
    app = Kyoukai("returns", **config)

    @app.route("/dict")
    async def a_dict(ctx):
        return {"a": 1, "b": 2}

    @app.route("/list")
    def a_list(ctx):
        return [1, 2, {"three": None}]

    @app.route("/created", methods=["POST"])
    async def created(ctx):
        return {"id": 7}, 201

    @app.route("/headers")
    async def with_headers(ctx):
        return {"ok": True}, 202, {"X-Extra": "yes"}

    @app.route("/set")
    async def a_set(ctx):
        return {1, 2}

    @app.route("/number")
    async def a_number(ctx):
        return 42

    @app.route("/ints-in-a-response")
    async def ints_in_a_response(ctx):
        return Response([1, 2, 3])

    @app.route("/bad-header")
    async def bad_header(ctx):
        response = Response("must not be sent")
        response.headers._list.append(("X-A", "a\r\nSet-Cookie: x=1"))
        return response

    @app.route("/not-json")
    async def not_json(ctx):
        return {"when": object()}

    return app


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "kyoukai.access"]


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "kyoukai" and r.levelno >= logging.ERROR]


@pytest.fixture(scope="module", params=[False, True], ids=["http1.1", "http2"])
def client(request: pytest.FixtureRequest):
    http2 = request.param
    with serve(make_app(), http2=True) as server:
        with httpx.Client(base_url=server.url(""), http1=not http2, http2=http2, timeout=TIMEOUT) as c:
            yield c


class TestJSON:
    def test_dict(self, client: httpx.Client) -> None:
        response = client.get("/dict")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"a": 1, "b": 2}

    def test_list(self, client: httpx.Client) -> None:
        response = client.get("/list")
        assert response.headers["content-type"] == "application/json"
        assert response.json() == [1, 2, {"three": None}]

    def test_with_status(self, client: httpx.Client) -> None:
        response = client.post("/created")
        assert (response.status_code, response.json()) == (201, {"id": 7})

    def test_with_status_and_headers(self, client: httpx.Client) -> None:
        response = client.get("/headers")
        assert (response.status_code, response.headers["x-extra"], response.json()) == (202, "yes", {"ok": True})
        assert response.headers["content-type"] == "application/json"


class TestValuesThatCannotBeResponses:
    @pytest.mark.parametrize(
        ("path", "logged"),
        [
            (
                "/set",
                r"^Route 'returns\.a_set' returned a value of type 'set', which cannot be a response: .*; sending 500",
            ),
            ("/number", r"^Route 'returns\.a_number' returned a value of type 'int', which cannot be a response"),
            (
                "/not-json",
                r"^Route 'returns\.not_json' returned a dict that cannot be sent as JSON \(Object of type object",
            ),
            ("/ints-in-a-response", r"route 'returns\.ints_in_a_response'.*TypeError"),
            ("/bad-header", r"route 'returns\.bad_header'.*InvalidFieldError"),
        ],
    )
    def test_a_500_that_the_logs_explain(
        self, client: httpx.Client, caplog: pytest.LogCaptureFixture, path: str, logged: str
    ) -> None:
        caplog.set_level(logging.INFO, logger="kyoukai")
        response = client.get(path)
        assert response.status_code == 500
        assert "must not be sent" not in response.text
        assert "set-cookie" not in response.headers
        assert any(re.search(logged, line) for line in errors(caplog)), errors(caplog)
        # The access log records the status that was sent.
        lines = [line for line in access_lines(caplog) if f"GET {path} " in line]
        assert len(lines) == 1 and '" 500 ' in lines[0], lines

    def test_the_connection_serves_on(self, client: httpx.Client) -> None:
        assert client.get("/set").status_code == 500
        assert client.get("/dict").json() == {"a": 1, "b": 2}


class TestCustomErrorHandler:
    def test_the_500_handler_answers_a_bad_return_value(self) -> None:
        app = make_app()

        @app.errorhandler(500)
        async def on_500(ctx, exc):
            return {"error": "internal", "why": type(exc.original_exception).__name__}, 500

        with serve(app) as server:
            response = httpx.get(server.url("/set"), timeout=TIMEOUT)
            assert response.status_code == 500
            assert response.json() == {"error": "internal", "why": "InvalidReturnValue"}
            response = httpx.get(server.url("/bad-header"), timeout=TIMEOUT)
            assert (response.status_code, response.json()["why"]) == (500, "InvalidFieldError")

    def test_a_500_handler_that_cannot_be_sent_gives_the_default_page(self, caplog: pytest.LogCaptureFixture) -> None:
        app = make_app()

        @app.errorhandler(500)
        async def on_500(ctx, exc):
            response = Response("broken handler")
            response.headers._list.append(("X-B", "\r\n"))
            return response

        with serve(app) as server:
            response = httpx.get(server.url("/bad-header"), timeout=TIMEOUT)
        assert response.status_code == 500
        assert "Internal Server Error" in response.text
        assert any("cannot be sent either" in line for line in errors(caplog))
