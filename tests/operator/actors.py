"""The parts the operator tests play around the real operator: the user, the Job controller,
the runner pod and the stage runner.

Each writes to the mock API exactly what its real counterpart writes: the user creates and
edits TuningJobs and ModelComparisons; the Job controller patches a Job's status (counters,
``Complete``/``Failed`` conditions with their reasons, ``completionTime``); the pod is a Pod
labelled ``job-name=<job>`` whose ``runner`` container terminated with a message; the runner
merge-patches the TuningJob's runner-owned status fields (``report``, ``trials``, ``best``,
``topTrials``, ``progress``).
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from tests.operator.harness import (
    JOBS,
    MODELCOMPARISONS,
    PODS,
    TUNINGJOBS,
    ApiCall,
    ApiClient,
    MockApiServer,
    RunningOperator,
    wait_for,
)

from kubetune.planning import StageTask
from kubetune_operator.children import TASK_ENV
from kubetune_operator.config import OperatorConfig

API_VERSION = "kubetune.io/v1alpha1"
OPERATOR_ACTOR = "kubetune-operator"
"""Every request the operator makes carries a token starting with this (kopf's and kube.py's)."""
API_TOKEN = "kubetune-operator-api"
"""The token of the operator's own API module (kube.py), to tell its calls from kopf's."""
TIMEOUT = 8.0

SPEC: dict[str, Any] = {
    "estimator": {"name": "SVC"},
    "dataset": {"builtin": "iris"},
    "parameters": [
        {"name": "C", "float": {"low": 0.01, "high": 100.0, "log": True}},
        {"name": "kernel", "categorical": ["rbf", "linear", "poly"]},
    ],
    "cv": {"folds": 3},
    "search": {
        "method": "progressive",
        "seed": 7,
        "stages": [{"method": "grid", "gridPoints": 2}, {"method": "random", "trials": 3}],
        "refinement": {"factor": 0.2, "topK": 2},
    },
}
"""A two-stage progressive search: s1-grid (2 x 3 = 6 trials), then s2-random (3 trials)."""


def operator_config(**changes: Any) -> OperatorConfig:
    """The operator's settings in these tests: no metrics port, a one-second resync."""
    return OperatorConfig(**{"metrics_port": 0, "resync_seconds": 1.0, **changes})


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tuningjob(
    name: str, spec: dict[str, Any] | None = None, *, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": API_VERSION, "kind": "TuningJob", "metadata": meta, "spec": spec or SPEC}


def comparison(
    name: str,
    models: list[str],
    *,
    mode: str = "parallel",
    max_concurrent: int | None = None,
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A comparison of logistic regression, SVC and k-neighbours (as named) on iris."""
    estimators = {
        "logreg": {"estimator": {"name": "LogisticRegression"}},
        "svc": {
            "estimator": {"name": "SVC"},
            "parameters": [{"name": "C", "float": {"low": 0.1, "high": 10.0, "log": True}}],
        },
        "knn": {"estimator": {"name": "KNeighborsClassifier"}},
    }
    execution: dict[str, Any] = {"mode": mode}
    if max_concurrent is not None:
        execution["maxConcurrent"] = max_concurrent
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelComparison",
        "metadata": meta,
        "spec": {
            "dataset": {"builtin": "iris"},
            "models": [{"name": m, **estimators[m]} for m in models],
            "search": {"method": "random", "trials": 2, "seed": 11},
            "cv": {"folds": 3},
            "execution": execution,
            **spec,
        },
    }


def trial(stage: str, number: int, params: dict[str, Any], score: float) -> dict[str, Any]:
    return {"trial": number, "stage": stage, "params": params, "score": score, "std": 0.01}


def best_trial(
    stage: str, number: int, params: dict[str, Any], folds: list[float]
) -> dict[str, Any]:
    mean = sum(folds) / len(folds)
    return {
        **trial(stage, number, params, mean),
        "metric": "accuracy",
        "interval95": {"low": mean - 0.02, "high": mean + 0.02},
        "foldScores": folds,
    }


class World:
    """The mock cluster with the operator in it, and the parts the test plays."""

    def __init__(self, kube: MockApiServer, operator: RunningOperator) -> None:
        self.kube = kube
        self.operator = operator
        self.api: ApiClient = kube.client()

    @property
    def memo(self) -> Any:
        return self.operator.memo

    # ---- the user ------------------------------------------------------------------------

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        resource = TUNINGJOBS if body["kind"] == "TuningJob" else MODELCOMPARISONS
        return self.api.create(resource, body)

    def edit(self, name: str, spec: dict[str, Any], resource: str = TUNINGJOBS) -> dict[str, Any]:
        """A merge patch of spec, as `kubectl patch --type merge` (or Argo CD) would send."""
        return self.api.patch(resource, name, {"spec": spec})

    def get(self, name: str, resource: str = TUNINGJOBS) -> dict[str, Any]:
        return self.api.get(resource, name)

    def status(self, name: str, resource: str = TUNINGJOBS) -> dict[str, Any]:
        status: dict[str, Any] = self.api.get(resource, name).get("status") or {}
        return status

    def conditions(self, name: str, resource: str = TUNINGJOBS) -> dict[str, dict[str, Any]]:
        return {c["type"]: c for c in self.status(name, resource).get("conditions") or []}

    def wait_phase(
        self, name: str, phase: str, resource: str = TUNINGJOBS, timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        """Wait until status.phase is ``phase``; return the status."""
        return wait_for(
            lambda: (s := self.status(name, resource)).get("phase") == phase and s,
            timeout=timeout,
            message=lambda: f"{name} never reached {phase}: {self.status(name, resource)}",
        )

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of the operator's Prometheus registry (None when it has no such series)."""
        value: float | None = self.memo.metrics.registry.get_sample_value(name, labels)
        return value

    # ---- what the operator made ---------------------------------------------------------

    def job(self, name: str) -> dict[str, Any] | None:
        return self.api.find(JOBS, name)

    def wait_job(self, name: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        return wait_for(
            lambda: self.job(name),
            timeout=timeout,
            message=lambda: f"no Job {name}; Jobs: {self.job_names()}",
        )

    def job_names(self) -> list[str]:
        return sorted(j["metadata"]["name"] for j in self.api.jobs())

    def children(self, comparison: str) -> dict[str, dict[str, Any]]:
        items = self.api.list(
            TUNINGJOBS, label_selector=f"kubetune.io/modelcomparison={comparison}"
        )
        return {i["metadata"]["name"]: i for i in items}

    def events(self, name: str) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the Events about ``name``, oldest first."""
        return [
            (e.get("type", ""), e.get("reason", ""), e.get("message", ""))
            for e in self.api.events(involved_name=name)
        ]

    def reasons(self, name: str) -> list[str]:
        return [reason for _, reason, _ in self.events(name)]

    def calls(self, **filters: Any) -> list[ApiCall]:
        """The operator's requests (kopf's and its API module's), every start of it."""
        return [c for c in self.kube.calls(**filters) if c.actor.startswith(OPERATOR_ACTOR)]

    def status_writes(self, name: str, resource: str = "tuningjobs") -> list[ApiCall]:
        return self.calls(verb="patch", plural=resource, name=name, subresource="status")

    def settle(self, seconds: float = 1.3) -> None:
        """Let at least one resync pass (every second in these tests) go by."""
        time.sleep(seconds)

    # ---- the Job controller and the pod --------------------------------------------------

    def job_running(self, name: str) -> None:
        self.api.patch_status(JOBS, name, {"active": 1, "startTime": now()})

    def job_succeeded(self, name: str) -> None:
        stamp = now()
        self.api.patch_status(
            JOBS,
            name,
            {
                "active": 0,
                "succeeded": 1,
                "completionTime": stamp,
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": stamp},
                    {"type": "Complete", "status": "True", "lastTransitionTime": stamp},
                ],
            },
        )

    def job_failed(self, name: str, reason: str, message: str = "") -> None:
        stamp = now()
        condition = {"type": "Failed", "status": "True", "reason": reason, "message": message}
        self.api.patch_status(
            JOBS,
            name,
            {
                "active": 0,
                "failed": 1,
                "conditions": [
                    {"type": "FailureTarget", **condition, "lastTransitionTime": stamp},
                    {**condition, "lastTransitionTime": stamp},
                ],
            },
        )

    def pod_terminated(
        self, job: str, *, message: str = "", reason: str = "Error", exit_code: int = 1
    ) -> None:
        """The Job's pod, its ``runner`` container terminated (with a termination message)."""
        name = f"{job}-x7k2p"
        container = {"name": "runner", "image": "runner:test"}
        self.api.create(
            PODS,
            {
                "metadata": {"name": name, "labels": {"job-name": job, "controller-uid": "u"}},
                "spec": {"restartPolicy": "Never", "containers": [container]},
            },
        )
        terminated: dict[str, Any] = {"exitCode": exit_code, "reason": reason}
        if message:
            terminated["message"] = message
        self.api.patch_status(
            PODS,
            name,
            {
                "phase": "Failed",
                "containerStatuses": [
                    {"name": "runner", "ready": False, "state": {"terminated": terminated}}
                ],
            },
        )

    # ---- the runner ----------------------------------------------------------------------

    def report(
        self,
        name: str,
        stage: str,
        *,
        phase: str = "Succeeded",
        top: list[dict[str, Any]] | None = None,
        completed: int = 6,
        failed: int = 0,
        message: str | None = None,
        best: dict[str, Any] | None = None,
    ) -> None:
        """The runner's last status write of a stage: its report, the totals and the best."""
        top = top or []
        report: dict[str, Any] = {
            "stage": stage,
            "phase": phase,
            "trials": {"completed": completed, "failed": failed, "planned": completed + failed},
            "top": top,
            "updatedAt": now(),
        }
        if top:
            report["bestScore"] = top[0]["score"]
        if message:
            report["message"] = message
        status: dict[str, Any] = {
            "report": report,
            "trials": {"completed": completed, "failed": failed},
            "topTrials": top,
        }
        if best is not None:
            status["best"] = best
        self.api.patch_status(TUNINGJOBS, name, status)

    def finish_stage(self, name: str, stage: str, top: list[dict[str, Any]], **report: Any) -> None:
        """The stage runs to its end: the runner reports, then its Job completes."""
        self.report(name, stage, top=top, **report)
        self.job_succeeded(f"{name}-{stage}")


def task_of(job: dict[str, Any]) -> StageTask:
    """The frozen StageTask a stage Job carries in its environment."""
    (container,) = job["spec"]["template"]["spec"]["containers"]
    value = next(e["value"] for e in container["env"] if e["name"] == TASK_ENV)
    return StageTask.model_validate(json.loads(value))


def changed_keys(before: Any, after: Any) -> Iterator[str]:
    """Dotted paths whose value differs between two JSON documents."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after)):
            for sub in changed_keys(before.get(key), after.get(key)):
                yield f"{key}.{sub}" if sub else key
    elif before != after:
        yield ""


def spec_writes(kube: MockApiServer, may_write: Callable[[ApiCall], bool]) -> list[str]:
    """Operator writes (PUT or PATCH of a main resource) that touch spec, unless allowed."""
    found = []
    for call in kube.calls():
        if not call.actor.startswith(OPERATOR_ACTOR) or call.verb not in ("patch", "update"):
            continue
        if call.plural not in ("tuningjobs", "modelcomparisons") or call.subresource:
            continue
        body = call.body
        touches_spec = (
            any(op.get("path", "").startswith("/spec") for op in body)
            if isinstance(body, list)
            else isinstance(body, dict) and "spec" in body
        )
        if touches_spec and not may_write(call):
            found.append(f"{call.method} {call.path} {json.dumps(body)[:200]}")
    return found
