"""Runs: every training run in the store; filter, stop, delete and compare them."""

from __future__ import annotations

import streamlit as st

from surgery.diff import diff_specs
from surgery.runs import RunKind, RunManager, RunRecord, RunStatus, UnknownRunError
from ui import charts
from ui import runs as ui_runs

SELECTED_KEY = "runs_selected"
TABLE_KEY = "runs_table"
TABLE_IDS_KEY = "runs_table_ids"
COMPARE_PARAM = "compare"
CONFIRM_KEY = "runs_confirm_delete"
DEFAULTS = {
    "runs_status": [],
    "runs_kind": [],
    "runs_text": "",
    SELECTED_KEY: [],
}


def init_state() -> None:
    if SELECTED_KEY not in st.session_state:
        st.session_state[SELECTED_KEY] = ids_from_url()
    ui_runs.keep_widget_state(DEFAULTS)
    st.session_state.setdefault(CONFIRM_KEY, None)


def ids_from_url() -> list[int]:
    """The runs named in the link, '?compare=3,7', so a comparison can be shared."""
    text = st.query_params.get(COMPARE_PARAM, "")
    return [int(part) for part in text.split(",") if part.strip().isdigit()]


def ids_to_url(ids: list[int]) -> None:
    if ids:
        st.query_params[COMPARE_PARAM] = ",".join(str(i) for i in ids)
    else:
        st.query_params.pop(COMPARE_PARAM, None)


# ---------------------------------------------------------------- the table


def render_filters() -> None:
    status, kind, text = st.columns([2, 2, 3])
    status.multiselect("status", [s.value for s in RunStatus], key="runs_status")
    kind.multiselect("kind", [k.value for k in RunKind], key="runs_kind")
    text.text_input(
        "search", key="runs_text", placeholder="label, id, optimizer, device…"
    )


def matches(record: RunRecord) -> bool:
    """Whether the run passes the status, kind and text filters."""
    state = st.session_state
    if state["runs_status"] and record.status.value not in state["runs_status"]:
        return False
    if state["runs_kind"] and record.kind not in state["runs_kind"]:
        return False
    text = state["runs_text"].strip().lower()
    haystack = " ".join(
        [f"#{record.id}", record.label, record.kind, record.status.value]
        + [ui_runs.settings_line(record.config), record.group_id or ""]
    ).lower()
    return not text or text in haystack


def table_row(record: RunRecord) -> dict:
    config, result = record.config, record.result or {}
    return {
        "id": record.id,
        "label": record.label,
        "kind": record.kind,
        "status": record.status.value,
        "optimizer": config.optimizer.value,
        "lr": config.lr,
        "batch": config.batch_size,
        "epochs": config.epochs,
        "seed": config.seed,
        "test accuracy (%)": record.test_accuracy,
        "seconds": result.get("seconds", record.elapsed_seconds),
        "progress": record.fraction,
        "created": ui_runs.created_text(record),
    }


COLUMNS = {
    "lr": st.column_config.NumberColumn(format="%g"),
    "test accuracy (%)": st.column_config.NumberColumn(format="%.2f"),
    "seconds": st.column_config.NumberColumn(format="%.1f"),
    "progress": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0),
}


def render_table(records: list[RunRecord]) -> None:
    """The runs; ticking rows selects them below (ids kept for the callback)."""
    st.session_state[TABLE_IDS_KEY] = [r.id for r in records]
    st.dataframe(
        [table_row(r) for r in records],
        hide_index=True,
        column_config=COLUMNS,
        width="stretch",
        key=TABLE_KEY,
        on_select=select_rows,
        selection_mode="multi-row",
    )


def select_rows() -> None:
    """Rows ticked in the table become the selection of the multiselect."""
    rows = st.session_state[TABLE_KEY].selection.rows
    ids = st.session_state[TABLE_IDS_KEY]
    st.session_state[SELECTED_KEY] = [ids[i] for i in rows if i < len(ids)]


@st.fragment(run_every=1)
def live_progress(manager: RunManager, ids: list[int]) -> None:
    """Progress of the runs still training, redrawn about once a second."""
    records = [r for r in ui_runs.get_runs(manager.store, ids) if r.active]
    if not records:
        st.rerun(scope="app")
    st.subheader("Training now")
    for record in records:
        if record.status == RunStatus.RUNNING:
            ui_runs.render_progress(record, manager, "runs")
    queued = sum(r.status == RunStatus.QUEUED for r in records)
    if queued:
        st.caption(f"{queued} more run(s) waiting in the queue.")


# ---------------------------------------------------------------- actions


def render_selection(
    shown: list[RunRecord], everything: list[RunRecord]
) -> list[RunRecord]:
    """The multiselect of runs to act on or compare; returns the chosen records.

    The options are the runs the filters show plus those already chosen, so a
    new filter does not drop a choice; deleted runs leave the selection.
    """
    exists = {r.id: r for r in everything}
    kept = [i for i in st.session_state[SELECTED_KEY] if i in exists]
    by_id = {i: exists[i] for i in kept} | {r.id: r for r in shown}
    if kept != st.session_state[SELECTED_KEY]:
        st.session_state[SELECTED_KEY] = kept
    st.multiselect(
        "Select runs to compare, stop or delete",
        list(by_id),
        format_func=lambda i: _option(by_id[i]),
        key=SELECTED_KEY,
    )
    ids_to_url(st.session_state[SELECTED_KEY])
    return [by_id[i] for i in st.session_state[SELECTED_KEY]]


def _option(record: RunRecord) -> str:
    accuracy = ui_runs.format_accuracy(record.test_accuracy)
    return f"{ui_runs.run_name(record)} · {record.status.value} · {accuracy}"


def render_actions(manager: RunManager, selected: list[RunRecord]) -> None:
    stop, delete, _ = st.columns([1, 1, 4])
    active = [r for r in selected if r.active]
    stop.button(
        "Stop selected",
        disabled=not active,
        on_click=ui_runs.stop_runs,
        args=(manager, active),
    )
    delete.button(
        "Delete selected…",
        disabled=not selected,
        on_click=ask_delete,
        args=([r.id for r in selected],),
    )
    pending = st.session_state[CONFIRM_KEY]
    if pending:
        confirm_delete(manager, pending)


def ask_delete(ids: list[int]) -> None:
    st.session_state[CONFIRM_KEY] = ids


def delete_runs(manager: RunManager, ids: list[int]) -> None:
    """Stop any that still train, then remove the records and weights."""
    for run_id in ids:
        try:
            manager.delete(run_id)
        except UnknownRunError:
            # Another tab deleted it first.
            continue
    st.session_state[CONFIRM_KEY] = None
    st.session_state[SELECTED_KEY] = [
        i for i in st.session_state[SELECTED_KEY] if i not in ids
    ]
    st.toast(f"Deleted {len(ids)} run(s).")


def cancel_delete() -> None:
    st.session_state[CONFIRM_KEY] = None


def confirm_delete(manager: RunManager, ids: list[int]) -> None:
    """Ask once more before anything is removed."""
    names = ", ".join(f"#{i}" for i in ids)
    st.warning(
        f"Delete run(s) {names}? Their records, curves and weights are removed "
        "for good; running ones are stopped first."
    )
    yes, no, _ = st.columns([1, 1, 4])
    yes.button("Yes, delete", type="primary", on_click=delete_runs, args=(manager, ids))
    no.button("Cancel", on_click=cancel_delete)


# ---------------------------------------------------------------- comparing


def render_comparison(manager: RunManager, selected: list[RunRecord]) -> None:
    """Curves, per-class accuracy, confusion matrices, stack diffs, seed spread."""
    st.header("Comparison")
    ui_runs.render_curves(selected)
    finished = [r for r in selected if r.scored]
    if finished:
        ui_runs.render_per_class(finished)
        render_confusions(finished)
    else:
        st.caption("Per-class accuracy and confusion matrices appear when a run ends.")
    render_differences(selected)
    render_seed_spread(manager, selected)


def render_confusions(finished: list[RunRecord]) -> None:
    st.subheader("Confusion matrices")
    classes = _classes(finished[0])
    for start in range(0, len(finished), 2):
        columns = st.columns(2)
        for column, record in zip(columns, finished[start : start + 2]):
            chart = charts.confusion_chart(
                record.result["confusion"], classes, ui_runs.run_name(record)
            )
            column.altair_chart(chart)
    if len(finished) >= 2:
        render_difference_matrix(finished)


def _classes(record: RunRecord) -> list[str]:
    return list(record.result["per_class"])


def render_difference_matrix(finished: list[RunRecord]) -> None:
    """Run b's confusion minus run a's, for any two of the finished runs."""
    names = {r.id: ui_runs.run_name(r) for r in finished}
    left, right = st.columns(2)
    a = left.selectbox("run a", list(names), format_func=names.get, key="runs_diff_a")
    others = [i for i in names if i != a]
    b = right.selectbox("run b", others, format_func=names.get, key="runs_diff_b")
    ra = next(r for r in finished if r.id == a)
    rb = next(r for r in finished if r.id == b)
    title = f"{names[b]} minus {names[a]}"
    chart = charts.difference_chart(
        ra.result["confusion"], rb.result["confusion"], _classes(ra), title
    )
    st.altair_chart(chart)
    st.caption(
        "Blue cells: b puts more test images there than a. On the diagonal "
        "(correct predictions) blue is better for b; off it, red is better for b."
    )


def render_differences(selected: list[RunRecord]) -> None:
    """What changed from the first selected run to each other: stack and settings."""
    st.subheader("What differs")
    reference = selected[0]
    for record in selected[1:]:
        lines = diff_specs(reference.spec, record.spec)
        lines += ui_runs.config_changes(reference.config, record.config)
        title = f"{ui_runs.run_name(reference)} → {ui_runs.run_name(record)}"
        st.markdown(f"**{title}**")
        if lines:
            st.code("\n".join(lines), language=None)
        else:
            st.caption("Same stack and same settings.")


def render_seed_spread(manager: RunManager, selected: list[RunRecord]) -> None:
    st.subheader("Test accuracy over seeds")
    st.caption(
        "Every finished run in the store with the same stack and the same "
        "settings except the seed counts. With one seed there is no spread: "
        "run more seeds in Experiments."
    )
    st.dataframe(
        ui_runs.seed_groups(manager.store, selected),
        hide_index=True,
        column_config={
            name: st.column_config.NumberColumn(format="%.2f")
            for name in ("mean", "std", "low", "high")
        },
    )


# ---------------------------------------------------------------- the page


def main() -> None:
    st.set_page_config(page_title="ConvNet surgery — Runs", layout="wide")
    init_state()
    manager = ui_runs.page_manager()
    st.title("Runs")
    st.caption("Every run of the Train and Experiments pages, newest first.")

    everything = manager.store.list_runs()
    if not everything:
        st.info("No runs yet. Train a stack on the Train page to see it here.")
        st.stop()
    render_filters()
    records = [r for r in everything if matches(r)]
    st.caption(f"{len(records)} of {len(everything)} runs shown.")
    active = [r.id for r in everything if r.active]
    if active:
        live_progress(manager, active)
    render_table(records)

    selected = render_selection(records, everything)
    render_actions(manager, selected)
    if len(selected) >= 2:
        render_comparison(manager, selected)
    elif selected:
        st.caption("Select a second run to compare them.")


main()
