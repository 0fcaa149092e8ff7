"""Write path of etcd_fdw: INSERT / UPDATE / DELETE / TRUNCATE / COPY.

Every effect is checked from etcd's side as well (etcdctl get --prefix -w
json, etcdctl get KEY -w json for revisions), not only through the FDW.

The contract under test
-----------------------
* INSERT puts a new key; an existing key is a 23505 (unique_violation)
  naming the key, decided atomically in etcd; ON CONFLICT DO NOTHING skips
  existing keys and only counts new ones.
* UPDATE / DELETE act on the rows the scan read (rowid_column); each write
  is guarded by the mod_revision the scan saw (a hidden junk column when the
  table has no mod_revision column): a concurrent change or delete -> 40001.
* UPDATE of the key column is an atomic rename (put new + delete old in one
  etcd txn); the new key existing -> 23505, the old key untouched.
* RETURNING gives the metadata columns as they are after the write.
* Keys outside the table's prefix / [key, range_end) -> 23514.
* keys_only / revision tables are read-only -> 55000.
* Multi-row INSERT, INSERT ... SELECT and COPY are batched into etcd txns of
  batch_size ops (server / table option, default 128); a failing batch
  writes nothing.
* TRUNCATE is one range delete of exactly the table's range.
* A value over etcd's request limit -> 54000.

Tests run in the default etcd_fdw.commit_mode ('transaction': an autocommit
statement is committed as one etcd transaction when it ends) unless they use
the ``statement_mode`` fixture: RETURNING metadata, batching into several
etcd transactions and bulk loads are statement-mode behaviour.  The
transaction semantics themselves are tested in test_transactions.py.

Most tests share one etcd per version (module fixture ``etcd``) and keep to
their own key prefix ``kp``; nothing here compacts or wipes the shared etcd.
Concurrent-modification tests are made deterministic with an advisory lock
taken in the UPDATE/DELETE's WHERE clause (a volatile function, evaluated
locally on each row *after* the foreign scan returned it): the test holds the
lock, waits until the statement blocks on it, changes etcd, then releases it.
"""

from __future__ import annotations

import base64
import json
import math
import time

import psycopg
import pytest

from harness import (
    QueryThread,
    assert_session_usable,
    err_text,
    expect_error,
    private_etcd,
    run_spec_setup,
    vm_hwm_kb,
)

META = (
    "key text, value text, create_revision bigint, mod_revision bigint, "
    "version bigint, lease bigint"
)
KV = "key text, value text"
DEFAULT_BATCH = 128  # etcd's default --max-txn-ops


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def lit(s):
    """A SQL string literal."""
    return "'" + str(s).replace("'", "''") + "'"


def make_table(db, etcd, prefix, columns=META, server_opts=None, name="t", **table_opts):
    """CREATE SERVER s + CREATE FOREIGN TABLE name (prefix=None: no prefix option)."""
    db.create_server("s", etcd.endpoint, **(server_opts or {}))
    db.create_table(name, "s", columns=columns, prefix=prefix, **table_opts)


def dump(etcd, prefix):
    """{key: value} (bytes) of every key under prefix, read with etcdctl."""
    out = json.loads(etcd.ctl("get", "--prefix", "-w", "json", "--", prefix))
    return {
        base64.b64decode(kv["key"]): base64.b64decode(kv.get("value", ""))
        for kv in out.get("kvs") or []
    }


def dump_text(etcd, prefix):
    return {k.decode(): v.decode() for k, v in dump(etcd, prefix).items()}


def check_error(e, sqlstate, contains=()):
    """e (from a QueryThread) is a server error with this SQLSTATE."""
    assert e is not None, "statement unexpectedly succeeded"
    assert isinstance(e, psycopg.Error), f"expected a PostgreSQL error, got {e!r}"
    text = err_text(e)
    assert e.sqlstate == sqlstate, f"expected SQLSTATE {sqlstate}, got {e.sqlstate}: {text}"
    for s in (contains if not isinstance(contains, str) else (contains,)):
        assert s in text, f"{s!r} not in error text: {text}"


def wait_until_blocked_on_advisory_lock(observer, thread, pid, timeout=15.0):
    """Wait until backend pid waits for an advisory lock (or thread ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and thread.is_alive():
        row = observer.execute(
            "SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        if row == ("Lock", "advisory"):
            return True
        time.sleep(0.02)
    return False


def join_thread(t, limit=60):
    t.join(limit)
    assert not t.is_alive(), f"statement still running after {limit}s"


def assert_table_usable(db, table="t"):
    assert_session_usable(db.conn)
    db.scalar(f"SELECT count(*) FROM {table}")


# --------------------------------------------------------------------------
# INSERT
# --------------------------------------------------------------------------


def test_insert_puts_new_keys(db, etcd, kp):
    make_table(db, etcd, kp)
    cur = db.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'a')}, 'A')")
    assert cur.rowcount == 1
    assert cur.statusmessage == "INSERT 0 1"
    assert etcd.get(kp + "a") == b"A"

    # multi-row VALUES: one batch = one etcd txn = one revision
    r0 = etcd.revision()
    cur = db.execute(
        f"INSERT INTO t (key, value) VALUES ({lit(kp + 'b')}, 'B'), "
        f"({lit(kp + 'c')}, ''), ({lit(kp + 'ü/日本')}, 'ünï \"q\" it''s\n\t\\')"
    )
    assert cur.rowcount == 3
    assert etcd.revision() == r0 + 1
    expected = {
        kp + "a": "A",
        kp + "b": "B",
        kp + "c": "",
        kp + "ü/日本": "ünï \"q\" it's\n\t\\",
    }
    assert dump_text(etcd, kp) == expected
    # the empty value is a real key with an empty value
    kv = etcd.get_kv(kp + "c")
    assert kv is not None and kv["value"] == b"" and kv["version"] == 1

    # a column list in another order, and parameters
    db.execute("INSERT INTO t (value, key) VALUES (%s, %s)", ("P", kp + "p"))
    expected[kp + "p"] = "P"
    # prepared statement, also as a generic plan (> 5 executions)
    db.execute("PREPARE ins(text, text) AS INSERT INTO t (key, value) VALUES ($1, $2)")
    for i in range(7):
        db.execute(f"EXECUTE ins({lit(f'{kp}prep{i}')}, {lit(f'v{i}')})")
        expected[f"{kp}prep{i}"] = f"v{i}"
    assert dump_text(etcd, kp) == expected
    assert dict(db.rows("SELECT key, value FROM t")) == expected


@pytest.mark.usefixtures("statement_mode")
def test_insert_returning_metadata(db, etcd, kp):
    make_table(db, etcd, kp)
    rows = db.rows(
        f"INSERT INTO t (key, value) VALUES ({lit(kp + 'one')}, '1') "
        "RETURNING key, value, create_revision, mod_revision, version, lease"
    )
    rev = etcd.revision()
    kv = etcd.get_kv(kp + "one")
    assert kv["create_revision"] == kv["mod_revision"] == rev
    assert len(rows) == 1
    assert rows[0][:5] == (kp + "one", "1", rev, rev, 1)
    assert rows[0][5] in (0, None)

    rows = db.rows(
        f"INSERT INTO t (key, value) VALUES ({lit(kp + 'two')}, '2'), ({lit(kp + 'three')}, '3') "
        "RETURNING *"
    )
    assert sorted(r[0] for r in rows) == [kp + "three", kp + "two"]
    for key, value, crev, mrev, version, lease in rows:
        kv = etcd.get_kv(key)
        assert kv["value"] == value.encode()
        assert crev == mrev == kv["mod_revision"] == kv["create_revision"]
        assert version == 1 == kv["version"]
        assert lease in (0, None)

    # RETURNING on a two-column table
    db.create_table("t2", "s", columns=KV, prefix=kp + "kv/")
    assert db.rows(
        f"INSERT INTO t2 VALUES ({lit(kp + 'kv/x')}, 'X') RETURNING *"
    ) == [(kp + "kv/x", "X")]
    assert etcd.get(kp + "kv/x") == b"X"


def test_insert_existing_key_is_unique_violation(db, etcd, kp):
    make_table(db, etcd, kp)
    dup = kp + "dup"
    etcd.put(dup, "orig")
    before = etcd.get_kv(dup)

    expect_error(
        db.conn, f"INSERT INTO t (key, value) VALUES ({lit(dup)}, 'new')",
        sqlstate="23505", contains=dup,
    )
    assert etcd.get_kv(dup) == before
    assert_table_usable(db)

    # one existing key in a multi-row batch: nothing of the batch is written
    expect_error(
        db.conn,
        f"INSERT INTO t (key, value) VALUES ({lit(kp + 'new1')}, 'x'), "
        f"({lit(dup)}, 'y'), ({lit(kp + 'new2')}, 'z')",
        sqlstate="23505", contains=dup,
    )
    assert dump_text(etcd, kp) == {dup: "orig"}
    assert etcd.get_kv(dup) == before
    assert_table_usable(db)

    # the same new key twice in one statement's batch: refused before
    # anything is sent (README), so neither row is written
    twice = kp + "twice"
    expect_error(
        db.conn,
        f"INSERT INTO t (key, value) VALUES ({lit(kp + 'first')}, '0'), "
        f"({lit(twice)}, '1'), ({lit(twice)}, '2')",
        sqlstate="23505", contains=twice,
    )
    assert etcd.get(twice) is None
    assert etcd.get(kp + "first") is None
    assert_table_usable(db)

    # the session and the table keep working
    db.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'after')}, 'ok')")
    assert dump_text(etcd, kp) == {dup: "orig", kp + "after": "ok"}


@pytest.mark.usefixtures("statement_mode")
def test_insert_on_conflict_do_nothing(db, etcd, kp):
    make_table(db, etcd, kp)
    etcd.put_many({kp + "a": "old-a", kp + "c": "old-c"})
    kv_a, kv_c = etcd.get_kv(kp + "a"), etcd.get_kv(kp + "c")

    cur = db.execute(
        "INSERT INTO t (key, value) VALUES "
        + ", ".join(f"({lit(kp + k)}, 'new-{k}')" for k in "abcd")
        + " ON CONFLICT DO NOTHING"
    )
    assert cur.statusmessage == "INSERT 0 2"
    assert cur.rowcount == 2
    assert dump_text(etcd, kp) == {
        kp + "a": "old-a", kp + "b": "new-b", kp + "c": "old-c", kp + "d": "new-d",
    }
    # the existing keys were not written at all
    assert etcd.get_kv(kp + "a") == kv_a
    assert etcd.get_kv(kp + "c") == kv_c

    # RETURNING only returns the rows actually inserted
    rows = db.rows(
        f"INSERT INTO t (key, value) VALUES ({lit(kp + 'a')}, 'x'), ({lit(kp + 'e')}, 'E') "
        "ON CONFLICT DO NOTHING RETURNING key, value, version"
    )
    assert rows == [(kp + "e", "E", 1)]

    # all rows existing: INSERT 0 0, nothing written
    r0 = etcd.revision()
    cur = db.execute(
        f"INSERT INTO t (key, value) VALUES ({lit(kp + 'a')}, 'x'), ({lit(kp + 'b')}, 'y') "
        "ON CONFLICT DO NOTHING"
    )
    assert cur.statusmessage == "INSERT 0 0"
    assert etcd.revision() == r0
    assert etcd.get(kp + "b") == b"new-b"


@pytest.mark.usefixtures("statement_mode")
def test_insert_on_conflict_do_nothing_across_batches(db, etcd, kp):
    make_table(db, etcd, kp, columns=KV)
    existing = {f"{kp}{i:04d}": "old" for i in (1, 130, 200)}
    etcd.put_many(existing)
    cur = db.execute(
        f"INSERT INTO t (key, value) SELECT {lit(kp)} || lpad(g::text, 4, '0'), 'new' "
        "FROM generate_series(1, 200) g ON CONFLICT DO NOTHING"
    )
    assert cur.rowcount == 197
    expected = {f"{kp}{i:04d}": "new" for i in range(1, 201)}
    expected.update(existing)
    assert dump_text(etcd, kp) == expected


# --------------------------------------------------------------------------
# batching
# --------------------------------------------------------------------------


@pytest.mark.usefixtures("statement_mode")
@pytest.mark.parametrize("n", [0, 1, 127, 128, 129, 1000])
def test_insert_select_row_counts(db, etcd, kp, n):
    make_table(db, etcd, kp, columns=KV)
    r0 = etcd.revision()
    cur = db.execute(
        f"INSERT INTO t (key, value) SELECT {lit(kp)} || lpad(g::text, 4, '0'), 'value ' || g "
        f"FROM generate_series(1, {n}) g"
    )
    assert cur.rowcount == n
    # one etcd txn (= one revision) per batch of 128 rows
    assert etcd.revision() - r0 == math.ceil(n / DEFAULT_BATCH)
    assert dump_text(etcd, kp) == {f"{kp}{i:04d}": f"value {i}" for i in range(1, n + 1)}
    assert db.scalar("SELECT count(*) FROM t") == n


def check_batches(db, etcd, kp, server_bs, table_bs, rows, txns):
    make_table(
        db, etcd, kp, columns=KV,
        server_opts={"batch_size": server_bs}, batch_size=table_bs,
    )
    r0 = etcd.revision()
    cur = db.execute(
        f"INSERT INTO t (key, value) SELECT {lit(kp)} || lpad(g::text, 4, '0'), g::text "
        f"FROM generate_series(1, {rows}) g"
    )
    assert cur.rowcount == rows
    # each etcd txn is exactly one revision
    assert etcd.revision() - r0 == txns
    assert dump_text(etcd, kp) == {f"{kp}{i:04d}": str(i) for i in range(1, rows + 1)}


@pytest.mark.parametrize(
    "server_bs, table_bs, rows, txns",
    [
        (None, "100", 300, 3),
        (None, "100", 301, 4),
        ("50", None, 120, 3),  # server-level batch_size
        ("50", "100", 300, 3),  # the table option wins
        (None, "1", 5, 5),
    ],
)
@pytest.mark.usefixtures("statement_mode")
def test_batch_size_option(db, etcd, kp, server_bs, table_bs, rows, txns):
    check_batches(db, etcd, kp, server_bs, table_bs, rows, txns)


# batch sizes above etcd's default --max-txn-ops (128) need an etcd that allows them
@pytest.mark.parametrize(
    "server_bs, table_bs, rows, txns",
    [
        ("50", "200", 300, 2),
        ("1000", None, 1000, 1),
        (None, "1000", 1001, 2),
    ],
)
@pytest.mark.usefixtures("statement_mode")
def test_batch_size_above_128(db, etcd_big_txn, kp, server_bs, table_bs, rows, txns):
    check_batches(db, etcd_big_txn, kp, server_bs, table_bs, rows, txns)


def test_conflict_in_one_big_batch_writes_nothing(db, etcd_big_txn, kp):
    etcd = etcd_big_txn
    make_table(db, etcd, kp, columns=KV, batch_size="1000")
    dup = f"{kp}0100"
    etcd.put(dup, "orig")
    before = etcd.get_kv(dup)
    r0 = etcd.revision()
    expect_error(
        db.conn,
        f"INSERT INTO t (key, value) SELECT {lit(kp)} || lpad(g::text, 4, '0'), 'new' "
        "FROM generate_series(1, 200) g",
        sqlstate="23505", contains=dup,
    )
    assert dump_text(etcd, kp) == {dup: "orig"}
    assert etcd.get_kv(dup) == before
    assert etcd.revision() == r0
    assert_table_usable(db)
    # without the conflict the same statement is one txn
    etcd.ctl("del", "--", dup)
    r0 = etcd.revision()
    cur = db.execute(
        f"INSERT INTO t (key, value) SELECT {lit(kp)} || lpad(g::text, 4, '0'), 'new' "
        "FROM generate_series(1, 200) g"
    )
    assert cur.rowcount == 200
    assert etcd.revision() == r0 + 1
    assert len(dump(etcd, kp)) == 200


@pytest.mark.usefixtures("statement_mode")
def test_conflict_in_second_batch_keeps_first_batch(db, etcd, kp):
    # default batch_size 128: rows 1..128 are one txn, rows 129..200 the next;
    # the conflicting key is in the second batch, so only the first lands
    make_table(db, etcd, kp, columns=KV)
    dup = f"{kp}0150"
    etcd.put(dup, "orig")
    expect_error(
        db.conn,
        f"INSERT INTO t (key, value) SELECT {lit(kp)} || lpad(g::text, 4, '0'), 'new' "
        "FROM generate_series(1, 200) g",
        sqlstate="23505", contains=dup,
    )
    expected = {f"{kp}{i:04d}": "new" for i in range(1, DEFAULT_BATCH + 1)}
    expected[dup] = "orig"
    assert dump_text(etcd, kp) == expected
    assert_table_usable(db)


@pytest.mark.usefixtures("statement_mode")
def test_copy_from_stdin(db, etcd, kp):
    make_table(db, etcd, kp, columns=KV)
    r0 = etcd.revision()
    expected = {f"{kp}c{i:04d}": f"v{i} tab\there \\ nl\nend" for i in range(500)}
    with db.conn.cursor() as cur:
        with cur.copy("COPY t (key, value) FROM STDIN") as cp:
            for k, v in expected.items():
                cp.write_row((k, v))
        assert cur.statusmessage == "COPY 500"
    assert etcd.revision() - r0 == math.ceil(500 / DEFAULT_BATCH)
    assert dump_text(etcd, kp) == expected
    assert db.scalar("SELECT count(*) FROM t") == 500

    # COPY of an existing key: unique violation, session usable
    with pytest.raises(psycopg.Error) as ei:
        with db.conn.cursor() as cur:
            with cur.copy("COPY t (key, value) FROM STDIN") as cp:
                cp.write_row((f"{kp}new", "x"))
                cp.write_row((f"{kp}c0007", "again"))
    assert ei.value.sqlstate == "23505", err_text(ei.value)
    assert f"{kp}c0007" in err_text(ei.value)
    assert etcd.get(f"{kp}c0007") == expected[f"{kp}c0007"].encode()
    assert etcd.get(f"{kp}new") is None
    assert_table_usable(db)


# --------------------------------------------------------------------------
# UPDATE
# --------------------------------------------------------------------------


@pytest.mark.usefixtures("statement_mode")
def test_update_value_returning(db, etcd, kp):
    make_table(db, etcd, kp)
    etcd.put(kp + "a", "A1")
    etcd.put(kp + "a", "A2")  # version 2
    etcd.put(kp + "b", "B")
    before = etcd.get_kv(kp + "a")
    kv_b = etcd.get_kv(kp + "b")

    rows = db.rows(
        f"UPDATE t SET value = 'A3' WHERE key = {lit(kp + 'a')} "
        "RETURNING key, value, create_revision, mod_revision, version"
    )
    after = etcd.get_kv(kp + "a")
    assert after["value"] == b"A3"
    assert after["version"] == before["version"] + 1 == 3
    assert after["create_revision"] == before["create_revision"]
    assert after["mod_revision"] == etcd.revision()
    assert rows == [(kp + "a", "A3", before["create_revision"], after["mod_revision"], 3)]
    assert etcd.get_kv(kp + "b") == kv_b

    # no matching row: nothing written
    r0 = etcd.revision()
    cur = db.execute(f"UPDATE t SET value = 'x' WHERE key = {lit(kp + 'nope')}")
    assert cur.rowcount == 0
    assert etcd.revision() == r0

    # a non-key filter, expression over the old value
    cur = db.execute("UPDATE t SET value = value || '!' WHERE value = 'B'")
    assert cur.rowcount == 1
    assert dump_text(etcd, kp) == {kp + "a": "A3", kp + "b": "B!"}


def test_update_all_rows_of_prefix_only(db, etcd, kp):
    p = kp + "u/"
    inside = {f"{p}{i:02d}": f"v{i}" for i in range(7)}
    outside = {kp + "u": "stem", kp + "u0": "next", kp + "t/x": "before"}
    etcd.put_many({**inside, **outside})
    # fetch_size 2: the scan pages; each update must still see its own row
    make_table(db, etcd, p, fetch_size="2")
    cur = db.execute("UPDATE t SET value = upper(value) || '!'")
    assert cur.rowcount == 7
    expected = {k: v.upper() + "!" for k, v in inside.items()}
    assert dump_text(etcd, kp) == {**expected, **outside}
    assert all(etcd.get_kv(k)["version"] == 2 for k in inside)


def test_two_column_table_update_delete(db, etcd, kp):
    # no mod_revision column: the guard travels as a hidden junk column
    make_table(db, etcd, kp, columns=KV)
    etcd.put_many({kp + "a": "1", kp + "b": "2", kp + "c": "3"})
    assert db.rows(f"UPDATE t SET value = 'one' WHERE key = {lit(kp + 'a')} RETURNING *") == [
        (kp + "a", "one")
    ]
    cur = db.execute("UPDATE t SET value = value || value WHERE value <> 'one'")
    assert cur.rowcount == 2
    assert dump_text(etcd, kp) == {kp + "a": "one", kp + "b": "22", kp + "c": "33"}
    assert db.rows(f"DELETE FROM t WHERE key = {lit(kp + 'b')} RETURNING *") == [(kp + "b", "22")]
    assert dump_text(etcd, kp) == {kp + "a": "one", kp + "c": "33"}
    cur = db.execute("DELETE FROM t")
    assert cur.rowcount == 2
    assert dump_text(etcd, kp) == {}


# --------------------------------------------------------------------------
# UPDATE of the key column: atomic rename
# --------------------------------------------------------------------------


@pytest.mark.usefixtures("statement_mode")
def test_rename(db, etcd, kp):
    make_table(db, etcd, kp)
    etcd.put(kp + "a", "A1")
    etcd.put(kp + "a", "A")
    etcd.put(kp + "b", "B")

    r0 = etcd.revision()
    rows = db.rows(
        f"UPDATE t SET key = {lit(kp + 'a2')} WHERE key = {lit(kp + 'a')} "
        "RETURNING key, value, create_revision, mod_revision, version"
    )
    r1 = etcd.revision()
    # put new + delete old in ONE etcd txn: exactly one revision
    assert r1 == r0 + 1
    assert etcd.get(kp + "a") is None
    kv = etcd.get_kv(kp + "a2")
    assert kv["value"] == b"A"
    assert kv["create_revision"] == kv["mod_revision"] == r1
    assert kv["version"] == 1
    assert rows == [(kp + "a2", "A", r1, r1, 1)]

    # the new key exists: 23505, both keys untouched
    kv_a2, kv_b = etcd.get_kv(kp + "a2"), etcd.get_kv(kp + "b")
    r0 = etcd.revision()
    expect_error(
        db.conn,
        f"UPDATE t SET key = {lit(kp + 'b')} WHERE key = {lit(kp + 'a2')}",
        sqlstate="23505", contains=kp + "b",
    )
    assert etcd.get_kv(kp + "a2") == kv_a2
    assert etcd.get_kv(kp + "b") == kv_b
    assert etcd.revision() == r0
    assert_table_usable(db)

    # rename and new value at once
    cur = db.execute(
        f"UPDATE t SET key = {lit(kp + 'c')}, value = 'C!' WHERE key = {lit(kp + 'b')}"
    )
    assert cur.rowcount == 1
    assert dump_text(etcd, kp) == {kp + "a2": "A", kp + "c": "C!"}

    # SET key = key does not change the key: a plain value update
    kv_c = etcd.get_kv(kp + "c")
    cur = db.execute(f"UPDATE t SET key = key, value = 'same' WHERE key = {lit(kp + 'c')}")
    assert cur.rowcount == 1
    kv = etcd.get_kv(kp + "c")
    assert kv["value"] == b"same"
    assert kv["create_revision"] == kv_c["create_revision"]
    assert kv["version"] == kv_c["version"] + 1


def _lease_grant(etcd, ttl=600):
    """A new lease (id as int) made with etcdctl."""
    out = json.loads(etcd.ctl("lease", "grant", str(ttl), "-w", "json"))
    return int(out["ID"])


@pytest.mark.parametrize("columns", [KV, "key text", "key text, value jsonb", META])
def test_rename_keeps_lease_and_value_exactly(db, etcd, kp, columns):
    """A renamed key keeps the old key's lease and value bytes (unless the
    statement sets them), whatever columns the table has."""
    make_table(db, etcd, kp, columns=columns)
    lease = _lease_grant(etcd)
    raw = b'{"b":  2, "a": [1,  2]}'  # jsonb would normalise these bytes
    etcd.ctl("put", "--lease", format(lease, "x"), "--", kp + "old", raw.decode())
    etcd.put(kp + "plain", '"p"')  # valid JSON too
    db.execute(f"UPDATE t SET key = {lit(kp + 'new')} WHERE key = {lit(kp + 'old')}")
    assert etcd.get(kp + "old") is None
    kv = etcd.get_kv(kp + "new")
    assert kv["value"] == raw
    assert kv["lease"] == lease, f"lease {kv['lease']:x} instead of {lease:x}"
    # the key goes away with its lease, like the old key would have
    etcd.ctl("lease", "revoke", format(lease, "x"))
    assert etcd.get(kp + "new") is None
    # a key without a lease stays without one; a rename with a new value
    # takes that value and keeps the (absent) lease
    if "value" in columns:
        v = "'\"q\"'" if "jsonb" in columns else "'q'"
        db.execute(f"UPDATE t SET key = {lit(kp + 'p2')}, value = {v} WHERE key = {lit(kp + 'plain')}")
        kv = etcd.get_kv(kp + "p2")
        assert kv["value"] == (b'"q"' if "jsonb" in columns else b"q")
    else:
        db.execute(f"UPDATE t SET key = {lit(kp + 'p2')} WHERE key = {lit(kp + 'plain')}")
        assert etcd.get(kp + "p2") == b'"p"'
    assert etcd.get_kv(kp + "p2")["lease"] == 0
    # an update that does not set the value leaves its bytes alone
    etcd.put(kp + "j", raw)
    lease2 = _lease_grant(etcd)
    etcd.ctl("put", "--lease", format(lease2, "x"), "--", kp + "j", raw.decode())
    db.execute(f"UPDATE t SET key = key WHERE key = {lit(kp + 'j')}")
    kv = etcd.get_kv(kp + "j")
    assert (kv["value"], kv["lease"]) == (raw, lease2)


def test_after_row_triggers_see_the_write_in_etcd(db, etcd, kp):
    """AFTER ROW triggers fire after each row is written to etcd, so they
    can read it back through the foreign table; AFTER STATEMENT too."""
    make_table(db, etcd, kp, columns=KV)
    db.execute("CREATE TABLE seen (op text, key text, value text)")
    db.execute(f"""
        CREATE FUNCTION look() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE k text := coalesce(NEW.key, OLD.key);
        BEGIN
          INSERT INTO seen SELECT TG_OP, k, (SELECT value FROM t WHERE key = k);
          RETURN NULL;
        END $$""")
    db.execute("CREATE FUNCTION count_rows() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
               "INSERT INTO seen SELECT TG_OP || ' STATEMENT', NULL, count(*)::text FROM t; "
               "RETURN NULL; END $$")
    db.execute("CREATE TRIGGER a AFTER INSERT OR UPDATE OR DELETE ON t FOR EACH ROW EXECUTE FUNCTION look()")
    db.execute("CREATE TRIGGER s AFTER INSERT OR UPDATE OR DELETE ON t "
               "FOR EACH STATEMENT EXECUTE FUNCTION count_rows()")
    db.execute(f"INSERT INTO t VALUES ({lit(kp + 'a')}, '1'), ({lit(kp + 'b')}, '2')")
    db.execute(f"UPDATE t SET value = value || '!' WHERE key = {lit(kp + 'a')}")
    db.execute(f"DELETE FROM t WHERE key = {lit(kp + 'b')}")
    assert db.rows("SELECT op, key, value FROM seen") == [
        ("INSERT", kp + "a", "1"), ("INSERT", kp + "b", "2"), ("INSERT STATEMENT", None, "2"),
        ("UPDATE", kp + "a", "1!"), ("UPDATE STATEMENT", None, "2"),
        ("DELETE", kp + "b", None), ("DELETE STATEMENT", None, "1"),
    ]
    # COPY goes through the same path
    db.execute("TRUNCATE seen")
    with db.conn.cursor() as cur:
        with cur.copy("COPY t (key, value) FROM STDIN") as cp:
            cp.write_row([kp + "c", "3"])
    assert db.rows("SELECT op, key, value FROM seen ORDER BY op") == [
        ("INSERT", kp + "c", "3"), ("INSERT STATEMENT", None, "2")]
    assert dump_text(etcd, kp) == {kp + "a": "1!", kp + "c": "3"}


def test_rename_many_rows(db, etcd, kp):
    data = {kp + k: k.upper() for k in ("a", "b", "c", "d", "e")}
    etcd.put_many(data)
    # small pages: the renamed keys land inside the range being scanned and
    # must not be visited again
    make_table(db, etcd, kp, columns=KV, fetch_size="2")
    cur = db.execute("UPDATE t SET key = key || '_new'")
    assert cur.rowcount == 5
    assert dump_text(etcd, kp) == {k + "_new": v for k, v in data.items()}
    assert db.rows("SELECT key, value FROM t") == sorted((k + "_new", v) for k, v in data.items())


def test_spec_workflow(bare_db, etcd_fresh):
    etcd_fresh.ctl("put", "bar", "baz")
    etcd_fresh.ctl("put", "foo", "bar")
    c = bare_db.conn
    run_spec_setup(c, etcd_fresh.endpoint)
    cur = c.execute("INSERT INTO test (key,value) SELECT key || '_new', value FROM test;")
    assert cur.rowcount == 2
    cur = c.execute("DELETE FROM test WHERE NOT key LIKE '%_new';")
    assert cur.rowcount == 2
    assert c.execute("SELECT * FROM test;").fetchall() == [("bar_new", "baz"), ("foo_new", "bar")]
    assert dump_text(etcd_fresh, "") == {"bar_new": "baz", "foo_new": "bar"}


def test_insert_select_from_same_table_is_a_snapshot(db, etcd, kp):
    data = {f"{kp}{i}": f"v{i}" for i in range(7)}
    etcd.put_many(data)
    make_table(db, etcd, kp, columns=KV, fetch_size="2")
    cur = db.execute("INSERT INTO t (key, value) SELECT key || '_new', value FROM t")
    assert cur.rowcount == 7
    expected = {**data, **{k + "_new": v for k, v in data.items()}}
    assert dump_text(etcd, kp) == expected  # no *_new_new keys
    cur = db.execute("DELETE FROM t WHERE NOT key LIKE '%_new'")
    assert cur.rowcount == 7
    assert dump_text(etcd, kp) == {k + "_new": v for k, v in data.items()}


# --------------------------------------------------------------------------
# DELETE
# --------------------------------------------------------------------------


def test_delete_where_key(db, etcd, kp):
    p = kp + "d/"
    inside = {p + k: k.upper() for k in ("a", "b", "c", "d", "e", "f")}
    outside = {kp + "d": "stem", kp + "d0": "next", kp + "c/a": "before"}
    etcd.put_many({**inside, **outside})
    make_table(db, etcd, p)

    # the key condition is pushed down to etcd
    plan = "\n".join(r[0] for r in db.rows(f"EXPLAIN DELETE FROM t WHERE key = {lit(p + 'b')}"))
    assert f"key = {lit(p + 'b')}" in plan, plan

    cur = db.execute(f"DELETE FROM t WHERE key = {lit(p + 'b')}")
    assert cur.rowcount == 1
    del inside[p + "b"]
    assert dump_text(etcd, kp) == {**inside, **outside}

    cur = db.execute(f"DELETE FROM t WHERE key IN ({lit(p + 'a')}, {lit(p + 'c')}, {lit(p + 'zz')})")
    assert cur.rowcount == 2
    del inside[p + "a"], inside[p + "c"]
    assert dump_text(etcd, kp) == {**inside, **outside}

    r0 = etcd.revision()
    cur = db.execute(f"DELETE FROM t WHERE key = {lit(p + 'nope')}")
    assert cur.rowcount == 0
    # a key outside the table's range is not deleted through it
    cur = db.execute(f"DELETE FROM t WHERE key = {lit(kp + 'd0')}")
    assert cur.rowcount == 0
    assert etcd.revision() == r0

    cur = db.execute(f"DELETE FROM t WHERE key >= {lit(p + 'e')}")
    assert cur.rowcount == 2
    del inside[p + "e"], inside[p + "f"]
    assert dump_text(etcd, kp) == {**inside, **outside}

    # DELETE without WHERE: only the table's prefix
    cur = db.execute("DELETE FROM t")
    assert cur.rowcount == 1
    assert dump_text(etcd, kp) == outside


@pytest.mark.usefixtures("statement_mode")
def test_delete_returning_old_row(db, etcd, kp):
    make_table(db, etcd, kp)
    etcd.put(kp + "a", "1")
    etcd.put(kp + "a", "2")
    before = etcd.get_kv(kp + "a")
    rows = db.rows(
        f"DELETE FROM t WHERE key = {lit(kp + 'a')} "
        "RETURNING key, value, create_revision, mod_revision, version"
    )
    assert rows == [
        (kp + "a", "2", before["create_revision"], before["mod_revision"], 2)
    ]
    assert etcd.get(kp + "a") is None


# --------------------------------------------------------------------------
# lost updates: the mod_revision guard
# --------------------------------------------------------------------------

LOCK_ID = 770077


@pytest.mark.parametrize("concurrent", ["change", "delete"])
@pytest.mark.parametrize("op", ["update", "delete", "rename"])
def test_concurrent_change_is_serialization_failure(db, etcd, kp, op, concurrent):
    k = kp + "k"
    etcd.put(k, "orig")
    make_table(db, etcd, kp, columns=KV)
    guard = f"key = {lit(k)} AND pg_advisory_xact_lock({LOCK_ID}) IS NOT NULL"
    sql = {
        "update": f"UPDATE t SET value = 'mine' WHERE {guard}",
        "delete": f"DELETE FROM t WHERE {guard}",
        "rename": f"UPDATE t SET key = {lit(kp + 'renamed')} WHERE {guard}",
    }[op]

    other = db.connect()
    pid = db.backend_pid(conn=other)
    db.execute(f"SELECT pg_advisory_lock({LOCK_ID})")
    t = QueryThread(other, sql)
    try:
        t.start()
        # the scan has read the row and the statement now waits in its WHERE
        blocked = wait_until_blocked_on_advisory_lock(db.conn, t, pid)
        assert blocked, f"statement did not block on the lock (error: {t.error!r})"
        if concurrent == "change":
            etcd.put(k, "theirs")
        else:
            etcd.ctl("del", "--", k)
        theirs = etcd.get_kv(k)
    finally:
        db.execute(f"SELECT pg_advisory_unlock({LOCK_ID})")
        join_thread(t)

    check_error(t.error, "40001")
    # nothing written for that row
    assert etcd.get_kv(k) == theirs
    assert etcd.get(kp + "renamed") is None
    assert dump_text(etcd, kp) == ({k: "theirs"} if concurrent == "change" else {})

    # that session stays usable, and the statement succeeds when retried
    assert_session_usable(other)
    retry = sql.replace(f" AND pg_advisory_xact_lock({LOCK_ID}) IS NOT NULL", "")
    cur = other.execute(retry)
    if concurrent == "delete":
        assert cur.rowcount == 0
        assert dump_text(etcd, kp) == {}
    else:
        assert cur.rowcount == 1
        assert dump_text(etcd, kp) == {
            "update": {k: "mine"},
            "delete": {},
            "rename": {kp + "renamed": "theirs"},
        }[op]


def make_sleep_gate(db):
    """sleep_until_opened(): pg_sleep()s in short naps until open_gate()
    (another session) lets it through.  For a statement that must sleep
    between reading a row and writing it for exactly as long as the test
    needs, without betting on a duration."""
    db.execute("CREATE TABLE gate (opened bool)")
    db.execute("""
        CREATE FUNCTION sleep_until_opened() RETURNS bool VOLATILE LANGUAGE plpgsql AS $$
        BEGIN
          WHILE NOT EXISTS (SELECT FROM gate) LOOP
            PERFORM pg_sleep(0.01);
          END LOOP;
          RETURN true;
        END $$""")


def open_gate(db):
    db.execute("INSERT INTO gate VALUES (true)")


def wait_sleeping(observer, thread, pid, timeout=60.0):
    """Wait until backend pid sleeps in pg_sleep() (or thread ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and thread.is_alive():
        row = observer.execute(
            "SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        if row == ("Timeout", "PgSleep"):
            return True
        time.sleep(0.02)
    return False


def test_lost_update_with_pg_sleep(db, etcd, kp):
    k = kp + "k"
    etcd.put(k, "orig")
    make_table(db, etcd, kp)
    make_sleep_gate(db)
    other = db.connect()
    pid = db.backend_pid(conn=other)
    t = QueryThread(
        other,
        f"UPDATE t SET value = 'mine' WHERE key = {lit(k)} AND sleep_until_opened()",
    )
    t.start()
    try:
        # the scan has read the row and the statement sleeps in its WHERE
        assert wait_sleeping(db.conn, t, pid), f"UPDATE did not sleep (error: {t.error!r})"
        etcd.put(k, "theirs")
    finally:
        open_gate(db)
        join_thread(t)
    check_error(t.error, "40001")
    assert etcd.get(k) == b"theirs"
    assert_session_usable(other)
    assert other.execute("SELECT value FROM t").fetchall() == [("theirs",)]


def test_lost_delete_with_pg_sleep(db, etcd, kp):
    k = kp + "k"
    etcd.put(k, "orig")
    make_table(db, etcd, kp, columns=KV)
    make_sleep_gate(db)
    other = db.connect()
    pid = db.backend_pid(conn=other)
    t = QueryThread(
        other, "DELETE FROM t WHERE value <> 'zzz' AND sleep_until_opened()"
    )
    t.start()
    try:
        # the scan has read the row and the statement sleeps in its WHERE
        assert wait_sleeping(db.conn, t, pid), f"DELETE did not sleep (error: {t.error!r})"
        etcd.put(k, "theirs")
    finally:
        open_gate(db)
        join_thread(t)
    check_error(t.error, "40001")
    assert etcd.get(k) == b"theirs"
    assert_session_usable(other)
    assert other.execute("SELECT key, value FROM t").fetchall() == [(k, "theirs")]


# --------------------------------------------------------------------------
# key range of the table
# --------------------------------------------------------------------------


def test_insert_outside_prefix_is_check_violation(db, etcd, kp):
    p = kp + "r/"
    make_table(db, etcd, p)
    for bad in (kp + "r", kp + "r0", kp + "q/x", "elsewhere/" + kp):
        expect_error(
            db.conn, f"INSERT INTO t (key, value) VALUES ({lit(bad)}, 'x')",
            sqlstate="23514", contains=bad,
        )
        assert_table_usable(db)
    # in a multi-row statement: nothing of it is written
    expect_error(
        db.conn,
        f"INSERT INTO t (key, value) VALUES ({lit(p + 'ok1')}, '1'), ({lit(p + 'ok2')}, '2'), "
        f"({lit(kp + 'out')}, '3')",
        sqlstate="23514", contains=kp + "out",
    )
    assert dump(etcd, kp) == {}
    assert_table_usable(db)
    # the prefix itself and keys below it are inside
    db.execute(f"INSERT INTO t (key, value) VALUES ({lit(p)}, 'p'), ({lit(p + 'a/b')}, 'ab')")
    assert dump_text(etcd, kp) == {p: "p", p + "a/b": "ab"}


def test_rename_outside_prefix_is_check_violation(db, etcd, kp):
    p = kp + "r/"
    make_table(db, etcd, p)
    etcd.put(p + "a", "A")
    before = etcd.get_kv(p + "a")
    bad = kp + "outside"
    expect_error(
        db.conn, f"UPDATE t SET key = {lit(bad)} WHERE key = {lit(p + 'a')}",
        sqlstate="23514", contains=bad,
    )
    assert etcd.get_kv(p + "a") == before
    assert etcd.get(bad) is None
    assert_table_usable(db)


def test_key_and_range_end_tables(db, etcd, kp):
    make_table(db, etcd, None, columns=KV, key=kp + "b", range_end=kp + "d")
    db.create_table("single", "s", columns=KV, key=kp + "only")
    # [b, d): start is inside, range_end is not
    db.execute(f"INSERT INTO t VALUES ({lit(kp + 'b')}, 'B'), ({lit(kp + 'c/zz')}, 'C')")
    for bad in (kp + "d", kp + "a", kp + "d/x"):
        expect_error(
            db.conn, f"INSERT INTO t VALUES ({lit(bad)}, 'x')", sqlstate="23514", contains=bad
        )
    expect_error(
        db.conn, f"UPDATE t SET key = {lit(kp + 'd')} WHERE key = {lit(kp + 'b')}",
        sqlstate="23514", contains=kp + "d",
    )
    # a single-key table only takes that key
    db.execute(f"INSERT INTO single VALUES ({lit(kp + 'only')}, 'O')")
    expect_error(
        db.conn, f"INSERT INTO single VALUES ({lit(kp + 'only2')}, 'x')",
        sqlstate="23514", contains=kp + "only2",
    )
    assert dump_text(etcd, kp) == {kp + "b": "B", kp + "c/zz": "C", kp + "only": "O"}
    assert_table_usable(db, "single")


# --------------------------------------------------------------------------
# read-only tables
# --------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["keys_only", "revision"])
def test_read_only_tables_refuse_writes(db, etcd, kp, reason):
    etcd.put_many({kp + "a": "A", kp + "b": "B"})
    opt = {"keys_only": "true"} if reason == "keys_only" else {"revision": str(etcd.revision())}
    make_table(db, etcd, kp, columns=KV, **opt)
    before = dump(etcd, kp)
    r0 = etcd.revision()
    statements = [
        f"INSERT INTO t (key, value) VALUES ({lit(kp + 'new')}, 'x')",
        f"INSERT INTO t (key, value) VALUES ({lit(kp + 'new')}, 'x') ON CONFLICT DO NOTHING",
        f"UPDATE t SET value = 'x' WHERE key = {lit(kp + 'a')}",
        "UPDATE t SET value = 'x'",
        f"UPDATE t SET key = {lit(kp + 'renamed')} WHERE key = {lit(kp + 'a')}",
        f"DELETE FROM t WHERE key = {lit(kp + 'a')}",
        "DELETE FROM t",
        "TRUNCATE t",
    ]
    for sql in statements:
        expect_error(db.conn, sql, sqlstate="55000", contains=reason)
        assert_table_usable(db)
    with pytest.raises(psycopg.Error) as ei:
        with db.conn.cursor() as cur:
            with cur.copy("COPY t (key, value) FROM STDIN") as cp:
                cp.write_row((kp + "copied", "x"))
    assert ei.value.sqlstate == "55000", err_text(ei.value)
    assert reason in err_text(ei.value)
    assert_table_usable(db)
    assert dump(etcd, kp) == before
    assert etcd.revision() == r0


# --------------------------------------------------------------------------
# TRUNCATE
# --------------------------------------------------------------------------


def test_truncate_deletes_exactly_the_prefix(db, etcd, kp):
    p = kp + "tr/"
    kb, pb = kp.encode(), p.encode()
    inside = {
        pb: b"the prefix itself",
        pb + b"a": b"1",
        pb + b"z/deep/er": b"2",
        pb + b"\x00": b"3",
        pb + b"\xff": b"4",
        pb + b"\xff\xff\xff": b"5",
        pb + "ü".encode(): b"6",
    }
    outside = {
        kb + b"tr": b"no slash",
        kb + b"tr.\xff\xff": b"just before",
        kb + b"tr0": b"prefix end itself",
        kb + b"tr0/x": b"after",
        kb + b"tq/x": b"before",
        kb + b"trx/": b"sibling",
    }
    etcd.put_many({**inside, **outside})
    make_table(db, etcd, p)
    r0 = etcd.revision()
    db.execute("TRUNCATE t")
    # one range delete = one revision
    assert etcd.revision() == r0 + 1
    assert dump(etcd, kp) == outside
    assert db.rows("SELECT * FROM t") == []
    # an empty range: TRUNCATE still works
    db.execute("TRUNCATE t")
    assert dump(etcd, kp) == outside


def test_truncate_key_ranges(db, etcd, kp):
    etcd.put_many(
        {kp + k: k for k in ("ra", "rb", "rb/x", "rc", "rd", "one", "one/x", "onf")}
    )
    make_table(db, etcd, None, columns=KV, key=kp + "rb", range_end=kp + "rd")
    db.create_table("single", "s", columns=KV, key=kp + "one")
    db.execute("TRUNCATE t")
    assert dump_text(etcd, kp) == {kp + k: k for k in ("ra", "rd", "one", "one/x", "onf")}
    db.execute("TRUNCATE single")
    assert dump_text(etcd, kp) == {kp + k: k for k in ("ra", "rd", "one/x", "onf")}

    # several tables in one TRUNCATE
    etcd.put_many({kp + "p1/a": "1", kp + "p2/a": "2", kp + "p3/a": "3"})
    db.create_table("t1", "s", columns=KV, prefix=kp + "p1/")
    db.create_table("t2", "s", columns=KV, prefix=kp + "p2/")
    db.execute("TRUNCATE t1, t2")
    assert dump_text(etcd, kp) == {
        **{kp + k: k for k in ("ra", "rd", "one/x", "onf")},
        kp + "p3/a": "3",
    }


# --------------------------------------------------------------------------
# values over etcd's request size limit
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [
        1_700_000,  # over --max-request-bytes (1.5 MiB): etcd refuses it
        2 * 1024 * 1024,  # also over the gRPC message limit (1.5 MiB + 512 KiB)
    ],
    ids=["1.7MB", "2MiB"],
)
def test_oversized_value(db, etcd, kp, size):
    make_table(db, etcd, kp, columns=KV)
    big = kp + "big"
    expect_error(
        db.conn, f"INSERT INTO t (key, value) VALUES ({lit(big)}, repeat('x', {size}))",
        sqlstate="54000",
    )
    assert etcd.get(big) is None
    assert_table_usable(db)

    # a batch with one oversized row: nothing of the batch is written
    expect_error(
        db.conn,
        f"INSERT INTO t (key, value) SELECT {lit(kp + 'r')} || g, "
        f"CASE WHEN g = 3 THEN repeat('y', {size}) ELSE 'small' END "
        "FROM generate_series(1, 5) g",
        sqlstate="54000",
    )
    assert dump(etcd, kp) == {}
    assert_table_usable(db)

    # UPDATE to an oversized value: the old value stays
    db.execute(f"INSERT INTO t (key, value) VALUES ({lit(big)}, 'small')")
    before = etcd.get_kv(big)
    expect_error(
        db.conn, f"UPDATE t SET value = repeat('z', {size}) WHERE key = {lit(big)}",
        sqlstate="54000",
    )
    assert etcd.get_kv(big) == before
    assert_table_usable(db)
    db.execute(f"UPDATE t SET value = 'fine' WHERE key = {lit(big)}")
    assert etcd.get(big) == b"fine"


def test_one_mib_value_roundtrip(db, etcd, kp):
    make_table(db, etcd, kp, columns=KV)
    n = 1024 * 1024
    db.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'm')}, repeat('m', {n}))")
    assert etcd.get(kp + "m") == b"m" * n
    assert db.scalar("SELECT length(value) FROM t") == n


# --------------------------------------------------------------------------
# bytea tables
# --------------------------------------------------------------------------


def test_bytea_insert_update_delete(db, etcd, kp):
    make_table(db, etcd, kp, columns="key bytea, value bytea")
    kb = kp.encode()
    data = {
        kb + b"\x00": b"\x00",
        kb + b"\x00\x01\xff": b"\x00\x00\xfe\x00",
        kb + b"\xff\xfe": b"",
        kb + b"all": bytes(range(256)),
        kb + "ü".encode(): "ü".encode(),
    }
    for k, v in data.items():
        db.execute("INSERT INTO t (key, value) VALUES (%s, %s)", (k, v))
    assert dump(etcd, kp) == data
    assert db.rows("SELECT key, value FROM t") == sorted(data.items())

    # duplicate bytea key
    expect_error(
        db.conn, "INSERT INTO t (key, value) VALUES (%s, %s)", (kb + b"\x00", b"x"),
        sqlstate="23505",
    )
    # outside the prefix
    expect_error(
        db.conn, "INSERT INTO t (key, value) VALUES (%s, %s)", (b"\x00" + kb, b"x"),
        sqlstate="23514",
    )
    assert dump(etcd, kp) == data
    assert_table_usable(db)

    k0 = kb + b"\x00\x01\xff"
    cur = db.execute("UPDATE t SET value = %s WHERE key = %s", (b"\x01\x00\x02", k0))
    assert cur.rowcount == 1
    data[k0] = b"\x01\x00\x02"
    cur = db.execute("UPDATE t SET key = %s WHERE key = %s", (kb + b"\x00\x00", kb + b"\xff\xfe"))
    assert cur.rowcount == 1
    data[kb + b"\x00\x00"] = data.pop(kb + b"\xff\xfe")
    cur = db.execute("DELETE FROM t WHERE key = %s", (kb + b"\x00",))
    assert cur.rowcount == 1
    del data[kb + b"\x00"]
    assert dump(etcd, kp) == data
    assert db.rows("SELECT key, value FROM t") == sorted(data.items())


def test_plain_explain_of_writes(db, etcd, kp):
    """EXPLAIN without ANALYZE sets up no write state; it must not crash
    (PostgreSQL asks for the batch size even then) and shows the batch size."""
    make_table(db, etcd, kp, columns=KV, batch_size="50")
    for sql in (
        f"INSERT INTO t (key, value) VALUES ({lit(kp + 'a')}, '1')",
        f"INSERT INTO t (key, value) SELECT {lit(kp)} || g, 'x' FROM generate_series(1, 3) g",
        f"UPDATE t SET value = 'y' WHERE key = {lit(kp + 'a')}",
        f"DELETE FROM t WHERE key = {lit(kp + 'a')}",
    ):
        plan = [r[0] for r in db.rows("EXPLAIN " + sql)]
        assert any("etcd Batch Size: 50" in line for line in plan), plan
    assert dump(etcd, kp) == {}, "EXPLAIN wrote nothing"
    assert_table_usable(db)


# --------------------------------------------------------------------------
# memory of large writes (one etcd version, on a private etcd)
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def etcd_private():
    with private_etcd() as srv:
        yield srv


@pytest.mark.usefixtures("statement_mode")
def test_insert_select_of_large_jsonb_uses_per_row_memory(db, etcd_private):
    """Conversions of each row (jsonb output, detoasting, encoding) are
    freed after the row: 200k rows of 1 KiB jsonb keep the backend's peak
    memory growth under 64 MB (the benchmark's memory row style)."""
    etcd = etcd_private
    n = 200_000
    make_table(db, etcd, "ins/", columns="key text, value jsonb")
    pid = db.backend_pid()
    db.execute("INSERT INTO t VALUES ('ins/warm', '{}')")  # connect, plan, load
    before = vm_hwm_kb(pid)
    cur = db.execute(
        "INSERT INTO t SELECT 'ins/' || lpad(i::text, 6, '0'), "
        "jsonb_build_object('i', i, 'pad', repeat('x', 1000)) FROM generate_series(1, %s) i",
        (n,),
    )
    growth_mb = (vm_hwm_kb(pid) - before) / 1024
    assert cur.rowcount == n
    out = json.loads(etcd.ctl("get", "--prefix", "--keys-only", "--limit", "1", "-w", "json",
                              "--", "ins/"))
    assert int(out["count"]) == n + 1
    v = json.loads(etcd.get("ins/100000"))
    assert v["i"] == 100000 and len(v["pad"]) == 1000
    print(f"backend VmHWM grew by {growth_mb:.1f} MB for {n} rows of 1 KiB jsonb")
    assert growth_mb < 64, f"backend peak RSS grew by {growth_mb:.1f} MB"


def test_statement_mode_write_with_unknown_outcome_is_08007(statement_mode, etcd_fresh):
    """A statement-mode write whose request times out (etcd SIGSTOPped:
    it may have applied it, as far as the client can tell) is reported as
    08007 'outcome unknown', never as a plain failure; a write that never
    reached etcd is reported with its own error."""
    db = statement_mode
    db.create_server("s", etcd_fresh.endpoint, request_timeout="2", connect_timeout="2")
    db.create_table("t", "s", prefix="w/")
    db.execute("INSERT INTO t VALUES ('w/a', '1')")  # a warm connection
    etcd_fresh.stop()
    try:
        e = expect_error(db.conn, "INSERT INTO t VALUES ('w/b', '2')", sqlstate="08007")
        assert "outcome of the write" in err_text(e) and '"s"' in err_text(e), err_text(e)
        # deciding it needs etcd, which is still stopped
        assert "could not be reached within request_timeout" in err_text(e), err_text(e)
        assert "Read the keys" in (e.diag.message_hint or "")
        assert_session_usable(db.conn)
    finally:
        etcd_fresh.cont()
    # a write that cannot even connect was certainly not applied: HV00N
    db.create_server("dead", "127.0.0.1:1", connect_timeout="1")
    db.create_table("td", "dead", prefix="w/")
    expect_error(db.conn, "INSERT INTO td VALUES ('w/c', '3')", sqlstate="HV00N")
