"""
What both protocols do with their transport: read who is at either end, and end connections
so that a client that stops reading cannot hold one open.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

_LINGER_RESET = struct.pack("ii", 1, 0)


def transport_ends(transport: asyncio.BaseTransport) -> tuple[str, tuple | None, tuple | None]:
    """The URL scheme (``https`` over TLS), the local ``(host, port)`` and the peer's."""
    scheme = "https" if transport.get_extra_info("sslcontext") is not None else "http"
    sockname = transport.get_extra_info("sockname")
    peername = transport.get_extra_info("peername")
    local = tuple(sockname[:2]) if isinstance(sockname, tuple) else None
    peer = tuple(peername[:2]) if isinstance(peername, tuple) else None
    return scheme, local, peer


def close_transport(transport: asyncio.WriteTransport, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
    """
    Close after what is buffered has been written, but abort if the client has not read it
    within ``timeout`` seconds (``send_timeout``): asyncio's close otherwise waits forever.
    """
    transport.close()
    if _buffered(transport):
        loop.call_later(timeout, _abort_if_stuck, transport)


def _buffered(transport: asyncio.WriteTransport) -> int:
    try:
        return transport.get_write_buffer_size()
    except AttributeError:  # a TLS transport already detached from its protocol
        return 0


def _abort_if_stuck(transport: asyncio.WriteTransport) -> None:
    if _buffered(transport):
        abort_transport(transport)


def abort_transport(transport: asyncio.WriteTransport) -> None:
    """
    Drop the connection now, with a TCP reset (SO_LINGER 0): the kernel frees the unsent data
    at once instead of keeping it in a FIN_WAIT1 socket, and the client learns it was dropped.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
    transport.abort()


class DeadlineTimer:
    """
    One timer for a protocol core's next deadline: :meth:`set` moves it earlier when the core
    needs to be woken sooner, never later (a timer that fires early finds nothing due and is
    set again), so a deadline pushed back on every request costs no new timer.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._when = 0.0

    def set(self, deadline: float | None) -> None:
        """Make sure the callback runs no later than ``deadline`` (``None``: nothing due)."""
        if deadline is None:
            return
        if self._handle is not None:
            if self._when <= deadline:
                return
            self._handle.cancel()
        self._when = deadline
        self._handle = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._callback()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
