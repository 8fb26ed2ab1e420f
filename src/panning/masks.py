"""Masks over prunable weights: the one mask type, exact top-K selection, applying and saving.

A mask is a boolean tensor per prunable parameter, ``True`` where the weight is kept.
``sparsity`` is the fraction of weights removed, ``density`` the fraction kept; the two are
never mixed up.

Masks are applied with PyTorch's own pruning reparametrization
(:mod:`torch.nn.utils.prune`): the parameter becomes ``<name>_orig``, the mask a buffer
``<name>_mask``, and a forward pre-hook recomputes ``<name> = <name>_orig * <name>_mask``.
The optimizer keeps the same parameter object, so any training loop keeps working.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

from panning.errors import UserError, UserTypeError, check_module, check_sparsity
from panning.io import json_text, write_atomic

if TYPE_CHECKING:
    from panning.screening.pruning import ScreeningRecord

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_METADATA_KEY = "panning"


def _split_name(name: str) -> tuple[str, str]:
    module_name, _, tensor_name = name.rpartition(".")
    return module_name, tensor_name


def _module_of(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, tensor_name = _split_name(name)
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError:
        raise UserError(f"the model has no module {module_name!r} (for parameter {name!r})") from None
    return module, tensor_name


def prunable_parameters(model: nn.Module, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The prunable weights of ``model`` by parameter name, in module order.

    By default the ``weight`` of every ``nn.Linear`` and ``nn.Conv1d/2d/3d`` but the ``out_proj``
    of an ``nn.MultiheadAttention`` (which reads that weight without calling the layer, so no mask
    could hold there: refused by name too); a module that appears twice is counted once.
    ``names`` selects parameters of the user's choice instead.
    If masks are applied to the model, the underlying ``<name>_orig`` parameter is returned
    under the plain name.

    Examples:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> list(prunable_parameters(net))
        ['0.weight', '2.weight']
    """
    if not isinstance(model, nn.Module):
        raise UserTypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if names is not None:
        if isinstance(names, str):
            raise UserTypeError("parameters must be a list of parameter names, not one string")
        selected: dict[str, torch.Tensor] = {}
        for name in names:
            module, tensor_name = _module_of(model, name)
            tensor = getattr(module, tensor_name + "_orig", None)
            if tensor is None:
                tensor = getattr(module, tensor_name, None)
            if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
                valid = ", ".join(n for n, _ in model.named_parameters())
                raise UserError(f"{name!r} is not a floating-point parameter of the model; valid: {valid}")
            selected[name] = tensor
        _refuse_unmaskable(model, selected)
        _refuse_attention_output(model, selected)
        return selected
    found: dict[str, torch.Tensor] = {}
    unhooked: set[str] = set()  # named_modules() gives an attention module before its out_proj
    for module_name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            unhooked.add(f"{module_name}.out_proj" if module_name else "out_proj")
        if isinstance(module, PRUNABLE_TYPES) and module_name not in unhooked:
            tensor = getattr(module, "weight_orig", None)
            if tensor is None:
                tensor = module.weight
            found[f"{module_name}.weight" if module_name else "weight"] = cast(torch.Tensor, tensor)
    if not found:
        raise UserError(
            f"{type(model).__name__} has no prunable layer (nn.Linear or nn.Conv1d/2d/3d); "
            "pass the names of the parameters to prune explicitly"
        )
    _refuse_unmaskable(model, found)
    return found


def _attention_output_projections(model: nn.Module) -> set[str]:
    """The ``out_proj`` layers of ``nn.MultiheadAttention`` modules: attention reads their weight
    without calling them, so the forward pre-hook of a pruning mask on them would never run."""
    return {
        f"{n}.out_proj" if n else "out_proj" for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)
    }


def _refuse_attention_output(model: nn.Module, chosen: Iterable[str]) -> None:
    unhooked = _attention_output_projections(model)
    for name in chosen:
        if _split_name(name)[0] in unhooked:
            raise UserError(
                f"cannot mask {name!r}: nn.MultiheadAttention reads its out_proj weight without calling "
                "out_proj, so the mask would not hold in training; leave it out of parameters=[...]"
            )


def dense_weights(model: nn.Module, chosen: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Weights of two or more dimensions that ``chosen`` leaves out and a mask can cover, with their
    sizes: the layers a default screening leaves dense (embeddings, transposed convolutions,
    attention's ``in_proj_weight``).

    Examples:
        >>> net = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
        >>> dense_weights(net, prunable_parameters(net))
        {'0.weight': 40}
    """
    taken = {id(tensor) for tensor in chosen.values()}
    unhooked = _attention_output_projections(model)
    return {
        name.removesuffix("_orig"): parameter.numel()
        for name, parameter in model.named_parameters()
        if parameter.dim() >= 2 and id(parameter) not in taken and _split_name(name)[0] not in unhooked
    }


def _refuse_unmaskable(model: nn.Module, chosen: Mapping[str, torch.Tensor]) -> None:
    """Refuse a chosen weight that a mask cannot cover: one the model also uses in another module
    (tied weights, where a mask applied under one name would leave the other use unmasked), or one
    computed by a torch parametrization (weight_norm, spectral_norm, ...). One pass over the modules:
    prune() calls this at every step."""
    wanted = {id(tensor) for tensor in chosen.values()}
    owners: dict[int, set[int]] = {}
    parametrized = False
    for module in model.modules(remove_duplicate=False):
        parametrized = parametrized or parametrize.is_parametrized(module)
        for parameter in module._parameters.values():
            if parameter is not None and id(parameter) in wanted:
                owners.setdefault(id(parameter), set()).add(id(module))
    for name, tensor in chosen.items():
        if len(owners.get(id(tensor), ())) > 1:
            plain = [
                other.removesuffix("_orig")
                for other, p in model.named_parameters(remove_duplicate=False)
                if p is tensor
            ]
            others = [other for other in plain if other != name]
            raise UserError(
                f"{name} is the same tensor as {others[0]} (tied weights), which panning cannot mask in both "
                f"places; untie them, or pass parameters=[...] without {name}"
            )
    if parametrized:
        for name in chosen:
            module, tensor_name = _module_of(model, name)
            if parametrize.is_parametrized(module, tensor_name):
                raise UserError(
                    f"{name} is computed by a parametrization (e.g. weight_norm); panning prunes plain weights: "
                    "call torch.nn.utils.parametrize.remove_parametrizations on it first, or leave it out with "
                    "parameters=[...]"
                )


def _as_mask(name: str, value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise UserTypeError(f"mask {name!r} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype == torch.bool:
        return value
    if value.is_floating_point() or value.dtype in (torch.uint8, torch.int8, torch.int32, torch.int64):
        if bool(((value != 0) & (value != 1)).any()):
            raise UserError(f"mask {name!r} holds values other than 0 and 1; a mask is boolean")
        return value != 0
    raise UserTypeError(f"mask {name!r} has dtype {value.dtype}; a mask is a bool tensor")


@dataclass(frozen=True)
class LayerStats:
    """Counts of one masked parameter."""

    name: str
    shape: tuple[int, ...]
    total: int
    kept: int

    @property
    def density(self) -> float:
        return self.kept / self.total if self.total else 0.0

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density


class Masks(MutableMapping[str, torch.Tensor]):
    """A mapping from parameter name to a boolean mask tensor, validated on write.

    ``True`` keeps a weight. A name already present only accepts a mask of the same shape.
    ``metadata`` carries free-form facts (method, options, seed, ...) saved with the masks.

    Examples:
        >>> masks = Masks({"fc.weight": torch.tensor([[True, False], [False, False]])})
        >>> masks.kept(), masks.total(), masks.sparsity()
        (1, 4, 0.75)
    """

    def __init__(
        self,
        masks: Mapping[str, torch.Tensor] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self._masks: dict[str, torch.Tensor] = {}
        self.metadata: dict[str, Any] = dict(metadata or {})
        for name, value in (masks or {}).items():
            self[name] = value

    @classmethod
    def ones_like(cls, model: nn.Module, names: Sequence[str] | None = None) -> Masks:
        """All-kept masks for the prunable parameters of ``model``.

        Examples:
            >>> Masks.ones_like(nn.Linear(3, 2)).total()
            6
        """
        return cls({n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(model, names).items()})

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name]

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        if not isinstance(name, str):
            raise UserTypeError(f"mask names are parameter names (str), got {type(name).__name__}")
        mask = _as_mask(name, value)
        old = self._masks.get(name)
        if old is not None and old.shape != mask.shape:
            raise UserError(
                f"mask {name!r} has shape {tuple(mask.shape)} but the existing mask has "
                f"{tuple(old.shape)}; a mask keeps the shape of its parameter"
            )
        self._masks[name] = mask.detach()

    def __delitem__(self, name: str) -> None:
        del self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        return f"Masks({len(self)} tensors, kept {self.kept()}/{self.total()}, sparsity {self.sparsity():.6g})"

    def total(self) -> int:
        """Number of maskable weights."""
        return sum(m.numel() for m in self._masks.values())

    def kept(self) -> int:
        """Number of kept weights."""
        return sum(int(torch.count_nonzero(m)) for m in self._masks.values())

    def density(self) -> float:
        """Fraction of weights kept."""
        total = self.total()
        return self.kept() / total if total else 0.0

    def sparsity(self) -> float:
        """Fraction of weights removed."""
        return 1.0 - self.density()

    def layers(self) -> list[LayerStats]:
        """Per-parameter counts, in insertion order."""
        return [
            LayerStats(name, tuple(m.shape), m.numel(), int(torch.count_nonzero(m))) for name, m in self._masks.items()
        ]

    def to(self, device: torch.device | str) -> Masks:
        """A copy on ``device``."""
        return Masks({n: m.to(device) for n, m in self._masks.items()}, self.metadata)

    def clone(self) -> Masks:
        """A deep copy (metadata too)."""
        return Masks({n: m.clone() for n, m in self._masks.items()}, copy.deepcopy(self.metadata))

    def digest(self) -> str:
        """A SHA-256 over the masks' names, shapes and bits: equal digests, equal masks.

        Examples:
            >>> a = Masks({"w": torch.tensor([True, False])})
            >>> a.digest() == a.clone().digest(), a.digest() == Masks({"w": torch.tensor([False, True])}).digest()
            (True, False)
        """
        digest = hashlib.sha256()
        for name in sorted(self._masks):
            mask = self._masks[name].detach().cpu().contiguous()
            digest.update(f"{name}:{tuple(mask.shape)};".encode())
            digest.update(mask.numpy().tobytes())
        return digest.hexdigest()

    @property
    def screening(self) -> ScreeningRecord | None:
        """How these masks were screened (:func:`panning.prune`'s record in ``metadata``, typed);
        ``None`` for masks made otherwise or changed since (a shuffled copy, a mask edited by hand).

        Examples:
            >>> import panning
            >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
            >>> masks = panning.prune(net, 0.9, "synflow", input_shape=(1, 4, 4), iterations=3)
            >>> masks.screening.method, masks.screening.iterations, masks.screening.connectivity.kept
            ('synflow', 3, 14)
            >>> masks["1.weight"][0, 0] = not masks["1.weight"][0, 0]
            >>> masks.screening is None
            True
        """
        from panning.screening.pruning import ScreeningRecord

        return ScreeningRecord.of(self)

    def equal(self, other: Mapping[str, torch.Tensor]) -> bool:
        """True when ``other`` has the same names and identical masks."""
        return list(self) == list(other) and all(torch.equal(self[n].cpu(), other[n].cpu()) for n in self)

    def check_fits(self, model: nn.Module) -> None:
        """Raise ``UserError`` naming the first parameter that the masks do not fit.

        Examples:
            >>> Masks.ones_like(nn.Linear(3, 2)).check_fits(nn.Linear(3, 2))
        """
        check_module(model)
        params = dict(model.named_parameters())
        for name, mask in self._masks.items():
            module_name, tensor_name = _split_name(name)
            tensor = params.get(name)
            if tensor is None:
                tensor = params.get(f"{module_name}.{tensor_name}_orig" if module_name else f"{tensor_name}_orig")
            if tensor is None:
                raise UserError(
                    f"the mask names parameter {name!r}, which the model does not have: "
                    "the mask file was made for another model"
                )
            if tuple(tensor.shape) != tuple(mask.shape):
                raise UserError(
                    f"the mask for {name!r} has shape {tuple(mask.shape)} but the model's parameter has "
                    f"{tuple(tensor.shape)}: the mask file was made for another model or dataset"
                )


def kept_count(total: int, sparsity: float) -> int:
    """How many of ``total`` weights a sparsity keeps: ``max(1, round((1 - s) * N))``.

    Examples:
        >>> kept_count(430_500, 0.999)
        431
    """
    check_sparsity(sparsity)
    return max(1, round((1.0 - sparsity) * total))


def kept_schedule(total: int, sparsity: float, iterations: int, schedule: str = "exponential") -> list[int]:
    """Weights kept after each step: ``round(k_t * N)``, never below the final ``K``, exactly ``K`` last.

    Examples:
        >>> kept_schedule(1000, 0.99, 3)
        [215, 46, 10]
    """
    final = kept_count(total, sparsity)
    densities = density_schedule(sparsity, iterations, schedule)
    return [max(final, round(k * total)) for k in densities[:-1]] + [final]


def _check_scores(scores: Mapping[str, torch.Tensor]) -> None:
    if not isinstance(scores, Mapping):
        raise UserTypeError(
            f"scores must map parameter names to score tensors (what a method returns), got {type(scores).__name__}"
        )
    if not scores:
        raise UserError("no scores given: there is nothing to select from")
    for name, score in scores.items():
        if not isinstance(score, torch.Tensor):
            raise UserTypeError(f"score {name!r} must be a tensor, got {type(score).__name__}")
        # A sum is NaN whenever an entry is (and only otherwise when +inf meets -inf): one cheap
        # reduction clears the common case, the elementwise test confirms.
        if bool(torch.isnan(score.sum())) and bool(torch.isnan(score).any()):
            raise UserError(
                f"the scores of {name!r} contain NaN: the model or the scoring batch produced "
                "non-finite values; check the input normalisation and initialisation"
            )


# Below this many scores a full selection is cheap; above it, a sample narrows the search first.
_SAMPLED_SELECTION_MIN = 1 << 15
_SELECTION_SAMPLE = 4096


def _kthvalue(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest entry (kthvalue has no MPS kernel: select on the CPU there)."""
    return torch.kthvalue(values.cpu() if values.device.type == "mps" else values, k).values.to(values.device)


def _kth_largest_sampled(flat: torch.Tensor, keep: int) -> torch.Tensor | None:
    """The exact ``keep``-th largest entry, selected among the few scores near it; None if the guess misses.

    An evenly strided sample brackets the wanted value between two sample order statistics
    (a margin of four standard deviations of the sample rank); every score above the bracket is
    counted and the exact value is selected inside it. A bracket that misses (an adversarial
    layout) returns None, and the caller selects over everything.
    """
    n = flat.numel()
    sample = flat[:: max(1, n // _SELECTION_SAMPLE)]
    size = sample.numel()
    ordered = torch.sort(sample, descending=True).values
    rank = keep * size / n
    margin = 4.0 * math.sqrt(max(rank * (1.0 - rank / size), 1.0)) + 2.0
    upper = ordered[max(0, int(rank - margin))]
    lower = ordered[min(size - 1, math.ceil(rank + margin))]
    # One pass over all n picks the side of the bracket holding the fewer scores; the rest works
    # on that subset (boolean indexing keeps the order, so the bracket is the same sequence).
    if keep <= n // 2:
        candidates = flat[flat >= lower]
        above = int(torch.count_nonzero(candidates > upper))
        if above >= keep:
            return None
        bracket = candidates[candidates <= upper]
    else:
        candidates = flat[flat <= upper]
        above = n - candidates.numel()
        if above >= keep:
            return None
        bracket = candidates[candidates >= lower]
    wanted = keep - above
    if bracket.numel() < wanted:
        return None
    return _kthvalue(bracket, bracket.numel() - wanted + 1)


def _topk_flat(flat: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean vector keeping exactly ``keep`` largest entries; ties go to the lower index."""
    n = flat.numel()
    if keep >= n:
        return torch.ones(n, dtype=torch.bool, device=flat.device)
    # The threshold is the keep-th largest score; how it is found never changes it. kthvalue
    # copies and selects over all n: a sample's bracket, or a partial sort of the smaller side
    # when that is tiny, finds the same value several times faster.
    rank_from_bottom = n - keep + 1
    threshold = None
    sampled = n >= _SAMPLED_SELECTION_MIN
    if min(keep, rank_from_bottom) <= n // (1000 if sampled else 8):
        if keep <= rank_from_bottom:
            threshold = torch.topk(flat, keep, sorted=False).values.min()
        else:
            threshold = torch.topk(flat, rank_from_bottom, largest=False, sorted=False).values.max()
    elif sampled:
        threshold = _kth_largest_sampled(flat, keep)
    if threshold is None:
        threshold = _kthvalue(flat, rank_from_bottom)
    chosen = flat > threshold
    missing = keep - int(torch.count_nonzero(chosen))
    if missing > 0:
        tied = torch.nonzero(flat == threshold).squeeze(1)[:missing]
        chosen[tied] = True
    return chosen


def _shared_vector(values: Sequence[torch.Tensor], dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    """The one vector the scores are consecutive views of, in order and covering it (a Panning
    step's scores are), so that no copy is needed; None for any other layout."""
    base = values[0]._base
    if base is None or base.dim() != 1 or base.dtype != dtype or base.device != device:
        return None
    if base.numel() != sum(v.numel() for v in values) or not base.is_contiguous():
        return None
    offset = base.storage_offset()
    for value in values:
        if value._base is not base or not value.is_contiguous() or value.storage_offset() != offset:
            return None
        offset += value.numel()
    return base.detach()


def select_topk(
    scores: Mapping[str, torch.Tensor],
    keep: int,
    scope: str = "global",
) -> Masks:
    """Keep exactly ``keep`` weights with the highest scores.

    ``scope="global"`` ranks all parameters together; ``scope="layer"`` keeps the same
    fraction of every parameter (see :func:`layer_quotas`; at least one each, exactly ``keep`` in all). Ties are broken
    by position: the parameter that comes first, then the lower flat index, wins. ``-inf``
    scores are never chosen while any finite score is left.

    Examples:
        >>> masks = select_topk({"w": torch.tensor([0.1, 0.9, 0.5, 0.9])}, keep=2)
        >>> masks["w"].tolist()
        [False, True, False, True]
    """
    _check_scores(scores)
    if isinstance(keep, bool) or not isinstance(keep, int):
        raise UserTypeError(f"keep must be an int, got {type(keep).__name__}")
    total = sum(s.numel() for s in scores.values())
    if not 1 <= keep <= total:
        raise UserError(f"keep={keep} is outside [1, {total}]: at least one weight must be kept")
    if scope == "global":
        dtype = torch.float64 if any(s.dtype == torch.float64 for s in scores.values()) else torch.float32
        device = next(iter(scores.values())).device
        flat = _shared_vector(list(scores.values()), dtype, device)
        if flat is None:
            flat = torch.cat([s.detach().reshape(-1).to(device=device, dtype=dtype) for s in scores.values()])
        chosen = _topk_flat(flat, keep)
        masks = Masks()
        offset = 0
        for name, score in scores.items():
            masks[name] = chosen[offset : offset + score.numel()].reshape(score.shape)
            offset += score.numel()
        return masks
    if scope == "layer":
        quotas = layer_quotas([s.numel() for s in scores.values()], keep)
        return Masks(
            {
                name: _topk_flat(s.detach().reshape(-1), quota).reshape(s.shape)
                for (name, s), quota in zip(scores.items(), quotas, strict=True)
            }
        )
    raise UserError(f"unknown scope {scope!r}; valid: global, layer")


def layer_quotas(sizes: Sequence[int], keep: int) -> list[int]:
    """Split ``keep`` over layers in proportion to their sizes, summing to exactly ``keep``.

    Every layer gets at least one weight when ``keep`` allows; the rest goes by largest
    remainder, ties to the earlier layer.

    Examples:
        >>> layer_quotas([3, 3, 3], 4)
        [2, 1, 1]
    """
    total = sum(sizes)
    floor_each = 1 if keep >= len(sizes) else 0
    shares = [keep * n / total for n in sizes]
    quotas = [min(n, max(floor_each, int(share))) for n, share in zip(sizes, shares, strict=True)]
    order = sorted(range(len(sizes)), key=lambda i: (-(shares[i] - int(shares[i])), i))
    while sum(quotas) < keep:
        for i in order:
            if sum(quotas) == keep:
                break
            if quotas[i] < sizes[i]:
                quotas[i] += 1
    while sum(quotas) > keep:
        for i in reversed(order):
            if sum(quotas) == keep:
                break
            if quotas[i] > floor_each:
                quotas[i] -= 1
    return quotas


def _pruned_tensors(model: nn.Module) -> Iterable[tuple[str, nn.Module, str]]:
    for module_name, module in model.named_modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                tensor_name = hook._tensor_name
                yield (f"{module_name}.{tensor_name}" if module_name else tensor_name), module, tensor_name


def as_masks(masks: Any) -> Masks:
    """``masks`` as :class:`Masks` (a mapping of parameter name -> bool tensor is wrapped); anything
    else, a file path included, is a one-line ``TypeError``.

    Examples:
        >>> as_masks({"w": torch.tensor([True, False])}).kept()
        1
    """
    if isinstance(masks, Masks):
        return masks
    if not isinstance(masks, Mapping):
        raise UserTypeError(
            f"masks must be a panning.Masks or a mapping of parameter name -> bool tensor, got {type(masks).__name__}"
            + ("; read a file with panning.masks.load(path)" if isinstance(masks, (str, os.PathLike)) else "")
        )
    return Masks(masks)


def apply(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Apply ``masks`` to ``model`` in place; a pruned weight is exactly zero from now on.

    Uses ``torch.nn.utils.prune.custom_from_mask``; pruned entries of ``<name>_orig`` are set to
    zero too, so plain SGD with momentum and weight decay keeps them at zero. Applying again
    replaces the mask, but the weights the first mask pruned stay zero (their values are gone):
    to try another mask on the same initial weights, apply it to a copy taken before. Returns
    ``model``.

    Examples:
        >>> net = nn.Linear(2, 1)
        >>> _ = apply(net, {"weight": torch.tensor([[True, False]])})
        >>> float(net.weight[0, 1]) == 0.0
        True
    """
    check_module(model)
    masks = as_masks(masks)
    masks.check_fits(model)
    _refuse_attention_output(model, masks)
    for name, mask in masks.items():
        module, tensor_name = _module_of(model, name)
        existing = getattr(module, tensor_name + "_mask", None)
        orig = getattr(module, tensor_name + "_orig", None)
        with torch.no_grad():
            if existing is not None and orig is not None:
                existing.copy_(mask)
            else:
                orig = getattr(module, tensor_name)
                torch_prune.custom_from_mask(module, tensor_name, mask.to(orig.device))
                orig = getattr(module, tensor_name + "_orig")
            orig.mul_(mask.to(device=orig.device, dtype=orig.dtype))
            # Keep the visible attribute in step without waiting for the next forward pass.
            setattr(module, tensor_name, orig * getattr(module, tensor_name + "_mask"))
    return model


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (CPU for a model with neither).

    Examples:
        >>> model_device(nn.Linear(2, 1))
        device(type='cpu')
    """
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` that also works after a forward pass with masks applied.

    (The visible masked weight is then a computed tensor, which ``copy.deepcopy`` refuses.)

    Examples:
        >>> net = apply(nn.Linear(2, 1), {"weight": torch.tensor([[True, False]])})
        >>> _ = net(torch.ones(1, 2))
        >>> copy_model(net).weight_mask.tolist()
        [[1.0, 0.0]]
    """
    memo: dict[int, Any] = {}
    for _, module, tensor_name in _pruned_tensors(model):
        visible = getattr(module, tensor_name, None)
        if isinstance(visible, torch.Tensor) and not visible.is_leaf:
            memo[id(visible)] = visible.detach().clone()
    return copy.deepcopy(model, memo)


def applied(model: nn.Module) -> Masks:
    """The masks currently applied to ``model`` (empty if none).

    Examples:
        >>> net = apply(nn.Linear(2, 1), {"weight": torch.tensor([[True, False]])})
        >>> applied(net).kept()
        1
    """
    return Masks(
        {name: getattr(module, tensor_name + "_mask").bool() for name, module, tensor_name in _pruned_tensors(model)}
    )


def remove(model: nn.Module) -> nn.Module:
    """Make applied masks permanent: every masked parameter becomes a plain parameter again.

    Examples:
        >>> net = apply(nn.Linear(2, 1), {"weight": torch.tensor([[True, False]])})
        >>> _ = remove(net)
        >>> sorted(n for n, _ in net.named_parameters())
        ['bias', 'weight']
    """
    for _, module, tensor_name in list(_pruned_tensors(model)):
        torch_prune.remove(module, tensor_name)
    return model


def dense_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict with masks made permanent, leaving ``model`` untouched.

    Examples:
        >>> net = apply(nn.Linear(2, 1), {"weight": torch.tensor([[True, False]])})
        >>> sorted(dense_state_dict(net))
        ['bias', 'weight']
    """
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, _, _ in _pruned_tensors(model):
        orig = state.pop(name + "_orig")
        mask = state.pop(name + "_mask")
        state[name] = orig * mask.to(orig.dtype)
    return state


def _metadata_text(value: Any) -> str:
    return json_text(value)


def save(
    masks: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Save ``masks`` to a safetensors file, atomically, with metadata.

    The metadata holds ``masks.metadata``, then ``metadata``, plus the kept and total counts,
    per-parameter shapes and the package version; ``sparsity`` stays the one the masks were
    screened for (``kept``/``total`` give the one reached, which rounding to whole weights moves),
    and is the reached one for masks changed since (their digest differs) or never screened.

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.safetensors"
        >>> save(Masks({"w": torch.tensor([True, False])}), path, metadata={"method": "magnitude"})
        >>> load(path).metadata["method"]
        'magnitude'
    """
    from panning import __version__

    masks = masks if isinstance(masks, Masks) else Masks(masks)
    if not masks:
        raise UserError("there are no masks to save")
    info: dict[str, Any] = dict(masks.metadata)
    info.update(metadata or {})
    if info.get("digest") != masks.digest():  # changed since screening (or never screened): what it is now
        info["sparsity"] = masks.sparsity()
    info.update(
        kept=masks.kept(),
        total=masks.total(),
        shapes={n: list(m.shape) for n, m in masks.items()},
        version=__version__,
    )
    tensors = {n: m.detach().to("cpu").contiguous() for n, m in masks.items()}
    text = {_METADATA_KEY: _metadata_text(info)}
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=text))


def load(path: str | os.PathLike[str]) -> Masks:
    """Load masks saved by :func:`save`; ``.metadata`` holds what was saved with them.

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.safetensors"
        >>> save(Masks({"w": torch.tensor([True, False])}), path)
        >>> load(path)["w"].tolist()
        [True, False]
    """
    file = Path(path)
    if file.is_dir():
        inside = file / "masks.safetensors"
        hint = f"pass {inside}" if inside.is_file() else "pass the mask file (`panning prune ... --out FILE`)"
        raise UserError(f"{file} is a folder, not a mask file; {hint}")
    if not file.is_file():
        raise UserError(f"no mask file at {file}: create one with `panning prune ... --out {file}`")
    try:
        tensors = load_file(str(file))
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(_METADATA_KEY, "{}")
        metadata = json.loads(raw)
        if not isinstance(metadata, dict):
            raise ValueError("its metadata is not a JSON object")
    except (SafetensorError, OSError, ValueError) as error:
        remedy = (
            "the run cannot resume: start it anew in another --out"
            if Path(file).name == "masks.safetensors" and (Path(file).parent / "config.json").is_file()
            else "an agent? show it with `panning agent info`"
            if file.suffix == ".zip"
            else "recreate it with `panning prune`"
        )
        raise UserError(f"{file} is not a readable mask file ({error}); {remedy}") from None
    if not tensors:
        raise UserError(f"{file} holds no masks; recreate it with `panning prune`")
    if str(metadata.get("format", "")).startswith("panning-sparse"):
        raise UserError(
            f"{file} is a sparse model (from `panning export` or `panning compact`), not a mask file; load it with "
            "panning.compaction.load_sparse(path, model)"
        )
    if any(t.is_floating_point() and not bool(((t == 0) | (t == 1)).all()) for t in tensors.values()):
        hint = " (it looks like a model's weights)" if any(n.endswith(".bias") for n in tensors) else ""
        raise UserError(
            f"{file} is not a mask file{hint}: its tensors hold real values; pass a file of `panning prune`"
        )
    masks = Masks(metadata=metadata)
    order = list(metadata.get("shapes", {})) or sorted(tensors)
    for name in order + [n for n in tensors if n not in order]:
        if name in tensors:
            masks[name] = tensors[name]
    return masks


def density_schedule(sparsity: float, iterations: int, schedule: str = "exponential") -> list[float]:
    """Densities ``k_t`` for steps ``t = 1..T`` toward ``sparsity``.

    Exponential: ``(1 - s) ** (t / T)``; linear: ``1 - s * t / T``.

    Examples:
        >>> [round(k, 4) for k in density_schedule(0.99, 2)]
        [0.1, 0.01]
    """
    check_sparsity(sparsity)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise UserError(f"iterations must be a positive integer, got {iterations!r}")
    steps = range(1, iterations + 1)
    if schedule == "exponential":
        return [(1.0 - sparsity) ** (t / iterations) for t in steps]
    if schedule == "linear":
        return [1.0 - sparsity * t / iterations for t in steps]
    raise UserError(f"unknown schedule {schedule!r}; valid: exponential, linear")


__all__ = [
    "LayerStats",
    "Masks",
    "applied",
    "apply",
    "copy_model",
    "dense_state_dict",
    "density_schedule",
    "kept_count",
    "kept_schedule",
    "layer_quotas",
    "load",
    "model_device",
    "prunable_parameters",
    "remove",
    "save",
    "select_topk",
]
