"""What determines a training run (:class:`TrainConfig`), and the seeded model and data it names."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import nn

from panning import data as datasets
from panning import models
from panning.errors import UserError, check_literal_fields
from panning.masks import Masks

Rescale = Literal["fan-in", "none"]
RESCALES: tuple[str, ...] = get_args(Rescale)


# What a run configured before a field existed did: the value a saved config lacking it means.
LEGACY_TRAINING = {
    "compact": False,
    "sparse_kernels": False,
    "warmup_epochs": 0.0,
    "rescale": "none",
    "init": "pytorch",
    "clip_grad_norm": None,
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run. Defaults follow the authors' script except the
    initialisation, the input scaling and gradient clipping (see the fields' comments).

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
    normalization: datasets.InputNormalization = "standard"
    augment: bool | None = None
    device: str = "auto"
    # Train on the first N training examples only (quick benchmark variants); None: all of them.
    train_examples: int | None = None
    # Train the compacted model (panning.compact) instead of the masked full-size one.
    compact: bool = False
    # Swap linear layers for sparse kernels where timing says they are faster (panning.compaction.sparse).
    sparse_kernels: bool = False
    # Epochs of linear learning-rate warm-up before the cosine schedule (0: cosine from the first step).
    warmup_epochs: float = 0.0
    # "fan-in": scale each unit's kept weights by sqrt(dense fan-in / kept fan-in) after masking, so
    # a sparse unit starts with the output scale of its dense initialisation (Evci et al. 2022).
    rescale: Rescale = "none"
    # The initialisation of a registered model (panning.models.initialize): "pytorch" or "reference".
    init: models.Init = "pytorch"
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
        if (
            isinstance(self.warmup_epochs, bool)
            or not isinstance(self.warmup_epochs, (int, float))
            or not 0 <= self.warmup_epochs < self.epochs
        ):
            raise UserError(f"warmup_epochs must be a number in [0, epochs={self.epochs}), got {self.warmup_epochs!r}")
        check_literal_fields(self)
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


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """The learning rate's factor at ``step``: linear warm-up over ``warmup_steps``, then cosine to 0.

    Examples:
        >>> [round(lr_factor(s, 10, 2), 3) for s in (0, 1, 2, 6, 10)]
        [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))


def device_kind(device: str) -> str:
    """``"auto"``, or the type of the device ``device`` names (``"cpu"``, ``"cuda"``, ...), without
    asking whether this machine has it: a grid's driver checks the devices of its workers so.

    Examples:
        >>> device_kind("cuda:1"), device_kind("auto")
        ('cuda', 'auto')
    """
    if device == "auto":
        return device
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r}; use auto, cpu or cuda") from None


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU.

    Examples:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device_kind(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return resolved


def record_origin(masks: Masks, model_name: str, dataset: datasets.Dataset, seed: int, init: str = "pytorch") -> Masks:
    """Note in ``masks.metadata`` which model, data, preprocessing and initialisation they were screened on.

    Examples:
        >>> images, labels = torch.rand(20, 1, 8, 8), torch.arange(20) % 2
        >>> data = datasets.from_tensors((images, labels), (images[:4], labels[:4]), val_size=0)
        >>> info = record_origin(Masks(), "mine", data, seed=3).metadata
        >>> info["dataset"], info["init_seed"], info["init"]
        ('custom', 3, 'pytorch')
    """
    masks.metadata.update(
        model=model_name, dataset=dataset.name, normalization=dataset.normalization, init_seed=int(seed), init=init
    )
    return masks


def build(config: TrainConfig, data_dir: str | None = None) -> tuple[nn.Module, datasets.Dataset]:
    """The seeded model and the dataset a config names.

    Examples:
        >>> model, data = build(TrainConfig(model="lenet5", dataset="mnist"))  # doctest: +SKIP
        >>> data.input_shape  # doctest: +SKIP
        (1, 28, 28)
    """
    config.validate()
    dataset = datasets.load(config.dataset, data_dir, val_size=config.val_size, normalization=config.normalization)
    return create_model(config, dataset), dataset


def create_model(config: TrainConfig, dataset: datasets.Dataset) -> nn.Module:
    """The model a config names, at the initialisation of its seed, shaped for ``dataset``.

    Examples:
        >>> images, labels = torch.rand(20, 3, 32, 32), torch.arange(20) % 5
        >>> data = datasets.from_tensors((images, labels), (images[:5], labels[:5]), val_size=0)
        >>> model = create_model(TrainConfig(model="resnet20", seed=1), data)
        >>> model(data.tensors("test")[0]).shape
        torch.Size([5, 5])
    """
    torch.manual_seed(config.seed)
    return models.initialize(models.for_dataset(config.model, dataset.spec), config.init)
