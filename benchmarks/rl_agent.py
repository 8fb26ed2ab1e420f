"""The panning agent beyond the accuracy grids (issue #6): its training cost, its learning curve,
and the shipped agent on a model it never saw.

- Training: the seconds each committed agent took on this CPU (recorded inside the agent by
  ``panning agent train``) and its evaluation rewards over training (``evaluations.npz`` of its
  training folder, when present).
- Unseen model: ResNet-20 at CIFAR-10 shape (3x32x32, 10 classes; random class-balanced inputs,
  as there is no CIFAR on this machine, so no accuracy), screened by the shipped agent, by
  Panning's paper preset and by SynFlow: nominal and effective sparsity, collapsed layers and
  screening seconds.

Writes ``benchmarks/results/rl-agent/`` (``rl-agent.json``, ``rl-agent.md``, ``learning-curves.png``).

    python benchmarks/rl_agent.py
    python benchmarks/rl_agent.py --sparsities 0.99 0.999 --seeds 0
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

import panning
from panning.agent import checkpoint_dir, load_agent, shipped_agent_path
from panning.io import source_commit, write_atomic, write_json

AGENTS = {
    "shipped (default.zip)": shipped_agent_path(),
    "trained for lenet5/mnist": Path("benchmarks/agents/lenet5-mnist.zip"),
}
# Where `panning agent train` left each agent's training folder (not committed: checkpoints).
TRAINING_FOLDERS = {
    "shipped (default.zip)": Path("runs/agents/default.zip"),
    "trained for lenet5/mnist": Path("runs/agents/lenet5-mnist.zip"),
}
METHODS = {
    "synflow": ("synflow", {}, 100),
    "panning-paper": ("panning", {}, 100),
    "rl-panning-shipped": ("rl-panning", {}, None),
}
DEFAULT_OUT = Path("benchmarks/results/rl-agent")


def training_rows() -> list[dict[str, Any]]:
    rows = []
    for label, path in AGENTS.items():
        if not path.is_file():
            continue
        _, info = load_agent(path)
        row: dict[str, Any] = {"agent": label, "file_kib": round(path.stat().st_size / 1024, 1), **vars(info)}
        evaluations = checkpoint_dir(TRAINING_FOLDERS[label]) / "evaluations.npz"
        if evaluations.is_file():
            data = np.load(evaluations)
            row["curve"] = {
                "timesteps": data["timesteps"].tolist(),
                "mean_reward": data["results"].mean(axis=1).tolist(),
            }
        rows.append(row)
    return rows


def unseen_rows(sparsities: list[float], seeds: list[int]) -> list[dict[str, Any]]:
    rows = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        data = (torch.randn(500, 3, 32, 32, generator=generator), torch.arange(500) % 10)
        for sparsity in sparsities:
            for label, (method, options, iterations) in METHODS.items():
                torch.manual_seed(seed)
                model = panning.models.create("resnet20", in_channels=3, num_classes=10, image_size=32)
                masks = panning.prune(model, sparsity, method, data=data, iterations=iterations, seed=seed, **options)
                meta = masks.metadata
                rows.append(
                    {
                        "model": "resnet20",
                        "method": label,
                        "sparsity": sparsity,
                        "seed": seed,
                        "iterations": meta["iterations"],
                        "kept": masks.kept(),
                        "nominal_sparsity": meta["nominal_sparsity"],
                        "effective_sparsity": meta["effective_sparsity"],
                        "collapsed_layers": len(meta["collapsed_layers"]),
                        "prune_seconds": meta["prune_seconds"],
                    }
                )
                print(rows[-1], flush=True)
    return rows


def markdown(training: list[dict[str, Any]], unseen: list[dict[str, Any]], commit: str) -> str:
    lines = [
        f"# The panning agent: training cost and an unseen model (commit {commit}, {platform.processor() or 'cpu'})",
        "",
        "## Training on this CPU",
        "",
        "| agent | models | data | timesteps | steps per episode | seconds | file (KiB) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in training:
        lines.append(
            f"| {row['agent']} | {', '.join(row['models'])} | {row['dataset']} | {row['timesteps']} | "
            f"{row['iterations']} | {row['seconds']:.0f} | {row['file_kib']} |"
        )
    lines += ["", "Commands:", ""]
    lines += [f"- {row['agent']}: `{row['command']}`" for row in training]
    lines += [
        "",
        "## ResNet-20 at CIFAR-10 shape (never seen by the agent)",
        "",
        "Random class-balanced inputs (no CIFAR here, so no accuracy). Each cell: effective sparsity (mean"
        " over seeds; 1.0000 means the network is cut), runs with some collapsed layer (a layer inside a"
        " residual branch may collapse without cutting the network), screening seconds (mean).",
        "",
        "| method | steps | " + " | ".join(str(s) for s in sorted({r["sparsity"] for r in unseen})) + " |",
        "|---|---:|" + "---:|" * len({r["sparsity"] for r in unseen}),
    ]
    for method in METHODS:
        mine = [r for r in unseen if r["method"] == method]
        if not mine:
            continue
        cells = []
        for sparsity in sorted({r["sparsity"] for r in unseen}):
            at = [r for r in mine if r["sparsity"] == sparsity]
            effective = np.mean([r["effective_sparsity"] for r in at])
            collapsed = sum(r["collapsed_layers"] > 0 for r in at)
            seconds = np.mean([r["prune_seconds"] for r in at])
            cells.append(f"{effective:.4f}, {collapsed}/{len(at)} with a collapsed layer, {seconds:.0f} s")
        lines.append(f"| {method} | {mine[0]['iterations']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(training: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for row in training:
        if "curve" in row:
            axes.plot(row["curve"]["timesteps"], row["curve"]["mean_reward"], marker="o", label=row["agent"])
    axes.set_xlabel("training steps")
    axes.set_ylabel("mean evaluation reward per episode")
    axes.set_title("Deterministic evaluation episodes at 0.99, 0.995, 0.998, 0.999")
    axes.legend()
    figure.tight_layout()
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.99, 0.999])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    commit = source_commit()
    training = training_rows()
    unseen = unseen_rows(args.sparsities, args.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "rl-agent.json", {"commit": commit, "training": training, "unseen": unseen})
    write_atomic(args.out / "rl-agent.md", lambda tmp: tmp.write_text(markdown(training, unseen, commit)))
    plot(training, args.out / "learning-curves.png")
    print(markdown(training, unseen, commit))


if __name__ == "__main__":
    main()
