"""The Job simulator on its own: does it play the Job controller and the kubelet faithfully?

Plain ``python -c`` commands instead of the runner, no operator: each test creates a Job in
the mock API and checks what Kubernetes would show (Job status, Pod status, processes).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.cluster.jobsim import JobSimulator
from tests.operator.harness import JOBS, PODS, ApiClient, MockApiServer, wait_for

pytestmark = pytest.mark.cluster

SLEEP = "import time; time.sleep(60)"


@pytest.fixture
def sim(kube: MockApiServer, tmp_path: Path) -> Iterator[JobSimulator]:
    """The simulator alone (conftest's ``sim`` also replays runner pods' requests against the
    runner's RBAC role, which these stand-in pods are not bound by)."""
    with JobSimulator(kube, tmp_path / "pods") as simulator:
        yield simulator
    assert simulator.processes_alive() == [], "a pod process outlived the test"
    assert simulator.errors == [], "the Job simulator failed"


def job(
    name: str,
    code: str,
    *,
    env: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    container = {
        "name": "runner",
        "image": "kubetune-runner:test",
        "command": ["python", "-c", textwrap.dedent(code)],
        "env": env or [],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app": "sim-test"}},
        "spec": {
            "backoffLimit": 2,
            "template": {
                "metadata": {"labels": {"app": "sim-test", "role": "worker"}},
                "spec": {"restartPolicy": "Never", "containers": [container]},
            },
            **spec,
        },
    }


def conditions(api: ApiClient, name: str) -> dict[str, dict[str, Any]]:
    status = api.get(JOBS, name).get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or [] if c["status"] == "True"}


def wait_condition(api: ApiClient, name: str, ctype: str, timeout: float = 20) -> dict[str, Any]:
    return wait_for(
        lambda: conditions(api, name).get(ctype),
        timeout=timeout,
        message=lambda: f"Job {name} has no {ctype}: {api.get(JOBS, name).get('status')}",
    )


def test_a_pod_runs_the_template_command_with_its_env_and_completes(
    kube: MockApiServer, sim: JobSimulator
) -> None:
    api = kube.client()
    code = """
        import os
        from kubernetes import client, config
        config.load_kube_config()  # KUBECONFIG: the mock API
        pod = client.CoreV1Api().read_namespaced_pod(os.environ["POD"], os.environ["NS"])
        print(pod.metadata.name, pod.metadata.labels["job-name"], os.environ["GREETING"])
        print("in-cluster" if "KUBERNETES_SERVICE_HOST" in os.environ else "outside")
    """
    env = [
        {"name": "GREETING", "value": "hello"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    api.create(JOBS, job("hello", code, env=env))
    complete = wait_condition(api, "hello", "Complete", timeout=30)
    assert complete["reason"] == "CompletionsReached"
    status = api.get(JOBS, "hello")["status"]
    assert status["succeeded"] == 1 and status["active"] == 0
    assert status["startTime"] and status["completionTime"]
    assert "SuccessCriteriaMet" in conditions(api, "hello")

    (pod,) = sim.pods("hello")
    assert pod.exit_code == 0 and pod.reason == "Completed", pod.stderr()
    assert pod.stdout().split() == [pod.name, "hello", "hello", "outside"]
    body = api.get(PODS, pod.name)
    labels = body["metadata"]["labels"]
    assert labels["job-name"] == "hello" and labels["role"] == "worker"
    assert labels["controller-uid"] == api.get(JOBS, "hello")["metadata"]["uid"]
    assert body["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert body["status"]["phase"] == "Succeeded"
    (container,) = body["status"]["containerStatuses"]
    assert container["name"] == "runner"
    assert container["state"]["terminated"]["exitCode"] == 0
    # The pod's own requests are recorded under its name.
    assert kube.calls(actor=pod.name, plural="pods", name=pod.name, verb="get")


def test_failed_pods_are_retried_up_to_the_backoff_limit(
    kube: MockApiServer, sim: JobSimulator
) -> None:
    api = kube.client()
    code = """
        import os, sys
        with open(os.environ["KUBETUNE_TERMINATION_LOG"], "w") as log:
            log.write("something broke\\n")
        sys.exit(3)
    """
    api.create(JOBS, job("flaky", code, backoffLimit=1))
    failed = wait_condition(api, "flaky", "Failed", timeout=30)
    assert failed["reason"] == "BackoffLimitExceeded"
    assert conditions(api, "flaky")["FailureTarget"]["reason"] == "BackoffLimitExceeded"
    assert api.get(JOBS, "flaky")["status"]["failed"] == 2
    pods = sim.pods("flaky")
    assert [p.exit_code for p in pods] == [3, 3]
    assert all(p.message == "something broke\n" for p in pods)
    terminated = api.get(PODS, pods[0].name)["status"]["containerStatuses"][0]["state"]
    assert terminated["terminated"] == {
        **terminated["terminated"],
        "exitCode": 3,
        "reason": "Error",
        "message": "something broke\n",
    }


def test_the_pod_failure_policy_fails_the_job_at_once_and_logs_stand_in_for_a_message(
    kube: MockApiServer, sim: JobSimulator
) -> None:
    api = kube.client()
    code = """
        import sys
        print("reading the input", flush=True)
        print("error: the input is bad", file=sys.stderr)
        sys.exit(2)
    """
    policy = {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": "runner", "operator": "In", "values": [2]},
            }
        ]
    }
    api.create(JOBS, job("picky", code, podFailurePolicy=policy))
    failed = wait_condition(api, "picky", "Failed", timeout=30)
    assert failed["reason"] == "PodFailurePolicy"
    (pod,) = sim.pods("picky")
    assert failed["message"] == (
        f"Container runner for pod {kube.namespace}/{pod.name} failed with exit code 2 "
        "matching FailJob rule at index 0"
    )
    # terminationMessagePolicy FallbackToLogsOnError: no termination log, so the logs' tail.
    assert pod.message.splitlines() == ["reading the input", "error: the input is bad"]


def test_a_killed_pod_is_replaced_and_a_deleted_job_takes_its_processes_along(
    kube: MockApiServer, sim: JobSimulator
) -> None:
    api = kube.client()
    code = """
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a worker
        time.sleep(60)
    """
    api.create(JOBS, job("sturdy", code))
    first = sim.wait_running("sturdy")
    wait_for(lambda: len(sim.processes_alive()) == 2, timeout=10)
    sim.kill_pod("sturdy")
    (_, second) = sim.wait_pods("sturdy", 2)
    assert first.exit_code == 137 and first.killed == "NodeLost"
    wait_for(lambda: len(sim.processes_alive()) == 2, timeout=10)  # the old worker died too
    assert api.get(JOBS, "sturdy")["status"]["failed"] == 1  # written before the new pod
    assert api.get(PODS, first.name)["status"]["phase"] == "Failed"
    wait_for(lambda: api.get(JOBS, "sturdy")["status"].get("active") == 1, timeout=5)

    api.delete(JOBS, "sturdy")
    wait_for(lambda: not second.running and sim.processes_alive() == [], timeout=10)
    assert second.killed == "Deleted"
    wait_for(lambda: api.list(PODS) == [], timeout=5)


def test_the_active_deadline_kills_the_pod_and_fails_the_job(
    kube: MockApiServer, sim: JobSimulator
) -> None:
    api = kube.client()
    api.create(JOBS, job("slow", SLEEP, activeDeadlineSeconds=1))
    failed = wait_condition(api, "slow", "Failed", timeout=20)
    assert failed["reason"] == "DeadlineExceeded"
    (pod,) = sim.pods("slow")
    assert pod.killed == "DeadlineExceeded" and pod.exit_code == 137
    assert sim.processes_alive() == []


def test_suspending_a_job_stops_its_pod_and_resuming_starts_a_new_one(
    kube: MockApiServer, sim: JobSimulator
) -> None:
    api = kube.client()
    api.create(JOBS, job("paused", SLEEP, suspend=True))
    wait_condition(api, "paused", "Suspended")
    assert sim.pods("paused") == []  # created suspended (as Kueue does): nothing runs
    api.patch(JOBS, "paused", {"spec": {"suspend": False}})
    first = sim.wait_running("paused")
    wait_for(lambda: "Suspended" not in conditions(api, "paused"), timeout=5)
    api.patch(JOBS, "paused", {"spec": {"suspend": True}})
    wait_for(lambda: not first.running, timeout=10)
    assert first.killed == "Suspended"
    status = wait_for(lambda: (s := api.get(JOBS, "paused")["status"])["active"] == 0 and s)
    assert "failed" not in status  # a suspension is no failure
    assert api.find(PODS, first.name) is None
    api.patch(JOBS, "paused", {"spec": {"suspend": False}})
    (_, second) = sim.wait_pods("paused", 2)
    assert second.running
