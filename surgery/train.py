"""Training a spec on CIFAR-10: settings, progress events and results.

The loop never prints: it reports events to a callback. The same seed gives the
same weights, the same data order and, on the CPU, the same result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum

import torch
from torch import nn

from .data import Cifar10, ImageSet, batches
from .model import build_model
from .spec import Spec

# Above this many parameters a CPU run takes hours; the message says so first.
MAX_PARAMS = 50_000_000
# Loss points kept per run, whatever its length, so memory stays flat.
LOSS_POINTS = 200


class ConfigError(ValueError):
    """Training settings that break a rule."""


class OptimizerName(str, Enum):
    SGD = "sgd"
    ADAM = "adam"


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; the defaults are the PyTorch CIFAR-10 tutorial's."""

    optimizer: OptimizerName = OptimizerName.SGD
    lr: float = 0.001
    momentum: float = 0.9
    batch_size: int = 4
    epochs: int = 2
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "optimizer", _optimizer_name(self.optimizer))
        _check_range("lr", self.lr, 1e-7, 10.0, "0.001 is the tutorial's")
        _check_range("momentum", self.momentum, 0.0, 0.999, "0.9 is the tutorial's")
        _check_int("batch_size", self.batch_size, 1, 4096)
        _check_int("epochs", self.epochs, 1, 200)
        _check_int("seed", self.seed, 0, 2**31 - 1)

    def to_dict(self) -> dict:
        return {**asdict(self), "optimizer": self.optimizer.value}


def _optimizer_name(value) -> OptimizerName:
    try:
        return OptimizerName(value)
    except ValueError:
        raise ConfigError(f"optimizer {value!r} is unknown; use sgd or adam") from None


def _check_range(name: str, value, low: float, high: float, hint: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not low <= value <= high or math.isnan(value):
        raise ConfigError(
            f"{name} {value!r} is out of range; use a number from {low:g} to "
            f"{high:g} ({hint})"
        )


def _check_int(name: str, value, low: int, high: int) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not low <= value <= high
    ):
        raise ConfigError(
            f"{name} {value!r} is out of range; use a whole number from {low} to {high}"
        )


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; a named device must exist here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device {name!r} is not a device name; use auto, cpu, cuda or mps"
        ) from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available.get(device.type, False):
        raise ConfigError(
            f"device {name!r} is not available on this machine; use auto or cpu"
        )
    return device


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class TrainStarted:
    total_steps: int
    device: str
    params: int


@dataclass(frozen=True)
class StepDone:
    epoch: int
    step: int
    total_steps: int
    loss: float
    seconds: float


@dataclass(frozen=True)
class EpochDone:
    epoch: int
    step: int
    train_loss: float
    train_accuracy: float
    test_accuracy: float
    seconds: float


Event = TrainStarted | StepDone | EpochDone


class Status(str, Enum):
    DONE = "done"
    STOPPED = "stopped"
    DIVERGED = "diverged"


@dataclass
class TrainResult:
    """What a run measured; accuracies in percent."""

    status: Status
    message: str
    test_accuracy: float
    per_class: dict[str, float]
    confusion: list[list[int]]
    seconds: float
    images_per_second: float
    device: str
    steps: int
    epochs: list[EpochDone] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("model")
        out["status"] = self.status.value
        out["losses"] = [list(p) for p in self.losses]
        return out


# ---------------------------------------------------------------- the loop


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Built from the model's parameters where they live now, after any .to()."""
    if config.optimizer is OptimizerName.ADAM:
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)


def train(
    spec: Spec,
    config: TrainConfig,
    data: Cifar10,
    on_event: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train `spec` on `data.train` and test it on `data.test`.

    Args:
        spec: the network; an invalid spec raises SpecError before any work.
        config: the settings; the seed fixes the weights and the data order.
        data: CIFAR-10 as uint8 tensors.
        on_event: called with TrainStarted, StepDone and EpochDone events.
        should_stop: polled once per batch; True ends the run after that batch.
    """
    device = resolve_device(config.device)
    emit = on_event or (lambda event: None)
    stop = should_stop or (lambda: False)

    torch.manual_seed(config.seed)
    model = build_model(spec).to(device)
    params = sum(p.numel() for p in model.parameters())
    if params > MAX_PARAMS:
        raise ConfigError(
            f"the model has {params:,} parameters, more than {MAX_PARAMS:,}; "
            "lower out_channels or out_features"
        )
    optimizer = make_optimizer(model, config)
    loop = _Loop(model, optimizer, config, data, device, emit, stop)
    emit(TrainStarted(loop.total_steps, str(device), params))
    status, message = loop.run()
    return loop.result(status, message, data.test)


class _Loop:
    """The state of one training run, so each step of it stays short."""

    def __init__(self, model, optimizer, config, data, device, emit, stop):
        self.model, self.optimizer, self.config = model, optimizer, config
        self.data, self.device, self.emit, self.stop = data, device, emit, stop
        per_epoch = math.ceil(len(data.train) / config.batch_size)
        self.total_steps = per_epoch * config.epochs
        self.report_every = max(1, self.total_steps // LOSS_POINTS)
        self.loss_fn = nn.CrossEntropyLoss()
        self.step = 0
        self.images = 0
        self.losses: list[tuple[int, float]] = []
        self.epochs: list[EpochDone] = []
        self.start = time.perf_counter()
        self.train_seconds = 0.0

    def run(self) -> tuple[Status, str]:
        for epoch in range(1, self.config.epochs + 1):
            status, message = self._epoch(epoch)
            if status is not Status.DONE:
                return status, message
        return Status.DONE, f"trained {self.config.epochs} epochs"

    def _epoch(self, epoch: int) -> tuple[Status, str]:
        self.model.train()
        window_loss, window_steps = 0.0, 0
        epoch_loss, correct, seen = 0.0, 0, 0
        began = time.perf_counter()
        for images, labels in batches(
            self.data.train,
            self.config.batch_size,
            seed=self.config.seed,
            epoch=epoch,
            device=self.device,
        ):
            logits = self.model(images)
            loss = self.loss_fn(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            self.images += len(labels)

            value = loss.item()
            if not math.isfinite(value):
                self.train_seconds += time.perf_counter() - began
                return Status.DIVERGED, (
                    f"loss became {value} at step {self.step} with lr "
                    f"{self.config.lr:g}; lower the learning rate"
                )
            window_loss += value
            window_steps += 1
            epoch_loss += value * len(labels)
            seen += len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            if self.step % self.report_every == 0:
                self._report(epoch, window_loss / window_steps)
                window_loss, window_steps = 0.0, 0
            if self.stop():
                self.train_seconds += time.perf_counter() - began
                return Status.STOPPED, f"stopped at step {self.step}"
        self.train_seconds += time.perf_counter() - began

        accuracy, _ = evaluate(self.model, self.data.test, self.device)
        done = EpochDone(
            epoch,
            self.step,
            epoch_loss / max(seen, 1),
            100.0 * correct / max(seen, 1),
            accuracy,
            time.perf_counter() - self.start,
        )
        self.epochs.append(done)
        self.emit(done)
        return Status.DONE, ""

    def _report(self, epoch: int, loss: float) -> None:
        self.losses.append((self.step, loss))
        elapsed = time.perf_counter() - self.start
        self.emit(StepDone(epoch, self.step, self.total_steps, loss, elapsed))

    def result(self, status: Status, message: str, test: ImageSet) -> TrainResult:
        accuracy, confusion = evaluate(self.model, test, self.device)
        total = confusion.sum(1)
        per_class = {
            name: 100.0 * float(confusion[i, i]) / max(int(total[i]), 1)
            for i, name in enumerate(test.classes)
        }
        return TrainResult(
            status=status,
            message=message,
            test_accuracy=accuracy,
            per_class=per_class,
            confusion=confusion.tolist(),
            seconds=time.perf_counter() - self.start,
            images_per_second=self.images / max(self.train_seconds, 1e-9),
            device=str(self.device),
            steps=self.step,
            epochs=self.epochs,
            losses=self.losses,
            model=self.model,
        )


@torch.no_grad()
def evaluate(
    model: nn.Module, data: ImageSet, device: torch.device, batch_size: int = 1000
) -> tuple[float, torch.Tensor]:
    """Test accuracy in percent and the confusion matrix (rows: true class)."""
    was_training = model.training
    model.eval()
    classes = len(data.classes)
    confusion = torch.zeros(classes * classes, dtype=torch.int64)
    for images, labels in batches(
        data, batch_size, seed=0, epoch=0, device=device, shuffle=False
    ):
        predictions = model(images).argmax(1)
        pairs = (labels * classes + predictions).cpu()
        confusion += torch.bincount(pairs, minlength=classes * classes)
    model.train(was_training)
    confusion = confusion.view(classes, classes)
    accuracy = 100.0 * float(confusion.trace()) / max(int(confusion.sum()), 1)
    return accuracy, confusion
