"""How long a run will take, measured before it starts.

A few dozen real training steps of the spec at the run's batch size, on random
images, give the seconds per step; a forward pass gives the evaluation cost.
Measurements are cached per (spec, batch_size, optimizer, device) for the process.

The calibration never draws from PyTorch's global random generator (it would
change the dropout masks of a run training in another thread): weights and
images come from a private generator, and dropout is switched off while timing.
A run already training on the same cores makes the estimate pessimistic.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import dataclass

import torch
from torch import nn

from .data import CIFAR10_CLASSES, ImageSet, batches
from .model import build_model
from .runs import canonical_spec
from .spec import Spec
from .train import (
    OptimizerName,
    TrainConfig,
    make_optimizer,
    resolve_device,
    training_threads,
)

CIFAR10_TRAIN = 50_000
CIFAR10_TEST = 10_000
# Timed steps after the warm-up: at least MIN_STEPS, then up to MAX_STEPS or
# MAX_SECONDS of them, so a big net at a big batch still answers in seconds.
WARMUP_STEPS = 1
MIN_STEPS = 3
MAX_STEPS = 40
MAX_SECONDS = 1.5
EVAL_IMAGES = 256


@dataclass(frozen=True)
class Calibration:
    """Measured costs: seconds per training step and per evaluated image."""

    step_seconds: float
    eval_seconds_per_image: float
    steps_timed: int
    device: str


_CACHE: dict[tuple, Calibration] = {}
_CACHE_LOCK = threading.Lock()


def calibrate(
    spec: Spec,
    batch_size: int,
    optimizer: OptimizerName | str = OptimizerName.SGD,
    device: torch.device | str = "auto",
) -> Calibration:
    """Time training steps of `spec` at `batch_size`; cached per process."""
    device = resolve_device(str(device))
    optimizer = OptimizerName(optimizer)
    key = (canonical_spec(spec), batch_size, optimizer.value, str(device))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _measure(spec, batch_size, optimizer, device)
        return _CACHE[key]


def estimate_seconds(
    spec: Spec,
    config: TrainConfig,
    n_images: int = CIFAR10_TRAIN,
    device: torch.device | str | None = None,
    n_test: int = CIFAR10_TEST,
) -> float:
    """Seconds a run of `spec` with `config` should take on `device`.

    Counts `config.epochs` epochs of `n_images` training images, a test pass of
    `n_test` images after each epoch and one more at the end, as train() does.
    Data loading and start-up are not counted.
    """
    measured = calibrate(
        spec, config.batch_size, config.optimizer, device or config.device
    )
    steps = math.ceil(n_images / config.batch_size) * config.epochs
    evaluations = (config.epochs + 1) * n_test
    return steps * measured.step_seconds + evaluations * measured.eval_seconds_per_image


def clear_cache() -> None:
    """Forget every measurement (after a hardware or load change)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _measure(
    spec: Spec, batch_size: int, optimizer: OptimizerName, device: torch.device
) -> Calibration:
    generator = torch.Generator().manual_seed(0)
    model = _private_model(spec, device, generator)
    config = TrainConfig(optimizer=optimizer, batch_size=batch_size)
    optimizer_ = make_optimizer(model, config)
    # The same thread count as the run itself, or small batches look 10x slower.
    with training_threads(batch_size, device):
        step_seconds, timed = _time_steps(model, optimizer_, batch_size, generator)
        eval_seconds = _time_eval(model, generator)
    return Calibration(step_seconds, eval_seconds, timed, str(device))


def _private_model(
    spec: Spec, device: torch.device, generator: torch.Generator
) -> nn.Module:
    """The spec's model with weights drawn from `generator`, not the global RNG."""
    # Built on the meta device, so no layer's own initialisation draws numbers.
    model = build_model(spec, device="meta").to_empty(device=device)
    with torch.no_grad():
        for parameter in model.parameters():
            values = torch.empty(parameter.shape).uniform_(
                -0.1, 0.1, generator=generator
            )
            parameter.copy_(values)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    return model


def _random_images(n: int, generator: torch.Generator) -> ImageSet:
    images = torch.randint(
        0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator
    )
    labels = torch.randint(0, len(CIFAR10_CLASSES), (n,), generator=generator)
    return ImageSet(images, labels, CIFAR10_CLASSES)


def _time_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
) -> tuple[float, int]:
    """The median seconds of one step, each step as train() takes it.

    The median, not the mean: on a shared CPU a few steps stall for tens of
    milliseconds while others wait for a core, and a short window's mean
    swings with whichever stalls it happened to catch.
    """
    device = next(model.parameters()).device
    data = _random_images(batch_size * (WARMUP_STEPS + MAX_STEPS), generator)
    loss_fn = nn.CrossEntropyLoss()
    seconds: list[float] = []
    began = time.perf_counter()
    for index, (images, labels) in enumerate(
        batches(data, batch_size, seed=0, epoch=0, device=device)
    ):
        start = time.perf_counter()
        logits = model(images)
        loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # train() reads the loss and counts correct labels every step.
        loss.item()
        int((logits.argmax(1) == labels).sum())
        if index < WARMUP_STEPS:
            began = time.perf_counter()
            continue
        seconds.append(time.perf_counter() - start)
        if len(seconds) >= MIN_STEPS and time.perf_counter() - began > MAX_SECONDS:
            break
    return statistics.median(seconds), len(seconds)


@torch.no_grad()
def _time_eval(model: nn.Module, generator: torch.Generator) -> float:
    """Seconds per image of a forward pass in eval mode."""
    device = next(model.parameters()).device
    data = _random_images(EVAL_IMAGES, generator)
    model.eval()
    images, _ = next(batches(data, EVAL_IMAGES, seed=0, epoch=0, device=device))
    model(images)
    _sync(device)
    began = time.perf_counter()
    model(images).argmax(1).cpu()
    return (time.perf_counter() - began) / EVAL_IMAGES


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
