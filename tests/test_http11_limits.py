"""HTTP/1.1 limits and timeouts through real sockets: 400, 408, 413, 414, 431, idle and slow peers."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import RunningServer, serve
from http11_client import RawClient, chunked, request
from werkzeug.wrappers import Response

from kyoukai import Kyoukai

WAIT = 5.0
LIMITS = {
    "max_header_size": 4096,
    "max_header_count": 20,
    "max_body_size": 100_000,
    "keep_alive_timeout": 0.3,
    "header_timeout": 0.3,
    "send_timeout": 0.5,
}


class Calls:
    """What the handlers of the limits app saw, readable from the test thread."""

    def __init__(self) -> None:
        self.upload_sizes: list[int] = []
        self.stream_finished = threading.Event()
        self.streamed = 0


def make_app(calls: Calls) -> Kyoukai:
    app = Kyoukai("limits")

    @app.route("/")
    async def index(ctx):
        return "hello"

    @app.route("/upload", methods=["POST"])
    async def upload(ctx):
        calls.upload_sizes.append(len(ctx.request.get_data()))
        return "stored"

    @app.route("/slow")
    async def slow(ctx):
        # Work that outlasts keep_alive_timeout and header_timeout several times over.
        await asyncio.sleep(4 * LIMITS["keep_alive_timeout"])
        return "slow"

    @app.route("/endless")
    async def endless(ctx):
        async def generate():
            chunk = b"e" * 65536
            try:
                while True:
                    calls.streamed += len(chunk)
                    yield chunk
            finally:
                calls.stream_finished.set()

        return Response(generate())

    return app


@pytest.fixture(scope="module")
def limited() -> Iterator[tuple[RunningServer, Calls]]:
    calls = Calls()
    with serve(make_app(calls), **LIMITS) as server:
        yield server, calls


@pytest.fixture
def server(limited: tuple[RunningServer, Calls]) -> RunningServer:
    return limited[0]


@pytest.fixture
def calls(limited: tuple[RunningServer, Calls]) -> Calls:
    limited[1].upload_sizes.clear()
    return limited[1]


def assert_rejected(client: RawClient, status: int) -> None:
    """The next response is ``status`` with ``Connection: close``, then the server closes."""
    response = client.read_response()
    assert response.status == status, response
    assert response.header("Connection") == "close"
    assert client.is_closed_by_server()


class TestMalformed:
    @pytest.mark.parametrize(
        "garbage",
        [
            b"\x00\x01\x02garbage\r\n\r\n",
            b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ],
    )
    def test_gets_400_and_close(self, server: RunningServer, garbage: bytes) -> None:
        with RawClient(server.port) as client:
            client.send(garbage)
            assert_rejected(client, 400)

    def test_others_are_served_meanwhile_and_after(self, server: RunningServer) -> None:
        with RawClient(server.port) as bystander, RawClient(server.port) as attacker:
            bystander.send(request("GET", "/"))
            assert bystander.read_response().body == b"hello"
            attacker.send(b"\xff" * 1000 + b"\r\n\r\n")
            assert_rejected(attacker, 400)
            bystander.send(request("GET", "/"))
            assert bystander.read_response().body == b"hello"
        assert httpx.get(server.url("/")).text == "hello"

    def test_earlier_pipelined_request_is_answered_first(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("GET", "/") + b"BLAH\x00\r\n\r\n")
            assert client.read_response().body == b"hello"
            assert_rejected(client, 400)


class TestHeadLimits:
    def test_header_larger_than_max_header_size(self, server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, "kyoukai")
        with RawClient(server.port) as client:
            client.send(request("GET", "/", {"X-Big": "b" * 5000}))
            assert_rejected(client, 431)
        assert "max_header_size=4096" in caplog.text

    def test_many_small_headers_over_max_header_size(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("GET", "/", {f"X-H{i}": "v" * 300 for i in range(19)}))
            assert_rejected(client, 431)

    def test_more_headers_than_max_header_count(self, server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, "kyoukai")
        with RawClient(server.port) as client:
            client.send(request("GET", "/", {f"X-H{i}": "v" for i in range(25)}))
            assert_rejected(client, 431)
        assert "max_header_count=20" in caplog.text

    def test_just_under_the_limits_is_served(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("GET", "/", {f"X-H{i}": "v" * 100 for i in range(19)}))
            assert client.read_response().body == b"hello"

    def test_long_request_target(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("GET", "/?q=" + "a" * 5000))
            assert_rejected(client, 414)

    def test_head_sent_in_small_pieces_is_still_measured(self, server: RunningServer) -> None:
        data = request("GET", "/", {"X-Big": "b" * 5000})
        with RawClient(server.port) as client:
            for i in range(0, 4500, 500):
                client.send(data[i : i + 500])
            client.send(data[4500:])
            assert_rejected(client, 431)


class TestBodyLimit:
    def test_content_length_over_the_limit(
        self, server: RunningServer, calls: Calls, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, "kyoukai")
        with RawClient(server.port) as client:
            client.send(request("POST", "/upload", {"Content-Length": "100001"}) + b"x" * 1000)
            assert_rejected(client, 413)
        assert calls.upload_sizes == []
        assert "max_body_size" in caplog.text

    def test_chunked_body_over_the_limit(self, server: RunningServer, calls: Calls) -> None:
        with RawClient(server.port) as client:
            client.send(request("POST", "/upload", {"Transfer-Encoding": "chunked"}))
            client.send(chunked(*[b"c" * 30_000] * 4))
            response = client.read_response()
            assert response.status == 413
            if response.header("Connection") == "close":
                assert client.is_closed_by_server()
            else:
                # The whole body had arrived, so the connection is still in step: reusable.
                client.send(request("GET", "/"))
                assert client.read_response().body == b"hello"
        assert calls.upload_sizes == []

    def test_chunked_body_over_the_limit_still_arriving(self, server: RunningServer, calls: Calls) -> None:
        with RawClient(server.port) as client:
            client.send(request("POST", "/upload", {"Transfer-Encoding": "chunked"}))
            client.send(b"".join(b"%x\r\n%s\r\n" % (10_000, b"c" * 10_000) for _ in range(11)))
            assert_rejected(client, 413)
        assert calls.upload_sizes == []

    def test_100_continue_is_not_sent_for_a_body_over_the_limit(self, server: RunningServer, calls: Calls) -> None:
        with RawClient(server.port) as client:
            client.send(request("POST", "/upload", {"Content-Length": "200000", "Expect": "100-continue"}))
            assert_rejected(client, 413)
        assert calls.upload_sizes == []

    def test_body_at_the_limit_is_accepted(self, server: RunningServer, calls: Calls) -> None:
        with RawClient(server.port) as client:
            client.send(
                request("POST", "/upload", {"Transfer-Encoding": "chunked"}) + chunked(b"a" * 50_000, b"b" * 50_000)
            )
            assert client.read_response().body == b"stored"
            client.send(request("POST", "/upload", body=b"z" * 100_000))
            assert client.read_response().body == b"stored"
        assert calls.upload_sizes == [100_000, 100_000]

    def test_httpx_sees_413_while_still_sending(self, server: RunningServer, calls: Calls) -> None:
        response = httpx.post(server.url("/upload"), content=b"u" * 5_000_000)
        assert response.status_code == 413
        assert calls.upload_sizes == []

    def test_httpx_chunked_upload_sees_413(self, server: RunningServer, calls: Calls) -> None:
        def parts() -> Iterator[bytes]:
            for _ in range(100):
                yield b"p" * 50_000

        response = httpx.post(server.url("/upload"), content=parts())
        assert response.status_code == 413
        assert calls.upload_sizes == []


class TestTimeouts:
    def test_idle_connection_is_closed(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            assert client.is_closed_by_server()

    def test_idle_after_a_response_is_closed(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("GET", "/"))
            assert client.read_response().body == b"hello"
            assert client.is_closed_by_server()

    def test_half_a_head_gets_408(self, server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, "kyoukai")
        with RawClient(server.port) as client:
            client.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            assert_rejected(client, 408)
        assert "header_timeout=0.3" in caplog.text

    def test_trickled_head_gets_408(self, server: RunningServer) -> None:
        """A byte at a time does not keep the head alive: the timer runs from the first byte."""
        data = request("GET", "/", {"X-Slow": "s" * 1000})
        with RawClient(server.port, timeout=0.05) as client:
            for byte in data:
                try:
                    client.send(bytes([byte]))
                except ConnectionError:
                    break  # closed after answering; the answer is still to be read
                try:
                    if client.sock.recv(1, 2):  # MSG_PEEK: has the server answered yet?
                        break
                except TimeoutError:
                    continue
            else:
                pytest.fail("the server waited for the whole trickled head")
            client.sock.settimeout(WAIT)
            assert_rejected(client, 408)

    def test_slow_handler_is_not_cut_by_the_idle_timer(self, server: RunningServer) -> None:
        with RawClient(server.port) as client:
            client.send(request("GET", "/slow"))
            assert client.read_response().body == b"slow"

    def test_reader_that_never_reads_is_dropped(self, server: RunningServer, calls: Calls) -> None:
        """Write backpressure, then ``send_timeout``: the server stops producing, then gives up."""
        lost = threading.Event()
        with RawClient(server.port) as client:
            me = client.sock.getsockname()

            def on_lost(event: Any) -> None:
                if event.protocol.peer == me:
                    lost.set()

            server.component.connection_lost.connect(on_lost)
            try:
                client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                client.send(request("GET", "/endless"))
                assert calls.stream_finished.wait(WAIT), "the response kept waiting for a reader that never reads"
                assert lost.wait(WAIT)
            finally:
                server.component.connection_lost.disconnect(on_lost)
        # The generator was not drained into memory: it stopped once the socket buffers were full.
        assert calls.streamed < 64 * 1024 * 1024


class TestTLSHandshake:
    def test_silent_tls_client_is_dropped_within_header_timeout(self, ssl_config: dict[str, Any]) -> None:
        with serve(make_app(Calls()), ssl=ssl_config, header_timeout=0.3) as server:
            with RawClient(server.port) as client:
                # A TCP connection that never sends a ClientHello.
                assert client.is_closed_by_server()

    def test_stalled_tls_handshake_leaves_others_served(
        self, ssl_config: dict[str, Any], client_ssl_context: ssl.SSLContext
    ) -> None:
        with serve(make_app(Calls()), ssl=ssl_config, header_timeout=0.3) as server:
            with RawClient(server.port) as silent:
                silent.send(b"\x16\x03\x01")  # the first bytes of a TLS record, then nothing
                response = httpx.get(server.url("/", scheme="https"), verify=client_ssl_context)
                assert response.text == "hello"
                assert silent.is_closed_by_server()


class TestConnectionSignals:
    def test_every_connection_made_is_lost_however_it_ends(self) -> None:
        made: list[Any] = []
        lost: list[Any] = []
        all_lost = threading.Condition()

        def on_lost(event: Any) -> None:
            with all_lost:
                lost.append(event.protocol)
                all_lost.notify_all()

        with serve(make_app(Calls()), **LIMITS) as server:
            server.component.connection_made.connect(lambda event: made.append(event.protocol))
            server.component.connection_lost.connect(on_lost)
            with RawClient(server.port) as served:
                served.send(request("GET", "/"))
                assert served.read_response().body == b"hello"
            with RawClient(server.port) as rejected:
                rejected.send(b"\x00\r\n\r\n")
                assert_rejected(rejected, 400)
            with RawClient(server.port) as idle:
                assert idle.is_closed_by_server()
            with all_lost:
                assert all_lost.wait_for(lambda: len(lost) == 3, WAIT), lost
            assert server.component.connections == set()
        assert len(made) == 3
        assert set(made) == set(lost)


class TestSendTimeoutOverHTTP2:
    """The HTTP/2 counterpart of the slow-reader test above, on the same component and settings."""

    def test_zero_window_stream_is_given_up(self) -> None:
        from h2client import H2Client
        from hyperframe.frame import SettingsFrame

        calls = Calls()
        with serve(make_app(calls), http2=True, send_timeout=0.5) as server:
            with H2Client(server.port, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}, auto_ack=False) as client:
                sid = client.request("/endless")
                client.read_until(lambda: client.streams[sid].status is not None)
                assert calls.stream_finished.wait(2.0), "the response kept waiting for a window that never opens"
