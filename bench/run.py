#!/usr/bin/env python3
"""etcd_fdw benchmark: the FDW against a raw etcd-client program.

Starts its own etcd and PostgreSQL (15 by default; ETCD_FDW_PG=16|17|18, as
`scripts/bench.sh --pg N` sets it; helpers of tests/harness.py),
loads data with the raw client (bench/rawclient, `rawclient load`), then runs
every workload through the FDW and through the raw client, alternating the
two (fdw, raw, fdw, raw, ...), and writes

  bench/results/RESULTS.md    table of medians, ratios, targets + machine
  bench/results/scan.svg      full-scan time vs N, FDW and raw client
  bench/results/results.json  every sample
  (bench/results/pgNN/ for PostgreSQL 16 to 18)

Usage: python3 bench/run.py [--quick] [--sizes 10k,100k,1M] [--reps 5] ...
(run `bash scripts/bench.sh` to build the release extension and raw client
first).  The installed extension is used as is: a debug build gives poor
numbers.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import math
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import harness  # noqa: E402
import psycopg  # noqa: E402

RAWCLIENT = os.path.join(ROOT, "target", "release", "rawclient")
PGBENCH = os.path.join(harness.PG_BIN, "pgbench")

# a sample shorter than this is repeated (same count on both sides)
MIN_SAMPLE_S = 0.25
MAX_ITERS = 500

LOOKUP_BASE = 1_000_000  # numeric lookup keys: 1000000 .. 1000000+L-1


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_size(s):
    s = s.strip().lower().replace("_", "")
    mult = 1
    if s.endswith("k"):
        mult, s = 1000, s[:-1]
    elif s.endswith("m"):
        mult, s = 1_000_000, s[:-1]
    return int(float(s) * mult)


def fmt_n(n):
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def fmt_time(s):
    if s is None:
        return "-"
    if s >= 10:
        return f"{s:.1f} s"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 0.01:
        return f"{s * 1000:.1f} ms"
    return f"{s * 1000:.3f} ms"


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------
# the two sides
# --------------------------------------------------------------------------


class Raw:
    """Runs the rawclient program; every call returns its JSON output."""

    def __init__(self, endpoint, fetch_size, batch_size):
        self.endpoint = endpoint
        self.fetch_size = fetch_size
        self.batch_size = batch_size

    def fetch_args(self):
        """No --fetch-size: the same adaptive paging as the FDW's default."""
        return [] if self.fetch_size is None else ["--fetch-size", self.fetch_size]

    def run(self, cmd, *args, timeout=3600):
        argv = [RAWCLIENT, cmd, "--endpoint", self.endpoint, *[str(a) for a in args]]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise BenchError(f"rawclient {cmd} failed ({p.returncode}): {p.stderr.strip()}")
        return json.loads(p.stdout.strip().splitlines()[-1])

    def load(self, prefix, count, value_size=100, layout="scan", base=0):
        return self.run(
            "load", "--prefix", prefix, "--count", count, "--value-size", value_size,
            "--layout", layout, "--base", base, "--batch", self.batch_size,
        )

    def scan(self, prefix, repeat=1, desc=False, limit=None, keys_only=False, single=False):
        args = ["--prefix", prefix, "--repeat", repeat, *self.fetch_args()]
        if single:
            args.append("--single-request")
        if desc:
            args.append("--desc")
        if limit is not None:
            args += ["--limit", limit]
        if keys_only:
            args.append("--keys-only")
        return self.run("scan", *args)


    def count(self, prefix, repeat=1):
        return self.run("count", "--prefix", prefix, "--repeat", repeat)

    def keylist(self, keys_file, repeat=1):
        return self.run("keylist", "--keys-file", keys_file, "--batch", self.batch_size,
                        "--repeat", repeat)


class Fdw:
    """One PostgreSQL session that stays open; times statements around execute."""

    def __init__(self, cluster, dbname):
        self.cluster = cluster
        self.dbname = dbname
        self.conn = cluster.connect(dbname)
        self.conn.execute("SET statement_timeout = 0")

    def timed(self, sql, params=None, iters=1):
        """(seconds for `iters` executions, rows of the last, rowcount)."""
        cur = self.conn.cursor()
        rows = None
        t0 = time.perf_counter()
        for _ in range(iters):
            cur.execute(sql, params)
            rows = cur.fetchall() if cur.description is not None else None
        el = time.perf_counter() - t0
        return el, rows, cur.rowcount

    def scalar(self, sql, params=None):
        r = self.conn.execute(sql, params).fetchone()
        return None if r is None else r[0]


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------


class Sampler:
    """While a run lasts (a `with` block), every 100 ms: the TCP
    connections established to etcd's client port (remote port, any
    process, /proc/net/tcp), and, given the PostgreSQL cluster, the
    RssAnon of each of its backends of database bench (but `exclude`)."""

    def __init__(self, etcd_port, pg, exclude=None):
        self.port = etcd_port
        self.pg = pg
        self.exclude = exclude
        self.max_conns = 0
        self.rss_kb = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        return False

    def conns_now(self):
        return harness.connections_to(self.port)

    def _backends(self):
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == self.exclude:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    title = f.read()
                if not title.startswith(b"postgres: postgres bench"):
                    continue
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("RssAnon:"):
                            kb = int(line.split()[1])
                            self.rss_kb[pid] = max(self.rss_kb.get(pid, 0), kb)
            except OSError:
                continue

    def _loop(self):
        while not self._stop.is_set():
            self.max_conns = max(self.max_conns, self.conns_now())
            if self.pg is not None:
                self._backends()
            self._stop.wait(0.1)

    def median_rss_mb(self):
        return (statistics.median(self.rss_kb.values()) / 1024) if self.rss_kb else 0.0


class Results:
    def __init__(self):
        self.rows = []  # table rows (dicts)
        self.samples = {}  # name -> details
        self.notes = []

    def add(self, **row):
        self.rows.append(row)
        return row


def median(xs):
    return statistics.median(xs) if xs else None


def alternate(name, fdw_run, raw_run, reps, budget, check=None):
    """Alternate fdw_run(iters) / raw_run(iters) `reps` times each.

    Each returns (seconds per operation, answer).  A first FDW run calibrates:
    a short operation is repeated `iters` times per sample (the same on both
    sides) so that one sample lasts >= MIN_SAMPLE_S; a long one (a full scan
    of 1M keys) is kept as the first FDW sample and the repetitions are cut
    to fit `budget` seconds (never below 2 each).
    """
    t1, ans1 = fdw_run(1)
    fdw, raw = [], []
    iters = 1
    if t1 < MIN_SAMPLE_S:
        iters = max(1, min(MAX_ITERS, math.ceil(MIN_SAMPLE_S / max(t1, 1e-6))))
    elif 2 * reps * t1 > budget:
        reps = max(2, min(reps, int(budget // (2 * t1))))
        fdw.append(t1)  # too expensive to throw away
        log(f"  {name}: {t1:.1f} s per FDW run, {reps} repetitions each side")
    answers = {"fdw": ans1}
    while len(fdw) < reps or len(raw) < reps:
        if len(fdw) <= len(raw) and len(fdw) < reps:
            t, a = fdw_run(iters)
            fdw.append(t)
            answers["fdw"] = a
        else:
            t, a = raw_run(iters)
            raw.append(t)
            answers["raw"] = a
    if check is not None:
        check(answers["fdw"], answers["raw"])
    return {
        "fdw": fdw, "raw": raw, "iters": iters, "reps": reps,
        "fdw_median": median(fdw), "raw_median": median(raw),
    }


def expect_equal(what, fdw, raw):
    if fdw != raw:
        raise BenchError(f"{what}: FDW answered {fdw!r}, raw client {raw!r}")


# --------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.a = args
        self.res = Results()
        self.tmp = os.path.join(args.out, "tmp")
        os.makedirs(self.tmp, exist_ok=True)
        self.started = time.monotonic()
        self.scan_points = {}  # N -> (fdw median s, raw median s)
        self.lost_pushdown = set()  # (workload, n) rows whose plan lost a pushdown
        self.pg = None
        self.fdw = None
        self.etcd = None

    # -- environment ---------------------------------------------------------
    def start(self):
        a = self.a
        log(f"starting etcd {a.etcd_version} and PostgreSQL {harness.PG_MAJOR} ({harness.PG_BIN})")
        self.etcd = harness.EtcdServer(a.etcd_version)
        self.etcd.start()
        self.pg = harness.PgCluster()
        self.pg.start()
        admin = self.pg.connect("postgres")
        admin.execute("CREATE DATABASE bench")
        admin.close()
        self.fdw = Fdw(self.pg, "bench")
        c = self.fdw.conn
        c.execute("CREATE EXTENSION etcd_fdw")
        c.execute(
            "CREATE FOREIGN DATA WRAPPER etcd_fdw "
            "HANDLER etcd_fdw_handler VALIDATOR etcd_fdw_validator"
        )
        c.execute(
            "CREATE SERVER s FOREIGN DATA WRAPPER etcd_fdw OPTIONS "
            f"(connstr '{self.etcd.endpoint}', "
            + (f"fetch_size '{a.fetch_size}', " if a.fetch_size is not None else "")
            + f"batch_size '{a.batch_size}')"
        )
        self.raw = Raw(self.etcd.endpoint, a.fetch_size, a.batch_size)

    def table(self, name, **opts):
        o = {"rowid_column": "key", **opts}
        self.fdw.conn.execute(
            f"CREATE FOREIGN TABLE {name} (key text, value text) SERVER s"
            + harness.options_clause(o)
        )

    def elapsed(self):
        return time.monotonic() - self.started

    def machine(self):
        def cpu_model():
            try:
                with open("/proc/cpuinfo") as f:
                    for line in f:
                        if line.startswith("model name"):
                            return line.split(":", 1)[1].strip()
            except OSError:
                pass
            return platform.processor() or "?"

        def mem_total():
            try:
                with open("/proc/meminfo") as f:
                    for line in f:
                        if line.startswith("MemTotal:"):
                            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
            except OSError:
                pass
            return "?"

        try:
            ev = subprocess.run([self.etcd.etcd_bin, "--version"], capture_output=True,
                                text=True, timeout=10).stdout.splitlines()[0]
        except Exception:  # noqa: BLE001
            ev = f"etcd {self.a.etcd_version}"
        pgv = self.fdw.scalar("SELECT version()")
        ext = self.fdw.scalar("SELECT extversion FROM pg_extension WHERE extname = 'etcd_fdw'")
        libdir = subprocess.run(
            [os.path.join(harness.PG_BIN, "pg_config"), "--pkglibdir"],
            capture_output=True, text=True,
        ).stdout.strip()
        so = os.path.join(libdir, "etcd_fdw.so")
        build = "?"
        try:
            size = os.path.getsize(so)
            secs = subprocess.run(["readelf", "-S", "-W", so], capture_output=True,
                                  text=True, timeout=30).stdout
            dbg = ".debug_info" in secs
            if dbg:
                self.res.notes.append(
                    "The installed etcd_fdw.so has debug info, so it is most likely a debug "
                    "build: FDW numbers are not representative (bash scripts/bench.sh installs "
                    "a release build first)."
                )
            build = (f"{so}, {size / 1e6:.1f} MB, "
                     + ("has debug info (likely a debug build)" if dbg
                        else "no debug info (release build)"))
        except Exception:  # noqa: BLE001
            pass
        return {
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "nproc": os.cpu_count(),
            "cpu": cpu_model(),
            "ram": mem_total(),
            "kernel": platform.release(),
            "etcd": ev.replace("etcd Version: ", "etcd "),
            "postgres": pgv,
            "etcd_fdw": f"{ext}; {build}",
        }

    # -- workloads -----------------------------------------------------------
    def load_scan_sets(self):
        for n in self.a.sizes:
            log(f"loading {fmt_n(n)} keys (100-byte values) under s{n}/")
            r = self.raw.load(f"s{n}/", n, value_size=100, layout="scan")
            log(f"  loaded in {r['elapsed']:.1f} s")
            self.table(f"scan_{n}", prefix=f"s{n}/")

    def scans(self):
        a = self.a
        for n in a.sizes:
            t = f"scan_{n}"
            # warm-up: connect this session to etcd, plan once
            self.fdw.timed(f"SELECT key FROM {t} WHERE key = 's{n}/k/1'")
            # what is pushed down to etcd
            self.check_plan(f"SELECT sum(length(value)) FROM {t}", [f"etcd Range: prefix 's{n}/'"],
                            rows=[("full scan (sum of value lengths)", n)])
            self.check_plan(f"SELECT sum(length(value)) FROM {t} WHERE key LIKE 's{n}/p/%'",
                            [f"etcd Range: prefix 's{n}/p/'"])
            self.check_plan(f"SELECT key FROM {t} ORDER BY key DESC LIMIT 10",
                            ["etcd Sort: key DESC", "etcd Limit: 10", "etcd Keys Only: true"],
                            rows=[("ORDER BY key DESC LIMIT 10", n)])

            # full scan
            def fdw_full(it, t=t):
                el, rows, _ = self.fdw.timed(f"SELECT sum(length(value)) FROM {t}", iters=it)
                return el / it, int(rows[0][0] or 0)

            def raw_full(it, n=n):
                r = self.raw.scan(f"s{n}/", repeat=it)
                return r["per_op"], r["bytes"]

            log(f"full scan, N={fmt_n(n)}")
            m = alternate(f"full scan {fmt_n(n)}", fdw_full, raw_full, a.reps, a.budget,
                          check=lambda f, r, n=n: (expect_equal("full scan bytes", f, r),
                                                   expect_equal("full scan bytes", f, 100 * n)))
            self.record("full scan (sum of value lengths)", n, m, target=1.3, kind="time")
            self.scan_points[n] = (m["fdw_median"], m["raw_median"])

            # the same against the fastest any client can do: the whole
            # range in one request (no paging, all of it in memory)
            def raw_single(it, n=n):
                r = self.raw.scan(f"s{n}/", repeat=it, single=True)
                return r["per_op"], r["bytes"]

            log(f"full scan vs one whole-range request, N={fmt_n(n)}")
            m = alternate(f"full scan single {fmt_n(n)}", fdw_full, raw_single, a.reps, a.budget,
                          check=lambda f, r: expect_equal("full scan bytes", f, r))
            self.record("full scan vs the raw client's ONE whole-range request", n, m,
                        target=1.2, kind="time")
            full_scan_fdw = m["fdw_median"]

            # 1% prefix
            def fdw_pfx(it, t=t, n=n):
                el, rows, _ = self.fdw.timed(
                    f"SELECT sum(length(value)) FROM {t} WHERE key LIKE 's{n}/p/%'", iters=it)
                return el / it, int(rows[0][0] or 0)

            def raw_pfx(it, n=n):
                r = self.raw.scan(f"s{n}/p/", repeat=it)
                return r["per_op"], r["bytes"]

            log(f"prefix scan (1%), N={fmt_n(n)}")
            m = alternate(f"prefix {fmt_n(n)}", fdw_pfx, raw_pfx, a.reps, a.budget,
                          check=lambda f, r: expect_equal("prefix scan bytes", f, r))
            self.record("prefix scan, 1% of keys (LIKE 'p/%')", n, m, target=None, kind="time")

            # top 10 by key descending
            def fdw_top(it, t=t):
                el, rows, _ = self.fdw.timed(
                    f"SELECT key FROM {t} ORDER BY key DESC LIMIT 10", iters=it)
                return el / it, (len(rows), rows[0][0], rows[-1][0])

            def raw_top(it, n=n):
                r = self.raw.scan(f"s{n}/", repeat=it, desc=True, limit=10, keys_only=True)
                return r["per_op"], (r["rows"], r["first_key"], r["last_key"])

            log(f"ORDER BY key DESC LIMIT 10, N={fmt_n(n)}")
            m = alternate(f"top10 {fmt_n(n)}", fdw_top, raw_top, a.reps, a.budget,
                          check=lambda f, r: expect_equal("top-10 keys", f, r))
            self.record("ORDER BY key DESC LIMIT 10", n, m, target=None, kind="time")

            self.count_and_key_list(n, full_scan_fdw)

            # after ANALYZE the planner knows the table's size: a whole-range
            # scan's first page covers it (one request when it fits 16 MiB)
            self.fdw.conn.execute(f"ANALYZE {t}")
            log(f"full scan after ANALYZE vs one whole-range request, N={fmt_n(n)}")
            m = alternate(f"full scan analyzed {fmt_n(n)}", fdw_full, raw_single, a.reps, a.budget,
                          check=lambda f, r: expect_equal("full scan bytes", f, r))
            self.record("full scan after ANALYZE (first page sized to the table) vs ONE "
                        "whole-range request", n, m, target=1.2, kind="time")

        # linearity of the full scan: per-key time growth between sizes
        ns = sorted(self.scan_points)
        etcd_bound = False
        for lo, hi in zip(ns, ns[1:]):
            f_lo, r_lo = self.scan_points[lo]
            f_hi, r_hi = self.scan_points[hi]
            fg = (f_hi / hi) / (f_lo / lo)
            rg = (r_hi / hi) / (r_lo / lo)
            self.res.add(
                workload="full scan: growth of time per key", n=f"{fmt_n(lo)}→{fmt_n(hi)}",
                fdw=f"{fg:.2f}x", raw=f"{rg:.2f}x", ratio=f"{fg / rg:.2f}",
                target="≤ 1.5x (≈ linear)", result="pass" if fg <= 1.5 else "FAIL",
                reps="", fdw_value=fg, raw_value=rg,
            )
            etcd_bound = etcd_bound or rg > 1.5
        if etcd_bound:
            self.res.notes.append(
                "Full-scan time grows faster than N for the raw client too: etcd counts every "
                "key from a page's start to the range end on each range request (mvcc "
                "treeIndex.Revisions returns the total count), so paging N keys with "
                f"fetch_size {a.fetch_label} costs O(N²/page size) on the server whoever the "
                "client is.  Larger pages trade per-page memory for fewer such walks; the default "
                "adaptive paging grows pages fourfold up to 16 MiB for that reason."
            )

    def count_and_key_list(self, n, full_scan_fdw):
        """count(*) of the table (one count_only request) and a 1000-key
        list (key = ANY($1): read-only Txns of batch_size gets), each side by
        side with the raw client sending the same requests."""
        a = self.a
        t = f"scan_{n}"
        self.check_plan(f"SELECT count(*) FROM {t}", ["etcd Count Only: true"],
                        rows=[("count(*) (count_only)", n)])

        def fdw_count(it, t=t):
            el, rows, _ = self.fdw.timed(f"SELECT count(*) FROM {t}", iters=it)
            return el / it, int(rows[0][0])

        def raw_count(it, n=n):
            r = self.raw.count(f"s{n}/", repeat=it)
            return r["per_op"], r["rows"]

        log(f"count(*), N={fmt_n(n)}")
        m = alternate(f"count {fmt_n(n)}", fdw_count, raw_count, a.reps, a.budget,
                      check=lambda f, r, n=n: (expect_equal("count(*)", f, r),
                                               expect_equal("count(*)", f, n)))
        self.record("count(*) (count_only)", n, m, target=1.3, kind="time")
        speedup = full_scan_fdw / m["fdw_median"]
        self.res.add(
            workload="count(*): speed-up over the full scan through the FDW (count(value))",
            n=fmt_n(n), fdw=f"{m['fdw_median'] * 1e3:.3f} ms", raw=f"{full_scan_fdw * 1e3:.1f} ms",
            ratio=f"{speedup:.1f}x", target="≥ 10x", result="pass" if speedup >= 10 else "FAIL",
            reps="", fdw_value=m["fdw_median"], raw_value=full_scan_fdw,
        )

        # 1000 keys spread over the table (none of them a p/ key)
        step = max(1, n // 1000)
        keys = [f"s{n}/k/{j * step + 1}" for j in range(1000) if j * step + 1 < n]
        keys_file = os.path.join(self.tmp, f"keylist_{n}.txt")
        with open(keys_file, "w") as f:
            f.write("\n".join(keys) + "\n")
        lit = "'{" + ",".join(keys) + "}'::text[]"
        sql = f"SELECT count(*), sum(length(value)) FROM {t} WHERE key = ANY(%s)"
        self.check_plan(sql.replace("%s", lit), ["etcd Key Lists: read-only transactions"],
                        rows=[("1000-key list (key = ANY($1))", n)])

        def fdw_list(it, sql=sql, keys=keys):
            el, rows, _ = self.fdw.timed(sql, (keys,), iters=it)
            return el / it, (int(rows[0][0]), int(rows[0][1] or 0))

        def raw_list(it, keys_file=keys_file):
            r = self.raw.keylist(keys_file, repeat=it)
            return r["per_op"], (r["rows"], r["bytes"])

        log(f"1000-key list, N={fmt_n(n)}")
        m = alternate(f"keylist {fmt_n(n)}", fdw_list, raw_list, a.reps, a.budget,
                      check=lambda f, r, k=len(keys): (expect_equal("key list", f, r),
                                                       expect_equal("key list rows", f[0], k)))
        self.record("1000-key list (key = ANY($1))", n, m, target=1.3, kind="time")
        # the same keys as 1000 separate lookups (one request each), from
        # inside the backend so that no client round trip is counted
        self.fdw.conn.execute(
            f"CREATE OR REPLACE FUNCTION lookups_{n}(keys text[]) RETURNS bigint LANGUAGE plpgsql AS $$ "
            f"DECLARE k text; v text; total bigint := 0; BEGIN FOREACH k IN ARRAY keys LOOP "
            f"SELECT value INTO v FROM {t} WHERE key = k; total := total + coalesce(length(v), 0); "
            f"END LOOP; RETURN total; END $$")
        el, rows, _ = self.fdw.timed(f"SELECT lookups_{n}(%s)", (keys,), iters=1)
        el, rows, _ = self.fdw.timed(f"SELECT lookups_{n}(%s)", (keys,), iters=3)
        separate = el / 3
        expect_equal("1000 lookups", int(rows[0][0]), 100 * len(keys))
        speedup = separate / m["fdw_median"]
        self.res.add(
            workload="1000-key list: speed-up over 1000 separate lookups (PL/pgSQL loop)",
            n=fmt_n(n), fdw=f"{m['fdw_median'] * 1e3:.2f} ms", raw=f"{separate * 1e3:.1f} ms",
            ratio=f"{speedup:.1f}x", target="≥ 20x", result="pass" if speedup >= 20 else "FAIL",
            reps="3", fdw_value=m["fdw_median"], raw_value=separate,
        )

    def check_plan(self, sql, expected, rows=()):
        """EXPLAIN sql; keep the plan.  When a pushdown in `expected` is missing,
        note it and mark the workload rows in `rows` ((workload, n) pairs) as
        failed: a time measured without the pushdown compares nothing."""
        plan = [r[0] for r in self.fdw.conn.execute("EXPLAIN " + sql).fetchall()]
        self.res.samples.setdefault("plans", {})[sql] = plan
        missing = [e for e in expected if not any(e in line for line in plan)]
        if missing:
            self.res.notes.append(
                f"`{sql}`: expected {missing} in EXPLAIN, got: " + " / ".join(
                    line.strip() for line in plan)
            )
            for row in rows:
                self.lost_pushdown.add(row)
        return not missing

    def record(self, workload, n, m, target, kind):
        f, r = m["fdw_median"], m["raw_median"]
        ratio = f / r if r else None
        if target is None:
            tgt, res = "(none)", "info"
        else:
            tgt, res = f"≤ {target}x", ("pass" if ratio is not None and ratio <= target else "FAIL")
        if (workload, n) in self.lost_pushdown:
            res = "FAIL (plan lost its pushdown)"
        self.res.add(
            workload=workload, n=fmt_n(n) if isinstance(n, int) else n,
            fdw=fmt_time(f), raw=fmt_time(r), ratio=f"{ratio:.2f}" if ratio else "-",
            target=tgt, result=res, reps=f"{m['reps']}×{m['iters']}",
            fdw_value=f, raw_value=r,
        )
        self.res.samples[f"{workload} | {n}"] = m

    # -- point lookups ----------------------------------------------------------
    def lookup_keys(self):
        """The point-lookup keys and the table lk over them (once)."""
        if getattr(self, "_lookup_keys_loaded", False):
            return
        L = self.a.lookup_keys
        log(f"loading {fmt_n(L)} numeric keys for point lookups")
        self.raw.load("", L, value_size=100, layout="plain", base=LOOKUP_BASE)
        self.table("lk", key=str(LOOKUP_BASE), range_end=str(LOOKUP_BASE * 2))
        self._lookup_keys_loaded = True

    def lookups(self):
        a = self.a
        L = a.lookup_keys
        self.lookup_keys()
        # sanity: a prepared lookup pushes the key down and finds the row
        self.check_plan("SELECT value FROM lk WHERE key = '1000001'",
                        ["etcd Conditions: key = '1000001'"], rows=[("point lookups", None)])
        # pgbench -M prepared ends up with the generic plan: key = $1
        c = self.fdw.conn
        c.execute("PREPARE lk_q(text) AS SELECT value FROM lk WHERE key = $1")
        c.execute("SET plan_cache_mode = force_generic_plan")
        try:
            self.check_plan("EXECUTE lk_q('1000001')", ["etcd Conditions: key = $1"],
                            rows=[("point lookups", None)])
        finally:
            c.execute("RESET plan_cache_mode")
            c.execute("DEALLOCATE lk_q")
        v = self.fdw.scalar("SELECT value FROM lk WHERE key = %s", (str(LOOKUP_BASE + L - 1),))
        if v is None or len(v) != 100:
            raise BenchError(f"lookup of the last key returned {v!r}")

        # The PostgreSQL floor: the same pgbench set-up without etcd, once
        # without the FDW (SELECT 1) and once as a foreign scan whose
        # conditions contradict each other, so it sends no request.
        floors = {}
        for name, sql in (("select1", "SELECT 1;\n"),
                          ("noreq", f"\\set k random({LOOKUP_BASE}, {LOOKUP_BASE + L - 1})\n"
                                    f"SELECT value FROM lk WHERE key = :k AND key < '{LOOKUP_BASE}';\n")):
            path = os.path.join(self.tmp, f"{name}.sql")
            with open(path, "w") as f:
                f.write(sql)
            os.chmod(path, 0o644)
            for conc in (1, 4):
                floors[name, conc] = self.pgbench(path, conc, max(a.lookup_count, 20_000) // conc)
        self.res.notes.append(
            "PostgreSQL floor for the point-lookup rows (pgbench -M prepared, same machine, no "
            "etcd request): `SELECT 1` "
            + ", ".join(f"{floors['select1', c]:,.0f} tps with {c} client{'s' if c > 1 else ''}"
                        for c in (1, 4))
            + "; a lookup on the foreign table whose conditions contradict each other (planned "
            "and executed like a lookup, no request sent) "
            + ", ".join(f"{floors['noreq', c]:,.0f} tps with {c} client{'s' if c > 1 else ''}"
                        for c in (1, 4))
            + "."
        )

        script = os.path.join(self.tmp, "lookup.sql")
        with open(script, "w") as f:
            f.write(f"\\set k random({LOOKUP_BASE}, {LOOKUP_BASE + L - 1})\n")
            f.write("SELECT value FROM lk WHERE key = :k;\n")
        os.chmod(script, 0o644)
        rng = random.Random(42)
        total = a.lookup_count
        for conc in (1, 4):
            per_client = max(1, total // conc)
            count = per_client * conc
            keys_file = os.path.join(self.tmp, f"lookup_keys_{conc}.txt")
            with open(keys_file, "w") as f:
                for _ in range(count):
                    f.write(f"{rng.randint(LOOKUP_BASE, LOOKUP_BASE + L - 1)}\n")

            def fdw_run(_it, conc=conc, per_client=per_client):
                return 1.0 / self.pgbench(script, conc, per_client), None

            log(f"point lookups, {count} per run, {conc} client(s)")
            # warm-up: a short pgbench run (and the raw client's first run)
            self.pgbench(script, conc, 50)
            self.lookup_row(
                f"point lookups, {conc} client{'s' if conc > 1 else ''} "
                f"(pgbench -M prepared vs {conc} task{'s' if conc > 1 else ''})",
                f"point lookups c={conc}", L, conc, count, fdw_run, keys_file, target=1.3)

        # The floor PostgreSQL itself sets: a statement (pgbench SELECT 1)
        # plus one get of the raw client, per operation at the same
        # concurrency; the FDW's latency against their sum.
        for conc in (1, 4):
            m = self.res.samples[f"point lookups c={conc}"]
            floor = 1.0 / floors["select1", conc] + m["raw_median"]
            ratio = m["fdw_median"] / floor
            target = 1.15 if conc == 1 else None
            self.res.add(
                workload=f"point lookups, {conc} client{'s' if conc > 1 else ''}, against the floor "
                         "(pgbench SELECT 1 + raw get, per op)",
                n=fmt_n(L), fdw=f"{m['fdw_median'] * 1e6:.0f} µs", raw=f"{floor * 1e6:.0f} µs",
                ratio=f"{ratio:.2f}",
                target="(none)" if target is None else f"≤ {target}x",
                result="info" if target is None else ("pass" if ratio <= target else "FAIL"),
                reps=f"{a.reps}×{m['count']}", fdw_value=m["fdw_median"], raw_value=floor,
            )

        one = self.res.samples["point lookups c=1"]
        noreq = 1.0 / floors["noreq", 1]
        bound = (noreq + one["raw_median"]) / one["raw_median"]
        self.res.notes.append(
            f"Lower bound for the 1-client pgbench row: a lookup through PostgreSQL takes at "
            f"least a statement that sends no request ({noreq * 1e6:.0f} µs here) plus one get "
            f"({one['raw_median'] * 1e6:.0f} µs for the raw client), a ratio of {bound:.2f} "
            "before the extension spends anything on the request itself."
        )
        self.lookups_in_backend(script_keys=(LOOKUP_BASE, L))

    def lookups_in_backend(self, script_keys):
        """Point lookups issued from inside the backend: a PL/pgSQL loop runs
        the prepared lookup n times per call, so the client round trip and
        pgbench are out of the picture and what remains is the FDW's own
        cost per lookup (executor, request, tuple)."""
        a = self.a
        base, span = script_keys
        self.fdw.conn.execute(
            "CREATE OR REPLACE FUNCTION lk_loop(n int, lo int, span int) RETURNS bigint "
            "LANGUAGE plpgsql AS $$\n"
            "DECLARE k text; v text; t bigint := 0;\n"
            "BEGIN\n"
            "  FOR i IN 1..n LOOP\n"
            "    k := (lo + floor(random() * span)::int)::text;\n"
            "    SELECT value INTO v FROM lk WHERE key = k;\n"
            "    t := t + length(v);\n"
            "  END LOOP;\n"
            "  RETURN t;\n"
            "END $$"
        )
        total = a.lookup_count
        for conc in (1, 4):
            per = max(1, total // conc)
            count = per * conc
            conns = [self.pg.connect("bench") for _ in range(conc)]
            try:
                for cn in conns:  # connect to etcd, cache the plan
                    cn.execute("SELECT lk_loop(50, %s, %s)", (base, span))

                def fdw_run(_it, conns=conns, per=per, count=count):
                    barrier = threading.Barrier(len(conns) + 1)
                    errors = []

                    def work(cn):
                        barrier.wait()
                        try:
                            got = cn.execute("SELECT lk_loop(%s, %s, %s)",
                                             (per, base, span)).fetchone()[0]
                            if got != 100 * per:
                                errors.append(f"lk_loop read {got} bytes, expected {100 * per}")
                        except Exception as e:  # noqa: BLE001
                            errors.append(str(e))
                    ts = [threading.Thread(target=work, args=(cn,)) for cn in conns]
                    for t in ts:
                        t.start()
                    barrier.wait()
                    t0 = time.perf_counter()
                    for t in ts:
                        t.join()
                    el = time.perf_counter() - t0
                    if errors:
                        raise BenchError("in-backend lookups: " + "; ".join(errors))
                    return el / count, None

                log(f"in-backend point lookups, {count} per run, {conc} session(s)")
                self.lookup_row(
                    f"point lookups in the backend, {conc} session{'s' if conc > 1 else ''} "
                    f"(PL/pgSQL loop vs {conc} task{'s' if conc > 1 else ''})",
                    f"in-backend lookups c={conc}", span, conc, count, fdw_run,
                    os.path.join(self.tmp, f"lookup_keys_{conc}.txt"), target=None)
            finally:
                for cn in conns:
                    cn.close()

    def lookup_row(self, workload, sample_name, n, conc, count, fdw_run, keys_file, target):
        """Alternate fdw_run with `count` raw-client gets of the keys in
        keys_file (conc tasks) a.reps times; record throughputs and the
        raw/FDW ratio (checked against `target` unless None)."""
        a = self.a
        fdw_s, raw_s = [], []
        for _ in range(a.reps):
            fdw_s.append(fdw_run(1)[0])
            r = self.raw.run("lookups", "--keys-file", keys_file, "--count", count,
                             "--concurrency", conc)
            if r["found"] != r["ops"]:
                raise BenchError(f"raw lookups: {r['ops'] - r['found']} keys not found")
            raw_s.append(1.0 / r["ops_per_sec"])
        m = {"fdw": fdw_s, "raw": raw_s, "iters": 1, "reps": a.reps,
             "fdw_median": median(fdw_s), "raw_median": median(raw_s), "count": count}
        f_tps, r_tps = 1.0 / m["fdw_median"], 1.0 / m["raw_median"]
        ratio = r_tps / f_tps
        self.res.add(
            workload=workload, n=fmt_n(n), fdw=f"{f_tps:,.0f} ops/s", raw=f"{r_tps:,.0f} ops/s",
            ratio=f"{ratio:.2f}",
            target="(none)" if target is None else f"≤ {target}x (raw/FDW ops/s)",
            result=("FAIL (plan lost its pushdown)" if ("point lookups", None) in self.lost_pushdown
                    else "info" if target is None else ("pass" if ratio <= target else "FAIL")),
            reps=f"{a.reps}×{count}", fdw_value=f_tps, raw_value=r_tps,
        )
        self.res.samples[sample_name] = m

    def run_pgbench(self, script, conc, max_tries, run, timeout):
        """pgbench -M prepared with `run` (-t N or -T S, logging options):
        {tps without initial connection time, retried}; no transaction may
        fail."""
        jobs = min(conc, os.cpu_count() or 1)
        cmd = [PGBENCH, "-n", "-M", "prepared", "-f", script, "-c", str(conc), "-j", str(jobs),
               *run, "--max-tries", str(max_tries),
               "-h", self.pg.sockdir, "-p", str(self.pg.port), "-U", "postgres", "bench"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "PGOPTIONS": "-c statement_timeout=0"})
        if p.returncode != 0:
            raise BenchError(f"pgbench failed: {p.stderr.strip()}\n{p.stdout}")
        m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", p.stdout)
        fm = re.search(r"number of failed transactions: (\d+)", p.stdout)
        if not m or (fm and int(fm.group(1)) != 0):
            raise BenchError(f"pgbench output not understood:\n{p.stdout}")
        rm = re.search(r"number of transactions retried: (\d+)", p.stdout)
        return {"tps": float(m.group(1)), "retried": int(rm.group(1)) if rm else 0}

    def pgbench(self, script, conc, per_client, max_tries=1):
        """Run pgbench -M prepared; its tps without initial connection time.
        max_tries > 1: a transaction that fails with a serialization
        failure (40001: a guarded commit lost to another client) is run
        again, up to that many times in all."""
        p = self.run_pgbench(script, conc, max_tries, ["-t", str(per_client)], timeout=3600)
        return p["tps"]

    # -- many backends, one etcd ----------------------------------------------------
    def backends(self):
        """1, 8, 32 and 64 pgbench clients (-M prepared, -T seconds) doing
        point lookups, and a mixed script (a lookup, then an UPDATE of
        another key: a guarded read-modify-write), against the raw client
        at the same concurrency (that many OS threads, each with its own
        connection).  Per run: throughput, p50/p99 latency (pgbench's
        per-transaction log; the raw client's own timings), the median of
        the backends' peak anonymous memory, and the most TCP connections
        to etcd's client port seen at once beyond those open before the run
        (/proc/net/tcp); the 64-client runs once more through etcd's gRPC
        proxy (started for the run, its own connections counted)."""
        a = self.a
        L = a.lookup_keys
        self.lookup_keys()
        lo, hi = LOOKUP_BASE, LOOKUP_BASE + L - 1
        scripts = {
            "lookups": f"\\set k random({lo}, {hi})\nSELECT value FROM lk WHERE key = :k;\n",
            "mixed": (f"\\set k random({lo}, {hi})\nSELECT value FROM lk WHERE key = :k;\n"
                      f"\\set u random({lo}, {hi})\nUPDATE lk SET value = 'v' || :u WHERE key = :u;\n"),
        }
        self.fdw.conn.execute(
            f"CREATE SERVER sp FOREIGN DATA WRAPPER etcd_fdw OPTIONS (connstr '{self.etcd.endpoint}')")
        self.fdw.conn.execute(
            f"CREATE FOREIGN TABLE lkp (key text, value text) SERVER sp OPTIONS "
            f"(rowid_column 'key', key '{LOOKUP_BASE}', range_end '{LOOKUP_BASE * 2}')")
        rng = random.Random(7)
        keys_file = os.path.join(self.tmp, "backend_keys.txt")
        with open(keys_file, "w") as f:
            for _ in range(200_000):
                f.write(f"{rng.randint(lo, hi)}\n")
        own = self.fdw.scalar("SELECT pg_backend_pid()")
        top = max(a.backend_clients)
        for kind, text in scripts.items():
            for conc in a.backend_clients:
                for via_proxy in ((False, True) if conc == top else (False,)):
                    body = text.replace(" lk ", " lkp ") if via_proxy else text
                    path = os.path.join(self.tmp, f"backends_{kind}_{conc}_{int(via_proxy)}.sql")
                    with open(path, "w") as f:
                        f.write(body)
                    os.chmod(path, 0o644)
                    base = Sampler(self.etcd.port, None).conns_now()
                    proxy = None
                    if via_proxy:
                        proxy = harness.GrpcProxy(self.etcd).start()
                        self.fdw.conn.execute(
                            f"ALTER SERVER sp OPTIONS (SET connstr '{proxy.endpoint}')")
                    # concurrent UPDATEs of one key: the loser's commit is
                    # 40001, and pgbench runs that transaction again
                    tries = 10 if kind == "mixed" else 1
                    try:
                        self.pgbench(path, conc, 20, max_tries=tries)  # warm-up: connections, plans
                        log(f"many backends: {kind}, {conc} clients"
                            f"{' through the gRPC proxy' if via_proxy else ''}, {a.backend_seconds} s")
                        fdw = self.pgbench_timed(path, conc, a.backend_seconds, own, max_tries=tries)
                    finally:
                        if proxy is not None:
                            proxy.destroy()
                    fdw["conns"] -= base
                    raw = None
                    if not via_proxy:
                        base = Sampler(self.etcd.port, None).conns_now()
                        with Sampler(self.etcd.port, None) as smp:
                            r = self.raw.run(
                                "lookups", "--keys-file", keys_file,
                                "--count", max(conc, int(fdw["tps"] * a.backend_seconds)),
                                "--concurrency", conc, *(["--mixed"] if kind == "mixed" else []))
                        raw = {"tps": r["ops_per_sec"], "p50": r["p50"], "p99": r["p99"],
                               "conns": smp.max_conns - base, "rss_mb": r["vmhwm_kb"] / 1024}
                    self.backend_row(kind, conc, via_proxy, fdw, raw)

    def pgbench_timed(self, script, conc, seconds, own_pid, max_tries=1):
        """pgbench -M prepared for `seconds` with per-transaction logging:
        {tps, p50, p99 (s), conns (most TCP connections to etcd seen), rss_mb
        (median over the backends of their peak RssAnon), retried (the
        transactions pgbench ran again after a serialization failure)}."""
        logdir = os.path.join(self.tmp, f"pgbench_log_{time.monotonic_ns()}")
        os.makedirs(logdir)
        harness.give_to_postgres(logdir, 0o777)
        with Sampler(self.etcd.port, self.pg, exclude=own_pid) as smp:
            p = self.run_pgbench(
                script, conc, max_tries,
                ["-T", str(seconds), "-l", "--log-prefix", os.path.join(logdir, "tx")],
                timeout=seconds * 10 + 600)
        lat = []
        for fn in os.listdir(logdir):
            with open(os.path.join(logdir, fn)) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3:
                        lat.append(int(parts[2]) / 1e6)
        lat.sort()
        q = (lambda x: lat[min(len(lat) - 1, round((len(lat) - 1) * x))] if lat else None)
        return {"tps": p["tps"], "p50": q(0.5), "p99": q(0.99),
                "conns": smp.max_conns, "rss_mb": smp.median_rss_mb(),
                "retried": p["retried"]}

    def backend_row(self, kind, conc, via_proxy, fdw, raw):
        def cell(d, memory):
            conns = d["conns"]
            retried = d.get("retried", 0)
            return (f"{d['tps']:,.0f} ops/s; p50 {d['p50'] * 1e3:.2f} ms, p99 {d['p99'] * 1e3:.2f} ms; "
                    f"{conns} etcd connection{'s' if conns != 1 else ''}; {memory} {d['rss_mb']:.1f} MB"
                    + (f"; {retried} retried after 40001" if retried else ""))
        what = "lookups" if kind == "lookups" else "mixed (lookup + UPDATE of another key)"
        name = f"many backends: {what}, {conc} client{'s' if conc > 1 else ''}" + (
            " through etcd's gRPC proxy" if via_proxy else "")
        self.res.add(
            workload=name, n=fmt_n(self.a.lookup_keys), fdw=cell(fdw, "backend RssAnon (median of peaks)"),
            raw="(the row without the proxy)" if raw is None else cell(raw, "raw client VmHWM"),
            ratio="-" if raw is None else f"{raw['tps'] / fdw['tps']:.2f}",
            target="(none)", result="info", reps=f"1×{self.a.backend_seconds} s",
            fdw_value=fdw["tps"], raw_value=None if raw is None else raw["tps"],
        )
        self.res.samples[f"backends {kind} c={conc}{' proxy' if via_proxy else ''}"] = {
            "fdw": fdw, "raw": raw}

    # -- bulk writes --------------------------------------------------------------
    def writes(self):
        a = self.a
        n = a.write_rows
        self.table("w", prefix="w/")
        # bulk loads larger than one etcd transaction: statement mode
        self.fdw.conn.execute("SET etcd_fdw.commit_mode = 'statement'")
        # warm-up of the modify paths
        self.fdw.conn.execute("INSERT INTO w SELECT 'w/warm/' || i, 'x' FROM generate_series(1, 10) i")
        self.fdw.conn.execute("UPDATE w SET value = value || 'x' WHERE key LIKE 'w/warm/%'")
        self.fdw.conn.execute("DELETE FROM w WHERE key LIKE 'w/warm/%'")
        samples = {k: {"fdw": [], "raw": []} for k in ("insert", "update", "delete")}
        log(f"bulk writes: INSERT/UPDATE/DELETE of {n} rows, {a.reps} repetitions")

        def fdw_exec(kind, sql):
            el, _, rc = self.fdw.timed(sql)
            if rc != n:
                raise BenchError(f"FDW {kind}: {rc} rows, expected {n}")
            samples[kind]["fdw"].append(el)

        def raw_exec(kind, *args):
            r = self.raw.run(kind, *args)
            if r["rows"] != n:
                raise BenchError(f"raw {kind}: {r['rows']} rows, expected {n}")
            samples[kind]["raw"].append(r["elapsed"])
            return r

        bs = ["--batch", a.batch_size]
        for rep in range(a.reps):
            fp, rp = f"w/f{rep}/", f"w/r{rep}/"
            fdw_exec("insert", f"INSERT INTO w SELECT '{fp}' || i, repeat('v', 100) "
                               f"FROM generate_series(1, {n}) i")
            raw_exec("insert", "--prefix", rp, "--count", n, "--value-size", 100, *bs)
            fdw_exec("update", f"UPDATE w SET value = value || 'x' WHERE key LIKE '{fp}%'")
            ru = raw_exec("update", "--prefix", rp, "--suffix", "x",
                          *self.raw.fetch_args(), *bs)
            if rep == 0:
                got = self.fdw.conn.execute(
                    f"SELECT count(*), sum(length(value)) FROM w WHERE key LIKE '{fp}%'"
                ).fetchone()
                expect_equal("rows/bytes after UPDATE", (int(got[0]), int(got[1])),
                             (ru["rows"], ru["bytes"]))
                expect_equal("bytes after UPDATE", ru["bytes"], n * 101)
            fdw_exec("delete", f"DELETE FROM w WHERE key LIKE '{fp}%'")
            raw_exec("delete", "--prefix", rp, *self.raw.fetch_args(), *bs)
            if rep == 0:
                left = self.raw.scan("w/", keys_only=True)["rows"]
                expect_equal("keys left after DELETE", left, 0)
        self.fdw.conn.execute("RESET etcd_fdw.commit_mode")
        labels = {
            "insert": "bulk INSERT ... SELECT, statement mode (txns of 128, create_revision = 0)",
            "update": "bulk UPDATE SET value = value || 'x', statement mode (mod_revision guard)",
            "delete": "bulk DELETE, statement mode (mod_revision guard)",
        }
        for kind, s in samples.items():
            m = {"fdw": s["fdw"], "raw": s["raw"], "iters": 1, "reps": a.reps,
                 "fdw_median": median(s["fdw"]), "raw_median": median(s["raw"])}
            self.record(labels[kind], n, m, target=1.5, kind="time")

    # -- writes in the default commit mode ----------------------------------------
    def txn_writes(self):
        """etcd_fdw.commit_mode = 'transaction' (the default): a PostgreSQL
        transaction's writes are one guarded etcd Txn at COMMIT.  The raw
        client sends the same guarded Txn (and, for UPDATE/DELETE, first
        reads the rows, as the foreign scan does)."""
        a = self.a
        n = 100
        reps = max(a.reps, 5) * 3
        self.table("tw", prefix="tw/")
        c = self.fdw.conn
        c.execute("RESET etcd_fdw.commit_mode")
        one_by_one = ("DO $$ BEGIN FOR i IN 1..{n} LOOP "
                      "INSERT INTO tw VALUES ('{p}' || i, repeat('v', 100)); END LOOP; END $$")
        # warm-up of every path (plans, connection)
        c.execute(one_by_one.format(n=3, p="tw/warm/"))
        c.execute("UPDATE tw SET value = value || 'x' WHERE key LIKE 'tw/warm/%'")
        c.execute("DELETE FROM tw WHERE key LIKE 'tw/warm/%'")
        kinds = ("txn", "insert", "update", "delete")
        samples = {k: {"fdw": [], "raw": []} for k in kinds}
        log(f"transaction-mode writes: {n} rows per transaction, {reps} repetitions")

        def fdw_exec(kind, sql, expect_rows=True):
            el, _, rc = self.fdw.timed(sql)
            if expect_rows and rc != n:
                raise BenchError(f"FDW {kind}: {rc} rows, expected {n}")
            samples[kind]["fdw"].append(el)

        def raw_exec(kind, cmd, *args):
            r = self.raw.run(cmd, *args)
            if r["rows"] != n:
                raise BenchError(f"raw {kind}: {r['rows']} rows, expected {n}")
            samples[kind]["raw"].append(r["elapsed"])

        # PostgreSQL's own floor: the same statements on a local table
        c.execute("CREATE UNLOGGED TABLE IF NOT EXISTS tw_local (key text PRIMARY KEY, value text)")
        local_one_by_one = one_by_one.replace("INTO tw ", "INTO tw_local ")
        floor = {k: [] for k in kinds}

        def local_exec(kind, sql):
            el, _, _ = self.fdw.timed(sql)
            floor[kind].append(el)

        bs = ["--batch", 128]
        for rep in range(reps):
            fp, rp = f"tw/f{rep}/", f"tw/r{rep}/"
            tp, tr = f"tw/tf{rep}/", f"tw/tr{rep}/"
            local_exec("txn", local_one_by_one.format(n=n, p=tp))
            local_exec("insert", f"INSERT INTO tw_local SELECT '{fp}' || i, repeat('v', 100) "
                                 f"FROM generate_series(1, {n}) i")
            local_exec("update", f"UPDATE tw_local SET value = value || 'x' WHERE key LIKE '{fp}%'")
            local_exec("delete", f"DELETE FROM tw_local WHERE key LIKE '{fp}%'")
            fdw_exec("txn", one_by_one.format(n=n, p=tp), expect_rows=False)
            raw_exec("txn", "insert", "--prefix", tr, "--count", n, "--value-size", 100, *bs)
            fdw_exec("insert", f"INSERT INTO tw SELECT '{fp}' || i, repeat('v', 100) "
                               f"FROM generate_series(1, {n}) i")
            raw_exec("insert", "insert", "--prefix", rp, "--count", n, "--value-size", 100, *bs)
            fdw_exec("update", f"UPDATE tw SET value = value || 'x' WHERE key LIKE '{fp}%'")
            raw_exec("update", "update", "--prefix", rp, "--suffix", "x",
                     *self.raw.fetch_args(), *bs)
            fdw_exec("delete", f"DELETE FROM tw WHERE key LIKE '{fp}%'")
            raw_exec("delete", "delete", "--prefix", rp, *self.raw.fetch_args(), *bs)
            if rep == 0:
                got = self.fdw.scalar(f"SELECT count(*) FROM tw WHERE key LIKE '{tp}%'")
                expect_equal("rows after the transaction of single-row INSERTs", got, n)
                left = self.raw.scan(fp, keys_only=True)["rows"]
                expect_equal("keys left after DELETE", left, 0)
        labels = {
            "txn": "transaction of 100 single-row INSERTs (PL/pgSQL loop; one Txn at COMMIT)",
            "insert": "INSERT ... SELECT of 100 rows (one Txn at COMMIT)",
            "update": "UPDATE of 100 rows (one Txn at COMMIT, mod_revision guards)",
            "delete": "DELETE of 100 rows (one Txn at COMMIT, mod_revision guards)",
        }
        parts = []
        for kind in kinds:
            s = samples[kind]
            m = {"fdw": s["fdw"], "raw": s["raw"], "iters": 1, "reps": reps,
                 "fdw_median": median(s["fdw"]), "raw_median": median(s["raw"]),
                 "local_table_median": median(floor[kind])}
            self.record(labels[kind], n, m, target=1.5, kind="time")
            f, r, lo = m["fdw_median"], m["raw_median"], m["local_table_median"]
            parts.append(f"{labels[kind].split(' (')[0]}: local table {fmt_time(lo)}, "
                         f"FDW minus that {fmt_time(f - lo)} vs raw {fmt_time(r)} "
                         f"(ratio {(f - lo) / r:.2f})")
        self.res.notes.append(
            "PostgreSQL floor for the transaction-mode write rows: the same statements on a "
            "local unlogged table (no etcd), same run; what the FDW adds beyond PostgreSQL's "
            "own statement cost, against the raw client's Txn: " + "; ".join(parts) + ".")

    # -- memory -------------------------------------------------------------------
    def memory(self):
        a = self.a
        n, size = a.mem_keys, a.mem_value_size
        mb = n * size / 1e6
        log(f"loading {fmt_n(n)} keys with {size}-byte values ({mb:.0f} MB) under m/")
        self.raw.load("m/", n, value_size=size, layout="plain")
        self.table("mem", prefix="m/")

        def hwm_kb(pid):
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
            raise BenchError("no VmHWM")

        growth_f, growth_r, time_f, time_r, before_f = [], [], [], [], []
        reps = a.mem_reps
        log(f"memory: scanning {mb:.0f} MB, {reps} repetitions (fresh backend each)")
        for _ in range(reps):
            conn = self.pg.connect("bench")
            try:
                conn.execute("SET statement_timeout = 0")
                pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                conn.execute("SELECT value FROM mem WHERE key = 'm/0'").fetchall()  # warm-up
                h0 = hwm_kb(pid)
                t0 = time.perf_counter()
                # octet_length: PostgreSQL's character counting is not measured
                total = conn.execute("SELECT sum(octet_length(value)) FROM mem").fetchone()[0]
                time_f.append(time.perf_counter() - t0)
                h1 = hwm_kb(pid)
            finally:
                conn.close()
            expect_equal("bytes of the 1 KiB scan", int(total), n * size)
            growth_f.append((h1 - h0) / 1024)
            before_f.append(h0 / 1024)
            r = self.raw.scan("m/")
            expect_equal("bytes of the 1 KiB scan (raw)", r["bytes"], n * size)
            growth_r.append((r["vmhwm_after_kb"] - r["vmhwm_before_kb"]) / 1024)
            time_r.append(r["per_op"])
        gf, gr = median(growth_f), median(growth_r)
        self.res.add(
            workload=f"backend peak memory growth (VmHWM), scan of {mb:.0f} MB",
            n=fmt_n(n), fdw=f"{gf:.1f} MB", raw=f"{gr:.1f} MB",
            ratio=f"{gf / gr:.2f}" if gr > 0 else "-", target="< 64 MB (FDW)",
            result="pass" if gf < 64 else "FAIL", reps=f"{reps}×1", fdw_value=gf, raw_value=gr,
        )
        self.res.samples["memory"] = {"fdw_growth_mb": growth_f, "raw_growth_mb": growth_r,
                                      "fdw_vmhwm_before_mb": before_f}
        m = {"fdw": time_f, "raw": time_r, "iters": 1, "reps": reps,
             "fdw_median": median(time_f), "raw_median": median(time_r)}
        self.record(f"full scan, {size}-byte values (sum(octet_length(value)))", n, m, target=1.3,
                    kind="time")

    # -- soak: one backend, many mixed statements, RSS growth ---------------------
    def soak(self):
        """--soak-statements mixed statements in ONE backend: point lookups,
        prefix and top-n scans, writes in both commit modes, multi-statement
        transactions, savepoint rollbacks, failing statements (23505, 22P02,
        an error inside a savepoint) and cancelled scans (statement_timeout,
        pg_cancel_backend from a second session).  Every answer and error is
        checked.  VmRSS of the backend after the warm-up (the first 10%, at
        most 10k statements) and at the end: growth < 5 MB."""
        a = self.a
        total = a.soak_statements
        warm = min(10_000, max(1, total // 10))
        nkeys = 2000
        val = lambda i: f"{i:05d}" + "x" * 95  # noqa: E731
        log(f"soak: loading {nkeys} keys under soak/")
        self.etcd.put_many({f"soak/{i:05d}": val(i) for i in range(nkeys)})
        self.table("soak", prefix="soak/")
        self.table("soak_slow", prefix="soak/", fetch_size="10")  # 200 requests per scan
        self.fdw.conn.execute(
            "CREATE FOREIGN TABLE soak_w (key text, value text, version bigint) SERVER s "
            "OPTIONS (rowid_column 'key', prefix 'soakw/')")
        conn = self.pg.connect("bench")
        conn.execute("SET statement_timeout = 0")
        canceller = self.pg.connect("bench")
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        rng = random.Random(20261126)
        st = {"n": 0, "unexpected": [], "cancelled": 0, "cancel_missed": 0,
              "errors": collections.Counter()}

        def rss():
            out = {}
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in ("VmRSS", "RssAnon", "RssShmem", "VmHWM"):
                        out[k] = int(v.split()[0])
            return out

        def run(sql, params=None, expect=None, error=None):
            """One statement; expect: rows (list) or a callable(rows, rowcount)
            -> bool; error: the SQLSTATE it must fail with (a tuple: any of)."""
            st["n"] += 1
            try:
                cur = conn.execute(sql, params)
                rows = cur.fetchall() if cur.description is not None else None
            except psycopg.Error as e:
                if e.sqlstate is None:
                    raise BenchError(f"soak: the backend died at statement {st['n']}: {e}") from e
                st["errors"][e.sqlstate] += 1
                ok = error is not None and e.sqlstate in (error if isinstance(error, tuple) else (error,))
                if not ok and len(st["unexpected"]) < 20:
                    st["unexpected"].append(f"{sql[:80]}: {e.sqlstate} {str(e).splitlines()[0][:120]}")
                return None
            if error is not None:
                st["unexpected"].append(f"{sql[:80]}: succeeded, expected {error}")
            elif expect is not None:
                good = expect(rows, cur.rowcount) if callable(expect) else rows == expect
                if not good and len(st["unexpected"]) < 20:
                    st["unexpected"].append(f"{sql[:80]}: got {str(rows)[:120]}")
            return rows

        seq = [0]

        def wkey():
            seq[0] += 1
            return f"soakw/{seq[0]}"

        def lookup():
            i = rng.randrange(nkeys)
            run("SELECT value FROM soak WHERE key = %s", (f"soak/{i:05d}",), [(val(i),)])

        def prefix_scan():
            run("SELECT count(*), sum(length(value)) FROM soak WHERE key LIKE 'soak/001%'",
                expect=[(100, 10000)])

        def top_n():
            run("SELECT key FROM soak ORDER BY key DESC LIMIT 3",
                expect=[(f"soak/{i:05d}",) for i in (nkeys - 1, nkeys - 2, nkeys - 3)])


        def rc1(_rows, rc):
            return rc == 1

        def writes_txn_mode():
            k = wkey()
            run("INSERT INTO soak_w VALUES (%s, 'a')", (k,), rc1)
            run("UPDATE soak_w SET value = 'b' WHERE key = %s", (k,), rc1)
            run("DELETE FROM soak_w WHERE key = %s", (k,), rc1)

        def writes_statement_mode():
            k = wkey()
            run("SET etcd_fdw.commit_mode = 'statement'")
            run("INSERT INTO soak_w VALUES (%s, 'a'), (%s, 'b')", (k, k + "/2"),
                lambda _r, rc: rc == 2)
            run("UPDATE soak_w SET value = value || 'x' WHERE key = %s RETURNING value, version",
                (k,), [("ax", 2)])
            run("INSERT INTO soak_w VALUES (%s, 'dup')", (k,), error="23505")
            run("DELETE FROM soak_w WHERE key LIKE %s", (k + "%",), lambda _r, rc: rc == 2)
            run("RESET etcd_fdw.commit_mode")

        def transaction():
            k1, k2 = wkey(), wkey()
            run("BEGIN")
            run("INSERT INTO soak_w VALUES (%s, 'a'), (%s, 'b')", (k1, k2))
            run("UPDATE soak_w SET value = 'a2' WHERE key = %s", (k1,), rc1)
            run("SELECT key, value FROM soak_w WHERE key = ANY(%s) ORDER BY key", ([k1, k2],),
                sorted([(k1, "a2"), (k2, "b")]))
            run("DELETE FROM soak_w WHERE key = %s", (k2,), rc1)
            run("COMMIT")
            run("SELECT value FROM soak_w WHERE key = ANY(%s)", ([k1, k2],), [("a2",)])
            run("DELETE FROM soak_w WHERE key = %s", (k1,), rc1)

        def savepoints():
            k1, k2 = wkey(), wkey()
            run("BEGIN")
            run("INSERT INTO soak_w VALUES (%s, 'a')", (k1,))
            run("SAVEPOINT a")
            run("INSERT INTO soak_w VALUES (%s, 'b')", (k2,))
            run("UPDATE soak_w SET value = 'changed' WHERE key = %s", (k1,), rc1)
            run("ROLLBACK TO SAVEPOINT a")
            run("SAVEPOINT b")
            run("SELECT value::int FROM soak WHERE key = 'soak/00001'", error="22P02")
            run("ROLLBACK TO SAVEPOINT b")
            run("SELECT key, value FROM soak_w WHERE key = ANY(%s)", ([k1, k2],), [(k1, "a")])
            run("RELEASE SAVEPOINT a")
            run("COMMIT")
            run("SELECT value FROM soak_w WHERE key = ANY(%s)", ([k1, k2],), [("a",)])
            run("DELETE FROM soak_w WHERE key = %s", (k1,), rc1)

        def failures():
            r = rng.random()
            if r < 0.4:  # duplicate key, transaction mode: refused at COMMIT
                run("INSERT INTO soak VALUES ('soak/00002', 'dup')", error="23505")
            elif r < 0.7:
                run("SELECT value::int FROM soak WHERE key = 'soak/00003'", error="22P02")
            else:  # an error after writes: the transaction's pending writes are discarded
                k = wkey()
                run("BEGIN")
                run("INSERT INTO soak_w VALUES (%s, 'never')", (k,))
                run("SELECT 1 / (count(*) - count(*)) FROM soak WHERE key = 'soak/00004'",
                    error="22012")
                run("ROLLBACK")
                run("SELECT count(*) FROM soak_w WHERE key = %s", (k,), [(0,)])

        scan_s = [None]

        def cancelled_scan():
            """A 200-request scan cancelled part-way: statement_timeout, or
            pg_cancel_backend from the second session."""
            if scan_s[0] is None:
                t0 = time.perf_counter()
                run("SELECT count(*) FROM soak_slow", expect=[(nkeys,)])
                scan_s[0] = time.perf_counter() - t0
            delay_ms = max(2, int(scan_s[0] * 1000 / 4))

            def cancellable_scan():
                st["n"] += 1
                try:
                    n = conn.execute("SELECT count(*) FROM soak_slow").fetchone()[0]
                    st["cancel_missed"] += 1
                    if n != nkeys:
                        st["unexpected"].append(f"soak_slow: {n} keys")
                except psycopg.errors.QueryCanceled:
                    st["cancelled"] += 1
                    st["errors"]["57014"] += 1

            if rng.random() < 0.5:
                run(f"SET statement_timeout = {delay_ms}")
                cancellable_scan()
                run("SET statement_timeout = 0")
            else:
                timer = threading.Timer(
                    delay_ms / 1000, lambda: canceller.execute("SELECT pg_cancel_backend(%s)", (pid,)))
                timer.start()
                cancellable_scan()
                timer.join()
                # a cancel that arrives after the scan ended may hit this one instead
                st["n"] += 1
                try:
                    conn.execute("SELECT 1").fetchall()
                except psycopg.errors.QueryCanceled:
                    st["errors"]["57014"] += 1

        units = [(lookup, 30), (prefix_scan, 10), (top_n, 5), (writes_txn_mode, 8),
                 (writes_statement_mode, 4), (transaction, 4), (savepoints, 3), (failures, 6),
                 (cancelled_scan, 1)]
        fns = [u for u, _w in units]
        weights = [w for _u, w in units]
        samples = []
        log(f"soak: {total} statements in backend {pid} (RSS after {warm} statements and at the end)")
        t_start = time.perf_counter()
        r0 = None
        next_sample = 0
        while st["n"] < total:
            rng.choices(fns, weights)[0]()
            if r0 is None and st["n"] >= warm:
                r0 = rss()
                samples.append((st["n"], r0))
            if st["n"] >= next_sample:
                samples.append((st["n"], rss()))
                next_sample += max(1, total // 20)
        r1 = rss()
        samples.append((st["n"], r1))
        elapsed = time.perf_counter() - t_start
        left = conn.execute("SELECT count(*) FROM soak_w").fetchone()[0]
        alive = conn.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
        conn.close()
        canceller.close()
        growth = (r1["VmRSS"] - r0["VmRSS"]) / 1024
        anon = (r1["RssAnon"] - r0["RssAnon"]) / 1024
        problems = list(st["unexpected"])
        if left:
            problems.append(f"{left} keys left under soakw/ (every unit deletes what it wrote)")
        if not alive:
            problems.append("the backend changed")
        if st["cancelled"] == 0:
            problems.append("no scan was cancelled")
        result = "pass" if growth < 5 and not problems else (
            "FAIL" if not problems else f"FAIL ({len(problems)} unexpected results)")
        self.res.add(
            workload=f"soak: backend RSS growth (VmRSS) over {fmt_n(total)} mixed statements, "
                     f"after a warm-up of {fmt_n(warm)}",
            n=fmt_n(total), fdw=f"{growth:.1f} MB", raw="-", ratio="-", target="< 5 MB",
            result=result, reps=f"1×{st['n']}", fdw_value=growth, raw_value=None,
        )
        self.res.samples["soak"] = {
            "statements": st["n"], "warmup": warm, "seconds": elapsed,
            "vmrss_warm_kb": r0["VmRSS"], "vmrss_end_kb": r1["VmRSS"],
            "rssanon_warm_kb": r0["RssAnon"], "rssanon_end_kb": r1["RssAnon"],
            "vmrss_growth_mb": growth, "rssanon_growth_mb": anon,
            "errors_by_sqlstate": dict(st["errors"]), "cancelled": st["cancelled"],
            "cancel_missed": st["cancel_missed"], "unexpected": problems,
            "rss_samples": [(n, x["VmRSS"], x["RssAnon"]) for n, x in samples],
        }
        self.res.notes.append(
            f"Soak: {st['n']} statements in {elapsed:.0f} s in one backend; VmRSS "
            f"{r0['VmRSS'] / 1024:.1f} MB after the warm-up, {r1['VmRSS'] / 1024:.1f} MB at the end "
            f"({growth:+.1f} MB; private anonymous memory RssAnon {anon:+.1f} MB); expected errors "
            + ", ".join(f"{k} x{v}" for k, v in sorted(st["errors"].items()))
            + f"; {st['cancelled']} scans cancelled part-way ({st['cancel_missed']} finished before "
            "the cancel)" + (f"; UNEXPECTED: {'; '.join(problems[:5])}" if problems else "") + ".")
        log(f"  soak: {st['n']} statements in {elapsed:.0f} s, VmRSS {growth:+.2f} MB "
            f"(RssAnon {anon:+.2f} MB), {len(problems)} unexpected")

    # -- output -------------------------------------------------------------------
    def table_md(self):
        head = ("| workload | N | FDW median | raw median | ratio FDW/raw | target | result "
                "| reps×iters |\n|---|---|---:|---:|---:|---|---|---|\n")
        def cell(v):
            return str(v).replace("|", "\\|")

        lines = [
            "| " + " | ".join(cell(r[k]) for k in
                              ("workload", "n", "fdw", "raw", "ratio", "target", "result", "reps"))
            + " |"
            for r in self.res.rows
        ]
        return head + "\n".join(lines) + "\n"

    def workload_text(self):
        a = self.a
        return [
            "**full scan**: N keys `s<N>/k/<i>` and `s<N>/p/<i>` (i % 100 == 0) with 100-byte "
            "values; FDW `SELECT sum(length(value)) FROM scan_<N>` (table option prefix "
            f"'s<N>/'); raw: range requests over the prefix paged by the same Pager "
            f"(etcd_fdw_core::scan), page size {a.fetch_label}, pinned to the first page's revision, "
            "summing value lengths.",
            "**prefix scan 1%**: FDW `... WHERE key LIKE 's<N>/p/%'` (pushed down as a prefix "
            "range); raw: the same paged scan over prefix `s<N>/p/`.",
            "**ORDER BY key DESC LIMIT 10**: FDW `SELECT key FROM scan_<N> ORDER BY key DESC "
            "LIMIT 10` (sort, limit and keys-only pushed down); raw: one range request with sort "
            "descend by key, limit 10, keys only.  etcd ignores the limit when it has to sort, "
            "so both read the whole range.",
            f"**point lookups**: {fmt_n(a.lookup_keys)} keys `1000000`..; pgbench -M prepared, "
            "script `\\set k random(...)` + `SELECT value FROM lk WHERE key = :k`, -c 1 / -c 4, "
            f"{fmt_n(a.lookup_count)} transactions per run in total (tps without initial "
            "connection time); raw: the same number of gets of uniformly random keys, 1 task, or "
            "4 OS threads each with its own connection and current-thread runtime.",
            "**point lookups in the backend**: the same lookups from a PL/pgSQL loop "
            "(`k := <random key>; SELECT value INTO v FROM lk WHERE key = k`, a cached generic "
            "plan with the key pushed down as a parameter), one call per session doing its share "
            "of the lookups, 1 or 4 sessions at once; raw: as above.  This leaves out pgbench and "
            "the client round trip per statement, so it shows the extension's own cost per "
            "lookup.",
            f"**many backends**: pgbench -M prepared -T {a.backend_seconds} with "
            f"{', '.join(map(str, a.backend_clients))} clients (-j up to the CPUs), scripts "
            "`SELECT value FROM lk WHERE key = :k` (lookups) and that plus `UPDATE lk SET value = "
            "'v' || :u WHERE key = :u` (mixed: a read and a guarded commit); latencies from "
            "pgbench's per-transaction log; a mixed transaction whose commit lost to another "
            "client's UPDATE of the same key (40001) is run again (pgbench --max-tries 10).  "
            "Raw: as many OS threads, each with its own "
            "connection, doing gets (lookups) or a get, a get of another key and a Txn "
            "comparing its mod_revision and putting it (mixed).  etcd connections: the most TCP "
            "connections to etcd's client port at once, beyond those open before the run "
            "(/proc/net/tcp); memory: the median of the pgbench backends' peak RssAnon, and "
            "the raw client process's VmHWM.  The largest client count runs once more through "
            "etcd's gRPC proxy (`etcd grpc-proxy start`), its connections counted.",
            f"**bulk writes**: {fmt_n(a.write_rows)} rows into a fresh prefix per repetition.  "
            "FDW `INSERT INTO w SELECT 'w/f<r>/' || i, repeat('v', 100) FROM generate_series(1, "
            "n) i`, `UPDATE w SET value = value || 'x' WHERE key LIKE 'w/f<r>/%'`, `DELETE FROM w "
            f"WHERE key LIKE 'w/f<r>/%'` (batch_size {a.batch_size}); raw: txns of "
            f"{a.batch_size} ops, INSERT = compare create_revision = 0 + put; UPDATE/DELETE = "
            f"read the prefix in pages of {a.fetch_label} at one revision, then per key compare "
            "mod_revision = the revision read + put (keeping the lease) / delete.",
            f"**memory**: {fmt_n(a.mem_keys)} keys with {a.mem_value_size}-byte values; in a "
            "fresh backend, after a warm-up lookup, VmHWM from /proc/<backend pid>/status before "
            "and after `SELECT sum(length(value)) FROM mem`; raw: VmHWM of the raw client before "
            "and after the same paged scan.",
            f"**soak**: {fmt_n(a.soak_statements)} statements in ONE backend, a seeded random mix "
            "of point lookups, a 100-key prefix scan, ORDER BY key DESC LIMIT 3, INSERT/UPDATE/"
            "DELETE in transaction mode (autocommit) and in statement mode (with RETURNING and a "
            "23505), BEGIN ... COMMIT with read-your-writes, savepoints rolled back (with a 22P02 "
            "inside one), failing statements (23505 at COMMIT, 22P02, 22012 after pending writes) "
            "and 200-request scans cancelled part-way by statement_timeout or by "
            "pg_cancel_backend from a second session; every answer and SQLSTATE is checked.  "
            "VmRSS from /proc/<backend pid>/status after the warm-up (the first 10%, at most 10k "
            "statements) and at the end.",
        ]

    def write_outputs(self, machine, error=None):
        a = self.a
        os.makedirs(a.out, exist_ok=True)
        md = ["# etcd_fdw benchmark results", ""]
        if error:
            md += [f"**The run did not complete:** `{error}`", ""]
        md += [
            f"Command: `python3 bench/run.py {' '.join(a.argv)}`".rstrip() + "  ",
            f"Sizes: {', '.join(fmt_n(n) for n in a.sizes)}; repetitions: {a.reps} per side "
            f"(alternating FDW, raw, FDW, raw, ...; fewer for runs longer than the "
            f"{a.budget:.0f} s budget); fetch_size {a.fetch_label}; batch_size {a.batch_size}; "
            f"total time {self.elapsed() / 60:.1f} min.",
            "",
            "## Results",
            "",
            self.table_md(),
            "Times are medians per operation (a short query is run `iters` times per sample, the "
            "same number on both sides).  FDW times are measured around the statement in one "
            "open session (client round trip included, connection set-up excluded); raw times "
            "are measured inside the raw client after it connected and sent one warm-up request.  "
            "For point lookups the columns are throughputs and the ratio is raw/FDW ops/s "
            "(a time ratio).  The memory row compares VmHWM growth of the backend with that of "
            "the raw client process.",
            "",
        ]
        md += ["## Workloads", ""] + [f"* {w}" for w in self.workload_text()] + [""]
        if self.res.notes:
            md += ["## Notes", ""] + [f"* {n}" for n in self.res.notes] + [""]
        md += ["## Machine", ""]
        for k in ("date", "nproc", "cpu", "ram", "kernel", "etcd", "postgres", "etcd_fdw"):
            md.append(f"* {k}: {machine.get(k, '?')}")
        md += ["", "![full scan time vs N](scan.svg)", ""]
        with open(os.path.join(a.out, "RESULTS.md"), "w") as f:
            f.write("\n".join(md))
        with open(os.path.join(a.out, "results.json"), "w") as f:
            json.dump({"machine": machine, "args": a.argv, "rows": self.res.rows,
                       "samples": self.res.samples, "notes": self.res.notes,
                       "error": error}, f, indent=1, default=str)
        if self.scan_points:
            with open(os.path.join(a.out, "scan.svg"), "w") as f:
                f.write(scan_svg(self.scan_points, a.fetch_size or "auto"))

    def run(self):
        a = self.a
        machine = {}
        error = None
        try:
            self.start()
            machine = self.machine()
            steps = [("scans", self.load_scan_sets), ("scans", self.scans),
                     ("lookups", self.lookups), ("writes", self.writes),
                     ("txwrites", self.txn_writes),
                     ("memory", self.memory), ("soak", self.soak),
                     ("backends", self.backends)]
            for name, fn in steps:
                if name in a.skip:
                    continue
                fn()
        except KeyboardInterrupt:
            error = "interrupted"
            raise
        except Exception as e:  # noqa: BLE001
            error = f"{type(e).__name__}: {e}"
            log(f"ERROR: {error}")
            if self.pg is not None and self.pg.started:
                log("PostgreSQL log tail:\n" + self.pg.log_tail(3000))
        finally:
            if not machine and self.fdw is not None:
                try:
                    machine = self.machine()
                except Exception:  # noqa: BLE001
                    pass
            self.write_outputs(machine, error)
            print()
            print(self.table_md())
            for n in self.res.notes:
                print("note:", n)
            print(f"results: {os.path.join(a.out, 'RESULTS.md')} (total {self.elapsed() / 60:.1f} min)")
        return 1 if error else 0


# --------------------------------------------------------------------------
# SVG chart, written by hand
# --------------------------------------------------------------------------


def scan_svg(points, fetch_size):
    """Log-log line chart of full-scan time vs N: FDW, raw client, and a
    linear reference through the raw client's smallest-N point."""
    ns = sorted(points)
    W, H = 720, 470
    L, R, T, B = 80, 30, 50, 90
    pw, ph = W - L - R, H - T - B
    ys = [v for n in ns for v in points[n] if v]
    lin = [(n, points[ns[0]][1] * n / ns[0]) for n in ns] if points[ns[0]][1] else []
    ys += [v for _, v in lin]
    xmin, xmax = math.log10(ns[0]), math.log10(ns[-1])
    if xmax - xmin < 1e-9:
        xmin, xmax = xmin - 0.5, xmax + 0.5
    xpad = (xmax - xmin) * 0.08
    xmin, xmax = xmin - xpad, xmax + xpad
    ymin, ymax = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    if ymax == ymin:
        ymax += 1

    def X(n):
        return L + (math.log10(n) - xmin) / (xmax - xmin) * pw

    def Y(s):
        return T + ph - (math.log10(s) - ymin) / (ymax - ymin) * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
        f'<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>',
        f'<text x="{L + pw / 2}" y="24" text-anchor="middle" font-size="15">'
        f"Full scan time vs N (median; 100-byte values; fetch_size {fetch_size})</text>",
    ]
    for e in range(ymin, ymax + 1):  # y grid: decades
        y = Y(10.0 ** e)
        lab = fmt_time(10.0 ** e).replace(".000 ms", " ms").replace(".0 ms", " ms")
        lab = lab.replace(".00 s", " s").replace(".0 s", " s")
        out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{L + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 8}" y="{y + 4:.1f}" text-anchor="end">{lab}</text>')
    for n in ns:  # x ticks at the measured sizes
        x = X(n)
        out.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{T + ph}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{T + ph + 18}" text-anchor="middle">{fmt_n(n)}</text>')
    out.append(f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    out.append(f'<text x="{L + pw / 2}" y="{T + ph + 38}" text-anchor="middle">'
               "N (keys, log scale)</text>")
    out.append(f'<text x="18" y="{T + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 18 {T + ph / 2})">time (log scale)</text>')
    series = [
        ("etcd_fdw", "#1f77b4", [(n, points[n][0]) for n in ns], ""),
        ("raw etcd client", "#ff7f0e", [(n, points[n][1]) for n in ns], ""),
        ("linear in N (from raw, smallest N)", "#999", lin, ' stroke-dasharray="5,4"'),
    ]
    legend_x = [L, L + 120, L + 290]  # one row under the x axis title
    for i, (label, color, pts, dash) in enumerate(series):
        pts = [(n, v) for n, v in pts if v]
        if not pts:
            continue
        d = " ".join(f"{X(n):.1f},{Y(v):.1f}" for n, v in pts)
        out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        if not dash:
            for n, v in pts:
                out.append(f'<circle cx="{X(n):.1f}" cy="{Y(v):.1f}" r="4" fill="{color}">'
                           f"<title>{fmt_n(n)}: {fmt_time(v)}</title></circle>")
        lx, ly = legend_x[i], H - 16
        out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 24}" y2="{ly}" stroke="{color}" '
                   f'stroke-width="2"{dash}/>')
        out.append(f'<text x="{lx + 30}" y="{ly + 4}">{label}</text>')
    out.append("</svg>\n")
    return "\n".join(out)


# --------------------------------------------------------------------------


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="sizes 10k,100k and fewer lookups (a few minutes)")
    p.add_argument("--sizes", help="full-scan sizes, e.g. 10k,100k,1M (default; --quick: 10k,100k)")
    p.add_argument("--reps", type=int, default=5, help="repetitions per side (default 5)")
    p.add_argument("--budget", type=float, default=450,
                   help="seconds per scan workload and size; longer runs get fewer "
                        "repetitions, at least 2 per side (default 450)")
    p.add_argument("--etcd-version", default=harness.ETCD35, choices=sorted(harness.ETCD_VERSION_IDS),
                   type=lambda v: harness.ETCD_VERSION_OF.get(v, v))
    p.add_argument("--fetch-size", type=int, default=None,
                   help="fixed keys per request (default: the adaptive paging both sides share)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lookup-keys", type=parse_size, default=100_000,
                   help="keys in the point-lookup table (default 100k)")
    p.add_argument("--lookup-count", type=parse_size,
                   help="lookups per run (default 20k; --quick: 5k)")
    p.add_argument("--write-rows", type=parse_size, default=20_000)
    p.add_argument("--backend-clients", default="1,8,32,64",
                   help="pgbench clients of the many-backends rows (default 1,8,32,64)")
    p.add_argument("--backend-seconds", type=int, default=10,
                   help="pgbench -T of each many-backends run (default 10; --quick 5)")
    p.add_argument("--mem-keys", type=parse_size, default=150_000)
    p.add_argument("--mem-value-size", type=int, default=1024)
    p.add_argument("--mem-reps", type=int, default=3)
    p.add_argument("--soak-statements", type=parse_size, default=100_000,
                   help="statements of the soak workload, in one backend (default 100k)")
    p.add_argument("--skip", default="",
                   help="comma list of: scans,lookups,writes,txwrites,memory,soak")
    p.add_argument("--out", default=None,
                   help="results directory (default bench/results for PostgreSQL 15, "
                        "bench/results/pgNN for the others)")
    a = p.parse_args(argv)
    if a.out is None:
        a.out = os.path.join(HERE, "results", *([] if harness.PG_MAJOR == 15 else [f"pg{harness.PG_MAJOR}"]))
    os.makedirs(a.out, exist_ok=True)
    a.argv = argv
    a.fetch_label = (str(a.fetch_size) if a.fetch_size is not None
                     else "auto (1000, growing fourfold up to 16 MiB per request)")
    if a.sizes:
        a.sizes = sorted({parse_size(s) for s in a.sizes.split(",") if s.strip()})
    else:
        a.sizes = [10_000, 100_000] if a.quick else [10_000, 100_000, 1_000_000]
    if a.lookup_count is None:
        a.lookup_count = 5_000 if a.quick else 20_000
    a.skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    a.backend_clients = [int(c) for c in a.backend_clients.split(",") if c.strip()]
    if a.quick and a.backend_seconds == 10:
        a.backend_seconds = 5
    a.reps = max(1, a.reps)
    if a.lookup_keys > LOOKUP_BASE:
        p.error(f"--lookup-keys: at most {LOOKUP_BASE}")
    unknown = a.skip - {"scans", "lookups", "writes", "txwrites", "memory", "soak", "backends"}
    if unknown:
        p.error(f"--skip: unknown workload(s) {', '.join(sorted(unknown))}")
    needs = []  # the soak runs without the raw client and pgbench
    if {"scans", "lookups", "writes", "txwrites", "memory", "backends"} - a.skip:
        needs.append((RAWCLIENT, "cargo build --release -p etcd_rawclient"))
    if {"lookups", "backends"} - a.skip:
        needs.append((PGBENCH, f"PostgreSQL {harness.PG_MAJOR} pgbench"))
    for path, what in needs:
        if not os.path.exists(path):
            p.error(f"{path} not found ({what})")
    # SIGTERM: exit normally so that harness' atexit hook stops etcd/PostgreSQL
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return Bench(a).run()


if __name__ == "__main__":
    sys.exit(main())
