"""The generated CRDs: committed copy up to date, structural, and agreeing with the models.

Without an API server, the schema is checked three ways: walking it for the structural-schema
rules, validating objects with jsonschema (Kubernetes semantics emulated: non-nullable nulls
pruned, unknown fields rejected as kubectl's strict field validation does) and evaluating the
x-kubernetes-validations rules with cel-python.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from kubetune.api import (
    API_VERSION,
    DatasetSpec,
    FloatRange,
    IntRange,
    ModelComparisonStatus,
    Parameter,
    SpecError,
    TuningJobStatus,
    load_resource,
)
from kubetune.crd import build_crds, write_crds

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = ROOT / "crds"
EXAMPLES_DIR = ROOT / "examples"

Schema = dict[str, Any]

CRDS: dict[str, Schema] = {crd["spec"]["names"]["kind"]: crd for crd in build_crds()}
# Words CEL reserves; a property so named must be escaped as __word__ in a rule. `int` and
# `float` are not among them (Kubernetes CEL docs, "Escaping").
CEL_RESERVED = {
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function",
    "if", "import", "let", "loop", "package", "namespace", "return", "var", "void", "while",
}  # fmt: skip
# Keys a structural schema node may carry here (OpenAPI v3 subset Kubernetes accepts).
ALLOWED_KEYS = {
    "type", "description", "nullable", "properties", "required", "items", "additionalProperties",
    "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
    "maxLength", "minItems", "maxItems", "pattern", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type", "x-kubernetes-validations",
}  # fmt: skip


def root_schema(kind: str) -> Schema:
    version = CRDS[kind]["spec"]["versions"][0]
    schema: Schema = version["schema"]["openAPIV3Schema"]
    return schema


def node_at(kind: str, path: str) -> Schema:
    """The schema node at a dotted path; `[]` steps into list items, as in `spec.parameters[]`."""
    node = root_schema(kind)
    for part in path.split("."):
        name, items = part.removesuffix("[]"), part.endswith("[]")
        node = node["properties"][name]
        if items:
            node = node["items"]
    return node


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node with its path."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


# --- Kubernetes semantics emulated --------------------------------------------------------------


def prune_nulls(value: Any, schema: Schema) -> Any:
    """Drop null object fields whose schema is not nullable, as the API server does."""
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
        return value
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for key, sub in value.items():
            sub_schema = props.get(key, extra if isinstance(extra, dict) else {})
            if sub is None and not sub_schema.get("nullable"):
                continue
            out[key] = prune_nulls(sub, sub_schema)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune_nulls(v, schema["items"]) for v in value]
    return value


def to_draft4(schema: Schema) -> Schema:
    """The CRD schema for jsonschema's Draft 4 validator: nullable as a null type, and unknown
    fields rejected (kubectl's default strict field validation) instead of pruned. metadata is
    the API server's business."""
    out = copy.deepcopy(schema)
    for path, node in walk(out):
        if node.get("nullable") and "type" in node:
            node["type"] = [node["type"], "null"]
        free = node.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in node
        if node.get("type") == "object" and not free and path != ".metadata":
            node["additionalProperties"] = False
    return out


@functools.cache
def validator(kind: str) -> jsonschema.Draft4Validator:
    schema = to_draft4(root_schema(kind))
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def schema_errors(document: Schema) -> list[str]:
    pruned = prune_nulls(document, root_schema(document["kind"]))
    errors = validator(document["kind"]).iter_errors(pruned)
    return [f"{e.json_path}: {e.message}" for e in errors]


@functools.cache
def cel_program(expression: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(expression))


def cel_value(value: Any, schema: Schema) -> Any:
    """A JSON value as Kubernetes hands it to CEL: numbers of a `number` field are doubles."""
    if isinstance(value, dict) and "properties" in schema:
        return {k: cel_value(v, schema["properties"].get(k, {})) for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [cel_value(v, schema["items"]) for v in value]
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def evaluate(rule: Schema, value: Any, schema: Schema, old: Any = None) -> tuple[bool, str]:
    """Whether one x-kubernetes-validations rule holds for value, and the message if it fails.

    A transition rule (one using oldSelf) holds on create (``old`` None), as in Kubernetes.
    """
    this = celpy.json_to_cel(cel_value(prune_nulls(value, schema), schema))
    if "oldSelf" in rule["rule"]:
        if old is None:
            return True, ""
        before = celpy.json_to_cel(cel_value(prune_nulls(old, schema), schema))
        return bool(cel_program(rule["rule"]).evaluate({"self": this, "oldSelf": before})), rule[
            "message"
        ]
    holds = bool(cel_program(rule["rule"]).evaluate({"self": this}))
    message = rule["message"]
    if "messageExpression" in rule:
        message = str(cel_program(rule["messageExpression"]).evaluate({"self": this}))
    return holds, message


def cel_errors(value: Any, schema: Schema, path: str = "") -> list[str]:
    """Every failing rule anywhere in value, as `path: message`."""
    errors = []
    for rule in schema.get("x-kubernetes-validations", []):
        holds, message = evaluate(rule, value, schema)
        if not holds:
            errors.append(f"{path}: {message}")
    if isinstance(value, dict):
        for key, sub in value.items():
            if key in schema.get("properties", {}) and sub is not None:
                errors += cel_errors(sub, schema["properties"][key], f"{path}.{key}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, sub in enumerate(value):
            errors += cel_errors(sub, schema["items"], f"{path}[{i}]")
    return errors


# --- (1) the committed copy ---------------------------------------------------------------------


def test_committed_crds_are_up_to_date(tmp_path: Path) -> None:
    written = write_crds(output=tmp_path)
    assert sorted(p.name for p in written) == [
        "kubetune.io_modelcomparisons.yaml",
        "kubetune.io_tuningjobs.yaml",
        "kustomization.yaml",
    ]
    committed = sorted(p.name for p in CRDS_DIR.glob("*.yaml"))
    assert committed == sorted(p.name for p in written), (
        "crds/ does not hold exactly the generated files: run `kubetune crds`"
    )
    for path in written:
        assert (CRDS_DIR / path.name).read_text(encoding="utf-8") == path.read_text(
            encoding="utf-8"
        ), f"crds/{path.name} is stale: run `kubetune crds` and commit the result"


def test_written_files_say_they_are_generated_and_parse_back(tmp_path: Path) -> None:
    for path in write_crds(output=tmp_path):
        text = path.read_text(encoding="utf-8")
        first = text.splitlines()[0]
        assert first.startswith("#")
        assert "kubetune crds" in first
        assert "not edit" in first.lower()
        document = yaml.safe_load(text)
        if document["kind"] == "Kustomization":
            assert document["resources"] == [
                "kubetune.io_tuningjobs.yaml",
                "kubetune.io_modelcomparisons.yaml",
            ]
        else:
            assert document == CRDS[document["spec"]["names"]["kind"]]


def test_build_is_deterministic() -> None:
    assert build_crds() == build_crds()
    assert [crd["spec"]["names"]["kind"] for crd in build_crds()] == [
        "TuningJob",
        "ModelComparison",
    ]


# --- (2) structural schema ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_schema_is_structural(kind: str) -> None:
    problems = []
    for path, node in walk(root_schema(kind)):
        where = path or "<root>"
        unknown = set(node) - ALLOWED_KEYS
        if unknown:  # $ref, $defs, anyOf, oneOf, allOf, not, title, default, const, ...
            problems.append(f"{where}: not structural: {sorted(unknown)}")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{where}: additionalProperties beside properties")
        if node.get("additionalProperties") is True or node.get("additionalProperties") is False:
            problems.append(f"{where}: additionalProperties must be a schema")
        exempt = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
            "x-kubernetes-int-or-string"
        )
        if "type" not in node and not exempt:
            problems.append(f"{where}: no type")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{where}: array without items")
        if node.get("type") == "object" and "properties" in node and exempt:
            problems.append(f"{where}: preserve-unknown-fields on a struct")
        if node.get("type") == "object" and not (
            exempt or "properties" in node or "additionalProperties" in node or path == ".metadata"
        ):
            problems.append(f"{where}: an object the API server would prune empty")
        for flag in ("exclusiveMinimum", "exclusiveMaximum"):
            if flag in node and node[flag] is not True:
                problems.append(f"{where}: {flag} must be the OpenAPI v3 boolean form")
        if "exclusiveMinimum" in node and "minimum" not in node:
            problems.append(f"{where}: exclusiveMinimum without minimum")
        missing = set(node.get("required", [])) - set(node.get("properties", {}))
        if missing:
            problems.append(f"{where}: required names unknown properties {sorted(missing)}")
    assert problems == []


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_root_has_the_kubernetes_shape(kind: str) -> None:
    root = root_schema(kind)
    assert root["type"] == "object"
    assert list(root["properties"]) == ["apiVersion", "kind", "metadata", "spec", "status"]
    assert root["properties"]["apiVersion"]["type"] == "string"
    assert root["properties"]["kind"]["type"] == "string"
    assert root["properties"]["metadata"] == {"type": "object"}
    assert root["required"] == ["spec"]
    assert root["properties"]["status"]["type"] == "object"


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_map_lists_are_keyed_by_required_scalars(kind: str) -> None:
    map_lists = 0
    for path, node in walk(root_schema(kind)):
        if node.get("x-kubernetes-list-type") != "map":
            continue
        map_lists += 1
        item = node["items"]
        assert item["type"] == "object", path
        assert not item.get("nullable"), path
        for key in node["x-kubernetes-list-map-keys"]:
            assert key in item.get("required", []), f"{path}: map key {key} not required"
            assert item["properties"][key]["type"] in ("string", "integer", "boolean"), path
    assert map_lists >= 2  # spec.parameters (or models) and status conditions at least


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_descriptions_defaults_and_status_rules(kind: str) -> None:
    spec_nodes = dict(walk(root_schema(kind)["properties"]["spec"]))
    status_nodes = dict(walk(root_schema(kind)["properties"]["status"]))
    assert all("x-kubernetes-validations" not in node for node in status_nodes.values()), (
        "CEL rules in status would cost estimation budget and could block status updates"
    )
    assert any("x-kubernetes-validations" in node for node in spec_nodes.values())
    described = [node for node in spec_nodes.values() if node.get("description")]
    assert len(described) > len(spec_nodes) // 2
    folds = node_at(kind, "spec.cv.folds")
    assert folds["description"].endswith("Default: 5.")
    assert (folds["type"], folds["minimum"], folds["maximum"]) == ("integer", 2, 50)


def test_optional_model_becomes_plain_object_and_union_becomes_free_form() -> None:
    seed = node_at("TuningJob", "spec.search.seed")
    assert seed == {
        "description": "Seed of every sampler and estimator; chosen and recorded in status when "
        "omitted.",
        "type": "integer",
    }
    file = node_at("TuningJob", "spec.dataset.file")
    assert file["type"] == "object"
    assert file["required"] == ["path", "target"]
    categorical = node_at("TuningJob", "spec.parameters[].categorical")
    assert categorical["type"] == "array"
    assert (categorical["minItems"], categorical["maxItems"]) == (1, 256)
    assert categorical["items"] == {"nullable": True, "x-kubernetes-preserve-unknown-fields": True}
    params = node_at("TuningJob", "spec.estimator.params")
    assert params == {
        "description": "Fixed constructor arguments, not tuned.",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    metrics = node_at("TuningJob", "status.best.metrics")
    assert metrics["additionalProperties"] == {"type": "number"}
    factor = node_at("TuningJob", "spec.search.refinement.factor")
    assert (factor["minimum"], factor["exclusiveMinimum"], factor["maximum"]) == (0, True, 1)


def test_enums_from_the_catalog_reach_items_and_optional_fields() -> None:
    additional = node_at("TuningJob", "spec.scoring.additional")
    assert additional["items"]["type"] == "string"
    assert "roc_auc" in additional["items"]["enum"]
    assert additional["maxItems"] == 16
    builtin = node_at("ModelComparison", "spec.dataset.builtin")
    assert builtin["type"] == "string"
    assert "breast_cancer" in builtin["enum"]
    estimator = node_at("ModelComparison", "spec.models[].estimator.name")
    assert "HistGradientBoostingClassifier" in estimator["enum"]


# --- (3) examples -------------------------------------------------------------------------------


def example_documents() -> list[Any]:
    params = []
    for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
            if (
                isinstance(doc, dict)
                and doc.get("apiVersion") == API_VERSION
                and doc.get("kind") in CRDS
            ):
                params.append(pytest.param(doc, id=f"{path.name}#{i}"))
    return params


@pytest.mark.parametrize("document", example_documents())
def test_example_passes_schema_cel_and_models(document: Schema) -> None:
    assert schema_errors(document) == []
    assert cel_errors(document, root_schema(document["kind"])) == []
    resource = load_resource(document)
    # What kubetune writes back (camelCase, defaults filled in) must also fit the CRD.
    assert schema_errors(resource.to_dict()) == []


def test_no_kubetune_example_is_skipped_by_a_typo() -> None:
    """Examples of other kinds are skipped above; a kubetune.io document never is."""
    skipped = []
    for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
            api_version = str(doc.get("apiVersion", "")) if isinstance(doc, dict) else ""
            if api_version.startswith("kubetune.io") and (
                api_version != API_VERSION or doc.get("kind") not in CRDS
            ):
                skipped.append(f"{path.name}#{i}")
    assert skipped == []


def _status_documents() -> list[Schema]:
    interval = {"low": 0.9, "high": 0.97}
    counts = {"completed": 9, "failed": 1, "planned": 10}
    trial = {
        "trial": 3,
        "stage": "s1-grid",
        "params": {"max_depth": None, "hidden": [10, 5]},
        "score": 0.93,
        "std": 0.01,
    }
    common = {
        "observedGeneration": 2,
        "phase": "Succeeded",
        "conditions": [
            {
                "type": "Succeeded",
                "status": "True",
                "reason": "Done",
                "lastTransitionTime": "2024-01-01T00:00:00Z",
                "observedGeneration": 2,
            },
        ],
        "progress": "10/10",
        "reproducibility": {
            "seed": 7,
            "dataset": {
                "source": "builtin:iris",
                "fingerprint": "ab",
                "rows": 150,
                "columns": 4,
                "classes": 3,
            },
            "cv": {"splitter": "StratifiedKFold", "folds": 5, "shuffle": True, "seed": 7},
            "versions": {"python": "3.11"},
        },
        "trials": counts,
    }
    tuning = TuningJobStatus.model_validate(
        {
            **common,
            "currentStage": "s1-grid",
            "stages": [
                {
                    "name": "s1-grid",
                    "method": "grid",
                    "phase": "Succeeded",
                    "trials": counts,
                    "bestScore": 0.93,
                    "failures": [{"reason": "ValueError: x", "count": 1}],
                    "space": [
                        {"name": "max_depth", "categorical": [4, None, [1, 2]]},
                        {"name": "c", "float": {"low": 0.1, "high": 1.0, "log": True}},
                    ],
                },
            ],
            "best": {
                **trial,
                "metric": "accuracy",
                "interval95": interval,
                "foldScores": [0.9, 0.95],
                "metrics": {"f1_macro": 0.9},
            },
            "topTrials": [trial],
        }
    )
    comparison = ModelComparisonStatus.model_validate(
        {
            **common,
            "models": counts,
            "ranking": [
                {
                    "rank": 1,
                    "model": "forest",
                    "estimator": "RandomForestClassifier",
                    "phase": "Succeeded",
                    "score": 0.9,
                    "std": 0.01,
                    "interval95": interval,
                    "params": {"n_estimators": 10},
                    "trials": counts,
                },
            ],
            "bestModel": "forest",
            "bestScore": 0.9,
            "significance": {
                "winner": "forest",
                "runnerUp": "svm",
                "meanDifference": 0.01,
                "tStatistic": 2.0,
                "pValue": 0.04,
                "significant": True,
            },
        }
    )
    return [
        {**tuning_job(), "status": tuning.to_dict()},
        {**model_comparison(), "status": comparison.to_dict()},
    ]


def test_status_written_by_the_models_fits_the_schema() -> None:
    documents = _status_documents()
    assert [d["kind"] for d in documents] == ["TuningJob", "ModelComparison"]
    for document in documents:
        assert document["status"]["phase"] == "Succeeded"
        assert schema_errors(document) == []


# --- (4) bad objects ----------------------------------------------------------------------------


def tuning_job() -> Schema:
    return {
        "apiVersion": API_VERSION,
        "kind": "TuningJob",
        "metadata": {"name": "forest"},
        "spec": {
            "estimator": {"name": "RandomForestClassifier", "params": {"n_jobs": 1}},
            "preprocessing": [{"name": "StandardScaler"}],
            "dataset": {"builtin": "breast_cancer"},
            "parameters": [
                {"name": "n_estimators", "int": {"low": 50, "high": 400, "step": 50}},
                {"name": "max_depth", "categorical": [4, 8, None, [1, 2], "auto", True, 0.5]},
                {"name": "max_features", "float": {"low": 0.1, "high": 1}},
            ],
            "search": {
                "method": "progressive",
                "stages": [{"method": "grid", "gridPoints": 3}, {"method": "random", "trials": 5}],
                "refinement": {"factor": 0.3, "topK": 5},
                "seed": None,
            },
            "cv": {"folds": 5, "shuffle": True},
            "scoring": {"metric": "f1_weighted", "additional": ["accuracy", "roc_auc"]},
        },
    }


def model_comparison() -> Schema:
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelComparison",
        "metadata": {"name": "wine"},
        "spec": {
            "dataset": {"synthetic": {"task": "classification", "samples": 100}},
            "models": [
                {"name": "forest", "estimator": {"name": "RandomForestClassifier"}},
                {
                    "name": "svm",
                    "estimator": {"name": "SVC"},
                    "parameters": [{"name": "C", "float": {"low": 0.01, "high": 10, "log": True}}],
                },
            ],
            "search": {"method": "bayesian", "trials": 10},
            "execution": {"mode": "sequential"},
        },
    }


def test_good_objects_pass_everything() -> None:
    for document in (tuning_job(), model_comparison()):
        assert schema_errors(document) == []
        assert cel_errors(document, root_schema(document["kind"])) == []
        load_resource(document)


Mutation = Callable[[Schema], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(document: Schema) -> None:
        *parents, last = path.split(".")
        node: Any = document
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is _DELETE:
            del node[last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


_DELETE = object()

BAD_OBJECTS = [
    ("TuningJob", _set("spec.estimator.name", "RandomForest"), "is not one of"),
    ("TuningJob", _set("spec.scoring.metric", "acc"), "is not one of"),
    ("TuningJob", _set("spec.scoring.additional", ["accuracy", "bogus"]), "is not one of"),
    ("TuningJob", _set("spec.dataset.builtin", "mnist"), "is not one of"),
    ("TuningJob", _set("spec.search.method", "hill-climbing"), "is not one of"),
    ("TuningJob", _set("spec.preprocessing.0.name", "Normalizer"), "is not one of"),
    ("TuningJob", _set("spec.paramters", []), "Additional properties"),
    ("TuningJob", _set("spec.cv.folds", 1), "less than the minimum"),
    ("TuningJob", _set("spec.search.refinement.factor", 0), "less than or equal to the minimum"),
    ("TuningJob", _set("spec.parameters.2.float.step", 0), "less than or equal to the minimum"),
    ("TuningJob", _set("spec.parameters.0.name", "1st"), "does not match"),
    ("TuningJob", _set("spec.parameters.1.categorical", []), "should be non-empty"),
    ("TuningJob", _set("spec.parameters.0.int.low", "one"), "is not of type 'integer'"),
    ("TuningJob", _set("spec.parameters.0.int.low", 1.5), "is not of type 'integer'"),
    ("TuningJob", _set("spec.search.stages", [{"method": "progressive"}]), "is not one of"),
    ("TuningJob", _set("spec.dataset", {"file": {"path": "/d.csv"}}), "'target' is a required"),
    ("TuningJob", _set("spec", _DELETE), "'spec' is a required"),
    ("TuningJob", _set("spec.estimator.params", "n_jobs=1"), "is not of type 'object'"),
    ("ModelComparison", _set("spec.models", [{"name": "one", "estimator": {"name": "SVC"}}]),
     "is too short"),
    ("ModelComparison", _set("spec.models.0.name", "Forest_1"), "does not match"),
    ("ModelComparison", _set("spec.execution.mode", "random"), "is not one of"),
    ("ModelComparison", _set("spec.dataset.synthetic.samples", 5), "less than the minimum"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "mutate", "expected"),
    BAD_OBJECTS,
    ids=[f"{kind}-{i}" for i, (kind, _, _) in enumerate(BAD_OBJECTS)],
)
def test_bad_object_is_rejected_by_schema_and_models(
    kind: str, mutate: Mutation, expected: str
) -> None:
    document = tuning_job() if kind == "TuningJob" else model_comparison()
    mutate(document)
    errors = schema_errors(document)
    assert errors, "the CRD schema accepted a bad object"
    assert any(expected in error for error in errors), errors
    with pytest.raises(SpecError):
        load_resource(document)


def test_minimum_bounds_are_inclusive_and_exclusive_as_in_the_models() -> None:
    document = tuning_job()
    document["spec"]["cv"]["folds"] = 2  # ge=2: the bound itself is allowed
    document["spec"]["search"]["refinement"]["factor"] = 1  # le=1
    assert schema_errors(document) == []
    document["spec"]["search"]["refinement"]["factor"] = 1.01
    assert schema_errors(document) != []


# --- (5) CEL rules ------------------------------------------------------------------------------

PARAMETER = "spec.parameters[]"
INT_RANGE = "spec.parameters[].int"
FLOAT_RANGE = "spec.parameters[].float"
DATASET = "spec.dataset"
_MODELS: dict[str, type[BaseModel]] = {
    PARAMETER: Parameter,
    INT_RANGE: IntRange,
    FLOAT_RANGE: FloatRange,
    DATASET: DatasetSpec,
}

EXACTLY_ONE = "must set exactly one of int, float or categorical"
BELOW = "must be below high"
LOG_LOW = "a log range needs low > 0"
LOG_STEP = "log and step cannot be used together"
MULTIPLE = "high - low must be a multiple of step"
ONE_DATASET = "dataset must set exactly one of builtin, file or synthetic"

CEL_CASES: list[tuple[str, Schema, list[str]]] = [
    (PARAMETER, {"name": "a", "int": {"low": 1, "high": 3}}, []),
    (PARAMETER, {"name": "a", "float": {"low": 0.1, "high": 1.0}}, []),
    (PARAMETER, {"name": "a", "categorical": [1, None]}, []),
    (PARAMETER, {"name": "a", "categorical": None, "int": {"low": 1, "high": 3}}, []),
    (PARAMETER, {"name": "a"}, [EXACTLY_ONE]),
    (PARAMETER, {"name": "a", "int": {"low": 1, "high": 3}, "categorical": [1]}, [EXACTLY_ONE]),
    (PARAMETER, {"name": "a", "int": {"low": 1, "high": 3}, "float": {"low": 1, "high": 3}},
     [EXACTLY_ONE]),
    (INT_RANGE, {"low": 1, "high": 5}, []),
    (INT_RANGE, {"low": 5, "high": 5}, [BELOW]),
    (INT_RANGE, {"low": 6, "high": 5}, [BELOW]),
    (INT_RANGE, {"low": 1, "high": 100, "log": True}, []),
    (INT_RANGE, {"low": 0, "high": 100, "log": False}, []),
    (INT_RANGE, {"low": 0, "high": 100, "log": True}, [LOG_LOW]),
    (INT_RANGE, {"low": -3, "high": 100, "log": True}, [LOG_LOW]),
    (INT_RANGE, {"low": 0, "high": 10, "step": 2}, []),
    (INT_RANGE, {"low": 0, "high": 10, "step": 3}, [MULTIPLE]),
    (INT_RANGE, {"low": 1, "high": 9, "step": 2, "log": True}, [LOG_STEP]),
    (FLOAT_RANGE, {"low": 0.1, "high": 1}, []),
    (FLOAT_RANGE, {"low": 1.0, "high": 1.0}, [BELOW]),
    (FLOAT_RANGE, {"low": 2.5, "high": 1}, [BELOW]),
    (FLOAT_RANGE, {"low": 1e-5, "high": 1.0, "log": True}, []),
    (FLOAT_RANGE, {"low": 0, "high": 1.0, "log": True}, [LOG_LOW]),
    (FLOAT_RANGE, {"low": -1.0, "high": 1.0, "log": False, "step": 0.5}, []),
    (FLOAT_RANGE, {"low": 0.5, "high": 1.0, "log": True, "step": 0.1}, [LOG_STEP]),
    (DATASET, {"builtin": "iris"}, []),
    (DATASET, {"file": {"path": "/d.csv", "target": "y"}}, []),
    (DATASET, {"synthetic": {"task": "regression"}}, []),
    (DATASET, {"builtin": "iris", "synthetic": None}, []),
    (DATASET, {}, [ONE_DATASET]),
    (DATASET, {"builtin": "iris", "synthetic": {"task": "regression"}}, [ONE_DATASET]),
    (DATASET, {"builtin": "iris", "file": {"path": "/d.csv", "target": "y"},
               "synthetic": {"task": "regression"}}, [ONE_DATASET]),
]  # fmt: skip


def _rule_failures(path: str, value: Schema) -> list[str]:
    schema = node_at("TuningJob", path)
    failures = []
    for rule in schema["x-kubernetes-validations"]:
        holds, message = evaluate(rule, value, schema)
        if not holds:
            failures.append(message)
    return failures


@pytest.mark.parametrize(("path", "value", "expected"), CEL_CASES)
def test_cel_rule_agrees_with_the_model(path: str, value: Schema, expected: list[str]) -> None:
    failures = _rule_failures(path, value)
    assert len(failures) == len(expected), failures
    for message, fragment in zip(failures, expected, strict=True):
        assert fragment in message
    model = _MODELS[path]
    if expected:
        with pytest.raises(ValidationError):
            model.model_validate(value)
    else:
        model.model_validate(value)


def test_every_cel_rule_can_pass_and_fail() -> None:
    outcomes: dict[tuple[str, str], set[bool]] = {}
    for path, value, _ in CEL_CASES:
        schema = node_at("TuningJob", path)
        for rule in schema["x-kubernetes-validations"]:
            holds, _message = evaluate(rule, value, schema)
            outcomes.setdefault((path, rule["rule"]), set()).add(holds)
    all_rules = {
        (path, rule["rule"])
        for path in _MODELS
        for rule in node_at("TuningJob", path)["x-kubernetes-validations"]
    }
    assert set(outcomes) == all_rules
    assert {key: seen for key, seen in outcomes.items() if seen != {True, False}} == {}


def test_messages_echo_the_bad_values() -> None:
    assert _rule_failures(FLOAT_RANGE, {"low": 2.5, "high": 1.0}) == [
        "low (2.5) must be below high (1.0)"
    ]
    assert _rule_failures(INT_RANGE, {"low": -2, "high": 4, "log": True}) == [
        "a log range needs low > 0, got low=-2"
    ]
    assert _rule_failures(PARAMETER, {"name": "max_depth"}) == [
        "parameter max_depth must set exactly one of int, float or categorical"
    ]


def test_cel_rules_fire_inside_whole_objects() -> None:
    document = model_comparison()
    document["spec"]["models"][1]["parameters"][0]["float"]["low"] = 0.0
    document["spec"]["dataset"]["builtin"] = "wine"
    errors = cel_errors(document, root_schema("ModelComparison"))
    assert errors == [
        f".spec.dataset: {ONE_DATASET}",
        ".spec.models[1].parameters[0].float: a log range needs low > 0, got low=0.0",
    ]
    assert schema_errors(document) == []  # only CEL catches these
    with pytest.raises(SpecError):
        load_resource(document)


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_cel_rules_name_real_unescaped_properties(kind: str) -> None:
    """Kubernetes compiles rules against the schema: every `self.x` must be a property of the
    node, and a property named like a CEL reserved word would need `__x__` escaping."""
    checked = 0
    for path, node in walk(root_schema(kind)):
        for rule in node.get("x-kubernetes-validations", []):
            for expression in (rule["rule"], rule.get("messageExpression", "")):
                for name in re.findall(r"self\.([A-Za-z_][A-Za-z0-9_]*)", expression):
                    checked += 1
                    assert name in node["properties"], f"{path}: {name} in {expression}"
                    assert name not in CEL_RESERVED, f"{path}: {name} needs escaping"
                assert "__" not in expression, f"{path}: unexpected escaping in {expression}"
            cel_program(rule["rule"])  # parses
            assert rule["message"]
            assert "\n" not in rule["message"]
    assert checked > 0


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_cel_literals_match_field_types(kind: str) -> None:
    """CEL may not compare an int with a double: `self.low > 0` needs 0.0 on a number field."""
    compared = 0
    for path, node in walk(root_schema(kind)):
        for rule in node.get("x-kubernetes-validations", []):
            pattern = r"self\.(\w+)\s*(?:<=|>=|<|>|==|!=)\s*(-?\d+(?:\.\d+)?)"
            for name, literal in re.findall(pattern, rule["rule"]):
                compared += 1
                field_type = node["properties"][name]["type"]
                literal_type = "number" if "." in literal else "integer"
                assert field_type == literal_type, f"{path}: {rule['rule']}"
    assert compared >= 2


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_cel_rules_sit_under_bounded_lists(kind: str) -> None:
    """The API server multiplies a rule's cost by how many times it can run: every list above a
    rule needs maxItems, and the product stays small."""
    nodes = 0
    for path, node in walk(root_schema(kind)):
        if "x-kubernetes-validations" not in node:
            continue
        nodes += 1
        cardinality = 1
        current = root_schema(kind)
        for step in re.findall(r"\.(\w+)|(\[\])", path):
            if step[0]:
                current = current["properties"][step[0]]
            else:
                assert "maxItems" in current, f"{path}: a list above a CEL rule lacks maxItems"
                cardinality *= current["maxItems"]
                current = current["items"]
        assert current is node
        assert cardinality <= 2_000, f"{path}: may run {cardinality} times"
    assert nodes == 5  # Parameter, IntRange, FloatRange, DatasetSpec, the transition rule


# --- (6) names and printer columns --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "plural", "short", "columns"),
    [
        ("TuningJob", "tuningjobs", "tj",
         {"Phase": ".status.phase", "Method": ".spec.search.method",
          "Stage": ".status.currentStage", "Trials": ".status.progress",
          "Best": ".status.best.score", "Age": ".metadata.creationTimestamp"}),
        ("ModelComparison", "modelcomparisons", "mc",
         {"Phase": ".status.phase", "Models": ".status.progress",
          "Best model": ".status.bestModel", "Best": ".status.bestScore",
          "Age": ".metadata.creationTimestamp"}),
    ],
)  # fmt: skip
def test_names_version_and_printer_columns(
    kind: str, plural: str, short: str, columns: dict[str, str]
) -> None:
    crd = CRDS[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{plural}.kubetune.io"
    spec = crd["spec"]
    assert spec["group"] == "kubetune.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
        "shortNames": [short],
        "categories": ["kubetune"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    printed = version["additionalPrinterColumns"]
    assert {c["name"]: c["jsonPath"] for c in printed} == columns
    types = {c["name"]: c["type"] for c in printed}
    assert types["Best"] == "number"
    assert types["Age"] == "date"
    assert types["Phase"] == "string"
    for column in printed:  # each column points at a field the schema declares
        if column["jsonPath"].startswith(".metadata"):
            continue
        target = node_at(kind, column["jsonPath"].removeprefix("."))
        expected = {"string": ("string",), "number": ("number", "integer")}[column["type"]]
        assert target["type"] in expected, column


@pytest.mark.parametrize("kind", ["TuningJob", "ModelComparison"])
def test_search_definition_cannot_change_after_creation(kind: str) -> None:
    document = next(p.values[0] for p in example_documents() if p.values[0]["kind"] == kind)
    spec_schema = root_schema(kind)["properties"]["spec"]
    (rule,) = [r for r in spec_schema["x-kubernetes-validations"] if "oldSelf" in r["rule"]]
    old = document["spec"]
    budget = copy.deepcopy(old)
    budget.setdefault("search", {})["parallelism"] = 4
    budget["suspend"] = True
    assert evaluate(rule, budget, spec_schema, old=old)[0], "budget and suspend may change"
    changed = copy.deepcopy(old)
    changed["dataset"] = {"builtin": "digits"}
    holds, message = evaluate(rule, changed, spec_schema, old=old)
    assert not holds
    assert f"create a new {kind}" in message
    scoring = copy.deepcopy(old)
    scoring["scoring"] = {"metric": "balanced_accuracy"}
    assert not evaluate(rule, scoring, spec_schema, old=old)[0]
