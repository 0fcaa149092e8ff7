"""Self-tests of the test harness (no etcd_fdw extension needed).

They check that the fixtures work on this machine: the PostgreSQL cluster,
etcd of every selected version, the TLS etcd and the auth etcd.
"""

import os
import socket
import ssl
import subprocess

import psycopg
import pytest

import harness
from harness import AUTH_PREFIX, EtcdctlError, QueryThread, expect_error, wait_until


def test_pg_cluster(bare_db, pg):
    assert bare_db.scalar("SELECT current_setting('server_version_num')::int / 10000") == harness.PG_MAJOR
    assert bare_db.scalar("SELECT current_setting('fsync')") == "off"
    assert bare_db.scalar("SELECT current_user") == "postgres"
    assert bare_db.scalar("SELECT current_database()") == bare_db.name
    # TCP listener on 127.0.0.1 works too
    with psycopg.connect(pg.conninfo(bare_db.name, tcp=True), autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    e = expect_error(bare_db.conn, "SELECT 1/0", sqlstate="22012")
    assert "division by zero" in str(e)


def test_pg_second_and_role_connection(bare_db):
    c2 = bare_db.second_connection()
    pid1, pid2 = bare_db.backend_pid(), bare_db.backend_pid(conn=c2)
    assert pid1 != pid2
    rc = bare_db.role_connection("harness_plain_role")
    assert bare_db.scalar("SELECT current_user", conn=rc) == "harness_plain_role"
    assert bare_db.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user", conn=rc) is False
    # pg_cancel_backend from the second connection cancels a running query:
    # sent once the backend sleeps in pg_sleep (its wait event), and the sleep
    # is far longer than the guard below, so only the cancel can end it
    sql = "SELECT pg_sleep(600)"
    t = QueryThread(bare_db.conn, sql)
    t.start()
    wait_until(
        lambda: not t.is_alive()
        or c2.execute(
            "SELECT state = 'active' AND query = %s AND wait_event = 'PgSleep' "
            "FROM pg_stat_activity WHERE pid = %s",
            (sql, pid1),
        ).fetchone() == (True,),
        f"backend {pid1} sleeping in pg_sleep",
    )
    assert t.is_alive(), f"pg_sleep(600) ended early: error={t.error!r}"
    c2.execute("SELECT pg_cancel_backend(%s)", (pid1,))
    t.join(120)  # only a guard against a hang
    assert not t.is_alive()
    assert t.error is not None and t.error.sqlstate == "57014"
    assert bare_db.scalar("SELECT 1") == 1


def test_extension_files_present(bare_db):
    """The build installed the extension where this PostgreSQL looks for it."""
    sharedir = bare_db.scalar("SELECT setting FROM pg_config WHERE name = 'SHAREDIR'")
    control = os.path.join(sharedir, "extension", "etcd_fdw.control")
    assert os.path.exists(control), f"{control} is missing: run scripts/install.sh"
    assert bare_db.scalar(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'etcd_fdw'"
    ), "PostgreSQL does not list etcd_fdw as available"


def test_etcd_basic_ops(etcd):
    assert os.path.basename(etcd.etcd_bin) == "etcd"
    ver = subprocess.run([etcd.etcd_bin, "--version"], capture_output=True, text=True).stdout
    assert f"etcd Version: {etcd.version}" in ver
    # the pid is the real etcd server
    with open(f"/proc/{etcd.pid}/comm") as f:
        assert f.read().strip() == "etcd"
    r1 = etcd.put("harness/a", "x")
    r2 = etcd.put("harness/a", "y")
    assert r2 == r1 + 1
    assert etcd.get("harness/a") == b"y"
    assert etcd.get("harness/missing") is None
    etcd.put("harness/nl", b"line1\nline2\n")
    assert etcd.get("harness/nl") == b"line1\nline2\n"
    etcd.put("harness/empty", "")
    assert etcd.get("harness/empty") == b""
    etcd.put("harness/-dash", "-v")
    assert etcd.get("harness/-dash") == b"-v"
    etcd.put("harness/bin", b"\x00\xff\xfe")
    assert etcd.get("harness/bin") == b"\x00\xff\xfe"
    rev = etcd.put_many({f"harness/many/{i:03d}": f"ü{i}" for i in range(250)})
    assert rev == etcd.revision()
    assert etcd.get("harness/many/249") == "ü249".encode()
    kv = etcd.get_kv("harness/a")
    assert kv["version"] == 2 and kv["mod_revision"] == r2 and kv["create_revision"] == r1
    etcd.delete_prefix("harness/")
    assert etcd.get("harness/a") is None


def test_etcd_stop_cont(etcd_fresh):
    etcd_fresh.put("k", "v")
    etcd_fresh.stop()
    try:
        # stop() returns once every thread of etcd is stopped
        states = harness.process_state(etcd_fresh.pid)
        assert states and states <= {"T", "t"}, states
        with pytest.raises((EtcdctlError, subprocess.TimeoutExpired)):
            etcd_fresh.ctl("get", "k", "--command-timeout", "1s", timeout=10)
    finally:
        etcd_fresh.cont()
    assert etcd_fresh.get("k") == b"v"


def test_etcd_destroy_kills_stopped_process(etcd_fresh):
    from harness import EtcdServer

    srv = EtcdServer(etcd_fresh.version).start()
    pid, base = srv.pid, srv.base
    srv.stop()
    srv.destroy()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not os.path.exists(base)


def test_etcd_tls(etcd_tls, certs):
    assert etcd_tls.url.startswith("https://127.0.0.1:")
    # plain etcdctl health check with explicit certs, as a user would
    env = dict(os.environ, ETCDCTL_API="3")
    base = [etcd_tls.etcdctl_bin, "--endpoints", etcd_tls.url, "--dial-timeout", "1s"]
    ok = subprocess.run(
        base + ["--cacert", certs.ca, "--cert", certs.client_cert, "--key", certs.client_key,
                "endpoint", "health"],
        env=env, capture_output=True, timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    # the server cert is valid for etcd.test and 127.0.0.1, not for wrong.name
    ctx = ssl.create_default_context(cafile=certs.ca)
    ctx.load_cert_chain(certs.client_cert, certs.client_key)
    for name in ("etcd.test", "localhost"):
        with socket.create_connection(("127.0.0.1", etcd_tls.port), timeout=5) as s:
            with ctx.wrap_socket(s, server_hostname=name):
                pass
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection(("127.0.0.1", etcd_tls.port), timeout=5) as s:
            with ctx.wrap_socket(s, server_hostname="wrong.name"):
                pass
    # no client cert -> refused (client cert auth)
    bad = subprocess.run(
        base + ["--cacert", certs.ca, "--command-timeout", "1s", "endpoint", "health"],
        env=env, capture_output=True, timeout=30,
    )
    assert bad.returncode != 0
    # wrong CA -> refused
    bad = subprocess.run(
        base + ["--cacert", certs.other_ca, "--cert", certs.client_cert, "--key",
                certs.client_key, "--command-timeout", "1s", "endpoint", "health"],
        env=env, capture_output=True, timeout=30,
    )
    assert bad.returncode != 0
    etcd_tls.put("tls/k", "v")
    assert etcd_tls.get("tls/k") == b"v"
    etcd_tls.put_many({"tls/m": "w"})
    assert etcd_tls.get("tls/m") == b"w"
    # the postgres OS user can read the files the backend will load
    if os.geteuid() == 0:
        for f in (certs.ca, certs.client_cert, certs.client_key, certs.other_ca):
            r = subprocess.run(["runuser", "-u", "postgres", "--", "cat", f], capture_output=True)
            assert r.returncode == 0, (f, r.stderr)


def test_etcd_auth(etcd_auth):
    assert etcd_auth.get(AUTH_PREFIX + "a") == b"1"  # as root
    etcd_auth.put_many({AUTH_PREFIX + "c": "3"})
    env = dict(os.environ, ETCDCTL_API="3")
    base = [etcd_auth.etcdctl_bin, "--endpoints", etcd_auth.url, "--dial-timeout", "3s"]

    def as_user(creds, *args):
        return subprocess.run(base + ["--user", creds, *args], env=env, capture_output=True,
                              timeout=30)

    r = as_user("alice:alicepw", "get", "--prefix", AUTH_PREFIX, "--print-value-only")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [b"1", b"2", b"3"]
    r = as_user("alice:alicepw", "get", "secret/x")
    assert r.returncode != 0 and b"permission denied" in r.stderr
    r = as_user("alice:nope", "get", AUTH_PREFIX + "a")
    assert r.returncode != 0
    r = subprocess.run(base + ["get", AUTH_PREFIX + "a"], env=env, capture_output=True, timeout=30)
    assert r.returncode != 0


def test_blackhole_and_dead_endpoint(blackhole, dead_endpoint):
    import socket
    import time

    c = socket.socket()
    c.settimeout(1.0)
    t0 = time.monotonic()
    with pytest.raises(socket.timeout):
        c.connect(("127.0.0.1", blackhole.port))
    assert time.monotonic() - t0 >= 0.9
    c.close()
    host, port = dead_endpoint.split(":")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=2)
