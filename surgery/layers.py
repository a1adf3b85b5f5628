"""One PyTorch module per block, given the shape that reaches it."""

from __future__ import annotations

import torch
from torch import nn

from .spec import (
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
)

Shape = tuple[int, ...]

ACTIVATIONS: dict[Activation, type[nn.Module]] = {
    Activation.RELU: nn.ReLU,
    Activation.TANH: nn.Tanh,
    Activation.SIGMOID: nn.Sigmoid,
    Activation.GELU: nn.GELU,
    Activation.LEAKY_RELU: nn.LeakyReLU,
    Activation.ELU: nn.ELU,
}


def make_layer(
    block: Block, in_shape: Shape, device: torch.device | str | None = None
) -> nn.Module:
    """The module for `block`; `in_shape` is (C, H, W) or (features,).

    Parameters are created on `device` (default: torch's current default device);
    on "meta" they take no memory and their initialisation draws no random numbers.
    """
    if isinstance(block, Pad):
        return nn.ZeroPad2d(block.padding)
    if isinstance(block, Conv):
        return nn.Conv2d(
            in_shape[0],
            block.out_channels,
            block.kernel_size,
            stride=block.stride,
            padding=block.padding,
            dilation=block.dilation,
            device=device,
        )
    if isinstance(block, Pool):
        return _make_pool(block)
    if isinstance(block, Act):
        return ACTIVATIONS[block.fn]()
    if isinstance(block, FC):
        return nn.Linear(in_shape[0], block.out_features, device=device)
    if isinstance(block, Dropout):
        return nn.Dropout(block.p)
    if isinstance(block, BatchNorm):
        if len(in_shape) == 3:
            return nn.BatchNorm2d(in_shape[0], device=device)
        return nn.BatchNorm1d(in_shape[0], device=device)
    raise TypeError(f"unknown block {block!r}")


def _make_pool(block: Pool) -> nn.Module:
    if block.kind == PoolKind.MAX:
        return nn.MaxPool2d(
            block.kernel_size,
            stride=block.effective_stride,
            padding=block.padding,
            ceil_mode=block.ceil_mode,
        )
    return nn.AvgPool2d(
        block.kernel_size,
        stride=block.effective_stride,
        padding=block.padding,
        ceil_mode=block.ceil_mode,
    )


def layer_name(block: Block, number: int) -> str:
    """Module names such as conv1, pool2, relu3, fc1: the words PyTorch users use."""
    prefix = block.type
    if isinstance(block, Act):
        prefix = block.fn.value if isinstance(block.fn, Activation) else "act"
    if isinstance(block, BatchNorm):
        prefix = "bn"
    return f"{prefix}{number}"
