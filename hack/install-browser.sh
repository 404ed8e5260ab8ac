#!/usr/bin/env bash
# Installs the browser the board's tests drive: Chromium and its WebDriver from the Debian
# archive (packages chromium, chromium-driver). Idempotent: with both on the PATH it only says
# so. It needs root (apt-get); where it cannot install, it says why and fails under CI=true,
# else it warns (tests/e2e/test_board.py then skips, outside CI only).
set -euo pipefail

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  echo "browser: $(chromium --version 2>/dev/null | head -1), chromedriver cached"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "browser: chromium and chromium-driver are missing and this is not a Debian root shell;" \
       "install them (apt-get install chromium chromium-driver) to run the board's browser tests" >&2
  [ "${CI:-}" = true ] && exit 1
  exit 0
fi
echo "browser: installing chromium and chromium-driver from the Debian archive ($(date +%T))"
export DEBIAN_FRONTEND=noninteractive
# The package lists may be old or absent on a fresh machine: refresh them once if the
# install cannot find the packages.
apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1 || {
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null
}
echo "browser: $(chromium --version 2>/dev/null | head -1) installed"
