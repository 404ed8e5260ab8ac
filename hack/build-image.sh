#!/usr/bin/env bash
# Builds the operator image from the Dockerfile without a daemon or a registry:
#   1. a minimal Debian base (debootstrap of one pinned release with python3, its
#      -updates and -security suites in the apt sources, every package upgraded from
#      them) made into a local image, localhost/driftguard-base:<suite>;
#   2. `buildah bud` of the Dockerfile on that base (chroot isolation, overlay storage
#      where the kernel allows it, else vfs);
#   3. the image also written as an OCI archive, ready for `skopeo copy` to a registry,
#      and beside it its SBOM (CycloneDX JSON: the locked Python packages in the image
#      and its Debian packages; hack/sbom.py).
# Everything lives outside the repository, under $CACHE_ROOT/image: the base rootfs
# tarball, buildah's storage (base, layers, image), the archive and the SBOM. A second
# run reuses the base and buildah's layer cache, so only changed Dockerfile steps run
# again, and an unchanged image is not written out again. The base is made anew when
# its recipe below changes or when it is older than BASE_MAX_AGE_DAYS (security updates).
# Needs root (debootstrap, buildah's chroot isolation) and network to the Debian archive
# and PyPI; buildah, debootstrap and runc (the image tests run the image with it) are
# installed with apt-get when missing.
#
# --if-possible (make test): on a machine that cannot build images (not root, no apt-get,
# no mount namespaces) say so loudly and exit 0, so the other tests still run; under
# CI=true that is a failure all the same. Without it, any reason not to build fails.
set -euo pipefail

SUITE="${SUITE:-bookworm}" # Debian 12: its python3 is 3.11, the version the project targets
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
BASE_MAX_AGE_DAYS="${BASE_MAX_AGE_DAYS:-7}"
IMAGE="${IMAGE:-localhost/driftguard:0.1.0}"
CACHE_ROOT="${DRIFTGUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/driftguard}"
IMAGE_DIR="$CACHE_ROOT/image"
BASE_IMAGE="localhost/driftguard-base:$SUITE"
BASE_TAR="$IMAGE_DIR/base-$SUITE.tar"
ARCHIVE="$IMAGE_DIR/driftguard.oci.tar"
SBOM="$IMAGE_DIR/driftguard.cdx.json"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
IF_POSSIBLE=false
[ "${1:-}" = --if-possible ] && IF_POSSIBLE=true

# One private store, so the machine's own container storage is neither used nor touched.
# Its driver is overlay where the kernel allows it here (a cached step costs nothing), else
# vfs, which works everywhere but copies every layer whole: a warm build then takes minutes.
# The tests read the choice from $IMAGE_DIR/driver.
BUILDAH=()
choose_storage() {
  local driver="${STORAGE_DRIVER:-}" probe ctr
  if [ -z "$driver" ]; then
    driver=vfs
    probe=(buildah --root "$IMAGE_DIR/probe" --runroot "$IMAGE_DIR/probe-run" --storage-driver overlay)
    if ctr="$("${probe[@]}" from scratch 2>/dev/null)"; then
      "${probe[@]}" mount "$ctr" >/dev/null 2>&1 && driver=overlay
      "${probe[@]}" rm "$ctr" >/dev/null 2>&1 || true
    fi
    rm -rf "$IMAGE_DIR/probe" "$IMAGE_DIR/probe-run"
    [ "$driver" = overlay ] || log "overlay mounts refused here: the vfs driver (even a cached build takes minutes)"
  fi
  # vfs keeps the store's first name, so a store made before the choice is reused.
  local store=storage
  [ "$driver" = vfs ] || store="storage-$driver"
  BUILDAH=(buildah --root "$IMAGE_DIR/$store" --runroot "$IMAGE_DIR/run-$driver" --storage-driver "$driver")
  echo "$driver" >"$IMAGE_DIR/driver"
}

log() { echo "image: $* ($(date +%T))"; }

# Not a build failure but a machine that cannot build: never silent, fatal under CI.
cannot_build() {
  {
    echo "image: ################################################################"
    echo "image: CANNOT BUILD THE OPERATOR IMAGE ON THIS MACHINE: $*"
    echo "image: tests/e2e/test_image.py cannot test the image users deploy here."
    echo "image: ################################################################"
  } >&2
  # The image tests read why (and skip outside CI) where the cache is writable.
  { mkdir -p "$IMAGE_DIR" && echo "$*" >"$IMAGE_DIR/unbuildable"; } 2>/dev/null || true
  if [ "$IF_POSSIBLE" = true ] && [ "${CI:-}" != true ]; then
    echo "image: continuing without the image (outside CI only; CI=true fails here)" >&2
    exit 0
  fi
  echo "image: failing: a build was asked for (make image), or CI=true" >&2
  exit 1
}

need_tools() {
  [ "$(id -u)" = 0 ] || cannot_build "not root (debootstrap and buildah's chroot isolation need it)"
  # buildah's chroot isolation and runc both start processes in new mount namespaces.
  unshare --mount --pid --fork true 2>/dev/null ||
    cannot_build "no mount and pid namespaces here (unshare --mount --pid failed)"
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v runc >/dev/null || missing+=(runc)
  if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null || cannot_build "${missing[*]} missing and no apt-get to install them"
    log "installing ${missing[*]} from the Debian archive"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
      cannot_build "apt-get install ${missing[*]} failed"
  fi
}

# The base rootfs: minbase plus python3, trimmed like Debian's own slim images (no apt
# lists, docs except copyright files, man pages or locales). Its apt sources name the
# release, its -updates and its -security suites, and every package is upgraded from
# them, so the image starts from today's fixes, not from the last point release.
# Written to a tarball first, then moved into place, so an interrupted run never leaves
# half a base. What it was made of is recorded beside it (and in the image's labels):
#   base-<suite>.release   each suite's Release: version (the point release) and date
#   base-<suite>.upgrades  each package the upgrade replaced: old and new version, origin
#   base-<suite>.packages  every package and version, after the upgrade
make_base_tar() {
  local rootfs
  rootfs="$(mktemp -d "$IMAGE_DIR/rootfs.XXXXXX")"
  # shellcheck disable=SC2064  # expand now: $rootfs is local to this call
  trap "umount '$rootfs/proc' 2>/dev/null || true; rm -rf '$rootfs'" EXIT
  log "debootstrap $SUITE (minbase + python3) from $MIRROR; a minute or two the first time"
  debootstrap --variant=minbase --include=python3 --components=main \
    "$SUITE" "$rootfs" "$MIRROR" >"$IMAGE_DIR/debootstrap.log" 2>&1 ||
    { tail -n 20 "$IMAGE_DIR/debootstrap.log" >&2; exit 1; }
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  log "upgrading the base from $SUITE-updates and $SUITE-security"
  mount -t proc proc "$rootfs/proc"
  chroot "$rootfs" apt-get update -qq >>"$IMAGE_DIR/debootstrap.log" 2>&1 ||
    { tail -n 20 "$IMAGE_DIR/debootstrap.log" >&2; exit 1; }
  # "Inst libc6 [2.36-9+deb12u10] (2.36-9+deb12u13 Debian-Security:12/stable-security [amd64])"
  chroot "$rootfs" apt-get -s full-upgrade |
    sed -nE 's/^Inst ([^ ]+) \[([^]]+)\] \(([^ ]+) ([^ ]+) .*/\1 \2 \3 \4/p' \
      >"$IMAGE_DIR/base-$SUITE.upgrades"
  DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get full-upgrade -y -qq \
    -o Dpkg::Options::=--force-confold >>"$IMAGE_DIR/debootstrap.log" 2>&1 ||
    { tail -n 20 "$IMAGE_DIR/debootstrap.log" >&2; exit 1; }
  umount "$rootfs/proc"
  local release
  for release in "$rootfs/var/lib/apt/lists/"*_InRelease; do
    awk '/^Codename:/ {s=$2} /^Version:/ {v=$2} /^Date:/ {sub(/^Date: /, ""); d=$0}
         END {print s, (v ? v : "-"), d}' "$release"
  done | sort >"$IMAGE_DIR/base-$SUITE.release"
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
    "$rootfs"/var/log/apt/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/*
  find "$rootfs/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  # Compiled bytecode of the stdlib differs run to run and is rebuilt on demand.
  find "$rootfs/usr/lib/python3"* -name __pycache__ -type d -prune -exec rm -rf {} +
  # The host's resolver and hostname have no place in an image.
  : >"$rootfs/etc/resolv.conf"
  echo localhost >"$rootfs/etc/hostname"
  tar --numeric-owner -C "$rootfs" -cf "$BASE_TAR.partial" .
  mv "$BASE_TAR.partial" "$BASE_TAR"
  echo "$1" >"$BASE_TAR.recipe"
  rm -rf "$rootfs"
  trap - EXIT
}

# The recipe of the base: a change to make_base_tar or to the suites makes a new one.
base_recipe() {
  { declare -f make_base_tar; echo "$SUITE $MIRROR $SECURITY_MIRROR"; } | sha256sum | cut -c1-16
}

# The tarball is current when made by this recipe within BASE_MAX_AGE_DAYS.
base_tar_current() {
  [ -f "$BASE_TAR" ] && [ "$(cat "$BASE_TAR.recipe" 2>/dev/null)" = "$1" ] &&
    [ -n "$(find "$BASE_TAR" -mmin -$((BASE_MAX_AGE_DAYS * 1440)))" ]
}

import_base() {
  local ctr release id="$1"
  release="$(awk '{print $1, $2}' "$IMAGE_DIR/base-$SUITE.release" | paste -sd, -)"
  log "importing $BASE_TAR as $BASE_IMAGE (Debian $release)"
  "${BUILDAH[@]}" rmi --force "$BASE_IMAGE" >/dev/null 2>&1 || true
  ctr="$("${BUILDAH[@]}" from scratch)"
  "${BUILDAH[@]}" add --quiet "$ctr" "$BASE_TAR" / >/dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash \
    --label "org.opencontainers.image.base.name=debian:$SUITE" \
    --label "io.driftguard.base.debian-release=$release" \
    --label "io.driftguard.base.id=$id" "$ctr"
  "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
}

# The base image in the store, made anew when its tarball is.
ensure_base() {
  local recipe id
  recipe="$(base_recipe)"
  if ! base_tar_current "$recipe"; then
    if [ "$(cat "$BASE_TAR.recipe" 2>/dev/null)" != "$recipe" ]; then
      [ -f "$BASE_TAR" ] && log "the base's recipe changed: making it anew"
    else
      log "the base is older than $BASE_MAX_AGE_DAYS days: making it anew for the latest updates"
    fi
    make_base_tar "$recipe"
  fi
  id="$recipe-$(stat -c %Y "$BASE_TAR")"
  if [ "$("${BUILDAH[@]}" inspect --type image --format '{{index .OCIv1.Config.Labels "io.driftguard.base.id"}}' \
    "$BASE_IMAGE" 2>/dev/null)" = "$id" ]; then
    log "base $BASE_IMAGE cached in ${BUILDAH[2]} ($(awk '{print $1, $2}' "$IMAGE_DIR/base-$SUITE.release" | paste -sd, -))"
  else
    import_base "$id"
  fi
}

# Superseded builds would fill the disk (vfs stores every layer as a full copy): drop
# working containers that failed builds left behind, and every untagged image this build
# did not use (those it used are its layer cache and stay).
prune() {
  local used id ctr
  # Not the image tests' containers (driftguard-test-*): a test elsewhere may be running one.
  for ctr in $("${BUILDAH[@]}" containers --format '{{.ContainerName}}'); do
    case "$ctr" in driftguard-test-*) ;; *) "${BUILDAH[@]}" rm "$ctr" >/dev/null ;; esac
  done
  used="$(grep -oE '^--> [0-9a-f]{11,}' "$IMAGE_DIR/build.log" | cut -c5-15 | sort -u)"
  for id in $("${BUILDAH[@]}" images --filter dangling=true --format '{{.ID}}' --no-trunc); do
    id="${id#sha256:}"
    grep -qx "${id:0:11}" <<<"$used" || "${BUILDAH[@]}" rmi "$id" >/dev/null 2>&1 || true
  done
}

# The SBOM of the image just built, from its own filesystem: the locked Python packages
# installed in its virtual environment and the Debian packages in its dpkg database.
write_sbom() {
  local ctr root
  ctr="$("${BUILDAH[@]}" from --pull=never --quiet "$IMAGE")"
  root="$("${BUILDAH[@]}" mount "$ctr")"
  "$REPO/.venv/bin/python" "$REPO/hack/sbom.py" --project "$REPO" --rootfs "$root" \
    --image "$IMAGE" --image-id "$1" --upgrades "$IMAGE_DIR/base-$SUITE.upgrades" \
    --output "$SBOM.partial" || { "${BUILDAH[@]}" rm "$ctr" >/dev/null; exit 1; }
  "${BUILDAH[@]}" rm "$ctr" >/dev/null
  mv "$SBOM.partial" "$SBOM"
}

main() {
  need_tools
  mkdir -p "$IMAGE_DIR"
  rm -f "$IMAGE_DIR/unbuildable"
  # One build at a time per store (two checkouts share the cache): the next one waits.
  exec 9>"$IMAGE_DIR/.lock"
  flock -n 9 || { log "waiting for another build in $IMAGE_DIR"; flock 9; }
  choose_storage
  [ -x "$REPO/.venv/bin/python" ] || { echo "image: run make install first (the SBOM needs .venv)" >&2; exit 1; }
  ensure_base
  # Behind a TLS-inspecting proxy PyPI answers with a certificate only the host's bundle
  # trusts: lend that bundle to the builder's PyPI steps as a secret (never in a layer).
  local trust=() bundle="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" id stamp
  [ -s "$bundle" ] && trust=(--secret "id=ca-certificates,src=$bundle")
  log "building $IMAGE from $REPO/Dockerfile"
  # --layers: each Dockerfile step is cached, so a rebuild with the same lockfile reuses
  # the dependency layer. --pull=never: the base exists only in this store.
  "${BUILDAH[@]}" bud --isolation chroot --layers --pull=never \
    "${trust[@]}" --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" -f "$REPO/Dockerfile" "$REPO" \
    >"$IMAGE_DIR/build.log" 2>&1 || { tail -n 30 "$IMAGE_DIR/build.log" >&2; exit 1; }
  prune
  # The archive (compressing every layer: most of a warm run's time) and the SBOM are
  # written again only when the image or the SBOM's recipe changed.
  id="$("${BUILDAH[@]}" inspect --type image --format '{{.FromImageID}}' "$IMAGE")"
  stamp="$id $(sha256sum "$REPO/hack/sbom.py" | cut -c1-16)"
  if [ -f "$ARCHIVE" ] && [ -f "$SBOM" ] && [ "$(cat "$ARCHIVE.id" 2>/dev/null)" = "$stamp" ]; then
    log "$IMAGE unchanged (${id:0:12}): $ARCHIVE and $SBOM kept"
    return
  fi
  rm -f "$ARCHIVE" "$ARCHIVE.id"
  "${BUILDAH[@]}" push --quiet "$IMAGE" "oci-archive:$ARCHIVE:$IMAGE"
  write_sbom "$id"
  echo "$stamp" >"$ARCHIVE.id"
  log "$IMAGE ready (${id:0:12}): $("${BUILDAH[@]}" images --format '{{.Size}}' "$IMAGE") unpacked," \
    "$(du -h "$ARCHIVE" | cut -f1) as $ARCHIVE, SBOM $SBOM"
}

main "$@"
