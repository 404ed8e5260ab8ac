#!/usr/bin/env bash
# Builds what `make bench` compares driftguard with, into the cache beside the control
# plane: the Go floor (bench/gofloor, a minimal client-go watch -> server-side apply loop)
# and Flux's kustomize-controller, each from its Go module at a pinned version. No release
# downloads (the Go module proxy is the only source reached). Idempotent: a second run
# finds the cached binaries; the Go floor's cache key is a hash of its source.
set -euo pipefail

# The newest kustomize-controller the Go proxy serves that builds with Go 1.26 (v1.10.x
# declares go 1.27). Its ExternalArtifact support (feature gate) lets the bench serve the
# source itself, without source-controller.
FLUX_KC_VERSION="${FLUX_KC_VERSION:-v1.9.6}"
CACHE_ROOT="${DRIFTGUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/driftguard}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# The Go floor: rebuilt whenever its source changes.
floor_hash="$(cat "$ROOT"/bench/gofloor/go.mod "$ROOT"/bench/gofloor/go.sum "$ROOT"/bench/gofloor/*.go |
  sha256sum | cut -c1-12)"
floor_dir="$CACHE_ROOT/bench-gofloor-$floor_hash/bin"
if [ -x "$floor_dir/gofloor" ]; then
  echo "bench tools: gofloor cached in $floor_dir"
else
  echo "bench tools: building gofloor ($(date +%T)); about 3 minutes on 2 cores the first time"
  mkdir -p "$floor_dir"
  (cd "$ROOT/bench/gofloor" && go build -trimpath -ldflags "-s -w" -o "$floor_dir/gofloor.partial" .)
  mv "$floor_dir/gofloor.partial" "$floor_dir/gofloor"
  echo "bench tools: gofloor ready in $floor_dir ($(date +%T))"
fi

# kustomize-controller: `go install module@version` refuses a go.mod with replace
# directives, and this one replaces its api module with ./api, a nested module that the
# module's zip leaves out. So: copy the module, require the api module at the same version
# instead, and build there. The Kustomization CRD comes from the module's config/crd.
kc_dir="$CACHE_ROOT/tools-kustomize-controller-$FLUX_KC_VERSION"
if [ -x "$kc_dir/bin/kustomize-controller" ]; then
  echo "bench tools: kustomize-controller $FLUX_KC_VERSION cached in $kc_dir"
else
  echo "bench tools: building kustomize-controller $FLUX_KC_VERSION ($(date +%T)); about 10 minutes on 2 cores the first time"
  scratch="$(mktemp -d "$CACHE_ROOT/tools-kustomize-controller-build.XXXXXX")"
  # shellcheck disable=SC2064  # expand now
  trap "chmod -R u+w '$scratch'; rm -rf '$scratch'" EXIT
  module="$(go mod download -json "github.com/fluxcd/kustomize-controller@$FLUX_KC_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  cp -r "$module/." "$scratch/"
  chmod -R u+w "$scratch"
  (
    cd "$scratch"
    go mod edit -dropreplace github.com/fluxcd/kustomize-controller/api
    go mod download github.com/fluxcd/kustomize-controller/api
    go build -trimpath -ldflags "-s -w" -o kustomize-controller .
  )
  mkdir -p "$kc_dir/bin" "$kc_dir/crd"
  cp "$scratch"/config/crd/bases/*.yaml "$kc_dir/crd/"
  mv "$scratch/kustomize-controller" "$kc_dir/bin/kustomize-controller"
  chmod -R u+w "$scratch"
  rm -rf "$scratch"
  trap - EXIT
  echo "bench tools: kustomize-controller ready in $kc_dir ($(date +%T))"
fi
