"""Mean test and validation accuracy of each method label over one or more grid results files.

Every cell (sparsity × seed) of every file counts once; this is how issue #5 compares Panning's
variants across grids (docs/results/smoke-panning.md).

    python benchmarks/mean_accuracy.py benchmarks/results/smoke/half-*/results.csv
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.csv files written by panning bench")
    args = parser.parse_args()
    test: dict[str, list[float]] = defaultdict(list)
    val: dict[str, list[float]] = defaultdict(list)
    for path in args.results:
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                test[row["label"]].append(float(row["test_accuracy"]))
                val[row["label"]].append(float(row["val_accuracy"]))
    print("| method | validation % | test % | cells |")
    print("|---|---:|---:|---:|")
    for label in sorted(val, key=lambda name: -statistics.mean(val[name])):
        mean_val, mean_test = 100 * statistics.mean(val[label]), 100 * statistics.mean(test[label])
        print(f"| {label} | {mean_val:.2f} | {mean_test:.2f} | {len(val[label])} |")


if __name__ == "__main__":
    main()
