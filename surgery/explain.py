"""Worked shape math for teaching: why each block's numbers are what they are.

Every formula is written out with the user's numbers and ends in the value PyTorch's
forward pass gives (trace() is the judge; tests compare the two).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from .export import layer_code
from .formulas import conv_out, effective_kernel, pool_out
from .layers import Shape, layer_name
from .shapes import ShapeReport, ShapeRow, format_shape
from .spec import (
    FC,
    SPATIAL_TYPES,
    Act,
    BatchNorm,
    Block,
    Conv,
    Dropout,
    Pad,
    Pool,
    PoolKind,
    SpecError,
    block_problem,
    describe,
    structure_problem,
)

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight")


@dataclass(frozen=True)
class BlockExplanation:
    """The worked numbers behind one valid row of the shape table."""

    index: int
    title: str
    formula_lines: list[str]
    params_line: str
    receptive_field: int
    jump: int
    budget: str
    border_note: str | None
    input_shape: Shape = ()
    output_shape: Shape = ()
    # The PyTorch layer with its in_channels / in_features written out.
    code: str = ""


@dataclass(frozen=True)
class FailureExplanation:
    """Why the failing block cannot run: the rule and the formula that breaks it."""

    index: int
    rule: str
    formula_lines: list[str]
    message: str


@dataclass(frozen=True)
class QuizResult:
    correct: bool
    expected: str
    message: str
    explanation: BlockExplanation


# ---------------------------------------------------------------- formulas


def _count(n: int) -> str:
    """Counts (Param #) with thousands separators, as torchinfo prints them."""
    return f"{n:,}"


def _sides(shape: Shape) -> list[tuple[str, int]]:
    return [("H", shape[1]), ("W", shape[2])]


def _conv_expr(size: int, block: Conv) -> str:
    k, s, p, d = block.kernel_size, block.stride, block.padding, block.dilation
    return f"floor(({size} + 2*{p} - {d}*({k}-1) - 1) / {s}) + 1"


def _pool_expr(size: int, block: Pool) -> tuple[str, int]:
    """PyTorch's pooling formula with the numbers, and the value it gives."""
    k, s, p = block.kernel_size, block.effective_stride, block.padding
    rounding = "ceil" if block.ceil_mode else "floor"
    expr = f"{rounding}(({size} + 2*{p} - {k}) / {s}) + 1"
    out = pool_out(size, k, s, p, block.ceil_mode)
    span = size + 2 * p - k
    if block.ceil_mode and span >= 0 and out < math.ceil(span / s) + 1:
        expr += " - 1"
    return expr, out


def _side_lines(in_shape: Shape, exprs: list[tuple[str, int]]) -> list[str]:
    """'H_out = W_out = expr = n' for square inputs, else one line per side."""
    if in_shape[1] == in_shape[2]:
        expr, out = exprs[0]
        return [f"H_out = W_out = {expr} = {out}"]
    return [
        f"{side}_out = {expr} = {out}"
        for (side, _), (expr, out) in zip(_sides(in_shape), exprs)
    ]


def _conv_lines(block: Conv, in_shape: Shape, out_shape: Shape) -> list[str]:
    exprs = [
        (_conv_expr(size, block), out)
        for (_, size), out in zip(_sides(in_shape), out_shape[1:])
    ]
    lines = _side_lines(in_shape, exprs)
    return lines + [f"C_out = out_channels = {block.out_channels}"]


def _pool_lines(block: Pool, in_shape: Shape) -> list[str]:
    exprs = [_pool_expr(size, block) for _, size in _sides(in_shape)]
    lines = _side_lines(in_shape, exprs)
    k, p = block.kernel_size, block.padding
    if any(expr.endswith(" - 1") for expr, _ in exprs):
        lines.append(
            "(- 1: with ceil_mode a last window that would start in the right "
            "padding is dropped)"
        )
    if p:
        lines.append(f"padding {p} <= kernel_size/2 = {k}/2 = {k / 2:g}: allowed")
        if block.kind is PoolKind.AVG:
            lines.append(
                "avg pool counts the padded zeros in each average "
                "(count_include_pad=True)"
            )
    if block.stride is None:
        lines.append(f"stride is not set, so it equals kernel_size {k}")
    lines.append(f"C_out = C_in = {in_shape[0]} (a pool works on each channel)")
    return lines


def _pad_lines(block: Pad, in_shape: Shape) -> list[str]:
    p = block.padding
    if in_shape[1] == in_shape[2]:
        size = in_shape[1]
        return [
            (
                f"H_out = W_out: {size + 2 * p} = {size} + {p} + {p} "
                f"({p} zero rows on top and bottom, {p} zero columns left and right)"
            )
        ]
    return [
        (
            f"H_out: {in_shape[1] + 2 * p} = {in_shape[1]} + {p} + {p} "
            f"({p} zero rows on top and bottom)"
        ),
        (
            f"W_out: {in_shape[2] + 2 * p} = {in_shape[2]} + {p} + {p} "
            f"({p} zero columns left and right)"
        ),
    ]


def _fc_lines(report: ShapeReport, row: ShapeRow) -> list[str]:
    before = _shape_before(report, row.index)
    lines = []
    if len(before) == 3:
        c, h, w = before
        lines.append(
            f"in_features {row.input_shape[0]} = flatten of {format_shape(before)} "
            f"({c} x {h} x {w} = {c * h * w})"
        )
    else:
        source = _feature_source(report, row.index)
        lines.append(f"in_features {row.input_shape[0]} = the features from {source}")
    block = report.spec.blocks[row.index - 1]
    lines.append(f"out_features = {block.out_features}")
    return lines


def _same_shape_lines(block: Block, row: ShapeRow) -> list[str]:
    shape = format_shape(row.input_shape)
    line = f"shape unchanged: {shape} -> {format_shape(row.output_shape)}"
    if isinstance(block, Act):
        why = f"{block.fn.value} acts on each value on its own"
    elif isinstance(block, Dropout):
        keep = 1 / (1 - block.p)
        why = (
            f"while training, dropout zeroes each value with p {block.p:g} and "
            f"scales the rest by 1/(1-p) = {keep:.3g}; in eval mode it does nothing"
        )
    else:
        what = "channels" if len(row.input_shape) == 3 else "features"
        why = (
            f"batchnorm normalises each of the {row.input_shape[0]} {what} "
            "over the batch, then scales and shifts it"
        )
    return [line, why]


def _formula_lines(report: ShapeReport, row: ShapeRow) -> list[str]:
    block = report.spec.blocks[row.index - 1]
    if isinstance(block, Conv):
        return _conv_lines(block, row.input_shape, row.output_shape)
    if isinstance(block, Pool):
        return _pool_lines(block, row.input_shape)
    if isinstance(block, Pad):
        return _pad_lines(block, row.input_shape)
    if isinstance(block, FC):
        return _fc_lines(report, row)
    return _same_shape_lines(block, row)


def _shape_before(report: ShapeReport, index: int) -> Shape:
    """The shape reaching block `index` before any automatic flatten."""
    return report.rows[index - 2].output_shape if index > 1 else report.spec.input


def _feature_source(report: ShapeReport, index: int) -> str:
    """The fc whose out_features reach block `index`, with what came between."""
    for row in reversed(report.rows[: index - 1]):
        if row.type == "fc":
            return row.name
    return "the block before"


# ---------------------------------------------------------------- params


def params_line(block: Block, row: ShapeRow) -> str:
    """Param # worked out, e.g. '6 x (3 x 5 x 5) + 6 = 456'."""
    if isinstance(block, Conv):
        c_in, k, c_out = row.input_shape[0], block.kernel_size, block.out_channels
        return (
            f"{c_out} x ({c_in} x {k} x {k}) + {c_out} = {_count(row.params)} "
            "(weights + biases)"
        )
    if isinstance(block, FC):
        f_in, f_out = row.input_shape[0], block.out_features
        return f"{f_out} x {f_in} + {f_out} = {_count(row.params)} (weights + biases)"
    if isinstance(block, BatchNorm):
        n = row.input_shape[0]
        return f"2 x {n} = {_count(row.params)} (weight and bias)"
    return "0 (no weights)"


# ---------------------------------------------------------------- receptive field


def receptive_fields(report: ShapeReport) -> list[tuple[int, int]]:
    """(receptive field, jump) of each row's output, in input pixels.

    Each window of span e widens the field by (e-1) times the jump so far; the jump
    is the product of strides. An fc sees the whole map that was flattened.
    """
    return list(_fields(report))


def _fields(report: ShapeReport) -> Iterator[tuple[int, int]]:
    """receptive_fields one row at a time, so a caller can stop at its block."""
    rf, jump = 1, 1
    for row in report.rows:
        block = report.spec.blocks[row.index - 1]
        if isinstance(block, Conv):
            rf += (effective_kernel(block.kernel_size, block.dilation) - 1) * jump
            jump *= block.stride
        elif isinstance(block, Pool):
            rf += (block.kernel_size - 1) * jump
            jump *= block.effective_stride
        elif isinstance(block, FC) and len(_shape_before(report, row.index)) == 3:
            side = max(_shape_before(report, row.index)[1:])
            rf += (side - 1) * jump
        yield rf, jump


# ---------------------------------------------------------------- budget


def _word(n: int) -> str:
    return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)


def budget_sentence(shape: Shape) -> str:
    """How many more 2x2 stride-2 pools the map allows before a side reaches 1."""
    if len(shape) != 3:
        return "none left: the map was flattened into features"
    h, w = shape[1:]
    n = 0
    while min(h, w) >= 2:
        h, w, n = h // 2, w // 2, n + 1
    if n == 0:
        return f"no more 2x2 pools fit: the map is already {shape[1]}x{shape[2]}"
    pools = "pool fits" if n == 1 else "pools fit"
    return f"{_word(n)} more 2x2 {pools} before {h}x{w}"


# ---------------------------------------------------------------- border


@dataclass(frozen=True)
class Window:
    """A sliding window along one side: kernel taps `dilation` apart."""

    kernel_size: int
    stride: int
    padding: int
    dilation: int = 1

    @property
    def span(self) -> int:
        return effective_kernel(self.kernel_size, self.dilation)


def covered_rows(size: int, window: Window, out: int) -> set[int]:
    """Input rows (0..size-1) that at least one of the `out` windows reads."""
    rows = set()
    for i in range(out):
        start = i * window.stride - window.padding
        taps = range(start, start + window.span, window.dilation)
        rows.update(r for r in taps if 0 <= r < size)
    return rows


def dropped_rows(size: int, window: Window, out: int) -> list[int]:
    """Input rows no window reads: the floor drops them, or strides skip them."""
    return sorted(set(range(size)) - covered_rows(size, window, out))


def _ranges(rows: list[int]) -> str:
    """'14' or '13-14' or '1, 3, 5' for a list of rows."""
    if len(rows) > 1 and rows[-1] - rows[0] == len(rows) - 1:
        return f"{rows[0]}-{rows[-1]}"
    if len(rows) > 4:
        return ", ".join(str(r) for r in rows[:3]) + f", ... {rows[-1]}"
    return ", ".join(str(r) for r in rows)


def block_window(block: Block) -> Window | None:
    """The sliding window of a conv or pool, else None."""
    if isinstance(block, Conv):
        return Window(block.kernel_size, block.stride, block.padding, block.dilation)
    if isinstance(block, Pool):
        return Window(block.kernel_size, block.effective_stride, block.padding)
    return None


def _windows_words(window: Window) -> str:
    """'windows of 2 at stride 2', naming the dilation when there is one."""
    span = f"{window.span}"
    if window.dilation > 1:
        span += f" (kernel_size {window.kernel_size} at dilation {window.dilation})"
    return f"windows of {span} at stride {window.stride}"


def _side_note(block: Block, size: int, out: int, noun: str) -> str | None:
    """The border note for one side: rows or columns no window reads."""
    window = block_window(block)
    last = (out - 1) * window.stride - window.padding + window.span - 1
    dropped = dropped_rows(size, window, out)
    where = f"input {size}" + (
        f" with padding {window.padding}" if window.padding else ""
    )
    head = f"{where}: {_windows_words(window)}"
    if any(r < last for r in dropped):
        return (
            f"{head} never read {noun} {_ranges(dropped)} ({_gap_reason(window)})"
            + _ceil_hint(block, size, out)
        )
    if dropped:
        cover = f"-{window.padding} to {last}" if window.padding else f"0-{last}"
        verb = "is dropped" if len(dropped) == 1 else "are dropped"
        plural = noun if len(dropped) > 1 else noun[:-1]
        return (
            f"{head} cover {noun} {cover}; {plural} {_ranges(dropped)} {verb}"
            + _ceil_hint(block, size, out)
        )
    overhang = last - (size - 1 + window.padding)
    if overhang <= 0:
        return None
    unit = noun if overhang > 1 else noun[:-1]
    return (
        f"{where}: ceil_mode adds a last window that reaches {overhang} {unit} "
        "past the input and its padding; it pools only the values inside"
    )


def _gap_reason(window: Window) -> str:
    if window.stride > window.span:
        return f"stride {window.stride} is larger than the window {window.span}"
    return (
        f"dilation {window.dilation} leaves gaps that stride {window.stride} "
        "never fills"
    )


def _ceil_hint(block: Block, size: int, out: int) -> str:
    if not isinstance(block, Pool) or block.ceil_mode:
        return ""
    k, s, p = block.kernel_size, block.effective_stride, block.padding
    ceil_out = pool_out(size, k, s, p, True)
    if ceil_out <= out:
        return ""
    return f"; ceil_mode would keep it and give {ceil_out}"


def border_note(block: Block, in_shape: Shape, out_shape: Shape) -> str | None:
    """Which border rows/columns PyTorch's floor drops, or None for exact tiling."""
    if block_window(block) is None or len(in_shape) != 3:
        return None
    notes = [
        _side_note(block, size, out, noun)
        for size, out, noun in zip(in_shape[1:], out_shape[1:], ("rows", "columns"))
    ]
    if in_shape[1] == in_shape[2] and notes[0] is not None:
        return notes[0] + "; the same for columns"
    kept = [note for note in notes if note is not None]
    return "; ".join(kept) if kept else None


# ---------------------------------------------------------------- public


def _row(report: ShapeReport, index: int) -> ShapeRow:
    if 1 <= index <= len(report.rows):
        return report.rows[index - 1]
    if not report.rows:
        raise ValueError(
            f"block {index} has no output shape to explain: the stack fails at "
            f"block {report.error.index}; fix that block first"
        )
    where = (
        f"the stack fails at block {report.error.index}"
        if report.error
        else f"the stack has {len(report.rows)} blocks"
    )
    raise ValueError(
        f"block {index} has no output shape to explain: {where}; "
        f"pick a block from 1 to {len(report.rows)}"
    )


def explain_block(report: ShapeReport, index: int) -> BlockExplanation:
    """The worked shape math for block `index` (1-based) of a traced stack.

    Args:
        report: trace(spec)'s result; only the rows it reached can be explained.
        index: the 1-based block number, as in the shape table.
    """
    row = _row(report, index)
    block = report.spec.blocks[index - 1]
    rf, jump = next(islice(_fields(report), index - 1, None))
    title = (
        f"Block {index}: {row.name} ({describe(block)}), "
        f"{format_shape(row.input_shape)} -> {format_shape(row.output_shape)}"
    )
    return BlockExplanation(
        index=index,
        title=title,
        formula_lines=_formula_lines(report, row),
        params_line=params_line(block, row),
        receptive_field=rf,
        jump=jump,
        budget=budget_sentence(row.output_shape),
        border_note=border_note(block, row.input_shape, row.output_shape),
        input_shape=row.input_shape,
        output_shape=row.output_shape,
        code=layer_code(block, row.input_shape),
    )


def flatten_derivation(report: ShapeReport) -> str | None:
    """'32 -> 28 -> 14 -> 10 -> 5, so 16 x 5 x 5 = 400', or None before any fc."""
    if report.flatten is None:
        return None
    first_fc = _first_fc(report.spec.blocks)
    c, h, w = _shape_before(report, first_fc)
    sizes = [_size(report.spec.input)]
    for row in report.rows[: first_fc - 1]:
        if row.output_shape[1:] != row.input_shape[1:]:
            sizes.append(_size(row.output_shape))
    return f"{' -> '.join(sizes)}, so {c} x {h} x {w} = {report.flatten:,}"


def _first_fc(blocks: tuple[Block, ...]) -> int:
    """The 1-based position of the first fc; callers know there is one."""
    return next(i for i, b in enumerate(blocks, start=1) if isinstance(b, FC))


def _size(shape: Shape) -> str:
    return str(shape[1]) if shape[1] == shape[2] else f"{shape[1]}x{shape[2]}"


# ---------------------------------------------------------------- failures


def explain_failure(report: ShapeReport) -> FailureExplanation | None:
    """The rule the failing block breaks, with the numbers; None for a valid stack."""
    if report.error is None:
        return None
    index, message = report.error.index, report.error.message
    if report.error.structural:
        rule, lines = _structure_rule(report, structure_problem(report.spec))
        return FailureExplanation(index, rule, lines, message)
    block = report.spec.blocks[index - 1]
    field_problem = block_problem(block, index)
    if field_problem is not None:
        rule = "every field must be in its allowed range"
        return FailureExplanation(index, rule, [str(field_problem)], message)
    rule, lines = _shape_rule(block, _shape_before(report, index))
    return FailureExplanation(index, rule, lines, message)


def _structure_rule(report: ShapeReport, problem: SpecError) -> tuple[str, list[str]]:
    spec = report.spec
    if not spec.blocks:
        return "a stack needs at least one block: an fc giving num_classes", [
            f"blocks: none; needed: fc with out_features {spec.num_classes}"
        ]
    if problem.index is None:
        return "input and num_classes must be in range", [str(problem)]
    block = spec.blocks[problem.index - 1]
    after_fc = any(isinstance(b, FC) for b in spec.blocks[: problem.index - 1])
    if block.type in SPATIAL_TYPES and after_fc:
        return _after_fc_rule(report, problem.index, block)
    last = spec.blocks[-1]
    if isinstance(last, FC):
        return "last block must be an fc with num_classes features", [
            f"out_features {last.out_features} != num_classes {spec.num_classes}",
        ]
    return "last block must be an fc with num_classes features", [
        (
            f"last block: {describe(last)} (not an fc); the logits need an fc with "
            f"out_features {spec.num_classes} = num_classes"
        ),
    ]


def _after_fc_rule(report: ShapeReport, index: int, block: Block) -> tuple:
    blocks = report.spec.blocks
    first_fc = _first_fc(blocks)
    before = _shape_before(report, first_fc)
    name = layer_name(blocks[first_fc - 1], 1)
    lines = [
        (
            f"{name} (block {first_fc}) flattens {format_shape(before)} into "
            f"{math.prod(before)} features"
        ),
        (
            f"a {block.type} needs a CxHxW input, but block {index} gets a flat "
            "vector of features"
        ),
    ]
    return (
        "spatial block after fc: pad, conv and pool must come before the first fc",
        lines,
    )


def _shape_rule(block: Block, in_shape: Shape) -> tuple[str, list[str]]:
    if len(in_shape) != 3 or not isinstance(block, (Conv, Pool)):
        return "PyTorch refused this block", [
            f"{describe(block)} on a {format_shape(in_shape)} input"
        ]
    if isinstance(block, Pool) and 2 * block.padding > block.kernel_size:
        k, p = block.kernel_size, block.padding
        return "pool padding must be at most kernel_size/2", [
            f"padding {p} > kernel_size/2 = {k}/2 = {k / 2:g}"
        ]
    if isinstance(block, Conv):
        k, s, p, d = block.kernel_size, block.stride, block.padding, block.dilation
        exprs = [
            (_conv_expr(size, block), conv_out(size, k, s, p, d))
            for _, size in _sides(in_shape)
        ]
        rule = (
            "a conv needs H_out and W_out >= 1: the kernel span d*(k-1)+1 must fit "
            "the padded input"
        )
    else:
        exprs = [_pool_expr(size, block) for _, size in _sides(in_shape)]
        rule = (
            "a pool needs H_out and W_out >= 1: kernel_size must fit the padded input"
        )
    lines = _side_lines(in_shape, exprs)
    lines = [line + (" < 1" if _ends_below_one(line) else "") for line in lines]
    return rule, lines


def _ends_below_one(line: str) -> bool:
    return int(line.rsplit("= ", 1)[1]) < 1


# ---------------------------------------------------------------- quiz

ANSWER_FORMAT = "write it as CxHxW such as 6x28x28, or a feature count such as 400"


def parse_shape(answer: str) -> tuple[int, ...] | None:
    """(6, 28, 28) from '6x28x28', '6 x 28 x 28', '(6, 28, 28)', '[6,28,28]'."""
    text = answer.strip().lower()
    text = re.sub(r"^torch\.size\(\s*\[(.*)\]\s*\)$", r"\1", text)
    text = text.strip("()[] ").rstrip(",")
    parts = [p for p in re.split(r"\s*[x×*,]\s*|\s+", text) if p]
    if not parts or not all(p.isdigit() for p in parts) or len(parts) > 4:
        return None
    return tuple(int(p) for p in parts)


def check_answer(report: ShapeReport, index: int, answer: str) -> QuizResult:
    """Grade a student's guess at block `index`'s Output Shape (batch left out)."""
    explanation = explain_block(report, index)
    expected = explanation.output_shape
    shown = format_shape(expected)
    guess = parse_shape(answer)
    if guess is None:
        message = f"Could not read {answer.strip()!r} as a shape; {ANSWER_FORMAT}."
        return QuizResult(False, shown, message, explanation)
    correct = guess == expected
    return QuizResult(
        correct, shown, _verdict(guess, expected, report, index), explanation
    )


def _verdict(guess: tuple, expected: Shape, report: ShapeReport, index: int) -> str:
    name = report.rows[index - 1].name
    shown = format_shape(expected)
    if guess == expected:
        return f"Correct: {name} gives {shown}."
    if len(guess) == len(expected) + 1 and guess[1:] == expected:
        return f"Almost: leave out the batch size {guess[0]}; {name} gives {shown}."
    if len(guess) != len(expected):
        kind = "CxHxW" if len(expected) == 3 else "a feature count"
        return f"Not quite: {name} gives {kind}, {shown}; see the formula below."
    if len(expected) == 3 and guess[0] == expected[0]:
        return (
            f"Not quite: the channels ({expected[0]}) are right, but H x W is "
            f"{expected[1]}x{expected[2]}, not {guess[1]}x{guess[2]}; "
            "see the formula below."
        )
    if len(expected) == 3 and guess[1:] == expected[1:]:
        return (
            f"Not quite: H x W is right, but {name} gives {expected[0]} channels "
            f"(out_channels), not {guess[0]}."
        )
    return f"Not quite: {name} gives {shown}, not {format_shape(guess)}."
