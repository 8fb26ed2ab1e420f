"""SHA-256 of the masks every registered method finds on a few models: a refactor of the
screening code must leave them bit-identical (issue #18).

    python scripts/mask_fingerprints.py --out before.json     # on the old code
    python scripts/mask_fingerprints.py --compare before.json # on the new code: exit 1 on a change
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

import torch
from torch import nn

import panning

SHAPES = {"lenet5": (1, 28, 28), "lenet300": (1, 28, 28), "resnet20": (3, 32, 32), "user": (3, 16, 16)}


class UserModel(nn.Module):
    """A model the library has never seen: convolution, batch norm, pooling, two linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def fingerprint(model_name: str, method: str) -> str:
    torch.manual_seed(0)
    channels, size, _ = SHAPES[model_name]
    if model_name == "user":
        model: nn.Module = UserModel()
    else:
        model = panning.models.create(model_name, in_channels=channels, image_size=size)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(200, *SHAPES[model_name], generator=generator)
    targets = torch.arange(200) % 10
    masks = panning.prune(model, 0.99, method, data=(inputs, targets), iterations=10, seed=0)
    digest = hashlib.sha256()
    for name in sorted(masks):
        digest.update(name.encode())
        digest.update(masks[name].to(torch.uint8).contiguous().numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the fingerprints to this JSON file")
    parser.add_argument("--compare", help="compare with fingerprints written before; exit 1 on a difference")
    args = parser.parse_args()
    prints = {f"{model}/{method}": fingerprint(model, method) for model in SHAPES for method in panning.method_names()}
    if args.out:
        with open(args.out, "w") as file:
            json.dump(prints, file, indent=1, sort_keys=True)
    if args.compare:
        with open(args.compare) as file:
            before = json.load(file)
        changed = sorted(key for key in before if prints.get(key) != before[key])
        for key in changed:
            print(f"CHANGED {key}")
        print(f"{len(before) - len(changed)} of {len(before)} masks bit-identical")
        sys.exit(1 if changed else 0)
    print(json.dumps(prints, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
