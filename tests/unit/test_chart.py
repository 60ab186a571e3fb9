"""The Helm chart charts/kubetune, linted and rendered by Helm's own Go engine.

`helm-python-sdk` embeds Helm's SDK, so no helm binary is needed: the chart is linted, its
values.schema.json is enforced and its templates are rendered exactly as `helm install` would.
Each rendering is validated against the Kubernetes schemas (kubernetes-validate, strict) and
cross-checked against what it deploys: the RBAC rules are those of manifests/ (with a comment on
each rule), the CRDs are crds/ plus annotations only, the Deployment's environment is what the
operator's config reads, and the notes tell the user what to run next.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from kubetune.api import TuningJob
from kubetune_operator import config as operator_config
from kubetune_operator.config import DEFAULT_RUNNER_IMAGE, OperatorConfig

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubetune"
CRDS = ROOT / "crds"
MANIFESTS = ROOT / "manifests"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
KUBERNETES_VERSIONS = ("1.27", "1.30")
"""The chart's minimum (Chart.yaml kubeVersion) and the version manifests/ is validated against."""

RELEASE = "kubetune"
NAMESPACE = "kubetune-system"
OPERATOR = "kubetune-operator"
RUNNER = "kubetune-runner"
UID = 10001
LIVENESS_PORT = 8081
NOTES = "NOTES.txt"

Obj = dict[str, Any]

# The values each rendering uses, and the release it renders as.
SCENARIOS: dict[str, tuple[str, str, Obj]] = {
    "default": (RELEASE, NAMESPACE, {}),
    "namespaced": (
        RELEASE,
        NAMESPACE,
        {
            "watchNamespaces": ["ml-a", "ml-b"],
            "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
            "crds": {"install": False},
        },
    ),
    "custom": (
        "ml",
        "ops",
        {
            "image": {"tag": "0.2.0-rc.1", "pullPolicy": "Always"},
            "resources": {"requests": {"cpu": "250m", "memory": "300Mi"}, "limits": {"memory": 1}},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "ml", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "pool", "operator": "In", "values": ["cpu"]}
                                ]
                            }
                        ]
                    }
                }
            },
            "runner": {
                "image": {"repository": "registry.example/runner", "tag": "7"},
                "memory": "3Gi",
                "serviceAccount": "tuner",
                "namespaces": ["team-x", "team-y"],
            },
            "resyncSeconds": 12.5,
            "reportGraceSeconds": 90,
            "metrics": {"port": 9090, "serviceMonitor": {"enabled": True, "interval": "1m30s"}},
            "crds": {"keep": False},
        },
    ),
}


# --- rendering ----------------------------------------------------------------------------------


def render_values(
    values: Obj, release: str = RELEASE, namespace: str = NAMESPACE
) -> dict[str, str]:
    """template path (relative to the chart) -> rendered text, by Helm's engine."""
    with helm.Chart.load(CHART) as chart:
        texts = chart.render(values, name=release, namespace=namespace, is_install=True)
    return {path.removeprefix("kubetune/"): text for path, text in texts.items()}


@functools.cache
def rendered(scenario: str) -> dict[str, str]:
    release, namespace, values = SCENARIOS[scenario]
    return render_values(values, release, namespace)


Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_all(texts: dict[str, str]) -> list[Obj]:
    return [
        doc
        for path, text in sorted(texts.items())
        if not path.endswith(NOTES)
        for doc in yaml.load_all(text, Loader=Loader)
        if doc
    ]


@functools.cache
def parsed(scenario: str) -> tuple[Obj, ...]:
    return tuple(parse_all(rendered(scenario)))


def objects(scenario: str) -> list[Obj]:
    """The rendered objects (a fresh copy: tests may change them)."""
    return copy.deepcopy(list(parsed(scenario)))


def ident(obj: Obj) -> str:
    where = obj["metadata"].get("namespace")
    return f"{obj['kind']}/{obj['metadata']['name']}" + (f" in {where}" if where else "")


def find(objs: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def only(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[ident(o) for o in found]}"
    return found[0]


def manifest(path: str, kind: str, name: str) -> Obj:
    docs = yaml.safe_load_all((MANIFESTS / path).read_text(encoding="utf-8"))
    return only([d for d in docs if d], kind, name)


def container(objs: list[Obj]) -> Obj:
    (operator,) = only(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return operator


def env(container_: Obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container_["env"]}


def port_number(container_: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container_["ports"] if p["name"] == port]
    return int(number)


# --- the chart itself ---------------------------------------------------------------------------


def test_chart_metadata() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "kubetune"
    assert meta["type"] == "application"
    assert meta["appVersion"] == VERSION
    assert meta["kubeVersion"] == ">=1.27.0-0"
    # A chart's crds/ directory is installed once and never upgraded: the CRDs are templates.
    assert not (CHART / "crds").exists()


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_lint_is_clean(scenario: str) -> None:
    _, namespace, values = SCENARIOS[scenario]
    report = helm.lint(CHART, values, strict=True, namespace=namespace, kube_version="v1.30.0")
    assert report["total_charts_linted"] == 1
    assert not report["errors"], report["errors"]
    # Info (severity 1, such as "icon is recommended") is fine; warnings and errors are not.
    assert not [m for m in report["messages"] if m["severity"] >= 2], report["messages"]


def test_helm_lint_reports_values_the_schema_rejects() -> None:
    """The lint above can fail: bad values make it report errors."""
    report = helm.lint(CHART, {"replicas": 2}, strict=True, namespace=NAMESPACE)
    assert report["errors"]
    assert any("replicas" in error for error in report["errors"])


def test_the_packaged_chart_renders_the_same(tmp_path: Path) -> None:
    """`helm package` keeps what the templates read (files/crds/ is not ignored)."""
    archive = helm.package(CHART, destination=tmp_path)
    assert Path(archive).name == f"kubetune-{VERSION}.tgz"
    with helm.Chart.load(archive) as chart:
        texts = chart.render({}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    assert {path.removeprefix("kubetune/"): text for path, text in texts.items()} == rendered(
        "default"
    )


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_renders_the_expected_objects(scenario: str) -> None:
    release, namespace, values = SCENARIOS[scenario]
    prefix = release if "kubetune" in release else f"{release}-kubetune"
    operator, runner = f"{prefix}-operator", f"{prefix}-runner"
    watched = values.get("watchNamespaces", [])
    runner_namespaces = values.get("runner", {}).get("namespaces") or watched or [namespace]
    account = values.get("runner", {}).get("serviceAccount", RUNNER)
    metrics = values.get("metrics", {})
    expected = {
        ("Deployment", operator, namespace),
        ("ServiceAccount", operator, namespace),
        ("Service", f"{operator}-metrics", namespace),
        ("ClusterRole", runner, None),
        *((kind, operator, None) for kind in ("ClusterRole", "ClusterRoleBinding") if not watched),
        *((kind, operator, ns) for kind in ("Role", "RoleBinding") for ns in watched),
        *(("ServiceAccount", account, ns) for ns in runner_namespaces),
        *(("RoleBinding", runner, ns) for ns in runner_namespaces),
    }
    if metrics.get("serviceMonitor", {}).get("enabled"):
        expected.add(("ServiceMonitor", operator, namespace))
    if values.get("crds", {}).get("install", True):
        expected |= {
            ("CustomResourceDefinition", "tuningjobs.kubetune.io", None),
            ("CustomResourceDefinition", "modelcomparisons.kubetune.io", None),
        }
    got = [
        (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace"))
        for o in objects(scenario)
    ]
    assert len(got) == len(set(got)), "an object is rendered twice"
    assert set(got) == expected


def test_the_argocd_application_of_the_chart_renders() -> None:
    """examples/argocd/application-operator.yaml passes values to this chart: the schema takes
    them, and they mean what the Application's comment says."""
    app = yaml.safe_load((ROOT / "examples" / "argocd" / "application-operator.yaml").read_text())
    source = app["spec"]["source"]
    assert (ROOT / source["path"]).resolve() == CHART
    values = source["helm"].get("valuesObject", {})
    objs = parse_all(
        render_values(
            values, source["helm"]["releaseName"], app["spec"]["destination"]["namespace"]
        )
    )
    served = OperatorConfig.from_env(env(container(objs))).namespaces
    assert served == values.get("watchNamespaces", [])
    assert bool(find(objs, "ClusterRoleBinding")) == (not served)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_object_is_valid_for_kubernetes(scenario: str, version: str) -> None:
    """Strict: unknown fields fail too. The ServiceMonitor is not a Kubernetes kind (see below)."""
    problems = []
    for obj in objects(scenario):
        if obj["kind"] == "ServiceMonitor":
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = "/".join(str(p) for p in getattr(error, "path", []))
            problems.append(f"{ident(obj)}: at {where or '/'}: {error.message}")
    assert not problems, "\n".join(problems)


def test_every_object_names_its_namespace_and_carries_the_chart_labels() -> None:
    for scenario in SCENARIOS:
        for obj in objects(scenario):
            meta = obj["metadata"]
            if obj["kind"] in ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"):
                assert "namespace" not in meta, ident(obj)
            else:
                assert meta["namespace"], ident(obj)
            if obj["kind"] != "CustomResourceDefinition":  # those stay equal to crds/
                labels = meta["labels"]
                assert labels["app.kubernetes.io/part-of"] == "kubetune", ident(obj)
                assert labels["app.kubernetes.io/managed-by"] == "Helm", ident(obj)
                assert labels["app.kubernetes.io/instance"] == SCENARIOS[scenario][0], ident(obj)


# --- values.schema.json -------------------------------------------------------------------------


def schema() -> Obj:
    loaded: Obj = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    return loaded


def default_values() -> Obj:
    loaded: Obj = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    return loaded


BAD_VALUES: dict[str, tuple[Obj, str]] = {
    "replicas": ({"replicas": 2}, "replicas"),
    "unknown nested key": ({"runner": {"cpu": "2"}}, "cpu"),
    "typo in serviceMonitor": ({"metrics": {"serviceMonitor": {"enable": True}}}, "enable"),
    "image tag not a string": ({"image": {"tag": 1}}, "/image/tag"),
    "pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "watchNamespaces a string": ({"watchNamespaces": "ml-a"}, "/watchNamespaces"),
    "namespace name": ({"watchNamespaces": ["ML_A"]}, "/watchNamespaces/0"),
    "duplicate namespaces": ({"runner": {"namespaces": ["a", "a"]}}, "/runner/namespaces"),
    "runner memory": ({"runner": {"memory": "lots"}}, "/runner/memory"),
    "runner image a string": ({"runner": {"image": "x:1"}}, "/runner/image"),
    "resource quantity": ({"resources": {"requests": {"memory": "1 GB"}}}, "/resources"),
    "toleration operator": ({"tolerations": [{"operator": "Maybe"}]}, "/tolerations/0"),
    "resync zero": ({"resyncSeconds": 0}, "/resyncSeconds"),
    "metrics port a string": ({"metrics": {"port": "8080"}}, "/metrics/port"),
    "metrics port is liveness": ({"metrics": {"port": LIVENESS_PORT}}, "/metrics/port"),
    "scrape interval": (
        {"metrics": {"serviceMonitor": {"interval": "30 seconds"}}},
        "/metrics/serviceMonitor/interval",
    ),
    "crds.install not a boolean": ({"crds": {"install": "yes"}}, "/crds/install"),
    # null deletes a key in Helm: the setting would render as "<nil>" and crash the operator.
    "setting removed": ({"reportGraceSeconds": None}, "reportGraceSeconds"),
    "runner setting removed": ({"runner": {"memory": None}}, "memory"),
}


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_helm_refuses_values_the_schema_rejects(name: str) -> None:
    values, where = BAD_VALUES[name]
    with pytest.raises(helm.HelmValuesError) as caught:
        render_values(values)
    assert where in str(caught.value), str(caught.value)


def test_every_object_in_the_schema_is_closed() -> None:
    """additionalProperties: false wherever the schema lists properties (typos fail), and the
    open maps say what their values are. Only affinity and global are free-form."""
    free_form = {"/properties/affinity", "/properties/global"}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and path not in free_form:
                assert "properties" in node or "additionalProperties" in node, path
                if "properties" in node:
                    assert node.get("additionalProperties") is False, path
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    walk(schema(), "")
    jsonschema.Draft7Validator.check_schema(schema())


def test_values_yaml_and_the_schema_declare_the_same_keys() -> None:
    """Every value has a documented default in values.yaml, and the schema accepts them all."""
    root = schema()

    def resolve(node: Obj) -> Obj:
        while "$ref" in node:
            node = root["definitions"][node["$ref"].rsplit("/", 1)[1]]
        return node

    def compare(values: Obj, node: Obj, path: str) -> None:
        node = resolve(node)
        declared = set(node.get("properties", {})) - {"global"}
        if declared:
            assert set(values) == declared, path
            for key, value in values.items():
                if isinstance(value, dict):
                    compare(value, node["properties"][key], f"{path}.{key}")

    compare(default_values(), root, "values")
    jsonschema.Draft7Validator(root).validate(default_values())


def test_the_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")

    def leaves(values: Obj, prefix: str = "") -> list[str]:
        out = []
        for key, value in values.items():
            path = f"{prefix}{key}"
            nested = isinstance(value, dict) and value and key not in ("resources", "labels")
            out.extend(leaves(value, f"{path}.") if nested else [path])
        return out

    missing = [v for v in leaves(default_values()) if f"`{v}`" not in readme]
    assert not missing, f"charts/kubetune/README.md does not document {missing}"


# --- the CRDs -----------------------------------------------------------------------------------


def crd_files() -> dict[str, Path]:
    return {p.name: p for p in sorted(CRDS.glob("kubetune.io_*.yaml"))}


def test_the_chart_copies_of_the_crds_are_crds() -> None:
    """A chart reads only files inside it, so files/crds/ holds copies of crds/ (written by
    `kubetune crds`): refresh with `kubetune crds --chart charts/kubetune`."""
    copies = {p.name: p for p in sorted((CHART / "files" / "crds").glob("*.yaml"))}
    assert len(crd_files()) == 2
    assert copies.keys() == crd_files().keys()
    for name, path in crd_files().items():
        assert copies[name].read_bytes() == path.read_bytes(), (
            f"charts/kubetune/files/crds/{name} differs from crds/{name}: "
            "kubetune crds --chart charts/kubetune"
        )


CRD_ANNOTATIONS = {"argocd.argoproj.io/sync-wave": "-1"}
KEEP_ANNOTATIONS = {
    "helm.sh/resource-policy": "keep",
    "argocd.argoproj.io/sync-options": "Prune=false",
}


@pytest.mark.parametrize(
    ("scenario", "annotations"),
    [("default", {**CRD_ANNOTATIONS, **KEEP_ANNOTATIONS}), ("custom", CRD_ANNOTATIONS)],
)
def test_the_rendered_crds_are_crds_plus_annotations(scenario: str, annotations: Obj) -> None:
    """Everything but metadata.annotations equals crds/ (as parsed: key order and quoting are the
    renderer's); the annotations are exactly the sync wave, and with crds.keep the two that keep
    the CRDs (and so every TuningJob) through an uninstall or a prune."""
    chart_crds = {
        o["metadata"]["name"]: o for o in find(objects(scenario), "CustomResourceDefinition")
    }
    expected = {}
    for path in crd_files().values():
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        expected[crd["metadata"]["name"]] = crd
    assert chart_crds.keys() == expected.keys()
    for name, crd in chart_crds.items():
        assert "annotations" not in expected[name]["metadata"], "crds/ gained annotations"
        crd = json.loads(json.dumps(crd))  # a copy
        assert crd["metadata"].pop("annotations") == annotations, name
        assert crd == expected[name], f"the chart's {name} differs from crds/"


def test_crds_install_false_renders_no_crd() -> None:
    assert not find(objects("namespaced"), "CustomResourceDefinition")
    assert SCENARIOS["namespaced"][2]["crds"] == {"install": False}


# --- RBAC ---------------------------------------------------------------------------------------


def roles(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if o["kind"] in ("Role", "ClusterRole")]


def test_cluster_wide_rbac_is_the_manifests() -> None:
    objs = objects("default")
    operator_rules = manifest("base/operator-rbac.yaml", "ClusterRole", OPERATOR)["rules"]
    runner_rules = manifest("base/runner-clusterrole.yaml", "ClusterRole", RUNNER)["rules"]
    assert only(objs, "ClusterRole", OPERATOR)["rules"] == operator_rules
    assert only(objs, "ClusterRole", RUNNER)["rules"] == runner_rules
    assert not find(objs, "Role")
    binding = only(objs, "ClusterRoleBinding", OPERATOR)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": OPERATOR,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}
    ]
    reference = manifest("base/operator-rbac.yaml", "ClusterRoleBinding", OPERATOR)
    assert binding["roleRef"] == reference["roleRef"]
    assert binding["subjects"] == reference["subjects"]


def test_namespaced_rbac_grants_the_same_rules_in_each_watched_namespace_only() -> None:
    objs = objects("namespaced")
    operator_rules = manifest("base/operator-rbac.yaml", "ClusterRole", OPERATOR)["rules"]
    assert not find(objs, "ClusterRoleBinding"), "a cluster-wide grant in namespaced mode"
    assert [o["metadata"]["name"] for o in find(objs, "ClusterRole")] == [RUNNER]
    operator_roles = find(objs, "Role", OPERATOR)
    assert sorted(o["metadata"]["namespace"] for o in operator_roles) == ["ml-a", "ml-b"]
    for role in operator_roles:
        assert role["rules"] == operator_rules
    bindings = find(objs, "RoleBinding", OPERATOR)
    assert sorted(o["metadata"]["namespace"] for o in bindings) == ["ml-a", "ml-b"]
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": OPERATOR,
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}
        ]
    served = OperatorConfig.from_env(env(container(objs))).namespaces
    assert served == ["ml-a", "ml-b"]


@pytest.mark.parametrize(
    ("scenario", "namespaces", "account"),
    [
        ("default", [NAMESPACE], RUNNER),
        ("namespaced", ["ml-a", "ml-b"], RUNNER),
        ("custom", ["team-x", "team-y"], "tuner"),
    ],
)
def test_each_runner_namespace_gets_the_runner_account_bound_to_its_rules(
    scenario: str, namespaces: list[str], account: str
) -> None:
    """Default: the release namespace cluster-wide, the watched namespaces otherwise;
    runner.namespaces overrides. The account is the one the operator puts in the stage Jobs."""
    objs = objects(scenario)
    (runner_role,) = [
        o for o in find(objs, "ClusterRole") if o["metadata"]["name"].endswith("runner")
    ]
    accounts = find(objs, "ServiceAccount", account)
    assert sorted(o["metadata"]["namespace"] for o in accounts) == namespaces
    bindings = [
        o
        for o in find(objs, "RoleBinding")
        if o["roleRef"]["name"] == runner_role["metadata"]["name"]
    ]
    assert sorted(o["metadata"]["namespace"] for o in bindings) == namespaces
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "ClusterRole"
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": account,
                "namespace": binding["metadata"]["namespace"],
            }
        ]
    assert OperatorConfig.from_env(env(container(objs))).runner_service_account == account


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_no_wildcards_no_secrets_no_escalation(scenario: str) -> None:
    for role in roles(objects(scenario)):
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule, ident(role)
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert not any("*" in value for value in rule.get(field, [])), (ident(role), rule)
            assert "secrets" not in {r.split("/")[0] for r in rule["resources"]}, ident(role)
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), ident(role)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_rule_says_why(scenario: str) -> None:
    """In the rendered YAML, as in manifests/, each rule is preceded by a comment."""
    rules_seen = 0
    for path, text in rendered(scenario).items():
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if re.match(r"\s*- apiGroups:", line):
                rules_seen += 1
                assert lines[i - 1].strip().startswith("#"), f"{path}:{i + 1}: a rule without why"
    grants = sum(len(role["rules"]) for role in roles(objects(scenario)))
    assert rules_seen == grants > 0


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_bindings_name_roles_and_accounts_that_the_chart_creates(scenario: str) -> None:
    objs = objects(scenario)
    role_refs = {
        (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) for o in roles(objs)
    }
    accounts = {
        (o["metadata"]["name"], o["metadata"]["namespace"]) for o in find(objs, "ServiceAccount")
    }
    for binding in [o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]:
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        assert (ref["kind"], ref["name"], scope) in role_refs, ident(binding)
        for subject in binding["subjects"]:
            assert (subject["name"], subject["namespace"]) in accounts, ident(binding)
    deployment = only(objs, "Deployment")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert (account, deployment["metadata"]["namespace"]) in accounts


# --- the Deployment -----------------------------------------------------------------------------


def test_the_environment_is_exactly_what_the_operator_config_reads() -> None:
    source = Path(operator_config.__file__).read_text(encoding="utf-8")
    read = set(re.findall(r"\"(KUBETUNE_[A-Z_]+)\"", source))
    assert read, "no KUBETUNE_* names found in config.py"
    for scenario in SCENARIOS:
        assert set(env(container(objects(scenario)))) == read, scenario
    # The defaults spell out the operator's own defaults (no hidden drift).
    assert OperatorConfig.from_env(env(container(objects("default")))) == OperatorConfig()
    assert env(container(objects("default")))["KUBETUNE_RUNNER_IMAGE"] == DEFAULT_RUNNER_IMAGE


def test_values_reach_the_operator_config() -> None:
    config = OperatorConfig.from_env(env(container(objects("custom"))))
    assert config == OperatorConfig(
        runner_image="registry.example/runner:7",
        runner_service_account="tuner",
        runner_memory="3Gi",
        namespaces=[],
        resync_seconds=12.5,
        report_grace_seconds=90.0,
        metrics_port=9090,
        liveness_port=LIVENESS_PORT,
    )


def test_the_deployment_is_one_recreated_replica_with_the_values_pod_settings() -> None:
    for scenario in SCENARIOS:
        spec = only(objects(scenario), "Deployment")["spec"]
        assert spec["replicas"] == 1
        assert spec["strategy"] == {"type": "Recreate"}
        assert (
            spec["selector"]["matchLabels"].items()
            <= spec["template"]["metadata"]["labels"].items()
        )
    _, _, values = SCENARIOS["custom"]
    pod = only(objects("custom"), "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert pod["tolerations"] == values["tolerations"]
    assert pod["affinity"] == values["affinity"]
    (operator,) = pod["containers"]
    assert operator["image"] == "ghcr.io/kubetune/kubetune-operator:0.2.0-rc.1"
    assert operator["imagePullPolicy"] == "Always"
    assert operator["resources"] == {
        "requests": {"cpu": "250m", "memory": "300Mi"},
        "limits": {"memory": 1},
    }
    default_pod = only(objects("default"), "Deployment")["spec"]["template"]["spec"]
    assert not {"nodeSelector", "tolerations", "affinity"} & default_pod.keys()
    assert default_pod["containers"][0]["image"] == f"ghcr.io/kubetune/{OPERATOR}:{VERSION}"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_pod_runs_restricted(scenario: str) -> None:
    pod = only(objects(scenario), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    operator = container(objects(scenario))
    assert operator["securityContext"] == {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # A read-only root filesystem needs a writable /tmp, and every volume is an emptyDir.
    mounts = {m["mountPath"]: m["name"] for m in operator["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert all(set(v) == {"name", "emptyDir"} for v in volumes.values())


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_startup_and_liveness_probes_ask_kopf_health_endpoint(scenario: str) -> None:
    operator = container(objects(scenario))
    config = OperatorConfig.from_env(env(operator))
    assert config.liveness_port == LIVENESS_PORT
    for probe in ("startupProbe", "livenessProbe"):
        get = operator[probe]["httpGet"]
        assert get["path"] == "/healthz"
        assert port_number(operator, get["port"]) == LIVENESS_PORT
    assert {"cpu", "memory"} <= operator["resources"]["requests"].keys()
    assert "memory" in operator["resources"]["limits"]


def test_the_default_pod_is_the_manifests_pod() -> None:
    """Apart from names and labels, the chart's defaults deploy what manifests/ deploys."""
    reference = manifest("base/operator-deployment.yaml", "Deployment", OPERATOR)["spec"]
    chart = only(objects("default"), "Deployment")["spec"]
    for spec in (reference, chart):
        del spec["selector"], spec["template"]["metadata"]
    assert chart == reference


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_metrics_service_reaches_the_metrics_port(scenario: str) -> None:
    objs = objects(scenario)
    operator = container(objs)
    config = OperatorConfig.from_env(env(operator))
    service = only(objs, "Service")
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics"
    assert port["port"] == config.metrics_port
    assert port_number(operator, port["targetPort"]) == config.metrics_port
    pod_labels = only(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


# --- the ServiceMonitor -------------------------------------------------------------------------

# The part of prometheus-operator's monitoring.coreos.com/v1 ServiceMonitor the chart uses (the
# CRD is not available offline); the Duration pattern is the CRD's.
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace", "labels"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "required": ["matchLabels"],
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "minProperties": 1,
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {
                                "type": "string",
                                "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
                                "(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
                            },
                        },
                    },
                },
            },
        },
    },
}


@pytest.mark.parametrize(
    ("scenario", "interval", "extra_labels"),
    [("namespaced", "30s", {"release": "prometheus"}), ("custom", "1m30s", {})],
)
def test_the_service_monitor_scrapes_the_metrics_service(
    scenario: str, interval: str, extra_labels: dict[str, str]
) -> None:
    objs = objects(scenario)
    monitor = only(objs, "ServiceMonitor")
    jsonschema.validate(monitor, SERVICE_MONITOR)
    service = only(objs, "Service")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == interval
    assert extra_labels.items() <= monitor["metadata"]["labels"].items()


def test_no_service_monitor_unless_enabled() -> None:
    assert not find(objects("default"), "ServiceMonitor")
    assert rendered("default")["templates/servicemonitor.yaml"].strip() == ""


# --- NOTES.txt ----------------------------------------------------------------------------------


def notes(scenario: str) -> str:
    return rendered(scenario)[f"templates/{NOTES}"]


def heredoc(text: str) -> tuple[str, Obj]:
    """The namespace and the TuningJob of the notes' `kubectl apply -n NS -f - <<'EOF'`."""
    match = re.search(r"kubectl apply -n (\S+) -f - <<'EOF'\n(.*?)\nEOF\n", text, re.DOTALL)
    assert match, "no kubectl apply heredoc in the notes"
    return match.group(1), yaml.safe_load(match.group(2))


@pytest.mark.parametrize(
    ("scenario", "namespace"),
    [("default", NAMESPACE), ("namespaced", "ml-a"), ("custom", "team-x")],
)
def test_the_notes_say_what_to_run_next(scenario: str, namespace: str) -> None:
    text = notes(scenario)
    assert "{{" not in text and "<no value>" not in text
    applied_in, job = heredoc(text)
    assert applied_in == namespace, "the example goes to a namespace with the runner's account"
    tuningjob = TuningJob.model_validate(job)  # the example is a valid TuningJob
    name = tuningjob.metadata.name
    assert f"kubectl -n {namespace} get tj" in text
    assert f"kubectl -n {namespace} wait --for=condition=Succeeded tj/{name}" in text
    assert f"kubetune trials {name} -n {namespace}" in text
    _, release_namespace, _ = SCENARIOS[scenario]
    deployment = only(objects(scenario), "Deployment")["metadata"]["name"]
    assert f"kubectl -n {release_namespace} rollout status deployment/{deployment}" in text


def test_the_notes_follow_the_values() -> None:
    assert "serves every namespace" in notes("default")
    assert "serves only these namespaces: ml-a, ml-b" in notes("namespaced")
    assert "crds.install is false" in notes("namespaced")
    assert "crds.install is false" not in notes("default")
    assert "ServiceMonitor" in notes("namespaced") and "ServiceMonitor" not in notes("default")
