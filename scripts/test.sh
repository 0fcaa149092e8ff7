#!/usr/bin/env bash
# README command 2: set up the machine, then run every test: the pure-Rust
# unit and property tests once, then builds without warnings for each major
# and runs the integration tests against throwaway PostgreSQL clusters and
# etcd 3.4.23 (Debian 12) and 3.5.x (Debian trixie, under .pg/) servers:
#   15 (Debian) and 18 (wheel): the whole suite, the two majors' runs side
#       by side (each starts its own servers on free ports) to keep the wall
#       time down on two cores;
#   then 16 and 17 (wheels), side by side: the spec example, options,
#       pushdown differential, writes, everyday functions (put mode,
#       get/put/delete, CONTEXT lines), upgrade and packaging tests (the
#       tarball of scripts/package.sh --debug into a copy of the wheel),
#       invalid_values, COPY's hints, EXPLAIN's labels, the first-day
#       tests (etcd auth toggled, outages), the watch catch-up and the
#       Patroni tests (real Patroni nodes); 17 also the transaction tests.
# Extra arguments go to every pytest run.  PG_MAJORS_TO_TEST="15 18"
# restricts the majors.  A failure on one major fails the run and names the
# major; its log is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/pg.sh
majors=(${PG_MAJORS_TO_TEST:-15 18 16 17})
has() { [[ " ${majors[*]} " == *" $1 "* ]]; }

echo "==> unit and property tests (cargo test -p etcd_fdw_core)"
cargo test -q -p etcd_fdw_core 2>&1 | grep -Ev '^\s*(Compiling|Downloaded|Downloading)'
echo "==> build the benchmark's raw client (bench/rawclient)"
cargo build -q -p etcd_rawclient
export ETCD_FDW_DENY_WARNINGS=1

declare -A suite=(
  [15]="tests"
  [18]="tests"
  [16]="tests/test_basic.py tests/test_options.py tests/test_pushdown.py tests/test_writes.py tests/test_everyday.py tests/test_upgrade.py tests/test_package.py tests/test_invalid_values.py tests/test_copy_hint.py tests/test_explain_labels.py tests/test_first_day.py tests/test_watch_catchup.py tests/test_patroni.py tests/test_commit_mode_option.py tests/test_grpc_proxy.py tests/test_cluster.py"
)
suite[17]="${suite[16]} tests/test_transactions.py"
failed=()
built=()
for major in "${majors[@]}"; do
  echo "==> PostgreSQL $major: build and install"
  if bash scripts/install.sh --pg "$major"; then built+=("$major"); else failed+=("$major (build)"); fi
done
# the tarballs test_package.py installs into a copy of the wheel (built
# here, one cargo build at a time, not inside the parallel pytest runs)
declare -A package=()
for major in 16 17 18; do
  if has "$major" && [[ " ${built[*]} " == *" $major "* ]]; then
    echo "==> PostgreSQL $major: scripts/package.sh --debug"
    package[$major]=$(bash scripts/package.sh --pg-config "$(pg_config_of "$major")" --debug | tail -n 1) ||
      failed+=("$major (package)")
  fi
done

logdir=$(mktemp -d /tmp/etcd_fdw-test.XXXXXX)
run_suite() {  # major -> runs pytest, output in $logdir/pgN.log
  local major=$1
  # shellcheck disable=SC2086
  ETCD_FDW_PG=$major ETCD_FDW_PACKAGE=${package[$major]:-} \
    python3 -m pytest ${suite[$major]} -q -p no:cacheprovider "${@:2}" >"$logdir/pg$major.log" 2>&1
}
report() {  # major rc
  if (($2 == 0)); then
    echo "==> PostgreSQL $1: $(tail -n 1 "$logdir/pg$1.log")"
  else
    echo "==> PostgreSQL $1: FAILED; its log:"
    cat "$logdir/pg$1.log"
    failed+=("$1")
  fi
}
run_side_by_side() {  # majors...: their suites at the same time
  local -A pids=()
  local major rc
  for major in "$@"; do
    if has "$major" && [[ " ${built[*]} " == *" $major "* ]]; then
      echo "==> PostgreSQL $major: integration tests (pytest ${suite[$major]}), log $logdir/pg$major.log"
      run_suite "$major" "${PYTEST_ARGS[@]+"${PYTEST_ARGS[@]}"}" &
      pids[$major]=$!
    fi
  done
  for major in "$@"; do
    [[ -n "${pids[$major]:-}" ]] || continue
    rc=0; wait "${pids[$major]}" || rc=$?
    report "$major" "$rc"
  done
}
PYTEST_ARGS=("$@")
# the whole suite on 15 and 18 side by side, then 16's and 17's parts
run_side_by_side 15 18
run_side_by_side 16 17
if ((${#failed[@]})); then
  echo "FAILED on PostgreSQL ${failed[*]}" >&2
  exit 1
fi
echo "==> all tests passed on PostgreSQL ${majors[*]}"
