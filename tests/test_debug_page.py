"""
The debug page (``debug: true``): an unhandled exception in a handler answers 500 with its
traceback as a static HTML page, over HTTP/1.1 and HTTP/2; off, the plain 500 stays. A custom
500 handler wins either way; a server with debug on warns at start when it is reachable from
other machines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
import pytest
from conftest import RunningServer, serve

from kyoukai import Kyoukai, debugpage

TIMEOUT = 10.0
MESSAGE = "the <flux capacitor> overheated"


def make_app(name: str = "debugged", **config: object) -> Kyoukai:
    app = Kyoukai(name, **config)

    @app.route("/")
    async def index(ctx):
        return "fine"

    @app.route("/fail")
    async def a_handler_that_fails(ctx):
        raise RuntimeError(MESSAGE)

    @app.route("/missing")
    async def missing(ctx):
        from werkzeug.exceptions import NotFound

        raise NotFound()

    return app


@dataclass
class Client:
    """Requests in one protocol version, each on its own connection (closed before the server stops)."""

    version: str

    def get(self, server: RunningServer, path: str) -> httpx.Response:
        http2 = self.version == "HTTP/2"
        with httpx.Client(http1=not http2, http2=http2, timeout=TIMEOUT) as http:
            response = http.get(server.url(path))
        assert response.http_version == self.version
        return response


@pytest.fixture(params=["HTTP/1.1", "HTTP/2"])
def client(request: pytest.FixtureRequest) -> Client:
    """HTTP/1.1, or HTTP/2 with prior knowledge (the servers below offer h2c)."""
    return Client(request.param)


class TestDebugOn:
    def test_the_page_shows_the_exception_and_the_traceback(
        self, client: Client, caplog: pytest.LogCaptureFixture
    ) -> None:
        with serve(make_app(), debug=True, http2=True) as server:
            response = client.get(server, "/fail")
        assert response.status_code == 500
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        page = response.text
        assert "RuntimeError: the &lt;flux capacitor&gt; overheated" in page
        assert "<flux capacitor>" not in page, "the message is escaped"
        assert '<code class="function">a_handler_that_fails</code>' in page
        assert "raise RuntimeError(MESSAGE)" in page, "the failing source line"
        assert "test_debug_page.py" in page
        # Logged as without debug.
        assert any("Unhandled exception in route" in r.message and r.exc_info for r in caplog.records)

    def test_no_console_no_evalex_no_script(self, client: Client) -> None:
        with serve(make_app(), debug=True, http2=True) as server:
            page = client.get(server, "/fail").text
        for forbidden in ("<script", "__debugger__", "EVALEX", "SECRET", "pin-prompt", "console.png"):
            assert forbidden not in page, forbidden

    def test_other_errors_and_good_requests_are_unchanged(self, client: Client) -> None:
        with serve(make_app(), debug=True, http2=True) as server:
            ok = client.get(server, "/")
            missing = client.get(server, "/missing")
        assert (ok.status_code, ok.text) == (200, "fine")
        assert missing.status_code == 404
        assert "Traceback" not in missing.text

    def test_a_custom_500_handler_still_answers(self, client: Client) -> None:
        app = make_app()

        @app.errorhandler(500)
        async def oops(ctx, exc):
            return "our own 500 page", 500

        with serve(app, debug=True, http2=True) as server:
            response = client.get(server, "/fail")
        assert (response.status_code, response.text) == (500, "our own 500 page")

    @pytest.mark.parametrize("how", ["app config", "app attribute"])
    def test_debug_set_on_the_app(self, how: str) -> None:
        app = make_app(debug=True) if how == "app config" else make_app()
        if how == "app attribute":
            app.debug = True
        with serve(app) as server, httpx.Client(timeout=TIMEOUT) as client:
            page = client.get(server.url("/fail")).text
        assert "a_handler_that_fails" in page


class TestDebugOff:
    def test_the_plain_500_without_the_traceback(self, client: Client, caplog: pytest.LogCaptureFixture) -> None:
        with serve(make_app(), http2=True) as server:
            response = client.get(server, "/fail")
        assert response.status_code == 500
        assert "Internal Server Error" in response.text
        for secret in ("flux capacitor", "a_handler_that_fails", "Traceback", "test_debug_page.py"):
            assert secret not in response.text
        assert any("Unhandled exception in route" in r.message and r.exc_info for r in caplog.records)

    def test_config_debug_false_wins_over_nothing(self) -> None:
        with serve(make_app(), debug=False) as server, httpx.Client(timeout=TIMEOUT) as client:
            assert "a_handler_that_fails" not in client.get(server.url("/fail")).text


class TestExposureWarning:
    def warnings(self, caplog: pytest.LogCaptureFixture) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "debug is on" in r.message]

    def test_warns_on_all_interfaces(self, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.WARNING, "kyoukai"), serve(make_app(), debug=True, ip="0.0.0.0"):
            pass
        (warning,) = self.warnings(caplog)
        assert "0.0.0.0" in warning and "not a loopback address" in warning

    @pytest.mark.parametrize(("ip", "debug"), [("127.0.0.1", True), ("0.0.0.0", False)])
    def test_quiet_on_loopback_or_without_debug(self, caplog: pytest.LogCaptureFixture, ip: str, debug: bool) -> None:
        with caplog.at_level(logging.WARNING, "kyoukai"), serve(make_app(), debug=debug, ip=ip):
            pass
        assert self.warnings(caplog) == []

    @pytest.mark.parametrize(
        ("address", "loopback"),
        [
            ("127.0.0.1", True),
            ("127.3.2.1", True),
            ("::1", True),
            ("localhost", True),
            ("0.0.0.0", False),
            ("::", False),
            ("192.0.2.7", False),
            ("fe80::1%eth0", False),
            ("example.org", False),
        ],
    )
    def test_what_counts_as_loopback(self, address: str, loopback: bool) -> None:
        assert debugpage.is_loopback(address) is loopback


def test_render_shows_chained_exceptions() -> None:
    def inner() -> None:
        raise KeyError("the first failure")

    try:
        try:
            inner()
        except KeyError as e:
            raise ValueError("the second failure") from e
    except ValueError as e:
        page = debugpage.render(e)
    assert "the first failure" in page and "the second failure" in page
    assert "direct cause" in page
    assert '<code class="function">inner</code>' in page
