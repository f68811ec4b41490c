"""
The workloads: what h2load asks for, how it is invoked, and what its output and per-request
log say (requests/s, MiB/s, latency percentiles, time to the first response, failures).
"""

from __future__ import annotations

import re
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
#: Size of the ``/big`` response and of the ``/upload`` request body.
BIG_BODY = 1 * MiB
#: Length of the ``/`` response body (``"Hello, world!\n"``).
SMALL_BODY = 14
#: Seconds h2load gets past its run to finish before it is killed and the run is a problem.
H2LOAD_GRACE = 30


@dataclass(frozen=True)
class Workload:
    """One row of the table."""

    #: Short name, for ``--only``.
    key: str
    #: What the row says.
    title: str
    #: ``"h2"`` (TLS, ALPN h2), ``"h2c"`` (cleartext, prior knowledge), ``"h1"`` (cleartext
    #: HTTP/1.1) or ``"h1tls"`` (HTTP/1.1 over TLS).
    protocol: str
    path: str
    clients: int
    streams: int
    #: Body bytes per request that count towards MiB/s (response body, or request body for uploads).
    payload: int
    upload: bool = False
    #: What the row measures: ``"load"`` (an h2load run) or ``"idle"`` (idle connections held
    #: open, see ``idle.py``; ``clients`` is then taken from ``--idle-connections``).
    kind: str = "load"
    #: The headline figure is the p99 latency (lower is better) instead of a rate.
    latency: bool = False
    #: Measure from the first connection on (h2load's warm-up set to 0) so that h2load's "time
    #: to 1st byte" of every connection is recorded; the warm-up is cut from the log instead.
    first_response: bool = False
    #: The server logs every request (``serve_kyoukai.py --access-log``); Kyoukai only.
    access_log: bool = False

    @property
    def tls(self) -> bool:
        return self.protocol in ("h2", "h1tls")

    @property
    def http2(self) -> bool:
        return self.protocol in ("h2", "h2c")

    @property
    def application_protocol(self) -> str:
        """What h2load must report as negotiated."""
        return {"h2": "h2", "h2c": "h2c"}.get(self.protocol, "http/1.1")

    @property
    def small_get(self) -> bool:
        """A ``GET /`` row: the only request ``bare_h2.py`` answers."""
        return self.path == "/" and not self.upload

    @property
    def headline(self) -> str:
        """The figure the ratio is taken of: ``"rps"``, ``"mib_s"``, ``"p99_ms"`` or ``"kib_per_conn"``."""
        if self.kind == "idle":
            return "kib_per_conn"
        if self.latency:
            return "p99_ms"
        return "mib_s" if self.payload >= MiB else "rps"

    def h2load_args(self) -> list[str]:
        """The load shape, as h2load options."""
        args = ["-c", str(self.clients)]
        if not self.http2:
            args.append("--h1")
        else:
            args += ["-m", str(self.streams)]
        return args

    def describe(self, idle_connections: int) -> str:
        """The load shape, for the table: h2load's options, or what the idle rows hold open."""
        if self.kind == "idle":
            return f"{idle_connections} idle {'h2c' if self.http2 else 'HTTP/1.1'} connections"
        return " ".join(self.h2load_args())


WORKLOADS = (
    Workload("tls", "small GET, h2 over TLS", "h2", "/", 10, 10, SMALL_BODY),
    Workload("h2c", "small GET, h2c", "h2c", "/", 10, 10, SMALL_BODY),
    Workload("accesslog", "small GET, h2c, access log on", "h2c", "/", 10, 10, SMALL_BODY, access_log=True),
    Workload("streams", "100 streams, 1 connection, h2c", "h2c", "/", 1, 100, SMALL_BODY),
    Workload("latency", "latency, 1 request at a time, h2c", "h2c", "/", 1, 1, SMALL_BODY, latency=True),
    Workload("conns10", "10 connections, h2c", "h2c", "/", 10, 1, SMALL_BODY, first_response=True),
    Workload("conns500", "500 connections, h2c", "h2c", "/", 500, 1, SMALL_BODY, first_response=True),
    Workload("download", "1 MiB download, h2c", "h2c", "/big", 4, 4, BIG_BODY),
    Workload("upload", "1 MiB upload, h2c", "h2c", "/upload", 4, 4, BIG_BODY, upload=True),
    Workload("h1", "small GET, HTTP/1.1", "h1", "/", 10, 1, SMALL_BODY),
    Workload("h1tls", "small GET, HTTP/1.1 over TLS", "h1tls", "/", 10, 1, SMALL_BODY),
    Workload("idle-h2", "memory per idle connection, h2c", "h2c", "/", 0, 0, 0, kind="idle"),
    Workload("idle-h1", "memory per idle connection, HTTP/1.1", "h1", "/", 0, 0, 0, kind="idle"),
)
WORKLOAD_KEYS = tuple(w.key for w in WORKLOADS)


class LoadError(RuntimeError):
    """h2load could not run, or said something this module cannot read."""


@dataclass
class Measurement:
    """What one h2load run measured."""

    rps: float
    mib_s: float
    p50_ms: float
    p99_ms: float
    succeeded: int
    #: Requests that failed, errored or timed out, plus responses that were not 2xx.
    failures: int
    application_protocol: str
    #: h2load's summary, kept when something went wrong.
    output: str
    #: h2load's "time to 1st byte" over the connections (connect to first response byte), mean
    #: and max in ms; NaN when h2load did not record it (connections made during its warm-up).
    ttfb_mean_ms: float = float("nan")
    ttfb_max_ms: float = float("nan")
    #: h2load's "time for connect", max in ms (a full listen backlog shows as SYN retries).
    connect_max_ms: float = float("nan")
    #: h2load's own req/s over its whole run, connection set-up included (``first_response`` rows).
    rps_with_setup: float = float("nan")

    def problems(self, workload: Workload) -> list[str]:
        """What makes this run suspect: failures, no requests at all, the wrong protocol."""
        found = []
        if self.failures:
            found.append(f"{self.failures} failed/errored/timed-out or non-2xx requests")
        if not self.succeeded:
            found.append("no successful request in the measured period")
        if self.application_protocol != workload.application_protocol:
            found.append(f"negotiated {self.application_protocol!r}, expected {workload.application_protocol!r}")
        return found


def h2load_command(
    workload: Workload, port: int, *, duration: int, warmup: int, upload_file: Path, log_file: Path, cpu: int | None
) -> list[str]:
    """
    The h2load command line for ``workload`` against ``127.0.0.1:port``. A ``first_response``
    row runs ``warmup + duration`` seconds with no h2load warm-up (the log is cut afterwards).
    """
    scheme = "https" if workload.tls else "http"
    if workload.first_response:
        duration, warmup = duration + warmup, 0
    cmd = ["taskset", "-c", str(cpu)] if cpu is not None else []
    cmd += ["h2load", *workload.h2load_args(), "-t", "1", "-D", str(duration), "--warm-up-time", str(warmup)]
    cmd += ["--log-file", str(log_file)]
    if workload.upload:
        cmd += ["-d", str(upload_file)]
    cmd.append(f"{scheme}://127.0.0.1:{port}{workload.path}")
    return cmd


def run_h2load(
    workload: Workload,
    port: int,
    *,
    duration: int,
    warmup: int,
    upload_file: Path,
    log_file: Path,
    cpu: int | None,
) -> Measurement:
    """
    Run h2load against ``127.0.0.1:port`` for ``warmup`` + ``duration`` seconds; only the
    ``duration`` part is measured.
    """
    cmd = h2load_command(
        workload, port, duration=duration, warmup=warmup, upload_file=upload_file, log_file=log_file, cpu=cpu
    )
    # h2load appends to an existing log file.
    log_file.unlink(missing_ok=True)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + H2LOAD_GRACE)
    except subprocess.TimeoutExpired as e:
        # What it printed says how far it got (for instance "Stopped all clients", then waiting
        # for connections the server never closes).
        said = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout or ""
        raise LoadError(
            f"h2load did not finish within {H2LOAD_GRACE}s of its run: {' '.join(cmd)}\n{said.strip()[-2000:]}"
        ) from e
    if done.returncode != 0:
        raise LoadError(f"h2load exited with {done.returncode}: {' '.join(cmd)}\n{done.stdout}{done.stderr}")
    measurement = parse_output(done.stdout, workload)
    if workload.first_response:
        measurement.rps_with_setup = measurement.rps
        measurement.rps, measurement.p50_ms, measurement.p99_ms = window_figures(log_file, skip_s=warmup)
        measurement.mib_s = measurement.rps * workload.payload / MiB
    else:
        measurement.p50_ms, measurement.p99_ms = latency_percentiles(log_file)
    return measurement


_FINISHED = re.compile(r"^finished in .*?, ([\d.]+) req/s", re.M)
_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout",
    re.M,
)
_STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.M)
_PROTOCOL = re.compile(r"^Application protocol: (\S+)", re.M)
#: A line of h2load's time table: min, max, mean (then sd and +/- sd).
_TIMES = r"^{}:\s+(\S+)\s+(\S+)\s+(\S+)"
_TTFB = re.compile(_TIMES.format("time to 1st byte"), re.M)
_CONNECT = re.compile(_TIMES.format("time for connect"), re.M)
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def duration_ms(text: str) -> float:
    """One of h2load's durations (``"812us"``, ``"12.50ms"``, ``"1.02s"``) in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise LoadError(f"cannot read h2load's duration {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_output(text: str, workload: Workload) -> Measurement:
    """
    Read h2load's summary. Its req/s counts the requests completed in the measured period;
    MiB/s is that times the workload's payload.
    """
    finished, requests, status = _FINISHED.search(text), _REQUESTS.search(text), _STATUS.search(text)
    if not (finished and requests and status):
        raise LoadError(f"cannot read h2load's output:\n{text}")
    rps = float(finished.group(1))
    failed, errored, timeout = (int(requests.group(i)) for i in (5, 6, 7))
    ok_2xx = int(status.group(1))
    not_2xx = sum(int(status.group(i)) for i in (2, 3, 4))
    protocol = _PROTOCOL.search(text)
    summary = text[text.find("finished in") :] if "finished in" in text else text
    measurement = Measurement(
        rps=rps,
        mib_s=rps * workload.payload / MiB,
        p50_ms=float("nan"),
        p99_ms=float("nan"),
        succeeded=ok_2xx,
        failures=failed + errored + timeout + not_2xx,
        application_protocol=protocol.group(1) if protocol else "?",
        output=summary.strip(),
    )
    ttfb, connect = _TTFB.search(text), _CONNECT.search(text)
    # h2load prints zeros when it recorded nothing (every connection made during its warm-up).
    if ttfb and duration_ms(ttfb.group(2)) > 0:
        measurement.ttfb_max_ms, measurement.ttfb_mean_ms = duration_ms(ttfb.group(2)), duration_ms(ttfb.group(3))
    if connect and duration_ms(connect.group(2)) > 0:
        measurement.connect_max_ms = duration_ms(connect.group(2))
    return measurement


def read_log(log_file: Path) -> list[tuple[int, int]]:
    """
    h2load's ``--log-file``: one line per request, start time (µs since the epoch), status
    (``-1`` for a failed request) and µs from the start to the end of the response. The
    ``(start, duration)`` of every request that did not fail.
    """
    requests = []
    with open(log_file) as log:
        for line in log:
            fields = line.split("\t")
            if len(fields) >= 3 and fields[1] != "-1":
                requests.append((int(fields[0]), int(fields[2])))
    return requests


def percentiles_ms(durations_us: list[int]) -> tuple[float, float]:
    """p50 and p99 in milliseconds of durations in microseconds (NaN with fewer than two)."""
    if len(durations_us) < 2:
        return float("nan"), float("nan")
    cuts = statistics.quantiles(durations_us, n=100, method="inclusive")
    return cuts[49] / 1000, cuts[98] / 1000


def latency_percentiles(log_file: Path) -> tuple[float, float]:
    """p50 and p99 in milliseconds of every request in h2load's log (the measured period only)."""
    return percentiles_ms([duration for _, duration in read_log(log_file)])


def window_figures(log_file: Path, *, skip_s: float) -> tuple[float, float, float]:
    """
    req/s, p50 and p99 (ms) of a log that starts with the first request: the first ``skip_s``
    seconds (after the first request started) are the warm-up. req/s counts the responses
    completed from then to the last one; the percentiles take the requests started from then.
    """
    requests = read_log(log_file)
    if not requests:
        return float("nan"), float("nan"), float("nan")
    start = min(s for s, _ in requests) + skip_s * 1e6
    ends = [s + d for s, d in requests if s + d >= start]
    if len(ends) < 2 or max(ends) <= start:
        return float("nan"), float("nan"), float("nan")
    rps = len(ends) / ((max(ends) - start) / 1e6)
    return (rps, *percentiles_ms([d for s, d in requests if s >= start]))
