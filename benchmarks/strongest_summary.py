"""The tables of docs/results/strongest.md from the strongest-* grids' results (issue #19).

For each model and dataset: final-epoch test accuracy (mean over seeds, dead runs in brackets)
of Panning (the default; ``panning-float64`` as the grids first ran it) against ProsPr, ERK,
uniform and the single indices, whether the default Panning is strictly better than each baseline
at 0.998 and 0.999 (on test and on validation), and, where the sanity
variants have run, each mask as found against the same mask shuffled within layers, re-initialised
and inverted. Cells not run yet are left out and counted.

    python benchmarks/strongest_summary.py benchmarks/results/strongest-*/results.csv
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from panning import bench

BASELINES = ("prospr", "prospr-20", "erk", "uniform", "synflow", "snip")
VARIANTS = ("", "-shuffled", "-reinit", "-inverted")


def _cell(runs: list[dict[str, Any]], count_seeds: bool = True) -> str:
    """Mean test accuracy, the dead runs in brackets, and the seeds when not all three have run."""
    if not runs:
        return "–"
    mean = 100 * statistics.mean(float(r["test_accuracy"]) for r in runs)
    dead = sum(bool(r["dead"]) for r in runs)
    seeds = f" [{len(runs)} seeds]" if count_seeds and len(runs) != 3 else ""
    return f"{mean:.2f}" + (f" ({dead})" if dead else "") + seeds


def _mean(runs: list[dict[str, Any]], column: str) -> float | None:
    return 100 * statistics.mean(float(r[column]) for r in runs) if runs else None


def summarise(path: Path) -> str:
    rows = bench.read_results(path)
    done = [r for r in rows if r["status"] == "ok"]
    groups: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for row in done:
        groups[(row["label"], float(row["sparsity"]))].append(row)
    sparsities = sorted({float(r["sparsity"]) for r in rows})
    first = rows[0]
    lines = [f"### {first['model']} / {first['dataset']}", ""]
    header = "| method | " + " | ".join(str(s) for s in sparsities) + " |"
    lines += [header, "|---|" + "---:|" * len(sparsities)]
    for label in ("panning", "panning-float64", "rl-panning", *BASELINES):
        if any(groups[(label, s)] for s in sparsities):
            lines.append(f"| {label} | " + " | ".join(_cell(groups[(label, s)]) for s in sparsities) + " |")
    lines += ["", "Panning strictly better (test / validation):", ""]
    for label in ("prospr", "prospr-20", "erk", "uniform"):
        verdicts = []
        for sparsity in (0.998, 0.999):
            ours, theirs = groups[("panning", sparsity)], groups[(label, sparsity)]
            if not (ours and theirs):
                verdicts.append(f"{sparsity}: not run yet")
                continue
            answers = [
                "yes" if (_mean(ours, column) or 0) > (_mean(theirs, column) or 0) else "**no**"
                for column in ("test_accuracy", "val_accuracy")
            ]
            verdicts.append(f"{sparsity}: {' / '.join(answers)}")
        lines.append(f"- against {label}: " + "; ".join(verdicts))
    if any(groups[(f"snip{v}", s)] for v in VARIANTS[1:] for s in sparsities):
        lines += ["", "Sanity checks (test accuracy: as found / shuffled / re-initialised / inverted):", ""]
        lines += [header, "|---|" + "---:|" * len(sparsities)]
        for method in ("snip", "synflow", "panning", "panning-float64", "rl-panning"):
            if not any(groups[(method + v, s)] for v in VARIANTS[1:] for s in sparsities):
                continue
            cells = [
                " / ".join(_cell(groups[(method + variant, s)], count_seeds=False) for variant in VARIANTS)
                for s in sparsities
            ]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    pending = sum(r["status"] == "pending" for r in rows)
    lines += ["", f"{len(done)} cells finished, {pending} not run yet.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.csv of the strongest-* grids")
    args = parser.parse_args()
    print("\n".join(summarise(path) for path in args.results))


if __name__ == "__main__":
    main()
