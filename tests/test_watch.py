"""etcd_watch() / etcd_watch_bytea(): etcd's change feed of a prefix in SQL.

Against etcd 3.4 and 3.5 (the etcd fixtures): replay from a revision with
prev_value, live events, max_events, the idle timeout, cancel and
statement_timeout (also against a paused etcd), compaction, the key range of
a prefix, non-UTF-8 keys, LIMIT, permissions, a non-UTF-8 database, and a
watch that resumes after its etcd member restarted.
"""

import json
import time
import urllib.request

import psycopg
import pytest

from etcdcluster import EtcdCluster
from harness import (
    AUTH_PREFIX,
    CAROL_PASSWORD,
    QueryThread,
    assert_session_usable,
    err_text,
    expect_error,
    finish_or_rescue,
    selected_etcd_versions,
    tcp_states_to,
    wait_backend_active,
    wait_until,
)

# How much longer than a configured timeout a statement may take on a
# loaded 2-core CI machine (two suites side by side) before we call it hung.
SLACK = 8.0

COLUMNS = (
    "revision, event, key, value, prev_value, create_revision, mod_revision, version, lease"
)


def server(db, etcd, name="s", **options):
    db.create_server(name, etcd.endpoint, **options)
    return name


def watch(db, prefix, start=0, max_events=1000, timeout_ms=500, fn="etcd_watch", conn=None):
    return db.rows(
        f"SELECT {COLUMNS} FROM {fn}('s', %s, %s, %s, %s)",
        (prefix, start, max_events, timeout_ms),
        conn=conn,
    )


def _metric(etcd_url, prefix):
    with urllib.request.urlopen(etcd_url + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(prefix):
                return int(float(line.split()[-1]))
    raise AssertionError(f"no {prefix.strip()} in /metrics")


def watcher_count(etcd_url):
    """etcd's gauge of watchers (from /metrics): how many watches it serves."""
    return _metric(etcd_url, "etcd_debugging_mvcc_watcher_total ")


def watch_messages_sent(etcd_url):
    """How many messages etcd has sent on Watch streams (each watch's
    "created" answer, then one per batch of events)."""
    return _metric(
        etcd_url,
        'grpc_server_msg_sent_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch"',
    )


def wait_watchers(etcd_url, n):
    """Wait until etcd serves exactly n watchers: 0 before a test's watch
    (earlier watches' cancels reach etcd asynchronously), 1 once the
    watch of a running etcd_watch() exists on etcd."""
    wait_until(lambda: watcher_count(etcd_url) == n, f"etcd to serve {n} watcher(s)", interval=0.05)


def connected(pid, port):
    """Whether pid holds a connection to port it has not given up yet."""
    return any(st in ("01", "08") for st in tcp_states_to(pid, port))


# --------------------------------------------------------------------------
# history, live events, stopping
# --------------------------------------------------------------------------


def test_replays_history_in_order_with_prev_values(db, etcd, kp):
    server(db, etcd)
    start = db.scalar("SELECT etcd_revision('s')") + 1
    r1 = etcd.put(kp + "a", "1")
    r2 = etcd.put(kp + "a", "2")
    r3 = etcd.put(kp + "b", "x")
    etcd.ctl("del", "--", kp + "a")
    r4 = db.scalar("SELECT etcd_revision('s')")
    assert (r1, r2, r3) == (start, start + 1, start + 2) and r4 == start + 3
    expected = [
        (r1, "PUT", kp + "a", "1", None, r1, r1, 1, 0),
        (r2, "PUT", kp + "a", "2", "1", r1, r2, 2, 0),
        (r3, "PUT", kp + "b", "x", None, r3, r3, 1, 0),
        (r4, "DELETE", kp + "a", None, "2", None, r4, None, None),
    ]
    assert watch(db, kp, start) == expected
    # from the middle of the history
    assert watch(db, kp, r2) == expected[1:]
    # the defaults (0, 1000, 10000) and named arguments
    assert db.rows(
        "SELECT revision, event, key FROM etcd_watch('s', %s, %s, timeout_ms => 300)",
        (kp, r4),
    ) == [(r4, "DELETE", kp + "a")]
    # the bytea variant sees the same events
    assert watch(db, kp, start, fn="etcd_watch_bytea") == [
        (rev, ev, k.encode(), v and v.encode(), p and p.encode(), c, m, ver, lease)
        for rev, ev, k, v, p, c, m, ver, lease in expected
    ]


def test_follows_a_live_write(db, etcd, kp):
    server(db, etcd)
    before = etcd.put(kp + "old", "x")
    c = db.connect()
    wait_watchers(etcd.url, 0)
    t = QueryThread(
        c, f"SELECT {COLUMNS} FROM etcd_watch('s', %s, 0, 1, 60000)", (kp,)
    )
    t.start()
    wait_watchers(etcd.url, 1)  # the watch exists on etcd: the write is live
    rev = etcd.put(kp + "live", "v")
    t.join(60)
    assert not t.is_alive() and t.error is None, t.error
    # the watch started after `before`: only the live write, not the old one
    assert rev > before
    assert t.rows == [(rev, "PUT", kp + "live", "v", None, rev, rev, 1, 0)]
    # max_events 1: it returned on the event, not after its 60 s idle timeout
    assert t.elapsed < 30, t.elapsed


def test_stops_at_max_events(db, etcd, kp):
    server(db, etcd)
    start = etcd.put(kp + "0", "v")
    for i in range(1, 5):
        etcd.put(kp + str(i), "v")
    t0 = time.monotonic()
    rows = watch(db, kp, start, max_events=3, timeout_ms=60000)
    # returns as soon as it has 3 events, without waiting for the 60 s timeout
    assert time.monotonic() - t0 < 30
    assert [r[2] for r in rows] == [kp + "0", kp + "1", kp + "2"]


def test_stops_after_the_idle_timeout(db, etcd, kp):
    server(db, etcd)
    t0 = time.monotonic()
    assert watch(db, kp, 0, timeout_ms=1500) == []
    elapsed = time.monotonic() - t0
    # the statement contains the whole 1.5 s wait (same clock: CLOCK_MONOTONIC)
    assert 1.5 <= elapsed < 1.5 + SLACK, elapsed
    # a future start revision: waits for it like a live watch
    future = db.scalar("SELECT etcd_revision('s')") + 1000
    assert watch(db, kp, future, timeout_ms=300) == []
    # timeout_ms 0: only what has already arrived, no waiting
    t0 = time.monotonic()
    assert watch(db, kp, 0, timeout_ms=0) == []
    assert time.monotonic() - t0 < SLACK
    # the idle timeout restarts with each event: a write a second into a
    # 5 s watch (by PostgreSQL's clock, once the watch exists on etcd)
    # extends it to a full 5 s after the write
    idle = 5.0
    observer = db.second_connection()
    c = db.connect()
    pid = db.backend_pid(conn=c)
    wait_watchers(etcd.url, 0)
    t = QueryThread(
        c, "SELECT key FROM etcd_watch('s', %s, 0, 1000, %s)", (kp, int(idle * 1000))
    )
    t.start()
    wait_watchers(etcd.url, 1)
    assert wait_backend_active(observer, pid, min_active=1.0, alive=t.is_alive)
    put_at = time.monotonic()
    etcd.put(kp + "late", "v")
    t.join(60)
    assert not t.is_alive() and t.error is None, t.error
    assert t.rows == [(kp + "late",)]
    after_put = t.ended_at - put_at
    assert idle <= after_put < idle + SLACK, after_put


# --------------------------------------------------------------------------
# cancellation
# --------------------------------------------------------------------------


def test_statement_timeout_stops_a_watch_on_a_paused_etcd(db, etcd_fresh):
    server(db, etcd_fresh)
    c = db.connect()
    c.execute("SELECT etcd_revision('s')")  # connected
    # long enough that etcd is certainly paused before it fires
    c.execute("SET statement_timeout = '5s'")
    wait_watchers(etcd_fresh.url, 0)
    t = QueryThread(c, "SELECT * FROM etcd_watch('s', 'k/', 0, 1000, 60000)")
    t.start()
    wait_watchers(etcd_fresh.url, 1)  # the watch is waiting on etcd
    etcd_fresh.stop()
    try:
        finish_or_rescue(t, etcd_fresh, 5 + 2 * SLACK)
    finally:
        etcd_fresh.cont()
    assert isinstance(t.error, psycopg.errors.QueryCanceled), t.error
    assert "statement timeout" in err_text(t.error)
    assert 5 <= t.elapsed < 5 + SLACK, t.elapsed
    assert_session_usable(c)
    # and the session can watch again
    c.execute("SET statement_timeout = 0")
    rev = etcd_fresh.put("k/again", "v")
    assert c.execute(
        "SELECT revision, key FROM etcd_watch('s', 'k/', %s, 1, 5000)", (rev,)
    ).fetchall() == [(rev, "k/again")]


def test_cancel_stops_a_waiting_watch(db, etcd, kp):
    server(db, etcd)
    observer = db.second_connection()
    c = db.connect()
    pid = db.backend_pid(conn=c)
    wait_watchers(etcd.url, 0)
    t = QueryThread(c, "SELECT * FROM etcd_watch('s', %s, 0, 1000, 60000)", (kp,))
    t.start()
    wait_watchers(etcd.url, 1)  # the watch is waiting on etcd
    cancel_at = time.monotonic()
    observer.execute("SELECT pg_cancel_backend(%s)", (pid,))
    finish_or_rescue(t, None, 2 * SLACK)
    assert isinstance(t.error, psycopg.errors.QueryCanceled), t.error
    assert t.ended_at - cancel_at < SLACK
    assert_session_usable(c)


# --------------------------------------------------------------------------
# compaction, key ranges, bytes
# --------------------------------------------------------------------------


def test_compacted_start_revision_is_refused(db, etcd_fresh):
    server(db, etcd_fresh)
    first = etcd_fresh.put("c/k", "1")
    for v in "2345":
        last = etcd_fresh.put("c/k", v)
    etcd_fresh.ctl("compact", str(last))
    e = expect_error(
        db.conn, "SELECT * FROM etcd_watch('s', 'c/', %s, 10, 1000)", (first,),
        sqlstate="22023",
    )
    text = err_text(e)
    assert "compacted" in text and str(last) in text and str(first) in text, text
    assert_session_usable(db.conn)
    # from the compact revision on, the history is still there
    rows = watch(db, "c/", last)
    assert [(r[0], r[3], r[4]) for r in rows] == [(last, "5", None)]
    # (prev_value: the revision before was compacted away)


def test_empty_prefix_watches_every_key(db, etcd_fresh):
    server(db, etcd_fresh)
    start = db.scalar("SELECT etcd_revision('s')") + 1
    keys = ["a", "/service/x", "zzz", "\u00e9t\u00e9", "~"]
    for k in keys:
        etcd_fresh.put(k, "v")
    etcd_fresh.ctl("del", "--", "zzz")
    rows = watch(db, "", start)
    assert [(r[1], r[2]) for r in rows] == [("PUT", k) for k in keys] + [("DELETE", "zzz")]
    assert [r[0] for r in rows] == list(range(start, start + len(keys) + 1))


def test_prefix_does_not_leak_neighbouring_keys(db, etcd, kp):
    server(db, etcd)
    base = kp[:-1]  # "t7" for prefix "t7/"
    start = etcd.put(base, "before")
    for k in [base + ".", kp, kp + "a", base + "0", kp + "\u00ff", base + "00"]:
        etcd.put(k, "v")
    rows = watch(db, kp, start)
    assert [r[2] for r in rows] == [kp, kp + "a", kp + "\u00ff"]
    # a prefix delete: one revision, one event per key, in key order
    etcd.ctl("del", "--prefix", "--", kp)
    rev = db.scalar("SELECT etcd_revision('s')")
    rows = watch(db, kp, rev)
    assert [r[:3] for r in rows] == [(rev, "DELETE", k) for k in [kp, kp + "a", kp + "\u00ff"]]


def test_non_utf8_keys_and_values(db, etcd, kp):
    server(db, etcd)
    start = etcd.put(kp + "ok", "fine")
    etcd.put_many({kp.encode() + b"bad\xff": b"v"})
    etcd.put_many({kp.encode() + b"val": b"\xfe\x00"})
    e = expect_error(
        db.conn, "SELECT * FROM etcd_watch('s', %s, %s, 1000, 500)", (kp, start),
        sqlstate="22021",
    )
    assert f"{kp}bad\\xff" in err_text(e), err_text(e)
    assert "etcd_watch_bytea" in err_text(e)
    assert_session_usable(db.conn)
    # up to the bad key, the text variant is fine
    assert [r[2] for r in watch(db, kp, start, max_events=1)] == [kp + "ok"]
    rows = watch(db, kp, start, fn="etcd_watch_bytea")
    assert [(r[2], r[3]) for r in rows] == [
        (kp.encode() + b"ok", b"fine"),
        (kp.encode() + b"bad\xff", b"v"),
        (kp.encode() + b"val", b"\xfe\x00"),
    ]
    # a bad value is named by its key
    e = expect_error(
        db.conn, "SELECT * FROM etcd_watch('s', %s, %s, 1000, 500)", (kp + "val", start),
        sqlstate="22021",
    )
    assert f'value of etcd key "{kp}val"' in err_text(e), err_text(e)


def test_latin1_database_converts_text(pg, etcd, kp):
    name = f"watch_latin1_{kp[:-1]}"
    admin = pg.connect("postgres")
    admin.execute(
        f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'LATIN1' "
        "LC_COLLATE 'C' LC_CTYPE 'C'"
    )
    try:
        c = pg.connect(name)
        c.execute("SET client_encoding = 'UTF8'")
        c.execute("CREATE EXTENSION etcd_fdw")
        c.execute("CREATE FOREIGN DATA WRAPPER etcd_fdw HANDLER etcd_fdw_handler "
                  "VALIDATOR etcd_fdw_validator")
        c.execute(f"CREATE SERVER s FOREIGN DATA WRAPPER etcd_fdw OPTIONS (connstr '{etcd.endpoint}')")
        pre = kp + "\u00e4/"  # a non-ASCII prefix, converted to UTF-8 for etcd
        start = etcd.put(pre + "k\u00e9", "\u00fc")
        etcd.put(kp + "a/x", "not under the prefix")
        rows = c.execute(
            "SELECT key, value FROM etcd_watch('s', %s, %s, 1000, 500)", (pre, start)
        ).fetchall()
        assert rows == [(pre + "k\u00e9", "\u00fc")]
        # a character LATIN1 does not have
        etcd.put(pre + "euro", "\u20ac")
        e = expect_error(
            c, "SELECT * FROM etcd_watch('s', %s, %s, 1000, 500)", (pre, start),
            sqlstate="22P05",
        )
        assert_session_usable(c)
        c.close()
    finally:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        admin.close()


# --------------------------------------------------------------------------
# LIMIT: the watch ends early and is canceled on etcd
# --------------------------------------------------------------------------


def test_limit_ends_the_watch(db, etcd, kp):
    server(db, etcd)
    start = etcd.put(kp + "0", "v")
    for i in range(1, 6):
        etcd.put(kp + str(i), "v")
    wait_watchers(etcd.url, 0)
    # in FROM, PostgreSQL reads the whole function result first (until the
    # idle timeout here), then the LIMIT applies
    rows = db.rows(
        "SELECT key FROM etcd_watch('s', %s, %s, 1000, 300) LIMIT 2", (kp, start)
    )
    assert rows == [(kp + "0",), (kp + "1",)]
    # in the select list the rows stream: LIMIT 2 stops the watch after two
    # events, long before its 60 s timeout
    t0 = time.monotonic()
    rows = db.rows(
        "SELECT (w).revision, (w).key FROM "
        "(SELECT etcd_watch('s', %s, %s, 1000, 60000) AS w) s LIMIT 2",
        (kp, start),
    )
    assert time.monotonic() - t0 < 30
    assert rows == [(start, kp + "0"), (start + 1, kp + "1")]
    assert_session_usable(db.conn)
    # the watch was canceled on etcd too
    wait_watchers(etcd.url, 0)
    # a cursor fetches events as they come
    with db.conn.transaction():
        db.execute(
            "DECLARE c NO SCROLL CURSOR FOR SELECT (w).* FROM "
            "(SELECT etcd_watch('s', %s, %s, 1000, 60000) AS w) s",
            (kp, start + 5),
        )
        t0 = time.monotonic()
        assert db.rows("FETCH 1 FROM c") == [
            (start + 5, "PUT", kp + "5", "v", None, start + 5, start + 5, 1, 0)
        ]
        rev = etcd.put(kp + "6", "v")
        assert [r[2] for r in db.rows("FETCH 1 FROM c")] == [kp + "6"]
        assert time.monotonic() - t0 < 30
        assert watcher_count(etcd.url) == 1
        db.execute("CLOSE c")
    wait_watchers(etcd.url, 0)
    assert rev == start + 6
    # the next watch in the session works
    assert [r[2] for r in watch(db, kp, start + 5)] == [kp + "5", kp + "6"]


def test_an_error_ends_the_watch_on_etcd(db, etcd, kp):
    server(db, etcd)
    start = etcd.put(kp + "a", "v")
    etcd.put_many({kp.encode() + b"b\xff": b"v"})
    wait_watchers(etcd.url, 0)
    expect_error(
        db.conn,
        "SELECT (w).key FROM (SELECT etcd_watch('s', %s, %s, 1000, 30000) AS w) s",
        (kp, start),
        sqlstate="22021",
    )
    wait_watchers(etcd.url, 0)
    assert_session_usable(db.conn)


# --------------------------------------------------------------------------
# arguments and permissions
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, name",
    [
        ("0, 0, 100", "max_events"),
        ("0, -5, 100", "max_events"),
        ("0, 10, -1", "timeout_ms"),
        ("-1, 10, 100", "start_revision"),
    ],
)
def test_invalid_arguments(db, etcd, args, name):
    server(db, etcd)
    e = expect_error(
        db.conn, f"SELECT * FROM etcd_watch('s', 'x/', {args})", sqlstate="22023"
    )
    assert name in err_text(e)
    expect_error(
        db.conn, f"SELECT * FROM etcd_watch_bytea('s', 'x/', {args})", sqlstate="22023"
    )


def test_without_usage_on_the_server(db, etcd, kp):
    server(db, etcd)
    role = f"watch_no_usage_{kp[:-1]}"
    rc = db.role_connection(role)
    for fn in ("etcd_watch", "etcd_watch_bytea"):
        expect_error(
            rc, f"SELECT * FROM {fn}('s', %s, 0, 1, 100)", (kp,), sqlstate="42501",
            contains="s",
        )
    expect_error(rc, "SELECT * FROM etcd_watch('nope', 'x', 0, 1, 100)", sqlstate="42704")
    db.execute(f"GRANT USAGE ON FOREIGN SERVER s TO {role}")
    rev = etcd.put(kp + "k", "v")
    assert rc.execute(
        "SELECT key FROM etcd_watch('s', %s, %s, 1, 5000)", (kp, rev)
    ).fetchall() == [(kp + "k",)]


def test_the_user_mappings_etcd_user(db, etcd_auth):
    db.create_server("s", etcd_auth.endpoint)
    db.create_user_mapping("s", username="carol", password=CAROL_PASSWORD)
    assert db.rows(
        "SELECT key FROM etcd_watch('s', %s, 1, 1000, 300)", (AUTH_PREFIX,)
    ) == [(AUTH_PREFIX + "a",), (AUTH_PREFIX + "b",)]
    # carol may not read secret/: nor watch it
    e = expect_error(
        db.conn, "SELECT * FROM etcd_watch('s', 'secret/', 1, 1000, 300)", sqlstate="42501"
    )
    assert "permission denied" in err_text(e)
    expect_error(db.conn, "SELECT * FROM etcd_watch('s', '', 1, 1000, 300)", sqlstate="42501")


# --------------------------------------------------------------------------
# a lost connection: resumed within request_timeout, else 08006
# --------------------------------------------------------------------------


@pytest.fixture(scope="module", params=selected_etcd_versions())
def single(request):
    """A one-member etcd that can be killed and restarted on its port."""
    c = EtcdCluster(request.param, names=("m1",))
    try:
        c.start()
        yield c
    finally:
        c.destroy()


def test_resumes_after_the_member_restarts(db, single):
    m = single["m1"]
    db.create_server("s", m.endpoint, request_timeout="30")
    start = db.scalar("SELECT etcd_revision('s')") + 1
    c = db.connect()
    pid = db.backend_pid(conn=c)
    sent = watch_messages_sent(m.url)
    t = QueryThread(
        c, f"SELECT {COLUMNS} FROM etcd_watch('s', 'r/', %s, 3, 30000)", (start,)
    )
    t.start()
    wait_watchers(m.url, 1)
    single.put(m, "r/1", "a")
    # etcd has sent the watch its "created" answer and the first event:
    # the restart comes in the middle of the watch
    wait_until(lambda: watch_messages_sent(m.url) >= sent + 2, "etcd to send the first event")
    assert connected(pid, m.client_port)
    m.kill()
    # the watch has seen its connection break (and dropped it) before the
    # member is back
    wait_until(lambda: not connected(pid, m.client_port), "the watch to drop its broken connection")
    m.start()
    single.wait_healthy()
    single.put(m, "r/2", "b")
    single.put(m, "r/1", "c")
    t.join(40)
    assert not t.is_alive() and t.error is None, t.error
    assert [(r[1], r[2], r[3], r[4]) for r in t.rows] == [
        ("PUT", "r/1", "a", None),
        ("PUT", "r/2", "b", None),
        ("PUT", "r/1", "c", "a"),
    ]
    assert [r[0] for r in t.rows] == [start, start + 1, start + 2]
    assert_session_usable(c)


def test_a_connection_lost_for_good_is_08006(db, single):
    m = single["m1"]
    db.create_server("s", m.endpoint, request_timeout="2", connect_timeout="1")
    start = db.scalar("SELECT etcd_revision('s')") + 1
    c = db.connect()
    wait_watchers(m.url, 0)
    t = QueryThread(c, "SELECT * FROM etcd_watch('s', 'g/', %s, 1000, 60000)", (start,))
    t.start()
    try:
        wait_watchers(m.url, 1)  # the watch is waiting on etcd
        killed_at = time.monotonic()
        m.kill()
        t.join(60)
        assert not t.is_alive()
    finally:
        m.start()
        single.wait_healthy()
    assert t.error is not None and t.error.sqlstate == "08006", t.error
    text = err_text(t.error)
    assert '"s"' in text and f"revision {start}" in text, text
    # given up after request_timeout (2 s) of failed reconnects
    assert t.ended_at - killed_at < 2 + SLACK, t.ended_at - killed_at
    assert_session_usable(c)
