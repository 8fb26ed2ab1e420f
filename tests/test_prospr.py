"""ProsPr: the meta-gradient through the inner SGD steps, checked against finite differences."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

import panning
from panning.screening.prospr import meta_gradients


def _loss_after_steps(net: nn.Module, batches: list, lr: float, multipliers: dict[str, torch.Tensor]) -> float:
    """The same inner loop written out plainly, as a function of the multipliers only."""
    params = {n: p.detach().clone() for n, p in net.named_parameters()}

    def loss(p: dict[str, torch.Tensor], batch: tuple) -> torch.Tensor:
        effective = {n: p[n] * multipliers[n] if n in multipliers else p[n] for n in p}
        return nn.functional.cross_entropy(functional_call(net, effective, (batch[0],)), batch[1])

    for batch in batches[:-1]:
        live = {n: v.requires_grad_(True) for n, v in params.items()}
        grads = torch.autograd.grad(loss(live, batch), list(live.values()))
        params = {n: (v - lr * g).detach() for (n, v), g in zip(live.items(), grads)}
    return float(loss(params, batches[-1]))


def test_meta_gradient_matches_finite_differences_on_a_two_layer_net() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    batches = [(torch.randn(8, 3, dtype=torch.float64), torch.arange(8) % 2) for _ in range(3)]
    lr = 0.5
    analytic = meta_gradients(net, batches, lr)
    ones = {n: torch.ones_like(p) for n, p in net.named_parameters() if n.endswith("weight")}
    eps = 1e-6
    for name, index in (("0.weight", (1, 2)), ("2.weight", (0, 3)), ("0.weight", (3, 0))):
        up = {n: m.clone() for n, m in ones.items()}
        down = {n: m.clone() for n, m in ones.items()}
        up[name][index] += eps
        down[name][index] -= eps
        numeric = (_loss_after_steps(net, batches, lr, up) - _loss_after_steps(net, batches, lr, down)) / (2 * eps)
        assert float(analytic[name][index]) == pytest.approx(numeric, rel=1e-5, abs=1e-9)
    without_steps = meta_gradients(net, batches[-1:], lr)  # no inner step: SNIP's signed gradient
    weight = net[0].weight.detach()
    snip = panning.scores.snip(net, inputs=batches[-1][0], targets=batches[-1][1])["0.weight"]
    assert torch.allclose(without_steps["0.weight"].abs(), snip, atol=1e-12)
    assert weight.equal(net[0].weight.detach())  # the model is left unchanged


@pytest.mark.parametrize("sparsity", [0.9, 0.99])
def test_prospr_keeps_exactly_k_and_is_seeded(sparsity: float) -> None:
    model = panning.models.create("lenet5")
    x, y = torch.randn(60, 1, 28, 28), torch.arange(60) % 10
    masks = panning.prune(model, sparsity, "prospr", data=(x, y), samples_per_class=2, inner_steps=1, seed=1)
    again = panning.prune(model, sparsity, "prospr", data=(x, y), samples_per_class=2, inner_steps=1, seed=1)
    assert masks.kept() == round((1 - sparsity) * masks.total())
    assert all(torch.equal(masks[n], again[n]) for n in masks)
    with pytest.raises(ValueError, match="inner_lr must be a non-negative number"):
        panning.prune(model, sparsity, "prospr", data=(x, y), inner_lr=-1.0)
