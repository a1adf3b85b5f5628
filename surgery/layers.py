"""One PyTorch module per block, given the shape that reaches it."""

from __future__ import annotations

from torch import nn

from .spec import FC, Act, Activation, BatchNorm, Block, Conv, Dropout, Pad, Pool, PoolKind

Shape = tuple[int, ...]

ACTIVATIONS: dict[Activation, type[nn.Module]] = {
    Activation.RELU: nn.ReLU,
    Activation.TANH: nn.Tanh,
    Activation.SIGMOID: nn.Sigmoid,
    Activation.GELU: nn.GELU,
    Activation.LEAKY_RELU: nn.LeakyReLU,
    Activation.ELU: nn.ELU,
}


def make_layer(block: Block, in_shape: Shape) -> nn.Module:
    """The module for `block`; `in_shape` is (C, H, W) or (features,)."""
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
        )
    if isinstance(block, Pool):
        return _make_pool(block)
    if isinstance(block, Act):
        return ACTIVATIONS[block.fn]()
    if isinstance(block, FC):
        return nn.Linear(in_shape[0], block.out_features)
    if isinstance(block, Dropout):
        return nn.Dropout(block.p)
    if isinstance(block, BatchNorm):
        if len(in_shape) == 3:
            return nn.BatchNorm2d(in_shape[0])
        return nn.BatchNorm1d(in_shape[0])
    raise TypeError(f"unknown block {block!r}")


def _make_pool(block: Pool) -> nn.Module:
    if block.kind is PoolKind.MAX:
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
    prefix = block.fn.value if isinstance(block, Act) else block.type
    if isinstance(block, BatchNorm):
        prefix = "bn"
    return f"{prefix}{number}"
