"""RequestBody: the wsgi.input fed by the backends, driven here without a network."""

from __future__ import annotations

import asyncio

import pytest
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wrappers import Request

from kyoukai.body import RequestBody
from kyoukai.testing import TestKyoukai
from kyoukai.wsgi import to_wsgi_environment


async def one_loop_pass() -> None:
    """Let the other ready tasks run once (a scheduling step, no waiting on time)."""
    await asyncio.sleep(0)


class Consumed:
    """Counts what ``on_consumed`` reports."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, n: int) -> None:
        self.calls.append(n)

    @property
    def total(self) -> int:
        return sum(self.calls)


@pytest.fixture
def consumed() -> Consumed:
    return Consumed()


class TestFeeding:
    def test_feed_counts_bytes(self) -> None:
        body = RequestBody()
        body.feed(b"abc")
        body.feed(b"")
        body.feed(b"de")
        assert (body.buffered, body.received, body.complete) == (5, 5, False)
        body.feed_eof()
        assert body.complete

    async def test_read_all_collects_every_chunk(self, consumed: Consumed) -> None:
        body = RequestBody(on_consumed=consumed)
        body.feed(b"hello ")
        body.feed(b"world")
        body.feed_eof()
        await body.read_all()
        assert body.read() == b"hello world"
        assert body.read() == b""
        assert consumed.total == 11
        assert body.buffered == 0

    async def test_read_all_waits_for_data_and_eof(self) -> None:
        body = RequestBody()
        task = asyncio.ensure_future(body.read_all())
        await one_loop_pass()
        assert not task.done()
        body.feed(b"late")
        await one_loop_pass()
        assert not task.done()
        body.feed_eof()
        await asyncio.wait_for(task, 5)
        assert body.read() == b"late"

    async def test_read_all_twice_is_harmless(self) -> None:
        body = RequestBody()
        body.feed(b"x")
        body.feed_eof()
        await body.read_all()
        await body.read_all()
        assert body.read() == b"x"

    async def test_file_interface_after_read_all(self) -> None:
        body = RequestBody()
        body.feed(b"line one\nline two\nend")
        body.feed_eof()
        await body.read_all()
        assert body.readline() == b"line one\n"
        assert body.read(4) == b"line"
        assert body.readlines() == [b" two\n", b"end"]
        body.close()

    async def test_empty_body(self) -> None:
        body = RequestBody()
        body.feed_eof()
        await body.read_all()
        assert body.read() == b""
        assert await body.get_chunk() == b""


class TestMaxSize:
    async def test_declared_length_over_the_limit_fails_before_reading(self, consumed: Consumed) -> None:
        body = RequestBody(max_size=10, expected_length=11, on_consumed=consumed)
        body.feed(b"x" * 5)
        with pytest.raises(RequestEntityTooLarge, match="11 bytes.*10 bytes"):
            await body.read_all()
        assert consumed.calls == []

    async def test_received_bytes_over_the_limit_fail(self) -> None:
        body = RequestBody(max_size=10)
        body.feed(b"x" * 6)
        body.feed(b"x" * 6)
        body.feed_eof()
        with pytest.raises(RequestEntityTooLarge, match="max_body_size of 10 bytes"):
            await body.read_all()

    async def test_body_at_the_limit_is_accepted(self) -> None:
        body = RequestBody(max_size=10, expected_length=10)
        body.feed(b"x" * 10)
        body.feed_eof()
        await body.read_all()
        assert body.read() == b"x" * 10

    async def test_too_large_body_is_a_413_response(self) -> None:
        app = TestKyoukai("app")

        @app.route("/upload", methods=["POST"])
        async def upload(ctx):
            return ctx.request.get_data()

        body = RequestBody(max_size=4, expected_length=8)
        body.feed(b"12345678")
        body.feed_eof()
        environ = to_wsgi_environment([("Content-Length", "8")], "POST", "/upload", "1.1", body=body)
        response = await app.process_request(Request(environ), None)
        assert response.status_code == 413


class TestStreaming:
    async def test_get_chunk_returns_chunks_as_they_arrive(self, consumed: Consumed) -> None:
        body = RequestBody(on_consumed=consumed)
        body.feed(b"first")
        assert await body.get_chunk() == b"first"
        assert consumed.calls == [5]
        waiting = asyncio.ensure_future(body.get_chunk())
        await one_loop_pass()
        assert not waiting.done()
        body.feed(b"second")
        assert await asyncio.wait_for(waiting, 5) == b"second"
        body.feed_eof()
        assert await body.get_chunk() == b""

    async def test_get_chunk_hands_out_chunks_as_they_came(self, consumed: Consumed) -> None:
        body = RequestBody(on_consumed=consumed)
        body.feed(b"a")
        body.feed(b"bc")
        assert await body.get_chunk() == b"a"
        assert body.buffered == 2
        assert await body.get_chunk() == b"bc"
        assert body.buffered == 0
        assert consumed.calls == [1, 2]

    async def test_async_iteration(self, consumed: Consumed) -> None:
        body = RequestBody(on_consumed=consumed)
        body.feed(b"one")
        body.feed_eof()
        assert [chunk async for chunk in body] == [b"one"]

        body = RequestBody(on_consumed=consumed)

        async def produce() -> None:
            for chunk in (b"a", b"bc", b"def"):
                body.feed(chunk)
                await one_loop_pass()
            body.feed_eof()

        producer = asyncio.ensure_future(produce())
        chunks = [chunk async for chunk in body]
        await producer
        assert b"".join(chunks) == b"abcdef"
        assert consumed.total == 3 + 6

    async def test_read_async(self) -> None:
        body = RequestBody()
        body.feed(b"part")
        assert await body.read_async(to_end=False) == b"part"
        body.feed(b" rest")
        body.feed_eof()
        assert await body.read_async() == b" rest"

    def test_partial_read_before_the_end(self, consumed: Consumed) -> None:
        body = RequestBody(on_consumed=consumed)
        body.feed(b"abc")
        body.feed(b"defg")
        assert body.read(2) == b"ab"
        assert body.read(3) == b"cde"
        assert body.buffered == 2
        assert body.read() == b"fg"
        assert body.read() == b""
        assert consumed.total == 7

    def test_on_first_read_is_called_once(self) -> None:
        started = []
        body = RequestBody(on_first_read=lambda: started.append(True))
        body.feed(b"x")
        assert started == []
        body.read(0)
        body.read()
        assert started == [True]

    async def test_on_first_read_for_read_all(self) -> None:
        started = []
        body = RequestBody(on_first_read=lambda: started.append(True))
        body.feed_eof()
        await body.read_all()
        assert started == [True]


class TestAbort:
    async def test_abort_wakes_a_waiting_reader(self) -> None:
        body = RequestBody()
        body.feed(b"partial")
        waiting = asyncio.ensure_future(body.read_all())
        await one_loop_pass()
        body.abort()
        with pytest.raises(ClientDisconnected):
            await asyncio.wait_for(waiting, 5)
        assert body.buffered == 0

    async def test_reads_after_abort_fail(self) -> None:
        body = RequestBody()
        body.feed(b"lost")
        body.abort()
        with pytest.raises(ClientDisconnected):
            await body.get_chunk()
        with pytest.raises(ClientDisconnected):
            await body.read_all()

    async def test_abort_with_a_custom_error(self) -> None:
        body = RequestBody()
        body.abort(ConnectionResetError("stream reset"))
        with pytest.raises(ConnectionResetError, match="stream reset"):
            await body.get_chunk()

    async def test_abort_after_eof_keeps_the_complete_body_readable(self) -> None:
        body = RequestBody()
        body.feed(b"done")
        body.feed_eof()
        await body.read_all()
        body.abort()
        assert body.read() == b"done"

    async def test_abort_after_eof_with_unread_data_is_not_an_empty_body(self, consumed: Consumed) -> None:
        body = RequestBody(on_consumed=consumed)
        body.feed(b"all of it")
        body.feed_eof()
        body.abort()
        assert body.buffered == 0
        with pytest.raises(ClientDisconnected):
            await body.read_all()
        with pytest.raises(ClientDisconnected):
            await body.get_chunk()
        assert consumed.calls == []

    async def test_abort_after_everything_was_taken_is_harmless(self) -> None:
        body = RequestBody()
        body.feed(b"chunk")
        body.feed_eof()
        assert await body.get_chunk() == b"chunk"
        body.abort()
        assert await body.get_chunk() == b""

    async def test_aborted_body_is_a_400_response(self, caplog: pytest.LogCaptureFixture) -> None:
        app = TestKyoukai("app")

        @app.route("/upload", methods=["POST"])
        async def upload(ctx):
            return ctx.request.get_data()

        body = RequestBody()
        body.feed(b"half")
        body.abort()
        environ = to_wsgi_environment([("Content-Length", "8")], "POST", "/upload", "1.1", body=body)
        response = await app.process_request(Request(environ), None)
        assert response.status_code == 400


class TestWithTheApp:
    async def test_body_is_read_before_the_handler(self, consumed: Consumed) -> None:
        app = TestKyoukai("app")

        @app.route("/json", methods=["POST"])
        async def json_route(ctx):
            return str(ctx.request.get_json()["n"] * 2)

        body = RequestBody(on_consumed=consumed)
        body.feed(b'{"n": ')
        body.feed(b"21}")
        body.feed_eof()
        headers = [("Content-Type", "application/json"), ("Content-Length", "9")]
        environ = to_wsgi_environment(headers, "POST", "/json", "1.1", body=body)
        response = await app.process_request(Request(environ), None)
        assert response.get_data() == b"42"
        assert consumed.total == 9

    async def test_stream_body_route_reads_as_data_arrives(self) -> None:
        app = TestKyoukai("app")

        @app.route("/stream", methods=["POST"], stream_body=True)
        async def stream(ctx):
            chunks = [chunk async for chunk in ctx.request.environ["wsgi.input"]]
            return b"|".join(chunks)

        body = RequestBody()
        body.feed(b"first")
        environ = to_wsgi_environment([], "POST", "/stream", "1.1", body=body)
        task = asyncio.ensure_future(app.process_request(Request(environ), None))
        await one_loop_pass()
        assert not task.done(), "the handler runs before the body is complete"
        body.feed(b"second")
        body.feed_eof()
        response = await asyncio.wait_for(task, 5)
        assert response.get_data() == b"first|second"
