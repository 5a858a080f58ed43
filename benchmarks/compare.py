"""Compare ``benchmarks.run`` JSON results of two versions of heap-dbt, side by side, as Markdown.

    python -m benchmarks.compare before=a-1.json,a-2.json after=b-1.json,b-2.json

Each side may have several result files (runs interleaved with the other side's, so that the
machine's load falls on both alike); a figure is the median over every timed run of a side.
CPU seconds are steadier than wall time on a shared machine, so the ratio column compares them.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

STEPS = {"first": "first sync", "noop": "no-op", "changed": "1% changed"}


def load(spec: str) -> tuple[str, list[dict[str, Any]]]:
    """``label=file,file`` -> (label, the files' documents)."""
    label, sep, files = spec.partition("=")
    if not sep or not files:
        raise argparse.ArgumentTypeError(f"expected label=results.json[,more.json], got {spec!r}")
    return label, [json.loads(Path(f).read_text()) for f in files.split(",")]


def runs(docs: list[dict[str, Any]], obj: str, rows: int) -> tuple[list[dict[str, Any]], list[float]]:
    """Every timed run of ``obj`` at ``rows`` rows, and each file's % of limit."""
    found = [r for d in docs for r in d["results"] if r["object"] == obj and r["rows"] == rows]
    return [run for r in found for run in r["heap_dbt"]["runs"]], [r["pct_of_limit"] for r in found]


def first_sync_table(sides: list[tuple[str, list[dict[str, Any]]]]) -> list[str]:
    """One row per object and size; each cell is "<first side> / <second side>"."""
    (a, a_docs), (b, b_docs) = sides
    lines = [
        f"| object | rows | wall s, median ({a} / {b}) | CPU s / 1M rows, median | CPU s / 1M rows, least "
        f"| {b} / {a}, median CPU | % of limit |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    keys = sorted({(r["object"], r["rows"]) for r in a_docs[0]["results"]}, key=lambda k: (k[1], k[0]))
    for obj, rows in keys:
        figures = []
        for docs in (a_docs, b_docs):
            timed, pcts = runs(docs, obj, rows)
            cpu = [r["cpu_s"] / rows * 1e6 for r in timed]
            wall = statistics.median(r["wall_s"] for r in timed)
            figures.append((wall, statistics.median(cpu), min(cpu), statistics.median(pcts)))
        (wa, ca, la, pa), (wb, cb, lb, pb) = figures
        cells = [f"{wa:.2f} / {wb:.2f}", f"{ca:.2f} / {cb:.2f}", f"{la:.2f} / {lb:.2f}", f"{cb / ca:.2f}"]
        cells.append(f"{pa:.0f}% / {pb:.0f}%")
        lines.append(f"| {obj} | {rows:,} | " + " | ".join(cells) + " |")
    return lines


def incremental_table(sides: list[tuple[str, list[dict[str, Any]]]]) -> list[str]:
    (a, a_docs), (b, b_docs) = sides
    lines = [
        f"| step | {a} engine s | {b} engine s | {a} engine / first | {b} engine / first |",
        "|---|---:|---:|---:|---:|",
    ]
    for step, label in STEPS.items():
        engine = [
            statistics.median(d["incremental"]["steps"][step]["engine_s"] for d in docs)
            for docs in (a_docs, b_docs)
        ]
        ratio = [
            statistics.median(d["incremental"]["steps"][step]["engine_ratio_to_first"] for d in docs)
            for docs in (a_docs, b_docs)
        ]
        lines.append(f"| {label} | {engine[0]:.3f} | {engine[1]:.3f} | {ratio[0]:.1%} | {ratio[1]:.1%} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.splitlines()[0])
    parser.add_argument("sides", nargs=2, type=load, help="label=results.json[,more.json]")
    args = parser.parse_args(argv)
    lines = first_sync_table(args.sides)
    if all(d.get("incremental") for _, docs in args.sides for d in docs):
        lines += ["", *incremental_table(args.sides)]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
