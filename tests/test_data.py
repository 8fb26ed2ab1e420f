from __future__ import annotations

import gzip
import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import panning
from conftest import write_idx, write_mnist
from panning import data as datasets
from panning.data.download import DownloadError, RemoteFile, fetch


def test_mnist_format_loads_with_a_seeded_validation_split(data_root: Path) -> None:
    data = datasets.load("mnist", val_size=50)
    assert data.train[0].shape == (250, 1, 28, 28) and data.train[0].dtype == torch.uint8
    assert len(data.val[1]) == 50 and len(data.test[1]) == 100
    again = datasets.load("mnist", val_size=50)
    assert torch.equal(data.val[0], again.val[0])
    other = datasets.load("mnist", val_size=50, split_seed=1)
    assert not torch.equal(data.val[1], other.val[1])
    x, y = next(data.batches("train", 32))
    assert x.dtype == torch.float32 and x.shape == (32, 1, 28, 28) and y.dtype == torch.int64
    assert data.source == str(data_root / "mnist")


def test_lookup_order_prefers_data_dir_then_env_then_cache(data_root: Path, tmp_path: Path) -> None:
    explicit = tmp_path / "explicit"
    write_mnist(explicit / "mnist", train=120, test=30, seed=1)
    assert datasets.locate("mnist", explicit) == explicit / "mnist"
    assert datasets.locate("mnist") == data_root / "mnist"
    cached = datasets.cache_dir() / "fashion-mnist"
    write_mnist(cached, train=60, test=20)
    assert datasets.locate("fashion-mnist") == cached


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(data_root: Path) -> None:
    with pytest.raises(ValueError) as info:
        datasets.load("fashion-mnist")
    message = str(info.value)
    assert str(data_root / "fashion-mnist") in message and "dataset-fashion-mnist" in message
    assert "\n" not in message


def test_an_explicit_data_dir_is_the_only_place_looked_at(data_root: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"--data-dir {empty} holds no mnist"):
        datasets.locate("mnist", empty)  # although $PANNING_DATA has it
    with pytest.raises(ValueError, match="is not a folder"):
        datasets.locate("mnist", tmp_path / "nowhere")
    (empty / "mnist").mkdir()
    (empty / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(ValueError, match="incomplete copy of mnist"):
        datasets.locate("mnist", empty)


def test_a_file_that_cannot_be_read_is_not_called_corrupt(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = data_root / "mnist" / "train-labels-idx1-ubyte.gz"
    read_bytes = Path.read_bytes

    def refuse(self: Path) -> bytes:
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(ValueError) as error:
        datasets.load("mnist", val_size=10)
    assert f"cannot read {locked}: Permission denied" in str(error.value)
    assert "corrupt" not in str(error.value) and "delete" not in str(error.value)


def test_an_unreadable_data_folder_is_named(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(folder: Path) -> None:
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr(datasets.formats, "has_mnist", refuse)
    with pytest.raises(ValueError, match=f"cannot read {data_root / 'mnist'}: Permission denied; fix its permissions"):
        datasets.load("mnist", val_size=10)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "count", "deflate"])
def test_corrupt_files_are_named(data_root: Path, damage: str) -> None:
    path = data_root / "mnist" / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "garbage":
        path.write_bytes(b"not a gzip file at all")
    elif damage == "count":
        path.write_bytes(gzip.compress(raw[:-28]))
    else:
        compressed = bytearray(path.read_bytes())
        compressed[30:60] = bytes(255 - b for b in compressed[30:60])  # a broken deflate stream
        path.write_bytes(bytes(compressed))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz is corrupt or truncated"):
        datasets.load("mnist", val_size=10)


def test_a_label_file_of_the_other_split_names_both_files(data_root: Path) -> None:
    folder = data_root / "mnist"
    (folder / "train-labels-idx1-ubyte.gz").write_bytes((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(
        ValueError, match="train-images-idx3-ubyte.gz holds 300 images but train-labels-idx1-ubyte.gz 100"
    ):
        datasets.load("mnist", val_size=10)


def _write_cifar(folder: Path, name: str, per_file: int = 20) -> None:
    layout = datasets.formats.CIFAR_LAYOUT[name]
    sub, train, test, key = layout
    target = folder / sub
    target.mkdir(parents=True)
    rng = np.random.default_rng(0)
    classes = 10 if name == "cifar10" else 100
    for file in train + test:
        batch = {
            b"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
            key: list(rng.integers(0, classes, per_file)),
        }
        (target / file).write_bytes(pickle.dumps(batch))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickles(data_root: Path, name: str) -> None:
    _write_cifar(data_root / name, name)
    data = datasets.load(name, val_size=10)
    files = len(datasets.formats.CIFAR_LAYOUT[name][1])
    assert data.train[0].shape == (20 * files - 10, 3, 32, 32)
    assert data.test[0].shape == (20, 3, 32, 32)
    assert data.spec.augment


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, -1]}, "test label -1 is out of range"),
        ({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, "the test split holds no examples"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1.0, float("nan")]}, "labels must be a list of integers"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [[1], [2]]}, "labels must be a list of integers"),
        ({b"data": np.full((2, 3072), 0.5), b"labels": [1, 2]}, "data must be bytes 0-255, got float64"),
        ({b"data": np.full((2, 3072), 300), b"labels": [1, 2]}, "data must be bytes 0-255"),
    ],
)
def test_a_damaged_cifar_batch_is_one_line(data_root: Path, batch: dict[bytes, Any], message: str) -> None:
    _write_cifar(data_root / "cifar10", "cifar10")
    (data_root / "cifar10" / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match=message):
        datasets.load("cifar10", val_size=10)


def test_tiny_imagenet_folder_layout(data_root: Path) -> None:
    from PIL import Image

    root = data_root / "tiny-imagenet" / "tiny-imagenet-200"
    wnids = ["n01", "n02"]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for i, wnid in enumerate(wnids):
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for j in range(3):
            Image.fromarray(np.full((64, 64, 3), 40 * i + j, np.uint8)).save(folder / f"{wnid}_{j}.JPEG", "JPEG")
        Image.fromarray(np.full((64, 64, 3), 9, np.uint8)).save(root / "val" / "images" / f"val_{i}.JPEG", "JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    data = datasets.load("tiny-imagenet", val_size=2)
    assert data.train[0].shape == (4, 3, 64, 64) and data.test[1].tolist() == [0, 1]
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "train" / "n02" / "images" / "n02_1.JPEG", "JPEG")
    with pytest.raises(ValueError, match=r"n02_1.JPEG is corrupt or truncated \(a 32 x 32 image, not 64 x 64\)"):
        datasets.load("tiny-imagenet", val_size=2)


def test_crop_and_flip_are_seeded_and_shape_preserving() -> None:
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    a = datasets.random_crop_flip(images, torch.Generator().manual_seed(0))
    b = datasets.random_crop_flip(images, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == images.shape
    # Every output pixel is an input pixel or padding zero.
    assert set(a.unique().tolist()) <= set(images.unique().tolist()) | {0.0}


def test_download_verifies_the_checksum_before_the_file_appears(tmp_path: Path) -> None:
    source = tmp_path / "remote.bin"
    source.write_bytes(b"payload")
    good = RemoteFile(source.as_uri(), hashlib.md5(b"payload").hexdigest())
    target = tmp_path / "cache"
    target.mkdir()
    assert fetch(good, target).read_bytes() == b"payload"
    bad = RemoteFile(source.as_uri(), "0" * 32)
    (target / "remote.bin").unlink()
    with pytest.raises(DownloadError, match="checksum"):
        fetch(bad, target)
    assert list(target.iterdir()) == []
    with pytest.raises(DownloadError, match="could not download"):
        fetch(RemoteFile((tmp_path / "absent.bin").as_uri(), "0" * 32), target)


def test_class_balanced_batch_draws_afresh() -> None:
    x, y = torch.arange(100.0).view(100, 1), torch.arange(100) % 5
    generator = torch.Generator().manual_seed(0)
    first = datasets.class_balanced_batch(x, y, 3, generator)
    second = datasets.class_balanced_batch(x, y, 3, generator)
    assert first[1].bincount().tolist() == [3] * 5
    assert not torch.equal(first[0], second[0])


def test_idx_header_with_wrong_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x-idx1-ubyte.gz"
    write_idx(path, np.zeros(3, np.uint8))
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[2] = 0x0D  # float data
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ValueError, match="unsigned-byte"):
        datasets.formats.read_idx(path)


def test_an_incomplete_folder_names_the_missing_files(data_root: Path) -> None:
    (data_root / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match="incomplete copy of mnist: t10k-labels-idx1-ubyte.gz missing"):
        datasets.locate("mnist")


def test_a_failed_download_leaves_no_cache_folder(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    absent = RemoteFile((data_root / "nowhere" / "cifar-10-python.tar.gz").as_uri(), "0" * 32)
    monkeypatch.setitem(datasets.SPECS, "cifar10", dataclasses.replace(datasets.SPECS["cifar10"], remote=(absent,)))
    with pytest.raises(ValueError, match="could not download"):
        datasets.locate("cifar10")
    assert not (datasets.cache_dir() / "cifar10").exists()


def _own_images(count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images of 3 classes, each lighting its own row of pixels."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 60, (count, 1, 9, 9), generator=generator, dtype=torch.uint8)
    labels = torch.arange(count) % 3
    images[torch.arange(count), 0, labels * 3, :] = 250
    return images, labels


def test_own_tensors_split_like_a_named_dataset_and_normalise_by_their_own_statistics() -> None:
    images, labels = _own_images(90)
    data = datasets.from_tensors((images, labels), _own_images(30, seed=1), val_size=15, split_seed=4)
    again = datasets.from_tensors((images, labels), _own_images(30, seed=1), val_size=15, split_seed=4)
    assert (data.num_classes, data.input_shape, len(data.train[1]), len(data.val[1])) == (3, (1, 9, 9), 75, 15)
    assert torch.equal(data.val[0], again.val[0]) and not torch.equal(data.val[0], data.train[0][:15])
    normalised = data.tensors("train")[0]
    assert abs(float(normalised.mean())) < 1e-4 and abs(float(normalised.std()) - 1) < 1e-2
    as_floats = datasets.from_tensors(
        (images.float() / 255, labels), _own_images(30, seed=1), val_size=15, split_seed=4
    )
    assert torch.allclose(as_floats.tensors("test")[0], data.tensors("test")[0], atol=1e-4)


@pytest.mark.parametrize(
    ("train", "test", "options", "error", "message"),
    [
        ((torch.rand(10, 9, 9), torch.arange(10) % 3), None, {}, ValueError, "N x C x H x W"),
        ((torch.rand(10, 1, 9, 9), torch.rand(10)), None, {}, TypeError, "integer class labels"),
        ((torch.rand(10, 1, 9, 9), torch.arange(9) % 3), None, {}, ValueError, "10 images and 9 labels"),
        ((torch.randint(0, 9, (10, 1, 9, 9)), torch.arange(10) % 3), None, {}, TypeError, "uint8 pixels or floats"),
        (
            (torch.rand(10, 1, 9, 9), torch.arange(10) % 3),
            (torch.rand(4, 1, 8, 8), torch.arange(4)),
            {},
            ValueError,
            "test images",
        ),
        (
            (torch.rand(10, 1, 9, 9), torch.arange(10) % 3),
            None,
            {"num_classes": 3, "val_size": 10},
            ValueError,
            "val_size must be an integer in",
        ),
        (
            (torch.rand(10, 1, 9, 9), torch.arange(10) % 3),
            None,
            {"num_classes": 2},
            ValueError,
            "above the largest label 2",
        ),
        ((torch.rand(10, 1, 9, 9), torch.arange(10) % 3), None, {"name": "mnist"}, ValueError, "other than a built-in"),
        ((torch.rand(10, 1, 9, 9) * float("nan"), torch.arange(10) % 3), None, {}, ValueError, "NaN or infinite"),
        (
            (torch.randint(0, 256, (10, 1, 9, 9), dtype=torch.uint8), torch.arange(10) % 3),
            (torch.rand(4, 1, 9, 9) * 255, torch.arange(4) % 3),
            {},
            ValueError,
            r"test images are floats in \[.*\] while the other split is uint8 pixels, read as \[0, 1\]",
        ),
        ((torch.rand(10, 1, 9, 9), torch.arange(10) % 3), None, {"augment": "no"}, TypeError, "augment must be"),
        ((torch.rand(10, 1, 9, 9), torch.arange(10) % 3), None, {"split_seed": "a"}, TypeError, "split_seed must"),
    ],
)
def test_own_tensors_that_cannot_be_a_dataset_are_refused_with_the_reason(
    train: Any, test: Any, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        datasets.from_tensors(train, test or (torch.rand(4, 1, 9, 9), torch.arange(4) % 3), **options)


def test_own_tensors_that_look_mislaid_are_warned_about() -> None:
    images, labels = torch.rand(20, 1, 8, 8), torch.arange(20) % 3
    with pytest.warns(UserWarning, match=r"if they are N x H x W x C, pass images.permute\(0, 3, 1, 2\)"):
        datasets.from_tensors((images.permute(0, 2, 3, 1), labels), (images[:4].permute(0, 2, 3, 1), labels[:4]))
    with pytest.warns(UserWarning, match="if the labels count from 1, pass labels - 1"):
        data = datasets.from_tensors((images, labels + 1), (images[:4], labels[:4] + 1))
    assert data.num_classes == 4  # still as given: a class may be absent on purpose


def test_a_model_and_data_of_ones_own_are_screened_and_trained_with_pruned_weights_kept_at_zero(
    tmp_path: Path,
) -> None:
    data = datasets.from_tensors(_own_images(240), _own_images(60, seed=1), val_size=30)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(81, 24), torch.nn.ReLU(), torch.nn.Linear(24, 3))
    masks = panning.prune(net, 0.9, "synflow", data=data, iterations=5)
    config = panning.training.TrainConfig(model="mine", dataset=data.name, epochs=4, batch_size=30, device="cpu")
    metrics = panning.training.train(net, data, config, tmp_path / "run", masks=masks, progress=False)
    assert metrics["test_accuracy"] > 0.9  # the classes are one bright row apart
    exported = load_file(tmp_path / "run" / "model.safetensors")
    for name, mask in masks.items():
        assert exported[name].shape == mask.shape and not exported[name][~mask].any(), f"{name} kept pruned weights"


def test_own_images_that_are_not_square_train_a_model_of_ones_own_but_no_registered_one() -> None:
    images, labels = torch.rand(50, 1, 6, 9), torch.arange(50) % 2
    data = datasets.from_tensors((images, labels), (images[:5], labels[:5]))
    assert (len(data.train[1]), len(data.val[1]), data.input_shape) == (45, 5, (1, 6, 9))  # a tenth held out
    with pytest.raises(ValueError, match="registered models take square images"):
        panning.training.create_model(panning.training.TrainConfig(model="lenet5"), data)
