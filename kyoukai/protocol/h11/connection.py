"""
The HTTP/1.1 server connection, without I/O: :class:`H11ServerConnection`.

Bytes from the client go in through :meth:`~H11ServerConnection.receive_data`, which feeds them
to httptools piece by piece (see :mod:`.framing`) and enforces the limits; what happened comes
out as events (:mod:`kyoukai.protocol.events`): request heads with their WSGI environ, body
data and ends, rejections, the way into HTTP/2, the end of the connection. The shell answers
the requests in the order :meth:`~H11ServerConnection.next_answer` gives them, writing the
bytes the core makes: :meth:`~H11ServerConnection.response_head` (the ``Connection`` header
policy and the choice of chunked framing), :func:`chunk`, :meth:`~H11ServerConnection.last_chunk`
(with trailers), the error responses, 1xx responses and ``100 Continue``. A WebSocket
handshake (``Upgrade: websocket``) is a request like any other, with its offer read
(``request.websocket``), except that nothing after its head is parsed until it is answered:
:meth:`~H11ServerConnection.accept_websocket` gives the connection to the WebSocket, an
ordinary response lets HTTP/1.1 go on. Time comes from a clock the shell gives: the header,
keep-alive and send timeouts are deadlines; :meth:`~H11ServerConnection.next_deadline` says
when to wake the core and :meth:`~H11ServerConnection.handle_timeout` is that wake-up.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import httptools

from kyoukai.protocol import events as ev
from kyoukai.protocol.core import ProtocolCore
from kyoukai.protocol.fields import HOST_OPTIONAL_VERSIONS, check_informational_status, checked_names, is_valid_host
from kyoukai.protocol.h2.validation import http2_settings_problem
from kyoukai.protocol.h11.framing import ChunkedBody, LimitExceeded, blank_line_end, last_bytes
from kyoukai.protocol.h11.request import H11Request, Rejection
from kyoukai.protocol.ws.handshake import HandshakeRejection, WebSocketOffer, check_upgrade_request
from kyoukai.settings import ServerSettings
from kyoukai.wsgi import format_head, http_date, reason_phrase, to_wsgi_environment

logger = logging.getLogger("kyoukai.http11")

#: Seconds a connection that has sent nothing yet gets, once a graceful stop begins, to send
#: its first request (see :meth:`H11ServerConnection.start_shutdown`).
FIRST_BYTES_GRACE = 1.0
#: The client connection preface of HTTP/2 (RFC 9113 section 3.4).
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
SWITCHING_TO_H2C = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
#: The versions of an HTTP/1 request line.
_HTTP1_VERSIONS = frozenset({"0.9", "1.0", "1.1"})
#: The usual request methods, decoded once.
_METHODS = {name.encode(): name for name in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}
#: Fields a trailer section must not carry (framing and connection management).
_NOT_IN_TRAILERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "content-length"}
)


def chunk(data: bytes) -> tuple[bytes, bytes, bytes]:
    """``data`` as one chunk of a chunked response body (for ``writelines``)."""
    return b"%x\r\n" % len(data), data, b"\r\n"


def _check_transfer_coding(value: str, version: str) -> None:
    """
    Only ``chunked`` frames a request body here (RFC 9112 section 6.1). A ``Transfer-Encoding``
    that does not end with it leaves the body's end to guesswork, which is how a request is
    smuggled past a proxy that guesses otherwise: 400, then close, before the app sees the
    request. So for the field in an HTTP/1.0 request, which the parser would ignore (reading a
    chunked body as the next request on a kept-alive connection). A coding before ``chunked``
    (``gzip, chunked``) frames the body but is not decoded: 501.

    :raises LimitExceeded: for any of these.
    """
    if version in HOST_OPTIONAL_VERSIONS:
        raise LimitExceeded(400, f"Transfer-Encoding in an HTTP/{version} request")
    codings = [coding.strip().lower() for coding in value.split(",")]
    if codings[-1] != "chunked":
        raise LimitExceeded(400, f"Transfer-Encoding {value[:64]!r} does not end with chunked")
    if len(codings) > 1:
        raise LimitExceeded(501, f"Transfer-Encoding {value[:64]!r}: only chunked is implemented")


class H11ServerConnection(ProtocolCore):
    """
    One HTTP/1.1 connection, server side.

    :param settings: the limits (see :class:`~kyoukai.settings.ServerSettings`).
    :param clock: the time in seconds (the shell's loop time).
    :param scheme: ``"http"`` or ``"https"``, for the environ.
    :param server: the local ``(host, port)``, for the environ.
    :param peer: the client's ``(host, port)``, for the environ and log lines.
    :param protocol: what the environ names as ``kyoukai.protocol`` (the shell).
    :param h2c: HTTP/2 may take this cleartext connection over: by its preface (prior
        knowledge) or by an ``Upgrade: h2c`` request.
    """

    # Slots: its attributes are read many times per request, and past 30 attributes an
    # instance dict no longer shares its keys, which makes every read slower.
    __slots__ = (
        "settings",
        "_max_header_size",
        "_max_header_count",
        "_max_pipelined",
        "_body_buffer_size",
        "scheme",
        "server_address",
        "peer",
        "protocol",
        "_h2c",
        "parser",
        "reading",
        "closed",
        "_queue",
        "_incoming",
        "_head_done",
        "_head_tail",
        "_chunked",
        "_raw_body",
        "_raw_left",
        "_h2c_request",
        "_upgrading",
        "_held",
        "_shutting_down",
        "_seen_bytes",
        "_prefix",
        "_host",
        "_header_deadline",
        "_idle_deadline",
    )

    def __init__(
        self,
        settings: ServerSettings,
        clock: Callable[[], float],
        *,
        scheme: str = "http",
        server: tuple[str, int] | None = None,
        peer: tuple[str, int] | None = None,
        protocol: Any = None,
        h2c: bool = False,
    ) -> None:
        self.settings = settings
        super().__init__(clock)
        # Read for every header field, or every request.
        self._max_header_size = settings.max_header_size
        self._max_header_count = settings.max_header_count
        self._max_pipelined = settings.max_pipelined_requests
        self._body_buffer_size = settings.body_buffer_size
        self.scheme = scheme
        self.server_address = server
        self.peer = peer
        self.protocol = protocol
        self._h2c = h2c
        self.parser = httptools.HttpRequestParser(self)
        #: Whether bytes from the client are still read: not after a rejection, a hand-over to
        #: HTTP/2 or the end of the connection.
        self.reading = True
        #: Whether the core is done: nothing more is read, answered or timed.
        self.closed = False
        #: Requests received and not yet answered, oldest first, maybe ending with a rejection.
        self._queue: deque[H11Request | Rejection] = deque()
        #: The request being received, from its first byte to its end.
        self._incoming: H11Request | None = None
        #: Whether the latest request head is complete: ``False`` from the connection's start
        #: until the first head is in, and from each later request's first byte.
        self._head_done = False
        #: The last bytes of an unfinished head, for a blank line split between reads.
        self._head_tail = b""
        #: The framing of the incoming chunked body, while one is being read.
        self._chunked: ChunkedBody | None = None
        #: A request whose body follows its (non-h2c) Upgrade head raw, and the bytes still due.
        self._raw_body: H11Request | None = None
        self._raw_left = 0
        #: An accepted h2c upgrade request, until the parser stops at its end.
        self._h2c_request: H11Request | None = None
        #: A WebSocket handshake being answered, and the bytes received after its head: frames
        #: if the app opens the WebSocket, the next requests if it answers otherwise.
        self._upgrading: H11Request | None = None
        self._held = bytearray()
        self._shutting_down = False
        self._seen_bytes = False
        #: The start of an HTTP/2 preface, while the first bytes are undecided.
        self._prefix = b""
        #: The last valid ``Host`` value (at first the empty one, which is valid): a client
        #: sends the same one on every request, which then needs no check again.
        self._host = b""
        self._header_deadline: float | None = clock() + settings.header_timeout
        self._idle_deadline: float | None = None

    # input

    def receive_data(self, data: bytes) -> list[Any]:
        """Feed bytes received from the client; the events they caused."""
        if not self.reading:
            return []
        if self._upgrading is not None:
            self._held += data
            return []
        if not self._seen_bytes and self._h2c:
            data = self._prefix + data
            if len(data) < len(H2_PREFACE) and H2_PREFACE.startswith(data):
                self._prefix = data
                return []
            self._prefix = b""
            if data.startswith(H2_PREFACE[:16]):
                # The HTTP/2 request line: HTTP/2 answers the rest, a broken preface included
                # (GOAWAY PROTOCOL_ERROR, RFC 9113 section 3.4).
                deadline = self._header_deadline
                self._hand_over()
                self._events.append(ev.H2PrefaceReceived(data, deadline))
                return self.take_events()
        self._seen_bytes = True
        pos, end = 0, len(data)
        while pos < end and self.reading:
            if self._raw_body is not None:
                pos = self._feed_raw_body(data, pos)
                continue
            try:
                stop = self._piece_end(data, pos)
                self.parser.feed_data(data if stop - pos == end else memoryview(data)[pos:stop])
                pos = stop
            except LimitExceeded as e:
                self._reject(e.status, e.message)
            except httptools.HttpParserUpgrade as e:
                pos += e.args[0]
                self.parser = httptools.HttpRequestParser(self)
                upgraded = self._h2c_request
                if upgraded is not None:
                    self._h2c_request = None
                    self._hand_over()
                    self._events.append(ev.H2cUpgradeAccepted(upgraded.environ, data[pos:], SWITCHING_TO_H2C))
                elif self._upgrading is not None:
                    self._held += data[pos:]
                    break
            except httptools.HttpParserCallbackError as e:
                cause = e.__context__
                if isinstance(cause, LimitExceeded):
                    self._reject(cause.status, cause.message)
                else:
                    logger.error("Internal error while parsing a request from %s.", self.peer, exc_info=cause)
                    self._reject(500, "Internal Server Error")
            except httptools.HttpParserError as e:
                self._reject(400, f"Malformed request: {e.args[0] if e.args else e}")
        self._arm()
        return self.take_events()

    def _piece_end(self, data: bytes, pos: int) -> int:
        """
        Where the next piece of ``data`` (from ``pos``) for the parser ends. llhttp takes all it
        is given and reports no offsets, so a chunked body must start a piece of its own for its
        framing to be measured: a head is fed up to its blank line, a body of known length up to
        its end, a chunked body as :class:`~.framing.ChunkedBody` says.

        :raises LimitExceeded: when a chunk head or a trailer section is past its limit.
        """
        chunked = self._chunked
        if chunked is not None:
            return chunked.piece_end(data, pos)
        req = self._incoming
        if req is None or not self._head_done:
            tail = self._head_tail
            if not tail:
                found = data.find(b"\r\n\r\n", pos)
                if found >= 0:
                    return found + 4
            stop = blank_line_end(data, pos, tail, len(data))
            if stop < 0:
                self._head_tail = last_bytes(tail, data, pos)
                return len(data)
            self._head_tail = b""
            return stop
        if req.expected_length is None:
            # The head is in, the message is not, and it has no Content-Length: a chunked body.
            self._chunked = chunked = ChunkedBody(self.settings.max_chunk_head_size, self.settings.max_header_size)
            return chunked.piece_end(data, pos)
        left = req.expected_length - req.received
        return pos + left if 0 < left < len(data) - pos else len(data)

    def _feed_raw_body(self, data: bytes, pos: int) -> int:
        """Pass on the body that follows an Upgrade request's head (llhttp stops at the head)."""
        req = self._raw_body
        assert req is not None
        piece = data[pos : pos + self._raw_left]
        self._raw_left -= len(piece)
        req.received += len(piece)
        req.unread += len(piece)
        self._events.append(ev.H11RequestData(req, piece))
        if not self._raw_left:
            self._raw_body = None
            req.ended = True
            self._events.append(ev.H11RequestEnded(req))
        return pos + len(piece)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._incoming = H11Request()
        self._head_done = False
        self._arm()

    def on_url(self, url: bytes) -> None:
        req = self._incoming
        assert req is not None
        req.url.append(url)
        req.head_size += len(url)
        if req.head_size > self._max_header_size:
            raise LimitExceeded(414, f"Request target longer than max_header_size={self._max_header_size} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self._incoming
        assert req is not None
        headers = req.headers
        size = req.head_size = req.head_size + len(name) + len(value) + 4
        if size > self._max_header_size:
            raise LimitExceeded(431, f"Request head larger than max_header_size={self._max_header_size} bytes")
        if len(headers) >= self._max_header_count:
            raise LimitExceeded(431, f"More than max_header_count={self._max_header_count} header fields")
        if value and value[-1] <= 32:
            # The parser keeps trailing whitespace (SP, HTAB: it refuses other controls); it is
            # not part of the value (RFC 9110 5.5).
            value = value.rstrip(b" \t")
        if len(name) == 4 and not self._head_done and name.lower() == b"host":
            if req.host is not None or value != self._host:
                self._check_host(req, value)
            req.host = value = self._host
        # (The name stays bytes: to_wsgi_environment takes it so, and remembers its key.)
        headers.append((name, value.decode("latin-1")))

    def _check_host(self, req: H11Request, value: bytes) -> None:
        """
        Keep the ``Host`` value without trailing whitespace as the connection's ``_host``; 400
        for a second or invalid one (RFC 9112 section 3.2).
        """
        if req.host is not None:
            raise LimitExceeded(400, "Request with more than one Host header field")
        value = value.rstrip(b" \t")
        if not is_valid_host(value):
            raise LimitExceeded(400, f"Request with an invalid Host header value {value[:100]!r}")
        self._host = value

    def on_headers_complete(self) -> None:
        req = self._incoming
        assert req is not None
        self._header_deadline = None
        parser = self.parser
        version = parser.get_http_version()
        if version not in _HTTP1_VERSIONS:
            # (The parser takes an HTTP/2.0 request line in HTTP/1 framing as one.) Answered in
            # HTTP/1.1, as the request's version is not one to answer in.
            raise LimitExceeded(505, f"HTTP/{version} request line: this connection speaks HTTP/1.x")
        req.version = version
        url = req.url
        target = url[0] if len(url) == 1 else b"".join(url)
        if b"#" in target:
            # A fragment is the client's to keep, never part of a request target (RFC 9112 3.2).
            raise LimitExceeded(400, "Request target with a fragment ('#')")
        if req.host is None and version not in HOST_OPTIONAL_VERSIONS:
            raise LimitExceeded(400, f"HTTP/{version} request without a Host header field")
        req.keep_alive = parser.should_keep_alive()
        method = parser.get_method()
        environ = req.environ = to_wsgi_environment(
            req.headers,
            _METHODS.get(method) or method.decode("ascii"),
            target.decode("latin-1"),
            version,
            scheme=self.scheme,
            server=self.server_address,
            peer=self.peer,
            protocol=self.protocol,
        )
        length = environ.get("CONTENT_LENGTH")
        if length is not None:
            req.expected_length = int(length)
        coding = environ.get("HTTP_TRANSFER_ENCODING")
        if coding is not None:
            _check_transfer_coding(coding, version)
        expect = environ.get("HTTP_EXPECT")
        if expect is not None and version == "1.1" and expect.lower() == "100-continue":
            req.expects_continue = True
        self._head_done = True
        if parser.should_upgrade():
            if self._accepts_h2c(environ):
                # Not answered here: HTTP/2 serves it once the parser stops at its end.
                self._h2c_request = req
                return
            if "websocket" in environ.get("HTTP_UPGRADE", "").lower():
                req.websocket = self._websocket_offer(req, environ)
        self._queue.append(req)
        self._events.append(ev.H11RequestReceived(req))

    def on_body(self, body: bytes) -> None:
        req = self._incoming
        assert req is not None
        data = bytes(body)
        req.received += len(data)
        req.unread += len(data)
        self._events.append(ev.H11RequestData(req, data))

    def on_message_complete(self) -> None:
        req, self._incoming = self._incoming, None
        assert req is not None
        self._chunked = None
        if req is self._h2c_request:
            req.ended = True
            return
        if self.parser.should_upgrade():
            # The parser stops at an upgrade request's head; its body (if any) is fed raw.
            if "chunked" in req.environ.get("HTTP_TRANSFER_ENCODING", "").lower():
                raise LimitExceeded(501, "A chunked body with an Upgrade request is not supported")
            if req.expected_length:
                self._raw_body, self._raw_left = req, req.expected_length
                return
            if isinstance(req.websocket, WebSocketOffer):
                self._upgrading = req
        req.ended = True
        self._events.append(ev.H11RequestEnded(req))

    # the way to HTTP/2

    def _accepts_h2c(self, environ: dict[str, Any]) -> bool:
        """Whether this request (``environ``) is an acceptable h2c upgrade."""
        if not self._h2c or self._queue:
            return False
        upgrade = {t.strip().lower() for t in environ.get("HTTP_UPGRADE", "").split(",")}
        connection = {t.strip().lower() for t in environ.get("HTTP_CONNECTION", "").split(",")}
        settings = environ.get("HTTP_HTTP2_SETTINGS")
        if "h2c" not in upgrade or not {"upgrade", "http2-settings"} <= connection or settings is None:
            return False
        if "," in settings:
            logger.info("Declined an h2c upgrade from %s: more than one HTTP2-Settings header.", self.peer)
            return False
        problem = http2_settings_problem(settings)
        if problem is not None:
            logger.info(
                "Declined an h2c upgrade from %s: HTTP2-Settings is %s; serving it as HTTP/1.1.", self.peer, problem
            )
            return False
        if environ.get("CONTENT_LENGTH", "0") != "0" or "HTTP_TRANSFER_ENCODING" in environ:
            logger.info("Declined an h2c upgrade from %s: the request has a body; serving it as HTTP/1.1.", self.peer)
            return False
        return True

    def _websocket_offer(self, req: H11Request, environ: dict[str, Any]) -> WebSocketOffer | HandshakeRejection:
        """The WebSocket handshake of ``req`` (see :func:`~kyoukai.protocol.ws.handshake.check_upgrade_request`)."""
        fields = [(name.decode("latin-1"), value) for name, value in req.headers]
        offer = check_upgrade_request(environ["REQUEST_METHOD"], fields, req.version)
        if isinstance(offer, WebSocketOffer) and (
            environ.get("CONTENT_LENGTH", "0") != "0" or "HTTP_TRANSFER_ENCODING" in environ
        ):
            # Its body would stand between the head and the frames.
            return HandshakeRejection(400, "A WebSocket handshake must not have a body.")
        return offer

    def accept_websocket(self, req: H11Request, status: int, headers: list[tuple[str, str]]) -> tuple[bytes, bytes]:
        """
        The app opens the WebSocket ``req`` asked for: the head of the response that does so
        (``status``, 101, and ``headers``), and the bytes received after the request's head,
        the first of the WebSocket's. The connection is no longer HTTP/1.1: this core reads,
        answers and times nothing more.

        :raises RuntimeError: if ``req`` is not a WebSocket handshake being answered, or the
            connection has ended.
        """
        if req is not self._upgrading or self.closed:
            raise RuntimeError("no WebSocket handshake to accept: the request did not ask for one, or it has ended")
        self._upgrading = None
        held = bytes(self._held)
        self._held.clear()
        self._queue.clear()
        self._stop()
        return format_head(status, reason_phrase(status), headers, "1.1"), held

    def _hand_over(self) -> None:
        """HTTP/2 takes the connection: this core reads, answers and times nothing more."""
        self._stop()

    # limits and rejections

    def _reject(self, status: int, message: str) -> None:
        """Stop reading; answer ``status`` after the requests before it, then close."""
        logger.info("Rejected a request from %s: %d %s.", self.peer, status, message)
        self.reading = False
        self._header_deadline = self._idle_deadline = None
        self._chunked = None
        req, self._incoming = self._incoming, None
        # The request whose body is cut is the one rejected: a handler already reading it
        # answers with the same status (its answer then replaces the queued one).
        self._events.append(ev.H11RequestRejected(status, message, req if self._head_done else None))
        self._queue.append(Rejection(status, message, req.version if req is not None else "1.1"))

    def should_pause_reading(self) -> bool:
        """
        Whether the shell should stop reading the transport: while it cannot write, while a
        WebSocket handshake is answered, while more than ``max_pipelined_requests`` wait for
        their answers, while ``body_buffer_size`` bytes of the body being received are unread by
        the app, and for good once nothing is read.
        """
        if (
            not self.reading
            or self._output_paused_since is not None
            or self._upgrading is not None
            or len(self._queue) > self._max_pipelined
        ):
            return True
        limit = self._body_buffer_size
        incoming = self._incoming
        if incoming is not None and incoming.unread >= limit:
            return True
        raw = self._raw_body
        return raw is not None and raw.unread >= limit

    def body_consumed(self, req: H11Request, size: int) -> None:
        """The app took ``size`` bytes of ``req``'s body (see :meth:`should_pause_reading`)."""
        req.unread = max(0, req.unread - size)

    # answering

    def next_answer(self) -> H11Request | Rejection | None:
        """
        What to answer next, in the order the requests came: a request (answer it, then call
        :meth:`response_done`), a :class:`~.request.Rejection` (write
        :meth:`rejection_response`; nothing follows it), or ``None``.
        """
        if self.closed or not self._queue:
            return None
        return self._queue[0]

    @property
    def requests(self) -> list[H11Request]:
        """The requests received and not yet answered, oldest first."""
        return [item for item in self._queue if isinstance(item, H11Request)]

    def response_head(
        self, req: H11Request, status: int, reason: str, headers: list[tuple[str, str]], *, streamed: bool
    ) -> bytes:
        """
        The status line and header block of ``req``'s response. The server sends its own
        ``Connection`` header (``close`` when the connection ends after this response,
        ``keep-alive`` to an HTTP/1.0 client that keeps it) in place of the app's; a
        ``streamed`` body without ``Content-Length`` is chunked on HTTP/1.1 and ends with the
        connection on HTTP/1.0. The decisions are kept in ``req.keep_alive`` and ``req.chunked``.

        :param headers: the response's fields, checked (see :func:`~kyoukai.wsgi.prepare_response`);
            the list is changed.
        :param streamed: the body is produced as it is sent (its length may be unknown).
        :raises UnicodeEncodeError: for a field that is not latin-1.
        """
        version = _response_version(req)
        # The names in one string: one scan for the fields looked for, not a call per field.
        names = "\n".join([name for name, _ in headers]).lower()
        app_closes = "connection" in names and _take_connection_header(headers)
        keep_alive = req.keep_alive and not app_closes and not self._shutting_down and not self.closed and req.ended
        chunked = False
        if streamed:
            has_length = "\ncontent-length\n" in f"\n{names}\n"
            chunked = not has_length and version == "1.1"
            if chunked:
                headers.append(("Transfer-Encoding", "chunked"))
            elif not has_length:
                keep_alive = False
        if not keep_alive:
            headers.append(("Connection", "close"))
        elif version == "1.0":
            headers.append(("Connection", "keep-alive"))
        req.keep_alive = keep_alive
        req.chunked = chunked
        return format_head(status, reason, headers, version)

    def last_chunk(self, req: H11Request, trailers: Any = None) -> bytes:
        """
        The end of a chunked response body: the last chunk, with ``trailers`` (a mapping or
        ``(name, value)`` pairs, read after the body) as its trailer section for a client that
        said ``TE: trailers``.

        :raises InvalidFieldError: for a trailer field that must not go on the wire (the head is
            out: end the connection without the last chunk, so the client sees an incomplete
            response rather than a field it must not get).
        """
        if not trailers or "trailers" not in req.environ.get("HTTP_TE", "").lower():
            return b"0\r\n\r\n"
        if hasattr(trailers, "items"):
            trailers = trailers.items()
        fields = [(name, str(value)) for name, value in trailers if name.lower() not in _NOT_IN_TRAILERS]
        checked_names(fields, "trailer")
        return b"0\r\n" + "".join([f"{name}: {value}\r\n" for name, value in fields]).encode("latin-1") + b"\r\n"

    def response_done(self, req: H11Request, keep_alive: bool = True) -> list[Any]:
        """
        The response to ``req`` is written (``keep_alive=False``: the shell cut it short or
        could not send it): the next answer may go. The events that caused:
        :class:`~.events.ConnectionClosed` when the connection ends here.
        """
        queue = self._queue
        if queue and queue[0] is req:
            queue.popleft()
        req.unread = 0
        if not (keep_alive and req.keep_alive):
            self._end(abort=False)
        elif not queue and self._shutting_down and self._incoming is None:
            self._end(abort=False)
        else:
            self._arm()
        if req is self._upgrading:
            # The WebSocket was refused: what followed its handshake is parsed as HTTP/1.1.
            self._upgrading = None
            held = bytes(self._held)
            self._held.clear()
            if held and self.reading:
                events = self.take_events()
                return events + self.receive_data(held)
        return self.take_events()

    def rejection_response(self, rejection: Rejection) -> bytes:
        """
        The answer to a rejected request. The connection ends after it: write it, then act on
        the :class:`~.events.ConnectionClosed` that :meth:`take_events` gives.
        """
        return self._final_error(rejection.status, rejection.message, rejection.version)

    def server_error(self, req: H11Request) -> bytes:
        """A ``500`` in place of a response to ``req`` that cannot be sent; the connection ends after it, as above."""
        return self._final_error(500, "Internal Server Error", _response_version(req))

    def _final_error(self, status: int, message: str, version: str) -> bytes:
        body = (message + "\n").encode("utf-8")
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Date", http_date()),
            ("Connection", "close"),
        ]
        self._end(abort=False)
        return format_head(status, reason_phrase(status), headers, version) + body

    def informational(self, environ: dict[str, Any], status: int, headers: list[tuple[str, str]]) -> bytes:
        """
        A 1xx response (e.g. 103 Early Hints) to the request of ``environ`` before its final
        one; ``b""`` for an HTTP/1.0 client, which knows no 1xx.

        :raises ValueError: for a status the app may not send (see
            :func:`~kyoukai.protocol.fields.check_informational_status`).
        :raises InvalidFieldError: when a header name is not a token or a value holds CR, LF or NUL.
        """
        check_informational_status(status)
        fields = [(name, str(value)) for name, value in headers]
        checked_names(fields, "informational response")
        if environ.get("SERVER_PROTOCOL") != "HTTP/1.1":
            return b""
        return format_head(status, reason_phrase(status), fields, "1.1")

    def continue_response(self, req: H11Request) -> bytes:
        """
        ``100 Continue`` for a request whose client waits for it (``req.expects_continue``),
        once the app starts reading the body; ``b""`` if the body came anyway.
        """
        return b"" if req.ended or self.closed else CONTINUE

    # ending

    @property
    def shutting_down(self) -> bool:
        """Whether :meth:`start_shutdown` was called."""
        return self._shutting_down

    def start_shutdown(self) -> list[Any]:
        """
        Graceful shutdown: the requests received are answered, the last with
        ``Connection: close``; an idle connection ends at once, but for one that has sent
        nothing yet. That one was accepted a moment ago, and its first request (or HTTP/2
        preface) may be in the socket already: closing it would reset the connection under it,
        and an HTTP/2 client could not tell whether its requests were processed. It gets
        :data:`FIRST_BYTES_GRACE` seconds (``header_timeout`` if shorter) to send them. The events
        that caused.
        """
        self._shutting_down = True
        if not self._queue and self._incoming is None:
            if self._seen_bytes or not self.reading:
                self._end(abort=False)
            else:
                grace = self.clock() + FIRST_BYTES_GRACE
                if self._header_deadline is None or grace < self._header_deadline:
                    self._header_deadline = grace
        return self.take_events()

    def close(self) -> list[Any]:
        """End the connection now (the shell gave up on it); the events that caused."""
        self._end(abort=False)
        return self.take_events()

    def connection_lost(self) -> None:
        """The transport is gone."""
        self._stop()

    def _end(self, abort: bool) -> None:
        """The core ends the connection: the shell closes it (or drops it, with ``abort``)."""
        if not self.closed:
            self._stop()
            self._events.append(ev.ConnectionClosed(abort))

    def _stop(self) -> None:
        self.reading = False
        self.closed = True
        self._header_deadline = self._idle_deadline = self._output_paused_since = None

    # time

    def _arm(self) -> None:
        """
        The header deadline while a head is awaited (the first one from the moment the
        connection opens, later ones from their first byte), the keep-alive deadline while
        idle between requests.
        """
        if not self.reading:
            return
        if not self._head_done:
            if self._header_deadline is None:
                self._header_deadline = self.clock() + self.settings.header_timeout
            self._idle_deadline = None
        elif self._incoming is None and not self._queue and self._raw_body is None:
            self._idle_deadline = self.clock() + self.settings.keep_alive_timeout
        else:
            self._idle_deadline = None

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timeout` must run next (``None``: nothing is timed)."""
        if self.closed:
            return None
        deadline = self._header_deadline if self._header_deadline is not None else self._idle_deadline
        paused = self._output_paused_since
        if paused is not None:
            paused += self.settings.send_timeout
            if deadline is None or paused < deadline:
                deadline = paused
        return deadline

    def handle_timeout(self) -> list[Any]:
        """Act on the deadline that has passed, if any; the events that caused."""
        if self.closed:
            return []
        now = self.clock()
        settings = self.settings
        paused = self._output_paused_since
        if paused is not None and now >= paused + settings.send_timeout:
            logger.info(
                "Dropped the connection from %s: it read nothing for send_timeout=%ss.",
                self.peer,
                settings.send_timeout,
            )
            self._end(abort=True)
        elif self._header_deadline is not None and now >= self._header_deadline:
            self._header_deadline = None
            if not self._seen_bytes and not self._prefix:
                # Nothing was sent (a browser's preconnected socket, say): a 408 would be read as
                # the answer to the request the client sends next, so the connection just closes.
                logger.debug(
                    "Closing the connection from %s: nothing received within header_timeout=%ss.",
                    self.peer,
                    settings.header_timeout,
                )
                self._end(abort=False)
            else:
                self._reject(408, f"Request head not received within header_timeout={settings.header_timeout}s")
        elif self._idle_deadline is not None and now >= self._idle_deadline:
            logger.debug(
                "Closing the idle connection from %s (keep_alive_timeout=%ss).", self.peer, settings.keep_alive_timeout
            )
            self._end(abort=False)
        return self.take_events()


def _response_version(req: H11Request) -> str:
    """The HTTP version of the response to ``req``: its own if 1.0 or 1.1, else 1.1."""
    return req.version if req.version in ("1.0", "1.1") else "1.1"


def _take_connection_header(headers: list[tuple[str, str]]) -> bool:
    """Remove the app's ``Connection`` headers (the server sends its own); whether one said ``close``."""
    close = False
    for i in range(len(headers) - 1, -1, -1):
        name, value = headers[i]
        if name.lower() == "connection":
            close = close or "close" in value.lower()
            del headers[i]
    return close
