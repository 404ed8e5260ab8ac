#!/usr/bin/env bash
# Builds kubelet and kube-scheduler from the same pinned k8s.io/kubernetes module as the control
# plane, into the same cache. A wrapper module of their own keeps build-controlplane.sh's go.mod
# untouched; the Go module and build caches are shared, so after the control plane this is
# incremental (only the kubelet's own packages compile).
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE_ROOT="${DRIFTGUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/driftguard}"
BIN_DIR="$CACHE_ROOT/controlplane-k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}/bin"
WORK="$CACHE_ROOT/build/node-kubernetes-$K8S_VERSION"

need=()
for b in kubelet kube-scheduler; do
  [ -x "$BIN_DIR/$b" ] || need+=("$b")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "node: kubelet and kube-scheduler cached in $BIN_DIR"
  exit 0
fi

echo "node: building ${need[*]} (kubernetes $K8S_VERSION); reuses the control plane's build cache"
mkdir -p "$BIN_DIR" "$WORK"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# Every staging module k8s.io/kubernetes replaces with ./staging, read from its own go.mod: the
# kubelet needs two (cri-streaming, streaming) that the control plane's list does not.
(cd "$WORK" && printf 'module tmp\n\ngo 1.25\n' > go.mod && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null)
modfile="$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION/go.mod"
staging="$(awk '$2 == "=>" && $3 ~ /^\.\/staging/ {sub("k8s.io/", "", $1); print $1}' "$modfile")"
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
staging_version="v0.${K8S_VERSION#v1.}"
{
  echo "module driftguard.local/nodewrap"
  echo
  echo "go 1.25"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  for m in $staging; do echo "replace k8s.io/$m => k8s.io/$m $staging_version"; done
} > "$WORK/go.mod"
cat > "$WORK/tools.go" <<'GO'
//go:build tools

package nodewrap

import (
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
(cd "$WORK" && go mod tidy)
pkg="k8s.io/component-base/version"
ld="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
for b in "${need[@]}"; do
  echo "node: compiling $b ($(date +%T))"
  (cd "$WORK" && go build -trimpath -ldflags "$ld" -o "$BIN_DIR/$b.tmp" "k8s.io/kubernetes/cmd/$b")
  mv "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
done
echo "node: ready in $BIN_DIR ($(date +%T))"
