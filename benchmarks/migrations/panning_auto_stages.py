"""Give Panning's new default (``stages="auto"``, issue #17) the cells it already has under another name.

``stages="auto"`` screens with the ``agent-floor`` table on a network with convolutions and with
the ``agent`` table otherwise: on LeNet-5 it is the agent-floor configuration of
``benchmarks/panning-tuning/synflow-floor*.toml``, on LeNet-300 the former default. Its cells get
new keys (the options say ``"auto"``), but their runs exist already. For every cell of the grids
below whose method is the default Panning and whose folder is missing, this script finds the cell
of the table ``auto`` picks for its model (same model, data, sparsity, seed, variant, screening
and training), screens both on the real data and checks that the masks are bit-identical, and only
then copies that cell's finished run under the new key (``cell.json`` with the new configuration
and label, ``result.json`` with the new key, label and options). A cell whose counterpart is
missing, unfinished or screens differently is left to run. Cells already present are left alone,
so the script can run again. Run from the repository root, with the data where grids find it::

    PANNING_DATA=... OMP_NUM_THREADS=1 python benchmarks/migrations/panning_auto_stages.py
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from panning import bench, models
from panning import data as datasets
from panning.bench.cells import _screen_cell
from panning.io import read_json, write_json
from panning.screening.multi_index import PRESETS, auto_stages
from panning.training import create_model

REPO = Path(__file__).resolve().parents[2]
CELLS = REPO / "benchmarks" / "results" / "cells"
GRIDS = [
    "lenet5-mnist.toml",
    "lenet5-fashion-mnist.toml",
    "lenet300-mnist.toml",
    "strongest-lenet5-mnist.toml",
    "strongest-lenet5-fashion-mnist.toml",
    "strongest-lenet300-mnist.toml",
]


def _counterpart(cell: bench.Cell) -> bench.Cell:
    """The same cell with the table ``auto`` picks for its model, named as the grids named it then."""
    chosen = auto_stages(models.create(cell.model))
    # The agent table is a named preset; the agent-floor grids wrote the table out in full.
    stages: Any = chosen if chosen == "agent" else PRESETS[(chosen, "additive")].as_dict()
    options = {**dict(cell.options), "stages": stages}
    return dataclasses.replace(cell, options=tuple(sorted(options.items())))


def _finished(cell: bench.Cell) -> dict[str, Any] | None:
    path = CELLS / cell.key / "result.json"
    row = read_json(path) if path.is_file() else None
    return row if row is not None and row.get("status") == "ok" else None


def _masks_digest(cell: bench.Cell, loaded: dict[str, datasets.Dataset]) -> str:
    config = cell.train_config()
    if cell.dataset not in loaded:
        loaded[cell.dataset] = datasets.load(cell.dataset, val_size=config.val_size, normalization=config.normalization)
    dataset = loaded[cell.dataset]
    return _screen_cell(cell, create_model(config, dataset), dataset).digest()


def main() -> int:
    loaded: dict[str, datasets.Dataset] = {}
    copied = left = 0
    for name in GRIDS:
        grid = bench.load_grid(REPO / "benchmarks" / name)
        for cell in grid.cells:
            if cell.method != "panning" or dict(cell.options).get("stages") != "auto" or (CELLS / cell.key).exists():
                continue
            source = _counterpart(cell)
            row = _finished(source)
            if row is None or _masks_digest(cell, loaded) != _masks_digest(source, loaded):
                print(f"left to run: {cell.describe()} ({'no finished counterpart' if row is None else 'other masks'})")
                left += 1
                continue
            folder = CELLS / cell.key
            folder.mkdir()
            write_json(folder / "cell.json", {"key": cell.key, "label": cell.label, **cell.canonical()})
            options = json.dumps(dict(cell.options), sort_keys=True)
            write_json(folder / "result.json", {**row, "cell": cell.key, "label": cell.label, "options": options})
            print(f"{cell.describe()}: {source.key} -> {cell.key} (same masks)")
            copied += 1
    print(f"{copied} cells given their counterpart's run, {left} left to run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
