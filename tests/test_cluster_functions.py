"""The cluster functions: etcd_members, etcd_status, etcd_alarms,
etcd_compact and etcd_certificates (src/api/cluster.rs,
src/api/certificates.rs), against etcd 3.4 and 3.5.

* members and status on a 3-member cluster, compared with etcdctl's
  `member list -w json` / `endpoint status -w json` (ids in hex); with one
  member killed (and one SIGSTOPped), status still answers: that member's
  row is reachable = false with the reason in `errors`, in about one
  timeout, not one per dead member; with etcd authentication the caller's
  user mapping is used (a wrong password is the row's error, a borrowed
  server-level identity is 2F003 for a non-superuser);
* alarms: none on a healthy cluster; NOSPACE on an etcd with a tiny
  --quota-backend-bytes after one large put;
* compact: a superuser compacts (reading the old revision through a
  foreign table then fails as compacted); etcd's refusals (future / already
  compacted revision) are 22023 naming the revision; EXECUTE is not
  PUBLIC's (fresh install and update): a non-superuser gets 42501 until
  GRANT EXECUTE;
* certificates: the test PKI's CA and client certificate from the ssl_ca
  and ssl_cert files, and the chain a TLS etcd presents, with not_after
  equal to `openssl x509 -enddate`, and days_left; a plain server has no
  rows (and a NOTICE); an unreachable TLS endpoint is a WARNING; only a
  superuser or the server's owner may call it (42501).
"""

from __future__ import annotations

import datetime
import json
import subprocess

import psycopg
import pytest

from harness import ETCD_VERSION_IDS, selected_etcd_versions
from etcdcluster import EtcdCluster
from harness import EtcdServer, QueryThread, expect_error, finish_or_rescue, wait_until

CONNECT_TIMEOUT = 2
REQUEST_TIMEOUT = 4
ETCD_PARAMS = [pytest.param(v, id=ETCD_VERSION_IDS[v]) for v in selected_etcd_versions()]
TIMEOUTS = {"connect_timeout": str(CONNECT_TIMEOUT), "request_timeout": str(REQUEST_TIMEOUT)}


# --------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------


@pytest.fixture(scope="module", params=ETCD_PARAMS)
def cluster(request):
    c = EtcdCluster(version=request.param)
    try:
        c.start()
        yield c
    finally:
        c.destroy()


@pytest.fixture
def healthy(cluster):
    cluster.ensure_all_running()
    return cluster


def ctl_json(cluster, *args, members=None):
    p = cluster.ctl(*args, "-w", "json", members=members, check=False)
    return json.loads(p.stdout)


def status_rows(db, server="s", conn=None):
    cur = (conn or db.conn).execute(f"SELECT * FROM etcd_status('{server}')")
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def timed(conn, sql, limit=30):
    t = QueryThread(conn, sql)
    t.start()
    finish_or_rescue(t, None, limit)
    if t.error is not None:
        raise t.error
    return t.rows, t.elapsed


def wait_for_leader(db, cluster, alive):
    """etcd_status rows once the live members agree on a leader (an
    election on a loaded machine can take several seconds)."""
    def agreed():
        rows = status_rows(db)
        live = [r for r in rows if r["reachable"]]
        leaders = {r["leader"] for r in live}
        return rows if len(live) == len(alive) and len(leaders) == 1 and None not in leaders else None

    return wait_until(agreed, f"{[m.name for m in alive]} to agree on a leader", interval=0.1)


# --------------------------------------------------------------------------
# members, status, alarms on a 3-member cluster
# --------------------------------------------------------------------------


def test_members_match_etcdctl(db, healthy):
    cluster = healthy
    db.create_server("s", cluster.connstr, **TIMEOUTS)
    rows = db.rows("SELECT * FROM etcd_members('s')")
    listed = ctl_json(cluster, "member", "list")["members"]
    expected = sorted(
        (
            format(int(m["ID"]), "x"),
            m["name"],
            m["peerURLs"],
            m["clientURLs"],
            bool(m.get("isLearner", False)),
        )
        for m in listed
    )
    expected.sort(key=lambda r: (r[1], int(r[0], 16)))  # by name, then id
    assert rows == expected
    assert [r[1] for r in rows] == ["m1", "m2", "m3"]
    for (_id, name, peers, clients, _l) in rows:
        assert peers == [cluster[name].peer_url] and clients == [cluster[name].url]
    # ids are lowercase hex without 0x, as etcdctl's table prints them
    table = cluster.ctl("member", "list").stdout.decode()
    for r in rows:
        assert r[0] in table and all(c in "0123456789abcdef" for c in r[0])
    assert db.rows("SELECT * FROM etcd_alarms('s')") == []


def test_status_matches_etcdctl(db, healthy):
    cluster = healthy
    db.create_server("s", cluster.connstr, **TIMEOUTS)
    rows = wait_for_leader(db, cluster, cluster.members)
    st = ctl_json(cluster, "endpoint", "status")
    by_url = {e["Endpoint"]: e["Status"] for e in st}
    assert [r["endpoint"] for r in rows] == [m.endpoint for m in cluster.members]
    members = {r[0]: r[1] for r in db.rows("SELECT id, name FROM etcd_members('s')")}
    for r, m in zip(rows, cluster.members):
        s = by_url[m.url]
        assert r["reachable"] is True and r["errors"] == []
        assert r["version"] == s["version"] == cluster.version
        assert r["leader"] == format(int(s["leader"]), "x")
        assert r["raft_term"] == int(s["raftTerm"])
        assert r["raft_index"] > 0 and abs(r["raft_index"] - int(s["raftIndex"])) < 100
        assert 0 < r["db_size_in_use"] <= r["db_size"]
        assert r["db_size"] > 0
        me = format(int(s["header"]["member_id"]), "x")
        assert r["is_leader"] == (me == r["leader"])
    assert sum(r["is_leader"] for r in rows) == 1
    leader_name = db.scalar(
        "SELECT m.name FROM etcd_status('s') s JOIN etcd_members('s') m ON m.id = s.leader "
        "WHERE s.is_leader"
    )
    assert leader_name == cluster.leader()
    assert members[rows[0]["leader"]] == leader_name


def test_status_with_a_dead_and_a_paused_member(db, healthy):
    """connect_timeout 4 s here: a paused member costs one connect_timeout
    (at least: the timer cannot fire early); asked one after the other, two
    paused members would cost at least two, so the bound between the two
    leaves a loaded machine connect_timeout of slack."""
    cluster = healthy
    m1, m2, m3 = cluster.members
    connect_timeout = 4
    db.create_server(
        "s", cluster.connstr,
        connect_timeout=str(connect_timeout), request_timeout=str(3 * connect_timeout),
    )
    m3.kill()
    try:
        rows = wait_for_leader(db, cluster, [m1, m2])
        assert [r["reachable"] for r in rows] == [True, True, False]
        dead = rows[2]
        assert dead["endpoint"] == m3.endpoint
        assert dead["version"] is None and dead["leader"] is None and dead["is_leader"] is None
        assert len(dead["errors"]) == 1, dead
        assert dead["errors"][0].startswith("could not connect: ") and "refused" in dead["errors"][0]
        assert rows[0]["leader"] == rows[1]["leader"]
        # the members are still listed (through a live member)
        assert [r[0] for r in db.rows("SELECT name FROM etcd_members('s')")] == ["m1", "m2", "m3"]

        # a paused member (TCP connects, nothing answers) costs about one
        # connect_timeout, asked alongside the others, not after them
        m2.stop()
        rows, elapsed = timed(db.conn, "SELECT endpoint, reachable, errors FROM etcd_status('s')")
        assert [r[1] for r in rows] == [True, False, False], rows
        assert "timed out" in rows[1][2][0], rows
        assert connect_timeout <= elapsed < 2 * connect_timeout, elapsed
        # a failure in the first member's answer is not the call's; two
        # paused members cost one connect_timeout, not two
        m1.stop()
        rows, elapsed = timed(db.conn, "SELECT reachable FROM etcd_status('s')")
        assert rows == [(False,), (False,), (False,)]
        assert connect_timeout <= elapsed < 2 * connect_timeout, elapsed
    finally:
        cluster.ensure_all_running()


def test_status_with_etcd_auth(db, etcd_auth):
    """The caller's user mapping authenticates each endpoint's connection;
    a wrong password is the row's error; a non-superuser may not borrow
    the server's etcd user (2F003, as for any connection)."""
    db.create_server("s", etcd_auth.endpoint, **TIMEOUTS)
    db.create_user_mapping("s", username="alice", password="alicepw")
    assert db.rows("SELECT reachable, version, errors FROM etcd_status('s')") == [
        (True, etcd_auth.version, [])
    ]
    assert [r[1] for r in db.rows("SELECT * FROM etcd_members('s')")] == ["default"]
    # alice may not read key "\0", where etcd_revision() asks first: the
    # revision comes from the endpoint's status instead
    rev = db.scalar("SELECT etcd_revision('s')")
    assert rev == etcd_auth.revision(), rev
    db.execute("ALTER USER MAPPING FOR CURRENT_USER SERVER s OPTIONS (SET password 'wrong')")
    ((reachable, errors),) = db.rows("SELECT reachable, errors FROM etcd_status('s')")
    assert reachable is False
    assert errors == [
        'etcd authentication failed for user "alice": '
        "etcdserver: authentication failed, invalid user ID or password"
    ]
    assert "wrong" not in errors[0]
    db.execute("ALTER SERVER s OPTIONS (ADD username 'alice', ADD password 'alicepw')")
    rc = db.role_connection("borrower")
    db.execute("GRANT USAGE ON FOREIGN SERVER s TO borrower")
    for f in ("etcd_status('s')", "etcd_members('s')"):
        expect_error(rc, f"SELECT * FROM {f}", sqlstate="2F003", contains="password is required")


# --------------------------------------------------------------------------
# alarms: NOSPACE on an etcd with a tiny quota
# --------------------------------------------------------------------------


@pytest.mark.parametrize("version", ETCD_PARAMS)
def test_nospace_alarm(db, version):
    srv = EtcdServer(version, extra_args=["--quota-backend-bytes", str(256 * 1024)])
    try:
        srv.start()
        db.create_server("s", srv.endpoint, **TIMEOUTS)
        assert db.rows("SELECT * FROM etcd_alarms('s')") == []
        with pytest.raises(Exception, match="space"):
            srv.ctl("put", "big", input=b"x" * (512 * 1024))
        # etcd raises the alarm after refusing the put (a raft proposal of its own)
        rows = wait_until(lambda: db.rows("SELECT * FROM etcd_alarms('s')"), "the NOSPACE alarm",
                          interval=0.2)
        member = format(int(json.loads(srv.ctl("endpoint", "status", "-w", "json"))[0]
                            ["Status"]["header"]["member_id"]), "x")
        assert rows == [(member, "NOSPACE")]
        assert "NOSPACE" in srv.ctl("alarm", "list").decode()
        # etcd's own status errors come through
        errors = db.scalar("SELECT errors FROM etcd_status('s')")
        assert any("NOSPACE" in e for e in errors), errors
    finally:
        srv.destroy()


# --------------------------------------------------------------------------
# compaction
# --------------------------------------------------------------------------


COMPACT = "etcd_compact(name,bigint,boolean)"


def test_compact_superuser(db, etcd_fresh):
    etcd = etcd_fresh
    old = etcd.put("k", "1")
    new = etcd.put("k", "2")
    db.create_server("s", etcd.endpoint, **TIMEOUTS)
    db.create_table("t_old", "s", revision=str(old))
    assert db.rows("SELECT key, value FROM t_old") == [("k", "1")]
    db.execute("SELECT etcd_compact('s', %s)", (new,))
    e = expect_error(db.conn, "SELECT * FROM t_old", sqlstate="22023", contains="compacted")
    assert e is not None
    # the history before `new` is gone for etcdctl too
    with pytest.raises(Exception, match="compacted"):
        etcd.ctl("get", "k", f"--rev={old}")
    assert etcd.get("k") == b"2"
    # physical: waits for the storage; then the same revision again is refused
    newest = etcd.put("k", "3")
    db.execute("SELECT etcd_compact('s', %s, physical => true)", (newest,))
    expect_error(db.conn, f"SELECT etcd_compact('s', {newest})", sqlstate="22023",
                 contains=(f"revision {newest}", "already compacted"))
    expect_error(db.conn, f"SELECT etcd_compact('s', {newest + 100})", sqlstate="22023",
                 contains=(f"revision {newest + 100}", "beyond the current revision"))
    expect_error(db.conn, "SELECT etcd_compact('s', 0)", sqlstate="22023", contains="revision 0")
    assert etcd.get("k") == b"3"


def test_compact_needs_execute(db, etcd):
    db.create_server("s", etcd.endpoint, **TIMEOUTS)
    assert db.scalar(f"SELECT has_function_privilege('public', '{COMPACT}', 'EXECUTE')") is False
    rc = db.role_connection("compactor")
    db.execute("GRANT USAGE ON FOREIGN SERVER s TO compactor")
    rev = db.scalar("SELECT etcd_revision('s')", conn=rc)
    expect_error(rc, f"SELECT etcd_compact('s', {rev})", sqlstate="42501",
                 contains="etcd_compact")
    # the read-only functions need USAGE only
    assert len(db.rows("SELECT * FROM etcd_members('s')", conn=rc)) == 1
    assert db.rows("SELECT reachable FROM etcd_status('s')", conn=rc) == [(True,)]
    assert db.rows("SELECT * FROM etcd_alarms('s')", conn=rc) == []
    db.execute(f"GRANT EXECUTE ON FUNCTION {COMPACT} TO compactor")
    rev = etcd.put("compact-me", "x")
    db.execute(f"SELECT etcd_compact('s', {rev})", conn=rc)
    with pytest.raises(Exception, match="compacted"):
        etcd.ctl("get", "compact-me", f"--rev={rev - 1}")
    # without USAGE on the server: 42501 before anything else
    db.execute("REVOKE USAGE ON FOREIGN SERVER s FROM compactor")
    for f in ("etcd_members('s')", "etcd_status('s')", "etcd_alarms('s')"):
        expect_error(rc, f"SELECT * FROM {f}", sqlstate="42501", contains="foreign server s")
    expect_error(rc, f"SELECT etcd_compact('s', {rev})", sqlstate="42501")


def test_compact_not_public_after_update(bare_db):
    c = bare_db.conn
    c.execute("CREATE EXTENSION etcd_fdw VERSION '0.1.0'")
    c.execute("ALTER EXTENSION etcd_fdw UPDATE")
    assert c.execute(
        f"SELECT has_function_privilege('public', '{COMPACT}', 'EXECUTE')"
    ).fetchone() == (False,)
    for f in ("etcd_members(name)", "etcd_status(name)", "etcd_alarms(name)",
              "etcd_certificates(name)"):
        assert c.execute(
            f"SELECT has_function_privilege('public', '{f}', 'EXECUTE')"
        ).fetchone() == (True,)


# --------------------------------------------------------------------------
# certificates
# --------------------------------------------------------------------------


def openssl_field(path, flag):
    out = subprocess.run(
        ["openssl", "x509", "-noout", flag, "-nameopt", "RFC2253", "-in", path],
        capture_output=True, check=True, text=True,
    ).stdout.strip()
    return out.split("=", 1)[1]


def openssl_enddate(path):
    raw = openssl_field(path, "-enddate")  # e.g. "Dec  3 07:20:00 2026 GMT"
    return datetime.datetime.strptime(raw, "%b %d %H:%M:%S %Y GMT").replace(
        tzinfo=datetime.timezone.utc
    )


def openssl_checkend(path, seconds):
    """True when `openssl x509 -checkend` says the certificate is still valid
    `seconds` from now (exit 0), False when it will have expired (exit 1)."""
    p = subprocess.run(
        ["openssl", "x509", "-noout", "-in", path, "-checkend", str(seconds)],
        capture_output=True, timeout=60,
    )
    assert p.returncode in (0, 1), p.stderr
    return p.returncode == 0


def cert_rows(db, server="s", conn=None):
    cur = (conn or db.conn).execute(f"SELECT * FROM etcd_certificates('{server}')")
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def tls_server(db, etcd_tls, certs, connstr):
    db.create_server(
        "s", connstr,
        ssl_ca=certs.ca, ssl_cert=certs.client_cert, ssl_key=certs.client_key, **TIMEOUTS,
    )


def test_certificates_of_a_tls_server(db, etcd_tls, certs):
    tls_server(db, etcd_tls, certs, etcd_tls.url)
    # days_left counts from the statement's start: the same instant that
    # statement_timestamp() gives the query, so the expected value is exact
    # (a second reading of the wall clock is not: it is a different instant,
    # and on a VM the wall clock can step)
    cur = db.conn.execute(
        "SELECT c.*, floor(extract(epoch FROM c.not_after - statement_timestamp()) / 86400) "
        "AS expected, statement_timestamp() AS at FROM etcd_certificates('s') c")
    names = [d.name for d in cur.description]
    rows = [dict(zip(names, r)) for r in cur.fetchall()]
    assert [r["source"] for r in rows] == ["ssl_ca", "ssl_cert", etcd_tls.url]
    files = [certs.ca, certs.client_cert, certs.server_cert]
    for r, path in zip(rows, files):
        assert r["subject"] == openssl_field(path, "-subject")
        assert r["issuer"] == openssl_field(path, "-issuer")
        assert r["not_after"] == openssl_enddate(path)
        assert r["days_left"] == r["expected"], r
        # openssl's own answer agrees: valid for days_left more days, not for
        # one more (the test PKI is 7 days long and the run far shorter than
        # a day, so no day boundary falls between the statement and openssl)
        assert openssl_checkend(path, r["days_left"] * 86400), r
        assert not openssl_checkend(path, (r["days_left"] + 1) * 86400), r
    assert rows[0]["subject"] == "CN=etcd_fdw test CA" == rows[0]["issuer"]
    assert rows[1]["subject"] == "CN=etcd-fdw-client"
    assert rows[2]["subject"] == "CN=localhost" and rows[2]["issuer"] == "CN=etcd_fdw test CA"
    assert 5 <= rows[2]["days_left"] <= 7  # the test PKI is valid for 7 days
    # the expiry alert query of the README
    soon = db.rows(
        "SELECT source, subject FROM etcd_certificates('s') WHERE days_left < 30 ORDER BY 1"
    )
    assert len(soon) == 3
    # the status of the TLS endpoint, with the client certificate
    st = status_rows(db)
    assert [(r["endpoint"], r["reachable"], r["version"]) for r in st] == [
        (etcd_tls.url, True, etcd_tls.version)
    ]


def test_certificates_endpoint_without_scheme_and_dead(db, etcd_tls, certs, dead_endpoint):
    # ssl_* options make a scheme-less endpoint a TLS one
    tls_server(db, etcd_tls, certs, f"{etcd_tls.endpoint},{dead_endpoint}")
    notices = []
    db.conn.add_notice_handler(lambda d: notices.append((d.severity_nonlocalized, d.message_primary)))
    rows = cert_rows(db)
    assert [r["source"] for r in rows] == ["ssl_ca", "ssl_cert", etcd_tls.url]
    assert len(notices) == 1 and notices[0][0] == "WARNING", notices
    assert f"https://{dead_endpoint}" in notices[0][1]
    st = status_rows(db)
    assert [r["reachable"] for r in st] == [True, False]


def test_certificates_of_a_plain_server(db, dead_endpoint):
    db.create_server("s", dead_endpoint, **TIMEOUTS)
    notices = []
    db.conn.add_notice_handler(lambda d: notices.append((d.severity_nonlocalized, d.message_primary)))
    assert db.rows("SELECT * FROM etcd_certificates('s')") == []
    assert notices == [("NOTICE", 'server "s" does not use TLS: it has no certificates to show')]
    # an unreadable file is an error naming the option and the file
    db.execute("ALTER SERVER s OPTIONS (ADD ssl_ca '/nonexistent/ca.pem')")
    expect_error(db.conn, "SELECT * FROM etcd_certificates('s')", sqlstate="HV00N",
                 contains=("ssl_ca", "/nonexistent/ca.pem"))
    # status of a dead endpoint: a row, not an error
    db.execute("ALTER SERVER s OPTIONS (DROP ssl_ca)")
    st = status_rows(db)
    assert len(st) == 1 and st[0]["reachable"] is False and st[0]["errors"], st


def test_certificates_owner_or_superuser_only(db, etcd_tls, certs):
    tls_server(db, etcd_tls, certs, etcd_tls.url)
    other = db.role_connection("cert_reader")
    db.execute("GRANT USAGE ON FOREIGN SERVER s TO cert_reader")
    expect_error(other, "SELECT * FROM etcd_certificates('s')", sqlstate="42501",
                 contains='server "s"')
    owner = db.role_connection("cert_owner")
    db.execute("ALTER SERVER s OWNER TO cert_owner")
    rows = cert_rows(db, conn=owner)
    assert [r["source"] for r in rows] == ["ssl_ca", "ssl_cert", etcd_tls.url]
    # a member of the owning role counts as the owner
    db.execute("GRANT cert_owner TO cert_reader")
    assert len(cert_rows(db, conn=other)) == 3
