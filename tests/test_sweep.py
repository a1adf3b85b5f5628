"""Sweeps: expansion into runs, budgets, lr scaling, summaries and estimates."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch

from surgery import calibrate as calibrate_module
from surgery import sweep_cli
from surgery.calibrate import Calibration, calibrate, estimate_seconds
from surgery.cli import main
from surgery.data import CIFAR10_CLASSES, Cifar10, ImageSet
from surgery.presets import PRESETS, TUTORIAL_LENET
from surgery.runs import RunManager, RunStatus, RunStore
from surgery.shapes import trace
from surgery.spec import FC, Act, Activation, Conv, Pool, PoolKind, Spec, SpecError
from surgery.sweep import (
    EXPERIMENTS,
    Axis,
    Budget,
    PointSummary,
    SweepEstimate,
    SweepSpec,
    compare_points,
    epochs_for,
    estimate_sweep,
    expand,
    get_experiment,
    submit_sweep,
    sweep_axis,
    sweep_summary,
)
from surgery.sweep_cli import estimate_line
from surgery.train import ConfigError, OptimizerName, TrainConfig

TINY = Spec(
    blocks=(Conv(4, 5, stride=2), Act(Activation.RELU), Pool(PoolKind.MAX, 2), FC(10))
)
WIDE = TINY.replace_blocks([Conv(8, 5, stride=2), *TINY.blocks[1:]])
WAIT = 120


def fake_cifar(n_train: int = 48, n_test: int = 20) -> Cifar10:
    generator = torch.Generator().manual_seed(0)

    def split(n: int) -> ImageSet:
        images = torch.randint(
            0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator
        )
        return ImageSet(images, torch.arange(n) % 10, CIFAR10_CLASSES)

    return Cifar10(split(n_train), split(n_test), "fake")


# ---------------------------------------------------------------- expand


def test_expand_makes_one_run_per_point_and_seed_seed_by_seed():
    sweep = SweepSpec(
        architectures={"tiny": TINY},
        batch_sizes=[4, 16],
        lrs=[0.001, 0.01],
        optimizers=["sgd", "adam"],
        seeds=[0, 1, 2],
    )
    members = expand(sweep)

    assert sweep.points == 8
    assert len(members) == 24
    assert [m.config.seed for m in members] == [0] * 8 + [1] * 8 + [2] * 8
    assert Counter(m.label for m in members) == {m.label: 3 for m in members[:8]}
    assert members[1].label == "SGD, lr 0.001, batch_size 16"
    assert members[1].x == "SGD, lr 0.001, batch_size 16"
    assert members[7].config == TrainConfig(
        optimizer=OptimizerName.ADAM, lr=0.01, batch_size=16, epochs=2, seed=0
    )


def test_a_single_varied_setting_is_the_x_axis():
    members = expand(SweepSpec(batch_sizes=[4, 8], seeds=[0]))

    assert [(m.label, m.x) for m in members] == [
        ("batch_size 4", 4),
        ("batch_size 8", 8),
    ]
    assert [m.config.epochs for m in members] == [2, 2]


@pytest.mark.parametrize(
    ("batch_size", "epochs"),
    [(4, 2), (2, 1), (6, 3), (8, 4), (64, 32), (75, 38), (1, 1)],
    ids=[
        "reference",
        "half",
        "one-and-a-half",
        "double",
        "b64",
        "b75-half-up",
        "floor-1",
    ],
)
def test_the_steps_budget_scales_epochs_to_whole_numbers(batch_size, epochs):
    sweep = SweepSpec(batch_sizes=[batch_size], epochs=2, budget=Budget.STEPS)

    assert epochs_for(sweep, batch_size) == epochs


def test_the_epochs_budget_keeps_epochs_and_lr_scaling_multiplies_lr():
    sweep = SweepSpec(batch_sizes=[4, 16, 64], lrs=[0.001], scale_lr=True, seeds=[0])
    members = expand(sweep)

    assert [m.config.epochs for m in members] == [2, 2, 2]
    assert [m.config.lr for m in members] == pytest.approx([0.001, 0.004, 0.016])
    assert [m.label for m in members] == [
        "batch_size 4 (lr 0.001)",
        "batch_size 16 (lr 0.004)",
        "batch_size 64 (lr 0.016)",
    ]


def test_steps_budget_with_lr_scaling_names_both_in_the_label():
    sweep = SweepSpec(
        batch_sizes=[4, 8], scale_lr=True, budget="steps", seeds=[0], reference_batch=4
    )
    members = expand(sweep)

    assert [(m.config.epochs, m.config.lr) for m in members] == [(2, 0.001), (4, 0.002)]
    assert members[1].label == "batch_size 8 (lr 0.002, 4 epochs)"


def test_the_steps_budget_refuses_more_than_200_epochs():
    sweep = SweepSpec(batch_sizes=[4, 512], epochs=2, budget=Budget.STEPS)

    with pytest.raises(
        ConfigError, match="batch_size 512 with the steps budget needs 256"
    ):
        expand(sweep)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seeds": []}, "seeds is empty; give at least one value"),
        ({"lrs": [0.001, 0.001]}, "lrs lists 0.001 more than once"),
        ({"budget": "time"}, "budget 'time' is unknown; use one of epochs, steps"),
        ({"optimizers": ["rmsprop"]}, "optimizer 'rmsprop' is unknown"),
        ({"architectures": {}}, "architectures is empty"),
        ({"epochs": 0}, "epochs 0 is out of range"),
    ],
    ids=["no-seeds", "repeated-lr", "budget", "optimizer", "no-architecture", "epochs"],
)
def test_sweep_spec_refuses_bad_settings(changes, message):
    with pytest.raises(ConfigError, match=message):
        SweepSpec(**changes)


# ---------------------------------------------------------------- experiments


@pytest.mark.parametrize("name", list(EXPERIMENTS), ids=list(EXPERIMENTS))
def test_each_experiment_varies_its_axis_over_three_seeds_and_two_epochs(name):
    experiment = get_experiment(name)
    sweep = experiment.sweep

    assert sweep.seeds == [0, 1, 2]
    assert sweep.epochs == 2
    assert [axis.value for axis in sweep.axes] == [experiment.axis]
    assert len(experiment.explanation) > 200
    assert len(expand(sweep)) == 3 * sweep.points


def test_experiment_values():
    assert EXPERIMENTS["batch-size"].sweep.batch_sizes == [4, 8, 16, 32, 64, 75]
    assert EXPERIMENTS["learning-rate"].sweep.lrs == [0.0003, 0.001, 0.003]
    assert EXPERIMENTS["optimizer"].sweep.optimizers == [
        OptimizerName.SGD,
        OptimizerName.ADAM,
    ]
    assert EXPERIMENTS["padding"].sweep.architectures == {
        "tutorial LeNet": TUTORIAL_LENET,
        "padded LeNet": PRESETS["padded-lenet"].spec,
    }


def test_make_gives_a_fresh_copy():
    experiment = EXPERIMENTS["optimizer"]
    sweep = experiment.make(seeds=[0, 1, 2, 3, 4])
    sweep.seeds.append(5)

    assert experiment.sweep.seeds == [0, 1, 2]
    assert experiment.make().axes == [Axis.OPTIMIZER]


def test_an_unknown_experiment_lists_the_choices():
    with pytest.raises(
        ConfigError, match="experiment 'dropout' is unknown; use one of"
    ):
        get_experiment("dropout")


# ---------------------------------------------------------------- submit and summary


@pytest.fixture
def manager(tmp_path):
    data = fake_cifar()
    store = RunStore(tmp_path / "runs.sqlite")
    made = RunManager(store, lambda: data, weights_dir=tmp_path / "weights")
    yield made
    made.shutdown()


def tiny_sweep(**changes) -> SweepSpec:
    values = {
        "architectures": {"tiny": TINY, "wide": WIDE},
        "batch_sizes": [16],
        "seeds": [0, 1],
        "epochs": 1,
        "device": "cpu",
        **changes,
    }
    return SweepSpec(**values)


def test_a_sweep_runs_every_member_and_summarizes_by_point(manager):
    group_id = submit_sweep(manager, tiny_sweep(), title="tiny vs wide")
    records = manager.store.list_runs(group_id=group_id)
    for record in records:
        manager.wait(record.id, WAIT)

    points = sweep_summary(manager.store, group_id)
    done = {r.id: r for r in manager.store.list_runs(group_id=group_id)}

    assert len(records) == 4
    assert {r.kind for r in done.values()} == {"sweep"}
    assert {r.status for r in done.values()} == {RunStatus.DONE}
    assert [(p.label, p.x, p.n, p.pending, p.failed) for p in points] == [
        ("tiny", "tiny", 2, 0, 0),
        ("wide", "wide", 2, 0, 0),
    ]
    tiny_values = {
        r.config.seed: r.test_accuracy for r in done.values() if r.label == "tiny"
    }
    assert points[0].by_seed() == tiny_values
    assert points[0].mean == pytest.approx(sum(tiny_values.values()) / 2)
    assert sweep_axis(manager.store, group_id) == "architecture"
    assert manager.store.get_group(group_id)["title"] == "tiny vs wide"


def test_compare_points_pairs_each_point_with_the_first_by_seed():
    points = [
        PointSummary("SGD", "sgd", 60.5, 0.7, 2, [60.0, 61.0], [0, 1]),
        PointSummary("Adam", "adam", 63.0, 1.4, 2, [64.0, 62.0], [1, 0]),
        PointSummary("none yet", "x", math.nan, math.nan, 0, [], []),
    ]
    diffs = compare_points(points)

    assert diffs[0] is None and diffs[2] is None
    # Seed 0: 62 - 60 = 2; seed 1: 64 - 61 = 3.
    assert diffs[1].mean == pytest.approx(2.5)
    assert diffs[1].sentence.startswith("Adam minus SGD: +2.5 points")


def test_a_point_without_finished_runs_has_no_mean(manager):
    sweep = tiny_sweep(architectures={"tiny": TINY}, seeds=[0])
    group_id = submit_sweep(manager, sweep)
    run_id = manager.store.list_runs(group_id=group_id)[0].id
    manager.stop(run_id)
    manager.wait(run_id, WAIT)

    [point] = sweep_summary(manager.store, group_id)

    assert point.n == 0 and math.isnan(point.mean)
    assert point.failed + point.pending == 1


def test_a_bad_architecture_queues_nothing(manager):
    broken = TINY.replace_blocks([*TINY.blocks[:-1], FC(5)])

    with pytest.raises(SpecError, match="out_features 5 must equal num_classes 10"):
        submit_sweep(manager, tiny_sweep(architectures={"tiny": TINY, "bad": broken}))
    assert manager.store.list_runs() == []


# ---------------------------------------------------------------- estimates


def test_estimate_counts_steps_and_test_passes(monkeypatch):
    measured = Calibration(0.002, 0.0001, 30, "cpu")
    monkeypatch.setattr(calibrate_module, "calibrate", lambda *args: measured)
    config = TrainConfig(batch_size=4, epochs=2)

    seconds = estimate_seconds(TINY, config, n_images=50_000)

    # 12,500 steps x 2 epochs x 2 ms + 3 test passes x 10,000 images x 0.1 ms.
    assert seconds == pytest.approx(25_000 * 0.002 + 30_000 * 0.0001)


def test_estimate_sweep_adds_every_run(monkeypatch):
    measured = Calibration(0.01, 0.0, 30, "cpu")
    monkeypatch.setattr(calibrate_module, "calibrate", lambda *args: measured)
    sweep = SweepSpec(
        architectures={"tiny": TINY, "wide": WIDE},
        batch_sizes=[4, 8],
        seeds=[0, 1, 2],
        epochs=1,
        budget=Budget.STEPS,
    )

    estimate = estimate_sweep(sweep, concurrent=2, n_images=400)

    # Per seed and architecture: 100 steps at batch 4, 50 x 2 epochs at batch 8.
    assert estimate.runs == 12
    assert estimate.total_seconds == pytest.approx(12 * 100 * 0.01)
    assert estimate.wall_seconds == pytest.approx(6.0)
    assert estimate.params_per_arch == {
        "tiny": trace(TINY).total_params,
        "wide": trace(WIDE).total_params,
    }
    assert estimate.mult_adds_per_arch["wide"] == trace(WIDE).total_mult_adds


def test_calibration_measures_real_steps_without_touching_the_global_rng():
    calibrate_module.clear_cache()
    torch.manual_seed(123)
    before = torch.get_rng_state()

    first = calibrate(TINY, 8, "sgd", "cpu")
    again = calibrate(TINY, 8, "sgd", "cpu")

    assert torch.equal(torch.get_rng_state(), before)
    assert again is first
    assert first.step_seconds > 0 and math.isfinite(first.step_seconds)
    assert first.eval_seconds_per_image > 0
    assert first.steps_timed >= 2
    assert first.device == "cpu"


# ---------------------------------------------------------------- command line


@pytest.fixture
def cli_data(monkeypatch):
    data = fake_cifar(n_train=32, n_test=10)
    monkeypatch.setattr(sweep_cli, "load_data", lambda args: data)
    measured = Calibration(0.01, 0.001, 30, "cpu")
    monkeypatch.setattr(calibrate_module, "calibrate", lambda *args: measured)
    return data


def test_cli_sweep_prints_the_estimate_each_run_and_the_summary(
    cli_data, tmp_path, capsys
):
    db = tmp_path / "runs.sqlite"
    code = main(
        ["sweep", "--optimizers", "sgd,adam", "--seeds", "0,1", "--epochs", "1"]
        + ["--batch-sizes", "16", "--device", "cpu", "--db", str(db)]
    )
    lines = capsys.readouterr().out.splitlines()

    # Per run: 2 steps x 10 ms + 2 test passes x 10 images x 1 ms = 0.04 s.
    assert code == 0
    assert lines[0] == (
        "4 runs (2 points x 2 seeds), about 0 s (measured on this machine just "
        "now); params: tutorial LeNet 62,006"
    )
    assert lines[1].startswith("sweep sweep-")
    assert [line.split("  ")[1:3] for line in lines[2:6]] == [
        ["SGD", "seed 0"],
        ["Adam", "seed 0"],
        ["SGD", "seed 1"],
        ["Adam", "seed 1"],
    ]
    assert all(" done  test_acc " in line for line in lines[2:6])
    assert lines[6].split() == ["point", "mean", "std", "seeds", "minus", "SGD"] + [
        "(95%",
        "CI)",
    ]
    assert lines[8].startswith("SGD ")
    assert lines[-1].startswith("Adam minus SGD: ")
    assert len(RunStore(db).list_runs(kind="sweep")) == 4


def test_cli_sweep_json_holds_points_and_differences(cli_data, tmp_path, capsys):
    code = main(
        ["sweep", "--experiment", "padding", "--seeds", "0,1", "--epochs", "1"]
        + ["--batch-sizes", "32", "--db", str(tmp_path / "r.sqlite"), "--json"]
    )
    payload = json.loads(capsys.readouterr().out)

    assert code == 0
    assert [p["label"] for p in payload["points"]] == ["tutorial LeNet", "padded LeNet"]
    assert [p["n"] for p in payload["points"]] == [2, 2]
    assert payload["differences"][0] is None
    assert payload["differences"][1]["n"] == 2
    assert payload["estimate"]["runs"] == 4


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--optimizers", "rmsprop"], "optimizer 'rmsprop' is unknown"),
        (["--seeds", "0,0"], "seeds lists 0 more than once"),
        (["--batch-sizes", "4,x"], "'4,x' is not a comma-separated list"),
    ],
    ids=["optimizer", "repeated-seed", "not-a-list"],
)
def test_cli_sweep_refuses_bad_lists(cli_data, tmp_path, capsys, arguments, message):
    code = main(["sweep", "--db", str(tmp_path / "r.sqlite"), *arguments])

    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.sqlite").exists()


@pytest.mark.parametrize(
    "seeds, expected",
    [
        ([0], "1 run (1 point x 1 seed), about 12 s"),
        ([0, 1, 2], "3 runs (1 point x 3 seeds), about 12 s"),
    ],
    ids=["one", "three-seeds"],
)
def test_estimate_line_counts_in_words(seeds, expected):
    sweep = SweepSpec(architectures={"tutorial LeNet": TUTORIAL_LENET}, seeds=seeds)
    estimate = SweepEstimate(
        runs=len(seeds),
        total_seconds=12.0,
        params_per_arch={"tutorial LeNet": 62006},
        mult_adds_per_arch={"tutorial LeNet": 658238},
        wall_seconds=12.0,
        seconds_per_point={},
    )

    assert estimate_line(sweep, estimate).startswith(expected)
