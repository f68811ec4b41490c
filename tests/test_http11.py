"""The HTTP/1.1 server through real sockets: keep-alive, pipelining, versions, bodies, TLS, signals."""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import ssl
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import RunningServer, serve
from http11_client import RawClient, chunked, request
from werkzeug.wrappers import Request, Response

from kyoukai import Kyoukai

WAIT = 5.0
BIG = bytes(range(256)) * 40_000


def make_app() -> Kyoukai:
    app = Kyoukai("http11")

    @app.route("/")
    async def index(ctx):
        return "hello"

    @app.route("/path/<name>")
    async def path(ctx, name: str):
        return f"path {name}"

    @app.route("/echo", methods=["POST", "PUT"])
    async def echo(ctx):
        return Response(ctx.request.get_data(), headers={"X-Length": str(len(ctx.request.get_data()))})

    @app.route("/stream-echo", methods=["POST"], stream_body=True)
    async def stream_echo(ctx):
        return b"".join([chunk async for chunk in ctx.request.stream])

    @app.route("/scheme")
    async def scheme(ctx):
        return ctx.environ["wsgi.url_scheme"]

    @app.route("/bye")
    async def bye(ctx):
        return Response("bye", headers={"Connection": "close"})

    @app.route("/generated")
    async def generated(ctx):
        return Response(iter([b"gen", b"erated"]))

    @app.route("/big")
    async def big(ctx):
        return BIG

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve(make_app()) as running:
        yield running


class TestKeepAlive:
    def test_several_requests_on_one_connection(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            for name in ("a", "b", "c"):
                client.send(request("GET", f"/path/{name}"))
                response = client.read_response()
                assert response.status == 200
                assert response.body == f"path {name}".encode()
                assert response.header("Connection") is None

    def test_httpx_reuses_the_connection(self, server: RunningServer) -> None:
        ports = set()
        with httpx.Client() as client:
            for _ in range(3):
                response = client.get(server.url("/"))
                assert response.text == "hello"
                ports.add(response.extensions["network_stream"].get_extra_info("client_addr")[1])
        assert len(ports) == 1

    def test_three_pipelined_requests_in_one_send(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(
                request("GET", "/path/one") + request("POST", "/echo", body=b"two") + request("GET", "/path/three")
            )
            bodies = [client.read_response().body for _ in range(3)]
        assert bodies == [b"path one", b"two", b"path three"]

    def test_bodiless_requests_between_others_read_nothing(self, server: RunningServer) -> None:
        """
        Requests without a body share one empty body per connection: whatever the handler does
        with it (read it whole, stream it), no request sees another's bytes, before or after.
        """
        with RawClient(server.port) as client:
            client.send(
                request("POST", "/echo", body=b"first")
                + request("GET", "/")
                + request("POST", "/echo")
                + request("POST", "/echo", {"Content-Length": "0"})
                + request("POST", "/stream-echo")
                + request("POST", "/stream-echo", body=b"streamed")
                + request("POST", "/stream-echo")
                + request("PUT", "/echo", body=b"last")
            )
            bodies = [client.read_response().body for _ in range(8)]
        assert bodies == [b"first", b"hello", b"", b"", b"", b"streamed", b"", b"last"]

    def test_connection_close_is_honoured(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("GET", "/", {"Connection": "close"}))
            response = client.read_response()
            assert response.body == b"hello"
            assert response.header("Connection") == "close"
            assert client.is_closed_by_server()

    def test_requests_after_connection_close_are_not_answered(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("GET", "/path/1", {"Connection": "close"}) + request("GET", "/path/2"))
            assert client.read_response().body == b"path 1"
            assert client.read_until_closed() == b""

    def test_many_pipelined_requests(self, server: RunningServer) -> None:
        """More than ``max_pipelined_requests`` (16) at once: reading pauses and resumes."""
        with RawClient(server.port) as client:
            client.send(b"".join(request("GET", f"/path/{i}") for i in range(60)))
            bodies = [client.read_response().body for _ in range(60)]
        assert bodies == [f"path {i}".encode() for i in range(60)]

    def test_connection_close_from_the_app_is_honoured(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("GET", "/bye") + request("GET", "/"))
            response = client.read_response()
            assert response.body == b"bye"
            assert [v for k, v in response.headers if k.lower() == "connection"] == ["close"]
            assert client.read_until_closed() == b""

    def test_date_header(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("GET", "/"))
            date = client.read_response().header("Date")
        assert date is not None
        assert date.endswith(" GMT")
        sent = email.utils.parsedate_to_datetime(date)
        assert abs(sent - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(seconds=60)


class TestVersions:
    def test_http10_is_answered_as_10_and_closed(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("GET", "/", version="1.0"))
            response = client.read_response()
            assert response.version == "HTTP/1.0"
            assert response.body == b"hello"
            assert response.header("Connection") == "close"
            assert client.is_closed_by_server()

    def test_http10_keep_alive_when_asked(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            for _ in range(2):
                client.send(request("GET", "/", {"Connection": "keep-alive"}, version="1.0"))
                response = client.read_response()
                assert response.version == "HTTP/1.0"
                assert response.header("Connection") == "keep-alive"
                assert response.body == b"hello"

    def test_head_has_headers_but_no_body(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("HEAD", "/") + request("GET", "/"))
            head = client.read_response(head=True)
            assert head.status == 200
            assert head.header("Content-Length") == "5"
            assert head.header("Content-Type") is not None
            # The next bytes on the wire are the GET response: nothing was sent as a HEAD body.
            get = client.read_response()
            assert get.body == b"hello"

    def test_http10_streaming_response_ends_with_the_connection(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("GET", "/generated", {"Connection": "keep-alive"}, version="1.0"))
            response = client.read_response()
        assert response.version == "HTTP/1.0"
        assert response.header("Transfer-Encoding") is None
        assert response.header("Connection") == "close"
        assert response.body == b"generated"

    def test_head_of_a_streaming_response(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("HEAD", "/generated") + request("GET", "/"))
            head = client.read_response(head=True)
            assert head.status == 200
            assert client.read_response().body == b"hello"


class TestRequestBodies:
    def test_content_length_body(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("POST", "/echo", body=b"x" * 100_000))
            response = client.read_response()
        assert response.body == b"x" * 100_000

    def test_chunked_body(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(
                request("POST", "/echo", {"Transfer-Encoding": "chunked"}) + chunked(b"hello ", b"chunked ", b"world")
            )
            response = client.read_response()
            assert response.body == b"hello chunked world"
            assert response.header("X-Length") == "19"
            # The connection stays usable after a chunked body.
            client.send(request("GET", "/"))
            assert client.read_response().body == b"hello"

    def test_chunked_body_sent_piecewise(self, server: RunningServer) -> None:
        body = chunked(b"a" * 1000, b"b" * 3000, b"c")
        with RawClient(server.port) as client:
            client.send(request("POST", "/echo", {"Transfer-Encoding": "chunked"}))
            for i in range(0, len(body), 7):
                client.send(body[i : i + 7])
            response = client.read_response()
        assert response.body == b"a" * 1000 + b"b" * 3000 + b"c"

    def test_chunked_body_from_httpx(self, server: RunningServer) -> None:
        def parts() -> Iterator[bytes]:
            yield b"first,"
            yield b"second"

        response = httpx.post(server.url("/echo"), content=parts())
        assert response.status_code == 200
        assert response.content == b"first,second"

    def test_expect_100_continue(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("POST", "/echo", {"Content-Length": "4", "Expect": "100-continue"}))
            interim = client.read_head()
            assert (interim.version, interim.status) == ("HTTP/1.1", 100)
            client.send(b"data")
            response = client.read_response()
        assert response.status == 200
        assert response.body == b"data"

    def test_expect_100_continue_on_a_streaming_route(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("POST", "/stream-echo", {"Transfer-Encoding": "chunked", "Expect": "100-continue"}))
            assert client.read_head().status == 100
            client.send(chunked(b"streamed ", b"body"))
            response = client.read_response()
        assert response.body == b"streamed body"

    def test_no_100_continue_when_the_body_was_sent_already(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("POST", "/echo", {"Expect": "100-continue"}, body=b"data"))
            response = client.read_response()
        assert response.status == 200
        assert response.body == b"data"

    def test_expect_100_continue_with_curl(self, server: RunningServer, tmp_path: Any) -> None:
        upload = tmp_path / "upload.bin"
        upload.write_bytes(b"u" * 2_000_000)
        result = subprocess.run(
            ["curl", "-sS", "-v", "--expect100-timeout", "30", "--data-binary", f"@{upload}", server.url("/echo")],
            capture_output=True,
            timeout=30,
            check=True,
        )
        assert b"HTTP/1.1 100 Continue" in result.stderr
        assert result.stdout == upload.read_bytes()


class TestStreamingResponses:
    @pytest.fixture(scope="class")
    @staticmethod
    def streaming() -> Iterator[tuple[RunningServer, dict[str, Any]]]:
        app = Kyoukai("streaming")
        state: dict[str, Any] = {}

        @app.route("/sync")
        async def sync_stream(ctx):
            def generate() -> Iterator[bytes]:
                for i in range(5):
                    yield f"part {i}\n".encode()

            return Response(generate(), mimetype="text/plain")

        @app.route("/async")
        async def async_stream(ctx):
            release = asyncio.Event()
            state["release"] = release

            async def generate():
                yield b"first chunk\n"
                await release.wait()
                yield b"second chunk\n"

            return Response(generate(), mimetype="text/plain")

        with serve(app) as running:
            state["server"] = running
            yield running, state

    def _release(self, server: RunningServer, state: dict[str, Any]) -> None:
        server.loop.call_soon_threadsafe(state["release"].set)

    def test_sync_generator_is_sent_chunked(self, streaming: tuple[RunningServer, dict[str, Any]]) -> None:
        server, _ = streaming
        with RawClient(server.port) as client:
            client.send(request("GET", "/sync"))
            response = client.read_response()
        assert response.header("Transfer-Encoding") == "chunked"
        assert response.header("Content-Length") is None
        assert response.chunks == [7] * 5
        assert response.body == b"".join(f"part {i}\n".encode() for i in range(5))

    def test_sync_generator_with_httpx_and_curl(self, streaming: tuple[RunningServer, dict[str, Any]]) -> None:
        server, _ = streaming
        expected = b"".join(f"part {i}\n".encode() for i in range(5))
        assert httpx.get(server.url("/sync")).content == expected
        result = subprocess.run(["curl", "-sS", server.url("/sync")], capture_output=True, timeout=30, check=True)
        assert result.stdout == expected

    def test_async_generator_chunks_arrive_as_produced_raw(
        self, streaming: tuple[RunningServer, dict[str, Any]]
    ) -> None:
        server, state = streaming
        with RawClient(server.port) as client:
            client.send(request("GET", "/async"))
            head = client.read_head()
            assert head.header("Transfer-Encoding") == "chunked"
            # The first chunk arrives while the generator is still waiting for the release.
            assert client.read_chunk() == b"first chunk\n"
            self._release(server, state)
            assert client.read_chunk() == b"second chunk\n"
            assert client.read_chunk() == b""

    def test_async_generator_with_httpx(self, streaming: tuple[RunningServer, dict[str, Any]]) -> None:
        server, state = streaming
        with httpx.stream("GET", server.url("/async"), timeout=WAIT) as response:
            chunks = response.iter_raw()
            assert next(chunks) == b"first chunk\n"
            self._release(server, state)
            assert b"".join(chunks) == b"second chunk\n"

    def test_async_generator_with_curl(self, streaming: tuple[RunningServer, dict[str, Any]]) -> None:
        server, state = streaming
        with subprocess.Popen(["curl", "-sSN", server.url("/async")], stdout=subprocess.PIPE) as curl:
            try:
                assert curl.stdout.readline() == b"first chunk\n"
                self._release(server, state)
                assert curl.stdout.read() == b"second chunk\n"
                assert curl.wait(WAIT) == 0
            finally:
                curl.kill()


class TestLargeResponses:
    def test_httpx(self, server: RunningServer) -> None:
        response = httpx.get(server.url("/big"))
        assert response.headers["Content-Length"] == str(len(BIG))
        assert response.content == BIG

    def test_curl(self, server: RunningServer) -> None:
        result = subprocess.run(["curl", "-sS", server.url("/big")], capture_output=True, timeout=30, check=True)
        assert result.stdout == BIG

    def test_reader_behind_the_server_gets_everything(self, server: RunningServer) -> None:
        """The body is larger than the socket buffers, so the server waits for the reader."""
        with RawClient(server.port) as client:
            client.send(request("GET", "/big"))
            head = client.read_head()
            body = b"".join(client.read_exactly(1000) for _ in range(len(BIG) // 1000))
        assert head.status == 200
        assert body == BIG


class TestShutdown:
    def test_idle_closed_at_once_busy_finishes_with_close(self) -> None:
        app = Kyoukai("shutdown")
        started = threading.Event()
        release: list[asyncio.Event] = []

        @app.route("/")
        async def index(ctx):
            return "hello"

        @app.route("/busy")
        async def busy(ctx):
            release.append(asyncio.Event())
            started.set()
            await release[0].wait()
            return "finished"

        with serve(app) as server, RawClient(server.port) as idle, RawClient(server.port) as working:
            idle.send(request("GET", "/"))
            assert idle.read_response().body == b"hello"
            working.send(request("GET", "/busy"))
            assert started.wait(WAIT)
            stopping = asyncio.run_coroutine_threadsafe(server.component.stop(), server.loop)
            assert idle.is_closed_by_server()
            assert not stopping.done()
            server.loop.call_soon_threadsafe(release[0].set)
            response = working.read_response()
            assert response.body == b"finished"
            assert response.header("Connection") == "close"
            assert working.is_closed_by_server()
            stopping.result(WAIT)


class TestClientGone:
    def test_disconnect_cancels_the_handler(self) -> None:
        app = Kyoukai("gone")
        started, finished = threading.Event(), threading.Event()
        outcome: list[str] = []

        @app.route("/forever")
        async def forever(ctx):
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise
            finally:
                finished.set()

        with serve(app) as server:
            client = RawClient(server.port)
            client.send(request("GET", "/forever"))
            assert started.wait(WAIT)
            client.close()
            assert finished.wait(WAIT), "the handler kept running after the client left"
        assert outcome == ["cancelled"]

    def test_disconnect_during_upload_cancels_the_handler(self) -> None:
        app = Kyoukai("gone")
        started, finished = threading.Event(), threading.Event()
        outcome: list[str] = []

        @app.route("/upload", methods=["POST"], stream_body=True)
        async def upload(ctx):
            started.set()
            try:
                async for _ in ctx.request.stream:
                    pass
            except BaseException as e:
                outcome.append(type(e).__name__)
                raise
            finally:
                finished.set()

        with serve(app) as server:
            client = RawClient(server.port)
            client.send(request("POST", "/upload", {"Content-Length": "1000000"}) + b"x" * 1000)
            assert started.wait(WAIT)
            client.close()
            assert finished.wait(WAIT), "the handler kept waiting for the body of a client that left"
        assert outcome in (["CancelledError"], ["ClientDisconnected"])


class TestTLS:
    def test_https_with_httpx(self, ssl_config: dict[str, Any], client_ssl_context: ssl.SSLContext) -> None:
        with serve(make_app(), ssl=ssl_config) as server:
            with httpx.Client(verify=client_ssl_context) as client:
                first = client.get(server.url("/scheme", scheme="https"))
                second = client.post(server.url("/echo", scheme="https"), content=b"over tls")
        assert first.status_code == 200
        assert first.text == "https"
        assert first.http_version == "HTTP/1.1"
        assert second.content == b"over tls"

    def test_plain_http_scheme(self, server: RunningServer) -> None:
        assert httpx.get(server.url("/scheme")).text == "http"


class TestSignals:
    def test_connection_made_and_lost_fire(self) -> None:
        made, lost = threading.Event(), threading.Event()
        protocols: dict[str, Any] = {}

        def on_made(event: Any) -> None:
            protocols["made"] = event.protocol
            made.set()

        def on_lost(event: Any) -> None:
            protocols["lost"] = event.protocol
            lost.set()

        with serve(make_app()) as server:
            server.component.connection_made.connect(on_made)
            server.component.connection_lost.connect(on_lost)
            with RawClient(server.port) as client:
                client.send(request("GET", "/"))
                assert client.read_response().body == b"hello"
                assert made.wait(WAIT)
                assert not lost.is_set()
                peer = client.sock.getsockname()
            assert lost.wait(WAIT)
        assert protocols["made"] is protocols["lost"]
        assert protocols["made"].peer == peer


class TestAppFaults:
    @pytest.fixture(scope="class")
    @staticmethod
    def faulty() -> Iterator[RunningServer]:
        class BrokenRequest(Request):
            def __init__(self, environ: dict[str, Any]) -> None:
                if environ["PATH_INFO"] == "/broken-request":
                    raise RuntimeError("cannot build this request")
                super().__init__(environ)

        app = Kyoukai("faulty", request_class=BrokenRequest)

        @app.route("/")
        async def index(ctx):
            return "hello"

        @app.route("/broken-request")
        async def never(ctx):
            return "unreachable"

        @app.route("/unicode-header")
        async def unicode_header(ctx):
            return Response("x", headers={"X-Name": "\u540d\u524d"})

        @app.route("/fails-midway")
        async def fails_midway(ctx):
            async def generate():
                yield b"partial"
                raise RuntimeError("the body generator broke")

            return Response(generate())

        with serve(app) as running:
            yield running

    def test_header_that_cannot_be_sent_gives_500(self, faulty: RunningServer) -> None:
        with RawClient(faulty.port) as client:
            client.send(request("GET", "/unicode-header") + request("GET", "/"))
            response = client.read_response()
            assert response.status == 500
            assert response.header("Connection") == "close"
            assert client.read_until_closed() == b""

    def test_request_class_failure_gives_500(self, faulty: RunningServer) -> None:
        with RawClient(faulty.port) as client:
            client.send(request("GET", "/broken-request"))
            assert client.read_response().status == 500
            client.send(request("GET", "/"))
            assert client.read_response().body == b"hello"

    def test_body_failing_midway_cuts_the_connection(self, faulty: RunningServer) -> None:
        with RawClient(faulty.port) as client:
            client.send(request("GET", "/fails-midway") + request("GET", "/"))
            head = client.read_head()
            assert head.status == 200
            assert client.read_chunk() == b"partial"
            # No last chunk: the client can tell the body is incomplete.
            assert client.read_until_closed() == b""


class TestUpgradeIgnored:
    def test_unknown_upgrade_is_served_as_http11(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(
                request("POST", "/echo", {"Connection": "Upgrade", "Upgrade": "foo/1"}, body=b"up")
                + request("GET", "/")
            )
            response = client.read_response()
            assert response.status == 200
            assert response.body == b"up"
            assert client.read_response().body == b"hello"

    def test_websocket_upgrade_to_a_plain_route_is_not_a_server_error(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("GET", "/", {"Connection": "Upgrade", "Upgrade": "websocket"}))
            response = client.read_response()
        assert response.status == 400
