"""IMPORT FOREIGN SCHEMA: the remote schema name is a key prefix; every
distinct segment after it (up to the separator) becomes a foreign table
(key text, value <value_type> [, metadata columns]) with OPTIONS (prefix
'<prefix><segment><separator>', rowid_column 'key').

Checked from PostgreSQL's catalogs (table options, column names and types)
and by reading the imported tables against what etcd holds.  Most tests
share one etcd per version and keep to their own key prefix ``kp``; the
whole-keyspace imports ("/", Kubernetes' /registry/ shape, prefix '') use a
fresh etcd.
"""

from __future__ import annotations


from harness import AUTH_PREFIX, CAROL_PASSWORD, err_text, expect_error, sql_ident, sql_literal


def do_import(db, remote, schema="imp", server="s", clause="", conn=None, **options):
    """IMPORT FOREIGN SCHEMA remote ... INTO schema (created when missing);
    the NOTICEs it sent, as (primary, detail, hint)."""
    c = conn or db.conn
    c.execute(f"CREATE SCHEMA IF NOT EXISTS {sql_ident(schema)}")
    notices = []

    def handler(d):
        notices.append((d.message_primary or "", d.message_detail or "", d.message_hint or ""))

    c.add_notice_handler(handler)
    try:
        opts = ""
        if options:
            opts = " OPTIONS (" + ", ".join(f"{k} {sql_literal(v)}" for k, v in options.items()) + ")"
        c.execute(
            f"IMPORT FOREIGN SCHEMA {sql_ident(remote)} {clause} FROM SERVER {sql_ident(server)} "
            f"INTO {sql_ident(schema)}{opts}"
        )
    finally:
        c.remove_notice_handler(handler)
    return notices


def imported(db, schema="imp"):
    """{table name: (sorted table options, [(column, type)], server name)}."""
    out = {}
    for relname, oid, ftoptions, srvname in db.rows(
        """
        SELECT c.relname, c.oid, ft.ftoptions, s.srvname
        FROM pg_foreign_table ft
             JOIN pg_class c ON c.oid = ft.ftrelid
             JOIN pg_foreign_server s ON s.oid = ft.ftserver
        WHERE c.relnamespace = %s::regnamespace
        """,
        (sql_ident(schema),),
    ):
        cols = db.rows(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (oid,),
        )
        out[relname] = (sorted(ftoptions), cols, srvname)
    return out


TEXT_COLS = [("key", "text"), ("value", "text")]


def opts_of(prefix):
    return sorted([f"prefix={prefix}", "rowid_column=key"])


# --------------------------------------------------------------------------
# the basic shape
# --------------------------------------------------------------------------


def test_import_creates_one_table_per_segment(db, etcd, kp):
    app = f"/{kp}app/"
    etcd.put(app + "users/1", "alice")
    etcd.put(app + "users/2", "bob")
    etcd.put(app + "config/x", "1")
    etcd.put(app + "config/y/z", "deep")
    etcd.put(f"/{kp}other/q", "not imported")
    db.create_server("s", etcd.endpoint)
    assert do_import(db, app) == []
    assert imported(db) == {
        "users": (opts_of(app + "users/"), TEXT_COLS, "s"),
        "config": (opts_of(app + "config/"), TEXT_COLS, "s"),
    }
    assert db.rows("SELECT key, value FROM imp.users") == [
        (app + "users/1", "alice"),
        (app + "users/2", "bob"),
    ]
    assert db.rows("SELECT key, value FROM imp.config") == [
        (app + "config/x", "1"),
        (app + "config/y/z", "deep"),
    ]
    # rowid_column makes the imported tables writable like hand-made ones.
    db.execute("INSERT INTO imp.users VALUES (%s, 'carol')", (app + "users/3",))
    assert etcd.get(app + "users/3") == b"carol"
    db.execute("UPDATE imp.users SET value = 'Bob' WHERE key = %s", (app + "users/2",))
    assert etcd.get(app + "users/2") == b"Bob"
    # A second import into another schema sees the new state too.
    do_import(db, app, schema="imp2")
    assert db.scalar("SELECT count(*) FROM imp2.users") == 3


def test_limit_to_and_except(db, etcd, kp):
    app = f"/{kp}app/"
    for t in ("users", "config", "jobs"):
        etcd.put(f"{app}{t}/1", t)
    db.create_server("s", etcd.endpoint)
    do_import(db, app, schema="lim", clause="LIMIT TO (users, jobs, nosuch)")
    assert sorted(imported(db, "lim")) == ["jobs", "users"]
    do_import(db, app, schema="exc", clause="EXCEPT (users)")
    assert sorted(imported(db, "exc")) == ["config", "jobs"]
    assert db.rows("SELECT value FROM exc.jobs") == [("jobs",)]
    # LIMIT TO matches the table name (the segment), not the quoted form.
    etcd.put(f"{app}Mixed Case/1", "m")
    do_import(db, app, schema="mix", clause='LIMIT TO ("Mixed Case")')
    assert list(imported(db, "mix")) == ["Mixed Case"]
    do_import(db, app, schema="none", clause="LIMIT TO (mixed)")
    assert imported(db, "none") == {}


def test_keys_without_a_further_separator_get_a_notice(db, etcd, kp):
    app = f"/{kp}app/"
    etcd.put(app + "flag", "on")
    etcd.put(app + "mode", "x")
    etcd.put(app + "users/1", "u")
    db.create_server("s", etcd.endpoint)
    notices = do_import(db, app)
    assert list(imported(db)) == ["users"]
    assert len(notices) == 1, notices
    primary, detail, hint = notices[0]
    assert primary.startswith("2 etcd keys under prefix"), primary
    assert app in primary and "were not imported" in primary
    assert f'"{app}flag"' in detail and f'"{app}mode"' in detail, detail
    # Many: counted, the first few listed.
    db.execute("DROP SCHEMA imp CASCADE")
    etcd.put_many({f"{app}k{i:03}": "v" for i in range(40)})
    (primary, detail, _), = do_import(db, app)
    assert primary.startswith("42 etcd keys"), primary
    assert detail.count(app) == 5 and "and 37 more" in detail, detail


# --------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------


def test_separator_option(db, etcd, kp):
    app = f"{kp[:-1]}:app:"
    etcd.put(app + "users:1", "a")
    etcd.put(app + "users:2", "b")
    etcd.put(app + "config:x", "c")
    etcd.put(app + "config/not-a-separator", "d")
    db.create_server("s", etcd.endpoint)
    notices = do_import(db, app, separator=":")
    assert imported(db) == {
        "users": (opts_of(app + "users:"), TEXT_COLS, "s"),
        "config": (opts_of(app + "config:"), TEXT_COLS, "s"),
    }
    # "/" is no separator here: that key has no segment.
    assert len(notices) == 1 and f'"{app}config/not-a-separator"' in notices[0][1], notices
    assert db.rows("SELECT key, value FROM imp.users") == [(app + "users:1", "a"), (app + "users:2", "b")]
    # A separator of several characters.
    etcd.put(f"{kp}multi::t1::a", "1")
    etcd.put(f"{kp}multi::t2::b", "2")
    do_import(db, f"{kp}multi::", schema="m", separator="::")
    assert imported(db, "m") == {
        "t1": (opts_of(f"{kp}multi::t1::"), TEXT_COLS, "s"),
        "t2": (opts_of(f"{kp}multi::t2::"), TEXT_COLS, "s"),
    }


def test_value_type_and_metadata_options(db, etcd, kp):
    app = f"/{kp}app/"
    etcd.put(app + "docs/1", '{"a": 1, "b": [true, null]}')
    etcd.put(app + "docs/2", "[]")
    etcd.put(app + "blobs/1", b"\x00\xff\x01")
    db.create_server("s", etcd.endpoint)
    do_import(db, app, schema="j", clause="LIMIT TO (docs)", value_type="jsonb")
    assert imported(db, "j") == {
        "docs": (opts_of(app + "docs/"), [("key", "text"), ("value", "jsonb")], "s"),
    }
    assert db.rows("SELECT value->'b'->>0 FROM j.docs WHERE value ? 'a'") == [("true",)]
    assert db.scalar("SELECT jsonb_typeof(value) FROM j.docs WHERE key = %s", (app + "docs/2",)) == "array"

    do_import(db, app, schema="b", clause="LIMIT TO (blobs)", value_type="bytea")
    assert imported(db, "b")["blobs"][1] == [("key", "text"), ("value", "bytea")]
    assert db.rows("SELECT value FROM b.blobs") == [(b"\x00\xff\x01",)]

    do_import(db, app, schema="md", metadata="true")
    meta = [(c, "bigint") for c in ("create_revision", "mod_revision", "version", "lease")]
    assert imported(db, "md")["docs"] == (opts_of(app + "docs/"), TEXT_COLS + meta, "s")
    etcd.put(app + "docs/2", "[1]")
    kv = etcd.get_kv(app + "docs/2")
    assert db.rows(
        "SELECT create_revision, mod_revision, version, lease FROM md.docs WHERE key = %s",
        (app + "docs/2",),
    ) == [(kv["create_revision"], kv["mod_revision"], 2, 0)]
    # metadata 'false' and value_type 'text' are the defaults, spelled out.
    do_import(db, app, schema="plain", metadata="off", value_type="TEXT")
    assert imported(db, "plain")["docs"][1] == TEXT_COLS


def test_option_errors(db, etcd, kp):
    etcd.put(f"/{kp}app/t/1", "x")
    db.create_server("s", etcd.endpoint)
    db.execute("CREATE SCHEMA imp")
    base = f'IMPORT FOREIGN SCHEMA "/{kp}app/" FROM SERVER s INTO imp OPTIONS '
    e = expect_error(db.conn, base + "(bogus 'x')", sqlstate="HV00D", contains='"bogus"')
    assert "separator, value_type, metadata" in err_text(e)
    expect_error(db.conn, base + "(value_type 'json')", sqlstate="HV024", contains="value_type")
    expect_error(db.conn, base + "(metadata 'maybe')", sqlstate="HV024", contains="metadata")
    expect_error(db.conn, base + "(separator '')", sqlstate="HV024", contains="separator")
    expect_error(
        db.conn, base + "(metadata 'true', metadata 'false')", sqlstate="HV00D", contains="metadata"
    )
    assert imported(db) == {}


# --------------------------------------------------------------------------
# names
# --------------------------------------------------------------------------


def test_names_needing_quotes_and_segments_that_cannot_be_names(db, etcd, kp):
    app = f"/{kp}app/"
    weird = {
        "Users": "upper",
        "my table": "space",
        "select": "keyword",
        'say "hi"': "quotes",
        "it's": "apostrophe",
        "back\\slash": "backslash",
        "café": "utf8",
        "n" * 63: "longest name",
    }
    for name, v in weird.items():
        etcd.put(f"{app}{name}/1", v)
    etcd.put(app + "/empty-segment", "e")
    etcd.put(app + "n" * 64 + "/too-long", "l")
    etcd.put_many({app.encode() + b"\xff\xfe/x": b"bad utf8"})
    db.create_server("s", etcd.endpoint)
    notices = do_import(db, app)
    tables = imported(db)
    assert sorted(tables) == sorted(weird)
    for name, v in weird.items():
        assert tables[name][0] == opts_of(f"{app}{name}/"), name
        assert db.rows(f"SELECT value FROM imp.{sql_ident(name)}") == [(v,)], name
    # The quoting is PostgreSQL's: the same names quote_ident() quotes.
    text = " ".join(n[0] for n in notices)
    assert "skipped: an empty segment" in text, notices
    assert "skipped: longer than 63 bytes" in text, notices
    assert "skipped: not valid UTF-8" in text, notices
    details = " ".join(n[1] for n in notices)
    assert f'"{app}\\xff\\xfe/"' in details and f'"{app}{"n" * 64}/"' in details, details
    assert f'"{app}/"' in details, details
    # A remote schema that does not end with the separator: the segment
    # before the first separator is empty, and the NOTICE says why.
    notices = do_import(db, app[:-1], schema="noslash")
    assert imported(db, "noslash") == {}
    assert any(f'end it with the separator ("{app}")' in n[2] for n in notices), notices


def test_latin1_database(pg, etcd, kp):
    """Names and prefixes are converted to the database encoding; a segment
    it cannot hold is skipped with a NOTICE, and a name's length is counted
    in the database encoding (40 x "é" is 80 bytes of UTF-8, 40 of LATIN1)."""
    app = f"/{kp}app/"
    long_name = "é" * 40
    for seg in ("café", "日本", long_name, "plain"):
        etcd.put(f"{app}{seg}/1", seg)
    name = f"latin1_import_{kp[:-1]}"
    admin = pg.connect("postgres")
    admin.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'")
    try:
        c = pg.connect(name)
        c.execute("SET client_encoding = 'UTF8'")
        c.execute("CREATE EXTENSION etcd_fdw")
        c.execute("CREATE FOREIGN DATA WRAPPER etcd_fdw HANDLER etcd_fdw_handler VALIDATOR etcd_fdw_validator")
        c.execute(f"CREATE SERVER s FOREIGN DATA WRAPPER etcd_fdw OPTIONS (connstr '{etcd.endpoint}')")
        notices = do_import(None, app, conn=c)
        rels = sorted(r[0] for r in c.execute(
            "SELECT relname::text FROM pg_class WHERE relnamespace = 'imp'::regnamespace"
        ).fetchall())
        assert rels == sorted(["café", long_name, "plain"])
        assert c.execute('SELECT key, value FROM imp."café"').fetchall() == [(f"{app}café/1", "café")]
        assert c.execute(
            "SELECT ftoptions FROM pg_foreign_table WHERE ftrelid = 'imp.\"café\"'::regclass"
        ).fetchone()[0] == [f"prefix={app}café/", "rowid_column=key"]
        assert len(notices) == 1, notices
        assert "database encoding cannot hold" in notices[0][0], notices
        assert "\\u{65e5}\\u{672c}" in notices[0][1], notices  # 日本, escaped for LATIN1
        c.close()
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_existing_table_is_postgresqls_error(db, etcd, kp):
    app = f"/{kp}app/"
    etcd.put(app + "users/1", "u")
    etcd.put(app + "config/1", "c")
    db.create_server("s", etcd.endpoint)
    db.execute("CREATE SCHEMA imp")
    db.execute("CREATE TABLE imp.users (id int)")
    e = expect_error(
        db.conn,
        f"IMPORT FOREIGN SCHEMA {sql_ident(app)} FROM SERVER s INTO imp",
        sqlstate="42P07",
        contains='"users" already exists',
    )
    assert "importing foreign table" in err_text(e)
    # Nothing was created (one statement, one transaction).
    assert imported(db) == {}
    # The same tables can be excluded.
    do_import(db, app, clause="EXCEPT (users)")
    assert list(imported(db)) == ["config"]
    expect_error(
        db.conn,
        f"IMPORT FOREIGN SCHEMA {sql_ident(app)} FROM SERVER s INTO nosuchschema",
        sqlstate="3F000",
    )


# --------------------------------------------------------------------------
# whole keyspace shapes
# --------------------------------------------------------------------------


def test_kubernetes_shape_and_root_imports(db, etcd_fresh):
    etcd = etcd_fresh
    keys = {}
    for ns in ("default", "kube-system"):
        for i in range(300):
            keys[f"/registry/pods/{ns}/pod-{i:03}"] = f"pod {ns} {i}"
    for i in range(200):
        keys[f"/registry/configmaps/default/cm-{i:03}"] = "cm"
    keys["/registry/services/specs/default/kubernetes"] = "svc"
    keys["/registry/masterleases/10.0.0.1"] = "lease"
    keys["/registry/health"] = "ok"
    keys["compact_rev_key"] = "1"
    etcd.put_many(keys)
    db.create_server("s", etcd.endpoint)
    notices = do_import(db, "/registry/", schema="k8s")
    t = imported(db, "k8s")
    assert sorted(t) == ["configmaps", "masterleases", "pods", "services"]
    assert t["pods"] == (opts_of("/registry/pods/"), TEXT_COLS, "s")
    assert db.scalar("SELECT count(*) FROM k8s.pods") == 600
    assert db.scalar("SELECT count(*) FROM k8s.pods WHERE key LIKE '/registry/pods/kube-system/%'") == 300
    assert db.rows("SELECT value FROM k8s.services") == [("svc",)]
    assert len(notices) == 1 and '"/registry/health"' in notices[0][1], notices

    # "/": keys under "/", one table per first segment.
    notices = do_import(db, "/", schema="root")
    assert imported(db, "root") == {"registry": (opts_of("/registry/"), TEXT_COLS, "s")}
    assert notices == []
    assert db.scalar("SELECT count(*) FROM root.registry") == len(keys) - 1

    # The whole keyspace: the option prefix '' (PostgreSQL refuses the
    # remote schema name "").  "/registry/..." has an empty first segment.
    notices = do_import(db, "ignored", schema="whole", prefix="")
    assert imported(db, "whole") == {}
    text = " ".join(n[0] + n[1] for n in notices)
    assert "1 etcd key under prefix" in text and '"compact_rev_key"' in text, notices
    assert "skipped: an empty segment" in text, notices


def test_import_is_one_request_per_table_not_per_key(db, etcd_fresh):
    """20 tables of 1000 keys each: the import jumps over each table's keys
    once it has seen one (the next request starts at the end of the table's
    prefix range), so it makes about one request per table, and holds only
    the table names, not the keys."""
    etcd = etcd_fresh
    etcd.put_many({f"/big/t{t:02}/{i:05}": "x" * 100 for t in range(20) for i in range(1000)}, batch=128)
    etcd.put_many({f"/big/flag{i}": "x" for i in range(50)})
    db.create_server("s", etcd.endpoint)
    before = etcd.metric("grpc_server_started_total", grpc_method="Range")
    notices = do_import(db, "/big/", schema="big")
    requests = etcd.metric("grpc_server_started_total", grpc_method="Range") - before
    assert len(imported(db, "big")) == 20
    assert notices and notices[0][0].startswith("50 etcd keys"), notices
    # 20 tables + the 50 keys without a segment (read in growing pages) +
    # the connection's probe: far from the 20050 keys' dozens of pages.
    assert requests <= 30, requests
    assert db.scalar("SELECT count(*) FROM big.t07") == 1000


# --------------------------------------------------------------------------
# errors and the user mapping
# --------------------------------------------------------------------------


def test_no_keys_under_the_prefix(db, etcd, kp):
    db.create_server("s", etcd.endpoint)
    db.execute("CREATE SCHEMA imp")
    expect_error(
        db.conn,
        f'IMPORT FOREIGN SCHEMA "/{kp}nothing/" FROM SERVER s INTO imp',
        sqlstate="HV00Q",
        contains=[f'"/{kp}nothing/"', '"s"'],
    )


def test_unreachable_etcd_names_the_server(db, dead_endpoint):
    db.create_server("deadsrv", dead_endpoint, connect_timeout="1", request_timeout="2")
    db.execute("CREATE SCHEMA imp")
    e = expect_error(
        db.conn,
        'IMPORT FOREIGN SCHEMA "/app/" FROM SERVER deadsrv INTO imp',
        sqlstate="HV00N",
        contains=['"deadsrv"', dead_endpoint],
    )
    assert "importing" in err_text(e)
    expect_error(db.conn, 'IMPORT FOREIGN SCHEMA "/app/" FROM SERVER nosuch INTO imp', sqlstate="42704")


def test_import_uses_the_callers_user_mapping(db, etcd_auth):
    etcd_auth.put(AUTH_PREFIX + "imp/1", "granted")
    db.create_server("s", etcd_auth.endpoint, connect_timeout="3", request_timeout="5")
    role = "importer"
    rc = db.role_connection(role)
    db.execute(f"GRANT USAGE ON FOREIGN SERVER s TO {role}")
    db.execute(f"GRANT CREATE ON DATABASE {sql_ident(db.name)} TO {role}")
    db.create_user_mapping("s", user=role, username="carol", password=CAROL_PASSWORD)
    # The superuser has no user mapping: etcd refuses the anonymous read.
    db.execute("CREATE SCHEMA imp")
    e = expect_error(db.conn, f"IMPORT FOREIGN SCHEMA {sql_ident(AUTH_PREFIX)} FROM SERVER s INTO imp")
    assert "carol" not in err_text(e)
    # The role reads with carol's grants (read on auth/) and owns the tables.
    notices = do_import(db, AUTH_PREFIX, schema="mine", conn=rc)
    assert list(imported(db, "mine")) == ["imp"]
    assert db.scalar("SELECT relowner::regrole::text FROM pg_class WHERE oid = 'mine.imp'::regclass") == role
    assert rc.execute("SELECT value FROM mine.imp").fetchall() == [("granted",)]
    assert any("2 etcd keys" in n[0] for n in notices), notices
    # Without USAGE: PostgreSQL's own check.
    db.execute(f"REVOKE USAGE ON FOREIGN SERVER s FROM {role}")
    expect_error(rc, f"IMPORT FOREIGN SCHEMA {sql_ident(AUTH_PREFIX)} FROM SERVER s INTO mine", sqlstate="42501")

