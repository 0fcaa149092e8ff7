"""etcd_fdw against a real 3-member etcd cluster (etcd 3.5) on loopback.

The cluster (members m1, m2, m3) is started once for the module; the server
option connstr lists all three client endpoints.  What is checked:

* reads see data written through any member, FDW writes are visible
  (linearizably) from every member, and a backend connects to the first
  endpoint of its connstr;
* a SIGSTOPped first member (TCP connects complete, nothing answers) is
  skipped by a new session within about connect_timeout;
* failover mid-session: after SIGKILL of the member a session is connected to,
  the same session's next SELECT succeeds on another member (one internal
  reconnect: connects = 2);
* with every member dead, a query fails with HV00N / 08006 naming the
  endpoints, within connect_timeout, and the session stays usable.

The destructive tests run last (test order = file order): the failover test
kills m1 for good, the last test kills every member.  Every test first brings
back members an earlier test left stopped or dead, so any subset can be run
on its own (pytest -k).

Which member a backend is connected to is read from the kernel: the
backend's sockets (/proc/<pid>/fd) matched against /proc/net/tcp.  That needs
root (the backend runs as the postgres OS user); without it those checks are
skipped.
"""

from __future__ import annotations

import os
import re
import signal

import psycopg
import pytest

from etcdcluster import ELECTION_ERRORS, EtcdCluster
from harness import (
    QueryThread,
    assert_session_usable,
    err_text,
    finish_or_rescue,
    sigstop_and_wait,
    wait_until,
)

CONNECT_TIMEOUT = 2  # seconds (server option connect_timeout)
REQUEST_TIMEOUT = 5  # seconds (server option request_timeout)
TIMEOUTS = {"connect_timeout": str(CONNECT_TIMEOUT), "request_timeout": str(REQUEST_TIMEOUT)}
# The longest wait between two attempts of a retried read (core/src/client.rs
# Backoff::MAX): a read retried until request_timeout gives up only once the
# next wait would end past it, so no earlier than request_timeout - this.
BACKOFF_MAX = 1.0


# --------------------------------------------------------------------------
# the cluster (tests/etcdcluster.py)
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    c = EtcdCluster()
    try:
        c.start()
        yield c
    finally:
        c.destroy()  # SIGCONTs and SIGKILLs every member, removes the dirs


@pytest.fixture
def healthy(cluster):
    """The cluster with all three members up (restarting what a test left down)."""
    cluster.ensure_all_running()
    return cluster


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _socket_inodes(pid):
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def backend_peer_ports(pid):
    """Remote ports of the ESTABLISHED TCP connections of process pid to 127.0.0.1.

    None when /proc/<pid>/fd is not readable (not root).
    """
    try:
        inodes = _socket_inodes(pid)
    except (PermissionError, FileNotFoundError):
        return None
    ports = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            rem_addr, rem_port = cols[2].split(":")
            state, inode = cols[3], cols[9]
            if inode in inodes and state == "01" and rem_addr == "0100007F":
                ports.add(int(rem_port, 16))
    return ports


def assert_connected_to(db, conn, cluster, member):
    """The backend of conn holds a TCP connection to `member` and to no other member."""
    pid = db.backend_pid(conn)
    ports = backend_peer_ports(pid)
    assert ports is not None, (
        f"cannot read the sockets of backend {pid} (/proc/{pid}/fd): run the tests as root "
        "or as the postgres OS user"
    )
    client_ports = {m.client_port: m.name for m in cluster.members}
    connected = sorted(client_ports[p] for p in ports if p in client_ports)
    assert connected == [member.name], (
        f"backend {pid} should be connected to {member.name} only, is connected to {connected}"
    )


def connected_members(db, conn, cluster):
    """Names of the members the backend of conn has a TCP connection to (None: unknown)."""
    ports = backend_peer_ports(db.backend_pid(conn))
    if ports is None:
        return None
    client_ports = {m.client_port: m.name for m in cluster.members}
    return sorted(client_ports[p] for p in ports if p in client_ports)


def connects(db, conn, server="s"):
    rows = db.rows(
        "SELECT server_name, endpoints, connects FROM etcd_fdw_get_connections() "
        "WHERE server_name = %s",
        (server,),
        conn=conn,
    )
    assert len(rows) == 1, rows
    return rows[0][2]


def _tcp_rows():
    """(local port, remote port, rx_queue, inode) of every loopback TCP
    connection (/proc/net/tcp)."""
    rows = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            loc_addr, loc_port = cols[1].split(":")
            rem_addr, rem_port = cols[2].split(":")
            if loc_addr == rem_addr == "0100007F" and cols[3] == "01":
                rx_queue = int(cols[4].split(":")[1], 16)
                rows.append((int(loc_port, 16), int(rem_port, 16), rx_queue, cols[9]))
    return rows


def unread_bytes_from_backend(pid, member):
    """Bytes backend `pid` has sent to `member` that the member has not
    read yet (the receive queues of the member's ends of the backend's
    connections: a paused member reads nothing, so a request the backend
    sends it stays there).  Needs root, as assert_connected_to."""
    inodes = _socket_inodes(pid)
    rows = _tcp_rows()
    backend_ports = {lp for (lp, rp, _q, ino) in rows if ino in inodes and rp == member.client_port}
    assert backend_ports, f"backend {pid} has no connection to {member.name}"
    return sum(q for (lp, rp, q, _ino) in rows if lp == member.client_port and rp in backend_ports)


def gateway_view(cluster, members):
    """{name: (member_id, leader_id, raft_term) or None} of the members, one
    gateway call each."""
    return {m.name: cluster.gateway_status(m) for m in members}


def timed_select(db, conn, sql, member_to_rescue=None, limit=60):
    """Run sql on conn in a thread (never hangs the test); returns the QueryThread."""
    t = QueryThread(conn, sql)
    t.start()
    finish_or_rescue(t, member_to_rescue, limit)
    return t


# --------------------------------------------------------------------------
# tests (file order matters: destructive tests last)
# --------------------------------------------------------------------------


def test_reads_and_writes_through_every_member(db, healthy, kp):
    cluster = healthy
    m1, m2, m3 = cluster.members
    # writes through each member individually
    expected = {}
    for m in cluster.members:
        key = f"{kp}from-{m.name}"
        cluster.put(m, key, f"written via {m.name}")
        expected[key] = f"written via {m.name}"
    cluster.put(m1, kp[:-1] + "-outside", "not in the prefix")

    db.create_server("s", cluster.connstr, **TIMEOUTS)
    db.create_table("t", "s", prefix=kp)
    assert db.rows("SELECT key, value FROM t") == sorted(expected.items())
    assert connects(db, db.conn) == 1
    # the backend connected to the first endpoint of connstr
    assert_connected_to(db, db.conn, cluster, m1)
    endpoints = db.rows("SELECT endpoints FROM etcd_fdw_get_connections()")[0][0]
    for m in cluster.members:
        assert m.endpoint in endpoints, endpoints

    # a write through one member is seen on the next FDW read (linearizable)
    cluster.put(m3, kp + "late", "via m3 after connect")
    expected[kp + "late"] = "via m3 after connect"
    assert db.rows("SELECT key, value FROM t") == sorted(expected.items())

    # INSERT / UPDATE / DELETE through the FDW are visible from every member
    db.execute(
        "INSERT INTO t VALUES (%s, 'fdw-1'), (%s, 'fdw-2')", (kp + "fdw/a", kp + "fdw/b")
    )
    expected[kp + "fdw/a"] = "fdw-1"
    expected[kp + "fdw/b"] = "fdw-2"
    db.execute("UPDATE t SET value = 'updated' WHERE key = %s", (kp + "from-m2",))
    expected[kp + "from-m2"] = "updated"
    db.execute("DELETE FROM t WHERE key = %s", (kp + "from-m3",))
    del expected[kp + "from-m3"]
    for m in cluster.members:
        assert cluster.dump(m, kp) == expected, f"as seen through {m.name}"
    assert db.rows("SELECT key, value FROM t") == sorted(expected.items())

    # other orders of the same endpoints: each backend uses the first one
    for i, first in enumerate((m2, m3)):
        order = cluster.members[cluster.members.index(first):] + cluster.members[
            : cluster.members.index(first)
        ]
        name = f"s_{first.name}"
        db.create_server(name, ",".join(m.endpoint for m in order), **TIMEOUTS)
        db.create_table(f"t_{first.name}", name, prefix=kp)
        c = db.connect()
        assert db.rows(f"SELECT key, value FROM t_{first.name}", conn=c) == sorted(
            expected.items()
        )
        assert connects(db, c, name) == 1
        assert_connected_to(db, c, cluster, first)
        db.execute(
            f"INSERT INTO t_{first.name} VALUES (%s, %s)",
            (f"{kp}fdw/via-{first.name}", str(i)),
            conn=c,
        )
        expected[f"{kp}fdw/via-{first.name}"] = str(i)
        c.close()
    for m in cluster.members:
        assert cluster.dump(m, kp) == expected, f"as seen through {m.name}"


def test_stopped_first_member_is_skipped_by_new_session(db, healthy, kp):
    """m1 SIGSTOPped: TCP connects to it complete (kernel backlog) but it never
    answers; a new session must fail over to m2 within about connect_timeout.

    request_timeout is long here (20 s): were m1 not skipped at connect
    time (after connect_timeout), the read sent to it would be given up only
    after its share of request_timeout (half of it, with other members to
    try), 10 s; the bound between the two leaves a loaded machine 8 s."""
    cluster = healthy
    m1, m2, _m3 = cluster.members
    request_timeout = 20
    per_attempt = request_timeout / 2  # src/connection.rs retry_loop
    cluster.put(m2, kp + "a", "1")
    cluster.put(m2, kp + "b", "2")
    # keep leader election out of this test: m1 must not be the leader
    cluster.move_leader("m2")

    db.create_server(
        "s", cluster.connstr, connect_timeout=str(CONNECT_TIMEOUT), request_timeout=str(request_timeout)
    )
    db.create_table("t", "s", prefix=kp)
    m1.stop()
    try:
        c = db.connect()  # a new session: no cached etcd connection
        t = timed_select(db, c, "SELECT key, value FROM t", m1, limit=3 * (CONNECT_TIMEOUT + request_timeout))
        if t.error is not None:
            pytest.fail(
                f"a new session did not fail over past the stopped m1: error after "
                f"{t.elapsed:.1f}s (connect_timeout {CONNECT_TIMEOUT}s, request_timeout "
                f"{REQUEST_TIMEOUT}s): SQLSTATE {t.error.sqlstate}: {err_text(t.error)}\n"
                f"backend connected to {connected_members(db, c, cluster)}; "
                f"etcd_fdw_get_connections: "
                f"{db.rows('SELECT * FROM etcd_fdw_get_connections()', conn=c)}"
            )
        assert t.rows == [(kp + "a", "1"), (kp + "b", "2")]
        # m1 was tried first and given connect_timeout (a lower bound: the
        # timer cannot fire early), then skipped: well before a read sent
        # to it would have been given up
        assert CONNECT_TIMEOUT <= t.elapsed < per_attempt, (
            f"failover past the stopped m1 took {t.elapsed:.1f}s "
            f"(connect_timeout {CONNECT_TIMEOUT}s; a read sent to m1 is given up after {per_attempt}s)"
        )
        assert connects(db, c) == 1
        assert_connected_to(db, c, cluster, m2)
        # the session keeps using m2: no new connect (any connect, even one
        # that tries m1 first and waits connect_timeout there, counts)
        t = timed_select(db, c, "SELECT count(*) FROM t", m1, limit=3 * (CONNECT_TIMEOUT + request_timeout))
        assert t.error is None, err_text(t.error)
        assert t.rows == [(2,)]
        assert connects(db, c) == 1
        assert_connected_to(db, c, cluster, m2)
        assert_session_usable(c)
    finally:
        m1.cont()
    cluster.wait_healthy()


def _commit_with_member_paused(db, cluster, kp, writes, during=None, freeze_backend=False, metadata=False,
                               statement_mode=False):
    """A transaction on a session connected to m1 (a follower) that runs
    `writes`; m1 is paused (SIGSTOP) just before COMMIT, `during()` runs
    once the commit's request has reached m1 (it waits, unread, in m1's
    socket), and m1 is continued after the COMMIT returned.

    freeze_backend: the backend is paused (SIGSTOP) while `during()` runs,
    so that the commit cannot give up on m1 (request_timeout) and read the
    keys back before `during()` is done, however slow the machine.
    metadata: the table has the metadata columns (lease among them).
    statement_mode: the table has commit_mode 'statement' and there is no
    transaction: the last of `writes` takes the COMMIT's place.  Its scan
    must read m1 before m1 is paused, so it calls gate(...) (a function
    that waits on an advisory lock the test holds) on each row it read:
    m1 is paused while the statement waits there, then the lock is let go
    and the statement's write goes to the paused m1.
    Returns (the COMMIT's thread, the connection)."""
    m1 = cluster.members[0]
    cluster.move_leader("m2")
    db.create_server("s", cluster.connstr, **TIMEOUTS, **({"commit_mode": "statement"} if statement_mode else {}))
    columns = "key text, value text"
    if metadata:
        columns += ", create_revision bigint, mod_revision bigint, version bigint, lease bigint"
    mode = {"commit_mode": "statement"} if statement_mode else {}
    db.create_table("t", "s", prefix=kp, columns=columns, **mode)
    c = db.connect()
    backend = db.backend_pid(c)
    last = "COMMIT"
    gate = None
    if statement_mode:
        *writes, last = writes
        db.execute(
            "CREATE FUNCTION gate(v anyelement) RETURNS anyelement VOLATILE LANGUAGE plpgsql "
            "AS $$ BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN v; END $$"
        )
        gate = db.connect()
        gate.execute("SELECT pg_advisory_lock(4242)")
    else:
        c.execute("BEGIN")
    c.execute("SELECT count(*) FROM t")  # connects (pending writes do not)
    for sql in writes:
        c.execute(sql)
    assert_connected_to(db, c, cluster, m1)
    t = QueryThread(c, last)
    if gate is not None:
        t.start()
        wait_until(
            lambda: not t.is_alive() or db.rows(
                "SELECT 1 FROM pg_locks WHERE pid = %s AND locktype = 'advisory' AND NOT granted",
                (backend,), conn=gate),
            "the statement to wait at gate() after its scan",
        )
        assert t.is_alive(), f"the statement ended before gate(): {t.error!r}"
    m1.stop()
    try:
        before = unread_bytes_from_backend(backend, m1)
        if gate is not None:
            gate.execute("SELECT pg_advisory_unlock(4242)")
        else:
            t.start()
        if during is not None:
            wait_until(
                lambda: not t.is_alive() or unread_bytes_from_backend(backend, m1) > before,
                "the COMMIT's request to reach the paused m1",
            )
            assert t.is_alive(), f"COMMIT ended before its request reached m1: {t.error!r}"
            if freeze_backend:
                sigstop_and_wait(backend)
            try:
                during()
            finally:
                if freeze_backend:
                    os.kill(backend, signal.SIGCONT)
        finish_or_rescue(t, None, limit=3 * REQUEST_TIMEOUT + 2 * CONNECT_TIMEOUT + 10)
    finally:
        m1.cont()
    assert_session_usable(c)
    return t, c


def test_commit_in_flight_to_a_paused_member_is_resolved(db, healthy, kp):
    """The commit Txn times out on a paused member: etcd_fdw reads the keys
    back through another member.  The write is not visible there, so the
    outcome cannot be decided: 08007 naming the key, never success."""
    cluster = healthy
    t, c = _commit_with_member_paused(
        db, cluster, kp, [f"INSERT INTO t VALUES ('{kp}x', 'v')"])
    assert t.error is not None, "COMMIT reported success although etcd never showed the write"
    assert t.error.sqlstate == "08007", (t.error.sqlstate, err_text(t.error))
    assert f"{kp}x" in err_text(t.error)
    assert "unknown" in err_text(t.error)
    assert "may still be queued at the member that took it" in err_text(t.error), err_text(t.error)


def test_commit_to_a_member_killed_mid_commit_is_resolved(db, healthy, kp):
    """m1 is SIGKILLed (while stopped, so it never handles the request) as
    the commit waits on it: the transport breaks, the keys are read back
    through m2, the write is not there: 08007, never success; the session
    goes on, and m2 and m3 hold nothing of the transaction."""
    cluster = healthy
    m1, m2 = cluster.members[0], cluster.members[1]

    def kill_stopped():
        os.kill(m1.proc.pid, signal.SIGKILL)
        m1.proc.wait(10)

    t, c = _commit_with_member_paused(
        db, cluster, kp, [f"INSERT INTO t VALUES ('{kp}k', 'v')"], during=kill_stopped)
    assert t.error is not None and t.error.sqlstate == "08007", t.error
    assert f"{kp}k" in err_text(t.error)
    assert cluster.dump(m2, kp) == {}
    assert db.rows("SELECT key FROM t", conn=c) == []


def test_commit_in_flight_that_was_applied_is_success(db, healthy, kp):
    """The same, but the transaction's writes are visible when the keys are
    read back (here: the identical values were written through another
    member while the commit waited), so the COMMIT reports success."""
    cluster = healthy
    m2 = cluster.members[1]
    t, c = _commit_with_member_paused(
        db, cluster, kp, [f"INSERT INTO t VALUES ('{kp}a', '1'), ('{kp}b', '2')"],
        during=lambda: cluster.ctl(
            "txn", members=[m2], input=f"\nput {kp}a 1\nput {kp}b 2\n\n\n".encode()),
        freeze_backend=True,
    )
    assert t.error is None, err_text(t.error)
    assert cluster.dump(m2, kp) == {f"{kp}a": "1", f"{kp}b": "2"}


def _revision(cluster, member, kp):
    """The cluster's revision, read through `member`."""
    rev, _ = cluster.get_prefix(f"{kp}none/", members=[member])
    return rev


def test_commit_in_flight_beaten_by_another_writer_is_40001(db, healthy, kp):
    """The commit of an UPDATE waits on the paused m1 while another client
    changes the same key through m2.  The answer is lost; etcd's history
    shows the key's first change after the transaction read it was the
    other client's, so the commit can never apply: 40001 (not 08007), and
    the key keeps the other client's value once m1 runs again."""
    cluster = healthy
    m2 = cluster.members[1]
    cluster.put(m2, f"{kp}u", "0")
    t, c = _commit_with_member_paused(
        db, cluster, kp, [f"UPDATE t SET value = 'mine' WHERE key = '{kp}u'"],
        during=lambda: cluster.put(m2, f"{kp}u", "theirs"),
        freeze_backend=True,
    )
    assert t.error is not None, "COMMIT reported success although another client changed the key first"
    assert t.error.sqlstate == "40001", (t.error.sqlstate, err_text(t.error))
    assert f"{kp}u" in err_text(t.error)
    assert "history" in err_text(t.error) and "never will be" in err_text(t.error)
    cluster.wait_healthy()
    assert cluster.dump(m2, kp) == {f"{kp}u": "theirs"}


def test_commit_in_flight_applied_then_overwritten_is_success(db, healthy, kp):
    """The commit's write reached etcd (here: the same values written
    through m2 as one transaction, as the lost commit would have), and
    another client changed one key after it.  The keys no longer show the
    commit's values, but their history does: the first change of both
    guarded keys is one write with the commit's values, so the COMMIT
    reports success (it was 08007 before the history was read)."""
    cluster = healthy
    m2 = cluster.members[1]
    cluster.put(m2, f"{kp}a", "0")
    cluster.put(m2, f"{kp}b", "0")

    def applied_then_overwritten():
        cluster.ctl("txn", members=[m2], input=f"\nput {kp}a 1\nput {kp}b 2\n\n\n".encode())
        cluster.put(m2, f"{kp}a", "later")

    t, c = _commit_with_member_paused(
        db, cluster, kp,
        [f"UPDATE t SET value = '1' WHERE key = '{kp}a'", f"UPDATE t SET value = '2' WHERE key = '{kp}b'"],
        during=applied_then_overwritten,
        freeze_backend=True,
    )
    assert t.error is None, err_text(t.error)
    assert cluster.dump(m2, kp) == {f"{kp}a": "later", f"{kp}b": "2"}


def test_commit_in_flight_whose_history_was_compacted_is_08007(db, healthy, kp):
    """As above, but another client changed the key and etcd's history was
    compacted past the transaction's read before the commit's outcome is
    looked up: the first change cannot be found, so 08007, and the DETAIL
    says that the history was compacted."""
    cluster = healthy
    m2 = cluster.members[1]
    cluster.put(m2, f"{kp}c", "0")

    def changed_and_compacted():
        cluster.put(m2, f"{kp}c", "theirs")
        # one revision more: the compaction then removes the first change
        # (a watch may start at the compaction's revision itself)
        cluster.put(m2, f"{kp}other/d", "x")
        cluster.ctl("compact", str(_revision(cluster, m2, kp)), members=[m2])

    t, c = _commit_with_member_paused(
        db, cluster, kp, [f"UPDATE t SET value = 'mine' WHERE key = '{kp}c'"],
        during=changed_and_compacted,
        freeze_backend=True,
    )
    assert t.error is not None and t.error.sqlstate == "08007", t.error
    assert "compacted" in err_text(t.error), err_text(t.error)
    assert f"{kp}c" in err_text(t.error)
    assert cluster.dump(m2, f"{kp}c") == {f"{kp}c": "theirs"}


def test_commit_in_flight_of_a_key_another_client_created_is_08007(db, healthy, kp):
    """An INSERT's commit waits on the paused m1 while another client
    creates the same key through m2.  The commit did not apply, but a key
    guarded by its absence can be deleted again, and then the queued
    request would still apply: 08007, with a DETAIL naming the key the
    other client created (not 23505, which would promise it never applies)."""
    cluster = healthy
    m2 = cluster.members[1]
    t, c = _commit_with_member_paused(
        db, cluster, kp, [f"INSERT INTO t VALUES ('{kp}n', 'mine')"],
        during=lambda: cluster.put(m2, f"{kp}n", "theirs"),
        freeze_backend=True,
    )
    assert t.error is not None and t.error.sqlstate == "08007", t.error
    assert f'key "{kp}n" was created by another client' in err_text(t.error), err_text(t.error)
    cluster.wait_healthy()
    assert cluster.dump(m2, kp) == {f"{kp}n": "theirs"}


def test_commit_in_flight_keeping_the_value_is_not_taken_for_applied(db, healthy, kp):
    """An UPDATE that sets only the lease keeps etcd's value: its write
    cannot be recognised by value.  Its commit waits on the paused m1 and
    nothing changes the key: the key as it was is not the commit's write
    (it was taken for one before: the read-back compared only revisions),
    so 08007, never success."""
    cluster = healthy
    m2 = cluster.members[1]
    cluster.put(m2, f"{kp}k", "v")
    t, c = _commit_with_member_paused(
        db, cluster, kp, [f"UPDATE t SET lease = 0 WHERE key = '{kp}k'"], metadata=True,
    )
    assert t.error is not None, "COMMIT reported success although etcd never showed the write"
    assert t.error.sqlstate == "08007", (t.error.sqlstate, err_text(t.error))
    assert "may still be queued" in err_text(t.error), err_text(t.error)


def test_statement_write_in_flight_beaten_by_another_writer_is_40001(db, healthy, kp):
    """The same for a statement-mode UPDATE: its answer is lost, another
    client changed the key first: 40001, not 08007."""
    cluster = healthy
    m2 = cluster.members[1]
    cluster.put(m2, f"{kp}u", "0")
    t, c = _commit_with_member_paused(
        db, cluster, kp, [f"UPDATE t SET value = gate('mine'::text) WHERE key = '{kp}u'"],
        during=lambda: cluster.put(m2, f"{kp}u", "theirs"),
        freeze_backend=True, statement_mode=True,
    )
    assert t.error is not None and t.error.sqlstate == "40001", (t.error, t.error and err_text(t.error))
    assert "answer was lost" in err_text(t.error), err_text(t.error)
    cluster.wait_healthy()
    assert cluster.dump(m2, kp) == {f"{kp}u": "theirs"}


def test_statement_write_in_flight_applied_returns_its_rows(db, healthy, kp):
    """A statement-mode UPDATE ... RETURNING whose answer is lost, applied
    (the same value written through m2, as the lost write would have) and
    changed since: the statement succeeds, and RETURNING shows the row as
    the write left it (read at the revision it was applied at)."""
    cluster = healthy
    m2 = cluster.members[1]
    cluster.put(m2, f"{kp}a", "0")
    applied = {}

    def applied_then_overwritten():
        cluster.put(m2, f"{kp}a", "1")
        applied["rev"], _ = cluster.get_prefix(kp, members=[m2])
        cluster.put(m2, f"{kp}a", "later")

    t, c = _commit_with_member_paused(
        db, cluster, kp,
        [f"UPDATE t SET value = gate('1'::text) WHERE key = '{kp}a' RETURNING key, value, mod_revision"],
        during=applied_then_overwritten,
        freeze_backend=True, metadata=True, statement_mode=True,
    )
    assert t.error is None, err_text(t.error)
    assert t.rows == [(f"{kp}a", "1", applied["rev"])]
    assert cluster.dump(m2, kp) == {f"{kp}a": "later"}


def test_statement_delete_in_flight_applied_returns_the_old_rows(db, healthy, kp):
    """A statement-mode DELETE ... RETURNING whose answer is lost, while
    the key is deleted through m2: the key's first change is its deletion,
    so the DELETE succeeds and returns the row as it was."""
    cluster = healthy
    m2 = cluster.members[1]
    cluster.put(m2, f"{kp}d", "old")
    t, c = _commit_with_member_paused(
        db, cluster, kp, [f"DELETE FROM t WHERE key = '{kp}d' AND gate(value) IS NOT NULL RETURNING key, value"],
        during=lambda: cluster.ctl("del", f"{kp}d", members=[m2]),
        freeze_backend=True, statement_mode=True,
    )
    assert t.error is None, err_text(t.error)
    assert t.rows == [(f"{kp}d", "old")]


def test_kv_put_in_flight_whose_value_is_visible_is_success(db, healthy, kp):
    """etcd_put (statement mode) whose answer is lost while the same value
    is written through m2: a blind put guards nothing, its value visible
    is taken for it (sent again later it would write the same), so the
    call returns that write's revision instead of 08007."""
    cluster = healthy
    m2 = cluster.members[1]
    seen = {}

    def same_value_through_m2():
        cluster.put(m2, f"{kp}p", "v")
        _, kvs = cluster.get_prefix(kp, members=[m2])
        seen["rev"] = kvs[f"{kp}p"]["mod_revision"]

    t, c = _commit_with_member_paused(
        db, cluster, kp, [f"SELECT etcd_put('s', gate('{kp}p'::text), 'v')"],
        during=same_value_through_m2,
        freeze_backend=True, statement_mode=True,
    )
    assert t.error is None, err_text(t.error)
    # the revision the value became visible at (the queued put may still
    # apply once m1 runs again, writing the same value at a later one)
    assert t.rows == [(seen["rev"],)]
    assert cluster.dump(m2, kp) == {f"{kp}p": "v"}


def test_failover_mid_session_after_member_killed(db, healthy, kp):
    """SIGKILL the member a session is connected to (m1, made the leader so that
    the cluster must also elect a new one); the same session's next SELECT
    succeeds through m2 after one internal reconnect."""
    cluster = healthy
    m1, m2, m3 = cluster.members
    for i in range(5):
        cluster.put(m3, f"{kp}k{i}", f"v{i}")
    expected = [(f"{kp}k{i}", f"v{i}") for i in range(5)]
    cluster.move_leader("m1")

    db.create_server("s", cluster.connstr, **TIMEOUTS)
    db.create_table("t", "s", prefix=kp)
    c = db.connect()
    assert db.rows("SELECT key, value FROM t", conn=c) == expected
    assert connects(db, c) == 1
    assert_connected_to(db, c, cluster, m1)
    backend = db.backend_pid(c)

    m1.kill()
    # m2 and m3 agree on a new leader (an election: its length is etcd's
    # business, and a loaded machine's)
    new_leader = cluster.leader(members=[m2, m3])
    assert new_leader in ("m2", "m3")
    # the survivors also take new writes (so the data is there to read)
    cluster.put(m2, f"{kp}k5", "v5")
    expected.append((f"{kp}k5", "v5"))

    attempts = []  # (elapsed, error text or None)
    # a statement gives up once request_timeout is used up; the connect
    # round of its last attempt (each endpoint up to connect_timeout) is
    # not counted in it
    limit_per_attempt = REQUEST_TIMEOUT + len(cluster.members) * CONNECT_TIMEOUT
    # an election error reaches the client only when the cluster had no
    # leader for a whole request_timeout (a new election, load): each one
    # is followed by waiting for an agreed leader; a few are tolerated
    max_attempts = 4
    while True:
        t = timed_select(db, c, "SELECT key, value FROM t", None, limit=60)
        attempts.append((round(t.elapsed, 2), None if t.error is None else err_text(t.error)))
        assert t.elapsed <= limit_per_attempt, f"an attempt took too long: {attempts}"
        if t.error is None:
            break
        assert isinstance(t.error, psycopg.Error) and t.error.sqlstate is not None, (
            f"session lost: {attempts}"
        )
        if not any(s in err_text(t.error) for s in ELECTION_ERRORS):
            # evidence for the report: what does the *next* SELECT do?
            t2 = timed_select(db, c, "SELECT key, value FROM t", None, limit=60)
            pytest.fail(
                "the same session's SELECT after the kill failed (not a leader election; "
                f"new leader {new_leader} already agreed): SQLSTATE {t.error.sqlstate}, "
                f"attempts {attempts}.\nThe SELECT after it: "
                + (
                    f"rows ok={t2.rows == expected} in {t2.elapsed:.2f}s"
                    if t2.error is None
                    else f"error {t2.error.sqlstate}: {err_text(t2.error)}"
                )
                + f"; connects now {connects(db, c)}; backend connected to "
                f"{connected_members(db, c, cluster)}"
            )
        assert len(attempts) < max_attempts, f"no success in {max_attempts} attempts: {attempts}"
        # the next attempt once the survivors agree on a leader again
        cluster.leader(members=[m2, m3])
    assert t.rows == expected, attempts
    assert not c.closed and db.backend_pid(c) == backend, "the client reconnected"
    n_connects = connects(db, c)
    if len(attempts) == 1:
        assert n_connects == 2, attempts
    else:  # allowed: an election error drops the connection once more per attempt
        assert 2 <= n_connects <= 1 + 2 * len(attempts), attempts
    assert_connected_to(db, c, cluster, m2)
    # and keeps working on the cached connection to m2
    assert db.rows("SELECT key, value FROM t", conn=c) == expected
    assert connects(db, c) == n_connects
    # writes go through as well
    db.execute("INSERT INTO t VALUES (%s, 'after failover')", (kp + "w",), conn=c)
    for m in (m2, m3):
        assert cluster.dump(m, kp)[kp + "w"] == "after failover"


def endpoint_in_use(db, conn, server="s"):
    rows = db.rows(
        "SELECT endpoint FROM etcd_fdw_get_connections() WHERE server_name = %s", (server,), conn=conn
    )
    assert len(rows) == 1, rows
    return rows[0][0]


def test_read_right_after_the_leader_is_killed(db, healthy, kp):
    """Kill the leader a session is connected to and read while the
    survivors elect a new one: the read is retried with backoff on the next
    endpoint until it succeeds (no "leader changed" / "no leader" reaches
    the client), within request_timeout.

    Three rounds, each read at a different point of the election, chosen by
    what the survivors report (not by a delay): at once (they still follow
    the dead leader), once one of them has begun an election (it no longer
    names the dead leader, or is in a later term), once they agree on a new
    leader.  request_timeout is 15 s: the election must fit in it, and an
    election's length is etcd's (and a loaded machine's), not ours."""
    cluster = healthy
    m1, m2, m3 = cluster.members
    request_timeout = 15
    for i in range(3):
        cluster.put(m2, f"{kp}k{i}", f"v{i}")
    expected = [(f"{kp}k{i}", f"v{i}") for i in range(3)]
    db.create_server(
        "s", cluster.connstr, connect_timeout=str(CONNECT_TIMEOUT), request_timeout=str(request_timeout)
    )
    db.create_table("t", "s", prefix=kp)
    survivors = [m2, m3]
    m1_id = cluster.status()["m1"][0]
    for round_ in range(3):
        cluster.ensure_all_running()
        cluster.move_leader("m1")
        # the term in which m1 leads, as the survivors report it
        view = wait_until(
            lambda: (v := gateway_view(cluster, survivors))
            and all(s is not None and s[1] == m1_id for s in v.values())
            and len({s[2] for s in v.values()}) == 1
            and v,
            "m2 and m3 to answer, following the leader m1 in the same term",
        )
        term = next(iter(view.values()))[2]
        c = db.connect()
        assert db.rows("SELECT key, value FROM t", conn=c) == expected
        assert endpoint_in_use(db, c) == m1.endpoint
        m1.kill()
        if round_ == 1:
            wait_until(
                lambda: any(
                    s is not None and (s[1] != m1_id or s[2] > term)
                    for s in gateway_view(cluster, survivors).values()
                ),
                "a survivor to begin an election",
            )
        elif round_ == 2:
            wait_until(
                lambda: (v := gateway_view(cluster, survivors))
                and all(s is not None and s[2] > term for s in v.values())
                and len({s[1] for s in v.values()}) == 1
                and next(iter(v.values()))[1] in {s[0] for s in v.values()},
                "the survivors to agree on a new leader",
            )
        t = timed_select(db, c, "SELECT key, value FROM t", None, limit=3 * request_timeout)
        assert t.error is None, (
            f"round {round_}: the read after killing the leader failed after {t.elapsed:.2f}s: "
            f"SQLSTATE {t.error.sqlstate}: {err_text(t.error)}"
        )
        assert t.rows == expected
        # within request_timeout; the connect round of the last attempt is
        # not counted in it (each endpoint up to connect_timeout)
        limit = request_timeout + len(cluster.members) * CONNECT_TIMEOUT
        assert t.elapsed <= limit, f"round {round_}: took {t.elapsed:.2f}s"
        assert endpoint_in_use(db, c) in (m2.endpoint, m3.endpoint)
        c.close()


def test_session_returns_to_a_restarted_member(db, healthy, kp):
    """connstr m1,m2: the session moves to m2 when m1 dies; m1 comes back,
    then m2 dies: the session goes back to m1 (a member that failed longer
    ago is tried before one that failed just now, never skipped for good)."""
    cluster = healthy
    m1, m2, m3 = cluster.members
    cluster.put(m3, kp + "a", "1")
    cluster.move_leader("m3")  # keep elections out of it
    db.create_server("s", f"{m1.endpoint},{m2.endpoint}", **TIMEOUTS)
    db.create_table("t", "s", prefix=kp)
    c = db.connect()
    assert db.rows("SELECT key, value FROM t", conn=c) == [(kp + "a", "1")]
    assert endpoint_in_use(db, c) == m1.endpoint

    m1.kill()
    t = timed_select(db, c, "SELECT key, value FROM t", None, limit=60)
    assert t.error is None, err_text(t.error)
    assert endpoint_in_use(db, c) == m2.endpoint
    assert connects(db, c) == 2

    m1.start()
    cluster.wait_healthy()
    # still on m2 while it works
    assert db.rows("SELECT key, value FROM t", conn=c) == [(kp + "a", "1")]
    assert endpoint_in_use(db, c) == m2.endpoint

    m2.kill()
    t = timed_select(db, c, "SELECT key, value FROM t", None, limit=60)
    assert t.error is None, err_text(t.error)
    assert t.rows == [(kp + "a", "1")]
    assert endpoint_in_use(db, c) == m1.endpoint
    assert connects(db, c) == 3


def test_all_members_dead(db, cluster, kp):
    """Every member killed: HV00N (or 08006) naming the endpoints, fast; the
    session stays usable."""
    # bring the cluster up if an earlier test (or -k) left members down
    cluster.ensure_all_running()
    cluster.put(cluster.members[1], kp + "a", "1")
    db.create_server("s", cluster.connstr, **TIMEOUTS)
    db.create_table("t", "s", prefix=kp)
    cached = db.connect()  # has a cached connection when the members die
    assert db.rows("SELECT key, value FROM t", conn=cached) == [(kp + "a", "1")]

    for m in cluster.members:
        m.kill()
    # a statement gives up once request_timeout is used up; the connect
    # round of its last attempt (each endpoint up to connect_timeout) is
    # not counted in it
    limit = REQUEST_TIMEOUT + len(cluster.members) * CONNECT_TIMEOUT

    fresh = db.connect()
    for label, c in (("new session", fresh), ("session with a cached connection", cached)):
        t = timed_select(db, c, "SELECT key, value FROM t", None, limit=60)
        assert t.error is not None, f"{label}: query returned {t.rows!r} with every member dead"
        text = err_text(t.error)
        assert isinstance(t.error, psycopg.Error) and t.error.sqlstate is not None, (
            f"{label}: session lost: {text}"
        )
        if t.error.sqlstate not in ("HV00N", "08006"):
            t2 = timed_select(db, c, "SELECT key, value FROM t", None, limit=60)
            pytest.fail(
                f"{label}: expected SQLSTATE HV00N/08006 naming the endpoints, got "
                f"{t.error.sqlstate} after {t.elapsed:.2f}s: {text}\n"
                f"(the next query of the session then fails with "
                f"{getattr(t2.error, 'sqlstate', None)}: {err_text(t2.error) if t2.error else t2.rows})"
            )
        for m in cluster.members:
            assert m.endpoint in text, f"{label}: {m.endpoint} not named in: {text}"
        assert t.elapsed <= limit, f"{label}: took {t.elapsed:.1f}s (limit {limit}s)"
        detail = t.error.diag.message_detail or ""
        if label == "new session":
            # never connected: a wrong address fails at once, no retries
            # (retrying would wait, with backoff, at least request_timeout
            # less the last backoff)
            assert "attempts" not in detail, detail
            assert t.elapsed < REQUEST_TIMEOUT - BACKOFF_MAX, t.elapsed
        else:
            # the cluster was there, but every member refuses connections:
            # waited for (with backoff) only within connect_timeout of the
            # first such round (a member restarting at once), not for
            # request_timeout; the attempts summarised
            assert t.elapsed >= CONNECT_TIMEOUT - BACKOFF_MAX, t.elapsed
            assert re.search(r"\d+ attempts over \d+\.\d s: ", detail), detail
        assert not c.closed
        assert_session_usable(c)
        # still failing the same way, still usable
        t = timed_select(db, c, "SELECT count(*) FROM t", None, limit=60)
        assert t.error is not None and t.error.sqlstate in ("HV00N", "08006"), (
            f"{label}: {t.error!r}"
        )
        assert t.elapsed <= limit
        assert_session_usable(c)
