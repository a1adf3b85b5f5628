"""The spec's JSON form: parsing, every error message, structure rules, defaults."""

from __future__ import annotations

import json
import re

import pytest
from torch import nn

from surgery.layers import make_layer
from surgery.presets import PRESETS, TUTORIAL_LENET
from surgery.shapes import trace
from surgery.spec import (
    FC,
    INT_RANGES,
    Act,
    Activation,
    BatchNorm,
    Conv,
    Dropout,
    Pad,
    Pool,
    PoolKind,
    Spec,
    SpecError,
    block_problem,
    block_to_dict,
    describe,
    parse_block,
    spec_from_dict,
    spec_from_json,
    structure_problem,
)

BLOCK_TYPES = "pad, conv, act, pool, fc, dropout, batchnorm"
HEAD = [{"type": "fc", "out_features": 10}]


def spec_with(*blocks: dict, **top) -> dict:
    """A spec dict whose blocks are `blocks` followed by an fc with 10 outputs."""
    return {"input": [3, 32, 32], "num_classes": 10, "blocks": [*blocks, *HEAD], **top}


def raises_spec_error(data, message: str) -> SpecError:
    with pytest.raises(SpecError, match=f"^{re.escape(message)}$") as info:
        spec_from_dict(data)
    return info.value


# ---------------------------------------------------------------- block errors

BLOCK_ERRORS = [
    (
        {"type": "conv2d"},
        f'block 1: type "conv2d" is unknown; use one of {BLOCK_TYPES}',
        "type",
    ),
    (
        {"out_channels": 6},
        f"block 1: type is missing; use one of {BLOCK_TYPES}",
        "type",
    ),
    (
        {"type": "conv", "channels": 6},
        (
            'block 1 (conv): field "channels" is unknown; conv takes out_channels, '
            "kernel_size, stride, padding, dilation"
        ),
        "channels",
    ),
    (
        {"type": "batchnorm", "eps": 0.1},
        (
            'block 1 (batchnorm): field "eps" is unknown; batchnorm takes no fields '
            "besides type"
        ),
        "eps",
    ),
    (
        {"type": "conv", "out_channels": "6"},
        (
            'block 1 (conv): out_channels "6" is not an integer; use a whole number '
            "from 1 to 1024"
        ),
        "out_channels",
    ),
    (
        {"type": "conv", "kernel_size": 5.0},
        (
            "block 1 (conv): kernel_size 5.0 is not an integer; use a whole number "
            "from 1 to 32"
        ),
        "kernel_size",
    ),
    (
        {"type": "fc", "out_features": True},
        (
            "block 1 (fc): out_features true is not an integer; use a whole number "
            "from 1 to 65536"
        ),
        "out_features",
    ),
    (
        {"type": "pool", "stride": False},
        (
            "block 1 (pool): stride false is not an integer; use a whole number from "
            "1 to 32"
        ),
        "stride",
    ),
    (
        {"type": "act", "fn": "swish"},
        (
            'block 1 (act): fn "swish" is not allowed; use one of relu, tanh, sigmoid, '
            "gelu, leaky_relu, elu"
        ),
        "fn",
    ),
    (
        {"type": "pool", "kind": "min"},
        'block 1 (pool): kind "min" is not allowed; use one of max, avg',
        "kind",
    ),
    (
        {"type": "pool", "ceil_mode": 1},
        "block 1 (pool): ceil_mode 1 is not a boolean; use true or false",
        "ceil_mode",
    ),
    (
        {"type": "pool", "ceil_mode": "true"},
        'block 1 (pool): ceil_mode "true" is not a boolean; use true or false',
        "ceil_mode",
    ),
    (
        {"type": "dropout", "p": 1},
        (
            "block 1 (dropout): p 1 is out of range; use a number from 0 to less than "
            "1 (0.5 is common)"
        ),
        "p",
    ),
    (
        {"type": "dropout", "p": -0.1},
        (
            "block 1 (dropout): p -0.1 is out of range; use a number from 0 to less "
            "than 1 (0.5 is common)"
        ),
        "p",
    ),
    (
        {"type": "dropout", "p": "0.5"},
        (
            'block 1 (dropout): p "0.5" is not a number; use a number from 0 to less '
            "than 1 (0.5 is common)"
        ),
        "p",
    ),
    (
        {"type": "dropout", "p": True},
        (
            "block 1 (dropout): p true is not a number; use a number from 0 to less "
            "than 1 (0.5 is common)"
        ),
        "p",
    ),
    (
        [1, 2],
        'block 1: [1, 2] is not an object; write it as {"type": "conv", ...}',
        None,
    ),
]


@pytest.mark.parametrize(
    ("block", "message", "field"),
    BLOCK_ERRORS,
    ids=[message.split(": ", 1)[1][:40] for _, message, _ in BLOCK_ERRORS],
)
def test_block_error_message(block, message: str, field: str | None) -> None:
    error = raises_spec_error(spec_with(block), message)
    assert (error.index, error.field) == (1, field)


def test_block_error_names_the_block_number() -> None:
    data = spec_with({"type": "pad", "padding": 2}, {"type": "conv", "stride": 0})
    error = raises_spec_error(
        data,
        "block 2 (conv): stride 0 is out of range; use a whole number from 1 to 32",
    )
    assert error.index == 2


OUT_OF_RANGE = [
    (block_type, name, value)
    for block_type, names in (
        ("conv", ("out_channels", "kernel_size", "stride", "padding", "dilation")),
        ("pool", ("kernel_size", "stride", "padding")),
        ("pad", ("padding",)),
        ("fc", ("out_features",)),
    )
    for name in names
    for value in (INT_RANGES[name][0] - 1, INT_RANGES[name][1] + 1)
]


@pytest.mark.parametrize(
    ("block_type", "name", "value"),
    OUT_OF_RANGE,
    ids=[f"{t}-{n}-{v}" for t, n, v in OUT_OF_RANGE],
)
def test_int_field_out_of_range(block_type: str, name: str, value: int) -> None:
    low, high = INT_RANGES[name]
    message = (
        f"block 1 ({block_type}): {name} {value} is out of range; use a whole "
        f"number from {low} to {high}"
    )
    error = raises_spec_error(spec_with({"type": block_type, name: value}), message)
    assert error.field == name


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (name, bounds)
        for name, (low, high) in INT_RANGES.items()
        for bounds in (low, high)
    ],
)
def test_int_field_bounds_are_accepted(name: str, value: int) -> None:
    block_type = "fc" if name == "out_features" else "conv"
    block = parse_block({"type": block_type, name: value}, 1)
    assert getattr(block, name) == value


# ---------------------------------------------------------------- spec errors

SPEC_ERRORS = [
    (
        {"input": [3, 32], "blocks": HEAD},
        (
            "spec: input [3, 32] is not [channels, height, width]; write it as three "
            "integers such as [3, 32, 32]"
        ),
        "input",
    ),
    (
        {"input": [3, 32, "32"], "blocks": HEAD},
        (
            'spec: input [3, 32, "32"] is not [channels, height, width]; write it as '
            "three integers such as [3, 32, 32]"
        ),
        "input",
    ),
    (
        {"input": [3, True, 32], "blocks": HEAD},
        (
            "spec: input [3, true, 32] is not [channels, height, width]; write it as "
            "three integers such as [3, 32, 32]"
        ),
        "input",
    ),
    (
        {"input": [0, 32, 32], "blocks": HEAD},
        (
            "spec: input channels 0 is out of range; use 1 to 64 (3 for colour, 1 for "
            "grey)"
        ),
        "input",
    ),
    (
        {"input": [65, 32, 32], "blocks": HEAD},
        (
            "spec: input channels 65 is out of range; use 1 to 64 (3 for colour, 1 for "
            "grey)"
        ),
        "input",
    ),
    (
        {"input": [3, 0, 32], "blocks": HEAD},
        "spec: input height 0 is out of range; use 1 to 512",
        "input",
    ),
    (
        {"input": [3, 32, 513], "blocks": HEAD},
        "spec: input width 513 is out of range; use 1 to 512",
        "input",
    ),
    (
        {"num_classes": 1, "blocks": HEAD},
        (
            "spec: num_classes 1 is out of range; use a whole number from 2 to 1000 "
            "(10 for CIFAR-10)"
        ),
        "num_classes",
    ),
    (
        {"num_classes": 1001, "blocks": HEAD},
        (
            "spec: num_classes 1001 is out of range; use a whole number from 2 to 1000 "
            "(10 for CIFAR-10)"
        ),
        "num_classes",
    ),
    (
        {"num_classes": "10", "blocks": HEAD},
        (
            'spec: num_classes "10" is out of range; use a whole number from 2 to 1000 '
            "(10 for CIFAR-10)"
        ),
        "num_classes",
    ),
    (
        {"blocks": {"type": "fc"}},
        'spec: blocks {"type": "fc"} is not a list; write the blocks as a JSON list',
        "blocks",
    ),
    (
        {"num_classes": 5},
        (
            'spec: blocks is missing; add "blocks": [...] with the layers in order, '
            'ending with {"type": "fc", "out_features": 5}'
        ),
        "blocks",
    ),
    (
        {"blocks": HEAD, "layers": []},
        'spec: field "layers" is unknown; a spec takes input, num_classes and blocks',
        "layers",
    ),
    (
        [HEAD],
        (
            'spec: the file is not a JSON object; it needs {"input": [3, 32, 32], '
            '"num_classes": 10, "blocks": [...]}'
        ),
        None,
    ),
]


@pytest.mark.parametrize(
    ("data", "message", "field"),
    SPEC_ERRORS,
    ids=[message.split(": ", 1)[1][:40] for _, message, _ in SPEC_ERRORS],
)
def test_spec_error_message(data, message: str, field: str | None) -> None:
    error = raises_spec_error(data, message)
    assert (error.index, error.field) == (None, field)


def test_invalid_json_names_line_and_column() -> None:
    text = '{"blocks": [\n  {"type": "conv",}\n]}'
    message = (
        "spec: the text is not valid JSON (Expecting property name enclosed in "
        "double quotes at line 2, column 19); fix the JSON syntax there"
    )
    with pytest.raises(SpecError, match=f"^{re.escape(message)}$"):
        spec_from_json(text)


def test_empty_text_is_invalid_json() -> None:
    with pytest.raises(SpecError, match=r"not valid JSON \(Expecting value at line 1"):
        spec_from_json("")


@pytest.mark.parametrize(
    "text",
    [
        '{"num_classes": 10, "num_classes": 5, "blocks": []}',
        '{"blocks": [{"type": "fc", "out_features": 10, "out_features": 5}]}',
    ],
    ids=["spec-field", "block-field"],
)
def test_field_written_twice_is_an_error(text: str) -> None:
    with pytest.raises(
        SpecError, match=r'field "\w+" is written twice in one object \(10 and 5\); '
    ):
        spec_from_json(text)


def test_json_nested_too_deeply_is_a_spec_error() -> None:
    text = '{"blocks": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(SpecError, match="nests lists or objects too deeply to read;"):
        spec_from_json(text)


def test_unicode_field_name_is_shown_as_written() -> None:
    with pytest.raises(SpecError, match='^spec: field "größe" is unknown;'):
        spec_from_json('{"größe": 1, "blocks": []}')


# ---------------------------------------------------------------- structure

STRUCTURE_ERRORS = [
    (
        "spatial-after-fc",
        (Conv(6, 5), FC(120), Act(Activation.RELU), Pool(PoolKind.MAX, 2), FC(10)),
        4,
        (
            "block 4 (pool): comes after the fc at block 2, but a pool needs a CxHxW "
            "input; move it before block 2"
        ),
    ),
    (
        "pad-after-fc",
        (FC(120), Pad(1), FC(10)),
        2,
        (
            "block 2 (pad): comes after the fc at block 1, but a pad needs a CxHxW "
            "input; move it before block 1"
        ),
    ),
    (
        "last-not-fc",
        (Conv(6, 5), Act(Activation.RELU), FC(10), Act(Activation.RELU)),
        4,
        (
            "block 4 (act): the last block must be an fc giving num_classes 10 "
            "features; add an fc with out_features 10 at the end"
        ),
    ),
    (
        "no-fc",
        (Conv(6, 5), Act(Activation.RELU), Pool(PoolKind.MAX, 2)),
        3,
        (
            "block 3 (pool): the last block must be an fc giving num_classes 10 "
            "features; add an fc with out_features 10 at the end"
        ),
    ),
    (
        "last-fc-wrong-size",
        (Conv(6, 5), Act(Activation.RELU), FC(120), FC(84)),
        4,
        (
            "block 4 (fc): out_features 84 must equal num_classes 10 in the last "
            "block; set it to 10"
        ),
    ),
]


@pytest.mark.parametrize(
    ("blocks", "index", "message"),
    [case[1:] for case in STRUCTURE_ERRORS],
    ids=[case[0] for case in STRUCTURE_ERRORS],
)
def test_structure_error_is_the_blocks_error_in_trace(
    blocks: tuple, index: int, message: str
) -> None:
    spec = Spec(blocks=blocks)
    assert str(structure_problem(spec)) == message

    report = trace(spec)
    assert report.error is not None
    assert (report.error.index, report.error.message) == (index, message)
    assert [row.index for row in report.rows] == list(range(1, index))
    assert [row.label for row in report.rows] == [
        describe(b) for b in blocks[: index - 1]
    ]


def test_structure_error_keeps_earlier_rows_with_their_shapes() -> None:
    spec = Spec(blocks=(Conv(6, 5), Act(Activation.RELU), FC(120), FC(84)))
    rows = trace(spec).rows
    assert [row.output_shape for row in rows] == [(6, 28, 28), (6, 28, 28), (120,)]


def test_no_blocks_is_an_error_in_trace() -> None:
    report = trace(Spec(blocks=()))
    assert report.rows == ()
    assert report.error is not None
    assert report.error.index == 1
    assert report.error.message == (
        "spec: there are no blocks; add at least an fc with out_features 10"
    )


def test_parsed_spec_without_blocks_is_reported_by_trace() -> None:
    spec = spec_from_dict({"num_classes": 4, "blocks": []})
    assert trace(spec).error.message == (
        "spec: there are no blocks; add at least an fc with out_features 4"
    )


def test_input_out_of_range_made_in_code_runs_no_block() -> None:
    report = trace(Spec(input=(3, 0, 32), blocks=(FC(10),)))
    assert report.rows == ()
    assert report.error.message == "spec: input height 0 is out of range; use 1 to 512"


def test_earlier_failing_block_wins_over_a_later_structure_error() -> None:
    spec = Spec(input=(3, 4, 4), blocks=(Conv(6, 5), FC(120), Pool(), FC(10)))
    error = trace(spec).error
    assert error.index == 1
    assert error.message.startswith("block 1 (conv): input 3x4x4 is smaller")


def test_structure_problem_none_for_every_preset() -> None:
    for preset in PRESETS.values():
        assert structure_problem(preset.spec) is None, preset.name


# ---------------------------------------------------------------- blocks made in code


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            Conv(0, 5),
            (
                "block 3 (conv): out_channels 0 is out of range; use a whole number "
                "from 1 to 1024"
            ),
        ),
        (Dropout(1.5), "block 3 (dropout): p 1.5 is out of range; use a number"),
        (Act("swish"), 'block 3 (act): fn "swish" is not allowed; use one of relu'),
        (Pool("min"), 'block 3 (pool): kind "min" is not allowed; use one of max'),
    ],
    ids=["conv-out-channels-0", "dropout-1.5", "act-swish", "pool-min"],
)
def test_block_made_in_code_with_bad_field_fails_in_trace(block, message) -> None:
    spec = Spec(blocks=(Conv(6, 5), Act(Activation.RELU), block, FC(10)))
    assert block_problem(block, 3) is not None

    report = trace(spec)
    assert report.error.index == 3
    assert report.error.message.startswith(message)
    assert len(report.rows) == 2


def test_plain_strings_become_enum_members() -> None:
    assert Act("tanh") == Act(Activation.TANH)
    assert Pool("avg", 3).kind is PoolKind.AVG
    assert isinstance(make_layer(Pool("avg", 3), (3, 8, 8)), nn.AvgPool2d)


# ---------------------------------------------------------------- round trip, defaults


@pytest.mark.parametrize("name", list(PRESETS))
def test_round_trip_through_json(name: str) -> None:
    spec = PRESETS[name].spec
    assert spec_from_json(spec.to_json()) == spec
    assert spec_from_json(spec.to_json(indent=None)) == spec
    assert spec_from_dict(json.loads(spec.to_json())) == spec


def test_json_form_writes_every_field_and_no_in_channels() -> None:
    data = json.loads(Spec(blocks=(Conv(6, 5), Pool(), FC(10))).to_json())
    assert data == {
        "input": [3, 32, 32],
        "num_classes": 10,
        "blocks": [
            {
                "type": "conv",
                "out_channels": 6,
                "kernel_size": 5,
                "stride": 1,
                "padding": 0,
                "dilation": 1,
            },
            {
                "type": "pool",
                "kind": "max",
                "kernel_size": 2,
                "stride": None,
                "padding": 0,
                "ceil_mode": False,
            },
            {"type": "fc", "out_features": 10},
        ],
    }


def test_omitted_fields_take_pytorchs_defaults() -> None:
    spec = spec_from_dict(
        {
            "blocks": [
                {"type": "conv", "out_channels": 6, "kernel_size": 5},
                {"type": "pool"},
                {"type": "dropout"},
                {"type": "act"},
                {"type": "fc", "out_features": 10},
            ]
        }
    )
    conv, pool, dropout, act, _ = spec.blocks
    reference = nn.Conv2d(3, 6, 5)
    assert (conv.stride, conv.padding, conv.dilation) == (
        reference.stride[0],
        reference.padding[0],
        reference.dilation[0],
    )
    assert (pool.kind, pool.kernel_size, pool.stride, pool.padding) == (
        PoolKind.MAX,
        2,
        None,
        0,
    )
    assert pool.ceil_mode is nn.MaxPool2d(2).ceil_mode
    assert dropout.p == nn.Dropout().p
    assert act.fn is Activation.RELU
    assert (spec.input, spec.num_classes) == ((3, 32, 32), 10)


@pytest.mark.parametrize(
    ("stride", "effective"), [(None, 3), (1, 1), (3, 3)], ids=["null", "1", "3"]
)
def test_pool_stride_null_means_kernel_size(stride, effective: int) -> None:
    pool = parse_block({"type": "pool", "kernel_size": 3, "stride": stride}, 1)
    assert pool.stride == stride
    assert pool.effective_stride == effective
    assert make_layer(pool, (3, 9, 9)).stride == nn.MaxPool2d(3, stride).stride


def test_block_to_dict_has_type_first() -> None:
    for block in (Pad(2), Conv(), Act(), Pool(), FC(), Dropout(), BatchNorm()):
        data = block_to_dict(block)
        assert next(iter(data)) == "type"
        assert parse_block(data, 1) == block


@pytest.mark.parametrize(
    ("block", "label"),
    [
        (Pad(2), "pad 2"),
        (Conv(6, 5), "conv 6 k5"),
        (Conv(16, 3, stride=2, padding=1, dilation=2), "conv 16 k3 s2 p1 d2"),
        (Act(Activation.LEAKY_RELU), "leaky_relu"),
        (Pool(PoolKind.MAX, 2), "pool max 2"),
        (Pool(PoolKind.AVG, 3, 2, 1, True), "pool avg 3 s2 p1 ceil"),
        (Pool(PoolKind.MAX, 2, 2), "pool max 2"),
        (FC(120), "fc 120"),
        (Dropout(0.25), "dropout 0.25"),
        (BatchNorm(), "batchnorm"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_describe(block, label: str) -> None:
    assert describe(block) == label


def test_replace_blocks_keeps_input_and_classes() -> None:
    spec = Spec(input=(1, 28, 28), num_classes=5, blocks=(FC(5),))
    new = spec.replace_blocks([Conv(4, 3), FC(5)])
    assert (new.input, new.num_classes, new.blocks) == (
        (1, 28, 28),
        5,
        (Conv(4, 3), FC(5)),
    )


def test_tutorial_lenet_json_matches_the_tutorial_net() -> None:
    types = [block["type"] for block in TUTORIAL_LENET.to_dict()["blocks"]]
    assert types == ["conv", "act", "pool", "conv", "act", "pool"] + [
        "fc",
        "act",
    ] * 2 + ["fc"]


def test_lists_become_tuples_so_equal_specs_are_equal() -> None:
    made = Spec(input=[1, 28, 28], num_classes=10, blocks=[Conv(4, 3), FC(10)])
    assert made == Spec((1, 28, 28), 10, (Conv(4, 3), FC(10)))
    assert hash(made) == hash(Spec((1, 28, 28), 10, (Conv(4, 3), FC(10))))


@pytest.mark.parametrize(
    ("block", "label"),
    [
        (Dropout("0.5"), "dropout 0.5"),
        (Act("swish"), "swish"),
        (Pool("min"), "pool min 2"),
    ],
    ids=["dropout-string", "act-unknown", "pool-unknown"],
)
def test_describe_shows_a_broken_field_as_it_is(block, label: str) -> None:
    assert describe(block) == label


def test_too_many_blocks_is_refused_before_parsing_them():
    data = {"blocks": [{"type": "act"}] * 501 + [{"type": "fc"}]}

    with pytest.raises(SpecError, match=r"spec: 502 blocks is more than the 500 "):
        spec_from_dict(data)
