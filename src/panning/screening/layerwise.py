"""Random masks with chosen layer-wise densities: the baselines that ask whether a method finds
more than how dense each layer should be (Frankle et al. 2021; Evci et al. 2020).

``uniform`` keeps the same fraction of every layer; ``erk`` gives each layer the density of the
Erdős–Rényi-Kernel rule of RigL, ``ε (n_in + n_out + k_h + k_w) / (n_in n_out k_h k_w)``, with
layers that would exceed density 1 kept dense and ``ε`` solved again for the rest. Both keep
exactly ``K`` weights in all, spread over layers by largest remainder, and choose which weights
inside a layer at random from the screening's seeded generator.

Examples:
    >>> import panning
    >>> model = panning.models.create("lenet300")
    >>> masks = panning.prune(model, 0.99, "erk", input_shape=(1, 28, 28), seed=0)
    >>> masks.kept(), [round(masks[n].float().mean().item(), 4) for n in masks]
    (2662, [0.0077, 0.0223, 0.184])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from panning.errors import UserError
from panning.masks import prunable_parameters
from panning.screening.pruning import StepContext, register_method


def erk_densities(shapes: Mapping[str, Sequence[int]], density: float, kernel: bool = True) -> dict[str, float]:
    """Per-layer densities of the Erdős–Rényi(-Kernel) rule whose kept weights total ``density``.

    A layer of shape ``(n_out, n_in, k_h, k_w)`` gets ``ε (n_in + n_out + k_h + k_w) / (n_in n_out
    k_h k_w)`` (``kernel=False``: the kernel terms left out, Erdős–Rényi); layers that would pass
    1 are kept dense and ``ε`` is solved again for the others, until none does.

    Examples:
        >>> d = erk_densities({"a": (100, 10), "b": (10, 100)}, 0.1)
        >>> round(d["a"], 4), round(d["b"], 4)
        (0.1, 0.1)
        >>> d = erk_densities({"small": (2, 2), "big": (100, 100)}, 0.5)
        >>> d["small"], round(d["big"], 4)
        (1.0, 0.4998)
    """
    if not 0 < density <= 1:
        raise UserError(f"density must be in (0, 1], got {density}")
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {}
    for name, shape in shapes.items():
        terms = shape if kernel else shape[:2]
        raw[name] = sum(terms) / math.prod(terms)
    total = sum(sizes.values())
    dense: set[str] = set()
    while True:
        budget = density * total - sum(sizes[name] for name in dense)
        rest = [name for name in shapes if name not in dense]
        scale = budget / sum(raw[name] * sizes[name] for name in rest) if rest else 0.0
        over = [name for name in rest if scale * raw[name] > 1]
        if not over:
            return {name: 1.0 if name in dense else scale * raw[name] for name in shapes}
        dense.update(over)


def layer_counts(sizes: Mapping[str, int], densities: Mapping[str, float], keep: int) -> dict[str, int]:
    """Whole numbers of weights per layer near ``density × size`` that add up to exactly ``keep``.

    Floors first, then one more weight to the layers with the largest remainders (never above a
    layer's size).

    Examples:
        >>> layer_counts({"a": 10, "b": 10, "c": 10}, {"a": 0.25, "b": 0.25, "c": 0.25}, 8)
        {'a': 3, 'b': 3, 'c': 2}
    """
    if not 0 <= keep <= sum(sizes.values()):
        raise UserError(f"cannot keep {keep} of {sum(sizes.values())} weights")
    wanted = {name: min(float(sizes[name]), densities[name] * sizes[name]) for name in sizes}
    counts = {name: math.floor(value) for name, value in wanted.items()}
    order = sorted(sizes, key=lambda name: (-(wanted[name] - counts[name]), list(sizes).index(name)))
    missing = keep - sum(counts.values())
    while missing > 0:
        progressed = False
        for name in order:
            if missing and counts[name] < sizes[name]:
                counts[name] += 1
                missing -= 1
                progressed = True
        if not progressed:  # pragma: no cover - keep <= total makes this unreachable
            break
    while missing < 0:
        for name in reversed(order):
            if missing and counts[name] > 0:
                counts[name] -= 1
                missing += 1
    return counts


@dataclass
class LayerwiseRandom:
    """``method="uniform"`` or ``"erk"``: random weights within each layer at the rule's densities."""

    rule: str
    default_iterations: int = 1
    data_driven: bool = False

    def densities(self, shapes: Mapping[str, Sequence[int]], density: float) -> dict[str, float]:
        """The per-layer densities of this rule for an overall ``density``."""
        if self.rule == "uniform":
            return dict.fromkeys(shapes, density)
        return erk_densities(shapes, density)

    def __call__(self, model: nn.Module, context: StepContext) -> dict[str, torch.Tensor]:
        weights = prunable_parameters(model, context.parameters)
        sizes = {name: weight.numel() for name, weight in weights.items()}
        keep = context.keep if context.keep is not None else max(1, round(context.density * sum(sizes.values())))
        densities = self.densities({name: tuple(w.shape) for name, w in weights.items()}, keep / sum(sizes.values()))
        counts = layer_counts(sizes, densities, keep)
        scores = {}
        for name, weight in weights.items():
            chosen = torch.randperm(sizes[name], generator=context.generator)[: counts[name]]
            flat = torch.zeros(sizes[name], dtype=torch.float32)
            flat[chosen] = 1.0
            scores[name] = flat.view_as(weight).to(weight.device)
        return scores


@register_method("uniform")
def _uniform() -> LayerwiseRandom:
    return LayerwiseRandom("uniform")


@register_method("erk")
def _erk() -> LayerwiseRandom:
    return LayerwiseRandom("erk")


__all__ = ["LayerwiseRandom", "erk_densities", "layer_counts"]
