"""Shape validation: every block's output shape, Param # and Mult-Adds.

PyTorch's own forward pass on the meta device is the judge, so a check allocates
no real memory and leaves the global random state alone.
torchinfo supplies the Param # and Mult-Adds columns. Each block's result is kept
for its input shape, so tracing a stack again costs only the blocks whose input
changed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torchinfo

from .formulas import (
    conv_out,
    effective_kernel,
    max_conv_kernel,
    min_conv_padding,
    pool_out,
)
from .layers import Shape, layer_name, make_layer
from .spec import (
    FC,
    INT_RANGES,
    Block,
    Conv,
    Pool,
    Spec,
    block_problem,
    describe,
    structure_problem,
)

# A batch of 2 keeps BatchNorm's training-mode statistics defined; torchinfo's
# Mult-Adds cover the whole batch and are divided back to one image.
CHECK_BATCH = 2


@dataclass(frozen=True)
class ShapeRow:
    """One user block: its module name, shapes without the batch, and counts."""

    index: int
    type: str
    name: str
    label: str
    input_shape: Shape
    output_shape: Shape
    params: int
    mult_adds: int


@dataclass(frozen=True)
class BlockError:
    """The first block that cannot run, with a message naming rule and fix."""

    index: int
    message: str
    # True when the order of blocks breaks a rule (see `structure_problem`).
    structural: bool = False


@dataclass(frozen=True)
class ShapeReport:
    spec: Spec
    rows: tuple[ShapeRow, ...]
    flatten: int | None
    error: BlockError | None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def total_params(self) -> int:
        return sum(row.params for row in self.rows)

    @property
    def total_mult_adds(self) -> int:
        return sum(row.mult_adds for row in self.rows)


def format_shape(shape: Shape) -> str:
    """'16x5x5' for CxHxW, '400' for features."""
    return "x".join(str(v) for v in shape)


def trace(spec: Spec) -> ShapeReport:
    """Run `spec` block by block on the meta device; stop at the first failure.

    Rows stop before the failing block. A broken order of blocks (see
    `structure_problem`) is reported as the error of the block that breaks it.
    """
    problem = structure_problem(spec)
    blocks = spec.blocks
    if problem is not None:
        # A spec-wide problem (input, num_classes) lets no block run.
        blocks = blocks[: problem.index - 1] if problem.index else ()
    rows, flatten, error = _walk(blocks, spec.input)
    if error is None and problem is not None:
        error = BlockError(problem.index or 1, str(problem), structural=True)
    return ShapeReport(spec, rows, flatten, error)


def _walk(
    blocks: tuple[Block, ...], input_shape: Shape
) -> tuple[tuple[ShapeRow, ...], int | None, BlockError | None]:
    """Rows for `blocks` in order, the flatten size, and the first failure."""
    rows: list[ShapeRow] = []
    counts: dict[str, int] = {}
    flatten = None
    shape = tuple(input_shape)
    for index, block in enumerate(blocks, start=1):
        if isinstance(block, FC) and len(shape) == 3:
            flatten = math.prod(shape)
            shape = (flatten,)
        step = _step(block, shape)
        if step is None:
            return tuple(rows), flatten, _block_error(block, shape, index)

        prefix = layer_name(block, 0)[:-1]
        counts[prefix] = counts.get(prefix, 0) + 1
        rows.append(
            ShapeRow(
                index=index,
                type=block.type,
                name=layer_name(block, counts[prefix]),
                label=describe(block),
                input_shape=shape,
                output_shape=step.output_shape,
                params=step.params,
                mult_adds=step.mult_adds,
            )
        )
        shape = step.output_shape
    return tuple(rows), flatten, None


@dataclass(frozen=True)
class _Step:
    """What one block does to one input shape, per image."""

    output_shape: Shape
    params: int
    mult_adds: int


def _step(block: Block, in_shape: Shape) -> _Step | None:
    """PyTorch's forward pass of the block on meta, counted by torchinfo; None
    when the block's fields break a rule or PyTorch refuses the input."""
    try:
        hash(block)
    except TypeError:
        # A field holds a list or a dict; block_problem names it.
        return None
    return _cached_step(block, in_shape)


# The app re-traces the whole stack on every edit; all blocks before the edited one
# see the same input again, so their forward pass and summary are reused.
@functools.lru_cache(maxsize=4096)
def _cached_step(block: Block, in_shape: Shape) -> _Step | None:
    if block_problem(block, 0) is not None:
        return None
    try:
        layer = make_layer(block, in_shape, device="meta")
    except (RuntimeError, ValueError):
        return None
    images = torch.empty(CHECK_BATCH, *in_shape, device="meta")
    try:
        summary = torchinfo.summary(layer, input_data=images, device="meta", verbose=0)
    except RuntimeError as exc:
        # torchinfo wraps the forward pass's own error; anything else is a bug.
        if isinstance(exc.__cause__, (RuntimeError, ValueError, IndexError)):
            return None
        raise
    info = summary.summary_list[0]
    return _Step(
        output_shape=tuple(info.output_size[1:]),
        params=info.num_params,
        mult_adds=info.macs // CHECK_BATCH,
    )


def _block_error(block: Block, in_shape: Shape, index: int) -> BlockError:
    problem = block_problem(block, index)
    if problem is not None:
        return BlockError(index, str(problem))
    return BlockError(index, failure_message(block, in_shape, index))


def failure_message(block: Block, in_shape: Shape, index: int) -> str:
    """Why PyTorch refused `block` on `in_shape`, with the numbers and a fix."""
    where = f"block {index} ({block.type})"
    if len(in_shape) == 3 and isinstance(block, Conv):
        message = _conv_failure(block, in_shape)
    elif len(in_shape) == 3 and isinstance(block, Pool):
        message = _pool_failure(block, in_shape)
    else:
        message = None
    if message is None:
        message = (
            f"PyTorch cannot apply {describe(block)} to a {format_shape(in_shape)} "
            "input; change its fields or remove it"
        )
    return f"{where}: {message}"


def _conv_failure(block: Conv, in_shape: Shape) -> str | None:
    k, p, d = block.kernel_size, block.padding, block.dilation
    side = min(in_shape[1:])
    if conv_out(side, k, block.stride, p, d) >= 1:
        return None

    what = f"kernel_size {k}"
    if d != 1:
        what += f" (span {effective_kernel(k, d)} at dilation {d})"
    fixes = [f"lower kernel_size to {max_conv_kernel(side, p, d)}"]
    padding = min_conv_padding(side, k, d)
    if padding <= INT_RANGES["padding"][1]:
        fixes.append(f"set padding to {padding}")
    return f"{_input_words(in_shape, p)} is smaller than {what}; {' or '.join(fixes)}"


def _pool_failure(block: Pool, in_shape: Shape) -> str | None:
    k, p = block.kernel_size, block.padding
    if 2 * p > k:
        fix = f"lower padding to {k // 2}"
        if 2 * p <= INT_RANGES["kernel_size"][1]:
            fix += f" or raise kernel_size to {2 * p}"
        return (
            f"padding {p} is more than half of kernel_size {k}; PyTorch allows "
            f"at most {k // 2}; {fix}"
        )
    side = min(in_shape[1:])
    if _pool_fits(block, side, k):
        return None

    fix = "remove this pool"
    smallest = max(1, 2 * p)
    fits = [kk for kk in range(k - 1, smallest - 1, -1) if _pool_fits(block, side, kk)]
    if fits:
        fix += f" or lower kernel_size to {fits[0]}"
    return f"{_input_words(in_shape, p)} is smaller than kernel_size {k}; {fix}"


def _pool_fits(block: Pool, side: int, kernel_size: int) -> bool:
    """Whether `block` with `kernel_size` gives at least one output on `side`;
    stride None follows the kernel."""
    stride = kernel_size if block.stride is None else block.stride
    return pool_out(side, kernel_size, stride, block.padding, block.ceil_mode) >= 1


def _input_words(in_shape: Shape, padding: int) -> str:
    """'input 16x1x1', or 'input 3x2x2 padded by 1 to 4x4'."""
    words = f"input {format_shape(in_shape)}"
    if padding:
        padded = "x".join(str(side + 2 * padding) for side in in_shape[1:])
        words += f" padded by {padding} to {padded}"
    return words
