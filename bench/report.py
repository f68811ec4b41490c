"""
The results: medians over rounds, the printed table (Markdown, so docs can quote it), the JSON
file and the PNG bar chart.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from workloads import Workload

#: The per-round figures that get a median.
FIGURES = ("rps", "mib_s", "p50_ms", "p99_ms", "rss_mib", "rest_mib")
HEADLINE_UNITS = {"rps": "req/s", "mib_s": "MiB/s"}


def median_of(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """The median of each figure over the rounds (NaN where no round has it)."""
    medians = {}
    for figure in FIGURES:
        values = [r[figure] for r in rounds if r.get(figure) is not None and not math.isnan(r[figure])]
        medians[figure] = statistics.median(values) if values else math.nan
    return medians


def build_row(workload: Workload, rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One row of the report: both servers' rounds, their medians and the Kyoukai/Hypercorn ratio."""
    servers = {name: {"median": median_of(runs), "rounds": runs} for name, runs in rounds.items()}
    kyoukai, hypercorn = (servers[name]["median"][workload.headline] for name in ("kyoukai", "hypercorn"))
    return {
        "workload": workload.key,
        "title": workload.title,
        "h2load": " ".join(workload.h2load_args()),
        "headline": workload.headline,
        "unit": HEADLINE_UNITS[workload.headline],
        "servers": servers,
        "ratio": kyoukai / hypercorn if hypercorn else math.nan,
        "problems": [
            f"{name} round {r['round']}: {p}" for name, runs in rounds.items() for r in runs for p in r["problems"]
        ],
    }


def number(value: float, digits: int = 0) -> str:
    """``value`` with thousands separators, ``-`` for NaN."""
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """The medians as a Markdown table: Kyoukai | Hypercorn per figure, the ratio of the headline."""
    header = (
        "| workload | h2load | Kyoukai | Hypercorn | Kyoukai/Hypercorn "
        "| p50 ms (K / H) | p99 ms (K / H) | peak RSS MiB (K / H) | RSS at rest MiB (K / H) |"
    )
    lines = [header, "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for row in rows:
        k, h = row["servers"]["kyoukai"]["median"], row["servers"]["hypercorn"]["median"]
        fig, unit = row["headline"], row["unit"]
        lines.append(
            f"| {row['title']} | `{row['h2load']}` "
            f"| {number(k[fig])} {unit} | {number(h[fig])} {unit} | **{number(row['ratio'], 2)}x** "
            f"| {number(k['p50_ms'], 2)} / {number(h['p50_ms'], 2)} "
            f"| {number(k['p99_ms'], 2)} / {number(h['p99_ms'], 2)} "
            f"| {number(k['rss_mib'], 1)} / {number(h['rss_mib'], 1)} "
            f"| {number(k['rest_mib'], 1)} / {number(h['rest_mib'], 1)} |"
        )
    return "\n".join(lines)


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
    """A bar chart per workload: the headline figure of both servers, min-max over rounds as error bars."""
    # Imported here: deps.ensure_dependencies() may have just installed it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    columns = min(3, len(rows))
    lines = math.ceil(len(rows) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.6 * lines), squeeze=False)
    colours = {"kyoukai": "#c0392b", "hypercorn": "#7f8c8d"}
    for ax, row in zip(axes.flat, rows, strict=False):
        fig_key = row["headline"]
        names = ["kyoukai", "hypercorn"]
        medians = [row["servers"][n]["median"][fig_key] for n in names]
        spreads = []
        for n, m in zip(names, medians, strict=True):
            values = [r[fig_key] for r in row["servers"][n]["rounds"]] or [m]
            spreads.append((m - min(values), max(values) - m))
        ax.bar(
            ["Kyoukai", "Hypercorn"],
            medians,
            yerr=list(zip(*spreads, strict=True)),
            color=[colours[n] for n in names],
            capsize=4,
        )
        for x, m in enumerate(medians):
            ax.annotate(number(m), (x, m / 2), ha="center", va="center", color="white", fontsize=10, weight="bold")
        ax.set_title(f"{row['title']}\n{row['h2load']}: {number(row['ratio'], 2)}x", fontsize=10)
        ax.set_ylabel(row["unit"])
        ax.margins(y=0.15)
    for ax in list(axes.flat)[len(rows) :]:
        ax.set_visible(False)
    settings = report["settings"]
    fig.suptitle(
        f"Kyoukai vs Hypercorn {report['versions'].get('hypercorn', '')}, medians of {settings['rounds']} round(s), "
        f"{settings['duration_s']}s each ({report['date'][:10]}, {report['machine']['cpu']})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
