{{/*
The prefix of every name: the release name when it already says "kubetune" (release "kubetune"
gives kubetune-operator and kubetune-runner, the names of manifests/), else RELEASE-kubetune.
Cluster-scoped objects carry it, so two releases never collide on them.
*/}}
{{- define "kubetune.prefix" -}}
{{- if contains "kubetune" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-kubetune" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kubetune.operator" -}}
{{- include "kubetune.prefix" . }}-operator
{{- end -}}

{{- define "kubetune.runner" -}}
{{- include "kubetune.prefix" . }}-runner
{{- end -}}

{{/* Labels on every object but the CRDs (which stay equal to crds/). */}}
{{- define "kubetune.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubetune
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* The operator pod's labels that its Deployment and metrics Service select on. */}}
{{- define "kubetune.operatorSelector" -}}
app.kubernetes.io/name: kubetune-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubetune.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "kubetune.runnerImage" -}}
{{- printf "%s:%s" .Values.runner.image.repository (.Values.runner.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/*
The namespaces that get the runner's ServiceAccount and RoleBinding, as a JSON list:
runner.namespaces, else the watched namespaces, else the release namespace.
*/}}
{{- define "kubetune.runnerNamespaces" -}}
{{- if .Values.runner.namespaces -}}
{{- toJson .Values.runner.namespaces -}}
{{- else if .Values.watchNamespaces -}}
{{- toJson .Values.watchNamespaces -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{/*
The operator's rules, the same as manifests/base/operator-rbac.yaml (tests/unit/test_chart.py
checks it): in a ClusterRole when it serves every namespace, in a Role per watched namespace.
Every grant is an API call that kopf or kubetune_operator/kube.py makes; nothing is a wildcard
and nothing touches Secrets.

Not granted, on purpose:
- namespaces and customresourcedefinitions (list/watch): kopf's cluster scanning. Cluster-wide,
  kopf does not look at namespaces at all; it watches CRDs only to notice CRDs created after it
  started, and without the permission it logs one warning and serves the CRDs present at start.
- leases and kopfpeerings: the operator runs standalone (one replica, no peering).
- get on batch Jobs and watch on pods: kopf watches the Jobs; pods are only listed, on failure.
*/}}
{{- define "kubetune.operatorRules" -}}
rules:
  # kopf lists and watches both kinds (handlers, indexes, timers) and merge-patches them to add
  # and remove its finalizer and to keep its progress and last-handled-spec annotations; the
  # operator reads each resource afresh (get) at the start of every reconcile pass, and patches a
  # comparison's child TuningJob's spec.suspend (sequential comparisons, suspend/resume).
  - apiGroups: ["kubetune.io"]
    resources: ["tuningjobs", "modelcomparisons"]
    verbs: ["get", "list", "watch", "patch"]
  # A ModelComparison owns one child TuningJob per model: created, and deleted with the parent.
  - apiGroups: ["kubetune.io"]
    resources: ["tuningjobs"]
    verbs: ["create", "delete"]
  # Status is written by the operator (merge patches of the status subresource); never spec.
  - apiGroups: ["kubetune.io"]
    resources: ["tuningjobs/status", "modelcomparisons/status"]
    verbs: ["patch"]
  # Children carry ownerReferences with blockOwnerDeletion: clusters running the
  # OwnerReferencesPermissionEnforcement admission plugin (OpenShift, for one) require update on
  # the owner's finalizers subresource to set it. Grants nothing else.
  - apiGroups: ["kubetune.io"]
    resources: ["tuningjobs/finalizers", "modelcomparisons/finalizers"]
    verbs: ["update"]
  # One batch/v1 Job per stage: kopf lists and watches them (label-filtered to the operator's own);
  # the operator creates them, suspends and resumes them (patch spec.suspend) and deletes them
  # when their TuningJob is deleted.
  - apiGroups: ["batch"]
    resources: ["jobs"]
    verbs: ["list", "watch", "create", "patch", "delete"]
  # A failed stage Job's pods are listed (by job-name label) to read the runner's termination
  # message into status. Read-only; no logs, no exec.
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["list"]
  # kopf.event posts core v1 Events (kopf 1.45 posts to /api/v1/namespaces/NS/events, not to
  # events.k8s.io): Started, StageStarted, Succeeded, Failed, InvalidSpec, ...
  - apiGroups: [""]
    resources: ["events"]
    verbs: ["create"]
{{- end -}}
