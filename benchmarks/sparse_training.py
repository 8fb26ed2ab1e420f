"""Why connected sparse networks die in training, and which default keeps them alive (issue #16).

Screens SynFlow and Panning masks at extreme sparsity on LeNet-5/MNIST, LeNet-5/Fashion-MNIST and
LeNet-300/MNIST over several seeds, then trains each mask under candidate training settings
(``--candidates``, overrides of :class:`panning.TrainConfig`) with the library's default
preprocessing. ``--stop-after K`` trains only the first K epochs of the 20-epoch schedule: runs
that die do so in the first epochs, so the candidates are compared there, on validation accuracy
and the number of dead runs; the chosen one then runs all 20 epochs. Each finished run is a line
of ``<out>/runs.jsonl`` (a rerun skips what is there) and ``<out>/summary.md`` tabulates them.

    python benchmarks/sparse_training.py --stop-after 3 --out benchmarks/results/sparse-training/screen
    python benchmarks/sparse_training.py --candidates fan-in-warmup --out benchmarks/results/sparse-training/final

Runs go to ``--jobs`` processes with the CPU threads split between them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import panning
from panning import masks as masklib
from panning.io import write_atomic
from panning.training import TrainConfig, create_model, evaluate, record_origin, train

PAIRS = (("lenet5", "mnist"), ("lenet5", "fashion-mnist"), ("lenet300", "mnist"))
OLD = {"warmup_epochs": 0.0, "rescale": "none", "init": "pytorch", "clip_grad_norm": None}
CANDIDATES: dict[str, dict[str, Any]] = {
    "old": OLD,
    "warmup": {**OLD, "warmup_epochs": 1.0},
    "fan-in": {**OLD, "rescale": "fan-in"},
    "fan-in-warmup": {**OLD, "rescale": "fan-in", "warmup_epochs": 1.0},
    "reference-init": {**OLD, "init": "reference"},
    "reference-init-warmup": {**OLD, "init": "reference", "warmup_epochs": 1.0},
    "clip": {**OLD, "clip_grad_norm": 1.0},
    "warmup-clip": {**OLD, "warmup_epochs": 1.0, "clip_grad_norm": 1.0},
    "default": {},
}


class _Stop(Exception):
    pass


def _run_one(job: dict[str, Any]) -> dict[str, Any]:
    dense = job["method"] == "dense"
    config = TrainConfig(
        model=job["model"],
        dataset=job["dataset"],
        seed=job["seed"],
        epochs=job["epochs"],
        device="cpu",
        compact=not dense,
        **CANDIDATES[job["candidate"]],
    ).validate()
    data = _dataset(job["dataset"])
    cache = Path(job["masks_dir"]) / (
        f"{job['model']}-{job['dataset']}-{config.init}-{job['method']}-{job['sparsity']}-{job['seed']}.safetensors"
    )
    model = create_model(config, data)
    masks: panning.Masks | None = None
    if dense:
        pass
    elif cache.is_file():
        masks = masklib.load(cache)
    else:
        masks = panning.prune(model, job["sparsity"], job["method"], data=data, seed=job["seed"])
        record_origin(masks, job["model"], data, job["seed"], config.init)
        masklib.save(masks, cache)
    prune_seconds = None if masks is None else masks.metadata.get("prune_seconds")
    history: list[dict[str, Any]] = []

    def watch(end: panning.training.EpochEnd) -> None:
        val = evaluate(end.model, data, "val", torch.device("cpu"))
        history.append({**end.metrics, "val_predicted_classes": val["predicted_classes"]})
        if end.epoch >= job["stop_after"] and job["stop_after"] < job["epochs"]:
            raise _Stop

    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        try:
            metrics = train(model, data, config, Path(folder) / "run", masks=masks, callbacks=[watch], progress=False)
        except _Stop:
            metrics = None
    last = history[-1]
    return {
        **{k: job[k] for k in ("candidate", "model", "dataset", "method", "sparsity", "seed", "epochs", "stop_after")},
        "config": {
            k: v for k, v in config.as_dict().items() if k in ("warmup_epochs", "rescale", "init", "clip_grad_norm")
        },
        "effective_sparsity": None if masks is None else masks.metadata.get("effective_sparsity"),
        "prune_seconds": prune_seconds,
        "train_accuracy": last["train_accuracy"],
        "val_accuracy": last["val_accuracy"],
        "dead": last["val_predicted_classes"] <= 1,
        "test_accuracy": None if metrics is None else metrics["test_accuracy"],
        "epochs_trained": len(history),
        "history": [{k: h[k] for k in ("epoch", "train_accuracy", "val_accuracy")} for h in history],
        "seconds": time.perf_counter() - began,
    }


_DATA: dict[str, panning.data.Dataset] = {}


def _dataset(name: str) -> panning.data.Dataset:
    if name not in _DATA:
        _DATA[name] = panning.data.load(name)
    return _DATA[name]


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        row[k] for k in ("candidate", "model", "dataset", "method", "sparsity", "seed", "epochs", "stop_after")
    )


def _collapsed(row: dict[str, Any]) -> bool:
    """No input-output path left: such a mask cannot learn, whatever the training."""
    return row["effective_sparsity"] is not None and row["effective_sparsity"] >= 1.0


def summarize(rows: list[dict[str, Any]]) -> str:
    """Markdown tables: per candidate and cell, validation accuracy and dead runs among connected masks."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["candidate"], row["model"], row["dataset"], row["method"], row["sparsity"]), []).append(
            row
        )
    lines = [
        "Dead: constant prediction on the validation split, counted among connected masks; collapsed masks",
        "(effective sparsity 1: no input-output path) are listed apart and left out of the means.",
        "",
        "| candidate | model | dataset | method | sparsity | runs | collapsed | dead "
        "| val acc % (mean) | val acc % (min) "
        "| test acc % (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (candidate, model, dataset, method, sparsity), group in sorted(groups.items()):
        connected = [r for r in group if not _collapsed(r)]
        vals = [r["val_accuracy"] for r in connected]
        tests = [r["test_accuracy"] for r in connected if r["test_accuracy"] is not None]
        mean = f"{100 * statistics.mean(vals):.2f}" if vals else "—"
        low = f"{100 * min(vals):.2f}" if vals else "—"
        test = f"{100 * statistics.mean(tests):.2f}" if tests else "—"
        lines.append(
            f"| {candidate} | {model} | {dataset} | {method} | {sparsity} | {len(group)} "
            f"| {len(group) - len(connected)} "
            f"| {sum(r['dead'] for r in connected)} | {mean} | {low} | {test} |"
        )
    totals: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if not _collapsed(row):
            totals.setdefault((row["candidate"], f"{row['model']}/{row['dataset']}"), []).append(row)
            totals.setdefault((row["candidate"], "all"), []).append(row)
    lines += [
        "",
        "| candidate | pair | connected runs | dead | val acc % (mean) | val acc % (mean of the lowest tenth) |",
        "|---|---|---|---|---|---|",
    ]
    for (candidate, pair), group in sorted(totals.items()):
        vals = sorted(r["val_accuracy"] for r in group)
        tail = vals[: max(1, len(vals) // 10)]
        lines.append(
            f"| {candidate} | {pair} | {len(group)} | {sum(r['dead'] for r in group)} "
            f"| {100 * statistics.mean(vals):.2f} | {100 * statistics.mean(tail):.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--pairs", nargs="+", default=[f"{m}/{d}" for m, d in PAIRS])
    parser.add_argument("--methods", nargs="+", default=["synflow", "panning"], help="Any method, or dense.")
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.995, 0.998, 0.999])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=20, help="Length of the schedule.")
    parser.add_argument("--stop-after", type=int, default=None, help="Stop after this many epochs.")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", required=True)
    parser.add_argument("--summarize", action="store_true", help="Only rewrite summary.md from runs.jsonl.")
    args = parser.parse_args()
    out = Path(args.out)
    masks_dir = out.parent / "masks"
    masks_dir.mkdir(parents=True, exist_ok=True)
    runs_path = out / "runs.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in runs_path.read_text().splitlines()] if runs_path.is_file() else []
    if args.summarize:
        write_atomic(out / "summary.md", lambda tmp: tmp.write_text(summarize(rows)))
        return
    done = {_key(row) for row in rows}
    stop_after = args.stop_after or args.epochs
    jobs = [
        {
            "candidate": c,
            "model": p.split("/")[0],
            "dataset": p.split("/")[1],
            "method": m,
            "sparsity": s,
            "seed": seed,
            "epochs": args.epochs,
            "stop_after": stop_after,
            "masks_dir": str(masks_dir),
        }
        for c in args.candidates
        for p in args.pairs
        for m in args.methods
        for s in args.sparsities
        for seed in args.seeds
    ]
    jobs = [job for job in jobs if _key(job) not in done]
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    print(f"{len(jobs)} runs to do, {args.jobs} processes of {threads} threads", flush=True)
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.jobs, initializer=_init_worker, initargs=(threads,)) as pool:
        for row in pool.imap_unordered(_run_one, jobs):
            rows.append(row)
            write_atomic(runs_path, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in rows)))
            write_atomic(out / "summary.md", lambda tmp: tmp.write_text(summarize(rows)))
            print(
                f"{row['candidate']} {row['model']}/{row['dataset']} {row['method']} {row['sparsity']} "
                f"seed {row['seed']}: "
                f"val {row['val_accuracy']:.4f}{' DEAD' if row['dead'] else ''} ({row['seconds']:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
