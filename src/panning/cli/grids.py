"""Benchmark grids: ``bench``, ``report`` and ``sanity``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from panning import data as datasets
from panning import masks as masklib
from panning import models, report
from panning.cli.base import cli, user_errors
from panning.cli.checks import refuse_other_model, warn_other_dataset
from panning.errors import UserError, check_sparsity
from panning.executors import RayExecutor, executor_names
from panning.io import write_atomic
from panning.sanity import VARIANTS, check_mask_file_count, run_sanity, sanity_config
from panning.screening.pruning import method_names
from panning.training import device_kind, resolve_device


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
@click.option(
    "--executor",
    type=click.Choice(executor_names()),
    default="local",
    show_default=True,
    help="local: --jobs processes here; ray: one Ray task per cell (pip install 'panning[ray]').",
)
@click.option("--address", help="ray: the cluster to join (e.g. auto); default: start a local one.")
@click.option("--cpus-per-cell", default=1, show_default=True, type=int, help="ray: CPUs (and threads) of each cell.")
@click.option(
    "--only",
    metavar="LABEL[,LABEL...]",
    help="Run the cells of these method labels alone (the others stay pending): a part of a long grid first.",
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
    executor: str,
    address: str | None,
    cpus_per_cell: int,
    only: str | None,
) -> None:
    """Run a benchmark grid (TOML): each cell screened and trained once, results in one table."""
    from panning import bench

    _check_executor_options(executor, collect)
    grid = bench.load_grid(config, quick=quick)
    # Cells on a cluster run on its workers: the driver (a login node, a GPU-less head) need not
    # have their device; a local grid does.
    kind = device_kind(device) if executor == "ray" else resolve_device(device).type
    out_dir = Path(out) if out else Path("runs/bench") / grid.name
    store = Path(cells_dir) if cells_dir else Path("runs/bench/cells")
    unique = len({cell.key for cell in grid.cells})
    click.echo(f"grid {grid.name}: {unique} cells; finished cells in {store} are reused")

    started = time.monotonic()

    def show(cell: bench.Cell, row: dict[str, Any], done: int, pending: int) -> None:
        if row["status"] == "ok":
            outcome = f"test {row['test_accuracy']:.4f}, screening {row['prune_seconds']:.2f} s"
        else:
            outcome = f"FAILED: {row['error']}"
        click.echo(f"[{done}/{pending}] {cell.describe()}: {outcome}{remaining_time(started, done, pending)}")

    remote = None
    if executor == "ray" and not collect:
        gpus = {"cpu": 0, "auto": None}.get(kind, 1)
        remote = RayExecutor(address, cpus_per_cell=cpus_per_cell, gpus_per_cell=gpus)
    try:
        summary = bench.run_grid(
            grid,
            out_dir,
            store=store,
            jobs=jobs,
            data_dir=data_dir,
            device=device,
            on_result=show,
            run=not collect,
            executor=remote,
            threads_per_cell=cpus_per_cell if remote is not None else None,
            only=[label.strip() for label in only.split(",") if label.strip()] if only is not None else None,
        )
    finally:
        if remote is not None:
            remote.shutdown()
    click.echo(report.results_table(summary.rows))
    pending = sum(row.get("status") == "pending" for row in summary.rows)
    cells = f"{len(summary.rows)} cell{'s' if len(summary.rows) != 1 else ''}"
    click.echo(
        f"{cells}: {summary.ran} run now, {summary.reused} already done, {summary.failed} failed"
        + (f", {pending} pending" if pending else "")
        + f"; wrote {summary.results_csv} and {summary.results_jsonl}"
    )
    _fail_if_cells_failed(summary.failed, summary.results_csv)


def _check_executor_options(executor: str, collect: bool) -> None:
    """Refuse an option the chosen executor would ignore: --jobs is for local processes, --address
    and --cpus-per-cell for Ray (a grid run with them ignored is not the grid the user asked for)."""
    given = click.get_current_context().get_parameter_source
    explicit = {name for name in ("jobs", "address", "cpus_per_cell") if given(name) is ParameterSource.COMMANDLINE}
    if executor == "ray" and "jobs" in explicit and not collect:
        raise UserError(
            "--jobs sets local processes; under --executor ray each cell is a Ray task: "
            "drop --jobs (the cluster runs as many cells at once as its CPUs allow, see --cpus-per-cell)"
        )
    ignored = sorted(f"--{name.replace('_', '-')}" for name in explicit - {"jobs"})
    if executor == "local" and ignored:
        verb, them = ("applies", "it") if len(ignored) == 1 else ("apply", "them")
        raise UserError(f"{' and '.join(ignored)} {verb} to --executor ray only: add --executor ray or drop {them}")


def _fail_if_cells_failed(failed: int, results: Path | str) -> None:
    """Exit with status 1 when some cell failed (its error is in the results), after all is written."""
    if failed:
        click.echo(f"error: {failed} cell(s) failed; their errors are in the error column of {results}", err=True)
        raise SystemExit(1)


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
        with path.open("rb") as handle:
            header = handle.readline().decode("utf-8", "replace").strip().split(",")
        if "step" in header and "density" in header:
            if no_plots:
                raise UserError(f"{path} is a screening trace, whose report is its plot: drop --no-plots")
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


@cli.command("sanity")
@click.option("--model", "model_name", required=True, type=click.Choice(models.names()), help="Model name.")
@click.option("--dataset", required=True, type=click.Choice(datasets.names()), help="Dataset name.")
@click.option("--method", type=click.Choice(method_names()), help="The method whose masks to check.")
@click.option(
    "--masks", "masks_path", type=click.Path(dir_okay=False), help="Or a mask file to check (found elsewhere)."
)
@click.option("--sparsity", type=float, help="Fraction of weights removed, e.g. 0.99 (with --masks: the file's).")
@click.option("--seeds", help="Comma-separated seeds (default 0,1,2; with --masks the file's init seed).")
@click.option("--epochs", default=20, show_default=True, type=int, help="Training epochs of every run.")
@click.option("--val-size", type=int, help="Training examples held out for validation (default 5,000).")
@click.option("--batch-size", type=int, help="Training batch size (default 256).")
@click.option(
    "--variants", default=",".join(VARIANTS), show_default=True, help="Comma-separated: " + ", ".join(VARIANTS) + "."
)
@click.option("--out", type=click.Path(file_okay=False), help="Folder for the results (default runs/sanity/<grid>).")
@click.option("--cells", "cells_dir", type=click.Path(file_okay=False), help="Cell store (default runs/bench/cells).")
@click.option("--jobs", default=1, show_default=True, type=int, help="Cells run in parallel.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder holding <dataset>/ folders.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu or cuda.")
@user_errors
def sanity_command(
    model_name: str,
    dataset: str,
    method: str | None,
    masks_path: str | None,
    sparsity: float | None,
    seeds: str | None,
    epochs: int,
    val_size: int | None,
    batch_size: int | None,
    variants: str,
    out: str | None,
    cells_dir: str | None,
    jobs: int,
    data_dir: str | None,
    device: str,
) -> None:
    """Does a method's mask carry more than its layer-wise densities? Train it as found, shuffled
    within layers, re-initialised and inverted, over seeds (Frankle et al. 2021)."""
    try:
        seed_list = [int(s) for s in (seeds or "0,1,2").split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, e.g. 0,1,2; got {seeds!r}") from None
    chosen = [v.strip() for v in variants.split(",") if v.strip()]
    options: dict[str, Any] = {}
    training: dict[str, Any] = {"epochs": epochs}
    training.update(
        {key: value for key, value in (("val_size", val_size), ("batch_size", batch_size)) if value is not None}
    )
    if (method is None) == (masks_path is None):
        raise UserError("give either --method (screen, then check) or --masks FILE (check a mask file)")
    if masks_path is not None:
        method, options = "mask-file", {"path": str(Path(masks_path).resolve())}
        if not Path(masks_path).is_file():
            raise UserError(f"no mask file at {masks_path}")
        found = _check_mask_file(masks_path, model_name, dataset, sparsity)
        sparsity = found.sparsity() if sparsity is None else sparsity
        init_seed = found.metadata.get("init_seed")
        if init_seed is not None:
            if seeds is not None and seed_list != [int(init_seed)]:
                raise UserError(
                    f"{masks_path} was screened on the initialisation of seed {init_seed}: as found it trains from "
                    f"that seed only (--seeds {init_seed}); the reinit variant covers other initial weights"
                )
            seed_list = [int(init_seed)]
        if "inverted" in chosen:
            chosen.remove("inverted")  # a file holds a mask, not scores to invert
            if not chosen:
                raise UserError("inverted needs a method's scores, which a mask file has not; use --method")
        # As found means on the weights it was screened on: the file's initialisation scheme too.
        if found.metadata.get("init", "pytorch") != "pytorch":
            training["init"] = str(found.metadata["init"])
    if sparsity is None:
        raise UserError("--sparsity is needed with --method, e.g. --sparsity 0.99")
    assert method is not None
    config = sanity_config(
        model_name,
        dataset,
        method,
        check_sparsity(sparsity),
        seed_list,
        options=options,
        variants=chosen,
        training=training,
    )
    resolve_device(device)
    folder = Path(out) if out else Path("runs/sanity") / config["name"]
    store = Path(cells_dir) if cells_dir else Path("runs/bench/cells")

    started = time.monotonic()

    def show(cell: Any, row: dict[str, Any], done: int, pending: int) -> None:
        outcome = f"test {row['test_accuracy']:.4f}" if row["status"] == "ok" else f"FAILED: {row['error']}"
        click.echo(f"[{done}/{pending}] {cell.describe()}: {outcome}{remaining_time(started, done, pending)}")

    result = run_sanity(config, folder, store=store, jobs=jobs, data_dir=data_dir, device=device, on_result=show)
    click.echo(result.text)
    for path in result.files:
        click.echo(f"wrote {path}")
    _fail_if_cells_failed(sum(row.get("status") == "failed" for row in result.rows), folder / "results.csv")


def _check_mask_file(path: str, model_name: str, dataset: str, sparsity: float | None) -> masklib.Masks:
    """The masks of a file; refused, before any cell runs, if they do not fit the model or the asked sparsity."""
    masks = masklib.load(path)
    refuse_other_model(masks, model_name, path)
    warn_other_dataset(masks, dataset)
    info = datasets.spec(dataset)
    masks.check_fits(models.create(model_name, info.in_channels, info.num_classes, info.image_size))
    if sparsity is not None:
        keep = masklib.kept_count(masks.total(), check_sparsity(sparsity))
        check_mask_file_count(path, masks, keep, "leave --sparsity out")
    return masks


def remaining_time(started: float, done: int, total: int, now: float | None = None) -> str:
    """``"; about N min left"`` at the pace of the cells finished since ``started`` (``""`` when
    none is left).

    Examples:
        >>> remaining_time(0.0, 3, 12, now=180.0)
        '; about 9 min left'
        >>> remaining_time(0.0, 12, 12, now=720.0)
        ''
    """
    if done >= total or done < 1:
        return ""
    elapsed = (time.monotonic() if now is None else now) - started
    minutes = elapsed / done * (total - done) / 60
    return f"; about {minutes:.0f} min left" if minutes >= 1 else "; under a minute left"
