"""Shared fixtures: toy networks whose numbers can be worked out by hand, and small synthetic
datasets written by the tests themselves in the original on-disk formats."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import panning
from panning import data as datasets

# A four-cell grid of LeNet-300 on the synthetic MNIST: one epoch, small batches (grid tests).
SMALL_GRID = {
    "models": ["lenet300"],
    "datasets": ["mnist"],
    "sparsities": [0.9, 0.99],
    "seeds": [0],
    "methods": [{"name": "random"}, {"name": "synflow", "iterations": 5}],
    "training": {"epochs": 1, "val_size": 50, "batch_size": 64},
}

# The development set-up keeps MNIST in ../shared/data (beside the checkout); the library does not
# know that folder, so the tests point $PANNING_DATA at it when nothing else was given.
for _shared in (Path(__file__).resolve().parents[2] / "shared" / "data", Path.cwd().parent / "shared" / "data"):
    if "PANNING_DATA" not in os.environ and (_shared / "mnist").is_dir():
        os.environ["PANNING_DATA"] = str(_shared)


@pytest.fixture(scope="module")
def lenet5() -> torch.nn.Module:
    """LeNet-5-Caffe at seed 0's initialisation (430,500 prunable weights)."""
    torch.manual_seed(0)
    return panning.models.create("lenet5")


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """200 random MNIST-shaped inputs, 20 of each of 10 classes."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(200, 1, 28, 28, generator=generator), torch.arange(200) % 10


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as a gzip IDX file."""
    header = struct.pack(">HBB", 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def write_mnist(folder: Path, train: int = 300, test: int = 100, seed: int = 0) -> Path:
    """A learnable MNIST-format dataset: each class lights up its own block of pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = np.arange(count) % 10
        rng.shuffle(labels)
        images = rng.integers(0, 40, size=(count, 28, 28))
        for i, label in enumerate(labels):
            row, col = divmod(int(label), 5)
            images[i, 4 + row * 10 : 12 + row * 10, 2 + col * 5 : 6 + col * 5] = 230
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$PANNING_DATA pointing at a folder with a synthetic mnist/ inside; no system folders."""
    root = tmp_path / "data"
    write_mnist(root / "mnist")
    monkeypatch.setenv("PANNING_DATA", str(root))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name, info in list(datasets.SPECS.items()):
        monkeypatch.setitem(datasets.SPECS, name, _without_system_dirs(info))
    return root


def _without_system_dirs(info: datasets.DatasetSpec) -> datasets.DatasetSpec:
    import dataclasses

    return dataclasses.replace(info, system_dirs=(), remote=())


class TwoLayerLinear(nn.Module):
    """f(x) = W2 (W1 x), no bias, no activation."""

    def __init__(self, w1: torch.Tensor, w2: torch.Tensor) -> None:
        super().__init__()
        self.fc1 = nn.Linear(w1.shape[1], w1.shape[0], bias=False)
        self.fc2 = nn.Linear(w2.shape[1], w2.shape[0], bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(w1)
            self.fc2.weight.copy_(w2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


class TinyConv(nn.Module):
    """One 2x2 filter over a 1x3x3 image, then a linear read-out of the 2x2 map."""

    def __init__(self, kernel: torch.Tensor, readout: torch.Tensor) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 2, bias=False)
        self.fc = nn.Linear(4, readout.shape[0], bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(kernel.view(1, 1, 2, 2))
            self.fc.weight.copy_(readout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv(x), 1))


class ConvBN(nn.Module):
    """A small conv net with batch norm, a bias and a dropout-free head."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.ReLU(), nn.Linear(8, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))))
