"""Evidence from cross-validation scores: intervals and the corrected resampled t-test.

Fold scores share training rows, so the naive t statistic is too confident. Nadeau and Bengio
(2003, "Inference for the Generalization Error") correct the variance by (1/k + n_test/n_train);
both the interval of a mean and the paired test between two models use that correction.

Pure Python (the Student t distribution through the regularised incomplete beta function), so the
operator can rank models without numpy or scipy; the tests check it against scipy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t (bisection on the distribution function)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    # Solve t_sf(t) = 1 - q on t >= 0, where the tail is computed without cancellation.
    tail, low, high = 1.0 - q, 0.0, 1.0
    while t_sf(high, df) > tail:
        low, high = high, high * 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if t_sf(mid, df) > tail:
            low = mid
        else:
            high = mid
        if high - low <= 1e-15 * max(1.0, high):
            break
    return (low + high) / 2.0


def corrected_interval(
    scores: Sequence[float],
    *,
    test_train_ratio: float,
    confidence: float = 0.95,
    bounds: tuple[float | None, float | None] = (None, None),
) -> tuple[float, float]:
    """Confidence interval of the mean CV score, with the Nadeau-Bengio variance correction.

    ``bounds`` are the metric's own limits (``catalog.metric_bounds``): the interval is cut
    there, so an accuracy interval never ends above 1.
    """
    values = [float(s) for s in scores]
    mean = statistics.fmean(values)
    k = len(values)
    if k < 2:
        return mean, mean
    variance = statistics.variance(values) * (1.0 / k + test_train_ratio)
    half = t_ppf(0.5 + confidence / 2.0, k - 1) * math.sqrt(variance)
    low, high = mean - half, mean + half
    floor, ceiling = bounds
    if floor is not None:
        low = max(low, floor)
    if ceiling is not None:
        high = min(high, ceiling)
    return low, high


def corrected_paired_ttest(
    a: Sequence[float], b: Sequence[float], *, test_train_ratio: float
) -> tuple[float, float | None, float | None]:
    """Paired corrected resampled t-test of ``a`` against ``b`` on identical folds.

    Returns:
        (mean difference, t statistic, two-sided p-value); t and p are None when the
        differences have no variance (identical or constant-offset fold scores).
    """
    diff = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    k = len(diff)
    mean = statistics.fmean(diff)
    variance = statistics.variance(diff) if k > 1 else 0.0
    if variance <= 1e-18 or not math.isfinite(variance):
        return mean, None, None
    t = mean / math.sqrt(variance * (1.0 / k + test_train_ratio))
    return mean, t, 2.0 * t_sf(abs(t), k - 1)


def default_test_train_ratio(folds: int) -> float:
    """n_test / n_train of k-fold cross-validation: 1 / (k - 1)."""
    return 1.0 / (folds - 1)
