"""
The WebSocket row: Kyoukai against Hypercorn echoing 1 KiB binary messages, same machine, same
run, the servers interleaved in every round.

    python bench/websocket.py [--rounds N] [--duration S] [--warmup S] [--uvloop] [--only ROW ...]
                              [--quiet-wait S] [--retries N]
    python bench/websocket.py --profile FILE     # Kyoukai under cProfile, the msg50 row once

Rows: round trips per second (one message in flight per connection) and messages per second
(a window of messages in flight per connection), each with 1 and 50 connections. The load
client is bench/ws_client.py. Each run waits for an idle machine first (up to --quiet-wait
seconds) and is run again if other processes took CPU during it (up to --retries times). The
table shows the medians over the rounds; the figures also go to bench/results/websocket/ as
JSON. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import math
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import deps
import report
from run import (
    OTHERS_CPU_LIMIT,
    machine,
    machine_busy_seconds,
    own_and_children_cpu_seconds,
    pick_cpus,
    process_cpu_seconds,
    wait_until_quiet,
)
from servers import SERVERS, ServerError, ServerProcess, free_port, server_command

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "websocket"
CLIENT = BENCH / "ws_client.py"
#: Bytes per message.
SIZE = 1024
#: Above this share of its core the load client may be what limits the figure.
CLIENT_CPU_LIMIT = 0.9
#: What the issue asks of Kyoukai: at least this many times Hypercorn's figure.
GOAL = 2.0


@dataclass(frozen=True)
class Row:
    """One row of the table: a number of connections and of messages in flight on each."""

    key: str
    title: str
    connections: int
    #: Messages in flight per connection; ``None``: the ``--window`` option.
    window: int | None

    def window_for(self, args: argparse.Namespace) -> int:
        return self.window or args.window


ROWS = (
    Row("rt1", "round trips/s, 1 connection", 1, 1),
    Row("rt50", "round trips/s, 50 connections", 50, 1),
    Row("msg1", "messages/s, 1 connection", 1, None),
    Row("msg50", "messages/s, 50 connections", 50, None),
)
ROW_KEYS = tuple(row.key for row in ROWS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds to take the median of (default 3)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring (default 1)")
    parser.add_argument("--window", type=int, default=64, help="messages in flight per connection, msg rows (64)")
    parser.add_argument("--uvloop", action="store_true", help="run both servers on uvloop")
    parser.add_argument(
        "--quiet-wait", type=float, default=30.0, metavar="S",
        help="before each run, wait up to S seconds for the machine to be idle (default 30; 0: never wait)",
    )  # fmt: skip
    parser.add_argument(
        "--retries", type=int, default=2,
        help="run again, up to this many times, a run that other processes disturbed (default 2)",
    )  # fmt: skip
    parser.add_argument(
        "--only", action="append", choices=ROW_KEYS, metavar="ROW",
        help=f"run only this row (repeatable): {', '.join(ROW_KEYS)}",
    )  # fmt: skip
    parser.add_argument(
        "--profile", type=Path, metavar="FILE",
        help="instead of the table: run Kyoukai under cProfile for the msg50 row (or the --only row) once, "
        "write the profile to FILE and print the top 25 functions by own time",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0 or args.window < 1:
        parser.error("--rounds and --window must be at least 1, --duration above 0, --warmup at least 0")
    if args.quiet_wait < 0 or args.retries < 0:
        parser.error("--quiet-wait and --retries must be at least 0")
    return args


def ensure_dependencies(*, uvloop: bool) -> None:
    """pip-install Hypercorn (which brings wsproto), and uvloop with ``--uvloop``, when missing."""
    wanted = {"hypercorn": "hypercorn", "uvloop": "uvloop"} if uvloop else {"hypercorn": "hypercorn"}
    missing = [req for name, req in wanted.items() if importlib.util.find_spec(name) is None]
    if importlib.util.find_spec("kyoukai") is None:
        missing += ["-e", str(deps.REPO)]
    if missing:
        print(f"installing {' '.join(missing)} with pip", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)
    deps.compile_bytecode()


def versions() -> dict[str, str]:
    found = {}
    for dist in ("kyoukai", "hypercorn", "wsproto", "httptools", "uvloop"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def run_client(port: int, row: Row, args: argparse.Namespace, cpu: int | None) -> dict[str, Any]:
    """Run ws_client.py against ``port`` (pinned to ``cpu``); its JSON line."""
    cmd = ["taskset", "-c", str(cpu)] if cpu is not None else []
    cmd += [sys.executable, str(CLIENT), "--port", str(port), "--connections", str(row.connections)]
    cmd += ["--window", str(row.window_for(args)), "--size", str(SIZE)]
    cmd += ["--warmup", str(args.warmup), "--duration", str(args.duration)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.warmup + args.duration + 60)
    except subprocess.TimeoutExpired:
        return {"errors": [f"the client did not finish: {' '.join(cmd)}"]}
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"errors": [f"the client exited with {done.returncode} and no result:\n{done.stdout}{done.stderr}"]}


def measure_once(server: str, row: Row, round_no: int, args: argparse.Namespace, env: dict[str, Any]) -> dict[str, Any]:
    """Start ``server`` fresh, run ``row`` against it once, stop it; the round's figures."""
    port = free_port()
    cmd, cwd = server_command(server, "h1", port, None, args.uvloop)
    log_path = env["dir"] / f"{server}-{row.key}-{round_no}.log"
    result: dict[str, Any] = {"round": round_no, "problems": []}
    result.update(dict.fromkeys(("per_second", "rss_mib", "server_cpu", "others_cpu"), math.nan))
    try:
        with ServerProcess(cmd, cwd, port, env["server_cpu"], log_path) as proc:
            assert proc.process is not None
            # The machine's CPU time during the run, less the server's, the client's and ours, is
            # what other processes took: the sign of a busy machine.
            before = (machine_busy_seconds(), process_cpu_seconds(proc.process.pid), own_and_children_cpu_seconds())
            started = time.perf_counter()
            measured = run_client(port, row, args, env["load_cpu"])
            wall = time.perf_counter() - started
            proc.check_alive("under load")
            after = (machine_busy_seconds(), process_cpu_seconds(proc.process.pid), own_and_children_cpu_seconds())
            rss = proc.peak_rss_kib()
    except ServerError as e:
        result["problems"] = [str(e).splitlines()[0]]
        result["detail"] = str(e)
        return result
    result["client"] = measured
    if measured["errors"]:
        result["problems"] = measured["errors"]
        result["detail"] = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        return result
    machine_cpu, server_cpu, ours = (b - a for a, b in zip(before, after, strict=True))
    result.update(
        per_second=measured["per_second"],
        rss_mib=rss / 1024 if rss else math.nan,
        server_cpu=server_cpu / wall,
        others_cpu=max(0.0, machine_cpu - server_cpu - ours) / wall,
    )
    if measured["client_cpu"] > CLIENT_CPU_LIMIT:
        result["problems"].append(
            f"the client used {measured['client_cpu']:.0%} of its core: it may be the limit, not the server"
        )
    result["busy"] = result["others_cpu"] > OTHERS_CPU_LIMIT
    return result


def median(runs: list[dict[str, Any]], figure: str) -> float:
    values = [r[figure] for r in runs if not math.isnan(r[figure])]
    return statistics.median(values) if values else math.nan


def undisturbed(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rounds taken on an idle machine, or all of them if there is none."""
    return [r for r in runs if not r.get("busy")] or runs


def build_row(row: Row, runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    """
    The medians of both servers over the rounds (those taken on an idle machine, if any) and
    the Kyoukai/Hypercorn ratio.
    """
    servers: dict[str, dict[str, Any]] = {}
    for name, all_rounds in runs.items():
        used = undisturbed(all_rounds)
        servers[name] = {
            "per_second": median(used, "per_second"),
            "rss_mib": median(used, "rss_mib"),
            "rounds_used": [r["round"] for r in used],
            "rounds": all_rounds,
        }
    kyoukai, hypercorn = servers["kyoukai"]["per_second"], servers["hypercorn"]["per_second"]
    return {
        "row": row.key,
        "title": row.title,
        "connections": row.connections,
        "window": row.window_for(args),
        "servers": servers,
        "ratio": kyoukai / hypercorn if hypercorn else math.nan,
        "problems": [
            f"{row.key} {name} round {r['round']}: {p}" for name, rs in runs.items() for r in rs for p in r["problems"]
        ],
        "disturbed": [
            f"{row.key} {name} round {r['round']}: other processes used {r['others_cpu']:.0%} of a core"
            for name, rs in runs.items()
            for r in rs
            if r.get("busy")
        ],
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """The medians as a Markdown table."""
    lines = [
        "| row | in flight | Kyoukai | Hypercorn | Kyoukai/Hypercorn | peak RSS MiB (K / H) | rounds (K / H) |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        k, h = row["servers"]["kyoukai"], row["servers"]["hypercorn"]
        lines.append(
            f"| {row['title']} | {row['connections']} x {row['window']} | {report.number(k['per_second'])}"
            f" | {report.number(h['per_second'])} | {report.number(row['ratio'], 2)}"
            f" | {report.number(k['rss_mib'], 1)} / {report.number(h['rss_mib'], 1)}"
            f" | {len(k['rounds_used'])} / {len(h['rounds_used'])} |"
        )
    return "\n".join(lines)


def closing_note(rows: list[dict[str, Any]]) -> str:
    ratios = [row["ratio"] for row in rows if not math.isnan(row["ratio"])]
    if not ratios:
        return "No ratio: no row was measured on both servers."
    met = sum(r >= GOAL for r in ratios)
    return (
        f"Kyoukai/Hypercorn: {min(ratios):.2f}x to {max(ratios):.2f}x"
        f" (goal: at least {GOAL:g}x, met in {met} of {len(ratios)} rows)."
    )


def progress(server: str, row: Row, result: dict[str, Any], label: str) -> None:
    def percent(value: float) -> str:
        return f"{report.number(100 * value):>3}%"

    client = result.get("client", {}).get("client_cpu", math.nan)
    retried = f" (try {result['attempt']})" if result["attempt"] > 1 else ""
    print(
        f"{label} {row.key:<6} {server:<10} {report.number(result['per_second']):>8} /s"
        f"  RSS {report.number(result['rss_mib'], 1):>6} MiB  CPU: server {percent(result['server_cpu'])}"
        f" client {percent(client)} others {percent(result['others_cpu'])}{retried}",
        flush=True,
    )
    for problem in result["problems"]:
        print(f"    ! {problem}", flush=True)
    if result.get("busy"):
        print(f"    ! other processes used {percent(result['others_cpu'])} of a core: the machine was busy", flush=True)
    if result.get("detail"):
        print("    " + result["detail"].replace("\n", "\n    "), flush=True)


def measure(server: str, row: Row, round_no: int, args: argparse.Namespace, env: dict[str, Any]) -> dict[str, Any]:
    """:func:`measure_once` on an idle machine if one comes, again if other processes disturbed it."""
    for attempt in range(1, args.retries + 2):
        waited = wait_until_quiet(args.quiet_wait) if args.quiet_wait else 0.0
        result = measure_once(server, row, round_no, args, env)
        result.update(attempt=attempt, waited_s=round(waited, 1))
        if not result["others_cpu"] > OTHERS_CPU_LIMIT:
            break
    return result


def run_benchmark(args: argparse.Namespace, rows: list[Row], env: dict[str, Any]) -> list[dict[str, Any]]:
    """Every round, every row, both servers; the report rows."""
    results: dict[str, dict[str, list]] = {row.key: {s: [] for s in SERVERS} for row in rows}
    for round_no in range(1, args.rounds + 1):
        # Alternate who goes first, so neither server always runs on a warmer (or hotter) machine.
        order = SERVERS if round_no % 2 else tuple(reversed(SERVERS))
        for row in rows:
            for server in order:
                result = measure(server, row, round_no, args, env)
                results[row.key][server].append(result)
                progress(server, row, result, f"[round {round_no}/{args.rounds}]")
    return [build_row(row, results[row.key], args) for row in rows]


def profile_kyoukai(args: argparse.Namespace, row: Row, env: dict[str, Any]) -> int:
    """Serve Kyoukai under cProfile for one run of ``row``; print the top 25 functions by own time."""
    port = free_port()
    cmd, cwd = server_command("kyoukai", "h1", port, None, args.uvloop)
    cmd = [cmd[0], "-m", "cProfile", "-o", str(args.profile.resolve()), *cmd[1:]]
    log_path = env["dir"] / "kyoukai-profile.log"
    # Started in the background, this process ignores SIGINT, and the server would inherit that;
    # with a handler here, the server starts with the default (handlers do not survive exec).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with ServerProcess(cmd, cwd, port, env["server_cpu"], log_path) as proc:
        measured = run_client(port, row, args, env["load_cpu"])
        # cProfile writes its file when the program ends by an exception: SIGINT, not SIGTERM.
        assert proc.process is not None
        os.killpg(proc.process.pid, signal.SIGINT)
        proc.process.wait(30)
    print(f"{row.key} under cProfile: {report.number(measured.get('per_second', math.nan))} /s", flush=True)
    if measured.get("errors"):
        print("\n".join(measured["errors"]), file=sys.stderr)
        return 1
    pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(25)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_dependencies(uvloop=args.uvloop)
    # SIGTERM unwinds like Ctrl-C, so every server started is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows = [row for row in ROWS if not args.only or row.key in args.only]
    server_cpu, load_cpu = pick_cpus()
    pinning = f"server on core {server_cpu}, client on core {load_cpu}" if server_cpu is not None else "not pinned"
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kyoukai-bench-ws-") as tmp:
        env = {"dir": Path(tmp), "server_cpu": server_cpu, "load_cpu": load_cpu}
        if args.profile:
            return profile_kyoukai(args, rows[-1], env)
        print(
            f"{len(rows)} row(s) x {args.rounds} round(s), {args.warmup:g}s warm-up + {args.duration:g}s each,"
            f" {SIZE}-byte binary messages, {'uvloop' if args.uvloop else 'asyncio'} loop, {pinning},"
            f" load average {' '.join(f'{x:.2f}' for x in load_before)}",
            flush=True,
        )
        started = time.monotonic()
        date = datetime.datetime.now(datetime.UTC)
        try:
            results = run_benchmark(args, rows, env)
        except KeyboardInterrupt:
            print("\ninterrupted; servers stopped", file=sys.stderr)
            return 130
    load_after = os.getloadavg()
    result: dict[str, Any] = {
        "date": date.isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "message_bytes": SIZE,
            "loop": "uvloop" if args.uvloop else "asyncio",
            "server_cpu": server_cpu,
            "client_cpu": load_cpu,
            "quiet_wait_s": args.quiet_wait,
            "retries": args.retries,
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
        "rows": results,
    }
    json_path = report.write_json(result, RESULTS, date.strftime("%Y%m%dT%H%M%SZ"))
    m = result["machine"]
    print(f"\nMedians of {args.rounds} round(s), {date:%Y-%m-%d}, {m['cpu']}, {m['cores']} cores, {pinning}:\n")
    print(format_table(results))
    print(f"\n{closing_note(results)}")
    print(
        f"Load average before {' '.join(f'{x:.2f}' for x in load_before)},"
        f" after {' '.join(f'{x:.2f}' for x in load_after)} (the second counts the run's own server and client)."
    )
    disturbed = [d for row in results for d in row["disturbed"]]
    if disturbed:
        print("\nDisturbed (left out of a row's medians when it has undisturbed rounds; see the rounds column):")
        print("\n".join(f"- {d}" for d in disturbed))
    problems = [p for row in results for p in row["problems"]]
    if problems:
        print("\nProblems (those rounds are suspect):")
        print("\n".join(f"- {p}" for p in problems))
    print(f"\nwrote {json_path} and {RESULTS / 'latest.json'} in {time.monotonic() - started:.0f}s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
