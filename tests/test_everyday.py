"""Everyday etcd work in SQL: insert_mode 'put' (upsert), the get/put/delete
functions, and conversion errors whose CONTEXT names key, column and table.
State is checked with etcdctl; both commit modes where writes are involved."""

import psycopg
import pytest

from harness import err_text, expect_error

MODES = ["transaction", "statement"]


def _setup(db, etcd, kp, mode, **table_opts):
    db.execute(f"SET etcd_fdw.commit_mode = '{mode}'")
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", columns="key text, value text, version bigint, lease bigint",
                    prefix=kp, **table_opts)


# --------------------------------------------------------------------------
# insert_mode 'put'
# --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_put_mode_overwrites_and_creates(db, etcd, kp, mode):
    _setup(db, etcd, kp, mode, insert_mode="put")
    etcd.put(kp + "a", "old")
    before = etcd.get_kv(kp + "a")
    # single row over an existing key, then a new one
    db.execute(f"INSERT INTO t (key, value) VALUES ('{kp}a', 'new')")
    db.execute(f"INSERT INTO t (key, value) VALUES ('{kp}b', 'fresh')")
    a = etcd.get_kv(kp + "a")
    assert a["value"] == b"new"
    assert a["version"] == before["version"] + 1
    assert a["create_revision"] == before["create_revision"]
    assert etcd.get(kp + "b") == b"fresh"
    assert etcd.get_kv(kp + "b")["version"] == 1
    # multi-row, a key twice: the last row wins, as two etcdctl puts would
    db.execute(f"INSERT INTO t (key, value) VALUES ('{kp}a', 'x1'), ('{kp}c', 'c1'), ('{kp}a', 'x2')")
    assert etcd.get(kp + "a") == b"x2"
    assert etcd.get(kp + "c") == b"c1"
    # INSERT ... SELECT over existing and new keys
    db.execute(f"INSERT INTO t (key, value) SELECT '{kp}' || k, 'sel' || k FROM unnest(ARRAY['a','b','d']) k")
    for k in "abd":
        assert etcd.get(kp + k) == f"sel{k}".encode()
    # COPY
    with db.conn.cursor() as cur:
        with cur.copy("COPY t (key, value) FROM STDIN") as cp:
            cp.write(f"{kp}a\tcopied\n{kp}e\tcopied-e\n")
    assert etcd.get(kp + "a") == b"copied"
    assert etcd.get(kp + "e") == b"copied-e"
    assert db.rows("SELECT key, value FROM t ORDER BY key") == [
        (kp + "a", "copied"), (kp + "b", "selb"), (kp + "c", "c1"), (kp + "d", "seld"), (kp + "e", "copied-e")]


@pytest.mark.parametrize("mode", MODES)
def test_put_mode_lease_from_column_or_none(db, etcd, kp, mode):
    _setup(db, etcd, kp, mode, insert_mode="put")
    lease = db.scalar("SELECT etcd_lease_grant('s', 300)") if _has_lease_grant(db) else _grant(etcd)
    etcd.ctl("put", f"--lease={lease:x}", kp + "k", "v0")
    assert etcd.get_kv(kp + "k")["lease"] == lease
    # a put without a lease detaches the key, like etcdctl put
    db.execute(f"INSERT INTO t (key, value) VALUES ('{kp}k', 'v1')")
    assert etcd.get_kv(kp + "k")["lease"] == 0
    db.execute(f"INSERT INTO t (key, value, lease) VALUES ('{kp}k', 'v2', {lease})")
    kv = etcd.get_kv(kp + "k")
    assert (kv["value"], kv["lease"]) == (b"v2", lease)


def _has_lease_grant(db):
    return db.scalar("SELECT count(*) FROM pg_proc WHERE proname = 'etcd_lease_grant'") > 0


def _grant(etcd, ttl=300):
    import json
    out = json.loads(etcd.ctl("lease", "grant", str(ttl), "-w", "json"))
    return int(out["ID"])


@pytest.mark.parametrize("mode", MODES)
def test_create_mode_unchanged_and_do_nothing(db, etcd, kp, mode):
    _setup(db, etcd, kp, mode)
    etcd.put(kp + "a", "old")
    expect_error(db.conn, f"INSERT INTO t (key, value) VALUES ('{kp}a', 'new')", sqlstate="23505")
    assert etcd.get(kp + "a") == b"old"
    # ON CONFLICT DO NOTHING keeps its meaning in put mode: existing keys stay
    db.execute("ALTER FOREIGN TABLE t OPTIONS (ADD insert_mode 'put')")
    db.execute(f"INSERT INTO t (key, value) VALUES ('{kp}a', 'new'), ('{kp}b', 'b') ON CONFLICT DO NOTHING")
    assert etcd.get(kp + "a") == b"old"
    assert etcd.get(kp + "b") == b"b"


def test_put_mode_returning_metadata(statement_mode, etcd, kp):
    db = statement_mode
    _setup(db, etcd, kp, "statement", insert_mode="put")
    rev = etcd.put(kp + "a", "old")
    row = db.rows(f"INSERT INTO t (key, value) VALUES ('{kp}a', 'new'), ('{kp}n', 'n') "
                  "RETURNING key, value, version")
    assert row == [(kp + "a", "new", 2), (kp + "n", "n", 1)]
    assert etcd.get_kv(kp + "a")["create_revision"] == rev


def test_put_then_delete_in_one_transaction(db, etcd, kp):
    """A key overwritten by a put and then deleted in the same transaction
    is gone from etcd at COMMIT (the unguarded put must not hide it)."""
    _setup(db, etcd, kp, "transaction", insert_mode="put")
    etcd.put(kp + "a", "old")
    with db.conn.transaction():
        db.execute(f"INSERT INTO t (key, value) VALUES ('{kp}a', 'new')")
        assert db.scalar(f"SELECT value FROM t WHERE key = '{kp}a'") == "new"
        db.execute(f"DELETE FROM t WHERE key = '{kp}a'")
        assert db.scalar(f"SELECT count(*) FROM t WHERE key = '{kp}a'") == 0
    assert etcd.get(kp + "a") is None
    # and ROLLBACK discards a put
    etcd.put(kp + "b", "kept")
    db.execute("BEGIN")
    db.execute(f"INSERT INTO t (key, value) VALUES ('{kp}b', 'lost')")
    db.execute("ROLLBACK")
    assert etcd.get(kp + "b") == b"kept"


def test_insert_mode_option_validated_and_explained(db, etcd, kp):
    db.create_server("s", etcd.endpoint)
    expect_error(db.conn, f"CREATE FOREIGN TABLE bad (key text, value text) SERVER s "
                 f"OPTIONS (rowid_column 'key', prefix '{kp}', insert_mode 'upsert')",
                 sqlstate="HV024", contains=("insert_mode", "create or put"))
    expect_error(db.conn, "ALTER SERVER s OPTIONS (ADD insert_mode 'merge')",
                 sqlstate="HV024", contains="insert_mode")
    db.create_table("t", "s", prefix=kp)
    plan = "\n".join(r[0] for r in db.rows(f"EXPLAIN INSERT INTO t VALUES ('{kp}a', 'x')"))
    assert "etcd Insert Mode: create" in plan
    # the server's option applies to its tables, a table's wins
    db.execute("ALTER SERVER s OPTIONS (ADD insert_mode 'put')")
    plan = "\n".join(r[0] for r in db.rows(f"EXPLAIN INSERT INTO t VALUES ('{kp}a', 'x')"))
    assert "etcd Insert Mode: put" in plan
    plan = "\n".join(r[0] for r in db.rows(
        f"EXPLAIN INSERT INTO t VALUES ('{kp}a', 'x') ON CONFLICT DO NOTHING"))
    assert "etcd Insert Mode: put (ON CONFLICT DO NOTHING: create)" in plan
    db.execute("ALTER FOREIGN TABLE t OPTIONS (ADD insert_mode 'create')")
    plan = "\n".join(r[0] for r in db.rows(f"EXPLAIN INSERT INTO t VALUES ('{kp}a', 'x')"))
    assert "etcd Insert Mode: create" in plan
    # no insert mode on UPDATE
    plan = "\n".join(r[0] for r in db.rows("EXPLAIN UPDATE t SET value = 'y'"))
    assert "Insert Mode" not in plan
    # still confined to the table's range
    db.execute("ALTER FOREIGN TABLE t OPTIONS (SET insert_mode 'put')")
    expect_error(db.conn, "INSERT INTO t VALUES ('elsewhere', 'x')", sqlstate="23514")


@pytest.mark.parametrize("mode", MODES)
def test_update_set_lease_null_detaches(db, etcd, kp, mode):
    _setup(db, etcd, kp, mode)
    lease = _grant(etcd)
    etcd.ctl("put", f"--lease={lease:x}", kp + "k", "v")
    db.execute(f"UPDATE t SET lease = NULL WHERE key = '{kp}k'")
    assert etcd.get_kv(kp + "k")["lease"] == 0
    db.execute(f"UPDATE t SET lease = {lease} WHERE key = '{kp}k'")
    assert etcd.get_kv(kp + "k")["lease"] == lease
    # an unknown lease is refused with a clear error and nothing is written
    e = expect_error(db.conn, f"UPDATE t SET lease = 12345, value = 'w' WHERE key = '{kp}k'",
                     sqlstate="42704", contains="lease not found")
    assert etcd.get_kv(kp + "k")["value"] == b"v"


# --------------------------------------------------------------------------
# functions
# --------------------------------------------------------------------------


def test_get_functions(db, etcd, kp):
    db.create_server("s", etcd.endpoint)
    etcd.put(kp + "leader", "node1")
    etcd.put(kp + "bin", b"\xff\x00\x01")
    assert db.scalar(f"SELECT etcd_get('s', '{kp}leader')") == "node1"
    assert db.scalar(f"SELECT etcd_get('s', '{kp}absent')") is None
    assert db.scalar("SELECT etcd_get('s', NULL)") is None
    assert db.scalar(f"SELECT etcd_get_bytea('s', '{kp}bin')") == b"\xff\x00\x01"
    assert db.scalar(f"SELECT etcd_get_bytea('s', '{kp}absent')") is None
    expect_error(db.conn, f"SELECT etcd_get('s', '{kp}bin')", sqlstate="22021", contains=kp + "bin")
    expect_error(db.conn, "SELECT etcd_get('s', '')", sqlstate="22023")
    expect_error(db.conn, "SELECT etcd_get('nosuch', 'k')", sqlstate="42704", contains="nosuch")


@pytest.mark.parametrize("mode", MODES)
def test_put_function(db, etcd, kp, mode):
    db.create_server("s", etcd.endpoint)
    db.execute(f"SET etcd_fdw.commit_mode = '{mode}'")
    rev = db.scalar(f"SELECT etcd_put('s', '{kp}a', 'v1')")
    if mode == "statement":
        assert rev == etcd.get_kv(kp + "a")["mod_revision"]
    else:
        assert rev is None  # written at COMMIT (here: the statement's)
    assert etcd.get(kp + "a") == b"v1"
    db.scalar(f"SELECT etcd_put('s', '{kp}a', 'v2')")
    assert etcd.get_kv(kp + "a")["version"] == 2
    db.scalar(f"SELECT etcd_put('s', '{kp}b', '\\xff00'::bytea)")
    assert etcd.get(kp + "b") == b"\xff\x00"
    lease = _grant(etcd)
    db.scalar(f"SELECT etcd_put('s', '{kp}l', 'x', {lease})")
    assert etcd.get_kv(kp + "l")["lease"] == lease
    expect_error(db.conn, f"SELECT etcd_put('s', '{kp}l', 'x', 424242)", sqlstate="42704")
    expect_error(db.conn, f"SELECT etcd_put('s', '{kp}n', NULL)", sqlstate="22004", contains="value")
    expect_error(db.conn, "SELECT etcd_put('s', '', 'x')", sqlstate="22023")
    expect_error(db.conn, f"SELECT etcd_put('s', '{kp}n', 'x', -1)", sqlstate="22023")
    assert etcd.get(kp + "n") is None


def test_functions_in_a_transaction(db, etcd, kp):
    """Transaction mode: reads see the transaction's own writes, ROLLBACK
    discards them, COMMIT sends them."""
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", prefix=kp)
    etcd.put(kp + "x", "etcd")
    db.execute("BEGIN")
    db.scalar(f"SELECT etcd_put('s', '{kp}a', 'mine')")
    assert db.scalar(f"SELECT etcd_get('s', '{kp}a')") == "mine"
    assert db.scalar(f"SELECT value FROM t WHERE key = '{kp}a'") == "mine"
    assert db.scalar(f"SELECT etcd_delete('s', '{kp}x')") == 1
    assert db.scalar(f"SELECT etcd_get('s', '{kp}x')") is None
    assert etcd.get(kp + "x") == b"etcd"
    # the count a delete reports is what the transaction sees
    assert db.scalar(f"SELECT etcd_delete_prefix('s', '{kp}')") == 1
    db.execute("ROLLBACK")
    assert etcd.get(kp + "a") is None and etcd.get(kp + "x") == b"etcd"
    with db.conn.transaction():
        db.scalar(f"SELECT etcd_put('s', '{kp}a', 'mine')")
        db.scalar(f"SELECT etcd_delete('s', '{kp}x')")
        assert etcd.get(kp + "a") is None
    assert etcd.get(kp + "a") == b"mine" and etcd.get(kp + "x") is None


@pytest.mark.parametrize("mode", MODES)
def test_delete_functions(db, etcd, kp, mode):
    db.create_server("s", etcd.endpoint)
    db.execute(f"SET etcd_fdw.commit_mode = '{mode}'")
    for k in ("a", "b", "c", "d", "e/1", "e/2"):
        etcd.put(kp + k, k)
    etcd.put(kp[:-1] + "0", "neighbour")  # right after the prefix, must survive
    assert db.scalar(f"SELECT etcd_delete('s', '{kp}a')") == 1
    assert db.scalar(f"SELECT etcd_delete('s', '{kp}a')") == 0
    assert db.scalar(f"SELECT etcd_delete('s', '{kp}b', '{kp}d')") == 2  # b, c
    assert etcd.get(kp + "d") == b"d"
    assert db.scalar(f"SELECT etcd_delete_prefix('s', '{kp}e/')") == 2
    assert db.scalar(f"SELECT etcd_delete_prefix('s', '{kp}')") == 1  # d
    assert etcd.get(kp[:-1] + "0") == b"neighbour"
    expect_error(db.conn, "SELECT etcd_delete('s', '')", sqlstate="22023")
    expect_error(db.conn, "SELECT etcd_delete(NULL, 'x')", sqlstate="22004", contains="server")


def test_delete_all_needs_allow_all(db, etcd_fresh):
    db.create_server("s", etcd_fresh.endpoint)
    db.execute("SET etcd_fdw.commit_mode = 'statement'")
    etcd_fresh.put("a", "1")
    etcd_fresh.put("z", "2")
    for sql in ("SELECT etcd_delete_prefix('s', '')", "SELECT etcd_delete('s', '', '')"):
        expect_error(db.conn, sql, sqlstate="22023", contains="every key", )
    assert etcd_fresh.get("a") == b"1"
    # range_end '' alone means every key >= key
    etcd_fresh.put("m", "3")
    assert db.scalar("SELECT etcd_delete('s', 'b', '')") == 2  # m, z
    assert db.scalar("SELECT etcd_delete_prefix('s', '', allow_all => true)") == 1
    assert etcd_fresh.get("a") is None


def test_functions_need_usage(db, etcd, kp):
    db.create_server("s", etcd.endpoint)
    db.execute("CREATE FOREIGN DATA WRAPPER other")
    db.execute("CREATE SERVER o FOREIGN DATA WRAPPER other")
    expect_error(db.conn, "SELECT etcd_get('o', 'k')", sqlstate="42809", contains="not an etcd_fdw server")
    c = db.role_connection("everyday_user")
    db.execute("GRANT USAGE ON FOREIGN DATA WRAPPER etcd_fdw TO everyday_user")
    for sql in (f"SELECT etcd_get('s', '{kp}k')", f"SELECT etcd_put('s', '{kp}k', 'v')",
                f"SELECT etcd_delete('s', '{kp}k')", f"SELECT etcd_delete_prefix('s', '{kp}')"):
        expect_error(c, sql, sqlstate="42501", contains="s")
    db.execute("GRANT USAGE ON FOREIGN SERVER s TO everyday_user")
    db.execute("CREATE USER MAPPING FOR everyday_user SERVER s")
    c.execute("SET etcd_fdw.commit_mode = 'statement'")
    c.execute(f"SELECT etcd_put('s', '{kp}k', 'v')")
    assert c.execute(f"SELECT etcd_get('s', '{kp}k')").fetchone() == ("v",)


def test_unreachable_etcd(db, dead_endpoint):
    db.create_server("s", dead_endpoint, connect_timeout="1")
    expect_error(db.conn, "SELECT etcd_get('s', 'k')", sqlstate="HV00N", contains="server \"s\"")


# --------------------------------------------------------------------------
# conversion errors name the key, column and table
# --------------------------------------------------------------------------


def _context(e):
    return e.diag.context or ""


def test_conversion_errors_name_the_key(db, etcd, kp):
    db.create_server("s", etcd.endpoint)
    etcd.put(kp + "leader", "node1")          # not JSON, not a number
    etcd.put(kp + "members/n1", '{"role": "leader"}')
    db.create_table("patroni_all", "s", columns="key text, value jsonb", prefix=kp)
    e = expect_error(db.conn, "SELECT * FROM patroni_all", sqlstate="22P02")
    assert "Token \"node1\" is invalid" in err_text(e)
    ctx = _context(e)
    assert f'key "{kp}leader", column "value" of foreign table "patroni_all"' in ctx, ctx
    # an int column
    db.create_table("nums", "s", columns="key text, value int", prefix=kp + "leader")
    e = expect_error(db.conn, "SELECT * FROM nums", sqlstate="22P02")
    assert f'key "{kp}leader", column "value" of foreign table "nums"' in _context(e)
    # bad UTF-8 in a text column (the message itself names the key already)
    etcd.put(kp + "bin/\x01x", b"\xff\xfe")
    db.create_table("texts", "s", columns="key text, value text", prefix=kp + "bin/")
    e = expect_error(db.conn, "SELECT * FROM texts", sqlstate="22021")
    assert f'key "{kp}bin/\\x01x", column "value" of foreign table "texts"' in _context(e)
    # good rows still read, and the session is fine
    assert db.rows(f"SELECT value->>'role' FROM patroni_all WHERE key = '{kp}members/n1'") == [("leader",)]


def test_conversion_error_on_a_write_names_the_key(db, etcd, kp):
    """A DELETE's RETURNING converts the row it deletes: the error names the
    key, and (transaction mode) nothing is deleted."""
    db.create_server("s", etcd.endpoint)
    etcd.put(kp + "bad", "not json")
    db.create_table("j", "s", columns="key text, value jsonb", prefix=kp)
    e = expect_error(db.conn, f"DELETE FROM j WHERE key = '{kp}bad' RETURNING key", sqlstate="22P02")
    assert f'key "{kp}bad", column "value" of foreign table "j"' in _context(e)
    assert etcd.get(kp + "bad") == b"not json"


@pytest.mark.parametrize("mode", MODES)
def test_insert_with_lease_and_unknown_lease(db, etcd, kp, mode):
    """The lease column is written with the key (create and put mode); a
    lease etcd does not know fails the statement (or the commit) and writes
    nothing of it."""
    _setup(db, etcd, kp, mode)
    lease = _grant(etcd)
    db.execute(f"INSERT INTO t (key, value, lease) VALUES ('{kp}a', 'x', {lease}), ('{kp}b', 'y', 0)")
    assert etcd.get_kv(kp + "a")["lease"] == lease
    assert etcd.get_kv(kp + "b")["lease"] == 0
    assert db.rows(f"SELECT key, lease FROM t ORDER BY key") == [(kp + "a", lease), (kp + "b", 0)]
    e = expect_error(db.conn, f"INSERT INTO t (key, value, lease) VALUES ('{kp}c', 'x', 0), ('{kp}d', 'y', 987654321)",
                     sqlstate="42704", contains="lease not found")
    assert etcd.get(kp + "c") is None and etcd.get(kp + "d") is None
    # revoking the lease takes its key with it
    etcd.ctl("lease", "revoke", f"{lease:x}")
    assert db.rows(f"SELECT key FROM t ORDER BY key") == [(kp + "b",)]


# --------------------------------------------------------------------------
# etcd_fdw.commit_mode in a new session (the library loads on first use)
# --------------------------------------------------------------------------


def _warnings(conn):
    seen = []
    conn.add_notice_handler(lambda d: seen.append((d.severity, d.message_primary)))
    return seen


def test_commit_mode_set_before_the_library_loads(db, etcd, kp):
    """A new session has not loaded etcd_fdw: SET etcd_fdw.commit_mode then
    makes a placeholder, which the library validates and takes over when it
    loads (here at the first etcd_put)."""
    db.create_server("s", etcd.endpoint)
    c = db.connect()
    assert c.execute("SELECT current_setting('etcd_fdw.commit_mode', true)").fetchone() == (None,)
    c.execute("SET etcd_fdw.commit_mode = 'statement'")
    assert c.execute("SELECT etcd_put('s', %s, 'v')", (kp + "a",)).fetchone()[0] > 0  # a revision: sent at once
    assert c.execute("SHOW etcd_fdw.commit_mode").fetchone() == ("statement",)
    # a value the library refuses: a WARNING when it loads, and the default
    c = db.connect()
    seen = _warnings(c)
    c.execute("SET etcd_fdw.commit_mode = 'statment'")
    c.execute("LOAD 'etcd_fdw'")
    assert ("WARNING", 'invalid value for parameter "etcd_fdw.commit_mode": "statment"') in seen
    assert c.execute("SHOW etcd_fdw.commit_mode").fetchone() == ("transaction",)


def test_misspelt_etcd_fdw_settings_are_refused_once_loaded(db, etcd):
    c = db.connect()
    seen = _warnings(c)
    c.execute("SET etcd_fdw.comit_mode = 'statement'")  # a placeholder, for now
    c.execute("LOAD 'etcd_fdw'")
    assert any(s == "WARNING" and "etcd_fdw.comit_mode" in m for s, m in seen), seen
    expect_error(c, "SET etcd_fdw.comit_mode = 'statement'", sqlstate="42602",
                 contains=["etcd_fdw.comit_mode"])
    expect_error(c, "SHOW etcd_fdw.comit_mode", sqlstate="42704")


def test_commit_mode_shown_in_a_new_session(db):
    """SHOW needs the library: after LOAD, or from the session's start with
    session_preload_libraries (as the README says)."""
    c = db.connect()
    expect_error(c, "SHOW etcd_fdw.commit_mode", sqlstate="42704")
    c.execute("LOAD 'etcd_fdw'")
    assert c.execute("SHOW etcd_fdw.commit_mode").fetchone() == ("transaction",)
    db.execute(f'ALTER DATABASE "{db.name}" SET session_preload_libraries = \'etcd_fdw\'')
    c = db.connect()
    assert c.execute("SHOW etcd_fdw.commit_mode").fetchone() == ("transaction",)
    assert c.execute(
        "SELECT count(*) FROM pg_settings WHERE name = 'etcd_fdw.commit_mode' AND enumvals = '{transaction,statement}'"
    ).fetchone() == (1,)
