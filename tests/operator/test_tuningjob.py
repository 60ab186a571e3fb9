"""The real operator reconciling TuningJobs against the mock API; the test plays everything else.

Stage names are ``s<N>-<method>`` and a stage's Job is ``<tuningjob>-<stage>``. The default
spec (``actors.SPEC``) runs s1-grid (6 trials) then s2-random (3 trials).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from tests.operator.actors import (
    API_TOKEN,
    SPEC,
    World,
    best_trial,
    operator_config,
    task_of,
    trial,
    tuningjob,
)
from tests.operator.harness import JOBS, TUNINGJOBS, wait_for

from kubetune.api.spec import TuningJobSpec
from kubetune_operator.children import KUEUE_QUEUE, LABEL_STAGE, LABEL_TUNINGJOB, MANAGED_BY

pytestmark = pytest.mark.operator

S1, S2 = "s1-grid", "s2-random"
OWN_LABELS = {"team": "ml", "app.kubernetes.io/instance": "argocd-app", "env": "prod"}
TOP_S1 = [
    trial(S1, 2, {"C": 1.0, "kernel": "rbf"}, 0.95),
    trial(S1, 4, {"C": 3.0, "kernel": "linear"}, 0.94),
]


def spec_with(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    spec.update(changes)
    return spec


def one_stage(**changes: Any) -> dict[str, Any]:
    return spec_with(search={"method": "random", "trials": 4, "seed": 3}, **changes)


# ---- a new TuningJob ------------------------------------------------------------------------


def test_new_tuningjob_records_its_stage_in_status_before_creating_the_job(world: World) -> None:
    world.create(tuningjob("forest"))
    job = world.wait_job("forest-s1-grid")
    status = world.wait_phase("forest", "Running")

    (stage,) = status["stages"]
    assert stage["name"] == S1 and stage["jobName"] == "forest-s1-grid"
    assert stage["phase"] == "Running" and stage["trials"]["planned"] == 2 * 3
    assert status["currentStage"] == S1 and status["reproducibility"] == {"seed": 7}
    assert status["observedGeneration"] == 1 and status["startedAt"]
    assert job["metadata"]["name"] == "forest-s1-grid"

    # The name is in status before the Job exists: the first status write precedes the create.
    writes = world.status_writes("forest")
    creates = world.calls(verb="create", plural="jobs")
    assert creates[0].status == 201 and {c.status for c in creates[1:]} <= {409}
    assert writes and writes[0].seq < creates[0].seq
    assert writes[0].body["status"]["stages"][0]["jobName"] == "forest-s1-grid"
    assert writes[0].body["status"]["phase"] == "Running"
    assert creates[0].body["metadata"]["name"] == "forest-s1-grid"

    wait_for(lambda: "Started" in world.reasons("forest"))
    (started,) = [e for e in world.events("forest") if e[1] == "Started"]
    assert started[0] == "Normal" and "forest-s1-grid" in started[2] and "6 trials" in started[2]


def test_stage_job_is_owned_and_labelled_explicitly_never_with_the_parents_labels(
    world: World,
) -> None:
    created = world.create(tuningjob("forest", labels=OWN_LABELS))
    job = world.wait_job("forest-s1-grid")

    expected = {MANAGED_BY: "kubetune-operator", LABEL_TUNINGJOB: "forest", LABEL_STAGE: S1}
    assert job["metadata"]["labels"] == expected
    assert job["spec"]["template"]["metadata"]["labels"] == expected
    for key in OWN_LABELS:
        assert key not in job["metadata"]["labels"]
    (owner,) = job["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningJob",
        "name": "forest",
        "uid": created["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_stage_job_carries_its_frozen_task(world: World) -> None:
    created = world.create(tuningjob("forest"))
    task = task_of(world.wait_job("forest-s1-grid"))

    assert task.target.name == "forest" and task.target.uid == created["metadata"]["uid"]
    assert task.target.namespace == world.kube.namespace
    assert task.plan.name == S1 and task.plan.method == "grid" and task.plan.seed == 7
    assert task.plan.grid_points == 2 and task.plan.trial_offset == 0
    assert [p.name for p in task.plan.space] == ["C", "kernel"]
    assert task.spec == TuningJobSpec.model_validate(SPEC)
    assert task.planned_total == 6 + 3


def test_seed_chosen_by_the_operator_is_recorded_and_frozen_into_the_task(world: World) -> None:
    spec = spec_with(search={**SPEC["search"], "seed": None})
    world.create(tuningjob("forest", spec))
    task = task_of(world.wait_job("forest-s1-grid"))
    seed = world.status("forest")["reproducibility"]["seed"]
    assert isinstance(seed, int)
    assert task.spec.search.seed == seed and task.plan.seed == seed


def test_stage_job_takes_runner_settings_from_spec_and_is_restricted(world: World) -> None:
    runner = {
        "image": "registry.example/kubetune-runner:7",
        "imagePullPolicy": "IfNotPresent",
        "resources": {"requests": {"cpu": 3, "memory": "3Gi"}, "limits": {"memory": "4Gi"}},
        "nodeSelector": {"pool": "cpu-large"},
        "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
        "serviceAccountName": "tuner",
        "timeoutSeconds": 900,
        "backoffLimit": 1,
    }
    world.create(tuningjob("forest", spec_with(runner=runner)))
    job = world.wait_job("forest-s1-grid")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    assert container["image"] == "registry.example/kubetune-runner:7"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["resources"] == {
        "requests": {"cpu": "3", "memory": "3Gi"},  # a quantity is a string in the Job API
        "limits": {"memory": "4Gi"},
    }
    assert pod["nodeSelector"] == {"pool": "cpu-large"}
    assert pod["tolerations"] == runner["tolerations"]
    assert pod["serviceAccountName"] == "tuner"
    assert spec["activeDeadlineSeconds"] == 900 and spec["backoffLimit"] == 1
    assert spec["suspend"] is False and KUEUE_QUEUE not in job["metadata"]["labels"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_stage_job_defaults_come_from_the_operator_config(
    start_operator: Callable[..., World],
) -> None:
    world = start_operator(
        config=operator_config(
            runner_image="mirror.local/runner:9",
            runner_service_account="batch-runner",
            runner_memory="768Mi",
        )
    )
    world.create(tuningjob("forest", spec_with(search={**SPEC["search"], "parallelism": 2})))
    job = world.wait_job("forest-s1-grid")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    assert container["image"] == "mirror.local/runner:9"
    assert pod["serviceAccountName"] == "batch-runner"
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "768Mi"}}
    assert "imagePullPolicy" not in container
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert "activeDeadlineSeconds" not in spec
    assert spec["backoffLimit"] == 2  # small: a stage that keeps failing fails its TuningJob


# ---- stages ---------------------------------------------------------------------------------


def test_stage_success_starts_the_next_stage_in_the_narrowed_space(world: World) -> None:
    world.create(tuningjob("forest"))
    world.wait_job("forest-s1-grid")
    world.job_running("forest-s1-grid")
    world.finish_stage("forest", S1, TOP_S1, completed=5, failed=1)

    job = world.wait_job("forest-s2-random")
    task = task_of(job)
    space = {p.name: p for p in task.plan.space}
    c_range = space["C"].float_
    assert c_range is not None and c_range.log
    assert 0.01 < c_range.low <= 1.0 <= 3.0 <= c_range.high < 100.0  # around the top two
    assert space["kernel"].categorical == ["rbf", "linear"]  # poly was not in the top
    assert task.plan.name == S2 and task.plan.trials == 3 and task.plan.seed == 7 + 1
    assert task.plan.trial_offset == 6 and task.trials_before.completed == 5
    assert task.trials_before.failed == 1

    status = wait_for(lambda: (s := world.status("forest"))["currentStage"] == S2 and s)
    first, second = status["stages"]
    assert first["phase"] == "Succeeded" and first["bestScore"] == 0.95
    assert first["trials"] == {"completed": 5, "failed": 1, "planned": 6}
    assert first["completedAt"]
    assert second["phase"] == "Running" and second["jobName"] == "forest-s2-random"
    assert second["space"] == [
        p.model_dump(mode="json", by_alias=True, exclude_none=True) for p in task.plan.space
    ]
    assert status["phase"] == "Running"

    wait_for(lambda: "StageStarted" in world.reasons("forest"))
    (event,) = [e for e in world.events("forest") if e[1] == "StageStarted"]
    assert event[0] == "Normal" and "best 0.9500" in event[2] and "forest-s2-random" in event[2]
    assert world.job_names() == ["forest-s1-grid", "forest-s2-random"]


def test_last_stage_success_succeeds_with_the_best_score_in_an_event(world: World) -> None:
    world.create(tuningjob("forest"))
    world.wait_job("forest-s1-grid")
    world.finish_stage("forest", S1, TOP_S1)
    world.wait_job("forest-s2-random")
    best = best_trial(S2, 7, {"C": 1.4, "kernel": "rbf"}, [0.98, 0.96, 0.97])
    world.finish_stage(
        "forest", S2, [trial(S2, 7, best["params"], best["score"])], completed=3, best=best
    )

    status = world.wait_phase("forest", "Succeeded")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Succeeded"]["status"] == "True"
    assert conditions["Succeeded"]["observedGeneration"] == 1
    assert conditions["Succeeded"]["reason"] == "SearchSucceeded"
    assert conditions["Running"]["status"] == "False"
    assert conditions["Failed"]["status"] == "False"
    assert status["completedAt"] and status["observedGeneration"] == 1
    assert [s["phase"] for s in status["stages"]] == ["Succeeded", "Succeeded"]
    assert status["best"] == best  # the runner's field, left alone
    assert "0.9700" in status["message"]

    wait_for(lambda: "Succeeded" in world.reasons("forest"))
    (event,) = [e for e in world.events("forest") if e[1] == "Succeeded"]
    assert event[0] == "Normal" and "accuracy 0.9700" in event[2] and "trial 7" in event[2]
    # Finished: the resync timer leaves it alone, no more writes.
    writes = len(world.status_writes("forest"))
    world.settle()
    assert len(world.status_writes("forest")) == writes


def test_runner_owned_status_fields_are_never_written_by_the_operator(world: World) -> None:
    world.create(tuningjob("forest"))
    world.wait_job("forest-s1-grid")
    world.finish_stage("forest", S1, TOP_S1)
    world.wait_job("forest-s2-random")
    world.settle(0.3)
    owned = {
        "observedGeneration",
        "phase",
        "conditions",
        "message",
        "currentStage",
        "stages",
        "startedAt",
        "completedAt",
        "reproducibility",
    }
    for call in world.status_writes("forest"):
        status = call.body["status"]
        assert set(status) <= owned, call.body
        assert set(status.get("reproducibility", {})) <= {"seed"}
        assert call.content_type == "application/merge-patch+json"
    assert world.status("forest")["topTrials"] == TOP_S1  # the runner's write survived


# ---- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fail", "expected"),
    [
        pytest.param(
            lambda w: (
                w.pod_terminated(
                    "forest-s1-grid",
                    message="Traceback ...\nDataError: column 'label' not found in /data/x.csv",
                ),
                w.job_failed("forest-s1-grid", "BackoffLimitExceeded", "Job has reached the"),
            ),
            "DataError: column 'label' not found in /data/x.csv",
            id="runner-termination-message",
        ),
        pytest.param(
            lambda w: w.job_failed(
                "forest-s1-grid", "DeadlineExceeded", "Job was active longer than specified"
            ),
            "the stage ran past runner.timeoutSeconds",
            id="deadline-exceeded",
        ),
        pytest.param(
            lambda w: (
                w.pod_terminated("forest-s1-grid", reason="OOMKilled", exit_code=137),
                w.job_failed("forest-s1-grid", "BackoffLimitExceeded", "Job has reached the"),
            ),
            "OOMKilled",
            id="oom-killed",
        ),
    ],
)
def test_failed_job_fails_the_tuningjob_with_the_reason(
    world: World, fail: Callable[[World], Any], expected: str
) -> None:
    world.create(tuningjob("forest"))
    world.wait_job("forest-s1-grid")
    world.job_running("forest-s1-grid")
    fail(world)

    status = world.wait_phase("forest", "Failed")
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["status"] == "True" and failed["reason"] == "JobFailed"
    assert expected in failed["message"] and expected in status["message"]
    assert failed["observedGeneration"] == 1
    assert status["stages"][0]["phase"] == "Failed" and expected in status["stages"][0]["message"]
    assert status["completedAt"]
    wait_for(lambda: "Failed" in world.reasons("forest"))
    warnings = [e for e in world.events("forest") if e[0] == "Warning"]
    assert len(warnings) == 1 and warnings[0][1] == "Failed" and expected in warnings[0][2]
    assert world.job_names() == ["forest-s1-grid"]  # no next stage, no retry


def test_a_stage_the_runner_reports_failed_fails_with_the_runners_message(world: World) -> None:
    world.create(tuningjob("forest"))
    world.wait_job("forest-s1-grid")
    world.report(
        "forest",
        S1,
        phase="Failed",
        completed=0,
        failed=6,
        message="all 6 trials failed: ValueError: Solver lbfgs supports only 'l2'",
    )
    world.job_failed("forest-s1-grid", "PodFailurePolicy", "Container runner exited with 2")

    status = world.wait_phase("forest", "Failed")
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["reason"] == "StageFailed"
    assert "Solver lbfgs supports only 'l2'" in failed["message"]
    assert status["stages"][0]["trials"]["failed"] == 6


def test_a_job_that_completes_without_a_report_fails_after_the_grace_period(
    start_operator: Callable[..., World],
) -> None:
    world = start_operator(config=operator_config(report_grace_seconds=0.5))
    world.create(tuningjob("forest", one_stage()))
    world.wait_job("forest-s1-random")
    world.job_succeeded("forest-s1-random")
    status = world.wait_phase("forest", "Failed", timeout=10)
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["reason"] == "NoStageReport"
    assert "without reporting" in status["message"]


def test_invalid_spec_fails_once_with_a_condition_and_a_warning_and_is_not_retried(
    world: World,
) -> None:
    # The CRD's enum would refuse this estimator; the mock, like a cluster with an old CRD,
    # lets it through.
    world.create(tuningjob("broken", spec_with(estimator={"name": "RandomForestClassifer"})))
    status = world.wait_phase("broken", "Failed")
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["status"] == "True" and failed["reason"] == "InvalidSpec"
    assert failed["observedGeneration"] == 1
    assert "RandomForestClassifer" in status["message"]
    assert "RandomForestClassifier" in status["message"]  # the suggestion
    wait_for(lambda: "InvalidSpec" in world.reasons("broken"))

    world.settle(2.2)  # two resync periods: nothing more may happen
    (event,) = world.events("broken")
    assert event[0] == "Warning" and event[1] == "InvalidSpec"
    assert len(world.status_writes("broken")) == 1
    reads = world.calls(verb="get", plural="tuningjobs", name="broken", actor=API_TOKEN)
    assert len(reads) == 1  # one reconcile pass: no retry, no crash loop
    assert world.job_names() == []
    assert world.metric("kubetune_reconcile_errors_total", kind="TuningJob") == 1


def test_a_grid_too_large_to_run_fails_as_an_invalid_spec(world: World) -> None:
    # Valid field by field (the CRD admits it): 50 x 50 x 50 grid points, no trials cap.
    parameters = [
        {"name": "C", "float": {"low": 0.01, "high": 100.0, "log": True}},
        {"name": "gamma", "float": {"low": 1e-4, "high": 1.0, "log": True}},
        {"name": "tol", "float": {"low": 1e-5, "high": 1e-1, "log": True}},
    ]
    search = {"method": "grid", "gridPoints": 50}
    world.create(tuningjob("huge", spec_with(parameters=parameters, search=search)))
    status = world.wait_phase("huge", "Failed")
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["reason"] == "InvalidSpec"
    assert "spec.search: the grid has 125,000 points" in status["message"]
    wait_for(lambda: "InvalidSpec" in world.reasons("huge"))
    world.settle()
    assert world.job_names() == []


# ---- spec changes ---------------------------------------------------------------------------


def test_a_budget_change_while_running_takes_effect_at_the_next_stage_only(world: World) -> None:
    world.create(tuningjob("forest"))
    first = world.wait_job("forest-s1-grid")
    stages = [{"method": "grid", "gridPoints": 3}, {"method": "random", "trials": 5}]
    edited = world.edit("forest", {"search": {**SPEC["search"], "stages": stages}})
    assert edited["metadata"]["generation"] == 2

    status = wait_for(lambda: (s := world.status("forest")).get("observedGeneration") == 2 and s)
    assert {c["observedGeneration"] for c in status["conditions"]} == {2}
    world.settle()
    # The running stage is untouched: its Job was never written again.
    assert world.job("forest-s1-grid") == first
    assert world.calls(verb="patch", plural="jobs") == []
    assert task_of(first).plan.grid_points == 2

    world.finish_stage("forest", S1, TOP_S1)
    task = task_of(world.wait_job("forest-s2-random"))
    assert task.plan.trials == 5
    assert task.spec.search.stages is not None and task.spec.search.stages[1].trials == 5


def test_suspend_suspends_the_running_job_and_resume_unsuspends_it(world: World) -> None:
    world.create(tuningjob("forest"))
    world.wait_job("forest-s1-grid")
    world.job_running("forest-s1-grid")

    world.edit("forest", {"suspend": True})
    status = world.wait_phase("forest", "Suspended")
    assert wait_for(lambda: world.job("forest-s1-grid")["spec"]["suspend"] is True)
    suspended = {c["type"]: c for c in status["conditions"]}["Suspended"]
    assert suspended["status"] == "True" and suspended["observedGeneration"] == 2
    wait_for(lambda: "Suspended" in world.reasons("forest"))

    # The first attempt to unsuspend fails: status already says Running; a later pass retries.
    world.kube.emulator.inject_error(verb="patch", resource="jobs", status=500)
    world.edit("forest", {"suspend": False})
    world.wait_phase("forest", "Running")
    assert wait_for(lambda: world.job("forest-s1-grid")["spec"]["suspend"] is False)
    wait_for(lambda: "Resumed" in world.reasons("forest"))
    patches = [
        (c.body["spec"]["suspend"], c.status)
        for c in world.calls(verb="patch", plural="jobs", name="forest-s1-grid")
    ]
    # A pass that sees the Job before its suspend reaches the watch may repeat a patch, never
    # an Event.
    assert patches[0] == (True, 200) and patches[-1] == (False, 200)
    assert patches.index((False, 500)) > max(i for i, p in enumerate(patches) if p[0] is True)
    world.settle(0.3)
    assert [r for r in world.reasons("forest") if r in ("Suspended", "Resumed")] == [
        "Suspended",
        "Resumed",
    ]
    assert world.job_names() == ["forest-s1-grid"]


def test_suspended_before_start_creates_no_job_until_resumed(world: World) -> None:
    world.create(tuningjob("forest", spec_with(suspend=True)))
    status = world.wait_phase("forest", "Suspended")
    assert not status.get("stages") and "suspended before the first stage" in status["message"]
    world.settle()
    assert world.job_names() == []
    assert world.calls(verb="create", plural="jobs") == []

    world.edit("forest", {"suspend": False})
    job = world.wait_job("forest-s1-grid")
    assert job["spec"]["suspend"] is False
    world.wait_phase("forest", "Running")


def test_suspended_after_a_stage_waits_quietly_then_resumes_with_the_next(world: World) -> None:
    world.create(tuningjob("forest"))
    world.wait_job("forest-s1-grid")
    world.edit("forest", {"suspend": True})
    world.wait_phase("forest", "Suspended")
    world.finish_stage("forest", S1, TOP_S1)

    wait_for(lambda: world.status("forest")["stages"][0]["phase"] == "Succeeded")
    writes = len(world.status_writes("forest"))
    world.settle(2.2)  # two resyncs find nothing new: no status write, no next stage
    assert len(world.status_writes("forest")) == writes
    assert world.job_names() == ["forest-s1-grid"]

    world.edit("forest", {"suspend": False})
    job = world.wait_job("forest-s2-random")
    assert job["spec"]["suspend"] is False
    world.wait_phase("forest", "Running")


def test_kueue_queue_jobs_are_created_suspended_and_never_unsuspended_by_the_operator(
    world: World,
) -> None:
    world.create(tuningjob("forest", spec_with(queueName="team-a")))
    job = world.wait_job("forest-s1-grid")
    assert job["metadata"]["labels"][KUEUE_QUEUE] == "team-a"
    assert job["spec"]["suspend"] is True
    queued = world.wait_phase("forest", "Pending")
    assert "team-a" in queued["message"]
    world.settle()
    assert world.calls(verb="patch", plural="jobs") == []
    assert world.job("forest-s1-grid")["spec"]["suspend"] is True

    world.api.patch(JOBS, "forest-s1-grid", {"spec": {"suspend": False}})  # Kueue admits it
    assert world.wait_phase("forest", "Running")["phase"] == "Running"
    world.finish_stage("forest", S1, TOP_S1)
    second = world.wait_job("forest-s2-random")
    assert second["spec"]["suspend"] is True and second["metadata"]["labels"][KUEUE_QUEUE]
    world.settle()
    assert world.calls(verb="patch", plural="jobs") == []


# ---- restarts, conflicts, errors ------------------------------------------------------------


def test_operator_restart_mid_stage_creates_no_duplicate_job_and_carries_on(world: World) -> None:
    world.create(tuningjob("forest"))
    world.wait_job("forest-s1-grid")
    world.job_running("forest-s1-grid")
    world.wait_phase("forest", "Running")
    before = world.operator.token
    uid = world.job("forest-s1-grid")["metadata"]["uid"]

    world.operator.restart()
    assert world.operator.token != before
    world.settle()
    creates = world.calls(verb="create", plural="jobs")
    assert all(c.body["metadata"]["name"] == "forest-s1-grid" for c in creates)
    assert creates[0].status == 201
    assert all(c.status == 409 for c in creates[1:])  # a re-create after restart is harmless
    assert world.job_names() == ["forest-s1-grid"]
    assert world.job("forest-s1-grid")["metadata"]["uid"] == uid  # the same Job object

    world.finish_stage("forest", S1, TOP_S1)
    world.wait_job("forest-s2-random")
    world.finish_stage("forest", S2, TOP_S1[:1], completed=3)
    world.wait_phase("forest", "Succeeded")
    assert world.job_names() == ["forest-s1-grid", "forest-s2-random"]
    assert sum(1 for r in world.reasons("forest") if r == "Started") == 1


def test_a_job_recorded_but_never_created_is_created_after_a_restart(world: World) -> None:
    # Every create fails while the first operator runs: the stage is recorded, the Job missing.
    world.kube.emulator.inject_error(verb="create", resource="jobs", status=503, times=1000)
    world.create(tuningjob("forest"))
    wait_for(lambda: world.status("forest").get("stages"))
    world.operator.stop()
    world.kube.emulator.clear_errors()  # the API server is healthy again
    world.operator.start()

    job = world.wait_job("forest-s1-grid")
    assert task_of(job).plan.name == S1
    assert world.job_names() == ["forest-s1-grid"]


def test_409_on_create_counts_as_success(world: World) -> None:
    # An earlier pass (or operator) already created the stage's Job.
    world.operator.stop()
    world.create(tuningjob("forest"))
    world.api.create(
        JOBS,
        {
            "metadata": {
                "name": "forest-s1-grid",
                "labels": {MANAGED_BY: "kubetune-operator", LABEL_TUNINGJOB: "forest"},
            },
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": []}}},
        },
    )
    world.operator.start()
    status = world.wait_phase("forest", "Running")
    assert status["stages"][0]["jobName"] == "forest-s1-grid"
    wait_for(lambda: world.calls(verb="create", plural="jobs"))
    world.settle()
    assert {c.status for c in world.calls(verb="create", plural="jobs")} == {409}
    assert world.job_names() == ["forest-s1-grid"]
    assert world.metric("kubetune_reconcile_errors_total", kind="TuningJob") == 0
    assert world.status("forest")["phase"] == "Running"


def test_5xx_and_429_on_create_are_retried_with_backoff_until_the_job_exists(
    world: World,
) -> None:
    emulator = world.kube.emulator
    emulator.inject_error(verb="create", resource="jobs", status=503, reason="ServiceUnavailable")
    emulator.inject_error(verb="create", resource="jobs", status=500)
    emulator.inject_error(verb="create", resource="jobs", status=429, reason="TooManyRequests")
    world.create(tuningjob("forest"))

    world.wait_job("forest-s1-grid", timeout=15)
    creates = world.calls(verb="create", plural="jobs")
    assert [c.status for c in creates][:4] == [503, 500, 429, 201]
    # Backed off, not a hot loop: after the first failure, the handler's retry (~1 s) and the
    # resync timer (1 s) take one fault each; the next attempt waits for a second backoff.
    assert creates[3].at - creates[0].at > 1.5
    errors = world.metric("kubetune_reconcile_errors_total", kind="TuningJob")
    assert errors == 3
    assert world.wait_phase("forest", "Running")["stages"][0]["jobName"] == "forest-s1-grid"
    assert world.job_names() == ["forest-s1-grid"]


# ---- deletion -------------------------------------------------------------------------------


def test_deleting_a_tuningjob_deletes_its_jobs_and_releases_the_finalizer(world: World) -> None:
    world.create(tuningjob("forest"))
    world.wait_job("forest-s1-grid")
    world.finish_stage("forest", S1, TOP_S1)
    world.wait_job("forest-s2-random")
    assert "kubetune.io/finalizer" in world.get("forest")["metadata"]["finalizers"]
    world.settle(0.3)

    # kopf's first attempt to release the finalizer fails: for a while the TuningJob is
    # "being deleted" while its Jobs' deletions come in as events.
    world.kube.emulator.inject_error(
        verb="patch", resource="tuningjobs", name="forest", actor=world.operator.token
    )
    world.api.delete(TUNINGJOBS, "forest")
    wait_for(lambda: world.api.find(TUNINGJOBS, "forest") is None)
    assert world.job_names() == []
    deleted = {c.name for c in world.calls(verb="delete", plural="jobs")}
    assert deleted == {"forest-s1-grid", "forest-s2-random"}
    world.settle()
    assert world.job_names() == []  # nothing re-created by a late event
    creates = world.calls(verb="create", plural="jobs")
    assert [c.body["metadata"]["name"] for c in creates if c.status == 201] == [
        "forest-s1-grid",
        "forest-s2-random",
    ]
    (delete,) = world.kube.calls(verb="delete", plural="tuningjobs")
    assert [c for c in creates if c.seq > delete.seq] == []


def test_404_on_delete_counts_as_success(world: World) -> None:
    world.create(tuningjob("forest"))
    world.wait_job("forest-s1-grid")
    world.kube.emulator.inject_error(verb="delete", resource="jobs", status=404, reason="NotFound")
    world.api.delete(TUNINGJOBS, "forest")
    wait_for(lambda: world.api.find(TUNINGJOBS, "forest") is None)
    assert [c.status for c in world.calls(verb="delete", plural="jobs")] == [404]


# ---- status hygiene -------------------------------------------------------------------------


def test_status_is_written_only_when_it_changes(world: World) -> None:
    world.create(tuningjob("forest"))
    world.wait_job("forest-s1-grid")
    world.job_running("forest-s1-grid")
    world.wait_phase("forest", "Running")
    world.settle(0.5)
    writes = len(world.status_writes("forest"))
    reads = len(world.calls(verb="get", plural="tuningjobs", name="forest"))

    world.settle(2.2)
    assert len(world.calls(verb="get", plural="tuningjobs", name="forest")) >= reads + 2
    assert len(world.status_writes("forest")) == writes  # resyncs ran and found nothing new
    assert world.reasons("forest") == ["Started"]

    # A runner's progress write is not the operator's business either.
    world.api.patch_status(TUNINGJOBS, "forest", {"progress": "3/9"})
    world.settle()
    assert len(world.status_writes("forest")) == writes


def test_the_operator_never_writes_spec(world: World) -> None:
    world.create(tuningjob("forest", labels=OWN_LABELS))
    world.wait_job("forest-s1-grid")
    world.edit("forest", {"suspend": True})
    world.wait_phase("forest", "Suspended")
    world.edit("forest", {"suspend": False})
    world.finish_stage("forest", S1, TOP_S1)
    world.wait_job("forest-s2-random")
    world.finish_stage("forest", S2, TOP_S1[:1], completed=3)
    world.wait_phase("forest", "Succeeded")

    writes = [
        c
        for c in world.calls(plural="tuningjobs", name="forest")
        if c.verb in ("patch", "update") and not c.subresource
    ]
    assert writes, "kopf writes its finalizer and annotations to the main resource"
    for call in writes:
        body = call.body
        paths = [op["path"] for op in body] if isinstance(body, list) else [f"/{k}" for k in body]
        assert all(p.startswith("/metadata") for p in paths), json.dumps(body)
    history = world.kube.history(TUNINGJOBS, "forest")
    specs = [v["spec"] for v in history if v is not None]
    assert specs[0] == SPEC and specs[-1] == {**SPEC, "suspend": False}
    assert world.get("forest")["metadata"]["generation"] == 3  # the user's two edits only
    assert world.get("forest")["metadata"]["labels"] == OWN_LABELS
