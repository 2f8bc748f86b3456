#!/usr/bin/env bash
# Make sure PostgreSQL server binaries exist: tests/postgres_server.py runs a throwaway cluster
# from /usr/lib/postgresql/*/bin. Called by test.sh, so a fresh CI machine gets them too.
# Idempotent: when the binaries are there it only checks for them, without calling apt-get.
# It never starts the system cluster; the tests run their own on 127.0.0.1.
set -euo pipefail

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "install_postgres.sh: no PostgreSQL server found; install Debian's 'postgresql' package" \
    "(sudo apt-get install postgresql), or the Postgres tests skip locally and fail on CI" >&2
  exit 0
fi

echo "install_postgres.sh: installing PostgreSQL (apt-get install postgresql)..." >&2
start=$SECONDS

# Keep the package's postinst from starting the system cluster (it would take port 5432):
# invoke-rc.d and deb-systemd-invoke skip services while policy-rc.d exits 101.
# Only add one when the machine has none (Docker images ship their own), and remove it after.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  trap 'rm -f "$policy"' EXIT
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
fi

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-qq -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
apt-get "${apt_opts[@]}" update
apt-get "${apt_opts[@]}" install -y --no-install-recommends postgresql >/dev/null

if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  echo "install_postgres.sh: apt-get installed postgresql but no initdb is in" \
    "/usr/lib/postgresql/*/bin" >&2
  exit 1
fi
echo "install_postgres.sh: PostgreSQL installed in $((SECONDS - start)) s" >&2
