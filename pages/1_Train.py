"""Train: the stack from the Builder on CIFAR-10, beside the tutorial baseline."""

from __future__ import annotations

import streamlit as st

from surgery.calibrate import estimate_seconds
from surgery.diff import diff_specs
from surgery.presets import TUTORIAL_LENET
from surgery.runs import RunManager, RunRecord, RunStatus, RunStore
from surgery.shapes import ShapeReport, trace
from surgery.spec import Spec, SpecError, describe
from surgery.stats import paired_difference
from surgery.train import ConfigError, TrainConfig
from ui import runs as ui_runs
from ui.sidebar import device_choices, link_to
from ui.state import current_spec

IDS_KEY = "train_run_ids"
ERROR_KEY = "train_error"
DEFAULTS = {
    "train_optimizer": "sgd",
    "train_lr": 0.001,
    "train_momentum": 0.9,
    "train_batch_size": 4,
    "train_epochs": 2,
    "train_seed": 0,
    "train_device": "auto",
    "train_with_baseline": True,
}


def init_state() -> None:
    ui_runs.keep_widget_state(DEFAULTS)
    st.session_state.setdefault(IDS_KEY, None)
    st.session_state.setdefault(ERROR_KEY, None)


# ---------------------------------------------------------------- inputs


def render_stack(spec: Spec, report: ShapeReport) -> None:
    """Name, Param #, flatten size and the blocks of the stack to train."""
    name = ui_runs.stack_name(spec)
    st.subheader(f"Stack: {name}")
    st.caption(" → ".join(describe(block) for block in spec.blocks) or "no blocks")
    if report.error is not None:
        st.error(
            f"This stack cannot train: {report.error.message}. Fix it in the "
            "Builder, then come back."
        )
        link_to("streamlit_app.py", "Open the Builder", "")
        return
    left, middle, right = st.columns(3)
    left.metric("Param #", f"{report.total_params:,}")
    middle.metric("Mult-Adds per image", f"{report.total_mult_adds:,}")
    right.metric("Flatten", f"{report.flatten:,}" if report.flatten else "—")


def render_settings() -> None:
    """The training settings, each widget keyed in session state."""
    st.subheader("Settings")
    first, second, third, fourth = st.columns(4)
    first.selectbox("optimizer", ["sgd", "adam"], key="train_optimizer")
    second.number_input(
        "lr", min_value=1e-7, max_value=10.0, step=0.0005, format="%g", key="train_lr"
    )
    third.number_input(
        "momentum",
        min_value=0.0,
        max_value=0.999,
        step=0.05,
        key="train_momentum",
        disabled=st.session_state["train_optimizer"] != "sgd",
        help="SGD only; Adam keeps its own running averages.",
    )
    fourth.selectbox("device", device_choices(), key="train_device")
    first.number_input("batch_size", 1, 4096, step=1, key="train_batch_size")
    second.number_input("epochs", 1, 200, step=1, key="train_epochs")
    third.number_input("seed", 0, 2**31 - 1, step=1, key="train_seed")
    st.checkbox(
        "Train the tutorial baseline too (skipped when one with these settings "
        "already finished)",
        key="train_with_baseline",
    )


def read_config() -> TrainConfig:
    """The widgets' values as one TrainConfig; ConfigError names a bad value."""
    state = st.session_state
    return TrainConfig(
        optimizer=state["train_optimizer"],
        lr=float(state["train_lr"]),
        momentum=float(state["train_momentum"]),
        batch_size=int(state["train_batch_size"]),
        epochs=int(state["train_epochs"]),
        seed=int(state["train_seed"]),
        device=state["train_device"],
    )


def needs_baseline(store: RunStore, spec: Spec, config: TrainConfig) -> bool:
    if spec == TUTORIAL_LENET or not st.session_state["train_with_baseline"]:
        return False
    return ui_runs.find_baseline(store, config) is None


def render_estimate(spec: Spec, config: TrainConfig, manager: RunManager) -> None:
    """Estimated seconds for the runs a click would start, before starting."""
    with st.spinner("Timing a few training steps…"):
        seconds = estimate_seconds(spec, config)
        baseline = needs_baseline(manager.store, spec, config)
        if baseline:
            seconds += estimate_seconds(TUTORIAL_LENET, config)
    what = "your stack and the baseline" if baseline else "your stack"
    queued = len(manager.active_ids())
    behind = f", after the {queued} run(s) already queued or training" if queued else ""
    st.info(
        f"Estimated time on 50,000 CIFAR-10 images: about "
        f"{ui_runs.format_seconds(seconds)} for {what}{behind}."
    )


def offer_earlier_run(
    store: RunStore, spec: Spec, config: TrainConfig, shown: dict | None
) -> None:
    """Point at a finished run of this exact stack and settings, if not shown."""
    earlier = store.find_done(spec, config)
    if earlier is None or earlier.id == (shown or {}).get("candidate"):
        return
    accuracy = ui_runs.format_accuracy(earlier.test_accuracy)
    note, show = st.columns([5, 1], vertical_alignment="center")
    note.caption(
        f"Run #{earlier.id} already trained this stack with these settings "
        f"({accuracy}); the same seed gives the same result on the CPU."
    )
    show.button(
        "Show it",
        key="train_show_earlier",
        on_click=show_earlier,
        args=(store, earlier),
    )


def show_earlier(store: RunStore, earlier: RunRecord) -> None:
    baseline = ui_runs.find_baseline(store, earlier.config)
    remember({"candidate": earlier.id, "baseline": baseline and baseline.id})


# ---------------------------------------------------------------- starting


def start_runs(manager: RunManager, spec: Spec, config: TrainConfig) -> dict:
    """Submit the stack and, when needed, the baseline; return their ids."""
    label = ui_runs.stack_name(spec)
    existing = ui_runs.find_baseline(manager.store, config)
    candidate = manager.submit(spec, config, kind="single", label=label)
    if spec == TUTORIAL_LENET:
        return {"candidate": candidate, "baseline": candidate}
    baseline = existing.id if existing is not None else None
    if baseline is None and st.session_state["train_with_baseline"]:
        baseline = manager.submit(
            TUTORIAL_LENET, config, kind="baseline", label=ui_runs.BASELINE_LABEL
        )
    return {"candidate": candidate, "baseline": baseline}


def on_train(manager: RunManager, spec: Spec) -> None:
    """The Train button: submit, remember the ids, or keep the error to show."""
    st.session_state[ERROR_KEY] = None
    try:
        ids = start_runs(manager, spec, read_config())
    except (SpecError, ConfigError) as error:
        st.session_state[ERROR_KEY] = str(error)
        return
    remember(ids)


def remember(ids: dict) -> None:
    """Keep the ids in the session and in the URL, so a reload finds them."""
    st.session_state[IDS_KEY] = ids
    st.query_params["run"] = str(ids["candidate"])
    if ids.get("baseline") is not None:
        st.query_params["baseline"] = str(ids["baseline"])
    else:
        st.query_params.pop("baseline", None)


def recall(store: RunStore) -> dict | None:
    """This session's runs, else the URL's, else the newest single run."""
    ids = st.session_state[IDS_KEY]
    if ids is None:
        ids = _ids_from_url()
    if ids is None:
        latest = store.list_runs(kind="single")
        if not latest:
            return None
        ids = {"candidate": latest[0].id, "baseline": None}
    return ids


def _ids_from_url() -> dict | None:
    run = st.query_params.get("run", "")
    if not run.isdigit():
        return None
    baseline = st.query_params.get("baseline", "")
    return {
        "candidate": int(run),
        "baseline": int(baseline) if baseline.isdigit() else None,
    }


# ---------------------------------------------------------------- showing


def records_of(store: RunStore, ids: dict) -> tuple[RunRecord | None, RunRecord | None]:
    """The candidate and its baseline; a link without one finds it by settings."""
    found = ui_runs.get_runs(store, [ids["candidate"]])
    if not found:
        return None, None
    candidate = found[0]
    if candidate.spec == TUTORIAL_LENET:
        return candidate, candidate
    if ids["baseline"] is None:
        return candidate, ui_runs.find_baseline(store, candidate.config)
    baseline = ui_runs.get_runs(store, [ids["baseline"]])
    return candidate, (baseline or [None])[0]


def unique(records) -> list[RunRecord]:
    seen, out = set(), []
    for record in records:
        if record is not None and record.id not in seen:
            seen.add(record.id)
            out.append(record)
    return out


@st.fragment(run_every=1)
def live_view(manager: RunManager, ids: dict) -> None:
    """Progress, curves and Stop buttons, redrawn about once a second."""
    records = unique(records_of(manager.store, ids))
    if not any(r.active for r in records):
        st.rerun(scope="app")
    st.subheader("Training")
    for record in records:
        ui_runs.render_progress(record, manager, "train")
    ui_runs.render_curves(records)


def render_comparison(candidate: RunRecord, baseline: RunRecord | None) -> None:
    """Test accuracy of each, the difference and what one seed can tell."""
    if baseline is None or baseline.id == candidate.id:
        accuracy = ui_runs.format_accuracy(candidate.test_accuracy)
        st.metric(ui_runs.run_name(candidate), accuracy)
        if baseline is not None:
            st.caption("This stack is the tutorial LeNet: it is the baseline.")
        return
    mine, theirs = candidate.test_accuracy, baseline.test_accuracy
    left, right = st.columns(2)
    delta = None
    if candidate.status == RunStatus.DONE and baseline.status == RunStatus.DONE:
        delta = f"{mine - theirs:+.2f} points vs the baseline"
    left.metric(ui_runs.run_name(candidate), ui_runs.format_accuracy(mine), delta)
    right.metric(ui_runs.run_name(baseline), ui_runs.format_accuracy(theirs))
    if delta is not None:
        render_noise_note(candidate, baseline)


def render_noise_note(candidate: RunRecord, baseline: RunRecord) -> None:
    difference = paired_difference(
        [candidate.test_accuracy], [baseline.test_accuracy], "your stack", "baseline"
    )
    sentence = difference.sentence[0].upper() + difference.sentence[1:]
    st.info(
        f"{sentence} Two runs that differ only in their seed often "
        "land a point or two apart, so a difference this size from one seed "
        "each is within the noise."
    )
    link_to(
        "pages/3_Experiments.py",
        "Compare over several seeds in Experiments",
        "Experiments",
    )
    changes = diff_specs(baseline.spec, candidate.spec)
    if changes:
        with st.expander("What your stack changes from the baseline"):
            st.code("\n".join(changes), language=None)


def render_results(candidate: RunRecord, baseline: RunRecord | None) -> None:
    """The finished runs: accuracies, per-class bars, curves and details."""
    records = unique([candidate, baseline])
    st.subheader("Result")
    st.caption(
        f"{ui_runs.run_name(candidate)}: {ui_runs.settings_line(candidate.config)}"
    )
    for record in records:
        ui_runs.render_status(record)
    render_comparison(candidate, baseline)
    ui_runs.render_per_class(records)
    ui_runs.render_curves(records)
    ui_runs.render_result_table(records)
    ui_runs.render_weights_download(candidate)
    if baseline is None:
        st.caption(
            "No baseline run for these settings; tick the baseline box to add one."
        )


def render_runs(manager: RunManager, ids: dict | None) -> None:
    if ids is None:
        st.caption("No run yet: press Train.")
        return
    candidate, baseline = records_of(manager.store, ids)
    if candidate is None:
        st.caption(f"Run #{ids['candidate']} is no longer in the store.")
        return
    if any(r.active for r in unique([candidate, baseline])):
        # The baseline found by settings is pinned, so each tick reads by id.
        found = {"candidate": candidate.id, "baseline": baseline and baseline.id}
        live_view(manager, found)
    else:
        render_results(candidate, baseline)


def restore_settings(store: RunStore) -> None:
    """A new session opened on a run's link starts from that run's settings."""
    ids = _ids_from_url()
    found = ui_runs.get_runs(store, [ids["candidate"]]) if ids else []
    if not found:
        return
    config = found[0].config
    values = {
        "train_optimizer": config.optimizer.value,
        "train_lr": config.lr,
        "train_momentum": config.momentum,
        "train_batch_size": config.batch_size,
        "train_epochs": config.epochs,
        "train_seed": config.seed,
    }
    if config.device in device_choices():
        values["train_device"] = config.device
    st.session_state.update(values)


def main() -> None:
    st.set_page_config(page_title="ConvNet surgery — Train", layout="wide")
    new_session = IDS_KEY not in st.session_state
    init_state()
    manager = ui_runs.page_manager()
    if new_session:
        restore_settings(manager.store)
    st.title("Train")
    st.caption(
        "Train the stack from the Builder on CIFAR-10 and compare it with the "
        "PyTorch tutorial's LeNet trained with the same settings."
    )

    spec = current_spec()
    report = trace(spec)
    render_stack(spec, report)
    render_settings()
    try:
        config = read_config()
    except ConfigError as error:
        config = None
        st.error(str(error))
    ready = report.ok and config is not None
    ids = recall(manager.store)
    if ready:
        render_estimate(spec, config, manager)
        offer_earlier_run(manager.store, spec, config, ids)
    st.button(
        "Train",
        type="primary",
        disabled=not ready,
        on_click=on_train,
        args=(manager, spec),
    )
    if st.session_state[ERROR_KEY]:
        st.error(st.session_state[ERROR_KEY])

    render_runs(manager, ids)


main()
