"""Paired significance tests on per-query scores of two systems over the same queries.

- :func:`paired_t_test`: Student's paired t-test (two-sided), via scipy.
- :func:`paired_randomization_test`: the paired randomization (sign-flip permutation) test of
  the mean difference, two-sided. Under the null hypothesis each query's difference is as
  likely to have either sign; the p-value is the share of sign assignments whose mean
  difference is at least as far from zero as the observed one. When the queries with a
  non-zero difference allow at most ``resamples`` assignments it enumerates them all (exact),
  else it draws ``resamples`` random ones with a fixed seed and reports (hits + 1) /
  (resamples + 1).
- :func:`holm`: Holm's step-down correction of a family of p-values.
- :func:`interval`: the Student-t interval of a mean (over queries, or over seeds).
- :func:`against_reference`: both tests of a reference system against each other system, with
  Holm-corrected p-values over the primary comparisons.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
_TOLERANCE = 1e-12  # relative slack so that ties with the observed statistic count as hits


@dataclass(frozen=True)
class PairedComparison:
    """System A against system B on one metric (difference = A - B)."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    t: float
    p_t: float
    p_randomization: float
    resamples: int  # sign assignments counted (2^m when exact)
    exact: bool
    half_width: float | None = None  # of the 95% t-interval of mean_diff (None: one query)

    def as_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(t, two-sided p) of the paired t-test; identical scores give (0, 1)."""
    from scipy import stats

    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(diff) < 2:
        return 0.0, 1.0
    if np.allclose(diff, diff[0], rtol=0, atol=1e-15):  # zero variance: t undefined
        return (0.0, 1.0) if abs(diff[0]) <= 1e-15 else (math.copysign(math.inf, diff[0]), 0.0)
    result = stats.ttest_rel(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return float(result.statistic), float(result.pvalue)


def paired_randomization_test(a: Sequence[float], b: Sequence[float],
                              resamples: int = DEFAULT_RESAMPLES,
                              seed: int = DEFAULT_SEED) -> tuple[float, int, bool]:
    """(two-sided p, assignments counted, exact?) of the sign-flip test of the mean difference."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    nonzero = diff[diff != 0]
    if len(nonzero) == 0:
        return 1.0, 1, True
    observed = abs(nonzero.sum())
    threshold = observed - _TOLERANCE * max(observed, 1.0)
    m = len(nonzero)
    if 2 ** m <= resamples:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=m)))
        hits = int((np.abs(signs @ nonzero) >= threshold).sum())
        return hits / len(signs), len(signs), True
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, resamples, 1000):
        count = min(1000, resamples - start)
        signs = rng.choice((1.0, -1.0), size=(count, m))
        hits += int((np.abs(signs @ nonzero) >= threshold).sum())
    return (hits + 1) / (resamples + 1), resamples, False


def interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float | None]:
    """``(mean, half-width)`` of a Student-t interval for the mean; no width for one value."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    half = stats.t.ppf((1 + confidence) / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, float(half)


def compare(a: Sequence[float], b: Sequence[float], resamples: int = DEFAULT_RESAMPLES,
            seed: int = DEFAULT_SEED) -> PairedComparison:
    """Both tests and the means for per-query scores ``a`` and ``b`` (same query order)."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    t, p_t = paired_t_test(a, b)
    p_rand, counted, exact = paired_randomization_test(a, b, resamples, seed)
    mean_a, mean_b = float(np.mean(a)) if len(a) else 0.0, float(np.mean(b)) if len(b) else 0.0
    return PairedComparison(n=len(a), mean_a=mean_a, mean_b=mean_b, mean_diff=mean_a - mean_b,
                            t=t, p_t=p_t, p_randomization=p_rand, resamples=counted, exact=exact,
                            half_width=interval([x - y for x, y in zip(a, b, strict=True)])[1]
                            if len(a) else None)


def compare_per_query(a: Mapping[str, Mapping[str, float]], b: Mapping[str, Mapping[str, float]],
                      metric: str, resamples: int = DEFAULT_RESAMPLES,
                      seed: int = DEFAULT_SEED) -> PairedComparison:
    """Compare two ``{query id: {metric: value}}`` tables on one metric over the same queries."""
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise ValueError(f"the systems were scored on different queries (e.g. {only[0]!r})")
    ids = sorted(a)
    return compare([a[q][metric] for q in ids], [b[q][metric] for q in ids], resamples, seed)


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values of a family: the i-th smallest of m is multiplied by
    m - i + 1 (i from 1), made non-decreasing in that order, and capped at 1."""
    order = sorted(pvalues, key=lambda key: (pvalues[key], key))
    adjusted: dict[str, float] = {}
    running = 0.0
    for i, key in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * pvalues[key]))
        adjusted[key] = running
    return adjusted


P_VALUES = ("p_t", "p_randomization")


def against_reference(per_query: Mapping[str, Mapping[str, Mapping[str, float]]], reference: str,
                      metrics: Sequence[str], primary: Sequence[str],
                      resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
                      ) -> dict[str, dict[str, dict[str, float | int | bool]]]:
    """``{other: {metric: comparison}}`` of ``reference`` against every other system of
    ``per_query`` (``{system: {query id: {metric: value}}}``). The comparisons with the systems in
    ``primary`` form one family per metric: each gets ``p_t_holm`` and ``p_randomization_holm``.
    Raises ValueError (naming the system) when two systems were scored on different queries."""
    tests: dict[str, dict[str, dict[str, float | int | bool]]] = {}
    for other in per_query:
        if other == reference:
            continue
        try:
            tests[other] = {metric: compare_per_query(per_query[reference], per_query[other], metric,
                                                      resamples, seed).as_dict()
                            for metric in metrics}
        except ValueError as exc:
            raise ValueError(f"{other}: {exc}") from None
    family = [other for other in primary if other in tests]
    for metric in metrics:
        for key in P_VALUES:
            for other, p in holm({o: tests[o][metric][key] for o in family}).items():
                tests[other][metric][f"{key}_holm"] = p
    return tests
