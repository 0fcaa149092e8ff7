"""etcd leases in SQL: etcd_lease_grant, etcd_lease_keepalive,
etcd_lease_revoke, etcd_lease_info and etcd_leases, against etcd 3.4 and 3.5.

Keys are attached with etcdctl (`put --lease=<hex id>`), and etcd's state is
checked with etcdctl: keys vanish when their lease expires or is revoked.
TTLs are short (5-10 s; etcd's minimum is about 2 s) to keep the file fast; tests
wait for lease states, never for durations.
"""

import base64
import math
import time

import pytest

from harness import err_text, expect_error, wait_until

# How much longer than a configured timeout a statement may take on a
# loaded 2-core CI machine (two suites side by side) before we call it hung.
SLACK = 8.0


def _server(db, etcd, name="s", **options):
    db.create_server(name, etcd.endpoint, **options)
    return name


def _grant(db, ttl, server="s"):
    return db.scalar("SELECT etcd_lease_grant(%s, %s)", (server, ttl))


def _attach(etcd, lease, key, value="v"):
    etcd.ctl("put", f"--lease={lease:x}", "--", key, value)


def _ctl_leases(etcd):
    """Lease ids etcdctl lists (it prints them in hex)."""
    out = etcd.ctl("lease", "list").decode().split()
    return {int(x, 16) for x in out[3:]}  # "found N leases" then the ids


def test_grant_keepalive_and_expiry(db, etcd, kp):
    """A lease nobody refreshes takes its keys with it after its TTL; one
    kept alive outlives its TTL.

    No durations: `kept` is granted first and `idle` after it with the same
    TTL, so kept's original expiry comes no later than idle's.  kept is kept
    alive until etcd has revoked idle (a state etcd reaches on its own
    clock): kept's key still being there then proves the keep-alives
    extended it."""
    ttl = 5  # well above etcd's minimum (about 2 s): a late keep-alive is no failure
    _server(db, etcd)
    kept = _grant(db, ttl)
    idle = _grant(db, ttl)
    assert idle > 0 and kept > 0 and idle != kept
    _attach(etcd, idle, kp + "idle")
    _attach(etcd, kept, kp + "kept")
    assert etcd.get_kv(kp + "idle")["lease"] == idle
    assert etcd.get_kv(kp + "kept")["lease"] == kept

    def keep_until_idle_is_gone():
        # refreshed: back to the granted TTL
        assert db.scalar("SELECT etcd_lease_keepalive('s', %s)", (kept,)) == ttl
        return etcd.get(kp + "idle") is None

    wait_until(keep_until_idle_is_gone, "etcd to expire the idle lease", interval=0.2)
    # kept's original expiry has passed too: only the keep-alives saved it
    assert etcd.get(kp + "kept") == b"v"
    last_keepalive = time.monotonic()
    assert db.scalar("SELECT etcd_lease_keepalive('s', %s)", (kept,)) == ttl
    left, granted, keys = db.rows("SELECT * FROM etcd_lease_info('s', %s)", (kept,))[0]
    assert granted == ttl and 0 <= left <= ttl and keys == [kp + "kept"]

    # the expired lease is gone for every function
    for call in ("etcd_lease_keepalive('s', %s)", "etcd_lease_info('s', %s)", "etcd_lease_revoke('s', %s)"):
        e = expect_error(db.conn, f"SELECT * FROM {call}", (idle,), sqlstate="42704")
        assert f"etcd lease {idle} ({idle:#x}) does not exist on server \"s\"" in str(e), err_text(e)
    assert idle not in set(r[0] for r in db.rows("SELECT * FROM etcd_leases('s')"))

    # no more keep-alives: the kept lease expires too, a full TTL after the
    # last keep-alive (etcd's clock is CLOCK_MONOTONIC, as time.monotonic)
    wait_until(lambda: etcd.get(kp + "kept") is None, "the kept lease to expire", interval=0.1)
    waited = time.monotonic() - last_keepalive
    assert waited >= ttl, f"expired {waited:.2f} s after the last keep-alive of a {ttl} s lease"


def test_keepalive_returns_the_granted_ttl(db, etcd, kp):
    granted_ttl = 10
    _server(db, etcd)
    lease = _grant(db, granted_ttl)

    def ttl_now():
        return db.rows("SELECT ttl FROM etcd_lease_info('s', %s)", (lease,))[0][0]

    # etcd reports whole seconds left (rounded down): wait until 3 are gone
    (before,) = wait_until(
        lambda: (t := ttl_now()) <= granted_ttl - 3 and (t,), "the lease's TTL to run down"
    )
    t0 = time.monotonic()
    assert db.scalar("SELECT etcd_lease_keepalive('s', %s)", (lease,)) == granted_ttl
    ttl, granted = db.rows("SELECT ttl, granted_ttl FROM etcd_lease_info('s', %s)", (lease,))[0]
    since_keepalive = time.monotonic() - t0
    # refreshed: back to the granted TTL less (at most) the time since the
    # keep-alive, so above `before` unless that took seconds
    assert granted == granted_ttl
    assert math.floor(granted_ttl - since_keepalive) <= ttl <= granted_ttl, (ttl, before, since_keepalive)
    db.execute("SELECT etcd_lease_revoke('s', %s)", (lease,))


def test_revoke_deletes_attached_keys(db, etcd, kp):
    _server(db, etcd)
    lease = _grant(db, 60)
    other = _grant(db, 60)
    for k in ("a", "b", "c"):
        _attach(etcd, lease, kp + k)
    _attach(etcd, other, kp + "other")
    etcd.put(kp + "plain", "p")
    assert lease in _ctl_leases(etcd)

    assert db.rows("SELECT etcd_lease_revoke('s', %s) IS NULL", (lease,)) == [(False,)]  # void
    for k in ("a", "b", "c"):
        assert etcd.get(kp + k) is None
    assert etcd.get(kp + "other") == b"v"
    assert etcd.get(kp + "plain") == b"p"
    assert lease not in _ctl_leases(etcd)
    assert other in _ctl_leases(etcd)
    # a second revoke: the lease no longer exists
    e = expect_error(db.conn, "SELECT etcd_lease_revoke('s', %s)", (lease,), sqlstate="42704")
    assert f"{lease:#x}" in str(e)
    db.execute("SELECT etcd_lease_revoke('s', %s)", (other,))
    assert etcd.get(kp + "other") is None


def test_lease_info(db, etcd, kp):
    _server(db, etcd)
    granted_at = time.monotonic()
    lease = _grant(db, 60)
    # no keys yet: an empty array, not NULL
    assert db.rows(
        "SELECT granted_ttl, keys, keys = '{}' FROM etcd_lease_info('s', %s)", (lease,)
    ) == [(60, [], True)]
    for k in ("b", "a", "ü/c"):
        _attach(etcd, lease, kp + k)
    rows = db.rows("SELECT ttl, granted_ttl, keys FROM etcd_lease_info('s', %s)", (lease,))
    since_grant = time.monotonic() - granted_at
    assert len(rows) == 1
    ttl, granted, keys = rows[0]
    # whole seconds left, rounded down: at most the time since the grant ran off
    assert math.floor(60 - since_grant) <= ttl <= 60 and granted == 60, (ttl, since_grant)
    assert sorted(keys) == sorted(kp + k for k in ("a", "b", "ü/c"))
    assert db.scalar("SELECT pg_typeof(keys)::text FROM etcd_lease_info('s', %s)", (lease,)) == "text[]"
    # usable in queries: the keys of every lease
    assert db.scalar(
        "SELECT count(*) FROM etcd_leases('s') l, etcd_lease_info('s', l) i, unnest(i.keys) k"
        " WHERE k LIKE %s",
        (kp + "%",),
    ) == 3

    # a key that is not UTF-8 cannot be text: 22021 naming it escaped
    etcd._gateway("/v3/kv/put", {
        "key": base64.b64encode((kp + "bad\xff").encode("latin-1")).decode(),
        "value": base64.b64encode(b"x").decode(),
        "lease": str(lease),
    })
    e = expect_error(db.conn, "SELECT * FROM etcd_lease_info('s', %s)", (lease,), sqlstate="22021")
    assert f'"{kp}bad\\xff"' in str(e) and "is not valid UTF-8" in str(e), err_text(e)
    db.execute("SELECT etcd_lease_revoke('s', %s)", (lease,))


def test_leases_lists_granted_ones(db, etcd):
    _server(db, etcd)
    mine = [_grant(db, 60) for _ in range(3)]
    listed = [r[0] for r in db.rows("SELECT * FROM etcd_leases('s')")]
    assert listed == sorted(listed)
    assert set(mine) <= set(listed)
    assert set(listed) == _ctl_leases(etcd)
    db.execute("SELECT etcd_lease_revoke('s', %s)", (mine[0],))
    listed = {r[0] for r in db.rows("SELECT * FROM etcd_leases('s')")}
    assert mine[0] not in listed and set(mine[1:]) <= listed
    for lease in mine[1:]:
        db.execute("SELECT etcd_lease_revoke('s', %s)", (lease,))


def test_unknown_lease(db, etcd):
    _server(db, etcd)
    for call in ("etcd_lease_keepalive", "etcd_lease_info", "etcd_lease_revoke"):
        e = expect_error(db.conn, f"SELECT * FROM {call}('s', 123)", sqlstate="42704")
        assert str(e).startswith('etcd lease 123 (0x7b) does not exist on server "s"'), err_text(e)


def test_bad_ttl(db, etcd):
    _server(db, etcd)
    before = _ctl_leases(etcd)
    for ttl in (0, -1, -9223372036854775808):
        e = expect_error(db.conn, "SELECT etcd_lease_grant('s', %s)", (ttl,), sqlstate="22023")
        assert '"ttl_seconds" must be positive' in str(e), err_text(e)
    e = expect_error(db.conn, "SELECT etcd_lease_grant('s', 9000000001)", sqlstate="22023")
    assert '"ttl_seconds" must be at most 9000000000' in str(e), err_text(e)
    assert _ctl_leases(etcd) == before
    # NULL arguments: STRICT
    assert db.rows("SELECT etcd_lease_grant('s', NULL)") == [(None,)]
    assert db.rows("SELECT etcd_lease_grant(NULL, 5)") == [(None,)]


def test_servers_and_permissions(db, etcd):
    _server(db, etcd)
    rc = db.role_connection("lease_user")
    calls = [
        "SELECT etcd_lease_grant('s', 60)",
        "SELECT etcd_lease_keepalive('s', 1)",
        "SELECT etcd_lease_revoke('s', 1)",
        "SELECT * FROM etcd_lease_info('s', 1)",
        "SELECT * FROM etcd_leases('s')",
    ]
    for sql in calls:
        e = expect_error(rc, sql, sqlstate="42501")
        assert "permission denied for foreign server s" in str(e), err_text(e)
    # with USAGE (and no user mapping needed for a plain etcd) it works
    db.execute("GRANT USAGE ON FOREIGN SERVER s TO lease_user")
    lease = db.scalar("SELECT etcd_lease_grant('s', 60)", conn=rc)
    assert db.scalar("SELECT etcd_lease_keepalive('s', %s)", (lease,), conn=rc) == 60
    assert lease in {r[0] for r in db.rows("SELECT * FROM etcd_leases('s')", conn=rc)}
    db.execute("SELECT etcd_lease_revoke('s', %s)", (lease,), conn=rc)

    for sql in calls:
        nosuch = sql.replace("'s'", "'nosuch'")
        e = expect_error(db.conn, nosuch, sqlstate="42704")
        assert 'server "nosuch" does not exist' in str(e), err_text(e)

    db.execute("CREATE FOREIGN DATA WRAPPER dummy")
    db.execute("CREATE SERVER other FOREIGN DATA WRAPPER dummy")
    for sql in calls:
        e = expect_error(db.conn, sql.replace("'s'", "'other'"), sqlstate="42809")
        assert 'server "other" is not an etcd_fdw server' in str(e), err_text(e)


def test_unreachable_etcd(db, dead_endpoint):
    db.create_server("gone", dead_endpoint, connect_timeout="1", request_timeout="2")
    for sql in (
        "SELECT etcd_lease_grant('gone', 60)",
        "SELECT etcd_lease_keepalive('gone', 1)",
        "SELECT etcd_lease_revoke('gone', 1)",
        "SELECT * FROM etcd_lease_info('gone', 1)",
        "SELECT * FROM etcd_leases('gone')",
    ):
        start = time.monotonic()
        e = expect_error(db.conn, sql, sqlstate="HV00N")
        text = err_text(e)
        assert dead_endpoint in text and 'server "gone"' in text, text
        # refused connections: given up within request_timeout, not hung
        assert time.monotonic() - start < 2 + SLACK


def test_lease_info_in_a_latin1_database(pg, etcd, kp):
    """Attached keys come back converted to the database encoding."""
    name = f"lease_latin1_{kp.strip('/')}"
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
            c.execute(f"CREATE SERVER s FOREIGN DATA WRAPPER etcd_fdw OPTIONS (connstr '{etcd.endpoint}')")
            lease = c.execute("SELECT etcd_lease_grant('s', 60)").fetchone()[0]
            _attach(etcd, lease, kp + "café")
            assert c.execute(
                "SELECT keys, octet_length(convert_to(keys[1], 'LATIN1'))"
                " FROM etcd_lease_info('s', %s)", (lease,)
            ).fetchall() == [([kp + "café"], len(kp) + 4)]
            # a character LATIN1 cannot hold: PostgreSQL's conversion error
            _attach(etcd, lease, kp + "€")
            expect_error(c, "SELECT * FROM etcd_lease_info('s', %s)", (lease,), sqlstate="22P05")
            c.execute("SELECT etcd_lease_revoke('s', %s)", (lease,))
            assert etcd.get(kp + "café") is None
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_paused_etcd(db, etcd_fresh):
    """A keep-alive etcd does not answer gives up after request_timeout
    (08006, as any request etcd does not answer in time); a grant whose
    answer never comes is not retried: 08007 (the lease may exist)."""
    db.create_server("s", etcd_fresh.endpoint, request_timeout="1", connect_timeout="1")
    for sql, sqlstate, what in (
        ("SELECT etcd_lease_keepalive('s', 1)", "08006", 'keeping lease 1 (0x1) alive on server "s"'),
        ("SELECT etcd_lease_grant('s', 60)", "08007", 'granting a lease of 60 s on server "s"'),
    ):
        assert db.rows("SELECT * FROM etcd_leases('s')") == []  # connected
        etcd_fresh.stop()
        try:
            start = time.monotonic()
            e = expect_error(db.conn, sql, sqlstate=sqlstate)
            assert what in err_text(e), err_text(e)
            # given up after request_timeout (1 s), not hung
            assert time.monotonic() - start < 1 + SLACK
        finally:
            etcd_fresh.cont()
    lease = db.scalar("SELECT etcd_lease_grant('s', 60)")
    assert lease in _ctl_leases(etcd_fresh)


def test_auth_uses_the_callers_user_mapping(db, etcd_auth):
    """With etcd auth the calls act as the user mapping's etcd user: alice
    may revoke a lease whose keys she may write, not one holding a key
    outside her role (etcd checks the attached keys on revoke)."""
    db.create_server("s", etcd_auth.endpoint, connect_timeout="3", request_timeout="5")
    db.create_user_mapping("s", username="alice", password="alicepw")
    mine = _grant(db, 60)
    assert db.scalar("SELECT etcd_lease_keepalive('s', %s)", (mine,)) == 60
    _attach(etcd_auth, mine, "auth/leased")  # etcdctl as root
    assert db.rows("SELECT keys FROM etcd_lease_info('s', %s)", (mine,)) == [(["auth/leased"],)]
    db.execute("SELECT etcd_lease_revoke('s', %s)", (mine,))
    assert etcd_auth.get("auth/leased") is None

    theirs = _grant(db, 60)
    _attach(etcd_auth, theirs, "secret/leased")
    try:
        e = expect_error(db.conn, "SELECT etcd_lease_revoke('s', %s)", (theirs,), sqlstate="42501")
        assert "alicepw" not in err_text(e)
        assert etcd_auth.get("secret/leased") == b"v"
    finally:
        etcd_auth.ctl("lease", "revoke", f"{theirs:x}")
    assert etcd_auth.get("secret/leased") is None

    # no credentials: etcd refuses
    db.execute("ALTER USER MAPPING FOR CURRENT_USER SERVER s OPTIONS (SET password 'wrong')")
    expect_error(db.conn, "SELECT etcd_lease_grant('s', 60)", sqlstate="28P01")
