"""The screening loop, its configuration and the registry of screening methods.

A *method* turns the current masked network into scores; this module alone turns scores
into masks, step by step along the sparsity schedule, keeping exactly ``round(k_t * N)``
weights at step ``t`` and exactly ``K = max(1, round((1 - s) * N))`` at the end.
"""

from __future__ import annotations

import difflib
import inspect
import json
import numbers
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from panning.connectivity import Connectivity, connectivity
from panning.data import Dataset, class_balanced_batch
from panning.errors import (
    UserError,
    UserTypeError,
    check_literal_fields,
    check_module,
    check_positive,
    check_seed,
    check_sparsity,
    first_line,
)
from panning.io import file_sha256
from panning.masks import (
    Masks,
    dense_weights,
    density_schedule,
    kept_schedule,
    model_device,
    prunable_parameters,
    select_topk,
)
from panning.registry import Registry
from panning.screening import scores as indices

Batch = tuple[torch.Tensor, torch.Tensor]
DataLike = tuple[torch.Tensor, torch.Tensor] | Dataset | DataLoader | None


class BatchSource:
    """Class-balanced batches drawn afresh (seeded) from tensors, a dataset or a DataLoader.

    Examples:
        >>> x, y = torch.randn(40, 3), torch.arange(40) % 4
        >>> source = BatchSource((x, y), samples_per_class=2, generator=torch.Generator().manual_seed(0))
        >>> source.next()[1].bincount().tolist()
        [2, 2, 2, 2]
    """

    def __init__(
        self,
        data: DataLike,
        samples_per_class: int,
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        num_classes: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if isinstance(samples_per_class, bool) or not isinstance(samples_per_class, int) or samples_per_class < 1:
            raise UserError(f"samples_per_class must be a positive integer, got {samples_per_class!r}")
        self.samples_per_class = samples_per_class
        self.generator = generator
        self.device = torch.device(device)
        # The model's floating type: batches of another (float32 data, a float64 model) are cast to it.
        self.dtype = dtype
        self.num_classes = num_classes
        self.data = data
        self._stream: Iterator[Any] | None = None
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        self._normalize: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
        if isinstance(data, Dataset):
            self._images, self._labels = data.train
            self._normalize = data.normalize
        elif isinstance(data, (tuple, list)):
            if len(data) != 2 or not all(isinstance(t, torch.Tensor) for t in data):
                raise UserTypeError("data must be a pair of tensors (inputs, targets)")
            self._images, self._labels = data
            if len(self._images) != len(self._labels):
                raise UserError(f"data has {len(self._images)} inputs but {len(self._labels)} targets")
        elif not isinstance(data, DataLoader):
            raise UserTypeError(
                "data must be (inputs, targets) tensors, a panning.data.Dataset or a DataLoader, "
                f"got {type(data).__name__}"
            )
        if self._labels is not None:
            if self._labels.dtype.is_floating_point or self._labels.dim() != 1:
                raise UserTypeError("targets must be a 1-D tensor of integer class labels")
            if len(self._labels) and int(self._labels.min()) < 0:
                raise UserError(_negative_label(int(self._labels.min())))
            classes = num_classes if num_classes is not None else getattr(data, "num_classes", None)
            self._warn_small(torch.bincount(self._labels.long().cpu(), minlength=classes or 0))

    def _warn_small(self, counts: torch.Tensor) -> None:
        absent = (counts == 0).nonzero().flatten().tolist()
        if absent:
            listed = ", ".join(str(c) for c in absent[:10]) + (", ..." if len(absent) > 10 else "")
            warnings.warn(
                f"{len(absent)} of {len(counts)} classes have no example in the scoring data ({listed}): "
                "the scores cannot weigh them",
                stacklevel=3,
            )
        present = counts[counts > 0]
        if len(present) and int(present.min()) < self.samples_per_class:
            warnings.warn(
                f"some class has only {int(present.min())} examples, fewer than samples_per_class="
                f"{self.samples_per_class}; using what there is",
                stacklevel=3,
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input example."""
        if self._images is not None:
            return tuple(self._images.shape[1:])
        return tuple(self.next()[0].shape[1:])

    def next(self) -> Batch:
        """A fresh batch of ``samples_per_class`` examples of every class, on the device."""
        if self._images is not None and self._labels is not None:
            x, y = class_balanced_batch(self._images, self._labels, self.samples_per_class, self.generator)
            x, y = self._normalize(x.to(self.device)), y.to(self.device).long()
        else:
            x, y = self._from_loader()
        # Data-free methods take only the shape of integer inputs; a method that scores them needs floats.
        x = _float_inputs(x)
        return (x if self.dtype is None else x.to(self.dtype)), y

    def _loader_stream(self) -> Iterator[Any]:
        """Batches of the DataLoader, pass after pass, so every step reads batches it has not read."""
        assert isinstance(self.data, DataLoader)
        while True:
            empty = True
            for batch in self.data:
                empty = False
                yield batch
            if empty:
                raise UserError("the DataLoader yielded no examples")

    def _from_loader(self) -> Batch:
        if self._stream is None:
            self._stream = self._loader_stream()
        xs: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        counts: dict[int, int] = {}
        sized = isinstance(self.data, Sized)
        batches_read, passes_limit = 0, max(1, len(cast(Sized, self.data))) if sized else None
        for batch in self._stream:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise UserTypeError("the DataLoader must yield (inputs, targets) batches")
            inputs, targets = batch[0], batch[1]
            for x, y in zip(inputs, targets):
                label = int(y)
                if label < 0:
                    raise UserError(_negative_label(label))
                if counts.get(label, 0) < self.samples_per_class:
                    counts[label] = counts.get(label, 0) + 1
                    xs.append(x)
                    ys.append(y)
            batches_read += 1
            full = self.num_classes is not None and len(counts) >= self.num_classes
            if full and all(c >= self.samples_per_class for c in counts.values()):
                break
            # Without the class count (or with classes absent from the data), one whole pass is the most.
            if passes_limit is not None and batches_read >= passes_limit:
                break
        if not xs:
            raise UserError("the DataLoader yielded no examples")
        self._warn_small(torch.tensor([counts[k] for k in sorted(counts)]))
        return torch.stack(xs).to(self.device), torch.stack(ys).long().to(self.device)


@dataclass
class StepContext:
    """What a method sees at one step of the loop."""

    step: int
    iterations: int
    density: float
    masks: Masks
    batches: BatchSource | None
    input_shape: tuple[int, ...]
    generator: torch.Generator
    parameters: Sequence[str] | None
    info: dict[str, Any] = field(default_factory=dict)
    # Shared by every step of one run: what a method may reuse while the model stays unchanged.
    cache: dict[Any, Any] = field(default_factory=dict)
    # Weights this step keeps (a method that fixes per-layer counts needs the exact total).
    keep: int | None = None

    def batch(self) -> Batch:
        """A fresh class-balanced batch (only for data-driven methods)."""
        if self.batches is None:
            raise UserError("this method is data-driven: pass data=(inputs, targets), a dataset or a DataLoader")
        return self.batches.next()


# Examples of each class in a scoring batch when neither the caller nor the method says otherwise.
DEFAULT_SAMPLES_PER_CLASS = 10


def default_samples_per_class(method: object) -> int:
    """The examples per class a method scores with by default: its ``default_samples_per_class``
    attribute, or :data:`DEFAULT_SAMPLES_PER_CLASS`.

    Examples:
        >>> default_samples_per_class(create_method("snip")), default_samples_per_class(create_method("panning"))
        (10, 2)
    """
    return int(getattr(method, "default_samples_per_class", DEFAULT_SAMPLES_PER_CLASS))


class Method(Protocol):
    """A screening method: scores of the current masked network at one step (a method may also
    have a ``default_samples_per_class``; 10 when it has none)."""

    @property
    def data_driven(self) -> bool: ...

    @property
    def default_iterations(self) -> int: ...

    def __call__(self, model: nn.Module, context: StepContext) -> dict[str, torch.Tensor]: ...


@dataclass
class SingleIndex:
    """One index of :mod:`panning.screening.scores`, iterated along the schedule."""

    index: str
    default_iterations: int = 1
    temperature: float | None = None
    absolute: bool = False
    biases: bool = True

    def __post_init__(self) -> None:
        if self.index not in indices.INDICES:
            raise UserError(f"unknown index {self.index!r}; valid: {', '.join(indices.INDICES)}")
        if self.temperature is not None:
            self.temperature = check_positive("temperature", self.temperature)
        for name in ("absolute", "biases"):
            if not isinstance(getattr(self, name), bool):
                raise UserTypeError(f"{name} must be true or false, got {getattr(self, name)!r}")

    def identity(self) -> dict[str, Any]:
        """The options that decide the masks; ``biases`` only when off (it came later, and runs
        with the default keep the identity they had)."""
        later = {} if self.biases else {"biases": False}
        return {"absolute": self.absolute, "temperature": self.temperature, **later}

    @property
    def data_driven(self) -> bool:
        return self.index in ("snip", "grasp")

    def __call__(self, model: nn.Module, context: StepContext) -> dict[str, torch.Tensor]:
        return _STEP_SCORES[self.index](self, model, context)


def _random_step(method: SingleIndex, model: nn.Module, context: StepContext) -> dict[str, torch.Tensor]:
    return indices.random(model, context.generator, context.parameters)


def _magnitude_step(method: SingleIndex, model: nn.Module, context: StepContext) -> dict[str, torch.Tensor]:
    return indices.magnitude(model, context.parameters)


def _synflow_step(method: SingleIndex, model: nn.Module, context: StepContext) -> dict[str, torch.Tensor]:
    return indices.synflow(
        model,
        masks=context.masks,
        input_shape=context.input_shape,
        parameters=context.parameters,
        cache=context.cache,
        biases=method.biases,
    )


def _loss_aware_step(method: SingleIndex, model: nn.Module, context: StepContext) -> dict[str, torch.Tensor]:
    x, y = context.batch()
    snip = method.index == "snip"
    default_temperature = 1.0 if snip else indices.GRASP_TEMPERATURE
    result = indices.loss_aware_scores(
        model, x, y, context.masks, method.temperature or default_temperature, snip, not snip, context.parameters
    )
    context.info.update(loss=result.loss, grad_norm_sq=result.grad_norm_sq)
    scores = result.snip if snip else result.grasp
    assert scores is not None
    return {n: s.abs() for n, s in scores.items()} if method.absolute else scores


# How each index of panning.screening.scores scores one step of a screening run.
_STEP_SCORES: dict[str, Callable[[SingleIndex, nn.Module, StepContext], dict[str, torch.Tensor]]] = {
    "random": _random_step,
    "magnitude": _magnitude_step,
    "synflow": _synflow_step,
    "snip": _loss_aware_step,
    "grasp": _loss_aware_step,
}


MethodFactory = Callable[..., Method]

Schedule = Literal["exponential", "linear"]
Scope = Literal["global", "layer"]


@dataclass(frozen=True)
class ScreeningConfig:
    """How a screening steps, besides the method, its options, the sparsity and the seed: the
    one statement of these arguments of :func:`prune`, their types and defaults. The command
    line's flags and choices, a grid's ``[screening]`` keys and a cell's identity are read from
    it; ``None`` means the method's default (:meth:`resolved`).

    Examples:
        >>> ScreeningConfig().schedule, ScreeningConfig().resolved("panning").samples_per_class
        ('exponential', 2)
        >>> ScreeningConfig(scope="per-layer").validate()
        Traceback (most recent call last):
        ...
        panning.errors.UserError: unknown scope 'per-layer'; valid: global, layer
    """

    iterations: int | None = None
    schedule: Schedule = "exponential"
    regrowth: bool = True
    samples_per_class: int | None = None
    scope: Scope = "global"

    def validate(self) -> ScreeningConfig:
        """``self``, once every value has been checked; else a one-line error naming the fix."""
        for name in ("iterations", "samples_per_class"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.regrowth, bool):
            raise UserTypeError("regrowth must be True or False")
        check_literal_fields(self)
        return self

    def resolved(self, method: str | Method, **options: Any) -> ScreeningConfig:
        """The config with the method's defaults in place of ``None`` (``options`` go to a method
        given by name)."""
        if self.iterations is not None and self.samples_per_class is not None:
            return self
        chosen = create_method(method, **options) if isinstance(method, str) else method
        if self.iterations is None and not hasattr(chosen, "default_iterations"):
            raise UserTypeError(
                f"method {getattr(chosen, '__name__', type(chosen).__name__)} has no default_iterations: pass "
                "iterations=..., or give it the attribute "
                "(a function can carry it: fn.default_iterations = 1)"
            )
        return ScreeningConfig(
            int(chosen.default_iterations) if self.iterations is None else self.iterations,
            self.schedule,
            self.regrowth,
            default_samples_per_class(chosen) if self.samples_per_class is None else self.samples_per_class,
            self.scope,
        )


# The arguments of prune() besides the method's options that decide which mask it finds.
SCREENING_ARGUMENTS: tuple[str, ...] = tuple(f.name for f in fields(ScreeningConfig))
_METHODS: Registry[MethodFactory] = Registry("method")


def register_method(name: str) -> Callable[[MethodFactory], MethodFactory]:
    """Decorator adding a screening method ``factory(**options) -> Method``; a taken name is refused.

    Examples:
        >>> @register_method("negative-magnitude")
        ... def _neg(**options):
        ...     return SingleIndex("magnitude")
        >>> "negative-magnitude" in method_names()
        True
        >>> unregister_method("negative-magnitude")
    """
    register = _METHODS.register(name)

    def checked(factory: MethodFactory) -> MethodFactory:
        if not callable(factory):
            raise UserTypeError(f"register_method({name!r}) decorates a factory(**options) -> Method, got {factory!r}")
        return register(factory)

    return checked


def unregister_method(name: str) -> None:
    """Remove a screening method added with :func:`register_method` (a plug-in's or a test's clean-up).

    Examples:
        >>> register_method("scratch")(lambda **options: SingleIndex("magnitude"))  # doctest: +ELLIPSIS
        <function <lambda> at ...>
        >>> unregister_method("scratch")
        >>> "scratch" in method_names()
        False
    """
    _METHODS.unregister(name)


def method_names() -> list[str]:
    """Names of the registered screening methods.

    Examples:
        >>> {"panning", "synflow", "rl-panning"} <= set(method_names())
        True
    """
    return _METHODS.names()


_SINGLE_OPTIONS = {
    "random": [],
    "magnitude": [],
    "snip": ["temperature"],
    "grasp": ["temperature", "absolute"],
    "synflow": ["biases"],
}
_SINGLE_DEFAULTS: dict[str, Any] = {"temperature": None, "absolute": False, "biases": True}


def _single(index: str, iterations: int = 1) -> MethodFactory:
    def factory(temperature: float | None = None, absolute: bool = False, biases: bool = True) -> Method:
        given = {"absolute": absolute, "biases": biases, "temperature": temperature}
        for option, value in given.items():
            if value is not _SINGLE_DEFAULTS[option] and option not in _SINGLE_OPTIONS[index]:
                users = " and ".join(name for name, names in _SINGLE_OPTIONS.items() if option in names)
                raise UserError(f"the {option!r} option only applies to {users}, not {index}")
        if temperature is None and index in ("snip", "grasp"):
            temperature = 1.0 if index == "snip" else indices.GRASP_TEMPERATURE
        return SingleIndex(index, iterations, temperature, absolute, biases)

    # The factory takes every index's options because a cell passes its resolved identity
    # back; messages and the command line name only the ones this index uses.
    factory.applicable_options = _SINGLE_OPTIONS[index]  # type: ignore[attr-defined]
    return factory


for _name in ("random", "magnitude", "snip", "grasp"):
    register_method(_name)(_single(_name))
register_method("synflow")(_single("synflow", 100))
register_method("iter-snip")(_single("snip", 100))


def _keyword_parameters(factory: MethodFactory) -> list[inspect.Parameter] | None:
    """The keyword parameters a factory takes, or None when it takes any (``**kwargs``) or cannot say."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return [p for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _option_names(factory: MethodFactory) -> list[str] | None:
    """The keyword options a factory takes, or None when it takes any (``**kwargs``)."""
    parameters = _keyword_parameters(factory)
    return None if parameters is None else [p.name for p in parameters]


def _applicable_options(factory: MethodFactory) -> list[str] | None:
    """The options worth naming to a user: a factory may narrow its signature's list."""
    applicable = getattr(factory, "applicable_options", None)
    return list(applicable) if applicable is not None else _option_names(factory)


def _required_options(factory: MethodFactory) -> list[str]:
    """The keyword options a factory cannot do without (no default)."""
    return [p.name for p in _keyword_parameters(factory) or [] if p.default is inspect.Parameter.empty]


def method_option_names(name: str) -> list[str] | None:
    """The options a registered method takes, or None when it takes any.

    Examples:
        >>> method_option_names("rl-panning"), method_option_names("prospr")
        (['agent'], ['inner_steps', 'inner_lr'])
    """
    return _applicable_options(_METHODS.get(name))


# The screening's own settings (prune's keywords): a misspelt one reaches a method as an option.
_SCREENING_SETTINGS: tuple[str, ...] = ("iterations", "schedule", "regrowth", "samples_per_class", "scope", "seed")
_SCREENING_SETTINGS += ("parameters", "input_shape", "data", "callback", "progress")


def create_method(name: str, **options: Any) -> Method:
    """Build a registered method with its options; unknown names and options are user errors.

    Examples:
        >>> create_method("synflow", biases=False).data_driven
        False
        >>> create_method("snip", colour="red")
        Traceback (most recent call last):
        ...
        panning.errors.UserError: unknown option 'colour' for method 'snip'; valid: temperature
    """
    factory = _METHODS.get(name)
    accepted = _option_names(factory)
    unknown = [option for option in options if accepted is not None and option not in accepted]
    if unknown:
        named = _applicable_options(factory) or []
        valid = ", ".join(named) if named else "none"
        close = difflib.get_close_matches(unknown[0], [*named, *_SCREENING_SETTINGS], n=1)
        hint = f"; did you mean {close[0]}?" if close and close[0] in named else ""
        if close and close[0] not in named:
            hint = f"; did you mean {close[0]} (a setting of the screening, not an option of the method)?"
        raise UserError(f"unknown option {unknown[0]!r} for method {name!r}; valid: {valid}{hint}")
    needed = [option for option in _required_options(factory) if option not in options]
    if needed:
        raise UserError(
            f"method {name!r} needs the option {needed[0]}: -O {needed[0]}=... on the command line, "
            f"{needed[0]}=... in Python, options = {{ {needed[0]} = ... }} in a grid"
        )
    try:
        method = factory(**options)
    except TypeError as error:
        raise UserError(f"bad option for method {name!r}: {error}") from None
    missing = [attribute for attribute in ("data_driven", "default_iterations") if not hasattr(method, attribute)]
    if missing or not callable(method):
        lacks = ", ".join(missing) if missing else "__call__"
        raise UserTypeError(
            f"method {name!r} lacks {lacks}: a registered factory must return a panning.screening.pruning.Method "
            "(callable, with data_driven and default_iterations)"
        )
    return method


def resolved_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of a registered method with the value it takes, defaults included.

    A run's identity holds these rather than the options as written, so a default that changes
    in a later version gives the run a new identity. A method may describe itself with an
    ``identity()`` method; otherwise its accepted options are read back as attributes.

    Examples:
        >>> resolved_options("panning", {})["stages"]
        'auto'
        >>> resolved_options("panning", {"combination": "additive"})["stages"]
        'paper'
    """
    method = create_method(name, **options)
    describe = getattr(method, "identity", None)
    if callable(describe):
        values = dict(describe())
    else:
        accepted = _option_names(_METHODS.get(name))
        names = accepted if accepted is not None else list(options)
        values = {option: getattr(method, option, options.get(option)) for option in names}
    return json.loads(json.dumps(values, sort_keys=True, default=str))


def method_files(name: str, options: Mapping[str, Any]) -> dict[str, str]:
    """The files a method reads, by role (a method says so with a ``files()`` method).

    A grid's cell identity holds their SHA-256, so a retrained agent gets new cells.

    Examples:
        >>> method_files("synflow", {})
        {}
        >>> sorted(method_files("rl-panning", {}))
        ['agent']
    """
    return {role: str(path) for role, path in _paths_of(create_method(name, **options)).items()}


def _paths_of(method: object) -> dict[str, Path]:
    """The files a built method reads, by role (its ``files()``; none when it has no such method)."""
    describe = getattr(method, "files", None)
    return {role: Path(path) for role, path in describe().items()} if callable(describe) else {}


def _files_read(method: object) -> dict[str, dict[str, dict[str, str]]]:
    """``{"method_files": ...}``, the files a method read with their SHA-256, for the masks'
    metadata (empty when it reads none): a path alone does not say which agent made a mask once
    the file has been retrained in place."""
    read = {role: {"path": str(path), "sha256": file_sha256(path)} for role, path in _paths_of(method).items()}
    return {"method_files": read} if read else {}


def resolved_screening(name: str, options: Mapping[str, Any], screening: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of :func:`prune` that shape a mask, defaults included (``iterations`` as the
    method's default when not given).

    Examples:
        >>> resolved_screening("synflow", {}, {"samples_per_class": 2})["iterations"]
        100
    """
    given = {key: screening[key] for key in SCREENING_ARGUMENTS if key in screening}
    return asdict(ScreeningConfig(**given).resolved(name, **options))


class Screening:
    """One screening run, stepped: its schedule, its current masks and what its steps share.

    :func:`prune` steps it with a method's scores; the agent's environment with the scores of
    the weights its agent chose. Each :meth:`next_context` starts a step; :meth:`select` ends
    it with the global (or per-layer) top ``k_t`` of the step's scores.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> run = Screening(net, 0.9, iterations=2, input_shape=(1, 4, 4))
        >>> while not run.done:
        ...     context = run.next_context()
        ...     masks = run.select(indices.magnitude(net))
        >>> masks.kept(), run.step
        (14, 2)
    """

    def __init__(
        self,
        model: nn.Module,
        sparsity: float,
        iterations: int,
        schedule: str = "exponential",
        parameters: Sequence[str] | None = None,
        regrowth: bool = True,
        scope: str = "global",
        batches: BatchSource | None = None,
        input_shape: tuple[int, ...] = (),
        generator: torch.Generator | None = None,
    ) -> None:
        self.iterations = iterations
        self.parameters = parameters
        self.regrowth = regrowth
        self.scope = scope
        self.batches = batches
        self.input_shape = tuple(input_shape)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.step = 0
        self.densities = density_schedule(sparsity, iterations, schedule)
        self.masks = Masks.ones_like(model, parameters)
        self.keeps = kept_schedule(self.masks.total(), sparsity, iterations, schedule)
        self.cache: dict[Any, Any] = {}
        self.context: StepContext | None = None

    @property
    def done(self) -> bool:
        return self.step >= self.iterations

    @property
    def density(self) -> float:
        """The density the current step aims at (1 before the first step)."""
        return self.densities[self.step - 1] if self.step else 1.0

    def sparsity_at(self, step: int) -> float:
        """Target sparsity ``1 - k_step`` (the last step's once past the end)."""
        return 1.0 - self.densities[min(step, self.iterations) - 1]

    def next_context(self) -> StepContext:
        """Start the next step: what a method sees of it."""
        self.step += 1
        self.context = StepContext(
            self.step,
            self.iterations,
            self.density,
            self.masks,
            self.batches,
            self.input_shape,
            self.generator,
            self.parameters,
            cache=self.cache,
            keep=self.keeps[self.step - 1],
        )
        return self.context

    def select(self, scores: Mapping[str, torch.Tensor]) -> Masks:
        """End the step: keep the top ``k_t`` scores (without regrowth, only among kept weights)."""
        if not self.regrowth:
            scores = {n: s.masked_fill(~self.masks[n].to(s.device), float("-inf")) for n, s in scores.items()}
        self.masks = select_topk(scores, self.keeps[self.step - 1], scope=self.scope)
        return self.masks


@dataclass(frozen=True)
class StepRecord:
    """One step of a screening run, as passed to ``callback`` and kept in the trace."""

    step: int
    density: float
    kept: int
    seconds: float
    info: dict[str, Any]


@dataclass(frozen=True)
class ScreeningRecord:
    """How a mask was screened and what it is, typed: :func:`prune` writes it into the masks'
    ``metadata`` (so a mask file carries it too) and ``masks.screening`` reads it back.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> record = prune(net, 0.9, "magnitude", input_shape=(1, 4, 4)).screening
        >>> record.sparsity, record.connectivity.collapsed, record.input_shape
        (0.9, False, (1, 4, 4))
    """

    method: str
    options: dict[str, Any]
    sparsity: float
    iterations: int
    schedule: str
    regrowth: bool
    scope: str
    samples_per_class: int
    seed: int
    input_shape: tuple[int, ...]
    prune_seconds: float
    connectivity: Connectivity
    # The masks' digest (Masks.digest): a record copied onto other masks does not describe them.
    digest: str

    def as_metadata(self) -> dict[str, Any]:
        """The record as the JSON-ready facts of ``masks.metadata``."""
        facts = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "connectivity"}
        return {**facts, "input_shape": list(self.input_shape), **self.connectivity.as_dict()}

    @classmethod
    def of(cls, masks: Masks) -> ScreeningRecord | None:
        """The record in ``masks.metadata``, or ``None`` when there is none or it describes other masks."""
        metadata = masks.metadata
        names = [f.name for f in fields(cls) if f.name != "connectivity"]
        if any(name not in metadata for name in names) or "layers" not in metadata:
            return None
        if metadata["digest"] != masks.digest():
            return None
        values = {name: metadata[name] for name in names}
        values["input_shape"] = tuple(values["input_shape"])
        return cls(**values, connectivity=Connectivity.from_dict(metadata))


def _negative_label(label: int) -> str:
    return f"targets must be class indices 0, 1, ..., C-1; got the label {label}: map the labels to that range"


def _float_inputs(inputs: torch.Tensor) -> torch.Tensor:
    """``inputs``, refused with the fix when they are not floats (a network cannot take them)."""
    if not inputs.dtype.is_floating_point:
        raise UserTypeError(
            f"inputs are {inputs.dtype} tensors; convert them to float and normalise them as for training, "
            "or pass a panning.data.Dataset (panning.data.load or panning.data.from_tensors); "
            "models of integer tokens (nn.Embedding inputs) are not supported"
        )
    return inputs


def _output_size(model: nn.Module, data: DataLike, device: torch.device, dtype: torch.dtype | None) -> int | None:
    """The model's number of outputs, when the data come from a DataLoader (else not needed)."""
    if not isinstance(data, DataLoader):
        return None
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise UserTypeError(f"the DataLoader must yield (inputs, targets) batches, got a {type(batch).__name__}")
        example = _float_inputs(batch[0][:2].to(device))
        output = probe_model(model, example.to(dtype), "the model fails on a batch of the DataLoader")
        if not isinstance(output, torch.Tensor):
            raise UserTypeError(_NOT_LOGITS.format(type(output).__name__))
        return int(output.shape[-1])
    raise UserError("the DataLoader yielded no examples")


def _batches_and_shape(
    model: nn.Module,
    method: str,
    chosen: Method,
    data: DataLike,
    samples_per_class: int,
    generator: torch.Generator,
    input_shape: Sequence[int] | None,
) -> tuple[BatchSource | None, tuple[int, ...]]:
    """The scoring batches a screening draws from, and the input shape of one example."""
    device = model_device(model)
    batches = None
    if data is not None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        classes = _output_size(model, data, device, dtype)
        batches = BatchSource(data, samples_per_class, generator, device, classes, dtype)
    elif not hasattr(chosen, "data_driven"):
        raise UserTypeError(
            f"{method} does not say whether it reads data (no data_driven attribute): pass data=..., or give it "
            "the attribute (a function can carry it: fn.data_driven = False)"
        )
    elif chosen.data_driven:
        raise UserError(f"{method} is data-driven: pass data=(inputs, targets), a dataset or a DataLoader")
    if input_shape is not None:
        shape = tuple(int(d) for d in input_shape)
    elif batches is not None:
        shape = batches.input_shape
    else:
        raise UserError(f"{method} needs the input shape: pass data=... or input_shape=(C, H, W)")
    _check_model_takes(model, shape, device)
    return batches, shape


def probe_model(model: nn.Module, inputs: torch.Tensor, what: str) -> Any:
    """``model(inputs)`` in eval mode without gradients; a failure becomes one line starting with
    ``what`` (e.g. "the model fails on inputs of shape (1, 28, 28)"), never a traceback from torch.

    Examples:
        >>> probe_model(nn.Linear(3, 2), torch.zeros(2, 3), "the model fails").shape
        torch.Size([2, 2])
    """
    try:
        with torch.no_grad(), indices.preserved_modes(model, train=False):
            return model(inputs)
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        first = first_line(error)
        raise UserError(f"{what}: {first}") from None


_NOT_LOGITS = (
    "the model returns a {}; screening needs forward() to return one tensor of logits (batch, classes): "
    "wrap the model so that it does"
)


def _check_model_takes(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> None:
    """Refuse, with one line, a model that cannot run on a batch of two examples of ``shape`` or
    returns no tensor (two: batch-statistics layers need more than one)."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    inputs = torch.randn((2, *shape), generator=torch.Generator().manual_seed(0)).to(device, dtype)
    output = probe_model(model, inputs, f"the model fails on a batch of inputs of shape {shape}")
    if not isinstance(output, torch.Tensor):
        raise UserTypeError(_NOT_LOGITS.format(type(output).__name__))


StepCallback = Callable[[StepRecord, Masks], None]


class ScreeningProgress:
    """A step callback showing a progress bar of a screening's steps on a terminal (none when the
    output is not one); the bar closes after the last step. ``prune(progress=True)`` adds one.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> bar = ScreeningProgress(3, "screening (synflow)")
        >>> prune(net, 0.9, "synflow", input_shape=(1, 4, 4), iterations=3, callback=bar).kept()
        14
        >>> bar.steps
        3
    """

    def __init__(self, iterations: int, description: str = "screening") -> None:
        self.iterations = iterations
        self.description = description
        self.steps = 0
        self._bar: Any = None

    def __call__(self, record: StepRecord, masks: Masks) -> None:
        if self._bar is None:
            self._bar = tqdm(total=self.iterations, desc=self.description, unit="step", disable=None, leave=False)
        self._bar.update()
        self.steps = record.step
        if record.step >= self.iterations:
            self._bar.close()


def _step_callbacks(callback: StepCallback | Sequence[StepCallback] | None) -> list[StepCallback]:
    if callback is None:
        return []
    if callable(callback):
        return [callback]
    if isinstance(callback, Sequence) and all(callable(each) for each in callback):
        return list(callback)
    raise UserTypeError(f"callback must be a function of (StepRecord, Masks) or a list of them, got {callback!r}")


def _step_through(run: Screening, model: nn.Module, method: Method, callbacks: Sequence[StepCallback]) -> Masks:
    """Step a screening run to its end with a method's scores; the final masks."""
    with indices.preserved_modes(model, train=True):
        while not run.done:
            step_started = time.perf_counter()
            context = run.next_context()
            masks = run.select(method(model, context))
            if callbacks:
                seconds = time.perf_counter() - step_started
                record = StepRecord(run.step, context.density, run.keeps[run.step - 1], seconds, context.info)
                for callback in callbacks:
                    callback(record, masks)
    return run.masks


def prune(
    model: nn.Module,
    sparsity: float,
    method: str | Method = "synflow",
    data: DataLike = None,
    iterations: int | None = ScreeningConfig.iterations,
    schedule: Schedule = ScreeningConfig.schedule,
    regrowth: bool = ScreeningConfig.regrowth,
    samples_per_class: int | None = ScreeningConfig.samples_per_class,
    seed: int = 0,
    scope: Scope = ScreeningConfig.scope,
    parameters: Sequence[str] | None = None,
    input_shape: Sequence[int] | None = None,
    callback: StepCallback | Sequence[StepCallback] | None = None,
    progress: bool = False,
    **options: Any,
) -> Masks:
    """Screen ``model`` before training: masks keeping exactly ``max(1, round((1 - s) * N))`` weights.

    Runs ``iterations`` steps (the method's default if None: 100 for ``synflow``, ``panning``
    and ``iter-snip``, the agent's for ``rl-panning`` (20 for the shipped one), 1 otherwise)
    along the ``schedule``, scoring ``samples_per_class`` examples of each class per step (the
    method's default if None: 2 for ``panning``, 10 otherwise); every step re-scores the current masked
    network. ``regrowth=False`` makes masks monotone. ``callback`` (one function or a list) is
    called after every step with its :class:`StepRecord` and the masks (e.g.
    :class:`panning.report.ScreeningTrace`); ``progress=True`` adds a :class:`ScreeningProgress`
    bar on a terminal (none when the output is not one). ``data`` feeds the data-driven methods and
    gives the input shape. ``method`` is a registered name, whose ``options`` go to it (e.g.
    ``temperature=200``), or a :class:`Method` object (e.g. a wrapped one). The model is
    left unchanged; warnings name weights left dense and layer collapse. The masks' ``metadata`` records
    the settings, screening time and sparsities; ``masks.screening`` reads them typed (:class:`ScreeningRecord`).

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> x, y = torch.randn(20, 1, 4, 4), torch.arange(20) % 2
        >>> masks = prune(net, sparsity=0.9, method="snip", data=(x, y), samples_per_class=5)
        >>> masks.kept()
        14
    """
    seed, input_shape = _checked_arguments(model, seed, input_shape)
    device = model_device(model)
    # Dropout in train mode and shuffling DataLoaders draw from torch's global generator: seed it,
    # and give the caller's generator state back afterwards.
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        started = time.perf_counter()
        sparsity = check_sparsity(sparsity)
        indices._check_plain(model)
        chosen, method = _chosen_method(method, options)
        config = ScreeningConfig(iterations, schedule, regrowth, samples_per_class, scope).validate().resolved(chosen)
        steps, samples_per_class = cast(int, config.iterations), cast(int, config.samples_per_class)
        _warn_before_screening(model, sparsity, parameters)
        generator = torch.Generator().manual_seed(seed)
        batches, shape = _batches_and_shape(model, method, chosen, data, samples_per_class, generator, input_shape)
        run = Screening(model, sparsity, steps, schedule, parameters, regrowth, scope, batches, shape, generator)
        bar = [ScreeningProgress(steps, f"screening ({method})")] if progress else []
        callbacks = _step_callbacks(callback) + bar
        masks = _step_through(run, model, chosen, callbacks)
        seconds = time.perf_counter() - started
        record = ScreeningRecord(
            method,
            dict(options),
            sparsity,
            steps,
            schedule,
            regrowth,
            scope,
            samples_per_class,
            int(seed),
            shape,
            seconds,
            connectivity(model, masks, input_shape=shape),
            masks.digest(),
        )
        masks.metadata.update(record.as_metadata(), **_files_read(chosen))
        if record.connectivity.collapsed:
            empty = ", ".join(record.connectivity.collapsed_layers[:3])
            warnings.warn(_COLLAPSED.format(method, sparsity, type(model).__name__, empty), stacklevel=2)
        return masks


_COLLAPSED = (
    "{} at sparsity {} leaves {} no path from input to output (layer collapse; no effective weight in {}): "
    "its output cannot depend on the input"
)


def _warn_before_screening(model: nn.Module, sparsity: float, parameters: Sequence[str] | None) -> None:
    """Warn when the sparsity would keep no weight, and name the weights a default screening leaves dense."""
    weights = prunable_parameters(model, parameters)
    total = sum(w.numel() for w in weights.values())
    if round((1.0 - sparsity) * total) < 1:
        warnings.warn(f"sparsity {sparsity} would keep no weight of {total}; keeping 1", stacklevel=3)
    left_dense = dense_weights(model, weights) if parameters is None else {}
    if left_dense:
        names = ", ".join(list(left_dense)[:4]) + (", ..." if len(left_dense) > 4 else "")
        warnings.warn(
            f"{sum(left_dense.values())} weights outside nn.Linear and nn.Conv1d/2d/3d stay dense ({names}); "
            "the sparsity counts only the screened layers: name the weights to prune in parameters=[...]",
            stacklevel=3,
        )


def _checked_arguments(model: object, seed: object, input_shape: object) -> tuple[int, tuple[int, ...] | None]:
    """prune()'s seed and ``input_shape`` (a tuple of positive integers: one example, without the
    batch), after checking them and the model's type."""
    check_module(model)
    if input_shape is None:
        return check_seed(seed), None
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise UserTypeError(f"input_shape must be a tuple of sizes such as (1, 28, 28), got {input_shape!r}")
    if not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and int(d) > 0 for d in input_shape):
        raise UserError(f"input_shape must hold positive integers, e.g. (1, 28, 28), got {tuple(input_shape)!r}")
    return check_seed(seed), tuple(int(d) for d in input_shape)


def _chosen_method(method: str | Method, options: Mapping[str, Any]) -> tuple[Method, str]:
    """The method object prune() runs and the name its masks record."""
    if isinstance(method, str):
        return create_method(method, **options), method
    if not callable(method) or isinstance(method, type):
        raise UserTypeError(
            f"method must be a registered name (see panning.method_names()) or a Method object, got {method!r}"
        )
    if options:
        raise UserError("options go to a method given by name; a Method object carries its own")
    return method, str(getattr(method, "name", type(method).__name__))


# The screening arguments' defaults, for the CLI and grids (None: the method's).
SCREENING_DEFAULTS: dict[str, Any] = asdict(ScreeningConfig())

__all__ = [
    "DEFAULT_SAMPLES_PER_CLASS",
    "SCREENING_ARGUMENTS",
    "SCREENING_DEFAULTS",
    "BatchSource",
    "Method",
    "Schedule",
    "Scope",
    "Screening",
    "ScreeningConfig",
    "ScreeningRecord",
    "SingleIndex",
    "StepContext",
    "StepRecord",
    "create_method",
    "method_files",
    "method_names",
    "method_option_names",
    "probe_model",
    "prune",
    "register_method",
    "resolved_options",
    "resolved_screening",
    "unregister_method",
]
