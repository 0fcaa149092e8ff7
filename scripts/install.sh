#!/usr/bin/env bash
# Build etcd_fdw and install it into one PostgreSQL major:
#   bash scripts/install.sh [--pg 15|16|18]
# 15 (the default) is the system PostgreSQL; 16 and 18 are the wheels that
# scripts/setup.sh unpacks under .pg/.  PROFILE=release for an optimised
# build (the default is debug).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pg.sh
parse_pg_arg "$@"
flag=()
[[ "${PROFILE:-debug}" == release ]] && flag=(--release)
pg_config=$(pg_config_of "$PG_MAJOR")
echo "==> cargo pgrx install ${flag[*]:-} (PostgreSQL $PG_MAJOR: $pg_config)"
set +e
PGRX_HOME=$(pgrx_home_of "$PG_MAJOR") cargo pgrx install "${flag[@]}" --pg-config "$pg_config" \
  --no-default-features --features "pg$PG_MAJOR" >/tmp/etcd_fdw-install-$$.log 2>&1
rc=$?
set -e
grep -Ev '^\s*(Compiling|Checking)' /tmp/etcd_fdw-install-$$.log | tail -n "$( ((rc)) && echo 40 || echo 5)"
rm -f /tmp/etcd_fdw-install-$$.log
((rc == 0)) || exit $rc
# pgrx installs the current version's script and the update scripts of sql/;
# the previous releases' install scripts (sql/etcd_fdw--X.Y.Z.sql) let
# CREATE EXTENSION etcd_fdw VERSION 'X.Y.Z' start from an older release.
for f in sql/etcd_fdw--*.sql; do  # install scripts only (one "--")
  if [[ "$f" =~ ^sql/etcd_fdw--[0-9.]+\.sql$ ]]; then install -m 644 "$f" "$("$pg_config" --sharedir)/extension/"; fi
done
