from __future__ import annotations

import pytest
from tests.conftest import ROOT

from kubetune.apidoc import render

pytestmark = pytest.mark.unit


def test_committed_api_reference_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "api.md").read_text()
    assert committed == render(), "docs/api.md is stale: run `python -m kubetune.apidoc`"


def test_reference_names_every_spec_field_in_yaml_spelling() -> None:
    text = render()
    for field in (
        "`maxFailedTrials`",
        "`gridPoints`",
        "`topK`",
        "`queueName`",
        "`foldScores`",
        "`interval95`",
        "`bestModel`",
        "`observedGeneration`",
        "`testTrainRatio`",
    ):
        assert field in text
    assert "| `estimator` | [EstimatorSpec](#estimatorspec) | required |" in text
