"""Seed statistics on numbers worked out by hand."""

from __future__ import annotations

import math

import pytest

from surgery.stats import (
    Spread,
    noise_band,
    paired_difference,
    seed_spread,
    t_critical,
)


def test_seed_spread_of_four_values():
    # mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5; 5 / 3 = 1.6667.
    spread = seed_spread([1.0, 2.0, 3.0, 4.0])

    assert spread.mean == 2.5
    assert spread.std == pytest.approx(math.sqrt(5 / 3))
    assert (spread.low, spread.high, spread.n) == (1.0, 4.0, 4)
    assert str(spread) == "2.5 ± 1.3 (4 seeds)"


def test_seed_spread_of_one_value_has_no_spread():
    assert seed_spread([61.25]) == Spread(61.25, 0.0, 61.25, 61.25, 1)
    assert str(seed_spread([61.25])) == "61.2 (1 seed)"


def test_noise_band_is_mean_plus_minus_two_sample_std():
    # mean 61, std sqrt(((60-61)^2 + (62-61)^2) / 1) = sqrt(2).
    low, high = noise_band([60.0, 62.0])

    assert low == pytest.approx(61 - 2 * math.sqrt(2))
    assert high == pytest.approx(61 + 2 * math.sqrt(2))


def test_noise_band_needs_two_runs():
    with pytest.raises(ValueError, match="noise_band needs at least 2 runs, got 1"):
        noise_band([60.0])


@pytest.mark.parametrize(
    ("df", "expected"),
    [(1, 12.7062), (2, 4.3027), (4, 2.7764), (30, 2.0423), (40, 2.0211), (120, 1.9799)],
    ids=["df1", "df2", "df4", "df30", "df40-expansion", "df120-expansion"],
)
def test_t_critical_matches_the_tables(df, expected):
    assert t_critical(df) == pytest.approx(expected, abs=1e-4)


def test_paired_difference_within_the_noise():
    # Differences 2, 1, 0: mean 1, std 1, half width 4.3027 / sqrt(3) = 2.4842.
    diff = paired_difference([62.0, 60.0, 61.0], [60.0, 59.0, 61.0], "Adam", "SGD")

    assert diff.mean == pytest.approx(1.0)
    assert diff.std == pytest.approx(1.0)
    assert diff.ci_low == pytest.approx(1 - 2.48417, abs=1e-4)
    assert diff.ci_high == pytest.approx(1 + 2.48417, abs=1e-4)
    assert diff.n == 3
    assert diff.within_noise is True
    assert diff.sentence == (
        "Adam minus SGD: +1.0 points (95% CI -1.5 to +3.5, 3 seeds): "
        "within the noise; run more seeds to tell them apart."
    )


def test_paired_difference_above_the_noise():
    # Differences 3, 4, 5: mean 4, std 1, interval 1.5158 to 6.4842.
    diff = paired_difference(
        [63.0, 64.0, 65.0], [60.0, 60.0, 60.0], "padded", "tutorial"
    )

    assert (diff.ci_low, diff.ci_high) == pytest.approx((1.51583, 6.48417), abs=1e-4)
    assert diff.within_noise is False
    assert diff.sentence == (
        "padded minus tutorial: +4.0 points (95% CI +1.5 to +6.5, 3 seeds): "
        "above the noise: padded is better."
    )


def test_paired_difference_of_a_worse_candidate():
    diff = paired_difference([55.0, 56.0], [60.0, 60.0], "batch 64", "batch 4")

    # Differences -5, -4: mean -4.5, std 0.7071, half width 12.7062 * 0.5 = 6.3531.
    assert diff.within_noise is True
    assert (diff.ci_low, diff.ci_high) == pytest.approx((-10.8531, 1.8531), abs=1e-4)

    clear = paired_difference([55.0, 56.0, 55.5], [60.0, 60.0, 60.0], "b64", "b4")
    assert clear.within_noise is False
    assert clear.sentence.endswith("above the noise: b64 is worse.")


def test_pairing_is_by_seed_not_by_position():
    # Seeds 0 and 2 are shared; seed 1 of the candidate has no partner.
    diff = paired_difference({2: 70.0, 0: 61.0, 1: 99.0}, {0: 60.0, 2: 66.0})

    assert diff.n == 2
    assert diff.mean == pytest.approx((1.0 + 4.0) / 2)


def test_shuffled_seeds_change_nothing():
    a = paired_difference({0: 61.0, 1: 62.0, 2: 65.0}, {0: 60.0, 1: 60.0, 2: 61.0})
    b = paired_difference({2: 65.0, 0: 61.0, 1: 62.0}, {1: 60.0, 2: 61.0, 0: 60.0})

    assert a == b


def test_a_single_pair_has_no_interval():
    diff = paired_difference([62.0], [60.0], "Adam", "SGD")

    assert diff.mean == 2.0
    assert math.isnan(diff.ci_low) and math.isnan(diff.ci_high)
    assert diff.sentence == (
        "Adam minus SGD: +2.0 points (1 seed): one seed gives no estimate of the "
        "noise; run 2 or more seeds to compare them."
    )


def test_identical_differences_give_a_zero_width_interval():
    diff = paired_difference([61.0, 62.0], [60.0, 61.0])

    assert (diff.ci_low, diff.ci_high) == (1.0, 1.0)
    assert diff.within_noise is False


@pytest.mark.parametrize(
    ("candidate", "baseline", "error", "message"),
    [
        ([1.0, 2.0], [1.0], ValueError, "candidate has 2 values and baseline 1"),
        ([], [], ValueError, "candidate has 0 values and baseline 0"),
        (
            {0: 1.0},
            {1: 2.0},
            ValueError,
            r"no seed is in both: candidate has seeds \[0\]",
        ),
        ({0: 1.0}, [1.0], TypeError, "both be lists or both be dicts"),
        ([float("nan")], [1.0], ValueError, "holds nan, which is not a finite number"),
    ],
    ids=["lengths", "empty", "no-common-seed", "mixed", "nan"],
)
def test_paired_difference_refuses_bad_input(candidate, baseline, error, message):
    with pytest.raises(error, match=message):
        paired_difference(candidate, baseline)


def test_seed_spread_refuses_an_empty_list():
    with pytest.raises(ValueError, match="values is empty; pass at least one accuracy"):
        seed_spread([])
