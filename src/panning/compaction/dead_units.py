"""Compaction: a masked network made physically smaller, computing the same function.

At high sparsity screening leaves whole units (neurons, filters, channels) with no kept
weight in or out. :func:`compact` removes them: a dead output unit of a layer goes together
with the matching inputs of every layer that reads it, through convolutions, linear layers,
batch norm, pooling, activations, flatten and residual additions.

How it finds them: the model is traced with :mod:`torch.fx` and every tensor's channel axis
(dim 1) is followed as a *channel space*. A layer's output opens a new space; activations,
pooling and batch norm keep it; a residual addition joins the spaces of its two operands
into one, so a unit feeding a sum is removed only when it is dead in every branch. Anything
the tracer does not understand (concatenation, reshapes other than flatten, a layer used
twice, the model's inputs and outputs) *pins* the spaces it touches: nothing there is
removed, so the result stays correct for any model fx can trace.

A unit is removed when

- no kept weight reads it (it is *backward dead*): its value never reaches the output; or
- no kept weight feeds it (it is *forward dead*) and its constant output can be folded into
  the bias of every layer that reads it: only through element-wise activations and pooling
  (no batch norm or dropout, whose output differs between training and evaluation), into a
  linear layer or an unpadded convolution that has a bias. A constant of exactly zero (a
  ReLU of a negative bias) needs no bias at all. Otherwise the unit stays.

The removals cascade until nothing changes. The result computes the masked model's
function: the same outputs within float tolerance, and (for removed units with no weight
left in or out) the same training dynamics.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> masks = {"0.weight": torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0]]).bool(),
    ...          "2.weight": torch.tensor([[1, 0, 0], [1, 0, 0]]).bool()}
    >>> small, carried = compact(net, masks, input_shape=(4,))
    >>> small[0].out_features, carried["2.weight"].shape
    (1, torch.Size([2, 1]))
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from panning import masks as masklib
from panning.errors import UserError, UserTypeError, first_line
from panning.masks import Masks

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_ELEMENTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Identity,
)
_POOL_MODULES = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
_DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_ELEMENTWISE_FUNCTIONS = {
    torch.relu,
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.gelu,
    F.silu,
    F.hardswish,
    F.hardtanh,
    torch.tanh,
    torch.sigmoid,
    F.sigmoid,
    F.tanh,
}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "relu_", "sigmoid_", "tanh_", "contiguous"}
_POOL_FUNCTIONS = {
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_max_pool3d,
}
_DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout}
_ADDS = {operator.add, operator.iadd, torch.add}


@dataclass
class _Space:
    """One channel axis shared by the tensors between a layer's output and its readers."""

    size: int | None
    producers: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    # (layer name, columns per unit, element-wise steps between the producers and this reader):
    # a linear layer after a flatten reads P columns per channel; the steps give a constant unit's value.
    consumers: list[tuple[str, int, tuple[torch.fx.Node, ...]]] = field(default_factory=list)
    pinned: bool = False
    foldable: bool = True
    parent: _Space | None = None

    def root(self) -> _Space:
        space = self
        while space.parent is not None:
            space = space.parent
        return space


@dataclass(frozen=True)
class _Value:
    """What the tracer knows of a tensor: its channel space, its rank and whether it was flattened."""

    space: _Space
    rank: int | None
    flat: bool = False
    chain: tuple[torch.fx.Node, ...] = ()


def _union(a: _Space, b: _Space) -> _Space:
    a, b = a.root(), b.root()
    if a is b:
        return a
    if a.size is not None and b.size is not None and a.size != b.size:
        a.pinned = b.pinned = True
    b.parent = a
    a.size = a.size if a.size is not None else b.size
    a.producers += b.producers
    a.norms += b.norms
    a.consumers += b.consumers
    a.pinned = a.pinned or b.pinned
    a.foldable = a.foldable and b.foldable
    return a


@dataclass(frozen=True)
class CompactReport:
    """What compaction removed: units per layer before and after, weights dropped as ineffective.

    Examples:
        >>> CompactReport({"fc": (300, 12)}, kept_before=100, kept_after=90, folded=3).describe()
        'fc 300 -> 12 units; kept weights 100 -> 90 (3 constant units folded into biases)'
    """

    units: dict[str, tuple[int, int]]
    kept_before: int
    kept_after: int
    folded: int

    def describe(self) -> str:
        layers = ", ".join(f"{name} {before} -> {after} units" for name, (before, after) in self.units.items())
        return (
            f"{layers}; kept weights {self.kept_before} -> {self.kept_after} "
            f"({self.folded} constant units folded into biases)"
        )


class _Tracer:
    """Follows channel spaces through an fx graph (see the module docstring)."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int] | None = None) -> None:
        try:
            self.graph = torch.fx.symbolic_trace(model).graph
        except Exception as error:  # fx raises many kinds of errors on untraceable code
            first = first_line(error)
            raise UserError(
                f"cannot compact {type(model).__name__}: torch.fx cannot trace its forward ({first}); "
                "compaction needs a forward without data-dependent control flow"
            ) from None
        placeholders = [n for n in self.graph.nodes if n.op == "placeholder"]
        # The input's rank is known only for a single input of the given shape.
        self.input_rank = len(input_shape) + 1 if input_shape and len(placeholders) == 1 else None
        self.modules = dict(model.named_modules())
        self.values: dict[torch.fx.Node, _Value] = {}
        self.spaces: list[_Space] = []
        calls: dict[str, int] = {}
        for node in self.graph.nodes:
            if node.op == "call_module":
                calls[node.target] = calls.get(node.target, 0) + 1
        self.shared = {name for name, count in calls.items() if count > 1}
        for node in self.graph.nodes:
            self._visit(node)

    def _new(self, size: int | None, pinned: bool = False) -> _Space:
        space = _Space(size=size, pinned=pinned)
        self.spaces.append(space)
        return space

    def _inputs(self, node: torch.fx.Node) -> list[_Value]:
        found: list[_Value] = []
        torch.fx.map_arg((node.args, node.kwargs), lambda n: found.append(self.values[n]) if n in self.values else n)
        return found

    def _pin(self, node: torch.fx.Node) -> None:
        for value in self._inputs(node):
            value.space.root().pinned = True
        self.values[node] = _Value(self._new(None, pinned=True), None)

    def _same(self, node: torch.fx.Node, foldable: bool, activation: bool = False) -> None:
        source = self.values.get(node.args[0]) if node.args and isinstance(node.args[0], torch.fx.Node) else None
        if source is None or source.flat:
            self._pin(node)
            return
        for other in self._inputs(node)[1:]:
            other.space.root().pinned = True
        root = source.space.root()
        root.foldable = root.foldable and foldable
        self.values[node] = dataclasses.replace(source, chain=(*source.chain, node)) if activation else source

    def _flatten(self, node: torch.fx.Node, start: Any, end: Any = -1) -> None:
        source = self.values.get(node.args[0]) if node.args and isinstance(node.args[0], torch.fx.Node) else None
        if source is None or source.flat or start != 1 or end != -1 or source.rank is None:
            self._pin(node)
            if start == 1 and end == -1:
                self.values[node] = dataclasses.replace(self.values[node], rank=2)
            return
        self.values[node] = _Value(source.space, 2, flat=source.rank > 2, chain=source.chain)

    def _visit(self, node: torch.fx.Node) -> None:
        if node.op == "placeholder":
            self.values[node] = _Value(self._new(None, pinned=True), self.input_rank)
        elif node.op == "output":
            for value in self._inputs(node):
                value.space.root().pinned = True
        elif node.op == "get_attr":
            self.values[node] = _Value(self._new(None, pinned=True), None)
        elif node.op == "call_module":
            self._visit_module(node)
        elif node.op == "call_function":
            self._visit_function(node)
        elif node.op == "call_method":
            self._visit_method(node)

    def _visit_module(self, node: torch.fx.Node) -> None:
        module = self.modules[node.target]
        if node.target in self.shared:
            self._pin(node)
        elif isinstance(module, _LAYERS):
            self._visit_layer(node, module)
        elif isinstance(module, _NORMS):
            self._same(node, foldable=False)
            if node in self.values and not self.values[node].space.root().pinned:
                self.values[node].space.root().norms.append(str(node.target))
        elif isinstance(module, _ELEMENTWISE_MODULES):
            self._same(node, foldable=True, activation=True)
        elif isinstance(module, _POOL_MODULES):
            self._same(node, foldable=_pads_nothing(getattr(module, "padding", 0)))
        elif isinstance(module, _DROPOUT_MODULES):
            self._same(node, foldable=False)
        elif isinstance(module, nn.Flatten):
            self._flatten(node, module.start_dim, module.end_dim)
        else:
            self._pin(node)

    def _visit_layer(self, node: torch.fx.Node, module: nn.Module) -> None:
        inputs = self._inputs(node)
        if len(inputs) != 1 or not isinstance(node.args[0], torch.fx.Node):
            self._pin(node)
            return
        source = inputs[0]
        space = source.space.root()
        if isinstance(module, nn.Linear):
            width = module.in_features
            per_unit = width // space.size if space.size and width % space.size == 0 else 0
            if source.rank != 2 or space.size is None or per_unit == 0 or (per_unit != 1 and not source.flat):
                space.pinned = True
            elif not space.pinned:
                space.consumers.append((str(node.target), per_unit, source.chain))
            self.values[node] = _Value(self._new(module.out_features), source.rank)
        else:
            conv = cast(nn.modules.conv._ConvNd, module)
            conv_rank = {nn.Conv1d: 3, nn.Conv2d: 4, nn.Conv3d: 5}[type(conv)]
            if conv.groups != 1 or source.flat or source.rank not in (None, conv_rank):
                space.pinned = True
            elif space.size is not None and space.size != conv.in_channels:
                space.pinned = True
            elif not space.pinned:
                space.consumers.append((str(node.target), 1, source.chain))
            # A grouped convolution's outputs belong to its groups: removing one would shift the
            # input channels every later group reads.
            self.values[node] = _Value(self._new(conv.out_channels, pinned=conv.groups != 1), conv_rank)
        self.values[node].space.producers.append(str(node.target))

    def _visit_function(self, node: torch.fx.Node) -> None:
        target = node.target
        if target in _ELEMENTWISE_FUNCTIONS:
            self._same(node, foldable=True, activation=True)
        elif target in _POOL_FUNCTIONS:
            padding = node.kwargs.get("padding", node.args[3] if len(node.args) > 3 else 0)
            self._same(node, foldable=_pads_nothing(padding))
        elif target in _DROPOUT_FUNCTIONS:
            self._same(node, foldable=False)
        elif target is torch.flatten:
            start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
            end = node.kwargs.get("end_dim", node.args[2] if len(node.args) > 2 else -1)
            self._flatten(node, start, end)
        elif target in _ADDS:
            self._add(node)
        elif target is getattr and len(node.args) == 2 and node.args[1] == "shape":
            pass  # a shape, not a tensor
        elif target is operator.getitem and node.args and _is_shape(node.args[0]):
            pass
        else:
            self._pin(node)

    def _visit_method(self, node: torch.fx.Node) -> None:
        name = node.target
        if name in ("size", "dim"):
            return
        if name in _ELEMENTWISE_METHODS:
            self._same(node, foldable=True, activation=True)
        elif name == "flatten":
            start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
            end = node.kwargs.get("end_dim", node.args[2] if len(node.args) > 2 else -1)
            self._flatten(node, start, end)
        elif name in ("view", "reshape") and len(node.args) == 3 and node.args[2] == -1 and _is_batch(node.args[1]):
            self._flatten(node, 1)
        elif name in ("add", "add_"):
            self._add(node)
        else:
            self._pin(node)

    def _add(self, node: torch.fx.Node) -> None:
        operands = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
        values = [self.values.get(a) for a in operands]
        if len(values) == 2 and all(v is not None for v in values):
            a, b = values[0], values[1]
            assert a is not None and b is not None
            if a.flat or b.flat or a.rank != b.rank:
                self._pin(node)
                return
            root = _union(a.space, b.space)
            root.foldable = False  # a constant plus a varying unit is not constant
            self.values[node] = _Value(root, a.rank)
        elif len(values) == 1 and values[0] is not None and not isinstance(node.args[1], torch.fx.Node):
            self._same(node, foldable=True, activation=True)  # a folded constant must include the added number
        else:
            self._pin(node)


def _pads_nothing(padding: Any) -> bool:
    if isinstance(padding, int):
        return padding == 0
    if isinstance(padding, (tuple, list)):
        return all(p == 0 for p in padding)
    return False


def _is_shape(node: Any) -> bool:
    return isinstance(node, torch.fx.Node) and (
        (node.op == "call_method" and node.target == "size")
        or (node.op == "call_function" and node.target is getattr and node.args[1] == "shape")
    )


def _is_batch(arg: Any) -> bool:
    """``x.size(0)`` or ``x.shape[0]``: the batch dimension in ``x.view(x.size(0), -1)``."""
    if not isinstance(arg, torch.fx.Node):
        return False
    if arg.op == "call_method" and arg.target == "size":
        return len(arg.args) > 1 and bool(arg.args[1] == 0)
    if arg.op == "call_function" and arg.target is operator.getitem:
        return _is_shape(arg.args[0]) and bool(arg.args[1] == 0)
    return False


def _columns(units: torch.Tensor, per_unit: int) -> torch.Tensor:
    return (units[:, None] * per_unit + torch.arange(per_unit)).reshape(-1)


class _Compactor:
    """Removes dead units space by space until nothing changes (see the module docstring)."""

    def __init__(self, model: nn.Module, masks: Masks, input_shape: Sequence[int] | None) -> None:
        self.modules = dict(model.named_modules())
        tracer = _Tracer(model, input_shape)
        self.spaces = [s for s in tracer.spaces if s.parent is None and not s.pinned and s.size is not None]
        self.present = {id(s): torch.ones(s.size or 0, dtype=torch.bool) for s in self.spaces}
        layers = {layer for s in self.spaces for layer in s.producers} | {
            layer for s in self.spaces for layer, _, _ in s.consumers
        }
        # Every layer the spaces touch gets a working mask; layers the user did not mask start all-kept.
        self.current = {
            layer: masks.get(_weight_name(layer), torch.ones_like(self.modules[layer].weight, dtype=torch.bool))
            for layer in layers
        }
        self.folded = 0

    def _set_mask(self, layer: str, mask: torch.Tensor) -> None:
        module = self.modules[layer]
        with torch.no_grad():
            module.weight.mul_(mask.to(module.weight.dtype))
        self.current[layer] = mask

    def _reads(self, space: _Space) -> torch.Tensor:
        used = torch.zeros(space.size or 0, dtype=torch.bool)
        for layer, per_unit, _ in space.consumers:
            mask = self.current[layer]
            per_column = mask.transpose(0, 1).reshape(mask.shape[1], -1).any(1)
            used |= per_column.reshape(-1, per_unit).any(1)
        return used

    def _fed(self, space: _Space) -> torch.Tensor:
        fed = torch.zeros(space.size or 0, dtype=torch.bool)
        for layer in space.producers:
            fed |= self.current[layer].reshape(space.size or 0, -1).any(1)
        return fed

    def _fold(self, space: _Space, units: torch.Tensor) -> bool:
        """Fold forward-dead ``units`` into their readers' biases; False (nothing changed) if not exact."""
        if not space.foldable or len(space.producers) != 1:
            return False
        bias = self.modules[space.producers[0]].bias
        start = torch.zeros(len(units)) if bias is None else bias.detach()[units].float().clone()
        # A copy per reader: an in-place activation in one chain would change the next one's start.
        values = [_run_chain(chain, self.modules, start.clone()) for _, _, chain in space.consumers]
        for (layer, _, _), value in zip(space.consumers, values, strict=True):
            module = self.modules[layer]
            padded = not _pads_nothing(getattr(module, "padding", 0))
            if bool((value != 0).any()) and (module.bias is None or padded):
                return False
        for (layer, per_unit, _), value in zip(space.consumers, values, strict=True):
            module = self.modules[layer]
            columns = _columns(units, per_unit)
            if module.bias is not None:
                with torch.no_grad():
                    weight = module.weight.detach()[:, columns].reshape(
                        module.weight.shape[0], len(units), per_unit, -1
                    )
                    module.bias.add_((weight.sum((2, 3)) * value.to(weight.dtype)).sum(1))
            mask = self.current[layer].clone()
            mask[:, columns] = False
            self._set_mask(layer, mask)
        return True

    def _remove(self, space: _Space, units: torch.Tensor) -> None:
        for layer in space.producers:
            mask = self.current[layer].clone()
            mask[units] = False
            self._set_mask(layer, mask)
        self.present[id(space)][units] = False

    def run(self) -> None:
        changed = True
        while changed:
            changed = False
            for space in self.spaces:
                read = self._reads(space)
                unread = torch.nonzero(self.present[id(space)] & ~read).squeeze(1)
                if len(unread):
                    self._remove(space, unread)
                    changed = True
                constant = torch.nonzero(self.present[id(space)] & read & ~self._fed(space)).squeeze(1)
                if len(constant) and self._fold(space, constant):
                    self.folded += len(constant)
                    changed = True

    def plan(self) -> dict[str, dict[str, list[int]]]:
        plan: dict[str, dict[str, list[int]]] = {}
        for space in self.spaces:
            units = torch.nonzero(self.present[id(space)]).squeeze(1)
            if len(units) == space.size:
                continue
            if len(units) == 0:
                # A layer cannot have zero units; unit 0 stays, with no weight in or out it computes nothing.
                units = torch.zeros(1, dtype=torch.long)
            for layer in space.producers + space.norms:
                plan.setdefault(layer, {})["out"] = units.tolist()
            for layer, per_unit, _ in space.consumers:
                plan.setdefault(layer, {})["in"] = _columns(units, per_unit).tolist()
        return plan


def _weight_name(layer: str) -> str:
    return f"{layer}.weight" if layer else "weight"


def _run_chain(chain: tuple[torch.fx.Node, ...], modules: Mapping[str, nn.Module], value: torch.Tensor) -> torch.Tensor:
    for node in chain:
        value = _run_elementwise(node, modules, value)
    return value


def _run_elementwise(node: torch.fx.Node, modules: Mapping[str, nn.Module], value: torch.Tensor) -> torch.Tensor:
    rest_args = node.args[1:]
    if node.op == "call_module":
        return modules[str(node.target)](value)
    if node.op == "call_method":
        if node.target == "contiguous":
            return value
        return getattr(value, str(node.target).rstrip("_"))(*rest_args, **node.kwargs)
    kwargs = {k: v for k, v in node.kwargs.items() if k != "inplace"}
    return node.target(value, *rest_args, **kwargs)  # type: ignore[operator]


def apply_plan(model: nn.Module, plan: Mapping[str, Mapping[str, list[int]]]) -> nn.Module:
    """Slice the layers of ``model`` in place to the units a compaction plan keeps.

    ``plan`` maps a layer name to ``{"out": [...], "in": [...]}`` (indices kept on the output
    and input axes). Used by :func:`compact` and to rebuild a compact model from a file.

    Examples:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> apply_plan(net, {"0": {"out": [0, 2]}, "2": {"in": [0, 2]}})[2].in_features
        2
    """
    modules = dict(model.named_modules())
    for layer, axes in plan.items():
        module = modules.get(layer)
        if module is None:
            raise UserError(f"the compaction plan names layer {layer!r}, which the model does not have")
        out_units = torch.tensor(axes["out"], dtype=torch.long) if "out" in axes else None
        in_units = torch.tensor(axes["in"], dtype=torch.long) if "in" in axes else None
        with torch.no_grad():
            if isinstance(module, _NORMS):
                assert out_units is not None
                for name in ("weight", "bias"):
                    tensor = getattr(module, name)
                    if tensor is not None:
                        setattr(module, name, nn.Parameter(tensor[out_units].clone(), tensor.requires_grad))
                for name in ("running_mean", "running_var"):
                    tensor = getattr(module, name)
                    if tensor is not None:
                        setattr(module, name, tensor[out_units].clone())
                module.num_features = len(out_units)
                continue
            if not isinstance(module, _LAYERS):
                raise UserError(f"the compaction plan slices {layer!r}, which is not a linear or conv layer")
            weight = module.weight.detach()
            if out_units is not None:
                weight = weight[out_units]
                if module.bias is not None:
                    module.bias = nn.Parameter(module.bias.detach()[out_units].clone())
            if in_units is not None:
                weight = weight[:, in_units]
            module.weight = nn.Parameter(weight.clone())
            if isinstance(module, nn.Linear):
                module.out_features, module.in_features = weight.shape[0], weight.shape[1]
            else:
                module.out_channels, module.in_channels = weight.shape[0], weight.shape[1]
    return model


def _slice_masks(masks: Masks, plan: Mapping[str, Mapping[str, list[int]]]) -> Masks:
    carried = Masks(metadata=masks.metadata)
    for name, mask in masks.items():
        layer, _, tensor_name = name.rpartition(".")
        axes = plan.get(layer, {})
        if tensor_name == "weight":
            if "out" in axes:
                mask = mask[torch.tensor(axes["out"], dtype=torch.long)]
            if "in" in axes:
                mask = mask[:, torch.tensor(axes["in"], dtype=torch.long)]
        elif tensor_name == "bias" and "out" in axes:
            mask = mask[torch.tensor(axes["out"], dtype=torch.long)]
        carried[name] = mask.clone()
    return carried


def compact_with_plan(
    model: nn.Module, masks: Mapping[str, torch.Tensor], input_shape: Sequence[int] | None = None
) -> tuple[nn.Module, Masks, dict[str, dict[str, list[int]]], CompactReport]:
    """:func:`compact`, also returning the plan (for :func:`apply_plan`) and a report.

    Examples:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> masks = {"0.weight": torch.ones(3, 4).bool(), "2.weight": torch.tensor([[1, 0, 0], [0, 0, 0]]).bool()}
        >>> _, _, plan, report = compact_with_plan(net, masks, input_shape=(4,))
        >>> plan["2"]["in"], report.units["0"]
        ([0], (3, 1))
    """
    if not isinstance(model, nn.Module):
        raise UserTypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    given = masks if isinstance(masks, Masks) else Masks(masks)
    given.check_fits(model)
    already = masklib.applied(model)
    work = masklib.copy_model(model).cpu()
    masklib.remove(work)
    merged = Masks({**dict(already.items()), **dict(given.items())}, given.metadata) if already else given.clone()
    with torch.no_grad():
        for name, mask in merged.items():
            module, _, tensor_name = name.rpartition(".")
            tensor = getattr(work.get_submodule(module) if module else work, tensor_name)
            tensor.mul_(mask.to(tensor.dtype))
    kept_before = merged.kept()
    shape = input_shape if input_shape is not None else given.metadata.get("input_shape")
    compactor = _Compactor(work, merged, shape)
    compactor.run()
    plan = compactor.plan()
    sizes_before = {
        name: (m.out_features if isinstance(m, nn.Linear) else m.out_channels)
        for name, m in work.named_modules()
        if isinstance(m, _LAYERS)
    }
    for layer, mask in compactor.current.items():
        if _weight_name(layer) in merged:
            merged[_weight_name(layer)] = mask
    apply_plan(work, plan)
    carried = _slice_masks(merged, plan)
    units = {
        name: (sizes_before[name], m.out_features if isinstance(m, nn.Linear) else m.out_channels)
        for name, m in work.named_modules()
        if isinstance(m, _LAYERS)
    }
    report = CompactReport(units, kept_before, carried.kept(), compactor.folded)
    return work.to(masklib.model_device(model)), carried, plan, report


def compact(
    model: nn.Module, masks: Mapping[str, torch.Tensor], input_shape: Sequence[int] | None = None
) -> tuple[nn.Module, Masks]:
    """A physically smaller copy of ``model`` that computes what ``model`` with ``masks`` computes.

    Returns the compact model (plain parameters, masked weights zero) and the masks carried
    over to it (same names, smaller shapes); apply them with :func:`panning.masks.apply`
    before training so pruned weights stay zero. ``model`` itself is left unchanged. Masks
    already applied to ``model`` are taken into account. ``input_shape`` (one example, without
    the batch axis; by default the one :func:`panning.prune` noted in the masks' metadata)
    tells a linear layer that reads the model's input which axis holds its features; without
    it such a layer's inputs are kept whole.

    Examples:
        >>> import panning
        >>> model = panning.models.create("lenet300")
        >>> masks = panning.prune(model, 0.99, "synflow", input_shape=(1, 28, 28), iterations=5)
        >>> small, carried = compact(model, masks)
        >>> small.fc1.out_features < 300 and carried.kept() <= masks.kept()
        True
    """
    small, carried, _, _ = compact_with_plan(model, masks, input_shape)
    return small, carried


__all__ = ["CompactReport", "apply_plan", "compact", "compact_with_plan"]
