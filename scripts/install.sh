#!/usr/bin/env bash
# Build etcd_fdw and install it into the system PostgreSQL 15.
# PROFILE=release for an optimised build (the default is debug).
set -euo pipefail
cd "$(dirname "$0")/.."
flag=()
[[ "${PROFILE:-debug}" == release ]] && flag=(--release)
echo "==> cargo pgrx install ${flag[*]:-} (PostgreSQL 15)"
cargo pgrx install "${flag[@]}" --pg-config /usr/bin/pg_config 2>&1 | grep -Ev '^\s*(Compiling|Checking)' | tail -n 5
