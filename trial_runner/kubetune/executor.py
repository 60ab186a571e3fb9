"""The executor: evaluates (candidate, fold) pairs on a pool of worker processes.

Strategies never fit; they hand candidates to one executor, which every stage and every model of
a comparison shares, so the workers stay busy. The data goes to the workers once, through a file
that numpy arrays are memory-mapped from, never with each task.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.pipeline import Pipeline

from kubetune.fold import FoldResult, Split, _worker_fold, fit_and_score
from kubetune.pool import get_pool


class Executor:
    """Runs fold fits in-process (one worker) or on a reusable pool of processes."""

    def __init__(self, *, X: Any, y: np.ndarray, splits: Sequence[Split], workers: int = 1) -> None:
        self.workers = max(1, workers)
        self.folds = len(splits)
        self._splits = list(splits)
        self.X, self.y = X, y
        self._dir: str | None = None
        self._pool: Any = None
        if self.workers > 1:
            self._dir = tempfile.mkdtemp(prefix="kubetune-")
            self._path = str(Path(self._dir) / "data.joblib")
            joblib.dump((X, y, self._splits), self._path)
            # From now on this process reads the data from the same file as the workers: the
            # pages are shared, and the caller can drop its own copy (see engine.open_executor).
            self.X, self.y, _ = joblib.load(self._path, mmap_mode="r")
            self._pool = get_pool(self.workers)

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
                X=self.X,
                y=self.y,
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
