"""Panning: multi-index screening whose index weights follow the sparsity reached (Kang et al. 2022).

At every step of the multi-process loop, SynFlow, SNIP and GraSP are computed on the current
masked network (SNIP and GraSP from one loss at temperature 200, one forward pass), each is
normalised over all prunable weights, and they are combined with the weights of the current
*stage*. Stages advance on the step's target sparsity ``1 - k_t`` crossing the boundaries
0.8, 0.9, 0.98, 0.99 (at most one stage per step, as in the reference).

Examples:
    >>> import torch, panning
    >>> model = panning.models.create("lenet300")
    >>> x, y = torch.randn(100, 1, 28, 28), torch.arange(100) % 10
    >>> masks = panning.prune(model, 0.99, "panning", data=(x, y), iterations=5)
    >>> masks.kept()
    2662
"""

from __future__ import annotations

import json
import numbers
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

import torch
from torch import nn

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from panning.errors import UserError, UserTypeError, check_positive
from panning.screening import scores as indices
from panning.screening.pruning import StepContext, register_method

INDEX_ORDER = ("synflow", "snip", "grasp")
IndexNormalization = Literal["zscore-abs", "zscore", "rank"]
Combination = Literal["additive", "multiplicative"]
GraspForm = Literal["abs", "signed"]
Precision = Literal["float64", "float32"]
NORMALIZATIONS: tuple[str, ...] = get_args(IndexNormalization)
COMBINATIONS: tuple[str, ...] = get_args(Combination)
GRASP_FORMS: tuple[str, ...] = get_args(GraspForm)
PRECISIONS: tuple[str, ...] = get_args(Precision)


@dataclass(frozen=True)
class StageTable:
    """Index weights (synflow, snip, grasp) per stage, and the sparsity bound of each stage.

    Stage ``i`` is left for stage ``i + 1`` once the step's target sparsity exceeds
    ``boundaries[i]``; the last boundary is 1.0.

    Examples:
        >>> table = StageTable((0.9, 1.0), ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0)))
        >>> table.weights[1]
        (1.0, 0.0, 0.0)
    """

    boundaries: tuple[float, ...]
    weights: tuple[tuple[float, float, float], ...]

    def __post_init__(self) -> None:
        if not self.boundaries or len(self.boundaries) != len(self.weights):
            raise UserError("a stage table needs one boundary per stage and at least one stage")
        if list(self.boundaries) != sorted(self.boundaries) or not all(0 < b <= 1 for b in self.boundaries):
            raise UserError(f"stage boundaries must increase within (0, 1], got {list(self.boundaries)}")
        for row in self.weights:
            if len(row) != 3 or not all(isinstance(w, (int, float)) and w >= 0 for w in row):
                raise UserError(f"each stage needs three non-negative weights (synflow, snip, grasp), got {row}")
            if not any(row):
                raise UserError("a stage with all weights zero scores nothing; give some index a weight")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> StageTable:
        """From ``{"stages": [{"until": 0.8, "synflow": 0.2, "snip": 0.5, "grasp": 0.3}, ...]}``.

        Examples:
            >>> StageTable.from_mapping({"stages": [{"until": 1.0, "synflow": 1, "snip": 0, "grasp": 1}]}).weights
            ((1.0, 0.0, 1.0),)
        """
        stages = data.get("stages") if isinstance(data, Mapping) else None
        if not isinstance(stages, list) or not stages:
            raise UserError('a stage table is {"stages": [{"until": 0.8, "synflow": .., "snip": .., "grasp": ..}, ..]}')
        boundaries, weights = [], []
        for stage in stages:
            unknown = set(stage) - {"until", *INDEX_ORDER}
            if unknown:
                raise UserError(f"unknown key(s) {sorted(unknown)} in a stage; valid: until, synflow, snip, grasp")
            try:
                boundaries.append(float(stage["until"]))
                weights.append(tuple(float(stage.get(name, 0.0)) for name in INDEX_ORDER))
            except (KeyError, TypeError, ValueError):
                raise UserError(f"bad stage {stage}: needs a number 'until' and numeric weights") from None
        return cls(tuple(boundaries), tuple(weights))  # type: ignore[arg-type]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> StageTable:
        """Read a table from a ``.toml`` (``[[stages]]`` entries) or ``.json`` file."""
        file = Path(path)
        if not file.is_file():
            raise UserError(
                f"no stage table file at {file}; pass 'auto', 'agent', 'agent-floor', 'paper' or a .toml/.json file"
            )
        try:
            text = file.read_text()
            data = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserError(f"{file} is not a valid stage table ({error})") from None
        return cls.from_mapping(data)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stages": [
                {"until": b, **dict(zip(INDEX_ORDER, w, strict=True))}
                for b, w in zip(self.boundaries, self.weights, strict=True)
            ]
        }


PAPER_BOUNDARIES = (0.8, 0.9, 0.98, 0.99, 1.0)
PRESETS: dict[tuple[str, str], StageTable] = {
    ("paper", "additive"): StageTable(
        PAPER_BOUNDARIES,
        ((0.2, 0.5, 0.3), (0.2, 0.4, 0.4), (0.2, 0.3, 0.5), (0.4, 0.2, 0.4), (0.5, 0.0, 0.5)),
    ),
    ("paper", "multiplicative"): StageTable(
        PAPER_BOUNDARIES,
        ((0.3, 1.0, 0.2), (0.3, 1.0, 0.4), (0.5, 0.5, 0.6), (0.8, 0.0, 1.0), (1.0, 0.0, 1.0)),
    ),
    # The shipped agent's policy as a fixed table: its weights along screenings of LeNet-5 and
    # LeNet-300 to 0.999, averaged per stage and scaled to SNIP = 1. Nearly the reverse of the
    # paper's: SNIP throughout, GraSP rising, SynFlow fading out past 0.98.
    ("agent", "additive"): StageTable(
        PAPER_BOUNDARIES,
        ((0.4, 1.0, 0.7), (0.5, 1.0, 0.8), (0.2, 1.0, 0.8), (0.1, 1.0, 0.8), (0.0, 1.0, 1.0)),
    ),
    # The agent's table with SynFlow kept at 0.4 or more in every stage. On LeNet-5 at 0.999 the
    # agent's table thins the output layer (SynFlow, which protects its paths, has faded out);
    # the floor keeps them. Better on validation in 11 of 12 LeNet-5 settings over two sets of
    # seeds, worse at 0.999 on LeNet-300, where SynFlow alone cuts the network
    # (benchmarks/results/panning-tuning/synflow-floor*).
    ("agent-floor", "additive"): StageTable(
        PAPER_BOUNDARIES,
        ((0.4, 1.0, 0.7), (0.5, 1.0, 0.8), (0.4, 1.0, 0.8), (0.4, 1.0, 0.8), (0.4, 1.0, 1.0)),
    ),
}
# stages="auto" (the default): the table by the network's kind, chosen when the first step sees it.
AUTO_STAGES = {"convolutional": "agent-floor", "fully-connected": "agent"}


def auto_stages(model: nn.Module) -> str:
    """The preset ``stages="auto"`` uses for ``model``: ``"agent-floor"`` for a network with
    convolutions, ``"agent"`` for one of linear layers only.

    Examples:
        >>> auto_stages(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 2)))
        'agent-floor'
        >>> auto_stages(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
        'agent'
    """
    convolutional = any(isinstance(module, nn.modules.conv._ConvNd) for module in model.modules())
    return AUTO_STAGES["convolutional" if convolutional else "fully-connected"]


def _flat(
    scores: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float64, nonnegative: bool = False
) -> torch.Tensor:
    """All scores as one new vector of ``dtype`` (each converted while it is copied in).

    Into float32, an index of another type (SynFlow's float64) is first divided by its mean
    magnitude in its own type, so that scores spanning more than float32's range neither overflow
    nor vanish; a positive scale changes no normalisation's result. ``nonnegative`` says no score
    is negative (SynFlow's), so their sum is their magnitude's.
    """
    first = next(iter(scores.values()))
    flat = torch.empty(sum(s.numel() for s in scores.values()), dtype=dtype, device=first.device)
    scale = None
    if dtype == torch.float32 and any(s.dtype != torch.float32 for s in scores.values()):
        total = sum((s if nonnegative else s.abs()).sum(dtype=torch.float64) for s in scores.values())
        mean_magnitude = cast(torch.Tensor, total) / flat.numel()
        scale = mean_magnitude if mean_magnitude > 0 else None
    offset = 0
    for score in scores.values():
        values = score.reshape(-1)
        flat[offset : offset + score.numel()].copy_(values if scale is None else values / scale)
        offset += score.numel()
    return flat


def _unflat(flat: torch.Tensor, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, offset = {}, 0
    for name, score in like.items():
        out[name] = flat[offset : offset + score.numel()].reshape(score.shape)
        offset += score.numel()
    return out


def _normalize_flat(flat: torch.Tensor, method: str) -> torch.Tensor:
    """:func:`normalize` of one flat float64 vector, overwriting it where the method allows."""
    if method == "rank":
        _, inverse, counts = torch.unique(flat, sorted=True, return_inverse=True, return_counts=True)
        ends = torch.cumsum(counts, 0).double()
        average_rank = ends - (counts.double() - 1) / 2
        return average_rank[inverse] / flat.numel()
    if method == "zscore-abs":
        mean = flat.mean()
        if mean == 0:
            return flat.zero_()
        flat.div_(mean)
        std = flat.std()
        return flat.sub_(flat.mean()).div_(std).abs_() if std > 0 else flat.zero_()
    if method == "zscore":
        std = flat.std()
        return flat.sub_(flat.mean()).div_(std) if std > 0 else flat.zero_()
    raise UserError(f"unknown index normalization {method!r}; valid: {', '.join(NORMALIZATIONS)}")


def _normalize_flat_float32(flat: torch.Tensor, method: str) -> torch.Tensor:
    """:func:`normalize` of one flat float32 vector, in float32 (``precision="float32"``).

    ``zscore-abs`` as ``|x - mean(x)| / std(x)``: the same z-scores as dividing by the mean first,
    in four passes instead of seven.
    """
    if method not in ("zscore-abs", "zscore"):  # rank (or an unknown name) as in float64
        return _normalize_flat(flat.double(), method).float()
    std, mean = flat.std(), flat.mean()  # torch.std_mean is several times slower on CPU
    if not std > 0 or (method == "zscore-abs" and mean == 0):
        return flat.zero_()
    flat.sub_(mean)
    if method == "zscore-abs":
        flat.abs_()
    return flat.div_(std)


def normalize(scores: Mapping[str, torch.Tensor], method: str = "zscore-abs") -> dict[str, torch.Tensor]:
    """Normalise one index over all prunable weights together (float64).

    - ``zscore-abs`` (the reference): ``u = x / mean(x)``, ``z = |(u - mean(u)) / std(u)|``; very
      low scores count as much as very high ones.
    - ``zscore``: the signed ``(x - mean(x)) / std(x)``.
    - ``rank``: the percentile rank in (0, 1], tied scores sharing their average rank.

    Examples:
        >>> normalize({"w": torch.tensor([1.0, 2.0, 2.0, 4.0])}, "rank")["w"].tolist()
        [0.25, 0.625, 0.625, 1.0]
    """
    return _unflat(_normalize_flat(_flat(scores), method), scores)


def _active(weights: Mapping[str, float], combination: str) -> list[str]:
    if combination not in COMBINATIONS:
        raise UserError(f"unknown combination {combination!r}; valid: {', '.join(COMBINATIONS)}")
    active = [name for name, w in weights.items() if w != 0]
    if not active:
        raise UserError("every index weight is zero: nothing to combine")
    return active


def _combine_in_place(
    normalized: Mapping[str, torch.Tensor],
    weights: Mapping[str, float],
    combination: str,
    nonnegative: bool = False,
) -> torch.Tensor:
    """:func:`combine` of flat vectors the caller gives up: the result overwrites the first.

    ``nonnegative`` says the vectors hold no negative entry (``zscore-abs`` and ``rank`` give
    none), so the product's clamp at zero, which would change nothing, is skipped.
    """
    active = _active(weights, combination)
    # Term by term, in the order of the plain formula, so the values are those of combine().
    if combination == "additive":
        value = normalized[active[0]].mul_(weights[active[0]])
        for index in active[1:]:
            value.add_(normalized[index].mul_(weights[index]))
        return value

    def factor(index: str) -> torch.Tensor:
        vector = normalized[index] if nonnegative else normalized[index].clamp_min_(0)
        return vector.pow_(weights[index])

    value = factor(active[0])
    for index in active[1:]:
        value.mul_(factor(index))
    return value


def combine(
    normalized: Mapping[str, Mapping[str, torch.Tensor]],
    weights: Mapping[str, float],
    combination: str = "additive",
) -> dict[str, torch.Tensor]:
    """``Σ w_i z_i`` (additive) or ``Π z_i ** w_i`` (multiplicative) over the indices with a weight.

    Examples:
        >>> z = {"snip": {"w": torch.tensor([1.0, 2.0])}, "grasp": {"w": torch.tensor([3.0, 1.0])}}
        >>> combine(z, {"snip": 0.5, "grasp": 0.5})["w"].tolist()
        [2.0, 1.5]
    """
    active = _active(weights, combination)
    like = normalized[active[0]]
    flats = {index: torch.cat([normalized[index][name].reshape(-1) for name in like]) for index in active}
    return _unflat(_combine_in_place(flats, {i: weights[i] for i in active}, combination), like)


@dataclass
class Panning:
    """The Panning method for :func:`panning.prune` (``method="panning"``).

    ``stages`` is ``"auto"`` (the default: ``"agent-floor"`` for a network with convolutions,
    ``"agent"`` otherwise, see :func:`auto_stages`), ``"agent"`` (the shipped agent's policy as a
    fixed table, additive), ``"agent-floor"`` (that table with SynFlow kept at 0.4 or more),
    ``"paper"`` (the reference table of the chosen combination), a :class:`StageTable`, a
    mapping as in :meth:`StageTable.from_mapping`, or a path to a TOML/JSON file. ``grasp`` is
    ``"abs"`` (the reference's ``|θ ⊙ Hg|``) or ``"signed"``; by default ``abs`` with
    ``zscore-abs`` normalisation (whose ``x / mean(x)`` needs non-negative scores) and
    ``signed`` otherwise.

    By default the table is ``"auto"`` with the ``additive`` combination: on the 20-epoch grids
    of issue #17 the agent's table scores higher on validation accuracy than the paper's tables
    at 0.995 to 0.999 on LeNet-5 and LeNet-300, and its SynFlow floor higher again on LeNet-5
    but lower on LeNet-300 (benchmarks/results/panning-tuning/). Naming only a ``combination``
    selects the paper's table of that combination, as before those choices:
    ``combination="additive"`` is the reference's preset, ``"multiplicative"`` the former
    default. Without ``stages``, the signed ``zscore`` normalisation (which a product cannot
    take) also gets the automatic table. ``table`` is the table in use: for ``"auto"``, the
    agent's until the first step has seen the network. ``precision`` is the type in which a
    step's indices are normalised, combined and ranked: ``"float32"`` (the default) or
    ``"float64"`` (the default before; SynFlow itself is always computed in float64). Rounding
    decides near-ties, so the two give different masks of the same quality. ``grasp_interval``
    k > 1 recomputes GraSP's scores only every k steps and reuses them in between (SNIP and
    SynFlow stay fresh): a cheaper step, with staler GraSP scores.

    Examples:
        >>> method = Panning()
        >>> method.combination, method.stages
        ('additive', 'auto')
        >>> Panning(stages="agent-floor").table.weights[-1]
        (0.4, 1.0, 1.0)
        >>> Panning(combination="multiplicative").stages
        'paper'
    """

    normalization: IndexNormalization = "zscore-abs"
    combination: Combination | None = None
    stages: Any = None
    temperature: float = indices.GRASP_TEMPERATURE
    grasp: GraspForm | None = None
    # False: SynFlow scores only the flow from the input (scores.synflow's biases=False).
    synflow_biases: bool = True
    # The type in which each step's indices are normalised, combined and ranked. float32 since
    # 2026-12-04: as good on validation as float64 on the 20-epoch grids and 5-12% cheaper
    # (benchmarks/panning-tuning/float32.toml); float64 names the runs before.
    precision: Precision = "float32"
    # GraSP's Hessian-gradient product (most of a step's cost) is recomputed every this many
    # steps and reused in between; SNIP and SynFlow are fresh at every step. 1: every step.
    grasp_interval: int = 1
    default_iterations: int = field(init=False, default=100)
    # 2 examples per class: the 20-epoch grids scored it at least as high on validation as 10, and
    # one per class lower on two of three pairs (benchmarks/results/panning-tuning/). A step
    # costs about half an SGD step on LeNet-5 (0.52 when last timed: benchmarks/panning_cost.py).
    default_samples_per_class: int = field(init=False, default=2)
    data_driven: bool = field(init=False, default=True)
    table: StageTable = field(init=False)
    _stage: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.temperature = check_positive("temperature", self.temperature)
        if self.normalization not in NORMALIZATIONS:
            raise UserError(f"unknown index normalization {self.normalization!r}; valid: {', '.join(NORMALIZATIONS)}")
        if self.stages is None:
            self.stages = "paper" if self.combination is not None else "auto"
        if self.combination is None:
            additive = self.normalization == "zscore" or self.stages in ("auto", *AUTO_STAGES.values())
            self.combination = "additive" if additive else "multiplicative"
        if self.combination not in COMBINATIONS:
            raise UserError(f"unknown combination {self.combination!r}; valid: {', '.join(COMBINATIONS)}")
        if self.grasp is None:
            self.grasp = "abs" if self.normalization == "zscore-abs" else "signed"
        if self.grasp not in GRASP_FORMS:
            raise UserError(f"unknown grasp form {self.grasp!r}; valid: {', '.join(GRASP_FORMS)}")
        if not isinstance(self.synflow_biases, bool):
            raise UserTypeError(f"synflow_biases must be true or false, got {self.synflow_biases!r}")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        self.grasp_interval = check_grasp_interval(self.grasp_interval)
        if self.combination == "multiplicative" and self.normalization == "zscore":
            raise UserError("multiplicative combination needs non-negative indices: use zscore-abs or rank")
        if self.stages == "auto" and self.combination != "additive":
            raise UserError("stages='auto' chooses between additive tables: leave combination out or pass stages")
        self.table = resolve_stages("agent" if self.stages == "auto" else self.stages, self.combination)

    def identity(self) -> dict[str, Any]:
        """The resolved options that decide the masks: a named preset by name, any other table in full."""
        preset = isinstance(self.stages, str) and (self.stages == "auto" or (self.stages, self.combination) in PRESETS)
        return {
            "normalization": self.normalization,
            "combination": self.combination,
            "grasp": self.grasp,
            "temperature": float(self.temperature),
            "stages": self.stages if preset else self.table.as_dict(),
            # Came later: only when off, so runs with the default keep their identity.
            **({} if self.synflow_biases else {"synflow_biases": False}),
            # Came later: float64 (the type before) is left out, so runs from before keep their identity.
            **({} if self.precision == "float64" else {"precision": self.precision}),
            # Came later: only when GraSP is not fresh at every step.
            **({} if self.grasp_interval == 1 else {"grasp_interval": self.grasp_interval}),
        }

    def weights_for(self, step: int, density: float) -> tuple[int, dict[str, float]]:
        """The stage (1-based) and index weights at a step; advances the stage at most once."""
        if step == 1:
            self._stage = 0
        if self._stage < len(self.table.boundaries) - 1 and 1.0 - density > self.table.boundaries[self._stage]:
            self._stage += 1
        return self._stage + 1, dict(zip(INDEX_ORDER, self.table.weights[self._stage], strict=True))

    def scoring(self) -> tuple[str, str, float, str]:
        """Normalisation, combination, temperature and GraSP form, as resolved at construction."""
        if self.combination is None or self.grasp is None:  # pragma: no cover - set in __post_init__
            raise RuntimeError("Panning was not initialised")
        return self.normalization, self.combination, float(self.temperature), self.grasp

    def __call__(self, model: nn.Module, context: StepContext) -> dict[str, torch.Tensor]:
        if self.stages == "auto" and context.step == 1:
            self.table = PRESETS[(auto_stages(model), "additive")]
        stage, weights = self.weights_for(context.step, context.density)
        context.info["stage"] = stage
        return weighted_scores(
            model,
            context,
            weights,
            *self.scoring(),
            synflow_biases=self.synflow_biases,
            precision=self.precision,
            grasp_interval=self.grasp_interval,
        )


# context.cache key of the last GraSP scores a run computed: (step, scores).
_GRASP_CACHE = "panning-grasp-scores"


def check_grasp_interval(value: Any) -> int:
    """``value`` if it is a positive integer (steps between two GraSP computations), else a one-line error.

    Examples:
        >>> check_grasp_interval(2)
        2
    """
    message = f"grasp_interval must be a positive integer (steps between GraSP computations), got {value!r}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserTypeError(message)
    if value < 1:
        raise UserError(message)
    return int(value)


def _loss_aware_step(
    model: nn.Module, context: StepContext, weights: Mapping[str, float], temperature: float, grasp_interval: int
) -> tuple[indices.LossAwareScores, indices.Scores | None]:
    """A step's loss-aware scores and the GraSP scores it uses: its own, or the last ones computed
    (``grasp_interval`` > 1: computed at most every that many steps, kept in ``context.cache``)."""
    grasp_interval = check_grasp_interval(grasp_interval)
    reused_grasp = None
    if weights["grasp"] != 0 and grasp_interval > 1:
        cached = context.cache.get(_GRASP_CACHE)
        if cached is not None and 0 <= context.step - cached[0] < grasp_interval:
            reused_grasp = cached[1]
    x, y = context.batch()
    loss_aware = indices.loss_aware_scores(
        model,
        x,
        y,
        context.masks,
        temperature,
        want_snip=weights["snip"] != 0,
        want_grasp=weights["grasp"] != 0 and reused_grasp is None,
        parameters=context.parameters,
    )
    if loss_aware.grasp is not None and grasp_interval > 1:
        context.cache[_GRASP_CACHE] = (context.step, loss_aware.grasp)
    if grasp_interval > 1:
        context.info["grasp_reused"] = reused_grasp is not None
    return loss_aware, loss_aware.grasp if reused_grasp is None else reused_grasp


def weighted_scores(
    model: nn.Module,
    context: StepContext,
    weights: Mapping[str, float],
    normalization: str = "zscore-abs",
    combination: str = "additive",
    temperature: float = indices.GRASP_TEMPERATURE,
    grasp: str | None = "abs",
    synflow_biases: bool = True,
    precision: str = "float64",
    grasp_interval: int = 1,
) -> dict[str, torch.Tensor]:
    """One Panning step's scores: the indices with a non-zero weight on the masked network, combined.

    SNIP and GraSP share one loss (one forward pass); SynFlow takes one more. The weights used,
    the batch loss and ``gᵀg`` go into ``context.info`` for the trace. With ``grasp_interval``
    k > 1, GraSP's raw scores are computed at most every k steps of a run and reused (from
    ``context.cache``) in between: its double backward is the dearest part of a step.

    Examples:
        >>> from panning.masks import Masks
        >>> from panning.screening.pruning import BatchSource
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> g = torch.Generator().manual_seed(0)
        >>> source = BatchSource((torch.randn(8, 1, 2, 2), torch.arange(8) % 2), 2, g)
        >>> ctx = StepContext(1, 1, 0.5, Masks.ones_like(net), source, (1, 2, 2), g, None)
        >>> scores = weighted_scores(net, ctx, {"synflow": 1.0, "snip": 1.0, "grasp": 0.0})
        >>> sorted(scores), ctx.info["w_grasp"]
        (['1.weight', '3.weight'], 0.0)
    """
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    loss_aware, grasp_scores = _loss_aware_step(model, context, weights, temperature, grasp_interval)
    raw: dict[str, Mapping[str, torch.Tensor]] = {}
    if weights["synflow"] != 0:
        raw["synflow"] = indices.synflow(
            model,
            masks=context.masks,
            input_shape=context.input_shape,
            parameters=context.parameters,
            cache=context.cache,
            biases=synflow_biases,
        )
    if loss_aware.snip is not None:
        raw["snip"] = loss_aware.snip
    if grasp_scores is not None:
        raw["grasp"] = grasp_scores
    # Each index becomes one vector that this step owns, normalised and combined in place.
    single = precision == "float32"
    dtype = torch.float32 if single else torch.float64
    flats = {name: _flat(score, dtype, nonnegative=name == "synflow") for name, score in raw.items()}
    if "grasp" in flats and grasp == "abs":
        flats["grasp"].abs_()
    normalize_flat = _normalize_flat_float32 if single else _normalize_flat
    normalized = {name: normalize_flat(flat, normalization) for name, flat in flats.items()}
    context.info.update(
        w_synflow=weights["synflow"],
        w_snip=weights["snip"],
        w_grasp=weights["grasp"],
        loss=loss_aware.loss,
        grad_norm_sq=loss_aware.grad_norm_sq,
    )
    combined = _combine_in_place(normalized, weights, combination, nonnegative=normalization in ("zscore-abs", "rank"))
    return _unflat(combined, next(iter(raw.values())))


def resolve_stages(stages: Any, combination: str = "additive") -> StageTable:
    """A :class:`StageTable` from ``"paper"``, a table, a mapping or a file path.

    Examples:
        >>> resolve_stages("paper").weights[0]
        (0.2, 0.5, 0.3)
    """
    if isinstance(stages, StageTable):
        return stages
    if isinstance(stages, str) and (stages, combination) in PRESETS:
        return PRESETS[(stages, combination)]
    if isinstance(stages, str) and any(stages == name for name, _ in PRESETS):
        fits = ", ".join(sorted(c for name, c in PRESETS if name == stages))
        raise UserError(f"the stage table {stages!r} is for the {fits} combination, not {combination!r}")
    if isinstance(stages, Mapping):
        return StageTable.from_mapping(stages)
    if isinstance(stages, (str, os.PathLike)):
        return StageTable.from_file(stages)
    names = ", ".join(repr(name) for name in ("auto", *sorted({name for name, _ in PRESETS})))
    if isinstance(stages, Sequence):
        raise UserTypeError(f"pass stages as {{'stages': [...]}}, a StageTable, one of {names}, or a file path")
    raise UserTypeError(f"stages must be one of {names}, a StageTable, a mapping or a path, got {stages!r}")


register_method("panning")(Panning)


__all__ = [
    "AUTO_STAGES",
    "COMBINATIONS",
    "GRASP_FORMS",
    "NORMALIZATIONS",
    "PRESETS",
    "Combination",
    "GraspForm",
    "IndexNormalization",
    "Panning",
    "StageTable",
    "auto_stages",
    "combine",
    "normalize",
    "resolve_stages",
    "weighted_scores",
]
