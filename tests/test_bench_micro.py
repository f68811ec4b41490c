"""
The benchmark's sockets-free harness (``bench/micro_h2.py``, ``bench/micro_h1.py``) and its
bare-h2 ceiling (``bench/apps/bare_h2.py``): the harness reads the responses and credits the
server's flow-control window as a real client does, so it runs past 65,535 bytes of bodies, and
fails with a count instead of hanging when a server stops answering; the bare server survives
what h2load and other clients send at the end of a run (a GOAWAY in the same read as new
HEADERS, a stream reset in the read that opened it, a closed window) and serves over TLS.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import httpx
import pytest
from benchfiles import BENCH, load

BARE_H2 = BENCH / "apps" / "bare_h2.py"
BODY = b"Hello, world!\n"
TIMEOUT = 10.0
REQUEST = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "127.0.0.1")]
#: Responses of 14 bytes that fit the connection's initial window of 65,535 bytes.
FITTING = 65_535 // len(BODY)


micro_h2 = load("micro_h2", BENCH / "micro_h2.py")


class BareServer:
    """``bare_h2.py`` in a child process on a free port."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(BARE_H2), "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], TIMEOUT)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith("serving "):
            raise AssertionError(f"bare_h2.py did not start: {line!r} {self.stop()}")
        self.url = line.split()[1]
        self.port = int(self.url.rsplit(":", 1)[1].rstrip("/"))

    def stop(self) -> str:
        """Stop the server; what it wrote to stderr."""
        if self.process.poll() is None:
            self.process.terminate()
        _, errors = self.process.communicate(timeout=TIMEOUT)
        return errors


@pytest.fixture
def bare() -> Iterator[BareServer]:
    server = BareServer()
    yield server
    server.stop()


def connect(port: int, settings: dict[int, int] | None = None) -> tuple[socket.socket, h2.connection.H2Connection]:
    """A raw socket with h2 as the client, its preface (and ``settings``) sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    if settings:
        conn.update_settings(settings)
    sock.sendall(conn.data_to_send())
    return sock, conn


def read_until(
    sock: socket.socket, conn: h2.connection.H2Connection, done: Callable[[list[h2.events.Event]], bool]
) -> list[h2.events.Event]:
    """The events of the server's bytes until ``done`` says so (acknowledging as h2 does)."""
    events: list[h2.events.Event] = []
    while not done(events):
        data = sock.recv(65536)
        assert data, f"the server closed the connection; events so far: {events}"
        events += conn.receive_data(data)
        sock.sendall(conn.data_to_send())
    return events


def ended(stream_id: int) -> Callable[[list[h2.events.Event]], bool]:
    return lambda events: any(isinstance(e, h2.events.StreamEnded) and e.stream_id == stream_id for e in events)


def body_of(events: list[h2.events.Event], stream_id: int) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id)


def read_to_eof(sock: socket.socket) -> bytes:
    received = b""
    while data := sock.recv(65536):
        received += data
    return received


def assert_serves(port: int) -> None:
    """A new connection gets the fixed answer."""
    with httpx.Client(http1=False, http2=True, timeout=TIMEOUT) as client:
        response = client.get(f"http://127.0.0.1:{port}/")
    assert (response.http_version, response.status_code, response.content) == ("HTTP/2", 200, BODY)


# the harness


def test_micro_h2_runs_past_the_initial_window() -> None:
    requests = (FITTING // 10 + 5) * 10
    command = [sys.executable, str(BENCH / "micro_h2.py"), "--requests", str(requests), "--rounds", "2"]
    runs = {
        server: subprocess.Popen(command + variant, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for server, variant in (("Kyoukai", []), ("bare h2", ["--bare"]))
    }
    results = {server: (*process.communicate(timeout=120), process.returncode) for server, process in runs.items()}
    for server, (out, errors, returncode) in results.items():
        assert returncode == 0, errors
        assert f"us per request ({server}, HTTP/2, best of 2;" in out


def test_a_server_left_without_window_fails_the_run_with_a_count(monkeypatch: pytest.MonkeyPatch) -> None:
    # A client that never credits the window, as the harness once was: the server must stop at
    # 65,535 bytes of bodies, and the run must say so instead of spinning.
    monkeypatch.setattr(micro_h2, "INITIAL_WINDOW", 2**40)
    monkeypatch.setattr(micro_h2, "STALL_SECONDS", 0.3)
    requests = (FITTING // 10 + 1) * 10
    with pytest.raises(RuntimeError, match=f"the server stopped answering: {FITTING} of {requests} responses arrived"):
        asyncio.run(micro_h2.measure(requests, False))


def test_the_client_reader_acknowledges_and_credits() -> None:
    reader = micro_h2.ClientReader()
    head = micro_h2.FRAME_HEAD
    settings = head.pack(0, 6, micro_h2.SETTINGS, 0, 0) + bytes(6)
    ping = head.pack(0, 8, micro_h2.PING, 0, 0) + b"12345678"
    data = head.pack(0, 40_000, micro_h2.DATA, micro_h2.END_STREAM, 1) + bytes(40_000)
    # The DATA frame split over two reads, as a socket may deliver it.
    reader.read(settings + ping + data[:100])
    assert reader.responses == 0
    reader.read(data[100:])
    assert reader.responses == 1
    assert reader.take_replies() == (
        micro_h2.SETTINGS_ACK
        + head.pack(0, 8, micro_h2.PING, micro_h2.ACK, 0)
        + b"12345678"
        + head.pack(0, 4, micro_h2.WINDOW_UPDATE, 0, 0)
        + (40_000).to_bytes(4, "big")
    )
    assert reader.failure is None
    reader.read(head.pack(0, 4, micro_h2.RST_STREAM, 0, 3) + (2).to_bytes(4, "big"))
    assert reader.failure == "the server reset stream 3 (error code 2)"


# the bare h2 server


def test_bare_h2_answers_goaway_then_headers_with_its_goaway(bare: BareServer) -> None:
    sock, conn = connect(bare.port)
    with sock:
        conn.send_headers(1, REQUEST, end_stream=True)
        sock.sendall(conn.data_to_send())
        assert body_of(read_until(sock, conn, ended(1)), 1) == BODY
        conn.send_headers(3, REQUEST, end_stream=True)
        headers = conn.data_to_send()
        conn.close_connection()
        sock.sendall(conn.data_to_send() + headers)
        events = conn.receive_data(read_to_eof(sock))
    assert len(events) == 1 and isinstance(events[0], h2.events.ConnectionTerminated)
    # HEADERS after its own GOAWAY is a protocol error to h2; stream 3 was not processed.
    assert (events[0].error_code, events[0].last_stream_id) == (h2.errors.ErrorCodes.PROTOCOL_ERROR, 1)
    assert_serves(bare.port)
    errors = bare.stop()
    assert "Error" not in errors and "Traceback" not in errors


def test_bare_h2_closes_on_headers_then_goaway(bare: BareServer) -> None:
    # What h2load sends when a timed run (-D) ends: the next requests and its GOAWAY in one write.
    sock, conn = connect(bare.port)
    with sock:
        conn.send_headers(1, REQUEST, end_stream=True)
        conn.send_headers(3, REQUEST, end_stream=True)
        conn.close_connection()
        sock.sendall(conn.data_to_send())
        read_to_eof(sock)
    assert_serves(bare.port)
    errors = bare.stop()
    assert "Error" not in errors and "Traceback" not in errors


def test_bare_h2_skips_a_stream_reset_in_the_read_that_opened_it(bare: BareServer) -> None:
    sock, conn = connect(bare.port)
    with sock:
        conn.send_headers(1, REQUEST, end_stream=True)
        conn.reset_stream(1)
        conn.send_headers(3, REQUEST, end_stream=True)
        sock.sendall(conn.data_to_send())
        events = read_until(sock, conn, ended(3))
    assert body_of(events, 3) == BODY
    assert not [e for e in events if getattr(e, "stream_id", None) == 1]
    errors = bare.stop()
    assert "Error" not in errors and "Traceback" not in errors


def test_bare_h2_holds_a_body_until_the_window_opens(bare: BareServer) -> None:
    sock, conn = connect(bare.port, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    with sock:
        conn.send_headers(1, REQUEST, end_stream=True)
        sock.sendall(conn.data_to_send())
        head = read_until(sock, conn, lambda events: any(isinstance(e, h2.events.ResponseReceived) for e in events))
        assert body_of(head, 1) == b""
        conn.increment_flow_control_window(len(BODY), stream_id=1)
        sock.sendall(conn.data_to_send())
        assert body_of(read_until(sock, conn, ended(1)), 1) == BODY
    errors = bare.stop()
    assert "Error" not in errors and "Traceback" not in errors


def test_bare_h2_serves_tls_with_alpn_h2(tls_files: dict[str, str], client_ssl_context: ssl.SSLContext) -> None:
    server = BareServer("--certfile", tls_files["cert"], "--keyfile", tls_files["key"])
    try:
        assert server.url.startswith("https://")
        client_ssl_context.set_alpn_protocols(["h2"])
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as raw:
            with client_ssl_context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.selected_alpn_protocol() == "h2"
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
        with httpx.Client(http2=True, verify=client_ssl_context, timeout=TIMEOUT) as client:
            response = client.get(f"https://127.0.0.1:{server.port}/")
        assert (response.http_version, response.status_code, response.content) == ("HTTP/2", 200, BODY)
    finally:
        errors = server.stop()
    assert "Error" not in errors and "Traceback" not in errors


def test_bare_h2_wants_both_certificate_and_key(tls_files: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, str(BARE_H2), "0", "--certfile", tls_files["cert"]],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 2
    assert "--certfile and --keyfile go together" in result.stderr
