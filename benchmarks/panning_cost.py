"""Cost of a Panning step as a fraction of one masked SGD training step, measured in one process.

For lenet5 (MNIST shape, training batch 256) and vgg19 (CIFAR shape, training batch 128), the
script times, with the same threads and after warm-up:

- one SGD step of masked training (torch.nn.utils.prune masks at 0.99, momentum, weight decay);
- one Panning step for each setting (total screening time of a T-step run divided by T), and
  its parts: SNIP+GraSP from one loss, SynFlow, normalisation and top-K.

Each setting runs in rounds that alternate a few SGD steps with one screening run; its ratio is
the median of the rounds' ratios, so a machine whose speed drifts (a shared VM) moves both
sides of a ratio alike.

Writes ``results/panning-cost.json`` and ``results/panning-cost.md``. Inputs are random tensors
of the dataset's shape (cost does not depend on pixel values), so no dataset is needed.

    python benchmarks/panning_cost.py                 # as committed (lenet5 and vgg19)
    python benchmarks/panning_cost.py --models lenet5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import panning
from panning import masks as masklib
from panning.io import recorded_command, source_commit, write_atomic, write_json
from panning.screening import scores
from panning.screening.multi_index import normalize

SETTINGS = {
    # iterations: Panning steps per run (lenet5: the default T = 100, as in the reference's 4.5 s);
    # rounds of sgd_steps SGD steps and one run; repeats: per part.
    "lenet5": {
        "shape": (1, 28, 28),
        "train_batch": 256,
        "iterations": 100,
        "rounds": 11,
        "sgd_steps": 10,
        "repeats": 9,
    },
    "vgg19": {"shape": (3, 32, 32), "train_batch": 128, "iterations": 3, "rounds": 3, "sgd_steps": 2, "repeats": 3},
}
# label -> (panning options, samples per class)
VARIANTS = {
    "panning-paper": ({"combination": "additive"}, 10),
    "panning-paper-mult": ({"combination": "multiplicative"}, 10),
    "panning-fast": ({"combination": "multiplicative"}, 2),
    "panning-agent-table": ({"combination": "additive", "stages": "agent"}, 10),
    "panning-agent-table-fast": ({"combination": "additive", "stages": "agent"}, 2),
    # The default (stages="auto", precision="float32"): on a convolutional network the
    # agent-floor table, which scores SynFlow at every step where the agent's table drops it past 0.99.
    "panning-default": ({}, 2),
    # The default before: the same step with its indices normalised, combined and ranked in float64.
    "panning-float64": ({"precision": "float64"}, 2),
    # The default at one example per class (benchmarks/panning-tuning/one-per-class.toml: not adopted).
    "panning-1-per-class": ({}, 1),
    # The default with GraSP's scores recomputed every 2nd (3rd) step and reused in between.
    "panning-grasp-every-2": ({"grasp_interval": 2}, 2),
    "panning-grasp-every-3": ({"grasp_interval": 3}, 2),
}
DEFAULT_OUT = Path("benchmarks/results/panning-cost")


def _median_seconds(function: Callable[[], Any], repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _round(sgd_step: Callable[[], None], screen: Callable[[], None], steps: int, sgd_steps: int) -> tuple[float, float]:
    """One round: seconds per SGD step (over ``sgd_steps``) and per Panning step (one run of ``steps``)."""
    started = time.perf_counter()
    for _ in range(sgd_steps):
        sgd_step()
    sgd = (time.perf_counter() - started) / sgd_steps
    started = time.perf_counter()
    screen()
    return sgd, (time.perf_counter() - started) / steps


def measure(model_name: str, variant_labels: Sequence[str] = ()) -> dict[str, Any]:
    setting = SETTINGS[model_name]
    shape, repeats = setting["shape"], setting["repeats"]
    torch.manual_seed(0)
    model = panning.models.create(model_name, shape[0], 10, shape[1])
    generator = torch.Generator().manual_seed(0)
    pool = (torch.randn(1000, *shape, generator=generator), torch.arange(1000) % 10)

    trained = panning.models.create(model_name, shape[0], 10, shape[1])
    trained.load_state_dict(model.state_dict())
    masks = panning.prune(trained, 0.99, "random", input_shape=shape)
    masklib.apply(trained, masks)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x_train = torch.randn(setting["train_batch"], *shape, generator=generator)
    y_train = torch.arange(setting["train_batch"]) % 10

    def sgd_step() -> None:
        loss = torch.nn.functional.cross_entropy(trained(x_train), y_train)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    trained.train()
    sgd_step()  # warm-up
    result: dict[str, Any] = {"model": model_name, "train_batch": setting["train_batch"]}
    variants = {}
    sgd_times = []
    for label, (options, per_class) in VARIANTS.items():
        if variant_labels and label not in variant_labels:
            continue
        steps = setting["iterations"]

        def screen(options: dict[str, Any] = options, per_class: int = per_class, steps: int = steps) -> None:
            panning.prune(model, 0.99, "panning", data=pool, iterations=steps, samples_per_class=per_class, **options)

        # Rounds alternate SGD steps and a screening run, so a machine that speeds up or slows
        # down between rounds moves both sides of each round's ratio alike.
        screen()  # warm-up
        rounds = [_round(sgd_step, screen, steps, setting["sgd_steps"]) for _ in range(setting["rounds"])]
        sgd_times += [sgd for sgd, _ in rounds]
        seconds = statistics.median(step for _, step in rounds)
        variants[label] = {
            "step_seconds": seconds,
            "ratio_to_sgd_step": statistics.median(step / sgd for sgd, step in rounds),
            "round_ratios": [step / sgd for sgd, step in rounds],
            "samples_per_class": per_class,
            "options": options,
        }
    result["sgd_step_seconds"] = statistics.median(sgd_times)
    result["variants"] = variants

    x, y = pool[0][:100], pool[1][:100]
    x_fast, y_fast = pool[0][:20], pool[1][:20]
    current = panning.prune(model, 0.9, "random", input_shape=shape)
    snip = scores.snip(model, x, y, masks=current)
    parts = {
        "snip+grasp (10/class)": lambda: scores.loss_aware_scores(model, x, y, current, 200.0),
        "snip+grasp (2/class)": lambda: scores.loss_aware_scores(model, x_fast, y_fast, current, 200.0),
        "synflow": lambda: scores.synflow(model, masks=current, input_shape=shape),
        "normalize zscore-abs": lambda: normalize(snip, "zscore-abs"),
        "top-K": lambda: masklib.select_topk(snip, keep=current.kept() // 2),
    }
    result["parts_seconds"] = {name: _median_seconds(function, repeats) for name, function in parts.items()}
    return result


def write_report(results: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> None:
    write_json(out.with_suffix(".json"), {"meta": meta, "results": results})
    lines = [
        f"# Cost of a Panning step on CPU ({meta['threads']} threads, torch {meta['torch']}, commit {meta['commit']})",
        "",
        f"Command: `{meta['command']}`. One process; medians after warm-up. The ratio is one",
        "Panning step's time over one masked SGD training step's (goal: at most 0.5 on lenet5),",
        "the median over rounds that alternate SGD steps and a screening run.",
        "",
        "| model | SGD step (batch) | variant | scoring batch | Panning step | ratio |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for result in results:
        for label, variant in result["variants"].items():
            lines.append(
                f"| {result['model']} | {1000 * result['sgd_step_seconds']:.1f} ms ({result['train_batch']}) | "
                f"{label} | {10 * variant['samples_per_class']} | {1000 * variant['step_seconds']:.1f} ms | "
                f"{variant['ratio_to_sgd_step']:.2f} |"
            )
    lines += ["", "Parts of a step (ms):", "", "| model | " + " | ".join(results[0]["parts_seconds"]) + " |"]
    lines.append("|---|" + "---:|" * len(results[0]["parts_seconds"]))
    for result in results:
        parts = " | ".join(f"{1000 * s:.1f}" for s in result["parts_seconds"].values())
        lines.append(f"| {result['model']} | {parts} |")
    text = "\n".join(lines) + "\n"
    write_atomic(out.with_suffix(".md"), lambda tmp: tmp.write_text(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--variants", nargs="+", default=[], choices=list(VARIANTS), help="only these (default: all)")
    args = parser.parse_args()
    commit = source_commit()  # the code measured, before anything can change the tree
    results = []
    for name in args.models:
        results.append(measure(name, args.variants))
        variants = ", ".join(f"{k} {v['ratio_to_sgd_step']:.2f}" for k, v in results[-1]["variants"].items())
        print(f"{name}: SGD step {1000 * results[-1]['sgd_step_seconds']:.1f} ms; ratios {variants}", flush=True)
    meta = {
        "command": recorded_command("python benchmarks/panning_cost.py", sys.argv[1:]),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "commit": commit,
    }
    write_report(results, meta, args.out)
    print(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
