"""The install: manifests/ and images/, parsed and cross-checked against the code they deploy.

What a cluster would only reveal at `kubectl apply` (or worse, at the first TuningJob) is checked
here offline: every kustomization resolves under kustomize's load restrictor; the Deployment is
one Recreate replica with a liveness probe and the restricted security context; its environment is
exactly what the operator's config reads; RBAC has no wildcards and no Secrets, and the runner's
role is exactly what the runner calls; the Dockerfiles run as uid 10001 with exec-form entrypoints.
With kubernetes-validate installed every object is also validated against the Kubernetes schemas,
and with kubectl on PATH every kustomization is rendered by kustomize itself.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune_operator import config as operator_config
from kubetune_operator.children import RUNNER_COMMAND
from kubetune_operator.config import DEFAULT_RUNNER_IMAGE, OperatorConfig

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
IMAGES = ROOT / "images"
KUSTOMIZATION = "kustomization.yaml"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
KUBERNETES_VERSION = "1.30"
"""The oldest Kubernetes the manifests are validated against (podFailurePolicy is GA in 1.31,
beta and on by default since 1.26)."""

OPERATOR = "kubetune-operator"
RUNNER = "kubetune-runner"
SYSTEM_NAMESPACE = "kubetune-system"
UID = 10001

Obj = dict[str, Any]


# --- loading ------------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(MANIFESTS.rglob("*.yaml"))


def load(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in MANIFESTS.rglob(KUSTOMIZATION))


def kustomization(directory: Path) -> Obj:
    (doc,) = load(directory / KUSTOMIZATION)
    return doc


def resources(directory: Path) -> Iterator[tuple[Path, Obj]]:
    """The objects a kustomization lists, following directory resources (patches not applied)."""
    for entry in kustomization(directory).get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            yield from resources(target)
        else:
            for doc in load(target):
                yield target, doc


def objects(directory: Path = MANIFESTS) -> list[Obj]:
    return [doc for _, doc in resources(directory)]


def only(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def ident(value: object) -> str:
    """Test ids: file paths as they are, objects as KIND/NAME."""
    if isinstance(value, dict):
        return f"{value['kind']}/{value['metadata']['name']}"
    return str(value)


def all_objects() -> list[tuple[str, Obj]]:
    """Every Kubernetes object in manifests/ (not kustomizations, not patches), with its file."""
    patches = {
        (d / p["path"]).resolve()
        for d in kustomization_dirs()
        for p in kustomization(d).get("patches", [])
        if "path" in p
    }
    return [
        (str(path.relative_to(ROOT)), doc)
        for path in yaml_files()
        if path.name != KUSTOMIZATION and path.resolve() not in patches
        for doc in load(path)
    ]


def deployment() -> Obj:
    return only(objects(), "Deployment", OPERATOR)


def operator_container() -> Obj:
    (container,) = deployment()["spec"]["template"]["spec"]["containers"]
    return container


def env(container: Obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def rules(role: Obj) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs, merged over the role's rules."""
    merged: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                merged.setdefault((group, resource), set()).update(rule["verbs"])
    return merged


def roles() -> list[tuple[str, Obj]]:
    return [(f, o) for f, o in all_objects() if o["kind"] in ("Role", "ClusterRole")]


# --- every file ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_every_yaml_parses_into_objects(path: Path) -> None:
    docs = load(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert isinstance(doc, dict)
        assert {"apiVersion", "kind"} <= doc.keys(), f"{path}: a document without apiVersion/kind"
        if doc["kind"] != "Kustomization":
            assert doc.get("metadata", {}).get("name"), f"{path}: a {doc['kind']} without a name"


@pytest.mark.parametrize("directory", kustomization_dirs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_kustomization_resources_resolve_under_the_load_restrictor(directory: Path) -> None:
    """kustomize loads files only in or below the kustomization's directory, and directories only
    when they hold a kustomization of their own and do not contain it (no cycles)."""
    doc = kustomization(directory)
    assert doc["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert doc["kind"] == "Kustomization"
    assert doc.get("resources"), f"{directory}: no resources"
    paths = [*doc["resources"], *(p["path"] for p in doc.get("patches", []) if "path" in p)]
    for entry in paths:
        assert "*" not in entry, f"{directory}: kustomize has no globs ({entry})"
        target = (directory / entry).resolve()
        assert target.exists(), f"{directory}: {entry} does not exist"
        if target.is_dir():
            assert (target / KUSTOMIZATION).is_file(), f"{entry} has no {KUSTOMIZATION}"
            assert not directory.resolve().is_relative_to(target), f"{entry} contains {directory}"
        else:
            assert target.is_relative_to(directory.resolve()), (
                f"{directory}: {entry} is outside the kustomization (kustomize refuses it)"
            )


def test_every_manifest_is_part_of_an_install() -> None:
    listed = {
        (d / entry).resolve()
        for d in kustomization_dirs()
        for entry in [
            *kustomization(d).get("resources", []),
            *(p["path"] for p in kustomization(d).get("patches", []) if "path" in p),
        ]
    }
    orphans = [
        str(p.relative_to(ROOT))
        for p in yaml_files()
        if p.name != KUSTOMIZATION and p.resolve() not in listed
    ]
    assert not orphans, f"not listed in any kustomization: {orphans}"


def test_the_install_has_the_expected_objects() -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects())
    assert kinds == [
        ("ClusterRole", OPERATOR),
        ("ClusterRole", RUNNER),
        ("ClusterRoleBinding", OPERATOR),
        ("CustomResourceDefinition", "modelcomparisons.kubetune.io"),
        ("CustomResourceDefinition", "tuningjobs.kubetune.io"),
        ("Deployment", OPERATOR),
        ("Namespace", SYSTEM_NAMESPACE),
        ("Service", "kubetune-operator-metrics"),
        ("ServiceAccount", OPERATOR),
    ]
    for obj in objects():
        if obj["kind"] not in (
            "Namespace",
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
        ):
            assert obj["metadata"]["namespace"] == SYSTEM_NAMESPACE, obj["metadata"]["name"]


def test_the_operator_namespace_enforces_the_restricted_pod_security_profile() -> None:
    labels = only(objects(), "Namespace", SYSTEM_NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# --- the Deployment -----------------------------------------------------------------------------


def test_one_replica_replaced_with_recreate() -> None:
    spec = deployment()["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()


def test_the_pod_runs_restricted() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == OPERATOR
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    context = operator_container()["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not context.get("privileged")
    # A read-only root filesystem needs a writable /tmp, and every volume is an emptyDir.
    mounts = {m["mountPath"]: m["name"] for m in operator_container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert all(set(v) == {"name", "emptyDir"} for v in volumes.values())


def test_resources_are_requested_and_memory_is_limited() -> None:
    resources_ = operator_container()["resources"]
    assert {"cpu", "memory"} <= resources_["requests"].keys()
    assert "memory" in resources_["limits"]


def _port(container: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def test_the_liveness_probe_asks_kopf_health_endpoint() -> None:
    container = operator_container()
    config = OperatorConfig.from_env(env(container))
    for probe in ("livenessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz"
        assert _port(container, get["port"]) == config.liveness_port
    # The path is the one the operator gives kopf.
    main = (ROOT / "operator" / "kubetune_operator" / "__main__.py").read_text()
    assert 'liveness_endpoint=f"http://0.0.0.0:{config.liveness_port}/healthz"' in main


def test_the_environment_is_exactly_what_the_operator_config_reads() -> None:
    source = Path(operator_config.__file__).read_text(encoding="utf-8")
    read = set(re.findall(r"\"(KUBETUNE_[A-Z_]+)\"", source))
    assert read, "no KUBETUNE_* names found in config.py"
    container = operator_container()
    assert set(env(container)) == read
    # Every value parses, and the manifest spells out the defaults (no hidden drift).
    assert OperatorConfig.from_env(env(container)) == OperatorConfig()


def test_the_images_are_this_version() -> None:
    container = operator_container()
    assert container["image"] == f"ghcr.io/kubetune/{OPERATOR}:{VERSION}"
    assert env(container)["KUBETUNE_RUNNER_IMAGE"] == DEFAULT_RUNNER_IMAGE
    assert f"ghcr.io/kubetune/{RUNNER}:{VERSION}" == DEFAULT_RUNNER_IMAGE


def test_the_metrics_service_reaches_the_metrics_port() -> None:
    container = operator_container()
    service = only(objects(), "Service", "kubetune-operator-metrics")
    (port,) = service["spec"]["ports"]
    config = OperatorConfig.from_env(env(container))
    assert port["port"] == config.metrics_port
    assert _port(container, port["targetPort"]) == config.metrics_port
    pod_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


# --- RBAC ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "role"), roles(), ids=ident)
def test_no_wildcards_no_secrets_no_escalation(path: str, role: Obj) -> None:
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule, path
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert not any("*" in value for value in rule.get(field, [])), (path, rule)
        assert not {"secrets"} & {r.split("/")[0] for r in rule["resources"]}, (path, rule)
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), (path, rule)


def test_every_rule_says_why() -> None:
    """Each rule is preceded by a comment: a grant nobody can explain should not be there."""
    for path in yaml_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if re.match(r"\s*- apiGroups:", line):
                above = lines[i - 1].strip()
                assert above.startswith("#"), f"{path.name}:{i + 1}: a rule without a comment"


def test_the_runner_may_read_its_tuningjob_patch_its_status_and_keep_its_ledger() -> None:
    """kubetune/cluster.py: get tuningjobs, patch tuningjobs/status, and the trial ledger's
    ConfigMaps (read, create, merge-patch). Nothing else: no Jobs, no pods, no Secrets."""
    runner = only(objects(), "ClusterRole", RUNNER)
    assert rules(runner) == {
        ("kubetune.io", "tuningjobs"): {"get"},
        ("kubetune.io", "tuningjobs/status"): {"patch"},
        ("", "configmaps"): {"get", "create", "patch"},
    }


def test_the_operator_grants_are_the_calls_it_makes() -> None:
    operator = only(objects(), "ClusterRole", OPERATOR)
    assert rules(operator) == {
        ("kubetune.io", "tuningjobs"): {"get", "list", "watch", "patch", "create", "delete"},
        ("kubetune.io", "modelcomparisons"): {"get", "list", "watch", "patch"},
        ("kubetune.io", "tuningjobs/status"): {"patch"},
        ("kubetune.io", "modelcomparisons/status"): {"patch"},
        ("kubetune.io", "tuningjobs/finalizers"): {"update"},
        ("kubetune.io", "modelcomparisons/finalizers"): {"update"},
        ("batch", "jobs"): {"list", "watch", "create", "patch", "delete"},
        ("", "pods"): {"list"},
        ("", "events"): {"create"},
    }


# What each client call of the code needs: (apiGroup, resource, verb). A call missing here fails
# the test below, so that a new API call in kube.py or cluster.py comes with its RBAC rule.
KT = "kubetune.io"
CALLS: dict[str, set[tuple[str, str, str]]] = {
    "create_namespaced_job": {("batch", "jobs", "create")},
    "patch_namespaced_job": {("batch", "jobs", "patch")},
    "delete_namespaced_job": {("batch", "jobs", "delete")},
    "list_namespaced_pod": {("", "pods", "list")},
    "read_namespaced_config_map": {("", "configmaps", "get")},
    "create_namespaced_config_map": {("", "configmaps", "create")},
    "patch_namespaced_config_map": {("", "configmaps", "patch")},
}
OPERATOR_CUSTOM_CALLS = {  # kube.py: both kinds are read; only TuningJobs (children) are written
    "get_namespaced_custom_object": {(KT, "tuningjobs", "get"), (KT, "modelcomparisons", "get")},
    "create_namespaced_custom_object": {(KT, "tuningjobs", "create")},
    "patch_namespaced_custom_object": {(KT, "tuningjobs", "patch")},
    "delete_namespaced_custom_object": {(KT, "tuningjobs", "delete")},
    "patch_namespaced_custom_object_status": {
        (KT, "tuningjobs/status", "patch"),
        (KT, "modelcomparisons/status", "patch"),
    },
}
RUNNER_CUSTOM_CALLS = {  # cluster.py: its own TuningJob only
    "get_namespaced_custom_object": {(KT, "tuningjobs", "get")},
    "patch_namespaced_custom_object_status": {(KT, "tuningjobs/status", "patch")},
}
KOPF_NEEDS = {
    # Watching (handlers, indexes, timers) and kopf's finalizer/annotation merge patches.
    *(
        (KT, plural, verb)
        for plural in ("tuningjobs", "modelcomparisons")
        for verb in ("list", "watch", "patch")
    ),
    ("batch", "jobs", "list"),
    ("batch", "jobs", "watch"),
    ("", "events", "create"),  # kopf.event: core v1 Events
    # blockOwnerDeletion on the children's ownerReferences (OwnerReferencesPermissionEnforcement).
    (KT, "tuningjobs/finalizers", "update"),
    (KT, "modelcomparisons/finalizers", "update"),
}


def needed(module: Path, custom: dict[str, set[tuple[str, str, str]]]) -> set[tuple[str, str, str]]:
    calls = set(re.findall(r"self\.(?:batch|core|custom)\.(\w+)", module.read_text()))
    assert calls, f"no API client calls found in {module.name}"
    known = {**CALLS, **custom}
    unknown = calls - known.keys()
    assert not unknown, f"{module.name} calls {unknown}: add their RBAC rules and map them here"
    return set().union(*(known[call] for call in calls))


def granted(role: Obj) -> set[tuple[str, str, str]]:
    return {(g, r, v) for (g, r), verbs in rules(role).items() for v in verbs}


def test_the_operator_role_is_what_its_code_and_kopf_call() -> None:
    kube = ROOT / "operator" / "kubetune_operator" / "kube.py"
    need = needed(kube, OPERATOR_CUSTOM_CALLS) | KOPF_NEEDS
    assert granted(only(objects(), "ClusterRole", OPERATOR)) == need


def test_the_runner_role_is_what_its_code_calls() -> None:
    cluster = ROOT / "trial_runner" / "kubetune" / "cluster.py"
    assert granted(only(objects(), "ClusterRole", RUNNER)) == needed(cluster, RUNNER_CUSTOM_CALLS)


def test_bindings_name_roles_and_service_accounts_that_exist() -> None:
    everything = [o for _, o in all_objects()]
    role_names = {(o["kind"], o["metadata"]["name"]) for o in everything if "rules" in o}
    accounts = {o["metadata"]["name"] for o in everything if o["kind"] == "ServiceAccount"}
    bindings = [o for o in everything if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert bindings
    for binding in bindings:
        ref = binding["roleRef"]
        assert ref["apiGroup"] == "rbac.authorization.k8s.io"
        assert (ref["kind"], ref["name"]) in role_names, binding["metadata"]["name"]
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount"
            assert subject["name"] in accounts
            if binding["kind"] == "ClusterRoleBinding":
                assert subject["namespace"] == SYSTEM_NAMESPACE


def test_the_runner_bundle_serves_any_namespace() -> None:
    """manifests/runner/ is applied once per namespace: nothing in it names one, and its account
    is the one the operator puts in the stage Jobs."""
    bundle = objects(MANIFESTS / "runner")
    assert sorted(o["kind"] for o in bundle) == ["RoleBinding", "ServiceAccount"]
    for obj in bundle:
        assert "namespace" not in obj["metadata"]
        assert obj["metadata"]["name"] == OperatorConfig().runner_service_account
    binding = only(bundle, "RoleBinding", RUNNER)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": RUNNER,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RUNNER}]


def test_the_namespaced_variant_binds_per_namespace_and_says_which() -> None:
    variant = MANIFESTS / "namespaced"
    doc = kustomization(variant)
    served = [
        kustomization((variant / entry).resolve())["namespace"]
        for entry in doc["resources"]
        if (variant / entry).resolve() != (MANIFESTS / "base").resolve()
    ]
    assert served == ["ml-team"]
    patches = [load(variant / p["path"])[0] for p in doc["patches"]]
    deleted = [p for p in patches if p.get("$patch") == "delete"]
    assert [(p["kind"], p["metadata"]["name"]) for p in deleted] == [
        ("ClusterRoleBinding", OPERATOR)
    ]
    (env_patch,) = [p for p in patches if p["kind"] == "Deployment"]
    (container,) = env_patch["spec"]["template"]["spec"]["containers"]
    assert OperatorConfig.from_env(env(container)).namespaces == served
    for namespace_dir in (variant / entry for entry in doc["resources"]):
        if namespace_dir.resolve() == (MANIFESTS / "base").resolve():
            continue
        binding = only(objects(namespace_dir), "RoleBinding", OPERATOR)
        assert binding["roleRef"]["name"] == OPERATOR
        assert binding["subjects"][0]["namespace"] == SYSTEM_NAMESPACE


# --- rendered by kustomize, validated against the Kubernetes schemas ----------------------------


def kustomize(directory: Path) -> list[Obj]:
    if shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(directory)]
    elif shutil.which("kustomize"):
        command = ["kustomize", "build", str(directory)]
    else:
        pytest.skip("neither kubectl nor kustomize is on PATH")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_kustomize_renders_the_cluster_wide_install() -> None:
    rendered = kustomize(MANIFESTS)
    assert sorted(json.dumps(o, sort_keys=True) for o in rendered) == sorted(
        json.dumps(o, sort_keys=True) for o in objects()
    )


def test_kustomize_renders_the_namespaced_variant() -> None:
    rendered = kustomize(MANIFESTS / "namespaced")
    assert not [o for o in rendered if o["kind"] == "ClusterRoleBinding"]
    bindings = {
        (o["metadata"]["namespace"], o["metadata"]["name"])
        for o in rendered
        if o["kind"] == "RoleBinding"
    }
    assert bindings == {("ml-team", OPERATOR), ("ml-team", RUNNER)}
    (container,) = only(rendered, "Deployment", OPERATOR)["spec"]["template"]["spec"]["containers"]
    assert env(container)["KUBETUNE_NAMESPACES"] == "ml-team"
    assert set(env(container)) == set(env(operator_container()))
    assert only(rendered, "ServiceAccount", RUNNER)["metadata"]["namespace"] == "ml-team"


@pytest.mark.parametrize(
    ("path", "obj"),
    all_objects(),
    ids=ident,
)
def test_valid_against_the_kubernetes_schema(path: str, obj: Obj) -> None:
    validate = pytest.importorskip("kubernetes_validate")
    try:
        validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except validate.ValidationError as error:
        where = "/".join(str(p) for p in getattr(error, "path", []))
        message = getattr(error, "message", str(error).splitlines()[0])
        problem = f"{path}: {ident(obj)}: at {where or '/'}: {message}"
    else:
        return
    pytest.fail(problem, pytrace=False)  # outside the except: no chained schema dump


# --- the images ---------------------------------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return [(w.upper(), rest.strip()) for w, _, rest in (s.strip().partition(" ") for s in joined)]


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


DOCKERFILES = {
    "runner.Dockerfile": ("boost", RUNNER_COMMAND),
    "operator.Dockerfile": ("operator", ["python", "-m", "kubetune_operator"]),
}


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_is_multi_stage_and_pinned(name: str) -> None:
    steps = instructions(IMAGES / name)
    froms = [args for word, args in steps if word == "FROM"]
    assert len(froms) >= 2, "a build stage and a runtime stage"
    (default,) = [
        args for word, args in steps if word == "ARG" and args.startswith("PYTHON_IMAGE=")
    ]
    base = default.split("=", 1)[1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", base), base
    assert all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms), froms


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_runs_non_root_with_an_exec_entrypoint(name: str) -> None:
    extra, command = DOCKERFILES[name]
    steps = final_stage(IMAGES / name)
    users = [args for word, args in steps if word == "USER"]
    assert users, "the runtime stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid == str(UID) and gid in ("", str(UID)), "numeric, so runAsNonRoot can check it"
    (entrypoint,) = [args for word, args in steps if word == "ENTRYPOINT"]
    assert json.loads(entrypoint) == command, "exec form (a JSON list): no shell at run time"
    assert not [args for word, args in steps if word == "CMD" and not args.startswith("[")]
    installs = [args for word, args in steps if word == "RUN" and "pip install" in args]
    assert installs and all("--no-cache-dir" in args for args in installs)
    if extra == "operator":
        # The operator installs kubetune without its fitting stack, and its runtime list.
        assert any("--no-deps" in args and "kopf" in args for args in installs)
    else:
        assert any(f"[{extra}]" in args for args in installs), f"installs kubetune[{extra}]"
    # The uid is the one the manifests run as.
    assert deployment()["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == UID
    children = (ROOT / "operator" / "kubetune_operator" / "children.py").read_text()
    assert f'"runAsUser": {UID}' in children
