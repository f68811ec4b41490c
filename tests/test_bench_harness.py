"""
The benchmark harness (``bench/run.py`` and its modules), without a benchmark run: the server
command lines, which server runs which row, the h2load command lines and what is read from
h2load's output and log, the tables and the goal lines, and the idle-connection client against
a real server.
"""

from __future__ import annotations

import importlib.util
import math
import os
import resource
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import serve

from kyoukai.backends.http2 import H2KyoukaiComponent

BENCH = Path(__file__).resolve().parent.parent / "bench"
# The harness's modules import each other by name, as when bench/run.py is run.
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import idle  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402
import servers  # noqa: E402
import workloads  # noqa: E402

CERTS = (Path("/tmp/cert.pem"), Path("/tmp/key.pem"))
ROWS = {w.key: w for w in workloads.WORKLOADS}
PYTHON = sys.executable


def load_app() -> Any:
    """The benchmark's Kyoukai app (bench/apps is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_harness_kyoukai_app", BENCH / "apps" / "kyoukai_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


# server command lines


def test_kyoukai_over_tls_on_http_1_1_with_the_access_log() -> None:
    cmd, cwd = servers.server_command("kyoukai", "h1tls", 8000, CERTS, False, access_log=True)
    assert cmd == [
        PYTHON,
        str(servers.APPS / "serve_kyoukai.py"),
        "--protocol",
        "h1tls",
        "--port",
        "8000",
        "--certfile",
        "/tmp/cert.pem",
        "--keyfile",
        "/tmp/key.pem",
        "--access-log",
    ]
    assert cwd == servers.REPO


def test_kyoukai_asgi_on_uvloop() -> None:
    cmd, _ = servers.server_command("kyoukai-asgi", "h2c", 8000, None, True, "starlette")
    assert cmd[2:] == ["--protocol", "h2c", "--port", "8000", "--app", "starlette_app", "--uvloop"]


def test_hypercorn_and_uvicorn_over_tls() -> None:
    hypercorn, cwd = servers.server_command("hypercorn", "h1tls", 8000, CERTS, False)
    assert hypercorn[1:6] == ["serve_hypercorn.py", "--config", "hypercorn.toml", "--bind", "127.0.0.1:8000"]
    assert hypercorn[6:] == [
        "--certfile",
        "/tmp/cert.pem",
        "--keyfile",
        "/tmp/key.pem",
        "--worker-class",
        "asyncio",
        "asgi_app:app",
    ]
    assert cwd == servers.APPS
    uvicorn, _ = servers.server_command("uvicorn", "h1tls", 8000, CERTS, True)
    assert uvicorn[uvicorn.index("--loop") + 1] == "uvloop"
    assert uvicorn[-5:] == ["--ssl-certfile", "/tmp/cert.pem", "--ssl-keyfile", "/tmp/key.pem", "asgi_app:app"]
    assert "--ssl-certfile" not in servers.server_command("uvicorn", "h1", 8000, None, False)[0]


def test_bare_h2_cleartext_tls_and_uvloop() -> None:
    assert servers.server_command("bare-h2", "h2c", 8000, None, False)[0] == [PYTHON, str(servers.BARE_H2), "8000"]
    tls, _ = servers.server_command("bare-h2", "h2", 8000, CERTS, False)
    assert tls[2:] == ["8000", "--certfile", "/tmp/cert.pem", "--keyfile", "/tmp/key.pem"]
    on_uvloop, _ = servers.server_command("bare-h2", "h2c", 8000, None, True)
    assert on_uvloop == [PYTHON, "-c", servers.UVLOOP_RUNNER, str(servers.BARE_H2), "8000"]


@pytest.mark.parametrize(
    ("server", "protocol", "certs", "access_log", "message"),
    [
        ("uvicorn", "h2c", None, False, "uvicorn does not serve h2c"),
        ("bare-h2", "h1", None, False, "bare-h2 does not serve h1"),
        ("hypercorn", "h2c", None, True, "access_log"),
        ("kyoukai", "h1tls", None, False, r"h1tls \(TLS\) needs a certificate"),
        ("nginx", "h2c", None, False, "unknown server 'nginx'"),
    ],
)
def test_command_lines_that_cannot_be(
    server: str, protocol: str, certs: tuple[Path, Path] | None, access_log: bool, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        servers.server_command(server, protocol, 8000, certs, False, access_log=access_log)


# which server runs which row


def test_the_default_run_measures_every_goal_on_the_servers_it_needs() -> None:
    ran = {key: [s for s in servers.DEFAULT_SERVERS if servers.runs(s, w)] for key, w in ROWS.items()}
    small_http2 = ["kyoukai", "hypercorn", "bare-h2"]
    assert ran == {
        "tls": small_http2,
        "h2c": small_http2,
        "accesslog": ["kyoukai"],
        "streams": small_http2,
        "latency": small_http2,
        "conns10": small_http2,
        "conns500": small_http2,
        "download": ["kyoukai", "hypercorn"],
        "upload": ["kyoukai", "hypercorn"],
        "h1": ["kyoukai", "hypercorn", "uvicorn"],
        "h1tls": ["kyoukai", "hypercorn", "uvicorn"],
        "idle-h2": ["kyoukai", "hypercorn"],
        "idle-h1": ["kyoukai", "hypercorn"],
    }
    assert servers.runs("kyoukai-asgi", ROWS["accesslog"])


def test_every_row_can_be_asked_for_alone() -> None:
    for key in workloads.WORKLOAD_KEYS:
        args = run.parse_args(["--only", key])
        assert args.only == [key]
        assert args.servers == servers.DEFAULT_SERVERS
    assert run.parse_args(["--server", "kyoukai", "--server", "uvicorn"]).servers == ("kyoukai", "uvicorn")


def test_the_open_files_limit_is_raised_not_lowered() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert run.raise_open_files_limit(16) == soft
    wanted = soft + 10 if hard == resource.RLIM_INFINITY else min(soft + 10, hard)
    assert run.raise_open_files_limit(wanted) == wanted == resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# h2load: command lines, output and log


def h2load(key: str, cpu: int | None = None) -> list[str]:
    return workloads.h2load_command(
        ROWS[key], 8000, duration=5, warmup=1, upload_file=Path("up.bin"), log_file=Path("log.tsv"), cpu=cpu
    )


def test_h2load_command_lines() -> None:
    assert h2load("latency") == [
        "h2load",
        "-c",
        "1",
        "-m",
        "1",
        "-t",
        "1",
        "-D",
        "5",
        "--warm-up-time",
        "1",
        "--log-file",
        "log.tsv",
        "http://127.0.0.1:8000/",
    ]
    # Measured from the first connection on: the warm-up is cut from the log instead.
    assert h2load("conns500", cpu=1)[:9] == ["taskset", "-c", "1", "h2load", "-c", "500", "-m", "1", "-t"]
    assert h2load("conns500")[h2load("conns500").index("-D") :][:4] == ["-D", "6", "--warm-up-time", "0"]
    assert h2load("h1tls")[:4] == ["h2load", "-c", "10", "--h1"]
    assert h2load("h1tls")[-1] == "https://127.0.0.1:8000/"
    assert h2load("upload")[-3:] == ["-d", "up.bin", "http://127.0.0.1:8000/upload"]


H2LOAD_OUTPUT = """\
finished in 6.01s, 1828.75 req/s, 95.72KB/s
requests: 7315 total, 7815 started, 7315 done, 7300 succeeded, 15 failed, 0 errored, 0 timeout
status codes: 7300 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 382.87KB (392054) total, 118.63KB (121474) headers (space savings 88.47%), 100.01KB (102410) data
                     min         max         mean         sd        +/- sd
time for request:   115.69ms    656.31ms    256.04ms    101.80ms    77.65%
time for connect:      120us       1.02s      5.70ms      5.13ms    81.40%
time to 1st byte:   129.32ms    673.74ms    435.12ms    219.20ms    47.60%
req/s           :       3.49        3.96        3.64        0.16    86.80%
"""


def test_h2load_summary_with_the_first_response_of_each_connection() -> None:
    measured = workloads.parse_output("Application protocol: h2c\n" + H2LOAD_OUTPUT, ROWS["conns500"])
    assert measured.rps == 1828.75
    assert measured.failures == 15
    assert measured.ttfb_max_ms == 673.74 and measured.ttfb_mean_ms == 435.12
    assert measured.connect_max_ms == 1020.0
    assert measured.problems(ROWS["conns500"]) == ["15 failed/errored/timed-out or non-2xx requests"]
    assert measured.problems(ROWS["h1tls"])[-1] == "negotiated 'h2c', expected 'http/1.1'"


def test_nothing_recorded_during_the_warm_up_is_not_a_figure() -> None:
    zeros = H2LOAD_OUTPUT.replace("129.32ms    673.74ms    435.12ms", "0us    0us    0us")
    measured = workloads.parse_output(zeros, ROWS["h2c"])
    assert math.isnan(measured.ttfb_mean_ms) and math.isnan(measured.ttfb_max_ms)


@pytest.mark.parametrize(("text", "ms"), [("812us", 0.812), ("12.50ms", 12.5), ("1.02s", 1020.0)])
def test_h2load_durations(text: str, ms: float) -> None:
    assert workloads.duration_ms(text) == pytest.approx(ms)


def test_an_unreadable_duration_is_an_error() -> None:
    with pytest.raises(workloads.LoadError, match="12 minutes"):
        workloads.duration_ms("12 minutes")


def test_the_warm_up_is_cut_from_the_log(tmp_path: Path) -> None:
    log = tmp_path / "h2load.tsv"
    start = 1_800_000_000_000_000
    # Ten connections' first responses after 0.9 s, during the warm-up.
    lines = [f"{start + i}\t200\t900000" for i in range(10)]
    # After the first second: a request every 10 ms for 2 s, each taking 1 ms, and one failure.
    lines += [f"{start + 1_000_000 + i * 10_000}\t200\t1000" for i in range(201)]
    lines.append(f"{start + 1_500_000}\t-1\t5")
    log.write_text("\n".join(lines) + "\n")
    rps, p50, p99 = workloads.window_figures(log, skip_s=1)
    assert rps == pytest.approx(201 / 2.001)
    assert p50 == p99 == 1.0
    # Taken whole, the slow first response shows in the p99.
    assert workloads.latency_percentiles(log)[1] > 1.0


# tables and goals


def rounds(**figures: list[float]) -> list[dict[str, Any]]:
    """One result per round, each figure's n-th value in round n."""
    count = len(next(iter(figures.values())))
    return [{"round": i + 1, "problems": [], **{k: v[i] for k, v in figures.items()}} for i in range(count)]


def row(
    key: str, names: tuple[str, ...] = servers.DEFAULT_SERVERS, **per_server: list[dict[str, Any]]
) -> dict[str, Any]:
    """A report row of ``key`` over the servers ``names`` (as in a run), with the rounds given."""
    workload = ROWS[key]
    return report.build_row(workload, {n: per_server.get(n, []) for n in names}, workload.describe(500))


def load_row(key: str, names: tuple[str, ...] = servers.DEFAULT_SERVERS, **rps: float) -> dict[str, Any]:
    """A report row of ``key``: one round with these req/s, 1 MiB of growth each."""
    return row(key, names, **{n: rounds(rps=[v], growth_mib=[1.0], rest_mib=[30.0]) for n, v in rps.items()})


def goal(found: list[dict[str, Any]], start: str) -> dict[str, Any]:
    """The one goal whose name starts with ``start``."""
    (match,) = [g for g in found if g["goal"].startswith(start)]
    return match


def test_the_table_has_a_column_for_each_server_measured() -> None:
    rows = [
        load_row("h2c", kyoukai=3000, hypercorn=1000, **{"bare-h2": 2500}),
        row("latency", kyoukai=rounds(p99_ms=[1.5]), hypercorn=rounds(p99_ms=[3.0])),
    ]
    lines = report.format_table(rows).splitlines()
    assert lines[0].startswith(
        "| workload | h2load | Kyoukai | Hypercorn | bare h2 | Kyoukai/Hypercorn | Kyoukai/bare h2 | p50 ms (K / H / B)"
    )
    assert "RSS growth MiB (K / H / B)" in lines[0]
    assert lines[1].count("--:") == 9
    assert lines[2].startswith("| small GET, h2c | `-c 10 -m 10` | 3,000 req/s | 1,000 req/s | 2,500 req/s")
    assert "| **3.00x** | **1.20x** |" in lines[2]
    assert "| 1.50 ms p99 | 3.00 ms p99 | - | **0.50x** | - |" in lines[3]


def test_the_idle_table_and_the_first_response_table() -> None:
    idle_row = row(
        "idle-h2",
        kyoukai=rounds(kib_per_conn=[20.0, 24.0, 22.0], idle_before_mib=[30, 30, 30], idle_open_mib=[41, 42, 41]),
        hypercorn=rounds(kib_per_conn=[27.5], idle_before_mib=[28], idle_open_mib=[41.4]),
    )
    lines = report.format_idle_table([idle_row]).splitlines()
    assert lines[0] == (
        "| idle connections | held open | Kyoukai | Hypercorn | Kyoukai/Hypercorn | RSS before MiB (K / H)"
        " | RSS with them open MiB (K / H) |"
    )
    assert lines[2] == (
        "| memory per idle connection, h2c | 500 idle h2c connections | 22.0 KiB | 27.5 KiB | **0.80x**"
        " | 30.0 / 28.0 | 41.0 / 41.4 |"
    )
    conns = row("conns500", kyoukai=rounds(rps=[900], ttfb_mean_ms=[860], ttfb_max_ms=[1250]))
    assert "| 860.0 | 1,250.0 |" in report.format_first_response_table([conns])
    assert report.format_first_response_table([idle_row]) == ""


def test_goals_pass_and_miss() -> None:
    rows = [
        load_row("tls", kyoukai=1200, hypercorn=400, **{"bare-h2": 1000}),
        load_row("h2c", kyoukai=1000, hypercorn=400, **{"bare-h2": 1000}),
        row("accesslog", kyoukai=rounds(rps=[950, 700])),
        row("latency", kyoukai=rounds(p99_ms=[1.0]), hypercorn=rounds(p99_ms=[2.5])),
        row("conns10", kyoukai=rounds(rps=[1000, 1000]), hypercorn=rounds(rps=[500, 500])),
        row("conns500", kyoukai=rounds(rps=[950, 870], ttfb_mean_ms=[800, 900], ttfb_max_ms=[1200, 1300])),
        load_row("h1", kyoukai=2000, uvicorn=5000, hypercorn=900),
        row("upload", kyoukai=rounds(mib_s=[300], growth_mib=[3.7]), hypercorn=rounds(mib_s=[100], growth_mib=[1.6])),
        row("idle-h2", kyoukai=rounds(kib_per_conn=[15.5]), hypercorn=rounds(kib_per_conn=[27.5])),
    ]
    # The access log row is paired round by round with the h2c row, which lacks round 2.
    rows[1]["servers"]["kyoukai"]["rounds"] = rounds(rps=[1000, math.nan])
    found = report.goals(rows)
    texts = report.format_goals(found).splitlines()
    assert texts[0] == (
        "- HTTP/2 small GET, h2 over TLS (tls) against the bare-h2 floor: Kyoukai/bare h2 1.20x; goal >= 1.10x: PASS"
    )
    assert texts[1].endswith("Kyoukai/bare h2 1.00x; goal >= 1.10x: MISS")
    latency = goal(found, "Tail latency")
    assert latency["passed"] is True
    assert "Kyoukai 1.00 ms, Hypercorn 2.50 ms: 0.40x" in latency["text"]
    assert goal(found, "HTTP/1.1 cleartext")["text"].endswith("Kyoukai/uvicorn 0.40x; goal >= 0.50x: MISS")
    scaling = goal(found, "Connection scaling")
    assert scaling["value"] == pytest.approx(0.91) and scaling["passed"] is True
    assert "first response on each of 500 connections: Kyoukai mean 850 ms max 1,250 ms" in scaling["text"]
    growth = goal(found, "RSS growth")
    assert growth["passed"] is False
    assert "at most Hypercorn's on 3 of 4 rows; over it on upload (3.7 vs 1.6 MiB)" in growth["text"]
    assert goal(found, "Memory per idle HTTP/2")["passed"] is True
    access = goal(found, "Access log on")
    assert access["value"] == pytest.approx(0.95) and access["passed"] is True
    assert "costs 5%" in access["text"]
    # h1tls was not run: no line for it.
    assert not any("h1tls" in t for t in texts)


def test_a_goal_whose_rows_were_not_all_run_says_what_it_needs() -> None:
    pair = ("kyoukai", "hypercorn")
    rows = [row("conns500", pair, kyoukai=rounds(rps=[900])), load_row("tls", pair, kyoukai=1000, hypercorn=500)]
    texts = report.format_goals(report.goals(rows)).splitlines()
    assert (
        texts[0]
        == "- HTTP/2 small GET, h2 over TLS (tls) against the bare-h2 floor: not measured (needs --server bare-h2)"
    )
    assert texts[1].endswith("(conns500 / conns10): not measured (needs --only conns10)")


def test_a_server_without_a_figure_leaves_its_goal_unmeasured() -> None:
    tls = goal(report.goals([load_row("tls", kyoukai=1000, hypercorn=500)]), "HTTP/2")
    assert tls["passed"] is None
    assert tls["text"].endswith("not measured (no figure: see the problems)")


def test_the_json_has_no_nan(tmp_path: Path) -> None:
    path = report.write_json({"goals": report.goals([load_row("h2c", kyoukai=1000)])}, tmp_path, "stamp")
    assert '"value": null' in path.read_text()
    assert path.read_text() == (tmp_path / "latest.json").read_text()
    assert "NaN" not in path.read_text()


# the idle-connection client, against real servers


@pytest.mark.parametrize(("protocol", "component"), [("h2c", H2KyoukaiComponent), ("h1", None)])
def test_idle_connections_stay_open_until_the_server_stops(protocol: str, component: type | None) -> None:
    kwargs = {"component_class": component} if component else {}
    with serve(load_app(), **kwargs) as server:
        socks = [idle.open_connection(server.port, protocol) for _ in range(3)]
        assert idle.count_closed(socks) == 0
    # Stopping the server closes them (a GOAWAY first on HTTP/2).
    deadline = time.monotonic() + 10
    while idle.count_closed(socks) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert idle.count_closed(socks) == 3
    for sock in socks:
        sock.close()


def test_a_server_that_is_not_http2_fails_the_handshake() -> None:
    with serve(load_app()) as server, pytest.raises(idle.IdleError):
        idle.open_connection(server.port, "h2c")


def test_rss_of_a_process() -> None:
    rss = idle.vm_rss_kib(os.getpid())
    assert rss is not None and rss > 1024
    assert idle.vm_rss_kib(2**22 + 1) is None


# serve_kyoukai.py: HTTP/1.1 over TLS with the access log


def test_serve_kyoukai_over_tls_with_the_access_log(tls_files: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    certs = (Path(tls_files["cert"]), Path(tls_files["key"]))
    cmd, cwd = servers.server_command("kyoukai", "h1tls", port, certs, False, access_log=True)
    log = tmp_path / "server.log"
    process = servers.ServerProcess(cmd, cwd, port, None, log)
    with process:
        with httpx.Client(verify=ssl.create_default_context(cafile=tls_files["ca"])) as client:
            response = client.get(f"https://127.0.0.1:{port}/")
        assert response.status_code == 200 and response.text == "Hello, world!\n"
        assert response.http_version == "HTTP/1.1"
        deadline = time.monotonic() + 10
        while "kyoukai.access" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert '"GET / HTTP/1.1" 200 14' in log.read_text()


def test_serve_kyoukai_needs_the_certificate_for_tls() -> None:
    done = subprocess.run(
        [PYTHON, str(servers.APPS / "serve_kyoukai.py"), "--protocol", "h1tls", "--port", "1"],
        capture_output=True,
        text=True,
        cwd=servers.REPO,
        env=dict(os.environ, PYTHONPATH=str(servers.REPO)),
    )
    assert done.returncode == 2
    assert "--protocol h1tls (TLS) needs --certfile and --keyfile" in done.stderr
