#!/usr/bin/env bash
# Build etcd_fdw and install it into one PostgreSQL major:
#   bash scripts/install.sh [--pg 15|16|17|18]
# 15 (the default) is the system PostgreSQL; 16, 17 and 18 are the wheels that
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
# ETCD_FDW_DENY_WARNINGS=1 (scripts/test.sh): a compiler warning fails the
# install (only what was compiled now is seen: a cached build is clean).
warnings=$(grep -cE '^(\x1b\[[0-9;]*m)*warning' /tmp/etcd_fdw-install-$$.log || true)
if ((rc == 0 && warnings > 0)) && [[ "${ETCD_FDW_DENY_WARNINGS:-0}" == 1 ]]; then
  grep -A8 -E '^(\x1b\[[0-9;]*m)*warning' /tmp/etcd_fdw-install-$$.log | head -n 60
  echo "$warnings compiler warning(s) building for PostgreSQL $PG_MAJOR" >&2
  rc=1
fi
rm -f /tmp/etcd_fdw-install-$$.log
((rc == 0)) || exit $rc
# pgrx installs the current version's script and the update scripts of sql/;
# the previous releases' install scripts (sql/etcd_fdw--X.Y.Z.sql) let
# CREATE EXTENSION etcd_fdw VERSION 'X.Y.Z' start from an older release.
for f in sql/etcd_fdw--*.sql; do  # install scripts only (one "--")
  if [[ "$f" =~ ^sql/etcd_fdw--[0-9.]+\.sql$ ]]; then install -m 644 "$f" "$("$pg_config" --sharedir)/extension/"; fi
done
