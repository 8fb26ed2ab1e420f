"""Could compaction run on torch-pruning's dependency graph? (issue #18, item 9)

For each model, one SynFlow mask (seed 0, 20 steps) is compacted twice with the same plan (which
units are dead, from panning's own tracer): by panning's own surgery (`compact_with_plan`), and
by torch-pruning's `DependencyGraph` removing the same output units. Both results are compared
with the masked full-size network on random inputs (largest absolute difference of the outputs)
and by their parameter count. Nothing is timed (both take well under a second here).

    pip install --no-deps torch-pruning   # not a dependency of panning
    python benchmarks/compaction_torch_pruning.py --out benchmarks/results/compaction/torch-pruning.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

import panning
from panning import masks as masklib
from panning.compaction import compact_with_plan
from panning.io import recorded_command, write_atomic

SETTINGS = [
    ("lenet300", (1, 28, 28), 0.99),
    ("lenet5", (1, 28, 28), 0.99),
    ("lenet5", (1, 28, 28), 0.999),
    ("vgg19", (3, 32, 32), 0.99),
    ("resnet20", (3, 32, 32), 0.99),
]


def masked_copy(model: nn.Module, masks: panning.Masks) -> nn.Module:
    """A copy of ``model`` with the pruned weights made permanently zero."""
    return masklib.remove(masklib.apply(masklib.copy_model(model), masks)).eval()


def with_torch_pruning(model: nn.Module, plan: dict, shape: tuple[int, ...]) -> tuple[nn.Module, int]:
    """``model`` with the plan's dead output units removed by torch-pruning; the groups it refused."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, *shape))
    modules = dict(model.named_modules())
    refused = 0
    for name, entry in plan.items():
        module, keep = modules.get(name), entry.get("out")
        if keep is None or not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        size = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
        drop = sorted(set(range(size)) - set(keep))
        if drop:
            prune_out = tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_out_channels
            group = graph.get_pruning_group(module, prune_out, idxs=drop)
            if graph.check_pruning_group(group):
                group.prune()
            else:
                refused += 1
    return model, refused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    lines = [
        "# Compaction: panning's own surgery against torch-pruning's dependency graph",
        "",
        f"Command: `{recorded_command('python', sys.argv)}`. Same plan (dead units from panning's tracer), "
        "SynFlow masks, seed 0; outputs compared with the masked full-size network on 4 random inputs.",
        "",
        "| model | sparsity | params: dense | own | torch-pruning "
        "| max abs diff: own | torch-pruning | groups refused |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, shape, sparsity in SETTINGS:
        torch.manual_seed(0)
        model = panning.models.create(name, in_channels=shape[0], num_classes=10, image_size=shape[1]).eval()
        masks = panning.prune(model, sparsity, "synflow", input_shape=shape, iterations=20)
        small, _, plan, _ = compact_with_plan(model, masks, input_shape=shape)
        other, refused = with_torch_pruning(masked_copy(model, masks), plan, shape)
        with torch.no_grad():
            inputs = torch.randn(4, *shape)
            reference = masked_copy(model, masks)(inputs)
            own = float((small.eval()(inputs) - reference).abs().max())
            theirs = float((other(inputs) - reference).abs().max())
        count = [sum(p.numel() for p in m.parameters()) for m in (model, small, other)]
        lines.append(
            f"| {name} | {sparsity} | {count[0]} | {count[1]} | {count[2]} | {own:.1e} | {theirs:.1e} | {refused} |"
        )
        print(lines[-1])
    text = "\n".join(lines) + "\n"
    write_atomic(args.out, lambda tmp: tmp.write_text(text))


if __name__ == "__main__":
    main()
