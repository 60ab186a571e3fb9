from __future__ import annotations

import math
from typing import Any

import pytest

from kubetune.api import ModelComparisonSpec, Parameter, Refinement, SearchSpec, TuningJobSpec
from kubetune.api.spec import MAX_TRIALS
from kubetune.planning import (
    grid_size,
    grid_values,
    plan_stage,
    planned_total,
    planned_trials,
    refine_space,
    search_problems,
    stage_name,
)

pytestmark = pytest.mark.unit


def P(**kwargs: Any) -> Parameter:
    return Parameter.model_validate(kwargs)


@pytest.mark.parametrize(
    ("param", "points", "expected"),
    [
        (P(name="n", int={"low": 50, "high": 400, "step": 50}), 3, [50, 250, 400]),
        (P(name="n", int={"low": 1, "high": 3}), 5, [1, 2, 3]),
        (P(name="n", int={"low": 1, "high": 100, "log": True}), 3, [1, 10, 100]),
        (P(name="f", float={"low": 0.0, "high": 1.0}), 5, [0.0, 0.25, 0.5, 0.75, 1.0]),
        (P(name="f", float={"low": 0.001, "high": 1000.0, "log": True}), 3, [0.001, 1.0, 1000.0]),
        (P(name="f", float={"low": 0.0, "high": 1.0, "step": 0.3}), 3, [0.0, 0.6, 0.9]),
        (P(name="c", categorical=["a", None, [1, 2]]), 2, ["a", None, [1, 2]]),
    ],
)
def test_grid_values(param: Parameter, points: int, expected: list[Any]) -> None:
    values = grid_values(param, grid_points=points)
    assert len(values) == len(expected)
    for got, want in zip(values, expected, strict=True):
        if isinstance(want, float):
            assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)  # type: ignore[arg-type]
        else:
            assert got == want


def test_grid_size_is_the_product() -> None:
    space = [P(name="a", categorical=[1, 2]), P(name="b", float={"low": 0, "high": 1})]
    assert grid_size(space, grid_points=4) == 8


SPACE = [
    P(name="n", int={"low": 50, "high": 400, "step": 50}),
    P(name="depth", categorical=[4, 8, 16, None]),
    P(name="frac", float={"low": 0.1, "high": 1.0}),
    P(name="C", float={"low": 1e-3, "high": 1e3, "log": True}),
]


def _refine(top: list[dict[str, Any]], factor: float = 0.3, k: int = 5) -> dict[str, Parameter]:
    space = refine_space(
        space=SPACE, original=SPACE, top=top, refinement=Refinement(factor=factor, top_k=k)
    )
    return {p.name: p for p in space}


def test_refinement_narrows_around_the_best_inside_the_bounds() -> None:
    out = _refine([{"n": 200, "depth": 8, "frac": 0.5, "C": 1.0}])
    n, frac, c = out["n"].int_, out["frac"].float_, out["C"].float_
    assert n is not None and frac is not None and c is not None
    assert (frac.low, frac.high) == pytest.approx((0.365, 0.635))  # 0.3 x 0.9 wide, centred
    assert n.step == 50 and n.low <= 200 <= n.high and (n.low - 50) % 50 == 0
    assert n.high - n.low < 350
    # log range narrowed in log space: width 0.3 x log(1e6), centred on log(1)
    assert math.log(c.high) - math.log(c.low) == pytest.approx(0.3 * math.log(1e6), rel=1e-6)
    assert c.log and math.log(c.low) == pytest.approx(-math.log(c.high), rel=1e-6)
    assert out["depth"].choices == [8]


def test_refinement_holds_every_top_k_value() -> None:
    top = [
        {"n": 100, "depth": None, "frac": 0.2, "C": 10.0},
        {"n": 350, "depth": 4, "frac": 0.9, "C": 0.01},
    ]
    out = _refine(top)
    frac = out["frac"].float_
    assert frac is not None and frac.low <= 0.2 and frac.high >= 0.9
    assert out["depth"].choices == [4, None]  # original order kept


def test_refinement_moves_the_window_at_a_bound_instead_of_cutting_it() -> None:
    frac = _refine([{"n": 50, "depth": 4, "frac": 0.1, "C": 1e-3}])["frac"].float_
    assert frac is not None
    assert frac.low == pytest.approx(0.1) and frac.high == pytest.approx(0.1 + 0.27)
    n = _refine([{"n": 400, "depth": 4, "frac": 0.1, "C": 1e-3}])["n"].int_
    assert n is not None and n.high == 400 and n.low < 400


def test_refinement_without_results_keeps_the_space() -> None:
    assert refine_space(space=SPACE, original=SPACE, top=[], refinement=Refinement()) == SPACE


def test_refinement_uses_only_top_k() -> None:
    top = [
        {"n": 200, "depth": 8, "frac": 0.5, "C": 1.0},
        {"n": 400, "depth": 16, "frac": 1.0, "C": 1000.0},
    ]
    assert _refine(top, k=1)["depth"].choices == [8]
    assert _refine(top, k=2)["depth"].choices == [8, 16]


def test_plan_stage_defaults() -> None:
    search = SearchSpec(seed=None, parallelism=3)
    plans = [plan_stage(search=search, index=i, space=SPACE, seed=10) for i in range(3)]
    assert [p.name for p in plans] == ["s1-grid", "s2-random", "s3-bayesian"]
    assert [p.sampler for p in plans] == ["grid", "random", "tpe"]
    assert [p.seed for p in plans] == [10, 11, 12]
    assert plans[0].trials is None and plans[1].trials == 30 and plans[2].trials == 20
    assert planned_trials(plans[0]) == 3 * 4 * 3 * 3
    assert planned_total(search=search, space=SPACE) == 108 + 30 + 20
    assert stage_name(0, "grid") == "s1-grid"


def _job(parameters: list[dict[str, Any]], search: dict[str, Any]) -> TuningJobSpec:
    return TuningJobSpec.model_validate(
        {
            "dataset": {"builtin": "iris"},
            "estimator": {"name": "LogisticRegression"},
            "parameters": parameters,
            "search": search,
        }
    )


def _choices(*sizes: int) -> list[dict[str, Any]]:
    return [{"name": f"p{i}", "categorical": list(range(n))} for i, n in enumerate(sizes)]


AT_LIMIT = _choices(10, 10, 10, 100)  # exactly the most a stage may run
PAST_LIMIT = _choices(10, 10, 11, 100)


def test_a_grid_may_have_as_many_points_as_a_stage_may_run_trials() -> None:
    spec = _job(AT_LIMIT, {"method": "grid"})
    assert grid_size(spec.parameters, grid_points=3) == MAX_TRIALS
    assert search_problems(spec) == []
    ranges = [{"name": n, "float": {"low": 0.1, "high": 10}} for n in ("C", "tol")]
    assert search_problems(_job(ranges, {"method": "grid", "gridPoints": 50})) == []


def test_an_uncapped_grid_past_the_limit_is_a_problem_and_a_capped_one_is_not() -> None:
    (problem,) = search_problems(_job(PAST_LIMIT, {"method": "grid"}))
    assert problem.startswith(
        "search: the grid has 110,000 points (10 x 10 x 11 x 100), more than the 100,000"
    )
    assert "cap it with trials" in problem
    assert search_problems(_job(PAST_LIMIT, {"method": "grid", "trials": 500})) == []
    assert search_problems(_job(PAST_LIMIT, {"method": "random", "trials": 500})) == []


def test_a_progressive_grid_stage_and_a_comparison_model_are_named() -> None:
    stages = [{"method": "random", "trials": 5}, {"method": "grid"}]
    (problem,) = search_problems(_job(PAST_LIMIT, {"method": "progressive", "stages": stages}))
    assert problem.startswith("search.stages[1]: the grid has 110,000 points")
    comparison = ModelComparisonSpec.model_validate(
        {
            "dataset": {"builtin": "iris"},
            "models": [
                {"name": "small", "estimator": {"name": "LogisticRegression"}},
                {
                    "name": "big",
                    "estimator": {"name": "LogisticRegression"},
                    "parameters": PAST_LIMIT,
                },
            ],
            "search": {"method": "grid"},
        }
    )
    (problem,) = search_problems(comparison)
    assert problem.startswith("search: model 'big': the grid has 110,000 points")


def test_grid_cap() -> None:
    search = SearchSpec(method="grid", trials=10)
    assert planned_trials(plan_stage(search=search, index=0, space=SPACE, seed=0)) == 10


def test_each_stage_narrows_the_last_one_by_the_factor() -> None:
    best = {"n": 200, "depth": 8, "frac": 0.5, "C": 1.0}
    refinement = Refinement(factor=0.3, top_k=1)
    second = refine_space(space=SPACE, original=SPACE, top=[best], refinement=refinement)
    third = refine_space(space=second, original=SPACE, top=[best], refinement=refinement)
    widths = [
        {p.name: (p.float_.high - p.float_.low) for p in s if p.float_ and not p.float_.log}
        for s in (SPACE, second, third)
    ]
    assert widths[1]["frac"] == pytest.approx(0.3 * 0.9)
    assert widths[2]["frac"] == pytest.approx(0.3 * 0.3 * 0.9)
    (c,) = [p.float_ for p in third if p.name == "C"]
    assert c is not None
    assert math.log(c.high / c.low) == pytest.approx(0.09 * math.log(1e6), rel=1e-6)
