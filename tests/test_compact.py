"""Compaction, sparse kernels, cost counts and the small model file (issue #7)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from torch import nn

import panning
from panning import masks as masklib
from panning.cli import cli
from panning.compaction import apply_plan, compact, compact_with_plan
from panning.compaction.sparse import (
    SparseLinear,
    load_sparse,
    model_costs,
    read_sparse_metadata,
    save_sparse,
    use_sparse_kernels,
)
from panning.training import TrainConfig, build, train

SHAPES = {"lenet300": (1, 28, 28), "lenet5": (1, 28, 28), "vgg11": (3, 32, 32), "resnet20": (3, 32, 32)}


def _model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    shape = SHAPES[name]
    return panning.models.create(name, in_channels=shape[0], num_classes=10, image_size=shape[1])


def _random_masks(model: nn.Module, density: float, seed: int = 0) -> panning.Masks:
    generator = torch.Generator().manual_seed(seed)
    return panning.Masks(
        {n: torch.rand(p.shape, generator=generator) < density for n, p in masklib.prunable_parameters(model).items()}
    )


def _masked(model: nn.Module, masks: panning.Masks) -> nn.Module:
    return masklib.apply(copy.deepcopy(model), masks)


def _outputs_agree(a: nn.Module, b: nn.Module, shape: tuple[int, ...], train_mode: bool = False) -> None:
    x = torch.randn(16, *shape, generator=torch.Generator().manual_seed(1))
    a.train(train_mode)
    b.train(train_mode)
    with torch.no_grad():
        expected, got = a(x), b(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("density", [0.02, 0.002])
def test_compact_model_computes_the_masked_function_and_is_smaller(name: str, density: float) -> None:
    model = _model(name)
    masks = _random_masks(model, density)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small, carried, plan, report = compact_with_plan(model, masks, SHAPES[name])
    assert plan, "random masks this sparse leave dead units"
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    assert carried.kept() == report.kept_after <= masks.kept()
    carried.check_fits(small)
    for mode in (False, True):  # eval, and training mode (batch statistics)
        _outputs_agree(_masked(model, masks), masklib.apply(copy.deepcopy(small), carried), SHAPES[name], mode)
    # the input model is left unchanged
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not masklib.applied(model)


def test_compacting_after_training_keeps_the_trained_function() -> None:
    model = _model("lenet5")
    masks = _random_masks(model, 0.02)
    trained = _masked(model, masks)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        x, y = torch.randn(32, 1, 28, 28, generator=generator), torch.randint(0, 10, (32,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(trained(x), y).backward()
        optimizer.step()
    small, carried = compact(trained, masks)  # masks applied to the model are taken into account
    _outputs_agree(trained, masklib.apply(small, carried), (1, 28, 28))


def test_training_the_compact_model_follows_masked_training() -> None:
    model = _model("lenet300")
    masks = _random_masks(model, 0.02)
    masked = _masked(model, masks)
    small, carried = compact(model, masks, (1, 28, 28))
    small = masklib.apply(small, carried)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(32, 1, 28, 28, generator=generator), torch.randint(0, 10, (32,), generator=generator))]
    for net in (masked, small):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
        for x, y in batches * 3:
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()
    _outputs_agree(masked, small, (1, 28, 28))


def test_a_forward_dead_unit_is_folded_into_the_next_bias() -> None:
    net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        net[0].bias.copy_(torch.tensor([0.5, 0.7]))
    masks = {
        "0.weight": torch.tensor([[True, True, False], [False, False, False]]),
        "2.weight": torch.ones(2, 2).bool(),
    }
    small, carried, plan, report = compact_with_plan(net, masks, (3,))
    assert report.folded == 1 and plan["0"]["out"] == [0] and small[2].in_features == 1
    _outputs_agree(_masked(net, panning.Masks(masks)), masklib.apply(small, carried), (3,))


def test_a_folded_constant_includes_a_number_added_after_the_activation() -> None:
    class PlusOne(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x)) + 1.0)

    net = PlusOne()
    with torch.no_grad():
        net.a.bias.copy_(torch.tensor([0.5, 0.7]))
    masks = {
        "a.weight": torch.tensor([[True, True, False], [False, False, False]]),
        "b.weight": torch.ones(2, 2).bool(),
    }
    small, carried, _, report = compact_with_plan(net, masks, (3,))
    assert report.folded == 1 and small.b.in_features == 1
    _outputs_agree(_masked(net, panning.Masks(masks)), masklib.apply(small, carried), (3,))


@pytest.mark.parametrize("groups", [2, 4])
def test_a_grouped_convolution_keeps_its_channels(groups: int) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=groups), nn.ReLU(), nn.Conv2d(4, 3, 1))
    masks = panning.Masks.ones_like(net)
    masks["2.weight"][:, :2] = False  # the grouped layer's first two outputs are read by nobody
    small, carried, plan, _ = compact_with_plan(net, masks, (4, 6, 6))
    assert "0" not in plan and small[0].out_channels == 4
    _outputs_agree(_masked(net, masks), masklib.apply(small, carried), (4, 6, 6))


def test_a_constant_folds_through_in_place_activations_in_every_reader() -> None:
    class TwoReaders(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Linear(8, 6), nn.Linear(6, 4), nn.Linear(6, 4)
            self.act = nn.LeakyReLU(0.1, inplace=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.act(self.a(x))
            return self.b(h) + self.c(h)

    torch.manual_seed(0)
    net = TwoReaders()
    with torch.no_grad():
        net.a.bias.fill_(-0.7)
    masks = panning.Masks.ones_like(net)
    masks["a.weight"][:3] = False  # three constant units, each read by b and c
    small, carried, _, report = compact_with_plan(net, masks, (8,))
    assert report.folded == 3 and small.b.in_features == 3
    _outputs_agree(_masked(net, masks), masklib.apply(small, carried), (8,))


def test_a_constant_unit_before_batch_norm_or_a_padded_conv_stays() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1))
    with torch.no_grad():
        net[0].bias.fill_(0.3)
    masks = {"0.weight": torch.ones(2, 1, 3, 3).bool(), "2.weight": torch.ones(2, 2, 3, 3).bool()}
    masks["0.weight"][1] = False  # unit 1 is a constant 0.3 that padding makes position-dependent
    small, _, _, report = compact_with_plan(net, masks, (1, 8, 8))
    assert small[0].out_channels == 2 and report.folded == 0


def test_a_unit_feeding_a_residual_sum_is_removed_only_when_dead_in_every_branch() -> None:
    model = _model("resnet20")
    masks = panning.Masks.ones_like(model)
    # channel 3 of stage 1: dead in the branch of block 0, alive in the stem that the identity shortcut carries
    masks["layer1.0.conv2.weight"][3] = False
    _, _, plan, _ = compact_with_plan(model, masks, (3, 32, 32))
    assert "layer1.0.conv2" not in plan
    # dead in every producer of the joined space and read by nobody: removed everywhere
    for name in ("conv1.weight", "layer1.0.conv2.weight", "layer1.1.conv2.weight", "layer1.2.conv2.weight"):
        masks[name][3] = False
    for name in ("layer1.0.conv1.weight", "layer1.1.conv1.weight", "layer1.2.conv1.weight"):
        masks[name][:, 3] = False
    masks["layer2.0.conv1.weight"][:, 3] = False
    masks["layer2.0.shortcut.0.weight"][:, 3] = False
    small, carried, plan, _ = compact_with_plan(model, masks, (3, 32, 32))
    assert 3 not in plan["layer1.0.conv2"]["out"] and len(plan["conv1"]["out"]) == 15
    assert small.layer1[0].bn2.num_features == 15
    _outputs_agree(_masked(model, masks), masklib.apply(small, carried), (3, 32, 32), train_mode=True)


class _Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3)
        self.b = nn.Conv2d(1, 4, 3)
        self.head = nn.Linear(8 * 6 * 6, 10)
        self.tail = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([torch.relu(self.a(x)), self.b(x)], 1)
        x = torch.relu(self.head(x.view(x.size(0), -1)))
        return self.tail(x)


def test_an_unknown_operation_pins_its_channels_and_the_rest_still_compacts() -> None:
    torch.manual_seed(0)
    net = _Concat()
    masks = panning.Masks.ones_like(net)
    masks["a.weight"][1] = False  # behind torch.cat: must stay
    masks["tail.weight"][:, 7] = False  # read by nobody: removed from head
    small, carried, plan, _ = compact_with_plan(net, masks, (1, 8, 8))
    assert set(plan) == {"head", "tail"} and small.a.out_channels == 4 and small.head.out_features == 9
    _outputs_agree(_masked(net, masks), masklib.apply(small, carried), (1, 8, 8))


def test_a_view_after_the_batch_size_works_like_flatten() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4 * 4 * 4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.conv(x)).view(x.size(0), -1))

    torch.manual_seed(0)
    net = Net()
    masks = panning.Masks.ones_like(net)
    masks["fc.weight"][:, 16:32] = False  # channel 1 is read by nobody
    small, carried, plan, _ = compact_with_plan(net, masks, (1, 6, 6))
    assert plan["conv"]["out"] == [0, 2, 3] and small.fc.in_features == 48
    _outputs_agree(_masked(net, masks), masklib.apply(small, carried), (1, 6, 6))


def test_an_untraceable_model_is_a_clear_error() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) if x.sum() > 0 else x

    net = Branchy()
    with pytest.raises(ValueError, match="torch.fx cannot trace"):
        compact(net, panning.Masks.ones_like(net))
    with pytest.raises(ValueError, match="another model"):
        compact(net, {"nope.weight": torch.ones(2, 2).bool()})


def test_apply_plan_rejects_a_plan_for_another_model() -> None:
    with pytest.raises(ValueError, match="does not have"):
        apply_plan(nn.Sequential(nn.Linear(2, 2)), {"5": {"out": [0]}})


def test_sparse_linear_matches_the_masked_layer_and_only_kept_weights_learn() -> None:
    torch.manual_seed(0)
    dense = nn.Linear(20, 6)
    mask = torch.rand(6, 20) < 0.2
    masked = masklib.apply(copy.deepcopy(dense), {"weight": mask})
    sparse = SparseLinear.from_linear(dense, mask)
    x = torch.randn(5, 20)
    torch.testing.assert_close(sparse(x), masked(x))
    sparse(x).square().sum().backward()
    masked(x).square().sum().backward()
    assert sparse.values.grad is not None and sparse.values.numel() == int(mask.sum())
    torch.testing.assert_close(sparse.values.grad, masked.weight_orig.grad[mask])
    torch.testing.assert_close(sparse.bias.grad, masked.bias.grad)


def test_use_sparse_kernels_follows_the_timings() -> None:
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    masks = panning.Masks({"0.weight": torch.eye(8).bool(), "2.weight": torch.ones(2, 8).bool()})
    x = torch.randn(3, 8)
    expected = _masked(net, masks)(x)
    choices = [
        {"layer": "0", "dense_ms": 2.0, "sparse_ms": 1.0},
        {"layer": "2", "dense_ms": 1.0, "sparse_ms": 2.0},
    ]
    net, rest, timings = use_sparse_kernels(copy.deepcopy(net), masks, batch_size=4, choices=choices)
    assert isinstance(net[0], SparseLinear) and isinstance(net[2], nn.Linear)
    assert list(rest) == ["2.weight"] and [t.sparse for t in timings] == [True, False]
    torch.testing.assert_close(masklib.apply(net, rest)(x), expected)


def test_model_costs_count_lenet5_by_hand() -> None:
    model = _model("lenet5")
    costs = model_costs(model, (1, 28, 28))
    # conv1 20x25 at 24x24, conv2 50x20x25 at 8x8, fc3 800x500, fc4 500x10
    assert costs.macs == 20 * 25 * 576 + 50 * 20 * 25 * 64 + 800 * 500 + 500 * 10
    assert costs.params == costs.kept == 431_080
    masks = panning.Masks.ones_like(model)
    masks["fc3.weight"][:, 100:] = False
    masked = model_costs(model, (1, 28, 28), masks)
    assert masked.kept_macs == costs.macs - 700 * 500 and masked.kept == costs.params - 700 * 500


def test_save_sparse_round_trips_and_is_small(tmp_path: Path) -> None:
    model = _model("lenet5")
    masks = _random_masks(model, 0.01)
    small, carried, plan, _ = compact_with_plan(model, masks, (1, 28, 28))
    small = masklib.apply(small, carried)
    path = tmp_path / "small.safetensors"
    save_sparse(small, path, plan, {"model": "lenet5"})
    assert read_sparse_metadata(path)["model"] == "lenet5"
    loaded, loaded_masks = load_sparse(path, _model("lenet5", seed=5))
    assert loaded_masks.equal(carried)
    _outputs_agree(small, loaded, (1, 28, 28))
    assert path.stat().st_size * 20 < 4 * 431_080
    with pytest.raises(ValueError, match="does not fit"):
        load_sparse(path, _model("lenet300"))
    masklib.save(masks, tmp_path / "masks.safetensors")
    with pytest.raises(ValueError, match="export"):
        load_sparse(tmp_path / "masks.safetensors", model)


def test_compact_training_run_records_costs_and_saves_the_small_file(data_root: Path, tmp_path: Path) -> None:
    config = TrainConfig(model="lenet5", dataset="mnist", epochs=1, val_size=50, batch_size=64, compact=True)
    model, data = build(config)
    masks = _random_masks(model, 0.02)
    with pytest.raises(ValueError, match="need masks"):
        train(model, data, config, tmp_path / "dense", progress=False)
    assert not (tmp_path / "dense").exists()
    metrics = train(model, data, config, tmp_path / "run", masks=masks, progress=False)
    costs = metrics["costs"]
    assert costs["compact"]["params"] < costs["dense"]["params"] and costs["compact"]["macs"] < costs["dense"]["macs"]
    assert costs["masked"]["macs"] < costs["compact"]["macs"] and metrics["seconds_per_epoch"] > 0
    assert metrics["compaction"]["units"]["fc3"][1] < 500
    loaded, _ = load_sparse(tmp_path / "run" / "model.safetensors", _model("lenet5"))
    reloaded = panning.training.evaluate(loaded, data, "test", torch.device("cpu"))["accuracy"]
    assert reloaded == pytest.approx(metrics["test_accuracy"], abs=1e-3), "the saved small file is the trained model"


def test_cli_compact_uses_the_initialisation_the_masks_were_screened_on(data_root: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    prune = ["prune", "--model", "lenet5", "--dataset", "mnist", "--method", "random", "--sparsity", "0.9"]
    pruned = runner.invoke(cli, [*prune, "--val-size", "50", "--seed", "3", "--out", str(tmp_path / "m.safetensors")])
    assert pruned.exit_code == 0, pruned.output
    compact = ["compact", "--model", "lenet5", "--dataset", "mnist", "--masks", str(tmp_path / "m.safetensors")]
    assert runner.invoke(cli, [*compact, "--out", str(tmp_path / "own")]).exit_code == 0
    screened = masklib.apply(_model("lenet5", seed=3), masklib.load(tmp_path / "m.safetensors"))
    loaded, _ = load_sparse(tmp_path / "own", _model("lenet5"))
    _outputs_agree(screened, loaded, (1, 28, 28))
    other = runner.invoke(cli, [*compact, "--seed", "4", "--out", str(tmp_path / "other")])
    assert other.exit_code == 0 and "screened on the initialisation of seed 3" in other.output


def test_cli_compact_and_export(data_root: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    mask_file = tmp_path / "m.safetensors"
    model = _model("lenet5")
    masklib.save(_random_masks(model, 0.01), mask_file)
    result = runner.invoke(
        cli,
        ["compact", "--model", "lenet5", "--dataset", "mnist", "--masks", str(mask_file), "--out", str(tmp_path / "c")],
    )
    assert result.exit_code == 0, result.output
    assert "parameters stored: 431080 ->" in result.output and (tmp_path / "c").is_file()
    result = runner.invoke(
        cli,
        [
            "compact",
            "--model",
            "lenet5",
            "--dataset",
            "mnist",
            "--masks",
            str(mask_file),
            "--out",
            str(tmp_path / "t"),
            "--time-batch",
            "4",
        ],
    )
    assert result.exit_code == 0 and "inference at batch 4: masked" in result.output, result.output
    fashion = masklib.load(mask_file)
    fashion.metadata["dataset"] = "fashion-mnist"
    masklib.save(fashion, tmp_path / "f.safetensors")
    args = ["compact", "--model", "lenet5", "--dataset", "mnist", "--masks", str(tmp_path / "f.safetensors")]
    result = runner.invoke(cli, [*args, "--out", str(tmp_path / "fc")])
    assert result.exit_code == 0 and "screened on fashion-mnist, not mnist: pass --dataset" in result.output
    fast = ["--val-size", "50", "--batch-size", "64", "--quiet", "--device", "cpu", "--epochs", "1"]
    common = ["--model", "lenet5", "--dataset", "mnist"]
    assert (
        runner.invoke(cli, ["train", *common, "--masks", str(mask_file), *fast, "--out", str(tmp_path / "r")]).exit_code
        == 0
    )
    result = runner.invoke(cli, ["export", str(tmp_path / "r"), "--out", str(tmp_path / "r.safetensors")])
    assert result.exit_code == 0 and "smaller" in result.output, result.output
    for again in (["export", str(tmp_path / "r")], ["compact", *common, "--masks", str(mask_file)]):
        before = (tmp_path / "r.safetensors").read_bytes()
        refused = runner.invoke(cli, [*again, "--out", str(tmp_path / "r.safetensors")])
        assert refused.exit_code == 2 and "already exists" in refused.output, refused.output
        assert (tmp_path / "r.safetensors").read_bytes() == before
    info = runner.invoke(cli, ["info", str(tmp_path / "r.safetensors")])
    assert info.exit_code == 2 and "a sparse model (from `panning export` or `panning compact`)" in info.output, (
        info.output
    )
    trained = masklib.apply(_model("lenet5"), masklib.load(mask_file))
    state = load_file(tmp_path / "r" / "model.safetensors")
    masklib.remove(trained).load_state_dict(state)
    loaded, _ = load_sparse(tmp_path / "r.safetensors", _model("lenet5"))
    _outputs_agree(trained, loaded, (1, 28, 28))
    assert runner.invoke(cli, ["train", *common, "--dense", *fast, "--out", str(tmp_path / "d")]).exit_code == 0
    result = runner.invoke(cli, ["export", str(tmp_path / "d"), "--out", str(tmp_path / "d.safetensors")])
    assert result.exit_code == 2 and "dense run" in result.output
    result = runner.invoke(cli, ["train", *common, "--dense", "--compact", *fast, "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "need masks" in result.output


def test_export_of_a_sparse_kernel_run_is_compacted_and_computes_the_same(data_root: Path, tmp_path: Path) -> None:
    masklib.save(_random_masks(_model("lenet300"), 0.05), tmp_path / "m.safetensors")
    train = "train --model lenet300 --dataset mnist --sparse-kernels --epochs 1 --val-size 50 --quiet".split()
    result = CliRunner().invoke(cli, [*train, "--masks", str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "r"), "--out", str(tmp_path / "e.safetensors")])
    assert result.exit_code == 0, result.output
    assert read_sparse_metadata(tmp_path / "e.safetensors")["plan"]  # compacted, not the run's file as it was
    trained, _ = load_sparse(tmp_path / "r" / "model.safetensors", _model("lenet300"))
    exported, _ = load_sparse(tmp_path / "e.safetensors", _model("lenet300"))
    assert sum(p.numel() for p in exported.parameters()) < sum(p.numel() for p in trained.parameters())
    _outputs_agree(trained, exported, (1, 28, 28))
