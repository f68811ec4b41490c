"""
A Kyoukai app as an ASGI 3 application, for uvicorn, Hypercorn, granian and the other ASGI
servers: :func:`to_asgi` (or ``app.asgi``).

The server does the protocol work (parsing, framing, TLS, its own limits and timeouts). The
adapter turns each ASGI scope into the WSGI environ Kyoukai's own engines build, runs it
through :meth:`Kyoukai.process_request <kyoukai.app.Kyoukai.process_request>` (routing, hooks,
error handlers, the access log) and sends the response back as ASGI messages. The lifespan
protocol starts and closes the asphalt context that is the parent of every request context.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping
from typing import Any, Protocol
from urllib.parse import quote

from asphalt.core import Component, Context
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.wrappers import Request, Response

from kyoukai.body import RequestBody
from kyoukai.protocol.fields import check_informational_status, checked_names, content_length
from kyoukai.protocol.ws.handshake import WebSocketOffer
from kyoukai.protocol.ws.settings import WebSocketSettings
from kyoukai.settings import ServerSettings
from kyoukai.websocket import CHANNEL_KEY, WebSocketBase, WebSocketDisconnect, WebSocketState
from kyoukai.wsgi import ResponseParts, prepared_response, to_wsgi_environment

logger = logging.getLogger("kyoukai.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Environ key holding the ASGI scope of the request (its ``state``, ``extensions``...).
SCOPE_KEY = "asgi.scope"

_WS_SCHEMES = {"ws": "http", "wss": "https"}


class ServedApp(Protocol):
    """What the adapter uses of the :class:`~kyoukai.app.Kyoukai` app."""

    config: dict[str, Any]
    request_class: type[Request]

    def finalize(self, **map_options: Any) -> Any:
        """Build the routing map."""

    async def process_request(self, request: Request, parent_context: Context | None) -> Response:
        """Answer one request."""


def to_asgi(app: ServedApp, *, component: Component | None = None) -> KyoukaiASGI:
    """
    ``app`` as an ASGI 3 application: ``uvicorn module:asgi`` with ``asgi = to_asgi(app)``
    (``app.asgi`` is the same without a component).

    :param app: the :class:`~kyoukai.app.Kyoukai` app; its :attr:`~kyoukai.app.Kyoukai.config`
        holds the settings (``max_body_size``, ``debug``, ``server_header``, the ``ws_*`` keys...).
    :param component: an asphalt component started in the adapter's context at startup (a
        ``ContainerComponent`` with the database and other resources the handlers use).
    """
    return KyoukaiASGI(app, component=component)


class KyoukaiASGI:
    """
    A Kyoukai app as an ASGI 3 application, made by :func:`to_asgi`: ``await adapter(scope,
    receive, send)`` for the ``http``, ``websocket`` and ``lifespan`` scopes.

    ``lifespan.startup`` runs :meth:`startup`, ``lifespan.shutdown`` runs :meth:`shutdown`. On
    a server without the lifespan protocol the first request starts the app, and nothing closes
    the context.
    """

    def __init__(self, app: ServedApp, *, component: Component | None = None) -> None:
        self.app = app
        self.component = component
        #: The parent of every request context, between :meth:`startup` and :meth:`shutdown`.
        self.context: Context | None = None
        #: The settings read from ``app.config`` at startup (``max_body_size``, ``ws_*``...).
        self.settings = ServerSettings()
        self._start_lock = asyncio.Lock()
        self._stopped = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._serve_http(scope, receive, send)
        elif kind == "websocket":
            await self._serve_websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._serve_lifespan(receive, send)
        else:
            raise ValueError(f"Kyoukai serves the ASGI scope types http, websocket and lifespan, not {kind!r}")

    # lifespan

    async def startup(self) -> None:
        """
        Read the settings from ``app.config``, build the routing map, open the context and start
        the component in it.

        :raises ValueError: for a setting with a wrong value (the message names it).
        """
        settings = ServerSettings.from_config(self.app.config)
        self.app.finalize()
        context = Context()
        if self.component is not None:
            try:
                await self.component.start(context)
            except BaseException as e:
                await context.close(e)
                raise
        self.settings = settings
        self.context = context

    async def shutdown(self) -> None:
        """Close the context (the component's resources are torn down)."""
        self._stopped = True
        context, self.context = self.context, None
        if context is not None:
            await context.close()

    async def _serve_lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    async with self._start_lock:
                        await self.startup()
                except Exception as e:
                    logger.exception("The Kyoukai app failed to start.")
                    await send({"type": "lifespan.startup.failed", "message": f"{type(e).__name__}: {e}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                except Exception as e:
                    logger.exception("Closing the Kyoukai app's context failed.")
                    await send({"type": "lifespan.shutdown.failed", "message": f"{type(e).__name__}: {e}"})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _parent_context(self) -> Context | None:
        """The context to serve in, started now if the server has no lifespan protocol."""
        if self.context is None and not self._stopped:
            async with self._start_lock:
                if self.context is None:
                    await self.startup()
        return self.context

    # http

    async def _serve_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        parent = await self._parent_context()
        exchange = HTTPExchange(scope, receive, send, self.settings)
        environ = exchange.environ
        try:
            response = await self._process(environ, parent)
            await exchange.respond(response)
        finally:
            await exchange.close()

    async def _process(self, environ: dict[str, Any], parent: Context | None) -> Response:
        try:
            request = self.app.request_class(environ)
            return await self.app.process_request(request, parent)
        except Exception:
            logger.exception(
                "Processing %s %s failed outside the route.", environ["REQUEST_METHOD"], environ["PATH_INFO"]
            )
            return InternalServerError().get_response(environ)

    # websocket

    async def _serve_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return  # the client left before the handshake was read
        parent = await self._parent_context()
        channel = ASGIWebSocketChannel(scope, receive, send, self.settings.websocket)
        environ = environ_from_scope(scope, None, channel)
        # The routing tells a WebSocket request by these fields, which an HTTP/2 server's
        # scope (RFC 8441 has neither) may lack.
        if environ.get("HTTP_UPGRADE", "").lower() != "websocket":
            environ["HTTP_UPGRADE"] = "websocket"
        if "upgrade" not in (token.strip() for token in environ.get("HTTP_CONNECTION", "").lower().split(",")):
            environ["HTTP_CONNECTION"] = "upgrade"
        environ[CHANNEL_KEY] = channel
        response = await self._process(environ, parent)
        websocket = channel.websocket
        if websocket is not None and websocket.accepted:
            # The WebSocket is over; the response only carried its status to the access log.
            response.close()
            await websocket.stop_reading()
            return
        await _refuse_websocket(scope, send, response, environ)


class HTTPExchange:
    """
    One HTTP request served through ASGI (``ctx.proto`` of its context): the request body
    fed from ``receive()``, the response sent with ``send()``.
    """

    def __init__(self, scope: Scope, receive: Receive, send: Send, settings: ServerSettings) -> None:
        self._receive = receive
        self._send = send
        self._extensions: dict[str, Any] = scope.get("extensions") or {}
        self._buffer_size = settings.body_buffer_size
        self._room = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._response_started = False
        self._discard_timeout = settings.discard_timeout
        headers = scope.get("headers", ())
        # An HTTP/1.x body that may still be on its way when the response goes out (see _drain()).
        self._has_body = scope.get("http_version") in ("1.0", "1.1") and any(
            name == b"transfer-encoding" or (name == b"content-length" and value != b"0") for name, value in headers
        )
        self._expects_continue = any(name == b"expect" and value.lower() == b"100-continue" for name, value in headers)
        #: Set when the client has gone away (``http.disconnect``).
        self.disconnected = asyncio.Event()
        #: The request body (``wsgi.input``), read from ``http.request`` messages once the app asks for it.
        self.body = RequestBody(
            max_size=settings.max_body_size,
            expected_length=_content_length(scope),
            on_consumed=self._consumed,
            on_first_read=self._start_reading,
            timeout=settings.body_timeout,
        )
        self.environ = environ_from_scope(scope, self.body, self)

    # the request body

    def _start_reading(self) -> None:
        # Not before the app asks: an ASGI server answers "Expect: 100-continue" at the first receive().
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())

    def _consumed(self, size: int) -> None:
        if self.body.buffered < self._buffer_size:
            self._room.set()

    async def _read(self) -> None:
        """Feed the body from ``receive()``, holding back past ``body_buffer_size``; then watch for a disconnect."""
        body = self.body
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                body.abort()
                self.disconnected.set()
                return
            if message["type"] != "http.request" or body.complete:
                continue
            body.feed(message.get("body", b""))
            if not message.get("more_body", False):
                body.feed_eof()
                continue
            while body.buffered >= self._buffer_size:
                self._room.clear()
                await self._room.wait()

    async def _drain(self) -> None:
        """
        Read and drop the rest of a request body the app left unread (a 413, a 404 to a
        POST), so that the server can keep the connection: up to ``body_buffer_size`` bytes,
        each piece within ``discard_timeout`` seconds. Past either, the server decides (uvicorn
        reads and drops the rest itself; Hypercorn closes the connection).
        """
        body = self.body
        if not self._has_body or body.complete:
            return
        if self._reader is None and self._expects_continue:
            return  # the client sends nothing until told to continue
        limit = self._buffer_size
        if body.expected_length is not None and body.expected_length - body.received > limit:
            return
        dropped = 0
        try:
            while not body.complete and dropped <= limit:
                dropped += len(await asyncio.wait_for(body.get_chunk(), self._discard_timeout))
        except (TimeoutError, HTTPException):
            return  # the client stalled or left

    async def close(self) -> None:
        """The response is sent (or abandoned): stop reading and free the body."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self.body.release()
        # Cut werkzeug's request <-> environ cycle so the request is freed now.
        self.environ.pop("werkzeug.request", None)

    # the response

    async def send_informational(self, environ: dict[str, Any], status: int, headers: list[tuple[str, str]]) -> None:
        """
        Send ``103 Early Hints`` (its ``link`` fields) when the server offers the
        ``http.response.early_hint`` extension; otherwise, and for other 1xx statuses, nothing.

        :raises InvalidFieldError: when a header name is not a token or a value holds CR, LF or NUL.
        """
        check_informational_status(status)
        fields = [(name.lower(), str(value)) for name, value in headers]
        checked_names(fields, "informational response")
        if status != 103 or "http.response.early_hint" not in self._extensions or self._response_started:
            return
        links = [value.encode("latin-1") for name, value in fields if name == "link"]
        if links:
            await self._send({"type": "http.response.early_hint", "links": links})

    async def respond(self, response: Response) -> None:
        """Send ``response``: its head, then its body (streamed as produced), then its trailers."""
        environ = self.environ
        parts = prepared_response(response, environ)
        try:
            headers = asgi_fields(parts, response)
        except UnicodeEncodeError:
            logger.exception(
                "The response to %s %s has a header that is not latin-1; sending 500 instead.",
                environ["REQUEST_METHOD"],
                environ["PATH_INFO"],
            )
            await _discard(parts)
            replacement = InternalServerError().get_response(environ)
            parts = prepared_response(replacement, environ)
            headers = asgi_fields(parts, replacement)
        if self.disconnected.is_set():
            await _discard(parts)  # nobody to answer
            return
        trailers_wanted = (
            "http.response.trailers" in self._extensions and getattr(response, "trailers", None) is not None
        )
        start: Message = {"type": "http.response.start", "status": parts.status, "headers": headers}
        if trailers_wanted:
            start["trailers"] = True
        try:
            self._response_started = True
            if parts.stream is None:
                await self._drain()
                await self._send(start)
                await self._send({"type": "http.response.body", "body": parts.body, "more_body": False})
            else:
                await self._send(start)
                if not await self._stream(parts.stream):
                    return  # an unfinished response: the server ends the connection
                # (Not before: the body generator may be reading the request body.)
                await self._drain()
                await self._send({"type": "http.response.body", "body": b"", "more_body": False})
            if trailers_wanted:
                await self._send_trailers(response)
        except OSError:
            # (ASGI 2.4: send() raises an OSError once the client is gone.)
            logger.debug("The client of %s %s went away.", environ["REQUEST_METHOD"], environ["PATH_INFO"])
            await _discard(parts)

    async def _stream(self, stream: AsyncGenerator[bytes, None]) -> bool:
        """Send the chunks of ``stream`` until it ends (``True``), fails or the client leaves (``False``)."""
        # Reading now also tells when the client leaves, even if the body was never asked for.
        self._start_reading()
        sender = asyncio.ensure_future(self._send_chunks(stream))
        gone = asyncio.ensure_future(self.disconnected.wait())
        try:
            await asyncio.wait({sender, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not sender.done():
                sender.cancel()
                await asyncio.wait({sender})
        return not sender.cancelled() and sender.result()

    async def _send_chunks(self, stream: AsyncGenerator[bytes, None]) -> bool:
        environ = self.environ
        try:
            async for chunk in stream:
                await self._send({"type": "http.response.body", "body": chunk, "more_body": True})
        except OSError:
            raise
        except Exception:
            logger.exception(
                "The streaming body of %s %s failed; ending the response unfinished.",
                environ["REQUEST_METHOD"],
                environ["PATH_INFO"],
            )
            return False
        finally:
            # Run the app's clean-up now, not whenever the generator is garbage collected.
            await stream.aclose()
        return True

    async def _send_trailers(self, response: Response) -> None:
        # Read now, after the body: a body generator may fill them in.
        trailers: Any = getattr(response, "trailers", None) or ()
        if hasattr(trailers, "items"):
            trailers = trailers.items()
        fields = [(name.lower(), str(value)) for name, value in trailers]
        checked_names(fields, "trailer")
        encoded = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in fields]
        await self._send({"type": "http.response.trailers", "headers": encoded, "more_trailers": False})


class ASGIWebSocketChannel:
    """
    What a WebSocket route finds under :data:`~kyoukai.websocket.CHANNEL_KEY` when served
    through ASGI. The server frames the messages, so the WebSocket is an
    :class:`ASGIWebSocket`, made by :meth:`make_websocket`, not a byte-level one.
    """

    def __init__(self, scope: Scope, receive: Receive, send: Send, settings: WebSocketSettings) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.settings = settings
        # The server checked the handshake: only the subprotocols matter here.
        self.offer = WebSocketOffer(
            None, tuple(scope.get("subprotocols") or ()), (), http2=scope.get("http_version") == "2"
        )
        #: The handler's WebSocket, once made.
        self.websocket: ASGIWebSocket | None = None

    def make_websocket(self, response_headers: list[tuple[str, str]] | None) -> ASGIWebSocket:
        """The handler's ``ctx.websocket``; ``response_headers`` go with the acceptance."""
        self.websocket = ASGIWebSocket(self, response_headers=response_headers)
        return self.websocket


class ASGIWebSocket(WebSocketBase):
    """
    ``ctx.websocket`` of a WebSocket route served through ASGI: the API of
    :class:`~kyoukai.websocket.WebSocket` over the server's ``websocket.*`` messages.

    The server does the framing, pings and the closing handshake, and its own limits apply;
    ``ws_max_message_size`` (1009 past it) and ``ws_buffer_size`` (the server is read no
    further while that many bytes of messages wait for :meth:`receive`) apply too.
    """

    def __init__(self, channel: ASGIWebSocketChannel, *, response_headers: list[tuple[str, str]] | None = None) -> None:
        self._channel = channel
        self._limits = channel.settings
        self._response_headers = response_headers or []
        #: The subprotocols the client offered, in its order.
        self.subprotocols: tuple[str, ...] = channel.offer.subprotocols
        #: The subprotocol chosen by :meth:`accept`, if any.
        self.subprotocol: str | None = None
        self.state = WebSocketState.CONNECTING
        #: Set by :meth:`close` before accepting: the handshake is refused with 403.
        self.refused = False
        self._messages: collections.deque[tuple[str | bytes, int]] = collections.deque()
        self._buffered = 0
        self._room = asyncio.Event()
        self._waiter: asyncio.Future[None] | None = None
        self._end: tuple[int, str] | None = None
        self._reader: asyncio.Task[None] | None = None

    async def accept(self, subprotocol: str | None = None, *, headers: list[tuple[str, str]] | None = None) -> None:
        """
        Open the WebSocket (``websocket.accept``).

        :param subprotocol: one of :attr:`subprotocols`, or ``None``.
        :param headers: more response fields (e.g. ``Set-Cookie``).
        :raises RuntimeError: if already accepted or refused.
        :raises ValueError: if ``subprotocol`` was not offered.
        """
        if self.state is not WebSocketState.CONNECTING or self.refused:
            raise RuntimeError(f"the WebSocket cannot be accepted: it is {self.state.value}")
        if subprotocol is not None and subprotocol not in self.subprotocols:
            raise ValueError(
                f"subprotocol {subprotocol!r} was not offered by the client, which offered {list(self.subprotocols)}"
            )
        fields = [(name.lower(), str(value)) for name, value in [*self._response_headers, *(headers or ())]]
        checked_names(fields)
        encoded = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in fields]
        self.subprotocol = subprotocol
        self.state = WebSocketState.OPEN
        await self._send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": encoded})
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _send(self, message: Message) -> None:
        try:
            await self._channel.send(message)
        except OSError:
            # (ASGI 2.4: send() raises an OSError once the client is gone.)
            end = self._end or (1006, "the connection was lost")
            self._finish(*end)
            raise WebSocketDisconnect(*end) from None

    async def _read(self) -> None:
        """Queue the messages the server hands over, until its ``websocket.disconnect``."""
        limit = self._limits.ws_max_message_size
        while True:
            while self._buffered > self._limits.ws_buffer_size and self._end is None:
                self._room.clear()
                await self._room.wait()
            message = await self._channel.receive()
            if message["type"] == "websocket.disconnect":
                if self._end is None:
                    self._finish(message.get("code", 1005), message.get("reason") or "")
                return
            if message["type"] != "websocket.receive" or self._end is not None:
                continue
            text = message.get("text")
            data: str | bytes = text if text is not None else (message.get("bytes") or b"")
            size = len(data.encode("utf-8")) if isinstance(data, str) and len(data) * 4 > limit else len(data)
            if size > limit:
                logger.info("WebSocket closed with 1009: a message of %d bytes is over ws_max_message_size.", size)
                await self._send_close(1009, f"a message is larger than ws_max_message_size={limit}")
                continue
            self._messages.append((data, size))
            self._buffered += size
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _finish(self, code: int, reason: str) -> None:
        self._end = (code, reason)
        self.state = WebSocketState.CLOSED
        self._room.set()
        self._wake()

    async def receive(self) -> str | bytes:
        """
        The next message: ``str`` for a text message, ``bytes`` for a binary one.

        :raises WebSocketDisconnect: when the WebSocket is closed (by either side).
        """
        if self.state is WebSocketState.CONNECTING:
            await self.accept()
        while not self._messages:
            if self._end is not None:
                raise WebSocketDisconnect(*self._end)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data, size = self._messages.popleft()
        self._buffered -= size
        if self._buffered <= self._limits.ws_buffer_size:
            self._room.set()
        return data

    async def send(self, data: str | bytes) -> None:
        """
        Send a message: text for ``str``, binary for ``bytes``.

        :raises WebSocketDisconnect: if the WebSocket is closing or closed.
        """
        if not isinstance(data, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"a WebSocket message is str or bytes, not {type(data).__name__}")
        if self.state is WebSocketState.CONNECTING:
            await self.accept()
        if self._end is not None:
            raise WebSocketDisconnect(*self._end)
        message: Message = (
            {"type": "websocket.send", "text": data}
            if isinstance(data, str)
            else {"type": "websocket.send", "bytes": bytes(data)}
        )
        await self._send(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """
        Close the WebSocket and wait for the server to report it closed (up to
        ``ws_close_timeout``). Before it is accepted, this refuses the handshake with ``403``.
        """
        if self.state is WebSocketState.CONNECTING:
            self.refused = True
            return
        if self._end is None:
            await self._send_close(code, reason)
        reader = self._reader
        if reader is not None and not reader.done():
            # It ends at the server's websocket.disconnect, once the closing handshake is over.
            await asyncio.wait({reader}, timeout=self._limits.ws_close_timeout)

    async def _send_close(self, code: int, reason: str) -> None:
        self._finish(code, reason)
        with contextlib.suppress(OSError):
            await self._channel.send({"type": "websocket.close", "code": code, "reason": reason})

    async def stop_reading(self) -> None:
        """The handler is done: stop taking messages from the server."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


async def _refuse_websocket(scope: Scope, send: Send, response: Response, environ: dict[str, Any]) -> None:
    """
    Answer a WebSocket handshake with ``response``: as it is where the server offers the
    ``websocket.http.response`` extension, else as the 403 of a ``websocket.close``.
    """
    parts = prepared_response(response, environ)
    try:
        await _send_refusal(scope, send, response, parts)
    except OSError:
        logger.debug("The client of the WebSocket handshake %s went away.", environ["PATH_INFO"])
    finally:
        await _discard(parts)


async def _send_refusal(scope: Scope, send: Send, response: Response, parts: ResponseParts) -> None:
    headers = None
    if "websocket.http.response" in (scope.get("extensions") or {}):
        try:
            headers = asgi_fields(parts, response)
        except UnicodeEncodeError:
            logger.exception("The answer to a WebSocket handshake has a header that is not latin-1; sending 403.")
    if headers is None:
        await send({"type": "websocket.close", "code": 1000})
        return
    await send({"type": "websocket.http.response.start", "status": parts.status, "headers": headers})
    if parts.stream is not None:
        async for chunk in parts.stream:
            await send({"type": "websocket.http.response.body", "body": chunk, "more_body": True})
    await send({"type": "websocket.http.response.body", "body": parts.body or b"", "more_body": False})


def environ_from_scope(scope: Scope, body: Any, protocol: Any) -> dict[str, Any]:
    """
    The WSGI environ of an ``http`` or ``websocket`` scope, as Kyoukai's engines build it:
    ``PATH_INFO`` percent-decoded from ``raw_path`` (PEP 3333), ``SCRIPT_NAME`` from
    ``root_path`` (taken off the path when the server put it there), ``SERVER_PROTOCOL``
    from ``http_version`` (``HTTP/2``), the scope itself under :data:`SCOPE_KEY`.

    :param body: the ``wsgi.input`` (an empty stream if ``None``).
    :param protocol: the object behind ``ctx.proto``.
    """
    query = scope.get("query_string", b"").decode("latin-1")
    raw_path: bytes | None = scope.get("raw_path")
    path: str = scope["path"]
    target = raw_path.partition(b"?")[0].decode("latin-1") if raw_path is not None else quote(path)
    if query:
        target += "?" + query
    server = scope.get("server")
    client = scope.get("client")
    scheme: str = scope.get("scheme", "http")
    environ = to_wsgi_environment(
        [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope.get("headers", ())],
        scope.get("method", "GET"),
        target,
        scope.get("http_version", "1.1"),
        body,
        scheme=_WS_SCHEMES.get(scheme, scheme),
        server=(server[0], server[1]) if server and server[1] is not None else None,
        peer=(client[0], client[1]) if client else None,
        protocol=protocol,
    )
    if raw_path is None:
        environ["PATH_INFO"] = path.encode("utf-8").decode("latin-1")
    root = scope.get("root_path", "").rstrip("/")
    if root:
        script_name = root.encode("utf-8").decode("latin-1")
        environ["SCRIPT_NAME"] = script_name
        path_info = environ["PATH_INFO"]
        # uvicorn puts root_path in front of the path (as the ASGI spec now says); Hypercorn does not.
        if path_info == script_name or path_info.startswith(script_name + "/"):
            environ["PATH_INFO"] = path_info[len(script_name) :]
    environ[SCOPE_KEY] = scope
    return environ


def asgi_fields(parts: ResponseParts, response: Response) -> list[tuple[bytes, bytes]]:
    """
    The response fields as ASGI wants them: lowercase ``bytes`` pairs. The ``Date`` Kyoukai
    adds when the app sets none is left out: the ASGI servers add their own.

    :raises UnicodeEncodeError: for a field that is not latin-1.
    """
    own_date = "Date" in response.headers
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in parts.headers
        if own_date or name.lower() != "date"
    ]


async def _discard(parts: ResponseParts) -> None:
    """Close the body stream of a response that will not be sent (the app's clean-up runs)."""
    if parts.stream is not None:
        await parts.stream.aclose()


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return content_length(value)
    return None
