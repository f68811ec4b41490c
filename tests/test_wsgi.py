"""The WSGI bridge: building environs and turning responses into wire parts and bytes."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator

import pytest
from werkzeug.wrappers import Request, Response

from kyoukai.protocol.fields import InvalidFieldError
from kyoukai.testing import TestKyoukai
from kyoukai.wsgi import get_formatted_response, prepare_response, to_wsgi_environment


def environ_for(method: str = "GET", path: str = "/", headers: list | None = None, **kw) -> dict:
    return to_wsgi_environment(headers or [("Host", "example.com")], method, path, "1.1", **kw)


class TestToWsgiEnvironment:
    def test_path_info_is_percent_decoded_as_latin1(self) -> None:
        environ = environ_for(path="/caf%C3%A9/a%20b/%2F")
        assert environ["PATH_INFO"] == "/caf\xc3\xa9/a b//"
        assert Request(environ).path == "/café/a b//"

    def test_query_string_stays_raw(self) -> None:
        environ = environ_for(path="/search?q=a%20b&x=%26&empty")
        assert environ["PATH_INFO"] == "/search"
        assert environ["QUERY_STRING"] == "q=a%20b&x=%26&empty"
        assert Request(environ).args.to_dict() == {"q": "a b", "x": "&", "empty": ""}

    def test_no_query_string(self) -> None:
        assert environ_for(path="/plain")["QUERY_STRING"] == ""

    @pytest.mark.parametrize(
        ("type_name", "length_name"),
        [("Content-Type", "Content-Length"), ("content-type", "content-length"), ("CONTENT-TYPE", "cOnTeNt-LeNgTh")],
    )
    def test_content_type_and_length_in_any_case(self, type_name: str, length_name: str) -> None:
        environ = environ_for(headers=[(type_name, "application/json"), (length_name, "12")])
        assert environ["CONTENT_TYPE"] == "application/json"
        assert environ["CONTENT_LENGTH"] == "12"
        assert "HTTP_CONTENT_TYPE" not in environ
        assert "HTTP_CONTENT_LENGTH" not in environ

    def test_repeated_headers_are_joined(self) -> None:
        environ = environ_for(headers=[("Accept", "text/html"), ("accept", "application/json"), ("X-Other", "1")])
        assert environ["HTTP_ACCEPT"] == "text/html, application/json"
        assert environ["HTTP_X_OTHER"] == "1"

    def test_cookies_are_joined_with_semicolons(self) -> None:
        environ = environ_for(headers=[("Cookie", "a=1"), ("cookie", "b=2; c=3")])
        assert environ["HTTP_COOKIE"] == "a=1; b=2; c=3"
        assert Request(environ).cookies.to_dict() == {"a": "1", "b": "2", "c": "3"}

    def test_header_names_with_underscores_are_dropped(self) -> None:
        environ = environ_for(headers=[("X-Real-Ip", "good"), ("X_Real_Ip", "spoofed")])
        assert environ["HTTP_X_REAL_IP"] == "good"

    def test_mapping_headers(self) -> None:
        environ = to_wsgi_environment({"Host": "example.com", "X-A": "b"}, "POST", "/", "1.1")
        assert environ["HTTP_X_A"] == "b"
        assert environ["REQUEST_METHOD"] == "POST"

    def test_ipv6_host_with_port(self) -> None:
        environ = environ_for(headers=[("Host", "[::1]:8080")])
        assert environ["SERVER_NAME"] == "::1"
        assert environ["SERVER_PORT"] == "8080"
        request = Request(environ)
        assert request.host == "[::1]:8080"
        assert request.url == "http://[::1]:8080/"

    def test_ipv6_host_without_port(self) -> None:
        environ = environ_for(headers=[("Host", "[2001:db8::1]")], scheme="https")
        assert environ["SERVER_NAME"] == "2001:db8::1"
        assert environ["SERVER_PORT"] == "443"

    def test_ipv6_peer(self) -> None:
        environ = environ_for(peer=("::1", 54321), server=("::1", 8080))
        assert environ["REMOTE_ADDR"] == "::1"
        assert environ["REMOTE_PORT"] == "54321"
        assert Request(environ).remote_addr == "::1"

    def test_host_name_and_port(self) -> None:
        environ = environ_for(headers=[("Host", "example.com:8000")])
        assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("example.com", "8000")
        environ = environ_for(headers=[("Host", "example.com")])
        assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("example.com", "80")

    def test_no_host_uses_the_server_address(self) -> None:
        environ = to_wsgi_environment([], "GET", "/", "1.0", server=("10.0.0.1", 8080))
        assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("10.0.0.1", "8080")
        assert Request(environ).host == "10.0.0.1:8080"

    def test_https_scheme(self) -> None:
        environ = environ_for(scheme="https")
        assert environ["wsgi.url_scheme"] == "https"
        assert environ["SERVER_PORT"] == "443"
        request = Request(environ)
        assert request.is_secure
        assert request.url == "https://example.com/"

    def test_protocol_versions(self) -> None:
        assert environ_for()["SERVER_PROTOCOL"] == "HTTP/1.1"
        assert to_wsgi_environment([], "GET", "/", "2")["SERVER_PROTOCOL"] == "HTTP/2"
        assert to_wsgi_environment([], "GET", "/", "1.0")["SERVER_PROTOCOL"] == "HTTP/1.0"

    def test_authority_is_the_host(self) -> None:
        environ = to_wsgi_environment([("host", "ignored")], "GET", "/", "2", authority="h2.example.com:8443")
        assert environ["HTTP_HOST"] == "h2.example.com:8443"
        assert environ["SERVER_PORT"] == "8443"

    def test_absolute_url_target(self) -> None:
        environ = to_wsgi_environment([], "GET", "http://proxy.example.com/a%20b?x=1", "1.1")
        assert environ["HTTP_HOST"] == "proxy.example.com"
        assert environ["PATH_INFO"] == "/a b"
        assert environ["QUERY_STRING"] == "x=1"

    def test_absolute_url_target_without_path(self) -> None:
        environ = to_wsgi_environment([], "GET", "http://example.com?x=1", "1.1")
        assert environ["HTTP_HOST"] == "example.com"
        assert environ["PATH_INFO"] == "/"
        assert environ["QUERY_STRING"] == "x=1"

    def test_wsgi_keys(self) -> None:
        body = io.BytesIO(b"data")
        protocol = object()
        environ = environ_for(body=body, protocol=protocol)
        assert environ["wsgi.input"] is body
        assert environ["wsgi.version"] == (1, 0)
        assert environ["SCRIPT_NAME"] == ""
        assert environ["kyoukai.protocol"] is protocol
        assert environ_for()["wsgi.input"].read() == b""


class TestGetFormattedResponse:
    def test_complete_response_bytes(self) -> None:
        response = Response("hello", status=201, headers=[("X-First", "1"), ("X-Second", "2")])
        data = get_formatted_response(response, environ_for())
        assert data == (
            b"HTTP/1.1 201 Created\r\n"
            b"X-First: 1\r\n"
            b"X-Second: 2\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: 5\r\n"
            b"\r\n"
            b"hello"
        )

    def test_reason_phrase_for_unusual_codes(self) -> None:
        assert get_formatted_response(Response(status=418), environ_for()).startswith(b"HTTP/1.1 418 I'm a Teapot\r\n")
        assert get_formatted_response(Response(status=599), environ_for()).startswith(b"HTTP/1.1 599 Unknown\r\n")

    def test_iterable_body_is_collected_with_length(self) -> None:
        data = get_formatted_response(Response(iter([b"ab", b"cd"])), environ_for())
        head, _, body = data.partition(b"\r\n\r\n")
        assert body == b"abcd"
        assert b"Content-Length: 4" in head.split(b"\r\n")

    def test_head_has_no_body(self) -> None:
        data = get_formatted_response(Response("hello"), environ_for("HEAD"))
        assert data.endswith(b"Content-Length: 5\r\n\r\n")

    def test_204_has_no_body(self) -> None:
        data = get_formatted_response(Response(status=204), environ_for())
        assert data.startswith(b"HTTP/1.1 204 No Content\r\n")
        assert data.endswith(b"\r\n\r\n")
        assert b"Content-Length" not in data

    def test_http_1_0_status_line(self) -> None:
        environ = to_wsgi_environment([], "GET", "/", "1.0")
        assert get_formatted_response(Response("x"), environ).startswith(b"HTTP/1.0 200 OK\r\n")


class TestPrepareResponse:
    def test_list_body_is_complete_with_length(self) -> None:
        parts = prepare_response(Response(["ab", "cd"]), environ_for())
        assert parts.status == 200
        assert parts.reason == "OK"
        assert parts.body == b"abcd"
        assert parts.stream is None
        assert ("Content-Length", "4") in parts.headers

    def test_string_body(self) -> None:
        parts = prepare_response(Response("hello", status=404), environ_for())
        assert (parts.status, parts.reason, parts.body) == (404, "Not Found", b"hello")
        assert parts.headers.count(("Content-Length", "5")) == 1

    def test_head_has_no_body_but_keeps_the_length(self) -> None:
        parts = prepare_response(Response("hello"), environ_for("HEAD"))
        assert parts.body == b""
        assert parts.stream is None
        assert ("Content-Length", "5") in parts.headers

    def test_head_closes_a_generator_body(self) -> None:
        closed = []

        def gen() -> Iterator[bytes]:
            try:
                yield b"never sent"
            finally:
                closed.append(True)

        body = gen()
        next(body)
        parts = prepare_response(Response(body), environ_for("HEAD"))
        assert (parts.body, parts.stream) == (b"", None)
        assert closed == [True]

    def test_304_has_no_body(self) -> None:
        parts = prepare_response(Response(["x"], status=304), environ_for())
        assert parts.body == b""
        assert not any(name == "Content-Length" for name, _ in parts.headers)

    async def test_generator_chunks_come_out_as_produced(self) -> None:
        produced = []

        def gen() -> Iterator[str | bytes]:
            for chunk in ("one", b"two", "", "three"):
                produced.append(chunk)
                yield chunk

        parts = prepare_response(Response(gen()), environ_for())
        assert parts.body is None
        assert not any(name == "Content-Length" for name, _ in parts.headers)
        stream = parts.stream
        assert await stream.__anext__() == b"one"
        assert produced == ["one"]
        assert [chunk async for chunk in stream] == [b"two", b"three"]

    async def test_async_generator_chunks_come_out_as_produced(self) -> None:
        produced = []

        async def agen() -> AsyncIterator[str | bytes]:
            for chunk in (b"alpha", "beta"):
                produced.append(chunk)
                yield chunk

        parts = prepare_response(Response(agen()), environ_for())
        assert parts.body is None
        stream = parts.stream
        assert await stream.__anext__() == b"alpha"
        assert produced == [b"alpha"]
        assert [chunk async for chunk in stream] == [b"beta"]

    async def test_generator_is_closed_when_the_stream_stops_early(self) -> None:
        closed = []

        def gen() -> Iterator[bytes]:
            try:
                yield b"a"
                yield b"b"
            finally:
                closed.append(True)

        stream = prepare_response(Response(gen()), environ_for()).stream
        assert await stream.__anext__() == b"a"
        await stream.aclose()
        assert closed == [True]

    async def test_async_generator_is_closed_when_the_stream_stops_early(self) -> None:
        closed = []

        async def agen() -> AsyncIterator[bytes]:
            try:
                yield b"a"
                yield b"b"
            finally:
                closed.append(True)

        stream = prepare_response(Response(agen()), environ_for()).stream
        assert await stream.__anext__() == b"a"
        await stream.aclose()
        assert closed == [True]

    async def test_handler_streaming_body_reaches_the_wire_unchanged(self) -> None:
        app = TestKyoukai("app")

        async def numbers() -> AsyncIterator[str]:
            for n in range(3):
                yield f"{n};"

        @app.route("/stream")
        async def stream(ctx):
            return Response(numbers(), content_type="text/plain")

        response = await app.inject_request({"Host": "localhost"}, "/stream")
        parts = prepare_response(response, environ_for())
        assert parts.body is None
        assert [chunk async for chunk in parts.stream] == [b"0;", b"1;", b"2;"]


class TestCheckedHeaderLists:
    """prepare_response remembers header lists that passed; it never remembers a bad or rewritten one."""

    def test_a_bad_list_fails_every_time(self) -> None:
        for _ in range(3):
            response = Response("x", headers=[("X-Fine", "yes")])
            response.headers.add("X-Bad", "ok")
            response.headers._list[-1] = ("X-Bad", "a\r\nb")  # past werkzeug's own check
            with pytest.raises(InvalidFieldError, match="X-Bad"):
                prepare_response(response, {"REQUEST_METHOD": "GET"})

    def test_edge_whitespace_is_stripped_every_time(self) -> None:
        for _ in range(3):
            response = Response("x")
            response.headers._list.append(("X-Padded", " value\t"))
            parts = prepare_response(response, {"REQUEST_METHOD": "GET"})
            assert ("X-Padded", "value") in parts.headers
