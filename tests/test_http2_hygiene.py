"""
Three rules of RFC 9113 an audit found the server did not keep: the form of ``:path``
(section 8.3.1), the connection preface on a connection that is HTTP/2 by ALPN or by port
(section 3.4), and frames on idle streams (sections 5.1 and 6.4). Each is checked on a live
server with raw frames, and the scanner that enforces the last two without a socket.
"""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator

import hpack
import pytest
from conformance.h2conf import (
    ConformanceClient,
    continuation_frame,
    data_frame,
    expect_connection_error,
    expect_ignored,
    headers_frame,
    priority_frame,
    request_headers,
    rst_stream_frame,
    settings_frame,
    window_update_frame,
)
from conftest import RunningServer, serve
from h2.errors import ErrorCodes
from h2client import PREFACE, H2Client, parse_frames, read_head, upgrade_request
from hyperframe.frame import GoAwayFrame

from kyoukai import Kyoukai
from kyoukai.asphalt import KyoukaiComponent
from kyoukai.backends.http2 import H2KyoukaiComponent
from kyoukai.protocol.h2.guard import MAX_REQUEST_LINE, ConnectionGuard, Opening
from kyoukai.settings import ServerSettings

pytestmark = pytest.mark.timeout(60)

#: Deadline of any wait for the server (a safety net, not a timing assertion).
DEADLINE = 10.0
HTTP11_REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
#: Bytes that are neither the HTTP/2 preface nor an HTTP/1.x request line.
GARBAGE = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 not a preface\r\n\r\n"


class RecordingKyoukai(Kyoukai):
    """Records the method and PATH_INFO of every request that reaches the app, routed or not."""

    def __init__(self, seen: list[tuple[str, str]]) -> None:
        super().__init__("hygiene")
        self.seen = seen

    async def process_request(self, request, parent_context):
        self.seen.append((request.environ["REQUEST_METHOD"], request.environ["PATH_INFO"]))
        return await super().process_request(request, parent_context)


def make_app(seen: list[tuple[str, str]]) -> Kyoukai:
    app = RecordingKyoukai(seen)

    @app.route("/")
    async def index(ctx):
        return "index"

    @app.route("/admin")
    async def admin(ctx):
        return "admin"

    @app.route("/proto")
    async def proto(ctx):
        return ctx.environ["SERVER_PROTOCOL"] + " " + ctx.environ["PATH_INFO"]

    @app.route("/echo", methods=["POST"])
    async def echo(ctx):
        return ctx.request.get_data()

    return app


def read_to_eof(sock: socket.socket, timeout: float = DEADLINE) -> bytes:
    """Everything the server sends until it closes; AssertionError if it stays open."""
    deadline = time.monotonic() + timeout
    received = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the server kept the connection open; got {bytes(received)!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            chunk = b""
        except TimeoutError:
            continue
        if not chunk:
            return bytes(received)
        received += chunk


def assert_goaway_protocol_error(answer: bytes) -> None:
    """``answer`` is HTTP/2 frames ending with one GOAWAY PROTOCOL_ERROR (then the server closed)."""
    assert not answer.startswith(b"HTTP/"), answer
    frames = parse_frames(answer)
    assert sum(len(f.serialize()) for f in frames) == len(answer), f"not whole HTTP/2 frames: {answer!r}"
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert [f.error_code for f in goaways] == [ErrorCodes.PROTOCOL_ERROR], frames
    assert frames[-1] is goaways[0], frames


def tls_connect(port: int, tls_files: dict[str, str], alpn: list[str] | None) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=tls_files["ca"])
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    return context.wrap_socket(sock, server_hostname="localhost")


# the form of :path (RFC 9113 section 8.3.1)


class TestPathForm:
    @pytest.mark.parametrize(
        ("method", "path"),
        [("GET", "admin"), ("GET", "http://evil.example/x"), ("GET", "*"), ("POST", "*")],
        ids=["no-leading-slash", "absolute-form", "asterisk-with-GET", "asterisk-with-POST"],
    )
    def test_malformed_path_resets_only_its_stream(self, method: str, path: str, caplog) -> None:
        """
        RFC 9113 section 8.3.1: ``:path`` of an http(s) request is origin-form, or ``*`` for
        OPTIONS. Anything else is malformed: RST_STREAM PROTOCOL_ERROR, the app never sees it,
        one log line; the other streams of the connection carry on.
        """
        caplog.set_level(logging.INFO, logger="kyoukai.http2")
        seen: list[tuple[str, str]] = []
        with serve(make_app(seen), H2KyoukaiComponent) as server, H2Client(server.port) as client:
            client.wait_ready()
            upload = client.request("/echo", "POST", body=b"before", end_stream=False)
            bad = client.request(path, method)
            rejected = client.response(bad)
            client.send_body(upload, b" and after")
            echoed = client.response(upload)
            after = client.response(client.request("/admin"))
        assert rejected.reset_code == ErrorCodes.PROTOCOL_ERROR and rejected.status is None, rejected
        assert client.goaway is None, client.describe_frames()
        assert bytes(echoed.data) == b"before and after"
        assert after.status == 200 and bytes(after.data) == b"admin"
        assert seen == [("POST", "/echo"), ("GET", "/admin")]
        logged = [r.getMessage() for r in caplog.records if f"stream {bad} " in r.getMessage()]
        assert len(logged) == 1 and "malformed request" in logged[0] and ":path" in logged[0], logged

    def test_asterisk_form_with_options_is_served(self) -> None:
        seen: list[tuple[str, str]] = []
        with serve(make_app(seen), H2KyoukaiComponent) as server, H2Client(server.port) as client:
            stream = client.response(client.request("*", "OPTIONS"))
        assert stream.reset_code is None and stream.status is not None, stream
        assert client.goaway is None
        assert seen == [("OPTIONS", "*")]

    @pytest.mark.parametrize("path", ["/", "/admin?x=1", "/a/b%20c"])
    def test_origin_form_is_served(self, path: str) -> None:
        seen: list[tuple[str, str]] = []
        with serve(make_app(seen), H2KyoukaiComponent) as server, H2Client(server.port) as client:
            stream = client.response(client.request(path))
        assert stream.reset_code is None and stream.status is not None, stream
        assert len(seen) == 1

    def test_h2c_upgrade_of_an_absolute_form_request(self) -> None:
        """
        An HTTP/1.1 request with an absolute-form target may ask for ``Upgrade: h2c``: it is
        served as stream 1 with the target's path (the environ reduces it to origin-form).
        """
        seen: list[tuple[str, str]] = []
        with serve(make_app(seen), http2=True) as server:
            with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as sock:
                target = f"http://127.0.0.1:{server.port}/proto?q=1"
                sock.sendall(upgrade_request(server.port, target) + PREFACE + settings_frame())
                head, rest = read_head(sock)
                assert head.startswith(b"HTTP/1.1 101 "), head
                with H2Client(server.port, sock=sock, initial_data=rest, handshake=False) as client:
                    client.open_stream(1)
                    first = client.response(1)
                    second = client.response(client.request("/proto"))
        assert first.status == 200 and bytes(first.data) == b"HTTP/2 /proto", first
        assert second.status == 200 and bytes(second.data) == b"HTTP/2 /proto", second
        assert client.goaway is None


# the connection preface (RFC 9113 section 3.4)


@pytest.fixture
def seen() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def h2_tls(tls_files: dict[str, str], seen) -> Iterator[RunningServer]:
    """The HTTP/2-only component over TLS (ALPN h2 only)."""
    cfg = {"ssl_keyfile": tls_files["key"], "ssl_certfile": tls_files["cert"]}
    with serve(make_app(seen), H2KyoukaiComponent, **cfg) as server:
        yield server


@pytest.fixture
def shared_tls(ssl_config, seen) -> Iterator[RunningServer]:
    """The shared component with ``http2: true`` over TLS (ALPN h2, then http/1.1)."""
    with serve(make_app(seen), KyoukaiComponent, http2=True, ssl=ssl_config) as server:
        yield server


class TestPrefaceAfterAlpnH2:
    """ALPN chose h2: the client declared HTTP/2, so anything but the preface is PROTOCOL_ERROR."""

    @pytest.mark.parametrize("sent", [HTTP11_REQUEST, GARBAGE], ids=["http1.1-request", "garbage"])
    @pytest.mark.parametrize("kind", ["h2-only", "shared"])
    def test_not_the_preface_is_a_connection_error(self, kind, sent, request, tls_files, seen) -> None:
        server = request.getfixturevalue("h2_tls" if kind == "h2-only" else "shared_tls")
        with tls_connect(server.port, tls_files, ["h2"]) as sock:
            assert sock.selected_alpn_protocol() == "h2"
            sock.sendall(sent)
            answer = read_to_eof(sock)
        assert_goaway_protocol_error(answer)
        assert seen == []

    @pytest.mark.parametrize("kind", ["h2-only", "shared"])
    def test_the_preface_is_served(self, kind, request, tls_files, seen) -> None:
        server = request.getfixturevalue("h2_tls" if kind == "h2-only" else "shared_tls")
        context = ssl.create_default_context(cafile=tls_files["ca"])
        with H2Client(server.port, ssl_context=context) as client:
            stream = client.response(client.request("/", scheme="https"))
        assert stream.status == 200 and bytes(stream.data) == b"index"


class TestPrefaceOnTheHTTP2OnlyPort:
    """No ALPN h2: a recognisable HTTP/1.x request gets the 505 page, anything else GOAWAY."""

    @pytest.mark.parametrize(
        "sent",
        [HTTP11_REQUEST, b"POST /echo HTTP/1.0\r\nContent-Length: 0\r\n\r\n", b"PRI / HTTP/1.1\r\nHost: x\r\n\r\n"],
        ids=["GET", "POST-1.0", "PRI-1.1"],
    )
    def test_http1_request_line_gets_505(self, sent: bytes, seen) -> None:
        with serve(make_app(seen), H2KyoukaiComponent) as server:
            with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as sock:
                sock.sendall(sent)
                answer = read_to_eof(sock)
        assert answer.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), answer
        assert seen == []

    def test_curl_http11_gets_505(self, seen) -> None:
        with serve(make_app(seen), H2KyoukaiComponent) as server:
            result = subprocess.run(
                ["curl", "-sS", "-i", "--http1.1", server.url("/")], capture_output=True, text=True, timeout=DEADLINE
            )
        assert result.stdout.startswith("HTTP/1.1 505 "), result.stdout + result.stderr
        assert "HTTP/2 only" in result.stdout

    @pytest.mark.parametrize(
        "sent",
        [GARBAGE, b"hello\r\n", b"GET / HTTP/2.0\r\n\r\n", b"GET /\r\n", b"\r\nGET / HTTP/1.1\r\n\r\n"],
        ids=["binary", "word", "http2-version", "http0.9", "empty-first-line"],
    )
    def test_anything_else_is_a_connection_error(self, sent: bytes, seen) -> None:
        with serve(make_app(seen), H2KyoukaiComponent) as server:
            with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as sock:
                sock.sendall(sent)
                answer = read_to_eof(sock)
        assert_goaway_protocol_error(answer)

    @pytest.mark.parametrize("sent", [b"GET / HTTP/1.1", b"GET /" + b"a" * 1000], ids=["no-CRLF", "long-target"])
    def test_unfinished_first_line_ends_at_header_timeout(self, sent: bytes, seen) -> None:
        """A first line that never ends is bounded by header_timeout: GOAWAY, not the 505 page."""
        with serve(make_app(seen), H2KyoukaiComponent, header_timeout=0.3) as server:
            with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as sock:
                sock.sendall(sent)
                answer = read_to_eof(sock)
        assert_goaway_protocol_error(answer)

    @pytest.mark.parametrize("sent", [HTTP11_REQUEST, GARBAGE], ids=["http1.1-request", "garbage"])
    def test_tls_without_alpn(self, sent: bytes, tls_files, h2_tls: RunningServer) -> None:
        """TLS where the client offered no ALPN: the same as cleartext."""
        with tls_connect(h2_tls.port, tls_files, None) as sock:
            assert sock.selected_alpn_protocol() is None
            sock.sendall(sent)
            answer = read_to_eof(sock)
        if sent is HTTP11_REQUEST:
            assert answer.startswith(b"HTTP/1.1 505 "), answer
        else:
            assert_goaway_protocol_error(answer)


# frames on idle streams (RFC 9113 sections 5.1 and 6.4)


@pytest.fixture
def h2c(seen) -> Iterator[RunningServer]:
    with serve(make_app(seen), H2KyoukaiComponent) as server:
        yield server


@pytest.fixture
def client(h2c: RunningServer) -> Iterator[ConformanceClient]:
    """A connection past the handshake on which stream 1 was served (so a stream exists)."""
    c = ConformanceClient(h2c.port)
    try:
        c.wait_ready()
        assert c.get("/").status == 200
        yield c
    finally:
        c.close()


class TestIdleStreams:
    def test_rst_stream_before_any_stream(self, h2c: RunningServer) -> None:
        c = ConformanceClient(h2c.port)
        try:
            c.wait_ready()
            c.send_with_probe(rst_stream_frame(1))
            expect_connection_error(c, ErrorCodes.PROTOCOL_ERROR)
        finally:
            c.close()

    @pytest.mark.parametrize(
        "offence",
        [
            rst_stream_frame(5),
            rst_stream_frame(2),
            rst_stream_frame(2**31 - 1),
            window_update_frame(5, 1 << 16),
            window_update_frame(2, 1 << 16),
            data_frame(5, b"x", end_stream=True),
            data_frame(2, b"x", end_stream=True),
            priority_frame(7) + rst_stream_frame(7),
        ],
        ids=[
            "RST_STREAM-higher-odd",
            "RST_STREAM-even",
            "RST_STREAM-max-id",
            "WINDOW_UPDATE-higher-odd",
            "WINDOW_UPDATE-even",
            "DATA-higher-odd",
            "DATA-even",
            "RST_STREAM-after-PRIORITY",
        ],
    )
    def test_frame_on_an_idle_stream_is_a_connection_error(self, client: ConformanceClient, offence: bytes) -> None:
        """RFC 9113 section 5.1: on an idle stream only HEADERS and PRIORITY are allowed."""
        client.send_with_probe(offence)
        expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)

    def test_rst_stream_on_an_open_stream(self, client: ConformanceClient) -> None:
        stream_id = client.next_id()
        client.send_raw(headers_frame(stream_id, client.request_block("/echo", "POST"), end_stream=False))
        expect_ignored(client, rst_stream_frame(stream_id))
        assert client.get("/").status == 200

    def test_rst_stream_on_a_closed_stream(self, client: ConformanceClient) -> None:
        expect_ignored(client, rst_stream_frame(1), window_update_frame(1, 1 << 16), priority_frame(1))
        assert client.get("/").status == 200

    def test_stream_opened_by_split_headers(self, client: ConformanceClient) -> None:
        """A HEADERS frame opens its stream even when CONTINUATION ends the header block."""
        stream_id = client.next_id()
        block = client.request_block("/echo", "POST")
        opening = headers_frame(stream_id, block[:2], end_stream=False, end_headers=False)
        opening += continuation_frame(stream_id, block[2:])
        expect_ignored(client, opening, window_update_frame(stream_id, 1 << 16), rst_stream_frame(stream_id))
        assert client.get("/").status == 200

    def test_priority_on_an_idle_stream_then_headers(self, client: ConformanceClient) -> None:
        stream_id = client.next_id()
        expect_ignored(client, priority_frame(stream_id + 4), priority_frame(stream_id))
        client.send_raw(headers_frame(stream_id, client.request_block("/")))
        assert client.response(stream_id).status == 200

    def test_stream_1_of_an_h2c_upgrade_is_not_idle(self) -> None:
        """
        The request that asked for the upgrade is stream 1 (RFC 7540 section 3.2): no HEADERS
        frame opened it, yet it is not idle, even once answered; stream 3 is.
        """
        seen: list[tuple[str, str]] = []
        with serve(make_app(seen), http2=True) as server:
            with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as sock:
                sock.sendall(upgrade_request(server.port, "/proto"))
                head, rest = read_head(sock)
                assert head.startswith(b"HTTP/1.1 101 "), head
                c = ConformanceClient(server.port, sock=sock, initial_data=rest)
                c.open_stream(1)
                assert c.response(1).status == 200
                expect_ignored(c, window_update_frame(1, 1 << 16), rst_stream_frame(1))
                c.send_with_probe(rst_stream_frame(3))
                expect_connection_error(c, ErrorCodes.PROTOCOL_ERROR)


# the scanner, without a socket


def read_in_pieces(guard: ConnectionGuard, data: bytes, http1_allowed: bool = True) -> list[Opening]:
    """Feed ``data`` to :meth:`ConnectionGuard.read_opening` a byte at a time, until it decides."""
    verdicts = []
    for i in range(len(data)):
        verdicts.append(guard.read_opening(data[i : i + 1], http1_allowed))
        if verdicts[-1] not in (Opening.PARTIAL_PREFACE, Opening.UNDECIDED):
            break
    return verdicts


class TestReadOpening:
    def test_the_preface(self) -> None:
        guard = ConnectionGuard(ServerSettings())
        assert guard.read_opening(PREFACE + settings_frame(), http1_allowed=False) is Opening.PREFACE
        assert guard.preface_read

    def test_the_preface_a_byte_at_a_time(self) -> None:
        guard = ConnectionGuard(ServerSettings())
        verdicts = read_in_pieces(guard, PREFACE + settings_frame(), http1_allowed=False)
        assert verdicts == [Opening.PARTIAL_PREFACE] * (len(PREFACE) - 1) + [Opening.PREFACE]

    @pytest.mark.parametrize(
        "line",
        [b"GET / HTTP/1.1\r\n", b"POST /x?y=1 HTTP/1.0\r\n", b"PRI * HTTP/1.1\r\n", b"M-SEARCH * HTTP/1.1\r\n"],
    )
    def test_an_http1_request_line(self, line: bytes) -> None:
        whole = ConnectionGuard(ServerSettings())
        assert whole.read_opening(line + b"Host: x\r\n\r\n", http1_allowed=True) is Opening.HTTP1
        pieces = read_in_pieces(ConnectionGuard(ServerSettings()), line + b"Host: x\r\n\r\n")
        assert pieces[-1] is Opening.HTTP1 and len(pieces) == len(line)
        strict = ConnectionGuard(ServerSettings())
        assert read_in_pieces(strict, line, http1_allowed=False)[-1] is Opening.INVALID

    @pytest.mark.parametrize(
        ("sent", "decided_after"),
        [
            (GARBAGE, 1),
            (b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", 19),
            (b"GET / HTTP/2.0\r\n", 16),
            (b"GET /\r\n", 7),
            (b"GET / HTTP/1.1\n", 15),
            (b"\r\nGET / HTTP/1.1\r\n", 1),
            (b"GET\x00/ HTTP/1.1\r\n", 4),
        ],
        ids=["binary", "broken-preface", "http2-version", "http0.9", "bare-LF", "empty-line", "NUL"],
    )
    def test_anything_else_is_invalid(self, sent: bytes, decided_after: int) -> None:
        verdicts = read_in_pieces(ConnectionGuard(ServerSettings()), sent)
        assert verdicts[-1] is Opening.INVALID and len(verdicts) <= decided_after, verdicts

    def test_the_first_line_is_read_up_to_a_bound(self) -> None:
        target = b"/" + b"a" * (MAX_REQUEST_LINE - len(b"GET  HTTP/1.1\r\n") - 1)
        longest = b"GET " + target + b" HTTP/1.1\r\n"
        assert len(longest) == MAX_REQUEST_LINE
        assert ConnectionGuard(ServerSettings()).read_opening(longest, True) is Opening.HTTP1
        split = ConnectionGuard(ServerSettings())
        assert split.read_opening(longest[:-1], True) is Opening.UNDECIDED
        assert split.read_opening(b"\n", True) is Opening.HTTP1
        longer = longest.replace(b"/", b"/a", 1)
        assert ConnectionGuard(ServerSettings()).read_opening(longer, True) is Opening.INVALID
        endless = ConnectionGuard(ServerSettings())
        assert endless.read_opening(b"GET /", True) is Opening.UNDECIDED
        assert endless.read_opening(b"a" * MAX_REQUEST_LINE, True) is Opening.INVALID


def opened_guard() -> ConnectionGuard:
    """A guard past a prior-knowledge preface and SETTINGS."""
    guard = ConnectionGuard(ServerSettings())
    assert guard.read_opening(PREFACE, http1_allowed=False) is Opening.PREFACE
    assert guard.feed(PREFACE + settings_frame()) is None
    return guard


def request(stream_id: int, *, split: bool = False) -> bytes:
    block = hpack.Encoder().encode(request_headers())
    if not split:
        return headers_frame(stream_id, block)
    return headers_frame(stream_id, block[:2], end_headers=False) + continuation_frame(stream_id, block[2:])


class TestIdleStreamScanner:
    @pytest.mark.parametrize("stream_id", [1, 2, 3])
    def test_rst_stream_before_any_stream(self, stream_id: int) -> None:
        violation = opened_guard().feed(rst_stream_frame(stream_id))
        assert violation is not None and violation.error_code == ErrorCodes.PROTOCOL_ERROR, violation
        assert f"idle stream {stream_id}" in violation.message

    @pytest.mark.parametrize("split", [False, True], ids=["HEADERS", "HEADERS+CONTINUATION"])
    def test_rst_stream_after_headers(self, split: bool) -> None:
        guard = opened_guard()
        data = request(1, split=split) + rst_stream_frame(1) + request(5) + rst_stream_frame(3)
        # byte by byte: the frame headers cross every boundary
        assert [guard.feed(data[i : i + 1]) for i in range(len(data))] == [None] * len(data)
        for idle in (7, 4, 2**31 - 1):
            assert opened_guard().feed(request(5) + rst_stream_frame(idle)) is not None, idle

    def test_priority_opens_nothing(self) -> None:
        guard = opened_guard()
        assert guard.feed(priority_frame(3) + priority_frame(2)) is None
        assert guard.feed(rst_stream_frame(3)) is not None

    def test_stream_1_of_an_h2c_upgrade(self) -> None:
        """No read_opening: the connection came by an upgrade, and its stream 1 is open."""
        guard = ConnectionGuard(ServerSettings())
        assert guard.feed(PREFACE + settings_frame() + rst_stream_frame(1)) is None
        assert guard.feed(rst_stream_frame(3)) is not None


def frame_bytes(frame_type: int, stream_id: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([frame_type, 0]) + stream_id.to_bytes(4, "big") + payload


class TestStreamErrorsStayStreamErrors:
    """
    Where RFC 9113 says a stream error, only that stream is reset: a stream uploading on the same
    connection finishes, and the connection serves on (h2 alone would end the connection).
    """

    CASES = {
        "priority-4-bytes": (lambda sid: frame_bytes(0x2, sid, b"\0" * 4), ErrorCodes.FRAME_SIZE_ERROR),
        "priority-6-bytes": (lambda sid: frame_bytes(0x2, sid, b"\0" * 6), ErrorCodes.FRAME_SIZE_ERROR),
        "window-update-0": (lambda sid: window_update_frame(sid, 0), ErrorCodes.PROTOCOL_ERROR),
    }

    @pytest.mark.parametrize("split", [False, True], ids=["one-write", "byte-by-byte"])
    @pytest.mark.parametrize("case", sorted(CASES))
    def test_only_the_stream_is_reset(self, client: ConformanceClient, case: str, split: bool) -> None:
        make, code = self.CASES[case]
        other = client.next_id()
        client.send_raw(headers_frame(other, client.request_block("/echo", "POST"), end_stream=False))
        target = client.next_id()
        client.send_raw(headers_frame(target, client.request_block("/echo", "POST"), end_stream=False))
        bad = make(target)
        if split:
            for i in range(len(bad)):
                client.send_raw(bad[i : i + 1])
        else:
            client.send_raw(bad)
        client.read_until(lambda: client.streams[target].reset_code is not None)
        assert client.streams[target].reset_code == code
        client.send_raw(data_frame(other, b"still here", end_stream=True))
        stream = client.response(other)
        assert bytes(stream.data) == b"still here"
        assert client.goaway is None and not client.eof
        assert client.get("/").status == 200

    @pytest.mark.parametrize("body", [b"tes", b"test!"], ids=["shorter", "longer"])
    def test_content_length_mismatch_resets_only_its_stream(self, client: ConformanceClient, body: bytes) -> None:
        other = client.next_id()
        client.send_raw(headers_frame(other, client.request_block("/echo", "POST"), end_stream=False))
        target = client.next_id()
        head = client.request_block("/echo", "POST", [("content-length", "4")])
        client.send_raw(headers_frame(target, head, end_stream=False) + data_frame(target, body, end_stream=True))
        client.read_until(lambda: client.streams[target].reset_code is not None)
        assert client.streams[target].reset_code == ErrorCodes.PROTOCOL_ERROR
        client.send_raw(data_frame(other, b"fine", end_stream=True))
        assert bytes(client.response(other).data) == b"fine"
        assert client.goaway is None and client.get("/").status == 200


class TestCutFrames:
    """The guard cuts the frames of stream errors out of the bytes h2 gets, wherever reads split them."""

    def test_every_split_gives_h2_the_same_bytes(self) -> None:
        guard = ConnectionGuard(ServerSettings())
        assert guard.read_opening(PREFACE, http1_allowed=False) is Opening.PREFACE
        settings = frame_bytes(0x4, 0, b"")
        good = window_update_frame(1, 100)
        bad = frame_bytes(0x2, 3, b"\0" * 4)
        stream = PREFACE + settings + good + bad + good
        for cut in range(1, len(stream)):
            guard = ConnectionGuard(ServerSettings())
            guard.read_opening(PREFACE, http1_allowed=False)
            passed = b""
            errors = []
            for piece in (stream[:cut], stream[cut:]):
                assert guard.feed(piece) is None
                passed += guard.passed(piece)
                errors += guard.stream_errors
            assert passed == PREFACE + settings + good + good, cut
            assert errors == [(3, ErrorCodes.FRAME_SIZE_ERROR, "a PRIORITY frame of 4 bytes")]
