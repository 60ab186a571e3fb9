from __future__ import annotations

from typing import Any

import pytest
import yaml
from tests.conftest import EXAMPLES

from kubetune.api import (
    ModelComparison,
    Parameter,
    SearchSpec,
    SpecError,
    TuningJob,
    load_resource,
)

pytestmark = pytest.mark.unit


def _doc(spec: dict[str, Any], kind: str = "TuningJob") -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x"},
        "spec": spec,
    }


BASE = {"estimator": {"name": "SVC"}, "dataset": {"builtin": "iris"}}


def problems(spec: dict[str, Any], kind: str = "TuningJob") -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_resource(_doc(spec, kind))
    return caught.value.problems


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_loads(path: Any) -> None:
    resource = load_resource(yaml.safe_load(path.read_text()))
    assert isinstance(resource, TuningJob | ModelComparison)


def test_design_example_reads_camel_case_into_snake_case() -> None:
    job = load_resource(yaml.safe_load((EXAMPLES / "tuningjob.yaml").read_text()))
    assert isinstance(job, TuningJob)
    assert job.spec.search.refinement.top_k == 5
    assert job.spec.search.max_failed_trials == 5
    assert job.spec.search.stage_list()[0].grid_points == 3
    assert job.spec.parameters is not None
    assert job.spec.parameters[1].choices == [4, 8, 16, None]
    assert job.spec.parameters[3].int_ is not None and job.spec.parameters[3].int_.log


def test_unknown_field_is_named() -> None:
    assert problems({**BASE, "paramters": []}) == ["spec.paramters: unknown field"]


def test_unknown_nested_field_is_named() -> None:
    lines = problems({**BASE, "search": {"method": "random", "trails": 5}})
    assert lines == ["spec.search.trails: unknown field"]


def test_unknown_estimator_suggests_the_close_name() -> None:
    (line,) = problems({**BASE, "estimator": {"name": "RandomForestClassifer"}})
    assert line.startswith("spec.estimator.name: unknown estimator 'RandomForestClassifer'")
    assert "RandomForestClassifier" in line


def test_import_path_is_not_an_estimator() -> None:
    (line,) = problems({**BASE, "estimator": {"name": "sklearn.svm.SVC"}})
    assert "unknown estimator" in line


@pytest.mark.parametrize(
    ("parameter", "expected"),
    [
        ({"name": "C", "float": {"low": 2, "high": 1}}, "low (2.0) must be below high (1.0)"),
        ({"name": "C", "float": {"low": 0, "high": 1, "log": True}}, "log range needs low > 0"),
        ({"name": "n", "int": {"low": 1, "high": 10, "step": 4}}, "multiple of step"),
        ({"name": "C", "float": {"low": 1, "high": 2}, "categorical": [1]}, "exactly one"),
        ({"name": "C"}, "exactly one of int, float or categorical, got none"),
        ({"name": "k", "categorical": ["a", "a"]}, "repeats a categorical choice"),
        ({"name": "k", "categorical": []}, "at least 1 item"),
        ({"name": "bad-name", "categorical": [1]}, "should match pattern"),
    ],
)
def test_parameter_invariants(parameter: dict[str, Any], expected: str) -> None:
    (line,) = problems({**BASE, "parameters": [parameter]})
    assert line.startswith("spec.parameters[0]")
    assert expected in line


def test_duplicate_parameter_and_fixed_and_tuned() -> None:
    (dup,) = problems({**BASE, "parameters": [{"name": "C", "categorical": [1]}] * 2})
    assert "'C' is listed twice" in dup
    (both,) = problems(
        {
            **BASE,
            "estimator": {"name": "SVC", "params": {"C": 1}},
            "parameters": [{"name": "C", "categorical": [1, 2]}],
        }
    )
    assert "both fixed" in both


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ({"method": "progressive", "trials": 5}, "per stage"),
        ({"method": "random", "stages": [{"method": "grid"}]}, "progressive only"),
        ({"method": "random", "sampler": "gp"}, "does not fit method 'random'"),
        ({"method": "bayesian", "gridPoints": 3}, "gridPoints applies to method grid only"),
        ({"method": "anneal"}, "Input should be"),
        ({"parallelism": 0}, "greater than or equal to 1"),
    ],
)
def test_search_invariants(search: dict[str, Any], expected: str) -> None:
    lines = problems({**BASE, "search": search})
    assert any(expected in line and line.startswith("spec.search") for line in lines), lines


def test_task_mismatches() -> None:
    (metric,) = problems({**BASE, "scoring": {"metric": "r2"}})
    assert "'r2' does not fit a classification task" in metric
    (data,) = problems({**BASE, "dataset": {"builtin": "diabetes"}})
    assert "regression dataset" in data
    mixed = problems(
        {
            "dataset": {"builtin": "iris"},
            "models": [
                {"name": "a", "estimator": {"name": "SVC"}},
                {"name": "b", "estimator": {"name": "Ridge"}},
            ],
        },
        kind="ModelComparison",
    )
    assert any("mix classifiers and regressors" in line for line in mixed)


def test_comparison_needs_two_distinct_models() -> None:
    one = problems(
        {"dataset": {"builtin": "iris"}, "models": [{"name": "a", "estimator": {"name": "SVC"}}]},
        kind="ModelComparison",
    )
    assert any(line.startswith("spec.models") and "at least 2" in line for line in one)
    twice = problems(
        {
            "dataset": {"builtin": "iris"},
            "models": [
                {"name": "a", "estimator": {"name": "SVC"}},
                {"name": "a", "estimator": {"name": "SVC"}},
            ],
        },
        kind="ModelComparison",
    )
    assert any("'a' is listed twice" in line for line in twice)


def test_dataset_exactly_one_source() -> None:
    (line,) = problems(
        {**BASE, "dataset": {"builtin": "iris", "file": {"path": "a.csv", "target": "y"}}}
    )
    assert line.startswith("spec.dataset") and "exactly one" in line


def test_wrong_api_version_and_kind() -> None:
    with pytest.raises(SpecError, match="apiVersion"):
        load_resource({**_doc(BASE), "apiVersion": "kubetune.io/v1"})
    with pytest.raises(SpecError, match="kind"):
        load_resource({**_doc(BASE), "kind": "Experiment"})


def test_default_progressive_stages_and_child_spec() -> None:
    assert [s.method for s in SearchSpec().stage_list()] == ["grid", "random", "bayesian"]
    comparison = load_resource(yaml.safe_load((EXAMPLES / "modelcomparison.yaml").read_text()))
    assert isinstance(comparison, ModelComparison)
    child = comparison.spec.child_spec(comparison.spec.models[1])
    assert child.estimator.name == "HistGradientBoostingClassifier"
    assert child.cv == comparison.spec.cv and child.search == comparison.spec.search
    assert child.parameters is not None and child.parameters[0].name == "learning_rate"


def test_round_trip_keeps_camel_case_and_nulls_in_choices() -> None:
    p = Parameter.model_validate({"name": "max_depth", "categorical": [4, None, [1, 2], "a"]})
    assert p.to_dict() == {"name": "max_depth", "categorical": [4, None, [1, 2], "a"]}
    spec = load_resource(_doc({**BASE, "search": {"maxFailedTrials": 3}})).spec
    assert spec.to_dict()["search"]["maxFailedTrials"] == 3
