"""CIFAR-10 from a local copy to normalised batches.

This module owns finding CIFAR-10 on disk (torchvision's pickled batches or an
image-folder copy), decoding it once into a cache of uint8 tensors, and the
deterministic data order that every training run draws its batches from.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CIFAR10_CLASSES: tuple[str, ...] = (
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
NORMALIZE_MEAN = (0.5, 0.5, 0.5)
NORMALIZE_STD = (0.5, 0.5, 0.5)

_PICKLED_DIR = "cifar-10-batches-py"
_FOLDER_DIR = "cifar10"
_CACHE_DIR = ".surgery-cache"
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_BATCHES = ("test_batch",)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_IMAGE_SIZE = 32
_CLASS_INDEX = {name: index for index, name in enumerate(CIFAR10_CLASSES)}
# Part of every cache key: bump it when decoding changes so old caches are not reused.
_CACHE_VERSION = 1
# Batches are gathered and normalised this many samples at a time, so that small
# batches (the tutorial uses 4) do not pay the per-call overhead one by one.
_CHUNK_SAMPLES = 2048


class DataNotFoundError(RuntimeError):
    """No copy of CIFAR-10 under the data root, and none could be downloaded."""


@dataclass(frozen=True)
class ImageSet:
    """One split of a dataset, kept as uint8 pixels until a batch is drawn.

    Attributes:
        images: (N, 3, H, W) uint8, contiguous; 32x32 for CIFAR-10.
        labels: (N,) int64, each an index into `classes`.
        classes: class names in label order.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_images(self.images, "ImageSet.images")
        expected = (self.images.shape[0],)
        if self.labels.dtype != torch.int64 or self.labels.shape != expected:
            raise ValueError(
                f"ImageSet.labels has dtype {self.labels.dtype} and shape "
                f"{tuple(self.labels.shape)}; it must be int64 with shape "
                f"{expected}, one label per image"
            )

    def __len__(self) -> int:
        return self.labels.shape[0]


@dataclass(frozen=True)
class Cifar10:
    """Both splits of CIFAR-10, and a line saying where they were read from."""

    train: ImageSet
    test: ImageSet
    source: str


@dataclass(frozen=True)
class _Source:
    """One copy on disk: its layout ("pickled" or "folder") and the files it uses.

    `fingerprint` changes when a file is added, removed, resized or touched.
    """

    layout: str
    path: Path
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    fingerprint: str

    def describe(self) -> str:
        files = len(self.train_files) + len(self.test_files)
        if self.layout == "pickled":
            return f"torchvision's pickled batches in {self.path} ({files} files)"
        return f"image folders in {self.path} ({files} images)"


def load_cifar10(root: str | Path = "data", download: bool = True) -> Cifar10:
    """Load CIFAR-10 from a local copy under `root`, decoding it only once.

    Looks first for torchvision's pickled batches in `root/cifar-10-batches-py/`,
    then for an image-folder copy in `root/cifar10/{train,test}/<class>/`. When
    neither is there and `download` is true, fetches the pickled batches with
    torchvision. The decoded tensors are cached in `root/.surgery-cache/`, keyed
    by the names, sizes and modification times of the source files.

    Args:
        root: the data folder; a relative path is taken from the working directory.
        download: whether to try torchvision's download when no copy is found.

    Returns:
        Both splits as uint8 tensors, with a line naming the copy and the cache.

    Raises:
        DataNotFoundError: no copy was found, and downloading was off or failed.
        ValueError: a copy was found but breaks a rule of its layout.
    """
    root = Path(root).expanduser().resolve()
    source = _find_source(root)
    downloaded = False
    if source is None and download:
        _download(root)
        source = _find_source(root)
        downloaded = True
    if source is None:
        raise DataNotFoundError(_not_found_message(root, download))

    tensors, how = _load_through_cache(root, source)
    splits = {
        split: ImageSet(
            tensors[f"{split}_images"], tensors[f"{split}_labels"], CIFAR10_CLASSES
        )
        for split in ("train", "test")
    }
    fetched = "downloaded by torchvision, " if downloaded else ""
    return Cifar10(**splits, source=f"{source.describe()}, {fetched}{how}")


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Turn uint8 images (B, 3, H, W) into float32 normalised with the constants.

    Gives the values of torchvision's `ToTensor()` followed by
    `Normalize(NORMALIZE_MEAN, NORMALIZE_STD)`, computed on the images' device.
    """
    _check_images(images, "images")
    mean = torch.tensor(NORMALIZE_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(NORMALIZE_STD, device=images.device).view(1, 3, 1, 1)
    # (x / 255 - mean) / std as one scale and one shift: a third fewer passes.
    return images.float().mul_(1 / (255 * std)).sub_(mean / std)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Return the order, a permutation of `range(n)`, of one epoch of one run.

    The permutation comes from a generator of its own, seeded from `(seed, epoch)`
    only: the global RNG is left alone, so two runs with the same seed see the
    same data order whatever model they build and train.
    """
    if n < 0:
        raise ValueError(f"n={n} is negative; pass the number of samples, 0 or more")
    digest = hashlib.sha256(f"cifar10-order:{seed}:{epoch}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
    return torch.randperm(n, generator=generator)


def batches(
    data: ImageSet,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    device: torch.device | str = "cpu",
    shuffle: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Draw one epoch of `data` as normalised batches.

    Args:
        data: the split to draw from.
        batch_size: samples per batch; the last batch holds what is left.
        seed: the run's seed; with `epoch` it fixes the order (see `epoch_order`).
        epoch: the epoch number.
        device: where the batches are put; pixels travel as uint8 and are
            normalised there.
        shuffle: false keeps the stored order (for evaluation).

    Yields:
        `(images, labels)`: float32 (B, 3, H, W) and int64 (B,), on `device`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size {batch_size!r} is not an int; pass 1 or more")
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size} is below 1; pass 1 or more")
    n = len(data)
    order = epoch_order(n, seed, epoch) if shuffle else torch.arange(n)
    return _draw(data, order, batch_size, torch.device(device))


def _draw(
    data: ImageSet, order: torch.Tensor, batch_size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Gather and normalise whole chunks of batches, then hand out slices."""
    chunk = batch_size * max(1, _CHUNK_SAMPLES // batch_size)
    for start in range(0, len(order), chunk):
        indices = order[start : start + chunk]
        # index_select gathers rows about twice as fast as images[indices].
        images = data.images.index_select(0, indices.to(data.images.device))
        labels = data.labels.index_select(0, indices.to(data.labels.device))
        images, labels = images.to(device), labels.to(device)
        images = normalize(images)
        for offset in range(0, len(indices), batch_size):
            end = offset + batch_size
            yield images[offset:end], labels[offset:end]


def _check_images(images: torch.Tensor, name: str) -> None:
    """Check that `images` is uint8 with shape (N, 3, H, W)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"{name} has dtype {images.dtype} and shape {tuple(images.shape)}; it "
            "must be uint8 pixels (0-255) shaped (N, 3, H, W); keep the raw "
            "pixels and let normalize() convert each batch"
        )


# --- Finding a copy ---------------------------------------------------------------


def _find_source(root: Path) -> _Source | None:
    """The first layout present under `root`: pickled batches, then folders."""
    pickled = root / _PICKLED_DIR
    if all((pickled / name).is_file() for name in _TRAIN_BATCHES + _TEST_BATCHES):
        train = [os.path.join(pickled, name) for name in _TRAIN_BATCHES]
        test = [os.path.join(pickled, name) for name in _TEST_BATCHES]
        stamps = [
            _stamp(os.path.basename(file), os.stat(file)) for file in train + test
        ]
        return _source("pickled", pickled, train, test, stamps)

    folder = root / _FOLDER_DIR
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        train, train_stamps = _list_images(folder / "train")
        test, test_stamps = _list_images(folder / "test")
        return _source("folder", folder, train, test, train_stamps + test_stamps)
    return None


def _source(
    layout: str, path: Path, train: list[str], test: list[str], stamps: list[str]
) -> _Source:
    """A `_Source` whose fingerprint hashes the cache version, layout and stamps."""
    header = f"{_CACHE_VERSION}:{layout}"
    digest = hashlib.sha256("\n".join([header, *stamps]).encode()).hexdigest()
    return _Source(layout, path, tuple(train), tuple(test), digest[:16])


def _stamp(name: str, stat: os.stat_result) -> str:
    """What the fingerprint knows of one file: its name, size and modification time."""
    return f"{name}:{stat.st_size}:{stat.st_mtime_ns}"


def _list_images(split_dir: Path) -> tuple[list[str], list[str]]:
    """Image files of one split, by class in label order then by name, and stamps.

    Listing and stat-ing go through os.scandir and plain strings: this runs on
    every start, over 60,000 files, before the cache can be used.
    """
    _check_class_dirs(split_dir)
    files, stamps = [], []
    for name in CIFAR10_CLASSES:
        class_dir = os.path.join(split_dir, name)
        if not os.path.isdir(class_dir):
            raise ValueError(
                f"{split_dir} has no folder for the class {name!r}; CIFAR-10 "
                f"needs all 10 classes, so add {class_dir}/ with its images"
            )
        with os.scandir(class_dir) as entries:
            images = sorted(
                (e for e in entries if _is_image(e.name) and e.is_file()),
                key=lambda entry: entry.name,
            )
        stamps.append(f"{split_dir.name}/{name}")
        for entry in images:
            files.append(entry.path)
            stamps.append(_stamp(entry.name, entry.stat()))
    if not files:
        raise ValueError(
            f"{split_dir} holds no .jpg or .png images; put each image in "
            f"{split_dir}/<class>/, one folder per CIFAR-10 class"
        )
    return files, stamps


def _check_class_dirs(split_dir: Path) -> None:
    """Reject class folders whose names are not CIFAR-10 classes."""
    with os.scandir(split_dir) as entries:
        names = {entry.name for entry in entries if entry.is_dir()}
    unknown = sorted(name for name in names - set(CIFAR10_CLASSES) if name[0] != ".")
    if unknown:
        raise ValueError(
            f"{split_dir} has class folders {unknown} that are not CIFAR-10 classes; "
            f"name each folder after one of {list(CIFAR10_CLASSES)}"
        )


def _is_image(name: str) -> bool:
    return name.lower().endswith(_IMAGE_SUFFIXES)


def _download(root: Path) -> None:
    """Fetch the pickled batches into `root` with torchvision."""
    # Imported here: only this path needs torchvision, and it is slow to import.
    from torchvision.datasets import CIFAR10

    try:
        CIFAR10(root, train=True, download=True)
    except Exception as error:
        # Offline, the error text is a network traceback; the cause keeps it.
        raise DataNotFoundError(_not_found_message(root, download=True)) from error


def _not_found_message(root: Path, download: bool) -> str:
    """Where CIFAR-10 was looked for, why nothing was fetched, how to supply it."""
    folder = root / _FOLDER_DIR
    fetched = (
        "downloading it with torchvision failed (no internet connection?)"
        if download
        else "download=False, so nothing was fetched"
    )
    return (
        f"CIFAR-10 was not found under {root}: looked for torchvision's pickled "
        f"batches in {root / _PICKLED_DIR}/ and for image folders in "
        f"{folder}/train/<class>/ and {folder}/test/<class>/, and {fetched}. "
        f"To supply a local copy, put torchvision's {_PICKLED_DIR} folder in {root}, "
        f"or unpack an image-folder copy so that {folder}/train/<class>/ exists "
        f"(e.g. `tar xzf cifar10-jpeg.tar.gz -C {root}`)."
    )


# --- Cache ------------------------------------------------------------------------


def _load_through_cache(
    root: Path, source: _Source
) -> tuple[dict[str, torch.Tensor], str]:
    """The decoded tensors, from the cache when it matches the source files."""
    cache = root / _CACHE_DIR / f"cifar10-{source.layout}-{source.fingerprint}.pt"
    tensors = _read_cache(cache)
    if tensors is not None:
        return tensors, f"read from cache {cache}"

    tensors = _decode(source)
    if not _write_cache(cache, tensors):
        return tensors, "decoded (not cached)"
    _remove_stale(cache, source.layout)
    return tensors, f"decoded and cached in {cache}"


def _remove_stale(cache: Path, layout: str) -> None:
    """Delete caches of `layout` other than `cache`: their source has changed."""
    for stale in cache.parent.glob(f"cifar10-{layout}-*.pt"):
        if stale != cache:
            # Another process may have removed it, or still hold it open.
            with contextlib.suppress(OSError):
                stale.unlink()


def _read_cache(cache: Path) -> dict[str, torch.Tensor] | None:
    """The cached tensors, or None when there is no usable cache file."""
    if not cache.is_file():
        return None
    try:
        tensors = torch.load(cache, weights_only=True)
        _check_cached(tensors)
    # A truncated or foreign file fails in one of these ways; all mean "decode again".
    except (
        OSError,
        EOFError,
        RuntimeError,
        ValueError,
        pickle.UnpicklingError,
    ) as error:
        warnings.warn(
            f"ignoring the unreadable CIFAR-10 cache {cache} ({error}); "
            "decoding the source again",
            stacklevel=4,
        )
        return None
    return tensors


def _check_cached(tensors: object) -> None:
    """Raise unless `tensors` holds the four uint8/int64 tensors of both splits."""
    expected = {
        "train_images": torch.uint8,
        "train_labels": torch.int64,
        "test_images": torch.uint8,
        "test_labels": torch.int64,
    }
    if not isinstance(tensors, dict) or set(tensors) != set(expected):
        raise ValueError("it does not hold the four tensors of both splits")
    for key, dtype in expected.items():
        if not isinstance(tensors[key], torch.Tensor) or tensors[key].dtype != dtype:
            raise ValueError(f"its {key} is not a {dtype} tensor")


def _write_cache(cache: Path, tensors: dict[str, torch.Tensor]) -> bool:
    """Save `tensors` atomically; warn and return False when that fails."""
    temporary = cache.with_name(f".{cache.name}.{uuid.uuid4().hex}.tmp")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.save(tensors, temporary)
            os.replace(temporary, cache)
        finally:
            temporary.unlink(missing_ok=True)
    # torch.save reports some write failures (a full disk) as RuntimeError.
    except (OSError, RuntimeError) as error:
        warnings.warn(
            f"could not write the CIFAR-10 cache {cache} ({error}); the data "
            f"loaded, but the next start decodes it again; make {cache.parent} "
            "writable to keep the cache",
            stacklevel=4,
        )
        return False
    return True


# --- Decoding ---------------------------------------------------------------------


def _decode(source: _Source) -> dict[str, torch.Tensor]:
    """Read both splits of `source` into uint8 images and int64 labels."""
    read = _read_batches if source.layout == "pickled" else _decode_images
    train_images, train_labels = read(source.train_files)
    test_images, test_labels = read(source.test_files)
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }


def _read_batches(files: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Read pickled batches: each a dict with (N, 3072) uint8 data and N labels.

    The pickles are trusted as torchvision trusts them: only load files you put
    there yourself.
    """
    images, labels = [], []
    for file in files:
        batch = _load_batch(file)
        data, batch_labels = _batch_field(batch, "data"), _batch_field(batch, "labels")
        _check_batch(file, data, batch_labels)
        # Each row holds the 1024 red values, then the green, then the blue ones.
        images.append(torch.from_numpy(data.reshape(-1, 3, _IMAGE_SIZE, _IMAGE_SIZE)))
        labels.append(torch.as_tensor(batch_labels, dtype=torch.int64))
    return torch.cat(images).contiguous(), torch.cat(labels)


def _load_batch(file: str) -> dict:
    """One pickled batch as a dict; ValueError names a file that is not one."""
    try:
        with open(file, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
    # A damaged or foreign file fails inside pickle with almost any error.
    except Exception as error:
        reason = f"it cannot be unpickled ({type(error).__name__}: {error})"
    else:
        if isinstance(batch, dict):
            return batch
        reason = f"it holds a {type(batch).__name__}, not a dict"
    raise ValueError(
        f"{file} is not a CIFAR-10 batch: {reason}; replace it with the file "
        f"from torchvision's {_PICKLED_DIR}"
    )


def _batch_field(batch: dict, name: str) -> object:
    """A field of a batch, whose keys are bytes or str depending on who pickled it."""
    if name.encode() in batch:
        return batch[name.encode()]
    return batch.get(name)


def _check_batch(file: str, data: object, labels: object) -> None:
    """Check one pickled batch against torchvision's format."""
    row = 3 * _IMAGE_SIZE * _IMAGE_SIZE
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == row
    ):
        raise ValueError(
            f"{file} is not a CIFAR-10 batch: its 'data' must be a uint8 array of "
            f"shape (N, {row}); replace it with the file from torchvision's "
            f"{_PICKLED_DIR}"
        )
    if labels is None or len(labels) != len(data):
        raise ValueError(
            f"{file} is not a CIFAR-10 batch: it must hold one label per image "
            f"({len(data)}) under 'labels'; replace it with torchvision's file"
        )
    if len(labels) and not all(0 <= label < len(CIFAR10_CLASSES) for label in labels):
        raise ValueError(
            f"{file} has labels outside 0-{len(CIFAR10_CLASSES) - 1}; "
            "replace it with torchvision's file"
        )


def _decode_images(files: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode image files named .../<class>/<name> into uint8 images and labels."""
    # (N, H, W, C), the layout PIL hands out; permuted to (N, C, H, W) below.
    pixels = np.empty((len(files), _IMAGE_SIZE, _IMAGE_SIZE, 3), dtype=np.uint8)
    for index, file in enumerate(files):
        pixels[index] = _read_image(file)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    labels = [_CLASS_INDEX[os.path.basename(os.path.dirname(file))] for file in files]
    return images, torch.tensor(labels, dtype=torch.int64)


def _read_image(file: str) -> np.ndarray:
    """One 32x32 image as (H, W, 3) uint8 RGB."""
    try:
        return _decode_image(file)
    except OSError as error:
        reason = error.strerror or "the file is damaged or not an image"
        raise ValueError(
            f"{file} cannot be read as an image ({reason}); replace it with a "
            "32x32 .jpg or .png, or remove it from the folder"
        ) from None


def _decode_image(file: str) -> np.ndarray:
    with Image.open(file) as image:
        if image.size != (_IMAGE_SIZE, _IMAGE_SIZE):
            width, height = image.size
            raise ValueError(
                f"{file} is {width}x{height} pixels; CIFAR-10 images must be "
                f"{_IMAGE_SIZE}x{_IMAGE_SIZE}; resize it or remove it from the folder"
            )
        return np.asarray(image.convert("RGB"))
