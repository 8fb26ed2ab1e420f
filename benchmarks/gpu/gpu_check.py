"""The CUDA path, checked in one short run (issue #16 item 5, issue #21 item 4): screening with
SynFlow and Panning and a 2-epoch compacted training of LeNet-5 and VGG-19 at CIFAR shape, on the
GPU, with timings. CIFAR-10 is used when ``--data-dir`` holds it; otherwise class-labelled random
images of its shape (then only the path is checked, not the accuracy).

    python benchmarks/gpu/gpu_check.py --out "$OUT"      # on a machine with a CUDA GPU

Writes ``gpu-check.json`` and ``gpu-check.md`` in ``--out``; exits 1 when no GPU is visible.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

import panning
from panning.data import SPECS, Dataset
from panning.io import write_atomic, write_json
from panning.training import TrainConfig, train


def cifar_shaped(data_dir: str | None, examples: int) -> Dataset:
    if data_dir:
        try:
            return panning.data.load("cifar10", data_dir)
        except ValueError as error:
            print(f"no CIFAR-10 in {data_dir} ({error}); using random images of its shape")
    generator = torch.Generator().manual_seed(0)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
        return images, torch.arange(n) % 10

    return Dataset(SPECS["cifar10"], split(examples), split(examples // 10), split(examples // 5), source="random")


def check(model_name: str, method: str, data: Dataset, out: Path, device: str) -> dict[str, object]:
    torch.manual_seed(0)
    model = panning.models.for_dataset(model_name, "cifar10").to(device)
    if device == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    masks = panning.prune(model, 0.99, method, data=data, iterations=20, seed=0)
    if device == "cuda":
        torch.cuda.synchronize()
    screening = time.perf_counter() - began
    config = TrainConfig(
        model=model_name, dataset="cifar10", epochs=2, device=device, compact=True, val_size=len(data.val[1])
    )
    metrics = train(model, data, config, out / f"{model_name}-{method}", masks=masks, progress=False)
    return {
        "model": model_name,
        "method": method,
        "kept": masks.kept(),
        "effective_sparsity": metrics["effective_sparsity"],
        "screening_seconds": round(screening, 2),
        "seconds_per_epoch": round(metrics["seconds_per_epoch"], 2),
        "test_accuracy": metrics["test_accuracy"],
        "dead": metrics["dead"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/gpu-check")
    parser.add_argument("--data-dir")
    parser.add_argument("--device", default="cuda", help="cpu only to try the script itself")
    parser.add_argument("--examples", type=int, default=5120, help="random training images without CIFAR-10")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU visible; nothing checked")
        sys.exit(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = cifar_shaped(args.data_dir, args.examples)
    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for model_name in ("lenet5", "vgg19"):
            for method in ("synflow", "panning"):
                rows.append(check(model_name, method, data, Path(runs), args.device))
                print(rows[-1], flush=True)
    record = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "data": data.source or "cifar10",
        "rows": rows,
    }
    write_json(out / "gpu-check.json", record)
    lines = [
        f"# CUDA check: {record['device']}, torch {record['torch']}, data {record['data']}",
        "",
        "| model | method | kept | effective sparsity | screening s | s/epoch | test acc | dead |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r['model']} | {r['method']} | {r['kept']} | {r['effective_sparsity']:.5f} | {r['screening_seconds']} "
        f"| {r['seconds_per_epoch']} | {r['test_accuracy']:.4f} | {r['dead']} |"
        for r in rows
    ]
    text = "\n".join(lines) + "\n"
    write_atomic(out / "gpu-check.md", lambda tmp: tmp.write_text(text))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
