"""Basic read path of etcd_fdw: the spec example, error handling, cancellation."""

import os

import psycopg
import pytest

from harness import (
    PgCluster,
    QueryThread,
    assert_session_usable,
    err_text,
    expect_error,
    finish_or_rescue,
    run_spec_setup,
    wait_until,
)

# A statement that must end by a timeout or a cancel may take this much
# longer than the configured time on a loaded machine (CI runs two suites
# side by side on 2 cores); the etcd timeouts that would otherwise end it
# are set well above it, so "ended by the cancel" and "ended by etcd's
# timeout" cannot be confused.
LOAD_SLACK = 10.0
ETCD_TIMEOUT = 60  # connect_timeout and request_timeout where they must not fire


def statement_seconds(observer, pid):
    """How long backend `pid`'s last statement ran, by the backend's own
    clock (the one statement_timeout uses): from its start (query_start)
    to its going idle (state_change).  The backend reports idle before it
    sends ReadyForQuery, so this is exact once the client has the result."""
    state, secs = observer.execute(
        "SELECT state, extract(epoch FROM state_change - query_start)::float8 "
        "FROM pg_stat_activity WHERE pid = %s",
        (pid,),
    ).fetchone()
    assert state != "active", f"backend {pid} is still running its statement"
    return secs


def _socket_inodes(pid):
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:["):-1])
    return inodes


def unread_by_etcd(pid, etcd_port):
    """Bytes backend `pid` sent to etcd's client port that etcd has not read
    (the receive queues of etcd's ends of the backend's connections, from
    /proc/net/tcp).  With etcd SIGSTOPped nothing is read, so a rise means
    the backend sent a request (or a connection preface) and now waits on
    etcd for the answer."""
    inodes = _socket_inodes(pid)
    table = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            lport = int(fields[1].rsplit(":", 1)[1], 16)
            rport = int(fields[2].rsplit(":", 1)[1], 16)
            rx = int(fields[4].split(":")[1], 16)
            table.append((lport, rport, rx, fields[9]))
    mine = {lport for lport, rport, _, inode in table if inode in inodes and rport == etcd_port}
    return sum(rx for lport, rport, rx, _ in table if lport == etcd_port and rport in mine)


def wait_blocked_on_etcd(observer, pid, etcd, sql, before, t):
    """Wait until backend `pid` runs `sql` and has sent etcd (stopped) more
    than `before` unread bytes: it is blocked waiting on etcd's answer.
    Returns early (False) if the query thread `t` ended."""
    def blocked():
        if not t.is_alive():
            return "ended"
        row = observer.execute(
            "SELECT state, query FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        return row == ("active", sql) and unread_by_etcd(pid, etcd.port) > before
    return wait_until(blocked, f"backend {pid} blocked on the stopped etcd") is True


# --------------------------------------------------------------------------
# the spec example, verbatim
# --------------------------------------------------------------------------


def test_spec_example(bare_db, etcd_fresh):
    etcd_fresh.ctl("put", "bar", "baz")
    etcd_fresh.ctl("put", "foo", "bar")
    c = bare_db.conn
    run_spec_setup(c, etcd_fresh.endpoint)
    rows = c.execute("SELECT * FROM test;").fetchall()
    assert sorted(rows) == [("bar", "baz"), ("foo", "bar")]
    # etcd returns keys in byte order, so plain SELECT * is already ordered
    assert rows == [("bar", "baz"), ("foo", "bar")]
    assert c.execute("SELECT * FROM test ORDER BY key").fetchall() == [
        ("bar", "baz"),
        ("foo", "bar"),
    ]


def test_empty_etcd_returns_no_rows(db, etcd_fresh):
    db.create_server("s", etcd_fresh.endpoint)
    db.create_table("t", "s")
    assert db.rows("SELECT * FROM t") == []
    assert db.scalar("SELECT count(*) FROM t") == 0


# --------------------------------------------------------------------------
# general query shapes (projection, filters, limits, rescans, cursors)
# --------------------------------------------------------------------------


def test_query_shapes(db, etcd_fresh):
    data = {k: f"v{k}" for k in "abcde"}
    for k, v in data.items():
        etcd_fresh.put(k, v)
    db.create_server("s", etcd_fresh.endpoint)
    db.create_table("t", "s")

    assert db.scalar("SELECT count(*) FROM t") == 5
    assert db.rows("SELECT key FROM t") == [(k,) for k in "abcde"]
    assert db.rows("SELECT value FROM t") == [(f"v{k}",) for k in "abcde"]
    assert db.rows("SELECT value, key FROM t WHERE key = 'c'") == [("vc", "c")]
    assert db.rows("SELECT key FROM t WHERE key > 'b' AND key <= 'd'") == [("c",), ("d",)]
    assert db.rows("SELECT key FROM t WHERE value LIKE 'v%' ORDER BY key DESC LIMIT 2") == [
        ("e",),
        ("d",),
    ]
    assert db.rows("SELECT key FROM t WHERE key = 'zzz'") == []
    # LIMIT stops the scan early; the next scan must still be complete
    assert len(db.rows("SELECT * FROM t LIMIT 1")) == 1
    assert db.scalar("SELECT count(*) FROM t") == 5
    # parameters / prepared statements
    assert db.rows("SELECT value FROM t WHERE key = %s", ("b",)) == [("vb",)]
    db.execute("PREPARE p(text) AS SELECT value FROM t WHERE key = $1")
    for k in "abcde" * 2:  # > 5 executions: generic plan too
        assert db.rows(f"EXECUTE p('{k}')") == [(f"v{k}",)]
    # self join
    assert db.rows(
        "SELECT a.key, b.value FROM t a JOIN t b ON a.key = b.key ORDER BY 1"
    ) == sorted(data.items())
    # correlated subquery: the foreign scan is rescanned for every outer row
    assert db.rows(
        "SELECT g, (SELECT count(*) FROM t WHERE t.value <> g::text) "
        "FROM generate_series(1, 3) g ORDER BY g"
    ) == [(1, 5), (2, 5), (3, 5)]
    db.execute("SET enable_hashjoin = off")
    db.execute("SET enable_mergejoin = off")
    db.execute("SET enable_material = off")
    assert db.rows(
        "SELECT g.x, t.value FROM (VALUES ('a'), ('c'), ('e')) g(x) "
        "JOIN t ON t.key = g.x ORDER BY 1"
    ) == [("a", "va"), ("c", "vc"), ("e", "ve")]
    db.execute("RESET ALL")
    # EXPLAIN works without touching the data
    plan = "\n".join(r[0] for r in db.rows("EXPLAIN SELECT * FROM t"))
    assert "Foreign Scan" in plan
    plan = "\n".join(r[0] for r in db.rows("EXPLAIN (ANALYZE, VERBOSE) SELECT * FROM t"))
    assert "Foreign Scan" in plan
    # cursors with partial fetches inside a transaction
    with db.conn.transaction():
        db.execute("DECLARE cur CURSOR FOR SELECT key, value FROM t")
        assert db.rows("FETCH 2 FROM cur") == [("a", "va"), ("b", "vb")]
        assert db.rows("FETCH ALL FROM cur") == [("c", "vc"), ("d", "vd"), ("e", "ve")]
        db.execute("CLOSE cur")
    # a transaction that is rolled back after a foreign scan
    try:
        with db.conn.transaction():
            assert db.scalar("SELECT count(*) FROM t") == 5
            raise RuntimeError("rollback")
    except RuntimeError:
        pass
    # abandoned cursor (transaction ends with the scan half done)
    with db.conn.transaction():
        db.execute("DECLARE cur2 CURSOR FOR SELECT key FROM t")
        assert db.rows("FETCH 1 FROM cur2") == [("a",)]
    assert db.scalar("SELECT count(*) FROM t") == 5


def test_1000_utf8_keys_roundtrip(db, etcd_fresh):
    expected = {
        f"utf8/ключ-{i:04d}-ü": f"värde {i} — 日本語テキスト 🚀 {'é' * (i % 7)}"
        for i in range(1000)
    }
    expected.update(
        {
            "special/empty": "",
            "special/newline": "a\nb\n",
            "special/quotes": "it's \"quoted\" \\ back\ttab",
            "special/long": "ß" * 100_000,
        }
    )
    etcd_fresh.put_many(expected)
    db.create_server("s", etcd_fresh.endpoint)
    db.create_table("t", "s")
    rows = db.rows("SELECT key, value FROM t")
    assert len(rows) == len(expected)
    assert dict(rows) == expected
    # etcd order is byte order of the keys
    assert [r[0] for r in rows] == sorted(expected, key=lambda k: k.encode())
    assert db.scalar("SELECT count(*) FROM t") == len(expected)
    assert db.scalar("SELECT value FROM t WHERE key = 'special/empty'") == ""
    assert db.scalar("SELECT value IS NULL FROM t WHERE key = 'special/empty'") is False
    assert db.scalar("SELECT sum(octet_length(value)) FROM t") == sum(
        len(v.encode()) for v in expected.values()
    )


# --------------------------------------------------------------------------
# connection errors and required options
# --------------------------------------------------------------------------


def test_unreachable_endpoint(db, dead_endpoint, etcd):
    # a refused connection fails at once: it waits for neither connect_timeout
    # nor retries until request_timeout (both set far above the bound)
    db.create_server("dead", dead_endpoint, connect_timeout=str(ETCD_TIMEOUT),
                     request_timeout=str(ETCD_TIMEOUT))
    db.create_table("t", "dead")
    other = db.second_connection()
    pid = db.backend_pid()
    for _ in range(2):  # a failed connection must not poison later attempts
        e = expect_error(db.conn, "SELECT * FROM t", sqlstate="HV00N")
        elapsed = statement_seconds(other, pid)
        assert elapsed < ETCD_TIMEOUT / 2, f"a refused connection took {elapsed:.1f}s"
        assert dead_endpoint in err_text(e)
        assert "timed out" not in err_text(e), err_text(e)
        assert_session_usable(db.conn)
    # and other foreign servers keep working in the same session
    etcd.put("unreach/k", "v")
    db.create_server("alive", etcd.endpoint)
    db.create_table("t2", "alive", prefix="unreach/")
    assert db.rows("SELECT key, value FROM t2") == [("unreach/k", "v")]


def test_missing_connstr_refused(db):
    e = expect_error(
        db.conn, "CREATE SERVER s FOREIGN DATA WRAPPER etcd_fdw", sqlstate_class="HV"
    )
    assert "connstr" in err_text(e)
    e = expect_error(
        db.conn,
        "CREATE SERVER s FOREIGN DATA WRAPPER etcd_fdw OPTIONS (connect_timeout '5')",
        sqlstate_class="HV",
    )
    assert "connstr" in err_text(e)
    assert db.scalar("SELECT count(*) FROM pg_foreign_server WHERE srvname = 's'") == 0


def test_missing_rowid_column_refused(db, dead_endpoint):
    db.create_server("s", dead_endpoint)
    e = expect_error(
        db.conn,
        "CREATE FOREIGN TABLE t (key text, value text) SERVER s",
        sqlstate_class="HV",
    )
    assert "rowid_column" in err_text(e)
    e = expect_error(
        db.conn,
        "CREATE FOREIGN TABLE t (key text, value text) SERVER s OPTIONS (prefix 'x/')",
        sqlstate_class="HV",
    )
    assert "rowid_column" in err_text(e)
    assert db.scalar("SELECT count(*) FROM pg_class WHERE relname = 't'") == 0


# --------------------------------------------------------------------------
# a SIGSTOPped etcd: statement_timeout and pg_cancel_backend
# --------------------------------------------------------------------------


def _prepare_stopped(db, etcd, warm):
    etcd.put("k1", "v1")
    etcd.put("k2", "v2")
    # etcd's own timeouts must not end the wait: only the statement_timeout
    # or the cancel under test may
    db.create_server("s", etcd.endpoint, connect_timeout=str(ETCD_TIMEOUT),
                     request_timeout=str(ETCD_TIMEOUT))
    db.create_table("t", "s")
    if warm:  # the backend has a cached, working connection
        assert db.rows("SELECT key, value FROM t") == [("k1", "v1"), ("k2", "v2")]
    etcd.stop()


def _check_recovery(db, etcd):
    # the session is usable while etcd is still frozen ...
    assert_session_usable(db.conn)
    assert db.scalar("SELECT count(*) FROM pg_class") > 0
    # ... and foreign queries work again once it is resumed
    etcd.cont()
    db.execute("SET statement_timeout = '20s'")
    assert db.rows("SELECT key, value FROM t") == [("k1", "v1"), ("k2", "v2")]
    assert db.rows("SELECT key, value FROM t") == [("k1", "v1"), ("k2", "v2")]
    db.execute("RESET statement_timeout")


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_statement_timeout_on_stopped_etcd(db, etcd_fresh, warm):
    _prepare_stopped(db, etcd_fresh, warm)
    other = db.second_connection()
    pid = db.backend_pid()
    db.execute("SET statement_timeout = '1s'")
    t = QueryThread(db.conn, "SELECT key, value FROM t")
    t.start()
    finish_or_rescue(t, etcd_fresh, ETCD_TIMEOUT)  # only a guard against a hang
    assert t.error is not None, f"query returned {t.rows!r} from a stopped etcd"
    assert isinstance(t.error, psycopg.Error)
    assert t.error.sqlstate == "57014", err_text(t.error)
    assert "statement timeout" in err_text(t.error), err_text(t.error)
    # the statement ended by its timeout, by the clock statement_timeout uses
    elapsed = statement_seconds(other, pid)
    assert elapsed < 1 + LOAD_SLACK, f"statement_timeout 1s took {elapsed:.1f}s"
    db.execute("RESET statement_timeout")
    _check_recovery(db, etcd_fresh)


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_pg_cancel_backend_on_stopped_etcd(db, etcd_fresh, warm):
    _prepare_stopped(db, etcd_fresh, warm)
    other = db.second_connection()
    pid = db.backend_pid()
    sql = "SELECT key, value FROM t"
    # warm: what the idle backend left unread on its cached connection
    before = unread_by_etcd(pid, etcd_fresh.port)
    t = QueryThread(db.conn, sql)
    t.start()
    # cancel only once the backend has sent its request and waits for etcd
    if not wait_blocked_on_etcd(other, pid, etcd_fresh, sql, before, t):
        pytest.fail(f"query did not block on the stopped etcd: rows={t.rows!r} error={t.error!r}")
    cancel_at, cancelled = other.execute(
        "SELECT clock_timestamp(), pg_cancel_backend(%s)", (pid,)
    ).fetchone()
    assert cancelled is True
    finish_or_rescue(t, etcd_fresh, ETCD_TIMEOUT)  # only a guard against a hang
    assert t.error is not None, f"query returned {t.rows!r} from a stopped etcd"
    assert isinstance(t.error, psycopg.Error)
    assert t.error.sqlstate == "57014", err_text(t.error)
    assert "user request" in err_text(t.error), err_text(t.error)
    # the cancel ended the wait at once, not etcd's timeouts (60 s): by the
    # backend's clock, from the cancel to the backend going idle
    took = other.execute(
        "SELECT extract(epoch FROM state_change - %s)::float8 FROM pg_stat_activity "
        "WHERE pid = %s AND state <> 'active'",
        (cancel_at, pid),
    ).fetchone()
    assert took is not None, "backend still active after its query ended"
    assert took[0] < LOAD_SLACK, f"cancel took {took[0]:.1f}s"
    _check_recovery(db, etcd_fresh)


def test_no_rust_backtrace_in_messages(etcd, kp, monkeypatch):
    """A server running with RUST_BACKTRACE=1 still sends clean messages:
    no Rust backtrace in the DETAIL of an error raised inside the extension
    (a PostgreSQL error re-raised through it, or one of its own)."""
    monkeypatch.setenv("RUST_BACKTRACE", "full")
    cluster = PgCluster()
    try:
        cluster.start()
        monkeypatch.delenv("RUST_BACKTRACE")
        c = cluster.connect("postgres")
        c.execute("CREATE EXTENSION etcd_fdw")
        c.execute("CREATE FOREIGN DATA WRAPPER etcd_fdw HANDLER etcd_fdw_handler "
                  "VALIDATOR etcd_fdw_validator")
        c.execute(f"CREATE SERVER s FOREIGN DATA WRAPPER etcd_fdw OPTIONS (connstr '{etcd.endpoint}')")
        c.execute(f"CREATE FOREIGN TABLE j (key text, value jsonb) SERVER s "
                  f"OPTIONS (rowid_column 'key', prefix '{kp}')")
        c.execute(f"CREATE FOREIGN TABLE t (key text, value text) SERVER s "
                  f"OPTIONS (rowid_column 'key', prefix '{kp}')")
        etcd.put(kp + "leader", "node1")  # not JSON
        for sql, state in (("SELECT * FROM j", "22P02"),
                           (f"INSERT INTO t VALUES ('{kp}x', NULL)", "23502"),
                           ("INSERT INTO t VALUES ('outside', 'x')", "23514")):
            try:
                c.execute(sql)
                raise AssertionError(f"{sql} succeeded")
            except psycopg.Error as e:
                assert e.sqlstate == state, (sql, e.sqlstate, err_text(e))
                text = err_text(e)
            for marker in ("backtrace", "panic.rs", "   0: ", ".rs:"):
                assert marker not in text, f"{sql}: {marker!r} in {text!r}"
    finally:
        cluster.destroy()
