"""
Kyoukai against Hypercorn under h2load, same app, same machine, same run.

    python bench/run.py [--quick] [--rounds N] [--uvloop] [--only WORKLOAD ...]

Every round runs every workload on both servers (the order alternating from round to round),
each time on a freshly started server. The table shows the medians over the rounds; it is also
written to bench/results/ as JSON and as a PNG chart. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import deps
import report
from servers import SERVERS, ServerError, ServerProcess, free_port, make_certificate, server_command
from workloads import BIG_BODY, WORKLOAD_KEYS, WORKLOADS, LoadError, Workload, run_h2load

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round of 3 s per run (about a minute)")
    parser.add_argument("--rounds", type=int, help="rounds to take the median of (default 3; 1 with --quick)")
    parser.add_argument("--duration", type=int, help="measured seconds per run (default 5; 3 with --quick)")
    parser.add_argument("--warmup", type=int, default=1, help="h2load warm-up seconds before each run (default 1)")
    parser.add_argument("--uvloop", action="store_true", help="run both servers on uvloop")
    parser.add_argument(
        "--only", action="append", choices=WORKLOAD_KEYS, metavar="WORKLOAD",
        help=f"run only this workload (repeatable): {', '.join(WORKLOAD_KEYS)}",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (3 if args.quick else 5)
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0:
        parser.error("--rounds and --duration must be at least 1, --warmup at least 0")
    return args


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
    for dist in ("kyoukai", "hypercorn", "h2", "werkzeug", "httptools", "uvloop"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    h2load = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip()
    found["h2load"] = h2load.split()[-1] if h2load else "?"
    return found


def measure_once(
    server: str, workload: Workload, round_no: int, args: argparse.Namespace, files: dict[str, Any]
) -> dict[str, Any]:
    """Start ``server`` fresh, run ``workload`` against it once, stop it; the round's figures."""
    port = free_port()
    cmd, cwd = server_command(server, workload.protocol, port, files["certs"], args.uvloop)
    log_path = files["dir"] / f"{server}-{workload.key}-{round_no}.log"
    result: dict[str, Any] = {"round": round_no, "problems": []}
    proc = ServerProcess(cmd, cwd, port, files["server_cpu"], log_path)
    try:
        with proc:
            # The peak so far, before any load: the server at rest (imports, listening socket).
            rest = proc.peak_rss_kib()
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
            rss = proc.peak_rss_kib()
    except (ServerError, LoadError) as e:
        result.update(dict.fromkeys(report.FIGURES, math.nan), problems=[str(e).splitlines()[0]], detail=str(e))
        return result
    result.update(
        rps=measured.rps,
        mib_s=measured.mib_s,
        p50_ms=measured.p50_ms,
        p99_ms=measured.p99_ms,
        rss_mib=rss / 1024 if rss else math.nan,
        rest_mib=rest / 1024 if rest else math.nan,
        problems=measured.problems(workload),
    )
    server_output = log_path.read_text(errors="replace").strip().splitlines()
    if server_output:
        result["server_log"] = {"lines": len(server_output), "tail": server_output[-20:]}
    if result["problems"]:
        result["detail"] = f"h2load:\n{measured.output}\n\n{proc.log_tail()}"
    return result


def progress(server: str, workload: Workload, result: dict[str, Any], label: str) -> None:
    unit = report.HEADLINE_UNITS[workload.headline]
    print(
        f"{label} {workload.key:<9} {server:<10} {report.number(result[workload.headline]):>8} {unit:<6}"
        f" p50 {report.number(result['p50_ms'], 2):>7} ms  p99 {report.number(result['p99_ms'], 2):>7} ms"
        f"  RSS {report.number(result['rss_mib'], 1):>6} MiB",
        flush=True,
    )
    for problem in result["problems"]:
        print(f"    ! {problem}", flush=True)
    if "server_log" in result and "detail" not in result:
        log = result["server_log"]
        print(f"    server wrote {log['lines']} log line(s), the last: {log['tail'][-1]}", flush=True)
    if "detail" in result:
        print("    " + result["detail"].replace("\n", "\n    "), flush=True)


def run_benchmark(args: argparse.Namespace, workloads: list[Workload], files: dict[str, Any]) -> list[dict[str, Any]]:
    """Every round, every workload, both servers; the report rows."""
    results: dict[str, dict[str, list]] = {w.key: {s: [] for s in SERVERS} for w in workloads}
    for round_no in range(1, args.rounds + 1):
        # Alternate who goes first, so neither server always runs on a warmer (or hotter) machine.
        order = SERVERS if round_no % 2 else tuple(reversed(SERVERS))
        for workload in workloads:
            for server in order:
                result = measure_once(server, workload, round_no, args, files)
                results[workload.key][server].append(result)
                progress(server, workload, result, f"[round {round_no}/{args.rounds}]")
    return [report.build_row(w, results[w.key]) for w in workloads]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deps.ensure_dependencies(uvloop=args.uvloop)
    # SIGTERM unwinds like Ctrl-C, so every server started is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workloads = [w for w in WORKLOADS if not args.only or w.key in args.only]
    server_cpu, load_cpu = pick_cpus()
    started = time.monotonic()
    date = datetime.datetime.now(datetime.UTC)
    pinning = f"server on core {server_cpu}, h2load on core {load_cpu}" if server_cpu is not None else "not pinned"
    print(
        f"{len(workloads)} workload(s) x {args.rounds} round(s), {args.warmup}s warm-up + {args.duration}s each, "
        f"{'uvloop' if args.uvloop else 'asyncio'} loop, {pinning}",
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
            "server_cpu": server_cpu,
            "h2load_cpu": load_cpu,
            "latency_source": "h2load --log-file (per request, measured period only)",
        },
        "rows": rows,
    }
    stamp = date.strftime("%Y%m%dT%H%M%SZ")
    json_path = report.write_json(result, RESULTS, stamp)
    chart_path = report.write_chart(result, RESULTS / "latest.png")
    m = result["machine"]
    print(f"\nMedians of {args.rounds} round(s), {date:%Y-%m-%d}, {m['cpu']}, {m['cores']} cores, {pinning}:\n")
    print(report.format_table(rows))
    problems = [p for row in rows for p in row["problems"]]
    if problems:
        print("\nProblems (those rounds are suspect):")
        print("\n".join(f"- {p}" for p in problems))
    print(f"\nwrote {json_path}, {RESULTS / 'latest.json'}, {chart_path} in {time.monotonic() - started:.0f}s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
