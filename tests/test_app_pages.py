"""AppTest over the Train, Runs and Experiments pages, with tiny in-memory data.

The run manager is the real one, trained on a few hundred random images, so every
number the pages show is checked against the store it came from.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
import threading
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

import surgery.runs as surgery_runs
from surgery.data import CIFAR10_CLASSES, Cifar10, ImageSet, load_cifar10
from surgery.diff import diff_specs
from surgery.model import build_model
from surgery.presets import PRESETS, TUTORIAL_LENET
from surgery.runs import RunManager, RunStatus, RunStore
from surgery.spec import FC, Conv, Spec
from surgery.train import ConfigError, StepDone, TrainConfig
from ui import charts
from ui import runs as ui_runs
from ui.sidebar import max_runs_setting

# The module, not a function the package may re-export under the same name.
calibrate = importlib.import_module("surgery.calibrate")
ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "pages" / "1_Train.py")
RUNS = str(ROOT / "pages" / "2_Runs.py")
EXPERIMENTS = str(ROOT / "pages" / "3_Experiments.py")
PAGES = {"train": TRAIN, "runs": RUNS, "experiments": EXPERIMENTS}
TIMEOUT = 60
WAIT = 120
PADDED = PRESETS["padded-lenet"].spec
BROKEN = Spec(blocks=(Conv(6, 40), FC(10)))


def fake_cifar(n_train: int = 200, n_test: int = 50) -> Cifar10:
    generator = torch.Generator().manual_seed(0)

    def split(n: int) -> ImageSet:
        shape = (n, 3, 32, 32)
        images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        return ImageSet(images, torch.arange(n) % 10, CIFAR10_CLASSES)

    return Cifar10(split(n_train), split(n_test), "fake")


@pytest.fixture(autouse=True)
def quick_calibration(monkeypatch):
    """A few timed steps are enough to draw an estimate; its accuracy is not tested."""
    monkeypatch.setattr(calibrate, "MAX_STEPS", 4)
    monkeypatch.setattr(calibrate, "MAX_SECONDS", 0.05)
    calibrate.clear_cache()
    yield
    calibrate.clear_cache()


def use_manager(monkeypatch, tmp_path: Path, load_data) -> RunManager:
    """Point the pages at a store in tmp_path and a manager with `load_data`."""
    db = tmp_path / "runs" / "runs.sqlite"
    monkeypatch.setenv("SURGERY_RUNS_DB", str(db))
    monkeypatch.setenv("SURGERY_DATA", str(tmp_path / "data"))
    manager = RunManager(RunStore(db), load_data, weights_dir=tmp_path / "weights")
    monkeypatch.setattr(surgery_runs, "get_manager", lambda *args, **kw: manager)
    ui_runs._cached_manager.clear()
    return manager


@pytest.fixture
def manager(monkeypatch, tmp_path):
    data = fake_cifar()
    made = use_manager(monkeypatch, tmp_path, lambda: data)
    yield made
    made.shutdown(wait=True)
    ui_runs._cached_manager.clear()


def page(path: str, spec: Spec | None = None) -> AppTest:
    at = AppTest.from_file(path, default_timeout=TIMEOUT)
    if spec is not None:
        at.session_state["spec"] = spec
    return at.run()


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def wait_all(manager: RunManager) -> None:
    for run_id in manager.active_ids():
        manager.wait(run_id, WAIT)


def chart_titles(at: AppTest) -> list[str]:
    titles = []
    for chart in at.get("vega_lite_chart"):
        title = json.loads(chart.proto.spec).get("title", "")
        titles.append(title["text"] if isinstance(title, dict) else title)
    return titles


def flat_layers(spec: dict) -> list[dict]:
    """The charts inside a (possibly nested) layered Vega-Lite spec."""
    if "layer" not in spec:
        return [spec]
    return [leaf for layer in spec["layer"] for leaf in flat_layers(layer)]


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def quick_settings(at: AppTest) -> AppTest:
    at.number_input(key="train_batch_size").set_value(16)
    at.number_input(key="train_epochs").set_value(1)
    return at.run()


def train_done(manager: RunManager, spec: Spec, seed: int = 0, label: str = ""):
    config = TrainConfig(batch_size=16, epochs=1, seed=seed, device="cpu")
    run_id = manager.submit(spec, config, label=label)
    return manager.wait(run_id, WAIT)


# ---------------------------------------------------------------- every page


@pytest.mark.parametrize("path", PAGES.values(), ids=PAGES.keys())
def test_page_runs_with_an_empty_store(manager, path):
    at = page(path)

    assert not at.exception
    assert manager.store.list_runs() == []
    assert str(manager.store.path) in texts(at.sidebar.markdown)


def test_empty_store_says_what_to_do(manager):
    runs = page(RUNS)
    experiments = page(EXPERIMENTS)

    assert "No runs yet" in texts(runs.info)
    assert "No sweep yet" in texts(experiments.caption)


@pytest.mark.parametrize("path", PAGES.values(), ids=PAGES.keys())
def test_an_unreadable_store_is_a_message(monkeypatch, tmp_path, path):
    # A directory where the database file should be: SQLite cannot open it.
    db = tmp_path / "runs.sqlite"
    db.mkdir()
    monkeypatch.setenv("SURGERY_RUNS_DB", str(db))
    monkeypatch.setattr(
        surgery_runs, "get_manager", lambda *a, **kw: RunManager(RunStore(db), None)
    )
    ui_runs._cached_manager.clear()
    at = page(path)

    assert not at.exception
    assert f"The run store {db} cannot be opened" in texts(at.error)


# ---------------------------------------------------------------- Train


def test_invalid_stack_disables_train_and_names_the_block(manager):
    at = page(TRAIN, BROKEN)

    assert not at.exception
    assert button(at, "Train").disabled
    assert "block 1 (conv)" in texts(at.error)
    assert "kernel_size 40" in texts(at.error)
    assert "Builder" in texts(at.error)


def test_valid_stack_shows_counts_and_an_estimate(manager):
    at = page(TRAIN, PADDED)

    metrics = {m.label: m.value for m in at.metric}
    params = sum(p.numel() for p in build_model(PADDED).parameters())
    assert metrics["Param #"] == f"{params:,}"
    assert metrics["Flatten"] == "576"
    assert "Estimated time" in texts(at.info)
    assert "your stack and the baseline" in texts(at.info)
    assert not button(at, "Train").disabled


def test_train_shows_result_beside_the_baseline(manager):
    at = quick_settings(page(TRAIN, PADDED))

    button(at, "Train").click()
    at.run()
    singles = manager.store.list_runs(kind="single")
    baselines = manager.store.list_runs(kind="baseline")
    assert [r.spec for r in singles] == [PADDED]
    assert [r.spec for r in baselines] == [TUTORIAL_LENET]
    assert at.query_params["run"] == str(singles[0].id)
    wait_all(manager)
    at.run()

    mine = manager.store.get(singles[0].id)
    theirs = manager.store.get(baselines[0].id)
    assert (mine.status, theirs.status) == (RunStatus.DONE, RunStatus.DONE)
    metrics = {m.label: m for m in at.metric}
    assert metrics[f"#{mine.id} Padded LeNet"].value == f"{mine.test_accuracy:.2f}%"
    baseline_label = f"#{theirs.id} {ui_runs.BASELINE_LABEL}"
    assert metrics[baseline_label].value == f"{theirs.test_accuracy:.2f}%"
    difference = mine.test_accuracy - theirs.test_accuracy
    delta = metrics[f"#{mine.id} Padded LeNet"].delta
    assert delta == f"{difference:+.2f} points vs the baseline"
    assert "within the noise" in texts(at.info)
    assert "Test accuracy per class (%)" in chart_titles(at)


def test_a_finished_baseline_is_reused(manager):
    done = train_done(manager, TUTORIAL_LENET)
    at = quick_settings(page(TRAIN, PADDED))
    at.number_input(key="train_seed").set_value(0)
    at.selectbox(key="train_device").set_value("cpu")
    at.run()

    assert "for your stack." in texts(at.info)
    button(at, "Train").click()
    at.run()
    wait_all(manager)

    assert len(manager.store.list_runs()) == 2
    assert at.session_state["train_run_ids"]["baseline"] == done.id


def test_an_identical_finished_run_is_offered(manager):
    earlier = train_done(manager, PADDED, seed=0, label="Padded LeNet")
    newest = train_done(manager, PADDED, seed=1, label="Padded LeNet")
    at = quick_settings(page(TRAIN, PADDED))
    at.selectbox(key="train_device").set_value("cpu")
    at.run()

    assert f"#{newest.id} Padded LeNet" in [m.label for m in at.metric]
    assert f"Run #{earlier.id} already trained this stack" in texts(at.caption)
    button(at, "Show it").click()
    at.run()

    metrics = {m.label: m.value for m in at.metric}
    assert metrics[f"#{earlier.id} Padded LeNet"] == f"{earlier.test_accuracy:.2f}%"
    assert "already trained" not in texts(at.caption)
    assert len(manager.store.list_runs()) == 2


def test_a_run_survives_reruns_and_new_sessions(manager):
    at = quick_settings(page(TRAIN, PADDED))
    button(at, "Train").click()
    at.run()
    wait_all(manager)
    at.run()
    run = manager.store.list_runs(kind="single")[0]

    again = page(TRAIN)
    metrics = {m.label: m.value for m in again.metric}
    assert metrics[f"#{run.id} Padded LeNet"] == f"{run.test_accuracy:.2f}%"

    runs = page(RUNS)
    table = runs.dataframe[0].value
    assert run.id in list(table["id"])
    row = table[table["id"] == run.id].iloc[0]
    assert row["test accuracy (%)"] == pytest.approx(run.test_accuracy)
    assert row["status"] == "done"


def test_the_url_brings_back_the_runs_after_a_reload(manager):
    first = train_done(manager, PADDED, label="Padded LeNet")
    train_done(manager, PADDED, seed=1, label="Padded LeNet")

    at = AppTest.from_file(TRAIN, default_timeout=TIMEOUT)
    at.query_params["run"] = str(first.id)
    at.run()

    metrics = {m.label: m.value for m in at.metric}
    assert metrics[f"#{first.id} Padded LeNet"] == f"{first.test_accuracy:.2f}%"
    assert "No baseline run for these settings" in texts(at.caption)


class Hold:
    """A listener that holds the training thread at its first step until released."""

    def __init__(self):
        self.reached = threading.Event()
        self.released = threading.Event()

    def __call__(self, run_id: int, event) -> None:
        if isinstance(event, StepDone) and not self.reached.is_set():
            self.reached.set()
            self.released.wait(WAIT)


def test_live_view_shows_progress_and_stops_the_run(manager):
    hold = Hold()
    manager.add_listener(hold)
    at = quick_settings(page(TRAIN))
    button(at, "Train").click()
    at.run()
    assert hold.reached.wait(WAIT)
    at.run()

    run = manager.store.list_runs()[0]
    bar = at.get("progress")[0].proto
    assert bar.text.startswith(f"#{run.id} Tutorial LeNet (baseline): step 1/13")
    assert "ETA" in bar.text
    button(at, "Stop").click()
    at.run()
    hold.released.set()
    wait_all(manager)
    at.run()

    record = manager.store.get(run.id)
    assert record.status is RunStatus.STOPPED
    assert f"#{run.id} Tutorial LeNet (baseline) was stopped" in texts(at.warning)


def test_missing_data_shows_the_message_not_a_traceback(monkeypatch, tmp_path):
    empty = tmp_path / "empty"
    made = use_manager(
        monkeypatch, tmp_path, lambda: load_cifar10(empty, download=False)
    )
    try:
        at = quick_settings(page(TRAIN))
        button(at, "Train").click()
        at.run()
        wait_all(made)
        at.run()
    finally:
        made.shutdown(wait=True)
        ui_runs._cached_manager.clear()

    assert not at.exception
    errors = texts(at.error)
    assert "failed: DataNotFoundError: CIFAR-10 was not found under" in errors
    assert "Traceback" not in errors


# ---------------------------------------------------------------- Runs


def test_runs_page_compares_two_finished_runs(manager):
    a = train_done(manager, TUTORIAL_LENET, label="baseline")
    b = train_done(manager, PADDED, label="padded")
    at = page(RUNS)

    at.multiselect(key="runs_selected").set_value([a.id, b.id])
    at.run()

    assert not at.exception
    code = texts(at.code)
    for line in diff_specs(a.spec, b.spec):
        assert line in code
    titles = chart_titles(at)
    assert "Test accuracy per class (%)" in titles
    assert f"#{a.id} baseline" in titles
    assert f"#{b.id} padded" in titles
    assert f"#{b.id} padded minus #{a.id} baseline" in titles
    spread = at.dataframe[-1].value
    assert list(spread["n"]) == [1, 1]
    assert list(spread["mean"]) == pytest.approx([a.test_accuracy, b.test_accuracy])


def test_a_comparison_link_selects_its_runs(manager):
    a = train_done(manager, TUTORIAL_LENET, label="baseline")
    b = train_done(manager, PADDED, label="padded")
    at = AppTest.from_file(RUNS, default_timeout=TIMEOUT)
    at.query_params["compare"] = f"{a.id},{b.id},999"
    at.run()

    assert at.multiselect(key="runs_selected").value == [a.id, b.id]
    assert f"#{b.id} padded minus #{a.id} baseline" in chart_titles(at)
    at.multiselect(key="runs_selected").set_value([b.id])
    at.run()
    assert at.query_params["compare"] == str(b.id)


def test_runs_page_groups_seeds_into_a_spread(manager):
    runs = [train_done(manager, TUTORIAL_LENET, seed=s, label="lenet") for s in (0, 1)]
    at = page(RUNS)
    at.multiselect(key="runs_selected").set_value([r.id for r in runs])
    at.run()

    spread = at.dataframe[-1].value
    values = [r.test_accuracy for r in runs]
    assert list(spread["n"]) == [2]
    assert spread["mean"][0] == pytest.approx(sum(values) / 2)
    assert spread["seeds"][0] == "0, 1"


def test_runs_page_filters_by_status_and_text(manager):
    lenet = train_done(manager, TUTORIAL_LENET, label="lenet")
    train_done(manager, PADDED, label="padded")
    at = page(RUNS)

    at.multiselect(key="runs_selected").set_value([lenet.id])
    at.text_input(key="runs_text").input("padd")
    at.run()
    assert list(at.dataframe[0].value["label"]) == ["padded"]
    assert at.multiselect(key="runs_selected").value == [lenet.id]
    at.text_input(key="runs_text").input("")
    at.multiselect(key="runs_status").set_value(["failed"])
    at.run()
    assert len(at.dataframe[0].value) == 0


def test_delete_asks_first(manager):
    run = train_done(manager, TUTORIAL_LENET)
    at = page(RUNS)
    at.multiselect(key="runs_selected").set_value([run.id])
    at.run()

    button(at, "Delete selected…").click()
    at.run()
    assert f"Delete run(s) #{run.id}?" in texts(at.warning)
    assert manager.store.list_runs() != []
    button(at, "Yes, delete").click()
    at.run()

    assert manager.store.list_runs() == []
    assert not at.exception


# ---------------------------------------------------------------- Experiments


def test_experiment_estimate_then_start_and_results(manager):
    at = page(EXPERIMENTS)
    at.selectbox(key="exp_name").set_value("optimizer")
    at.number_input(key="exp_seeds").set_value(2)
    at.number_input(key="exp_epochs").set_value(1)
    at.selectbox(key="exp_device").set_value("cpu")
    at.run()
    assert "4 runs (2 points × 2 seeds)" in texts(at.info)

    button(at, "Start").click()
    at.run()
    runs = manager.store.list_runs(kind="sweep")
    assert len(runs) == 4
    wait_all(manager)
    at.run()

    assert not at.exception
    assert "Test accuracy by optimizer" in json.dumps(chart_titles(at))
    sentences = texts(at.markdown)
    assert "Adam minus SGD" in sentences
    table = at.dataframe[-1].value
    done = manager.store.list_runs(kind="sweep", status="done")
    done = [r for r in done if r.label == "Adam"]
    assert len(done) == 2
    mean = sum(r.test_accuracy for r in done) / len(done)
    assert table[table["point"] == "Adam"]["mean test accuracy (%)"].iloc[0] == (
        pytest.approx(mean)
    )


def test_custom_sweep_names_a_bad_value(manager):
    at = page(EXPERIMENTS)
    at.radio(key="exp_mode").set_value("Custom sweep")
    at.run()
    at.text_input(key="sweep_batch_sizes").input("4, x")
    at.run()

    assert "batch_sizes: 'x' is not a whole number" in texts(at.error)
    assert "Start" not in [b.label for b in at.button]


def test_custom_sweep_estimates_every_combination(manager):
    at = page(EXPERIMENTS)
    at.radio(key="exp_mode").set_value("Custom sweep")
    at.run()
    at.text_input(key="sweep_batch_sizes").input("8, 16")
    at.number_input(key="sweep_seeds").set_value(2)
    at.radio(key="sweep_budget").set_value("steps")
    at.run()

    assert "4 runs (2 points × 2 seeds)" in texts(at.info)
    assert "Equal optimizer steps" in texts(at.caption)


def test_custom_sweep_draws_batch_size_on_a_log_axis_with_a_noise_band(manager):
    at = page(EXPERIMENTS)
    at.radio(key="exp_mode").set_value("Custom sweep")
    at.run()
    at.text_input(key="sweep_batch_sizes").input("8, 16")
    at.number_input(key="sweep_seeds").set_value(2)
    at.number_input(key="sweep_epochs").set_value(1)
    at.selectbox(key="sweep_device").set_value("cpu")
    at.text_input(key="sweep_title").input("batch check")
    at.run()
    button(at, "Start").click()
    at.run()
    wait_all(manager)
    at.run()

    assert not at.exception
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    assert spec["title"] == "Test accuracy vs batch_size"
    layers = {layer["mark"]["type"]: layer for layer in flat_layers(spec)}
    assert {"rect", "rule", "errorbar", "line", "circle"} <= set(layers)
    x_scale = layers["line"]["encoding"]["x"]["scale"]
    assert (x_scale["type"], x_scale["domain"]) == ("log", [8, 16])
    assert "batch_size 16 minus batch_size 8" in texts(at.markdown)
    assert "Grey band: batch_size 8 mean ± 2 standard deviations over 2 seeds" in (
        texts(at.caption)
    )


# ---------------------------------------------------------------- helpers


def test_parse_numbers_reads_a_list():
    assert ui_runs.parse_numbers("lrs", "0.001, 3e-4", float) == [0.001, 0.0003]


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "batch_sizes is empty"), ("4 1.5", "'1.5' is not a whole number")],
    ids=["empty", "fraction"],
)
def test_parse_numbers_names_the_bad_value(text, message):
    with pytest.raises(ConfigError, match=message):
        ui_runs.parse_numbers("batch_sizes", text)


def test_difference_matrix_is_b_minus_a():
    assert charts.difference_matrix([[3, 1], [0, 2]], [[2, 2], [1, 1]]) == [
        [-1, 1],
        [1, -1],
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(42.4, "42 s"), (200, "3 min 20 s"), (7500, "2 h 05 min"), (None, "?")],
    ids=["seconds", "minutes", "hours", "unknown"],
)
def test_format_seconds(seconds, text):
    assert ui_runs.format_seconds(seconds) == text


def record_like(base, **changes):
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        ({"status": RunStatus.QUEUED}, "waiting in the queue"),
        ({"total_steps": 0, "message": "loading CIFAR-10"}, "loading CIFAR-10"),
        (
            {"message": surgery_runs.STOPPING_MESSAGE},
            f"{surgery_runs.STOPPING_MESSAGE} (step 13/13)",
        ),
        ({"message": ""}, "step 13/13 · testing on the test images"),
        ({"message": "", "step": 5}, "step 5/13 · ETA"),
    ],
    ids=["queued", "loading", "stopping", "testing", "training"],
)
def test_progress_text_says_what_the_run_is_doing(manager, changes, text):
    done = train_done(manager, TUTORIAL_LENET)
    running = record_like(done, status=RunStatus.RUNNING, step=13, total_steps=13)

    assert ui_runs.progress_text(record_like(running, **changes)).startswith(text)


@pytest.mark.parametrize(
    ("epochs", "words"), [(1, "1 epoch,"), (3, "3 epochs,")], ids=["one", "three"]
)
def test_settings_line_counts_epochs(epochs, words):
    assert words in ui_runs.settings_line(TrainConfig(epochs=epochs))


def test_accuracy_chart_labels_epochs_as_whole_numbers():
    done = [{"epoch": 1, "train_accuracy": 11.0, "test_accuracy": 12.0}]
    spec = charts.accuracy_chart({"#1": done}).to_dict()

    assert spec["encoding"]["x"]["axis"]["format"] == "d"


def test_a_diverged_run_shows_no_accuracy(manager):
    done = train_done(manager, TUTORIAL_LENET)
    run_id = manager.store.create(TUTORIAL_LENET, done.config.__class__(lr=9.0))
    message = "loss became nan at step 3 with lr 9; lower the learning rate"
    manager.store.finish(run_id, RunStatus.DIVERGED, message, done.result)

    at = AppTest.from_file(TRAIN, default_timeout=TIMEOUT)
    at.query_params["run"] = str(run_id)
    at.run()

    metrics = {m.label: m.value for m in at.metric}
    assert metrics[f"#{run_id} single"] == "—"
    assert f"#{run_id} single diverged: {message}" in texts(at.error)
    assert "Test accuracy per class (%)" not in chart_titles(at)


def test_a_run_link_in_a_new_session_brings_back_its_settings(manager):
    run = train_done(manager, PADDED, seed=7, label="Padded LeNet")

    at = AppTest.from_file(TRAIN, default_timeout=TIMEOUT)
    at.query_params["run"] = str(run.id)
    at.run()

    assert at.number_input(key="train_batch_size").value == 16
    assert at.number_input(key="train_epochs").value == 1
    assert at.number_input(key="train_seed").value == 7
    assert at.selectbox(key="train_device").value == "cpu"


@pytest.mark.parametrize(
    ("points", "scale"),
    [([[1, 2.3], [2, 1.9]], {"zero": False}), ([[1, 2.3], [2, 3e22]], {"type": "log"})],
    ids=["normal", "blown-up"],
)
def test_loss_chart_goes_log_when_a_run_blows_up(points, scale):
    spec = charts.loss_chart({"#1": points}).to_dict()

    assert spec["encoding"]["y"]["scale"] == scale


def test_results_survive_a_reload_of_the_runs_module(manager, monkeypatch):
    """Streamlit re-imports changed modules; records from the old RunStatus class
    must still read as done."""
    old = enum.Enum("RunStatus", {s.name: s.value for s in RunStatus}, type=str)
    old.active = RunStatus.active
    record = surgery_runs._record
    monkeypatch.setattr(
        surgery_runs,
        "_record",
        lambda row: dataclasses.replace(record(row), status=old(row["status"])),
    )
    at = quick_settings(page(TRAIN, PADDED))
    button(at, "Train").click()
    at.run()
    wait_all(manager)
    at.run()

    mine = manager.store.list_runs(kind="single")[0]
    metric = next(m for m in at.metric if m.label == f"#{mine.id} Padded LeNet")
    assert metric.delta.endswith("points vs the baseline")
    assert "within the noise" in texts(at.info)


@pytest.mark.parametrize(
    "text, expected", [("", None), (" ", None), ("1", 1), ("3", 3)], ids=repr
)
def test_max_runs_setting_reads_whole_numbers(text, expected):
    assert max_runs_setting(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5"])
def test_max_runs_setting_refuses_the_rest(text):
    with pytest.raises(ValueError, match=rf"SURGERY_MAX_RUNS '{text}' is not a whole"):
        max_runs_setting(text)


def test_a_bad_max_runs_is_a_message_not_a_traceback(monkeypatch, tmp_path):
    monkeypatch.setenv("SURGERY_RUNS_DB", str(tmp_path / "runs.sqlite"))
    monkeypatch.setenv("SURGERY_MAX_RUNS", "zero")
    at = page(RUNS)

    assert not at.exception
    assert "SURGERY_MAX_RUNS 'zero' is not a whole number" in at.error[0].value


def test_max_runs_reaches_the_manager(monkeypatch, tmp_path):
    seen = {}

    def fake_get_manager(db_path, data_root, max_concurrent):
        seen["max_concurrent"] = max_concurrent
        return RunManager(RunStore(db_path), fake_cifar, max_concurrent or 1)

    monkeypatch.setenv("SURGERY_RUNS_DB", str(tmp_path / "runs.sqlite"))
    monkeypatch.setenv("SURGERY_MAX_RUNS", "2")
    monkeypatch.setattr(surgery_runs, "get_manager", fake_get_manager)
    ui_runs._cached_manager.clear()
    try:
        at = page(RUNS)
        assert not at.exception
        assert seen["max_concurrent"] == 2
    finally:
        ui_runs._cached_manager.clear()
