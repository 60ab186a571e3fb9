"""Real fits on small data: the engine's promises, end to end without the CLI."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.conftest import tuning_job

from kubetune.api import ModelComparison, load_resource
from kubetune.engine import run_comparison, run_tuning_job

pytestmark = pytest.mark.runner

IRIS_LOGREG: dict[str, Any] = {
    "estimator": {"name": "LogisticRegression"},
    "preprocessing": [{"name": "StandardScaler"}],
    "dataset": {"builtin": "iris"},
    "parameters": [{"name": "C", "float": {"low": 0.001, "high": 100.0, "log": True}}],
    "cv": {"folds": 3},
    "scoring": {"metric": "accuracy", "additional": ["f1_macro"]},
}


def _trials(result: Any) -> list[tuple[int, str, str, float]]:
    return [(r.number, r.stage, repr(r.params), r.mean("accuracy")) for r in result.run.records]


def test_progressive_search_narrows_and_reports_evidence() -> None:
    spec = {
        **IRIS_LOGREG,
        "search": {
            "seed": 1,
            "stages": [
                {"method": "grid", "gridPoints": 4},
                {"method": "random", "trials": 6},
                {"method": "bayesian", "trials": 6},
            ],
            "refinement": {"factor": 0.3, "topK": 1},
        },
    }
    result = run_tuning_job(tuning_job(spec))
    status = result.status
    assert status.phase == "Succeeded"
    assert [s.name for s in status.stages] == ["s1-grid", "s2-random", "s3-bayesian"]
    assert [s.trials.completed for s in status.stages] == [4, 6, 6]
    assert status.trials.completed == 16 and status.progress == "16/16"
    assert status.current_stage == "s3-bayesian"
    # with topK 1 each stage is 0.3 of the original log-width, inside the original bounds
    widths = []
    for stage in status.stages:
        c = stage.space[0].float_
        assert c is not None and 0.001 <= c.low < c.high <= 100.0
        widths.append(math.log(c.high) - math.log(c.low))
    assert widths[1] == pytest.approx(0.3 * widths[0], rel=1e-6)
    best = status.best
    assert best is not None
    all_scores = [r.mean("accuracy") for r in result.run.records]
    assert best.score == max(all_scores)
    assert len(best.fold_scores) == 3 and best.score == pytest.approx(np.mean(best.fold_scores))
    assert best.interval95.low < best.score < best.interval95.high
    assert set(best.metrics) == {"f1_macro"}
    assert status.top_trials[0].trial == best.trial and len(status.top_trials) == 10
    assert {c.type: c.status for c in status.conditions} == {
        "Running": "False",
        "Succeeded": "True",
        "Failed": "False",
        "Suspended": "False",
    }
    repro = status.reproducibility
    assert repro is not None and repro.seed == 1 and repro.cv.splitter == "StratifiedKFold"
    assert repro.dataset.rows == 150 and repro.dataset.fingerprint.startswith("sha256:")
    assert "scikit-learn" in repro.versions
    assert "torch" not in repro.versions  # no GP stage: its libraries are not part of the result


def test_a_gp_run_records_the_gp_samplers_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    from kubetune.engine import library_versions

    installed = {"torch": "2.13.0"}

    def version(name: str) -> str:
        if name in installed:
            return installed[name]
        if name == "greenlet":
            raise importlib.metadata.PackageNotFoundError(name)
        raise AssertionError(f"unexpected lookup of {name}")

    monkeypatch.setattr(importlib.metadata, "version", version)
    versions = library_versions(gp=True)
    assert versions["torch"] == "2.13.0" and versions["greenlet"] == "not installed"
    assert "scikit-learn" in versions


def test_prepare_records_them_for_a_gp_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from kubetune.engine import prepare

    found = importlib.util.find_spec
    # Whether PyTorch is installed here or not, prepare takes it as installed.
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: name == "torch" or found(name))
    spec = {
        "estimator": {"name": "SVC"},
        "dataset": {"builtin": "iris"},
        "search": {"method": "bayesian", "trials": 4, "sampler": "gp"},
    }
    assert {"torch", "greenlet"} <= prepare(tuning_job(spec)).reproducibility.versions.keys()


def test_same_seed_same_trials_whatever_the_parallelism() -> None:
    spec = {
        **IRIS_LOGREG,
        "search": {"method": "bayesian", "trials": 8, "seed": 5, "parallelism": 2},
    }
    one = run_tuning_job(tuning_job(spec), parallelism=1)
    two = run_tuning_job(tuning_job(spec), parallelism=2)
    assert _trials(one) == _trials(two)
    other = run_tuning_job(
        tuning_job({**spec, "search": {**spec["search"], "seed": 6}}), parallelism=1
    )
    assert _trials(other) != _trials(one)


def test_seed_is_chosen_and_recorded_when_omitted() -> None:
    spec = {**IRIS_LOGREG, "search": {"method": "random", "trials": 3}}
    first = run_tuning_job(tuning_job(spec)).status
    assert first.reproducibility is not None
    seed = first.reproducibility.seed
    again = run_tuning_job(tuning_job({**spec, "search": {**spec["search"], "seed": seed}}))
    assert again.status.best is not None and first.best is not None
    assert again.status.best.params == first.best.params


KNN_SOME_FAIL: dict[str, Any] = {
    "estimator": {"name": "KNeighborsClassifier"},
    "dataset": {"builtin": "iris"},
    # iris folds train on 100 rows: 500 neighbours fail at predict time, 3 and 5 work
    "parameters": [{"name": "n_neighbors", "categorical": [3, 5, 500]}],
    "cv": {"folds": 3},
}


def test_a_failing_fit_is_a_failed_trial_not_a_failed_search() -> None:
    spec = {**KNN_SOME_FAIL, "search": {"method": "grid", "seed": 0}}
    result = run_tuning_job(tuning_job(spec))
    status = result.status
    assert status.phase == "Succeeded"
    assert status.trials.completed == 2 and status.trials.failed == 1
    (group,) = status.stages[0].failures
    assert group.count == 1 and "n_neighbors" in group.reason
    failed = [r for r in result.run.records if not r.ok]
    assert failed[0].params == {"n_neighbors": 500} and math.isnan(failed[0].mean("accuracy"))


def test_too_many_failures_fail_the_stage_with_the_reason() -> None:
    spec = {
        **KNN_SOME_FAIL,
        "parameters": [{"name": "n_neighbors", "int": {"low": 200, "high": 600}}],
        "search": {"method": "random", "trials": 20, "seed": 0, "maxFailedTrials": 2},
    }
    status = run_tuning_job(tuning_job(spec)).status
    assert status.phase == "Failed"
    assert status.trials.failed == 3 and status.trials.completed == 0
    failed = {c.type: c for c in status.conditions}["Failed"]
    assert failed.status == "True" and failed.reason == "TooManyFailedTrials"
    assert "more than maxFailedTrials (2)" in failed.message and "n_neighbors" in failed.message


def test_all_trials_failing_fails_with_the_grouped_reason() -> None:
    spec = {
        **KNN_SOME_FAIL,
        "parameters": [{"name": "n_neighbors", "categorical": [400, 500]}],
        "search": {"method": "grid", "seed": 0},
    }
    status = run_tuning_job(tuning_job(spec)).status
    assert status.phase == "Failed" and status.best is None
    assert status.stages[0].phase == "Failed"
    assert status.message is not None and "all 2 trials failed" in status.message


COMPARISON: dict[str, Any] = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "ModelComparison",
    "metadata": {"name": "cmp"},
    "spec": {
        "dataset": {"builtin": "breast_cancer"},
        "cv": {"folds": 4},
        "search": {"method": "random", "trials": 4, "seed": 3, "parallelism": 2},
        "models": [
            {
                "name": "logreg",
                "estimator": {"name": "LogisticRegression"},
                "preprocessing": [{"name": "StandardScaler"}],
            },
            {"name": "dummy", "estimator": {"name": "DummyClassifier"}},
            {
                "name": "knn",
                "estimator": {"name": "KNeighborsClassifier"},
                "preprocessing": [{"name": "StandardScaler"}],
            },
        ],
    },
}


def _comparison(mode: str) -> Any:
    doc = {**COMPARISON, "spec": {**COMPARISON["spec"], "execution": {"mode": mode}}}
    resource = load_resource(doc)
    assert isinstance(resource, ModelComparison)
    return run_comparison(resource)


def test_comparison_ranks_models_on_identical_folds_in_both_modes() -> None:
    parallel, sequential = _comparison("parallel"), _comparison("sequential")
    for result in (parallel, sequential):
        status = result.status
        assert status.phase == "Succeeded"
        assert [e.rank for e in status.ranking] == [1, 2, 3]
        scores = [e.score for e in status.ranking]
        assert scores == sorted(scores, reverse=True)
        assert status.ranking[-1].model == "dummy"
        assert status.best_model == status.ranking[0].model
        assert status.best_score == status.ranking[0].score
        sig = status.significance
        assert sig is not None and sig.winner == status.ranking[0].model
        assert sig.runner_up == status.ranking[1].model
        assert sig.p_value is None or 0 <= sig.p_value <= 1
        assert status.models.completed == 3 and status.trials.completed == 12
    # same seed, same folds: each model's trials do not depend on the scheduling mode
    for a, b in zip(parallel.runs, sequential.runs, strict=True):
        assert [(r.params, r.fold_scores("accuracy")) for r in a.records] == [
            (r.params, r.fold_scores("accuracy")) for r in b.records
        ]


def test_a_failed_model_ranks_last_and_the_comparison_still_succeeds() -> None:
    spec = {
        **COMPARISON["spec"],
        "models": [
            COMPARISON["spec"]["models"][0],
            {
                "name": "broken",
                "estimator": {"name": "KNeighborsClassifier"},
                "parameters": [{"name": "n_neighbors", "categorical": [1000]}],
            },
        ],
    }
    resource = load_resource({**COMPARISON, "spec": spec})
    assert isinstance(resource, ModelComparison)
    status = run_comparison(resource).status
    assert status.phase == "Succeeded"
    assert [(e.model, e.phase) for e in status.ranking] == [
        ("logreg", "Succeeded"),
        ("broken", "Failed"),
    ]
    assert status.ranking[1].score is None and status.ranking[1].message
    assert status.significance is None


def test_categorical_file_data_with_one_hot_encoding(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 120
    colour = rng.choice(["red", "green", "blue"], size=n)
    size = rng.normal(size=n)
    label = np.where((colour == "red") | (size > 1), "yes", "no")
    lines = ["colour,size,label"] + [
        f"{c},{s:.3f},{y}" for c, s, y in zip(colour, size, label, strict=True)
    ]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    spec = {
        "estimator": {"name": "LogisticRegression"},
        "preprocessing": [{"name": "StandardScaler"}, {"name": "OneHotEncoder"}],
        "dataset": {"file": {"path": "train.csv", "target": "label"}},
        "search": {"method": "random", "trials": 3, "seed": 0},
        "cv": {"folds": 3},
    }
    status = run_tuning_job(tuning_job(spec), base_dir=tmp_path).status
    assert status.phase == "Succeeded"
    assert status.best is not None and status.best.score > 0.8
    assert status.reproducibility is not None
    assert status.reproducibility.dataset.source == "train.csv"


def test_scikit_learn_n_jobs_still_works_after_a_parallel_run() -> None:
    """The executor uses joblib's own pool: a later n_jobs=2 in the same process must work."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    spec = {**IRIS_LOGREG, "search": {"method": "random", "trials": 2, "seed": 0}}
    run_tuning_job(tuning_job(spec), parallelism=2)
    X, y = load_iris(return_X_y=True)
    scores = cross_val_score(LogisticRegression(max_iter=500), X, y, n_jobs=2)
    assert len(scores) == 5


def test_parallel_run_holds_the_data_once_in_the_shared_map_and_gives_it_back() -> None:
    """With workers, the main process reads the workers' memory map instead of its own copy
    while they fit; afterwards the data is in memory again, usable by anything (the file is
    gone, and joblib would send a map to its workers by file name)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from kubetune.engine import prepare, refit

    spec = {**IRIS_LOGREG, "search": {"method": "random", "trials": 3, "seed": 0}}
    job = tuning_job(spec)
    original = prepare(job)
    X, y = np.array(original.data.X), np.array(original.data.y)
    seen: list[tuple[bool, bool]] = []

    class Watch:
        def trial(self, run: Any, record: Any) -> None:
            data = run.prepared.data
            seen.append((isinstance(data.X, np.memmap), bool(data.X.flags.writeable)))

        def stage(self, run: Any, stage: Any) -> None:
            pass

    one = run_tuning_job(job, parallelism=1, prepared=prepare(job), reporter=Watch())
    assert seen == [(False, True)] * 3  # no workers, no file
    seen.clear()
    shared = prepare(job)
    two = run_tuning_job(job, parallelism=2, prepared=shared, reporter=Watch())
    assert seen == [(True, False)] * 3
    assert not isinstance(shared.data.X, np.memmap) and shared.data.X.flags.writeable
    np.testing.assert_array_equal(shared.data.X, X)
    np.testing.assert_array_equal(shared.data.y, y)
    assert _trials(one) == _trials(two)
    scores = cross_val_score(
        LogisticRegression(max_iter=500), shared.data.X, shared.data.y, n_jobs=2
    )
    assert len(scores) == 5
    model, reference = refit(two.run), refit(one.run)
    assert model is not None and reference is not None
    np.testing.assert_allclose(model.predict_proba(X), reference.predict_proba(X))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bayesian_batch_is_asked_whole_before_any_of_it_is_told(
    workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the capacity and the timing, every candidate of a batch is asked before a
    result of that batch is told, so the same seed gives the same trials (here three models
    share the workers, and the queue is full mid-batch)."""
    from kubetune.strategies import StageSearch

    events: dict[int, list[str]] = {}
    ask, tell = StageSearch.ask, StageSearch.tell

    def logged_ask(self: StageSearch) -> Any:
        events.setdefault(id(self), []).append("a")
        return ask(self)

    def logged_tell(self: StageSearch, *args: Any, **kwargs: Any) -> None:
        events.setdefault(id(self), []).append("t")
        tell(self, *args, **kwargs)

    monkeypatch.setattr(StageSearch, "ask", logged_ask)
    monkeypatch.setattr(StageSearch, "tell", logged_tell)
    doc = {
        **COMPARISON,
        "spec": {
            **COMPARISON["spec"],
            "search": {"method": "bayesian", "trials": 6, "seed": 3, "parallelism": 3},
        },
    }
    resource = load_resource(doc)
    assert isinstance(resource, ModelComparison)
    result = run_comparison(resource, parallelism=workers)
    assert result.status.phase == "Succeeded"
    assert sorted(events.values()) == [list("aaatttaaattt")] * 3
