"""The engine: runs a TuningJob's stages or a ModelComparison's models on one shared executor.

`kubetune run` uses it directly; in a cluster each stage Job runs the same code.
"""

from __future__ import annotations

import bisect
import importlib.metadata
import importlib.util
import math
import platform
import random
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import optuna
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline

import kubetune
from kubetune.api.catalog import DEFAULT_METRIC, ESTIMATORS, Task
from kubetune.api.parameters import Parameter
from kubetune.api.resources import ModelComparison, SpecError, TuningJob
from kubetune.api.spec import CVSpec, ModelComparisonSpec, TuningJobSpec
from kubetune.api.status import (
    TOP_TRIALS,
    CVRecord,
    ModelComparisonStatus,
    Phase,
    Reproducibility,
    StageStatus,
    TrialCounts,
    TuningJobStatus,
    now,
    phase_conditions,
)
from kubetune.data import DataError, LoadedData, check_dataset, load_dataset
from kubetune.estimators import allows_nan, make_pipeline, param_problems
from kubetune.executor import Executor
from kubetune.fold import FoldResult, Split, clone_with
from kubetune.planning import (
    StagePlan,
    plan_stage,
    planned_trials,
    refine_space,
    resolve_space,
    search_problems,
)
from kubetune.ranking import ModelOutcome, rank_models, verdict
from kubetune.results import (
    TrialRecord,
    best_trial,
    failure_groups,
    fold_dicts,
    ranked,
    record_from_ledger,
    summary,
)
from kubetune.space import decode
from kubetune.strategies import FOLDS_ATTR, NUMBER_ATTR, Candidate, StageSearch


class Reporter(Protocol):
    """Receives progress as it happens (the CLI draws it; in a cluster it patches status)."""

    def trial(self, run: JobRun, record: TrialRecord) -> None: ...

    def stage(self, run: JobRun, stage: StageStatus) -> None: ...


class _Silent:
    def trial(self, run: JobRun, record: TrialRecord) -> None:
        pass

    def stage(self, run: JobRun, stage: StageStatus) -> None:
        pass


def resolve_seed(seed: int | None) -> int:
    """The spec's seed, or a fresh one (recorded in status so the run can be repeated)."""
    return seed if seed is not None else random.SystemRandom().randrange(2**31)


def task_of(estimator_name: str) -> Task:
    return ESTIMATORS[estimator_name]


def objective(spec: TuningJobSpec | ModelComparisonSpec, task: Task) -> tuple[str, list[str]]:
    """The objective metric and the additional ones (without the objective)."""
    metric = spec.scoring.metric or DEFAULT_METRIC[task]
    return metric, [m for m in spec.scoring.additional if m != metric]


def make_splits(*, cv: CVSpec, task: Task, y: np.ndarray, seed: int) -> list[Split]:
    """The folds every candidate (and every model of a comparison) is scored on."""
    shuffle_seed = (cv.seed if cv.seed is not None else seed) if cv.shuffle else None
    splitter = (StratifiedKFold if task == "classification" else KFold)(
        n_splits=cv.folds, shuffle=cv.shuffle, random_state=shuffle_seed
    )
    return [(train, test) for train, test in splitter.split(np.zeros(len(y)), y)]


def cv_record(*, cv: CVSpec, task: Task, seed: int) -> CVRecord:
    return CVRecord(
        splitter="StratifiedKFold" if task == "classification" else "KFold",
        folds=cv.folds,
        shuffle=cv.shuffle,
        seed=(cv.seed if cv.seed is not None else seed) if cv.shuffle else None,
    )


def library_versions(*, gp: bool = False) -> dict[str, str]:
    """The versions a run's results depend on; with ``gp``, also the GP sampler's own libraries
    (greenlet changes its proposals in the last digits: batched or sequential L-BFGS-B)."""
    import optuna
    import pandas
    import sklearn

    versions = {
        "python": platform.python_version(),
        "kubetune": kubetune.__version__,
        "scikit-learn": sklearn.__version__,
        "optuna": optuna.__version__,
        "numpy": np.__version__,
        "pandas": pandas.__version__,
    }
    if gp:
        for name in ("torch", "greenlet"):
            try:  # from the package metadata: importing PyTorch takes a second
                versions[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                versions[name] = "not installed"
    return versions


@dataclass
class Prepared:
    """A validated resource with its data loaded and its folds made: everything but fitting."""

    seed: int
    task: Task
    data: LoadedData
    splits: list[Split]
    reproducibility: Reproducibility
    metric: str
    additional: list[str]


def prepare(resource: TuningJob | ModelComparison, *, base_dir: Path | None = None) -> Prepared:
    """Check everything that can be checked without fitting, then load the data and make folds.

    Raises:
        SpecError: one readable line per problem found (spec, parameters, data), each
            beginning with the path of the field to blame.
    """
    spec = resource.spec
    tuned = [spec] if isinstance(spec, TuningJobSpec) else list(spec.models)
    prefixes = (
        ["spec"]
        if isinstance(spec, TuningJobSpec)
        else [f"spec.models[{i}]" for i in range(len(tuned))]
    )
    problems: list[str] = []
    for item, prefix in zip(tuned, prefixes, strict=True):
        space = resolve_space(estimator=item.estimator, parameters=item.parameters)
        problems += param_problems(
            estimator=item.estimator, preprocessing=item.preprocessing, space=space, prefix=prefix
        )
    problems += [f"spec.{problem}" for problem in search_problems(spec)]
    gp = any(stage.sampler == "gp" for stage in spec.search.stage_list())
    if gp and importlib.util.find_spec("torch") is None:
        problems.append("spec.search: sampler gp needs PyTorch: pip install 'kubetune[gp]'")
    if problems:
        raise SpecError(problems)
    task = task_of(tuned[0].estimator.name)
    seed = resolve_seed(spec.search.seed)
    metric, additional = objective(spec, task)
    try:
        data = load_dataset(spec=spec.dataset, task=task, base_dir=base_dir)
    except DataError as error:
        raise SpecError([f"spec.{error}"]) from None
    for item, prefix in zip(tuned, prefixes, strict=True):
        names = [s.name for s in item.preprocessing]
        try:
            check_dataset(
                data=data,
                task=task,
                folds=spec.cv.folds,
                metrics=[metric, *additional],
                has_encoder="OneHotEncoder" in names,
                has_imputer="SimpleImputer" in names,
                allows_nan=allows_nan(estimator=item.estimator),
            )
        except DataError as error:
            # Model-specific problems (preprocessing) name the model; shared ones the spec.
            where = prefix if error.field.startswith("preprocessing") else "spec"
            raise SpecError([f"{where}.{error}"]) from None
    splits = make_splits(cv=spec.cv, task=task, y=data.y, seed=seed)
    cv = cv_record(cv=spec.cv, task=task, seed=seed)
    cv.test_train_ratio = float(np.mean([len(test) / len(train) for train, test in splits]))
    return Prepared(
        seed=seed,
        task=task,
        data=data,
        splits=splits,
        reproducibility=Reproducibility(
            seed=seed,
            dataset=data.record,
            cv=cv,
            versions=library_versions(gp=gp),
        ),
        metric=metric,
        additional=additional,
    )


class JobRun:
    """One TuningJob's search: its stages in order, each narrowed from the last when progressive."""

    def __init__(
        self,
        *,
        name: str,
        spec: TuningJobSpec,
        prepared: Prepared,
        test_train_ratio: float,
        generation: int | None = None,
        model: str | None = None,
        only: StagePlan | None = None,
        warm_start: Sequence[tuple[dict[str, Any], float]] = (),
        storage: optuna.storages.BaseStorage | None = None,
        after_tell: Callable[[], None] | None = None,
    ) -> None:
        """A TuningJob's search; with ``only``, just that one frozen stage (a cluster stage Job).

        ``warm_start`` holds earlier trials (params, score) that a bayesian stage learns from.
        With ``storage`` (the trial ledger) each stage is an optuna study named after it, and a
        stage found there already resumes: its finished trials are kept, not run again.
        ``after_tell`` runs after every finished trial (the ledger's flush).
        """
        self.name = name
        self.model = model
        self.only = only
        self.warm_start = list(warm_start)
        self.storage = storage
        self.after_tell = after_tell
        self.spec = spec
        self.prepared = prepared
        self.metric = prepared.metric
        self.metrics = [prepared.metric, *prepared.additional]
        self.test_train_ratio = test_train_ratio
        self.generation = generation
        self.original_space = resolve_space(estimator=spec.estimator, parameters=spec.parameters)
        self.pipeline: Pipeline = make_pipeline(
            estimator=spec.estimator,
            preprocessing=spec.preprocessing,
            categorical_columns=prepared.data.categorical_columns,
            seed=prepared.seed,
        )
        self.stage_count = len(spec.search.stage_list())
        self.records: list[TrialRecord] = []
        self.stages: list[StageStatus] = []
        self.search: StageSearch | None = None
        self.phase: Phase = "Pending"
        self.reason = "Pending"
        self.message: str | None = None
        self.started_at: str | None = None
        self.completed_at: str | None = None
        self._planned_later = 0
        self._best: TrialRecord | None = None

    def _add(self, record: TrialRecord) -> None:
        bisect.insort(self.records, record, key=lambda r: r.number)
        score = record.mean(self.metric)
        if record.ok and math.isfinite(score):
            best = self._best
            if best is None or (-score, record.number) < (-best.mean(self.metric), best.number):
                self._best = record

    # -- the ask/tell face the driver uses ------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    def start(self) -> None:
        self.started_at = now()
        self.phase, self.reason = "Running", "StageRunning"
        if self.only is not None:
            self._start_plan(self.only)
        else:
            self._start_stage(0, self.original_space)

    def can_ask(self) -> bool:
        return self.search is not None and not self.finished and self.search.can_ask()

    def ask(self) -> Candidate:
        assert self.search is not None
        return self.search.ask()

    def batch_open(self) -> bool:
        """More candidates of the current batch must be asked now (see StageSearch)."""
        return self.search is not None and not self.finished and self.search.batch_open

    def tell(self, candidate: Candidate, folds: list[FoldResult]) -> TrialRecord:
        assert self.search is not None
        plan = self.search.plan
        record = TrialRecord(
            number=candidate.number,
            stage=plan.name,
            params=candidate.params,
            folds=sorted(folds, key=lambda f: f.fold),
            model=self.model,
        )
        # Kept in trial order: completion order depends on worker timing, the trials do not.
        self._add(record)
        self.search.tell(
            candidate,
            record.mean(self.metric) if record.ok else None,
            folds=fold_dicts(record.folds) if self.storage is not None else None,
        )
        limit = plan.max_failed_trials
        if limit is not None and self.search.failed > limit:
            self.search.stop()
        return record

    def stage_done(self) -> bool:
        return self.search is not None and self.search.done and not self.finished

    def finish_stage(self) -> StageStatus:
        """Close the current stage; start the next one or end the run."""
        assert self.search is not None
        search, plan = self.search, self.search.plan
        records = [r for r in self.records if r.stage == plan.name]
        best = ranked(records, self.metric)
        stage = self.stages[-1]  # the current stage (a frozen one is the only one)
        stage.trials = TrialCounts(
            completed=sum(r.ok for r in records), failed=search.failed, planned=search.planned
        )
        stage.best_score = best[0].mean(self.metric) if best else None
        stage.failures = failure_groups(records)
        stage.completed_at = now()
        limit = plan.max_failed_trials
        if limit is not None and search.failed > limit:
            reason = stage.failures[0].reason
            self._fail(
                stage,
                "TooManyFailedTrials",
                f"{search.failed} trials failed, more than maxFailedTrials ({limit}): {reason}",
            )
        elif not best:
            reason = stage.failures[0].reason if stage.failures else "no trial ran"
            self._fail(stage, "AllTrialsFailed", f"all {len(records)} trials failed: {reason}")
        else:
            stage.phase = "Succeeded"
            if plan.index + 1 < self.stage_count and self.only is None:
                space = refine_space(
                    space=plan.space,
                    original=self.original_space,
                    top=[r.params for r in best],
                    refinement=self.spec.search.refinement,
                )
                self._start_stage(plan.index + 1, space)
            else:
                self.phase, self.reason = "Succeeded", "SearchSucceeded"
                score = self.best_record()
                assert score is not None
                self.message = (
                    f"best {self.metric} {score.mean(self.metric):.4f} "
                    f"(trial {score.number}, {score.stage})"
                )
                self.completed_at = now()
        return stage

    def _fail(self, stage: StageStatus, reason: str, message: str) -> None:
        stage.phase, stage.message = "Failed", message
        self.phase, self.reason = "Failed", reason
        self.message = f"stage {stage.name}: {message}"
        self.completed_at = now()

    def _start_stage(self, index: int, space: Sequence[Parameter]) -> None:
        plan = plan_stage(
            search=self.spec.search,
            index=index,
            space=space,
            seed=self.prepared.seed,
            trial_offset=len(self.records),
        )
        self._start_plan(plan)

    def _start_plan(self, plan: StagePlan) -> None:
        space = plan.space
        index = plan.index
        warm = self.warm_start + [(r.params, r.mean(self.metric)) for r in self.records if r.ok]
        self.search = StageSearch(
            plan,
            warm_start=warm,
            storage=self.storage,
            # A local comparison keeps every model's stages in one journal.
            study_name=(
                None
                if self.storage is None
                else f"{self.model}.{plan.name}"
                if self.model
                else plan.name
            ),
            after_tell=self.after_tell,
        )
        for trial in self.search.resumed:
            record = record_from_ledger(
                number=trial.user_attrs[NUMBER_ATTR],
                stage=plan.name,
                params=decode(plan.space, trial.params),
                folds=trial.user_attrs[FOLDS_ATTR],
                model=self.model,
            )
            self._add(record)
        self.stages.append(
            StageStatus(
                name=plan.name,
                method=plan.method,
                phase="Running",
                trials=TrialCounts(planned=self.search.planned),
                space=list(plan.space),
                started_at=now(),
            )
        )
        # Later stages count with their budget; a later grid with the current space's size.
        self._planned_later = (
            0
            if self.only is not None
            else sum(
                planned_trials(plan_stage(search=self.spec.search, index=i, space=space, seed=0))
                for i in range(index + 1, self.stage_count)
            )
        )

    # -- what it reports -------------------------------------------------------------------------

    @property
    def plan(self) -> StagePlan | None:
        return self.search.plan if self.search else None

    def best_record(self) -> TrialRecord | None:
        """The best trial so far, kept up to date as trials are told (ties: the earlier)."""
        return self._best

    def counts(self) -> TrialCounts:
        completed = sum(r.ok for r in self.records)
        failed = len(self.records) - completed
        planned = sum(s.trials.planned for s in self.stages) + self._planned_later
        if self.finished:
            planned = len(self.records)
        return TrialCounts(completed=completed, failed=failed, planned=planned)

    def status(self) -> TuningJobStatus:
        """The status contract, computed afresh from the run's state."""
        counts = self.counts()
        stages = [s.model_copy(deep=True) for s in self.stages]
        if self.search is not None and stages and stages[-1].phase == "Running":
            current = [r for r in self.records if r.stage == stages[-1].name]
            best = ranked(current, self.metric)
            stages[-1].trials = TrialCounts(
                completed=sum(r.ok for r in current),
                failed=len(current) - sum(r.ok for r in current),
                planned=self.search.planned,
            )
            stages[-1].best_score = best[0].mean(self.metric) if best else None
        top = ranked(self.records, self.metric)
        done = counts.completed + counts.failed
        return TuningJobStatus(
            observed_generation=self.generation,
            phase=self.phase,
            conditions=phase_conditions(
                [],
                phase=self.phase,
                reason=self.reason,
                message=self.message or "",
                generation=self.generation,
            ),
            progress=f"{done}/{counts.planned}",
            message=self.message,
            reproducibility=self.prepared.reproducibility,
            started_at=self.started_at,
            completed_at=self.completed_at,
            trials=counts,
            current_stage=stages[-1].name if stages else None,
            stages=stages,
            best=best_trial(
                top[0],
                metric=self.metric,
                additional=self.metrics[1:],
                test_train_ratio=self.test_train_ratio,
            )
            if top
            else None,
            top_trials=[summary(r, self.metric) for r in top[:TOP_TRIALS]],
        )


@contextmanager
def open_executor(prepared: Prepared, *, workers: int) -> Iterator[Executor]:
    """The executor for ``prepared``'s data and folds, closed on leaving the block.

    With worker processes, while the block runs ``prepared.data`` holds the memory map of the
    file the workers read, so the data is in memory once, in pages every process shares, rather
    than once more privately here. On leaving, the file is deleted and ``prepared.data`` gets an
    in-memory copy back: a map of a deleted file fails anything that sends it to another process
    (joblib passes memory maps by file name).
    """
    executor = Executor(
        X=prepared.data.X, y=prepared.data.y, splits=prepared.splits, workers=workers
    )
    shared = executor.X is not prepared.data.X
    if shared:
        prepared.data = replace(prepared.data, X=executor.X, y=executor.y)
    try:
        with executor:
            yield executor
    finally:
        if shared:
            prepared.data = replace(
                prepared.data, X=_in_memory(prepared.data.X), y=_in_memory(prepared.data.y)
            )


def _in_memory(values: Any) -> Any:
    return values.copy() if hasattr(values, "iloc") else np.array(values)


@dataclass
class _Pending:
    run: JobRun
    candidate: Candidate
    folds: list[FoldResult] = field(default_factory=list)


def drive(
    runs: Sequence[JobRun],
    executor: Executor,
    *,
    max_active: int | None = None,
    reporter: Reporter | None = None,
    on_start: Callable[[JobRun], None] | None = None,
) -> None:
    """Evaluate every run's candidates on the executor until every run has finished.

    Runs start in order, at most ``max_active`` at once (1 is sequential); their fold fits share
    the executor's workers. A few more fits than workers are kept queued so no worker waits.
    """
    reporter = reporter or _Silent()
    waiting = deque(runs)
    active: list[JobRun] = []
    limit = max_active or len(runs)
    inflight: dict[Future[FoldResult], _Pending] = {}
    capacity = 1 if executor.workers == 1 else 2 * executor.workers + executor.folds

    def submit_candidate(run: JobRun) -> None:
        pending = _Pending(run=run, candidate=run.ask())
        for fold in range(executor.folds):
            future = executor.submit(
                pipeline=run.pipeline,
                params=pending.candidate.params,
                fold=fold,
                metrics=run.metrics,
            )
            inflight[future] = pending

    turn = 0
    while True:
        active = [r for r in active if not r.finished]
        while waiting and len(active) < limit:
            run = waiting.popleft()
            run.start()
            if on_start:
                on_start(run)
            active.append(run)
        if not active:
            return
        # Fill the queue, taking candidates from the active runs in turn.
        progress = True
        while len(inflight) < capacity and progress:
            progress = False
            for offset in range(len(active)):
                run = active[(turn + offset) % len(active)]
                if run.can_ask():
                    submit_candidate(run)
                    # A bayesian batch is asked whole, even past the capacity (by at most
                    # parallelism - 1 candidates): its candidates must not depend on timing.
                    while run.batch_open():
                        submit_candidate(run)
                    progress = True
                    turn += 1
                    break
        if not inflight:
            stalled = [r.name for r in active if not r.stage_done()]
            if stalled:
                raise RuntimeError(f"no candidate to evaluate and no stage done: {stalled}")
        done, _ = wait(list(inflight), return_when=FIRST_COMPLETED) if inflight else (set(), set())
        for future in done:
            pending = inflight.pop(future)
            pending.folds.append(future.result())
            if len(pending.folds) == executor.folds:
                record = pending.run.tell(pending.candidate, pending.folds)
                reporter.trial(pending.run, record)
        for run in active:
            if run.stage_done():
                reporter.stage(run, run.finish_stage())


@dataclass
class TuningResult:
    run: JobRun
    status: TuningJobStatus


def run_tuning_job(
    job: TuningJob,
    *,
    base_dir: Path | None = None,
    reporter: Reporter | None = None,
    parallelism: int | None = None,
    prepared: Prepared | None = None,
    runs_out: list[JobRun] | None = None,
    storage: optuna.storages.BaseStorage | None = None,
) -> TuningResult:
    """Run every stage of a TuningJob locally and return its final status.

    Args:
        job: the resource.
        base_dir: where relative data paths start (the YAML file's folder).
        reporter: receives each trial and stage as it finishes.
        parallelism: overrides spec.search.parallelism.
        prepared: a ``prepare(job)`` result, if already made.
        runs_out: receives the run as soon as it exists, so a caller interrupted with Ctrl-C
            still has the finished trials.
        storage: a trial journal; stages found there resume (see kubetune.checkpoint).
    """
    prepared = prepared or prepare(job, base_dir=base_dir)
    spec = job.spec.model_copy(
        update={"search": job.spec.search.model_copy(update={"seed": prepared.seed})}
    )
    workers = parallelism or spec.search.parallelism
    with open_executor(prepared, workers=workers) as ex:
        run = JobRun(
            name=job.metadata.name,
            spec=spec,
            prepared=prepared,
            test_train_ratio=ex.test_train_ratio,
            generation=job.metadata.generation,
            storage=storage,
        )
        if runs_out is not None:
            runs_out.append(run)
        drive([run], ex, reporter=reporter)
    return TuningResult(run=run, status=run.status())


@dataclass
class ComparisonResult:
    runs: list[JobRun]
    status: ModelComparisonStatus


def run_comparison(
    comparison: ModelComparison,
    *,
    base_dir: Path | None = None,
    reporter: Reporter | None = None,
    parallelism: int | None = None,
    prepared: Prepared | None = None,
    runs_out: list[JobRun] | None = None,
    storage: optuna.storages.BaseStorage | None = None,
) -> ComparisonResult:
    """Tune every model on the same folds with the same budget, then rank them.

    ``storage`` is a trial journal that every model's stages resume from, as in
    :func:`run_tuning_job`.
    """
    prepared = prepared or prepare(comparison, base_dir=base_dir)
    spec = comparison.spec
    search = spec.search.model_copy(update={"seed": prepared.seed})
    workers = parallelism or search.parallelism
    with open_executor(prepared, workers=workers) as ex:
        runs = []
        for model in spec.models:
            child = spec.child_spec(model).model_copy(update={"search": search})
            run = JobRun(
                name=model.name,
                spec=child,
                prepared=prepared,
                test_train_ratio=ex.test_train_ratio,
                model=model.name,
                storage=storage,
            )
            runs.append(run)
        if runs_out is not None:
            runs_out.extend(runs)
        sequential = spec.execution.mode == "sequential"
        drive(
            runs,
            ex,
            max_active=1 if sequential else spec.execution.max_concurrent,
            reporter=reporter,
        )
    status = comparison_status(
        runs=runs,
        spec=spec,
        reproducibility=prepared.reproducibility,
        test_train_ratio=ex.test_train_ratio,
        generation=comparison.metadata.generation,
    )
    return ComparisonResult(runs=runs, status=status)


def comparison_status(
    *,
    runs: Sequence[JobRun],
    spec: ModelComparisonSpec,
    reproducibility: Reproducibility | None,
    test_train_ratio: float,
    generation: int | None = None,
) -> ModelComparisonStatus:
    """Rank the models (failed ones last) and test the winner's lead over the runner-up."""
    outcomes = []
    for run in runs:
        best = run.best_record()
        outcomes.append(
            ModelOutcome(
                model=run.name,
                estimator=run.spec.estimator.name,
                phase=run.phase,
                best=best_trial(
                    best, metric=run.metric, additional=[], test_train_ratio=test_train_ratio
                )
                if best is not None
                else None,
                trials=run.counts(),
                message=run.message,
            )
        )
    ranking, significance = rank_models(outcomes, test_train_ratio=test_train_ratio)
    finished = [r for r in runs if r.finished]
    failed = [r for r in runs if r.phase == "Failed"]
    all_done = len(finished) == len(runs)
    phase: Phase
    if all_done and len(failed) == len(runs):
        phase, reason = "Failed", "AllModelsFailed"
        message = f"every model failed; first: {failed[0].name}: {failed[0].message}"
    elif all_done:
        phase, reason = "Succeeded", "ComparisonSucceeded"
        message = verdict(ranking[0], significance, runs[0].metric)
    elif any(r.phase != "Pending" for r in runs):
        phase, reason, message = "Running", "ModelsRunning", ""
    else:
        phase, reason, message = "Pending", "Pending", ""
    trials = [r.counts() for r in runs]
    planned_trials_ = sum(c.planned for c in trials)
    winner = ranking[0] if phase == "Succeeded" else None
    starts = [r.started_at for r in runs if r.started_at]
    return ModelComparisonStatus(
        observed_generation=generation,
        phase=phase,
        conditions=phase_conditions(
            [], phase=phase, reason=reason, message=message, generation=generation
        ),
        progress=f"{len(finished)}/{len(runs)}",
        message=message or None,
        reproducibility=reproducibility,
        started_at=min(starts) if starts else None,
        completed_at=now() if all_done else None,
        models=TrialCounts(
            completed=len(finished) - len(failed), failed=len(failed), planned=len(runs)
        ),
        trials=TrialCounts(
            completed=sum(c.completed for c in trials),
            failed=sum(c.failed for c in trials),
            planned=planned_trials_,
        ),
        ranking=ranking,
        best_model=winner.model if winner else None,
        best_score=winner.score if winner else None,
        significance=significance,
    )


def refit(run: JobRun) -> Pipeline | None:
    """The run's pipeline with its best parameters, fitted on all the data."""
    best = run.best_record()
    if best is None:
        return None
    model = clone_with(run.pipeline, best.params)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(run.prepared.data.X, run.prepared.data.y)
    return model
