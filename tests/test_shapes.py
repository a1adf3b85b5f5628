"""trace() against PyTorch itself: a real CPU forward pass is the judge of every
output shape, `sum(p.numel())` of every Param #, torchinfo on the CPU of every
Mult-Adds, and a CPU forward of each block of whether it can run at all."""

from __future__ import annotations

import itertools
import re

import pytest
import torch
import torchinfo
from torch import nn

from surgery import shapes
from surgery.formulas import (
    conv_out,
    effective_kernel,
    max_conv_kernel,
    min_conv_padding,
    pool_out,
)
from surgery.layers import make_layer
from surgery.model import build_model
from surgery.presets import PRESETS
from surgery.shapes import ShapeReport, failure_message, format_shape, trace
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

RELU = Act(Activation.RELU)
MAX2 = Pool(PoolKind.MAX, 2)
HEAD = (FC(32), RELU, FC(10))
# Words of PyTorch's and torchinfo's own errors, which a message must not show.
TRACEBACK_WORDS = ("RuntimeError", "Calculated", "mat1", "Traceback", "torchinfo")

STACKS: dict[str, Spec] = {
    **{f"preset-{name}": preset.spec for name, preset in PRESETS.items()},
    "stride-2": Spec(blocks=(Conv(8, 3, stride=2), RELU, Conv(8, 3, stride=2), *HEAD)),
    "dilation": Spec(
        blocks=(Conv(8, 3, dilation=2), RELU, Conv(4, 3, padding=2, dilation=3), *HEAD)
    ),
    "conv-padding": Spec(blocks=(Conv(6, 7, padding=3), Conv(6, 4, padding=1), *HEAD)),
    "pool-ceil-mode": Spec(
        blocks=(
            Conv(6, 5),
            Pool(PoolKind.MAX, 3, 2, ceil_mode=True),
            Pool(PoolKind.AVG, 2, ceil_mode=True),
            *HEAD,
        )
    ),
    "max-pool-padding": Spec(
        blocks=(Pool(PoolKind.MAX, 3, 2, padding=1), Pool(PoolKind.MAX, 2, 1, 1), *HEAD)
    ),
    "avg-pool-padding": Spec(
        blocks=(
            Pool(PoolKind.AVG, 3, 1, padding=1),
            Pool(PoolKind.AVG, 4, 3, 2, True),
            *HEAD,
        )
    ),
    "mnist-1x28x28": Spec(
        input=(1, 28, 28),
        blocks=(Conv(6, 5, padding=2), RELU, MAX2, Conv(16, 5), RELU, MAX2, *HEAD),
    ),
    "non-square-32x48": Spec(
        input=(3, 32, 48), blocks=(Conv(6, 5), MAX2, Conv(8, 3, stride=2), *HEAD)
    ),
    "non-square-odd-17x9": Spec(
        input=(3, 17, 9),
        blocks=(Pad(1), Conv(4, 3), Pool(PoolKind.AVG, 2, ceil_mode=True), *HEAD),
    ),
    "batchnorm-2d-and-1d": Spec(
        blocks=(Conv(6, 5), BatchNorm(), RELU, MAX2, FC(64), BatchNorm(), RELU, FC(10))
    ),
    "dropout": Spec(blocks=(Conv(6, 5), Dropout(0.2), MAX2, FC(64), Dropout(), FC(10))),
    "fc-on-the-input": Spec(
        input=(2, 8, 8), num_classes=3, blocks=(FC(16), RELU, FC(3))
    ),
    **{
        f"act-{fn.value}": Spec(
            blocks=(Conv(4, 3), Act(fn), MAX2, FC(16), Act(fn), FC(10))
        )
        for fn in Activation
    },
}


def cpu_outputs(model: nn.Sequential, input_shape: tuple) -> dict[str, tuple]:
    """Each module's output shape (no batch) in a real CPU forward pass."""
    model.eval()
    x = torch.zeros(1, *input_shape)
    outputs = {}
    with torch.no_grad():
        for name, module in model.named_children():
            x = module(x)
            outputs[name] = tuple(x.shape[1:])
    return outputs


def cpu_summary(model: nn.Sequential, input_shape: tuple) -> dict:
    """torchinfo's rows, by module name, for a batch of one on the CPU."""
    summary = torchinfo.summary(
        model, input_size=(1, *input_shape), device="cpu", mode="eval", verbose=0
    )
    return {info.var_name: info for info in summary.summary_list if info.depth == 1}


def traced(name: str) -> tuple[ShapeReport, nn.Sequential]:
    spec = STACKS[name]
    report = trace(spec)
    assert report.error is None, report.error
    return report, build_model(spec)


@pytest.mark.parametrize("name", list(STACKS))
def test_output_shapes_match_cpu_forward(name: str) -> None:
    report, model = traced(name)
    outputs = cpu_outputs(model, STACKS[name].input)
    assert [(row.name, row.output_shape) for row in report.rows] == [
        (module, shape) for module, shape in outputs.items() if module != "flatten"
    ]


@pytest.mark.parametrize("name", list(STACKS))
def test_input_shapes_chain(name: str) -> None:
    report, _ = traced(name)
    shape = STACKS[name].input
    for row in report.rows:
        if row.type == "fc" and len(shape) == 3:
            shape = (shape[0] * shape[1] * shape[2],)
        assert row.input_shape == shape, row.name
        shape = row.output_shape


@pytest.mark.parametrize("name", list(STACKS))
def test_params_match_module_parameters(name: str) -> None:
    report, model = traced(name)
    modules = dict(model.named_children())
    for row in report.rows:
        expected = sum(p.numel() for p in modules[row.name].parameters())
        assert row.params == expected, row.name
    assert report.total_params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(STACKS))
def test_mult_adds_match_torchinfo_on_cpu(name: str) -> None:
    report, model = traced(name)
    infos = cpu_summary(model, STACKS[name].input)
    assert [(row.name, row.mult_adds) for row in report.rows] == [
        (row.name, infos[row.name].macs) for row in report.rows
    ]
    assert report.total_mult_adds == sum(info.macs for info in infos.values())


@pytest.mark.parametrize("name", list(STACKS))
def test_flatten_is_the_first_fc_in_features(name: str) -> None:
    report, model = traced(name)
    first_fc = next(m for m in model if isinstance(m, nn.Linear))
    assert report.flatten == first_fc.in_features


def test_rows_are_numbered_blocks_with_labels() -> None:
    report = trace(PRESETS["padded-lenet"].spec)
    assert [(row.index, row.type, row.name, row.label) for row in report.rows] == [
        (1, "pad", "pad1", "pad 2"),
        (2, "conv", "conv1", "conv 6 k5"),
        (3, "act", "relu1", "relu"),
        (4, "pool", "pool1", "pool max 2"),
        (5, "conv", "conv2", "conv 16 k5"),
        (6, "act", "relu2", "relu"),
        (7, "pool", "pool2", "pool max 2"),
        (8, "fc", "fc1", "fc 120"),
        (9, "act", "relu3", "relu"),
        (10, "fc", "fc2", "fc 84"),
        (11, "act", "relu4", "relu"),
        (12, "fc", "fc3", "fc 10"),
    ]


def test_padded_lenet_shapes_users_check() -> None:
    report = trace(PRESETS["padded-lenet"].spec)
    spatial = [format_shape(row.output_shape) for row in report.rows[:7]]
    assert spatial == [
        "3x36x36",
        "6x32x32",
        "6x32x32",
        "6x16x16",
        "16x12x12",
        "16x12x12",
        "16x6x6",
    ]
    assert "3x34x34" not in spatial
    assert report.flatten == 576
    assert report.rows[7].input_shape == (576,)


def test_tutorial_lenet_flatten_and_counts() -> None:
    report = trace(PRESETS["tutorial-lenet"].spec)
    assert report.flatten == 400
    assert report.total_params == 62006
    assert [row.params for row in report.rows if row.params] == [
        456,
        2416,
        48120,
        10164,
        850,
    ]


def test_format_shape() -> None:
    assert (format_shape((16, 5, 5)), format_shape((400,))) == ("16x5x5", "400")


# ---------------------------------------------------------------- failing stacks

TUTORIAL = PRESETS["tutorial-lenet"].spec.blocks
FAILING: dict[str, tuple[Spec, int, str]] = {
    "third-pool-on-1x1": (
        Spec(blocks=(*TUTORIAL[:6], MAX2, MAX2, MAX2, *TUTORIAL[6:])),
        9,
        (
            "block 9 (pool): input 16x1x1 is smaller than kernel_size 2; remove this "
            "pool or lower kernel_size to 1"
        ),
    ),
    "conv-kernel-on-2x2": (
        Spec(blocks=(*TUTORIAL[:6], MAX2, Conv(8, 3), *TUTORIAL[6:])),
        8,
        (
            "block 8 (conv): input 16x2x2 is smaller than kernel_size 3; lower "
            "kernel_size to 2 or set padding to 1"
        ),
    ),
    "conv-padded-still-too-small": (
        Spec(input=(3, 4, 4), blocks=(Conv(8, 9, padding=1), FC(10))),
        1,
        (
            "block 1 (conv): input 3x4x4 padded by 1 to 6x6 is smaller than "
            "kernel_size 9; lower kernel_size to 6 or set padding to 3"
        ),
    ),
    "conv-dilation-span": (
        Spec(input=(3, 8, 8), blocks=(Conv(8, 3, dilation=4), FC(10))),
        1,
        (
            "block 1 (conv): input 3x8x8 is smaller than kernel_size 3 (span 9 at "
            "dilation 4); lower kernel_size to 2 or set padding to 1"
        ),
    ),
    "conv-non-square-narrow-side": (
        Spec(input=(3, 32, 4), blocks=(Conv(8, 5), FC(10))),
        1,
        (
            "block 1 (conv): input 3x32x4 is smaller than kernel_size 5; lower "
            "kernel_size to 4 or set padding to 1"
        ),
    ),
    "pool-padding-over-half": (
        Spec(blocks=(Conv(6, 5), Pool(PoolKind.MAX, 2, padding=2), FC(10))),
        2,
        (
            "block 2 (pool): padding 2 is more than half of kernel_size 2; PyTorch "
            "allows at most 1; lower padding to 1 or raise kernel_size to 4"
        ),
    ),
    "avg-pool-padding-over-half": (
        Spec(blocks=(Pool(PoolKind.AVG, 3, padding=2), FC(10))),
        1,
        (
            "block 1 (pool): padding 2 is more than half of kernel_size 3; PyTorch "
            "allows at most 1; lower padding to 1 or raise kernel_size to 4"
        ),
    ),
    "pool-padded-input-too-small": (
        Spec(input=(3, 2, 2), blocks=(Pool(PoolKind.MAX, 5, padding=1), FC(10))),
        1,
        (
            "block 1 (pool): input 3x2x2 padded by 1 to 4x4 is smaller than "
            "kernel_size 5; remove this pool or lower kernel_size to 4"
        ),
    ),
}


@pytest.mark.parametrize("name", list(FAILING))
def test_failing_block_message_and_earlier_rows(name: str) -> None:
    spec, index, message = FAILING[name]
    report = trace(spec)
    assert report.error is not None
    assert (report.error.index, report.error.message) == (index, message)
    assert [row.index for row in report.rows] == list(range(1, index))
    assert not report.ok
    assert not any(word in report.error.message for word in TRACEBACK_WORDS)


@pytest.mark.parametrize("name", list(FAILING))
def test_failing_block_fails_in_pytorch_on_the_cpu(name: str) -> None:
    spec, index, _ = FAILING[name]
    report = trace(spec)
    in_shape = report.rows[-1].output_shape if report.rows else spec.input
    assert cpu_forward(spec.blocks[index - 1], in_shape) is None


def test_rows_before_the_failure_have_pytorchs_shapes() -> None:
    spec, _, _ = FAILING["third-pool-on-1x1"]
    report = trace(spec)
    assert [format_shape(row.output_shape) for row in report.rows] == [
        "6x28x28",
        "6x28x28",
        "6x14x14",
        "16x10x10",
        "16x10x10",
        "16x5x5",
        "16x2x2",
        "16x1x1",
    ]
    assert report.flatten is None


# ---------------------------------------------------------------- a grid of settings


def cpu_forward(block: Block, in_shape: tuple) -> tuple | None:
    """The block's output shape in a real CPU forward pass, or None if it fails."""
    try:
        layer = make_layer(block, in_shape)
        with torch.no_grad():
            return tuple(layer(torch.zeros(2, *in_shape)).shape[1:])
    except (RuntimeError, ValueError):
        return None


def trace_one(block: Block, in_shape: tuple) -> ShapeReport:
    return trace(Spec(input=in_shape, blocks=(block, FC(10))))


def apply_fixes(block: Block, message: str) -> list[Block]:
    """The block with each fix the message suggests applied."""
    fixed = []
    for field, verb in (
        ("kernel_size", "lower"),
        ("padding", "set"),
        ("padding", "lower"),
    ):
        found = re.search(rf"{verb} {field} to (\d+)", message)
        if found:
            fixed.append(_with(block, **{field: int(found.group(1))}))
    found = re.search(r"raise kernel_size to (\d+)", message)
    if found:
        fixed.append(_with(block, kernel_size=int(found.group(1))))
    return fixed


def _with(block: Block, **changes) -> Block:
    return type(block)(**{**block.__dict__, **changes})


SIZES = [(1, 1), (2, 2), (3, 3), (4, 4), (2, 5), (5, 3)]
POOLS = [
    Pool(kind, k, s, p, ceil)
    for kind, k, s, p, ceil in itertools.product(
        PoolKind, (1, 2, 3, 4, 5), (None, 1, 2, 3), (0, 1, 2), (False, True)
    )
]
CONVS = [
    Conv(3, k, s, p, d)
    for k, s, p, d in itertools.product((1, 2, 3, 5, 7), (1, 2), (0, 1, 2), (1, 2, 3))
]


def check_grid(blocks: list[Block], in_shape: tuple) -> list[str]:
    """Every disagreement between trace() and a CPU forward, and every suggested
    fix that does not make the block run."""
    problems = []
    for block in blocks:
        expected = cpu_forward(block, in_shape)
        report = trace_one(block, in_shape)
        got = report.rows[0].output_shape if report.rows else None
        if got != expected:
            problems.append(f"{block} on {in_shape}: trace {got}, PyTorch {expected}")
        if expected is not None:
            continue

        message = report.error.message
        fixes = apply_fixes(block, message)
        if not fixes and "remove this pool" not in message:
            problems.append(f"{block} on {in_shape}: no fix in {message!r}")
        for fixed in fixes:
            if cpu_forward(fixed, in_shape) is None:
                problems.append(f"{block} on {in_shape}: fix {fixed} fails")
        if "PyTorch cannot apply" in message or any(
            word in message for word in TRACEBACK_WORDS
        ):
            problems.append(f"{block} on {in_shape}: vague message {message!r}")
    return problems


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_pool_grid_fails_exactly_when_pytorch_fails(size: tuple) -> None:
    assert check_grid(POOLS, (2, *size)) == []


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_conv_grid_fails_exactly_when_pytorch_fails(size: tuple) -> None:
    assert check_grid(CONVS, (2, *size)) == []


def test_grid_has_failures_and_successes() -> None:
    for blocks in (POOLS, CONVS):
        outcomes = {cpu_forward(block, (2, 3, 3)) is None for block in blocks}
        assert outcomes == {True, False}


def test_failure_message_fallback_names_block_and_input() -> None:
    message = failure_message(Dropout(0.5), (6, 4, 4), 3)
    assert message == (
        "block 3 (dropout): PyTorch cannot apply dropout 0.5 to a 6x4x4 input; "
        "change its fields or remove it"
    )


# ---------------------------------------------------------------- meta device


def test_trace_leaves_the_global_rng_alone() -> None:
    spec = Spec(blocks=(Conv(7, 3), BatchNorm(), RELU, MAX2, FC(33), FC(10)))
    shapes._cached_step.cache_clear()
    before = torch.get_rng_state()
    trace(spec)
    assert torch.equal(torch.get_rng_state(), before)

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    shapes._cached_step.cache_clear()
    trace(spec)
    assert torch.equal(torch.rand(3), expected)


def test_huge_network_is_traced_without_real_memory() -> None:
    spec = Spec(
        input=(3, 512, 512),
        blocks=(Conv(1024, 3, padding=1), RELU, FC(65536), FC(10)),
    )
    report = trace(spec)
    assert report.error is None
    flatten = 1024 * 512 * 512
    assert report.flatten == flatten
    assert [row.params for row in report.rows] == [
        1024 * 3 * 9 + 1024,
        0,
        flatten * 65536 + 65536,
        65536 * 10 + 10,
    ]
    assert report.rows[0].mult_adds == (1024 * 3 * 9 + 1024) * 512 * 512


def test_trace_of_the_same_spec_is_the_same_report() -> None:
    spec = PRESETS["deep-cnn"].spec
    first = trace(spec)
    shapes._cached_step.cache_clear()
    assert trace(spec) == first
    assert trace(spec) == first


def test_block_with_an_unhashable_field_is_an_error_not_a_crash() -> None:
    report = trace(Spec(blocks=(Conv([6], 5), FC(10))))
    assert report.error.message == (
        "block 1 (conv): out_channels [6] is not an integer; use a whole number "
        "from 1 to 1024"
    )


def test_same_block_on_another_input_is_traced_again() -> None:
    small = trace(Spec(input=(3, 8, 8), blocks=(Conv(6, 5), FC(10))))
    large = trace(Spec(input=(3, 32, 32), blocks=(Conv(6, 5), FC(10))))
    assert (small.rows[0].output_shape, large.rows[0].output_shape) == (
        (6, 4, 4),
        (6, 28, 28),
    )


# ---------------------------------------------------------------- formulas


def formula_shape(block: Block, in_shape: tuple) -> tuple | None:
    """The output shape by the formulas, None where they say PyTorch refuses."""
    channels, *sides = in_shape
    if isinstance(block, Conv):
        args = (block.kernel_size, block.stride, block.padding, block.dilation)
        out = [conv_out(side, *args) for side in sides]
        channels = block.out_channels
    else:
        if 2 * block.padding > block.kernel_size:
            return None
        args = (block.kernel_size, block.effective_stride, block.padding)
        out = [pool_out(side, *args, block.ceil_mode) for side in sides]
    return (channels, *out) if min(out) >= 1 else None


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_formulas_match_pytorch(size: tuple) -> None:
    in_shape = (2, *size)
    wrong = [
        (block, formula_shape(block, in_shape), cpu_forward(block, in_shape))
        for block in POOLS + CONVS
        if formula_shape(block, in_shape) != cpu_forward(block, in_shape)
    ]
    assert wrong == []


@pytest.mark.parametrize(
    ("size", "kernel_size", "dilation", "padding"),
    [(32, 5, 1, 0), (4, 9, 1, 1), (8, 3, 4, 0), (1, 32, 16, 0)],
)
def test_conv_fix_formulas(size, kernel_size, dilation, padding) -> None:
    largest = max_conv_kernel(size, padding, dilation)
    assert conv_out(size, largest, 1, padding, dilation) >= 1
    assert conv_out(size, largest + 1, 1, padding, dilation) < 1
    smallest = min_conv_padding(size, kernel_size, dilation)
    assert conv_out(size, kernel_size, 1, smallest, dilation) >= 1
    if smallest:
        assert conv_out(size, kernel_size, 1, smallest - 1, dilation) < 1
    assert effective_kernel(kernel_size, dilation) == dilation * (kernel_size - 1) + 1
