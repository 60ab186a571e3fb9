"""The executor when a worker process dies in a fit: that fit fails alone, the others complete."""

from __future__ import annotations

import math
import os
import signal
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline

from kubetune.executor import Executor

pytestmark = pytest.mark.runner


class DiesInFit(RegressorMixin, BaseEstimator):
    """Predicts the mean; with ``die=True`` its fit kills its own process, as the OOM killer."""

    def __init__(self, die: bool = False) -> None:
        self.die = die

    def fit(self, X: Any, y: Any) -> DiesInFit:
        if self.die:
            os.kill(os.getpid(), signal.SIGKILL)
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
