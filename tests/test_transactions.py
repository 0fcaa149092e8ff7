"""PostgreSQL transactions over etcd (etcd_fdw.commit_mode = 'transaction',
the default).

Writes are kept in the backend and sent at COMMIT as one guarded etcd
transaction per connection; ROLLBACK, errors and ROLLBACK TO SAVEPOINT
discard them; scans of the same transaction see them.  etcd's state is
always checked with etcdctl, never only through the FDW.
"""

from __future__ import annotations

import base64
import json

import pytest

from harness import err_text, expect_error

COLS = "key text, value text, create_revision bigint, mod_revision bigint, version bigint, lease bigint"


def lit(s):
    return "'" + str(s).replace("'", "''") + "'"


def dump(etcd, prefix):
    """{key: (value, mod_revision)} under prefix, read with etcdctl."""
    out = json.loads(etcd.ctl("get", "--prefix", "-w", "json", "--", prefix))
    return {
        base64.b64decode(kv["key"]).decode(): (
            base64.b64decode(kv.get("value", "")).decode(),
            int(kv["mod_revision"]),
        )
        for kv in out.get("kvs") or []
    }


def values(etcd, prefix):
    return {k: v for k, (v, _) in dump(etcd, prefix).items()}


@pytest.fixture
def tx(db, etcd, kp):
    """A server `s`, a table t (all columns) over kp holding a=1, b=2, c=3."""
    etcd.put_many({kp + "a": "1", kp + "b": "2", kp + "c": "3"})
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", columns=COLS, prefix=kp)
    db.kp = kp
    db.etcd = etcd
    return db


def test_rollback_discards_every_kind_of_write(tx):
    db, etcd, kp = tx, tx.etcd, tx.kp
    before = dump(etcd, kp)
    rev = etcd.revision()
    c = db.conn
    c.execute("BEGIN")
    c.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'new')}, 'n')")
    c.execute(f"UPDATE t SET value = 'changed' WHERE key = {lit(kp + 'a')}")
    c.execute(f"DELETE FROM t WHERE key = {lit(kp + 'b')}")
    c.execute(f"UPDATE t SET key = {lit(kp + 'c2')} WHERE key = {lit(kp + 'c')}")
    with c.cursor() as cur:
        with cur.copy("COPY t (key, value) FROM STDIN") as cp:
            cp.write_row([kp + "copied", "x"])
    # the transaction sees its writes ...
    assert db.rows("SELECT key, value FROM t ORDER BY key") == [
        (kp + "a", "changed"), (kp + "c2", "3"), (kp + "copied", "x"), (kp + "new", "n")]
    c.execute("TRUNCATE t")
    assert db.scalar("SELECT count(*) FROM t") == 0
    # ... etcd does not, and after ROLLBACK nothing happened at all
    assert dump(etcd, kp) == before
    c.execute("ROLLBACK")
    assert dump(etcd, kp) == before
    assert etcd.revision() == rev
    assert db.rows("SELECT key, value FROM t ORDER BY key") == [
        (kp + "a", "1"), (kp + "b", "2"), (kp + "c", "3")]


def test_commit_is_one_etcd_transaction(tx):
    db, etcd, kp = tx, tx.etcd, tx.kp
    rev = etcd.revision()
    c = db.conn
    c.execute("BEGIN")
    c.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'd')}, '4'), ({lit(kp + 'e')}, '5')")
    c.execute(f"UPDATE t SET value = value || '!' WHERE key IN ({lit(kp + 'a')}, {lit(kp + 'd')})")
    c.execute(f"DELETE FROM t WHERE key = {lit(kp + 'b')}")
    c.execute(f"UPDATE t SET key = {lit(kp + 'c2')} WHERE key = {lit(kp + 'c')}")
    c.execute("COMMIT")
    after = dump(etcd, kp)
    assert etcd.revision() == rev + 1, "all writes in one etcd revision"
    assert {k: v for k, (v, _) in after.items()} == {
        kp + "a": "1!", kp + "c2": "3", kp + "d": "4!", kp + "e": "5"}
    assert all(m == rev + 1 for k, (_, m) in after.items()), after


def test_autocommit_statement_commits_at_once(tx):
    db, etcd, kp = tx, tx.etcd, tx.kp
    db.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'x')}, 'y')")
    assert values(etcd, kp)[kp + "x"] == "y"
    rows = db.rows(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'r')}, 'v') "
                   "RETURNING key, value, create_revision, mod_revision, version, lease")
    assert rows == [(kp + "r", "v", None, None, None, None)], "pending rows have no metadata"
    kv = etcd.get_kv(kp + "r")
    assert kv["value"] == b"v" and kv["version"] == 1


def test_error_later_in_the_transaction_discards_earlier_writes(tx):
    db, etcd, kp = tx, tx.etcd, tx.kp
    before = dump(etcd, kp)
    c = db.conn
    c.execute("BEGIN")
    c.execute(f"DELETE FROM t WHERE key = {lit(kp + 'a')}")
    expect_error(c, "SELECT 1/0", sqlstate="22012")
    # COMMIT of an aborted transaction is a ROLLBACK
    c.execute("COMMIT")
    assert dump(etcd, kp) == before
    # a failing statement inside a transaction: its own rows too
    c.execute("BEGIN")
    c.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'ok')}, '1')")
    expect_error(c, f"INSERT INTO t (key, value) VALUES ({lit(kp + 'x1')}, '1'), (NULL, '2')",
                 sqlstate="23502")
    c.execute("ROLLBACK")
    assert dump(etcd, kp) == before


def test_savepoints(tx):
    db, etcd, kp = tx, tx.etcd, tx.kp
    c = db.conn
    c.execute("BEGIN")
    c.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'n1')}, 'x')")
    c.execute("SAVEPOINT s1")
    c.execute(f"UPDATE t SET value = 'in s1' WHERE key = {lit(kp + 'n1')}")
    c.execute(f"DELETE FROM t WHERE key = {lit(kp + 'a')}")
    c.execute("SAVEPOINT s2")
    c.execute(f"UPDATE t SET value = 'in s2' WHERE key = {lit(kp + 'n1')}")
    c.execute(f"DELETE FROM t WHERE key = {lit(kp + 'b')}")
    c.execute("TRUNCATE t")
    assert db.scalar("SELECT count(*) FROM t") == 0
    c.execute("ROLLBACK TO SAVEPOINT s2")
    assert db.rows("SELECT key, value FROM t ORDER BY key") == [
        (kp + "b", "2"), (kp + "c", "3"), (kp + "n1", "in s1")]
    c.execute("RELEASE SAVEPOINT s1")
    c.execute("SAVEPOINT s3")
    c.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'n3')}, 'gone')")
    # an error inside a savepoint: rolling back to it keeps the rest
    expect_error(c, f"INSERT INTO t (key, value) VALUES ({lit(kp + 'n1')}, 'dup')", sqlstate="23505")
    c.execute("ROLLBACK TO SAVEPOINT s3")
    c.execute("SAVEPOINT s4")
    c.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'n4')}, 'kept')")
    c.execute("RELEASE SAVEPOINT s4")
    assert values(etcd, kp) == {kp + "a": "1", kp + "b": "2", kp + "c": "3"}
    c.execute("COMMIT")
    assert values(etcd, kp) == {kp + "b": "2", kp + "c": "3", kp + "n1": "in s1", kp + "n4": "kept"}


def test_read_your_writes_under_pushdown(tx):
    db, etcd, kp = tx, tx.etcd, tx.kp
    etcd.put_many({kp + f"k{i}": str(i) for i in range(5)})
    c = db.conn
    c.execute("BEGIN")
    c.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'k5')}, '5'), ({lit(kp + 'b2')}, 'x')")
    c.execute(f"DELETE FROM t WHERE key IN ({lit(kp + 'k4')}, {lit(kp + 'k1')})")
    c.execute(f"UPDATE t SET value = 'two' WHERE key = {lit(kp + 'k2')}")
    c.execute(f"UPDATE t SET key = {lit(kp + 'k9')} WHERE key = {lit(kp + 'k3')}")
    # an inserted row can be updated and renamed again
    c.execute(f"UPDATE t SET value = 'x2' WHERE key = {lit(kp + 'b2')}")
    c.execute(f"UPDATE t SET key = {lit(kp + 'b3')} WHERE key = {lit(kp + 'b2')}")
    expected = [(kp + "a", "1"), (kp + "b", "2"), (kp + "b3", "x2"), (kp + "c", "3"),
                (kp + "k0", "0"), (kp + "k2", "two"), (kp + "k5", "5"), (kp + "k9", "3")]
    assert db.rows("SELECT key, value FROM t ORDER BY key") == expected
    q = f"SELECT key FROM t WHERE key LIKE {lit(kp + 'k%')} ORDER BY key DESC LIMIT 2 OFFSET 1"
    assert db.rows(q) == [(kp + "k5",), (kp + "k2",)]
    plan = [r[0] for r in db.rows("EXPLAIN " + q)]
    assert any("etcd Limit: 3" in p for p in plan), plan
    q = f"SELECT key, value FROM t WHERE key = ANY(ARRAY[{lit(kp + 'k1')}, {lit(kp + 'k5')}, {lit(kp + 'k2')}])"
    assert sorted(db.rows(q)) == [(kp + "k2", "two"), (kp + "k5", "5")]
    assert db.scalar("SELECT count(*) FROM t") == len(expected)
    # metadata of pending rows reads NULL; of untouched rows, etcd's
    rows = dict((k, m) for k, m in db.rows("SELECT key, mod_revision FROM t"))
    assert rows[kp + "k5"] is None and rows[kp + "k2"] is None and rows[kp + "a"] is not None
    # a non-key sort with LIMIT over pending rows: NULL first when descending
    got = [r[0] for r in db.rows("SELECT mod_revision FROM t ORDER BY mod_revision DESC LIMIT 5")]
    assert got[:4] == [None] * 4 and got[4] is not None
    got = [r[0] for r in db.rows("SELECT mod_revision FROM t ORDER BY mod_revision LIMIT 4")]
    assert None not in got
    # prepared statements and a parameterized join
    c.execute("PREPARE q(text) AS SELECT value FROM t WHERE key = $1")
    for _ in range(7):
        assert db.scalar(f"EXECUTE q({lit(kp + 'k5')})") == "5"
        assert db.scalar(f"EXECUTE q({lit(kp + 'k4')})") is None
    c.execute("CREATE TEMP TABLE probe (k text)")
    c.execute(f"INSERT INTO probe VALUES ({lit(kp + 'k9')}), ({lit(kp + 'k1')}), ({lit(kp + 'a')})")
    c.execute("SET enable_hashjoin = off")
    c.execute("SET enable_mergejoin = off")
    assert sorted(db.rows("SELECT p.k, t.value FROM probe p JOIN t ON t.key = p.k")) == [
        (kp + "a", "1"), (kp + "k9", "3")]
    c.execute("ROLLBACK")
    assert values(etcd, kp + "k") == {kp + f"k{i}": str(i) for i in range(5)}


def test_concurrent_write_between_read_and_commit_is_40001(tx):
    db, etcd, kp = tx, tx.etcd, tx.kp
    c = db.conn
    c.execute("BEGIN")
    c.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'mine')}, 'm')")
    c.execute(f"UPDATE t SET value = 'ours' WHERE key = {lit(kp + 'a')}")
    etcd.put(kp + "a", "theirs")
    e = expect_error(c, "COMMIT", sqlstate="40001", contains=kp + "a")
    assert "Nothing of the transaction was written" in err_text(e)
    assert values(etcd, kp) == {kp + "a": "theirs", kp + "b": "2", kp + "c": "3"}
    # deleted meanwhile: also 40001
    c.execute("BEGIN")
    c.execute(f"DELETE FROM t WHERE key = {lit(kp + 'b')}")
    etcd.ctl("del", "--", kp + "b")
    etcd.put(kp + "b", "back")
    expect_error(c, "COMMIT", sqlstate="40001", contains=kp + "b")
    assert values(etcd, kp)[kp + "b"] == "back"


def test_concurrent_inserts_of_one_key_commit_once(tx):
    db, etcd, kp = tx, tx.etcd, tx.kp
    c1, c2 = db.conn, db.second_connection()
    c1.execute("BEGIN")
    c2.execute("BEGIN")
    c1.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'same')}, 'first')")
    c2.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'same')}, 'second')")
    c1.execute("COMMIT")
    expect_error(c2, "COMMIT", sqlstate="23505", contains=kp + "same")
    assert values(etcd, kp)[kp + "same"] == "first"


def test_on_conflict_do_nothing_decides_at_the_statement_and_guards_it(tx):
    db, etcd, kp = tx, tx.etcd, tx.kp
    c = db.conn
    c.execute("BEGIN")
    cur = c.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'a')}, 'no'), "
                    f"({lit(kp + 'fresh')}, 'yes') ON CONFLICT DO NOTHING")
    assert cur.rowcount == 1
    c.execute("COMMIT")
    assert values(etcd, kp)[kp + "a"] == "1" and values(etcd, kp)[kp + "fresh"] == "yes"
    c.execute("BEGIN")
    c.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'late')}, 'mine') ON CONFLICT DO NOTHING")
    etcd.put(kp + "late", "theirs")
    expect_error(c, "COMMIT", sqlstate="40001", contains=kp + "late")
    assert values(etcd, kp)[kp + "late"] == "theirs"


def test_repeatable_read_reads_one_revision(tx):
    db, etcd, kp = tx, tx.etcd, tx.kp
    c = db.conn
    c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    assert db.scalar("SELECT count(*) FROM t") == 3
    etcd.put(kp + "later", "x")
    etcd.put(kp + "a", "changed")
    assert db.scalar("SELECT count(*) FROM t") == 3
    assert db.scalar(f"SELECT value FROM t WHERE key = {lit(kp + 'a')}") == "1"
    # a write based on the snapshot fails at commit: first committer wins
    c.execute(f"UPDATE t SET value = 'mine' WHERE key = {lit(kp + 'a')}")
    expect_error(c, "COMMIT", sqlstate="40001", contains=kp + "a")
    # READ COMMITTED: every statement reads the latest revision
    c.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
    assert db.scalar("SELECT count(*) FROM t") == 4
    etcd.put(kp + "later2", "x")
    assert db.scalar("SELECT count(*) FROM t") == 5
    c.execute("COMMIT")
    # SERIALIZABLE pins too
    c.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
    assert db.scalar("SELECT count(*) FROM t") == 5
    etcd.put(kp + "later3", "x")
    assert db.scalar("SELECT count(*) FROM t") == 5
    c.execute("COMMIT")


def test_compacted_snapshot_is_22023_naming_the_revision(tx):
    db, etcd, kp = tx, tx.etcd, tx.kp
    c = db.conn
    c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    assert db.scalar("SELECT count(*) FROM t") == 3
    snapshot = etcd.revision()
    etcd.put(kp + "x", "1")
    etcd.put(kp + "x", "2")
    etcd.ctl("compaction", str(etcd.revision()))
    e = expect_error(c, "SELECT count(*) FROM t", sqlstate="22023")
    assert f"revision {snapshot}" in err_text(e), err_text(e)
    c.execute("ROLLBACK")


def test_oversize_transaction_is_refused_whole(tx):
    db, etcd, kp = tx, tx.etcd, tx.kp
    c = db.conn
    c.execute("BEGIN")
    c.execute(f"INSERT INTO t (key, value) SELECT {lit(kp + 'm/')} || i, 'v' FROM generate_series(1, 100) i")
    e = expect_error(
        c, f"INSERT INTO t (key, value) SELECT {lit(kp + 'n/')} || i, 'v' FROM generate_series(1, 100) i",
        sqlstate="54000")
    text = err_text(e)
    assert "128" in text and "commit_mode" in text, text
    c.execute("ROLLBACK")
    assert values(etcd, kp + "m/") == {} and values(etcd, kp + "n/") == {}
    # one autocommit statement over the limit: the same, nothing written
    expect_error(c, f"INSERT INTO t (key, value) SELECT {lit(kp + 'o/')} || i, 'v' "
                    "FROM generate_series(1, 200) i", sqlstate="54000")
    assert values(etcd, kp + "o/") == {}
    # too many bytes
    expect_error(c, f"INSERT INTO t (key, value) VALUES ({lit(kp + 'big1')}, repeat('x', 900000)), "
                    f"({lit(kp + 'big2')}, repeat('y', 900000))", sqlstate="54000")
    assert etcd.get(kp + "big1") is None


def test_statement_mode_writes_at_once(tx):
    db, etcd, kp = tx, tx.etcd, tx.kp
    c = db.conn
    c.execute("SET etcd_fdw.commit_mode = 'statement'")
    c.execute("BEGIN")
    rows = db.rows(f"INSERT INTO t (key, value) VALUES ({lit(kp + 's')}, 'v') RETURNING version")
    assert rows == [(1,)], "statement mode: real metadata"
    assert etcd.get(kp + "s") == b"v"
    c.execute("ROLLBACK")
    assert etcd.get(kp + "s") == b"v", "statement mode: ROLLBACK does not undo"
    c.execute(f"INSERT INTO t (key, value) SELECT {lit(kp + 'bulk/')} || i, 'v' FROM generate_series(1, 500) i")
    assert len(values(etcd, kp + "bulk/")) == 500
    c.execute("RESET etcd_fdw.commit_mode")
    assert db.scalar("SHOW etcd_fdw.commit_mode") == "transaction"
    expect_error(c, "SET etcd_fdw.commit_mode = 'sometimes'", sqlstate="22023")


def test_prepare_transaction_is_refused(tx):
    db, etcd, kp = tx, tx.etcd, tx.kp
    c = db.conn
    c.execute("BEGIN")
    c.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'p')}, 'v')")
    e = expect_error(c, "PREPARE TRANSACTION 'etcd_fdw_test'", sqlstate="0A000")
    assert "etcd" in err_text(e)
    c.execute("ROLLBACK")
    assert etcd.get(kp + "p") is None


def test_two_servers_commit_in_order_and_say_which_committed(tx):
    db, etcd, kp = tx, tx.etcd, tx.kp
    db.create_server("s2", etcd.endpoint)
    db.create_table("u", "s2", columns="key text, value text", prefix=kp)
    c = db.conn
    c.execute("BEGIN")
    c.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'via_s')}, '1')")
    c.execute(f"INSERT INTO u (key, value) VALUES ({lit(kp + 'via_s2')}, '2')")
    c.execute("COMMIT")
    assert values(etcd, kp)[kp + "via_s"] == "1" and values(etcd, kp)[kp + "via_s2"] == "2"
    # the second server's commit fails: the error says the first committed
    c.execute("BEGIN")
    c.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'first_ok')}, '1')")
    c.execute(f"UPDATE u SET value = 'mine' WHERE key = {lit(kp + 'via_s2')}")
    etcd.put(kp + "via_s2", "theirs")
    e = expect_error(c, "COMMIT", sqlstate="40001")
    assert '"s"' in err_text(e) and "committed" in err_text(e), err_text(e)
    assert values(etcd, kp)[kp + "first_ok"] == "1"


def test_cancel_and_timeout_before_commit_leave_nothing(tx):
    db, etcd, kp = tx, tx.etcd, tx.kp
    c = db.conn
    c.execute("BEGIN")
    c.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'q')}, 'v')")
    c.execute("SET LOCAL statement_timeout = '200ms'")
    expect_error(c, "SELECT pg_sleep(2)", sqlstate="57014")
    c.execute("ROLLBACK")
    assert etcd.get(kp + "q") is None
    assert db.scalar("SELECT count(*) FROM t") == 3


def test_truncate_then_insert_in_one_commit(tx):
    """TRUNCATE and later INSERTs into the same range commit together: the
    range delete is cut around the keys written after it."""
    db, etcd, kp = tx, tx.etcd, tx.kp
    etcd.put("outside/" + kp, "keep")
    rev = etcd.revision()
    c = db.conn
    c.execute("BEGIN")
    c.execute("TRUNCATE t")
    c.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'b')}, 'new b'), ({lit(kp + 'z')}, 'z')")
    # the truncated key b is free again, also for ON CONFLICT DO NOTHING
    cur = c.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'a')}, 'new a') ON CONFLICT DO NOTHING")
    assert cur.rowcount == 1
    assert db.rows("SELECT key, value FROM t ORDER BY key") == [
        (kp + "a", "new a"), (kp + "b", "new b"), (kp + "z", "z")]
    c.execute("COMMIT")
    assert values(etcd, kp) == {kp + "a": "new a", kp + "b": "new b", kp + "z": "z"}
    assert etcd.revision() == rev + 1
    assert etcd.get("outside/" + kp) == b"keep"


def test_plpgsql_exception_block_rolls_back_its_subtransaction(tx):
    db, etcd, kp = tx, tx.etcd, tx.kp
    db.execute(f"""
        DO $$
        BEGIN
          INSERT INTO t (key, value) VALUES ({lit(kp + 'kept')}, 'k');
          BEGIN
            INSERT INTO t (key, value) VALUES ({lit(kp + 'undone')}, 'u');
            DELETE FROM t WHERE key = {lit(kp + 'a')};
            RAISE EXCEPTION 'boom';
          EXCEPTION WHEN others THEN NULL;
          END;
        END $$""")
    assert values(etcd, kp) == {kp + "a": "1", kp + "b": "2", kp + "c": "3", kp + "kept": "k"}


def test_cursor_does_not_see_later_writes_of_its_transaction(tx):
    """A scan's view of the pending writes is taken when it begins, as a
    PostgreSQL cursor sees the data of its start."""
    db, etcd, kp = tx, tx.etcd, tx.kp
    c = db.conn
    c.execute("BEGIN")
    c.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'b2')}, 'before')")
    c.execute("DECLARE cur CURSOR FOR SELECT key FROM t ORDER BY key")
    assert c.execute("FETCH 2 FROM cur").fetchall() == [(kp + "a",), (kp + "b",)]
    c.execute(f"INSERT INTO t (key, value) VALUES ({lit(kp + 'b3')}, 'after')")
    c.execute(f"DELETE FROM t WHERE key = {lit(kp + 'c')}")
    assert c.execute("FETCH ALL FROM cur").fetchall() == [(kp + "b2",), (kp + "c",)]
    assert db.rows("SELECT key FROM t ORDER BY key") == [
        (kp + "a",), (kp + "b",), (kp + "b2",), (kp + "b3",)]
    c.execute("COMMIT")
    assert set(values(etcd, kp)) == {kp + "a", kp + "b", kp + "b2", kp + "b3"}


def test_analyze_in_a_transaction_counts_its_pending_rows(tx):
    db, etcd, kp = tx, tx.etcd, tx.kp
    c = db.conn
    c.execute("BEGIN")
    c.execute(f"INSERT INTO t (key, value) SELECT {lit(kp + 'n/')} || i, 'v' FROM generate_series(1, 7) i")
    c.execute(f"DELETE FROM t WHERE key = {lit(kp + 'a')}")
    c.execute("ANALYZE t")
    assert db.scalar("SELECT reltuples FROM pg_class WHERE relname = 't'") == 3 + 7 - 1
    c.execute("ROLLBACK")
    assert values(etcd, kp) == {kp + "a": "1", kp + "b": "2", kp + "c": "3"}


def test_delete_returning_carries_the_scanned_values(tx):
    """DELETE ... RETURNING in a transaction returns each deleted row's
    value as its scan read it: the statement is one etcd request (the
    scan), not one more read per row; the rows it returns are etcd's, and
    the keys go at COMMIT."""
    db, etcd, kp = tx, tx.etcd, tx.kp
    etcd.put_many({f"{kp}d/{i:02d}": f"v{i}" for i in range(20)})
    db.rows("SELECT count(*) FROM t")  # connected (a new connection's first request is counted too)
    db.execute("BEGIN")
    r0, t0 = etcd.kv_handled("Range"), etcd.kv_handled("Txn")
    rows = db.rows(f"DELETE FROM t WHERE key LIKE {lit(kp + 'd/%')} RETURNING key, value")
    requests = (etcd.kv_handled("Range") - r0, etcd.kv_handled("Txn") - t0)
    assert sorted(rows) == [(f"{kp}d/{i:02d}", f"v{i}") for i in range(20)]
    assert requests == (1, 0), f"(Range, Txn) requests of the DELETE: {requests}"
    # a row the transaction wrote itself returns its pending value
    db.execute(f"UPDATE t SET value = 'pending' WHERE key = {lit(kp + 'a')}")
    assert db.rows(f"DELETE FROM t WHERE key = {lit(kp + 'a')} RETURNING value") == [("pending",)]
    db.execute("COMMIT")
    assert values(etcd, kp) == {kp + "b": "2", kp + "c": "3"}
