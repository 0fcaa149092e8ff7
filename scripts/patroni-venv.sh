#!/usr/bin/env bash
# Patroni for tests/test_patroni.py: a virtualenv under .pg/patroni-venv with
# patroni[etcd3,psycopg3] 4.1.5 (from PyPI).  Idempotent and quick when it is
# there; scripts/setup.sh runs it, and the tests call it when it is missing.
# Made with Debian's /usr/bin/python3: Patroni runs as the postgres OS user,
# and a venv of a python under root's home (pyenv) points its interpreter
# there, where postgres cannot go.  Prints the venv's bin directory.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pg.sh
PATRONI_VERSION=4.1.5
venv=$PG_LOCAL/patroni-venv
if [[ "$("$venv/bin/patroni" --version 2>/dev/null)" != "patroni $PATRONI_VERSION" ]]; then
  echo "==> /usr/bin/python3 -m venv $venv; pip install patroni[etcd3,psycopg3]==$PATRONI_VERSION" >&2
  rm -rf "${venv:?}"
  mkdir -p "$PG_LOCAL"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "patroni[etcd3,psycopg3]==$PATRONI_VERSION" >&2
  "$venv/bin/patroni" --version >&2
fi
echo "$venv/bin"
