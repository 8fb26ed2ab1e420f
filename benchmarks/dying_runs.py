"""Watch a sparse LeNet-5 die (or live): per-layer statistics over the first epoch of training.

Screens SynFlow on LeNet-5/MNIST at one seed and sparsity, compacts the network as ``--compact``
does, and trains it with the library's optimiser and schedule (``--warmup-epochs``,
``--clip-grad-norm`` as in ``panning train``), printing every ``--every`` steps: the loss, and per
layer the units with any positive output in the batch, the mean and std of the pre-activations,
the range of the biases and the gradient norm of the kept weights.

    PANNING_DATA=... python benchmarks/dying_runs.py --seed 0 --sparsity 0.998 --warmup-epochs 1 \\
        --clip-grad-norm none > benchmarks/results/sparse-training/dying-seed0-0.998-warmup.txt
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

import panning
from panning import masks as masklib
from panning.compaction import compact_with_plan
from panning.training import TrainConfig, build, lr_factor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sparsity", type=float, default=0.999)
    parser.add_argument("--warmup-epochs", type=float, default=0.0)
    parser.add_argument("--clip-grad-norm", default="none", help="A number or none.")
    parser.add_argument("--steps", type=int, default=215)
    parser.add_argument("--every", type=int, default=10)
    args = parser.parse_args()
    clip = None if args.clip_grad_norm == "none" else float(args.clip_grad_norm)
    torch.set_num_threads(1)
    config = TrainConfig(model="lenet5", dataset="mnist", seed=args.seed, epochs=20)
    model, data = build(config)
    masks = panning.prune(model, args.sparsity, "synflow", data=data, seed=args.seed)
    model, kept_masks, _, compaction = compact_with_plan(model, masks, data.input_shape)
    masklib.apply(model, kept_masks)
    print(f"synflow {args.sparsity} seed {args.seed}, warm-up {args.warmup_epochs} epochs, clip {clip}")
    print("units (dense -> compact):", {name: list(sizes) for name, sizes in compaction.units.items()})
    layers = ("conv1", "conv2", "fc3")
    outputs: dict[str, torch.Tensor] = {}
    for name in layers:
        getattr(model, name).register_forward_hook(
            lambda module, inputs, output, name=name: outputs.__setitem__(name, output.detach())
        )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    steps = math.ceil(len(data.train[1]) / 256)
    warmup = round(args.warmup_epochs * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: lr_factor(k, 20 * steps, warmup))
    generator = torch.Generator().manual_seed(args.seed)
    for step, (x, y) in enumerate(data.batches("train", 256, "cpu", generator=generator)):
        if step >= args.steps:
            break
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        if step % args.every == 0:
            parts = []
            for name in layers:
                output, module = outputs[name], getattr(model, name)
                alive = (output > 0).transpose(0, 1).flatten(1).any(1)
                bias = module.bias.detach()
                parts.append(
                    f"{name} alive {int(alive.sum())}/{len(alive)} pre {float(output.mean()):+.2f}"
                    f"±{float(output.std()):.2f} bias {float(bias.min()):+.2f}..{float(bias.max()):+.2f} "
                    f"grad {float(module.weight_orig.grad.norm()):.1e}"
                )
            lr = scheduler.get_last_lr()[0]
            print(f"step {step:3d} lr {lr:.3f} loss {float(loss):.3f} | " + " | ".join(parts), flush=True)
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        scheduler.step()


if __name__ == "__main__":
    main()
