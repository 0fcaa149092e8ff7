"""What a new user meets on the first day: etcd's authentication switched
on and off under running sessions, a server with authentication and no
user mapping, and etcd going down (issue 27).

* Credentials while etcd's authentication is off (never enabled, or
  disabled under open sessions): the user mapping's username/password are
  not needed and queries work, as with etcd's own client.
* Authentication enabled under open sessions that connected while it was
  off (no token): their next request, read or write, re-authenticates on a
  new connection and is sent once more.
* No user mapping on a server with authentication: 28000 with a HINT
  naming the server, for reads, writes and the SQL functions.
* etcd down: when every endpoint refuses connections, an open session
  gives up within connect_timeout (a new one at once), with a short DETAIL
  naming each endpoint once; one member of three down costs nothing; a
  member restarting within connect_timeout is waited for.

Every bound on time is the configured connect_timeout plus LOAD_SLACK,
measured by the backend's clock (statement_seconds), with request_timeout
set far above it so that waiting for request_timeout fails the test.
"""

from __future__ import annotations

import re

import psycopg
import pytest

from etcdcluster import EtcdCluster
from harness import (
    AUTH_PREFIX,
    ETCD_VERSION_IDS,
    QueryThread,
    assert_session_usable,
    err_text,
    expect_error,
    finish_or_rescue,
    selected_etcd_versions,
    wait_backend_active,
)
from test_options import LOAD_SLACK, statement_seconds

ROOT_PW = "rootpw"
ALICE = {"username": "alice", "password": "alicepw"}
P = "k/"  # alice's prefix
CONNECT_TIMEOUT = 2
LONG_TIMEOUT = 60  # request_timeout where waiting for it must fail the test
# The longest wait between two attempts (core/src/client.rs Backoff::MAX).
BACKOFF_MAX = 1.0
DETAIL_MAX = 1000


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def add_users(etcd):
    """root and alice (readwrite on P), while authentication is off."""
    etcd.ctl("user", "add", f"root:{ROOT_PW}")
    etcd.ctl("user", "add", f"alice:{ALICE['password']}")
    etcd.ctl("role", "add", "alice_role")
    etcd.ctl("role", "grant-permission", "--prefix=true", "alice_role", "readwrite", P)
    etcd.ctl("user", "grant-role", "alice", "alice_role")


def auth_enable(etcd):
    etcd.ctl("auth", "enable")
    etcd.ctl_user, etcd.ctl_password = "root", ROOT_PW


def auth_disable(etcd):
    etcd.ctl("auth", "disable")
    etcd.ctl_user = etcd.ctl_password = None


def connects(db, conn, server="s"):
    rows = db.rows(
        "SELECT connects FROM etcd_fdw_get_connections() WHERE server_name = %s",
        (server,),
        conn=conn,
    )
    return rows[0][0] if rows else 0


def statement_mode(db, conn):
    db.execute("SET etcd_fdw.commit_mode = 'statement'", conn=conn)
    return conn


def auth_setup(db, etcd):
    """Server s (mapping alice) with table t on P; server n (no mapping)
    with table tn on P."""
    db.create_server("s", etcd.endpoint, connect_timeout="5", request_timeout="20")
    db.create_user_mapping("s", **ALICE)
    db.create_table("t", "s", prefix=P)
    db.create_server("n", etcd.endpoint, connect_timeout="5", request_timeout="20")
    db.create_table("tn", "n", prefix=P)


def check_works(db, etcd, conn, tag):
    """Read, write (commit and statement mode) and the SQL functions on
    server s through conn; the writes are in etcd afterwards."""
    assert (P + "a", "1") in db.rows("SELECT key, value FROM t", conn=conn)
    with conn.transaction():
        db.execute("INSERT INTO t VALUES (%s, 'commit')", (f"{P}{tag}-c",), conn=conn)
    # etcd_put is deferred to the commit in 'transaction' mode (NULL),
    # sent at once in 'statement' mode (the revision)
    db.execute("SELECT etcd_put('s', %s, 'fn')", (f"{P}{tag}-f",), conn=conn)
    statement_mode(db, conn)
    assert db.scalar("SELECT etcd_put('s', %s, 'fn')", (f"{P}{tag}-sf",), conn=conn) > 0
    db.execute("INSERT INTO t VALUES (%s, 'stmt')", (f"{P}{tag}-s",), conn=conn)
    db.execute("RESET etcd_fdw.commit_mode", conn=conn)
    assert db.scalar("SELECT etcd_get('s', %s)", (P + "a",), conn=conn) == "1"
    for k, v in (("c", b"commit"), ("f", b"fn"), ("sf", b"fn"), ("s", b"stmt")):
        assert etcd.get(f"{P}{tag}-{k}") == v, k


def no_user_error(e, server):
    text = err_text(e)
    assert e.sqlstate == "28000", text
    assert "user name is empty" in text, text
    hint = e.diag.message_hint or ""
    assert hint == (
        f'Create a user mapping: CREATE USER MAPPING FOR CURRENT_USER SERVER "{server}" '
        "OPTIONS (username '...', password '...')."
    ), hint


def timed(db, conn, sql, params=None, limit=3 * LONG_TIMEOUT):
    """Run sql on conn in a thread (never hangs the test); returns
    (QueryThread, seconds by the backend's clock)."""
    observer = db.second_connection()
    pid = db.backend_pid(conn)
    t = QueryThread(conn, sql, params)
    t.start()
    finish_or_rescue(t, None, limit)
    return t, statement_seconds(observer, pid)


def endpoint_count(text, endpoint):
    return len(re.findall(re.escape(endpoint) + r"(?!\d)", text))


# --------------------------------------------------------------------------
# 1. credentials while etcd's authentication is off
# --------------------------------------------------------------------------


def test_credentials_while_auth_was_never_enabled(db, etcd_fresh):
    """A user mapping with credentials on an etcd whose authentication was
    never enabled (no users at all): etcd answers Authenticate with
    "authentication is not enabled"; the connection goes on without a
    token, for reads, writes and the functions."""
    etcd_fresh.put(P + "a", "1")
    auth_setup(db, etcd_fresh)
    check_works(db, etcd_fresh, db.conn, "never")
    assert connects(db, db.conn) == 1


def test_auth_disabled_under_open_and_new_sessions(db, etcd_fresh):
    """Sessions authenticated as alice; `auth disable`: their next reads
    and writes work, and so do new sessions' (with or without mapping)."""
    etcd_fresh.put(P + "a", "1")
    add_users(etcd_fresh)
    auth_enable(etcd_fresh)
    auth_setup(db, etcd_fresh)
    reader, writer, stmt_writer, fn = (db.connect() for _ in range(4))
    statement_mode(db, stmt_writer)
    statement_mode(db, fn)
    for c in (reader, writer, stmt_writer, fn):
        assert db.rows("SELECT key FROM t", conn=c) == [(P + "a",)]

    auth_disable(etcd_fresh)

    # each session's first request after the change is of another kind
    assert db.rows("SELECT key, value FROM t", conn=reader) == [(P + "a", "1")]
    with writer.transaction():
        db.execute("INSERT INTO t VALUES (%s, 'c')", (P + "open-c",), conn=writer)
    db.execute("INSERT INTO t VALUES (%s, 's')", (P + "open-s",), conn=stmt_writer)
    assert db.scalar("SELECT etcd_put('s', %s, 'f')", (P + "open-f",), conn=fn) > 0
    assert [etcd_fresh.get(P + k) for k in ("open-c", "open-s", "open-f")] == [b"c", b"s", b"f"]
    # etcd 3.5 still accepts the old token; 3.4 answers "invalid auth
    # token", and the session authenticates again once (finding auth off)
    for c in (reader, writer, stmt_writer, fn):
        assert connects(db, c) in (1, 2)

    fresh = db.connect()
    check_works(db, etcd_fresh, fresh, "new")
    # without a mapping too, now that etcd wants none
    assert (P + "a", "1") in db.rows("SELECT key, value FROM tn", conn=fresh)


def test_auth_enabled_under_open_and_new_sessions(db, etcd_fresh):
    """Sessions that connected while authentication was off (no token);
    `auth enable`: etcd answers their next request "user name is empty".
    With credentials, the request is sent once more on a new connection,
    which authenticates - reads and writes (a refused write was not
    applied); without a mapping, 28000 and the hint."""
    etcd_fresh.put(P + "a", "1")
    add_users(etcd_fresh)
    auth_setup(db, etcd_fresh)
    reader, writer, stmt_writer, fn, nomap = (db.connect() for _ in range(5))
    statement_mode(db, stmt_writer)
    statement_mode(db, fn)
    for c in (reader, writer, stmt_writer, fn):
        assert db.rows("SELECT key FROM t", conn=c) == [(P + "a",)]
        assert connects(db, c) == 1
    assert db.rows("SELECT key FROM tn", conn=nomap) == [(P + "a",)]

    auth_enable(etcd_fresh)

    assert db.rows("SELECT key, value FROM t", conn=reader) == [(P + "a", "1")]
    with writer.transaction():
        db.execute("INSERT INTO t VALUES (%s, 'c')", (P + "open-c",), conn=writer)
    db.execute("INSERT INTO t VALUES (%s, 's')", (P + "open-s",), conn=stmt_writer)
    assert db.scalar("SELECT etcd_put('s', %s, 'f')", (P + "open-f",), conn=fn) > 0
    # each written once (etcd's version 1: created, not sent twice)
    for k, v in (("open-c", b"c"), ("open-s", b"s"), ("open-f", b"f")):
        kv = etcd_fresh.get_kv(P + k)
        assert kv is not None and kv["value"] == v and kv["version"] == 1, (k, kv)
    # one reconnect each, which authenticated
    for c in (reader, writer, stmt_writer, fn):
        assert connects(db, c) == 2

    e = expect_error(nomap, "SELECT key FROM tn")
    no_user_error(e, "n")
    assert_session_usable(nomap)

    check_works(db, etcd_fresh, db.connect(), "new")


# --------------------------------------------------------------------------
# 2. no user mapping on a server with authentication enabled
# --------------------------------------------------------------------------


def test_no_user_mapping_with_auth_enabled(db, etcd_auth):
    """etcd_auth has authentication enabled; server s has no user mapping:
    reads, writes (statement and commit) and the functions fail with 28000
    and a HINT naming the server; nothing is written."""
    db.create_server("s", etcd_auth.endpoint, connect_timeout="5", request_timeout="20")
    db.create_table("t", "s", prefix=AUTH_PREFIX)
    key = AUTH_PREFIX + "nomap"
    c = db.conn
    no_user_error(expect_error(c, "SELECT key, value FROM t"), "s")
    no_user_error(expect_error(c, "SELECT etcd_get('s', %s)", (AUTH_PREFIX + "a",)), "s")
    c.execute("SET etcd_fdw.commit_mode = 'statement'")
    no_user_error(expect_error(c, "SELECT etcd_put('s', %s, 'x')", (key,)), "s")
    no_user_error(expect_error(c, "INSERT INTO t VALUES (%s, 'x')", (key,)), "s")
    c.execute("SET etcd_fdw.commit_mode = 'transaction'")
    c.execute("BEGIN")
    c.execute("INSERT INTO t VALUES (%s, 'x')", (key,))
    e = expect_error(c, "COMMIT")
    no_user_error(e, "s")
    assert "not applied" in err_text(e), err_text(e)
    assert_session_usable(c)
    assert etcd_auth.get(key) is None
    # a mapping with a wrong password is still 28P01; the right one works
    db.create_user_mapping("s", username="alice", password="wrong")
    expect_error(c, "SELECT key FROM t", sqlstate="28P01")
    c.execute("ALTER USER MAPPING FOR CURRENT_USER SERVER s OPTIONS (SET password 'alicepw')")
    assert (AUTH_PREFIX + "a", "1") in db.rows("SELECT key, value FROM t")


# --------------------------------------------------------------------------
# 3. etcd down
# --------------------------------------------------------------------------


def assert_outage_error(e, label, endpoints, retried):
    """HV00N/08006 naming the endpoints; a DETAIL that stays short and,
    when retried, summarises the attempts naming each endpoint once."""
    assert isinstance(e, psycopg.Error) and e.sqlstate is not None, f"{label}: {e!r}"
    text = err_text(e)
    assert e.sqlstate in ("HV00N", "08006"), f"{label}: {e.sqlstate}: {text}"
    for ep in endpoints:
        assert ep in text, f"{label}: {ep} not named: {text}"
    detail = e.diag.message_detail or ""
    assert len(detail.encode()) < DETAIL_MAX, f"{label}: DETAIL of {len(detail)} bytes: {detail}"
    if retried:
        m = re.search(r"\d+ attempts over \d+\.\d s: (.*)", detail)
        assert m, f"{label}: {detail}"
        for ep in endpoints:
            assert endpoint_count(m.group(1), ep) == 1, f"{label}: {ep} not named once: {detail}"
    else:
        assert "attempts" not in detail, f"{label}: {detail}"


def test_killed_etcd_fails_open_and_new_sessions_fast(db, etcd_fresh):
    """The only etcd killed (its port refuses): an open session's read
    and commit give up within connect_timeout, a new session's at once -
    not after request_timeout (60 s)."""
    etcd_fresh.put(P + "a", "1")
    db.create_server("s", etcd_fresh.endpoint, connect_timeout=str(CONNECT_TIMEOUT),
                     request_timeout=str(LONG_TIMEOUT))
    db.create_table("t", "s", prefix=P)
    reader, committer, stmt_writer = db.connect(), db.connect(), db.connect()
    statement_mode(db, stmt_writer)
    for c in (reader, committer, stmt_writer):
        assert db.rows("SELECT key FROM t", conn=c) == [(P + "a",)]

    etcd_fresh.kill()

    t, secs = timed(db, reader, "SELECT key, value FROM t")
    assert t.error is not None, t.rows
    assert_outage_error(t.error, "open session", [etcd_fresh.endpoint], retried=True)
    # waited for a restart for connect_timeout (the last wait ends before
    # it), no longer
    assert CONNECT_TIMEOUT - BACKOFF_MAX <= secs < CONNECT_TIMEOUT + LOAD_SLACK, secs

    # a commit sent on the connection etcd's death broke: it may have
    # reached etcd (08007), read back in vain; or refused before it was
    # sent (08006, not applied); either way as fast
    db.execute("BEGIN", conn=committer)
    db.execute("INSERT INTO t VALUES (%s, 'x')", (P + "x",), conn=committer)
    t, secs = timed(db, committer, "COMMIT")
    assert t.error is not None and t.error.sqlstate in ("08006", "08007"), err_text(t.error)
    assert secs < CONNECT_TIMEOUT + LOAD_SLACK, secs
    # the next commit finds no connection: refused, not applied
    db.execute("BEGIN", conn=committer)
    db.execute("INSERT INTO t VALUES (%s, 'x')", (P + "x",), conn=committer)
    t, secs = timed(db, committer, "COMMIT")
    assert t.error is not None and t.error.sqlstate == "08006", err_text(t.error)
    assert "not applied" in err_text(t.error)
    assert CONNECT_TIMEOUT - BACKOFF_MAX <= secs < CONNECT_TIMEOUT + LOAD_SLACK, secs

    # a write of statement mode is sent once: on the broken connection
    # 08007 (not read back), refused before it was sent HV00N; then with
    # no connection, HV00N at once (a write is never retried)
    t, secs = timed(db, stmt_writer, "INSERT INTO t VALUES (%s, 'x')", (P + "y",))
    assert t.error is not None and t.error.sqlstate in ("HV00N", "08006", "08007"), err_text(t.error)
    assert secs < CONNECT_TIMEOUT + LOAD_SLACK, secs
    t, secs = timed(db, stmt_writer, "INSERT INTO t VALUES (%s, 'x')", (P + "y",))
    assert t.error is not None and t.error.sqlstate == "HV00N", err_text(t.error)
    assert secs < CONNECT_TIMEOUT + LOAD_SLACK, secs

    fresh = db.connect()
    t, secs = timed(db, fresh, "SELECT key, value FROM t")
    assert t.error is not None, t.rows
    assert_outage_error(t.error, "new session", [etcd_fresh.endpoint], retried=False)
    assert secs < CONNECT_TIMEOUT + LOAD_SLACK, secs
    for c in (reader, committer, stmt_writer, fresh):
        assert_session_usable(c)

    etcd_fresh.restart()
    assert db.rows("SELECT key FROM t", conn=reader) == [(P + "a",)]


def test_restart_within_connect_timeout_is_waited_for(db, etcd_fresh):
    """A read of an open session while the only etcd is down and being
    restarted: refused connections are retried for connect_timeout (20 s
    here), so a restart within it is waited for and the read succeeds."""
    etcd_fresh.put(P + "a", "1")
    grace = 20
    db.create_server("s", etcd_fresh.endpoint, connect_timeout=str(grace),
                     request_timeout=str(LONG_TIMEOUT))
    db.create_table("t", "s", prefix=P)
    c = db.connect()
    assert db.rows("SELECT key FROM t", conn=c) == [(P + "a",)]
    observer = db.second_connection()
    pid = db.backend_pid(c)

    etcd_fresh.kill()
    t = QueryThread(c, "SELECT key, value FROM t")
    t.start()
    # the read is retrying (not failed at once)
    assert wait_backend_active(observer, pid, timeout=grace, alive=t.is_alive), (
        f"the read did not wait: {t.error!r}"
    )
    etcd_fresh.restart()
    finish_or_rescue(t, None, 3 * LONG_TIMEOUT)
    assert t.error is None, err_text(t.error)
    assert t.rows == [(P + "a", "1")]
    assert statement_seconds(observer, pid) < grace + LOAD_SLACK


@pytest.fixture(
    scope="module",
    params=[pytest.param(v, id=ETCD_VERSION_IDS[v]) for v in selected_etcd_versions()],
)
def cluster(request):
    c = EtcdCluster(version=request.param)
    try:
        c.start()
        yield c
    finally:
        c.destroy()


@pytest.fixture
def healthy(cluster):
    cluster.ensure_all_running()
    return cluster


def test_one_of_three_members_killed(db, healthy, kp):
    """The member a session is connected to is killed (not the leader):
    open and new sessions read and write through the others, quickly."""
    cluster = healthy
    m1, m2, m3 = cluster.members
    cluster.move_leader("m3")  # keep elections out of it
    cluster.put(m3, kp + "a", "1")
    db.create_server("s", cluster.connstr, connect_timeout=str(CONNECT_TIMEOUT),
                     request_timeout=str(LONG_TIMEOUT))
    db.create_table("t", "s", prefix=kp)
    c = db.connect()
    assert db.rows("SELECT key FROM t", conn=c) == [(kp + "a",)]

    m1.kill()
    for label, conn in (("open session", c), ("new session", db.connect())):
        t, secs = timed(db, conn, "SELECT key, value FROM t")
        assert t.error is None, f"{label}: {err_text(t.error)}"
        assert (kp + "a", "1") in t.rows
        assert secs < CONNECT_TIMEOUT + LOAD_SLACK, f"{label}: {secs}"
        t, secs = timed(db, conn, "SELECT etcd_put('s', %s, 'w')", (f"{kp}{label[0]}",))
        assert t.error is None, f"{label}: {err_text(t.error)}"
        assert secs < CONNECT_TIMEOUT + LOAD_SLACK, f"{label}: {secs}"


def test_all_three_members_killed(db, healthy, kp):
    """Every member killed: open and new sessions fail within
    connect_timeout, naming each endpoint once in a short DETAIL."""
    cluster = healthy
    cluster.put(cluster.members[1], kp + "a", "1")
    db.create_server("s", cluster.connstr, connect_timeout=str(CONNECT_TIMEOUT),
                     request_timeout=str(LONG_TIMEOUT))
    db.create_table("t", "s", prefix=kp)
    c = db.connect()
    assert db.rows("SELECT key FROM t", conn=c) == [(kp + "a",)]
    endpoints = [m.endpoint for m in cluster.members]

    for m in cluster.members:
        m.kill()
    for label, conn, retried in (("open session", c, True), ("new session", db.connect(), False)):
        t, secs = timed(db, conn, "SELECT key, value FROM t")
        assert t.error is not None, f"{label}: {t.rows!r}"
        assert_outage_error(t.error, label, endpoints, retried)
        assert secs < CONNECT_TIMEOUT + LOAD_SLACK, f"{label}: {secs}"
        assert_session_usable(conn)
    # the next statement of the open session: the same, as fast
    t, secs = timed(db, c, "SELECT count(*) FROM t")
    assert t.error is not None, t.rows
    assert_outage_error(t.error, "open session again", endpoints, retried=True)
    assert secs < CONNECT_TIMEOUT + LOAD_SLACK, secs
