"""The panning agent (Kang et al. 2022): reinforcement learning chooses the index weights at every step.

The environment, TD3 training and the ``rl-panning`` method live in :mod:`panning.agent.learning`,
which needs Gymnasium and Stable-Baselines3; they are imported the first time one of its names
is used (``panning.agent.PanningEnv``, ``method="rl-panning"``), so ``import panning`` stays light.

Examples:
    >>> import panning
    >>> "rl-panning" in panning.method_names()
    True
    >>> agent_file().name
    'default.zip'
"""

from __future__ import annotations

import importlib
import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from panning.errors import UserError
from panning.screening.pruning import register_method

if TYPE_CHECKING:
    from panning.agent.learning import RLPanning

SHIPPED_AGENT = "default.zip"
# Defaults of agent training that `panning agent train` and panning.agent.learning share, stated once.
TRAINING_DEFAULTS: dict[str, int] = {"iterations": 20, "seed": 0, "eval_every": 1000, "checkpoint_every": 1000}
# Names of panning.agent.learning offered here, loaded with it on first use.
LEARNING_NAMES = (
    "AgentInfo",
    "PanningEnv",
    "RLPanning",
    "action_space",
    "checkpoint_dir",
    "index_weights",
    "load_agent",
    "observation_space",
    "parse_targets",
    "save_agent",
    "train_agent",
)


def shipped_agent_path() -> Path:
    """The pretrained agent inside the package (``rl-panning`` uses it without ``agent=``).

    Examples:
        >>> shipped_agent_path().name
        'default.zip'
    """
    return Path(str(resources.files("panning") / "agents" / SHIPPED_AGENT))


def agent_file(path: str | os.PathLike[str] | None = None) -> Path:
    """The agent file ``path`` names (the shipped agent for ``None``), checked to exist.

    Examples:
        >>> agent_file().name
        'default.zip'
    """
    file = shipped_agent_path() if path is None else Path(path)
    if not file.is_file():
        raise UserError(f"no agent at {file}; train one with `panning agent train ... --out {file}`")
    return file


@register_method("rl-panning")
def _rl_panning(agent: str | os.PathLike[str] | None = None) -> RLPanning:
    from panning.agent.learning import RLPanning

    return RLPanning(agent)


def __getattr__(name: str) -> Any:
    if name in LEARNING_NAMES:
        return getattr(importlib.import_module("panning.agent.learning"), name)
    raise AttributeError(f"module 'panning.agent' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *LEARNING_NAMES])


__all__ = ["LEARNING_NAMES", "SHIPPED_AGENT", "TRAINING_DEFAULTS", "agent_file", "shipped_agent_path", *LEARNING_NAMES]
