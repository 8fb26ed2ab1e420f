from __future__ import annotations

import json
import os
import stat
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from torch import nn

import panning
from panning import masks as masklib
from panning.masks import Masks, kept_count, select_topk


def test_kept_count_follows_the_spec_formula() -> None:
    assert kept_count(430_500, 0.999) == 431
    assert kept_count(100, 0.999) == 1  # round(0.1) is 0: at least one is kept
    assert kept_count(10, 0.0) == 10
    with pytest.raises(ValueError, match="outside"):
        kept_count(10, 1.0)


def test_select_topk_keeps_exactly_k_and_breaks_ties_by_position() -> None:
    scores = {"a": torch.tensor([1.0, 3.0, 3.0]), "b": torch.tensor([[3.0, 0.5], [3.0, 2.0]])}
    masks = select_topk(scores, keep=3)
    assert masks.kept() == 3
    # Four weights tie at 3.0; the three that come first (a[1], a[2], b[0,0]) win.
    assert masks["a"].tolist() == [False, True, True]
    assert masks["b"].tolist() == [[True, False], [False, False]]


@pytest.mark.parametrize("keep", [1, 40, 500, 961, 1000])
def test_select_topk_matches_a_stable_sort_whichever_way_it_finds_the_threshold(keep: int) -> None:
    scores = torch.randint(0, 50, (1000,), generator=torch.Generator().manual_seed(keep)).double()
    order = sorted(range(1000), key=lambda i: (-float(scores[i]), i))  # highest first, ties by position
    expected = torch.zeros(1000, dtype=torch.bool)
    expected[order[:keep]] = True
    assert torch.equal(select_topk({"w": scores}, keep)["w"], expected)


def _stable_topk(scores: torch.Tensor, keep: int) -> torch.Tensor:
    order = torch.sort(-scores, stable=True).indices  # highest first, ties by position
    expected = torch.zeros(scores.numel(), dtype=torch.bool)
    expected[order[:keep]] = True
    return expected


@pytest.mark.parametrize("keep", [20, 4_000, 20_000, 39_000, 39_990])
@pytest.mark.parametrize("layout", ["spread", "ties", "layered", "infinite"])
def test_select_topk_is_exact_when_a_sample_brackets_the_threshold(keep: int, layout: str) -> None:
    generator = torch.Generator().manual_seed(keep)
    scores = torch.randn(40_000, generator=generator, dtype=torch.float64)
    if layout == "ties":
        scores = scores.round()
    elif layout == "layered":  # one block far above the other, as with per-layer score scales
        scores[:10_000] += 100.0
    elif layout == "infinite":  # pruned weights without regrowth
        scores[::3] = float("-inf")
    assert torch.equal(select_topk({"w": scores}, keep)["w"], _stable_topk(scores, keep))


def test_select_topk_is_exact_when_the_sample_misleads() -> None:
    # Every sampled position holds 0 and every other one holds 1: the bracket misses and the
    # selection falls back to all the scores.
    scores = torch.ones(1 << 16)
    scores[:: (1 << 16) // 4096] = 0.0
    for keep in (30_000, 62_000, 63_000):
        assert torch.equal(select_topk({"w": scores}, keep)["w"], _stable_topk(scores, keep))


def test_select_topk_is_exact_under_massive_ties() -> None:
    scores = {"w": torch.zeros(1000), "v": torch.ones(10)}
    for keep in (1, 5, 10, 11, 500, 1010):
        assert select_topk(scores, keep).kept() == keep
    assert select_topk(scores, 10)["v"].all()


def test_layer_scope_keeps_the_same_fraction_per_layer() -> None:
    scores = {"a": torch.arange(100.0), "b": torch.arange(1000.0)}
    masks = select_topk(scores, keep=110, scope="layer")
    assert masks["a"].sum() == 10 and masks["b"].sum() == 100


def test_nan_scores_are_refused_with_the_parameter_name() -> None:
    with pytest.raises(ValueError, match="'bad'"):
        select_topk({"bad": torch.tensor([1.0, float("nan")])}, 1)


def test_infinite_scores_of_both_signs_are_not_mistaken_for_nan() -> None:
    # Their sum is NaN, which alone must not condemn them.
    masks = select_topk({"w": torch.tensor([float("-inf"), 2.0, float("inf"), 1.0])}, 2)
    assert masks["w"].tolist() == [False, True, True, False]


def test_masks_validate_on_write() -> None:
    masks = Masks({"w": torch.tensor([True, False])})
    with pytest.raises(ValueError, match="shape"):
        masks["w"] = torch.tensor([True, False, True])
    with pytest.raises(ValueError, match="other than 0 and 1"):
        masks["x"] = torch.tensor([0.5])
    with pytest.raises(TypeError):
        masks["y"] = [True]  # type: ignore[assignment]
    masks["z"] = torch.tensor([1, 0])
    assert masks["z"].dtype == torch.bool
    assert masks.sparsity() == pytest.approx(0.5) and masks.density() == pytest.approx(0.5)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def test_applied_masks_hold_through_forward_and_sgd_with_momentum_and_weight_decay() -> None:
    net = _net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    weight_before = net[0].weight
    masks = select_topk(panning.scores.random(net, torch.Generator().manual_seed(1)), keep=12)
    masklib.apply(net, masks)
    assert net[0].weight_orig is weight_before  # the optimizer still holds the same parameter
    for _ in range(5):
        loss = net(torch.randn(8, 6)).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for name, mask in masks.items():
            module = net.get_submodule(name.rsplit(".", 1)[0])
            assert torch.all(module.weight_orig[~mask] == 0)
    net(torch.randn(1, 6))
    assert torch.all(net[0].weight[~masks["0.weight"]] == 0)
    assert masklib.applied(net).equal(masks)
    state = masklib.dense_state_dict(net)
    assert int((state["0.weight"] != 0).sum() + (state["2.weight"] != 0).sum()) == masks.kept()
    masklib.remove(net)
    assert sorted(n for n, _ in net.named_parameters()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert torch.all(net[0].weight[~masks["0.weight"]] == 0)


def test_applying_again_replaces_the_mask() -> None:
    net = _net()
    first = Masks.ones_like(net)
    masklib.apply(net, first)
    second = select_topk(panning.scores.magnitude(net), keep=3)
    masklib.apply(net, second)
    assert masklib.applied(net).kept() == 3


def test_save_and_load_round_trip_with_metadata(tmp_path: Path) -> None:
    masks = select_topk(panning.scores.magnitude(_net()), keep=7)
    masks.metadata["method"] = "magnitude"
    path = tmp_path / "m.safetensors"
    masklib.save(masks, path, metadata={"seed": 3, "model": "toy"})
    loaded = masklib.load(path)
    assert loaded.equal(masks)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, "written files follow the umask, not mkstemp's 0600"
    assert loaded.metadata["method"] == "magnitude" and loaded.metadata["seed"] == 3
    assert loaded.metadata["kept"] == 7 and loaded.metadata["version"] == panning.__version__
    assert loaded.metadata["shapes"] == {"0.weight": [5, 6], "2.weight": [3, 5]}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_mask_for_another_model_names_the_parameter(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    masklib.save(Masks.ones_like(_net()), path)
    other = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="'0.weight'"):
        masklib.apply(other, masklib.load(path))


def test_corrupt_mask_file_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(panning.UserError, match="not a readable mask file"):
        masklib.load(path)
    with pytest.raises(panning.UserError, match="no mask file"):
        masklib.load(tmp_path / "missing.safetensors")
    run = tmp_path / "run"
    run.mkdir()
    masklib.save(Masks({"w": torch.tensor([True])}), run / "masks.safetensors")
    with pytest.raises(panning.UserError, match=f"is a folder, not a mask file; pass {run / 'masks.safetensors'}"):
        masklib.load(run)  # a run folder
    from safetensors.torch import save_file

    agent = tmp_path / "agent.zip"
    agent.write_bytes(b"PK\x03\x04 an agent")
    with pytest.raises(panning.UserError, match="an agent[?] show it with `panning agent info`"):
        masklib.load(agent)
    save_file({}, str(path))  # a valid file with no tensors: each command would fail its own way
    with pytest.raises(panning.UserError, match="holds no masks"):
        masklib.load(path)


def test_a_failed_save_leaves_the_old_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.safetensors"
    masklib.save(Masks({"w": torch.tensor([True])}), path)
    before = path.read_bytes()

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(masklib, "save_file", broken)
    with pytest.raises(ValueError, match=r"cannot write .*m.safetensors: disk full"):
        masklib.save(Masks({"w": torch.tensor([False])}), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_prunable_parameters_count_a_shared_module_once() -> None:
    shared = nn.Linear(4, 4)
    net = nn.Sequential(shared, nn.ReLU(), shared, nn.Conv1d(1, 2, 3))
    assert list(masklib.prunable_parameters(net)) == ["0.weight", "3.weight"]
    with pytest.raises(ValueError, match="no prunable layer"):
        masklib.prunable_parameters(nn.Sequential(nn.ReLU()))


def test_density_schedules() -> None:
    exp = masklib.density_schedule(0.99, 4)
    assert exp[-1] == pytest.approx(0.01) and all(a > b for a, b in pairwise(exp))
    lin = masklib.density_schedule(0.9, 3, "linear")
    assert lin == pytest.approx([0.7, 0.4, 0.1])
    with pytest.raises(ValueError, match="schedule"):
        masklib.density_schedule(0.9, 3, "cubic")
    assert json.dumps(exp)  # plain floats


def test_layer_quotas_sum_to_keep() -> None:
    assert masklib.layer_quotas([3, 3, 3], 4) == [2, 1, 1]
    assert masklib.layer_quotas([3, 3, 3], 1) == [1, 0, 0]
    assert masklib.layer_quotas([500, 25000, 400000, 5000], 431) == [1, 25, 400, 5]
    masks = select_topk({"a": torch.rand(3), "b": torch.rand(3), "c": torch.rand(3)}, keep=4, scope="layer")
    assert masks.kept() == 4


def test_mask_file_with_non_object_metadata_is_a_user_error(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file({"w": torch.tensor([True])}, str(path), metadata={"panning": "[1, 2]"})
    with pytest.raises(panning.UserError, match="not a JSON object"):
        masklib.load(path)


def test_select_topk_reads_views_of_one_vector_as_it_reads_separate_scores() -> None:
    flat = torch.randn(50_000, generator=torch.Generator().manual_seed(3))
    views = {"a": flat[:30_000].reshape(300, 100), "b": flat[30_000:].reshape(20_000)}
    copies = {name: view.clone() for name, view in views.items()}
    partial = {"a": flat[:30_000].reshape(300, 100), "b": flat[40_000:]}  # skips part of the vector
    for keep in (100, 25_000, 49_000):
        chosen = select_topk(views, keep)
        assert all(torch.equal(chosen[n], select_topk(copies, keep)[n]) for n in views)
        assert select_topk(partial, min(keep, 40_000)).kept() == min(keep, 40_000)
    assert torch.equal(flat, torch.cat([copies["a"].reshape(-1), copies["b"]]))  # the scores stay unchanged


def test_a_saved_mask_keeps_the_sparsity_it_was_screened_for_until_it_changes(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(7, 3), nn.ReLU(), nn.Linear(3, 2))
    masks = panning.prune(net, 0.5, "magnitude", input_shape=(1, 7))  # 27 weights: 14 kept, 0.4815 reached
    masklib.save(masks, tmp_path / "m.safetensors")
    assert masklib.load(tmp_path / "m.safetensors").metadata["sparsity"] == 0.5
    masks["1.weight"][:] = False  # changed after screening: the file says what it holds now
    masklib.save(masks, tmp_path / "m.safetensors")
    assert masklib.load(tmp_path / "m.safetensors").metadata["sparsity"] == masks.sparsity() > 0.5


def test_mask_metadata_of_numpy_values_and_clones_stay_what_they_were(tmp_path: Path) -> None:
    import numpy as np

    masks = Masks({"w": torch.tensor([True, False])}, metadata={"n": np.int64(3), "x": np.float32(0.5), "o": {"k": 1}})
    twin = masks.clone()
    twin.metadata["o"]["k"] = 2
    assert masks.metadata["o"] == {"k": 1}  # a deep copy, metadata too
    masklib.save(masks, tmp_path / "m.safetensors")
    loaded = masklib.load(tmp_path / "m.safetensors").metadata
    assert (loaded["n"], loaded["x"]) == (3, 0.5)  # numbers, not the text '3' and '0.5'
