"""Evidence from cross-validation scores: intervals and the corrected resampled t-test.

Fold scores share training rows, so the naive t statistic is too confident. Nadeau and Bengio
(2003, "Inference for the Generalization Error") correct the variance by (1/k + n_test/n_train);
both the interval of a mean and the paired test between two models use that correction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def corrected_interval(
    scores: Sequence[float], *, test_train_ratio: float, confidence: float = 0.95
) -> tuple[float, float]:
    """Confidence interval of the mean CV score, with the Nadeau-Bengio variance correction."""
    values = np.asarray(scores, dtype=float)
    mean = float(values.mean())
    k = len(values)
    if k < 2:
        return mean, mean
    variance = float(values.var(ddof=1)) * (1.0 / k + test_train_ratio)
    half = float(stats.t.ppf(0.5 + confidence / 2, df=k - 1)) * math.sqrt(variance)
    return mean - half, mean + half


def corrected_paired_ttest(
    a: Sequence[float], b: Sequence[float], *, test_train_ratio: float
) -> tuple[float, float | None, float | None]:
    """Paired corrected resampled t-test of ``a`` against ``b`` on identical folds.

    Returns:
        (mean difference, t statistic, two-sided p-value); t and p are None when the
        differences have no variance (identical or constant-offset fold scores).
    """
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    k = len(diff)
    mean = float(diff.mean())
    variance = float(diff.var(ddof=1)) if k > 1 else 0.0
    if variance <= 0.0 or not math.isfinite(variance):
        return mean, None, None
    t = mean / math.sqrt(variance * (1.0 / k + test_train_ratio))
    p = 2.0 * float(stats.t.sf(abs(t), df=k - 1))
    return mean, t, p
