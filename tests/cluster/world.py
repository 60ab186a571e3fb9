"""The simulated cluster as a test sees it: the user's client, the operator, the Job simulator.

Kept out of ``conftest.py`` so that tests can import :class:`Cluster` (for type hints and
helpers) without importing the conftest module a second time under another name.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.cluster.jobsim import JobSimulator
from tests.operator.harness import (
    CONFIGMAPS,
    JOBS,
    MODELCOMPARISONS,
    TUNINGJOBS,
    ApiClient,
    MockApiServer,
    RunningOperator,
    wait_for,
)

API_VERSION = "kubetune.io/v1alpha1"
REPO = Path(__file__).resolve().parents[2]


class Cluster:
    """The simulated cluster a test talks to: the user's client and what runs in it."""

    def __init__(
        self,
        kube: MockApiServer,
        operator: RunningOperator,
        sim: JobSimulator,
        kubeconfig: Path,
        workdir: Path,
    ) -> None:
        self.kube, self.operator, self.sim = kube, operator, sim
        self.kubeconfig, self.workdir = kubeconfig, workdir
        self.api: ApiClient = kube.client()

    # ---- the user ------------------------------------------------------------------------

    def apply(self, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        resource = TUNINGJOBS if kind == "TuningJob" else MODELCOMPARISONS
        body = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}
        return self.api.create(resource, body)

    def get(self, name: str, resource: str = TUNINGJOBS) -> dict[str, Any]:
        return self.api.get(resource, name)

    def status(self, name: str, resource: str = TUNINGJOBS) -> dict[str, Any]:
        found = self.api.find(resource, name)
        return dict((found or {}).get("status") or {})

    def wait_phase(
        self,
        name: str,
        phases: str | tuple[str, ...],
        resource: str = TUNINGJOBS,
        timeout: float = 90.0,
    ) -> dict[str, Any]:
        """Wait until status.phase is one of ``phases``; return the status."""
        wanted = (phases,) if isinstance(phases, str) else phases

        def reached() -> dict[str, Any] | None:
            assert not self.sim.errors, f"the Job simulator failed: {self.sim.errors}"
            status = self.status(name, resource)
            return status if status.get("phase") in wanted else None

        return wait_for(
            reached,
            timeout=timeout,
            interval=0.1,
            message=lambda: f"{name} never reached {wanted}: {self.explain(name, resource)}",
        )

    def explain(self, name: str, resource: str = TUNINGJOBS) -> str:
        """What a failing wait shows: the status, the Jobs and the pods' last words."""
        status = self.status(name, resource)
        lines = [f"status={status}", f"jobs={[j['metadata']['name'] for j in self.api.jobs()]}"]
        for pod in self.sim.pods():
            lines.append(
                f"pod {pod.name}: exit={pod.exit_code} killed={pod.killed} "
                f"stderr={pod.stderr()[-1500:]!r}"
            )
        lines += [f"sim error: {e}" for e in self.sim.errors]
        return "\n".join(lines)

    def job(self, name: str) -> dict[str, Any] | None:
        return self.api.find(JOBS, name)

    def job_names(self) -> list[str]:
        return sorted(j["metadata"]["name"] for j in self.api.jobs())

    def events(self, name: str) -> list[tuple[str, str, str]]:
        return [
            (e.get("type", ""), e.get("reason", ""), e.get("message", ""))
            for e in self.api.events(involved_name=name)
        ]

    def ledger(self, tuningjob: str) -> dict[str, dict[str, str]]:
        """The trial ledger's ConfigMaps of ``tuningjob``: name -> data."""
        maps = self.api.list(CONFIGMAPS, label_selector=f"kubetune.io/tuningjob={tuningjob}")
        return {m["metadata"]["name"]: m.get("data") or {} for m in maps}

    def kubetune(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """The real ``kubetune`` CLI in a subprocess, pointed at the mock by KUBECONFIG."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(REPO / "trial_runner"),
            "KUBECONFIG": str(self.kubeconfig),
            "COLUMNS": "250",
        }
        return subprocess.run(
            [sys.executable, "-m", "kubetune.cli", *args],
            env=env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
