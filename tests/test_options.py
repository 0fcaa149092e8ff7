"""Server / table / user-mapping options of etcd_fdw: effects and refusals.

Most tests share one etcd per version (module fixture `etcd`) and keep to
their own key prefix `kp`.
"""

import json

import psycopg
import pytest

from harness import (
    QueryThread,
    assert_session_usable,
    err_text,
    expect_error,
    finish_or_rescue,
)


# A statement that must end by a timeout may take this much longer than the
# configured time on a loaded machine (CI runs two suites side by side on
# 2 cores); timeouts that must not fire are set well above it.
LOAD_SLACK = 10.0
LONG_TIMEOUT = 60


def statement_seconds(observer, pid):
    """How long backend `pid`'s last statement ran, by the backend's own
    clock: from its start (query_start) to its going idle (state_change).
    The backend reports idle before it sends ReadyForQuery, so this is exact
    once the client has the result.  (The same helper as in test_basic.py.)"""
    state, secs = observer.execute(
        "SELECT state, extract(epoch FROM state_change - query_start)::float8 "
        "FROM pg_stat_activity WHERE pid = %s",
        (pid,),
    ).fetchone()
    assert state != "active", f"backend {pid} is still running its statement"
    return secs


def make_table(db, etcd, columns="key text, value text", server_opts=None, **table_opts):
    db.create_server("s", etcd.endpoint, **(server_opts or {}))
    db.create_table("t", "s", columns=columns, **table_opts)


def put_all(etcd, items):
    for k, v in items.items():
        etcd.put(k, v)


# --------------------------------------------------------------------------
# key selection: prefix, key, key + range_end
# --------------------------------------------------------------------------


def test_prefix(db, etcd, kp):
    stem = kp[:-1]
    inside = {kp: "exact", kp + "a": "1", kp + "b": "2", kp + "c/d": "3"}
    outside = {stem: "stem", stem + "x": "sibling", stem + "0": "next"}
    put_all(etcd, {**inside, **outside})
    make_table(db, etcd, prefix=kp)
    assert db.rows("SELECT key, value FROM t") == sorted(inside.items())
    assert db.scalar("SELECT count(*) FROM t") == 4
    db.create_table("t_none", "s", prefix=kp + "nothing-here/")
    assert db.rows("SELECT * FROM t_none") == []


def test_prefix_is_not_a_pattern(db, etcd, kp):
    # LIKE / glob metacharacters and multi-byte UTF-8 in the prefix are literal
    p = kp + "ü%_*/"
    inside = {p + "a": "1", p + "b": "2"}
    outside = {kp + "üx_*/a": "no", kp + "ü%%_*/a": "no", kp + "ü%_*": "no"}
    put_all(etcd, {**inside, **outside})
    make_table(db, etcd, prefix=p)
    assert db.rows("SELECT key, value FROM t") == sorted(inside.items())


def test_key_alone_selects_one_key(db, etcd, kp):
    put_all(etcd, {kp + "a": "A", kp + "ab": "AB", kp + "b": "B", kp + "0": "zero"})
    make_table(db, etcd, key=kp + "a")
    assert db.rows("SELECT key, value FROM t") == [(kp + "a", "A")]
    db.create_table("t_missing", "s", key=kp + "does-not-exist")
    assert db.rows("SELECT key, value FROM t_missing") == []


def test_key_and_range_end(db, etcd, kp):
    put_all(etcd, {kp + c: c.upper() for c in "abcde"})
    make_table(db, etcd, key=kp + "b", range_end=kp + "d")
    # half-open: [b, d)
    assert db.rows("SELECT key, value FROM t") == [(kp + "b", "B"), (kp + "c", "C")]
    db.create_table("t2", "s", key=kp + "bb", range_end=kp + "z")
    assert db.rows("SELECT key FROM t2") == [(kp + "c",), (kp + "d",), (kp + "e",)]


def test_keys_only(db, etcd, kp):
    data = {kp + c: "value-" + c for c in "abc"}
    put_all(etcd, data)
    make_table(db, etcd, prefix=kp, keys_only="true")
    assert db.rows("SELECT key, value FROM t") == [(k, None) for k in sorted(data)]
    assert db.scalar("SELECT count(*) FROM t WHERE value IS NULL") == 3
    db.create_table("t_false", "s", prefix=kp, keys_only="false")
    assert db.rows("SELECT key, value FROM t_false") == sorted(data.items())


def test_revision(db, etcd, kp):
    k = kp + "k"
    r1 = etcd.put(k, "old")
    r2 = etcd.put(k, "new")
    etcd.put(kp + "later", "added after r2")
    assert r2 > r1
    make_table(db, etcd, prefix=kp, revision=str(r1))
    assert db.rows("SELECT key, value FROM t") == [(k, "old")]
    db.create_table("t_r2", "s", prefix=kp, revision=str(r2))
    assert db.rows("SELECT key, value FROM t_r2") == [(k, "new")]
    db.create_table("t_now", "s", prefix=kp)
    assert db.rows("SELECT key, value FROM t_now") == [(k, "new"), (kp + "later", "added after r2")]
    # revision 0 = latest
    db.create_table("t_zero", "s", prefix=kp, revision="0")
    assert db.rows("SELECT key, value FROM t_zero") == [
        (k, "new"),
        (kp + "later", "added after r2"),
    ]
    # metadata columns as of that revision
    db.create_table(
        "t_meta", "s", columns="key text, value text, mod_revision bigint, version bigint",
        prefix=kp, revision=str(r1),
    )
    assert db.rows("SELECT key, value, mod_revision, version FROM t_meta") == [(k, "old", r1, 1)]


def test_future_revision_is_an_error(db, etcd, kp):
    etcd.put(kp + "k", "v")
    make_table(db, etcd, prefix=kp, revision=str(etcd.revision() + 100000))
    e = expect_error(db.conn, "SELECT * FROM t")
    assert "future" in err_text(e).lower() or "revision" in err_text(e).lower()
    assert_session_usable(db.conn)


def test_compacted_revision_is_an_error(db, etcd, kp):
    r1 = etcd.put(kp + "k", "old")
    r2 = etcd.put(kp + "k", "new")
    etcd.ctl("compact", str(r2))
    make_table(db, etcd, prefix=kp, revision=str(r1))
    e = expect_error(db.conn, "SELECT * FROM t")
    assert "compact" in err_text(e).lower() or "revision" in err_text(e).lower()
    assert_session_usable(db.conn)
    db.create_table("t_ok", "s", prefix=kp, revision=str(r2))
    assert db.rows("SELECT value FROM t_ok") == [("new",)]


@pytest.mark.parametrize("consistency", ["l", "s", "linearizable", "serializable"])
def test_consistency(db, etcd, kp, consistency):
    data = {kp + c: c for c in "xyz"}
    put_all(etcd, data)
    make_table(db, etcd, prefix=kp, consistency=consistency)
    assert db.rows("SELECT key, value FROM t") == sorted(data.items())


def test_fetch_size(db, etcd, kp):
    data = {f"{kp}{i}": f"v{i}" for i in range(7)}
    put_all(etcd, data)
    expected = sorted(data.items())
    make_table(db, etcd, prefix=kp, fetch_size="2")
    assert db.rows("SELECT key, value FROM t") == expected
    assert db.scalar("SELECT count(*) FROM t") == 7
    assert db.rows("SELECT key FROM t LIMIT 3") == [(k,) for k, _ in expected[:3]]
    db.create_table("t1", "s", prefix=kp, fetch_size="1")
    assert db.rows("SELECT key, value FROM t1") == expected
    db.create_table("t_ko", "s", prefix=kp, fetch_size="2", keys_only="true")
    assert db.rows("SELECT key, value FROM t_ko") == [(k, None) for k, _ in expected]
    db.create_table("t_range", "s", key=kp + "1", range_end=kp + "6", fetch_size="2")
    assert db.rows("SELECT key FROM t_range") == [(f"{kp}{i}",) for i in range(1, 6)]
    db.create_table("t_big", "s", prefix=kp, fetch_size="100000")
    assert db.rows("SELECT key, value FROM t_big") == expected


def test_fetch_size_at_server_level(db, etcd, kp):
    data = {f"{kp}{i}": f"v{i}" for i in range(7)}
    put_all(etcd, data)
    make_table(db, etcd, server_opts={"fetch_size": "3"}, prefix=kp)
    assert db.rows("SELECT key, value FROM t") == sorted(data.items())
    # a table-level fetch_size next to the server-level one
    db.create_table("t2", "s", prefix=kp, fetch_size="2")
    assert db.rows("SELECT key, value FROM t2") == sorted(data.items())


def test_metadata_columns(db, etcd, kp):
    lease = json.loads(etcd.ctl("lease", "grant", "600", "-w", "json"))["ID"]
    etcd.put(kp + "a", "1")
    etcd.put(kp + "a", "2")
    etcd.ctl("put", "--lease", format(lease, "x"), "--", kp + "leased", "L")
    kv_a, kv_l = etcd.get_kv(kp + "a"), etcd.get_kv(kp + "leased")
    assert kv_l["lease"] == lease
    # columns in an unusual order: they are matched by name
    make_table(
        db, etcd, prefix=kp,
        columns="mod_revision bigint, value text, lease bigint, key text, "
        "version bigint, create_revision bigint",
    )
    rows = db.rows("SELECT key, value, create_revision, mod_revision, version, lease FROM t")
    assert rows[0][:5] == (kp + "a", "2", kv_a["create_revision"], kv_a["mod_revision"], 2)
    assert rows[0][5] in (0, None)  # no lease
    assert rows[1] == (
        kp + "leased", "L", kv_l["create_revision"], kv_l["mod_revision"], 1, lease
    )
    assert db.rows("SELECT * FROM t")[1] == (
        kv_l["mod_revision"], "L", lease, kp + "leased", 1, kv_l["create_revision"]
    )


def test_bytea_columns(db, etcd, kp):
    kb = kp.encode()
    data = {kb + b"bin\x01": b"\x00\xff\xfe\x80", kb + b"text": "ünï".encode()}
    etcd.put_many(data)
    make_table(db, etcd, columns="key bytea, value bytea", prefix=kp)
    assert db.rows("SELECT key, value FROM t") == sorted(data.items())
    db.create_table("t_mixed", "s", columns="key text, value bytea", key=kp + "text")
    assert db.rows("SELECT key, value FROM t_mixed") == [(kp + "text", "ünï".encode())]


# --------------------------------------------------------------------------
# timeouts
# --------------------------------------------------------------------------


def test_request_timeout(db, etcd_fresh):
    etcd_fresh.put("k", "v")
    make_table(db, etcd_fresh, server_opts={"request_timeout": "2", "connect_timeout": "2"})
    assert db.rows("SELECT key, value FROM t") == [("k", "v")]
    other = db.second_connection()
    pid = db.backend_pid()
    etcd_fresh.stop()
    t = QueryThread(db.conn, "SELECT key, value FROM t")
    t.start()
    finish_or_rescue(t, etcd_fresh, LONG_TIMEOUT)  # only a guard against a hang
    assert t.error is not None, f"query returned {t.rows!r} from a stopped etcd"
    assert isinstance(t.error, psycopg.Error) and t.error.sqlstate is not None, t.error
    assert "timed out" in err_text(t.error), err_text(t.error)
    # a connection-class code a client can act on (retry), not HV000
    assert t.error.sqlstate == "08006", (t.error.sqlstate, err_text(t.error))
    # ended by request_timeout, by the backend's clock
    elapsed = statement_seconds(other, pid)
    assert elapsed < 2 + LOAD_SLACK, f"request_timeout 2s took {elapsed:.1f}s"
    assert_session_usable(db.conn)
    etcd_fresh.cont()
    assert db.rows("SELECT key, value FROM t") == [("k", "v")]


def test_connect_timeout(db, blackhole):
    """TCP connect hangs (full accept queue): connect_timeout bounds it."""
    db.create_server("s", blackhole.endpoint, connect_timeout="2",
                     request_timeout=str(LONG_TIMEOUT))
    db.create_table("t", "s")
    other = db.second_connection()
    pid = db.backend_pid()
    t = QueryThread(db.conn, "SELECT * FROM t")
    t.start()
    finish_or_rescue(t, None, LONG_TIMEOUT)  # only a guard against a hang
    assert t.error is not None
    assert t.error.sqlstate == "HV00N", err_text(t.error)
    assert blackhole.endpoint in err_text(t.error)
    # ended by connect_timeout (not request_timeout, 60 s), by the backend's clock
    elapsed = statement_seconds(other, pid)
    assert elapsed < 2 + LOAD_SLACK, f"connect_timeout 2s took {elapsed:.1f}s"
    assert_session_usable(db.conn)


# --------------------------------------------------------------------------
# connstr forms and multiple endpoints
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt",
    [
        "http://{alive}",
        "{dead},{alive}",
        "http://{dead},http://{alive}",
        "{alive},{dead}",
        "{blackhole},{alive}",
    ],
    ids=["http-scheme", "dead-first", "dead-first-http", "alive-first", "blackhole-first"],
)
def test_connstr_forms(db, etcd, kp, dead_endpoint, blackhole, fmt):
    etcd.put(kp + "k", "v")
    connstr = fmt.format(alive=etcd.endpoint, dead=dead_endpoint, blackhole=blackhole.endpoint)
    # connect_timeout bounds the blackhole; the live member must answer
    # within it too, so it is not tight.  request_timeout is far above the
    # bound: a dead first member must cost at most one connect_timeout, never
    # a wait for request_timeout.
    connect_timeout = 5
    db.create_server("s", connstr, connect_timeout=str(connect_timeout),
                     request_timeout=str(LONG_TIMEOUT))
    db.create_table("t", "s", prefix=kp)
    other = db.second_connection()
    pid = db.backend_pid()
    t = QueryThread(db.conn, "SELECT key, value FROM t")
    t.start()
    finish_or_rescue(t, None, LONG_TIMEOUT)  # only a guard against a hang
    assert t.error is None, err_text(t.error)
    assert t.rows == [(kp + "k", "v")]
    elapsed = statement_seconds(other, pid)
    assert elapsed < connect_timeout + LOAD_SLACK, f"took {elapsed:.1f}s"
    for _ in range(2):
        assert db.rows("SELECT key, value FROM t") == [(kp + "k", "v")]


# --------------------------------------------------------------------------
# connection cache
# --------------------------------------------------------------------------


def connections(db, conn=None):
    return db.rows(
        "SELECT server_name, user_name, endpoints, connects FROM etcd_fdw_get_connections() "
        "ORDER BY server_name",
        conn=conn,
    )


def test_connection_reuse(db, etcd, kp):
    etcd.put(kp + "a", "1")
    make_table(db, etcd, server_opts={"request_timeout": "30"}, prefix=kp)
    assert connections(db) == []
    for _ in range(3):
        assert db.rows("SELECT key, value FROM t") == [(kp + "a", "1")]
    rows = connections(db)
    assert len(rows) == 1, rows
    server_name, _user, endpoints, connects = rows[0]
    assert server_name == "s"
    assert etcd.endpoint in endpoints
    assert connects == 1
    # a changed server invalidates the cached connection
    db.execute("ALTER SERVER s OPTIONS (SET request_timeout '31')")
    assert db.rows("SELECT key, value FROM t") == [(kp + "a", "1")]
    rows = connections(db)
    assert len(rows) == 1, rows
    assert rows[0][0] == "s" and rows[0][3] == 2
    # the cache is per backend
    other = db.second_connection()
    assert connections(db, conn=other) == []
    # disconnect_all empties it; the next query reconnects
    assert db.scalar("SELECT etcd_fdw_disconnect_all()") is True
    assert connections(db) == []
    assert db.rows("SELECT key, value FROM t") == [(kp + "a", "1")]
    assert len(connections(db)) == 1


def test_connection_per_server(db, etcd, kp):
    etcd.put(kp + "a", "1")
    db.create_server("s1", etcd.endpoint)
    db.create_server("s2", "http://" + etcd.endpoint)
    db.create_table("t1", "s1", prefix=kp)
    db.create_table("t2", "s2", prefix=kp)
    assert db.rows("SELECT t1.value, t2.value FROM t1 JOIN t2 USING (key)") == [("1", "1")]
    rows = connections(db)
    assert [r[0] for r in rows] == ["s1", "s2"]
    assert all(r[3] == 1 for r in rows)
    assert db.rows("SELECT t1.value, t2.value FROM t1 JOIN t2 USING (key)") == [("1", "1")]
    assert [r[3] for r in connections(db)] == [1, 1]


# --------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------


def test_unknown_server_option(db, etcd):
    expect_error(
        db.conn,
        f"CREATE SERVER s FOREIGN DATA WRAPPER etcd_fdw "
        f"OPTIONS (connstr '{etcd.endpoint}', bogus_server_opt 'x')",
        sqlstate="HV00D",
        contains="bogus_server_opt",
    )


def test_unknown_table_option(db, etcd):
    db.create_server("s", etcd.endpoint)
    expect_error(
        db.conn,
        "CREATE FOREIGN TABLE t (key text, value text) SERVER s "
        "OPTIONS (rowid_column 'key', bogus_table_opt 'x')",
        sqlstate="HV00D",
        contains="bogus_table_opt",
    )


def test_unknown_user_mapping_option(db, etcd):
    db.create_server("s", etcd.endpoint)
    expect_error(
        db.conn,
        "CREATE USER MAPPING FOR CURRENT_USER SERVER s OPTIONS (bogus_um_opt 'x')",
        sqlstate="HV00D",
        contains="bogus_um_opt",
    )


def test_options_at_the_wrong_level(db, etcd):
    expect_error(
        db.conn,
        f"CREATE SERVER s FOREIGN DATA WRAPPER etcd_fdw "
        f"OPTIONS (connstr '{etcd.endpoint}', prefix 'x/')",
        sqlstate="HV00D",
        contains="prefix",
    )
    db.create_server("s", etcd.endpoint)
    expect_error(
        db.conn,
        "CREATE FOREIGN TABLE t (key text, value text) SERVER s "
        f"OPTIONS (rowid_column 'key', connstr '{etcd.endpoint}')",
        sqlstate="HV00D",
        contains="connstr",
    )
    expect_error(
        db.conn,
        f"CREATE USER MAPPING FOR CURRENT_USER SERVER s OPTIONS (connstr '{etcd.endpoint}')",
        sqlstate="HV00D",
        contains="connstr",
    )


def test_alter_server_add_unknown_option(db, etcd):
    db.create_server("s", etcd.endpoint)
    expect_error(
        db.conn, "ALTER SERVER s OPTIONS (ADD bogus 'x')", sqlstate="HV00D", contains="bogus"
    )
    db.create_table("t", "s")
    expect_error(
        db.conn,
        "ALTER FOREIGN TABLE t OPTIONS (ADD bogus2 'x')",
        sqlstate="HV00D",
        contains="bogus2",
    )
    # the objects are unchanged and still usable
    assert db.scalar("SELECT srvoptions::text FROM pg_foreign_server WHERE srvname = 's'").count(
        "bogus"
    ) == 0


def test_alter_server_drop_connstr_refused(db, etcd):
    db.create_server("s", etcd.endpoint)
    e = expect_error(db.conn, "ALTER SERVER s OPTIONS (DROP connstr)", sqlstate_class="HV")
    assert "connstr" in err_text(e)


def test_alter_table_drop_rowid_column_refused(db, etcd):
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s")
    e = expect_error(
        db.conn, "ALTER FOREIGN TABLE t OPTIONS (DROP rowid_column)", sqlstate_class="HV"
    )
    assert "rowid_column" in err_text(e)


BAD_SERVER_VALUES = [
    ("connect_timeout", "abc"),
    ("connect_timeout", "-1"),
    ("connect_timeout", "1.5x"),
    ("request_timeout", "x"),
    ("request_timeout", "-5"),
    ("fetch_size", "many"),
    ("fetch_size", "-1"),
]


@pytest.mark.parametrize("opt,value", BAD_SERVER_VALUES)
def test_bad_server_option_value(db, etcd, opt, value):
    expect_error(
        db.conn,
        f"CREATE SERVER s FOREIGN DATA WRAPPER etcd_fdw "
        f"OPTIONS (connstr '{etcd.endpoint}', {opt} '{value}')",
        sqlstate="HV024",
        contains=opt,
    )


BAD_TABLE_VALUES = [
    ("keys_only", "maybe"),
    ("revision", "-1"),
    ("revision", "abc"),
    ("revision", "99999999999999999999999"),
    ("consistency", "x"),
    ("consistency", "strong"),
    ("fetch_size", "x"),
    ("fetch_size", "-2"),
]


@pytest.mark.parametrize("opt,value", BAD_TABLE_VALUES)
def test_bad_table_option_value(db, etcd, opt, value):
    db.create_server("s", etcd.endpoint)
    expect_error(
        db.conn,
        "CREATE FOREIGN TABLE t (key text, value text) SERVER s "
        f"OPTIONS (rowid_column 'key', {opt} '{value}')",
        sqlstate="HV024",
        contains=opt,
    )


def test_bad_value_on_alter(db, etcd):
    db.create_server("s", etcd.endpoint, request_timeout="30")
    expect_error(
        db.conn,
        "ALTER SERVER s OPTIONS (SET request_timeout 'soon')",
        sqlstate="HV024",
        contains="request_timeout",
    )
    db.create_table("t", "s")
    expect_error(
        db.conn,
        "ALTER FOREIGN TABLE t OPTIONS (ADD revision 'latest')",
        sqlstate="HV024",
        contains="revision",
    )


@pytest.mark.parametrize(
    "opts",
    [
        "prefix 'a/', key 'a/b'",
        "prefix 'a/', range_end 'b'",
        "prefix 'a/', key 'a/b', range_end 'a/c'",
    ],
)
def test_prefix_conflicts_with_key_range(db, etcd, opts):
    db.create_server("s", etcd.endpoint)
    e = expect_error(
        db.conn,
        f"CREATE FOREIGN TABLE t (key text, value text) SERVER s "
        f"OPTIONS (rowid_column 'key', {opts})",
        sqlstate_class="HV",
    )
    assert "prefix" in err_text(e)
    # and the same through ALTER
    db.create_table("t_ok", "s", prefix="a/")
    e = expect_error(
        db.conn, "ALTER FOREIGN TABLE t_ok OPTIONS (ADD key 'a/b')", sqlstate_class="HV"
    )
    assert "prefix" in err_text(e)


def test_rowid_column_must_name_a_column(db, etcd, kp):
    etcd.put(kp + "k", "v")
    db.create_server("s", etcd.endpoint)
    # the validator cannot see the columns; the extension's event trigger
    # refuses the table when it is created (README)
    e = expect_error(
        db.conn,
        f"CREATE FOREIGN TABLE t (key text, value text) SERVER s "
        f"OPTIONS (rowid_column 'nosuchcol', prefix '{kp}')",
        sqlstate_class="HV",
    )
    assert "nosuchcol" in err_text(e) or "rowid_column" in err_text(e)
    assert db.scalar("SELECT count(*) FROM pg_class WHERE relname = 't'") == 0
    assert_session_usable(db.conn)


def test_valid_options_accepted(db, etcd, kp):
    """Every documented option with a good value is accepted together."""
    etcd.put(kp + "k", "v")
    db.create_server(
        "s",
        f"{etcd.endpoint}",
        connect_timeout="5",
        request_timeout="10",
        fetch_size="50",
    )
    db.create_user_mapping("s")  # no options at all is fine
    db.create_table(
        "t", "s", prefix=kp, keys_only="false", revision="0", consistency="serializable",
        fetch_size="10",
    )
    db.create_table("t2", "s", key=kp + "k", range_end=kp + "l", consistency="l")
    assert db.rows("SELECT key, value FROM t") == [(kp + "k", "v")]
    assert db.rows("SELECT key, value FROM t2") == [(kp + "k", "v")]


def test_cached_options_follow_alter(db, etcd, kp):
    """Parsed options are cached per backend; every ALTER is seen by the next
    query of the same session (and a user mapping change reconnects)."""
    etcd.put(kp + "a/1", "x")
    etcd.put(kp + "b/1", "y")
    make_table(db, etcd, prefix=kp + "a/")
    assert db.rows("SELECT key FROM t") == [(kp + "a/1",)]
    db.execute(f"ALTER FOREIGN TABLE t OPTIONS (SET prefix '{kp}b/')")
    assert db.rows("SELECT key FROM t") == [(kp + "b/1",)]
    db.execute("ALTER FOREIGN TABLE t ADD COLUMN version bigint")
    assert db.rows("SELECT key, version FROM t") == [(kp + "b/1", 1)]
    db.execute("ALTER FOREIGN TABLE t OPTIONS (ADD keys_only 'true')")
    assert db.rows("SELECT key, value FROM t") == [(kp + "b/1", None)]
    assert connections(db)[0][3] == 1
    db.execute("CREATE USER MAPPING FOR CURRENT_USER SERVER s")
    assert db.rows("SELECT key FROM t") == [(kp + "b/1",)]
    db.execute("ALTER USER MAPPING FOR CURRENT_USER SERVER s OPTIONS (ADD username 'nobody')")
    # the mapping changed, so the backend reconnects with the new user; this
    # etcd has authentication off ("authentication is not enabled"), so the
    # connection goes on without a token
    before = connections(db)[0][3]
    assert db.rows("SELECT key FROM t") == [(kp + "b/1",)]
    assert connections(db)[0][3] == before + 1
    db.execute("DROP USER MAPPING FOR CURRENT_USER SERVER s")
    assert db.rows("SELECT key FROM t") == [(kp + "b/1",)]


def test_server_password_warns_and_mapping_password_does_not(db, etcd):
    """pg_foreign_server.srvoptions is readable by every role: a password
    set there draws a WARNING that points at user mappings."""
    notices = []
    db.conn.add_notice_handler(lambda d: notices.append(
        (d.severity_nonlocalized, d.message_primary, d.message_hint or "")))
    db.execute(
        f"CREATE SERVER sp FOREIGN DATA WRAPPER etcd_fdw "
        f"OPTIONS (connstr '{etcd.endpoint}', username 'u', password 'sekrit')"
    )
    warnings = [n for n in notices if n[0] == "WARNING"]
    assert len(warnings) == 1, notices
    _, primary, hint = warnings[0]
    assert "visible to every role" in primary
    assert "user mapping" in hint
    assert "sekrit" not in primary + hint
    # the password is indeed readable by a role without any privilege
    plain = db.role_connection("pw_reader")
    opts = db.scalar("SELECT srvoptions::text FROM pg_foreign_server WHERE srvname = 'sp'", conn=plain)
    assert "sekrit" in opts
    # a user mapping's password: no warning (pg_user_mapping is protected)
    notices.clear()
    db.execute("CREATE SERVER sm FOREIGN DATA WRAPPER etcd_fdw "
               f"OPTIONS (connstr '{etcd.endpoint}')")
    db.execute("CREATE USER MAPPING FOR CURRENT_USER SERVER sm "
               "OPTIONS (username 'u', password 'sekrit')")
    assert not [n for n in notices if n[0] == "WARNING"]
    assert db.scalar("SELECT count(*) FROM pg_user_mappings WHERE srvname = 'sm' "
                     "AND umoptions IS NULL", conn=plain) == 1
    # ALTER SERVER that drops the password stops warning
    db.execute("ALTER SERVER sp OPTIONS (DROP password)")
    db.execute("ALTER SERVER sp OPTIONS (ADD request_timeout '5')")
    assert not [n for n in notices if n[0] == "WARNING"]
