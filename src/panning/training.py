"""Masked training: SGD with momentum and a cosine schedule, into a run folder that can resume.

A run folder holds ``config.json``, ``metrics.json`` (per epoch; at the end the FINAL epoch's
``test_accuracy``, never the best; with masks also parameters and multiply-accumulates per
example, dense, masked and compacted), ``masks.safetensors``, ``model.safetensors`` (final
weights with masks made permanent; for a compacted or sparse-kernel run the small format of
:func:`panning.sparse.save_sparse`) and, while the run is going, ``checkpoint.pt``, rewritten
atomically after every epoch. Same seed, same weights on CPU; a resumed run ends where an uninterrupted
one would.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from panning import data as datasets
from panning import distributed, models
from panning import masks as masklib
from panning.compaction import compact_with_plan
from panning.connectivity import connectivity
from panning.distributed import Workers
from panning.errors import TrainingDiverged, UserError, UserTypeError
from panning.io import changed_settings, read_json, write_atomic, write_json
from panning.masks import Masks
from panning.sparse import model_costs, save_sparse, use_sparse_kernels

CHECKPOINT = "checkpoint.pt"
RESCALES = ("fan-in", "none")
# What a run configured before a field existed did: the value a saved config lacking it means.
LEGACY_TRAINING = {
    "compact": False,
    "sparse_kernels": False,
    "warmup_epochs": 0.0,
    "rescale": "none",
    "init": "pytorch",
    "clip_grad_norm": None,
}
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


def masks_digest(masks: Masks | None) -> str | None:
    """A SHA-256 over the masks' names, shapes and bits (``None`` for a dense run).

    Examples:
        >>> masks_digest(None) is None
        True
    """
    if masks is None:
        return None
    digest = hashlib.sha256()
    for name in sorted(masks):
        mask = masks[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(mask.shape)};".encode())
        digest.update(mask.numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run. Defaults follow the authors' script.

    Examples:
        >>> TrainConfig(epochs=2).lr
        0.1
    """

    model: str = "lenet5"
    dataset: str = "fashion-mnist"
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0
    val_size: int = datasets.DEFAULT_VAL_SIZE
    normalization: str = "standard"
    augment: bool | None = None
    device: str = "auto"
    # Train on the first N training examples only (quick benchmark variants); None: all of them.
    train_examples: int | None = None
    # Train the compacted model (panning.compact) instead of the masked full-size one.
    compact: bool = False
    # Swap linear layers for sparse kernels where timing says they are faster (panning.sparse).
    sparse_kernels: bool = False
    # Epochs of linear learning-rate warm-up before the cosine schedule (0: cosine from the first step).
    warmup_epochs: float = 0.0
    # "fan-in": scale each unit's kept weights by sqrt(dense fan-in / kept fan-in) after masking, so
    # a sparse unit starts with the output scale of its dense initialisation (Evci et al. 2022).
    rescale: str = "none"
    # The initialisation of a registered model (panning.models.initialize): "pytorch" or "reference".
    init: str = "pytorch"
    # Clip the gradient's global norm to this value before every step (None: no clipping). At
    # extreme sparsity a network that leaves its initial plateau can take one huge step that
    # silences a bottleneck unit for good; clipping bounds that step (benchmarks/sparse_training.py).
    clip_grad_norm: float | None = 1.0

    def validate(self) -> TrainConfig:
        """Return self after checking every field; a bad value raises ``UserError``."""
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        if self.train_examples is not None and (
            isinstance(self.train_examples, bool) or not isinstance(self.train_examples, int) or self.train_examples < 1
        ):
            raise UserError(f"train_examples must be a positive integer or None, got {self.train_examples!r}")
        if not isinstance(self.val_size, int) or self.val_size < 0:
            raise UserError(f"val_size must be a non-negative integer, got {self.val_size!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise UserError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not self.weight_decay >= 0:
            raise UserError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.normalization not in datasets.INPUT_NORMALIZATIONS:
            raise UserError(f"unknown normalization {self.normalization!r}; valid: standard, half")
        if (
            isinstance(self.warmup_epochs, bool)
            or not isinstance(self.warmup_epochs, (int, float))
            or not 0 <= self.warmup_epochs < self.epochs
        ):
            raise UserError(f"warmup_epochs must be a number in [0, epochs={self.epochs}), got {self.warmup_epochs!r}")
        if self.rescale not in RESCALES:
            raise UserError(f"unknown rescale {self.rescale!r}; valid: {', '.join(RESCALES)}")
        if self.init not in models.INITS:
            raise UserError(f"unknown init {self.init!r}; valid: {', '.join(models.INITS)}")
        if self.clip_grad_norm is not None and (
            isinstance(self.clip_grad_norm, bool)
            or not isinstance(self.clip_grad_norm, (int, float))
            or not (self.clip_grad_norm > 0 and math.isfinite(self.clip_grad_norm))
        ):
            raise UserError(f"clip_grad_norm must be a positive number or None, got {self.clip_grad_norm!r}")
        resolve_device(self.device)
        return self

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """The learning rate's factor at ``step``: linear warm-up over ``warmup_steps``, then cosine to 0.

    Examples:
        >>> [round(lr_factor(s, 10, 2), 3) for s in (0, 1, 2, 6, 10)]
        [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU.

    Examples:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return resolved


@dataclass
class EpochEnd:
    """Passed to callbacks after every epoch (after the checkpoint is written)."""

    epoch: int
    metrics: dict[str, float]
    model: nn.Module


Callback = Callable[[EpochEnd], None]


def evaluate(
    model: nn.Module, dataset: datasets.Dataset, split: str, device: torch.device, batch_size: int = 1024
) -> dict[str, Any]:
    """Loss, accuracy and the number of distinct predicted classes on a split.

    Examples:
        >>> # evaluate(model, data, "test", torch.device("cpu"))["accuracy"]  -> a fraction
    """
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    predicted = torch.zeros(dataset.num_classes, dtype=torch.long)
    with torch.no_grad():
        for x, y in dataset.batches(split, batch_size, device):
            logits = model(x)
            total_loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            guess = logits.argmax(1)
            correct += int((guess == y).sum())
            count += len(y)
            predicted += torch.bincount(guess.cpu(), minlength=dataset.num_classes)[: dataset.num_classes]
    model.train(was_training)
    if count == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "predicted_classes": 0}
    return {
        "loss": total_loss / count,
        "accuracy": correct / count,
        "predicted_classes": int((predicted > 0).sum()),
    }


def _state_for_checkpoint(
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    history: list[dict[str, Any]],
    config: dict[str, Any],
) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": history,
        "config": config,
    }


def check_out_dir(out: Path, resume: bool) -> None:
    """Refuse an ``out`` folder that holds a finished run, an unfinished one (without resume) or other files."""
    metrics = out / "metrics.json"
    if not out.exists():
        existing = next(parent for parent in out.absolute().parents if parent.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            raise UserError(f"cannot create {out}: {existing} is not a writable folder; choose another --out")
        return
    if not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a folder for the run")
    finished = metrics.is_file() and read_json(metrics).get("finished", False)
    if finished and not resume:
        raise UserError(f"{out} already holds a finished run; choose another --out (nothing was changed)")
    if resume:
        return
    if (out / CHECKPOINT).exists() or (out / "config.json").exists():
        raise UserError(f"{out} holds an unfinished run; pass --resume to continue it, or choose another --out")
    if any(out.iterdir()):
        raise UserError(f"{out} is not empty; choose a new or empty folder for --out")


def masks_to_resume(run_dir: str | os.PathLike[str]) -> Masks | None:
    """The masks an unfinished run in ``run_dir`` was started with, or ``None`` if it has none.

    A run that screened before training resumes with its saved masks instead of screening again.

    Examples:
        >>> masks_to_resume("no/such/run") is None
        True
    """
    folder = Path(run_dir)
    if (folder / "masks.safetensors").is_file() and (folder / "config.json").is_file():
        return masklib.load(folder / "masks.safetensors")
    return None


def save_model(model: nn.Module, path: Path, metadata: dict[str, Any] | None = None) -> None:
    """Save ``model``'s weights (masks made permanent) as safetensors, atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in masklib.dense_state_dict(model).items()}
    text = {"panning": json.dumps(metadata or {}, sort_keys=True, default=str)}
    write_atomic(path, lambda tmp: save_file(state, str(tmp), metadata=text))


@dataclass
class Run:
    """What the training loop and its callbacks share while one run trains.

    ``model`` is the network being trained (a callback's ``on_setup`` may replace it, as
    compaction does), ``masks`` those it trains under, ``facts`` what the run's metrics report
    about its masks (connectivity, costs, compaction, kernels), ``history`` one entry per epoch.
    """

    config: TrainConfig
    run_dir: Path
    model: nn.Module
    dataset: datasets.Dataset
    device: torch.device
    masks: Masks | None
    resume: bool
    facts: dict[str, Any]
    plan: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    generator: torch.Generator | None = None
    workers: Workers = field(default_factory=Workers)
    trainer: nn.Module | None = None  # what the training steps call: the DDP wrapper under torchrun


class TrainingCallback:
    """A part of training that plugs into :func:`train`; override the hooks it needs.

    ``on_setup`` runs before the optimizer exists and may replace ``run.model`` and
    ``run.masks``; ``on_start`` runs once the optimizer and schedule exist (a checkpoint is
    restored there); ``on_epoch_end`` after every epoch with its history entry; ``on_end``
    with the final metrics.

    Examples:
        >>> class CountEpochs(TrainingCallback):
        ...     def __init__(self): self.epochs = 0
        ...     def on_epoch_end(self, run, entry): self.epochs += 1
        >>> CountEpochs().epochs
        0
    """

    def on_setup(self, run: Run) -> None:
        """Before the optimizer is built."""

    def on_start(self, run: Run) -> None:
        """Once the optimizer, schedule and generator exist."""

    def on_epoch_end(self, run: Run, entry: dict[str, Any]) -> None:
        """After every epoch; ``entry`` is already in ``run.history``."""

    def on_end(self, run: Run, metrics: dict[str, Any]) -> None:
        """After the final evaluation."""


def train(
    model: nn.Module,
    dataset: datasets.Dataset,
    config: TrainConfig,
    out: str | os.PathLike[str],
    masks: Masks | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback | TrainingCallback] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``model`` (with ``masks`` applied, if given) on ``dataset`` into the run folder ``out``.

    Returns the final metrics, also written to ``out/metrics.json``. ``resume=True`` continues
    from ``out/checkpoint.pt`` (the config must match). In an initialised process group (``torchrun``) it
    trains with DistributedDataParallel: each global batch is split between the ranks, and only
    rank 0 writes ``out``. ``callbacks`` are
    :class:`TrainingCallback` objects or functions called with an :class:`EpochEnd` after
    every epoch; they run after the library's own (cost counting, compaction, sparse kernels,
    validation, checkpoints, export).

    Examples:
        >>> # model = panning.models.create("lenet5"); data = panning.data.load("mnist")
        >>> # train(model, data, TrainConfig(model="lenet5", dataset="mnist", epochs=1), "runs/x")
    """
    own = [_as_callback(callback) for callback in callbacks]
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
    run.model.train()
    for epoch in range(run.start_epoch + 1, config.epochs + 1):
        entry = _train_epoch(run, epoch, steps_per_epoch, progress)
        run.history.append(entry)
        for hook in hooks:
            hook.on_epoch_end(run, entry)
    metrics = _final_metrics(run)
    for hook in hooks:
        hook.on_end(run, metrics)
    return metrics


def _train_epoch(run: Run, epoch: int, steps_per_epoch: int, progress: bool) -> dict[str, Any]:
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
    entry: dict[str, Any] = {
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
) -> tuple[Run, dict[str, list[Any]]] | dict[str, Any]:
    """Check everything that can be refused, then create or reopen the run folder (rank 0 only).

    Returns the run and the settings changed on resume, or the metrics of a finished run.
    """
    config.validate()
    if not isinstance(model, nn.Module):
        raise UserTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if (config.compact or config.sparse_kernels) and masks is None:
        raise UserError("compact and sparse kernels need masks: pass the masks of a screening, or train dense")
    if workers.distributed and (config.compact or config.sparse_kernels):
        raise UserError(
            "--compact and --sparse-kernels change the network on each rank and are not supported on "
            "several processes; leave them out under torchrun (the masked network trains the same)"
        )
    check_out_dir(run_dir, resume)
    distributed.barrier(workers)  # every rank has looked at the folder before rank 0 writes in it
    device = distributed.device_for(resolve_device(config.device), workers)
    facts: dict[str, Any] = {"kept": None, "total": None, "nominal_sparsity": 0.0, "effective_sparsity": None}
    if masks is not None:
        masks.check_fits(model)
        report = connectivity(model.to(device), masks, input_shape=dataset.input_shape)
        facts = {
            **report.as_dict(),
            **{name: masks.metadata[key] for key, name in SCREENING_FACTS.items() if key in masks.metadata},
        }
    record = {
        "train": config.as_dict(),
        "masks_digest": masks_digest(masks),
        "masks": dict(masks.metadata) if masks is not None else None,
    }
    if workers.distributed:
        record["distributed"] = {
            "world_size": workers.world_size,
            "backend": str(torch.distributed.get_backend()),
            "global_batch": config.batch_size,
            "batch_per_process": math.ceil(config.batch_size / workers.world_size),
            "lr": config.lr,
        }
    config_path = run_dir / "config.json"
    changed: dict[str, list[Any]] = {}
    if resume and config_path.is_file():
        saved = read_json(config_path)
        changed = _resume_changes(run_dir, saved, record)
        if saved.get("masks_digest") != record["masks_digest"]:
            was = "dense" if saved.get("masks_digest") is None else "with other masks"
            raise UserError(f"{run_dir} was started {was}; resume with the same --masks/--dense as the first run")
        if (run_dir / "metrics.json").is_file():
            finished = read_json(run_dir / "metrics.json")
            if finished.get("finished"):
                return dict(finished)
    elif workers.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(config_path, record)
        if masks is not None:
            masklib.save(masks, run_dir / "masks.safetensors")
    model.to(device)
    return Run(config, run_dir, model, dataset, device, masks, resume, facts, workers=workers), changed


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


def _final_metrics(run: Run) -> dict[str, Any]:
    test = evaluate(run.model, run.dataset, "test", run.device)
    train_seconds = sum(entry["seconds"] for entry in run.history)
    return {
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

    def on_epoch_end(self, run: Run, entry: dict[str, Any]) -> None:
        if len(run.dataset.val[1]):
            val = evaluate(run.model, run.dataset, "val", run.device)
            entry.update(val_loss=val["loss"], val_accuracy=val["accuracy"])


class EpochLog(TrainingCallback):
    """One line per epoch on the terminal."""

    def on_epoch_end(self, run: Run, entry: dict[str, Any]) -> None:
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
            state = torch.load(path, map_location=run.device, weights_only=False)
            run.model.load_state_dict(state["model"])
            run.optimizer.load_state_dict(state["optimizer"])
            run.scheduler.load_state_dict(state["scheduler"])
            run.generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            run.history = state["history"]
            run.start_epoch = state["epoch"]
            _continue_with(run.optimizer, run.scheduler, run.config.lr)
        if self.changed and self.write:
            config_path = run.run_dir / "config.json"
            saved = read_json(config_path)
            changes = [*saved.get("changes", []), {"from_epoch": run.start_epoch + 1, **self.changed}]
            write_json(
                config_path, {**saved, "train": json.loads(json.dumps(run.config.as_dict())), "changes": changes}
            )

    def on_epoch_end(self, run: Run, entry: dict[str, Any]) -> None:
        assert run.optimizer is not None and run.scheduler is not None and run.generator is not None
        if not self.write:
            return
        state = _state_for_checkpoint(
            entry["epoch"], run.model, run.optimizer, run.scheduler, run.generator, run.history, run.config.as_dict()
        )
        write_atomic(run.run_dir / CHECKPOINT, functools.partial(torch.save, state))
        write_json(run.run_dir / "metrics.json", {"finished": False, "epochs": run.history, **run.facts})

    def on_end(self, run: Run, metrics: dict[str, Any]) -> None:
        if self.write:
            write_json(run.run_dir / "metrics.json", metrics)
            (run.run_dir / CHECKPOINT).unlink(missing_ok=True)


class Export(TrainingCallback):
    """The trained weights as ``model.safetensors``: dense with masks made permanent, or the
    compact/sparse model with the plan that rebuilds it."""

    def on_end(self, run: Run, metrics: dict[str, Any]) -> None:
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

    def on_epoch_end(self, run: Run, entry: dict[str, Any]) -> None:
        self.function(EpochEnd(entry["epoch"], entry, run.model))


def _as_callback(callback: Callback | TrainingCallback) -> TrainingCallback:
    if isinstance(callback, TrainingCallback):
        return callback
    if callable(callback):
        return _EpochFunction(callback)
    raise UserTypeError(f"a callback is a TrainingCallback or a function of EpochEnd, got {type(callback).__name__}")


# Settings a resumed run may change, e.g. a smaller learning rate after a divergence.
CHANGEABLE_ON_RESUME = ("lr",)


def _resume_changes(run_dir: Path, saved: dict[str, Any], record: dict[str, Any]) -> dict[str, list[Any]]:
    """The changeable settings that differ from the run's saved ones; any other difference is refused."""
    before = {**LEGACY_TRAINING, **saved.get("train", {})}
    now = record["train"]
    differing = changed_settings(before, now, [*now, *(name for name in before if name not in now)])
    for name, (was, asked) in differing.items():
        if name not in CHANGEABLE_ON_RESUME:
            raise UserError(
                f"{run_dir} was started with {name} = {was!r}, not {asked!r}; resume with "
                f"the same {name} or choose another --out (only {', '.join(CHANGEABLE_ON_RESUME)} may change)"
            )
    return {name: list(values) for name, values in differing.items()}


def _continue_with(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, lr: float
) -> None:
    """Carry a changed learning rate into a resumed schedule: the rest of the curve is scaled to it."""
    ratio = lr / scheduler.base_lrs[0]
    if ratio != 1:
        for group in optimizer.param_groups:
            group["lr"] *= ratio
            group["initial_lr"] = lr
        scheduler.base_lrs = [base * ratio for base in scheduler.base_lrs]


def _diverged(
    run_dir: Path, config: TrainConfig, epoch: int, step: int, steps: int, loss: float, last_good: int
) -> str:
    kept = (
        f"the checkpoint of epoch {last_good} is kept in {run_dir}"
        if last_good
        else f"no epoch had finished; {run_dir} keeps the masks and config"
    )
    return (
        f"training diverged at epoch {epoch}, step {step}/{steps} (loss {loss}); {kept}: "
        f"rerun with --resume and a smaller --lr (now {config.lr:g}, e.g. {config.lr / 10:g})"
    )


def record_origin(masks: Masks, model_name: str, dataset: datasets.Dataset, seed: int, init: str = "pytorch") -> Masks:
    """Note in ``masks.metadata`` which model, data, preprocessing and initialisation they were screened on.

    Examples:
        >>> # record_origin(masks, "lenet5", panning.data.load("mnist"), seed=0).metadata["init_seed"]  -> 0
    """
    masks.metadata.update(
        model=model_name, dataset=dataset.name, normalization=dataset.normalization, init_seed=int(seed), init=init
    )
    return masks


def build(config: TrainConfig, data_dir: str | None = None) -> tuple[nn.Module, datasets.Dataset]:
    """The seeded model and the dataset a config names.

    Examples:
        >>> # model, data = build(TrainConfig(model="lenet5", dataset="mnist"))
    """
    config.validate()
    dataset = datasets.load(config.dataset, data_dir, val_size=config.val_size, normalization=config.normalization)
    return create_model(config, dataset), dataset


def create_model(config: TrainConfig, dataset: datasets.Dataset) -> nn.Module:
    """The model a config names, at the initialisation of its seed, shaped for ``dataset``.

    Examples:
        >>> # model = create_model(TrainConfig(model="lenet5", seed=1), panning.data.load("mnist"))
    """
    torch.manual_seed(config.seed)
    return models.initialize(models.for_dataset(config.model, dataset.spec), config.init)


__all__ = [
    "CHECKPOINT",
    "Checkpoints",
    "Compaction",
    "CostCount",
    "EpochEnd",
    "EpochLog",
    "Export",
    "RescaleToFanIn",
    "Run",
    "SparseKernels",
    "TrainConfig",
    "TrainingCallback",
    "Validation",
    "build",
    "check_out_dir",
    "create_model",
    "evaluate",
    "record_origin",
    "resolve_device",
    "save_model",
    "standard_callbacks",
    "train",
]
