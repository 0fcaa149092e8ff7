#!/usr/bin/env bash
# Type-check etcd_fdw for PostgreSQL 17 (no PostgreSQL 17 is available to
# this project's machines, so it is built nowhere and tested nowhere; this
# keeps the code compiling against pgrx's bundled 17 bindings).  Warnings
# are errors.  Uses its own target directory (target/pg17-check).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> cargo check --features pg17 (pgrx's bundled bindings)"
log=$(mktemp)
rc=0
RUSTC_WRAPPER=$PWD/scripts/rustc-docsrs.sh DOCS_RS=1 CARGO_TARGET_DIR=target/pg17-check \
  RUSTFLAGS="${RUSTFLAGS:-} -D warnings" \
  cargo check -q --no-default-features --features pg17 >"$log" 2>&1 || rc=$?
grep -Ev '^\s*(Compiling|Checking)' "$log" | tail -n 40 || true
rm -f "$log"
exit $rc
