"""Stack diffs: aligned blocks, layer names, derived in_features from trace()."""

from __future__ import annotations

import pytest

from surgery.diff import block_names, diff_specs
from surgery.model import build_model
from surgery.presets import PRESETS, TUTORIAL_LENET
from surgery.spec import FC, Act, Activation, Conv, Dropout, Pad, Pool, PoolKind, Spec

BLOCKS = TUTORIAL_LENET.blocks


def edited(*blocks) -> Spec:
    return TUTORIAL_LENET.replace_blocks(blocks)


CASES = {
    "tutorial-to-padded": (
        TUTORIAL_LENET,
        PRESETS["padded-lenet"].spec,
        [
            "+ pad 2 before conv1",
            "fc1 in_features 400 -> 576",
            "Param # 62,006 -> 83,126",
        ],
    ),
    "padded-to-tutorial": (
        PRESETS["padded-lenet"].spec,
        TUTORIAL_LENET,
        [
            "- pad 2 (was before conv1)",
            "fc1 in_features 576 -> 400",
            "Param # 83,126 -> 62,006",
        ],
    ),
    "kernel": (
        TUTORIAL_LENET,
        edited(*BLOCKS[:3], Conv(16, 3), *BLOCKS[4:]),
        [
            "conv2 kernel_size 5 -> 3",
            "fc1 in_features 400 -> 576",
            "Param # 62,006 -> 81,590",
        ],
    ),
    "dropout-removed": (
        edited(*BLOCKS[:7], Dropout(0.5), *BLOCKS[7:]),
        TUTORIAL_LENET,
        ["- dropout 0.5 (was after fc1)"],
    ),
    "fc-added-at-end": (edited(*BLOCKS[:-1]), TUTORIAL_LENET, ["+ fc 10 after relu4"]),
    "input": (
        TUTORIAL_LENET,
        Spec(input=(1, 28, 28), blocks=BLOCKS),
        [
            "input 3x32x32 -> 1x28x28",
            "conv1 in_channels 3 -> 1",
            "fc1 in_features 400 -> 256",
            "Param # 62,006 -> 44,426",
        ],
    ),
    "lenet5": (
        TUTORIAL_LENET,
        PRESETS["lenet5"].spec,
        [
            "relu1 (now tanh1) fn relu -> tanh",
            "pool1 kind max -> avg",
            "relu2 (now tanh2) fn relu -> tanh",
            "pool2 kind max -> avg",
            "relu3 (now tanh3) fn relu -> tanh",
            "relu4 (now tanh4) fn relu -> tanh",
        ],
    ),
    "conv-inserted": (
        TUTORIAL_LENET,
        edited(*BLOCKS[:3], Conv(8, 3, padding=1), *BLOCKS[3:]),
        [
            "+ conv 8 k3 p1 before conv2",
            "conv2 (now conv3) in_channels 6 -> 8",
            "Param # 62,006 -> 63,246",
        ],
    ),
    "num-classes": (
        TUTORIAL_LENET,
        Spec(num_classes=100, blocks=(*BLOCKS[:-1], FC(100))),
        [
            "num_classes 10 -> 100",
            "fc3 out_features 10 -> 100",
            "Param # 62,006 -> 69,656",
        ],
    ),
    "pool-stride": (
        edited(Conv(6, 5), Pool(PoolKind.MAX, 3), FC(10)),
        edited(Conv(6, 5), Pool(PoolKind.MAX, 3, stride=2, ceil_mode=True), FC(10)),
        [
            "pool1 stride 3 (= kernel_size) -> 2",
            "pool1 ceil_mode False -> True",
            "fc1 in_features 486 -> 1176",
            "Param # 5,326 -> 12,226",
        ],
    ),
    "broken-after": (
        TUTORIAL_LENET,
        edited(Conv(6, 40), *BLOCKS[1:]),
        ["conv1 kernel_size 5 -> 40"],
    ),
    "equal": (TUTORIAL_LENET, edited(*BLOCKS), []),
}


@pytest.mark.parametrize(("a", "b", "lines"), CASES.values(), ids=CASES.keys())
def test_diff_lines_pinned(a, b, lines):
    assert diff_specs(a, b) == lines


def test_insert_does_not_change_every_later_block():
    b = edited(Act(Activation.GELU), *BLOCKS)

    assert diff_specs(TUTORIAL_LENET, b) == ["+ gelu before conv1"]


def test_in_features_lines_equal_pytorchs_linear():
    b = PRESETS["same-lenet"].spec

    lines = diff_specs(TUTORIAL_LENET, b)
    old, new = build_model(TUTORIAL_LENET).fc1, build_model(b).fc1
    assert f"fc1 in_features {old.in_features} -> {new.in_features}" in lines


@pytest.mark.parametrize("name", PRESETS)
def test_block_names_match_build_model(name):
    spec = PRESETS[name].spec
    names = [n for n, _ in build_model(spec).named_children() if n != "flatten"]

    assert block_names(spec.blocks) == names


def test_removed_first_and_only_blocks():
    only = Spec(blocks=(FC(10),))

    assert diff_specs(only, Spec(blocks=())) == ["- fc 10 (was the only block)"]
    assert diff_specs(Spec(blocks=()), only) == ["+ fc 10"]
    assert diff_specs(edited(Pad(1), FC(10)), only)[0] == "- pad 1 (was before fc1)"


def test_param_line_equals_pytorchs_count():
    b = PRESETS["deep-cnn"].spec

    lines = diff_specs(TUTORIAL_LENET, b)
    old, new = (
        sum(p.numel() for p in build_model(s).parameters()) for s in (TUTORIAL_LENET, b)
    )
    assert lines[-1] == f"Param # {old:,} -> {new:,}"
