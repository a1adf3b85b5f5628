"""Fix suggestions: every fix offered is checked against trace()."""

from __future__ import annotations

import pytest

from surgery.fixes import quick_error, suggest_fixes
from surgery.presets import PRESETS, TUTORIAL_LENET
from surgery.shapes import trace
from surgery.spec import (
    FC,
    Act,
    Activation,
    BatchNorm,
    Conv,
    Dropout,
    Pad,
    Pool,
    PoolKind,
    Spec,
)

B = TUTORIAL_LENET.blocks
RELU = Act(Activation.RELU)


def lenet(*blocks) -> Spec:
    return TUTORIAL_LENET.replace_blocks(blocks)


BROKEN = {
    "conv-kernel": lenet(*B[:3], Conv(16, 20), *B[4:]),
    "dilated": lenet(Conv(6, 5, dilation=8), *B[1:]),
    "tiny-input": Spec(input=(3, 8, 8), blocks=B),
    "extra-conv-and-pool": lenet(*B[:6], Conv(32, 5), RELU, Pool(), *B[6:]),
    "pool-padding": lenet(*B[:2], Pool(padding=2), *B[3:]),
    "pool-too-big": Spec(input=(1, 3, 3), blocks=(Pool(PoolKind.AVG, 4), FC(10))),
    "strided-early": Spec(blocks=(Conv(6, 5, stride=4), Pool(), Conv(16, 5), FC(10))),
    "non-square": Spec(
        input=(3, 64, 6), blocks=(Conv(6, 5), Pool(), Conv(8, 3), FC(10))
    ),
    "conv-after-fc": lenet(*B[:7], Conv(8, 3), *B[7:]),
    "pool-after-fc": lenet(*B[:7], Pool(), *B[7:]),
    "last-relu": lenet(*B, RELU),
    "last-dropout": lenet(*B[:-1], Dropout(0.5)),
    "last-fc-5": lenet(*B[:-1], FC(5)),
    "no-fc": lenet(*B[:6]),
    "no-blocks": Spec(blocks=()),
    "pool-then-conv-on-2x2": Spec(
        input=(1, 2, 2), blocks=(Pool(PoolKind.MAX, 3), Conv(4, 5), FC(10))
    ),
}


def removed(spec: Spec, fixed: Spec) -> int:
    return max(0, len(spec.blocks) - len(fixed.blocks))


@pytest.mark.parametrize("spec", BROKEN.values(), ids=BROKEN.keys())
def test_every_fix_is_checked_by_trace(spec):
    report = trace(spec)
    fixes = suggest_fixes(spec, report)

    assert not report.ok
    assert fixes
    for fix in fixes:
        checked = trace(fix.spec)
        if fix.partial:
            assert checked.error.index == fix.error_index
            # The first error lies past the block that failed before.
            assert checked.error.index > report.error.index - removed(spec, fix.spec)
            assert fix.label.endswith(
                f"(partial: the first error moves to block {fix.error_index})"
            )
        else:
            assert checked.ok, fix.label
            assert fix.error_index is None


@pytest.mark.parametrize("spec", BROKEN.values(), ids=BROKEN.keys())
def test_fixes_are_unique_deterministic_and_all_full_or_all_partial(spec):
    fixes = suggest_fixes(spec)

    assert len({fix.spec for fix in fixes}) == len(fixes)
    assert len({fix.label for fix in fixes}) == len(fixes)
    assert all(fix.spec != spec for fix in fixes)
    assert suggest_fixes(spec) == fixes
    assert len({fix.partial for fix in fixes}) == 1


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        (
            "conv-kernel",
            [
                "lower kernel_size to 13 (14 would break pool2)",
                "set padding to 4 (3 would break pool2)",
                "remove this conv",
                "remove pool1 (block 3)",
            ],
        ),
        (
            "dilated",
            [
                "lower kernel_size to 3 (4 would break conv2)",
                "set padding to 6 (1 would break conv2)",
                "lower dilation to 5 (7 would break conv2)",
                "remove this conv",
            ],
        ),
        (
            "pool-padding",
            ["lower padding to 1", "raise kernel_size to 4", "remove this pool"],
        ),
        (
            "extra-conv-and-pool",
            [
                "remove this pool",
                "lower kernel_size to 1",
                "set ceil_mode to True",
                "set padding to 1",
                "set padding of conv3 (block 7) to 2 (keeps 5x5)",
                "remove pool2 (block 6)",
                "set padding of conv2 (block 4) to 2 (keeps 14x14)",
            ],
        ),
        (
            "strided-early",
            [
                "lower kernel_size to 3",
                "set padding to 1",
                "remove this conv",
                "remove pool1 (block 2)",
                "set stride of conv1 (block 1) to 1",
            ],
        ),
        (
            "non-square",
            [
                "lower kernel_size to 1",
                "set padding to 1",
                "remove this conv",
                "set padding of conv1 (block 1) to 2 (keeps 64x6)",
            ],
        ),
        ("conv-after-fc", ["move this conv before the first fc", "remove this conv"]),
        (
            "last-relu",
            ["remove this relu", "add an fc with out_features 10 at the end"],
        ),
        (
            "last-dropout",
            ["add an fc with out_features 10 at the end"],
        ),
        (
            "last-fc-5",
            ["set out_features to 10", "add an fc with out_features 10 at the end"],
        ),
        ("no-fc", ["add an fc with out_features 10 at the end"]),
        ("no-blocks", ["add an fc with out_features 10"]),
        (
            "pool-then-conv-on-2x2",
            [
                "remove this pool (partial: the first error moves to block 1)",
                "lower kernel_size to 2 (partial: the first error moves to block 2)",
                "set ceil_mode to True (partial: the first error moves to block 2)",
                "set padding to 1 (partial: the first error moves to block 2)",
            ],
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_labels_pinned(name, labels):
    assert [fix.label for fix in suggest_fixes(BROKEN[name])] == labels


def test_fix_edits_only_what_the_label_says():
    fixes = {fix.label: fix.spec for fix in suggest_fixes(BROKEN["conv-kernel"])}

    assert fixes["lower kernel_size to 13 (14 would break pool2)"].blocks[3] == Conv(
        16, 13
    )
    assert fixes["set padding to 4 (3 would break pool2)"].blocks[3] == Conv(
        16, 20, padding=4
    )
    assert fixes["remove this conv"].blocks == (*B[:3], *B[4:])
    moved = suggest_fixes(BROKEN["conv-after-fc"])[0].spec
    assert moved.blocks == (*B[:6], Conv(8, 3), *B[6:])


def test_label_names_the_block_that_rules_out_the_value_in_the_message():
    # The message gives the limit for the failing block alone (14, padding 3);
    # pool2 then gets a 1x1 map, so the fixes go one step further and say why.
    spec = BROKEN["conv-kernel"]
    message = trace(spec).error.message
    assert "lower kernel_size to 14 or set padding to 3" in message
    for conv in (Conv(16, 14), Conv(16, 20, padding=3)):
        milder = spec.replace_blocks([*B[:3], conv, *B[4:]])
        assert trace(milder).error.index == 6
    labels = [fix.label for fix in suggest_fixes(spec)]
    assert labels[:2] == [
        "lower kernel_size to 13 (14 would break pool2)",
        "set padding to 4 (3 would break pool2)",
    ]


@pytest.mark.parametrize("name", PRESETS)
def test_valid_spec_has_no_fixes(name):
    assert suggest_fixes(PRESETS[name].spec) == []


QUICK = {
    **BROKEN,
    **{name: preset.spec for name, preset in PRESETS.items()},
    "ceil-1x1": Spec(input=(1, 1, 1), blocks=(Pool(ceil_mode=True), FC(10))),
    "ceil-last-window": Spec(
        input=(1, 5, 5), blocks=(Pool(PoolKind.MAX, 2, 3, 1, True), FC(10))
    ),
    "pad-batchnorm": Spec(
        input=(2, 3, 3), blocks=(Pad(1), Conv(2, 5), BatchNorm(), FC(10))
    ),
    "bad-field": Spec(blocks=(Conv(6, 0), FC(10))),
}


@pytest.mark.parametrize("spec", QUICK.values(), ids=QUICK.keys())
def test_quick_check_agrees_with_trace(spec):
    report = trace(spec)

    assert quick_error(spec) == (report.error.index if report.error else None)
