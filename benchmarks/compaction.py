"""Does sparsity pay? Dense vs masked vs compacted (vs sparse kernels) training and inference (issue #7).

    python benchmarks/compaction.py --data-dir DIR --cifar-batch 32 --step-repeats 3

For lenet5 and lenet300 on MNIST at each sparsity, one Panning mask (paper preset, seed 0) is
trained for one epoch three ways from the same initialisation and seed: masked (the full-size
model with PyTorch's pruning reparametrisation), compacted (`--compact`), and compacted with
sparse linear kernels where timing says they pay (`--compact --sparse-kernels`). It records
seconds per training epoch, final test accuracy, inference throughput at batch 1 and 256
(masked = the full-size model with pruned weights at zero), parameters stored, MACs per
example and the file size of the exported model. For vgg19 and resnet20 at CIFAR shape
(no CIFAR on this machine) it times one training step at batch 128 on random data, with
SynFlow masks (data-free). All ratios come from one process on one machine.
Finished training runs in --runs are reused, so a second call only re-times inference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import panning
from panning import masks as masklib
from panning.compaction import compact_with_plan
from panning.compaction.inference import fastest_inference
from panning.compaction.sparse import model_costs, save_sparse, use_sparse_kernels
from panning.io import recorded_command, write_atomic, write_json
from panning.training import TrainConfig, build, create_model, save_model, train

VARIANTS = {"masked": {}, "compact": {"compact": True}, "sparse": {"compact": True, "sparse_kernels": True}}


def _median_ms(step: Any, repeats: int) -> float:
    step()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1e3


def _train_step_ms(
    model: nn.Module, shape: tuple[int, ...], batch: int, repeats: int, channels_last: bool = False
) -> float:
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return _median_ms(step, repeats)


def _file_bytes(path: Path, writer: Any) -> int:
    writer(path)
    return path.stat().st_size


def _inference_models(
    model: nn.Module, masks: panning.Masks, small: nn.Module, carried: panning.Masks, batch: int
) -> dict[str, nn.Module]:
    masked = masklib.remove(masklib.apply(masklib.copy_model(model), masks))
    kernels, rest, _ = use_sparse_kernels(masklib.copy_model(small), carried, batch, training=False)
    return {"masked": masked, "compact": small, "sparse": masklib.remove(masklib.apply(kernels, rest))}


def _train_steps_by_layout(
    model: nn.Module,
    masks: panning.Masks,
    small: nn.Module,
    carried: panning.Masks,
    shape: tuple[int, ...],
    repeats: int,
) -> dict[str, dict[str, float]]:
    """One SGD step at batch 256, masked and compacted, in NCHW and in channels-last layout.

    The library trains in NCHW; this says whether the other layout would change the comparison.
    """
    steps: dict[str, dict[str, float]] = {}
    for variant, net, net_masks in (("masked", model, masks), ("compact", small, carried)):
        steps[variant] = {}
        for layout in ("eager", "channels-last"):
            copy = masklib.apply(masklib.copy_model(net), net_masks)
            if layout == "channels-last":
                copy.to(memory_format=torch.channels_last)
            steps[variant][layout] = _train_step_ms(copy, shape, 256, repeats, channels_last=layout != "eager")
    return steps


def mnist_rows(args: argparse.Namespace, runs: Path, scratch: Path) -> list[dict[str, Any]]:
    rows = []
    for model_name in args.models:
        # No clipping: the committed results/compaction.* were trained before it became the default (#16).
        config = TrainConfig(
            model=model_name, dataset="mnist", epochs=args.epochs, seed=args.seed, device="cpu", clip_grad_norm=None
        )
        _, dataset = build(config, args.data_dir)
        shape = dataset.input_shape
        dense_metrics = train(
            create_model(config, dataset), dataset, config, runs / f"{model_name}-dense", resume=True, progress=False
        )
        dense_model = create_model(config, dataset)
        dense_bytes = _file_bytes(scratch / "dense.safetensors", lambda p, m=dense_model: save_model(m, p))
        for sparsity in args.sparsities:
            model = create_model(config, dataset)
            masks = panning.prune(model, sparsity, args.method, data=dataset, seed=args.seed)
            row: dict[str, Any] = {
                "model": model_name,
                "sparsity": sparsity,
                "method": args.method,
                "dense_epoch_s": dense_metrics["seconds_per_epoch"],
                "dense_test_accuracy": dense_metrics["test_accuracy"],
                "dense_file_bytes": dense_bytes,
            }
            for variant, flags in VARIANTS.items():
                variant_config = dataclasses.replace(config, **flags)
                run_dir = runs / f"{model_name}-{sparsity}-{variant}"
                metrics = train(
                    create_model(config, dataset),
                    dataset,
                    variant_config,
                    run_dir,
                    masks=masks,
                    resume=True,
                    progress=False,
                )
                row[f"{variant}_epoch_s"] = metrics["seconds_per_epoch"]
                row[f"{variant}_test_accuracy"] = metrics["test_accuracy"]
                if variant == "compact":
                    row["costs"] = metrics["costs"]
                    row["units"] = metrics["compaction"]["units"]
                if variant == "sparse":
                    row["kernels"] = {k["layer"]: k["kernel"] for k in metrics["kernels"]}
            small, carried, plan, _ = compact_with_plan(model, masks, shape)
            small_file = scratch / "small.safetensors"
            save_sparse(masklib.apply(masklib.copy_model(small), carried), small_file, plan)
            row["sparse_file_bytes"] = small_file.stat().st_size
            for batch in (1, 256):
                for variant, net in _inference_models(model, masks, small, carried, batch).items():
                    _, timing = fastest_inference(net, shape, batch, repeats=args.repeats)
                    row[f"{variant}_infer_b{batch}"] = timing.as_dict()
            row["train_step_ms"] = _train_steps_by_layout(model, masks, small, carried, shape, args.repeats)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("costs", "units")}), flush=True)
    return rows


def cifar_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    shape = (3, 32, 32)
    for model_name in args.cifar_models:
        for sparsity in args.sparsities:
            torch.manual_seed(args.seed)
            model = panning.models.create(model_name, in_channels=3, num_classes=10, image_size=32)
            masks = panning.prune(model, sparsity, "synflow", input_shape=shape, seed=args.seed)
            masked = masklib.apply(masklib.copy_model(model), masks)
            small, carried, _, _ = compact_with_plan(model, masks, shape)
            kernels, rest, _ = use_sparse_kernels(masklib.copy_model(small), carried, args.cifar_batch)
            dense_costs, compact_costs = model_costs(model, shape), model_costs(small, shape, carried)
            row = {
                "model": model_name,
                "sparsity": sparsity,
                "method": "synflow",
                "dense_params": dense_costs.params,
                "compact_params": compact_costs.params,
                "dense_macs": dense_costs.macs,
                "compact_macs": compact_costs.macs,
                "masked_step_ms": _train_step_ms(masked, shape, args.cifar_batch, args.step_repeats),
                "compact_step_ms": _train_step_ms(
                    masklib.apply(small, carried), shape, args.cifar_batch, args.step_repeats
                ),
                "sparse_step_ms": _train_step_ms(
                    masklib.apply(kernels, rest), shape, args.cifar_batch, args.step_repeats
                ),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b else "n/a"


def _fastest_ms(timing: dict[str, Any]) -> float:
    return min(timing["milliseconds"].values())


def _timing_cell(timing: dict[str, Any]) -> str:
    eager, fastest = timing["milliseconds"]["eager"], _fastest_ms(timing)
    digits = 3 if eager < 1 else 2
    return f"{eager:.{digits}f} / {fastest:.{digits}f} ({timing['chosen']})"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Does sparsity pay? Masked vs compacted training and inference",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}; torch {result['torch']}, {result['threads']} threads. "
        f"Training: {result['epochs']} epoch(s), batch 256, seed {result['seed']}; masks: {result['method']}.",
        "",
        "## LeNet-5 and LeNet-300 on MNIST",
        "",
        "Speed-ups are against masked training / masked inference (the full-size model with its pruned "
        "weights at zero). `compact+sparse` adds sparse linear kernels where timing chose them. Inference "
        "is timed in each execution mode of `panning.inference` (best of the repeats): *eager* compares "
        "both models in PyTorch's default mode, *fastest* each model in its own fastest mode "
        "(eager, channels-last or compiled), so that the speed-up is the network's and not the mode's.",
        "",
        "| model | sparsity | epoch s: masked | compact | compact+sparse | epoch speed-up | "
        "infer b256 speed-up: eager | fastest | infer b1 speed-up: eager | fastest | "
        "test acc: masked | compact | compact+sparse | "
        "params: dense | compact | MACs: dense | compact | file: dense | sparse | file ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["mnist"]:
        best_epoch = min(r["compact_epoch_s"], r["sparse_epoch_s"])
        speedups = []
        for batch in (256, 1):
            masked, compact, sparse = (r[f"{v}_infer_b{batch}"] for v in ("masked", "compact", "sparse"))
            eager = min(compact["milliseconds"]["eager"], sparse["milliseconds"]["eager"])
            speedups.append(_ratio(masked["milliseconds"]["eager"], eager))
            speedups.append(_ratio(_fastest_ms(masked), min(_fastest_ms(compact), _fastest_ms(sparse))))
        costs = r["costs"]
        lines.append(
            f"| {r['model']} | {r['sparsity']} | {r['masked_epoch_s']:.1f} | {r['compact_epoch_s']:.1f} | "
            f"{r['sparse_epoch_s']:.1f} | {_ratio(r['masked_epoch_s'], best_epoch)} | {' | '.join(speedups)} | "
            f"{100 * r['masked_test_accuracy']:.2f} | {100 * r['compact_test_accuracy']:.2f} | "
            f"{100 * r['sparse_test_accuracy']:.2f} | {costs['dense']['params']} | {costs['compact']['params']} | "
            f"{costs['dense']['macs']} | {costs['compact']['macs']} | {r['dense_file_bytes']} | "
            f"{r['sparse_file_bytes']} | {_ratio(r['dense_file_bytes'], r['sparse_file_bytes'])} |"
        )
    lines += [
        "",
        "Inference milliseconds per batch, eager / fastest (its mode):",
        "",
        "| model | sparsity | b1: masked | compact | compact+sparse | b256: masked | compact | compact+sparse | "
        "sparse kernels chosen (training) | units per layer after compaction |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["mnist"]:
        units = ", ".join(f"{k} {a}->{b}" for k, (a, b) in r["units"].items())
        kernels = ", ".join(k for k, v in r["kernels"].items() if v == "sparse") or "none"
        cells = [
            _timing_cell(r[f"{variant}_infer_b{batch}"])
            for batch in (1, 256)
            for variant in ("masked", "compact", "sparse")
        ]
        lines.append(f"| {r['model']} | {r['sparsity']} | {' | '.join(cells)} | {kernels} | {units} |")
    lines += [
        "",
        "One training step at batch 256 (median ms), in the library's NCHW layout and in channels-last:",
        "",
        "| model | sparsity | masked: NCHW | channels-last | compact: NCHW | channels-last | "
        "speed-up, NCHW | speed-up, each in its faster layout |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["mnist"]:
        masked, compact = r["train_step_ms"]["masked"], r["train_step_ms"]["compact"]
        lines.append(
            f"| {r['model']} | {r['sparsity']} | {masked['eager']:.1f} | {masked['channels-last']:.1f} | "
            f"{compact['eager']:.1f} | {compact['channels-last']:.1f} | {_ratio(masked['eager'], compact['eager'])} | "
            f"{_ratio(min(masked.values()), min(compact.values()))} |"
        )
    lines += [
        "",
        f"## VGG-19 and ResNet-20 at CIFAR shape: one training step at batch {result['cifar_batch']} (SynFlow masks)",
        "",
        "| model | sparsity | params: dense | compact | MACs: dense | compact | step ms: masked | compact | "
        "compact+sparse | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["cifar"]:
        best = min(r["compact_step_ms"], r["sparse_step_ms"])
        lines.append(
            f"| {r['model']} | {r['sparsity']} | {r['dense_params']} | {r['compact_params']} | {r['dense_macs']} | "
            f"{r['compact_macs']} | {r['masked_step_ms']:.1f} | {r['compact_step_ms']:.1f} | "
            f"{r['sparse_step_ms']:.1f} | {_ratio(r['masked_step_ms'], best)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/compaction")
    parser.add_argument("--runs", default="runs/compaction", help="Training run folders (reused when finished).")
    parser.add_argument("--data-dir")
    parser.add_argument("--models", nargs="+", default=["lenet5", "lenet300"])
    parser.add_argument("--cifar-models", nargs="*", default=["vgg19", "resnet20"])
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.9, 0.99, 0.999])
    parser.add_argument("--method", default="panning")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--cifar-batch", type=int, default=128)
    parser.add_argument("--step-repeats", type=int, default=5)
    args = parser.parse_args()
    out, runs = Path(args.out), Path(args.runs)
    scratch = runs / "files"
    scratch.mkdir(parents=True, exist_ok=True)
    result = {
        "command": recorded_command("python benchmarks/compaction.py", sys.argv[1:]),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "epochs": args.epochs,
        "seed": args.seed,
        "method": args.method,
        "cifar_batch": args.cifar_batch,
        "mnist": mnist_rows(args, runs, scratch),
        "cifar": cifar_rows(args),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "compaction.json", result)
    text = markdown(result)
    write_atomic(out / "compaction.md", lambda tmp: tmp.write_text(text))
    print(text)


if __name__ == "__main__":
    main()
