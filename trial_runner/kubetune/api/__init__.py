"""The kubetune.io/v1alpha1 API: pydantic models that are the source of the CRDs.

This package imports neither scikit-learn nor optuna, so the operator can use it cheaply.
"""

from __future__ import annotations

from kubetune.api.base import API_VERSION, GROUP, VERSION, ApiModel
from kubetune.api.parameters import FloatRange, IntRange, Parameter
from kubetune.api.resources import (
    KINDS,
    ModelComparison,
    ObjectMeta,
    Resource,
    SpecError,
    TuningJob,
    load_resource,
    validation_problems,
)
from kubetune.api.spec import (
    CVSpec,
    DatasetSpec,
    EstimatorSpec,
    ModelComparisonSpec,
    ModelSpec,
    PreprocessingStep,
    Refinement,
    ScoringSpec,
    SearchSpec,
    Stage,
    TuningJobSpec,
)
from kubetune.api.status import ModelComparisonStatus, TuningJobStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "ApiModel",
    "CVSpec",
    "DatasetSpec",
    "EstimatorSpec",
    "FloatRange",
    "IntRange",
    "ModelComparison",
    "ModelComparisonSpec",
    "ModelComparisonStatus",
    "ModelSpec",
    "ObjectMeta",
    "Parameter",
    "PreprocessingStep",
    "Refinement",
    "Resource",
    "ScoringSpec",
    "SearchSpec",
    "SpecError",
    "Stage",
    "TuningJob",
    "TuningJobSpec",
    "TuningJobStatus",
    "load_resource",
    "validation_problems",
]
