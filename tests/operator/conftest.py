"""Fixtures for operator tests: a fresh mock Kubernetes API per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.operator.harness import ApiClient, MockApiServer


@pytest.fixture
def kube() -> Iterator[MockApiServer]:
    """A running mock API server (its own thread) with empty state, stopped after the test."""
    with MockApiServer() as server:
        yield server


@pytest.fixture
def api(kube: MockApiServer) -> ApiClient:
    """A synchronous client acting as the user (or the Job controller) in ``kube.namespace``."""
    return kube.client()


@pytest.fixture
def kubeconfig(kube: MockApiServer, tmp_path: Path) -> Path:
    """A kubeconfig file for ``kube`` (plain HTTP, no auth), for the ``kubernetes`` client."""
    return kube.write_kubeconfig(tmp_path / "kubeconfig")
