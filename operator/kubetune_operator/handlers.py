"""The kopf handlers: thin. They gather what is observed, ask the planner, and carry it out.

Every entry point (create, resume, spec update, a stage Job's event, a runner's report, the
resync timer) ends in the same reconcile, serialised per resource by a lock in kopf's memo.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from kubetune.api import SpecError
from kubetune.api.resources import validation_problems
from kubetune.api.spec import ModelComparisonSpec, TuningJobSpec
from kubetune.api.status import is_terminal
from kubetune_operator.children import (
    LABEL_COMPARISON,
    LABEL_TUNINGJOB,
    MANAGED_BY,
    OPERATOR,
)
from kubetune_operator.config import OperatorConfig
from kubetune_operator.kube import Kube, Retryable, load_api_client
from kubetune_operator.metrics import Metrics
from kubetune_operator.planner import (
    COMPARISON_FIELDS,
    OPERATOR_FIELDS,
    ChildView,
    CreateObject,
    Decision,
    DeleteJob,
    JobView,
    Meta,
    SetChildSuspend,
    SetJobSuspend,
    plan_comparison,
    plan_invalid,
    plan_tuning,
)

TJ = ("kubetune.io", "v1alpha1", "tuningjobs")
MC = ("kubetune.io", "v1alpha1", "modelcomparisons")
OWNED = {MANAGED_BY: OPERATOR}
# kopf fixes a timer's interval when the handler is declared: read it from the environment here.
RESYNC_SECONDS = OperatorConfig.from_env().resync_seconds


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    """All settings in one place: kubetune's prefixes, one replica, explicit timeouts."""
    config: OperatorConfig = getattr(memo, "config", None) or OperatorConfig.from_env()
    memo.config = config
    settings.persistence.finalizer = "kubetune.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubetune.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kubetune.io", key="last-handled-configuration"
    )
    settings.peering.standalone = True  # one replica (the Deployment uses Recreate)
    settings.posting.enabled = True  # Events only from kopf.info / kopf.warn
    settings.posting.level = 100  # no Events from log lines
    # Only the Jobs this operator made, filtered by the API server.
    settings.watching.label_selectors["batch", "jobs"] = f"{MANAGED_BY}={OPERATOR}"
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 30
    settings.execution.max_workers = 8
    if not hasattr(memo, "kube"):
        memo.kube = Kube(load_api_client())
    memo.locks = {}
    memo.metrics = getattr(memo, "metrics", None) or Metrics()
    if config.metrics_port:
        try:
            memo.metrics.serve(config.metrics_port)
        except OSError as error:
            logger.warning(f"metrics endpoint not started on {config.metrics_port}: {error}")


@kopf.on.probe(id="api")
def probe(**_: Any) -> str:
    return "ok"


# --- indexes: what is observed, kept by kopf from its watches ---------------------------------


@kopf.index("batch", "v1", "jobs", labels=OWNED)
def stage_jobs(name: str, namespace: str, labels: Any, body: Any, **_: Any) -> Any:
    parent = labels.get(LABEL_TUNINGJOB)
    return {(namespace, parent): JobView.from_body(dict(body))} if parent else None


@kopf.index(*TJ)
def tuningjobs(name: str, namespace: str, body: Any, **_: Any) -> Any:
    return {(namespace, name): dict(body)}


@kopf.index(*TJ, labels={LABEL_COMPARISON: kopf.PRESENT})
def comparison_children(namespace: str, labels: Any, body: Any, **_: Any) -> Any:
    return {(namespace, labels[LABEL_COMPARISON]): ChildView.from_body(dict(body))}


@kopf.index(*MC)
def comparisons(name: str, namespace: str, body: Any, **_: Any) -> Any:
    return {(namespace, name): dict(body)}


# --- TuningJob -----------------------------------------------------------------------------------


@kopf.on.create(*TJ)
@kopf.on.resume(*TJ)
@kopf.on.update(*TJ, field="spec")
async def tuningjob_changed(
    body: Any, memo: kopf.Memo, stage_jobs: kopf.Index[Any, Any], **_: Any
) -> None:
    await reconcile_tuningjob(dict(body), memo, stage_jobs, permanent_errors=True)


def _report_ended(status: Any, **_: Any) -> bool:
    report = (status or {}).get("report") or {}
    return is_terminal(report.get("phase"))


@kopf.on.event(*TJ, when=_report_ended)
async def stage_reported(
    body: Any, type: str | None, memo: kopf.Memo, stage_jobs: kopf.Index[Any, Any], **_: Any
) -> None:
    """A runner wrote its stage's final report: the next stage need not wait for the timer."""
    if type != "DELETED":
        await reconcile_tuningjob(dict(body), memo, stage_jobs)


@kopf.on.event("batch", "v1", "jobs", labels=OWNED)
async def stage_job_changed(
    labels: Any,
    namespace: str,
    type: str | None,
    memo: kopf.Memo,
    tuningjobs: kopf.Index[Any, Any],
    stage_jobs: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    parent = labels.get(LABEL_TUNINGJOB)
    for body in tuningjobs.get((namespace, parent), []):
        await reconcile_tuningjob(body, memo, stage_jobs)


@kopf.timer(*TJ, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def tuningjob_resync(
    body: Any, status: Any, memo: kopf.Memo, stage_jobs: kopf.Index[Any, Any], **_: Any
) -> None:
    """The safety net for a missed event: reconcile what is not finished."""
    if not is_terminal((status or {}).get("phase")):
        await reconcile_tuningjob(dict(body), memo, stage_jobs)


@kopf.on.delete(*TJ)
async def tuningjob_deleted(
    name: str, namespace: str, memo: kopf.Memo, stage_jobs: kopf.Index[Any, Any], **_: Any
) -> None:
    """Stop and remove the stage Jobs now (owner references would, later), then let go."""
    for job in stage_jobs.get((namespace, name), []):
        await _kube(memo).delete_job(namespace=namespace, name=job.name)
    memo.metrics.observe_phase(kind="TuningJob", namespace=namespace, name=name, phase=None)


async def reconcile_tuningjob(
    body: dict[str, Any],
    memo: kopf.Memo,
    stage_jobs: kopf.Index[Any, Any],
    *,
    permanent_errors: bool = False,
) -> None:
    meta = _meta(body)
    async with _lock(memo, "TuningJob", meta):
        started = time.perf_counter()
        try:
            try:
                spec = TuningJobSpec.model_validate(body.get("spec") or {})
            except ValueError as error:
                await _invalid(body, memo, "TuningJob", meta, error, permanent_errors)
                return
            observed = {job.name: job for job in stage_jobs.get((meta.namespace, meta.name), [])}
            failed = [j for j in observed.values() if j.failed_final and not j.termination_message]
            for job in failed:
                message = await _kube(memo).termination_message(
                    namespace=meta.namespace, job=job.name
                )
                observed[job.name] = JobView(**{**job.__dict__, "termination_message": message})
            decision = plan_tuning(
                meta=meta,
                spec=spec,
                status=dict(body.get("status") or {}),
                jobs=observed,
                config=memo.config,
                new_seed=random.SystemRandom().randrange(2**31),
                now=datetime.now(UTC),
            )
            await _carry_out(body, memo, "TuningJob", meta, decision, OPERATOR_FIELDS)
        except Retryable as error:
            memo.metrics.reconcile_errors.labels(kind="TuningJob").inc()
            raise kopf.TemporaryError(str(error), delay=error.delay) from error
        except Exception:
            memo.metrics.reconcile_errors.labels(kind="TuningJob").inc()
            raise
        finally:
            memo.metrics.reconcile_seconds.labels(kind="TuningJob").observe(
                time.perf_counter() - started
            )


# --- ModelComparison -----------------------------------------------------------------------------


@kopf.on.create(*MC)
@kopf.on.resume(*MC)
@kopf.on.update(*MC, field="spec")
async def comparison_changed(
    body: Any, memo: kopf.Memo, comparison_children: kopf.Index[Any, Any], **_: Any
) -> None:
    await reconcile_comparison(dict(body), memo, comparison_children, permanent_errors=True)


@kopf.on.event(*TJ, labels={LABEL_COMPARISON: kopf.PRESENT})
async def child_changed(
    labels: Any,
    namespace: str,
    memo: kopf.Memo,
    comparisons: kopf.Index[Any, Any],
    comparison_children: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    for body in comparisons.get((namespace, labels[LABEL_COMPARISON]), []):
        await reconcile_comparison(body, memo, comparison_children)


@kopf.timer(*MC, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def comparison_resync(
    body: Any, status: Any, memo: kopf.Memo, comparison_children: kopf.Index[Any, Any], **_: Any
) -> None:
    if not is_terminal((status or {}).get("phase")):
        await reconcile_comparison(dict(body), memo, comparison_children)


@kopf.on.delete(*MC)
async def comparison_deleted(
    name: str, namespace: str, memo: kopf.Memo, comparison_children: kopf.Index[Any, Any], **_: Any
) -> None:
    for child in comparison_children.get((namespace, name), []):
        await _kube(memo).delete_tuningjob(namespace=namespace, name=child.name)
    memo.metrics.observe_phase(kind="ModelComparison", namespace=namespace, name=name, phase=None)


async def reconcile_comparison(
    body: dict[str, Any],
    memo: kopf.Memo,
    comparison_children: kopf.Index[Any, Any],
    *,
    permanent_errors: bool = False,
) -> None:
    meta = _meta(body)
    async with _lock(memo, "ModelComparison", meta):
        started = time.perf_counter()
        try:
            try:
                spec = ModelComparisonSpec.model_validate(body.get("spec") or {})
            except ValueError as error:
                await _invalid(body, memo, "ModelComparison", meta, error, permanent_errors)
                return
            children = {c.name: c for c in comparison_children.get((meta.namespace, meta.name), [])}
            decision = plan_comparison(
                meta=meta,
                spec=spec,
                status=dict(body.get("status") or {}),
                children=children,
                new_seed=random.SystemRandom().randrange(2**31),
                now=datetime.now(UTC),
            )
            await _carry_out(body, memo, "ModelComparison", meta, decision, COMPARISON_FIELDS)
        except Retryable as error:
            memo.metrics.reconcile_errors.labels(kind="ModelComparison").inc()
            raise kopf.TemporaryError(str(error), delay=error.delay) from error
        except Exception:
            memo.metrics.reconcile_errors.labels(kind="ModelComparison").inc()
            raise
        finally:
            memo.metrics.reconcile_seconds.labels(kind="ModelComparison").observe(
                time.perf_counter() - started
            )


# --- shared edges ------------------------------------------------------------------------------


def _kube(memo: kopf.Memo) -> Kube:
    kube: Kube = memo.kube
    return kube


def _meta(body: dict[str, Any]) -> Meta:
    metadata = body.get("metadata") or {}
    return Meta(
        name=metadata["name"],
        namespace=metadata["namespace"],
        uid=metadata.get("uid") or "",
        generation=metadata.get("generation"),
    )


def _lock(memo: kopf.Memo, kind: str, meta: Meta) -> asyncio.Lock:
    locks: dict[tuple[str, str, str], asyncio.Lock] = memo.locks
    return locks.setdefault((kind, meta.namespace, meta.name), asyncio.Lock())


async def _invalid(
    body: dict[str, Any], memo: kopf.Memo, kind: str, meta: Meta, error: ValueError, permanent: bool
) -> None:
    problems = (
        error.problems
        if isinstance(error, SpecError)
        else validation_problems(error)
        if hasattr(error, "errors")
        else [str(error)]
    )
    message = "; ".join(f"spec.{p}" for p in problems)
    status = dict(body.get("status") or {})
    decision = plan_invalid(kind=kind, status=status, message=message, generation=meta.generation)
    fields = OPERATOR_FIELDS if kind == "TuningJob" else COMPARISON_FIELDS
    await _carry_out(body, memo, kind, meta, decision, fields)
    if permanent:
        raise kopf.PermanentError(message)


async def _carry_out(
    body: dict[str, Any],
    memo: kopf.Memo,
    kind: str,
    meta: Meta,
    decision: Decision,
    fields: tuple[str, ...],
) -> None:
    """Actions in order, then one status write (only what changed), then Events."""
    kube = _kube(memo)
    for action in decision.actions:
        if isinstance(action, CreateObject):
            await kube.create(action.body)
        elif isinstance(action, SetJobSuspend):
            await kube.set_job_suspend(
                namespace=meta.namespace, name=action.name, suspend=action.suspend
            )
        elif isinstance(action, SetChildSuspend):
            await kube.set_child_suspend(
                namespace=meta.namespace, name=action.name, suspend=action.suspend
            )
        elif isinstance(action, DeleteJob):
            await kube.delete_job(namespace=meta.namespace, name=action.name)
    current = dict(body.get("status") or {})
    patch = decision.status_patch(current, fields)
    if patch:
        await kube.patch_status(kind=kind, namespace=meta.namespace, name=meta.name, patch=patch)
    for event in decision.events:
        post = kopf.warn if event.type == "Warning" else kopf.info
        post(cast(Any, body), reason=event.reason, message=event.message)
    memo.metrics.observe_phase(
        kind=kind, namespace=meta.namespace, name=meta.name, phase=decision.status.get("phase")
    )
    if kind == "TuningJob":
        before = {s.get("name"): s.get("phase") for s in current.get("stages") or []}
        ended = [
            s
            for s in decision.status.get("stages") or []
            if is_terminal(s.get("phase")) and not is_terminal(before.get(s.get("name")))
        ]
        memo.metrics.observe_events(
            decision.events,
            stage_trials=sum((s.get("trials") or {}).get("completed", 0) for s in ended),
        )
    if decision.requeue_after:
        raise kopf.TemporaryError(
            "waiting for the runner's final report", delay=decision.requeue_after
        )
