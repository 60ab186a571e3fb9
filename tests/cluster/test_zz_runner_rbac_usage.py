"""Runs last in this folder: did the runner pods use every verb the runner's role grants?

Each test already checks at teardown that every runner request was allowed (conftest.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from tests import rbac

pytestmark = pytest.mark.cluster


def test_every_granted_verb_of_the_runner_was_used(runner_calls: list[dict[str, Any]]) -> None:
    if len(runner_calls) < 50:
        pytest.skip(f"needs the whole cluster tier in this session (saw {len(runner_calls)})")
    for roles in (rbac.manifest_roles(), rbac.chart_roles()):
        grants = roles[rbac.RUNNER_ROLE]
        assert rbac.denied(runner_calls, grants) == []
        assert rbac.unused(runner_calls, grants) == [], "granted but never used"
