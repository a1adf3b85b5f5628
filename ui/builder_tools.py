"""The builder's side tools: quiz, share link, JSON files, PyTorch code, compare.

Each draws from the current stack and reports surgery's errors as messages.
"""

from __future__ import annotations

import streamlit as st

from surgery.diff import diff_specs
from surgery.explain import check_answer
from surgery.export import export_code
from surgery.presets import PRESETS, get_preset
from surgery.shapes import ShapeReport, format_shape
from surgery.share import (
    MAX_SHARE_CHARS,
    MAX_UPLOAD_BYTES,
    decode_spec,
    encode_spec,
    spec_from_upload,
)
from surgery.spec import SpecError
from ui import builder_edit as edit
from ui import state
from ui.builder import render_explanation, traced
from ui.builder_table import QuizView

LINK_PARAM = "stack"
LINK_READ_KEY = "builder_link_read"
BAD_LINK_KEY = "builder_bad_link"
QUIZ_ON_KEY = "quiz_on"
QUIZ_BLOCK_KEY = "quiz_block"
QUIZ_RESULT_KEY = "quiz_result"
UPLOAD_KEY = "upload"


# ---------------------------------------------------------------- share link


def restore_from_link() -> None:
    """Once per session: a `?stack=` link replaces the default stack.

    A damaged or oversized link leaves the stack alone and says why.
    """
    if st.session_state.get(LINK_READ_KEY):
        return
    st.session_state[LINK_READ_KEY] = True
    text = st.query_params.get(LINK_PARAM)
    if not text:
        return
    try:
        spec = decode_spec(text)
    except SpecError as exc:
        st.session_state[BAD_LINK_KEY] = True
        edit.notify(
            "warning",
            "The share link could not be opened, so the default stack is shown; "
            "the address bar keeps the link until you edit. "
            + _sentence(exc, "share link: "),
        )
        return
    state.init_state()
    st.session_state[state.SPEC_KEY] = spec
    st.session_state[state.IDS_KEY] = state.new_ids(len(spec.blocks))


def publish_link(report: ShapeReport) -> str | None:
    """Keep the address bar's `?stack=` equal to the current stack; a stack too
    long for a link drops the parameter (the JSON file still carries it)."""
    text = encode_spec(report.spec)
    if st.session_state.get(BAD_LINK_KEY) and not state.undo_steps():
        # Leave a damaged link where the user can still see and copy it.
        return text
    if len(text) > MAX_SHARE_CHARS:
        st.query_params.pop(LINK_PARAM, None)
        return None
    if st.query_params.get(LINK_PARAM) != text:
        st.query_params[LINK_PARAM] = text
    return text


# ---------------------------------------------------------------- files


def render_tabs(report: ShapeReport, link: str | None) -> None:
    files, code, compare = st.tabs(["Files and link", "PyTorch code", "Compare"])
    with files:
        render_files(report, link)
    with code:
        render_export(report)
    with compare:
        render_compare(report)


def render_files(report: ShapeReport, link: str | None) -> None:
    """Download and upload the JSON; the share link in words."""
    spec = report.spec
    st.download_button(
        "Download architecture JSON",
        spec.to_json(),
        file_name="architecture.json",
        mime="application/json",
        key="download_json",
    )
    st.file_uploader(
        f"Open an architecture JSON (at most {MAX_UPLOAD_BYTES // 1024} KB)",
        type=["json"],
        key=UPLOAD_KEY,
        on_change=open_upload,
    )
    st.markdown("**Share link**")
    if link is None:
        st.caption("This stack is too large for a link; share the JSON file.")
        return
    st.caption("The address bar always carries the current stack; copy it, or:")
    st.code(f"{_base_url()}?{LINK_PARAM}={link}", language=None, wrap_lines=True)


def _sentence(exc: SpecError, prefix: str) -> str:
    """The error's message as a sentence, without the part naming its source."""
    text = str(exc).removeprefix(prefix)
    return f"{text[:1].upper()}{text[1:]}."


def _base_url() -> str:
    url = st.context.url or ""
    return url.split("?", 1)[0]


def open_upload() -> None:
    """The uploader changed: open the file, or say why not and keep the stack."""
    upload = st.session_state.get(UPLOAD_KEY)
    if upload is None:
        return
    try:
        spec = spec_from_upload(upload.getvalue())
    except SpecError as exc:
        edit.notify(
            "error",
            f"{upload.name} was not opened; the stack is unchanged. "
            + _sentence(exc, "upload: "),
        )
        return
    edit.replace_spec(spec)
    edit.notify("success", f"Opened {upload.name}.")


# ---------------------------------------------------------------- code


def render_export(report: ShapeReport) -> None:
    if not report.ok:
        st.info(
            f"Fix block {report.error.index} first: only a stack that runs exports."
        )
        return
    try:
        code = export_code(report.spec)
    except SpecError as exc:
        st.error(str(exc))
        return
    st.download_button(
        "Download convnet.py",
        code,
        file_name="convnet.py",
        mime="text/x-python",
        key="download_code",
    )
    st.code(code, language="python", line_numbers=True)


# ---------------------------------------------------------------- compare


def render_compare(report: ShapeReport) -> None:
    loaded = st.session_state.get(edit.LOADED_PRESET_KEY, state.DEFAULT_PRESET)
    names = list(PRESETS)
    name = st.selectbox(
        "Compare with preset",
        names,
        index=names.index(loaded),
        format_func=lambda n: PRESETS[n].title,
        key="compare_preset",
    )
    lines = diff_specs(get_preset(name), report.spec)
    if not lines:
        st.success(f"The stack is the same as {PRESETS[name].title}.")
        return
    st.markdown("\n".join(f"- `{line}`" for line in lines))


# ---------------------------------------------------------------- quiz


def quiz_view(report: ShapeReport) -> QuizView | None:
    """Which block the quiz asks about and whether it was answered right."""
    if not st.session_state.get(QUIZ_ON_KEY) or not report.rows:
        return None
    index = min(max(st.session_state.get(QUIZ_BLOCK_KEY, 1), 1), len(report.rows))
    result = _saved_result(report, index)
    return QuizView(index, revealed=result is not None and result.correct)


def _saved_result(report: ShapeReport, index: int):
    """The last graded answer, if it was for this block of this very stack."""
    saved = st.session_state.get(QUIZ_RESULT_KEY)
    if saved and saved[0] == report.spec and saved[1] == index:
        return saved[2]
    return None


def render_quiz(report: ShapeReport) -> None:
    """Ask for one block's Output Shape, grade it, show the worked formula."""
    if not report.rows:
        st.info("The quiz needs at least one block that runs.")
        return
    count = len(report.rows)
    if st.session_state.get(QUIZ_BLOCK_KEY, 1) > count:
        st.session_state[QUIZ_BLOCK_KEY] = count
    index = st.selectbox(
        "Quiz on block",
        range(1, count + 1),
        format_func=lambda i: f"{i} · {report.rows[i - 1].label}",
        key=QUIZ_BLOCK_KEY,
    )
    row = report.rows[index - 1]
    st.markdown(
        f"Block {index} (`{row.name}`, {row.label}) gets "
        f"**{format_shape(row.input_shape)}**. What is its **Output Shape**? "
        "(leave out the batch)"
    )
    with st.form(f"quiz_form_{index}", border=False):
        st.text_input(
            "Your answer", placeholder="e.g. 6x28x28 or 400", key=_answer_key(index)
        )
        st.form_submit_button("Check", on_click=_grade, args=(index,))
    _quiz_feedback(report, index)


def _answer_key(index: int) -> str:
    return f"quiz_answer_{index}"


def _grade(index: int) -> None:
    report = traced(state.current_spec())
    answer = st.session_state.get(_answer_key(index), "")
    try:
        result = check_answer(report, index, answer)
    except ValueError as exc:
        edit.notify("warning", str(exc))
        return
    st.session_state[QUIZ_RESULT_KEY] = (report.spec, index, result)


def _quiz_feedback(report: ShapeReport, index: int) -> None:
    result = _saved_result(report, index)
    if result is None:
        return
    if result.correct:
        st.success(result.message)
    else:
        st.error(result.message)
    with st.expander("The worked formula", expanded=result.correct):
        render_explanation(result.explanation)
    if result.correct and index < len(report.rows):
        st.button("Next block", key="quiz_next", on_click=_next_block, args=(index,))


def _next_block(index: int) -> None:
    st.session_state[QUIZ_BLOCK_KEY] = index + 1
