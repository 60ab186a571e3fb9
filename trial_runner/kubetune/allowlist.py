"""Where each allow-listed estimator and preprocessing step is imported from: pure data.

``kubetune.estimators`` builds its registries from these tables (nothing is ever imported from a
path the user writes). They sit apart from it, with no import at all, because the start-up reads
them before anything heavy is loaded: :func:`fitting_modules` names the modules that the workers'
fork server imports once for a job, instead of each worker at its first fit (kubetune.pool).
The names are those of kubetune.api.catalog; a unit test keeps the two in step.
"""

from __future__ import annotations

_ESTIMATORS_BY_MODULE: dict[str, list[str]] = {
    "sklearn.linear_model": ["LogisticRegression", "Ridge", "Lasso", "ElasticNet"],
    "sklearn.svm": ["SVC", "SVR"],
    "sklearn.neighbors": ["KNeighborsClassifier", "KNeighborsRegressor"],
    "sklearn.ensemble": [
        "RandomForestClassifier",
        "RandomForestRegressor",
        "ExtraTreesClassifier",
        "ExtraTreesRegressor",
        "GradientBoostingClassifier",
        "GradientBoostingRegressor",
        "HistGradientBoostingClassifier",
        "HistGradientBoostingRegressor",
    ],
    "sklearn.neural_network": ["MLPClassifier", "MLPRegressor"],
    "sklearn.dummy": ["DummyClassifier", "DummyRegressor"],
    "xgboost": ["XGBClassifier", "XGBRegressor"],
    "lightgbm": ["LGBMClassifier", "LGBMRegressor"],
}
ESTIMATOR_MODULES: dict[str, str] = {
    name: module for module, names in _ESTIMATORS_BY_MODULE.items() for name in names
}

PREPROCESSOR_MODULES: dict[str, str] = {
    "StandardScaler": "sklearn.preprocessing",
    "MinMaxScaler": "sklearn.preprocessing",
    "RobustScaler": "sklearn.preprocessing",
    "SimpleImputer": "sklearn.impute",
    "OneHotEncoder": "sklearn.preprocessing",
    "PCA": "sklearn.decomposition",
}

# Every module above: the only ones kubetune.worker_preload imports for a job.
MODULES: frozenset[str] = frozenset(ESTIMATOR_MODULES.values()) | frozenset(
    PREPROCESSOR_MODULES.values()
)


def fitting_modules(spec: object) -> list[str]:
    """The modules of the estimators and steps an unvalidated spec names, in a stable order.

    Reads a TuningJob's or a ModelComparison's spec (or a stage task's) as the YAML gave it,
    before validation, only to start importing early: names off the allow-lists, and anything
    malformed, are skipped (validation reports them).
    """
    tuned = [spec]
    if isinstance(spec, dict) and isinstance(spec.get("models"), list):
        tuned += spec["models"]
    modules: set[str] = set()
    for part in tuned:
        if not isinstance(part, dict):
            continue
        estimator = part.get("estimator")
        name = estimator.get("name") if isinstance(estimator, dict) else None
        if isinstance(name, str) and name in ESTIMATOR_MODULES:
            modules.add(ESTIMATOR_MODULES[name])
        steps = part.get("preprocessing")
        for step in steps if isinstance(steps, list) else []:
            name = step.get("name") if isinstance(step, dict) else None
            if isinstance(name, str) and name in PREPROCESSOR_MODULES:
                modules.add(PREPROCESSOR_MODULES[name])
    return sorted(modules)
