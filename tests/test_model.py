"""build_model and make_layer: the modules, their names, their fields, their weights."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from surgery.layers import ACTIVATIONS, layer_name, make_layer
from surgery.model import build_model
from surgery.presets import PRESETS, TUTORIAL_LENET, get_preset, preset_names
from surgery.shapes import trace
from surgery.spec import (
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
    SpecError,
)

RELU = Act(Activation.RELU)


class TutorialNet(nn.Module):
    """The network of PyTorch's CIFAR-10 tutorial, written as the tutorial does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def test_tutorial_lenet_module_names() -> None:
    model = build_model(TUTORIAL_LENET)
    assert [name for name, _ in model.named_children()] == [
        "conv1",
        "relu1",
        "pool1",
        "conv2",
        "relu2",
        "pool2",
        "flatten",
        "fc1",
        "relu3",
        "fc2",
        "relu4",
        "fc3",
    ]
    assert isinstance(model.flatten, nn.Flatten)


def test_tutorial_lenet_has_the_tutorial_weights_and_outputs() -> None:
    torch.manual_seed(3)
    ours = build_model(TUTORIAL_LENET)
    torch.manual_seed(3)
    theirs = TutorialNet()
    pairs = [("conv1", "conv1"), ("conv2", "conv2"), ("fc1", "fc1"), ("fc2", "fc2")]
    for mine, tutorial in [*pairs, ("fc3", "fc3")]:
        assert torch.equal(
            getattr(ours, mine).weight, getattr(theirs, tutorial).weight
        ), mine

    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours(images), theirs(images))


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    spec = PRESETS["deep-cnn"].spec

    def weights(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return [p.detach().clone() for p in build_model(spec).parameters()]

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_building_draws_only_the_weights_from_the_rng() -> None:
    torch.manual_seed(0)
    build_model(TUTORIAL_LENET)
    after_ours = torch.rand(4)
    torch.manual_seed(0)
    TutorialNet()
    after_theirs = torch.rand(4)
    assert torch.equal(after_ours, after_theirs)


@pytest.mark.parametrize("name", preset_names())
def test_model_gives_logits_for_a_batch(name: str) -> None:
    spec = get_preset(name)
    model = build_model(spec)
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(3, *spec.input))
    assert logits.shape == (3, spec.num_classes)


def test_model_trains_a_step_with_batchnorm_and_dropout() -> None:
    model = build_model(PRESETS["deep-cnn"].spec)
    loss = F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_modules_and_their_fields() -> None:
    spec = Spec(
        input=(1, 20, 24),
        num_classes=4,
        blocks=(
            Pad(2),
            Conv(8, 3, stride=2, padding=1, dilation=2),
            BatchNorm(),
            Act(Activation.LEAKY_RELU),
            Pool(PoolKind.AVG, 3, None, 1, True),
            Pool(PoolKind.MAX, 2, 1),
            Dropout(0.25),
            FC(16),
            BatchNorm(),
            Act(Activation.GELU),
            FC(4),
        ),
    )
    model = build_model(spec)
    conv, pool_avg, pool_max = model.conv1, model.pool1, model.pool2
    assert isinstance(model.pad1, nn.ZeroPad2d)
    assert model.pad1.padding == (2, 2, 2, 2)
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (1, 8, (3, 3))
    assert (conv.stride, conv.padding, conv.dilation) == ((2, 2), (1, 1), (2, 2))
    assert isinstance(model.bn1, nn.BatchNorm2d) and model.bn1.num_features == 8
    assert isinstance(model.leaky_relu1, nn.LeakyReLU)
    assert isinstance(pool_avg, nn.AvgPool2d)
    assert (pool_avg.kernel_size, pool_avg.stride, pool_avg.padding) == (3, 3, 1)
    assert pool_avg.ceil_mode is True
    assert isinstance(pool_max, nn.MaxPool2d)
    assert (pool_max.kernel_size, pool_max.stride, pool_max.ceil_mode) == (2, 1, False)
    assert model.dropout1.p == 0.25
    assert model.fc1.in_features == trace(spec).flatten
    assert isinstance(model.bn2, nn.BatchNorm1d) and model.bn2.num_features == 16
    assert isinstance(model.gelu1, nn.GELU)
    assert (model.fc2.in_features, model.fc2.out_features) == (16, 4)


@pytest.mark.parametrize("fn", list(Activation), ids=[fn.value for fn in Activation])
def test_every_activation_has_its_module(fn: Activation) -> None:
    layer = make_layer(Act(fn), (6, 4, 4))
    assert type(layer) is ACTIVATIONS[fn]
    assert type(layer).__name__.lower().replace("_", "") == fn.value.replace("_", "")


def test_make_layer_on_meta_takes_no_memory() -> None:
    layer = make_layer(FC(65536), (1 << 20,), device="meta")
    assert layer.weight.is_meta
    assert layer.weight.shape == (65536, 1 << 20)


def test_build_model_on_a_device() -> None:
    model = build_model(TUTORIAL_LENET, device="meta")
    assert all(p.is_meta for p in model.parameters())


@pytest.mark.parametrize(
    ("block", "number", "name"),
    [
        (Conv(6, 5), 1, "conv1"),
        (Pool(), 2, "pool2"),
        (RELU, 3, "relu3"),
        (Act(Activation.LEAKY_RELU), 1, "leaky_relu1"),
        (FC(10), 3, "fc3"),
        (BatchNorm(), 2, "bn2"),
        (Dropout(), 1, "dropout1"),
        (Pad(1), 1, "pad1"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_layer_name(block, number: int, name: str) -> None:
    assert layer_name(block, number) == name


def test_invalid_spec_raises_the_failing_blocks_message() -> None:
    spec = Spec(input=(3, 8, 8), blocks=(Conv(6, 5), Pool(), Pool(), Pool(), FC(10)))
    message = (
        "block 4 (pool): input 6x1x1 is smaller than kernel_size 2; remove this pool "
        "or lower kernel_size to 1"
    )
    with pytest.raises(SpecError, match=f"^{re.escape(message)}$") as info:
        build_model(spec)
    assert info.value.index == 4


def test_structure_problem_raises_in_build_model() -> None:
    with pytest.raises(SpecError, match=r"^block 2 \(fc\): out_features 5 must equal"):
        build_model(Spec(blocks=(Conv(6, 5), FC(5))))


def test_every_preset_lesson_states_its_flatten() -> None:
    for preset in PRESETS.values():
        flatten = trace(preset.spec).flatten
        assert preset.title and preset.lesson
        if "fc" in preset.lesson and "=" in preset.lesson:
            assert f"= {flatten}" in preset.lesson, preset.name


def test_unknown_preset_lists_the_choices() -> None:
    with pytest.raises(
        ValueError,
        match=r"^preset 'lenet' is unknown; use one of tutorial-lenet, padded-lenet",
    ):
        get_preset("lenet")
