"""The operator process: its kopf settings, its Events, its metrics and its endpoints."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from tests.operator.actors import (
    SPEC,
    World,
    best_trial,
    comparison,
    operator_config,
    trial,
    tuningjob,
)
from tests.operator.harness import JOBS, TUNINGJOBS, MockApiServer, wait_for

pytestmark = pytest.mark.operator

S1, S2 = "s1-grid", "s2-random"
TOP = [trial(S1, 1, {"C": 1.0, "kernel": "rbf"}, 0.95)]
PLANNER_REASONS = {
    "Started",
    "StageStarted",
    "Succeeded",
    "Failed",
    "Suspended",
    "Resumed",
    "InvalidSpec",
    "ModelFailed",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        text: str = response.read().decode()
        return text


def test_kopf_is_configured_for_kubetune(world: World) -> None:
    world.create(tuningjob("forest"))
    world.wait_job("forest-s1-grid")
    world.finish_stage("forest", S1, TOP)
    world.wait_job("forest-s2-random")
    world.finish_stage("forest", S2, TOP, completed=3)
    world.wait_phase("forest", "Succeeded")

    meta = world.get("forest")["metadata"]
    assert meta["finalizers"] == ["kubetune.io/finalizer"]
    kopf_keys = [k for k in meta.get("annotations", {}) if "kopf" in k or "last-handled" in k]
    assert kopf_keys and all(k.startswith("kubetune.io/") for k in kopf_keys)

    # The API server filters the Jobs: only those the operator made reach it.
    job_reads = world.calls(plural="jobs", actor=world.operator.token)
    selectors = {c.query.get("labelSelector") for c in job_reads if c.verb in ("list", "watch")}
    assert selectors == {"app.kubernetes.io/managed-by=kubetune-operator"}
    watches = [c for c in world.calls(verb="watch") if c.actor == world.operator.token]
    assert {c.query.get("timeoutSeconds") for c in watches} == {"300"}
    # Standalone: no peering objects; explicit namespaces: no namespace scanning.
    assert not [c for c in world.calls() if c.plural and "peering" in c.plural]
    assert not [c for c in world.calls() if c.plural == "namespaces"]

    # Events come from the planner's decisions only, never from log lines.
    wait_for(lambda: "Succeeded" in world.reasons("forest"))
    reasons = world.reasons("forest")
    assert reasons == ["Started", "StageStarted", "Succeeded"]
    assert set(reasons) <= PLANNER_REASONS


def test_metrics_count_resources_stages_trials_and_reconciles(world: World) -> None:
    world.create(tuningjob("forest"))
    world.create(tuningjob("broken"))
    world.create(_invalid_mc())

    world.wait_job("forest-s1-grid")
    world.finish_stage("forest", S1, TOP, completed=6)
    world.wait_job("forest-s2-random")
    # The Job completes a moment before its runner's report lands: a wait, not an error.
    world.job_succeeded("forest-s2-random")
    world.settle(0.3)
    best = best_trial(S2, 8, {"C": 1.0, "kernel": "rbf"}, [0.96, 0.97, 0.98])
    world.report("forest", S2, top=TOP, completed=3, best=best)
    world.wait_phase("forest", "Succeeded")

    world.wait_job("broken-s1-grid")
    world.report("broken", S1, phase="Failed", completed=2, failed=4, message="too many failed")
    world.job_failed("broken-s1-grid", "PodFailurePolicy", "exit code 2")
    world.wait_phase("broken", "Failed")
    world.wait_phase("mixed", "Failed", "kubetune.io/v1alpha1/modelcomparisons")

    registry = world.memo.metrics.registry
    sample = world.metric
    wait_for(lambda: sample("kubetune_stages_failed_total") == 1)
    assert sample("kubetune_resources", kind="TuningJob", phase="Succeeded") == 1
    assert sample("kubetune_resources", kind="TuningJob", phase="Failed") == 1
    assert sample("kubetune_resources", kind="TuningJob", phase="Running") == 0
    assert sample("kubetune_resources", kind="ModelComparison", phase="Failed") == 1
    assert sample("kubetune_stages_started_total") == 3
    assert sample("kubetune_stages_succeeded_total") == 2
    assert sample("kubetune_trials_completed_total") == 6 + 3 + 2
    for kind in ("TuningJob", "ModelComparison"):
        count = sample("kubetune_reconcile_duration_seconds_count", kind=kind)
        assert count is not None and count > 0
    assert sample("kubetune_reconcile_errors_total", kind="TuningJob") == 0
    exposition = generate_latest(registry).decode()
    assert 'kubetune_resources{kind="TuningJob",phase="Succeeded"} 1.0' in exposition

    world.api.delete(TUNINGJOBS, "forest")
    wait_for(lambda: world.api.find(TUNINGJOBS, "forest") is None)
    assert sample("kubetune_resources", kind="TuningJob", phase="Succeeded") == 0


def _invalid_mc() -> dict[str, object]:
    body = comparison("mixed", ["logreg", "svc"])
    body["spec"]["models"][1]["estimator"] = {"name": "Ridge"}  # a regressor among classifiers
    return body


def test_metrics_and_liveness_endpoints_are_served_and_survive_a_restart(
    start_operator: Callable[..., World],
) -> None:
    metrics_port, liveness_port = free_port(), free_port()
    world = start_operator(
        config=operator_config(metrics_port=metrics_port),
        liveness_endpoint=f"http://127.0.0.1:{liveness_port}/healthz",
    )
    world.create(tuningjob("forest", SPEC))
    world.wait_phase("forest", "Running")

    # The gauge moves right after the status write that wait_phase saw: wait for it too.
    running = 'kubetune_resources{kind="TuningJob",phase="Running"} 1.0'

    def metrics_with_running() -> str | None:
        text = fetch(f"http://127.0.0.1:{metrics_port}/metrics")
        return text if running in text else None

    text = wait_for(metrics_with_running)
    for name in (
        "kubetune_stages_started_total",
        "kubetune_stages_succeeded_total",
        "kubetune_stages_failed_total",
        "kubetune_trials_completed_total",
        "kubetune_reconcile_duration_seconds_bucket",
    ):
        assert name in text
    health = json.loads(fetch(f"http://127.0.0.1:{liveness_port}/healthz"))
    assert health["api"] == "ok"

    world.operator.restart()  # the port is freed on the way down and served again
    text = wait_for(lambda: fetch(f"http://127.0.0.1:{metrics_port}/metrics"))
    assert "kubetune_reconcile_duration_seconds_count" in text


def test_kubetune_operator_runs_the_operator_process(kube: MockApiServer, tmp_path: Path) -> None:
    """`kubetune operator` (which execs `python -m kubetune_operator`), configured by env."""
    metrics_port, liveness_port = free_port(), free_port()
    config = kube.write_kubeconfig(tmp_path / "kubeconfig", token="kubetune-operator-process")
    env = {
        **os.environ,
        "KUBECONFIG": str(config),
        "KUBETUNE_NAMESPACES": kube.namespace,
        "KUBETUNE_METRICS_PORT": str(metrics_port),
        "KUBETUNE_LIVENESS_PORT": str(liveness_port),
        "KUBETUNE_RESYNC_SECONDS": "1",
        "KUBETUNE_RUNNER_IMAGE": "runner:from-env",
    }
    code = "import sys; from kubetune.cli import main; sys.exit(main(['operator']))"
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    api = kube.client()
    try:
        api.create(TUNINGJOBS, tuningjob("forest"))
        job = wait_for(lambda: api.find(JOBS, "forest-s1-grid"), timeout=30)
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "runner:from-env"
        health = json.loads(fetch(f"http://127.0.0.1:{liveness_port}/healthz"))
        assert health["api"] == "ok"
        text = fetch(f"http://127.0.0.1:{metrics_port}/metrics")
        assert 'kubetune_resources{kind="TuningJob",phase="Running"} 1.0' in text
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output[-2000:]
    # Exact namespaces: no cluster-wide namespace scanning (kmock cannot serve it anyway).
    assert not [c for c in kube.calls() if c.plural == "namespaces"]
    actors = {c.actor for c in kube.calls() if c.actor != "harness"}
    assert actors == {"kubetune-operator-process"}
