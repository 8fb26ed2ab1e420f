"""panning: screen the sparse network worth training, before training.

Examples:
    >>> import panning, torch
    >>> model = panning.models.create("lenet300", in_channels=1, num_classes=10)
    >>> masks = panning.prune(model, sparsity=0.99, method="synflow", input_shape=(1, 28, 28), iterations=5)
    >>> masks.kept()
    2662
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__version__ = "0.1.0"

from panning import (
    agent,  # registers method="rl-panning" (Gymnasium and Stable-Baselines3 load on first use)
    compaction,
    data,
    masks,
    models,
    sanity,  # registers method="mask-file"
    screening,
    training,
)
from panning.compaction import compact, inference, sparse
from panning.connectivity import connectivity, effective_masks, effective_sparsity, input_signal
from panning.errors import TrainingDiverged, UserError, UserTypeError
from panning.masks import Masks
from panning.screening import (
    layerwise,  # registers method="uniform" and method="erk"
    multi_index,  # registers method="panning"
    prospr,  # registers method="prospr"
    pruning,
    scores,
)
from panning.screening.pruning import method_names, prune, register_method, unregister_method

# The screening, sparse-kernel and inference modules sat at the top of the package until issue #18
# (and the Panning module was panning/panning.py, named like its package); old imports such as
# ``import panning.scores``, ``from panning.sparse import save_sparse`` or
# ``from panning.panning import Panning`` keep working.
for _old, _module in {
    "panning.panning": multi_index,
    "panning.pruning": pruning,
    "panning.scores": scores,
    "panning.multi_index": multi_index,
    "panning.prospr": prospr,
    "panning.layerwise": layerwise,
    "panning.sparse": sparse,
    "panning.inference": inference,
}.items():
    sys.modules.setdefault(_old, _module)
del _old, _module

# What the package registers itself stays: unregister is for plug-ins' and tests' own entries.
pruning._METHODS.mark_built_in()
models._REGISTRY.mark_built_in()

# Modules that pull in heavier dependencies (plots, grids, executors) load on first use, so that
# ``panning.report.ScreeningTrace`` or ``panning.bench.run_grid`` work after a plain ``import panning``.
_ON_FIRST_USE = {"bench", "executors", "report"}


def __getattr__(name: str) -> Any:
    if name in _ON_FIRST_USE:
        return importlib.import_module(f"panning.{name}")
    raise AttributeError(f"module 'panning' has no attribute {name!r}")


__all__ = [
    "Masks",
    "TrainingDiverged",
    "UserError",
    "UserTypeError",
    "__version__",
    "agent",
    "compact",
    "compaction",
    "connectivity",
    "data",
    "effective_masks",
    "effective_sparsity",
    "inference",
    "input_signal",
    "layerwise",
    "masks",
    "method_names",
    "models",
    "multi_index",
    "prospr",
    "prune",
    "pruning",
    "register_method",
    "sanity",
    "scores",
    "screening",
    "sparse",
    "training",
    "unregister_method",
]
