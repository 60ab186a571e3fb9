"""The whole loop without a cluster: apply -> operator -> Jobs -> runner processes -> status.

The real operator runs in-process against the mock API; :class:`JobSimulator` runs every stage
Job's container command (``python -m kubetune.runner``) as a local process pointed at the same
API, and plays the Job controller. Nothing here fakes the operator's or the runner's writes.
"""

from __future__ import annotations

import copy
import csv
import itertools
import math
import threading
import time
from typing import Any

import pytest
from tests.cluster.world import Cluster
from tests.operator.harness import (
    CONFIGMAPS,
    JOBS,
    MODELCOMPARISONS,
    PODS,
    TUNINGJOBS,
    ApiCall,
    MockApiServer,
    merge_patch,
    wait_for,
)

from kubetune.api import TuningJobSpec
from kubetune.cluster import KubeConfigMaps, StatusWriter
from kubetune.planning import ObjectRef
from kubetune.trials import ledger_prefix, ledger_records
from kubetune_operator.kube import Kube
from kubetune_operator.planner import OPERATOR_FIELDS, Decision

pytestmark = pytest.mark.cluster

OPERATOR_ACTOR = "kubetune-operator"
RUNNER_FIELDS = {"trials", "progress", "best", "topTrials", "report", "reproducibility"}

PROGRESSIVE: dict[str, Any] = {
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
        "stages": [
            {"method": "grid", "gridPoints": 2},  # 2 values of C x 3 kernels
            {"method": "random", "trials": 4},
            {"method": "bayesian", "trials": 4},
        ],
        "refinement": {"factor": 0.2, "topK": 2},
    },
}
"""Three stages, 6 + 4 + 4 trials."""

SLOW_STAGE: dict[str, Any] = {
    "estimator": {"name": "RandomForestClassifier", "params": {"n_jobs": 1}},
    "dataset": {"builtin": "breast_cancer"},
    "parameters": [
        {"name": "n_estimators", "int": {"low": 40, "high": 80}},
        {"name": "max_depth", "int": {"low": 2, "high": 8}},
    ],
    "cv": {"folds": 3},
    "search": {"method": "random", "trials": 12, "seed": 5},
}
"""One random stage of 12 trials of a few tenths of a second each: long enough to interrupt."""


def comparison_spec(mode: str) -> dict[str, Any]:
    return {
        "dataset": {"builtin": "iris"},
        "cv": {"folds": 3},
        "scoring": {"metric": "accuracy"},
        "search": {"method": "random", "trials": 2, "seed": 11},
        "execution": {"mode": mode},
        "models": [
            {"name": "logreg", "estimator": {"name": "LogisticRegression"}},
            {
                "name": "svc",
                "estimator": {"name": "SVC"},
                "parameters": [{"name": "C", "float": {"low": 0.1, "high": 10.0, "log": True}}],
            },
            {"name": "knn", "estimator": {"name": "KNeighborsClassifier"}},
        ],
    }


def ledger_keys(cluster: Cluster, name: str) -> int:
    """Journal writes in the ledger so far: one data key per finished trial."""
    return sum(len(data) for data in cluster.ledger(name).values())


def ledger_trials(cluster: Cluster, name: str) -> list[Any]:
    """Every finished trial in the TuningJob's ledger, read as `kubetune trials` reads it."""
    body = cluster.get(name)
    client = cluster.kube.kubernetes_client(token="reader")
    try:
        owner = ObjectRef(namespace=cluster.kube.namespace, name=name, uid=body["metadata"]["uid"])
        return ledger_records(
            store=KubeConfigMaps(api=client, owner=owner),
            tuningjob=name,
            spec=TuningJobSpec.model_validate(body["spec"]),
            stages=body["status"].get("stages"),
        )
    finally:
        client.close()


def writes(cluster: Cluster, actor: str, plural: str, **filters: Any) -> list[ApiCall]:
    """Successful writes (create or patch) by ``actor`` to ``plural``."""
    return [
        c
        for c in cluster.kube.calls(plural=plural, actor=actor, **filters)
        if c.verb in ("create", "patch", "update") and c.status in (200, 201)
    ]


def status_patches(cluster: Cluster, name: str) -> list[ApiCall]:
    return [
        c
        for c in cluster.kube.calls(plural="tuningjobs", name=name, subresource="status")
        if c.verb == "patch" and c.status == 200
    ]


# --------------------------------------------------------------------------------------------


def test_a_progressive_search_runs_three_stage_jobs_to_success(cluster: Cluster) -> None:
    cluster.apply("TuningJob", "iris", PROGRESSIVE)
    status = cluster.wait_phase("iris", ("Succeeded", "Failed"))
    assert status["phase"] == "Succeeded", cluster.explain("iris")

    # Three stage Jobs, each run by exactly one pod that exited 0.
    jobs = ["iris-s1-grid", "iris-s2-random", "iris-s3-bayesian"]
    assert cluster.job_names() == jobs
    for job in jobs:
        (pod,) = cluster.sim.pods(job)
        assert pod.exit_code == 0 and pod.reason == "Completed", pod.stderr()
        body = cluster.job(job)
        assert body is not None
        conditions = {c["type"]: c["status"] for c in body["status"]["conditions"]}
        assert conditions["Complete"] == "True" and body["status"]["succeeded"] == 1

    # The operator's record of the stages, each with its own (narrowed) space.
    stages = status["stages"]
    assert [s["name"] for s in stages] == ["s1-grid", "s2-random", "s3-bayesian"]
    assert [s["phase"] for s in stages] == ["Succeeded"] * 3
    assert [s["jobName"] for s in stages] == jobs
    assert [s["trials"]["completed"] for s in stages] == [6, 4, 4]
    spaces = [{p["name"]: p for p in s["space"]} for s in stages]
    assert spaces[0]["C"]["float"] == {"low": 0.01, "high": 100.0, "log": True}
    widths = [math.log(s["C"]["float"]["high"] / s["C"]["float"]["low"]) for s in spaces]
    # Each stage narrows the last (log range) by the factor, or less to hold the top-k values.
    assert widths[1] < widths[0] and widths[2] < widths[1]
    for wider, narrower in itertools.pairwise(widths):
        assert narrower >= 0.2 * wider * (1 - 1e-9)
    for before, after in itertools.pairwise(spaces):
        original, narrow = spaces[0]["C"]["float"], after["C"]["float"]
        assert original["low"] <= narrow["low"] < narrow["high"] <= original["high"]
        assert narrow["log"] is True
        assert set(after["kernel"]["categorical"]) <= set(before["kernel"]["categorical"])
    assert len(spaces[1]["kernel"]["categorical"]) <= 2  # topK 2 keeps at most two kernels

    # The runner's fields: the best with its evidence, the counts, the reproducibility record.
    best = status["best"]
    assert set(best["params"]) == {"C", "kernel"}
    assert best["metric"] == "accuracy" and 0.9 <= best["score"] <= 1.0
    assert len(best["foldScores"]) == 3
    assert best["score"] == pytest.approx(sum(best["foldScores"]) / 3)
    assert best["interval95"]["low"] <= best["score"] <= best["interval95"]["high"]
    assert best["score"] == max(s["bestScore"] for s in stages)
    assert status["trials"] == {"completed": 14, "failed": 0, "planned": 14}
    assert status["progress"] == "14/14"
    assert status["reproducibility"]["seed"] == 7
    assert status["reproducibility"]["dataset"]["rows"] == 150
    assert status["report"]["stage"] == "s3-bayesian"
    assert status["report"]["phase"] == "Succeeded"
    assert status["observedGeneration"] == 1 and status["completedAt"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Succeeded"]["status"] == "True"
    reasons = [reason for _, reason, _ in cluster.events("iris")]
    assert reasons == ["Started", "StageStarted", "StageStarted", "Succeeded"]

    # Every trial of every stage, from the ledger in the cluster, by the real CLI.
    shown = cluster.kubetune("trials", "iris")
    assert shown.returncode == 0, shown.stderr
    rows = [line.split() for line in shown.stdout.splitlines()[2:] if line.strip()]
    assert [int(r[0]) for r in rows] == list(range(14))
    assert [r[1] for r in rows] == ["s1-grid"] * 6 + ["s2-random"] * 4 + ["s3-bayesian"] * 4
    assert {r[2] for r in rows} == {"COMPLETE"}
    top = [t for t in status["topTrials"] if t["trial"] == best["trial"]]
    assert top and f"{best['score']:.4f}" in next(
        " ".join(r) for r in rows if int(r[0]) == best["trial"]
    )

    out = cluster.workdir / "trials.csv"
    written = cluster.kubetune("trials", "iris", "--csv", str(out))
    assert written.returncode == 0, written.stderr
    assert "14 trials written" in written.stdout
    with out.open() as handle:
        table = list(csv.DictReader(handle))
    assert [int(r["trial"]) for r in table] == list(range(14))
    assert {"split0_test_accuracy", "mean_test_accuracy", "param_C"} <= set(table[0])
    by_number = {int(r["trial"]): r for r in table}
    assert float(by_number[best["trial"]]["mean_test_accuracy"]) == pytest.approx(best["score"])


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_a_model_comparison_runs_every_model_and_ranks_them(cluster: Cluster, mode: str) -> None:
    cluster.apply("ModelComparison", "cmp", comparison_spec(mode))
    status = cluster.wait_phase("cmp", ("Succeeded", "Failed"), resource=MODELCOMPARISONS)
    assert status["phase"] == "Succeeded", cluster.explain("cmp", MODELCOMPARISONS)

    children = {"cmp-logreg", "cmp-svc", "cmp-knn"}
    for child in children:
        child_status = cluster.status(child)
        assert child_status["phase"] == "Succeeded", cluster.explain(child)
        assert child_status["trials"]["completed"] == 2
    assert set(cluster.job_names()) == {f"{c}-s1-random" for c in children}
    assert all(p.exit_code == 0 for p in cluster.sim.pods())

    ranking = status["ranking"]
    assert [r["rank"] for r in ranking] == [1, 2, 3]
    assert {r["model"] for r in ranking} == {"logreg", "svc", "knn"}
    assert {r["tuningJob"] for r in ranking} == children
    scores = [r["score"] for r in ranking]
    assert scores == sorted(scores, reverse=True)
    assert all(r["phase"] == "Succeeded" for r in ranking)
    assert status["bestModel"] == ranking[0]["model"]
    assert status["bestScore"] == ranking[0]["score"]
    significance = status["significance"]
    assert significance["winner"] == ranking[0]["model"]
    assert significance["runnerUp"] == ranking[1]["model"]
    assert isinstance(significance["significant"], bool)
    assert status["models"] == {"completed": 3, "failed": 0, "planned": 3}
    assert status["trials"]["completed"] == 6
    assert status["progress"] == "3/3"

    # Sequential: each model's runner started after the one before had exited.
    pods = sorted(cluster.sim.pods(), key=lambda p: p.started)
    assert len(pods) == 3
    overlapping = any(
        later.started < (earlier.ended or math.inf) for earlier, later in itertools.pairwise(pods)
    )
    if mode == "sequential":
        assert not overlapping, [(p.name, p.started, p.ended) for p in pods]
        assert [p.job for p in pods] == [f"cmp-{m}-s1-random" for m in ("logreg", "svc", "knn")]


def test_a_runner_killed_mid_stage_resumes_in_a_new_pod_without_repeating_trials(
    cluster: Cluster,
) -> None:
    planned = SLOW_STAGE["search"]["trials"]
    job = "forest-s1-random"
    cluster.apply("TuningJob", "forest", SLOW_STAGE)
    first = cluster.sim.wait_running(job)
    wait_for(
        lambda: ledger_keys(cluster, "forest") >= 3,
        timeout=60,
        interval=0.05,
        message=lambda: cluster.explain("forest"),
    )
    killed = cluster.sim.kill_pod(job)  # a lost node: SIGKILL, no last words
    assert killed is first
    (_, second) = cluster.sim.wait_pods(job, 2)

    status = cluster.wait_phase("forest", ("Succeeded", "Failed"))
    assert status["phase"] == "Succeeded", cluster.explain("forest")
    assert first.exit_code == 137 and first.killed == "NodeLost"
    assert second.exit_code == 0, second.stderr()
    assert len(cluster.sim.pods(job)) == 2
    body = cluster.job(job)
    assert body is not None
    assert body["status"]["failed"] == 1 and body["status"]["succeeded"] == 1

    # The ledger holds each planned trial once, numbered without a gap.
    records = ledger_trials(cluster, "forest")
    assert [r.number for r in records] == list(range(planned))
    shown = cluster.kubetune("trials", "forest")
    assert shown.returncode == 0, shown.stderr
    numbers = [int(line.split()[0]) for line in shown.stdout.splitlines()[2:] if line.strip()]
    assert numbers == list(range(planned))

    # Each pod journaled only the trials it finished: the second did not start over.
    done_first = len(writes(cluster, first.actor, "configmaps"))
    done_second = len(writes(cluster, second.actor, "configmaps"))
    assert done_first >= 3
    assert done_second < planned
    assert done_first + done_second == planned  # parallelism 1: no trial was in flight twice
    assert status["trials"]["completed"] == planned
    assert status["report"]["trials"] == {"completed": planned, "failed": 0, "planned": planned}
    assert status["stages"][0]["trials"]["completed"] == planned
    # The second pod went on from the first one's results (it read the ledger back).
    assert cluster.kube.calls(actor=second.actor, plural="configmaps", verb="get")


def test_a_runner_that_rejects_its_input_fails_the_search_with_its_reason(
    cluster: Cluster,
) -> None:
    spec = copy.deepcopy(PROGRESSIVE)
    spec["dataset"] = {"file": {"path": "/no/such/dir/train.csv", "target": "label"}}
    cluster.apply("TuningJob", "broken", spec)
    status = cluster.wait_phase("broken", ("Succeeded", "Failed"))
    assert status["phase"] == "Failed", cluster.explain("broken")

    # The runner said why and exited 2: the pod failure policy failed the Job at once.
    (pod,) = cluster.sim.pods("broken-s1-grid")
    assert pod.exit_code == 2, pod.stderr()
    assert "no such file: /no/such/dir/train.csv" in pod.message
    job = cluster.job("broken-s1-grid")
    assert job is not None
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PodFailurePolicy"

    # ... and the reason is in the TuningJob's status, its condition and a Warning Event.
    assert "no such file: /no/such/dir/train.csv" in status["message"]
    condition = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert condition["status"] == "True"
    assert "no such file: /no/such/dir/train.csv" in condition["message"]
    stage = status["stages"][0]
    assert stage["phase"] == "Failed" and "no such file" in stage["message"]
    warnings = [e for e in cluster.events("broken") if e[0] == "Warning"]
    assert [reason for _, reason, _ in warnings] == ["Failed"]
    assert "no such file: /no/such/dir/train.csv" in warnings[0][2]
    assert cluster.job_names() == ["broken-s1-grid"]  # no next stage


def test_deleting_a_running_tuningjob_kills_its_runner_and_removes_its_jobs(
    cluster: Cluster,
) -> None:
    job = "doomed-s1-random"
    cluster.apply("TuningJob", "doomed", SLOW_STAGE)
    pod = cluster.sim.wait_running(job)
    wait_for(lambda: ledger_keys(cluster, "doomed") >= 1, timeout=60, interval=0.05)
    assert pod.running

    cluster.api.delete(TUNINGJOBS, "doomed")
    wait_for(
        lambda: cluster.api.find(TUNINGJOBS, "doomed") is None,
        timeout=15,
        message=lambda: f"the TuningJob was not let go: {cluster.api.find(TUNINGJOBS, 'doomed')}",
    )
    assert cluster.job(job) is None
    wait_for(lambda: not pod.running, timeout=10, message="the runner is still running")
    assert pod.exit_code != 0
    assert pod.process is not None and pod.process.poll() is not None
    assert cluster.sim.processes_alive() == []
    assert ledger_keys(cluster, "doomed") < SLOW_STAGE["search"]["trials"]  # stopped early
    wait_for(lambda: cluster.api.list(PODS) == [], timeout=5)
    # The operator deleted the Job itself (owner references are not collected here).
    deletes = [
        c
        for c in cluster.kube.calls(verb="delete", plural="jobs", name=job)
        if c.actor.startswith(OPERATOR_ACTOR)
    ]
    assert deletes
    assert cluster.sim.pods(job) == [pod]  # no replacement pod was started


def test_operator_and_runner_status_writes_interleave_without_losing_updates(
    cluster: Cluster,
) -> None:
    """Both write status while the stage runs (spec edits make the operator write
    observedGeneration); replaying each side's merge patches on its own gives exactly its
    fields of the final status."""
    spec = copy.deepcopy(SLOW_STAGE)
    spec["search"]["parallelism"] = 2  # also the runner's worker processes
    cluster.apply("TuningJob", "busy", spec)
    cluster.sim.wait_running("busy-s1-random")
    wait_for(lambda: cluster.status("busy").get("report"), timeout=60, interval=0.05)
    edits = 0
    while cluster.status("busy").get("phase") not in ("Succeeded", "Failed") and edits < 300:
        edits += 1
        cluster.api.patch(TUNINGJOBS, "busy", {"spec": {"search": {"maxFailedTrials": edits}}})
        time.sleep(0.1)
    status = cluster.wait_phase("busy", ("Succeeded", "Failed"))
    assert status["phase"] == "Succeeded", cluster.explain("busy")
    generation = cluster.get("busy")["metadata"]["generation"]
    assert generation == edits + 1

    patches = status_patches(cluster, "busy")
    runners = {p.actor for p in cluster.sim.pods()}
    operator = [p for p in patches if p.actor.startswith(OPERATOR_ACTOR)]
    runner = [p for p in patches if p.actor in runners]
    assert len(operator) + len(runner) == len(patches), {p.actor for p in patches}
    # They did write at the same time: operator writes fell between the runner's writes.
    first, last = runner[0].seq, runner[-1].seq
    assert sum(first < p.seq < last for p in operator) >= 3, (first, last, operator)

    # Disjoint fields: nothing either side wrote was written by the other.
    def paths(calls: list[ApiCall]) -> set[str]:
        found = set()
        for call in calls:
            for key, value in call.body["status"].items():
                if key == "reproducibility":
                    found |= {f"{key}.{sub}" for sub in value}
                else:
                    found.add(key)
        return found

    assert not paths(operator) & paths(runner)
    runner_paths = {"reproducibility.dataset", "reproducibility.cv", "reproducibility.versions"}
    assert paths(runner) <= RUNNER_FIELDS - {"reproducibility"} | runner_paths

    # No lost update: each side's own patches, replayed alone, give its part of the final status.
    mine: dict[str, Any] = {}
    theirs: dict[str, Any] = {}
    for call in operator:
        mine = merge_patch(mine, call.body["status"])
    for call in runner:
        theirs = merge_patch(theirs, call.body["status"])
    assert merge_patch(mine, theirs) == status
    assert status["observedGeneration"] == generation
    assert status["report"]["phase"] == "Succeeded"
    assert status["trials"]["completed"] == spec["search"]["trials"]
    assert status["stages"][0]["phase"] == "Succeeded"
    assert status["reproducibility"]["seed"] == 5 and status["reproducibility"]["dataset"]
    # The running stage kept its frozen plan whatever the edits said.
    (pod,) = cluster.sim.pods("busy-s1-random")
    assert '"maxFailedTrials"' not in pod.env["KUBETUNE_TASK"]


def test_concurrent_operator_and_runner_merge_patches_keep_every_field(
    kube: MockApiServer,
) -> None:
    """The real write paths of both sides, hammering one object from two threads."""
    api = kube.client()
    api.create(
        TUNINGJOBS,
        {
            "apiVersion": "kubetune.io/v1alpha1",
            "kind": "TuningJob",
            "metadata": {"name": "race"},
            "spec": copy.deepcopy(PROGRESSIVE),
        },
    )
    uid = api.get(TUNINGJOBS, "race")["metadata"]["uid"]
    rounds = 60
    operator_client = kube.kubernetes_client(token=f"{OPERATOR_ACTOR}-api")
    runner_client = kube.kubernetes_client(token="runner-pod")
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def operator_side() -> None:
        import asyncio

        kube_api = Kube(operator_client)

        async def run() -> None:
            for i in range(rounds):
                # A pass reads, plans from what it read (runner fields included, soon stale),
                # and writes only the owned fields that changed.
                current = api.get(TUNINGJOBS, "race").get("status") or {}
                new = copy.deepcopy(current)
                new.update(
                    phase="Running",
                    message=f"operator {i}",
                    observedGeneration=i + 1,
                    currentStage=f"s{i}",
                    stages=[{"name": f"s{j}", "phase": "Succeeded"} for j in range(i + 1)],
                    conditions=[
                        {"type": "Running", "status": "True", "reason": f"r{i}", "message": ""}
                    ],
                )
                new.setdefault("reproducibility", {})["seed"] = 7
                new["progress"] = "stale"  # a stale runner field must never be written back
                patch = Decision(status=new).status_patch(current, OPERATOR_FIELDS)
                await kube_api.patch_status(
                    kind="TuningJob", namespace=kube.namespace, name="race", patch=patch
                )

        start.wait()
        asyncio.run(run())

    def runner_side() -> None:
        writer = StatusWriter(
            target=ObjectRef(namespace=kube.namespace, name="race", uid=uid), api=runner_client
        )
        start.wait()
        for i in range(rounds):
            writer.patch(
                {
                    "progress": f"{i + 1}/{rounds}",
                    "trials": {"completed": i + 1, "failed": 0, "planned": rounds},
                    "topTrials": [{"trial": i, "stage": "s1", "params": {}, "score": 1.0}],
                    "report": {"stage": "s1", "phase": "Running", "trials": {"completed": i + 1}},
                    "reproducibility": {"dataset": {"rows": i + 1}},
                }
            )

    def guarded(fn: Any) -> Any:
        def run() -> None:
            try:
                fn()
            except BaseException as error:  # re-raised in the test's thread
                errors.append(error)

        return run

    threads = [threading.Thread(target=guarded(f)) for f in (operator_side, runner_side)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    operator_client.close()
    runner_client.close()
    assert not errors, errors

    status = api.get(TUNINGJOBS, "race")["status"]
    assert status["message"] == f"operator {rounds - 1}"
    assert status["observedGeneration"] == rounds
    assert len(status["stages"]) == rounds and status["currentStage"] == f"s{rounds - 1}"
    assert status["progress"] == f"{rounds}/{rounds}"
    assert status["trials"]["completed"] == rounds
    assert status["report"]["trials"]["completed"] == rounds
    assert status["reproducibility"] == {"seed": 7, "dataset": {"rows": rounds}}

    # Every stored version: neither side's counter ever went back (no update was undone).
    versions = [v["status"] for v in kube.history(TUNINGJOBS, "race") if v and "status" in v]
    ours = [v.get("observedGeneration", 0) for v in versions]
    theirs = [v.get("trials", {}).get("completed", 0) for v in versions]
    assert ours == sorted(ours) and theirs == sorted(theirs)
    assert all(v.get("progress") != "stale" for v in versions)
    assert len(versions) >= 2 * rounds  # every write landed as its own version
    calls = [c for c in kube.calls(plural="tuningjobs", verb="patch") if c.subresource == "status"]
    assert {c.status for c in calls} == {200}
    assert {c.content_type for c in calls} == {"application/merge-patch+json"}
    actors = [c.actor for c in calls]
    switches = sum(a != b for a, b in itertools.pairwise(actors))
    assert switches >= 10, "the two writers did not interleave"


def test_the_ledger_of_a_finished_search_outlives_its_pods(cluster: Cluster) -> None:
    """Pods and Jobs of a search are gone; `kubetune trials` still reads every trial."""
    spec = copy.deepcopy(PROGRESSIVE)
    spec["search"] = {"method": "random", "trials": 5, "seed": 3}
    cluster.apply("TuningJob", "small", spec)
    status = cluster.wait_phase("small", ("Succeeded", "Failed"))
    assert status["phase"] == "Succeeded", cluster.explain("small")
    for pod in cluster.sim.pods():
        cluster.api.delete(PODS, pod.name)
    cluster.api.delete(JOBS, "small-s1-random")
    shown = cluster.kubetune("trials", "small")
    assert shown.returncode == 0, shown.stderr
    rows = [line.split() for line in shown.stdout.splitlines()[2:] if line.strip()]
    assert [int(r[0]) for r in rows] == list(range(5))
    maps = cluster.api.list(CONFIGMAPS, label_selector="kubetune.io/ledger=true")
    assert [m["metadata"]["name"] for m in maps] == [f"{ledger_prefix('small')}-0"]
    (owner,) = maps[0]["metadata"]["ownerReferences"]
    assert owner["kind"] == "TuningJob" and owner["uid"] == cluster.get("small")["metadata"]["uid"]
    missing = cluster.kubetune("trials", "nothere")
    assert missing.returncode != 0
    assert "nothere" in missing.stderr


def test_suspending_a_running_search_stops_its_runner_and_resuming_continues_the_stage(
    cluster: Cluster,
) -> None:
    planned = SLOW_STAGE["search"]["trials"]
    job = "nap-s1-random"
    cluster.apply("TuningJob", "nap", SLOW_STAGE)
    first = cluster.sim.wait_running(job)
    wait_for(lambda: ledger_keys(cluster, "nap") >= 3, timeout=60, interval=0.05)
    cluster.api.patch(TUNINGJOBS, "nap", {"spec": {"suspend": True}})
    cluster.wait_phase("nap", "Suspended", timeout=20)
    wait_for(lambda: not first.running, timeout=10, message="the suspended runner still runs")
    body = cluster.job(job)
    assert body is not None and body["spec"]["suspend"] is True
    assert first.killed == "Suspended"
    done_first = len(writes(cluster, first.actor, "configmaps"))
    assert done_first < planned

    cluster.api.patch(TUNINGJOBS, "nap", {"spec": {"suspend": False}})
    status = cluster.wait_phase("nap", ("Succeeded", "Failed"))
    assert status["phase"] == "Succeeded", cluster.explain("nap")
    (_, second) = cluster.sim.pods(job)
    assert second.exit_code == 0
    assert done_first + len(writes(cluster, second.actor, "configmaps")) == planned
    assert [r.number for r in ledger_trials(cluster, "nap")] == list(range(planned))
    reasons = [reason for _, reason, _ in cluster.events("nap")]
    assert reasons == ["Started", "Suspended", "Resumed", "Succeeded"]
    body = cluster.job(job)
    assert body is not None and "failed" not in body["status"]  # a suspension is no failure


def test_a_stage_past_its_deadline_fails_the_search_with_the_reason(cluster: Cluster) -> None:
    spec = copy.deepcopy(SLOW_STAGE)
    spec["runner"] = {"timeoutSeconds": 2}
    cluster.apply("TuningJob", "late", spec)
    status = cluster.wait_phase("late", ("Succeeded", "Failed"))
    assert status["phase"] == "Failed", cluster.explain("late")
    (pod,) = cluster.sim.pods("late-s1-random")
    assert pod.killed == "DeadlineExceeded"
    assert "ran past runner.timeoutSeconds" in status["message"]
    condition = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert condition["reason"] == "JobFailed"
    assert "ran past runner.timeoutSeconds" in condition["message"]
    assert [e[1] for e in cluster.events("late") if e[0] == "Warning"] == ["Failed"]


def test_an_operator_restart_mid_stage_leaves_the_running_stage_alone(cluster: Cluster) -> None:
    job = "calm-s1-random"
    cluster.apply("TuningJob", "calm", SLOW_STAGE)
    pod = cluster.sim.wait_running(job)
    wait_for(lambda: ledger_keys(cluster, "calm") >= 2, timeout=60, interval=0.05)
    cluster.operator.restart()
    status = cluster.wait_phase("calm", ("Succeeded", "Failed"))
    assert status["phase"] == "Succeeded", cluster.explain("calm")
    assert cluster.sim.pods() == [pod] and pod.exit_code == 0
    assert cluster.job_names() == [job]
    reasons = [reason for _, reason, _ in cluster.events("calm")]
    assert reasons == ["Started", "Succeeded"]


FAST_STAGE: dict[str, Any] = {
    **PROGRESSIVE,
    "search": {"method": "random", "trials": 4, "seed": 3},
}


def run_with_transient_errors(cluster: Cluster, name: str) -> dict[str, Any]:
    """A stage whose runner meets one 503 on a status write and one on a ledger write."""
    job = f"{name}-s1-random"
    for resource in ("tuningjobs", "configmaps"):
        cluster.kube.emulator.inject_error(
            verb="patch",
            resource=resource,
            actor=job,  # the runner's pods (their token is the pod's name)
            status=503,
            reason="ServiceUnavailable",
            message="the API server is shedding load",
        )
    cluster.apply("TuningJob", name, FAST_STAGE)
    status = cluster.wait_phase(name, ("Succeeded", "Failed"))
    assert status["phase"] == "Succeeded", cluster.explain(name)
    failed = [c for c in cluster.kube.calls(status=503) if c.actor.startswith(job)]
    assert {c.plural for c in failed} == {"tuningjobs", "configmaps"}
    return status


def test_transient_api_errors_in_a_stage_lose_no_trial(cluster: Cluster) -> None:
    status = run_with_transient_errors(cluster, "gusty")
    assert [r.number for r in ledger_trials(cluster, "gusty")] == list(range(4))
    assert status["trials"]["completed"] == 4


def test_a_transient_api_error_on_a_ledger_write_does_not_cost_a_pod(cluster: Cluster) -> None:
    run_with_transient_errors(cluster, "breezy")
    pods = cluster.sim.pods("breezy-s1-random")
    assert [p.exit_code for p in pods] == [0], [p.message for p in pods]


def test_a_queued_stage_waits_for_kueue_to_admit_it(cluster: Cluster) -> None:
    spec = copy.deepcopy(FAST_STAGE)
    spec["queueName"] = "team-a"
    cluster.apply("TuningJob", "queued", spec)
    job = "queued-s1-random"
    body = wait_for(lambda: cluster.job(job), timeout=10)
    assert body["spec"]["suspend"] is True
    assert body["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    time.sleep(2.5)  # two resync passes: the operator must not start it itself
    assert cluster.sim.pods() == []
    assert cluster.job(job)["spec"]["suspend"] is True  # type: ignore[index]
    conditions = {c["type"]: c for c in cluster.job(job)["status"]["conditions"]}  # type: ignore[index]
    assert conditions["Suspended"]["status"] == "True"

    cluster.api.patch(JOBS, job, {"spec": {"suspend": False}})  # Kueue admits the workload
    status = cluster.wait_phase("queued", ("Succeeded", "Failed"))
    assert status["phase"] == "Succeeded", cluster.explain("queued")
    assert [p.exit_code for p in cluster.sim.pods()] == [0]
    operator_job_writes = [
        c
        for c in cluster.kube.calls(plural="jobs", name=job)
        if c.actor.startswith(OPERATOR_ACTOR) and c.verb in ("patch", "update")
    ]
    assert operator_job_writes == []


def test_deleting_a_running_comparison_stops_every_model(cluster: Cluster) -> None:
    spec = comparison_spec("parallel")
    spec["dataset"] = {"builtin": "breast_cancer"}
    spec["models"] = [
        {"name": name, "estimator": {"name": "RandomForestClassifier"}} for name in ("a", "b")
    ]
    spec["search"]["trials"] = 20
    cluster.apply("ModelComparison", "gone", spec)
    wait_for(lambda: len([p for p in cluster.sim.pods() if p.running]) == 2, timeout=30)

    cluster.api.delete(MODELCOMPARISONS, "gone")
    wait_for(lambda: cluster.api.find(MODELCOMPARISONS, "gone") is None, timeout=15)
    wait_for(lambda: cluster.api.list(TUNINGJOBS) == [], timeout=15)
    wait_for(lambda: cluster.job_names() == [], timeout=15)
    wait_for(lambda: cluster.sim.processes_alive() == [], timeout=15)
    pods = cluster.sim.pods()
    assert len(pods) == 2 and all(p.exit_code != 0 for p in pods)
    assert cluster.api.list(PODS) == []
