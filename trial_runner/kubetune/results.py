"""Trial records: cv_results_-style rows, rankings, failure groups and the best trial's evidence."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kubetune.api.catalog import metric_bounds
from kubetune.api.status import (
    MAX_FAILURE_GROUPS,
    BestTrial,
    FailureGroup,
    Interval,
    TrialSummary,
)
from kubetune.fold import FoldResult
from kubetune.stats import corrected_interval


@dataclass
class TrialRecord:
    """One candidate evaluated on every fold."""

    number: int
    stage: str
    params: dict[str, Any]
    folds: list[FoldResult]
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # A record does not change once made: its means are computed once (rankings ask often).
    _means: dict[str, float] = field(default_factory=dict, repr=False, compare=False)

    @property
    def error(self) -> str | None:
        return next((f.error for f in self.folds if f.error), None)

    @property
    def ok(self) -> bool:
        return self.error is None

    def fold_scores(self, metric: str) -> list[float]:
        return [f.scores[metric] for f in self.folds]

    def mean(self, metric: str) -> float:
        if metric not in self._means:
            ok = self.ok
            self._means[metric] = float(np.mean(self.fold_scores(metric))) if ok else math.nan
        return self._means[metric]

    def std(self, metric: str) -> float:
        return float(np.std(self.fold_scores(metric))) if self.ok else math.nan


def ranked(records: Sequence[TrialRecord], metric: str) -> list[TrialRecord]:
    """Successful records, best first (ties: the earlier trial first)."""
    ok = [r for r in records if r.ok and math.isfinite(r.mean(metric))]
    return sorted(ok, key=lambda r: (-r.mean(metric), r.number))


def summary(record: TrialRecord, metric: str) -> TrialSummary:
    return TrialSummary(
        trial=record.number,
        stage=record.stage,
        params=record.params,
        score=record.mean(metric),
        std=record.std(metric),
    )


def best_trial(
    record: TrialRecord, *, metric: str, additional: Sequence[str], test_train_ratio: float
) -> BestTrial:
    scores = record.fold_scores(metric)
    low, high = corrected_interval(
        scores, test_train_ratio=test_train_ratio, bounds=metric_bounds(metric)
    )
    return BestTrial(
        trial=record.number,
        stage=record.stage,
        params=record.params,
        metric=metric,
        score=record.mean(metric),
        std=record.std(metric),
        interval95=Interval(low=low, high=high),
        fold_scores=scores,
        metrics={m: record.mean(m) for m in additional},
    )


def failure_groups(records: Sequence[TrialRecord]) -> list[FailureGroup]:
    """Failed trials grouped by reason, commonest first."""
    counts = Counter(r.error for r in records if r.error)
    return [
        FailureGroup(reason=reason[:300], count=n)
        for reason, n in counts.most_common(MAX_FAILURE_GROUPS)
    ]


def cv_results_rows(records: Sequence[TrialRecord], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """One row per trial, with scikit-learn's cv_results_ column names.

    ``rank_test_<m>`` ranks every trial on the mean of metric m (1 is best, ties share the lower
    rank, failed trials rank last), as GridSearchCV does.
    """
    param_names: list[str] = []
    for r in records:
        param_names += [k for k in r.params if k not in param_names]
    ranks = {m: _ranks([r.mean(m) for r in records]) for m in metrics}
    rows = []
    for i, r in enumerate(records):
        row: dict[str, Any] = {}
        if r.model is not None:
            row["model"] = r.model
        row.update({"trial": r.number, "stage": r.stage, "state": "COMPLETE" if r.ok else "FAIL"})
        row["params"] = json.dumps(r.params, sort_keys=True)
        for name in param_names:
            value = r.params.get(name)
            row[f"param_{name}"] = json.dumps(value) if isinstance(value, list) else value
        for m in metrics:
            for f in r.folds:
                row[f"split{f.fold}_test_{m}"] = f.scores[m]
            row[f"mean_test_{m}"] = r.mean(m)
            row[f"std_test_{m}"] = r.std(m)
            row[f"rank_test_{m}"] = ranks[m][i]
        fit = [f.fit_time for f in r.folds]
        score = [f.score_time for f in r.folds]
        row.update(
            {
                "mean_fit_time": float(np.mean(fit)),
                "std_fit_time": float(np.std(fit)),
                "mean_score_time": float(np.mean(score)),
                "std_score_time": float(np.std(score)),
                "error": r.error or "",
            }
        )
        rows.append(row)
    return rows


def _ranks(means: list[float]) -> list[int]:
    finite = sorted({m for m in means if math.isfinite(m)}, reverse=True)
    position: dict[float, int] = {}
    seen = 0
    for value in finite:
        position[value] = seen + 1
        seen += sum(1 for m in means if m == value)
    last = len(means)
    return [position[m] if math.isfinite(m) else last for m in means]


def fold_dicts(folds: Sequence[FoldResult]) -> list[dict[str, Any]]:
    """Fold results as plain data, for the trial ledger."""
    return [
        {
            "fold": f.fold,
            "scores": f.scores,
            "fit_time": f.fit_time,
            "score_time": f.score_time,
            "error": f.error,
        }
        for f in folds
    ]


def record_from_ledger(
    *,
    number: int,
    stage: str,
    params: dict[str, Any],
    folds: list[dict[str, Any]],
    model: str | None = None,
) -> TrialRecord:
    """A finished trial as the ledger kept it."""
    return TrialRecord(
        number=number,
        stage=stage,
        params=params,
        folds=[
            FoldResult(
                fold=f["fold"],
                scores={k: float(v) for k, v in f["scores"].items()},
                fit_time=f["fit_time"],
                score_time=f["score_time"],
                error=f.get("error"),
            )
            for f in folds
        ],
        model=model,
    )
