"""The builder's edits: each widget callback turns into exactly one undoable step.

Widget keys are built from block ids (`field_key`), never from positions, so a
moved block keeps its widgets. The spec in session state is the truth;
`sync_widgets` copies it into the widget keys before the widgets are drawn.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import streamlit as st

from surgery.presets import get_preset
from surgery.spec import (
    FC,
    Act,
    Activation,
    BatchNorm,
    Block,
    Conv,
    Dropout,
    Pad,
    Pool,
    PoolKind,
    Spec,
)
from ui import state

# What a block of each type starts as when inserted.
NEW_BLOCKS: dict[str, Block] = {
    "conv": Conv(16, 3, padding=1),
    "act": Act(Activation.RELU),
    "pool": Pool(PoolKind.MAX, 2),
    "pad": Pad(1),
    "batchnorm": BatchNorm(),
    "dropout": Dropout(0.5),
    "fc": FC(84),
}
NOTICE_KEY = "builder_notice"
LOADED_PRESET_KEY = "loaded_preset"
INPUT_KEYS = ("in_channels", "in_height", "in_width")
NUM_CLASSES_KEY = "num_classes"


def field_key(block_id: int, name: str) -> str:
    return f"b{block_id}_{name}"


def insert_key(block_id: int) -> str:
    """The key of a block's "Insert…" popover; False in it closes the popover."""
    return f"ins_{block_id}"


# ---------------------------------------------------------------- committing


def commit(spec: Spec, ids: tuple[int, ...]) -> None:
    """Record one edit and clear the message about the previous one."""
    st.session_state.pop(NOTICE_KEY, None)
    state.record_edit(spec, ids)


def notify(kind: str, text: str) -> None:
    """A message shown at the top of the builder until the next edit."""
    st.session_state[NOTICE_KEY] = (kind, text)


def _blocks_and_ids() -> tuple[list[Block], list[int]]:
    return list(state.current_spec().blocks), list(state.block_ids())


def _commit_blocks(blocks: list[Block], ids: list[int]) -> None:
    commit(state.current_spec().replace_blocks(blocks), tuple(ids))


# ---------------------------------------------------------------- stack edits


def insert_block(block_id: int | None, offset: int, type_name: str) -> None:
    """Insert a new block of `type_name` above (offset 0) or below (1) a block;
    block_id None appends at the end."""
    blocks, ids = _blocks_and_ids()
    at = len(blocks) if block_id is None else ids.index(block_id) + offset
    blocks.insert(at, NEW_BLOCKS[type_name])
    ids.insert(at, state.new_ids(1)[0])
    _commit_blocks(blocks, ids)


def insert_from_widget(block_id: int | None, offset: int, type_key: str) -> None:
    insert_block(block_id, offset, st.session_state[type_key])
    if block_id is not None:
        st.session_state[insert_key(block_id)] = False


def duplicate_block(block_id: int) -> None:
    blocks, ids = _blocks_and_ids()
    at = ids.index(block_id)
    blocks.insert(at + 1, blocks[at])
    ids.insert(at + 1, state.new_ids(1)[0])
    _commit_blocks(blocks, ids)


def delete_block(block_id: int) -> None:
    blocks, ids = _blocks_and_ids()
    at = ids.index(block_id)
    del blocks[at], ids[at]
    _commit_blocks(blocks, ids)


def move_block(block_id: int, step: int) -> None:
    """Move a block up (step -1) or down (step 1); at the end it stays put."""
    blocks, ids = _blocks_and_ids()
    at = ids.index(block_id)
    to = at + step
    if not 0 <= to < len(blocks):
        return
    blocks[at], blocks[to] = blocks[to], blocks[at]
    ids[at], ids[to] = ids[to], ids[at]
    _commit_blocks(blocks, ids)


# ---------------------------------------------------------------- field edits


def edit_field(block_id: int, name: str) -> None:
    """A field widget changed: rebuild its block with the widget's value."""
    blocks, ids = _blocks_and_ids()
    at = ids.index(block_id)
    value = _field_value(block_id, name)
    blocks[at] = replace(blocks[at], **{name: value})
    _commit_blocks(blocks, ids)


def _field_value(block_id: int, name: str) -> Any:
    raw = st.session_state[field_key(block_id, name)]
    if name == "fn":
        return Activation(raw)
    if name == "kind":
        return PoolKind(raw)
    if name == "p":
        return float(raw)
    return raw


def _pool_stride(block_id: int) -> int | None:
    if st.session_state[field_key(block_id, "stride_same")]:
        return None
    return int(st.session_state[field_key(block_id, "stride")])


def edit_pool_stride(block_id: int) -> None:
    """The "same as kernel_size" box or the stride number changed."""
    blocks, ids = _blocks_and_ids()
    at = ids.index(block_id)
    blocks[at] = replace(blocks[at], stride=_pool_stride(block_id))
    _commit_blocks(blocks, ids)


def edit_input() -> None:
    spec = state.current_spec()
    shape = tuple(int(st.session_state[key]) for key in INPUT_KEYS)
    commit(Spec(shape, spec.num_classes, spec.blocks), state.block_ids())


def edit_num_classes() -> None:
    """num_classes changed; a last fc that matched the old count follows it."""
    spec = state.current_spec()
    new = int(st.session_state[NUM_CLASSES_KEY])
    blocks = list(spec.blocks)
    if (
        blocks
        and isinstance(blocks[-1], FC)
        and blocks[-1].out_features == spec.num_classes
    ):
        blocks[-1] = FC(new)
    commit(Spec(spec.input, new, tuple(blocks)), state.block_ids())


# ---------------------------------------------------------------- whole stacks


def load_preset(name: str) -> None:
    spec = get_preset(name)
    st.session_state[LOADED_PRESET_KEY] = name
    commit(spec, state.new_ids(len(spec.blocks)))


def load_preset_from_widget(key: str) -> None:
    load_preset(st.session_state[key])


def replace_spec(spec: Spec) -> None:
    """A fix, an upload or a restore: unchanged blocks keep their widgets."""
    st.session_state.pop(NOTICE_KEY, None)
    state.set_spec(spec)


def undo() -> None:
    st.session_state.pop(NOTICE_KEY, None)
    state.undo()


def redo() -> None:
    st.session_state.pop(NOTICE_KEY, None)
    state.redo()


# ---------------------------------------------------------------- widgets


def widget_values(block: Block) -> dict[str, Any]:
    """The value each of the block's widgets shows, by field name."""
    values: dict[str, Any] = {}
    for name, value in vars(block).items():
        values[name] = value.value if hasattr(value, "value") else value
    if isinstance(block, Pool):
        values["stride_same"] = block.stride is None
        values["stride"] = block.effective_stride
    return values


def sync_widgets(spec: Spec, ids: tuple[int, ...]) -> None:
    """Copy the spec into the widget keys (after an undo, a move, a preset...)."""
    for block, block_id in zip(spec.blocks, ids):
        for name, value in widget_values(block).items():
            _set(field_key(block_id, name), value)
    for key, value in zip(INPUT_KEYS, spec.input):
        _set(key, value)
    _set(NUM_CLASSES_KEY, spec.num_classes)


def _set(key: str, value: Any) -> None:
    if st.session_state.get(key) != value:
        st.session_state[key] = value
