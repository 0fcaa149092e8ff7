"""Values that do not convert to their column's type, and the table option
`invalid_values` (README: "A value that does not convert").

* the default ('error'): a query reading `value` fails with the conversion's
  SQLSTATE (22P02 for jsonb and integer, 22021 for bytes that are not UTF-8
  in a text column) and a CONTEXT line naming key, column and table; queries
  that do not read `value` are unaffected;
* 'null' (PostgreSQL 16 and later): such a value is NULL, with a WARNING
  naming the key, the column and the table (and the conversion's message as
  DETAIL); valid values read as always; keys still raise;
* on PostgreSQL 15 (no soft input errors) CREATE and ALTER FOREIGN TABLE
  refuse 'null' with 0A000 saying it needs 16 or later;
* option values other than 'error'/'null' are HV024 naming the option;
* writes (INSERT, UPDATE of another column, DELETE, RETURNING) are
  unaffected; an UPDATE that does not set `value` keeps etcd's bytes;
* SQL of the README's troubleshooting part finds the offending keys.
"""

from __future__ import annotations

import psycopg
import pytest

import harness
from harness import err_text, expect_error

BAD_JSON = b"{not json"


def soft_errors():
    return harness.PG_MAJOR >= 16


needs_16 = pytest.mark.skipif("not soft_errors()", reason="invalid_values 'null' needs PostgreSQL 16+")
only_15 = pytest.mark.skipif("soft_errors()", reason="the refusal of 'null' is PostgreSQL 15's")


class Notice:
    """A copy of a notice's fields (psycopg's Diagnostic is only valid
    during the handler)."""

    FIELDS = ("severity_nonlocalized", "sqlstate", "message_primary", "message_detail",
              "message_hint", "context")

    def __init__(self, diag):
        for f in self.FIELDS:
            setattr(self, f, getattr(diag, f))


class Notices:
    """The notices (WARNINGs) a connection receives."""

    def __init__(self, conn):
        self.conn = conn
        self.got = []
        conn.add_notice_handler(self._handle)

    def _handle(self, diag):
        self.got.append(Notice(diag))

    def warnings(self):
        return [d for d in self.got if d.severity_nonlocalized == "WARNING"]

    def clear(self):
        self.got.clear()


def load(db, etcd, kp, **topts):
    """Under kp: a/1..a/3 good JSON, a/bad not JSON; n/1, n/2 integers and
    n/x not one; u/ok text and u/bad bytes that are not UTF-8."""
    etcd.put_many([
        (kp + "a/1", b'{"n": 1}'), (kp + "a/2", b"[2]"), (kp + "a/3", b'"three"'),
        (kp + "a/bad", BAD_JSON),
        (kp + "n/1", b"1"), (kp + "n/2", b"22"), (kp + "n/x", b"x2"),
        (kp + "u/ok", b"fine"), (kp + "u/bad", b"ab\xffcd"),
    ])
    db.create_server("s", etcd.endpoint)
    db.create_table("j", "s", columns="key text, value jsonb", prefix=kp + "a/", **topts)
    db.create_table("i", "s", columns="key text, value integer", prefix=kp + "n/", **topts)
    db.create_table("u", "s", columns="key text, value text", prefix=kp + "u/", **topts)


def test_default_is_an_error_naming_the_key(db, etcd, kp):
    load(db, etcd, kp)
    c = db.conn
    for sql, state, key, table in (
        ("SELECT key, value FROM j", "22P02", kp + "a/bad", "j"),
        ("SELECT value->>'n' FROM j WHERE key > ''", "22P02", kp + "a/bad", "j"),
        ("SELECT sum(value) FROM i", "22P02", kp + "n/x", "i"),
        ("SELECT value FROM u", "22021", kp + "u/bad", "u"),
    ):
        e = expect_error(c, sql, sqlstate=state)
        assert e.diag.context and f'key "{key}", column "value" of foreign table "{table}"' in e.diag.context, err_text(e)
    # the same with the option spelled out
    db.execute("ALTER FOREIGN TABLE j OPTIONS (ADD invalid_values 'error')")
    e = expect_error(c, "SELECT value FROM j", sqlstate="22P02")
    assert f'key "{kp}a/bad"' in e.diag.context, err_text(e)
    # queries that do not read value are unaffected
    assert db.scalar("SELECT count(*) FROM j") == 4
    assert [r[0] for r in db.rows("SELECT key FROM j ORDER BY key")] == [
        kp + "a/1", kp + "a/2", kp + "a/3", kp + "a/bad"]
    assert db.scalar(f"SELECT value FROM j WHERE key = '{kp}a/1'") == {"n": 1}


@needs_16
def test_null_reads_around_invalid_values(db, etcd, kp):
    load(db, etcd, kp, invalid_values="null")
    n = Notices(db.conn)
    assert db.rows("SELECT key, value FROM j ORDER BY key") == [
        (kp + "a/1", {"n": 1}), (kp + "a/2", [2]), (kp + "a/3", "three"), (kp + "a/bad", None)]
    w = n.warnings()
    assert len(w) == 1, [d.message_primary for d in n.got]
    assert w[0].message_primary == (
        f'invalid value of etcd key "{kp}a/bad" read as NULL: column "value" of foreign table "j"')
    assert w[0].sqlstate == "22P02"
    assert "json" in w[0].message_detail, w[0].message_detail
    assert "invalid_values" in w[0].message_hint
    # an integer column
    n.clear()
    assert db.rows("SELECT key, value FROM i ORDER BY key") == [
        (kp + "n/1", 1), (kp + "n/2", 22), (kp + "n/x", None)]
    w = n.warnings()
    assert [d.message_primary for d in w] == [
        f'invalid value of etcd key "{kp}n/x" read as NULL: column "value" of foreign table "i"']
    assert w[0].sqlstate == "22P02" and "integer" in w[0].message_detail, w[0].message_detail
    assert db.scalar("SELECT sum(value) FROM i") == 23
    # bytes that are not UTF-8 in a text column: a conversion failure too
    n.clear()
    assert db.rows("SELECT key, value FROM u ORDER BY key") == [(kp + "u/bad", None), (kp + "u/ok", "fine")]
    w = n.warnings()
    assert [(d.sqlstate, d.message_primary) for d in w] == [(
        "22021", f'invalid value of etcd key "{kp}u/bad" read as NULL: column "value" of foreign table "u"')]
    assert "not valid UTF-8" in w[0].message_detail
    # WHERE value IS NULL finds them (evaluated locally)
    n.clear()
    assert db.rows("SELECT key FROM j WHERE value IS NULL") == [(kp + "a/bad",)]
    # a point lookup of a good key: no warning
    n.clear()
    assert db.scalar(f"SELECT value FROM j WHERE key = '{kp}a/2'") == [2]
    assert n.warnings() == []


@needs_16
def test_null_keeps_keys_and_writes_unaffected(db, etcd, kp):
    """'null' is about values only; writes go on as before (in both commit
    modes), and an UPDATE that does not set value keeps etcd's bytes."""
    load(db, etcd, kp, invalid_values="null")
    db.create_table("jk", "s", columns="key text, value jsonb, version bigint",
                    prefix=kp + "a/", invalid_values="null")
    n = Notices(db.conn)
    # a key that is not UTF-8 in a text key column still raises
    etcd.put_many([(kp.encode() + b"a/\xfe", b"{}")])
    e = expect_error(db.conn, "SELECT key FROM j", sqlstate="22021")
    assert "foreign table \"j\"" in (e.diag.context or ""), err_text(e)
    db.create_table("jb", "s", columns="key bytea, value jsonb", prefix=kp + "a/",
                    invalid_values="null")
    assert db.scalar("SELECT count(*) FROM jb WHERE value IS NULL") == 1  # only a/bad
    db.execute(f"DELETE FROM jb WHERE key = convert_to('{kp}a/', 'UTF8') || '\\xfe'::bytea")
    for mode in ("statement", "transaction"):
        db.execute(f"SET etcd_fdw.commit_mode = '{mode}'")
        db.execute(f"INSERT INTO j VALUES ('{kp}a/new-{mode}', '{{\"m\": 1}}')")
        assert etcd.get(f"{kp}a/new-{mode}") == b'{"m": 1}'
        got = db.rows(f"UPDATE j SET value = '[9]' WHERE key = '{kp}a/new-{mode}' RETURNING value")
        assert got == [([9],)]
    # an UPDATE that renames the bad key moves its bytes unchanged
    db.execute("SET etcd_fdw.commit_mode = 'statement'")
    n.clear()
    db.execute(f"UPDATE j SET key = '{kp}a/bad2' WHERE key = '{kp}a/bad'")
    assert etcd.get(kp + "a/bad2") == BAD_JSON and etcd.get(kp + "a/bad") is None
    # DELETE ... RETURNING value of the bad key: NULL with a warning, deleted
    n.clear()
    assert db.rows(f"DELETE FROM j WHERE key = '{kp}a/bad2' RETURNING key, value") == [(kp + "a/bad2", None)]
    assert etcd.get(kp + "a/bad2") is None
    assert any(f'"{kp}a/bad2"' in d.message_primary for d in n.warnings()), [d.message_primary for d in n.got]
    # SET value = value on a NULL-read value would write NULL: refused, bytes kept
    etcd.put(kp + "a/bad", BAD_JSON)
    expect_error(db.conn, f"UPDATE j SET value = value WHERE key = '{kp}a/bad'", sqlstate="23502")
    assert etcd.get(kp + "a/bad") == BAD_JSON


def test_option_values_are_validated(db, etcd, kp):
    db.create_server("s", etcd.endpoint)
    for bad in ("skip", "", "NULLS", "true"):
        e = expect_error(
            db.conn,
            f"CREATE FOREIGN TABLE t (key text, value jsonb) SERVER s "
            f"OPTIONS (rowid_column 'key', invalid_values '{bad}')",
            sqlstate="HV024", contains=['"invalid_values"'])
        assert e.diag.message_hint == "Expected error or null.", err_text(e)
    db.create_table("t", "s", columns="key text, value jsonb", prefix=kp)
    expect_error(db.conn, "ALTER FOREIGN TABLE t OPTIONS (ADD invalid_values 'warn')",
                 sqlstate="HV024", contains=['"invalid_values"'])
    # not a server option
    expect_error(db.conn, "ALTER SERVER s OPTIONS (ADD invalid_values 'null')",
                 sqlstate="HV00D", contains=['"invalid_values"'])
    db.execute("ALTER FOREIGN TABLE t OPTIONS (ADD invalid_values 'Error')")


@only_15
def test_null_refused_on_15(db, etcd, kp):
    db.create_server("s", etcd.endpoint)
    e = expect_error(
        db.conn,
        "CREATE FOREIGN TABLE t (key text, value jsonb) SERVER s "
        "OPTIONS (rowid_column 'key', invalid_values 'null')",
        sqlstate="0A000", contains=["invalid_values", "PostgreSQL 16"])
    assert e.diag.message_hint and "'error'" in e.diag.message_hint, err_text(e)
    db.create_table("t", "s", columns="key text, value jsonb", prefix=kp)
    expect_error(db.conn, "ALTER FOREIGN TABLE t OPTIONS (ADD invalid_values 'null')",
                 sqlstate="0A000", contains=["PostgreSQL 16"])
    db.execute("ALTER FOREIGN TABLE t OPTIONS (ADD invalid_values 'error')")
    expect_error(db.conn, "ALTER FOREIGN TABLE t OPTIONS (SET invalid_values 'NULL')",
                 sqlstate="0A000", contains=["PostgreSQL 16"])


@needs_16
def test_readme_finds_offending_keys_16(db, etcd, kp):
    """README troubleshooting, 16+: a text table over the same prefix with
    pg_input_is_valid / IS JSON, and invalid_values 'null' with IS NULL."""
    load(db, etcd, kp)
    db.execute(f"CREATE FOREIGN TABLE j_text (key text, value text) SERVER s "
               f"OPTIONS (rowid_column 'key', prefix '{kp}a/', invalid_values 'null')")
    assert db.rows("SELECT key FROM j_text WHERE NOT pg_input_is_valid(value, 'jsonb')") == [(kp + "a/bad",)]
    assert db.rows("SELECT key FROM j_text WHERE value IS NOT JSON") == [(kp + "a/bad",)]
    # values that are not even text (not UTF-8) are NULL there
    db.execute(f"CREATE FOREIGN TABLE u_text (key text, value text) SERVER s "
               f"OPTIONS (rowid_column 'key', prefix '{kp}u/', invalid_values 'null')")
    assert db.rows("SELECT key FROM u_text WHERE value IS NULL") == [(kp + "u/bad",)]
    # or the typed table itself, read with invalid_values 'null'
    db.execute("ALTER FOREIGN TABLE j OPTIONS (ADD invalid_values 'null')")
    assert db.rows("SELECT key FROM j WHERE value IS NULL") == [(kp + "a/bad",)]


def test_readme_finds_offending_keys_any_major(db, etcd, kp):
    """README troubleshooting, every major (15 too): etcd_get in a plpgsql
    loop with an exception block."""
    load(db, etcd, kp)
    db.execute(f"CREATE FOREIGN TABLE j_keys (key text) SERVER s "
               f"OPTIONS (rowid_column 'key', prefix '{kp}a/')")
    db.execute(FIND_BAD_FUNCTION)
    assert db.rows("SELECT * FROM etcd_bad_values('j_keys', 's', 'jsonb')") == [(kp + "a/bad",)]


# The README's function (kept identical: the test checks the documented SQL).
FIND_BAD_FUNCTION = """
CREATE FUNCTION etcd_bad_values(tbl regclass, srv text, typ regtype)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
  k text;
BEGIN
  FOR k IN EXECUTE format('SELECT key FROM %s', tbl) LOOP
    BEGIN
      EXECUTE format('SELECT $1::%s', typ) USING etcd_get(srv, k);
    EXCEPTION WHEN data_exception THEN
      RETURN NEXT k;
    END;
  END LOOP;
END $$;
"""
