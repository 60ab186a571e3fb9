"""The runner's one connection to the Kubernetes API: read its TuningJob, patch its status.

The runner writes only the fields it owns (trials, progress, best, topTrials, report and the
data part of reproducibility) with JSON merge patches, so the operator's fields are never
overwritten. Transient errors are retried with backoff; a resource that is gone stops the runner.
"""

from __future__ import annotations

import json
import time
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kubetune.api.base import GROUP, VERSION
from kubetune.planning import ObjectRef

MERGE_PATCH = "application/merge-patch+json"
RETRYABLE = {409, 429, 500, 502, 503, 504}
PLURALS = {"TuningJob": "tuningjobs", "ModelComparison": "modelcomparisons"}


class ResourceGone(Exception):
    """The TuningJob was deleted: the stage has no one left to report to."""


def api_client() -> client.ApiClient:
    """In a pod, its service account; elsewhere, the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


class StatusWriter:
    """Reads the target resource and merge-patches its status subresource."""

    def __init__(self, *, target: ObjectRef, api: client.ApiClient, attempts: int = 6) -> None:
        self.target = target
        self.custom: Any = client.CustomObjectsApi(api)
        self.plural = PLURALS[target.kind]
        self.attempts = attempts

    def get(self) -> dict[str, Any]:
        response = self._retry(
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            self.target.namespace,
            self.plural,
            self.target.name,
            _preload_content=False,
        )
        body: dict[str, Any] = json.loads(response.data)
        uid = body.get("metadata", {}).get("uid")
        if self.target.uid and uid and uid != self.target.uid:
            raise ResourceGone(f"{self.target.name} was deleted and created again")
        return body

    def patch(self, status: dict[str, Any]) -> None:
        self._retry(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            self.target.namespace,
            self.plural,
            self.target.name,
            {"status": status},
            _content_type=MERGE_PATCH,
        )

    def _retry(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return retry(fn, *args, attempts=self.attempts, **kwargs)
        except ApiException as error:
            if error.status == 404:
                raise ResourceGone(f"{self.target.kind} {self.target.name} is gone") from None
            raise


def describe(error: BaseException) -> str:
    """One line for a user: an API error as its status and the server's message, no headers."""
    if not isinstance(error, ApiException):
        return f"{type(error).__name__}: {error}"
    message = ""
    try:
        message = str(json.loads(error.body or "{}").get("message") or "")
    except (TypeError, ValueError, AttributeError):
        message = ""
    text = f"Kubernetes API {error.status} {error.reason or ''}".rstrip()
    return f"{text}: {message}" if message else text


def retry(fn: Any, *args: Any, attempts: int = 6, **kwargs: Any) -> Any:
    """Call ``fn``, retrying conflicts, throttling and server errors with backoff."""
    delay = 0.5
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except ApiException as error:
            if error.status not in RETRYABLE or attempt == attempts - 1:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 8.0)
    raise AssertionError("unreachable")


class KubeConfigMaps:
    """The ledger's ConfigMaps in the cluster, owned by (and deleted with) the TuningJob."""

    def __init__(self, *, api: client.ApiClient, owner: ObjectRef) -> None:
        self.core: Any = client.CoreV1Api(api)  # raw dicts in and out, not its models
        self.owner = owner

    def read(self, name: str) -> dict[str, str] | None:
        try:
            found = retry(
                self.core.read_namespaced_config_map,
                name,
                self.owner.namespace,
                _preload_content=False,
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        data: dict[str, str] = json.loads(found.data).get("data") or {}
        return data

    def create(self, name: str, data: dict[str, str]) -> None:
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": self.owner.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "kubetune-runner",
                "kubetune.io/tuningjob": self.owner.name,
                "kubetune.io/ledger": "true",
            },
        }
        if self.owner.uid:
            metadata["ownerReferences"] = [
                {
                    "apiVersion": self.owner.api_version,
                    "kind": self.owner.kind,
                    "name": self.owner.name,
                    "uid": self.owner.uid,
                    "blockOwnerDeletion": False,
                }
            ]
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
        try:
            self.core.create_namespaced_config_map(self.owner.namespace, body)
        except ApiException as error:
            if error.status == 409:  # made by an earlier pod that died before it read it back
                self.add(name, data)
            elif error.status in RETRYABLE:
                self._create_again(name, body, data)
            else:
                raise

    def _create_again(self, name: str, body: dict[str, Any], data: dict[str, str]) -> None:
        # A create whose answer was lost may have landed: then 409 means it is there.
        try:
            retry(self.core.create_namespaced_config_map, self.owner.namespace, body, attempts=5)
        except ApiException as error:
            if error.status != 409:
                raise
            self.add(name, data)

    def add(self, name: str, data: dict[str, str]) -> None:
        # Retrying is safe: a merge patch that adds one key is idempotent.
        retry(
            self.core.patch_namespaced_config_map,
            name,
            self.owner.namespace,
            {"data": data},
            _content_type=MERGE_PATCH,
        )
