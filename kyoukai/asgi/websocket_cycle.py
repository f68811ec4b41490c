"""
One WebSocket served by an ASGI app (the ``websocket`` scope), over HTTP/1.1 or HTTP/2 (RFC
8441): the app's messages are mapped onto a :class:`~kyoukai.websocket.WebSocket` on the
channel the backend made, so the WebSocket limits and timers are those of Kyoukai's own
WebSocket routes.

``websocket.accept`` opens it (``101``, or ``200`` on HTTP/2); ``websocket.close`` before that
refuses the handshake with ``403``, and so does a denial response (the
``websocket.http.response`` extension) with its own status. The cycle lasts until the app
returns: an open WebSocket is then closed with ``1000`` (``1011`` if the app raised).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from werkzeug.exceptions import InternalServerError
from werkzeug.wrappers import Response

from kyoukai import debugpage
from kyoukai.asgi.http_cycle import ASGIApp, ASGIResponse, decode_fields
from kyoukai.asgi.scope import Disconnected, ServeOptions, connection_scope
from kyoukai.protocol.ws.handshake import HandshakeRejection
from kyoukai.websocket import WebSocket, WebSocketChannel, WebSocketDisconnect

logger = logging.getLogger("kyoukai.asgi")


def _plain(status: int, text: str, headers: Any = ()) -> Response:
    return Response(text + "\n", status=status, headers=list(headers), content_type="text/plain; charset=utf-8")


class WebSocketCycle:
    """
    A WebSocket handshake and the WebSocket it opens, for an ASGI app.

    :param app: the ASGI application.
    :param environ: the handshake request's WSGI environ.
    :param channel: the backend's WebSocket channel (``environ[kyoukai.websocket.CHANNEL_KEY]``).
    :param options: the app's settings.
    :param state: the lifespan state (the scope gets a shallow copy).
    """

    def __init__(
        self,
        app: ASGIApp,
        environ: dict[str, Any],
        channel: WebSocketChannel,
        options: ServeOptions,
        state: dict[str, Any],
    ) -> None:
        self.app = app
        self.environ = environ
        self.channel = channel
        self.options = options
        self.state = state
        self.websocket: WebSocket | None = None
        self.scope: dict[str, Any] = {}
        #: The HTTP answer to the handshake (a refusal), or ``None`` once the app accepted.
        self._outcome: asyncio.Future[Response | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._connect_sent = False
        self._denial: tuple[int, list[tuple[str, str]]] | None = None
        self._denial_body: list[bytes] = []
        self._closed_by_app = False
        #: Set once the app answered the handshake, or the client went away before it did.
        self._handshake_over = asyncio.Event()
        self._gone = False
        self._grace: asyncio.TimerHandle | None = None

    async def run(self, tasks: set[asyncio.Task[None]]) -> Response:
        """
        Run the app (its task goes into ``tasks``) until it refuses the handshake (the refusal
        is returned) or, once it accepted, until it returns (a response carrying the status
        that opened the WebSocket, for the access log, is returned).
        """
        offer = self.channel.offer
        if isinstance(offer, HandshakeRejection):
            logger.info("WebSocket handshake for %s refused: %s", self.environ["PATH_INFO"], offer.reason)
            return _plain(offer.status, offer.reason, offer.headers)
        self.websocket = WebSocket(self.channel, response_headers=list(self.options.server_headers))
        self.scope = connection_scope(self.environ, "websocket", self.options.root_path, self.state)
        self.scope["subprotocols"] = list(offer.subprotocols)
        self.scope["extensions"] = {"websocket.http.response": {}}
        loop = asyncio.get_running_loop()
        outcome = self._outcome = loop.create_future()
        task = self._task = loop.create_task(self._run_app())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        try:
            response = await asyncio.shield(outcome)
            if response is not None:
                return response
            # Accepted: the WebSocket lives as long as the app's task.
            await asyncio.wait({task})
        except asyncio.CancelledError:
            # The backend gave up: the client went away before the WebSocket opened, or the
            # stream of an open one was reset and its app did not end within ws_close_timeout.
            self._client_gone()
            raise
        return Response(status=200 if offer.http2 else 101)

    def _client_gone(self) -> None:
        self._gone = True
        self._handshake_over.set()
        task = self._task
        if task is not None and not task.done() and self._grace is None:
            self._grace = asyncio.get_running_loop().call_later(self.options.disconnect_timeout, task.cancel)

    async def _run_app(self) -> None:
        error: BaseException | None = None
        try:
            await self.app(self.scope, self.receive, self.send)
        except asyncio.CancelledError as e:
            error = e
            raise
        except Exception as e:
            error = e
        finally:
            if self._grace is not None:
                self._grace.cancel()
            await self._app_ended(error)

    async def _app_ended(self, error: BaseException | None) -> None:
        websocket = self.websocket
        assert websocket is not None and self._outcome is not None
        path = self.environ["PATH_INFO"]
        if websocket.accepted:
            if isinstance(error, asyncio.CancelledError):
                return
            if error is not None and not isinstance(error, Disconnected):  # (a send that found it closed)
                logger.error("The ASGI app failed on the WebSocket %s; closing with 1011.", path, exc_info=error)
            # (The same ending as Kyoukai's own WebSocket routes.)
            await websocket._end_after_handler(error)
            return
        if self._outcome.done():
            return
        if error is None:
            logger.error("The ASGI app returned without accepting or closing the WebSocket %s; sending 500.", path)
        elif not isinstance(error, asyncio.CancelledError):
            what = type(error).__name__
            logger.error(
                "The ASGI app raised %s on the WebSocket handshake %s; sending 500.", what, path, exc_info=error
            )
        if self.options.debug and isinstance(error, Exception):
            response = Response(debugpage.render(error), status=500, content_type=debugpage.CONTENT_TYPE)
        else:
            response = InternalServerError().get_response(self.environ)
        self._decide(response)

    def _decide(self, response: Response | None) -> None:
        outcome = self._outcome
        assert outcome is not None
        if not outcome.done():
            if response is not None:
                for name, value in self.options.server_headers:
                    if name not in response.headers:
                        response.headers[name] = value
            outcome.set_result(response)
            self._handshake_over.set()

    # receive

    async def receive(self) -> dict[str, Any]:
        """``websocket.connect``, then the messages (``websocket.receive``), then ``websocket.disconnect``."""
        if not self._connect_sent:
            self._connect_sent = True
            return {"type": "websocket.connect"}
        websocket = self.websocket
        assert websocket is not None and self._outcome is not None
        if not websocket.accepted:
            # Nothing arrives before the app answers the handshake (another of its tasks may):
            # wait for the answer, or for the client to go away.
            await self._handshake_over.wait()
            if not websocket.accepted:
                return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
        try:
            message = await websocket.receive()
        except WebSocketDisconnect as e:
            return {"type": "websocket.disconnect", "code": e.code, "reason": e.reason}
        if isinstance(message, str):
            return {"type": "websocket.receive", "text": message}
        return {"type": "websocket.receive", "bytes": message}

    # send

    async def send(self, message: dict[str, Any]) -> None:
        """Take one ASGI message of the app."""
        kind = message["type"]
        websocket = self.websocket
        outcome = self._outcome
        assert websocket is not None and outcome is not None
        if kind == "websocket.send":
            if not websocket.accepted:
                raise RuntimeError("the ASGI app sent websocket.send before websocket.accept")
            data = message.get("bytes")
            if data is None:
                data = message.get("text")
            if data is None:
                raise ValueError("websocket.send needs bytes or text")
            try:
                await websocket.send(data)
            except WebSocketDisconnect as e:
                raise Disconnected(f"the WebSocket is closed ({e})") from None
        elif kind == "websocket.accept":
            if websocket.accepted or outcome.done():
                raise RuntimeError("the ASGI app sent websocket.accept after the handshake was answered")
            if self._gone:
                raise Disconnected("the client went away before the WebSocket opened")
            await websocket.accept(message.get("subprotocol"), headers=decode_fields(message.get("headers") or ()))
            self._decide(None)
        elif kind == "websocket.close":
            if not websocket.accepted:
                self._decide(_plain(403, "The WebSocket was refused."))
                return
            if self._closed_by_app:
                return
            self._closed_by_app = True
            await websocket.close(int(message.get("code") or 1000), message.get("reason") or "")
        elif kind == "websocket.http.response.start":
            if websocket.accepted or outcome.done() or self._denial is not None:
                raise RuntimeError("the ASGI app sent websocket.http.response.start after the handshake was answered")
            self._denial = (int(message["status"]), decode_fields(message.get("headers") or ()))
        elif kind == "websocket.http.response.body":
            if self._denial is None or outcome.done():
                raise RuntimeError("the ASGI app sent websocket.http.response.body without a denial response to send")
            self._denial_body.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                status, headers = self._denial
                self._decide(ASGIResponse(self._denial_body, status=status, headers=headers))
        else:
            raise ValueError(f"the ASGI app sent a message of type {kind!r} in a websocket scope")
