"""
Response fields on the wire, on both protocols: a header name that is not a token or a value
with CR, LF or NUL never goes out (a 500 instead, or a reset once the head is out), and
``Date`` and ``Server`` are added only when the response has none.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
from conftest import serve
from h2.errors import ErrorCodes
from h2client import TIMEOUT as H2_TIMEOUT
from h2client import H2Client
from werkzeug.wrappers import Response

from kyoukai import Kyoukai
from kyoukai.backends.http2 import H2KyoukaiComponent
from kyoukai.protocol.fields import InvalidFieldError, checked_names

BAD_FIELDS = {
    "split-name": ("X-A\r\nSet-Cookie: x", "1"),
    "head-ending-name": ("X-A\r\n\r\nHTTP/1.1 200 OK", "1"),
    "space-in-name": ("X A", "1"),
    "colon-in-name": ("X:A", "1"),
    "empty-name": ("", "1"),
    "nul-in-value": ("X-A", "a\x00b"),
    "cr-in-value": ("X-A", "a\rb"),
}


def make_app() -> Kyoukai:
    app = Kyoukai("fields")

    @app.route("/bad/<kind>")
    async def bad(ctx, kind: str):
        response = Response("must not be sent\n")
        name, value = BAD_FIELDS[kind]
        # werkzeug's Headers check some of this themselves: go around them, as an app that
        # builds its list by hand would.
        response.headers._list.append((name, value))
        return response

    @app.route("/bad-trailer")
    async def bad_trailer(ctx):
        async def body():
            yield b"part\n"

        response = Response(body())
        response.trailers = {"x-ok": "1", "x-bad\r\nevil": "1"}
        return response

    @app.route("/bad-hint")
    async def bad_hint(ctx):
        await ctx.send_informational(103, [("Link", "</a.css>; rel=preload\r\nSet-Cookie: x=1")])
        return "must not be sent\n"

    @app.route("/hint/<int:status>")
    async def hint(ctx, status: int):
        await ctx.send_informational(status, [("Link", "</a.css>; rel=preload")])
        return "hinted\n"

    @app.route("/dated")
    async def dated(ctx):
        return Response("dated\n", headers={"Date": "Tue, 01 Jan 2030 00:00:00 GMT", "Server": "mine/1"})

    @app.route("/plain")
    async def plain(ctx):
        return "plain\n"

    @app.route("/space")
    async def space(ctx):
        response = Response("space\n")
        response.headers._list.append(("X-Space", "  padded\t"))
        return response

    return app


def http11(port: int, path: str, extra: bytes = b"") -> bytes:
    """One request on a new connection; everything the server sent until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=H2_TIMEOUT) as sock:
        sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + extra + b"\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


class TestCheckedNames:
    def test_names_come_back_lowercase_for_presence_checks(self) -> None:
        names = checked_names([("Content-Type", "text/plain"), ("Date", "x")])
        assert "\ndate\n" in names and "\ncontent-type\n" in names and "\nserver\n" not in names

    @pytest.mark.parametrize("kind", sorted(BAD_FIELDS))
    def test_each_bad_field_is_named(self, kind: str) -> None:
        name, value = BAD_FIELDS[kind]
        with pytest.raises(InvalidFieldError, match="X-A|X A|X:A|''"):
            checked_names([("Content-Type", "text/plain"), (name, value)])

    def test_lf_in_a_value(self) -> None:
        with pytest.raises(InvalidFieldError, match="X-B"):
            checked_names([("X-A", "a"), ("X-B", "b\nc")])

    def test_values_are_stripped_of_surrounding_whitespace(self) -> None:
        fields = [("X-A", " a "), ("X-B", "b"), ("X-C", "\tc d")]
        checked_names(fields)
        assert fields == [("X-A", "a"), ("X-B", "b"), ("X-C", "c d")]

    def test_empty_list(self) -> None:
        assert checked_names([]) == "\n\n"


class TestHTTP11:
    @pytest.mark.parametrize("kind", sorted(BAD_FIELDS))
    def test_invalid_field_becomes_500(self, kind: str, caplog: pytest.LogCaptureFixture) -> None:
        with serve(make_app()) as server, caplog.at_level(logging.ERROR, "kyoukai"):
            data = http11(server.port, f"/bad/{kind}")
        assert data.startswith(b"HTTP/1.1 500 ")
        assert b"must not be sent" not in data
        assert b"Set-Cookie" not in data and b"X-A" not in data and b"\x00" not in data
        # One head, one body: nothing after the blank line looks like a header.
        head, _, body = data.partition(b"\r\n\r\n")
        # The app's 500 page (the app found the bad field before anything went out).
        assert body.startswith(b"<!doctype html>") and b"<h1>Internal Server Error</h1>" in body
        assert b"\r\n\r\n" not in body
        assert [r.getMessage() for r in caplog.records if "cannot be sent (InvalidFieldError" in r.getMessage()], (
            caplog.text
        )

    def test_invalid_trailer_ends_without_the_last_chunk(self, caplog: pytest.LogCaptureFixture) -> None:
        with serve(make_app()) as server, caplog.at_level(logging.ERROR, "kyoukai.http11"):
            data = http11(server.port, "/bad-trailer", b"TE: trailers\r\n")
        assert data.startswith(b"HTTP/1.1 200 ")
        assert b"part\n" in data
        assert b"evil" not in data and b"x-ok" not in data
        assert not data.endswith(b"0\r\n\r\n")
        assert "trailer header name 'x-bad\\r\\nevil'" in caplog.text

    def test_invalid_early_hint_is_an_error_in_the_handler(self) -> None:
        with serve(make_app()) as server:
            data = http11(server.port, "/bad-hint")
        assert data.startswith(b"HTTP/1.1 500 ")
        assert b"Set-Cookie" not in data and b"preload" not in data

    @pytest.mark.parametrize("status", [100, 101, 200])
    def test_informational_status_the_app_may_not_send(self, status: int) -> None:
        with serve(make_app()) as server:
            data = http11(server.port, f"/hint/{status}")
        assert data.startswith(b"HTTP/1.1 500 ")

    def test_early_hints_go_out(self) -> None:
        with serve(make_app()) as server:
            data = http11(server.port, "/hint/103")
        assert data.startswith(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 ")

    def test_date_and_server_of_the_app_are_kept(self) -> None:
        with serve(make_app()) as server:
            data = http11(server.port, "/dated")
        head = data.partition(b"\r\n\r\n")[0].lower()
        assert head.count(b"\r\ndate:") == 1 and b"date: tue, 01 jan 2030" in head
        assert head.count(b"\r\nserver:") == 1 and b"server: mine/1" in head

    def test_date_and_server_added_when_absent(self) -> None:
        with serve(make_app()) as server:
            data = http11(server.port, "/plain")
        head = data.partition(b"\r\n\r\n")[0].lower()
        assert head.count(b"\r\ndate:") == 1 and head.count(b"\r\nserver:") == 1

    def test_value_whitespace_is_trimmed(self) -> None:
        with serve(make_app()) as server:
            data = http11(server.port, "/space")
        assert b"\r\nX-Space: padded\r\n" in data


@pytest.fixture(scope="module")
def h2_server() -> Any:
    with serve(make_app(), H2KyoukaiComponent) as server:
        yield server


class TestHTTP2:
    @pytest.mark.parametrize("kind", sorted(BAD_FIELDS))
    def test_invalid_field_becomes_500(self, kind: str, h2_server: Any, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.ERROR, "kyoukai"), H2Client(h2_server.port) as client:
            client.wait_ready()
            bad = client.response(client.request(f"/bad/{kind}"))
            good = client.response(client.request("/plain"))
        assert bad.status == 500
        assert b"must not be sent" not in bytes(bad.data)
        names = [name for name, _ in bad.headers]
        assert not any("x-a" in name or "set-cookie" in name or " " in name for name in names), names
        assert good.status == 200 and bytes(good.data) == b"plain\n"
        assert "sending 500 instead" in caplog.text

    def test_invalid_trailer_resets_the_stream(self, h2_server: Any, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.ERROR, "kyoukai.http2"), H2Client(h2_server.port) as client:
            client.wait_ready()
            sid = client.request("/bad-trailer", headers=[("te", "trailers")])
            stream = client.response(sid)
        assert stream.status == 200
        assert stream.trailers is None
        assert stream.reset_code == ErrorCodes.INTERNAL_ERROR
        assert "trailer header name 'x-bad\\r\\nevil'" in caplog.text

    def test_invalid_early_hint_is_an_error_in_the_handler(self, h2_server: Any) -> None:
        with H2Client(h2_server.port) as client:
            client.wait_ready()
            stream = client.response(client.request("/bad-hint"))
        assert stream.informational == []
        assert stream.status == 500

    @pytest.mark.parametrize("status", [100, 101, 200])
    def test_informational_status_the_app_may_not_send(self, status: int, h2_server: Any) -> None:
        with H2Client(h2_server.port) as client:
            client.wait_ready()
            stream = client.response(client.request(f"/hint/{status}"))
        assert stream.informational == []
        assert stream.status == 500

    def test_early_hints_go_out(self, h2_server: Any) -> None:
        with H2Client(h2_server.port) as client:
            client.wait_ready()
            stream = client.response(client.request("/hint/103"))
        assert stream.informational == [[(":status", "103"), ("link", "</a.css>; rel=preload")]]
        assert stream.status == 200

    def test_date_and_server_of_the_app_are_kept(self, h2_server: Any) -> None:
        with H2Client(h2_server.port) as client:
            client.wait_ready()
            stream = client.response(client.request("/dated"))
        assert [v for n, v in stream.headers if n == "date"] == ["Tue, 01 Jan 2030 00:00:00 GMT"]
        assert [v for n, v in stream.headers if n == "server"] == ["mine/1"]

    def test_date_and_server_added_when_absent(self, h2_server: Any) -> None:
        with H2Client(h2_server.port) as client:
            client.wait_ready()
            stream = client.response(client.request("/plain"))
        assert len([v for n, v in stream.headers if n == "date"]) == 1
        assert len([v for n, v in stream.headers if n == "server"]) == 1

    def test_value_whitespace_is_trimmed(self, h2_server: Any) -> None:
        with H2Client(h2_server.port) as client:
            client.wait_ready()
            stream = client.response(client.request("/space"))
        assert stream.header("x-space") == "padded"
