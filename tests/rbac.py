"""RBAC replay: is every API request the operator and the runner made allowed by our roles,
and is every granted verb used?

Grants come from `manifests/base` and from the Helm chart rendered by Helm's engine; requests
come from the mock API's recording (tests/operator/harness.py: ``ApiCall.as_dict()``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
OPERATOR_ROLE = "kubetune-operator"
RUNNER_ROLE = "kubetune-runner"

# Granted, but not observable against the mock API; each with the reason it is granted.
UNOBSERVED: dict[tuple[str, str, str], str] = {
    (
        "kubetune.io",
        "tuningjobs/finalizers",
        "update",
    ): "blockOwnerDeletion on owner references under OwnerReferencesPermissionEnforcement",
    (
        "kubetune.io",
        "modelcomparisons/finalizers",
        "update",
    ): "blockOwnerDeletion on owner references under OwnerReferencesPermissionEnforcement",
}


@dataclass(frozen=True)
class Grant:
    group: str
    resource: str
    verb: str


def _grants(role: dict[str, Any]) -> frozenset[Grant]:
    out = set()
    for rule in role.get("rules") or []:
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    out.add(Grant(group, resource, verb))
    return frozenset(out)


def _roles(documents: Iterable[Any]) -> dict[str, frozenset[Grant]]:
    return {
        d["metadata"]["name"]: _grants(d)
        for d in documents
        if isinstance(d, dict) and d.get("kind") in ("ClusterRole", "Role")
    }


@functools.cache
def manifest_roles() -> dict[str, frozenset[Grant]]:
    documents: list[Any] = []
    for path in sorted((ROOT / "manifests" / "base").glob("*.yaml")):
        documents += yaml.safe_load_all(path.read_text())
    return _roles(documents)


@functools.cache
def chart_roles() -> dict[str, frozenset[Grant]]:
    import helm_python as helm

    with helm.Chart.load(ROOT / "charts" / "kubetune") as chart:
        texts = chart.render({}, name="kubetune", namespace="kubetune-system", is_install=True)
    documents: list[Any] = []
    for path, text in texts.items():
        if not path.endswith("NOTES.txt"):
            documents += yaml.safe_load_all(text)
    return _roles(documents)


def needed(call: dict[str, Any]) -> Grant | None:
    """The grant a request needs; None for discovery (allowed to every authenticated user)."""
    if not call.get("is_resource"):
        return None
    return Grant(call.get("group") or "", call["rbac_resource"], call["verb"])


def denied(calls: Iterable[dict[str, Any]], grants: frozenset[Grant]) -> list[str]:
    """The requests the grants do not allow, one line each."""
    lines = set()
    for call in calls:
        grant = needed(call)
        if grant is not None and grant not in grants:
            where = f"{grant.group or 'core'}/{grant.resource}"
            lines.add(f"{call['method']} {call['path']} ({grant.verb} {where})")
    return sorted(lines)


def unused(calls: Iterable[dict[str, Any]], grants: frozenset[Grant]) -> list[Grant]:
    """Granted verbs that no request used and that have no stated reason."""
    used = {g for call in calls if (g := needed(call)) is not None}
    return sorted(
        (g for g in grants if g not in used and (g.group, g.resource, g.verb) not in UNOBSERVED),
        key=lambda g: (g.group, g.resource, g.verb),
    )
