"""How much of the dense network's input signal each method's masks pass at initialisation.

``panning.input_signal``: the spread of the masked network's logits over 1,024 held-out examples,
over the unmasked network's, on the initial weights that a grid cell then trains (LeNet-5-Caffe,
the library's default initialisation and preprocessing, seeds 0-2). Beside each mask: whether its
20-epoch cell in the committed grids (benchmarks/lenet5-*.toml, benchmarks/strongest-lenet5-*.toml)
ended dead (constant prediction).

    PANNING_DATA=/path/to/data python benchmarks/input_signal.py

Writes ``benchmarks/results/sparse-training/input-signal.md``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import warnings
from pathlib import Path

import panning
from panning.io import source_commit, write_atomic
from panning.training import TrainConfig, build

SETTINGS = [
    ("synflow", 0.998),
    ("synflow", 0.999),
    ("panning", 0.998),
    ("panning", 0.999),
    ("snip", 0.998),
    ("random", 0.99),
    ("uniform", 0.99),
    ("erk", 0.998),
]
RESULTS = Path("benchmarks/results")
GRIDS = {
    "mnist": ["lenet5-mnist", "strongest-lenet5-mnist"],
    "fashion-mnist": ["lenet5-fashion-mnist", "strongest-lenet5-fashion-mnist"],
}


def dead_cells(dataset: str) -> dict[tuple[str, float, int], bool]:
    """(method, sparsity, seed) -> dead, for the plain (no variant) cells of the committed grids."""
    found = {}
    for grid in GRIDS[dataset]:
        with (RESULTS / grid / "results.csv").open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row["status"] == "ok" and not row["variant"] and row["label"] == row["method"]:
                    found[(row["method"], float(row["sparsity"]), int(row["seed"]))] = row["dead"] == "True"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS / "sparse-training" / "input-signal.md")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    lines = [
        "# Input signal at initialisation (LeNet-5-Caffe)",
        "",
        f"Commit {source_commit()}. Regenerate: `python benchmarks/input_signal.py`. The signal is",
        "`panning.input_signal` (masked over dense spread of the logits over 1,024 held-out examples, at the",
        "initialisation the grid cell trains); `dead` counts the seeds whose 20-epoch cell ended at a constant",
        "prediction.",
        "",
        "| dataset | method | sparsity | signal per seed | dead |",
        "|---|---|---:|---|---:|",
    ]
    for dataset in GRIDS:
        data = panning.data.load(dataset)
        probe = data.tensors("val")[0][:1024]
        fates = dead_cells(dataset)
        models = {
            seed: build(TrainConfig(model="lenet5", dataset=dataset, device="cpu", seed=seed))[0] for seed in args.seeds
        }
        for method, sparsity in SETTINGS:
            signals, dead = [], 0
            for seed in args.seeds:
                masks = panning.prune(models[seed], sparsity, method, data=data, seed=seed)
                signals.append(panning.input_signal(models[seed], masks, probe))
                dead += fates.get((method, sparsity, seed), False)
            shown = ", ".join(f"{value:.1e}" for value in signals)
            lines.append(
                f"| {dataset} | {method} | {sparsity} | {shown} (median {statistics.median(signals):.1e}) | {dead} |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    write_atomic(args.out, lambda tmp: tmp.write_text(text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
