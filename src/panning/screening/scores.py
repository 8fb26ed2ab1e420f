"""Screening indices: functions that only *score* weights.

Each index returns a dict from parameter name to a score tensor of that parameter's shape;
higher means "keep". Scores are computed with :func:`torch.func.functional_call` on
substituted tensors, so the model is left exactly as it was found: same parameters and
buffers (batch-norm running statistics included), same train/eval modes, no ``.grad``.

When ``masks`` is given, the network is evaluated at ``θ ⊙ m`` and the gradient taken with
respect to that masked weight; multiplying by the original ``θ`` gives pruned weights a
score too, so the caller may let them return ("regrowth").

Examples:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> x, y = torch.randn(6, 4), torch.tensor([0, 1, 0, 1, 0, 1])
    >>> scores = snip(net, inputs=x, targets=y)
    >>> {name: tuple(s.shape) for name, s in scores.items()}
    {'0.weight': (3, 4), '2.weight': (2, 3)}
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

from panning.errors import UserError, UserTypeError
from panning.masks import prunable_parameters

Scores = dict[str, torch.Tensor]
GRASP_TEMPERATURE = 200.0

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
# Clamping activations as torch functions see them (nn.ReLU6 and nn.Hardtanh call hardtanh).
_CLAMPS = frozenset(
    {"hardtanh", "hardtanh_", "relu6", "hardsigmoid", "clamp", "clamp_", "clip", "clip_", "clamp_max", "clamp_max_"}
)


def unclamped(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> torch.Tensor | None:
    """A clamping activation's input when ``func`` is one (for a flow of non-negative values), else None.

    SynFlow and the connectivity analysis push non-negative values through the network, where a
    ReLU passes them on unchanged; a clamp (``ReLU6``, ``Hardtanh``, ``Hardsigmoid``, ``clamp``)
    would cut every unit whose flow exceeds its bound, and with it the gradient that scores the
    weights behind it. Run as the identity, a clamp counts paths as a ReLU does.

    Examples:
        >>> unclamped(torch.nn.functional.hardtanh, (torch.tensor([7.0]),), {}).tolist()
        [7.0]
        >>> unclamped(torch.relu, (torch.tensor([7.0]),), {}) is None
        True
    """
    if getattr(func, "__name__", "") not in _CLAMPS:
        return None
    value = args[0] if args else kwargs.get("input")
    # Only the flow itself: a clamp of indices or of anything not floating keeps its meaning.
    return value if isinstance(value, torch.Tensor) and value.is_floating_point() else None


class _UnclampedFlow(TorchFunctionMode):
    """Runs every clamping activation as the identity (see :func:`unclamped`)."""

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        passed = unclamped(func, args, kwargs)
        return func(*args, **kwargs) if passed is None else passed


@contextmanager
def preserved_modes(model: nn.Module, train: bool | None = None) -> Iterator[None]:
    """Optionally switch ``model`` to train/eval mode; restore every submodule's mode on exit.

    Examples:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
        >>> with preserved_modes(net, train=False):
        ...     net[1].training
        False
        >>> net[1].training
        True
    """
    modes = [(module, module.training) for module in model.modules()]
    try:
        if train is not None:
            model.train(train)
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def _check_plain(model: nn.Module) -> None:
    for name, _ in model.named_buffers():
        if name.endswith("_mask"):
            raise UserError(
                f"masks are applied to this model ({name}); score the unmasked model and pass "
                "masks=..., or call panning.masks.remove(model) first"
            )


def _check_masks(weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor] | None) -> None:
    if masks is None:
        return
    for name, mask in masks.items():
        if name not in weights:
            raise UserError(f"the mask names {name!r}, which is not a prunable parameter of the model")
        if tuple(mask.shape) != tuple(weights[name].shape):
            raise UserError(
                f"the mask for {name!r} has shape {tuple(mask.shape)}, the parameter {tuple(weights[name].shape)}"
            )


def _masked(weight: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A new leaf ``θ ⊙ m`` to differentiate by (a boolean mask multiplies as 0/1 without a copy)."""
    value = weight.detach()
    if mask is not None:
        dtype = torch.bool if mask.dtype == torch.bool else value.dtype
        value = torch.mul(value, mask.to(device=value.device, dtype=dtype))
    return value.requires_grad_(True)


def _buffers(model: nn.Module, dtype: torch.dtype | None = None, absolute: bool = False) -> dict[str, torch.Tensor]:
    """Copies of every buffer, so in-place updates (running statistics) never reach the model."""
    out = {}
    for name, buffer in model.named_buffers():
        copy = buffer.detach().clone()
        if copy.is_floating_point():
            if dtype is not None:
                copy = copy.to(dtype)
            if absolute:
                copy = copy.abs()
        out[name] = copy
    return out


def _check_batch(model: nn.Module, inputs: torch.Tensor | None, targets: torch.Tensor | None, index: str) -> None:
    if inputs is None or targets is None:
        raise UserError(f"{index} is data-driven: pass inputs and targets (or data=... to prune)")
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise UserTypeError(f"{index}: inputs and targets must be tensors")
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise UserTypeError(f"{index}: targets must be integer class labels, got {targets.dtype}")
    if len(inputs) != len(targets) or len(inputs) == 0:
        raise UserError(
            f"{index}: got {len(inputs)} inputs and {len(targets)} targets; they must match and be non-empty"
        )


def _check_logits(logits: torch.Tensor, targets: torch.Tensor, index: str) -> None:
    if logits.dim() != 2:
        raise UserError(f"{index}: the model returned shape {tuple(logits.shape)}; expected (batch, classes) logits")
    top = int(targets.max())
    if top >= logits.shape[1] or int(targets.min()) < 0:
        raise UserError(
            f"{index}: the targets hold class {top} but the model has {logits.shape[1]} outputs; "
            "create the model with as many outputs as the dataset has classes"
        )
    if not bool(torch.isfinite(logits).all()):
        raise UserError(
            f"{index}: the model returned NaN or Inf on the scoring batch; "
            "check the input normalisation and the model's initialisation"
        )


def _pair(value: Any) -> list[int] | None:
    """A conv2d ``stride``/``padding``/``dilation`` as two ints; None for anything else (``"same"``)."""
    values = [value] if isinstance(value, int) else list(value) if isinstance(value, (tuple, list)) else []
    if len(values) not in (1, 2) or not all(isinstance(v, int) for v in values):
        return None
    return values * 2 if len(values) == 1 else values


class _ConvWeightGradient(torch.autograd.Function):
    """``∂L/∂W`` (and ``∂L/∂b``) of a 2-D convolution whose input needs no gradient.

    Its backward gives only ``∂/∂gO`` (``conv(x, ggW) + ggb``). PyTorch's own double backward
    of a convolution also computes the input's term ``convT(gO, ggW)`` whenever ``ggW`` is
    defined: a transposed convolution at every GraSP step that a data input never uses. The
    kernels called are PyTorch's own, so the values are the same bit for bit.
    """

    @staticmethod
    def forward(
        ctx: Any,
        grad_output: torch.Tensor,
        inputs: torch.Tensor,
        weight: torch.Tensor,
        with_bias: bool,
        stride: list[int],
        padding: list[int],
        dilation: list[int],
        groups: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        ctx.save_for_backward(inputs)
        ctx.convolution = (stride, padding, dilation, groups)
        ctx.output_shape = grad_output.shape
        ctx.set_materialize_grads(False)
        bias_sizes = [weight.shape[0]] if with_bias else None
        mask = [False, True, with_bias]
        _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad_output, inputs, weight, bias_sizes, stride, padding, dilation, False, [0, 0], groups, mask
        )
        return grad_weight, grad_bias

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_grad_weight: torch.Tensor | None, grad_grad_bias: torch.Tensor | None) -> Any:
        (inputs,) = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.convolution
        grad_grad_output = None
        if grad_grad_weight is not None:
            grad_grad_output = torch.convolution(
                inputs, grad_grad_weight, None, stride, padding, dilation, False, [0, 0], groups
            )
        if grad_grad_bias is not None:
            term = grad_grad_bias.contiguous().view(1, -1, 1, 1).expand(ctx.output_shape)
            grad_grad_output = term if grad_grad_output is None else grad_grad_output + term
        return grad_grad_output, None, None, None, None, None, None, None


class _DataConv2d(torch.autograd.Function):
    """``conv2d`` of an input that needs no gradient, with :class:`_ConvWeightGradient` as backward."""

    @staticmethod
    def forward(
        ctx: Any,
        inputs: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: list[int],
        padding: list[int],
        dilation: list[int],
        groups: int,
    ) -> torch.Tensor:
        ctx.save_for_backward(inputs, weight)
        ctx.convolution = (stride, padding, dilation, groups)
        ctx.with_bias = bias is not None
        return torch.convolution(inputs, weight, bias, stride, padding, dilation, False, [0, 0], groups)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> Any:
        inputs, weight = ctx.saved_tensors
        with_bias = ctx.with_bias and ctx.needs_input_grad[2]
        grad_weight, grad_bias = _ConvWeightGradient.apply(grad_output, inputs, weight, with_bias, *ctx.convolution)
        return None, grad_weight, grad_bias, None, None, None, None


class _DataConvolutions(TorchFunctionMode):
    """Routes every ``conv2d`` whose input needs no gradient (the first layer's) through :class:`_DataConv2d`."""

    _ARGUMENTS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.conv2d:
            bound = {**dict(zip(self._ARGUMENTS, args)), **kwargs}
            inputs, weight, groups = bound["input"], bound["weight"], bound.get("groups", 1)
            geometry = [
                _pair(bound.get(key, default)) for key, default in (("stride", 1), ("padding", 0), ("dilation", 1))
            ]
            if (
                inputs.dim() == 4
                and not inputs.requires_grad
                and weight.requires_grad
                and isinstance(groups, int)
                and all(g is not None for g in geometry)
            ):
                return _DataConv2d.apply(inputs, weight, bound.get("bias"), *geometry, groups)
        return func(*args, **kwargs)


@dataclass
class LossAwareScores:
    """SNIP and GraSP scores from one forward pass, with the batch loss and ``gᵀg``."""

    snip: Scores | None
    grasp: Scores | None
    loss: float
    grad_norm_sq: float


def loss_aware_scores(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    masks: Mapping[str, torch.Tensor] | None = None,
    temperature: float = 1.0,
    want_snip: bool = True,
    want_grasp: bool = True,
    parameters: Sequence[str] | None = None,
) -> LossAwareScores:
    """SNIP ``|θ ⊙ ∂L/∂θm|`` and GraSP ``θ ⊙ Hg`` from one loss ``L = CE(f(x; θm) / T, y)``.

    One forward pass and one backward pass; GraSP then adds one double backward through
    ``½ ∂(gᵀg)/∂θm``. The model's own train/eval mode is used.

    Examples:
        >>> net = nn.Linear(3, 2)
        >>> out = loss_aware_scores(net, torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), temperature=200.0)
        >>> sorted(out.snip), sorted(out.grasp)
        (['weight'], ['weight'])
    """
    index = "grasp" if want_grasp and not want_snip else "snip" if want_snip and not want_grasp else "snip and grasp"
    _check_batch(model, inputs, targets, index)
    if not temperature > 0:
        raise UserError(f"temperature must be positive, got {temperature}")
    _check_plain(model)
    weights = prunable_parameters(model, parameters)
    _check_masks(weights, masks)
    masked = {n: _masked(w, masks.get(n) if masks else None) for n, w in weights.items()}
    # Only GraSP's double backward gains from skipping the data input's unused gradient; it also
    # needs attention's math kernel, as the fused ones have no second derivative.
    math_attention = sdpa_kernel(SDPBackend.MATH) if want_grasp else nullcontext()
    with _DataConvolutions() if want_grasp else nullcontext(), math_attention:
        logits = functional_call(model, {**_buffers(model), **masked}, (inputs,))
    _check_logits(logits, targets, index)
    loss = nn.functional.cross_entropy(logits / temperature, targets.long())
    if not bool(torch.isfinite(loss)):
        raise UserError(f"{index}: the loss is NaN or Inf on the scoring batch; check the inputs")
    names = list(masked)
    tensors = [masked[n] for n in names]
    # allow_unused: a prunable layer off the loss's graph (an unused auxiliary head) scores zero.
    used = torch.autograd.grad(loss, tensors, create_graph=want_grasp, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(used, tensors)]
    with torch.no_grad():
        grad_norm_sq = cast(torch.Tensor, sum((g * g).sum() for g in grads))
    snip_scores = None
    if want_snip:
        snip_scores = {n: torch.mul(weights[n].detach(), g.detach()).abs_() for n, g in zip(names, grads)}
    grasp_scores = None
    if want_grasp:
        # Hg as the vector-Jacobian product of g with itself (H is symmetric): the same values as
        # ½ ∂(gᵀg)/∂θm, without a scalar's graph on top of the double backward.
        with_graph = [g for g in grads if g.requires_grad]
        products: Sequence[torch.Tensor | None] = (None,) * len(tensors)
        if with_graph:
            vectors = [g.detach() for g in with_graph]
            products = torch.autograd.grad(with_graph, tensors, grad_outputs=vectors, allow_unused=True)
        grasp_scores = {
            n: torch.zeros_like(t) if hg is None else torch.mul(weights[n].detach(), hg)
            for n, t, hg in zip(names, tensors, products)
        }
    return LossAwareScores(snip_scores, grasp_scores, float(loss.detach()), float(grad_norm_sq.detach()))


def snip(
    model: nn.Module,
    inputs: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
    temperature: float = 1.0,
    parameters: Sequence[str] | None = None,
) -> Scores:
    """SNIP (Lee et al. 2019): ``|θ ⊙ ∂L/∂θm|`` with ``L = CE(f(x; θm) / T, y)``.

    ``temperature=200`` gives the reference script's variant.

    Examples:
        >>> scores = snip(nn.Linear(3, 2), torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
        >>> bool((scores["weight"] >= 0).all())
        True
    """
    result = loss_aware_scores(model, inputs, targets, masks, temperature, True, False, parameters)  # type: ignore[arg-type]
    assert result.snip is not None
    return result.snip


def grasp(
    model: nn.Module,
    inputs: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
    temperature: float = GRASP_TEMPERATURE,
    absolute: bool = False,
    parameters: Sequence[str] | None = None,
) -> Scores:
    """GraSP (Wang et al. 2020): ``θ ⊙ Hg`` with ``g = ∂L_T/∂θm``; the highest scores are kept.

    ``absolute=True`` gives the reference script's ``|θ ⊙ Hg|`` variant.

    Examples:
        >>> scores = grasp(nn.Linear(3, 2), torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
        >>> scores["weight"].shape
        torch.Size([2, 3])
    """
    result = loss_aware_scores(model, inputs, targets, masks, temperature, False, True, parameters)  # type: ignore[arg-type]
    assert result.grasp is not None
    return {n: s.abs() for n, s in result.grasp.items()} if absolute else result.grasp


def _synflow_parameters(
    model: nn.Module, weights: Mapping[str, torch.Tensor], biases: bool = True
) -> dict[str, torch.Tensor]:
    """Every non-prunable parameter as ``|p|`` in float64 (norm parameters included; biases too,
    or as zeros when ``biases`` is False)."""
    out = {}
    for name, param in model.named_parameters():
        if name in weights or name.endswith("_orig"):
            continue
        magnitude = param.detach().abs().double()
        out[name] = magnitude if biases or not name.endswith("bias") else torch.zeros_like(magnitude)
    return out


def _float64_magnitudes(
    weights: Mapping[str, torch.Tensor], cache: MutableMapping[Any, Any] | None
) -> dict[str, torch.Tensor]:
    """``|θ|`` in float64, reused from ``cache`` while every weight is the same unmodified tensor."""
    key = ("synflow-magnitudes", tuple(weights))
    # A tensor's version counter moves on every in-place change, so a stale entry is never used.
    stamp = tuple((id(w), w.data_ptr(), w._version) for w in weights.values())
    if cache is not None and key in cache and cache[key][0] == stamp:
        return cache[key][1]
    magnitudes = {n: w.detach().to(torch.float64, copy=True).abs_() for n, w in weights.items()}
    if cache is not None:
        cache[key] = (stamp, magnitudes)
    return magnitudes


def synflow(
    model: nn.Module,
    inputs: torch.Tensor | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
    input_shape: Sequence[int] | None = None,
    parameters: Sequence[str] | None = None,
    cache: MutableMapping[Any, Any] | None = None,
    biases: bool = True,
) -> Scores:
    """SynFlow (Tanaka et al. 2020): ``|θ ⊙ ∂R/∂θm|``, ``R = Σ f(1; |θm|)``, data-free.

    Every parameter (and floating buffer) is replaced by its absolute value, the input is a
    single all-ones example, normalisation layers run in eval mode, clamping activations
    (``ReLU6``, ``Hardtanh``) pass the flow unclamped as a ReLU does, all in float64. ``biases=False``
    sets the biases to zero instead: then only flow from the input counts, where a bias can make a
    unit with no kept input look useful (at extreme sparsity SynFlow with biases can keep a whole
    last layer fed by biases alone and no path from the input).
    ``inputs`` only give the shape; pass ``input_shape`` (without batch) instead if you like.
    ``cache``, a dict kept across the calls of one screening run, keeps the float64 ``|θ|``
    between them; an entry is used only while the weights are unchanged.

    Examples:
        >>> scores = synflow(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1)), input_shape=(2,))
        >>> scores["1.weight"].dtype
        torch.float64
    """
    if input_shape is None:
        if inputs is None:
            raise UserError("synflow needs the input shape: pass inputs (any batch) or input_shape")
        input_shape = tuple(inputs.shape[1:])
    _check_plain(model)
    weights = prunable_parameters(model, parameters)
    _check_masks(weights, masks)
    device = next(iter(weights.values())).device
    magnitudes = _float64_magnitudes(weights, cache)
    masked = {n: _masked(magnitude, masks.get(n) if masks else None) for n, magnitude in magnitudes.items()}
    substitutes = {
        **_buffers(model, torch.float64, absolute=True),
        **_synflow_parameters(model, weights, biases),
        **masked,
    }
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    with preserved_modes(model, train=False), _UnclampedFlow():
        output = functional_call(model, substitutes, (ones,))
    names = list(masked)
    grads = torch.autograd.grad(output.sum(), [masked[n] for n in names], allow_unused=True)
    scores = {}
    for name, grad in zip(names, grads):
        # |θ| ⊙ |∂R/∂θm| is |θ ⊙ ∂R/∂θm| bit for bit: a product's magnitude ignores the signs.
        magnitude = magnitudes[name]
        scores[name] = torch.mul(magnitude, grad).abs_() if grad is not None else torch.zeros_like(magnitude)
    return scores


def magnitude(model: nn.Module, parameters: Sequence[str] | None = None) -> Scores:
    """``|θ|``.

    Examples:
        >>> magnitude(nn.Linear(2, 1))["weight"].shape
        torch.Size([1, 2])
    """
    return {n: w.detach().abs().clone() for n, w in prunable_parameters(model, parameters).items()}


def random(
    model: nn.Module, generator: torch.Generator | None = None, parameters: Sequence[str] | None = None
) -> Scores:
    """Uniform noise from ``generator`` (a seeded CPU generator gives the same scores on any device).

    Examples:
        >>> a = random(nn.Linear(2, 1), torch.Generator().manual_seed(0))
        >>> b = random(nn.Linear(2, 1), torch.Generator().manual_seed(0))
        >>> torch.equal(a["weight"], b["weight"])
        True
    """
    out = {}
    for name, weight in prunable_parameters(model, parameters).items():
        out[name] = torch.rand(weight.shape, generator=generator).to(weight.device)
    return out


INDICES: dict[str, Callable[..., Scores]] = {
    "random": random,
    "magnitude": magnitude,
    "snip": snip,
    "grasp": grasp,
    "synflow": synflow,
}

__all__ = [
    "GRASP_TEMPERATURE",
    "INDICES",
    "LossAwareScores",
    "grasp",
    "loss_aware_scores",
    "magnitude",
    "preserved_modes",
    "random",
    "snip",
    "synflow",
]
