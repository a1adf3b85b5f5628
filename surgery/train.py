"""Training a spec on CIFAR-10: settings, progress events and results.

The loop never prints: it reports events to a callback. The same seed gives the
same weights, the same data order and, on the CPU, the same result.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from enum import Enum

import torch
from torch import nn

from .data import Cifar10, ImageSet, batches
from .model import build_model
from .shapes import ShapeReport, trace
from .spec import Spec, SpecError

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
        object.__setattr__(self, "device", _device_name(self.device))

    def to_dict(self) -> dict:
        return {**asdict(self), "optimizer": self.optimizer.value}


def _optimizer_name(value) -> OptimizerName:
    try:
        return OptimizerName(value)
    except ValueError:
        raise ConfigError(f"optimizer {value!r} is unknown; use sgd or adam") from None


def _check_range(name: str, value, low: float, high: float, hint: str) -> None:
    rule = f"use a number from {low:g} to {high:g} ({hint})"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} {value!r} is not a number; {rule}")
    if not low <= value <= high:
        raise ConfigError(f"{name} {value!r} is out of range; {rule}")


def _check_int(name: str, value, low: int, high: int) -> None:
    rule = f"use a whole number from {low} to {high}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} {value!r} is not a whole number; {rule}")
    if not low <= value <= high:
        raise ConfigError(f"{name} {value!r} is out of range; {rule}")


DEVICE_TYPES = ("cpu", "cuda", "mps")


def _device_name(value) -> str:
    """'auto' or a name torch reads as a cpu, cuda or mps device ('cuda:1')."""
    name = str(value) if isinstance(value, torch.device) else value
    if name == "auto":
        return name
    device_type = None
    if isinstance(name, str):
        try:
            device_type = torch.device(name).type
        except RuntimeError:
            pass
    if device_type not in DEVICE_TYPES:
        raise ConfigError(
            f"device {value!r} is not a device name; use auto, cpu, cuda, cuda:1 or mps"
        )
    return name


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; a named device must exist here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(_device_name(name))
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available.get(device.type, False):
        raise ConfigError(
            f"device {name!r} is not available on this machine; use auto or cpu"
        )
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.index is not None and device.type == "cuda" and device.index >= count:
        raise ConfigError(
            f"device {name!r} is not available on this machine, which has "
            f"{count} GPU(s); use cuda:0 to cuda:{count - 1}, or auto"
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
        """Plain JSON values, without the model (asdict would deep-copy it)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}
        out["status"] = self.status.value
        out["per_class"] = dict(self.per_class)
        out["confusion"] = [list(row) for row in self.confusion]
        out["epochs"] = [asdict(done) for done in self.epochs]
        out["losses"] = [list(point) for point in self.losses]
        return out


# ---------------------------------------------------------------- the loop

# At this batch size or below a CPU step is a few small kernels that one thread
# runs as fast as several; when the cores are busy, waiting for the other threads
# made the tutorial net 10-20x slower at batch 4 and 64 (2-core machine).
SMALL_BATCH = 64


@contextlib.contextmanager
def training_threads(batch_size: int, device: torch.device) -> Iterator[None]:
    """One CPU thread for small batches on the CPU, restored afterwards."""
    before = torch.get_num_threads()
    single = device.type == "cpu" and batch_size <= SMALL_BATCH and before > 1
    if single:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if single:
            torch.set_num_threads(before)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Built from the model's parameters where they live now, after any .to().

    The fused kernels update all parameters in one call: at batch 4 on the CPU
    the per-parameter loop took 5% (SGD) to 20% (Adam) of each step.
    """
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    fused = device.type in ("cpu", "cuda", "mps")
    try:
        return _optimizer(params, config, fused)
    except RuntimeError:
        return _optimizer(params, config, False)


def _optimizer(params: list, config: TrainConfig, fused: bool) -> torch.optim.Optimizer:
    speed = {"fused": True} if fused else {"foreach": True}
    if config.optimizer is OptimizerName.ADAM:
        return torch.optim.Adam(params, lr=config.lr, **speed)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, **speed)


def train(
    spec: Spec,
    config: TrainConfig,
    data: Cifar10,
    on_event: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train `spec` on `data.train` and test it on `data.test`.

    Seeds torch's global random state with `config.seed` (the weights and
    dropout), and batches in the order `batches` gives for the seed.

    Args:
        spec: the network; an invalid spec raises SpecError before any work.
        config: the settings; the seed fixes the weights and the data order.
        data: CIFAR-10 as uint8 tensors.
        on_event: called with TrainStarted, StepDone and EpochDone events.
        should_stop: polled once per batch; True ends the run after that batch.

    Raises:
        SpecError: the spec cannot run.
        ConfigError: the device is not here, the model is too large, or
            batch_size 1 meets a batchnorm that needs two values per channel.
    """
    device = resolve_device(config.device)
    report = trace(spec)
    if report.error is not None:
        raise SpecError(report.error.message, report.error.index)
    check_size(report, config)

    emit = on_event or (lambda event: None)
    stop = should_stop or (lambda: False)
    torch.manual_seed(config.seed)
    model = build_model(spec).to(device)
    optimizer = make_optimizer(model, config)
    loop = _Loop(model, optimizer, config, data, device, emit, stop)
    loop.skip_single = _single_image_block(report) is not None
    emit(TrainStarted(loop.total_steps(), str(device), report.total_params))
    with training_threads(config.batch_size, device):
        status, message = loop.run()
        return loop.result(status, message, data.test)


def check_size(report: ShapeReport, config: TrainConfig) -> None:
    """Refuse, before any memory is taken, what cannot train (ConfigError)."""
    if report.total_params > MAX_PARAMS:
        raise ConfigError(
            f"the model has {report.total_params:,} parameters, more than "
            f"{MAX_PARAMS:,}; lower out_channels or out_features"
        )
    block = _single_image_block(report)
    if block is not None and config.batch_size == 1:
        raise ConfigError(
            f"batch_size 1 cannot train the batchnorm at block {block}: it sees one "
            "value per channel from one image, and PyTorch needs more than one in "
            "training; use batch_size 2 or more"
        )


def _single_image_block(report: ShapeReport) -> int | None:
    """The first batchnorm that sees one value per channel per image (after an fc,
    or on 1x1 maps), which a batch of one image cannot train."""
    for row in report.rows:
        if row.type == "batchnorm" and math.prod(row.input_shape[1:]) == 1:
            return row.index
    return None


class _Loop:
    """The state of one training run, so each step of it stays short.

    Losses and logits stay on the device until a report is due: one transfer per
    report instead of one per step, which a GPU would otherwise wait on.
    """

    def __init__(self, model, optimizer, config, data, device, emit, stop):
        self.model, self.optimizer, self.config = model, optimizer, config
        self.data, self.device, self.emit, self.stop = data, device, emit, stop
        self.loss_fn = nn.CrossEntropyLoss()
        # Set when a batchnorm sees one value per channel: a last batch of one
        # image is skipped, since PyTorch cannot normalise it in training.
        self.skip_single = False
        self.step = 0
        self.images = 0
        self.pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.window_loss, self.window_steps = 0.0, 0
        self.epoch_loss, self.correct, self.seen = 0.0, 0, 0
        self.losses: list[tuple[int, float]] = []
        self.epochs: list[EpochDone] = []
        self.confusion: torch.Tensor | None = None
        self.start = time.perf_counter()
        self.train_seconds = 0.0

    def steps_per_epoch(self) -> int:
        n, size = len(self.data.train), self.config.batch_size
        dropped = self.skip_single and n % size == 1
        return math.ceil(n / size) - dropped

    def total_steps(self) -> int:
        return self.steps_per_epoch() * self.config.epochs

    def run(self) -> tuple[Status, str]:
        self.report_every = max(1, self.total_steps() // LOSS_POINTS)
        for epoch in range(1, self.config.epochs + 1):
            status, message = self._epoch(epoch)
            if status is not Status.DONE:
                return status, message
        return Status.DONE, f"trained {self.config.epochs} epochs"

    def _epoch(self, epoch: int) -> tuple[Status, str]:
        self.model.train()
        self.epoch_loss, self.correct, self.seen = 0.0, 0, 0
        began = time.perf_counter()
        status, message = self._steps(epoch)
        self.train_seconds += time.perf_counter() - began
        if status is not Status.DONE:
            return status, message

        accuracy, self.confusion = evaluate(self.model, self.data.test, self.device)
        done = EpochDone(
            epoch,
            self.step,
            self.epoch_loss / max(self.seen, 1),
            100.0 * self.correct / max(self.seen, 1),
            accuracy,
            time.perf_counter() - self.start,
        )
        self.epochs.append(done)
        self.emit(done)
        return Status.DONE, ""

    def _steps(self, epoch: int) -> tuple[Status, str]:
        """One pass over the training images; a report every `report_every`."""
        model, optimizer, loss_fn = self.model, self.optimizer, self.loss_fn
        for images, labels in self._batches(epoch):
            logits = model(images)
            loss = loss_fn(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self.step += 1
            self.images += len(labels)
            self.pending.append((loss.detach(), logits.detach(), labels))

            ended = self._after_step(epoch)
            if ended is not None:
                return ended
        diverged = self._flush()
        return (Status.DIVERGED, diverged) if diverged else (Status.DONE, "")

    def _after_step(self, epoch: int) -> tuple[Status, str] | None:
        """Report when due, then ask whether to stop; None carries on."""
        if self.step % self.report_every == 0:
            diverged = self._flush()
            if diverged:
                return Status.DIVERGED, diverged
            self._report(epoch)
        if not self.stop():
            return None
        diverged = self._flush()
        if diverged:
            return Status.DIVERGED, diverged
        return Status.STOPPED, f"stopped at step {self.step}"

    def _batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in batches(
            self.data.train,
            self.config.batch_size,
            seed=self.config.seed,
            epoch=epoch,
            device=self.device,
        ):
            if self.skip_single and len(labels) == 1:
                continue
            yield images, labels

    def _flush(self) -> str | None:
        """Bring the pending steps' losses and predictions to Python; the message
        of the first step whose loss is not finite, if any."""
        if not self.pending:
            return None
        losses, logits, labels = zip(*self.pending)
        first = self.step - len(self.pending) + 1
        self.pending = []
        values = torch.stack(losses).tolist()
        sizes = [len(batch) for batch in labels]
        right = torch.cat(logits).argmax(1) == torch.cat(labels)
        self.correct += int(right.sum())
        for offset, (value, size) in enumerate(zip(values, sizes)):
            if not math.isfinite(value):
                return (
                    f"loss became {value} at step {first + offset} with lr "
                    f"{self.config.lr:g}; lower the learning rate"
                )
            self.window_loss += value
            self.window_steps += 1
            self.epoch_loss += value * size
            self.seen += size
        return None

    def _report(self, epoch: int) -> None:
        if not self.window_steps:
            return
        loss = self.window_loss / self.window_steps
        self.window_loss, self.window_steps = 0.0, 0
        self.losses.append((self.step, loss))
        elapsed = time.perf_counter() - self.start
        self.emit(StepDone(epoch, self.step, self.total_steps(), loss, elapsed))

    def result(self, status: Status, message: str, test: ImageSet) -> TrainResult:
        confusion = self.confusion
        if status is not Status.DONE or confusion is None:
            _, confusion = evaluate(self.model, test, self.device)
        total = confusion.sum(1)
        per_class = {
            name: 100.0 * float(confusion[i, i]) / max(int(total[i]), 1)
            for i, name in enumerate(test.classes)
        }
        return TrainResult(
            status=status,
            message=message,
            test_accuracy=100.0 * float(confusion.trace()) / max(int(total.sum()), 1),
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
    confusion = torch.zeros(classes * classes, dtype=torch.int64, device=device)
    for images, labels in batches(
        data, batch_size, seed=0, epoch=0, device=device, shuffle=False
    ):
        predictions = model(images).argmax(1)
        confusion += torch.bincount(
            labels * classes + predictions, minlength=classes * classes
        )
    model.train(was_training)
    confusion = confusion.cpu().view(classes, classes)
    accuracy = 100.0 * float(confusion.trace()) / max(int(confusion.sum()), 1)
    return accuracy, confusion
