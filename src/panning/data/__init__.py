"""Datasets of the pruning literature, held whole in memory as tensors.

Look-up order for a dataset's files: an explicit ``data_dir``; ``$PANNING_DATA``; known system
locations (Debian's ``dataset-fashion-mnist`` package, ...); ``~/.cache/panning``. A dataset
missing everywhere is downloaded into the cache when the network is up, verified by checksum
before it is used.

Examples:
    >>> import panning
    >>> panning.data.names()
    ['cifar10', 'cifar100', 'fashion-mnist', 'mnist', 'tiny-imagenet']
"""

from __future__ import annotations

import hashlib
import numbers
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import torch

from panning.data import formats
from panning.data.download import DownloadError, RemoteFile, extract, fetch
from panning.errors import UserError, UserTypeError, check_count
from panning.io import os_fault

Split = tuple[torch.Tensor, torch.Tensor]
# Training examples held out for validation unless a run says otherwise (MNIST's customary 55k/5k).
DEFAULT_VAL_SIZE = 5000
# How inputs are scaled: by the dataset's own mean and std, or to mean 0.5, std 0.5 (the authors' MNIST script).
InputNormalization = Literal["standard", "half"]
INPUT_NORMALIZATIONS: tuple[str, ...] = get_args(InputNormalization)


@dataclass(frozen=True)
class DatasetSpec:
    """What the library knows about a dataset: shape, statistics, files and where to find them."""

    name: str
    in_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool
    find: Callable[[Path], Path | None]
    read: Callable[[Path], dict[str, Split]]
    missing: Callable[[Path], list[str]] | None = None
    remote: tuple[RemoteFile, ...] = ()
    system_dirs: tuple[str, ...] = ()
    how_to_get: str = ""
    # MD5 of the training labels as bytes, in file order: MNIST and Fashion-MNIST share file names,
    # so a folder of one passes for the other; their labels tell them apart.
    label_digest: str | None = None


def _mnist_like(folder: Path) -> Path | None:
    return folder if formats.has_mnist(folder) else None


_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


def _idx_files(base_url: str, md5s: tuple[str, str, str, str]) -> tuple[RemoteFile, ...]:
    """The four IDX files of an MNIST-format dataset (train images and labels, then test), with MD5s."""
    names = [f"{prefix}-{kind}-ubyte.gz" for prefix in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")]
    return tuple(RemoteFile(base_url + name, md5) for name, md5 in zip(names, md5s, strict=True))


SPECS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "mnist",
            1,
            28,
            10,
            (0.1307,),
            (0.3081,),
            False,
            _mnist_like,
            formats.read_mnist,
            missing=formats.missing_mnist,
            remote=_idx_files(
                _MNIST_URL,
                (
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    "9fb629c4189551a2d022fa330f9573f3",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ),
            ),
            system_dirs=("/usr/share/datasets/mnist",),
            how_to_get="put the four IDX .gz files of MNIST in $PANNING_DATA/mnist",
            label_digest="e86ee40d66677c011a9abda399ec8c4d",
        ),
        DatasetSpec(
            "fashion-mnist",
            1,
            28,
            10,
            (0.2860,),
            (0.3530,),
            False,
            _mnist_like,
            formats.read_mnist,
            missing=formats.missing_mnist,
            remote=_idx_files(
                _FASHION_URL,
                (
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    "25c81989df183df01b3e8a0aad5dffbe",
                    "bef4ecab320f06d8554ea6380940ec79",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                ),
            ),
            system_dirs=("/usr/share/datasets/fashion-mnist",),
            how_to_get="`apt-get install dataset-fashion-mnist`, or put the four IDX .gz files in "
            "$PANNING_DATA/fashion-mnist",
            label_digest="3236f6424fc25388b2834cb19942cf7e",
        ),
        DatasetSpec(
            "cifar10",
            3,
            32,
            10,
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
            True,
            lambda f: formats.cifar_folder(f, "cifar10"),
            lambda f: formats.read_cifar(f, "cifar10"),
            missing=lambda f: formats.missing_cifar(f, "cifar10"),
            remote=(
                RemoteFile(
                    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"
                ),
            ),
            how_to_get="unpack cifar-10-python.tar.gz into $PANNING_DATA/cifar10",
        ),
        DatasetSpec(
            "cifar100",
            3,
            32,
            100,
            (0.5071, 0.4865, 0.4409),
            (0.2673, 0.2564, 0.2762),
            True,
            lambda f: formats.cifar_folder(f, "cifar100"),
            lambda f: formats.read_cifar(f, "cifar100"),
            missing=lambda f: formats.missing_cifar(f, "cifar100"),
            remote=(
                RemoteFile(
                    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"
                ),
            ),
            how_to_get="unpack cifar-100-python.tar.gz into $PANNING_DATA/cifar100",
        ),
        DatasetSpec(
            "tiny-imagenet",
            3,
            64,
            200,
            (0.4802, 0.4481, 0.3975),
            (0.2302, 0.2265, 0.2262),
            True,
            formats.tiny_imagenet_folder,
            formats.read_tiny_imagenet,
            remote=(
                RemoteFile("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de"),
            ),
            how_to_get="unzip tiny-imagenet-200.zip into $PANNING_DATA/tiny-imagenet",
        ),
    )
}


def names() -> list[str]:
    """Names of the supported datasets.

    Examples:
        >>> names()
        ['cifar10', 'cifar100', 'fashion-mnist', 'mnist', 'tiny-imagenet']
    """
    return sorted(SPECS)


def spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; an unknown name lists the valid ones.

    Examples:
        >>> spec("cifar10").num_classes
        10
    """
    if not isinstance(name, str):
        raise UserTypeError(f"dataset name must be a str, got {type(name).__name__}")
    if name not in SPECS:
        raise UserError(f"unknown dataset {name!r}; valid: {', '.join(names())}")
    return SPECS[name]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/panning`` or ``~/.cache/panning``: where downloads go.

    Examples:
        >>> cache_dir().name
        'panning'
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "panning"


def candidate_dirs(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for ``name``, in order: a given ``data_dir`` alone (its ``name`` subfolder,
    then itself), otherwise ``$PANNING_DATA/<name>``, the system folders and the cache.

    Examples:
        >>> [p.as_posix() for p in candidate_dirs("mnist", "/data")]
        ['/data/mnist', '/data']
    """
    if data_dir is not None:
        return [Path(data_dir) / name, Path(data_dir)]
    found: list[Path] = []
    if os.environ.get("PANNING_DATA"):
        found.append(Path(os.environ["PANNING_DATA"]) / name)
    found += [Path(d) for d in spec(name).system_dirs]
    found.append(cache_dir() / name)
    return found


def locate(name: str, data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> Path:
    """The folder holding ``name``'s files (see :func:`candidate_dirs`); without ``data_dir`` it
    downloads into the cache if they are nowhere. A given ``data_dir`` is the only place looked at.

    Raises ``UserError`` saying where it looked and how to get the data.

    Examples:
        >>> locate("mnist", "/no/such/folder")
        Traceback (most recent call last):
        ...
        panning.errors.UserError: --data-dir /no/such/folder is not a folder; pass the folder that holds mnist/
    """
    info = spec(name)
    if data_dir is not None:
        return _in_data_dir(name, Path(data_dir))
    searched = candidate_dirs(name, data_dir)
    for folder in searched:
        hit = _look_in(name, folder)
        if hit is not None:
            return hit
    problem = "downloads are off"
    if download and info.remote:
        target = cache_dir() / name
        try:
            target.mkdir(parents=True, exist_ok=True)
            archives = [fetch(remote, target) for remote in info.remote]
            if info.find(target) is None:
                for archive in archives:
                    extract(archive, target)
            hit = info.find(target)
            if hit is not None:
                return hit
            problem = "the downloaded files did not have the expected layout"
        except (DownloadError, OSError) as error:
            problem = str(error)
            if target.is_dir() and not any(target.iterdir()):
                target.rmdir()
    where = ", ".join(str(p) for p in searched)
    raise UserError(
        f"dataset {name!r} not found (looked in {where}; download: {problem}); "
        f"to get it: {info.how_to_get}, or pass --data-dir"
    )


def _look_in(name: str, folder: Path, complain_if_incomplete: bool = True) -> Path | None:
    """``name``'s files in ``folder``, or None; an incomplete copy or an unreadable folder is refused."""
    info = spec(name)
    try:
        if not folder.is_dir():
            return None
        hit = info.find(folder)
        absent = info.missing(folder) if hit is None and info.missing is not None else []
    except PermissionError as error:
        raise os_fault(error.filename or folder, error, "read") from None
    if absent and complain_if_incomplete:
        raise UserError(
            f"{folder} holds an incomplete copy of {name}: {', '.join(absent)} missing; add them or remove the folder"
        )
    return hit


def _in_data_dir(name: str, data_dir: Path) -> Path:
    """An explicit data folder is the only place looked at: a silent fallback would hide which data was used."""
    if not data_dir.is_dir():
        raise UserError(f"--data-dir {data_dir} is not a folder; pass the folder that holds {name}/")
    hit = _look_in(name, data_dir / name) or _look_in(name, data_dir, complain_if_incomplete=False)
    if hit is not None:
        return hit
    raise UserError(
        f"--data-dir {data_dir} holds no {name} (looked in {data_dir / name} and {data_dir}); "
        f"to get it: {spec(name).how_to_get}, or leave out --data-dir to use $PANNING_DATA, the system folders or a "
        "download"
    )


@dataclass
class Dataset:
    """A whole dataset in memory: uint8 images (N, C, H, W) and int64 labels per split.

    ``train`` excludes the validation examples, which are carved out of the original
    training set with a seeded permutation.
    """

    spec: DatasetSpec
    train: Split
    val: Split
    test: Split
    normalization: InputNormalization = "standard"
    split_seed: int = 0
    source: str = ""
    _stats: tuple[torch.Tensor, torch.Tensor] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.normalization == "standard":
            mean, std = self.spec.mean, self.spec.std
        elif self.normalization == "half":
            mean, std = (0.5,) * self.spec.in_channels, (0.5,) * self.spec.in_channels
        else:
            raise UserError(f"unknown normalization {self.normalization!r}; valid: {', '.join(INPUT_NORMALIZATIONS)}")
        self._stats = (torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train[0].shape[1:])  # type: ignore[return-value]

    def split(self, name: str) -> Split:
        """One of ``train``, ``val``, ``test``."""
        if name not in ("train", "val", "test"):
            raise UserError(f"unknown split {name!r}; valid: train, val, test")
        return getattr(self, name)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (or floats in [0, 1]) to normalised float32 on the same device."""
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 255.0
        mean, std = (s.to(x.device) for s in self._stats)
        return (x - mean) / std

    def batches(
        self,
        split: str,
        batch_size: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        augment: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield normalised ``(inputs, targets)`` on ``device``; shuffled when a generator is given.

        Augmentation (random crop with 4-pixel zero padding and horizontal flip) draws from
        ``generator`` too, so a saved generator state replays the same epoch.
        """
        batch_size = check_count("batch_size", batch_size)
        images, labels = self.split(split)
        count = len(labels)
        order = torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
        for start in range(0, count, batch_size):
            index = order[start : start + batch_size]
            x = images[index].to(device)
            if augment:
                if generator is None:
                    raise UserError("augmentation needs a generator for its random draws")
                x = random_crop_flip(x, generator)
            yield self.normalize(x), labels[index].to(device)

    def tensors(self, split: str = "train", device: torch.device | str = "cpu") -> Split:
        """A whole split, normalised: ``(inputs, targets)``."""
        images, labels = self.split(split)
        return self.normalize(images.to(device)), labels.to(device)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop after zero padding, and a horizontal flip with probability 1/2, per image.

    Random draws come from ``generator`` (on the CPU) so results do not depend on the device.

    Examples:
        >>> x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
        >>> random_crop_flip(x, torch.Generator().manual_seed(0)).shape
        torch.Size([1, 1, 4, 4])
    """
    batch, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator).to(images.device)
    flips = (torch.rand(batch, generator=generator) < 0.5).to(images.device)
    rows = offsets[0][:, None] + torch.arange(height, device=images.device)
    cols = offsets[1][:, None] + torch.arange(width, device=images.device)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch_index = torch.arange(batch, device=images.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], cols[:, None, :]]
    return cropped.permute(0, 3, 1, 2).contiguous()


def load(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    val_size: int = DEFAULT_VAL_SIZE,
    split_seed: int = 0,
    normalization: InputNormalization = "standard",
    download: bool = True,
) -> Dataset:
    """Load a dataset by name, with a seeded validation split of ``val_size`` training examples.

    Examples:
        >>> data = load("mnist")  # doctest: +SKIP
        >>> len(data.train[1]), len(data.val[1]), len(data.test[1])  # doctest: +SKIP
        (55000, 5000, 10000)
    """
    info = spec(name)
    if isinstance(split_seed, bool) or not isinstance(split_seed, numbers.Integral):
        raise UserTypeError(f"split_seed must be an integer, got {split_seed!r}")
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise UserTypeError(f"data_dir must be a path, got {type(data_dir).__name__}")
    folder = locate(name, data_dir, download=download)
    arrays = info.read(folder)
    _check_labels(info, folder, arrays)
    train, val = _split_off_validation(arrays["train"], val_size, split_seed)
    return Dataset(info, train, val, arrays["test"], normalization, split_seed, source=str(folder))


def _check_labels(info: DatasetSpec, folder: Path, arrays: Mapping[str, Split]) -> None:
    """Refuse files whose labels cannot be the dataset's: empty, out of range, or another dataset's."""
    for split, (_, labels) in arrays.items():
        if len(labels) == 0:
            raise UserError(f"{folder}: the {split} split holds no examples; the files are corrupt")
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= info.num_classes:
            label = low if low < 0 else high
            raise UserError(
                f"{folder}: {split} label {label} is out of range for {info.num_classes} classes; the files are corrupt"
            )
    digest = hashlib.md5(arrays["train"][1].to(torch.uint8).numpy().tobytes(), usedforsecurity=False).hexdigest()
    for other in SPECS.values():
        if other.name != info.name and other.label_digest == digest:
            raise UserError(
                f"{folder} holds {other.name}, not {info.name} (its labels are {other.name}'s); point --data-dir "
                f"or $PANNING_DATA at the folder holding {info.name}/, or ask for --dataset {other.name}"
            )


def _split_off_validation(train: Split, val_size: int, split_seed: int) -> tuple[Split, Split]:
    """The training split without, and the validation split of, ``val_size`` seeded training examples."""
    images, labels = train
    if isinstance(val_size, bool) or not isinstance(val_size, int) or not 0 <= val_size < len(labels):
        raise UserError(f"val_size must be an integer in [0, {len(labels)}), got {val_size!r}")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(split_seed))
    train_index, val_index = order[: len(order) - val_size].sort().values, order[len(order) - val_size :].sort().values
    return (images[train_index], labels[train_index]), (images[val_index], labels[val_index])


def _no_files(folder: Path) -> Path | None:
    return None


def _not_on_disk(folder: Path) -> dict[str, Split]:
    raise UserError("a dataset made from tensors has no files to read; pass the Dataset itself")


def _checked_split(role: str, split: Split) -> Split:
    """``(images, labels)`` of :func:`from_tensors`: N x C x H x W images, uint8 or float."""
    if not (isinstance(split, (tuple, list)) and len(split) == 2 and all(isinstance(t, torch.Tensor) for t in split)):
        raise UserTypeError(f"{role} must be a pair of tensors (images, labels)")
    images, labels = split
    if images.dim() != 4:
        raise UserError(f"{role} images must be N x C x H x W, got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
        raise UserTypeError(f"{role} images must be uint8 pixels or floats, got {images.dtype}")
    if images.dtype.is_floating_point and not bool(torch.isfinite(images).all()):
        raise UserError(f"{role} images hold NaN or infinite values")
    if images.dim() == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        warnings.warn(
            f"{role} images of shape {tuple(images.shape)} are read as {images.shape[1]} channels of "
            f"{images.shape[2]} x {images.shape[3]}; if they are N x H x W x C, pass images.permute(0, 3, 1, 2)",
            stacklevel=3,
        )
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise UserTypeError(f"{role} labels must be a 1-D tensor of integer class labels")
    if len(images) != len(labels) or not len(labels):
        raise UserError(f"{role} has {len(images)} images and {len(labels)} labels; give the same, non-zero number")
    if int(labels.min()) < 0:
        raise UserError(f"{role} labels must be class indices from 0, got {int(labels.min())}")
    return images.detach().cpu(), labels.detach().cpu().long()


def from_tensors(
    train: Split,
    test: Split,
    name: str = "custom",
    num_classes: int | None = None,
    val_size: int | None = None,
    split_seed: int = 0,
    augment: bool = False,
) -> Dataset:
    """A dataset of your own images, for :func:`panning.prune` and :func:`panning.training.train`.

    ``train`` and ``test`` are ``(images, labels)``: N x C x H x W images, uint8 pixels (read as
    [0, 1]) or floats on one scale (in [0, 1] beside uint8 pixels), and integer labels from 0.
    ``val_size`` training examples (by default a tenth, at most 5,000) are held out for validation
    with a seeded permutation, as for the built-in datasets; ``name`` (not one of the built-in
    datasets') names it in run records; the per-channel mean and standard deviation of the
    remaining training images give the ``"standard"`` normalisation.
    ``augment`` turns on random crops and flips in training by default (as for CIFAR).

    Examples:
        >>> images, labels = torch.rand(60, 1, 8, 8), torch.arange(60) % 3
        >>> data = from_tensors((images, labels), (images[:9], labels[:9]), val_size=12)
        >>> data.num_classes, data.input_shape, len(data.train[1]), len(data.val[1])
        (3, (1, 8, 8), 48, 12)
    """
    if not isinstance(name, str) or not name or name in SPECS:
        raise UserError(f"name must be a non-empty str other than a built-in dataset's, got {name!r}")
    for label, value in (("split_seed", split_seed), ("val_size", val_size), ("num_classes", num_classes)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise UserTypeError(f"{label} must be an integer, got {value!r}")
    if not isinstance(augment, bool):
        raise UserTypeError(f"augment must be True or False, got {augment!r}")
    train = _checked_split("train", train)
    test = _checked_split("test", test)
    for role, floats, pixels in (("train", train[0], test[0]), ("test", test[0], train[0])):
        # uint8 pixels are read as [0, 1]; floats as they are: beside pixels they must be on that scale.
        if (
            pixels.dtype == torch.uint8
            and floats.is_floating_point()
            and not 0 <= float(floats.min()) <= float(floats.max()) <= 1
        ):
            raise UserError(
                f"{role} images are floats in [{float(floats.min()):g}, {float(floats.max()):g}] while the other split "
                "is uint8 pixels, read as [0, 1]: divide the floats by 255, or give both splits as uint8"
            )
    val_size = min(DEFAULT_VAL_SIZE, len(train[1]) // 10) if val_size is None else int(val_size)
    if train[0].shape[1:] != test[0].shape[1:]:
        raise UserError(f"train images are {tuple(train[0].shape[1:])} but test images {tuple(test[0].shape[1:])}")
    labels_max = int(max(train[1].max(), test[1].max()))
    classes = labels_max + 1 if num_classes is None else int(num_classes)
    if classes <= labels_max:
        raise UserError(f"num_classes must be an integer above the largest label {labels_max}, got {num_classes!r}")
    if int(train[1].min()) > 0:
        warnings.warn(
            f"no training label is 0 (the smallest is {int(train[1].min())}), so class 0 never occurs: "
            "if the labels count from 1, pass labels - 1",
            stacklevel=2,
        )
    kept, val = _split_off_validation(train, val_size, int(split_seed))
    pixels = kept[0].float() / 255.0 if kept[0].dtype == torch.uint8 else kept[0].float()
    channels, height, width = (int(d) for d in kept[0].shape[1:])
    info = DatasetSpec(
        name,
        channels,
        height if height == width else 0,  # the registered models take square images (0: refused there)
        classes,
        tuple(float(m) for m in pixels.mean(dim=(0, 2, 3))),
        tuple(max(float(s), 1e-6) for s in pixels.std(dim=(0, 2, 3))),
        augment,
        _no_files,
        _not_on_disk,
    )
    return Dataset(info, kept, val, test, "standard", int(split_seed), source="tensors")


def class_balanced_batch(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    samples_per_class: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``samples_per_class`` random examples of every class present in ``targets``.

    A class with fewer examples contributes all it has (the caller may warn).

    Examples:
        >>> x, y = torch.arange(6.0).view(6, 1), torch.tensor([0, 0, 0, 1, 1, 1])
        >>> _, picked = class_balanced_batch(x, y, 2, torch.Generator().manual_seed(0))
        >>> picked.tolist()
        [0, 0, 1, 1]
    """
    order = torch.randperm(len(targets), generator=generator).to(targets.device)
    shuffled = targets[order]
    chosen = []
    for cls in torch.unique(targets).tolist():
        chosen.append(order[shuffled == cls][:samples_per_class])
    index = torch.cat(chosen)
    return inputs[index], targets[index]


__all__ = [
    "DEFAULT_VAL_SIZE",
    "INPUT_NORMALIZATIONS",
    "SPECS",
    "Dataset",
    "DatasetSpec",
    "InputNormalization",
    "cache_dir",
    "candidate_dirs",
    "class_balanced_batch",
    "from_tensors",
    "load",
    "locate",
    "names",
    "random_crop_flip",
    "spec",
]
