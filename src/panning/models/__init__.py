"""Standard models of the pruning-at-initialisation literature, created by name.

Examples:
    >>> import panning
    >>> model = panning.models.create("lenet5", in_channels=1, num_classes=10)
    >>> sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    430500
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, get_args

import torch
from torch import nn

from panning.errors import UserError, check_module
from panning.models.lenet import LeNet5Caffe, LeNet300
from panning.models.resnet import CifarResNet, ResNet18
from panning.models.vgg import VGG
from panning.registry import Registry

if TYPE_CHECKING:
    from panning.data import DatasetSpec

ModelFactory = Callable[..., nn.Module]
_REGISTRY: Registry[ModelFactory] = Registry("model")


def register(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator that adds a model factory ``f(in_channels, num_classes, image_size)``; a taken
    name is refused.

    Examples:
        >>> @register("tiny-mlp")
        ... def tiny(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        ...     return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))
        >>> "tiny-mlp" in names()
        True
        >>> unregister("tiny-mlp")
    """
    return _REGISTRY.register(name)


def unregister(name: str) -> None:
    """Remove a model added with :func:`register`.

    Examples:
        >>> _ = register("scratch")(lambda in_channels, num_classes, image_size: nn.Identity())
        >>> unregister("scratch"); "scratch" in names()
        False
    """
    _REGISTRY.unregister(name)


def for_dataset(name: str, dataset: str | DatasetSpec) -> nn.Module:
    """A registered model shaped for the images and classes of a dataset (a name or its spec).

    Examples:
        >>> for_dataset("lenet5", "cifar10").conv1.in_channels
        3
    """
    from panning import data

    spec = data.spec(dataset) if isinstance(dataset, str) else dataset
    if spec.image_size < 1:
        raise UserError(
            f"the registered models take square images and {spec.name}'s are not; train a model of your own on it"
        )
    return create(name, in_channels=spec.in_channels, num_classes=spec.num_classes, image_size=spec.image_size)


def names() -> list[str]:
    """The registered model names, sorted.

    Examples:
        >>> names()[:3]
        ['lenet300', 'lenet5', 'resnet18']
    """
    return _REGISTRY.names()


def create(name: str, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Module:
    """Build a registered model for images of ``in_channels`` x ``image_size`` x ``image_size``.

    Examples:
        >>> create("resnet20", in_channels=3, num_classes=10, image_size=32).__class__.__name__
        'CifarResNet'
    """
    factory = _REGISTRY.get(name)
    for label, value in (("in_channels", in_channels), ("num_classes", num_classes), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{label} must be a positive integer, got {value!r}")
    model = factory(in_channels=in_channels, num_classes=num_classes, image_size=image_size)
    _check_takes(model, name, in_channels, image_size)
    return model


def _check_takes(model: nn.Module, name: str, in_channels: int, image_size: int) -> None:
    """Refuse, here rather than at the first batch, an image size the architecture cannot take
    (VGG's four poolings need at least 16 pixels)."""
    import torch

    from panning.screening.pruning import probe_model

    images = f"{in_channels} x {image_size} x {image_size} images"
    probe_model(model, torch.zeros(1, in_channels, image_size, image_size), f"{name} cannot take {images}")


# The initialisations a registered model can be drawn with (see initialize).
Init = Literal["pytorch", "reference"]
INITS: tuple[str, ...] = get_args(Init)


def initialize(model: nn.Module, scheme: Init = "reference") -> nn.Module:
    """Re-draw ``model``'s weights in place from torch's global generator; returns ``model``.

    ``"pytorch"`` keeps the modules' own initialisation (nothing is re-drawn). ``"reference"`` is
    the initialisation of the authors' script: Kaiming-normal (fan-out, ReLU) for convolutions,
    N(0, 0.01) for linear layers, zero biases, batch norm at weight 1 and bias 0. Screen a model
    after initialising it: a mask belongs to the weights it was screened on.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> net = initialize(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 2)))
        >>> float(net[2].bias.detach().abs().sum())
        0.0
    """
    check_module(model)
    if scheme not in INITS:
        raise UserError(f"unknown init {scheme!r}; valid: {', '.join(INITS)}")
    if scheme == "pytorch":
        return model
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(module.weight)
        else:
            continue
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            nn.init.zeros_(bias)
    return model


register("lenet300")(lambda in_channels, num_classes, image_size: LeNet300(in_channels * image_size**2, num_classes))
register("lenet5")(lambda in_channels, num_classes, image_size: LeNet5Caffe(in_channels, num_classes, image_size))
for _depth in (11, 13, 16, 19):
    register(f"vgg{_depth}")(
        lambda in_channels, num_classes, image_size, depth=_depth: VGG(depth, in_channels, num_classes)
    )
for _depth in (20, 32, 56):
    register(f"resnet{_depth}")(
        lambda in_channels, num_classes, image_size, depth=_depth: CifarResNet(depth, in_channels, num_classes)
    )
register("resnet18")(lambda in_channels, num_classes, image_size: ResNet18(in_channels, num_classes))

__all__ = [
    "INITS",
    "VGG",
    "CifarResNet",
    "Init",
    "LeNet5Caffe",
    "LeNet300",
    "ResNet18",
    "create",
    "for_dataset",
    "initialize",
    "names",
    "register",
    "unregister",
]
