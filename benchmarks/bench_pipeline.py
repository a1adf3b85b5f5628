"""Training speed: the PyTorch tutorial's input pipeline against surgery's.

Each pipeline trains the tutorial LeNet with SGD (lr 0.001, momentum 0.9) at
batch 4 for the same number of steps, timed after a short warm-up:

- tutorial: torchvision's CIFAR10 dataset over a cifar-10-batches-py folder
  written from the decoded data, ToTensor + Normalize per image, a DataLoader
  with 2 workers, and the tutorial's plain loop;
- surgery.train: `surgery.train.train`, stopped through `should_stop`;
- batches: the same plain loop over `surgery.data.batches`, which separates the
  cost of the data from the cost of train()'s bookkeeping.

train() drops torch to one intra-op thread for small CPU batches; the "1 thread"
rows run the other loops that way too, to tell the thread count apart from the
data pipeline.

Aim: surgery.train at least 3x the tutorial's images/s on 2 CPU cores.

    python -m benchmarks.bench_pipeline [--steps 4000] [--warmup 200] [--data data]
"""

from __future__ import annotations

import argparse
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from surgery.data import Cifar10, ImageSet, batches, load_cifar10
from surgery.model import build_model
from surgery.presets import TUTORIAL_LENET
from surgery.train import TrainConfig, train

BATCH_SIZE = 4
LR = 0.001
MOMENTUM = 0.9
TARGET_RATIO = 3.0


class StepClock:
    """Counts steps; times the `steps` that follow the first `warmup` ones."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.count = 0
        self.began = self.ended = 0.0

    def tick(self) -> bool:
        """Call once after each step; True once the timed steps are done."""
        self.count += 1
        if self.count == self.warmup:
            self.began = time.perf_counter()
        if self.count == self.warmup + self.steps:
            self.ended = time.perf_counter()
        return self.count >= self.warmup + self.steps

    def images_per_second(self) -> float:
        if not self.ended:
            raise RuntimeError(f"only {self.count} steps ran; the data ran out")
        return self.steps * BATCH_SIZE / (self.ended - self.began)


# ---------------------------------------------------------------- tutorial


class RewrittenCIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR10, minus the checksums: the files are re-pickled here
    from the decoded copy, so their bytes differ from the published ones."""

    train_list: ClassVar = tuple((f"data_batch_{i}", None) for i in range(1, 6))
    test_list: ClassVar = (("test_batch", None),)
    meta: ClassVar = {**datasets.CIFAR10.meta, "md5": None}


def write_pickled(data: Cifar10, root: Path) -> Path:
    """torchvision's cifar-10-batches-py layout: 5 train batches, test, meta."""
    folder = root / RewrittenCIFAR10.base_folder
    folder.mkdir(parents=True)
    parts = np.array_split(np.arange(len(data.train)), 5)
    for number, indices in enumerate(parts, start=1):
        _write_batch(folder / f"data_batch_{number}", data.train, indices)
    _write_batch(folder / "test_batch", data.test, np.arange(len(data.test)))
    meta = {"label_names": list(data.train.classes), "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return root


def _write_batch(path: Path, split: ImageSet, indices: np.ndarray) -> None:
    # (N, 3, 32, 32) -> (N, 3072): 1024 red values, then green, then blue.
    images = split.images[torch.from_numpy(indices)].reshape(len(indices), -1)
    batch = {
        "data": images.numpy(),
        "labels": split.labels[torch.from_numpy(indices)].tolist(),
    }
    path.write_bytes(pickle.dumps(batch, protocol=4))


def tutorial_loader(root: Path, workers: int) -> DataLoader:
    normalize = transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    transform = transforms.Compose([transforms.ToTensor(), normalize])
    dataset = RewrittenCIFAR10(root, train=True, transform=transform)
    return DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=workers)


def plain_loop(
    batches_in: Iterable[tuple[torch.Tensor, torch.Tensor]], tick: Callable[[], bool]
) -> None:
    """The tutorial's loop: zero_grad, forward, loss, backward, step, loss.item()."""
    torch.manual_seed(0)
    model = build_model(TUTORIAL_LENET)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    running_loss = 0.0
    for images, labels in batches_in:
        optimizer.zero_grad()
        logits = model(images)
        loss = loss_fn(logits, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        if tick():
            return


# ---------------------------------------------------------------- runs


def run_tutorial(data: Cifar10, args: argparse.Namespace) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-cifar-") as temp:
        loader = tutorial_loader(write_pickled(data, Path(temp)), args.workers)
        clock = StepClock(args.warmup, args.steps)
        plain_loop(loader, clock.tick)
    return clock.images_per_second()


def run_surgery_train(data: Cifar10, args: argparse.Namespace) -> float:
    config = TrainConfig(
        lr=LR, momentum=MOMENTUM, batch_size=BATCH_SIZE, epochs=1, device="cpu"
    )
    clock = StepClock(args.warmup, args.steps)
    # train() also tests the model at the end; that is outside the timed steps.
    train(TUTORIAL_LENET, config, _train_only(data), should_stop=clock.tick)
    return clock.images_per_second()


def _train_only(data: Cifar10) -> Cifar10:
    """The data with a tiny test split, so the untimed final test is quick."""
    test = ImageSet(data.test.images[:10], data.test.labels[:10], data.test.classes)
    return Cifar10(data.train, test, data.source)


def run_surgery_batches(data: Cifar10, args: argparse.Namespace) -> float:
    clock = StepClock(args.warmup, args.steps)
    plain_loop(batches(data.train, BATCH_SIZE, seed=0, epoch=1), clock.tick)
    return clock.images_per_second()


def one_thread(run: Callable[[Cifar10, argparse.Namespace], float]):
    """`run` with torch limited to one intra-op thread, as train() does at batch 4."""

    def run_one_thread(data: Cifar10, args: argparse.Namespace) -> float:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return run(data, args)
        finally:
            torch.set_num_threads(before)

    return run_one_thread


# The 1-thread rows are diagnostics: how much of the gap is the thread count
# rather than the data pipeline.
PIPELINES: dict[str, Callable[[Cifar10, argparse.Namespace], float]] = {
    "tutorial": run_tutorial,
    "tutorial, 1 thread": one_thread(run_tutorial),
    "surgery.train": run_surgery_train,
    "batches, 1 thread": one_thread(run_surgery_batches),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000, help="timed steps")
    parser.add_argument("--warmup", type=int, default=200, help="untimed steps first")
    parser.add_argument("--data", default="data", help="CIFAR-10 folder")
    parser.add_argument("--workers", type=int, default=2, help="tutorial DataLoader")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads first")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_cifar10(args.data, download=False)
    if args.warmup + args.steps > len(data.train) // BATCH_SIZE:
        parser.error("--warmup + --steps must fit in one epoch (12500 steps)")
    cores = len(os.sched_getaffinity(0))
    print(
        f"{args.steps} steps at batch {BATCH_SIZE} after {args.warmup} warm-up; "
        f"{cores} CPU cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads"
    )

    speeds = {}
    for name, run in PIPELINES.items():
        speeds[name] = run(data, args)
        print(f"{name:<20}{speeds[name]:>8.0f} images/s", flush=True)
    ratio = speeds["surgery.train"] / speeds["tutorial"]
    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    print(
        f"surgery.train / tutorial: {ratio:.2f}x "
        f"(target >= {TARGET_RATIO:g}x: {verdict})"
    )


if __name__ == "__main__":
    main()
