"""
One HTTP request served by an ASGI app (the ``http`` scope).

:class:`HTTPCycle` runs the app in a task of its own. ``receive`` hands it the request body as
it arrives (each chunk's flow-control credit goes back as the app takes it), then
``http.disconnect`` once the response is over or the client is gone. ``send`` turns the
response into the werkzeug response the backends send: the head waits for the first body
message (as ASGI allows), so that a response sent in one piece goes out with its
``Content-Length`` in one write; a longer one is a :class:`ResponseStream`, which holds one
chunk at a time, so that ``send`` waits while the client cannot take more (backpressure).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from werkzeug.datastructures import Headers
from werkzeug.exceptions import ClientDisconnected, HTTPException, InternalServerError, RequestEntityTooLarge
from werkzeug.wrappers import Response

from kyoukai import debugpage
from kyoukai.asgi.scope import Disconnected, ServeOptions, connection_scope
from kyoukai.protocol.fields import checked_names, content_length
from kyoukai.static import FileChunks
from kyoukai.wsgi import PREPARED_KEY, ResponseParts, http_date, prepare_response, reason_phrase

logger = logging.getLogger("kyoukai.asgi")

#: An ASGI 3 application: ``async def app(scope, receive, send)``.
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

_NO_BODY_STATUSES = frozenset({204, 304})


class _NoFieldsYet(Headers):
    """The headers of an :class:`ASGIResponse` while werkzeug builds it: ``in`` costs no exception when empty."""

    def __contains__(self, key: str) -> bool:
        # (Headers raises and catches a BadRequestKeyError for every name it lacks.)
        return len(self) > 0 and super().__contains__(key)


class ASGIResponse(Response):
    """The response of an ASGI app: its status and fields as sent, with no default content type."""

    default_mimetype = None
    #: The trailer fields the app sent (``http.response.trailers``); the backends read them
    #: after the body.
    trailers: list[tuple[str, str]] | None = None
    _headers: Headers
    #: Fields given to :meth:`from_fields` and not yet in :attr:`headers`.
    _pending_fields: list[tuple[str, str]] | None = None

    @classmethod
    def from_fields(cls, body: Any, status: int, fields: list[tuple[str, str]]) -> ASGIResponse:
        """
        A response of ``status`` with ``body`` and ``fields``, already checked for the wire:
        :attr:`headers` is made of them when it is first read, so a response the backends
        send from its prepared parts (see :data:`~kyoukai.wsgi.PREPARED_KEY`) never builds it.
        """
        response = cls(body, status=status, headers=_NoFieldsYet())
        response._pending_fields = fields
        return response

    @property
    def headers(self) -> Headers:
        """The response's header fields (werkzeug's :class:`~werkzeug.datastructures.Headers`)."""
        pending = self._pending_fields
        if pending is not None:
            self._pending_fields = None
            self._headers = Headers(pending)
        return self._headers

    @headers.setter
    def headers(self, value: Headers) -> None:
        self._headers = value
        self._pending_fields = None


def decode_fields(fields: Any) -> list[tuple[str, str]]:
    """ASGI ``[name, value]`` byte pairs as ``(name, value)`` strings (latin-1)."""
    if not isinstance(fields, (list, tuple)):
        fields = list(fields)
    try:
        # Byte strings, as ASGI has them: no check per field.
        return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in fields]
    except AttributeError:
        return [
            (
                name.decode("latin-1") if isinstance(name, (bytes, bytearray)) else str(name),
                value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value),
            )
            for name, value in fields
        ]


class ResponseStream(AsyncGenerator[bytes, None]):
    """
    The body of a streamed response, as the backend iterates it: the chunks the app sends, one
    at a time. :meth:`put` waits while the previous chunk is not taken, and the backend takes
    the next one only when it can send it. The backend's ``aclose`` (at the end, or when it
    gives up: the client went away) tells the cycle through ``on_end(complete)``.

    :param on_end: called once, with whether the backend took the whole body.
    :param declared_length: the response's ``Content-Length``, if any: the body must match it.
    """

    def __init__(self, on_end: Callable[[bool], None], declared_length: int | None) -> None:
        self._on_end = on_end
        self._declared = declared_length
        self._queued = 0
        self._slot: bytes | None = None
        #: The rest of the body after the chunks (a file, ``http.response.pathsend``).
        self._tail: FileChunks | None = None
        self._ended = False
        self._error: Exception | None = None
        #: Whether the backend is done with the stream (finished, or gave up).
        self.closed = False
        self._taker: asyncio.Future[None] | None = None
        self._giver: asyncio.Future[None] | None = None

    # the app's side

    def offer(self, data: bytes) -> None:
        """Queue the first chunk (the slot is empty)."""
        self._count(data)
        self._slot = data

    async def put(self, data: bytes) -> None:
        """
        Queue a chunk; waits while the one before is not taken.

        :raises Disconnected: the backend stopped taking chunks (the client is gone).
        """
        while self._slot is not None and not self.closed:
            self._giver = asyncio.get_running_loop().create_future()
            try:
                await self._giver
            finally:
                self._giver = None
        if self.closed:
            raise Disconnected("the client went away before the end of the response")
        self._count(data)
        self._slot = data
        _wake(self._taker)

    def _count(self, data: bytes) -> None:
        self._queued += len(data)
        if self._declared is not None and self._queued > self._declared:
            error = RuntimeError(
                f"the ASGI app sent more than the {self._declared} bytes of its response's Content-Length"
            )
            self.fail(error)
            raise error

    def send_file(self, chunks: FileChunks) -> None:
        """The rest of the body is the file of ``chunks``."""
        self._tail = chunks

    def end(self) -> None:
        """The app sent the whole body (a body shorter than its ``Content-Length`` fails)."""
        if self._declared is not None and self._tail is None and self._queued < self._declared:
            self.fail(
                RuntimeError(
                    f"the ASGI app ended its response body after {self._queued} of the {self._declared} "
                    "bytes of its Content-Length"
                )
            )
            return
        self._ended = True
        _wake(self._taker)

    def fail(self, error: Exception) -> None:
        """The response cannot be completed: the backend gets ``error`` and cuts the stream."""
        if self._error is None and not self.closed:
            self._error = error
            _wake(self._taker)

    # the backend's side

    def __aiter__(self) -> ResponseStream:
        return self

    async def __anext__(self) -> bytes:
        while True:
            data = self._slot
            if data is not None:
                self._slot = None
                _wake(self._giver)
                return data
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._ended and self._tail is not None:
                try:
                    return await self._tail.__anext__()
                except StopAsyncIteration:
                    self._tail = None
            if self._ended:
                self._finish(True)
                raise StopAsyncIteration
            if self.closed:
                raise Disconnected("the response was given up before its end")
            self._taker = asyncio.get_running_loop().create_future()
            try:
                await self._taker
            except asyncio.CancelledError:
                self._finish(False)
                raise
            finally:
                self._taker = None

    async def asend(self, value: None) -> bytes:
        return await self.__anext__()

    async def athrow(self, typ: Any, val: Any = None, tb: Any = None) -> bytes:
        await self.aclose()
        raise typ if val is None else val

    async def aclose(self) -> None:
        self._finish(False)
        tail, self._tail = self._tail, None
        if tail is not None:
            await tail.aclose()

    def abandon(self) -> None:
        """The cycle gave up on the response (the client is gone): release the app."""
        self._finish(False)
        if self._tail is not None:
            self._tail.close()

    def _finish(self, complete: bool) -> None:
        if self.closed:
            return
        self.closed = True
        _wake(self._giver)
        _wake(self._taker)
        self._on_end(complete and self._ended)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def open_file(path: str) -> FileChunks:
    """The chunks of the regular file at ``path`` (``http.response.pathsend``)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"http.response.pathsend: {path!r} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return FileChunks(fd, st.st_size, name=path)


class HTTPCycle:
    """
    One request of the ``http`` scope, from its environ to the response handed to the backend.

    :param app: the ASGI application.
    :param environ: the request's WSGI environ (``wsgi.input`` is the body as it arrives).
    :param options: the app's settings.
    :param state: the lifespan state (each request gets a shallow copy).
    """

    def __init__(self, app: ASGIApp, environ: dict[str, Any], options: ServeOptions, state: dict[str, Any]) -> None:
        self.app = app
        self.environ = environ
        self.options = options
        self.body = environ["wsgi.input"]
        scope = self.scope = connection_scope(environ, "http", options.root_path, state)
        extensions: dict[str, Any] = {"http.response.trailers": {}, "http.response.pathsend": {}}
        if hasattr(environ.get("kyoukai.protocol"), "send_informational") and scope["http_version"] != "1.0":
            extensions["http.response.early_hint"] = {}
        scope["extensions"] = extensions
        self._head: asyncio.Future[Response] | None = None
        self._task: asyncio.Task[None] | None = None
        self._status: int | None = None
        self._fields: list[tuple[str, str]] = []
        self._trailers_expected = False
        self._response: ASGIResponse | None = None
        self._stream: ResponseStream | None = None
        #: The head is decided and the rest of the app's body is dropped (HEAD, 204, 304, a 500).
        self._discarding = False
        self._body_sent = False
        #: The body is over and trailers are to follow (``trailers: true``).
        self._awaiting_trailers = False
        self._complete = False
        self._body_done = False
        self._received = 0
        #: Nothing more will be sent: ``receive`` says ``http.disconnect`` after the body.
        self._over = False
        self._over_event: asyncio.Event | None = None
        #: The client went away, or the server answered for the app: ``send`` raises.
        self._gone = False
        self._grace: asyncio.TimerHandle | None = None

    async def run(self, tasks: set[asyncio.Task[None]]) -> Response:
        """Start the app (its task goes into ``tasks`` while it runs); the response, once its head is known."""
        limit = self.options.max_body_size
        expected = getattr(self.body, "expected_length", None)
        if limit is not None and expected is not None and expected > limit:
            return self._refusal(
                RequestEntityTooLarge(
                    f"The request body of {expected} bytes is larger than the max_body_size of {limit} bytes."
                )
            )
        loop = asyncio.get_running_loop()
        head = self._head = loop.create_future()
        task = self._task = loop.create_task(self._run_app(tasks))
        tasks.add(task)
        try:
            return await head
        except asyncio.CancelledError:
            # The backend gave up on the request: the client closed the connection or reset the stream.
            self._end_exchange(gone=True)
            raise

    # the app's task

    async def _run_app(self, tasks: set[asyncio.Task[None]]) -> None:
        try:
            await self.app(self.scope, self.receive, self.send)
        except asyncio.CancelledError as e:
            self._app_ended(e)
            raise
        except Exception as e:
            self._app_ended(e)
        else:
            self._app_ended(None)
        finally:
            # Out of ``tasks`` in its last step rather than by a done callback, one loop round
            # later. (The task is only cancelled once it runs: disconnect_timeout, shutdown.)
            assert self._task is not None
            tasks.discard(self._task)

    def _app_ended(self, error: BaseException | None) -> None:
        if self._grace is not None:
            self._grace.cancel()
        environ = self.environ
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        head = self._head
        stream = self._stream
        if head is not None and not head.done():
            if error is None:
                what = "sending a response" if self._status is None else "sending its response body"
                logger.error("The ASGI app returned without %s to %s %s; sending 500 instead.", what, method, path)
            else:
                logger.error(
                    "The ASGI app raised %s on %s %s; sending 500 instead.",
                    type(error).__name__,
                    method,
                    path,
                    exc_info=error,
                )
            self._answer(*self._server_error(error))
        elif stream is not None and not stream.closed and not self._complete:
            # The head is out: the backend cuts the stream (reset, or connection closed) and logs why.
            if isinstance(error, Exception):
                stream.fail(error)
            else:
                stream.fail(RuntimeError("the ASGI app returned before the end of its response body (more_body)"))
        elif error is not None and not isinstance(error, asyncio.CancelledError):
            if isinstance(error, Disconnected):
                pass  # the send that told the app its client went away, passed on
            elif self._gone:
                what = f"{type(error).__name__}: {error}"
                logger.info("The ASGI app of %s %s ended with %s once its client went away.", method, path, what)
            else:
                logger.error("The ASGI app failed after its response to %s %s.", method, path, exc_info=error)

    def _server_error(self, error: BaseException | None) -> tuple[Response, Any]:
        if self.options.debug and isinstance(error, Exception):
            response = Response(debugpage.render(error), status=500, content_type=debugpage.CONTENT_TYPE)
        else:
            response = InternalServerError().get_response(self.environ)
        self._add_server_headers(response)
        self._discarding = True
        return response, prepare_response(response, self.environ)

    def _refusal(self, error: HTTPException) -> Response:
        """The server's own answer to the request (a limit broken), logged."""
        logger.info("Rejected a request body: %s", error.description)
        response = error.get_response(self.environ)
        self._add_server_headers(response)
        return response

    def _add_server_headers(self, response: Response) -> None:
        for name, value in self.options.server_headers:
            if name not in response.headers:
                response.headers[name] = value

    def _answer(self, response: Response, parts: Any) -> None:
        head = self._head
        if head is not None and not head.done():
            self.environ[PREPARED_KEY] = (response, parts)
            head.set_result(response)

    def _end_exchange(self, *, gone: bool) -> None:
        """The response is over (``gone``: before its end, the client went away or the server answered)."""
        if gone and not self._gone:
            self._gone = True
            if self._stream is not None:
                self._stream.abandon()
            task = self._task
            if task is not None and not task.done() and self._grace is None:
                self._grace = asyncio.get_running_loop().call_later(self.options.disconnect_timeout, self._cancel_app)
        if not self._over:
            self._over = True
            if self._over_event is not None:
                self._over_event.set()

    def _cancel_app(self) -> None:
        task = self._task
        if task is not None and not task.done():
            logger.info(
                "The ASGI app still ran %ss (disconnect_timeout) after the client of %s %s went away; cancelling it.",
                self.options.disconnect_timeout,
                self.environ["REQUEST_METHOD"],
                self.environ["PATH_INFO"],
            )
            task.cancel()

    # receive

    async def receive(self) -> dict[str, Any]:
        """The next ASGI event: ``http.request`` with the body as it arrives, then ``http.disconnect``."""
        if self._gone:
            return {"type": "http.disconnect"}
        if not self._body_done:
            return await self._read_body()
        if not self._over:
            if self._over_event is None:
                self._over_event = asyncio.Event()
            await self._over_event.wait()
        return {"type": "http.disconnect"}

    async def _read_body(self) -> dict[str, Any]:
        body = self.body
        try:
            # What arrived already goes at once (its credit back with it), else the next chunk.
            data = body.read() if body.buffered else await body.get_chunk()
        except HTTPException as e:
            self._body_done = True
            if isinstance(e, ClientDisconnected):
                self._end_exchange(gone=True)
            else:
                self._refuse_midway(e)  # body_timeout, or a body the backend rejected
            return {"type": "http.disconnect"}
        if not data:
            self._body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        self._received += len(data)
        limit = self.options.max_body_size
        if limit is not None and self._received > limit:
            self._body_done = True
            self._refuse_midway(
                RequestEntityTooLarge(f"The request body is larger than the max_body_size of {limit} bytes.")
            )
            return {"type": "http.disconnect"}
        more = not body.complete or body.buffered > 0
        if not more:
            self._body_done = True
        return {"type": "http.request", "body": data, "more_body": more}

    def _refuse_midway(self, error: HTTPException) -> None:
        """The server answers the request with ``error`` (or cuts a response already started)."""
        head = self._head
        if head is not None and not head.done():
            response = self._refusal(error)
            self._discarding = True
            self._answer(response, prepare_response(response, self.environ))
        elif self._stream is not None and not self._complete:
            logger.info("Rejected a request body: %s", error.description)
            self._stream.fail(error)
        self._end_exchange(gone=True)

    # send

    async def send(self, message: dict[str, Any]) -> None:
        """Take one ASGI message of the app's response."""
        kind = message["type"]
        if kind == "http.response.body":
            await self._send_body(message.get("body", b""), bool(message.get("more_body", False)))
        elif kind == "http.response.start":
            self._start(message)
        elif kind == "http.response.trailers":
            self._send_trailers(message)
        elif kind == "http.response.early_hint":
            await self._send_early_hint(message)
        elif kind == "http.response.pathsend":
            self._send_path(message)
        else:
            raise ValueError(f"the ASGI app sent a message of type {kind!r} in an http scope")

    def _start(self, message: dict[str, Any]) -> None:
        if self._status is not None:
            raise RuntimeError("the ASGI app sent http.response.start twice")
        if self._gone:
            raise Disconnected("the client went away before the response started")
        status = message["status"]
        if not isinstance(status, int) or not 200 <= status <= 999:
            raise ValueError(f"http.response.start: status must be an int from 200 to 999, not {status!r}")
        fields = decode_fields(message.get("headers") or ())
        if "transfer-encoding" in "\n".join([name for name, _ in fields]).lower():
            fields = [field for field in fields if not _is_framing(field[0])]
        self._fields = fields
        self._status = status
        self._trailers_expected = bool(message.get("trailers", False))

    def _check_body_allowed(self, kind: str) -> None:
        if self._status is None:
            raise RuntimeError(f"the ASGI app sent {kind} before http.response.start")
        if self._complete:
            raise RuntimeError(f"the ASGI app sent {kind} after the end of its response")
        if self._gone:
            raise Disconnected("the client went away before the end of the response")

    async def _send_body(self, data: Any, more: bool) -> None:
        self._check_body_allowed("http.response.body")
        if not isinstance(data, bytes):
            data = bytes(data)
        stream = self._stream
        if not self._body_sent:
            self._body_sent = True
            self._first_body(data, whole=not more and not self._trailers_expected)
        elif stream is not None and not self._discarding:
            if data:
                await stream.put(data)
            if not more and not self._trailers_expected:
                stream.end()
        if not more:
            self._body_ended()

    def _body_ended(self) -> None:
        if self._trailers_expected:
            self._awaiting_trailers = True
        else:
            self._complete = True
            if self._stream is None or self._discarding:
                self._end_exchange(gone=False)

    def _first_body(self, data: bytes, *, whole: bool) -> None:
        """
        The head is known: hand the response to the backend (``whole``, or as a stream). Its
        parts are made here as :func:`~kyoukai.wsgi.prepare_response` makes them (the app's
        fields checked, then ``Date`` and ``Content-Length`` when missing), from the fields
        as they are rather than through a werkzeug response.
        """
        status = self._status
        assert status is not None
        environ = self.environ
        fields = self._fields
        wire = list(fields)
        try:
            names = checked_names(wire)
            for name, value in self.options.server_headers:
                if f"\n{name.lower()}\n" not in names:
                    fields.append((name, value))
                    wire.append((name, value))
            declared = _declared_length(wire) if "\ncontent-length\n" in names else None
            no_body = environ["REQUEST_METHOD"] == "HEAD" or status in _NO_BODY_STATUSES
            if whole and not no_body and declared is not None and declared != len(data):
                raise ValueError(
                    f"its Content-Length is {declared} but its body is {len(data)} bytes (sent with more_body false)"
                )
        except ValueError as e:  # a field that must not go on the wire, or a wrong length
            logger.error(
                "The response of the ASGI app to %s %s cannot be sent (%s); sending 500 instead.",
                environ["REQUEST_METHOD"],
                environ["PATH_INFO"],
                e,
            )
            self._answer(*self._server_error(None))
            return
        if "\ndate\n" not in names:
            wire.append(("Date", http_date()))
        reason = reason_phrase(status)
        if whole:
            if status not in _NO_BODY_STATUSES and "\ncontent-length\n" not in names:
                wire.append(("Content-Length", str(len(data))))
            response = self._response = ASGIResponse.from_fields([data], status, fields)
            self._answer(response, ResponseParts(status, reason, wire, b"" if no_body else data, None))
            return
        stream = ResponseStream(self._backend_done, declared)
        response = self._response = ASGIResponse.from_fields(stream, status, fields)
        if no_body:
            # A response without a body (HEAD, 204, 304): the rest is dropped.
            self._discarding = True
            self._answer(response, ResponseParts(status, reason, wire, b"", None))
            return
        self._stream = stream
        if data:
            stream.offer(data)
        self._answer(response, ResponseParts(status, reason, wire, None, stream))

    def _backend_done(self, complete: bool) -> None:
        """The backend finished the stream, or gave up on it (the client went away)."""
        self._end_exchange(gone=not complete)

    def _send_trailers(self, message: dict[str, Any]) -> None:
        if not self._trailers_expected:
            raise RuntimeError("the ASGI app sent http.response.trailers without trailers: true in http.response.start")
        if not self._awaiting_trailers:
            raise RuntimeError("the ASGI app sent http.response.trailers before the end of its body")
        self._check_body_allowed("http.response.trailers")
        response, stream = self._response, self._stream
        if response is not None and stream is not None and not self._discarding:
            response.trailers = (response.trailers or []) + decode_fields(message.get("headers") or ())
        if not message.get("more_trailers", False):
            self._complete = True
            if stream is not None and not self._discarding:
                stream.end()
            else:
                self._end_exchange(gone=False)

    async def _send_early_hint(self, message: dict[str, Any]) -> None:
        head = self._head
        if head is None or head.done() or self._gone:
            return  # too late for a hint: the response is on its way
        links = [("Link", bytes(link).decode("latin-1")) for link in message.get("links") or ()]
        if links:
            await self.environ["kyoukai.protocol"].send_informational(self.environ, 103, links)

    def _send_path(self, message: dict[str, Any]) -> None:
        self._check_body_allowed("http.response.pathsend")
        if self._body_sent:
            raise RuntimeError("the ASGI app sent http.response.pathsend after http.response.body")
        chunks = open_file(message["path"])
        self._body_sent = True
        self._first_body(b"", whole=False)
        stream = self._stream
        if stream is None or self._discarding:
            chunks.close()
        else:
            stream.send_file(chunks)
            if not self._trailers_expected:
                stream.end()
        self._body_ended()


def _is_framing(name: str) -> bool:
    # The backends frame the body themselves (chunked on HTTP/1.1, DATA frames on HTTP/2).
    return name.lower() == "transfer-encoding"


def _declared_length(fields: list[tuple[str, str]]) -> int | None:
    for name, value in fields:
        if name.lower() == "content-length":
            return content_length(value.strip())
    return None
