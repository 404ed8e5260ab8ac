#!/usr/bin/env bash
# Builds the tools the chart tests need (helm) from its Go module at a pinned
# version, into a cache outside the repository. No release downloads: GitHub
# and get.helm.sh are unreachable from the machines this project is built on,
# the Go module proxy is not. Idempotent: a second run finds the cached binary.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE_ROOT="${DRIFTGUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/driftguard}"
BIN_DIR="$CACHE_ROOT/tools-helm-${HELM_VERSION}/bin"

if [ -x "$BIN_DIR/helm" ]; then
  echo "tools: helm $HELM_VERSION cached in $BIN_DIR"
  exit 0
fi

echo "tools: building helm $HELM_VERSION ($(date +%T)); about 2 minutes on 2 cores, later runs reuse $BIN_DIR"
mkdir -p "$BIN_DIR"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# Build into a scratch GOBIN and move the binary in last, so an interrupted
# build never leaves a half-written helm that the check above would trust.
scratch="$(mktemp -d "$CACHE_ROOT/tools-helm-build.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
# helm's `version` command reads these; without them it reports v3.x-dirty-ish defaults.
ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
GOBIN="$scratch" go install -trimpath -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mv "$scratch/helm" "$BIN_DIR/helm"
echo "tools: helm ready in $BIN_DIR ($("$BIN_DIR/helm" version --short), $(date +%T))"
