from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from kubetune.fold import FoldResult
from kubetune.results import TrialRecord, cv_results_rows, failure_groups, ranked
from kubetune.stats import corrected_interval, corrected_paired_ttest

pytestmark = pytest.mark.unit

SCORES = [0.90, 0.92, 0.88, 0.91, 0.95]


def test_corrected_interval_matches_the_formula_and_is_wider_than_naive() -> None:
    k, ratio = 5, 0.25
    low, high = corrected_interval(SCORES, test_train_ratio=ratio)
    sd = np.std(SCORES, ddof=1)
    half = scipy_stats.t.ppf(0.975, k - 1) * math.sqrt((1 / k + ratio) * sd**2)
    assert (low, high) == pytest.approx((np.mean(SCORES) - half, np.mean(SCORES) + half))
    naive = scipy_stats.t.ppf(0.975, k - 1) * sd / math.sqrt(k)
    assert high - low > 2 * naive


def test_interval_stays_inside_the_metric_range() -> None:
    from kubetune.api.catalog import metric_bounds
    from kubetune.results import best_trial

    near_one = [1.0, 0.98, 1.0, 0.97, 1.0]
    low, high = corrected_interval(near_one, test_train_ratio=0.25)
    assert high > 1.0  # the t interval alone runs past a perfect accuracy
    low, high = corrected_interval(near_one, test_train_ratio=0.25, bounds=(0.0, 1.0))
    assert high == 1.0 and low < np.mean(near_one)
    errors = [-0.01, -0.2, -0.02, -0.3, -0.01]
    assert corrected_interval(errors, test_train_ratio=0.25, bounds=(None, 0.0))[1] == 0.0
    assert metric_bounds("accuracy") == (0.0, 1.0)
    assert metric_bounds("roc_auc_ovr") == (0.0, 1.0)
    assert metric_bounds("matthews_corrcoef") == (-1.0, 1.0)
    assert metric_bounds("r2") == (None, 1.0)
    assert metric_bounds("neg_log_loss") == (None, 0.0)
    assert metric_bounds("max_error") == (None, 0.0)
    record = TrialRecord(
        number=0,
        stage="s1-random",
        params={},
        folds=[
            FoldResult(fold=i, scores={"accuracy": s}, fit_time=0.1, score_time=0.01)
            for i, s in enumerate(near_one)
        ],
    )
    best = best_trial(record, metric="accuracy", additional=[], test_train_ratio=0.25)
    assert best.interval95.high == 1.0


def test_paired_test_matches_the_formula() -> None:
    b = [0.85, 0.90, 0.86, 0.90, 0.90]
    diff, t, p = corrected_paired_ttest(SCORES, b, test_train_ratio=0.25)
    d = np.subtract(SCORES, b)
    expected_t = d.mean() / math.sqrt((1 / 5 + 0.25) * d.var(ddof=1))
    assert diff == pytest.approx(d.mean())
    assert t == pytest.approx(expected_t)
    assert p == pytest.approx(2 * scipy_stats.t.sf(abs(expected_t), 4))
    # the uncorrected paired t-test is more confident than the corrected one
    assert p is not None and scipy_stats.ttest_rel(SCORES, b).pvalue < p


def test_paired_test_with_no_variance_gives_no_p_value() -> None:
    diff, t, p = corrected_paired_ttest(SCORES, SCORES, test_train_ratio=0.25)
    assert diff == 0.0 and t is None and p is None


def _record(number: int, scores: list[float] | None, error: str | None = None) -> TrialRecord:
    folds = [
        FoldResult(
            fold=i, scores={"acc": s, "f1": s / 2}, fit_time=0.1, score_time=0.01, error=error
        )
        for i, s in enumerate(scores or [math.nan, math.nan])
    ]
    return TrialRecord(
        number=number, stage="s1-grid", params={"C": number, "h": [1, 2]}, folds=folds
    )


def test_cv_results_rows_use_sklearn_names_and_ranks() -> None:
    records = [
        _record(0, [0.5, 0.7]),
        _record(1, None, "ValueError: boom"),
        _record(2, [0.8, 0.8]),
        _record(3, [0.6, 0.6]),
    ]
    rows = cv_results_rows(records, ["acc", "f1"])
    assert [r["rank_test_acc"] for r in rows] == [2, 4, 1, 2]
    assert rows[2]["split0_test_acc"] == 0.8 and rows[2]["mean_test_f1"] == pytest.approx(0.4)
    assert rows[0]["std_test_acc"] == pytest.approx(0.1)
    assert rows[1]["state"] == "FAIL" and rows[1]["error"] == "ValueError: boom"
    assert rows[0]["param_h"] == "[1, 2]"
    assert {"mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time"} <= set(rows[0])
    assert [r.number for r in ranked(records, "acc")] == [2, 0, 3]


def test_failure_groups_count_by_reason() -> None:
    records = [_record(i, None, "ValueError: a") for i in range(3)]
    records.append(_record(9, None, "TypeError: b"))
    groups = failure_groups(records)
    assert [(g.reason, g.count) for g in groups] == [("ValueError: a", 3), ("TypeError: b", 1)]


@pytest.mark.parametrize("df", [1, 2, 4, 9, 29])
def test_pure_python_t_distribution_matches_scipy(df: int) -> None:
    from kubetune.stats import t_ppf, t_sf

    for t in (-3.5, -1.0, 0.0, 0.3, 1.7, 4.2, 12.0):
        assert t_sf(t, df) == pytest.approx(scipy_stats.t.sf(t, df), rel=1e-9, abs=1e-14)
    for q in (0.025, 0.5, 0.9, 0.975, 0.995):
        assert t_ppf(q, df) == pytest.approx(scipy_stats.t.ppf(q, df), rel=1e-9, abs=1e-12)
