"""Building the trainable PyTorch model for a spec."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .layers import make_layer
from .shapes import trace
from .spec import FC, Spec, SpecError


def build_model(spec: Spec, device: torch.device | str | None = None) -> nn.Sequential:
    """An nn.Sequential with modules named conv1, pool1, flatten, fc1, ...

    Raises SpecError with the failing block's message when the spec cannot run.
    Parameters are created in block order, so a seed fixes the initial weights.
    """
    report = trace(spec)
    if report.error is not None:
        raise SpecError(report.error.message, report.error.index)

    modules: OrderedDict[str, nn.Module] = OrderedDict()
    device = device or "cpu"
    for row, block in zip(report.rows, spec.blocks):
        if isinstance(block, FC) and "flatten" not in modules:
            modules["flatten"] = nn.Flatten()
        modules[row.name] = make_layer(block, row.input_shape, device=device)
    return nn.Sequential(modules)
