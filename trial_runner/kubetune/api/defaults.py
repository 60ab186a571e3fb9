"""Each allow-listed estimator's default search space, used when spec.parameters is omitted.

Pure data (no scikit-learn import): the operator plans stages with it as well as the runner.
"""

from __future__ import annotations

from typing import Any

from kubetune.api.parameters import Parameter


def _space(*items: dict[str, Any]) -> list[Parameter]:
    return [Parameter.model_validate(item) for item in items]


def _log(low: float, high: float) -> dict[str, Any]:
    return {"low": low, "high": high, "log": True}


_FOREST = _space(
    {"name": "n_estimators", "int": {"low": 50, "high": 500, "step": 50}},
    {"name": "max_depth", "categorical": [4, 8, 16, 32, None]},
    {"name": "max_features", "float": {"low": 0.1, "high": 1.0}},
    {"name": "min_samples_leaf", "int": _log(1, 20)},
)
_GRADIENT_BOOSTING = _space(
    {"name": "n_estimators", "int": {"low": 50, "high": 500, "step": 50}},
    {"name": "learning_rate", "float": _log(0.01, 0.3)},
    {"name": "max_depth", "int": {"low": 2, "high": 8}},
    {"name": "subsample", "float": {"low": 0.5, "high": 1.0}},
)
_HIST_GRADIENT_BOOSTING = _space(
    {"name": "learning_rate", "float": _log(0.01, 0.3)},
    {"name": "max_iter", "int": {"low": 50, "high": 500, "step": 50}},
    {"name": "max_leaf_nodes", "int": _log(8, 128)},
    {"name": "min_samples_leaf", "int": _log(5, 100)},
    {"name": "l2_regularization", "float": _log(1e-6, 10.0)},
)
_KNN = _space(
    {"name": "n_neighbors", "int": _log(1, 50)},
    {"name": "weights", "categorical": ["uniform", "distance"]},
    {"name": "p", "categorical": [1, 2]},
)
_MLP = _space(
    {"name": "hidden_layer_sizes", "categorical": [[64], [128], [64, 64], [128, 64]]},
    {"name": "alpha", "float": _log(1e-6, 1e-1)},
    {"name": "learning_rate_init", "float": _log(1e-4, 1e-1)},
)
_XGB = _space(
    {"name": "n_estimators", "int": {"low": 50, "high": 500, "step": 50}},
    {"name": "learning_rate", "float": _log(0.01, 0.3)},
    {"name": "max_depth", "int": {"low": 2, "high": 10}},
    {"name": "subsample", "float": {"low": 0.5, "high": 1.0}},
    {"name": "colsample_bytree", "float": {"low": 0.5, "high": 1.0}},
)
_LGBM = _space(
    {"name": "n_estimators", "int": {"low": 50, "high": 500, "step": 50}},
    {"name": "learning_rate", "float": _log(0.01, 0.3)},
    {"name": "num_leaves", "int": _log(8, 256)},
    {"name": "min_child_samples", "int": _log(5, 100)},
    {"name": "subsample", "float": {"low": 0.5, "high": 1.0}},
)


DEFAULT_SPACES: dict[str, list[Parameter]] = {
    "LogisticRegression": _space({"name": "C", "float": _log(1e-4, 1e2)}),
    "Ridge": _space({"name": "alpha", "float": _log(1e-3, 1e3)}),
    "Lasso": _space({"name": "alpha", "float": _log(1e-4, 10.0)}),
    "ElasticNet": _space(
        {"name": "alpha", "float": _log(1e-4, 10.0)},
        {"name": "l1_ratio", "float": {"low": 0.05, "high": 1.0}},
    ),
    "SVC": _space(
        {"name": "C", "float": _log(1e-2, 1e3)}, {"name": "gamma", "float": _log(1e-4, 1.0)}
    ),
    "SVR": _space(
        {"name": "C", "float": _log(1e-2, 1e3)},
        {"name": "gamma", "float": _log(1e-4, 1.0)},
        {"name": "epsilon", "float": _log(1e-3, 1.0)},
    ),
    "KNeighborsClassifier": _KNN,
    "KNeighborsRegressor": _KNN,
    "RandomForestClassifier": _FOREST,
    "RandomForestRegressor": _FOREST,
    "ExtraTreesClassifier": _FOREST,
    "ExtraTreesRegressor": _FOREST,
    "GradientBoostingClassifier": _GRADIENT_BOOSTING,
    "GradientBoostingRegressor": _GRADIENT_BOOSTING,
    "HistGradientBoostingClassifier": _HIST_GRADIENT_BOOSTING,
    "HistGradientBoostingRegressor": _HIST_GRADIENT_BOOSTING,
    "MLPClassifier": _MLP,
    "MLPRegressor": _MLP,
    "DummyClassifier": _space(
        {"name": "strategy", "categorical": ["most_frequent", "prior", "stratified", "uniform"]}
    ),
    "DummyRegressor": _space({"name": "strategy", "categorical": ["mean", "median"]}),
    "XGBClassifier": _XGB,
    "XGBRegressor": _XGB,
    "LGBMClassifier": _LGBM,
    "LGBMRegressor": _LGBM,
}


def default_space(estimator: str) -> list[Parameter]:
    return list(DEFAULT_SPACES[estimator])
