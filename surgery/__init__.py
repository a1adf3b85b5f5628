"""ConvNet surgery: compose a LeNet from blocks, check every shape, train it."""

from .data import (
    CIFAR10_CLASSES,
    Cifar10,
    DataNotFoundError,
    ImageSet,
    batches,
    epoch_order,
    load_cifar10,
)
from .model import build_model
from .presets import PRESETS, Preset, get_preset, preset_names
from .shapes import BlockError, ShapeReport, ShapeRow, format_shape, trace
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
    block_to_dict,
    describe,
    parse_block,
    spec_from_dict,
    spec_from_json,
)
from .train import (
    ConfigError,
    EpochDone,
    Event,
    OptimizerName,
    Status,
    StepDone,
    TrainConfig,
    TrainResult,
    TrainStarted,
    evaluate,
    resolve_device,
    train,
)
