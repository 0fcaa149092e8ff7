#!/usr/bin/env bash
# RUSTC_WRAPPER for scripts/check-pg17.sh: compiles pgrx-pg-sys with
# `--cfg docsrs`, so that it uses the PostgreSQL 17 bindings pgrx ships
# instead of generating them from a PostgreSQL 17 we do not have.
rustc=$1
shift
for a in "$@"; do
  [[ "$a" == pgrx_pg_sys ]] && exec "$rustc" "$@" --cfg docsrs
done
exec "$rustc" "$@"
