"""Effective sparsity and layer collapse (Vysogorets & Kempe, "Connectivity matters").

A kept weight is *effective* only if it lies on a path from an input to an output through
other kept weights. It is found like SynFlow: prunable weights become their (scaled) mask,
biases and normalisation shifts zero, normalisation layers unit scale in eval mode, an
all-ones input goes through, and a kept weight is effective when its gradient of the summed
output is non-zero.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    >>> masks = {"0.weight": torch.tensor([[True, True], [False, False]]),
    ...          "1.weight": torch.tensor([[False, True]])}
    >>> effective_masks(net, masks, input_shape=(2,))["0.weight"].sum().item()  # row 0 leads nowhere
    0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from panning import masks as masklib
from panning.errors import UserError, check_count, check_module, first_line
from panning.masks import Masks, prunable_parameters
from panning.screening.scores import _NORM_TYPES, _check_masks, _check_plain, preserved_modes, unclamped

_MAX_TO_AVG = {
    "max_pool1d": F.avg_pool1d,
    "max_pool2d": F.avg_pool2d,
    "max_pool3d": F.avg_pool3d,
    "max_pool1d_with_indices": F.avg_pool1d,
    "max_pool2d_with_indices": F.avg_pool2d,
    "max_pool3d_with_indices": F.avg_pool3d,
}
_ADAPTIVE_MAX_TO_AVG = {
    "adaptive_max_pool1d": F.adaptive_avg_pool1d,
    "adaptive_max_pool2d": F.adaptive_avg_pool2d,
    "adaptive_max_pool3d": F.adaptive_avg_pool3d,
}
_NORMS = {"batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm"}


class _PathCounting(TorchFunctionMode):
    """Turns a forward pass into a count of input-to-output paths.

    Max pooling passes the gradient to one input per window, so a weight that does lie on a
    path can look dead; average pooling has the same edges and passes it to all. Normalisation
    of a constant signal gives zero, so normalisation layers become the identity (unit scale,
    zero shift). A clamping activation passes the count on unclamped (see
    :func:`panning.screening.scores.unclamped`). Functional calls inside a user's ``forward`` are
    caught too.
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _NORMS:
            return args[0] if args else kwargs["input"]
        passed = unclamped(func, args, kwargs)
        if passed is not None:
            return passed
        if name in _MAX_TO_AVG:
            bound = _bind_pool(args, kwargs)
            if bound["dilation"] in (1, (1,), (1, 1), (1, 1, 1)):
                return _MAX_TO_AVG[name](
                    bound["input"], bound["kernel_size"], bound["stride"], bound["padding"], bound["ceil_mode"]
                )
        if name in _ADAPTIVE_MAX_TO_AVG:
            bound = {**dict(zip(("input", "output_size"), args)), **kwargs}
            return _ADAPTIVE_MAX_TO_AVG[name](bound["input"], bound["output_size"])
        return func(*args, **kwargs)


def _bind_pool(args: tuple, kwargs: dict) -> dict[str, Any]:
    names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
    bound: dict[str, Any] = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False}
    bound.update(dict(zip(names, args)))
    bound.update(kwargs)
    if not bound["stride"]:
        bound["stride"] = bound["kernel_size"]
    return bound


def _without_applied_masks(model: nn.Module) -> nn.Module:
    """``model``, or a plain copy of it when masks are applied for training (the model stays as it is)."""
    if len(masklib.applied(model)):
        model = masklib.remove(masklib.copy_model(model))
    _check_plain(model)
    return model


def _check_model_and_masks(model: Any, masks: Any) -> None:
    check_module(model)
    masklib.as_masks(masks)


def _forward(model: nn.Module, substitutes: Mapping[str, torch.Tensor], inputs: torch.Tensor) -> Any:
    """The model's output on ``inputs`` with ``substitutes`` for its tensors; a model that cannot
    take inputs of that shape is a one-line error, not torch's."""
    try:
        return functional_call(model, dict(substitutes), (inputs,))
    except RuntimeError as error:
        raise UserError(
            f"the model cannot take inputs of shape {tuple(inputs.shape[1:])} ({first_line(error)}); "
            "pass the shape of one input it takes (input_shape=(C, H, W)) or inputs it takes"
        ) from None


def _infer_shape(input_shape: Sequence[int] | None, inputs: torch.Tensor | None) -> tuple[int, ...]:
    if input_shape is not None:
        return tuple(int(d) for d in input_shape)
    if inputs is not None:
        return tuple(inputs.shape[1:])
    raise UserError("the connectivity analysis needs the input shape: pass input_shape=(C, H, W) or inputs")


def effective_masks(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    input_shape: Sequence[int] | None = None,
    inputs: torch.Tensor | None = None,
) -> Masks:
    """The kept weights that lie on some input-to-output path of kept weights.

    The input shape comes from ``input_shape``, ``inputs``, or ``masks.metadata["input_shape"]``.

    Examples:
        >>> net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> full = Masks.ones_like(net)
        >>> effective_masks(net, full, input_shape=(3,)).kept() == full.kept()
        True
    """
    _check_model_and_masks(model, masks)
    if input_shape is None and inputs is None:
        input_shape = getattr(masks, "metadata", {}).get("input_shape")
    shape = _infer_shape(input_shape, inputs)
    model = _without_applied_masks(model)
    weights = prunable_parameters(model, list(masks))
    _check_masks(weights, masks)
    device = next(iter(weights.values())).device
    substitutes: dict[str, torch.Tensor] = {}
    norm_modules = {name for name, module in model.named_modules() if isinstance(module, _NORM_TYPES)}
    for name, param in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        if leaf == "bias" or leaf.startswith("bias"):
            substitutes[name] = torch.zeros_like(param, dtype=torch.float64)
        elif owner in norm_modules or (owner == "" and "" in norm_modules):
            substitutes[name] = torch.ones_like(param, dtype=torch.float64)
        else:
            substitutes[name] = param.detach().abs().double()
    for name, buffer in model.named_buffers():
        owner, _, leaf = name.rpartition(".")
        if leaf == "running_mean":
            substitutes[name] = torch.zeros_like(buffer, dtype=torch.float64)
        elif leaf == "running_var":
            substitutes[name] = torch.ones_like(buffer, dtype=torch.float64)
        else:
            substitutes[name] = buffer.detach().double() if buffer.is_floating_point() else buffer.detach().clone()
    # Each layer's mask is divided by its kept count per output unit: a positive constant per layer
    # changes no zero pattern but keeps path counts of deep networks far from float64 overflow.
    leaves = {}
    for name, mask in masks.items():
        value = mask.to(device=device, dtype=torch.float64)
        scale = max(1.0, float(value.sum()) / max(1, value.shape[0]))
        leaves[name] = (value / scale).requires_grad_(True)
    substitutes.update(leaves)
    ones = torch.ones((1, *shape), dtype=torch.float64, device=device)
    with preserved_modes(model, train=False), _PathCounting():
        output = _forward(model, substitutes, ones)
    names = list(leaves)
    grads = torch.autograd.grad(output.sum(), [leaves[n] for n in names], allow_unused=True)
    result = Masks(metadata=getattr(masks, "metadata", {}))
    for name, grad in zip(names, grads):
        kept = masks[name].to(device).bool()
        if grad is None:
            result[name] = torch.zeros_like(kept)
        else:
            result[name] = kept & (grad != 0)
    return result


@dataclass(frozen=True)
class LayerConnectivity:
    """Nominal and effective counts of one prunable parameter."""

    name: str
    total: int
    kept: int
    effective: int

    @property
    def density(self) -> float:
        return self.kept / self.total

    @property
    def effective_density(self) -> float:
        return self.effective / self.total

    @property
    def collapsed(self) -> bool:
        return self.effective == 0


@dataclass(frozen=True)
class Connectivity:
    """Nominal and effective sparsity of a mask, overall and per layer."""

    layers: tuple[LayerConnectivity, ...]

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers)

    @property
    def kept(self) -> int:
        return sum(layer.kept for layer in self.layers)

    @property
    def effective(self) -> int:
        return sum(layer.effective for layer in self.layers)

    @property
    def nominal_sparsity(self) -> float:
        return 1.0 - self.kept / self.total

    @property
    def effective_sparsity(self) -> float:
        return 1.0 - self.effective / self.total

    @property
    def collapsed_layers(self) -> list[str]:
        """Layers with no effective weight. In a plain feed-forward network any one of them cuts
        the network; a layer inside a residual branch can be empty while the shortcut carries on."""
        return [layer.name for layer in self.layers if layer.collapsed]

    @property
    def collapsed(self) -> bool:
        """True when no input-to-output path is left: the network is cut and predicts a constant."""
        return self.effective == 0

    @classmethod
    def from_dict(cls, summary: Mapping[str, Any]) -> Connectivity:
        """Rebuild a report from :meth:`as_dict` output (e.g. mask metadata), without a forward pass.

        Examples:
            >>> Connectivity.from_dict({"layers": [{"name": "w", "total": 4, "kept": 2, "effective": 1}]}).effective
            1
        """
        return cls(
            tuple(
                LayerConnectivity(l["name"], int(l["total"]), int(l["kept"]), int(l["effective"]))
                for l in summary["layers"]
            )
        )

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready summary with a per-layer list."""
        return {
            "nominal_sparsity": self.nominal_sparsity,
            "effective_sparsity": self.effective_sparsity,
            "kept": self.kept,
            "effective_kept": self.effective,
            "total": self.total,
            "collapsed": self.collapsed,
            "collapsed_layers": self.collapsed_layers,
            "layers": [
                {"name": l.name, "total": l.total, "kept": l.kept, "effective": l.effective} for l in self.layers
            ],
        }


# The keys of Connectivity.as_dict(): facts about one set of masks, stale on any other.
SUMMARY_KEYS: tuple[str, ...] = tuple(Connectivity((LayerConnectivity("w", 1, 1, 1),)).as_dict())


def connectivity(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    input_shape: Sequence[int] | None = None,
    inputs: torch.Tensor | None = None,
) -> Connectivity:
    """Per-layer nominal and effective counts of ``masks`` on ``model``.

    The input shape comes from ``input_shape``, ``inputs``, or ``masks.metadata["input_shape"]``.

    Examples:
        >>> net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> connectivity(net, Masks.ones_like(net), input_shape=(3,)).collapsed
        False
    """
    effective = effective_masks(model, masks, input_shape, inputs)
    return Connectivity(
        tuple(
            LayerConnectivity(name, mask.numel(), int(mask.sum()), int(effective[name].sum()))
            for name, mask in masks.items()
        )
    )


def effective_sparsity(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    input_shape: Sequence[int] | None = None,
    inputs: torch.Tensor | None = None,
) -> float:
    """Fraction of prunable weights that are pruned or carry no input signal, in [0, 1].

    The input shape comes from ``input_shape``, ``inputs``, or ``masks.metadata["input_shape"]``.

    Examples:
        >>> net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> effective_sparsity(net, Masks.ones_like(net), input_shape=(3,))
        0.0
    """
    return connectivity(model, masks, input_shape, inputs).effective_sparsity


def input_signal(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    inputs: torch.Tensor,
    batch_size: int = 512,
    reference: nn.Module | None = None,
) -> float:
    """How much the masked network's output varies with its input, relative to the unmasked network's.

    The mean over outputs of their standard deviation over ``inputs``, masked over unmasked, both
    on the model's current weights in eval mode (``reference``: another network to compare with,
    e.g. the dense one before its masked copy was rescaled). A mask can be connected (:func:`connectivity`)
    and still pass no signal: when every input-to-output path crosses a pruned weight or a
    ReLU-like unit that is off for every input, the output is one constant and the ratio is
    exactly 0. No gradient then reaches a weight that sees the input, nor the bias of a unit that
    is off, and weight decay keeps each such unit's sign, so plain SGD cannot leave that constant
    prediction (without normalisation layers, whose batch statistics could move).
    :func:`panning.training.train` computes it on the weights it will train and records it as
    ``input_signal``. Small ratios (1e-5 for ERK and uniform masks at 0.99-0.998 on LeNet-5,
    against 1e-2 for SynFlow's) also predict runs that never leave a constant prediction, but
    with no sharp boundary.

    Examples:
        >>> net = nn.Sequential(nn.Linear(2, 1), nn.ReLU(), nn.Linear(1, 2))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.fill_(1.0), net[0].bias.fill_(-10.0)  # the hidden unit never fires
        >>> input_signal(net, Masks.ones_like(net), torch.rand(8, 2))
        0.0
        >>> with torch.no_grad():
        ...     _ = net[0].bias.fill_(0.0)
        >>> half = Masks.ones_like(net)
        >>> half["0.weight"][0, 1] = False
        >>> 0 < input_signal(net, half, torch.rand(8, 2)) < 1
        True
    """
    _check_model_and_masks(model, masks)
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 1 or len(inputs) < 2:
        raise UserError("input_signal needs a tensor of at least two inputs along its first dimension")
    batch_size = check_count("batch_size", batch_size)
    model = _without_applied_masks(model)
    weights = prunable_parameters(model, list(masks))
    _check_masks(weights, masks)
    device = next(iter(weights.values())).device
    masked = {
        name: weights[name].detach() * mask.to(device=device, dtype=weights[name].dtype) for name, mask in masks.items()
    }

    def spread(network: nn.Module, substitutes: Mapping[str, torch.Tensor]) -> float:
        outputs = []
        for start in range(0, len(inputs), batch_size):
            output = _forward(network, substitutes, inputs[start : start + batch_size].to(device))
            if not isinstance(output, torch.Tensor):
                raise UserError(f"input_signal needs a model that returns one tensor, got {type(output).__name__}")
            outputs.append(output.double().reshape(len(output), -1))
        return float(torch.cat(outputs).std(0).mean())

    dense_network = model if reference is None else reference
    with torch.no_grad(), preserved_modes(model, train=False), preserved_modes(dense_network, train=False):
        sparse = spread(model, masked)
        dense = spread(dense_network, {}) if sparse > 0 else 1.0
    if dense == 0:
        return float("inf")  # the unmasked network ignores its input: no scale to compare with
    return sparse / dense


__all__ = [
    "Connectivity",
    "LayerConnectivity",
    "connectivity",
    "effective_masks",
    "effective_sparsity",
    "input_signal",
]
