"""Run the real kopf operator in-process against kmock's fake Kubernetes API.

Three pieces, each usable on its own:

* :class:`KubetuneEmulator`: a subclass of ``kmock.KubernetesEmulator`` that behaves enough like
  a kube-apiserver for kopf, our operator and the ``kubernetes`` Python client.
* :class:`MockApiServer`: serves one emulator over real HTTP on ``127.0.0.1`` from its own thread
  and event loop, so in-process tests, the operator thread and subprocesses (through
  :meth:`MockApiServer.write_kubeconfig`) all reach the same state. It records every request
  (:class:`ApiCall`: who, verb, resource, status, JSON body and arrival time).
* :func:`run_operator` / :class:`RunningOperator`: the real ``kopf.operator()`` in its own thread
  and event loop, logged in to the mock, with a clean, fast stop (timer and daemon tasks that
  kopf spawned too late to stop itself are cancelled after :data:`HUNG_RUNNER_GRACE` instead
  of holding kopf's fixed 5-second wait) and a restart helper.

Plus a small synchronous HTTP client (:class:`ApiClient`) to act as the user or as the Job
controller, and :func:`wait_for`. Every helper is synchronous, so tests can be plain ``def``
functions: nothing here needs pytest-asyncio or a particular ``asyncio_mode``.

What the emulator models (stock kmock 0.8 lacks most of it; see ``DESIGN.md`` section 6):

* ``metadata.resourceVersion`` from one monotonic counter, set on every write and carried by
  watch events; lists carry the current value in ``metadata.resourceVersion``.
* ``metadata.uid``, ``metadata.creationTimestamp``, ``metadata.generation`` (1 on create, +1 only
  when ``spec`` changes); ``apiVersion`` and ``kind`` are filled in when absent.
* ``metadata.generateName`` (deterministic pseudo-random suffixes); 409 AlreadyExists on
  creating a live name; 404 NotFound for missing objects and unknown resources.
* Optimistic concurrency: a write whose result carries a ``metadata.resourceVersion`` different
  from the stored one gets 409 Conflict (a merge patch or PUT with a stale version; a JSON patch
  that replaces it). A failing JSON-patch ``test`` op (what kopf uses) and other JSON-patch
  errors get 422 Invalid.
* Patch types: JSON patch and RFC 7386 merge patch; strategic merge patch on built-in
  resources is treated as a plain merge patch (lists are replaced, never merged by key) and,
  as in Kubernetes, gets 415 on custom resources. A JSON patch that is not a list, or a merge
  patch that is not an object, gets 400. Apply patches (server-side apply) get 415.
* PUT (replace), unconditional when the body carries no resourceVersion.
* The ``status`` subresource, for every resource that declares it (our CRDs, Jobs, Pods): writes
  to ``.../NAME/status`` change only ``status``; writes to the main resource keep ``status``
  as stored, and so does create (status is dropped, as for CRDs).
* Writes that change nothing are no-ops: no new resourceVersion, no watch event.
* DELETE with finalizers sets ``deletionTimestamp`` (a MODIFIED event); the write that removes
  the last finalizer deletes the object (one DELETED event). No new finalizers can be added
  to an object being deleted (422).
* Watches: ``?resourceVersion=N`` replays only the events after N (no replay of old events);
  no version (or ``0``) starts with ADDED events for the current objects;
  ``sendInitialEvents=true`` ends the initial events with the BOOKMARK kopf and client-go
  expect; ``timeoutSeconds`` ends the stream. ``watch=true`` and ``watch=True`` both work.
* Equality-based label selectors (``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``) and the
  ``metadata.name`` / ``metadata.namespace`` field selectors on lists and watches. Anything
  else (set-based ``in``/``notin``, other fields) gets 400 rather than being silently ignored.
* Discovery: kmock's bundled built-in resources plus ``kubetune.io/v1alpha1`` ``tuningjobs``
  and ``modelcomparisons`` (namespaced, with ``status``), so kopf's core discovery succeeds.

Not modelled: ``GET /api/v1/namespaces`` (kmock's path parser fails on it with 500, so kopf's
namespace scanning is disabled and namespaces are given explicitly); set-based label
selectors and other field selectors; a label change making an object leave a filtered watch
(no synthetic DELETED); server-side apply; ``deletecollection``; ``DeleteOptions`` (grace
periods, preconditions, propagation policy); owner-reference garbage collection; the Job,
Pod or any other controller (tests play the Job controller through :class:`ApiClient`);
admission, CRD schema validation, CEL, defaulting and pruning; authentication and RBAC (every
request is allowed; the recorded requests are for replaying against RBAC rules); watch
bookmarks after the initial events; 410 Gone (the event log is never compacted); chunked
lists (``limit``/``continue`` are ignored); subresources other than ``status``.
All resource requests are served by the emulator itself, so kmock's DSL reactions
(``emulator[...] << ...``) only apply to non-resource paths such as discovery; to make a
resource request fail, use :meth:`KubetuneEmulator.inject_error` (it changes no state).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import datetime
import importlib
import itertools
import json
import logging
import random
import threading
import time
import types
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock
import kopf
import kubernetes.client
import yaml

logger = logging.getLogger(__name__)

T = TypeVar("T")

NAMESPACE = "kubetune-test"
GROUP = "kubetune.io"
VERSION = "v1alpha1"

TUNINGJOBS = "kubetune.io/v1alpha1/tuningjobs"
MODELCOMPARISONS = "kubetune.io/v1alpha1/modelcomparisons"
JOBS = "batch/v1/jobs"
EVENTS = "v1/events"
CONFIGMAPS = "v1/configmaps"
PODS = "v1/pods"

HARNESS_USER_AGENT = "kubetune-test-harness"
OPERATOR_TOKEN_PREFIX = "kubetune-operator"

_ALL_VERBS = frozenset(
    {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
)
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the same alphabet Kubernetes uses
_JSON_PATCH = "application/json-patch+json"
_MERGE_PATCH = "application/merge-patch+json"
_STRATEGIC_PATCH = "application/strategic-merge-patch+json"
_APPLY_PATCHES = ("application/apply-patch+yaml", "application/apply-patch+cbor")
# Server-managed metadata that clients cannot change by writing the main resource.
_MANAGED_META = (
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
)


# --------------------------------------------------------------------------------------------
# Errors and small pure helpers.
# --------------------------------------------------------------------------------------------


def _error(code: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    """A Kubernetes ``Status`` failure, rendered by kmock with this HTTP code."""
    return kmock.KubernetesError(
        status=code, reason=reason, message=message, details=details or {"causes": []}
    )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _resource_str(res: kmock.resource) -> str:
    return f"{res.group}/{res.version}/{res.plural}" if res.group else f"{res.version}/{res.plural}"


def _api_version(res: kmock.resource) -> str:
    return f"{res.group}/{res.version}" if res.group else str(res.version)


def _qualified(res: kmock.resource) -> str:
    return f"{res.plural}.{res.group}" if res.group else str(res.plural)


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return ""


def _verb(method: str, name: str | None, params: Mapping[str, str]) -> str:
    """The Kubernetes (RBAC) verb of a request."""
    method = method.upper()
    if method == "GET":
        if params.get("watch", "").lower() in ("true", "1"):
            return "watch"
        return "get" if name else "list"
    if method == "DELETE":
        return "delete" if name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def _actor(user_agent: str, token: str) -> str:
    """Who made a request: the bearer token if any, else a guess from the User-Agent."""
    if token:
        return token
    if user_agent.startswith("kopf/"):
        return "kopf"
    if user_agent.startswith("OpenAPI-Generator/"):
        return "kubernetes-python"
    if user_agent.startswith(HARNESS_USER_AGENT):
        return "harness"
    return user_agent or "unknown"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; returns a new value and never mutates its arguments."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return copy.deepcopy(result)


@dataclass(frozen=True)
class _Selectors:
    """Equality-based label selectors and the name/namespace field selectors."""

    labels: tuple[tuple[str, str, str | None], ...] = ()  # (op, key, value); op: = != exists !
    fields: tuple[tuple[str, str, str], ...] = ()  # (op, path, value); op: = !=

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> _Selectors:
        labels: list[tuple[str, str, str | None]] = []
        for term in filter(None, (t.strip() for t in params.get("labelSelector", "").split(","))):
            if "(" in term or " in " in f" {term} " or " notin " in f" {term} ":
                raise _error(
                    400, "BadRequest", f"set-based label selectors are not modelled: {term}"
                )
            if "!=" in term:
                key, value = term.split("!=", 1)
                labels.append(("!=", key.strip(), value.strip()))
            elif "=" in term:
                key, value = term.replace("==", "=").split("=", 1)
                labels.append(("=", key.strip(), value.strip()))
            elif term.startswith("!"):
                labels.append(("!", term[1:].strip(), None))
            else:
                labels.append(("exists", term, None))
        fields: list[tuple[str, str, str]] = []
        for term in filter(None, (t.strip() for t in params.get("fieldSelector", "").split(","))):
            op = "!=" if "!=" in term else "="
            path, value = term.replace("==", "=").split(op, 1)
            if path.strip() not in ("metadata.name", "metadata.namespace"):
                raise _error(400, "BadRequest", f"this field selector is not modelled: {term}")
            fields.append((op, path.strip(), value.strip()))
        return cls(tuple(labels), tuple(fields))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        for op, key, value in self.labels:
            ok = {
                "=": labels.get(key) == value,
                "!=": labels.get(key) != value,
                "exists": key in labels,
                "!": key not in labels,
            }[op]
            if not ok:
                return False
        for op, path, value in self.fields:
            actual = meta.get(path.split(".", 1)[1])
            if (actual == value) != (op == "="):
                return False
        return True


# --------------------------------------------------------------------------------------------
# Request recording and fault injection.
# --------------------------------------------------------------------------------------------


@dataclass
class ApiCall:
    """One request as the mock API server saw it (see :meth:`as_dict`)."""

    seq: int
    method: str
    path: str
    query: dict[str, str]
    verb: str
    group: str | None
    version: str | None
    plural: str | None
    namespace: str | None
    name: str | None
    subresource: str | None
    actor: str
    user_agent: str
    content_type: str
    status: int | None = None  # None while a watch stream is still open
    body: Any = None
    """The request's JSON body (creates, updates, patches, deletes), as sent; else None."""
    at: float = 0.0
    """When it arrived (``time.monotonic()`` of the test process)."""

    @property
    def is_resource(self) -> bool:
        """False for discovery and other non-resource URLs (``nonResourceURLs`` in RBAC)."""
        return self.plural is not None

    @property
    def resource(self) -> str | None:
        """``group/version/plural`` (``version/plural`` for the core group), or None."""
        if self.plural is None:
            return None
        return (
            f"{self.group}/{self.version}/{self.plural}"
            if self.group
            else f"{self.version}/{self.plural}"
        )

    @property
    def rbac_resource(self) -> str | None:
        """The resource as RBAC rules name it: ``plural`` or ``plural/subresource``."""
        if self.plural is None:
            return None
        return f"{self.plural}/{self.subresource}" if self.subresource else self.plural

    def as_dict(self) -> dict[str, Any]:
        """A plain JSON-able dict, with the derived ``resource``, ``rbac_resource`` and flags."""
        data = asdict(self)
        data.update(
            resource=self.resource, rbac_resource=self.rbac_resource, is_resource=self.is_resource
        )
        return data


@dataclass
class _Fault:
    verb: str | None
    resource: kmock.resource | None
    name: str | None
    subresource: str | None
    actor: str | None
    error: kmock.KubernetesError
    times: int

    def matches(self, call: ApiCall, res: kmock.resource | None) -> bool:
        return (
            self.times > 0
            and (self.verb is None or self.verb == call.verb)
            and (self.resource is None or (res is not None and self.resource.check(res)))
            and (self.name is None or self.name == call.name)
            and (self.subresource is None or self.subresource == call.subresource)
            and (self.actor is None or call.actor.startswith(self.actor))
        )


# --------------------------------------------------------------------------------------------
# The emulator.
# --------------------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class KubetuneEmulator(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator made consistent enough for kopf (see the module docstring).

    Objects live in kmock's ``self.objects`` (with kmock's per-object history of versions);
    every write goes through one ``asyncio.Lock`` and appends to an event log that watches
    read from. Create it and use it inside the event loop that serves it (as
    :class:`MockApiServer` does); from other threads go through :meth:`MockApiServer.call`.
    """

    name_seed: int = 0

    _rv: int = attrs.field(default=0, init=False)
    _log: list[tuple[int, kmock.resource, dict[str, Any]]] = attrs.field(factory=list, init=False)
    _log_changed: asyncio.Condition = attrs.field(factory=asyncio.Condition, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _names: random.Random = attrs.field(init=False)
    _calls: list[ApiCall] = attrs.field(factory=list, init=False)
    _faults: list[_Fault] = attrs.field(factory=list, init=False)
    _watches: dict[tuple[str, str, str | None], int] = attrs.field(factory=dict, init=False)
    _sync: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _custom: set[kmock.resource] = attrs.field(factory=set, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._names = random.Random(self.name_seed)
        with warnings.catch_warnings():  # kmock 0.8 uses importlib.resources.read_binary
            warnings.simplefilter("ignore", DeprecationWarning)
            self.resources.load_bundled()
        for plural, kind, short in (
            ("tuningjobs", "TuningJob", "tj"),
            ("modelcomparisons", "ModelComparison", "mc"),
        ):
            self.register_resource(
                f"{GROUP}/{VERSION}/{plural}",
                kind=kind,
                shortnames={short},
                categories={"kubetune"},
                subresources={"status"},
            )

    # ---- public API ----------------------------------------------------------------------

    def register_resource(
        self,
        resource: str,
        *,
        kind: str,
        namespaced: bool = True,
        subresources: Collection[str] = ("status",),
        shortnames: Collection[str] = (),
        categories: Collection[str] = (),
        verbs: Collection[str] = _ALL_VERBS,
    ) -> None:
        """Declare a custom resource (as a CRD would) for discovery and serving."""
        self._custom.add(kmock.resource(resource))
        self.resources[resource] = kmock.ResourceInfo(
            kind=kind,
            singular=kind.lower(),
            namespaced=namespaced,
            verbs=set(verbs),
            shortnames=set(shortnames),
            categories=set(categories),
            subresources=set(subresources),
        )

    @property
    def resource_version(self) -> int:
        """The latest resourceVersion handed out (0 before the first write)."""
        return self._rv

    def calls(self) -> list[ApiCall]:
        """A snapshot of every request recorded so far, in arrival order (thread-safe)."""
        with self._sync:
            return list(self._calls)

    def active_watches(self) -> dict[tuple[str, str, str | None], int]:
        """Open watch streams by (actor, resource, namespace) (thread-safe)."""
        with self._sync:
            return {key: count for key, count in self._watches.items() if count > 0}

    def inject_error(
        self,
        *,
        verb: str | None = None,
        resource: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
        actor: str | None = None,
        status: int = 500,
        reason: str = "InternalError",
        message: str = "an error injected by the test",
        times: int = 1,
    ) -> None:
        """Fail the next ``times`` matching requests with ``status``, without touching state.

        ``resource`` may be partial (``"jobs"``, ``"batch/v1/jobs"``); ``actor`` matches the
        start of :attr:`ApiCall.actor`. Thread-safe.
        """
        fault = _Fault(
            verb=verb,
            resource=kmock.resource(resource) if resource else None,
            name=name,
            subresource=subresource,
            actor=actor,
            error=_error(status, reason, message),
            times=times,
        )
        with self._sync:
            self._faults.append(fault)

    def clear_errors(self) -> None:
        """Forget every injected error not yet used up. Thread-safe."""
        with self._sync:
            self._faults.clear()

    async def close_watches(self) -> None:
        """End every open and future watch stream (used when the server stops)."""
        async with self._log_changed:
            self._closing = True
            self._log_changed.notify_all()

    # ---- request dispatching -------------------------------------------------------------

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        call = self._record(request)
        res = request.resource
        if res is not None and res.plural is None:
            res = None
        try:
            with self._sync:
                fault = next((f for f in self._faults if f.matches(call, res)), None)
                if fault is not None:
                    fault.times -= 1
            if fault is not None:
                raise fault.error
            if res is None:
                # Discovery & other non-resource paths: kmock's scaffold and the DSL serve them.
                response = await kmock.RawHandler._handle(self, request)
            else:
                response = await self._serve_resource(request, call, res)
        except kmock.KubernetesError as exc:
            call.status = exc.status
            raise
        except Exception:
            call.status = 500
            raise
        if call.status is None:
            call.status = response.status
        return response

    def _record(self, request: kmock.Request) -> ApiCall:
        res = request.resource
        user_agent = _header(request.headers, "User-Agent")
        auth = _header(request.headers, "Authorization")
        token = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else ""
        with self._sync:
            call = ApiCall(
                seq=len(self._calls),
                method=str(request.method.value).upper(),
                path=request.url.path,
                query=dict(request.params),
                verb=(
                    _verb(str(request.method.value), request.name, request.params)
                    if res is not None and res.plural is not None
                    else str(request.method.value).lower()  # a non-resource URL
                ),
                group=res.group if res is not None else None,
                version=res.version if res is not None else None,
                plural=res.plural if res is not None else None,
                namespace=request.namespace,
                name=request.name,
                subresource=request.subresource,
                actor=_actor(user_agent, token),
                user_agent=user_agent,
                content_type=_header(request.headers, "Content-Type").split(";")[0].strip(),
                at=time.monotonic(),
                body=(
                    copy.deepcopy(request.data)
                    if str(request.method.value).upper() in ("POST", "PUT", "PATCH", "DELETE")
                    and isinstance(request.data, (dict, list))
                    else None
                ),
            )
            self._calls.append(call)
        return call

    async def _serve_resource(
        self, request: kmock.Request, call: ApiCall, res: kmock.resource
    ) -> aiohttp.web.StreamResponse:
        if res not in self.resources:
            raise _error(404, "NotFound", "the server could not find the requested resource")
        info = self.resources[res]
        if call.verb not in info.verbs:
            raise _error(405, "MethodNotAllowed", f"{call.verb} is not supported on {res.plural}")
        namespace = request.namespace if info.namespaced else None
        if request.subresource not in (None, "status") or (
            request.subresource == "status" and "status" not in info.subresources
        ):
            raise _error(404, "NotFound", f"subresource {request.subresource!r} is not modelled")
        named_create = call.verb == "create" and request.name
        unnamed_write = call.verb in ("patch", "update") and not request.name
        if named_create or unnamed_write:
            raise _error(405, "MethodNotAllowed", f"{call.method} is not allowed on this URL")

        if call.verb == "watch":
            selectors = _Selectors.parse(request.params)  # a 400 now, not an ERROR event later
            stream = self._watch(request, call, res, info, namespace, selectors)
            call.status = 200  # the stream stays open; record the status now
            return await kmock.Response(payload=stream)(request)
        if call.verb == "list":
            result = await self._list(request, res, info, namespace)
        elif call.verb == "get":
            result = await self._get(res, namespace, request.name or "")
        elif call.verb == "create":
            created = await self._create(request, res, info, namespace)
            return aiohttp.web.json_response(created, status=201)
        elif call.verb in ("patch", "update"):
            result = await self._update(request, call, res, info, namespace)
        elif call.verb == "delete":
            result = await self._delete(res, namespace, request.name or "")
        else:
            raise _error(405, "MethodNotAllowed", f"{call.verb} is not modelled by the emulator")
        return aiohttp.web.json_response(result)

    # ---- state -----------------------------------------------------------------------------

    def _live(self, res: kmock.resource, namespace: str | None, name: str) -> dict[str, Any]:
        key = (res, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            raise _error(
                404,
                "NotFound",
                f'{_qualified(res)} "{name}" not found',
                name=name,
                kind=res.plural,
            )
        return copy.deepcopy(dict(self.objects[key].raw))

    async def _commit(
        self,
        res: kmock.resource,
        body: dict[str, Any],
        event_type: str,
    ) -> dict[str, Any]:
        """Store a new version (or a deletion) under a fresh resourceVersion; emit the event."""
        self._rv += 1
        body["metadata"]["resourceVersion"] = str(self._rv)
        meta = body["metadata"]
        key = (res, meta.get("namespace"), meta["name"])
        if event_type == "DELETED":
            self.objects[key].delete()
        elif key in self.objects:
            self.objects[key].history.append(copy.deepcopy(body))
        else:
            self.objects[key] = copy.deepcopy(body)
        self._log.append((self._rv, res, {"type": event_type, "object": copy.deepcopy(body)}))
        async with self._log_changed:
            self._log_changed.notify_all()
        return body

    def _current(
        self,
        res: kmock.resource,
        namespace: str | None,
        name: str | None,
        selectors: _Selectors,
    ) -> list[dict[str, Any]]:
        items = []
        for (obj_res, obj_ns, obj_name), obj in self.objects.items():
            if obj_res != res or obj.deleted:
                continue
            if (namespace is not None and obj_ns != namespace) or (name and obj_name != name):
                continue
            body = dict(obj.raw)
            if selectors.matches(body):
                items.append(copy.deepcopy(body))
        return items

    def _generate_name(self, res: kmock.resource, namespace: str | None, prefix: str) -> str:
        while True:
            name = prefix + "".join(self._names.choices(_NAME_ALPHABET, k=5))
            key = (res, namespace, name)
            if key not in self.objects or self.objects[key].deleted:
                return name

    # ---- verbs -----------------------------------------------------------------------------

    async def _list(
        self,
        request: kmock.Request,
        res: kmock.resource,
        info: kmock.ResourceInfo,
        namespace: str | None,
    ) -> dict[str, Any]:
        selectors = _Selectors.parse(request.params)
        async with self._lock:
            items = self._current(res, namespace, None, selectors)
            return {
                "apiVersion": _api_version(res),
                "kind": f"{info.kind}List",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }

    async def _get(self, res: kmock.resource, namespace: str | None, name: str) -> dict[str, Any]:
        async with self._lock:
            return self._live(res, namespace, name)

    async def _create(
        self,
        request: kmock.Request,
        res: kmock.resource,
        info: kmock.ResourceInfo,
        namespace: str | None,
    ) -> dict[str, Any]:
        if not isinstance(request.data, dict):
            raise _error(400, "BadRequest", "the request body must be a JSON object")
        body = copy.deepcopy(request.data)
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            meta = body["metadata"] = {}
        if info.namespaced:
            if namespace is None:
                namespace = meta.get("namespace") or "default"
            elif meta.get("namespace") not in (None, namespace):
                raise _error(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on"
                    " the request",
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        for key in (*_MANAGED_META[2:], "resourceVersion", "managedFields"):
            meta.pop(key, None)
        body.setdefault("apiVersion", _api_version(res))
        body.setdefault("kind", info.kind)
        if "status" in info.subresources:
            body.pop("status", None)
        async with self._lock:
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise _error(422, "Invalid", "metadata.name or generateName is required")
                meta["name"] = self._generate_name(res, namespace, meta["generateName"])
            key = (res, namespace, meta["name"])
            if key in self.objects and not self.objects[key].deleted:
                raise _error(
                    409,
                    "AlreadyExists",
                    f'{_qualified(res)} "{meta["name"]}" already exists',
                    name=meta["name"],
                    kind=res.plural,
                )
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
            return await self._commit(res, body, "ADDED")

    async def _update(
        self,
        request: kmock.Request,
        call: ApiCall,
        res: kmock.resource,
        info: kmock.ResourceInfo,
        namespace: str | None,
    ) -> dict[str, Any]:
        name = request.name or ""
        data = request.data
        content_type = call.content_type
        if call.verb == "update":
            if not isinstance(data, dict):
                raise _error(400, "BadRequest", "the request body must be a JSON object")
        elif content_type == _JSON_PATCH:
            if not isinstance(data, list):
                raise _error(400, "BadRequest", "a JSON patch must be a list of operations")
        elif content_type == _STRATEGIC_PATCH and res in self._custom:
            raise _error(
                415,
                "UnsupportedMediaType",
                "strategic merge patch is not supported for custom resources; use a merge patch",
            )
        elif content_type in (_MERGE_PATCH, _STRATEGIC_PATCH):
            if not isinstance(data, dict):
                raise _error(400, "BadRequest", "a merge patch must be a JSON object")
        else:
            not_modelled = (
                "server-side apply is not modelled" if content_type in _APPLY_PATCHES else ""
            )
            raise _error(
                415,
                "UnsupportedMediaType",
                not_modelled or f"the content type {content_type!r} is not supported",
            )

        async with self._lock:
            old = self._live(res, namespace, name)
            if call.verb == "update":
                new = copy.deepcopy(data)
            elif content_type == _JSON_PATCH:
                try:
                    new = jsonpatch.apply_patch(old, data, in_place=False)
                except jsonpatch.JsonPatchTestFailed as exc:
                    raise _error(422, "Invalid", f"the JSON patch test failed: {exc}") from exc
                except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                    raise _error(
                        422, "Invalid", f"the JSON patch cannot be applied: {exc}"
                    ) from exc
            else:
                new = merge_patch(old, data)
            if not isinstance(new, dict) or not isinstance(new.get("metadata", {}), dict):
                raise _error(422, "Invalid", "the result is not a valid object")

            old_meta = old["metadata"]
            new_meta = new.setdefault("metadata", {})
            wanted_rv = new_meta.get("resourceVersion")
            if wanted_rv is not None and str(wanted_rv) != old_meta["resourceVersion"]:
                raise _error(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {_qualified(res)} "{name}": the object has'
                    " been modified; please apply your changes to the latest version and try again",
                    name=name,
                    kind=res.plural,
                )
            for key in (*_MANAGED_META, "resourceVersion"):
                if key in old_meta:
                    new_meta[key] = old_meta[key]
                else:
                    new_meta.pop(key, None)
            new["apiVersion"] = old.get("apiVersion")
            new["kind"] = old.get("kind")

            if request.subresource == "status":
                status = new.get("status")
                new = copy.deepcopy(old)
                if status is None:
                    new.pop("status", None)
                else:
                    new["status"] = status
            elif "status" in info.subresources:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            if new.get("spec") != old.get("spec"):
                new["metadata"]["generation"] = old_meta.get("generation", 0) + 1

            old_finalizers = old_meta.get("finalizers") or []
            new_finalizers = new["metadata"].get("finalizers") or []
            if old_meta.get("deletionTimestamp") and set(new_finalizers) - set(old_finalizers):
                raise _error(
                    422, "Invalid", "no new finalizers can be added if the object is being deleted"
                )
            if new == old:
                return old  # a no-op write: no new resourceVersion, no event
            if new["metadata"].get("deletionTimestamp") and not new_finalizers:
                return await self._commit(res, new, "DELETED")
            return await self._commit(res, new, "MODIFIED")

    async def _delete(
        self, res: kmock.resource, namespace: str | None, name: str
    ) -> dict[str, Any]:
        async with self._lock:
            old = self._live(res, namespace, name)
            meta = old["metadata"]
            if meta.get("deletionTimestamp"):
                return old
            if meta.get("finalizers"):
                meta["deletionTimestamp"] = _now()
                meta["deletionGracePeriodSeconds"] = 0
                return await self._commit(res, old, "MODIFIED")
            return await self._commit(res, old, "DELETED")

    async def _watch(
        self,
        request: kmock.Request,
        call: ApiCall,
        res: kmock.resource,
        info: kmock.ResourceInfo,
        namespace: str | None,
        selectors: _Selectors,
    ) -> AsyncIterator[Any]:
        yield b""  # send the headers now, even if no events come for a while
        params = request.params
        since = params.get("resourceVersion") or "0"
        initial = params.get("sendInitialEvents", "").lower() == "true"
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        name = request.name

        def matches(rv_res: kmock.resource, event: dict[str, Any]) -> bool:
            meta = event["object"].get("metadata", {})
            return (
                rv_res == res
                and (namespace is None or meta.get("namespace") == namespace)
                and (not name or meta.get("name") == name)
                and selectors.matches(event["object"])
            )

        async with self._lock:
            cursor = len(self._log)
            if since == "0" or initial:
                backlog: list[Any] = [
                    {"type": "ADDED", "object": obj}
                    for obj in self._current(res, namespace, name, selectors)
                ]
                if initial:
                    backlog.append(
                        {
                            "type": "BOOKMARK",
                            "object": {
                                "apiVersion": _api_version(res),
                                "kind": info.kind,
                                "metadata": {
                                    "resourceVersion": str(self._rv),
                                    "annotations": {"k8s.io/initial-events-end": "true"},
                                },
                            },
                        }
                    )
            else:
                try:
                    since_rv = int(since)
                except ValueError:
                    since_rv = -1
                if since_rv < 0:
                    backlog = [_gone(f"invalid resourceVersion {since!r}")]
                else:
                    backlog = [ev for rv, r, ev in self._log if rv > since_rv and matches(r, ev)]

        key = (call.actor, _resource_str(res), namespace)
        with self._sync:
            self._watches[key] = self._watches.get(key, 0) + 1
        try:
            while True:
                for event in backlog:
                    yield event
                    if event.get("type") == "ERROR":
                        return
                remaining = None
                if deadline is not None:
                    remaining = deadline - asyncio.get_running_loop().time()
                    if remaining <= 0:
                        return
                async with self._log_changed:
                    try:
                        await asyncio.wait_for(
                            self._log_changed.wait_for(
                                lambda seen=cursor: self._closing or len(self._log) > seen
                            ),
                            timeout=remaining,
                        )
                    except TimeoutError:
                        return
                    if self._closing:
                        return
                    fresh = self._log[cursor:]
                    cursor += len(fresh)
                backlog = [ev for _, r, ev in fresh if matches(r, ev)]
        finally:
            with self._sync:
                self._watches[key] -= 1


def _gone(message: str) -> dict[str, Any]:
    return {
        "type": "ERROR",
        "object": {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "reason": "Expired",
            "message": message,
            "code": 410,
        },
    }


# --------------------------------------------------------------------------------------------
# The HTTP server in its own thread.
# --------------------------------------------------------------------------------------------


class MockApiServer:
    """Serve one :class:`KubetuneEmulator` on ``http://127.0.0.1:<random port>``.

    The server runs in a daemon thread with its own event loop, so it keeps serving while the
    test thread blocks, while an operator runs in another thread, and across operator
    restarts. Use as a context manager or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        *,
        emulator_factory: Callable[[], kmock.KubernetesEmulator] = KubetuneEmulator,
        host: str = "127.0.0.1",
        namespace: str = NAMESPACE,
    ) -> None:
        self._emulator_factory = emulator_factory
        self._host = host
        self.namespace = namespace
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._emulator: kmock.KubernetesEmulator | None = None
        self._url: str | None = None

    def __enter__(self) -> MockApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the mock API server is not running")
        return self._url

    @property
    def emulator(self) -> KubetuneEmulator:
        if not isinstance(self._emulator, KubetuneEmulator):
            raise RuntimeError("the mock API server is not running a KubetuneEmulator")
        return self._emulator

    def start(self, timeout: float = 10.0) -> MockApiServer:
        self._thread = threading.Thread(target=self._main, name="kmock-api-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the mock API server did not start in time")
        if self._failure is not None:
            raise RuntimeError("the mock API server failed to start") from self._failure
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("the mock API server did not stop in time")
        self._thread = None
        self._url = None

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._failure = exc
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        emulator = self._emulator_factory()
        self._emulator = emulator
        async with emulator:
            server = aiohttp.web.Server(emulator, handler_cancellation=True, access_log=None)
            runner = aiohttp.web.ServerRunner(server, shutdown_timeout=0.5)
            await runner.setup()
            try:
                site = aiohttp.web.TCPSite(runner, self._host, 0)
                await site.start()
                host, port = runner.addresses[0][:2]
                self._url = f"http://{host}:{port}"
                self._ready.set()
                await self._stopping.wait()
                if isinstance(emulator, KubetuneEmulator):
                    await emulator.close_watches()
            finally:
                await runner.cleanup()

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn()`` in the server's event loop (for consistent reads of emulator state)."""
        if self._loop is None:
            raise RuntimeError("the mock API server is not running")

        async def wrapper() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout)

    # ---- conveniences --------------------------------------------------------------------

    def client(
        self,
        *,
        namespace: str | None = None,
        token: str | None = None,
        user_agent: str = HARNESS_USER_AGENT,
    ) -> ApiClient:
        """A synchronous client for acting as the user or the Job controller."""
        return ApiClient(
            self.url, namespace=namespace or self.namespace, token=token, user_agent=user_agent
        )

    def calls(self, **filters: Any) -> list[ApiCall]:
        """Recorded requests whose attributes equal all ``filters`` (e.g. ``verb="patch"``)."""
        return [
            c
            for c in self.emulator.calls()
            if all(getattr(c, key) == value for key, value in filters.items())
        ]

    def call_dicts(self, **filters: Any) -> list[dict[str, Any]]:
        """:meth:`calls` as plain dicts (for dumping or replaying against RBAC rules)."""
        return [c.as_dict() for c in self.calls(**filters)]

    def history(self, resource: str, name: str, *, namespace: str | None = None) -> list[Any]:
        """Every stored version of one object (``None`` marks a deletion), oldest first."""
        ns = namespace or self.namespace

        def read() -> list[Any]:
            obj = self.emulator.objects[resource, ns, name]
            return [None if v is None else copy.deepcopy(dict(v.raw)) for v in obj.history]

        return self.call(read)

    def kubernetes_client(self, *, token: str | None = None) -> kubernetes.client.ApiClient:
        """An in-process ``kubernetes`` client for this server (no kubeconfig file needed)."""
        configuration = kubernetes.client.Configuration()
        configuration.host = self.url
        if token:
            configuration.api_key = {"BearerToken": token}
            configuration.api_key_prefix = {"BearerToken": "Bearer"}
        return kubernetes.client.ApiClient(configuration)

    def write_kubeconfig(
        self, path: str | Path, *, token: str | None = None, namespace: str | None = None
    ) -> Path:
        """Write a kubeconfig for this server (plain HTTP; no auth unless ``token`` is given).

        A token only labels the requests (:attr:`ApiCall.actor`); nothing is authenticated.
        """
        path = Path(path)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "kmock", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}
            ],
            "users": [{"name": "kmock", "user": {"token": token} if token else {}}],
            "contexts": [
                {
                    "name": "kmock",
                    "context": {
                        "cluster": "kmock",
                        "user": "kmock",
                        "namespace": namespace or self.namespace,
                    },
                }
            ],
            "current-context": "kmock",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path


# --------------------------------------------------------------------------------------------
# A synchronous client.
# --------------------------------------------------------------------------------------------


class ApiError(Exception):
    """A non-2xx answer from the API, with the Kubernetes ``Status`` body when there is one."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        self.reason = body.get("reason", "") if isinstance(body, dict) else ""
        self.message = body.get("message", "") if isinstance(body, dict) else str(body)
        super().__init__(f"HTTP {status} {self.reason}: {self.message}")


class ApiClient:
    """A tiny synchronous Kubernetes client over ``urllib`` for tests.

    ``resource`` arguments are ``group/version/plural`` strings (:data:`TUNINGJOBS`,
    :data:`JOBS`, ...). Only namespaced resources are supported by the helpers; use
    :meth:`request` for anything else.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = NAMESPACE,
        token: str | None = None,
        user_agent: str = HARNESS_USER_AGENT,
        timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.namespace = namespace
        self.timeout = timeout
        self.headers = {"User-Agent": user_agent, "Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def path(
        self,
        resource: str,
        name: str | None = None,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> str:
        res = kmock.resource(resource)
        if res.version is None or res.plural is None:
            raise ValueError(f"resource must be group/version/plural, got {resource!r}")
        parts = ["api", res.version] if not res.group else ["apis", res.group, res.version]
        parts += ["namespaces", namespace or self.namespace, res.plural]
        parts += [p for p in (name, subresource) if p]
        return "/" + "/".join(urllib.parse.quote(p, safe="") for p in parts)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(url, data=data, method=method.upper(), headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as rsp:
                text = rsp.read().decode()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode()
            try:
                payload = json.loads(text)
            except ValueError:
                payload = text
            raise ApiError(exc.code, payload) from None
        return json.loads(text) if text else None

    def create(
        self, resource: str, body: Mapping[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        return self.request("POST", self.path(resource, namespace=namespace), body=body)

    def get(self, resource: str, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        return self.request("GET", self.path(resource, name, namespace=namespace))

    def find(
        self, resource: str, name: str, *, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """Like :meth:`get`, but None instead of a 404."""
        try:
            return self.get(resource, name, namespace=namespace)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self,
        resource: str,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        path = self.path(resource, namespace=namespace)
        return self.request("GET", path, params=params)["items"]

    def patch(
        self,
        resource: str,
        name: str,
        patch: Any,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: str = "merge",
    ) -> dict[str, Any]:
        """PATCH with ``patch_type`` ``"merge"``, ``"json"`` or ``"strategic"``."""
        content_type = {"merge": _MERGE_PATCH, "json": _JSON_PATCH, "strategic": _STRATEGIC_PATCH}
        path = self.path(resource, name, namespace=namespace, subresource=subresource)
        return self.request("PATCH", path, body=patch, content_type=content_type[patch_type])

    def patch_status(
        self,
        resource: str,
        name: str,
        status: Mapping[str, Any],
        *,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch ``status`` through the status subresource (as a controller does)."""
        return self.patch(
            resource, name, {"status": status}, namespace=namespace, subresource="status"
        )

    def replace(
        self, resource: str, name: str, body: Mapping[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        return self.request("PUT", self.path(resource, name, namespace=namespace), body=body)

    def delete(self, resource: str, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        return self.request("DELETE", self.path(resource, name, namespace=namespace))

    def watch(
        self,
        resource: str,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        timeout_seconds: float = 5.0,
        label_selector: str | None = None,
        send_initial_events: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Yield watch events (``{"type": ..., "object": ...}``) until the server ends the stream.

        The server ends it after ``timeout_seconds``; breaking out of the loop early is fine.
        """
        params = {"watch": "true", "timeoutSeconds": str(timeout_seconds)}
        if resource_version is not None:
            params["resourceVersion"] = resource_version
        if label_selector:
            params["labelSelector"] = label_selector
        if send_initial_events:
            params |= {"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan"}
        url = self.url + self.path(resource, namespace=namespace)
        url += "?" + urllib.parse.urlencode(params)
        req = urllib.request.Request(url, headers=self.headers)
        try:
            rsp = urllib.request.urlopen(req, timeout=timeout_seconds + self.timeout)
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, json.loads(exc.read().decode() or "null")) from None
        with rsp:
            for line in rsp:
                if line.strip():
                    yield json.loads(line)

    def jobs(self, *, namespace: str | None = None, label_selector: str | None = None) -> list[Any]:
        return self.list(JOBS, namespace=namespace, label_selector=label_selector)

    def events(
        self, *, namespace: str | None = None, involved_name: str | None = None
    ) -> list[Any]:
        """Core v1 Events, optionally only those about the object named ``involved_name``."""
        events = self.list(EVENTS, namespace=namespace)
        if involved_name is not None:
            events = [e for e in events if e.get("involvedObject", {}).get("name") == involved_name]
        return events


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float = 5.0,
    interval: float = 0.02,
    message: str | Callable[[], str] = "",
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Exceptions from the predicate propagate. On timeout, fail with an AssertionError whose
    text is ``message`` (called if callable) plus the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout}s: {text} (last value: {value!r})")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# The operator in its own thread.
# --------------------------------------------------------------------------------------------

# Which ConnectionInfo the harness's login handler returns: set per operator thread.
_CONNECTION: contextvars.ContextVar[kopf.ConnectionInfo] = contextvars.ContextVar(
    "kubetune_harness_connection"
)
_LOGIN_ID = "kubetune-test-harness-login"
KOPF_RUNNER_TASK = "runner of "
"""How kopf names the task of a daemon or timer (``kopf._core.engines.daemons``)."""
HUNG_RUNNER_GRACE = 0.6
"""Seconds a stopping operator gets before its leftover daemon and timer tasks are cancelled."""
_REGISTRIES_WITH_LOGIN: weakref.WeakSet[kopf.OperatorRegistry] = weakref.WeakSet()
_instances = itertools.count(1)


async def _harness_login(**_: Any) -> kopf.ConnectionInfo:
    return _CONNECTION.get()


def _ensure_login(registry: kopf.OperatorRegistry) -> None:
    """Register the harness's login handler once per registry (it reads a context variable)."""
    if registry not in _REGISTRIES_WITH_LOGIN:
        kopf.on.login(registry=registry, id=_LOGIN_ID)(_harness_login)
        _REGISTRIES_WITH_LOGIN.add(registry)


def default_settings(settings: kopf.OperatorSettings) -> None:
    """What :func:`run_operator` sets before the ``settings_hook`` (and startup handlers) run."""
    settings.scanning.disabled = True  # kmock cannot serve GET /api/v1/namespaces
    settings.process.ultimate_exiting_timeout = None  # never SIGKILL the test process
    settings.queueing.exit_timeout = 0.5  # stop (and restart) fast, even mid-handler
    settings.watching.reconnect_backoff = 0.05


def watched_resources(
    registry: kopf.OperatorRegistry, emulator: KubetuneEmulator
) -> set[tuple[str, bool]]:
    """The (resource, namespaced) pairs the registry's handlers watch, as the mock serves them.

    Uses kopf's registries and selectors, which are not public API: on any surprise it returns
    an empty set (then :func:`run_operator` only waits for the ready flag).
    """
    try:
        from kopf._cogs.structs import references as kopf_refs

        selectors: set[Any] = set()
        for part in ("_indexing", "_watching", "_spawning", "_changing"):
            selectors |= set(getattr(registry, part).get_all_selectors())
        candidates = {}
        for res in emulator.resources:
            info = emulator.resources[res]
            candidate = kopf_refs.Resource(
                group=res.group or "",
                version=res.version or "",
                plural=res.plural or "",
                kind=info.kind,
                singular=info.singular,
                shortcuts=frozenset(info.shortnames),
                categories=frozenset(info.categories),
                subresources=frozenset(info.subresources),
                namespaced=info.namespaced,
                verbs=frozenset(info.verbs),
            )
            candidates[candidate] = (_resource_str(res), bool(info.namespaced))
        chosen: set[tuple[str, bool]] = set()
        for selector in selectors:
            chosen |= {candidates[r] for r in selector.select(list(candidates))}
        return chosen
    except Exception:  # pragma: no cover - only when kopf's internals change
        logger.warning("cannot work out the watched resources from the registry", exc_info=True)
        return set()


class RunningOperator:
    """A real ``kopf.operator()`` in its own thread and event loop, logged in to the mock.

    Every start uses a fresh :class:`kopf.OperatorSettings` (:func:`default_settings`, then
    ``settings_hook``), the same ``memo`` object, and a new bearer token
    ``kubetune-operator-<n>`` that labels its requests, so :meth:`calls` can tell this instance
    (and each restart) from other clients. Timings land in ``start_seconds`` (until ready and
    watching) and ``stop_seconds``.
    """

    def __init__(
        self,
        server: MockApiServer,
        *,
        registry: kopf.OperatorRegistry,
        namespaces: Collection[str],
        settings_hook: Callable[[kopf.OperatorSettings], None] | None = None,
        memo: Any = None,
        wait_watching: bool = True,
        liveness_endpoint: str | None = None,
    ) -> None:
        self.server = server
        self.liveness_endpoint = liveness_endpoint
        self.registry = registry
        self.namespaces = list(namespaces)
        self.settings_hook = settings_hook
        self.memo = memo
        self.wait_watching = wait_watching
        self.token = ""
        self.tokens: list[str] = []
        self.start_seconds: list[float] = []
        self.stop_seconds: list[float] = []
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_flag: asyncio.Event | None = None
        self._ready = threading.Event()
        self._settings: kopf.OperatorSettings | None = None
        _ensure_login(registry)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> RunningOperator:
        if self.running:
            raise RuntimeError("the operator is already running")
        started = time.perf_counter()
        self.token = f"{OPERATOR_TOKEN_PREFIX}-{next(_instances)}"
        self.tokens.append(self.token)
        self.error = None
        self._ready.clear()
        self._thread = threading.Thread(target=self._main, name=self.token, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise TimeoutError("the operator did not become ready in time")
        if self.error is not None or not self.running:
            raise RuntimeError("the operator failed to start") from self.error
        if self.wait_watching:
            self.wait_until_watching(timeout=timeout)
        self.start_seconds.append(time.perf_counter() - started)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Raise kopf's stop flag and wait for the thread; re-raise what crashed the operator."""
        if self._thread is None:
            return
        started = time.perf_counter()
        self._in_loop(lambda: self._stop_flag.set() if self._stop_flag is not None else None)
        self._thread.join(min(timeout, HUNG_RUNNER_GRACE))
        if self._thread.is_alive():
            # kopf stops daemons and timers once, early in its shutdown; one spawned later (an
            # object that appeared while stopping) would hold kopf's hung-task wait for 5 s.
            self._in_loop(self._cancel_runners)
            self._thread.join(max(0.0, timeout - HUNG_RUNNER_GRACE))
        if self._thread.is_alive():
            raise TimeoutError("the operator did not stop in time")
        self._thread = None
        self.stop_seconds.append(time.perf_counter() - started)
        if self.error is not None:
            raise RuntimeError("the operator crashed") from self.error

    def _in_loop(self, callback: Callable[[], object]) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                self._loop.call_soon_threadsafe(callback)

    def _cancel_runners(self) -> None:
        """Cancel kopf's daemon and timer runners (called in the operator's loop)."""
        if self._loop is None:
            return
        for task in asyncio.all_tasks(self._loop):
            if task.get_name().startswith(KOPF_RUNNER_TASK):
                task.cancel()

    def restart(self, timeout: float = 10.0) -> RunningOperator:
        """Stop, then start again against the same mock state (a pod restart)."""
        self.stop()
        return self.start(timeout=timeout)

    def calls(self, *, all_instances: bool = False, **filters: Any) -> list[ApiCall]:
        """Requests made by this instance (or by every start of it) via kopf's client."""
        tokens = set(self.tokens) if all_instances else {self.token}
        return [c for c in self.server.calls(**filters) if c.actor in tokens]

    def wait_until_watching(self, timeout: float = 10.0) -> None:
        """Wait until this instance has a watch open on every resource x namespace it serves."""
        expected = {
            (self.token, resource, ns if namespaced else None)
            for resource, namespaced in watched_resources(self.registry, self.server.emulator)
            for ns in (self.namespaces if namespaced else [None])
        }
        wait_for(
            lambda: expected <= set(self.server.emulator.active_watches()),
            timeout=timeout,
            message=lambda: f"the operator is not watching {expected}",
        )

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._run())
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()  # unblock start() if the operator died while starting
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
            if self._settings is not None:
                self._settings.execution.executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        self._stop_flag = asyncio.Event()
        _CONNECTION.set(
            kopf.ConnectionInfo(
                server=self.server.url, scheme="Bearer", token=self.token, insecure=True
            )
        )
        settings = kopf.OperatorSettings()
        default_settings(settings)
        if self.settings_hook is not None:
            self.settings_hook(settings)
        self._settings = settings
        await kopf.operator(
            registry=self.registry,
            settings=settings,
            standalone=True,
            namespaces=self.namespaces,
            memo=self.memo,
            stop_flag=self._stop_flag,
            ready_flag=self._ready,
            liveness_endpoint=self.liveness_endpoint,
        )


@contextlib.contextmanager
def run_operator(
    server: MockApiServer,
    *,
    registry: kopf.OperatorRegistry | None = None,
    module: str | types.ModuleType | None = None,
    namespaces: Collection[str] | None = None,
    settings_hook: Callable[[kopf.OperatorSettings], None] | None = None,
    memo: Any = None,
    wait_watching: bool = True,
    liveness_endpoint: str | None = None,
    timeout: float = 10.0,
) -> Iterator[RunningOperator]:
    """Run a real kopf operator against ``server`` for the duration of the ``with`` block.

    Handlers come from ``registry``, or from kopf's default registry after importing
    ``module`` (a module that registers its handlers with plain ``@kopf.on...``). The harness
    adds a login handler to that registry (once); it must have no other login handlers.
    ``namespaces`` defaults to the server's namespace; ``liveness_endpoint`` (such as
    ``http://127.0.0.1:PORT/healthz``) serves kopf's probes. On entry the operator is ready
    and, with ``wait_watching``, has its watches open; on exit it is stopped (and a crash
    re-raised).
    """
    if registry is not None and module is not None:
        raise TypeError("pass either registry= or module=, not both")
    if module is not None:
        if isinstance(module, str):
            importlib.import_module(module)
        registry = kopf.get_default_registry()
    operator = RunningOperator(
        server,
        registry=registry if registry is not None else kopf.get_default_registry(),
        namespaces=namespaces if namespaces is not None else [server.namespace],
        settings_hook=settings_hook,
        memo=memo,
        wait_watching=wait_watching,
        liveness_endpoint=liveness_endpoint,
    )
    operator.start(timeout=timeout)
    try:
        yield operator
    finally:
        operator.stop()


__all__ = [
    "CONFIGMAPS",
    "EVENTS",
    "JOBS",
    "MODELCOMPARISONS",
    "NAMESPACE",
    "PODS",
    "TUNINGJOBS",
    "ApiCall",
    "ApiClient",
    "ApiError",
    "KubetuneEmulator",
    "MockApiServer",
    "RunningOperator",
    "default_settings",
    "merge_patch",
    "run_operator",
    "wait_for",
    "watched_resources",
]
