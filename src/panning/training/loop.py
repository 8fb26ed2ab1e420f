"""The training loop: :func:`train` opens the run, lets its callbacks set it up, and runs the epochs."""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from tqdm.auto import tqdm

from panning import data as datasets
from panning import distributed
from panning import masks as masklib
from panning.connectivity import connectivity, input_signal
from panning.distributed import Workers
from panning.errors import TrainingDiverged, UserError, UserTypeError, check_module
from panning.io import read_json, write_json
from panning.masks import Masks
from panning.screening.pruning import probe_model
from panning.training.callbacks import as_callback, rescale_to_fan_in, standard_callbacks
from panning.training.config import TrainConfig, lr_factor, resolve_device
from panning.training.run import (
    Callback,
    EpochRecord,
    Run,
    RunResult,
    TrainingCallback,
    check_out_dir,
    evaluate,
    masks_digest,
    resume_changes,
)

# Facts of the screening run that every training run's metrics carry.
SCREENING_FACTS = {
    "method": "method",
    "options": "options",
    "prune_seconds": "prune_seconds",
    "iterations": "iterations",
    "schedule": "schedule",
    "regrowth": "regrowth",
    "seed": "prune_seed",
    "sparsity": "target_sparsity",
}


def train(
    model: nn.Module,
    dataset: datasets.Dataset,
    config: TrainConfig,
    out: str | os.PathLike[str],
    masks: Masks | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback | TrainingCallback] = (),
    progress: bool = True,
) -> RunResult:
    """Train ``model`` (with ``masks`` applied, if given) on ``dataset`` into the run folder ``out``.

    ``model`` is trained in place, except when ``config.compact`` or ``config.sparse_kernels`` is
    set (a compacted copy trains and ``model`` stays as it was) or ``out`` holds a finished run
    (nothing trains); the trained network is always ``out/model.safetensors``, for a compacted
    one read back with :func:`panning.compaction.load_sparse`.
    Returns the final metrics (:class:`RunResult`), also written to ``out/metrics.json``. ``resume=True`` continues
    from ``out/checkpoint.pt`` (the config must match). In an initialised process group (``torchrun``) it
    trains with DistributedDataParallel: each global batch is split between the ranks, and only
    rank 0 writes ``out``. ``masks`` may also be a mapping of name -> bool tensor; without them,
    masks already applied to ``model`` are the run's. ``callbacks`` (one or several) are
    :class:`TrainingCallback` objects or functions called with an :class:`EpochEnd` after
    every epoch; they run after the library's own (cost counting, compaction, sparse kernels,
    validation, checkpoints, export).

    Examples:
        >>> import tempfile
        >>> images, labels = torch.rand(80, 1, 8, 8), torch.arange(80) % 2
        >>> data = datasets.from_tensors((images, labels), (images[:20], labels[:20]), val_size=20)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> config = TrainConfig(model="mine", dataset="custom", epochs=2, batch_size=20, device="cpu")
        >>> metrics = train(model, data, config, tempfile.mkdtemp(), progress=False)
        >>> len(metrics["epochs"]), 0 <= metrics["test_accuracy"] <= 1
        (2, True)
    """
    own = [as_callback(callback) for callback in _as_sequence(callbacks)]
    _check_arguments(model, dataset, config)
    config = _as_trained(config, dataset)
    masks = _run_masks(model, masks)
    if config.compact or config.sparse_kernels:
        model = masklib.copy_model(model)  # a compacted or sparse copy trains; the caller's model stays
    opened = _open_run(model, dataset, config, Path(out), masks, resume, distributed.current())
    if isinstance(opened, dict):
        return opened  # a finished run
    run, changed = opened
    hooks = [*standard_callbacks(config, changed, progress, run.workers.main), *own]
    for hook in hooks:
        hook.on_setup(run)
    if run.masks is not None:
        masklib.apply(run.model, run.masks.to(run.device))
    if run.workers.distributed:
        ids = [run.device.index] if run.device.type == "cuda" else None
        run.trainer = nn.parallel.DistributedDataParallel(run.model, device_ids=ids)
    if config.train_examples is not None:
        images, labels = run.dataset.train
        run.dataset = dataclasses.replace(
            run.dataset, train=(images[: config.train_examples], labels[: config.train_examples])
        )
    steps_per_epoch = math.ceil(len(run.dataset.train[1]) / config.batch_size)
    run.optimizer, run.scheduler = _optimizer(run.model, config, steps_per_epoch)
    run.generator = torch.Generator().manual_seed(config.seed)
    for hook in hooks:
        hook.on_start(run)
    for epoch in range(run.start_epoch + 1, config.epochs + 1):
        run.model.train()  # every epoch: a callback may have left the model in eval mode
        entry = _train_epoch(run, epoch, steps_per_epoch, progress)
        run.history.append(entry)
        for hook in hooks:
            hook.on_epoch_end(run, entry)
    metrics = _final_metrics(run)
    for hook in hooks:
        hook.on_end(run, metrics)
    return metrics


def _run_masks(model: nn.Module, masks: Any) -> Masks | None:
    """The masks a run trains with: those given (a mapping too), else any applied to ``model``
    beforehand (taken off it, to be applied again; else the run would record itself dense)."""
    if masks is None:
        applied = masklib.applied(model)
        if not applied:
            return None
        masklib.remove(model)
        return applied
    masks = masklib.as_masks(masks)
    if not masks:
        raise UserError("the masks hold no layer: pass the masks of a screening, or train dense (masks=None)")
    return masks


def _as_trained(config: TrainConfig, dataset: datasets.Dataset) -> TrainConfig:
    """The config as the run trains it: the data passed decides the dataset's name, its validation
    split and its input scaling, whatever the config says (the run's records must say what ran)."""
    actual: dict[str, Any] = {
        "dataset": dataset.name,
        "val_size": len(dataset.val[1]),
        "normalization": dataset.normalization,
    }
    for field, value in actual.items():
        asked = getattr(config, field)
        if field != "dataset" and asked != value and asked != TrainConfig.__dataclass_fields__[field].default:
            warnings.warn(
                f"TrainConfig.{field} = {asked!r} has no effect on the data passed ({field} {value!r}, recorded); "
                f"set it where the data is made (panning.data.load or from_tensors)",
                stacklevel=3,
            )
    return dataclasses.replace(config, **actual)


def _as_sequence(callbacks: Any) -> Sequence[Any]:
    """One callback or several."""
    return [callbacks] if callable(callbacks) or isinstance(callbacks, TrainingCallback) else list(callbacks)


def _train_epoch(run: Run, epoch: int, steps_per_epoch: int, progress: bool) -> EpochRecord:
    """One epoch of SGD over the training split; its history entry. A non-finite loss stops the run."""
    config, workers = run.config, run.workers
    assert run.optimizer is not None and run.scheduler is not None
    model = run.trainer if run.trainer is not None else run.model
    augment = run.dataset.spec.augment if config.augment is None else config.augment
    began = time.perf_counter()
    total_loss, correct, count = 0.0, 0, 0
    batches = run.dataset.batches("train", config.batch_size, run.device, generator=run.generator, augment=augment)
    bar = tqdm(
        batches,
        total=steps_per_epoch,
        desc=f"epoch {epoch}/{config.epochs}",
        disable=None if progress and workers.main else True,
        leave=False,
    )
    for step, (x, y) in enumerate(bar, start=1):
        global_count = len(y)
        x, y = distributed.shard(x, y, workers)
        logits = model(x)
        if workers.distributed:
            # DDP averages over ranks: a rank's summed loss over the global count, times the
            # ranks, averages to the global batch's mean loss even when shards differ in size.
            summed = nn.functional.cross_entropy(logits, y, reduction="sum")
            loss = summed * (workers.world_size / global_count)
            value = float(summed.detach()) / max(len(y), 1)
        else:
            loss = nn.functional.cross_entropy(logits, y)
            value = float(loss.detach())
        if not math.isfinite(value):
            bar.close()
            raise TrainingDiverged(_diverged(run.run_dir, config, epoch, step, steps_per_epoch, value, run.start_epoch))
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(run.model.parameters(), config.clip_grad_norm)
        run.optimizer.step()
        run.scheduler.step()
        total_loss += value * len(y)
        correct += int((logits.detach().argmax(1) == y).sum())
        count += len(y)
    total_loss, correct_sum, count_sum = distributed.sum_across([total_loss, correct, count], workers, run.device)
    correct, count = round(correct_sum), round(count_sum)
    entry: EpochRecord = {
        "epoch": epoch,
        "train_loss": total_loss / count,
        "train_accuracy": correct / count,
        "lr": run.optimizer.param_groups[0]["lr"],
        "seconds": time.perf_counter() - began,
    }
    return entry


def _open_run(
    model: nn.Module,
    dataset: datasets.Dataset,
    config: TrainConfig,
    run_dir: Path,
    masks: Masks | None,
    resume: bool,
    workers: Workers,
) -> tuple[Run, dict[str, list[Any]]] | RunResult:
    """Check everything that can be refused, then create or reopen the run folder (rank 0 only).

    Returns the run and the settings changed on resume, or the metrics of a finished run.
    """
    if (config.compact or config.sparse_kernels) and masks is None:
        raise UserError("compact and sparse kernels need masks: pass the masks of a screening, or train dense")
    check_single_process_options(config, workers)
    check_out_dir(run_dir, resume)
    distributed.barrier(workers)  # every rank has looked at the folder before rank 0 writes in it
    device = distributed.device_for(resolve_device(config.device), workers)
    facts: dict[str, Any] = {"kept": None, "total": None, "nominal_sparsity": 0.0, "effective_sparsity": None}
    if masks is not None:
        masks.check_fits(model)
        # DDP broadcasts rank 0's weights and checks only shapes: other masks would train unmasked weights.
        others = distributed.differing_ranks(masks.digest(), workers)
        if others:
            raise UserError(
                f"rank(s) {', '.join(map(str, others))} hold other masks than rank 0: screen on rank 0 and hand "
                "them to every rank with panning.distributed.share"
            )
        # prune() already analysed its masks; masks from elsewhere (or changed since) are analysed here.
        screened = masks.screening
        if screened is not None and screened.input_shape == tuple(dataset.input_shape):
            report = screened.connectivity
        else:
            report = connectivity(model.to(device), masks, input_shape=dataset.input_shape)
        facts = {
            **report.as_dict(),
            **{name: masks.metadata[key] for key, name in SCREENING_FACTS.items() if key in masks.metadata},
            "input_signal": _input_signal(model.to(device), masks, dataset, config, workers.main),
        }
    record = {
        "train": config.as_dict(),
        "masks_digest": masks_digest(masks),
        "masks": dict(masks.metadata) if masks is not None else None,
    }
    if workers.distributed:
        record["distributed"] = distributed.describe(workers, config.batch_size, config.lr)
    config_path = run_dir / "config.json"
    changed: dict[str, list[Any]] = {}
    if resume and config_path.is_file():
        saved = read_json(config_path)
        changed = resume_changes(run_dir, saved, record)
        if saved.get("masks_digest") != record["masks_digest"]:
            was = "dense" if saved.get("masks_digest") is None else "with other masks"
            raise UserError(f"{run_dir} was started {was}; resume with the same --masks/--dense as the first run")
        if (run_dir / "metrics.json").is_file():
            finished = read_json(run_dir / "metrics.json")
            if finished.get("finished"):
                return cast(RunResult, finished)
        if workers.main and not os.access(run_dir, os.W_OK):
            raise UserError(f"cannot write into {run_dir}, so no epoch could be saved; make it writable to resume")
        changed.update(_processes_change(saved, workers))
    elif workers.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(config_path, record)
        if masks is not None:
            masklib.save(masks, run_dir / "masks.safetensors")
    model.to(device)
    return Run(config, run_dir, model, dataset, device, masks, resume, facts, workers=workers), changed


def _processes_change(saved: dict[str, Any], workers: Workers) -> dict[str, list[Any]]:
    """A resume on another number of processes (the global batch stays), as a change for
    config.json: written with the processes' new record once the checkpoint is restored."""
    before = saved.get("distributed")
    processes = int(before.get("world_size", 1)) if isinstance(before, dict) else 1
    return {} if processes == workers.world_size else {"processes": [processes, workers.world_size]}


def check_single_process_options(config: TrainConfig, workers: Workers) -> None:
    """Refuse, before any work, the options that change the network on each rank (under torchrun).

    Examples:
        >>> check_single_process_options(TrainConfig(compact=True), distributed.current())  # one process: fine
    """
    if workers.distributed and (config.compact or config.sparse_kernels):
        raise UserError(
            "--compact and --sparse-kernels change the network on each rank and are not supported on "
            "several processes; leave them out under torchrun (the masked network trains the same)"
        )


def _check_arguments(model: nn.Module, dataset: datasets.Dataset, config: TrainConfig) -> None:
    """Refuse arguments of the wrong type, an invalid config, or a model whose output does not fit the data."""
    if not isinstance(config, TrainConfig):
        raise UserTypeError(f"config must be a panning.training.TrainConfig, got {type(config).__name__}")
    config.validate()
    check_module(model)
    if not isinstance(dataset, datasets.Dataset):
        raise UserTypeError(
            f"dataset must be a panning.data.Dataset (panning.data.load or panning.data.from_tensors), "
            f"got {type(dataset).__name__}"
        )
    _check_output(model, dataset)
    examples = (
        len(dataset.train[1]) if config.train_examples is None else min(config.train_examples, len(dataset.train[1]))
    )
    batch_norms = any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())
    if batch_norms and examples % config.batch_size == 1:
        raise UserError(
            f"the last training batch would hold one example ({examples} examples in batches of "
            f"{config.batch_size}), on which batch norm cannot train: choose another batch size or validation size"
        )


def _check_output(model: nn.Module, dataset: datasets.Dataset) -> None:
    """Refuse, before the run folder exists, a model whose output is not one logit per class."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    if dtype != torch.float32:  # the batches are float32; screening casts them, training does not
        raise UserError(f"training takes a float32 model, got {dtype}: train model.float() (masks carry over)")
    device = next(model.parameters(), torch.empty(0)).device
    images = dataset.train[0][:2]
    what = f"the model fails on {dataset.name}'s inputs of shape {tuple(dataset.input_shape)}"
    output = probe_model(model, dataset.normalize(images).to(device), what)
    fits = isinstance(output, torch.Tensor) and output.dim() == 2 and output.shape[0] == len(images)
    if not fits or output.shape[1] < dataset.num_classes:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise UserError(
            f"the model must return (batch, classes) logits with at least {dataset.num_classes} classes for "
            f"{dataset.name} (its labels go up to {dataset.num_classes - 1}; from_tensors(num_classes=...) "
            f"sets it), got {shape} for a batch of {len(images)}"
        )


def _input_signal(
    model: nn.Module, masks: Masks, dataset: datasets.Dataset, config: TrainConfig, warn: bool
) -> float | None:
    """:func:`input_signal` of the weights training starts from (after fan-in rescaling, if asked),
    on up to 1,024 held-out examples; a warning when no signal passes. None when the caller applied
    the masks already: the pruned weights' values, needed for the dense reference, are gone."""
    if masklib.applied(model):
        return None
    images = dataset.val[0] if len(dataset.val[1]) >= 2 else dataset.train[0]
    probe = dataset.normalize(images[:1024]).to(next(model.parameters()).device)
    start = rescale_to_fan_in(copy.deepcopy(model), masks) if config.rescale == "fan-in" else model
    signal = input_signal(start, masks, probe, reference=model)
    if signal == 0 and warn:
        warnings.warn(
            "the masked network gives the same output for every input at initialisation (each path from "
            "the input crosses a pruned weight or a unit that is off for every input), so training cannot "
            "leave a constant prediction; screen with another seed or method, or at a lower sparsity",
            stacklevel=3,
        )
    return signal


def _optimizer(
    model: nn.Module, config: TrainConfig, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with momentum and weight decay, on a cosine schedule with optional linear warm-up."""
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    total_steps = config.epochs * steps_per_epoch
    if config.warmup_epochs:
        warmup_steps = max(1, round(config.warmup_epochs * steps_per_epoch))
        schedule = functools.partial(lr_factor, total_steps=total_steps, warmup_steps=warmup_steps)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    # The closed form differs from CosineAnnealingLR's recursion in the last bits; runs
    # without warm-up keep the recursion so that earlier results reproduce exactly.
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


def _final_metrics(run: Run) -> RunResult:
    test = evaluate(run.model, run.dataset, "test", run.device)
    train_seconds = sum(entry["seconds"] for entry in run.history)
    metrics: dict[str, Any] = {
        "finished": True,
        "epochs": run.history,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "test_predicted_classes": test["predicted_classes"],
        "dead": test["predicted_classes"] <= 1,
        "val_accuracy": run.history[-1].get("val_accuracy") if run.history else None,
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / len(run.history) if run.history else None,
        **run.facts,
    }
    return cast(RunResult, metrics)


def _diverged(
    run_dir: Path, config: TrainConfig, epoch: int, step: int, steps: int, loss: float, last_good: int
) -> str:
    kept = (
        f"the checkpoint of epoch {last_good} is kept in {run_dir}"
        if last_good
        else f"no epoch had finished; {run_dir} keeps the config"
        + (" and masks" if (run_dir / "masks.safetensors").is_file() else "")
    )
    return (
        f"training diverged at epoch {epoch}, step {step}/{steps} (loss {loss}); {kept}: "
        f"rerun with --resume and a smaller --lr (now {config.lr:g}, e.g. {config.lr / 10:g})"
    )
