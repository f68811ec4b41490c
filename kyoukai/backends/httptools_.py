"""
HTTP/1.1 on httptools, and the way into HTTP/2 on a shared port.

One :class:`KyoukaiProtocol` serves one connection. Bytes go through the httptools parser;
each request head becomes a WSGI environ with a :class:`~.RequestBody` as ``wsgi.input`` and
joins a queue. A single task per connection answers the queue in order (so pipelined requests
are answered in the order they came), while the parser keeps filling the bodies. When
``http2`` is on, a connection that negotiated ``h2`` by ALPN, starts with the HTTP/2 preface,
or asks for ``Upgrade: h2c`` is handed to an HTTP/2 protocol object.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools
from werkzeug.exceptions import BadRequest, InternalServerError, default_exceptions

from kyoukai.backends.transport import abort_transport, close_transport, transport_ends
from kyoukai.body import RequestBody
from kyoukai.protocol.fields import InvalidFieldError, check_informational_status, checked_names
from kyoukai.tls import negotiated_protocol
from kyoukai.wsgi import format_head, http_date, prepare_response, reason_phrase, to_wsgi_environment

if TYPE_CHECKING:
    from asphalt.core import Context

    from kyoukai.asphalt import KyoukaiComponent

logger = logging.getLogger("kyoukai.http11")

PROTOCOL_CLASS = "KyoukaiProtocol"

#: The client connection preface of HTTP/2 (RFC 9113 section 3.4).
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: Fields a trailer section must not carry (framing and connection management).
_NOT_IN_TRAILERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "content-length"}
)
_SWITCHING_TO_H2C = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
#: Versions whose requests may come without ``Host`` (RFC 9112 section 3.2 requires it of 1.1).
_HOST_OPTIONAL = frozenset({"0.9", "1.0"})
#: A ``Host`` value: a name, IPv4 address or bracketed IP literal, then an optional port (RFC
#: 3986 section 3.2.2), or empty. No whitespace, controls, commas (two values joined) or
#: delimiters such as ``/`` and ``@``.
_valid_host = re.compile(rb"(?:\[[0-9A-Za-z:._~%!$&'()*+;=-]+\]|[0-9A-Za-z._~%!$&'()*+;=-]*)(?::[0-9]*)?").fullmatch


class _LimitExceeded(Exception):
    """Raised from a parser callback to stop parsing a request that broke a limit."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Request:
    """One request: its head as parsed so far, then its environ and body."""

    __slots__ = ("url", "headers", "head_size", "host", "environ", "body", "keep_alive", "version", "h2c_settings")

    def __init__(self) -> None:
        self.url: list[bytes] = []
        self.headers: list[tuple[str, str]] = []
        self.head_size = 0
        self.host: bytes | None = None
        self.environ: dict[str, Any] | None = None
        self.body: RequestBody | None = None
        self.keep_alive = True
        self.version = "1.1"
        self.h2c_settings: str | None = None


class _Rejection:
    """An error answer queued behind the requests before it; the connection closes after it."""

    __slots__ = ("status", "message", "version")

    def __init__(self, status: int, message: str, version: str) -> None:
        self.status = status
        self.message = message
        self.version = version


class _ChunkedBody:
    """
    The framing of one chunked request body, scanned ahead of the parser: each chunk head (the
    size line) is measured up to its LF, each chunk's data is skipped in one step, and the
    parser is fed what was scanned in one call. Chunk heads and the trailer section are
    measured exactly, with no work per byte of chunk data. This only measures: llhttp still
    validates every byte, and a size line this cannot read is left to llhttp to reject.

    :param max_head: ``max_chunk_head_size``: the longest chunk head, its CRLF included.
    :param max_trailer: ``max_header_size``: the largest trailer section.
    """

    __slots__ = ("max_head", "max_trailer", "state", "head", "left", "tail")

    def __init__(self, max_head: int, max_trailer: int) -> None:
        self.max_head = max_head
        self.max_trailer = max_trailer
        #: ``"head"``, ``"data"`` (chunk data and its CRLF), ``"trailer"``, ``"unreadable"`` (a
        #: size line this could not read, handed to llhttp to reject) or ``"done"``.
        self.state = "head"
        #: The start of a chunk head that the end of a read cut.
        self.head = bytearray()
        #: In ``"data"``: bytes still to come; in ``"trailer"``: room left in the section.
        self.left = 0
        #: In ``"trailer"``: the last bytes before the next read, for a blank line split by it.
        self.tail = b""

    def piece_end(self, data: bytes, pos: int) -> int:
        """
        How far from ``pos`` the parser may be fed: through every chunk whose head has been
        measured, up to the end of the body or of ``data``.

        :raises _LimitExceeded: when a chunk head or the trailer section is past its limit.
        """
        end = len(data)
        if self.state == "data":
            if end - pos < self.left:
                self.left -= end - pos
                return end
            pos += self.left
            self.state = "head"
        if self.state == "head":
            head, max_head = self.head, self.max_head
            while pos < end:
                room = max_head - len(head)
                lf = data.find(b"\n", pos, pos + room)
                if lf < 0:
                    if end - pos >= room:
                        raise _LimitExceeded(400, f"Chunk head longer than max_chunk_head_size={max_head} bytes")
                    head += data[pos:]
                    return end
                if head:
                    head += data[pos : lf + 1]
                    size = _chunk_size(head, 0, len(head) - 1)
                    head.clear()
                else:
                    size = _chunk_size(data, pos, lf)
                pos = lf + 1
                if size is None:
                    # llhttp will reject this line; if it does not, the next call does.
                    self.state = "unreadable"
                    return pos
                if not size:
                    # The CRLF of the last chunk's line starts the search for the blank line.
                    self.state, self.left, self.tail = "trailer", self.max_trailer, b"\r\n"
                    break
                left = size + 2  # the data and its CRLF
                if end - pos < left:
                    self.state, self.left = "data", left - (end - pos)
                    return end
                pos += left
        if pos == end:
            return end
        if self.state == "trailer":
            stop = _blank_line_end(data, pos, self.tail, pos + self.left)
            if stop >= 0:
                self.state = "done"
                return stop
            if end - pos >= self.left:
                raise _LimitExceeded(431, f"Trailer section larger than max_header_size={self.max_trailer} bytes")
            self.left -= end - pos
            self.tail = _last_bytes(self.tail, data, pos)
            return end
        if self.state == "unreadable":
            raise _LimitExceeded(400, "Unreadable chunk size line")
        # "done", yet llhttp has not ended the message: it has the last word on the rest.
        return end


def _chunk_size(line: bytes | bytearray, start: int, lf: int) -> int | None:
    """
    The size the chunk head ``line[start:lf + 1]`` (``HEXDIG+ [; extensions] CRLF``) announces,
    or ``None``. ``int()`` is more lenient than the grammar (signs, spaces, ``_``), but a line
    it reads differently is one llhttp rejects, and the piece fed to llhttp includes it.
    """
    try:
        size = int(line[start : lf - 1], 16)  # no extensions: the common case
    except ValueError:
        semi = line.find(b";", start, lf)
        try:
            size = int(line[start:semi], 16) if semi > start else -1
        except ValueError:
            return None
    return size if size >= 0 else None


def _blank_line_end(data: bytes, pos: int, tail: bytes, limit: int) -> int:
    """
    The index just past the first CRLF CRLF in ``data[pos:limit]``, or in one that begins in
    ``tail`` (the bytes just before ``pos``); -1 if there is none.
    """
    if tail:
        found = (tail + data[pos : pos + 3]).find(b"\r\n\r\n")
        if found >= 0:
            return pos + found + 4 - len(tail)
    found = data.find(b"\r\n\r\n", pos, limit)
    return found + 4 if found >= 0 else -1


def _last_bytes(tail: bytes, data: bytes, pos: int) -> bytes:
    """The last three bytes of ``tail + data[pos:]``: enough to hold the start of a CRLF CRLF."""
    return data[-3:] if len(data) - pos >= 3 else (tail + data[pos:])[-3:]


class KyoukaiProtocol(asyncio.Protocol):
    """
    Serves one HTTP/1.1 connection.

    :param component: the component that accepted the connection.
    :param parent_context: the parent of the request contexts.
    """

    def __init__(self, component: KyoukaiComponent, parent_context: Context) -> None:
        self.component = component
        self.app = component.app
        self.parent_context = parent_context
        self.settings = component.settings
        self.metrics = component.metrics
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.scheme = "http"
        self.server_address: tuple[str, int] | None = None
        self.peer: tuple[str, int] | None = None
        self._incoming: _Request | None = None
        #: Whether the latest request head is complete: ``False`` from the connection's start
        #: until the first head is in, and from each later request's first byte.
        self._head_done = False
        #: The framing of the incoming chunked body, while one is being read.
        self._chunked: _ChunkedBody | None = None
        #: The last bytes of an unfinished head, for a blank line split between reads.
        self._head_tail = b""
        self._queue: deque[_Request | _Rejection] = deque()
        self._task: asyncio.Task | None = None
        self._raw_body: tuple[_Request, int] | None = None
        self._failed = False
        self._closing = False
        self._shutting_down = False
        self._handed_over = False
        self._write_paused = False
        self._reading_paused = False
        self._drain_waiter: asyncio.Future | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_kind: str | None = None
        self._seen_bytes = False
        self._prefix = b""

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.scheme, self.server_address, self.peer = transport_ends(transport)
        if self.component.http2 and negotiated_protocol(transport) == "h2":
            self._hand_over_to_h2(b"", register=True)
            return
        self.component.connection_opened(self)
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        if self._failed or self._handed_over:
            return
        self.metrics.bytes_in += len(data)
        if not self._seen_bytes and self._prefers_preface_check():
            data = self._prefix + data
            if len(data) < len(H2_PREFACE) and H2_PREFACE.startswith(data):
                self._prefix = data
                return
            self._prefix = b""
            if data.startswith(H2_PREFACE[:16]):
                # The HTTP/2 request line: HTTP/2 answers the rest, a broken preface included
                # (GOAWAY PROTOCOL_ERROR, RFC 9113 section 3.4).
                self._hand_over_to_h2(data)
                return
        self._seen_bytes = True
        pos, end = 0, len(data)
        while pos < end and not self._failed:
            if self._raw_body is not None:
                data = self._feed_raw_body(data[pos:])
                pos, end = 0, len(data)
                continue
            try:
                stop = self._piece_end(data, pos)
                self.parser.feed_data(data if stop - pos == end else memoryview(data)[pos:stop])
                pos = stop
            except _LimitExceeded as e:
                self._reject(e.status, e.message)
                return
            except httptools.HttpParserUpgrade as e:
                data = data[pos + e.args[0] :]
                pos, end = 0, len(data)
                self.parser = httptools.HttpRequestParser(self)
                upgraded = self._queue[-1] if self._queue else None
                if isinstance(upgraded, _Request) and upgraded.h2c_settings is not None:
                    self._queue.pop()
                    self._upgrade_to_h2c(upgraded, data)
                    return
            except httptools.HttpParserCallbackError as e:
                cause = e.__context__
                if isinstance(cause, _LimitExceeded):
                    self._reject(cause.status, cause.message)
                else:
                    logger.error("Internal error while parsing a request from %s.", self.peer, exc_info=cause)
                    self._reject(500, "Internal Server Error")
                return
            except httptools.HttpParserError as e:
                self._reject(400, f"Malformed request: {e.args[0] if e.args else e}")
                return
        self._arm_timer()

    def eof_received(self) -> bool:
        # A client that closed its side is gone as far as we can tell (a fully closed socket
        # looks the same, and asyncio closes TLS transports on EOF anyway): closing the
        # transport makes connection_lost cancel the request in progress.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handed_over:
            return
        self._cancel_timer()
        if self._task is not None:
            self._task.cancel()
        for item in self._queue:
            if isinstance(item, _Request) and item.body is not None:
                item.body.abort()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(ConnectionResetError("the client closed the connection"))
        self.component.connection_closed(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._update_reading()

    # lifecycle used by the component

    def shutdown(self) -> None:
        """Finish the request in progress, then close; close at once if idle."""
        self._shutting_down = True
        if self._task is None and self._incoming is None and self.transport is not None:
            close_transport(self.transport, self.loop, self.settings.send_timeout)

    def abort(self) -> None:
        """Drop the connection now (with a TCP reset)."""
        if self.transport is not None:
            abort_transport(self.transport)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._incoming = _Request()
        self._head_done = False
        self._arm_timer()

    def on_url(self, url: bytes) -> None:
        req = self._incoming
        req.url.append(url)
        req.head_size += len(url)
        if req.head_size > self.settings.max_header_size:
            raise _LimitExceeded(
                414, f"Request target longer than max_header_size={self.settings.max_header_size} bytes"
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self._incoming
        req.head_size += len(name) + len(value) + 4
        if req.head_size > self.settings.max_header_size:
            raise _LimitExceeded(431, f"Request head larger than max_header_size={self.settings.max_header_size} bytes")
        if len(req.headers) >= self.settings.max_header_count:
            raise _LimitExceeded(431, f"More than max_header_count={self.settings.max_header_count} header fields")
        if len(name) == 4 and name.lower() == b"host" and not self._head_done:
            value = self._checked_host(req, value)
        req.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    @staticmethod
    def _checked_host(req: _Request, value: bytes) -> bytes:
        """The ``Host`` value without trailing whitespace; 400 for a second or invalid one (RFC 9112 3.2)."""
        if req.host is not None:
            raise _LimitExceeded(400, "Request with more than one Host header field")
        value = value.rstrip(b" \t")
        if not _valid_host(value):
            raise _LimitExceeded(400, f"Request with an invalid Host header value {value[:100]!r}")
        req.host = value
        return value

    def on_headers_complete(self) -> None:
        req = self._incoming
        self._head_done = True
        parser = self.parser
        req.version = parser.get_http_version()
        if req.host is None and req.version not in _HOST_OPTIONAL:
            raise _LimitExceeded(400, f"HTTP/{req.version} request without a Host header field")
        req.keep_alive = parser.should_keep_alive()
        method = parser.get_method().decode("ascii")
        target = b"".join(req.url).decode("latin-1")
        body = RequestBody(
            max_size=self.settings.max_body_size, on_consumed=self._body_consumed, timeout=self.settings.body_timeout
        )
        environ = to_wsgi_environment(
            req.headers,
            method,
            target,
            req.version,
            body,
            scheme=self.scheme,
            server=self.server_address,
            peer=self.peer,
            protocol=self,
        )
        length = environ.get("CONTENT_LENGTH")
        if length is not None:
            body.expected_length = int(length)
        if req.version == "1.1" and environ.get("HTTP_EXPECT", "").lower() == "100-continue":
            body._on_first_read = lambda: self._send_continue(body)
        req.environ, req.body = environ, body
        if parser.should_upgrade():
            req.h2c_settings = self._h2c_settings(environ)
        self._queue.append(req)
        self._arm_timer()
        self._update_reading()
        if req.h2c_settings is None:
            self._start_queue()

    def on_body(self, body: bytes) -> None:
        self._incoming.body.feed(bytes(body))
        self._update_reading()

    def on_message_complete(self) -> None:
        req, self._incoming = self._incoming, None
        self._chunked = None
        if self.parser.should_upgrade() and req.h2c_settings is None:
            # The parser stops at an upgrade request's head; its body (if any) is fed raw.
            if "chunked" in req.environ.get("HTTP_TRANSFER_ENCODING", "").lower():
                raise _LimitExceeded(501, "A chunked body with an Upgrade request is not supported")
            remaining = req.body.expected_length or 0
            if remaining:
                self._raw_body = (req, remaining)
                return
        req.body.feed_eof()

    # the way to HTTP/2

    def _prefers_preface_check(self) -> bool:
        return self.component.http2 and self.scheme == "http"

    def _h2c_settings(self, environ: dict[str, Any]) -> str | None:
        """The ``HTTP2-Settings`` value if this request is an acceptable h2c upgrade."""
        if not self.component.http2 or self.scheme != "http" or len(self._queue) > 0:
            return None
        upgrade = {t.strip().lower() for t in environ.get("HTTP_UPGRADE", "").split(",")}
        connection = {t.strip().lower() for t in environ.get("HTTP_CONNECTION", "").split(",")}
        settings = environ.get("HTTP_HTTP2_SETTINGS")
        if "h2c" not in upgrade or not {"upgrade", "http2-settings"} <= connection or settings is None:
            return None
        if "," in settings:
            logger.info("Declined an h2c upgrade from %s: more than one HTTP2-Settings header.", self.peer)
            return None
        if environ.get("CONTENT_LENGTH", "0") != "0" or "HTTP_TRANSFER_ENCODING" in environ:
            logger.info("Declined an h2c upgrade from %s: the request has a body; serving it as HTTP/1.1.", self.peer)
            return None
        return settings

    def _upgrade_to_h2c(self, req: _Request, rest: bytes) -> None:
        self.transport.write(_SWITCHING_TO_H2C)
        self._hand_over_to_h2(rest, upgrade=req.environ)

    def _hand_over_to_h2(self, data: bytes, *, upgrade: dict[str, Any] | None = None, register: bool = False) -> None:
        from kyoukai.backends.http2 import H2KyoukaiProtocol

        self._cancel_timer()
        self._handed_over = True
        protocol = H2KyoukaiProtocol(self.component, self.parent_context)
        self.transport.set_protocol(protocol)
        if register:
            protocol.connection_made(self.transport)
        else:
            self.component.connection_handed_over(self, protocol)
            protocol.adopt(self.transport, data, upgrade=upgrade)
        if self._write_paused:
            protocol.pause_writing()

    # reading, timers and limits

    def _piece_end(self, data: bytes, pos: int) -> int:
        """
        Where the next piece of ``data`` (from ``pos``) for the parser ends. llhttp takes all it
        is given and reports no offsets, so a chunked body must start a piece of its own for its
        framing to be measured: a head is fed up to its blank line, a body of known length up to
        its end, a chunked body as :class:`_ChunkedBody` says.

        :raises _LimitExceeded: when a chunk head or a trailer section is past its limit.
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
            stop = _blank_line_end(data, pos, tail, len(data))
            if stop < 0:
                self._head_tail = _last_bytes(tail, data, pos)
                return len(data)
            self._head_tail = b""
            return stop
        body = req.body
        if body.expected_length is None:
            # The head is in, the message is not, and it has no Content-Length: a chunked body.
            self._chunked = chunked = _ChunkedBody(self.settings.max_chunk_head_size, self.settings.max_header_size)
            return chunked.piece_end(data, pos)
        left = body.expected_length - body.received
        return pos + left if 0 < left < len(data) - pos else len(data)

    def _feed_raw_body(self, data: bytes) -> bytes:
        req, remaining = self._raw_body
        chunk = data[:remaining]
        req.body.feed(chunk)
        remaining -= len(chunk)
        if remaining:
            self._raw_body = (req, remaining)
        else:
            self._raw_body = None
            req.body.feed_eof()
        self._update_reading()
        return data[len(chunk) :]

    def _body_consumed(self, size: int) -> None:
        if self._reading_paused:
            self._update_reading()

    def _update_reading(self) -> None:
        if self.transport is None or self._handed_over or self._failed:
            return
        incoming = self._incoming
        pause = (
            self._write_paused
            or len(self._queue) > self.settings.max_pipelined_requests
            or (
                incoming is not None
                and incoming.body is not None
                and incoming.body.buffered >= self.settings.body_buffer_size
            )
        )
        if self._raw_body is not None:
            pause = pause or self._raw_body[0].body.buffered >= self.settings.body_buffer_size
        if pause != self._reading_paused:
            self._reading_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _arm_timer(self) -> None:
        """
        Run the header timer while a head is awaited (the first one from the moment the
        connection opens, later ones from their first byte), the idle timer between requests.
        """
        if not self._head_done:
            if self._timer_kind != "header":
                self._set_timer("header", self.settings.header_timeout, self._on_header_timeout)
        elif self._incoming is None and not self._queue and self._task is None and self._raw_body is None:
            self._set_timer("idle", self.settings.keep_alive_timeout, self._on_idle_timeout)
        else:
            self._cancel_timer()

    def _set_timer(self, kind: str, delay: float, callback: Any) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(delay, callback)
        self._timer_kind = kind

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_kind = None

    def _on_idle_timeout(self) -> None:
        self._timer = self._timer_kind = None
        logger.debug(
            "Closing the idle connection from %s (keep_alive_timeout=%ss).", self.peer, self.settings.keep_alive_timeout
        )
        close_transport(self.transport, self.loop, self.settings.send_timeout)

    def _on_header_timeout(self) -> None:
        self._timer = self._timer_kind = None
        if not self._seen_bytes and not self._prefix:
            # Nothing was sent (a browser's preconnected socket, say): a 408 would be read as the
            # answer to the request the client sends next, so the connection just closes.
            logger.debug(
                "Closing the connection from %s: nothing received within header_timeout=%ss.",
                self.peer,
                self.settings.header_timeout,
            )
            close_transport(self.transport, self.loop, self.settings.send_timeout)
            return
        self._reject(408, f"Request head not received within header_timeout={self.settings.header_timeout}s")

    def _reject(self, status: int, message: str) -> None:
        """Stop reading; answer ``status`` after the requests before it, then close."""
        logger.info("Rejected a request from %s: %d %s.", self.peer, status, message)
        self._failed = True
        self._cancel_timer()
        self._chunked = None
        if self._incoming is not None and self._incoming.body is not None:
            # The request whose body is cut is the one rejected: a handler already reading it
            # answers with the same status (its answer then replaces the queued one).
            self._incoming.body.abort(default_exceptions.get(status, BadRequest)(description=message))
        version = self._incoming.version if self._incoming is not None else "1.1"
        self._incoming = None
        if not self.transport.is_closing():
            self.transport.pause_reading()
        self._queue.append(_Rejection(status, message, version))
        self._start_queue()

    # answering

    def _start_queue(self) -> None:
        if self._task is None and self._queue:
            self._cancel_timer()
            self._task = self.loop.create_task(self._answer_queue())

    async def _answer_queue(self) -> None:
        try:
            while self._queue:
                item = self._queue[0]
                if isinstance(item, _Rejection):
                    self._write_rejection(item)
                    return
                keep_alive = await self._answer(item)
                self._queue.popleft()
                item.body.release()
                # Cut werkzeug's request <-> environ cycle so the request is freed now.
                item.environ.pop("werkzeug.request", None)
                if not keep_alive:
                    self._closing = True
                    close_transport(self.transport, self.loop, self.settings.send_timeout)
                    return
                self._update_reading()
        except (ConnectionError, asyncio.CancelledError):
            return
        except Exception:
            logger.exception("Answering a request from %s failed; closing the connection.", self.peer)
            self._closing = True
            close_transport(self.transport, self.loop, self.settings.send_timeout)
        finally:
            self._task = None
            if (
                not self._closing
                and not self._failed
                and self.transport is not None
                and not self.transport.is_closing()
            ):
                if self._shutting_down and self._incoming is None:
                    close_transport(self.transport, self.loop, self.settings.send_timeout)
                else:
                    self._arm_timer()

    async def _answer(self, req: _Request) -> bool:
        """Run the app for ``req`` and write its response; whether to keep the connection."""
        environ = req.environ
        try:
            request = self.app.request_class(environ)
            response = await self.app.process_request(request, self.parent_context)
        except Exception:
            logger.exception(
                "Processing %s %s failed outside the route.", environ["REQUEST_METHOD"], environ["PATH_INFO"]
            )
            response = InternalServerError().get_response(environ)
        version = req.version if req.version in ("1.0", "1.1") else "1.1"
        try:
            parts = prepare_response(response, environ)
        except InvalidFieldError as e:
            logger.error(
                "The response to %s %s was not sent: %s; sending 500 instead.",
                environ["REQUEST_METHOD"],
                environ["PATH_INFO"],
                e,
            )
            self._write_rejection(_Rejection(500, "Internal Server Error", version))
            return False
        headers = parts.headers
        app_closes = self._take_connection_header(headers)
        keep_alive = (
            req.keep_alive and not app_closes and not self._shutting_down and not self._closing and req.body.complete
        )
        chunked = False
        if parts.body is None:
            has_length = any(name.lower() == "content-length" for name, _ in headers)
            chunked = not has_length and version == "1.1"
            if chunked:
                headers.append(("Transfer-Encoding", "chunked"))
            elif not has_length:
                keep_alive = False
        self._add_connection_header(headers, keep_alive, version)
        try:
            head = format_head(parts.status, parts.reason, headers, version)
        except UnicodeEncodeError:
            logger.exception(
                "The response to %s %s has a header that is not latin-1; sending 500 instead.",
                environ["REQUEST_METHOD"],
                environ["PATH_INFO"],
            )
            if parts.stream is not None:
                await parts.stream.aclose()
            self._write_rejection(_Rejection(500, "Internal Server Error", version))
            return False
        if self.transport.is_closing():
            # The client went away while the app worked: nothing to write to.
            if parts.stream is not None:
                await parts.stream.aclose()
            return False
        metrics = self.metrics
        metrics.requests += 1
        if parts.body is not None:
            if len(parts.body) < 65536:
                self.transport.write(head + parts.body)
            else:
                self.transport.writelines((head, parts.body))
            metrics.bytes_out += len(head) + len(parts.body)
            if self._write_paused:
                await self._drain()
            return keep_alive
        self.transport.write(head)
        metrics.bytes_out += len(head)
        try:
            async for chunk in parts.stream:
                if chunked:
                    self.transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    self.transport.write(chunk)
                metrics.bytes_out += len(chunk)
                if self._write_paused:
                    await self._drain()
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            logger.exception(
                "The streaming body of %s %s failed; closing the connection.",
                environ["REQUEST_METHOD"],
                environ["PATH_INFO"],
            )
            return False
        finally:
            # Run the app's clean-up now, not whenever the generator is garbage collected.
            await parts.stream.aclose()
        if chunked:
            try:
                trailer_block = self._trailer_block(response, environ)
            except InvalidFieldError as e:
                # The head is out: end the connection without the last chunk, so the client
                # sees an incomplete response rather than a field it must not get.
                logger.error(
                    "The trailers of %s %s were not sent: %s; closing the connection.",
                    environ["REQUEST_METHOD"],
                    environ["PATH_INFO"],
                    e,
                )
                self._closing = True
                close_transport(self.transport, self.loop, self.settings.send_timeout)
                return False
            self.transport.write(b"0\r\n" + trailer_block + b"\r\n")
        return keep_alive

    @staticmethod
    def _trailer_block(response: Any, environ: dict[str, Any]) -> bytes:
        """
        The response's ``trailers`` (read after the body) as the chunked trailer section, for a
        client that said ``TE: trailers``; nothing otherwise.
        """
        trailers = getattr(response, "trailers", None)
        if not trailers or "trailers" not in environ.get("HTTP_TE", "").lower():
            return b""
        if hasattr(trailers, "items"):
            trailers = trailers.items()
        fields = [(name, str(value)) for name, value in trailers if name.lower() not in _NOT_IN_TRAILERS]
        checked_names(fields, "trailer")
        return "".join([f"{name}: {value}\r\n" for name, value in fields]).encode("latin-1")

    @staticmethod
    def _take_connection_header(headers: list[tuple[str, str]]) -> bool:
        """Remove the app's ``Connection`` headers (the server sends its own); whether one said ``close``."""
        close = False
        for i in range(len(headers) - 1, -1, -1):
            name, value = headers[i]
            if name.lower() == "connection":
                close = close or "close" in value.lower()
                del headers[i]
        return close

    @staticmethod
    def _add_connection_header(headers: list[tuple[str, str]], keep_alive: bool, version: str) -> None:
        if not keep_alive:
            headers.append(("Connection", "close"))
        elif version == "1.0":
            headers.append(("Connection", "keep-alive"))

    def _write_rejection(self, rejection: _Rejection) -> None:
        body = (rejection.message + "\n").encode("utf-8")
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Date", http_date()),
            ("Connection", "close"),
        ]
        head = format_head(rejection.status, reason_phrase(rejection.status), headers, rejection.version)
        self._closing = True
        self.transport.write(head + body)
        close_transport(self.transport, self.loop, self.settings.send_timeout)

    async def send_informational(self, environ: dict[str, Any], status: int, headers: list[tuple[str, str]]) -> None:
        """
        Send a 1xx response (e.g. 103 Early Hints) before the final one; HTTP/1.1 clients only.

        :raises InvalidFieldError: when a header name is not a token or a value holds CR, LF or NUL.
        """
        check_informational_status(status)
        headers = [(name, str(value)) for name, value in headers]
        checked_names(headers, "informational response")
        if environ.get("SERVER_PROTOCOL") != "HTTP/1.1" or self.transport is None or self.transport.is_closing():
            return
        self.transport.write(format_head(status, reason_phrase(status), headers, "1.1"))

    def _send_continue(self, body: RequestBody) -> None:
        if not body.complete and self.transport is not None and not self.transport.is_closing():
            self.transport.write(_CONTINUE)

    async def _drain(self) -> None:
        """Wait until the client reads; drop it if it reads nothing for ``send_timeout``."""
        if self.transport.is_closing():
            raise ConnectionResetError("the connection is closing")
        self._drain_waiter = self.loop.create_future()
        try:
            await asyncio.wait_for(self._drain_waiter, self.settings.send_timeout)
        except TimeoutError:
            logger.info(
                "Dropped the connection from %s: it read nothing for send_timeout=%ss.",
                self.peer,
                self.settings.send_timeout,
            )
            self.abort()
            raise ConnectionResetError("send_timeout exceeded") from None
        finally:
            self._drain_waiter = None
