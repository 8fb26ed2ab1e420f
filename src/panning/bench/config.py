"""A grid's config: its cells (:class:`Cell`), their canonical configuration and key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panning import data as datasets
from panning import models
from panning.bench.results import RESULTS_FORMAT
from panning.errors import UserError, check_seed, check_sparsity
from panning.io import file_sha256
from panning.sanity import check_variant
from panning.screening.pruning import (
    SCREENING_ARGUMENTS,
    ScreeningConfig,
    create_method,
    method_files,
    method_names,
    resolved_options,
    resolved_screening,
)
from panning.training import LEGACY_TRAINING, TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GRID_KEYS = ("models", "datasets", "methods", "sparsities", "seeds", "screening", "training")
CONFIG_KEYS = ("name", "description", *GRID_KEYS, "quick", "format")
SCREENING_KEYS = SCREENING_ARGUMENTS
# A method entry may override any [screening] key for its own cells (e.g. iterations), and the
# grid's sparsities (a reference method at one sparsity only).
METHOD_KEYS = ("name", "label", "options", "sparsities", "variant", *SCREENING_KEYS)
# Method options whose default changed after format 1 (whose keys hold options as written), with
# the value every format-1 cell ran with: a format-1 key without the option means that value. A
# format-2 key leaves the same value out (Panning's identity names float64 only by omission, so
# the cells from before keep their keys): there too its absence means that value.
LEGACY_OPTIONS: dict[str, dict[str, Any]] = {"panning": {"precision": "float64"}}
# The cell fixes model, dataset and seed; the device is a property of the machine, not of the cell.
TRAINING_KEYS = tuple(
    f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("model", "dataset", "seed", "device")
)


def canonical_key(canonical: Mapping[str, Any]) -> str:
    """A cell's key from its canonical config (``cell.json`` without ``key`` and ``label``).

    Examples:
        >>> canonical_key({"model": "lenet5", "seed": 0}) == canonical_key({"seed": 0, "model": "lenet5"})
        True
    """
    text = json.dumps(dict(canonical), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class Cell:
    """One run of a grid: a model and dataset, a method with its options, a sparsity and a seed."""

    model: str
    dataset: str
    method: str
    label: str
    options: tuple[tuple[str, Any], ...]
    sparsity: float
    seed: int
    screening: tuple[tuple[str, Any], ...]
    training: tuple[tuple[str, Any], ...]
    files: tuple[tuple[str, str], ...] = ()
    format: int = RESULTS_FORMAT
    # A sanity variant of the method's mask (panning.sanity.VARIANTS); "" is the mask as found.
    variant: str = ""

    def canonical(self) -> dict[str, Any]:
        """Everything that determines the cell's result (the display label does not).

        Files a method reads (an agent) enter by their SHA-256, so a retrained agent gets new
        cells; cells without such files keep the keys they had before this field existed.
        From format 2 on, options, screening and training hold every resolved value.
        """
        files = {"files": dict(self.files)} if self.files else {}
        layout = {"format": self.format} if self.format >= 2 else {}
        variant = {"variant": self.variant} if self.variant else {}
        return {
            **layout,
            **files,
            **variant,
            "model": self.model,
            "dataset": self.dataset,
            "method": self.method,
            "options": dict(self.options),
            "sparsity": self.sparsity,
            "seed": self.seed,
            "screening": dict(self.screening),
            "training": dict(self.training),
        }

    @property
    def key(self) -> str:
        """The folder name: 16 hex digits of a SHA-256 over the canonical JSON."""
        return canonical_key(self.canonical())

    def train_config(self, device: str = "cpu") -> TrainConfig:
        """The cell's training; a field its key leaves out has the value from before the field existed."""
        training = {**LEGACY_TRAINING, **dict(self.training)}
        return TrainConfig(model=self.model, dataset=self.dataset, seed=self.seed, device=device, **training)

    def method_options(self) -> dict[str, Any]:
        """The options the cell's method runs with: its key's, and the values a key names by
        leaving them out (:data:`LEGACY_OPTIONS`; a run with the default of today names it).

        Examples:
            >>> pinned = parse_grid({"models": ["lenet5"], "datasets": ["mnist"], "sparsities": [0.99], "seeds": [0],
            ...     "methods": [{"name": "panning", "options": {"precision": "float64"}}]}).cells[0]
            >>> "precision" in pinned.options, pinned.method_options()["precision"]
            (False, 'float64')
        """
        return {**LEGACY_OPTIONS.get(self.method, {}), **dict(self.options)}

    def describe(self) -> str:
        return f"{self.model}/{self.dataset} {self.label} s={self.sparsity} seed={self.seed}"


@dataclass(frozen=True)
class Grid:
    """A benchmark grid read from a config file: its name and its cells, in grid order."""

    name: str
    cells: tuple[Cell, ...]
    source: str = ""


def _freeze(mapping: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(mapping.items()))


def _check_keys(table: Any, valid: Sequence[str], where: str) -> Mapping[str, Any]:
    if not isinstance(table, Mapping):
        raise UserError(f"{where} must be a table, got {type(table).__name__}")
    for key in table:
        if key not in valid:
            raise UserError(f"unknown key {key!r} in {where}; valid: {', '.join(valid)}")
    return table


def _string_list(table: Mapping[str, Any], key: str, valid: Sequence[str]) -> list[str]:
    values = table.get(key)
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise UserError(f"{key} must be a list of names, e.g. {key} = [{valid[0]!r}]")
    for value in values:
        if value not in valid:
            raise UserError(f"unknown {key[:-1]} {value!r} in {key}; valid: {', '.join(valid)}")
    return values


def _methods(entries: Any) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    if not isinstance(entries, list):
        raise UserError("methods must be an array of tables: [[methods]] name = 'synflow'")
    out = []
    for position, entry in enumerate(entries):
        where = f"methods[{position}]"
        _check_keys(entry, METHOD_KEYS, where)
        name = entry.get("name")
        if name not in method_names():
            raise UserError(f"unknown method {name!r} in {where}; valid: {', '.join(method_names())}")
        options = entry.get("options", {})
        if not isinstance(options, Mapping):
            raise UserError(f"{where}.options must be a table, e.g. options = {{ temperature = 200 }}")
        create_method(name, **options)  # unknown or bad options are refused now, not in the middle of the grid
        screening = _checked_screening({key: entry[key] for key in SCREENING_KEYS if key in entry}, where)
        variant = check_variant(str(entry["variant"])) if "variant" in entry else "as-found"
        if variant != "as-found":
            screening["variant"] = variant
        if "sparsities" in entry:
            sparsities = entry["sparsities"]
            if not isinstance(sparsities, list) or not sparsities:
                raise UserError(f"{where}.sparsities must be a non-empty list, e.g. sparsities = [0.99]")
            screening["sparsities"] = [check_sparsity(s) for s in sparsities]
        default_label = name if variant == "as-found" else f"{name}-{variant}"
        label = str(entry.get("label", default_label))
        if not label.strip() or "," in label:
            raise UserError(
                f"{where}.label must be a non-empty name without commas (--only lists labels), got {label!r}"
            )
        out.append((name, label, dict(options), screening))
    labels = [label for _, label, _, _ in out]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise UserError(f"two methods share the label {duplicates[0]!r}; give each a distinct label")
    return out


def _checked_screening(screening: dict[str, Any], where: str) -> dict[str, Any]:
    """``screening`` once its values are valid (refused now, not in the middle of the grid)."""
    try:
        ScreeningConfig(**screening).validate()
    except UserError as error:
        raise type(error)(f"{where}: {error}") from None
    return screening


def _training(table: Any, layout: int) -> dict[str, Any]:
    """The training fields of a grid's cells (without model, dataset, seed and device)."""
    training = dict(_check_keys(table, TRAINING_KEYS, "[training]"))
    if training.get("clip_grad_norm") == "none":  # TOML has no null
        training["clip_grad_norm"] = None
    resolved = TrainConfig(**training).validate().as_dict()
    for fixed in ("model", "dataset", "seed", "device"):
        resolved.pop(fixed)
    if layout == 1:
        # Fields added to TrainConfig after format 1 entered a format-1 key only when set,
        # so the cells run before they existed keep their folders.
        for later, default in LEGACY_TRAINING.items():
            if resolved.get(later) == default:
                resolved.pop(later)
    return resolved


def _warn_about_mask_file_inits(methods: Sequence[tuple[str, str, dict[str, Any], Any]], init: str) -> None:
    """A mask file belongs to the initialisation it was screened on: say so when the grid trains
    it from another scheme (as ``panning train --masks`` does)."""
    from panning.masks import load as load_masks

    for method, label, options, _ in methods:
        if method == "mask-file" and isinstance(options.get("path"), str) and Path(options["path"]).is_file():
            screened = load_masks(options["path"]).metadata.get("init", "pytorch")
            if screened != init:
                warnings.warn(
                    f"method {label!r}: {options['path']} was screened on the {screened} initialisation, the grid "
                    f'trains from the {init} one; set init = "{screened}" in [training]',
                    stacklevel=3,
                )


def _identity(
    method: str, options: dict[str, Any], screening: dict[str, Any], layout: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A method's options and screening as its cells' keys hold them: as written (format 1) or resolved."""
    screening = {key: value for key, value in screening.items() if key not in ("sparsities", "variant")}
    if layout == 1:
        # An option whose default changed after format 1 enters a format-1 key only when it is not
        # the old default: pinned there, the cells run before keep their folders; left out, the
        # cells get the new default in their key and run anew.
        legacy = LEGACY_OPTIONS.get(method, {})
        defaults = resolved_options(method, options) if legacy else {}
        written = {**{k: defaults[k] for k in legacy if k in defaults}, **options}
        return {k: v for k, v in written.items() if k not in legacy or legacy[k] != v}, screening
    return resolved_options(method, options), resolved_screening(method, options, screening)


def _method_files(method: str, options: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """SHA-256 digests of the files a method reads (``rl-panning``'s agent), as it names them."""
    return tuple((role, file_sha256(path)) for role, path in sorted(method_files(method, options).items()))


def parse_grid(config: Mapping[str, Any], quick: bool = False, name: str = "grid", source: str = "") -> Grid:
    """The cells of a grid config (a parsed TOML mapping); ``quick`` applies its ``[quick]`` table.

    Examples:
        >>> grid = parse_grid({"models": ["lenet300"], "datasets": ["mnist"], "sparsities": [0.9, 0.99],
        ...                    "seeds": [0], "methods": [{"name": "random"}, {"name": "synflow"}]})
        >>> len(grid.cells), grid.cells[0].label
        (4, 'random')
    """
    _check_keys(config, CONFIG_KEYS, "the config")
    if not quick and "quick" in config:
        with warnings.catch_warnings():  # the full grid says its warnings itself, once
            warnings.simplefilter("ignore")
            parse_grid(config, quick=True, name=name, source=source)  # a typo in [quick] is found now, not on --quick
    merged = {key: config[key] for key in GRID_KEYS if key in config}
    if quick:
        if "quick" not in config:
            raise UserError(f"{source or 'the config'} has no [quick] table; add one or drop --quick")
        overrides = _check_keys(config["quick"], GRID_KEYS, "[quick]")
        for key, value in overrides.items():
            if key in ("screening", "training") and isinstance(value, Mapping):
                merged[key] = {**merged.get(key, {}), **value}
            else:
                merged[key] = value
    for key in ("models", "datasets", "methods", "sparsities", "seeds"):
        if key not in merged:
            raise UserError(f"the config needs {key!r}; every grid names {', '.join(GRID_KEYS[:5])}")
    grid_models = _string_list(merged, "models", models.names())
    grid_datasets = _string_list(merged, "datasets", datasets.names())
    methods = _methods(merged["methods"])
    sparsities = merged["sparsities"]
    seeds = merged["seeds"]
    if not isinstance(sparsities, list) or not isinstance(seeds, list):
        raise UserError("sparsities and seeds must be lists, e.g. sparsities = [0.9, 0.99] and seeds = [0, 1, 2]")
    sparsities = [check_sparsity(s) for s in sparsities]
    for seed in seeds:
        check_seed(seed, "every entry of seeds")
    screening = _checked_screening(
        dict(_check_keys(merged.get("screening", {}), SCREENING_KEYS, "[screening]")), "[screening]"
    )
    layout = config.get("format", RESULTS_FORMAT)
    if layout not in range(1, RESULTS_FORMAT + 1):
        raise UserError(
            f"format must be 1 to {RESULTS_FORMAT} (the cell-key layout), got {layout!r}; omit it for the latest"
        )
    resolved_training = _training(merged.get("training", {}), layout)
    _warn_about_mask_file_inits(methods, resolved_training.get("init", "pytorch"))
    files = {label: _method_files(method, options) for method, label, options, _ in methods}
    identities = {
        label: _identity(method, options, {**screening, **own}, layout) for method, label, options, own in methods
    }
    cells = tuple(
        Cell(
            model=model,
            dataset=dataset,
            method=method,
            label=label,
            options=_freeze(identities[label][0]),
            sparsity=float(sparsity),
            seed=int(seed),
            screening=_freeze(identities[label][1]),
            training=_freeze(resolved_training),
            files=files[label],
            format=layout,
            variant=own.get("variant", ""),
        )
        for model in grid_models
        for dataset in grid_datasets
        for method, label, options, own in methods
        for sparsity in _method_sparsities(own.get("sparsities"), sparsities, quick and "sparsities" in config["quick"])
        for seed in seeds
    )
    if not cells:
        empty = [k for k in ("models", "datasets", "methods", "sparsities", "seeds") if not merged[k]]
        raise UserError(f"the grid has no cells: {', '.join(empty)} is empty")
    return Grid(name=str(config.get("name", name)) + ("-quick" if quick else ""), cells=cells, source=source)


def _method_sparsities(own: list[float] | None, grid: list[float], quick: bool) -> list[float]:
    """A method's sparsities: its own list, else the grid's; under ``--quick`` with quick
    sparsities, its own ones among them (its first when none is), so a quick grid stays small.

    Examples:
        >>> _method_sparsities([0.9, 0.99, 0.999], [0.99], quick=True), _method_sparsities([0.0], [0.99], quick=True)
        ([0.99], [0.0])
    """
    if own is None:
        return grid
    return ([s for s in own if s in grid] or own[:1]) if quick else own


def load_grid(path: str | os.PathLike[str], quick: bool = False) -> Grid:
    """Read a grid config (TOML).

    Examples:
        >>> grid = load_grid("benchmarks/smoke/lenet5-mnist.toml", quick=True)  # doctest: +SKIP
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"no config file at {file}")
    try:
        config = tomllib.loads(file.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{file} is not valid TOML: {error}") from None
    return parse_grid(config, quick=quick, name=file.stem, source=str(file))
