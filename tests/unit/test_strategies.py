from __future__ import annotations

import json
from typing import Any

import pytest

from kubetune.api import Parameter, SearchSpec
from kubetune.planning import plan_stage
from kubetune.strategies import Candidate, StageSearch

pytestmark = pytest.mark.unit

SPACE = [
    Parameter.model_validate({"name": "x", "float": {"low": -5.0, "high": 5.0}}),
    Parameter.model_validate({"name": "k", "int": {"low": 1, "high": 9}}),
    Parameter.model_validate({"name": "layers", "categorical": [[8], [8, 8], None]}),
]


def _search(method: str, seed: int = 3, parallelism: int = 2, **kw: Any) -> StageSearch:
    spec = SearchSpec(method=method, seed=seed, parallelism=parallelism, **kw)
    return StageSearch(plan_stage(search=spec, index=0, space=SPACE, seed=seed))


def _objective(c: Candidate) -> float:
    return -((c.params["x"] - 1.0) ** 2) - abs(c.params["k"] - 4)


def _run(search: StageSearch) -> list[Candidate]:
    seen: list[Candidate] = []
    while not search.done:
        batch = []
        while search.can_ask():
            batch.append(search.ask())
        assert batch, "a search that is not done must have something to ask"
        for c in batch:
            search.tell(c, _objective(c))
        seen += batch
    return seen


def _key(c: Candidate) -> str:
    return json.dumps(c.params, sort_keys=True)


@pytest.mark.parametrize("method", ["grid", "random", "bayesian"])
def test_same_seed_same_candidates(method: str) -> None:
    kw = {} if method == "grid" else {"trials": 14}
    first = [_key(c) for c in _run(_search(method, **kw))]
    again = [_key(c) for c in _run(_search(method, **kw))]
    other = [_key(c) for c in _run(_search(method, seed=4, **kw))]
    assert first == again
    assert first != other


def test_grid_visits_every_point_once_with_list_choices_decoded() -> None:
    seen = _run(_search("grid", gridPoints=3))
    keys = {_key(c) for c in seen}
    assert len(seen) == len(keys) == 3 * 3 * 3
    assert {json.dumps(c.params["layers"]) for c in seen} == {"[8]", "[8, 8]", "null"}
    assert [c.number for c in seen] == list(range(27))


def test_grid_cap_takes_a_subset() -> None:
    seen = _run(_search("grid", trials=5))
    assert len({_key(c) for c in seen}) == 5


def test_bayesian_asks_in_batches_of_parallelism() -> None:
    search = _search("bayesian", trials=7, parallelism=3)
    first = [search.ask() for _ in range(3)]
    assert not search.can_ask()  # the next batch waits for this one
    for c in first[:2]:
        search.tell(c, _objective(c))
    assert not search.can_ask()
    search.tell(first[2], _objective(first[2]))
    assert search.can_ask()
    rest = _run(search)
    assert len(rest) == 4 and search.done


def test_bayesian_beats_random_on_a_smooth_objective() -> None:
    def best(method: str, seed: int) -> float:
        seen = _run(_search(method, seed=seed, trials=40, parallelism=1))
        return max(_objective(c) for c in seen)

    seeds = range(5)
    tpe = sum(best("bayesian", s) for s in seeds)
    rnd = sum(best("random", s) for s in seeds)
    assert tpe > rnd


def test_failures_are_counted_and_stop_stops_asking() -> None:
    search = _search("random", trials=10)
    c = search.ask()
    search.tell(c, float("nan"))
    assert search.failed == 1
    search.stop()
    assert not search.can_ask()
    assert search.done


def test_warm_start_adds_only_trials_inside_the_space() -> None:
    spec = SearchSpec(method="bayesian", trials=5, seed=0)
    plan = plan_stage(search=spec, index=0, space=SPACE, seed=0)
    inside = {"x": 0.5, "k": 3, "layers": [8]}
    outside = {"x": 50.0, "k": 3, "layers": [8]}
    unknown_choice = {"x": 0.5, "k": 3, "layers": [16]}
    search = StageSearch(
        plan,
        warm_start=[(inside, 1.0), (outside, 2.0), (unknown_choice, 3.0), (inside, float("nan"))],
    )
    assert search.warm_started == 1
    assert len(search.study.trials) == 1


def test_gp_sampler_runs_pytorch_on_one_thread() -> None:
    torch = pytest.importorskip("torch")
    from kubetune.strategies import make_sampler

    torch.set_num_threads(2)
    try:
        spec = SearchSpec(method="bayesian", sampler="gp", seed=1, trials=12)
        sampler = make_sampler(plan_stage(search=spec, index=0, space=SPACE, seed=1), budget=12)
        assert type(sampler).__name__ == "GPSampler"
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bayesian_startup_covers_each_range_evenly(seed: int) -> None:
    # 16 trials start with 4 points: one in each quarter of x's range (independent draws land
    # so in fewer than one case in ten).
    search = _search("bayesian", seed=seed, trials=16, parallelism=4)
    startup = [search.ask() for _ in range(4)]
    quarters = sorted(int((c.params["x"] + 5.0) // 2.5) for c in startup)
    assert quarters == [0, 1, 2, 3]


def test_bayesian_startup_is_shortened_by_warm_start() -> None:
    spec = SearchSpec(method="bayesian", trials=16, seed=0, parallelism=4)
    plan = plan_stage(search=spec, index=0, space=SPACE, seed=0)
    previous = [({"x": x, "k": 3, "layers": [8]}, -abs(x)) for x in (-4.0, -1.0, 2.0)]
    search = StageSearch(plan, warm_start=previous)
    fixed = StageSearch(plan)
    first = search.ask()
    # One startup point left after three earlier trials: the same as a cold stage's first.
    assert first.params == fixed.ask().params
    assert search.ask().params != fixed.ask().params


@pytest.mark.parametrize(
    ("dist", "expected"),
    [
        ({"float": {"low": 1e-3, "high": 1e3, "log": True}}, [1e-3, 1.0, 1e3]),
        ({"float": {"low": 0.0, "high": 1.0, "step": 0.25}}, [0.0, 0.5, 1.0]),
        # each integer owns +-0.5 around it on the log scale
        ({"int": {"low": 1, "high": 100, "log": True}}, [1, 7, 100]),
        ({"int": {"low": 2, "high": 10, "step": 2}}, [2, 6, 10]),
        ({"categorical": ["a", "b", "c"]}, ["a", "b", "c"]),
    ],
)
def test_from_unit_spans_the_distribution(dist: dict[str, Any], expected: list[Any]) -> None:
    from kubetune.space import distributions
    from kubetune.strategies import from_unit

    (d,) = distributions([Parameter.model_validate({"name": "p", **dist})]).values()
    got = [from_unit(u, d) for u in (0.0, 0.5, 0.999999)]
    if isinstance(expected[0], float):
        assert got == pytest.approx(expected, rel=0.02)
    else:
        assert got == expected
    assert all(d._contains(d.to_internal_repr(v)) for v in got)
