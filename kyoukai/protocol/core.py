"""What both protocol cores share: the clock, the events they keep for their shell, and the pause of their output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class ProtocolCore:
    """
    The part of :class:`~kyoukai.protocol.h11.connection.H11ServerConnection` and
    :class:`~kyoukai.protocol.h2.connection.H2ServerConnection` that does not depend on the protocol.

    :param clock: the time in seconds (the shell's loop time).
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._events: list[Any] = []
        #: Since when the transport has been full (``None``: it has room); ``send_timeout`` bounds it.
        self._output_paused_since: float | None = None

    def take_events(self) -> list[Any]:
        """The events that happened since the last call (a list of the caller's own)."""
        events = self._events
        if not events:
            return []
        self._events = []
        return events

    def pause_output(self) -> None:
        """The transport is full: the client has ``send_timeout`` to read before it is dropped."""
        if self._output_paused_since is None:
            self._output_paused_since = self.clock()

    def resume_output(self) -> None:
        """The transport has room again."""
        self._output_paused_since = None
