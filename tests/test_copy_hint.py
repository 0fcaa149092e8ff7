"""The HINT of a duplicate key (23505) names a remedy the statement has.

* INSERT: "Use INSERT ... ON CONFLICT DO NOTHING to skip existing keys.";
* COPY FROM (which has no ON CONFLICT): the table option insert_mode 'put',
  as a command to run (`ALTER FOREIGN TABLE public.t OPTIONS (ADD
  insert_mode 'put')`, SET when the table has the option already), and
  running that command makes the same COPY succeed (overwriting);
* both commit modes: in 'statement' mode the statement raises; in
  'transaction' mode a key etcd has is found at COMMIT, where the HINT names
  the remedy of the kind of statement that created keys in the transaction
  (the table of a COPY; both remedies when INSERT and COPY did), while a key
  the transaction itself wrote twice is found by the statement;
* an UPDATE renaming a key onto an existing one gets neither remedy.
"""

from __future__ import annotations

import psycopg
import pytest

from harness import err_text

INSERT_HINT = "Use INSERT ... ON CONFLICT DO NOTHING to skip existing keys."


def copy_hint(table="public.t", verb="ADD"):
    return ("COPY cannot skip existing keys; to overwrite them, set the foreign table option "
            f"insert_mode 'put': ALTER FOREIGN TABLE {table} OPTIONS ({verb} insert_mode 'put').")


BOTH_HINT = ("To skip existing keys, use INSERT ... ON CONFLICT DO NOTHING; COPY cannot skip them, "
             "but with the foreign table option insert_mode 'put' INSERT and COPY overwrite them "
             "(ALTER FOREIGN TABLE ... OPTIONS (ADD insert_mode 'put')).")


def copy_rows(conn, table, rows):
    with conn.cursor() as cur:
        with cur.copy(f"COPY {table} (key, value) FROM STDIN") as cp:
            for r in rows:
                cp.write_row(r)
        return cur.statusmessage


def expect_duplicate(fn, key, hint):
    with pytest.raises(psycopg.Error) as ei:
        fn()
    e = ei.value
    assert e.sqlstate == "23505", err_text(e)
    assert f'key "{key}" already exists' in e.diag.message_primary, err_text(e)
    assert e.diag.message_hint == hint, err_text(e)
    return e


@pytest.fixture(params=["statement", "transaction"])
def mode_db(request, db):
    db.execute(f"ALTER DATABASE {db.name} SET etcd_fdw.commit_mode = '{request.param}'")
    db.execute(f"SET etcd_fdw.commit_mode = '{request.param}'")
    db.mode = request.param
    return db


def test_rerun_of_insert_and_copy(mode_db, etcd, kp):
    db = mode_db
    c = db.conn
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", prefix=kp)
    rows = [(f"{kp}{i:03d}", f"v{i}") for i in range(100)]  # one etcd txn in either mode
    values = ", ".join(f"('{k}', '{v}')" for k, v in rows)
    db.execute(f"INSERT INTO t VALUES {values}")
    # INSERT again: ON CONFLICT DO NOTHING (found by the statement or at COMMIT)
    expect_duplicate(lambda: db.execute(f"INSERT INTO t VALUES {values}"), kp + "000", INSERT_HINT)
    assert db.execute(f"INSERT INTO t VALUES {values} ON CONFLICT DO NOTHING").rowcount == 0
    # COPY again: insert_mode 'put'
    e = expect_duplicate(lambda: copy_rows(c, "t", [(k, "new") for k, _ in rows]),
                         kp + "000", copy_hint())
    assert etcd.get(kp + "000") == b"v0"
    # the hint's command works, and the same COPY then overwrites
    db.execute(e.diag.message_hint.split(": ", 1)[1].rstrip("."))
    assert copy_rows(c, "t", [(k, "new") for k, _ in rows]) == "COPY 100"
    assert etcd.get(kp + "099") == b"new"
    # a table that sets insert_mode 'create' itself: SET, not ADD
    db.execute("ALTER FOREIGN TABLE t OPTIONS (SET insert_mode 'create')")
    expect_duplicate(lambda: copy_rows(c, "t", rows[:1]), kp + "000", copy_hint(verb="SET"))
    # a quoted, schema-qualified name
    db.execute('CREATE SCHEMA "My S"')
    db.execute(f'CREATE FOREIGN TABLE "My S"."T t" (key text, value text) SERVER s '
               f"OPTIONS (rowid_column 'key', prefix '{kp}')")
    expect_duplicate(lambda: copy_rows(c, '"My S"."T t"', rows[:1]), kp + "000",
                     copy_hint(table='"My S"."T t"'))


def test_duplicate_within_a_transaction(mode_db, etcd, kp):
    """Keys written twice by one transaction (or one COPY): the statement
    finds it in both modes, with its own kind's hint."""
    db = mode_db
    c = db.conn
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", prefix=kp)
    # one COPY holding a key twice
    expect_duplicate(lambda: copy_rows(c, "t", [(kp + "a", "1"), (kp + "a", "2")]), kp + "a", copy_hint())
    assert etcd.get(kp + "a") is None
    expect_duplicate(lambda: db.execute(f"INSERT INTO t VALUES ('{kp}a', '1'), ('{kp}a', '2')"),
                     kp + "a", INSERT_HINT)
    if db.mode == "transaction":
        # a COPY of a key an INSERT of the same transaction wrote
        with c.transaction():
            db.execute(f"INSERT INTO t VALUES ('{kp}b', '1')")
            expect_duplicate(lambda: copy_rows(c, "t", [(kp + "b", "2")]), kp + "b", copy_hint())
            raise psycopg.Rollback()
    assert etcd.get(kp + "b") is None


def test_duplicate_found_at_commit(db, etcd, kp):
    """'transaction' mode: the commit finds keys etcd has; its HINT fits the
    statements that created keys in the transaction."""
    c = db.conn
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", prefix=kp)
    etcd.put(kp + "x", "old")
    for stmts, hint in (
        (["INSERT"], INSERT_HINT),
        (["COPY"], copy_hint()),
        (["INSERT", "COPY"], BOTH_HINT),
        (["COPY", "INSERT"], BOTH_HINT),
    ):
        def run():
            with c.transaction():
                for i, s in enumerate(stmts):
                    key = kp + "x" if i == 0 else f"{kp}y{i}"
                    if s == "INSERT":
                        db.execute(f"INSERT INTO t VALUES ('{key}', 'new')")
                    else:
                        copy_rows(c, "t", [(key, "new")])
        e = expect_duplicate(run, kp + "x", hint)
        assert "nothing of the transaction was written" in e.diag.message_detail, err_text(e)
        assert etcd.get(kp + "x") == b"old" and etcd.get(kp + "y1") is None
    # COPYs into two tables: the hint cannot name one
    db.create_table("u", "s", prefix=kp)

    def two():
        with c.transaction():
            copy_rows(c, "u", [(kp + "u1", "new")])
            copy_rows(c, "t", [(kp + "x", "new")])
    expect_duplicate(two, kp + "x", copy_hint(table="..."))
    assert etcd.get(kp + "u1") is None


@pytest.mark.parametrize("mode", ["statement", "transaction"])
def test_rename_onto_an_existing_key_has_no_insert_hint(db, etcd, kp, mode):
    db.execute(f"SET etcd_fdw.commit_mode = '{mode}'")
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", prefix=kp)
    etcd.put(kp + "a", "1")
    etcd.put(kp + "b", "2")
    e = expect_duplicate(lambda: db.execute(f"UPDATE t SET key = '{kp}b' WHERE key = '{kp}a'"),
                         kp + "b", None)
    assert e.diag.message_hint is None
    assert etcd.get(kp + "a") == b"1"
