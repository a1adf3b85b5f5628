"""The builder page's widgets: toolbar, stack editor, block cards and status.

Every widget writes through a callback in ui.builder_edit, so each change is one
undoable step; this module only draws.
"""

from __future__ import annotations

from functools import lru_cache

import streamlit as st

from surgery.explain import (
    BlockExplanation,
    explain_block,
    explain_failure,
    flatten_derivation,
)
from surgery.fixes import Fix, suggest_fixes
from surgery.presets import PRESETS
from surgery.shapes import ShapeReport, ShapeRow, format_shape, trace
from surgery.spec import (
    FC,
    INPUT_RANGES,
    INT_RANGES,
    Activation,
    Block,
    Dropout,
    Pool,
    PoolKind,
    Spec,
    SpecError,
)
from surgery.train import MAX_PARAMS
from ui import builder_edit as edit
from ui import state
from ui.builder_edit import field_key
from ui.builder_table import QuizView

BLOCK_TYPES = list(edit.NEW_BLOCKS)
INT_FIELDS = {
    "pad": ("padding",),
    "conv": ("out_channels", "kernel_size", "stride", "padding", "dilation"),
    "fc": ("out_features",),
}
FIELD_WIDTH = 100
FIELD_HELP = {
    "out_channels": "How many filters, so how many channels come out.",
    "kernel_size": "Side of the square window each output looks at.",
    "stride": "How far the window moves between outputs.",
    "padding": "Zeros added on each of the four sides first.",
    "dilation": "Spacing between kernel taps; the span is d*(k-1)+1.",
    "out_features": "How many features this fc gives.",
}


@lru_cache(maxsize=512)
def traced(spec: Spec) -> ShapeReport:
    """trace(spec), remembered: every rerun and every undo step asks again."""
    return trace(spec)


@lru_cache(maxsize=64)
def fixes_for(report: ShapeReport) -> tuple[Fix, ...]:
    """suggest_fixes, remembered: each rerun of a broken stack would search again."""
    return tuple(suggest_fixes(report.spec, report))


# ---------------------------------------------------------------- toolbar


def render_toolbar() -> None:
    """Preset picker, input shape and num_classes, undo/redo."""
    presets, shape, history = st.columns([4, 6, 3], vertical_alignment="top")
    with presets:
        _preset_picker()
    with shape:
        _input_fields()
    with history:
        _history_buttons()


def _preset_picker() -> None:
    name = st.selectbox(
        "Preset",
        list(PRESETS),
        format_func=lambda n: PRESETS[n].title,
        key="preset_choice",
    )
    st.caption(PRESETS[name].lesson)
    st.button(
        "Load preset",
        key="load_preset",
        on_click=edit.load_preset_from_widget,
        args=("preset_choice",),
        help="Replace the stack with this preset (undo brings yours back).",
    )


def _input_fields() -> None:
    c_low, c_high = INPUT_RANGES["channels"]
    s_low, s_high = INPUT_RANGES["size"]
    ranges = ((c_low, c_high), (s_low, s_high), (s_low, s_high))
    labels = ("Input C", "Input H", "Input W")
    # num_classes gets the widest column, so its label stays on one line.
    columns = st.columns([1, 1, 1, 1.4])
    for column, key, label, (low, high) in zip(
        columns, edit.INPUT_KEYS, labels, ranges
    ):
        column.number_input(
            label, low, high, step=1, key=key, on_change=edit.edit_input
        )
    low, high = INPUT_RANGES["num_classes"]
    columns[3].number_input(
        "num_classes",
        low,
        high,
        step=1,
        key=edit.NUM_CLASSES_KEY,
        on_change=edit.edit_num_classes,
        help="The last fc follows it when it matched the old count.",
    )


def _history_buttons() -> None:
    undo_steps = state.undo_steps()
    left, right = st.columns(2)
    left.button(
        "Undo",
        key="undo",
        on_click=edit.undo,
        disabled=not undo_steps,
        width="stretch",
        help=f"{len(undo_steps)} earlier step(s)",
    )
    right.button(
        "Redo",
        key="redo",
        on_click=edit.redo,
        disabled=not state.redo_count(),
        width="stretch",
    )
    st.toggle("Quiz mode", key="quiz_on", help="Hide an Output Shape and guess it.")


# ---------------------------------------------------------------- status


def render_notice() -> None:
    """The message about the last upload or share link, if any."""
    notice = st.session_state.get(edit.NOTICE_KEY)
    if notice:
        kind, text = notice
        getattr(st, kind)(text)


def render_status(report: ShapeReport, quiz: bool) -> None:
    """One line on the whole stack: valid with totals, or where it breaks."""
    if report.ok:
        out = format_shape(report.rows[-1].output_shape)
        text = f"Valid stack: {len(report.rows)} blocks, {report.total_params:,} params"
        if not quiz:
            text += f", logits {out}"
            if report.flatten is not None:
                text += f", the first fc takes {report.flatten:,} features"
        st.success(text + ".")
        _size_warning(report)
        return
    message = report.error.message
    st.error(
        f"The stack does not run. {message[:1].upper()}{message[1:]}",
        icon=":material/error:",
    )
    _recovery_buttons()


def _size_warning(report: ShapeReport) -> None:
    """A valid stack can still be too large for the Train page to accept."""
    if report.total_params <= MAX_PARAMS:
        return
    st.warning(
        f"{report.total_params:,} params is more than the {MAX_PARAMS:,} that "
        "Train accepts; lower out_channels or out_features (the first fc takes "
        f"{report.flatten or 0:,} features) to train it.",
        icon=":material/warning:",
    )


def _recovery_buttons() -> None:
    steps = state.undo_steps()
    last_valid = _last_valid(steps)
    with st.container(horizontal=True):
        st.button(
            "Undo last edit",
            key="undo_banner",
            on_click=edit.undo,
            disabled=not steps,
            type="primary",
        )
        if last_valid is not None and last_valid != len(steps) - 1:
            st.button(
                "Back to the last valid stack",
                key="back_to_valid",
                on_click=edit.replace_spec,
                args=(steps[last_valid].spec,),
            )


def _last_valid(steps: list[state.Snapshot]) -> int | None:
    for position in range(len(steps) - 1, -1, -1):
        if traced(steps[position].spec).ok:
            return position
    return None


# ---------------------------------------------------------------- editor


def render_editor(report: ShapeReport, quiz: QuizView | None) -> None:
    """Every block as a card with its fields, buttons and Output Shape."""
    spec = report.spec
    ids = state.block_ids()
    st.markdown(f"**Input** · {format_shape(spec.input)} (C x H x W)")
    derivation = flatten_derivation(report) if report.flatten else None
    first_fc = _first_fc(spec.blocks)
    for position, (block, block_id) in enumerate(zip(spec.blocks, ids), start=1):
        row = report.rows[position - 1] if position <= len(report.rows) else None
        if derivation and position == first_fc:
            _flatten_note(derivation, quiz, position)
        _block_card(report, position, block, block_id, row, quiz)
    _append_row()


def _first_fc(blocks: tuple[Block, ...]) -> int | None:
    """The 1-based position of the first fc, where the automatic flatten goes."""
    return next((i for i, b in enumerate(blocks, start=1) if isinstance(b, FC)), None)


def _flatten_note(derivation: str, quiz: QuizView | None, fc_position: int) -> None:
    if quiz is not None and not quiz.shows(fc_position - 1):
        st.info("Flatten: hidden while the quiz asks about an earlier block.")
        return
    st.info(f"**Flatten** before this fc: {derivation}", icon=":material/calculate:")


def _append_row() -> None:
    with st.container(horizontal=True, vertical_alignment="bottom"):
        st.selectbox(
            "Add a block at the end", BLOCK_TYPES, key="append_type", width=200
        )
        st.button(
            "Add block",
            key="append_block",
            on_click=edit.insert_from_widget,
            args=(None, 0, "append_type"),
        )


def _block_card(
    report: ShapeReport,
    position: int,
    block: Block,
    block_id: int,
    row: ShapeRow | None,
    quiz: QuizView | None,
) -> None:
    shown = quiz is None or quiz.shows(position)
    with st.container(border=True, key=f"block_{block_id}"):
        _block_header(report, position, block, row, quiz)
        _block_fields(block, block_id)
        with st.container(horizontal=True, gap="small", vertical_alignment="center"):
            _block_actions(block_id, position, len(report.spec.blocks))
            if row is not None and shown:
                _explanation(report, position, block_id, row)
        if report.error is not None and position == report.error.index:
            _failure(report)


def _block_header(
    report: ShapeReport,
    position: int,
    block: Block,
    row: ShapeRow | None,
    quiz: QuizView | None,
) -> None:
    title, shape = st.columns([2, 3], vertical_alignment="center")
    name = f" · `{row.name}`" if row else ""
    title.markdown(f"**{position} · {block.type}**{name}")
    shape.markdown(_shape_text(report, position, row, quiz), text_alignment="right")


def _shape_text(
    report: ShapeReport, position: int, row: ShapeRow | None, quiz: QuizView | None
) -> str:
    """'6x14x14 → Output Shape 16x10x10'; a '?' for what the quiz hides."""
    if row is not None:
        shows = quiz.shows if quiz is not None else lambda index: True
        in_shape = format_shape(row.input_shape) if shows(position - 1) else "?"
        out = format_shape(row.output_shape) if shows(position) else "?"
        return f"{in_shape} → **Output Shape {out}**"
    if report.error is not None and position == report.error.index:
        before = report.rows[-1].output_shape if report.rows else report.spec.input
        return f"{format_shape(before)} → :red[**✗ does not run**]"
    return ":gray[not reached]"


def _block_fields(block: Block, block_id: int) -> None:
    if isinstance(block, Pool):
        _pool_fields(block_id)
    elif block.type in INT_FIELDS:
        _int_fields(block_id, INT_FIELDS[block.type])
    elif isinstance(block, Dropout):
        st.number_input(
            "p",
            0.0,
            0.95,
            step=0.05,
            format="%.2f",
            width=FIELD_WIDTH,
            **_widget(block_id, "p"),
        )
    elif block.type == "act":
        st.selectbox(
            "fn",
            [a.value for a in Activation],
            width=FIELD_WIDTH + 60,
            **_widget(block_id, "fn"),
        )
    else:
        st.caption("BatchNorm2d on CxHxW maps, BatchNorm1d on features; no fields.")


def _widget(block_id: int, name: str) -> dict:
    """Key and callback shared by every field widget."""
    return {
        "key": field_key(block_id, name),
        "on_change": edit.edit_field,
        "args": (block_id, name),
    }


def _int_fields(block_id: int, names: tuple[str, ...]) -> None:
    with st.container(horizontal=True, wrap=True, gap="xsmall"):
        for name in names:
            _int_field(block_id, name)


def _int_field(block_id: int, name: str) -> None:
    low, high = INT_RANGES[name]
    st.number_input(
        name,
        low,
        high,
        step=1,
        help=FIELD_HELP[name],
        width=FIELD_WIDTH,
        **_widget(block_id, name),
    )


def _pool_fields(block_id: int) -> None:
    with st.container(horizontal=True, wrap=True, gap="xsmall"):
        st.selectbox(
            "kind",
            [k.value for k in PoolKind],
            width=FIELD_WIDTH,
            **_widget(block_id, "kind"),
        )
        _int_field(block_id, "kernel_size")
        _pool_stride_field(block_id)
        _int_field(block_id, "padding")
    with st.container(horizontal=True, wrap=True, gap="medium"):
        st.checkbox(
            "stride same as kernel_size",
            key=field_key(block_id, "stride_same"),
            on_change=edit.edit_pool_stride,
            args=(block_id,),
        )
        st.checkbox("ceil_mode", **_widget(block_id, "ceil_mode"))


def _pool_stride_field(block_id: int) -> None:
    """Disabled while the box says stride follows kernel_size (PyTorch's None)."""
    low, high = INT_RANGES["stride"]
    st.number_input(
        "stride",
        low,
        high,
        step=1,
        disabled=st.session_state.get(field_key(block_id, "stride_same"), True),
        help=FIELD_HELP["stride"],
        width=FIELD_WIDTH,
        key=field_key(block_id, "stride"),
        on_change=edit.edit_pool_stride,
        args=(block_id,),
    )


def _block_actions(block_id: int, position: int, count: int) -> None:
    up, down = (block_id, -1), (block_id, 1)
    _action("↑ Up", f"up_{block_id}", edit.move_block, up, position == 1)
    _action("↓ Down", f"down_{block_id}", edit.move_block, down, position == count)
    _action("Duplicate", f"dup_{block_id}", edit.duplicate_block, (block_id,))
    _action("Delete", f"del_{block_id}", edit.delete_block, (block_id,))
    _insert_popover(block_id)


def _action(label: str, key: str, callback, args: tuple, disabled=False) -> None:
    st.button(
        label, key=key, on_click=callback, args=args, disabled=disabled, type="tertiary"
    )


def _insert_popover(block_id: int) -> None:
    # Tracked ("rerun") so that an insert can close it: left open, it would
    # cover the shape table and follow the block through later edits.
    with st.popover(
        "Insert…", type="tertiary", key=edit.insert_key(block_id), on_change="rerun"
    ):
        type_key = field_key(block_id, "new_type")
        st.selectbox("Block type", BLOCK_TYPES, key=type_key)
        for offset, label in ((0, "Insert above"), (1, "Insert below")):
            st.button(
                label,
                key=f"ins{offset}_{block_id}",
                on_click=edit.insert_from_widget,
                args=(block_id, offset, type_key),
            )


# ---------------------------------------------------------------- explain and fix


def _explanation(
    report: ShapeReport, position: int, block_id: int, row: ShapeRow
) -> None:
    """The worked numbers behind a valid block, folded away until asked for."""
    label = f"Why {format_shape(row.output_shape)}?"
    with st.popover(label, type="tertiary", key=f"why_{block_id}"):
        try:
            explanation = explain_block(report, position)
        except (SpecError, ValueError) as exc:
            st.warning(str(exc))
            return
        render_explanation(explanation)


def render_explanation(explanation: BlockExplanation) -> None:
    """Formula, Param # working, receptive field, spatial budget, border note."""
    st.markdown(f"**{explanation.title}**")
    st.code("\n".join(explanation.formula_lines), language=None, wrap_lines=True)
    st.markdown(
        f"**Param #:** {explanation.params_line}  \n"
        f"**Receptive field:** {receptive_field_text(explanation)}  \n"
        f"**Spatial budget:** {explanation.budget}"
    )
    if explanation.border_note:
        st.caption(f"Border: {explanation.border_note}")


def _failure(report: ShapeReport) -> None:
    """At the failing block: the message, the rule with the numbers, and fixes."""
    st.error(report.error.message)
    failure = explain_failure(report)
    if failure is not None:
        st.markdown(f"**Rule:** {failure.rule}")
        st.code("\n".join(failure.formula_lines), language=None, wrap_lines=True)
    _fix_buttons(report)


def _fix_buttons(report: ShapeReport) -> None:
    try:
        fixes = fixes_for(report)
    except SpecError as exc:
        st.caption(f"No fix to offer: {exc}")
        return
    if not fixes:
        st.caption("No one-click fix here; undo or change the fields above.")
        return
    st.markdown("**One-click fixes** (each checked on the whole stack):")
    with st.container(horizontal=True):
        for number, fix in enumerate(fixes):
            st.button(
                fix.label,
                key=f"fix_{number}",
                on_click=edit.replace_spec,
                args=(fix.spec,),
            )


def receptive_field_text(explanation: BlockExplanation) -> str:
    """The field in input pixels; after the flatten every feature sees it all."""
    if len(explanation.output_shape) == 1:
        return "the whole input: every feature depends on every input pixel"
    side = explanation.receptive_field
    return (
        f"{side}x{side} input pixels, padding included "
        f"(jump {explanation.jump} between neighbouring outputs)"
    )
