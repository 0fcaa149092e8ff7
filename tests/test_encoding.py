"""A database whose encoding is not UTF-8 (LATIN1).

etcd keys and values are UTF-8 bytes; text columns convert them to the
database encoding on the way in and back on the way out.  Byte order then
differs from the database's, so only equality-style predicates are pushed.
"""

import contextlib
import itertools

import psycopg
import pytest

from harness import expect_error

_n = itertools.count()


@contextlib.contextmanager
def _database(pg, encoding):
    """A database of `encoding` with the extension and wrapper; yields a
    connection whose client encoding is UTF-8."""
    name = f"{encoding.lower()}_{next(_n)}"
    admin = pg.connect("postgres")
    admin.execute(
        f"CREATE DATABASE {name} TEMPLATE template0 ENCODING '{encoding}' "
        "LC_COLLATE 'C' LC_CTYPE 'C'"
    )
    conn = pg.connect(name)
    conn.execute("SET client_encoding = 'UTF8'")
    conn.execute("CREATE EXTENSION etcd_fdw")
    conn.execute(
        "CREATE FOREIGN DATA WRAPPER etcd_fdw HANDLER etcd_fdw_handler VALIDATOR etcd_fdw_validator"
    )
    try:
        yield conn
    finally:
        conn.close()
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        admin.close()


@pytest.fixture
def latin1(pg):
    with _database(pg, "LATIN1") as conn:
        yield conn


@pytest.fixture(params=["UTF8", "LATIN1", "SQL_ASCII"])
def any_encoding(pg, request):
    with _database(pg, request.param) as conn:
        yield conn


def plan(conn, sql):
    return "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql).fetchall())


def test_latin1_database_converts_and_pushes_only_equality(latin1, etcd, kp):
    c = latin1
    c.execute(f"CREATE SERVER s FOREIGN DATA WRAPPER etcd_fdw OPTIONS (connstr '{etcd.endpoint}')")
    c.execute(
        f"CREATE FOREIGN TABLE t (key text, value text) SERVER s "
        f"OPTIONS (rowid_column 'key', prefix '{kp}')"
    )
    etcd.put(kp + "café", "crème brûlée")
    etcd.put(kp + "b", "plain")
    assert c.execute("SELECT key, value FROM t ORDER BY key").fetchall() == [
        (kp + "b", "plain"),
        (kp + "café", "crème brûlée"),
    ]
    # equality is pushed (converted to UTF-8 for etcd); EXPLAIN escapes
    # non-ASCII characters in a non-UTF-8 database
    q = f"SELECT value FROM t WHERE key = '{kp}café'"
    assert f"etcd Range: key = '{kp}caf\\u{{00e9}}'" in plan(c, q), plan(c, q)
    assert c.execute(q).fetchall() == [("crème brûlée",)]
    # a range is not pushed (LATIN1 byte order is not etcd's), yet correct
    q = f"SELECT key FROM t WHERE key > '{kp}b'"
    assert "Filter:" in plan(c, q)
    assert c.execute(q).fetchall() == [(kp + "café",)]
    # writes convert back to UTF-8
    c.execute(f"INSERT INTO t VALUES ('{kp}über', 'ñ')")
    assert etcd.get(kp + "über") == "ñ".encode()
    c.execute(f"UPDATE t SET value = 'é' WHERE key = '{kp}über'")
    assert etcd.get(kp + "über") == "é".encode()
    # messages name the key, with non-ASCII characters escaped
    e = expect_error(c, f"INSERT INTO t VALUES ('{kp}café', 'again')", sqlstate="23505")
    assert f"{kp}caf\\u{{00e9}}" in str(e), str(e)
    # a character LATIN1 cannot hold is an error, and the session goes on
    etcd.put(kp + "日本", "x")
    expect_error(c, "SELECT key FROM t", sqlstate="22P05")
    assert c.execute("SELECT 1").fetchone() == (1,)
    assert c.execute(f"SELECT count(*) FROM t WHERE key = '{kp}b'").fetchone() == (1,)


def test_empty_values_and_zero_bytes_in_every_encoding(any_encoding, etcd, kp):
    """Empty strings convert by length (the review's crash: an empty value
    in a LATIN1 database was read as a C string); zero bytes are refused
    for text and kept exactly for bytea, reads and writes alike."""
    c = any_encoding
    c.execute(f"CREATE SERVER s FOREIGN DATA WRAPPER etcd_fdw OPTIONS (connstr '{etcd.endpoint}')")
    c.execute(f"CREATE FOREIGN TABLE e (key text, value text) SERVER s "
              f"OPTIONS (rowid_column 'key', prefix '{kp}t/')")
    c.execute(f"CREATE FOREIGN TABLE j (key text, value jsonb) SERVER s "
              f"OPTIONS (rowid_column 'key', prefix '{kp}j/')")
    c.execute(f"CREATE FOREIGN TABLE b (key bytea, value bytea) SERVER s "
              f"OPTIONS (rowid_column 'key', prefix '{kp}b/')")
    etcd.put(kp + "t/empty", "")
    etcd.put(kp + "t/plain", "abc")
    # reads: the whole table, and a lookup
    assert c.execute("SELECT key, length(value), value = '' FROM e ORDER BY key").fetchall() == [
        (kp + "t/empty", 0, True), (kp + "t/plain", 3, False)]
    assert c.execute(f"SELECT value FROM e WHERE key = '{kp}t/empty'").fetchone() == ("",)
    # writes of empty values send empty values
    c.execute(f"INSERT INTO e VALUES ('{kp}t/new', '')")
    assert etcd.get(kp + "t/new") == b""
    c.execute(f"UPDATE e SET value = '' WHERE key = '{kp}t/plain'")
    assert etcd.get(kp + "t/plain") == b""
    c.execute(f"INSERT INTO e VALUES ('{kp}t/full', 'x') RETURNING value")
    c.execute(f"UPDATE e SET value = value || '' WHERE key = '{kp}t/full'")
    assert etcd.get(kp + "t/full") == b"x"
    # an empty value through a type's input function is that type's error
    etcd.put(kp + "j/empty", "")
    expect_error(c, "SELECT value FROM j", sqlstate="22P02")
    c.execute(f"INSERT INTO j VALUES ('{kp}j/x', '\"\"')")
    assert etcd.get(kp + "j/x") == b'""'
    # zero bytes: text refuses them (naming the key), bytea keeps them
    etcd.put(kp + "t/zero", b"a\x00b")
    expect_error(c, f"SELECT value FROM e WHERE key = '{kp}t/zero'", sqlstate="22021",
                 contains=f"{kp}t/zero")
    etcd.put(kp + "b/zero", b"\x00")
    etcd.put(kp + "b/empty", b"")
    rows = c.execute("SELECT key, value FROM b ORDER BY key").fetchall()
    assert [(bytes(k), bytes(v)) for k, v in rows] == [
        ((kp + "b/empty").encode(), b""), ((kp + "b/zero").encode(), b"\x00")]
    c.execute("INSERT INTO b VALUES (%s, %s), (%s, %s)",
              ((kp + "b/w0").encode(), b"\x00\xff\x00", (kp + "b/we").encode(), b""))
    assert etcd.get(kp + "b/w0") == b"\x00\xff\x00"
    assert etcd.get(kp + "b/we") == b""
    # an empty prefix is the whole keyspace; empty keys are refused
    c.execute("CREATE FOREIGN TABLE allk (key text, value text) SERVER s "
              "OPTIONS (rowid_column 'key', prefix '')")
    assert c.execute(f"SELECT count(*) FROM allk WHERE key LIKE '{kp}t/%'").fetchone() == (5,)
    expect_error(c, "INSERT INTO allk VALUES ('', 'v')", sqlstate="23514")
    assert c.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("encoding", ["LATIN1", "SQL_ASCII"])
def test_non_ascii_range_options_in_a_non_utf8_database(pg, etcd, kp, encoding):
    """prefix/key/range_end are converted from the database encoding to
    UTF-8 like datums: the table reads and accepts its own keys."""
    with _database(pg, encoding) as c:
        c.execute(f"CREATE SERVER s FOREIGN DATA WRAPPER etcd_fdw OPTIONS (connstr '{etcd.endpoint}')")
        c.execute(f"CREATE FOREIGN TABLE p (key text, value text) SERVER s "
                  f"OPTIONS (rowid_column 'key', prefix '{kp}café/')")
        c.execute(f"CREATE FOREIGN TABLE k (key text, value text) SERVER s "
                  f"OPTIONS (rowid_column 'key', key '{kp}café/1')")
        c.execute(f"CREATE FOREIGN TABLE r (key text, value text) SERVER s "
                  f"OPTIONS (rowid_column 'key', key '{kp}café/', range_end '{kp}café/2')")
        etcd.put(kp + "café/1", "one")
        etcd.put(kp + "cafe/1", "not mine")
        etcd.put(kp + "café/3", "three")
        assert c.execute("SELECT key, value FROM p ORDER BY key").fetchall() == [
            (kp + "café/1", "one"), (kp + "café/3", "three")]
        assert c.execute("SELECT key, value FROM k").fetchall() == [(kp + "café/1", "one")]
        assert c.execute("SELECT key FROM r").fetchall() == [(kp + "café/1",)]
        # the table accepts keys of its own range, and only those
        c.execute(f"INSERT INTO p VALUES ('{kp}café/2', 'two')")
        assert etcd.get(kp + "café/2") == b"two"
        expect_error(c, f"INSERT INTO p VALUES ('{kp}cafe/2', 'x')", sqlstate="23514")
        c.execute(f"UPDATE k SET value = 'uno'")
        assert etcd.get(kp + "café/1") == b"uno"
        plan = "\n".join(r[0] for r in c.execute("EXPLAIN SELECT * FROM p").fetchall())
        assert "etcd Range: prefix" in plan, plan
