"""A database whose encoding is not UTF-8 (LATIN1).

etcd keys and values are UTF-8 bytes; text columns convert them to the
database encoding on the way in and back on the way out.  Byte order then
differs from the database's, so only equality-style predicates are pushed.
"""

import itertools

import psycopg
import pytest

from harness import expect_error

_n = itertools.count()


@pytest.fixture
def latin1(pg):
    name = f"latin1_{next(_n)}"
    admin = pg.connect("postgres")
    admin.execute(
        f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'LATIN1' "
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
