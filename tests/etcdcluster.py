"""A 3-member etcd cluster on loopback, for tests/test_cluster.py and the
chaos run (chaos/run.py).

``EtcdCluster`` starts members m1, m2, m3 (the matrix's etcd 3.5 by default) on free
127.0.0.1 ports; each ``Member`` can be SIGKILLed and restarted (its data dir
is kept, so it rejoins), or paused with SIGSTOP and continued with SIGCONT.
Leader lookup and data access go through etcdctl (``ctl``, ``status``,
``leader``, ``dump``, ``get_prefix``) or, where a spawned etcdctl per call
would cost too much CPU (polling), through a member's gRPC gateway
(``gateway_status``, ``put_many``).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import harness
from harness import (
    ETCD35,
    etcd_binaries,
    file_tail,
    free_ports,
    register_cleanup,
    rmtree_quiet,
    unregister_cleanup,
)

ETCD_VERSION = ETCD35  # what .pg/etcd35's etcd reports, e.g. "3.5.16"

# error texts etcd sends while the cluster has no (or a changing) leader
ELECTION_ERRORS = ("no leader", "leader changed", "etcdserver: request timed out")


class EtcdctlFailed(RuntimeError):
    pass


def run_etcdctl(etcdctl, endpoints, *args, timeout=15, check=True, input=None):
    """etcdctl (API v3) against the given client URLs; returns the CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    cmd = [
        etcdctl,
        "--endpoints", ",".join(endpoints),
        "--dial-timeout", "2s",
        "--command-timeout", "5s",
        *[str(a) for a in args],
    ]
    p = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout, input=input or b"")
    if check and p.returncode != 0:
        raise EtcdctlFailed(
            f"etcdctl {' '.join(str(a) for a in args)} @ {','.join(endpoints)} "
            f"failed ({p.returncode}): {p.stderr.decode(errors='replace')}"
        )
    return p


class Member:
    """One etcd process of the cluster."""

    def __init__(self, cluster, name, client_port, peer_port):
        self.cluster = cluster
        self.name = name
        self.client_port = client_port
        self.peer_port = peer_port
        self.datadir = os.path.join(cluster.base, name, "data")
        self.logfile = os.path.join(cluster.base, name, "etcd.log")
        os.makedirs(os.path.dirname(self.datadir), exist_ok=True)
        self.proc = None
        self.stopped = False

    endpoint = property(lambda self: f"127.0.0.1:{self.client_port}")
    url = property(lambda self: f"http://127.0.0.1:{self.client_port}")
    peer_url = property(lambda self: f"http://127.0.0.1:{self.peer_port}")

    def __repr__(self):
        return f"<Member {self.name} {self.url} pid={self.pid} stopped={self.stopped}>"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        """Start (or restart: an existing data dir makes etcd ignore --initial-*)."""
        cmd = [
            self.cluster.etcd_bin,
            "--name", self.name,
            "--data-dir", self.datadir,
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.cluster.initial_cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self.cluster.token,
        ]
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.stopped = False

    def stop(self):
        """SIGSTOP: the sockets stay open (TCP connects complete) but nothing
        answers; returns once all its threads have stopped."""
        self.stopped = True
        harness.sigstop_and_wait(self.proc.pid)

    def cont(self):
        if self.proc is not None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.stopped = False

    def kill(self):
        """SIGKILL (after SIGCONT, should it be stopped) and reap."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.cont()
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        self.stopped = False

    def log_tail(self, nbytes=2500):
        return file_tail(self.logfile, nbytes)


class EtcdCluster:
    """Three etcd members (m1, m2, m3) on free 127.0.0.1 ports."""

    def __init__(self, version=ETCD_VERSION, names=("m1", "m2", "m3")):
        self.version = version
        self.etcd_bin, self.etcdctl_bin = etcd_binaries(version)
        self.names = names
        self.base = tempfile.mkdtemp(prefix="etcdfdw-cluster-")
        self.members: list[Member] = []
        self.token = None
        self._cleanup = register_cleanup(self.destroy)

    # -- addresses ---------------------------------------------------------
    @property
    def initial_cluster(self):
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def connstr(self):
        return ",".join(m.endpoint for m in self.members)

    def member(self, name):
        return next(m for m in self.members if m.name == name)

    def __getitem__(self, name):
        return self.member(name)

    # -- lifecycle ---------------------------------------------------------
    def start(self, timeout=30.0):
        last = None
        for attempt in range(3):
            self._kill_all()
            for d in os.listdir(self.base):
                rmtree_quiet(os.path.join(self.base, d))
            ports = free_ports(2 * len(self.names))
            self.token = f"etcdfdw-{uuid.uuid4().hex[:12]}"
            self.members = [
                Member(self, n, ports[2 * i], ports[2 * i + 1]) for i, n in enumerate(self.names)
            ]
            for m in self.members:
                m.start()
            try:
                self.wait_healthy(timeout=timeout)
                return self
            except Exception as e:  # noqa: BLE001  (port race, slow start): retry
                last = f"attempt {attempt + 1}: {e}\n" + "\n".join(
                    f"--- {m.name} log ---\n{m.log_tail()}" for m in self.members
                )
        self._kill_all()
        raise RuntimeError(f"etcd cluster did not become healthy: {last}")

    def _kill_all(self):
        for m in self.members:
            try:
                m.kill()
            except Exception:  # pragma: no cover - best effort
                pass

    def destroy(self):
        try:
            self._kill_all()
        finally:
            unregister_cleanup(self._cleanup)
            rmtree_quiet(self.base)

    def ensure_all_running(self, timeout=60.0):
        """SIGCONT stopped members, restart dead ones, wait until all are healthy."""
        for m in self.members:
            if m.running:
                if m.stopped:
                    m.cont()
            else:
                m.start()
        self.wait_healthy(timeout=timeout)

    # -- etcdctl -------------------------------------------------------------
    def ctl(self, *args, members=None, **kw):
        ms = self.members if members is None else members
        return run_etcdctl(self.etcdctl_bin, [m.url for m in ms], *args, **kw)

    def wait_healthy(self, members=None, timeout=60.0):
        ms = self.members if members is None else members
        deadline = time.monotonic() + timeout
        last = None
        while True:
            dead = [m.name for m in ms if not m.running]
            if dead:
                raise RuntimeError(f"etcd member(s) {dead} exited")
            try:
                p = self.ctl("endpoint", "health", "-w", "json", members=ms, check=False)
                if p.returncode == 0:
                    health = json.loads(p.stdout)
                    if len(health) == len(ms) and all(h.get("health") for h in health):
                        return
                last = (p.stdout + p.stderr).decode(errors="replace")
            except (subprocess.TimeoutExpired, ValueError) as e:
                last = repr(e)
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd members not healthy after {timeout}s: {last}")
            time.sleep(0.2)

    def status(self, members=None):
        """{member name: (member_id, leader_id, raft_term)} of the reachable members."""
        ms = self.members if members is None else members
        p = self.ctl("endpoint", "status", "-w", "json", members=ms, check=False)
        by_url = {m.url: m.name for m in ms}
        out = {}
        try:
            rows = json.loads(p.stdout or b"[]")
        except ValueError:
            rows = []
        for r in rows:
            st = r.get("Status") or {}
            hdr = st.get("header") or {}
            name = by_url.get(r.get("Endpoint"))
            if name and hdr.get("member_id"):
                out[name] = (int(hdr["member_id"]), int(st.get("leader", 0)), int(hdr.get("raft_term", 0)))
        return out

    def leader(self, members=None, timeout=60.0):
        """Name of the leader all given members agree on (polls until they do;
        `timeout` only bounds a test that would otherwise hang: an election
        on a loaded machine can take several seconds)."""
        ms = self.members if members is None else members
        deadline = time.monotonic() + timeout
        last = None
        while True:
            st = self.status(ms)
            ids = {mid: name for name, (mid, _l, _t) in st.items()}
            leaders = {lead for (_mid, lead, _t) in st.values()}
            if len(st) == len(ms) and len(leaders) == 1 and next(iter(leaders)) in ids:
                return ids[next(iter(leaders))]
            last = st
            if time.monotonic() > deadline:
                raise AssertionError(f"no agreed leader among {[m.name for m in ms]}: {last}")
            time.sleep(0.2)

    def move_leader(self, name, timeout=60.0):
        """Make member `name` the leader (etcdctl move-leader) and return once
        every member agrees on it and the cluster is healthy.

        The transfer is asked for again while `name` is not the leader: the
        request fails when the leader changes under it (an election on a
        loaded machine) or when `name` has not caught up yet (just
        restarted); `timeout` only bounds a test that would otherwise hang."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            remaining = max(1.0, deadline - time.monotonic())
            if self.leader(timeout=remaining) == name:
                break
            st = self.status()
            if name in st:
                p = self.ctl("move-leader", format(st[name][0], "x"), check=False)
                last = (p.stdout + p.stderr).decode(errors="replace")
            else:
                last = f"{name} did not answer etcdctl endpoint status: {st}"
            if time.monotonic() > deadline:
                raise AssertionError(f"leadership did not move to {name}: {last}")
        self.wait_healthy(timeout=max(30.0, deadline - time.monotonic()))

    # -- data ----------------------------------------------------------------
    def put(self, member, key, value):
        self.ctl("put", "--", key, value, members=[member])

    def dump(self, member, prefix):
        """{key: value} under prefix, read linearizably through one member only."""
        p = self.ctl(
            "get", "--prefix", "--consistency=l", "-w", "json", "--", prefix, members=[member]
        )
        kvs = json.loads(p.stdout).get("kvs") or []
        return {
            base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
            for kv in kvs
        }

    def get_prefix(self, prefix, members=None, consistency="l", rev=None):
        """(header revision, {key: kv}) of every key under prefix, read in one
        range request; kv = {"value", "mod_revision", "create_revision",
        "version", "lease"} (str value, int metadata)."""
        args = ["get", "--prefix", f"--consistency={consistency}", "-w", "json"]
        if rev is not None:
            args.append(f"--rev={rev}")
        p = self.ctl(*args, "--", prefix, members=members, timeout=60)
        out = json.loads(p.stdout)
        kvs = {}
        for kv in out.get("kvs") or []:
            kvs[base64.b64decode(kv["key"]).decode()] = {
                "value": base64.b64decode(kv.get("value", "")).decode(),
                "mod_revision": int(kv.get("mod_revision", 0)),
                "create_revision": int(kv.get("create_revision", 0)),
                "version": int(kv.get("version", 0)),
                "lease": int(kv.get("lease", 0)),
            }
        return int(out["header"]["revision"]), kvs

    # -- the gRPC gateway (JSON over HTTP; no process per call) --------------
    def gateway(self, member, path, body, timeout=2.0):
        req = urllib.request.Request(
            member.url + path, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            out = json.loads(resp.read())
        if "error" in out and out.get("code"):
            raise RuntimeError(f"etcd gateway {path} on {member.name}: {out}")
        return out

    def gateway_status(self, member, timeout=1.0):
        """(member_id, leader_id, raft_term) of one member, or None when it
        does not answer within timeout (dead, paused)."""
        try:
            st = self.gateway(member, "/v3/maintenance/status", {}, timeout=timeout)
        except (OSError, ValueError, RuntimeError):
            return None
        hdr = st.get("header") or {}
        try:
            return int(hdr["member_id"]), int(st.get("leader", 0)), int(st.get("raftTerm", 0))
        except (KeyError, ValueError):
            return None

    def leader_fast(self, timeout=1.0):
        """Name of the leader a majority of the members report, itself
        answering (None: no such leader, e.g. during an election); one
        gateway call per member.  A member that has just restarted may not
        know the leader yet; the majority does."""
        st = {m.name: self.gateway_status(m, timeout) for m in self.members}
        st = {n: s for n, s in st.items() if s is not None}
        ids = {mid: n for n, (mid, _l, _t) in st.items()}
        votes = {}
        for (_m, lead, _t) in st.values():
            votes[lead] = votes.get(lead, 0) + 1
        for lead, n in votes.items():
            if lead in ids and n > len(self.members) // 2:
                return ids[lead]
        return None

    def put_many(self, items, batch=100, member=None):
        """Put many keys (one gateway txn per `batch`); returns the last revision."""
        if isinstance(items, dict):
            items = list(items.items())
        ms = [member] if member is not None else [m for m in self.members if m.running]

        def b64(x):
            return base64.b64encode(x.encode() if isinstance(x, str) else x).decode()

        rev = None
        for i in range(0, len(items), batch):
            ops = [{"requestPut": {"key": b64(k), "value": b64(v)}} for k, v in items[i:i + batch]]
            last = None
            for m in ms:
                try:
                    rev = int(self.gateway(m, "/v3/kv/txn", {"success": ops}, timeout=10)["header"]["revision"])
                    break
                except (OSError, RuntimeError) as e:
                    last = e
            else:
                raise RuntimeError(f"put_many failed on every member: {last}")
        return rev
