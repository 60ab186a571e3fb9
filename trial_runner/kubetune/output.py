"""What `kubetune run` leaves in its output folder: status.yaml, trials.csv and the model."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from kubetune.api.base import ApiModel
from kubetune.engine import JobRun, refit
from kubetune.results import cv_results_rows

MODEL_FILE = "model.skops"


def write_status(*, folder: Path, resource: dict[str, Any], status: ApiModel) -> Path:
    """The resource as applied, with the status the operator would write."""
    path = folder / "status.yaml"
    document = {**resource, "status": status.to_dict()}
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return path


def write_trials(*, folder: Path, runs: Sequence[JobRun]) -> Path:
    """Every trial of every stage (and model), with cv_results_ column names."""
    rows: list[dict[str, Any]] = []
    for run in runs:
        rows += cv_results_rows(run.records, run.metrics)
    return write_rows(path=folder / "trials.csv", rows=rows)


def write_rows(*, path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """cv_results_ rows as CSV, columns in order of first appearance; NaN left empty."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv(v) for k, v in row.items()})
    return path


def _csv(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return ""
    return value


def write_model(*, folder: Path, run: JobRun) -> Path | None:
    """The best pipeline refitted on all the data, in skops's safe format (never pickle)."""
    import skops.io

    model = refit(run)
    if model is None:
        return None
    path = folder / MODEL_FILE
    skops.io.dump(model, path)
    return path
