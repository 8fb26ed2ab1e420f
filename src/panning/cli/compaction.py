"""Making sparsity pay: ``compact`` and ``export``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import click
import torch
from safetensors.torch import load_file

from panning import data as datasets
from panning import masks as masklib
from panning import models
from panning.cli.base import architecture, cli, cost_lines, user_errors
from panning.cli.checks import refuse_other_model, warn_other_dataset
from panning.compaction import compact_with_plan
from panning.compaction.inference import fastest_inference
from panning.compaction.sparse import NotSparseFile, load_sparse, model_costs, read_sparse_metadata, save_sparse
from panning.errors import UserError, check_seed
from panning.io import check_new_file


@cli.command("compact")
@click.option("--model", "model_name", required=True, type=click.Choice(models.names()), help="Model name.")
@click.option("--dataset", required=True, type=click.Choice(datasets.names()), help="Dataset (for input shape).")
@click.option("--masks", "masks_path", required=True, type=click.Path(dir_okay=False), help="Mask file.")
@click.option(
    "--seed", type=int, help="Seed of the initialisation (default: the one the masks were screened on, else 0)."
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Compact model file to write.")
@click.option(
    "--time-batch",
    type=click.IntRange(min=1),
    default=None,
    help="Also time inference at this batch size: the masked and the compact model, each in its fastest mode.",
)
@user_errors
def compact_command(
    model_name: str, dataset: str, masks_path: str, seed: int | None, out: str, time_batch: int | None
) -> None:
    """Remove the dead units a mask leaves: a smaller model computing the same function."""
    check_new_file(out)
    masks = masklib.load(masks_path)
    refuse_other_model(masks, model_name, masks_path)
    screened_seed = masks.metadata.get("init_seed")
    if seed is None:
        seed = 0 if screened_seed is None else int(screened_seed)
    elif screened_seed is not None and seed != int(screened_seed):
        warnings.warn(
            f"the masks were screened on the initialisation of seed {screened_seed}, compacted here onto seed "
            f"{seed}'s; leave --seed out to use theirs",
            stacklevel=1,
        )
    warn_other_dataset(masks, dataset)
    torch.manual_seed(check_seed(seed))
    model, shape = architecture(model_name, dataset)
    models.initialize(model, masks.metadata.get("init", "pytorch"))  # the weights the masks were screened on
    small, carried, plan, compaction = compact_with_plan(model, masks, shape)
    masklib.apply(small, carried)
    save_sparse(small, out, plan, {"model": model_name, "dataset": dataset, "init_seed": seed})
    click.echo(compaction.describe())
    click.echo(cost_lines(model_costs(model, shape, masks), model_costs(small, shape, carried)))
    click.echo(f"wrote {out} (load it with panning.compaction.load_sparse(path, model))")
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
@user_errors
def export_command(run: str, out: str) -> None:
    """Save a trained run's model with only its kept weights (compacted, values plus a bit mask)."""
    from panning.io import read_json

    run_dir = Path(run)
    check_new_file(out)
    weights = run_dir / "model.safetensors"
    if not (run_dir / "config.json").is_file():
        raise UserError(f"{run_dir} holds no run (no config.json); pass the folder of a finished run")
    if not weights.is_file():
        raise UserError(f"{run_dir} holds an unfinished run (no model.safetensors yet); finish it with --resume first")
    saved_training = read_json(run_dir / "config.json").get("train")
    if not isinstance(saved_training, dict) or not {"model", "dataset"} <= saved_training.keys():
        raise UserError(f"{run_dir / 'config.json'} is not the config of a panning run; pass the folder of a run")
    if saved_training["model"] not in models.names() or saved_training["dataset"] not in datasets.names():
        raise UserError(
            f"{run_dir} trained {saved_training['model']} on {saved_training['dataset']}, which this command cannot "
            "rebuild (not registered); export it from Python with panning.compaction.save_sparse"
        )
    model, shape = architecture(saved_training["model"], saved_training["dataset"])
    origin = {"model": saved_training["model"], "dataset": saved_training["dataset"], "run": str(run_dir)}
    try:
        info: dict[str, Any] | None = read_sparse_metadata(weights)
    except NotSparseFile:  # a plain safetensors file: a masked run, compacted here
        info = None
    except UserError as error:
        raise UserError(f"{error}: the run folder is damaged; train the run again") from None
    if info is not None and info.get("plan"):
        small, _ = load_sparse(weights, model)
        save_sparse(small, out, info["plan"], {**info, **origin})
    else:  # a masked run, or sparse kernels without --compact: compacted here
        trained, masks = _trained_and_masks(run_dir, model, info is not None, saved_training["model"])
        small, carried, plan, _ = compact_with_plan(trained, masks, shape)
        masklib.apply(small, carried)
        save_sparse(small, out, plan, {**(info or {}), **origin})
    dense_bytes = 4 * sum(p.numel() for p in model.parameters())
    size = Path(out).stat().st_size
    click.echo(
        f"wrote {out}: {size} bytes, {dense_bytes / size:.1f}x smaller than the dense float32 weights "
        f"({dense_bytes} bytes); load it with panning.compaction.load_sparse(path, model)"
    )


def _trained_and_masks(
    run_dir: Path, model: torch.nn.Module, sparse_file: bool, model_name: str
) -> tuple[torch.nn.Module, masklib.Masks]:
    """A finished run's trained network (on a fresh ``model`` of its architecture, masks not
    applied) and its masks: from its sparse-kernel file, or its weights and mask file."""
    weights = run_dir / "model.safetensors"
    if sparse_file:
        trained, masks = load_sparse(weights, model)
        return masklib.remove(trained), masks
    if not (run_dir / "masks.safetensors").is_file():
        raise UserError(f"{run_dir} is a dense run: there is nothing sparse to export")
    masks = masklib.load(run_dir / "masks.safetensors")
    try:
        model.load_state_dict(load_file(str(weights)))
    except RuntimeError:
        raise UserError(f"{weights} does not fit model {model_name}; the run folder is damaged") from None
    return model, masks
