"""
Counters of a component's traffic, for users to export (Prometheus with
:mod:`kyoukai.metrics_prometheus`, statsd, logs...).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

#: The upper bounds (seconds) of the request duration histogram's buckets; a last bucket
#: (``+Inf``) holds the slower requests. Prometheus's default buckets.
DURATION_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class ResponseObserver(Protocol):
    """Told of every response of every component in this process (see :data:`observers`)."""

    def response_started(self, metrics: Metrics, protocol: str, status: int, duration: float | None) -> None:
        """A response head went out (``duration``: as in :meth:`Metrics.response_started`)."""

    def flush(self) -> None:
        """The process is about to exit: publish what is not published yet."""


#: The observers of every component's responses in this process. Empty unless an exporter
#: adds itself (:func:`kyoukai.metrics_prometheus.enable`), so responses cost nothing more then.
observers: list[ResponseObserver] = []


def flush_observers() -> None:
    """Let every observer publish what it holds (called before a process exits)."""
    for observer in observers:
        observer.flush()


@dataclass(eq=False, slots=True, weakref_slot=True)
class Metrics:
    """
    Per-component counters, updated by the protocols. Read them with :meth:`snapshot` (or the
    attributes) from a periodic task or a metrics endpoint. They only grow.
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
    #: Responses by ``(protocol, status)``: ``("HTTP/2", 200)``. Requests refused before
    #: reaching the app (HTTP/1.1's 400, 413, 431...) count too.
    responses: Counter = field(default_factory=Counter)
    #: The request duration histogram: how many requests took at most each bound of
    #: :data:`DURATION_BUCKETS` (and more than the one before), the last item counting the
    #: slower ones; and the sum of the durations.
    duration_counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0

    @property
    def guard_trips(self) -> int:
        """HTTP/2 connections the abuse guard closed (GOAWAY ``ENHANCE_YOUR_CALM``)."""
        return self.goaways["ENHANCE_YOUR_CALM"]

    def response_started(self, protocol: str, status: int, started: float | None) -> None:
        """
        Count a response whose head is going out. ``started`` is the :func:`time.perf_counter`
        value when the request reached the app (``None`` for a request refused before): the
        duration is from then to now.
        """
        self.responses[protocol, status] += 1
        duration: float | None = None
        if started is not None:
            duration = time.perf_counter() - started
            self.duration_counts[bisect_left(DURATION_BUCKETS, duration)] += 1
            self.duration_sum += duration
        for observer in observers:
            observer.response_started(self, protocol, status, duration)

    def snapshot(self) -> dict[str, Any]:
        """The counters as a plain dict (JSON-ready)."""
        responses: dict[str, dict[str, int]] = {}
        for (protocol, status), count in sorted(self.responses.items()):
            responses.setdefault(protocol, {})[str(status)] = count
        bounds = [*map(str, DURATION_BUCKETS), "+Inf"]
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
            "guard_trips": self.guard_trips,
            "responses": responses,
            "request_duration": {
                "buckets": dict(zip(bounds, self.duration_counts, strict=True)),
                "count": sum(self.duration_counts),
                "sum": self.duration_sum,
            },
        }
