"""
HTTP/1.1 over asyncio, and the way into HTTP/2 on a shared port.

The protocol logic is :class:`~kyoukai.protocol.h11.connection.H11ServerConnection`, a core
without I/O (httptools parses inside it); :class:`KyoukaiProtocol` is its shell, one per
connection. It feeds the transport's bytes to the core and acts on the events that come out:
a request head gets a :class:`~.RequestBody` as ``wsgi.input``, body data goes into it, a
rejection stops reading. A single task per connection answers the requests in the order the
core gives them (so pipelined requests are answered in the order they came) and writes the
bytes the core makes of each response, waiting while the transport is full; the shell pauses
reading when the core says so and turns the core's next deadline into one timer. A request
that asks for a WebSocket gets an :class:`~.H11WebSocketChannel` in its environ; when its
handler accepts, the ``101`` is written and the transport handed to that channel. When
``http2`` is on, a connection that negotiated ``h2`` by ALPN, starts with the HTTP/2 preface,
or asks for ``Upgrade: h2c`` is handed to an HTTP/2 protocol object.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from werkzeug.exceptions import BadRequest, InternalServerError, default_exceptions

from kyoukai.accesslog import START_KEY
from kyoukai.backends.h11_websocket import H11WebSocketChannel
from kyoukai.backends.transport import DeadlineTimer, abort_transport, close_transport, transport_ends
from kyoukai.body import RequestBody
from kyoukai.protocol import events as ev
from kyoukai.protocol.fields import InvalidFieldError
from kyoukai.protocol.h11.connection import H11ServerConnection, chunk
from kyoukai.protocol.h11.request import H11Request, Rejection
from kyoukai.tls import negotiated_protocol
from kyoukai.websocket import CHANNEL_KEY
from kyoukai.wsgi import prepared_response

if TYPE_CHECKING:
    from asphalt.core import Context

    from kyoukai.asphalt import KyoukaiComponent

logger = logging.getLogger("kyoukai.http11")

PROTOCOL_CLASS = "KyoukaiProtocol"


class KyoukaiProtocol(asyncio.Protocol):
    """
    Serves one HTTP/1.1 connection: the asyncio shell of an :class:`H11ServerConnection`.

    :param component: the component that accepted the connection.
    :param parent_context: the parent of the request contexts.
    """

    def __init__(self, component: KyoukaiComponent, parent_context: Context) -> None:
        self.component = component
        self.app = component.app
        self.parent_context = parent_context
        self.settings = component.settings
        self.metrics = component.metrics
        #: The protocol core, made when the connection starts (as are the transport and loop).
        self.core: H11ServerConnection
        self.transport: asyncio.Transport
        self.loop: asyncio.AbstractEventLoop
        #: Wakes the core at its next deadline.
        self._timer: DeadlineTimer
        self.scheme = "http"
        self.server_address: tuple[str, int] | None = None
        self.peer: tuple[str, int] | None = None
        #: The task answering the requests, while there are some to answer.
        self._task: asyncio.Task | None = None
        self._handed_over = False
        self._write_paused = False
        self._reading_paused = False
        self._drain_waiter: asyncio.Future | None = None
        #: The ``wsgi.input`` of the requests without a body, made for the first of them.
        self._no_body: RequestBody | None = None

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.loop = asyncio.get_running_loop()
        self._timer = DeadlineTimer(self.loop, self._on_timer)
        self.scheme, self.server_address, self.peer = transport_ends(transport)
        if self.component.http2 and negotiated_protocol(transport) == "h2":
            self._hand_over_to_h2(b"", register=True)
            return
        self.core = H11ServerConnection(
            self.settings,
            self.loop.time,
            scheme=self.scheme,
            server=self.server_address,
            peer=self.peer,
            protocol=self,
            h2c=self.component.http2 and self.scheme == "http",
        )
        self.component.connection_opened(self)
        self._timer.set(self.core.next_deadline())

    def data_received(self, data: bytes) -> None:
        if self._handed_over or not self.core.reading:
            return
        self.metrics.bytes_in += len(data)
        events = self.core.receive_data(data)
        if events:
            self._dispatch(events)
            if self._handed_over:
                return
        self._update_reading()
        self._timer.set(self.core.next_deadline())

    def eof_received(self) -> bool:
        # A client that closed its side is gone as far as we can tell (a fully closed socket
        # looks the same, and asyncio closes TLS transports on EOF anyway): closing the
        # transport makes connection_lost cancel the request in progress.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handed_over:
            return
        self._timer.cancel()
        core = self.core
        core.connection_lost()
        if self._task is not None:
            self._task.cancel()
        for req in core.requests:
            if req.app_state is not None:
                req.app_state.abort()
        self._fail_drain(ConnectionResetError("the client closed the connection"))
        self.component.connection_closed(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._handed_over:
            return
        self.core.pause_output()
        self._update_reading()
        self._timer.set(self.core.next_deadline())

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._handed_over:
            return
        self.core.resume_output()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._update_reading()

    # lifecycle used by the component

    def shutdown(self) -> None:
        """Finish the requests received, then close; close an idle one at once (see the core's ``start_shutdown``)."""
        if not self._handed_over:
            self._dispatch(self.core.start_shutdown())
            self._timer.set(self.core.next_deadline())

    def abort(self) -> None:
        """Drop the connection now (with a TCP reset)."""
        abort_transport(self.transport)

    def running_tasks(self) -> list[asyncio.Task]:
        """The tasks serving this connection (the component waits for them after an abort)."""
        return [self._task] if self._task is not None else []

    # the core's events

    def _dispatch(self, events: list[Any]) -> None:
        handlers = self._handlers
        for event in events:
            handlers[event.__class__](self, event)

    def _request_received(self, event: ev.H11RequestReceived) -> None:
        """A request head: its body reader becomes ``wsgi.input``, and its answer is queued."""
        req = event.request
        settings = self.settings
        if req.ended and req.expected_length is None and not req.received:
            # No body (a GET, say): the connection's empty body, which reads the same for every
            # request as nothing is ever fed to it, consumed from it or waited for.
            body = self._no_body or self._make_no_body()
        else:
            body = RequestBody(
                max_size=settings.max_body_size,
                expected_length=req.expected_length,
                on_consumed=lambda size: self._body_consumed(req, size),
                on_first_read=(lambda: self._send_continue(req)) if req.expects_continue else None,
                timeout=settings.body_timeout,
            )
        req.app_state = body
        req.environ["wsgi.input"] = body
        if req.websocket is not None:
            req.environ[CHANNEL_KEY] = H11WebSocketChannel(
                req.websocket, settings.websocket, self.component, functools.partial(self._open_websocket, req)
            )
        self._start_queue()

    def _make_no_body(self) -> RequestBody:
        body = self._no_body = RequestBody(max_size=self.settings.max_body_size, timeout=self.settings.body_timeout)
        body.feed_eof()
        return body

    def _request_data(self, event: ev.H11RequestData) -> None:
        event.request.app_state.feed(event.data)

    def _request_ended(self, event: ev.H11RequestEnded) -> None:
        event.request.app_state.feed_eof()

    def _request_rejected(self, event: ev.H11RequestRejected) -> None:
        """Stop reading; the rejection is answered after the requests before it."""
        req = event.request
        if req is not None and req.app_state is not None:
            req.app_state.abort(default_exceptions.get(event.status, BadRequest)(description=event.message))
        if not self.transport.is_closing():
            self.transport.pause_reading()
        self._reading_paused = True
        self._start_queue()

    def _preface_received(self, event: ev.H2PrefaceReceived) -> None:
        self._hand_over_to_h2(event.data, preface_deadline=event.deadline)

    def _h2c_upgrade_accepted(self, event: ev.H2cUpgradeAccepted) -> None:
        self.transport.write(event.response)
        self._hand_over_to_h2(event.data, upgrade=event.environ)

    def _connection_ended(self, event: ev.ConnectionClosed) -> None:
        """The core ended the connection: close it (or drop it, when the client stopped reading)."""
        self._timer.cancel()
        if event.abort:
            abort_transport(self.transport)
            self._fail_drain(ConnectionResetError("send_timeout exceeded"))
        else:
            close_transport(self.transport, self.loop, self.settings.send_timeout)

    _handlers: dict[type, Callable[[KyoukaiProtocol, Any], None]] = {
        ev.H11RequestReceived: _request_received,
        ev.H11RequestData: _request_data,
        ev.H11RequestEnded: _request_ended,
        ev.H11RequestRejected: _request_rejected,
        ev.H2PrefaceReceived: _preface_received,
        ev.H2cUpgradeAccepted: _h2c_upgrade_accepted,
        ev.ConnectionClosed: _connection_ended,
    }

    # the way to HTTP/2

    def _hand_over_to_h2(
        self,
        data: bytes,
        *,
        upgrade: dict[str, Any] | None = None,
        register: bool = False,
        preface_deadline: float | None = None,
    ) -> None:
        from kyoukai.backends.http2 import H2KyoukaiProtocol

        self._timer.cancel()
        self._handed_over = True
        protocol = H2KyoukaiProtocol(self.component, self.parent_context)
        if register:
            self.transport.set_protocol(protocol)
            protocol.connection_made(self.transport)
        else:
            try:
                protocol.adopt(self.transport, data, upgrade=upgrade, preface_deadline=preface_deadline)
            except Exception:
                # The connection is still this protocol's: it ends here, and is forgotten as usual.
                logger.exception("Handing the connection from %s over to HTTP/2 failed; closing it.", self.peer)
                self._handed_over = False
                abort_transport(self.transport)
                return
            self.transport.set_protocol(protocol)
            self.component.connection_handed_over(self, protocol)
            if self.core.shutting_down:
                # The preface came in the first-bytes grace of a graceful stop: HTTP/2 stops too.
                protocol.shutdown()
        if self._write_paused:
            protocol.pause_writing()

    # the way to a WebSocket

    def _open_websocket(
        self, req: H11Request, channel: H11WebSocketChannel, status: int, headers: list[tuple[str, str]]
    ) -> None:
        """The handler of ``req`` accepts its WebSocket: write the head and hand the connection to ``channel``."""
        core = self.core
        transport = self.transport
        if core.closed or transport.is_closing():
            # The client went away while the handler decided: the WebSocket is over already.
            channel.connection_lost(None)
            return
        head, data = core.accept_websocket(req, status, headers)
        self._handed_over = True
        self._timer.cancel()
        metrics = self.metrics
        metrics.requests += 1
        metrics.response_started(req.environ["SERVER_PROTOCOL"], status, req.environ.get(START_KEY))
        metrics.bytes_out += len(head)
        transport.write(head)
        transport.set_protocol(channel)
        channel.handler_task = self._task
        self.component.connection_handed_over(self, channel)
        channel.adopt(transport, data, write_paused=self._write_paused, reading_paused=self._reading_paused)
        if core.shutting_down:
            channel.shutdown()

    # reading and timing

    def _body_consumed(self, req: H11Request, size: int) -> None:
        self.core.body_consumed(req, size)
        if self._reading_paused:
            self._update_reading()

    def _update_reading(self) -> None:
        if self._handed_over:
            return
        pause = self.core.should_pause_reading()
        if pause != self._reading_paused and not self.transport.is_closing():
            self._reading_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _on_timer(self) -> None:
        events = self.core.handle_timeout()
        if events:
            self._dispatch(events)
        self._timer.set(self.core.next_deadline())

    # answering

    def _start_queue(self) -> None:
        if self._task is None:
            self._task = self.loop.create_task(self._answer_queue())

    async def _answer_queue(self) -> None:
        core = self.core
        try:
            while (item := core.next_answer()) is not None:
                if isinstance(item, Rejection):
                    self.metrics.response_started(f"HTTP/{item.version}", item.status, None)
                    self._write_final(core.rejection_response(item))
                    return
                keep_alive = await self._answer(item)
                item.app_state.release()
                # Cut werkzeug's request <-> environ cycle so the request is freed now.
                item.environ.pop("werkzeug.request", None)
                events = core.response_done(item, keep_alive)
                if events:
                    self._dispatch(events)
                self._update_reading()
        except (ConnectionError, asyncio.CancelledError):
            return
        except Exception:
            logger.exception("Answering a request from %s failed; closing the connection.", self.peer)
            self._dispatch(core.close())
        except BaseException:
            # KeyboardInterrupt (a Ctrl-C landing in the app's code) or SystemExit: the process
            # stops, and nothing answers this connection any more; it must not hold up the stop.
            self._dispatch(core.close())
            raise
        finally:
            self._task = None
            self._timer.set(core.next_deadline())

    async def _answer(self, req: H11Request) -> bool:
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
        if req.websocket is not None and self._handed_over:
            # The WebSocket is over; the response only carried its status to the access log.
            response.close()
            return False
        core = self.core
        try:
            parts = prepared_response(response, environ)
        except InvalidFieldError as e:
            logger.error(
                "The response to %s %s was not sent: %s; sending 500 instead.",
                environ["REQUEST_METHOD"],
                environ["PATH_INFO"],
                e,
            )
            self._write_final(core.server_error(req))
            return False
        try:
            head = core.response_head(req, parts.status, parts.reason, parts.headers, streamed=parts.body is None)
        except UnicodeEncodeError:
            logger.exception(
                "The response to %s %s has a header that is not latin-1; sending 500 instead.",
                environ["REQUEST_METHOD"],
                environ["PATH_INFO"],
            )
            if parts.stream is not None:
                await parts.stream.aclose()
            self._write_final(core.server_error(req))
            return False
        transport = self.transport
        if transport.is_closing():
            # The client went away while the app worked: nothing to write to.
            if parts.stream is not None:
                await parts.stream.aclose()
            return False
        metrics = self.metrics
        metrics.requests += 1
        metrics.response_started(environ["SERVER_PROTOCOL"], parts.status, environ.get(START_KEY))
        if parts.body is not None:
            if len(parts.body) < 65536:
                transport.write(head + parts.body)
            else:
                transport.writelines((head, parts.body))
            metrics.bytes_out += len(head) + len(parts.body)
            if self._write_paused:
                await self._drain()
            return req.keep_alive
        stream = parts.stream
        assert stream is not None
        transport.write(head)
        metrics.bytes_out += len(head)
        try:
            async for data in stream:
                if req.chunked:
                    if len(data) < 65536:
                        # One piece: over TLS each piece written is a record of its own.
                        transport.write(b"".join(chunk(data)))
                    else:
                        transport.writelines(chunk(data))
                else:
                    transport.write(data)
                metrics.bytes_out += len(data)
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
            await stream.aclose()
        if req.chunked:
            try:
                last = core.last_chunk(req, getattr(response, "trailers", None))
            except InvalidFieldError as e:
                logger.error(
                    "The trailers of %s %s were not sent: %s; closing the connection.",
                    environ["REQUEST_METHOD"],
                    environ["PATH_INFO"],
                    e,
                )
                self._dispatch(core.close())
                return False
            transport.write(last)
        return req.keep_alive

    def _write_final(self, data: bytes) -> None:
        """Write the last bytes of the connection (an error response), then close."""
        self.transport.write(data)
        self._dispatch(self.core.take_events())

    async def send_informational(self, environ: dict[str, Any], status: int, headers: list[tuple[str, str]]) -> None:
        """
        Send a 1xx response (e.g. 103 Early Hints) before the final one; HTTP/1.1 clients only.

        :raises InvalidFieldError: when a header name is not a token or a value holds CR, LF or NUL.
        """
        data = self.core.informational(environ, status, headers)
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def _send_continue(self, req: H11Request) -> None:
        data = self.core.continue_response(req)
        if data and not self.transport.is_closing():
            self.transport.write(data)

    async def _drain(self) -> None:
        """Wait until the client reads (the core drops it if it reads nothing for ``send_timeout``)."""
        if self.transport.is_closing():
            raise ConnectionResetError("the connection is closing")
        self._drain_waiter = self.loop.create_future()
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None

    def _fail_drain(self, exc: Exception) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
