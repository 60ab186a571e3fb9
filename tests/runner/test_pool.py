"""Worker warm-up: `kubetune run` starts the pool before it imports the engine."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune import pool
from kubetune.cli import _declared_parallelism

pytestmark = pytest.mark.runner


def test_warm_pool_is_the_pool_the_executor_gets() -> None:
    pool.warm_up(2)
    warmed = pool.get_pool(2)
    # The warm-up task imports the fitting code in a worker and answers with its pid.
    assert warmed.submit(pool._import_fitting_code).result(timeout=120) > 0
    assert pool.get_pool(2) is warmed


def test_one_worker_starts_no_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    monkeypatch.setattr(pool, "get_pool", asked.append)  # warm_up swallows errors: record
    pool.warm_up(1)
    assert asked == []


def test_a_pool_that_cannot_start_is_left_to_the_executor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(workers: int) -> Any:
        raise OSError("no processes")

    monkeypatch.setattr(pool, "get_pool", broken)
    pool.warm_up(2)  # does not raise


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"spec": {"search": {"parallelism": 3}}}, 3),
        ({"spec": {"search": {}}}, 1),
        ({"spec": {"search": {"parallelism": "two"}}}, 1),
        ({"spec": {"search": {"parallelism": 0}}}, 1),
        ({"spec": {"search": {"parallelism": 10_000}}}, 1),
        ({"spec": {"search": None}}, 1),
        ({"spec": []}, 1),
        ({}, 1),
    ],
)
def test_parallelism_read_before_validation(document: dict[str, Any], expected: int) -> None:
    assert _declared_parallelism(document) == expected


def test_settled_worker_leaves_its_imports_out_of_garbage_collection() -> None:
    import gc

    from kubetune.fold import settle_worker

    try:
        settle_worker()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # numpy, scikit-learn and the rest of what is imported here
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


def test_a_worker_settles_once_when_it_first_loads_the_data(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import joblib
    import numpy as np
    from sklearn.dummy import DummyClassifier
    from sklearn.pipeline import Pipeline

    from kubetune import fold

    X, y = np.zeros((12, 2)), np.array([0, 1] * 6)
    splits = [(np.arange(6), np.arange(6, 12)), (np.arange(6, 12), np.arange(6))]
    path = str(tmp_path / "data.joblib")
    joblib.dump((X, y, splits), path)
    settled: list[int] = []
    monkeypatch.setattr(fold, "settle_worker", lambda: settled.append(1))
    monkeypatch.setattr(fold, "_WORKER_DATA", {})
    pipeline = Pipeline([(fold.MODEL_STEP, DummyClassifier())])
    for k in (0, 1, 0):
        result = fold._worker_fold(path, pipeline, {}, k, ["accuracy"])
        assert result.error is None
    assert settled == [1]
