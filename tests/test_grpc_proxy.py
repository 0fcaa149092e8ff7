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
from conftest import AUTH_PREFIX
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


def _sqlstate(db, sql):
    """The SQLSTATE `sql` fails with (the session stays usable)."""
    try:
        db.rows(sql)
    except psycopg.Error as e:
        return e.sqlstate
    raise AssertionError(f"{sql} unexpectedly succeeded")


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


# --------------------------------------------------------------------------
# etcd's authentication and TLS through the proxy; the cluster functions
# --------------------------------------------------------------------------


def test_auth_through_the_proxy_is_28000_naming_the_proxy(db, etcd_auth):
    """etcd's gRPC proxy (3.4.23, 3.5.16) forwards the login (Authenticate
    succeeds through it) but not the token of key-value requests, which
    reach etcd without a user: etcd answers "user name is empty".  Through
    the proxy that is 28000 naming the user and a HINT saying a proxy drops
    the login (not HV000, and not the "no user mapping" hint, since there
    is one); the same server options straight to etcd read the rows."""
    proxy = GrpcProxy(etcd_auth).start()
    try:
        creds = {"username": "alice", "password": "alicepw", "connect_timeout": "3", "request_timeout": "5"}
        db.create_server("direct", etcd_auth.endpoint, **creds)
        db.create_table("d", "direct", prefix=AUTH_PREFIX)
        assert _rows(db, "SELECT key, value FROM d WHERE key IN ('auth/a', 'auth/b')") == [
            ("auth/a", "1"), ("auth/b", "2")]
        db.create_server("proxied", proxy.endpoint, **creds)
        db.create_table("p", "proxied", prefix=AUTH_PREFIX)
        e = expect_error(db.conn, "SELECT key, value FROM p", sqlstate="28000",
                         contains=['"proxied"', 'etcd user "alice"', "user name is empty"])
        assert "gRPC proxy" in (e.diag.message_hint or ""), e.diag.message_hint
        assert "alicepw" not in err_text(e)
    finally:
        proxy.destroy()


def test_tls_through_the_proxy(db, etcd_tls, certs, kp):
    """The proxy talks TLS to etcd with its own client certificate (one
    without a common name: the proxy refuses others, etcd would take the
    name for a user) and serves TLS to the backends: the server options
    are those of a TLS etcd, and a client certificate of another CA is
    refused through the proxy as straight to etcd."""
    proxy = GrpcProxy(etcd_tls, serve_tls=True).start()
    try:
        etcd_tls.put(kp + "a", "1")
        tls = {"ssl_ca": certs.ca, "ssl_cert": certs.client_cert, "ssl_key": certs.client_key,
               "connect_timeout": "3", "request_timeout": "5"}
        db.create_server("s", proxy.endpoint, **tls)
        db.create_table("t", "s", prefix=kp)
        assert _rows(db, "SELECT key, value FROM t") == [(kp + "a", "1")]
        db.execute(f"INSERT INTO t VALUES ('{kp}b', '2')")
        assert etcd_tls.get(kp + "b") == b"2"
        # the https:// form of the proxy's address works the same
        db.create_server("u", proxy.url, **tls)
        db.create_table("tu", "u", prefix=kp)
        assert _rows(db, "SELECT count(*) FROM tu") == [(2,)]
        other = {**tls, "ssl_cert": certs.other_client_cert, "ssl_key": certs.other_client_key}
        for name, endpoint in (("direct", etcd_tls.endpoint), ("proxied", proxy.endpoint)):
            db.create_server(f"{name}_other", endpoint, **other)
            db.create_table(f"{name}_o", f"{name}_other", prefix=kp)
        assert _sqlstate(db, "SELECT * FROM proxied_o") == _sqlstate(db, "SELECT * FROM direct_o")
    finally:
        proxy.destroy()


def test_cluster_functions_through_the_proxy(db, etcd, proxy, kp):
    """etcd_revision, etcd_status and etcd_alarms through the proxy answer
    for the etcd behind it; etcd_members lists the proxy itself (etcd's
    proxy answers MemberList with its own --advertise-client-url, so that
    clients keep using it)."""
    _proxied_server(db, proxy)
    etcd.put(kp + "r", "1")
    rev = etcd.revision()
    assert db.scalar("SELECT etcd_revision('s')") == rev
    st = db.rows("SELECT endpoint, reachable, version FROM etcd_status('s')")
    assert [(r[0], r[1]) for r in st] == [(proxy.endpoint, True)], st
    assert st[0][2] == etcd.version, st
    members = db.rows("SELECT client_urls FROM etcd_members('s')")
    assert members == [([proxy.url],)], members
    assert db.rows("SELECT * FROM etcd_alarms('s')") == []
