"""
A graceful stop that begins just after a connection was accepted, before its first bytes are
read, answers what that connection sends (HTTP/1.1 with ``Connection: close``; an HTTP/2
preface on the shared port with the two-step GOAWAY) instead of closing the socket under the
client, which would reset it: an HTTP/2 client could not tell whether its requests were
processed (RFC 9113 section 8.7). A connection that sends nothing is closed once the grace is
over.

The stop of each connection is asked for from the component's ``connection_made`` signal, which
runs before asyncio starts reading the socket: the moment a stop racing an accept finds.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RunningServer
from h2client import H2Client
from hyperframe.frame import GoAwayFrame

from kyoukai import Kyoukai
from kyoukai.asphalt import KyoukaiComponent
from kyoukai.backends.http2 import H2KyoukaiComponent

TIMEOUT = 10.0


@contextlib.contextmanager
def serving(kind: str) -> Iterator[RunningServer]:
    app = Kyoukai("fresh")

    @app.route("/")
    async def index(ctx):
        return "answered"

    if kind == "shared port":
        component: Any = KyoukaiComponent(app, ip="127.0.0.1", port=0, http2=True)
    else:
        component = H2KyoukaiComponent(app, ip="127.0.0.1", port=0)
    running = RunningServer(component).start()

    def stop_at_once(event: Any) -> None:
        event.protocol.shutdown()

    component.connection_made.connect(stop_at_once)
    try:
        yield running
    finally:
        running.stop()


KINDS = ["shared port", "h2-only port"]


def read_all(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_an_http11_request_is_answered_with_connection_close() -> None:
    with (
        serving("shared port") as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = read_all(sock)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nconnection: close" in head.lower()
    assert body == b"answered"


@pytest.mark.parametrize("kind", KINDS)
def test_an_http2_preface_gets_its_requests_answered_and_a_goaway(kind: str) -> None:
    with serving(kind) as server, H2Client(server.port) as client:
        first, second = client.request("/"), client.request("/")
        for stream_id in (first, second):
            stream = client.response(stream_id)
            assert stream.status == 200
            assert bytes(stream.data) == b"answered"
        client.wait_closed()
        goaways = [frame for frame in client.frames if isinstance(frame, GoAwayFrame)]
        assert goaways and goaways[-1].error_code == 0 and goaways[-1].last_stream_id == second


def test_a_connection_that_sends_nothing_is_closed_after_the_grace() -> None:
    with (
        serving("shared port") as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock,
    ):
        assert read_all(sock) == b""  # closed, without a 408 or anything else
