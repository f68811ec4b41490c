"""
The known HTTP/2 attacks, each run against a live server on 127.0.0.1 (SPEC section 6, issue 4
"Hardening"). Every test asserts a bound measured on the server (handler tasks started and
running at once, frames scanned, bytes handed to h2, bytes buffered, streams reset, the GOAWAY
code) and that a second, well-behaved client is served during and after the attack.

The limits are small (``max_control_frames=200``, ``max_stream_resets=50``, timeouts of half a
second) and the refill rates low, so that a budget is spent within the attack and its bound does
not depend on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
import struct
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from conftest import RunningServer, serve
from h2.errors import ErrorCodes
from h2client import (
    PREFACE,
    Gate,
    H2Client,
    http11_exchange,
    on_loop,
    read_http11_responses,
    upgrade_request,
    wait_on_loop,
)
from hyperframe.frame import SettingsFrame

from kyoukai import Kyoukai
from kyoukai.backends.http2 import H2KyoukaiComponent, H2KyoukaiProtocol

pytestmark = pytest.mark.timeout(60)

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
UNKNOWN = 0xFA
END_STREAM, END_HEADERS = 0x1, 0x4

CALM = ErrorCodes.ENHANCE_YOUR_CALM
#: Budget refills are this slow, so a few tokens at most come back during a test.
SLOW_RATE = 1.0
#: Tokens a budget may have regained while a test ran, plus the frame that spent the last one.
SLACK = 10
#: Deadline of any wait for the server to react (a safety net, not a timing assertion).
DEADLINE = 10.0

FLOOD_CFG = {"max_control_frames": 200, "control_frame_rate": SLOW_RATE}
RESET_CFG = {"max_stream_resets": 50, "stream_reset_rate": SLOW_RATE}


def raw_frame(frame_type: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([frame_type, flags]) + struct.pack(">I", stream_id) + payload


def request_block(path: str = "/", method: str = "GET", extra: list[tuple[str, str]] | None = None):
    return [(":method", method), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", path), *(extra or [])]


TCP_ESTABLISHED = 1


def tcp_state(sock: socket.socket) -> int:
    """The socket's TCP state from Linux ``TCP_INFO`` (1: established, 7: closed by an RST)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def header_list_size(headers: list[tuple[str, str]]) -> int:
    """The size RFC 9113 section 6.5.2 (and SETTINGS_MAX_HEADER_LIST_SIZE) counts."""
    return sum(len(name.encode()) + len(value.encode()) + 32 for name, value in headers)


# the server side: the app, and a component that lets a test look at its connections


@dataclass
class Counters:
    """What the handlers saw, updated on the server loop."""

    started: int = 0
    running: int = 0
    max_running: int = 0
    cancelled: int = 0
    completed: int = 0
    #: Bytes a streaming response produced, and whether its generator was closed.
    produced: int = 0
    body_closed: int = 0

    def enter(self) -> None:
        self.started += 1
        self.running += 1
        self.max_running = max(self.max_running, self.running)


def make_app(counters: Counters, gate: Gate | None = None) -> Kyoukai:
    app = Kyoukai("attacks")

    @app.route("/")
    async def index(ctx):
        return "ok"

    @app.route("/hang", methods=["GET", "POST"])
    async def hang(ctx):
        counters.enter()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            counters.cancelled += 1
            raise
        finally:
            counters.running -= 1

    @app.route("/gated/<int:n>")
    async def gated(ctx, n: int):
        counters.enter()
        try:
            await gate.wait()
            counters.completed += 1
            return f"gated {n}"
        finally:
            counters.running -= 1

    @app.route("/sink", methods=["POST"])
    async def sink(ctx):
        return str(len(ctx.request.get_data()))

    @app.route("/stream")
    async def stream(ctx):
        counters.enter()
        counters.running -= 1

        async def body():
            chunk = b"x" * 65536
            try:
                for _ in range(4096):  # 256 MiB at most
                    counters.produced += len(chunk)
                    yield chunk
            finally:
                counters.body_closed += 1

        return body()

    return app


class AttackedProtocol(H2KyoukaiProtocol):
    """The real protocol, plus what a test measures: bytes handed to h2, the peak write buffer."""

    def __init__(self, component: Any, parent_context: Any) -> None:
        super().__init__(component, parent_context)
        #: Bytes given to ``H2Connection.receive_data`` (what h2 buffered or parsed).
        self.fed_to_h2 = 0
        #: The largest write buffer (transport plus not yet written) seen after a read.
        self.peak_write_buffer = 0

    def _start(self, transport: Any, upgrade: Any = None) -> None:
        super()._start(transport, upgrade)
        h2_connection = self.core.h2
        receive = h2_connection.receive_data

        def counting_receive(data: bytes) -> Any:
            self.fed_to_h2 += len(data)
            return receive(data)

        h2_connection.receive_data = counting_receive

    def connection_made(self, transport: Any) -> None:
        size = self.component.socket_buffer
        if size:
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        super().connection_made(transport)
        # Record the transport's buffer after every write (responses are written from tasks).
        write, writelines = transport.write, transport.writelines

        def recording_write(data: Any) -> None:
            write(data)
            self._record_buffer()

        def recording_writelines(data: Any) -> None:
            writelines(data)
            self._record_buffer()

        transport.write, transport.writelines = recording_write, recording_writelines

    def _record_buffer(self) -> None:
        queued = self.transport.get_write_buffer_size() + sum(map(len, self.core._control))
        self.peak_write_buffer = max(self.peak_write_buffer, queued)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._record_buffer()


class AttackedComponent(H2KyoukaiComponent):
    """An ``H2KyoukaiComponent`` (cleartext) that keeps its protocol objects for the test."""

    def __init__(self, app: Kyoukai, *, socket_buffer: int | None = None, **cfg: Any) -> None:
        super().__init__(app, **cfg)
        #: SO_SNDBUF and SO_RCVBUF of accepted sockets (small: backpressure shows at once).
        self.socket_buffer = socket_buffer
        self.protocols: list[AttackedProtocol] = []

    def get_protocol(self, ctx: Any) -> AttackedProtocol:
        protocol = AttackedProtocol(self, ctx)
        self.protocols.append(protocol)
        return protocol


def protocol_of(server: RunningServer, client: H2Client | socket.socket) -> AttackedProtocol:
    """The server's protocol object of ``client``'s connection."""
    sock = client.sock if isinstance(client, H2Client) else client
    port = sock.getsockname()[1]
    wait_on_loop(server, lambda: any(p.peer and p.peer[1] == port for p in server.component.protocols))
    return next(p for p in server.component.protocols if p.peer and p.peer[1] == port)


def connection_gone(server: RunningServer, protocol: Any) -> None:
    """Wait until the server has forgotten ``protocol``'s connection (fails past the deadline)."""
    wait_on_loop(server, lambda: protocol not in server.component.connections, timeout=DEADLINE)


# the well-behaved second client


class Bystander:
    """
    A well-behaved client of the server under attack: :meth:`check` is served on a fresh HTTP/2
    connection; on leaving :func:`bystander` it is served once more, by httpx.
    """

    def __init__(self, server: RunningServer, mode: str, ssl_context: ssl.SSLContext | None) -> None:
        self.server = server
        self.mode = mode
        self.ssl_context = ssl_context
        self.served = 0

    @property
    def scheme(self) -> str:
        return "http" if self.ssl_context is None else "https"

    def check(self) -> None:
        if self.mode == "h2":
            with H2Client(self.server.port, ssl_context=self.ssl_context, timeout=DEADLINE) as client:
                stream = client.response(client.request("/", scheme=self.scheme))
            assert stream.status == 200 and bytes(stream.data) == b"ok", stream
        else:
            self.check_httpx()
        self.served += 1

    def check_httpx(self) -> None:
        options: dict[str, Any] = {"timeout": DEADLINE}
        if self.mode == "h2":
            options.update(http1=False, http2=True)
        if self.ssl_context is not None:
            options["verify"] = self.ssl_context
        with httpx.Client(**options) as client:
            response = client.get(self.server.url("/", self.scheme))
        assert response.status_code == 200 and response.text == "ok", response
        if self.mode == "h2":
            assert response.http_version == "HTTP/2"


@contextlib.contextmanager
def bystander(
    server: RunningServer, mode: str = "h2", ssl_context: ssl.SSLContext | None = None
) -> Iterator[Bystander]:
    other = Bystander(server, mode, ssl_context)
    yield other
    assert other.served > 0, "the test never checked the second client during the attack"
    other.check_httpx()


# the attacking client


def poll(client: H2Client) -> bool:
    """Read what the server sent so far, without waiting; whether it reacted (GOAWAY or EOF)."""
    with contextlib.suppress(TimeoutError):
        while client.read_frame(time.monotonic() + 0.001) is not None:
            pass
    return client.goaway is not None or client.eof


def blast(client: H2Client, frames: Iterator[bytes], batch: int = 50, limit: int = 20000) -> int:
    """
    Send ``frames`` in batches until the server reacts, the socket fails or ``limit`` frames
    went out; the number of frames sent.
    """
    sent = 0
    out: list[bytes] = []
    for frame in frames:
        out.append(frame)
        if len(out) < batch and sent + len(out) < limit:
            continue
        try:
            client.sock.settimeout(DEADLINE)  # (poll() left a 1 ms timeout on the socket)
            client.sock.sendall(b"".join(out))
        except OSError:
            break
        sent += len(out)
        out = []
        if poll(client) or sent >= limit:
            break
    return sent


def goaway_code(client: H2Client) -> int | None:
    """Read until the server closes the connection; its GOAWAY error code (``None``: none)."""
    client.wait_closed(timeout=DEADLINE)
    return None if client.goaway is None else client.goaway.error_code


def static_block(client: H2Client, headers: list[tuple[str, str]]) -> bytes:
    """
    A header block that decodes the same each time it is sent: ``headers`` sent once as stream
    ``client.next_stream_id`` (so their entries are in the server's table), encoded again.
    """
    stream = client.open_stream()
    client.send_raw(raw_frame(HEADERS, END_HEADERS | END_STREAM, stream.stream_id, client.encoder.encode(headers)))
    return client.encoder.encode(headers)


# the tests


class TestRapidReset:
    CFG = {"max_concurrent_streams": 10, **RESET_CFG}

    def test_client_resets(self) -> None:
        """
        HEADERS then RST_STREAM, thousands of times: handlers of reset streams are cancelled,
        never more than max_concurrent_streams run at once, and the reset budget ends the
        connection with GOAWAY ENHANCE_YOUR_CALM after about max_stream_resets resets.
        """
        counters = Counters()
        with serve(make_app(counters), AttackedComponent, **self.CFG) as server, bystander(server) as other:
            with H2Client(server.port) as attacker:
                attacker.wait_ready()
                protocol = protocol_of(server, attacker)
                # Rounds of max_concurrent_streams requests whose handlers run, then are reset:
                # each is cancelled, and 40 resets (below the budget) leave the connection open.
                for _ in range(4):
                    sids = [attacker.request("/hang") for _ in range(10)]
                    wait_on_loop(server, lambda: counters.running == 10)
                    for sid in sids:
                        attacker.reset(sid)
                    wait_on_loop(server, lambda: counters.running == 0)
                assert counters.cancelled == counters.started == 40
                other.check()
                assert not poll(attacker), "the server reacted below its budget"

                block = static_block(attacker, request_block("/hang"))

                def pairs() -> Iterator[bytes]:
                    for sid in range(attacker.next_stream_id, 2**31, 2):
                        yield raw_frame(HEADERS, END_HEADERS | END_STREAM, sid, block)
                        yield raw_frame(RST_STREAM, 0, sid, struct.pack(">I", ErrorCodes.CANCEL))

                sent = blast(attacker, pairs(), batch=200, limit=20000) // 2
                code = goaway_code(attacker)
            connection_gone(server, protocol)
            wait_on_loop(server, lambda: counters.running == 0)
            metrics = server.component.metrics
            resets = protocol.core.guard.frame_counts.get(RST_STREAM, 0)
        bound = RESET_CFG["max_stream_resets"] + SLACK
        print(f"rapid reset: {sent} pairs sent, {resets} RST_STREAM read, {metrics.snapshot()}, {counters}")
        assert code == CALM, attacker.describe_frames()
        assert RESET_CFG["max_stream_resets"] - SLACK <= resets <= bound, f"{resets} RST_STREAM frames scanned"
        assert sent >= resets - 10
        assert metrics.streams_reset <= bound
        assert metrics.streams_opened <= bound + 1
        assert counters.started <= bound, counters
        assert counters.max_running <= self.CFG["max_concurrent_streams"], counters
        assert counters.cancelled == counters.started, counters
        assert counters.completed == 0

    @pytest.mark.parametrize("provoke", ["refused", "malformed"])
    def test_server_resets(self, provoke: str) -> None:
        """
        The client makes the server reset streams (streams over max_concurrent_streams refused
        with REFUSED_STREAM, or malformed requests reset with PROTOCOL_ERROR), again and again:
        the same reset budget ends the connection with GOAWAY ENHANCE_YOUR_CALM.
        """
        counters = Counters()
        cfg = {**self.CFG, "max_concurrent_streams": 2}
        with serve(make_app(counters), AttackedComponent, **cfg) as server, bystander(server) as other:
            with H2Client(server.port) as attacker:
                attacker.wait_ready()
                protocol = protocol_of(server, attacker)
                for _ in range(2):
                    attacker.request("/hang")
                wait_on_loop(server, lambda: counters.running == 2)
                extra = [("bad name", "x")] if provoke == "malformed" else []
                block = static_block(attacker, request_block("/hang", extra=extra))
                attacker.read_until(lambda: any(s.reset_code is not None for s in attacker.streams.values()))
                other.check()
                assert attacker.goaway is None

                def requests() -> Iterator[bytes]:
                    for sid in range(attacker.next_stream_id, 2**31, 2):
                        yield raw_frame(HEADERS, END_HEADERS | END_STREAM, sid, block)

                sent = blast(attacker, requests(), batch=20, limit=5000)
                code = goaway_code(attacker)
            connection_gone(server, protocol)
            wait_on_loop(server, lambda: counters.running == 0)
            metrics = server.component.metrics
        expected = ErrorCodes.REFUSED_STREAM if provoke == "refused" else ErrorCodes.PROTOCOL_ERROR
        resets = [s.reset_code for s in attacker.streams.values() if s.reset_code is not None]
        bound = RESET_CFG["max_stream_resets"] + SLACK
        print(f"{provoke}: {sent} requests sent, {len(resets)} reset, {metrics.snapshot()}, {counters}")
        assert code == CALM, attacker.describe_frames()
        assert set(resets) == {expected}
        assert RESET_CFG["max_stream_resets"] - SLACK <= len(resets) <= bound, f"{len(resets)} streams reset"
        assert sent >= len(resets) - 1
        assert metrics.streams_opened <= bound + 2
        if provoke == "refused":
            assert metrics.streams_refused <= bound
        assert counters.started == 2 and counters.max_running == 2, counters
        assert counters.cancelled == 2, "the running handlers were not cancelled with the connection"

    @pytest.mark.parametrize("provoke", ["window-overflow", "data-after-end-stream"])
    def test_resets_h2_makes_itself(self, provoke: str) -> None:
        """
        Streams that h2 resets on its own (a WINDOW_UPDATE pushing the stream window past
        2**31-1: FLOW_CONTROL_ERROR; DATA after END_STREAM: STREAM_CLOSED) spend the same
        reset budget: GOAWAY ENHANCE_YOUR_CALM, and only about max_stream_resets handlers ran.
        """
        counters = Counters()
        cfg = {**self.CFG, "max_concurrent_streams": 1000}
        with serve(make_app(counters), AttackedComponent, **cfg) as server, bystander(server) as other:
            with H2Client(server.port) as attacker:
                attacker.wait_ready()
                protocol = protocol_of(server, attacker)
                block = static_block(attacker, request_block("/hang", "POST"))
                other.check()

                def provocations() -> Iterator[bytes]:
                    for sid in range(attacker.next_stream_id, 2**31, 2):
                        if provoke == "window-overflow":
                            yield raw_frame(HEADERS, END_HEADERS, sid, block)
                            yield raw_frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", 2**31 - 1))
                        else:
                            yield raw_frame(HEADERS, END_HEADERS | END_STREAM, sid, block)
                            yield raw_frame(DATA, 0, sid, b"late")

                sent = blast(attacker, provocations(), batch=20, limit=20000) // 2
                code = goaway_code(attacker)
            connection_gone(server, protocol)
            wait_on_loop(server, lambda: counters.running == 0)
        expected = ErrorCodes.FLOW_CONTROL_ERROR if provoke == "window-overflow" else ErrorCodes.STREAM_CLOSED
        resets = [s.reset_code for s in attacker.streams.values() if s.reset_code is not None]
        bound = RESET_CFG["max_stream_resets"] + SLACK
        print(f"{provoke}: {sent} streams provoked, {len(resets)} reset, {counters}")
        assert code == CALM, attacker.describe_frames()
        assert set(resets) == {expected}
        assert RESET_CFG["max_stream_resets"] - SLACK <= len(resets) <= bound, f"{len(resets)} streams reset"
        assert counters.started <= bound + 1, counters
        assert counters.cancelled == counters.started, counters


class TestHeaderBlocks:
    MAX_HEADER_SIZE = 4096

    @pytest.mark.parametrize(
        "fragment",
        [1024, 1, 0],
        ids=["1KiB-continuations", "1-byte-continuations", "empty-continuations"],
    )
    def test_continuation_flood(self, fragment: int) -> None:
        """
        HEADERS without END_HEADERS, then CONTINUATION after CONTINUATION: refused (GOAWAY
        ENHANCE_YOUR_CALM, or PROTOCOL_ERROR from h2's limit of 64 CONTINUATIONs) before h2
        was handed more than about twice max_header_size.
        """
        counters = Counters()
        cfg = {"max_header_size": self.MAX_HEADER_SIZE, **FLOOD_CFG}
        with serve(make_app(counters), AttackedComponent, **cfg) as server, bystander(server) as other:
            with H2Client(server.port) as attacker:
                attacker.wait_ready()
                protocol = protocol_of(server, attacker)
                block = attacker.encoder.encode(request_block("/hang"))
                attacker.send_raw(raw_frame(HEADERS, END_STREAM, 1, block))
                attacker.send_raw(raw_frame(CONTINUATION, 0, 1, b"\x00" * fragment))
                other.check()

                def continuations() -> Iterator[bytes]:
                    while True:
                        yield raw_frame(CONTINUATION, 0, 1, b"\x00" * fragment)

                sent = blast(attacker, continuations(), batch=4, limit=100000)
                code = goaway_code(attacker)
            connection_gone(server, protocol)
            fed = protocol.fed_to_h2
        assert code in (CALM, ErrorCodes.PROTOCOL_ERROR, ErrorCodes.COMPRESSION_ERROR), attacker.describe_frames()
        if fragment > 64:
            assert code == CALM, "the header budget, not h2's limit of 64 CONTINUATIONs, should end it"
        assert sent > 0
        # The handshake, the block's first frames and at most 65 CONTINUATION headers besides.
        bound = 2 * self.MAX_HEADER_SIZE + 200 + 65 * 9 + fragment
        print(f"CONTINUATION flood ({fragment} B): {sent} sent, GOAWAY {code}, {fed} bytes handed to h2")
        assert fed <= bound, f"h2 was handed {fed} bytes (bound {bound})"
        assert counters.started == 0

    def test_oversized_headers_frame(self) -> None:
        """One HEADERS frame over twice max_header_size: refused before h2 sees it."""
        counters = Counters()
        with serve(make_app(counters), AttackedComponent, max_header_size=self.MAX_HEADER_SIZE) as server:
            with bystander(server) as other, H2Client(server.port) as attacker:
                attacker.wait_ready()
                protocol = protocol_of(server, attacker)
                other.check()
                attacker.send_raw(raw_frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\x00" * 12000))
                code = goaway_code(attacker)
            connection_gone(server, protocol)
        assert code == CALM
        assert protocol.fed_to_h2 < 200, "the oversized block reached h2"

    def test_hpack_bomb(self) -> None:
        """
        A 4 KB header put in the dynamic table, then referenced by one byte each, thousands of
        times (megabytes once decoded): refused by the decoded header-list limit.
        """
        counters = Counters()
        with serve(make_app(counters), AttackedComponent, max_header_size=16384) as server:
            with bystander(server) as other, H2Client(server.port) as attacker:
                attacker.wait_ready()
                protocol = protocol_of(server, attacker)
                big = ("x-bomb", "a" * 4000)
                head = attacker.encoder.encode(request_block("/hang"))
                first = attacker.encoder.encode([big])  # a literal added to the dynamic table
                reference = attacker.encoder.encode([big])  # one byte: that table entry
                assert len(reference) == 1
                block = head + first + reference * 5000
                assert len(block) < 2 * 16384, "the compressed block passes the compressed-size check"
                frames = [block[i : i + 4096] for i in range(0, len(block), 4096)]
                out = raw_frame(HEADERS, END_STREAM | (END_HEADERS if len(frames) == 1 else 0), 1, frames[0])
                for n, part in enumerate(frames[1:], 2):
                    out += raw_frame(CONTINUATION, END_HEADERS if n == len(frames) else 0, 1, part)
                other.check()
                attacker.send_raw(out)
                attacker.read_until(lambda: attacker.goaway is not None or 1 in attacker.streams)
                if attacker.goaway is None:
                    assert attacker.response(1).status == 431
                else:
                    assert goaway_code(attacker) == CALM
            connection_gone(server, protocol)
        assert counters.started == 0

    @pytest.mark.parametrize("limit", [12000, 65536])
    def test_advertised_header_list_size_is_enforced(self, limit: int) -> None:
        """
        SETTINGS_MAX_HEADER_LIST_SIZE is the limit enforced: a header list of exactly that size
        (split over CONTINUATIONs) is served; one byte more is refused.
        """
        counters = Counters()
        with serve(make_app(counters), AttackedComponent, max_header_size=limit) as server, bystander(server) as other:
            results = {}
            for excess in (0, 1):
                with H2Client(server.port) as client:
                    client.wait_ready()
                    advertised = client.remote_settings[SettingsFrame.MAX_HEADER_LIST_SIZE]
                    base = request_block("/")
                    pad = advertised - header_list_size(base) - len("x-pad") - 32 + excess
                    headers = [*base, ("x-pad", "p" * pad)]
                    assert header_list_size(headers) == advertised + excess
                    block = client.encoder.encode(headers, huffman=False)
                    parts = [block[i : i + 4096] for i in range(0, len(block), 4096)]
                    out = raw_frame(HEADERS, END_STREAM, 1, parts[0])
                    for n, part in enumerate(parts[1:], 2):
                        out += raw_frame(CONTINUATION, END_HEADERS if n == len(parts) else 0, 1, part)
                    client.open_stream(1)
                    client.send_raw(out)
                    client.read_until(lambda c=client: c.goaway is not None or c.streams[1].done)
                    if client.goaway is not None:
                        results[excess] = ("GOAWAY", goaway_code(client))
                    else:
                        results[excess] = ("status", client.streams[1].status)
                other.check()
        assert advertised == limit
        assert results[0] == ("status", 200), results
        assert results[1] in (("GOAWAY", CALM), ("status", 431)), results

    @pytest.mark.parametrize("count", [60, 5000])
    def test_many_tiny_headers(self, count: int) -> None:
        """
        Many one-byte headers: past max_header_count the stream gets 431 and the connection
        serves on; so many that the decoded list is over max_header_size: refused as well.
        """
        counters = Counters()
        cfg = {"max_header_count": 20, "max_header_size": 65536}
        with serve(make_app(counters), AttackedComponent, **cfg) as server, bystander(server) as other:
            with H2Client(server.port) as attacker:
                attacker.wait_ready()
                headers = request_block("/hang", extra=[("a", "b")] * count)
                block = attacker.encoder.encode(headers)
                assert len(block) < 16384
                attacker.open_stream(1)
                attacker.send_raw(raw_frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
                other.check()
                attacker.read_until(lambda: attacker.goaway is not None or attacker.streams[1].done)
                if header_list_size(headers) <= 65536:
                    stream = attacker.streams[1]
                    assert stream.status == 431 and b"max_header_count=20" in stream.data
                    assert attacker.response(attacker.request("/")).status == 200
                    assert attacker.goaway is None
                elif attacker.goaway is not None:
                    assert goaway_code(attacker) == CALM
                else:
                    assert attacker.streams[1].status == 431
        assert counters.started == 0

    def test_max_header_count_counts_the_same_fields_as_http11(self) -> None:
        counters = Counters()
        with serve(make_app(counters), AttackedComponent, max_header_count=20) as server:
            with H2Client(server.port) as client:
                stream = client.response(client.request("/", headers=[(f"x-{n}", "v") for n in range(20)]))
        assert stream.status == 200


#: name: (frame type, frame number n -> frame, what stream 1 is when the flood starts)
FLOODS = {
    "SETTINGS": (SETTINGS, lambda n: raw_frame(SETTINGS, 0, 0), None),
    "PING": (PING, lambda n: raw_frame(PING, 0, 0, struct.pack(">Q", n)), None),
    "PRIORITY": (PRIORITY, lambda n: raw_frame(PRIORITY, 0, 3 + 2 * (n % 1000), struct.pack(">IB", 0, 15)), None),
    "WINDOW_UPDATE": (WINDOW_UPDATE, lambda n: raw_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1)), None),
    "empty-DATA": (DATA, lambda n: raw_frame(DATA, 0, 1), "open"),
    "unknown": (UNKNOWN, lambda n: raw_frame(UNKNOWN, 0, 0, b"12345678"), None),
    "padded-empty-DATA": (DATA, lambda n: raw_frame(DATA, 0x8, 1, b"\x00"), "open"),
    "big-WINDOW_UPDATE-on-closed-stream": (
        WINDOW_UPDATE,
        lambda n: raw_frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1 << 20)),
        "closed",
    ),
}
FLOOD_PARAMS = list(FLOODS)


def settle(client: H2Client) -> int | None:
    """
    After an attack: the server's GOAWAY code once it closed the connection, or ``None`` if it
    still answers a PING (it processed the whole attack and serves the attacker on).
    """
    if client.goaway is None and not client.eof:
        with contextlib.suppress(OSError):
            client.send_raw(raw_frame(PING, 0, 0, b"settled!"))

        def answered() -> bool:
            last = client.frames[-1] if client.frames else None
            acked = last is not None and last.type == PING and "ACK" in last.flags and last.opaque_data == b"settled!"
            return acked or client.goaway is not None or client.eof

        client.read_until(answered, timeout=DEADLINE)
    if client.goaway is None and not client.eof:
        return None
    return goaway_code(client)


def open_stream_1(client: H2Client, state: str | None) -> None:
    """Stream 1: open (a POST whose body never ends), closed (answered), or reset by the client."""
    if state == "open":
        client.request("/sink", "POST", end_stream=False)
    elif state == "closed":
        client.response(client.request("/"))
    elif state == "reset":
        client.reset(client.request("/hang"))


class TestControlFrameFloods:
    @pytest.mark.parametrize("kind", FLOOD_PARAMS)
    def test_flood(self, kind: str) -> None:
        """Each flood ends with GOAWAY ENHANCE_YOUR_CALM after about max_control_frames frames."""
        counters = Counters()
        frame_type, make, stream_1 = FLOODS[kind]
        with serve(make_app(counters), AttackedComponent, **FLOOD_CFG) as server, bystander(server) as other:
            with H2Client(server.port) as attacker:
                attacker.wait_ready()
                protocol = protocol_of(server, attacker)
                open_stream_1(attacker, stream_1)
                first = b"".join(make(n) for n in range(100))
                attacker.send_raw(first)
                other.check()
                assert not poll(attacker), "the server reacted below its budget"
                sent = 100 + blast(attacker, (make(n) for n in range(100, 10**9)), batch=20, limit=5000)
                code = settle(attacker)
            connection_gone(server, protocol)
            scanned = protocol.core.guard.frame_counts.get(frame_type, 0)
        bound = FLOOD_CFG["max_control_frames"] + SLACK
        print(f"{kind} flood: {sent} sent, {scanned} read, GOAWAY {code}")
        assert code == CALM, f"{sent} frames sent, {scanned} read, and the server serves on"
        # Not before the budget was spent (a busy client is not cut off early), and not after.
        assert FLOOD_CFG["max_control_frames"] - SLACK <= scanned <= bound, f"{scanned} {kind} frames read"
        assert sent > 0
        assert counters.started == 0

    def test_ping_flood_from_a_client_that_never_reads(self) -> None:
        """
        With the control budget out of the way, a client that sends PINGs and never reads the
        acks: the server stops reading once its write buffer is over the high-water mark, so it
        reads and buffers a bounded amount however much the client tries to send.
        """
        counters = Counters()
        cfg = {"max_control_frames": 10**9, "control_frame_rate": 10**9}
        attempted = 32 * 1024 * 1024
        with serve(make_app(counters), AttackedComponent, socket_buffer=32768, **cfg) as server:
            with bystander(server) as other:
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
                sock.settimeout(DEADLINE)
                sock.connect(("127.0.0.1", server.port))
                with H2Client(server.port, sock=sock) as attacker:
                    protocol = protocol_of(server, attacker)
                    batch = b"".join(raw_frame(PING, 0, 0, struct.pack(">Q", n)) for n in range(4096))
                    tracemalloc.start()
                    try:
                        baseline = tracemalloc.get_traced_memory()[0]
                        sent = 0
                        attacker.sock.settimeout(1.0)
                        with contextlib.suppress(TimeoutError):
                            while sent < attempted:
                                attacker.sock.sendall(batch)
                                sent += len(batch)
                        # The client is stuck: the server has stopped reading. Others are served.
                        other.check()
                        peak = tracemalloc.get_traced_memory()[1] - baseline
                    finally:
                        tracemalloc.stop()
                    bytes_in = on_loop(server, lambda: server.component.metrics.bytes_in)
                    reading = on_loop(server, lambda: protocol.transport.is_reading())
        print(
            f"PING flood, never reading: {sent} B sent of {attempted}, {bytes_in} B read by the server, "
            f"write buffer peak {protocol.peak_write_buffer} B, tracemalloc peak +{peak} B"
        )
        assert sent < attempted, "the server read everything the client sent"
        assert not reading
        assert bytes_in < 4 * 1024 * 1024, bytes_in
        assert protocol.peak_write_buffer < 1024 * 1024, protocol.peak_write_buffer
        assert peak < 8 * 1024 * 1024, f"memory grew by {peak} bytes"

    def test_client_that_never_reads_is_dropped(self) -> None:
        """The same client, idle afterwards: dropped after keep_alive_timeout plus send_timeout."""
        counters = Counters()
        cfg = {
            "max_control_frames": 10**9,
            "control_frame_rate": 10**9,
            "keep_alive_timeout": 0.3,
            "send_timeout": 0.3,
        }
        with serve(make_app(counters), AttackedComponent, socket_buffer=32768, **cfg) as server:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
            sock.settimeout(DEADLINE)
            sock.connect(("127.0.0.1", server.port))
            with H2Client(server.port, sock=sock) as attacker:
                protocol = protocol_of(server, attacker)
                batch = b"".join(raw_frame(PING, 0, 0, struct.pack(">Q", n)) for n in range(4096))
                attacker.sock.settimeout(1.0)
                # The server drops the reader with a TCP reset, which the sender may see.
                with contextlib.suppress(TimeoutError, ConnectionResetError, BrokenPipeError):
                    for _ in range(1000):
                        attacker.sock.sendall(batch)
                wait_on_loop(server, lambda: protocol not in server.component.connections, timeout=3)


class TestFramesOnClosedStreams:
    """
    Frames on a stream that is gone cost the server a frame each, and h2 answers DATA and
    HEADERS on such a stream with RST_STREAM STREAM_CLOSED by itself: these resets must spend the
    reset budget like the server's own, or one connection gets a reset for every 10 bytes it sends.
    """

    @pytest.mark.parametrize(
        "stream_1, frame",
        [
            ("reset", raw_frame(DATA, 0, 1, b"x")),
            ("closed", raw_frame(DATA, 0, 1, b"x")),
            ("reset", raw_frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\x82")),
        ],
        ids=["DATA-on-reset-stream", "DATA-on-closed-stream", "HEADERS-on-reset-stream"],
    )
    def test_frames_on_a_gone_stream_are_bounded(self, stream_1: str, frame: bytes) -> None:
        counters = Counters()
        with serve(make_app(counters), AttackedComponent, **FLOOD_CFG, **RESET_CFG) as server:
            with bystander(server) as other, H2Client(server.port) as attacker:
                attacker.wait_ready()
                protocol = protocol_of(server, attacker)
                open_stream_1(attacker, stream_1)
                other.check()
                sent = blast(attacker, iter(lambda: frame, None), batch=50, limit=5000)
                code = settle(attacker)
                resets = sum(1 for f in attacker.frames if f.type == RST_STREAM)
            if code is not None:
                connection_gone(server, protocol)
        print(f"frames on a {stream_1} stream: {sent} sent, {resets} RST_STREAM back, GOAWAY {code}")
        bound = max(RESET_CFG["max_stream_resets"], FLOOD_CFG["max_control_frames"]) + SLACK
        assert code == CALM, f"{sent} frames sent, {resets} RST_STREAM back, and the server serves on"
        assert resets <= bound


class TestSlowReaders:
    def test_zero_window(self) -> None:
        """
        SETTINGS_INITIAL_WINDOW_SIZE=0 and no WINDOW_UPDATE ever: the stream is reset (CANCEL)
        after send_timeout, its response body closed; the connection serves on.
        """
        counters = Counters()
        with serve(make_app(counters), AttackedComponent, send_timeout=0.5) as server, bystander(server) as other:
            with H2Client(server.port, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}) as attacker:
                protocol = protocol_of(server, attacker)
                sid = attacker.request("/stream")
                attacker.read_until(lambda: attacker.streams[sid].status is not None)
                other.check()
                stream = attacker.response(sid, timeout=DEADLINE)
                wait_on_loop(server, lambda: counters.body_closed == 1 and not protocol.streams)
                assert attacker.goaway is None
        assert stream.reset_code == ErrorCodes.CANCEL
        assert stream.received == 0
        assert counters.produced <= 65536

    def test_never_reads_the_socket(self) -> None:
        """
        A client that opens its windows wide and then never reads its socket while downloading:
        the server stops producing once its buffer is full and drops the connection after
        send_timeout.
        """
        counters = Counters()
        with (
            serve(make_app(counters), AttackedComponent, send_timeout=0.5, socket_buffer=32768) as server,
            bystander(server) as other,
        ):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
            sock.settimeout(DEADLINE)
            sock.connect(("127.0.0.1", server.port))
            settings = {SettingsFrame.INITIAL_WINDOW_SIZE: 2**31 - 1}
            with H2Client(0, sock=sock, settings=settings, connection_window=2**31 - 1, auto_ack=False) as attacker:
                protocol = protocol_of(server, attacker)
                attacker.request("/stream")
                wait_on_loop(server, lambda: counters.started == 1)
                other.check()
                connection_gone(server, protocol)
                wait_on_loop(server, lambda: counters.body_closed == 1)
        print(f"never reads: {counters.produced} B produced, write buffer peak {protocol.peak_write_buffer} B")
        assert counters.produced < 8 * 1024 * 1024, counters.produced
        assert protocol.peak_write_buffer < 1024 * 1024

    @pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="reads the client's TCP state (Linux)")
    def test_dropped_slow_reader_gets_a_reset(self) -> None:
        """The slow reader dropped after send_timeout is reset, so its data is not kept by the kernel."""
        counters = Counters()
        with serve(make_app(counters), AttackedComponent, send_timeout=0.5, socket_buffer=32768) as server:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
            sock.settimeout(DEADLINE)
            sock.connect(("127.0.0.1", server.port))
            settings = {SettingsFrame.INITIAL_WINDOW_SIZE: 2**31 - 1}
            with H2Client(0, sock=sock, settings=settings, connection_window=2**31 - 1, auto_ack=False) as attacker:
                protocol = protocol_of(server, attacker)
                attacker.request("/stream")
                connection_gone(server, protocol)
                # An RST arrives at once; poll the client's TCP state for a while.
                deadline = time.monotonic() + 2
                while tcp_state(sock) == TCP_ESTABLISHED and time.monotonic() < deadline:
                    select.select([], [], [], 0.02)
                state = tcp_state(sock)
        assert state != TCP_ESTABLISHED, "the server's socket still holds the data; the client was not told"

    @pytest.mark.parametrize(
        "sent",
        [b"", PREFACE[:12], PREFACE, PREFACE + raw_frame(SETTINGS, 0, 0)[:5]],
        ids=["nothing", "half-preface", "preface-only", "half-settings"],
    )
    def test_slowloris_on_the_preface(self, sent: bytes) -> None:
        """A client that sends nothing, or part of the handshake, is closed after header_timeout."""
        counters = Counters()
        with serve(make_app(counters), AttackedComponent, header_timeout=0.5) as server, bystander(server) as other:
            with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as sock:
                protocol = protocol_of(server, sock)
                sock.sendall(sent)
                other.check()
                received = http11_exchange(sock, b"", timeout=DEADLINE)
            connection_gone(server, protocol)
        # What came back (if anything) is HTTP/2: the server's SETTINGS and a GOAWAY.
        assert not received.startswith(b"HTTP/1.1"), received

    def test_slowloris_on_the_tls_handshake(self, tls_files) -> None:
        """A client that opens a TCP connection to the TLS port and never starts TLS."""
        counters = Counters()
        cfg = {"ssl_keyfile": tls_files["key"], "ssl_certfile": tls_files["cert"], "header_timeout": 0.5}
        with serve(make_app(counters), AttackedComponent, **cfg) as server:
            context = ssl.create_default_context(cafile=tls_files["ca"])
            with bystander(server, "h2", context) as other:
                with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as sock:
                    other.check()
                    received = http11_exchange(sock, b"", timeout=DEADLINE)
        assert received == b""

    @pytest.mark.parametrize("trickle", [False, True], ids=["silent", "trickling-continuations"])
    def test_slowloris_on_a_header_block(self, trickle: bool) -> None:
        """
        HEADERS without END_HEADERS, then nothing (or a one-byte CONTINUATION now and then): the
        connection ends with GOAWAY ENHANCE_YOUR_CALM after header_timeout.
        """
        counters = Counters()
        with serve(make_app(counters), AttackedComponent, header_timeout=0.5) as server, bystander(server) as other:
            with H2Client(server.port) as attacker:
                attacker.wait_ready()
                protocol = protocol_of(server, attacker)
                block = attacker.encoder.encode(request_block("/hang"))
                attacker.send_raw(raw_frame(HEADERS, END_STREAM, 1, block[:3]))
                other.check()
                trickled = 0
                if trickle:
                    # One byte every 0.1 s (the wait for the server's answer paces it).
                    while not attacker.frames_within(0.1) and not attacker.eof and trickled < 100:
                        with contextlib.suppress(OSError):
                            attacker.send_raw(raw_frame(CONTINUATION, 0, 1, b"\x00"))
                        trickled += 1
                code = goaway_code(attacker)
            connection_gone(server, protocol)
        assert code == CALM, attacker.describe_frames()
        assert trickled < 100
        assert counters.started == 0


class TestStreamExhaustion:
    def test_streams_over_the_limit_are_refused_one_by_one(self) -> None:
        """
        With max_concurrent_streams streams running, each further stream is refused alone with
        REFUSED_STREAM (no connection error); the running ones complete, then new ones are served.
        """
        counters = Counters()
        gate = Gate()
        cfg = {"max_concurrent_streams": 5, **RESET_CFG}
        with serve(make_app(counters, gate), AttackedComponent, **cfg) as server, bystander(server) as other:
            gate.server = server
            with H2Client(server.port) as client:
                client.wait_ready()
                assert client.remote_settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == 5
                allowed = [client.request(f"/gated/{n}") for n in range(5)]
                wait_on_loop(server, lambda: counters.running == 5)
                refused = [client.request(f"/gated/{n}") for n in range(5, 25)]
                client.read_until(lambda: all(client.streams[s].done for s in refused))
                other.check()
                assert not any(client.streams[s].done for s in allowed)
                gate.open()
                client.read_until(lambda: all(client.streams[s].done for s in allowed))
                after = client.response(client.request("/"))
        assert [client.streams[s].reset_code for s in refused] == [ErrorCodes.REFUSED_STREAM] * 20
        assert [bytes(client.streams[s].data) for s in allowed] == [f"gated {n}".encode() for n in range(5)]
        assert counters.started == 5 and counters.max_running == 5 and counters.completed == 5
        assert after.status == 200
        assert client.goaway is None


class TestH2cSmuggling:
    def app(self) -> Kyoukai:
        app = Kyoukai("smuggling")

        @app.route("/")
        async def index(ctx):
            return "ok"

        @app.route("/proto")
        async def proto(ctx):
            return ctx.environ["SERVER_PROTOCOL"]

        return app

    def test_ignored_with_http2_off(self) -> None:
        """``http2`` off (the default): ``Upgrade: h2c`` is served as HTTP/1.1; the connection stays HTTP/1.1."""
        with serve(self.app()) as server, bystander(server, "h1") as other:
            with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as sock:
                sock.sendall(upgrade_request(server.port) + b"GET /proto HTTP/1.1\r\nHost: x\r\n\r\n")
                other.check()
                (head1, body1), (head2, body2) = read_http11_responses(sock, 2)
                answer = http11_exchange(sock, PREFACE + SettingsFrame(0).serialize())
        assert head1.startswith(b"HTTP/1.1 200 ") and body1 == b"HTTP/1.1"
        assert head2.startswith(b"HTTP/1.1 200 ") and body2 == b"HTTP/1.1"
        assert answer.startswith(b"HTTP/1.1 400 "), answer

    @pytest.mark.parametrize("alpn", [["http/1.1"], None], ids=["alpn-http1.1", "no-alpn"])
    def test_never_over_tls(self, alpn: list[str] | None, ssl_config, tls_files) -> None:
        """TLS with ``http2: true``: ``Upgrade: h2c`` is never honoured, the request is HTTP/1.1."""
        context = ssl.create_default_context(cafile=tls_files["ca"])
        other_context = ssl.create_default_context(cafile=tls_files["ca"])
        with serve(self.app(), http2=True, ssl=ssl_config) as server, bystander(server, "h2", other_context) as other:
            with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as raw_sock:
                if alpn is not None:
                    context.set_alpn_protocols(alpn)
                with context.wrap_socket(raw_sock, server_hostname="localhost") as sock:
                    sock.sendall(upgrade_request(server.port) + b"GET /proto HTTP/1.1\r\nHost: x\r\n\r\n")
                    other.check()
                    (head1, body1), (head2, body2) = read_http11_responses(sock, 2)
        assert head1.startswith(b"HTTP/1.1 200 ") and body1 == b"HTTP/1.1"
        assert b"101" not in head1.split(b"\r\n", 1)[0]
        assert head2.startswith(b"HTTP/1.1 200 ") and body2 == b"HTTP/1.1"

    def test_http2_only_port_refuses_the_upgrade(self) -> None:
        """The HTTP/2-only port answers an upgrade request with 505, never 101."""
        with serve(self.app(), H2KyoukaiComponent) as server, bystander(server) as other:
            with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as sock:
                other.check()
                answer = http11_exchange(sock, upgrade_request(server.port))
        assert answer.startswith(b"HTTP/1.1 505 "), answer
