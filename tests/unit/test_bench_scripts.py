"""The benchmark scripts still import: they use kubetune's internals, and nothing else in the
suite runs them (they are timed, so they never run under pytest)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py"))

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_bench_script_imports(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    for name in SCRIPTS:  # imported afresh, as each script is when run
        monkeypatch.delitem(sys.modules, name, raising=False)
    importlib.import_module(script)
