"""
The WebSocket of an HTTP/1.1 connection: :class:`H11WebSocketChannel`.

The HTTP/1.1 shell makes one for each request that asks for a WebSocket and leaves it in the
environ (:data:`~kyoukai.websocket.CHANNEL_KEY`), where the handler's
:class:`~kyoukai.websocket.WebSocket` finds it. When the handler accepts, the shell writes the
``101`` and hands the transport over: the channel is then the connection's asyncio protocol.
It feeds what arrives to the WebSocket, writes its frames, stops reading while the handler is
behind and makes the WebSocket wait while the client is, and ends the connection once the
WebSocket is over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from kyoukai.backends.transport import abort_transport, close_transport
from kyoukai.protocol.ws.handshake import HandshakeRejection, WebSocketOffer
from kyoukai.protocol.ws.settings import WebSocketSettings
from kyoukai.websocket import WebSocket, WebSocketState

if TYPE_CHECKING:
    from kyoukai.asphalt import KyoukaiBaseComponent

#: The close code and reason of the WebSockets still open when the server stops.
GOING_AWAY = (1001, "the server is shutting down")


class H11WebSocketChannel(asyncio.Protocol):
    """
    The :class:`~kyoukai.websocket.WebSocketChannel` of a WebSocket handshake on HTTP/1.1, and
    the connection's protocol once the handshake is accepted.

    :param offer: the handshake as the HTTP/1.1 core read it.
    :param settings: the WebSocket limits.
    :param component: the component serving the connection (its metrics and bookkeeping).
    :param open_websocket: called by :meth:`send_head` to write the head and hand the transport
        over (the HTTP/1.1 shell's part).
    """

    def __init__(
        self,
        offer: WebSocketOffer | HandshakeRejection,
        settings: WebSocketSettings,
        component: KyoukaiBaseComponent,
        open_websocket: Callable[[H11WebSocketChannel, int, list[tuple[str, str]]], None],
    ) -> None:
        self.offer = offer
        self.settings = settings
        #: The WebSocket of the handler, once made (see :meth:`bind`).
        self.websocket: WebSocket | None = None
        self.transport: asyncio.Transport | None = None
        self._component = component
        self._metrics = component.metrics
        self._open_websocket = open_websocket
        #: Set while the transport has room for more.
        self._writable = asyncio.Event()
        self._writable.set()
        #: Whether the WebSocket asked to read nothing for now.
        self._reading_paused = False
        #: Ends the lingering close of a cleartext connection.
        self._linger: asyncio.TimerHandle | None = None
        self._going_away: asyncio.Task[None] | None = None
        #: The task running the handler (it began as an HTTP/1.1 request).
        self.handler_task: asyncio.Task | None = None

    # the WebSocketChannel, for the WebSocket

    def bind(self, websocket: WebSocket) -> None:
        """The WebSocket made over this channel: what arrives is fed to it."""
        self.websocket = websocket

    async def send_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Write the ``101`` and take over the connection."""
        self._open_websocket(self, status, headers)

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
            self._metrics.bytes_out += len(data)

    def must_wait(self) -> bool:
        return not self._writable.is_set()

    async def drain(self) -> None:
        await self._writable.wait()

    def pause_reading(self) -> None:
        self._reading_paused = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()

    def resume_reading(self) -> None:
        self._reading_paused = False
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def finish(self) -> None:
        """
        The WebSocket is over: close once what was written is sent. On cleartext the connection
        is half-closed and the client's bytes are read and dropped until it closes too (within
        ``ws_close_timeout``): closing a socket with unread bytes would send a reset, which can
        destroy our Close frame before the client reads it. TLS closes with ``close_notify``.
        """
        transport = self.transport
        if transport is None or transport.is_closing() or self._linger is not None:
            return
        loop = asyncio.get_running_loop()
        if self._reading_paused:
            self.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
            self._linger = loop.call_later(self.settings.ws_close_timeout, abort_transport, transport)
        else:
            close_transport(transport, loop, self.settings.ws_close_timeout)

    # the connection, once the handshake is accepted

    def adopt(self, transport: asyncio.Transport, data: bytes, *, write_paused: bool, reading_paused: bool) -> None:
        """
        Take over ``transport`` from the HTTP/1.1 protocol (which stops reading it while a
        handshake is answered); ``data`` is what that received after the handshake's head.
        """
        self.transport = transport
        if write_paused:
            self._writable.clear()
        if reading_paused:
            transport.resume_reading()
        if data:
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        self._metrics.bytes_in += len(data)
        assert self.websocket is not None
        self.websocket.feed_data(data)

    def eof_received(self) -> bool:
        assert self.websocket is not None
        self.websocket.feed_data(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
        self._writable.set()
        if self.websocket is not None:
            self.websocket.feed_data(None)
        self._component.connection_closed(self)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # lifecycle used by the component

    def shutdown(self) -> None:
        """The server stops: close the WebSocket with 1001 (going away)."""
        websocket = self.websocket
        if websocket is not None and websocket.state is WebSocketState.OPEN and self._going_away is None:
            self._going_away = asyncio.get_running_loop().create_task(websocket.close(*GOING_AWAY))

    def abort(self) -> None:
        """Drop the connection now."""
        if self.transport is not None:
            abort_transport(self.transport)

    def running_tasks(self) -> list[asyncio.Task]:
        """The handler's task and the closing one, while they run."""
        return [task for task in (self.handler_task, self._going_away) if task is not None and not task.done()]
