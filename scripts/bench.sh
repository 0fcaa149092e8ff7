#!/usr/bin/env bash
# Benchmark etcd_fdw against a raw etcd client (issue 6).
#
#   bash scripts/bench.sh            # sizes 10k, 100k, 1M  (~15-20 min on 2 cores)
#   bash scripts/bench.sh --quick    # sizes 10k, 100k      (a few minutes)
#   bash scripts/bench.sh --sizes 10k,50k --reps 3 ...   (see bench/run.py --help)
#
# Sets up the machine, installs a RELEASE build of the extension into the
# system PostgreSQL 15 (replacing a debug build the tests may have
# installed), builds the raw client, then runs bench/run.py, which starts its
# own etcd and PostgreSQL and writes bench/results/RESULTS.md and scan.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PROFILE=release bash scripts/install.sh
echo "==> cargo build --release -p etcd_rawclient"
cargo build --release -p etcd_rawclient 2>&1 | grep -Ev '^\s*(Compiling|Checking)' | tail -n 5
echo "==> python3 bench/run.py $*"
exec python3 bench/run.py "$@"
