"""
A stop whose ``shutdown_timeout`` runs out aborts the connections left, and returns only once
their handlers have unwound: a never-ending streamed body's ``finally`` has run by then, so
nothing is left suspended for the loop's shutdown.
"""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from conftest import RunningServer
from h2client import H2Client
from werkzeug.wrappers import Response

from kyoukai import Kyoukai
from kyoukai.asphalt import KyoukaiComponent
from kyoukai.backends.http2 import H2KyoukaiComponent

TIMEOUT = 10.0


def make_app(started: threading.Event, ended: list[str]) -> Kyoukai:
    app = Kyoukai("endless")

    @app.route("/endless")
    async def endless(ctx):
        async def body():
            try:
                yield b"first\n"
                started.set()
                await asyncio.Event().wait()  # never set: only the abort ends this
            finally:
                # Cleanup that awaits, as releasing a pooled connection would.
                for _ in range(5):
                    await asyncio.sleep(0)
                ended.append("body closed")

        return Response(body())

    return app


@pytest.mark.parametrize("component_class", [KyoukaiComponent, H2KyoukaiComponent], ids=["http1.1", "http2"])
def test_stop_waits_for_aborted_handlers(component_class: type) -> None:
    started = threading.Event()
    ended: list[str] = []
    component = component_class(make_app(started, ended), ip="127.0.0.1", port=0, shutdown_timeout=0.2)
    server = RunningServer(component).start()
    try:
        if component_class is KyoukaiComponent:
            client = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
            client.sendall(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(4096).startswith(b"HTTP/1.1 200 ")
        else:
            client = H2Client(server.port)
            client.wait_ready()
            client.request("/endless")
        assert started.wait(TIMEOUT)
        context = server.context
        assert context is not None

        async def stop_and_look() -> list[str]:
            await context.close()
            return list(ended)  # read on the server's loop, the moment the stop returns

        assert server.call(stop_and_look(), timeout=60) == ["body closed"]
        server.context = None
    finally:
        server.stop()
        client.close()
