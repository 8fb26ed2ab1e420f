from __future__ import annotations

import pytest
import torch

import panning
from panning.masks import prunable_parameters

SHAPES = {"mnist": (1, 28, 10), "cifar10": (3, 32, 10), "cifar100": (3, 32, 100), "tiny-imagenet": (3, 64, 200)}


def test_registry_lists_the_standard_models() -> None:
    expected = {
        "lenet300",
        "lenet5",
        "vgg11",
        "vgg13",
        "vgg16",
        "vgg19",
        "resnet20",
        "resnet32",
        "resnet56",
        "resnet18",
    }
    assert expected <= set(panning.models.names())


def test_unknown_model_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'lenet7'; valid: .*lenet300.*vgg19"):
        panning.models.create("lenet7")


def test_lenet_sizes_match_the_literature() -> None:
    lenet5 = panning.models.create("lenet5", 1, 10, 28)
    assert sum(p.numel() for p in prunable_parameters(lenet5).values()) == 430_500
    lenet300 = panning.models.create("lenet300", 1, 10, 28)
    assert sum(p.numel() for p in prunable_parameters(lenet300).values()) == 784 * 300 + 300 * 100 + 100 * 10


@pytest.mark.parametrize("name", ["lenet300", "lenet5", "vgg11", "vgg19", "resnet20", "resnet32", "resnet18"])
@pytest.mark.parametrize("dataset", ["mnist", "cifar100"])
def test_models_follow_the_dataset_shape(name: str, dataset: str) -> None:
    channels, size, classes = SHAPES[dataset]
    model = panning.models.create(name, channels, classes, size)
    assert model(torch.zeros(2, channels, size, size)).shape == (2, classes)


def test_vgg_parameter_count_and_tiny_imagenet_shape() -> None:
    vgg19 = panning.models.create("vgg19", 3, 10, 32)
    assert 19e6 < sum(p.numel() for p in prunable_parameters(vgg19).values()) < 21e6
    resnet56 = panning.models.create("resnet56", 3, 200, 64)
    assert resnet56(torch.zeros(1, 3, 64, 64)).shape == (1, 200)


@pytest.mark.parametrize("image_size", [28, 31])
def test_lenet5_evaluates_to_the_same_logits_as_it_trains(image_size: int) -> None:
    """Without autograd LeNet-5 pools through strided views (faster on the CPU): the logits must be
    bit for bit those of the autograd path, odd feature maps and ties included."""
    torch.manual_seed(0)
    model = panning.models.create("lenet5", 1, 10, image_size)
    images = torch.randn(8, 1, image_size, image_size)
    images[:4] = 0.0  # constant images: every window of the first pooling is a tie
    with torch.no_grad():
        fast = model(images)
    assert torch.equal(fast, model(images).detach())
    with torch.no_grad():  # a NaN stays in its window, as with F.max_pool2d
        pooled = panning.models.lenet.max_pool2(torch.tensor([[[[0.0, float("nan")], [1.0, 2.0]]]]))
    assert pooled.isnan().all()
