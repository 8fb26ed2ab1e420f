"""The library's own parts of training, each a :class:`~panning.training.TrainingCallback`:
fan-in rescaling, cost counting, compaction, sparse kernels, validation, logging, checkpoints, export."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from panning import distributed
from panning import masks as masklib
from panning.compaction import compact_with_plan
from panning.compaction.sparse import model_costs, save_sparse, use_sparse_kernels
from panning.errors import UserError, UserTypeError, first_line
from panning.io import os_fault, read_json, write_atomic, write_json
from panning.masks import Masks
from panning.training.config import TrainConfig
from panning.training.run import (
    CHECKPOINT,
    Callback,
    EpochEnd,
    EpochRecord,
    Run,
    RunResult,
    TrainingCallback,
    checkpoint_state,
    continue_with,
    evaluate,
    save_model,
)


def rescale_to_fan_in(model: nn.Module, masks: Masks) -> nn.Module:
    """Scale every unit's kept weights by ``sqrt(dense fan-in / kept fan-in)``, in place.

    A unit of a sparse layer sums over few inputs with weights drawn for many, so its output
    starts orders of magnitude smaller than the dense initialisation intended; at extreme
    sparsity the signal vanishes and the first large steps can silence a bottleneck unit for
    good. This restores each unit's initial output variance (Evci et al. 2022, "Gradient Flow in
    Sparse Neural Networks and How Lottery Tickets Win"). Units are the first dimension of a
    weight (a linear layer's outputs, a convolution's filters); 1-D parameters are left alone.
    Returns ``model``.

    Examples:
        >>> net = nn.Linear(4, 2, bias=False)
        >>> _ = nn.init.ones_(net.weight)
        >>> keep = torch.tensor([[True, False, False, False], [True, True, True, True]])
        >>> _ = rescale_to_fan_in(net, Masks({"weight": keep}))
        >>> (net.weight * keep).tolist()  # 1 of 4 inputs kept: x2; all kept: unchanged
        [[2.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
    """
    weights = masklib.prunable_parameters(model, list(masks))
    with torch.no_grad():
        for name, weight in weights.items():
            mask = masks[name].to(weight.device)
            if weight.dim() < 2:
                continue
            kept = mask.flatten(1).sum(1).to(weight.dtype)
            dense = mask[0].numel()
            scale = torch.where(kept > 0, (dense / kept.clamp(min=1)).sqrt(), torch.ones_like(kept))
            weight.mul_(scale.view(-1, *([1] * (weight.dim() - 1))))
    return model


class RescaleToFanIn(TrainingCallback):
    """``rescale = "fan-in"``: scale kept weights to each unit's real fan-in before the first epoch."""

    def on_setup(self, run: Run) -> None:
        if run.masks is not None and not (run.resume and (run.run_dir / CHECKPOINT).is_file()):
            rescale_to_fan_in(run.model, run.masks)


class CostCount(TrainingCallback):
    """Parameters and multiply-accumulates of the dense and the masked network, into the metrics."""

    def on_setup(self, run: Run) -> None:
        if run.masks is not None:
            costs = model_costs(run.model, run.dataset.input_shape, run.masks)
            run.facts["costs"] = {
                "dense": {"params": costs.params, "macs": costs.macs},
                "masked": {"params": costs.kept, "macs": costs.kept_macs},
            }


class Compaction(TrainingCallback):
    """Train the compacted network: units that no path uses are removed before training."""

    def on_setup(self, run: Run) -> None:
        if run.masks is None:
            return
        run.model, run.masks, run.plan, compaction = compact_with_plan(run.model, run.masks, run.dataset.input_shape)
        small = model_costs(run.model, run.dataset.input_shape, run.masks)
        run.facts.setdefault("costs", {}).update(
            compact={"params": small.params, "macs": small.macs},
            compact_masked={"params": small.kept, "macs": small.kept_macs},
        )
        run.facts["compaction"] = {
            "units": {name: list(sizes) for name, sizes in compaction.units.items()},
            "kept_before": compaction.kept_before,
            "kept_after": compaction.kept_after,
            "folded_units": compaction.folded,
        }


class SparseKernels(TrainingCallback):
    """Swap linear layers for CSR kernels where timing says they pay; the choice is kept for resume."""

    def on_setup(self, run: Run) -> None:
        if run.masks is None:
            return
        kernels_path = run.run_dir / "kernels.json"
        earlier = read_json(kernels_path)["kernels"] if run.resume and kernels_path.is_file() else None
        run.model, run.masks, choices = use_sparse_kernels(run.model, run.masks, run.config.batch_size, True, earlier)
        run.facts["kernels"] = [choice.as_dict() for choice in choices]
        write_json(kernels_path, {"kernels": run.facts["kernels"]})


class Validation(TrainingCallback):
    """Loss and accuracy on the validation split after every epoch (when the split is not empty)."""

    def on_epoch_end(self, run: Run, entry: EpochRecord) -> None:
        if len(run.dataset.val[1]):
            val = evaluate(run.model, run.dataset, "val", run.device)
            entry["val_loss"], entry["val_accuracy"] = val["loss"], val["accuracy"]


class EpochLog(TrainingCallback):
    """One line per epoch on the terminal."""

    def on_epoch_end(self, run: Run, entry: EpochRecord) -> None:
        shown = f"val {entry['val_accuracy']:.4f}" if "val_accuracy" in entry else ""
        tqdm.write(f"epoch {entry['epoch']}/{run.config.epochs}: train loss {entry['train_loss']:.4f} {shown}")


class Checkpoints(TrainingCallback):
    """The run folder's checkpoint and metrics: restored on resume, written after every epoch,
    the checkpoint removed once the final metrics are written. ``changed`` are the settings a
    resume changed, recorded in ``config.json`` from the epoch they apply to."""

    def __init__(self, changed: dict[str, list[Any]] | None = None, write: bool = True) -> None:
        self.changed = changed or {}
        self.write = write  # False on the ranks other than 0, which only restore

    def on_start(self, run: Run) -> None:
        assert run.optimizer is not None and run.scheduler is not None and run.generator is not None
        path = run.run_dir / CHECKPOINT
        if run.resume and path.is_file():
            _restore(run, path)
            continue_with(run.optimizer, run.scheduler, run.config.lr)
        if self.changed and self.write:
            config_path = run.run_dir / "config.json"
            saved = read_json(config_path)
            changes = [*saved.get("changes", []), {"from_epoch": run.start_epoch + 1, **self.changed}]
            updated = {**saved, "train": json.loads(json.dumps(run.config.as_dict())), "changes": changes}
            if "processes" in self.changed:  # the processes' record and its change in one write
                updated.pop("distributed", None)
                if run.workers.distributed:
                    updated["distributed"] = distributed.describe(run.workers, run.config.batch_size, run.config.lr)
            write_json(config_path, updated)

    def on_epoch_end(self, run: Run, entry: EpochRecord) -> None:
        assert run.optimizer is not None and run.scheduler is not None and run.generator is not None
        if not self.write:
            return
        state = checkpoint_state(
            entry["epoch"], run.model, run.optimizer, run.scheduler, run.generator, run.history, run.config.as_dict()
        )
        write_atomic(run.run_dir / CHECKPOINT, functools.partial(torch.save, state))
        write_json(run.run_dir / "metrics.json", {"finished": False, "epochs": run.history, **run.facts})

    def on_end(self, run: Run, metrics: RunResult) -> None:
        if self.write:
            write_json(run.run_dir / "metrics.json", metrics)
            (run.run_dir / CHECKPOINT).unlink(missing_ok=True)


def _restore(run: Run, path: Path) -> None:
    """The model, optimiser, schedule, generators and history of the checkpoint at ``path``; a
    damaged or foreign checkpoint is a one-line ``UserError`` (nothing on disk is changed)."""
    assert run.optimizer is not None and run.scheduler is not None and run.generator is not None
    try:
        state = torch.load(path, map_location=run.device, weights_only=False)
    except OSError as error:
        raise os_fault(path, error, "read") from None
    except Exception as error:  # torch.load raises many kinds on a damaged file
        raise UserError(
            f"{path} is damaged ({first_line(error)}); delete it to restart the run from epoch 1, or choose "
            "another --out"
        ) from None
    try:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        run.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        run.history, run.start_epoch = state["history"], int(state["epoch"])
    except Exception as error:  # a readable checkpoint of another network (or a damaged one)
        raise UserError(
            f"{path} does not fit this model ({first_line(error)}): resume with the model the run started "
            "with; delete the file only if it is damaged (the run then restarts from epoch 1)"
        ) from None


class Export(TrainingCallback):
    """The trained weights as ``model.safetensors``: dense with masks made permanent, or the
    compact/sparse model with the plan that rebuilds it."""

    def on_end(self, run: Run, metrics: RunResult) -> None:
        origin = {"model": run.config.model, "dataset": run.config.dataset}
        if run.config.compact or run.config.sparse_kernels:
            save_sparse(run.model, run.run_dir / "model.safetensors", run.plan, origin)
        else:
            save_model(run.model, run.run_dir / "model.safetensors", origin)


def standard_callbacks(
    config: TrainConfig, changed: dict[str, list[Any]] | None = None, progress: bool = False, main: bool = True
) -> list[TrainingCallback]:
    """The library's own parts of training for ``config``, in the order they run; ``main=False``
    (a rank other than 0 under torchrun) leaves out those that print or write.

    Examples:
        >>> [type(c).__name__ for c in standard_callbacks(TrainConfig(compact=True))]
        ['CostCount', 'Compaction', 'Validation', 'Export', 'Checkpoints']
    """
    hooks: list[TrainingCallback] = []
    if config.rescale == "fan-in":
        hooks.append(RescaleToFanIn())
    hooks.append(CostCount())
    if config.compact:
        hooks.append(Compaction())
    if config.sparse_kernels:
        hooks.append(SparseKernels())
    hooks.append(Validation())
    if progress and main:
        hooks.append(EpochLog())
    # Export before the final metrics.json, so a finished metrics file always has its model.
    hooks += [Export(), Checkpoints(changed)] if main else [Checkpoints(changed, write=False)]
    return hooks


class _EpochFunction(TrainingCallback):
    def __init__(self, function: Callback) -> None:
        self.function = function

    def on_epoch_end(self, run: Run, entry: EpochRecord) -> None:
        self.function(EpochEnd(entry["epoch"], entry, run.model))


def as_callback(callback: Callback | TrainingCallback) -> TrainingCallback:
    """A :class:`TrainingCallback` as it is, a function of :class:`EpochEnd` wrapped into one.

    Examples:
        >>> type(as_callback(lambda end: None)).__name__
        '_EpochFunction'
    """
    if isinstance(callback, TrainingCallback):
        return callback
    if callable(callback):
        return _EpochFunction(callback)
    raise UserTypeError(f"a callback is a TrainingCallback or a function of EpochEnd, got {type(callback).__name__}")
