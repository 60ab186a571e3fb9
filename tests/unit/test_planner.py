"""Every transition of the pure planner, with no cluster."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubetune.api import ModelComparisonSpec, TuningJobSpec
from kubetune_operator.children import (
    KUEUE_QUEUE,
    LABEL_TUNINGJOB,
    TASK_ENV,
    child_tuningjob,
    merge_patch,
)
from kubetune_operator.config import OperatorConfig
from kubetune_operator.planner import (
    OPERATOR_FIELDS,
    ChildView,
    CreateObject,
    Decision,
    JobView,
    Meta,
    PatchChildSpec,
    SetChildSuspend,
    SetJobSuspend,
    plan_comparison,
    plan_invalid,
    plan_tuning,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
META = Meta(name="forest", namespace="team", uid="uid-1", generation=1)
CONFIG = OperatorConfig(runner_image="runner:test", metrics_port=0)
SPEC: dict[str, Any] = {
    "estimator": {"name": "SVC"},
    "dataset": {"builtin": "iris"},
    "parameters": [
        {"name": "C", "float": {"low": 0.01, "high": 100.0, "log": True}},
        {"name": "kernel", "categorical": ["rbf", "linear"]},
    ],
    "search": {
        "method": "progressive",
        "seed": 7,
        "parallelism": 2,
        "stages": [
            {"method": "grid", "gridPoints": 3},
            {"method": "random", "trials": 5},
            {"method": "bayesian", "trials": 4},
        ],
        "refinement": {"factor": 0.2, "topK": 1},
    },
}


def tj(**changes: Any) -> TuningJobSpec:
    return TuningJobSpec.model_validate({**SPEC, **changes})


def plan(
    spec: TuningJobSpec,
    status: dict[str, Any],
    jobs: list[JobView] = (),  # type: ignore[assignment]
    now: datetime = NOW,
) -> Decision:
    return plan_tuning(
        meta=META,
        spec=spec,
        status=status,
        jobs={j.name: j for j in jobs},
        config=CONFIG,
        new_seed=99,
        now=now,
    )


def creates(decision: Decision) -> list[dict[str, Any]]:
    return [a.body for a in decision.actions if isinstance(a, CreateObject)]


def conditions(decision: Decision) -> dict[str, str]:
    return {c["type"]: c["status"] for c in decision.status["conditions"]}


def task_of(job: dict[str, Any]) -> dict[str, Any]:
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return json.loads(next(e["value"] for e in env if e["name"] == TASK_ENV))


def running(name: str) -> JobView:
    return JobView(name=name, active=1)


def report(
    stage: str,
    *,
    phase: str = "Succeeded",
    top: list[dict[str, Any]] | None = None,
    completed: int = 6,
    failed: int = 0,
    message: str | None = None,
) -> dict[str, Any]:
    top = top if top is not None else [{"C": 1.0, "kernel": "rbf"}]
    return {
        "stage": stage,
        "phase": phase,
        "trials": {"completed": completed, "failed": failed, "planned": completed + failed},
        "bestScore": 0.95 if top else None,
        "message": message,
        "top": [
            {"trial": i, "stage": stage, "params": p, "score": 0.95 - i / 100, "std": 0.01}
            for i, p in enumerate(top)
        ],
    }


def test_new_tuningjob_records_the_stage_then_creates_its_job() -> None:
    d = plan(tj(), {})
    st = d.status
    assert st["phase"] == "Running" and st["observedGeneration"] == 1
    assert st["reproducibility"]["seed"] == 7
    assert d.status_patch({}, OPERATOR_FIELDS)["reproducibility"] == {"seed": 7}
    (stage,) = st["stages"]
    assert stage["name"] == "s1-grid" and stage["jobName"] == "forest-s1-grid"
    assert stage["trials"]["planned"] == 3 * 2 and st["currentStage"] == "s1-grid"
    (job,) = creates(d)
    assert job["metadata"]["name"] == "forest-s1-grid" and job["metadata"]["namespace"] == "team"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert job["metadata"]["labels"][LABEL_TUNINGJOB] == "forest"
    task = task_of(job)
    assert task["plan"]["name"] == "s1-grid" and task["plan"]["seed"] == 7
    assert task["target"] == {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningJob",
        "namespace": "team",
        "name": "forest",
        "uid": "uid-1",
    }
    assert task["plannedTotal"] == 6 + 5 + 4
    assert conditions(d) == {
        "Running": "True",
        "Succeeded": "False",
        "Failed": "False",
        "Suspended": "False",
    }
    assert [e.reason for e in d.events] == ["Started"]


def test_seed_is_chosen_once_when_spec_has_none() -> None:
    spec = tj(search={**SPEC["search"], "seed": None})
    first = plan(spec, {})
    assert first.status["reproducibility"]["seed"] == 99
    again = plan_tuning(
        meta=META, spec=spec, status=first.status, jobs={}, config=CONFIG, new_seed=12345, now=NOW
    )
    assert again.status["reproducibility"]["seed"] == 99


def test_job_is_restricted_and_carries_runner_settings() -> None:
    spec = tj(
        runner={
            "image": "my/runner:1",
            "timeoutSeconds": 600,
            "backoffLimit": 1,
            "nodeSelector": {"pool": "cpu"},
            "tolerations": [{"key": "batch", "operator": "Exists"}],
            "serviceAccountName": "tuner",
            "resources": {"limits": {"memory": "2Gi"}},
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "d"}}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        }
    )
    (job,) = creates(plan(spec, {}))
    js, pod = job["spec"], job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert js["activeDeadlineSeconds"] == 600 and js["backoffLimit"] == 1
    assert js["suspend"] is False
    assert js["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "tuner"
    assert pod["nodeSelector"] == {"pool": "cpu"} and pod["tolerations"][0]["key"] == "batch"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert c["image"] == "my/runner:1" and c["command"] == ["python", "-m", "kubetune.runner"]
    assert c["resources"] == {
        "requests": {"cpu": "2", "memory": "1Gi"},
        "limits": {"memory": "2Gi"},
    }
    assert {"name": "data", "mountPath": "/data"} in c["volumeMounts"]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert "labels" in job["metadata"] and "kubetune.io/stage" in job["metadata"]["labels"]


def test_defaults_come_from_the_operator_config() -> None:
    (job,) = creates(plan(tj(), {}))
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "runner:test"
    assert pod["serviceAccountName"] == "kubetune-runner"
    assert "activeDeadlineSeconds" not in job["spec"]


def test_kueue_queue_label_and_created_suspended_never_unsuspended() -> None:
    spec = tj(queueName="team-queue")
    first = plan(spec, {})
    (job,) = creates(first)
    assert job["metadata"]["labels"][KUEUE_QUEUE] == "team-queue"
    assert job["spec"]["suspend"] is True
    queued = JobView(name="forest-s1-grid", suspended=True)
    d = plan(spec, first.status, [queued])
    assert d.actions == [] and d.status["phase"] == "Pending"
    running_condition = next(c for c in d.status["conditions"] if c["type"] == "Running")
    assert (running_condition["status"], running_condition["reason"]) == ("False", "Queued")
    assert "team-queue" in d.status["message"]
    admitted = plan(spec, d.status, [running("forest-s1-grid")])
    assert admitted.actions == [] and admitted.status["phase"] == "Running"


def test_status_patch_holds_only_operator_fields_that_changed() -> None:
    first = plan(tj(), {})
    runner_wrote = {
        **first.status,
        "trials": {"completed": 3},
        "best": {"score": 1},
        "reproducibility": {"seed": 7, "dataset": {"rows": 150}},
    }
    d = plan(tj(), runner_wrote, [running("forest-s1-grid")])
    assert d.status_patch(runner_wrote, OPERATOR_FIELDS) == {}
    stale = {**runner_wrote, "phase": "Pending"}
    patch = d.status_patch(stale, OPERATOR_FIELDS)
    assert set(patch) == {"phase"}  # never trials, best or the runner's reproducibility keys


def test_running_stage_changes_nothing() -> None:
    first = plan(tj(), {})
    d = plan(tj(), first.status, [running("forest-s1-grid")])
    assert d.actions == [] and d.events == []
    assert d.status_patch(first.status, ("phase", "stages", "conditions")) == {}


def test_stage_success_starts_the_next_stage_in_the_narrowed_space() -> None:
    first = plan(tj(), {})
    status = {**first.status, "report": report("s1-grid", top=[{"C": 1.0, "kernel": "linear"}])}
    done = JobView(name="forest-s1-grid", succeeded=1, complete=True)
    d = plan(tj(), status, [done])
    s1, s2 = d.status["stages"]
    assert s1["phase"] == "Succeeded" and s1["bestScore"] == 0.95
    assert s1["trials"]["completed"] == 6
    assert s2["name"] == "s2-random" and s2["phase"] == "Running"
    assert d.status["currentStage"] == "s2-random"
    space = {p["name"]: p for p in s2["space"]}
    assert space["kernel"]["categorical"] == ["linear"]
    c = space["C"]["float"]
    assert 0.01 <= c["low"] < 1.0 < c["high"] <= 100.0 and c["high"] / c["low"] < 10000 / 2
    (job,) = creates(d)
    task = task_of(job)
    assert job["metadata"]["name"] == "forest-s2-random"
    assert task["plan"]["tialOffset" if False else "trialOffset"] == 6
    assert task["trialsBefore"]["completed"] == 6
    assert task["plan"]["space"] == s2["space"]
    assert [e.reason for e in d.events] == ["StageStarted"]
    assert "s1-grid succeeded" in d.events[0].message


def _through(spec: TuningJobSpec, stages: int) -> dict[str, Any]:
    status = plan(spec, {}).status
    names = ["s1-grid", "s2-random", "s3-bayesian"]
    for i in range(stages):
        status = {**status, "report": report(names[i])}
        done = JobView(name=f"forest-{names[i]}", succeeded=1, complete=True)
        status = plan(spec, status, [done]).status
    return status


def test_last_stage_success_succeeds_with_the_best_in_the_event() -> None:
    status = _through(tj(), 2)
    best = {
        "trial": 12,
        "stage": "s3-bayesian",
        "params": {"C": 2.0, "kernel": "rbf"},
        "score": 0.9712,
        "std": 0.01,
        "metric": "accuracy",
        "interval95": {"low": 0.95, "high": 0.99},
        "foldScores": [0.97] * 5,
    }
    status = {**status, "best": best, "report": report("s3-bayesian")}
    d = plan(tj(), status, [JobView(name="forest-s3-bayesian", succeeded=1, complete=True)])
    assert d.status["phase"] == "Succeeded" and d.status["completedAt"]
    assert conditions(d)["Succeeded"] == "True" and conditions(d)["Running"] == "False"
    assert [e.reason for e in d.events] == ["Succeeded"]
    assert "0.9712" in d.events[0].message and creates(d) == []


def test_terminal_resources_stay_put() -> None:
    status = _through(tj(), 3)
    assert status["phase"] == "Succeeded"
    d = plan(tj(search={**SPEC["search"], "parallelism": 4}), status)
    assert d.actions == [] and d.events == [] and d.status["phase"] == "Succeeded"


def test_stage_reported_failed_fails_the_job() -> None:
    status = plan(tj(), {}).status
    status = {
        **status,
        "report": report(
            "s1-grid",
            phase="Failed",
            top=[],
            completed=0,
            failed=6,
            message="all 6 trials failed: ValueError: x",
        ),
    }
    d = plan(tj(), status, [JobView(name="forest-s1-grid", succeeded=1, complete=True)])
    assert d.status["phase"] == "Failed"
    failed = {c["type"]: c for c in d.status["conditions"]}["Failed"]
    assert failed["status"] == "True" and failed["reason"] == "StageFailed"
    assert "ValueError: x" in failed["message"] and failed["observedGeneration"] == 1
    assert d.events[0].type == "Warning"


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (
            JobView(
                name="forest-s1-grid",
                failed=1,
                failed_final=True,
                reason="BackoffLimitExceeded",
                termination_message="error: dataset.file.path: no such file: /data/x.csv",
            ),
            "no such file: /data/x.csv",
        ),
        (
            JobView(
                name="forest-s1-grid",
                failed=1,
                failed_final=True,
                reason="DeadlineExceeded",
                message="Job was active longer than specified deadline",
            ),
            "ran past runner.timeoutSeconds",
        ),
        (
            JobView(
                name="forest-s1-grid",
                failed=3,
                failed_final=True,
                termination_message="the runner was killed for using more memory than its "
                "limit (OOMKilled)",
            ),
            "OOMKilled",
        ),
    ],
)
def test_failed_job_fails_the_stage_with_the_runners_reason(job: JobView, expected: str) -> None:
    status = plan(tj(), {}).status
    d = plan(tj(), status, [job])
    assert d.status["phase"] == "Failed"
    assert d.status["stages"][0]["phase"] == "Failed"
    assert expected in d.status["stages"][0]["message"] and expected in d.status["message"]
    assert {c["type"]: c["reason"] for c in d.status["conditions"]}["Failed"] == "JobFailed"
    assert d.events[0].type == "Warning" and expected in d.events[0].message


def test_report_lag_waits_then_fails_after_the_grace_period() -> None:
    status = plan(tj(), {}).status
    ended = (NOW - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    done = JobView(name="forest-s1-grid", succeeded=1, complete=True, completion_time=ended)
    waiting = plan(tj(), status, [done])
    assert waiting.requeue_after and waiting.status["phase"] == "Running"
    late = plan(tj(), status, [done], now=NOW + timedelta(seconds=120))
    assert late.status["phase"] == "Failed" and "without reporting" in late.status["message"]


def test_restart_recreates_the_recorded_job_identically() -> None:
    first = plan(tj(), {})
    (created,) = creates(first)
    after_restart = plan(tj(), first.status, [])  # status says s1, no Job observed
    (again,) = creates(after_restart)
    assert again == created
    assert after_restart.status["stages"] == first.status["stages"]
    assert after_restart.events == []


def test_spec_edit_does_not_change_the_running_stage_but_the_next() -> None:
    first = plan(tj(), {})
    edited = tj(
        search={
            **SPEC["search"],
            "stages": [
                {"method": "grid", "gridPoints": 3},
                {"method": "random", "trials": 9},
                {"method": "bayesian", "trials": 4},
            ],
        }
    )
    assert plan(edited, first.status, [running("forest-s1-grid")]).actions == []
    status = {**first.status, "report": report("s1-grid")}
    d = plan(edited, status, [JobView(name="forest-s1-grid", succeeded=1, complete=True)])
    assert d.status["stages"][1]["trials"]["planned"] == 9
    assert task_of(creates(d)[0])["plan"]["trials"] == 9


def test_suspend_before_start_creates_nothing_and_resume_starts() -> None:
    d = plan(tj(suspend=True), {})
    assert d.status["phase"] == "Suspended" and creates(d) == []
    assert conditions(d)["Suspended"] == "True"
    resumed = plan(tj(), d.status)
    assert resumed.status["phase"] == "Running" and len(creates(resumed)) == 1


def test_suspend_running_stage_suspends_its_job_and_resume_unsuspends() -> None:
    status = plan(tj(), {}).status
    d = plan(tj(suspend=True), status, [running("forest-s1-grid")])
    assert d.actions == [SetJobSuspend("forest-s1-grid", True)]
    assert d.status["phase"] == "Suspended" and [e.reason for e in d.events] == ["Suspended"]
    still = plan(tj(suspend=True), d.status, [JobView(name="forest-s1-grid", suspended=True)])
    assert still.actions == [] and still.events == []
    back = plan(tj(), d.status, [JobView(name="forest-s1-grid", suspended=True)])
    assert back.actions == [SetJobSuspend("forest-s1-grid", False)]
    assert back.status["phase"] == "Running" and [e.reason for e in back.events] == ["Resumed"]


def test_suspended_after_a_stage_waits_to_start_the_next() -> None:
    status = {**plan(tj(), {}).status, "report": report("s1-grid")}
    done = JobView(name="forest-s1-grid", succeeded=1, complete=True)
    d = plan(tj(suspend=True), status, [done])
    assert d.status["phase"] == "Suspended" and creates(d) == []
    assert d.status["stages"][0]["phase"] == "Succeeded" and len(d.status["stages"]) == 1
    resumed = plan(tj(), d.status, [done])
    assert [b["metadata"]["name"] for b in creates(resumed)] == ["forest-s2-random"]


def test_a_finished_stage_whose_job_is_gone_is_not_run_again() -> None:
    """While the next stage waits (suspended), a TTL or a user may delete the finished Job."""
    status = {**plan(tj(), {}).status, "report": report("s1-grid")}
    done = JobView(name="forest-s1-grid", succeeded=1, complete=True)
    waiting = plan(tj(suspend=True), status, [done])
    gone = plan(tj(suspend=True), waiting.status, [])
    assert gone.actions == [] and gone.events == [] and gone.status["phase"] == "Suspended"
    resumed = plan(tj(), gone.status, [])
    assert [b["metadata"]["name"] for b in creates(resumed)] == ["forest-s2-random"]


def test_invalid_spec_fails_once_with_a_warning() -> None:
    d = plan_invalid(
        kind="TuningJob", status={}, message="spec.estimator.name: unknown", generation=3
    )
    assert d.status["phase"] == "Failed" and d.status["observedGeneration"] == 3
    failed = {c["type"]: c for c in d.status["conditions"]}["Failed"]
    assert failed["reason"] == "InvalidSpec" and failed["status"] == "True"
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "InvalidSpec")]
    again = plan_invalid(
        kind="TuningJob", status=d.status, message="spec.estimator.name: unknown", generation=3
    )
    assert again.events == []


def test_long_names_are_shortened_deterministically() -> None:
    meta = Meta(name="a" * 60, namespace="team", uid="u", generation=1)
    d = plan_tuning(meta=meta, spec=tj(), status={}, jobs={}, config=CONFIG, new_seed=1, now=NOW)
    name = creates(d)[0]["metadata"]["name"]
    assert len(name) <= 63 and name == d.status["stages"][0]["jobName"]
    d2 = plan_tuning(meta=meta, spec=tj(), status={}, jobs={}, config=CONFIG, new_seed=1, now=NOW)
    assert creates(d2)[0]["metadata"]["name"] == name


# --- ModelComparison -----------------------------------------------------------------------------

MC_META = Meta(name="wine", namespace="team", uid="uid-mc", generation=1)
MC: dict[str, Any] = {
    "dataset": {"builtin": "wine"},
    "cv": {"folds": 5},
    "search": {"method": "random", "trials": 4, "seed": 3},
    "models": [
        {"name": "forest", "estimator": {"name": "RandomForestClassifier"}},
        {"name": "svm", "estimator": {"name": "SVC"}},
        {"name": "knn", "estimator": {"name": "KNeighborsClassifier"}},
    ],
}


def mc(**changes: Any) -> ModelComparisonSpec:
    return ModelComparisonSpec.model_validate({**MC, **changes})


def plan_mc(
    spec: ModelComparisonSpec, status: dict[str, Any], children: list[ChildView] = ()
) -> Decision:  # type: ignore[assignment]
    return plan_comparison(
        meta=MC_META,
        spec=spec,
        status=status,
        children={c.name: c for c in children},
        new_seed=5,
        now=NOW,
    )


def child(
    name: str,
    phase: str = "Running",
    score: float | None = None,
    folds: list[float] | None = None,
    suspended: bool = False,
    spec: ModelComparisonSpec | None = None,
) -> ChildView:
    """A child as the comparison ``spec`` created it (default: ``mc()``), with this status."""
    spec = spec or mc()
    model = next(m for m in spec.models if m.name == name)
    body = child_tuningjob(
        comparison=MC_META.name,
        namespace=MC_META.namespace,
        uid=MC_META.uid,
        spec=spec,
        model=model,
        seed=3,
        suspend=suspended,
    )
    status: dict[str, Any] = {"phase": phase, "trials": {"completed": 4, "planned": 4}}
    if score is not None:
        status["best"] = {
            "trial": 0,
            "stage": "s1-random",
            "params": {"C": 1},
            "score": score,
            "std": 0.01,
            "metric": "accuracy",
            "interval95": {"low": score - 0.02, "high": score + 0.02},
            "foldScores": folds or [score] * 5,
        }
    if phase == "Failed":
        status["message"] = "stage s1-random failed: boom"
    return ChildView.from_body({**body, "status": status})


def test_parallel_comparison_creates_every_child_with_the_same_seed_and_folds() -> None:
    d = plan_mc(mc(), {})
    bodies = creates(d)
    assert [b["metadata"]["name"] for b in bodies] == ["wine-forest", "wine-svm", "wine-knn"]
    for b in bodies:
        assert b["kind"] == "TuningJob"
        assert b["spec"]["search"]["seed"] == 3 and b["spec"]["cv"] == {"folds": 5, "shuffle": True}
        assert b["metadata"]["ownerReferences"][0]["kind"] == "ModelComparison"
        assert b["metadata"]["labels"]["kubetune.io/modelcomparison"] == "wine"
    assert d.status["phase"] == "Running" and d.status["progress"] == "0/3"


def test_sequential_comparison_runs_one_child_at_a_time() -> None:
    spec = mc(execution={"mode": "sequential"})
    first = plan_mc(spec, {})
    assert [b["metadata"]["name"] for b in creates(first)] == ["wine-forest"]
    busy = plan_mc(spec, first.status, [child("forest")])
    assert creates(busy) == []
    nxt = plan_mc(spec, first.status, [child("forest", "Succeeded", 0.9)])
    assert [b["metadata"]["name"] for b in creates(nxt)] == ["wine-svm"]


def test_max_concurrent_caps_parallel_children() -> None:
    d = plan_mc(mc(execution={"mode": "parallel", "maxConcurrent": 2}), {})
    assert len(creates(d)) == 2


def test_comparison_ranks_children_and_tests_the_winner() -> None:
    kids = [
        child("forest", "Succeeded", 0.97, [0.97, 0.98, 0.96, 0.97, 0.99]),
        child("svm", "Succeeded", 0.93, [0.92, 0.93, 0.94, 0.92, 0.94]),
        child("knn", "Failed"),
    ]
    d = plan_mc(mc(), {"reproducibility": {"seed": 3}}, kids)
    st = d.status
    assert st["phase"] == "Succeeded" and st["bestModel"] == "forest" and st["bestScore"] == 0.97
    assert [(r["rank"], r["model"], r["phase"]) for r in st["ranking"]] == [
        (1, "forest", "Succeeded"),
        (2, "svm", "Succeeded"),
        (3, "knn", "Failed"),
    ]
    assert st["ranking"][2]["message"] and "score" not in st["ranking"][2]
    sig = st["significance"]
    assert sig["winner"] == "forest" and sig["runnerUp"] == "svm" and 0 < sig["pValue"] < 0.05
    assert sig["significant"] is True
    assert st["models"] == {"completed": 2, "failed": 1, "planned": 3}
    # The model's failure comes before the verdict: events are posted in this order.
    assert [e.reason for e in d.events][-2:] == ["ModelFailed", "Succeeded"]


def test_comparison_fails_only_when_every_model_fails() -> None:
    d = plan_mc(
        mc(), {}, [child("forest", "Failed"), child("svm", "Failed"), child("knn", "Failed")]
    )
    assert d.status["phase"] == "Failed"
    assert {c["type"]: c["reason"] for c in d.status["conditions"]}["Failed"] == "AllModelsFailed"
    assert [e.reason for e in d.events][-4:] == ["ModelFailed"] * 3 + ["Failed"]


def test_comparison_suspend_propagates_to_children() -> None:
    d = plan_mc(mc(suspend=True), {}, [child("forest"), child("svm", "Succeeded", 0.9)])
    assert d.actions == [SetChildSuspend("wine-forest", True)]
    assert d.status["phase"] == "Suspended"
    assert [e.reason for e in d.events] == ["Started", "Suspended"]
    still = plan_mc(
        mc(suspend=True),
        d.status,
        [child("forest", suspended=True), child("svm", "Succeeded", 0.9)],
    )
    assert still.events == []
    back = plan_mc(
        mc(), d.status, [child("forest", suspended=True), child("svm", "Succeeded", 0.9)]
    )
    assert SetChildSuspend("wine-forest", False) in back.actions
    assert [e.reason for e in back.events] == ["Resumed"]
    assert [b["metadata"]["name"] for b in creates(back)] == ["wine-knn"]


def test_a_budget_edit_reaches_the_unfinished_children_once_with_one_event() -> None:
    created = {**MC, "search": {"method": "random", "trials": 4, "seed": 3}}
    kids = [
        child("forest", spec=mc(**created)),
        child("svm", "Succeeded", 0.9, spec=mc(**created)),
        child("knn", spec=mc(**created)),
    ]
    first = plan_mc(mc(), {}, kids)
    assert [a for a in first.actions if isinstance(a, PatchChildSpec)] == []

    edited = {**MC, "search": {"method": "random", "trials": 9, "seed": 3, "parallelism": 2}}
    meta = Meta(name="wine", namespace="team", uid="uid-mc", generation=2)
    d = plan_comparison(
        meta=meta,
        spec=mc(**edited),
        status=first.status,
        children={c.name: c for c in kids},
        new_seed=5,
        now=NOW,
    )
    patch = {"search": {"trials": 9, "parallelism": 2}}
    # The finished model is left as it is; the others get only the fields that changed.
    assert d.actions == [PatchChildSpec("wine-forest", patch), PatchChildSpec("wine-knn", patch)]
    assert [(e.reason, e.message) for e in d.events] == [
        (
            "ModelsUpdated",
            "search and runner settings passed on to 2 unfinished models (forest, knn); "
            "each takes them at its next stage",
        )
    ]
    # A later pass that still sees the old children repeats the (idempotent) patch, not the
    # event; once the children carry the new settings, nothing is written.
    again = plan_comparison(
        meta=meta,
        spec=mc(**edited),
        status=d.status,
        children={c.name: c for c in kids},
        new_seed=5,
        now=NOW,
    )
    assert len(again.actions) == 2 and again.events == []
    caught_up = [child(n, spec=mc(**edited)) for n in ("forest", "knn")]
    quiet = plan_comparison(
        meta=meta,
        spec=mc(**edited),
        status=d.status,
        children={c.name: c for c in caught_up},
        new_seed=5,
        now=NOW,
    )
    assert [a for a in quiet.actions if not isinstance(a, CreateObject)] == []


def test_defaults_filled_in_by_the_server_are_not_a_budget_change() -> None:
    kid = child("forest")
    filled = {**kid.settings, "runner": {}, "search": {**kid.settings["search"], "parallelism": 1}}
    d = plan_mc(mc(), {}, [ChildView(kid.name, False, kid.status, filled)])
    assert [a for a in d.actions if isinstance(a, PatchChildSpec)] == []


def test_merge_patch_removes_what_the_new_spec_leaves_out() -> None:
    current = {"method": "progressive", "stages": [{"method": "grid"}], "maxFailedTrials": 3}
    desired = {"method": "random", "trials": 5}
    assert merge_patch(current, desired) == {
        "method": "random",
        "stages": None,
        "maxFailedTrials": None,
        "trials": 5,
    }
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}) == {"a": {"c": None}}


def test_a_malformed_status_is_survived_not_crash_looped() -> None:
    first = plan(tj(), {})
    broken = {**first.status, "best": {"score": "not a number"}, "trials": "garbage"}
    d = plan(tj(), broken, [running("forest-s1-grid")])
    assert d.status["phase"] == "Running"
    assert d.status["stages"] == first.status["stages"]


def test_a_suspended_job_is_unsuspended_even_if_status_already_says_running() -> None:
    """Status is written before actions: a failed unsuspend leaves phase Running, job suspended."""
    status = plan(tj(), {}).status
    d = plan(tj(), status, [JobView(name="forest-s1-grid", suspended=True)])
    assert d.actions == [SetJobSuspend("forest-s1-grid", False)]


def test_suspended_between_stages_writes_nothing_on_later_passes() -> None:
    status = {**plan(tj(), {}).status, "report": report("s1-grid")}
    done = JobView(name="forest-s1-grid", succeeded=1, complete=True)
    first = plan(tj(suspend=True), status, [done])
    again = plan(tj(suspend=True), first.status, [done], now=NOW + timedelta(minutes=5))
    assert again.status_patch(first.status, OPERATOR_FIELDS) == {}
    assert again.events == []
