"""Give the committed `panning-paper` rows the cell keys their configs give (issue #18).

These 84 rows (12 in each of seven grids) were run with ``options = {}`` while Panning's default
combination was ``additive``, the reference's. Commit f4aefc4 made ``multiplicative`` the default
and, so that the rows would still mean the reference preset, had every grid name
``combination = "additive"`` for `panning-paper`. That changed the cells' keys (format 1 keys hold
the options as written) but not the committed rows, whose ``cell`` column still holds the key of
``options = {}``. The screening and training are the same: before f4aefc4 ``{}`` resolved to
``combination = "additive"`` (``git show f4aefc4^:src/panning/panning.py``).

This script checks that each such row carries exactly the ``options = {}`` key of its cell and
rewrites it to the key of the config as committed; rows that already match are left alone, so it
can run again. Run from the repository root::

    python benchmarks/migrations/panning_paper_keys.py
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from panning import bench

REPO = Path(__file__).resolve().parents[2]


def migrate(config: Path) -> int:
    """Rewrite the drifted rows of one grid; returns how many changed."""
    grid = bench.load_grid(config)
    results = REPO / "benchmarks" / "results" / "smoke" / config.stem / "results.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    renamed = {}
    for cell in grid.cells:
        if cell.label == "panning-paper" and dict(cell.options) == {"combination": "additive"}:
            renamed[dataclasses.replace(cell, options=()).key] = cell.key
    changed = 0
    for row in rows:
        if row["cell"] in renamed:
            if row["label"] != "panning-paper" or json.loads(row["options"]) != {}:
                sys.exit(f"{results}: row {row['cell']} is not a panning-paper row run with options {{}}")
            row["cell"] = renamed[row["cell"]]
            row["options"] = json.dumps({"combination": "additive"}, sort_keys=True)
            changed += 1
    if changed:
        bench.write_results(results.parent, rows)
    return changed


def main() -> None:
    for config in sorted((REPO / "benchmarks" / "smoke").glob("*.toml")):
        if (REPO / "benchmarks" / "results" / "smoke" / config.stem / "results.jsonl").is_file():
            print(f"{config.stem}: {migrate(config)} rows given their config's key")


if __name__ == "__main__":
    main()
