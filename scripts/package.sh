#!/usr/bin/env bash
# Build etcd_fdw for an existing PostgreSQL and pack the files to copy into
# it as a tarball under target/:
#   bash scripts/package.sh --pg-config /path/to/pg_config [--debug]
# The tarball holds lib/etcd_fdw.so, share/extension/etcd_fdw.control and the
# SQL scripts (install and upgrade), and an install.sh that copies them into
# `pg_config --pkglibdir` and `pg_config --sharedir`/extension.  Prints the
# tarball's path on its last line.  Supported majors: 15, 16, 17 and 18, all
# built and tested (the crate's features pg15 to pg18; 13 and 14 lack FDW
# routine fields etcd_fdw sets).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pg.sh
pg_config=""
profile=()
while (($#)); do
  case "$1" in
    --pg-config) pg_config=${2:?--pg-config needs a path}; shift 2 ;;
    --pg-config=*) pg_config=${1#--pg-config=}; shift ;;
    --debug) profile=(--debug); shift ;;
    *) echo "usage: $0 --pg-config PATH [--debug]" >&2; exit 2 ;;
  esac
done
[[ -n "$pg_config" ]] || { echo "usage: $0 --pg-config PATH [--debug]" >&2; exit 2; }
[[ -x "$pg_config" ]] || { echo "$pg_config: not an executable pg_config" >&2; exit 2; }
pg_config=$(realpath "$pg_config")
major=$("$pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
version=$(sed -nE 's/^version = "([^"]+)"/\1/p' Cargo.toml | head -1)

# pgrx builds only for majors its PGRX_HOME lists: ours for the majors we
# test (given their pg_config or, for 17, the wheel's, whose headers come
# from elsewhere: scripts/pg.sh), else a PGRX_HOME of its own for this
# pg_config.
pgrx_home=""
build_pg_config=$pg_config
for m in "${PG_MAJORS[@]}"; do
  for c in "$(pg_config_of "$m")" "$(pg_bindir_of "$m")/pg_config"; do
    if [[ "$(realpath "$c" 2>/dev/null)" == "$pg_config" ]]; then
      pgrx_home=$(pgrx_home_of "$m")
      build_pg_config=$(pg_config_of "$m")
    fi
  done
done
if [[ -z "$pgrx_home" ]]; then
  pgrx_home=$PWD/target/pgrx-home-pg$major
  mkdir -p "$pgrx_home"
  printf '[configs]\npg%s = "%s"\n' "$major" "$pg_config" >"$pgrx_home/config.toml"
fi

stage=target/package/pg$major
name=etcd_fdw-$version-pg$major-$(uname -m)-linux
echo "==> cargo pgrx package ${profile[*]:-} (PostgreSQL $major: $build_pg_config)"
rm -rf "$stage"
PGRX_HOME=$pgrx_home cargo pgrx package "${profile[@]}" --pg-config "$build_pg_config" \
  --no-default-features --features "pg$major" --out-dir "$stage" 2>&1 \
  | grep -Ev '^\s*(Compiling|Checking)' | tail -n 3

# cargo pgrx package mirrors the absolute install paths: flatten them.
rm -rf "target/package/$name"
mkdir -p "target/package/$name/lib" "target/package/$name/share/extension"
cp "$stage$("$pg_config" --pkglibdir)/etcd_fdw.so" "target/package/$name/lib/"
cp "$stage$("$pg_config" --sharedir)"/extension/etcd_fdw* "target/package/$name/share/extension/"
for f in sql/etcd_fdw--*.sql; do  # install scripts only (one "--")
  if [[ "$f" =~ ^sql/etcd_fdw--[0-9.]+\.sql$ ]]; then install -m 644 "$f" "target/package/$name/share/extension/"; fi
done
cat >"target/package/$name/install.sh" <<'INSTALL'
#!/bin/sh
# Copy etcd_fdw into the PostgreSQL whose pg_config is given (or first in PATH).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
pg_config=${1:-pg_config}
built=@MAJOR@
major=$("$pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
if [ "$major" != "$built" ]; then
  echo "this package is built for PostgreSQL $built, $pg_config is PostgreSQL $major" >&2
  exit 1
fi
install -m 755 "$here/lib/etcd_fdw.so" "$("$pg_config" --pkglibdir)/"
install -m 644 "$here"/share/extension/* "$("$pg_config" --sharedir)/extension/"
echo "etcd_fdw installed into $("$pg_config" --pkglibdir) and $("$pg_config" --sharedir)/extension"
INSTALL
sed -i "s/@MAJOR@/$major/" "target/package/$name/install.sh"
chmod 755 "target/package/$name/install.sh"
tar -C target/package -czf "target/$name.tar.gz" "$name"
echo "target/$name.tar.gz"
