"""Worked shape math: every number shown must equal PyTorch's own."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from surgery.explain import (
    Window,
    budget_sentence,
    check_answer,
    dropped_rows,
    explain_block,
    explain_failure,
    flatten_derivation,
)
from surgery.model import build_model
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

RELU = Act(Activation.RELU)
MAX2 = Pool(PoolKind.MAX, 2)
AVG = PoolKind.AVG

ZOO = {
    **{name: preset.spec for name, preset in PRESETS.items()},
    "dilation": Spec(blocks=(Conv(8, 3, dilation=2), RELU, MAX2, Conv(8, 3), FC(10))),
    "stride-2": Spec(
        blocks=(Conv(8, 3, stride=2, padding=1), RELU, Conv(4, 4, 2), FC(10))
    ),
    "ceil-mode": Spec(
        input=(3, 15, 15),
        blocks=(Pool(PoolKind.MAX, 2, ceil_mode=True), Conv(4, 3), MAX2, FC(10)),
    ),
    "ceil-drop": Spec(
        input=(1, 5, 5),
        blocks=(Pool(PoolKind.MAX, 2, stride=3, padding=1, ceil_mode=True), FC(10)),
    ),
    "avg-padding": Spec(
        blocks=(Conv(6, 5), Pool(AVG, 3, stride=2, padding=1), BatchNorm(), FC(10))
    ),
    "grey-28": Spec(
        input=(1, 28, 28),
        blocks=(Conv(6, 5), Act(Activation.GELU), MAX2, Conv(16, 5), MAX2, FC(10)),
    ),
    "non-square": Spec(
        input=(3, 32, 48),
        blocks=(Pad(1), Conv(6, 5, stride=2), MAX2, Dropout(0.25), FC(84), FC(10)),
    ),
    "odd-15": Spec(
        input=(3, 15, 15),
        blocks=(MAX2, Conv(4, 2, stride=2), BatchNorm(), FC(32), BatchNorm(), FC(10)),
    ),
}


def real_outputs(spec: Spec) -> dict[str, tuple[int, ...]]:
    """Output shape (without batch) of every named module on a real CPU forward."""
    model = build_model(spec).eval()
    shapes = {}
    for name, module in model.named_children():
        module.register_forward_hook(
            lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:]))
        )
    with torch.no_grad():
        model(torch.zeros(2, *spec.input))
    return shapes


def module_params(spec: Spec) -> dict[str, int]:
    model = build_model(spec)
    return {
        name: sum(p.numel() for p in module.parameters())
        for name, module in model.named_children()
    }


def evaluate(expression: str) -> float:
    """The value of a written-out formula such as 'floor((32 + 2*0 - 5) / 1) + 1'."""
    names = {"floor": math.floor, "ceil": math.ceil, "__builtins__": {}}
    return eval(expression.replace(",", ""), names)


# Lines that explain in words; each formula line must match a checker below.
PROSE = (
    "stride is not set, so it equals kernel_size",
    "avg pool counts the padded zeros",
    "(- 1: with ceil_mode",
    "relu acts",
    "gelu acts",
    "tanh acts",
    "while training, dropout",
    "batchnorm normalises",
)


def check_line(line: str, shape_in: tuple, shape_out: tuple) -> bool:
    """Assert every number in a formula line against PyTorch; False if no formula."""
    side = re.fullmatch(r"(H_out = W_out|H_out|W_out) = (.+) = (-?\d+)", line)
    if side and not side[1].startswith("C"):
        axes = {"H_out = W_out": (1, 2), "H_out": (1,), "W_out": (2,)}[side[1]]
        assert evaluate(side[2]) == int(side[3])
        assert all(shape_out[a] == int(side[3]) for a in axes)
        return True
    pad = re.fullmatch(r"(H_out = W_out|H_out|W_out): (\d+) = ([\d +]+) \(.*\)", line)
    if pad:
        axes = {"H_out = W_out": (1, 2), "H_out": (1,), "W_out": (2,)}[pad[1]]
        assert evaluate(pad[3]) == int(pad[2])
        assert all(shape_out[a] == int(pad[2]) for a in axes)
        return True
    channels = re.fullmatch(r"C_out = (?:out_channels|C_in) = (\d+).*", line)
    if channels:
        assert shape_out[0] == int(channels[1])
        return True
    flat = re.fullmatch(
        r"in_features (\d+) = flatten of (\d+)x(\d+)x(\d+) \((\d+) x (\d+) x (\d+)"
        r" = (\d+)\)",
        line,
    )
    if flat:
        n, c, h, w, c2, h2, w2, total = map(int, flat.groups())
        assert n == total == c * h * w == shape_in[0] and (c, h, w) == (c2, h2, w2)
        return True
    features = re.fullmatch(r"in_features (\d+) = the features from \w+", line)
    if features:
        assert int(features[1]) == shape_in[0]
        return True
    out = re.fullmatch(r"out_features = (\d+)", line)
    if out:
        assert int(out[1]) == shape_out[0]
        return True
    same = re.fullmatch(r"shape unchanged: (\S+) -> (\S+)", line)
    if same:
        expected = "x".join(map(str, shape_out))
        assert same[1] == same[2] == expected
        return True
    rule = re.fullmatch(
        r"padding (\d+) <= kernel_size/2 = (\d+)/2 = ([\d.]+): allowed", line
    )
    if rule:
        assert int(rule[1]) <= int(rule[2]) / 2 == float(rule[3])
        return True
    assert line.startswith(PROSE), f"unchecked line: {line!r}"
    return False


@pytest.mark.parametrize("spec", ZOO.values(), ids=ZOO.keys())
def test_every_formula_equals_pytorchs_forward(spec):
    report = trace(spec)
    real = real_outputs(spec)
    assert report.ok

    for row in report.rows:
        explanation = explain_block(report, row.index)
        assert real[row.name] == row.output_shape == explanation.output_shape
        checked = [
            check_line(line, row.input_shape, real[row.name])
            for line in explanation.formula_lines
        ]
        assert any(checked), explanation.formula_lines


@pytest.mark.parametrize("spec", ZOO.values(), ids=ZOO.keys())
def test_params_line_adds_up_to_param_count(spec):
    report = trace(spec)
    counts = module_params(spec)

    for row in report.rows:
        line = explain_block(report, row.index).params_line
        if counts[row.name] == 0:
            assert line == "0 (no weights)"
            continue
        expression, total = re.fullmatch(r"(.+) = ([\d,]+) \(.+\)", line).groups()
        value = evaluate(expression.replace(" x ", " * "))
        assert value == int(total.replace(",", "")) == counts[row.name] == row.params


@pytest.mark.parametrize(
    ("index", "formula", "params"),
    [
        (
            1,
            "H_out = W_out = floor((32 + 2*0 - 1*(5-1) - 1) / 1) + 1 = 28",
            "6 x (3 x 5 x 5) + 6 = 456 (weights + biases)",
        ),
        (3, "H_out = W_out = floor((28 + 2*0 - 2) / 2) + 1 = 14", "0 (no weights)"),
        (
            7,
            "in_features 400 = flatten of 16x5x5 (16 x 5 x 5 = 400)",
            "120 x 400 + 120 = 48,120 (weights + biases)",
        ),
    ],
    ids=["conv1", "pool1", "fc1"],
)
def test_tutorial_lenet_lines_pinned(index, formula, params):
    explanation = explain_block(trace(TUTORIAL_LENET), index)

    assert explanation.formula_lines[0] == formula
    assert explanation.params_line == params


def test_pad_batchnorm_and_non_square_lines_pinned():
    report = trace(ZOO["non-square"])
    bn = explain_block(trace(PRESETS["deep-cnn"].spec), 2)

    assert explain_block(report, 1).formula_lines == [
        "H_out: 34 = 32 + 1 + 1 (1 zero rows on top and bottom)",
        "W_out: 50 = 48 + 1 + 1 (1 zero columns left and right)",
    ]
    assert explain_block(report, 2).formula_lines[:2] == [
        "H_out = floor((34 + 2*0 - 1*(5-1) - 1) / 2) + 1 = 15",
        "W_out = floor((50 + 2*0 - 1*(5-1) - 1) / 2) + 1 = 23",
    ]
    assert bn.params_line == "2 x 32 = 64 (weight and bias)"
    assert explain_block(trace(PRESETS["padded-lenet"].spec), 1).formula_lines == [
        (
            "H_out = W_out: 36 = 32 + 2 + 2 (2 zero rows on top and bottom, "
            "2 zero columns left and right)"
        )
    ]


def test_ceil_mode_line_shows_the_dropped_window():
    lines = explain_block(trace(ZOO["ceil-drop"]), 1).formula_lines

    # ceil((5 + 2 - 2) / 3) + 1 = 3, but the third window would start at 6,
    # past the input and its left padding (5 + 1), so PyTorch gives 2.
    assert lines[0] == "H_out = W_out = ceil((5 + 2*1 - 2) / 3) + 1 - 1 = 2"
    assert lines[1].startswith("(- 1: with ceil_mode")


# ---------------------------------------------------------------- receptive field


def gradient_rows(model: nn.Module, input_shape, pixel) -> list[int]:
    """Input rows that get a nonzero gradient from output pixel (row, col)."""
    images = torch.ones(1, *input_shape, requires_grad=True)
    out = model(images)
    if out.dim() == 4:
        out = out[0, 0, pixel[0], pixel[1]]
    else:
        out = out[0, 0]
    out.backward()
    grads = images.grad[0].abs().sum(dim=(0, 2))
    return torch.nonzero(grads).flatten().tolist()


def ones_model(spec: Spec) -> nn.Sequential:
    """build_model's net with all-ones weights and zero biases: every path counts."""
    model = build_model(spec)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.fill_(0.0 if name.endswith("bias") else 1.0)
    return model


RF_STACKS = {
    "tutorial-avg": Spec(
        blocks=(Conv(2, 5), RELU, Pool(AVG, 2), Conv(2, 5), RELU, Pool(AVG, 2), FC(10))
    ),
    "dilated-strided": Spec(
        input=(1, 64, 64),
        blocks=(Conv(2, 3, dilation=3), Conv(2, 3, stride=2), Pool(AVG, 3, 2), FC(10)),
    ),
    "padded": Spec(
        input=(1, 64, 64),
        blocks=(Pad(2), Conv(2, 5, padding=1), Pool(AVG, 2), Conv(1, 3, 2), FC(10)),
    ),
}


@pytest.mark.parametrize("spec", RF_STACKS.values(), ids=RF_STACKS.keys())
def test_receptive_field_and_jump_match_gradients(spec):
    report = trace(spec)
    model = ones_model(spec)
    names = list(dict(model.named_children()))

    for row in report.rows:
        if len(row.output_shape) != 3:
            continue
        explanation = explain_block(report, row.index)
        upto = model[: names.index(row.name) + 1]
        centre = (row.output_shape[1] // 2, row.output_shape[2] // 2)
        rows_a = gradient_rows(upto, spec.input, centre)
        rows_b = gradient_rows(upto, spec.input, (centre[0] + 1, centre[1]))
        assert rows_a[-1] - rows_a[0] + 1 == explanation.receptive_field, row.name
        assert rows_b[0] - rows_a[0] == explanation.jump


def test_fc_receptive_field_is_the_whole_map():
    spec = RF_STACKS["tutorial-avg"]
    report = trace(spec)
    explanation = explain_block(report, 7)

    rows = gradient_rows(ones_model(spec), spec.input, None)
    assert explanation.receptive_field == len(rows) == 32
    assert (explanation.receptive_field, explanation.jump) == (32, 4)


# ---------------------------------------------------------------- border and budget


BORDERS = [
    (Pool(PoolKind.MAX, 2), 15),
    (Pool(AVG, 3, stride=2), 10),
    (Pool(AVG, 3, stride=2, padding=1), 8),
    (Pool(AVG, 2, stride=3), 8),
    (Pool(PoolKind.MAX, 2, ceil_mode=True), 15),
    (Conv(1, 3, stride=2), 8),
    (Conv(1, 3, stride=2, dilation=2), 12),
    (Conv(1, 2, stride=3, padding=1), 7),
    (Conv(1, 5), 32),
    (Pool(PoolKind.MAX, 2), 16),
]


@pytest.mark.parametrize(
    ("block", "size"),
    BORDERS,
    ids=[f"{b.type}-{i}" for i, (b, _) in enumerate(BORDERS)],
)
def test_dropped_rows_match_gradients(block, size):
    spec = Spec(input=(1, size, size), blocks=(block, FC(10)))
    if isinstance(block, Pool):
        block = Pool(
            AVG, block.kernel_size, block.stride, block.padding, block.ceil_mode
        )
    model = ones_model(Spec(input=(1, size, size), blocks=(block, FC(10))))[:1]
    images = torch.ones(1, 1, size, size, requires_grad=True)
    model(images).sum().backward()
    unread = (images.grad[0, 0].abs().sum(dim=1) == 0).nonzero().flatten().tolist()

    report = trace(spec)
    row = report.rows[0]
    window = Window(
        block.kernel_size,
        block.stride or block.kernel_size,
        block.padding,
        getattr(block, "dilation", 1),
    )
    assert dropped_rows(size, window, row.output_shape[1]) == unread
    note = explain_block(report, 1).border_note
    if not unread:
        assert note is None or "ceil_mode adds a last window" in note
    else:
        assert all(str(r) in note for r in unread[:3])


def test_border_note_pinned_with_ceil_mode_size():
    spec = Spec(input=(3, 15, 15), blocks=(MAX2, FC(10)))
    ceil = nn.MaxPool2d(2, ceil_mode=True)(torch.zeros(1, 3, 15, 15))

    assert explain_block(trace(spec), 1).border_note == (
        "input 15: windows of 2 at stride 2 cover rows 0-13; row 14 is dropped; "
        f"ceil_mode would keep it and give {ceil.shape[-1]}; the same for columns"
    )
    assert explain_block(trace(TUTORIAL_LENET), 1).border_note is None


@pytest.mark.parametrize(
    ("shape", "sentence"),
    [
        ((16, 5, 5), "two more 2x2 pools fit before 1x1"),
        ((6, 28, 28), "four more 2x2 pools fit before 1x1"),
        ((6, 2, 3), "one more 2x2 pool fits before 1x1"),
        ((8, 5, 12), "two more 2x2 pools fit before 1x3"),
        ((8, 1, 1), "no more 2x2 pools fit: the map is already 1x1"),
        ((120,), "none left: the map was flattened into features"),
    ],
    ids=["5x5", "28x28", "2x3", "5x12", "1x1", "features"],
)
def test_budget_matches_pools_pytorch_accepts(shape, sentence):
    assert budget_sentence(shape) == sentence
    if len(shape) != 3:
        return

    x = torch.zeros(1, *shape)
    fitted = 0
    while min(x.shape[-2:]) >= 2:
        x, fitted = nn.MaxPool2d(2)(x), fitted + 1
    with pytest.raises(RuntimeError):
        nn.MaxPool2d(2)(x)
    assert f"{x.shape[-2]}x{x.shape[-1]}" in sentence
    assert sentence.startswith(("no", "one", "two", "four")[[0, 1, 2, 4].index(fitted)])


# ---------------------------------------------------------------- flatten


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        (TUTORIAL_LENET, "32 -> 28 -> 14 -> 10 -> 5, so 16 x 5 x 5 = 400"),
        (
            PRESETS["padded-lenet"].spec,
            "32 -> 36 -> 32 -> 16 -> 12 -> 6, so 16 x 6 x 6 = 576",
        ),
        (ZOO["non-square"], "32x48 -> 34x50 -> 15x23 -> 7x11, so 6 x 7 x 11 = 462"),
        (Spec(blocks=(RELU, FC(10))), "32, so 3 x 32 x 32 = 3,072"),
        (
            Spec(input=(3, 512, 512), blocks=(Conv(1024, 5), FC(10))),
            "512 -> 508, so 1024 x 508 x 508 = 264,257,536",
        ),
    ],
    ids=["tutorial", "padded", "non-square", "no-resize", "large-count"],
)
def test_flatten_derivation(spec, text):
    in_features = build_model(spec, device="meta").fc1.in_features

    assert flatten_derivation(trace(spec)) == text
    # Counts carry thousands separators, as in the status line and the table.
    assert text.endswith(f"= {in_features:,}")


def test_flatten_derivation_none_before_any_fc():
    spec = Spec(blocks=(Conv(6, 40), FC(10)))

    assert flatten_derivation(trace(spec)) is None


# ---------------------------------------------------------------- failures


def raises_in_pytorch(spec: Spec, index: int) -> bool:
    """Whether PyTorch itself refuses block `index` on the shape reaching it."""
    report = trace(spec)
    shape = report.rows[-1].output_shape if report.rows else spec.input
    from surgery.layers import make_layer

    try:
        make_layer(spec.blocks[index - 1], shape)(torch.zeros(1, *shape))
    except (RuntimeError, ValueError):
        return True
    return False


FAILURES = {
    "conv-too-big": (
        Spec(blocks=(Conv(6, 5), MAX2, Conv(16, 5), MAX2, Conv(32, 9), FC(10))),
        5,
        "a conv needs H_out and W_out >= 1",
        ["H_out = W_out = floor((5 + 2*0 - 1*(9-1) - 1) / 1) + 1 = -3 < 1"],
    ),
    "dilated-non-square": (
        Spec(input=(3, 40, 12), blocks=(Conv(6, 5, dilation=3), FC(10))),
        1,
        "a conv needs H_out and W_out >= 1",
        [
            "H_out = floor((40 + 2*0 - 3*(5-1) - 1) / 1) + 1 = 28",
            "W_out = floor((12 + 2*0 - 3*(5-1) - 1) / 1) + 1 = 0 < 1",
        ],
    ),
    "pool-too-big": (
        Spec(input=(1, 3, 3), blocks=(Pool(PoolKind.MAX, 4, padding=0), FC(10))),
        1,
        "a pool needs H_out and W_out >= 1",
        ["H_out = W_out = floor((3 + 2*0 - 4) / 4) + 1 = 0 < 1"],
    ),
    "pool-padding": (
        Spec(blocks=(Pool(AVG, 3, padding=2), FC(10))),
        1,
        "pool padding must be at most kernel_size/2",
        ["padding 2 > kernel_size/2 = 3/2 = 1.5"],
    ),
}


@pytest.mark.parametrize(
    ("spec", "index", "rule", "lines"), FAILURES.values(), ids=FAILURES.keys()
)
def test_explain_failure_shows_why_pytorch_refuses(spec, index, rule, lines):
    report = trace(spec)
    failure = explain_failure(report)

    assert raises_in_pytorch(spec, index)
    assert failure.index == report.error.index == index
    assert failure.rule.startswith(rule)
    assert failure.formula_lines == lines
    assert failure.message == report.error.message
    for line in lines:
        side = re.fullmatch(
            r"(?:H_out = W_out|H_out|W_out) = (.+) = (-?\d+)( < 1)?", line
        )
        if side:
            assert evaluate(side[1]) == int(side[2])


STRUCTURE = {
    "conv-after-fc": (
        Spec(blocks=(Conv(6, 5), FC(120), Conv(6, 3), FC(10))),
        3,
        "spatial block after fc",
        [
            "fc1 (block 2) flattens 6x28x28 into 4704 features",
            "a conv needs a CxHxW input, but block 3 gets a flat vector of features",
        ],
    ),
    "last-relu": (
        Spec(blocks=(Conv(6, 5), FC(10), RELU)),
        3,
        "last block must be an fc with num_classes features",
        [
            (
                "last block: relu (not an fc); the logits need an fc with "
                "out_features 10 = num_classes"
            )
        ],
    ),
    "last-fc-5": (
        Spec(blocks=(Conv(6, 5), FC(5))),
        2,
        "last block must be an fc with num_classes features",
        ["out_features 5 != num_classes 10"],
    ),
    "no-blocks": (
        Spec(blocks=()),
        1,
        "a stack needs at least one block",
        ["blocks: none; needed: fc with out_features 10"],
    ),
}


@pytest.mark.parametrize(
    ("spec", "index", "rule", "lines"), STRUCTURE.values(), ids=STRUCTURE.keys()
)
def test_explain_failure_structure_rules(spec, index, rule, lines):
    report = trace(spec)
    failure = explain_failure(report)

    assert failure.index == index
    assert failure.rule.startswith(rule)
    assert failure.formula_lines == lines


def test_explain_failure_none_for_a_valid_stack():
    assert explain_failure(trace(TUTORIAL_LENET)) is None


def test_explain_block_past_the_failure_names_the_range():
    report = trace(FAILURES["conv-too-big"][0])

    with pytest.raises(
        ValueError,
        match="block 5 has no output shape to explain: "
        "the stack fails at block 5; pick a block from 1 to 4",
    ):
        explain_block(report, 5)


# ---------------------------------------------------------------- quiz


@pytest.mark.parametrize(
    "answer",
    [
        "6x28x28",
        "6 x 28 x 28",
        "(6, 28, 28)",
        "[6,28,28]",
        " 6×28×28 ",
        "torch.Size([6, 28, 28])",
    ],
)
def test_quiz_accepts_common_spellings(answer):
    result = check_answer(trace(TUTORIAL_LENET), 1, answer)

    assert result.correct
    assert result.expected == "6x28x28"
    assert result.message == "Correct: conv1 gives 6x28x28."
    assert result.explanation.index == 1


@pytest.mark.parametrize("answer", ["400", "(400,)", "[400]"])
def test_quiz_accepts_feature_counts(answer):
    report = trace(TUTORIAL_LENET)

    assert not check_answer(report, 7, answer).correct
    assert check_answer(report, 7, "120").correct
    assert check_answer(report, 6, "16x5x5").correct


@pytest.mark.parametrize(
    ("index", "answer", "message"),
    [
        (
            1,
            "six by 28",
            (
                "Could not read 'six by 28' as a shape; write it as CxHxW "
                "such as 6x28x28, or a feature count such as 400."
            ),
        ),
        (1, "", "Could not read '' as a shape"),
        (1, "4x6x28x28", "Almost: leave out the batch size 4; conv1 gives 6x28x28."),
        (
            1,
            "6x24x24",
            (
                "Not quite: the channels (6) are right, but H x W is 28x28, "
                "not 24x24; see the formula below."
            ),
        ),
        (
            1,
            "3x28x28",
            (
                "Not quite: H x W is right, but conv1 gives 6 channels "
                "(out_channels), not 3."
            ),
        ),
        (
            7,
            "16x5x5",
            "Not quite: fc1 gives a feature count, 120; see the formula below.",
        ),
        (3, "6x13x13", "Not quite: the channels (6) are right"),
    ],
    ids=["words", "empty", "batch", "wrong-hw", "wrong-c", "fc-as-map", "pool"],
)
def test_quiz_messages(index, answer, message):
    result = check_answer(trace(TUTORIAL_LENET), index, answer)

    assert not result.correct
    assert result.message.startswith(message)


def test_explanation_names_the_pytorch_layer():
    report = trace(PRESETS["padded-lenet"].spec)
    model = build_model(PRESETS["padded-lenet"].spec)

    assert explain_block(report, 2).code == (
        "nn.Conv2d(in_channels=3, out_channels=6, kernel_size=5)"
    )
    assert explain_block(report, 8).code == (
        f"nn.Linear(in_features={model.fc1.in_features}, out_features=120)"
    )
    assert (
        explain_block(report, 2).title
        == "Block 2: conv1 (conv 6 k5), 3x36x36 -> 6x32x32"
    )


def test_explain_block_when_no_block_runs():
    report = trace(Spec(input=(3, 8, 8), blocks=(Conv(6, 9), FC(10))))

    with pytest.raises(
        ValueError,
        match="block 1 has no output shape to explain: the stack fails at block 1; "
        "fix that block first",
    ):
        explain_block(report, 1)
