"""Time every screening method, one-shot and iterative, on lenet5 (MNIST shape) and vgg19 (CIFAR shape).

Writes ``results/timing.json`` and ``results/timing.md``. Inputs are random tensors of the
dataset's shape (the cost of screening does not depend on the pixel values), so the script
needs no dataset. Each method is timed once after one untimed warm-up step.

    python benchmarks/time_methods.py                      # both models, as committed
    python benchmarks/time_methods.py --models lenet5 --iterations 10
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
from pathlib import Path

import torch

import panning
from panning.io import write_json

SHAPES = {
    "lenet5": ((1, 28, 28), 10),
    "lenet300": ((1, 28, 28), 10),
    "vgg19": ((3, 32, 32), 10),
    "resnet20": ((3, 32, 32), 10),
}
METHODS = ["random", "magnitude", "snip", "grasp", "synflow", "iter-snip"]


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


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
    parser.add_argument("--iterations", type=int, default=100, help="T of the iterative runs")
    parser.add_argument("--sparsity", type=float, default=0.99)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "timing")
    args = parser.parse_args()
    rows = []
    for model_name in args.models:
        for method in METHODS:
            for iterations in (1, args.iterations):
                row = time_method(model_name, method, iterations, args.sparsity)
                rows.append(row)
                print(f"{model_name:8s} {method:10s} T={iterations:<4d} {row['seconds']:8.3f} s", flush=True)
    meta = {
        "version": panning.__version__,
        "commit": _commit(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "command": "python benchmarks/time_methods.py "
        + " ".join(
            f"--models {' '.join(args.models)} --iterations {args.iterations} --sparsity {args.sparsity}".split()
        ),
    }
    write_json(args.out.with_suffix(".json"), {"meta": meta, "rows": rows})
    lines = [
        f"# Screening time on CPU ({meta['threads']} threads, torch {meta['torch']}, commit {meta['commit']})",
        "",
        f"Sparsity {args.sparsity}; data-driven methods score a batch of 10 examples per class.",
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
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
