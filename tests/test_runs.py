"""The run store and manager: runs in background threads that outlive the caller.

Tiny in-memory CIFAR stand-ins and a tiny net keep every run well under a second
of training; threading.Event hand-offs replace sleeps.
"""

from __future__ import annotations

import importlib
import subprocess
import threading
import warnings

import pytest
import torch

from surgery import runs
from surgery.data import CIFAR10_CLASSES, Cifar10, DataNotFoundError, ImageSet
from surgery.model import build_model
from surgery.presets import TUTORIAL_LENET
from surgery.runs import (
    RunManager,
    RunStatus,
    RunStore,
    UnknownRunError,
    get_manager,
)
from surgery.spec import FC, Act, Activation, Conv, Pool, PoolKind, Spec, SpecError
from surgery.train import ConfigError, StepDone, TrainConfig

TINY = Spec(
    blocks=(Conv(4, 5, stride=2), Act(Activation.RELU), Pool(PoolKind.MAX, 2), FC(10))
)
WAIT = 120
# The module, not the function that surgery/__init__.py re-exports under its name.
TRAIN_MODULE = importlib.import_module("surgery.train")


def fake_cifar(n_train: int = 64, n_test: int = 20, classes: int = 10) -> Cifar10:
    generator = torch.Generator().manual_seed(0)

    def split(n: int) -> ImageSet:
        images = torch.randint(
            0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator
        )
        return ImageSet(images, torch.arange(n) % classes, CIFAR10_CLASSES)

    return Cifar10(split(n_train), split(n_test), "fake")


def config(**changes) -> TrainConfig:
    values = {"batch_size": 8, "epochs": 1, "device": "cpu", **changes}
    return TrainConfig(**values)


@pytest.fixture
def db(tmp_path):
    return tmp_path / "runs" / "runs.sqlite"


@pytest.fixture
def manager(db, tmp_path):
    data = fake_cifar()
    made = RunManager(RunStore(db), lambda: data, weights_dir=tmp_path / "weights")
    yield made
    made.shutdown(wait=True)


class Gate:
    """A listener that holds a run's thread at its first StepDone until opened."""

    def __init__(self, run_id: int | None = None, at_step: int = 1):
        self.run_id, self.at_step = run_id, at_step
        self.reached = threading.Event()
        self.opened = threading.Event()
        self.step: int | None = None

    def __call__(self, run_id: int, event) -> None:
        if self.run_id not in (None, run_id) or self.reached.is_set():
            return
        if isinstance(event, StepDone) and event.step >= self.at_step:
            self.step = event.step
            self.reached.set()
            self.opened.wait(WAIT)


def assert_intact(store: RunStore) -> None:
    assert store.integrity_check() == "ok"
    for record in store.list_runs():
        assert store.get(record.id) == record


# ---------------------------------------------------------------- lifetime


def test_run_trains_in_background_and_survives_the_caller(manager, db):
    threads: dict[str, str] = {}
    manager.add_listener(
        lambda run_id, event: threads.setdefault("run", threading.current_thread().name)
    )
    # A script run that submits and ends, as a Streamlit rerun does.
    submitted: list[int] = []
    session = threading.Thread(
        target=lambda: submitted.append(manager.submit(TINY, config())), name="session"
    )
    session.start()
    session.join()

    manager.wait(submitted[0], WAIT)
    record = RunStore(db).get(submitted[0])

    assert threads["run"].startswith("surgery-run-")
    assert record.status is RunStatus.DONE
    assert record.message == "trained 1 epochs"
    assert (record.step, record.total_steps) == (8, 8)
    assert record.test_accuracy == record.result["test_accuracy"]
    assert [e["epoch"] for e in record.epochs] == [1]
    assert record.losses and record.losses[-1][0] <= 8
    assert record.device == "cpu"
    assert record.params == sum(p.numel() for p in build_model(TINY).parameters())
    assert record.finished >= record.started >= record.created
    assert record.eta_seconds is None
    assert record.fraction == 1.0


def test_weights_are_saved_as_a_state_dict(manager):
    run_id = manager.submit(TINY, config())
    record = manager.wait(run_id, WAIT)

    state = torch.load(record.weights_path, weights_only=True)
    model = build_model(TINY)
    model.load_state_dict(state)

    assert record.weights_path.endswith(f"{run_id}.pt")
    assert set(state) == set(model.state_dict())


def test_stop_ends_a_running_run_within_one_batch(manager):
    gate = Gate(at_step=8)
    manager.add_listener(gate)
    # 50 epochs of 16 steps: far more than the test waits for.
    run_id = manager.submit(TINY, config(batch_size=4, epochs=50))

    assert gate.reached.wait(WAIT)
    requested = gate.step
    assert manager.stop(run_id)
    gate.opened.set()
    record = manager.wait(run_id, WAIT)

    assert record.status is RunStatus.STOPPED
    assert record.step <= requested + 1
    assert record.result["steps"] == record.step
    assert record.message == f"stopped at step {record.step}"
    assert record.weights_path is not None


def test_a_stop_request_says_so_until_the_run_ends(manager):
    gate = Gate()
    manager.add_listener(gate)
    run_id = manager.submit(TINY, config(batch_size=4, epochs=50))
    assert gate.reached.wait(WAIT)

    manager.stop(run_id)
    stopping = manager.store.get(run_id)
    gate.opened.set()
    ended = manager.wait(run_id, WAIT)

    assert stopping.status is RunStatus.RUNNING
    assert stopping.message == runs.STOPPING_MESSAGE
    assert ended.message == f"stopped at step {ended.step}"


def test_runs_queue_behind_the_concurrency_limit(manager):
    gate = Gate()
    manager.add_listener(gate)
    first = manager.submit(TINY, config())
    second = manager.submit(TINY, config(seed=1))

    assert gate.reached.wait(WAIT)
    assert manager.store.get(first).status is RunStatus.RUNNING
    assert manager.store.get(second).status is RunStatus.QUEUED
    gate.opened.set()
    done = [manager.wait(run_id, WAIT) for run_id in (first, second)]

    assert [r.status for r in done] == [RunStatus.DONE, RunStatus.DONE]
    assert done[1].started >= done[0].finished


def test_stop_removes_a_queued_run(manager):
    gate = Gate()
    manager.add_listener(gate)
    first = manager.submit(TINY, config())
    second = manager.submit(TINY, config(seed=1))
    assert gate.reached.wait(WAIT)

    assert manager.stop(second)
    gate.opened.set()
    stopped = manager.wait(second, WAIT)

    assert stopped.status is RunStatus.STOPPED
    assert stopped.message == "stopped before it started"
    assert stopped.started is None
    assert manager.wait(first, WAIT).status is RunStatus.DONE
    assert manager.stop(first) is False


def test_a_diverging_run_is_marked_diverged_with_step_and_lr(manager):
    run_id = manager.submit(TINY, config(lr=10.0, batch_size=4, epochs=3))
    record = manager.wait(run_id, WAIT)

    assert record.status is RunStatus.DIVERGED
    assert record.message.startswith("loss became ")
    assert f"at step {record.step} with lr 10;" in record.message
    assert record.weights_path is None
    assert record.result is not None
    assert (record.test_accuracy, record.scored) == (None, False)


def test_a_run_that_raises_is_marked_failed_with_one_line(db, tmp_path):
    calls = []

    def load_data() -> Cifar10:
        calls.append(1)
        if len(calls) == 1:
            raise DataNotFoundError("CIFAR-10 was not found under /nowhere\nmore text")
        # Labels 0-19 for a 10-class net: cross_entropy raises inside train().
        return fake_cifar(classes=20)

    made = RunManager(RunStore(db), load_data, weights_dir=tmp_path / "w")
    try:
        no_data = made.wait(made.submit(TINY, config()), WAIT)
        bad_labels = made.wait(made.submit(TINY, config()), WAIT)
    finally:
        made.shutdown()

    assert no_data.status is RunStatus.FAILED
    assert no_data.message == (
        "DataNotFoundError: CIFAR-10 was not found under /nowhere"
    )
    assert "Traceback" in no_data.detail and "Traceback" not in no_data.message
    assert bad_labels.status is RunStatus.FAILED
    assert bad_labels.message.startswith("IndexError: Target 1")
    assert "\n" not in bad_labels.message
    assert len(calls) == 2
    assert_intact(made.store)


def test_a_raising_listener_does_not_stop_the_run(manager):
    def broken(run_id, event):
        raise RuntimeError("page bug")

    manager.add_listener(broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = manager.wait(manager.submit(TINY, config()), WAIT)

    assert record.status is RunStatus.DONE
    assert any("page bug" in str(w.message) for w in caught)


def test_store_stays_intact_after_every_way_a_run_ends(manager):
    gate = Gate(at_step=2)
    manager.add_listener(gate)
    stopped = manager.submit(TINY, config(batch_size=4, epochs=50))
    queued = manager.submit(TINY, config(seed=3))
    assert gate.reached.wait(WAIT)
    manager.stop(stopped)
    manager.stop(queued)
    gate.opened.set()
    diverged = manager.submit(TINY, config(lr=10.0, batch_size=4, epochs=3))
    done = manager.submit(TINY, config())
    for run_id in (stopped, queued, diverged, done):
        manager.wait(run_id, WAIT)

    statuses = {r.id: r.status for r in manager.store.list_runs()}

    assert statuses == {
        stopped: RunStatus.STOPPED,
        queued: RunStatus.STOPPED,
        diverged: RunStatus.DIVERGED,
        done: RunStatus.DONE,
    }
    assert_intact(manager.store)


# ---------------------------------------------------------------- data order


def test_runs_with_the_same_seed_see_the_same_data_order(manager, monkeypatch):
    seen: list[list[int]] = []
    original = TRAIN_MODULE.batches

    def recording(data, batch_size, **kwargs):
        labels: list[int] = []
        seen.append(labels)
        for images, batch_labels in original(data, batch_size, **kwargs):
            if kwargs.get("shuffle", True) and len(labels) < 24:
                labels.extend(batch_labels.tolist())
            yield images, batch_labels

    monkeypatch.setattr(TRAIN_MODULE, "batches", recording)
    orders = []
    for spec, seed in ((TINY, 0), (TUTORIAL_LENET, 0), (TINY, 1)):
        seen.clear()
        manager.wait(manager.submit(spec, config(seed=seed)), WAIT)
        orders.append(seen[0])

    assert len(orders[0]) == 24
    assert orders[0] == orders[1]
    assert orders[0] != orders[2]


# ---------------------------------------------------------------- store


def test_a_crash_leaves_runs_that_a_new_manager_marks_interrupted(db, monkeypatch):
    monkeypatch.setattr(runs, "_MANAGERS", {})
    store = RunStore(db)
    running = store.create(TINY, config())
    store.start(running, 8, "cpu")
    # A manager of this process that no longer exists, and an exited process.
    gone = store.create(TINY, config(seed=1), owner=runs._new_owner())
    dead_pid = subprocess.Popen(["true"])
    dead_pid.wait()
    other = store.create(TINY, config(seed=2), owner=f"{runs._HOST}|{dead_pid.pid}||x")
    done = store.create(TINY, config(seed=3))
    store.finish(done, RunStatus.DONE, "trained 1 epochs")

    fresh = get_manager(db, data_root="nowhere")
    try:
        records = {r.id: r for r in fresh.store.list_runs()}
    finally:
        fresh.shutdown()

    assert records[running].status is RunStatus.INTERRUPTED
    assert records[running].message == (
        "the app stopped while this run was training; submit it again to get a result"
    )
    assert records[gone].status is RunStatus.INTERRUPTED
    assert "waiting in the queue" in records[gone].message
    assert records[other].status is RunStatus.INTERRUPTED
    assert records[done].status is RunStatus.DONE
    assert_intact(fresh.store)


def test_runs_of_a_live_manager_are_not_marked_interrupted(manager):
    gate = Gate()
    manager.add_listener(gate)
    run_id = manager.submit(TINY, config())
    assert gate.reached.wait(WAIT)

    marked = RunStore(manager.store.path).mark_interrupted()
    status = manager.store.get(run_id).status
    gate.opened.set()

    assert marked == 0
    assert status is RunStatus.RUNNING
    assert manager.wait(run_id, WAIT).status is RunStatus.DONE


def test_get_manager_is_one_per_process_and_database(db, monkeypatch, tmp_path):
    monkeypatch.setattr(runs, "_MANAGERS", {})
    monkeypatch.chdir(tmp_path)
    first = get_manager(db)
    try:
        again = get_manager(db.relative_to(tmp_path))
        other = get_manager(tmp_path / "other.sqlite")
        assert again is first
        assert other is not first
        assert first.max_concurrent == 1
        other.shutdown()
    finally:
        first.shutdown()


def test_find_done_returns_the_newest_finished_run_with_equal_settings(manager):
    older = manager.wait(manager.submit(TINY, config()), WAIT)
    newer = manager.wait(manager.submit(TINY, config(), kind="baseline"), WAIT)
    store = manager.store

    assert older.status is newer.status is RunStatus.DONE
    assert store.find_done(TINY, config()).id == newer.id
    assert store.find_done(TINY, config(seed=1)) is None
    assert store.find_done(TUTORIAL_LENET, config()) is None
    store.delete(newer.id)
    assert store.find_done(TINY, config()).id == older.id


def test_find_done_skips_runs_that_did_not_finish(db):
    store = RunStore(db)
    run_id = store.create(TINY, config())
    store.finish(run_id, RunStatus.STOPPED, "stopped at step 3")

    assert store.find_done(TINY, config()) is None


def test_delete_removes_the_row_and_the_weights_file(manager):
    record = manager.wait(manager.submit(TINY, config()), WAIT)
    manager.delete(record.id)

    assert not (manager.weights_dir / f"{record.id}.pt").exists()
    with pytest.raises(UnknownRunError, match=f"run {record.id} is not in"):
        manager.store.get(record.id)


def test_list_runs_filters_and_puts_the_newest_first(db):
    store = RunStore(db)
    a = store.create(TINY, config(), kind="sweep", group_id="g1", label="a")
    b = store.create(TINY, config(), kind="baseline")
    c = store.create(TINY, config(), kind="sweep", group_id="g1", label="c")
    store.finish(c, RunStatus.DONE, "trained 1 epochs")

    assert [r.id for r in store.list_runs()] == [c, b, a]
    assert [r.id for r in store.list_runs(group_id="g1")] == [c, a]
    assert [r.id for r in store.list_runs(kind="baseline")] == [b]
    assert [r.id for r in store.list_runs(status=RunStatus.QUEUED)] == [b, a]
    assert store.get(a).label == "a"
    assert store.get(a).config == config()
    assert store.get(a).spec == TINY


def test_progress_is_written_per_epoch_when_steps_come_fast(manager, monkeypatch):
    writes: list[int] = []
    original = RunStore.progress
    monkeypatch.setattr(runs, "PROGRESS_SECONDS", 3600.0)

    def counting(self, run_id, step, losses):
        writes.append(step)
        return original(self, run_id, step, losses)

    monkeypatch.setattr(RunStore, "progress", counting)
    record = manager.wait(manager.submit(TINY, config(batch_size=4, epochs=3)), WAIT)

    # The first StepDone is written at once, then only the epochs' ends.
    assert writes == [1, 16, 32, 48]
    assert record.step == 48


def test_a_database_from_newer_code_is_refused(db):
    RunStore(db)
    import sqlite3

    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA user_version = 99")

    with pytest.raises(RuntimeError, match="schema version 99, newer than this code"):
        RunStore(db)


# ---------------------------------------------------------------- submit checks


def test_submit_checks_the_spec_before_storing(manager):
    wrong_head = TINY.replace_blocks([*TINY.blocks[:-1], FC(5)])

    with pytest.raises(SpecError, match="out_features 5 must equal num_classes 10"):
        manager.submit(wrong_head, config())
    assert manager.store.list_runs() == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "nightly"}, "kind 'nightly' is unknown; use one of single"),
    ],
    ids=["unknown-kind"],
)
def test_submit_checks_the_settings_before_storing(manager, changes, message):
    with pytest.raises(ConfigError, match=message):
        manager.submit(TINY, config(), **changes)
    assert manager.store.list_runs() == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_submit_refuses_a_device_that_is_not_here(manager):
    with pytest.raises(ConfigError, match="device 'cuda' is not available"):
        manager.submit(TINY, config(device="cuda"))
    assert manager.store.list_runs() == []


def test_a_shut_down_manager_refuses_new_runs(manager):
    manager.shutdown()

    with pytest.raises(RuntimeError, match="was shut down; create a new one"):
        manager.submit(TINY, config())


def test_queue_position_counts_the_runs_ahead(manager):
    gate = Gate()
    manager.add_listener(gate)
    first = manager.submit(TINY, config())
    second = manager.submit(TINY, config(seed=1))
    third = manager.submit(TINY, config(seed=2))
    assert gate.reached.wait(WAIT)

    positions = [manager.queue_position(r) for r in (first, second, third)]
    gate.opened.set()
    manager.wait(third, WAIT)

    assert positions == [0, 1, 2]
    assert manager.queue_position(third) is None


def test_delete_group_removes_its_runs_and_weights_only(manager):
    kept = manager.submit(TINY, config())
    swept = [
        manager.submit(TINY, config(seed=seed), kind="sweep", group_id="g")
        for seed in (0, 1)
    ]
    manager.store.create_group("g", "two seeds")
    records = [manager.wait(run_id, WAIT) for run_id in (kept, *swept)]

    assert manager.delete_group("g") == 2
    assert [r.id for r in manager.store.list_runs()] == [kept]
    assert manager.store.get_group("g") is None
    assert [bool(records[i].weights_path) for i in range(3)] == [True] * 3
    assert [(manager.weights_dir / f"{r}.pt").exists() for r in swept] == [False] * 2


def test_an_unreadable_row_is_left_out_of_the_list_with_a_warning(db):
    import sqlite3

    store = RunStore(db)
    good = store.create(TINY, config())
    bad = store.create(TINY, config())
    with sqlite3.connect(db) as connection:
        connection.execute(
            "UPDATE runs SET spec = '{\"blocks\": 5}' WHERE id = ?", (bad,)
        )

    with pytest.warns(UserWarning, match=f"run {bad} cannot be read"):
        listed = store.list_runs()

    assert [r.id for r in listed] == [good]


def test_a_run_deleted_while_training_stops_and_leaves_no_weights(manager, monkeypatch):
    monkeypatch.setattr(runs, "PROGRESS_SECONDS", 0.0)
    gate = Gate(at_step=4)
    steps: list[int] = []
    manager.add_listener(gate)
    manager.add_listener(
        lambda run_id, event: (
            steps.append(event.step) if isinstance(event, StepDone) else None
        )
    )
    run_id = manager.submit(TINY, config(batch_size=4, epochs=50))
    assert gate.reached.wait(WAIT)

    manager.store.delete(run_id)
    gate.opened.set()

    with pytest.raises(UnknownRunError, match=f"run {run_id} is not in"):
        manager.wait(run_id, WAIT)
    # StepDone comes every 4 of the 800 steps; the next one finds the row gone.
    assert max(steps) <= gate.step + 4
    assert not (manager.weights_dir / f"{run_id}.pt").exists()
