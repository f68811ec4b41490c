"""
The HTTP/1.1 core, :class:`~kyoukai.protocol.h11.connection.H11ServerConnection`, driven with
bytes and a fake clock: no socket, no event loop. The test plays the shell: it feeds bytes,
reads the events, and answers the requests with the bytes the core makes.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from http11_client import chunked, request

from kyoukai.protocol import events as ev
from kyoukai.protocol.fields import InvalidFieldError
from kyoukai.protocol.h11.connection import (
    CONTINUE,
    FIRST_BYTES_GRACE,
    H2_PREFACE,
    SWITCHING_TO_H2C,
    H11ServerConnection,
    chunk,
)
from kyoukai.protocol.h11.request import H11Request, Rejection
from kyoukai.settings import ServerSettings

PROTOCOL_DIR = Path(__file__).resolve().parent.parent / "kyoukai" / "protocol"
GET = request("GET", "/")


class FakeClock:
    """The core's clock: a float the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def connection(*, h2c: bool = False, **cfg: Any) -> tuple[H11ServerConnection, FakeClock]:
    """A core with the settings ``cfg``, and its clock."""
    clock = FakeClock()
    core = H11ServerConnection(
        ServerSettings(**cfg), clock, server=("127.0.0.1", 8080), peer=("127.0.0.1", 50000), protocol="shell", h2c=h2c
    )
    return core, clock


def kinds(events: list[Any]) -> list[type]:
    return [type(event) for event in events]


def received(events: list[Any]) -> list[H11Request]:
    return [event.request for event in events if isinstance(event, ev.H11RequestReceived)]


def body_received(events: list[Any]) -> bytes:
    return b"".join(event.data for event in events if isinstance(event, ev.H11RequestData))


def answer(core: H11ServerConnection, req: H11Request, headers: list[tuple[str, str]] | None = None) -> bytes:
    """The head the core makes of a ``200`` to ``req`` with a body of two bytes (or ``headers``)."""
    return core.response_head(
        req, 200, "OK", headers if headers is not None else [("Content-Length", "2")], streamed=False
    )


def rejection_of(core: H11ServerConnection, events: list[Any]) -> tuple[int, bytes]:
    """The status of the rejection among ``events``, and the bytes of its answer (it must be next)."""
    rejected = [event for event in events if isinstance(event, ev.H11RequestRejected)]
    assert len(rejected) == 1, events
    item = core.next_answer()
    assert isinstance(item, Rejection)
    assert (item.status, item.message) == (rejected[0].status, rejected[0].message)
    data = core.rejection_response(item)
    assert kinds(core.take_events()) == [ev.ConnectionClosed]
    assert core.next_answer() is None
    return rejected[0].status, data


def test_no_core_reaches_into_the_io_layers() -> None:
    """
    Below kyoukai/protocol nothing imports the body reader or the backends, which are asyncio's
    (that asyncio itself is not imported there is a rule of ``test_layout``).
    """
    for path in PROTOCOL_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not [name for name in names if name.startswith(("kyoukai.backends", "kyoukai.body"))], path


class TestRequests:
    def test_get_and_its_events(self) -> None:
        core, clock = connection()
        events = core.receive_data(request("GET", "/a%20b?x=1", {"Accept": "*/*"}))
        assert kinds(events) == [ev.H11RequestReceived, ev.H11RequestEnded]
        req = events[0].request
        assert events[1].request is req and req.ended
        environ = req.environ
        assert (environ["REQUEST_METHOD"], environ["PATH_INFO"], environ["QUERY_STRING"]) == ("GET", "/a b", "x=1")
        assert (environ["HTTP_HOST"], environ["HTTP_ACCEPT"], environ["SERVER_PROTOCOL"]) == (
            "127.0.0.1",
            "*/*",
            "HTTP/1.1",
        )
        assert (environ["REMOTE_PORT"], environ["kyoukai.protocol"]) == ("50000", "shell")
        assert core.next_answer() is req
        assert core.next_deadline() is None, "no timer runs while a request is answered"
        head = answer(core, req)
        assert head == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
        assert core.response_done(req) == []
        assert core.next_answer() is None
        assert core.next_deadline() == clock.now + core.settings.keep_alive_timeout

    @pytest.mark.parametrize("raw", [b"value", b"value ", b"value\t \t", b" \tvalue  ", b"a  b "])
    def test_field_values_lose_surrounding_whitespace(self, raw: bytes) -> None:
        # RFC 9110 section 5.5: the whitespace around a field value is not part of it.
        core, _ = connection()
        data = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Probe:" + raw + b"\r\n\r\n"
        events = core.receive_data(data)
        assert events[0].request.environ["HTTP_X_PROBE"] == raw.strip(b" \t").decode()

    def test_body_by_content_length(self) -> None:
        core, _ = connection()
        data = request("POST", "/upload", body=b"0123456789")
        events = core.receive_data(data[:-6])
        assert kinds(events) == [ev.H11RequestReceived, ev.H11RequestData]
        req = events[0].request
        assert req.expected_length == 10 and not req.ended
        events = core.receive_data(data[-6:] + GET)
        assert kinds(events) == [ev.H11RequestData, ev.H11RequestEnded, ev.H11RequestReceived, ev.H11RequestEnded]
        assert body_received(events) == b"456789" and req.received == 10 and req.ended

    def test_streamed_response_is_chunked_on_http11_and_ends_the_connection_on_http10(self) -> None:
        core, _ = connection()
        req = received(core.receive_data(GET))[0]
        head = core.response_head(req, 200, "OK", [], streamed=True)
        assert head == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        assert req.chunked and req.keep_alive
        assert b"".join(chunk(b"hello")) == b"5\r\nhello\r\n"
        assert core.last_chunk(req) == b"0\r\n\r\n"
        assert core.response_done(req) == []

        core, _ = connection()
        req = received(core.receive_data(request("GET", "/", {"Connection": "keep-alive"}, version="1.0")))[0]
        head = core.response_head(req, 200, "OK", [], streamed=True)
        assert head == b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n"
        assert not req.chunked
        assert kinds(core.response_done(req)) == [ev.ConnectionClosed]

    def test_http10_keep_alive_is_said(self) -> None:
        core, _ = connection()
        req = received(core.receive_data(request("GET", "/", {"Connection": "keep-alive"}, version="1.0")))[0]
        assert answer(core, req).endswith(b"Connection: keep-alive\r\n\r\n")
        assert core.response_done(req) == []

    def test_the_apps_connection_header_is_replaced(self) -> None:
        core, _ = connection()
        req = received(core.receive_data(GET))[0]
        head = answer(core, req, [("Connection", "Close"), ("Content-Length", "2")])
        assert head == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        assert kinds(core.response_done(req)) == [ev.ConnectionClosed]

    def test_trailers_go_to_a_client_that_asked_for_them(self) -> None:
        core, _ = connection()
        events = core.receive_data(request("GET", "/", {"TE": "trailers"}) + GET)
        asked, did_not_ask = received(events)
        trailers = {"Checksum": "abc", "Content-Length": "5"}
        core.response_head(asked, 200, "OK", [], streamed=True)
        assert core.last_chunk(asked, trailers) == b"0\r\nChecksum: abc\r\n\r\n"
        with pytest.raises(InvalidFieldError):
            core.last_chunk(asked, [("Bad Name", "x")])
        core.response_done(asked)
        core.response_head(did_not_ask, 200, "OK", [], streamed=True)
        assert core.last_chunk(did_not_ask, trailers) == b"0\r\n\r\n"

    def test_100_continue_only_while_the_body_is_awaited(self) -> None:
        core, _ = connection()
        head = request("POST", "/upload", {"Content-Length": "3", "Expect": "100-continue"})
        req = received(core.receive_data(head))[0]
        assert req.expects_continue
        assert core.continue_response(req) == CONTINUE
        core.receive_data(b"abc")
        assert core.continue_response(req) == b""

    def test_informational_responses(self) -> None:
        core, _ = connection()
        http11, http10 = received(core.receive_data(GET + request("GET", "/", version="1.0")))
        hints = [("Link", "</style.css>; rel=preload")]
        assert core.informational(http11.environ, 103, hints) == (
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        )
        assert core.informational(http10.environ, 103, hints) == b""
        with pytest.raises(ValueError):
            core.informational(http11.environ, 100, [])
        with pytest.raises(InvalidFieldError):
            core.informational(http11.environ, 103, [("Link", "a\r\nb")])

    def test_a_response_that_cannot_be_sent_becomes_a_500_and_the_end(self) -> None:
        core, _ = connection()
        req = received(core.receive_data(GET))[0]
        data = core.server_error(req)
        assert data.startswith(b"HTTP/1.1 500 Internal Server Error\r\n") and b"Connection: close\r\n" in data
        assert kinds(core.take_events()) == [ev.ConnectionClosed]
        assert core.response_done(req, keep_alive=False) == []
        assert core.next_answer() is None


class TestPipelining:
    def test_requests_are_answered_in_the_order_they_came(self) -> None:
        core, _ = connection()
        paths = ["/one", "/two", "/three"]
        events = core.receive_data(b"".join(request("GET", path) for path in paths))
        requests = received(events)
        assert [req.environ["PATH_INFO"] for req in requests] == paths
        answered = []
        while (req := core.next_answer()) is not None:
            assert isinstance(req, H11Request)
            answer(core, req)
            core.response_done(req)
            answered.append(req.environ["PATH_INFO"])
        assert answered == paths

    def test_requests_after_connection_close_are_not_answered(self) -> None:
        core, _ = connection()
        events = core.receive_data(request("GET", "/", {"Connection": "close"}) + GET)
        # llhttp refuses data after `Connection: close`; the refusal waits behind the request...
        assert kinds(events) == [ev.H11RequestReceived, ev.H11RequestEnded, ev.H11RequestRejected]
        first = events[0].request
        assert core.next_answer() is first
        assert answer(core, first).endswith(b"Connection: close\r\n\r\n")
        # ...and is never sent: the connection ends with the answer.
        assert kinds(core.response_done(first)) == [ev.ConnectionClosed]
        assert core.next_answer() is None

    def test_reading_pauses_past_max_pipelined_requests(self) -> None:
        core, _ = connection(max_pipelined_requests=2)
        core.receive_data(GET * 3)
        assert core.should_pause_reading()
        req = core.next_answer()
        assert isinstance(req, H11Request)
        answer(core, req)
        core.response_done(req)
        assert not core.should_pause_reading()

    def test_reading_pauses_while_the_body_is_unread(self) -> None:
        core, _ = connection(body_buffer_size=8)
        req = received(core.receive_data(request("POST", "/upload", {"Content-Length": "20"}) + b"x" * 10))[0]
        assert core.should_pause_reading()
        core.body_consumed(req, 10)
        assert not core.should_pause_reading()

    def test_a_rejection_waits_behind_the_requests_before_it(self) -> None:
        core, _ = connection()
        events = core.receive_data(GET + b"NOT HTTP\r\n\r\n")
        assert kinds(events) == [ev.H11RequestReceived, ev.H11RequestEnded, ev.H11RequestRejected]
        assert events[2].request is None, "no request of the rejected one reached the shell"
        req = core.next_answer()
        assert isinstance(req, H11Request)
        answer(core, req)
        assert core.response_done(req) == []
        status, data = rejection_of(core, [events[2]])
        assert status == 400 and data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert core.next_deadline() is None


class TestRejections:
    @pytest.mark.parametrize(
        ("data", "status", "message"),
        [
            (b"GET / HTTP/1.1\r\n\r\n", 400, "without a Host header"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "more than one Host header"),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "invalid Host header value"),
            (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, "invalid Host header value"),
            (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, "max_header_size=4096"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n", 431, "max_header_size=4096"),
            (request("GET", "/", {f"X-{i}": "1" for i in range(20)}), 431, "max_header_count=20"),
            (b"\x16\x03\x01\x02\x00\r\n\r\n", 400, "Malformed request"),
            (b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "with a fragment"),
            (b"GET /a?q#b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "with a fragment"),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "HTTP/2.0 request line"),
        ],
        ids=[
            "no-host",
            "two-hosts",
            "host-with-space",
            "host-with-slash",
            "414-target",
            "431-size",
            "431-count",
            "malformed",
            "fragment",
            "fragment-after-query",
            "http2-request-line",
        ],
    )
    def test_rejected(self, data: bytes, status: int, message: str) -> None:
        core, _ = connection(max_header_size=4096, max_header_count=20)
        events = core.receive_data(data)
        rejected = events[-1]
        assert isinstance(rejected, ev.H11RequestRejected)
        assert rejected.status == status and message in rejected.message
        assert not core.reading and core.should_pause_reading()
        assert core.receive_data(GET) == [], "nothing is read after a rejection"
        answered = received(events)
        for req in answered:
            answer(core, req)
            core.response_done(req)
        got, response = rejection_of(core, [rejected])
        assert got == status
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d " % status) and b"\r\nConnection: close" in head
        assert body == rejected.message.encode() + b"\n"

    @pytest.mark.parametrize(
        ("version", "coding", "status"),
        [
            # The parser takes HTTP/1.0 as bodiless whatever this field says: the chunked body
            # would be read as the next request, one a proxy that honours the field never sent.
            ("1.0", "chunked", 400),
            ("1.1", "gzip", 400),
            ("1.1", "identity", 400),
            ("1.1", "xchunked", 400),
            ("1.1", "chunked, gzip", 400),
            ("1.1", "gzip, chunked", 501),
        ],
    )
    def test_a_body_framed_by_anything_but_chunked_never_reaches_the_app(
        self, version: str, coding: str, status: int
    ) -> None:
        core, _ = connection()
        smuggled = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
        head = f"POST / HTTP/{version}\r\nHost: a\r\nConnection: keep-alive\r\nTransfer-Encoding: {coding}\r\n\r\n"
        events = core.receive_data(head.encode() + b"0\r\n\r\n" + smuggled)
        assert kinds(events) == [ev.H11RequestRejected], "no request is handed to the app"
        assert events[0].status == status and "Transfer-Encoding" in events[0].message
        got, response = rejection_of(core, events)
        assert got == status and b"\r\nConnection: close" in response

    @pytest.mark.parametrize(
        ("framing", "message"),
        [(b"5;" + b"e" * 100, "max_chunk_head_size=64"), (b"zz\r\n", "chunk size")],
        ids=["chunk-head-too-long", "chunk-size-unreadable"],
    )
    def test_a_request_cut_off_in_its_body_is_the_one_rejected(self, framing: bytes, message: str) -> None:
        """
        The request was announced, so its handler answers (its body reader fails with the
        status), and as its body is not all in, that answer ends the connection.
        """
        core, _ = connection(max_chunk_head_size=64)
        head = request("POST", "/", {"Transfer-Encoding": "chunked"})
        req = received(core.receive_data(head + b"3\r\nabc\r\n"))[0]
        events = core.receive_data(framing)
        assert kinds(events) == [ev.H11RequestRejected]
        assert events[0].request is req and events[0].status == 400 and message in events[0].message
        assert core.next_answer() is req
        answer = core.response_head(req, 400, "Bad Request", [("Content-Length", "0")], streamed=False)
        assert answer.endswith(b"Connection: close\r\n\r\n")
        assert kinds(core.response_done(req)) == [ev.ConnectionClosed]
        assert core.next_answer() is None

    def test_http10_without_host_is_served(self) -> None:
        core, _ = connection()
        events = core.receive_data(b"GET / HTTP/1.0\r\n\r\n")
        assert kinds(events) == [ev.H11RequestReceived, ev.H11RequestEnded]

    def test_413_by_content_length_is_the_apps_and_ends_the_connection(self) -> None:
        """
        ``max_body_size`` binds bodies read whole, not ``stream_body`` routes, so the core does not
        refuse a large Content-Length: the body reader's 413 does, and as the body is not all in,
        that answer closes the connection.
        """
        core, _ = connection(max_body_size=100)
        events = core.receive_data(request("POST", "/upload", {"Content-Length": "101"}) + b"x" * 10)
        assert kinds(events) == [ev.H11RequestReceived, ev.H11RequestData]
        req = events[0].request
        assert req.expected_length == 101 > core.settings.max_body_size
        head = core.response_head(req, 413, "Request Entity Too Large", [("Content-Length", "0")], streamed=False)
        assert head.endswith(b"Connection: close\r\n\r\n")
        assert kinds(core.response_done(req)) == [ev.ConnectionClosed]

    def test_trailer_section_past_max_header_size_is_431(self) -> None:
        core, _ = connection(max_header_size=1024)
        events = core.receive_data(request("POST", "/", {"Transfer-Encoding": "chunked"}) + b"0\r\nX-T: " + b"t" * 2000)
        assert kinds(events)[-1] is ev.H11RequestRejected and events[-1].status == 431


class TestTimeouts:
    def test_first_head_is_timed_from_the_connection_opening(self) -> None:
        core, clock = connection(header_timeout=5)
        opened = clock.now
        assert core.next_deadline() == opened + 5
        clock.now += 3
        assert core.receive_data(b"GET / HTTP/1.1\r\n") == []
        assert core.next_deadline() == opened + 5
        clock.now = opened + 5 - 0.001
        assert core.handle_timeout() == []
        clock.now = opened + 5
        events = core.handle_timeout()
        assert kinds(events) == [ev.H11RequestRejected]
        status, data = rejection_of(core, events)
        assert status == 408 and b"header_timeout=5" in data

    def test_a_silent_connection_is_closed_quietly(self) -> None:
        core, clock = connection(header_timeout=5)
        clock.now += 5
        assert core.handle_timeout() == [ev.ConnectionClosed(abort=False)]
        assert core.next_answer() is None and core.next_deadline() is None

    def test_a_later_head_is_timed_from_its_first_byte(self) -> None:
        core, clock = connection(header_timeout=5, keep_alive_timeout=30)
        req = received(core.receive_data(GET))[0]
        answer(core, req)
        core.response_done(req)
        clock.now += 20
        core.receive_data(b"GET / HT")
        assert core.next_deadline() == clock.now + 5
        clock.now += 5
        assert kinds(core.handle_timeout()) == [ev.H11RequestRejected]

    def test_keep_alive_idle_timeout(self) -> None:
        core, clock = connection(header_timeout=5, keep_alive_timeout=30)
        req = received(core.receive_data(GET))[0]
        clock.now += 60  # a slow handler: no timer runs while it works
        assert core.next_deadline() is None and core.handle_timeout() == []
        answer(core, req)
        core.response_done(req)
        assert core.next_deadline() == clock.now + 30
        clock.now += 29
        assert core.handle_timeout() == []
        clock.now += 1
        assert core.handle_timeout() == [ev.ConnectionClosed(abort=False)]

    def test_a_client_that_does_not_read_is_dropped_after_send_timeout(self) -> None:
        core, clock = connection(send_timeout=2)
        received(core.receive_data(GET))
        core.pause_output()
        assert core.should_pause_reading()
        assert core.next_deadline() == clock.now + 2
        clock.now += 2
        assert core.handle_timeout() == [ev.ConnectionClosed(abort=True)]

    def test_output_resumed_in_time_is_not_dropped(self) -> None:
        core, clock = connection(send_timeout=2)
        received(core.receive_data(GET))
        core.pause_output()
        clock.now += 1
        core.resume_output()
        clock.now += 5
        assert core.next_deadline() is None and core.handle_timeout() == []


class TestChunkedBodies:
    BODY = (
        b"5;name=value\r\nhello\r\n"
        + b"1\r\n \r\n"
        + b"1A\r\n"
        + b"abcdefghijklmnopqrstuvwxyz\r\n"
        + b"0\r\nChecksum: 1\r\nX-More: 2\r\n\r\n"
    )
    EXPECTED = b"hello abcdefghijklmnopqrstuvwxyz"

    def feed(self, core: H11ServerConnection, pieces: list[bytes]) -> list[Any]:
        events: list[Any] = []
        for piece in pieces:
            events += core.receive_data(piece)
        return events

    def check(self, events: list[Any]) -> None:
        assert not any(isinstance(event, ev.H11RequestRejected) for event in events), events
        upload, after = received(events)
        assert body_received(events) == self.EXPECTED
        assert upload.ended and upload.received == len(self.EXPECTED)
        assert after.environ["PATH_INFO"] == "/after" and after.ended

    @pytest.mark.parametrize("split", range(1, len(BODY)))
    def test_split_at_every_byte(self, split: int) -> None:
        core, _ = connection()
        data = request("POST", "/upload", {"Transfer-Encoding": "chunked"}) + self.BODY + request("GET", "/after")
        start = data.index(self.BODY)
        self.check(self.feed(core, [data[: start + split], data[start + split :]]))

    def test_byte_by_byte(self) -> None:
        core, _ = connection()
        data = request("POST", "/upload", {"Transfer-Encoding": "chunked"}) + self.BODY + request("GET", "/after")
        self.check(self.feed(core, [data[i : i + 1] for i in range(len(data))]))

    @pytest.mark.parametrize("split", range(1, 70))
    def test_chunk_head_at_the_limit_is_accepted_one_byte_more_is_not(self, split: int) -> None:
        core, _ = connection(max_chunk_head_size=64)
        at_limit = b"4;" + b"e" * 60 + b"\r\n"
        assert len(at_limit) == 64
        data = request("POST", "/upload", {"Transfer-Encoding": "chunked"}) + at_limit + b"data\r\n0\r\n\r\n"
        events = self.feed(core, [data[:split], data[split:]] if split < len(data) else [data])
        assert kinds(events)[-1] is ev.H11RequestEnded and body_received(events) == b"data"

        core, _ = connection(max_chunk_head_size=64)
        too_long = b"4;" + b"e" * 61 + b"\r\n"
        data = request("POST", "/upload", {"Transfer-Encoding": "chunked"}) + too_long + b"data\r\n0\r\n\r\n"
        events = self.feed(core, [data[:split], data[split:]])
        assert kinds(events)[-1] is ev.H11RequestRejected and events[-1].status == 400

    @pytest.mark.parametrize("split", range(1, 120))
    def test_body_of_an_upgrade_request_served_as_http11(self, split: int) -> None:
        """llhttp stops at an Upgrade request's head: its Content-Length body is passed on raw."""
        data = request("POST", "/", {"Connection": "Upgrade", "Upgrade": "websocket"}, body=b"hello") + GET
        core, _ = connection()
        events = core.receive_data(data[:split]) + core.receive_data(data[split:])
        upgrade, after = received(events)
        assert body_received(events) == b"hello" and upgrade.ended and after.ended
        assert kinds(events)[-2:] == [ev.H11RequestReceived, ev.H11RequestEnded]

    def test_many_chunks_in_one_read(self) -> None:
        core, _ = connection()
        parts = [bytes([65 + i % 26]) * (i + 1) for i in range(200)]
        events = core.receive_data(request("POST", "/upload", {"Transfer-Encoding": "chunked"}) + chunked(*parts))
        assert body_received(events) == b"".join(parts) and kinds(events)[-1] is ev.H11RequestEnded


class TestHTTP2:
    UPGRADE = request("GET", "/", {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c", "HTTP2-Settings": ""})

    def test_h2c_upgrade_is_handed_over(self) -> None:
        core, _ = connection(h2c=True)
        after = H2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        events = core.receive_data(self.UPGRADE + after)
        assert kinds(events) == [ev.H2cUpgradeAccepted]
        upgrade = events[0]
        assert upgrade.response == SWITCHING_TO_H2C
        assert upgrade.data == after
        assert upgrade.environ["HTTP_UPGRADE"] == "h2c" and upgrade.environ["PATH_INFO"] == "/"
        assert core.closed and not core.reading
        assert core.next_answer() is None and core.next_deadline() is None
        assert core.receive_data(b"more") == []

    @pytest.mark.parametrize(
        "settings",
        ["!!!", "AAIAAAAC", "AAIAAA", "AAIAAAA", "AASAAAAA", "AAUAAAAA", "AAgAAAAC"],
        ids=["not-base64", "push-2", "4-bytes", "5-bytes", "window-2-31", "frame-size-0", "connect-2"],
    )
    def test_h2c_upgrade_with_bad_settings_is_served_as_http11(self, settings: str) -> None:
        # Switching would give HTTP/2 settings it cannot take (the connection used to break).
        core, _ = connection(h2c=True)
        headers = {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c", "HTTP2-Settings": settings}
        events = core.receive_data(request("GET", "/", headers))
        assert kinds(events) == [ev.H11RequestReceived, ev.H11RequestEnded]

    def test_h2c_upgrade_is_served_as_http11_when_http2_is_off(self) -> None:
        core, _ = connection(h2c=False)
        events = core.receive_data(self.UPGRADE)
        assert kinds(events) == [ev.H11RequestReceived, ev.H11RequestEnded]

    def test_h2c_upgrade_behind_another_request_is_served_as_http11(self) -> None:
        core, _ = connection(h2c=True)
        events = core.receive_data(GET + self.UPGRADE)
        assert kinds(events) == [ev.H11RequestReceived, ev.H11RequestEnded] * 2

    def test_h2c_upgrade_with_a_body_is_served_as_http11(self) -> None:
        core, _ = connection(h2c=True)
        upgrade = request(
            "POST",
            "/",
            {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c", "HTTP2-Settings": ""},
            body=b"abc",
        )
        events = core.receive_data(upgrade + GET)
        assert kinds(events) == [
            ev.H11RequestReceived,
            ev.H11RequestData,
            ev.H11RequestEnded,
            ev.H11RequestReceived,
            ev.H11RequestEnded,
        ]
        assert body_received(events) == b"abc"

    @pytest.mark.parametrize("split", [None, *range(1, len(H2_PREFACE))])
    def test_preface_is_handed_over(self, split: int | None) -> None:
        """Whole or split anywhere in its first 24 bytes: HTTP/2 gets everything from the first byte."""
        core, clock = connection(h2c=True)
        opened = clock.now
        data = H2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        if split is not None:
            assert core.receive_data(data[:split]) == []
        clock.now += 1
        # HTTP/2 must have the whole preface by the header_timeout that runs since the opening.
        deadline = opened + core.settings.header_timeout
        assert core.receive_data(data[split or 0 :]) == [ev.H2PrefaceReceived(data, deadline)]
        assert core.closed and not core.reading and core.next_deadline() is None

    def test_half_a_preface_is_an_unfinished_head(self) -> None:
        core, clock = connection(h2c=True, header_timeout=5)
        assert core.receive_data(H2_PREFACE[:8]) == []
        clock.now += 5
        assert kinds(core.handle_timeout()) == [ev.H11RequestRejected], "bytes came: 408, not a quiet close"

    def test_preface_is_malformed_http11_when_http2_is_off(self) -> None:
        core, _ = connection(h2c=False)
        events = core.receive_data(H2_PREFACE)
        assert kinds(events) == [ev.H11RequestRejected] and events[0].status == 400


class TestShutdown:
    def test_an_idle_connection_ends_at_once(self) -> None:
        core, _ = connection()
        req = received(core.receive_data(GET))[0]
        answer(core, req)
        assert core.response_done(req) == []
        assert core.start_shutdown() == [ev.ConnectionClosed(abort=False)]

    def test_a_connection_that_sent_nothing_yet_gets_the_first_bytes_grace(self) -> None:
        core, clock = connection(header_timeout=30)
        assert core.start_shutdown() == []
        assert core.next_deadline() == clock.now + FIRST_BYTES_GRACE
        clock.now += FIRST_BYTES_GRACE
        assert core.handle_timeout() == [ev.ConnectionClosed(abort=False)]

    def test_the_grace_is_no_longer_than_header_timeout(self) -> None:
        core, clock = connection(header_timeout=0.25)
        assert core.start_shutdown() == []
        assert core.next_deadline() == clock.now + 0.25

    def test_a_request_sent_in_the_grace_is_answered_with_connection_close(self) -> None:
        core, _ = connection()
        assert core.start_shutdown() == []
        req = received(core.receive_data(GET))[0]
        assert answer(core, req).endswith(b"Connection: close\r\n\r\n")
        assert kinds(core.response_done(req)) == [ev.ConnectionClosed]

    def test_a_preface_sent_in_the_grace_is_handed_over(self) -> None:
        core, _ = connection(h2c=True)
        assert core.start_shutdown() == []
        assert kinds(core.receive_data(H2_PREFACE)) == [ev.H2PrefaceReceived]

    def test_the_request_in_progress_is_answered_with_connection_close(self) -> None:
        core, _ = connection()
        req = received(core.receive_data(GET))[0]
        assert core.start_shutdown() == []
        assert answer(core, req).endswith(b"Connection: close\r\n\r\n")
        assert kinds(core.response_done(req)) == [ev.ConnectionClosed]
