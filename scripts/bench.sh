#!/usr/bin/env bash
# Benchmark etcd_fdw against a raw etcd client (issue 6).
#
#   bash scripts/bench.sh            # sizes 10k, 100k, 1M  (~15-20 min on 2 cores)
#   bash scripts/bench.sh --quick    # sizes 10k, 100k      (a few minutes)
#   bash scripts/bench.sh --sizes 10k,50k --reps 3 ...   (see bench/run.py --help)
#   bash scripts/bench.sh --pg 18    # against PostgreSQL 18 (or 16, 17); default 15
#
# Sets up the machine, installs a RELEASE build of the extension into that
# PostgreSQL (replacing a debug build the tests may have installed), builds
# the raw client, then runs bench/run.py, which starts its own etcd and
# PostgreSQL and writes bench/results/RESULTS.md and scan.svg (for 16 to 18:
# bench/results/pgNN/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/pg.sh
parse_pg_arg "$@"
set -- "${PG_ARGS[@]+"${PG_ARGS[@]}"}"
export ETCD_FDW_PG=$PG_MAJOR
PROFILE=release bash scripts/install.sh --pg "$PG_MAJOR"
echo "==> cargo build --release -p etcd_rawclient"
cargo build --release -p etcd_rawclient 2>&1 | grep -Ev '^\s*(Compiling|Checking)' | tail -n 5
echo "==> python3 bench/run.py $*"
exec python3 bench/run.py "$@"
