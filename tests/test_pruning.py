from __future__ import annotations

import io
import sys
import warnings
from itertools import pairwise

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import panning
from panning.masks import kept_count

METHODS = ["random", "magnitude", "snip", "grasp", "synflow", "iter-snip"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99, 0.999])
def test_kept_count_is_exact(lenet5, batch, method: str, sparsity: float) -> None:
    iterations = 3 if method in ("synflow", "iter-snip") else None
    masks = panning.prune(lenet5, sparsity, method, data=batch, iterations=iterations, samples_per_class=2)
    assert masks.kept() == kept_count(430_500, sparsity) == round((1 - sparsity) * 430_500)


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_mask_bit_for_bit(lenet5, batch, method: str) -> None:
    def run(seed: int) -> panning.Masks:
        return panning.prune(lenet5, 0.99, method, data=batch, iterations=2, samples_per_class=3, seed=seed)

    first, second = run(0), run(0)
    assert first.equal(second)
    if method in ("random", "snip", "grasp", "iter-snip"):
        assert not first.equal(run(1))


def test_synflow_does_not_collapse_lenet5_at_0999(lenet5) -> None:
    masks = panning.prune(lenet5, 0.999, "synflow", input_shape=(1, 28, 28))
    assert masks.metadata["iterations"] == 100
    assert masks.kept() == 431
    report = panning.connectivity(lenet5, masks, input_shape=(1, 28, 28))
    assert not report.collapsed, report.collapsed_layers
    assert masks.metadata["collapsed_layers"] == []


def test_one_shot_snip_and_grasp_report_their_effective_sparsity(lenet5, batch) -> None:
    for method in ("snip", "grasp"):
        masks = panning.prune(lenet5, 0.999, method, data=batch)
        report = panning.connectivity(lenet5, masks, input_shape=(1, 28, 28))
        assert masks.metadata["nominal_sparsity"] == pytest.approx(1 - 431 / 430_500)
        assert masks.metadata["effective_sparsity"] == report.effective_sparsity
        assert masks.metadata["collapsed_layers"] == report.collapsed_layers
        assert [layer["effective"] for layer in masks.metadata["layers"]] == [l.effective for l in report.layers]


def test_monotone_masks_never_regrow(lenet5, batch) -> None:
    history: list[panning.Masks] = []
    panning.prune(
        lenet5,
        0.99,
        "iter-snip",
        data=batch,
        iterations=4,
        regrowth=False,
        samples_per_class=2,
        callback=lambda record, masks: history.append(masks),
    )
    for earlier, later in pairwise(history):
        for name in earlier:
            assert not torch.any(later[name] & ~earlier[name])
    assert [m.kept() for m in history] == sorted((m.kept() for m in history), reverse=True)


def test_regrowth_lets_weights_come_back(lenet5, batch) -> None:
    history: list[panning.Masks] = []
    panning.prune(
        lenet5,
        0.99,
        "random",
        iterations=3,
        regrowth=True,
        data=batch,
        callback=lambda record, masks: history.append(masks),
    )
    assert any(torch.any(b[n] & ~a[n]) for a, b in pairwise(history) for n in a)


def test_every_step_callback_of_a_list_sees_every_step_and_the_masks_stay_the_same() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    steps: list[int] = []
    kept: list[int] = []
    progress = panning.pruning.ScreeningProgress(4)
    masks = panning.prune(
        net,
        0.9,
        "synflow",
        input_shape=(1, 4, 4),
        iterations=4,
        callback=[lambda record, _: steps.append(record.step), lambda _, m: kept.append(m.kept()), progress],
        progress=True,
    )
    alone = panning.prune(net, 0.9, "synflow", input_shape=(1, 4, 4), iterations=4)
    assert steps == [1, 2, 3, 4] and progress.steps == 4
    assert kept[-1] == masks.kept() and kept == sorted(kept, reverse=True)
    assert masks.digest() == alone.digest()


def test_a_callback_that_cannot_be_called_is_refused_before_screening() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with pytest.raises(panning.UserTypeError, match="callback must be a function"):
        panning.prune(net, 0.5, "magnitude", input_shape=(1, 4, 4), callback="trace.jsonl")


def test_dataloader_input_is_seeded_and_fresh_at_every_step(lenet5, batch) -> None:
    x, y = batch
    shuffled = DataLoader(TensorDataset(x, y), batch_size=25, shuffle=True)

    def run(seed: int) -> panning.Masks:
        return panning.prune(lenet5, 0.99, "iter-snip", data=shuffled, iterations=3, samples_per_class=2, seed=seed)

    assert run(0).equal(run(0)) and not run(0).equal(run(1))
    ordered = DataLoader(TensorDataset(x, y), batch_size=25, shuffle=False)
    source = panning.screening.pruning.BatchSource(ordered, 2, torch.Generator(), num_classes=10)
    first, second = source.next(), source.next()
    assert first[1].bincount().tolist() == [2] * 10
    assert not torch.equal(first[0], second[0])  # the next examples, not the same batch again


def test_dropout_does_not_break_same_seed_same_mask() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.5), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    x, y = torch.randn(20, 8), torch.arange(20) % 2
    state = torch.get_rng_state()
    first = panning.prune(net, 0.8, "snip", data=(x, y), seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is left as it was
    assert first.equal(panning.prune(net, 0.8, "snip", data=(x, y), seed=3))


def test_layer_scope_keeps_exactly_k(lenet5, batch) -> None:
    masks = panning.prune(lenet5, 0.999, "magnitude", data=batch, scope="layer")
    assert masks.kept() == 431 and all(layer.kept >= 1 for layer in masks.layers())


def test_a_model_with_applied_masks_is_refused() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 2))
    panning.masks.apply(net, panning.Masks.ones_like(net))
    with pytest.raises(ValueError, match="masks are applied"):
        panning.prune(net, 0.5, "magnitude", input_shape=(4,))


@pytest.mark.filterwarnings("ignore:some class has only")
def test_user_mistakes(lenet5, batch) -> None:
    with pytest.raises(ValueError, match="data-driven"):
        panning.prune(lenet5, 0.9, "snip")
    with pytest.raises(ValueError, match="unknown method 'snap'; valid: .*grasp"):
        panning.prune(lenet5, 0.9, "snap", data=batch)
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        panning.prune(lenet5, 1.0, "magnitude", data=batch)
    with pytest.raises(ValueError, match="input shape"):
        panning.prune(lenet5, 0.9, "synflow")
    with pytest.raises(ValueError, match="unknown option 'colour' for method 'snip'; valid: temperature$"):
        panning.prune(lenet5, 0.9, "snip", data=batch, colour="red")
    with pytest.raises(ValueError, match="'iteratons' for method 'panning'; valid: .*stages.*did you mean iterations"):
        panning.prune(lenet5, 0.9, "panning", data=batch, iteratons=5)
    with pytest.raises(ValueError, match="valid: temperature; did you mean temperature[?]$"):
        panning.prune(lenet5, 0.9, "snip", data=batch, temprature=5)
    with pytest.raises(ValueError, match="class 10 but the model has 10 outputs"):
        panning.prune(lenet5, 0.9, "grasp", data=(batch[0][:11], torch.arange(11)))
    with pytest.raises(ValueError, match="iterations"):
        panning.prune(lenet5, 0.9, "synflow", data=batch, iterations=0)
    for method in (None, 3, panning.multi_index.Panning):  # not a name, not a method object
        with pytest.raises(TypeError, match="method must be a registered name"):
            panning.prune(lenet5, 0.9, method, data=batch)  # type: ignore[arg-type]
    for seed in ("abc", None, 1.7, -1, 2**64):
        with pytest.raises(ValueError, match="seed must be an integer from 0"):
            panning.prune(lenet5, 0.9, "random", data=batch, seed=seed)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method 'mask-file' needs the option path: -O path="):
        panning.prune(lenet5, 0.9, "mask-file", data=batch)
    with pytest.raises(ValueError, match="mask-file's path must be the path of a mask file, got 5"):
        panning.prune(lenet5, 0.9, "mask-file", data=batch, path=5)
    with pytest.raises(ValueError, match="stages must be one of 'auto', 'agent', 'agent-floor', 'paper'"):
        panning.prune(lenet5, 0.9, "panning", data=batch, stages=5)
    with pytest.raises(ValueError, match=r"the model fails on a batch of inputs of shape \(3, 32, 32\): "):
        panning.prune(lenet5, 0.9, "synflow", input_shape=(3, 32, 32))

    class TupleOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(784, 10)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
            return self.layer(x.flatten(1)), None

    for method in ("snip", "synflow"):
        with pytest.raises(TypeError, match="the model returns a tuple; screening needs forward"):
            panning.prune(TupleOut(), 0.9, method, data=batch)
    records = DataLoader([{"x": x, "y": y} for x, y in zip(*batch)], batch_size=10)
    with pytest.raises(TypeError, match=r"must yield \(inputs, targets\) batches, got a dict"):
        panning.prune(lenet5, 0.9, "snip", data=records)
    for shape in (784, "1,28,28", (1, 0, 28)):
        with pytest.raises(ValueError, match="input_shape must"):
            panning.prune(lenet5, 0.9, "synflow", input_shape=shape)  # type: ignore[arg-type]
    integers = (batch[0].to(torch.uint8), batch[1])
    with pytest.raises(TypeError, match="inputs are torch.uint8 tensors; convert them to float"):
        panning.prune(lenet5, 0.9, "snip", data=integers)
    with pytest.raises(TypeError, match="inputs are torch.uint8 tensors"):
        panning.prune(lenet5, 0.9, "grasp", data=DataLoader(TensorDataset(*integers), batch_size=50))
    assert panning.prune(lenet5, 0.9, "synflow", data=integers, iterations=2).kept() == 43050  # shape only


def test_few_examples_of_a_class_warn_and_use_what_there_is(lenet5) -> None:
    x, y = torch.randn(12, 1, 28, 28), torch.tensor([0] * 10 + [1, 1])
    with pytest.warns(UserWarning, match="only 2 examples"):
        masks = panning.prune(lenet5, 0.9, "snip", data=(x, y), samples_per_class=5)
    assert masks.kept() == kept_count(430_500, 0.9)


def test_sparsity_that_would_keep_nothing_keeps_one_and_warns() -> None:
    net = torch.nn.Linear(10, 10)
    with pytest.warns(UserWarning, match="keeping 1"):
        masks = panning.prune(net, 0.999, "magnitude", input_shape=(10,))
    assert masks.kept() == 1


def test_a_collapsed_mask_warns_and_says_what_keeps_a_path() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 20), torch.nn.ReLU(), torch.nn.Linear(20, 20))
    with torch.no_grad():
        net[0].weight.mul_(1e-3)  # the largest magnitudes are all in the last layer
    with pytest.warns(UserWarning, match=r"magnitude at sparsity 0.99 leaves Sequential no path .*in 0.weight"):
        masks = panning.prune(net, 0.99, "magnitude", input_shape=(20,))
    assert masks.metadata["collapsed"]


class _Attention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(8, 16)
        self.attention = torch.nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        h, _ = self.attention(h, h, h)
        return self.head(h.mean(1))


def test_layers_a_default_screening_leaves_dense_are_named_and_attention_out_proj_is_never_masked() -> None:
    torch.manual_seed(0)
    net = _Attention()
    data = (torch.randn(40, 5, 8), torch.arange(40) % 4)
    with pytest.warns(UserWarning, match=r"768 weights outside nn.Linear .* stay dense \(attention.in_proj_weight\)"):
        masks = panning.prune(net, 0.9, "snip", data=data)
    assert list(masks) == ["embed.weight", "head.weight"]
    panning.masks.apply(net, masks)
    square = torch.ones(16, 16, dtype=torch.bool)
    with pytest.raises(ValueError, match="cannot mask 'attention.out_proj.weight': nn.MultiheadAttention"):
        panning.masks.apply(net, {**masks, "attention.out_proj.weight": square})
    with pytest.raises(ValueError, match="cannot mask 'attention.out_proj.weight'"):
        panning.prune(_Attention(), 0.9, "snip", data=data, parameters=["embed.weight", "attention.out_proj.weight"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # named weights: nothing left to warn about
        panning.prune(_Attention(), 0.9, "snip", data=data, parameters=["embed.weight", "attention.in_proj_weight"])


@pytest.mark.parametrize("method", ["snip", "grasp", "panning"])
def test_a_float64_model_screens_float32_data_and_negative_labels_are_refused(method: str) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(288, 4)).double()
    x, y = torch.randn(40, 3, 8, 8), torch.arange(40) % 4
    masks = panning.prune(net, 0.5, method, data=(x, y), iterations=2)
    assert masks.kept() == kept_count(216 + 1152, 0.5)
    with pytest.raises(ValueError, match="targets must be class indices 0, 1, ..., C-1; got the label -1"):
        panning.prune(net, 0.5, method, data=(x, y - 1), iterations=2)
    loader = DataLoader(TensorDataset(x, y - 1), batch_size=8)
    with pytest.raises(ValueError, match="got the label -1"):
        panning.prune(net, 0.5, method, data=loader, iterations=2)


def test_the_model_is_unchanged_by_prune(lenet5, batch) -> None:
    before = {k: v.clone() for k, v in lenet5.state_dict().items()}
    panning.prune(lenet5, 0.99, "iter-snip", data=batch, iterations=3)
    assert all(torch.equal(v, before[k]) for k, v in lenet5.state_dict().items())
    assert all(p.grad is None for p in lenet5.parameters())


def test_dataloader_batches_include_a_class_that_comes_last() -> None:
    torch.manual_seed(0)
    net = panning.models.create("lenet300")
    targets = torch.cat([torch.arange(90) % 9, torch.full((5,), 9)])  # class 9 only at the very end
    loader = DataLoader(TensorDataset(torch.randn(95, 1, 28, 28), targets), batch_size=20)
    seen: list[torch.Tensor] = []
    original = panning.scores.loss_aware_scores

    def spy(model, inputs, labels, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(labels.clone())
        return original(model, inputs, labels, *args, **kwargs)

    import panning.screening.pruning as pruning_module

    pruning_module.indices.loss_aware_scores = spy  # type: ignore[assignment]
    try:
        panning.prune(net, 0.9, "snip", data=loader, samples_per_class=2)
    finally:
        pruning_module.indices.loss_aware_scores = original  # type: ignore[assignment]
    assert seen[0].bincount(minlength=10).tolist() == [2] * 10


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_screening_shows_its_steps_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    for progress, terminal, shown in ((True, True, True), (True, False, False), (False, True, False)):
        stream = _Terminal() if terminal else io.StringIO()
        monkeypatch.setattr(sys, "stderr", stream)
        panning.prune(net, 0.5, "synflow", input_shape=(1, 4, 4), iterations=3, progress=progress)
        assert ("screening (synflow)" in stream.getvalue() and "/3" in stream.getvalue()) == shown


def test_numpy_and_other_real_sparsities_are_accepted(lenet5: torch.nn.Module) -> None:
    masks = panning.prune(lenet5, np.float32(0.9), "magnitude", input_shape=(1, 28, 28))
    assert masks.kept() == round(0.1 * masks.total()) and isinstance(masks.metadata["sparsity"], float)


def test_a_method_of_ones_own_that_is_not_one_is_named() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(TypeError, match="has no default_iterations: pass iterations=.*fn.default_iterations = 1"):
        panning.prune(net, 0.5, lambda model, context: {}, input_shape=(1, 2, 2))
    with pytest.raises(TypeError, match=r"no data_driven attribute\): pass data=.*fn.data_driven = False"):
        panning.prune(net, 0.5, lambda model, context: {}, input_shape=(1, 2, 2), iterations=1)
    batch = (torch.rand(8, 1, 2, 2), torch.arange(8) % 2)
    magnitude = panning.prune(net, 0.5, "magnitude", input_shape=(1, 2, 2))
    plain = panning.prune(net, 0.5, lambda model, context: panning.scores.magnitude(model), data=batch, iterations=1)
    assert plain.kept() == magnitude.kept()  # a bare function given what it would be asked for screens

    def listing(model: nn.Module, context: object) -> list[int]:
        return [1]

    listing.data_driven, listing.default_iterations = False, 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="scores must map parameter names to score tensors .* got list"):
        panning.prune(net, 0.5, listing, input_shape=(1, 2, 2))
    with pytest.raises(TypeError, match="decorates a factory"):
        panning.register_method("not-a-factory")(5)
    assert "not-a-factory" not in panning.method_names()


def test_a_taken_method_or_model_name_is_refused_and_the_first_entry_kept() -> None:
    with pytest.raises(panning.UserError, match="a method named 'snip' is already registered"):
        panning.register_method("snip")(lambda **options: panning.screening.pruning.SingleIndex("magnitude"))
    assert panning.screening.pruning.create_method("snip").index == "snip"
    with pytest.raises(panning.UserError, match="a model named 'lenet5' is already registered"):
        panning.models.register("lenet5")(lambda in_channels, num_classes, image_size: nn.Identity())
    assert isinstance(panning.models.create("lenet5"), panning.models.LeNet5Caffe)
    with pytest.raises(panning.UserError, match="no model 'never-added' is registered"):
        panning.models.unregister("never-added")
    with pytest.raises(panning.UserError, match="method 'random' is built into panning and cannot be unregistered"):
        panning.unregister_method("random")
    with pytest.raises(panning.UserError, match="model 'lenet5' is built into panning"):
        panning.models.unregister("lenet5")
    assert "random" in panning.method_names() and "lenet5" in panning.models.names()


def test_import_panning_leaves_the_agents_libraries_unloaded_until_used() -> None:
    import subprocess

    code = (
        "import sys, panning\n"
        "heavy = ('gymnasium', 'stable_baselines3')\n"
        "print([m for m in heavy if m in sys.modules], 'rl-panning' in panning.method_names())\n"
        "panning.agent.PanningEnv\n"
        "print([m for m in heavy[:1] if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[:2] == ["[] True", "['gymnasium']"]


def test_the_screening_record_is_typed_survives_a_mask_file_and_is_dropped_when_the_masks_change(
    lenet5, batch, tmp_path
) -> None:
    masks = panning.prune(lenet5, 0.99, "snip", data=batch, seed=3)
    record = masks.screening
    assert record is not None and (record.method, record.seed, record.input_shape) == ("snip", 3, (1, 28, 28))
    assert record.connectivity.kept == masks.kept() == 4305
    panning.masks.save(masks, tmp_path / "m.safetensors")
    assert panning.masks.load(tmp_path / "m.safetensors").screening == record
    shuffled = panning.sanity.shuffle_within_layers(masks, seed=0)
    assert shuffled.screening is None and "layers" not in shuffled.metadata  # the original's, not theirs
    assert shuffled.metadata["method"] == "snip" and shuffled.metadata["variant"] == "shuffled"
    edited = masks.clone()
    edited["fc4.weight"][0, 0] = not edited["fc4.weight"][0, 0]
    assert edited.screening is None  # a record copied with masks changed afterwards is not theirs


def test_tied_and_parametrized_weights_are_refused_and_a_reused_module_is_pruned_once() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.head = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 2)
            self.b.weight = self.a.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.b(torch.relu(self.a(x.flatten(1))))))

    with pytest.raises(ValueError, match="a.weight is the same tensor as b.weight"):
        panning.prune(Tied(), 0.5, "random", input_shape=(1, 4, 4))
    assert list(panning.prune(Tied(), 0.5, "random", input_shape=(1, 4, 4), parameters=["head.weight"])) == [
        "head.weight"
    ]
    batch_statistics = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8, track_running_stats=False))
    data = (torch.randn(20, 1, 4, 4), torch.arange(20) % 8)
    assert panning.prune(batch_statistics, 0.5, "snip", data=data, samples_per_class=2).kept() == 64  # 128 weights
    normed = nn.Sequential(nn.Flatten(), nn.utils.parametrizations.weight_norm(nn.Linear(16, 2)))
    with pytest.raises(ValueError, match="1.weight is computed by a parametrization"):
        panning.prune(normed, 0.5, "random", input_shape=(1, 4, 4))
    shared = nn.Linear(16, 16)
    reused = nn.Sequential(nn.Flatten(), shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(16, 2))
    assert list(panning.prune(reused, 0.5, "synflow", input_shape=(1, 4, 4), iterations=2)) == ["1.weight", "5.weight"]


def test_classes_absent_from_the_scoring_data_are_named() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 5))
    images, labels = torch.rand(20, 1, 2, 2), torch.tensor([0, 1, 3] * 6 + [0, 1])
    data = panning.data.from_tensors((images, labels), (images[:4], labels[:4]), num_classes=5, val_size=2)
    with pytest.warns(UserWarning, match=r"2 of 5 classes have no example in the scoring data \(2, 4\)"):
        panning.prune(net, 0.5, "snip", data=data, samples_per_class=2)
