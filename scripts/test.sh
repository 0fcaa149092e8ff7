#!/usr/bin/env bash
# README command 2: set up the machine, then run every test: the pure-Rust
# unit tests once, a type-check for PostgreSQL 17 (scripts/check-pg17.sh),
# then builds without warnings and runs the integration tests against throwaway PostgreSQL
# clusters and etcd 3.4.23 / 3.5.1 servers on each PostgreSQL major:
#   15 (Debian) and 18 (wheel): the whole suite;
#   16 (wheel): the spec example, options, pushdown differential, writes,
#               upgrade and packaging tests.
# Extra arguments go to every pytest run.  PG_MAJORS_TO_TEST="15 18" restricts
# the majors.  A failure on one major fails the run and names the major.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/pg.sh
majors=(${PG_MAJORS_TO_TEST:-15 18 16})

echo "==> unit tests (cargo test -p etcd_fdw_core)"
cargo test -q -p etcd_fdw_core 2>&1 | grep -Ev '^\s*(Compiling|Downloaded|Downloading)'
echo "==> build the benchmark's raw client (bench/rawclient)"
cargo build -q -p etcd_rawclient
bash scripts/check-pg17.sh
export ETCD_FDW_DENY_WARNINGS=1

declare -A suite=(
  [15]="tests"
  [18]="tests"
  [16]="tests/test_basic.py tests/test_options.py tests/test_pushdown.py tests/test_writes.py tests/test_upgrade.py tests/test_package.py"
)
failed=()
for major in "${majors[@]}"; do
  echo "==> PostgreSQL $major: build and install"
  if ! bash scripts/install.sh --pg "$major"; then
    failed+=("$major (build)"); continue
  fi
  package=""
  if [[ $major == 16 ]]; then
    echo "==> PostgreSQL $major: scripts/package.sh --debug"
    package=$(bash scripts/package.sh --pg-config "$(pg_config_of "$major")" --debug | tail -n 1) || {
      failed+=("$major (package)"); continue; }
  fi
  echo "==> PostgreSQL $major: integration tests (pytest ${suite[$major]})"
  # shellcheck disable=SC2086
  if ! ETCD_FDW_PG=$major ETCD_FDW_PACKAGE=$package \
      python3 -m pytest ${suite[$major]} -q -p no:cacheprovider "$@"; then
    failed+=("$major")
  fi
done
if ((${#failed[@]})); then
  echo "FAILED on PostgreSQL ${failed[*]}" >&2
  exit 1
fi
echo "==> all tests passed on PostgreSQL ${majors[*]}"
