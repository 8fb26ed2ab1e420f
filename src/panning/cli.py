"""The ``panning`` command line: prune, train, run (prune then train), info, compact, export, bench, report.

Every user mistake ends with a one-line ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import torch
from safetensors.torch import load_file

from panning import __version__, models, report
from panning import agent as agentlib
from panning import data as datasets
from panning import masks as masklib
from panning.compaction import compact_with_plan
from panning.connectivity import Connectivity, connectivity
from panning.errors import UserError, check_sparsity
from panning.inference import fastest_inference
from panning.io import changed_settings, os_fault, write_atomic
from panning.panning import COMBINATIONS, NORMALIZATIONS
from panning.pruning import StepRecord, method_names, prune
from panning.report import mask_table, write_trace
from panning.sparse import Costs, load_sparse, model_costs, read_sparse_metadata, save_sparse
from panning.training import (
    RESCALES,
    TrainConfig,
    build,
    check_out_dir,
    masks_to_resume,
    record_origin,
    resolve_device,
    train,
)

F = Callable[..., Any]


def _options(*decorators: F) -> Callable[[F], F]:
    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


class _NumberOrNone(click.ParamType):
    name = "number|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float | None:
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither a number nor 'none'", param, ctx)


_NUMBER_OR_NONE = _NumberOrNone()

_common = _options(
    click.option("--model", "model_name", required=True, type=click.Choice(models.names()), help="Model name."),
    click.option("--dataset", required=True, type=click.Choice(datasets.names()), help="Dataset name."),
    click.option("--seed", default=0, show_default=True, type=int, help="Seed of the initialisation and sampling."),
    click.option("--data-dir", type=click.Path(file_okay=False), help="Folder holding <dataset>/ folders."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda."),
    click.option(
        "--val-size",
        default=datasets.DEFAULT_VAL_SIZE,
        show_default=True,
        type=int,
        help="Training examples held out for validation (never used for screening or training).",
    ),
    click.option(
        "--normalization",
        default="standard",
        show_default=True,
        type=click.Choice(["standard", "half"]),
        help="standard: the dataset's mean/std; half: mean 0.5, std 0.5.",
    ),
    click.option(
        "--init",
        default=TrainConfig.init,
        show_default=True,
        type=click.Choice(list(models.INITS)),
        help="Initialisation screened and trained: the modules' own (pytorch) or the authors' script's (reference).",
    ),
)

_prune_options = _options(
    click.option("--method", required=True, type=click.Choice(method_names()), help="Screening method."),
    click.option("--sparsity", required=True, type=float, help="Fraction of weights removed, in [0, 1)."),
    click.option("--iterations", type=int, help="Pruning steps T (default: 100 for synflow/iter-snip, else 1)."),
    click.option("--schedule", default="exponential", show_default=True, type=click.Choice(["exponential", "linear"])),
    click.option(
        "--regrowth/--no-regrowth",
        default=True,
        show_default=True,
        help="Let pruned weights come back in later steps (--no-regrowth: monotone masks).",
    ),
    click.option(
        "--samples-per-class",
        default=10,
        show_default=True,
        type=int,
        help="Examples of each class in a scoring batch.",
    ),
    click.option("--temperature", type=float, help="Logit temperature of snip/grasp (defaults 1 and 200)."),
    click.option("--scope", default="global", show_default=True, type=click.Choice(["global", "layer"])),
    click.option(
        "--grasp",
        "grasp_form",
        type=click.Choice(["abs", "signed"]),
        help="GraSP score form for grasp/panning: signed θ⊙Hg or the reference's |θ⊙Hg|.",
    ),
    click.option(
        "--index-normalization",
        type=click.Choice(list(NORMALIZATIONS)),
        help="panning: how each index is normalised (default zscore-abs, the reference's).",
    ),
    click.option(
        "--combination",
        type=click.Choice(list(COMBINATIONS)),
        help="panning: multiplicative (default) or additive (the reference's default) combination.",
    ),
    click.option("--stages", help="panning: 'paper' or a TOML/JSON stage table file (default paper)."),
    click.option(
        "--agent",
        "agent_path",
        type=click.Path(dir_okay=False),
        help="rl-panning: a trained agent (.zip from `panning agent train`; default: the shipped one).",
    ),
    click.option("--trace", type=click.Path(dir_okay=False), help="Write a per-step CSV trace of the screening."),
)

_train_options = _options(
    click.option("--epochs", required=True, type=int, help="Training epochs."),
    click.option("--lr", default=0.1, show_default=True, type=float),
    click.option("--batch-size", default=256, show_default=True, type=int),
    click.option("--weight-decay", default=1e-4, show_default=True, type=float),
    click.option("--momentum", default=0.9, show_default=True, type=float),
    click.option(
        "--augment/--no-augment",
        default=None,
        help="Random crop and flip (default: on for CIFAR and Tiny-ImageNet only).",
    ),
    click.option(
        "--warmup-epochs",
        default=TrainConfig.warmup_epochs,
        show_default=True,
        type=float,
        help="Epochs of linear learning-rate warm-up before the cosine schedule (0: none).",
    ),
    click.option(
        "--rescale",
        default=TrainConfig.rescale,
        show_default=True,
        type=click.Choice(list(RESCALES)),
        help="fan-in: scale each unit's kept weights to its fan-in after masking; none: as initialised.",
    ),
    click.option(
        "--clip-grad-norm",
        default=str(TrainConfig.clip_grad_norm),
        show_default=True,
        type=_NUMBER_OR_NONE,
        help="Clip the gradient's global norm to this value before every step; none: no clipping.",
    ),
    click.option("--compact", is_flag=True, help="Train the compacted model: dead units removed (needs masks)."),
    click.option(
        "--sparse-kernels",
        is_flag=True,
        help="Use sparse linear kernels where timing on this device says they are faster (needs masks).",
    ),
    click.option("--resume", is_flag=True, help="Continue the unfinished run in --out."),
    click.option("--quiet", is_flag=True, help="No progress bars."),
)


def _user_errors(function: F) -> F:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except UserError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)
        except OSError as error:  # a fault of the operating system, not of the library: one line too
            click.echo(f"error: {os_fault(error.filename or '?', error, 'use')}", err=True)
            sys.exit(2)

    return wrapper


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    click.echo(f"warning: {message}", err=True)


class _OneLineErrors(click.Group):
    """A group whose usage errors are one line (click prints usage and a blank line by default)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as error:
            where = error.ctx.command_path if error.ctx is not None else "panning"
            message = " ".join(error.format_message().split())
            click.echo(f"error: {message} (see `{where} --help`)", err=True)
            sys.exit(2)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("aborted: rerun with --resume to continue a run (a grid: rerun the same command)", err=True)
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(name="panning", cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="panning")
def cli() -> None:
    """Screen the sparse network worth training, before training."""
    warnings.showwarning = _show_warning


def _train_config(model_name: str, dataset: str, seed: int, device: str, **kw: Any) -> TrainConfig:
    return TrainConfig(
        model=model_name,
        dataset=dataset,
        seed=seed,
        device=device,
        init=kw["init"],
        warmup_epochs=kw["warmup_epochs"],
        rescale=kw["rescale"],
        clip_grad_norm=kw["clip_grad_norm"],
        epochs=kw["epochs"],
        lr=kw["lr"],
        batch_size=kw["batch_size"],
        weight_decay=kw["weight_decay"],
        momentum=kw["momentum"],
        val_size=kw["val_size"],
        normalization=kw["normalization"],
        augment=kw["augment"],
        compact=kw["compact"],
        sparse_kernels=kw["sparse_kernels"],
    ).validate()


def _method_options(kw: dict[str, Any]) -> dict[str, Any]:
    method = kw["method"]
    options: dict[str, Any] = {}
    if kw.get("temperature") is not None:
        if method == "rl-panning":
            raise UserError("--temperature does not apply to rl-panning: the agent keeps its training temperature")
        options["temperature"] = kw["temperature"]
    panning_only = {"index_normalization": "normalization", "combination": "combination", "stages": "stages"}
    for flag, option in panning_only.items():
        if kw.get(flag) is not None:
            if method != "panning":
                raise UserError(f"--{flag.replace('_', '-')} only applies to --method panning")
            options[option] = kw[flag]
    if kw.get("agent_path") is not None:
        if method != "rl-panning":
            raise UserError("--agent only applies to --method rl-panning")
        options["agent"] = kw["agent_path"]
    if kw.get("grasp_form") is not None:
        if method == "grasp":
            options["absolute"] = kw["grasp_form"] == "abs"
        elif method == "panning":
            options["grasp"] = kw["grasp_form"]
        else:
            raise UserError("--grasp only applies to --method grasp or panning")
    return options


def _screen(
    model: torch.nn.Module,
    model_name: str,
    dataset: datasets.Dataset,
    kw: dict[str, Any],
    seed: int,
    init: str,
    progress: bool,
) -> masklib.Masks:
    rows: list[dict[str, Any]] = []

    def trace(record: StepRecord, masks: masklib.Masks) -> None:
        report = connectivity(model, masks, input_shape=dataset.input_shape)
        rows.append(
            {
                "step": record.step,
                "density": record.density,
                "kept": record.kept,
                "nominal_sparsity": report.nominal_sparsity,
                "effective_sparsity": report.effective_sparsity,
                "collapsed_layers": len(report.collapsed_layers),
                "seconds": record.seconds,
                **record.info,
            }
        )

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
        **_method_options(kw),
    )
    record_origin(masks, model_name, dataset, seed, init)
    if kw.get("trace"):
        write_trace(kw["trace"], rows)
        click.echo(f"wrote the per-step trace to {kw['trace']}")
    return masks


def _print_masks(model: torch.nn.Module, masks: masklib.Masks, input_shape: tuple[int, ...]) -> None:
    layers = masks.metadata.get("layers")
    if layers and [layer["name"] for layer in layers] == list(masks):
        report = Connectivity.from_dict(masks.metadata)  # prune() measured it already
    else:
        report = connectivity(model, masks, input_shape=input_shape)
    click.echo(mask_table(masks, report, masks.metadata.get("prune_seconds")))


@cli.command("prune")
@_common
@_prune_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Mask file to write (.safetensors).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_user_errors
def prune_command(
    model_name: str,
    dataset: str,
    seed: int,
    data_dir: str | None,
    device: str,
    out: str,
    quiet: bool,
    val_size: int,
    normalization: str,
    init: str,
    **kw: Any,
) -> None:
    """Screen a model at initialisation and save its masks."""
    check_sparsity(kw["sparsity"])
    _check_writable_file(Path(out))
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
@_common
@_train_options
@click.option("--masks", "masks_path", type=click.Path(dir_okay=False), help="Mask file from `panning prune`.")
@click.option("--dense", is_flag=True, help="Train without masks.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder to create.")
@_user_errors
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
    """Train a model, masked or dense, into a run folder."""
    if bool(masks_path) == dense:
        raise UserError("pass exactly one of --masks FILE or --dense")
    config = _train_config(model_name, dataset, seed, device, **kw)
    masks = masklib.load(masks_path) if masks_path else None
    if masks is not None and masks.metadata.get("init_seed", seed) != seed:
        warnings.warn(
            f"the masks were screened on the initialisation of seed {masks.metadata['init_seed']}, "
            f"training starts from seed {seed}'s",
            stacklevel=1,
        )
    model, data = build(config, data_dir)
    if masks is not None:
        masks.check_fits(model)
        _warn_about_mask_origin(masks, model, dataset, config.init)
    metrics = train(model, data, config, out, masks=masks, resume=resume, progress=not quiet)
    _print_result(metrics, out)


@cli.command("run")
@_common
@_prune_options
@_train_options
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder to create.")
@_user_errors
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
    """Screen a model, then train it, into one run folder."""
    check_sparsity(kw["sparsity"])
    config = _train_config(model_name, dataset, seed, device, **kw)
    model, data = build(config, data_dir)
    run_dir = Path(out)
    masks = masks_to_resume(run_dir) if resume else None
    if masks is not None:
        _check_same_screening(run_dir, masks, kw, seed, config.init)
    else:
        check_out_dir(run_dir, resume)
        model.to(resolve_device(device))
        masks = _screen(model, model_name, data, kw, seed, config.init, not quiet)
    _print_masks(model, masks, data.input_shape)
    metrics = train(model, data, config, out, masks=masks, resume=resume, progress=not quiet)
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
    screened_on = masks.metadata.get("dataset")
    if screened_on is not None and screened_on != dataset:
        warnings.warn(f"the masks were screened on {screened_on}, training is on {dataset}", stacklevel=1)
    uncovered = [name for name in masklib.prunable_parameters(model) if name not in masks]
    if uncovered:
        warnings.warn(
            f"the masks leave {', '.join(uncovered)} out: {'it trains' if len(uncovered) == 1 else 'they train'} dense",
            stacklevel=1,
        )


def _check_writable_file(path: Path) -> None:
    """Refuse, before any work, an output file that exists or cannot be written."""
    if path.exists():
        raise UserError(f"{path} already exists; choose another --out or delete it first (nothing was changed)")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UserError(f"the folder of --out {path} does not exist; create {folder} first")
    if not os.access(folder, os.W_OK):
        raise UserError(f"cannot write into {folder}; choose an --out in a writable folder")


def _check_same_screening(run_dir: Path, masks: masklib.Masks, kw: dict[str, Any], seed: int, init: str) -> None:
    """Refuse to resume a run whose masks were screened with other settings than those asked for now."""
    asked: dict[str, Any] = {
        "method": kw["method"],
        "sparsity": kw["sparsity"],
        "options": _method_options(kw),
        "schedule": kw["schedule"],
        "regrowth": kw["regrowth"],
        "samples_per_class": kw["samples_per_class"],
        "scope": kw["scope"],
        "seed": seed,
        "init": init,
    }
    if kw["iterations"] is not None:
        asked["iterations"] = kw["iterations"]
    saved = {**masks.metadata, "init": masks.metadata.get("init", "pytorch")}
    for field, (was, value) in changed_settings(saved, asked, asked).items():
        what = "method options" if field == "options" else "--" + field.replace("_", "-")
        raise UserError(
            f"{run_dir} was screened with {field} = {was!r}, not {value!r}; resume with the "
            f"same {what} or choose another --out"
        )


def _print_result(metrics: dict[str, Any], out: str) -> None:
    dead = " (DEAD: constant prediction)" if metrics.get("dead") else ""
    click.echo(f"final test accuracy: {metrics['test_accuracy']:.4f}{dead}  (run folder: {out})")


@cli.command("info")
@click.argument("file", type=click.Path(dir_okay=False))
@_user_errors
def info_command(file: str) -> None:
    """Show a mask file's metadata and per-layer table."""
    masks = masklib.load(file)
    meta = dict(masks.metadata)
    meta.pop("shapes", None)
    click.echo(json.dumps(meta, indent=2, sort_keys=True, default=str))
    report = None
    if meta.get("model") in models.names() and meta.get("dataset") in datasets.names():
        model, shape = _architecture(meta["model"], meta["dataset"])
        try:
            masks.check_fits(model)
            report = connectivity(model, masks, input_shape=shape)
        except UserError:
            report = None
    click.echo(mask_table(masks, report, meta.get("prune_seconds")))


def _architecture(model_name: str, dataset: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    spec = datasets.spec(dataset)
    return models.for_dataset(model_name, dataset), (spec.in_channels, spec.image_size, spec.image_size)


def _cost_lines(before: Costs, after: Costs) -> str:
    return (
        f"parameters stored: {before.params} -> {after.params} ({before.params / max(after.params, 1):.1f}x fewer); "
        f"MACs per example: {before.macs} -> {after.macs} ({before.macs / max(after.macs, 1):.1f}x fewer)"
    )


@cli.command("compact")
@click.option("--model", "model_name", required=True, type=click.Choice(models.names()), help="Model name.")
@click.option("--dataset", required=True, type=click.Choice(datasets.names()), help="Dataset (for input shape).")
@click.option("--masks", "masks_path", required=True, type=click.Path(dir_okay=False), help="Mask file.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the initialisation.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Compact model file to write.")
@click.option(
    "--time-batch",
    type=click.IntRange(min=1),
    default=None,
    help="Also time inference at this batch size: the masked and the compact model, each in its fastest mode.",
)
@_user_errors
def compact_command(
    model_name: str, dataset: str, masks_path: str, seed: int, out: str, time_batch: int | None
) -> None:
    """Remove the dead units a mask leaves: a smaller model computing the same function."""
    masks = masklib.load(masks_path)
    torch.manual_seed(seed)
    model, shape = _architecture(model_name, dataset)
    small, carried, plan, compaction = compact_with_plan(model, masks, shape)
    masklib.apply(small, carried)
    save_sparse(small, out, plan, {"model": model_name, "dataset": dataset, "init_seed": seed})
    click.echo(compaction.describe())
    click.echo(_cost_lines(model_costs(model, shape, masks), model_costs(small, shape, carried)))
    click.echo(f"wrote {out} (load it with panning.sparse.load_sparse(path, model))")
    if time_batch is not None:
        _, masked = fastest_inference(masklib.apply(model, masks), shape, time_batch)
        _, compacted = fastest_inference(small, shape, time_batch)
        click.echo(
            f"inference at batch {time_batch}: masked {masked.best_ms:.3g} ms ({masked.chosen}), "
            f"compact {compacted.best_ms:.3g} ms ({compacted.chosen}): "
            f"{masked.best_ms / compacted.best_ms:.1f}x faster"
        )
        for label, timing in (("masked", masked), ("compact", compacted)):
            for mode, reason in timing.skipped.items():
                click.echo(f"  {label}: mode {mode} left out: {reason}")


@cli.command("export")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Small model file to write.")
@_user_errors
def export_command(run: str, out: str) -> None:
    """Save a trained run's model with only its kept weights (compacted, values plus a bit mask)."""
    from panning.io import read_json

    run_dir = Path(run)
    weights = run_dir / "model.safetensors"
    if not (run_dir / "config.json").is_file():
        raise UserError(f"{run_dir} holds no run (no config.json); pass the folder of a finished run")
    if not weights.is_file():
        raise UserError(f"{run_dir} holds an unfinished run (no model.safetensors yet); finish it with --resume first")
    train_config = read_json(run_dir / "config.json")["train"]
    model, shape = _architecture(train_config["model"], train_config["dataset"])
    origin = {"model": train_config["model"], "dataset": train_config["dataset"], "run": str(run_dir)}
    try:
        info: dict[str, Any] | None = read_sparse_metadata(weights)
    except UserError:  # a plain safetensors file: a masked run, compacted here
        info = None
    if info is not None:
        small, _ = load_sparse(weights, model)
        save_sparse(small, out, info.get("plan"), {**info, **origin})
    else:
        if not (run_dir / "masks.safetensors").is_file():
            raise UserError(f"{run_dir} is a dense run: there is nothing sparse to export")
        masks = masklib.load(run_dir / "masks.safetensors")
        state = load_file(str(weights))
        try:
            model.load_state_dict(state)
        except RuntimeError:
            raise UserError(
                f"{weights} does not fit model {train_config['model']}; the run folder is damaged"
            ) from None
        small, carried, plan, _ = compact_with_plan(model, masks, shape)
        masklib.apply(small, carried)
        save_sparse(small, out, plan, origin)
    dense_bytes = 4 * sum(p.numel() for p in model.parameters())
    size = Path(out).stat().st_size
    click.echo(
        f"wrote {out}: {size} bytes, {dense_bytes / size:.1f}x smaller than the dense float32 weights "
        f"({dense_bytes} bytes); load it with panning.sparse.load_sparse(path, model)"
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
@_user_errors
def bench_command(
    config: str, quick: bool, jobs: int, out: str | None, cells_dir: str | None, data_dir: str | None, device: str
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

    summary = bench.run_grid(grid, out_dir, store=store, jobs=jobs, data_dir=data_dir, device=device, on_result=show)
    click.echo(report.results_table(summary.rows))
    click.echo(
        f"{len(summary.rows)} cells: {summary.ran} run now, {summary.reused} already done, {summary.failed} failed; "
        f"wrote {summary.results_csv} and {summary.results_jsonl}"
    )


@cli.command("report")
@click.argument("results", type=click.Path(dir_okay=False))
@click.option(
    "--out", type=click.Path(file_okay=False), help="Folder for report.md and plots (default: beside RESULTS)."
)
@click.option("--no-plots", is_flag=True, help="Write only the markdown table.")
@_user_errors
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


@cli.group("agent", cls=click.Group)
def agent_group() -> None:
    """Train and inspect the panning agent (reinforcement learning over the index weights)."""


@agent_group.command("train")
@click.option(
    "--model",
    "model_names",
    required=True,
    help="Model name, or several separated by commas (episodes take turns): e.g. lenet5,lenet300.",
)
@click.option("--dataset", required=True, type=click.Choice(datasets.names()), help="Dataset name.")
@click.option("--timesteps", required=True, type=int, help="Environment steps (pruning steps) to train for.")
@click.option(
    "--targets",
    default="0.8:1.0",
    show_default=True,
    help="Target sparsity ranges LOW:HIGH drawn per episode; several separated by commas take equal turns.",
)
@click.option("--iterations", default=20, show_default=True, type=int, help="Pruning steps T per episode.")
@click.option(
    "--samples-per-class", default=2, show_default=True, type=int, help="Examples per class in each scoring batch."
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of TD3, the episodes and the data.")
@click.option(
    "--learning-starts", type=int, help="Random steps before learning (default: 2000, at most a quarter of the run)."
)
@click.option("--eval-every", default=1000, show_default=True, type=int, help="Steps between evaluations (0: none).")
@click.option(
    "--eval-targets",
    default="0.99,0.995,0.998,0.999",
    show_default=True,
    help="Target sparsities of the deterministic evaluation episodes, one episode each.",
)
@click.option("--checkpoint-every", default=1000, show_default=True, type=int, help="Steps between checkpoints.")
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint beside --out.")
@click.option("--tensorboard", type=click.Path(file_okay=False), help="Write TensorBoard logs to this folder.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder holding <dataset>/ folders.")
@click.option("--device", default="cpu", show_default=True, help="Device of the screened models: auto, cpu or cuda.")
@click.option(
    "--val-size", default=datasets.DEFAULT_VAL_SIZE, show_default=True, type=int, help="Training examples held out."
)
@click.option(
    "--normalization", default="standard", show_default=True, type=click.Choice(["standard", "half"]), help="Inputs."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Agent file to write (.zip).")
@_user_errors
def agent_train_command(
    model_names: str,
    dataset: str,
    timesteps: int,
    targets: str,
    iterations: int,
    samples_per_class: int,
    seed: int,
    learning_starts: int | None,
    eval_every: int,
    eval_targets: str,
    checkpoint_every: int,
    resume: bool,
    tensorboard: str | None,
    data_dir: str | None,
    device: str,
    val_size: int,
    normalization: str,
    quiet: bool,
    out: str,
) -> None:
    """Train a TD3 agent that weighs SynFlow, SNIP and GraSP at every pruning step."""
    names = [name.strip() for name in model_names.split(",") if name.strip()]
    unknown = [name for name in names if name not in models.names()]
    if not names or unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown) or model_names!r}; valid: {', '.join(models.names())}")
    if timesteps < 1:
        raise UserError(f"--timesteps must be positive, got {timesteps}")
    ranges = agentlib.parse_targets(targets)
    evaluation = agentlib.parse_targets(eval_targets)
    target_device = resolve_device(device)
    data = datasets.load(dataset, data_dir, val_size=val_size, normalization=normalization)

    def factory(name: str) -> Callable[[], torch.nn.Module]:
        return lambda: _architecture(name, dataset)[0].to(target_device)

    def environment(target_ranges: Any, cycle: bool) -> agentlib.PanningEnv:
        return agentlib.PanningEnv(
            [factory(name) for name in names],
            data,
            targets=target_ranges,
            iterations=iterations,
            samples_per_class=samples_per_class,
            cycle_targets=cycle,
        )

    train_env = environment(ranges, False)
    record = agentlib.AgentInfo(
        iterations=iterations,
        targets=[list(r) for r in ranges],
        models=names,
        dataset=dataset,
        samples_per_class=samples_per_class,
        normalization=train_env.normalization,
        combination=train_env.combination,
        temperature=train_env.temperature,
        timesteps=timesteps,
        seed=seed,
        command="panning " + " ".join(sys.argv[1:]),
    )
    agentlib.train_agent(
        train_env,
        timesteps,
        out,
        record,
        eval_env=environment(evaluation, True) if eval_every > 0 else None,
        seed=seed,
        learning_starts=learning_starts,
        eval_every=eval_every,
        eval_episodes=len(evaluation),
        checkpoint_every=checkpoint_every,
        resume=resume,
        tensorboard=tensorboard,
        progress=not quiet,
    )
    click.echo(f"wrote {out} (checkpoints and evaluations in {agentlib.checkpoint_dir(out)})")


@agent_group.command("info")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@_user_errors
def agent_info_command(file: str | None) -> None:
    """Show how an agent was trained (without FILE: the shipped agent)."""
    _, info = agentlib.load_agent(file)
    for key, value in asdict(info).items():
        click.echo(f"{key}: {value}")


def main() -> None:
    """Entry point of the ``panning`` console script."""
    cli(prog_name="panning")


if __name__ == "__main__":
    main()
