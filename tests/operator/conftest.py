"""Fixtures for operator tests: a fresh mock Kubernetes API per test, and the real operator.

``world`` runs the project's operator (``kubetune_operator.handlers``) against the mock, with
its resync timer at one second, and hands the test a :class:`World` to play the user, the
Job controller, the pods and the runners. ``start_operator`` does the same with a chosen
:class:`OperatorConfig` (or a liveness endpoint). After every such test, the operator's
requests are checked: it never wrote the spec of anything but its own child TuningJobs'
``suspend``.

Every request any operator test makes to the mock API is also kept, session-wide, in
:data:`RECORDED_CALLS` (one dict per request, see :meth:`ApiCall.as_dict`, plus the test's
node id under ``"test"``). With ``KUBETUNE_RECORD_CALLS=path`` in the environment they are
written there as JSON lines at the end of the session, for checking against RBAC rules.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# kopf fixes a timer's interval when kubetune_operator.handlers is imported: make the resync
# timer fast before anything imports it, so a missed event is caught within a second.
os.environ.setdefault("KUBETUNE_RESYNC_SECONDS", "1")

import kopf
import pytest
from tests import rbac
from tests.operator.actors import API_TOKEN, OPERATOR_ACTOR, World, operator_config, spec_writes
from tests.operator.harness import ApiCall, ApiClient, MockApiServer, run_operator

from kubetune_operator import handlers
from kubetune_operator.children import PASSED_ON
from kubetune_operator.config import OperatorConfig
from kubetune_operator.kube import Kube
from kubetune_operator.metrics import Metrics

RECORD_ENV = "KUBETUNE_RECORD_CALLS"
RECORDED_CALLS: list[dict[str, Any]] = []
"""Every recorded request of every operator test in this session, in order."""


@pytest.fixture
def kube(request: pytest.FixtureRequest) -> Iterator[MockApiServer]:
    """A running mock API server (its own thread) with empty state, stopped after the test.

    Its recorded requests join :data:`RECORDED_CALLS` when the test ends.
    """
    with MockApiServer() as server:
        try:
            yield server
        finally:
            test = request.node.nodeid
            calls = [
                {**{k: v for k, v in call.items() if k != "body"}, "test": test}
                for call in server.call_dicts()
            ]
            RECORDED_CALLS.extend(calls)
            if "test_harness.py" not in test:  # its throwaway operator is not ours
                _check_rbac([c for c in calls if c["actor"].startswith(OPERATOR_ACTOR)])


@pytest.fixture(scope="session")
def recorded_calls() -> list[dict[str, Any]]:
    """The session's recording (pytest loads this file as its own module: import gets a copy)."""
    return RECORDED_CALLS


def _check_rbac(calls: list[dict[str, Any]]) -> None:
    """Every request the operator made must be allowed by the manifests' and the chart's RBAC."""
    for source, roles in (
        ("manifests/base", rbac.manifest_roles()),
        ("charts/kubetune", rbac.chart_roles()),
    ):
        refused = rbac.denied(calls, roles[rbac.OPERATOR_ROLE])
        assert not refused, f"{source} does not allow what the operator did: {refused}"


@pytest.fixture
def api(kube: MockApiServer) -> ApiClient:
    """A synchronous client acting as the user (or the Job controller) in ``kube.namespace``."""
    return kube.client()


@pytest.fixture
def kubeconfig(kube: MockApiServer, tmp_path: Path) -> Path:
    """A kubeconfig file for ``kube`` (plain HTTP, no auth), for the ``kubernetes`` client."""
    return kube.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def start_operator(kube: MockApiServer) -> Iterator[Callable[..., World]]:
    """Start the real operator against ``kube``: ``start_operator(config=..., **run_options)``.

    It runs until the test ends; then its requests are checked for spec writes.
    """
    assert handlers.RESYNC_SECONDS <= 1, (
        "kubetune_operator.handlers was imported before tests/operator/conftest.py set "
        "KUBETUNE_RESYNC_SECONDS; these tests need a fast resync"
    )
    clients = []
    with contextlib.ExitStack() as stack:

        def start(config: OperatorConfig | None = None, **options: Any) -> World:
            client = kube.kubernetes_client(token=API_TOKEN)
            clients.append(client)
            memo = kopf.Memo(
                config=config or operator_config(), kube=Kube(client), metrics=Metrics()
            )
            operator = stack.enter_context(
                run_operator(kube, module=handlers, memo=memo, **options)
            )
            return World(kube, operator)

        yield start
    for client in clients:
        client.close()
    children = {
        c.name or (c.body or {}).get("metadata", {}).get("name")
        for c in kube.calls(verb="create", plural="tuningjobs")
        if c.actor.startswith(OPERATOR_ACTOR)
    }

    def child_settings(call: ApiCall) -> bool:
        # The one exception: a comparison passes suspend and its budget and cluster settings
        # on to the child TuningJobs it created, never their search definition.
        body = call.body
        return (
            call.plural == "tuningjobs"
            and call.name in children
            and isinstance(body, dict)
            and set(body) == {"spec"}
            and set(body["spec"]) <= {"suspend", *PASSED_ON}
        )

    assert spec_writes(kube, child_settings) == [], "the operator wrote a spec"


@pytest.fixture
def world(start_operator: Callable[..., World]) -> World:
    """The mock cluster with the real operator running (default test settings)."""
    return start_operator()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write :data:`RECORDED_CALLS` as JSON lines to ``$KUBETUNE_RECORD_CALLS``, if set."""
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w") as out:
        for call in RECORDED_CALLS:
            out.write(json.dumps(call, sort_keys=True) + "\n")
