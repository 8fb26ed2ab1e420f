"""Inference in the fastest execution mode: same outputs, a real choice, clear errors."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from torch import nn

from panning import masks as masklib
from panning.compaction.inference import InferenceModel, fastest_inference
from panning.models import create


def _masked_lenet5() -> nn.Module:
    torch.manual_seed(0)
    model = create("lenet5")
    masks = {name: torch.rand_like(p) < 0.05 for name, p in masklib.prunable_parameters(model).items()}
    return masklib.apply(model, masks)


def test_each_mode_computes_the_masked_function_and_the_fastest_is_returned() -> None:
    model = _masked_lenet5()
    fast, timing = fastest_inference(model, (1, 28, 28), 8, modes=("eager", "channels-last"), repeats=2)
    assert set(timing.milliseconds) == {"eager", "channels-last"} and not timing.skipped
    assert fast.mode == timing.chosen and timing.best_ms == min(timing.milliseconds.values())
    assert masklib.applied(model).kept() > 0, "the caller's model keeps its masks"
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        expected = model.eval()(x)
    for mode in ("eager", "channels-last"):
        forced, _ = fastest_inference(model, (1, 28, 28), 8, modes=(mode,), repeats=1)
        torch.testing.assert_close(forced(x), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model.fc4.bias.add_(1.0)
    assert not torch.allclose(fast(x), model(x)), "the inference model is a snapshot"


def test_a_mode_that_changes_the_outputs_is_left_out_with_its_reason() -> None:
    class LayoutSensitive(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1) * (1.0 if x.is_contiguous() else 2.0)

    fast, timing = fastest_inference(LayoutSensitive(), (2, 3, 3), 4, modes=("eager", "channels-last"), repeats=1)
    assert fast.mode == "eager" and list(timing.milliseconds) == ["eager"]
    assert "differ" in timing.skipped["channels-last"]
    _, flat = fastest_inference(nn.Linear(3, 2), (3,), 4, modes=("eager", "channels-last"), repeats=1)
    assert "4-D" in flat.skipped["channels-last"]


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++ compiler")
def test_the_compiled_mode_freezes_the_weights_and_agrees() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    fast, timing = fastest_inference(net, (1, 12, 12), 4, modes=("compiled",), repeats=1)
    assert fast.mode == "compiled" and "compiled" in timing.milliseconds, timing.skipped
    x = torch.randn(4, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-5)
    # TorchDynamo runs a function's ninth graph uncompiled; every model here must stay compiled,
    # which shows as frozen weights: an in-place change to the module does not reach the outputs.
    for _ in range(9):
        fast, _ = fastest_inference(copy.deepcopy(net), (1, 12, 12), 4, modes=("compiled",), repeats=1)
        before = fast(x)
        with torch.no_grad():
            fast.model[-1].bias.add_(1.0)
        assert torch.equal(fast(x), before)


def test_bad_arguments_are_one_line_errors() -> None:
    with pytest.raises(TypeError, match="nn.Module"):
        fastest_inference(lambda x: x, (3,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        fastest_inference(nn.Linear(3, 2), (3,), batch_size=0)
    with pytest.raises(ValueError, match="unknown inference modes"):
        fastest_inference(nn.Linear(3, 2), (3,), modes=("fast",))
    with pytest.raises(ValueError, match="input shape") as error:
        fastest_inference(nn.Linear(3, 2), (4,), 2, repeats=1)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="unknown inference mode"):
        InferenceModel(nn.Linear(3, 2), "turbo")
