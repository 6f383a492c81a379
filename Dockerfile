# syntax=docker/dockerfile:1.7
#
# One Dockerfile, five stages:
#   wheels    every wheel of requirements.lock, hash-checked (build-time only)
#   builder   the development toolchain: ./dev test runs inside it
#   runtime   slim, non-root base shared by the three services
#   learning, inference, ui   the images that run in Kubernetes
#
# Build a service image:  docker build --target inference -t tagloop-inference .
# Developer shell:        ./dev builder:shell   (see Taskfile.yml)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG TERRAFORM_IMAGE=hashicorp/terraform:1.11.4

FROM ${TERRAFORM_IMAGE} AS terraform

# ---------------------------------------------------------------------------
# The lock file is the only source of Python packages: download every pinned
# wheel once, verifying its hash, so later stages install offline from here.
FROM ${PYTHON_IMAGE} AS wheels
WORKDIR /build
COPY requirements.lock ./
RUN pip download --no-cache-dir --disable-pip-version-check --no-deps \
        --require-hashes --ignore-requires-python -r requirements.lock -d /wheels
COPY pyproject.toml README.md* ./
COPY tagloop ./tagloop
COPY learning_service ./learning_service
COPY inference_service ./inference_service
COPY frontend ./frontend
# The project itself as a wheel, built only with the locked setuptools.
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --no-index \
        --find-links /wheels -w /wheels/project .

# ---------------------------------------------------------------------------
# Builder: Python, task, every locked dependency (linters included), Chromium
# for the browser tests, promtool for the alert rules and terraform for
# `fmt -check`. The source is mounted at /src at run time; the venv lives
# outside it (TAGLOOP_VENV) so the host's .venv is never touched.
FROM ${PYTHON_IMAGE} AS builder
# Debian's packages follow the base image's point release; pinning them would
# break on every security update, so they are deliberately left unpinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates chromium git make prometheus \
    && rm -rf /var/lib/apt/lists/*
COPY --from=terraform /bin/terraform /usr/local/bin/terraform
ENV TAGLOOP_VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    --mount=type=bind,source=requirements.lock,target=/tmp/requirements.lock \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels \
        --require-hashes --no-deps --ignore-requires-python -r /tmp/requirements.lock
WORKDIR /src
COPY . .
# ./dev itself writes the stamp that says the venv matches the lock, so
# `./dev <task>` inside the container starts at once. The editable install
# points at /src, where the developer's checkout is mounted later.
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels ./dev --version
ENTRYPOINT ["./dev"]
CMD ["--list"]

# ---------------------------------------------------------------------------
# Runtime base: the project and its runtime dependencies only, resolved
# offline from the locked wheels (so exactly the locked versions), no
# compilers, no dev tools. Runs as an unprivileged user and writes nothing
# outside /tmp and the two state directories, so the root filesystem can be
# mounted read-only.
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/tagloop/tagloop
LABEL org.opencontainers.image.source=$SOURCE \
      org.opencontainers.image.version=$VERSION \
      org.opencontainers.image.revision=$REVISION \
      org.opencontainers.image.licenses=Apache-2.0 \
      org.opencontainers.image.vendor=tagloop
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TAGLOOP_HOST=0.0.0.0 \
    TAGLOOP_LOG_FORMAT=json \
    TAGLOOP_DATA_DIR=/var/lib/tagloop \
    TAGLOOP_MODEL_CACHE_DIR=/var/cache/tagloop \
    TAGLOOP_VERSION=$VERSION
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        --no-index --find-links /wheels /wheels/project/tagloop-*.whl \
    && groupadd --system --gid 10001 tagloop \
    && useradd --system --uid 10001 --gid tagloop --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin tagloop \
    && install -d -o tagloop -g tagloop /var/lib/tagloop /var/cache/tagloop
WORKDIR /app
# The learner's bootstrap corpus and fixed test set, and the UI's queue.
COPY data/train.tsv data/test.tsv data/unlabeled.tsv ./data/
USER 10001:10001
# Every service answers /healthz on TAGLOOP_PORT (set by each target below).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['TAGLOOP_PORT'], timeout=4)"]

FROM runtime AS learning
ENV TAGLOOP_PORT=8010
EXPOSE 8010
CMD ["tagloop", "serve", "learning"]

FROM runtime AS inference
ENV TAGLOOP_PORT=8001
EXPOSE 8001
CMD ["tagloop", "serve", "inference"]

FROM runtime AS ui
ENV TAGLOOP_PORT=8080
EXPOSE 8080
CMD ["tagloop", "serve", "ui"]
