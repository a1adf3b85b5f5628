"""The live shape table: one row per block, torchinfo's columns, the failing block
flagged and the automatic flatten shown where it happens."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from surgery.shapes import ShapeReport, ShapeRow, format_shape
from surgery.spec import describe

# st.table reads headers as Markdown, where a lone "#" would be an empty heading.
NUMBER_HEADER = "\\#"
COLUMNS = ["#", "Block", "Layer", "Input Shape", "Output Shape", "Param #", "Mult-Adds"]
FAILED = "✗ does not run"
NOT_REACHED = "not reached"
HIDDEN = "?"
ERROR_STYLE = "background-color: #fde2e2; color: #8a1010; font-weight: 600"
MUTED_STYLE = "color: #9a9a9a"
EXTRA_STYLE = "background-color: #f0f2f6; font-style: italic"
TOTAL_STYLE = "font-weight: 700; border-top: 2px solid #555"
QUIZ_STYLE = "background-color: #fff4cc; font-weight: 600"


@dataclass(frozen=True)
class QuizView:
    """The quiz asks for `block`'s Output Shape; later blocks stay hidden."""

    block: int
    revealed: bool = False

    def shows(self, index: int) -> bool:
        """Whether block `index`'s Output Shape may be shown."""
        return index < self.block or (index == self.block and self.revealed)


def _count(n: int) -> str:
    return f"{n:,}"


def shape_rows(report: ShapeReport, quiz: QuizView | None = None) -> list[dict]:
    """The table as dicts, with a `kind` per row: input, block, flatten, error,
    unreached, hidden or total. In quiz mode the rows after the quizzed block are
    left out and its Output Shape is hidden until answered."""
    spec = report.spec
    rows = [_row("", "input", "", "", format_shape(spec.input), "", "", "input")]
    flatten_at = _flatten_position(report)
    for row in report.rows:
        if quiz is not None and row.index > quiz.block:
            return rows
        if row.index == flatten_at:
            rows.append(_flatten_row(report, row.index))
        rows.append(_block_row(row, quiz is None or quiz.shows(row.index)))
    if quiz is not None and not (quiz.revealed and quiz.block == len(spec.blocks)):
        return rows
    rows += _failed_rows(report)
    rows.append(_total_row(report))
    return rows


def _block_row(row: ShapeRow, shown: bool) -> dict:
    return _row(
        row.index,
        row.label,
        row.name,
        format_shape(row.input_shape),
        format_shape(row.output_shape) if shown else HIDDEN,
        _count(row.params),
        _count(row.mult_adds) if shown else HIDDEN,
        "block" if shown else "hidden",
    )


def _row(index, block, layer, in_shape, out_shape, params, mult_adds, kind) -> dict:
    values = (index, block, layer, in_shape, out_shape, params, mult_adds)
    return {**dict(zip(COLUMNS, values)), "kind": kind}


def _flatten_position(report: ShapeReport) -> int | None:
    """The block the automatic flatten goes before: the first fc, if it flattens."""
    if report.flatten is None:
        return None
    # The flatten is known even when that fc itself fails, so it may have no row.
    return next((row.index for row in report.rows if row.type == "fc"), None)


def _flatten_row(report: ShapeReport, fc_index: int) -> dict:
    before = (
        report.rows[fc_index - 2].output_shape if fc_index > 1 else report.spec.input
    )
    return _row(
        "",
        "flatten (automatic)",
        "flatten",
        format_shape(before),
        str(report.flatten),
        "0",
        "0",
        "flatten",
    )


def _failed_rows(report: ShapeReport) -> list[dict]:
    """The failing block, then the blocks the forward pass never reached."""
    if report.error is None:
        return []
    blocks = report.spec.blocks
    start = len(report.rows) + 1
    last_shape = report.rows[-1].output_shape if report.rows else report.spec.input
    rows = []
    for index in range(start, len(blocks) + 1):
        failed = index == report.error.index
        rows.append(
            _row(
                index,
                describe(blocks[index - 1]),
                "",
                format_shape(last_shape) if failed else "",
                FAILED if failed else NOT_REACHED,
                "",
                "",
                "error" if failed else "unreached",
            )
        )
    return rows


def _total_row(report: ShapeReport) -> dict:
    out = (
        format_shape(report.rows[-1].output_shape) if report.ok and report.rows else ""
    )
    return _row(
        "",
        "Total" if report.ok else "Total (blocks that run)",
        "",
        "",
        out,
        _count(report.total_params),
        _count(report.total_mult_adds),
        "total",
    )


STYLES = {
    "error": ERROR_STYLE,
    "unreached": MUTED_STYLE,
    "flatten": EXTRA_STYLE,
    "input": EXTRA_STYLE,
    "total": TOTAL_STYLE,
    "hidden": QUIZ_STYLE,
}


def shape_frame(rows: list[dict]):
    """The rows as a styled DataFrame (a Styler), kind column dropped."""
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "kind"]).astype({"#": str})
    kinds = frame.pop("kind")
    frame = frame.rename(columns={"#": NUMBER_HEADER})

    def style(row: pd.Series) -> list[str]:
        return [STYLES.get(kinds[row.name], "")] * len(row)

    return frame.style.apply(style, axis=1).hide(axis="index")


def render_shape_table(report: ShapeReport, quiz: QuizView | None = None) -> None:
    """Draw the table; in quiz mode rows after the quizzed block stay hidden."""
    st.table(shape_frame(shape_rows(report, quiz)), hide_index=True)
    if quiz is not None and quiz.block < len(report.spec.blocks):
        st.caption(
            f"Rows after block {quiz.block} stay hidden: they would give the "
            "answer away."
        )
