"""The panning agent (Kang et al. 2022): reinforcement learning chooses the index weights at every step.

:class:`PanningEnv` is one screening run as a Gymnasium episode. Each step takes three numbers
in [-1, 1]; ``action + 1`` are the weights of (SynFlow, SNIP, GraSP) for that step's Panning
scores on the current masked network, whose global top ``k_t`` becomes the new mask. The
observation (7 numbers, independent of the architecture) is

====  ================================================================================
0     loss of the masked network on the episode's probe batch, over the dense network's
1     its ``gᵀg``, over the dense network's
2     the change of loss this step caused, over the dense loss
3     the change of ``gᵀg`` this step caused, over the dense ``gᵀg``, divided by 5
4     effective sparsity of the current mask
5     the sparsity the next step will reach, ``1 - k_{t+1}`` (at reset this carries the
      episode's target: ``1 - k_1`` grows with it)
6     progress ``t / T``
====  ================================================================================

and the reward of step ``t`` is ``-(100 |s_t - e_t| + |Δloss| + |ΔgᵀG| / 5)`` in those units,
with ``s_t`` the step's target sparsity and ``e_t`` the effective sparsity reached. An episode
ends after ``T`` steps, or earlier with the extra penalty ``-(T - t)`` when the network is cut
(effective sparsity 1). The probe batch is drawn once per episode and the dense network is
evaluated on it once, at reset: the normalisation is stationary (the reference's running
min/max drifts as training goes) and a step costs one Panning step plus one loss and ``gᵀg``
evaluation of the masked network, with no model copies.

:func:`train_agent` trains Stable-Baselines3's TD3 on it; ``method="rl-panning"`` applies an
agent (the shipped one by default) as one deterministic episode at the requested sparsity.

Examples:
    >>> import torch, panning
    >>> x, y = torch.randn(100, 1, 28, 28), torch.arange(100) % 10
    >>> env = PanningEnv(panning.models.create("lenet300"), (x, y), iterations=4, samples_per_class=2)
    >>> observation, info = env.reset(seed=0, options={"target": 0.9})
    >>> observation.shape, round(float(observation[5]), 3)
    ((7,), 0.438)
    >>> observation, reward, terminated, truncated, info = env.step(np.zeros(3, dtype=np.float32))
    >>> info["kept"], terminated
    (149695, False)
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from panning.agent import LEARNING_NAMES, TRAINING_DEFAULTS, agent_file
from panning.connectivity import connectivity
from panning.errors import UserError, UserTypeError, check_sparsity
from panning.io import changed_settings, write_atomic
from panning.masks import Masks
from panning.screening import scores as indices
from panning.screening.multi_index import INDEX_ORDER, Combination, IndexNormalization, Panning, weighted_scores
from panning.screening.pruning import BatchSource, DataLike, Screening, StepContext

OBSERVATION_SIZE = 7
REWARD_SCALE_SCHEDULE = 100.0
GTG_DIVISOR = 5.0
# Ratios of loss and gᵀg are clipped here: a network near its cut can multiply gᵀg by thousands,
# which would swamp both the critic's inputs and the reward.
RATIO_LIMIT = 10.0

ModelSource = nn.Module | Callable[[], nn.Module]


def _evaluate(
    model: nn.Module, masks: Mapping[str, torch.Tensor] | None, batch: tuple[torch.Tensor, torch.Tensor], names: Any
) -> tuple[float, float]:
    """Loss (temperature 1) and ``gᵀg`` of the masked network on ``batch``: one forward and backward pass."""
    result = indices.loss_aware_scores(model, batch[0], batch[1], masks, 1.0, False, False, names)
    return result.loss, result.grad_norm_sq


@dataclass
class _Probe:
    """What the observation and reward remember across steps of one episode."""

    batch: tuple[torch.Tensor, torch.Tensor]
    dense_loss: float
    dense_gtg: float
    loss: float
    gtg: float

    @classmethod
    def start(cls, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], names: Any) -> _Probe:
        loss, gtg = _evaluate(model, None, batch, names)
        # A zero gᵀg (a model whose loss is flat at init) would divide by zero; any tiny scale keeps
        # the ratios finite and they are clipped anyway.
        return cls(batch, max(loss, 1e-12), max(gtg, 1e-12), loss, gtg)

    def advance(self, model: nn.Module, masks: Masks, names: Any) -> tuple[float, float]:
        """Evaluate the new mask; returns the normalised changes of loss and ``gᵀg`` this step caused."""
        loss, gtg = _evaluate(model, masks, self.batch, names)
        change_loss = _clip((loss - self.loss) / self.dense_loss)
        change_gtg = _clip((gtg - self.gtg) / self.dense_gtg / GTG_DIVISOR)
        self.loss, self.gtg = loss, gtg
        return change_loss, change_gtg

    def observation(
        self, change_loss: float, change_gtg: float, effective: float, next_sparsity: float, progress: float
    ) -> np.ndarray:
        return np.array(
            [
                min(self.loss / self.dense_loss, RATIO_LIMIT),
                min(self.gtg / self.dense_gtg, RATIO_LIMIT),
                change_loss,
                change_gtg,
                effective,
                next_sparsity,
                progress,
            ],
            dtype=np.float32,
        )


def _clip(value: float) -> float:
    return float(min(max(value, -RATIO_LIMIT), RATIO_LIMIT)) if math.isfinite(value) else RATIO_LIMIT


def observation_space() -> gym.spaces.Box:
    """The 7-number observation (see the module docstring for what each number is).

    Examples:
        >>> observation_space().shape
        (7,)
    """
    low = np.array([0, 0, -RATIO_LIMIT, -RATIO_LIMIT, 0, 0, 0], dtype=np.float32)
    high = np.array([RATIO_LIMIT, RATIO_LIMIT, RATIO_LIMIT, RATIO_LIMIT, 1, 1, 1], dtype=np.float32)
    return gym.spaces.Box(low, high, dtype=np.float32)


def action_space() -> gym.spaces.Box:
    """Three numbers in [-1, 1]: ``action + 1`` weighs (SynFlow, SNIP, GraSP).

    Examples:
        >>> action_space().shape, float(action_space().low[0]), float(action_space().high[0])
        ((3,), -1.0, 1.0)
    """
    return gym.spaces.Box(-1.0, 1.0, (3,), dtype=np.float32)


def index_weights(action: Any) -> dict[str, float]:
    """The index weights of an action: ``action + 1``, clipped to [0, 2]; all zero means equal weights.

    Examples:
        >>> index_weights([-1.0, 0.0, 0.5])
        {'synflow': 0.0, 'snip': 1.0, 'grasp': 1.5}
    """
    values = np.asarray(action, dtype=np.float64).reshape(-1)
    if values.shape != (3,) or not np.isfinite(values).all():
        raise UserError(f"an action is 3 finite numbers in [-1, 1] (synflow, snip, grasp), got {action!r}")
    weights = np.clip(values, -1.0, 1.0) + 1.0
    if not weights.any():
        weights = np.ones(3)
    return {name: float(w) for name, w in zip(INDEX_ORDER, weights)}


def parse_targets(text: str) -> tuple[tuple[float, float], ...]:
    """``"0.8:1.0"`` or ``"0.9:1.0,0.98:1.0"`` (ranges drawn with equal chance) or ``"0.99"``.

    Examples:
        >>> parse_targets("0.9:1.0,0.98:1.0")
        ((0.9, 1.0), (0.98, 1.0))
    """
    ranges = []
    for part in str(text).split(","):
        bounds = part.strip().split(":")
        try:
            values = [float(b) for b in bounds]
        except ValueError:
            raise UserError(f"bad target range {part!r}; write LOW:HIGH, e.g. 0.8:1.0") from None
        if len(values) == 1:
            values = values * 2
        if len(values) != 2:
            raise UserError(f"bad target range {part!r}; write LOW:HIGH, e.g. 0.8:1.0")
        ranges.append((values[0], values[1]))
    return _check_targets(ranges)


def _check_targets(targets: Any) -> tuple[tuple[float, float], ...]:
    if isinstance(targets, str):
        return parse_targets(targets)
    if isinstance(targets, (int, float)):
        targets = [(targets, targets)]
    try:
        ranges = tuple((float(low), float(high)) for low, high in targets)
    except (TypeError, ValueError):
        raise UserTypeError("targets must be (low, high) sparsity ranges, e.g. [(0.8, 1.0)]") from None
    if not ranges:
        raise UserError("targets needs at least one (low, high) range")
    for low, high in ranges:
        if not 0.0 <= low <= high <= 1.0:
            raise UserError(f"a target range needs 0 <= low <= high <= 1, got ({low}, {high})")
    return ranges


class PanningEnv(gym.Env):
    """One Panning screening run as an episode; see the module docstring.

    ``model`` is a module (screened from its own initialisation every episode) or a callable
    returning a fresh module (called at every reset under a seeded torch generator, so episodes
    see new initialisations); a list of either is drawn from per episode. ``data`` feeds the
    scoring and probe batches. Each episode draws its target sparsity from one of ``targets``
    (``(low, high)`` ranges, chosen with equal chance; ``cycle_targets`` walks through them in
    order instead, as evaluation wants) unless ``reset(options={"target": s})`` gives it.
    ``iterations`` is ``T``, the steps per episode.

    ``info`` of every step holds its trace: step, target and effective sparsity, kept count,
    index weights, loss and ``gᵀg`` of the masked network, and the reward's parts.
    """

    metadata = {"render_modes": ["ansi"]}  # noqa: RUF012 - an instance attribute of gymnasium.Env, set per class

    def __init__(
        self,
        model: ModelSource | Sequence[ModelSource],
        data: DataLike,
        targets: Any = ((0.8, 1.0),),
        iterations: int = TRAINING_DEFAULTS["iterations"],
        samples_per_class: int = 10,
        schedule: str = "exponential",
        normalization: IndexNormalization = "zscore-abs",
        combination: Combination = "additive",
        temperature: float = indices.GRASP_TEMPERATURE,
        parameters: Sequence[str] | None = None,
        cycle_targets: bool = False,
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        sources = list(model) if isinstance(model, Sequence) else [model]
        if not sources or not all(isinstance(m, nn.Module) or callable(m) for m in sources):
            raise UserTypeError("model must be an nn.Module, a callable returning one, or a list of those")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise UserError(f"iterations must be a positive integer, got {iterations!r}")
        if data is None:
            raise UserError("the panning agent is data-driven: pass data=(inputs, targets), a dataset or a DataLoader")
        scoring = Panning(normalization, combination, temperature=float(temperature))  # checks as method="panning"
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise UserError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.sources = sources
        self.data = data
        self.targets = _check_targets(targets)
        self.iterations = iterations
        self.samples_per_class = samples_per_class
        self.schedule = schedule
        self.normalization, self.combination, self.temperature, self.grasp = scoring.scoring()
        self.parameters = parameters
        self.cycle_targets = cycle_targets
        self.render_mode = render_mode
        self.observation_space = observation_space()
        self.action_space = action_space()
        self.episodes = 0
        self.model: nn.Module | None = None
        self._trace: list[dict[str, Any]] = []

    def _draw_target(self, options: dict[str, Any] | None) -> float:
        if options and "target" in options:
            return check_sparsity(options["target"])
        if self.cycle_targets:
            low, high = self.targets[self.episodes % len(self.targets)]
        else:
            low, high = self.targets[int(self.np_random.integers(len(self.targets)))]
        return float(min(self.np_random.uniform(low, high) if high > low else low, 1.0 - 1e-9))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:  # a seeded reset starts the same sequence of models and targets again
            self.episodes = 0
        self.target = self._draw_target(options)
        episode_seed = int(seed) if seed is not None else int(self.np_random.integers(2**31 - 1))
        # Cycling through targets, each model takes every target in turn (not one model per target).
        turn = self.episodes // len(self.targets) if self.cycle_targets else self.episodes
        source = self.sources[turn % len(self.sources)]
        self.episodes += 1
        if isinstance(source, nn.Module):
            self.model = source
        else:
            with torch.random.fork_rng():
                torch.manual_seed(episode_seed)
                self.model = source()
            if not isinstance(self.model, nn.Module):
                raise UserTypeError(f"the model factory returned {type(self.model).__name__}, not an nn.Module")
        self.device = next(self.model.parameters()).device
        self.generator = torch.Generator().manual_seed(episode_seed)
        self.batches = BatchSource(self.data, self.samples_per_class, self.generator, self.device)
        self.input_shape = self.batches.input_shape
        self.screening = Screening(
            self.model,
            self.target,
            self.iterations,
            self.schedule,
            self.parameters,
            batches=self.batches,
            input_shape=self.input_shape,
            generator=self.generator,
        )
        self.probe = _Probe.start(self.model, self.batches.next(), self.parameters)
        self._trace = []
        observation = self.probe.observation(0.0, 0.0, 0.0, self.screening.sparsity_at(1), 0.0)
        return observation, {"target": self.target}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.model is None:
            raise UserError("call reset() before step()")
        if self.screening.step >= self.iterations:
            raise UserError("the episode has ended; call reset()")
        weights = index_weights(action)
        with indices.preserved_modes(self.model, train=True):
            context = self.screening.next_context()
            scores = weighted_scores(
                self.model, context, weights, self.normalization, self.combination, self.temperature, self.grasp
            )
            masks = self.screening.select(scores)
            change_loss, change_gtg = self.probe.advance(self.model, masks, self.parameters)
        report = connectivity(self.model, masks, input_shape=self.input_shape)
        effective = report.effective_sparsity
        step, total = self.screening.step, self.iterations
        target_now = 1.0 - self.screening.density
        schedule_penalty = REWARD_SCALE_SCHEDULE * abs(target_now - effective)
        reward = -(schedule_penalty + abs(change_loss) + abs(change_gtg))
        cut = effective >= 1.0
        if cut:
            reward -= total - step
        terminated = cut or step == total
        observation = self.probe.observation(
            change_loss, change_gtg, effective, self.screening.sparsity_at(step + 1), step / total
        )
        info: dict[str, Any] = {
            "step": step,
            "target_sparsity": target_now,
            "effective_sparsity": effective,
            "kept": masks.kept(),
            **{f"w_{name}": w for name, w in weights.items()},
            "loss": self.probe.loss,
            "grad_norm_sq": self.probe.gtg,
            "reward_schedule": -schedule_penalty,
            "reward_loss": -abs(change_loss),
            "reward_gtg": -abs(change_gtg),
            "collapsed_layers": len(report.collapsed_layers),
        }
        self._trace.append(info)
        info = {**info, "masks": masks} if terminated else info
        return observation, float(reward), bool(terminated), False, info

    @property
    def masks(self) -> Masks:
        """The current mask of the episode."""
        return self.screening.masks

    def render(self) -> str | None:
        if self.render_mode != "ansi" or not self._trace:
            return None
        last = self._trace[-1]
        return (
            f"step {last['step']}/{self.iterations}: target {last['target_sparsity']:.4f}, "
            f"effective {last['effective_sparsity']:.4f}, weights "
            f"({last['w_synflow']:.2f}, {last['w_snip']:.2f}, {last['w_grasp']:.2f}), loss {last['loss']:.4f}"
        )


def _check_same_training(folder: Path, earlier: Mapping[str, Any], record: AgentInfo) -> None:
    """Refuse to resume an agent's training with settings other than those it started with."""
    fixed = (  # timesteps may grow
        "models",
        "dataset",
        "targets",
        "iterations",
        "samples_per_class",
        "seed",
        "input_normalization",
        "val_size",
    )
    for name, (before, after) in changed_settings(earlier, asdict(record), fixed).items():
        raise UserError(
            f"the training in {folder} was started with {name} = {before!r}, not {after!r}; resume with the "
            "same settings or remove the folder to start anew"
        )


# The attribute of a Stable-Baselines3 model that carries its AgentInfo into and out of the zip.
AGENT_RECORD = "panning_agent"


@dataclass
class AgentInfo:
    """How an agent was trained, saved inside its zip (``panning_agent`` attribute)."""

    iterations: int
    targets: list[list[float]]
    models: list[str]
    dataset: str
    samples_per_class: int
    normalization: IndexNormalization
    combination: Combination
    temperature: float
    timesteps: int
    seed: int
    seconds: float = 0.0
    command: str = ""
    # The data the episodes saw (recorded from issue #16's review on; None in older agents).
    input_normalization: str | None = None
    val_size: int | None = None


def load_agent(path: str | os.PathLike[str] | None = None, device: str = "cpu") -> tuple[Any, AgentInfo]:
    """A trained TD3 agent and how it was trained; ``None`` loads the shipped one.

    Examples:
        >>> agent, info = load_agent()
        >>> agent.observation_space.shape, info.iterations > 0
        ((7,), True)
    """
    from stable_baselines3 import TD3

    file = agent_file(path)
    try:
        agent = TD3.load(file, device=device)
    except Exception as error:  # SB3 raises zipfile, pickle, key and value errors on foreign files
        raise UserError(f"{file} is not a panning agent saved by `panning agent train` ({error})") from None
    if agent.observation_space.shape != (OBSERVATION_SIZE,) or agent.action_space.shape != (3,):
        raise UserError(
            f"{file} is an agent for observations {agent.observation_space.shape} and actions "
            f"{agent.action_space.shape}; a panning agent has (7,) and (3,)"
        )
    stored = getattr(agent, AGENT_RECORD, None)
    if not isinstance(stored, Mapping):
        raise UserError(f"{file} lacks the panning training record; train it with `panning agent train`")
    fields = {name: stored[name] for name in AgentInfo.__dataclass_fields__ if name in stored}
    missing = [
        name for name, spec in AgentInfo.__dataclass_fields__.items() if name not in fields and spec.default is MISSING
    ]
    if missing:
        raise UserError(
            f"{file}'s training record lacks {', '.join(missing)}; it was not written by this version of "
            "`panning agent train`: train the agent again"
        )
    return agent, AgentInfo(**fields)


@dataclass
class RLPanning:
    """``method="rl-panning"``: one deterministic episode of a trained agent (Kang et al. 2022).

    At every step the agent sees the 7-number observation of the current mask and chooses the
    index weights; scoring is Panning's, with the normalisation and combination the agent was
    trained with, in float64 as in its training (Panning's own default is float32). ``agent`` is
    a path or ``None`` for the shipped agent. Without ``iterations`` or ``samples_per_class`` the
    episode has as many steps, and scores as many examples per class, as the agent's training
    episodes: it replays the agent's own episode.
    """

    agent: str | os.PathLike[str] | None = None
    data_driven: bool = True
    default_iterations: int = field(init=False)
    default_samples_per_class: int = field(init=False)

    def __post_init__(self) -> None:
        self.policy, self.info = load_agent(self.agent)
        self.default_iterations = int(self.info.iterations)
        self.default_samples_per_class = int(self.info.samples_per_class)
        self._scoring = Panning(self.info.normalization, self.info.combination, temperature=self.info.temperature)
        self._probe: _Probe | None = None

    def _warn_if_other_data(self, context: StepContext) -> None:
        """Say so when a library dataset is not the one (or not preprocessed as) the agent was trained on."""
        from panning.data import Dataset

        data = context.batches.data if context.batches is not None else None
        if not isinstance(data, Dataset):
            return
        trained = self.info.input_normalization
        if data.name != self.info.dataset or (trained is not None and data.normalization != trained):
            warnings.warn(
                f"the agent was trained on {self.info.dataset} ({trained or 'standard'} inputs), not {data.name} "
                f"({data.normalization}): its policy may not carry over (train one there with `panning agent train`)",
                stacklevel=3,
            )

    def _warn_if_other_model(self, model: nn.Module, names: Sequence[str] | None) -> None:
        """Say so when the screened weights have the shapes of none of the models the agent was
        trained on (a user's own network, or a registered one at another input size)."""
        from panning import data as datasets
        from panning import models as registry
        from panning.masks import prunable_parameters

        if self.info.dataset not in datasets.names():
            return  # trained on data of its own (from_tensors): no registered shapes to compare with
        shapes = sorted(tuple(weight.shape) for weight in prunable_parameters(model, names).values())
        for name in self.info.models:
            if name not in registry.names():
                return  # trained on a model registered elsewhere: nothing to compare with
            trained = prunable_parameters(registry.for_dataset(name, self.info.dataset)).values()
            if sorted(tuple(weight.shape) for weight in trained) == shapes:
                return
        warnings.warn(
            f"the agent was trained on {', '.join(self.info.models)} ({self.info.dataset}); this "
            f"{type(model).__name__}'s layers match none of them: its policy may not carry over "
            "(train one on this model with `panning agent train`, or register it first)",
            stacklevel=3,
        )

    def files(self) -> dict[str, Path]:
        """The agent file this method reads (its digest is part of a grid cell's identity)."""
        return {"agent": agent_file(self.agent)}

    def __call__(self, model: nn.Module, context: StepContext) -> dict[str, torch.Tensor]:
        names = context.parameters
        next_sparsity = 1.0 - context.density
        if context.step == 1 or self._probe is None:
            if context.iterations != self.default_iterations:
                warnings.warn(
                    f"the agent was trained on episodes of {self.default_iterations} steps, not {context.iterations}: "
                    "its progress observations follow a path it never saw; leave iterations out to use its own",
                    stacklevel=2,
                )
            self._warn_if_other_data(context)
            self._warn_if_other_model(model, names)
            self._probe = _Probe.start(model, context.batch(), names)
            observation = self._probe.observation(0.0, 0.0, 0.0, next_sparsity, 0.0)
        else:
            change_loss, change_gtg = self._probe.advance(model, context.masks, names)
            effective = connectivity(model, context.masks, input_shape=context.input_shape).effective_sparsity
            progress = (context.step - 1) / context.iterations
            observation = self._probe.observation(change_loss, change_gtg, effective, next_sparsity, progress)
        action, _ = self.policy.predict(observation, deterministic=True)
        weights = index_weights(action)
        return weighted_scores(model, context, weights, *self._scoring.scoring())


def _keep_evaluations(evaluator: Any, path: Path, done: int) -> None:
    """Start a resumed run's evaluation record with the evaluations up to its checkpoint: SB3's
    callback rewrites ``evaluations.npz`` from its own lists, which would drop the earlier ones."""
    if not path.is_file():
        return
    try:
        with np.load(path) as saved:
            keep = [i for i, step in enumerate(saved["timesteps"].tolist()) if step <= done]
            evaluator.evaluations_timesteps = [int(saved["timesteps"][i]) for i in keep]
            evaluator.evaluations_results = [saved["results"][i].tolist() for i in keep]
            evaluator.evaluations_length = [saved["ep_lengths"][i].tolist() for i in keep]
    except (OSError, KeyError, ValueError) as error:
        raise UserError(
            f"{path} cannot be read ({error}); move it away to resume without the earlier evaluations"
        ) from None


def _latest_checkpoint(folder: Path) -> tuple[Path, Path] | None:
    found = []
    for path in folder.glob("agent_*_steps.zip"):
        try:
            found.append((int(path.stem.split("_")[1]), path))
        except (IndexError, ValueError):
            continue
    for steps, path in sorted(found, reverse=True):
        buffer = folder / f"agent_replay_buffer_{steps}_steps.pkl"
        if buffer.is_file():
            return path, buffer
    return None


def checkpoint_dir(out: str | os.PathLike[str]) -> Path:
    """Where training keeps checkpoints, evaluations and logs: ``agent.zip`` -> ``agent-training/``.

    Examples:
        >>> checkpoint_dir("runs/agent.zip").as_posix()
        'runs/agent-training'
    """
    path = Path(out)
    return path.with_name(path.stem + "-training")


def _agent_folder(
    out: str | os.PathLike[str], timesteps: int, resume: bool, tensorboard: str | os.PathLike[str] | None
) -> tuple[Path, tuple[Path, Path] | None]:
    """Check an agent training's settings; its checkpoint folder and latest checkpoint, if any."""
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
        raise UserError(f"timesteps must be a positive integer, got {timesteps!r}")
    out_path = Path(out)
    if out_path.suffix != ".zip":
        raise UserError(f"the agent file must end in .zip, got {out_path.name}")
    if tensorboard is not None:
        try:
            import tensorboard as _  # noqa: F401
        except ImportError:
            raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    folder = checkpoint_dir(out_path)
    latest = _latest_checkpoint(folder) if folder.is_dir() else None
    if resume and latest is None:
        raise UserError(f"nothing to resume: no checkpoint with its replay buffer in {folder}")
    if not resume and latest is not None:
        raise UserError(f"{folder} holds checkpoints of an earlier run; pass --resume or remove the folder")
    if not resume and out_path.exists():
        raise UserError(f"{out_path} already exists; choose another --out or delete it first (nothing was changed)")
    return folder, latest


def _new_td3(
    env: Any,
    timesteps: int,
    asked: Mapping[str, Any],
    tensorboard_log: str | None,
    seed: int,
) -> Any:
    """TD3 with the reference's settings where they fit (see :func:`train_agent`) and the learner's
    settings ``asked`` (None: the defaults)."""
    from stable_baselines3 import TD3
    from stable_baselines3.common.noise import NormalActionNoise

    defaults = {
        "learning_starts": min(2000, timesteps // 4),
        "net_arch": (64, 64),
        "learning_rate": 2e-4,
        "batch_size": 256,
    }
    learner = {**defaults, **{name: value for name, value in asked.items() if value is not None}}
    return TD3(
        "MlpPolicy",
        env,
        learning_rate=learner["learning_rate"],
        buffer_size=timesteps,
        learning_starts=int(learner["learning_starts"]),
        batch_size=learner["batch_size"],
        tau=0.01,
        gamma=0.99,
        policy_delay=2,
        target_policy_noise=0.2,
        target_noise_clip=0.5,
        action_noise=NormalActionNoise(np.zeros(3), 0.1 * np.ones(3)),
        policy_kwargs={"net_arch": list(learner["net_arch"])},
        tensorboard_log=tensorboard_log,
        seed=seed,
        device="cpu",
        verbose=0,
    )


def train_agent(
    env: PanningEnv,
    timesteps: int,
    out: str | os.PathLike[str],
    record: AgentInfo,
    eval_env: PanningEnv | None = None,
    seed: int = TRAINING_DEFAULTS["seed"],
    learning_starts: int | None = None,
    eval_every: int = TRAINING_DEFAULTS["eval_every"],
    eval_episodes: int = 4,
    checkpoint_every: int = TRAINING_DEFAULTS["checkpoint_every"],
    resume: bool = False,
    tensorboard: str | os.PathLike[str] | None = None,
    progress: bool = True,
    net_arch: Sequence[int] | None = None,
    learning_rate: float | None = None,
    batch_size: int | None = None,
) -> Any:
    """Train Stable-Baselines3's TD3 on ``env`` for ``timesteps`` steps and save it to ``out``.

    The reference's settings where they fit: batch 256, discount 0.99, tau 0.01, policy noise
    0.2 clipped at 0.5, policy delay 2, Gaussian exploration noise 0.1, learning rate 2e-4;
    ``learning_starts`` random steps first (default the reference's 2000, at most a quarter of
    ``timesteps``). The networks are 64-64 (the observation has 7 numbers; the file stays
    small). The learner's settings (``learning_starts``, ``net_arch``, ``learning_rate``,
    ``batch_size``; None: these defaults) are the checkpoint's on ``resume``: others are
    refused. Every ``checkpoint_every`` steps the agent and its replay buffer are saved in
    :func:`checkpoint_dir`; ``resume`` continues from the latest (not past a finished agent). Every
    ``eval_every`` steps ``eval_episodes`` deterministic episodes of ``eval_env`` are scored
    (``evaluations.npz``). The final agent is written atomically, with ``record`` inside.

    Examples:
        >>> env = PanningEnv(lambda: panning.models.create("lenet5"), panning.data.load("mnist"))  # doctest: +SKIP
        >>> agent = train_agent(env, 2000, "agent.zip", record)  # doctest: +SKIP
    """
    from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback, EvalCallback
    from stable_baselines3.common.monitor import Monitor

    _check_steps(learning_starts, timesteps, checkpoint_every)
    asked = dict(learning_starts=learning_starts, learning_rate=learning_rate, batch_size=batch_size, net_arch=net_arch)
    folder, latest = _agent_folder(out, timesteps, resume, tensorboard)
    out_path = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    monitored = Monitor(env)
    if resume:
        assert latest is not None
        agent = _resumed_agent(latest, monitored, folder, record, asked)
        done = _refuse_finished(out_path, agent.num_timesteps, timesteps)
    else:
        tensorboard_log = None if tensorboard is None else str(tensorboard)
        agent = _new_td3(monitored, timesteps, asked, tensorboard_log, seed)
        done = 0
    callbacks: list[Any] = [
        _bookkeeping(record, timesteps, progress),  # first, so each checkpoint carries the current record
        CheckpointCallback(checkpoint_every, str(folder), name_prefix="agent", save_replay_buffer=True, verbose=0),
    ]
    if eval_env is not None and eval_every > 0:
        eval_env.reset(seed=seed + 1)  # the evaluation episodes follow the seed like the training ones
        evaluator = EvalCallback(
            Monitor(eval_env),
            n_eval_episodes=eval_episodes,
            eval_freq=eval_every,
            log_path=str(folder),
            deterministic=True,
            verbose=0,
        )
        if resume:
            _keep_evaluations(evaluator, folder / "evaluations.npz", done)
        callbacks.append(evaluator)
    remaining = timesteps - done
    if remaining > 0:
        agent.learn(remaining, callback=CallbackList(callbacks), reset_num_timesteps=not resume, log_interval=10)
    record.timesteps = int(agent.num_timesteps)
    setattr(agent, AGENT_RECORD, asdict(record))
    save_agent(agent, out_path)
    return agent


def _check_steps(learning_starts: int | None, timesteps: int, checkpoint_every: int) -> None:
    """Refuse step counts TD3 cannot use."""
    if learning_starts is not None and not 0 <= learning_starts < timesteps:
        raise UserError(
            f"--learning-starts must be at least 0 and below --timesteps ({timesteps}), got {learning_starts}: "
            "TD3 learns nothing before it"
        )
    if checkpoint_every < 1:
        raise UserError(f"--checkpoint-every must be a positive number of steps, got {checkpoint_every}")


def _refuse_finished(out_path: Path, done: int, timesteps: int) -> int:
    """``done`` (the steps a checkpoint holds), unless the agent is finished: its last checkpoint
    precedes the final update, and saving it would replace the finished agent."""
    if done >= timesteps and out_path.is_file():
        raise UserError(
            f"{out_path} already holds the agent of all {timesteps} steps: nothing to resume (nothing was "
            "changed); pass more --timesteps to train on, or choose another --out"
        )
    return done


def _resumed_agent(
    latest: tuple[Path, Path], env: Any, folder: Path, record: AgentInfo, asked: Mapping[str, Any]
) -> Any:
    """The agent and replay buffer of the latest checkpoint, its settings checked against ``record``
    (whose seconds carry on from the checkpoint's) and its learner's against ``asked`` (None: any)."""
    from stable_baselines3 import TD3

    try:
        agent = TD3.load(latest[0], env=env, device="cpu")
        agent.load_replay_buffer(latest[1])
    except Exception as error:  # SB3 raises zipfile, pickle and EOF errors on a file cut short
        raise UserError(
            f"the checkpoint {latest[0].name} in {folder} cannot be read ({type(error).__name__}: {error}); "
            "it was probably cut short: delete it and its replay buffer to resume from the one before"
        ) from None
    _check_same_learner(folder, agent, asked)
    earlier = getattr(agent, AGENT_RECORD, None)  # the checkpoint's record: settings, seconds so far
    if isinstance(earlier, Mapping):
        _check_same_training(folder, earlier, record)
    record.seconds = float(earlier.get("seconds", 0.0)) if isinstance(earlier, Mapping) else 0.0
    return agent


def _check_same_learner(folder: Path, agent: Any, asked: Mapping[str, Any]) -> None:
    """Refuse learner settings other than the checkpoint's: the loaded TD3 keeps its own, and
    would silently ignore the new ones."""
    kept = {
        "learning_starts": agent.learning_starts,
        "learning_rate": agent.learning_rate,
        "batch_size": agent.batch_size,
        "net_arch": list(agent.policy_kwargs.get("net_arch", [])),
    }
    for name, value in asked.items():
        if value is not None and (list(value) if name == "net_arch" else value) != kept[name]:
            # Only --learning-starts is a flag of `panning agent train`; the others are train_agent's keywords.
            given = "--learning-starts" if name == "learning_starts" else f"{name}="
            raise UserError(
                f"the training in {folder} was started with {name} {kept[name]!r}, not {value!r}; the checkpoint "
                f"keeps its own: resume without {given} (or with the same value), or remove the folder to start anew"
            )


def save_agent(agent: Any, out: str | os.PathLike[str]) -> None:
    """Write an agent's zip atomically (a temporary file in the same folder, then a rename).

    Examples:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "agent.zip"
        >>> agent, _ = load_agent()
        >>> save_agent(agent, path)
        >>> path.is_file()
        True
    """
    write_atomic(out, agent.save)  # SB3 keeps a path that has a suffix, so the temporary name stands


def _bookkeeping(record: AgentInfo, total: int, progress: bool) -> Any:
    """A callback keeping ``record`` (training seconds, steps) current inside the agent, and a tqdm
    bar over the steps when ``progress`` (SB3's own bar needs rich, which this package does not)."""
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm.auto import tqdm

    class Bookkeeping(BaseCallback):
        def _on_training_start(self) -> None:
            self.started, self.earlier = time.perf_counter(), float(record.seconds)
            self.bar = tqdm(
                total=total, initial=self.model.num_timesteps, unit="step", desc="agent", disable=not progress
            )

        def _on_step(self) -> bool:
            record.seconds = self.earlier + time.perf_counter() - self.started
            record.timesteps = int(self.model.num_timesteps)
            setattr(self.model, AGENT_RECORD, asdict(record))
            self.bar.update(1)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    return Bookkeeping()


# The public names of this module are those panning.agent offers (and loads from here on first use).
__all__ = list(LEARNING_NAMES)
