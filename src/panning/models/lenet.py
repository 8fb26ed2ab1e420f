"""LeNet-300-100 and LeNet-5-Caffe, as in the SNIP and GraSP papers."""

from __future__ import annotations

import torch
from torch import nn

from panning.errors import UserError


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
        x = torch.relu(nn.functional.max_pool2d(self.conv1(x), 2))
        x = torch.relu(nn.functional.max_pool2d(self.conv2(x), 2))
        x = torch.relu(self.fc3(torch.flatten(x, 1)))
        return self.fc4(x)
