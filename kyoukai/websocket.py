"""
WebSockets for handlers: :class:`WebSocket` (``ctx.websocket`` in a route registered with
``app.websocket(...)``) and :class:`WebSocketDisconnect`.

A WebSocket is the same over HTTP/1.1 (an ``Upgrade``) and HTTP/2 (RFC 8441 extended CONNECT):
the backend gives it a :class:`WebSocketChannel` (the way to the peer), the frames, limits and
timers are the sans-IO :class:`~kyoukai.protocol.ws.session.WebSocketSession`'s, and this module
only waits: for messages, for room to send, for the close.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from werkzeug.wrappers import Response

from kyoukai.backends.transport import DeadlineTimer
from kyoukai.protocol.ws.handshake import HandshakeRejection, WebSocketOffer, accept_headers, negotiate_deflate
from kyoukai.protocol.ws.session import Closed, Failed, Message, PeerClosed, SessionClosedError, WebSocketSession
from kyoukai.protocol.ws.settings import WebSocketSettings
from kyoukai.util import SERVER_TOKEN

if TYPE_CHECKING:
    from kyoukai.context import HTTPRequestContext
    from kyoukai.route import Route

logger = logging.getLogger("kyoukai.websocket")

#: Bytes of replies a handler may hold back while more received messages wait to be read (see
#: :meth:`WebSocket.send`).
BATCH_BYTES = 64 * 1024

#: Environ key under which a backend leaves the :class:`WebSocketChannel` of a request that asks
#: for a WebSocket.
CHANNEL_KEY = "kyoukai.websocket"


class WebSocketDisconnect(Exception):
    """The WebSocket is closed: by the peer, by the server, or because the connection was lost."""

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        super().__init__(code, reason)
        #: The close code (1000: normal; 1001: going away; 1006: no Close frame at all...).
        self.code = code
        #: The close reason, possibly empty.
        self.reason = reason

    def __str__(self) -> str:
        return f"WebSocket closed with {self.code}" + (f": {self.reason}" if self.reason else "")


class WebSocketChannel(Protocol):
    """
    What a backend gives a :class:`WebSocket`: the offer of the handshake request, and the way
    to the peer once accepted. The backend feeds what arrives to
    :meth:`WebSocket.feed_data` (``None`` at the peer's end, or when the stream is reset).

    A channel whose server frames the messages itself (ASGI) may instead provide
    ``make_websocket(response_headers)``, returning an object with :class:`WebSocket`'s API.
    """

    #: The handshake as read from the request (a rejection is answered as an HTTP error).
    offer: WebSocketOffer | HandshakeRejection
    settings: WebSocketSettings

    async def send_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Send the response that opens the WebSocket; from now on bytes both ways are frames."""

    def write(self, data: bytes) -> None:
        """Queue bytes for the peer (DATA frames on HTTP/2, under flow control)."""

    def must_wait(self) -> bool:
        """Whether the bytes written are held up (transport full, or no flow-control window)."""

    async def drain(self) -> None:
        """Wait until the bytes written so far are on their way (returns at once if not held up)."""

    def pause_reading(self) -> None:
        """Read nothing more for now (HTTP/1.1), or grant no more credit (HTTP/2)."""

    def resume_reading(self) -> None:
        """Undo :meth:`pause_reading`."""

    def finish(self) -> None:
        """The WebSocket is over: after the bytes written, end the stream or close the connection."""


class WebSocketState(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"


class WebSocketBase:
    """
    What every ``ctx.websocket`` shares, over frames of its own (:class:`WebSocket`) or over a
    server's messages (ASGI): the state, async iteration and the close after the handler.
    """

    state: WebSocketState
    #: How the WebSocket ended, once it has (``None`` while it is open).
    _end: object | None

    @property
    def accepted(self) -> bool:
        """Whether the opening response went out."""
        return self.state is not WebSocketState.CONNECTING

    async def receive(self) -> str | bytes:
        raise NotImplementedError

    async def close(self, code: int = 1000, reason: str = "") -> None:
        raise NotImplementedError

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str | bytes]:
        """The messages until the WebSocket closes (the close ends the loop, whatever its code)."""
        while True:
            try:
                yield await self.receive()
            except WebSocketDisconnect:
                return

    async def _end_after_handler(self, error: BaseException | None) -> None:
        """The handler is done: close with 1000, or with 1011 after an error."""
        if self.state is not WebSocketState.OPEN or self._end is not None:
            return
        try:
            await self.close(1011 if error is not None else 1000, "internal error" if error is not None else "")
        except asyncio.CancelledError:
            raise
        except Exception:  # the connection is gone: nothing more to do
            logger.debug("Closing a WebSocket after its handler failed.", exc_info=True)


class WebSocket(WebSocketBase):
    """
    The WebSocket of a request routed to a WebSocket handler: ``ctx.websocket``.

    The first :meth:`send` or :meth:`receive` accepts it if :meth:`accept` was not called. A
    handler that returns (or raises an HTTP error) before accepting answers with that HTTP
    response instead; one that returns after accepting closes with 1000, and one that raises
    closes with 1011.
    """

    def __init__(self, channel: WebSocketChannel, *, response_headers: list[tuple[str, str]] | None = None) -> None:
        self._channel = channel
        #: Fields every opening response carries (``Server``, ``X-Powered-By``).
        self._response_headers = response_headers or []
        offer = channel.offer
        #: The subprotocols the client offered, in its order.
        self.subprotocols: tuple[str, ...] = offer.subprotocols if isinstance(offer, WebSocketOffer) else ()
        #: The subprotocol chosen by :meth:`accept`, if any.
        self.subprotocol: str | None = None
        self.state = WebSocketState.CONNECTING
        self._session: WebSocketSession | None = None
        self._timer: DeadlineTimer | None = None
        self._messages: collections.deque[Message] = collections.deque()
        #: The waiter of :meth:`receive`, woken by a message or the end.
        self._waiter: asyncio.Future[None] | None = None
        self._end: PeerClosed | Closed | Failed | None = None
        self._ended = asyncio.Event()
        self._reading_paused = False
        #: Writes what :meth:`send` held back, on the loop's next turn.
        self._flush_handle: asyncio.Handle | None = None
        #: Set by :meth:`close` before accepting: the handshake is refused with 403.
        self.refused = False
        bind = getattr(channel, "bind", None)
        if bind is not None:
            bind(self)

    async def accept(self, subprotocol: str | None = None, *, headers: list[tuple[str, str]] | None = None) -> None:
        """
        Open the WebSocket (``101`` on HTTP/1.1, ``200`` on HTTP/2).

        :param subprotocol: one of :attr:`subprotocols`, or ``None``.
        :param headers: more response fields (e.g. ``Set-Cookie``).
        :raises RuntimeError: if already accepted or refused.
        :raises ValueError: if ``subprotocol`` was not offered.
        """
        if self.state is not WebSocketState.CONNECTING or self.refused:
            raise RuntimeError(f"the WebSocket cannot be accepted: it is {self.state.value}")
        offer = self._channel.offer
        if not isinstance(offer, WebSocketOffer):
            raise RuntimeError(f"the WebSocket handshake was refused: {offer.reason}")
        settings = self._channel.settings
        deflate = negotiate_deflate(offer.extensions) if settings.ws_compression else None
        status, fields = accept_headers(offer, subprotocol=subprotocol, deflate=deflate)
        extra = [*self._response_headers, *(headers or ())]
        fields.extend((name.lower(), value) if offer.http2 else (name, value) for name, value in extra)
        loop = asyncio.get_running_loop()
        self._session = WebSocketSession(settings, loop.time, deflate=deflate)
        self._timer = DeadlineTimer(loop, self._on_timer)
        self.subprotocol = subprotocol
        self.state = WebSocketState.OPEN
        await self._channel.send_head(status, fields)
        self._timer.set(self._session.next_deadline())

    # from the backend

    def feed_data(self, data: bytes | None) -> None:
        """Bytes from the peer, or ``None`` at its end (EOF, END_STREAM, a reset)."""
        session = self._session
        if session is None or self.state is WebSocketState.CLOSED:
            return
        self._handle(session.receive_data(data))

    def _on_timer(self) -> None:
        session = self._session
        if session is not None:
            self._handle(session.handle_timeout())

    def _handle(self, events: list[Any]) -> None:
        session = self._session
        assert session is not None
        for event in events:
            if isinstance(event, Message):
                self._messages.append(event)
            elif isinstance(event, (PeerClosed, Closed, Failed)):
                self._end = event
                self._ended.set()
                if isinstance(event, Failed):
                    logger.info("WebSocket closed with %d: %s.", event.code, event.reason)
        out = session.data_to_send()
        if out:
            self._channel.write(out)
        if session.closed:
            if self.state is not WebSocketState.CLOSED:
                self.state = WebSocketState.CLOSED
                assert self._timer is not None
                self._timer.cancel()
                self._channel.finish()
        else:
            if not self._reading_paused and session.should_pause_reading():
                self._reading_paused = True
                self._channel.pause_reading()
            assert self._timer is not None
            self._timer.set(session.next_deadline())
        waiter = self._waiter
        if waiter is not None and (self._messages or self._end is not None) and not waiter.done():
            waiter.set_result(None)

    # for the handler

    async def receive(self) -> str | bytes:
        """
        The next message: ``str`` for a text message, ``bytes`` for a binary one.

        :raises WebSocketDisconnect: when the WebSocket is closed (by either side).
        """
        if self.state is WebSocketState.CONNECTING:
            await self.accept()
        while not self._messages:
            if self._end is not None:
                raise WebSocketDisconnect(self._end.code, self._end.reason)
            # Nothing can arrive between the check above and this wait (no await in between).
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._messages.popleft()
        session = self._session
        assert session is not None
        session.message_consumed(message)
        if self._reading_paused and not session.should_pause_reading():
            self._reading_paused = False
            self._channel.resume_reading()
        return message.data

    async def send(self, data: str | bytes) -> None:
        """
        Send a message: text for ``str``, binary for ``bytes``. Waits while the peer reads
        too slowly (up to ``ws_send_timeout``).

        :raises WebSocketDisconnect: if the WebSocket is closing or closed.
        """
        if not isinstance(data, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"a WebSocket message is str or bytes, not {type(data).__name__}")
        if self.state is WebSocketState.CONNECTING:
            await self.accept()
        session = self._session
        assert session is not None
        try:
            session.send_message(data if isinstance(data, str) else bytes(data))
        except SessionClosedError:
            end = self._end
            raise WebSocketDisconnect(*(end.code, end.reason) if end else (1000, "closing")) from None
        if self._messages and session.output_size < BATCH_BYTES:
            # More received messages wait: the handler is likely to answer them too, so the
            # replies go out in one write, with the last of them or at the loop's next turn.
            if self._flush_handle is None:
                self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)
        else:
            self._channel.write(session.data_to_send())
        if self._channel.must_wait() or self._end is not None:
            await self._drain()

    def _flush(self) -> None:
        """Write what :meth:`send` held back (a message sent moves no deadline earlier: nothing else to do)."""
        self._flush_handle = None
        session = self._session
        if session is not None and session.output_size:
            self._channel.write(session.data_to_send())

    async def _drain(self) -> None:
        channel = self._channel
        session = self._session
        assert session is not None and self._timer is not None
        while channel.must_wait() and self._end is None:
            # The peer has ws_send_timeout to make room; the session ends the WebSocket past it.
            session.pause_output()
            self._timer.set(session.next_deadline())
            drained = asyncio.ensure_future(channel.drain())
            ended = asyncio.ensure_future(self._ended.wait())
            try:
                await asyncio.wait({drained, ended}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                drained.cancel()
                ended.cancel()
                session.resume_output()
        if self._end is not None:
            raise WebSocketDisconnect(self._end.code, self._end.reason)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """
        Close the WebSocket and wait for the peer's Close (up to ``ws_close_timeout``). Before
        it is accepted, this refuses the handshake with ``403``.
        """
        if self.state is WebSocketState.CONNECTING:
            self.refused = True
            return
        session = self._session
        assert session is not None
        session.close(code, reason)
        self._handle([])
        await self._ended.wait()


async def invoke_websocket_route(ctx: HTTPRequestContext, route: Route, params: dict[str, Any]) -> Response:
    """
    Run a WebSocket handler: before accepting, what it returns or raises is the HTTP answer to
    the handshake (``None``, or :meth:`WebSocket.close`, refuses it with ``403``); after, the
    WebSocket is closed when the handler ends (1000, or 1011 if it raised) and the response
    returned, which carries the status that opened the WebSocket, is only logged.
    """
    channel: WebSocketChannel | None = ctx.environ.get(CHANNEL_KEY)
    if channel is None:
        # A handshake the backend did not take up (e.g. injected without a network).
        return _plain(400, "This server cannot open a WebSocket for this request.")
    offer = channel.offer
    if isinstance(offer, HandshakeRejection):
        # (The reasons are sentences already.)
        logger.info("WebSocket handshake for %s refused: %s", ctx.environ["PATH_INFO"], offer.reason)
        return _plain(offer.status, offer.reason, offer.headers)
    config = getattr(ctx.app, "config", {})
    server_headers = config.get("server_header", True)
    tokens = [("Server", SERVER_TOKEN), ("X-Powered-By", SERVER_TOKEN)] if server_headers else None
    make_websocket = getattr(channel, "make_websocket", None)
    if make_websocket is not None:
        # A server that frames the messages itself (ASGI) gives a channel that makes a
        # message-level WebSocket, with the same API.
        websocket = ctx.websocket = make_websocket(tokens)
    else:
        websocket = ctx.websocket = WebSocket(channel, response_headers=tokens)
    accepted_status = 200 if offer.http2 else 101
    try:
        response = await route.invoke(ctx, params=params)
    except Exception as e:
        if not websocket.accepted:
            raise
        logger.error("WebSocket handler %s failed; closing with 1011.", route.get_endpoint_name(), exc_info=e)
        await websocket._end_after_handler(e)
        return Response(status=accepted_status)
    if not websocket.accepted:
        if websocket.refused or response.status_code == 204:
            response.close()
            return _plain(403, "The WebSocket was refused.")
        return response
    response.close()
    await websocket._end_after_handler(None)
    return Response(status=accepted_status)


def _plain(status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(text + "\n", status=status, headers=list(headers), content_type="text/plain; charset=utf-8")
