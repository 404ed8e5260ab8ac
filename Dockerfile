# syntax=docker/dockerfile:1
# driftguard operator image. Built daemonless by `make image` (hack/build-image.sh):
#   buildah bud --build-arg BASE_IMAGE=localhost/driftguard-base:bookworm -t driftguard:0.1.0 .
# The base is Debian 12 "bookworm" (minbase + python3, nothing else) that the script
# makes with debootstrap from the Debian archive; the build pulls from no image registry.
# With Docker and a registry, any Debian 12 image with python3 works as BASE_IMAGE.
#
# Two stages on the same base, so the virtual environment's interpreter symlink
# (/usr/bin/python3 -> python3.11) resolves identically in both:
#   builder  installs the locked dependencies and the project into /opt/driftguard with uv
#   runtime  copies only that venv; no uv, no pip, no compiler, no sources
# The image runs as a numeric non-root UID and writes nothing to its root
# filesystem (bytecode is compiled at build time), so it runs with
# readOnlyRootFilesystem; the chart mounts an emptyDir at /tmp for tempfile users.

# Pinned to one Debian release (the suite the base was bootstrapped from); the script
# records the point release and every package version beside the base.
ARG BASE_IMAGE=localhost/driftguard-base:bookworm

FROM ${BASE_IMAGE} AS builder
# venv (for a throwaway pip that installs uv) is the builder's only addition; every
# dependency of the project ships as a wheel, so no compiler is needed even here.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null \
 && rm -rf /var/lib/apt/lists/*
# The same uv as the Makefile bootstraps, so the lockfile is read the same way.
# Steps that reach PyPI mount an optional CA bundle secret (`--secret id=ca-certificates,src=...`):
# behind a TLS-inspecting proxy the build trusts what the host trusts, and the bundle
# never lands in a layer. Without the secret, pip and uv use their own roots.
ARG UV_VERSION=0.13.8
ENV TRUST='if [ -s /run/secrets/ca-certificates ]; then export SSL_CERT_FILE=/run/secrets/ca-certificates PIP_CERT=/run/secrets/ca-certificates; fi'
RUN --mount=type=secret,id=ca-certificates eval "$TRUST" \
 && python3 -m venv /opt/uv \
 && /opt/uv/bin/pip install --quiet --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"
ENV UV_PROJECT_ENVIRONMENT=/opt/driftguard \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_NO_CACHE=1
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lockfile changes (not when the
# README does: the project's metadata, which names it, is read only by the next step).
# --locked (not --frozen) fails the build if uv.lock no longer matches pyproject.toml.
COPY pyproject.toml uv.lock ./
RUN --mount=type=secret,id=ca-certificates eval "$TRUST" \
 && /opt/uv/bin/uv sync --locked --no-dev --no-install-project --python /usr/bin/python3
# Then the project itself, as a real (non-editable) install: /src is not in the runtime image.
COPY README.md ./
COPY operator/ operator/
RUN --mount=type=secret,id=ca-certificates eval "$TRUST" \
 && /opt/uv/bin/uv sync --locked --no-dev --no-editable --python /usr/bin/python3

FROM ${BASE_IMAGE} AS runtime
ARG UID=65532
LABEL org.opencontainers.image.title="driftguard" \
      org.opencontainers.image.description="Kubernetes operator: Environments that revert or flag drift" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
# A passwd entry for the UID: kopf names itself after getpass.getuser(), which
# fails for a UID without one (the chart also sets POD_ID, which kopf prefers).
RUN groupadd --gid "${UID}" driftguard \
 && useradd --uid "${UID}" --gid "${UID}" --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin driftguard
COPY --from=builder /opt/driftguard /opt/driftguard
ENV PATH=/opt/driftguard/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER ${UID}:${UID}
# 8080: Prometheus /metrics (--metrics-port); 8081: the liveness endpoint the chart passes (--liveness).
EXPOSE 8080 8081
ENTRYPOINT ["driftguard", "run"]
