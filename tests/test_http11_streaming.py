"""HTTP/1.1 request bodies streamed to ``stream_body=True`` handlers in bounded memory."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import RunningServer, serve
from http11_client import RawClient, request

from kyoukai import Kyoukai

WAIT = 5.0
BUFFER = 256 * 1024
#: asyncio hands a protocol at most this much per ``data_received``: the overshoot allowed
#: past ``body_buffer_size`` before reading pauses.
ONE_READ = 256 * 1024
GiB = 1024**3


class Upload:
    """Shared between a handler (server thread) and the test."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.go: asyncio.Event | None = None
        self.stream: Any = None


def make_app(upload: Upload) -> Kyoukai:
    app = Kyoukai("streaming")

    @app.route("/count", methods=["POST"], stream_body=True)
    async def count(ctx):
        stream = ctx.request.stream
        upload.stream, upload.go = stream, asyncio.Event()
        upload.started.set()
        await upload.go.wait()
        total = largest = chunks = 0
        async for chunk in stream:
            total += len(chunk)
            largest = max(largest, len(chunk))
            chunks += 1
        return json.dumps({"total": total, "largest": largest, "chunks": chunks})

    @app.route("/count-parts", methods=["POST"], stream_body=True)
    async def count_parts(ctx):
        total = 0
        while chunk := await ctx.request.stream.read_async(to_end=False):
            total += len(chunk)
        return str(total)

    return app


@pytest.fixture(scope="module")
def streaming() -> Iterator[tuple[RunningServer, Upload]]:
    upload = Upload()
    with serve(make_app(upload), body_buffer_size=BUFFER) as server:
        yield server, upload


def send_until_blocked(client: RawClient, payload: memoryview, limit: int) -> int:
    """
    Send ``payload`` over and over until the socket stays unwritable for a second (or ``limit``
    bytes went out); the number of bytes sent, which may end inside a copy of ``payload``.
    """
    sent = 0
    timeout = client.sock.gettimeout()
    client.sock.setblocking(False)
    try:
        while sent < limit:
            _, writable, _ = select.select([], [client.sock], [], 1.0)
            if not writable:
                return sent
            try:
                sent += client.sock.send(payload[sent % len(payload) :])
            except BlockingIOError:
                continue
    finally:
        client.sock.settimeout(timeout)
    return sent


def test_one_gib_upload_in_bounded_memory(streaming: tuple[RunningServer, Upload]) -> None:
    server, upload = streaming
    upload.started.clear()
    payload = memoryview(b"\xab" * (1024 * 1024))
    with RawClient(server.port, timeout=30) as client:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1024 * 1024)
        client.send(request("POST", "/count", {"Content-Length": str(GiB)}))
        assert upload.started.wait(WAIT)
        # The handler is not reading yet: the server must stop reading, so the client blocks.
        stalled = send_until_blocked(client, payload, limit=256 * 1024 * 1024)
        assert stalled < 256 * 1024 * 1024, "the server kept reading a body nobody consumed"
        assert upload.stream.buffered <= BUFFER + ONE_READ
        server.loop.call_soon_threadsafe(upload.go.set)
        remaining = GiB - stalled
        while remaining:
            chunk = payload[: min(len(payload), remaining)]
            client.send(chunk)
            remaining -= len(chunk)
        response = client.read_response()
    result = json.loads(response.body)
    assert result["total"] == GiB
    assert result["largest"] <= BUFFER + ONE_READ


def test_chunked_upload_from_httpx(streaming: tuple[RunningServer, Upload]) -> None:
    server, _ = streaming
    size = 64 * 1024 * 1024

    def parts() -> Iterator[bytes]:
        block = b"p" * 65536
        for _ in range(size // len(block)):
            yield block

    response = httpx.post(server.url("/count-parts"), content=parts(), timeout=30)
    assert response.status_code == 200
    assert int(response.text) == size


def test_chunked_upload_stalled_handler_blocks_the_client(streaming: tuple[RunningServer, Upload]) -> None:
    server, upload = streaming
    upload.started.clear()
    block = b"c" * 65536
    framed = memoryview(b"%x\r\n%s\r\n" % (len(block), block))
    with RawClient(server.port, timeout=30) as client:
        client.send(request("POST", "/count", {"Transfer-Encoding": "chunked"}))
        assert upload.started.wait(WAIT)
        stalled = send_until_blocked(client, framed, limit=256 * 1024 * 1024)
        assert stalled < 256 * 1024 * 1024, "the server kept reading a body nobody consumed"
        assert upload.stream.buffered <= BUFFER + ONE_READ
        server.loop.call_soon_threadsafe(upload.go.set)
        blocks, partial = divmod(stalled, len(framed))
        if partial:
            client.send(framed[partial:])
            blocks += 1
        client.send(b"0\r\n\r\n")
        response = client.read_response()
    result = json.loads(response.body)
    assert result["total"] == blocks * len(block)
    assert result["largest"] <= BUFFER + ONE_READ
