"""A run folder and the state the training loop shares with its parts: :class:`Run`,
:class:`TrainingCallback`, checkpoints, evaluation and the rules of resuming."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import torch
from safetensors.torch import save_file
from torch import nn

from panning import data as datasets
from panning import masks as masklib
from panning.distributed import Workers
from panning.errors import UserError
from panning.io import changed_settings, read_json, write_atomic
from panning.masks import Masks
from panning.training.config import LEGACY_TRAINING, TrainConfig

CHECKPOINT = "checkpoint.pt"


def masks_digest(masks: Masks | None) -> str | None:
    """A SHA-256 over the masks' names, shapes and bits (``None`` for a dense run).

    Examples:
        >>> masks_digest(None) is None
        True
    """
    return None if masks is None else masks.digest()


@dataclass
class EpochEnd:
    """Passed to callbacks after every epoch (after the checkpoint is written)."""

    epoch: int
    metrics: EpochRecord
    model: nn.Module


Callback = Callable[[EpochEnd], None]


class EpochRecord(TypedDict, total=False):
    """One epoch of a run's history (``metrics.json``'s ``epochs``); ``val_*`` when there is a
    validation split."""

    epoch: int
    train_loss: float
    train_accuracy: float
    lr: float
    seconds: float
    val_loss: float
    val_accuracy: float


class RunResult(TypedDict, total=False):
    """What :func:`~panning.training.train` returns and ``metrics.json`` holds at the end of a run.

    The accuracies are the FINAL epoch's. With masks, the run also reports their connectivity
    (:meth:`panning.connectivity.Connectivity.as_dict`'s keys), the screening that made them
    (``method`` to ``target_sparsity``) and the costs of the dense, masked and compacted
    network; ``compaction`` and ``kernels`` appear when those options are on. A grid's results
    columns of the same names (:class:`panning.bench.ResultRow`) are copied from here.

    Examples:
        >>> sorted(RunResult.__annotations__)[:3]
        ['collapsed', 'collapsed_layers', 'compaction']
    """

    finished: bool
    epochs: list[EpochRecord]
    test_accuracy: float
    test_loss: float
    test_predicted_classes: int
    dead: bool
    val_accuracy: float | None
    train_seconds: float
    seconds_per_epoch: float | None
    # connectivity of the masks
    nominal_sparsity: float
    effective_sparsity: float | None
    kept: int | None
    effective_kept: int
    total: int | None
    collapsed: bool
    collapsed_layers: list[str]
    layers: list[dict[str, Any]]
    # how much the masked network's output varies with its input at the start of training, over
    # the unmasked network's (panning.connectivity.input_signal; 0: it cannot train; None: the
    # masks were applied to the model before train())
    input_signal: float | None
    # the screening that made them
    method: str
    options: dict[str, Any]
    prune_seconds: float
    iterations: int
    schedule: str
    regrowth: bool
    prune_seed: int
    target_sparsity: float
    # costs, compaction, kernels
    costs: dict[str, dict[str, int]]
    compaction: dict[str, Any]
    kernels: list[dict[str, Any]]


def evaluate(
    model: nn.Module, dataset: datasets.Dataset, split: str, device: torch.device, batch_size: int | None = None
) -> dict[str, Any]:
    """Loss, accuracy and the number of distinct predicted classes on a split, in batches of
    ``batch_size`` (default: 256 on the CPU, where oneDNN's convolutions run LeNet-5 faster per
    example than in larger batches; 1024 elsewhere).

    Examples:
        >>> images, labels = torch.rand(20, 1, 4, 4), torch.arange(20) % 2
        >>> data = datasets.from_tensors((images, labels), (images[:6], labels[:6]), val_size=0)
        >>> always_one = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> _ = nn.init.zeros_(always_one[1].weight), always_one[1].bias.data.copy_(torch.tensor([0.0, 1.0]))
        >>> result = evaluate(always_one, data, "test", torch.device("cpu"))
        >>> result["accuracy"], result["predicted_classes"]
        (0.5, 1)
    """
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    predicted = torch.zeros(dataset.num_classes, dtype=torch.long)
    if batch_size is None:
        batch_size = 256 if device.type == "cpu" else 1024
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


def checkpoint_state(
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    history: list[EpochRecord],
    config: dict[str, Any],
) -> dict[str, Any]:
    """Everything a resumed run needs to continue exactly where this epoch ended (``checkpoint.pt``).

    Examples:
        >>> net = nn.Linear(2, 1)
        >>> sgd = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> cosine = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, T_max=10)
        >>> sorted(checkpoint_state(1, net, sgd, cosine, torch.Generator(), [], {}))[:3]
        ['config', 'epoch', 'generator']
    """
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
    """Refuse an ``out`` folder that holds a finished run, an unfinished one (without resume) or other files.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> check_out_dir(folder / "new-run", resume=False)  # a new folder is fine
        >>> _ = (folder / "notes.txt").write_text("mine")
        >>> check_out_dir(folder, resume=False)
        Traceback (most recent call last):
        ...
        panning.errors.UserError: ...
    """
    metrics = out / "metrics.json"
    if not out.exists():
        existing = next(parent for parent in out.absolute().parents if parent.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            raise UserError(f"cannot create {out}: {existing} is not a writable folder; choose another --out")
        if resume:
            # Said once however many checks a command makes (the warning's place is this line).
            warnings.warn(f"--resume: {out} holds no run yet, so a new one starts there", stacklevel=1)
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
    """Save ``model``'s weights (masks made permanent) as safetensors, atomically.

    Examples:
        >>> import tempfile
        >>> from safetensors.torch import load_file
        >>> path = Path(tempfile.mkdtemp()) / "model.safetensors"
        >>> save_model(nn.Linear(3, 2), path, {"epochs": 1})
        >>> sorted(load_file(str(path)))
        ['bias', 'weight']
    """
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
    history: list[EpochRecord] = field(default_factory=list)
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

    def on_epoch_end(self, run: Run, entry: EpochRecord) -> None:
        """After every epoch; ``entry`` is already in ``run.history``."""

    def on_end(self, run: Run, metrics: RunResult) -> None:
        """After the final evaluation."""


# Settings a resumed run may change, e.g. a smaller learning rate after a divergence.
CHANGEABLE_ON_RESUME = ("lr",)


def resume_changes(run_dir: Path, saved: dict[str, Any], record: dict[str, Any]) -> dict[str, list[Any]]:
    """The changeable settings that differ from the run's saved ones; any other difference is refused.

    Examples:
        >>> saved = {"train": TrainConfig(lr=0.1).as_dict()}
        >>> resume_changes(Path("runs/x"), saved, {"train": TrainConfig(lr=0.01).as_dict()})
        {'lr': [0.1, 0.01]}
    """
    if not isinstance(saved.get("train"), dict):
        raise UserError(
            f"{run_dir / 'config.json'} is not the config of a panning run (it has no training settings); "
            "move it away or choose another --out"
        )
    before = {**LEGACY_TRAINING, **saved["train"]}
    now = record["train"]
    differing = changed_settings(before, now, [*now, *(name for name in before if name not in now)])
    for name, (was, asked) in differing.items():
        if name not in CHANGEABLE_ON_RESUME:
            raise UserError(
                f"{run_dir} was started with {name} = {was!r}, not {asked!r}; resume with "
                f"the same {name} or choose another --out (only {', '.join(CHANGEABLE_ON_RESUME)} may change)"
            )
    return {name: list(values) for name, values in differing.items()}


def continue_with(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, lr: float) -> None:
    """Carry a changed learning rate into a resumed schedule: the rest of the curve is scaled to it.

    Examples:
        >>> sgd = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
        >>> cosine = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, T_max=10)
        >>> continue_with(sgd, cosine, 0.01)
        >>> round(sgd.param_groups[0]["lr"], 6), round(cosine.base_lrs[0], 6)
        (0.01, 0.01)
    """
    ratio = lr / scheduler.base_lrs[0]
    if ratio != 1:
        for group in optimizer.param_groups:
            group["lr"] *= ratio
            group["initial_lr"] = lr
        scheduler.base_lrs = [base * ratio for base in scheduler.base_lrs]
