"""Benchmark grids: ``bench`` and ``report``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from panning import report
from panning.cli.base import cli, user_errors
from panning.errors import UserError
from panning.io import write_atomic
from panning.training import (
    resolve_device,
)


@cli.command("bench")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--quick", is_flag=True, help="Use the config's [quick] table: a small grid that runs in minutes.")
@click.option("--jobs", default=1, show_default=True, type=int, help="Cells run in parallel (CPU threads are split).")
@click.option(
    "--out", type=click.Path(file_okay=False), help="Folder for results.csv/.jsonl (default runs/bench/<name>)."
)
@click.option(
    "--cells",
    "cells_dir",
    type=click.Path(file_okay=False),
    help="Store of cell run folders, shareable between grids (default runs/bench/cells).",
)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder holding <dataset>/ folders.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu or cuda.")
@click.option(
    "--collect", is_flag=True, help="Run nothing: write the results of the cells finished so far (others pending)."
)
@user_errors
def bench_command(
    config: str,
    quick: bool,
    jobs: int,
    out: str | None,
    cells_dir: str | None,
    data_dir: str | None,
    device: str,
    collect: bool,
) -> None:
    """Run a benchmark grid (TOML): each cell screened and trained once, results in one table."""
    from panning import bench

    grid = bench.load_grid(config, quick=quick)
    resolve_device(device)
    out_dir = Path(out) if out else Path("runs/bench") / grid.name
    store = Path(cells_dir) if cells_dir else Path("runs/bench/cells")
    unique = len({cell.key for cell in grid.cells})
    click.echo(f"grid {grid.name}: {unique} cells; finished cells in {store} are reused")

    def show(cell: bench.Cell, row: dict[str, Any], done: int, pending: int) -> None:
        if row["status"] == "ok":
            outcome = f"test {row['test_accuracy']:.4f}, screening {row['prune_seconds']:.2f} s"
        else:
            outcome = f"FAILED: {row['error']}"
        click.echo(f"[{done}/{pending}] {cell.describe()}: {outcome}")

    summary = bench.run_grid(
        grid, out_dir, store=store, jobs=jobs, data_dir=data_dir, device=device, on_result=show, run=not collect
    )
    click.echo(report.results_table(summary.rows))
    pending = sum(row.get("status") == "pending" for row in summary.rows)
    click.echo(
        f"{len(summary.rows)} cells: {summary.ran} run now, {summary.reused} already done, {summary.failed} failed"
        + (f", {pending} pending" if pending else "")
        + f"; wrote {summary.results_csv} and {summary.results_jsonl}"
    )


@cli.command("report")
@click.argument("results", type=click.Path(dir_okay=False))
@click.option(
    "--out", type=click.Path(file_okay=False), help="Folder for report.md and plots (default: beside RESULTS)."
)
@click.option("--no-plots", is_flag=True, help="Write only the markdown table.")
@user_errors
def report_command(results: str, out: str | None, no_plots: bool) -> None:
    """Tables and plots from a `panning bench` results file, or a plot of a `--trace` CSV."""
    from panning import bench

    path = Path(results)
    folder = Path(out) if out else path.parent
    if path.suffix == ".csv" and path.is_file():
        header = path.read_text().split("\n", 1)[0].split(",")
        if "step" in header and "density" in header:
            target = folder / f"{path.stem}.png"
            report.plot_trace(report.read_trace(path), target)
            click.echo(f"wrote {target}")
            return
    rows = bench.read_results(path)
    if not rows:
        raise UserError(f"{path} holds no rows; run `panning bench CONFIG` first")
    table = report.results_table(rows)
    target = folder / "report.md"
    write_atomic(target, lambda tmp: tmp.write_text(table))
    click.echo(table)
    click.echo(f"wrote {target}")
    if not no_plots:
        for plot in report.plot_results(rows, folder):
            click.echo(f"wrote {plot}")
