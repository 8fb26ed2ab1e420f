"""Readers for the on-disk formats of the standard datasets, returning uint8 NCHW tensors."""

from __future__ import annotations

import gzip
import pickle
import zlib
from pathlib import Path

import numpy as np
import torch

from panning.errors import UserError
from panning.io import os_fault

Arrays = tuple[torch.Tensor, torch.Tensor]


def _corrupt(path: Path, why: str) -> UserError:
    return UserError(f"{path} is corrupt or truncated ({why}): delete it and fetch the dataset again")


def _unreadable_or_corrupt(path: Path, error: BaseException) -> UserError:
    """A file we may not read is not a corrupt one: never advise deleting good data."""
    if isinstance(error, (PermissionError, IsADirectoryError)):
        return os_fault(path, error, "read")
    return _corrupt(path, f"{type(error).__name__}: {error}")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array.

    Examples:
        >>> import tempfile, pathlib, struct
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x-idx1-ubyte"
        >>> _ = p.write_bytes(struct.pack(">HBBI", 0, 8, 1, 3) + bytes([1, 2, 3]))
        >>> read_idx(p).tolist()
        [1, 2, 3]
    """
    try:
        raw = path.read_bytes()
        raw = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise _unreadable_or_corrupt(path, error) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise _corrupt(path, "not an unsigned-byte IDX file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _corrupt(path, "header cut short")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape)) if shape else 0
    if len(raw) != header + count:
        raise _corrupt(path, f"expected {count} values for shape {shape}, found {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def has_mnist(folder: Path) -> bool:
    """True when ``folder`` holds the four MNIST-format files (gzipped or not)."""
    return all(_find(folder, stem) is not None for pair in MNIST_FILES.values() for stem in pair)


def missing_mnist(folder: Path) -> list[str]:
    """The MNIST-format files absent from ``folder`` when some are present (an incomplete copy)."""
    stems = [stem for pair in MNIST_FILES.values() for stem in pair]
    absent = [f"{stem}.gz" for stem in stems if _find(folder, stem) is None]
    return absent if len(absent) < len(stems) else []


def missing_cifar(folder: Path, name: str) -> list[str]:
    """The CIFAR batch files absent from ``folder`` (or its original subfolder) when some are present."""
    sub, train, test, _ = CIFAR_LAYOUT[name]
    for candidate in (folder, folder / sub):
        absent = [f for f in train + test if not (candidate / f).is_file()]
        if len(absent) < len(train + test):
            return absent
    return []


def read_mnist(folder: Path) -> dict[str, Arrays]:
    """Read MNIST or Fashion-MNIST IDX files from ``folder``: split -> (images N1HW, labels)."""
    out: dict[str, Arrays] = {}
    for split, (image_stem, label_stem) in MNIST_FILES.items():
        image_path, label_path = _find(folder, image_stem), _find(folder, label_stem)
        assert image_path is not None and label_path is not None
        images, labels = read_idx(image_path), read_idx(label_path)
        if images.ndim != 3:
            raise _corrupt(image_path, f"an IDX file of {images.ndim} dimensions, not images")
        if labels.ndim != 1:
            raise _corrupt(label_path, f"an IDX file of {labels.ndim} dimensions, not labels")
        if len(images) != len(labels):
            raise UserError(
                f"{image_path.name} holds {len(images)} images but {label_path.name} {len(labels)} labels in "
                f"{folder}: one of them is another split's or damaged; fetch the dataset again"
            )
        out[split] = (torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
    return out


CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}


def cifar_folder(folder: Path, name: str) -> Path | None:
    """The folder that holds the CIFAR batches: ``folder`` itself or its original subfolder."""
    sub, train, test, _ = CIFAR_LAYOUT[name]
    for candidate in (folder, folder / sub):
        if all((candidate / f).is_file() for f in train + test):
            return candidate
    return None


def _read_pickle(path: Path, label_key: bytes) -> Arrays:
    try:
        with path.open("rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        data, labels = np.asarray(batch[b"data"]), np.asarray(batch[label_key])
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as error:
        raise _unreadable_or_corrupt(path, error) from None
    except (ImportError, AttributeError) as error:  # a pickle of objects this Python cannot rebuild
        raise _corrupt(path, f"not a batch of plain arrays ({error})") from None
    # Checked before any cast: floats in [0, 1] would become zeros, NaN labels a huge negative class.
    if data.dtype.kind not in "ui" or (data.size and (data.min() < 0 or data.max() > 255)):
        raise _corrupt(path, f"its data must be bytes 0-255, got {data.dtype} values")
    if (labels.dtype.kind not in "ui" and labels.size) or labels.ndim != 1:  # [] reads as float64
        raise _corrupt(path, f"its labels must be a list of integers, got {labels.dtype} of shape {labels.shape}")
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise _corrupt(path, f"data of shape {data.shape} with {len(labels)} labels")
    images = torch.from_numpy(data.astype(np.uint8).reshape(-1, 3, 32, 32))
    return images, torch.from_numpy(labels.astype(np.int64))


def read_cifar(folder: Path, name: str) -> dict[str, Arrays]:
    """Read the python pickle batches of CIFAR-10 or CIFAR-100 from ``folder``."""
    _, train, test, label_key = CIFAR_LAYOUT[name]
    out: dict[str, Arrays] = {}
    for split, files in (("train", train), ("test", test)):
        parts = [_read_pickle(folder / f, label_key) for f in files]
        out[split] = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    return out


def tiny_imagenet_folder(folder: Path) -> Path | None:
    """The ``tiny-imagenet-200`` folder inside ``folder`` (or ``folder`` itself)."""
    for candidate in (folder, folder / "tiny-imagenet-200"):
        if (candidate / "wnids.txt").is_file() and (candidate / "val" / "val_annotations.txt").is_file():
            return candidate
    return None


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as error:
        raise _unreadable_or_corrupt(path, error) from None
    if pixels.shape != (TINY_IMAGENET_SIZE, TINY_IMAGENET_SIZE, 3):
        raise _corrupt(
            path, f"a {pixels.shape[1]} x {pixels.shape[0]} image, not {TINY_IMAGENET_SIZE} x {TINY_IMAGENET_SIZE}"
        )
    return pixels


TINY_IMAGENET_SIZE = 64


def read_tiny_imagenet(folder: Path) -> dict[str, Arrays]:
    """Read Tiny-ImageNet's standard layout; its labelled ``val`` split serves as the test set."""
    wnids = [line.strip() for line in (folder / "wnids.txt").read_text().splitlines() if line.strip()]
    index = {wnid: i for i, wnid in enumerate(wnids)}
    train_images, train_labels = [], []
    for wnid in wnids:
        for path in sorted((folder / "train" / wnid / "images").glob("*")):
            train_images.append(_read_image(path))
            train_labels.append(index[wnid])
    test_images, test_labels = [], []
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 2:
            continue
        if fields[1] not in index:
            raise _corrupt(folder / "val" / "val_annotations.txt", f"unknown class {fields[1]!r}")
        test_images.append(_read_image(folder / "val" / "images" / fields[0]))
        test_labels.append(index[fields[1]])
    if not train_images or not test_images:
        raise _corrupt(folder, "no images found under train/ or val/images/")

    def stack(images: list[np.ndarray], labels: list[int]) -> Arrays:
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels)

    return {"train": stack(train_images, train_labels), "test": stack(test_images, test_labels)}
