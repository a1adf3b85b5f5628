"""`python -m surgery sweep`: a sweep from the command line, through the run store.

Registered by surgery/cli.py, whose helpers (errors, data loading, Ctrl-C) it
shares; like cli.py, this module prints. Runs go into the same SQLite store as
the app's, so the Experiments page shows them too.
"""

from __future__ import annotations

import argparse
import json
import math
import queue
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .cli import (
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CliError,
    _check_spec,
    _StopOnInterrupt,
    load_data,
    load_spec,
)
from .data import Cifar10
from .presets import PRESETS
from .runs import (
    RunEnded,
    RunManager,
    RunRecord,
    RunStatus,
    RunStore,
    default_concurrency,
)
from .spec import SpecError
from .stats import PairedDifference
from .sweep import (
    EXPERIMENTS,
    Budget,
    PointSummary,
    SweepEstimate,
    SweepSpec,
    compare_points,
    estimate_sweep,
    expand,
    submit_sweep,
    sweep_summary,
)
from .train import ConfigError

# How often the waiting loop wakes to notice Ctrl-C.
POLL_SECONDS = 0.5


def add_sweep(commands) -> None:
    parser = commands.add_parser(
        "sweep",
        help="train every combination of settings over several seeds and compare",
        description="Train each point (architecture x optimizer x lr x batch_size) "
        "once per seed, then print mean ± std per point and each point minus the "
        "first, paired by seed, with a 95% interval. Start from --experiment or "
        "give the lists; options given override the experiment's.",
    )
    add = parser.add_argument
    add(
        "--experiment",
        choices=list(EXPERIMENTS),
        metavar="NAME",
        help=f"a ready-made sweep: {', '.join(EXPERIMENTS)}",
    )
    add(
        "--preset",
        action="append",
        choices=list(PRESETS),
        metavar="NAME",
        help="an architecture to include (repeat for several)",
    )
    add(
        "--spec",
        action="append",
        metavar="SPEC.json",
        help="an architecture file to include (repeat for several)",
    )
    add("--batch-sizes", type=_ints, metavar="4,8", help="batch sizes")
    add("--lrs", type=_floats, metavar="0.001,0.003", help="learning rates")
    add("--optimizers", type=_words, metavar="sgd,adam", help="optimizers")
    add("--seeds", type=_ints, metavar="0,1,2", help="seeds (default: 0,1,2)")
    add("--epochs", type=int, help="epochs per run (default: 2)")
    add(
        "--budget",
        choices=[b.value for b in Budget],
        help="epochs: same epochs for every batch size; steps: same steps as "
        "--reference-batch (default: epochs)",
    )
    add(
        "--scale-lr",
        action="store_true",
        default=None,
        help="multiply lr by batch_size / reference batch",
    )
    add("--reference-batch", type=int, help="(default: 4)")
    add("--device", help="auto, cpu, cuda or mps (default: auto)")
    add("--data", default="data", metavar="DIR", help="CIFAR-10 folder")
    add("--no-download", action="store_true", help="never download CIFAR-10")
    add("--db", default="runs/runs.sqlite", help="run store (default: %(default)s)")
    add("--estimate-only", action="store_true", help="print the estimate and stop")
    add("--json", action="store_true", help="end with one JSON object")
    parser.set_defaults(run=run_sweep)


def _list(convert: Callable) -> Callable[[str], list]:
    def parse(text: str) -> list:
        items = [item.strip() for item in text.split(",")] if text.strip() else []
        if "" in items:
            raise argparse.ArgumentTypeError(
                f"{text!r} has an empty item between commas; write a list such "
                "as 4,8,16 with a value between each pair of commas"
            )
        try:
            return [convert(item) for item in items]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a comma-separated list such as 4,8,16"
            ) from None

    return parse


_ints, _floats, _words = _list(int), _list(float), _list(str)


def build_sweep(args: argparse.Namespace) -> SweepSpec:
    """The experiment (or the defaults) with every given option applied."""
    base = EXPERIMENTS[args.experiment].make() if args.experiment else SweepSpec()
    changes = {
        "batch_sizes": args.batch_sizes,
        "lrs": args.lrs,
        "optimizers": args.optimizers,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "budget": args.budget,
        "scale_lr": args.scale_lr,
        "reference_batch": args.reference_batch,
        "device": args.device,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    architectures = _architectures(args)
    if architectures:
        changes["architectures"] = architectures
    if args.experiment:
        changes["title"] = EXPERIMENTS[args.experiment].title
    try:
        sweep = replace(base, **changes)
        expand(sweep)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    for spec in sweep.architectures.values():
        _check_spec(spec)
    return sweep


def _architectures(args: argparse.Namespace) -> dict:
    chosen = {name: PRESETS[name].spec for name in args.preset or []}
    for path in args.spec or []:
        file_args = argparse.Namespace(spec=path, preset=None)
        chosen[Path(path).stem] = load_spec(file_args)
    return chosen


def run_sweep(args: argparse.Namespace) -> int:
    sweep = build_sweep(args)
    out = sys.stderr if args.json else sys.stdout
    data = None if args.estimate_only else load_data(args)
    estimate = _estimate(sweep, data)
    print(estimate_line(sweep, estimate), file=out, flush=True)
    if data is None:
        if args.json:
            print(json.dumps({"estimate": _estimate_json(estimate)}))
        return EXIT_OK

    store = RunStore(args.db)
    store.mark_interrupted()
    manager = RunManager(store, lambda: data, default_concurrency())
    ended: queue.Queue[RunRecord] = queue.Queue()

    def collect(run_id: int, event) -> None:
        if isinstance(event, RunEnded):
            ended.put(event.record)

    manager.add_listener(collect)
    try:
        group_id = submit_sweep(manager, sweep)
    except (SpecError, ConfigError) as exc:
        manager.shutdown()
        raise CliError(str(exc)) from None
    print(f"sweep {group_id} in {args.db}", file=out, flush=True)
    interrupted = _wait_all(manager, ended, estimate.runs, out)

    points = sweep_summary(store, group_id)
    if args.json:
        print(json.dumps(sweep_json(group_id, estimate, points)))
    else:
        print(summary_table(points))
    return _exit_code(store.list_runs(group_id=group_id), interrupted)


def _estimate(sweep: SweepSpec, data: Cifar10 | None) -> SweepEstimate:
    """Calibrated on this machine, for the loaded data's size when it is known."""
    if data is None:
        return estimate_sweep(sweep, concurrent=default_concurrency())
    return estimate_sweep(
        sweep,
        concurrent=default_concurrency(),
        n_images=len(data.train),
        n_test=len(data.test),
    )


def _wait_all(manager: RunManager, ended: queue.Queue, total: int, out) -> bool:
    """Print one line per finished run; Ctrl-C stops the rest. True if stopped."""
    finished, interrupted = 0, False
    with _StopOnInterrupt() as stop:
        while finished < total:
            if stop() and not interrupted:
                interrupted = True
                manager.shutdown(wait=False)
            try:
                record = ended.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            finished += 1
            print(run_line(record, finished, total), file=out, flush=True)
    manager.shutdown()
    return interrupted


def _exit_code(records: list[RunRecord], interrupted: bool) -> int:
    if interrupted:
        return EXIT_INTERRUPTED
    if any(r.status != RunStatus.DONE for r in records):
        return EXIT_DIVERGED
    return EXIT_OK


def estimate_line(sweep: SweepSpec, estimate: SweepEstimate) -> str:
    """'18 runs (6 points x 3 seeds), about 41 min; params: tutorial LeNet 62,006'."""
    params = ", ".join(f"{k} {v:,}" for k, v in estimate.params_per_arch.items())
    seeds = "1 seed" if len(sweep.seeds) == 1 else f"{len(sweep.seeds)} seeds"
    points = "1 point" if sweep.points == 1 else f"{sweep.points} points"
    runs = "1 run" if estimate.runs == 1 else f"{estimate.runs} runs"
    return (
        f"{runs} ({points} x {seeds}), "
        f"about {_duration(estimate.wall_seconds)} (measured on this machine "
        f"just now); params: {params}"
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run_line(record: RunRecord, finished: int, total: int) -> str:
    """One line per finished run: which, how it ended, its accuracy and time."""
    accuracy = record.test_accuracy
    acc = "" if accuracy is None else f"  test_acc {accuracy:.2f}%"
    seconds = record.elapsed_seconds
    took = "" if seconds is None else f"  {seconds:.0f}s"
    ending = record.status.value
    if record.status != RunStatus.DONE:
        ending += f" ({record.message})"
    return (
        f"[{finished}/{total}] run {record.id}  {record.label}  seed "
        f"{record.config.seed}  {ending}{acc}{took}"
    )


def summary_table(points: list[PointSummary]) -> str:
    """Mean ± std per point, and each point minus the first, paired by seed."""
    diffs = compare_points(points)
    header = ("point", "mean", "std", "seeds", f"minus {points[0].label} (95% CI)")
    rows = [header]
    for point, diff in zip(points, diffs):
        rows.append(
            (
                point.label,
                _number(point.mean),
                _number(point.std),
                str(point.n),
                _difference(diff),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    sentences = [d.sentence for d in diffs if d is not None]
    return "\n".join(lines + [""] + sentences)


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _difference(diff: PairedDifference | None) -> str:
    if diff is None:
        return ""
    if diff.n < 2:
        return f"{diff.mean:+.2f} (1 seed)"
    verdict = "noise" if diff.within_noise else "beyond noise"
    return f"{diff.mean:+.2f} ({diff.ci_low:+.2f} to {diff.ci_high:+.2f}) {verdict}"


def _estimate_json(estimate: SweepEstimate) -> dict:
    return {
        "runs": estimate.runs,
        "total_seconds": estimate.total_seconds,
        "wall_seconds": estimate.wall_seconds,
        "params_per_arch": estimate.params_per_arch,
        "mult_adds_per_arch": estimate.mult_adds_per_arch,
    }


def sweep_json(group_id: str, estimate: SweepEstimate, points: list) -> dict:
    diffs = compare_points(points)
    return {
        "group_id": group_id,
        "estimate": _estimate_json(estimate),
        "points": [
            {
                "label": p.label,
                "x": p.x,
                "mean": None if math.isnan(p.mean) else p.mean,
                "std": None if math.isnan(p.std) else p.std,
                "n": p.n,
                "values": p.values,
                "seeds": p.seeds,
            }
            for p in points
        ],
        "differences": [
            None
            if d is None
            else {
                "label": p.label,
                "mean": d.mean,
                "ci_low": None if math.isnan(d.ci_low) else d.ci_low,
                "ci_high": None if math.isnan(d.ci_high) else d.ci_high,
                "n": d.n,
                "within_noise": d.within_noise,
                "sentence": d.sentence,
            }
            for p, d in zip(points, diffs)
        ],
    }
