"""Wrong calls of the public Python API: one-line ValueError/TypeError naming the fix, never an
error from deep inside torch, pathlib or numpy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import panning
from panning import report, sanity
from panning.compaction import save_sparse


def _net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def _masks() -> panning.Masks:
    return panning.Masks.ones_like(_net())


CALLS: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    ("masks None", lambda: panning.effective_sparsity(_net(), None, (1, 2, 2)), TypeError, "masks must be"),
    ("masks list", lambda: panning.connectivity(_net(), [1, 2], (1, 2, 2)), TypeError, "masks must be"),
    ("model str", lambda: panning.effective_sparsity("net", _masks(), (1, 2, 2)), TypeError, "torch.nn.Module"),
    ("wrong shape", lambda: panning.effective_sparsity(_net(), _masks(), (3,)), ValueError, "cannot take inputs"),
    ("signal shape", lambda: panning.input_signal(_net(), _masks(), torch.rand(5, 3)), ValueError, "cannot take"),
    (
        "signal batch",
        lambda: panning.input_signal(_net(), _masks(), torch.rand(5, 4), batch_size=0),
        ValueError,
        "batch",
    ),
    ("apply path", lambda: panning.masks.apply(_net(), "m.safetensors"), TypeError, r"panning.masks.load\(path\)"),
    ("initialize", lambda: panning.models.initialize("net", "reference"), TypeError, "torch.nn.Module"),
    ("save_sparse", lambda: save_sparse("x", "never.safetensors"), TypeError, "torch.nn.Module"),
    ("vgg small", lambda: panning.models.create("vgg11", image_size=8), ValueError, "cannot take 1 x 8 x 8 images"),
    ("sanity str", lambda: sanity.sanity_config("lenet5", "mnist", "snip", "0.9"), TypeError, "sparsity must be"),  # type: ignore[arg-type]
    ("shuffle dict", lambda: sanity.shuffle_within_layers({"w": torch.ones(2).bool()}), TypeError, "panning.Masks"),  # type: ignore[arg-type]
    ("table", lambda: report.results_table(["a"]), TypeError, "read_results"),  # type: ignore[list-item]
    ("split seed", lambda: panning.data.load("mnist", split_seed="a"), TypeError, "split_seed must be"),  # type: ignore[arg-type]
    ("data dir", lambda: panning.data.load("mnist", data_dir=5), TypeError, "data_dir must be a path"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("case", "call", "error", "message"), CALLS, ids=[c[0] for c in CALLS])
def test_a_wrong_call_is_one_line_naming_the_fix(
    case: str, call: Callable[[], object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        call()
    assert isinstance(raised.value, panning.UserError | panning.errors.UserTypeError)
    assert "\n" not in str(raised.value)


def test_batches_of_no_examples_are_refused(data_root: Path) -> None:
    data = panning.data.load("mnist", val_size=10)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        next(data.batches("train", 0))
