"""Paired significance tests against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sptar.reporting.significance import (
    compare,
    compare_per_query,
    paired_randomization_test,
    paired_t_test,
)


def test_randomization_test_enumerates_every_sign_assignment():
    # differences 1, 2, 3: the 8 signed sums are +-6, +-4, +-2, 0, 0; only +-6 reach |6|
    assert paired_randomization_test([1, 2, 3], [0, 0, 0]) == (0.25, 8, True)
    # a query with equal scores changes nothing
    assert paired_randomization_test([1, 2, 3, 5], [0, 0, 0, 5]) == (0.25, 8, True)
    # five equal differences: only all-plus and all-minus reach |5| -> 2 / 32
    assert paired_randomization_test([1.0] * 5, [0.0] * 5) == (2 / 32, 32, True)
    # differences +1, -1: the observed sum 0 is reached by all 4 assignments
    assert paired_randomization_test([1, 0], [0, 1]) == (1.0, 4, True)
    assert paired_randomization_test([0.3, 0.4], [0.3, 0.4]) == (1.0, 1, True)


def test_randomization_test_counts_ties_despite_rounding():
    # differences 0.1, 0.2, -0.1: observed sum 0.2; the signed sums +-0.4, +-0.2
    # (twice), 0, 0 reach |0.2| 6 times out of 8, though in floating point 0.1 + 0.2 - 0.1 != 0.2
    assert paired_randomization_test([0.1, 0.2, 0.0], [0.0, 0.0, 0.1]) == (0.75, 8, True)


def test_sampled_randomization_test_is_seeded_and_close_to_exact():
    rng = np.random.default_rng(5)
    a, b = rng.random(14), rng.random(14)
    exact, counted, is_exact = paired_randomization_test(a, b, resamples=20_000)
    assert is_exact and counted == 2 ** 14
    sampled, counted, is_exact = paired_randomization_test(a, b, resamples=4000, seed=1)
    assert not is_exact and counted == 4000
    assert sampled == paired_randomization_test(a, b, resamples=4000, seed=1)[0]
    assert abs(sampled - exact) < 0.03


def test_paired_t_test_matches_the_closed_form_for_three_degrees_of_freedom():
    # differences 1, 2, 3, 4: mean 2.5, sd sqrt(5/3), t = 2.5 / (sd / 2) = sqrt(15), df 3;
    # the t(3) CDF is 1/2 + (x / (sqrt(3) (1 + x^2/3)) + atan(x / sqrt(3))) / pi
    t, p = paired_t_test([1, 2, 3, 4], [0, 0, 0, 0])
    assert t == pytest.approx(math.sqrt(15))
    assert p == pytest.approx(1 - 2 / math.pi * (math.sqrt(5) / 6 + math.atan(math.sqrt(5))))
    assert p == pytest.approx(0.03046, abs=1e-5)
    assert paired_t_test([1, 2, 3, 4], [1, 2, 3, 4]) == (0.0, 1.0)
    t, p = paired_t_test([0.2, 0.3], [0.7, 0.8])  # constant difference: t undefined, p 0
    assert t == -math.inf and p == 0.0


def test_compare_reports_means_and_both_p_values():
    result = compare([1, 2, 3, 4], [0, 0, 0, 0])
    assert (result.n, result.mean_a, result.mean_b, result.mean_diff) == (4, 2.5, 0.0, 2.5)
    assert result.p_randomization == 2 / 16 and result.exact and result.resamples == 16
    assert result.p_t == pytest.approx(0.03046, abs=1e-5)
    with pytest.raises(ValueError):
        compare([1, 2], [1])


def test_compare_per_query_pairs_by_query_id():
    a = {"q1": {"NDCG@10": 1.0}, "q2": {"NDCG@10": 0.5}, "q3": {"NDCG@10": 0.0}}
    b = {"q3": {"NDCG@10": 0.0}, "q1": {"NDCG@10": 0.0}, "q2": {"NDCG@10": 0.5}}
    result = compare_per_query(a, b, "NDCG@10")
    assert result.mean_diff == pytest.approx(1 / 3) and result.p_randomization == 1.0  # both signs of +1
    with pytest.raises(ValueError, match="different queries"):
        compare_per_query(a, {"q1": {"NDCG@10": 1.0}}, "NDCG@10")


def test_holm_multiplies_in_order_and_stays_monotone():
    from sptar.reporting.significance import holm

    # sorted: a 0.01 x 3 = 0.03; c 0.03 x 2 = 0.06; b 0.04 x 1 = 0.04 -> raised to 0.06
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    assert holm({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}  # capped at 1
    assert holm({"only": 0.02}) == {"only": 0.02} and holm({}) == {}
