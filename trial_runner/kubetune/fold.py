"""One candidate fitted and scored on one fold: the task the worker processes run.

Kept free of the API models and of optuna: a worker unpickles this module's functions, and every
import here is paid by each worker as it starts.
"""

from __future__ import annotations

import gc
import time
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import joblib
import numpy as np
from sklearn.base import clone
from sklearn.metrics import check_scoring
from sklearn.pipeline import Pipeline

MODEL_STEP = "model"
Split = tuple[np.ndarray, np.ndarray]


def clone_with(pipeline: Pipeline, params: dict[str, Any]) -> Pipeline:
    """A fresh copy of the pipeline with the tuned parameters set on the estimator."""
    return clone(pipeline).set_params(**{f"{MODEL_STEP}__{k}": v for k, v in params.items()})


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


def settle_worker() -> None:
    """Exempt what the worker has imported and loaded so far from garbage collection.

    joblib's workers run a full ``gc.collect()`` about once a second (without psutil); with
    scikit-learn, SciPy and pandas imported that scans some 130,000 objects, 40 to 70 ms each
    time, taken from the fits. Frozen, those modules are never scanned again; objects made by
    the fits are collected as before.
    """
    # No collection first: it would scan them all once more (60 to 100 ms) to free a few hundred
    # objects of import-time garbage.
    gc.freeze()


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
        settle_worker()
    X, y, splits = _WORKER_DATA[data_path]
    return fit_and_score(
        pipeline=pipeline, params=params, X=X, y=y, split=splits[fold], fold=fold, metrics=metrics
    )
