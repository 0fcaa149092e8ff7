"""count(*) pushdown of etcd_fdw (GetForeignUpperPaths, UPPERREL_GROUP_AGG).

* a differential test: the same keys in etcd and in a local table, under a
  "C" and an ICU (linguistic) collation of the key column; every query must
  give the local table's answer, and EXPLAIN must show `etcd Count Only`
  exactly for the shapes that are pushed (count(*) / count(key) of one
  table whose WHERE etcd decides exactly) and an Aggregate node otherwise;
* prepared statements (generic plans with key lists and parameters);
* a transaction with pending writes (decided when the scan runs, also for a
  plan prepared before the writes);
* the `revision` and `consistency` table options;
* EXPLAIN (ANALYZE) output: Relations, Count Only, Pages, Keys Counted, and
  etcd's own request counters (its /metrics endpoint).
"""

from __future__ import annotations

import re

import psycopg
import pytest

import harness
from harness import err_text, sql_literal

ICU = harness.LINGUISTIC_COLLATION


def explain(db, sql, analyze=False, verbose=False, conn=None):
    opts = ["ANALYZE", "TIMING OFF", "SUMMARY OFF"] if analyze else []
    if verbose:
        opts.append("VERBOSE")
    head = f"EXPLAIN ({', '.join(opts)}) " if opts else "EXPLAIN "
    return [r[0] for r in db.rows(head + sql, conn=conn)]


def prop(plan, name):
    for line in plan:
        m = re.match(rf"^\s*{re.escape(name)}: (.*)$", line)
        if m:
            return m.group(1).strip()
    return None


def show(plan):
    return "\n".join(plan)


def pushed(plan):
    """The count went to etcd: a Foreign Scan with Count Only, no Aggregate."""
    has_count = prop(plan, "etcd Count Only") == "true"
    has_agg = any(re.match(r"^\s*(->\s+)?Aggregate\b", l) for l in plan)
    assert has_count != has_agg or not has_count, show(plan)
    return has_count and not has_agg


# key suffixes under the table prefix
SUFFIXES = (
    ["a", "a/", "a/b", "a/b/c", "a0", "a_b", "aXb", "ab", "abc", "b", "B", "bb", "c",
     "é", "e", "E", "日本", "日本/x", "😀", "z", "Z", "K", "k", "it's", "50%", "50%off"]
    + [f"n/{i:03d}" for i in range(120)]
)

# (expect, sql): expect "P" pushed, "L" local, "C" pushed only when the key
# column's collation is "C" (byte order).  {t} table, {p} prefix, {stem} the
# prefix without its "/", {icu} the linguistic collation.
QUERIES = [
    ("P", "SELECT count(*) FROM {t}"),
    ("P", "SELECT count(key) FROM {t}"),
    ("P", "SELECT count(*), count(key), count(*) FROM {t}"),
    ("P", "SELECT count(*) AS n FROM {t} WHERE key = '{p}a'"),
    ("P", "SELECT count(*) FROM {t} WHERE key = '{p}nope'"),
    ("P", "SELECT count(*) FROM {t} WHERE key = '{stem}0'"),
    ("?", "SELECT count(*) FROM {t} WHERE key = NULL"),  # PostgreSQL folds it to false
    ("P", "SELECT count(*) FROM {t} WHERE key IS NOT NULL"),
    ("P", "SELECT count(*) FROM {t} WHERE key IS NULL"),
    ("P", "SELECT count(*) FROM {t} WHERE key LIKE '{p}a%'"),
    ("P", "SELECT count(*) FROM {t} WHERE key LIKE '{p}n/%'"),
    ("P", "SELECT count(*) FROM {t} WHERE starts_with(key, '{p}日本')"),
    ("P", "SELECT count(*) FROM {t} WHERE key LIKE '{p}a%' OR key LIKE '{p}n/0%' OR key = '{p}z'"),
    ("P", "SELECT count(*) FROM {t} WHERE key IN ('{p}a', '{p}b', '{p}a', NULL, '{p}nope')"),
    ("P", "SELECT count(*) FROM {t} WHERE key = ANY(ARRAY['{p}é', '{p}😀', 'outside', '{stem}0', '{p}é'])"),
    ("P", "SELECT count(*) FROM {t} WHERE key = ANY('{{}}'::text[])"),
    ("P", "SELECT count(*) FROM {t} WHERE key = ANY(NULL::text[])"),
    ("P", "SELECT count(*) FROM {t} WHERE key = ANY(ARRAY(SELECT '{p}n/' || lpad(g::text, 3, '0') FROM generate_series(0, 300) g))"),
    ("P", "SELECT count(*) FROM {t} WHERE key LIKE '{p}a%' AND key LIKE '{p}b%'"),
    ("P", "SELECT count(*) FROM {t} WHERE key < '{p}b' COLLATE \"C\""),
    ("P", "SELECT count(*) FROM {t} WHERE key = '{p}a' COLLATE \"POSIX\""),
    ("C", "SELECT count(*) FROM {t} WHERE key > '{p}a' AND key < '{p}c'"),
    ("C", "SELECT count(*) FROM {t} WHERE key >= '{p}n/050' OR key < '{p}a0'"),
    ("C", "SELECT count(key) FROM {t} WHERE key BETWEEN '{p}K' AND '{p}k'"),
    ("L", "SELECT count(*) FROM {t} WHERE key < '{p}b' COLLATE \"{icu}\""),
    ("L", "SELECT count(value) FROM {t}"),
    ("L", "SELECT count(version) FROM {t}"),
    ("L", "SELECT count(DISTINCT key) FROM {t}"),
    ("L", "SELECT count(key ORDER BY key) FROM {t}"),
    ("L", "SELECT count(*) FILTER (WHERE key > '{p}m') FROM {t}"),
    ("L", "SELECT count(*) FROM {t} WHERE value = 'v1'"),
    ("L", "SELECT count(*) FROM {t} WHERE key LIKE '{p}a_b%'"),
    ("L", "SELECT count(*) FROM {t} WHERE key LIKE '{p}%b'"),
    ("L", "SELECT count(*) FROM {t} WHERE lower(key) = '{p}b'"),
    ("L", "SELECT count(*) FROM {t} WHERE key LIKE '{p}a%' AND now() > '2000-01-01'"),
    ("L", "SELECT count(*), sum(length(value)) FROM {t}"),
    ("L", "SELECT count(*) + 1 FROM {t}"),
    ("L", "SELECT count(*) FROM {t} HAVING count(*) > 5"),
    ("L", "SELECT left(key, 5) AS g, count(*) FROM {t} GROUP BY 1 ORDER BY 1"),
    ("?", "SELECT count(*) FROM {t} GROUP BY ()"),
    ("L", "SELECT count(*) FROM {t} x JOIN {t} y USING (key) WHERE x.key LIKE '{p}a%'"),
    ("L", "SELECT count(*) FROM (SELECT key FROM {t} WHERE key LIKE '{p}n/%' LIMIT 7) s"),
    ("L", "SELECT count(*) FROM {t} WHERE key IN (SELECT k FROM probe)"),
    # correlated subquery: a run-time key per outer row (rescans)
    ("P", "SELECT p.id, (SELECT count(*) FROM {t} WHERE key = p.k) FROM probe p ORDER BY p.id"),
    ("P", "SELECT p.id, (SELECT count(*) FROM {t} WHERE key = ANY(ARRAY[p.k, '{p}a'])) FROM probe p ORDER BY p.id"),
    ("L", "SELECT EXISTS (SELECT 1 FROM {t} WHERE key LIKE '{p}a%')"),
]

PROBE = [(1, "{p}a"), (2, "{p}nope"), (3, None), (4, "{p}日本"), (5, "{stem}0"), (6, "{p}n/007")]

VARIANTS = {
    "C": 'text COLLATE "C"',
    "ICU": f'text COLLATE "{ICU}"',
}


def subst(sql, m):
    return sql.format(**m)


def load(db, etcd, kp, key_type, **topts):
    items = [(kp + s, f"v{i % 7}") for i, s in enumerate(SUFFIXES)]
    etcd.put_many(items)
    stem = kp[:-1]
    etcd.put_many([(stem, "outside"), (stem + "0", "outside"), (stem + ".", "outside")])
    db.create_server("s", etcd.endpoint)
    cols = f"key {key_type}, value text, version bigint"
    db.create_table("f", "s", columns=cols, prefix=kp, **topts)
    db.execute(f"CREATE TABLE l ({cols})")
    db.execute("INSERT INTO l SELECT key, value, version FROM f")
    assert db.scalar("SELECT count(*) FROM l") == len(SUFFIXES)
    db.execute(f"CREATE TABLE probe (id int, k {key_type})")
    m = {"p": kp, "stem": stem, "icu": ICU}
    for pid, k in PROBE:
        db.execute("INSERT INTO probe VALUES (%s, %s)", (pid, None if k is None else subst(k, m)))
    db.execute("ANALYZE l")
    db.execute("ANALYZE probe")
    return m


def run(db, sql):
    try:
        return ("ok", db.rows(sql))
    except psycopg.Error as e:
        return ("error", f"{e.sqlstate}: {err_text(e).splitlines()[0]}")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_count_differential(db, etcd, kp, variant):
    m = load(db, etcd, kp, VARIANTS[variant])
    bad = []
    for expect, q in QUERIES:
        fsql, lsql = subst(q, {**m, "t": "f"}), subst(q, {**m, "t": "l"})
        f, loc = run(db, fsql), run(db, lsql)
        if f != loc:
            bad.append(f"{fsql}\n    foreign {f!r:.300}\n    local   {loc!r:.300}")
            continue
        plan = explain(db, fsql, verbose=True)
        want = expect == "P" or (expect == "C" and variant == "C")
        if expect != "?" and pushed(plan) != want:
            bad.append(f"{fsql}\n    expected {'pushed' if want else 'local'}:\n" + show(plan))
    assert not bad, f"{len(bad)} of {len(QUERIES)} queries:\n" + "\n".join(bad)


def test_count_prepared_generic_and_custom(db, etcd, kp):
    m = load(db, etcd, kp, VARIANTS["C"])
    stmts = {
        "anyk": ("text[]", "SELECT count(*) FROM {t} WHERE key = ANY($1)", [
            "ARRAY['{p}a','{p}b']", "ARRAY[]::text[]", "ARRAY['{p}a',NULL,'{p}a']", "NULL",
            "ARRAY['{p}日本','outside','{stem}0','{p}😀']",
            "ARRAY(SELECT '{p}n/' || lpad(g::text, 3, '0') FROM generate_series(0, 299) g)",
        ]),
        "eq": ("text", "SELECT count(key) FROM {t} WHERE key = $1", [
            "'{p}a'", "'{p}nope'", "NULL", "'{stem}0'", "'{p}it''s'",
        ]),
        "rng": ("text, text", "SELECT count(*) FROM {t} WHERE key >= $1 AND key < $2", [
            "'{p}a', '{p}b'", "'{p}b', '{p}a'", "'', '{p}n/010'", "'{p}n/', '~'", "NULL, '{p}z'",
        ]),
        # a run-time LIKE pattern is rechecked locally: not pushed
        "like": ("text", "SELECT count(*) FROM {t} WHERE key LIKE $1", [
            "'{p}a%'", "'{p}n/0_1'", "'%'", "NULL",
        ]),
    }
    bad = []
    for name, (types, body, args) in stmts.items():
        db.execute(f"PREPARE f_{name}({types}) AS " + subst(body, {**m, "t": "f"}))
        db.execute(f"PREPARE l_{name}({types}) AS " + subst(body, {**m, "t": "l"}))
        for mode in ("force_generic_plan", "force_custom_plan", "auto"):
            db.execute(f"SET plan_cache_mode = {mode}")
            for a in args * (2 if mode == "auto" else 1):
                a = subst(a, m)
                f, loc = run(db, f"EXECUTE f_{name}({a})"), run(db, f"EXECUTE l_{name}({a})")
                if f != loc:
                    bad.append(f"[{mode}] {body} ({a}): foreign {f!r:.200}, local {loc!r:.200}")
        db.execute("SET plan_cache_mode = force_generic_plan")
        plan = explain(db, f"EXECUTE f_{name}({subst(args[0], m)})")
        if pushed(plan) != (name != "like"):
            bad.append(f"{name}: generic plan\n" + show(plan))
        db.execute("RESET plan_cache_mode")
    assert not bad, "\n".join(bad)


def test_count_with_pending_writes(db, etcd, kp):
    """Writes of the transaction are merged: decided when the scan runs, also
    for a generic plan prepared before the writes."""
    m = load(db, etcd, kp, VARIANTS["C"])
    before = db.scalar("SELECT count(*) FROM f")
    counts = [
        "SELECT count(*) FROM {t}",
        "SELECT count(key) FROM {t} WHERE key LIKE '{p}n/%'",
        "SELECT count(*) FROM {t} WHERE key IN ('{p}a', '{p}new1', '{p}b', '{p}a/b')",
        "SELECT count(*) FROM {t} WHERE key LIKE '{p}z%'",
        "SELECT count(*) FROM {t} WHERE key = '{p}new2'",
    ]
    db.execute("SET plan_cache_mode = force_generic_plan")
    db.execute("PREPARE g(text[]) AS SELECT count(*) FROM f WHERE key = ANY($1)")
    db.execute("PREPARE gl(text[]) AS SELECT count(*) FROM l WHERE key = ANY($1)")
    arr = sql_literal("{" + ",".join([kp + "a", kp + "new1", kp + "new2", kp + "b", kp + "c"]) + "}")
    assert db.rows(f"EXECUTE g({arr})") == db.rows(f"EXECUTE gl({arr})") == [(3,)]
    c = db.conn
    c.execute("BEGIN")
    writes = [
        "INSERT INTO {t} (key, value) VALUES ('{p}new1', 'x'), ('{p}new2', 'y'), ('{p}n/new', 'z')",
        "DELETE FROM {t} WHERE key IN ('{p}a', '{p}a/b') OR key LIKE '{p}n/00%'",
        "UPDATE {t} SET value = 'u' WHERE key = '{p}b'",
    ]
    bad = []
    for i, w in enumerate(writes):
        c.execute(subst(w, {**m, "t": "f"}))
        c.execute(subst(w, {**m, "t": "l"}))
        for q in counts:
            f, loc = run(db, subst(q, {**m, "t": "f"})), run(db, subst(q, {**m, "t": "l"}))
            if f != loc:
                bad.append(f"after write {i}: {q}: foreign {f}, local {loc}")
        f, loc = db.rows(f"EXECUTE g({arr})"), db.rows(f"EXECUTE gl({arr})")
        if f != loc:
            bad.append(f"after write {i}: prepared: foreign {f}, local {loc}")
    # still a count_only plan; EXPLAIN ANALYZE counts the merged rows
    plan = explain(db, "SELECT count(*) FROM f", analyze=True)
    assert prop(plan, "etcd Count Only") == "true", show(plan)
    assert int(prop(plan, "etcd Keys Counted")) == db.scalar("SELECT count(*) FROM l"), show(plan)
    # a range the pending writes do not touch is still counted by etcd
    plan = explain(db, f"SELECT count(*) FROM f WHERE key LIKE '{kp}日本%'", analyze=True)
    assert prop(plan, "etcd Keys Counted") == "2", show(plan)
    c.execute("ROLLBACK")
    assert not bad, "\n".join(bad)
    assert db.scalar("SELECT count(*) FROM f") == before
    assert etcd.get(kp + "new1") is None


def test_count_at_table_revision_and_serializable(db, etcd, kp):
    rev = etcd.put_many([(f"{kp}r/{i}", "x") for i in range(10)])
    etcd.put_many([(f"{kp}r/{i}", "y") for i in range(10, 25)])
    etcd.ctl("del", "--", f"{kp}r/3")
    db.create_server("s", etcd.endpoint)
    db.create_table("old", "s", prefix=kp, revision=str(rev))
    db.create_table("now", "s", prefix=kp, consistency="serializable")
    q = "SELECT count(*) FROM {} WHERE key LIKE '{}r/1%' OR key IN ('{}r/3', '{}r/20', '{}r/4')"
    assert db.scalar("SELECT count(*) FROM old") == 10
    assert db.scalar(q.format("old", kp, kp, kp, kp)) == 1 + 2  # r/1; r/3, r/4
    assert pushed(explain(db, q.format("old", kp, kp, kp, kp)))
    assert db.scalar("SELECT count(*) FROM now") == 24
    assert db.scalar(q.format("now", kp, kp, kp, kp)) == 11 + 2  # r/1, r/10..r/19; r/20, r/4
    plan = explain(db, "SELECT count(*) FROM old")
    assert prop(plan, "etcd Revision") == str(rev), show(plan)
    assert prop(plan, "etcd Count Only") == "true", show(plan)
    plan = explain(db, "SELECT count(*) FROM now")
    assert prop(plan, "etcd Consistency") == "serializable", show(plan)
    assert pushed(plan), show(plan)


def test_count_explain_and_requests(db, etcd, kp):
    etcd.put_many([(f"{kp}k{i:04d}", "v") for i in range(600)])
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", prefix=kp)
    db.create_table("t50", "s", prefix=kp, batch_size="50")
    assert db.scalar("SELECT count(*) FROM t") == 600  # connects

    plan = explain(db, "SELECT count(*) FROM t", verbose=True)
    assert prop(plan, "Relations") == "Aggregate on (t)", show(plan)
    assert prop(plan, "etcd Count Only") == "true", show(plan)
    assert prop(plan, "etcd Range") == f"prefix '{kp}'", show(plan)
    assert prop(plan, "etcd Keys Only") == "true", show(plan)
    assert prop(plan, "Output") == "(count(*))", show(plan)
    assert re.match(r"^Foreign Scan\b", plan[0]) and "rows=1 " in plan[0], show(plan)

    # one count_only Range request per range, none for the rows
    sql = f"SELECT count(*) FROM t WHERE key LIKE '{kp}k00%' OR key LIKE '{kp}k02%' OR key LIKE '{kp}k05%'"
    r0, t0 = etcd.kv_handled("Range"), etcd.kv_handled("Txn")
    plan = explain(db, sql, analyze=True)
    assert (etcd.kv_handled("Range") - r0, etcd.kv_handled("Txn") - t0) == (3, 0)
    assert prop(plan, "etcd Pages") == "3", show(plan)
    assert prop(plan, "etcd Keys Counted") == "300", show(plan)
    assert prop(plan, "etcd Keys Fetched") is None, show(plan)
    assert re.search(r"actual rows=1(\.00)? ", plan[0]), show(plan)

    # a key list: read-only Txns of batch_size counts each
    keys = ",".join(f"{kp}k{i:04d}" for i in range(0, 1200, 2))  # 300 present, 300 absent
    for table, batch, txns in (("t", 128, 5), ("t50", 50, 12)):
        sql = f"SELECT count(*) FROM {table} WHERE key = ANY({sql_literal('{' + keys + '}')}::text[])"
        plan = explain(db, sql)
        assert prop(plan, "etcd Key Lists") == f"read-only transactions of up to {batch} keys", show(plan)
        r0, t0 = etcd.kv_handled("Range"), etcd.kv_handled("Txn")
        plan = explain(db, sql, analyze=True)
        assert (etcd.kv_handled("Range") - r0, etcd.kv_handled("Txn") - t0) == (0, txns), show(plan)
        assert prop(plan, "etcd Pages") == str(txns), show(plan)
        assert prop(plan, "etcd Keys Counted") == "300", show(plan)

    # EXISTS and LIMIT 1 stay scans (EXISTS is an InitPlan whose scan stops
    # at the first row; PostgreSQL gives it no LIMIT to push)
    plan = explain(db, f"SELECT EXISTS (SELECT 1 FROM t WHERE key LIKE '{kp}k01%')")
    assert prop(plan, "etcd Count Only") is None, show(plan)
    assert db.scalar(f"SELECT EXISTS (SELECT 1 FROM t WHERE key LIKE '{kp}k01%')") is True
    plan = explain(db, "SELECT key FROM t LIMIT 1")
    assert prop(plan, "etcd Limit") == "1", show(plan)
