#!/usr/bin/env bash
# Builds the tools the e2e tests need from their Go modules at pinned versions,
# into a cache outside the repository: helm (the chart tests), promtool
# (`promtool check metrics` on /metrics, `promtool test rules` on the alerts) and
# the prometheus server (the alerts and dashboard e2e test). No release downloads: GitHub and
# get.helm.sh are unreachable from the machines this project is built on, the
# Go module proxy is not. Idempotent: a second run finds the cached binaries.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
# Prometheus 3.x is tagged v0.3xx.y as a Go module (v0.316.0 is Prometheus 3.16.0).
PROMTOOL_VERSION="${PROMTOOL_VERSION:-v0.316.0}"
CACHE_ROOT="${DRIFTGUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/driftguard}"

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# build NAME VERSION PACKAGE ESTIMATE LDFLAGS_FUNCTION VERSION_ARGS...: `go install
# PACKAGE@VERSION` into $CACHE_ROOT/tools-NAME-VERSION/bin, unless the binary is
# already there. The function prints the -X flags that stamp the version; it runs
# only when building. VERSION_ARGS make the new binary print its version.
build() {
  local name="$1" version="$2" package="$3" estimate="$4" ld_function="$5"
  shift 5
  local bin_dir="$CACHE_ROOT/tools-${name}-${version}/bin"
  if [ -x "$bin_dir/$name" ]; then
    echo "tools: $name $version cached in $bin_dir"
    return 0
  fi
  echo "tools: building $name $version ($(date +%T)); $estimate the first time, later runs reuse $bin_dir"
  mkdir -p "$bin_dir"
  local ld
  ld="$("$ld_function")"
  # Build into a scratch GOBIN and move the binary in last, so an interrupted
  # build never leaves a half-written binary that the check above would trust.
  local scratch
  scratch="$(mktemp -d "$CACHE_ROOT/tools-${name}-build.XXXXXX")"
  # shellcheck disable=SC2064  # expand now: $scratch is local to this call
  trap "rm -rf '$scratch'" EXIT
  GOBIN="$scratch" go install -trimpath -ldflags "-s -w $ld" "$package@$version"
  mv "$scratch/$name" "$bin_dir/$name"
  rm -rf "$scratch"
  trap - EXIT
  echo "tools: $name ready in $bin_dir ($("$bin_dir/$name" "$@" 2>&1 | head -n 1), $(date +%T))"
}

# helm's `version` command reads these; without them it reports v3.x-dirty-ish defaults.
helm_ldflags() {
  echo "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
}

# promtool's --version reads prometheus/common's version variables; stamp the
# release named by the module's VERSION file (3.16.0 for v0.316.0).
promtool_ldflags() {
  local dir release
  dir="$(go mod download -json "github.com/prometheus/prometheus@$PROMTOOL_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  release="$(cat "$dir/VERSION")"
  echo "-X github.com/prometheus/common/version.Version=$release -X github.com/prometheus/common/version.Branch=HEAD"
}

build helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm "about 2 minutes on 2 cores" helm_ldflags \
  version --short
build promtool "$PROMTOOL_VERSION" github.com/prometheus/prometheus/cmd/promtool \
  "a few minutes on 2 cores" promtool_ldflags \
  --version
# The server, from the same module version as promtool, so the rules promtool
# tests are evaluated by the same engine in tests/e2e/test_prometheus.py. Built
# without the `builtinassets` tag: the web UI's assets are not embedded (they
# would need a Node build); the HTTP API, which is all the tests use, is unaffected.
build prometheus "$PROMTOOL_VERSION" github.com/prometheus/prometheus/cmd/prometheus \
  "a few minutes on 2 cores" promtool_ldflags \
  --version
