"""The operator's own settings, from its environment (the Deployment sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_RUNNER_IMAGE = "ghcr.io/kubetune/kubetune-runner:0.1.0"


@dataclass(frozen=True)
class OperatorConfig:
    """Defaults for the Jobs the operator creates, and how it watches."""

    runner_image: str = DEFAULT_RUNNER_IMAGE
    runner_service_account: str = "kubetune-runner"
    runner_memory: str = "1Gi"
    namespaces: list[str] = field(default_factory=list)
    """Namespaces to watch; empty means the whole cluster."""
    resync_seconds: float = 30.0
    """How often a running resource is reconciled even without an event."""
    report_grace_seconds: float = 60.0
    """How long a succeeded Job may lack its runner's final report before the stage fails."""
    metrics_port: int = 8080
    liveness_port: int = 8081

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorConfig:
        env = dict(os.environ if env is None else env)
        spaces = [n.strip() for n in env.get("KUBETUNE_NAMESPACES", "").split(",") if n.strip()]
        return cls(
            runner_image=env.get("KUBETUNE_RUNNER_IMAGE", DEFAULT_RUNNER_IMAGE),
            runner_service_account=env.get("KUBETUNE_RUNNER_SERVICE_ACCOUNT", "kubetune-runner"),
            runner_memory=env.get("KUBETUNE_RUNNER_MEMORY", "1Gi"),
            namespaces=spaces,
            resync_seconds=float(env.get("KUBETUNE_RESYNC_SECONDS", "30")),
            report_grace_seconds=float(env.get("KUBETUNE_REPORT_GRACE_SECONDS", "60")),
            metrics_port=int(env.get("KUBETUNE_METRICS_PORT", "8080")),
            liveness_port=int(env.get("KUBETUNE_LIVENESS_PORT", "8081")),
        )
