"""The Argo CD health checks, run as Lua (lupa) on statuses from real runs and the operator."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from lupa import LuaRuntime
from tests.conftest import EXAMPLES, tuning_job

from kubetune.api import ModelComparison, TuningJobSpec, load_resource
from kubetune.engine import run_comparison, run_tuning_job
from kubetune_operator.config import OperatorConfig
from kubetune_operator.planner import JobView, Meta, plan_invalid, plan_tuning

ARGOCD = EXAMPLES / "argocd"
KEY = "resource.customizations.health.kubetune.io_{}"


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    """Run the check exactly as the argocd-cm ConfigMap ships it."""
    data = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())["data"]
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(data[KEY.format(kind)])
    return str(result["status"]), str(result["message"])


def _obj(status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "x", "generation": generation}, "spec": {}}
    if status is not None:
        obj["status"] = status
    return obj


SPEC = TuningJobSpec.model_validate(
    {
        "estimator": {"name": "SVC"},
        "dataset": {"builtin": "iris"},
        "search": {"method": "random", "trials": 3, "seed": 1},
    }
)
META = Meta(name="x", namespace="ns", uid="u", generation=1)
NOW = datetime(2026, 11, 23, tzinfo=UTC)


def _operator(
    spec: TuningJobSpec, status: dict[str, Any], jobs: list[JobView] = ()
) -> dict[str, Any]:  # type: ignore[assignment]
    return plan_tuning(
        meta=META,
        spec=spec,
        status=status,
        jobs={j.name: j for j in jobs},
        config=OperatorConfig(metrics_port=0),
        new_seed=1,
        now=NOW,
    ).status


@pytest.mark.unit
@pytest.mark.parametrize("kind", ["TuningJob", "ModelComparison"])
def test_no_status_and_a_lagging_generation_are_progressing(kind: str) -> None:
    assert health(kind, _obj(None))[0] == "Progressing"
    status, message = health(kind, _obj({"phase": "Succeeded", "observedGeneration": 1}, 2))
    assert status == "Progressing" and "generation 2" in message


@pytest.mark.unit
def test_operator_statuses_map_onto_argocd_health() -> None:
    running = _operator(SPEC, {})
    assert health("TuningJob", _obj(running)) == ("Progressing", "running s1-random")
    suspended = _operator(
        SPEC.model_copy(update={"suspend": True}), running, [JobView(name="x-s1-random", active=1)]
    )
    assert health("TuningJob", _obj(suspended))[0] == "Suspended"
    failed = _operator(
        SPEC,
        running,
        [
            JobView(
                name="x-s1-random",
                failed=1,
                failed_final=True,
                termination_message="error: no such file",
            )
        ],
    )
    assert health("TuningJob", _obj(failed)) == ("Degraded", failed["message"])
    invalid = plan_invalid(
        kind="TuningJob", status={}, message="spec.estimator.name: unknown", generation=1
    ).status
    assert health("TuningJob", _obj(invalid))[0] == "Degraded"


@pytest.mark.runner
def test_statuses_of_real_runs_map_onto_argocd_health() -> None:
    ok = run_tuning_job(
        tuning_job(
            {
                "estimator": {"name": "LogisticRegression"},
                "dataset": {"builtin": "iris"},
                "cv": {"folds": 3},
                "search": {"method": "random", "trials": 3, "seed": 0},
            }
        )
    )
    status = {**ok.status.to_dict(), "observedGeneration": 1}
    verdict, message = health("TuningJob", _obj(status))
    assert verdict == "Healthy" and "best accuracy" in message
    bad = run_tuning_job(
        tuning_job(
            {
                "estimator": {"name": "KNeighborsClassifier"},
                "dataset": {"builtin": "iris"},
                "parameters": [{"name": "n_neighbors", "categorical": [500]}],
                "cv": {"folds": 3},
                "search": {"method": "grid", "seed": 0},
            }
        )
    )
    assert health("TuningJob", _obj({**bad.status.to_dict(), "observedGeneration": 1}))[0] == (
        "Degraded"
    )
    comparison = load_resource(yaml.safe_load((EXAMPLES / "modelcomparison.yaml").read_text()))
    assert isinstance(comparison, ModelComparison)
    small = comparison.model_copy(
        update={
            "spec": comparison.spec.model_copy(
                update={
                    "search": comparison.spec.search.model_copy(update={"trials": 2}),
                    "models": comparison.spec.models[1:],
                }
            )
        }
    )
    mc = run_comparison(small).status
    verdict, message = health("ModelComparison", _obj({**mc.to_dict(), "observedGeneration": 1}))
    assert verdict == "Healthy" and "best model" in message


@pytest.mark.unit
def test_argocd_examples_carry_the_sync_options_our_crds_need() -> None:
    tuning = yaml.safe_load((ARGOCD / "application-tuningjobs.yaml").read_text())
    assert "SkipDryRunOnMissingResource=true" in tuning["spec"]["syncPolicy"]["syncOptions"]
    assert tuning["spec"]["syncPolicy"]["automated"]["prune"] is False
    operator = yaml.safe_load((ARGOCD / "application-operator.yaml").read_text())
    assert operator["spec"]["source"]["path"] == "charts/kubetune"
    folder = ARGOCD / "tuningjobs"
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert kustomization["resources"]
    for name in kustomization["resources"]:
        resource = load_resource(yaml.safe_load((folder / name).read_text()))
        assert resource.kind in ("TuningJob", "ModelComparison")
