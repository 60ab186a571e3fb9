"""Runs last in this folder: over every operator test of the session, was each grant used?

Each test already checks at teardown that every request it saw the operator make was allowed
(tests/operator/conftest.py); this checks the other direction, least privilege.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests import rbac
from tests.operator.actors import OPERATOR_ACTOR

pytestmark = pytest.mark.operator


def test_every_granted_verb_of_the_operator_was_used_or_has_a_reason(
    recorded_calls: list[dict[str, Any]],
) -> None:
    calls = [
        c
        for c in recorded_calls
        if c["actor"].startswith(OPERATOR_ACTOR) and "test_harness.py" not in c["test"]
    ]
    tests = {c["test"] for c in calls}
    if len(tests) < 30:
        pytest.skip(f"needs the whole operator tier in this session (saw {len(tests)} tests)")
    for roles in (rbac.manifest_roles(), rbac.chart_roles()):
        grants = roles[rbac.OPERATOR_ROLE]
        assert rbac.denied(calls, grants) == []
        assert rbac.unused(calls, grants) == [], "granted but never used, and no reason given"
