"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubetune.api import TuningJob, load_resource

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def tuning_job(spec: dict[str, Any], name: str = "test") -> TuningJob:
    job = load_resource(
        {
            "apiVersion": "kubetune.io/v1alpha1",
            "kind": "TuningJob",
            "metadata": {"name": name},
            "spec": spec,
        }
    )
    assert isinstance(job, TuningJob)
    return job


@pytest.fixture
def examples() -> Path:
    return EXAMPLES
