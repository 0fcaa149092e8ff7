"""etcd's gRPC proxy (`etcd grpc-proxy start`) between PostgreSQL and etcd:
many backends folded into one connection to etcd, with scans, lookups,
key lists, count(*), transactions, watch and leases working through it,
and its faults (etcd behind it down, the proxy itself gone) reported as
such.  Also: an etcd restart under 64 idle backends leaves none stuck.

Every expected result is read from etcd itself (etcdctl, straight to the
member, not through the proxy); connections are counted from the kernel's
socket table (/proc/net/tcp), not inferred.
"""

import threading

import psycopg
import pytest

from harness import (
    GrpcProxy,
    QueryThread,
    err_text,
    expect_error,
    finish_or_rescue,
    pids_connected_to,
    tcp_states_to,
    wait_until,
)
from test_options import LOAD_SLACK, statement_seconds


@pytest.fixture(scope="module")
def proxy(etcd):
    p = GrpcProxy(etcd).start()
    yield p
    p.destroy()


def _proxied_server(db, proxy, name="s", **options):
    db.create_server(name, proxy.endpoint, **options)
    return name


def _rows(db, sql, params=None, conn=None):
    return [tuple(r) for r in db.rows(sql, params, conn=conn)]


def test_scans_lookups_key_lists_and_count(db, etcd, proxy, kp):
    """Everything a SELECT can ask for, answered through the proxy exactly
    as etcd holds it; the backend talks to the proxy only."""
    data = {f"{kp}k{i:04d}": f"v{i}" for i in range(300)}
    etcd.put_many(data)
    _proxied_server(db, proxy)
    # small pages: the scan reads several pages at one revision through it
    db.create_table("t", "s", prefix=kp, fetch_size="64")
    want = sorted(data.items())
    assert _rows(db, "SELECT key, value FROM t ORDER BY key") == want
    key = f"{kp}k0123"
    assert _rows(db, "SELECT key, value FROM t WHERE key = %s", (key,)) == [(key, "v123")]
    keys = [f"{kp}k{i:04d}" for i in (7, 70, 299)] + [f"{kp}missing"]
    assert _rows(db, "SELECT key, value FROM t WHERE key = ANY(%s) ORDER BY key", (keys,)) == [
        (k, data[k]) for k in sorted(keys[:3])
    ]
    assert db.scalar("SELECT count(*) FROM t") == 300
    assert db.scalar("SELECT etcd_get('s', %s)", (key,)) == "v123"
    pid = db.backend_pid()
    assert "01" in tcp_states_to(pid, proxy.port)
    assert tcp_states_to(pid, etcd.port) == []


def test_transaction_and_its_guard(db, etcd, proxy, kp):
    """A multi-key COMMIT lands at one revision through the proxy, and its
    guard still sees a concurrent change (40001, nothing overwritten)."""
    etcd.put(kp + "old", "1")
    etcd.put(kp + "gone", "x")
    _proxied_server(db, proxy)
    db.create_table("t", "s", prefix=kp)
    c = db.conn
    with c.transaction():
        c.execute("INSERT INTO t VALUES (%s, 'a'), (%s, 'b')", (kp + "n1", kp + "n2"))
        c.execute("UPDATE t SET value = '2' WHERE key = %s", (kp + "old",))
        c.execute("DELETE FROM t WHERE key = %s", (kp + "gone",))
    revs = {etcd.get_kv(kp + k)["mod_revision"] for k in ("n1", "n2", "old")}
    assert len(revs) == 1
    assert etcd.get(kp + "old") == b"2" and etcd.get(kp + "gone") is None

    c.execute("BEGIN")
    c.execute("UPDATE t SET value = 'mine' WHERE key = %s", (kp + "old",))
    etcd.put(kp + "old", "theirs")
    expect_error(c, "COMMIT", sqlstate="40001")
    assert etcd.get(kp + "old") == b"theirs"


def test_watch_replays_and_follows(db, etcd, proxy, kp):
    """etcd_watch through the proxy: history from a revision, then a change
    made after the watch was established."""
    start = etcd.revision() + 1
    for i in range(5):
        etcd.put(f"{kp}w{i}", str(i))
    _proxied_server(db, proxy)
    got = _rows(
        db, "SELECT key, value FROM etcd_watch('s', %s, %s, 5, 30000)", (kp, start)
    )
    assert got == [(f"{kp}w{i}", str(i)) for i in range(5)]
    # catch-up: timeout 0 returns every event up to now, then stops
    assert db.scalar(
        "SELECT count(*) FROM etcd_watch('s', %s, %s, 1000, 0)", (kp, start)
    ) == 5

    # live: the watch waits for a change that comes after it started
    after = etcd.revision() + 1
    c = db.second_connection()
    t = QueryThread(c, "SELECT key, value FROM etcd_watch('s', %s, %s, 1, 60000)", (kp, after))
    t.start()
    etcd.put(kp + "live", "now")
    t.join(60 + LOAD_SLACK)
    assert not t.is_alive(), "etcd_watch through the proxy did not return the live event"
    assert t.error is None, t.error
    assert [tuple(r) for r in t.rows] == [(kp + "live", "now")]


def test_leases(db, etcd, proxy, kp):
    """Grant, attach, info, keep-alive, list and revoke through the proxy;
    etcd itself shows each effect."""
    _proxied_server(db, proxy)
    lease = db.scalar("SELECT etcd_lease_grant('s', 60)")
    assert lease > 0
    db.scalar("SELECT etcd_put('s', %s, 'v', %s)", (kp + "leased", lease))
    assert etcd.get_kv(kp + "leased")["lease"] == lease
    ttl, granted, keys = db.rows("SELECT ttl, granted_ttl, keys FROM etcd_lease_info('s', %s)", (lease,))[0]
    assert granted == 60 and 0 < ttl <= 60 and keys == [kp + "leased"]
    assert db.scalar("SELECT etcd_lease_keepalive('s', %s)", (lease,)) == 60
    assert lease in [r[0] for r in db.rows("SELECT * FROM etcd_leases('s')")]
    db.execute("SELECT etcd_lease_revoke('s', %s)", (lease,))
    assert etcd.get(kp + "leased") is None


def test_many_backends_one_etcd_connection(db, etcd, proxy, kp):
    """Twelve sessions through the proxy: etcd sees one client process (the
    proxy); twelve sessions straight to etcd: twelve."""
    etcd.put(kp + "k", "v")
    _proxied_server(db, proxy, "via_proxy")
    db.create_server("direct", etcd.endpoint)
    db.create_table("tp", "via_proxy", prefix=kp)
    db.create_table("td", "direct", prefix=kp)
    conns = [db.connect() for _ in range(12)]
    try:
        pids = set()
        for c in conns:
            assert _rows(db, "SELECT key, value FROM tp", conn=c) == [(kp + "k", "v")]
            pids.add(db.backend_pid(conn=c))
        clients = pids_connected_to(etcd.port)
        assert pids.isdisjoint(clients), clients
        assert proxy.pid in clients
        assert pids <= pids_connected_to(proxy.port)

        for c in conns:
            assert _rows(db, "SELECT key, value FROM td", conn=c) == [(kp + "k", "v")]
        assert pids <= pids_connected_to(etcd.port)
    finally:
        for c in conns:
            c.close()


def _timed_failure(db, conn, sql, limit):
    """Run sql on conn (in a thread: never hangs the test); return its
    error and how long it ran by the backend's clock."""
    observer = db.second_connection()
    pid = db.backend_pid(conn)
    t = QueryThread(conn, sql)
    t.start()
    finish_or_rescue(t, None, limit)
    assert t.error is not None, f"{sql} unexpectedly succeeded: {t.rows}"
    return t.error, statement_seconds(observer, pid)


def test_etcd_behind_the_proxy_down_then_back(db, etcd_fresh, kp):
    """With etcd killed behind a running proxy, the proxy still accepts
    connections but cannot answer: a statement fails once request_timeout
    is used up (08006, naming the proxy's endpoint), never hangs; once etcd
    is back the same session reads again."""
    proxy = GrpcProxy(etcd_fresh).start()
    try:
        etcd_fresh.put(kp + "k", "v")
        _proxied_server(db, proxy, request_timeout="2", connect_timeout="1")
        db.create_table("t", "s", prefix=kp)
        assert _rows(db, "SELECT key, value FROM t") == [(kp + "k", "v")]
        etcd_fresh.kill()
        e, took = _timed_failure(db, db.conn, "SELECT key, value FROM t", 2 + LOAD_SLACK * 3)
        assert e.sqlstate == "08006", err_text(e)
        assert proxy.endpoint in err_text(e)
        assert took < 2.0 + LOAD_SLACK
        etcd_fresh.restart()

        def reads():
            try:
                return _rows(db, "SELECT key, value FROM t") == [(kp + "k", "v")]
            except psycopg.Error:  # the proxy may still be reconnecting to etcd
                return False

        wait_until(reads, "the session to read through the proxy after etcd restarted", timeout=120)
    finally:
        proxy.destroy()


def test_proxy_gone_is_hv00n_naming_it(db, etcd_fresh, kp):
    """The proxy itself killed: nothing listens on the connstr's endpoint,
    so an open session fails within connect_timeout and a new one at once
    (HV00N naming the endpoint), as with etcd itself down."""
    proxy = GrpcProxy(etcd_fresh).start()
    try:
        _proxied_server(db, proxy, connect_timeout="2")
        db.create_table("t", "s", prefix=kp)
        assert _rows(db, "SELECT count(*) FROM t") == [(0,)]
        proxy.kill()
        for conn in (db.conn, db.connect()):
            e, took = _timed_failure(db, conn, "SELECT * FROM t", 2 + LOAD_SLACK * 3)
            assert e.sqlstate == "HV00N", err_text(e)
            assert proxy.endpoint in err_text(e)
            assert took < 2.0 + LOAD_SLACK
    finally:
        proxy.destroy()


def test_etcd_restart_under_64_idle_backends(db, etcd_fresh, kp):
    """64 sessions each holding an idle connection to etcd; etcd is killed
    and restarted; each session's next statement succeeds (it reconnects),
    none is left stuck on the connection that died."""
    etcd_fresh.put(kp + "k", "v")
    db.create_server("s", etcd_fresh.endpoint, request_timeout="30", connect_timeout="5")
    db.create_table("t", "s", prefix=kp)
    conns = [db.connect() for _ in range(64)]
    try:
        for c in conns:
            assert _rows(db, "SELECT value FROM t", conn=c) == [("v",)]
        pids = {db.backend_pid(conn=c) for c in conns}
        assert pids <= pids_connected_to(etcd_fresh.port)
        etcd_fresh.kill()
        etcd_fresh.restart()
        etcd_fresh.put(kp + "k", "after")
        results = [None] * len(conns)

        def run(i):
            try:
                results[i] = _rows(db, "SELECT value FROM t", conn=conns[i])
            except Exception as e:  # noqa: BLE001 - reported below
                results[i] = e

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(conns))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30 + 5 + LOAD_SLACK * 4)
        stuck = [i for i, t in enumerate(threads) if t.is_alive()]
        assert not stuck, f"{len(stuck)} session(s) still waiting after etcd restarted"
        assert all(r == [("after",)] for r in results), [r for r in results if r != [("after",)]]
    finally:
        for c in conns:
            c.close()
