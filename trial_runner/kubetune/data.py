"""Load the training data a spec names and check that it fits the task, folds and metrics.

Every problem with the data is reported as one :class:`DataError`: a single readable line that
names the YAML field to blame, never a pandas or pyarrow traceback. Files are read with pandas
(CSV) or pyarrow (Parquet); nothing is ever unpickled.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kubetune.api.catalog import BINARY_ONLY_METRICS, CLASSIFICATION_METRICS, Task
from kubetune.api.spec import DatasetSpec, FileDataset, SyntheticDataset
from kubetune.api.status import DatasetRecord

__all__ = ["DataError", "LoadedData", "check_dataset", "fingerprint_arrays", "load_dataset"]

FORMATS: dict[str, str] = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet"}
"""File-name endings and the format they imply."""

_CHUNK = 1 << 20
_MAX_NAMES = 8
_MAX_MESSAGE = 200
# Binary-only metrics whose scorer assumes the positive class is labelled 1.
_POS_LABEL_ONE = frozenset({"f1", "precision", "recall", "jaccard", "average_precision"})
# Binary-only metrics whose scorer cannot infer a positive class from text labels.
_NUMERIC_LABELS = frozenset({"neg_brier_score"})
# Multiclass alternatives where the catalog has no _ovr / _macro / _weighted variant.
_ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "average_precision": ("roc_auc_ovr", "roc_auc_ovr_weighted"),
    "neg_brier_score": ("neg_log_loss",),
}


class DataError(ValueError):
    """Bad input data, reported as one readable line.

    Attributes:
        field: The YAML path to blame, such as ``dataset.file.target``.
        message: What is wrong and, where possible, how to fix it.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = " ".join(message.split())  # one line, whatever the message held
        super().__init__(f"{field}: {self.message}")


@dataclass(frozen=True)
class LoadedData:
    """Training data ready for cross-validation.

    Attributes:
        X: A float64 array when every feature is numeric; a DataFrame only when some feature
            column is non-numeric (text, category, or booleans with gaps read as objects).
        y: The 1-D target: the class labels as written (ints or strings) for classification,
            float64 for regression.
        feature_names: The feature columns, in order.
        categorical_columns: The non-numeric feature columns (empty when X is an array).
        record: Source, fingerprint and shape, for the reproducibility record in status.
        missing_features: Feature column -> number of missing values, for columns with any.
    """

    X: np.ndarray | pd.DataFrame
    y: np.ndarray
    feature_names: list[str]
    categorical_columns: list[str]
    record: DatasetRecord
    missing_features: dict[str, int] = field(default_factory=dict)


def load_dataset(*, spec: DatasetSpec, task: Task, base_dir: Path | None = None) -> LoadedData:
    """Load the data a spec names.

    Args:
        spec: The dataset spec: exactly one of builtin, file or synthetic.
        task: The estimator's task; it decides how the target is read.
        base_dir: Folder that relative file paths resolve against (the YAML file's folder);
            the current directory when omitted.

    Returns:
        The features, the target and a record of what was loaded.

    Raises:
        DataError: The data cannot be loaded or cannot serve the task.
    """
    if spec.builtin is not None:
        return _load_builtin(spec.builtin, task)
    if spec.synthetic is not None:
        return _load_synthetic(spec.synthetic, task)
    if spec.file is not None:
        return _load_file(spec.file, task, base_dir)
    raise DataError("dataset", "set one of builtin, file or synthetic")


def check_dataset(
    *,
    data: LoadedData,
    task: Task,
    folds: int,
    metrics: list[str],
    has_encoder: bool,
    has_imputer: bool,
    allows_nan: bool,
) -> None:
    """Check, before any fit, that the data fits the folds, the preprocessing and the metrics.

    Args:
        data: What :func:`load_dataset` returned.
        task: The estimator's task.
        folds: ``cv.folds``.
        metrics: The objective and the additional metrics.
        has_encoder: Preprocessing lists a OneHotEncoder.
        has_imputer: Preprocessing lists a SimpleImputer.
        allows_nan: The estimator accepts missing values itself.

    Raises:
        DataError: The first problem found, naming the field to change.
    """
    rows = data.record.rows
    if rows < 2 * folds:
        raise DataError(
            "cv.folds",
            f"the data has {rows} rows, too few for {folds} folds: "
            f"need at least {2 * folds} (2 per fold); lower cv.folds or add rows",
        )
    if task == "classification":
        _check_classes(data.y, folds, metrics)
    if data.categorical_columns and not has_encoder:
        raise DataError(
            "preprocessing",
            f"non-numeric feature columns {_names(data.categorical_columns)} "
            "need {name: OneHotEncoder} in preprocessing",
        )
    if not has_imputer and not allows_nan:
        # A OneHotEncoder turns a missing category into a category of its own.
        skip = set(data.categorical_columns) if has_encoder else set()
        missing = {c: n for c, n in data.missing_features.items() if c not in skip}
        if missing:
            example = (
                "HistGradientBoostingClassifier"
                if task == "classification"
                else "HistGradientBoostingRegressor"
            )
            counts = [f"{c} ({n})" for c, n in missing.items()]
            raise DataError(
                "preprocessing",
                f"feature columns with missing values: {_names(counts)}; add "
                f"{{name: SimpleImputer}} to preprocessing or use an estimator that accepts "
                f"missing values, such as {example}",
            )


def fingerprint_arrays(*arrays: np.ndarray) -> str:
    """``sha256:<hex>`` over the C-contiguous bytes of the arrays, in order.

    Used for built-in and synthetic data, whose fingerprint is over the loaded arrays (not a
    file). Object arrays cannot be hashed this way.
    """
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).data)
    return f"sha256:{digest.hexdigest()}"


def fingerprint_file(path: Path) -> str:
    """``sha256:<hex>`` of the file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


# --- built-in and synthetic data -------------------------------------------------------------


def _builtin_loaders() -> dict[str, Callable[..., Any]]:
    from sklearn import datasets

    return {
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "digits": datasets.load_digits,
        "diabetes": datasets.load_diabetes,
    }


def _load_builtin(name: str, task: Task) -> LoadedData:
    from kubetune.api.catalog import BUILTIN_DATASETS

    loaders = _builtin_loaders()
    if name not in loaders:
        raise DataError(
            "dataset.builtin", f"unknown builtin dataset {name!r}; allowed: {', '.join(loaders)}"
        )
    if BUILTIN_DATASETS[name] != task:
        raise DataError(
            "dataset.builtin", f"{name!r} is a {BUILTIN_DATASETS[name]} dataset, not {task}"
        )
    bunch = loaders[name]()
    X = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target)
    y = y.astype(np.float64, copy=False) if task == "regression" else y
    names = bunch.get("feature_names")
    feature_names = [str(n) for n in names] if names is not None else _default_names(X.shape[1])
    return _from_arrays(X, y, feature_names, f"builtin:{name}", task)


def _load_synthetic(spec: SyntheticDataset, task: Task) -> LoadedData:
    from sklearn.datasets import make_classification, make_regression

    if spec.task != task:
        raise DataError(
            "dataset.synthetic.task",
            f"the data is made for {spec.task} but the estimator does {task}",
        )
    features = spec.features
    if spec.informative is not None and spec.informative > features:
        raise DataError(
            "dataset.synthetic.informative",
            f"{spec.informative} informative features exceed the {features} features; "
            "lower informative or raise features",
        )
    informative = spec.informative or min(max(2, features // 10), features)
    if task == "classification":
        clusters = _clusters_per_class(spec, informative)
        X, y = make_classification(
            n_samples=spec.samples,
            n_features=features,
            n_informative=informative,
            n_redundant=min(2, features - informative),
            n_repeated=0,
            n_classes=spec.classes,
            n_clusters_per_class=clusters,
            random_state=spec.seed,
        )
        y = np.asarray(y, dtype=np.int64)
    else:
        X, y = make_regression(
            n_samples=spec.samples,
            n_features=features,
            n_informative=informative,
            noise=spec.noise,
            random_state=spec.seed,
        )
        y = np.asarray(y, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    return _from_arrays(X, y, _default_names(features), f"synthetic:{task}", task)


def _clusters_per_class(spec: SyntheticDataset, informative: int) -> int:
    """Two clusters per class when the informative features allow it, else one."""
    room = 2**informative
    if spec.classes * 2 <= room:
        return 2
    if spec.classes <= room:
        return 1
    needed = int(np.ceil(np.log2(spec.classes)))
    if spec.informative is not None:
        raise DataError(
            "dataset.synthetic.informative",
            f"{spec.classes} classes need at least {needed} informative features "
            f"(classes <= 2**informative), got {informative}",
        )
    raise DataError(
        "dataset.synthetic.classes",
        f"{spec.classes} classes need at least {needed} informative features "
        f"(classes <= 2**informative) but {spec.features} features give {informative}; "
        "lower classes or set more features and informative",
    )


def _default_names(count: int) -> list[str]:
    return [f"x{i}" for i in range(count)]


def _from_arrays(
    X: np.ndarray, y: np.ndarray, feature_names: list[str], source: str, task: Task
) -> LoadedData:
    nan_counts = np.isnan(X).sum(axis=0)
    missing = {feature_names[i]: int(nan_counts[i]) for i in np.flatnonzero(nan_counts)}
    record = DatasetRecord(
        source=source,
        fingerprint=fingerprint_arrays(X, y),
        rows=int(X.shape[0]),
        columns=int(X.shape[1]),
        classes=len(pd.unique(y)) if task == "classification" else None,
    )
    return LoadedData(
        X=X,
        y=y,
        feature_names=feature_names,
        categorical_columns=[],
        record=record,
        missing_features=missing,
    )


# --- files -----------------------------------------------------------------------------------


def _load_file(spec: FileDataset, task: Task, base_dir: Path | None) -> LoadedData:
    path = _resolve(spec.path, base_dir)
    fmt = _format_of(spec, path)
    frame = _read(path, fmt)
    columns = [str(c) for c in frame.columns]
    if any(not isinstance(c, str) for c in frame.columns):
        frame.columns = pd.Index(columns)
    features = _feature_columns(spec, columns, path)
    target = frame[spec.target]
    y, classes = _target(target, spec.target, task)
    X_frame = frame[features]
    missing_counts = X_frame.isna().sum()
    missing = {str(c): int(n) for c, n in missing_counts.items() if n}
    categorical = [c for c in features if _is_categorical(X_frame[c].dtype)]
    X: np.ndarray | pd.DataFrame
    X = X_frame if categorical else X_frame.to_numpy(dtype=np.float64, na_value=np.nan)
    record = DatasetRecord(
        source=spec.path,
        fingerprint=fingerprint_file(path),
        rows=len(frame),
        columns=len(features),
        classes=classes,
    )
    return LoadedData(
        X=X,
        y=y,
        feature_names=features,
        categorical_columns=categorical,
        record=record,
        missing_features=missing,
    )


def _resolve(raw: str, base_dir: Path | None) -> Path:
    path = Path(raw)
    if not path.is_absolute():
        path = (base_dir if base_dir is not None else Path.cwd()) / path
    path = path.absolute()
    if not path.exists():
        raise DataError("dataset.file.path", f"no such file: {path}")
    if path.is_dir():
        raise DataError("dataset.file.path", f"is a directory, not a file: {path}")
    return path


def _format_of(spec: FileDataset, path: Path) -> str:
    if spec.format is not None:
        return spec.format
    name = path.name.lower()
    for ending, fmt in FORMATS.items():
        if name.endswith(ending):
            return fmt
    raise DataError(
        "dataset.file.format",
        f"cannot tell the format of {path.name!r} from its extension "
        f"(known: {', '.join(FORMATS)}); set format to csv or parquet",
    )


def _read(path: Path, fmt: str) -> pd.DataFrame:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError("dataset.file.path", f"cannot read {path}: {_summary(exc)}") from None
    if size == 0:
        raise DataError("dataset.file.path", f"the file is empty (0 bytes): {path}")
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path, engine="pyarrow")
        else:
            frame = pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError:
        raise DataError("dataset.file.path", f"the file holds no columns: {path}") from None
    except Exception as exc:  # pandas and pyarrow raise many types; none may escape
        raise DataError(
            "dataset.file.path", f"cannot read {path} as {fmt}: {_summary(exc)}"
        ) from None
    if len(frame.columns) == 0:
        raise DataError("dataset.file.path", f"the file holds no columns: {path}")
    if len(frame) == 0:
        raise DataError(
            "dataset.file.path",
            f"the file has no data rows (columns {_names([str(c) for c in frame.columns])}): "
            f"{path}",
        )
    return frame


def _feature_columns(spec: FileDataset, columns: list[str], path: Path) -> list[str]:
    available = set(columns)
    if spec.target not in available:
        raise DataError(
            "dataset.file.target",
            f"no column {spec.target!r} in {path.name}{_did_you_mean(spec.target, columns)}; "
            f"columns: {_names(columns)}",
        )
    if spec.features is None:
        features = [c for c in columns if c != spec.target]
        if not features:
            raise DataError(
                "dataset.file",
                f"no feature columns left: {path.name} holds only the target {spec.target!r}",
            )
        return features
    seen: set[str] = set()
    for name in spec.features:
        if name == spec.target:
            raise DataError(
                "dataset.file.features", f"the target {name!r} is listed among the features"
            )
        if name not in available:
            raise DataError(
                "dataset.file.features",
                f"no column {name!r} in {path.name}{_did_you_mean(name, columns)}; "
                f"columns: {_names(columns)}",
            )
        if name in seen:
            raise DataError("dataset.file.features", f"column {name!r} is listed twice")
        seen.add(name)
    return list(spec.features)


def _target(series: pd.Series, name: str, task: Task) -> tuple[np.ndarray, int | None]:
    """The target as an array, and the number of classes for classification."""
    gaps = series.isna().to_numpy()
    if gaps.any():
        rows = np.flatnonzero(gaps)
        first = ", ".join(str(int(r)) for r in rows[:3])
        more = ", ..." if len(rows) > 3 else ""
        raise DataError(
            "dataset.file.target",
            f"column {name!r} has no value in {len(rows)} rows (data rows {first}{more}, "
            "counted from 0); drop or fill those rows",
        )
    dtype = series.dtype
    if task == "regression":
        if _is_categorical(dtype):
            raise DataError(
                "dataset.file.target",
                f"regression needs a numeric target, but column {name!r} holds values such as "
                f"{_label(series.iloc[0])}; use a classifier or another column",
            )
        return series.to_numpy(dtype=np.float64), None
    y = series.to_numpy(dtype=object) if _is_categorical(dtype) else series.to_numpy()
    if pd.api.types.is_float_dtype(y.dtype) and not np.all(np.mod(y, 1) == 0):
        example = y[np.flatnonzero(np.mod(y, 1))[0]]
        raise DataError(
            "dataset.file.target",
            f"classification needs class labels, but column {name!r} holds continuous values "
            f"such as {_label(example)}; use a regressor or another column",
        )
    labels = pd.unique(y)
    if len(labels) < 2:
        raise DataError(
            "dataset.file.target",
            f"column {name!r} holds a single class ({_label(labels[0])}); "
            "classification needs at least two",
        )
    return y, len(labels)


def _is_categorical(dtype: Any) -> bool:
    """True for a column that needs encoding: text, category, objects (not bool or numbers)."""
    return not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype))


# --- checks ----------------------------------------------------------------------------------


def _check_classes(y: np.ndarray, folds: int, metrics: Sequence[str]) -> None:
    counts = pd.Series(y).value_counts()
    if len(counts) < 2:
        label = counts.index[0] if len(counts) else None
        raise DataError(
            "dataset",
            f"the target holds a single class ({_label(label)}); classification needs two",
        )
    small = counts[counts < folds]
    if len(small):
        label, size = small.index[-1], int(small.iloc[-1])  # value_counts sorts descending
        others = f" (and {len(small) - 1} more classes)" if len(small) > 1 else ""
        raise DataError(
            "cv.folds",
            f"class {_label(label)} has {size} rows, fewer than cv.folds ({folds}){others}; "
            "lower cv.folds or add rows of that class",
        )
    labels = list(counts.index)
    for metric in metrics:
        if metric not in BINARY_ONLY_METRICS:
            continue
        if len(labels) > 2:
            raise DataError(
                "scoring",
                f"metric {metric!r} is for two classes but the target has {len(labels)}; "
                f"use {_multiclass_variants(metric)}",
            )
        text = any(isinstance(c, str | bytes) for c in labels)
        if (metric in _POS_LABEL_ONE and (text or 1 not in labels)) or (
            metric in _NUMERIC_LABELS and text
        ):
            shown = ", ".join(_label(c) for c in sorted(labels, key=str))
            raise DataError(
                "scoring",
                f"metric {metric!r} takes class 1 as the positive class, but the classes are "
                f"{shown}; recode the target as 0/1 or use {_multiclass_variants(metric)}",
            )


def _multiclass_variants(metric: str) -> str:
    suffixes = ("_ovr", "_ovr_weighted", "_macro", "_weighted")
    variants = [metric + s for s in suffixes if metric + s in CLASSIFICATION_METRICS]
    return " or ".join(variants or _ALTERNATIVES.get(metric, ("accuracy",)))


# --- message helpers -------------------------------------------------------------------------


def _names(names: Iterable[str], limit: int = _MAX_NAMES) -> str:
    """A comma-separated list, cut after ``limit`` names."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return f"{shown}, ... ({len(names) - limit} more)" if len(names) > limit else shown


def _did_you_mean(name: str, columns: list[str]) -> str:
    close = difflib.get_close_matches(name, columns, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _label(value: Any) -> str:
    """A class label as written: quoted text, bare numbers."""
    return repr(str(value)) if isinstance(value, str) else str(value)


def _summary(exc: BaseException) -> str:
    """``Type: first line of the message``, shortened."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."
