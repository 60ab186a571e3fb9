"""The executor: evaluates (candidate, fold) pairs on a pool of worker processes.

Strategies never fit; they hand candidates to one executor, which every stage and every model of
a comparison shares, so the workers stay busy. The data goes to the workers once, through a file
that numpy arrays are memory-mapped from, never with each task.

A worker that dies in a fit (killed for using too much memory, or a crash in native code) breaks
the whole pool and fails every fit in flight. Those fits run again one at a time on a fresh pool:
the one that kills its worker again fails alone, with that reason, and the search goes on.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
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
        self._lock = threading.Lock()
        self._orphans: deque[tuple[Future[FoldResult], _Task]] = deque()
        self._recovering = False
        self._closed = False
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
            task: _Task = (pipeline, params, fold, list(metrics))
            outer: Future[FoldResult] = Future()
            with self._lock:
                if self._recovering:  # after the isolated reruns, in order
                    self._orphans.append((outer, task))
                    return outer
            self._send(outer, task)
            return outer
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

    def _send(self, outer: Future[FoldResult], task: _Task) -> None:
        try:
            inner = self._pool.submit(_worker_fold, self._path, *task)
        except BrokenProcessPool:
            self._orphan(outer, task)
            return
        inner.add_done_callback(lambda done: self._settle(done, outer, task))

    def _settle(self, inner: Future[FoldResult], outer: Future[FoldResult], task: _Task) -> None:
        # Runs in the pool's result thread.
        if inner.cancelled():
            outer.cancel()
        elif isinstance(inner.exception(), BrokenProcessPool):
            self._orphan(outer, task)
        elif inner.exception() is not None:
            outer.set_exception(inner.exception())
        else:
            outer.set_result(inner.result())

    def _orphan(self, outer: Future[FoldResult], task: _Task) -> None:
        with self._lock:
            self._orphans.append((outer, task))
            if self._recovering or self._closed:
                return
            self._recovering = True
        threading.Thread(target=self._rerun_orphans, name="kubetune-rerun", daemon=True).start()

    def _rerun_orphans(self) -> None:
        """Run the fits of a broken pool one at a time, each on a pool that works."""
        while True:
            with self._lock:
                if self._closed or not self._orphans:
                    self._recovering = False
                    return
                outer, task = self._orphans.popleft()
            try:
                # joblib replaces a broken reusable pool with a fresh one.
                self._pool = get_pool(self.workers)
                result = self._pool.submit(_worker_fold, self._path, *task).result()
            except BrokenProcessPool as error:
                result = _died(fold=task[2], metrics=task[3], error=error)
            except Exception as error:  # the pool cannot start: the search fails
                outer.set_exception(error)
                continue
            outer.set_result(result)

    def close(self, *, kill: bool = False) -> None:
        with self._lock:
            self._closed = True
            for outer, _ in self._orphans:
                outer.cancel()
            self._orphans.clear()
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


_Task = tuple[Pipeline, dict[str, Any], int, list[str]]


def _died(*, fold: int, metrics: Sequence[str], error: BaseException) -> FoldResult:
    codes = re.search(r"exit codes of the workers are \{([^}]*)\}", str(error))
    reason = (
        f"the worker process died in this fit{f' (exit code {codes.group(1)})' if codes else ''}: "
        "it ran out of memory, or native code crashed"
    )
    return FoldResult(
        fold=fold,
        scores={m: float("nan") for m in metrics},
        fit_time=0.0,
        score_time=0.0,
        error=reason,
    )
