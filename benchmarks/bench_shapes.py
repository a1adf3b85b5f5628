"""How long one live shape check takes: `surgery.shapes.trace` per spec.

The builder re-checks the whole stack on every edit, so a check must stay well
under a frame of interaction. Target: p95 below 10 ms for a stack never seen
before ("cold": every cache in surgery.shapes cleared before each call); "repeat"
times the same stack again, as when a page reruns without an edit.

    python benchmarks/bench_shapes.py [--calls 300] [--warmup 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import surgery.shapes
from surgery.presets import PRESETS
from surgery.shapes import trace
from surgery.spec import Spec

TARGET_P95_MS = 10.0
SPECS = ("padded-lenet", "tutorial-lenet")


def clear_caches() -> None:
    """Forget every memoised result in surgery.shapes (functools caches)."""
    for value in vars(surgery.shapes).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()


def time_trace(spec: Spec, calls: int, warmup: int, cold: bool) -> list[float]:
    """Milliseconds per trace(spec) call, after `warmup` untimed calls."""
    for _ in range(warmup):
        trace(spec)

    timings = []
    for _ in range(calls):
        if cold:
            clear_caches()
        began = time.perf_counter()
        trace(spec)
        timings.append((time.perf_counter() - began) * 1000)
    return timings


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (1-99) by the inclusive method."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()

    print(f"trace() over {args.calls} calls after {args.warmup} warm-up calls")
    print(f"{'spec':<16}{'mode':<8}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    missed = []
    for name in SPECS:
        for mode in ("cold", "repeat"):
            spec = PRESETS[name].spec
            timings = time_trace(spec, args.calls, args.warmup, mode == "cold")
            p95 = percentile(timings, 95)
            print(
                f"{name:<16}{mode:<8}{percentile(timings, 50):>9.2f}{p95:>9.2f}"
                f"{max(timings):>9.2f}"
            )
            if mode == "cold" and p95 >= TARGET_P95_MS:
                missed.append(name)

    verdict = f"MISSED by {', '.join(missed)}" if missed else "met"
    print(f"target: cold p95 < {TARGET_P95_MS:g} ms: {verdict}")
    raise SystemExit(1 if missed else 0)


if __name__ == "__main__":
    main()
