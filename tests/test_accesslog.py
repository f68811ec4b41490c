"""
What operators read: the access log (kyoukai.accesslog, from Kyoukai.log_route) and the
metrics exporter of examples/deploy.
"""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from conftest import serve
from h2client import stoppable_server
from test_docs import example
from werkzeug.wrappers import Request, Response

from kyoukai import Kyoukai
from kyoukai.accesslog import AccessLog
from kyoukai.asphalt import KyoukaiComponent
from kyoukai.testing import TestKyoukai

TIMEOUT = 10.0
CLF_TIME = r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}"


def make_app(**config) -> Kyoukai:
    app = Kyoukai("logged", **config)

    @app.route("/hello")
    async def hello(ctx):
        return "hello"

    @app.route("/stream")
    async def stream(ctx):
        async def body():
            yield b"a"
            yield b"b"

        return Response(body())

    return app


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "kyoukai.access"]


class TestDefaultFormat:
    @pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
    def test_common_log_format_with_duration(self, http2: bool, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger="kyoukai.access")
        with serve(make_app(), http2=True) as server:
            with httpx.Client(http1=not http2, http2=http2, timeout=TIMEOUT) as client:
                client.get(server.url("/hello?x=1"))
                client.head(server.url("/hello"))
                client.get(server.url("/stream"))
                client.get(server.url("/missing"))
        protocol = "HTTP/2" if http2 else "HTTP/1.1"
        lines = access_lines(caplog)
        assert len(lines) == 4, lines
        expected = [
            rf'"GET /hello\?x=1 {protocol}" 200 5',
            rf'"HEAD /hello {protocol}" 200 -',
            rf'"GET /stream {protocol}" 200 -',
            rf'"GET /missing {protocol}" 404 \d+',
        ]
        for line, request in zip(lines, expected, strict=True):
            assert re.fullmatch(rf"127\.0\.0\.1 - - \[{CLF_TIME}\] {request} \d+\.\d{{6}}", line), line

    def test_the_real_client_behind_a_trusted_proxy(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger="kyoukai.access")
        with serve(make_app(), forwarded_allow_ips=["127.0.0.1"]) as server:
            httpx.get(server.url("/hello"), headers={"X-Forwarded-For": "203.0.113.9"}, timeout=TIMEOUT)
        assert access_lines(caplog)[0].startswith("203.0.113.9 - - [")


class TestCustomFormat:
    async def test_named_fields(self, caplog: pytest.LogCaptureFixture) -> None:
        fmt = "{client}|{method}|{path}|{query}|{status}|{bytes}|{duration_ms:.1f}|{user_agent}|{headers[X-Request-Id]}"
        app = TestKyoukai.wrap_existing_app(make_app(access_log_format=fmt))
        with caplog.at_level(logging.INFO, logger="kyoukai.access"):
            await app.inject_request({"User-Agent": "probe/1", "X-Request-Id": "abc"}, "/hello?q=tea")
            await app.inject_request({}, "/hello")
        assert access_lines(caplog)[0].split("|")[:6] == ["-", "GET", "/hello?q=tea", "q=tea", "200", "5"]
        assert access_lines(caplog)[0].split("|")[7:] == ["probe/1", "abc"]
        assert access_lines(caplog)[1].endswith("|-|-")

    @pytest.mark.parametrize(
        ("fmt", "message"),
        [("{client} {nope}", "unknown field {nope}"), ("{bytes:d}", "not a valid format"), ("{client", "not a valid")],
    )
    def test_bad_formats_name_the_key(self, fmt: str, message: str) -> None:
        with pytest.raises(ValueError, match="access_log_format") as error:
            make_app(access_log_format=fmt).finalize()
        assert message in str(error.value)


class TestCost:
    async def test_nothing_is_formatted_unless_info_is_enabled(self, caplog: pytest.LogCaptureFixture) -> None:
        class Unreadable(dict):
            """An environ that fails the test if a field is computed from it."""

            def get(self, *args: object) -> object:
                raise AssertionError("the line was formatted")

            __getitem__ = get

        request = Request({})
        request.environ = Unreadable()
        with caplog.at_level(logging.WARNING, logger="kyoukai.access"):
            AccessLog().log(request, 200)
        assert access_lines(caplog) == []
        with caplog.at_level(logging.INFO, logger="kyoukai.access"), pytest.raises(AssertionError, match="formatted"):
            AccessLog().log(request, 200)

    async def test_log_route_can_still_be_overridden(self) -> None:
        seen: list[tuple[str, int]] = []

        class Quiet(TestKyoukai):
            def log_route(self, request: Request, code: int) -> None:
                seen.append((request.path, code))

        app = Quiet("quiet")

        @app.route("/x")
        async def x(ctx):
            return "x", 202

        await app.inject_request({}, "/x")
        assert seen == [("/x", 202)]


class TestMetricsExporter:
    def test_the_deploy_example_exports_the_counters(self) -> None:
        app = example("deploy.app").app
        with stoppable_server(app, KyoukaiComponent, http2=True) as server:
            with httpx.Client(timeout=TIMEOUT) as client:
                for _ in range(3):
                    client.get(server.url("/"))
                first = client.get(server.url("/metrics")).json()
            with httpx.Client(http1=False, http2=True, timeout=TIMEOUT) as client:
                client.get(server.url("/"))
                second = client.get(server.url("/metrics")).json()
                server.stop()
            final = server.component.metrics.snapshot()
        assert first["pid"] > 0
        assert {k: first[k] for k in ("connections_opened", "connections_closed", "requests", "streams_opened")} == {
            "connections_opened": 1,
            "connections_closed": 0,
            "requests": 3,  # the /metrics request itself is counted once answered
            "streams_opened": 0,
        }
        assert first["bytes_in"] > 0 and first["bytes_out"] > 0 and first["goaways"] == {}
        assert (second["connections_opened"], second["requests"], second["streams_opened"]) == (2, 5, 2)
        assert second["bytes_out"] > first["bytes_out"]
        # Stopping the server sent the open HTTP/2 connection a graceful GOAWAY, in two steps
        # (the first with the largest stream id, then the last stream served).
        assert final["goaways"] == {"NO_ERROR": 2}
        assert (final["connections_closed"], final["requests"]) == (2, 6)
