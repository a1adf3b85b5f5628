"""Ready-made networks, each with one line on what it demonstrates."""

from __future__ import annotations

from dataclasses import dataclass

from .spec import (
    FC,
    Act,
    Activation,
    BatchNorm,
    Conv,
    Dropout,
    Pad,
    Pool,
    PoolKind,
    Spec,
)

RELU = Act(Activation.RELU)
TANH = Act(Activation.TANH)
MAX2 = Pool(PoolKind.MAX, 2)
AVG2 = Pool(PoolKind.AVG, 2)


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    lesson: str
    spec: Spec


def _lenet_head(act: Act = RELU) -> tuple:
    return (FC(120), act, FC(84), act, FC(10))


def _double_conv(channels: int) -> tuple:
    return (
        Conv(channels, 3, padding=1),
        BatchNorm(),
        RELU,
        Conv(channels, 3, padding=1),
        BatchNorm(),
        RELU,
    )


TUTORIAL_LENET = Spec(
    blocks=(Conv(6, 5), RELU, MAX2, Conv(16, 5), RELU, MAX2, *_lenet_head())
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "tutorial-lenet",
            "Tutorial LeNet (baseline)",
            "The PyTorch CIFAR-10 tutorial's net: 32 -> 28 -> 14 -> 10 -> 5, "
            "so the first fc takes 16 x 5 x 5 = 400.",
            TUTORIAL_LENET,
        ),
        Preset(
            "padded-lenet",
            "Padded LeNet",
            "ZeroPad2d(2) adds two pixels on every side: 32 -> 36, and the first "
            "fc grows to 16 x 6 x 6 = 576.",
            Spec(blocks=(Pad(2), *TUTORIAL_LENET.blocks[:-5], *_lenet_head())),
        ),
        Preset(
            "lenet5",
            "Classic LeNet-5",
            "LeCun's original recipe: average pooling and tanh, same shapes as "
            "the tutorial net.",
            Spec(
                blocks=(Conv(6, 5), TANH, AVG2, Conv(16, 5), TANH, AVG2)
                + _lenet_head(TANH)
            ),
        ),
        Preset(
            "same-lenet",
            "Same-padding LeNet",
            "padding 2 on a 5x5 kernel keeps the size: 32 -> 32 -> 16 -> 16 -> 8, "
            "so the first fc takes 16 x 8 x 8 = 1024.",
            Spec(
                blocks=(
                    Conv(6, 5, padding=2),
                    RELU,
                    MAX2,
                    Conv(16, 5, padding=2),
                    RELU,
                    MAX2,
                    *_lenet_head(),
                )
            ),
        ),
        Preset(
            "deep-cnn",
            "Deeper 3x3 net",
            "Six 3x3 convs with batchnorm and three pools still fit 32x32: "
            "32 -> 16 -> 8 -> 4, and dropout before the classifier.",
            Spec(
                blocks=(
                    *_double_conv(32),
                    MAX2,
                    *_double_conv(64),
                    MAX2,
                    *_double_conv(128),
                    MAX2,
                    Dropout(0.5),
                    FC(256),
                    RELU,
                    FC(10),
                )
            ),
        ),
    )
}


def preset_names() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> Spec:
    """The preset's spec; an unknown name is a ValueError listing the choices."""
    if name not in PRESETS:
        raise ValueError(f"preset {name!r} is unknown; use one of {', '.join(PRESETS)}")
    return PRESETS[name].spec
