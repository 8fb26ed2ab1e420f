"""Run a (compacted) model for inference in whichever execution mode is fastest here, chosen by timing.

A compacted network holds few numbers, but how fast it runs depends as much on how PyTorch
executes it as on its size: on CPU, NCHW max pooling of a wide convolution output can take half
of LeNet-5's forward pass, while the same pooling in channels-last layout, or a compiled graph
with the weights frozen in, is several times faster. :func:`fastest_inference` times each
execution mode once on the current device at the batch size in use, checks that each computes
the same outputs as the plain model, and returns the fastest as an :class:`InferenceModel`.
Benchmarks compare masked and compacted models each in its own fastest mode, so a speed-up
measured this way is the network's, not the layout's.

Modes:

- ``eager``: the model as it is (PyTorch's default NCHW layout).
- ``channels-last``: weights and inputs in channels-last memory layout (4-D inputs only).
- ``compiled``: ``torch.compile`` (Inductor) with frozen weights; needs a C++ compiler on CPU
  and takes seconds to compile, once per input shape.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    >>> fast, timing = fastest_inference(net, (1, 4, 4), batch_size=8, modes=("eager",), repeats=1)
    >>> timing.chosen, fast(torch.zeros(2, 1, 4, 4)).shape
    ('eager', torch.Size([2, 4]))
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from panning import masks as masklib
from panning.compaction.sparse import _time_ms
from panning.errors import UserError, check_count, check_module

MODES = ("eager", "channels-last", "compiled")


def _call_model(x: torch.Tensor) -> torch.Tensor:
    return model(x)  # type: ignore[name-defined]  # noqa: F821 - bound by _own_entry_point


def _own_entry_point(model: nn.Module) -> Any:
    """``model(x)`` as a function with its own code object.

    TorchDynamo keeps compiled graphs per code object and, past 8 of them, silently runs the
    model uncompiled. Frozen weights make every model instance a new graph of its class's
    ``forward``, so the ninth compiled LeNet-5 of a process would fall back. A private entry
    point gives each compiled model its own cache, freed with it.
    """
    return types.FunctionType(_call_model.__code__.replace(), {"model": model, "__builtins__": __builtins__})


class InferenceModel(nn.Module):
    """A model run for inference in one execution mode (always without gradients).

    It takes over ``model``: puts it in evaluation mode and, for ``channels-last``, changes its
    memory layout. :func:`fastest_inference` hands it a copy, so its result is a snapshot.

    Examples:
        >>> net = InferenceModel(nn.Linear(3, 1), "eager")
        >>> net(torch.ones(2, 3)).requires_grad
        False
    """

    def __init__(self, model: nn.Module, mode: str) -> None:
        super().__init__()
        if mode not in MODES:
            raise UserError(f"unknown inference mode {mode!r}; valid: {', '.join(MODES)}")
        self.mode = mode
        self.model = model.eval()
        if mode == "channels-last":
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
        self._compiled = torch.compile(_own_entry_point(self.model), dynamic=False) if mode == "compiled" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self._compiled is not None:
                # Freezing folds the weights into the graph as constants, which lets Inductor
                # prepack them for oneDNN; it is only a config switch, read at compile time.
                import torch._inductor.config as inductor_config

                with inductor_config.patch(freezing=True):
                    return self._compiled(x)
            if self.mode == "channels-last" and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.model(x)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


@dataclass(frozen=True)
class InferenceTiming:
    """Milliseconds per batch of each execution mode tried, and why any mode was left out."""

    batch_size: int
    milliseconds: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def chosen(self) -> str:
        return min(self.milliseconds, key=self.milliseconds.__getitem__)

    @property
    def best_ms(self) -> float:
        return self.milliseconds[self.chosen]

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "milliseconds": dict(self.milliseconds),
            "skipped": dict(self.skipped),
            "chosen": self.chosen,
        }


def _milliseconds(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    def step() -> None:
        model(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)

    return _time_ms(step, repeats)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def fastest_inference(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 256,
    modes: Sequence[str] = MODES,
    repeats: int = 10,
    tolerance: float = 1e-4,
) -> tuple[InferenceModel, InferenceTiming]:
    """Time ``model``'s inference in each of ``modes`` and return it in the fastest one.

    The model is copied (applied masks are made permanent in the copy; the model itself is left
    unchanged) and put in evaluation mode. Each mode runs a random batch of ``batch_size``
    inputs of ``input_shape`` on the model's device; a mode whose outputs differ from the eager
    model's by more than ``tolerance`` (relative to their largest magnitude), or that fails (no
    C++ compiler for ``compiled``, say), is left out and the reason kept in
    :attr:`InferenceTiming.skipped`. Times are the best of ``repeats`` after one warm-up.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
        >>> fast, timing = fastest_inference(net, (1, 28, 28), 16, modes=("eager", "channels-last"), repeats=2)
        >>> sorted(timing.milliseconds), fast.mode == timing.chosen
        (['channels-last', 'eager'], True)
    """
    check_module(model)
    batch_size = check_count("batch_size", batch_size)
    if isinstance(modes, str):
        modes = (modes,)
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown or not modes:
        raise UserError(f"unknown inference modes {unknown or list(modes)}; choose among {', '.join(MODES)}")
    device = masklib.model_device(model)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *input_shape, generator=generator).to(device)
    plain = masklib.remove(masklib.copy_model(model)).eval()
    try:
        with torch.no_grad():
            reference = plain(x)
    except RuntimeError as error:
        raise UserError(
            f"the model does not run on inputs of shape {tuple(x.shape)} ({_first_line(error)}); "
            "pass the input shape of one example, without the batch dimension"
        ) from None
    scale = float(reference.abs().max()) or 1.0
    milliseconds: dict[str, float] = {}
    skipped: dict[str, str] = {}
    candidates: dict[str, InferenceModel] = {}
    for mode in dict.fromkeys(modes):
        if mode == "channels-last" and x.dim() != 4:
            skipped[mode] = f"inputs are {x.dim()}-D; channels-last layout is for 4-D (image) inputs"
            continue
        candidate = InferenceModel(masklib.copy_model(plain), mode)
        try:
            difference = float((candidate(x) - reference).abs().max()) / scale
        except Exception as error:  # any failure to build or run a mode only removes that mode
            skipped[mode] = _first_line(error)
            continue
        if not difference <= tolerance:
            skipped[mode] = f"outputs differ from the eager model's by {difference:.2g} (relative)"
            continue
        milliseconds[mode] = _milliseconds(candidate, x, repeats)
        candidates[mode] = candidate
    if not milliseconds:
        raise UserError(f"no inference mode could run the model: {skipped}")
    timing = InferenceTiming(batch_size, milliseconds, skipped)
    return candidates[timing.chosen], timing
