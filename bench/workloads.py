"""
The workloads: what h2load asks for, how it is invoked, and what its output and per-request
log say (requests/s, MiB/s, latency percentiles, failures).
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


@dataclass(frozen=True)
class Workload:
    """One row of the table."""

    #: Short name, for ``--only``.
    key: str
    #: What the row says.
    title: str
    #: ``"h2"`` (TLS, ALPN h2), ``"h2c"`` (cleartext, prior knowledge) or ``"h1"``.
    protocol: str
    path: str
    clients: int
    streams: int
    #: Body bytes per request that count towards MiB/s (response body, or request body for uploads).
    payload: int
    upload: bool = False

    @property
    def application_protocol(self) -> str:
        """What h2load must report as negotiated."""
        return {"h2": "h2", "h2c": "h2c", "h1": "http/1.1"}[self.protocol]

    @property
    def headline(self) -> str:
        """The figure the ratio is taken of: ``"rps"`` or ``"mib_s"``."""
        return "mib_s" if self.payload >= MiB else "rps"

    def h2load_args(self) -> list[str]:
        """The load shape, as h2load options."""
        args = ["-c", str(self.clients)]
        if self.protocol == "h1":
            args.append("--h1")
        else:
            args += ["-m", str(self.streams)]
        return args


WORKLOADS = (
    Workload("tls", "small GET, h2 over TLS", "h2", "/", 10, 10, SMALL_BODY),
    Workload("h2c", "small GET, h2c", "h2c", "/", 10, 10, SMALL_BODY),
    Workload("streams", "100 streams, 1 connection, h2c", "h2c", "/", 1, 100, SMALL_BODY),
    Workload("download", "1 MiB download, h2c", "h2c", "/big", 4, 4, BIG_BODY),
    Workload("upload", "1 MiB upload, h2c", "h2c", "/upload", 4, 4, BIG_BODY, upload=True),
    Workload("h1", "small GET, HTTP/1.1", "h1", "/", 10, 1, SMALL_BODY),
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
    scheme = "https" if workload.protocol == "h2" else "http"
    cmd = ["taskset", "-c", str(cpu)] if cpu is not None else []
    cmd += ["h2load", *workload.h2load_args(), "-t", "1", "-D", str(duration), "--warm-up-time", str(warmup)]
    # h2load appends to an existing log file.
    log_file.unlink(missing_ok=True)
    cmd += ["--log-file", str(log_file)]
    if workload.upload:
        cmd += ["-d", str(upload_file)]
    cmd.append(f"{scheme}://127.0.0.1:{port}{workload.path}")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 60)
    except subprocess.TimeoutExpired as e:
        raise LoadError(f"h2load did not finish: {' '.join(cmd)}") from e
    if done.returncode != 0:
        raise LoadError(f"h2load exited with {done.returncode}: {' '.join(cmd)}\n{done.stdout}{done.stderr}")
    measurement = parse_output(done.stdout, workload)
    measurement.p50_ms, measurement.p99_ms = latency_percentiles(log_file)
    return measurement


_FINISHED = re.compile(r"^finished in .*?, ([\d.]+) req/s", re.M)
_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout",
    re.M,
)
_STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.M)
_PROTOCOL = re.compile(r"^Application protocol: (\S+)", re.M)


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
    return Measurement(
        rps=rps,
        mib_s=rps * workload.payload / MiB,
        p50_ms=float("nan"),
        p99_ms=float("nan"),
        succeeded=ok_2xx,
        failures=failed + errored + timeout + not_2xx,
        application_protocol=protocol.group(1) if protocol else "?",
        output=summary.strip(),
    )


def latency_percentiles(log_file: Path) -> tuple[float, float]:
    """
    p50 and p99 in milliseconds from h2load's ``--log-file``: one line per request of the
    measured period, the third column being microseconds from request start to end of response.
    Failed requests (status ``-1``) are left out.
    """
    times = []
    with open(log_file) as log:
        for line in log:
            fields = line.split("\t")
            if len(fields) >= 3 and fields[1] != "-1":
                times.append(int(fields[2]))
    if len(times) < 2:
        return float("nan"), float("nan")
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return cuts[49] / 1000, cuts[98] / 1000
