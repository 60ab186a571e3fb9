"""Prometheus metrics of the operator (prometheus-client), served on their own port."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from kubetune_operator.planner import Event

PHASES = ("Pending", "Running", "Suspended", "Succeeded", "Failed")
KINDS = ("TuningJob", "ModelComparison")


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
        self.reconcile_coalesced = Counter(
            "kubetune_reconcile_coalesced",
            "Watch events that needed no pass: a pass of their resource was queued already.",
            ["kind"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "kubetune_reconcile_duration_seconds",
            "Time of one reconcile pass, from taking the resource's lock: the waits for a "
            "pass slot and for the API client's threads included.",
            ["kind"],
            registry=self.registry,
        )
        for kind in KINDS:  # every series from the start, at zero, rather than missing
            self.reconcile_errors.labels(kind=kind)
            self.reconcile_coalesced.labels(kind=kind)
            self.reconcile_seconds.labels(kind=kind)
            for phase in PHASES:
                self.resources.labels(kind=kind, phase=phase)
        self._phases: dict[tuple[str, str, str], str] = {}
        self._server: Any = None
        self._thread: Any = None

    def serve(self, port: int) -> None:
        """Serve ``/metrics`` on ``port`` from a thread of its own, until :meth:`close`."""
        self.close()
        self._server, self._thread = start_http_server(port, registry=self.registry)

    def close(self) -> None:
        """Stop serving (the operator is stopping; a restart may serve again)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def observe_phase(self, *, kind: str, namespace: str, name: str, phase: str | None) -> None:
        """Track one resource's phase (None when it is gone) and move the gauge.

        Called on every reconcile pass: the gauge moves by one, never by counting every
        resource again (that made each pass cost O(resources)).
        """
        key = (kind, namespace, name)
        old = self._phases.pop(key, None) if phase is None else self._phases.get(key)
        if phase is not None:
            self._phases[key] = phase
        if old == phase:
            return
        if old in PHASES:
            self.resources.labels(kind=kind, phase=old).dec()
        if phase in PHASES:
            self.resources.labels(kind=kind, phase=phase).inc()

    def observe_events(self, events: list[Event], *, stage_trials: int = 0) -> None:
        """Count a TuningJob pass's stage transitions, and the trials of the stages it ended.

        ``stage_trials`` counts whatever way the stages ended: a failed stage's completed
        trials were completed too.
        """
        for event in events:
            if event.reason in ("Started", "StageStarted"):
                self.stages_started.inc()
            if event.reason in ("StageStarted", "Succeeded"):
                self.stages_succeeded.inc()
            if event.reason == "Failed":
                self.stages_failed.inc()
        self.trials_completed.inc(stage_trials)
