"""Layer-wise random baselines: ERK's densities as its paper defines them, uniform counts, exact K."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import panning
from panning.screening.layerwise import erk_densities, layer_counts


def test_erk_densities_follow_the_rule_computed_by_hand() -> None:
    shapes = {"conv": (20, 1, 5, 5), "fc": (10, 500)}
    densities = erk_densities(shapes, 0.1)
    epsilon = 0.1 * 5500 / ((20 + 1 + 5 + 5) + (10 + 500))  # Σ raw·size = 31 + 510
    assert densities["conv"] == pytest.approx(epsilon * 31 / 500)
    assert densities["fc"] == pytest.approx(epsilon * 510 / 5000)
    without_kernel = erk_densities(shapes, 0.1, kernel=False)
    assert without_kernel["conv"] == pytest.approx(0.1 * 5500 / (21 / 20 * 500 + 510) * 21 / 20)  # ER: no kernel terms


def test_erk_keeps_a_layer_dense_that_would_pass_one_and_rescales_the_others() -> None:
    shapes = {"tiny": (3, 2), "mid": (50, 40), "big": (400, 300)}
    densities = erk_densities(shapes, 0.05)
    assert densities["tiny"] == 1.0
    sizes = {"tiny": 6, "mid": 2000, "big": 120000}
    assert sum(densities[n] * sizes[n] for n in sizes) == pytest.approx(0.05 * sum(sizes.values()))
    assert densities["mid"] < 1
    ratio = (densities["mid"] / (90 / 2000)) / (densities["big"] / (700 / 120000))
    assert ratio == pytest.approx(1.0)  # the uncapped layers keep ERK's proportions


def test_layer_counts_add_up_exactly_and_never_exceed_a_layer() -> None:
    counts = layer_counts({"a": 3, "b": 1000}, {"a": 1.0, "b": 0.0105}, 14)
    assert counts == {"a": 3, "b": 11} and sum(counts.values()) == 14
    with pytest.raises(ValueError, match="cannot keep 2000 of 1003 weights"):
        layer_counts({"a": 3, "b": 1000}, {"a": 1.0, "b": 1.0}, 2000)


@pytest.mark.parametrize("method", ["uniform", "erk"])
@pytest.mark.parametrize("sparsity", [0.5, 0.99, 0.999])
def test_exact_k_seeded_and_random_within_layers(method: str, sparsity: float) -> None:
    model = panning.models.create("lenet5")
    masks = panning.prune(model, sparsity, method, input_shape=(1, 28, 28), seed=3)
    assert masks.kept() == max(1, round((1 - sparsity) * masks.total()))
    again = panning.prune(model, sparsity, method, input_shape=(1, 28, 28), seed=3)
    other = panning.prune(model, sparsity, method, input_shape=(1, 28, 28), seed=4)
    assert all(torch.equal(masks[n], again[n]) for n in masks)
    assert any(not torch.equal(masks[n], other[n]) for n in masks)
    assert {n: int(masks[n].sum()) for n in masks} == {n: int(other[n].sum()) for n in masks}  # counts fixed


def test_uniform_keeps_the_same_fraction_of_every_layer() -> None:
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10)
    )
    masks = panning.prune(model, 0.9, "uniform", input_shape=(1, 28, 28))
    assert {n: int(masks[n].sum()) for n in masks} == {"1.weight": 23520, "3.weight": 3000, "5.weight": 100}
