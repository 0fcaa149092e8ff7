"""TLS (server verification, client certificates, SNI) and etcd RBAC."""

import psycopg
import pytest

from harness import (
    AUTH_PREFIX,
    CAROL_PASSWORD,
    QueryThread,
    assert_session_usable,
    err_text,
    expect_error,
    finish_or_rescue,
)

TLS_WORDS = ("certificate", "tls", "ssl", "issuer", "handshake", "x509", "name")


def tls_server(db, etcd_tls, certs, connstr=None, **overrides):
    opts = {
        "ssl_ca": certs.ca,
        "ssl_cert": certs.client_cert,
        "ssl_key": certs.client_key,
        "connect_timeout": "3",
        "request_timeout": "5",
    }
    opts.update(overrides)
    db.create_server("s", connstr or etcd_tls.endpoint, **opts)


def run_bounded(db, sql, limit=20):
    """Run sql on db.conn in a thread; fail (instead of hanging) after `limit` s."""
    t = QueryThread(db.conn, sql)
    t.start()
    finish_or_rescue(t, None, limit)
    return t


def assert_fails(db, sql, words=None, limit=20):
    t = run_bounded(db, sql, limit)
    assert t.error is not None, f"unexpectedly succeeded: {t.rows!r}"
    assert isinstance(t.error, psycopg.Error) and t.error.sqlstate is not None, repr(t.error)
    text = err_text(t.error)
    if words:
        assert any(w in text.lower() for w in words), f"unclear error: {text}"
    assert_session_usable(db.conn)
    return t.error


# --------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------


def test_tls_with_client_cert(db, etcd_tls, certs, kp):
    etcd_tls.put(kp + "a", "1")
    tls_server(db, etcd_tls, certs)
    db.create_table("t", "s", prefix=kp)
    assert db.rows("SELECT key, value FROM t") == [(kp + "a", "1")]
    assert db.rows("SELECT key, value FROM t") == [(kp + "a", "1")]


def test_tls_https_scheme(db, etcd_tls, certs, kp):
    etcd_tls.put(kp + "a", "1")
    assert etcd_tls.url.startswith("https://")
    tls_server(db, etcd_tls, certs, connstr=etcd_tls.url)
    db.create_table("t", "s", prefix=kp)
    assert db.rows("SELECT key, value FROM t") == [(kp + "a", "1")]


def test_tls_wrong_ca(db, etcd_tls, certs, kp):
    # a certificate that does not verify fails the handshake at once: it
    # waits for neither connect_timeout nor request_timeout (both set far
    # above the bound), by the backend's clock
    tls_server(db, etcd_tls, certs, ssl_ca=certs.other_ca, connect_timeout="60",
               request_timeout="60")
    db.create_table("t", "s", prefix=kp)
    other = db.second_connection()
    pid = db.backend_pid()
    t = run_bounded(db, "SELECT * FROM t", limit=120)  # the limit only guards against a hang
    state, elapsed = other.execute(
        "SELECT state, extract(epoch FROM state_change - query_start)::float8 "
        "FROM pg_stat_activity WHERE pid = %s",
        (pid,),
    ).fetchone()
    assert t.error is not None, f"unexpectedly succeeded: {t.rows!r}"
    assert isinstance(t.error, psycopg.Error) and t.error.sqlstate is not None, repr(t.error)
    text = err_text(t.error)
    assert any(w in text.lower() for w in TLS_WORDS), f"unclear error: {text}"
    assert "timed out" not in text, text
    # query_start to going idle (reported before ReadyForQuery)
    assert state != "active"
    assert elapsed < 30, f"a failed TLS verification took {elapsed:.1f}s"
    assert_session_usable(db.conn)


def test_tls_servername_ok(db, etcd_tls, certs, kp):
    etcd_tls.put(kp + "a", "1")
    tls_server(db, etcd_tls, certs, connstr=etcd_tls.url, ssl_servername="etcd.test")
    db.create_table("t", "s", prefix=kp)
    assert db.rows("SELECT key, value FROM t") == [(kp + "a", "1")]


def test_tls_servername_wrong(db, etcd_tls, certs, kp):
    tls_server(db, etcd_tls, certs, connstr=etcd_tls.url, ssl_servername="wrong.name")
    db.create_table("t", "s", prefix=kp)
    assert_fails(db, "SELECT * FROM t", words=TLS_WORDS)


def test_tls_without_client_cert(db, etcd_tls, certs, kp):
    db.create_server(
        "s", etcd_tls.url, ssl_ca=certs.ca, connect_timeout="3", request_timeout="5"
    )
    db.create_table("t", "s", prefix=kp)
    assert_fails(db, "SELECT * FROM t")


def test_tls_client_cert_from_other_ca(db, etcd_tls, certs, kp):
    tls_server(
        db, etcd_tls, certs, connstr=etcd_tls.url,
        ssl_cert=certs.other_client_cert, ssl_key=certs.other_client_key,
    )
    db.create_table("t", "s", prefix=kp)
    assert_fails(db, "SELECT * FROM t")


def test_tls_missing_ca_file(db, etcd_tls, certs, kp):
    missing = certs.path("no-such-ca.crt")
    # the file is read when connecting (README), like postgres_fdw's
    # sslrootcert: the server is created, the first query names the file
    tls_server(db, etcd_tls, certs, ssl_ca=missing)
    db.create_table("t", "s", prefix=kp)
    e = expect_error(db.conn, "SELECT * FROM t", sqlstate="HV00N", contains="no-such-ca.crt")
    assert "ssl_ca" in err_text(e)
    assert_session_usable(db.conn)


def test_non_superuser_may_set_ssl_servername(db, etcd_tls):
    """ssl_servername names no file, so it is not restricted to superusers."""
    role = "fdw_plain_user"
    rc = db.role_connection(role)
    db.execute(f"GRANT USAGE ON FOREIGN DATA WRAPPER etcd_fdw TO {role}")
    rc.execute(
        f"CREATE SERVER s FOREIGN DATA WRAPPER etcd_fdw "
        f"OPTIONS (connstr '{etcd_tls.url}', ssl_servername 'etcd.test')"
    )
    rc.execute("ALTER SERVER s OPTIONS (SET ssl_servername 'localhost')")


@pytest.mark.parametrize("option", ["ssl_ca", "ssl_cert", "ssl_key"])
def test_non_superuser_cannot_set_ssl_options(db, etcd_tls, certs, option):
    role = "fdw_plain_user"
    rc = db.role_connection(role)
    db.execute(f"GRANT USAGE ON FOREIGN DATA WRAPPER etcd_fdw TO {role}")
    # control: without ssl options the role can create a server
    db.create_server("plain", etcd_tls.url, conn=rc)
    values = {
        "ssl_ca": {"ssl_ca": certs.ca},
        "ssl_cert": {"ssl_cert": certs.client_cert, "ssl_key": certs.client_key},
        "ssl_key": {"ssl_cert": certs.client_cert, "ssl_key": certs.client_key},
    }[option]
    opts = ", ".join(f"{k} '{v}'" for k, v in values.items())
    e = expect_error(
        rc,
        f"CREATE SERVER s FOREIGN DATA WRAPPER etcd_fdw "
        f"OPTIONS (connstr '{etcd_tls.url}', {opts})",
    )
    assert e.sqlstate == "42501", err_text(e)
    assert option in err_text(e) or "ssl_cert" in err_text(e), err_text(e)
    adds = ", ".join(f"ADD {k} '{v}'" for k, v in values.items())
    e = expect_error(rc, f"ALTER SERVER plain OPTIONS ({adds})")
    assert e.sqlstate == "42501", err_text(e)
    assert_session_usable(rc)


# --------------------------------------------------------------------------
# RBAC (etcd auth)
# --------------------------------------------------------------------------

AUTH_ROWS = [(AUTH_PREFIX + "a", "1"), (AUTH_PREFIX + "b", "2")]


def auth_server(db, etcd_auth, **opts):
    o = {"connect_timeout": "3", "request_timeout": "5"}
    o.update(opts)
    db.create_server("s", etcd_auth.endpoint, **o)


def assert_no_password(text, *passwords):
    for p in passwords:
        assert p not in text, f"password {p!r} leaked: {text}"


def test_auth_server_level_credentials(db, etcd_auth):
    auth_server(db, etcd_auth, username="alice", password="alicepw")
    db.create_table("t", "s", prefix=AUTH_PREFIX)
    assert db.rows("SELECT key, value FROM t") == AUTH_ROWS
    assert db.rows("SELECT key, value FROM t") == AUTH_ROWS


def test_auth_root_reads_everything(db, etcd_auth):
    auth_server(db, etcd_auth, username="root", password="rootpw")
    db.create_table("t", "s", key="secret/x")
    assert db.rows("SELECT key, value FROM t") == [("secret/x", "root-only")]


def test_auth_without_credentials_fails(db, etcd_auth):
    auth_server(db, etcd_auth)
    db.create_table("t", "s", prefix=AUTH_PREFIX)
    assert_fails(db, "SELECT * FROM t")


def test_auth_permission_denied_outside_role(db, etcd_auth):
    auth_server(db, etcd_auth, username="alice", password="alicepw")
    db.create_table("t", "s", key="secret/x")
    e = assert_fails(db, "SELECT * FROM t")
    assert_no_password(err_text(e), "alicepw")
    # the connection is still fine for what alice may read
    db.create_table("t_ok", "s", prefix=AUTH_PREFIX)
    assert db.rows("SELECT key, value FROM t_ok") == AUTH_ROWS


def test_auth_user_mapping_overrides_server(db, etcd_auth):
    auth_server(db, etcd_auth, username="alice", password="wrong-server-pw-4711")
    db.create_user_mapping("s", username="alice", password="alicepw")
    db.create_table("t", "s", prefix=AUTH_PREFIX)
    assert db.rows("SELECT key, value FROM t") == AUTH_ROWS


def test_auth_wrong_user_mapping_password_beats_right_server_one(db, pg, etcd_auth):
    bad = "Wr0ng-UM-pw-8c1d"
    auth_server(db, etcd_auth, username="alice", password="alicepw")
    db.create_user_mapping("s", username="alice", password=bad)
    db.create_table("t", "s", prefix=AUTH_PREFIX)
    log_off = pg.log_size()
    e = assert_fails(db, "SELECT * FROM t")
    assert_no_password(err_text(e), bad, "alicepw")
    assert_no_password(pg.log_since(log_off, limit=10**7), bad, "alicepw")


def test_auth_wrong_password_not_leaked(db, pg, etcd_auth):
    bad = "Sup3r-S3cret-Wr0ng-77a1"
    auth_server(db, etcd_auth, username="alice", password=bad)
    db.create_table("t", "s", prefix=AUTH_PREFIX)
    log_off = pg.log_size()
    for _ in range(2):  # a failed login is not cached as a good connection
        e = assert_fails(db, "SELECT * FROM t")
        assert_no_password(err_text(e), bad)
    assert_no_password(pg.log_since(log_off, limit=10**7), bad)
    # fixing the password makes it work
    db.execute("ALTER SERVER s OPTIONS (SET password 'alicepw')")
    assert db.rows("SELECT key, value FROM t") == AUTH_ROWS


def test_auth_unknown_user_fails(db, etcd_auth):
    auth_server(db, etcd_auth, username="nobody", password="nobodypw-31")
    db.create_table("t", "s", prefix=AUTH_PREFIX)
    e = assert_fails(db, "SELECT * FROM t")
    assert_no_password(err_text(e), "nobodypw-31")


def test_explain_and_connections_do_not_show_passwords(db, etcd_auth):
    auth_server(db, etcd_auth, username="alice", password="alicepw")
    db.create_table("t", "s", prefix=AUTH_PREFIX)
    db.create_server("s2", etcd_auth.endpoint, username="nobody", password="bogus-pw-x1")
    db.create_user_mapping("s2", username="carol", password=CAROL_PASSWORD)
    db.create_table("t2", "s2", prefix=AUTH_PREFIX)
    secrets = ("alicepw", CAROL_PASSWORD, "bogus-pw-x1")
    for stmt in (
        "EXPLAIN SELECT * FROM t",
        "EXPLAIN VERBOSE SELECT * FROM t",
        "EXPLAIN (ANALYZE, VERBOSE) SELECT * FROM t",
        "EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) SELECT * FROM t",
        "EXPLAIN VERBOSE SELECT * FROM t2",
        "EXPLAIN (ANALYZE, VERBOSE) SELECT * FROM t2",
        "EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) SELECT * FROM t2 JOIN t USING (key)",
    ):
        out = "\n".join(str(r[0]) for r in db.rows(stmt))
        assert "Foreign Scan" in out, out
        assert_no_password(out, *secrets)
    assert db.rows("SELECT key, value FROM t2") == AUTH_ROWS
    conns = db.rows("SELECT * FROM etcd_fdw_get_connections()")
    assert len(conns) == 2
    assert_no_password(repr(conns), *secrets)


# --------------------------------------------------------------------------
# Non-superusers and identities a superuser configured (password_required)
# --------------------------------------------------------------------------


def _plain_role(db, role="fdw_plain_user"):
    rc = db.role_connection(role)
    db.execute("GRANT USAGE ON FOREIGN SERVER s TO " + role)
    db.execute(f"GRANT SELECT, INSERT ON t TO {role}")
    return role, rc


def test_non_superuser_cannot_borrow_the_servers_client_certificate(db, etcd_tls, certs, kp):
    """The server's client certificate is the superuser's etcd identity: a
    non-superuser without a password of their own gets 2F003 (before
    anything is sent), until a superuser sets password_required 'false'."""
    etcd_tls.put(kp + "a", "1")
    tls_server(db, etcd_tls, certs)
    db.create_table("t", "s", prefix=kp)
    assert db.rows("SELECT key, value FROM t") == [(kp + "a", "1")]  # superuser: fine
    role, rc = _plain_role(db)
    for sql in ("SELECT key, value FROM t", f"INSERT INTO t VALUES ('{kp}b', '2')"):
        e = expect_error(rc, sql, sqlstate="2F003", contains="password is required")
        assert "ssl_cert" in err_text(e) and '"s"' in err_text(e), err_text(e)
        assert "password_required" in (e.diag.message_hint or ""), e.diag.message_hint
    assert etcd_tls.get(kp + "b") is None
    # a mapping without a password changes nothing
    db.execute(f"CREATE USER MAPPING FOR {role} SERVER s")
    expect_error(rc, "SELECT key FROM t", sqlstate="2F003")
    # the role cannot lift the rule itself ...
    e = expect_error(
        rc, "ALTER USER MAPPING FOR CURRENT_USER SERVER s OPTIONS (ADD password_required 'false')",
        sqlstate="42501",
    )
    assert "superuser" in err_text(e)
    # ... a superuser can, explicitly
    db.execute(f"ALTER USER MAPPING FOR {role} SERVER s OPTIONS (ADD password_required 'false')")
    assert db.rows("SELECT key, value FROM t", conn=rc) == [(kp + "a", "1")]
    # and take it back (the cached connection goes with the changed options)
    db.execute(f"ALTER USER MAPPING FOR {role} SERVER s OPTIONS (SET password_required 'true')")
    expect_error(rc, "SELECT key FROM t", sqlstate="2F003")
    assert_session_usable(rc)


def test_non_superuser_cannot_borrow_server_level_credentials(db, etcd_auth):
    auth_server(db, etcd_auth, username="alice", password="alicepw")
    db.create_table("t", "s", prefix=AUTH_PREFIX)
    role, rc = _plain_role(db, "fdw_plain_user2")
    e = expect_error(rc, "SELECT key, value FROM t", sqlstate="2F003")
    assert '"username"' in err_text(e), err_text(e)
    assert_no_password(err_text(e), "alicepw")
    # with a password of their own (carol's, in their user mapping): fine
    db.execute(f"CREATE USER MAPPING FOR {role} SERVER s OPTIONS (username 'carol', password '{CAROL_PASSWORD}')")
    assert db.rows("SELECT key, value FROM t", conn=rc) == AUTH_ROWS
    # a view owned by the superuser reads as the superuser (alice, from
    # the server options) in the role's backend: that connection is not
    # listed to the role; a superuser sees every connection of its backend
    db.execute("CREATE VIEW v AS SELECT key FROM t")
    db.execute(f"GRANT SELECT ON v TO {role}")
    assert db.rows("SELECT key FROM v", conn=rc) == [(k,) for k, _ in AUTH_ROWS]
    mine = db.rows("SELECT user_name FROM etcd_fdw_get_connections()", conn=rc)
    assert mine == [(role,)], mine
    db.execute(f"ALTER ROLE {role} SUPERUSER")
    try:
        every = db.rows("SELECT user_name FROM etcd_fdw_get_connections() ORDER BY 1", conn=rc)
    finally:
        db.execute(f"ALTER ROLE {role} NOSUPERUSER")
    assert every == sorted([(role,), ("postgres",)]), every


def test_non_superuser_without_any_etcd_identity_connects(db, etcd, kp):
    """etcd without authentication and no client certificate: nothing is
    borrowed, so no password is needed."""
    etcd.put(kp + "a", "1")
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", prefix=kp)
    role, rc = _plain_role(db, "fdw_plain_user3")
    assert db.rows("SELECT key, value FROM t", conn=rc) == [(kp + "a", "1")]
    db.rows("SELECT key FROM t")  # a superuser connection in another backend
    assert db.rows("SELECT user_name FROM etcd_fdw_get_connections()", conn=rc) == [(role,)]
