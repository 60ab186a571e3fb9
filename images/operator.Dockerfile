# syntax=docker/dockerfile:1
# The operator: `python -m kubetune_operator` (kopf, standalone, one replica). Build from the
# repository root (BuildKit, the default builder since Docker 23):
#
#   docker build -f images/operator.Dockerfile -t ghcr.io/kubetune/kubetune-operator:0.1.0 .
#
# Releases pin the base by digest, e.g.
#   --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest of that tag>
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --- build: the kubetune wheel (pure Python; setuptools comes from PyPI in pip's isolated build)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY trial_runner/ trial_runner/
COPY operator/ operator/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# --- runtime: the wheel without its fitting stack. The operator imports only kubetune's API
# models and pure planning code (an import-linter contract in pyproject.toml guards this), so
# scikit-learn, optuna, scipy, pandas and pyarrow (about 600 MB) stay out of this image.
FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN groupadd --gid 10001 kubetune \
    && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin kubetune
# The wheel is bind-mounted, not copied: no layer keeps it. pip compiles the bytecode now, since
# the root filesystem is read-only at run time.
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    pip install --no-cache-dir --no-deps "$(ls /dist/kubetune-*.whl)" \
    && pip install --no-cache-dir "kopf>=1.37" "kubernetes>=29" "prometheus-client>=0.20" \
        "pydantic>=2.7,<3" "PyYAML>=6" \
    && python -c "import kubetune_operator.handlers"
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
WORKDIR /tmp
USER 10001:10001
# 8080: Prometheus metrics (KUBETUNE_METRICS_PORT); 8081: kopf's liveness endpoint, /healthz.
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "kubetune_operator"]
