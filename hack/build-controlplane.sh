#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kube-controller-manager from their Go modules
# at pinned versions, into a cache outside the repository. No release downloads:
# GitHub and GCS are unreachable from the machines this project is built on, the
# Go module proxy is not.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE_ROOT="${DRIFTGUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/driftguard}"
BIN_DIR="$CACHE_ROOT/controlplane-k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}/bin"
WORK="$CACHE_ROOT/build"

need=()
for b in etcd kube-apiserver kube-controller-manager; do
  [ -x "$BIN_DIR/$b" ] || need+=("$b")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "control plane: cached in $BIN_DIR"
  exit 0
fi

echo "control plane: building ${need[*]} (kubernetes $K8S_VERSION, etcd $ETCD_VERSION)"
echo "control plane: a cold build takes about 13 minutes on 2 cores; later runs reuse $BIN_DIR"
mkdir -p "$BIN_DIR" "$WORK"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

staging="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
mount-utils pod-security-admission sample-apiserver"
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
staging_version="v0.${K8S_VERSION#v1.}"

build_kube() {
  local dir="$WORK/kubernetes-$K8S_VERSION"
  mkdir -p "$dir"
  {
    echo "module driftguard.local/kubewrap"
    echo
    echo "go 1.25"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    for m in $staging; do echo "replace k8s.io/$m => k8s.io/$m $staging_version"; done
  } > "$dir/go.mod"
  cat > "$dir/tools.go" <<'GO'
//go:build tools

package kubewrap

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
  (cd "$dir" && echo "control plane: resolving modules" && go mod tidy)
  local pkg="k8s.io/component-base/version"
  local ld="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  for b in kube-apiserver kube-controller-manager; do
    [ -x "$BIN_DIR/$b" ] && continue
    echo "control plane: compiling $b ($(date +%T))"
    (cd "$dir" && go build -trimpath -ldflags "$ld" -o "$BIN_DIR/$b.tmp" "k8s.io/kubernetes/cmd/$b")
    mv "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
  done
}

build_etcd() {
  [ -x "$BIN_DIR/etcd" ] && return
  local dir="$WORK/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  printf 'module driftguard.local/etcdwrap\n\ngo 1.25\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$dir/go.mod"
  printf '//go:build tools\n\npackage etcdwrap\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > "$dir/tools.go"
  echo "control plane: compiling etcd ($(date +%T))"
  (cd "$dir" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
}

build_etcd
build_kube
echo "control plane: ready in $BIN_DIR ($(date +%T))"
