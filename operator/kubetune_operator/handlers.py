"""The kopf handlers: thin. They gather what is observed, ask the planner, and carry it out.

Every entry point (create, resume, spec update, a stage Job's event, a runner's report, the
resync timer) ends in the same reconcile, serialised per resource by a lock in kopf's memo.
A pass reads its resource afresh under that lock (the body a handler was given may predate
the status the previous pass wrote), writes the status (so a child's name is recorded before
the child exists), posts its Events, then creates, suspends or deletes.

Because every pass starts with that fresh read, a watch event that arrives while a pass of its
resource is still queued (it has not read yet) needs no pass of its own: the queued one will see
it. Such events return at once (as a work queue de-duplicates keys in controller-runtime), so
kopf's per-object queues drain instead of piling up bodies behind a busy resource.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import kopf

from kubetune.api import SpecError
from kubetune.api.resources import validation_problems
from kubetune.api.spec import ModelComparisonSpec, TuningJobSpec
from kubetune.api.status import is_terminal
from kubetune.planning import search_problems
from kubetune_operator.children import (
    LABEL_COMPARISON,
    LABEL_TUNINGJOB,
    MANAGED_BY,
    OPERATOR,
)
from kubetune_operator.config import OperatorConfig
from kubetune_operator.kube import Kube, Retryable, backoff, load_api_client
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
    PatchChildSpec,
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
# Reconcile passes that run at once, across all resources. Each pass holds a fresh read of its
# resource and waits on the API client's few threads for every call; letting a burst of
# creates start a pass each only parks a body per resource in that queue (memory), and the
# first Jobs wait behind every resource's first read (latency). A few passes per thread keep
# the threads busy while one pass plans.
PASSES_AT_ONCE = 16
# How often a watch event's pass retries itself on 429, 5xx or no answer (kopf retries the other
# handlers): with the backoff (1, 2, 4, 8, 16 s) about half a minute, the resync interval's order.
EVENT_RETRIES = 5
RETRY_CAP_SECONDS = 60.0
"""The longest wait between those retries, whatever Retry-After a proxy sends."""


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
    # No watching of CustomResourceDefinitions or namespaces (and no RBAC for them): the CRDs
    # are installed before the operator starts, and the namespaces are the configured ones.
    # Only namespace patterns (such as ml-*) need kopf to discover namespaces.
    if not any(set(n) & set("*?[]!") for n in config.namespaces):
        settings.scanning.disabled = True
    # Events only from the planner's decisions, posted with kopf.event (which ignores the
    # level): kopf.info and kopf.warn obey posting.level like log lines do, so they would be
    # silenced too.
    settings.posting.enabled = True
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
    memo.passes = asyncio.Semaphore(PASSES_AT_ONCE)
    memo.queued = {}  # (kind, namespace, name) -> passes waiting that have not read yet
    memo.metrics = getattr(memo, "metrics", None) or Metrics()
    if config.metrics_port:
        try:
            memo.metrics.serve(config.metrics_port)
        except OSError as error:
            logger.warning(f"metrics endpoint not started on {config.metrics_port}: {error}")


@kopf.on.cleanup()
async def stop_serving(memo: kopf.Memo, **_: Any) -> None:
    """Free the metrics port: a restarted operator (or the next one in-process) serves again."""
    metrics = getattr(memo, "metrics", None)
    if metrics is not None:
        metrics.close()


@kopf.on.probe(id="api")
def probe(**_: Any) -> str:
    return "ok"


# --- indexes: what is observed, kept by kopf from its watches ---------------------------------
# Async although they never await: kopf runs a sync handler in a thread (a hop, a copied
# context and a shielded task per watch event), which costs more than these small functions.


@kopf.index("batch", "v1", "jobs", labels=OWNED)
async def stage_jobs(name: str, namespace: str, labels: Any, body: Any, **_: Any) -> Any:
    parent = labels.get(LABEL_TUNINGJOB)
    return {(namespace, parent): JobView.from_body(dict(body))} if parent else None


@kopf.index(*TJ, labels={LABEL_COMPARISON: kopf.PRESENT})
async def comparison_children(namespace: str, labels: Any, body: Any, **_: Any) -> Any:
    return {(namespace, labels[LABEL_COMPARISON]): ChildView.from_body(dict(body))}


# --- TuningJob -----------------------------------------------------------------------------------


@kopf.on.create(*TJ)
@kopf.on.resume(*TJ)
@kopf.on.update(*TJ, field="spec")
async def tuningjob_changed(
    name: str,
    namespace: str,
    memo: kopf.Memo,
    stage_jobs: kopf.Index[Any, Any],
    retry: int = 0,
    **_: Any,
) -> None:
    await reconcile_tuningjob(name, namespace, memo, stage_jobs, permanent_errors=True, retry=retry)


def _report_ended(status: Any, **_: Any) -> bool:
    """A stage's final report that the operator has not taken in yet.

    The report stays in status after its stage is recorded as ended: without this check, every
    later change of the resource (the operator's own writes too) started one more pass.
    """
    status = status or {}
    report = status.get("report") or {}
    if not is_terminal(report.get("phase")) or is_terminal(status.get("phase")):
        return False
    stages = [s for s in status.get("stages") or [] if s.get("name") == report.get("stage")]
    return not stages or not is_terminal(stages[0].get("phase"))


@kopf.on.event(*TJ, when=_report_ended)
async def stage_reported(
    name: str,
    namespace: str,
    type: str | None,
    memo: kopf.Memo,
    stage_jobs: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    """A runner wrote its stage's final report: the next stage need not wait for the timer."""
    if type != "DELETED":
        await reconcile_tuningjob(name, namespace, memo, stage_jobs, coalesce=True)


@kopf.on.event("batch", "v1", "jobs", labels=OWNED)
async def stage_job_changed(
    labels: Any,
    namespace: str,
    memo: kopf.Memo,
    stage_jobs: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    parent = labels.get(LABEL_TUNINGJOB)
    if parent:
        await reconcile_tuningjob(parent, namespace, memo, stage_jobs, coalesce=True)


@kopf.timer(*TJ, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def tuningjob_resync(
    name: str,
    namespace: str,
    status: Any,
    memo: kopf.Memo,
    stage_jobs: kopf.Index[Any, Any],
    retry: int = 0,
    **_: Any,
) -> None:
    """The safety net for a missed event: reconcile what is not finished."""
    if not is_terminal((status or {}).get("phase")):
        await reconcile_tuningjob(name, namespace, memo, stage_jobs, retry=retry)


@kopf.on.delete(*TJ)
async def tuningjob_deleted(
    name: str,
    namespace: str,
    status: Any,
    memo: kopf.Memo,
    stage_jobs: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    """Stop and remove the stage Jobs now (owner references would, later), then let go.

    Under the resource's lock, so that a pass in flight cannot create a Job after this.
    """
    meta = Meta(name=name, namespace=namespace, uid="")
    async with _lock(memo, "TuningJob", meta):
        recorded = [s.get("jobName") for s in (status or {}).get("stages") or []]
        observed = [job.name for job in stage_jobs.get((namespace, name), [])]
        for job in dict.fromkeys(n for n in [*recorded, *observed] if n):
            await _kube(memo).delete_job(namespace=namespace, name=job)
    _forget(memo, "TuningJob", meta)


async def reconcile_tuningjob(
    name: str,
    namespace: str,
    memo: kopf.Memo,
    stage_jobs: kopf.Index[Any, Any],
    *,
    permanent_errors: bool = False,
    retry: int = 0,
    coalesce: bool = False,
) -> None:
    async def reconcile(body: dict[str, Any], meta: Meta) -> None:
        try:
            spec = TuningJobSpec.model_validate(body.get("spec") or {})
            if problems := search_problems(spec):  # what the CRD's field limits cannot see
                raise SpecError(problems)
        except ValueError as error:
            await _invalid(body, memo, "TuningJob", meta, error, permanent_errors)
            return
        status = dict(body.get("status") or {})
        observed = {job.name: job for job in stage_jobs.get((meta.namespace, meta.name), [])}
        if not is_terminal(status.get("phase")):
            failed = [j for j in observed.values() if j.failed_final and not j.termination_message]
            for job in failed:
                message = await _kube(memo).termination_message(
                    namespace=meta.namespace, job=job.name
                )
                observed[job.name] = JobView(**{**job.__dict__, "termination_message": message})
        decision = plan_tuning(
            meta=meta,
            spec=spec,
            status=status,
            jobs=observed,
            config=memo.config,
            new_seed=random.SystemRandom().randrange(2**31),
            now=datetime.now(UTC),
        )
        await _carry_out(body, memo, "TuningJob", meta, decision, OPERATOR_FIELDS)

    await _pass(memo, "TuningJob", name, namespace, reconcile, retry=retry, coalesce=coalesce)


# --- ModelComparison -----------------------------------------------------------------------------


@kopf.on.create(*MC)
@kopf.on.resume(*MC)
@kopf.on.update(*MC, field="spec")
async def comparison_changed(
    name: str,
    namespace: str,
    memo: kopf.Memo,
    comparison_children: kopf.Index[Any, Any],
    retry: int = 0,
    **_: Any,
) -> None:
    await reconcile_comparison(
        name, namespace, memo, comparison_children, permanent_errors=True, retry=retry
    )


@kopf.on.event(*TJ, labels={LABEL_COMPARISON: kopf.PRESENT})
async def child_changed(
    labels: Any,
    namespace: str,
    memo: kopf.Memo,
    comparison_children: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    await reconcile_comparison(
        labels[LABEL_COMPARISON], namespace, memo, comparison_children, coalesce=True
    )


@kopf.timer(*MC, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def comparison_resync(
    name: str,
    namespace: str,
    status: Any,
    memo: kopf.Memo,
    comparison_children: kopf.Index[Any, Any],
    retry: int = 0,
    **_: Any,
) -> None:
    if not is_terminal((status or {}).get("phase")):
        await reconcile_comparison(name, namespace, memo, comparison_children, retry=retry)


@kopf.on.delete(*MC)
async def comparison_deleted(
    name: str,
    namespace: str,
    status: Any,
    memo: kopf.Memo,
    comparison_children: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    meta = Meta(name=name, namespace=namespace, uid="")
    async with _lock(memo, "ModelComparison", meta):
        recorded = [r.get("tuningJob") for r in (status or {}).get("ranking") or []]
        observed = [child.name for child in comparison_children.get((namespace, name), [])]
        for child in dict.fromkeys(n for n in [*recorded, *observed] if n):
            await _kube(memo).delete_tuningjob(namespace=namespace, name=child)
    _forget(memo, "ModelComparison", meta)


async def reconcile_comparison(
    name: str,
    namespace: str,
    memo: kopf.Memo,
    comparison_children: kopf.Index[Any, Any],
    *,
    permanent_errors: bool = False,
    retry: int = 0,
    coalesce: bool = False,
) -> None:
    async def reconcile(body: dict[str, Any], meta: Meta) -> None:
        try:
            spec = ModelComparisonSpec.model_validate(body.get("spec") or {})
            if problems := search_problems(spec):  # what the CRD's field limits cannot see
                raise SpecError(problems)
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

    await _pass(memo, "ModelComparison", name, namespace, reconcile, retry=retry, coalesce=coalesce)


# --- shared edges ------------------------------------------------------------------------------


async def _pass(
    memo: kopf.Memo,
    kind: str,
    name: str,
    namespace: str,
    reconcile: Callable[[dict[str, Any], Meta], Awaitable[None]],
    *,
    retry: int,
    coalesce: bool = False,
) -> None:
    """One reconcile pass of one resource: locked, on a fresh read, measured and counted.

    With ``coalesce`` (a watch event), nothing happens when a pass of the resource is already
    queued and has not read it yet: that pass will see what the event saw. kopf never retries
    a watch event's handler, so such a pass retries itself when the API is busy or failing
    (429, 5xx, no answer), holding neither the lock nor a slot while it waits, and still
    counted as queued so that events meanwhile merge into it. Creates, spec changes and the
    resync timer always run a pass of their own, and kopf retries them.
    """
    key = (kind, namespace, name)
    queued: dict[tuple[str, str, str], int] = memo.queued
    if coalesce and queued.get(key):
        memo.metrics.reconcile_coalesced.labels(kind=kind).inc()
        return
    waiting = False

    def wait_in_queue() -> None:
        nonlocal waiting
        if not waiting:
            waiting = True
            queued[key] = queued.get(key, 0) + 1

    def reading() -> None:  # from here on, a later event needs a pass of its own
        nonlocal waiting
        if waiting:
            waiting = False
            if queued[key] > 1:
                queued[key] -= 1
            else:
                del queued[key]

    wait_in_queue()
    try:
        for attempt in range(EVENT_RETRIES + 1):
            try:
                await _pass_once(memo, kind, name, namespace, reconcile, reading=reading)
                return
            except Retryable as error:
                memo.metrics.reconcile_errors.labels(kind=kind).inc()
                if not coalesce or attempt == EVENT_RETRIES:
                    delay = error.delay if error.delay is not None else backoff(retry)
                    raise kopf.TemporaryError(str(error), delay=delay) from error
                # Backoff even when the server names a delay: its Retry-After is often 1 s.
                pause = min(RETRY_CAP_SECONDS, max(error.delay or 0.0, backoff(attempt)))
            wait_in_queue()
            await asyncio.sleep(pause)
    finally:
        reading()  # cancelled or failed while queued: no longer queued


async def _pass_once(
    memo: kopf.Memo,
    kind: str,
    name: str,
    namespace: str,
    reconcile: Callable[[dict[str, Any], Meta], Awaitable[None]],
    *,
    reading: Callable[[], None],
) -> None:
    """The pass itself. The resource's lock comes first, then one of the shared pass slots: a
    pass that holds a slot never waits for another resource's lock, so the two cannot deadlock.
    ``reading`` is called just before the fresh read.
    """
    async with _lock(memo, kind, Meta(name=name, namespace=namespace, uid="")):
        started = time.perf_counter()  # so the wait for a slot counts: the whole latency
        try:
            async with memo.passes:
                reading()
                body = await _kube(memo).get(kind=kind, namespace=namespace, name=name)
                if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
                    return  # gone, or going: the delete handler has the last word
                await reconcile(body, _meta(body))
        except (Retryable, kopf.TemporaryError):
            raise  # counted by the caller; or a planned wait (the runner's report is due)
        except Exception:
            memo.metrics.reconcile_errors.labels(kind=kind).inc()
            raise
        finally:
            memo.metrics.reconcile_seconds.labels(kind=kind).observe(time.perf_counter() - started)


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


def _forget(memo: kopf.Memo, kind: str, meta: Meta) -> None:
    """The resource is gone: drop its lock and its phase from the metrics."""
    memo.locks.pop((kind, meta.namespace, meta.name), None)
    memo.metrics.observe_phase(kind=kind, namespace=meta.namespace, name=meta.name, phase=None)


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
    """One status write (only what changed), then Events, then the actions in order.

    Status first: a child's deterministic name is recorded before the child is created, so a
    pass that dies in between (a crash, a 5xx) is finished by the next one, from status.
    """
    kube = _kube(memo)
    current = dict(body.get("status") or {})
    patch = decision.status_patch(current, fields)
    if patch:
        await kube.patch_status(kind=kind, namespace=meta.namespace, name=meta.name, patch=patch)
    for event in decision.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
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
        elif isinstance(action, PatchChildSpec):
            await kube.patch_child_spec(
                namespace=meta.namespace, name=action.name, patch=action.patch
            )
        elif isinstance(action, DeleteJob):
            await kube.delete_job(namespace=meta.namespace, name=action.name)
    if decision.requeue_after:
        raise kopf.TemporaryError(
            "waiting for the runner's final report", delay=decision.requeue_after
        )
