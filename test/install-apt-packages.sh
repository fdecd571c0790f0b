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
# Debian's postgresql creates a cluster "main" on first install (and starts it where services
# run). The tests start throwaway servers of their own (test/helpers/postgres.ts): a cluster made
# by this install is stopped and dropped, so nothing is left running or listening on 5432.
clusters() { command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | awk '{ print $1 "/" $2 }'; }
before=$(clusters)
echo "test-deps: installing ${missing[*]}"
if ! { "${sudo[@]}" apt-get update -q && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; }; then
  echo "test-deps: apt-get failed; the tests that need ${missing[*]} will be skipped"
fi
for c in $(clusters); do
  if ! grep -qxF "$c" <<<"$before"; then
    echo "test-deps: dropping PostgreSQL cluster $c made by the install (the tests start their own servers)"
    "${sudo[@]}" pg_dropcluster --stop "${c%%/*}" "${c#*/}" || echo "test-deps: could not drop cluster $c"
  fi
done
exit 0
