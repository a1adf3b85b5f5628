"""PyTorch's output-size rules for convolution and pooling, one spatial side at a time.

These explain what PyTorch computes; PyTorch's own forward pass stays the judge.
"""

from __future__ import annotations

import math


def effective_kernel(kernel_size: int, dilation: int = 1) -> int:
    """The span a dilated kernel covers: d(k-1)+1."""
    return dilation * (kernel_size - 1) + 1


def conv_out(
    size: int, kernel_size: int, stride: int, padding: int, dilation: int
) -> int:
    """floor((in + 2p - d(k-1) - 1) / s) + 1; below 1 means PyTorch refuses."""
    span = size + 2 * padding - effective_kernel(kernel_size, dilation)
    return span // stride + 1


def pool_out(
    size: int, kernel_size: int, stride: int, padding: int, ceil_mode: bool
) -> int:
    """floor((in + 2p - k) / s) + 1, or with ceil_mode the ceiling, less one when
    the last window would start beyond the input and its left padding."""
    span = size + 2 * padding - kernel_size
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def max_conv_kernel(size: int, padding: int, dilation: int) -> int:
    """The largest kernel_size whose dilated span fits the padded input."""
    return (size + 2 * padding - 1) // dilation + 1


def min_conv_padding(size: int, kernel_size: int, dilation: int) -> int:
    """The smallest padding that lets the dilated kernel fit."""
    return max(0, math.ceil((effective_kernel(kernel_size, dilation) - size) / 2))
