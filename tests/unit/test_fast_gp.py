"""kubetune.fast_gp: optuna's GPSampler without its device mode, same trials."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest

from kubetune import fast_gp
from kubetune.api import Parameter, SearchSpec
from kubetune.planning import plan_stage
from kubetune.strategies import make_sampler

pytestmark = pytest.mark.unit

torch = pytest.importorskip("torch")


def _trials(sampler: optuna.samplers.BaseSampler, n: int) -> list[dict[str, Any]]:
    # A float, an integer too wide for optuna's exhaustive search, and a category: every
    # branch of its acquisition search.
    study = optuna.create_study(sampler=sampler, direction="maximize")
    for _ in range(n):
        trial = study.ask()
        x = trial.suggest_float("x", 1e-3, 1e3, log=True)
        k = trial.suggest_int("k", 0, 500)
        kind = trial.suggest_categorical("kind", ["a", "b", "c"])
        study.tell(trial, -abs(math.log10(x) - 1.0) - abs(k - 321) / 100 - (kind != "b"))
    return [t.params for t in study.trials]


def test_same_trials_as_optunas_sampler() -> None:
    ours = _trials(fast_gp.GPSampler(seed=3, n_startup_trials=4), 10)
    theirs = _trials(optuna.samplers.GPSampler(seed=3, n_startup_trials=4), 10)
    assert ours == theirs


def test_acquisition_search_runs_without_torch_function_modes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[bool] = []
    original = optuna.samplers.GPSampler._optimize_acqf

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch._C._is_torch_function_mode_enabled())
        return original(*args, **kwargs)

    monkeypatch.setattr(optuna.samplers.GPSampler, "_optimize_acqf", spy)
    _trials(fast_gp.GPSampler(seed=0, n_startup_trials=3), 5)
    assert seen == [False, False]
    # optuna's own sampler runs it under its CPU device mode: the spy can tell the two apart.
    seen.clear()
    _trials(optuna.samplers.GPSampler(seed=0, n_startup_trials=3), 5)
    assert seen == [True, True]


def test_tensors_are_made_on_the_cpu_inside() -> None:
    with fast_gp._torch_functions_off():
        assert torch.zeros(1).device.type == "cpu"


def test_bayesian_gp_plans_use_it() -> None:
    space = [Parameter.model_validate({"name": "C", "float": {"low": 0.1, "high": 10.0}})]
    spec = SearchSpec(method="bayesian", sampler="gp", seed=1, trials=12)
    plan = plan_stage(search=spec, index=0, space=space, seed=1)
    assert isinstance(make_sampler(plan, budget=12), fast_gp.GPSampler)
