"""Mean test and validation accuracy of each method label over one or more grid results files.

Every cell (sparsity × seed) of every file counts once; this is how issue #5 compares Panning's
variants across grids (docs/results/smoke-panning.md).

    python benchmarks/mean_accuracy.py benchmarks/results/smoke/half-*/results.csv

``--versus A B`` compares two labels setting by setting (model, dataset, sparsity; mean over seeds),
on validation accuracy first, which is how a default is chosen (issue #17), then sums up over all
settings and per model and dataset:

    python benchmarks/mean_accuracy.py benchmarks/results/panning-tuning/synflow-floor/results.csv \
        --versus agent-floor panning

``--against OTHER...`` compares each label of the results with the same label's cells in other
results files (the same cells trained another way), setting by setting:

    python benchmarks/mean_accuracy.py benchmarks/results/sparse-training/rescale-lenet5-mnist/results.csv \
        --against benchmarks/results/lenet5-mnist/results.csv benchmarks/results/strongest-lenet5-mnist/results.csv
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path


def read_rows(paths: list[Path]) -> list[dict[str, str]]:
    rows = []
    for path in paths:
        with path.open(newline="") as handle:
            rows += [row for row in csv.DictReader(handle) if row.get("status", "ok") == "ok"]
    return rows


def overall(rows: list[dict[str, str]]) -> None:
    test: dict[str, list[float]] = defaultdict(list)
    val: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        test[row["label"]].append(float(row["test_accuracy"]))
        val[row["label"]].append(float(row["val_accuracy"]))
    print("| method | validation % | test % | cells |")
    print("|---|---:|---:|---:|")
    for label in sorted(val, key=lambda name: -statistics.mean(val[name])):
        mean_val, mean_test = 100 * statistics.mean(val[label]), 100 * statistics.mean(test[label])
        print(f"| {label} | {mean_val:.2f} | {mean_test:.2f} | {len(val[label])} |")


def versus(rows: list[dict[str, str]], first: str, second: str) -> None:
    missing = [label for label in (first, second) if label not in {row["label"] for row in rows}]
    if missing:
        raise SystemExit(f"no finished cell labelled {missing[0]!r} in these results")
    # Per setting and label: seed -> (validation, test); only the seeds both labels have are compared.
    cells: dict[tuple[str, str, float], dict[str, dict[str, tuple[float, float]]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for row in rows:
        if row["label"] in (first, second):
            setting = (row["model"], row["dataset"], float(row["sparsity"]))
            cells[setting][row["label"]][row["seed"]] = (float(row["val_accuracy"]), float(row["test_accuracy"]))
    print(f"| model | dataset | sparsity | {first} val | {second} val | {first} test | {second} test | seeds |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    wins = losses = 0
    differences = []
    by_pair: dict[tuple[str, str], list[float]] = defaultdict(list)
    for setting in sorted(cells):
        pair = cells[setting]
        seeds = sorted(set(pair[first]) & set(pair[second]))
        if not seeds:
            continue
        means = [
            100 * statistics.mean(pair[label][seed][i] for seed in seeds) for i in (0, 1) for label in (first, second)
        ]
        wins, losses = wins + (means[0] > means[1]), losses + (means[0] < means[1])
        differences.append(means[0] - means[1])
        model, dataset, sparsity = setting
        by_pair[(model, dataset)].append(means[0] - means[1])
        shown = " | ".join(f"{value:.2f}" for value in means)
        print(f"| {model} | {dataset} | {sparsity} | {shown} | {len(seeds)} |")
    if differences:
        print(
            f"\n{first} against {second} on validation: better in {wins} settings, worse in {losses}, "
            f"mean difference {statistics.mean(differences):+.2f} points over {len(differences)} settings"
        )
        for (model, dataset), pair_differences in sorted(by_pair.items()):
            better = sum(difference > 0 for difference in pair_differences)
            print(
                f"  {model} / {dataset}: better in {better} of {len(pair_differences)}, "
                f"mean difference {statistics.mean(pair_differences):+.2f} points"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.csv files written by panning bench")
    parser.add_argument("--versus", nargs=2, metavar=("A", "B"), help="compare two labels setting by setting")
    parser.add_argument("--against", nargs="+", type=Path, help="compare each label with its cells in these files")
    args = parser.parse_args()
    rows = read_rows(args.results)
    if args.against:
        labels = sorted({row["label"] for row in rows})
        other = [{**row, "label": row["label"] + " (against)"} for row in read_rows(args.against)]
        for label in labels:
            print(f"\n### {label}\n")
            versus(rows + other, label, label + " (against)")
    elif args.versus:
        versus(rows, *args.versus)
    else:
        overall(rows)


if __name__ == "__main__":
    main()
