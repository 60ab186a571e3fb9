"""The executor: evaluates (candidate, fold) pairs on a pool of worker processes.

Strategies never fit; they hand candidates to one executor, which every stage and every model of
a comparison shares, so the workers stay busy. The data goes to the workers once, through a file
that numpy arrays are memory-mapped from, never with each task.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import traceback
import warnings
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from joblib.externals.loky import get_reusable_executor
from sklearn.metrics import check_scoring
from sklearn.pipeline import Pipeline

from kubetune.estimators import clone_with

Split = tuple[np.ndarray, np.ndarray]


@dataclass
class FoldResult:
    """One candidate scored on one fold."""

    fold: int
    scores: dict[str, float]
    fit_time: float
    score_time: float
    error: str | None = None
    trace: str | None = field(default=None, repr=False)


def fit_and_score(
    *,
    pipeline: Pipeline,
    params: dict[str, Any],
    X: Any,
    y: np.ndarray,
    split: Split,
    fold: int,
    metrics: Sequence[str],
) -> FoldResult:
    """Fit on the split's training rows and score on its test rows; errors become a result."""
    train, test = split
    start = time.perf_counter()
    fit_time = 0.0
    try:
        model = clone_with(pipeline, params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(_rows(X, train), y[train])
            fit_time = time.perf_counter() - start
            scorer = check_scoring(model, scoring=list(metrics))
            scored = scorer(model, _rows(X, test), y[test])
        scores = {m: float(scored[m]) for m in metrics}
    except Exception as error:  # a failing fit is a failed trial, not a failed search
        message = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {message[0] if message else ''}".rstrip(": ")
        return FoldResult(
            fold=fold,
            scores={m: float("nan") for m in metrics},
            fit_time=fit_time or time.perf_counter() - start,
            score_time=0.0,
            error=reason,
            trace=traceback.format_exc(limit=4),
        )
    return FoldResult(
        fold=fold,
        scores=scores,
        fit_time=fit_time,
        score_time=time.perf_counter() - start - fit_time,
    )


def _rows(X: Any, index: np.ndarray) -> Any:
    return X.iloc[index] if hasattr(X, "iloc") else X[index]


# Worker-side cache of the shared data, keyed by its file: each worker process loads it once.
_WORKER_DATA: dict[str, tuple[Any, np.ndarray, list[Split]]] = {}


def _worker_fold(
    data_path: str,
    pipeline: Pipeline,
    params: dict[str, Any],
    fold: int,
    metrics: Sequence[str],
) -> FoldResult:
    if data_path not in _WORKER_DATA:
        _WORKER_DATA.clear()
        _WORKER_DATA[data_path] = joblib.load(data_path, mmap_mode="r")
    X, y, splits = _WORKER_DATA[data_path]
    return fit_and_score(
        pipeline=pipeline, params=params, X=X, y=y, split=splits[fold], fold=fold, metrics=metrics
    )


class Executor:
    """Runs fold fits in-process (one worker) or on a reusable pool of processes."""

    def __init__(self, *, X: Any, y: np.ndarray, splits: Sequence[Split], workers: int = 1) -> None:
        self.workers = max(1, workers)
        self.folds = len(splits)
        self._X, self._y, self._splits = X, y, list(splits)
        self._dir: str | None = None
        self._pool: Any = None
        if self.workers > 1:
            self._dir = tempfile.mkdtemp(prefix="kubetune-")
            self._path = str(Path(self._dir) / "data.joblib")
            joblib.dump((X, y, self._splits), self._path)
            # As joblib does: split the cores between workers so BLAS and OpenMP threads
            # inside each fit do not oversubscribe the machine.
            threads = str(max(1, (os.cpu_count() or 1) // self.workers))
            env = {
                k: threads
                for k in (
                    "OMP_NUM_THREADS",
                    "OPENBLAS_NUM_THREADS",
                    "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS",
                )
            }
            self._pool = get_reusable_executor(max_workers=self.workers, env=env, reuse=True)

    def submit(
        self, *, pipeline: Pipeline, params: dict[str, Any], fold: int, metrics: Sequence[str]
    ) -> Future[FoldResult]:
        if self._pool is not None:
            future: Future[FoldResult] = self._pool.submit(
                _worker_fold, self._path, pipeline, params, fold, list(metrics)
            )
            return future
        done: Future[FoldResult] = Future()
        done.set_result(
            fit_and_score(
                pipeline=pipeline,
                params=params,
                X=self._X,
                y=self._y,
                split=self._splits[fold],
                fold=fold,
                metrics=metrics,
            )
        )
        return done

    @property
    def test_train_ratio(self) -> float:
        """Mean n_test / n_train over the folds, for the corrected variance."""
        return float(np.mean([len(test) / len(train) for train, test in self._splits]))

    def close(self, *, kill: bool = False) -> None:
        if self._pool is not None and kill:
            self._pool.shutdown(wait=False, kill_workers=True)
        self._pool = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close(kill=exc_type is not None)
