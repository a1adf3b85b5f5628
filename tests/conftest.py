"""Shared fixtures: tiny fake copies of CIFAR-10 written into tmp_path."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

FAKE_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
FAKE_TRAIN_PER_CLASS = 3
FAKE_TEST_PER_CLASS = 2


@dataclass(frozen=True)
class FakeSplit:
    """The images (N, 3, 32, 32) uint8 and labels (N,) int64 a loader must return."""

    images: torch.Tensor
    labels: torch.Tensor


@dataclass(frozen=True)
class FakeCopy:
    """One fake copy on disk and what it holds, in the order a loader returns it."""

    root: Path
    train: FakeSplit
    test: FakeSplit


def fake_split(per_class: int, seed: int, grouped: bool) -> FakeSplit:
    """Random pixels; labels grouped by class, or cycling 0..9 like a shuffled batch."""
    classes = torch.arange(len(FAKE_CLASSES))
    if grouped:
        labels = classes.repeat_interleave(per_class)
    else:
        labels = classes.repeat(per_class)
    generator = torch.Generator().manual_seed(seed)
    shape = (len(labels), 3, 32, 32)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    return FakeSplit(images, labels)


def write_pickled(root: Path, seed: int = 0, str_keys: bool = False) -> FakeCopy:
    """Write torchvision's `cifar-10-batches-py` layout under `root`.

    Keys are bytes, as the official Python 2 pickles read with encoding="bytes";
    `str_keys` writes them as str instead, as a Python 3 re-pickle would.
    """
    key = str if str_keys else (lambda name: name.encode())
    train = fake_split(FAKE_TRAIN_PER_CLASS, seed, grouped=False)
    test = fake_split(FAKE_TEST_PER_CLASS, seed + 1, grouped=False)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    names = [f"data_batch_{i}" for i in range(1, 6)]
    train_parts = zip(train.images.chunk(5), train.labels.chunk(5))
    for name, (images, labels) in zip(names, train_parts):
        _write_batch(folder / name, images, labels, key)
    _write_batch(folder / "test_batch", test.images, test.labels, key)
    meta = {
        key("label_names"): [name.encode() for name in FAKE_CLASSES],
        key("num_cases_per_batch"): len(train.labels) // 5,
        key("num_vis"): 3072,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return FakeCopy(root, train, test)


def _write_batch(
    path: Path, images: torch.Tensor, labels: torch.Tensor, key: Callable
) -> None:
    # (N, 3, 32, 32) -> (N, 3072): red plane, then green, then blue, row by row.
    batch = {
        key("batch_label"): path.name.encode(),
        key("data"): images.reshape(len(images), 3072).numpy(),
        key("labels"): labels.tolist(),
        key("filenames"): [f"{i:05d}.png".encode() for i in range(len(labels))],
    }
    path.write_bytes(pickle.dumps(batch))


def write_folder(root: Path, seed: int = 10) -> FakeCopy:
    """Write the image-folder layout `root/cifar10/{train,test}/<class>/NNNN.png`."""
    train = fake_split(FAKE_TRAIN_PER_CLASS, seed, grouped=True)
    test = fake_split(FAKE_TEST_PER_CLASS, seed + 1, grouped=True)
    for split_name, split in (("train", train), ("test", test)):
        for index, (image, label) in enumerate(zip(split.images, split.labels)):
            class_dir = root / "cifar10" / split_name / FAKE_CLASSES[label]
            class_dir.mkdir(parents=True, exist_ok=True)
            # (3, 32, 32) -> (32, 32, 3) for PIL; PNG keeps every pixel exact.
            pixels = image.permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(class_dir / f"{index:04d}.png")
    return FakeCopy(root, train, test)


@pytest.fixture
def fake_pickled(tmp_path: Path) -> FakeCopy:
    """A fake copy in torchvision's pickled layout only."""
    return write_pickled(tmp_path / "data")


@pytest.fixture
def fake_folder(tmp_path: Path) -> FakeCopy:
    """A fake copy in the image-folder layout only."""
    return write_folder(tmp_path / "data")


@pytest.fixture
def fake_both(tmp_path: Path) -> tuple[FakeCopy, FakeCopy]:
    """Both layouts under one root, with different pixels: (pickled, folder)."""
    root = tmp_path / "data"
    return write_pickled(root, seed=0), write_folder(root, seed=10)


@pytest.fixture
def pickled_writer() -> Callable[..., FakeCopy]:
    """`write_pickled`, for tests that write the layout later (a faked download)."""
    return write_pickled
