"""End-to-end runs on the real datasets of this machine (a minute in all)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

import panning
from panning.cli import cli

pytestmark = pytest.mark.slow


def _available(name: str) -> bool:
    """Whether the dataset is on this machine; in CI (where it must be) its absence is a failure."""
    try:
        panning.data.locate(name, download=False)
    except ValueError as error:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have {name}: {error}")
        return False
    return True


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("dataset,floor", [("mnist", 0.97), ("fashion-mnist", 0.83)])
def test_one_dense_epoch_of_lenet5(tmp_path: Path, dataset: str, floor: float) -> None:
    if not _available(dataset):
        pytest.skip(f"{dataset} is not on this machine (make data installs it)")
    _run(
        "train",
        "--model",
        "lenet5",
        "--dataset",
        dataset,
        "--dense",
        "--epochs",
        "1",
        "--quiet",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "run"),
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= floor


def test_random_mask_at_0_9_stays_applied_through_training(tmp_path: Path) -> None:
    if not _available("mnist"):
        pytest.skip("mnist is not on this machine")
    mask_file = tmp_path / "m.safetensors"
    _run(
        "prune",
        "--model",
        "lenet5",
        "--dataset",
        "mnist",
        "--method",
        "random",
        "--sparsity",
        "0.9",
        "--out",
        str(mask_file),
    )
    _run(
        "train",
        "--model",
        "lenet5",
        "--dataset",
        "mnist",
        "--masks",
        str(mask_file),
        "--epochs",
        "1",
        "--quiet",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "run"),
    )
    masks = panning.masks.load(mask_file)
    weights = load_file(tmp_path / "run" / "model.safetensors")
    assert masks.kept() == round(0.1 * 430_500)
    assert sum(int((weights[name] != 0).sum()) for name in masks) == masks.kept()
    for name, mask in masks.items():
        assert not weights[name][~mask].any()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test_accuracy"] > 0.9


def test_a_folder_of_one_mnist_passes_not_for_the_other() -> None:
    """MNIST and Fashion-MNIST share file names: a --data-dir of one must not load as the other."""
    if not (_available("mnist") and _available("fashion-mnist")):
        pytest.skip("needs MNIST and Fashion-MNIST on this machine")
    for asked, other in (("mnist", "fashion-mnist"), ("fashion-mnist", "mnist")):
        folder = panning.data.locate(other, download=False)
        with pytest.raises(ValueError, match=f"holds {other}, not {asked}"):
            panning.data.load(asked, data_dir=folder)
