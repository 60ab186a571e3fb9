"""The estimator and preprocessing allow-lists: names onto classes, default spaces, pipelines.

Nothing is ever imported from a path the user writes; only the names below can be built.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sklearn.base import BaseEstimator, clone
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.pipeline import Pipeline

from kubetune.api.catalog import ESTIMATORS, Task
from kubetune.api.parameters import Parameter
from kubetune.api.spec import EstimatorSpec, PreprocessingStep

MODEL_STEP = "model"


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


@dataclass(frozen=True)
class EstimatorEntry:
    """An allow-listed estimator: where its class lives, its default space and fixed defaults."""

    name: str
    module: str
    default_space: list[Parameter]
    defaults: dict[str, Any] = field(default_factory=dict)
    extra: str | None = None
    """The pip extra that installs it, for optional estimators."""

    @property
    def task(self) -> Task:
        return ESTIMATORS[self.name]

    def available(self) -> bool:
        return importlib.util.find_spec(self.module.split(".")[0]) is not None

    def load(self) -> type[BaseEstimator]:
        if not self.available():
            raise LookupError(
                f"{self.name} needs the optional extra: pip install 'kubetune[{self.extra}]'"
            )
        return getattr(importlib.import_module(self.module), self.name)


def _entry(name: str, module: str, *space: Parameter, **defaults: Any) -> EstimatorEntry:
    return EstimatorEntry(name=name, module=module, default_space=list(space), defaults=defaults)


ESTIMATOR_REGISTRY: dict[str, EstimatorEntry] = {
    e.name: e
    for e in [
        _entry(
            "LogisticRegression",
            "sklearn.linear_model",
            *_space({"name": "C", "float": _log(1e-4, 1e2)}),
            max_iter=2000,
        ),
        _entry(
            "Ridge", "sklearn.linear_model", *_space({"name": "alpha", "float": _log(1e-3, 1e3)})
        ),
        _entry(
            "Lasso",
            "sklearn.linear_model",
            *_space({"name": "alpha", "float": _log(1e-4, 10.0)}),
            max_iter=5000,
        ),
        _entry(
            "ElasticNet",
            "sklearn.linear_model",
            *_space(
                {"name": "alpha", "float": _log(1e-4, 10.0)},
                {"name": "l1_ratio", "float": {"low": 0.05, "high": 1.0}},
            ),
            max_iter=5000,
        ),
        _entry(
            "SVC",
            "sklearn.svm",
            *_space(
                {"name": "C", "float": _log(1e-2, 1e3)}, {"name": "gamma", "float": _log(1e-4, 1.0)}
            ),
        ),
        _entry(
            "SVR",
            "sklearn.svm",
            *_space(
                {"name": "C", "float": _log(1e-2, 1e3)},
                {"name": "gamma", "float": _log(1e-4, 1.0)},
                {"name": "epsilon", "float": _log(1e-3, 1.0)},
            ),
        ),
        _entry("KNeighborsClassifier", "sklearn.neighbors", *_KNN),
        _entry("KNeighborsRegressor", "sklearn.neighbors", *_KNN),
        _entry("RandomForestClassifier", "sklearn.ensemble", *_FOREST),
        _entry("RandomForestRegressor", "sklearn.ensemble", *_FOREST),
        _entry("ExtraTreesClassifier", "sklearn.ensemble", *_FOREST),
        _entry("ExtraTreesRegressor", "sklearn.ensemble", *_FOREST),
        _entry("GradientBoostingClassifier", "sklearn.ensemble", *_GRADIENT_BOOSTING),
        _entry("GradientBoostingRegressor", "sklearn.ensemble", *_GRADIENT_BOOSTING),
        _entry("HistGradientBoostingClassifier", "sklearn.ensemble", *_HIST_GRADIENT_BOOSTING),
        _entry("HistGradientBoostingRegressor", "sklearn.ensemble", *_HIST_GRADIENT_BOOSTING),
        _entry("MLPClassifier", "sklearn.neural_network", *_MLP, max_iter=500),
        _entry("MLPRegressor", "sklearn.neural_network", *_MLP, max_iter=500),
        _entry(
            "DummyClassifier",
            "sklearn.dummy",
            *_space(
                {
                    "name": "strategy",
                    "categorical": ["most_frequent", "prior", "stratified", "uniform"],
                }
            ),
        ),
        _entry(
            "DummyRegressor",
            "sklearn.dummy",
            *_space({"name": "strategy", "categorical": ["mean", "median"]}),
        ),
    ]
}
for _name, _space_, _extra_defaults in [
    ("XGBClassifier", _XGB, {"verbosity": 0}),
    ("XGBRegressor", _XGB, {"verbosity": 0}),
    ("LGBMClassifier", _LGBM, {"verbose": -1}),
    ("LGBMRegressor", _LGBM, {"verbose": -1}),
]:
    ESTIMATOR_REGISTRY[_name] = EstimatorEntry(
        name=_name,
        module="xgboost" if _name.startswith("XGB") else "lightgbm",
        default_space=_space_,
        defaults=_extra_defaults,
        extra="boost",
    )

PREPROCESSOR_REGISTRY: dict[str, Callable[[], type[BaseEstimator]]] = {
    "StandardScaler": lambda: _sk("sklearn.preprocessing", "StandardScaler"),
    "MinMaxScaler": lambda: _sk("sklearn.preprocessing", "MinMaxScaler"),
    "RobustScaler": lambda: _sk("sklearn.preprocessing", "RobustScaler"),
    "SimpleImputer": lambda: _sk("sklearn.impute", "SimpleImputer"),
    "OneHotEncoder": lambda: _sk("sklearn.preprocessing", "OneHotEncoder"),
    "PCA": lambda: _sk("sklearn.decomposition", "PCA"),
}


def _sk(module: str, name: str) -> type[BaseEstimator]:
    return getattr(importlib.import_module(module), name)


def resolve_space(
    *, estimator: EstimatorSpec, parameters: list[Parameter] | None
) -> list[Parameter]:
    """The space to search: the spec's parameters, or the estimator's default space."""
    if parameters:
        return list(parameters)
    return list(ESTIMATOR_REGISTRY[estimator.name].default_space)


def make_estimator(*, spec: EstimatorSpec, seed: int) -> BaseEstimator:
    """The estimator with its fixed parameters.

    random_state is the search seed and n_jobs is 1 (kubetune already runs ``parallelism``
    fits at once) unless the spec fixes them.
    """
    entry = ESTIMATOR_REGISTRY[spec.name]
    cls = entry.load()
    estimator = cls()
    known = estimator.get_params(deep=False)
    params = dict(entry.defaults)
    if "random_state" in known:
        params["random_state"] = seed
    if "n_jobs" in known:
        params["n_jobs"] = 1
    params.update(spec.params)
    return estimator.set_params(
        **{k: v for k, v in params.items() if k in known or k in spec.params}
    )


def make_pipeline(
    *,
    estimator: EstimatorSpec,
    preprocessing: Sequence[PreprocessingStep],
    categorical_columns: Sequence[str],
    seed: int,
) -> Pipeline:
    """Preprocessing steps then the estimator, as one pipeline fitted inside each fold.

    With non-numeric columns, OneHotEncoder applies to those columns (after a most-frequent
    SimpleImputer when one is listed) and the other steps before PCA apply to the numeric ones.
    """
    model = make_estimator(spec=estimator, seed=seed)
    built = [(step.name, _make_step(step, seed)) for step in preprocessing]
    steps: list[tuple[str, Any]] = []
    if categorical_columns and any(name == "OneHotEncoder" for name, _ in built):
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline as sk_make_pipeline

        numeric: list[Any] = []
        categorical: list[Any] = []
        after: list[tuple[str, Any]] = []
        for name, step in built:
            if name == "OneHotEncoder":
                categorical.append(step)
            elif name == "PCA" or after:
                after.append((name.lower(), step))
            else:
                numeric.append(step)
                if name == "SimpleImputer":
                    categorical.insert(0, SimpleImputer(strategy="most_frequent"))
        columns = ColumnTransformer(
            [
                (
                    "numeric",
                    sk_make_pipeline(*numeric) if numeric else "passthrough",
                    make_column_selector(dtype_include="number"),
                ),
                ("categorical", sk_make_pipeline(*categorical), list(categorical_columns)),
            ],
            sparse_threshold=0.0,
        )
        steps = [("columns", columns), *after]
    else:
        steps = [(name.lower(), step) for name, step in built if name != "OneHotEncoder"]
    names = [name for name, _ in steps]
    steps = [(f"{n}{i}" if names.count(n) > 1 else n, s) for i, (n, s) in enumerate(steps)]
    return Pipeline([*steps, (MODEL_STEP, model)])


def _make_step(step: PreprocessingStep, seed: int) -> BaseEstimator:
    cls = PREPROCESSOR_REGISTRY[step.name]()
    params: dict[str, Any] = {}
    if step.name == "OneHotEncoder":
        params = {"handle_unknown": "ignore", "sparse_output": False}
    if step.name == "PCA":
        params = {"random_state": seed}
    params.update(step.params)
    return cls().set_params(**params)


def param_problems(
    *,
    estimator: EstimatorSpec,
    preprocessing: Sequence[PreprocessingStep],
    space: Sequence[Parameter],
    prefix: str = "spec",
) -> list[str]:
    """Every fixed or tuned parameter that the estimator or a step does not have, or rejects.

    Values are checked with scikit-learn's own parameter constraints: fixed values as given,
    tuned ranges at both ends and every categorical choice.
    """
    entry = ESTIMATOR_REGISTRY[estimator.name]
    try:
        cls = entry.load()
    except LookupError as error:
        return [f"{prefix}.estimator.name: {error}"]
    problems: list[str] = []
    known = sorted(cls().get_params(deep=False))
    for name in estimator.params:
        if name not in known:
            problems.append(
                f"{prefix}.estimator.params.{name}: {_unknown(name, estimator.name, known)}"
            )
    for i, p in enumerate(space):
        if p.name not in known:
            problems.append(
                f"{prefix}.parameters[{i}].name: {_unknown(p.name, estimator.name, known)}"
            )
    if problems:
        return problems
    base = {k: v for k, v in estimator.params.items()}
    problems += _constraint_problems(cls, base, f"{prefix}.estimator.params")
    for i, p in enumerate(space):
        for value in _probe_values(p):
            found = _constraint_problems(cls, {**base, p.name: value}, f"{prefix}.parameters[{i}]")
            if found:
                problems += found
                break
    for i, step in enumerate(preprocessing):
        step_cls = PREPROCESSOR_REGISTRY[step.name]()
        step_known = sorted(step_cls().get_params(deep=False))
        for name in step.params:
            if name not in step_known:
                where = f"{prefix}.preprocessing[{i}].params.{name}"
                problems.append(f"{where}: {_unknown(name, step.name, step_known)}")
        if not problems:
            problems += _constraint_problems(
                step_cls, step.params, f"{prefix}.preprocessing[{i}].params"
            )
    return problems


def _unknown(name: str, owner: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=2)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"{owner} has no parameter {name!r}{hint}"


def _probe_values(p: Parameter) -> list[Any]:
    r = p.int_ or p.float_
    if r is not None:
        return [r.low, r.high]
    return p.choices


def _constraint_problems(cls: type[BaseEstimator], params: dict[str, Any], where: str) -> list[str]:
    try:
        instance = cls().set_params(**params)
        validate = getattr(instance, "_validate_params", None)
        if validate is not None:
            validate()
    except (TypeError, ValueError) as error:
        return [f"{where}: {str(error).splitlines()[0]}"]
    return []


def clone_with(pipeline: Pipeline, params: dict[str, Any]) -> Pipeline:
    """A fresh copy of the pipeline with the tuned parameters set on the estimator."""
    return clone(pipeline).set_params(**{f"{MODEL_STEP}__{k}": v for k, v in params.items()})


def allows_nan(*, estimator: EstimatorSpec) -> bool:
    """Whether the estimator accepts missing values itself (scikit-learn's allow_nan tag)."""
    instance = ESTIMATOR_REGISTRY[estimator.name].load()()
    try:
        return bool(instance.__sklearn_tags__().input_tags.allow_nan)
    except AttributeError:
        return False
