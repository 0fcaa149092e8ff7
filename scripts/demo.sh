#!/usr/bin/env bash
# README command 1: set up the machine, build and install etcd_fdw into the
# system PostgreSQL 15 (or `--pg 16|17|18`, the wheels under .pg/), start a
# throwaway etcd (the test matrix's 3.5, under .pg/) and a throwaway
# PostgreSQL cluster (loopback only, free ports, data under $DEMO_DIR), put
# sample keys and run the specification's example.  They keep running so you can play;
# `bash scripts/demo.sh stop` stops them and removes the data.  The build is
# a debug one (quick to compile); PROFILE=release bash scripts/demo.sh
# installs an optimised one.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pg.sh
parse_pg_arg "$@"
set -- "${PG_ARGS[@]+"${PG_ARGS[@]}"}"
DEMO_DIR=${DEMO_DIR:-/tmp/etcd_fdw_demo}
PGBIN=$(pg_bindir_of "$PG_MAJOR")
ETCD=$(etcd_bindir_of etcd35)/etcd
ETCDCTL=$(etcd_bindir_of etcd35)/etcdctl
export ETCDCTL_API=3

stop() {
  if [[ -f "$DEMO_DIR/pg/postmaster.pid" ]]; then
    # the running demo's own pg_ctl (it may be another major's)
    local bin; bin=$(cat "$DEMO_DIR/pgbin" 2>/dev/null || echo "$PGBIN")
    runuser -u postgres -- "$bin/pg_ctl" -D "$DEMO_DIR/pg" -m fast stop >/dev/null 2>&1 || true
  fi
  if [[ -f "$DEMO_DIR/etcd.pid" ]]; then
    local pid; pid=$(cat "$DEMO_DIR/etcd.pid")
    kill "$pid" 2>/dev/null || true
    # wait for it to exit (it holds its data directory until then)
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$DEMO_DIR"
}

if [[ "${1:-}" == stop ]]; then
  stop
  echo "demo stopped, $DEMO_DIR removed"
  exit 0
fi

bash scripts/setup.sh
bash scripts/install.sh --pg "$PG_MAJOR"
stop
mkdir -p "$DEMO_DIR"
chown postgres: "$DEMO_DIR"
echo "$PGBIN" >"$DEMO_DIR/pgbin"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ETCD_PORT=$(free_port); PEER_PORT=$(free_port); PG_PORT=$(free_port)
ENDPOINT="127.0.0.1:$ETCD_PORT"

ETCD_CMD=("$ETCD" --name demo --data-dir "$DEMO_DIR/etcd"
  --listen-client-urls "http://$ENDPOINT" --advertise-client-urls "http://$ENDPOINT"
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT"
  --initial-cluster "demo=http://127.0.0.1:$PEER_PORT")
echo "==> starting etcd $("$ETCD" --version | head -1 | awk '{print $3}') on $ENDPOINT"
"${ETCD_CMD[@]}" >"$DEMO_DIR/etcd.log" 2>&1 &
echo $! >"$DEMO_DIR/etcd.pid"
healthy=0
for _ in $(seq 100); do
  if "$ETCDCTL" --endpoints "$ENDPOINT" endpoint health >/dev/null 2>&1; then healthy=1; break; fi
  sleep 0.1
done
if ((!healthy)); then
  echo "etcd did not become healthy within 10 s; its log ($DEMO_DIR/etcd.log):" >&2
  tail -n 20 "$DEMO_DIR/etcd.log" >&2
  exit 1
fi
"$ETCDCTL" --endpoints "$ENDPOINT" put bar baz >/dev/null
"$ETCDCTL" --endpoints "$ENDPOINT" put foo bar >/dev/null

echo "==> starting PostgreSQL $PG_MAJOR on 127.0.0.1:$PG_PORT (socket in $DEMO_DIR)"
runuser -u postgres -- "$PGBIN/initdb" -D "$DEMO_DIR/pg" -U postgres -A trust -E UTF8 --locale C >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DEMO_DIR/pg" -l "$DEMO_DIR/pg.log" -w \
  -o "-p $PG_PORT -k $DEMO_DIR -c listen_addresses=127.0.0.1" start >/dev/null

PSQL=(runuser -u postgres -- "$PGBIN/psql" -X -h "$DEMO_DIR" -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1)
echo "==> the specification's example"
"${PSQL[@]}" -e <<SQL
create extension etcd_fdw;
CREATE foreign data wrapper etcd_fdw handler etcd_fdw_handler validator etcd_fdw_validator;
CREATE SERVER my_etcd_server foreign data wrapper etcd_fdw options (connstr '$ENDPOINT');
CREATE foreign table test (key text, value text) server my_etcd_server options(rowid_column 'key');
SELECT * FROM test;
SQL

# the command line that restarts this etcd on the same data and ports
restart_etcd="$(printf '%q ' "${ETCD_CMD[@]}")>>$DEMO_DIR/etcd.log 2>&1 & echo \$! >$DEMO_DIR/etcd.pid"
profile=${PROFILE:-debug}
cat <<EOF2

The demo is running:
  psql:     runuser -u postgres -- $PGBIN/psql -h $DEMO_DIR -p $PG_PORT postgres
  etcdctl:  ETCDCTL_API=3 $ETCDCTL --endpoints $ENDPOINT get --prefix ''
  data:     etcd $DEMO_DIR/etcd, PostgreSQL $DEMO_DIR/pg
  logs:     etcd $DEMO_DIR/etcd.log, PostgreSQL $DEMO_DIR/pg.log
  etcd:     pid $(cat "$DEMO_DIR/etcd.pid"); to stop it (an outage): kill \$(cat $DEMO_DIR/etcd.pid)
            to start it again on the same data and port:
            $restart_etcd
  build:    etcd_fdw was installed into PostgreSQL $PG_MAJOR as a $profile build$(
    [[ $profile == release ]] || printf '%s' " (quick to compile, slower
            to run); for an optimised one: PROFILE=release bash scripts/demo.sh --pg $PG_MAJOR")
  stop:     bash scripts/demo.sh stop   (stops both and removes $DEMO_DIR)
EOF2
