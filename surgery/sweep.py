"""Sweeps: one setting varied over several seeds, so a comparison means something.

Two runs of the tutorial LeNet that differ only in their seed differ by a few
points after 2 epochs. A sweep trains every point (a combination of
architecture, batch_size, lr and optimizer) once per seed; runs of the same
seed see the same images in the same order (see `surgery.data.epoch_order`), so
points are compared seed by seed with `surgery.stats.paired_difference`.
"""

from __future__ import annotations

import copy
import math
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from enum import Enum

from .calibrate import CIFAR10_TEST, CIFAR10_TRAIN, estimate_seconds
from .presets import PRESETS, TUTORIAL_LENET
from .runs import RunManager, RunStatus, RunStore, check_trainable
from .shapes import trace
from .spec import Spec
from .stats import PairedDifference, paired_difference, seed_spread
from .train import ConfigError, OptimizerName, TrainConfig

MAX_EPOCHS = 200


class Budget(str, Enum):
    """How long each batch size trains.

    EPOCHS: every run trains `epochs` epochs, so a bigger batch takes fewer
    optimizer steps. STEPS: every run takes as many steps as `epochs` epochs at
    `reference_batch`, so a bigger batch sees more epochs.
    """

    EPOCHS = "epochs"
    STEPS = "steps"


class Axis(str, Enum):
    """The settings a sweep can vary, in the order their labels are written."""

    ARCHITECTURE = "architecture"
    OPTIMIZER = "optimizer"
    LR = "lr"
    BATCH_SIZE = "batch_size"


def _enum(enum: type[Enum], value, name: str):
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(m.value for m in enum)
        raise ConfigError(
            f"{name} {value!r} is unknown; use one of {choices}"
        ) from None


def _check_list(name: str, values: list) -> None:
    if not values:
        raise ConfigError(f"{name} is empty; give at least one value")
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ConfigError(
            f"{name} lists {repeated[0]} more than once; give each value once"
        )


@dataclass
class SweepSpec:
    """Every combination of the lists below is a point; each point runs per seed.

    Args:
        architectures: label -> spec, e.g. {"tutorial LeNet": TUTORIAL_LENET}.
        batch_sizes, lrs, optimizers: the values tried.
        seeds: one run per seed per point; the same seeds for every point.
        epochs: epochs per run (at `reference_batch` for the steps budget).
        budget: Budget.EPOCHS or Budget.STEPS; see `epochs_for`.
        scale_lr: multiply lr by batch_size / reference_batch (linear scaling).
        reference_batch: the batch size the lr and epochs are meant for.
        momentum, device: passed to every TrainConfig.
        title: shown with the sweep's results.
    """

    architectures: dict[str, Spec] = field(
        default_factory=lambda: {"tutorial LeNet": TUTORIAL_LENET}
    )
    batch_sizes: list[int] = field(default_factory=lambda: [4])
    lrs: list[float] = field(default_factory=lambda: [0.001])
    optimizers: list[OptimizerName] = field(default_factory=lambda: [OptimizerName.SGD])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: int = 2
    budget: Budget = Budget.EPOCHS
    scale_lr: bool = False
    reference_batch: int = 4
    momentum: float = 0.9
    device: str = "auto"
    title: str = ""

    def __post_init__(self) -> None:
        self.budget = _enum(Budget, self.budget, "budget")
        self.optimizers = [
            _enum(OptimizerName, o, "optimizer") for o in self.optimizers
        ]
        if not self.architectures:
            raise ConfigError("architectures is empty; add at least one label -> spec")
        for name in ("batch_sizes", "lrs", "optimizers", "seeds"):
            setattr(self, name, list(getattr(self, name)))
            _check_list(name, getattr(self, name))
        self.architectures = dict(self.architectures)
        # TrainConfig checks each value's range; a bad one fails here, not mid-sweep.
        TrainConfig(batch_size=self.reference_batch, epochs=self.epochs)

    @property
    def axes(self) -> list[Axis]:
        """The settings with more than one value, in label order."""
        counts = {
            Axis.ARCHITECTURE: len(self.architectures),
            Axis.OPTIMIZER: len(self.optimizers),
            Axis.LR: len(self.lrs),
            Axis.BATCH_SIZE: len(self.batch_sizes),
        }
        return [axis for axis, count in counts.items() if count > 1]

    @property
    def points(self) -> int:
        return (
            len(self.architectures)
            * len(self.optimizers)
            * len(self.lrs)
            * len(self.batch_sizes)
        )

    def to_dict(self) -> dict:
        out = asdict(self)
        out["architectures"] = {k: s.to_dict() for k, s in self.architectures.items()}
        out["optimizers"] = [o.value for o in self.optimizers]
        out["budget"] = self.budget.value
        return out


@dataclass(frozen=True)
class SweepMember:
    """One run of a sweep: its point's label and x value, the spec and settings."""

    label: str
    spec: Spec
    config: TrainConfig
    x: float | int | str
    architecture: str


def epochs_for(sweep: SweepSpec, batch_size: int) -> int:
    """Epochs a run at `batch_size` trains under the sweep's budget.

    With Budget.STEPS the exact count, epochs x batch_size / reference_batch,
    is rounded to the nearest whole epoch (halves up), at least 1: TrainConfig
    has no step limit, so a run of batch_size 6 at reference 4 and 2 epochs
    trains 3 epochs, and batch_size 75 trains 38 (37.5 exactly).
    """
    if sweep.budget is Budget.EPOCHS:
        return sweep.epochs
    exact = sweep.epochs * batch_size / sweep.reference_batch
    epochs = max(1, math.floor(exact + 0.5))
    if epochs > MAX_EPOCHS:
        raise ConfigError(
            f"batch_size {batch_size} with the steps budget needs {epochs} epochs "
            f"({sweep.epochs} at batch_size {sweep.reference_batch}), above "
            f"{MAX_EPOCHS}; lower epochs or batch_size, or use the epochs budget"
        )
    return epochs


def lr_for(sweep: SweepSpec, lr: float, batch_size: int) -> float:
    """lr, times batch_size / reference_batch when the sweep scales it."""
    if not sweep.scale_lr:
        return lr
    return lr * batch_size / sweep.reference_batch


def expand(sweep: SweepSpec) -> list[SweepMember]:
    """Every run of the sweep, seed by seed: all points of seed 0 come first.

    That order gives a first complete picture (one run per point) early.
    """
    points = [
        (arch, optimizer, lr, batch)
        for arch in sweep.architectures
        for optimizer in sweep.optimizers
        for lr in sweep.lrs
        for batch in sweep.batch_sizes
    ]
    return [_member(sweep, *point, seed) for seed in sweep.seeds for point in points]


def _member(
    sweep: SweepSpec, arch: str, optimizer: OptimizerName, lr: float, batch: int, seed
) -> SweepMember:
    config = TrainConfig(
        optimizer=optimizer,
        lr=lr_for(sweep, lr, batch),
        momentum=sweep.momentum,
        batch_size=batch,
        epochs=epochs_for(sweep, batch),
        seed=seed,
        device=sweep.device,
    )
    values = {
        Axis.ARCHITECTURE: arch,
        Axis.OPTIMIZER: optimizer.value,
        Axis.LR: lr,
        Axis.BATCH_SIZE: batch,
    }
    axes = sweep.axes
    label = _label(sweep, arch, values, config)
    x = values[axes[0]] if len(axes) == 1 else label
    return SweepMember(label, sweep.architectures[arch], config, x, arch)


def _label(sweep: SweepSpec, arch: str, values: dict, config: TrainConfig) -> str:
    """'batch_size 16 (lr 0.004, 8 epochs)': the varied settings, then derived ones."""
    words = {
        Axis.ARCHITECTURE: arch,
        Axis.OPTIMIZER: _optimizer_word(values[Axis.OPTIMIZER]),
        Axis.LR: f"lr {values[Axis.LR]:g}",
        Axis.BATCH_SIZE: f"batch_size {values[Axis.BATCH_SIZE]}",
    }
    parts = [words[axis] for axis in sweep.axes] or [arch]
    derived = []
    if sweep.scale_lr and Axis.LR not in sweep.axes and len(sweep.batch_sizes) > 1:
        derived.append(f"lr {config.lr:g}")
    if sweep.budget is Budget.STEPS and len(sweep.batch_sizes) > 1:
        derived.append(f"{config.epochs} epochs")
    label = ", ".join(parts)
    return f"{label} ({', '.join(derived)})" if derived else label


def _optimizer_word(name: str) -> str:
    return {"sgd": "SGD", "adam": "Adam"}.get(name, name)


# ---------------------------------------------------------------- submitting


def submit_sweep(manager: RunManager, sweep: SweepSpec, title: str = "") -> str:
    """Queue every run of the sweep; return the group id they share.

    Every spec and setting is checked before anything is queued, so a bad
    point raises SpecError or ConfigError and queues nothing.
    """
    members = expand(sweep)
    for member in members:
        check_trainable(member.spec, member.config)

    group_id = f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    manager.store.create_group(group_id, title or sweep.title, _group_info(sweep))
    for member in members:
        manager.submit(member.spec, member.config, "sweep", group_id, member.label)
    return group_id


def _group_info(sweep: SweepSpec) -> dict:
    """What sweep_summary needs later: the axis and the points in order."""
    first_seed = expand(sweep)[: sweep.points]
    axes = sweep.axes
    return {
        "axis": axes[0].value if len(axes) == 1 else "setting",
        "points": [{"label": m.label, "x": m.x} for m in first_seed],
        "sweep": sweep.to_dict(),
    }


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class PointSummary:
    """Test accuracy of one point over its finished ('done') runs.

    `values` and `seeds` line up; `mean` and `std` are NaN while no run of the
    point is done; `std` is 0.0 with one run. `pending` counts queued and
    running runs, `failed` the ones that ended otherwise (stopped, diverged,
    failed, interrupted).
    """

    label: str
    x: float | int | str
    mean: float
    std: float
    n: int
    values: list[float]
    seeds: list[int] = field(default_factory=list)
    pending: int = 0
    failed: int = 0

    def by_seed(self) -> dict[int, float]:
        return dict(zip(self.seeds, self.values))


def sweep_summary(store: RunStore, group_id: str) -> list[PointSummary]:
    """One summary per point of the sweep, in the sweep's order."""
    records = sorted(store.list_runs(group_id=group_id), key=lambda r: r.id)
    group = store.get_group(group_id)
    points = group["info"].get("points", []) if group else []
    order = {p["label"]: p["x"] for p in points}
    for record in records:
        order.setdefault(record.label, record.label)
    return [
        _summarize(label, x, [r for r in records if r.label == label])
        for label, x in order.items()
    ]


def _summarize(label: str, x, records: list) -> PointSummary:
    done = [r for r in records if r.status == RunStatus.DONE]
    pending = sum(r.status.active for r in records)
    failed = len(records) - len(done) - pending
    values = [r.test_accuracy for r in done]
    seeds = [r.config.seed for r in done]
    if not values:
        return PointSummary(label, x, math.nan, math.nan, 0, [], [], pending, failed)
    spread = seed_spread(values)
    return PointSummary(
        label, x, spread.mean, spread.std, spread.n, values, seeds, pending, failed
    )


def sweep_axis(store: RunStore, group_id: str) -> str:
    """The x-axis name of a sweep: a setting name, or 'setting' when several vary."""
    group = store.get_group(group_id)
    return group["info"].get("axis", "setting") if group else "setting"


def compare_points(
    points: list[PointSummary], reference: int = 0
) -> list[PairedDifference | None]:
    """Each point minus the reference point, paired by seed.

    None for the reference itself and for points sharing no finished seed with it.
    """
    base = points[reference]
    out: list[PairedDifference | None] = []
    for index, point in enumerate(points):
        common = set(point.seeds) & set(base.seeds)
        if index == reference or not common:
            out.append(None)
            continue
        out.append(
            paired_difference(point.by_seed(), base.by_seed(), point.label, base.label)
        )
    return out


# ---------------------------------------------------------------- estimate


@dataclass(frozen=True)
class SweepEstimate:
    """What a sweep costs before it starts.

    `total_seconds` adds up every run's estimate; `wall_seconds` divides it by
    the runs trained at once.
    """

    runs: int
    total_seconds: float
    params_per_arch: dict[str, int]
    mult_adds_per_arch: dict[str, int]
    wall_seconds: float = 0.0
    seconds_per_point: dict[str, float] = field(default_factory=dict)


def estimate_sweep(
    sweep: SweepSpec,
    concurrent: int = 1,
    n_images: int = CIFAR10_TRAIN,
    device: str | None = None,
    n_test: int = CIFAR10_TEST,
) -> SweepEstimate:
    """Estimate a sweep from a short calibration of each (spec, batch_size).

    Args:
        sweep: the sweep.
        concurrent: runs trained at once (the manager's max_concurrent).
        n_images: training images per epoch.
        n_test: test images, evaluated after every epoch and at the end.
        device: where it will train; default the sweep's device.
    """
    members = expand(sweep)
    per_point: dict[str, float] = {}
    total = 0.0
    for member in members:
        seconds = estimate_seconds(
            member.spec, member.config, n_images, device or sweep.device, n_test
        )
        per_point.setdefault(member.label, seconds)
        total += seconds
    reports = {label: trace(spec) for label, spec in sweep.architectures.items()}
    return SweepEstimate(
        runs=len(members),
        total_seconds=total,
        params_per_arch={k: r.total_params for k, r in reports.items()},
        mult_adds_per_arch={k: r.total_mult_adds for k, r in reports.items()},
        wall_seconds=total / max(1, concurrent),
        seconds_per_point=per_point,
    )


# ---------------------------------------------------------------- experiments


@dataclass(frozen=True)
class Experiment:
    """A one-click sweep from the write-up: what it varies and what it controls for."""

    name: str
    title: str
    explanation: str
    axis: str
    sweep: SweepSpec

    def make(self, **changes) -> SweepSpec:
        """A fresh copy of the sweep with `changes` (seeds=..., epochs=...) applied."""
        return replace(copy.deepcopy(self.sweep), **changes)


def _tutorial(**changes) -> SweepSpec:
    return SweepSpec(
        architectures={"tutorial LeNet": TUTORIAL_LENET}, seeds=[0, 1, 2], **changes
    )


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "batch-size",
            "Batch size: 4 to 75",
            "Trains the tutorial LeNet with batch_size 4, 8, 16, 32, 64 and 75 at "
            "the same lr 0.001, 2 epochs each, 3 seeds. Runs of one seed see the "
            "same images in the same order, so only the batch size differs. With "
            "the epochs budget a bigger batch also takes fewer optimizer steps "
            "(2 epochs are 25,000 steps at 4 but 1,334 at 75), which alone "
            "lowers accuracy; switch the budget to steps, or scale the lr with "
            "the batch size, to tell the two effects apart.",
            "batch_size",
            _tutorial(batch_sizes=[4, 8, 16, 32, 64, 75]),
        ),
        Experiment(
            "learning-rate",
            "Learning rate around the tutorial's 0.001",
            "Trains the tutorial LeNet with SGD (momentum 0.9) at lr 0.0003, "
            "0.001 and 0.003, batch_size 4, 2 epochs, 3 seeds. The same seed "
            "gives the same initial weights and the same data order at every "
            "lr, so each difference is the learning rate's alone, measured "
            "against the spread between seeds.",
            "lr",
            _tutorial(lrs=[0.0003, 0.001, 0.003]),
        ),
        Experiment(
            "optimizer",
            "SGD with momentum vs Adam",
            "Trains the tutorial LeNet with SGD (momentum 0.9) and with Adam, "
            "both at lr 0.001, batch_size 4, 2 epochs, 3 seeds. Initial weights "
            "and data order are shared seed by seed, so the paired difference "
            "isolates the optimizer. Adam's best lr is often lower than SGD's; "
            "one lr for both is the tutorial's setting, not each one's best.",
            "optimizer",
            _tutorial(optimizers=[OptimizerName.SGD, OptimizerName.ADAM]),
        ),
        Experiment(
            "padding",
            "Padded LeNet vs the tutorial LeNet",
            "Trains the tutorial LeNet and the same net with ZeroPad2d(2) in "
            "front (36x36 input, first fc 16 x 6 x 6 = 576 instead of 400), SGD "
            "lr 0.001, batch_size 4, 2 epochs, 3 seeds. Both see the same data "
            "order per seed; their initial weights differ because their shapes "
            "do. A difference measures padding together with the bigger first "
            "fc it brings.",
            "architecture",
            SweepSpec(
                architectures={
                    "tutorial LeNet": TUTORIAL_LENET,
                    "padded LeNet": PRESETS["padded-lenet"].spec,
                },
                seeds=[0, 1, 2],
            ),
        ),
    )
}


def get_experiment(name: str) -> Experiment:
    """The experiment called `name`; an unknown name lists the choices."""
    if name not in EXPERIMENTS:
        raise ConfigError(
            f"experiment {name!r} is unknown; use one of {', '.join(EXPERIMENTS)}"
        )
    return EXPERIMENTS[name]
