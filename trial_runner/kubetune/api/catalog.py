"""The names users may write: estimators, preprocessing steps, metrics and built-in datasets.

Pure data, no scikit-learn import, so the API models (and the CRD enums made from them) can use it.
``kubetune.estimators`` maps each name onto its class and default search space.
"""

from __future__ import annotations

from typing import Literal

Task = Literal["classification", "regression"]

ESTIMATORS: dict[str, Task] = {
    "LogisticRegression": "classification",
    "Ridge": "regression",
    "Lasso": "regression",
    "ElasticNet": "regression",
    "SVC": "classification",
    "SVR": "regression",
    "KNeighborsClassifier": "classification",
    "KNeighborsRegressor": "regression",
    "RandomForestClassifier": "classification",
    "RandomForestRegressor": "regression",
    "ExtraTreesClassifier": "classification",
    "ExtraTreesRegressor": "regression",
    "GradientBoostingClassifier": "classification",
    "GradientBoostingRegressor": "regression",
    "HistGradientBoostingClassifier": "classification",
    "HistGradientBoostingRegressor": "regression",
    "MLPClassifier": "classification",
    "MLPRegressor": "regression",
    "DummyClassifier": "classification",
    "DummyRegressor": "regression",
    # Optional: need `pip install kubetune[boost]`.
    "XGBClassifier": "classification",
    "XGBRegressor": "regression",
    "LGBMClassifier": "classification",
    "LGBMRegressor": "regression",
}

PREPROCESSORS: tuple[str, ...] = (
    "StandardScaler",
    "MinMaxScaler",
    "RobustScaler",
    "SimpleImputer",
    "OneHotEncoder",
    "PCA",
)

BUILTIN_DATASETS: dict[str, Task] = {
    "iris": "classification",
    "wine": "classification",
    "breast_cancer": "classification",
    "digits": "classification",
    "diabetes": "regression",
}

# scikit-learn scorer names, greater is better (errors are negated, as in GridSearchCV).
CLASSIFICATION_METRICS: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "f1",
    "f1_macro",
    "f1_micro",
    "f1_weighted",
    "precision",
    "precision_macro",
    "precision_micro",
    "precision_weighted",
    "recall",
    "recall_macro",
    "recall_micro",
    "recall_weighted",
    "jaccard",
    "jaccard_macro",
    "jaccard_weighted",
    "matthews_corrcoef",
    "roc_auc",
    "roc_auc_ovr",
    "roc_auc_ovo",
    "roc_auc_ovr_weighted",
    "roc_auc_ovo_weighted",
    "average_precision",
    "neg_log_loss",
    "neg_brier_score",
    "top_k_accuracy",
)
REGRESSION_METRICS: tuple[str, ...] = (
    "r2",
    "explained_variance",
    "neg_mean_squared_error",
    "neg_root_mean_squared_error",
    "neg_mean_absolute_error",
    "neg_median_absolute_error",
    "neg_mean_absolute_percentage_error",
    "neg_mean_squared_log_error",
    "neg_root_mean_squared_log_error",
    "neg_mean_poisson_deviance",
    "neg_mean_gamma_deviance",
    "max_error",
)
# Metrics defined only for two classes.
BINARY_ONLY_METRICS: frozenset[str] = frozenset(
    {"f1", "precision", "recall", "jaccard", "roc_auc", "average_precision", "neg_brier_score"}
)
DEFAULT_METRIC: dict[Task, str] = {"classification": "accuracy", "regression": "r2"}


def metric_bounds(metric: str) -> tuple[float | None, float | None]:
    """The values a scorer can take (None: unbounded), so that intervals stay inside them."""
    if metric.startswith("neg_") or metric == "max_error":  # errors, negated
        return None, 0.0
    if metric in ("r2", "explained_variance"):
        return None, 1.0
    if metric == "matthews_corrcoef":
        return -1.0, 1.0
    if metric in CLASSIFICATION_METRICS:  # accuracy, f1, precision, recall, jaccard, roc_auc...
        return 0.0, 1.0
    return None, None


def metrics_for(task: Task) -> tuple[str, ...]:
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
