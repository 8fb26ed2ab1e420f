"""Benchmark grids: every combination of models, datasets, methods, sparsities and seeds, each
screened and trained in its own run folder, collected into one tidy results table.

A grid is a TOML file::

    name = "lenet5-mnist"
    models = ["lenet5"]
    datasets = ["mnist"]
    sparsities = [0.9, 0.99]
    seeds = [0, 1, 2]

    [[methods]]
    name = "synflow"                      # a registered method
    [[methods]]
    name = "panning"
    label = "panning-rank"                # how tables and plots name it (default: name)
    options = { normalization = "rank" }  # passed to the method

    [screening]                           # arguments of panning.prune
    samples_per_class = 10

    [training]                            # fields of panning.training.TrainConfig
    epochs = 1

    [quick]                               # overrides for --quick (same keys as above)
    sparsities = [0.99]
    training = { train_examples = 2000 }

A cell's folder is named by a hash of its canonical configuration, so the same cell is never
run twice (an interrupted grid continues where it stopped) and a changed cell gets a new
folder. Cells live in a store that several grids can share.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import sys
import traceback
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from panning import __version__, models
from panning import data as datasets
from panning.errors import UserError, check_sparsity
from panning.io import read_json, source_commit, write_atomic, write_json
from panning.masks import Masks
from panning.pruning import (
    SCREENING_ARGUMENTS,
    Method,
    create_method,
    method_files,
    method_names,
    prune,
    resolved_options,
    resolved_screening,
)
from panning.sanity import REINIT_SEED_OFFSET, check_variant, inverted, shuffle_within_layers
from panning.training import LEGACY_TRAINING, TrainConfig, create_model, masks_to_resume, record_origin, train

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Version of the results layout (cell folders, cell keys and result rows). Rows without it are
# format 1, whose keys hold a method's options and the screening as the config wrote them, so a
# changed default silently kept its old cells; format 2 keys hold every resolved value.
RESULTS_FORMAT = 2


@dataclass(frozen=True)
class ResultRow:
    """One row of a grid's ``results.csv``: its columns, in order, with their types.

    ``options`` and ``layer_density`` are JSON text; accuracies and sparsities are fractions.

    Examples:
        >>> ResultRow.parse({"seed": "2", "test_accuracy": "0.98", "dead": "False", "label": "snip"}).seed
        2
        >>> RESULT_COLUMNS[:3]
        ('model', 'dataset', 'method')
    """

    model: str | None = None
    dataset: str | None = None
    method: str | None = None
    label: str | None = None
    variant: str | None = None
    options: str | None = None
    sparsity: float | None = None
    nominal_sparsity: float | None = None
    effective_sparsity: float | None = None
    collapsed: bool | None = None
    seed: int | None = None
    iterations: int | None = None
    prune_seconds: float | None = None
    train_seconds: float | None = None
    epochs: int | None = None
    test_accuracy: float | None = None
    val_accuracy: float | None = None
    dead: bool | None = None
    layer_density: str | None = None
    version: str | None = None
    commit: str | None = None
    device: str | None = None
    threads: int | None = None
    status: str | None = None
    error: str | None = None
    cell: str | None = None
    format: int | None = None

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> ResultRow:
        """A row from text or JSON values (a CSV row, a JSONL entry); a missing column is None."""
        return cls(**{column: _parse_value(_COLUMN_TYPES[column], values.get(column)) for column in RESULT_COLUMNS})

    def as_dict(self) -> dict[str, Any]:
        return {column: getattr(self, column) for column in RESULT_COLUMNS}


RESULT_COLUMNS = tuple(f.name for f in dataclasses.fields(ResultRow))
# Each column's value type (the non-None member of its annotation).
_COLUMN_TYPES: dict[str, type] = {
    name: next(t for t in typing.get_args(hint) if t is not type(None))
    for name, hint in typing.get_type_hints(ResultRow).items()
}
GRID_KEYS = ("models", "datasets", "methods", "sparsities", "seeds", "screening", "training")
CONFIG_KEYS = ("name", "description", *GRID_KEYS, "quick", "format")
SCREENING_KEYS = SCREENING_ARGUMENTS
# A method entry may override any [screening] key for its own cells (e.g. iterations), and the
# grid's sparsities (a reference method at one sparsity only).
METHOD_KEYS = ("name", "label", "options", "sparsities", "variant", *SCREENING_KEYS)
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
        screening = {key: entry[key] for key in SCREENING_KEYS if key in entry}
        variant = check_variant(str(entry["variant"])) if "variant" in entry else "as-found"
        if variant != "as-found":
            screening["variant"] = variant
        if "sparsities" in entry:
            sparsities = entry["sparsities"]
            if not isinstance(sparsities, list) or not sparsities:
                raise UserError(f"{where}.sparsities must be a non-empty list, e.g. sparsities = [0.99]")
            screening["sparsities"] = [check_sparsity(s) for s in sparsities]
        default_label = name if variant == "as-found" else f"{name}-{variant}"
        out.append((name, str(entry.get("label", default_label)), dict(options), screening))
    labels = [label for _, label, _, _ in out]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise UserError(f"two methods share the label {duplicates[0]!r}; give each a distinct label")
    return out


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


def _identity(
    method: str, options: dict[str, Any], screening: dict[str, Any], layout: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A method's options and screening as its cells' keys hold them: as written (format 1) or resolved."""
    screening = {key: value for key, value in screening.items() if key not in ("sparsities", "variant")}
    if layout == 1:
        return options, screening
    return resolved_options(method, options), resolved_screening(method, options, screening)


def parse_grid(config: Mapping[str, Any], quick: bool = False, name: str = "grid", source: str = "") -> Grid:
    """The cells of a grid config (a parsed TOML mapping); ``quick`` applies its ``[quick]`` table.

    Examples:
        >>> grid = parse_grid({"models": ["lenet300"], "datasets": ["mnist"], "sparsities": [0.9, 0.99],
        ...                    "seeds": [0], "methods": [{"name": "random"}, {"name": "synflow"}]})
        >>> len(grid.cells), grid.cells[0].label
        (4, 'random')
    """
    _check_keys(config, CONFIG_KEYS, "the config")
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
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise UserError(f"seeds must be integers, got {seeds!r}")
    screening = dict(_check_keys(merged.get("screening", {}), SCREENING_KEYS, "[screening]"))
    layout = config.get("format", RESULTS_FORMAT)
    if layout not in range(1, RESULTS_FORMAT + 1):
        raise UserError(
            f"format must be 1 to {RESULTS_FORMAT} (the cell-key layout), got {layout!r}; omit it for the latest"
        )
    resolved_training = _training(merged.get("training", {}), layout)
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
        for sparsity in own.get("sparsities", sparsities)
        for seed in seeds
    )
    if not cells:
        empty = [k for k in ("models", "datasets", "methods", "sparsities", "seeds") if not merged[k]]
        raise UserError(f"the grid has no cells: {', '.join(empty)} is empty")
    return Grid(name=str(config.get("name", name)) + ("-quick" if quick else ""), cells=cells, source=source)


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


@functools.lru_cache(maxsize=2)
def _dataset(name: str, data_dir: str | None, val_size: int, normalization: str) -> datasets.Dataset:
    return datasets.load(name, data_dir, val_size=val_size, normalization=normalization)


def _row(
    cell: Cell, commit: str, metrics: Mapping[str, Any] | None, error: str | None, device: str = "cpu"
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "device": device,
        "threads": torch.get_num_threads(),
        "model": cell.model,
        "dataset": cell.dataset,
        "method": cell.method,
        "label": cell.label,
        "variant": cell.variant or None,
        "options": json.dumps(dict(cell.options), sort_keys=True),
        "sparsity": cell.sparsity,
        "seed": cell.seed,
        "epochs": dict(cell.training)["epochs"],
        "version": __version__,
        "commit": commit,
        "status": "failed" if error else "ok",
        "error": error,
        "cell": cell.key,
        "format": cell.format,
    }
    if metrics is not None:
        layers = metrics.get("layers") or []
        row.update(
            nominal_sparsity=metrics.get("nominal_sparsity"),
            effective_sparsity=metrics.get("effective_sparsity"),
            collapsed=metrics.get("collapsed"),
            iterations=metrics.get("iterations"),
            prune_seconds=metrics.get("prune_seconds"),
            train_seconds=metrics.get("train_seconds"),
            test_accuracy=metrics.get("test_accuracy"),
            val_accuracy=metrics.get("val_accuracy"),
            dead=metrics.get("dead"),
            layer_density=json.dumps({layer["name"]: layer["kept"] / layer["total"] for layer in layers}),
        )
    return ResultRow(**row).as_dict()


def _method_files(method: str, options: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """SHA-256 digests of the files a method reads (``rl-panning``'s agent), as it names them."""
    files = method_files(method, options)
    return tuple((role, hashlib.sha256(Path(path).read_bytes()).hexdigest()) for role, path in sorted(files.items()))


def _screen_cell(cell: Cell, model: torch.nn.Module, dataset: datasets.Dataset) -> Masks:
    """The cell's masks as its method finds them (``inverted``: keeping what it would prune)."""
    options = dict(cell.options)
    method: str | Method = cell.method
    if cell.variant == "inverted":
        method, options = inverted(cell.method, **options), {}
    return prune(model, cell.sparsity, method, data=dataset, seed=cell.seed, **dict(cell.screening), **options)


def run_cell(
    cell: Cell, store: str | os.PathLike[str], commit: str = "unknown", data_dir: str | None = None, device: str = "cpu"
) -> dict[str, Any]:
    """Screen and train one cell in ``store/<cell.key>``; returns its result row.

    A finished cell returns its saved row without new work; an interrupted one resumes from its
    masks and last checkpoint. A failure is returned (and saved) as a row with ``status`` failed.

    Examples:
        >>> # row = run_cell(load_grid("benchmarks/smoke/lenet5-mnist.toml").cells[0], "runs/bench/cells")
    """
    folder = Path(store) / cell.key
    result_path = folder / "result.json"
    if result_path.is_file():
        saved = read_json(result_path)
        if saved.get("status") == "ok":
            return saved
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "cell.json", {"key": cell.key, "label": cell.label, **cell.canonical()})
    run_dir = folder / "run"
    try:
        config = cell.train_config(device).validate()
        dataset = _dataset(cell.dataset, data_dir, config.val_size, config.normalization)
        model = create_model(config, dataset)
        masks = masks_to_resume(run_dir)
        resume = masks is not None
        if masks is None:
            shutil.rmtree(run_dir, ignore_errors=True)
            masks = _screen_cell(cell, model, dataset)
            record_origin(masks, cell.model, dataset, cell.seed, config.init)
            if cell.variant == "shuffled":
                masks = shuffle_within_layers(masks, seed=cell.seed)
        if cell.variant == "reinit":  # the same mask on other initial weights
            torch.manual_seed(cell.seed + REINIT_SEED_OFFSET)
            model = models.initialize(models.for_dataset(cell.model, dataset.spec), config.init)
        metrics = train(model, dataset, config, run_dir, masks=masks, resume=resume, progress=False)
        row = _row(cell, commit, metrics, None, device)
    except KeyboardInterrupt:
        raise
    except Exception as error:  # a failing cell is recorded and the grid goes on
        message = f"{type(error).__name__}: {error}".splitlines()[0]
        write_atomic(folder / "error.txt", lambda tmp: tmp.write_text(traceback.format_exc()))
        row = _row(cell, commit, None, message, device)
    write_json(result_path, row)
    return row


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _run_in_worker(
    cell: Cell, store: str, commit: str, data_dir: str | None, device: str, threads: int | None = None
) -> dict[str, Any]:
    if threads is not None:  # a worker of an external executor: take only its share of the CPU
        torch.set_num_threads(threads)
    return run_cell(cell, store, commit, data_dir, device)


@dataclass
class BenchSummary:
    """What a :func:`run_grid` call did: all rows in grid order and how many ran, were reused, failed."""

    rows: list[dict[str, Any]]
    ran: int
    reused: int
    failed: int
    results_csv: Path
    results_jsonl: Path


def _is_done(store: Path, cell: Cell) -> bool:
    path = store / cell.key / "result.json"
    return path.is_file() and read_json(path).get("status") == "ok"


def run_grid(
    grid: Grid,
    out: str | os.PathLike[str],
    store: str | os.PathLike[str] | None = None,
    jobs: int = 1,
    data_dir: str | None = None,
    device: str = "cpu",
    on_result: Callable[[Cell, dict[str, Any], int, int], None] | None = None,
    run: bool = True,
    executor: Any = None,
    threads_per_cell: int | None = None,
) -> BenchSummary:
    """Run every cell of ``grid`` not already done in ``store``, then write ``out/results.csv``
    and ``out/results.jsonl`` with one row per cell.

    ``jobs`` > 1 runs cells in that many processes, with the CPU threads split between them.
    ``store`` defaults to ``out/cells``. ``run=False`` runs nothing and writes the rows of the
    finished cells, the others with status ``pending`` (a grid in progress, or run elsewhere).

    ``executor`` runs the cells elsewhere: any object whose ``submit(fn, *args)`` returns a handle
    with ``result()`` — a ``concurrent.futures`` executor, a Ray-backed one, or submitit's Slurm
    executor. Its workers must see ``store``; each cell takes ``threads_per_cell`` CPU threads.

    Examples:
        >>> # summary = run_grid(load_grid("benchmarks/smoke/lenet5-mnist.toml", quick=True), "runs/bench/x")
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UserError(f"jobs must be a positive integer, got {jobs!r}")
    out_dir = Path(out)
    store_dir = Path(store) if store is not None else out_dir / "cells"
    store_dir.mkdir(parents=True, exist_ok=True)
    commit = source_commit()
    unique = list({cell.key: cell for cell in grid.cells}.values())
    pending = [cell for cell in unique if not _is_done(store_dir, cell)]
    reused = len(unique) - len(pending)
    done = 0

    def report(cell: Cell, row: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        if on_result is not None:
            on_result(cell, row, done, len(pending))

    to_run = pending if run else []
    if executor is not None:
        arguments = (str(store_dir), commit, data_dir, device, threads_per_cell)
        handles = [(cell, executor.submit(_run_in_worker, cell, *arguments)) for cell in to_run]
        for cell, handle in handles:
            report(cell, handle.result())
    elif jobs == 1 or len(to_run) <= 1:
        for cell in to_run:
            report(cell, run_cell(cell, store_dir, commit, data_dir, device))
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
            futures: dict[Future[dict[str, Any]], Cell] = {
                pool.submit(_run_in_worker, cell, str(store_dir), commit, data_dir, device): cell for cell in to_run
            }
            try:
                for future in as_completed(futures):
                    report(futures[future], future.result())
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    rows = [_saved_row(store_dir, cell, commit) for cell in grid.cells]
    rows = [{**row, "label": cell.label} for row, cell in zip(rows, grid.cells)]
    csv_path, jsonl_path = write_results(out_dir, rows)
    failed = sum(row.get("status") == "failed" for row in rows)
    return BenchSummary(rows, len(pending) if run else 0, reused, failed, csv_path, jsonl_path)


def _saved_row(store: Path, cell: Cell, commit: str) -> dict[str, Any]:
    path = store / cell.key / "result.json"
    if path.is_file():
        return dict(read_json(path))
    return {**_row(cell, commit, None, None), "status": "pending"}


def write_results(out: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``results.jsonl`` (same rows, same columns) atomically.

    Examples:
        >>> import tempfile
        >>> csv_path, _ = write_results(tempfile.mkdtemp(), [{"model": "lenet5", "status": "ok"}])
        >>> csv_path.read_text().splitlines()[1].startswith("lenet5,")
        True
    """
    out_dir = Path(out)
    rows = [{column: row.get(column) for column in RESULT_COLUMNS} for row in rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(RESULT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path, jsonl_path = out_dir / "results.csv", out_dir / "results.jsonl"
    text = buffer.getvalue()
    write_atomic(csv_path, lambda tmp: tmp.write_text(text))
    lines = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    write_atomic(jsonl_path, lambda tmp: tmp.write_text(lines))
    return csv_path, jsonl_path


def _parse_value(kind: type, value: Any) -> Any:
    if value is None or value == "":
        return None
    if kind is bool:
        return value if isinstance(value, bool) else str(value) == "True"
    if kind is int:
        return int(float(value))
    return float(value) if kind is float else value


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a ``results.csv`` or ``results.jsonl``, with numbers parsed and every column present.

    Rows written by an older layout read with the missing columns as ``None``; a newer layout
    than this version knows is refused with a message.

    Examples:
        >>> # rows = read_results("benchmarks/results/smoke/lenet5-mnist/results.csv")
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"no results file at {file}; run `panning bench CONFIG` first")
    text = file.read_text()
    if file.suffix == ".jsonl":
        try:
            raw = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as error:
            raise UserError(f"{file} is not JSON lines: {error}") from None
    elif file.suffix == ".csv":
        raw = list(csv.DictReader(io.StringIO(text)))
    else:
        raise UserError(f"{file}: results must be a .csv or .jsonl file written by `panning bench`")
    if raw and not {"model", "method", "sparsity", "test_accuracy"} <= set(raw[0]):
        raise UserError(f"{file} is not a results table of `panning bench` (no model/method/sparsity columns)")
    rows = []
    for entry in raw:
        row = ResultRow.parse(entry).as_dict()
        row["format"] = row["format"] or 1
        if row["format"] > RESULTS_FORMAT:
            raise UserError(
                f"{file} was written by a newer panning (results format {row['format']}); upgrade panning to read it"
            )
        row["label"] = row["label"] or row["method"]
        rows.append(row)
    return rows


__all__ = [
    "RESULTS_FORMAT",
    "RESULT_COLUMNS",
    "BenchSummary",
    "Cell",
    "Grid",
    "ResultRow",
    "load_grid",
    "parse_grid",
    "read_results",
    "run_cell",
    "run_grid",
    "write_results",
]
