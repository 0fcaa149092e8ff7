"""The commit_mode server and table options (issue 23), and small fixes
that came with them.

* `commit_mode 'statement'` on a table (or server) lets bulk loads past
  etcd's --max-txn-ops without a SET: INSERT ... SELECT of 2000 rows and a
  COPY of 100k lines, each key checked in etcd afterwards.
* A table in the default mode still refuses them (54000, nothing written)
  and the HINT names the command that marks the table.
* Precedence: a set etcd_fdw.commit_mode, then the table option, then the
  server option, then 'transaction'; EXPLAIN says which applies and why.
* Both modes in one transaction.
* Refused values: commit_mode, range_end '', long values cut in messages.
* etcd_fdw_get_connections() in a LATIN1 database, request timeouts 08006.

etcd's state is always checked with etcdctl, never only through the FDW.
"""

from __future__ import annotations

import base64
import json
import re

from harness import err_text, expect_error

COLS = "key text, value text"


def lit(s):
    return "'" + str(s).replace("'", "''") + "'"


def dump(etcd, prefix):
    """{key: value} under prefix, read with etcdctl."""
    out = json.loads(etcd.ctl("get", "--prefix", "-w", "json", "--", prefix))
    return {
        base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
        for kv in out.get("kvs") or []
    }


def count(etcd, prefix):
    """Keys under prefix (etcdctl 3.4 has no --count-only)."""
    return len(dump(etcd, prefix))


def explain_mode(db, sql, conn=None):
    plan = [r[0] for r in db.rows(f"EXPLAIN (COSTS OFF) {sql}", conn=conn)]
    modes = [m.group(1) for line in plan if (m := re.search(r"etcd Commit Mode: (.*)$", line))]
    assert len(modes) == 1, "\n".join(plan)
    return modes[0]


def test_bulk_insert_select_into_a_statement_table(db, etcd, kp):
    db.create_server("s", etcd.endpoint)
    db.create_table("bulk", "s", columns=COLS, prefix=kp + "b/", commit_mode="statement")
    db.create_table("plain", "s", columns=COLS, prefix=kp + "p/")
    c = db.conn
    # no SET anywhere: the GUC has its built-in default
    assert db.scalar("SELECT source FROM pg_settings WHERE name = 'etcd_fdw.commit_mode'") == "default"
    c.execute(
        f"INSERT INTO bulk SELECT {lit(kp + 'b/')} || lpad(i::text, 5, '0'), 'v' || i "
        "FROM generate_series(1, 2000) i"
    )
    got = dump(etcd, kp + "b/")
    assert got == {f"{kp}b/{i:05d}": f"v{i}" for i in range(1, 2001)}
    assert db.scalar("SELECT count(*) FROM bulk") == 2000
    # the same into a table in the default mode: 54000 at row 129, nothing
    # written, and the HINT names the command that marks the table
    e = expect_error(
        c,
        f"INSERT INTO plain SELECT {lit(kp + 'p/')} || i, 'v' FROM generate_series(1, 2000) i",
        sqlstate="54000",
    )
    hint = e.diag.message_hint or ""
    assert "ALTER FOREIGN TABLE public.plain OPTIONS (ADD commit_mode 'statement')" in hint, hint
    assert count(etcd, kp + "p/") == 0
    # a table with the option set to 'transaction': SET, not ADD
    db.execute("ALTER FOREIGN TABLE plain OPTIONS (ADD commit_mode 'transaction')")
    e = expect_error(
        c,
        f"INSERT INTO plain SELECT {lit(kp + 'p/')} || i, 'v' FROM generate_series(1, 200) i",
        sqlstate="54000",
    )
    assert "ALTER FOREIGN TABLE public.plain OPTIONS (SET commit_mode 'statement')" in (
        e.diag.message_hint or ""
    ), err_text(e)
    assert count(etcd, kp + "p/") == 0
    # marked once, it loads
    db.execute("ALTER FOREIGN TABLE plain OPTIONS (SET commit_mode 'statement')")
    c.execute(f"INSERT INTO plain SELECT {lit(kp + 'p/')} || i, 'v' FROM generate_series(1, 300) i")
    assert count(etcd, kp + "p/") == 300


def test_bulk_copy_of_100k_lines(db, etcd, kp):
    db.create_server("s", etcd.endpoint)
    db.create_table("bulk", "s", columns=COLS, prefix=kp, commit_mode="statement")
    n = 100_000
    data = "".join(f"{kp}{i:06d}\tvalue {i}\n" for i in range(n))
    with db.conn.cursor() as cur:
        with cur.copy("COPY bulk (key, value) FROM STDIN") as cp:
            cp.write(data)
        assert cur.rowcount == n
    got = dump(etcd, kp)
    assert len(got) == n
    for i in (0, 1, 127, 128, 129, 4096, 50_000, 99_998, n - 1):
        assert got[f"{kp}{i:06d}"] == f"value {i}"
    assert got == {f"{kp}{i:06d}": f"value {i}" for i in range(n)}


def test_copy_into_a_default_table_is_refused_whole(db, etcd, kp):
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", columns=COLS, prefix=kp)
    data = "".join(f"{kp}{i:04d}\tv\n" for i in range(500))
    try:
        with db.conn.cursor() as cur:
            with cur.copy("COPY t (key, value) FROM STDIN") as cp:
                cp.write(data)
    except Exception as e:  # psycopg.Error
        assert getattr(e, "sqlstate", None) == "54000", err_text(e)
        assert "ALTER FOREIGN TABLE public.t OPTIONS (ADD commit_mode 'statement')" in err_text(e)
    else:
        raise AssertionError("COPY of 500 lines in 'transaction' mode succeeded")
    assert count(etcd, kp) == 0


def test_server_option_and_precedence(db, etcd, kp):
    db.create_server("s", etcd.endpoint, commit_mode="statement")
    db.create_table("t", "s", columns=COLS, prefix=kp + "t/")
    db.create_table("tt", "s", columns=COLS, prefix=kp + "tt/", commit_mode="transaction")
    c = db.conn
    ins_t = f"INSERT INTO t VALUES ({lit(kp + 't/x')}, 'v')"
    ins_tt = f"INSERT INTO tt VALUES ({lit(kp + 'tt/x')}, 'v')"
    assert explain_mode(db, ins_t) == "statement (server option)"
    assert explain_mode(db, ins_tt) == "transaction (table option)"
    # server option: written at once, ROLLBACK does not undo it
    c.execute("BEGIN")
    c.execute(ins_t)
    assert etcd.get(kp + "t/x") == b"v"
    # table option overrides the server's: pending until COMMIT
    c.execute(ins_tt)
    assert etcd.get(kp + "tt/x") is None
    c.execute("ROLLBACK")
    assert etcd.get(kp + "t/x") == b"v"
    assert etcd.get(kp + "tt/x") is None
    # the session's SET overrides both, and RESET gives them back
    c.execute("SET etcd_fdw.commit_mode = 'transaction'")
    assert explain_mode(db, ins_t) == "transaction (SET etcd_fdw.commit_mode)"
    c.execute("BEGIN")
    c.execute(f"INSERT INTO t VALUES ({lit(kp + 't/y')}, 'v')")
    assert etcd.get(kp + "t/y") is None
    c.execute("ROLLBACK")
    assert etcd.get(kp + "t/y") is None
    # with the SET, the HINT of a transaction too large says SET
    e = expect_error(
        c, f"INSERT INTO t SELECT {lit(kp + 't/b')} || i, 'v' FROM generate_series(1, 200) i",
        sqlstate="54000")
    assert "SET etcd_fdw.commit_mode = 'statement'" in (e.diag.message_hint or ""), err_text(e)
    assert count(etcd, kp + "t/b") == 0
    c.execute("SET etcd_fdw.commit_mode = 'statement'")
    assert explain_mode(db, ins_tt) == "statement (SET etcd_fdw.commit_mode)"
    c.execute("BEGIN")
    c.execute(ins_tt)
    assert etcd.get(kp + "tt/x") == b"v"
    c.execute("ROLLBACK")
    assert etcd.get(kp + "tt/x") == b"v"
    # SET LOCAL counts as set, for the transaction only
    c.execute("RESET etcd_fdw.commit_mode")
    c.execute("BEGIN")
    c.execute("SET LOCAL etcd_fdw.commit_mode = 'transaction'")
    assert explain_mode(db, ins_t) == "transaction (SET etcd_fdw.commit_mode)"
    c.execute("COMMIT")
    assert explain_mode(db, ins_t) == "statement (server option)"
    # ALTER DATABASE ... SET counts as set (a new session)
    db.execute(f"ALTER DATABASE {db.name} SET etcd_fdw.commit_mode = 'transaction'")
    c2 = db.connect()
    c2.execute("LOAD 'etcd_fdw'")
    assert explain_mode(db, ins_t, conn=c2) == (
        "transaction (etcd_fdw.commit_mode of ALTER ROLE/DATABASE ... SET)")
    # ... and a session's RESET goes back to that value, still "set"
    c2.execute("SET etcd_fdw.commit_mode = 'statement'")
    c2.execute("RESET etcd_fdw.commit_mode")
    assert explain_mode(db, ins_t, conn=c2).startswith("transaction (etcd_fdw.commit_mode of ALTER")
    db.execute(f"ALTER DATABASE {db.name} RESET etcd_fdw.commit_mode")
    # no option anywhere: the default
    db.execute("ALTER SERVER s OPTIONS (DROP commit_mode)")
    assert explain_mode(db, ins_t) == "transaction (default)"
    assert explain_mode(db, "UPDATE t SET value = 'w'") == "transaction (default)"
    assert explain_mode(db, "DELETE FROM tt") == "transaction (table option)"


def test_functions_follow_the_server_option(db, etcd, kp):
    db.create_server("s", etcd.endpoint, commit_mode="statement")
    c = db.conn
    c.execute("BEGIN")
    assert db.scalar("SELECT etcd_put('s', %s, 'f')", (kp + "f",)) > 0  # a revision: sent now
    assert etcd.get(kp + "f") == b"f"
    c.execute("ROLLBACK")
    assert etcd.get(kp + "f") == b"f"
    db.execute("ALTER SERVER s OPTIONS (SET commit_mode 'transaction')")
    c.execute("BEGIN")
    assert db.scalar("SELECT etcd_put('s', %s, 'g')", (kp + "g",)) is None  # deferred
    c.execute("ROLLBACK")
    assert etcd.get(kp + "g") is None


def test_mixed_transaction(db, etcd, kp):
    """One table in each mode in one transaction: the statement table's
    writes are in etcd at once and stay after ROLLBACK; the transaction
    table's wait for COMMIT.  Each table's scans see what its mode means:
    pending writes for the transaction table, etcd's state for the
    statement table."""
    etcd.put_many({kp + "s/old": "1", kp + "x/old": "1"})
    db.create_server("s", etcd.endpoint)
    db.create_table("st", "s", columns=COLS, prefix=kp + "s/", commit_mode="statement")
    db.create_table("xt", "s", columns=COLS, prefix=kp + "x/")
    # a table over both ranges in 'statement' mode: it shows etcd as it is
    db.create_table("allst", "s", columns=COLS, prefix=kp, commit_mode="statement")
    c = db.conn
    for end in ("ROLLBACK", "COMMIT"):
        c.execute("BEGIN")
        c.execute(f"INSERT INTO st VALUES ({lit(kp + 's/' + end)}, 'st')")
        c.execute(f"INSERT INTO xt VALUES ({lit(kp + 'x/' + end)}, 'xt')")
        c.execute(f"UPDATE xt SET value = 'changed' WHERE key = {lit(kp + 'x/old')}")
        c.execute(f"DELETE FROM st WHERE key = {lit(kp + 's/old')}" if end == "ROLLBACK" else "SELECT 1")
        # etcd: the statement table's writes, not the transaction table's
        assert etcd.get(kp + "s/" + end) == b"st"
        assert etcd.get(kp + "x/" + end) is None
        assert etcd.get(kp + "x/old") == b"1"
        # scans: xt sees its pending writes, st and allst etcd's state
        assert dict(db.rows("SELECT key, value FROM xt")) == {
            kp + "x/old": "changed", kp + "x/" + end: "xt",
        }
        assert dict(db.rows("SELECT key, value FROM st")) == dump(etcd, kp + "s/")
        assert dict(db.rows("SELECT key, value FROM allst")) == dump(etcd, kp)
        assert db.scalar("SELECT count(*) FROM allst") == len(dump(etcd, kp))
        c.execute(end)
        assert etcd.get(kp + "s/" + end) == b"st", "statement mode: not undone"
        if end == "ROLLBACK":
            assert etcd.get(kp + "x/ROLLBACK") is None
            assert etcd.get(kp + "x/old") == b"1"
            assert etcd.get(kp + "s/old") is None, "the DELETE of a statement table stays"
        else:
            assert etcd.get(kp + "x/COMMIT") == b"xt"
            assert etcd.get(kp + "x/old") == b"changed"
    # a savepoint rolled back: only the transaction table's writes go
    c.execute("BEGIN")
    c.execute("SAVEPOINT a")
    c.execute(f"INSERT INTO st VALUES ({lit(kp + 's/sp')}, 'st')")
    c.execute(f"INSERT INTO xt VALUES ({lit(kp + 'x/sp')}, 'xt')")
    c.execute("ROLLBACK TO SAVEPOINT a")
    c.execute("COMMIT")
    assert etcd.get(kp + "s/sp") == b"st"
    assert etcd.get(kp + "x/sp") is None


def test_bad_option_values(db, etcd, kp):
    c = db.conn
    for bad in ("", "stmt", "autocommit", "transactions"):
        e = expect_error(
            c, f"CREATE SERVER bad FOREIGN DATA WRAPPER etcd_fdw OPTIONS (connstr {lit(etcd.endpoint)}, "
               f"commit_mode {lit(bad)})", sqlstate="HV024")
        assert 'option "commit_mode"' in str(e) and "transaction or statement" in err_text(e), err_text(e)
    db.create_server("s", etcd.endpoint)
    e = expect_error(
        c, "CREATE FOREIGN TABLE t (key text, value text) SERVER s "
           "OPTIONS (rowid_column 'key', commit_mode 'never')", sqlstate="HV024")
    assert 'option "commit_mode"' in str(e), err_text(e)
    db.create_table("t", "s", columns=COLS, prefix=kp)
    expect_error(c, "ALTER FOREIGN TABLE t OPTIONS (ADD commit_mode 'sometimes')", sqlstate="HV024")
    expect_error(c, "ALTER SERVER s OPTIONS (ADD commit_mode 'Statements')", sqlstate="HV024")
    # spelling as the other enum options: case and spaces do not matter
    c.execute("ALTER FOREIGN TABLE t OPTIONS (ADD commit_mode ' Statement ')")
    assert explain_mode(db, "DELETE FROM t") == "statement (table option)"
    # not an option of user mappings
    expect_error(c, "CREATE USER MAPPING FOR CURRENT_USER SERVER s OPTIONS (commit_mode 'statement')",
                 sqlstate="HV00D")


def test_empty_range_end_is_refused(db, etcd, kp):
    db.create_server("s", etcd.endpoint)
    c = db.conn
    for opts in ("range_end ''", f"key {lit(kp)}, range_end ''"):
        e = expect_error(
            c, f"CREATE FOREIGN TABLE t (key text, value text) SERVER s OPTIONS (rowid_column 'key', {opts})",
            sqlstate="HV024")
        text = err_text(e)
        assert 'option "range_end"' in text and "non-empty" in text and "prefix" in text, text
    db.create_table("t", "s", columns=COLS, key=kp + "a", range_end=kp + "b")
    expect_error(c, "ALTER FOREIGN TABLE t OPTIONS (SET range_end '')", sqlstate="HV024")
    # key '' is refused as before
    expect_error(c, "ALTER FOREIGN TABLE t OPTIONS (SET key '')", sqlstate="HV024")


def test_long_refused_values_are_cut(db, etcd, kp):
    db.create_server("s", etcd.endpoint)
    c = db.conn
    long = "z" * (100 * 1024)
    for opt in ("keys_only", "commit_mode", "consistency", "revision"):
        e = expect_error(
            c, f"CREATE FOREIGN TABLE t (key text) SERVER s OPTIONS (rowid_column 'key', {opt} {lit(long)})",
            sqlstate="HV024")
        msg = e.diag.message_primary
        assert msg == f'invalid value for option "{opt}": "{"z" * 64}..."', msg[:200]
    e = expect_error(c, f"ALTER SERVER s OPTIONS (ADD connect_timeout {lit(long)})", sqlstate="HV024")
    assert len(e.diag.message_primary) < 200, e.diag.message_primary[:300]
    # range_end below key: the value is cut too
    e = expect_error(
        c, f"CREATE FOREIGN TABLE t (key text) SERVER s OPTIONS (rowid_column 'key', key 'zzzzzz{'z' * 100}', "
           f"range_end {lit('a' * 100_000)})", sqlstate="HV024")
    assert e.diag.message_primary.endswith('"' + "a" * 64 + '..."'), e.diag.message_primary[:300]
    # short values are shown whole
    e = expect_error(
        c, "CREATE FOREIGN TABLE t (key text) SERVER s OPTIONS (rowid_column 'key', keys_only 'maybe')",
        sqlstate="HV024")
    assert e.diag.message_primary == 'invalid value for option "keys_only": "maybe"'


def test_server_names_in_a_latin1_database(pg, etcd, kp):
    """etcd_fdw_get_connections() returns the server's (and role's) name as
    text in the database encoding."""
    name = f"conn_latin1_{kp.strip('/')}"
    admin = pg.connect("postgres")
    admin.execute(
        f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'LATIN1' "
        "LC_COLLATE 'C' LC_CTYPE 'C'"
    )
    try:
        with pg.connect(name) as c:
            c.execute("SET client_encoding = 'UTF8'")
            c.execute("CREATE EXTENSION etcd_fdw")
            c.execute(
                "CREATE FOREIGN DATA WRAPPER etcd_fdw "
                "HANDLER etcd_fdw_handler VALIDATOR etcd_fdw_validator"
            )
            c.execute(f"CREATE SERVER \"sérveur\" FOREIGN DATA WRAPPER etcd_fdw OPTIONS (connstr '{etcd.endpoint}')")
            c.execute("CREATE ROLE \"rôle_é\" SUPERUSER")
            c.execute("CREATE USER MAPPING FOR \"rôle_é\" SERVER \"sérveur\"")
            c.execute("CREATE FOREIGN TABLE t (key text, value text) SERVER \"sérveur\" "
                      f"OPTIONS (rowid_column 'key', prefix {lit(kp)})")
            c.execute("SET ROLE \"rôle_é\"")
            assert c.execute("SELECT count(*) FROM t").fetchone() == (0,)
            c.execute("RESET ROLE")
            rows = c.execute(
                "SELECT server_name, user_name, server_name = 'sérveur', user_name = 'rôle_é',"
                " octet_length(convert_to(server_name, 'LATIN1'))"
                " FROM etcd_fdw_get_connections()"
            ).fetchall()
            assert rows == [("sérveur", "rôle_é", True, True, 7)], rows
            # and the functions that take a server name find it
            assert c.execute("SELECT etcd_get('sérveur', %s)", (kp + "none",)).fetchone() == (None,)
            c.execute("SELECT etcd_fdw_disconnect_all()")
            c.execute("DROP OWNED BY \"rôle_é\"")
            c.execute("DROP ROLE \"rôle_é\"")
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute("DROP ROLE IF EXISTS \"rôle_é\"")
        admin.close()
