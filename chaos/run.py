#!/usr/bin/env python3
"""etcd_fdw chaos run: concurrent reads and writes through the FDW while etcd
members are killed, restarted, paused and continued; nothing acknowledged may
be lost, no read may be wrong, no backend may crash.

    bash scripts/chaos.sh                  # 120 s
    bash scripts/chaos.sh --duration 30    # the short form (tests/test_chaos.py)
    python3 chaos/run.py --help            # the knobs

What runs (see chaos/README.md for the reasoning behind the checks):

* a 3-member etcd cluster (3.4.23 by default, --etcd-version etcd35 for 3.5) (tests/etcdcluster.py) and a throwaway
  PostgreSQL (tests/harness.py) with the installed extension; server `s` lists
  the three members (connect_timeout 2, request_timeout 5);
* pgbench read clients (`-n -M prepared`, one pgbench process per client,
  restarted when pgbench aborts the client on an error): point lookups and
  prefix scans of read-only keys, each checking its answer in SQL, and scans
  of the generation prefixes checking that they are one consistent state;
* Python writers (psycopg, one session each, commit_mode 'transaction'):
  INSERTs of unique keys, guarded UPDATEs, BEGIN; INSERT; UPDATE; COMMIT;
  and scans of their own keys (read-your-writes); every write's outcome is
  recorded: acknowledged, failed (SQLSTATE), or unknown (08007, connection
  lost);
* generation writers: one REPEATABLE READ transaction per step moves a
  12-key prefix from generation G to G+1 (4 UPDATEs, 4 DELETEs, 4 INSERTs:
  one etcd Txn at COMMIT); Python scanners read those prefixes (fetch_size 3:
  every scan is several range requests at one revision);
* the chaos driver: every 2-6 s SIGKILL (then restart) or SIGSTOP (then
  SIGCONT) one member for 2-6 s, the leader about half the time, never two at
  once; a monitor polls each member's status (gateway) twice a second to
  find leader elections.

At the end, with every member back: each key is read with etcdctl and
compared with what the writers were told; each scan is checked; the
PostgreSQL log is searched for crashed backends.  Prints a table; exit
status 1 when anything was lost, a result was wrong, or a backend crashed.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import psycopg  # noqa: E402

import harness  # noqa: E402
from etcdcluster import EtcdCluster  # noqa: E402

CONNECT_TIMEOUT = 2
REQUEST_TIMEOUT = 5
STATEMENT_TIMEOUT = "60s"  # safety net; a commit in flight is bounded by request_timeout

RD_BASE = 1_000_000  # read-only keys '1000000' .. for the pgbench lookups
GEN_KEYS = 12  # keys per generation prefix; 8 present in every generation

# error texts etcd sends while the cluster has no (or a changing) leader
ELECTION_TEXTS = ("etcdserver: leader changed", "etcdserver: no leader", "etcdserver: request timed out")

PHASES = ("all up", "1 member down", "leader election", "quorum lost")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pgbench_path():
    own = os.path.join(harness.PG_BIN, "pgbench")
    if os.path.exists(own):
        return own
    # the PyPI wheels of 16/18 may come without pgbench; 15's client works against them
    return "/usr/lib/postgresql/15/bin/pgbench"


# --------------------------------------------------------------------------
# timeline: faults, elections, phases
# --------------------------------------------------------------------------


class Timeline:
    """What was down when (wall clock, time.time()), and leader elections."""

    def __init__(self):
        self.lock = threading.Lock()
        self.faults = []  # dicts: member, how, leader, t_down, t_back (healthy again)
        self.elections = []  # [start, end]
        self.polls = 0
        self.recovery_failures = []

    def phase(self, t):
        with self.lock:
            for s, e in self.elections:
                if s <= t <= e:
                    return "leader election"
            down = sum(
                1 for f in self.faults
                if f["t_down"] <= t and (f["t_back"] is None or t < f["t_back"])
            )
        return PHASES[0] if down == 0 else PHASES[1] if down == 1 else PHASES[3]

    def phase_during(self, t0, t1):
        """The worst phase any moment of [t0, t1] was in (an operation that
        started while a member was paused and timed out after it came back
        belongs to '1 member down')."""
        points = {t0, t1}
        with self.lock:
            for s, e in self.elections:
                if s <= t1 and e >= t0:
                    return "leader election"
            for f in self.faults:
                for x in (f["t_down"], f["t_back"]):
                    if x is not None and t0 <= x <= t1:
                        points.add(x)
        rank = {p: i for i, p in enumerate(PHASES)}
        rank["quorum lost"] = 9
        return max((self.phase(t) for t in points), key=lambda p: rank[p])

    def durations(self, t0, t1, step=0.05):
        out = collections.Counter()
        t = t0
        while t < t1:
            out[self.phase(t)] += step
            t += step
        return out


class Monitor(threading.Thread):
    """Polls every member's status (gRPC gateway, no etcdctl process) and
    records leader elections: a change of (leader, term) between two polls that
    agreed on a leader is an election in between."""

    def __init__(self, cluster, timeline, stop):
        super().__init__(daemon=True, name="monitor")
        self.cluster, self.tl, self.stop = cluster, timeline, stop
        self.terms = set()

    def run(self):
        last = None  # (t, leader, term) of the last poll with an agreed leader
        pending = None  # start of an election not yet closed
        while not self.stop.is_set():
            t = time.time()
            st = {m.name: self.cluster.gateway_status(m, timeout=0.3) for m in self.cluster.members}
            st = {n: s for n, s in st.items() if s is not None}
            ids = {mid: n for n, (mid, _l, _t) in st.items()}
            leaders = {lead for (_m, lead, _t) in st.values()}
            term = max((tt for (_m, _l, tt) in st.values()), default=0)
            self.tl.polls += 1
            agreed = len(st) >= 2 and len(leaders) == 1 and next(iter(leaders)) in ids
            if agreed:
                cur = (ids[next(iter(leaders))], term)
                if last is not None and (last[1], last[2]) != cur:
                    with self.tl.lock:
                        self.tl.elections.append([pending if pending is not None else last[0], t])
                    self.terms.add(term)
                pending = None
                last = (t, cur[0], cur[1])
            elif last is not None and pending is None:
                pending = last[0]
            self.stop.wait(0.5)
        if pending is not None:
            with self.tl.lock:
                self.tl.elections.append([pending, time.time()])


class Chaos(threading.Thread):
    """Every 2-6 s: one member down (SIGKILL or SIGSTOP) for 2-6 s, then back
    (restart / SIGCONT) and healthy before the next fault."""

    def __init__(self, cluster, timeline, stop, rng, leader_share=0.5):
        super().__init__(daemon=True, name="chaos")
        self.cluster, self.tl, self.stop, self.rng = cluster, timeline, stop, rng
        self.leader_share = leader_share
        self.error = None

    def run(self):
        try:
            while not self.stop.wait(self.rng.uniform(2, 6)):
                self.one_fault()
        except Exception as e:  # noqa: BLE001
            self.error = f"{type(e).__name__}: {e}"
            log(f"chaos driver failed: {self.error}")

    def one_fault(self):
        c = self.cluster
        leader = c.leader_fast(timeout=0.5)
        if leader is None:  # an election still going on: wait for its end (at most 5 s)
            for _ in range(10):
                if self.stop.wait(0.5):
                    return
                leader = c.leader_fast(timeout=0.5)
                if leader is not None:
                    break
        if leader is not None and self.rng.random() < self.leader_share:
            target = c.member(leader)
        else:
            target = self.rng.choice([m for m in c.members if m.name != leader])
        how = self.rng.choice(("kill", "stop"))
        f = {"member": target.name, "how": how, "leader": target.name == leader,
             "t_down": time.time(), "t_back": None}
        if how == "kill":
            target.kill()
        else:
            target.stop()
        with self.tl.lock:
            self.tl.faults.append(f)
        log(f"  {how} {target.name}{' (leader)' if f['leader'] else ''}")
        # down for 2-6 s (cut short at the end of the run)
        self.stop.wait(self.rng.uniform(2, 6))
        if how == "kill":
            target.start()
        else:
            target.cont()
        try:
            c.wait_healthy(timeout=60)
        except Exception as e:  # noqa: BLE001
            self.tl.recovery_failures.append(f"{target.name}: {e}")
            raise
        f["t_back"] = time.time()
        log(f"  {target.name} back after {f['t_back'] - f['t_down']:.1f} s")


# --------------------------------------------------------------------------
# recorded operations
# --------------------------------------------------------------------------


def classify(e, conn):
    """(outcome, sqlstate) of a failed statement: 'unknown' when the
    connection broke or the commit outcome is unknown (08007), else 'failed'
    (the server says the writes were not applied)."""
    st = getattr(e, "sqlstate", None)
    broken = conn is None or conn.closed or conn.broken
    if st == "08007" or st is None or broken or st.startswith("57P"):
        return "unknown", st or "conn-lost"
    return "failed", st


def err_message(e):
    d = getattr(e, "diag", None)
    m = getattr(d, "message_primary", None) if d is not None else None
    return (m or str(e)).strip().splitlines()[0][:300]


class Session:
    """One psycopg session that reconnects when it breaks."""

    def __init__(self, pg, dbname, app):
        self.pg, self.dbname, self.app = pg, dbname, app
        self.conn = None
        self.reconnects = 0
        self.options = ""  # extra -c settings for the session

    def get(self):
        if self.conn is None or self.conn.closed or self.conn.broken:
            if self.conn is not None:
                self.reconnects += 1
                try:
                    self.conn.close()
                except Exception:  # noqa: BLE001
                    pass
            self.conn = psycopg.connect(
                self.pg.conninfo(self.dbname)
                + f" application_name={self.app} "
                f"options='-c statement_timeout={STATEMENT_TIMEOUT} {self.options}'",
                autocommit=True, connect_timeout=10,
            )
        return self.conn

    def rollback_quietly(self):
        c = self.conn
        if c is None or c.closed or c.broken:
            return
        try:
            if c.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                c.execute("ROLLBACK")
        except psycopg.Error:
            pass

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass


class Worker(threading.Thread):
    def __init__(self, name, pg, dbname, stop, rng):
        super().__init__(daemon=True, name=name)
        self.session = Session(pg, dbname, f"chaos-{name}")
        self.stop, self.rng = stop, rng
        self.ops = []  # every operation: dicts with kind, start, end, outcome, sqlstate, message
        self.crash = None

    def record(self, kind, start, outcome, sqlstate=None, message=None, **kw):
        op = {"worker": self.name, "kind": kind, "start": start, "end": time.time(),
              "outcome": outcome, "sqlstate": sqlstate, "message": message, **kw}
        self.ops.append(op)
        return op

    def run(self):
        try:
            while not self.stop.is_set():
                try:
                    self.step()
                except psycopg.OperationalError as e:
                    # connecting failed (PostgreSQL restarting after a crash?)
                    self.record("connect", time.time(), "failed", getattr(e, "sqlstate", None) or "conn",
                                err_message(e))
                    self.stop.wait(0.5)
                self.stop.wait(self.rng.uniform(0, 0.01))
            self.after_run_check()
        except Exception as e:  # noqa: BLE001
            self.crash = f"{type(e).__name__}: {e}"
            log(f"worker {self.name} died: {self.crash}")
        finally:
            self.session.close()

    def after_run_check(self):
        """Every member is back: the same session must read again (three
        tries, a second apart, for a last election)."""
        last = None
        for _ in range(3):
            try:
                self.session.get().execute("SELECT count(*) FROM kv WHERE key = 'c/none'").fetchone()
                return
            except psycopg.Error as e:
                last = f"{e.sqlstate}: {err_message(e)}"
                time.sleep(1)
        op = self.record("after-run read", time.time(), "failed", None, last)
        op["wrong"] = [f"the session cannot read after every member is back: {last}"]
        op["wrong_count"] = 1


class KvWriter(Worker):
    """Writes only keys c/<name>/<n>; every value is unique: '<name>:<seq>'.

    Per key, the operations in order: (op id, value, outcome, rowcount)."""

    def __init__(self, name, pg, dbname, stop, rng, statement_mode=False):
        super().__init__(name, pg, dbname, stop, rng)
        self.statement_mode = statement_mode
        if statement_mode:
            self.session.options = "-c etcd_fdw.commit_mode=statement"
        self.prefix = f"c/{name}/"
        self.keys = []  # keys we tried to insert
        self.model = collections.defaultdict(list)  # key -> [write dicts]
        self.seq = 0
        self.nkey = 0

    def value(self):
        self.seq += 1
        return f"{self.name}:{self.seq}"

    def new_key(self):
        self.nkey += 1
        k = f"{self.prefix}{self.nkey:06d}"
        self.keys.append(k)
        return k

    def step(self):
        r = self.rng.random()
        if r < 0.35 or not self.keys:
            self.insert()
        elif r < 0.65:
            self.update()
        elif r < 0.9 and not self.statement_mode:
            # (statement mode: a transaction's statements are applied one by
            # one, so a failed transaction may have applied some: not judged)
            self.txn()
        else:
            self.check_scan()

    def _write(self, key, value, kind, op):
        w = {"key": key, "value": value, "kind": kind, "op": op, "rowcount": None}
        self.model[key].append(w)
        return w

    def insert(self):
        c = self.session.get()
        key, v = self.new_key(), self.value()
        t0 = time.time()
        w = self._write(key, v, "insert", None)
        try:
            cur = c.execute("INSERT INTO kv (key, value) VALUES (%s, %s)", (key, v))
            w["rowcount"] = cur.rowcount
            w["op"] = self.record("insert", t0, "ok", key=key, value=v)
        except psycopg.Error as e:
            out, st = classify(e, c)
            w["op"] = self.record("insert", t0, out, st, err_message(e), key=key, value=v)

    def update(self):
        c = self.session.get()
        key, v = self.rng.choice(self.keys), self.value()
        t0 = time.time()
        w = self._write(key, v, "update", None)
        try:
            cur = c.execute("UPDATE kv SET value = %s WHERE key = %s", (v, key))
            w["rowcount"] = cur.rowcount
            w["op"] = self.record("update", t0, "ok", key=key, value=v, rowcount=cur.rowcount)
        except psycopg.Error as e:
            out, st = classify(e, c)
            w["op"] = self.record("update", t0, out, st, err_message(e), key=key, value=v)

    def txn(self):
        """BEGIN; INSERT new key; UPDATE an older key; COMMIT (one etcd Txn)."""
        c = self.session.get()
        k1, v1 = self.new_key(), self.value()
        k2, v2 = self.rng.choice(self.keys[:-1] or self.keys), self.value()
        t0 = time.time()
        w1 = self._write(k1, v1, "txn-insert", None)
        w2 = self._write(k2, v2, "txn-update", None) if k2 != k1 else None
        stage = "begin"
        try:
            c.execute("BEGIN")
            stage = "insert"
            c.execute("INSERT INTO kv (key, value) VALUES (%s, %s)", (k1, v1))
            w1["rowcount"] = 1
            if w2 is not None:
                stage = "update"
                w2["rowcount"] = c.execute("UPDATE kv SET value = %s WHERE key = %s", (v2, k2)).rowcount
            stage = "commit"
            c.execute("COMMIT")
            op = self.record("txn", t0, "ok", keys=[k1, k2], values=[v1, v2],
                             rowcount=None if w2 is None else w2["rowcount"])
        except psycopg.Error as e:
            out, st = classify(e, c)
            if stage != "commit":
                # COMMIT never ran: the pending writes were discarded (whatever the error)
                out = "failed"
            op = self.record("txn", t0, out, st, err_message(e), stage=stage, keys=[k1, k2],
                             values=[v1, v2])
            self.session.rollback_quietly()
        w1["op"] = op
        if w2 is not None:
            w2["op"] = op

    def check_scan(self):
        """Read-your-writes: scan our own prefix and compare with what we
        were told (an unknown write may or may not show)."""
        c = self.session.get()
        t0 = time.time()
        try:
            rows = c.execute(
                "SELECT key, value FROM kv WHERE key LIKE %s ORDER BY key", (self.prefix + "%",)
            ).fetchall()
        except psycopg.Error as e:
            out, st = classify(e, c)
            self.record("ryw-scan", t0, "failed" if out == "failed" else "unknown", st, err_message(e))
            return
        got = dict(rows)
        problems = []
        for key in set(got) | set(self.model):
            verdict = judge_key(self.model.get(key, []), got.get(key))
            if verdict[0] != "ok":
                problems.append((key, got.get(key), verdict))
        op = self.record("ryw-scan", t0, "ok", rows=len(rows))
        if problems:
            op["wrong"] = [f"{k}: read {g!r}: {v[0]} ({v[1]})" for k, g, v in problems[:5]]
            op["wrong_count"] = len(problems)


def judge_key(writes, final):
    """Is `final` (a value, or None for absent) a state the outcomes of
    `writes` (one key's writes, in order) allow?  (verdict, explanation)

    An acknowledged write replaces the possible states by its value; an
    unknown one (08007, connection lost) adds its value; a failed one (a
    SQLSTATE that says not applied) adds nothing; an acknowledged UPDATE
    that found no row wrote nothing.  Every write is guarded (INSERT:
    create_revision = 0, UPDATE: mod_revision as read) and the key has one
    writer, so an unknown write cannot apply after a later acknowledged one."""
    allowed = {None}
    acked = None
    failed_values = {}
    unknown_values = set()
    for w in writes:
        op = w["op"]
        if op is None:
            continue  # still running when the run stopped (cannot happen after join)
        if w["kind"] in ("update", "txn-update") and w["rowcount"] == 0:
            continue
        if op["outcome"] == "ok":
            allowed = {w["value"]}
            acked = w["value"]
        elif op["outcome"] == "unknown":
            allowed.add(w["value"])
            unknown_values.add(w["value"])
        else:
            failed_values[w["value"]] = op["sqlstate"]
    if final in allowed:
        if final is not None and final in unknown_values:
            return "ok", "an unknown write was applied"
        return "ok", ""
    if final in failed_values:
        return "lie", f"the write of {final!r} failed with {failed_values[final]} but is in etcd"
    if final is None:
        return "lost", f"acknowledged value {acked!r} is missing"
    if acked is not None:
        return "lost", f"acknowledged value {acked!r} was replaced by {final!r}"
    return "wrong", f"unexpected value {final!r}"


def gen_keys(g):
    return [f"g/{g}/k{i:02d}" for i in range(GEN_KEYS)]


def gen_expected_keys(g, gen):
    return [k for i, k in enumerate(gen_keys(g)) if (i + gen) % 3 != 0]


def gen_state(g, rows):
    """rows (key, value, mod_revision) of prefix g/<g>/ -> (problem, gen, attempt).
    One consistent generation: every value 'G:A', one mod_revision, the key
    set of generation G."""
    if not rows:
        return "empty", None, None
    vals = {r[1] for r in rows}
    revs = {r[2] for r in rows}
    if len(vals) != 1:
        return f"mixed values {sorted(vals)}", None, None
    if len(revs) != 1:
        return f"mixed mod_revisions {sorted(revs)}", None, None
    try:
        gen, att = (int(x) for x in next(iter(vals)).split(":"))
    except ValueError:
        return f"bad value {vals}", None, None
    keys = sorted(r[0] for r in rows)
    if keys != gen_expected_keys(g, gen):
        return f"key set {keys} is not generation {gen}'s", gen, att
    return None, gen, att


class GenWriter(Worker):
    """Moves prefix g/<g>/ from generation G to G+1 in one REPEATABLE READ
    transaction: value 'G+1:<attempt>' for 4 updated and 4 inserted keys, 4
    deleted: one etcd Txn of 12 guarded ops at COMMIT."""

    def __init__(self, g, pg, dbname, stop, rng):
        super().__init__(f"gen{g}", pg, dbname, stop, rng)
        self.g = g
        self.attempts = {0: {"attempt": 0, "gen": 0, "outcome": "ok", "sent": 0.0, "end": 0.0}}
        self.scans = []  # scans of the writer's own read in the transaction
        self.natt = 0

    def step(self):
        c = self.session.get()
        g = self.g
        t0 = time.time()
        stage = "begin"
        att = None
        try:
            c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            stage = "read"
            rows = c.execute(f"SELECT key, value, mod_revision FROM gen_{g} ORDER BY key").fetchall()
            self.scans.append({"g": g, "start": t0, "end": time.time(), "rows": rows,
                               "source": "gen-writer"})
            problem, gen, _a = gen_state(g, rows)
            if problem is not None:
                self.record("gen-txn", t0, "failed", "(check)", f"inconsistent read: {problem}")
                self.session.rollback_quietly()
                return
            self.natt += 1
            att = {"attempt": self.natt, "gen": gen + 1, "outcome": None, "sent": None, "end": None}
            self.attempts[self.natt] = att
            v = f"{gen + 1}:{self.natt}"
            keys = gen_keys(g)
            upd = [k for i, k in enumerate(keys) if (i + gen) % 3 == 1]
            dele = [k for i, k in enumerate(keys) if (i + gen) % 3 == 2]
            ins = [k for i, k in enumerate(keys) if (i + gen) % 3 == 0]
            stage = "update"
            n1 = c.execute(f"UPDATE gen_{g} SET value = %s WHERE key = ANY(%s)", (v, upd)).rowcount
            stage = "delete"
            n2 = c.execute(f"DELETE FROM gen_{g} WHERE key = ANY(%s)", (dele,)).rowcount
            stage = "insert"
            n3 = c.execute(
                f"INSERT INTO gen_{g} (key, value) SELECT k, %s FROM unnest(%s::text[]) k", (v, ins)
            ).rowcount
            if (n1, n2, n3) != (4, 4, 4):
                att["outcome"], att["end"] = "failed", time.time()
                op = self.record("gen-txn", t0, "failed", "(check)",
                                 f"rowcounts {n1}/{n2}/{n3}, expected 4/4/4", attempt=self.natt)
                op["wrong"] = [f"gen_{g}: UPDATE/DELETE/INSERT affected {n1}/{n2}/{n3} rows of a "
                               f"consistent generation {gen} (expected 4/4/4)"]
                op["wrong_count"] = 1
                self.session.rollback_quietly()
                return
            stage = "commit"
            att["sent"] = time.time()
            c.execute("COMMIT")
            att["outcome"], att["end"] = "ok", time.time()
            self.record("gen-txn", t0, "ok", attempt=self.natt)
        except psycopg.Error as e:
            out, st = classify(e, c)
            if stage != "commit":
                out = "failed"
            if att is not None:
                att["outcome"], att["end"] = out, time.time()
                att["sqlstate"] = st
            self.record("gen-txn", t0, out, st, err_message(e), stage=stage,
                        attempt=None if att is None else att["attempt"])
            self.session.rollback_quietly()


class Scanner(Worker):
    """Scans the generation prefixes (several pages each: fetch_size 3)."""

    def __init__(self, name, pg, dbname, stop, rng, gens):
        super().__init__(name, pg, dbname, stop, rng)
        self.gens = gens
        self.scans = []

    def step(self):
        c = self.session.get()
        g = self.rng.choice(self.gens)
        t0 = time.time()
        try:
            rows = c.execute(f"SELECT key, value, mod_revision FROM gen_{g} ORDER BY key").fetchall()
        except psycopg.Error as e:
            out, st = classify(e, c)
            self.record("gen-scan", t0, "failed" if out == "failed" else "unknown", st, err_message(e))
            return
        op = self.record("gen-scan", t0, "ok", g=g, rows=len(rows))
        self.scans.append({"g": g, "start": t0, "end": op["end"], "rows": rows, "source": self.name,
                           "op": op})


def check_gen_scan(scan, attempts):
    """None, or what is wrong with one scan of a generation prefix:
    inconsistent (not one generation), a failed attempt's data (a lie), stale
    (older than a commit acknowledged before the scan started), or from the
    future (an attempt whose COMMIT was sent after the scan ended)."""
    problem, _gen, att = gen_state(scan["g"], scan["rows"])
    if problem is not None:
        return "wrong", problem
    a = attempts.get(att)
    if a is None:
        return "wrong", f"attempt {att} was never made"
    if a["outcome"] not in ("ok", "unknown", None):  # None: still in flight (a hung writer)
        return "lie", f"attempt {att} failed ({a.get('sqlstate')}) but its data is read"
    if a["sent"] is not None and a["sent"] > scan["end"]:
        return "wrong", f"attempt {att} was sent after the scan ended"
    newest_acked = max(
        (n for n, x in attempts.items() if x["outcome"] == "ok" and x["end"] is not None
         and x["end"] < scan["start"]),
        default=0,
    )
    if att < newest_acked:
        return "wrong", (f"stale: read attempt {att}, attempt {newest_acked} was acknowledged "
                         "before the scan started")
    return None


# --------------------------------------------------------------------------
# pgbench readers
# --------------------------------------------------------------------------

PGBENCH_SCRIPTS = {
    # pgbench aborts a client on any error, so every answer is checked in SQL:
    # chaos_check() raises XCW01 ("wrong result") when it is not the expected one
    "lookup": (6, """\\set k random({lo}, {hi})
SELECT chaos_check(count(*) = 1 AND min(value) = 'v' || :k, 'lookup ' || :k) FROM rd WHERE key = :k;
\\sleep {sleep} ms
"""),
    "prefix-scan": (2, """SELECT chaos_check(count(*) = 100 AND min(key) = '1001000' AND max(key) = '1001099'
  AND bool_and(value = 'v' || key), 'prefix scan 10010%') FROM rd WHERE key LIKE '10010%';
\\sleep {sleep} ms
"""),
}


def pgbench_gen_script(g, sleep):
    return (f"SELECT chaos_gen_check(array_agg(key ORDER BY key), array_agg(value ORDER BY key), "
            f"array_agg(mod_revision ORDER BY key), 'g/{g}/') FROM gen_{g};\n\\sleep {sleep} ms\n")


class PgbenchReader(threading.Thread):
    """One pgbench client (-c 1) in a loop: pgbench aborts the client on an
    error, so it is started again for the rest of the run."""

    def __init__(self, i, pg, dbname, scripts, deadline, stop):
        super().__init__(daemon=True, name=f"pgbench{i}")
        self.i, self.pg, self.dbname, self.scripts = i, pg, dbname, scripts
        self.deadline, self.stop = deadline, stop
        self.runs = 0
        self.aborts = []  # (time, script kind, message)
        self.counts = collections.Counter()  # script kind -> transactions
        self.failures = []
        self.proc = None

    def run(self):
        while not self.stop.is_set():
            remaining = int(self.deadline - time.time())
            if remaining < 1:
                break
            cmd = [pgbench_path(), "-n", "-M", "prepared", "-c", "1", "-j", "1", "-T", str(remaining),
                   *[a for path, w in self.scripts for a in ("-f", f"{path}@{w}")],
                   "-h", self.pg.sockdir, "-p", str(self.pg.port), "-U", "postgres", self.dbname]
            env = {**os.environ, "PGAPPNAME": f"chaos-pgbench{self.i}",
                   "PGOPTIONS": f"-c statement_timeout={STATEMENT_TIMEOUT}"}
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True, env=env)
            out, err = self.proc.communicate()
            self.runs += 1
            self.parse(out, err, self.proc.returncode)
            if self.proc.returncode not in (0, 2):
                self.failures.append(f"pgbench exit {self.proc.returncode}: {err.strip()[-500:]}")
                self.stop.wait(1)

    def parse(self, out, err, rc):
        names = [os.path.basename(p) for p, _w in self.scripts]
        for m in re.finditer(r"SQL script (\d+): (\S+)\n - weight: [^\n]*\n - (\d+) transactions", out):
            self.counts[script_kind(os.path.basename(m.group(2)))] += int(m.group(3))
        if not re.search(r"SQL script \d+:", out):
            m = re.search(r"number of transactions actually processed: (\d+)", out)
            if m and len(names) == 1:
                self.counts[script_kind(names[0])] += int(m.group(1))
        for line in err.splitlines():
            m = re.search(r"client \d+ (?:script (\d+) )?aborted in command \d+ (?:\(SQL\) )?"
                          r"(?:of script (\d+))?[^:]*: (.*)", line)
            if m:
                idx = int(m.group(1) or m.group(2) or 0)
                self.aborts.append((time.time(), script_kind(names[idx]) if idx < len(names) else "?",
                                    m.group(3).strip()))


def script_kind(name):
    name = name.rsplit(".", 1)[0]
    return "gen-scan (pgbench)" if name.startswith("gen") else f"{name} (pgbench)"


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------

SETUP_SQL = """
CREATE EXTENSION etcd_fdw;
CREATE FOREIGN DATA WRAPPER etcd_fdw HANDLER etcd_fdw_handler VALIDATOR etcd_fdw_validator;
CREATE SERVER s FOREIGN DATA WRAPPER etcd_fdw
  OPTIONS (connstr '{connstr}', connect_timeout '{ct}', request_timeout '{rt}');
CREATE FOREIGN TABLE kv (key text, value text, mod_revision bigint) SERVER s
  OPTIONS (rowid_column 'key', prefix 'c/');
CREATE FOREIGN TABLE rd (key text, value text) SERVER s
  OPTIONS (rowid_column 'key', key '{rd_lo}', range_end '{rd_end}');
CREATE FUNCTION chaos_check(ok boolean, what text) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  IF ok IS NOT TRUE THEN
    RAISE EXCEPTION USING ERRCODE = 'XCW01', MESSAGE = 'chaos: wrong result: ' || what;
  END IF;
  RETURN 1;
END $$;
CREATE FUNCTION chaos_gen_check(keys text[], vals text[], revs bigint[], prefix text)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
  g int;
  expected text[];
BEGIN
  IF keys IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'XCW01', MESSAGE = 'chaos: wrong result: ' || prefix || ' is empty';
  END IF;
  IF EXISTS (SELECT 1 FROM unnest(vals) v WHERE v IS DISTINCT FROM vals[1])
     OR EXISTS (SELECT 1 FROM unnest(revs) r WHERE r IS DISTINCT FROM revs[1]) THEN
    RAISE EXCEPTION USING ERRCODE = 'XCW01', MESSAGE = 'chaos: wrong result: ' || prefix
      || ' is not one generation: ' || array_to_string(vals, ',') || ' @ ' || array_to_string(revs, ',');
  END IF;
  g := split_part(vals[1], ':', 1)::int;
  expected := ARRAY(SELECT prefix || 'k' || lpad(i::text, 2, '0') FROM generate_series(0, {nk} - 1) i
                    WHERE (i + g) % 3 <> 0 ORDER BY 1);
  IF keys IS DISTINCT FROM expected THEN
    RAISE EXCEPTION USING ERRCODE = 'XCW01', MESSAGE = 'chaos: wrong result: ' || prefix
      || ' keys ' || array_to_string(keys, ',') || ' are not generation ' || g || '''s';
  END IF;
  RETURN 1;
END $$;
"""

LOG_RE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC \[(\d+)\] app=(\S*) state=(\w{5}) "
    r"(ERROR|FATAL|PANIC|LOG|WARNING|STATEMENT|DETAIL|HINT|CONTEXT):\s+(.*)$"
)
CRASH_RE = re.compile(
    r"terminated by signal|was terminated|PANIC|exited with exit code [1-9]|"
    r"all server processes terminated|reinitializing|database system was interrupted"
)


class Run:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.stop_faults = threading.Event()
        self.stop_work = threading.Event()
        self.tl = Timeline()
        self.cluster = None
        self.pg = None
        self.tmp = os.path.join(a.out, "tmp")
        os.makedirs(self.tmp, exist_ok=True)
        self.gens = list(range(1, a.gen_writers + 1))

    # -- set-up ----------------------------------------------------------------
    def start(self):
        a = self.a
        log(f"starting a 3-member etcd {a.etcd_version} cluster and PostgreSQL {harness.PG_MAJOR}")
        self.cluster = EtcdCluster(version=a.etcd_version)
        self.cluster.start()
        self.pg = harness.PgCluster()
        self.pg.start()
        admin = self.pg.connect("postgres")
        admin.execute("ALTER SYSTEM SET log_line_prefix = '%m [%p] app=%a state=%e '")
        admin.execute("SELECT pg_reload_conf()")
        admin.execute("CREATE DATABASE chaos")
        admin.close()
        c = self.pg.connect("chaos")
        c.execute(SETUP_SQL.format(connstr=self.cluster.connstr, ct=CONNECT_TIMEOUT, rt=REQUEST_TIMEOUT,
                                   rd_lo=RD_BASE, rd_end=2 * RD_BASE, nk=GEN_KEYS))
        for g in self.gens:
            c.execute(f"CREATE FOREIGN TABLE gen_{g} (key text, value text, mod_revision bigint) "
                      f"SERVER s OPTIONS (rowid_column 'key', prefix 'g/{g}/', fetch_size '3')")
        c.close()
        # data: read-only keys for pgbench, generation 0 of each generation prefix (one txn each)
        self.cluster.put_many({str(RD_BASE + i): f"v{RD_BASE + i}" for i in range(a.rd_keys)})
        for g in self.gens:
            self.cluster.put_many({k: "0:0" for k in gen_expected_keys(g, 0)})
        # pgbench scripts
        sleep = a.pgbench_sleep_ms
        self.scripts = []
        for name, (w, text) in PGBENCH_SCRIPTS.items():
            path = os.path.join(self.tmp, f"{name}.sql")
            with open(path, "w") as f:
                f.write(text.format(lo=RD_BASE, hi=RD_BASE + a.rd_keys - 1, sleep=sleep))
            self.scripts.append((path, w))
        for g in self.gens:
            path = os.path.join(self.tmp, f"gen{g}.sql")
            with open(path, "w") as f:
                f.write(pgbench_gen_script(g, sleep))
            self.scripts.append((path, 1))
        # a quick check that it all works before the chaos starts
        c = self.pg.connect("chaos")
        assert c.execute("SELECT count(*) FROM rd").fetchone()[0] == a.rd_keys
        for g in self.gens:
            c.execute(f"SELECT chaos_gen_check(array_agg(key ORDER BY key), array_agg(value ORDER BY key), "
                      f"array_agg(mod_revision ORDER BY key), 'g/{g}/') FROM gen_{g}")
        c.close()

    # -- the run -------------------------------------------------------------------
    def run(self):
        a = self.a
        self.start()
        self.log_offset = self.pg.log_size()
        t_start = time.time()
        deadline = t_start + a.duration
        self.writers = [KvWriter(f"w{i}", self.pg, "chaos", self.stop_work, random.Random(self.rng.random()))
                        for i in range(1, a.writers + 1)]
        self.writers += [KvWriter(f"sw{i}", self.pg, "chaos", self.stop_work, random.Random(self.rng.random()),
                                  statement_mode=True)
                         for i in range(1, a.statement_writers + 1)]
        self.genw = [GenWriter(g, self.pg, "chaos", self.stop_work, random.Random(self.rng.random()))
                     for g in self.gens]
        self.scanners = [Scanner(f"s{i}", self.pg, "chaos", self.stop_work,
                                 random.Random(self.rng.random()), self.gens)
                         for i in range(1, a.scanners + 1)]
        self.readers = [PgbenchReader(i, self.pg, "chaos", self.scripts, deadline, self.stop_work)
                        for i in range(1, a.readers + 1)]
        self.monitor = Monitor(self.cluster, self.tl, self.stop_faults)
        self.chaos = Chaos(self.cluster, self.tl, self.stop_faults, random.Random(self.rng.random()),
                           a.leader_share)
        workers = self.writers + self.genw + self.scanners
        log(f"running {a.duration:.0f} s: {a.writers} writers"
            + (f" + {a.statement_writers} in statement mode" if a.statement_writers else "")
            + f", {len(self.genw)} generation "
            f"writers, {len(self.scanners)} scanners, {len(self.readers)} pgbench clients"
            + ("" if a.no_faults else "; faults every 2-6 s"))
        self.monitor.start()
        for t in workers + self.readers:
            t.start()
        if not a.no_faults:
            self.chaos.start()
        sabotaged = False
        while time.time() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.time())))
            if a.sabotage and not sabotaged and time.time() > t_start + a.duration / 2:
                sabotaged = True
                self.sabotage_mid_run()
        t_end = time.time()
        log("time is up: stopping the faults, bringing every member back")
        self.stop_faults.set()
        if not a.no_faults:
            self.chaos.join(120)
        self.hung = []
        try:
            self.cluster.ensure_all_running(timeout=60)
        except Exception as e:  # noqa: BLE001
            self.tl.recovery_failures.append(f"final recovery: {e}")
        self.stop_work.set()
        for t in workers + self.readers:
            t.join(120)
            if t.is_alive():
                self.hung.append(t.name)
                if isinstance(t, PgbenchReader) and t.proc is not None:
                    t.proc.kill()
        self.monitor.join(10)
        self.t_start, self.t_end = t_start, t_end
        time.sleep(2)  # a request queued at a member applies now, or never
        if a.sabotage:
            self.sabotage_at_end()
        return self.verify()

    # -- --sabotage: prove that the checks see what they are meant to see -----------
    def sabotage_mid_run(self):
        """Change data behind the FDW's back: a key every pgbench prefix scan
        reads gets another value, and generation prefix g/1/ gets a key no
        generation has (both must be reported as wrong results)."""
        log("sabotage: tampering with key 1001000 and prefix g/1/")
        self.cluster.put_many({"1001000": "tampered", "g/1/k99": "0:0"})

    def sabotage_at_end(self):
        """Delete an acknowledged key, write the value of a failed write (or a
        stray key) and one never written: lost, lie/wrong must be reported."""
        w = self.writers[0]
        acked = [wr for wr in (x for ws in w.model.values() for x in ws)
                 if wr["op"] is not None and wr["op"]["outcome"] == "ok" and wr["kind"] == "insert"]
        failed = [wr for wr in (x for ws in w.model.values() for x in ws)
                  if wr["op"] is not None and wr["op"]["outcome"] == "failed"]
        if acked:
            log(f"sabotage: deleting acknowledged key {acked[0]['key']}")
            self.cluster.ctl("del", "--", acked[0]["key"])
        if failed:
            log(f"sabotage: applying the failed write {failed[0]['key']} = {failed[0]['value']}")
            self.cluster.ctl("put", "--", failed[0]["key"], failed[0]["value"])
        log(f"sabotage: writing the stray key {w.prefix}999999")
        self.cluster.ctl("put", "--", f"{w.prefix}999999", "stray")

    # -- checks --------------------------------------------------------------------
    def read_final(self, prefix):
        last = None
        for _ in range(10):
            try:
                return self.cluster.get_prefix(prefix)
            except Exception as e:  # noqa: BLE001
                last = e
                time.sleep(1)
        raise RuntimeError(f"cannot read {prefix} from etcd: {last}")

    def replicas_agree(self, prefix, rev, expected):
        """Each member, read serializably at revision rev, holds the same keys."""
        bad = []
        for m in self.cluster.members:
            for _ in range(30):
                try:
                    _r, kvs = self.cluster.get_prefix(prefix, members=[m], consistency="s", rev=rev)
                    break
                except Exception:  # noqa: BLE001  (not caught up yet: future revision)
                    time.sleep(0.5)
            else:
                bad.append(f"{m.name}: cannot read revision {rev}")
                continue
            if kvs != expected:
                diff = sorted(k for k in set(kvs) | set(expected) if kvs.get(k) != expected.get(k))[:3]
                bad.append(f"{m.name} differs at revision {rev} on {diff}")
        return bad

    def verify(self):
        a = self.a
        res = {"lost": [], "lies": [], "wrong": [], "crashes": [], "notes": []}
        # 1. every key written by the kv writers, against etcd
        rev, final = self.read_final("c/")
        final_v = {k: kv["value"] for k, kv in final.items()}
        acked = unknown = unknown_applied = 0
        keys_written = 0
        for w in self.writers:
            for key, writes in w.model.items():
                keys_written += 1
                verdict, why = judge_key(writes, final_v.get(key))
                if verdict == "lost":
                    res["lost"].append(f"{key}: {why}")
                elif verdict == "lie":
                    res["lies"].append(f"{key}: {why}")
                elif verdict == "wrong":
                    res["wrong"].append(f"{key}: {why}")
                elif why:
                    unknown_applied += 1
            for op in w.ops:
                if op["kind"] in ("insert", "update", "txn"):
                    if op["outcome"] == "ok":
                        acked += 1
                    elif op["outcome"] == "unknown":
                        unknown += 1
            stray = [k for k in final_v if k.startswith(w.prefix) and k not in w.model]
            res["wrong"] += [f"{k}: in etcd, never written" for k in stray]
        # 2. the generation prefixes: every scan, and the final state
        scans = [s for x in self.scanners for s in x.scans] + [s for x in self.genw for s in x.scans]
        gen_checked = 0
        for gw in self.genw:
            for s in [s for s in scans if s["g"] == gw.g]:
                gen_checked += 1
                p = check_gen_scan(s, gw.attempts)
                if p is not None:
                    (res["lies"] if p[0] == "lie" else res["wrong"]).append(
                        f"scan of g/{gw.g}/ by {s['source']} at +{s['start'] - self.t_start:.1f}s: {p[1]}")
            _r, kvs = self.read_final(f"g/{gw.g}/")
            rows = [(k, kv["value"], kv["mod_revision"]) for k, kv in kvs.items()]
            final_scan = {"g": gw.g, "start": time.time(), "end": time.time(), "rows": rows}
            p = check_gen_scan(final_scan, gw.attempts)
            if p is not None:
                target = res["lies"] if p[0] == "lie" else res["lost"] if "stale" in p[1] else res["wrong"]
                target.append(f"final state of g/{gw.g}/: {p[1]}")
            for att in gw.attempts.values():
                if att["attempt"] == 0:
                    continue
                if att["outcome"] == "ok":
                    acked += 1
                elif att["outcome"] == "unknown":
                    unknown += 1
        # 3. replicas
        res["notes"] += self.replicas_agree("c/", rev, final)
        # 4. read checks made during the run
        for w in self.writers + self.genw:
            for op in w.ops:
                if op.get("wrong"):
                    res["wrong"] += [f"{w.name} {op['kind']} at +{op['start'] - self.t_start:.1f}s: {x}"
                                     for x in op["wrong"]]
        # 5. the PostgreSQL log: crashes, and the pgbench sessions' errors
        pglog = self.pg.log_since(self.log_offset, limit=10**9)
        pg_errors = []
        stmt_by_pid = {}
        for line in pglog.splitlines():
            if CRASH_RE.search(line):
                res["crashes"].append(line.strip()[:300])
            m = LOG_RE.match(line)
            if not m:
                continue
            ts, pid, app, state, level, msg = m.groups()
            if level == "ERROR" and app.startswith("chaos-pgbench"):
                t = dt.datetime.strptime(ts, "%Y-%m-%d %H:%M:%S.%f").replace(
                    tzinfo=dt.timezone.utc).timestamp()
                e = {"t": t, "sqlstate": state, "message": msg[:300], "pid": pid, "kind": None}
                pg_errors.append(e)
                stmt_by_pid[pid] = e
            elif level == "STATEMENT" and pid in stmt_by_pid:
                e = stmt_by_pid.pop(pid)
                e["kind"] = ("gen-scan (pgbench)" if "chaos_gen_check" in msg else
                             "prefix-scan (pgbench)" if "LIKE" in msg else "lookup (pgbench)")
        for e in pg_errors:
            if e["sqlstate"] == "XCW01":
                res["wrong"].append(f"pgbench {e['kind']} at +{e['t'] - self.t_start:.1f}s: {e['message']}")
        for x in self.writers + self.genw + self.scanners:
            if x.crash:
                res["crashes"].append(f"worker {x.name} raised {x.crash}")
        for r in self.readers:
            res["notes"] += r.failures
        if self.hung:
            res["crashes"].append(f"threads still running 120 s after the end: {self.hung}")
        if self.tl.recovery_failures:
            res["notes"] += [f"recovery failed: {x}" for x in self.tl.recovery_failures]
        if self.chaos.error:
            res["notes"].append(f"chaos driver: {self.chaos.error}")

        self.res = res
        self.pg_errors = pg_errors
        self.summary = dict(acked=acked, unknown=unknown, unknown_applied=unknown_applied,
                            keys_written=keys_written, gen_scans_checked=gen_checked)
        return self.report()

    # -- report --------------------------------------------------------------------
    def report(self):
        a, res = self.a, self.res
        ops = [op for x in self.writers + self.genw + self.scanners for op in x.ops]
        kinds = collections.OrderedDict()

        def bump(kind, outcome, n=1):
            k = kinds.setdefault(kind, collections.Counter())
            k[outcome] += n
            k["total"] += n

        for r in self.readers:
            for kind, n in r.counts.items():
                bump(kind, "ok", n)
        for e in self.pg_errors:
            bump(e["kind"] or "? (pgbench)", "error")
        for op in ops:
            bump(op["kind"], "ok" if op["outcome"] == "ok" else
                 "unknown" if op["outcome"] == "unknown" else "error")
        # errors by SQLSTATE and phase
        # (pgbench errors: the time PostgreSQL logged them; ours: the whole operation)
        errs = [(op["sqlstate"] or "?", op["start"], op["end"], op["message"] or "")
                for op in ops if op["outcome"] != "ok"]
        errs += [(e["sqlstate"], e["t"], e["t"], e["message"]) for e in self.pg_errors]
        by_state = collections.defaultdict(collections.Counter)
        examples = {}
        election_msgs = collections.Counter()
        for st, t0, t1, msg in errs:
            by_state[st][self.tl.phase_during(t0, t1)] += 1
            examples.setdefault(st, collections.Counter())[normalize(msg)] += 1
            if any(x in msg for x in ELECTION_TEXTS):
                election_msgs[(st, normalize(msg))] += 1
        durations = self.tl.durations(self.t_start, self.t_end)
        faults = self.tl.faults
        lines = []
        P = lines.append
        P("")
        P("=" * 100)
        P(f"etcd_fdw chaos run: {a.duration:.0f} s, etcd {a.etcd_version} x3, PostgreSQL {harness.PG_MAJOR}, "
          f"seed {a.seed}")
        P(f"faults: {len(faults)} ({sum(f['how'] == 'kill' for f in faults)} SIGKILL+restart, "
          f"{sum(f['how'] == 'stop' for f in faults)} SIGSTOP+SIGCONT; "
          f"{sum(f['leader'] for f in faults)} on the leader); elections seen: {len(self.tl.elections)}")
        P("phases: " + ", ".join(f"{p} {durations.get(p, 0):.1f} s" for p in PHASES)
          + "  (quorum up = the first three)")
        P("")
        P(f"{'operation':<34}{'total':>9}{'ok':>9}{'errors':>9}{'unknown':>9}")
        for kind, c in kinds.items():
            P(f"  {kind:<32}{c['total']:>9}{c['ok']:>9}{c['error']:>9}{c['unknown']:>9}")
        tot = sum(c["total"] for c in kinds.values())
        P(f"  {'all':<32}{tot:>9}")
        P("")
        s = self.summary
        rows = [
            ("acknowledged writes (commits)", s["acked"], ""),
            ("unknown-outcome writes (08007 / connection lost)", s["unknown"],
             f"of their keys, {s['unknown_applied']} show the unknown write"),
            ("keys checked in etcd", s["keys_written"], f"+ {len(self.gens)} generation prefixes"),
            ("generation scans checked", s["gen_scans_checked"], "one generation, not stale, not failed"),
            ("LOST (acknowledged write missing)", len(res["lost"]), "must be 0"),
            ("LIES (failed, not 08007, yet applied)", len(res["lies"]), "must be 0"),
            ("WRONG results", len(res["wrong"]), "must be 0"),
            ("CRASHES (backend / hung / worker)", len(res["crashes"]), "must be 0"),
        ]
        for label, n, note in rows:
            P(f"{label:<52}{n:>9}   {note}")
        P("")
        P("errors by SQLSTATE and phase:")
        P(f"  {'SQLSTATE':<10}" + "".join(f"{p:>17}" for p in PHASES) + f"{'total':>8}")
        for st in sorted(by_state):
            c = by_state[st]
            P(f"  {st:<10}" + "".join(f"{c.get(p, 0):>17}" for p in PHASES) + f"{sum(c.values()):>8}")
        P("  most frequent messages:")
        for st in sorted(examples):
            for msg, n in examples[st].most_common(4):
                P(f"    {st} x{n}: {msg}")
        P(f"  etcd's election errors seen: {sum(election_msgs.values())}")
        if election_msgs:
            P("  etcd's election errors (etcdserver: leader changed / no leader / request timed out):")
            for (st, msg), n in election_msgs.most_common(8):
                P(f"    {st} x{n}: {msg}")
        aborts = sum(len(r.aborts) for r in self.readers)
        P(f"pgbench: {sum(r.runs for r in self.readers)} runs of {len(self.readers)} clients, "
          f"{aborts} client aborts (each is one error above)")
        longest = sorted(ops, key=lambda o: o["end"] - o["start"], reverse=True)[:3]
        if longest:
            P("longest operations: " + "; ".join(
                f"{o['kind']} {o['end'] - o['start']:.1f}s ({o['outcome']}{' ' + o['sqlstate'] if o['sqlstate'] else ''})"
                for o in longest))
        recon = sum(x.session.reconnects for x in self.writers + self.genw + self.scanners)
        P(f"client reconnects (session lost): {recon}")
        for title, key in (("LOST", "lost"), ("LIES", "lies"), ("WRONG", "wrong"), ("CRASHES", "crashes"),
                           ("notes", "notes")):
            if res[key]:
                P(f"{title}:")
                for x in res[key][:20]:
                    P(f"  {x}")
                if len(res[key]) > 20:
                    P(f"  ... {len(res[key]) - 20} more")
        bad = len(res["lost"]) + len(res["lies"]) + len(res["wrong"]) + len(res["crashes"])
        if any("differs at revision" in n for n in res["notes"]):
            P("etcd's members disagree at one revision: an inconsistency inside etcd itself "
              "(etcd 3.5.0-3.5.2: etcd-io/etcd#13766), which no client can cause; losses "
              "above may come from it")
        P("RESULT: " + ("PASS" if bad == 0 else "FAIL"))
        P("=" * 100)
        text = "\n".join(lines)
        print(text, flush=True)
        with open(os.path.join(a.out, "summary.txt"), "w") as f:
            f.write(text + "\n")
        with open(os.path.join(a.out, "summary.json"), "w") as f:
            json.dump({"args": vars(a), "summary": s, "results": res,
                       "faults": faults, "elections": self.tl.elections,
                       "errors_by_sqlstate_phase": {k: dict(v) for k, v in by_state.items()},
                       "operations": {k: dict(v) for k, v in kinds.items()},
                       "t_start": self.t_start, "t_end": self.t_end}, f, indent=1, default=str)
        return 0 if bad == 0 else 1

    def keep_logs(self):
        """Copy the PostgreSQL and etcd logs into the output directory."""
        try:
            if self.pg is not None:
                shutil.copy(self.pg.logfile, os.path.join(self.a.out, "postgres.log"))
            if self.cluster is not None:
                for m in self.cluster.members:
                    shutil.copy(m.logfile, os.path.join(self.a.out, f"etcd-{m.name}.log"))
        except OSError:
            pass

    def destroy(self):
        self.stop_faults.set()
        self.stop_work.set()
        self.keep_logs()
        if self.pg is not None:
            self.pg.destroy()
        if self.cluster is not None:
            self.cluster.destroy()


def normalize(msg):
    """An error message without its keys and numbers (for counting kinds)."""
    msg = re.sub(r'"[^"]*"', '"…"', msg)
    msg = re.sub(r"\b\d+(\.\d+)?\b", "N", msg)
    return msg[:160]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=120, help="seconds of load and faults (default 120)")
    p.add_argument("--writers", type=int, default=4, help="Python writer sessions (default 4)")
    p.add_argument("--statement-writers", type=int, default=0,
                   help="more writers, in commit_mode 'statement' (INSERT/UPDATE only; default 0): "
                        "their failed writes are judged like the others")
    p.add_argument("--gen-writers", type=int, default=2, help="generation writers (default 2)")
    p.add_argument("--scanners", type=int, default=2, help="Python scanner sessions (default 2)")
    p.add_argument("--readers", type=int, default=3, help="pgbench clients (default 3)")
    p.add_argument("--pgbench-sleep-ms", type=int, default=5,
                   help="pause after each pgbench transaction, to leave CPU to the rest (default 5)")
    p.add_argument("--rd-keys", type=int, default=2000, help="read-only keys for pgbench (default 2000)")
    p.add_argument("--leader-share", type=float, default=0.5,
                   help="share of faults that hit the leader (default 0.5)")
    p.add_argument("--no-faults", action="store_true", help="the same load without faults (a baseline)")
    p.add_argument("--sabotage", action="store_true",
                   help="self-test: tamper with etcd behind the FDW's back (mid-run and before the "
                        "checks); the run must then FAIL with lost and wrong results")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    # the matrix's etcds (tests/harness.py): Debian 12's 3.4.23 (etcd34, the
    # default) and Debian trixie's 3.5.x (etcd35); a version or an id
    p.add_argument("--etcd-version", default=harness.ETCD34, choices=sorted(harness.ETCD_VERSION_IDS),
                   type=lambda v: harness.ETCD_VERSION_OF.get(v, v),
                   help=f"etcd of the cluster: {', '.join(f'{v} ({i})' for v, i in harness.ETCD_VERSION_IDS.items())}; "
                        f"default {harness.ETCD34}")
    p.add_argument("--out", default=os.path.join(HERE, "results"),
                   help="directory for summary.txt/.json and the logs (default chaos/results)")
    a = p.parse_args(argv)
    if a.seed is None:
        a.seed = random.randrange(1 << 30)
    if a.rd_keys < 1100:
        p.error("--rd-keys: at least 1100 (the prefix scan reads keys 1001000..1001099)")
    os.makedirs(a.out, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run = Run(a)
    try:
        return run.run()
    finally:
        run.destroy()


if __name__ == "__main__":
    sys.exit(main())
