"""The pure planner: (spec, status, observed children) -> (status, actions, events).

No I/O and no clock of its own (``now`` is an argument), so every transition is unit-tested
without a cluster. The handlers carry out the actions in order, then write the status once.

Status ownership: the operator writes the fields in ``OPERATOR_FIELDS``; a stage's runner writes
``trials``, ``progress``, ``best``, ``topTrials``, ``report`` and the rest of
``reproducibility``. Both use JSON merge patches on disjoint fields, so neither loses the
other's updates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from kubetune.api.spec import ModelComparisonSpec, TuningJobSpec
from kubetune.api.status import (
    ModelComparisonStatus,
    Phase,
    Reproducibility,
    StageStatus,
    TrialCounts,
    TuningJobStatus,
    is_terminal,
    phase_conditions,
)
from kubetune.planning import (
    ObjectRef,
    StageTask,
    plan_stage,
    planned_trials,
    refine_space,
    resolve_space,
)
from kubetune.ranking import ModelOutcome, rank_models, verdict
from kubetune.stats import default_test_train_ratio
from kubetune_operator.children import (
    PASSED_ON,
    child_name,
    child_settings_patch,
    child_tuningjob,
    stage_job,
)
from kubetune_operator.config import OperatorConfig

OPERATOR_FIELDS = (
    "observedGeneration",
    "phase",
    "conditions",
    "message",
    "currentStage",
    "stages",
    "startedAt",
    "completedAt",
    "reproducibility.seed",  # the runner writes the rest of reproducibility
)
COMPARISON_FIELDS = (
    *OPERATOR_FIELDS,
    "progress",
    "models",
    "trials",
    "ranking",
    "bestModel",
    "bestScore",
    "significance",
    "reproducibility",
)


@dataclass(frozen=True)
class Meta:
    """The parent's identity."""

    name: str
    namespace: str
    uid: str
    generation: int | None = None


@dataclass(frozen=True)
class JobView:
    """What the operator needs to know of one observed stage Job."""

    name: str
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    suspended: bool = False
    complete: bool = False
    failed_final: bool = False
    reason: str | None = None
    message: str | None = None
    termination_message: str | None = None
    completion_time: str | None = None

    @classmethod
    def from_body(cls, body: dict[str, Any], *, termination_message: str | None = None) -> JobView:
        spec, status = body.get("spec") or {}, body.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        failed = conditions.get("Failed", {})
        complete = conditions.get("Complete", {})
        return cls(
            name=body["metadata"]["name"],
            active=int(status.get("active") or 0),
            succeeded=int(status.get("succeeded") or 0),
            failed=int(status.get("failed") or 0),
            suspended=bool(spec.get("suspend")),
            complete=complete.get("status") == "True",
            failed_final=failed.get("status") == "True",
            reason=failed.get("reason"),
            message=failed.get("message"),
            termination_message=termination_message,
            completion_time=status.get("completionTime") or complete.get("lastTransitionTime"),
        )

    @property
    def finished(self) -> bool:
        return self.complete or self.failed_final

    def failure(self) -> str:
        """The most useful line about why the Job failed: the runner's own words first."""
        if self.termination_message:
            return self.termination_message.strip().splitlines()[-1]
        reasons = {
            "DeadlineExceeded": "the stage ran past runner.timeoutSeconds",
            "BackoffLimitExceeded": "the runner pod failed more than runner.backoffLimit times",
            "PodFailurePolicy": "the runner rejected its input",
        }
        text = reasons.get(self.reason or "", self.reason or "the Job failed")
        return f"{text}: {self.message}" if self.message else text


@dataclass(frozen=True)
class CreateObject:
    body: dict[str, Any]


@dataclass(frozen=True)
class SetJobSuspend:
    name: str
    suspend: bool


@dataclass(frozen=True)
class SetChildSuspend:
    name: str
    suspend: bool


@dataclass(frozen=True)
class PatchChildSpec:
    """A merge patch of a child TuningJob's spec (its budget and cluster settings)."""

    name: str
    patch: dict[str, Any]


@dataclass(frozen=True)
class DeleteJob:
    name: str


Action = CreateObject | SetJobSuspend | SetChildSuspend | PatchChildSpec | DeleteJob


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Decision:
    """What one reconcile pass does: actions first, then one status write."""

    status: dict[str, Any]
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None

    def status_patch(self, current: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
        """The merge patch of the owned fields that changed (empty when nothing did).

        ``fields`` are dotted paths: "reproducibility.seed" writes that key alone, so the
        runner's keys beside it are never written back from a stale copy.
        """
        patch: dict[str, Any] = {}
        for path in fields:
            keys = path.split(".")
            new, old = _get(self.status, keys), _get(current, keys)
            if new != old:
                target = patch
                for key in keys[:-1]:
                    target = target.setdefault(key, {})
                target[keys[-1]] = new
        return patch


def _get(data: dict[str, Any], keys: list[str]) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)  # type: ignore[assignment]
    return data


def parse_status(cls: type[Any], status: dict[str, Any] | None) -> Any:
    """The status as a model; fields that do not validate are dropped rather than crash-looping.

    A status written by another version, or edited by hand, must never stop reconciling.
    """
    data = dict(status or {})
    try:
        return cls.model_validate(data)
    except ValueError:
        kept = {}
        for key, value in data.items():
            try:
                cls.model_validate({key: value})
            except ValueError:
                continue
            kept[key] = value
        return cls.model_validate(kept)


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


# --- TuningJob ---------------------------------------------------------------------------------


def plan_invalid(
    *, kind: str, status: dict[str, Any], message: str, generation: int | None
) -> Decision:
    """An invalid spec: Failed with reason InvalidSpec, a Warning event once, never a retry."""
    conditions = _conditions(status, "Failed", "InvalidSpec", message, generation)
    new = {
        **status,
        "observedGeneration": generation,
        "phase": "Failed",
        "message": message,
        "conditions": conditions,
    }
    events = []
    if status.get("message") != message or status.get("phase") != "Failed":
        events.append(Event("Warning", "InvalidSpec", f"invalid {kind}: {message}"))
    return Decision(status=new, events=events)


def _conditions(
    status: dict[str, Any], phase: Phase, reason: str, message: str, generation: int | None
) -> list[dict[str, Any]]:
    from kubetune.api.status import Condition

    current = [Condition.model_validate(c) for c in status.get("conditions") or []]
    return [
        _dump(c)
        for c in phase_conditions(
            current, phase=phase, reason=reason, message=message, generation=generation
        )
    ]


def plan_tuning(
    *,
    meta: Meta,
    spec: TuningJobSpec,
    status: dict[str, Any],
    jobs: dict[str, JobView],
    config: OperatorConfig,
    new_seed: int,
    now: datetime,
) -> Decision:
    """Reconcile one TuningJob from its spec, its status and the stage Jobs observed."""
    current: TuningJobStatus = parse_status(TuningJobStatus, status)
    st = current.model_copy(deep=True)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    actions: list[Action] = []
    events: list[Event] = []
    requeue: float | None = None

    def finish(phase: Phase, reason: str, message: str) -> Decision:
        st.phase, st.message, st.observed_generation = phase, message or None, meta.generation
        st.conditions = phase_conditions(
            current.conditions,
            phase=phase,
            reason=reason,
            message=message,
            generation=meta.generation,
        )
        return Decision(status=_dump(st), actions=actions, events=events, requeue_after=requeue)

    def suspended(message: str) -> Decision:
        # One Event per suspension: on the change of phase, not on every pass that sees it.
        if current.phase != "Suspended":
            events.append(Event("Normal", "Suspended", message))
        return finish("Suspended", "Suspended", message)

    if is_terminal(current.phase):
        # Finished for good; a later budget or suspend edit only moves observedGeneration.
        reason = next(
            (
                c.reason
                for c in current.conditions
                if c.type == current.phase and c.status == "True"
            ),
            current.phase,
        )
        return finish(current.phase, reason, current.message or "")

    if st.reproducibility is None:
        # The seed is chosen once, before any Job, so every stage (and every model) shares it.
        st.reproducibility = Reproducibility(
            seed=spec.search.seed if spec.search.seed is not None else new_seed
        )
    seed = st.reproducibility.seed
    original = resolve_space(estimator=spec.estimator, parameters=spec.parameters)
    stages = spec.search.stage_list()

    def stage_job_action(index: int, space: list[Any]) -> tuple[StageStatus, CreateObject]:
        """The stage's status entry and the create of its Job (the same on every call)."""
        done = st.stages[:index]
        before = TrialCounts(
            completed=sum(s.trials.completed for s in done),
            failed=sum(s.trials.failed for s in done),
        )
        plan = plan_stage(
            search=spec.search,
            index=index,
            space=space,
            seed=seed,
            trial_offset=before.completed + before.failed,
        )
        name = child_name(meta.name, plan.name)
        planned = planned_trials(plan)
        later = sum(
            planned_trials(plan_stage(search=spec.search, index=i, space=space, seed=0))
            for i in range(index + 1, len(stages))
        )
        task = StageTask(
            target=ObjectRef(namespace=meta.namespace, name=meta.name, uid=meta.uid),
            # The resolved seed travels with the task: folds and estimators depend on it.
            spec=spec.model_copy(update={"search": spec.search.model_copy(update={"seed": seed})}),
            plan=plan,
            planned_total=before.completed + before.failed + planned + later,
            trials_before=before,
        )
        entry = StageStatus(
            name=plan.name,
            method=plan.method,
            phase="Running",
            job_name=name,
            trials=TrialCounts(planned=planned),
            space=list(space),
            started_at=stamp,
        )
        body = stage_job(
            task=task, job_name=name, uid=meta.uid, config=config, suspend=spec.suspend
        )
        return entry, CreateObject(body)

    def start_stage(index: int, space: list[Any]) -> None:
        # Recorded in status before the Job exists: a restart finds the name and re-creates it.
        entry, create = stage_job_action(index, space)
        st.stages.append(entry)
        st.current_stage = entry.name
        actions.append(create)

    if not st.stages:
        if spec.suspend:
            return suspended("suspended before the first stage")
        st.started_at = stamp
        start_stage(0, original)
        stage = st.stages[0]
        events.append(
            Event(
                "Normal",
                "Started",
                f"started {stage.name} ({stage.trials.planned} trials, Job {stage.job_name})",
            )
        )
        return finish("Running", "StageRunning", f"running {stage.name}")

    stage = st.stages[-1]
    index = len(st.stages) - 1
    assert stage.job_name is not None
    job = jobs.get(stage.job_name)
    if job is None and stage.phase == "Succeeded":
        # It ended and its report was taken in; the Job may be gone since (a TTL, a user) while
        # the next stage waited: it must not run again.
        job = JobView(name=stage.job_name, succeeded=1, complete=True)

    if job is None:
        # Recorded but not observed (an operator restart, or the create did not land): create
        # it again from the recorded space; a Job that does exist answers 409, which is fine.
        actions.append(stage_job_action(index, list(stage.space))[1])
        if spec.suspend:
            return suspended(f"suspended in {stage.name}")
        return finish("Running", "StageRunning", f"running {stage.name}")

    if job.complete:
        report = current.report
        if report is None or report.stage != stage.name or not is_terminal(report.phase):
            ended = _parse_time(job.completion_time)
            if ended is not None and (now - ended).total_seconds() > config.report_grace_seconds:
                message = "the runner finished without reporting the stage's result"
                return _fail_stage(st, stage, "NoStageReport", message, finish, events, stamp)
            requeue = 2.0  # the runner's last status write is on its way
            return finish(
                current.phase if current.phase != "Pending" else "Running",
                "StageRunning",
                current.message or f"running {stage.name}",
            )
        stage.trials = report.trials
        stage.best_score = report.best_score
        stage.failures = list(report.failures)
        # Kept once set: a stage that ended while suspended is seen again on every pass.
        stage.completed_at = stage.completed_at or stamp
        if report.phase == "Failed":
            return _fail_stage(
                st,
                stage,
                "StageFailed",
                report.message or "the stage failed",
                finish,
                events,
                stamp,
            )
        stage.phase = "Succeeded"
        if index + 1 < len(stages):
            if spec.suspend:
                return suspended(f"suspended after {stage.name}; the next stage waits")
            space = refine_space(
                space=list(stage.space),
                original=original,
                top=[t.params for t in report.top],
                refinement=spec.search.refinement,
            )
            start_stage(index + 1, space)
            nxt = st.stages[-1]
            best = "-" if stage.best_score is None else f"{stage.best_score:.4f}"
            events.append(
                Event(
                    "Normal",
                    "StageStarted",
                    f"{stage.name} succeeded (best {best}); started {nxt.name} "
                    f"({nxt.trials.planned} trials, Job {nxt.job_name})",
                )
            )
            return finish("Running", "StageRunning", f"running {nxt.name}")
        st.completed_at = stamp
        message = _success_message(current, spec)
        events.append(Event("Normal", "Succeeded", message))
        return finish("Succeeded", "SearchSucceeded", message)

    if job.failed_final:
        report = current.report
        if report is not None and report.stage == stage.name and report.phase == "Failed":
            # The runner said why before it exited: the search failed, not the Job.
            stage.trials, stage.failures = report.trials, list(report.failures)
            message = report.message or job.failure()
            return _fail_stage(st, stage, "StageFailed", message, finish, events, stamp)
        return _fail_stage(st, stage, "JobFailed", job.failure(), finish, events, stamp)

    # The stage's Job is running (or queued).
    # Actions follow what is observed (idempotent, so a stale view only repeats one); Events
    # follow the change of phase, so they are never repeated.
    if spec.suspend:
        if not job.suspended:
            actions.append(SetJobSuspend(job.name, True))
        return suspended(f"suspended in {stage.name}")
    # Unsuspend whatever is suspended without a queue: the operator suspended it (status is
    # written before the Job is touched, so phase may already say Running after a failed
    # attempt). A queued Job waits for Kueue to admit it.
    if job.suspended and not spec.queue_name:
        actions.append(SetJobSuspend(job.name, False))
    if current.phase == "Suspended":
        events.append(Event("Normal", "Resumed", f"resumed {stage.name}"))
    if job.suspended and spec.queue_name:
        # Not admitted yet (or preempted): nothing runs, so the resource must not say Running.
        return finish("Pending", "Queued", f"{stage.name} waits for Kueue queue {spec.queue_name}")
    return finish("Running", "StageRunning", f"running {stage.name}")


def _fail_stage(
    st: TuningJobStatus,
    stage: StageStatus,
    reason: str,
    message: str,
    finish: Any,
    events: list[Event],
    stamp: str,
) -> Decision:
    stage.phase, stage.message, stage.completed_at = "Failed", message, stage.completed_at or stamp
    st.completed_at = stamp
    text = f"stage {stage.name} failed: {message}"
    events.append(Event("Warning", "Failed", text))
    decision: Decision = finish("Failed", reason, text)
    return decision


def _success_message(status: TuningJobStatus, spec: TuningJobSpec) -> str:
    best = status.best
    if best is None:
        return "search succeeded"
    return (
        f"search succeeded: best {best.metric} {best.score:.4f} ± {best.std:.4f} "
        f"(trial {best.trial} in {best.stage})"
    )


# --- ModelComparison -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildView:
    """One observed child TuningJob."""

    name: str
    suspended: bool
    status: TuningJobStatus
    settings: dict[str, Any] = field(default_factory=dict)
    """The child's spec fields that follow the comparison's (children.PASSED_ON)."""

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ChildView:
        status: TuningJobStatus = parse_status(TuningJobStatus, body.get("status"))
        spec = body.get("spec") or {}
        return cls(
            name=body["metadata"]["name"],
            suspended=bool(spec.get("suspend")),
            status=status,
            settings={k: spec[k] for k in PASSED_ON if k in spec},
        )


def plan_comparison(
    *,
    meta: Meta,
    spec: ModelComparisonSpec,
    status: dict[str, Any],
    children: dict[str, ChildView],
    new_seed: int,
    now: datetime,
) -> Decision:
    """Reconcile one ModelComparison from its spec, status and child TuningJobs."""
    current: ModelComparisonStatus = parse_status(ModelComparisonStatus, status)
    st = current.model_copy(deep=True)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    actions: list[Action] = []
    events: list[Event] = []
    if is_terminal(current.phase):
        st.observed_generation = meta.generation
        return Decision(status=_dump(st))
    if st.reproducibility is None:
        st.reproducibility = Reproducibility(
            seed=spec.search.seed if spec.search.seed is not None else new_seed
        )
    seed = st.reproducibility.seed
    names = {m.name: child_name(meta.name, m.name) for m in spec.models}
    limit = (
        1
        if spec.execution.mode == "sequential"
        else (spec.execution.max_concurrent or len(spec.models))
    )
    running = [
        m
        for m in spec.models
        if names[m.name] in children and not is_terminal(children[names[m.name]].status.phase)
    ]
    if not st.started_at:
        st.started_at = stamp
        events.append(
            Event(
                "Normal", "Started", f"comparing {len(spec.models)} models ({spec.execution.mode})"
            )
        )
    updated = []
    for model in spec.models:
        name = names[model.name]
        child = children.get(name)
        desired = child_tuningjob(
            comparison=meta.name,
            namespace=meta.namespace,
            uid=meta.uid,
            spec=spec,
            model=model,
            seed=seed,
            suspend=spec.suspend,
        )
        if child is None:
            if spec.suspend or len(running) >= limit:
                continue
            actions.append(CreateObject(desired))
            running.append(model)
            continue
        if is_terminal(child.status.phase):
            continue
        if child.suspended != spec.suspend:
            actions.append(SetChildSuspend(name, spec.suspend))
        # Budget edits reach the models already running too; each child takes them at its
        # next stage, as a TuningJob edited directly would.
        patch = child_settings_patch(child.settings, desired["spec"])
        if patch:
            actions.append(PatchChildSpec(name, patch))
            updated.append(model.name)
    if updated and current.observed_generation != meta.generation:
        events.append(
            Event(
                "Normal",
                "ModelsUpdated",
                f"search and runner settings passed on to {len(updated)} unfinished "
                f"models ({', '.join(updated)}); each takes them at its next stage",
            )
        )

    outcomes = []
    for model in spec.models:
        child = children.get(names[model.name])
        cs = child.status if child else TuningJobStatus()
        outcomes.append(
            ModelOutcome(
                model=model.name,
                estimator=model.estimator.name,
                phase=cs.phase,
                best=cs.best,
                trials=cs.trials,
                message=cs.message,
                tuning_job=names[model.name],
            )
        )
    ratio = default_test_train_ratio(spec.cv.folds)
    for child in children.values():
        repro = child.status.reproducibility
        if repro and repro.cv and repro.cv.test_train_ratio:
            ratio = repro.cv.test_train_ratio
            if st.reproducibility.dataset is None:
                st.reproducibility = repro.model_copy(update={"seed": seed})
            break
    ranking, significance = rank_models(outcomes, test_train_ratio=ratio)
    finished = [o for o in outcomes if is_terminal(o.phase)]
    failed = [o for o in outcomes if o.phase == "Failed"]
    st.ranking, st.significance = ranking, significance
    st.models = TrialCounts(
        completed=len(finished) - len(failed), failed=len(failed), planned=len(outcomes)
    )
    st.trials = TrialCounts(
        completed=sum(o.trials.completed for o in outcomes),
        failed=sum(o.trials.failed for o in outcomes),
        planned=sum(o.trials.planned for o in outcomes),
    )
    st.progress = f"{len(finished)}/{len(outcomes)}"
    metric = spec.scoring.metric or "score"
    phase: Phase
    # A model's failure is reported before the verdict it may lead to, so that the events read
    # in the order things happened (they are posted in this order).
    for o in failed:
        if o.model not in {r.model for r in current.ranking if r.phase == "Failed"}:
            events.append(Event("Warning", "ModelFailed", f"model {o.model} failed: {o.message}"))
    if len(finished) == len(outcomes):
        st.completed_at = stamp
        if len(failed) == len(outcomes):
            phase, reason = "Failed", "AllModelsFailed"
            message = f"every model failed; {failed[0].model}: {failed[0].message}"
            events.append(Event("Warning", "Failed", message))
        else:
            phase, reason = "Succeeded", "ComparisonSucceeded"
            message = verdict(ranking[0], significance, metric)
            st.best_model, st.best_score = ranking[0].model, ranking[0].score
            events.append(Event("Normal", "Succeeded", message))
    elif spec.suspend:
        phase, reason, message = "Suspended", "Suspended", "suspended"
        if current.phase != "Suspended":
            events.append(Event("Normal", "Suspended", f"suspended with {st.progress} models done"))
    else:
        phase, reason = "Running", "ModelsRunning"
        message = f"{len(finished)} of {len(outcomes)} models finished"
        if current.phase == "Suspended":
            events.append(Event("Normal", "Resumed", f"resumed with {st.progress} models done"))
    st.phase, st.message, st.observed_generation = phase, message, meta.generation
    st.conditions = phase_conditions(
        current.conditions, phase=phase, reason=reason, message=message, generation=meta.generation
    )
    return Decision(status=_dump(st), actions=actions, events=events)
