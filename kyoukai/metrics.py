"""Counters of a component's traffic, for users to export (Prometheus, statsd, logs...)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Metrics:
    """
    Per-component counters, updated by the protocols. Read them with :meth:`snapshot` (or the
    attributes) from a periodic task or a metrics endpoint.
    """

    #: Connections accepted, and closed.
    connections_opened: int = 0
    connections_closed: int = 0
    #: Requests answered (HTTP/1.1 requests and HTTP/2 streams that got a response).
    requests: int = 0
    #: HTTP/2 streams opened by clients, reset by clients, and refused by the server.
    streams_opened: int = 0
    streams_reset: int = 0
    streams_refused: int = 0
    #: Bytes received from and sent to clients.
    bytes_in: int = 0
    bytes_out: int = 0
    #: GOAWAY frames sent, by error code name.
    goaways: Counter = field(default_factory=Counter)

    def snapshot(self) -> dict[str, Any]:
        """The counters as a plain dict."""
        return {
            "connections_opened": self.connections_opened,
            "connections_closed": self.connections_closed,
            "requests": self.requests,
            "streams_opened": self.streams_opened,
            "streams_reset": self.streams_reset,
            "streams_refused": self.streams_refused,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "goaways": dict(self.goaways),
        }
