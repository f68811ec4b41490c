"""
The results: medians over rounds, the printed tables (Markdown, so docs can quote them), the
goals of issue 18 with PASS or MISS, the JSON file and the PNG bar chart.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workloads import Workload

#: The per-round figures that get a median.
FIGURES = (
    "rps",
    "mib_s",
    "p50_ms",
    "p99_ms",
    "rss_mib",
    "rest_mib",
    "growth_mib",
    "ttfb_mean_ms",
    "ttfb_max_ms",
    "connect_max_ms",
    "rps_with_setup",
    "kib_per_conn",
    "idle_before_mib",
    "idle_open_mib",
)
HEADLINE_UNITS = {"rps": "req/s", "mib_s": "MiB/s", "p99_ms": "ms p99", "kib_per_conn": "KiB"}
#: Decimals each headline figure is shown with.
HEADLINE_DIGITS = {"rps": 0, "mib_s": 0, "p99_ms": 2, "kib_per_conn": 1}
#: How the tables and the chart name each server.
LABELS = {
    "kyoukai": "Kyoukai",
    "kyoukai-asgi": "Kyoukai (ASGI)",
    "hypercorn": "Hypercorn",
    "uvicorn": "uvicorn",
    "bare-h2": "bare h2",
}
#: The same, in the headers of the columns that give every server's figure.
INITIALS = {"kyoukai": "K", "kyoukai-asgi": "KA", "hypercorn": "H", "uvicorn": "U", "bare-h2": "B"}


def median_of(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """The median of each figure over the rounds (NaN where no round has it)."""
    medians = {}
    for figure in FIGURES:
        values = [r[figure] for r in rounds if r.get(figure) is not None and not math.isnan(r[figure])]
        medians[figure] = statistics.median(values) if values else math.nan
    return medians


def build_row(workload: Workload, rounds: dict[str, list[dict[str, Any]]], shape: str | None = None) -> dict[str, Any]:
    """
    One row of the report: each server's rounds and medians, and the ratios of the first server
    (in ``rounds`` order) to each of the others. ``ratio`` is the one to the second server.
    ``shape``: what the load was (h2load's options by default).
    """
    servers = {name: {"median": median_of(runs), "rounds": runs} for name, runs in rounds.items()}
    first, *others = (servers[name]["median"][workload.headline] for name in servers)
    ratios = {name: first / other if other else math.nan for name, other in zip(list(servers)[1:], others, strict=True)}
    return {
        "workload": workload.key,
        "title": workload.title,
        "kind": workload.kind,
        "first_response": workload.first_response,
        "h2load": shape or " ".join(workload.h2load_args()),
        "headline": workload.headline,
        "unit": HEADLINE_UNITS[workload.headline],
        "servers": servers,
        "ratios": ratios,
        "ratio": next(iter(ratios.values()), math.nan),
        "problems": [
            f"{name} round {r['round']}: {p}" for name, runs in rounds.items() for r in runs for p in r["problems"]
        ],
    }


def number(value: float, digits: int = 0) -> str:
    """``value`` with thousands separators, ``-`` for NaN."""
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def with_unit(value: float, unit: str, *, bold: bool = False, digits: int = 0) -> str:
    """``value`` and its unit (digits 2 for ratios, ``x``), or ``-`` for NaN (a server that did not run)."""
    if math.isnan(value):
        return "-"
    text = f"{number(value, 2)}{unit}" if unit == "x" else f"{number(value, digits)} {unit}"
    return f"**{text}**" if bold else text


def _measured(rows: list[dict[str, Any]]) -> list[str]:
    """The servers with a figure in at least one of ``rows``, in the order of the run."""
    names = list(rows[0]["servers"]) if rows else []
    return [n for n in names if any(not math.isnan(r["servers"][n]["median"][r["headline"]]) for r in rows)]


def _each(row: dict[str, Any], names: list[str], figure: str, digits: int) -> str:
    return " / ".join(number(row["servers"][n]["median"][figure], digits) for n in names)


def _headline_columns(rows: list[dict[str, Any]], names: list[str], first: str) -> tuple[str, list[str]]:
    """The header and cells of each server's headline figure and of the ratios of the first to the others."""
    labels = [LABELS.get(n, n) for n in names]
    header = " | ".join(labels) + "".join(f" | {LABELS.get(first, first)}/{label}" for label in labels[1:])
    cells = []
    for row in rows:
        digits = HEADLINE_DIGITS[row["headline"]]
        values = [row["servers"][n]["median"][row["headline"]] for n in names]
        ratios = [row["ratios"].get(n, math.nan) for n in names[1:]]
        cells.append(
            " | ".join(with_unit(v, row["unit"], digits=digits) for v in values)
            + "".join(f" | {with_unit(r, 'x', bold=True)}" for r in ratios)
        )
    return header, cells


def format_table(rows: list[dict[str, Any]]) -> str:
    """
    The load rows as a Markdown table: the headline figure of each server, the ratios of the
    first server to the others, then each figure for all servers (in the same order).
    """
    rows = [r for r in rows if r["kind"] == "load"]
    names = _measured(rows)
    if not rows or not names:
        return ""
    first = next(iter(rows[0]["servers"]))
    short = " / ".join(INITIALS.get(n, n) for n in names)
    header, cells = _headline_columns(rows, names, first)
    lines = [
        f"| workload | h2load | {header} | p50 ms ({short}) | p99 ms ({short}) | RSS growth MiB ({short})"
        f" | RSS at rest MiB ({short}) |",
        "|---|---|" + "--:|" * (2 * len(names) - 1 + 4),
    ]
    for row, cell in zip(rows, cells, strict=True):
        lines.append(
            f"| {row['title']} | `{row['h2load']}` | {cell} | {_each(row, names, 'p50_ms', 2)}"
            f" | {_each(row, names, 'p99_ms', 2)} | {_each(row, names, 'growth_mib', 1)}"
            f" | {_each(row, names, 'rest_mib', 1)} |"
        )
    return "\n".join(lines)


def format_first_response_table(rows: list[dict[str, Any]]) -> str:
    """The rows measured from the first connection on: how long each connection waited for its first response."""
    rows = [r for r in rows if r["first_response"]]
    names = _measured(rows)
    if not rows or not names:
        return ""
    short = " / ".join(INITIALS.get(n, n) for n in names)
    lines = [
        f"| connections | h2load | first response mean ms ({short}) | first response max ms ({short})"
        f" | connect max ms ({short}) | req/s with set-up ({short}) |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['title']} | `{row['h2load']}` | {_each(row, names, 'ttfb_mean_ms', 1)}"
            f" | {_each(row, names, 'ttfb_max_ms', 1)} | {_each(row, names, 'connect_max_ms', 1)}"
            f" | {_each(row, names, 'rps_with_setup', 0)} |"
        )
    return "\n".join(lines)


def format_idle_table(rows: list[dict[str, Any]]) -> str:
    """The idle-connection rows: KiB per connection, and the settled RSS before and with them open."""
    rows = [r for r in rows if r["kind"] == "idle"]
    names = _measured(rows)
    if not rows or not names:
        return ""
    first = next(iter(rows[0]["servers"]))
    short = " / ".join(INITIALS.get(n, n) for n in names)
    header, cells = _headline_columns(rows, names, first)
    lines = [
        f"| idle connections | held open | {header} | RSS before MiB ({short}) | RSS with them open MiB ({short}) |",
        "|---|---|" + "--:|" * (2 * len(names) - 1 + 2),
    ]
    for row, cell in zip(rows, cells, strict=True):
        lines.append(
            f"| {row['title']} | {row['h2load']} | {cell} | {_each(row, names, 'idle_before_mib', 1)}"
            f" | {_each(row, names, 'idle_open_mib', 1)} |"
        )
    return "\n".join(lines)


def paired_ratio(
    numerator: dict[str, Any], denominator: dict[str, Any], server: str, figure: str
) -> tuple[float, float, float]:
    """
    Median, lowest and highest over the rounds of ``figure`` of ``server`` in one row over the
    same in another row, each round with its own (the two runs of a round are taken minutes
    apart at most, so the machine's state is shared). NaN when no round has both.
    """
    below = {r["round"]: r.get(figure, math.nan) for r in denominator["servers"].get(server, {}).get("rounds", [])}
    ratios = []
    for r in numerator["servers"].get(server, {}).get("rounds", []):
        top, bottom = r.get(figure, math.nan), below.get(r["round"], math.nan)
        if not (math.isnan(top) or math.isnan(bottom)) and bottom:
            ratios.append(top / bottom)
    if not ratios:
        return math.nan, math.nan, math.nan
    return statistics.median(ratios), min(ratios), max(ratios)


def _goal(name: str, value: float, measured: str, target: str, passed: Callable[[float], bool]) -> dict[str, Any]:
    """One goal: its measured ``value`` (NaN: not measured), in words, the target and the verdict."""
    if math.isnan(value):
        return {
            "goal": name,
            "value": value,
            "target": target,
            "passed": None,
            "text": f"{name}: not measured (no figure: see the problems)",
        }
    # Judged on the value as printed (two decimals), so that a line never reads "0.90x ... MISS".
    ok = passed(round(value, 2))
    return {
        "goal": name,
        "value": value,
        "target": target,
        "passed": ok,
        "text": f"{name}: {measured}; goal {target}: {'PASS' if ok else 'MISS'}",
    }


def _not_measured(name: str, needs: list[str]) -> dict[str, Any]:
    """A goal whose rows or servers were not all in the run."""
    return {
        "goal": name,
        "value": math.nan,
        "target": None,
        "passed": None,
        "text": f"{name}: not measured (needs {' '.join(needs)})",
    }


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """
    The goals of issue 18, each with its measured value and whether it is met, for the rows
    that were run; a goal that needs a row that was not run says which.
    """
    by_key = {r["workload"]: r for r in rows}
    if not rows:
        return []
    names = list(rows[0]["servers"])
    first = names[0]
    me = LABELS.get(first, first)
    found = []

    def median(key: str, server: str, figure: str) -> float:
        return by_key[key]["servers"].get(server, {}).get("median", {}).get(figure, math.nan)

    def missing(name: str, keys: tuple[str, ...], servers: tuple[str, ...] = ()) -> bool:
        """Add a 'not measured' goal when some of ``keys`` ran but not all (or a server is absent)."""
        ran = [k for k in keys if k in by_key]
        if not ran:
            return True
        absent = [k for k in keys if k not in by_key]
        others = [s for s in servers if s not in names]
        if absent or others:
            found.append(_not_measured(name, [f"--only {k}" for k in absent] + [f"--server {s}" for s in others]))
            return True
        return False

    for key in ("tls", "h2c", "streams"):
        name = f"HTTP/2 {by_key[key]['title'] if key in by_key else key} ({key}) against the bare-h2 floor"
        if missing(name, (key,), ("bare-h2",)):
            continue
        ratio = by_key[key]["ratios"].get("bare-h2", math.nan)
        found.append(_goal(name, ratio, f"{me}/bare h2 {number(ratio, 2)}x", ">= 1.10x", lambda v: v >= 1.1))
    if not missing("Tail latency, p99 of -c 1 -m 1 (latency)", ("latency",), ("hypercorn",)):
        ratio = by_key["latency"]["ratios"].get("hypercorn", math.nan)
        mine, theirs = median("latency", first, "p99_ms"), median("latency", "hypercorn", "p99_ms")
        found.append(
            _goal(
                "Tail latency, p99 of -c 1 -m 1 (latency)",
                ratio,
                f"{me} {number(mine, 2)} ms, Hypercorn {number(theirs, 2)} ms: {number(ratio, 2)}x",
                "<= 0.50x Hypercorn's",
                lambda v: v <= 0.5,
            )
        )
    if not missing("HTTP/1.1 cleartext against uvicorn (h1)", ("h1",), ("uvicorn",)):
        ratio = by_key["h1"]["ratios"].get("uvicorn", math.nan)
        found.append(
            _goal(
                "HTTP/1.1 cleartext against uvicorn (h1)",
                ratio,
                f"{me}/uvicorn {number(ratio, 2)}x",
                ">= 0.50x",
                lambda v: v >= 0.5,
            )
        )
    if not missing("HTTP/1.1 over TLS against Hypercorn (h1tls)", ("h1tls",), ("hypercorn",)):
        ratio = by_key["h1tls"]["ratios"].get("hypercorn", math.nan)
        found.append(
            _goal(
                "HTTP/1.1 over TLS against Hypercorn (h1tls)",
                ratio,
                f"{me}/Hypercorn {number(ratio, 2)}x",
                ">= 2.00x",
                lambda v: v >= 2.0,
            )
        )
    name = "Connection scaling, req/s at 500 over 10 connections (conns500 / conns10)"
    if not missing(name, ("conns10", "conns500")):
        scaling = {n: paired_ratio(by_key["conns500"], by_key["conns10"], n, "rps") for n in names}
        value, low, high = scaling[first]
        others = ", ".join(
            f"{LABELS.get(n, n)} {number(s[0], 2)}x" for n, s in scaling.items() if n != first and not math.isnan(s[0])
        )
        first_response = ", ".join(
            f"{LABELS.get(n, n)} mean {number(median('conns500', n, 'ttfb_mean_ms'), 0)} ms"
            f" max {number(median('conns500', n, 'ttfb_max_ms'), 0)} ms"
            for n in names
            if not math.isnan(median("conns500", n, "ttfb_mean_ms"))
        )
        found.append(
            _goal(
                name,
                value,
                f"{me} {number(value, 2)}x (rounds {number(low, 2)}-{number(high, 2)}x; {others or 'no other server'});"
                f" first response on each of 500 connections: {first_response or 'not recorded'}",
                ">= 0.90x (within 10%)",
                lambda v: v >= 0.9,
            )
        )
    compared = [
        r
        for r in rows
        if r["kind"] == "load"
        and not math.isnan(median(r["workload"], first, "growth_mib"))
        and not math.isnan(median(r["workload"], "hypercorn", "growth_mib"))
    ]
    if compared:
        over = [
            f"{r['workload']} ({number(median(r['workload'], first, 'growth_mib'), 1)} vs"
            f" {number(median(r['workload'], 'hypercorn', 'growth_mib'), 1)} MiB)"
            for r in compared
            if median(r["workload"], first, "growth_mib") > median(r["workload"], "hypercorn", "growth_mib")
        ]
        found.append(
            _goal(
                "RSS growth under load (peak - at rest), every row",
                float(len(over)),
                f"{me} at most Hypercorn's on {len(compared) - len(over)} of {len(compared)} rows"
                + (f"; over it on {', '.join(over)}" if over else ""),
                "at most Hypercorn's on every row",
                lambda v: v == 0,
            )
        )
    if not missing("Memory per idle HTTP/2 connection (idle-h2)", ("idle-h2",)):
        mine, theirs = median("idle-h2", first, "kib_per_conn"), median("idle-h2", "hypercorn", "kib_per_conn")
        h1 = ""
        if "idle-h1" in by_key:
            h1_mine, h1_theirs = (
                median("idle-h1", first, "kib_per_conn"),
                median("idle-h1", "hypercorn", "kib_per_conn"),
            )
            h1 = f" (HTTP/1.1: {me} {number(h1_mine, 1)} KiB, Hypercorn {number(h1_theirs, 1)} KiB)"
        found.append(
            _goal(
                "Memory per idle HTTP/2 connection (idle-h2)",
                mine,
                f"{me} {number(mine, 1)} KiB, Hypercorn {number(theirs, 1)} KiB{h1}",
                "<= 16 KiB",
                lambda v: v <= 16,
            )
        )
    name = "Access log on, against the h2c row of the same round (accesslog / h2c)"
    if not missing(name, ("accesslog", "h2c")):
        value, low, high = paired_ratio(by_key["accesslog"], by_key["h2c"], first, "rps")
        cost = "nothing measurable" if value >= 1 else f"{(1 - value) * 100:.0f}%"
        found.append(
            _goal(
                name,
                value,
                f"costs {cost} ({number(value, 2)}x, rounds {number(low, 2)}-{number(high, 2)}x)",
                ">= 0.90x (costs at most 10%)",
                lambda v: v >= 0.9,
            )
        )
    return found


def format_goals(found: list[dict[str, Any]]) -> str:
    """The goals as a Markdown list, one line each."""
    return "\n".join(f"- {g['text']}" for g in found)


def write_json(report: dict[str, Any], directory: Path, stamp: str) -> Path:
    """Write ``<stamp>.json`` and ``latest.json`` into ``directory``; return the first."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_nan_to_none(report), indent=2, allow_nan=False) + "\n"
    path = directory / f"{stamp}.json"
    path.write_text(text)
    (directory / "latest.json").write_text(text)
    return path


def _nan_to_none(value: Any) -> Any:
    """``value`` with every NaN (a figure a failed run lacks) as ``None``: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def write_chart(report: dict[str, Any], path: Path) -> Path:
    """A bar chart per workload: the headline figure of each server, min-max over rounds as error bars."""
    # Imported here: deps.ensure_dependencies() may have just installed it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    columns = min(3, len(rows))
    lines = math.ceil(len(rows) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.6 * lines), squeeze=False)
    colours = {
        "kyoukai": "#c0392b",
        "kyoukai-asgi": "#e67e22",
        "hypercorn": "#7f8c8d",
        "uvicorn": "#2c3e50",
        "bare-h2": "#27ae60",
    }
    for ax, row in zip(axes.flat, rows, strict=False):
        fig_key, digits = row["headline"], HEADLINE_DIGITS[row["headline"]]
        # A server with no figure in the row (uvicorn and HTTP/2, the bare h2 server and uploads) gets no bar.
        names = [n for n in row["servers"] if not math.isnan(row["servers"][n]["median"][fig_key])]
        medians = [row["servers"][n]["median"][fig_key] for n in names]
        spreads = []
        for n, m in zip(names, medians, strict=True):
            values = [r[fig_key] for r in row["servers"][n]["rounds"] if not math.isnan(r.get(fig_key, math.nan))]
            values = values or [m]
            spreads.append((m - min(values), max(values) - m))
        ax.bar(
            [LABELS.get(n, n) for n in names],
            medians,
            yerr=list(zip(*spreads, strict=True)) if spreads else None,
            color=[colours.get(n, "#95a5a6") for n in names],
            capsize=4,
        )
        for x, m in enumerate(medians):
            ax.annotate(
                number(m, digits), (x, m / 2), ha="center", va="center", color="white", fontsize=10, weight="bold"
            )
        ratios = ", ".join(f"{number(r, 2)}x {LABELS.get(n, n)}" for n, r in row["ratios"].items() if not math.isnan(r))
        ax.set_title(f"{row['title']}\n{row['h2load']}: {ratios}", fontsize=9)
        ax.set_ylabel(row["unit"])
        ax.margins(y=0.15)
    for ax in list(axes.flat)[len(rows) :]:
        ax.set_visible(False)
    settings = report["settings"]
    versus = " vs ".join(LABELS.get(n, n) for n in rows[0]["servers"]) if rows else ""
    fig.suptitle(
        f"{versus}, medians of {settings['rounds']} round(s), "
        f"{settings['duration_s']}s each ({report['date'][:10]}, {report['machine']['cpu']})",
        fontsize=10,
    )
    # Room for the title above the first line of charts, whatever the number of lines.
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
