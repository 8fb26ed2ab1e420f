from __future__ import annotations

import pytest
import torch
from torch import nn

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


@pytest.mark.parametrize("shape", [(8, 20, 24, 24), (3, 5, 9, 11)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_max_pool2_trains_with_the_gradients_of_max_pool2d(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    """With autograd on the CPU max_pool2 pools a channels-last copy: values, gradients and the
    double backward GraSP takes must be bit for bit F.max_pool2d's, ties in a window included."""
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=dtype).round(decimals=1)  # rounded: many ties
    x[0] = 0.0  # every window a tie
    upstream = torch.randn_like(nn.functional.max_pool2d(x, 2))
    results = []
    for pool in (panning.models.lenet.max_pool2, lambda t: nn.functional.max_pool2d(t, 2)):
        leaf, weights = x.clone().requires_grad_(True), upstream.clone().requires_grad_(True)
        values = pool(leaf * 1.5)
        (grad,) = torch.autograd.grad(values, leaf, weights, create_graph=True)
        (second,) = torch.autograd.grad((grad * grad).sum(), weights)  # through the gradient's own graph
        results.append((values.detach(), grad.detach(), second))
    for fast, reference in zip(results[0], results[1]):
        assert torch.equal(fast, reference)
    assert results[0][0].is_contiguous()


def test_lenet5_per_example_gradients_with_torch_func() -> None:
    """The CPU pooling is an autograd.Function: torch.func's vmap over grad (per-example
    gradients) must work through it and agree with one backward per example."""
    torch.manual_seed(0)
    model = panning.models.create("lenet5")
    params = {name: p.detach() for name, p in model.named_parameters()}
    images = torch.randn(3, 1, 28, 28)

    def summed(weights: dict[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, weights, (image.unsqueeze(0),)).sum()

    per_example = torch.func.vmap(torch.func.grad(summed), in_dims=(None, 0))(params, images)
    for i, image in enumerate(images):
        (expected,) = torch.autograd.grad(model(image.unsqueeze(0)).sum(), model.conv1.weight)
        torch.testing.assert_close(per_example["conv1.weight"][i], expected)
