"""One-click repairs for a stack that does not run.

Each candidate is a whole new Spec. A quick shape walk with PyTorch's size formulas
picks, for each kind of repair, the mildest value that works; trace() then confirms
every fix before it is offered. Only fixes that make the whole stack valid are
offered; when none does, those that move the first error to a later block are
offered, marked partial.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from .diff import block_names
from .formulas import conv_out, effective_kernel, pool_out
from .layers import Shape
from .shapes import ShapeReport, trace
from .spec import (
    FC,
    INT_RANGES,
    SPATIAL_TYPES,
    Act,
    Block,
    Conv,
    Pad,
    Pool,
    Spec,
    block_problem,
    structure_problem,
)

# How far each search goes: enough for any stack the widgets allow.
MAX_PADDING = INT_RANGES["padding"][1]
# Repairs of earlier blocks, nearest first; more would bury the local fixes.
MAX_UPSTREAM_FIXES = 3


@dataclass(frozen=True)
class Fix:
    """A repair: `label` says what it changes; `spec` is the whole repaired stack.

    `partial` fixes do not make the stack valid but move the first error to block
    `error_index` of the new spec (None when the stack becomes valid).
    """

    label: str
    spec: Spec
    partial: bool = False
    error_index: int | None = None


@dataclass(frozen=True)
class _Candidate:
    label: str
    spec: Spec
    # The new 1-based position up to which blocks must now pass: the failing
    # block's new position, or the block before it if it was removed.
    anchor: int
    # Whether it edits a block before the failing one.
    upstream: bool = False
    # The new value of the edited field, for a field edit.
    value: object = None


# ---------------------------------------------------------------- quick check


def quick_error(spec: Spec) -> int | None:
    """The first failing block by PyTorch's size formulas, as trace() reports it."""
    problem = structure_problem(spec)
    stop = problem.index if problem is not None and problem.index else None
    shape: Shape = spec.input
    for index, block in enumerate(spec.blocks[: stop - 1 if stop else None], 1):
        if block_problem(block, index) is not None:
            return index
        shape = _next_shape(block, shape)
        if shape is None:
            return index
    if problem is not None:
        return problem.index or 1
    return None


def _next_shape(block: Block, shape: Shape) -> Shape | None:
    """The output shape, or None where PyTorch refuses."""
    if isinstance(block, FC):
        return (block.out_features,)
    if block.type not in SPATIAL_TYPES:
        return shape
    c, h, w = shape
    if isinstance(block, Pad):
        return (c, h + 2 * block.padding, w + 2 * block.padding)
    if isinstance(block, Conv):
        k, s, p, d = block.kernel_size, block.stride, block.padding, block.dilation
        sides = [conv_out(x, k, s, p, d) for x in (h, w)]
        c = block.out_channels
    else:
        k, s, p = block.kernel_size, block.effective_stride, block.padding
        if 2 * p > k:
            return None
        sides = [pool_out(x, k, s, p, block.ceil_mode) for x in (h, w)]
    return (c, *sides) if min(sides) >= 1 else None


def _shape_at(spec: Spec, index: int) -> Shape:
    """The shape reaching block `index` (1-based), blocks before assumed valid."""
    shape: Shape = spec.input
    for block in spec.blocks[: index - 1]:
        shape = _next_shape(block, shape) or shape
    return shape


# ---------------------------------------------------------------- candidates


def _with(spec: Spec, index: int, block: Block | None) -> Spec:
    """`spec` with block `index` replaced, or removed when `block` is None."""
    blocks = list(spec.blocks)
    if block is None:
        del blocks[index - 1]
    else:
        blocks[index - 1] = block
    return spec.replace_blocks(blocks)


def _field_family(
    spec: Spec, index: int, label: str, field: str, values
) -> list[_Candidate]:
    """One candidate per value of `field` of block `index`, mildest first."""
    block = spec.blocks[index - 1]
    return [
        _Candidate(
            label.format(value=value),
            _with(spec, index, replace(block, **{field: value})),
            index,
            value=value,
        )
        for value in values
    ]


def _remove(spec: Spec, index: int, label: str) -> list[_Candidate]:
    return [_Candidate(label, _with(spec, index, None), index - 1)]


def _conv_families(spec: Spec, index: int, block: Conv) -> Iterator[list[_Candidate]]:
    k, s, p, d = block.kernel_size, block.stride, block.padding, block.dilation
    yield _field_family(
        spec, index, "lower kernel_size to {value}", "kernel_size", range(k - 1, 0, -1)
    )
    yield _field_family(
        spec, index, "set padding to {value}", "padding", range(p + 1, MAX_PADDING + 1)
    )
    if d > 1:
        yield _field_family(
            spec, index, "lower dilation to {value}", "dilation", range(d - 1, 0, -1)
        )
    if s > 1:
        yield _field_family(spec, index, "set stride to {value}", "stride", [1])
    yield _remove(spec, index, "remove this conv")


def _pool_families(spec: Spec, index: int, block: Pool) -> Iterator[list[_Candidate]]:
    k, p = block.kernel_size, block.padding
    if 2 * p > k:
        yield _field_family(
            spec, index, "lower padding to {value}", "padding", range(k // 2, -1, -1)
        )
        top = min(INT_RANGES["kernel_size"][1], 2 * p + 1)
        yield _field_family(
            spec,
            index,
            "raise kernel_size to {value}",
            "kernel_size",
            range(2 * p, top + 1),
        )
    yield _remove(spec, index, "remove this pool")
    yield _field_family(
        spec, index, "lower kernel_size to {value}", "kernel_size", range(k - 1, 0, -1)
    )
    if not block.ceil_mode:
        yield _field_family(
            spec, index, "set ceil_mode to {value}", "ceil_mode", [True]
        )
    yield _field_family(
        spec, index, "set padding to {value}", "padding", range(p + 1, k // 2 + 1)
    )


def _upstream_families(spec: Spec, index: int) -> Iterator[list[_Candidate]]:
    """Earlier blocks that shrink the map: nearest first."""
    names = block_names(spec.blocks)
    for j in range(index - 1, 0, -1):
        block, name = spec.blocks[j - 1], f"{names[j - 1]} (block {j})"
        if isinstance(block, Pool):
            removed = _with(spec, j, None)
            yield [_Candidate(f"remove {name}", removed, index - 1, upstream=True)]
        if isinstance(block, Conv):
            yield from _upstream_conv(spec, j, index, block, name)


def _upstream_conv(
    spec: Spec, j: int, index: int, block: Conv, name: str
) -> Iterator[list[_Candidate]]:
    if block.stride > 1:
        fixed = _with(spec, j, replace(block, stride=1))
        yield [_Candidate(f"set stride of {name} to 1", fixed, index, upstream=True)]
    same = (effective_kernel(block.kernel_size, block.dilation) - 1) // 2
    if block.stride == 1 and same > block.padding:
        _, h, w = _shape_at(spec, j)
        fixed = _with(spec, j, replace(block, padding=same))
        label = f"set padding of {name} to {same}"
        if effective_kernel(block.kernel_size, block.dilation) % 2:
            label += f" (keeps {h}x{w})"
        yield [_Candidate(label, fixed, index, upstream=True)]


def _structure_families(spec: Spec, index: int) -> Iterator[list[_Candidate]]:
    n, classes = len(spec.blocks), spec.num_classes
    add_fc = spec.replace_blocks([*spec.blocks, FC(classes)])
    if n == 0:
        yield [_Candidate(f"add an fc with out_features {classes}", add_fc, 0)]
        return
    if structure_problem(spec).index is None:
        # The input shape or num_classes is out of range: no block edit repairs it.
        return
    block = spec.blocks[index - 1]
    fcs = [i for i, b in enumerate(spec.blocks, 1) if isinstance(b, FC)]
    first_fc = fcs[0] if fcs else n + 1
    if block.type in SPATIAL_TYPES and first_fc < index:
        yield [_moved(spec, index, first_fc, block)]
        yield _remove(spec, index, f"remove this {_type_word(block)}")
        return
    if isinstance(spec.blocks[-1], FC):
        yield _field_family(
            spec, n, "set out_features to {value}", "out_features", [classes]
        )
    else:
        yield _remove(spec, n, f"remove this {_type_word(block)}")
    yield [_Candidate(f"add an fc with out_features {classes} at the end", add_fc, n)]


def _moved(spec: Spec, index: int, first_fc: int, block: Block) -> _Candidate:
    blocks = list(spec.blocks)
    del blocks[index - 1]
    blocks.insert(first_fc - 1, block)
    label = f"move this {_type_word(block)} before the first fc"
    return _Candidate(label, spec.replace_blocks(blocks), first_fc)


def _type_word(block: Block) -> str:
    return block.fn.value if isinstance(block, Act) else block.type


def _families(spec: Spec, index: int, structural: bool) -> Iterator[list[_Candidate]]:
    if structural:
        yield from _structure_families(spec, index)
        return
    block = spec.blocks[index - 1]
    if isinstance(block, Conv):
        yield from _conv_families(spec, index, block)
    elif isinstance(block, Pool):
        yield from _pool_families(spec, index, block)
    else:
        yield _remove(spec, index, f"remove this {_type_word(block)}")
    yield from _upstream_families(spec, index)


# ---------------------------------------------------------------- choosing


def _pick(family: list[_Candidate]) -> tuple[_Candidate, int | None] | None:
    """The first candidate that makes the stack valid, else the one whose first
    error lies furthest past its anchor; None if none gets past it."""
    best, best_error, passed = None, None, None
    for candidate in family:
        error = quick_error(candidate.spec)
        if error is None:
            return _say_why_further(candidate, passed), None
        if error > candidate.anchor and passed is None:
            passed = (candidate, error)
        if error > candidate.anchor and (best_error is None or error > best_error):
            best, best_error = candidate, error
    return (best, best_error) if best is not None else None


def _say_why_further(
    candidate: _Candidate, passed: tuple[_Candidate, int] | None
) -> _Candidate:
    """Name the later block that rules out a milder value, which the failing
    block's own message suggests ("lower kernel_size to 13 (14 would break
    pool2)"), so the label and the message do not seem to disagree."""
    if passed is None or passed[0].value is None:
        return candidate
    milder, error = passed
    name = block_names(milder.spec.blocks)[error - 1]
    label = f"{candidate.label} ({milder.value} would break {name})"
    return replace(candidate, label=label)


def suggest_fixes(spec: Spec, report: ShapeReport | None = None) -> list[Fix]:
    """Repairs for the first failing block, each checked with trace().

    Args:
        spec: the stack as the user left it.
        report: trace(spec), if already at hand.

    Returns whole-stack fixes that make it valid, in a fixed order; if there are
    none, partial fixes that move the first error to a later block; [] for a
    valid spec.
    """
    report = report or trace(spec)
    if report.error is None:
        return []
    index = report.error.index
    structural = report.error.structural
    full, partial, seen = [], [], {spec}
    upstream = 0
    for family in _families(spec, index, structural):
        picked = _pick(family)
        if picked is None or picked[0].spec in seen:
            continue
        candidate, _ = picked
        if candidate.upstream and upstream == MAX_UPSTREAM_FIXES:
            continue
        seen.add(candidate.spec)
        checked = trace(candidate.spec)
        if checked.ok:
            full.append(Fix(candidate.label, candidate.spec))
            upstream += candidate.upstream
        elif checked.error.index > candidate.anchor:
            partial.append(_partial(candidate, checked.error.index))
    return full or partial


def _partial(candidate: _Candidate, error_index: int) -> Fix:
    label = f"{candidate.label} (partial: the first error moves to block {error_index})"
    return Fix(label, candidate.spec, partial=True, error_index=error_index)
