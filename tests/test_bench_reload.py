"""
The HTTP/2 load client of the reload check (``bench/h2_load_client.py``): against Kyoukai
stopped gracefully in the middle of the load, nothing fails and nothing is processed twice;
against a scripted server, exactly the requests RFC 9113 section 8.7 says were not processed
are sent again, and every other loss is counted as a failure of its kind.
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket

import hpack
import pytest
from benchfiles import BENCH, load
from conftest import RunningServer, serve
from h2.errors import ErrorCodes
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
)

from kyoukai import Kyoukai
from kyoukai.asphalt import KyoukaiComponent

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


h2_load_client = load("bench_h2_load_client", BENCH / "h2_load_client.py")


def bench_app(name: str) -> Kyoukai:
    """A fresh instance of the benchmark app (``GET /``), one per server."""
    return load(name, BENCH / "apps" / "kyoukai_app.py").app


async def test_graceful_stop_mid_load_loses_nothing() -> None:
    # Two servers on one listening socket, as gunicorn's old and new workers: the first is
    # stopped gracefully while the load runs, and the client's new connections reach the second.
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    port = listener.getsockname()[1]
    components = [KyoukaiComponent(bench_app(f"bench_reload_app_{i}"), http2=True) for i in range(2)]
    for component in components:
        component.listen_sockets = [listener.dup()]
    old = RunningServer(components[0]).start()
    new: RunningServer | None = None
    try:
        load_ = h2_load_client.H2Load("127.0.0.1", port, connections=4, streams=5, duration=60, drain_timeout=10)
        run = asyncio.create_task(load_.run())
        await asyncio.wait_for(load_.when_completed(300), 20)
        new = await asyncio.to_thread(RunningServer(components[1]).start)
        await asyncio.to_thread(old.stop)
        await asyncio.wait_for(load_.when_completed(load_.result.completed + 300), 20)
        load_.stop()
        result = await asyncio.wait_for(run, 20)
    finally:
        if new is not None:
            await asyncio.to_thread(new.stop)
        listener.close()
    assert result.failed == 0, result.failures
    # Every connection to the old server was told to go, and a new one took its place.
    assert result.goaways >= 4 and result.connections >= 8, result
    served = [component.metrics.requests for component in components]
    assert all(served), served
    # What the servers answered is exactly what the client received: no request was processed
    # twice (a retried one that had been processed) and no answer was lost.
    assert sum(served) == result.completed, (served, result)


class ScriptedServer:
    """
    An HTTP/2 server whose first connection answers its first five streams with a GOAWAY (last
    stream id 7), a 200, REFUSED_STREAM, CANCEL and a 503; whose second connection starts one
    answer and closes; and whose later connections answer every request with 200.
    """

    def __init__(self) -> None:
        #: The request numbers (``?n=``) each connection received, in order.
        self.numbers: list[list[int]] = []
        self.answered = 0
        self.handlers: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        numbers: list[int] = []
        self.numbers.append(numbers)
        connection = len(self.numbers)
        encoder, decoder = hpack.Encoder(), hpack.Decoder()

        def head(stream_id: int, status: int, *, end: bool = True) -> bytes:
            flags = ["END_HEADERS", "END_STREAM"] if end else ["END_HEADERS"]
            return HeadersFrame(stream_id, encoder.encode([(":status", str(status))]), flags=flags).serialize()

        writer.write(SettingsFrame(0).serialize())
        try:
            assert await reader.readexactly(len(PREFACE)) == PREFACE
            while True:
                frame, length = Frame.parse_frame_header(memoryview(await reader.readexactly(9)))
                frame.parse_body(memoryview(await reader.readexactly(length)))
                if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                    writer.write(SettingsFrame(0, flags=["ACK"]).serialize())
                if not isinstance(frame, HeadersFrame):
                    continue
                fields = dict(decoder.decode(frame.data, raw=True))
                numbers.append(int(fields[b":path"].partition(b"?n=")[2]))
                if connection == 1 and len(numbers) == 5:
                    self.answered += 1
                    writer.write(
                        GoAwayFrame(0, last_stream_id=7).serialize()
                        + head(1, 200)
                        + RstStreamFrame(3, error_code=ErrorCodes.REFUSED_STREAM).serialize()
                        + RstStreamFrame(5, error_code=ErrorCodes.CANCEL).serialize()
                        + head(7, 503)
                    )
                    break
                if connection == 2 and len(numbers) == 5:
                    writer.write(head(1, 200, end=False))
                    break
                if connection > 2:
                    self.answered += 1
                    writer.write(head(frame.stream_id, 200, end=False))
                    writer.write(DataFrame(frame.stream_id, b"ok", flags=["END_STREAM"]).serialize())
            await writer.drain()
        except asyncio.IncompleteReadError:
            pass  # the client closed the connection
        finally:
            writer.close()


async def test_only_what_was_not_processed_is_sent_again() -> None:
    scripted = ScriptedServer()
    server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        load_ = h2_load_client.H2Load("127.0.0.1", port, connections=1, streams=5, duration=60, drain_timeout=10)
        run = asyncio.create_task(load_.run())
        await asyncio.wait_for(load_.when_completed(21), 10)
        load_.stop()
        result = await asyncio.wait_for(run, 10)
        await asyncio.wait_for(asyncio.gather(*scripted.handlers), 10)
    finally:
        server.close()
        await server.wait_closed()
    first, second = scripted.numbers[:2]
    # Stream 9 (above the last stream id) and stream 3 (REFUSED_STREAM) went out again first,
    # on the next connection; nothing else was ever sent twice.
    assert second[:2] == [first[4], first[1]], scripted.numbers
    sent = collections.Counter(number for numbers in scripted.numbers for number in numbers)
    assert {number for number, count in sent.items() if count > 1} == {first[4], first[1]}
    assert result.retried == 2
    assert result.failures == {
        "reset with CANCEL": 1,
        "status 503": 1,
        "connection lost during the answer": 1,
        "connection lost before the answer": 4,
    }
    assert result.failed == 7
    assert result.completed == scripted.answered
    assert result.goaways == 1 and result.connections == len(scripted.numbers) >= 3


async def test_requests_unanswered_after_the_drain_timeout_fail() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Reads everything, answers nothing, until the client goes.
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        load_ = h2_load_client.H2Load("127.0.0.1", port, connections=2, streams=3, duration=0.2, drain_timeout=0.5)
        result = await asyncio.wait_for(load_.run(), 10)
    finally:
        server.close()
        await server.wait_closed()
    assert (result.completed, result.retried, result.failed) == (0, 0, 6)
    assert result.failures == {"no answer before the drain timeout": 6}


def test_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with serve(bench_app("bench_reload_app_cli"), http2=True) as server:
        code = h2_load_client.main(["--port", str(server.port), "--duration", "0.3", "--no-uvloop"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["completed"] > 0 and result["failed"] == 0 and result["connections"] == 4, result


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="streams"):
        h2_load_client.H2Load("127.0.0.1", 1, streams=0)
    with pytest.raises(ValueError, match="must start with '/'"):
        h2_load_client.H2Load("127.0.0.1", 1, path="index.html")
