"""Seed noise: how far runs that differ only in their seed spread, and whether a
difference between two settings is larger than that.

Accuracies are in percent, so differences are in percentage points. Every
interval here is a 95% interval from Student's t distribution.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Two-sided 95% critical values of Student's t, for 1 to 30 degrees of freedom.
T_975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
_Z_975 = 1.959963984540054

Values = Sequence[float] | Mapping[int, float]


def t_critical(df: int) -> float:
    """The 97.5th percentile of Student's t with `df` degrees of freedom."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df {df!r} is not a whole number of 1 or more")
    if df <= len(T_975):
        return T_975[df - 1]
    # Cornish-Fisher expansion around the normal quantile: within 1e-4 above 30.
    z = _Z_975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Spread:
    """Runs of one setting over seeds: mean, sample std (n - 1), min, max, count.

    `std` is 0.0 for a single run: one seed says nothing about the noise.
    """

    mean: float
    std: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        seeds = "1 seed" if self.n == 1 else f"{self.n} seeds"
        if self.n == 1:
            return f"{self.mean:.1f} ({seeds})"
        return f"{self.mean:.1f} ± {self.std:.1f} ({seeds})"


def seed_spread(values: Sequence[float]) -> Spread:
    """Mean, sample standard deviation, min and max of one setting's runs."""
    values = _finite(values, "values")
    n = len(values)
    mean = sum(values) / n
    std = _sample_std(values, mean)
    return Spread(mean, std, min(values), max(values), n)


def noise_band(values: Sequence[float]) -> tuple[float, float]:
    """mean ± 2 sample standard deviations of runs that differ only in their seed.

    Roughly where one more run of the same setting lands (about 95% of the time
    with many seeds; with 2 or 3 seeds the band is itself uncertain). A single
    run of another setting that lands inside it tells nothing.
    """
    values = _finite(values, "values")
    if len(values) < 2:
        raise ValueError(
            f"noise_band needs at least 2 runs, got {len(values)}; one seed says "
            "nothing about the noise, so run 2 or more seeds"
        )
    spread = seed_spread(values)
    return spread.mean - 2 * spread.std, spread.mean + 2 * spread.std


@dataclass(frozen=True)
class PairedDifference:
    """candidate minus baseline, run by run with the same seeds.

    `ci_low`/`ci_high` bound the mean difference (95%, Student's t with n - 1
    degrees of freedom); they are NaN, like `std`, for a single pair.
    `within_noise` is True when the interval contains 0.
    """

    mean: float
    std: float
    ci_low: float
    ci_high: float
    n: int
    within_noise: bool
    sentence: str


def paired_difference(
    candidate: Values,
    baseline: Values,
    candidate_label: str = "candidate",
    baseline_label: str = "baseline",
    unit: str = "points",
) -> PairedDifference:
    """Compare two settings trained with the same seeds.

    Pairing by seed removes what the two runs of a seed share (initial weights,
    data order), so the interval is tighter than comparing two means.

    Args:
        candidate: accuracies of the new setting: a list in seed order, or a
            dict seed -> accuracy.
        baseline: the same for the setting compared against; lists pair by
            position, dicts by their common seeds.
        candidate_label, baseline_label: names used in the sentence.
        unit: the unit of a difference, for the sentence.
    """
    pairs = _pairs(candidate, baseline)
    diffs = [c - b for c, b in pairs]
    n = len(diffs)
    mean = sum(diffs) / n
    if n == 1:
        nan = math.nan
        sentence = (
            f"{candidate_label} minus {baseline_label}: {mean:+.1f} {unit} "
            "(1 seed): one seed gives no estimate of the noise; run 2 or more "
            "seeds to compare them."
        )
        return PairedDifference(mean, nan, nan, nan, 1, True, sentence)

    std = _sample_std(diffs, mean)
    half = t_critical(n - 1) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    within = low <= 0.0 <= high
    verdict = _verdict(within, mean, candidate_label)
    sentence = (
        f"{candidate_label} minus {baseline_label}: {mean:+.1f} {unit} "
        f"(95% CI {low:+.1f} to {high:+.1f}, {n} seeds): {verdict}"
    )
    return PairedDifference(mean, std, low, high, n, within, sentence)


def _verdict(within: bool, mean: float, candidate_label: str) -> str:
    if within:
        return "within the noise; run more seeds to tell them apart."
    better = "better" if mean > 0 else "worse"
    return f"above the noise: {candidate_label} is {better}."


def _pairs(candidate: Values, baseline: Values) -> list[tuple[float, float]]:
    """(candidate, baseline) pairs: by seed for dicts, by position for lists."""
    if isinstance(candidate, Mapping) and isinstance(baseline, Mapping):
        seeds = [seed for seed in candidate if seed in baseline]
        if not seeds:
            raise ValueError(
                f"no seed is in both: candidate has seeds {sorted(candidate)}, "
                f"baseline has {sorted(baseline)}; train both with the same seeds"
            )
        pairs = [(candidate[s], baseline[s]) for s in sorted(seeds)]
    elif isinstance(candidate, Mapping) or isinstance(baseline, Mapping):
        raise TypeError(
            "candidate and baseline must both be lists or both be dicts seed -> value"
        )
    else:
        if len(candidate) != len(baseline) or not candidate:
            raise ValueError(
                f"candidate has {len(candidate)} values and baseline "
                f"{len(baseline)}; pass one value per seed for the same seeds, "
                "at least one"
            )
        pairs = list(zip(candidate, baseline))
    flat = _finite([v for pair in pairs for v in pair], "values")
    return list(zip(flat[::2], flat[1::2]))


def _finite(values: Sequence[float], name: str) -> list[float]:
    values = [float(v) for v in values]
    if not values:
        raise ValueError(f"{name} is empty; pass at least one accuracy")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(
            f"{name} holds {bad[0]}, which is not a finite number; "
            "leave out runs that diverged or failed"
        )
    return values


def _sample_std(values: Sequence[float], mean: float) -> float:
    """Standard deviation with n - 1 in the denominator; 0.0 for one value."""
    if len(values) < 2:
        return 0.0
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
