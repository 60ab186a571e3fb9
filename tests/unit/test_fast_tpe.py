"""kubetune.fast_tpe: SciPy's log_ndtr in place of optuna's scalar loop, same numbers."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.samplers._tpe import _truncnorm

import kubetune.strategies  # noqa: F401 - installs the replacement, as the engine does
from kubetune import fast_tpe

pytestmark = pytest.mark.unit


def _optuna_log_ndtr(values: np.ndarray) -> np.ndarray:
    # optuna's own definition, element by element (the function we replace).
    return np.array([_truncnorm._log_ndtr_single(float(v)) for v in values])


def test_installed_when_the_engine_is_imported() -> None:
    assert fast_tpe.install() is True
    assert _truncnorm._log_ndtr is fast_tpe._log_ndtr


def test_agrees_with_optuna_across_every_branch() -> None:
    # optuna's branches: a > 6, -20 < a <= 6, a <= -20 (asymptotic series).
    values = np.concatenate(
        [np.linspace(-60, -20.5, 40), np.linspace(-20, 6, 400), np.linspace(6.01, 40, 40)]
    )
    ours = fast_tpe._log_ndtr(values)
    theirs = _optuna_log_ndtr(values)
    assert ours.shape == values.shape
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-300)
    # Where optuna is accurate (the body of the distribution) they agree to rounding.
    body = (values > -10) & (values < 3)
    np.testing.assert_allclose(ours[body], theirs[body], rtol=1e-13)


def test_keeps_the_shape_of_two_dimensional_input() -> None:
    grid = np.array([[-1.0, 0.0], [1.0, 2.0]])
    assert fast_tpe._log_ndtr(grid).shape == (2, 2)
    assert fast_tpe._log_ndtr(grid)[0, 1] == pytest.approx(math.log(0.5))


def _proposals(n: int) -> list[tuple[int, float]]:
    sampler = optuna.samplers.TPESampler(
        seed=7, n_startup_trials=5, multivariate=True, constant_liar=True
    )
    study = optuna.create_study(sampler=sampler, direction="maximize")
    seen = []
    for _ in range(n):
        trial = study.ask()
        k = trial.suggest_int("k", 0, 10_000)
        x = trial.suggest_float("x", 1e-3, 1e3, log=True)
        study.tell(trial, -abs(k - 4_321) / 1_000 - abs(math.log10(x) - 1.0))
        seen.append((k, x))
    return seen


def test_tpe_proposes_what_optuna_alone_would(monkeypatch: pytest.MonkeyPatch) -> None:
    # The replacement changes the speed of TPE, not its choices (integer and log parameters,
    # the paths that call log_ndtr for every candidate and past trial): the same integers, and
    # floats equal to rounding (sampling inverts log_ndtr, whose last bits differ).
    fast = _proposals(40)
    monkeypatch.setattr(
        _truncnorm,
        "_log_ndtr",
        lambda a: np.frompyfunc(_truncnorm._log_ndtr_single, 1, 1)(a).astype(float),
    )
    slow = _proposals(40)
    assert [k for k, _ in fast] == [k for k, _ in slow]
    np.testing.assert_allclose([x for _, x in fast], [x for _, x in slow], rtol=1e-12)
