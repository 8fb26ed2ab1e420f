"""Time every screening method, one-shot and iterative, on lenet5 (MNIST shape) and vgg19 (CIFAR shape).

Writes ``results/timing.json`` and ``results/timing.md``. Inputs are random tensors of the
dataset's shape (the cost of screening does not depend on the pixel values), so the script
needs no dataset. Each method is timed once after one untimed warm-up step.

    python benchmarks/time_methods.py                      # both models, as committed
    python benchmarks/time_methods.py --models lenet5 --iterations 10
    python benchmarks/time_methods.py --models lenet5 --methods panning prospr   # some methods only

Iterative runs use T = 100 on the LeNets and T = 10 on the CIFAR models (a step costs the same
at any T, so seconds per step are comparable; T = 100 on vgg19 would take half an hour here).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

import panning
from panning.io import source_commit, write_json

SHAPES = {
    "lenet5": ((1, 28, 28), 10),
    "lenet300": ((1, 28, 28), 10),
    "vgg19": ((3, 32, 32), 10),
    "resnet20": ((3, 32, 32), 10),
}
DEFAULT_ITERATIONS = {"lenet5": 100, "lenet300": 100, "vgg19": 10, "resnet20": 10}
DEFAULT_OUT = Path("benchmarks/results/timing")
METHODS = ["random", "magnitude", "snip", "grasp", "synflow", "iter-snip", "panning", "prospr", "uniform", "erk"]


def time_method(model_name: str, method: str, iterations: int, sparsity: float) -> dict[str, object]:
    shape, classes = SHAPES[model_name]
    torch.manual_seed(0)
    model = panning.models.create(model_name, shape[0], classes, shape[1])
    generator = torch.Generator().manual_seed(0)
    data = (torch.randn(10 * classes, *shape, generator=generator), torch.arange(10 * classes) % classes)
    panning.prune(model, sparsity, method, data=data, iterations=1)  # warm-up
    started = time.perf_counter()
    masks = panning.prune(model, sparsity, method, data=data, iterations=iterations)
    seconds = time.perf_counter() - started
    return {
        "model": model_name,
        "method": method,
        "iterations": iterations,
        "sparsity": sparsity,
        "weights": masks.total(),
        "kept": masks.kept(),
        "seconds": seconds,
        "seconds_per_step": seconds / iterations,
        "effective_sparsity": masks.metadata["effective_sparsity"],
        "collapsed_layers": len(masks.metadata["collapsed_layers"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["lenet5", "vgg19"], choices=sorted(SHAPES))
    parser.add_argument("--iterations", type=int, help="T of the iterative runs (default: 100 on LeNets, 10 else)")
    parser.add_argument("--sparsity", type=float, default=0.99)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="path stem of the .json and .md results")
    args = parser.parse_args()
    commit = source_commit()  # the code measured, before anything can change the tree
    rows = []
    for model_name in args.models:
        for method in args.methods:
            for iterations in (1, args.iterations or DEFAULT_ITERATIONS[model_name]):
                row = time_method(model_name, method, iterations, args.sparsity)
                rows.append(row)
                print(f"{model_name:8s} {method:10s} T={iterations:<4d} {row['seconds']:8.3f} s", flush=True)
    meta = {
        "version": panning.__version__,
        "commit": commit,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "command": " ".join(
            ["python benchmarks/time_methods.py", "--models", *args.models, "--sparsity", str(args.sparsity)]
            + (["--methods", *args.methods] if args.methods != METHODS else [])
            + (["--iterations", str(args.iterations)] if args.iterations else [])
            + (["--out", str(args.out)] if args.out != DEFAULT_OUT else [])
        ),
    }
    write_json(Path(f"{args.out}.json"), {"meta": meta, "rows": rows})
    lines = [
        f"# Screening time on CPU ({meta['threads']} threads, torch {meta['torch']}, commit {meta['commit']})",
        "",
        f"Sparsity {args.sparsity}; data-driven methods score their default examples per class (panning 2, others 10).",
        f"Command: `{meta['command']}`",
        "",
        "| model | method | T | seconds | s / step | effective sparsity | collapsed layers |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['method']} | {row['iterations']} | {row['seconds']:.3f} | "
            f"{row['seconds_per_step']:.4f} | {row['effective_sparsity']:.5f} | {row['collapsed_layers']} |"
        )
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
