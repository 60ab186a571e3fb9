"""Fixtures of the cluster simulation: the mock API, the real operator and the Job simulator.

``cluster`` gives a test the whole loop: the mock Kubernetes API (``tests/operator/harness.py``),
the real kopf operator (``kubetune_operator.handlers``) with a one-second resync, and the
:class:`JobSimulator` that runs every stage Job's container as a local ``python -m
kubetune.runner`` process against the same API.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# kopf fixes a timer's interval when kubetune_operator.handlers is imported: a fast resync must
# be in the environment before anything imports it.
os.environ.setdefault("KUBETUNE_RESYNC_SECONDS", "1")

import kopf
import pytest
from tests import rbac
from tests.cluster.jobsim import JobSimulator
from tests.cluster.world import Cluster
from tests.operator.harness import MockApiServer, RunningOperator, run_operator

from kubetune_operator import handlers
from kubetune_operator.config import OperatorConfig
from kubetune_operator.kube import Kube
from kubetune_operator.metrics import Metrics

OPERATOR_TOKEN = "kubetune-operator-api"
"""The token of the operator's own API module (kube.py): its requests' actor in the mock."""


@pytest.fixture
def kube() -> Iterator[MockApiServer]:
    with MockApiServer() as server:
        yield server


RUNNER_CALLS: list[dict[str, Any]] = []
"""Every request a runner pod made in this session (for the least-privilege check)."""


@pytest.fixture(scope="session")
def runner_calls() -> list[dict[str, Any]]:
    return RUNNER_CALLS


@pytest.fixture
def sim(
    kube: MockApiServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[JobSimulator]:
    simulator = JobSimulator(kube, tmp_path / "pods")
    with simulator:
        yield simulator
    assert simulator.processes_alive() == [], "a pod process outlived the test"
    assert simulator.errors == [], "the Job simulator failed"
    # RBAC replay: every request of a runner pod and of the operator must be allowed by the
    # roles in manifests/ and in the rendered chart.
    if "test_jobsim.py" in request.node.nodeid:
        return  # the simulator's own tests run stand-in commands, not our runner
    pods = {p.actor for p in simulator.pods()}
    calls = kube.call_dicts()
    runner = [c for c in calls if c["actor"] in pods]
    operator = [c for c in calls if c["actor"].startswith("kubetune-operator")]
    RUNNER_CALLS.extend(runner)
    for source, roles in (
        ("manifests/base", rbac.manifest_roles()),
        ("charts/kubetune", rbac.chart_roles()),
    ):
        refused = rbac.denied(runner, roles[rbac.RUNNER_ROLE])
        assert not refused, f"{source} does not allow what a runner did: {refused}"
        refused = rbac.denied(operator, roles[rbac.OPERATOR_ROLE])
        assert not refused, f"{source} does not allow what the operator did: {refused}"


@pytest.fixture
def operator(kube: MockApiServer) -> Iterator[RunningOperator]:
    assert handlers.RESYNC_SECONDS <= 1, "kubetune_operator.handlers was imported too early"
    client = kube.kubernetes_client(token=OPERATOR_TOKEN)
    memo = kopf.Memo(
        config=OperatorConfig(
            metrics_port=0, runner_image="kubetune-runner:test", resync_seconds=1.0
        ),
        kube=Kube(client),
        metrics=Metrics(),
    )
    try:
        with run_operator(kube, module=handlers, memo=memo) as running:
            yield running
    finally:
        client.close()


@pytest.fixture
def cluster(
    kube: MockApiServer, sim: JobSimulator, operator: RunningOperator, tmp_path: Path
) -> Cluster:
    kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig", token="user")
    return Cluster(kube, operator, sim, kubeconfig, tmp_path)
