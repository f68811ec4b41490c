"""
HTTP/2 over asyncio: :class:`H2KyoukaiProtocol`, the shell of the protocol core
(:class:`~kyoukai.protocol.h2.connection.H2ServerConnection`), which moves bytes between the
transport and the core and acts on its events; :class:`H2State`, a stream as its handler
sees it; and :class:`H2KyoukaiComponent`, the HTTP/2-only port. The app's side of each stream
is in :mod:`kyoukai.backends.h2_handler`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kyoukai.asphalt import KyoukaiBaseComponent
from kyoukai.backends.h2_handler import StreamHandling
from kyoukai.backends.h2_websocket import H2WebSocketChannel, close_websockets
from kyoukai.backends.transport import DeadlineTimer, abort_transport, close_transport, transport_ends
from kyoukai.body import RequestBody
from kyoukai.protocol import events as ev
from kyoukai.protocol.fields import content_length
from kyoukai.protocol.h2.connection import H2ServerConnection, response_block
from kyoukai.tls import create_server_context, negotiated_protocol
from kyoukai.wsgi import H2_PROTOCOL_KEY, h2_headers_of_upgrade

if TYPE_CHECKING:
    from asphalt.core import Context

    from kyoukai.app import Kyoukai

logger = logging.getLogger("kyoukai.http2")


class H2State(RequestBody):
    """
    One HTTP/2 stream as its handler sees it: the request (its environ, and its body as
    ``wsgi.input``) and the response being sent; or a WebSocket (RFC 8441): see :attr:`channel`.

    :param headers: the request's header block, as ``(name, value)`` byte pairs.
    :param stream_id: the stream's id.
    :param protocol: the connection's protocol object.
    """

    def __init__(self, headers: list[tuple[bytes, bytes]], stream_id: int, protocol: H2KyoukaiProtocol) -> None:
        # Credit goes back through the protocol: a bound method of this object kept on it is a cycle.
        super().__init__(
            max_size=protocol.settings.max_body_size,
            on_consumed=functools.partial(protocol.acknowledge, stream_id),
            timeout=protocol.settings.body_timeout,
        )
        self.stream_id = stream_id
        self.protocol = protocol
        self.headers = headers
        #: The request's WSGI environ (``wsgi.input`` is this object).
        self.environ = protocol.build_environ(headers, self)
        if (length := content_length(self.environ.get("CONTENT_LENGTH", ""))) is not None:
            self.expected_length = length
        #: The handler task; whether the response head went out; whether the stream is gone.
        self.task: asyncio.Task | None = None
        self.headers_sent = False
        self.closed = False
        self._status: str | None = None
        self._response_headers: list[tuple[str, str]] = []
        self._response_body: Any = None
        self._sendable: asyncio.Future | None = None
        #: The WebSocket of an extended CONNECT stream, where its DATA go (it has no request body).
        self.channel: H2WebSocketChannel | None = None
        if H2_PROTOCOL_KEY in self.environ:
            super().feed_eof()
            self.channel = H2WebSocketChannel(self)

    def insert_data(self, data: bytes, wake: bool = True) -> None:
        """Add request body data received on the stream (see :meth:`feed` for ``wake``)."""
        if self.channel is not None:
            self.channel.data_received(data)
        else:
            self.feed(data, wake)

    def feed_eof(self) -> None:
        """The client ended the request (on a WebSocket stream: its side of the WebSocket)."""
        if self.channel is not None:
            self.channel.peer_ended()
        else:
            super().feed_eof()

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        """The WSGI ``start_response`` callable: records the status and headers to send."""
        self._status = status.split(" ", 1)[0]
        self._response_headers = list(headers)

    def get_response_headers(self) -> list[tuple[str, str]]:
        """The HTTP/2 header block of the response: ``:status`` first, lowercase names."""
        return response_block(self._status or "200", self._response_headers)

    def sendable_waiter(self) -> asyncio.Future:
        """A future the stream's next :class:`~kyoukai.protocol.events.StreamSendable` completes (or its end)."""
        waiter = self._sendable
        if waiter is None or waiter.done():
            waiter = self._sendable = self.protocol.loop.create_future()
        return waiter

    def window_opened(self) -> None:
        """Wake the sender waiting for its queued bytes to go out."""
        waiter = self._sendable
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """Mark the stream gone; wake its sender so it stops."""
        self.closed = True
        self.window_opened()


class H2KyoukaiProtocol(StreamHandling, asyncio.Protocol):
    """
    Serves one HTTP/2 connection: the asyncio shell of an :class:`H2ServerConnection`.

    :param component: the component that accepted the connection.
    :param parent_context: the parent of the request contexts.
    """

    def __init__(self, component: KyoukaiBaseComponent, parent_context: Context) -> None:
        self.component = component
        self.app = component.app
        self.parent_context = parent_context
        self.settings = component.settings
        self.metrics = component.metrics
        #: The protocol core, made when the connection starts (as are the transport and loop).
        self.core: H2ServerConnection
        self.transport: asyncio.Transport
        self.loop: asyncio.AbstractEventLoop
        self.scheme = "http"
        self.server_address: tuple[str, int] | None = None
        self.peer: tuple[str, int] | None = None
        self._write_paused = False
        self._closed = False
        self._flush_handle: asyncio.Handle | None = None
        self._timer: DeadlineTimer
        self._fed: dict[H2State, None] = {}  # an ordered set, a quarter of a set's size
        self._join_writes = False

    @property
    def streams(self) -> dict[int, H2State]:
        """The streams whose handlers run, by id."""
        return {sid: s.app_state for sid, s in self.core.streams.items() if s.app_state and not s.finished}

    # asyncio callbacks

    def connection_made(self, transport: Any) -> None:
        """A new connection that speaks HTTP/2 from its first byte."""
        self.adopt(transport)
        self.component.connection_opened(self)

    def adopt(
        self,
        transport: Any,
        data: bytes = b"",
        *,
        upgrade: dict[str, Any] | None = None,
        preface_deadline: float | None = None,
    ) -> None:
        """Serve ``transport``; from HTTP/1.1, after the preface (in ``data``, due by ``preface_deadline``) or 101."""
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.scheme, self.server_address, self.peer = transport_ends(transport)
        # Over TLS each buffer of writelines() would be a TLS record: batches are joined.
        self._join_writes = self.scheme == "https"
        self._timer = DeadlineTimer(self.loop, self._on_timer)
        self.core = H2ServerConnection(
            self.settings,
            self.loop.time,
            metrics=self.metrics,
            peer=self.peer,
            alpn_h2=negotiated_protocol(transport) == "h2",
            upgrade_settings=None if upgrade is None else upgrade.get("HTTP_HTTP2_SETTINGS", ""),
            preface_deadline=preface_deadline,
        )
        if upgrade is not None:
            self._dispatch(self.core.receive_upgraded_request(h2_headers_of_upgrade(upgrade)))
            self._flush()
        self._set_timer()
        if data:
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        core = self.core
        if core.closed:
            return
        self.metrics.bytes_in += len(data)
        self._dispatch(core.receive_data(data))
        if self._fed:
            for state in self._fed:
                state.wake()
            self._fed.clear()
        self._schedule_flush()

    def eof_received(self) -> bool:
        return False  # the client's end of input is the connection's end

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._timer.cancel()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._dispatch(self.core.connection_lost())
        self.component.connection_closed(self)

    def pause_writing(self) -> None:
        # Reading stops too: PINGs would only queue acknowledgements behind unread data.
        self._write_paused = True
        self.core.pause_output()
        self.transport.pause_reading()
        self._set_timer()

    def resume_writing(self) -> None:
        self._write_paused = False
        self.core.resume_output()
        if not self._closed:
            self.transport.resume_reading()
            self._schedule_flush()

    # the core's events

    def _dispatch(self, events: list[Any]) -> None:
        for event in events:
            _EVENT_HANDLERS[event.__class__](self, event)

    def _state(self, stream_id: int) -> H2State | None:
        stream = self.core.streams.get(stream_id)
        return None if stream is None else stream.app_state

    def request_received(self, event: ev.RequestReceived) -> None:
        """A request head arrived: open its :class:`H2State` and start its handler."""
        record = self.core.streams.get(event.stream_id)
        if record is None:
            return  # reset in the same read
        state = H2State(event.headers, event.stream_id, self)
        record.app_state = state
        if event.ended:
            state.feed_eof()
        state.task = self.loop.create_task(self._handle(state))

    def receive_data(self, event: ev.RequestData) -> None:
        """Request body data: into the stream's state (woken once per read, in data_received)."""
        state = self._state(event.stream_id)
        if state is not None:
            state.insert_data(event.data, wake=False)
            self._fed[state] = None

    def stream_complete(self, event: ev.RequestEnded) -> None:
        """The client finished the request body."""
        state = self._state(event.stream_id)
        if state is not None:
            state.feed_eof()

    def trailers_received(self, event: ev.RequestTrailers) -> None:
        """Request trailers: kept in the environ as ``kyoukai.trailers``."""
        state = self._state(event.stream_id)
        if state is not None:
            state.environ["kyoukai.trailers"] = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.fields]

    def window_opened(self, event: ev.StreamSendable) -> None:
        """The stream's queued response bytes went out: its sender may go on."""
        state = self._state(event.stream_id)
        if state is not None:
            state.window_opened()

    def connection_ended(self, event: ev.ConnectionClosed) -> None:
        """The core ended the connection: write its last frames and close (or drop it)."""
        if self._closed:
            return
        self._closed = True
        if event.abort:
            abort_transport(self.transport)
            return
        self._write(self.core.data_to_send())
        close_transport(self.transport, self.loop, self.settings.send_timeout)

    # writing, timing and closing

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and not self._closed:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write what the core has to send, in batches, while the transport takes it."""
        self._flush_handle = None
        core = self.core
        while not self._closed:
            out = core.data_to_send()
            if out:
                self._write(out)
            events = core.take_events()
            if events:
                self._dispatch(events)
            if not out or self._write_paused:
                break
        self._set_timer()

    def _write(self, out: list[Any]) -> None:
        transport = self.transport
        if not out or transport.is_closing():
            return
        if len(out) == 1:
            transport.write(out[0])
        elif self._join_writes:
            transport.write(b"".join(out))
        else:
            transport.writelines(out)
        self.metrics.bytes_out += sum(map(len, out))

    def _set_timer(self) -> None:
        if not self._closed:
            self._timer.set(self.core.next_deadline())

    def _on_timer(self) -> None:
        self._dispatch(self.core.handle_timeout())
        self._flush()

    def close(self, error_code: int = 0) -> None:
        """End the connection: GOAWAY with ``error_code``, flush, then close the transport."""
        if not self._closed:
            self.core.close(error_code)
            self._flush()

    def shutdown(self) -> None:
        """Graceful shutdown: the two-step GOAWAY, the streams already opened finish, then close."""
        if not self._closed:
            self.core.start_drain()
            close_websockets(self)
            self._flush()

    def abort(self) -> None:
        """Drop the connection now (with a TCP reset)."""
        abort_transport(self.transport)


#: The handler of each event of the core: one table, not bound methods kept per connection.
_EVENT_HANDLERS: dict[type, Callable[[H2KyoukaiProtocol, Any], None]] = {
    ev.RequestReceived: H2KyoukaiProtocol.request_received,
    ev.RequestData: H2KyoukaiProtocol.receive_data,
    ev.RequestEnded: H2KyoukaiProtocol.stream_complete,
    ev.RequestTrailers: H2KyoukaiProtocol.trailers_received,
    ev.StreamSendable: H2KyoukaiProtocol.window_opened,
    ev.StreamClosed: H2KyoukaiProtocol.stream_reset,
    ev.ConnectionClosed: H2KyoukaiProtocol.connection_ended,
}


class H2KyoukaiComponent(KyoukaiBaseComponent):
    """
    An HTTP/2-only port. With a key and certificate it serves TLS (1.2 or newer, ALPN ``h2``,
    RFC 9113 cipher rules); without them, cleartext HTTP/2 with prior knowledge (behind a
    proxy). A client that does not speak HTTP/2 gets a short HTTP/1.1 505 saying so.

    :param app: the app, or a ``"module:attribute"`` reference to it.
    :param ssl_keyfile: the private key file (``None`` for cleartext).
    :param ssl_certfile: the certificate chain file (``None`` for cleartext).
    :param ip: the address to listen on.
    :param port: the port to listen on.
    :param cfg: the :class:`~.ServerSettings` limits.
    """

    def __init__(
        self,
        app: Kyoukai | str,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        *,
        ip: str = "",
        port: int = 4444,
        **cfg: Any,
    ) -> None:
        super().__init__(app, ip, port, **cfg)
        self.ssl_keyfile = ssl_keyfile
        self.ssl_certfile = ssl_certfile
        if bool(ssl_keyfile) != bool(ssl_certfile):
            raise ValueError("H2KyoukaiComponent needs both ssl_keyfile and ssl_certfile, or neither (cleartext)")

    def describe(self) -> str:
        return "HTTP/2 only"

    def create_ssl_context(self) -> Any:
        """The TLS context (ALPN ``h2`` only), or ``None`` for cleartext prior knowledge."""
        if not self.ssl_certfile:
            return None
        return create_server_context(self.ssl_certfile, self.ssl_keyfile, alpn_protocols=("h2",))

    def get_protocol(self, ctx: Context) -> H2KyoukaiProtocol:
        """A protocol object for a new connection."""
        return H2KyoukaiProtocol(self, ctx)

    async def start(self, ctx: Context) -> None:
        """Start listening."""
        await self._serve(ctx, lambda: self.get_protocol(ctx), self.create_ssl_context())
