"""Real Patroni nodes on loopback, for tests/test_patroni.py.

``PatroniNode`` runs one Patroni 4.1.5 (the venv of scripts/patroni-venv.sh)
as the ``postgres`` OS user against an etcd of the harness, with the
PostgreSQL major under test (harness.PG_BIN): its own data and socket
directory (owned by postgres), a PostgreSQL port and a REST API port from
the harness's port allocator, and a config file naming the etcd
(``etcd3: hosts: 127.0.0.1:<port>``).  Patroni is started with ``setpriv``
(which execs, so ``proc.pid`` is Patroni's own pid, not a wrapper's);
``stop()`` SIGTERMs that pid (Patroni stops its PostgreSQL and exits) and,
should Patroni not exit, SIGKILLs it and stops its postmaster by the pid in
postmaster.pid.  Every node registers ``destroy`` with the harness's atexit
cleanups, so a failed or interrupted run leaves no process behind.

State is read through Patroni's REST API (``GET /patroni``) and
``patronictl`` (run as root with the node's config file), and waited for
with harness.wait_until, never with a sleep.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request

import harness
from harness import free_ports, give_to_postgres, register_cleanup, rmtree_quiet, unregister_cleanup, wait_until

REPO = harness.REPO


def patroni_bindir():
    """The venv's bin directory (made by scripts/patroni-venv.sh if missing)."""
    p = subprocess.run(
        ["bash", "scripts/patroni-venv.sh"], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    if p.returncode != 0:
        raise RuntimeError(f"scripts/patroni-venv.sh failed: {p.stderr}")
    return p.stdout.strip().splitlines()[-1]


# The dynamic configuration a test cluster bootstraps with: Patroni's
# smallest ttl (20 s) so that a stopped node's member key expires quickly,
# and loop_wait + 2*retry_timeout <= ttl.
BOOTSTRAP_DCS = {
    "ttl": 20,
    "loop_wait": 2,
    "retry_timeout": 5,
    "maximum_lag_on_failover": 1048576,
    "postgresql": {
        "use_pg_rewind": False,
        "use_slots": True,
        "parameters": {
            "max_connections": 30,
            "max_wal_senders": 5,
            "max_replication_slots": 5,
            "wal_keep_size": "64MB",
            "work_mem": "4MB",
        },
    },
}


class PatroniNode:
    def __init__(self, scope, name, etcd, bindir, namespace="/service/"):
        self.scope = scope
        self.name = name
        self.etcd = etcd
        self.bindir = bindir
        self.namespace = namespace
        self.base = tempfile.mkdtemp(prefix=f"etcdfdw-patroni-{name}-")
        give_to_postgres(self.base, 0o700)
        self.datadir = os.path.join(self.base, "data")
        self.config_path = os.path.join(self.base, "patroni.yml")
        self.logfile = os.path.join(self.base, "patroni.log")
        self.pg_port, self.api_port = free_ports(2)
        self.proc = None
        self._log = None
        self._cleanup = register_cleanup(self.destroy)
        self._write_config()

    @property
    def api_url(self):
        return f"http://127.0.0.1:{self.api_port}"

    def _write_config(self):
        # JSON is YAML: no YAML writer needed.
        config = {
            "scope": self.scope,
            "namespace": self.namespace,
            "name": self.name,
            "log": {"level": "INFO"},
            "restapi": {
                "listen": f"127.0.0.1:{self.api_port}",
                "connect_address": f"127.0.0.1:{self.api_port}",
            },
            "etcd3": {"hosts": self.etcd.endpoint},
            "bootstrap": {
                "dcs": BOOTSTRAP_DCS,
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{self.pg_port}",
                "connect_address": f"127.0.0.1:{self.pg_port}",
                "data_dir": self.datadir,
                "bin_dir": harness.PG_BIN,
                "pgpass": os.path.join(self.base, "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": "pg-secret"},
                    "replication": {"username": "replicator", "password": "rep-secret"},
                },
                "parameters": {
                    "unix_socket_directories": self.base,
                    "shared_buffers": "16MB",
                    "fsync": "off",
                    "synchronous_commit": "off",
                    "full_page_writes": "off",
                    "autovacuum": "off",
                },
                "pg_hba": [
                    "local all all trust",
                    "host all all 127.0.0.1/32 trust",
                    "host replication replicator 127.0.0.1/32 trust",
                ],
            },
            "tags": {"nofailover": False, "noloadbalance": False},
        }
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=1)
        give_to_postgres(self.config_path, 0o600)

    # -- lifecycle ---------------------------------------------------------
    def start(self):
        env = {
            "PATH": f"{self.bindir}:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": self.base,
        }
        cmd = [os.path.join(self.bindir, "patroni"), self.config_path]
        if os.geteuid() == 0:
            pw = pwd.getpwnam(harness.PG_OS_USER)
            cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--"] + cmd
        self._log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            cmd, cwd=self.base, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _postmaster_pid(self):
        """The pid in postmaster.pid, if that process is this node's
        postmaster still (a stale file's pid may belong to anyone by now)."""
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                pid = int(f.readline().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if self.datadir.encode() in cmdline else None

    def stop(self, timeout=60):
        """SIGTERM Patroni (it stops its PostgreSQL, then exits); SIGKILL it
        and its postmaster if it does not exit within `timeout` s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        pm = self._postmaster_pid()
        if pm is not None:
            try:
                os.kill(pm, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._log:
            self._log.close()
            self._log = None

    def destroy(self):
        try:
            self.stop()
        finally:
            unregister_cleanup(self._cleanup)
            rmtree_quiet(self.base)

    def log_tail(self, nbytes=6000):
        try:
            with open(self.logfile, "rb") as f:
                f.seek(max(0, os.path.getsize(self.logfile) - nbytes))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    # -- state -------------------------------------------------------------
    def rest(self, path="/patroni"):
        """GET the REST API (None while it does not answer)."""
        try:
            with urllib.request.urlopen(self.api_url + path, timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # 503 for a replica on /primary etc.
            try:
                return json.loads(e.read())
            except ValueError:
                return None
        except (OSError, ValueError):
            return None

    def role_state(self):
        s = self.rest() or {}
        return s.get("role"), s.get("state")

    def wait_running(self, role=None, timeout=120):
        def ok():
            if not self.alive():
                raise AssertionError(f"Patroni {self.name} exited:\n{self.log_tail()}")
            r, s = self.role_state()
            return s == "running" and (role is None or r == role)

        try:
            wait_until(ok, f"Patroni {self.name} running as {role or 'any role'}", timeout=timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}\nlog of {self.name}:\n{self.log_tail()}") from None

    def ctl(self, *args, check=True, timeout=60):
        """patronictl with this node's config file; returns stdout."""
        p = subprocess.run(
            [os.path.join(self.bindir, "patronictl"), "-c", self.config_path, *args],
            capture_output=True, text=True, timeout=timeout,
        )
        if check and p.returncode != 0:
            raise RuntimeError(f"patronictl {' '.join(args)} failed ({p.returncode}): {p.stdout}{p.stderr}")
        return p.stdout

    def psql_conninfo(self):
        return f"host={self.base} port={self.pg_port} dbname=postgres user=postgres"


def start_cluster(scope, etcd, names, bindir):
    """Start nodes one after the other (the first bootstraps as primary, the
    next ones as replicas) and wait until each runs; on failure every node
    started is stopped."""
    nodes = []
    try:
        for i, name in enumerate(names):
            n = PatroniNode(scope, name, etcd, bindir)
            nodes.append(n)
            n.start()
            n.wait_running("primary" if i == 0 else "replica")
        return nodes
    except BaseException:
        for n in nodes:
            n.destroy()
        raise
