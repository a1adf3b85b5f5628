"""ConvNet surgery: compose a LeNet from blocks, check every shape, train it."""

from .calibrate import estimate_seconds
from .data import (
    CIFAR10_CLASSES,
    NORMALIZE_MEAN,
    NORMALIZE_STD,
    Cifar10,
    DataNotFoundError,
    ImageSet,
    batches,
    epoch_order,
    load_cifar10,
    normalize,
)
from .diff import diff_specs
from .explain import (
    BlockExplanation,
    FailureExplanation,
    QuizResult,
    check_answer,
    explain_block,
    explain_failure,
    flatten_derivation,
)
from .export import export_code
from .fixes import Fix, suggest_fixes
from .model import build_model
from .presets import PRESETS, Preset, get_preset, preset_names
from .runs import RunManager, RunRecord, RunStatus, RunStore, get_manager
from .shapes import BlockError, ShapeReport, ShapeRow, format_shape, trace
from .share import decode_spec, encode_spec, spec_from_upload
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
from .stats import PairedDifference, Spread, noise_band, paired_difference, seed_spread
from .sweep import (
    EXPERIMENTS,
    Budget,
    SweepSpec,
    estimate_sweep,
    expand,
    submit_sweep,
    sweep_summary,
)
