"""Running a grid's cells, in this process, in local processes or on any executor, into a shared store."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import multiprocessing
import os
import shutil
import traceback
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # POSIX only: on Windows, grids sharing a cell store are not kept apart
    fcntl = None  # type: ignore[assignment]

import torch

from panning import __version__, models
from panning import data as datasets
from panning.bench.config import Cell, Grid
from panning.bench.results import RUN_COLUMNS, ResultRow, write_results
from panning.errors import UserError, UserTypeError, check_count
from panning.io import read_json, source_commit, write_atomic, write_json
from panning.masks import Masks
from panning.sanity import REINIT_SEED_OFFSET, inverted, shuffle_within_layers
from panning.screening.pruning import (
    Method,
    prune,
)
from panning.training import create_model, masks_to_resume, record_origin, resolve_device, train


@functools.lru_cache(maxsize=2)
def _dataset(
    name: str, data_dir: str | None, val_size: int, normalization: datasets.InputNormalization
) -> datasets.Dataset:
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
        # The other columns are the run's metrics of the same name (RunResult's fields).
        row.update({column: metrics.get(column) for column in RUN_COLUMNS if column not in row})
        layers = metrics.get("layers") or []
        row["layer_density"] = json.dumps({layer["name"]: layer["kept"] / layer["total"] for layer in layers})
    return ResultRow(**row).as_dict()


def _screen_cell(cell: Cell, model: torch.nn.Module, dataset: datasets.Dataset) -> Masks:
    """The cell's masks as its method finds them (``inverted``: keeping what it would prune)."""
    options = cell.method_options()
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
        >>> grid = load_grid("benchmarks/smoke/lenet5-mnist.toml")  # doctest: +SKIP
        >>> row = run_cell(grid.cells[0], "runs/bench/cells")  # doctest: +SKIP
    """
    folder = Path(store) / cell.key
    saved = _saved_result(folder / "result.json")
    if saved is not None and saved["status"] == "ok":
        return saved
    folder.mkdir(parents=True, exist_ok=True)
    with _cell_lock(Path(store), cell.key):
        saved = _saved_result(folder / "result.json")  # another grid on this store may have run it meanwhile
        if saved is not None and saved["status"] == "ok":
            return saved
        return _screen_and_train(cell, folder, commit, data_dir, device)


@contextlib.contextmanager
def _cell_lock(store: Path, key: str) -> Iterator[None]:
    """Hold a cell alone: a second grid sharing the store waits for it, then reuses its result.
    An OS lock (released if its process dies), kept beside the cells so that cell folders stay clean."""
    locks = store / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{key}.lock", "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _screen_and_train(cell: Cell, folder: Path, commit: str, data_dir: str | None, device: str) -> dict[str, Any]:
    """Run a cell in its folder (resuming what is there); its row, saved as ``result.json``."""
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
        row = _row(cell, commit, metrics, None, resolve_device(config.device).type)  # where it ran
        (folder / "error.txt").unlink(missing_ok=True)  # an earlier attempt's
    except KeyboardInterrupt:
        raise
    except Exception as error:  # a failing cell is recorded and the grid goes on
        message = f"{type(error).__name__}: {error}".splitlines()[0]
        write_atomic(folder / "error.txt", lambda tmp: tmp.write_text(traceback.format_exc()))
        row = _row(cell, commit, None, message, device)
    write_json(folder / "result.json", row)
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


def _saved_result(path: Path) -> dict[str, Any] | None:
    """A cell's saved row, or None when there is none or it is no row (a damaged file: the cell runs again)."""
    if not path.is_file():
        return None
    try:
        saved = read_json(path)
    except UserError as error:
        warnings.warn(f"{error}; the cell runs again", stacklevel=2)
        return None
    if not _ROW_FIELDS <= saved.keys() or saved["status"] not in ("ok", "failed"):
        warnings.warn(f"{path} is not a cell result written by panning; the cell runs again", stacklevel=2)
        return None
    return saved


_ROW_FIELDS = frozenset(field.name for field in dataclasses.fields(ResultRow))


def _is_done(store: Path, cell: Cell) -> bool:
    saved = _saved_result(store / cell.key / "result.json")
    return saved is not None and saved["status"] == "ok"


def _check_run_arguments(grid: Any, jobs: Any, executor: Any, threads_per_cell: Any, device: str) -> None:
    check_count("jobs", jobs)
    if executor is None:
        resolve_device(device)  # here, a device this machine lacks would fail every cell one by one
    if not isinstance(grid, Grid):
        raise UserTypeError(
            f"grid must be a panning.bench.Grid (from load_grid or parse_grid), got {type(grid).__name__}"
        )
    if isinstance(executor, ThreadPoolExecutor):
        # Each cell seeds torch's process-wide generator: cells in threads of one process draw from each other's.
        raise UserError(
            "cells cannot run in threads (they seed torch's process-wide generator): use jobs=N, a "
            "ProcessPoolExecutor, Ray or submitit"
        )
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise UserTypeError(f"executor must have submit(fn, *args) (a concurrent.futures executor), got {executor!r}")
    if threads_per_cell is not None:
        check_count("threads_per_cell", threads_per_cell)


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
    only: Collection[str] | None = None,
) -> BenchSummary:
    """Run every cell of ``grid`` not already done in ``store``, then write ``out/results.csv``
    and ``out/results.jsonl`` with one row per cell.

    ``jobs`` > 1 runs cells in that many processes, with the CPU threads split between them.
    ``store`` defaults to ``out/cells``. ``run=False`` runs nothing and writes the rows of the
    finished cells, the others with status ``pending`` (a grid in progress, or run elsewhere).

    ``executor`` runs the cells elsewhere: any object whose ``submit(fn, *args)`` returns a handle
    with ``result()`` — a ``concurrent.futures`` executor, a Ray-backed one, or submitit's Slurm
    executor. Its workers must see ``store``; each cell takes ``threads_per_cell`` CPU threads.
    ``only`` runs the cells of those method labels alone (the rest of the grid stays pending, or
    reused where finished), so a part of a long grid can go first.

    Examples:
        >>> grid = load_grid("benchmarks/smoke/lenet5-mnist.toml", quick=True)  # doctest: +SKIP
        >>> summary = run_grid(grid, "runs/bench/x")  # doctest: +SKIP
    """
    _check_run_arguments(grid, jobs, executor, threads_per_cell, device)
    chosen = _chosen_keys(grid, only)
    out_dir = Path(out)
    store_dir = Path(store) if store is not None else out_dir / "cells"
    commit = source_commit()
    unique = list({cell.key: cell for cell in grid.cells}.values())
    pending = [cell for cell in unique if not _is_done(store_dir, cell)]
    reused = len(unique) - len(pending)
    done = 0
    to_run = [cell for cell in pending if cell.key in chosen] if run else []
    if executor is None and data_dir is not None:  # else a folder lacking a dataset fails its cells one by one
        for name in sorted({cell.dataset for cell in to_run}):
            datasets.locate(name, data_dir)
    store_dir.mkdir(parents=True, exist_ok=True)

    def report(cell: Cell, row: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        if on_result is not None:
            on_result(cell, row, done, len(to_run))

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
    return BenchSummary(rows, len(to_run), reused, failed, csv_path, jsonl_path)


def _chosen_keys(grid: Grid, only: Collection[str] | None) -> set[str]:
    """The keys of the cells of the method labels ``only`` (all cells when None)."""
    if only is None:
        return {cell.key for cell in grid.cells}
    if isinstance(only, str):
        raise UserTypeError("only must be a list of method labels, not one string")
    only = set(only)  # once: a generator would be used up by the check below
    labels = {cell.label for cell in grid.cells}
    unknown = sorted(only - labels)
    if not only or unknown:
        wrong = f"has no method labelled {unknown[0]!r}" if unknown else "needs at least one label to run"
        raise UserError(f"grid {grid.name} {wrong}; its labels: {', '.join(sorted(labels))}")
    return {cell.key for cell in grid.cells if cell.label in only}


def _saved_row(store: Path, cell: Cell, commit: str) -> dict[str, Any]:
    saved = _saved_result(store / cell.key / "result.json")
    if saved is not None:
        return saved
    return {**_row(cell, commit, None, None), "status": "pending"}
