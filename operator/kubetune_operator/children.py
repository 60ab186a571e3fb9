"""What the operator creates: names, labels and manifests of stage Jobs and child TuningJobs.

Pure functions of the parent and its plan. Names are deterministic, so a create that races with
itself (or follows an operator restart) gets 409 instead of a duplicate.
"""

from __future__ import annotations

import hashlib
from typing import Any

from kubetune.api.base import API_VERSION
from kubetune.api.spec import (
    ModelComparisonSpec,
    ModelSpec,
    RunnerSpec,
    SearchSpec,
    TuningJobSpec,
)
from kubetune.planning import StageTask
from kubetune_operator.config import OperatorConfig

MANAGED_BY = "app.kubernetes.io/managed-by"
OPERATOR = "kubetune-operator"
LABEL_TUNINGJOB = "kubetune.io/tuningjob"
LABEL_STAGE = "kubetune.io/stage"
LABEL_COMPARISON = "kubetune.io/modelcomparison"
LABEL_MODEL = "kubetune.io/model"
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
TASK_ENV = "KUBETUNE_TASK"
RUNNER_CONTAINER = "runner"
RUNNER_COMMAND = ["python", "-m", "kubetune.runner"]
EXIT_BAD_INPUT = 2
"""The runner's exit code for bad input: the Job fails at once instead of retrying."""
MAX_NAME = 63
PASSED_ON: dict[str, type[SearchSpec] | type[RunnerSpec] | None] = {
    "search": SearchSpec,
    "queueName": None,
    "runner": RunnerSpec,
}
"""Child TuningJob fields that follow the comparison's after creation (with the model that
normalises each): the budget and the cluster settings. The rest of a child's spec is the search
definition, which cannot change; ``suspend`` is passed on by itself."""


def child_name(parent: str, suffix: str) -> str:
    """``parent-suffix``, shortened with a hash when longer than a label value allows."""
    name = f"{parent}-{suffix}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME - 9].rstrip('-')}-{digest}"


def owner_reference(*, kind: str, name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def stage_labels(*, tuningjob: str, stage: str) -> dict[str, str]:
    # Explicit labels only: the parent's labels are never copied (GitOps tools track by label).
    return {MANAGED_BY: OPERATOR, LABEL_TUNINGJOB: tuningjob, LABEL_STAGE: stage}


def stage_job(
    *,
    task: StageTask,
    job_name: str,
    uid: str,
    config: OperatorConfig,
    suspend: bool = False,
) -> dict[str, Any]:
    """The batch/v1 Job that runs one stage, with its frozen task in the environment."""
    spec = task.spec
    runner = spec.runner
    target = task.target
    labels = stage_labels(tuningjob=target.name, stage=task.plan.name)
    if spec.queue_name:
        labels[KUEUE_QUEUE] = spec.queue_name
    requests: dict[str, Any] = {"cpu": str(task.plan.parallelism), "memory": config.runner_memory}
    limits: dict[str, Any] = {}
    if runner.resources is not None:
        # Quantities are strings in the Job API (the client refuses `cpu: 2` as a number).
        requests.update({k: str(v) for k, v in runner.resources.requests.items()})
        limits.update({k: str(v) for k, v in runner.resources.limits.items()})
    resources: dict[str, Any] = {"requests": requests}
    if limits:
        resources["limits"] = limits
    container: dict[str, Any] = {
        "name": RUNNER_CONTAINER,
        "image": runner.image or config.runner_image,
        "command": list(RUNNER_COMMAND),
        "env": [
            {"name": TASK_ENV, "value": task.model_dump_json(by_alias=True, exclude_none=True)},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        # A read-only root filesystem: scratch space (joblib's memory maps) goes to /tmp.
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *runner.volume_mounts],
    }
    if runner.image_pull_policy:
        container["imagePullPolicy"] = runner.image_pull_policy
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": runner.service_account_name or config.runner_service_account,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}, *runner.volumes],
    }
    if runner.node_selector:
        pod_spec["nodeSelector"] = dict(runner.node_selector)
    if runner.tolerations:
        pod_spec["tolerations"] = list(runner.tolerations)
    job_spec: dict[str, Any] = {
        "backoffLimit": runner.backoff_limit,
        # Bad input will not get better on a retry: fail the Job at once.
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": RUNNER_CONTAINER,
                        "operator": "In",
                        "values": [EXIT_BAD_INPUT],
                    },
                }
            ]
        },
        # Kueue admits a queued Job by unsuspending it; the operator never does that itself.
        "suspend": bool(spec.queue_name) or suspend,
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if runner.timeout_seconds:
        job_spec["activeDeadlineSeconds"] = runner.timeout_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": target.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(kind="TuningJob", name=target.name, uid=uid)],
        },
        "spec": job_spec,
    }


def child_tuningjob(
    *,
    comparison: str,
    namespace: str,
    uid: str,
    spec: ModelComparisonSpec,
    model: ModelSpec,
    seed: int,
    suspend: bool,
) -> dict[str, Any]:
    """The TuningJob that tunes one model of a comparison: shared data, folds, budget and seed."""
    child: TuningJobSpec = spec.child_spec(model)
    child = child.model_copy(
        update={"search": child.search.model_copy(update={"seed": seed}), "suspend": suspend}
    )
    return {
        "apiVersion": API_VERSION,
        "kind": "TuningJob",
        "metadata": {
            "name": child_name(comparison, model.name),
            "namespace": namespace,
            "labels": {MANAGED_BY: OPERATOR, LABEL_COMPARISON: comparison, LABEL_MODEL: model.name},
            "ownerReferences": [owner_reference(kind="ModelComparison", name=comparison, uid=uid)],
        },
        "spec": child.to_dict(),
    }


def child_settings_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The merge patch of a child's spec that brings its :data:`PASSED_ON` fields to ``desired``.

    Both sides are compared through their models, so that defaults the API server or the
    user's YAML filled in do not count as a change; empty when nothing differs.
    """

    def normal(key: str, value: Any) -> Any:
        model = PASSED_ON[key]
        return value if model is None else model.model_validate(value or {}).to_dict()

    patch: dict[str, Any] = {}
    for key in PASSED_ON:
        if normal(key, current.get(key)) != normal(key, desired.get(key)):
            patch[key] = merge_patch(current.get(key), desired.get(key))
    return patch


def merge_patch(current: Any, desired: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns ``current`` into ``desired``."""
    if not isinstance(current, dict) or not isinstance(desired, dict):
        return desired
    patch: dict[str, Any] = {key: None for key in current if key not in desired}
    for key, value in desired.items():
        if key not in current:
            patch[key] = value
        elif current[key] != value:
            patch[key] = merge_patch(current[key], value)
    return patch
