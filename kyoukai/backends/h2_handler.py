"""
The app's side of an HTTP/2 connection: each stream's environ and handler task, and its
response handed to the protocol core piece by piece (the next piece is asked of the app once
the last is out); a WebSocket stream's frames go through its channel
(:mod:`kyoukai.backends.h2_websocket`) instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from h2.errors import ErrorCodes
from werkzeug.exceptions import InternalServerError

from kyoukai.accesslog import START_KEY
from kyoukai.metrics import Metrics
from kyoukai.protocol import events as ev
from kyoukai.protocol.fields import InvalidFieldError, check_informational_status, checked_names
from kyoukai.protocol.h2.connection import H2ServerConnection, response_block
from kyoukai.wsgi import environ_from_h2, prepared_response

logger = logging.getLogger("kyoukai.http2")


class StreamClosed(Exception):
    """The stream was reset or the connection is gone: stop sending on it."""


class StreamHandling:
    """
    Runs the handlers of an HTTP/2 connection's streams and sends their responses; a part of
    :class:`~kyoukai.backends.http2.H2KyoukaiProtocol`, whose streams' ``wsgi.input`` is an
    :class:`~kyoukai.backends.http2.H2State`.
    """

    core: H2ServerConnection
    app: Any
    metrics: Metrics
    parent_context: Any
    scheme: str
    server_address: tuple[str, int] | None
    peer: tuple[str, int] | None
    _closed: bool
    _schedule_flush: Callable[[], None]
    _state: Callable[[int], Any]

    def running_tasks(self) -> list[asyncio.Task]:
        """The tasks serving this connection's streams (the component waits for them after an abort)."""
        records = self.core.streams.values()
        return [r.app_state.task for r in records if r.app_state is not None and r.app_state.task is not None]

    async def _handle(self, state: Any) -> None:
        environ = state.environ
        try:
            request = self.app.request_class(environ)
            response = await self.app.process_request(request, self.parent_context)
            if state.channel is not None and state.channel.opened:
                # The WebSocket's 200 went out and its end was sent: this response (which
                # says 200 too) is only for the log.
                response.close()
            else:
                await self._send_response(state, response)
        except StreamClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if isinstance(e, InvalidFieldError):
                logger.error(
                    "Stream %d (%s %s): %s; %s.",
                    state.stream_id,
                    environ["REQUEST_METHOD"],
                    environ["PATH_INFO"],
                    e,
                    "resetting it" if state.headers_sent else "sending 500 instead",
                )
            else:
                logger.exception(
                    "Stream %d (%s %s) failed.", state.stream_id, environ["REQUEST_METHOD"], environ["PATH_INFO"]
                )
            if not state.headers_sent and not state.closed:
                try:
                    await self._send_response(state, InternalServerError().get_response(environ))
                except StreamClosed:
                    pass
            else:
                self.core.reset(state.stream_id, ErrorCodes.INTERNAL_ERROR)
        finally:
            self._processing_done(environ, state.stream_id)

    def _processing_done(self, environ: dict[str, Any], stream_id: int) -> None:
        """A stream's handler finished: free its state and tell the core the app is done with it."""
        state: Any = environ.get("wsgi.input")
        if getattr(state, "protocol", None) is self:
            state.abort()
            state.close()
            state.release()
        # werkzeug's request and its environ point at each other; cut the cycle so the request
        # (and the body it cached) is freed now rather than at the next cyclic collection.
        environ.pop("werkzeug.request", None)
        environ.pop("wsgi.input", None)  # the other cycle: the state holds the environ
        if not self._closed:
            self.core.finish(stream_id)
            self._schedule_flush()

    def build_environ(self, headers: list[tuple[bytes, bytes]], body: Any) -> dict[str, Any]:
        """The WSGI environ of a request head received on this connection."""
        return environ_from_h2(headers, body, self.scheme, self.server_address, self.peer, self)

    def stream_reset(self, event: ev.StreamClosed) -> None:
        """The stream is gone: stop its handler (a WebSocket's learns it first) and free its state."""
        state: Any = event.app_state
        if getattr(state, "protocol", None) is not self:
            return
        state.abort()
        state.close()
        if state.channel is not None:
            state.channel.stream_gone()
        elif state.task is not None:
            state.task.cancel()

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Return ``size`` bytes of flow-control credit (the app consumed them)."""
        if not self._closed:
            self.core.acknowledge(stream_id, size)
            self._schedule_flush()

    # response sending

    async def _send_response(self, state: Any, response: Any) -> None:
        parts = prepared_response(response, state.environ)
        state.start_response(str(parts.status), parts.headers)
        block = state.get_response_headers()
        has_body = parts.stream is not None or bool(parts.body)
        whole = parts.stream is None and (not has_body or getattr(response, "trailers", None) is None)
        if state.closed or not self.core.send_response(state.stream_id, block, parts.body if whole else None):
            if parts.stream is not None:
                await parts.stream.aclose()
            raise StreamClosed
        state.headers_sent = True
        self.metrics.response_started("HTTP/2", parts.status, state.environ.get(START_KEY))
        self._schedule_flush()
        if not whole:
            state._response_body = parts.stream if parts.stream is not None else parts.body
            await self.sending_loop(state.stream_id)
            # Read now, after the body: a body generator may fill them in.
            trailers = getattr(response, "trailers", None) or ()
            if hasattr(trailers, "items"):
                trailers = trailers.items()
            fields = [(name.lower(), str(value)) for name, value in trailers]
            checked_names(fields, "trailer")
            if not self.core.end_stream(state.stream_id, fields):
                raise StreamClosed
            self._schedule_flush()
        await self._drained(state)

    async def sending_loop(self, stream_id: int) -> None:
        """
        Send the response body of ``stream_id`` (bytes, or an async iterator of chunks as the
        handler produces them): each piece is handed to the core, which sends it within the
        windows and frame size, and the next is asked for only once it is out.
        """
        state = self._state(stream_id)
        if state is None:
            raise StreamClosed
        body, state._response_body = state._response_body, None
        if isinstance(body, (bytes, bytearray, memoryview)):
            if body:
                self._send_data(state, body)
                await self._drained(state)
            return
        chunks: AsyncIterator[bytes] = body
        try:
            async for chunk in chunks:
                self._send_data(state, chunk)
                await self._drained(state)
        finally:
            # A reset or lost stream stops the loop mid-body: close the app's generator now
            # rather than whenever it is garbage collected.
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    def _send_data(self, state: Any, data: bytes | bytearray | memoryview) -> None:
        if state.closed or not self.core.send_data(state.stream_id, memoryview(data)):
            raise StreamClosed
        self._schedule_flush()

    async def _drained(self, state: Any) -> None:
        """Wait until the stream's queued bytes are out (or raise :class:`StreamClosed` if it is gone)."""
        core = self.core
        while True:
            pending = core.pending(state.stream_id)
            if pending is None or state.closed:
                raise StreamClosed
            if not pending:
                return
            await state.sendable_waiter()

    async def send_informational(self, environ: dict[str, Any], status: int, headers: list[tuple[str, str]]) -> None:
        """
        Send a 1xx response (e.g. 103 Early Hints) on the request's stream before its response.

        :raises InvalidFieldError: when a header name is not a token or a value holds CR, LF or NUL.
        """
        check_informational_status(status)
        state: Any = environ.get("wsgi.input")
        if getattr(state, "protocol", None) is not self:
            raise ValueError("send_informational needs the environ of a request on this connection")
        fields = [(name.lower(), str(value)) for name, value in headers]
        checked_names(fields, "informational response")
        if not state.headers_sent and not state.closed and not self._closed:
            self.core.send_informational(state.stream_id, status, response_block(status, fields)[1:])
            self._schedule_flush()
