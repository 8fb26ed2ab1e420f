from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import panning
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
    with pytest.raises(ValueError, match="another configuration"):
        train(model, data, _config(epochs=2, lr=0.05), tmp_path / "run", resume=True, progress=False)


@pytest.mark.parametrize(
    "field,value", [("epochs", 0), ("epochs", -1), ("batch_size", 0), ("lr", -0.1), ("normalization", "minmax")]
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
