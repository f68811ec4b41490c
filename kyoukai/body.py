"""
The request body as it arrives from the network: the ``wsgi.input`` of every request served by
a Kyoukai backend.

The backend feeds chunks in; the application reads them out, either all at once before the
handler runs (the default) or as they arrive (``stream_body=True`` routes). Every byte handed
to the application is reported through ``on_consumed``, which is how the backends apply
backpressure: HTTP/1.1 resumes reading the socket and HTTP/2 returns flow-control credit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge, RequestTimeout

logger = logging.getLogger("kyoukai.body")


class RequestBody:
    """
    A request body fed by a backend and read by the application.

    :param max_size: the largest body :meth:`read_all` accepts (413 past it); ``None`` for no
        limit.
    :param expected_length: the declared ``Content-Length``, if any.
    :param on_consumed: called with the number of bytes the application has taken.
    :param on_first_read: called once, the first time the application asks for data (used for
        ``Expect: 100-continue``).
    """

    def __init__(
        self,
        *,
        max_size: int | None = None,
        expected_length: int | None = None,
        on_consumed: Callable[[int], None] | None = None,
        on_first_read: Callable[[], None] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.max_size = max_size
        #: Seconds a read may wait for more of the body before 408 (``body_timeout``).
        self.timeout = timeout
        self.expected_length = expected_length
        self._on_consumed = on_consumed
        self._on_first_read = on_first_read
        # A list, not a deque: an empty deque takes a 64-slot block (over 500 bytes) per request,
        # and bodies are taken whole far more often than in parts.
        self._chunks: list[bytes] = []
        #: Bytes received and not yet handed to the application.
        self.buffered = 0
        #: Bytes received in all.
        self.received = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future | None = None
        self._complete_body: bytes | None = None
        self._pos = 0

    # producer side

    def feed(self, data: bytes, wake: bool = True) -> None:
        """
        Add a chunk received from the peer. A backend that feeds several chunks from one read
        passes ``wake=False`` and calls :meth:`wake` once after the last.
        """
        if not data:
            return
        self._chunks.append(data)
        self.buffered += len(data)
        self.received += len(data)
        if wake:
            self.wake()

    def feed_eof(self) -> None:
        """The peer finished the body."""
        self._eof = True
        self.wake()

    def abort(self, exc: BaseException | None = None) -> None:
        """
        The body will never be read whole (reset stream, lost connection): drop what is buffered.
        Later reads raise ``exc`` (:class:`~werkzeug.exceptions.ClientDisconnected` by default)
        unless nothing was lost.
        """
        if not self._eof or self._chunks:
            self._error = exc or ClientDisconnected()
        self._chunks.clear()
        self.buffered = 0
        self.wake()

    def release(self) -> None:
        """
        Free the body's memory once the request has been answered. The request objects form
        reference cycles that only the cyclic garbage collector breaks, so without this a
        server under upload load would hold many finished bodies at once.
        """
        self._chunks.clear()
        self.buffered = 0
        if self._complete_body is not None:
            self._complete_body = b""
            self._pos = 0
        # The callbacks hold the backend's request record, which holds this body: dropping them
        # leaves no cycle for the collector.
        self._on_consumed = None
        self._on_first_read = None

    @property
    def complete(self) -> bool:
        """Whether the peer sent the whole body."""
        return self._eof

    def wake(self) -> None:
        """Wake a reader waiting for data."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # consumer side

    def _started(self) -> None:
        if self._on_first_read is not None:
            callback, self._on_first_read = self._on_first_read, None
            callback()

    def _take(self, limit: int = -1) -> bytes:
        """Take up to ``limit`` buffered bytes (all if negative) and report them consumed."""
        chunks = self._chunks
        if not chunks:
            return b""
        if limit < 0 or limit >= self.buffered:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
        else:
            parts = []
            remaining = limit
            whole = 0
            for chunk in chunks:
                if len(chunk) > remaining:
                    break
                parts.append(chunk)
                remaining -= len(chunk)
                whole += 1
            del chunks[:whole]
            if remaining:
                chunk = chunks[0]
                parts.append(chunk[:remaining])
                chunks[0] = chunk[remaining:]
            data = b"".join(parts)
        self._consumed(len(data))
        return data

    def _consumed(self, size: int) -> None:
        """``size`` buffered bytes went to the application: their credit goes back."""
        self.buffered -= size
        if self._on_consumed is not None:
            self._on_consumed(size)

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        timer = None if self.timeout is None else loop.call_later(self.timeout, self._stalled)
        try:
            await self._waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if self._error is not None:
            raise self._error

    def _stalled(self) -> None:
        message = f"The request body stalled for body_timeout={self.timeout}s."
        logger.info("Gave up on a request body: %s", message)
        self._error = RequestTimeout(message)
        self.wake()

    async def get_chunk(self) -> bytes:
        """The next chunk of the body as it arrives; ``b""`` at the end."""
        if self._complete_body is not None:
            return self.read()
        if self._error is not None:
            raise self._error
        self._started()
        while not self._chunks and not self._eof:
            await self._wait()
        chunks = self._chunks
        if not chunks:
            return b""
        # One chunk as it came: no joining copy, and its credit goes back at once.
        data = chunks.pop(0)
        self._consumed(len(data))
        return data

    async def read_async(self, to_end: bool = True) -> bytes:
        """Read the rest of the body (``to_end``) or the next chunk of it."""
        if not to_end:
            return await self.get_chunk()
        await self.read_all()
        return self.read()

    def __aiter__(self) -> RequestBody:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.get_chunk()
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def read_all(self) -> None:
        """
        Receive the whole body, so the synchronous file interface (and with it werkzeug's
        ``get_data()``, forms and JSON) can read it.

        :raises werkzeug.exceptions.RequestEntityTooLarge: past ``max_size``.
        :raises werkzeug.exceptions.ClientDisconnected: the body was cut off.
        """
        if self._complete_body is not None:
            return
        if self._error is not None:
            raise self._error
        limit = self.max_size
        if limit is not None and self.expected_length is not None and self.expected_length > limit:
            raise _too_large(
                f"The request body of {self.expected_length} bytes is larger than the max_body_size of {limit} bytes."
            )
        self._started()
        parts: list[bytes] = []
        size = 0
        while True:
            if self._chunks:
                # Move the chunks over as they are: one copy in all, at the final join.
                taken = self.buffered
                parts.extend(self._chunks)
                self._chunks.clear()
                self.buffered = 0
                size += taken
                if limit is not None and size > limit:
                    # No credit back for a body that is refused.
                    raise _too_large(f"The request body is larger than the max_body_size of {limit} bytes.")
                if self._on_consumed is not None:
                    self._on_consumed(taken)
            elif self._eof:
                break
            else:
                await self._wait()
        self._complete_body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._pos = 0

    # synchronous file interface (wsgi.input)

    def read(self, size: int = -1) -> bytes:
        """
        Read from the body without waiting: after :meth:`read_all` from the whole body,
        otherwise from whatever has arrived so far.
        """
        if self._complete_body is None:
            self._started()
            return self._take(-1 if size is None else size)
        body, pos = self._complete_body, self._pos
        end = len(body) if size is None or size < 0 else min(len(body), pos + size)
        self._pos = end
        if pos == 0 and end == len(body):
            return body
        return body[pos:end]

    def readline(self, size: int = -1) -> bytes:
        """Read one line of a completely received body."""
        if self._complete_body is None:
            return self.read(size)
        body, pos = self._complete_body, self._pos
        end = body.find(b"\n", pos)
        end = len(body) if end < 0 else end + 1
        if size is not None and size >= 0:
            end = min(end, pos + size)
        self._pos = end
        return body[pos:end]

    def readlines(self, hint: int = -1) -> list[bytes]:
        """Read the remaining lines of a completely received body."""
        return list(iter(self.readline, b""))

    def __iter__(self):
        return iter(self.readline, b"")

    def close(self) -> None:
        """Nothing to release; present for the file interface."""


def _too_large(message: str) -> RequestEntityTooLarge:
    """The 413 error for a body past ``max_body_size``, logged (a handler may catch it)."""
    logger.info("Rejected a request body: %s", message)
    return RequestEntityTooLarge(message)
