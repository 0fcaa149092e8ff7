#!/usr/bin/env bash
# Chaos run: reads and writes through etcd_fdw against a 3-member etcd cluster
# (3.4.23; --etcd-version etcd35 for the matrix's 3.5) while members are
# killed/restarted and paused/continued; checks
# that nothing acknowledged is lost, no read is wrong, no backend crashes.
#
#   bash scripts/chaos.sh                   # 120 s of load and faults
#   bash scripts/chaos.sh --duration 30     # the short form (tests/test_chaos.py)
#   bash scripts/chaos.sh --help            # the knobs (chaos/run.py)
#
# Uses the etcd_fdw already installed into the PostgreSQL under test
# (ETCD_FDW_PG=15|16|17|18, default 15).  Prints a table and writes
# chaos/results/summary.{txt,json} plus the PostgreSQL and etcd logs;
# exits 1 when anything was lost, a result was wrong, or a backend crashed.
set -euo pipefail
cd "$(dirname "$0")/.."
# Set up and install first, like test.sh/bench.sh (tests/test_chaos.py sets
# ETCD_FDW_SKIP_INSTALL=1: the suite runs against what test.sh installed).
if [[ "${ETCD_FDW_SKIP_INSTALL:-0}" != 1 ]]; then
  bash scripts/setup.sh
  bash scripts/install.sh --pg "${ETCD_FDW_PG:-15}"
fi
exec python3 chaos/run.py "$@"
