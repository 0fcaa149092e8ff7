"""Key lists (`key IN (...)`, `key = ANY(ARRAY[...])`, `key = ANY($1)`) read in
read-only etcd transactions of up to `batch_size` keys, at one revision.

* a differential test against a local table: NULLs, duplicates, empty lists,
  keys outside the table's prefix, ORDER BY key (ASC / DESC, with LIMIT),
  non-key sorts, prepared statements (generic and custom plans), and the
  same inside a transaction with pending writes;
* 1000 keys cost ceil(1000 / batch_size) requests (EXPLAIN ANALYZE's Pages
  and etcd's own request counters), none of them a plain Range;
* a batch_size above etcd's --max-txn-ops, and answers above the client's
  64 MiB limit, fall back to smaller batches instead of failing;
* the `revision` and `consistency` options reach every batch.
"""

from __future__ import annotations

import math
import re

import psycopg
import pytest

import harness
from harness import err_text, private_etcd, sql_literal

ICU = harness.LINGUISTIC_COLLATION


def explain(db, sql, analyze=False):
    head = "EXPLAIN (ANALYZE, TIMING OFF, SUMMARY OFF) " if analyze else "EXPLAIN "
    return [r[0] for r in db.rows(head + sql)]


def prop(plan, name):
    for line in plan:
        m = re.match(rf"^\s*{re.escape(name)}: (.*)$", line)
        if m:
            return m.group(1).strip()
    return None


def show(plan):
    return "\n".join(plan)


def arr(keys):
    """A text[] literal (NULL elements as None)."""
    def el(k):
        if k is None:
            return "NULL"
        return '"' + k.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return sql_literal("{" + ",".join(el(k) for k in keys) + "}") + "::text[]"


SUFFIXES = (["a", "a/", "a/b", "ab", "b", "B", "é", "日本", "😀", "it's", "x y", "z", "K", "k"]
            + [f"n/{i:03d}" for i in range(200)])


def load(db, etcd, kp, key_type='text COLLATE "C"', **topts):
    items = [(kp + s, f"v{i % 11}") for i, s in enumerate(SUFFIXES)]
    etcd.put_many(items)
    etcd.put_many([(f"{kp}n/{i:03d}", "again") for i in range(0, 200, 3)])  # versions vary
    stem = kp[:-1]
    etcd.put_many([(stem, "outside"), (stem + "0", "outside"), ("zz-outside", "outside")])
    db.create_server("s", etcd.endpoint)
    cols = f"key {key_type}, value text, mod_revision bigint, version bigint"
    db.create_table("f", "s", columns=cols, prefix=kp, **topts)
    db.execute(f"CREATE TABLE l ({cols})")
    db.execute("INSERT INTO l SELECT * FROM f")
    db.execute("ANALYZE l")
    assert db.scalar("SELECT count(*) FROM l") == len(SUFFIXES)


def lists(kp):
    """Key lists: (name, keys) with NULLs, duplicates, outside keys, unsorted."""
    stem = kp[:-1]
    n = [f"{kp}n/{i:03d}" for i in range(0, 400, 2)]  # half present, 200 keys
    return [
        ("small", [kp + "b", kp + "a", kp + "nope", kp + "a/b"]),
        ("nulls", [None, kp + "a", None, kp + "日本"]),
        ("only-null", [None]),
        ("dups", [kp + "z", kp + "a", kp + "z", kp + "a", kp + "z"]),
        ("empty", []),
        ("outside", [stem, stem + "0", "zz-outside", kp + "a", kp, kp[:-1] + "/"]),
        ("mixed-case", [kp + "K", kp + "k", kp + "it's", kp + "x y", kp + "😀", kp + "é"]),
        ("many", list(reversed(n)) + n[:50]),
    ]


QUERIES = [
    # (mode, sql with {list}): "O" ordered, "S" as a multiset
    ("S", "SELECT key, value, version FROM {t} WHERE key = ANY({list})"),
    ("O", "SELECT key, value FROM {t} WHERE key = ANY({list}) ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key = ANY({list}) ORDER BY key DESC"),
    ("O", "SELECT key FROM {t} WHERE key = ANY({list}) ORDER BY key DESC LIMIT 3"),
    ("O", "SELECT key FROM {t} WHERE key = ANY({list}) ORDER BY key LIMIT 5 OFFSET 2"),
    ("O", "SELECT key FROM {t} WHERE key = ANY({list}) ORDER BY mod_revision DESC, key LIMIT 4"),
    ("O", "SELECT key FROM {t} WHERE key = ANY({list}) AND key > '{p}a' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key = ANY({list}) AND value LIKE 'v1%' ORDER BY key"),
    ("O", "SELECT count(*) FROM {t} WHERE key = ANY({list})"),
]

INLISTS = [
    "SELECT key FROM {t} WHERE key IN ('{p}b', '{p}a', NULL, '{p}b', 'zz-outside', '{stem}0') ORDER BY key",
    "SELECT key FROM {t} WHERE key IN ('{p}b', '{p}a', '{p}日本') ORDER BY key DESC",
    "SELECT key FROM {t} WHERE key = '{p}a' OR key = '{p}z' OR key = '{p}a' ORDER BY key",
    "SELECT key FROM {t} WHERE key IN ('{p}b', '{p}a') OR key LIKE '{p}n/01%' ORDER BY key",
    "SELECT key FROM {t} WHERE key NOT IN ('{p}b', '{p}a') ORDER BY key",
    "SELECT key FROM {t} WHERE key IN ('{p}b', NULL) ORDER BY key",
]


def run(db, sql, savepoint=False):
    if savepoint:
        db.conn.execute("SAVEPOINT q")
    try:
        out = ("ok", db.rows(sql))
    except psycopg.Error as e:
        out = ("error", f"{e.sqlstate}: {err_text(e).splitlines()[0]}")
    if savepoint:
        db.conn.execute("ROLLBACK TO SAVEPOINT q")
    return out


def compare(db, mode, fsql, lsql, bad, savepoint=False):
    f, loc = run(db, fsql, savepoint), run(db, lsql, savepoint)
    if f[0] == loc[0] == "ok" and mode == "S":
        f, loc = ("ok", sorted(f[1])), ("ok", sorted(loc[1]))
    if f != loc:
        bad.append(f"{fsql[:300]}\n    foreign {f!r:.300}\n    local   {loc!r:.300}")


def corpus(db, kp, bad, savepoint=False):
    m = {"p": kp, "stem": kp[:-1]}
    n = 0
    for name, keys in lists(kp):
        for mode, q in QUERIES:
            for form in ("array", "values"):
                if form == "values" and (not keys or None in keys or len(keys) > 60):
                    continue
                lst = arr(keys) if form == "array" else (
                    "ARRAY[" + ", ".join(sql_literal(k) for k in keys) + "]")
                if form == "values":
                    q2 = q.replace("key = ANY({list})", "key IN (" + ", ".join(sql_literal(k) for k in keys) + ")")
                else:
                    q2 = q
                fsql = q2.format(t="f", list=lst, **m)
                lsql = q2.format(t="l", list=lst, **m)
                compare(db, mode, fsql, lsql, bad, savepoint)
                n += 1
    for q in INLISTS:
        compare(db, "O", q.format(t="f", **m), q.format(t="l", **m), bad, savepoint)
        n += 1
    # parameter arrays, as applications send them
    for prep in ("SELECT key, value FROM {t} WHERE key = ANY($1) ORDER BY key",
                 "SELECT key FROM {t} WHERE key = ANY($1) ORDER BY key DESC LIMIT 7",
                 "SELECT count(key) FROM {t} WHERE key = ANY($1)"):
        db.execute("PREPARE pf(text[]) AS " + prep.format(t="f"))
        db.execute("PREPARE pl(text[]) AS " + prep.format(t="l"))
        for cache in ("force_generic_plan", "force_custom_plan"):
            db.execute(f"SET plan_cache_mode = {cache}")
            for name, keys in lists(kp) + [("null", None)]:
                a = "NULL" if keys is None else arr(keys)
                compare(db, "O", f"EXECUTE pf({a})", f"EXECUTE pl({a})", bad, savepoint)
                n += 1
        db.execute("RESET plan_cache_mode")
        db.execute("DEALLOCATE pf")
        db.execute("DEALLOCATE pl")
    # psycopg's own parameter arrays (extended protocol, a list argument)
    for name, keys in lists(kp):
        if not keys or None in keys:
            continue  # psycopg cannot type an empty or all-NULL list
        f = db.rows("SELECT key FROM f WHERE key = ANY(%s) ORDER BY key", (keys,))
        loc = db.rows("SELECT key FROM l WHERE key = ANY(%s) ORDER BY key", (keys,))
        if f != loc:
            bad.append(f"psycopg list {name}: foreign {f!r:.200}, local {loc!r:.200}")
        n += 1
    return n


@pytest.mark.parametrize("variant", ["C", "ICU"])
def test_key_lists_differential(db, etcd, kp, variant):
    key_type = 'text COLLATE "C"' if variant == "C" else f'text COLLATE "{ICU}"'
    load(db, etcd, kp, key_type, batch_size="16")
    bad = []
    n = corpus(db, kp, bad)
    assert not bad, f"{len(bad)} of {n} queries differ:\n" + "\n".join(bad)


def test_key_lists_with_pending_writes(db, etcd, kp):
    load(db, etcd, kp, batch_size="16")
    before = db.scalar("SELECT count(*) FROM f")
    c = db.conn
    c.execute("BEGIN")
    for w in (
        "INSERT INTO {t} (key, value) VALUES ('{p}nope', 'new'), ('{p}n/201', 'new'), ('{p}aa', 'new')",
        "DELETE FROM {t} WHERE key IN ('{p}a', '{p}n/002', '{p}z')",
        "UPDATE {t} SET value = 'upd', mod_revision = NULL, version = NULL WHERE key IN ('{p}b', '{p}n/010')",
    ):
        m = {"p": kp}
        c.execute(w.format(t="f", **m).replace(", mod_revision = NULL, version = NULL", ""))
        c.execute(w.format(t="l", **m))
    bad = []
    n = corpus(db, kp, bad, savepoint=True)
    c.execute("ROLLBACK")
    assert not bad, f"{len(bad)} of {n} queries differ (pending writes):\n" + "\n".join(bad)
    assert db.scalar("SELECT count(*) FROM f") == before


@pytest.mark.parametrize("batch", [None, "100", "7"])
def test_thousand_keys_cost_ceil_n_over_batch_requests(db, etcd, kp, batch):
    etcd.put_many([(f"{kp}k{i:05d}", f"v{i}") for i in range(1200)])
    db.create_server("s", etcd.endpoint)
    opts = {} if batch is None else {"batch_size": batch}
    db.create_table("t", "s", prefix=kp, **opts)
    size = int(batch or 128)
    keys = [f"{kp}k{i:05d}" for i in range(0, 2000, 2)]  # 1000 keys, 600 present
    assert len(keys) == 1000
    db.scalar(f"SELECT value FROM t WHERE key = '{kp}k00001'")  # connect
    want = math.ceil(1000 / size)
    for q, rows in (
        (f"SELECT key, value FROM t WHERE key = ANY({arr(keys)})", 600),
        (f"SELECT key FROM t WHERE key = ANY({arr(list(reversed(keys)))}) ORDER BY key DESC", 600),
        (f"SELECT count(*) FROM t WHERE key = ANY({arr(keys + keys[:10])})", 1),
    ):
        plan = explain(db, q)
        assert prop(plan, "etcd Key Lists") == f"read-only transactions of up to {size} keys", show(plan)
        r0, t0 = etcd.kv_handled("Range"), etcd.kv_handled("Txn")
        plan = explain(db, q, analyze=True)
        assert (etcd.kv_handled("Range") - r0, etcd.kv_handled("Txn") - t0) == (0, want), show(plan)
        assert prop(plan, "etcd Pages") == str(want), show(plan)
        assert re.search(rf"actual rows={rows}(\.00)? ", "\n".join(plan)), show(plan)
    got = db.rows(f"SELECT key FROM t WHERE key = ANY({arr(list(reversed(keys)))}) ORDER BY key DESC")
    assert [r[0] for r in got] == sorted((k for k in keys if int(k[-5:]) < 1200), reverse=True)
    # a prepared statement's parameter array: the same batches
    db.execute("PREPARE p(text[]) AS SELECT key FROM t WHERE key = ANY($1) ORDER BY key")
    db.execute("SET plan_cache_mode = force_generic_plan")
    plan = explain(db, f"EXECUTE p({arr(keys)})", analyze=True)
    assert prop(plan, "etcd Pages") == str(want), show(plan)


def test_join_written_as_a_key_list(db, etcd, kp):
    """The README's rewrite of a join with many outer rows: key = ANY(ARRAY(
    SELECT ...)) is one key list (an init plan's array), read in
    ceil(n / batch_size) Txns instead of one probe per outer row."""
    etcd.put_many([(f"{kp}k{i:04d}", f"v{i}") for i in range(300)])
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", prefix=kp)
    db.execute(f"CREATE TABLE wanted AS SELECT '{kp}k' || lpad(i::text, 4, '0') AS k "
               "FROM generate_series(0, 598, 2) i")
    q = "SELECT count(value) FROM t WHERE key = ANY(ARRAY(SELECT k FROM wanted))"
    db.scalar(f"SELECT value FROM t WHERE key = '{kp}k0000'")  # connect
    r0, t0 = etcd.kv_handled("Range"), etcd.kv_handled("Txn")
    plan = explain(db, q, analyze=True)
    assert prop(plan, "etcd Key Lists") == "read-only transactions of up to 128 keys", show(plan)
    assert (etcd.kv_handled("Range") - r0, etcd.kv_handled("Txn") - t0) == (0, 3), show(plan)  # 300 keys
    assert db.scalar(q) == 150


def test_batch_above_max_txn_ops_halves(db, etcd, kp):
    """batch_size 1000 against etcd's default --max-txn-ops 128: the
    refused transaction is sent again with half the keys (300, 150, 75)."""
    etcd.put_many([(f"{kp}k{i:04d}", "v") for i in range(300)])
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", prefix=kp, batch_size="1000")
    keys = [f"{kp}k{i:04d}" for i in range(0, 600, 2)]
    plan = explain(db, f"SELECT key FROM t WHERE key = ANY({arr(keys)}) ORDER BY key", analyze=True)
    assert prop(plan, "etcd Pages") == "4", show(plan)  # 300 keys in batches of 75
    got = db.rows(f"SELECT key FROM t WHERE key = ANY({arr(keys)}) ORDER BY key")
    assert [r[0] for r in got] == [k for k in keys if int(k[-4:]) < 300]


def test_key_lists_at_table_revision_and_serializable(db, etcd, kp):
    rev = etcd.put_many([(f"{kp}r/{i}", "old") for i in range(6)])
    etcd.put_many([(f"{kp}r/{i}", "new") for i in range(3, 9)])
    etcd.ctl("del", "--", f"{kp}r/0")
    db.create_server("s", etcd.endpoint)
    db.create_table("old", "s", prefix=kp, revision=str(rev), batch_size="2")
    db.create_table("now", "s", prefix=kp, consistency="serializable", batch_size="2")
    keys = arr([f"{kp}r/{i}" for i in range(10)])
    assert db.rows(f"SELECT key, value FROM old WHERE key = ANY({keys}) ORDER BY key") == [
        (f"{kp}r/{i}", "old") for i in range(6)]
    assert db.rows(f"SELECT key, value FROM now WHERE key = ANY({keys}) ORDER BY key") == [
        (f"{kp}r/{i}", "old" if i < 3 else "new") for i in range(1, 9)]
    plan = explain(db, f"SELECT key FROM old WHERE key = ANY({keys})", analyze=True)
    assert prop(plan, "etcd Pages") == "5" and prop(plan, "etcd Revision") == str(rev), show(plan)


@pytest.fixture(scope="module")
def etcd_large():
    with private_etcd() as srv:
        yield srv


def test_batch_answer_above_the_response_limit_halves(db, etcd_large):
    """70 values of 1 MiB: one transaction's answer would be 70 MiB, above
    the client's 64 MiB; the batch is asked for again in halves."""
    etcd = etcd_large
    kp = "large/"
    mib = 1024 * 1024
    for i in range(70):
        etcd.put_many([(f"{kp}{i:03d}", chr(ord("a") + i % 26) * mib)], batch=1)
    db.create_server("s", etcd.endpoint, request_timeout="60")
    db.create_table("t", "s", prefix=kp)
    keys = arr([f"{kp}{i:03d}" for i in range(70)] + [f"{kp}x"])
    plan = explain(db, f"SELECT key, length(value) FROM t WHERE key = ANY({keys})", analyze=True)
    assert prop(plan, "etcd Keys Fetched") == "70", show(plan)
    assert int(prop(plan, "etcd Pages")) >= 2, show(plan)
    got = db.rows(f"SELECT key, length(value), left(value, 1) FROM t WHERE key = ANY({keys}) ORDER BY key DESC")
    assert got == [(f"{kp}{i:03d}", mib, chr(ord("a") + i % 26)) for i in reversed(range(70))]
    # the count of the same list needs no values: one transaction
    plan = explain(db, f"SELECT count(*) FROM t WHERE key = ANY({keys})", analyze=True)
    assert (prop(plan, "etcd Keys Counted"), prop(plan, "etcd Pages")) == ("70", "1"), show(plan)
