"""Experiments: sweeps over seeds, so a difference can be told from the noise."""

from __future__ import annotations

import math

import streamlit as st

from surgery.presets import PRESETS, TUTORIAL_LENET
from surgery.runs import RunManager, RunRecord, RunStatus, RunStore
from surgery.shapes import trace
from surgery.spec import SpecError
from surgery.stats import noise_band
from surgery.sweep import (
    EXPERIMENTS,
    PointSummary,
    SweepSpec,
    compare_points,
    estimate_sweep,
    submit_sweep,
    sweep_axis,
    sweep_summary,
)
from surgery.train import ConfigError, TrainConfig
from ui import charts
from ui import runs as ui_runs
from ui.sidebar import device_choices
from ui.state import current_spec

GROUP_KEY = "exp_group"
ERROR_KEY = "exp_error"
CURRENT = "current"
# A sweep larger than this is refused: it would hold the queue for days on a CPU.
MAX_RUNS = 300
LOG_AXES = {"batch_size", "lr"}
BUDGET_HELP = {
    "epochs": (
        "Equal epochs: every run sees each training image the same number of "
        "times, so a bigger batch takes fewer optimizer steps. It controls for "
        "the data seen, not for the number of updates."
    ),
    "steps": (
        "Equal optimizer steps: every run takes as many steps as `epochs` "
        "epochs at the reference batch_size, so a bigger batch trains more "
        "epochs. It controls for the number of updates, not for the data seen "
        "or the time spent."
    ),
}
SEEDS_HELP = (
    "Each point trains once per seed (seeds 0, 1, 2, …); the spread over seeds "
    "is the noise a difference must beat. 3 is the least that gives a spread."
)


DEFAULTS = {
    "exp_mode": "One-click experiment",
    "exp_name": next(iter(EXPERIMENTS)),
    "exp_seeds": 3,
    "exp_epochs": 2,
    "exp_device": "auto",
    "sweep_archs": ["tutorial-lenet"],
    "sweep_batch_sizes": "4",
    "sweep_lrs": "0.001",
    "sweep_optimizers": ["sgd"],
    "sweep_seeds": 3,
    "sweep_epochs": 2,
    "sweep_budget": "epochs",
    "sweep_scale_lr": False,
    "sweep_reference_batch": 4,
    "sweep_momentum": 0.9,
    "sweep_device": "auto",
    "sweep_title": "",
}


def init_state() -> None:
    ui_runs.keep_widget_state(DEFAULTS)
    st.session_state.setdefault(GROUP_KEY, st.query_params.get("sweep"))
    st.session_state.setdefault(ERROR_KEY, None)


# ---------------------------------------------------------------- starting a sweep


def one_click() -> tuple[SweepSpec, str]:
    """The chosen experiment's sweep with the page's seeds, epochs and device."""
    names = list(EXPERIMENTS)
    name = st.selectbox(
        "Experiment", names, format_func=lambda n: EXPERIMENTS[n].title, key="exp_name"
    )
    experiment = EXPERIMENTS[name]
    st.markdown(experiment.explanation)
    seeds, epochs, device = st.columns(3)
    seeds.number_input("seeds", 1, 20, step=1, key="exp_seeds", help=SEEDS_HELP)
    epochs.number_input("epochs", 1, 200, step=1, key="exp_epochs")
    device.selectbox("device", device_choices(), key="exp_device")
    state = st.session_state
    sweep = experiment.make(
        seeds=list(range(int(state["exp_seeds"]))),
        epochs=int(state["exp_epochs"]),
        device=state["exp_device"],
    )
    return sweep, experiment.title


def architecture_choices() -> dict[str, str]:
    """Preset name -> title, plus the Builder's stack when it can train."""
    choices = {name: preset.title for name, preset in PRESETS.items()}
    spec = current_spec()
    if trace(spec).ok and spec not in [p.spec for p in PRESETS.values()]:
        choices[CURRENT] = "your stack (from the Builder)"
    return choices


def custom_sweep() -> tuple[SweepSpec, str]:
    """The sweep builder's widgets as one SweepSpec; ConfigError names a bad value."""
    choices = architecture_choices()
    kept = [a for a in st.session_state["sweep_archs"] if a in choices]
    st.session_state["sweep_archs"] = kept
    st.multiselect(
        "architectures", list(choices), format_func=choices.get, key="sweep_archs"
    )
    left, middle, right = st.columns(3)
    left.text_input("batch_sizes", key="sweep_batch_sizes", help="e.g. 4, 16, 64")
    middle.text_input("lrs", key="sweep_lrs", help="e.g. 0.0003, 0.001, 0.003")
    right.multiselect("optimizers", ["sgd", "adam"], key="sweep_optimizers")
    left.number_input("seeds", 1, 20, step=1, key="sweep_seeds", help=SEEDS_HELP)
    middle.number_input("epochs", 1, 200, step=1, key="sweep_epochs")
    right.selectbox("device", device_choices(), key="sweep_device")
    render_budget_inputs()
    st.text_input("title", key="sweep_title", placeholder="what this sweep asks")
    return read_custom(choices), st.session_state["sweep_title"] or "Custom sweep"


def render_budget_inputs() -> None:
    left, middle, right = st.columns(3)
    left.radio("budget", ["epochs", "steps"], key="sweep_budget", horizontal=True)
    middle.number_input(
        "reference batch_size",
        1,
        4096,
        step=1,
        key="sweep_reference_batch",
        help="The batch size the lr and the epochs are meant for.",
    )
    right.number_input("momentum (sgd)", 0.0, 0.999, step=0.05, key="sweep_momentum")
    st.caption(BUDGET_HELP[st.session_state["sweep_budget"]])
    st.checkbox(
        "Scale lr with the batch size (lr × batch_size / reference batch_size)",
        key="sweep_scale_lr",
        help=(
            "Linear scaling keeps the size of each epoch's total update about "
            "the same, so a bigger batch is not also a smaller step."
        ),
    )


def read_custom(choices: dict[str, str]) -> SweepSpec:
    state = st.session_state
    if not state["sweep_archs"]:
        raise ConfigError("architectures is empty; pick at least one network")
    architectures = {
        choices[name]: current_spec() if name == CURRENT else PRESETS[name].spec
        for name in state["sweep_archs"]
    }
    return SweepSpec(
        architectures=architectures,
        batch_sizes=ui_runs.parse_numbers("batch_sizes", state["sweep_batch_sizes"]),
        lrs=ui_runs.parse_numbers("lrs", state["sweep_lrs"], float),
        optimizers=state["sweep_optimizers"],
        seeds=list(range(int(state["sweep_seeds"]))),
        epochs=int(state["sweep_epochs"]),
        budget=state["sweep_budget"],
        scale_lr=bool(state["sweep_scale_lr"]),
        reference_batch=int(state["sweep_reference_batch"]),
        momentum=float(state["sweep_momentum"]),
        device=state["sweep_device"],
    )


def render_estimate(sweep: SweepSpec, manager: RunManager) -> bool:
    """Runs, time and network sizes before starting; False when too large."""
    with st.spinner("Timing a few training steps of each network and batch_size…"):
        estimate = estimate_sweep(sweep, concurrent=manager.max_concurrent)
    st.info(
        f"{estimate.runs} runs ({sweep.points} points × {len(sweep.seeds)} seeds), "
        f"about {ui_runs.format_seconds(estimate.wall_seconds)} on 50,000 CIFAR-10 "
        f"images, {manager.max_concurrent} at a time."
    )
    st.dataframe(
        [
            {
                "network": name,
                "Param #": f"{estimate.params_per_arch[name]:,}",
                "Mult-Adds per image": f"{estimate.mult_adds_per_arch[name]:,}",
            }
            for name in estimate.params_per_arch
        ],
        hide_index=True,
    )
    if estimate.runs > MAX_RUNS:
        st.error(
            f"{estimate.runs} runs is more than {MAX_RUNS}; lower the number of "
            "seeds or of values per setting."
        )
        return False
    return True


def on_start(manager: RunManager, sweep: SweepSpec, title: str) -> None:
    st.session_state[ERROR_KEY] = None
    try:
        group_id = submit_sweep(manager, sweep, title)
    except (SpecError, ConfigError) as error:
        st.session_state[ERROR_KEY] = str(error)
        return
    st.session_state[GROUP_KEY] = group_id
    st.query_params["sweep"] = group_id


def render_start(manager: RunManager) -> None:
    """Pick a one-click experiment or build a sweep, see its cost, start it."""
    mode = st.radio(
        "Start",
        ["One-click experiment", "Custom sweep"],
        key="exp_mode",
        horizontal=True,
    )
    try:
        if mode == "Custom sweep":
            sweep, title = custom_sweep()
        else:
            sweep, title = one_click()
    except ConfigError as error:
        st.error(str(error))
        return
    try:
        ok = render_estimate(sweep, manager)
    except (SpecError, ConfigError) as error:
        st.error(str(error))
        return
    if st.button("Start", type="primary", disabled=not ok):
        on_start(manager, sweep, title)
    if st.session_state[ERROR_KEY]:
        st.error(st.session_state[ERROR_KEY])


# ---------------------------------------------------------------- results


def choose_group(store: RunStore) -> str | None:
    """The sweep to show: the one just started, else any the user picks."""
    groups = store.list_groups()
    if not groups:
        return None
    titles = {g["id"]: f"{g['title'] or 'sweep'} · {g['id']}" for g in groups}
    if st.session_state[GROUP_KEY] not in titles:
        st.session_state[GROUP_KEY] = groups[0]["id"]
    group_id = st.selectbox(
        "Sweep", list(titles), format_func=titles.get, key=GROUP_KEY
    )
    st.query_params["sweep"] = group_id
    return group_id


def render_results(manager: RunManager) -> None:
    st.header("Results")
    group_id = choose_group(manager.store)
    if group_id is None:
        st.caption("No sweep yet: start one above.")
        return
    active = any(r.active for r in manager.store.list_runs(group_id=group_id))
    if active:
        live_results(manager, group_id)
    else:
        draw_results(manager, group_id)


@st.fragment(run_every=2)
def live_results(manager: RunManager, group_id: str) -> None:
    """Results redrawn every 2 seconds while the sweep trains."""
    records = draw_results(manager, group_id)
    if not any(r.active for r in records):
        st.rerun(scope="app")


def draw_results(manager: RunManager, group_id: str) -> list[RunRecord]:
    """The sweep's progress, chart and differences; returns the runs it read."""
    store = manager.store
    records = store.list_runs(group_id=group_id)
    render_sweep_progress(manager, records)
    points = sweep_summary(store, group_id)
    finished = [p for p in points if p.n > 0]
    if not finished:
        st.caption("The chart appears when the first run of a point ends.")
        return records
    reference = pick_reference(records, group_id, points)
    st.altair_chart(sweep_chart(sweep_axis(store, group_id), points, reference))
    render_differences(points, reference)
    return records


def render_sweep_progress(manager: RunManager, records: list) -> None:
    """Runs done out of all, the run training now, and a Stop button."""
    done = sum(r.status == RunStatus.DONE for r in records)
    active = [r for r in records if r.active]
    ended = len(records) - done - len(active)
    text = f"{done} of {len(records)} runs done"
    if ended:
        text += f", {ended} stopped, diverged or failed"
    st.progress(done / max(len(records), 1), text=text)
    failed = [r for r in records if r.status in ui_runs.ENDED_BADLY]
    if failed:
        first = failed[-1]
        st.error(
            f"{len(failed)} run(s) ended without a result; "
            f"{ui_runs.run_name(first)} {first.status.value}: {first.message}"
        )
    for record in active:
        if record.status == RunStatus.RUNNING:
            ui_runs.render_progress(record, manager, "sweep")
    if active and st.button("Stop the sweep", key="sweep-stop"):
        ui_runs.stop_runs(manager, active)


def pick_reference(
    records: list[RunRecord], group_id: str, points: list[PointSummary]
) -> int:
    """The point to compare with: the tutorial's settings by default, or the user's."""
    labels = [p.label for p in points]
    default = tutorial_point(records, labels)
    index = st.selectbox(
        "Compare every point with",
        range(len(labels)),
        index=default,
        format_func=lambda i: labels[i],
        key=f"exp_reference_{group_id}",
    )
    return int(index)


def tutorial_point(records: list[RunRecord], labels: list[str]) -> int:
    """The point trained as in the PyTorch tutorial, else the first."""
    tutorial = TrainConfig()
    for record in records:
        config = record.config
        same = (
            record.spec == TUTORIAL_LENET
            and (config.optimizer, config.lr) == (tutorial.optimizer, tutorial.lr)
            and config.batch_size == tutorial.batch_size
        )
        if same and record.label in labels:
            return labels.index(record.label)
    return 0


def sweep_chart(axis: str, points: list[PointSummary], reference: int):
    """Lines on a log x for batch_size and lr, bars otherwise; the noise band under."""
    finished = [p for p in points if p.n > 0]
    if axis in LOG_AXES:
        chart = charts.sweep_line_chart(finished, axis, log_x=True)
    else:
        chart = charts.sweep_bar_chart(finished, axis)
    base = points[reference]
    if base.n >= 2:
        low, high = noise_band(base.values)
        band = charts.noise_band(low, high, base.mean, f"noise band of {base.label}")
        chart = (band + chart).properties(title=chart.title)
    return chart


def render_differences(points: list[PointSummary], reference: int) -> None:
    """Each point minus the reference, seed by seed, in one plain sentence each."""
    base = points[reference]
    if base.n >= 2:
        st.caption(
            f"Grey band: {base.label} mean ± 2 standard deviations over "
            f"{base.n} seeds: where one more seed of it would land. Error bars: "
            "± one standard deviation over seeds; dots: single seeds."
        )
    else:
        st.caption("The noise band appears once the reference point has 2 seeds.")
    for point, difference in zip(points, compare_points(points, reference)):
        if difference is not None:
            st.markdown(f"- {difference.sentence}")
        elif point is not base:
            st.markdown(
                f"- {point.label}: no finished seed in common with {base.label} yet."
            )
    st.dataframe(
        [summary_row(p) for p in points],
        hide_index=True,
        column_config={
            name: st.column_config.NumberColumn(format="%.2f")
            for name in ("mean test accuracy (%)", "std")
        },
    )


def summary_row(point: PointSummary) -> dict:
    mean = None if math.isnan(point.mean) else point.mean
    std = None if math.isnan(point.std) or point.n < 2 else point.std
    return {
        "point": point.label,
        "mean test accuracy (%)": mean,
        "std": std,
        "seeds done": point.n,
        "waiting or training": point.pending,
        "stopped or failed": point.failed,
    }


# ---------------------------------------------------------------- the page


def main() -> None:
    st.set_page_config(page_title="ConvNet surgery — Experiments", layout="wide")
    init_state()
    manager = ui_runs.page_manager()
    st.title("Experiments")
    st.caption(
        "One run says little: two runs that differ only in their seed land a "
        "point or two apart. A sweep trains every setting over several seeds and "
        "compares them seed by seed."
    )
    render_start(manager)
    render_results(manager)


main()
