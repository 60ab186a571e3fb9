#!/usr/bin/env bash
# End to end on a real cluster: a kind cluster, both images built and loaded, the CRDs and the
# operator installed from crds/ and manifests/, examples/quickstart.yaml and a smaller copy of
# examples/modelcomparison.yaml run to Succeeded, their scores checked. The cluster is deleted at
# the end, whatever happens (KEEP_CLUSTER=1 keeps it for a look).
#
# Needs: docker (with a running daemon), kind, kubectl. Run from anywhere:
#   hack/kind-e2e.sh
# Settings (environment):
#   KIND_CLUSTER_NAME  cluster name (default kubetune-e2e); an existing cluster is reused, not deleted
#   KIND_NODE_IMAGE    kind node image (default: kind's own default)
#   IMAGE_TAG          tag of the locally built images (default e2e)
#   E2E_NAMESPACE      namespace of the TuningJobs (default kubetune-e2e)
#   E2E_TIMEOUT        seconds to wait for each resource to succeed (default 900)
#   E2E_ARTIFACTS      directory for diagnostics and kind's logs on failure (default: none)
#   SKIP_BUILD=1       use images already built with the same tag
#   KEEP_CLUSTER=1     do not delete the cluster at the end
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=${KIND_CLUSTER_NAME:-kubetune-e2e}
TAG=${IMAGE_TAG:-e2e}
OPERATOR_IMAGE=kubetune-operator:$TAG
RUNNER_IMAGE=kubetune-runner:$TAG
NS=${E2E_NAMESPACE:-kubetune-e2e}
TIMEOUT=${E2E_TIMEOUT:-900}
ARTIFACTS=${E2E_ARTIFACTS:-}
OPERATOR_SA=system:serviceaccount:kubetune-system:kubetune-operator
RUNNER_SA=system:serviceaccount:$NS:kubetune-runner

WORK=$(mktemp -d)
CREATED=0
CONTEXT=kind-$CLUSTER

log() { printf '\n=== %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}
k() { kubectl --context "$CONTEXT" "$@"; }

for tool in docker kind kubectl; do
    command -v "$tool" >/dev/null || fail "$tool is not on PATH"
done
docker info >/dev/null 2>&1 || fail "docker cannot reach a Docker daemon"

diagnostics() {
    log "diagnostics"
    k get tuningjobs,modelcomparisons -A -o wide || true
    k get tuningjobs,modelcomparisons -A -o yaml || true
    k get jobs,pods -A -l app.kubernetes.io/managed-by=kubetune-operator -o wide || true
    k -n "$NS" get events --sort-by=.lastTimestamp || true
    k -n kubetune-system get deploy,pods -o wide || true
    k -n kubetune-system describe pods -l app.kubernetes.io/name=kubetune-operator || true
    k -n kubetune-system logs deploy/kubetune-operator --tail=400 || true
    local job
    for job in $(k -n "$NS" get jobs -l app.kubernetes.io/managed-by=kubetune-operator \
        -o jsonpath='{.items[*].metadata.name}' 2>/dev/null); do
        log "logs of job/$job"
        k -n "$NS" logs "job/$job" --tail=100 || true
    done
    if [[ -n $ARTIFACTS ]]; then
        kind export logs --name "$CLUSTER" "$ARTIFACTS/kind" || true
    fi
}

cleanup() {
    local status=$?
    set +e
    if ((status != 0)) && [[ -n $ARTIFACTS ]]; then
        mkdir -p "$ARTIFACTS"
        diagnostics 2>&1 | tee "$ARTIFACTS/diagnostics.txt"
    elif ((status != 0)); then
        diagnostics
    fi
    if ((CREATED)) && [[ ${KEEP_CLUSTER:-0} != 1 ]]; then
        log "deleting cluster $CLUSTER"
        kind delete cluster --name "$CLUSTER"
    fi
    rm -rf "$WORK"
    if ((status == 0)); then
        log "PASSED"
    else
        log "FAILED (exit $status)"
    fi
    exit "$status"
}
trap cleanup EXIT

name_of() { # metadata.name of the one YAML object on stdin
    awk '/^metadata:/ { meta = 1; next } meta && /^  name:/ { print $2; exit }'
}

relpath() { # the path $1 relative to the directory $2 (kustomize refuses absolute paths)
    python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$1" "$2" 2>/dev/null ||
        realpath --relative-to="$2" "$1"
}

# --- cluster ------------------------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "reusing cluster $CLUSTER"
else
    log "creating cluster $CLUSTER"
    CREATED=1
    kind create cluster --name "$CLUSTER" --wait 180s ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
fi

# --- images -------------------------------------------------------------------------------------
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building $OPERATOR_IMAGE and $RUNNER_IMAGE"
    DOCKER_BUILDKIT=1 docker build -f "$ROOT/images/operator.Dockerfile" -t "$OPERATOR_IMAGE" "$ROOT"
    DOCKER_BUILDKIT=1 docker build -f "$ROOT/images/runner.Dockerfile" -t "$RUNNER_IMAGE" "$ROOT"
fi
log "loading the images into $CLUSTER"
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$RUNNER_IMAGE"

# --- CRDs first, then the operator --------------------------------------------------------------
log "installing the CRDs"
crds=()
for file in "$ROOT"/crds/*.yaml; do
    [[ $(basename "$file") == kustomization.yaml ]] || crds+=(-f "$file")
done
k apply --server-side "${crds[@]}"
k wait --for=condition=Established --timeout=60s "${crds[@]}"

log "installing the operator (kubectl apply -k manifests/, images set to the local builds)"
mkdir -p "$WORK/install"
cat >"$WORK/install/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(relpath "$ROOT/manifests" "$WORK/install")
images:
  - name: ghcr.io/kubetune/kubetune-operator
    newName: kubetune-operator
    newTag: "$TAG"
patches:
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: kubetune-operator
        namespace: kubetune-system
      spec:
        template:
          spec:
            containers:
              - name: operator
                imagePullPolicy: Never
                env:
                  - name: KUBETUNE_RUNNER_IMAGE
                    value: "$RUNNER_IMAGE"
EOF
k apply --server-side -k "$WORK/install"
k -n kubetune-system rollout status deploy/kubetune-operator --timeout=180s

log "preparing namespace $NS (the runner's ServiceAccount and RoleBinding: manifests/runner/)"
k create namespace "$NS" --dry-run=client -o yaml | k apply -f -
# The stage Jobs must pass Pod Security's "restricted" profile, as the operator's pod does.
k label namespace "$NS" pod-security.kubernetes.io/enforce=restricted --overwrite
k apply --server-side -n "$NS" -k "$ROOT/manifests/runner"

log "checking RBAC"
can() { # can EXPECTED SUBJECT VERB RESOURCE [FLAGS]: kubectl auth can-i in $NS answers EXPECTED
    local expected=$1 subject=$2 verb=$3 resource=$4 answer
    shift 4
    answer=$(k auth can-i --as="$subject" -n "$NS" "$verb" "$resource" "$@" 2>/dev/null || true)
    [[ $answer == "$expected" ]] ||
        fail "can-i $verb $resource $* as $subject: expected $expected, got '$answer'"
    echo "  $subject $verb $resource $*: $answer"
}
can yes "$OPERATOR_SA" watch tuningjobs.kubetune.io
can yes "$OPERATOR_SA" patch tuningjobs.kubetune.io --subresource=status
can yes "$OPERATOR_SA" create jobs.batch
can no "$OPERATOR_SA" get secrets
can no "$OPERATOR_SA" create pods
can yes "$RUNNER_SA" get tuningjobs.kubetune.io
can yes "$RUNNER_SA" patch tuningjobs.kubetune.io --subresource=status
can no "$RUNNER_SA" patch tuningjobs.kubetune.io
can yes "$RUNNER_SA" create configmaps
can no "$RUNNER_SA" get secrets
can no "$RUNNER_SA" create jobs.batch

# --- the examples -------------------------------------------------------------------------------
if ((!CREATED)); then
    log "removing the examples of an earlier run"
    k -n "$NS" delete -f "$ROOT/examples/quickstart.yaml" -f "$ROOT/examples/modelcomparison.yaml" \
        --ignore-not-found --wait --timeout=180s
fi
log "applying examples/quickstart.yaml"
k apply -n "$NS" -f "$ROOT/examples/quickstart.yaml"

log "applying examples/modelcomparison.yaml with a smaller budget (6 trials per model)"
mkdir -p "$WORK/comparison"
cp "$ROOT/examples/modelcomparison.yaml" "$WORK/comparison/"
cat >"$WORK/comparison/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - modelcomparison.yaml
patches:
  - target:
      kind: ModelComparison
    patch: |-
      - op: replace
        path: /spec/search/trials
        value: 6
EOF
k apply -n "$NS" -k "$WORK/comparison"
QUICKSTART=tuningjob/$(name_of <"$ROOT/examples/quickstart.yaml")
COMPARISON=modelcomparison/$(k kustomize "$WORK/comparison" | name_of)

wait_succeeded() { # kubectl wait for Succeeded, but stop at once when the resource has Failed
    local resource=$1 deadline=$((SECONDS + TIMEOUT)) failed
    log "waiting for $resource (up to ${TIMEOUT}s)"
    while ((SECONDS < deadline)); do
        if k -n "$NS" wait --for=condition=Succeeded --timeout=20s "$resource" >/dev/null 2>&1; then
            k -n "$NS" get "$resource"
            return 0
        fi
        failed=$(k -n "$NS" get "$resource" \
            -o jsonpath='{.status.conditions[?(@.type=="Failed")].status}' 2>/dev/null || true)
        [[ $failed == True ]] && fail "$resource failed: $(k -n "$NS" get "$resource" \
            -o jsonpath='{.status.conditions[?(@.type=="Failed")].reason}: {.status.message}')"
        k -n "$NS" get "$resource" --no-headers 2>/dev/null || true
    done
    fail "$resource did not succeed within ${TIMEOUT}s"
}

at_least() { # at_least VALUE MINIMUM WHAT: VALUE is a number >= MINIMUM (and <= 1)
    awk -v v="$1" -v min="$2" 'BEGIN { exit !(v ~ /^[0-9.eE+-]+$/ && v + 0 >= min && v + 0 <= 1) }' ||
        fail "$3 is '$1', expected a number in [$2, 1]"
    echo "  $3 = $1"
}

wait_succeeded "$QUICKSTART"
wait_succeeded "$COMPARISON"

# --- the results --------------------------------------------------------------------------------
log "checking the results"
at_least "$(k -n "$NS" get "$QUICKSTART" -o jsonpath='{.status.best.score}')" 0.9 \
    "quickstart .status.best.score (roc_auc)"
params=$(k -n "$NS" get "$QUICKSTART" -o jsonpath='{.status.best.params}')
[[ -n $params ]] || fail "quickstart has no .status.best.params"
echo "  quickstart .status.best.params = $params"
stages=$(k -n "$NS" get "$QUICKSTART" -o jsonpath='{range .status.stages[*]}{.phase}{" "}{end}')
[[ -n $stages && -z ${stages//Succeeded /} ]] ||
    fail "quickstart stages are '$stages', expected every one Succeeded"
echo "  quickstart stages: $stages"
name=${QUICKSTART#*/}
ledger=$(k -n "$NS" get configmaps -l "kubetune.io/ledger=true,kubetune.io/tuningjob=$name" -o name | wc -l)
((ledger >= 1)) || fail "quickstart has no trial ledger ConfigMap (the runner's RBAC?)"
echo "  quickstart: $ledger trial ledger ConfigMap(s)"

at_least "$(k -n "$NS" get "$COMPARISON" -o jsonpath='{.status.bestScore}')" 0.8 \
    "comparison .status.bestScore (accuracy)"
best_model=$(k -n "$NS" get "$COMPARISON" -o jsonpath='{.status.bestModel}')
[[ -n $best_model ]] || fail "the comparison has no .status.bestModel"
models=$(k -n "$NS" get "$COMPARISON" -o jsonpath='{range .spec.models[*]}{.name}{" "}{end}')
ranked=$(k -n "$NS" get "$COMPARISON" \
    -o jsonpath='{range .status.ranking[?(@.phase=="Succeeded")]}{.model}{" "}{end}')
(($(wc -w <<<"$ranked") == $(wc -w <<<"$models"))) ||
    fail "the comparison ranks '$ranked' as succeeded, expected all of '$models'"
echo "  comparison: best model $best_model; ranking: $ranked"

# Events are posted in the background: give them a few seconds.
for _ in $(seq 1 15); do
    succeeded=$(k -n "$NS" get events -o name \
        --field-selector "involvedObject.name=$name,involvedObject.kind=TuningJob,reason=Succeeded" |
        wc -l)
    ((succeeded > 0)) && break
    sleep 2
done
((succeeded > 0)) || fail "no Succeeded Event for $QUICKSTART (the operator's events RBAC?)"
echo "  Events: Succeeded posted for quickstart"

log "checking the operator's log and restarts"
operator_log=$(k -n kubetune-system logs deploy/kubetune-operator)
if grep -E "Failed to post an event|Forbidden|[^0-9]403[^0-9]" <<<"$operator_log" |
    grep -vE "Not enough permissions to (watch for resources|list namespaces)"; then
    fail "the operator was refused something (above)"
fi
if grep -qE "Not enough permissions to watch for resources" <<<"$operator_log"; then
    echo "  note: kopf could not watch CRDs (expected without settings.scanning.disabled = True)"
fi
restarts=$(k -n kubetune-system get pods -l app.kubernetes.io/name=kubetune-operator \
    -o jsonpath='{.items[0].status.containerStatuses[0].restartCount}')
[[ $restarts == 0 ]] || fail "the operator restarted $restarts time(s)"
echo "  operator: no refusals, no restarts"
