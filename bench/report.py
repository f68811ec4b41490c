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


#: How the table and the chart name each server.
LABELS = {"kyoukai": "Kyoukai", "kyoukai-asgi": "Kyoukai (ASGI)", "hypercorn": "Hypercorn", "uvicorn": "uvicorn"}
#: The same, in the headers of the columns that give every server's figure.
INITIALS = {"kyoukai": "K", "kyoukai-asgi": "KA", "hypercorn": "H", "uvicorn": "U"}


def build_row(workload: Workload, rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """
    One row of the report: each server's rounds and medians, and the ratios of the first server
    (in ``rounds`` order) to each of the others. ``ratio`` is the one to the second server.
    """
    servers = {name: {"median": median_of(runs), "rounds": runs} for name, runs in rounds.items()}
    first, *others = (servers[name]["median"][workload.headline] for name in servers)
    ratios = {name: first / other if other else math.nan for name, other in zip(list(servers)[1:], others, strict=True)}
    return {
        "workload": workload.key,
        "title": workload.title,
        "h2load": " ".join(workload.h2load_args()),
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


def with_unit(value: float, unit: str, *, bold: bool = False) -> str:
    """``value`` and its unit (digits 2 for ratios, ``x``), or ``-`` for NaN (a server that did not run)."""
    if math.isnan(value):
        return "-"
    text = f"{number(value, 2)}{unit}" if unit == "x" else f"{number(value)} {unit}"
    return f"**{text}**" if bold else text


def format_table(rows: list[dict[str, Any]]) -> str:
    """
    The medians as a Markdown table: the headline figure of each server, the ratios of the
    first server to the others, then each figure for all servers (in the same order).
    """
    names = list(rows[0]["servers"]) if rows else []
    labels = [LABELS.get(n, n) for n in names]
    short = " / ".join(INITIALS.get(n, n) for n in names)
    header = (
        "| workload | h2load | "
        + " | ".join(labels)
        + "".join(f" | {labels[0]}/{label}" for label in labels[1:])
        + f" | p50 ms ({short}) | p99 ms ({short}) | peak RSS MiB ({short}) | RSS at rest MiB ({short}) |"
    )
    lines = [header, "|---|---|" + "--:|" * (2 * len(names) - 1 + 4)]
    for row in rows:
        medians = [row["servers"][n]["median"] for n in names]
        fig, unit = row["headline"], row["unit"]

        def each(figure: str, digits: int, medians: list[dict[str, float]] = medians) -> str:
            return " / ".join(number(m[figure], digits) for m in medians)

        lines.append(
            f"| {row['title']} | `{row['h2load']}` | "
            + " | ".join(with_unit(m[fig], unit) for m in medians)
            + "".join(f" | {with_unit(row['ratios'][n], 'x', bold=True)}" for n in names[1:])
            + f" | {each('p50_ms', 2)} | {each('p99_ms', 2)} | {each('rss_mib', 1)} | {each('rest_mib', 1)} |"
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
    """A bar chart per workload: the headline figure of each server, min-max over rounds as error bars."""
    # Imported here: deps.ensure_dependencies() may have just installed it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    columns = min(3, len(rows))
    lines = math.ceil(len(rows) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.6 * lines), squeeze=False)
    colours = {"kyoukai": "#c0392b", "kyoukai-asgi": "#e67e22", "hypercorn": "#7f8c8d", "uvicorn": "#2c3e50"}
    for ax, row in zip(axes.flat, rows, strict=False):
        fig_key = row["headline"]
        names = list(row["servers"])
        medians = [row["servers"][n]["median"][fig_key] for n in names]
        spreads = []
        for n, m in zip(names, medians, strict=True):
            values = [r[fig_key] for r in row["servers"][n]["rounds"] if not math.isnan(r[fig_key])] or [m]
            spreads.append((0, 0) if math.isnan(m) else (m - min(values), max(values) - m))
        # A server that does not speak the row's protocol (uvicorn and HTTP/2) gets no bar.
        ax.bar(
            [LABELS.get(n, n) for n in names],
            [0 if math.isnan(m) else m for m in medians],
            yerr=list(zip(*spreads, strict=True)),
            color=[colours[n] for n in names],
            capsize=4,
        )
        for x, m in enumerate(medians):
            if math.isnan(m):
                continue
            ax.annotate(number(m), (x, m / 2), ha="center", va="center", color="white", fontsize=10, weight="bold")
        ratios = ", ".join(f"{number(r, 2)}x {LABELS.get(n, n)}" for n, r in row["ratios"].items() if not math.isnan(r))
        ax.set_title(f"{row['title']}\n{row['h2load']}: {ratios}", fontsize=10)
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
