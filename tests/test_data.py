"""Loading CIFAR-10 from both layouts, its cache, and the batches drawn from it."""

from __future__ import annotations

import os
import pickle
import re
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from surgery import data
from surgery.data import (
    CIFAR10_CLASSES,
    NORMALIZE_MEAN,
    NORMALIZE_STD,
    DataNotFoundError,
    ImageSet,
    batches,
    epoch_order,
    load_cifar10,
    normalize,
)

REAL_DATA = Path(__file__).parents[1] / "data"


def assert_loaded(loaded: data.Cifar10, fake) -> None:
    """Exact pixels and labels of both splits, in the loader's order."""
    for split, expected in ((loaded.train, fake.train), (loaded.test, fake.test)):
        assert split.images.dtype == torch.uint8
        assert split.images.is_contiguous()
        assert torch.equal(split.images, expected.images)
        assert torch.equal(split.labels, expected.labels)
        assert split.classes == CIFAR10_CLASSES


def cache_files(root: Path, layout: str) -> list[Path]:
    return sorted((root / ".surgery-cache").glob(f"cifar10-{layout}-*.pt"))


def fail_if_called(*args, **kwargs):
    raise AssertionError("decoded again although the cache matches the source")


def counting(monkeypatch, name: str) -> list[int]:
    """Count the calls of the decoder `name` of surgery.data, keeping its work."""
    calls: list[int] = []
    original = getattr(data, name)

    def wrapper(files):
        calls.append(len(files))
        return original(files)

    monkeypatch.setattr(data, name, wrapper)
    return calls


# --- Layouts ----------------------------------------------------------------------


def test_classes_are_cifar10_label_order():
    assert CIFAR10_CLASSES[0] == "airplane"
    assert CIFAR10_CLASSES[3] == "cat"
    assert CIFAR10_CLASSES[9] == "truck"
    assert len(CIFAR10_CLASSES) == 10


def test_pickled_layout_loads_exact_pixels_and_labels(fake_pickled):
    loaded = load_cifar10(fake_pickled.root, download=False)

    assert_loaded(loaded, fake_pickled)
    assert len(loaded.train) == 30 and len(loaded.test) == 20
    # Batches keep their file order: labels cycle 0..9 as written.
    assert loaded.train.labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert "cifar-10-batches-py" in loaded.source


def test_pickled_row_is_red_then_green_then_blue_planes(fake_pickled):
    row = (fake_pickled.root / "cifar-10-batches-py" / "test_batch").read_bytes()
    batch = pickle.loads(row)
    first = batch[b"data"][0]

    image = load_cifar10(fake_pickled.root, download=False).test.images[0]

    assert image[0, 0, :].tolist() == first[0:32].tolist()
    assert image[1, 0, 0] == first[1024]
    assert image[2, 31, 31] == first[3071]


def test_pickled_layout_with_str_keys(tmp_path, pickled_writer):
    fake = pickled_writer(tmp_path / "data", seed=3, str_keys=True)

    assert_loaded(load_cifar10(fake.root, download=False), fake)


def test_folder_layout_loads_exact_pixels_and_labels(fake_folder):
    loaded = load_cifar10(fake_folder.root, download=False)

    assert_loaded(loaded, fake_folder)
    assert loaded.train.labels.tolist() == [c for c in range(10) for _ in range(3)]
    assert "image folders" in loaded.source


def test_folder_layout_channels_match_pil(fake_folder):
    file = fake_folder.root / "cifar10" / "test" / "cat" / "0006.png"
    with Image.open(file) as image:
        red, green, blue = image.getpixel((5, 2))

    loaded = load_cifar10(fake_folder.root, download=False)
    # cat is label 3, with 2 test images per class: the first cat is sample 6.
    assert loaded.test.images[6, :, 2, 5].tolist() == [red, green, blue]


def test_folder_layout_ignores_other_files_and_converts_gray(fake_folder):
    cat = fake_folder.root / "cifar10" / "train" / "cat"
    (cat / "notes.txt").write_text("not an image")
    Image.new("L", (32, 32), color=77).save(cat / "9999.png")

    loaded = load_cifar10(fake_folder.root, download=False)

    assert len(loaded.train) == 31
    # Sorted by name, 9999.png is the last cat, just before the first deer.
    last_cat = 4 * 3
    assert loaded.train.labels[last_cat].item() == 3
    assert torch.equal(
        loaded.train.images[last_cat], torch.full((3, 32, 32), 77, dtype=torch.uint8)
    )


def test_pickled_layout_wins_when_both_exist(fake_both):
    pickled, folder = fake_both

    loaded = load_cifar10(pickled.root, download=False)

    assert_loaded(loaded, pickled)
    assert not torch.equal(loaded.train.images, folder.train.images)
    assert loaded.source.startswith("torchvision's pickled batches")


def test_folder_image_of_wrong_size_is_named(fake_folder):
    bad = fake_folder.root / "cifar10" / "train" / "dog" / "0100.png"
    Image.new("RGB", (64, 32)).save(bad)

    with pytest.raises(
        ValueError, match=r"0100\.png is 64x32 pixels; .* must be 32x32"
    ):
        load_cifar10(fake_folder.root, download=False)


def test_folder_with_unknown_class_is_named(fake_folder):
    (fake_folder.root / "cifar10" / "train" / "kitten").mkdir()

    with pytest.raises(ValueError, match=r"\['kitten'\] that are not CIFAR-10 classes"):
        load_cifar10(fake_folder.root, download=False)


def test_pickled_batch_of_wrong_width_is_named(fake_pickled):
    path = fake_pickled.root / "cifar-10-batches-py" / "data_batch_2"
    narrow = {b"data": np.zeros((6, 1024), np.uint8), b"labels": [0] * 6}
    path.write_bytes(pickle.dumps(narrow))

    with pytest.raises(ValueError, match=r"data_batch_2 is not .* shape \(N, 3072\)"):
        load_cifar10(fake_pickled.root, download=False)


@pytest.mark.parametrize(
    "content", [b"", b"not an image"], ids=["empty-file", "not-an-image"]
)
def test_folder_image_that_cannot_be_decoded_is_named(fake_folder, content):
    bad = fake_folder.root / "cifar10" / "train" / "dog" / "0100.jpg"
    bad.write_bytes(content)

    with pytest.raises(
        ValueError, match=r"0100\.jpg cannot be read as an image \(the file is damaged"
    ):
        load_cifar10(fake_folder.root, download=False)


def test_folder_named_like_an_image_is_not_an_image(fake_folder):
    (fake_folder.root / "cifar10" / "train" / "dog" / "extra.jpg").mkdir()

    loaded = load_cifar10(fake_folder.root, download=False)

    assert_loaded(loaded, fake_folder)


@pytest.mark.parametrize("split", ["train", "test"])
def test_folder_with_a_class_missing_is_named(fake_folder, split):
    class_dir = fake_folder.root / "cifar10" / split / "truck"
    for image in class_dir.iterdir():
        image.unlink()
    class_dir.rmdir()

    with pytest.raises(
        ValueError, match=rf"{split} has no folder for the class 'truck'; .* all 10"
    ):
        load_cifar10(fake_folder.root, download=False)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", r"cannot be unpickled \(EOFError"),
        (b"garbage", r"cannot be unpickled \(UnpicklingError"),
        (pickle.dumps([1, 2]), "holds a list, not a dict"),
    ],
    ids=["empty-file", "garbage", "a-list"],
)
def test_pickled_batch_that_is_not_a_batch_is_named(fake_pickled, content, reason):
    path = fake_pickled.root / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(content)

    with pytest.raises(
        ValueError, match=rf"test_batch is not a CIFAR-10 batch: it {reason}"
    ):
        load_cifar10(fake_pickled.root, download=False)


# --- Missing data -----------------------------------------------------------------


def assert_says_how_to_supply(message: str, root: Path) -> None:
    assert f"pickled batches in {root}/cifar-10-batches-py/" in message
    assert f"{root}/cifar10/train/<class>/" in message
    assert "put torchvision's cifar-10-batches-py folder in" in message
    assert f"tar xzf cifar10-jpeg.tar.gz -C {root}" in message


def test_missing_data_without_download_names_root_and_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path.resolve() / "nowhere"

    with pytest.raises(
        DataNotFoundError,
        match=re.escape(f"CIFAR-10 was not found under {root}:")
        + ".*download=False, so nothing was fetched",
    ) as caught:
        load_cifar10("nowhere", download=False)

    assert_says_how_to_supply(str(caught.value), root)
    assert not root.exists()


def test_missing_data_offline_names_root_and_fix(tmp_path, monkeypatch):
    offline = urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    def refuse(*args, **kwargs):
        raise offline

    monkeypatch.setattr("torchvision.datasets.CIFAR10", refuse)
    root = tmp_path.resolve()

    with pytest.raises(
        DataNotFoundError,
        match=re.escape(f"CIFAR-10 was not found under {root}:")
        + ".*downloading it with torchvision failed",
    ) as caught:
        load_cifar10(tmp_path, download=True)

    assert_says_how_to_supply(str(caught.value), root)
    assert "name resolution" not in str(caught.value)
    assert caught.value.__cause__ is offline


def test_download_that_succeeds_is_loaded(tmp_path, monkeypatch, pickled_writer):
    written = []

    def fetch(root, train, download):
        assert download
        written.append(pickled_writer(Path(root), seed=5))

    monkeypatch.setattr("torchvision.datasets.CIFAR10", fetch)

    loaded = load_cifar10(tmp_path, download=True)

    assert_loaded(loaded, written[0])
    assert "downloaded by torchvision" in loaded.source


# --- Cache ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "layout", "decoder"),
    [
        ("fake_pickled", "pickled", "_read_batches"),
        ("fake_folder", "folder", "_decode_images"),
    ],
    ids=["pickled", "folder"],
)
def test_cache_is_written_then_used(request, monkeypatch, fixture, layout, decoder):
    fake = request.getfixturevalue(fixture)

    first = load_cifar10(fake.root, download=False)
    assert len(cache_files(fake.root, layout)) == 1
    assert "decoded and cached in" in first.source

    monkeypatch.setattr(data, decoder, fail_if_called)
    second = load_cifar10(fake.root, download=False)

    assert_loaded(second, fake)
    assert "read from cache" in second.source


def test_cache_is_invalidated_when_a_file_is_added(fake_folder, monkeypatch):
    load_cifar10(fake_folder.root, download=False)
    calls = counting(monkeypatch, "_decode_images")
    extra = fake_folder.root / "cifar10" / "test" / "ship" / "0500.png"
    Image.new("RGB", (32, 32), color=(1, 2, 3)).save(extra)

    loaded = load_cifar10(fake_folder.root, download=False)

    assert calls == [30, 21]
    assert len(loaded.test) == 21
    assert loaded.test.images[8 * 2 + 2, :, 0, 0].tolist() == [1, 2, 3]
    assert len(cache_files(fake_folder.root, "folder")) == 1


def test_cache_is_invalidated_when_a_file_changes(fake_folder, monkeypatch):
    load_cifar10(fake_folder.root, download=False)
    calls = counting(monkeypatch, "_decode_images")
    changed = fake_folder.root / "cifar10" / "train" / "airplane" / "0000.png"
    Image.new("RGB", (32, 32), color=(9, 9, 9)).save(changed)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

    loaded = load_cifar10(fake_folder.root, download=False)

    assert calls == [30, 20]
    assert torch.equal(
        loaded.train.images[0], torch.full((3, 32, 32), 9, dtype=torch.uint8)
    )


def test_unreadable_cache_is_replaced(fake_pickled):
    load_cifar10(fake_pickled.root, download=False)
    (cache,) = cache_files(fake_pickled.root, "pickled")
    cache.write_bytes(b"not a torch file")

    with pytest.warns(UserWarning, match="ignoring the unreadable CIFAR-10 cache"):
        loaded = load_cifar10(fake_pickled.root, download=False)

    assert_loaded(loaded, fake_pickled)
    assert torch.load(cache, weights_only=True)["test_labels"].shape == (20,)


def test_unwritable_cache_still_loads(fake_pickled):
    # A file where the cache folder should be: mkdir fails, as on a read-only root.
    (fake_pickled.root / ".surgery-cache").write_text("in the way")

    with pytest.warns(UserWarning, match="could not write the CIFAR-10 cache"):
        loaded = load_cifar10(fake_pickled.root, download=False)

    assert_loaded(loaded, fake_pickled)
    assert "decoded (not cached)" in loaded.source
    assert not list(fake_pickled.root.glob(".*.tmp"))


# --- Data order -------------------------------------------------------------------


def test_epoch_order_is_a_permutation():
    order = epoch_order(1000, seed=0, epoch=0)

    assert order.dtype == torch.int64
    assert torch.equal(order.sort().values, torch.arange(1000))
    assert epoch_order(0, seed=0, epoch=0).shape == (0,)


def test_epoch_order_depends_only_on_seed_and_epoch():
    torch.manual_seed(1)
    first = epoch_order(500, seed=7, epoch=3)
    torch.manual_seed(2)
    torch.nn.Linear(10, 10)

    assert torch.equal(epoch_order(500, seed=7, epoch=3), first)
    assert not torch.equal(epoch_order(500, seed=7, epoch=4), first)
    assert not torch.equal(epoch_order(500, seed=8, epoch=3), first)


def test_epoch_order_and_batches_leave_global_rng_alone():
    state = torch.get_rng_state()
    images = torch.zeros(10, 3, 4, 4, dtype=torch.uint8)
    tiny = ImageSet(images, torch.zeros(10, dtype=torch.int64), CIFAR10_CLASSES)

    epoch_order(1000, seed=0, epoch=0)
    list(batches(tiny, 3, seed=0, epoch=0))

    assert torch.equal(torch.get_rng_state(), state)


def test_epoch_order_rejects_negative_n():
    with pytest.raises(ValueError, match="n=-1 is negative"):
        epoch_order(-1, seed=0, epoch=0)


# --- Batches ----------------------------------------------------------------------


def numbered_set(n: int) -> ImageSet:
    """Image i has every pixel equal to i, so a batch tells which samples it holds."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 32, 32)
    labels = torch.arange(n) % 10
    return ImageSet(images.contiguous(), labels, CIFAR10_CLASSES)


def sample_ids(images: torch.Tensor) -> list[int]:
    """Undo the normalisation of a numbered_set batch: pixel value = sample index."""
    pixels = (images[:, 0, 0, 0] * 0.5 + 0.5) * 255
    return pixels.round().long().tolist()


@pytest.mark.parametrize(
    ("n", "batch_size", "sizes"),
    [(23, 10, [10, 10, 3]), (20, 5, [5, 5, 5, 5]), (3, 8, [3]), (0, 4, [])],
    ids=["remainder", "exact", "one-short-batch", "empty"],
)
def test_batches_cover_every_sample_once(n, batch_size, sizes):
    drawn = list(batches(numbered_set(n), batch_size, seed=1, epoch=2))

    assert [len(images) for images, _ in drawn] == sizes
    ids = [i for images, _ in drawn for i in sample_ids(images)]
    assert ids == epoch_order(n, seed=1, epoch=2).tolist()
    labels = [label for _, batch_labels in drawn for label in batch_labels.tolist()]
    assert labels == [i % 10 for i in ids]


def test_batches_cross_chunk_boundaries(monkeypatch):
    # Chunks of 63 samples (9 batches of 7), so 250 samples take four chunks.
    monkeypatch.setattr(data, "_CHUNK_SAMPLES", 64)

    drawn = list(batches(numbered_set(250), 7, seed=0, epoch=0))

    assert [len(images) for images, _ in drawn] == [7] * 35 + [5]
    ids = [i for images, _ in drawn for i in sample_ids(images)]
    assert ids == epoch_order(250, seed=0, epoch=0).tolist()


def test_batches_without_shuffle_keep_stored_order():
    drawn = list(batches(numbered_set(12), 5, seed=3, epoch=9, shuffle=False))

    assert [sample_ids(images) for images, _ in drawn] == [
        [0, 1, 2, 3, 4],
        [5, 6, 7, 8, 9],
        [10, 11],
    ]


def test_batches_normalise_like_torchvision():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=generator
    )
    data_set = ImageSet(images, torch.arange(6), CIFAR10_CLASSES)
    oracle = transforms.Normalize(NORMALIZE_MEAN, NORMALIZE_STD)

    [(drawn, labels)] = batches(data_set, 6, seed=0, epoch=0, shuffle=False)

    assert drawn.dtype == torch.float32 and labels.dtype == torch.int64
    # ToTensor scales uint8 to [0, 1] by dividing by 255.
    expected = oracle(images.float() / 255)
    torch.testing.assert_close(drawn, expected, rtol=0, atol=1e-6)
    assert drawn.min() >= -1 and drawn.max() <= 1


def test_normalize_extremes():
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
    images = images.expand(2, 3, 2, 2)

    out = normalize(images)

    assert out[0].unique().tolist() == [-1.0]
    assert out[1].unique().tolist() == [1.0]


def test_normalize_rejects_float_images():
    with pytest.raises(ValueError, match=r"images has dtype torch.float32 .* uint8"):
        normalize(torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize("batch_size", [0, -3], ids=["zero", "negative"])
def test_batches_reject_batch_size_below_one(batch_size):
    with pytest.raises(ValueError, match=f"batch_size {batch_size} is below 1"):
        batches(numbered_set(4), batch_size, seed=0, epoch=0)


def test_image_set_rejects_float_images():
    with pytest.raises(ValueError, match="ImageSet.images has dtype torch.float32"):
        ImageSet(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.int64), ())


def test_image_set_rejects_labels_of_wrong_length():
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(
        ValueError, match=r"shape \(3,\); it must be int64 with shape \(2,\)"
    ):
        ImageSet(images, torch.zeros(3, dtype=torch.int64), CIFAR10_CLASSES)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_on_cuda_match_cpu():
    data_set = numbered_set(50)

    on_cpu = list(batches(data_set, 16, seed=4, epoch=1))
    on_cuda = list(batches(data_set, 16, seed=4, epoch=1, device="cuda"))

    for (cpu_images, cpu_labels), (images, labels) in zip(on_cpu, on_cuda):
        assert images.is_cuda and labels.is_cuda
        torch.testing.assert_close(images.cpu(), cpu_images, rtol=0, atol=1e-6)
        assert torch.equal(labels.cpu(), cpu_labels)


# --- The real copy ----------------------------------------------------------------


@pytest.mark.skipif(
    not (REAL_DATA / "cifar10").is_dir(), reason="no real CIFAR-10 in data/cifar10"
)
def test_real_cifar10_sizes_and_channel_means():
    loaded = load_cifar10(REAL_DATA, download=False)

    assert len(loaded.train) == 50_000 and len(loaded.test) == 10_000
    assert torch.bincount(loaded.train.labels).tolist() == [5000] * 10
    assert loaded.train.images.shape == (50_000, 3, 32, 32)
    # Summed in chunks: a float copy of the whole split would take 600 MB.
    sums = sum(
        chunk.sum(dim=(0, 2, 3), dtype=torch.float64)
        for chunk in loaded.train.images.split(5000)
    )
    means = sums / (50_000 * 32 * 32 * 255)
    torch.testing.assert_close(
        means,
        torch.tensor([0.4913, 0.4821, 0.4465], dtype=torch.float64),
        rtol=0,
        atol=0.002,
    )
