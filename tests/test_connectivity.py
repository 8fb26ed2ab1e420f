from __future__ import annotations

import pytest
import torch
from torch import nn

import panning
from conftest import ConvBN
from panning.masks import Masks


def _chain() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))


def test_weights_off_every_path_are_not_effective() -> None:
    net = _chain()
    masks = Masks(
        {
            "0.weight": torch.tensor([[True, True, False], [False, False, True]]),
            "2.weight": torch.tensor([[True, False], [False, False]]),  # hidden unit 1 leads nowhere
            "4.weight": torch.tensor([[False, True]]),  # and unit 0 of layer 2 is never read
        }
    )
    effective = panning.effective_masks(net, masks, input_shape=(3,))
    # Only path would be x -> h0 -> g0 -> out, but out reads g1: nothing is connected.
    assert effective.kept() == 0
    report = panning.connectivity(net, masks, input_shape=(3,))
    assert report.collapsed and report.effective_sparsity == 1.0
    assert report.nominal_sparsity == 1 - 5 / 12


def test_a_weight_fed_only_by_a_bias_is_not_effective() -> None:
    net = _chain()
    masks = Masks(
        {
            "0.weight": torch.tensor([[True, False, False], [False, False, False]]),
            "2.weight": torch.tensor([[True, True], [False, False]]),  # (0, 1) reads h1, fed by a bias only
            "4.weight": torch.tensor([[True, False]]),
        }
    )
    effective = panning.effective_masks(net, masks, input_shape=(3,))
    assert effective["2.weight"].tolist() == [[True, False], [False, False]]
    assert panning.effective_sparsity(net, masks, input_shape=(3,)) == 1 - 3 / 12


def test_full_masks_are_fully_effective_through_batch_norm_and_residuals() -> None:
    for net, shape in ((ConvBN(), (1, 6, 6)), (panning.models.create("resnet20", 3, 10, 32), (3, 32, 32))):
        full = Masks.ones_like(net)
        assert panning.connectivity(net, full, input_shape=shape).effective == full.total()


def test_a_layer_with_no_kept_weight_is_reported_as_collapsed() -> None:
    net = _chain()
    masks = Masks.ones_like(net)
    masks["2.weight"] = torch.zeros(2, 2, dtype=torch.bool)
    report = panning.connectivity(net, masks, input_shape=(3,))
    assert report.collapsed_layers == ["0.weight", "2.weight", "4.weight"]


def test_input_shape_can_come_from_mask_metadata() -> None:
    net = _chain()
    masks = Masks.ones_like(net)
    masks.metadata["input_shape"] = [3]
    assert panning.effective_sparsity(net, masks) == 0.0


def test_max_pooling_counts_every_path_not_only_the_argmax() -> None:
    def net(pool: type[nn.Module]) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            pool(2),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.ReLU(),
            pool(2),
            nn.Flatten(),
            nn.Linear(16, 3),
        )

    with_max, with_avg = net(nn.MaxPool2d), net(nn.AvgPool2d)  # the same edges
    for seed in range(30):
        masks = panning.masks.select_topk(panning.scores.random(with_max, torch.Generator().manual_seed(seed)), 25)
        assert panning.effective_masks(with_max, masks, input_shape=(1, 8, 8)).equal(
            panning.effective_masks(with_avg, masks, input_shape=(1, 8, 8))
        )


def test_layer_and_group_norm_do_not_hide_paths() -> None:
    for norm in (nn.LayerNorm(8), nn.GroupNorm(2, 8)):
        net = nn.Sequential(nn.Linear(4, 8), norm, nn.ReLU(), nn.Linear(8, 3))
        assert panning.effective_sparsity(net, Masks.ones_like(net), input_shape=(4,)) == 0.0


@pytest.mark.parametrize("clamp", [nn.ReLU6, nn.Hardtanh, nn.Hardsigmoid])
def test_a_clamping_activation_counts_paths_like_a_relu_and_synflow_scores_through_it(clamp: type) -> None:
    torch.manual_seed(0)
    chain = nn.Sequential(nn.Linear(64, 16), clamp(), nn.Linear(16, 2))
    masks = Masks.ones_like(chain)
    masks["0.weight"][1:] = False
    masks["0.weight"][1:, 0] = True  # unit 0 reads 64 inputs, the others one: its count passes every bound
    assert panning.effective_sparsity(chain, masks, input_shape=(64,)) == masks.sparsity()
    net = nn.Sequential(nn.Conv2d(3, 16, 3), clamp(), nn.Conv2d(16, 16, 3), clamp(), nn.Flatten(), nn.Linear(256, 4))
    assert panning.effective_sparsity(net, Masks.ones_like(net), input_shape=(3, 8, 8)) == 0.0
    masks = panning.prune(net, 0.9, "synflow", input_shape=(3, 8, 8))
    assert not masks.metadata["collapsed"] and all(bool(mask.any()) for mask in masks.values())


def test_batch_norm_counts_at_unit_scale() -> None:
    net = ConvBN()
    with torch.no_grad():
        net.bn.weight[0] = 0.0  # a learned zero scale does not remove the channel's paths
        net.bn.running_mean.fill_(5.0)
    full = Masks.ones_like(net)
    assert panning.connectivity(net, full, input_shape=(1, 6, 6)).effective == full.total()


def test_an_empty_residual_branch_does_not_cut_a_resnet() -> None:
    net = panning.models.create("resnet20", 3, 10, 32)
    masks = Masks.ones_like(net)
    masks["layer1.0.conv2.weight"] = torch.zeros_like(masks["layer1.0.conv2.weight"])
    report = panning.connectivity(net, masks, input_shape=(3, 32, 32))
    assert not report.collapsed
    assert "layer1.0.conv2.weight" in report.collapsed_layers and "layer1.0.conv1.weight" in report.collapsed_layers


def test_a_model_with_masks_applied_is_analysed_as_it_stands_and_left_as_it_is() -> None:
    net = _chain()
    masks = Masks.ones_like(net)
    first = next(iter(masks))
    masks[first][0] = False
    expected = panning.connectivity(_chain(), masks, input_shape=(3,))
    inputs = torch.rand(16, 3)
    signal = panning.input_signal(net, masks, inputs)
    panning.masks.apply(net, masks)
    assert panning.connectivity(net, masks, input_shape=(3,)) == expected
    assert panning.input_signal(net, masks, inputs) == signal
    assert panning.masks.applied(net).kept() == masks.kept()  # still applied, still training-ready


def _gated_net(bias: float) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.abs_()
        net[0].bias.fill_(bias)
    return net


def test_a_connected_mask_whose_units_are_all_off_does_not_respond_and_sgd_cannot_revive_it() -> None:
    inputs = torch.rand(64, 4)
    labels = (inputs[:, 0] > 0.5).long()
    masks = Masks.ones_like(_gated_net(0.0))
    masks["0.weight"][:, 1:] = False
    assert panning.input_signal(_gated_net(0.0), masks, inputs) > 0
    net = _gated_net(-100.0)
    assert panning.connectivity(net, masks, input_shape=(4,)).effective_sparsity < 1  # structurally connected
    assert panning.input_signal(net, masks, inputs) == 0
    panning.masks.apply(net, masks)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    for _ in range(50):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(inputs), labels).backward()
        optimizer.step()
    outputs = net(inputs).detach()
    assert torch.equal(outputs, outputs[:1].expand_as(outputs))  # still one constant prediction


def test_input_signal_looks_at_every_batch_compares_with_the_unmasked_network_and_refuses_bad_inputs() -> None:
    net = _gated_net(-1.0)
    masks = Masks.ones_like(net)
    quiet, loud = torch.zeros(600, 4), torch.full((1, 4), 10.0)  # only the last input turns a unit on
    assert panning.input_signal(net, masks, quiet) == 0
    assert panning.input_signal(net, masks, torch.cat([quiet, loud]), batch_size=512) == 1.0  # unmasked: all of it
    torch.manual_seed(0)
    wide = nn.Sequential(nn.Linear(50, 50), nn.ReLU(), nn.Linear(50, 3))
    inputs = torch.randn(256, 50)
    sparse = Masks.ones_like(wide)
    sparse["0.weight"] = torch.rand(50, 50) < 0.1
    sparser = Masks({**sparse, "2.weight": sparse["2.weight"] & (torch.rand(3, 50) < 0.1)})
    assert 0 < panning.input_signal(wide, sparser, inputs) < panning.input_signal(wide, sparse, inputs) < 1
    with pytest.raises(ValueError, match="at least two inputs"):
        panning.input_signal(net, masks, torch.zeros(1, 4))
