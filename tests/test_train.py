"""The training loop on tiny in-memory data: learning, seeds, stopping, divergence,
the test metrics, settings and events."""

from __future__ import annotations

import importlib
import json
import re

import pytest
import torch
from torch import nn

from surgery.data import CIFAR10_CLASSES, Cifar10, ImageSet, batches, normalize
from surgery.model import build_model
from surgery.presets import TUTORIAL_LENET
from surgery.spec import (
    FC,
    Act,
    Activation,
    BatchNorm,
    Conv,
    Dropout,
    Pool,
    Spec,
    SpecError,
)
from surgery.train import (
    MAX_PARAMS,
    ConfigError,
    EpochDone,
    OptimizerName,
    Status,
    StepDone,
    TrainConfig,
    TrainStarted,
    evaluate,
    make_optimizer,
    resolve_device,
    train,
    training_threads,
)

# The module itself, to replace its helpers in a test (the package re-exports train).
train_module = importlib.import_module("surgery.train")
RELU = Act(Activation.RELU)
SMALL = Spec(input=(3, 8, 8), blocks=(Conv(8, 3), RELU, Pool(), FC(32), RELU, FC(10)))
# No activation between the fcs: with a huge lr the weights grow without bound.
LINEAR = Spec(input=(3, 8, 8), blocks=(FC(64), FC(10)))


def colour_images(n: int, seed: int, size: int = 8) -> ImageSet:
    """Images whose brightness says the class, with noise: learnable in an epoch."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    base = (labels * 25).view(n, 1, 1, 1).expand(n, 3, size, size)
    noise = torch.randint(0, 40, (n, 3, size, size), generator=generator)
    images = (base + noise).clamp(0, 255).to(torch.uint8)
    return ImageSet(images, labels, CIFAR10_CLASSES)


def fake_cifar(n_train: int = 300, n_test: int = 100, size: int = 8) -> Cifar10:
    return Cifar10(
        colour_images(n_train, 0, size), colour_images(n_test, 1, size), "fake"
    )


@pytest.fixture(scope="module")
def data() -> Cifar10:
    return fake_cifar()


def config(**changes) -> TrainConfig:
    values = {"batch_size": 4, "epochs": 1, "device": "cpu", **changes}
    return TrainConfig(**values)


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [tensor.detach().clone() for tensor in model.state_dict().values()]


# ---------------------------------------------------------------- learning


def test_loss_falls_and_accuracy_beats_chance(data: Cifar10) -> None:
    result = train(SMALL, config(optimizer="adam", lr=0.01, epochs=2), data)
    assert result.status is Status.DONE
    assert result.message == "trained 2 epochs"
    first, second = result.epochs
    assert second.train_loss < first.train_loss
    assert result.losses[-1][1] < result.losses[0][1]
    assert second.train_accuracy > 30
    assert result.test_accuracy > 30
    assert result.test_accuracy == second.test_accuracy


def test_result_counts(data: Cifar10) -> None:
    result = train(SMALL, config(batch_size=7, epochs=2), data)
    assert result.steps == 2 * 43
    assert [done.step for done in result.epochs] == [43, 86]
    assert result.device == "cpu"
    assert result.images_per_second > 0
    assert result.seconds > 0
    assert isinstance(result.model, nn.Sequential)


# ---------------------------------------------------------------- seeds


def run_summary(result) -> tuple:
    epochs = [
        (e.step, e.train_loss, e.train_accuracy, e.test_accuracy) for e in result.epochs
    ]
    return (result.losses, epochs, result.per_class, result.confusion)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_same_seed_gives_the_same_run(data: Cifar10, optimizer: str) -> None:
    spec = Spec(input=(3, 8, 8), blocks=(Conv(8, 3), RELU, Dropout(0.3), FC(10)))
    first = train(spec, config(seed=5, epochs=2, optimizer=optimizer), data)
    again = train(spec, config(seed=5, epochs=2, optimizer=optimizer), data)
    assert run_summary(first) == run_summary(again)
    assert all(
        torch.equal(a, b) for a, b in zip(weights(first.model), weights(again.model))
    )


def test_another_seed_gives_another_run(data: Cifar10) -> None:
    first = train(SMALL, config(seed=5), data)
    other = train(SMALL, config(seed=6), data)
    assert first.losses != other.losses
    assert not torch.equal(weights(first.model)[0], weights(other.model)[0])


def test_initial_weights_are_the_seeded_build(data: Cifar10, monkeypatch) -> None:
    seen = {}

    def recording(model, config):
        seen["weights"] = weights(model)
        return make_optimizer(model, config)

    monkeypatch.setattr(train_module, "make_optimizer", recording)
    train(SMALL, config(seed=9), data, should_stop=lambda: True)
    torch.manual_seed(9)
    expected = weights(build_model(SMALL))
    assert all(torch.equal(a, b) for a, b in zip(seen["weights"], expected))


# ---------------------------------------------------------------- stopping, divergence


@pytest.mark.parametrize("k", [1, 3, 80], ids=["1", "3", "80-second-epoch"])
def test_should_stop_ends_after_that_batch(data: Cifar10, k: int) -> None:
    polls = []

    def should_stop() -> bool:
        polls.append(1)
        return len(polls) >= k

    result = train(SMALL, config(epochs=2), data, should_stop=should_stop)
    assert result.status is Status.STOPPED
    assert result.steps == k
    assert result.message == f"stopped at step {k}"
    assert len(result.epochs) == (1 if k > 75 else 0)
    assert sum(sum(row) for row in result.confusion) == 100


def first_non_finite_step(spec: Spec, cfg: TrainConfig, data: Cifar10) -> int | None:
    """The oracle: the same steps written out by hand."""
    torch.manual_seed(cfg.seed)
    model = build_model(spec)
    optimizer = make_optimizer(model, cfg)
    step = 0
    with training_threads(cfg.batch_size, torch.device("cpu")):
        for images, labels in batches(
            data.train, cfg.batch_size, seed=cfg.seed, epoch=1, device="cpu"
        ):
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if not torch.isfinite(loss):
                return step
    return None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_huge_learning_rate_diverges_at_the_named_step(data: Cifar10, seed) -> None:
    cfg = config(lr=10.0, momentum=0.99, seed=seed)
    events = []
    result = train(LINEAR, cfg, data, on_event=events.append)

    step = first_non_finite_step(LINEAR, cfg, data)
    assert step is not None
    assert result.status is Status.DIVERGED
    assert re.fullmatch(
        rf"loss became (nan|inf) at step {step} with lr 10; lower the learning rate",
        result.message,
    )
    assert result.steps == step
    assert all(
        event.loss == event.loss for event in events if isinstance(event, StepDone)
    )
    assert not any(isinstance(event, EpochDone) for event in events)


def test_divergence_inside_a_report_window_names_the_exact_step() -> None:
    # 1,600 images at batch 4: 400 steps, a report every 2 steps.
    data = fake_cifar(n_train=1600, n_test=20)
    cfg = config(lr=10.0, momentum=0.99, seed=1)
    result = train(LINEAR, cfg, data)
    step = first_non_finite_step(LINEAR, cfg, data)
    assert f"at step {step} with lr 10;" in result.message


# ---------------------------------------------------------------- test metrics


def manual_confusion(model: nn.Module, test: ImageSet) -> list[list[int]]:
    """One image at a time, counted by hand: rows are the true class."""
    model.eval()
    confusion = [[0] * 10 for _ in range(10)]
    with torch.no_grad():
        for image, label in zip(test.images, test.labels):
            predicted = int(model(normalize(image.unsqueeze(0))).argmax(1))
            confusion[int(label)][predicted] += 1
    return confusion


def test_confusion_and_per_class_exact_when_batches_do_not_divide() -> None:
    data = Cifar10(colour_images(60, 0), colour_images(103, 1), "fake")
    result = train(SMALL, config(batch_size=7, optimizer="adam", lr=0.01), data)

    expected = manual_confusion(result.model, data.test)
    assert result.confusion == expected
    for index, name in enumerate(CIFAR10_CLASSES):
        row = expected[index]
        assert result.per_class[name] == pytest.approx(100 * row[index] / sum(row))
    right = sum(expected[i][i] for i in range(10))
    assert result.test_accuracy == pytest.approx(100 * right / 103)


@pytest.mark.parametrize("batch_size", [1, 10, 1000], ids=["1", "10", "1000"])
def test_evaluate_with_any_batch_size(batch_size: int) -> None:
    test = colour_images(23, 2)
    torch.manual_seed(0)
    model = build_model(SMALL)
    accuracy, confusion = evaluate(model, test, torch.device("cpu"), batch_size)
    assert confusion.tolist() == manual_confusion(model, test)
    assert accuracy == pytest.approx(100 * float(confusion.trace()) / 23)
    assert model.training is False


def test_evaluate_restores_training_mode() -> None:
    model = build_model(SMALL)
    model.train()
    evaluate(model, colour_images(5, 0), torch.device("cpu"))
    assert model.training


# ---------------------------------------------------------------- optimizer


def test_the_optimizer_holds_the_models_parameters_after_to(data, monkeypatch) -> None:
    built = {}

    def recording(model, config):
        built["model"], built["optimizer"] = model, make_optimizer(model, config)
        return built["optimizer"]

    monkeypatch.setattr(train_module, "make_optimizer", recording)
    result = train(SMALL, config(), data, should_stop=lambda: True)
    held = [p for group in built["optimizer"].param_groups for p in group["params"]]
    assert [id(p) for p in held] == [id(p) for p in result.model.parameters()]


def test_make_optimizer_uses_the_parameters_where_they_live() -> None:
    model = build_model(SMALL).to("meta")
    optimizer = make_optimizer(model, config(optimizer="adam"))
    held = [p for group in optimizer.param_groups for p in group["params"]]
    assert [id(p) for p in held] == [id(p) for p in model.parameters()]
    assert all(p.is_meta for p in held)


@pytest.mark.parametrize("name", list(OptimizerName), ids=lambda n: n.value)
def test_make_optimizer_settings(name: OptimizerName) -> None:
    optimizer = make_optimizer(build_model(SMALL), config(optimizer=name, lr=0.02))
    expected = torch.optim.Adam if name is OptimizerName.ADAM else torch.optim.SGD
    assert type(optimizer) is expected
    assert optimizer.defaults["lr"] == 0.02
    if name is OptimizerName.SGD:
        assert optimizer.defaults["momentum"] == 0.9


# ---------------------------------------------------------------- settings


CONFIG_ERRORS = [
    ({"lr": 0}, "lr 0 is out of range; use a number from 1e-07 to 10 (0.001 is"),
    ({"lr": 11.0}, "lr 11.0 is out of range; use a number from 1e-07 to 10"),
    ({"lr": float("nan")}, "lr nan is out of range; use a number from 1e-07 to 10"),
    ({"lr": "0.1"}, "lr '0.1' is not a number; use a number from 1e-07 to 10"),
    ({"lr": True}, "lr True is not a number; use a number from 1e-07 to 10"),
    ({"momentum": 1.0}, "momentum 1.0 is out of range; use a number from 0 to 0.999"),
    (
        {"batch_size": 0},
        "batch_size 0 is out of range; use a whole number from 1 to 4096",
    ),
    (
        {"batch_size": 4097},
        "batch_size 4097 is out of range; use a whole number from 1",
    ),
    ({"batch_size": 4.0}, "batch_size 4.0 is not a whole number; use a whole number"),
    ({"epochs": 0}, "epochs 0 is out of range; use a whole number from 1 to 200"),
    ({"epochs": 201}, "epochs 201 is out of range; use a whole number from 1 to 200"),
    ({"seed": -1}, "seed -1 is out of range; use a whole number from 0 to 2147483647"),
    ({"seed": 2**31}, "seed 2147483648 is out of range; use a whole number from 0"),
    ({"optimizer": "rmsprop"}, "optimizer 'rmsprop' is unknown; use sgd or adam"),
    (
        {"device": "tpu"},
        "device 'tpu' is not a device name; use auto, cpu, cuda, cuda:1 or mps",
    ),
    ({"device": 0}, "device 0 is not a device name; use auto, cpu, cuda"),
]


@pytest.mark.parametrize(
    ("changes", "message"),
    CONFIG_ERRORS,
    ids=[f"{k}={v!r}" for changes, _ in CONFIG_ERRORS for k, v in changes.items()],
)
def test_config_error_message(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        TrainConfig(**changes)


def test_config_defaults_are_the_tutorials() -> None:
    defaults = TrainConfig()
    assert (defaults.optimizer, defaults.lr, defaults.momentum) == ("sgd", 0.001, 0.9)
    assert (defaults.batch_size, defaults.epochs) == (4, 2)
    assert TrainConfig(optimizer="adam").optimizer is OptimizerName.ADAM
    assert TrainConfig().to_dict()["optimizer"] == "sgd"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_when_unavailable_is_a_config_error(data: Cifar10) -> None:
    message = "device 'cuda' is not available on this machine; use auto or cpu"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        resolve_device("cuda")
    events = []
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        train(SMALL, config(device="cuda"), data, on_event=events.append)
    assert events == []


def test_auto_and_cpu_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else None
    if expected is None:
        expected = "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_invalid_spec_raises_before_any_training(data: Cifar10, monkeypatch) -> None:
    spec = Spec(input=(3, 8, 8), blocks=(Conv(6, 9), FC(10)))
    events = []
    monkeypatch.setattr(train_module, "batches", None)
    message = (
        "block 1 (conv): input 3x8x8 is smaller than kernel_size 9; lower "
        "kernel_size to 8 or set padding to 1"
    )
    with pytest.raises(SpecError, match=f"^{re.escape(message)}$"):
        train(spec, config(), data, on_event=events.append)
    assert events == []


def test_too_many_parameters_is_refused_before_building(data, monkeypatch) -> None:
    spec = Spec(
        input=(3, 512, 512), blocks=(Conv(1024, 3, padding=1), FC(65536), FC(10))
    )
    monkeypatch.setattr(train_module, "build_model", None)
    flatten = 1024 * 512 * 512
    params = (1024 * 27 + 1024) + (flatten * 65536 + 65536) + (65536 * 10 + 10)
    message = (
        f"the model has {params:,} parameters, more than {MAX_PARAMS:,}; lower "
        "out_channels or out_features"
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        train(spec, config(), data)


# ---------------------------------------------------------------- batchnorm


BN_AFTER_FC = Spec(input=(3, 8, 8), blocks=(FC(32), BatchNorm(), RELU, FC(10)))


def test_batchnorm_after_fc_skips_a_last_batch_of_one_image() -> None:
    # 301 images at batch 4: 75 batches of 4 and one of 1 per epoch.
    data = Cifar10(colour_images(301, 0), colour_images(20, 1), "fake")
    events = []
    result = train(BN_AFTER_FC, config(epochs=2), data, on_event=events.append)
    assert result.status is Status.DONE
    assert events[0].total_steps == 150
    assert result.steps == 150


def test_batchnorm_on_maps_trains_a_batch_of_one() -> None:
    spec = Spec(input=(3, 8, 8), blocks=(Conv(4, 3), BatchNorm(), FC(10)))
    data = Cifar10(colour_images(5, 0), colour_images(5, 1), "fake")
    result = train(spec, config(batch_size=1), data)
    assert result.steps == 5


def test_batch_size_one_with_batchnorm_after_fc_is_refused(data: Cifar10) -> None:
    message = (
        "batch_size 1 cannot train the batchnorm at block 2: it sees one value per "
        "channel from one image, and PyTorch needs more than one in training; use "
        "batch_size 2 or more"
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        train(BN_AFTER_FC, config(batch_size=1), data)


# ---------------------------------------------------------------- events


def test_event_order(data: Cifar10) -> None:
    events = []
    result = train(SMALL, config(epochs=2, batch_size=10), data, on_event=events.append)

    started = events[0]
    assert isinstance(started, TrainStarted)
    assert (started.total_steps, started.device) == (60, "cpu")
    assert started.params == sum(p.numel() for p in result.model.parameters())
    assert not any(isinstance(event, TrainStarted) for event in events[1:])

    epochs = [event for event in events if isinstance(event, EpochDone)]
    assert [(e.epoch, e.step) for e in epochs] == [(1, 30), (2, 60)]
    assert events[-1] == epochs[-1] == result.epochs[-1]

    steps = [event for event in events if isinstance(event, StepDone)]
    assert [event.step for event in steps] == list(range(1, 61))
    assert all(event.total_steps == 60 for event in steps)
    assert [event.epoch for event in steps] == [1] * 30 + [2] * 30
    assert [(event.step, event.loss) for event in steps] == result.losses
    assert events.index(epochs[0]) == events.index(steps[29]) + 1


def test_step_events_are_about_two_hundred(data: Cifar10) -> None:
    big = fake_cifar(n_train=2000, n_test=10)
    events = []
    train(LINEAR, config(lr=0.001), big, on_event=events.append)
    steps = [event.step for event in events if isinstance(event, StepDone)]
    assert steps == list(range(2, 501, 2))
    assert all(
        isinstance(event.loss, float) for event in events if isinstance(event, StepDone)
    )


def test_epoch_train_loss_is_the_image_weighted_mean(data: Cifar10) -> None:
    # batch 7 over 300 images: 42 batches of 7 and one of 6.
    events = []
    result = train(SMALL, config(batch_size=7), data, on_event=events.append)
    losses = [event.loss for event in events if isinstance(event, StepDone)]
    sizes = [7] * 42 + [6]
    expected = sum(loss * size for loss, size in zip(losses, sizes)) / 300
    assert result.epochs[0].train_loss == pytest.approx(expected)


def test_to_dict_is_json(data: Cifar10) -> None:
    result = train(SMALL, config(), data, should_stop=lambda: True)
    out = result.to_dict()
    assert "model" not in out
    assert out["status"] == "stopped"
    assert json.loads(json.dumps(out)) == out
    assert out["steps"] == 1


# ---------------------------------------------------------------- threads


def test_small_cpu_batches_use_one_thread_and_restore_the_count() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with training_threads(4, torch.device("cpu")):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with training_threads(512, torch.device("cpu")):
            assert torch.get_num_threads() == 2
        with pytest.raises(KeyError), training_threads(4, torch.device("cpu")):
            raise KeyError("x")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_train_restores_the_thread_count(data: Cifar10) -> None:
    before = torch.get_num_threads()
    train(SMALL, config(), data, should_stop=lambda: True)
    assert torch.get_num_threads() == before


def test_tutorial_lenet_trains_on_32x32(data: Cifar10) -> None:
    cifar = fake_cifar(n_train=40, n_test=20, size=32)
    result = train(TUTORIAL_LENET, config(), cifar)
    assert result.status is Status.DONE
    assert result.steps == 10
