"""etcd_watch() from a start revision in the past catches up first: every
event of the prefix up to the revision current when the call began comes
back whatever timeout_ms says (0 included), and only then does the idle
timeout apply.  On a fresh session (a new connection, whose backend has
never connected to etcd) as on a warm one.

etcd sends a replay some time after it created the watch (its loop serving
watchers behind the current revision runs every 100 ms), so before the
catch-up a timeout below that returned nothing.  How the catch-up ends
differs by etcd version (a progress answer on 3.5.8+, etcd's batch header
or a grace on 3.4; see core/src/watch.rs): the cases below cover an event at
the current revision, a prefix whose last event is older than the current
revision, deletions last, no event at all, and a replay of more than the
1000 revisions etcd sends per batch.
"""

import pytest

COLUMNS = "revision, event, key, value"


def server(db, etcd):
    db.create_server("s", etcd.endpoint)


def watch(db, conn, prefix, start, timeout_ms, max_events=100000):
    return db.rows(
        f"SELECT {COLUMNS} FROM etcd_watch('s', %s, %s, %s, %s)",
        (prefix, start, max_events, timeout_ms),
        conn=conn,
    )


def put_each(etcd, items):
    """One revision per key (one gateway request each): the last revision."""
    return etcd.put_many(items, batch=1)


def fresh(db):
    """A new session: its backend has not loaded etcd_fdw's connection yet."""
    c = db.connect()
    assert db.scalar("SELECT count(*) FROM etcd_fdw_get_connections()", conn=c) == 0
    return c


def test_timeout_0_returns_every_event_after_the_start_on_a_fresh_session(db, etcd, kp):
    server(db, etcd)
    items = [(f"{kp}k{i:02d}", f"v{i}") for i in range(20)]
    start = put_each(etcd, items[:1])
    last = put_each(etcd, items[1:])
    rows = watch(db, fresh(db), kp, start, 0)
    assert [(r[1], r[2], r[3]) for r in rows] == [("PUT", k, v) for k, v in items]
    assert [r[0] for r in rows] == list(range(start, last + 1))
    # a warm session too, and from the middle
    c = db.connect()
    assert len(watch(db, c, kp, start, 0)) == 20
    assert [r[0] for r in watch(db, c, kp, start + 10, 0)] == list(range(start + 10, last + 1))


@pytest.mark.parametrize("timeout_ms", [1, 10, 50])
def test_short_timeouts_on_a_fresh_session(db, etcd, kp, timeout_ms):
    server(db, etcd)
    start = put_each(etcd, [(f"{kp}a{i}", "x") for i in range(20)]) - 19
    for _ in range(3):
        rows = watch(db, fresh(db), kp, start, timeout_ms)
        assert len(rows) == 20, rows


def test_the_prefix_last_changed_before_the_current_revision(db, etcd, kp):
    """The current revision's event is another prefix's: the catch-up ends
    without an event at it."""
    server(db, etcd)
    start = put_each(etcd, [(f"{kp}mine/{i}", "x") for i in range(20)]) - 19
    put_each(etcd, [(f"{kp}other/{i}", "y") for i in range(5)])
    for conn in (fresh(db), fresh(db)):
        rows = watch(db, conn, f"{kp}mine/", start, 0)
        assert [r[2] for r in rows] == [f"{kp}mine/{i}" for i in range(20)]


def test_deletions_last(db, etcd, kp):
    server(db, etcd)
    start = put_each(etcd, [(f"{kp}{i}", "x") for i in range(5)]) - 4
    etcd.ctl("del", f"{kp}1")
    etcd.ctl("del", f"{kp}3")
    rows = watch(db, fresh(db), kp, start, 0)
    assert [(r[1], r[2]) for r in rows] == [("PUT", f"{kp}{i}") for i in range(5)] + [
        ("DELETE", f"{kp}1"),
        ("DELETE", f"{kp}3"),
    ]


def test_no_event_of_the_prefix_since_the_start(db, etcd, kp):
    server(db, etcd)
    start = etcd.put(f"{kp}elsewhere/a", "1")
    put_each(etcd, [(f"{kp}elsewhere/{i}", "y") for i in range(3)])
    assert watch(db, fresh(db), f"{kp}quiet/", start, 0) == []


def test_max_events_still_bounds_a_catch_up(db, etcd, kp):
    server(db, etcd)
    start = put_each(etcd, [(f"{kp}{i:02d}", "x") for i in range(20)]) - 19
    rows = watch(db, fresh(db), kp, start, 0, max_events=7)
    assert [r[0] for r in rows] == list(range(start, start + 7))


def test_a_replay_longer_than_one_etcd_batch(db, etcd, kp):
    """etcd sends a watcher that is behind at most 1000 revisions per
    message: the catch-up goes on after the first one."""
    server(db, etcd)
    n = 1100
    last = put_each(etcd, [(f"{kp}{i:04d}", "x") for i in range(n)])
    start = last - n + 1
    rows = watch(db, fresh(db), kp, start, 0)
    assert len(rows) == n
    assert rows[-1][0] == last
