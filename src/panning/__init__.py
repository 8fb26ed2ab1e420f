"""panning: screen the sparse network worth training, before training.

Examples:
    >>> import panning, torch
    >>> model = panning.models.create("lenet300", in_channels=1, num_classes=10)
    >>> masks = panning.prune(model, sparsity=0.99, method="synflow", input_shape=(1, 28, 28), iterations=5)
    >>> masks.kept()
    2662
"""

from __future__ import annotations

import sys

__version__ = "0.1.0"

from panning import (
    agent,  # registers method="rl-panning" (Gymnasium and Stable-Baselines3 load on first use)
    data,
    inference,
    layerwise,  # registers method="uniform" and method="erk"
    masks,
    models,
    multi_index,  # registers method="panning"
    prospr,  # registers method="prospr"
    sanity,  # registers method="mask-file"
    scores,
    sparse,
    training,
)
from panning.compaction import compact
from panning.connectivity import connectivity, effective_masks, effective_sparsity
from panning.errors import TrainingDiverged, UserError, UserTypeError
from panning.masks import Masks
from panning.pruning import method_names, prune, register_method, unregister_method

# The Panning module was panning/panning.py (named like its package) until issue #18; old imports
# such as ``from panning.panning import Panning`` keep working.
sys.modules.setdefault("panning.panning", multi_index)

__all__ = [
    "Masks",
    "TrainingDiverged",
    "UserError",
    "UserTypeError",
    "__version__",
    "agent",
    "compact",
    "connectivity",
    "data",
    "effective_masks",
    "effective_sparsity",
    "inference",
    "layerwise",
    "masks",
    "method_names",
    "models",
    "multi_index",
    "prospr",
    "prune",
    "register_method",
    "sanity",
    "scores",
    "sparse",
    "training",
    "unregister_method",
]
