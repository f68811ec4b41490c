"""
Kyoukai against Hypercorn, uvicorn (HTTP/1.1) and a bare h2 server (HTTP/2 small GETs) under
h2load, same app, same machine, same run; and the memory each holds per idle connection.

    python bench/run.py [--quick] [--rounds N] [--uvloop] [--only WORKLOAD ...]
    python bench/run.py --server kyoukai-asgi --server hypercorn --server uvicorn [--app starlette]

Every round runs every workload on every server that has a figure in it (the order reversing
from round to round), each time on a freshly started server. The tables show the medians over
the rounds, then each goal of issue 18 with PASS or MISS; the figures are also written to
bench/results/ as JSON and as a PNG chart. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import math
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import deps
import idle
import report
from servers import (
    ALL_SERVERS,
    ASGI_APPS,
    DEFAULT_SERVERS,
    ServerError,
    ServerProcess,
    free_port,
    make_certificate,
    runs,
    server_command,
)
from workloads import BIG_BODY, WORKLOAD_KEYS, WORKLOADS, LoadError, Workload, run_h2load

RESULTS = Path(__file__).resolve().parent / "results"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Share of a core other processes may use during a run before it counts as disturbed.
OTHERS_CPU_LIMIT = 0.15
#: File descriptors the harness keeps besides the connections it opens (and h2load's).
SPARE_FILES = 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round of 3 s per run (about 3 minutes)")
    parser.add_argument("--rounds", type=int, help="rounds to take the median of (default 3; 1 with --quick)")
    parser.add_argument("--duration", type=int, help="measured seconds per run (default 5; 3 with --quick)")
    parser.add_argument("--warmup", type=int, default=1, help="h2load warm-up seconds before each run (default 1)")
    parser.add_argument("--uvloop", action="store_true", help="run every server on uvloop")
    parser.add_argument(
        "--quiet-wait", type=float, default=30.0, metavar="S",
        help="before each run, wait up to S seconds for a second in which other processes use little CPU (default 30)",
    )  # fmt: skip
    parser.add_argument(
        "--server",
        action="append",
        choices=ALL_SERVERS,
        dest="servers",
        metavar="SERVER",
        help=f"a server to run (repeatable; the first is compared to the others): {', '.join(ALL_SERVERS)}"
        f" (default: {' '.join(DEFAULT_SERVERS)})",
    )
    parser.add_argument(
        "--app", choices=tuple(ASGI_APPS), default="asgi",
        help="the ASGI app that kyoukai-asgi, hypercorn and uvicorn serve: the bare one or Starlette (default asgi)",
    )  # fmt: skip
    parser.add_argument(
        "--only", action="append", choices=WORKLOAD_KEYS, metavar="WORKLOAD",
        help=f"run only this workload (repeatable): {', '.join(WORKLOAD_KEYS)}",
    )  # fmt: skip
    parser.add_argument(
        "--idle-connections", type=int, default=500, metavar="N",
        help="idle connections the idle-h2 and idle-h1 rows hold open (default 500)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (3 if args.quick else 5)
    args.servers = tuple(dict.fromkeys(args.servers or DEFAULT_SERVERS))
    if len(args.servers) < 2:
        parser.error("--server: name at least two servers to compare")
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0:
        parser.error("--rounds and --duration must be at least 1, --warmup at least 0")
    if args.idle_connections < 1:
        parser.error("--idle-connections must be at least 1")
    return args


def raise_open_files_limit(wanted: int) -> int:
    """
    Raise this process's soft limit on open files to ``wanted`` (within the hard limit) for the
    clients it opens and h2load's; the servers, started from here, inherit it. The limit now.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def pick_cpus() -> tuple[int | None, int | None]:
    """(server core, h2load core) when there are two cores to pin to, else (None, None)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2 and shutil.which("taskset"):
        return cpus[0], cpus[1]
    return None, None


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}


def versions() -> dict[str, str]:
    found = {}
    for dist in ("kyoukai", "hypercorn", "uvicorn", "starlette", "h2", "werkzeug", "httptools", "uvloop"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    h2load = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip()
    found["h2load"] = h2load.split()[-1] if h2load else "?"
    return found


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent on anything but idling since boot (``/proc/stat``)."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    # Steal is time a neighbour on the host took: it distorts the figures as much as a local process.
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` so far (``/proc/<pid>/stat``), 0 if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def own_and_children_cpu_seconds() -> float:
    """CPU seconds of this process and of its children waited for (h2load)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def wait_until_quiet(limit: float) -> float:
    """
    Wait until the machine has been idle (under ``OTHERS_CPU_LIMIT`` of a core busy) for a
    second, or ``limit`` seconds have passed; the seconds waited.
    """
    started = time.monotonic()
    while time.monotonic() - started < limit:
        busy = machine_busy_seconds()
        time.sleep(1.0)
        if machine_busy_seconds() - busy < OTHERS_CPU_LIMIT:
            break
    return time.monotonic() - started


def measure_once(
    server: str, workload: Workload, round_no: int, args: argparse.Namespace, files: dict[str, Any]
) -> dict[str, Any]:
    """Start ``server`` fresh, run ``workload`` against it once, stop it; the round's figures."""
    port = free_port()
    cmd, cwd = server_command(
        server, workload.protocol, port, files["certs"], args.uvloop, args.app, access_log=workload.access_log
    )
    log_path = files["dir"] / f"{server}-{workload.key}-{round_no}.log"
    result: dict[str, Any] = {"round": round_no, "problems": []}
    proc = ServerProcess(cmd, cwd, port, files["server_cpu"], log_path)
    try:
        with proc:
            # The peak so far, before any load: the server at rest (imports, listening socket).
            rest = proc.peak_rss_kib()
            # What the machine, the server and h2load (with this harness) spend during the run:
            # the rest is other processes, which make the figures say little.
            started = time.monotonic()
            cpu_before = machine_busy_seconds(), process_cpu_seconds(proc.process.pid), own_and_children_cpu_seconds()
            measured = run_h2load(
                workload,
                port,
                duration=args.duration,
                warmup=args.warmup,
                upload_file=files["upload"],
                log_file=files["dir"] / f"h2load-{server}-{workload.key}-{round_no}.tsv",
                cpu=files["load_cpu"],
            )
            proc.check_alive("under load")
            cpu_after = machine_busy_seconds(), process_cpu_seconds(proc.process.pid), own_and_children_cpu_seconds()
            machine_cpu, server_cpu, harness_cpu = (a - b for a, b in zip(cpu_after, cpu_before, strict=True))
            # Clamped: the three readings are taken at slightly different moments, in clock ticks.
            result["others_cpu"] = max(0.0, machine_cpu - server_cpu - harness_cpu) / (time.monotonic() - started)
            result["server_cpu"] = server_cpu / (time.monotonic() - started)
            rss = proc.peak_rss_kib()
    except (ServerError, LoadError) as e:
        result.update(dict.fromkeys(report.FIGURES, math.nan), problems=[str(e).splitlines()[0]], detail=str(e))
        return result
    rss_mib = rss / 1024 if rss else math.nan
    rest_mib = rest / 1024 if rest else math.nan
    result.update(
        rps=measured.rps,
        mib_s=measured.mib_s,
        p50_ms=measured.p50_ms,
        p99_ms=measured.p99_ms,
        rss_mib=rss_mib,
        rest_mib=rest_mib,
        # What the load cost: the peak of this run over the process at rest.
        growth_mib=rss_mib - rest_mib,
        ttfb_mean_ms=measured.ttfb_mean_ms,
        ttfb_max_ms=measured.ttfb_max_ms,
        connect_max_ms=measured.connect_max_ms,
        rps_with_setup=measured.rps_with_setup,
        problems=measured.problems(workload),
    )
    server_output = log_path.read_text(errors="replace").strip().splitlines()
    if server_output:
        result["server_log"] = {"lines": len(server_output), "tail": server_output[-20:]}
    if result["problems"]:
        result["detail"] = f"h2load:\n{measured.output}\n\n{proc.log_tail()}"
    return result


def measure_idle(
    server: str, workload: Workload, round_no: int, args: argparse.Namespace, files: dict[str, Any]
) -> dict[str, Any]:
    """
    Start ``server`` fresh, hold ``--idle-connections`` idle connections open to it (see
    ``idle.py``), stop it; the settled ``VmRSS`` before and with them, and the KiB per connection.
    """
    port = free_port()
    cmd, cwd = server_command(server, workload.protocol, port, files["certs"], args.uvloop, args.app)
    log_path = files["dir"] / f"{server}-{workload.key}-{round_no}.log"
    result: dict[str, Any] = {"round": round_no, "problems": []}
    proc = ServerProcess(cmd, cwd, port, files["server_cpu"], log_path)
    try:
        with proc:
            rest = proc.peak_rss_kib()
            result.update(idle.measure(proc.process.pid, port, workload.protocol, args.idle_connections))
            proc.check_alive("holding idle connections")
    except (ServerError, idle.IdleError, OSError) as e:
        result.update(dict.fromkeys(report.FIGURES, math.nan), problems=[str(e).splitlines()[0]], detail=str(e))
        if not isinstance(e, ServerError):
            result["detail"] += f"\n{proc.log_tail()}"
        return result
    result["rest_mib"] = rest / 1024 if rest else math.nan
    return result


def progress(server: str, workload: Workload, result: dict[str, Any], label: str) -> None:
    if workload.kind == "idle":
        print(
            f"{label} {workload.key:<9} {server:<12} {report.number(result['kib_per_conn'], 1):>8} KiB per connection"
            f"  RSS {report.number(result['idle_before_mib'], 1)} MiB before,"
            f" {report.number(result['idle_open_mib'], 1)} MiB with them open",
            flush=True,
        )
        if not result.get("rss_settled", True):
            print(
                f"    ! the server's RSS was still moving after {idle.SETTLE_LIMIT:.0f}s: the figure is rough",
                flush=True,
            )
    else:
        figure = "rps" if workload.latency else workload.headline
        first_response = (
            f"  first response mean {report.number(result['ttfb_mean_ms'])} ms"
            f" max {report.number(result['ttfb_max_ms'])} ms"
            if workload.first_response
            else ""
        )
        print(
            f"{label} {workload.key:<9} {server:<12} {report.number(result[figure]):>8}"
            f" {report.HEADLINE_UNITS[figure]:<6}"
            f" p50 {report.number(result['p50_ms'], 2):>7} ms  p99 {report.number(result['p99_ms'], 2):>7} ms"
            f"  RSS {report.number(result['rss_mib'], 1):>6} MiB (+{report.number(result['growth_mib'], 1)})"
            f"  CPU: server {report.number(100 * result.get('server_cpu', math.nan)):>3}%"
            f", others {report.number(100 * result.get('others_cpu', math.nan)):>3}%{first_response}",
            flush=True,
        )
    if result.get("others_cpu", 0) > OTHERS_CPU_LIMIT:
        print("    ! disturbed: other processes used the CPU during this run", flush=True)
    for problem in result["problems"]:
        print(f"    ! {problem}", flush=True)
    if "server_log" in result and "detail" not in result:
        log = result["server_log"]
        print(f"    server wrote {log['lines']} log line(s), the last: {log['tail'][-1]}", flush=True)
    if "detail" in result:
        print("    " + result["detail"].replace("\n", "\n    "), flush=True)


def run_benchmark(args: argparse.Namespace, workloads: list[Workload], files: dict[str, Any]) -> list[dict[str, Any]]:
    """Every round, every workload, every server that has a figure in it; the report rows."""
    results: dict[str, dict[str, list]] = {w.key: {s: [] for s in args.servers} for w in workloads}
    for round_no in range(1, args.rounds + 1):
        # Reverse the order every round, so no server always runs on a warmer (or hotter) machine.
        order = args.servers if round_no % 2 else tuple(reversed(args.servers))
        for workload in workloads:
            for server in order:
                if not runs(server, workload):
                    continue
                waited = wait_until_quiet(args.quiet_wait) if args.quiet_wait else 0.0
                measure = measure_idle if workload.kind == "idle" else measure_once
                result = measure(server, workload, round_no, args, files)
                result["waited_s"] = round(waited, 1)
                results[workload.key][server].append(result)
                progress(server, workload, result, f"[round {round_no}/{args.rounds}]")
    return [report.build_row(w, results[w.key], w.describe(args.idle_connections)) for w in workloads]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deps.ensure_dependencies(uvloop=args.uvloop, uvicorn="uvicorn" in args.servers, starlette=args.app == "starlette")
    # SIGTERM unwinds like Ctrl-C, so every server started is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workloads = [w for w in WORKLOADS if not args.only or w.key in args.only]
    workloads = [w for w in workloads if any(runs(s, w) for s in args.servers)]
    if not workloads:
        print(f"none of the rows asked for has a server among {', '.join(args.servers)}", file=sys.stderr)
        return 2
    wanted_files = 2 * args.idle_connections + SPARE_FILES
    open_files = raise_open_files_limit(wanted_files)
    if open_files < wanted_files:
        print(
            f"warning: the hard limit on open files keeps the soft one at {open_files}, under the {wanted_files}"
            " that --idle-connections and the 500-connection rows need: raise it (ulimit -Hn) as root",
            file=sys.stderr,
        )
    server_cpu, load_cpu = pick_cpus()
    started = time.monotonic()
    date = datetime.datetime.now(datetime.UTC)
    pinning = f"server on core {server_cpu}, h2load on core {load_cpu}" if server_cpu is not None else "not pinned"
    load_before = os.getloadavg()
    print(
        f"{len(workloads)} workload(s) x {args.rounds} round(s) on {', '.join(args.servers)} (ASGI app: {args.app}), "
        f"{args.warmup}s warm-up + {args.duration}s each, {'uvloop' if args.uvloop else 'asyncio'} loop, {pinning}, "
        f"{args.idle_connections} idle connections, open files limit {open_files}, load average {load_before[0]:.2f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="kyoukai-bench-") as tmp:
        directory = Path(tmp)
        upload = directory / "upload.bin"
        upload.write_bytes(b"x" * BIG_BODY)
        files = {
            "dir": directory,
            "certs": make_certificate(directory),
            "upload": upload,
            "server_cpu": server_cpu,
            "load_cpu": load_cpu,
        }
        try:
            rows = run_benchmark(args, workloads, files)
        except KeyboardInterrupt:
            print("\ninterrupted; servers stopped", file=sys.stderr)
            return 130
    result = {
        "date": date.isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "loop": "uvloop" if args.uvloop else "asyncio",
            "servers": list(args.servers),
            "idle_connections": args.idle_connections,
            "asgi_app": ASGI_APPS[args.app],
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "server_cpu": server_cpu,
            "h2load_cpu": load_cpu,
            "latency_source": "h2load --log-file (per request, measured period only; conns rows: after the warm-up)",
        },
        "rows": rows,
        "goals": report.goals(rows),
    }
    stamp = date.strftime("%Y%m%dT%H%M%SZ")
    json_path = report.write_json(result, RESULTS, stamp)
    chart_path = report.write_chart(result, RESULTS / "latest.png")
    m = result["machine"]
    load = f"load average {load_before[0]:.2f} before, {result['settings']['load_average_after'][0]:.2f} after"
    print(
        f"\nMedians of {args.rounds} round(s), {date:%Y-%m-%d %H:%M} UTC, {m['cpu']}, {m['cores']} cores, {pinning}, "
        f"{load}, ASGI app: {ASGI_APPS[args.app]}:\n"
    )
    tables = (report.format_table(rows), report.format_first_response_table(rows), report.format_idle_table(rows))
    print("\n\n".join(t for t in tables if t))
    if result["goals"]:
        print(f"\nGoals of issue 18 ({report.LABELS.get(args.servers[0], args.servers[0])}, {args.rounds} round(s)):")
        print(report.format_goals(result["goals"]))
    problems = [p for row in rows for p in row["problems"]]
    if problems:
        print("\nProblems (those rounds are suspect):")
        print("\n".join(f"- {p}" for p in problems))
    print(f"\nwrote {json_path}, {RESULTS / 'latest.json'}, {chart_path} in {time.monotonic() - started:.0f}s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
