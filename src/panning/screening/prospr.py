"""ProsPr (Alizadeh et al., ICLR 2022, "Prospect Pruning: Finding Trainable Weights at
Initialization using Meta-Gradients"): a weight's score is the meta-gradient of the loss after a
few SGD steps with respect to its mask, so the kept weights are those that matter once training
has begun, not only at initialisation.

With the current mask ``m`` and multipliers ``c = 1`` on the prunable weights, ``inner_steps``
steps of SGD (rate ``inner_lr``) run on class-balanced batches with effective weights
``θ ⊙ c ⊙ m``; the loss on one more batch after them is differentiated through the steps with
respect to ``c``, and ``|∂L/∂c|`` is the score. The screening schedule's steps are ProsPr's
iterative rounds (``iterations``; one round by default).

Examples:
    >>> import torch, panning
    >>> model = panning.models.create("lenet300")
    >>> x, y = torch.randn(100, 1, 28, 28), torch.arange(100) % 10
    >>> masks = panning.prune(model, 0.99, "prospr", data=(x, y), samples_per_class=2, inner_steps=2)
    >>> masks.kept()
    2662
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from panning.errors import UserError
from panning.masks import prunable_parameters
from panning.screening.pruning import StepContext, register_method
from panning.screening.scores import _buffers, _check_plain

Batch = tuple[torch.Tensor, torch.Tensor]


def meta_gradients(
    model: nn.Module,
    batches: Sequence[Batch],
    inner_lr: float,
    masks: Mapping[str, torch.Tensor] | None = None,
    parameters: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """``∂L/∂c`` at ``c = 1``: ``L`` is the loss on ``batches[-1]`` after one SGD step (rate
    ``inner_lr``) on each of the others, every step taken through the masked weights ``θ ⊙ c ⊙ m``.

    The model itself is left unchanged (the steps act on copies; running statistics too).

    Examples:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> data = [(torch.randn(8, 3), torch.arange(8) % 2) for _ in range(3)]
        >>> sorted(meta_gradients(net, data, inner_lr=0.1))
        ['0.weight', '2.weight']
    """
    if len(batches) < 1:
        raise UserError("ProsPr needs at least one batch for the loss after the inner steps")
    if not inner_lr >= 0:
        raise UserError(f"inner_lr must be non-negative, got {inner_lr}")
    _check_plain(model)
    prunable = prunable_parameters(model, parameters)
    multipliers = {name: torch.ones_like(w, requires_grad=True) for name, w in prunable.items()}
    current = {name: p.detach().clone().requires_grad_(True) for name, p in model.named_parameters()}
    buffers = _buffers(model)

    def loss_at(params: Mapping[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        effective = dict(params)
        for name, c in multipliers.items():
            mask = masks[name].to(c.dtype) if masks is not None else 1.0
            effective[name] = params[name] * c * mask
        logits = functional_call(model, {**buffers, **effective}, (batch[0],))
        return nn.functional.cross_entropy(logits, batch[1].long())

    params: dict[str, torch.Tensor] = current
    for batch in batches[:-1]:
        loss = loss_at(params, batch)
        names = list(params)
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True, allow_unused=True)
        params = {n: p if g is None else p - inner_lr * g for n, p, g in zip(names, params.values(), grads)}
    final = loss_at(params, batches[-1])
    if not bool(torch.isfinite(final)):
        raise UserError("prospr: the loss after the inner steps is NaN or Inf; lower inner_lr")
    names = list(multipliers)
    grads = torch.autograd.grad(final, [multipliers[n] for n in names], allow_unused=True)
    return {n: torch.zeros_like(multipliers[n]) if g is None else g.detach() for n, g in zip(names, grads)}


@dataclass
class ProsPr:
    """``method="prospr"``: ``|meta-gradient|`` through ``inner_steps`` SGD steps of rate ``inner_lr``."""

    inner_steps: int = 3
    inner_lr: float = 0.1
    default_iterations: int = 1
    data_driven: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.inner_steps, bool) or not isinstance(self.inner_steps, int) or self.inner_steps < 0:
            raise UserError(f"inner_steps must be a non-negative integer, got {self.inner_steps!r}")
        if not (isinstance(self.inner_lr, (int, float)) and self.inner_lr >= 0):
            raise UserError(f"inner_lr must be a non-negative number, got {self.inner_lr!r}")

    def __call__(self, model: nn.Module, context: StepContext) -> dict[str, torch.Tensor]:
        batches = [context.batch() for _ in range(self.inner_steps + 1)]
        gradients = meta_gradients(model, batches, float(self.inner_lr), context.masks, context.parameters)
        return {name: g.abs() for name, g in gradients.items()}


@register_method("prospr")
def _prospr(inner_steps: int = 3, inner_lr: float = 0.1) -> ProsPr:
    return ProsPr(inner_steps, inner_lr)


__all__ = ["ProsPr", "meta_gradients"]
