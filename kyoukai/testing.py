"""
Testing an app without a network: inject requests straight into the request pipeline, or open
a WebSocket to it (:meth:`TestKyoukai.websocket_connect`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from asphalt.core import Context
from werkzeug.wrappers import Response
from wsproto import events as wse
from wsproto.connection import Connection, ConnectionType
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from kyoukai.app import Kyoukai
from kyoukai.blueprint import Blueprint
from kyoukai.protocol.ws.handshake import HandshakeRejection, WebSocketOffer, check_upgrade_request
from kyoukai.protocol.ws.settings import WebSocketSettings
from kyoukai.settings import ServerSettings
from kyoukai.websocket import CHANNEL_KEY, WebSocket, WebSocketDisconnect
from kyoukai.wsgi import to_wsgi_environment


class TestKyoukai(Kyoukai):
    """
    A :class:`~.Kyoukai` app with helpers for tests.

    :param base_context: the parent context of the injected requests' contexts.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, *args: Any, base_context: Context | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.base_context = base_context

    @classmethod
    def wrap_existing_app(cls, app: Kyoukai, base_context: Context | None = None) -> TestKyoukai:
        """A :class:`TestKyoukai` sharing the routes and configuration of ``app``."""
        new = cls(
            app.name,
            server_name=app.server_name,
            base_context=base_context,
            request_class=app.request_class,
            response_class=app.response_class,
            context_class=app.context_class,
            **app.config,
        )
        new._root_bp = app.root
        return new

    @contextmanager
    def testing_bp(self) -> Iterator[Blueprint]:
        """Swap in a fresh, empty root blueprint for the duration of the ``with`` block."""
        old_root = self._root_bp
        self._root_bp = Blueprint(f"{self.name}-testing")
        try:
            yield self._root_bp
        finally:
            self._root_bp = old_root

    async def inject_request(
        self,
        headers: Mapping[str, str] | list[tuple[str, str]],
        url: str,
        method: str = "GET",
        body: str | bytes | None = None,
    ) -> Response:
        """Process a request built from the arguments and return the response."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        stream = io.BytesIO(body or b"")
        header_list = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        if body and not any(name.lower() == "content-length" for name, _ in header_list):
            header_list.append(("Content-Length", str(len(body))))
        # The server address stands in for a missing Host header, as on a real socket.
        environ = to_wsgi_environment(header_list, method, url, "1.1", body=stream, server=("localhost", 80))
        request = self.request_class(environ)
        self.finalize()
        return await self.process_request(request, self.base_context)

    @contextlib.asynccontextmanager
    async def websocket_connect(
        self,
        url: str,
        headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
        subprotocols: Sequence[str] = (),
    ) -> AsyncIterator[WebSocketClient]:
        """
        Open a WebSocket to the app, in memory: the handshake request goes through the routes,
        hooks and handler as over a network, with the WebSocket limits of :attr:`config`.
        Leaving the ``async with`` block closes the WebSocket (1000) if it is open and waits
        for the handler to return.

        :param url: the path (and query) of the handshake request.
        :param headers: more request fields; they replace the handshake's own of the same name.
        :param subprotocols: the subprotocols to offer, in order of preference.
        :raises WebSocketRefused: when the app answers the handshake with an HTTP response.
        """
        fields = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode("ascii")),
            ("Sec-WebSocket-Version", "13"),
        ]
        if subprotocols:
            fields.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
        extra = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
        replaced = {name.lower() for name, _ in extra}
        fields = [(name, value) for name, value in fields if name.lower() not in replaced] + extra
        channel = _MemoryChannel(
            check_upgrade_request("GET", fields), ServerSettings.from_config(self.config).websocket
        )
        environ = to_wsgi_environment(fields, "GET", url, "1.1", server=("localhost", 80))
        environ[CHANNEL_KEY] = channel
        self.finalize()
        handler = asyncio.ensure_future(self.process_request(self.request_class(environ), self.base_context))
        opened = asyncio.ensure_future(channel.opened.wait())
        try:
            await asyncio.wait({handler, opened}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
        if not channel.opened.is_set():
            raise WebSocketRefused(handler.result())
        client = WebSocketClient(channel, handler)
        try:
            yield client
        except BaseException:
            handler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await handler
            raise
        await client.close()
        await handler


class WebSocketRefused(Exception):
    """The app answered a WebSocket handshake with an HTTP response instead of opening it."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"the WebSocket handshake was answered with {response.status}")
        #: The app's response (its status, headers and body).
        self.response = response
        self.status_code = response.status_code


class _MemoryChannel:
    """
    The :class:`~kyoukai.websocket.WebSocketChannel` of :meth:`TestKyoukai.websocket_connect`:
    what the app writes goes straight to the client's frame parser.
    """

    def __init__(self, offer: WebSocketOffer | HandshakeRejection, settings: WebSocketSettings) -> None:
        self.offer = offer
        self.settings = settings
        self.websocket: WebSocket | None = None
        #: The status and fields of the response that opened the WebSocket.
        self.head: tuple[int, list[tuple[str, str]]] = (0, [])
        self.opened = asyncio.Event()
        #: The client's frame parser, fed what the app writes.
        self.client = Connection(ConnectionType.CLIENT)
        #: Set when the app writes or finishes; the client clears it before waiting.
        self.changed = asyncio.Event()
        self.finished = False

    def bind(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    async def send_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.head = (status, headers)
        self.opened.set()

    def write(self, data: bytes) -> None:
        with contextlib.suppress(LocalProtocolError):  # the client is closed: nothing reaches it
            self.client.receive_data(data)
        self.changed.set()

    def must_wait(self) -> bool:
        return False

    async def drain(self) -> None:
        return None

    def pause_reading(self) -> None:
        """Nothing to pause: the client's messages are handed over as it sends them."""

    def resume_reading(self) -> None:
        """See :meth:`pause_reading`."""

    def finish(self) -> None:
        self.finished = True
        self.changed.set()


class WebSocketClient:
    """
    The client's end of a WebSocket opened by :meth:`TestKyoukai.websocket_connect`. Pings are
    answered, and the app's Close echoed, while :meth:`receive` or :meth:`close` runs.
    """

    def __init__(self, channel: _MemoryChannel, handler: asyncio.Future[Response]) -> None:
        self._channel = channel
        self._handler = handler
        self._conn = channel.client
        #: The status of the response that opened the WebSocket (101).
        self.status = channel.head[0]
        #: Its header fields.
        self.headers = channel.head[1]
        #: The subprotocol the app chose, if any.
        self.subprotocol: str | None = next(
            (value for name, value in self.headers if name.lower() == "sec-websocket-protocol"), None
        )
        #: The close code and reason, once the WebSocket is closed.
        self.close_code: int | None = None
        self.close_reason = ""
        self._close_sent = False
        self._close_received = False

    async def send(self, data: str | bytes) -> None:
        """
        Send a message: text for ``str``, binary for ``bytes``.

        :raises WebSocketDisconnect: if the WebSocket is closing or closed.
        """
        if self._close_sent or self._close_received:
            raise WebSocketDisconnect(self.close_code or 1006, self.close_reason)
        message = wse.TextMessage(data=data) if isinstance(data, str) else wse.BytesMessage(data=bytes(data))
        self._to_app(self._conn.send(message))
        await asyncio.sleep(0)  # the app's turn, as if the bytes had crossed a network

    async def receive(self) -> str | bytes:
        """
        The next message from the app: ``str`` for text, ``bytes`` for binary.

        :raises WebSocketDisconnect: when the WebSocket is closed (with the app's code).
        """
        pieces: list[Any] = []
        while True:
            event = await self._next_event()
            if isinstance(event, wse.Message):
                pieces.append(event.data)
                if event.message_finished:
                    return "".join(pieces) if isinstance(event.data, str) else b"".join(pieces)
            elif isinstance(event, wse.CloseConnection):
                raise WebSocketDisconnect(event.code, event.reason or "")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the WebSocket (if it is open) and wait for the app's Close."""
        if not (self._close_sent or self._close_received):
            self._to_app(self._conn.send(wse.CloseConnection(code=code, reason=reason)))
            self._close_sent = True
        while not self._close_received:
            await self._next_event()

    async def _next_event(self) -> wse.Event:
        """The next event of the app's bytes, once pings and Close are answered; waits for more."""
        conn, channel = self._conn, self._channel
        while True:
            event = next(conn.events(), None)
            if isinstance(event, wse.Ping):
                self._to_app(conn.send(event.response()))
            elif isinstance(event, wse.CloseConnection):
                self.close_code, self.close_reason = int(event.code), event.reason or ""
                self._close_received = True
                if not self._close_sent:
                    self._close_sent = True
                    if event.code != CloseReason.ABNORMAL_CLOSURE:  # (1006: no Close came, none goes back)
                        self._to_app(conn.send(event.response()))
                return event
            elif event is not None:
                return event
            elif channel.finished or self._handler.done():
                if self._close_received:
                    raise WebSocketDisconnect(self.close_code or 1006, self.close_reason)
                conn.receive_data(None)  # the app is gone without a Close: 1006
            else:
                channel.changed.clear()
                changed: asyncio.Future[Any] = asyncio.ensure_future(channel.changed.wait())
                try:
                    await asyncio.wait({changed, self._handler}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()

    def _to_app(self, data: bytes) -> None:
        websocket = self._channel.websocket
        assert websocket is not None
        websocket.feed_data(data)
