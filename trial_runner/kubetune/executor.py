"""The executor: evaluates (candidate, fold) pairs on a pool of worker processes.

Strategies never fit; they hand candidates to one executor, which every stage and every model of
a comparison shares, so the workers stay busy. The data goes to the workers once, through a file
that numpy arrays are memory-mapped from, never with each task.

A worker that dies in a fit (killed for using too much memory, or a crash in native code) breaks
the whole pool and fails every fit in flight. Those fits run again one at a time on a fresh pool:
the one that kills its worker again fails alone, with that reason, and the search goes on; fits
submitted meanwhile wait for the reruns, then go to the pool as usual.

At most ``2 * workers + 1`` fits are in the pool at a time (one running in each worker, the rest
in loky's call queue); the others wait here. Fits in the call queue start the moment a worker is
free, so the workers never wait for this process. And loky's ``shutdown(kill_workers=True)``,
on Ctrl-C, then finds none of them still in its own backlog: its manager thread dies with a
KeyError on such a fit (loky 3.6, in joblib 1.6) and prints the traceback after our message.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from joblib.externals.loky.process_executor import TerminatedWorkerError
from sklearn.pipeline import Pipeline

from kubetune.fold import FoldResult, Split, _worker_fold, fit_and_score
from kubetune.pool import get_pool, limit_in_process


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
        # Fits waiting to go to the pool (in order), and how many are in it.
        self._queued: deque[tuple[Future[FoldResult], _Task]] = deque()
        self._in_pool = 0
        self._pool_capacity = 2 * self.workers + 1
        # After a worker died: the fits that were in the broken pool, rerun one at a time while
        # the queued ones wait.
        self._suspects: deque[tuple[Future[FoldResult], _Task]] = deque()
        self._recovering = False
        self._closed = False
        # One worker fits in this process: its BLAS and OpenMP get the usable cores too (a
        # pod's CPU limit), as the workers of a pool do, until the executor closes.
        self._threads = limit_in_process() if self.workers == 1 else None
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
        if self.workers > 1:
            task: _Task = (pipeline, params, fold, list(metrics))
            outer: Future[FoldResult] = Future()
            with self._lock:
                self._queued.append((outer, task))
            self._dispatch()
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

    def _dispatch(self) -> None:
        """Send queued fits to the pool while it has room (none while reruns go on)."""
        while True:
            with self._lock:
                if (
                    self._closed
                    or self._recovering
                    or not self._queued
                    or self._in_pool >= self._pool_capacity
                ):
                    return
                outer, task = self._queued.popleft()
                self._in_pool += 1
                pool = self._pool
            self._send(pool, outer, task)

    def _send(self, pool: Any, outer: Future[FoldResult], task: _Task) -> None:
        try:
            inner = pool.submit(_worker_fold, self._path, *task)
        except Exception as error:  # a broken pool refuses work (Ctrl-C still goes up at once)
            self._settle_error(error, outer, task)
            self._left_pool()
            return
        inner.add_done_callback(lambda done: self._settle(done, outer, task))

    def _settle(self, inner: Future[FoldResult], outer: Future[FoldResult], task: _Task) -> None:
        # Runs in the pool's result thread (or in _send, if the fit is already done).
        if inner.cancelled():
            outer.cancel()
        elif (error := inner.exception()) is not None:
            self._settle_error(error, outer, task)
        else:
            _resolve(outer, result=inner.result())
        self._left_pool()

    def _left_pool(self) -> None:
        with self._lock:
            self._in_pool -= 1
        self._dispatch()

    def _settle_error(self, error: BaseException, outer: Future[FoldResult], task: _Task) -> None:
        # Only a worker that died breaks the pool this way; a task or result that cannot be
        # unpickled also breaks it, and fails the search with loky's message, as before.
        if not isinstance(error, TerminatedWorkerError):
            _resolve(outer, error=error)
            return
        with self._lock:
            if self._closed:
                return
            self._suspects.append((outer, task))
            if self._recovering:
                return
            self._recovering = True
        threading.Thread(target=self._rerun_suspects, name="kubetune-rerun", daemon=True).start()

    def _rerun_suspects(self) -> None:
        """Rerun the fits of a broken pool one at a time: one that breaks it again fails alone."""
        try:
            while True:
                with self._lock:
                    if self._closed or not self._suspects:
                        self._recovering = False
                        break
                    outer, task = self._suspects.popleft()
                try:
                    pool = get_pool(self.workers)  # joblib replaces a broken pool with a new one
                    with self._lock:
                        if self._closed:
                            outer.cancel()
                            continue
                        self._pool = pool
                    result = pool.submit(_worker_fold, self._path, *task).result()
                except TerminatedWorkerError as error:
                    result = _died(fold=task[2], metrics=task[3], error=error)
                except BaseException as error:  # to the caller, as concurrent.futures does
                    _resolve(outer, error=error)
                    continue
                _resolve(outer, result=result)
        finally:
            with self._lock:
                self._recovering = False
        self._dispatch()  # what was queued meanwhile goes to the pool as usual

    def close(self, *, kill: bool = False) -> None:
        with self._lock:
            self._closed = True
            for outer, _ in (*self._suspects, *self._queued):
                outer.cancel()
            self._suspects.clear()
            self._queued.clear()
            pool, self._pool = self._pool, None
        if pool is not None and kill:
            pool.shutdown(wait=False, kill_workers=True)
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.restore_original_limits()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close(kill=exc_type is not None)


_Task = tuple[Pipeline, dict[str, Any], int, list[str]]


def _resolve(
    future: Future[FoldResult],
    *,
    result: FoldResult | None = None,
    error: BaseException | None = None,
) -> None:
    # A future the caller cancelled takes no result.
    with contextlib.suppress(InvalidStateError):
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]


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
