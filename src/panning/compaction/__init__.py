"""After screening: the masked network made small and fast, and stored small.

- :mod:`panning.compaction.dead_units`: :func:`compact` removes the units (neurons, filters,
  channels) that no kept weight reads or feeds, so the network is physically smaller and
  computes the same function;
- :mod:`panning.compaction.sparse`: sparse kernels where timing says they pay, cost counts
  (parameters and multiply-accumulates) and files holding only the kept weights;
- :mod:`panning.compaction.inference`: the fastest execution mode of a (compacted) model on
  the current device, chosen by timing.

The most used names are importable from here. ``panning.sparse`` and ``panning.inference``, the
modules' names before issue #18, still import the same modules.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> from panning.compaction import compact, model_costs
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> masks = {"0.weight": torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0]]).bool(),
    ...          "2.weight": torch.tensor([[1, 0, 0], [1, 0, 0]]).bool()}
    >>> small, carried = compact(net, masks, input_shape=(4,))
    >>> model_costs(net, (4,), masks).kept, model_costs(small, (4,)).params
    (11, 9)
"""

from __future__ import annotations

from panning.compaction.dead_units import CompactReport, apply_plan, compact, compact_with_plan
from panning.compaction.inference import InferenceModel, InferenceTiming, fastest_inference
from panning.compaction.sparse import (
    Costs,
    SparseLinear,
    load_sparse,
    model_costs,
    read_sparse_metadata,
    save_sparse,
    use_sparse_kernels,
)

__all__ = [
    "CompactReport",
    "Costs",
    "InferenceModel",
    "InferenceTiming",
    "SparseLinear",
    "apply_plan",
    "compact",
    "compact_with_plan",
    "fastest_inference",
    "load_sparse",
    "model_costs",
    "read_sparse_metadata",
    "save_sparse",
    "use_sparse_kernels",
]
