#!/usr/bin/env python3
"""Reproducer: the member a session is connected to goes down while the
session runs multi-page scans (fetch_size 50, 2000 keys: 40 range requests
per scan).  README ("Connections"): a read that fails because its member went
away, or, with other endpoints, timed out, is retried on a fresh connection,
so every scan should succeed (a little later).

    python3 chaos/repro_member_down_mid_scan.py kill 8   # SIGKILL m1, 8 rounds
    python3 chaos/repro_member_down_mid_scan.py stop 4   # SIGSTOP m1, 4 rounds

m1 is the first endpoint of connstr (the one a new session connects to) and
is made a follower, so no election is involved.  Prints every error the
session saw and exits 1 if there was any.

Seen with the build installed 2026-11-26 04:40 (main 693da0c, "Retry reads
with backoff"):
  kill: about 1 round in 5-8: HV000 "etcd request failed: operation was
        canceled" (DETAIL "... at revision N": a later page of the scan);
  stop: every round: HV000 "etcd request timed out after 5s" 5.0 s after the
        SIGSTOP: the first attempt uses up the whole request_timeout budget,
        so the retry on another endpoint never happens.
"""

import collections
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

import psycopg  # noqa: E402

import harness  # noqa: E402
from etcdcluster import EtcdCluster  # noqa: E402


def main():
    how = sys.argv[1] if len(sys.argv) > 1 else "kill"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    c = EtcdCluster()
    c.start()
    pg = harness.PgCluster()
    pg.start()
    errors = collections.Counter()
    try:
        a = pg.connect("postgres")
        a.execute("CREATE EXTENSION etcd_fdw")
        a.execute("CREATE FOREIGN DATA WRAPPER etcd_fdw HANDLER etcd_fdw_handler VALIDATOR etcd_fdw_validator")
        a.execute(f"CREATE SERVER s FOREIGN DATA WRAPPER etcd_fdw OPTIONS (connstr '{c.connstr}', "
                  "connect_timeout '2', request_timeout '5')")
        a.execute("CREATE FOREIGN TABLE t (key text, value text) SERVER s "
                  "OPTIONS (rowid_column 'key', prefix 'p/', fetch_size '50')")
        c.put_many({f"p/{i:05d}": "x" * 100 for i in range(2000)})
        for r in range(rounds):
            c.ensure_all_running()
            c.move_leader("m2")
            conn = pg.connect("postgres")
            assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 2000
            stop = threading.Event()
            t_fault = [None]

            def loop(conn=conn, stop=stop, r=r):
                while not stop.is_set():
                    t0 = time.monotonic()
                    try:
                        n = conn.execute("SELECT count(*) FROM t").fetchone()[0]
                        assert n == 2000, n
                    except psycopg.Error as e:
                        d = e.diag
                        errors[(e.sqlstate, d.message_primary)] += 1
                        since = "" if t_fault[0] is None else f", {time.monotonic() - t_fault[0]:.1f} s after the {how}"
                        print(f"round {r}: {e.sqlstate} after {time.monotonic() - t0:.1f} s{since}: "
                              f"{d.message_primary} | DETAIL {d.message_detail}", flush=True)

            th = threading.Thread(target=loop)
            th.start()
            time.sleep(1)
            m1 = c.members[0]
            t_fault[0] = time.monotonic()
            m1.kill() if how == "kill" else m1.stop()
            time.sleep(8)
            stop.set()
            th.join(60)
            m1.start() if how == "kill" else m1.cont()
            conn.close()
        print("errors:", dict(errors) or "none")
        return 1 if errors else 0
    finally:
        pg.destroy()
        c.destroy()


if __name__ == "__main__":
    sys.exit(main())
