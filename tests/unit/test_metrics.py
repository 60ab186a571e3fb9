"""The operator's resources gauge moves by one per phase change, and stays exact."""

from __future__ import annotations

import pytest

from kubetune_operator.metrics import Metrics

pytestmark = pytest.mark.unit


def _gauge(metrics: Metrics, kind: str = "TuningJob") -> dict[str, float]:
    out = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "kubetune_resources" and sample.labels["kind"] == kind:
                out[sample.labels["phase"]] = sample.value
    return out


def test_phases_are_counted_through_changes_repeats_and_deletion() -> None:
    m = Metrics()
    assert set(_gauge(m).values()) == {0.0}  # every series exists from the start
    for name in ("a", "b", "c"):
        m.observe_phase(kind="TuningJob", namespace="ns", name=name, phase="Pending")
    m.observe_phase(kind="TuningJob", namespace="ns", name="a", phase="Running")
    m.observe_phase(kind="TuningJob", namespace="ns", name="a", phase="Running")  # a repeat
    m.observe_phase(kind="TuningJob", namespace="other", name="a", phase="Running")
    m.observe_phase(kind="ModelComparison", namespace="ns", name="a", phase="Failed")
    assert _gauge(m) == {
        "Pending": 2.0,
        "Running": 2.0,
        "Suspended": 0.0,
        "Succeeded": 0.0,
        "Failed": 0.0,
    }
    m.observe_phase(kind="TuningJob", namespace="ns", name="a", phase="Succeeded")
    m.observe_phase(kind="TuningJob", namespace="ns", name="b", phase=None)  # deleted
    m.observe_phase(kind="TuningJob", namespace="ns", name="zz", phase=None)  # never seen
    m.observe_phase(kind="TuningJob", namespace="ns", name="c", phase=None)
    assert _gauge(m)["Pending"] == 0.0 and _gauge(m)["Running"] == 1.0
    assert _gauge(m)["Succeeded"] == 1.0
    assert _gauge(m, "ModelComparison")["Failed"] == 1.0
