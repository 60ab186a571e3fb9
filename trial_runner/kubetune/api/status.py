"""The status both kinds report: the same fields whether written by `kubetune run` or the operator.

Status stays small whatever the number of trials: counters, the best trial, the top trials and a
summary per stage. The full trial table lives outside status (trials.csv locally).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field
from pydantic.json_schema import JsonDict

from kubetune.api.base import ApiModel
from kubetune.api.parameters import Parameter

Phase = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed"]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed"})
TOP_TRIALS = 10
MAX_FAILURE_GROUPS = 5

# Condition types. `kubectl wait --for=condition=Succeeded` waits for a successful end and
# `--for=condition=Failed` for a failure; Running and Suspended describe the present.
CONDITION_RUNNING = "Running"
CONDITION_SUCCEEDED = "Succeeded"
CONDITION_FAILED = "Failed"
CONDITION_SUSPENDED = "Suspended"
CONDITION_TYPES = (CONDITION_RUNNING, CONDITION_SUCCEEDED, CONDITION_FAILED, CONDITION_SUSPENDED)


def now() -> str:
    """The current time in RFC 3339, as Kubernetes writes timestamps."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_terminal(phase: str | None) -> bool:
    return phase in TERMINAL_PHASES


_MAP_BY_TYPE: JsonDict = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
_MAP_BY_NAME: JsonDict = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}


class Condition(ApiModel):
    """A Kubernetes-style condition."""

    type: str
    """Running, Succeeded, Failed or Suspended."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: str
    """A CamelCase word for machines, such as InvalidSpec or AllTrialsFailed."""
    message: str = ""
    """A sentence for people."""
    last_transition_time: str
    """When status last changed (RFC 3339)."""
    observed_generation: int | None = None
    """The metadata.generation this condition was computed from."""


class TrialCounts(ApiModel):
    """Trial counters."""

    completed: int = 0
    """Trials scored on every fold."""
    failed: int = 0
    """Trials whose fit or scoring raised an error."""
    planned: int = 0
    """Trials planned in all (stages not yet started count with their budget)."""


class Interval(ApiModel):
    """A confidence interval."""

    low: float
    high: float


class FailureGroup(ApiModel):
    """Failed trials grouped by their error."""

    reason: str
    """The error, as `ExceptionType: message` (first line)."""
    count: int
    """How many trials failed this way."""


class TrialSummary(ApiModel):
    """One of the best trials."""

    trial: int
    """Trial number, counted across stages from 0."""
    stage: str
    """The stage that ran it."""
    params: dict[str, Any] = Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    """The tuned parameters."""
    score: float
    """Mean of the objective over the folds."""
    std: float
    """Standard deviation of the objective over the folds."""


class BestTrial(TrialSummary):
    """The best trial, with its evidence."""

    metric: str
    """The objective's scorer name."""
    interval95: Interval
    """95% interval of the mean (t interval with the Nadeau-Bengio correction for CV)."""
    fold_scores: list[float] = Field(max_length=50)
    """The objective on each fold, in fold order."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """Mean of each additional metric."""


class StageStatus(ApiModel):
    """One stage of the search."""

    name: str
    """s<N>-<method>, such as s2-random."""
    method: str
    """grid, random or bayesian."""
    phase: Phase = "Pending"
    """Pending, Running, Succeeded or Failed."""
    job_name: str | None = None
    """The batch/v1 Job that runs the stage (in a cluster)."""
    trials: TrialCounts = Field(default_factory=TrialCounts)
    """The stage's trial counters."""
    best_score: float | None = None
    """The stage's best mean objective."""
    space: list[Parameter] = Field(
        default_factory=list, max_length=64, json_schema_extra=_MAP_BY_NAME
    )
    """The search space the stage used, narrowed from the previous stage when progressive."""
    failures: list[FailureGroup] = Field(default_factory=list, max_length=MAX_FAILURE_GROUPS)
    """The commonest errors of failed trials."""
    message: str | None = None
    """Why the stage failed, when it did."""
    started_at: str | None = None
    completed_at: str | None = None


class DatasetRecord(ApiModel):
    """Which data was used, exactly."""

    source: str
    """builtin:NAME, synthetic:TASK, or the file path."""
    fingerprint: str
    """sha256 of the file, or of the loaded arrays for built-in and synthetic data."""
    rows: int
    columns: int
    """Number of feature columns."""
    classes: int | None = None
    """Number of classes (classification)."""


class CVRecord(ApiModel):
    """The splits every candidate was scored on."""

    splitter: str
    """StratifiedKFold or KFold."""
    folds: int
    shuffle: bool
    seed: int | None = None
    test_train_ratio: float | None = None
    """Mean test rows over training rows of the folds (for the corrected variance)."""


class Reproducibility(ApiModel):
    """What it takes to get the same trials again."""

    seed: int
    """The search seed (chosen and recorded here when spec gave none)."""
    dataset: DatasetRecord | None = None
    """The data, once loaded."""
    cv: CVRecord | None = None
    """The folds, once made."""
    versions: dict[str, str] = Field(default_factory=dict)
    """Versions of python, kubetune, scikit-learn, optuna and numpy."""


class StageReport(ApiModel):
    """What the runner of the current stage reports while it runs and when it ends.

    In a cluster the runner owns this field (and trials, progress, best, topTrials); the operator
    owns the rest of status. Both write JSON merge patches to disjoint fields, so neither
    overwrites the other.
    """

    stage: str
    """The stage this report is about."""
    phase: Phase = "Running"
    """Running while trials run; Succeeded or Failed at the end."""
    trials: TrialCounts = Field(default_factory=TrialCounts)
    best_score: float | None = None
    top: list[TrialSummary] = Field(default_factory=list, max_length=20)
    """The stage's best trials (refinement.topK of them), best first."""
    failures: list[FailureGroup] = Field(default_factory=list, max_length=MAX_FAILURE_GROUPS)
    message: str | None = None
    """Why the stage failed, when it did."""
    updated_at: str | None = None


class _CommonStatus(ApiModel):
    observed_generation: int | None = None
    """The metadata.generation this status describes."""
    phase: Phase = "Pending"
    """Pending, Running, Suspended, Succeeded or Failed."""
    conditions: list[Condition] = Field(
        default_factory=list, max_length=8, json_schema_extra=_MAP_BY_TYPE
    )
    """Running, Succeeded, Failed and Suspended conditions."""
    progress: str | None = None
    """Trials done of planned, for people, such as 34/101."""
    message: str | None = None
    """A sentence on the present state or the reason of a failure."""
    reproducibility: Reproducibility | None = None
    """Seed, data fingerprint, CV and library versions."""
    started_at: str | None = None
    completed_at: str | None = None


class TuningJobStatus(_CommonStatus):
    """The observed state of a TuningJob."""

    trials: TrialCounts = Field(default_factory=TrialCounts)
    """Trial counters over all stages."""
    current_stage: str | None = None
    """The stage running now, or the last one."""
    stages: list[StageStatus] = Field(
        default_factory=list, max_length=10, json_schema_extra=_MAP_BY_NAME
    )
    """One summary per stage."""
    best: BestTrial | None = None
    """The best trial so far."""
    top_trials: list[TrialSummary] = Field(default_factory=list, max_length=TOP_TRIALS)
    """The best trials so far, best first."""
    report: StageReport | None = None
    """The running stage's own report (written by its runner in a cluster)."""


class RankingEntry(ApiModel):
    """One model of a comparison."""

    rank: int
    """1 is the best; failed models rank last."""
    model: str
    """The model's name in spec."""
    estimator: str
    tuning_job: str | None = None
    """The child TuningJob that tunes the model (in a cluster)."""
    phase: Phase = "Pending"
    score: float | None = None
    """The best trial's mean objective."""
    std: float | None = None
    interval95: Interval | None = None
    params: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """The best trial's parameters."""
    trials: TrialCounts = Field(default_factory=TrialCounts)
    message: str | None = None
    """Why the model failed, when it did."""


class Significance(ApiModel):
    """Is the winner's lead over the runner-up real? A paired test on identical folds."""

    winner: str
    runner_up: str
    test: str = "corrected resampled t-test (Nadeau and Bengio, 2003), paired folds"
    mean_difference: float
    """Mean of winner minus runner-up over the folds."""
    t_statistic: float | None = None
    p_value: float | None = None
    """Two-sided p-value."""
    alpha: float = 0.05
    significant: bool
    """p_value below alpha."""


class ModelComparisonStatus(_CommonStatus):
    """The observed state of a ModelComparison."""

    models: TrialCounts = Field(default_factory=TrialCounts)
    """Models completed, failed and planned."""
    trials: TrialCounts = Field(default_factory=TrialCounts)
    """Trial counters over every model."""
    ranking: list[RankingEntry] = Field(default_factory=list, max_length=20)
    """The models, best first."""
    best_model: str | None = None
    """The winner's name."""
    best_score: float | None = None
    """The winner's mean objective."""
    significance: Significance | None = None
    """The winner against the runner-up."""


def set_condition(
    conditions: list[Condition],
    *,
    type: str,
    status: bool,
    reason: str,
    message: str = "",
    generation: int | None = None,
) -> list[Condition]:
    """A copy of ``conditions`` with one condition set; its lastTransitionTime moves only when
    its status changes (Kubernetes convention)."""
    value: Literal["True", "False"] = "True" if status else "False"
    out: list[Condition] = []
    found = False
    for c in conditions:
        if c.type == type:
            found = True
            stamp = c.last_transition_time if c.status == value else now()
            c = Condition(
                type=type,
                status=value,
                reason=reason,
                message=message,
                last_transition_time=stamp,
                observed_generation=generation,
            )
        out.append(c)
    if not found:
        out.append(
            Condition(
                type=type,
                status=value,
                reason=reason,
                message=message,
                last_transition_time=now(),
                observed_generation=generation,
            )
        )
    return out


def phase_conditions(
    conditions: list[Condition],
    *,
    phase: Phase,
    reason: str,
    message: str = "",
    generation: int | None = None,
) -> list[Condition]:
    """Set all four condition types consistently with ``phase``.

    Pending explains itself on the Running condition (False, with its reason: Queued, say).
    """
    for kind, holds in (
        (CONDITION_RUNNING, phase == "Running"),
        (CONDITION_SUCCEEDED, phase == "Succeeded"),
        (CONDITION_FAILED, phase == "Failed"),
        (CONDITION_SUSPENDED, phase == "Suspended"),
    ):
        explains = holds or (kind == CONDITION_RUNNING and phase == "Pending")
        conditions = set_condition(
            conditions,
            type=kind,
            status=holds,
            reason=reason if explains else f"Not{kind}",
            message=message if explains else "",
            generation=generation,
        )
    return conditions
