#!/usr/bin/env bash
# Installs the Debian packages the tests drive (make test-deps; APT_TEST_PACKAGES in the Makefile)
# when they are missing. Never fails the build: a package that cannot be installed (no apt-get,
# not root, no network) is reported here, and the tests that need it skip saying which one.
set -uo pipefail
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0
if ! command -v apt-get >/dev/null; then
  echo "test-deps: apt-get not found; not installed: ${missing[*]} (the tests that need them will be skipped)"
  exit 0
fi
sudo=()
if ((EUID != 0)); then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    echo "test-deps: not root and no sudo; not installed: ${missing[*]} (the tests that need them will be skipped)"
    exit 0
  fi
fi
echo "test-deps: installing ${missing[*]}"
if ! { "${sudo[@]}" apt-get update -q && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; }; then
  echo "test-deps: apt-get failed; the tests that need ${missing[*]} will be skipped"
fi
exit 0
