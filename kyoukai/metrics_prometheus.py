"""
Kyoukai's traffic counters (:mod:`kyoukai.metrics`) for Prometheus, with ``prometheus_client``
(the ``prometheus`` extra: ``pip install 'Kyoukai[prometheus]'``). One line serves them::

    from kyoukai.metrics_prometheus import metrics_route

    metrics_route(app)  # GET /metrics

The metrics, summed over the Kyoukai components of the process:

- ``kyoukai_requests_total{protocol, status}``: responses sent (``protocol`` is ``HTTP/1.0``,
  ``HTTP/1.1`` or ``HTTP/2``); requests refused before reaching the app (400, 413, 431) count;
- ``kyoukai_request_duration_seconds{protocol}``: a histogram of the seconds from a request
  reaching the app to its response head going out (:data:`~kyoukai.metrics.DURATION_BUCKETS`);
- ``kyoukai_connections_opened_total``, ``kyoukai_connections_closed_total`` and the gauge
  ``kyoukai_connections_open``;
- ``kyoukai_http2_streams_opened_total``, ``kyoukai_http2_streams_reset_total`` (by clients),
  ``kyoukai_http2_streams_refused_total`` (by the server);
- ``kyoukai_http2_goaways_total{code}`` and ``kyoukai_http2_guard_trips_total`` (connections
  the abuse guard closed with ``ENHANCE_YOUR_CALM``);
- ``kyoukai_received_bytes_total``, ``kyoukai_sent_bytes_total``.

Requests update the first two as they are answered; the others are copied from each
component's :class:`~kyoukai.metrics.Metrics` at most a second after they change, and at each
scrape. Nothing is counted for Prometheus until :func:`enable` (which :func:`metrics_route`
calls) runs.

Several processes (gunicorn's workers): set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory
of their own in the environment gunicorn starts with; prometheus_client's multiprocess mode then
keeps each worker's values in a file there and every scrape, whichever worker answers it, sums
them. The gunicorn configuration must clear the directory when gunicorn starts and call
``prometheus_client.multiprocess.mark_process_dead(worker.pid)`` in its ``child_exit`` hook
(``examples/deploy/gunicorn_prometheus.conf.py``).
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from werkzeug.wrappers import Response

from kyoukai import metrics as kyoukai_metrics
from kyoukai.metrics import DURATION_BUCKETS, Metrics

if TYPE_CHECKING:
    from kyoukai.app import Kyoukai
    from kyoukai.blueprint import Blueprint
    from kyoukai.route import Route

#: The environment variable naming prometheus_client's multiprocess directory.
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds between a change of a component's counters and its copy to Prometheus's.
SYNC_INTERVAL = 1.0

#: The :class:`~kyoukai.metrics.Metrics` attributes copied to counters: (name, help).
COUNTERS = {
    "connections_opened": ("kyoukai_connections_opened", "Connections accepted."),
    "connections_closed": ("kyoukai_connections_closed", "Connections closed."),
    "streams_opened": ("kyoukai_http2_streams_opened", "HTTP/2 streams opened by clients."),
    "streams_reset": ("kyoukai_http2_streams_reset", "HTTP/2 streams reset by clients."),
    "streams_refused": ("kyoukai_http2_streams_refused", "HTTP/2 streams refused by the server (REFUSED_STREAM)."),
    "guard_trips": ("kyoukai_http2_guard_trips", "HTTP/2 connections the abuse guard closed (ENHANCE_YOUR_CALM)."),
    "bytes_in": ("kyoukai_received_bytes", "Bytes received from clients."),
    "bytes_out": ("kyoukai_sent_bytes", "Bytes sent to clients."),
}


class PrometheusExporter:
    """
    Keeps prometheus_client metrics in step with the :class:`~kyoukai.metrics.Metrics` of
    every component of this process: a :class:`~kyoukai.metrics.ResponseObserver`.

    :param registry: where the metrics are registered.
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.requests = Counter(
            "kyoukai_requests", "Responses sent, by protocol and status.", ["protocol", "status"], registry=registry
        )
        self.duration = Histogram(
            "kyoukai_request_duration_seconds",
            "Seconds from a request reaching the app to its response head going out.",
            ["protocol"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.counters = {attr: Counter(name, doc, registry=registry) for attr, (name, doc) in COUNTERS.items()}
        self.goaways = Counter(
            "kyoukai_http2_goaways", "GOAWAY frames sent, by error code.", ["code"], registry=registry
        )
        self.open_connections = Gauge(
            "kyoukai_connections_open", "Connections open now.", multiprocess_mode="livesum", registry=registry
        )
        # What each component's counters were when last copied.
        self._copied: weakref.WeakKeyDictionary[Metrics, dict[Any, int]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._loops_with_timer: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()

    def response_started(self, metrics: Metrics, protocol: str, status: int, duration: float | None) -> None:
        """Count a response, and copy its component's counters within :data:`SYNC_INTERVAL`."""
        self.requests.labels(protocol, str(status)).inc()
        if duration is not None:
            self.duration.labels(protocol).observe(duration)
        if metrics not in self._copied:
            with self._lock:
                self._copied.setdefault(metrics, {})
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.sync()
            return
        if loop not in self._loops_with_timer:
            self._loops_with_timer.add(loop)
            loop.call_later(SYNC_INTERVAL, self._timer_fired, loop)

    def _timer_fired(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loops_with_timer.discard(loop)
        self.sync()

    def sync(self) -> None:
        """Copy what every known component counted since the last copy."""
        from kyoukai.asphalt import KyoukaiBaseComponent

        with self._lock:
            for component in list(KyoukaiBaseComponent.running):
                self._copied.setdefault(component.metrics, {})
            open_now = 0
            for metrics, copied in list(self._copied.items()):
                for attr, counter in self.counters.items():
                    self._add(counter, copied, attr, getattr(metrics, attr))
                for code, value in list(metrics.goaways.items()):
                    self._add(self.goaways.labels(code), copied, ("goaways", code), value)
                open_now += metrics.connections_opened - metrics.connections_closed
            self.open_connections.set(open_now)

    @staticmethod
    def _add(counter: Any, copied: dict[Any, int], key: Any, value: int) -> None:
        delta = value - copied.get(key, 0)
        if delta > 0:
            counter.inc(delta)
            copied[key] = value

    def flush(self) -> None:
        """Copy the counters now (the process is about to exit)."""
        self.sync()


_exporter: PrometheusExporter | None = None
_enable_lock = threading.Lock()


def enable() -> PrometheusExporter:
    """
    Start counting for Prometheus in this process (once; later calls return the same
    exporter), with the metrics in prometheus_client's default registry.

    :raises ValueError: ``PROMETHEUS_MULTIPROC_DIR`` is set but is not a directory.
    """
    global _exporter
    with _enable_lock:
        if _exporter is None:
            directory = os.environ.get(MULTIPROC_DIR)
            if directory and not os.path.isdir(directory):
                raise ValueError(
                    f"{MULTIPROC_DIR}={directory!r} is not a directory: create it (empty, for this server alone) "
                    "before starting, or unset it to serve one process's metrics"
                )
            _exporter = PrometheusExporter()
            kyoukai_metrics.observers.append(_exporter)
        return _exporter


def exposition() -> tuple[bytes, str]:
    """
    The metrics in Prometheus's text format, and its content type: this process's default
    registry, or with ``PROMETHEUS_MULTIPROC_DIR`` set, the sum over every process using that
    directory.
    """
    enable().sync()
    if os.environ.get(MULTIPROC_DIR):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def metrics_route(app: Kyoukai | Blueprint, path: str = "/metrics") -> Route:
    """
    Serve the metrics at ``path`` (``GET``) of ``app`` (a :class:`~kyoukai.app.Kyoukai` app or
    a :class:`~kyoukai.blueprint.Blueprint`), and :func:`enable` them. Returns the route.
    """
    enable()

    async def prometheus_metrics(ctx: Any) -> Response:
        body, content_type = exposition()
        return Response(body, content_type=content_type)

    return app.route(path)(prometheus_metrics)
