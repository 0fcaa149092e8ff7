"""ANALYZE of etcd foreign tables: the key count (reltuples), a random
sample for pg_statistic, and the planner's use of both."""

import re
import time

import pytest

from harness import assert_session_usable, err_text, expect_error


def explain(db, sql):
    return [r[0] for r in db.rows("EXPLAIN " + sql)]


def est_rows(plan_line):
    m = re.search(r"rows=(\d+)", plan_line)
    assert m, plan_line
    return int(m.group(1))


def foreign_scan_rows(db, sql):
    plan = explain(db, sql)
    lines = [l for l in plan if "Foreign Scan" in l]
    assert lines, "\n".join(plan)
    return est_rows(lines[0])


def reltuples(db, table):
    return db.scalar("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (table,))


def analyze_verbose(db, table):
    """ANALYZE VERBOSE table; the INFO messages it sent."""
    notices = []

    def handler(d):
        notices.append(d.message_primary or "")

    db.conn.add_notice_handler(handler)
    try:
        db.execute(f"ANALYZE VERBOSE {table}")
    finally:
        db.conn.remove_notice_handler(handler)
    return notices


@pytest.fixture


def loaded(db, etcd, kp):
    """2000 keys kp/k0000..k1999 with 50-byte values, and keys outside kp."""
    items = {f"{kp}k{i:04d}": f"{i:04d}".ljust(50, "v") for i in range(2000)}
    etcd.put_many(items)
    etcd.put_many({f"{kp[:-1]}x/{i}": "outside" for i in range(10)})
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", prefix=kp)
    return items


def test_analyze_counts_keys_and_fills_pg_stats(db, etcd, loaded, kp):
    assert reltuples(db, "t") == -1  # never analyzed
    msgs = analyze_verbose(db, "t")
    assert any("etcd holds 2000 keys in the table's range, 2000 rows in sample" in m
               for m in msgs), msgs
    assert reltuples(db, "t") == 2000
    stats = {r[0]: r[1:] for r in db.rows(
        "SELECT attname, null_frac, avg_width, n_distinct, histogram_bounds::text "
        "FROM pg_stats WHERE tablename = 't'")}
    null_frac, width, ndistinct, hist = stats["key"]
    assert null_frac == 0 and ndistinct == -1, stats["key"]  # every key distinct
    bounds = hist.strip("{}").split(",")
    assert bounds[0] == f"{kp}k0000" and bounds[-1] == f"{kp}k1999", hist
    null_frac, width, ndistinct, _ = stats["value"]
    assert null_frac == 0 and width == 51, stats["value"]  # 50 bytes + varlena header
    # a plain ANALYZE of the database skips foreign tables (like PostgreSQL
    # does for every FDW); naming the table counts the new keys
    etcd.put_many({f"{kp}new{i}": "n" for i in range(5)})
    db.execute("ANALYZE")
    assert reltuples(db, "t") == 2000
    db.execute("ANALYZE t")
    assert reltuples(db, "t") == 2005


def test_analyze_samples_large_tables(db, loaded, kp):
    """More keys than the sample size: a random sample, every key counted."""
    db.execute("SET default_statistics_target = 1")  # 300-row samples
    msgs = analyze_verbose(db, "t")
    assert any("etcd holds 2000 keys in the table's range, 300 rows in sample" in m
               for m in msgs), msgs
    assert reltuples(db, "t") == 2000
    hist = db.scalar("SELECT histogram_bounds::text FROM pg_stats "
                     "WHERE tablename = 't' AND attname = 'key'")
    assert hist is not None
    # the sample is spread over the whole range, not the first 300 keys
    last = hist.strip("{}").split(",")[-1]
    assert last > f"{kp}k1500", hist


def test_analyze_drives_estimates_and_joins(db, loaded, kp):
    # before ANALYZE: a fixed guess for a prefix
    assert foreign_scan_rows(db, "SELECT * FROM t") == 1000
    db.execute("ANALYZE t")
    assert foreign_scan_rows(db, "SELECT * FROM t") == 2000
    # key ranges are estimated from the key histogram
    n = foreign_scan_rows(db, f"SELECT * FROM t WHERE key >= '{kp}k0500' AND key < '{kp}k1000'")
    assert 250 <= n <= 1000, n
    # a list of keys bounds the estimate
    assert foreign_scan_rows(db, f"SELECT * FROM t WHERE key IN ('{kp}k0001', '{kp}k0002')") == 2
    # a handful of local rows joined on the key: point lookups per row,
    # without forcing the join method
    db.execute("CREATE TABLE probe (k text)")
    db.execute(f"INSERT INTO probe VALUES ('{kp}k0007'), ('{kp}k1234'), ('{kp}nope')")
    db.execute("ANALYZE probe")
    sql = "SELECT p.k, t.value FROM probe p JOIN t ON t.key = p.k ORDER BY 1"
    plan = "\n".join(explain(db, sql))
    assert "Nested Loop" in plan and "narrowed at run time by parameter" in plan, plan
    assert db.rows(sql) == [(f"{kp}k0007", "0007".ljust(50, "v")),
                            (f"{kp}k1234", "1234".ljust(50, "v"))]


def test_analyze_keys_only_bytea_and_typed_values(db, etcd, kp):
    etcd.put_many({f"{kp}{i}": f'{{"n": {i}}}' for i in range(20)})
    db.create_server("s", etcd.endpoint)
    db.create_table("ko", "s", prefix=kp, keys_only="true")
    db.create_table("tb", "s", columns="key bytea, value bytea, mod_revision bigint", prefix=kp)
    db.create_table("tj", "s", columns="key text, value jsonb", prefix=kp)
    for t in ("ko", "tb", "tj"):
        db.execute(f"ANALYZE {t}")
        assert reltuples(db, t) == 20, t
    assert db.scalar("SELECT null_frac FROM pg_stats WHERE tablename = 'ko' "
                     "AND attname = 'value'") == 1.0
    assert db.scalar("SELECT n_distinct FROM pg_stats WHERE tablename = 'tb' "
                     "AND attname = 'mod_revision'") is not None
    assert db.scalar("SELECT avg_width FROM pg_stats WHERE tablename = 'tj' "
                     "AND attname = 'value'") > 0


def test_analyze_empty_range(db, etcd, kp):
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", prefix=kp + "nothing/")
    db.execute("ANALYZE t")
    assert reltuples(db, "t") == 0
    assert foreign_scan_rows(db, "SELECT * FROM t") == 1  # clamped, never 0


def test_analyze_errors(db, etcd, kp, dead_endpoint):
    etcd.put_many([(kp + "a", "ok"), (kp + "bad", b"\xff\xfe")])
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", prefix=kp)
    e = expect_error(db.conn, "ANALYZE t", sqlstate="22021")
    assert kp + "bad" in err_text(e), err_text(e)
    assert_session_usable(db.conn)
    assert reltuples(db, "t") == -1
    # bytea values analyze fine
    db.create_table("tb", "s", columns="key text, value bytea", prefix=kp)
    db.execute("ANALYZE tb")
    assert reltuples(db, "tb") == 2
    # unreachable etcd: a connection error naming the server, no statistics
    db.create_server("dead", dead_endpoint, connect_timeout="1")
    db.create_table("td", "dead")
    e = expect_error(db.conn, "ANALYZE td", sqlstate="HV00N")
    assert dead_endpoint in err_text(e), err_text(e)
    assert_session_usable(db.conn)
    assert reltuples(db, "td") == -1


def test_analyze_honours_statement_timeout(db, blackhole):
    """A hanging etcd does not hang ANALYZE: statement_timeout cancels it."""
    db.create_server("hang", blackhole.endpoint, connect_timeout="30")
    db.create_table("th", "hang")
    db.execute("SET statement_timeout = '500ms'")
    t0 = time.monotonic()
    e = expect_error(db.conn, "ANALYZE th", sqlstate="57014")
    assert "statement timeout" in str(e), str(e)
    # ended by the 0.5 s statement_timeout, long before the 30 s connect_timeout
    # (8 s: what a loaded 2-core CI machine may add)
    assert time.monotonic() - t0 < 0.5 + 8
    db.execute("RESET statement_timeout")
    assert_session_usable(db.conn)
    assert reltuples(db, "th") == -1
