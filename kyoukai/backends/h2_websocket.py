"""
WebSockets over HTTP/2 (RFC 8441): :class:`H2WebSocketChannel`, the
:class:`~kyoukai.websocket.WebSocketChannel` of an extended CONNECT stream.

Such a stream is a stream like any other. The ``200`` that opens the WebSocket is a response
head without END_STREAM; the WebSocket's frames go out as DATA through the core's scheduler,
under both flow-control windows, taking turns with the other streams; the DATA the client
sends go to the :class:`~kyoukai.websocket.WebSocket`, and their flow-control credit goes back
only while the handler keeps up with its messages, so a handler that does not read stops the
client. The stream is not a request body: ``max_body_size`` and ``body_timeout`` do not apply,
the WebSocket's own limits do. The client's END_STREAM or RST_STREAM ends the WebSocket (1006
without a Close); the WebSocket's end is END_STREAM after its last frame. A client that keeps
its side open after that gets RST_STREAM NO_ERROR once it has sent nothing for
``discard_timeout`` seconds (as any stream whose response ended first).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from kyoukai.accesslog import START_KEY
from kyoukai.protocol.h2.connection import response_block
from kyoukai.protocol.ws.handshake import check_connect_request
from kyoukai.websocket import CHANNEL_KEY, WebSocketState

if TYPE_CHECKING:
    from kyoukai.websocket import WebSocket

#: Bytes a WebSocket may have queued on its stream before ``send`` waits for them to go out
#: (as a transport's high-water mark: small messages do not wait for each other).
SEND_BUFFER = 64 * 1024


class H2WebSocketChannel:
    """
    The way from a :class:`~kyoukai.websocket.WebSocket` to its extended CONNECT stream.

    :param state: the stream (an :class:`~kyoukai.backends.http2.H2State`), whose environ gets
        the channel under :data:`~kyoukai.websocket.CHANNEL_KEY`.
    """

    def __init__(self, state: Any) -> None:
        self.state = state
        #: The connection (an :class:`~kyoukai.backends.http2.H2KyoukaiProtocol`).
        self.protocol = state.protocol
        self.stream_id = state.stream_id
        #: The handshake as read from the request.
        self.offer = check_connect_request(state.headers)
        #: The ``ws_*`` limits.
        self.settings = state.protocol.settings.websocket
        #: The WebSocket of the handler (once the route made one).
        self.websocket: WebSocket | None = None
        #: Whether the ``200`` went out: from then on the DATA both ways are WebSocket frames.
        self.opened = False
        #: DATA that came before the ``200`` (their credit is held back: a window at most).
        self._early: list[bytes] = []
        self._peer_ended = False
        self._reading_paused = False
        #: Credit held back while the handler is behind.
        self._owed = 0
        self._closing: asyncio.Task | None = None
        state.environ[CHANNEL_KEY] = self

    def bind(self, websocket: WebSocket) -> None:
        """The WebSocket made for this channel (called by it)."""
        self.websocket = websocket

    # the WebSocketChannel contract

    async def send_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        """The ``200`` (no END_STREAM); then what the client sent early is handed over."""
        state = self.state
        protocol = self.protocol
        websocket = self.websocket
        assert websocket is not None
        if state.closed or not protocol.core.send_response(self.stream_id, response_block(status, headers)):
            # The stream went before the WebSocket opened: it learns now that it has a session.
            websocket.feed_data(None)
            return
        state.headers_sent = True
        self.opened = True
        protocol.metrics.response_started("HTTP/2", status, state.environ.get(START_KEY))
        protocol._schedule_flush()
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)
        if self._peer_ended:
            websocket.feed_data(None)
        elif protocol.core.draining:
            self.going_away()  # opened after the shutdown began (before the client saw the GOAWAY)

    def write(self, data: bytes) -> None:
        """Queue bytes as DATA (the scheduler sends them as the windows allow)."""
        protocol = self.protocol
        if protocol.core.send_data(self.stream_id, data):
            protocol._schedule_flush()

    def must_wait(self) -> bool:
        """Whether more than :data:`SEND_BUFFER` bytes wait for a window or room in the transport."""
        pending = self.protocol.core.pending(self.stream_id)
        return pending is not None and pending > SEND_BUFFER and not self.state.closed

    async def drain(self) -> None:
        """Wait until every byte queued is out (or the stream is gone)."""
        state = self.state
        core = self.protocol.core
        # The core's StreamSendable completes the waiter once the queue is empty; no await
        # between the check and taking the waiter, so that event cannot be missed.
        while core.pending(self.stream_id) and not state.closed:
            await state.sendable_waiter()

    def pause_reading(self) -> None:
        """Hold back the credit of what arrives from now on."""
        self._reading_paused = True

    def resume_reading(self) -> None:
        """Return the credit held back."""
        self._reading_paused = False
        owed, self._owed = self._owed, 0
        if owed:
            self.protocol.acknowledge(self.stream_id, owed)

    def finish(self) -> None:
        """END_STREAM, after the frames queued."""
        protocol = self.protocol
        if protocol.core.end_stream(self.stream_id):
            protocol._schedule_flush()

    # from the connection

    def data_received(self, data: bytes) -> None:
        """DATA from the client: to the WebSocket, its credit back unless the handler is behind."""
        websocket = self.websocket
        if not self.opened or websocket is None:
            self._early.append(data)
            return
        websocket.feed_data(data)
        if self._reading_paused:
            self._owed += len(data)
        else:
            self.protocol.acknowledge(self.stream_id, len(data))

    def peer_ended(self) -> None:
        """The client's END_STREAM: its side of the WebSocket is over."""
        self._peer_ended = True
        if self.opened and self.websocket is not None:
            self.websocket.feed_data(None)

    def stream_gone(self) -> None:
        """
        The stream was reset or the connection lost. Before the ``200`` the handler is
        cancelled, as for any request; after, its WebSocket ends (1006), so that the handler
        learns it from ``receive`` or ``send`` (``WebSocketDisconnect``) and cleans up. One
        that touches neither is cancelled after ``ws_close_timeout``.
        """
        task = self.state.task
        websocket = self.websocket
        if not self.opened or websocket is None:
            if task is not None:
                task.cancel()
            return
        websocket.feed_data(None)
        if task is not None and not task.done():
            timer = self.protocol.loop.call_later(self.settings.ws_close_timeout, task.cancel)
            task.add_done_callback(lambda _: timer.cancel())

    def going_away(self) -> None:
        """Graceful shutdown: close an open WebSocket with 1001 (the handler sees the peer's answer)."""
        websocket = self.websocket
        if websocket is not None and websocket.state is WebSocketState.OPEN and self._closing is None:
            self._closing = self.protocol.loop.create_task(websocket.close(1001, "the server is shutting down"))


def close_websockets(protocol: Any) -> None:
    """Graceful shutdown of a connection: its open WebSockets close with 1001 (going away)."""
    for state in protocol.streams.values():
        if state.channel is not None:
            state.channel.going_away()
