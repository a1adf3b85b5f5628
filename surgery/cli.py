"""The command line: `python -m surgery shapes|train|presets ...`.

The library reports through return values and events; this module is the one
place that prints. Each subcommand is a pair of functions, `_add_<name>` (its
arguments) and `_<name>` (the work), registered in SUBCOMMANDS.

Exit codes: 0 success, 1 a run that diverged, 2 bad input (arguments, spec file,
settings, data), 130 a run stopped with Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self, TextIO

from .data import CIFAR10_CLASSES, Cifar10, DataNotFoundError, load_cifar10
from .presets import PRESETS
from .shapes import ShapeReport, ShapeRow, format_shape, trace
from .spec import Spec, SpecError, describe, spec_from_json
from .train import (
    ConfigError,
    EpochDone,
    OptimizerName,
    Status,
    StepDone,
    TrainConfig,
    TrainResult,
    check_size,
    resolve_device,
    train,
)

EXIT_OK = 0
EXIT_DIVERGED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

CIFAR10_INPUT = (3, 32, 32)


class CliError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default sys.argv[1:]); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits on --help (0) and on bad arguments (2).
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE

    try:
        return args.run(args)
    except CliError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m surgery",
        description="ConvNet surgery: check a network's shapes, train it on CIFAR-10.",
        epilog="exit codes: 0 ok, 1 diverged, 2 bad input, 130 stopped with Ctrl-C",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    commands.required = True
    for add in SUBCOMMANDS:
        add(commands)
    return parser


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


# ---------------------------------------------------------------- specs


def _add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """SPEC.json or --preset NAME, exactly one of them."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "spec",
        nargs="?",
        metavar="SPEC.json",
        help="architecture file ('-' reads standard input)",
    )
    source.add_argument(
        "--preset",
        choices=list(PRESETS),
        metavar="NAME",
        help=f"a ready-made network instead: {', '.join(PRESETS)}",
    )


def load_spec(args: argparse.Namespace) -> Spec:
    """The spec named by `args.spec` (a file) or `args.preset`; CliError if unusable."""
    if args.preset is not None:
        return PRESETS[args.preset].spec

    text = _read_spec_text(args.spec)
    try:
        return spec_from_json(text)
    except SpecError as exc:
        name = "standard input" if args.spec == "-" else args.spec
        problem = str(exc).removeprefix("spec: ")
        raise CliError(f"spec file {name}: {problem}") from None


def _read_spec_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    if not path.strip():
        raise CliError(
            f"spec file {path!r} is an empty path; give the path of a .json file, "
            "- for standard input, or --preset NAME"
        )
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        problem = "no such file; check the path"
    except IsADirectoryError:
        problem = "it is a folder; give the path of a .json file"
    except PermissionError:
        problem = "permission denied; make the file readable"
    except UnicodeDecodeError:
        problem = "it is not UTF-8 text; save the architecture as a JSON file"
    except OSError as exc:
        problem = f"{exc.strerror or exc}; check the path"
    raise CliError(f"spec file {path} cannot be read: {problem}")


# ---------------------------------------------------------------- shapes


def _add_shapes(commands) -> None:
    parser = commands.add_parser(
        "shapes",
        help="print every block's Output Shape, Param # and Mult-Adds",
        description="Check a network block by block: Output Shape, Param # and "
        "Mult-Adds per image, and the flatten size before the first fc. "
        "Exit 2 when a block cannot run.",
    )
    _add_spec_arguments(parser)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead"
    )
    parser.set_defaults(run=_shapes)


def _shapes(args: argparse.Namespace) -> int:
    spec = load_spec(args)
    report = trace(spec)

    if args.json:
        print(json.dumps(shapes_json(report)))
    else:
        print(shapes_table(report))
    if report.error is not None:
        _error(report.error.message)
        return EXIT_USAGE
    return EXIT_OK


def shapes_json(report: ShapeReport) -> dict:
    """The report as plain JSON types: user blocks only, up to the failing one."""
    error = report.error
    return {
        "blocks": [
            {
                "index": row.index,
                "type": row.type,
                "output_shape": list(row.output_shape),
                "params": row.params,
                "mult_adds": row.mult_adds,
            }
            for row in report.rows
        ],
        "flatten": report.flatten,
        "error": None
        if error is None
        else {"index": error.index, "message": error.message},
    }


SHAPE_COLUMNS = ("#", "Block", "Layer", "Output Shape", "Param #", "Mult-Adds")
# Columns aligned right: the counts.
RIGHT_ALIGNED = {"Param #", "Mult-Adds"}


def shapes_table(report: ShapeReport) -> str:
    """A fixed-width table: the input, every block, the flatten, totals."""
    spec = report.spec
    lines = [("", "input", "", format_shape(spec.input), "", "")]
    first_fc = next((row for row in report.rows if row.type == "fc"), None)
    for row in report.rows:
        if row is first_fc and report.flatten is not None:
            lines.append(_flatten_line(report.flatten))
        lines.append(_row_line(row))

    error = report.error
    if error is not None and error.index <= len(spec.blocks):
        label = describe(spec.blocks[error.index - 1])
        lines.append((str(error.index), label, "", "fails", "", ""))
    totals = (_count(report.total_params), _count(report.total_mult_adds))
    lines.append(("", "total", "", "", *totals))

    flatten = "not reached" if report.flatten is None else str(report.flatten)
    return _format_table(lines) + f"\nflatten: {flatten}"


def _flatten_line(flatten: int) -> tuple[str, ...]:
    return ("", f"flatten -> {flatten}", "flatten", str(flatten), "0", "0")


def _row_line(row: ShapeRow) -> tuple[str, ...]:
    return (
        str(row.index),
        row.label,
        row.name,
        format_shape(row.output_shape),
        _count(row.params),
        _count(row.mult_adds),
    )


def _count(value: int) -> str:
    return f"{value:,}"


def _format_table(lines: list[tuple[str, ...]]) -> str:
    rows = [SHAPE_COLUMNS, *lines]
    widths = [max(len(row[i]) for row in rows) for i in range(len(SHAPE_COLUMNS))]
    rule = tuple("-" * width for width in widths)
    # The rule goes under the header and above the totals line.
    rows = [rows[0], rule, *rows[1:-1], rule, rows[-1]]
    return "\n".join(_format_row(row, widths) for row in rows)


def _format_row(row: tuple[str, ...], widths: list[int]) -> str:
    cells = [
        cell.rjust(width) if name in RIGHT_ALIGNED else cell.ljust(width)
        for cell, width, name in zip(row, widths, SHAPE_COLUMNS)
    ]
    return "  ".join(cells).rstrip()


# ---------------------------------------------------------------- presets


def _add_presets(commands) -> None:
    parser = commands.add_parser(
        "presets",
        help="list the ready-made networks",
        description="List the presets that --preset accepts, each with its lesson.",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON list with each spec"
    )
    parser.set_defaults(run=_presets)


def _presets(args: argparse.Namespace) -> int:
    if args.json:
        items = [
            {
                "name": p.name,
                "title": p.title,
                "lesson": p.lesson,
                "spec": p.spec.to_dict(),
            }
            for p in PRESETS.values()
        ]
        print(json.dumps(items))
        return EXIT_OK

    width = max(len(name) for name in PRESETS)
    indent = " " * (width + 2)
    for preset in PRESETS.values():
        print(f"{preset.name.ljust(width)}  {preset.title}")
        print(
            textwrap.fill(
                preset.lesson, 88, initial_indent=indent, subsequent_indent=indent
            )
        )
    return EXIT_OK


# ---------------------------------------------------------------- train


def _add_train(commands) -> None:
    parser = commands.add_parser(
        "train",
        help="train a network on CIFAR-10 and report its test accuracy",
        description="Train on CIFAR-10 with the PyTorch tutorial's settings unless "
        "told otherwise; one line per epoch, then the test accuracy. Ctrl-C stops "
        "after the current batch and still reports the result.",
    )
    _add_spec_arguments(parser)
    _add_train_arguments(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help="end with the result as one JSON line instead of the summary",
    )
    parser.set_defaults(run=_train)


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """--data and the TrainConfig fields, with TrainConfig's defaults."""
    defaults = TrainConfig()
    parser.add_argument(
        "--data",
        default="data",
        metavar="DIR",
        help="folder holding CIFAR-10 (default: %(default)s)",
    )
    parser.add_argument(
        "--no-download",
        action="store_true",
        help="never try torchvision's download when no local copy is found",
    )
    add = parser.add_argument
    add(
        "--epochs",
        type=int,
        default=defaults.epochs,
        help="passes over the training images (default: %(default)s)",
    )
    add(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="images per step (default: %(default)s)",
    )
    add(
        "--optimizer",
        choices=[name.value for name in OptimizerName],
        default=defaults.optimizer.value,
        help="(default: %(default)s)",
    )
    add(
        "--lr",
        type=float,
        default=defaults.lr,
        help="learning rate (default: %(default)s)",
    )
    add(
        "--momentum",
        type=float,
        default=defaults.momentum,
        help="SGD momentum (default: %(default)s)",
    )
    add(
        "--seed",
        type=int,
        default=defaults.seed,
        help="fixes the initial weights and the data order (default: %(default)s)",
    )
    add(
        "--device",
        default=defaults.device,
        help="auto, cpu, cuda or mps (default: %(default)s)",
    )


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig from the arguments; CliError names a setting out of range."""
    try:
        config = TrainConfig(
            optimizer=args.optimizer,
            lr=args.lr,
            momentum=args.momentum,
            batch_size=args.batch_size,
            epochs=args.epochs,
            seed=args.seed,
            device=args.device,
        )
        resolve_device(config.device)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    return config


def load_data(args: argparse.Namespace) -> Cifar10:
    """CIFAR-10 from `args.data`; CliError says where it was looked for."""
    print(f"loading CIFAR-10 from {args.data} ...", file=sys.stderr)
    try:
        data = load_cifar10(args.data, download=not args.no_download)
    except (DataNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(f"data: {data.source}", file=sys.stderr)
    return data


def _train(args: argparse.Namespace) -> int:
    spec = load_spec(args)
    config = train_config(args)
    _check_spec(spec, config)
    data = load_data(args)

    printer = _EpochPrinter(config.epochs, len(data.train))
    with _StopOnInterrupt() as stop:
        try:
            result = train(spec, config, data, on_event=printer, should_stop=stop)
        except (ConfigError, SpecError) as exc:
            raise CliError(str(exc)) from None
    printer.clear_progress()

    if args.json:
        payload = {
            **result.to_dict(),
            "spec": spec.to_dict(),
            "config": config.to_dict(),
        }
        print(json.dumps(payload))
    else:
        print(summary(result))
    if result.status is Status.DIVERGED:
        _error(result.message)
        return EXIT_DIVERGED
    return EXIT_INTERRUPTED if result.status is Status.STOPPED else EXIT_OK


def _check_spec(spec: Spec, config: TrainConfig | None = None) -> None:
    """Refuse a spec that cannot run, or not on CIFAR-10, before loading data."""
    report = trace(spec)
    if report.error is not None:
        raise CliError(f"{report.error.message} (see `python -m surgery shapes`)")
    if tuple(spec.input) != CIFAR10_INPUT:
        raise CliError(
            f"spec input {format_shape(spec.input)} does not match CIFAR-10's "
            f"{format_shape(CIFAR10_INPUT)} images; set input to [3, 32, 32]"
        )
    if spec.num_classes != len(CIFAR10_CLASSES):
        raise CliError(
            f"spec num_classes {spec.num_classes} does not match CIFAR-10's "
            f"{len(CIFAR10_CLASSES)} classes; set num_classes to 10 and the last "
            "fc's out_features to 10"
        )
    try:
        check_size(report, config or TrainConfig())
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def summary(result: TrainResult) -> str:
    """The end-of-run report: accuracy, per-class accuracy, time and speed."""
    width = max(len(name) for name in result.per_class)
    per_class = [
        f"  {name.ljust(width)}  {accuracy:6.2f}%"
        for name, accuracy in result.per_class.items()
    ]
    return "\n".join(
        [
            f"{result.status.value}: {result.message}",
            f"test accuracy {result.test_accuracy:.2f}%",
            "per-class accuracy:",
            *per_class,
            (
                f"seconds {result.seconds:.1f}  "
                f"images/s {result.images_per_second:.0f}  "
                f"steps {result.steps}  device {result.device}"
            ),
        ]
    )


@dataclass
class _EpochPrinter:
    """Prints one line per epoch; a progress line on stderr when it is a terminal."""

    epochs: int
    train_images: int
    out: TextIO = field(default_factory=lambda: sys.stdout)
    progress: TextIO | None = field(
        default_factory=lambda: sys.stderr if sys.stderr.isatty() else None
    )
    last_seconds: float = 0.0
    progress_width: int = 0

    def __call__(self, event) -> None:
        if isinstance(event, StepDone):
            self._show_progress(event)
        elif isinstance(event, EpochDone):
            self.clear_progress()
            print(self._epoch_line(event), file=self.out, flush=True)

    def _epoch_line(self, done: EpochDone) -> str:
        speed = self.train_images / max(done.seconds - self.last_seconds, 1e-9)
        self.last_seconds = done.seconds
        return (
            f"epoch {done.epoch}/{self.epochs}  step {done.step}  "
            f"train_loss {done.train_loss:.4f}  train_acc {done.train_accuracy:.2f}%  "
            f"test_acc {done.test_accuracy:.2f}%  {speed:.0f} img/s  "
            f"{done.seconds:.1f}s"
        )

    def _show_progress(self, step: StepDone) -> None:
        if self.progress is None:
            return
        line = (
            f"epoch {step.epoch}/{self.epochs}  step {step.step}/{step.total_steps}  "
            f"loss {step.loss:.4f}  {step.seconds:.1f}s"
        )
        self.progress_width = max(self.progress_width, len(line))
        self.progress.write("\r" + line.ljust(self.progress_width))
        self.progress.flush()

    def clear_progress(self) -> None:
        if self.progress is not None and self.progress_width:
            self.progress.write("\r" + " " * self.progress_width + "\r")
            self.progress.flush()
            self.progress_width = 0


class _StopOnInterrupt:
    """Ctrl-C once: finish the current batch, then stop. Twice: abort at once."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: Callable | int | None = None

    def __enter__(self) -> Self:
        # Signal handlers can only be set from the main thread.
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nstopping after this batch (Ctrl-C again to abort)",
            file=sys.stderr,
            flush=True,
        )


def _add_sweep(commands) -> None:
    # Imported here: surgery/sweep_cli.py builds on this module's helpers.
    from .sweep_cli import add_sweep

    add_sweep(commands)


SUBCOMMANDS: tuple[Callable, ...] = (_add_shapes, _add_train, _add_presets, _add_sweep)
