"""Training runs that outlive the page: a SQLite store and a background queue.

`RunStore` keeps every run (spec, settings, progress, result) in one SQLite file,
so a run submitted from one browser tab can be read from another, or after a
reload. `RunManager` trains runs in worker threads, one shared queue per process
and database, and writes their progress to the store. `get_manager` hands out
that one manager, and on first use marks runs left by a dead process as
interrupted.
"""

from __future__ import annotations

import json
import math
import os
import queue
import socket
import sqlite3
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from .data import Cifar10, load_cifar10
from .shapes import trace
from .spec import Spec, SpecError, spec_from_dict
from .train import (
    ConfigError,
    EpochDone,
    Event,
    Status,
    StepDone,
    TrainConfig,
    TrainResult,
    TrainStarted,
    check_size,
    resolve_device,
    train,
)

SCHEMA_VERSION = 1
STOPPING_MESSAGE = "stopping after the current batch, then testing what it learned"
# Progress is written at most this often (plus at every epoch), whatever the speed.
PROGRESS_SECONDS = 1.0
# Loss points stored per run; train reports about 200, this is the hard cap.
MAX_LOSS_POINTS = 400


class RunStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    STOPPED = "stopped"
    DIVERGED = "diverged"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def active(self) -> bool:
        """True while the run is waiting or training."""
        return self in (RunStatus.QUEUED, RunStatus.RUNNING)


ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)


class RunKind(str, Enum):
    SINGLE = "single"
    BASELINE = "baseline"
    SWEEP = "sweep"


class UnknownRunError(KeyError):
    """A run id that is not in the store."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown run"


@dataclass(frozen=True)
class RunRecord:
    """One row of the store, decoded; accuracies in percent, times in epoch seconds.

    `epochs` holds EpochDone fields as dicts; `losses` holds [step, loss] pairs;
    `result` is TrainResult.to_dict() once the run has ended with a model.
    """

    id: int
    kind: str
    group_id: str | None
    label: str
    spec: Spec
    config: TrainConfig
    status: RunStatus
    message: str
    created: float
    started: float | None
    finished: float | None
    step: int
    total_steps: int
    epochs: list[dict]
    losses: list[list[float]]
    result: dict | None
    weights_path: str | None
    device: str | None
    detail: str = ""
    params: int | None = None
    updated: float | None = None

    @property
    def active(self) -> bool:
        return self.status.active

    @property
    def scored(self) -> bool:
        """True when the run has a final result worth showing (not a NaN model)."""
        return self.result is not None and self.status != RunStatus.DIVERGED

    @property
    def test_accuracy(self) -> float | None:
        """The final test accuracy, else the last epoch's, else None.

        None for a diverged run: a model with NaN weights predicts one class, and
        its 10% says nothing about the stack.
        """
        if self.status == RunStatus.DIVERGED:
            return None
        if self.result is not None:
            return self.result["test_accuracy"]
        if self.epochs:
            return self.epochs[-1]["test_accuracy"]
        return None

    @property
    def fraction(self) -> float:
        """How far training got, 0 to 1."""
        if self.status == RunStatus.DONE:
            return 1.0
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0

    @property
    def elapsed_seconds(self) -> float | None:
        """Seconds from start to finish, or to the last progress write while running."""
        if self.started is None:
            return None
        end = self.finished or self.updated or self.started
        return max(0.0, end - self.started)

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left for a running run at its pace so far; None when unknown."""
        if self.status != RunStatus.RUNNING or not self.step or not self.started:
            return None
        elapsed = self.elapsed_seconds or 0.0
        left = elapsed / self.step * max(0, self.total_steps - self.step)
        since_write = time.time() - (self.updated or self.started)
        return max(0.0, left - since_write)


# ---------------------------------------------------------------- the store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    group_id TEXT,
    label TEXT NOT NULL DEFAULT '',
    spec TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    owner TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    updated REAL,
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER NOT NULL DEFAULT 0,
    params INTEGER,
    epochs TEXT NOT NULL DEFAULT '[]',
    losses TEXT NOT NULL DEFAULT '[]',
    result TEXT,
    weights_path TEXT,
    device TEXT
);
CREATE INDEX IF NOT EXISTS runs_group ON runs (group_id);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
CREATE INDEX IF NOT EXISTS runs_find ON runs (spec, config, status);
CREATE TABLE IF NOT EXISTS groups (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    info TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL
);
"""


def canonical_spec(spec: Spec) -> str:
    """The spec as compact JSON with sorted keys: equal specs give equal text."""
    return json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":"))


def canonical_config(config: TrainConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))


class RunStore:
    """Runs in one SQLite file; safe to share between threads and processes.

    Each call opens its own connection, so threads never share one; the file is
    in WAL mode, so readers do not wait for the training thread's writes.
    """

    def __init__(self, path: str | Path = "runs/runs.sqlite"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            self._migrate(db)
        # Held open for the store's life: when the last connection to a WAL file
        # closes, SQLite checkpoints and syncs (about 20 ms), which every call
        # would otherwise pay.
        self._anchor = sqlite3.connect(self.path, check_same_thread=False)
        self._anchor.execute("SELECT count(*) FROM runs").fetchone()

    def _connect(self) -> _Closing:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout = 30000")
        # In WAL mode NORMAL skips the fsync per commit and still never corrupts
        # the file; a power cut may lose the last progress write, nothing more.
        db.execute("PRAGMA synchronous = NORMAL")
        return _Closing(db)

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"runs database {self.path} has schema version {version}, newer "
                f"than this code's {SCHEMA_VERSION}; update the code or pass "
                "another database path"
            )
        if version < SCHEMA_VERSION:
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # ------------------------------------------------------------ writing

    def create(
        self,
        spec: Spec,
        config: TrainConfig,
        kind: str = "single",
        group_id: str | None = None,
        label: str = "",
        owner: str | None = None,
    ) -> int:
        """Add a queued run and return its id."""
        kind = RunKind(kind).value
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO runs (kind, group_id, label, spec, config, status, "
                "owner, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    group_id,
                    label,
                    canonical_spec(spec),
                    canonical_config(config),
                    RunStatus.QUEUED.value,
                    owner,
                    time.time(),
                ),
            )
            return int(cursor.lastrowid)

    def start(
        self, run_id: int, total_steps: int, device: str, params: int | None = None
    ) -> None:
        """Mark the run running, with its step count and device."""
        now = time.time()
        self._update(
            run_id,
            status=RunStatus.RUNNING.value,
            message="",
            started=now,
            updated=now,
            total_steps=total_steps,
            device=device,
            params=params,
        )

    def set_message(self, run_id: int, message: str) -> None:
        self._update(run_id, message=message, updated=time.time())

    def progress(self, run_id: int, step: int, losses: list) -> bool:
        """Write the step reached and the loss curve; False if the run was deleted."""
        points = [list(p) for p in _downsample(losses, MAX_LOSS_POINTS)]
        return self._update(
            run_id, step=step, losses=_dumps(points), updated=time.time()
        )

    def epoch(self, run_id: int, done: EpochDone | dict) -> None:
        """Append one finished epoch."""
        entry = done if isinstance(done, dict) else _epoch_dict(done)
        with self._connect() as db:
            row = db.execute(
                "SELECT epochs FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
            if row is None:
                return
            epochs = json.loads(row["epochs"]) + [entry]
            db.execute(
                "UPDATE runs SET epochs = ?, step = ?, updated = ? WHERE id = ?",
                (_dumps(epochs), entry["step"], time.time(), run_id),
            )

    def finish(
        self,
        run_id: int,
        status: RunStatus | str,
        message: str,
        result: dict | None = None,
        weights_path: str | None = None,
        detail: str = "",
    ) -> None:
        """Record how the run ended; a result also sets the final step and losses."""
        values: dict[str, Any] = {
            "status": RunStatus(status).value,
            "message": message,
            "detail": detail,
            "finished": time.time(),
            "weights_path": weights_path,
        }
        if result is not None:
            values["result"] = _dumps(result)
            values["step"] = result["steps"]
            values["losses"] = _dumps(_downsample(result["losses"], MAX_LOSS_POINTS))
            values["epochs"] = _dumps(result["epochs"])
        self._update(run_id, **values)

    def create_group(self, group_id: str, title: str = "", info: dict | None = None):
        """Record a sweep: its title and what to plot (see surgery.sweep)."""
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO groups (id, title, info, created) "
                "VALUES (?, ?, ?, ?)",
                (group_id, title, _dumps(info or {}), time.time()),
            )

    def delete(self, run_id: int) -> None:
        """Remove the run and its weights file; an unknown id is an error."""
        record = self.get(run_id)
        with self._connect() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        if record.weights_path:
            Path(record.weights_path).unlink(missing_ok=True)

    def delete_group(self, group_id: str) -> int:
        """Remove a sweep with its runs and their weights; returns the run count."""
        records = self.list_runs(group_id=group_id)
        for record in records:
            self.delete(record.id)
        with self._connect() as db:
            db.execute("DELETE FROM groups WHERE id = ?", (group_id,))
        return len(records)

    def mark_interrupted(
        self, alive: Callable[[str | None], bool] | None = None
    ) -> int:
        """Mark queued or running runs whose process is gone as interrupted.

        Args:
            alive: tells whether the owner of a row still runs; by default a row
                is orphaned when it has no owner, or its process on this host has
                exited, or it is this process's but its manager was shut down.

        Returns:
            how many runs were marked.
        """
        alive = alive or owner_alive
        with self._connect() as db:
            rows = db.execute(
                "SELECT id, status, owner FROM runs WHERE status IN (?, ?)",
                tuple(s.value for s in ACTIVE),
            ).fetchall()
            orphans = [row for row in rows if not alive(row["owner"])]
            for row in orphans:
                was = (
                    "training" if row["status"] == "running" else "waiting in the queue"
                )
                db.execute(
                    "UPDATE runs SET status = ?, message = ?, finished = ? "
                    "WHERE id = ? AND status IN (?, ?)",
                    (
                        RunStatus.INTERRUPTED.value,
                        (
                            f"the app stopped while this run was {was}; "
                            "submit it again to get a result"
                        ),
                        time.time(),
                        row["id"],
                        *(s.value for s in ACTIVE),
                    ),
                )
        return len(orphans)

    def _update(self, run_id: int, **values: Any) -> bool:
        """Set columns of one run; False when the run is not there (deleted)."""
        columns = ", ".join(f"{name} = ?" for name in values)
        with self._connect() as db:
            cursor = db.execute(
                f"UPDATE runs SET {columns} WHERE id = ?", (*values.values(), run_id)
            )
            return cursor.rowcount > 0

    # ------------------------------------------------------------ reading

    def get(self, run_id: int) -> RunRecord:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UnknownRunError(
                f"run {run_id} is not in {self.path}; it may have been deleted; "
                "pick a run from the list"
            )
        return _record(row)

    def list_runs(
        self,
        status: RunStatus | str | None = None,
        kind: str | None = None,
        group_id: str | None = None,
    ) -> list[RunRecord]:
        """Runs matching every given filter, newest first."""
        where, args = [], []
        for name, value in (("status", status), ("kind", kind), ("group_id", group_id)):
            if value is not None:
                where.append(f"{name} = ?")
                args.append(value.value if isinstance(value, Enum) else value)
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._connect() as db:
            rows = db.execute(sql + " ORDER BY id DESC", args).fetchall()
        return [record for row in rows if (record := _readable(row)) is not None]

    def find_done(self, spec: Spec, config: TrainConfig) -> RunRecord | None:
        """The newest 'done' run with this exact spec and config, if any."""
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM runs WHERE spec = ? AND config = ? AND status = ? "
                "ORDER BY id DESC LIMIT 1",
                (canonical_spec(spec), canonical_config(config), RunStatus.DONE.value),
            ).fetchone()
        return None if row is None else _record(row)

    def get_group(self, group_id: str) -> dict | None:
        """{"id", "title", "info", "created"} of a sweep, or None."""
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM groups WHERE id = ?", (group_id,)
            ).fetchone()
        return None if row is None else _group(row)

    def list_groups(self) -> list[dict]:
        """Every recorded sweep, newest first."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM groups ORDER BY created DESC").fetchall()
        return [_group(row) for row in rows]

    def integrity_check(self) -> str:
        """SQLite's own check of the file: 'ok' when it is intact."""
        with self._connect() as db:
            return db.execute("PRAGMA integrity_check").fetchone()[0]


class _Closing:
    """A connection that closes when its `with` block ends (sqlite3's only commits)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, *exc) -> None:
        self.db.close()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _downsample(points: list, limit: int) -> list:
    """Every k-th point so at most `limit` remain; the last point is kept."""
    if len(points) <= limit:
        return list(points)
    every = math.ceil(len(points) / limit)
    kept = list(points[::every])
    if kept[-1] != points[-1]:
        kept[-1] = points[-1]
    return kept


def _epoch_dict(done: EpochDone) -> dict:
    return {
        "epoch": done.epoch,
        "step": done.step,
        "train_loss": done.train_loss,
        "train_accuracy": done.train_accuracy,
        "test_accuracy": done.test_accuracy,
        "seconds": done.seconds,
    }


def _record(row: sqlite3.Row) -> RunRecord:
    config = json.loads(row["config"])
    return RunRecord(
        id=row["id"],
        kind=row["kind"],
        group_id=row["group_id"],
        label=row["label"],
        spec=spec_from_dict(json.loads(row["spec"])),
        config=TrainConfig(**config),
        status=RunStatus(row["status"]),
        message=row["message"],
        created=row["created"],
        started=row["started"],
        finished=row["finished"],
        step=row["step"],
        total_steps=row["total_steps"],
        epochs=json.loads(row["epochs"]),
        losses=json.loads(row["losses"]),
        result=None if row["result"] is None else json.loads(row["result"]),
        weights_path=row["weights_path"],
        device=row["device"],
        detail=row["detail"],
        params=row["params"],
        updated=row["updated"],
    )


def _readable(row: sqlite3.Row) -> RunRecord | None:
    """The row's record, or None with a warning when it no longer parses."""
    try:
        return _record(row)
    # A row written by other code (older limits, a hand edit) must not hide the rest.
    except (ValueError, TypeError, KeyError) as error:
        warnings.warn(
            f"run {row['id']} cannot be read ({error}); it is left out of the list; "
            "delete it if it is no longer needed",
            stacklevel=3,
        )
        return None


def _group(row: sqlite3.Row) -> dict:
    return {
        "id": row["id"],
        "title": row["title"],
        "info": json.loads(row["info"]),
        "created": row["created"],
    }


# ---------------------------------------------------------------- who owns a run

_HOST = socket.gethostname()
# Owner tokens of this process's managers that have not been shut down.
_LIVE_OWNERS: set[str] = set()


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks (Linux): tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _new_owner() -> str:
    pid = os.getpid()
    return f"{_HOST}|{pid}|{_process_start(pid)}|{uuid.uuid4().hex}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_alive(owner: str | None) -> bool:
    """Whether the manager that wrote `owner` may still be running its runs."""
    if not owner:
        return False
    parts = owner.split("|")
    if len(parts) != 4 or not parts[1].isdigit():
        return False
    host, pid, started, _token = parts[0], int(parts[1]), parts[2], parts[3]
    if host != _HOST:
        # Another machine's process cannot be checked from here; trust it.
        return True
    if pid == os.getpid():
        return owner in _LIVE_OWNERS
    if not _pid_alive(pid):
        return False
    return not started or _process_start(pid) in ("", started)


# ---------------------------------------------------------------- the manager


@dataclass(frozen=True)
class RunEnded:
    """The last event a listener gets for a run."""

    record: RunRecord


Listener = Callable[[int, Event | RunEnded], None]


@dataclass
class _Job:
    run_id: int
    spec: Spec
    config: TrainConfig
    stop: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    ending: bool = False


# Held from torch.manual_seed to the model's creation inside train(), so two runs
# starting at once in two threads cannot interleave their draws from the global RNG.
_SEED_LOCK = threading.Lock()


class RunManager:
    """Trains submitted runs in background threads, one shared queue.

    Runs are reproducible by seed as long as one trains at a time on a device:
    the seeding and the model's creation are serialised, but dropout masks come
    from PyTorch's global generator, which concurrent CPU runs share.

    Args:
        store: where runs and their progress are written.
        load_data: returns CIFAR-10; called once, on the first run, and shared.
        max_concurrent: runs trained at once; more waits in the queue.
        weights_dir: where `<id>.pt` state dicts go; default `weights/` next to
            the database.
    """

    def __init__(
        self,
        store: RunStore,
        load_data: Callable[[], Cifar10],
        max_concurrent: int = 1,
        weights_dir: Path | None = None,
    ):
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            raise ConfigError(
                f"max_concurrent {max_concurrent!r} is not a whole number; "
                "use 1 or more"
            )
        if max_concurrent < 1:
            raise ConfigError(
                f"max_concurrent {max_concurrent} is below 1; use 1 or more"
            )
        self.store = store
        self.max_concurrent = max_concurrent
        self.weights_dir = Path(weights_dir or store.path.parent / "weights")
        self.owner = _new_owner()
        _LIVE_OWNERS.add(self.owner)
        self._load_data = load_data
        self._data: Cifar10 | None = None
        self._data_lock = threading.Lock()
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._jobs: dict[int, _Job] = {}
        self._workers: list[threading.Thread] = []
        self._listeners: list[Listener] = []
        self._closed = False

    # ------------------------------------------------------------ public

    def submit(
        self,
        spec: Spec,
        config: TrainConfig,
        kind: str = "single",
        group_id: str | None = None,
        label: str = "",
    ) -> int:
        """Check the spec and settings, queue the run and return its id.

        Raises SpecError or ConfigError before anything is stored.
        """
        check_trainable(spec, config)
        kind = _kind(kind)
        with self._lock:
            if self._closed:
                raise RuntimeError("this RunManager was shut down; create a new one")
            run_id = self.store.create(spec, config, kind, group_id, label, self.owner)
            job = _Job(run_id, spec, config)
            self._jobs[run_id] = job
            self._start_workers()
        self._queue.put(job)
        return run_id

    def stop(self, run_id: int) -> bool:
        """Stop a run: a queued one never starts, a running one ends after its batch.

        A stopped run keeps what it had: partial metrics and weights. Returns
        False when the run is not active in this manager.
        """
        with self._lock:
            job = self._jobs.get(run_id)
            if job is None:
                return False
            job.stop.set()
            queued = not job.started
            if queued:
                self.store.finish(
                    run_id, RunStatus.STOPPED, "stopped before it started"
                )
            else:
                # The final test pass takes seconds; say why the run still runs.
                self.store.set_message(run_id, STOPPING_MESSAGE)
        if queued:
            self._end(job)
        return True

    def wait(self, run_id: int, timeout: float | None = None) -> RunRecord:
        """The run's record once it has ended, or as it is when `timeout` passes."""
        job = self._jobs.get(run_id)
        if job is not None:
            job.ended.wait(timeout)
        return self.store.get(run_id)

    def delete(self, run_id: int) -> None:
        """Stop the run if it is active, then remove it and its weights."""
        if self.stop(run_id):
            self.wait(run_id)
        self.store.delete(run_id)

    def delete_group(self, group_id: str) -> int:
        """Stop a sweep's active runs, then remove all its runs and the sweep."""
        active = [
            r.id for r in self.store.list_runs(group_id=group_id) if r.id in self._jobs
        ]
        for run_id in active:
            self.stop(run_id)
        for run_id in active:
            self.wait(run_id)
        return self.store.delete_group(group_id)

    def queue_position(self, run_id: int) -> int | None:
        """0 while the run trains, k when it is k-th in the queue; None when ended."""
        with self._lock:
            job = self._jobs.get(run_id)
            if job is None:
                return None
            if job.started:
                return 0
            waiting = [j for j in self._jobs.values() if not j.started]
            return waiting.index(job) + 1

    def active_ids(self) -> list[int]:
        """Runs of this manager that are queued or training, in submission order."""
        with self._lock:
            return sorted(self._jobs)

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(run_id, event)` from the training thread for every event.

        Events are train's TrainStarted, StepDone and EpochDone, then a RunEnded.
        A listener that raises is reported with a warning and does not stop the run.
        """
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def shutdown(self, wait: bool = True) -> None:
        """Stop queued and running runs and end the worker threads."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs.values())
        for job in jobs:
            self.stop(job.run_id)
        for _ in self._workers:
            self._queue.put(None)
        if wait:
            for worker in self._workers:
                worker.join()
        _LIVE_OWNERS.discard(self.owner)

    def data(self) -> Cifar10:
        """The dataset, loaded on first use and shared by every run."""
        with self._data_lock:
            if self._data is None:
                self._data = self._load_data()
            return self._data

    # ------------------------------------------------------------ workers

    def _start_workers(self) -> None:
        while len(self._workers) < self.max_concurrent:
            slot = len(self._workers)
            worker = threading.Thread(
                target=self._work, args=(slot,), name=f"surgery-run-{slot}", daemon=True
            )
            self._workers.append(worker)
            worker.start()

    def _work(self, slot: int) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.stop.is_set():
                    continue
                job.started = True
            try:
                _RunThread(self, job, slot).run()
            # Even a store that cannot be written must not end the worker.
            except Exception as error:  # noqa: BLE001
                warnings.warn(f"run {job.run_id} could not be recorded: {error!r}")
            finally:
                self._end(job)

    def _end(self, job: _Job) -> None:
        """Forget the job, tell the listeners, then release whoever waits on it."""
        with self._lock:
            self._jobs.pop(job.run_id, None)
            if job.ending:
                return
            job.ending = True
        try:
            self._notify(job.run_id, RunEnded(self.store.get(job.run_id)))
        except UnknownRunError:
            pass
        finally:
            job.ended.set()

    def _notify(self, run_id: int, event) -> None:
        for listener in list(self._listeners):
            try:
                listener(run_id, event)
            # A page's bug must not kill a run.
            except Exception as error:  # noqa: BLE001
                warnings.warn(f"run listener failed on run {run_id}: {error!r}")


class _RunThread:
    """One run inside a worker: train, write progress, save weights, record the end."""

    def __init__(self, manager: RunManager, job: _Job, slot: int):
        self.manager, self.job, self.store = manager, job, manager.store
        self.config = _device_for_slot(job.config, slot)
        self.losses: list[tuple[int, float]] = []
        self.step = 0
        self.last_write = -math.inf
        self.seed_held = False
        self.deleted = False

    def run(self) -> None:
        run_id = self.job.run_id
        self.store.set_message(run_id, "loading CIFAR-10")
        result: TrainResult | None = None
        try:
            data = self.manager.data()
            _SEED_LOCK.acquire()
            self.seed_held = True
            result = train(
                self.job.spec, self.config, data, self._on_event, self.job.stop.is_set
            )
            self._release_seed()
            self._finish(result)
        # Whatever goes wrong, the run ends as failed with a one-line message.
        except Exception as error:  # noqa: BLE001
            self._release_seed()
            self.store.finish(
                run_id,
                RunStatus.FAILED,
                _one_line(error),
                weights_path=None,
                detail=traceback.format_exc(),
            )
        finally:
            self._release_seed()
            _free(result, self.config.device)

    def _on_event(self, event: Event) -> None:
        run_id = self.job.run_id
        if isinstance(event, TrainStarted):
            self._release_seed()
            self.store.start(run_id, event.total_steps, event.device, event.params)
        elif isinstance(event, StepDone):
            self.step = event.step
            self.losses.append((event.step, event.loss))
            now = time.monotonic()
            if now - self.last_write >= PROGRESS_SECONDS:
                self.last_write = now
                self._write_progress(event.step)
        elif isinstance(event, EpochDone):
            self._write_progress(event.step)
            self.store.epoch(run_id, event)
        self.manager._notify(run_id, event)

    def _write_progress(self, step: int) -> None:
        """Write progress; a run deleted from the store meanwhile is stopped."""
        if not self.store.progress(self.job.run_id, step, self.losses):
            self.deleted = True
            self.job.stop.set()

    def _finish(self, result: TrainResult) -> None:
        weights = None
        if self.deleted:
            return
        if result.status is not Status.DIVERGED:
            weights = self._save_weights(result)
        self.store.finish(
            self.job.run_id,
            RunStatus(result.status.value),
            result.message,
            result.to_dict(),
            weights,
        )

    def _save_weights(self, result: TrainResult) -> str:
        """torch.save(state_dict) to weights_dir/<id>.pt, atomically."""
        folder = self.manager.weights_dir
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.job.run_id}.pt"
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
        try:
            torch.save(state, temporary)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        return str(path)

    def _release_seed(self) -> None:
        if self.seed_held:
            self.seed_held = False
            _SEED_LOCK.release()


def _device_for_slot(config: TrainConfig, slot: int) -> TrainConfig:
    """With several GPUs, worker `slot` trains 'auto' runs on GPU number `slot`."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if config.device == "auto" and count > 1:
        return replace(config, device=f"cuda:{slot % count}")
    return config


def _free(result: TrainResult | None, device: str) -> None:
    """Drop the model and hand the run's cached GPU memory back."""
    if result is not None:
        result.model = None
    if not torch.cuda.is_available():
        return
    try:
        gpu = resolve_device(device)
    except ConfigError:
        return
    if gpu.type == "cuda":
        with torch.cuda.device(gpu):
            torch.cuda.empty_cache()


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    name = type(error).__name__
    return f"{name}: {first}" if first else name


def _kind(kind: str) -> str:
    try:
        return RunKind(kind).value
    except ValueError:
        choices = ", ".join(k.value for k in RunKind)
        raise ConfigError(f"kind {kind!r} is unknown; use one of {choices}") from None


def check_trainable(spec: Spec, config: TrainConfig) -> None:
    """Raise SpecError or ConfigError for a run that would fail at its start."""
    if not isinstance(config, TrainConfig):
        raise ConfigError(
            f"config {config!r} is not a TrainConfig; build one with TrainConfig(...)"
        )
    report = trace(spec)
    if report.error is not None:
        raise SpecError(report.error.message, report.error.index)
    check_size(report, config)
    resolve_device(config.device)


# ---------------------------------------------------------------- one per process

_MANAGERS: dict[str, RunManager] = {}
_MANAGERS_LOCK = threading.Lock()


def default_concurrency() -> int:
    """1 on the CPU (runs would fight over cores), one per GPU otherwise."""
    if torch.cuda.is_available():
        return max(1, torch.cuda.device_count())
    return 1


def get_manager(
    db_path: str | Path = "runs/runs.sqlite",
    data_root: str | Path = "data",
    max_concurrent: int | None = None,
) -> RunManager:
    """The process's one manager for `db_path`, created on first call.

    Every browser tab and session shares it, so runs queue behind each other.
    On creation, runs left queued or running by a process that has exited are
    marked interrupted. `max_concurrent` only applies when the manager is created.
    """
    key = str(Path(db_path).resolve())
    with _MANAGERS_LOCK:
        manager = _MANAGERS.get(key)
        if manager is None or manager._closed:
            store = RunStore(db_path)
            store.mark_interrupted()
            manager = RunManager(
                store,
                lambda: load_cifar10(data_root),
                max_concurrent or default_concurrency(),
            )
            _MANAGERS[key] = manager
        return manager
