"""The executor when a worker process dies in a fit: that fit fails alone, the others complete."""

from __future__ import annotations

import math
import os
import pickle
import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline

from kubetune.executor import Executor

pytestmark = pytest.mark.runner


class DiesInFit(RegressorMixin, BaseEstimator):
    """Predicts the mean; with ``die=True`` its fit kills its own process, as the OOM killer.

    ``touch`` names a file the fit creates as it starts, ``wait_for`` one it waits for (at most
    60 s, then it fails): two fits that wait for each other both succeed only side by side.
    """

    def __init__(
        self, die: bool = False, touch: str = "", wait_for: str = "", exit_code: int = 0
    ) -> None:
        self.die = die
        self.touch = touch
        self.wait_for = wait_for
        self.exit_code = exit_code

    def fit(self, X: Any, y: Any) -> DiesInFit:
        if self.die:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.exit_code:
            raise SystemExit(self.exit_code)
        if self.touch:
            Path(self.touch).touch()
        deadline = time.monotonic() + 60
        while self.wait_for and not Path(self.wait_for).exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.wait_for} never appeared")
            time.sleep(0.01)
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X: Any) -> Any:
        return np.full(len(X), self.mean_)


def test_a_fit_that_kills_its_worker_fails_alone_and_the_pool_recovers() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 3)), rng.normal(size=60)
    splits = list(KFold(n_splits=3).split(X))
    pipeline = Pipeline([("model", DiesInFit())])
    with Executor(X=X, y=y, splits=splits, workers=2) as executor:
        tasks = [(False, 0), (False, 1), (True, 2), (False, 0), (False, 1), (False, 2)]
        futures = [
            executor.submit(pipeline=pipeline, params={"die": die}, fold=fold, metrics=["r2"])
            for die, fold in tasks
        ]
        results = [f.result(timeout=300) for f in futures]
        died = results[2]
        assert died.error is not None and "worker process died in this fit" in died.error
        assert "SIGKILL" in died.error and math.isnan(died.scores["r2"])
        for (_, fold), result in zip(tasks, results, strict=True):
            if result is not died:
                assert result.error is None, result.error
                assert result.fold == fold and math.isfinite(result.scores["r2"])
        # The pool works again for what comes next.
        after = executor.submit(pipeline=pipeline, params={}, fold=1, metrics=["r2"])
        assert after.result(timeout=300).error is None


def test_fits_submitted_while_the_reruns_go_on_run_in_parallel_after_them(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 3)), rng.normal(size=60)
    splits = list(KFold(n_splits=3).split(X))
    pipeline = Pipeline([("model", DiesInFit())])
    gate, a, b = (str(tmp_path / name) for name in ("gate", "a", "b"))
    with Executor(X=X, y=y, splits=splits, workers=2) as executor:

        def submit(**params: Any) -> Any:
            return executor.submit(pipeline=pipeline, params=params, fold=0, metrics=["r2"])

        died = submit(die=True)
        gated = submit(wait_for=gate)  # its rerun lasts until the gate opens
        deadline = time.monotonic() + 120
        while not executor._recovering:  # the pool broke: the reruns are under way
            assert time.monotonic() < deadline, "the worker never died"
            time.sleep(0.01)
        # Held until the reruns are done, then sent to the pool together: each waits for the
        # other, so run one at a time they would both fail.
        pair = [submit(touch=a, wait_for=b), submit(touch=b, wait_for=a)]
        Path(gate).touch()
        assert died.result(timeout=300).error is not None
        assert gated.result(timeout=300).error is None
        for future in pair:
            assert future.result(timeout=300).error is None


def test_a_rerun_that_raises_system_exit_reaches_the_caller_and_the_reruns_go_on() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 3)), rng.normal(size=60)
    splits = list(KFold(n_splits=3).split(X))
    pipeline = Pipeline([("model", DiesInFit())])
    with Executor(X=X, y=y, splits=splits, workers=2) as executor:
        futures = [
            executor.submit(pipeline=pipeline, params=params, fold=0, metrics=["r2"])
            for params in ({"die": True}, {"exit_code": 3}, {})
        ]
        with pytest.raises(SystemExit):
            futures[1].result(timeout=120)
        assert futures[2].result(timeout=120).error is None


class Unloadable:
    """Pickles, but cannot be unpickled: a task the workers cannot even read."""

    def __reduce__(self) -> Any:
        return (_refuse, ())


def _refuse() -> None:
    raise pickle.UnpicklingError("cannot load this")


def test_a_pool_broken_by_a_task_that_cannot_be_read_fails_the_search_as_before() -> None:
    # No worker died: that is not a fit to fail alone, and the error says what happened.
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 3)), rng.normal(size=60)
    splits = list(KFold(n_splits=3).split(X))
    pipeline = Pipeline([("model", DiesInFit())])
    with Executor(X=X, y=y, splits=splits, workers=2) as executor:
        future = executor.submit(
            pipeline=pipeline, params={"touch": Unloadable()}, fold=0, metrics=["r2"]
        )
        with pytest.raises(BrokenProcessPool, match="un-serialize"):
            future.result(timeout=300)


def test_closing_on_ctrl_c_with_fits_queued_stops_the_workers_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``kubetune run`` does on Ctrl-C: close(kill=True) with many fits not yet started.
    loky's manager thread must not die with an exception (its traceback would be printed after
    kubetune's own message)."""
    died: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", died.append)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 3)), rng.normal(size=60)
    splits = list(KFold(n_splits=3).split(X))
    pipeline = Pipeline([("model", DiesInFit())])
    gate = str(tmp_path / "gate")  # never opened: each fit waits until killed
    executor = Executor(X=X, y=y, splits=splits, workers=2)
    futures = [
        executor.submit(
            pipeline=pipeline,
            params={"touch": str(tmp_path / f"started-{k}"), "wait_for": gate},
            fold=k % 3,
            metrics=["r2"],
        )
        for k in range(16)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("started-*"))) < 2:  # both workers are in a fit
        assert time.monotonic() < deadline, "the fits never started"
        time.sleep(0.01)
    executor.close(kill=True)
    for thread in threading.enumerate():
        if thread.name == "ExecutorManagerThread":
            thread.join(timeout=60)
            assert not thread.is_alive()
    assert died == []
    assert all(f.done() for f in futures[5:])  # the queued ones were cancelled


# ---- BLAS and OpenMP threads ------------------------------------------------------------------


class OneThreadFit(RegressorMixin, BaseEstimator):
    """Predicts the mean; its fit fails unless BLAS and OpenMP run one thread."""

    def fit(self, X: Any, y: Any) -> OneThreadFit:
        if set(library_threads().values()) != {1}:
            raise RuntimeError(f"fitting with threads {library_threads()}")
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X: Any) -> Any:
        return np.full(len(X), self.mean_)


def library_threads() -> dict[str, int]:
    from threadpoolctl import threadpool_info

    return {info["filepath"]: info["num_threads"] for info in threadpool_info()}


def one_worker() -> Executor:
    X, y = np.arange(40.0).reshape(20, 2), np.arange(20.0)
    return Executor(X=X, y=y, splits=list(KFold(2).split(X)), workers=1)


def test_one_worker_fits_with_blas_and_openmp_capped_at_a_cpu_quota(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import joblib

    before = library_threads()
    if max(before.values(), default=1) < 2:
        pytest.skip("BLAS and OpenMP already run one thread here")
    monkeypatch.setattr(joblib, "cpu_count", lambda *_, **__: 1)  # a pod limited to one CPU
    executor = one_worker()
    try:
        pipeline = Pipeline([("model", OneThreadFit())])
        result = executor.submit(pipeline=pipeline, params={}, fold=0, metrics=["r2"]).result()
        assert result.error is None
        assert set(library_threads().values()) == {1}
    finally:
        executor.close()
    assert library_threads() == before  # restored for whatever the process does next


def test_one_worker_leaves_the_threads_alone_without_a_quota(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import joblib

    monkeypatch.setattr(joblib, "cpu_count", lambda *_, **__: os.cpu_count())
    before = library_threads()
    with one_worker():
        assert library_threads() == before


def test_workers_split_the_usable_cores_not_the_machines(monkeypatch: pytest.MonkeyPatch) -> None:
    import joblib

    from kubetune import pool

    monkeypatch.setattr(joblib, "cpu_count", lambda *_, **__: 3)
    assert (pool.worker_threads(1), pool.worker_threads(2), pool.worker_threads(4)) == (3, 1, 1)
    assert pool.worker_threads(2, cores=8) == 4
    assert pool.worker_env(2)["OMP_NUM_THREADS"] == "1"
