#!/usr/bin/env bash
# Builds the operator image from the Dockerfile without a daemon or a registry:
#   1. a minimal Debian base (debootstrap of one pinned suite, with python3) made into
#      a local image, localhost/driftguard-base:<suite>;
#   2. `buildah bud` of the Dockerfile on that base (chroot isolation, vfs storage);
#   3. the image also written as an OCI archive, ready for `skopeo copy` to a registry.
# Everything lives outside the repository, under $CACHE_ROOT/image: the base rootfs
# tarball, buildah's storage (base, layers, image) and the archive. A second run reuses
# the base and buildah's layer cache, so only changed Dockerfile steps run again.
# Needs root (debootstrap, buildah's chroot isolation) and network to the Debian archive
# and PyPI; buildah and debootstrap are installed with apt-get when missing.
set -euo pipefail

SUITE="${SUITE:-bookworm}" # Debian 12: its python3 is 3.11, the version the project targets
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
IMAGE="${IMAGE:-localhost/driftguard:0.1.0}"
CACHE_ROOT="${DRIFTGUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/driftguard}"
IMAGE_DIR="$CACHE_ROOT/image"
BASE_IMAGE="localhost/driftguard-base:$SUITE"
BASE_TAR="$IMAGE_DIR/base-$SUITE.tar"
ARCHIVE="$IMAGE_DIR/driftguard.oci.tar"
REPO="$(cd "$(dirname "$0")/.." && pwd)"

# One private store, so the machine's own container storage is neither used nor touched.
BUILDAH=(buildah --root "$IMAGE_DIR/storage" --runroot "$IMAGE_DIR/run" --storage-driver vfs)

log() { echo "image: $* ($(date +%T))"; }

need_tools() {
  if [ "$(id -u)" != 0 ]; then
    echo "image: needs root (debootstrap and buildah's chroot isolation); run as root" >&2
    exit 1
  fi
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]} from the Debian archive"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# The base rootfs: minbase plus python3 and nothing else, trimmed like Debian's own slim
# images (no apt lists, docs except copyright files, man pages or locales). Written to a
# tarball first, then moved into place, so an interrupted run never leaves half a base.
make_base_tar() {
  local rootfs
  rootfs="$(mktemp -d "$IMAGE_DIR/rootfs.XXXXXX")"
  # shellcheck disable=SC2064  # expand now: $rootfs is local to this call
  trap "rm -rf '$rootfs'" EXIT
  log "debootstrap $SUITE (minbase + python3) from $MIRROR; a minute or two the first time"
  debootstrap --variant=minbase --include=python3 --components=main \
    "$SUITE" "$rootfs" "$MIRROR" >"$IMAGE_DIR/debootstrap.log" 2>&1 ||
    { tail -n 20 "$IMAGE_DIR/debootstrap.log" >&2; exit 1; }
  # What the base was made of, for the record (and the image's label): the point
  # release and every package version.
  grep -E '^(Version|Date):' "$rootfs/var/lib/apt/lists/"*_dists_"${SUITE}"_Release |
    sed 's/^[^:]*_Release://' >"$IMAGE_DIR/base-$SUITE.release"
  chroot "$rootfs" dpkg-query -W -f '${Package}=${Version}\n' >"$IMAGE_DIR/base-$SUITE.packages"
  # Later apt installs (the Dockerfile's builder stage) skip docs too.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/01-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
  find "$rootfs/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  # Compiled bytecode of the stdlib differs run to run and is rebuilt on demand.
  find "$rootfs/usr/lib/python3"* -name __pycache__ -type d -prune -exec rm -rf {} +
  # The host's resolver and hostname have no place in an image.
  : >"$rootfs/etc/resolv.conf"
  echo localhost >"$rootfs/etc/hostname"
  tar --numeric-owner -C "$rootfs" -cf "$BASE_TAR.partial" .
  mv "$BASE_TAR.partial" "$BASE_TAR"
  rm -rf "$rootfs"
  trap - EXIT
}

import_base() {
  local ctr release
  release="$(tr '\n' ' ' <"$IMAGE_DIR/base-$SUITE.release")"
  log "importing $BASE_TAR as $BASE_IMAGE (Debian $release)"
  ctr="$("${BUILDAH[@]}" from scratch)"
  "${BUILDAH[@]}" add --quiet "$ctr" "$BASE_TAR" / >/dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash \
    --label "org.opencontainers.image.base.name=debian:$SUITE" \
    --label "io.driftguard.base.debian-release=$release" "$ctr"
  "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
}

# vfs stores every layer as a full copy, so superseded builds would fill the disk: drop
# working containers that failed builds left behind, and every untagged image this build
# did not use (those it used are its layer cache and stay).
prune() {
  local used id
  "${BUILDAH[@]}" rm --all >/dev/null
  used="$(grep -oE '^--> [0-9a-f]{11,}' "$IMAGE_DIR/build.log" | cut -c5-15 | sort -u)"
  for id in $("${BUILDAH[@]}" images --filter dangling=true --format '{{.ID}}' --no-trunc); do
    id="${id#sha256:}"
    grep -qx "${id:0:11}" <<<"$used" || "${BUILDAH[@]}" rmi "$id" >/dev/null 2>&1 || true
  done
}

main() {
  need_tools
  mkdir -p "$IMAGE_DIR"
  if "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base $BASE_IMAGE cached in $IMAGE_DIR/storage"
  else
    [ -f "$BASE_TAR" ] || make_base_tar
    import_base
  fi
  # Behind a TLS-inspecting proxy PyPI answers with a certificate only the host's bundle
  # trusts: lend that bundle to the builder's PyPI steps as a secret (never in a layer).
  local trust=() bundle="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
  [ -s "$bundle" ] && trust=(--secret "id=ca-certificates,src=$bundle")
  log "building $IMAGE from $REPO/Dockerfile"
  # --layers: each Dockerfile step is cached, so a rebuild with the same lockfile reuses
  # the dependency layer. --pull=never: the base exists only in this store.
  "${BUILDAH[@]}" bud --isolation chroot --layers --pull=never \
    "${trust[@]}" --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" -f "$REPO/Dockerfile" "$REPO" |
    tee "$IMAGE_DIR/build.log"
  prune
  rm -f "$ARCHIVE"
  "${BUILDAH[@]}" push --quiet "$IMAGE" "oci-archive:$ARCHIVE:$IMAGE"
  log "$IMAGE ready: $("${BUILDAH[@]}" images --format '{{.Size}}' "$IMAGE") unpacked," \
    "$(du -h "$ARCHIVE" | cut -f1) as $ARCHIVE"
}

main "$@"
