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

The package's parts: :mod:`~panning.bench.config` (a grid's cells and their keys),
:mod:`~panning.bench.cells` (running them) and :mod:`~panning.bench.results` (the results table).
"""

from __future__ import annotations

from panning.bench.cells import (
    BenchSummary,
    run_cell,
    run_grid,
)
from panning.bench.config import (
    CONFIG_KEYS,
    GRID_KEYS,
    METHOD_KEYS,
    SCREENING_KEYS,
    TRAINING_KEYS,
    Cell,
    Grid,
    canonical_key,
    load_grid,
    parse_grid,
)
from panning.bench.results import (
    RESULT_COLUMNS,
    RESULTS_FORMAT,
    ResultRow,
    read_results,
    write_results,
)

__all__ = [
    "CONFIG_KEYS",
    "GRID_KEYS",
    "METHOD_KEYS",
    "RESULTS_FORMAT",
    "RESULT_COLUMNS",
    "SCREENING_KEYS",
    "TRAINING_KEYS",
    "BenchSummary",
    "Cell",
    "Grid",
    "ResultRow",
    "canonical_key",
    "load_grid",
    "parse_grid",
    "read_results",
    "run_cell",
    "run_grid",
    "write_results",
]
