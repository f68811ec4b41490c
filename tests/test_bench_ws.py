"""
The WebSocket load client of the benchmark (``bench/ws_client.py``) against a real Kyoukai
server serving the benchmark app (``bench/apps/kyoukai_app.py``): every message sent comes back,
every connection ends with a Close handshake, and failures are reported, not hidden.
"""

from __future__ import annotations

import socket

import pytest
from benchfiles import BENCH, load
from conftest import serve

ws_client = load("bench_ws_client", BENCH / "ws_client.py")
bench_app = load("bench_kyoukai_app", BENCH / "apps" / "kyoukai_app.py").app


@pytest.mark.parametrize(("connections", "window"), [(1, 1), (4, 1), (4, 16)])
async def test_every_message_is_echoed(connections: int, window: int) -> None:
    messages = 50
    with serve(bench_app) as server:
        result = await ws_client.run_load(
            "127.0.0.1", server.port, "/ws", connections=connections, window=window, messages=messages
        )
    assert result.errors == []
    assert result.echoes == result.sent_total == result.received_total == connections * messages
    assert result.closed_cleanly == connections


async def test_a_timed_run_drains_and_closes() -> None:
    with serve(bench_app) as server:
        result = await ws_client.run_load(
            "127.0.0.1", server.port, "/ws", connections=3, window=8, warmup=0.05, duration=0.2
        )
    assert result.errors == []
    assert result.echoes > 0
    # Stopping sends no new message: the ones in flight come back before the Close.
    assert result.sent_total == result.received_total >= result.echoes
    assert result.closed_cleanly == 3


async def test_a_refused_handshake_is_an_error() -> None:
    with serve(bench_app) as server:
        result = await ws_client.run_load("127.0.0.1", server.port, "/nowhere", connections=2, messages=10)
    assert result.echoes == 0
    assert len(result.errors) == 1
    assert "not 101" in result.errors[0] and "(2 connections)" in result.errors[0]


async def test_no_server_is_an_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        # Bound but not listening: connections are refused.
        result = await ws_client.run_load("127.0.0.1", port, connections=1, messages=10)
    assert result.echoes == 0
    assert result.errors and result.errors[0].startswith(f"cannot connect to 127.0.0.1:{port}")
