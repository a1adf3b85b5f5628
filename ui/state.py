"""Session state shared by every page: the stack being edited and its history.

The stack is a Spec plus one id per block. Widget keys are built from the ids, so a
block keeps its widgets when it moves. Every change goes through `record_edit`,
which makes it one step of the undo history.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import streamlit as st

from surgery.presets import get_preset
from surgery.spec import Block, Spec, spec_from_dict

SPEC_KEY = "spec"
IDS_KEY = "block_ids"
NEXT_ID_KEY = "next_block_id"
UNDO_KEY = "undo_history"
REDO_KEY = "redo_history"
DEFAULT_PRESET = "tutorial-lenet"
HISTORY_LIMIT = 200


@dataclass(frozen=True)
class Snapshot:
    """One state of the stack: the spec and the widget id of each block."""

    spec: Spec
    ids: tuple[int, ...]


def init_state() -> None:
    """Set each session key once, before any page reads it."""
    if SPEC_KEY not in st.session_state:
        st.session_state[SPEC_KEY] = get_preset(DEFAULT_PRESET)
    if NEXT_ID_KEY not in st.session_state:
        st.session_state[NEXT_ID_KEY] = 1
    for key in (UNDO_KEY, REDO_KEY):
        if key not in st.session_state:
            st.session_state[key] = []
    if IDS_KEY not in st.session_state:
        st.session_state[IDS_KEY] = new_ids(len(st.session_state[SPEC_KEY].blocks))


def current_spec() -> Spec:
    """The stack as the user last edited it; it may not be valid."""
    init_state()
    stored = st.session_state[SPEC_KEY]
    spec = _current_classes(stored)
    if spec is not stored:
        st.session_state[SPEC_KEY] = spec
    return spec


def _current_classes(spec: Spec) -> Spec:
    """`spec` itself, or rebuilt from its JSON when it predates a re-import."""
    if type(spec) is Spec:
        return spec
    # Streamlit re-imported surgery after a source edit; rebuild the blocks
    # from their JSON so isinstance checks see the new classes.
    return spec_from_dict(spec.to_dict())


def set_spec(spec: Spec) -> None:
    """Replace the stack (one undoable step); blocks left unchanged keep their ids."""
    init_state()
    old = snapshot()
    record_edit(spec, carry_ids(old.spec.blocks, old.ids, spec.blocks))


def new_ids(count: int) -> tuple[int, ...]:
    """`count` block ids never handed out before in this session."""
    start = st.session_state.get(NEXT_ID_KEY, 1)
    st.session_state[NEXT_ID_KEY] = start + count
    return tuple(range(start, start + count))


def block_ids() -> tuple[int, ...]:
    """One id per block of the current stack."""
    init_state()
    ids = st.session_state[IDS_KEY]
    count = len(current_spec().blocks)
    if len(ids) != count:
        # Another page replaced the spec directly; give every block a fresh id.
        ids = new_ids(count)
        st.session_state[IDS_KEY] = ids
    return tuple(ids)


def snapshot() -> Snapshot:
    return Snapshot(current_spec(), block_ids())


def record_edit(spec: Spec, ids: tuple[int, ...]) -> None:
    """Make `spec` the stack; the state before becomes one undo step."""
    if len(ids) != len(spec.blocks):
        raise ValueError(f"{len(ids)} block ids for {len(spec.blocks)} blocks")
    before = snapshot()
    if before == Snapshot(spec, tuple(ids)):
        return
    undo = st.session_state[UNDO_KEY]
    undo.append(before)
    del undo[:-HISTORY_LIMIT]
    st.session_state[REDO_KEY] = []
    _restore(Snapshot(spec, tuple(ids)))


def undo() -> None:
    """Go back one edit; the undone state can be redone."""
    init_state()
    if st.session_state[UNDO_KEY]:
        st.session_state[REDO_KEY].append(snapshot())
        _restore(st.session_state[UNDO_KEY].pop())


def redo() -> None:
    init_state()
    if st.session_state[REDO_KEY]:
        st.session_state[UNDO_KEY].append(snapshot())
        _restore(st.session_state[REDO_KEY].pop())


def undo_steps() -> list[Snapshot]:
    """The earlier states, oldest first."""
    init_state()
    return list(st.session_state[UNDO_KEY])


def redo_count() -> int:
    init_state()
    return len(st.session_state[REDO_KEY])


def _restore(state: Snapshot) -> None:
    st.session_state[SPEC_KEY] = _current_classes(state.spec)
    st.session_state[IDS_KEY] = tuple(state.ids)


def carry_ids(
    old_blocks: tuple[Block, ...],
    old_ids: tuple[int, ...],
    new_blocks: tuple[Block, ...],
) -> tuple[int, ...]:
    """Ids for `new_blocks`: kept where a block is unchanged or edited in place."""
    if len(old_blocks) == len(new_blocks):
        return tuple(old_ids)
    ids: list[int | None] = [None] * len(new_blocks)
    matcher = difflib.SequenceMatcher(a=old_blocks, b=new_blocks, autojunk=False)
    for match in matcher.get_matching_blocks():
        for k in range(match.size):
            ids[match.b + k] = old_ids[match.a + k]
    fresh = iter(new_ids(ids.count(None)))
    return tuple(i if i is not None else next(fresh) for i in ids)
