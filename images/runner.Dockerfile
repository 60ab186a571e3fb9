# syntax=docker/dockerfile:1
# The stage runner: one container per stage Job, `python -m kubetune.runner` (the operator sets
# the same command). Build from the repository root (BuildKit, the default builder since Docker 23):
#
#   docker build -f images/runner.Dockerfile -t ghcr.io/kubetune/kubetune-runner:0.1.0 .
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

# --- runtime: the wheel with its [boost] extra, and nothing of the build stage but the wheel
FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# libgomp1: LightGBM's wheel links the system's OpenMP runtime instead of bundling one
# (scikit-learn bundles its own); the import check below fails the build without it.
# The user: uid 10001, as the stage Job's securityContext says; no login shell.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 kubetune \
    && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin kubetune
# The wheel is bind-mounted, not copied: no layer keeps it. pip compiles the bytecode now, since
# the root filesystem is read-only at run time.
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    pip install --no-cache-dir "$(ls /dist/kubetune-*.whl)[boost]" \
    && python -c "import kubetune.runner.stage, lightgbm, xgboost"
# HOME and the working directory are /tmp: the one writable path (an emptyDir in the Job).
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
WORKDIR /tmp
USER 10001:10001
ENTRYPOINT ["python", "-m", "kubetune.runner"]
