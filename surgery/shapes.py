"""Shape validation: every block's output shape, Param # and Mult-Adds.

PyTorch's own forward pass on the meta device is the judge, so a check allocates no
real memory and leaves the global random state alone. torchinfo supplies the
Param # and Mult-Adds columns.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torchinfo
from torch import nn

from .formulas import (
    conv_out,
    effective_kernel,
    max_conv_kernel,
    min_conv_padding,
    pool_out,
)
from .layers import Shape, layer_name, make_layer
from .spec import FC, Block, Conv, Pool, Spec, SpecError, describe, structure_problem

# A batch of 2 keeps BatchNorm's training-mode statistics defined.
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
    """Run `spec` block by block on the meta device; stop at the first failure."""
    problem = structure_problem(spec)
    stop = problem.index if problem is not None and problem.index else None
    with torch.device("meta"):
        walk = _walk(spec.blocks[: stop - 1 if stop else None], spec.input)
    modules, shapes, flatten, error = walk
    if error is None and problem is not None:
        error = BlockError(problem.index or 1, str(problem))
    rows = _count(spec, modules, shapes)
    return ShapeReport(spec, rows, flatten, error)


def _walk(blocks: tuple[Block, ...], input_shape: Shape):
    x = torch.empty(CHECK_BATCH, *input_shape)
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    shapes: list[tuple[Block, Shape, Shape]] = []
    counts: dict[str, int] = {}
    flatten = None
    for index, block in enumerate(blocks, start=1):
        if isinstance(block, FC) and x.dim() == 4:
            modules["flatten"] = nn.Flatten()
            x = x.flatten(1)
            flatten = x.shape[1]
        in_shape = tuple(x.shape[1:])
        try:
            layer = make_layer(block, in_shape)
            x = layer(x)
        except (RuntimeError, ValueError, IndexError):
            return modules, shapes, flatten, BlockError(
                index, failure_message(block, in_shape, index)
            )
        prefix = layer_name(block, 0)[:-1]
        counts[prefix] = counts.get(prefix, 0) + 1
        modules[layer_name(block, counts[prefix])] = layer
        shapes.append((block, in_shape, tuple(x.shape[1:])))
    return modules, shapes, flatten, None


def _count(spec: Spec, modules, shapes) -> tuple[ShapeRow, ...]:
    """Param # and Mult-Adds per block from torchinfo, per image."""
    if not shapes:
        return ()
    model = nn.Sequential(modules)
    x = torch.empty(CHECK_BATCH, *spec.input, device="meta")
    summary = torchinfo.summary(model, input_data=x, device="meta", verbose=0)
    infos = {
        info.var_name: info for info in summary.summary_list if info.depth == 1
    }
    names = [name for name in modules if name != "flatten"]
    rows = []
    for index, (name, (block, in_shape, out_shape)) in enumerate(
        zip(names, shapes), start=1
    ):
        info = infos[name]
        rows.append(
            ShapeRow(
                index=index,
                type=block.type,
                name=name,
                label=describe(block),
                input_shape=in_shape,
                output_shape=out_shape,
                params=info.num_params,
                mult_adds=info.macs // CHECK_BATCH,
            )
        )
    return tuple(rows)


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
    padded = "x".join(str(s + 2 * p) for s in in_shape[1:])
    span = effective_kernel(k, d)
    what = f"kernel_size {k}" if d == 1 else f"kernel_size {k} (span {span} at dilation {d})"
    where = f"input {format_shape(in_shape)}"
    if p:
        where += f" padded by {p} to {padded}"
    fixes = f"set padding to {min_conv_padding(side, k, d)}"
    if max_conv_kernel(side, p, d) >= 1:
        fixes = f"lower kernel_size to {max_conv_kernel(side, p, d)} or {fixes}"
    return f"{where} is smaller than {what}; {fixes}"


def _pool_failure(block: Pool, in_shape: Shape) -> str | None:
    k, p = block.kernel_size, block.padding
    if 2 * p > k:
        return (
            f"padding {p} is more than half of kernel_size {k}; PyTorch allows at "
            f"most {k // 2}; lower padding to {k // 2} or raise kernel_size to {2 * p}"
        )
    side = min(in_shape[1:])
    s = block.effective_stride
    if pool_out(side, k, s, p, block.ceil_mode) >= 1:
        return None
    fits = [
        kk
        for kk in range(k - 1, 0, -1)
        if 2 * p <= kk and pool_out(side, kk, s, p, block.ceil_mode) >= 1
    ]
    fix = "remove this pool"
    if fits:
        fix += f" or lower kernel_size to {fits[0]}"
    return f"input {format_shape(in_shape)} is smaller than kernel_size {k}; {fix}"
