"""How fast the library trains LeNet-5 on MNIST, against a textbook PyTorch loop on the same machine.

Measures, one thing at a time (nothing else may run meanwhile):

* ``dense``: one epoch of a plain PyTorch loop (LeNet-5-Caffe, SGD, batch 256, cosine schedule,
  normalised tensors in memory), the unit of the goals; after a few untimed warm-up steps.
* ``epochs``: one library epoch (training and validation) dense, masked and compact at 0.99 and
  0.999 (SynFlow masks), with the share spent in evaluation.
* ``runs``: a whole ``panning run --method synflow --compact --epochs 20`` at 0.99 and 0.999
  (screening, training, validation, testing and writing included), as a multiple of ``dense``;
  the goals are 5.5 and 2.5.
* ``jobs``: the committed quick grid (``benchmarks/lenet5-mnist.toml --quick``, 12 cells) with
  ``--jobs 1`` and ``--jobs 2``, and ``--jobs 1`` on one thread (how much a cell gains from the
  second thread, which bounds what ``--jobs 2`` can add); the goal is a throughput ratio of at least 1.8.
* ``ray``: the same grid on a local Ray instance with 2 CPUs, one CPU and thread per cell
  (``--executor ray``, needs ``panning[ray]``); the goal is at least 1.7 times ``--jobs 1``.
* ``versus`` (only when asked for): library epochs (dense, compact at 0.99 and 0.999) of another
  checkout (``--versus-src``, its ``src`` folder) and of this one, alternating for ``--rounds``
  rounds in fresh processes; medians. This machine's speed drifts by 10-30% within minutes, so a
  change is measured against its parent this way, not by comparing two runs of the other parts.
* ``pooling`` (only when asked for): forward and backward of LeNet-5's 2x2 max pooling at the
  shapes its training meets (batch 256; 24x24 and 8x8 maps, 1 to 50 channels, as compaction leaves
  them), through PyTorch's NCHW kernel (``F.max_pool2d``), through the channels-last path
  (``_MaxPool2Cpu``) and through ``max_pool2``, which picks between them at 4 channels; medians.

Writes ``<out>.json`` and ``<out>.md``.

    PANNING_DATA=/path/to/data python benchmarks/training_speed.py
    python benchmarks/training_speed.py --parts dense runs --epochs 20
    git worktree add --detach /tmp/before HEAD~1
    python benchmarks/training_speed.py --parts versus --versus-src /tmp/before/src --rounds 3
    python benchmarks/training_speed.py --parts pooling --out benchmarks/results/training-pooling
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import panning
from panning import bench
from panning.io import source_commit, write_atomic, write_json
from panning.training import TrainConfig, build, train

DEFAULT_OUT = Path("benchmarks/results/training-speed")
QUICK_GRID = Path(__file__).resolve().parent / "lenet5-mnist.toml"
PARTS = ("dense", "epochs", "runs", "jobs", "ray", "profile", "versus", "pooling")
DEFAULT_PARTS = [part for part in PARTS if part not in ("versus", "pooling")]
POOLING_SHAPES = [(256, c, 24, 24) for c in (1, 2, 3, 4, 7, 20)] + [(256, c, 8, 8) for c in (1, 3, 4, 12, 50)]
VERSUS_EPOCHS = (("dense", None), ("compact", 0.99), ("compact", 0.999))


class TextbookLeNet5(nn.Module):
    """LeNet-5-Caffe as a tutorial writes it (convolution, ReLU, ``F.max_pool2d``): the unit of the
    goals is not made faster by the library's own pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.fc3, self.fc4 = nn.Linear(800, 500), nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc4(torch.relu(self.fc3(torch.flatten(x, 1))))


def textbook_dense_epoch(data: panning.data.Dataset, seed: int = 0) -> float:
    """Seconds of one epoch of the plain loop a PyTorch tutorial would write."""
    torch.manual_seed(seed)
    model = TextbookLeNet5()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    inputs, targets = data.tensors("train")
    steps = math.ceil(len(targets) / 256)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    order = torch.randperm(len(targets))

    def step(index: torch.Tensor) -> None:
        loss = nn.functional.cross_entropy(model(inputs[index]), targets[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()

    for start in range(0, 5 * 256, 256):  # warm-up: allocator and kernel selection
        step(order[start : start + 256])
    began = time.perf_counter()
    for start in range(0, len(targets), 256):
        step(order[start : start + 256])
    return time.perf_counter() - began


def _screen(model: nn.Module, data: panning.data.Dataset, sparsity: float, seed: int) -> panning.Masks:
    return panning.prune(model, sparsity, "synflow", data=data, seed=seed)


def library_epoch(data: panning.data.Dataset, kind: str, sparsity: float | None) -> dict[str, Any]:
    """One library epoch (training and validation); ``kind`` is dense, masked or compact."""
    config = TrainConfig(model="lenet5", dataset="mnist", epochs=1, device="cpu", compact=kind == "compact")
    model, _ = build(config)
    masks = None if sparsity is None else _screen(model, data, sparsity, 0)
    with tempfile.TemporaryDirectory() as folder:
        began = time.perf_counter()
        metrics = train(model, data, config, Path(folder) / "run", masks=masks, progress=False)
        total = time.perf_counter() - began
    epoch = metrics["epochs"][0]
    return {"kind": kind, "sparsity": sparsity, "train_seconds": epoch["seconds"], "whole_seconds": total}


def library_run(data: panning.data.Dataset, sparsity: float, epochs: int) -> dict[str, Any]:
    """A whole screening and compact training, as ``panning run`` does it."""
    config = TrainConfig(model="lenet5", dataset="mnist", epochs=epochs, device="cpu", compact=True)
    began = time.perf_counter()
    model, _ = build(config)
    masks = _screen(model, data, sparsity, 0)
    with tempfile.TemporaryDirectory() as folder:
        metrics = train(model, data, config, Path(folder) / "run", masks=masks, progress=False)
    return {
        "sparsity": sparsity,
        "epochs": epochs,
        "seconds": time.perf_counter() - began,
        "prune_seconds": masks.metadata["prune_seconds"],
        "train_seconds": metrics["train_seconds"],
        "test_accuracy": metrics["test_accuracy"],
    }


def profile_compact(data: panning.data.Dataset, sparsity: float, steps: int = 40) -> list[dict[str, Any]]:
    """The operators that take the time of training steps of the compacted network (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    from panning import masks as masklib
    from panning.compaction import compact_with_plan

    config = TrainConfig(model="lenet5", dataset="mnist", device="cpu")
    model, _ = build(config)
    masks = _screen(model, data, sparsity, 0)
    small, kept, _, _ = compact_with_plan(model, masks, data.input_shape)
    masklib.apply(small, kept)
    optimizer = torch.optim.SGD(small.parameters(), lr=0.01, momentum=0.9)
    batches = data.batches("train", 256, generator=torch.Generator().manual_seed(0))

    def step() -> None:
        x, y = next(batches)
        loss = nn.functional.cross_entropy(small(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as trace:
        for _ in range(steps):
            step()
    events = sorted(trace.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [
        {"op": e.key, "share": e.self_cpu_time_total / total, "ms_per_step": e.self_cpu_time_total / 1000 / steps}
        for e in events[:8]
    ]


def pooling_timings(repeats: int = 15, calls: int = 20) -> list[dict[str, Any]]:
    """Milliseconds of one forward and backward of each pooling at each of ``POOLING_SHAPES``:
    the median over ``repeats`` of the mean of ``calls`` calls, the three poolings interleaved."""
    from panning.models.lenet import _MaxPool2Cpu, max_pool2

    poolings = {
        "nchw": lambda x: nn.functional.max_pool2d(x, 2),
        "channels_last": lambda x: _MaxPool2Cpu.apply(x)[0],
        "max_pool2": max_pool2,
    }
    rows = []
    for shape in POOLING_SHAPES:
        generator = torch.Generator().manual_seed(0)
        x = torch.relu(torch.randn(*shape, generator=generator)).requires_grad_(True)
        upstream = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2, generator=generator)
        times: dict[str, list[float]] = {name: [] for name in poolings}
        for round_ in range(repeats + 2):  # two warm-up rounds
            for name, pool in poolings.items():
                began = time.perf_counter()
                for _ in range(calls):
                    torch.autograd.grad(pool(x), x, upstream)
                if round_ >= 2:
                    times[name].append((time.perf_counter() - began) / calls * 1000)
        rows.append({"shape": list(shape), **{name: statistics.median(t) for name, t in times.items()}})
        print(f"pooling {shape}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in rows[-1].items() if k != "shape"))
    return rows


def pooling_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "Max pooling 2x2, one forward and backward (ms, median; `max_pool2` takes the NCHW kernel below",
        "4 channels and the channels-last path from 4):",
        "",
        "| input shape | NCHW (`F.max_pool2d`) | channels-last path | `max_pool2` | faster path |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        faster = "NCHW" if row["nchw"] < row["channels_last"] else "channels-last"
        lines.append(
            f"| {'x'.join(map(str, row['shape']))} | {row['nchw']:.3f} | {row['channels_last']:.3f} "
            f"| {row['max_pool2']:.3f} | {faster} |"
        )
    return [*lines, ""]


def _epochs_in_process(src: Path) -> list[dict[str, Any]]:
    """``VERSUS_EPOCHS`` measured in a fresh process that imports ``panning`` from ``src``."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
        "import panning, training_speed as ts; data = panning.data.load('mnist'); "
        "print(json.dumps([ts.library_epoch(data, k, s) for k, s in ts.VERSUS_EPOCHS]))"
    )
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"library epochs with {src} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def versus(other_src: Path, rounds: int) -> dict[str, Any]:
    """Library epochs of ``other_src`` and of this checkout, alternating; per side the medians."""
    own_src = Path(__file__).resolve().parents[1] / "src"
    runs: dict[str, list[list[dict[str, Any]]]] = {"before": [], "this": []}
    for round_ in range(rounds):
        for side, src in (("before", other_src), ("this", own_src)):
            runs[side].append(_epochs_in_process(src))
            print(f"round {round_ + 1} {side}: {[round(r['whole_seconds'], 2) for r in runs[side][-1]]}", flush=True)
    medians = {
        side: [
            {
                "kind": kind,
                "sparsity": sparsity,
                "train_seconds": statistics.median(rows[i]["train_seconds"] for rows in measured),
                "whole_seconds": statistics.median(rows[i]["whole_seconds"] for rows in measured),
            }
            for i, (kind, sparsity) in enumerate(VERSUS_EPOCHS)
        ]
        for side, measured in runs.items()
    }
    revision = subprocess.run(
        ["git", "-C", str(other_src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {"before_revision": revision or "unknown", "rounds": rounds, "runs": runs, "medians": medians}


def grid_throughput(jobs: int, store: Path, executor: Any = None, name: str | None = None) -> dict[str, Any]:
    """Cells per hour of the committed quick grid (``panning bench benchmarks/lenet5-mnist.toml --quick``)."""
    grid = bench.load_grid(QUICK_GRID, quick=True)
    name = name or ("ray" if executor is not None else f"jobs{jobs}")
    began = time.perf_counter()
    summary = bench.run_grid(grid, store / name, jobs=jobs, executor=executor, threads_per_cell=1 if executor else None)
    seconds = time.perf_counter() - began
    if summary.failed:
        raise SystemExit(f"{summary.failed} cells failed; see {store}")
    return {"jobs": jobs, "cells": summary.ran, "seconds": seconds, "cells_per_hour": 3600 * summary.ran / seconds}


def ray_throughput(store: Path) -> dict[str, Any]:
    """The quick grid on a local Ray instance of 2 CPUs, one CPU per cell; its start is counted."""
    from panning.executors import RayExecutor

    began = time.perf_counter()
    with RayExecutor(cpus_per_cell=1, num_cpus=2) as executor:
        result = grid_throughput(1, store, executor)
    result.update(executor="ray", seconds_with_start=time.perf_counter() - began)
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Training speed: LeNet-5 on MNIST",
        "",
        f"Commit {result['commit']}, torch {result['torch']}, {result['threads']} threads, {result['machine']}.",
        f"Regenerate: `{result.get('command', 'python benchmarks/training_speed.py')}` (nothing else running).",
        "",
    ]
    dense = result.get("dense_epoch_seconds")
    if dense:
        lines += [f"Textbook dense epoch (batch 256): **{dense:.2f} s**.", ""]
    if result.get("epochs"):
        lines += ["| epoch | sparsity | training s | whole epoch s (with validation, setup) |", "|---|---|---|---|"]
        for row in result["epochs"]:
            lines.append(
                f"| {row['kind']} | {row['sparsity'] or '—'} | {row['train_seconds']:.2f} "
                f"| {row['whole_seconds']:.2f} |"
            )
        lines.append("")
    if result.get("runs"):
        lines += [
            "| `panning run --compact` | epochs | screening s | total s | dense epochs | goal | test acc |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in result["runs"]:
            goal = {0.99: 5.5, 0.999: 2.5}.get(row["sparsity"])
            ratio = row["seconds"] / dense if dense else float("nan")
            verdict = "—" if goal is None else f"≤ {goal}: {'met' if ratio <= goal else 'MISSED'}"
            lines.append(
                f"| synflow {row['sparsity']} | {row['epochs']} | {row['prune_seconds']:.1f} | {row['seconds']:.1f} | "
                f"{ratio:.2f} | {verdict} | {row['test_accuracy']:.4f} |"
            )
        lines.append("")
    if result.get("jobs"):
        one, two = result["jobs"]
        ratio = two["cells_per_hour"] / one["cells_per_hour"]
        lines += [
            "| grid | cells | seconds | cells per hour |",
            "|---|---|---|---|",
            *(
                f"| --jobs {r['jobs']} | {r['cells']} | {r['seconds']:.1f} | {r['cells_per_hour']:.0f} |"
                for r in (one, two)
            ),
            "",
            f"`--jobs 2` / `--jobs 1`: **{ratio:.2f}×** (goal ≥ 1.8: {'met' if ratio >= 1.8 else 'MISSED'}).",
            "",
        ]
        single = result.get("one_thread")
        if single:
            speedup = one["cells_per_hour"] / single["cells_per_hour"]
            lines += [
                f"`--jobs 1` with one thread: {single['cells']} cells in {single['seconds']:.1f} s, "
                f"{single['cells_per_hour']:.0f} cells per hour. `--jobs 2` (one thread per cell) gives "
                f"**{two['cells_per_hour'] / single['cells_per_hour']:.2f}×** of it; one cell on "
                f"{result['threads']} threads runs {speedup:.2f}× faster than on one, so `--jobs 2` can give at "
                f"most {result['threads'] / speedup:.2f}× of `--jobs 1` on {result['threads']} threads.",
                "",
            ]
    if result.get("ray") and result.get("jobs"):
        ray, one = result["ray"], result["jobs"][0]
        ratio = ray["cells_per_hour"] / one["cells_per_hour"]
        lines += [
            f"`--executor ray` (local, 2 CPUs, one per cell): {ray['cells']} cells in {ray['seconds']:.1f} s, "
            f"{ray['cells_per_hour']:.0f} cells per hour ({ray['seconds_with_start']:.1f} s with Ray's start); "
            f"against `--jobs 1`: **{ratio:.2f}×** (goal ≥ 1.7: {'met' if ratio >= 1.7 else 'MISSED'}).",
            "",
        ]
    if result.get("versus"):
        before, this = result["versus"]["medians"]["before"], result["versus"]["medians"]["this"]
        lines += [
            f"Library epochs, commit {result['versus']['before_revision']} against this one, alternating in fresh "
            f"processes, median of {result['versus']['rounds']} rounds (seconds, training / whole epoch):",
            "",
            "| epoch | sparsity | before | this | whole epoch change |",
            "|---|---|---|---|---|",
            *(
                f"| {b['kind']} | {b['sparsity'] or '—'} | {b['train_seconds']:.2f} / {b['whole_seconds']:.2f} | "
                f"{t['train_seconds']:.2f} / {t['whole_seconds']:.2f} | "
                f"{100 * (t['whole_seconds'] / b['whole_seconds'] - 1):+.0f}% |"
                for b, t in zip(before, this)
            ),
            "",
        ]
    if result.get("profile"):
        lines += [
            f"Profile of 40 training steps of the compacted network at {result['profile']['sparsity']} "
            "(torch.profiler, self CPU time):",
            "",
            "| operator | share | ms per step |",
            "|---|---|---|",
            *(f"| {o['op']} | {100 * o['share']:.1f}% | {o['ms_per_step']:.2f} |" for o in result["profile"]["ops"]),
            "",
        ]
    if result.get("pooling"):
        lines += pooling_lines(result["pooling"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=DEFAULT_PARTS, choices=PARTS)
    parser.add_argument("--epochs", type=int, default=20, help="Epochs of the whole runs.")
    parser.add_argument("--versus-src", type=Path, help="The src folder of another checkout, for --parts versus.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds of --parts versus.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Path stem of the .json and .md results.")
    args = parser.parse_args()
    if "versus" in args.parts and not (args.versus_src and (args.versus_src / "panning").is_dir()):
        parser.error("--parts versus needs --versus-src, the src folder of another checkout (git worktree add)")
    commit = source_commit()
    data = panning.data.load("mnist")
    result: dict[str, Any] = {
        "commit": commit,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "command": " ".join(
            ["python benchmarks/training_speed.py"]
            + (["--parts", *args.parts] if args.parts != DEFAULT_PARTS else [])
            + (["--epochs", str(args.epochs)] if args.epochs != 20 else [])
            + (["--versus-src", "<checkout of the before commit>/src"] if "versus" in args.parts else [])
            + (["--rounds", str(args.rounds)] if "versus" in args.parts and args.rounds != 3 else [])
            + (["--out", str(args.out)] if args.out != DEFAULT_OUT else [])
        ),
    }
    if "dense" in args.parts or "runs" in args.parts:
        result["dense_epoch_seconds"] = textbook_dense_epoch(data)
        print(f"textbook dense epoch: {result['dense_epoch_seconds']:.2f} s", flush=True)
    if "epochs" in args.parts:
        result["epochs"] = []
        for kind, sparsity in (
            ("dense", None),
            ("masked", 0.99),
            ("compact", 0.99),
            ("masked", 0.999),
            ("compact", 0.999),
        ):
            row = library_epoch(data, kind, sparsity)
            result["epochs"].append(row)
            print(f"library epoch {kind} {sparsity}: {row['train_seconds']:.2f} s", flush=True)
    if "runs" in args.parts:
        result["runs"] = []
        for sparsity in (0.99, 0.999):
            row = library_run(data, sparsity, args.epochs)
            result["runs"].append(row)
            print(f"run {sparsity}: {row['seconds']:.1f} s", flush=True)
    if "profile" in args.parts:
        result["profile"] = {"sparsity": 0.99, "ops": profile_compact(data, 0.99)}
    if "versus" in args.parts:
        result["versus"] = versus(args.versus_src, args.rounds)
    if "pooling" in args.parts:
        result["pooling"] = pooling_timings()
    if "jobs" in args.parts:
        with tempfile.TemporaryDirectory() as folder:
            result["jobs"] = [grid_throughput(jobs, Path(folder)) for jobs in (1, 2)]
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # one cell at a time on one thread: the unit --jobs 2 doubles
            bench.cells._dataset.cache_clear()  # load the data again, as the other runs did
            try:
                result["one_thread"] = grid_throughput(1, Path(folder), name="jobs1-thread1")
            finally:
                torch.set_num_threads(threads)
        print(f"jobs: {result['jobs']}", flush=True)
    if "ray" in args.parts:
        with tempfile.TemporaryDirectory() as folder:
            result["ray"] = ray_throughput(Path(folder))
        print(f"ray: {result['ray']}", flush=True)
    write_json(args.out.with_suffix(".json"), result)
    write_atomic(args.out.with_suffix(".md"), lambda tmp: tmp.write_text(markdown(result)))
    print(markdown(result))


if __name__ == "__main__":
    main()
