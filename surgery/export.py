"""A stack as a standalone PyTorch script: an nn.Module and the tutorial's training.

The class creates its layers in block order with the names build_model uses, so
the same seed gives the same initial weights and state dicts load both ways.
"""

from __future__ import annotations

from .layers import Shape
from .shapes import ShapeReport, ShapeRow, format_shape, trace
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
    Spec,
    SpecError,
    describe,
)

CLASS_NAME = "SurgeryNet"

ACTIVATION_CODE = {
    Activation.RELU: "nn.ReLU()",
    Activation.TANH: "nn.Tanh()",
    Activation.SIGMOID: "nn.Sigmoid()",
    Activation.GELU: "nn.GELU()",
    Activation.LEAKY_RELU: "nn.LeakyReLU()",
    Activation.ELU: "nn.ELU()",
}


def export_code(spec: Spec) -> str:
    """Runnable PyTorch code for `spec`: imports, the model class and training.

    Importing or exec'ing the code defines the class only; training runs under
    `if __name__ == "__main__":`. Raises SpecError if the stack cannot run.
    """
    report = trace(spec)
    if report.error is not None:
        raise SpecError(f"cannot export: {report.error.message}", report.error.index)
    parts = [
        _header(report),
        _class_code(report),
        _training_code(spec),
    ]
    return "\n\n".join(parts)


def _header(report: ShapeReport) -> str:
    spec = report.spec
    chain = _wrap_chain([describe(b) for b in spec.blocks])
    return (
        f'"""{CLASS_NAME}: a ConvNet surgery stack as plain PyTorch.\n\n'
        f"Input {format_shape(spec.input)}, {spec.num_classes} classes, "
        f"{report.total_params:,} parameters.\n"
        f"{chain}\n"
        '"""\n\n'
        "import torch\n"
        "from torch import nn"
    )


def _wrap_chain(labels: list[str], width: int = 88) -> str:
    """'Blocks: conv 6 k5 -> relu -> ...', broken only between blocks."""
    lines = ["Blocks:"]
    for number, label in enumerate(labels):
        piece = f" {label}" if number == 0 else f" -> {label}"
        if len(lines[-1]) + len(piece) > width:
            lines.append(piece.strip())
        else:
            lines[-1] += piece
    return "\n".join(lines)


def _batch_shape(shape: Shape) -> str:
    return "(B, " + ", ".join(str(v) for v in shape) + ")"


# ---------------------------------------------------------------- the class


def layer_code(block: Block, in_shape: Shape) -> str:
    """The constructor call, with in_channels / in_features written out."""
    if isinstance(block, Pad):
        return f"nn.ZeroPad2d({block.padding})"
    if isinstance(block, Conv):
        return _conv_code(block, in_shape[0])
    if isinstance(block, Pool):
        return _pool_code(block)
    if isinstance(block, Act):
        return ACTIVATION_CODE[block.fn]
    if isinstance(block, FC):
        return (
            f"nn.Linear(in_features={in_shape[0]}, out_features={block.out_features})"
        )
    if isinstance(block, Dropout):
        return f"nn.Dropout(p={block.p!r})"
    if isinstance(block, BatchNorm):
        dims = "2d" if len(in_shape) == 3 else "1d"
        return f"nn.BatchNorm{dims}(num_features={in_shape[0]})"
    raise TypeError(f"unknown block {block!r}")


def _conv_code(block: Conv, in_channels: int) -> str:
    args = [
        f"in_channels={in_channels}",
        f"out_channels={block.out_channels}",
        f"kernel_size={block.kernel_size}",
    ]
    for name, default in (("stride", 1), ("padding", 0), ("dilation", 1)):
        if getattr(block, name) != default:
            args.append(f"{name}={getattr(block, name)}")
    return f"nn.Conv2d({', '.join(args)})"


def _pool_code(block: Pool) -> str:
    cls = "MaxPool2d" if block.kind is PoolKind.MAX else "AvgPool2d"
    args = [f"kernel_size={block.kernel_size}", f"stride={block.effective_stride}"]
    if block.padding:
        args.append(f"padding={block.padding}")
    if block.ceil_mode:
        args.append("ceil_mode=True")
    return f"nn.{cls}({', '.join(args)})"


def _class_code(report: ShapeReport) -> str:
    init = [_assign(row.name, _layer(report, row)) for row in report.rows]
    forward = [f"        # x: {_batch_shape(report.spec.input)}"]
    for row in report.rows:
        if row.type == "fc" and len(_before(report, row)) == 3:
            forward.append(
                f"        x = torch.flatten(x, 1)  # {_batch_shape(row.input_shape)}"
            )
        forward.append(
            f"        x = self.{row.name}(x)  # {_batch_shape(row.output_shape)}"
        )
    lines = [
        f"class {CLASS_NAME}(nn.Module):",
        "    def __init__(self) -> None:",
        "        super().__init__()",
        *init,
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        *forward,
        "        return x",
    ]
    return "\n" + "\n".join(lines)


def _assign(name: str, call: str) -> str:
    """`self.name = call`, split over lines as ruff format would past 88 columns."""
    line = f"        self.{name} = {call}"
    if len(line) <= 88:
        return line
    head, args = call.split("(", 1)
    return f"        self.{name} = {head}(\n            {args[:-1]}\n        )"


def _layer(report: ShapeReport, row: ShapeRow) -> str:
    return layer_code(report.spec.blocks[row.index - 1], row.input_shape)


def _before(report: ShapeReport, row: ShapeRow) -> Shape:
    return (
        report.rows[row.index - 2].output_shape if row.index > 1 else report.spec.input
    )


# ---------------------------------------------------------------- training


def _transform_code(spec: Spec) -> str:
    channels, height, width = spec.input
    steps = []
    if channels == 1:
        steps.append("transforms.Grayscale(num_output_channels=1)")
    if (height, width) != (32, 32):
        steps.append(f"transforms.Resize(({height}, {width}))")
    steps.append("transforms.ToTensor()")
    half = "(0.5,)" if channels == 1 else "(" + ", ".join(["0.5"] * channels) + ")"
    steps.append(f"transforms.Normalize({half}, {half})")
    body = "".join(f"            {step},\n" for step in steps)
    return f"    transform = transforms.Compose(\n        [\n{body}        ]\n    )"


def _training_code(spec: Spec) -> str:
    """The CIFAR-10 tutorial's loop: SGD lr 0.001 momentum 0.9, batch 4, 2 epochs."""
    guard = ""
    if spec.input[0] not in (1, 3) or spec.num_classes < 10:
        guard = (
            "    raise SystemExit(\n"
            f'        "this net takes {format_shape(spec.input)} images in '
            f'{spec.num_classes} classes; CIFAR-10 has 3x32x32 images in 10 "\n'
            '        "classes, so replace the data set below"\n'
            "    )\n"
        )
    return TRAINING_TEMPLATE.format(
        guard=guard, transform=_transform_code(spec), name=CLASS_NAME
    )


TRAINING_TEMPLATE = '''
def main() -> None:
    """Train on CIFAR-10 as the PyTorch tutorial does, then test."""
{guard}    import torchvision
    from torchvision import transforms

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
{transform}
    trainset = torchvision.datasets.CIFAR10(
        root="./data", train=True, download=True, transform=transform
    )
    testset = torchvision.datasets.CIFAR10(
        root="./data", train=False, download=True, transform=transform
    )
    trainloader = torch.utils.data.DataLoader(
        trainset, batch_size=4, shuffle=True, num_workers=2
    )
    testloader = torch.utils.data.DataLoader(
        testset, batch_size=4, shuffle=False, num_workers=2
    )

    net = {name}().to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)

    for epoch in range(2):
        net.train()
        running_loss = 0.0
        for step, (images, labels) in enumerate(trainloader, start=1):
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            logits = net(images)
            loss = criterion(logits, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            if step % 2000 == 0:
                average = running_loss / 2000
                print(f"epoch {{epoch + 1}} step {{step}}: loss {{average:.3f}}")
                running_loss = 0.0

    net.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in testloader:
            images, labels = images.to(device), labels.to(device)
            predicted = net(images).argmax(dim=1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    print(
        f"Accuracy of the network on the {{total}} test images: "
        f"{{100 * correct / total:.1f}} %"
    )


if __name__ == "__main__":
    main()
'''
