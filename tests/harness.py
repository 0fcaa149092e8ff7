"""Process/cluster management for the etcd_fdw integration tests.

Everything here is plain Python (no pytest fixtures); conftest.py wraps it
into fixtures, and the test modules import the small helpers at the bottom
(expect_error, err_text, QueryThread, ...).

Design notes
------------
* PostgreSQL refuses to run as root, so when the tests run as root every
  PostgreSQL binary is run as the ``postgres`` OS user via ``runuser``; the
  temporary directories it needs are chowned to that user.
* etcd is started directly (no wrapper process), so ``EtcdServer.pid`` is
  the real etcd pid and SIGSTOP/SIGCONT act on the server itself.
* Every started process / temp dir is registered with an atexit hook, so a
  crashed or interrupted pytest run does not leave clusters behind.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request

import psycopg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pg_bindir(major: str) -> str:
    """The bin directory of PostgreSQL `major` (15, 16, 17 or 18), from
    scripts/pg.sh, the one place that knows where each major lives."""
    p = subprocess.run(
        ["bash", "-c", 'source scripts/pg.sh && pg_bindir_of "$1"', "_", str(major)],
        cwd=REPO, capture_output=True, text=True,
    )
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip() or f"unknown PostgreSQL major {major}")
    return p.stdout.strip()


def use_pg(major: str | None = None, bindir: str | None = None):
    """Select the PostgreSQL the tests run against: a major (ETCD_FDW_PG or
    pytest --pg; default 15) or an explicit bin directory (PG_BIN)."""
    global PG_MAJOR, PG_BIN, LINGUISTIC_COLLATION
    PG_BIN = bindir or pg_bindir(major or "15")
    version = subprocess.run(
        [os.path.join(PG_BIN, "pg_config"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    PG_MAJOR = int(version.split()[1].split(".")[0])
    configure = subprocess.run(
        [os.path.join(PG_BIN, "pg_config"), "--configure"], capture_output=True, text=True
    ).stdout
    # A collation that does not sort by bytes: ICU where the server has it
    # (Debian's 15), else glibc's en_US.UTF-8 (scripts/setup.sh generates
    # it; the wheels' 16, 17 and 18 are built --without-icu).
    LINGUISTIC_COLLATION = "en_US" if "--without-icu" in configure else "en-x-icu"


PG_MAJOR = 15
PG_BIN = ""
LINGUISTIC_COLLATION = "en-x-icu"
use_pg(os.environ.get("ETCD_FDW_PG"), os.environ.get("PG_BIN"))
PG_OS_USER = os.environ.get("PG_OS_USER", "postgres")
KEEP_TMP = os.environ.get("ETCD_FDW_TEST_KEEP_TMP") == "1"

# --------------------------------------------------------------------------
# generic helpers
# --------------------------------------------------------------------------

_cleanups: list = []
_cleanup_lock = threading.Lock()


def register_cleanup(fn):
    """Run fn at interpreter exit (unless unregistered earlier)."""
    with _cleanup_lock:
        _cleanups.append(fn)
    return fn


def unregister_cleanup(fn):
    with _cleanup_lock:
        try:
            _cleanups.remove(fn)
        except ValueError:
            pass


@atexit.register
def _run_cleanups():
    while True:
        with _cleanup_lock:
            if not _cleanups:
                return
            fn = _cleanups.pop()
        try:
            fn()
        except Exception:  # pragma: no cover - best effort
            pass


# Ports.  Test processes run side by side (scripts/test.sh runs two majors'
# suites at once), and every one of them starts servers on loopback ports.
# A port found free with bind(port 0) and then handed to a server can be
# taken in between by the other suite's server, or by any outgoing
# connection's local port (those come from the same ephemeral range); a
# server that then reaches "the etcd on port P" may reach someone else's.
# So each test process takes a block of its own below the ephemeral range
# (a slot, held with an flock on /tmp/etcdfdw-ports.N.lock for the life of
# the process) and hands its ports out in order, never the same one twice
# while the block lasts, skipping any port something else listens on.
_PORT_BASE = 10000
_PORT_SLOTS = 8
_port_lock = threading.Lock()
_port_state: dict = {}


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_block():
    """(first, end) of this process's block of ports, taking a slot first."""
    if "block" not in _port_state:
        size = (_ephemeral_low() - _PORT_BASE) // _PORT_SLOTS
        if size < 200:
            raise RuntimeError(
                f"the ephemeral port range starts at {_ephemeral_low()}: "
                f"no room below it for {_PORT_SLOTS} blocks of test ports"
            )
        for slot in range(_PORT_SLOTS):
            fd = os.open(f"/tmp/etcdfdw-ports.{slot}.lock", os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            first = _PORT_BASE + slot * size
            _port_state.update(block=(first, first + size), next=first, fd=fd)
            break
        else:
            raise RuntimeError(
                f"all {_PORT_SLOTS} test port slots (/tmp/etcdfdw-ports.N.lock) are held "
                "by other test processes"
            )
    return _port_state["block"]


def _port_is_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_ports(n=1):
    """Return n distinct free TCP ports on 127.0.0.1 from this process's own
    block (see above): no other test process is handed the same ones."""
    with _port_lock:
        first, end = _port_block()
        out = []
        tried = 0
        while len(out) < n:
            if tried >= end - first:
                raise RuntimeError(f"no free port left in the test port block {first}-{end - 1}")
            port = _port_state["next"]
            _port_state["next"] = port + 1 if port + 1 < end else first
            tried += 1
            if _port_is_free(port):
                out.append(port)
        return out


def free_port():
    return free_ports(1)[0]


def tcp_sockets(proc="/proc"):
    """Every TCP socket of the kernel's tables under `proc` (`/proc`, or
    `/proc/PID` for a process's network namespace) as (local port, remote
    port, state, inode); state in hex as the table has it: 0A LISTEN,
    01 ESTABLISHED, 08 CLOSE_WAIT."""
    for table in (f"{proc}/net/tcp", f"{proc}/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            yield (int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16),
                   fields[3], fields[9])


def connections_to(port):
    """How many ESTABLISHED TCP connections go to port `port` (any process)."""
    return sum(1 for _, remote, state, _ in tcp_sockets() if state == "01" and remote == port)


def listening_pids(port):
    """The pids of the processes that hold a socket listening on
    127.0.0.1:port (or on any address), read from /proc."""
    return _pids_holding({f"socket:[{inode}]" for local, _, state, inode in tcp_sockets()
                          if state == "0A" and local == port})


def _pids_holding(sockets):
    """The pids with a file descriptor on one of `sockets` ("socket:[inode]")."""
    pids = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in sockets:
                    pids.add(int(pid))
                    break
            except OSError:
                pass
    return pids


def file_tail(path, nbytes):
    """The last nbytes of a file (a process's log) as text; "" if unreadable."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - nbytes))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def process_state(pid):
    """The states (R, S, D, T, t, Z, ...) of every thread of a process, from
    /proc/PID/task/*/stat; empty once the process is gone."""
    states = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return states
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                # "pid (comm) S ...": comm may hold spaces and parentheses
                states.add(f.read().rsplit(")", 1)[1].split()[0])
        except (OSError, IndexError):
            pass
    return states


def sigstop_and_wait(pid, timeout=30.0):
    """SIGSTOP a process and return once every one of its threads is stopped
    (kill() returns when the signal is queued, before the threads stop: a
    request that arrives in between can still be answered)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while True:
        states = process_state(pid)
        if states and states <= {"T", "t"}:
            return
        if not states or "Z" in states:
            raise RuntimeError(f"process {pid} is gone: it cannot be stopped")
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} did not stop within {timeout} s (threads: {states})")
        time.sleep(0.001)


def _running_as_root():
    return os.geteuid() == 0


def _pg_ids():
    pw = pwd.getpwnam(PG_OS_USER)
    return pw.pw_uid, pw.pw_gid


def give_to_postgres(path, mode=None):
    """chown path to the postgres OS user (when running as root)."""
    if mode is not None:
        os.chmod(path, mode)
    if _running_as_root():
        uid, gid = _pg_ids()
        os.chown(path, uid, gid)


def rmtree_quiet(path):
    if path and not KEEP_TMP:
        shutil.rmtree(path, ignore_errors=True)


def run_pg_tool(args, cwd, check=True, timeout=120):
    """Run a PostgreSQL binary, as the postgres OS user if we are root."""
    cmd = list(args)
    if _running_as_root():
        cmd = ["runuser", "-u", PG_OS_USER, "--"] + cmd
    env = dict(os.environ)
    env.setdefault("LANG", "C.UTF-8")
    env["LC_ALL"] = "C.UTF-8"
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(
            f"command failed ({p.returncode}): {' '.join(cmd)}\n"
            f"stdout: {p.stdout.decode(errors='replace')}\n"
            f"stderr: {p.stderr.decode(errors='replace')}"
        )
    return p


def sql_literal(value):
    if isinstance(value, bool):
        value = "true" if value else "false"
    return "'" + str(value).replace("'", "''") + "'"


def sql_ident(name):
    return '"' + str(name).replace('"', '""') + '"'


def options_clause(options):
    """{'connstr': 'x', 'fetch_size': 2} -> " OPTIONS (connstr 'x', fetch_size '2')"."""
    opts = {k: v for k, v in options.items() if v is not None}
    if not opts:
        return ""
    return " OPTIONS (" + ", ".join(f"{k} {sql_literal(v)}" for k, v in opts.items()) + ")"


# --------------------------------------------------------------------------
# PostgreSQL cluster
# --------------------------------------------------------------------------


class PgCluster:
    """A throw-away PostgreSQL cluster in a temp dir.

    Listens on a unix socket in the temp dir and on 127.0.0.1:<free port>.
    """

    def __init__(self, bindir: str | None = None):
        self.bindir = bindir or PG_BIN
        self.base = tempfile.mkdtemp(prefix="etcdfdw-pg-")
        give_to_postgres(self.base, 0o755)
        self.datadir = os.path.join(self.base, "data")
        self.sockdir = self.base
        self.logfile = os.path.join(self.base, "postgres.log")
        self.port = None
        self.started = False
        self._cleanup = register_cleanup(self.destroy)

    # -- lifecycle ---------------------------------------------------------
    def start(self):
        run_pg_tool(
            [
                os.path.join(self.bindir, "initdb"),
                "-D", self.datadir,
                "-U", "postgres",
                "-A", "trust",
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            cwd=self.base,
        )
        last_err = None
        for _attempt in range(3):
            self.port = free_port()
            conf = f"""
# --- etcd_fdw test harness ---
listen_addresses = '127.0.0.1'
port = {self.port}
unix_socket_directories = '{self.sockdir}'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 100  # test_grpc_proxy holds 64 idle sessions at once
autovacuum = off
lc_messages = 'C'
log_line_prefix = '%m [%p] %d %u '
log_min_messages = warning
log_min_error_statement = error
restart_after_crash = on
"""
            with open(os.path.join(self.datadir, "postgresql.auto.conf"), "w") as f:
                f.write(conf)
            give_to_postgres(os.path.join(self.datadir, "postgresql.auto.conf"), 0o600)
            p = run_pg_tool(
                [
                    os.path.join(self.bindir, "pg_ctl"),
                    "-D", self.datadir,
                    "-l", self.logfile,
                    "-w", "-t", "60",
                    "start",
                ],
                cwd=self.base,
                check=False,
            )
            if p.returncode == 0:
                self.started = True
                return self
            last_err = p.stderr.decode(errors="replace") + "\n" + self.log_tail()
        raise RuntimeError(f"could not start PostgreSQL: {last_err}")

    def stop(self):
        if not self.started:
            return
        pg_ctl = os.path.join(self.bindir, "pg_ctl")
        try:
            p = run_pg_tool(
                [pg_ctl, "-D", self.datadir, "-m", "fast", "-w", "-t", "20", "stop"],
                cwd=self.base,
                check=False,
                timeout=40,
            )
            ok = p.returncode == 0
        except Exception:
            ok = False
        if not ok:
            try:
                run_pg_tool(
                    [pg_ctl, "-D", self.datadir, "-m", "immediate", "-w", "-t", "20", "stop"],
                    cwd=self.base,
                    check=False,
                    timeout=40,
                )
            except Exception:
                pass
            # last resort: SIGKILL the postmaster
            pidfile = os.path.join(self.datadir, "postmaster.pid")
            try:
                with open(pidfile) as f:
                    pid = int(f.readline().strip())
                os.kill(pid, signal.SIGKILL)
            except Exception:
                pass
        self.started = False

    def destroy(self):
        try:
            self.stop()
        finally:
            unregister_cleanup(self._cleanup)
            rmtree_quiet(self.base)

    # -- connections -------------------------------------------------------
    def conninfo(self, dbname="postgres", user="postgres", tcp=False):
        host = "127.0.0.1" if tcp else self.sockdir
        return f"host={host} port={self.port} dbname={dbname} user={user}"

    def connect(self, dbname="postgres", user="postgres", autocommit=True, retry_for=20.0):
        """Connect (autocommit). Retries while the server restarts after a crash."""
        deadline = time.monotonic() + retry_for
        while True:
            try:
                return psycopg.connect(
                    self.conninfo(dbname, user), autocommit=autocommit, connect_timeout=10
                )
            except psycopg.OperationalError as e:
                msg = str(e)
                transient = any(
                    s in msg
                    for s in (
                        "starting up",
                        "recovery mode",
                        "shutting down",
                        "No such file or directory",
                        "Connection refused",
                    )
                )
                if not transient or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    # -- logs --------------------------------------------------------------
    def log_size(self):
        try:
            return os.path.getsize(self.logfile)
        except OSError:
            return 0

    def log_since(self, offset, limit=16000):
        try:
            with open(self.logfile, "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return ""
        text = data.decode(errors="replace")
        if len(text) > limit:
            text = "...[truncated]...\n" + text[-limit:]
        return text

    def log_tail(self, nbytes=4000):
        size = self.log_size()
        return self.log_since(max(0, size - nbytes))


class TestDatabase:
    """A fresh database in the test cluster plus helpers.

    ``conn`` is an autocommit superuser (postgres) connection to it.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, cluster: PgCluster, name: str):
        self.cluster = cluster
        self.name = name
        self.conns: list = []
        self.roles: list = []
        admin = cluster.connect("postgres")
        try:
            admin.execute(f"CREATE DATABASE {sql_ident(name)}")
            # safety net: nothing in a test should hang forever
            admin.execute(f"ALTER DATABASE {sql_ident(name)} SET statement_timeout = '120s'")
        finally:
            admin.close()
        self.conn = self.connect()

    # -- connections -------------------------------------------------------
    def connect(self, user="postgres"):
        c = self.cluster.connect(self.name, user=user)
        self.conns.append(c)
        return c

    def second_connection(self):
        """Another superuser connection (e.g. to pg_cancel_backend the first)."""
        return self.connect()

    def role_connection(self, role, superuser=False, password=None):
        """Create (if needed) a LOGIN role and return a connection as it."""
        admin = self.cluster.connect(self.name)
        try:
            exists = admin.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)
            ).fetchone()
            if not exists:
                attrs = "LOGIN SUPERUSER" if superuser else "LOGIN NOSUPERUSER"
                if password:
                    attrs += f" PASSWORD {sql_literal(password)}"
                admin.execute(f"CREATE ROLE {sql_ident(role)} {attrs}")
                self.roles.append(role)
        finally:
            admin.close()
        return self.connect(user=role)

    # -- queries -----------------------------------------------------------
    def execute(self, sql, params=None, conn=None):
        return (conn or self.conn).execute(sql, params)

    def rows(self, sql, params=None, conn=None):
        cur = (conn or self.conn).execute(sql, params)
        return cur.fetchall() if cur.description is not None else []

    def scalar(self, sql, params=None, conn=None):
        cur = (conn or self.conn).execute(sql, params)
        row = cur.fetchone()
        return None if row is None else row[0]

    def backend_pid(self, conn=None):
        return self.scalar("SELECT pg_backend_pid()", conn=conn)

    # -- DDL helpers ---------------------------------------------------------
    def setup_fdw(self, conn=None):
        c = conn or self.conn
        c.execute("CREATE EXTENSION etcd_fdw")
        c.execute(
            "CREATE FOREIGN DATA WRAPPER etcd_fdw "
            "HANDLER etcd_fdw_handler VALIDATOR etcd_fdw_validator"
        )

    def create_server(self, name, connstr, conn=None, **options):
        opts = {"connstr": connstr}
        opts.update(options)
        self.execute(
            f"CREATE SERVER {sql_ident(name)} FOREIGN DATA WRAPPER etcd_fdw"
            + options_clause(opts),
            conn=conn,
        )

    def create_table(
        self, name, server, columns="key text, value text", rowid_column="key", conn=None, **options
    ):
        opts = {"rowid_column": rowid_column}
        opts.update(options)
        self.execute(
            f"CREATE FOREIGN TABLE {sql_ident(name)} ({columns}) SERVER {sql_ident(server)}"
            + options_clause(opts),
            conn=conn,
        )

    def create_user_mapping(self, server, user="CURRENT_USER", conn=None, **options):
        u = user if user.upper() in ("CURRENT_USER", "PUBLIC", "SESSION_USER") else sql_ident(user)
        self.execute(
            f"CREATE USER MAPPING FOR {u} SERVER {sql_ident(server)}" + options_clause(options),
            conn=conn,
        )

    # -- teardown ------------------------------------------------------------
    def drop(self):
        for c in self.conns:
            try:
                c.close()
            except Exception:
                pass
        self.conns = []
        try:
            admin = self.cluster.connect("postgres")
        except Exception:
            return
        try:
            admin.execute(f"DROP DATABASE IF EXISTS {sql_ident(self.name)} WITH (FORCE)")
            for r in self.roles:
                try:
                    admin.execute(f"DROP ROLE IF EXISTS {sql_ident(r)}")
                except psycopg.Error:
                    pass
        except psycopg.Error:
            pass
        finally:
            admin.close()


# --------------------------------------------------------------------------
# etcd
# --------------------------------------------------------------------------


def _etcd_installs():
    """{id: (version or None, bindir)} for the test matrix's etcds (etcd34,
    etcd35): where they live comes from scripts/pg.sh (etcd_bindir_of), the
    version from the binary itself (etcd --version; None when it does not
    run)."""
    p = subprocess.run(
        ["bash", "-c", 'source scripts/pg.sh && for i in "${ETCD_IDS[@]}"; do '
                       'printf "%s %s\\n" "$i" "$(etcd_bindir_of "$i")"; done'],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    out = {}
    for line in p.stdout.splitlines():
        etcd_id, bindir = line.split(" ", 1)
        version = None
        try:
            v = subprocess.run(
                [os.path.join(bindir, "etcd"), "--version"], capture_output=True, text=True, timeout=60
            ).stdout
        except (OSError, subprocess.SubprocessError):
            v = ""
        for vline in v.splitlines():
            if vline.startswith("etcd Version:"):
                version = vline.split(":", 1)[1].strip()
        out[etcd_id] = (version, bindir)
    return out


_ETCD = _etcd_installs()
ETCD_IDS = tuple(_ETCD)
# the version each etcd of the matrix reports (None: not installed)
ETCD_VERSION_OF = {i: v for i, (v, _d) in _ETCD.items()}
# e.g. {"3.4.23": "etcd34", "3.5.16": "etcd35"}: the installed ones
ETCD_VERSION_IDS = {v: i for i, v in ETCD_VERSION_OF.items() if v}
ETCD34 = ETCD_VERSION_OF.get("etcd34")  # Debian 12's etcd 3.4.23
ETCD35 = ETCD_VERSION_OF.get("etcd35")  # Debian trixie's etcd 3.5 (under .pg/)

# the auth etcd fixture grants user alice readwrite on this prefix only
AUTH_PREFIX = "auth/"
CAROL_PASSWORD = "Carol-Pw-9f2e1c"


def _etcd_missing(etcd_id):
    return RuntimeError(
        f"{etcd_id}: no etcd runs in {_ETCD[etcd_id][1]} (bash scripts/setup.sh installs it)"
    )


def etcd_binaries(version):
    """(etcd, etcdctl) absolute paths for an etcd version (ETCD34, ETCD35)."""
    etcd_id = ETCD_VERSION_IDS.get(version)
    if etcd_id is None:
        for i in ETCD_IDS:
            if not ETCD_VERSION_OF[i]:
                raise _etcd_missing(i)
        raise ValueError(f"unknown etcd version {version!r} (known: {', '.join(ETCD_VERSION_IDS)})")
    d = _ETCD[etcd_id][1]
    return os.path.join(d, "etcd"), os.path.join(d, "etcdctl")


def selected_etcd_versions():
    """Versions from $ETCD_VERSIONS (comma list of '3.4.23', '3.5', 'etcd34',
    ...; default: all of the matrix)."""
    raw = os.environ.get("ETCD_VERSIONS", "").strip()
    if not raw:
        for i in ETCD_IDS:
            if not ETCD_VERSION_OF[i]:
                raise _etcd_missing(i)
        return list(ETCD_VERSION_IDS)
    out = []
    for tok in raw.split(","):
        tok = tok.strip()
        if not tok:
            continue
        for etcd_id, ver in ETCD_VERSION_OF.items():
            if tok == etcd_id or (ver and (tok == ver or ver.startswith(tok + "."))):
                if not ver:
                    raise _etcd_missing(etcd_id)
                if ver not in out:
                    out.append(ver)
                break
        else:
            raise ValueError(
                f"ETCD_VERSIONS: unknown etcd version {tok!r} (known: "
                f"{', '.join(f'{i} ({v})' for i, v in ETCD_VERSION_OF.items())})"
            )
    return out


@contextlib.contextmanager
def private_etcd(extra_args=None):
    """A started etcd of one version (ETCD35 when selected) for tests that
    load a lot of data or need special server flags; destroyed afterwards."""
    vs = selected_etcd_versions()
    srv = EtcdServer(ETCD35 if ETCD35 in vs else vs[-1], extra_args=extra_args)
    try:
        srv.start()
        yield srv
    finally:
        srv.destroy()


class EtcdctlError(RuntimeError):
    pass


class Certs:
    """A test PKI generated with the openssl CLI.

    Files (all readable by the postgres OS user):
      ca.crt/ca.key                 test CA
      server.crt/server.key         CN=localhost, SAN DNS:localhost, DNS:etcd.test, IP:127.0.0.1
      client.crt/client.key         client cert signed by the test CA
      other_ca.crt/other_ca.key     a second, unrelated CA
      other_client.crt/.key         client cert signed by the unrelated CA
      proxy_client.crt/.key         client cert of the test CA without a CN
    """

    def __init__(self, directory=None):
        self.dir = directory or tempfile.mkdtemp(prefix="etcdfdw-certs-")
        self._own_dir = directory is None
        if self._own_dir:
            self._cleanup = register_cleanup(self.destroy)
        os.chmod(self.dir, 0o755)
        self._generate()

    def path(self, name):
        return os.path.join(self.dir, name)

    ca = property(lambda self: self.path("ca.crt"))
    server_cert = property(lambda self: self.path("server.crt"))
    server_key = property(lambda self: self.path("server.key"))
    client_cert = property(lambda self: self.path("client.crt"))
    client_key = property(lambda self: self.path("client.key"))
    other_ca = property(lambda self: self.path("other_ca.crt"))
    other_client_cert = property(lambda self: self.path("other_client.crt"))
    other_client_key = property(lambda self: self.path("other_client.key"))
    # without a common name: etcd's gRPC proxy refuses a client certificate
    # with one (etcd would take it for a user name)
    proxy_client_cert = property(lambda self: self.path("proxy_client.crt"))
    proxy_client_key = property(lambda self: self.path("proxy_client.key"))

    def _openssl(self, *args):
        p = subprocess.run(["openssl", *args], cwd=self.dir, capture_output=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(
                f"openssl {' '.join(args)} failed: {p.stderr.decode(errors='replace')}"
            )

    def _write(self, name, text):
        with open(self.path(name), "w") as f:
            f.write(text)

    def _make_ca(self, name, cn):
        self._write(
            f"{name}.cnf",
            f"""[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = {cn}
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
""",
        )
        self._openssl(
            "req", "-x509", "-new",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt",
            "-days", "7", "-config", f"{name}.cnf",
        )

    def _make_leaf(self, name, cn, ca, eku, san=None):
        # cn None: no common name (an organisation only), as etcd's gRPC
        # proxy wants for its own client certificate
        subject = f"CN = {cn}" if cn is not None else "O = etcd_fdw test proxy"
        self._write(
            f"{name}.req.cnf",
            f"""[req]
distinguished_name = dn
prompt = no
[dn]
{subject}
""",
        )
        ext = f"""[v3]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = {eku}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
"""
        if san:
            ext += f"subjectAltName = {san}\n"
        self._write(f"{name}.ext.cnf", ext)
        self._openssl(
            "req", "-new",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-config", f"{name}.req.cnf",
        )
        self._openssl(
            "x509", "-req", "-in", f"{name}.csr",
            "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-CAserial", f"{ca}.srl",
            "-out", f"{name}.crt", "-days", "7",
            "-extfile", f"{name}.ext.cnf", "-extensions", "v3",
        )

    def _generate(self):
        self._make_ca("ca", "etcd_fdw test CA")
        self._make_ca("other_ca", "unrelated test CA")
        self._make_leaf(
            "server", "localhost", "ca", "serverAuth, clientAuth",
            san="DNS:localhost, DNS:etcd.test, IP:127.0.0.1",
        )
        self._make_leaf("client", "etcd-fdw-client", "ca", "clientAuth")
        self._make_leaf("other_client", "etcd-fdw-client", "other_ca", "clientAuth")
        self._make_leaf("proxy_client", None, "ca", "clientAuth")
        # the PostgreSQL backend (postgres OS user) must be able to read them
        for fn in os.listdir(self.dir):
            p = self.path(fn)
            give_to_postgres(p, 0o600 if fn.endswith(".key") else 0o644)

    def destroy(self):
        if self._own_dir:
            unregister_cleanup(self._cleanup)
            rmtree_quiet(self.dir)


class EtcdServer:
    """One single-member etcd server on free loopback ports.

    Attributes: version, endpoint ("127.0.0.1:P"), url ("http(s)://127.0.0.1:P"),
    pid, datadir, logfile.
    """

    def __init__(
        self, version, certs: Certs | None = None, client_cert_auth=True, extra_args=None
    ):
        self.version = version
        # additional etcd command line flags, e.g. ["--max-txn-ops", "1000"]
        self.extra_args = [str(a) for a in (extra_args or [])]
        self.etcd_bin, self.etcdctl_bin = etcd_binaries(version)
        self.certs = certs
        self.client_cert_auth = client_cert_auth
        self.base = tempfile.mkdtemp(prefix=f"etcdfdw-{ETCD_VERSION_IDS.get(version, 'etcd')}-")
        self.datadir = os.path.join(self.base, "data")
        self.logfile = os.path.join(self.base, "etcd.log")
        self.proc = None
        self.port = None
        self.peer_port = None
        self.stopped = False
        # credentials etcdctl uses (set by enable_auth)
        self.ctl_user = None
        self.ctl_password = None
        self._cleanup = register_cleanup(self.destroy)

    # -- addresses -----------------------------------------------------------
    @property
    def scheme(self):
        return "https" if self.certs else "http"

    @property
    def endpoint(self):
        return f"127.0.0.1:{self.port}"

    @property
    def url(self):
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def __repr__(self):
        return f"<EtcdServer {self.version} {self.url} pid={self.pid}>"

    def _http_tls(self):
        """The TLS context for etcd's HTTP endpoints (gateway, /metrics)."""
        if not self.certs:
            return None
        ctx = ssl.create_default_context(cafile=self.certs.ca)
        if self.client_cert_auth:
            ctx.load_cert_chain(self.certs.client_cert, self.certs.client_key)
        return ctx

    # -- etcd's own counters (its /metrics endpoint) -------------------------------
    def metrics(self):
        """The text of etcd's Prometheus /metrics page."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10, context=self._http_tls()) as r:
            return r.read().decode()

    def metric(self, name, **labels):
        """Sum of metric `name` over its series whose labels include `labels`
        (e.g. metric("grpc_server_handled_total", grpc_method="Range",
        grpc_code="OK")); 0 when no series matches yet.  A name etcd does
        not export at all fails: a count of nothing proves nothing."""
        want = [f'{k}="{v}"' for k, v in labels.items()]
        total, known = 0, False
        for line in self.metrics().splitlines():
            if line.startswith(f"# TYPE {name} "):
                known = True
            head, _, value = line.rpartition(" ")
            if (head == name or head.startswith(name + "{")) and all(w in head for w in want):
                total += int(float(value))
        assert known, f"etcd {self.version} exports no metric {name}"
        return total

    def kv_handled(self, method):
        """KV requests of `method` (Range, Txn, ...) etcd answered with OK."""
        return self.metric("grpc_server_handled_total", grpc_method=method, grpc_code="OK")

    # -- lifecycle -------------------------------------------------------------
    def start(self, timeout=30.0):
        last = None
        for _attempt in range(3):
            shutil.rmtree(self.datadir, ignore_errors=True)
            self.port, self.peer_port = free_ports(2)
            last = self._launch(timeout)
            if last is None:
                return self
        raise RuntimeError(f"etcd {self.version} did not become healthy: {last}")

    def kill(self):
        """SIGKILL etcd (and reap it): its client port then refuses
        connections.  restart() brings it back with its data."""
        self._kill_proc(signal.SIGKILL)
        self.stopped = False

    def restart(self, timeout=30.0):
        """Start a killed etcd again on the same ports and data dir."""
        last = self._launch(timeout)
        if last is not None:
            raise RuntimeError(f"etcd {self.version} did not restart: {last}")
        return self

    def _launch(self, timeout):
        """Run etcd on self.port / self.peer_port and wait until it is
        healthy: None, or why it is not (then it is killed)."""
        last = None
        peer = f"http://127.0.0.1:{self.peer_port}"
        cmd = [
            self.etcd_bin,
            "--name", "default",
            "--data-dir", self.datadir,
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"default={peer}",
            "--initial-cluster-state", "new",
        ]
        if self.certs:
            cmd += [
                "--cert-file", self.certs.server_cert,
                "--key-file", self.certs.server_key,
                "--trusted-ca-file", self.certs.ca,
            ]
            if self.client_cert_auth:
                cmd += ["--client-cert-auth"]
        cmd += self.extra_args
        log = open(self.logfile, "ab")
        try:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                self.ctl("endpoint", "health", timeout=5)
            except (EtcdctlError, subprocess.TimeoutExpired) as e:
                last = e
                time.sleep(0.1)
                continue
            # the etcd that answered must be ours, not another one that
            # holds the port (ours then fails to bind and exits)
            if self.proc.poll() is None and self.proc.pid in listening_pids(self.port):
                return None
            last = f"port {self.port} answers, but not from etcd pid {self.proc.pid}"
            break
        last = f"{last}\n--- etcd log ---\n{self.log_tail()}"
        self._kill_proc()
        return last

    def _kill_proc(self, sig=None):
        if self.proc is None:
            return
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        if self.proc.poll() is None:
            try:
                # a SIGSTOPped process still dies on SIGKILL, but CONT first
                # so that a graceful SIGTERM can work too
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.stopped = False
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def destroy(self):
        try:
            self._kill_proc()
        finally:
            unregister_cleanup(self._cleanup)
            rmtree_quiet(self.base)

    def stop(self):
        """SIGSTOP the etcd process (it keeps its sockets but answers
        nothing); returns once all its threads have stopped."""
        self.stopped = True
        sigstop_and_wait(self.proc.pid)

    def cont(self):
        """SIGCONT a stopped etcd."""
        os.kill(self.proc.pid, signal.SIGCONT)
        self.stopped = False

    def log_tail(self, nbytes=3000):
        return file_tail(self.logfile, nbytes)

    # -- etcdctl -----------------------------------------------------------------
    def ctl_base(self):
        args = [self.etcdctl_bin, "--endpoints", self.url, "--dial-timeout", "5s"]
        if self.certs:
            args += ["--cacert", self.certs.ca]
            if self.client_cert_auth:
                args += ["--cert", self.certs.client_cert, "--key", self.certs.client_key]
        if self.ctl_user:
            args += ["--user", f"{self.ctl_user}:{self.ctl_password}"]
        return args

    def ctl(self, *args, input=None, timeout=30):
        """Run etcdctl (API v3) against this server; return stdout bytes."""
        if isinstance(input, str):
            input = input.encode()
        env = dict(os.environ)
        env["ETCDCTL_API"] = "3"
        for k in list(env):
            # never let the caller's environment redirect etcdctl
            if k.startswith("ETCDCTL_") and k != "ETCDCTL_API":
                del env[k]
        cmd = self.ctl_base() + [str(a) for a in args]
        p = subprocess.run(
            cmd, input=input if input is not None else b"", capture_output=True,
            env=env, timeout=timeout,
        )
        if p.returncode != 0:
            raise EtcdctlError(
                f"etcdctl {' '.join(str(a) for a in args)} failed ({p.returncode}): "
                f"{p.stderr.decode(errors='replace')}"
            )
        return p.stdout

    def put(self, key, value):
        """Put one key (str or bytes; value may be any bytes). Returns the revision."""
        if isinstance(key, bytes):
            key = key.decode()
        if isinstance(value, str):
            value = value.encode()
        if value == b"" or b"\0" in value:
            if b"\0" in value:
                return self.put_many({key: value})
            out = self.ctl("put", "-w", "json", "--", key, "")
        else:
            # value on stdin: etcdctl reads it verbatim (no newline stripping)
            out = self.ctl("put", "-w", "json", "--", key, input=value)
        return int(json.loads(out)["header"]["revision"])

    def get_kv(self, key):
        """The etcd KeyValue dict for key (value/key decoded to bytes), or None."""
        if isinstance(key, bytes):
            key = key.decode()
        out = json.loads(self.ctl("get", "-w", "json", "--", key))
        kvs = out.get("kvs") or []
        if not kvs:
            return None
        kv = dict(kvs[0])
        kv["key"] = base64.b64decode(kv["key"])
        kv["value"] = base64.b64decode(kv.get("value", ""))
        for f in ("create_revision", "mod_revision", "version", "lease"):
            kv[f] = int(kv.get(f, 0))
        return kv

    def get(self, key):
        kv = self.get_kv(key)
        return None if kv is None else kv["value"]

    def revision(self):
        out = json.loads(self.ctl("get", "-w", "json", "--", "__etcd_fdw_revision_probe__"))
        return int(out["header"]["revision"])

    def delete_prefix(self, prefix):
        self.ctl("del", "--prefix", "--", prefix)

    # -- bulk puts through the gRPC-gateway (JSON over HTTP) ----------------
    def _gateway(self, path, body, token=None):
        data = json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method="POST",
            headers={"Content-Type": "application/json"},
        )
        if token:
            req.add_header("Authorization", token)
        with urllib.request.urlopen(req, timeout=30, context=self._http_tls()) as resp:
            out = json.loads(resp.read())
        if "error" in out and out.get("code"):
            raise RuntimeError(f"etcd gateway {path}: {out}")
        return out

    def put_many(self, items, batch=100):
        """Put many keys fast (one txn per `batch` keys). Returns last revision."""
        if isinstance(items, dict):
            items = list(items.items())
        token = None
        if self.ctl_user:
            token = self._gateway(
                "/v3/auth/authenticate", {"name": self.ctl_user, "password": self.ctl_password}
            )["token"]

        def b64(x):
            if isinstance(x, str):
                x = x.encode()
            return base64.b64encode(x).decode()

        rev = None
        for i in range(0, len(items), batch):
            ops = [
                {"requestPut": {"key": b64(k), "value": b64(v)}}
                for k, v in items[i : i + batch]
            ]
            out = self._gateway("/v3/kv/txn", {"success": ops}, token)
            rev = int(out["header"]["revision"])
        return rev

    # -- auth ------------------------------------------------------------------
    def enable_auth(self, users, root_password="rootpw"):
        """Create root + users and enable auth.

        users: {name: (password, [(role_prefix, permission)])}
        Each user gets a role "<name>_role" with the given prefix permissions.
        """
        self.ctl("user", "add", f"root:{root_password}")
        for name, (password, perms) in users.items():
            self.ctl("user", "add", f"{name}:{password}")
            role = f"{name}_role"
            self.ctl("role", "add", role)
            for prefix, perm in perms:
                self.ctl("role", "grant-permission", "--prefix=true", role, perm, prefix)
            self.ctl("user", "grant-role", name, role)
        self.ctl("auth", "enable")
        self.ctl_user, self.ctl_password = "root", root_password


class GrpcProxy:
    """etcd's gRPC proxy (`etcd grpc-proxy start`, from the same binaries
    as the etcd behind it) on a free loopback port, forwarding to one
    EtcdServer: any number of clients, one connection to etcd."""

    def __init__(self, etcd: EtcdServer, serve_tls=False):
        """With a TLS etcd (`etcd.certs`), the proxy talks TLS to it with
        the test PKI's client certificate; `serve_tls`: the proxy serves
        TLS itself (the PKI's server certificate) and asks its clients for
        a certificate of the test CA."""
        self.etcd = etcd
        self.certs = etcd.certs
        self.serve_tls = serve_tls
        if serve_tls and self.certs is None:
            raise ValueError("serve_tls needs an etcd with certs (the test PKI)")
        self.base = tempfile.mkdtemp(prefix="etcdfdw-grpcproxy-")
        self.logfile = os.path.join(self.base, "proxy.log")
        self.proc = None
        self.port = None
        self._cleanup = register_cleanup(self.destroy)

    @property
    def endpoint(self):
        return f"127.0.0.1:{self.port}"

    @property
    def url(self):
        return f"{'https' if self.serve_tls else 'http'}://{self.endpoint}"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def __repr__(self):
        return f"<GrpcProxy {self.endpoint} -> {self.etcd.endpoint} pid={self.pid}>"

    def start(self, timeout=30.0):
        last = None
        for _attempt in range(3):
            self.port = free_port()
            last = self._launch(timeout)
            if last is None:
                return self
        raise RuntimeError(f"etcd grpc-proxy did not come up: {last}")

    def _launch(self, timeout):
        cmd = [
            self.etcd.etcd_bin, "grpc-proxy", "start",
            "--endpoints", self.etcd.url if self.certs else self.etcd.endpoint,
            "--listen-addr", self.endpoint,
            "--data-dir", os.path.join(self.base, "data"),
        ]
        ctl_tls = []
        if self.certs is not None:
            c = self.certs
            cmd += ["--cacert", c.ca, "--cert", c.proxy_client_cert, "--key", c.proxy_client_key]
        if self.serve_tls:
            c = self.certs
            cmd += ["--cert-file", c.server_cert, "--key-file", c.server_key, "--trusted-ca-file", c.ca]
            ctl_tls = ["--cacert", c.ca, "--cert", c.client_cert, "--key", c.client_key]
        # the proxy names itself in MemberList answers (etcd_members)
        cmd += ["--advertise-client-url", self.url]
        if self.etcd.ctl_user:  # etcd's auth is on: the health check logs in
            ctl_tls += ["--user", f"{self.etcd.ctl_user}:{self.etcd.ctl_password}"]
        log = open(self.logfile, "ab")
        try:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
        env["ETCDCTL_API"] = "3"
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline and self.proc.poll() is None:
            p = subprocess.run(
                [self.etcd.etcdctl_bin, "--endpoints", self.url, *ctl_tls, "--dial-timeout", "5s",
                 "endpoint", "health"],
                capture_output=True, env=env, timeout=30,
            )
            if p.returncode == 0:
                # the proxy that answered must be ours
                if self.proc.poll() is None and self.proc.pid in listening_pids(self.port):
                    return None
                last = f"port {self.port} answers, but not from grpc-proxy pid {self.proc.pid}"
                break
            last = p.stderr.decode(errors="replace")
            time.sleep(0.1)
        last = f"{last}\n--- grpc-proxy log ---\n{self.log_tail()}"
        self._kill_proc()
        return last

    def log_tail(self, nbytes=3000):
        return file_tail(self.logfile, nbytes)

    def _kill_proc(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def kill(self):
        """SIGKILL the proxy: its port then refuses connections."""
        self._kill_proc()

    def destroy(self):
        try:
            self._kill_proc()
        finally:
            unregister_cleanup(self._cleanup)
            rmtree_quiet(self.base)


def tcp_states_to(pid, port):
    """TCP states (hex, as /proc/net/tcp: 01 ESTABLISHED, 08 CLOSE_WAIT) of
    process pid's sockets connected to 127.0.0.1:port."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return [state for _, remote, state, inode in tcp_sockets(f"/proc/{pid}")
            if inode in inodes and remote == port]


def pids_connected_to(port):
    """The pids holding an ESTABLISHED TCP connection to 127.0.0.1:port (the
    clients of a server on that port, as the kernel sees them)."""
    return _pids_holding({f"socket:[{inode}]" for _, remote, state, inode in tcp_sockets()
                          if state == "01" and remote == port})


# --------------------------------------------------------------------------
# helpers for the test modules
# --------------------------------------------------------------------------


def err_text(e):
    """All text PostgreSQL sent for an error (primary, detail, hint, context)."""
    parts = [str(e)]
    diag = getattr(e, "diag", None)
    if diag is not None:
        for f in ("message_primary", "message_detail", "message_hint", "context"):
            v = getattr(diag, f, None)
            if v:
                parts.append(v)
    return "\n".join(parts)


def expect_error(conn, sql, params=None, sqlstate=None, sqlstate_class=None, contains=()):
    """Run sql, assert that the *server* raised an error; return the exception.

    sqlstate: exact SQLSTATE expected; sqlstate_class: expected prefix (e.g. 'HV');
    contains: substrings that must all appear in the error text.
    A lost connection (backend crash) never counts as the expected error.
    """
    try:
        conn.execute(sql, params)
    except psycopg.Error as e:
        text = err_text(e)
        assert e.sqlstate is not None, f"no SQLSTATE (backend crash / lost connection?): {text}"
        assert not conn.closed, f"connection was closed by the error: {text}"
        if sqlstate is not None:
            assert e.sqlstate == sqlstate, f"expected SQLSTATE {sqlstate}, got {e.sqlstate}: {text}"
        if sqlstate_class is not None:
            assert e.sqlstate.startswith(sqlstate_class), (
                f"expected SQLSTATE class {sqlstate_class}, got {e.sqlstate}: {text}"
            )
        for s in (contains if not isinstance(contains, str) else (contains,)):
            assert s in text, f"{s!r} not in error text: {text}"
        return e
    raise AssertionError(f"statement unexpectedly succeeded: {sql}")


def vm_hwm_kb(pid):
    """Peak resident set size (VmHWM) of process pid, in kB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def assert_session_usable(conn):
    assert conn.execute("SELECT 1").fetchone() == (1,)


class QueryThread(threading.Thread):
    """Run one statement on `conn` in a background thread, timing it."""

    def __init__(self, conn, sql, params=None):
        super().__init__(daemon=True)
        self.conn, self.sql, self.params = conn, sql, params
        self.rows = None
        self.error = None
        self.started_at = None
        self.ended_at = None

    def run(self):
        self.started_at = time.monotonic()
        try:
            cur = self.conn.execute(self.sql, self.params)
            self.rows = cur.fetchall() if cur.description is not None else []
        except BaseException as e:  # noqa: BLE001
            self.error = e
        finally:
            self.ended_at = time.monotonic()

    @property
    def elapsed(self):
        return None if self.ended_at is None else self.ended_at - self.started_at


def finish_or_rescue(t, etcd, limit):
    """Join QueryThread t for `limit` s; if still running, SIGCONT etcd and fail.

    Guarantees that a test never hangs on a query blocked by a stopped etcd.
    """
    import pytest

    t.join(limit)
    if t.is_alive():
        if etcd is not None and etcd.stopped:
            etcd.cont()
        t.join(90)
        pytest.fail(
            f"foreign query was not interrupted within {limit}s "
            f"(after SIGCONT: error={t.error!r}, still running={t.is_alive()})"
        )


class Blackhole:
    """A loopback port whose accept queue is full: TCP connects to it hang.

    (listen backlog 0 plus one connection that is never accepted; Linux then
    drops further SYNs, so a client sees a connect timeout, not a refusal.)
    """

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        # one un-accepted connection fills the queue
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        filler.settimeout(5)
        filler.connect(("127.0.0.1", self.port))
        self.fillers = [filler]

    @property
    def endpoint(self):
        return f"127.0.0.1:{self.port}"

    def close(self):
        for c in self.fillers:
            c.close()
        self.listener.close()


def wait_until(condition, what, timeout=60.0, interval=0.02):
    """Poll `condition()` until it returns a true value and return that
    value; fail naming `what` after `timeout` s.  For waiting on a state
    (a key gone, a backend blocked, a watcher registered), never on a
    duration: the timeout is only a bound for a test that would otherwise
    hang, so make it generous (CI runs two suites side by side on 2 cores)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_backend_active(observer_conn, pid, timeout=10.0, min_active=0.3, alive=lambda: True):
    """Wait until backend `pid` has been running a statement for >= min_active s
    (giving up early once `alive()` is false, e.g. the client thread ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        row = observer_conn.execute(
            "SELECT state, extract(epoch FROM clock_timestamp() - query_start)::float8 "
            "FROM pg_stat_activity WHERE pid = %s",
            (pid,),
        ).fetchone()
        if row and row[0] == "active" and row[1] is not None and row[1] >= min_active:
            return True
        time.sleep(0.05)
    return False


def run_spec_setup(conn, endpoint):
    """The specification's set-up statements, verbatim (table `test`)."""
    conn.execute("create extension etcd_fdw;")
    conn.execute(
        "CREATE foreign data wrapper etcd_fdw handler etcd_fdw_handler "
        "validator etcd_fdw_validator;"
    )
    conn.execute(
        "CREATE SERVER my_etcd_server foreign data wrapper etcd_fdw "
        f"options (connstr '{endpoint}');"
    )
    conn.execute(
        "CREATE foreign table test (key text, value text) server my_etcd_server "
        "options(rowid_column 'key');"
    )
