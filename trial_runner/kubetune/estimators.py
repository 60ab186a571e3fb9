"""The estimator and preprocessing allow-lists: names onto classes, default spaces, pipelines.

Nothing is ever imported from a path the user writes; only the names below can be built.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.pipeline import Pipeline

from kubetune.allowlist import ESTIMATOR_MODULES, PREPROCESSOR_MODULES
from kubetune.api.catalog import ESTIMATORS, Task
from kubetune.api.defaults import default_space
from kubetune.api.parameters import Parameter
from kubetune.api.spec import EstimatorSpec, PreprocessingStep
from kubetune.fold import MODEL_STEP


@dataclass(frozen=True)
class EstimatorEntry:
    """An allow-listed estimator: where its class lives and its fixed defaults."""

    name: str
    module: str
    defaults: dict[str, Any] = field(default_factory=dict)
    extra: str | None = None
    """The pip extra that installs it, for optional estimators."""

    @property
    def task(self) -> Task:
        return ESTIMATORS[self.name]

    @property
    def default_space(self) -> list[Parameter]:
        return default_space(self.name)

    def available(self) -> bool:
        return importlib.util.find_spec(self.module.split(".")[0]) is not None

    def load(self) -> type[BaseEstimator]:
        if not self.available():
            raise LookupError(
                f"{self.name} needs the optional extra: pip install 'kubetune[{self.extra}]'"
            )
        cls: type[BaseEstimator] = getattr(importlib.import_module(self.module), self.name)
        return cls


# Fixed defaults that make a fit converge or stay quiet; the spec's params override them.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "LogisticRegression": {"max_iter": 2000},
    "Lasso": {"max_iter": 5000},
    "ElasticNet": {"max_iter": 5000},
    "MLPClassifier": {"max_iter": 500},
    "MLPRegressor": {"max_iter": 500},
    "XGBClassifier": {"verbosity": 0},
    "XGBRegressor": {"verbosity": 0},
    "LGBMClassifier": {"verbose": -1},
    "LGBMRegressor": {"verbose": -1},
}
ESTIMATOR_REGISTRY: dict[str, EstimatorEntry] = {
    name: EstimatorEntry(
        name=name,
        module=module,
        defaults=_DEFAULTS.get(name, {}),
        extra=None if module.startswith("sklearn") else "boost",
    )
    for name, module in ESTIMATOR_MODULES.items()
}


def _load_step(module: str, name: str) -> type[BaseEstimator]:
    cls: type[BaseEstimator] = getattr(importlib.import_module(module), name)
    return cls


PREPROCESSOR_REGISTRY: dict[str, Callable[[], type[BaseEstimator]]] = {
    name: partial(_load_step, module, name) for name, module in PREPROCESSOR_MODULES.items()
}


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
    base = dict(estimator.params)
    problems += _constraint_problems(cls, base, f"{prefix}.estimator.params")
    if problems:  # every tuned value would repeat the fixed parameters' mistake
        return problems
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


def allows_nan(*, estimator: EstimatorSpec) -> bool:
    """Whether the estimator accepts missing values itself (scikit-learn's allow_nan tag)."""
    instance = ESTIMATOR_REGISTRY[estimator.name].load()()
    try:
        return bool(instance.__sklearn_tags__().input_tags.allow_nan)
    except AttributeError:
        return False
