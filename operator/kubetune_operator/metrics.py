"""Prometheus metrics of the operator (prometheus-client), served on their own port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from kubetune_operator.planner import Event

PHASES = ("Pending", "Running", "Suspended", "Succeeded", "Failed")


class Metrics:
    """The operator's metrics, in a registry of their own (tests make several operators)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.resources = Gauge(
            "kubetune_resources",
            "Resources by kind and phase.",
            ["kind", "phase"],
            registry=self.registry,
        )
        self.stages_started = Counter(
            "kubetune_stages_started", "Stage Jobs started.", registry=self.registry
        )
        self.stages_succeeded = Counter(
            "kubetune_stages_succeeded", "Stages that succeeded.", registry=self.registry
        )
        self.stages_failed = Counter(
            "kubetune_stages_failed", "Stages that failed.", registry=self.registry
        )
        self.trials_completed = Counter(
            "kubetune_trials_completed",
            "Trials completed in finished stages.",
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "kubetune_reconcile_errors",
            "Reconcile passes that raised.",
            ["kind"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "kubetune_reconcile_duration_seconds",
            "Time of one reconcile pass.",
            ["kind"],
            registry=self.registry,
        )
        self._phases: dict[tuple[str, str, str], str] = {}

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)

    def observe_phase(self, *, kind: str, namespace: str, name: str, phase: str | None) -> None:
        """Track one resource's phase (None when it is gone) and refresh the gauge."""
        key = (kind, namespace, name)
        if phase is None:
            self._phases.pop(key, None)
        else:
            self._phases[key] = phase
        for p in PHASES:
            count = sum(1 for (k, _, _), v in self._phases.items() if k == kind and v == p)
            self.resources.labels(kind=kind, phase=p).set(count)

    def observe_events(self, events: list[Event], *, stage_trials: int = 0) -> None:
        for event in events:
            if event.reason in ("Started", "StageStarted"):
                self.stages_started.inc()
            if event.reason in ("StageStarted", "Succeeded"):
                self.stages_succeeded.inc()
                self.trials_completed.inc(stage_trials)
            if event.reason == "Failed":
                self.stages_failed.inc()
