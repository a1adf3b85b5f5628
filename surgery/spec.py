"""The architecture file: block specs, their JSON form, and validation of fields.

A spec is an input shape, a class count and a list of blocks. Field names are
PyTorch's; omitted fields take PyTorch's defaults. `in_channels` and `in_features`
are never written: they follow from the block before.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any


class SpecError(ValueError):
    """A spec that breaks a rule; `index` is the 1-based block number, if any."""

    def __init__(
        self, message: str, index: int | None = None, field: str | None = None
    ):
        super().__init__(message)
        self.index = index
        self.field = field


class Activation(str, Enum):
    RELU = "relu"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    GELU = "gelu"
    LEAKY_RELU = "leaky_relu"
    ELU = "elu"


class PoolKind(str, Enum):
    MAX = "max"
    AVG = "avg"


def _as_enum(enum: type[Enum], value: Any) -> Any:
    """The member for a valid plain string ("max" -> PoolKind.MAX); anything else
    is kept as it is, for `block_problem` to report."""
    if isinstance(value, str) and value in enum._value2member_map_:
        return enum(value)
    return value


@dataclass(frozen=True)
class Pad:
    """nn.ZeroPad2d: `padding` zeros on each of the four sides."""

    padding: int = 0
    type = "pad"


@dataclass(frozen=True)
class Conv:
    """nn.Conv2d with square kernel, stride, padding and dilation."""

    out_channels: int = 6
    kernel_size: int = 5
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    type = "conv"


@dataclass(frozen=True)
class Act:
    """An activation function applied element-wise."""

    fn: Activation = Activation.RELU
    type = "act"

    def __post_init__(self) -> None:
        object.__setattr__(self, "fn", _as_enum(Activation, self.fn))


@dataclass(frozen=True)
class Pool:
    """nn.MaxPool2d or nn.AvgPool2d; `stride` None means the kernel size."""

    kind: PoolKind = PoolKind.MAX
    kernel_size: int = 2
    stride: int | None = None
    padding: int = 0
    ceil_mode: bool = False
    type = "pool"

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _as_enum(PoolKind, self.kind))

    @property
    def effective_stride(self) -> int:
        return self.kernel_size if self.stride is None else self.stride


@dataclass(frozen=True)
class FC:
    """nn.Linear; a flatten is put before the first one automatically."""

    out_features: int = 10
    type = "fc"


@dataclass(frozen=True)
class Dropout:
    """nn.Dropout with drop probability `p`."""

    p: float = 0.5
    type = "dropout"


@dataclass(frozen=True)
class BatchNorm:
    """nn.BatchNorm2d on CxHxW inputs, nn.BatchNorm1d on features."""

    type = "batchnorm"


Block = Pad | Conv | Act | Pool | FC | Dropout | BatchNorm
BLOCK_TYPES: dict[str, type] = {
    cls.type: cls for cls in (Pad, Conv, Act, Pool, FC, Dropout, BatchNorm)
}
SPATIAL_TYPES = ("pad", "conv", "pool")

# (low, high) inclusive for integers; the same limits drive the app's widgets.
INT_RANGES: dict[str, tuple[int, int]] = {
    "out_channels": (1, 1024),
    "kernel_size": (1, 32),
    "stride": (1, 32),
    "padding": (0, 32),
    "dilation": (1, 16),
    "out_features": (1, 65536),
}
INPUT_RANGES = {"channels": (1, 64), "size": (1, 512), "num_classes": (2, 1000)}
# Far beyond any net that trains here, and it keeps a hostile file from costing
# seconds and gigabytes before its first error.
MAX_BLOCKS = 500


@dataclass(frozen=True)
class Spec:
    """A whole network: input shape (C, H, W), class count and blocks."""

    input: tuple[int, int, int] = (3, 32, 32)
    num_classes: int = 10
    blocks: tuple[Block, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # Lists from code or widgets become tuples, so equal specs compare and
        # hash equal; other values are left for structure_problem to report.
        if isinstance(self.input, list):
            object.__setattr__(self, "input", tuple(self.input))
        if isinstance(self.blocks, list):
            object.__setattr__(self, "blocks", tuple(self.blocks))

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": list(self.input),
            "num_classes": self.num_classes,
            "blocks": [block_to_dict(b) for b in self.blocks],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def replace_blocks(self, blocks: list[Block] | tuple[Block, ...]) -> Spec:
        return Spec(self.input, self.num_classes, tuple(blocks))


def block_to_dict(block: Block) -> dict[str, Any]:
    """The block's JSON object: `type` first, then every field with its value."""
    out: dict[str, Any] = {"type": block.type}
    for key, value in asdict(block).items():
        out[key] = value.value if isinstance(value, Enum) else value
    return out


def describe(block: Block) -> str:
    """A short label such as 'conv 6 k5' or 'pool max 2'; any field value, even one
    that breaks its rule, is shown as it is."""
    if isinstance(block, Pad):
        return f"pad {block.padding}"
    if isinstance(block, Conv):
        extra = "".join(
            f" {name[0]}{value}"
            for name, value in (("stride", block.stride), ("padding", block.padding))
            if value != (1 if name == "stride" else 0)
        )
        dil = f" d{block.dilation}" if block.dilation != 1 else ""
        return f"conv {block.out_channels} k{block.kernel_size}{extra}{dil}"
    if isinstance(block, Act):
        return _label(block.fn)
    if isinstance(block, Pool):
        return _describe_pool(block)
    if isinstance(block, FC):
        return f"fc {block.out_features}"
    if isinstance(block, Dropout):
        return f"dropout {_label(block.p)}"
    return "batchnorm"


def _describe_pool(block: Pool) -> str:
    stride = "" if block.stride in (None, block.kernel_size) else f" s{block.stride}"
    pad = f" p{block.padding}" if block.padding else ""
    ceil = " ceil" if block.ceil_mode is True else ""
    return f"pool {_label(block.kind)} {block.kernel_size}{stride}{pad}{ceil}"


def _label(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ---------------------------------------------------------------- parsing


def _show(value: Any) -> str:
    """A value as it is written in the JSON file: "6", true, null."""
    if isinstance(value, Enum):
        value = value.value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _where(index: int | None, type_name: str | None) -> str:
    if index is None:
        return "spec"
    return f"block {index} ({type_name})" if type_name else f"block {index}"


def _parse_int(value: Any, name: str, where: str, index: int | None) -> int:
    low, high = INT_RANGES[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(
            f"{where}: {name} {_show(value)} is not an integer; "
            f"use a whole number from {low} to {high}",
            index,
            name,
        )
    if not low <= value <= high:
        raise SpecError(
            f"{where}: {name} {value} is out of range; "
            f"use a whole number from {low} to {high}",
            index,
            name,
        )
    return value


def _parse_field(cls: type, name: str, value: Any, where: str, index: int) -> Any:
    if name in INT_RANGES:
        if name == "stride" and cls is Pool and value is None:
            return None
        return _parse_int(value, name, where, index)
    if name == "fn":
        return _parse_enum(Activation, value, name, where, index)
    if name == "kind":
        return _parse_enum(PoolKind, value, name, where, index)
    if name == "ceil_mode":
        if not isinstance(value, bool):
            raise SpecError(
                f"{where}: ceil_mode {_show(value)} is not a boolean; "
                "use true or false",
                index,
                name,
            )
        return value
    if name == "p":
        return _parse_p(value, where, index)
    raise AssertionError(f"no parser for field {name}")


def _parse_p(value: Any, where: str, index: int) -> float:
    rule = "use a number from 0 to less than 1 (0.5 is common)"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(
            f"{where}: p {_show(value)} is not a number; {rule}", index, "p"
        )
    if not 0 <= value < 1:
        raise SpecError(
            f"{where}: p {_show(value)} is out of range; {rule}", index, "p"
        )
    return float(value)


def _parse_enum(enum: type[Enum], value: Any, name: str, where: str, index: int) -> Any:
    allowed = [m.value for m in enum]
    if isinstance(value, enum):
        return value
    if value not in allowed:
        raise SpecError(
            f"{where}: {name} {_show(value)} is not allowed; "
            f"use one of {', '.join(allowed)}",
            index,
            name,
        )
    return enum(value)


def parse_block(data: Any, index: int) -> Block:
    """One block from its JSON object; `index` is 1-based, for messages."""
    if not isinstance(data, dict):
        raise SpecError(
            f"block {index}: {_show(data)} is not an object; write it as "
            '{"type": "conv", ...}',
            index,
        )
    type_name = data.get("type")
    if type_name not in BLOCK_TYPES:
        told = "is missing" if "type" not in data else f"{_show(type_name)} is unknown"
        raise SpecError(
            f"block {index}: type {told}; use one of {', '.join(BLOCK_TYPES)}",
            index,
            "type",
        )
    cls = BLOCK_TYPES[type_name]
    where = _where(index, type_name)
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(known) - {"type"})
    if unknown:
        allowed = ", ".join(known) if known else "no fields besides type"
        raise SpecError(
            f"{where}: field {_show(unknown[0])} is unknown; "
            f"{type_name} takes {allowed}",
            index,
            unknown[0],
        )
    values = {
        name: _parse_field(cls, name, data[name], where, index)
        for name in known
        if name in data
    }
    return cls(**values)


def block_problem(block: Block, index: int) -> SpecError | None:
    """The first field of a block made in code that breaks the rule its JSON form
    would be held to (a range, a type, a choice), or None."""
    try:
        parse_block(block_to_dict(block), index)
    except SpecError as error:
        return error
    return None


def _parse_input(data: Any) -> tuple[int, int, int]:
    ok = (
        isinstance(data, (list, tuple))
        and len(data) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) for v in data)
    )
    if not ok:
        raise SpecError(
            f"spec: input {_show(data)} is not [channels, height, width]; "
            "write it as three integers such as [3, 32, 32]",
            field="input",
        )
    channels, height, width = data
    c_low, c_high = INPUT_RANGES["channels"]
    s_low, s_high = INPUT_RANGES["size"]
    if not c_low <= channels <= c_high:
        raise SpecError(
            f"spec: input channels {channels} is out of range; "
            f"use {c_low} to {c_high} (3 for colour, 1 for grey)",
            field="input",
        )
    for name, size in (("height", height), ("width", width)):
        if not s_low <= size <= s_high:
            raise SpecError(
                f"spec: input {name} {size} is out of range; use {s_low} to {s_high}",
                field="input",
            )
    return (channels, height, width)


def _parse_num_classes(value: Any) -> int:
    low, high = INPUT_RANGES["num_classes"]
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not low <= value <= high
    ):
        raise SpecError(
            f"spec: num_classes {_show(value)} is out of range; use a whole number "
            f"from {low} to {high} (10 for CIFAR-10)",
            field="num_classes",
        )
    return value


def spec_from_dict(data: Any) -> Spec:
    """A Spec from the parsed JSON; raises SpecError naming block, field and value."""
    if not isinstance(data, dict):
        raise SpecError(
            "spec: the file is not a JSON object; it needs "
            '{"input": [3, 32, 32], "num_classes": 10, "blocks": [...]}'
        )
    unknown = sorted(set(data) - {"input", "num_classes", "blocks"})
    if unknown:
        raise SpecError(
            f"spec: field {_show(unknown[0])} is unknown; "
            "a spec takes input, num_classes and blocks",
            field=unknown[0],
        )
    input_shape = _parse_input(data.get("input", [3, 32, 32]))
    num_classes = _parse_num_classes(data.get("num_classes", 10))
    blocks = _parse_blocks_list(data, num_classes)
    return Spec(
        input=input_shape,
        num_classes=num_classes,
        blocks=tuple(parse_block(b, i) for i, b in enumerate(blocks, start=1)),
    )


def _parse_blocks_list(data: dict, num_classes: int) -> list:
    if "blocks" not in data:
        last = f'{{"type": "fc", "out_features": {num_classes}}}'
        raise SpecError(
            'spec: blocks is missing; add "blocks": [...] with the layers in '
            f"order, ending with {last}",
            field="blocks",
        )
    blocks = data["blocks"]
    if not isinstance(blocks, list):
        raise SpecError(
            f"spec: blocks {_show(blocks)} is not a list; write the blocks as a "
            "JSON list",
            field="blocks",
        )
    if len(blocks) > MAX_BLOCKS:
        raise SpecError(
            f"spec: {len(blocks):,} blocks is more than the {MAX_BLOCKS} allowed; "
            "split the net or remove blocks",
            field="blocks",
        )
    return blocks


def spec_from_json(text: str) -> Spec:
    """A Spec from JSON text; invalid JSON is a SpecError with line and column."""
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise SpecError(
            f"spec: the text is not valid JSON ({exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}); fix the JSON syntax there"
        ) from None
    except RecursionError:
        raise SpecError(
            "spec: the JSON nests lists or objects too deeply to read; a spec "
            "is one object holding a list of block objects; remove the extra brackets"
        ) from None
    return spec_from_dict(data)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's fields; a field written twice is an error, not "last wins"."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise SpecError(
                f"spec: field {_show(key)} is written twice in one object "
                f"({_show(data[key])} and {_show(value)}); keep only one of them"
            )
        data[key] = value
    return data


def structure_problem(spec: Spec) -> SpecError | None:
    """The first broken rule of the spec as a whole, or None: the input shape and
    num_classes in range, at least one block, spatial blocks (pad, conv, pool)
    before the first fc, and an fc giving num_classes last."""
    try:
        _parse_input(spec.input)
        _parse_num_classes(spec.num_classes)
    except SpecError as error:
        return error
    if not spec.blocks:
        return SpecError(
            "spec: there are no blocks; add at least an fc with out_features "
            f"{spec.num_classes}",
            field="blocks",
        )
    return _order_problem(spec.blocks) or _last_block_problem(spec)


def _order_problem(blocks: tuple[Block, ...]) -> SpecError | None:
    """A pad, conv or pool after the first fc, which has flattened the images."""
    first_fc = next(
        (i for i, b in enumerate(blocks, start=1) if isinstance(b, FC)), None
    )
    if first_fc is None:
        return None
    for i, block in enumerate(blocks[first_fc:], start=first_fc + 1):
        if block.type in SPATIAL_TYPES:
            return SpecError(
                f"block {i} ({block.type}): comes after the fc at block "
                f"{first_fc}, but a {block.type} needs a CxHxW input; "
                f"move it before block {first_fc}",
                i,
            )
    return None


def _last_block_problem(spec: Spec) -> SpecError | None:
    last = spec.blocks[-1]
    n = len(spec.blocks)
    if not isinstance(last, FC):
        return SpecError(
            f"block {n} ({last.type}): the last block must be an fc giving "
            f"num_classes {spec.num_classes} features; add an fc with "
            f"out_features {spec.num_classes} at the end",
            n,
        )
    if last.out_features != spec.num_classes:
        return SpecError(
            f"block {n} (fc): out_features {last.out_features} must equal "
            f"num_classes {spec.num_classes} in the last block; set it to "
            f"{spec.num_classes}",
            n,
            "out_features",
        )
    return None
