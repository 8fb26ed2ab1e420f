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
from panning.errors import UserError, check_literal_fields, check_seed
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

    def __post_init__(self) -> None:
        # A numpy or 0-dim torch scalar (a value from a sweep's array) becomes the Python number
        # it holds, so that it validates and is written to config.json like one.
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
                object.__setattr__(self, field.name, value.item())

    def validate(self) -> TrainConfig:
        """Return self after checking every field's type and range; a bad value raises ``UserError``.

        Examples:
            >>> TrainConfig(compact="no").validate()
            Traceback (most recent call last):
            ...
            panning.errors.UserError: compact must be true or false, got 'no'
        """
        for name in ("model", "dataset", "device"):
            if not isinstance(getattr(self, name), str):
                raise UserError(f"{name} must be a string, got {getattr(self, name)!r}")
        _check_integer("epochs", self.epochs, 1)
        _check_integer("batch_size", self.batch_size, 1)
        _check_integer("val_size", self.val_size, 0)
        check_seed(self.seed)
        if self.train_examples is not None:
            _check_integer("train_examples", self.train_examples, 1, "a positive integer or None")
        _check_number("lr", self.lr, self.lr > 0 if _is_number(self.lr) else False, "a positive number")
        _check_number(
            "momentum", self.momentum, 0 <= self.momentum < 1 if _is_number(self.momentum) else False, "in [0, 1)"
        )
        _check_number(
            "weight_decay",
            self.weight_decay,
            self.weight_decay >= 0 if _is_number(self.weight_decay) else False,
            ">= 0",
        )
        warmup_ok = 0 <= self.warmup_epochs < self.epochs if _is_number(self.warmup_epochs) else False
        _check_number("warmup_epochs", self.warmup_epochs, warmup_ok, f"a number in [0, epochs={self.epochs})")
        if self.clip_grad_norm is not None:
            clip_ok = self.clip_grad_norm > 0 if _is_number(self.clip_grad_norm) else False
            _check_number(
                "clip_grad_norm", self.clip_grad_norm, clip_ok, 'a positive number or None ("none" in a grid file)'
            )
        for name in ("compact", "sparse_kernels"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.augment is not None and not isinstance(self.augment, bool):
            raise UserError(f"augment must be true, false or None (the dataset's default), got {self.augment!r}")
        check_literal_fields(self)
        resolve_device(self.device)
        return self

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_number(name: str, value: object, in_range: bool, what: str) -> None:
    if not (_is_number(value) and in_range):
        raise UserError(f"{name} must be {what}, got {value!r}")


def _check_integer(name: str, value: object, low: int, what: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserError(
            f"{name} must be {what or ('a positive integer' if low else 'a non-negative integer')}, got {value!r}"
        )


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
