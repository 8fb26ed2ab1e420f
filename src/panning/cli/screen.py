"""Screening and training: ``prune``, ``train``, ``run`` and ``info``."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import torch

from panning import data as datasets
from panning import distributed, models
from panning import masks as masklib
from panning.cli.base import (
    architecture,
    cli,
    common_options,
    method_options,
    prune_options,
    train_config,
    train_options,
    user_errors,
)
from panning.cli.checks import refuse_other_model, warn_other_dataset
from panning.connectivity import connectivity
from panning.errors import UserError, check_sparsity
from panning.io import changed_settings, check_new_file
from panning.report import ScreeningTrace, mask_table
from panning.screening.pruning import prune, resolved_screening
from panning.training import (
    TrainConfig,
    build,
    check_out_dir,
    check_single_process_options,
    masks_to_resume,
    record_origin,
    resolve_device,
    train,
)


def _screen(
    model: torch.nn.Module,
    model_name: str,
    dataset: datasets.Dataset,
    kw: dict[str, Any],
    seed: int,
    init: str,
    progress: bool,
) -> masklib.Masks:
    if kw.get("trace"):
        check_new_file(kw["trace"], "--trace")
    trace = ScreeningTrace(model, dataset.input_shape)
    with warnings.catch_warnings():
        # The mask table printed next says LAYER COLLAPSE where prune() would warn of it.
        warnings.filterwarnings("ignore", message=".*layer collapse")
        masks = prune(
            model,
            kw["sparsity"],
            kw["method"],
            data=dataset,
            iterations=kw["iterations"],
            schedule=kw["schedule"],
            regrowth=kw["regrowth"],
            samples_per_class=kw["samples_per_class"],
            seed=seed,
            scope=kw["scope"],
            callback=trace if kw.get("trace") else None,
            progress=progress,
            **method_options(kw),
        )
    record_origin(masks, model_name, dataset, seed, init)
    if kw.get("trace"):
        trace.write(kw["trace"])
        click.echo(f"wrote the per-step trace to {kw['trace']}")
    return masks


def _print_masks(model: torch.nn.Module, masks: masklib.Masks, input_shape: tuple[int, ...]) -> None:
    record = masks.screening  # prune() measured these masks already, unless they changed since
    report = record.connectivity if record is not None else connectivity(model, masks, input_shape=input_shape)
    click.echo(mask_table(masks, report, record.prune_seconds if record is not None else None))


@cli.command("prune")
@common_options
@prune_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Mask file to write (.safetensors).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def prune_command(
    model_name: str,
    dataset: str,
    seed: int,
    data_dir: str | None,
    device: str,
    out: str,
    quiet: bool,
    val_size: int,
    normalization: datasets.InputNormalization,
    init: models.Init,
    **kw: Any,
) -> None:
    """Screen a model at initialisation and save its masks."""
    check_sparsity(kw["sparsity"])
    check_new_file(out)
    config = TrainConfig(
        model=model_name,
        dataset=dataset,
        seed=seed,
        device=device,
        epochs=1,
        val_size=val_size,
        normalization=normalization,
        init=init,
    )
    model, data = build(config, data_dir)
    model.to(resolve_device(device))
    masks = _screen(model, model_name, data, kw, seed, init, not quiet)
    masklib.save(masks, out)
    _print_masks(model, masks, data.input_shape)
    click.echo(f"wrote {out}")


@cli.command("train")
@common_options
@train_options
@click.option("--masks", "masks_path", type=click.Path(dir_okay=False), help="Mask file from `panning prune`.")
@click.option("--dense", is_flag=True, help="Train without masks.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder to create.")
@user_errors
def train_command(
    model_name: str,
    dataset: str,
    seed: int,
    data_dir: str | None,
    device: str,
    out: str,
    masks_path: str | None,
    dense: bool,
    resume: bool,
    quiet: bool,
    **kw: Any,
) -> None:
    """Train a model, masked or dense, into a run folder (on N processes under torchrun)."""
    if bool(masks_path) == dense:
        raise UserError("pass exactly one of --masks FILE or --dense")
    config = train_config(model_name, dataset, seed, device, **kw)
    with distributed.joined(device) as workers:
        _train_from_file(config, data_dir, out, masks_path, resume, quiet, workers)


def _train_from_file(
    config: TrainConfig,
    data_dir: str | None,
    out: str,
    masks_path: str | None,
    resume: bool,
    quiet: bool,
    workers: distributed.Workers,
) -> None:
    seed, dataset = config.seed, config.dataset
    masks = masklib.load(masks_path) if masks_path else None
    if masks is not None and masks.metadata.get("init_seed", seed) != seed:
        warnings.warn(
            f"the masks were screened on the initialisation of seed {masks.metadata['init_seed']}, "
            f"training starts from seed {seed}'s",
            stacklevel=1,
        )
    if masks is not None:
        refuse_other_model(masks, config.model, str(masks_path))
    model, data = build(config, data_dir)
    if masks is not None:
        masks.check_fits(model)
        _warn_about_mask_origin(masks, model, dataset, config.init)
    metrics = train(model, data, config, out, masks=masks, resume=resume, progress=not quiet)
    if workers.main:
        _print_result(metrics, out)


@cli.command("run")
@common_options
@prune_options
@train_options
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder to create.")
@user_errors
def run_command(
    model_name: str,
    dataset: str,
    seed: int,
    data_dir: str | None,
    device: str,
    out: str,
    resume: bool,
    quiet: bool,
    **kw: Any,
) -> None:
    """Screen a model, then train it, into one run folder (on N processes under torchrun:
    screened once, on rank 0)."""
    check_sparsity(kw["sparsity"])
    config = train_config(model_name, dataset, seed, device, **kw)
    with distributed.joined(device) as workers:
        check_single_process_options(config, workers)  # before screening, which may take minutes
        model, data = build(config, data_dir)
        run_dir = Path(out)
        masks = masks_to_resume(run_dir) if resume else None
        if masks is not None:
            _check_same_screening(run_dir, masks, kw, seed, config.init, model_name, dataset)
        else:
            check_out_dir(run_dir, resume)
            model.to(distributed.device_for(resolve_device(device), workers))
            screened = _screen(model, model_name, data, kw, seed, config.init, not quiet) if workers.main else None
            masks = distributed.share(screened, workers)
        if workers.main:
            _print_masks(model, masks, data.input_shape)
        metrics = train(model, data, config, out, masks=masks, resume=resume, progress=not quiet)
        if workers.main:
            _print_result(metrics, out)


def _warn_about_mask_origin(masks: masklib.Masks, model: torch.nn.Module, dataset: str, init: str) -> None:
    """Masks that fit can still be the wrong ones: other data, another initialisation, layers left out."""
    screened_init = masks.metadata.get("init", "pytorch")
    if screened_init != init:
        warnings.warn(
            f"the masks were screened on the {screened_init} initialisation, training starts from the {init} one; "
            f"pass --init {screened_init}",
            stacklevel=1,
        )
    warn_other_dataset(masks, dataset)
    uncovered = [name for name in masklib.prunable_parameters(model) if name not in masks]
    if uncovered:
        warnings.warn(
            f"the masks leave {', '.join(uncovered)} out: {'it trains' if len(uncovered) == 1 else 'they train'} dense",
            stacklevel=1,
        )


def _check_same_screening(
    run_dir: Path, masks: masklib.Masks, kw: dict[str, Any], seed: int, init: str, model: str, dataset: str
) -> None:
    """Refuse to resume a run whose masks were screened with other settings than those asked for now."""
    asked: dict[str, Any] = {
        "model": model,
        "dataset": dataset,
        "method": kw["method"],
        "options": method_options(kw),
        "schedule": kw["schedule"],
        "regrowth": kw["regrowth"],
        "samples_per_class": resolved_screening(
            kw["method"], method_options(kw), {"samples_per_class": kw["samples_per_class"]}
        )["samples_per_class"],
        "scope": kw["scope"],
        "seed": seed,
        "init": init,
    }
    if kw["iterations"] is not None:
        asked["iterations"] = kw["iterations"]
    # Kept counts, not the recorded float: files before 2026-12-04 record the sparsity they reached.
    if masklib.kept_count(masks.total(), kw["sparsity"]) != masks.kept():
        raise UserError(
            f"{run_dir} was screened to keep {masks.kept()} of {masks.total()} weights (sparsity "
            f"{masks.metadata.get('sparsity')}), not at --sparsity {kw['sparsity']}; resume with the same --sparsity "
            "or choose another --out"
        )
    saved = {**masks.metadata, "init": masks.metadata.get("init", "pytorch")}
    for field, (was, value) in changed_settings(saved, asked, asked).items():
        what = "method options" if field == "options" else "--" + field.replace("_", "-")
        raise UserError(
            f"{run_dir} was screened with {field} = {was!r}, not {value!r}; resume with the "
            f"same {what} or choose another --out"
        )


def _print_result(metrics: Mapping[str, Any], out: str) -> None:
    dead = " (DEAD: constant prediction)" if metrics.get("dead") else ""
    click.echo(f"final test accuracy: {metrics['test_accuracy']:.4f}{dead}  (run folder: {out})")


@cli.command("info")
@click.argument("file", type=click.Path(dir_okay=False))
@user_errors
def info_command(file: str) -> None:
    """Show a mask file's metadata and per-layer table."""
    masks = masklib.load(file)
    meta = dict(masks.metadata)
    meta.pop("shapes", None)
    click.echo(json.dumps(meta, indent=2, sort_keys=True, default=str))
    report = None
    if meta.get("model") in models.names() and meta.get("dataset") in datasets.names():
        model, shape = architecture(meta["model"], meta["dataset"])
        try:
            masks.check_fits(model)
            report = connectivity(model, masks, input_shape=shape)
        except UserError:
            report = None
    click.echo(mask_table(masks, report, meta.get("prune_seconds")))
