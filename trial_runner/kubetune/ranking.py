"""Ranking the models of a comparison, from each model's best trial. Pure: the operator uses it.

Failed models rank last. The winner's lead over the runner-up is tested with the corrected
resampled t-test on their paired fold scores (identical folds, by construction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kubetune.api.catalog import metric_bounds
from kubetune.api.status import BestTrial, Phase, RankingEntry, Significance, TrialCounts
from kubetune.stats import corrected_interval, corrected_paired_ttest

SIGNIFICANCE_ALPHA = 0.05


@dataclass(frozen=True)
class ModelOutcome:
    """What one model's search gave (from a local run or a child TuningJob's status)."""

    model: str
    estimator: str
    phase: Phase
    best: BestTrial | None
    trials: TrialCounts
    message: str | None = None
    tuning_job: str | None = None


def rank_models(
    outcomes: Sequence[ModelOutcome], *, test_train_ratio: float
) -> tuple[list[RankingEntry], Significance | None]:
    """The ranking (best first, failed and unfinished last) and the winner's significance."""
    entries: list[tuple[ModelOutcome, RankingEntry]] = []
    for o in outcomes:
        entry = RankingEntry(
            rank=0,
            model=o.model,
            estimator=o.estimator,
            tuning_job=o.tuning_job,
            phase=o.phase,
            trials=o.trials,
            message=o.message if o.phase == "Failed" else None,
        )
        if o.best is not None and o.phase != "Failed":
            low, high = corrected_interval(
                o.best.fold_scores,
                test_train_ratio=test_train_ratio,
                bounds=metric_bounds(o.best.metric),
            )
            entry.score, entry.std, entry.params = o.best.score, o.best.std, o.best.params
            entry.interval95 = o.best.interval95.model_copy(update={"low": low, "high": high})
        entries.append((o, entry))
    entries.sort(key=lambda e: (e[1].score is None, -(e[1].score or 0.0), e[1].model))
    for rank, (_, entry) in enumerate(entries, start=1):
        entry.rank = rank
    scored = [(o, e) for o, e in entries if e.score is not None and o.best is not None]
    significance = None
    if len(scored) >= 2:
        (first, a), (second, b) = scored[0], scored[1]
        assert first.best is not None
        assert second.best is not None
        diff, t, p = corrected_paired_ttest(
            first.best.fold_scores, second.best.fold_scores, test_train_ratio=test_train_ratio
        )
        significance = Significance(
            winner=a.model,
            runner_up=b.model,
            mean_difference=diff,
            t_statistic=t,
            p_value=p,
            alpha=SIGNIFICANCE_ALPHA,
            significant=p is not None and p < SIGNIFICANCE_ALPHA,
        )
    return [e for _, e in entries], significance


def verdict(entry: RankingEntry, significance: Significance | None, metric: str) -> str:
    """One sentence naming the winner, for status.message and the completion Event."""
    message = f"best model {entry.model} ({entry.estimator}) {metric} {entry.score:.4f}"
    if significance is not None:
        word = "significant" if significance.significant else "not significant"
        message += f"; lead over {significance.runner_up} {word}"
        if significance.p_value is not None:
            message += f" (p={significance.p_value:.3f})"
    return message
