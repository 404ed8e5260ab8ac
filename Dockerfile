# syntax=docker/dockerfile:1
# driftguard operator image: `docker build -t driftguard:0.1.0 .`
#
# Two stages on the same Python image, so the virtual environment's interpreter
# symlink (/usr/local/bin/python3.11) resolves identically in both:
#   builder  installs the locked dependencies and the project into /opt/driftguard with uv
#   runtime  copies only that venv; no uv, no compiler, no sources
# The image runs as a numeric non-root UID and writes nothing to its root
# filesystem (bytecode is compiled at build time), so it runs with
# readOnlyRootFilesystem; the chart mounts an emptyDir at /tmp for tempfile users.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
# The same uv as the Makefile bootstraps, so the lockfile is read the same way.
ARG UV_VERSION=0.13.8
RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"
ENV UV_PROJECT_ENVIRONMENT=/opt/driftguard \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_NO_CACHE=1
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lockfile changes. --locked
# (not --frozen) fails the build if uv.lock no longer matches pyproject.toml.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project --python /usr/local/bin/python3
# Then the project itself, as a real (non-editable) install: /src is not in the runtime image.
COPY operator/ operator/
RUN uv sync --locked --no-dev --no-editable --python /usr/local/bin/python3

FROM ${PYTHON_IMAGE} AS runtime
ARG UID=65532
LABEL org.opencontainers.image.title="driftguard" \
      org.opencontainers.image.description="Kubernetes operator: Environments that revert or flag drift" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
# A passwd entry for the UID: kopf names itself after getpass.getuser(), which
# fails for a UID without one (the chart also sets POD_ID, which kopf prefers).
RUN groupadd --system --gid "${UID}" driftguard \
 && useradd --system --uid "${UID}" --gid "${UID}" --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin driftguard
COPY --from=builder /opt/driftguard /opt/driftguard
ENV PATH=/opt/driftguard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER ${UID}:${UID}
# 8080: Prometheus /metrics (--metrics-port); 8081: the liveness endpoint the chart passes (--liveness).
EXPOSE 8080 8081
ENTRYPOINT ["driftguard", "run"]
