"""The extension's upgrade path: ALTER EXTENSION etcd_fdw UPDATE from the
previous release (0.1.0, its install script kept in sql/) to the current
one, through the update scripts in sql/.

An updated installation must equal a fresh CREATE EXTENSION: same member
objects, same function definitions.  A new SQL object missing from the update
script fails test_update_equals_fresh_install.
"""

from harness import TestDatabase, run_spec_setup

PREVIOUS = "0.1.0"


def _members(conn):
    """The extension's member objects, with each function's definition."""
    return sorted(
        conn.execute(
            """
            SELECT pg_describe_object(d.classid, d.objid, d.objsubid),
                   CASE WHEN d.classid = 'pg_proc'::regclass
                        THEN pg_get_functiondef(d.objid) END
            FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid
            WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
              AND e.extname = 'etcd_fdw'
            """
        ).fetchall()
    )


def _current(conn):
    return conn.execute(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'etcd_fdw'"
    ).fetchone()[0]


def test_update_equals_fresh_install(pg, bare_db):
    c = bare_db.conn
    current = _current(c)
    assert current != PREVIOUS
    c.execute(f"CREATE EXTENSION etcd_fdw VERSION '{PREVIOUS}'")
    assert c.execute("SELECT extversion FROM pg_extension WHERE extname = 'etcd_fdw'").fetchone() == (PREVIOUS,)
    old = _members(c)
    c.execute("ALTER EXTENSION etcd_fdw UPDATE")
    assert c.execute("SELECT extversion FROM pg_extension WHERE extname = 'etcd_fdw'").fetchone() == (current,)
    assert c.execute("SELECT etcd_fdw_version()").fetchone() == (current,)
    updated = _members(c)
    assert updated != old, "the update script changed nothing"

    fresh_db = TestDatabase(pg, bare_db.name[:50] + "_fresh")
    try:
        fresh_db.execute("CREATE EXTENSION etcd_fdw")
        assert _members(fresh_db.conn) == updated
    finally:
        fresh_db.drop()


def test_spec_example_before_and_after_update(bare_db, etcd_fresh):
    """Tables made under the previous version keep working, with the new
    library, before and after the update."""
    etcd_fresh.ctl("put", "bar", "baz")
    etcd_fresh.ctl("put", "foo", "bar")
    c = bare_db.conn
    c.execute(f"CREATE EXTENSION etcd_fdw VERSION '{PREVIOUS}'")
    c.execute("CREATE foreign data wrapper etcd_fdw handler etcd_fdw_handler validator etcd_fdw_validator")
    c.execute(f"CREATE SERVER my_etcd_server foreign data wrapper etcd_fdw options (connstr '{etcd_fresh.endpoint}')")
    c.execute("CREATE foreign table test (key text, value text) server my_etcd_server options(rowid_column 'key')")
    assert c.execute("SELECT * FROM test").fetchall() == [("bar", "baz"), ("foo", "bar")]
    c.execute("ALTER EXTENSION etcd_fdw UPDATE")
    c.execute("UPDATE test SET value = 'qux' WHERE key = 'foo'")
    assert c.execute("SELECT * FROM test").fetchall() == [("bar", "baz"), ("foo", "qux")]
    assert etcd_fresh.get("foo") == b"qux"


def test_spec_example_fresh(bare_db, etcd_fresh):
    etcd_fresh.ctl("put", "bar", "baz")
    run_spec_setup(bare_db.conn, etcd_fresh.endpoint)
    assert bare_db.rows("SELECT * FROM test") == [("bar", "baz")]
