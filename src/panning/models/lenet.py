"""LeNet-300-100 and LeNet-5-Caffe, as in the SNIP and GraSP papers."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
from torch import nn

from panning.errors import UserError


class _MaxPool2Cpu(torch.autograd.Function):
    """``F.max_pool2d(x, 2)`` of an NCHW CPU tensor, with the same values and gradients.

    PyTorch's CPU pooling kernel for NCHW tensors is slower than its channels-last kernel from 4
    channels on (``benchmarks/training_speed.py --parts pooling``), and its gradient kernel is
    fast for NCHW: the forward pools a channels-last copy, the
    backward scatters through the same indices with the NCHW gradient kernel, which gives
    ``F.max_pool2d``'s gradients bit for bit, ties included (both kernels keep the first maximum
    of a window), and stays differentiable for double backward (GraSP).
    """

    generate_vmap_rule = True  # torch.func transforms (vmap, grad) work through it

    @staticmethod
    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # A channels-last copy by permutation: vmap cannot query channels-last contiguity.
        channels_last = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
        values, indices = nn.functional.max_pool2d(channels_last, 2, return_indices=True)
        return values.contiguous(), indices.contiguous()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor], output: tuple[torch.Tensor, torch.Tensor]) -> None:
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(inputs[0], output[1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _: torch.Tensor | None) -> torch.Tensor:
        x, indices = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad.contiguous(), x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices
        )


def max_pool2(x: torch.Tensor) -> torch.Tensor:
    """2x2 max pooling with stride 2: the values and gradients of ``F.max_pool2d(x, 2)``, faster
    on the CPU. Without autograd (evaluation) it takes the maximum of four strided views; with
    autograd on the CPU and at least 4 channels it pools a channels-last copy and scatters the
    gradient with the NCHW kernel (PyTorch's NCHW pooling kernel is up to 2.4 times slower from 4
    channels on, ``benchmarks/training_speed.py --parts pooling``). On other devices, under a torch function mode (the
    connectivity analysis swaps max for average pooling) and when torch.fx traces a model for
    compaction, it is ``F.max_pool2d`` itself.

    Examples:
        >>> x = torch.randn(2, 4, 7, 6, requires_grad=True)
        >>> torch.equal(max_pool2(x), nn.functional.max_pool2d(x, 2))
        True
        >>> with torch.no_grad():
        ...     torch.equal(max_pool2(x), nn.functional.max_pool2d(x, 2))
        True
    """
    if isinstance(x, torch.fx.Proxy) or x.dim() != 4 or torch.overrides._is_torch_function_mode_enabled():
        return nn.functional.max_pool2d(x, 2)
    if torch.is_grad_enabled() and x.requires_grad:
        # The channels-last kernel vectorises over channels: below 4 the NCHW one is faster
        # (at 4 on 8x8 maps too, by 0.07 ms a call: not worth a second rule).
        if x.device.type != "cpu" or x.shape[1] < 4:
            return nn.functional.max_pool2d(x, 2)
        return _MaxPool2Cpu.apply(x)[0]
    height, width = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    top = torch.maximum(x[:, :, 0:height:2, 0:width:2], x[:, :, 0:height:2, 1:width:2])
    bottom = torch.maximum(x[:, :, 1:height:2, 0:width:2], x[:, :, 1:height:2, 1:width:2])
    return torch.maximum(top, bottom)


class LeNet300(nn.Module):
    """Fully connected 300-100 network on flattened images.

    Examples:
        >>> LeNet300(784, 10)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_features: int = 784, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5Caffe(nn.Module):
    """Caffe's LeNet-5: conv 20 and 50 filters of 5x5 with max pooling, fc 500, then classes.

    Examples:
        >>> LeNet5Caffe(1, 10, 28)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise UserError(f"lenet5 needs images of at least 12x12 pixels, got {image_size}")
        self.conv1 = nn.Conv2d(in_channels, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc3 = nn.Linear(50 * side * side, 500)
        self.fc4 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pooling before the ReLU computes the same values and gradients (max commutes with a
        # monotone function, ties route alike) with the ReLU on a quarter of the elements.
        x = torch.relu(max_pool2(self.conv1(x)))
        x = torch.relu(max_pool2(self.conv2(x)))
        x = torch.relu(self.fc3(torch.flatten(x, 1)))
        return self.fc4(x)
