"""The one module that talks to the Kubernetes API (besides kopf's own watching and patching).

Blocking calls of the official client run in a worker thread. A create that finds the object
already there (409) and a delete or patch that finds nothing (404) count as success: names are
deterministic, so both only mean that an earlier pass got there first. 429 and 5xx raise
``Retryable`` so that the handler backs off and tries again; so does a call that gets no answer
in time. Every call has a deadline, or one stuck on a dead connection would hold its thread, and
its pass slot, for good; urllib3 tries a read (GET, DELETE) up to three more times on its own,
so such a call gives up within four deadlines.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as TransportError
from urllib3.exceptions import LocationValueError, SSLError

from kubetune.api.base import GROUP, VERSION
from kubetune.cluster import api_client
from kubetune_operator.children import RUNNER_CONTAINER

MERGE_PATCH = "application/merge-patch+json"
RETRYABLE = {429, 500, 502, 503, 504}
REQUEST_TIMEOUT = (30.0, 60.0)
"""Seconds to connect, and to wait for the answer, per attempt: kopf's own networking timeouts."""
PLURALS = {"TuningJob": "tuningjobs", "ModelComparison": "modelcomparisons"}


class Retryable(Exception):
    """The API server is busy or failing; the same call may work later.

    ``delay`` is the server's Retry-After, when it sent one; otherwise the caller backs off.
    """

    def __init__(self, status: int, reason: str, delay: float | None) -> None:
        super().__init__(f"API answered {status} {reason}" if status else f"API: {reason}")
        self.status, self.delay = status, delay


def _retry_after(error: ApiException) -> float | None:
    headers = error.headers or {}
    try:
        return max(1.0, float(headers.get("Retry-After", "")))
    except ValueError:
        return None


def backoff(retry: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff for the ``retry``-th retry (0-based), with a little jitter."""
    delay: float = min(cap, base * 2 ** max(0, retry))
    return delay * random.uniform(0.8, 1.2)


def load_api_client() -> client.ApiClient:
    """In a pod, the service account; elsewhere, the kubeconfig (as the runner does)."""
    return api_client()


class Kube:
    """Every API call the operator makes, with the answers it tolerates."""

    def __init__(
        self, api: client.ApiClient, *, request_timeout: tuple[float, float] = REQUEST_TIMEOUT
    ) -> None:
        self.api = api
        self.request_timeout = request_timeout
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    async def _call(self, fn: Any, *args: Any, ok: frozenset[int] = frozenset(), **kw: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, _request_timeout=self.request_timeout, **kw)
        except TransportError as error:  # no answer in time, or the connection failed
            cause = getattr(error, "reason", None) or error
            if isinstance(cause, SSLError | LocationValueError):
                raise  # the certificate or the address is wrong: waiting cannot help
            raise Retryable(0, f"no answer: {cause}", None) from error
        except ApiException as error:
            if error.status in ok:
                return None
            if error.status in RETRYABLE:
                raise Retryable(error.status, str(error.reason), _retry_after(error)) from error
            raise

    async def create(self, body: dict[str, Any]) -> None:
        """Create a stage Job or a child TuningJob; 409 (already there) is success."""
        namespace = body["metadata"]["namespace"]
        if body["kind"] == "Job":
            await self._call(self.batch.create_namespaced_job, namespace, body, ok=frozenset({409}))
        else:
            await self._call(
                self.custom.create_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURALS[body["kind"]],
                body,
                ok=frozenset({409}),
            )

    async def get(self, *, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The current TuningJob or ModelComparison (None when it is gone).

        Read at the start of every reconcile pass: the body a handler was given may predate
        the status the previous pass wrote.
        """
        result = await self._call(
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURALS[kind],
            name,
            ok=frozenset({404}),
        )
        return None if result is None else dict(result)

    async def set_job_suspend(self, *, namespace: str, name: str, suspend: bool) -> None:
        await self._call(
            self.batch.patch_namespaced_job,
            name,
            namespace,
            {"spec": {"suspend": suspend}},
            _content_type=MERGE_PATCH,
            ok=frozenset({404}),
        )

    async def set_child_suspend(self, *, namespace: str, name: str, suspend: bool) -> None:
        await self.patch_child_spec(namespace=namespace, name=name, patch={"suspend": suspend})

    async def patch_child_spec(self, *, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """A JSON merge patch of a child TuningJob's spec (the operator created the child)."""
        await self._call(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "tuningjobs",
            name,
            {"spec": patch},
            _content_type=MERGE_PATCH,
            ok=frozenset({404}),
        )

    async def delete_job(self, *, namespace: str, name: str) -> None:
        # Background propagation: the Job's pods go too (the runner stops).
        await self._call(
            self.batch.delete_namespaced_job,
            name,
            namespace,
            propagation_policy="Background",
            ok=frozenset({404}),
        )

    async def delete_tuningjob(self, *, namespace: str, name: str) -> None:
        await self._call(
            self.custom.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "tuningjobs",
            name,
            ok=frozenset({404}),
        )

    async def patch_status(
        self, *, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> None:
        """A JSON merge patch of the status subresource: only the fields given change."""
        await self._call(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURALS[kind],
            name,
            {"status": patch},
            _content_type=MERGE_PATCH,
            ok=frozenset({404}),
        )

    async def termination_message(self, *, namespace: str, job: str) -> str | None:
        """The runner's last words (its termination message) from the Job's newest failed pod."""

        def pods_json(**kw: Any) -> bytes:
            # The raw body, read in the API thread under the call's deadline (not on the loop).
            response: Any = self.core.list_namespaced_pod(
                namespace, label_selector=f"job-name={job}", _preload_content=False, **kw
            )
            data: bytes = response.data  # an unread urllib3 response, without preloading
            return data

        data = await self._call(pods_json, ok=frozenset({404}))
        if data is None:
            return None
        pods = json.loads(data).get("items") or []
        # Filter here too: a server that ignored the selector must not mix up Jobs.
        pods = [p for p in pods if (p["metadata"].get("labels") or {}).get("job-name") == job]
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
        for pod in pods:
            for state in (pod.get("status") or {}).get("containerStatuses") or []:
                if state.get("name") != RUNNER_CONTAINER:
                    continue
                terminated = (state.get("state") or {}).get("terminated") or {}
                if terminated.get("reason") == "OOMKilled":  # before any log tail it may carry
                    return "the runner was killed for using more memory than its limit (OOMKilled)"
                message = (terminated.get("message") or "").strip()
                if message:
                    return message
        return None
