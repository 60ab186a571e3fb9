"""Prove the operator-test harness with a tiny throwaway kopf operator (not the project's)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kopf
import pytest
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from tests.operator.harness import (
    JOBS,
    TUNINGJOBS,
    ApiClient,
    ApiError,
    MockApiServer,
    run_operator,
    wait_for,
)

pytestmark = pytest.mark.operator

HANDLER_TOKEN = "kubetune-operator-handlers"
registry = kopf.OperatorRegistry()


def stage_job_name(name: str) -> str:
    return f"{name}-stage-0"


def job(name: str, **labels: str) -> dict[str, Any]:
    """A minimal valid Job (the kubernetes 37 client validates what it reads)."""
    container = {"name": "trial", "image": "kubetune:test"}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [container]}}},
    }


@kopf.on.create("kubetune.io", "v1alpha1", "tuningjobs", registry=registry)
async def start_first_stage(
    name: str, namespace: str, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    memo.created.append(name)
    child = job(stage_job_name(name), **{"kubetune.io/tuningjob": name})
    kopf.adopt(child, owner=body)
    batch = k8s_client.BatchV1Api(memo.k8s)
    try:
        await asyncio.to_thread(batch.create_namespaced_job, namespace, child)
    except k8s_client.ApiException as exc:
        if exc.status != 409:  # the deterministic name exists: already done
            raise
    patch.status["phase"] = "Running"
    patch.status["jobName"] = stage_job_name(name)
    kopf.info(body, reason="StageStarted", message=f"created Job {stage_job_name(name)}")
    kopf.info(body, reason="Progress", message="stage 0 of 1")


@kopf.on.update("kubetune.io", "v1alpha1", "tuningjobs", field="spec", registry=registry)
async def spec_changed(name: str, memo: kopf.Memo, **_: Any) -> None:
    memo.updated.append(name)


@kopf.on.delete("kubetune.io", "v1alpha1", "tuningjobs", registry=registry)
async def clean_up(name: str, memo: kopf.Memo, **_: Any) -> None:
    memo.deleted.append(name)


@pytest.fixture
def memo(kube: MockApiServer) -> kopf.Memo:
    k8s = kube.kubernetes_client(token=HANDLER_TOKEN)
    return kopf.Memo(created=[], updated=[], deleted=[], k8s=k8s)


def tuning_job(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningJob",
        "metadata": {"name": name},
        "spec": {"estimator": {"name": "RandomForestClassifier"}, **spec},
    }


def phase_of(api: ApiClient, name: str) -> str | None:
    return api.get(TUNINGJOBS, name).get("status", {}).get("phase")


# ---- the emulator on its own ---------------------------------------------------------------


def test_metadata_generation_and_status_subresource(api: ApiClient) -> None:
    created = api.create(TUNINGJOBS, tuning_job("a", seed=1) | {"status": {"phase": "Fake"}})
    meta = created["metadata"]
    assert meta["generation"] == 1
    assert meta["uid"]
    assert meta["creationTimestamp"].endswith("Z")
    assert meta["namespace"] == api.namespace
    assert "status" not in created  # status is dropped on create (status subresource)
    rv1 = int(meta["resourceVersion"])

    labelled = api.patch(TUNINGJOBS, "a", {"metadata": {"labels": {"team": "ml"}}})
    assert labelled["metadata"]["generation"] == 1
    rv2 = int(labelled["metadata"]["resourceVersion"])
    assert rv2 > rv1

    respecced = api.patch(TUNINGJOBS, "a", {"spec": {"seed": 2}})
    assert respecced["metadata"]["generation"] == 2
    rv3 = int(respecced["metadata"]["resourceVersion"])
    assert rv3 > rv2

    same = api.patch(TUNINGJOBS, "a", {"spec": {"seed": 2}})
    assert same["metadata"]["resourceVersion"] == str(rv3)  # a no-op write is not a new version

    ignored = api.patch(TUNINGJOBS, "a", {"status": {"phase": "Sneaky"}})
    assert "status" not in ignored

    status = api.patch_status(TUNINGJOBS, "a", {"phase": "Running"} | {"observedGeneration": 2})
    assert status["status"] == {"phase": "Running", "observedGeneration": 2}
    assert status["metadata"]["generation"] == 2
    via_status = api.patch(
        TUNINGJOBS, "a", {"spec": {"seed": 99}, "status": {"phase": "Done"}}, subresource="status"
    )
    assert via_status["spec"]["seed"] == 2  # the status subresource changes only status
    assert via_status["status"]["phase"] == "Done"
    assert via_status["metadata"]["generation"] == 2


def test_not_found_conflicts_and_generate_name(api: ApiClient) -> None:
    with pytest.raises(ApiError) as missing:
        api.get(TUNINGJOBS, "nope")
    assert (missing.value.status, missing.value.reason) == (404, "NotFound")
    with pytest.raises(ApiError) as unknown:
        api.list("kubetune.io/v1alpha1/tuningjob")  # a typo in the plural
    assert unknown.value.status == 404

    api.create(TUNINGJOBS, tuning_job("a"))
    with pytest.raises(ApiError) as exists:
        api.create(TUNINGJOBS, tuning_job("a"))
    assert (exists.value.status, exists.value.reason) == (409, "AlreadyExists")

    first = api.create("v1/configmaps", {"metadata": {"generateName": "cm-"}, "data": {}})
    second = api.create("v1/configmaps", {"metadata": {"generateName": "cm-"}, "data": {}})
    names = {first["metadata"]["name"], second["metadata"]["name"]}
    assert len(names) == 2
    assert all(name.startswith("cm-") and len(name) == 8 for name in names)


def test_optimistic_concurrency(api: ApiClient) -> None:
    rv = api.create(TUNINGJOBS, tuning_job("a"))["metadata"]["resourceVersion"]
    api.patch(TUNINGJOBS, "a", {"metadata": {"labels": {"x": "1"}}})

    with pytest.raises(ApiError) as stale:
        api.patch(TUNINGJOBS, "a", {"metadata": {"resourceVersion": rv, "labels": {"x": "2"}}})
    assert (stale.value.status, stale.value.reason) == (409, "Conflict")

    with pytest.raises(ApiError) as failed_test:
        api.patch(
            TUNINGJOBS,
            "a",
            [
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                {"op": "add", "path": "/metadata/finalizers", "value": ["x"]},
            ],
            patch_type="json",
        )
    assert failed_test.value.status == 422

    current = api.get(TUNINGJOBS, "a")
    fresh = current["metadata"]["resourceVersion"]
    ok = api.patch(
        TUNINGJOBS,
        "a",
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": fresh},
            {"op": "add", "path": "/metadata/finalizers", "value": ["x"]},
        ],
        patch_type="json",
    )
    assert ok["metadata"]["finalizers"] == ["x"]

    with pytest.raises(ApiError) as stale_put:
        api.replace(TUNINGJOBS, "a", current)  # carries the now-stale resourceVersion
    assert stale_put.value.status == 409
    with pytest.raises(ApiError) as strategic:
        api.patch(TUNINGJOBS, "a", {"spec": {}}, patch_type="strategic")
    assert strategic.value.status == 415  # as in Kubernetes, for custom resources


def test_delete_honours_finalizers(kube: MockApiServer, api: ApiClient) -> None:
    api.create(TUNINGJOBS, tuning_job("a") | {"metadata": {"name": "a", "finalizers": ["f"]}})
    marked = api.delete(TUNINGJOBS, "a")
    assert marked["metadata"]["deletionTimestamp"]
    assert api.get(TUNINGJOBS, "a")["metadata"]["finalizers"] == ["f"]
    with pytest.raises(ApiError) as refused:
        api.patch(TUNINGJOBS, "a", {"metadata": {"finalizers": ["f", "g"]}})
    assert refused.value.status == 422

    api.patch(TUNINGJOBS, "a", {"metadata": {"finalizers": None}})
    assert api.find(TUNINGJOBS, "a") is None
    history = kube.history(TUNINGJOBS, "a")
    assert history[-1] is None
    versions = [int(v["metadata"]["resourceVersion"]) for v in history[:-1]]
    assert versions == sorted(versions)

    api.create(JOBS, {"metadata": {"name": "j"}, "spec": {}})
    api.delete(JOBS, "j")
    assert api.find(JOBS, "j") is None


def test_watch_resumes_from_resource_version(api: ApiClient, kubeconfig: Path) -> None:
    api.create(JOBS, job("old", app="kt"))
    since = api.create(JOBS, job("other"))["metadata"]
    api.patch(JOBS, "old", {"status": {"active": 1}}, subresource="status")
    api.create(JOBS, job("new", app="kt"))

    batch = k8s_client.BatchV1Api(k8s_config.new_client_from_config(config_file=str(kubeconfig)))
    stream = k8s_watch.Watch().stream(
        batch.list_namespaced_job,
        api.namespace,
        resource_version=since["resourceVersion"],
        label_selector="app=kt",
        timeout_seconds=1,
    )
    seen = [(event["type"], event["object"].metadata.name) for event in stream]
    assert seen == [("MODIFIED", "old"), ("ADDED", "new")]  # nothing before `since`
    raw = api.watch(JOBS, resource_version=since["resourceVersion"], timeout_seconds=0.2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in raw] == [
        ("MODIFIED", "old"),
        ("ADDED", "new"),
    ]
    initial = api.watch(JOBS, send_initial_events=True, timeout_seconds=0.2)
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in initial] == [
        ("ADDED", "old"),
        ("ADDED", "other"),
        ("ADDED", "new"),
        ("BOOKMARK", None),
    ]
    batch.delete_namespaced_job("other", api.namespace)
    assert api.find(JOBS, "other") is None
    assert [j.metadata.name for j in batch.list_namespaced_job(api.namespace).items] == [
        "old",
        "new",
    ]
    with pytest.raises(ApiError) as set_based:
        api.jobs(label_selector="app in (kt)")
    assert set_based.value.status == 400  # not modelled, so not silently ignored


def test_kubernetes_client_in_a_subprocess(api: ApiClient, kubeconfig: Path) -> None:
    api.create(JOBS, job("trial-job"))
    code = (
        "from kubernetes import client, config\n"
        "config.load_kube_config()\n"
        "jobs = client.BatchV1Api().list_namespaced_job('kubetune-test').items\n"
        "print(','.join(job.metadata.name for job in jobs))\n"
    )
    env = os.environ | {"KUBECONFIG": str(kubeconfig)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "trial-job"


def test_injected_errors_and_recorded_calls(kube: MockApiServer, api: ApiClient) -> None:
    kube.emulator.inject_error(verb="create", resource="jobs", status=503, times=1)
    with pytest.raises(ApiError) as injected:
        api.create(JOBS, {"metadata": {"name": "j"}, "spec": {}})
    assert injected.value.status == 503
    assert api.find(JOBS, "j") is None  # the failed request changed nothing
    api.create(JOBS, {"metadata": {"name": "j"}, "spec": {}})

    calls = kube.call_dicts(actor="harness")
    assert [(c["verb"], c["rbac_resource"], c["status"]) for c in calls] == [
        ("create", "jobs", 503),
        ("get", "jobs", 404),
        ("create", "jobs", 201),
    ]
    assert calls[0]["group"] == "batch"
    assert calls[0]["namespace"] == api.namespace
    json.dumps(calls)  # plain data, ready to dump or replay


# ---- the real kopf operator ------------------------------------------------------------------


def test_operator_creates_job_patches_status_and_posts_events(
    kube: MockApiServer, api: ApiClient, memo: kopf.Memo
) -> None:
    with run_operator(kube, registry=registry, memo=memo) as op:
        owner = api.create(TUNINGJOBS, tuning_job("forest"))
        wait_for(lambda: phase_of(api, "forest") == "Running", message="status.phase")
        child = api.get(JOBS, "forest-stage-0")
        assert child["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
        assert api.jobs(label_selector="kubetune.io/tuningjob=forest") == [child]
        events = wait_for(lambda: len(ev := api.events(involved_name="forest")) >= 2 and ev)
        assert {e["reason"] for e in events} == {"StageStarted", "Progress"}
        assert len({e["metadata"]["name"] for e in events}) == 2  # generateName at work
        assert all(e["metadata"]["name"].startswith("kopf-event-") for e in events)
        assert memo.created == ["forest"]

        body = api.get(TUNINGJOBS, "forest")
        assert body["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
        assert body["status"]["jobName"] == "forest-stage-0"
        assert body["metadata"]["generation"] == 1

        verbs = {(c.verb, c.rbac_resource) for c in op.calls() if c.is_resource}
        assert {
            ("list", "tuningjobs"),
            ("watch", "tuningjobs"),
            ("patch", "tuningjobs"),
            ("patch", "tuningjobs/status"),
            ("create", "events"),
        } <= verbs
        json_patches = op.calls(verb="patch", content_type="application/json-patch+json")
        assert json_patches
        assert all(c.status == 200 for c in json_patches)  # kopf's resourceVersion test passed
        handler_calls = kube.calls(actor=HANDLER_TOKEN)
        assert [(c.verb, c.resource) for c in handler_calls] == [("create", JOBS)]
    assert op.stop_seconds[-1] < 2.0  # far below the ~5 s of running kopf in the test's loop


def test_restart_does_not_rerun_create_and_catches_up(
    kube: MockApiServer, api: ApiClient, memo: kopf.Memo
) -> None:
    with run_operator(kube, registry=registry, memo=memo) as op:
        api.create(TUNINGJOBS, tuning_job("first"))
        wait_for(lambda: phase_of(api, "first") == "Running")

        op.stop()  # as if the pod died mid-stage; the mock keeps its state
        api.create(TUNINGJOBS, tuning_job("second"))
        op.start()
        wait_for(lambda: phase_of(api, "second") == "Running")

        op.restart()
        api.patch(TUNINGJOBS, "first", {"spec": {"seed": 7}})
        wait_for(lambda: memo.updated == ["first"], message="the update handler")
        time.sleep(0.2)  # give a wrong re-run of the create handler a chance to show up
        assert memo.created == ["first", "second"]
        assert {j["metadata"]["name"] for j in api.jobs()} == {
            "first-stage-0",
            "second-stage-0",
        }
        assert api.get(TUNINGJOBS, "first")["metadata"]["generation"] == 2

        assert len(op.tokens) == 3
        last_watch = op.calls(verb="watch")[-1]
        assert last_watch.query["resourceVersion"] != "0"  # resumed from the list's version
    assert max(op.start_seconds) < 5.0


def test_operator_deletes_through_its_finalizer(
    kube: MockApiServer, api: ApiClient, memo: kopf.Memo
) -> None:
    with run_operator(kube, registry=registry, memo=memo):
        api.create(TUNINGJOBS, tuning_job("doomed"))
        wait_for(lambda: api.get(TUNINGJOBS, "doomed")["metadata"].get("finalizers"))
        marked = api.delete(TUNINGJOBS, "doomed")
        assert marked["metadata"]["deletionTimestamp"]
        wait_for(lambda: api.find(TUNINGJOBS, "doomed") is None, message="finalizer removal")
        assert memo.deleted == ["doomed"]
    versions = [v for v in kube.history(TUNINGJOBS, "doomed") if v is not None]
    assert versions[-1]["metadata"]["deletionTimestamp"]


def test_operator_with_initial_streaming_settings(
    kube: MockApiServer, api: ApiClient, memo: kopf.Memo
) -> None:
    api.create(TUNINGJOBS, tuning_job("early"))  # exists before the operator starts

    def streaming(settings: kopf.OperatorSettings) -> None:
        settings.watching.initial_streaming = True

    with run_operator(kube, registry=registry, memo=memo, settings_hook=streaming) as op:
        wait_for(lambda: phase_of(api, "early") == "Running")
        assert memo.created == ["early"]
        assert not op.calls(verb="list", plural="tuningjobs")  # no LIST: the watch streams
        assert op.calls(verb="watch")[0].query["sendInitialEvents"] == "true"
