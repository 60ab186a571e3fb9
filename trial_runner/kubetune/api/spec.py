"""The spec of a TuningJob and of a ModelComparison."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import JsonDict

from kubetune.api.base import ApiModel
from kubetune.api.catalog import (
    BUILTIN_DATASETS,
    CLASSIFICATION_METRICS,
    ESTIMATORS,
    PREPROCESSORS,
    REGRESSION_METRICS,
)
from kubetune.api.parameters import MAX_PARAMETERS, Parameter

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ALL_METRICS = (*CLASSIFICATION_METRICS, *REGRESSION_METRICS)
Method = Literal["grid", "random", "bayesian"]
SearchMethod = Literal["grid", "random", "bayesian", "progressive"]
Sampler = Literal["random", "qmc", "tpe", "gp"]
SAMPLERS: dict[str, tuple[str, ...]] = {
    "grid": (),
    "random": ("random", "qmc"),
    "bayesian": ("tpe", "gp"),
}
DEFAULT_TRIALS = 50
MAX_TRIALS = 100_000
"""The most candidates one stage runs: its trials, or the points of a grid without a cap."""
DEFAULT_GRID_POINTS = 3


def one_of(value: str, allowed: Iterable[str], what: str) -> str:
    """Check a name against an allow-list; the message suggests the nearest allowed names."""
    allowed = list(allowed)
    if value in allowed:
        return value
    close = difflib.get_close_matches(value, allowed, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else f"; allowed: {', '.join(allowed)}"
    raise ValueError(f"unknown {what} {value!r}{hint}")


def _unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what} {name!r} is listed twice")
        seen.add(name)


class EstimatorSpec(ApiModel):
    """The model to tune, by allow-listed name (never an import path)."""

    name: str = Field(json_schema_extra={"enum": list(ESTIMATORS)})
    """An estimator from the allow-list, such as RandomForestClassifier."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Fixed constructor arguments, not tuned."""

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        return one_of(value, ESTIMATORS, "estimator")


class PreprocessingStep(ApiModel):
    """An allow-listed preprocessing step, fitted inside each cross-validation fold."""

    name: str = Field(json_schema_extra={"enum": list(PREPROCESSORS)})
    """A step from the allow-list, such as StandardScaler."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Fixed constructor arguments of the step."""

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        return one_of(value, PREPROCESSORS, "preprocessing step")


class FileDataset(ApiModel):
    """A CSV or Parquet file, for example on a mounted volume."""

    path: str = Field(min_length=1)
    """Path of the file."""
    target: str = Field(min_length=1)
    """The column to predict."""
    features: list[str] | None = Field(default=None, min_length=1)
    """Columns to use as features; every other column when omitted."""
    format: Literal["csv", "parquet"] | None = None
    """File format; taken from the file name's extension when omitted."""


class SyntheticDataset(ApiModel):
    """Data made on the spot by scikit-learn's make_classification or make_regression."""

    task: Literal["classification", "regression"]
    """Which generator to use."""
    samples: int = Field(default=1000, ge=10, le=10_000_000)
    """Number of rows."""
    features: int = Field(default=20, ge=1, le=10_000)
    """Number of feature columns."""
    informative: int | None = Field(default=None, ge=1)
    """Number of informative features (default: a tenth of features, at least 2)."""
    classes: int = Field(default=2, ge=2, le=100)
    """Number of classes (classification only)."""
    noise: float = Field(default=0.0, ge=0)
    """Standard deviation of the noise added to the target (regression only)."""
    seed: int = 0
    """Random seed of the generator."""


class DatasetSpec(ApiModel):
    """Where the training data comes from: exactly one of builtin, file or synthetic."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.builtin) ? 1 : 0) + (has(self.file) ? 1 : 0)"
                    " + (has(self.synthetic) ? 1 : 0) == 1",
                    "message": "dataset must set exactly one of builtin, file or synthetic",
                }
            ]
        }
    )

    builtin: str | None = Field(default=None, json_schema_extra={"enum": list(BUILTIN_DATASETS)})
    """A dataset bundled with scikit-learn."""
    file: FileDataset | None = None
    """A CSV or Parquet file."""
    synthetic: SyntheticDataset | None = None
    """Generated data, for examples and benchmarks."""

    @field_validator("builtin")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        return None if value is None else one_of(value, BUILTIN_DATASETS, "builtin dataset")

    @model_validator(mode="after")
    def _exactly_one(self) -> DatasetSpec:
        given = [k for k in ("builtin", "file", "synthetic") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"set exactly one of builtin, file or synthetic, got {given or 'none'}"
            )
        return self


class CVSpec(ApiModel):
    """Cross-validation: stratified k-fold for classifiers, k-fold for regressors."""

    folds: int = Field(default=5, ge=2, le=50)
    """Number of folds."""
    shuffle: bool = True
    """Shuffle rows before splitting."""
    seed: int | None = None
    """Seed of the shuffle; the search seed when omitted."""


class ScoringSpec(ApiModel):
    """What to optimise. Scores are scikit-learn scorers: greater is better, errors negated."""

    metric: str | None = Field(default=None, json_schema_extra={"enum": list(ALL_METRICS)})
    """The objective; accuracy for classifiers and r2 for regressors when omitted."""
    additional: list[str] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={"items": {"enum": list(ALL_METRICS)}},
    )
    """Further metrics computed on the same folds and reported."""

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        return None if value is None else one_of(value, ALL_METRICS, "metric")

    @field_validator("additional")
    @classmethod
    def _known_additional(cls, value: list[str]) -> list[str]:
        for name in value:
            one_of(name, ALL_METRICS, "metric")
        _unique(value, "metric")
        return value


class Refinement(ApiModel):
    """How a progressive stage narrows the space around the previous stage's best trials."""

    factor: float = Field(default=0.3, gt=0, le=1)
    """Smallest width of a narrowed numeric range, as a fraction of the previous stage's width."""
    top_k: int = Field(default=5, ge=1, le=20)
    """How many of the previous stage's best trials the new space must contain."""


class _Budget(ApiModel):
    trials: int | None = Field(default=None, ge=1, le=MAX_TRIALS)
    """Number of candidates (random, bayesian); for grid, an optional cap on the grid (a grid
    without one may have at most 100,000 points)."""
    grid_points: int | None = Field(default=None, ge=2, le=50)
    """Grid only: points a numeric range becomes (evenly spaced; log ranges in log space)."""
    sampler: Sampler | None = None
    """random: random (default) or qmc; bayesian: tpe (default) or gp (needs kubetune[gp])."""

    def _check_for(self, method: str, where: str) -> None:
        if self.sampler is not None and self.sampler not in SAMPLERS.get(method, ()):
            allowed = ", ".join(SAMPLERS.get(method, ())) or "none"
            raise ValueError(
                f"{where}sampler {self.sampler!r} does not fit method {method!r} "
                f"(allowed: {allowed})"
            )
        if self.grid_points is not None and method != "grid":
            raise ValueError(f"{where}gridPoints applies to method grid only, not {method!r}")


class Stage(_Budget):
    """One stage of a progressive search."""

    method: Method
    """grid, random or bayesian."""

    @model_validator(mode="after")
    def _check(self) -> Stage:
        self._check_for(self.method, "")
        return self


def default_stages() -> list[Stage]:
    return [
        Stage(method="grid", grid_points=DEFAULT_GRID_POINTS),
        Stage(method="random", trials=30),
        Stage(method="bayesian", trials=20),
    ]


class SearchSpec(_Budget):
    """How candidates are proposed and how many are evaluated."""

    method: SearchMethod = "progressive"
    """grid, random, bayesian, or progressive (grid, then random, then bayesian)."""
    stages: list[Stage] | None = Field(default=None, min_length=1, max_length=10)
    """Progressive only: the stages in order (default: grid, random 30, bayesian 20)."""
    refinement: Refinement = Field(default_factory=Refinement)
    """Progressive only: how each stage narrows the space."""
    parallelism: int = Field(default=1, ge=1, le=256)
    """Folds fitted at once (worker processes)."""
    seed: int | None = None
    """Seed of every sampler and estimator; chosen and recorded in status when omitted."""
    max_failed_trials: int | None = Field(default=None, ge=0)
    """A stage fails once more trials than this have failed (default: only when all fail)."""

    @model_validator(mode="after")
    def _check(self) -> SearchSpec:
        if self.method == "progressive":
            if self.trials is not None or self.grid_points is not None or self.sampler is not None:
                raise ValueError(
                    "progressive search takes trials, gridPoints and sampler per stage, "
                    "in search.stages"
                )
        else:
            if self.stages is not None:
                raise ValueError(f"stages apply to method progressive only, not {self.method!r}")
            self._check_for(self.method, "")
        return self

    def stage_list(self) -> list[Stage]:
        """The stages this search runs: one for a plain method, several for progressive."""
        if self.method == "progressive":
            return list(self.stages) if self.stages else default_stages()
        return [
            Stage(
                method=self.method,
                trials=self.trials,
                grid_points=self.grid_points,
                sampler=self.sampler,
            )
        ]


class ResourceRequirements(ApiModel):
    """CPU and memory for a runner pod, as Kubernetes quantities."""

    requests: dict[str, int | str] = Field(default_factory=dict)
    """Such as {cpu: 2, memory: 2Gi}; cpu defaults to search.parallelism."""
    limits: dict[str, int | str] = Field(default_factory=dict)
    """Such as {memory: 4Gi}."""


class RunnerSpec(ApiModel):
    """How the cluster runs each stage's Job; the operator's defaults fill what is left out."""

    image: str | None = Field(default=None, max_length=512)
    """The runner image (default: the operator's KUBETUNE_RUNNER_IMAGE)."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    """Kubernetes imagePullPolicy."""
    resources: ResourceRequirements | None = None
    """Requests and limits of the runner container."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels the runner pods must match."""
    tolerations: list[dict[str, Any]] = Field(default_factory=list, max_length=32)
    """Kubernetes tolerations of the runner pods."""
    service_account_name: str | None = Field(default=None, max_length=253)
    """Service account of the runner pods (default: the operator's, kubetune-runner)."""
    volumes: list[dict[str, Any]] = Field(default_factory=list, max_length=16)
    """Kubernetes volumes of the runner pods, such as the PersistentVolumeClaim holding data."""
    volume_mounts: list[dict[str, Any]] = Field(default_factory=list, max_length=16)
    """Where the runner container mounts them (dataset.file.path points inside)."""
    timeout_seconds: int | None = Field(default=None, ge=1)
    """Deadline of each stage's Job (activeDeadlineSeconds)."""
    backoff_limit: int = Field(default=2, ge=0, le=10)
    """Retries of a stage's pod before its Job fails."""


class _Cluster(ApiModel):
    """Settings that only matter on a cluster; `kubetune run` ignores them."""

    suspend: bool = False
    """Pause: no new stage starts and a running stage's Job is suspended; false resumes."""
    queue_name: str | None = Field(default=None, max_length=63)
    """A Kueue LocalQueue: Jobs get the queue label and start suspended until Kueue admits them."""
    runner: RunnerSpec = Field(default_factory=RunnerSpec)
    """Image, resources and scheduling of the stage Jobs."""


class _Tuned(ApiModel):
    """What one model tunes: its estimator, preprocessing and search space."""

    estimator: EstimatorSpec
    """The model to tune."""
    preprocessing: list[PreprocessingStep] = Field(default_factory=list, max_length=16)
    """Steps before the estimator, fitted inside each fold."""
    parameters: list[Parameter] | None = Field(
        default=None,
        max_length=MAX_PARAMETERS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """The search space; the estimator's default space when omitted."""

    @model_validator(mode="after")
    def _unique_names(self) -> _Tuned:
        _unique([p.name for p in self.parameters or []], "parameter")
        fixed = set(self.estimator.params)
        for p in self.parameters or []:
            if p.name in fixed:
                raise ValueError(
                    f"parameter {p.name!r} is both fixed (estimator.params) and tuned (parameters)"
                )
        return self


def _immutable(required: list[str], optional: list[str], kind: str) -> JsonDict:
    """A CEL transition rule: the search definition cannot change once the resource exists."""
    parts = [f"self.{f} == oldSelf.{f}" for f in required]
    parts += [
        f"has(self.{f}) == has(oldSelf.{f}) && (!has(self.{f}) || self.{f} == oldSelf.{f})"
        for f in optional
    ]
    fields = ", ".join(required + optional)
    return {
        "x-kubernetes-validations": [
            {
                "rule": " && ".join(f"({p})" for p in parts),
                "message": f"the search definition ({fields}) cannot change once created; "
                f"create a new {kind} instead",
            }
        ]
    }


class TuningJobSpec(_Cluster, _Tuned):
    """Tune one estimator on one dataset."""

    model_config = ConfigDict(
        json_schema_extra=_immutable(
            ["estimator", "dataset"], ["preprocessing", "parameters", "scoring", "cv"], "TuningJob"
        )
    )

    dataset: DatasetSpec
    """The training data."""
    search: SearchSpec = Field(default_factory=SearchSpec)
    """How to search."""
    cv: CVSpec = Field(default_factory=CVSpec)
    """How each candidate is scored."""
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    """The objective and further metrics."""

    @model_validator(mode="after")
    def _task(self) -> TuningJobSpec:
        check_task(estimators=[self.estimator], dataset=self.dataset, scoring=self.scoring)
        return self


class ModelSpec(_Tuned):
    """One contender of a comparison."""

    name: str = Field(pattern=DNS_LABEL, max_length=40)
    """A short name (a DNS label), unique in the comparison."""


class ExecutionSpec(ApiModel):
    """How the models of a comparison are scheduled."""

    mode: Literal["parallel", "sequential"] = "parallel"
    """parallel: models share the workers at once; sequential: one model after another."""
    max_concurrent: int | None = Field(default=None, ge=1)
    """parallel only: at most this many models at once."""


class ModelComparisonSpec(_Cluster):
    """Several estimators tuned on the same folds and budget, then ranked."""

    model_config = ConfigDict(
        json_schema_extra=_immutable(["models", "dataset"], ["scoring", "cv"], "ModelComparison")
    )

    dataset: DatasetSpec
    """The training data, shared by every model."""
    models: list[ModelSpec] = Field(
        min_length=2,
        max_length=20,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """The contenders."""
    search: SearchSpec = Field(default_factory=SearchSpec)
    """The same search settings and budget for every model."""
    cv: CVSpec = Field(default_factory=CVSpec)
    """The same folds for every model."""
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    """The same objective for every model."""
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec)
    """Parallel or sequential."""

    @model_validator(mode="after")
    def _check(self) -> ModelComparisonSpec:
        _unique([m.name for m in self.models], "model")
        check_task(
            estimators=[m.estimator for m in self.models],
            dataset=self.dataset,
            scoring=self.scoring,
        )
        return self

    def child_spec(self, model: ModelSpec) -> TuningJobSpec:
        """The TuningJob spec that tunes one model: shared data, folds, scoring and budget."""
        return TuningJobSpec(
            estimator=model.estimator,
            preprocessing=model.preprocessing,
            parameters=model.parameters,
            dataset=self.dataset,
            search=self.search,
            cv=self.cv,
            scoring=self.scoring,
            queue_name=self.queue_name,
            runner=self.runner,
        )


def check_task(
    *, estimators: list[EstimatorSpec], dataset: DatasetSpec, scoring: ScoringSpec
) -> None:
    """Reject a metric or dataset that does not fit the estimators' task (pure, no fitting)."""
    from kubetune.api.catalog import metrics_for

    tasks = {ESTIMATORS[e.name] for e in estimators}
    if len(tasks) > 1:
        raise ValueError("models mix classifiers and regressors; compare models of one task")
    (task,) = tasks
    names = ", ".join(sorted({e.name for e in estimators}))
    for field, metric in [("scoring.metric", scoring.metric)] + [
        ("scoring.additional", m) for m in scoring.additional
    ]:
        if metric is not None and metric not in metrics_for(task):
            raise ValueError(f"{field}: metric {metric!r} does not fit a {task} task ({names})")
    data_task = None
    if dataset.builtin is not None:
        data_task = BUILTIN_DATASETS[dataset.builtin]
    elif dataset.synthetic is not None:
        data_task = dataset.synthetic.task
    if data_task is not None and data_task != task:
        field = "dataset.builtin" if dataset.builtin else "dataset.synthetic.task"
        source = dataset.builtin or "synthetic"
        raise ValueError(
            f"{field}: dataset {source!r} is a {data_task} dataset but {names} does {task}"
        )
