#!/usr/bin/env bash
# README command 2: set up the machine, then run every test: the pure-Rust
# unit tests, then the integration tests against throwaway PostgreSQL 15
# clusters and etcd 3.4.23 / 3.5.1 servers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> unit tests (cargo test -p etcd_fdw_core)"
cargo test -q -p etcd_fdw_core 2>&1 | grep -Ev '^\s*(Compiling|Downloaded|Downloading)'
echo "==> build the benchmark's raw client (bench/rawclient)"
cargo build -q -p etcd_rawclient
bash scripts/install.sh
echo "==> integration tests (pytest)"
python3 -m pytest tests -q -p no:cacheprovider "$@"
