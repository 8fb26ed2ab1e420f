"""Making sparsity pay after compaction: sparse kernels, cost counts and small files on disk.

- :class:`SparseLinear` keeps only the kept weights of a linear layer (PyTorch's CSR format)
  and multiplies with ``torch.sparse.mm``; gradients reach the kept weights only.
- :func:`use_sparse_kernels` swaps a linear layer for its sparse form only where that is
  faster on the current device, decided by timing both once at the batch size in use.
- :func:`model_costs` counts parameters stored, kept weights and multiply-accumulates per example.
- :func:`save_sparse` / :func:`load_sparse` write a model with only its kept weights (plus a
  bit per position of its compact shape) and read it back to the same outputs.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> layer = nn.Linear(4, 2)
    >>> sparse = SparseLinear.from_linear(layer, torch.tensor([[1, 0, 0, 1], [0, 0, 1, 0]]).bool())
    >>> sparse.values.numel()
    3
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from panning import masks as masklib
from panning.compaction.dead_units import apply_plan
from panning.errors import UserError, UserTypeError, check_module
from panning.io import write_atomic
from panning.masks import Masks

SPARSE_FORMAT = "panning-sparse-1"
_VALUES = "::values"
_BITS = "::bits"


class SparseLinear(nn.Module):
    """A linear layer that stores and multiplies only its kept weights (CSR).

    ``values`` is the trainable parameter (one number per kept weight); the row pointers and
    column indices are buffers, so the pattern never changes and pruned weights never come back.

    Examples:
        >>> dense = nn.Linear(3, 2)
        >>> sparse = SparseLinear.from_linear(dense, torch.ones(2, 3, dtype=torch.bool))
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(sparse(x), dense(x), atol=1e-6)
        True
    """

    crow_indices: torch.Tensor
    col_indices: torch.Tensor

    def __init__(self, in_features: int, out_features: int, crow: torch.Tensor, col: torch.Tensor, bias: bool) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer("crow_indices", crow)
        self.register_buffer("col_indices", col)
        self.values = nn.Parameter(torch.zeros(len(col)))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_linear(cls, layer: nn.Linear, mask: torch.Tensor) -> SparseLinear:
        """The sparse form of ``layer`` keeping the weights where ``mask`` is True."""
        if not isinstance(layer, nn.Linear):
            raise UserTypeError(f"SparseLinear replaces an nn.Linear, got {type(layer).__name__}")
        weight = layer.weight.detach()
        # The pattern comes from the mask, not from the nonzero weights: a kept weight may be zero.
        rows, cols = torch.nonzero(mask, as_tuple=True)
        crow = torch.zeros(layer.out_features + 1, dtype=torch.int64, device=weight.device)
        crow[1:] = torch.cumsum(torch.bincount(rows, minlength=layer.out_features), 0)
        col = cols.to(torch.int64)
        sparse = cls(layer.in_features, layer.out_features, crow, col, layer.bias is not None).to(weight.device)
        with torch.no_grad():
            sparse.values.copy_(weight[rows, cols])
            if layer.bias is not None and sparse.bias is not None:
                sparse.bias.copy_(layer.bias.detach())
        return sparse

    def weight_dense(self) -> torch.Tensor:
        """The weight as a dense matrix (zeros where pruned)."""
        with _QuietSparse():
            return self._matrix().to_dense()

    def _matrix(self) -> torch.Tensor:
        return torch.sparse_csr_tensor(
            self.crow_indices, self.col_indices, self.values, (self.out_features, self.in_features)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        with _QuietSparse():
            out = torch.sparse.mm(self._matrix(), flat.t()).t()
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kept={self.values.numel()}"


class _QuietSparse:
    """CSR support is marked beta in PyTorch; its warnings say nothing a user can act on."""

    def __enter__(self) -> None:
        self._caught = warnings.catch_warnings()
        self._caught.__enter__()
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        warnings.filterwarnings("ignore", message=".*Sparse invariant checks are implicitly disabled.*")

    def __exit__(self, *exc: Any) -> None:
        self._caught.__exit__(*exc)


def to_dense_linear(layer: SparseLinear) -> nn.Linear:
    """The plain ``nn.Linear`` a :class:`SparseLinear` computes (for saving and export).

    Examples:
        >>> sparse = SparseLinear.from_linear(nn.Linear(3, 2), torch.eye(2, 3, dtype=torch.bool))
        >>> to_dense_linear(sparse).weight.count_nonzero().item()
        2
    """
    dense = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    dense = dense.to(layer.values.device)
    with torch.no_grad():
        dense.weight.copy_(layer.weight_dense())
        if layer.bias is not None:
            dense.bias.copy_(layer.bias)
    return dense


@dataclass(frozen=True)
class KernelChoice:
    """The timing that decided one layer's kernel (milliseconds per forward and backward pass)."""

    layer: str
    density: float
    dense_ms: float
    sparse_ms: float

    @property
    def sparse(self) -> bool:
        return self.sparse_ms < self.dense_ms

    def as_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "density": self.density,
            "dense_ms": self.dense_ms,
            "sparse_ms": self.sparse_ms,
            "kernel": "sparse" if self.sparse else "dense",
        }


def _time_ms(step: Any, repeats: int) -> float:
    step()  # warm-up: allocations and one-time dispatch
    best = math.inf
    for _ in range(repeats):
        began = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - began)
    return best * 1e3


def measure_kernel(
    layer: nn.Linear, mask: torch.Tensor, batch_size: int, training: bool = True, repeats: int = 5
) -> tuple[float, float]:
    """Milliseconds of the masked dense layer and of its :class:`SparseLinear`, on the layer's device.

    With ``training=True`` a forward and a backward pass are timed, else a forward pass only.

    Examples:
        >>> dense_ms, sparse_ms = measure_kernel(nn.Linear(64, 32), torch.rand(32, 64) < 0.01, 16, repeats=1)
        >>> dense_ms > 0 and sparse_ms > 0
        True
    """
    device = layer.weight.device
    x = torch.randn(batch_size, layer.in_features, device=device)
    masked = copy.deepcopy(layer)
    masklib.apply(masked, {"weight": mask})
    sparse = SparseLinear.from_linear(layer, mask.to(device))

    def run(module: nn.Module) -> Any:
        def step() -> None:
            if training:
                module.zero_grad(set_to_none=True)
                module(x).sum().backward()
            else:
                with torch.no_grad():
                    module(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        return step

    return _time_ms(run(masked), repeats), _time_ms(run(sparse), repeats)


def use_sparse_kernels(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    batch_size: int,
    training: bool = True,
    choices: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[nn.Module, Masks, list[KernelChoice]]:
    """Replace each masked ``nn.Linear`` of ``model`` by a :class:`SparseLinear` where that is faster.

    Each layer is timed once both ways at ``batch_size`` on its device (see
    :func:`measure_kernel`); ``choices`` (the ``as_dict()`` of an earlier call) repeats an
    earlier decision instead, so a resumed run keeps its kernels. Returns the model (changed in
    place; masks must not be applied to it yet), the masks left for the dense layers, and the
    timings. Convolutions stay dense: PyTorch has no sparse convolution kernel on CPU.

    Examples:
        >>> net = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 2))
        >>> masks = {"0.weight": torch.rand(256, 256) < 0.001, "2.weight": torch.ones(2, 256).bool()}
        >>> net, rest, timings = use_sparse_kernels(net, masks, batch_size=64)
        >>> [t.layer for t in timings]
        ['0', '2']
    """
    given = masks if isinstance(masks, Masks) else Masks(masks)
    if masklib.applied(model):
        raise UserError("use_sparse_kernels needs a model without applied masks; pass the masks instead")
    earlier = {c["layer"]: c for c in choices or ()}
    rest = Masks(metadata=given.metadata)
    timings: list[KernelChoice] = []
    for name, mask in given.items():
        layer_name, _, tensor_name = name.rpartition(".")
        layer = model.get_submodule(layer_name) if layer_name else model
        if tensor_name != "weight" or not isinstance(layer, nn.Linear):
            rest[name] = mask
            continue
        density = float(mask.float().mean())
        if layer_name in earlier:
            choice = KernelChoice(
                layer_name, density, float(earlier[layer_name]["dense_ms"]), float(earlier[layer_name]["sparse_ms"])
            )
        else:
            dense_ms, sparse_ms = measure_kernel(layer, mask.to(layer.weight.device), batch_size, training)
            choice = KernelChoice(layer_name, density, dense_ms, sparse_ms)
        timings.append(choice)
        if choice.sparse:
            _replace(model, layer_name, SparseLinear.from_linear(layer, mask.to(layer.weight.device)))
        else:
            rest[name] = mask
    return model, rest, timings


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def densify(model: nn.Module) -> nn.Module:
    """Turn every :class:`SparseLinear` of ``model`` back into ``nn.Linear``, in place; returns ``model``.

    Examples:
        >>> net = nn.Sequential(SparseLinear.from_linear(nn.Linear(2, 2), torch.eye(2, dtype=torch.bool)))
        >>> type(densify(net)[0]).__name__
        'Linear'
    """
    for name, module in list(model.named_modules()):
        if isinstance(module, SparseLinear):
            _replace(model, name, to_dense_linear(module))
    return model


@dataclass(frozen=True)
class Costs:
    """What a model stores and computes per example.

    ``params``: numbers stored by a dense implementation (all parameters); ``kept``: nonzero
    prunable weights plus all other parameters; ``macs``: multiply-accumulates of the
    linear and conv layers for one example as a dense implementation computes them;
    ``kept_macs``: those of kept weights only.
    """

    params: int
    kept: int
    macs: int
    kept_macs: int


def model_costs(model: nn.Module, input_shape: Sequence[int], masks: Mapping[str, torch.Tensor] | None = None) -> Costs:
    """Count :class:`Costs` of ``model`` for one input of ``input_shape`` (without the batch axis).

    Examples:
        >>> model_costs(nn.Linear(4, 3), (4,), {"weight": torch.eye(3, 4).bool()})
        Costs(params=15, kept=6, macs=12, kept_macs=3)
    """
    masks = masks if masks is not None else masklib.applied(model)
    kept_of = {name: int(mask.sum()) for name, mask in masks.items()}
    params = sum(p.numel() for p in model.parameters())
    macs, kept_macs = 0, 0
    positions: dict[str, int] = {}

    def hook(name: str) -> Any:
        def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            positions[name] = output[0, 0].numel() if output.dim() > 2 else 1

        return record

    layers = {
        n: m for n, m in model.named_modules() if isinstance(m, masklib.PRUNABLE_TYPES) or isinstance(m, SparseLinear)
    }
    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    device = masklib.model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    kept = params
    for name, module in layers.items():
        weight_name = f"{name}.weight" if name else "weight"
        if isinstance(module, SparseLinear):
            numel, kept_weights = module.in_features * module.out_features, module.values.numel()
            params += numel - kept_weights  # a dense implementation would store the full matrix
        else:
            weight = cast(torch.Tensor, getattr(module, "weight_orig", module.weight))
            numel = weight.numel()
            kept_weights = kept_of.get(weight_name, numel)
            kept -= numel - kept_weights  # (a SparseLinear's parameters are its kept weights already)
        macs += numel * positions.get(name, 0)
        kept_macs += kept_weights * positions.get(name, 0)
    return Costs(params, kept, macs, kept_macs)


def save_sparse(
    model: nn.Module,
    path: str | os.PathLike[str],
    plan: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Save ``model`` with only its kept weights: values plus one bit per position, atomically.

    Masked parameters (from :func:`panning.masks.apply`, or :class:`SparseLinear` layers) are
    stored as their kept values and a packed bit mask; everything else as it is. ``plan`` (from
    :func:`panning.compaction.compact_with_plan`) records how to shape the original architecture
    into ``model`` so that :func:`load_sparse` can rebuild it.

    Examples:
        >>> import tempfile, pathlib
        >>> net = masklib.apply(nn.Linear(4, 2), {"weight": torch.eye(2, 4).bool()})
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "net.safetensors"
        >>> save_sparse(net, path)
        >>> small, masks = load_sparse(path, nn.Linear(4, 2))
        >>> torch.equal(small.weight, net.weight)
        True
    """
    check_module(model)
    work = densify(masklib.copy_model(model))
    masks = masklib.applied(work)
    for name, module in model.named_modules():
        if isinstance(module, SparseLinear):
            masks[f"{name}.weight" if name else "weight"] = _pattern(module)
    state = masklib.dense_state_dict(work)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        tensor = tensor.detach().cpu()
        if name in masks:
            mask = masks[name].cpu()
            tensors[name + _VALUES] = tensor[mask].contiguous()
            tensors[name + _BITS] = torch.from_numpy(np.packbits(mask.reshape(-1).numpy()))
        else:
            tensors[name] = tensor.contiguous()
    info = {
        **dict(metadata or {}),  # first: an old file's format, plan or shapes must not outlive this save
        "format": SPARSE_FORMAT,
        "plan": dict(plan or {}),
        "shapes": {name: list(t.shape) for name, t in state.items()},
    }
    text = {"panning": json.dumps(info, sort_keys=True, default=str)}
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=text))


def _pattern(module: SparseLinear) -> torch.Tensor:
    rows = torch.repeat_interleave(
        torch.arange(module.out_features, device=module.crow_indices.device), module.crow_indices.diff()
    )
    mask = torch.zeros(module.out_features, module.in_features, dtype=torch.bool, device=rows.device)
    mask[rows, module.col_indices] = True
    return mask


class NotSparseFile(UserError):
    """A readable safetensors file that :func:`save_sparse` did not write (a run's plain weights)."""


def read_sparse_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata :func:`save_sparse` wrote (``format``, ``plan``, ``shapes`` and the caller's).

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "net.safetensors"
        >>> save_sparse(nn.Linear(4, 2), path, metadata={"model": "mine"})
        >>> info = read_sparse_metadata(path)
        >>> info["model"], info["shapes"]["weight"]
        ('mine', [2, 4])
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"no model file at {file}")
    try:
        with safe_open(str(file), framework="pt") as handle:
            info = json.loads((handle.metadata() or {}).get("panning", "{}"))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"{file} is not a readable safetensors file ({error})") from None
    if not isinstance(info, dict) or info.get("format") != SPARSE_FORMAT:
        raise NotSparseFile(f"{file} was not written by save_sparse (`panning export`); export the run first")
    return info


def load_sparse(path: str | os.PathLike[str], model: nn.Module) -> tuple[nn.Module, Masks]:
    """Rebuild a model saved by :func:`save_sparse` from ``model``, its original (dense) architecture.

    Returns a compact copy with the saved weights and masks applied, and the masks; ``model`` is
    left unchanged. The copy computes what the saved model computed.

    Examples:
        >>> import tempfile, pathlib
        >>> net = masklib.apply(nn.Linear(4, 2), {"weight": torch.eye(2, 4).bool()})
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "net.safetensors"
        >>> save_sparse(net, path)
        >>> small, masks = load_sparse(path, nn.Linear(4, 2))
        >>> masks.kept(), torch.equal(small(torch.ones(1, 4)), net(torch.ones(1, 4)))
        (2, True)
    """
    info = read_sparse_metadata(path)
    if not isinstance(model, nn.Module):
        raise UserTypeError(f"expected the model's architecture as a torch.nn.Module, got {type(model).__name__}")
    work = masklib.copy_model(model).cpu()
    masklib.remove(work)
    try:
        apply_plan(work, info.get("plan", {}))
    except (UserError, IndexError, AttributeError):
        raise UserError(
            f"{path} does not fit this model (its compaction plan names other layers); "
            "pass the architecture it was exported from"
        ) from None
    tensors = load_file(str(path))
    shapes = info["shapes"]
    state: dict[str, torch.Tensor] = {}
    masks = Masks()
    for name, shape in shapes.items():
        if name + _VALUES in tensors:
            count = math.prod(shape)
            bits = np.unpackbits(tensors[name + _BITS].numpy(), count=count).astype(bool)
            mask = torch.from_numpy(bits).reshape(shape)
            values = tensors[name + _VALUES]
            full = torch.zeros(shape, dtype=values.dtype)
            full[mask] = values
            state[name] = full
            masks[name] = mask
        elif name in tensors:
            state[name] = tensors[name]
    expected = work.state_dict()
    wrong = [n for n in state if n not in expected or tuple(expected[n].shape) != tuple(state[n].shape)]
    missing = [n for n in expected if n not in state]
    if wrong or missing:
        first = (wrong or missing)[0]
        raise UserError(
            f"{path} does not fit this model (first mismatch: {first!r}); pass the architecture it was exported from"
        )
    work.load_state_dict(state)
    masklib.apply(work, masks)
    return work.to(masklib.model_device(model)), masks


__all__ = [
    "SPARSE_FORMAT",
    "Costs",
    "KernelChoice",
    "SparseLinear",
    "densify",
    "load_sparse",
    "measure_kernel",
    "model_costs",
    "read_sparse_metadata",
    "save_sparse",
    "to_dense_linear",
    "use_sparse_kernels",
]
