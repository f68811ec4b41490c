"""HTTP/2 with real clients: httpx, curl, nghttp, h2load and the frame client; the request environ,
many concurrent streams, trailers, HEAD, informational responses and handler errors."""

from __future__ import annotations

import asyncio
import re
import ssl
import subprocess
from typing import Any

import httpx
import pytest
from conftest import serve
from h2.errors import ErrorCodes
from h2client import H2Client
from hyperframe.frame import SettingsFrame
from werkzeug.wrappers import Response

from kyoukai import Kyoukai
from kyoukai.backends.http2 import H2KyoukaiComponent, H2KyoukaiProtocol
from kyoukai.protocol.h2.compat import ServerH2Connection

pytestmark = pytest.mark.timeout(60)


def make_app(seen: dict[str, Any] | None = None) -> Kyoukai:
    app = Kyoukai("h2basic")

    @app.route("/")
    async def index(ctx):
        return "Hello over HTTP/2\n"

    @app.route("/environ")
    async def environ(ctx):
        if seen is not None:
            seen["SERVER_PROTOCOL"] = ctx.environ["SERVER_PROTOCOL"]
            seen["wsgi.url_scheme"] = ctx.environ["wsgi.url_scheme"]
            seen["HTTP_HOST"] = ctx.environ.get("HTTP_HOST")
            seen["proto"] = ctx.proto
        return ctx.environ["SERVER_PROTOCOL"]

    @app.route("/server-name")
    async def server_name(ctx):
        return f"{ctx.environ['SERVER_NAME']} {ctx.environ['SERVER_PORT']} {ctx.environ.get('HTTP_HOST')}"

    @app.route("/trailers", methods=["POST"])
    async def trailers(ctx):
        body = ctx.request.get_data()
        trailer_text = ";".join(f"{n}={v}" for n, v in ctx.environ.get("kyoukai.trailers", []))
        return f"{len(body)} {trailer_text}"

    @app.route("/boom")
    async def boom(ctx):
        raise RuntimeError("the handler failed")

    @app.route("/broken-stream")
    async def broken_stream(ctx):
        async def body():
            yield b"first part "
            raise RuntimeError("the body failed after the headers")

        return Response(body())

    return app


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def tls_server(tls_files):
    with serve(make_app(), H2KyoukaiComponent, ssl_keyfile=tls_files["key"], ssl_certfile=tls_files["cert"]) as server:
        yield server


@pytest.fixture
def clear_server():
    with serve(make_app(), H2KyoukaiComponent) as server:
        yield server


class TestRealClients:
    def test_httpx_over_tls(self, tls_server, client_ssl_context: ssl.SSLContext) -> None:
        with httpx.Client(http2=True, verify=client_ssl_context) as client:
            responses = [client.get(tls_server.url("/", "https")) for _ in range(3)]
        for response in responses:
            assert response.http_version == "HTTP/2"
            assert response.status_code == 200
            assert response.text == "Hello over HTTP/2\n"
            assert response.headers["server"].startswith("Kyoukai/")

    def test_httpx_prior_knowledge_on_cleartext(self, clear_server) -> None:
        with httpx.Client(http1=False, http2=True) as client:
            response = client.get(clear_server.url("/"))
        assert response.http_version == "HTTP/2"
        assert response.text == "Hello over HTTP/2\n"

    def test_curl_http2_over_tls(self, tls_server, tls_files) -> None:
        result = run("curl", "-sS", "-i", "--http2", "--cacert", tls_files["ca"], tls_server.url("/", "https"))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("HTTP/2 200")
        assert result.stdout.endswith("Hello over HTTP/2\n")

    def test_curl_prior_knowledge_on_cleartext(self, clear_server) -> None:
        result = run("curl", "-sS", "-i", "--http2-prior-knowledge", clear_server.url("/"))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("HTTP/2 200")
        assert result.stdout.endswith("Hello over HTTP/2\n")

    @pytest.mark.parametrize("scheme", ["http", "https"])
    def test_nghttp_verbose(self, scheme: str, tls_files) -> None:
        cfg = {"ssl_keyfile": tls_files["key"], "ssl_certfile": tls_files["cert"]} if scheme == "https" else {}
        with serve(make_app(), H2KyoukaiComponent, **cfg) as server:
            result = run("nghttp", "-v", server.url("/", scheme))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "recv SETTINGS frame" in result.stdout
        assert re.search(r"recv \(stream_id=\d+\) :status: 200", result.stdout)
        assert "Hello over HTTP/2" in result.stdout

    @pytest.mark.parametrize("scheme", ["http", "https"])
    def test_h2load_small_gets(self, scheme: str, tls_files) -> None:
        cfg = {"ssl_keyfile": tls_files["key"], "ssl_certfile": tls_files["cert"]} if scheme == "https" else {}
        with serve(make_app(), H2KyoukaiComponent, **cfg) as server:
            result = run("h2load", "-n", "200", "-c", "2", "-m", "10", server.url("/", scheme), timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "200 succeeded, 0 failed, 0 errored" in result.stdout, result.stdout
        assert "status codes: 200 2xx" in result.stdout, result.stdout


class TestEnviron:
    def test_tls_environ_and_protocol(self, tls_files, client_ssl_context: ssl.SSLContext) -> None:
        seen: dict[str, Any] = {}
        cfg = {"ssl_keyfile": tls_files["key"], "ssl_certfile": tls_files["cert"]}
        with serve(make_app(seen), H2KyoukaiComponent, **cfg) as server:
            with httpx.Client(http2=True, verify=client_ssl_context) as client:
                response = client.get(server.url("/environ", "https"))
        assert response.http_version == "HTTP/2"
        assert response.text == "HTTP/2"
        assert seen["SERVER_PROTOCOL"] == "HTTP/2"
        assert seen["wsgi.url_scheme"] == "https"
        assert seen["HTTP_HOST"] == f"127.0.0.1:{server.port}"
        assert isinstance(seen["proto"], H2KyoukaiProtocol)

    def test_cleartext_scheme_is_http(self) -> None:
        seen: dict[str, Any] = {}
        with serve(make_app(seen), H2KyoukaiComponent) as server, H2Client(server.port) as client:
            stream = client.response(client.request("/environ"))
        assert stream.status == 200
        assert seen["wsgi.url_scheme"] == "http"
        assert isinstance(seen["proto"], H2KyoukaiProtocol)

    @pytest.mark.parametrize(
        ("authority", "host", "expected"),
        [
            ("example.com:8443", None, "example.com 8443 example.com:8443"),
            (None, "fallback.example:81", "fallback.example 81 fallback.example:81"),
            ("example.com", None, "example.com 80 example.com"),
        ],
        ids=["authority", "host-fallback", "default-port"],
    )
    def test_server_name_and_port(self, authority: str | None, host: str | None, expected: str) -> None:
        with serve(make_app(), H2KyoukaiComponent) as server, H2Client(server.port) as client:
            block = [(":method", "GET"), (":scheme", "http"), (":path", "/server-name")]
            if authority:
                block.append((":authority", authority))
            if host:
                block.append(("host", host))
            stream = client.open_stream()
            client.send(*client.headers_frames(stream.stream_id, block, True))
            client.response(stream.stream_id)
        assert stream.status == 200
        assert bytes(stream.data).decode() == expected


class TestStreams:
    def test_100_concurrent_streams_get_their_own_bodies(self) -> None:
        app = Kyoukai("many")
        count = 100
        arrived = 0
        all_in = asyncio.Event()

        @app.route("/item/<int:n>")
        async def item(ctx, n: int):
            nonlocal arrived
            arrived += 1
            if arrived == count:
                all_in.set()
            # Every handler is running before any answers: the streams really are concurrent.
            await all_in.wait()
            return f"item {n} ".encode() * (n * 20 + 1)

        with serve(app, H2KyoukaiComponent) as server, H2Client(server.port) as client:
            client.wait_ready()
            ids = {client.request(f"/item/{n}"): n for n in range(count)}
            client.read_until(lambda: all(client.streams[sid].done for sid in ids), timeout=30)
        for sid, n in ids.items():
            stream = client.streams[sid]
            assert stream.status == 200, (sid, stream.reset_code)
            assert bytes(stream.data) == f"item {n} ".encode() * (n * 20 + 1)

    def test_request_trailers_reach_the_environ(self) -> None:
        with serve(make_app(), H2KyoukaiComponent) as server, H2Client(server.port) as client:
            sid = client.request("/trailers", "POST", [("te", "trailers")], b"0123456789", end_stream=False)
            client.send_trailers(sid, [("x-checksum", "abc123"), ("x-count", "10")])
            stream = client.response(sid)
        assert stream.status == 200
        assert bytes(stream.data) == b"10 x-checksum=abc123;x-count=10"

    def test_head_sends_no_data(self) -> None:
        with serve(make_app(), H2KyoukaiComponent) as server, H2Client(server.port) as client:
            sid = client.request("/", "HEAD")
            stream = client.response(sid)
            get = client.response(client.request("/"))
        assert stream.status == 200
        assert stream.ended
        assert client.data_frames(sid) == []
        assert stream.header("content-length") == str(len(get.data))

    def test_early_hints_before_the_response(self) -> None:
        app = Kyoukai("hints")
        failures: list[BaseException] = []

        @app.route("/page")
        async def page(ctx):
            try:
                await ctx.proto.send_informational(ctx.environ, 103, [("link", "</style.css>; rel=preload")])
            except BaseException as e:
                failures.append(e)
                raise
            return "page"

        with serve(app, H2KyoukaiComponent) as server, H2Client(server.port) as client:
            stream = client.response(client.request("/page"))
        if failures:
            raise failures[0]
        assert stream.informational == [[(":status", "103"), ("link", "</style.css>; rel=preload")]]
        assert stream.status == 200


class TestErrors:
    def test_handler_exception_gives_500_and_the_connection_serves_on(self, caplog) -> None:
        with serve(make_app(), H2KyoukaiComponent) as server, H2Client(server.port) as client:
            failed = client.response(client.request("/boom"))
            after = client.response(client.request("/"))
        assert failed.status == 500
        assert after.status == 200
        assert bytes(after.data) == b"Hello over HTTP/2\n"
        assert client.goaway is None
        assert "RuntimeError: the handler failed" in caplog.text

    def test_exception_in_streaming_body_resets_the_stream(self, caplog) -> None:
        with serve(make_app(), H2KyoukaiComponent) as server, H2Client(server.port) as client:
            broken = client.response(client.request("/broken-stream"))
            after = client.response(client.request("/"))
        assert broken.status == 200
        assert broken.reset_code == ErrorCodes.INTERNAL_ERROR
        assert not broken.ended
        assert bytes(broken.data) in (b"", b"first part ")
        assert after.status == 200
        assert client.goaway is None
        assert "the body failed after the headers" in caplog.text


class TestResponseTrailers:
    """``response.trailers``, read after the body (a generator may fill it), ends the response."""

    @staticmethod
    def trailer_app() -> Kyoukai:
        from werkzeug.wrappers import Response

        app = Kyoukai("trailers")

        @app.route("/checked")
        async def checked(ctx):
            response = Response()

            async def body():
                yield b"part one, "
                yield b"part two"
                response.trailers = [("X-Checksum", "1234"), ("Connection", "dropped")]

            response.response = body()
            response.trailers = []
            return response

        @app.route("/fixed")
        async def fixed(ctx):
            response = Response(b"fixed body")
            response.trailers = {"x-done": "yes"}
            return response

        return app

    def test_http2_trailers_after_streamed_and_fixed_bodies(self) -> None:
        with serve(self.trailer_app(), H2KyoukaiComponent) as server, H2Client(server.port) as client:
            streamed = client.response(client.request("/checked"))
            fixed = client.response(client.request("/fixed"))
        assert streamed.data == b"part one, part two"
        assert streamed.trailers == [("x-checksum", "1234")]
        assert fixed.data == b"fixed body"
        assert fixed.trailers == [("x-done", "yes")]

    def test_http11_chunked_trailers_when_asked_for(self) -> None:
        import socket

        with serve(self.trailer_app()) as server:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(b"GET /checked HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n")
                raw = b""
                while chunk := sock.recv(65536):
                    raw += chunk
        assert raw.endswith(b"0\r\nX-Checksum: 1234\r\n\r\n"), raw


class TestWholeResponses:
    """A small response is written by Kyoukai itself (see ``H2ServerConnection.send_response``), not by h2."""

    @staticmethod
    def stream_frames(client: H2Client, stream_id: int) -> list[tuple[str, set[str], int]]:
        return [(type(f).__name__, set(f.flags), len(f.data)) for f in client.frames if f.stream_id == stream_id]

    @staticmethod
    def app() -> Kyoukai:
        app = Kyoukai("whole")

        @app.route("/n/<int:n>")
        async def numbered(ctx, n: int):
            # A new header value each time: the HPACK dynamic table changes with every response.
            return f"body {n}", 200, {"x-number": str(n) * (n % 7 + 1)}

        @app.route("/big-header")
        async def big_header(ctx):
            return "small body", 200, {"x-big": "v" * 40_000}

        @app.route("/empty")
        async def empty(ctx):
            return None

        return app

    def test_head_and_body_in_two_frames_and_hpack_stays_in_step(self, monkeypatch) -> None:
        via_h2: list[int] = []
        original = ServerH2Connection.send_headers

        def counting_send_headers(conn, stream_id, *args, **kwargs):
            via_h2.append(stream_id)
            return original(conn, stream_id, *args, **kwargs)

        monkeypatch.setattr(ServerH2Connection, "send_headers", counting_send_headers)
        with serve(self.app(), H2KyoukaiComponent) as server, H2Client(server.port) as client:
            for n in range(60):
                sid = client.request(f"/n/{n}")
                stream = client.response(sid)
                assert stream.status == 200
                assert stream.header("x-number") == str(n) * (n % 7 + 1)
                assert bytes(stream.data) == f"body {n}".encode()
                assert [(kind, flags) for kind, flags, _ in self.stream_frames(client, sid)] == [
                    ("HeadersFrame", {"END_HEADERS"}),
                    ("DataFrame", {"END_STREAM"}),
                ]
        assert via_h2 == []  # every response was written directly

    def test_header_block_larger_than_a_frame_goes_on_in_continuation_frames(self) -> None:
        with serve(self.app(), H2KyoukaiComponent) as server, H2Client(server.port) as client:
            sid = client.request("/big-header")
            stream = client.response(sid)
            after = client.response(client.request("/n/3"))
        assert stream.header("x-big") == "v" * 40_000
        assert bytes(stream.data) == b"small body"
        kinds = [(kind, flags) for kind, flags, _ in self.stream_frames(client, sid)]
        assert kinds[0] == ("HeadersFrame", set())
        assert kinds[1:-2] == [("ContinuationFrame", set())] * (len(kinds) - 3)
        assert kinds[-2:] == [("ContinuationFrame", {"END_HEADERS"}), ("DataFrame", {"END_STREAM"})]
        assert max(size for _, _, size in self.stream_frames(client, sid)) <= 16_384
        assert after.header("x-number") == "3333"

    def test_bodiless_response_is_one_headers_frame(self) -> None:
        with serve(self.app(), H2KyoukaiComponent) as server, H2Client(server.port) as client:
            sid = client.request("/empty")
            stream = client.response(sid)
        assert stream.status == 204
        assert [(kind, flags) for kind, flags, _ in self.stream_frames(client, sid)] == [
            ("HeadersFrame", {"END_HEADERS", "END_STREAM"})
        ]

    def test_a_closed_window_falls_back_to_the_sending_loop(self) -> None:
        settings = {SettingsFrame.INITIAL_WINDOW_SIZE: 4}
        with (
            serve(self.app(), H2KyoukaiComponent) as server,
            H2Client(server.port, settings=settings, auto_ack=False) as client,
        ):
            client.wait_ready()
            sid = client.request("/n/1")
            client.read_until(lambda: len(client.streams[sid].data) == 4)
            assert bytes(client.streams[sid].data) == b"body"
            client.window_update(sid, 100)
            stream = client.response(sid)
        assert bytes(stream.data) == b"body 1"
        assert [size for kind, _, size in self.stream_frames(client, sid) if kind == "DataFrame"] == [4, 2]
