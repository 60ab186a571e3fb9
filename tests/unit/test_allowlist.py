"""The allow-lists' modules: in step with the catalog of names, and read from a raw spec."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune.allowlist import (
    ESTIMATOR_MODULES,
    MODULES,
    PREPROCESSOR_MODULES,
    fitting_modules,
)
from kubetune.api.catalog import ESTIMATORS, PREPROCESSORS

pytestmark = pytest.mark.unit


def test_every_allowed_name_has_a_module_and_no_other() -> None:
    assert set(ESTIMATOR_MODULES) == set(ESTIMATORS)
    assert set(PREPROCESSOR_MODULES) == set(PREPROCESSORS)
    assert {*ESTIMATOR_MODULES.values(), *PREPROCESSOR_MODULES.values()} == MODULES


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # a TuningJob's spec (a stage task's spec is one too)
        ({"estimator": {"name": "SVC"}}, ["sklearn.svm"]),
        (
            {
                "estimator": {"name": "HistGradientBoostingClassifier"},
                "preprocessing": [{"name": "SimpleImputer"}, {"name": "StandardScaler"}],
            },
            ["sklearn.ensemble", "sklearn.impute", "sklearn.preprocessing"],
        ),
        # a ModelComparison's: every model's estimator and steps, once each
        (
            {
                "models": [
                    {"name": "a", "estimator": {"name": "SVC"}},
                    {"name": "b", "estimator": {"name": "SVR"}, "preprocessing": [{"name": "PCA"}]},
                    {"name": "c", "estimator": {"name": "XGBClassifier"}},
                ]
            },
            ["sklearn.decomposition", "sklearn.svm", "xgboost"],
        ),
        # what validation will refuse is skipped, never imported
        ({"estimator": {"name": "os.system"}}, []),
        # (the estimator's module; the odd steps skipped)
        (
            {"estimator": {"name": "SVC"}, "preprocessing": [{"name": "sklearn.svm"}, 3]},
            ["sklearn.svm"],
        ),
        ({"estimator": "SVC", "preprocessing": "PCA"}, []),
        ({"models": [None, {"estimator": {"name": ["SVC"]}}]}, []),
        ({"models": "SVC"}, []),
        (None, []),
        ([{"estimator": {"name": "SVC"}}], []),
    ],
)
def test_the_modules_a_raw_spec_names(spec: Any, expected: list[str]) -> None:
    assert fitting_modules(spec) == expected
