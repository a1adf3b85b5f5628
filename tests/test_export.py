"""Exported PyTorch code: it runs, and it is the same net build_model builds."""

from __future__ import annotations

import re

import pytest
import torch
import torchvision
from PIL import Image

from surgery.export import export_code
from surgery.model import build_model
from surgery.presets import PRESETS, TUTORIAL_LENET
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

ZOO = {
    **{name: preset.spec for name, preset in PRESETS.items()},
    "dilation": Spec(blocks=(Conv(8, 3, dilation=2), RELU, Pool(), FC(10))),
    "ceil-mode": Spec(
        input=(3, 15, 15),
        blocks=(Pool(PoolKind.MAX, 2, ceil_mode=True), Conv(4, 3, stride=2), FC(10)),
    ),
    "avg-padding": Spec(
        blocks=(Conv(6, 5), Pool(PoolKind.AVG, 3, stride=2, padding=1), FC(10))
    ),
    "batchnorm-dropout": Spec(
        blocks=(Conv(6, 3), BatchNorm(), FC(32), BatchNorm(), Dropout(0.3), FC(10))
    ),
    "grey-28-gelu": Spec(
        input=(1, 28, 28),
        blocks=(Conv(6, 5), Act(Activation.GELU), Pool(), Conv(16, 5), FC(10)),
    ),
    "other-activations": Spec(
        blocks=(
            Pad(1),
            Conv(4, 3, stride=2),
            Act(Activation.LEAKY_RELU),
            Act(Activation.ELU),
            Act(Activation.SIGMOID),
            FC(10),
        )
    ),
    "non-square-100": Spec(
        input=(3, 24, 40), num_classes=100, blocks=(Conv(8, 5), Pool(), FC(100))
    ),
    "fc-only": Spec(blocks=(FC(10),)),
}


def load(code: str, name: str = "exported") -> dict:
    namespace = {"__name__": name}
    exec(compile(code, "<export>", "exec"), namespace)  # noqa: S102
    return namespace


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("spec", ZOO.values(), ids=ZOO.keys())
def test_exported_class_is_build_models_net(spec):
    code = export_code(spec)
    report = trace(spec)

    torch.manual_seed(0)
    net = load(code)["SurgeryNet"]()
    torch.manual_seed(0)
    reference = build_model(spec)

    assert param_count(net) == param_count(reference) == report.total_params
    ours, theirs = net.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)


@pytest.mark.parametrize("spec", ZOO.values(), ids=ZOO.keys())
def test_exported_forward_gives_build_models_logits(spec):
    net = load(export_code(spec))["SurgeryNet"]()
    reference = build_model(spec)
    net.load_state_dict(reference.state_dict())
    images = torch.randn(3, *spec.input)

    net.eval()
    reference.eval()
    with torch.no_grad():
        assert torch.equal(net(images), reference(images))


@pytest.mark.parametrize("spec", ZOO.values(), ids=ZOO.keys())
def test_layer_shapes_and_comments_match_trace(spec):
    code = export_code(spec)
    net = load(code)["SurgeryNet"]().eval()
    shapes = {}
    for name, module in net.named_children():
        module.register_forward_hook(
            lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:]))
        )
    with torch.no_grad():
        net(torch.zeros(2, *spec.input))

    comments = dict(re.findall(r"x = self\.(\w+)\(x\)  # \(B, ([\d, ]+)\)", code))
    rows = trace(spec).rows
    assert list(shapes) == [row.name for row in rows] == list(comments)
    for row in rows:
        assert shapes[row.name] == row.output_shape
        assert tuple(int(v) for v in comments[row.name].split(", ")) == row.output_shape


def test_code_writes_in_channels_and_in_features():
    code = export_code(PRESETS["padded-lenet"].spec)

    assert "import torch\nfrom torch import nn\n" in code
    assert "class SurgeryNet(nn.Module):" in code
    assert (
        "self.conv2 = nn.Conv2d(in_channels=6, out_channels=16, kernel_size=5)" in code
    )
    assert "self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)" in code
    assert "self.fc1 = nn.Linear(in_features=576, out_features=120)" in code
    assert (
        "        x = torch.flatten(x, 1)  # (B, 576)\n        x = self.fc1(x)" in code
    )
    assert "torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)" in code
    assert "batch_size=4" in code
    assert 'if __name__ == "__main__":\n    main()' in code
    assert max(len(line) for line in code.splitlines()) <= 88


def test_invalid_spec_raises():
    spec = Spec(input=(3, 16, 16), blocks=(Conv(6, 30), FC(10)))

    with pytest.raises(
        SpecError,
        match=r"^cannot export: block 1 \(conv\): input 3x16x16 is smaller than "
        "kernel_size 30",
    ) as caught:
        export_code(spec)
    assert caught.value.index == 1


# ---------------------------------------------------------------- training


class FakeCifar10(torch.utils.data.Dataset):
    """Eight random RGB PIL images, as torchvision's CIFAR10 returns them."""

    def __init__(self, root, train, download, transform):
        generator = torch.Generator().manual_seed(int(train))
        self.pixels = torch.randint(0, 256, (8, 32, 32, 3), generator=generator)
        self.transform = transform

    def __len__(self):
        return len(self.pixels)

    def __getitem__(self, i):
        image = Image.fromarray(self.pixels[i].to(torch.uint8).numpy(), "RGB")
        return self.transform(image), i % 10


@pytest.fixture
def fake_cifar(monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCifar10)
    loader = torch.utils.data.DataLoader

    def in_process(*args, num_workers=0, **kwargs):
        return loader(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", in_process)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize(
    "spec",
    [TUTORIAL_LENET, ZOO["grey-28-gelu"], ZOO["non-square-100"]],
    ids=["tutorial", "grey-28", "non-square-100"],
)
def test_training_snippet_runs_on_fake_cifar(spec, fake_cifar, capsys):
    load(export_code(spec), "__main__")

    assert capsys.readouterr().out.startswith(
        "Accuracy of the network on the 8 test images: "
    )


def test_training_snippet_refuses_data_it_cannot_feed(fake_cifar):
    spec = Spec(input=(4, 32, 32), num_classes=5, blocks=(FC(5),))

    with pytest.raises(
        SystemExit,
        match="this net takes 4x32x32 images in 5 classes; CIFAR-10 has 3x32x32 "
        "images in 10 classes, so replace the data set below",
    ):
        load(export_code(spec), "__main__")


def test_importing_does_not_train(fake_cifar, capsys):
    namespace = load(export_code(TUTORIAL_LENET))

    assert "SurgeryNet" in namespace and "main" in namespace
    assert capsys.readouterr().out == ""
