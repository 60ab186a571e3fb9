"""Loading and checking training data: built-in, synthetic, CSV and Parquet."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from kubetune.api.catalog import BUILTIN_DATASETS, Task
from kubetune.api.spec import DatasetSpec
from kubetune.data import DataError, LoadedData, check_dataset, load_dataset

pytestmark = pytest.mark.runner

SHAPES = {
    "iris": (150, 4, 3),
    "wine": (178, 13, 3),
    "breast_cancer": (569, 30, 2),
    "digits": (1797, 64, 10),
    "diabetes": (442, 10, None),
}


def builtin(name: str) -> LoadedData:
    return load_dataset(spec=DatasetSpec(builtin=name), task=BUILTIN_DATASETS[name])


def file_spec(path: Path | str, target: str = "y", **more: Any) -> DatasetSpec:
    return DatasetSpec.model_validate({"file": {"path": str(path), "target": target, **more}})


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def mixed_frame(rows: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "a": rng.normal(size=rows),
            "b": np.arange(rows),
            "color": np.array(["red", "green", "blue"])[np.arange(rows) % 3],
            "y": np.array(["no", "yes"])[np.arange(rows) % 2],
        }
    )


def numeric_frame(rows: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {"a": rng.normal(size=rows), "b": rng.normal(size=rows), "y": np.arange(rows) % 2}
    )


# --- built-in and synthetic ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SHAPES))
def test_builtin_loads_with_shape_and_stable_fingerprint(name: str) -> None:
    rows, columns, classes = SHAPES[name]
    data = builtin(name)
    assert isinstance(data.X, np.ndarray)
    assert data.X.shape == (rows, columns)
    assert data.X.dtype == np.float64
    assert data.y.shape == (rows,)
    assert len(data.feature_names) == columns
    assert data.categorical_columns == []
    assert data.missing_features == {}
    assert data.record.source == f"builtin:{name}"
    assert (data.record.rows, data.record.columns, data.record.classes) == (rows, columns, classes)
    assert data.record.fingerprint.startswith("sha256:")
    assert len(data.record.fingerprint) == len("sha256:") + 64
    assert builtin(name).record.fingerprint == data.record.fingerprint


def test_builtin_fingerprints_differ_and_names_come_from_the_bunch() -> None:
    prints = {builtin(name).record.fingerprint for name in SHAPES}
    assert len(prints) == len(SHAPES)
    assert builtin("iris").feature_names[0] == "sepal length (cm)"
    assert builtin("diabetes").y.dtype == np.float64
    assert builtin("wine").y.dtype.kind == "i"


def test_builtin_of_the_wrong_task_is_refused() -> None:
    with pytest.raises(DataError) as info:
        load_dataset(spec=DatasetSpec(builtin="iris"), task="regression")
    assert info.value.field == "dataset.builtin"


def synthetic(task: Task = "classification", **more: Any) -> LoadedData:
    spec = DatasetSpec.model_validate({"synthetic": {"task": task, **more}})
    return load_dataset(spec=spec, task=task)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_synthetic_shape_and_seeded_fingerprint(task: Task) -> None:
    data = synthetic(task, samples=120, features=7, seed=3)
    assert isinstance(data.X, np.ndarray)
    assert data.X.shape == (120, 7)
    assert data.X.dtype == np.float64
    assert data.y.shape == (120,)
    assert data.feature_names == [f"x{i}" for i in range(7)]
    assert data.record.source == f"synthetic:{task}"
    assert data.record.classes == (2 if task == "classification" else None)
    assert synthetic(task, samples=120, features=7, seed=3).record == data.record
    assert synthetic(task, samples=120, features=7, seed=4).record.fingerprint != (
        data.record.fingerprint
    )
    if task == "regression":
        assert data.y.dtype == np.float64


@pytest.mark.parametrize(
    ("features", "classes", "informative"), [(1, 2, None), (2, 4, None), (3, 5, 3), (40, 10, 5)]
)
def test_synthetic_fits_small_feature_counts(
    features: int, classes: int, informative: int | None
) -> None:
    data = synthetic(samples=200, features=features, classes=classes, informative=informative)
    assert data.X.shape == (200, features)
    assert data.record.classes == classes


@pytest.mark.parametrize(
    ("more", "field", "fragment"),
    [
        ({"features": 3, "informative": 4}, "dataset.synthetic.informative", "exceed"),
        ({"features": 10, "informative": 2, "classes": 5}, "dataset.synthetic.informative", "3"),
        ({"features": 2, "classes": 5}, "dataset.synthetic.classes", "at least 3 informative"),
    ],
)
def test_impossible_synthetic_data(more: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(DataError) as info:
        synthetic(**more)
    assert info.value.field == field
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


# --- files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["train.csv", "train.csv.gz", "train.parquet", "train.pq"])
def test_file_with_a_text_column_gives_a_frame(tmp_path: Path, name: str) -> None:
    frame = mixed_frame()
    path = tmp_path / name
    if ".csv" in name:
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, engine="pyarrow")
    data = load_dataset(spec=file_spec(path), task="classification")
    assert isinstance(data.X, pd.DataFrame)
    assert list(data.X.columns) == ["a", "b", "color"]
    assert data.feature_names == ["a", "b", "color"]
    assert data.categorical_columns == ["color"]
    assert list(data.y[:2]) == ["no", "yes"]
    assert data.y.ndim == 1
    assert data.record.source == str(path)
    assert (data.record.rows, data.record.columns, data.record.classes) == (30, 3, 2)
    assert data.record.fingerprint.startswith("sha256:")


def test_numeric_file_gives_a_float_array_and_a_file_fingerprint(tmp_path: Path) -> None:
    import hashlib

    path = write_csv(tmp_path / "n.csv", numeric_frame())
    data = load_dataset(spec=file_spec(path, features=["b", "a"]), task="classification")
    assert isinstance(data.X, np.ndarray)
    assert data.X.dtype == np.float64
    assert data.X.shape == (30, 2)
    assert data.feature_names == ["b", "a"]
    assert data.categorical_columns == []
    assert data.y.dtype.kind == "i"
    assert data.record.fingerprint == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    regression = load_dataset(spec=file_spec(path, target="a"), task="regression")
    assert regression.y.dtype == np.float64
    assert regression.record.classes is None


def test_missing_feature_values_are_counted(tmp_path: Path) -> None:
    frame = numeric_frame()
    frame.loc[[1, 4, 7], "a"] = np.nan
    path = write_csv(tmp_path / "gaps.csv", frame)
    data = load_dataset(spec=file_spec(path), task="classification")
    assert data.missing_features == {"a": 3}
    assert isinstance(data.X, np.ndarray)
    assert int(np.isnan(data.X).sum()) == 3


def test_relative_path_resolves_against_base_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "jobs" / "data").mkdir(parents=True)
    write_csv(tmp_path / "jobs" / "data" / "t.csv", numeric_frame())
    monkeypatch.chdir(tmp_path)
    spec = file_spec("data/t.csv")
    data = load_dataset(spec=spec, task="classification", base_dir=tmp_path / "jobs")
    assert data.record.source == "data/t.csv"
    assert data.record.rows == 30
    with pytest.raises(DataError) as info:  # without base_dir: the working directory
        load_dataset(spec=spec, task="classification")
    assert str(info.value) == f"dataset.file.path: no such file: {tmp_path / 'data' / 't.csv'}"


def _bad_files(tmp_path: Path) -> dict[str, tuple[DatasetSpec, Task, str, str]]:
    """case -> (spec, task, field, fragment of the message)."""
    mixed = write_csv(tmp_path / "mixed.csv", mixed_frame())
    wide = write_csv(
        tmp_path / "wide.csv", pd.DataFrame({f"col{i}": [1, 2] for i in range(30)} | {"y": [0, 1]})
    )
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "header.csv").write_text("a,b,y\n")
    (tmp_path / "blank.csv.gz").write_bytes(gzip.compress(b"\n\n"))
    (tmp_path / "ragged.csv").write_text("a,b,y\n1,2,0\n1,2,3,4,5\n")
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet at all")
    (tmp_path / "corrupt.csv.gz").write_bytes(b"\x1f\x8b\x08 not really gzip")
    (tmp_path / "data.txt").write_text("a,y\n1,0\n")
    (tmp_path / "folder.csv").mkdir()
    only_target = write_csv(tmp_path / "only.csv", pd.DataFrame({"y": [0, 1, 0, 1]}))
    gaps = numeric_frame()
    gaps["y"] = gaps["y"].astype(float)
    gaps.loc[[2, 5], "y"] = np.nan
    gappy = write_csv(tmp_path / "gappy.csv", gaps)
    single = write_csv(tmp_path / "single.csv", numeric_frame().assign(y=7))
    continuous = write_csv(tmp_path / "cont.csv", numeric_frame().assign(y=np.linspace(0, 1, 30)))
    c: Task = "classification"
    r: Task = "regression"
    return {
        "missing file": (
            file_spec(tmp_path / "nope.csv"),
            c,
            "dataset.file.path",
            f"no such file: {tmp_path / 'nope.csv'}",
        ),
        "directory": (file_spec(tmp_path / "folder.csv"), c, "dataset.file.path", "directory"),
        "unknown extension": (
            file_spec(tmp_path / "data.txt"),
            c,
            "dataset.file.format",
            "set format to csv or parquet",
        ),
        "empty file": (file_spec(tmp_path / "empty.csv"), c, "dataset.file.path", "empty"),
        "header only": (file_spec(tmp_path / "header.csv"), c, "dataset.file.path", "no data rows"),
        "blank gzip": (file_spec(tmp_path / "blank.csv.gz"), c, "dataset.file.path", "no columns"),
        "ragged csv": (file_spec(tmp_path / "ragged.csv"), c, "dataset.file.path", "cannot read"),
        "corrupt parquet": (
            file_spec(tmp_path / "corrupt.parquet"),
            c,
            "dataset.file.path",
            "cannot read",
        ),
        "corrupt gzip": (
            file_spec(tmp_path / "corrupt.csv.gz"),
            c,
            "dataset.file.path",
            "cannot read",
        ),
        "corrupt, explicit format": (
            file_spec(tmp_path / "corrupt.parquet", format="parquet"),
            c,
            "dataset.file.path",
            "as parquet",
        ),
        "missing target": (
            file_spec(mixed, target="label"),
            c,
            "dataset.file.target",
            "no column 'label' in mixed.csv; columns: a, b, color, y",
        ),
        "missing target, many columns": (
            file_spec(wide, target="label"),
            c,
            "dataset.file.target",
            "col7, ... (23 more)",
        ),
        "missing feature": (
            file_spec(mixed, features=["a", "colour"]),
            c,
            "dataset.file.features",
            "no column 'colour' in mixed.csv (did you mean 'color'?)",
        ),
        "target among features": (
            file_spec(mixed, features=["a", "y"]),
            c,
            "dataset.file.features",
            "the target 'y' is listed among the features",
        ),
        "feature twice": (
            file_spec(mixed, features=["a", "a"]),
            c,
            "dataset.file.features",
            "listed twice",
        ),
        "no features left": (file_spec(only_target), c, "dataset.file", "no feature columns"),
        "missing target values": (
            file_spec(gappy),
            c,
            "dataset.file.target",
            "no value in 2 rows (data rows 2, 5",
        ),
        "regression on text": (
            file_spec(mixed),
            r,
            "dataset.file.target",
            "regression needs a numeric target",
        ),
        "single class": (file_spec(single), c, "dataset.file.target", "single class (7)"),
        "continuous labels": (file_spec(continuous), c, "dataset.file.target", "continuous"),
    }


BAD_FILE_CASES = [
    "missing file",
    "directory",
    "unknown extension",
    "empty file",
    "header only",
    "blank gzip",
    "ragged csv",
    "corrupt parquet",
    "corrupt gzip",
    "corrupt, explicit format",
    "missing target",
    "missing target, many columns",
    "missing feature",
    "target among features",
    "feature twice",
    "no features left",
    "missing target values",
    "regression on text",
    "single class",
    "continuous labels",
]


@pytest.mark.parametrize("case", BAD_FILE_CASES)
def test_bad_file_gives_one_line(tmp_path: Path, case: str) -> None:
    spec, task, field, fragment = _bad_files(tmp_path)[case]
    with pytest.raises(DataError) as info:
        load_dataset(spec=spec, task=task)
    err = info.value
    assert err.field == field
    assert str(err).startswith(f"{field}: ")
    assert fragment in str(err)
    assert "\n" not in str(err)
    assert "Traceback" not in str(err)
    assert "np." not in str(err)  # labels as written, not numpy reprs
    assert err.__suppress_context__ or err.__context__ is None


# --- checks ----------------------------------------------------------------------------------


def check(data: LoadedData, task: Task = "classification", **more: Any) -> None:
    options: dict[str, Any] = {
        "folds": 5,
        "metrics": ["accuracy"],
        "has_encoder": False,
        "has_imputer": False,
        "allows_nan": False,
    }
    options.update(more)
    check_dataset(data=data, task=task, **options)


def from_csv(tmp_path: Path, frame: pd.DataFrame, task: Task = "classification") -> LoadedData:
    path = write_csv(tmp_path / "d.csv", frame)
    return load_dataset(spec=file_spec(path), task=task)


def _tiny(tmp_path: Path) -> LoadedData:
    return from_csv(tmp_path, numeric_frame(rows=9))


def _rare_class(tmp_path: Path) -> LoadedData:
    frame = numeric_frame(rows=40)
    frame["y"] = ["a"] * 20 + ["b"] * 18 + ["x"] * 2
    return from_csv(tmp_path, frame)


def _with_gaps(tmp_path: Path) -> LoadedData:
    frame = mixed_frame()
    frame.loc[[0, 3], "a"] = np.nan
    frame.loc[[1], "color"] = np.nan
    return from_csv(tmp_path, frame)


CHECK_CASES: dict[str, tuple[Callable[[Path], LoadedData], dict[str, Any], str, str]] = {
    "too few rows": (
        _tiny,
        {},
        "cv.folds",
        "the data has 9 rows, too few for 5 folds: need at least 10",
    ),
    "rare class": (
        _rare_class,
        {},
        "cv.folds",
        "class 'x' has 2 rows, fewer than cv.folds (5)",
    ),
    "text without encoder": (
        lambda p: from_csv(p, mixed_frame()),
        {},
        "preprocessing",
        "non-numeric feature columns color need {name: OneHotEncoder} in preprocessing",
    ),
    "gaps without imputer": (
        _with_gaps,
        {"has_encoder": True},
        "preprocessing",
        "feature columns with missing values: a (2); add {name: SimpleImputer}",
    ),
    "binary metric, three classes": (
        lambda p: builtin("iris"),
        {"metrics": ["accuracy", "f1"]},
        "scoring",
        "metric 'f1' is for two classes but the target has 3; use f1_macro or f1_weighted",
    ),
    "roc_auc, three classes": (
        lambda p: builtin("wine"),
        {"metrics": ["roc_auc"]},
        "scoring",
        "use roc_auc_ovr or roc_auc_ovr_weighted",
    ),
    "f1 on text labels": (
        lambda p: from_csv(p, mixed_frame()),
        {"metrics": ["f1"], "has_encoder": True},
        "scoring",
        "the classes are 'no', 'yes'",
    ),
}


@pytest.mark.parametrize("case", list(CHECK_CASES))
def test_check_gives_one_line(tmp_path: Path, case: str) -> None:
    make, options, field, fragment = CHECK_CASES[case]
    with pytest.raises(DataError) as info:
        check(make(tmp_path), **options)
    assert info.value.field == field
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"{field}: ")
    assert "\n" not in str(info.value)


def test_checks_pass_when_the_pipeline_copes(tmp_path: Path) -> None:
    gaps = _with_gaps(tmp_path)
    check(gaps, has_encoder=True, has_imputer=True)
    check(gaps, has_encoder=True, allows_nan=True)
    assert gaps.missing_features == {"a": 2, "color": 1}
    check(builtin("breast_cancer"), metrics=["f1", "roc_auc", "neg_brier_score"])
    check(builtin("iris"), metrics=["f1_macro", "roc_auc_ovr"])
    check(builtin("diabetes"), task="regression", metrics=["r2"])
    check(_rare_class(tmp_path), folds=2)
    check(synthetic(samples=200, features=5), folds=10, metrics=["roc_auc", "f1"])


def test_missing_category_alone_needs_no_imputer_with_an_encoder(tmp_path: Path) -> None:
    frame = mixed_frame()
    frame.loc[[1], "color"] = np.nan
    data = from_csv(tmp_path, frame)
    assert data.missing_features == {"color": 1}
    check(data, has_encoder=True)
