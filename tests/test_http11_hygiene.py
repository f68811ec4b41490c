"""
HTTP/1.1 request hygiene through real sockets: the Host rules of RFC 9112 section 3.2, chunk
heads and trailer sections bounded by the server's settings, and the first request head bounded
by ``header_timeout`` from the moment the connection opens.
"""

from __future__ import annotations

import hashlib
import logging
import random
import select
from collections.abc import Iterator

import pytest
from conftest import RunningServer, serve
from http11_client import RawClient, chunked, request
from test_http11_limits import assert_rejected

from kyoukai import Kyoukai
from kyoukai.settings import ServerSettings

MAX_CHUNK_HEAD = ServerSettings().max_chunk_head_size
MAX_HEADER = ServerSettings().max_header_size
#: Settings for the timeout tests: a head must come quickly, an idle connection may stay long.
QUICK_HEAD = {"header_timeout": 0.5, "keep_alive_timeout": 600}
#: How long a test waits for the server to close a connection: far past header_timeout, far
#: short of keep_alive_timeout, so the old behaviour fails the test without timing anything.
CLOSE_WAIT = 30.0


class Seen:
    """What the handlers saw, readable from the test thread once the response has arrived."""

    def __init__(self) -> None:
        self.hosts: list[str | None] = []
        self.bodies: list[bytes] = []

    def clear(self) -> None:
        self.hosts.clear()
        self.bodies.clear()


def make_app(seen: Seen) -> Kyoukai:
    app = Kyoukai("hygiene")

    @app.route("/")
    async def index(ctx):
        seen.hosts.append(ctx.environ.get("HTTP_HOST"))
        return "hello"

    @app.route("/upload", methods=["POST"])
    async def upload(ctx):
        data = ctx.request.get_data()
        seen.bodies.append(data)
        return hashlib.sha256(data).hexdigest()

    return app


@pytest.fixture(scope="module")
def serving() -> Iterator[tuple[RunningServer, Seen]]:
    seen = Seen()
    with serve(make_app(seen)) as server:
        yield server, seen


@pytest.fixture
def server(serving: tuple[RunningServer, Seen]) -> RunningServer:
    return serving[0]


@pytest.fixture
def seen(serving: tuple[RunningServer, Seen]) -> Seen:
    serving[1].clear()
    return serving[1]


def raw_request(head: str) -> bytes:
    """A request without a body written out whole (``head`` without the blank line), for heads
    ``request()`` cannot write."""
    return head.encode("latin-1") + b"\r\n\r\n"


def chunked_head() -> bytes:
    """The head of a chunked upload."""
    return request("POST", "/upload", {"Transfer-Encoding": "chunked"})


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode()


def send_until_answered(client: RawClient, piece: bytes, limit: int) -> None:
    """Send ``piece`` again and again, ``limit`` times at most, until the server answers or closes."""
    for _ in range(limit):
        try:
            client.send(piece)
        except ConnectionError:
            return
        if select.select([client.sock], [], [], 0)[0]:
            return


class TestHost:
    @pytest.mark.parametrize(
        "head",
        ["GET / HTTP/1.1", "GET http://a.example/ HTTP/1.1", "GET / HTTP/1.1\r\nX-Host: a.example"],
        ids=["origin-form", "absolute-form", "other-field"],
    )
    def test_http11_request_without_host_gets_400(
        self, server: RunningServer, seen: Seen, head: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, "kyoukai")
        with RawClient(server.port) as client:
            client.send(raw_request(head))
            assert_rejected(client, 400)
        assert seen.hosts == []
        assert "without a Host header" in caplog.text

    @pytest.mark.parametrize("version", ["1.1", "1.0"])
    def test_two_host_fields_get_400(
        self, server: RunningServer, seen: Seen, version: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, "kyoukai")
        with RawClient(server.port) as client:
            client.send(raw_request(f"GET / HTTP/{version}\r\nHost: a.example\r\nHost: evil.example"))
            assert_rejected(client, 400)
        assert seen.hosts == []
        assert "more than one Host header" in caplog.text

    @pytest.mark.parametrize(
        "value",
        [
            "a.example, evil.example",
            "a.example,evil.example",
            "a .example",
            "a\tb.example",
            "a.example/x",
            "a@b.example",
        ],
    )
    def test_invalid_host_value_gets_400(
        self, server: RunningServer, seen: Seen, value: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, "kyoukai")
        with RawClient(server.port) as client:
            client.send(raw_request(f"GET / HTTP/1.1\r\nHost: {value}"))
            assert_rejected(client, 400)
        assert seen.hosts == []
        assert "invalid Host" in caplog.text

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("a.example", "a.example"),
            ("a.example:8080", "a.example:8080"),
            ("127.0.0.1", "127.0.0.1"),
            ("[::1]:8080", "[::1]:8080"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("a.example \t", "a.example"),
        ],
    )
    def test_valid_host_is_served(self, server: RunningServer, seen: Seen, value: str, expected: str) -> None:
        with RawClient(server.port) as client:
            client.send(raw_request(f"GET / HTTP/1.1\r\nHost: {value}"))
            assert client.read_response().body == b"hello"
        assert seen.hosts == [expected]

    def test_http10_without_host_is_served(self, server: RunningServer, seen: Seen) -> None:
        with RawClient(server.port) as client:
            client.send(raw_request("GET / HTTP/1.0"))
            assert client.read_response().body == b"hello"
        assert seen.hosts == [None]

    def test_requests_before_the_bad_one_are_answered_first(self, server: RunningServer, seen: Seen) -> None:
        with RawClient(server.port) as client:
            client.send(request("GET", "/") + raw_request("GET / HTTP/1.1\r\nHost: a\r\nHost: b") + request("GET", "/"))
            assert client.read_response().body == b"hello"
            assert_rejected(client, 400)
        assert seen.hosts == ["127.0.0.1"]


class TestTransferCoding:
    @pytest.mark.parametrize(("version", "coding"), [("1.0", "chunked"), ("1.1", "gzip")])
    def test_a_smuggled_request_is_never_served(
        self, server: RunningServer, seen: Seen, version: str, coding: str
    ) -> None:
        """
        A body whose end a proxy and this server could judge differently (RFC 9112 section
        6.1): 400 and close, and neither that request nor the one inside its body is served.
        """
        smuggled = request("GET", "/", {"Host": "smuggled"})
        head = (
            f"POST /upload HTTP/{version}\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: {coding}\r\n\r\n"
        )
        with RawClient(server.port) as client:
            client.send(head.encode() + b"0\r\n\r\n" + smuggled)
            assert_rejected(client, 400)
        assert seen.bodies == [] and seen.hosts == []


class TestChunkHeads:
    def test_64_kib_chunk_extension_gets_400(
        self, server: RunningServer, seen: Seen, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, "kyoukai")
        with RawClient(server.port) as client:
            client.send(chunked_head() + b"5;" + b"a" * 65536 + b"\r\nhello\r\n0\r\n\r\n")
            assert_rejected(client, 400)
        assert seen.bodies == []
        assert f"max_chunk_head_size={MAX_CHUNK_HEAD}" in caplog.text

    def test_extension_that_never_ends_gets_400(self, server: RunningServer, seen: Seen) -> None:
        """1 KiB of extension per write and no LF: measured as it arrives, not when the line ends."""
        with RawClient(server.port) as client:
            client.send(chunked_head() + b"5;x=")
            send_until_answered(client, b"a" * 1024, limit=1024)
            assert_rejected(client, 400)
        assert seen.bodies == []

    def test_blank_line_of_the_head_split_between_reads(self, server: RunningServer, seen: Seen) -> None:
        """
        The head's last LF comes in a later read than its CR LF CR; the chunk head after it is
        still measured. (The GET before it is answered only once the server has read the first
        write, so the second write is a read of its own.)
        """
        head = chunked_head()
        with RawClient(server.port) as client:
            client.send(request("GET", "/") + head[:-1])
            assert client.read_response().body == b"hello"
            client.send(head[-1:] + b"5;" + b"a" * 65536 + b"\r\nhello\r\n0\r\n\r\n")
            assert_rejected(client, 400)
        assert seen.bodies == []

    def test_chunk_head_split_between_reads(self, server: RunningServer, seen: Seen) -> None:
        """A chunk head is measured across reads: 3 KiB, then 2 KiB more, is too long."""
        with RawClient(server.port) as client:
            client.send(request("GET", "/") + chunked_head() + b"5;x=" + b"a" * 3072)
            assert client.read_response().body == b"hello"
            client.send(b"a" * 2048 + b"\r\nhello\r\n0\r\n\r\n")
            assert_rejected(client, 400)
        assert seen.bodies == []

    def test_chunked_request_behind_a_content_length_one(self, server: RunningServer, seen: Seen) -> None:
        """A chunked request pipelined behind a body of known length, in the same write, is measured too."""
        with RawClient(server.port) as client:
            client.send(
                request("POST", "/upload", body=b"abc")
                + chunked_head()
                + b"5;"
                + b"a" * 65536
                + b"\r\nhello\r\n0\r\n\r\n"
            )
            assert client.read_response().body == sha(b"abc")
            assert_rejected(client, 400)
        assert seen.bodies == [b"abc"]

    def test_head_at_the_limit_is_accepted_one_byte_more_is_not(self, server: RunningServer, seen: Seen) -> None:
        def head(size: int) -> bytes:
            """A chunk head of ``size`` bytes, its CRLF included."""
            return b"5;x=" + b"a" * (size - 6) + b"\r\n"

        assert len(head(MAX_CHUNK_HEAD)) == MAX_CHUNK_HEAD
        with RawClient(server.port) as client:
            client.send(chunked_head() + head(MAX_CHUNK_HEAD) + b"hello\r\n5\r\n12345\r\n0\r\n\r\n")
            assert client.read_response().body == sha(b"hello12345")
            client.send(chunked_head() + head(MAX_CHUNK_HEAD + 1) + b"hello\r\n0\r\n\r\n")
            assert_rejected(client, 400)
        assert seen.bodies == [b"hello12345"]

    @pytest.mark.parametrize("piece_size", [0, 1, 7, 4093], ids=["one-write", "bytewise", "7-byte", "4093-byte"])
    def test_many_chunks_with_extensions(self, server: RunningServer, seen: Seen, piece_size: int) -> None:
        rng = random.Random(piece_size)
        count = 200 if piece_size == 1 else 1000
        parts = [rng.randbytes(rng.randint(1, 300)) for _ in range(count)]
        extensions = [b"", b";name=value", b';q="a;b\\"c"', b";a;b=1;c"]
        wire = b"".join(b"%x%s\r\n%s\r\n" % (len(p), extensions[i % 4], p) for i, p in enumerate(parts))
        wire += b"0;last=yes\r\nX-Checksum: abc\r\n\r\n"
        with RawClient(server.port) as client:
            data = chunked_head() + wire + request("GET", "/")
            if piece_size == 0:
                client.send(data)
            else:
                for i in range(0, len(data), piece_size):
                    client.send(data[i : i + piece_size])
            assert client.read_response().body == sha(b"".join(parts))
            assert client.read_response().body == b"hello"
        assert seen.bodies == [b"".join(parts)]

    def test_one_mib_chunk(self, server: RunningServer, seen: Seen) -> None:
        body = random.Random(1).randbytes(1024 * 1024)
        with RawClient(server.port) as client:
            client.send(chunked_head() + b"%x;big\r\n" % len(body) + body + b"\r\n" + b"3\r\nend\r\n0\r\n\r\n")
            assert client.read_response().body == sha(body + b"end")
        assert seen.bodies == [body + b"end"]

    def test_pipelined_requests_after_chunked_ones(self, server: RunningServer, seen: Seen) -> None:
        with RawClient(server.port) as client:
            client.send(
                chunked_head()
                + chunked(b"one")
                + request("GET", "/")
                + chunked_head()
                + b"3;ext\r\ntwo\r\n0\r\nX-Trailer: yes\r\n\r\n"
                + chunked_head()
                + chunked(b"three", b"!")
                + request("POST", "/upload", body=b"four")
            )
            assert client.read_response().body == sha(b"one")
            assert client.read_response().body == b"hello"
            assert client.read_response().body == sha(b"two")
            assert client.read_response().body == sha(b"three!")
            assert client.read_response().body == sha(b"four")
        assert seen.bodies == [b"one", b"two", b"three!", b"four"]

    def test_trailer_section_that_never_ends_gets_431(
        self, server: RunningServer, seen: Seen, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, "kyoukai")
        with RawClient(server.port) as client:
            client.send(chunked_head() + b"5\r\nhello\r\n0\r\nX-Trailer: ")
            send_until_answered(client, b"t" * 1024, limit=4 * MAX_HEADER // 1024)
            assert_rejected(client, 431)
        assert seen.bodies == []
        assert f"max_header_size={MAX_HEADER}" in caplog.text


class TestFirstHeadTimeout:
    """
    From the moment a connection opens, its first request head is bounded by ``header_timeout``;
    between requests, ``keep_alive_timeout`` applies.
    """

    @pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "shared-http2-port"])
    def test_silent_connection_is_closed_without_an_answer(self, http2: bool, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, "kyoukai")
        with serve(make_app(Seen()), http2=http2, **QUICK_HEAD) as server:
            with RawClient(server.port, timeout=CLOSE_WAIT) as client:
                assert client.read_until_closed() == b""
        assert "header_timeout=0.5" in caplog.text

    @pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "shared-http2-port"])
    def test_partial_head_gets_408(self, http2: bool) -> None:
        with serve(make_app(Seen()), http2=http2, **QUICK_HEAD) as server:
            with RawClient(server.port, timeout=CLOSE_WAIT) as client:
                client.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                assert_rejected(client, 408)

    def test_partial_http2_preface_gets_408(self) -> None:
        """
        ``PRI * HT`` on the shared port is still undecided between HTTP/1.1 and HTTP/2, so the
        HTTP/1.1 side answers it like any unfinished head.
        """
        with serve(make_app(Seen()), http2=True, **QUICK_HEAD) as server:
            with RawClient(server.port, timeout=CLOSE_WAIT) as client:
                client.send(b"PRI * HT")
                assert_rejected(client, 408)

    def test_idle_keep_alive_connection_outlives_header_timeout(self) -> None:
        with serve(make_app(Seen()), **QUICK_HEAD) as server:
            with RawClient(server.port) as client:
                client.send(request("GET", "/"))
                assert client.read_response().body == b"hello"
                client.sock.settimeout(4 * QUICK_HEAD["header_timeout"])
                assert not client.is_closed_by_server()
                client.sock.settimeout(CLOSE_WAIT)
                client.send(request("GET", "/"))
                assert client.read_response().body == b"hello"
