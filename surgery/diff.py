"""What changed between two stacks, as short readable lines.

Blocks are aligned with difflib's SequenceMatcher, so inserting one block shows as
one '+' line rather than every later block changing. Blocks are named as in the
shape table (conv1, pool2, fc1); in_channels and in_features come from trace().
"""

from __future__ import annotations

from dataclasses import fields
from difflib import SequenceMatcher
from enum import Enum
from typing import Any

from .layers import layer_name
from .shapes import ShapeReport, format_shape, trace
from .spec import Block, Pool, Spec, describe


def block_names(blocks: tuple[Block, ...]) -> list[str]:
    """conv1, relu1, pool1, ... exactly as trace() and build_model name them."""
    counts: dict[str, int] = {}
    names = []
    for block in blocks:
        prefix = layer_name(block, 0)[:-1]
        counts[prefix] = counts.get(prefix, 0) + 1
        names.append(layer_name(block, counts[prefix]))
    return names


def diff_specs(a: Spec, b: Spec) -> list[str]:
    """Readable lines turning stack `a` into stack `b`; [] when they are equal.

    Args:
        a: the stack before, e.g. the preset or the last saved version.
        b: the stack after.
    """
    lines = []
    if a.input != b.input:
        lines.append(f"input {format_shape(a.input)} -> {format_shape(b.input)}")
    if a.num_classes != b.num_classes:
        lines.append(f"num_classes {a.num_classes} -> {b.num_classes}")
    report_a, report_b = trace(a), trace(b)
    lines += _Aligner(report_a, report_b).lines()
    if lines and report_a.ok and report_b.ok:
        old, new = report_a.total_params, report_b.total_params
        if old != new:
            lines.append(f"Param # {old:,} -> {new:,}")
    return lines


class _Aligner:
    """Walks the alignment of a's blocks onto b's and writes one line per change."""

    def __init__(self, a: ShapeReport, b: ShapeReport):
        self.a, self.b = a.spec.blocks, b.spec.blocks
        self.names_a, self.names_b = block_names(self.a), block_names(self.b)
        self.in_a, self.in_b = _in_sizes(a), _in_sizes(b)
        self.out: list[str] = []

    def lines(self) -> list[str]:
        matcher = _matcher([describe(x) for x in self.a], [describe(x) for x in self.b])
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                for i, j in zip(range(i1, i2), range(j1, j2)):
                    self._derived(i, j)
            else:
                self._replace(i1, i2, j1, j2)
        return self.out

    def _replace(self, i1: int, i2: int, j1: int, j2: int) -> None:
        """Inside a changed run, blocks of the same type are edits, the rest +/-."""
        types_a = [x.type for x in self.a[i1:i2]]
        types_b = [x.type for x in self.b[j1:j2]]
        for tag, k1, k2, m1, m2 in _matcher(types_a, types_b).get_opcodes():
            if tag == "equal":
                for i, j in zip(range(i1 + k1, i1 + k2), range(j1 + m1, j1 + m2)):
                    self._edit(i, j)
                continue
            for i in range(i1 + k1, i1 + k2):
                self._removed(i)
            for j in range(j1 + m1, j1 + m2):
                self._added(j, i1 + k2)

    def _added(self, j: int, before: int) -> None:
        """Block j of b, placed in front of a's block `before`."""
        what = describe(self.b[j])
        if before < len(self.a):
            self.out.append(f"+ {what} before {self.names_a[before]}")
        elif self.a:
            self.out.append(f"+ {what} after {self.names_a[-1]}")
        else:
            self.out.append(f"+ {what}")

    def _removed(self, i: int) -> None:
        what = describe(self.a[i])
        if i > 0:
            where = f"was after {self.names_a[i - 1]}"
        elif len(self.a) > 1:
            where = f"was before {self.names_a[1]}"
        else:
            where = "was the only block"
        self.out.append(f"- {what} ({where})")

    def _edit(self, i: int, j: int) -> None:
        name = self._name(i, j)
        for key, old, new in _field_changes(self.a[i], self.b[j]):
            self.out.append(f"{name} {key} {old} -> {new}")
        self._derived(i, j)

    def _derived(self, i: int, j: int) -> None:
        """in_channels / in_features that changed because of blocks before."""
        old, new = self.in_a.get(i), self.in_b.get(j)
        if old is None or new is None or old[1] == new[1]:
            return
        self.out.append(f"{self._name(i, j)} {old[0]} {old[1]} -> {new[1]}")

    def _name(self, i: int, j: int) -> str:
        old, new = self.names_a[i], self.names_b[j]
        return old if old == new else f"{old} (now {new})"


def _matcher(a: list[str], b: list[str]) -> SequenceMatcher:
    return SequenceMatcher(None, a, b, autojunk=False)


def _in_sizes(report: ShapeReport) -> dict[int, tuple[str, int]]:
    """0-based block position -> ('in_channels' or 'in_features', value)."""
    sizes = {}
    for row in report.rows:
        if row.type == "conv":
            sizes[row.index - 1] = ("in_channels", row.input_shape[0])
        elif row.type == "fc":
            sizes[row.index - 1] = ("in_features", row.input_shape[0])
    return sizes


def _field_changes(old: Block, new: Block) -> list[tuple[str, str, str]]:
    changes = []
    for f in fields(old):
        before, after = getattr(old, f.name), getattr(new, f.name)
        if before != after:
            changes.append(
                (f.name, _show(old, f.name, before), _show(new, f.name, after))
            )
    return changes


def _show(block: Block, key: str, value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(block, Pool) and key == "stride" and value is None:
        return f"{block.kernel_size} (= kernel_size)"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
