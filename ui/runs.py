"""Streamlit helpers for training runs: the shared manager, progress and results.

The pages read every run from the store, so what they draw survives reruns,
reloads and other tabs; the manager trains in background threads.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import streamlit as st

import surgery.runs as surgery_runs
from surgery.presets import PRESETS, TUTORIAL_LENET
from surgery.runs import RunManager, RunRecord, RunStatus, RunStore, UnknownRunError
from surgery.spec import Spec
from surgery.stats import seed_spread
from surgery.train import ConfigError, TrainConfig
from ui import charts
from ui.sidebar import RUNS_DB_ENV, AppPaths, render_sidebar

BASELINE_LABEL = "tutorial LeNet (baseline)"
ENDED_BADLY = (RunStatus.FAILED, RunStatus.DIVERGED, RunStatus.INTERRUPTED)


@st.cache_resource(show_spinner=False)
def _cached_manager(runs_db: str, data_root: str, max_runs: int | None) -> RunManager:
    return surgery_runs.get_manager(
        db_path=runs_db, data_root=data_root, max_concurrent=max_runs
    )


def get_run_manager(paths: AppPaths) -> RunManager:
    """The one manager every session and tab of this server shares."""
    return _cached_manager(paths.runs_db, paths.data_root, paths.max_runs)


def page_manager() -> RunManager:
    """Draw the shared sidebar, with the queue, and return the manager."""
    paths = render_sidebar()
    try:
        manager = get_run_manager(paths)
    # The store's own messages name the file and the fix (schema, permissions).
    except (OSError, RuntimeError, sqlite3.Error) as error:
        st.error(
            f"The run store {paths.runs_db} cannot be opened: {error}. Set "
            f"{RUNS_DB_ENV} to another file, or fix the one named."
        )
        st.stop()
    active = len(manager.active_ids())
    if active:
        st.sidebar.info(f"{active} run(s) queued or training on this server.")
    return manager


def keep_widget_state(defaults: dict) -> None:
    """Set each widget key once; re-assigning keeps it when the user changes page."""
    for key, default in defaults.items():
        st.session_state[key] = st.session_state.get(key, default)


# ---------------------------------------------------------------- words


def stack_name(spec: Spec) -> str:
    """The preset's title when the stack is one, else 'your stack'."""
    for preset in PRESETS.values():
        if preset.spec == spec:
            return preset.title
    return "your stack"


def run_name(record: RunRecord) -> str:
    """'#12 your stack' : the id, then the label or the kind."""
    return f"#{record.id} {record.label or record.kind}"


def format_seconds(seconds: float | None) -> str:
    """'45 s', '3 min 20 s', '2 h 05 min'; '?' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def format_accuracy(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}%"


def settings_line(config: TrainConfig) -> str:
    """'sgd lr 0.001 momentum 0.9, batch_size 4, 2 epochs, seed 0'."""
    optimizer = config.optimizer.value
    if optimizer == "sgd":
        optimizer += f" lr {config.lr:g} momentum {config.momentum:g}"
    else:
        optimizer += f" lr {config.lr:g}"
    epochs = "1 epoch" if config.epochs == 1 else f"{config.epochs} epochs"
    return (
        f"{optimizer}, batch_size {config.batch_size}, {epochs}, "
        f"seed {config.seed}, device {config.device}"
    )


def settings_key(record: RunRecord) -> str:
    """Identical stack and settings except the seed give the same key."""
    config = {**record.config.to_dict(), "seed": None}
    return surgery_runs.canonical_spec(record.spec) + json.dumps(config, sort_keys=True)


def config_changes(a: TrainConfig, b: TrainConfig) -> list[str]:
    """'lr 0.001 -> 0.01' for each setting that differs."""
    da, db = a.to_dict(), b.to_dict()
    return [f"{key} {da[key]} -> {db[key]}" for key in da if da[key] != db[key]]


# ---------------------------------------------------------------- reading runs


def get_runs(store: RunStore, ids: Iterable[int]) -> list[RunRecord]:
    """The records that still exist, in the order of `ids`."""
    records = []
    for run_id in ids:
        try:
            records.append(store.get(run_id))
        except UnknownRunError:
            continue
    return records


def find_baseline(store: RunStore, config: TrainConfig) -> RunRecord | None:
    """A finished tutorial-LeNet run with `config`, else one queued or training."""
    done = store.find_done(TUTORIAL_LENET, config)
    if done is not None:
        return done
    for status in (RunStatus.RUNNING, RunStatus.QUEUED):
        for record in store.list_runs(status=status):
            if record.spec == TUTORIAL_LENET and record.config == config:
                return record
    return None


def seed_groups(store: RunStore, records: Sequence[RunRecord]) -> list[dict]:
    """Test accuracy over seeds for each (stack, settings) of `records`.

    Every finished run in the store with the same stack and settings counts,
    whatever its seed, so the spread uses all the evidence there is.
    """
    by_key: dict[str, list[RunRecord]] = {}
    for done in store.list_runs(status=RunStatus.DONE):
        if done.test_accuracy is not None:
            by_key.setdefault(settings_key(done), []).append(done)
    rows, seen = [], set()
    for record in records:
        key = settings_key(record)
        if key not in seen:
            seen.add(key)
            rows.append(_seed_row(record, by_key.get(key, [])))
    return rows


def _seed_row(record: RunRecord, same: list[RunRecord]) -> dict:
    row = {
        "stack": record.label or stack_name(record.spec),
        "settings": settings_line(record.config).replace(
            f", seed {record.config.seed}", ""
        ),
        "seeds": ", ".join(str(r.config.seed) for r in sorted(same, key=_seed)),
        "n": len(same),
    }
    if not same:
        return {**row, "mean": None, "std": None, "low": None, "high": None}
    spread = seed_spread([r.test_accuracy for r in same])
    std = spread.std if spread.n > 1 else None
    return {
        **row,
        "mean": spread.mean,
        "std": std,
        "low": spread.low,
        "high": spread.high,
    }


def _seed(record: RunRecord) -> int:
    return record.config.seed


# ---------------------------------------------------------------- drawing


def render_progress(record: RunRecord, manager: RunManager, key: str) -> None:
    """A progress bar with step/total and ETA, and a Stop button while active."""
    name = run_name(record)
    bar, button = st.columns([6, 1], vertical_alignment="bottom")
    bar.progress(record.fraction, text=f"{name}: {progress_text(record)}")
    if record.active and button.button("Stop", key=f"{key}-stop-{record.id}"):
        stop_runs(manager, [record])


def progress_text(record: RunRecord) -> str:
    """'step 120/782 · ETA 25 s', or what the run does when no step counts."""
    steps = f"step {record.step:,}/{record.total_steps:,}"
    if record.status == RunStatus.QUEUED:
        return "waiting in the queue"
    if not record.total_steps:
        return record.message or "starting"
    if record.message:
        return f"{record.message} ({steps})"
    if record.step >= record.total_steps:
        return f"{steps} · testing on the test images"
    return f"{steps} · ETA {format_seconds(record.eta_seconds)}"


def stop_runs(manager: RunManager, records: Sequence[RunRecord]) -> None:
    """Stop runs this server trains; say which ones another process trains."""
    stopped = [r for r in records if manager.stop(r.id)]
    others = [run_name(r) for r in records if r not in stopped]
    if stopped:
        st.toast(f"Stopping {len(stopped)} run(s) after their current batch.")
    if others:
        st.toast(
            f"{', '.join(others)}: trained by another process (the command line "
            "or another server); stop it there."
        )


def render_status(record: RunRecord) -> None:
    """How a run ended, when it did not simply finish."""
    name = run_name(record)
    if record.status in ENDED_BADLY:
        st.error(f"{name} {record.status.value}: {record.message}")
    elif record.status == RunStatus.STOPPED:
        st.warning(
            f"{name} was stopped ({record.message}); its numbers cover only the "
            "steps it trained."
        )


def render_curves(records: Sequence[RunRecord]) -> None:
    """Loss against step and accuracy per epoch, the runs overlaid."""
    losses = {run_name(r): r.losses for r in records if r.losses}
    epochs = {run_name(r): r.epochs for r in records if r.epochs}
    left, right = st.columns(2)
    with left:
        if losses:
            st.altair_chart(charts.loss_chart(losses), width="stretch")
        else:
            st.caption("The loss curve appears after the first steps.")
    with right:
        if epochs:
            st.altair_chart(charts.accuracy_chart(epochs), width="stretch")
        else:
            st.caption("Accuracy appears after the first epoch.")


def render_per_class(records: Sequence[RunRecord]) -> None:
    per_class = {run_name(r): r.result["per_class"] for r in records if r.scored}
    if per_class:
        st.altair_chart(charts.per_class_chart(per_class), width="stretch")


def result_rows(records: Sequence[RunRecord]) -> list[dict]:
    """One row per run: accuracy, time, speed and device."""
    rows = []
    for r in records:
        result = r.result or {}
        rows.append(
            {
                "run": run_name(r),
                "status": r.status.value,
                "test accuracy (%)": r.test_accuracy,
                "seconds": result.get("seconds", r.elapsed_seconds),
                "images/s": result.get("images_per_second"),
                "device": result.get("device", r.device),
                "steps": result.get("steps", r.step),
                "settings": settings_line(r.config),
            }
        )
    return rows


def render_result_table(records: Sequence[RunRecord]) -> None:
    st.dataframe(
        result_rows(records),
        hide_index=True,
        column_config={
            "test accuracy (%)": st.column_config.NumberColumn(format="%.2f"),
            "seconds": st.column_config.NumberColumn(format="%.1f"),
            "images/s": st.column_config.NumberColumn(format="%.0f"),
        },
    )


def render_weights_download(record: RunRecord) -> None:
    """A download button for the run's state_dict, when the file is there."""
    if not record.weights_path or not Path(record.weights_path).is_file():
        return
    st.download_button(
        f"Download weights of {run_name(record)} (state_dict .pt)",
        data=Path(record.weights_path).read_bytes(),
        file_name=f"run-{record.id}.pt",
        key=f"weights-{record.id}",
    )


def created_text(record: RunRecord) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created))


def parse_numbers(name: str, text: str, kind: type = int) -> list:
    """'4, 16 64' -> [4, 16, 64]; a token that is not a number is a ConfigError."""
    tokens = text.replace(",", " ").split()
    if not tokens:
        raise ConfigError(f"{name} is empty; write at least one value, e.g. 4, 16, 64")
    values = []
    for token in tokens:
        try:
            values.append(kind(token))
        except ValueError:
            word = "a whole number" if kind is int else "a number"
            raise ConfigError(
                f"{name}: {token!r} is not {word}; write values separated by "
                "commas, e.g. 4, 16, 64"
            ) from None
    return values
