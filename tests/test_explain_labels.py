"""Every etcd line of EXPLAIN is true of the plan it describes (README:
"EXPLAIN").

For each plan shape -- point lookup, key list (IN / = ANY), prefix, range,
count pushdown, ORDER BY pushed (key DESC, a non-key sort), LIMIT pushed,
a parameterized join (key = outer.col), and tables with fetch_size,
revision and consistency options -- EXPLAIN (VERBOSE) must print exactly
the expected set of etcd lines with their values, and EXPLAIN (ANALYZE,
VERBOSE) adds exactly Pages and Keys Fetched / Keys Counted, whose values
are checked against etcd's own request counters where they count requests.

In particular `etcd Fetch Size` appears only where pages of fetch_size keys
are read: never for a single-key get, a key list, a count, a non-key sort
(one request per range) or a LIMIT no larger than the first page.
"""

from __future__ import annotations

import re

import pytest

AUTO = "auto (first 1000, then growing up to 16 MiB per request)"
AUTO_WHOLE = ("auto (first 1000, or the size the last complete scan of the range found, then up to "
              "16 MiB per request: the query reads the whole range)")
LIN = "linearizable"


def etcd_lines(db, sql, analyze=False):
    """The plan's etcd lines (and Relations) as {label: value}; a label
    twice is an error."""
    opts = "ANALYZE, VERBOSE, TIMING OFF, SUMMARY OFF, COSTS OFF" if analyze else "VERBOSE, COSTS OFF"
    plan = [r[0] for r in db.rows(f"EXPLAIN ({opts}) {sql}")]
    got = {}
    for line in plan:
        m = re.match(r"^\s*(etcd [A-Za-z ]+|Relations): (.*)$", line)
        if m:
            assert m.group(1) not in got, "\n".join(plan)
            got[m.group(1)] = m.group(2).strip()
    return got, "\n".join(plan)


def check(db, etcd, sql, want, analyzed, requests=None):
    """EXPLAIN shows exactly `want`; EXPLAIN ANALYZE exactly `want` plus
    `analyzed`; `requests` = (Range, Txn) requests the ANALYZE run sent."""
    got, plan = etcd_lines(db, sql)
    assert got == want, plan
    r0, t0 = etcd.kv_handled("Range"), etcd.kv_handled("Txn")
    got, plan = etcd_lines(db, sql, analyze=True)
    sent = (etcd.kv_handled("Range") - r0, etcd.kv_handled("Txn") - t0)
    assert got == {**want, **analyzed}, plan
    if requests is not None:
        assert sent == requests, plan
        assert int(analyzed["etcd Pages"]) == sum(requests), plan


@pytest.fixture
def t(db, etcd, kp):
    """t: 40 keys kp/k00..k39 (value v<i>); l: a local table of 3 of them
    and one absent key."""
    etcd.put_many([(f"{kp}k{i:02d}", f"v{i}") for i in range(40)])
    etcd.put_many([(f"{kp[:-1]}", "outside")])
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", columns="key text, value text, mod_revision bigint", prefix=kp)
    db.execute("CREATE TABLE l (k text)")
    db.execute(f"INSERT INTO l VALUES ('{kp}k01'), ('{kp}k07'), ('{kp}k30'), ('{kp}zz')")
    db.execute("ANALYZE l")
    db.scalar(f"SELECT value FROM t WHERE key = '{kp}k00'")  # connect
    return db


def test_point_lookup(t, etcd, kp):
    k = f"{kp}k05"
    check(t, etcd, f"SELECT value FROM t WHERE key = '{k}'",
          {"etcd Range": f"key = '{k}'", "etcd Conditions": f"key = '{k}'",
           "etcd Keys Only": "false", "etcd Consistency": LIN},
          {"etcd Pages": "1", "etcd Keys Fetched": "1"}, requests=(1, 0))
    # a key outside the table's prefix: contradictory, nothing is sent
    check(t, etcd, "SELECT value FROM t WHERE key = 'elsewhere'",
          {"etcd Range": "none (contradictory conditions)", "etcd Conditions": "key = 'elsewhere'",
           "etcd Keys Only": "false", "etcd Consistency": LIN},
          {"etcd Pages": "0", "etcd Keys Fetched": "0"}, requests=(0, 0))


def test_key_list(t, etcd, kp):
    keys = [f"{kp}k03", f"{kp}k04", f"{kp}nope"]
    lst = ", ".join(f"'{k}'" for k in keys)
    want = {"etcd Range": ", ".join(f"key = '{k}'" for k in keys),
            "etcd Conditions": "key IN (3 keys)",
            "etcd Keys Only": "true",
            "etcd Key Lists": "read-only transactions of up to 128 keys",
            "etcd Consistency": LIN}
    check(t, etcd, f"SELECT key FROM t WHERE key IN ({lst})", want,
          {"etcd Pages": "1", "etcd Keys Fetched": "2"}, requests=(0, 1))
    # batch_size 2: two transactions
    t.execute("ALTER FOREIGN TABLE t OPTIONS (ADD batch_size '2')")
    want["etcd Key Lists"] = "read-only transactions of up to 2 keys"
    check(t, etcd, f"SELECT key FROM t WHERE key IN ({lst})", want,
          {"etcd Pages": "2", "etcd Keys Fetched": "2"}, requests=(0, 2))


def test_prefix_and_range(t, etcd, kp):
    check(t, etcd, f"SELECT key, value FROM t WHERE starts_with(key, '{kp}k1')",
          {"etcd Range": f"prefix '{kp}k1'", "etcd Conditions": f"key prefix '{kp}k1'",
           "etcd Keys Only": "false", "etcd Consistency": LIN, "etcd Fetch Size": AUTO_WHOLE},
          {"etcd Pages": "1", "etcd Keys Fetched": "10"}, requests=(1, 0))
    check(t, etcd, f"SELECT key FROM t WHERE key >= '{kp}k10' AND key < '{kp}k15'",
          {"etcd Range": f"['{kp}k10', '{kp}k15')",
           "etcd Conditions": f"key >= '{kp}k10' AND key < '{kp}k15'",
           "etcd Keys Only": "true", "etcd Consistency": LIN, "etcd Fetch Size": AUTO_WHOLE},
          {"etcd Pages": "1", "etcd Keys Fetched": "5"}, requests=(1, 0))
    # the whole table, in a query that may stop early (EXISTS): pages grow
    got, plan = etcd_lines(t, f"SELECT 1 FROM l WHERE EXISTS (SELECT 1 FROM t WHERE t.value = l.k)")
    assert got["etcd Fetch Size"] == AUTO, plan
    # an explicit fetch_size: that many keys per request
    t.execute("ALTER FOREIGN TABLE t OPTIONS (ADD fetch_size '15')")
    check(t, etcd, "SELECT key FROM t",
          {"etcd Range": f"prefix '{kp}'", "etcd Keys Only": "true", "etcd Consistency": LIN,
           "etcd Fetch Size": "15"},
          {"etcd Pages": "3", "etcd Keys Fetched": "40"}, requests=(3, 0))


def test_count_pushdown(t, etcd, kp):
    check(t, etcd, "SELECT count(*) FROM t",
          {"Relations": "Aggregate on (t)", "etcd Range": f"prefix '{kp}'", "etcd Keys Only": "true",
           "etcd Count Only": "true", "etcd Consistency": LIN},
          {"etcd Pages": "1", "etcd Keys Counted": "40"}, requests=(1, 0))
    # a counted key list: one transaction of count requests
    check(t, etcd, f"SELECT count(*) FROM t WHERE key IN ('{kp}k01', '{kp}k02', '{kp}none')",
          {"Relations": "Aggregate on (t)",
           "etcd Range": f"key = '{kp}k01', key = '{kp}k02', key = '{kp}none'",
           "etcd Conditions": "key IN (3 keys)",
           "etcd Keys Only": "true", "etcd Count Only": "true",
           "etcd Key Lists": "read-only transactions of up to 128 keys", "etcd Consistency": LIN},
          {"etcd Pages": "1", "etcd Keys Counted": "2"}, requests=(0, 1))


def test_sort_and_limit(t, etcd, kp):
    # key DESC with a LIMIT below the first page: one request of 5 keys
    check(t, etcd, "SELECT key FROM t ORDER BY key DESC LIMIT 5",
          {"etcd Range": f"prefix '{kp}'", "etcd Sort": "key DESC", "etcd Limit": "5",
           "etcd Keys Only": "true", "etcd Consistency": LIN},
          {"etcd Pages": "1", "etcd Keys Fetched": "5"}, requests=(1, 0))
    # ORDER BY key is etcd's own order: no sort is asked for
    check(t, etcd, "SELECT key FROM t ORDER BY key LIMIT 5",
          {"etcd Range": f"prefix '{kp}'", "etcd Limit": "5", "etcd Keys Only": "true",
           "etcd Consistency": LIN},
          {"etcd Pages": "1", "etcd Keys Fetched": "5"}, requests=(1, 0))
    # a non-key sort: one request per range whatever the limit
    check(t, etcd, "SELECT key, mod_revision FROM t ORDER BY mod_revision DESC LIMIT 3",
          {"etcd Range": f"prefix '{kp}'", "etcd Sort": "mod_revision DESC", "etcd Limit": "3",
           "etcd Keys Only": "true", "etcd Consistency": LIN},
          {"etcd Pages": "1", "etcd Keys Fetched": "3"}, requests=(1, 0))
    # a LIMIT alone
    check(t, etcd, "SELECT key, value FROM t LIMIT 4",
          {"etcd Range": f"prefix '{kp}'", "etcd Limit": "4", "etcd Keys Only": "false",
           "etcd Consistency": LIN},
          {"etcd Pages": "1", "etcd Keys Fetched": "4"}, requests=(1, 0))
    # a LIMIT above the first page: pages of fetch_size keys up to the limit
    t.execute("ALTER FOREIGN TABLE t OPTIONS (ADD fetch_size '10')")
    check(t, etcd, "SELECT key FROM t ORDER BY key DESC LIMIT 25",
          {"etcd Range": f"prefix '{kp}'", "etcd Sort": "key DESC", "etcd Limit": "25",
           "etcd Keys Only": "true", "etcd Consistency": LIN, "etcd Fetch Size": "10"},
          {"etcd Pages": "3", "etcd Keys Fetched": "25"}, requests=(3, 0))


def test_prepared_key_list(t, etcd, kp):
    """= ANY($1) of a generic plan: a key list known at run time."""
    t.execute("SET plan_cache_mode = force_generic_plan")
    t.execute("PREPARE p(text[]) AS SELECT key, value FROM t WHERE key = ANY($1)")
    arr = f"ARRAY['{kp}k01', '{kp}k02', '{kp}k03']"
    check(t, etcd, f"EXECUTE p({arr})",
          {"etcd Range": f"prefix '{kp}' (narrowed at run time by parameter 1)",
           "etcd Conditions": "key = ANY($1)", "etcd Keys Only": "false",
           "etcd Key Lists": "read-only transactions of up to 128 keys", "etcd Consistency": LIN},
          {"etcd Pages": "1", "etcd Keys Fetched": "3"}, requests=(0, 1))


def test_parameterized_join(t, etcd, kp):
    t.execute("SET enable_hashjoin = off")
    t.execute("SET enable_mergejoin = off")
    t.execute("SET enable_material = off")
    sql = "SELECT l.k, t.value FROM l JOIN t ON t.key = l.k"
    got, plan = etcd_lines(t, sql)
    assert "Nested Loop" in plan and "Foreign Scan on public.t" in plan, plan
    want = {"etcd Range": f"prefix '{kp}' (narrowed at run time by parameter 1)",
            "etcd Conditions": "key = l.k", "etcd Keys Only": "false", "etcd Consistency": LIN}
    # one get per outer row (4 loops), 3 of the keys exist; totals over loops
    check(t, etcd, sql, want, {"etcd Pages": "4", "etcd Keys Fetched": "3"}, requests=(4, 0))
    assert sorted(t.rows(sql)) == [(f"{kp}k01", "v1"), (f"{kp}k07", "v7"), (f"{kp}k30", "v30")]


def test_revision_and_consistency(t, etcd, kp):
    rev = etcd.revision()
    t.execute(f"CREATE FOREIGN TABLE old (key text, value text) SERVER s "
              f"OPTIONS (rowid_column 'key', prefix '{kp}', revision '{rev}', consistency 's')")
    check(t, etcd, f"SELECT value FROM old WHERE key = '{kp}k02'",
          {"etcd Range": f"key = '{kp}k02'", "etcd Conditions": f"key = '{kp}k02'",
           "etcd Keys Only": "false", "etcd Revision": str(rev), "etcd Consistency": "serializable"},
          {"etcd Pages": "1", "etcd Keys Fetched": "1"}, requests=(1, 0))


def test_whole_range_scan_sized_by_the_last_one(db, etcd, kp):
    """A query reading its whole range, without statistics, pages from
    1000 keys; the backend remembers what the complete scan found, and the
    next such scan of the same range takes it in one request (EXPLAIN's
    Fetch Size says so).  A query that may stop early, another range, or
    another session gets no such first page."""
    etcd.put_many([(f"{kp}b{i:04d}", "x" * 20) for i in range(2500)])
    db.create_server("s", etcd.endpoint)
    db.create_table("big", "s", prefix=f"{kp}b")
    db.scalar(f"SELECT 1 FROM big WHERE key = '{kp}b0000'")  # connect
    sql = "SELECT count(value) FROM big"
    want = {"etcd Range": f"prefix '{kp}b'", "etcd Keys Only": "false", "etcd Consistency": LIN,
            "etcd Fetch Size": AUTO_WHOLE}
    check(db, etcd, sql, want, {"etcd Pages": "2", "etcd Keys Fetched": "2500"}, requests=(2, 0))
    check(db, etcd, sql, want, {"etcd Pages": "1", "etcd Keys Fetched": "2500"}, requests=(1, 0))
    # grown since: the first page was sized for 2500 keys of 20 bytes and
    # still holds the range (a budget of 16 MiB), one request again
    etcd.put_many([(f"{kp}b{i:04d}", "x" * 20) for i in range(2500, 2600)])
    check(db, etcd, sql, want, {"etcd Pages": "1", "etcd Keys Fetched": "2600"}, requests=(1, 0))
    # another session starts from 1000 keys again
    other = db.connect()
    plan = [r[0] for r in db.rows(
        f"EXPLAIN (ANALYZE, VERBOSE, TIMING OFF, SUMMARY OFF, COSTS OFF) {sql}", conn=other)]
    assert [ln.strip() for ln in plan if "etcd Pages" in ln] == ["etcd Pages: 2"], plan
    # a query that may stop early keeps the small first page
    got, plan = etcd_lines(db, "SELECT value FROM big LIMIT 1500", analyze=True)
    assert got["etcd Fetch Size"] == AUTO and got["etcd Pages"] == "2", plan
