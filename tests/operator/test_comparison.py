"""The real operator reconciling ModelComparisons end to end against the mock API.

The operator drives the child TuningJobs as well (one per model, named ``<comparison>-<model>``,
each with a single ``s1-random`` stage); the test plays their Jobs and runners.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests.operator.actors import World, best_trial, comparison, task_of, trial
from tests.operator.harness import MODELCOMPARISONS, TUNINGJOBS, wait_for

from kubetune.api.spec import ModelComparisonSpec
from kubetune_operator.children import LABEL_COMPARISON, LABEL_MODEL, MANAGED_BY

pytestmark = pytest.mark.operator

STAGE = "s1-random"
MC = MODELCOMPARISONS
FOLDS = {
    "logreg": [0.90, 0.92, 0.91],
    "svc": [0.97, 0.98, 0.99],
    "knn": [0.93, 0.95, 0.94],
}


def child_succeeds(world: World, child: str, folds: list[float]) -> None:
    """The child's only stage runs: its Job, its runner's report and best trial, success."""
    world.wait_job(f"{child}-{STAGE}")
    best = best_trial(STAGE, 1, {"C": 1.0}, folds)
    top = [trial(STAGE, 1, best["params"], best["score"])]
    world.finish_stage(child, STAGE, top, completed=2, best=best)


def child_fails(world: World, child: str) -> None:
    world.wait_job(f"{child}-{STAGE}")
    world.job_failed(f"{child}-{STAGE}", "DeadlineExceeded", "Job was active longer")


def test_parallel_comparison_creates_every_child_at_once_with_the_shared_seed_and_folds(
    world: World,
) -> None:
    body = comparison("cmp", ["logreg", "svc", "knn"], labels={"team": "ml"})
    body["spec"]["search"]["seed"] = None  # the operator chooses one seed for every model
    created = world.create(body)
    children = wait_for(lambda: len(c := world.children("cmp")) == 3 and c)
    seed = world.status("cmp", MC)["reproducibility"]["seed"]

    spec = ModelComparisonSpec.model_validate(body["spec"])
    for model in spec.models:
        child = children[f"cmp-{model.name}"]
        meta = child["metadata"]
        assert meta["labels"] == {
            MANAGED_BY: "kubetune-operator",
            LABEL_COMPARISON: "cmp",
            LABEL_MODEL: model.name,
        }
        (owner,) = meta["ownerReferences"]
        assert owner["kind"] == "ModelComparison" and owner["name"] == "cmp"
        assert owner["uid"] == created["metadata"]["uid"] and owner["controller"] is True
        assert child["spec"]["search"]["seed"] == seed
        assert child["spec"]["cv"] == {"folds": 3, "shuffle": True}
        assert child["spec"]["dataset"] == {"builtin": "iris"}
        assert child["spec"]["estimator"]["name"] == model.estimator.name
    # All at once: in one reconcile pass, i.e. with no status write of the comparison between
    # them (a later pass on a stale view may create one again and get 409, which is fine).
    creates = world.calls(verb="create", plural="tuningjobs")
    made = [c for c in creates if c.status == 201]
    assert [c.body["metadata"]["name"] for c in made] == ["cmp-logreg", "cmp-svc", "cmp-knn"]
    assert {c.status for c in creates} <= {201, 409}
    writes = [c.seq for c in world.status_writes("cmp", "modelcomparisons")]
    assert writes[0] < made[0].seq
    assert not [seq for seq in writes if made[0].seq < seq < made[-1].seq]
    for child in children:
        job = wait_for(lambda c=child: world.job(f"{c}-{STAGE}"))
        assert job["metadata"]["labels"]["kubetune.io/tuningjob"] == child
    status = world.wait_phase("cmp", "Running", MC)
    assert status["models"] == {"completed": 0, "failed": 0, "planned": 3}
    wait_for(lambda: "Started" in world.reasons("cmp"))


def test_sequential_comparison_runs_one_child_at_a_time(world: World) -> None:
    world.create(comparison("seq", ["logreg", "svc"], mode="sequential"))
    world.wait_job(f"seq-logreg-{STAGE}")
    world.settle()
    assert list(world.children("seq")) == ["seq-logreg"]

    child_succeeds(world, "seq-logreg", FOLDS["logreg"])
    world.wait_phase("seq-logreg", "Succeeded")
    wait_for(lambda: "seq-svc" in world.children("seq"))
    # The second child was created only after the first one's status said Succeeded.
    finished = next(
        c
        for c in world.calls(verb="patch", plural="tuningjobs", name="seq-logreg")
        if c.subresource == "status" and c.body["status"].get("phase") == "Succeeded"
    )
    (second,) = [c for c in world.calls(verb="create", plural="tuningjobs") if c.status == 201][1:]
    assert second.body["metadata"]["name"] == "seq-svc" and second.seq > finished.seq

    child_succeeds(world, "seq-svc", FOLDS["svc"])
    status = world.wait_phase("seq", "Succeeded", MC)
    assert [r["model"] for r in status["ranking"]] == ["svc", "logreg"]


def test_max_concurrent_caps_the_children_running_at_once(world: World) -> None:
    world.create(comparison("cap", ["logreg", "svc", "knn"], max_concurrent=2))
    wait_for(lambda: len(world.children("cap")) == 2)
    world.settle()
    assert sorted(world.children("cap")) == ["cap-logreg", "cap-svc"]

    child_succeeds(world, "cap-svc", FOLDS["svc"])
    wait_for(lambda: "cap-knn" in world.children("cap"))
    running = [
        n
        for n, c in world.children("cap").items()
        if c.get("status", {}).get("phase") != "Succeeded"
    ]
    assert sorted(running) == ["cap-knn", "cap-logreg"]


def test_ranking_names_the_best_model_with_significance_and_ranks_a_failed_model_last(
    world: World,
) -> None:
    world.create(comparison("rank", ["logreg", "svc", "knn"]))
    child_fails(world, "rank-knn")
    child_succeeds(world, "rank-logreg", FOLDS["logreg"])
    child_succeeds(world, "rank-svc", FOLDS["svc"])

    status = world.wait_phase("rank", "Succeeded", MC)
    ranking = status["ranking"]
    assert [(r["rank"], r["model"], r["phase"]) for r in ranking] == [
        (1, "svc", "Succeeded"),
        (2, "logreg", "Succeeded"),
        (3, "knn", "Failed"),
    ]
    assert ranking[0]["score"] == pytest.approx(0.98) and ranking[0]["tuningJob"] == "rank-svc"
    assert ranking[0]["params"] == {"C": 1.0}
    assert ranking[2].get("score") is None and "runner.timeoutSeconds" in ranking[2]["message"]
    assert status["bestModel"] == "svc" and status["bestScore"] == pytest.approx(0.98)
    significance = status["significance"]
    assert significance["winner"] == "svc" and significance["runnerUp"] == "logreg"
    assert significance["meanDifference"] == pytest.approx(0.07)
    assert 0 <= significance["pValue"] <= 1
    assert significance["significant"] == (significance["pValue"] < 0.05)
    assert status["models"] == {"completed": 2, "failed": 1, "planned": 3}
    succeeded = {c["type"]: c for c in status["conditions"]}["Succeeded"]
    assert succeeded["status"] == "True" and succeeded["reason"] == "ComparisonSucceeded"

    wait_for(lambda: "Succeeded" in world.reasons("rank"))
    events = world.events("rank")
    (done,) = [e for e in events if e[1] == "Succeeded"]
    assert "best model svc (SVC)" in done[2] and "0.9800" in done[2] and "logreg" in done[2]
    assert [e[1] for e in events if e[0] == "Warning"] == ["ModelFailed"]


def test_a_comparison_fails_only_when_every_model_fails(world: World) -> None:
    world.create(comparison("doomed", ["logreg", "svc"]))
    child_fails(world, "doomed-logreg")
    world.wait_phase("doomed-logreg", "Failed")
    world.settle(0.5)
    assert world.status("doomed", MC)["phase"] == "Running"  # one model failing is not enough

    child_fails(world, "doomed-svc")
    status = world.wait_phase("doomed", "Failed", MC)
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["reason"] == "AllModelsFailed" and "every model failed" in failed["message"]
    assert status["models"] == {"completed": 0, "failed": 2, "planned": 2}
    assert "bestModel" not in status
    # Each model's failure, then the verdict, in the order the operator posts them.
    wait_for(
        lambda: (
            [r for t, r, _ in world.events("doomed") if t == "Warning"]
            == ["ModelFailed", "ModelFailed", "Failed"]
        ),
        message=lambda: f"warnings: {world.events('doomed')}",
    )


def test_suspending_a_comparison_suspends_its_children_and_resuming_resumes_them(
    world: World,
) -> None:
    world.create(comparison("paused", ["logreg", "svc"]))
    for model in ("logreg", "svc"):
        world.wait_job(f"paused-{model}-{STAGE}")
        world.job_running(f"paused-{model}-{STAGE}")

    world.edit("paused", {"suspend": True}, MC)
    world.wait_phase("paused", "Suspended", MC)
    for model in ("logreg", "svc"):
        child = f"paused-{model}"
        assert wait_for(lambda c=child: world.get(c)["spec"].get("suspend") is True)
        world.wait_phase(child, "Suspended")
        assert wait_for(lambda c=child: world.job(f"{c}-{STAGE}")["spec"]["suspend"] is True)

    world.edit("paused", {"suspend": False}, MC)
    world.wait_phase("paused", "Running", MC)
    for model in ("logreg", "svc"):
        child = f"paused-{model}"
        world.wait_phase(child, "Running")
        assert wait_for(lambda c=child: world.job(f"{c}-{STAGE}")["spec"]["suspend"] is False)
    child_writes = [
        c.body
        for c in world.calls(verb="patch", plural="tuningjobs")
        if not c.subresource and "spec" in c.body
    ]
    # Suspends first, then resumes (a pass on a stale view may repeat one: it is idempotent).
    values = [w["spec"]["suspend"] for w in child_writes]
    assert values == sorted(values, reverse=True) and values.count(False) >= 2
    assert values.count(True) >= 2


def test_a_budget_edit_reaches_the_running_children_at_their_next_stage(world: World) -> None:
    stages = [{"method": "random", "trials": 2}, {"method": "random", "trials": 3}]
    search = {"method": "progressive", "stages": stages, "seed": 11}
    world.create(comparison("grow", ["logreg", "svc"], search=search))
    running = {m: world.wait_job(f"grow-{m}-s1-random") for m in ("logreg", "svc")}

    bigger = [stages[0], {"method": "random", "trials": 6}]
    world.edit("grow", {"search": {**search, "stages": bigger}}, MC)
    for model in ("logreg", "svc"):
        child = f"grow-{model}"
        assert wait_for(lambda c=child: world.get(c)["spec"]["search"]["stages"][1]["trials"] == 6)
        assert world.get(child)["spec"]["search"]["seed"] == 11
    wait_for(lambda: "ModelsUpdated" in world.reasons("grow"))
    world.settle()
    # The stages already running keep their frozen plan: their Jobs were never written again.
    for model, job in running.items():
        assert world.job(f"grow-{model}-s1-random") == job
    assert world.calls(verb="patch", plural="jobs") == []

    best = best_trial("s1-random", 1, {"C": 1.0}, FOLDS["svc"])
    top = [trial("s1-random", 1, best["params"], best["score"])]
    world.finish_stage("grow-svc", "s1-random", top, completed=2, best=best)
    assert task_of(world.wait_job("grow-svc-s2-random")).plan.trials == 6
    assert world.reasons("grow").count("ModelsUpdated") == 1


def test_deleting_a_comparison_deletes_its_children_and_their_jobs(world: World) -> None:
    world.create(comparison("gone", ["logreg", "svc"]))
    world.wait_job(f"gone-logreg-{STAGE}")
    world.wait_job(f"gone-svc-{STAGE}")
    world.settle(0.3)
    # kopf's first attempt to release the comparison's finalizer fails: for a while it is
    # "being deleted" while its children's deletions come in as events.
    world.kube.emulator.inject_error(
        verb="patch", resource="modelcomparisons", name="gone", actor=world.operator.token
    )
    world.api.delete(MC, "gone")
    wait_for(lambda: world.api.find(MC, "gone") is None)
    wait_for(lambda: world.api.list(TUNINGJOBS) == [])
    wait_for(lambda: world.job_names() == [])
    world.settle()
    assert world.api.list(TUNINGJOBS) == [] and world.job_names() == []
    (delete,) = world.kube.calls(verb="delete", plural="modelcomparisons")
    late = [c for c in world.calls(verb="create") if c.seq > delete.seq and c.plural != "events"]
    assert late == []  # no child (or Job) made again while going


def test_an_invalid_comparison_fails_with_invalid_spec_and_creates_nothing(
    start_operator: Callable[..., World],
) -> None:
    world = start_operator()
    body = comparison("mixed", ["logreg", "svc"])
    body["spec"]["models"].append({"name": "ridge", "estimator": {"name": "Ridge"}})
    world.create(body)
    status = world.wait_phase("mixed", "Failed", MC)
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["reason"] == "InvalidSpec" and "classifiers and regressors" in failed["message"]
    world.settle()
    assert world.api.list(TUNINGJOBS) == []
    assert [(t, r) for t, r, _ in world.events("mixed")] == [("Warning", "InvalidSpec")]
    assert len(world.status_writes("mixed", "modelcomparisons")) == 1
