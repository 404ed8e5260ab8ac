#!/usr/bin/env bash
# A real node for the local control plane: containerd + runc + the bridge CNI plugin and a
# kubelet (plus kube-scheduler, which the control plane lacks), so Pods actually run.
#
#   hack/node.sh start    KUBECONFIG = the admin kubeconfig of a running control plane
#                         (`make cluster` prints it); its directory holds pki/ca.key
#   hack/node.sh import ARCHIVE...   load OCI archives into the node's image store
#   hack/node.sh stop     stop everything this script started; remove its mounts and state
#
# Needs root (cgroups, mounts, network namespaces, iptables). Everything lives in $NODE_DIR;
# `stop` leaves nothing behind. What was tried and why it is built this way: docs/node.md.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE_ROOT="${DRIFTGUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/driftguard}"
BIN_DIR="$CACHE_ROOT/controlplane-k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}/bin"
NODE_DIR="${NODE_DIR:-/tmp/driftguard-node}"
NODE_NAME="${NODE_NAME:-driftguard-node}"
POD_CIDR="${POD_CIDR:-10.88.0.0/16}"
PAUSE_IMAGE="localhost/driftguard-pause:1"
HERE="$(cd "$(dirname "$0")" && pwd)"
SOCK="$NODE_DIR/containerd/containerd.sock"
CHAIN="DRIFTGUARD-NODE"
KUBECTL="${KUBECTL:-$HERE/../.venv/bin/kubectl}"
# Hard-coded in the kubelet (device plugins' sockets, container log links) and in
# containerd 1.6's shims (their sockets): not under NODE_DIR.
FIXED_PATHS=(/var/lib/kubelet /var/log/containers /run/containerd)

log() { echo "node: $* ($(date +%T))" >&2; }
die() { echo "node: $*" >&2; exit 1; }
ctr() { command ctr --address "$SOCK" --namespace k8s.io "$@"; }
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }

# Wait up to $1 seconds for the command that follows to succeed.
wait_until() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

need_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v openssl >/dev/null || missing+=(openssl)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]} from the Debian archive"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# A client certificate signed by the control plane's CA: CN is the user, O the group.
client_kubeconfig() { # name user group
  local name="$1" user="$2" group="$3" pki="$NODE_DIR/pki"
  openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$pki/$name.key"
  openssl req -new -key "$pki/$name.key" -subj "/O=$group/CN=$user" -out "$pki/$name.csr" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n' >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$CA_CRT" -CAkey "$CA_KEY" -CAcreateserial \
    -days 30 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  cat >"$NODE_DIR/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$SERVER", certificate-authority: "$CA_CRT"}}]
users: [{name: $name, user: {client-certificate: "$pki/$name.crt", client-key: "$pki/$name.key"}}]
contexts: [{name: $name, context: {cluster: local, user: $name}}]
current-context: $name
EOF
}

start_containerd() {
  mkdir -p "$NODE_DIR/containerd" "$NODE_DIR/cni/net.d"
  cat >"$NODE_DIR/containerd/config.toml" <<EOF
version = 2
root = "$NODE_DIR/containerd/root"
state = "$NODE_DIR/containerd/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # No CAP_SYS_RESOURCE here: lowering oom_score_adj (-998 for sandboxes, -997 for Guaranteed
  # Pods) fails with EACCES and runc cannot start any container. Clamp to containerd's own.
  restrict_oom_score_adj = true
  # Sandboxes' network namespaces under our state directory, not /run/netns: "stop" then
  # finds and unmounts exactly ours.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "${SNAPSHOTTER:-overlayfs}"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$NODE_DIR/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni/net.d"
EOF
  cat >"$NODE_DIR/cni/net.d/10-driftguard.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "driftguard",
  "plugins": [
    {"type": "bridge", "bridge": "dg0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$NODE_DIR/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  log "starting containerd $(containerd --version | awk '{print $3}') (snapshotter ${SNAPSHOTTER:-overlayfs})"
  setsid containerd --config "$NODE_DIR/containerd/config.toml" >"$NODE_DIR/containerd.log" 2>&1 &
  echo $! >"$NODE_DIR/containerd.pid"
  wait_until 30 ctr version || die "containerd did not answer on $SOCK; see $NODE_DIR/containerd.log"
}

# The Pod sandbox image: a static Go binary in a one-layer image (no registry is reachable).
import_pause() {
  mkdir -p "$NODE_DIR/pause"
  (cd "$HERE/node" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$NODE_DIR/pause/pause" .)
  python3 "$HERE/node/oci-image.py" "$PAUSE_IMAGE" "$NODE_DIR/pause/pause" "$NODE_DIR/pause/pause.tar"
  ctr images import --snapshotter "${SNAPSHOTTER:-overlayfs}" "$NODE_DIR/pause/pause.tar" >/dev/null
}

# No kube-proxy and no endpoints for the `kubernetes` Service (the API server runs with
# --endpoint-reconciler-type=none on loopback): send the Service's address to the API server
# ourselves, so in-cluster clients (KUBERNETES_SERVICE_HOST) reach it as in a real cluster.
route_apiserver() {
  local cluster_ip port
  cluster_ip="$(k get service kubernetes -n default -o jsonpath='{.spec.clusterIP}')"
  port="${SERVER##*:}"
  # Put back by stop as they were.
  sysctl -n net.ipv4.conf.all.route_localnet net.ipv4.ip_forward | paste -sd' ' >"$NODE_DIR/sysctl.before"
  sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.ip_forward=1
  iptables -t nat -N "$CHAIN" 2>/dev/null || iptables -t nat -F "$CHAIN"
  iptables -t nat -A "$CHAIN" -d "$cluster_ip/32" -p tcp --dport 443 -j DNAT --to-destination "127.0.0.1:$port"
  iptables -t nat -C PREROUTING -j "$CHAIN" 2>/dev/null || iptables -t nat -I PREROUTING -j "$CHAIN"
  iptables -t nat -C OUTPUT -j "$CHAIN" 2>/dev/null || iptables -t nat -I OUTPUT -j "$CHAIN"
}

start_kubelet() {
  local port healthz
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  healthz="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  client_kubeconfig kubelet "system:node:$NODE_NAME" system:nodes
  # Bootstrap RBAC has the system:node role but binds it to no one (the Node authorizer
  # would); bind it to this node's identity only.
  k create clusterrolebinding "driftguard-node:$NODE_NAME" --clusterrole=system:node \
    --user="system:node:$NODE_NAME" --dry-run=client -o yaml | k apply -f - >/dev/null
  cat >"$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$SOCK
# These machines mount cgroup v1 (hybrid); kubelet 1.35+ refuses it unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
address: 127.0.0.1
port: $port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$CA_CRT"}
authorization: {mode: Webhook}
clusterDomain: cluster.local
podLogsDir: $NODE_DIR/pod-logs
resolvConf: /etc/resolv.conf
registerNode: true
# A shared build machine: never evict Pods over the disk others fill.
evictionHard: {memory.available: "100Mi"}
imageGCHighThresholdPercent: 100
EOF
  echo "$healthz" >"$NODE_DIR/kubelet.healthz-port"
  log "starting kubelet $("$BIN_DIR/kubelet" --version | awk '{print $2}') as node $NODE_NAME"
  setsid "$BIN_DIR/kubelet" --config "$NODE_DIR/kubelet.yaml" --kubeconfig "$NODE_DIR/kubelet.kubeconfig" \
    --root-dir "$NODE_DIR/kubelet" --cert-dir "$NODE_DIR/kubelet/pki" --hostname-override "$NODE_NAME" --v="${KUBELET_V:-1}" \
    >"$NODE_DIR/kubelet.log" 2>&1 &
  echo $! >"$NODE_DIR/kubelet.pid"
}

start_scheduler() {
  # The bootstrap RBAC binds system:kube-scheduler's roles to that user.
  client_kubeconfig scheduler system:kube-scheduler system:kube-scheduler
  setsid "$BIN_DIR/kube-scheduler" --kubeconfig "$NODE_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$NODE_DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$NODE_DIR/scheduler.kubeconfig" \
    --leader-elect=false --secure-port=0 >"$NODE_DIR/kube-scheduler.log" 2>&1 &
  echo $! >"$NODE_DIR/kube-scheduler.pid"
}

node_ready() {
  [ "$(k get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

start() {
  [ "$(id -u)" = 0 ] || die "needs root (cgroups, mounts, network namespaces, iptables)"
  [ -n "${KUBECONFIG:-}" ] && [ -f "$KUBECONFIG" ] || die "set KUBECONFIG to the admin kubeconfig of a running control plane (make cluster)"
  [ ! -e "$NODE_DIR/containerd.pid" ] || die "$NODE_DIR is in use: hack/node.sh stop first"
  need_packages
  "$HERE/build-node.sh" >&2
  CA_CRT="${CA_CRT:-$(dirname "$KUBECONFIG")/pki/ca.crt}"
  CA_KEY="${CA_KEY:-$(dirname "$KUBECONFIG")/pki/ca.key}"
  [ -r "$CA_KEY" ] || die "no CA key at $CA_KEY (set CA_CRT and CA_KEY)"
  SERVER="$(k config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
  mkdir -p "$NODE_DIR/pki"
  # Paths the kubelet and containerd's shims use whatever their flags say: removed by stop
  # only if this start created them.
  local path
  for path in "${FIXED_PATHS[@]}"; do
    [ -e "$path" ] || echo "$path" >>"$NODE_DIR/created-paths"
  done
  start_containerd
  import_pause
  route_apiserver
  start_kubelet
  start_scheduler
  wait_until 120 node_ready || die "node $NODE_NAME not Ready after 120 s; see $NODE_DIR/kubelet.log"
  log "node $NODE_NAME Ready; logs in $NODE_DIR"
}

import_images() {
  local archive
  for archive in "$@"; do
    log "importing $archive"
    ctr images import --snapshotter "${SNAPSHOTTER:-overlayfs}" "$archive" >&2
  done
}

stop_pid() { # name
  local file="$NODE_DIR/$1.pid" pid
  [ -f "$file" ] || return 0
  pid="$(cat "$file")"
  if kill "$pid" 2>/dev/null; then
    wait_until 30 bash -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

stop() {
  # The kubelet first, so it does not restart what follows; then every container and
  # sandbox (their shims outlive containerd), then containerd.
  stop_pid kube-scheduler
  stop_pid kubelet
  if [ -S "$SOCK" ]; then
    local id
    for id in $(ctr containers ls -q 2>/dev/null); do
      ctr tasks delete --force "$id" >/dev/null 2>&1 || true
      ctr containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  stop_pid containerd
  # Shims whose containerd is gone: found by the state directory on their command line.
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $SOCK" || true); do
    kill -9 "$pid" 2>/dev/null || true
  done
  ip link delete dg0 2>/dev/null || true
  if [ -f "$NODE_DIR/sysctl.before" ]; then
    local localnet forward
    read -r localnet forward <"$NODE_DIR/sysctl.before"
    sysctl -qw "net.ipv4.conf.all.route_localnet=$localnet" "net.ipv4.ip_forward=$forward"
  fi
  python3 "$HERE/node/clean-iptables.py" "$CHAIN" driftguard
  # Every mount under the node's directory (secrets' tmpfs, rootfs overlays, shm), deepest first.
  if [ -d "$NODE_DIR" ]; then
    findmnt -rn -o TARGET | grep -F "$NODE_DIR/" | sort -r | while read -r target; do
      umount -l "$target" 2>/dev/null || true
    done
    if [ -f "$NODE_DIR/created-paths" ]; then
      xargs -r rm -rf <"$NODE_DIR/created-paths"
    fi
    rm -rf "$NODE_DIR"
  fi
  # The kubelet's QoS cgroups (kubepods/...), in every hierarchy, deepest first; empty by now.
  find /sys/fs/cgroup/*/kubepods -depth -type d -exec rmdir {} + 2>/dev/null || true
  log "stopped; $NODE_DIR removed"
}

case "${1:-}" in
  start) start ;;
  import) shift; import_images "$@" ;;
  stop) stop ;;
  *) die "usage: $0 start|import ARCHIVE...|stop" ;;
esac
