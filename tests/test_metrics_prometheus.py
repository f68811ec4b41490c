"""
kyoukai.metrics_prometheus: the counters of real servers scraped at /metrics, in one process
(HTTP/1.1 and HTTP/2 clients) and summed over gunicorn's workers (prometheus_client's
multiprocess mode, examples/deploy/gunicorn_prometheus.conf.py).

The gunicorn workers import this module (``test_metrics_prometheus:app``) to serve the app below.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import RunningServer, serve
from h2client import H2Client
from hyperframe.frame import PingFrame
from prometheus_client.parser import text_string_to_metric_families
from test_docs import example
from test_gunicorn import Gunicorn

from kyoukai import Kyoukai
from kyoukai.asphalt import KyoukaiComponent
from kyoukai.metrics import DURATION_BUCKETS
from kyoukai.metrics_prometheus import exposition, metrics_route
from kyoukai.util import as_json

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0
ENHANCE_YOUR_CALM = 11

app = Kyoukai("prometheus_test")


@app.route("/")
async def whoami(ctx):
    return as_json({"pid": os.getpid()})


@app.route("/slow")
async def slow(ctx):
    await asyncio.sleep(0.03)
    return "slow"


@app.route("/forever")
async def forever(ctx):
    await asyncio.Event().wait()


@app.after_request
async def worker_header(ctx, response):
    """Which process answered (the scrapes too)."""
    response.headers["X-Pid"] = str(os.getpid())
    return response


metrics_route(app)

Samples = dict[tuple[str, frozenset], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Delta:
    """The change of each sample between two scrapes."""

    def __init__(self, before: Samples, after: Samples) -> None:
        self.before, self.after = before, after

    def __call__(self, name: str, **labels: str) -> float:
        return value(self.after, name, **labels) - value(self.before, name, **labels)


def scrape(client: httpx.Client, url: str) -> Samples:
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


@pytest.fixture
def server() -> Iterator:
    with serve(app, http2=True, max_control_frames=20, control_frame_rate=1.0) as running:
        yield running


def test_counters_and_histogram_over_http11_and_http2(server) -> None:
    with httpx.Client(timeout=TIMEOUT) as h1, httpx.Client(http1=False, http2=True, timeout=TIMEOUT) as h2:
        before = scrape(h1, server.url("/metrics"))
        for _ in range(3):
            assert h1.get(server.url("/")).status_code == 200
        assert h1.get(server.url("/nowhere")).status_code == 404
        for _ in range(2):
            assert h2.get(server.url("/")).http_version == "HTTP/2"
        assert h2.get(server.url("/slow")).text == "slow"
        delta = Delta(before, scrape(h1, server.url("/metrics")))
    requests = "kyoukai_requests_total"
    # The first scrape counts once it is answered, so in the second.
    assert delta(requests, protocol="HTTP/1.1", status="200") == 3 + 1
    assert delta(requests, protocol="HTTP/1.1", status="404") == 1
    assert delta(requests, protocol="HTTP/2", status="200") == 3
    histogram = "kyoukai_request_duration_seconds"
    assert delta(f"{histogram}_count", protocol="HTTP/1.1") == 5
    assert delta(f"{histogram}_count", protocol="HTTP/2") == 3
    assert delta(f"{histogram}_bucket", protocol="HTTP/2", le="+Inf") == 3
    # /slow sleeps 30 ms: above the 25 ms bucket whatever the machine.
    assert 0.025 in DURATION_BUCKETS
    assert delta(f"{histogram}_bucket", protocol="HTTP/2", le="0.025") <= 2
    assert delta(f"{histogram}_sum", protocol="HTTP/2") >= 0.03
    assert delta("kyoukai_connections_opened_total") == 1  # the HTTP/2 client's; HTTP/1.1's came before
    assert delta("kyoukai_http2_streams_opened_total") == 3
    assert delta("kyoukai_received_bytes_total") > 0
    assert delta("kyoukai_sent_bytes_total") > 0
    assert value(delta.after, "kyoukai_connections_open") >= 2


def test_resets_guard_trips_goaways_and_refused_requests(server) -> None:
    with httpx.Client(timeout=TIMEOUT) as h1:
        before = scrape(h1, server.url("/metrics"))
        with H2Client(server.port) as client:
            stream_id = client.request("/forever")
            client.reset(stream_id)
            # Answered after the server read the reset before it on the same connection.
            assert client.response(client.request("/")).status == 200
        with H2Client(server.port) as flooder:
            flooder.send(*(PingFrame(0, opaque_data=b"12345678") for _ in range(40)))
            flooder.wait_closed()
            assert flooder.goaway is not None and flooder.goaway.error_code == ENHANCE_YOUR_CALM
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 431 ")
        delta = Delta(before, scrape(h1, server.url("/metrics")))
    assert delta("kyoukai_http2_streams_reset_total") == 1
    assert delta("kyoukai_http2_guard_trips_total") == 1
    assert delta("kyoukai_http2_goaways_total", code="ENHANCE_YOUR_CALM") == 1
    # Refused before reaching the app: counted, not timed.
    assert delta("kyoukai_requests_total", protocol="HTTP/1.1", status="431") == 1
    assert delta("kyoukai_request_duration_seconds_count", protocol="HTTP/1.1") == 1  # the first scrape


def test_graceful_stop_is_counted_after_the_last_scrape() -> None:
    before = parse(exposition()[0].decode())
    running = RunningServer(KyoukaiComponent(app, ip="127.0.0.1", port=0, http2=True)).start()
    with H2Client(running.port) as client:
        assert client.response(client.request("/")).status == 200
        # The client reads (and answers the drain's PING) while the server stops.
        stopping = threading.Thread(target=running.stop)
        stopping.start()
        client.wait_closed()
        stopping.join(TIMEOUT)
        assert not stopping.is_alive()
    delta = Delta(before, parse(exposition()[0].decode()))
    # The two-step GOAWAY of a graceful stop.
    assert delta("kyoukai_http2_goaways_total", code="NO_ERROR") == 2
    assert delta("kyoukai_connections_closed_total") == 1


def test_the_example_app() -> None:
    demo = example("deploy.prometheus_app").app
    with serve(demo, http2=True) as running, httpx.Client(http1=False, http2=True, timeout=TIMEOUT) as client:
        before = scrape(client, running.url("/metrics"))
        assert client.get(running.url("/")).text == "Hello from Kyoukai.\n"
        delta = Delta(before, scrape(client, running.url("/metrics")))
    assert delta("kyoukai_requests_total", protocol="HTTP/2", status="200") == 2


def test_a_missing_multiprocess_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = subprocess.run(
        [sys.executable, "-c", "import kyoukai.metrics_prometheus as m; m.enable()"],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(missing)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert f"PROMETHEUS_MULTIPROC_DIR={str(missing)!r} is not a directory" in result.stderr


def test_gunicorn_workers_are_summed(tmp_path: Path) -> None:
    """Two workers: every scrape, whichever worker answers, gives the total of both."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left over from an earlier run")
    conf = ROOT / "examples" / "deploy" / "gunicorn_prometheus.conf.py"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    server = Gunicorn(tmp_path / "gunicorn.log", "-c", str(conf), "test_metrics_prometheus:app", env=env).start()
    try:
        served: dict[int, int] = {}
        scraped_by: set[int] = set()
        totals: list[float] = []
        # New connections until both workers have answered requests and scrapes (bounded).
        for _ in range(200):
            with httpx.Client(timeout=TIMEOUT) as client:
                pid = client.get(server.url("/")).json()["pid"]
                served[pid] = served.get(pid, 0) + 1
            with httpx.Client(timeout=TIMEOUT) as client:
                response = client.get(server.url("/metrics"))
                scraped_by.add(int(response.headers["x-pid"]))
                samples = parse(response.text)
            requests = sum(
                v
                for (name, labels), v in samples.items()
                if name == "kyoukai_requests_total" and ("status", "200") in labels
            )
            # Every request and every earlier scrape, from both workers.
            totals.append(requests)
            assert requests == 2 * sum(served.values()) - 1, (served, requests)
            if len(served) == 2 and len(scraped_by) == 2 and len(totals) >= 4:
                break
        assert len(served) == 2 and len(scraped_by) == 2, (served, scraped_by)
        assert value(samples, "kyoukai_request_duration_seconds_count", protocol="HTTP/1.1") == requests
        assert value(samples, "kyoukai_connections_opened_total") >= 1
        # A worker that exits (and is replaced): child_exit drops its gauges, not its counters.
        gone = min(served)
        assert (metrics_dir / f"gauge_livesum_{gone}.db").exists()
        os.kill(gone, signal.SIGTERM)
        server.wait_for(lambda: gone in server.exited() and len(server.live()) == 2, "a replacement worker")
        server.wait_for(lambda: not (metrics_dir / f"gauge_livesum_{gone}.db").exists(), "child_exit")
        assert (metrics_dir / f"counter_{gone}.db").exists()
        with httpx.Client(timeout=TIMEOUT) as client:
            after = parse(client.get(server.url("/metrics")).text)
        assert value(after, "kyoukai_requests_total", protocol="HTTP/1.1", status="200") == requests + 1
    finally:
        output = server.stop()
    assert "Traceback" not in output, output
    assert not (metrics_dir / "counter_1.db").exists(), "on_starting did not empty the directory"
