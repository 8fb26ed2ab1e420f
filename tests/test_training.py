from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import panning
from panning.masks import Masks
from panning.training import TrainConfig, build, train


class Interrupt(Exception):
    pass


def _config(**overrides: object) -> TrainConfig:
    base = dict(model="lenet300", dataset="mnist", epochs=3, batch_size=16, val_size=50, seed=0, device="cpu")
    base.update(overrides)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _masks(model: torch.nn.Module) -> panning.Masks:
    return panning.prune(model, 0.3, "random", input_shape=(1, 28, 28), seed=0)


def test_masked_training_writes_a_complete_run_folder(data_root: Path, tmp_path: Path) -> None:
    config = _config()
    model, data = build(config)
    masks = _masks(model)
    metrics = train(model, data, config, tmp_path / "run", masks=masks, progress=False)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} == {"config.json", "metrics.json", "masks.safetensors", "model.safetensors"}
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and len(metrics["epochs"]) == 3
    assert metrics["test_accuracy"] > 0.5  # the synthetic classes are easy
    assert metrics["nominal_sparsity"] == pytest.approx(0.3, abs=1e-5)
    weights = load_file(run / "model.safetensors")
    nonzero = sum(int((weights[name] != 0).sum()) for name in masks)
    assert nonzero == masks.kept()
    for name, mask in masks.items():
        assert torch.all(weights[name][~mask] == 0)


def test_same_seed_same_weights_and_resume_matches_an_uninterrupted_run(data_root: Path, tmp_path: Path) -> None:
    config = _config(augment=True)

    def fresh() -> tuple[torch.nn.Module, panning.data.Dataset, panning.Masks]:
        model, data = build(config)
        return model, data, _masks(model)

    model, data, masks = fresh()
    train(model, data, config, tmp_path / "a", masks=masks, progress=False)
    model, data, masks = fresh()
    train(model, data, config, tmp_path / "b", masks=masks, progress=False)

    def stop_after_first(end: panning.training.EpochEnd) -> None:
        if end.epoch == 1:
            raise Interrupt

    model, data, masks = fresh()
    with pytest.raises(Interrupt):
        train(model, data, config, tmp_path / "c", masks=masks, progress=False, callbacks=[stop_after_first])
    assert (tmp_path / "c" / "checkpoint.pt").is_file() and not (tmp_path / "c" / "model.safetensors").exists()
    with pytest.raises(ValueError, match="--resume"):
        train(*fresh()[:2], config, tmp_path / "c", progress=False)
    model, data, masks = fresh()
    train(model, data, config, tmp_path / "c", masks=masks, resume=True, progress=False)

    a, b, c = (load_file(tmp_path / r / "model.safetensors") for r in "abc")
    for name in a:
        assert torch.equal(a[name], b[name]), name
        assert torch.equal(a[name], c[name]), name
    assert not (tmp_path / "c" / "checkpoint.pt").exists()


def test_a_finished_run_is_never_overwritten(data_root: Path, tmp_path: Path) -> None:
    config = _config(epochs=1)
    model, data = build(config)
    train(model, data, config, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="already holds a finished run"):
        train(model, data, config, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before


def test_resume_with_other_options_is_refused(data_root: Path, tmp_path: Path) -> None:
    config = _config(epochs=2)
    model, data = build(config)
    with pytest.raises(Interrupt):
        train(
            model,
            data,
            config,
            tmp_path / "run",
            progress=False,
            callbacks=[lambda end: (_ for _ in ()).throw(Interrupt())],
        )
    with pytest.raises(ValueError, match="started with momentum = 0.9, not 0.5"):
        train(model, data, _config(epochs=2, momentum=0.5), tmp_path / "run", resume=True, progress=False)
    with pytest.raises(ValueError, match="warmup_epochs = 0.0, not 1.0"):
        train(model, data, _config(epochs=2, warmup_epochs=1.0), tmp_path / "run", resume=True, progress=False)


@pytest.mark.parametrize(
    "field,value",
    [
        ("epochs", 0),
        ("epochs", -1),
        ("batch_size", 0),
        ("lr", -0.1),
        ("normalization", "minmax"),
        ("warmup_epochs", -1),
        ("warmup_epochs", 3),  # not shorter than the run
        ("warmup_epochs", "1"),
        ("rescale", "fan-out"),
        ("init", "xavier"),
        ("clip_grad_norm", 0.0),
        ("clip_grad_norm", float("inf")),
        ("momentum", "0.9"),  # a grid file's string must not reach a comparison
        ("weight_decay", "1e-4"),
        ("lr", True),
        ("val_size", True),
        ("seed", -1),
        ("seed", "x"),
        ("seed", 2**64),
        ("compact", "no"),  # a truthy string would turn it on
        ("sparse_kernels", "no"),
        ("compact", 1),
        ("augment", "yes"),
        ("model", 5),
    ],
)
def test_bad_training_options(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        _config(**{field: value}).validate()


def test_resume_with_other_masks_or_dense_is_refused_and_changes_nothing(data_root: Path, tmp_path: Path) -> None:
    config = _config(epochs=2)
    model, data = build(config)
    first = _masks(model)
    with pytest.raises(Interrupt):
        train(
            model,
            data,
            config,
            tmp_path / "run",
            masks=first,
            progress=False,
            callbacks=[lambda end: (_ for _ in ()).throw(Interrupt())],
        )
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    other = panning.prune(build(config)[0], 0.5, "magnitude", input_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="other masks"):
        train(build(config)[0], data, config, tmp_path / "run", masks=other, resume=True, progress=False)
    with pytest.raises(ValueError, match="same --masks/--dense"):
        train(build(config)[0], data, config, tmp_path / "run", resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def test_masks_that_do_not_fit_leave_no_run_folder(data_root: Path, tmp_path: Path) -> None:
    config = _config(epochs=1)
    model, data = build(config)
    wrong = panning.Masks({"fc1.weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="fc1.weight"):
        train(model, data, config, tmp_path / "run", masks=wrong, progress=False)
    assert not (tmp_path / "run").exists()


def test_metrics_carry_the_screening_facts(data_root: Path, tmp_path: Path) -> None:
    config = _config(epochs=1)
    model, data = build(config)
    metrics = train(model, data, config, tmp_path / "run", masks=_masks(model), progress=False)
    assert metrics["method"] == "random" and metrics["prune_seconds"] > 0 and metrics["target_sparsity"] == 0.3
    assert [layer["name"] for layer in metrics["layers"]] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert 0 < metrics["input_signal"] < 1
    # RunResult states every key a run reports (the results columns are read from its fields).
    assert set(metrics) <= set(panning.training.RunResult.__annotations__)
    assert set(metrics["epochs"][0]) <= set(panning.training.EpochRecord.__annotations__)


def test_a_mask_that_no_input_reaches_is_flagged_before_training(tmp_path: Path) -> None:
    images, labels = torch.rand(80, 1, 4, 4), torch.arange(80) % 2
    data = panning.data.from_tensors((images, labels), (images[:20], labels[:20]), val_size=20)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].bias.fill_(-100.0)  # every hidden unit is off for every input
    config = TrainConfig(model="mine", dataset="custom", epochs=1, batch_size=20, device="cpu")
    with pytest.warns(UserWarning, match="same output for every input"):
        metrics = train(model, data, config, tmp_path / "run", masks=Masks.ones_like(model), progress=False)
    assert metrics["input_signal"] == 0 and metrics["dead"]


def test_a_model_data_or_config_that_cannot_train_is_refused_before_the_run_folder_exists(tmp_path: Path) -> None:
    images, labels = torch.rand(80, 1, 8, 8), torch.arange(80) % 10
    data = panning.data.from_tensors((images, labels), (images[:20], labels[:20]), val_size=20)
    config = TrainConfig(model="mine", dataset="custom", epochs=1, batch_size=20, device="cpu")
    fits = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    cases = [
        (
            nn.Sequential(nn.Flatten(), nn.Linear(64, 5)),
            data,
            config,
            ValueError,
            r"\(batch, classes\) logits with at least 10 classes .* got \(2, 5\)",
        ),
        (
            nn.Sequential(nn.Flatten(), nn.Linear(32, 10)),
            data,
            config,
            ValueError,
            r"fails on custom's inputs of shape",
        ),
        (fits, (images, labels), config, TypeError, "dataset must be a panning.data.Dataset"),
        (fits, data, {"epochs": 1}, TypeError, "config must be a panning.training.TrainConfig"),
    ]
    for model, dataset, settings, error, message in cases:
        with pytest.raises(error, match=message):
            train(model, dataset, settings, tmp_path / "run", progress=False)  # type: ignore[arg-type]
        assert not (tmp_path / "run").exists()


def test_numpy_scalars_are_numbers_and_a_model_may_have_more_logits_than_the_labels(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    config = TrainConfig(
        model="mine",
        dataset="custom",
        epochs=1,
        batch_size=20,
        device="cpu",
        momentum=np.float32(0.5),
        seed=np.int64(1),
    ).validate()
    assert type(config.momentum) is float and type(config.seed) is int and json.dumps(config.as_dict())
    images, labels = torch.rand(80, 1, 4, 4), torch.arange(80) % 9  # labels 0-8 only: 9 classes
    data = panning.data.from_tensors((images, labels), (images[:20], labels[:20]), val_size=20)
    ten_way = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    assert train(ten_way, data, config, tmp_path / "run", progress=False)["finished"]


def test_input_signal_is_that_of_the_weights_training_starts_from(tmp_path: Path) -> None:
    images, labels = torch.rand(80, 1, 4, 4), torch.arange(80) % 2
    data = panning.data.from_tensors((images, labels), (images[:20], labels[:20]), val_size=20)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    masks = panning.prune(model, 0.7, "random", input_shape=(1, 4, 4))
    config = TrainConfig(model="mine", dataset="custom", epochs=1, batch_size=20, device="cpu", rescale="fan-in")
    rescaled = panning.training.callbacks.rescale_to_fan_in(copy.deepcopy(model), masks)
    probe = data.normalize(data.val[0])
    expected = panning.input_signal(rescaled, masks, probe, reference=model)
    assert expected != panning.input_signal(model, masks, probe)
    metrics = train(copy.deepcopy(model), data, config, tmp_path / "rescaled", masks=masks, progress=False)
    assert metrics["input_signal"] == pytest.approx(expected)
    applied = panning.masks.apply(copy.deepcopy(model), masks)  # the pruned weights' values are gone
    plain = dataclasses.replace(config, rescale="none")
    assert train(applied, data, plain, tmp_path / "applied", masks=masks, progress=False)["input_signal"] is None


def test_connectivity_comes_from_the_screening_unless_the_masks_changed_since(data_root: Path, tmp_path: Path) -> None:
    config = _config(epochs=1)
    model, data = build(config)
    masks = _masks(model)
    screened = train(model, data, config, tmp_path / "screened", masks=masks, progress=False)
    assert screened["kept"] == masks.screening.connectivity.kept
    # An edited copy still carries the screening's metadata, which no longer describes it.
    edited = panning.Masks({**masks, "fc3.weight": torch.zeros_like(masks["fc3.weight"])}, metadata=masks.metadata)
    with pytest.warns(UserWarning, match="same output for every input"):  # nothing reaches the output
        changed = train(build(config)[0], data, config, tmp_path / "edited", masks=edited, progress=False)
    assert changed["kept"] == edited.kept() < screened["kept"] and changed["collapsed"]
    assert screened["input_signal"] > 0 and changed["input_signal"] == 0


def test_fan_in_rescale_gives_each_unit_its_dense_scale() -> None:
    linear = torch.nn.Linear(8, 3)
    conv = torch.nn.Conv2d(2, 2, 3)
    model = torch.nn.Sequential(conv, torch.nn.Flatten(), linear)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    keep_linear = torch.zeros(3, 8, dtype=torch.bool)
    keep_linear[0, :2] = True  # 2 of 8 inputs: x2
    keep_linear[1, :] = True  # dense: unchanged
    keep_conv = torch.zeros(2, 2, 3, 3, dtype=torch.bool)
    keep_conv[0, 0, :2, 0] = True  # 2 of 18: x3
    keep_conv[1, 1, 0, 0] = True  # 1 of 18
    masks = panning.Masks({"0.weight": keep_conv, "2.weight": keep_linear})
    panning.training.rescale_to_fan_in(model, masks)
    assert torch.allclose(linear.weight[0], 2 * before["2.weight"][0])
    assert torch.equal(linear.weight[1], before["2.weight"][1])
    assert torch.equal(linear.weight[2], before["2.weight"][2])  # no kept weight: left alone
    assert torch.allclose(conv.weight[0], 3 * before["0.weight"][0])
    assert torch.allclose(conv.weight[1], 18**0.5 * before["0.weight"][1])
    assert torch.equal(linear.bias, before["2.bias"])


def test_fan_in_rescale_is_what_training_starts_from(data_root: Path, tmp_path: Path) -> None:
    config = _config(rescale="fan-in", lr=1e-12, momentum=0.0, weight_decay=0.0)
    model, data = build(config)
    masks = _masks(model)
    plain = build(config)[0].fc1.weight.detach() * masks["fc1.weight"]
    expected = panning.training.rescale_to_fan_in(build(config)[0], masks).fc1.weight.detach() * masks["fc1.weight"]
    kept = masks["fc1.weight"]
    assert (expected[kept] / plain[kept]).mean() == pytest.approx((1 / 0.7) ** 0.5, rel=0.05)  # 30% pruned
    with pytest.raises(Interrupt):
        train(model, data, config, tmp_path / "run", masks=masks, progress=False, callbacks=[_interrupt])
    started = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model"]["fc1.weight_orig"]
    assert torch.allclose(started, expected, atol=1e-6)  # lr 1e-12: one epoch barely moved them


def _interrupt(end: panning.training.EpochEnd) -> None:
    raise Interrupt


def test_warmup_reaches_the_full_rate_after_its_epochs(data_root: Path, tmp_path: Path) -> None:
    rates = {}
    for warmup in (0.0, 1.0):
        config = _config(warmup_epochs=warmup)
        model, data = build(config)
        metrics = train(model, data, config, tmp_path / str(warmup), progress=False)
        rates[warmup] = [epoch["lr"] for epoch in metrics["epochs"]]
    assert rates[1.0][0] == pytest.approx(0.1)  # the end of the warm-up: the peak
    assert rates[0.0][0] < 0.1  # the cosine has already begun
    assert rates[1.0][1] > rates[0.0][1] and rates[1.0][2] == pytest.approx(0.0, abs=1e-12)


def test_reference_init_is_screened_and_trained_alike(data_root: Path) -> None:
    model, _ = build(_config(model="lenet5", init="reference"))
    assert all(float(m.bias.detach().abs().sum()) == 0 for m in (model.conv1, model.conv2, model.fc3, model.fc4))
    assert float(model.fc3.weight.detach().std()) == pytest.approx(0.01, rel=0.05)
    assert float(model.conv2.weight.detach().std()) == pytest.approx((2 / (50 * 25)) ** 0.5, rel=0.1)
    again, _ = build(_config(model="lenet5", init="reference"))
    assert torch.equal(model.conv1.weight, again.conv1.weight)  # seeded
    default, _ = build(_config(model="lenet5"))
    assert not torch.equal(model.conv1.weight, default.conv1.weight)


def test_a_diverging_run_stops_and_resumes_with_a_smaller_rate(data_root: Path, tmp_path: Path) -> None:
    config = _config(epochs=3)
    run = tmp_path / "run"
    model, data = build(config)
    masks = _masks(model)
    with pytest.raises(Interrupt):
        train(model, data, config, run, masks=masks, progress=False, callbacks=[_interrupt])
    checkpoint = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(
        ValueError, match=r"diverged at epoch 2, step \d+/\d+ .*epoch 1 is kept.*--resume.*--lr"
    ) as error:
        train(build(config)[0], data, _config(epochs=3, lr=1e12), run, masks=masks, resume=True, progress=False)
    assert isinstance(error.value, panning.errors.TrainingDiverged) and "\n" not in str(error.value)
    assert (run / "checkpoint.pt").read_bytes() == checkpoint  # the last good epoch
    assert not (run / "model.safetensors").exists()
    json.loads((run / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    metrics = train(build(config)[0], data, _config(epochs=3, lr=0.05), run, masks=masks, resume=True, progress=False)
    # The rest of the cosine, scaled to the new rate: 0.05 * (1 + cos(2 pi / 3)) / 2 at the end of epoch 2.
    assert metrics["finished"] and metrics["epochs"][1]["lr"] == pytest.approx(0.0125)
    record = json.loads((run / "config.json").read_text())
    assert record["train"]["lr"] == 0.05
    assert [change["lr"] for change in record["changes"]] == [[0.1, 1e12], [1e12, 0.05]]
    assert [change["from_epoch"] for change in record["changes"]] == [2, 2]


def test_metrics_json_is_strict_json(tmp_path: Path) -> None:
    panning.io.write_json(tmp_path / "m.json", {"loss": float("nan"), "epochs": [{"acc": float("inf")}]})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {
        "loss": None,
        "epochs": [{"acc": None}],
    }


def test_a_run_from_before_a_new_field_resumes_only_with_its_old_value(data_root: Path, tmp_path: Path) -> None:
    legacy = _config(epochs=2, clip_grad_norm=None)
    model, data = build(legacy)
    with pytest.raises(Interrupt):
        train(model, data, legacy, tmp_path / "run", progress=False, callbacks=[_interrupt])
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    for field in ("warmup_epochs", "rescale", "init", "clip_grad_norm"):
        del record["train"][field]  # as written before these fields existed
    (tmp_path / "run" / "config.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="clip_grad_norm = None, not 1.0"):
        train(build(_config())[0], data, _config(epochs=2), tmp_path / "run", resume=True, progress=False)
    metrics = train(build(legacy)[0], data, legacy, tmp_path / "run", resume=True, progress=False)
    assert metrics["finished"]


def test_a_run_of_two_processes_resumed_on_one_says_so_in_its_config(data_root: Path, tmp_path: Path) -> None:
    config = _config(epochs=2)
    model, data = build(config)
    with pytest.raises(Interrupt):
        train(model, data, config, tmp_path / "run", progress=False, callbacks=[_interrupt])
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    record["distributed"] = {"world_size": 2, "backend": "gloo", "global_batch": 16, "batch_per_process": 8}
    (tmp_path / "run" / "config.json").write_text(json.dumps(record))  # as rank 0 of two writes it
    train(build(config)[0], data, config, tmp_path / "run", resume=True, progress=False)
    resumed = json.loads((tmp_path / "run" / "config.json").read_text())
    assert "distributed" not in resumed  # one process from epoch 2 on: the record no longer says two
    assert resumed["changes"] == [{"from_epoch": 2, "processes": [2, 1]}]


@pytest.mark.filterwarnings("ignore:the masked network gives the same output")  # SynFlow in 3 steps cuts it
def test_a_user_callback_sees_every_hook_in_order_and_the_compacted_model(data_root: Path, tmp_path: Path) -> None:
    config = _config(epochs=2, compact=True)
    model, data = build(config)
    masks = panning.prune(model, 0.99, "synflow", input_shape=(1, 28, 28), iterations=3)
    seen: list[str] = []

    class Record(panning.training.TrainingCallback):
        def on_setup(self, run: panning.training.Run) -> None:
            seen.append(f"setup compact={run.model is not model}")

        def on_start(self, run: panning.training.Run) -> None:
            seen.append(f"start optimizer={run.optimizer is not None}")

        def on_epoch_end(self, run: panning.training.Run, entry: dict[str, object]) -> None:
            saved = (run.run_dir / "checkpoint.pt").is_file()
            seen.append(f"epoch {entry['epoch']} val={'val_accuracy' in entry} saved={saved}")

        def on_end(self, run: panning.training.Run, metrics: dict[str, object]) -> None:
            seen.append(f"end exported={(run.run_dir / 'model.safetensors').is_file()}")

    train(model, data, config, tmp_path / "run", masks=masks, progress=False, callbacks=[Record()])
    assert seen == [
        "setup compact=True",
        "start optimizer=True",
        "epoch 1 val=True saved=True",
        "epoch 2 val=True saved=True",
        "end exported=True",
    ]
    with pytest.raises(TypeError, match="a callback is a TrainingCallback or a function of EpochEnd"):
        train(*build(config), config, tmp_path / "other", masks=masks, progress=False, callbacks=[3])  # type: ignore[list-item]
    assert not (tmp_path / "other").exists()


def test_own_model_calls_that_used_to_go_wrong_silently(tmp_path: Path) -> None:
    images, labels = torch.rand(96, 1, 8, 8), torch.arange(96) % 4
    data = panning.data.from_tensors((images, labels), (images[:16], labels[:16]), val_size=16)

    def bn_net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))

    config = TrainConfig(model="mine", dataset="custom", epochs=3, batch_size=16, device="cpu")
    net = bn_net()
    # A callback leaving the model in eval mode: the next epochs still train (BatchNorm counts 5 batches each).
    train(net, data, config, tmp_path / "eval", progress=False, callbacks=lambda end: end.model.eval())
    assert int(net[2].num_batches_tracked) == 15
    # compact and sparse kernels train a copy: the caller's model keeps its initial weights.
    for option in ("compact", "sparse_kernels"):
        net = bn_net()
        before = {name: value.clone() for name, value in net.state_dict().items()}
        masks = panning.prune(net, 0.5, "magnitude", input_shape=(1, 8, 8))
        train(net, data, dataclasses.replace(config, **{option: True}), tmp_path / option, masks=masks, progress=False)
        assert all(torch.equal(before[name], value) for name, value in net.state_dict().items()), option
    # Masks applied beforehand (or given as a plain dict) train and are recorded as the run's masks.
    net = bn_net()
    masks = panning.prune(net, 0.5, "magnitude", input_shape=(1, 8, 8))
    panning.masks.apply(net, masks)
    applied = train(net, data, config, tmp_path / "applied", progress=False)
    as_dict = train(bn_net(), data, config, tmp_path / "dict", masks=dict(masks.items()), progress=False)
    assert applied["kept"] == as_dict["kept"] == masks.kept()
    assert applied["nominal_sparsity"] == pytest.approx(masks.sparsity())


def test_batch_norm_with_a_last_batch_of_one_and_a_float64_model_are_refused_up_front(tmp_path: Path) -> None:
    images, labels = torch.rand(57, 1, 8, 8), torch.arange(57) % 4
    data = panning.data.from_tensors((images, labels), (images[:8], labels[:8]), val_size=8)  # 49 = 3 * 16 + 1
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))
    config = TrainConfig(model="mine", dataset="custom", epochs=1, batch_size=16, device="cpu")
    with pytest.raises(ValueError, match="the last training batch would hold one example"):
        train(net, data, config, tmp_path / "bn", progress=False)
    with pytest.raises(ValueError, match=r"training takes a float32 model, got torch.float64: train model.float\(\)"):
        train(net.double(), data, dataclasses.replace(config, batch_size=8), tmp_path / "f64", progress=False)
    assert not list(tmp_path.iterdir())


def test_empty_masks_are_refused(tmp_path: Path) -> None:
    images, labels = torch.rand(40, 1, 8, 8), torch.arange(40) % 2
    data = panning.data.from_tensors((images, labels), (images[:8], labels[:8]), val_size=8)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    config = TrainConfig(model="mine", dataset="custom", epochs=1, batch_size=16, device="cpu")
    with pytest.raises(ValueError, match="the masks hold no layer"):
        train(net, data, config, tmp_path / "run", masks=panning.Masks(), progress=False)
    assert not (tmp_path / "run").exists()


def test_the_run_records_the_data_it_trained_on(tmp_path: Path) -> None:
    images, labels = torch.rand(40, 1, 8, 8), torch.arange(40) % 2
    data = panning.data.from_tensors((images, labels), (images[:8], labels[:8]), val_size=8, name="mine")
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    config = TrainConfig(model="mlp", epochs=1, batch_size=16, device="cpu", normalization="half")
    with pytest.warns(UserWarning, match="TrainConfig.normalization = 'half' has no effect on the data passed"):
        train(net, data, config, tmp_path / "run", progress=False)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert (recorded["dataset"], recorded["val_size"], recorded["normalization"]) == ("mine", 8, "standard")
