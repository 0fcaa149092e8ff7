"""WHERE / ORDER BY / LIMIT pushdown of etcd_fdw.

* a differential test: a tricky key set is loaded into etcd and, row for row
  (including the etcd revisions), into a local PostgreSQL table; a corpus of
  queries must give identical results on the foreign and on the local table,
  under a "C" and under an ICU collation of the key column;
* EXPLAIN output of the pushed-down parts (etcd Range / Conditions / Sort /
  Limit / Keys Only / Pages / Keys Fetched);
* paging and the snapshot (first-page revision) of a multi-page scan;
* a point lookup in 100k keys, bounded memory for an 80 MB scan (one etcd
  version only, on a private etcd);
* invalid UTF-8 / NUL bytes, and the column checks of CREATE FOREIGN TABLE.
"""

from __future__ import annotations

import base64
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

import harness

from harness import (
    assert_session_usable,
    err_text,
    expect_error,
    private_etcd,
    sql_literal,
    vm_hwm_kb,
)

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def explain(db, sql, analyze=False, conn=None):
    """EXPLAIN (or EXPLAIN ANALYZE) sql; the plan as a list of text lines."""
    head = "EXPLAIN (ANALYZE, TIMING OFF, SUMMARY OFF) " if analyze else "EXPLAIN "
    return [r[0] for r in db.rows(head + sql, conn=conn)]


def etcd_prop(plan, name, all_=False):
    """Value(s) of the "etcd <name>: ..." line(s) of a plan (None / [] if absent)."""
    vals = []
    for line in plan:
        m = re.match(rf"^\s*etcd {re.escape(name)}: (.*)$", line)
        if m:
            vals.append(m.group(1).strip())
    if all_:
        return vals
    return vals[0] if vals else None


def has_node(plan, node):
    """Does the plan contain a node called `node` (e.g. 'Sort', 'Nested Loop')?"""
    rx = re.compile(rf"^\s*(->\s+)?{re.escape(node)}(\s+\(|\s+on\s|$)")
    return any(rx.match(line) for line in plan)


def has_sort_node(plan):
    return has_node(plan, "Sort") or has_node(plan, "Incremental Sort")


def scan_estimate(plan):
    """Estimated rows of the (first) Foreign Scan node."""
    for line in plan:
        m = re.search(r"Foreign Scan on \S+.*?\brows=(\d+)", line)
        if m:
            return int(m.group(1))
    raise AssertionError("no Foreign Scan in plan:\n" + "\n".join(plan))


def show(plan):
    return "\n".join(plan)


def etcd_snapshot(etcd, prefix):
    """All kvs under prefix as dicts (key/value decoded as UTF-8 text)."""
    out = json.loads(etcd.ctl("get", "--prefix", "-w", "json", "--", prefix, timeout=60))
    rows = []
    for kv in out.get("kvs") or []:
        rows.append(
            {
                "key": base64.b64decode(kv["key"]).decode(),
                "value": base64.b64decode(kv.get("value", "")).decode(),
                "create_revision": int(kv.get("create_revision", 0)),
                "mod_revision": int(kv.get("mod_revision", 0)),
                "version": int(kv.get("version", 0)),
                "lease": int(kv.get("lease", 0)),
            }
        )
    return rows


def put_many_parallel(etcd, items, batch=100, workers=4):
    """put_many in `workers` threads (each over its own slice of items)."""
    items = list(items.items()) if isinstance(items, dict) else list(items)
    step = (len(items) + workers - 1) // workers
    chunks = [items[i : i + step] for i in range(0, len(items), step)]
    with ThreadPoolExecutor(len(chunks)) as ex:
        list(ex.map(lambda ch: etcd.put_many(ch, batch=batch), chunks))


COLS = "key, value, create_revision, mod_revision, version, lease"


def foreign_columns(key_type, value_type="text"):
    return (
        f"key {key_type}, value {value_type}, create_revision bigint, "
        "mod_revision bigint, version bigint, lease bigint"
    )


# --------------------------------------------------------------------------
# 1. differential test: foreign table vs. an identical local table
# --------------------------------------------------------------------------

# key suffixes (all below the per-test prefix)
SPECIAL_KEYS = [
    "", "a", "a/", "a/b", "a/b/", "a/b/c", "a/b/c/d", "a//b", "a.", "a.b", "a0",
    "a-", "a-b", "a_b", "a_bc", "axb", "aXb", "a%b", "a%", "a\\b", "a\\_b", "a\\",
    "a\\%x", "ab", "abc", "ab/", "ab/c", "abd", "aB", "Ab", "AB", "b", "B", "bb",
    "Key", "key", "KEY", "kEy", "key ", " key", "k e y", "50", "50%", "50%off",
    "50x", "50%%", "50_", "5", "500", "it's", "it''s", "'", "''", '"q"', "a b",
    "a  b", "tab\tkey", "nl\nkey", "é", "e", "E", "É", "éa", "eé", "ez", "f", "ÿ",
    "ÿa", "ÿÿ", "Ā", "日本", "日本語", "日", "本", "日本/x", "😀", "😀x", "😀/",
    "\U0010ffff", "\U0010ffffz", "\x7f", "\ufffd", "~", "z", "Z", "zz", "{", "[",
    "]", "*", "?", "^", "$", "(", ")", "|", "+", ".", "..", "/", "//", "-", "_",
    "%", "\\", "0", "00", "1", "10", "2", "9", "09", "\x01", "a\x01", "a\x01b",
]
STEMS = ["a", "a/", "a/b/", "ab", "é", "日本", "K", "k", "x y", "50%", "a_b", "ÿ"]
TAILS = ["", "0", "1", "/", "/x", ".", "_", "%", "Z", "z", "é", "😀", " ", "\\"]
VALUE_POOL = [
    "apple", "Apple", "APPLE", "banana", "Banana", "", "é", "e", "E", "日本", "10",
    "9", "x", "x y", "zeta", "Zeta", "😀", "a%b", '{"j": 1}', "ÿ", "ａ",
]


def tricky_suffixes():
    out = list(SPECIAL_KEYS)
    out += [s + t for s in STEMS for t in TAILS]
    out += [f"n/{i}" for i in range(150)]
    out += [f"N{i:03d}" for i in range(0, 300, 7)]
    seen, uniq = set(), []
    for s in out:
        if s not in seen:
            seen.add(s)
            uniq.append(s)
    return uniq


def load_tricky(etcd, kp):
    """Load the tricky key set under kp (with re-puts, so versions vary).

    Returns the etcd snapshot of the prefix (list of dicts)."""
    suffixes = tricky_suffixes()
    assert len(suffixes) >= 300
    items = []
    for i, s in enumerate(suffixes):
        v = VALUE_POOL[(i * 7) % len(VALUE_POOL)] if i % 3 else f"v{i:04d}-{s}"
        items.append((kp + s, v))
    etcd.put_many(items, batch=100)
    # second and third versions of some keys, in small transactions so that
    # mod_revision values vary
    again = [(k, VALUE_POOL[(i * 5) % len(VALUE_POOL)]) for i, (k, _) in enumerate(items) if i % 5 == 1]
    etcd.put_many(again, batch=9)
    third = [(k, f"third-{i}") for i, (k, _) in enumerate(items) if i % 13 == 2]
    etcd.put_many(third, batch=4)
    # neighbours just outside the table prefix: must never show up
    stem = kp[:-1]
    etcd.put_many([(stem, "outside"), (stem + "0", "outside"), (stem + ".", "outside"),
                   (stem + "-", "outside")])
    snap = etcd_snapshot(etcd, kp)
    assert len(snap) == len(suffixes)
    return snap


def sql_text_array(values):
    return "ARRAY[" + ", ".join("NULL" if v is None else sql_literal(v) for v in values) + "]::text[]"


# The key column's linguistic collation (not byte order): ICU's en-x-icu, or
# glibc's en_US where the server is built without ICU (harness.use_pg).
ICU = harness.LINGUISTIC_COLLATION

# (mode, sql): mode "O" = ordered comparison, "S" = multiset comparison.
# Placeholders: {t} the table, {p} the key prefix, {stem} the prefix without
# its trailing "/", {probe} a small local table probe(id int, k text).
CORPUS = [
    # ---- whole table -----------------------------------------------------
    ("O", "SELECT key, value FROM {t} ORDER BY key"),
    ("S", "SELECT " + COLS + " FROM {t}"),
    ("S", "SELECT key FROM {t}"),
    ("S", "SELECT value FROM {t}"),
    ("O", "SELECT count(*) FROM {t}"),
    # ---- equality --------------------------------------------------------
    ("S", "SELECT " + COLS + " FROM {t} WHERE key = '{p}a'"),
    ("S", "SELECT key, value FROM {t} WHERE key = '{p}'"),
    ("S", "SELECT key, value FROM {t} WHERE key = '{p}A'"),
    ("S", "SELECT key, value FROM {t} WHERE key = '{p}it''s'"),
    ("S", "SELECT key, value FROM {t} WHERE key = '{p}it''''s'"),
    ("S", r"SELECT key, value FROM {t} WHERE key = '{p}a\b'"),
    ("S", "SELECT key, value FROM {t} WHERE key = '{p}日本'"),
    ("S", "SELECT key, value FROM {t} WHERE key = '{p}😀'"),
    ("S", "SELECT key, value FROM {t} WHERE key = '{p}\U0010ffff'"),
    ("S", "SELECT key, value FROM {t} WHERE key = '{p}key '"),
    ("S", "SELECT key, value FROM {t} WHERE key = '{p}nope'"),
    ("S", "SELECT key, value FROM {t} WHERE key = 'zzz-outside'"),
    ("S", "SELECT key, value FROM {t} WHERE key = '{stem}0'"),
    ("S", "SELECT key, value FROM {t} WHERE key = '{stem}'"),
    ("S", "SELECT key, value FROM {t} WHERE key = '{p}a'::varchar"),
    ("S", "SELECT key, value FROM {t} WHERE key = NULL"),
    ("S", "SELECT key, value FROM {t} WHERE '{p}ab' = key"),
    ("S", "SELECT key FROM {t} WHERE key <> '{p}a'"),
    ("S", "SELECT key FROM {t} WHERE key = '{p}' || 'a/b'"),
    # ---- ranges ----------------------------------------------------------
    ("O", "SELECT key FROM {t} WHERE key < '{p}a' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key <= '{p}a/' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key > '{p}a/' AND key < '{p}a0' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key >= '{p}a/' AND key < '{p}a0' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key > '{p}a.' AND key <= '{p}a/b' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key >= '{p}é' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key > '{p}日' AND key < '{p}日本語' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key > '{p}😀' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key >= '{p}ÿ' AND key < '{p}ĀA' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key BETWEEN '{p}a' AND '{p}b' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key BETWEEN '{p}b' AND '{p}a' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key BETWEEN SYMMETRIC '{p}b' AND '{p}a' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key NOT BETWEEN '{p}a' AND '{p}z' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key < '{p}' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key <= '{p}' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key >= '{stem}' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key > '{p}zz' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key < 't' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key > 'u' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key >= '{p}' AND key <= '{p}' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key > '{p}a' AND key < '{p}a' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE '{p}b' > key ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key > '{p}K' AND key < '{p}k' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key < '{p}b' COLLATE \"C\" ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key < '{p}b' COLLATE \"" + ICU + "\" ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key >= '{p}a' COLLATE \"" + ICU + "\" AND key < '{p}b' ORDER BY key COLLATE \"C\""),
    ("O", "SELECT key FROM {t} ORDER BY key COLLATE \"" + ICU + "\""),
    ("O", "SELECT key FROM {t} ORDER BY key COLLATE \"C\""),
    ("O", "SELECT key FROM {t} ORDER BY key COLLATE \"C\" DESC LIMIT 7"),
    ("O", "SELECT key FROM {t} ORDER BY key COLLATE \"" + ICU + "\" DESC LIMIT 7"),
    # ---- LIKE ------------------------------------------------------------
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}a%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}a/%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}a/b%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}A%' ORDER BY key"),
    ("O", r"SELECT key FROM {t} WHERE key LIKE '{p}a\_b%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}a_b%' ORDER BY key"),
    ("O", r"SELECT key FROM {t} WHERE key LIKE '{p}50\%%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}50%' ORDER BY key"),
    ("O", r"SELECT key FROM {t} WHERE key LIKE '{p}50\%' ORDER BY key"),
    ("O", r"SELECT key FROM {t} WHERE key LIKE '{p}a\\%' ORDER BY key"),
    ("O", r"SELECT key FROM {t} WHERE key LIKE '{p}a\%' ESCAPE '' ORDER BY key"),
    ("O", r"SELECT key FROM {t} WHERE key LIKE '{p}a\_%' ESCAPE '' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}a#_b%' ESCAPE '#' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}a!%%' ESCAPE '!' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}aa%' ESCAPE 'a' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}aé_b%' ESCAPE 'é' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}a' || '%' ORDER BY key"),
    ("O", r"SELECT key FROM {t} WHERE key NOT LIKE '{p}a\_%' ORDER BY key"),
    ("O", r"SELECT key FROM {t} WHERE key !~~ '{p}%' ORDER BY key"),
    ("O", r"SELECT key FROM {t} WHERE key ~~* '{p}50\%%' ORDER BY key"),
    ("O", r"SELECT key FROM {t} WHERE key LIKE '{p}a\' ORDER BY key"),
    ("O", r"SELECT key FROM {t} WHERE key LIKE '{p}a/%' ESCAPE '/' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}é%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}ÿ%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}日本%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}😀%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}\U0010ffff%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '%z' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}ab' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}%%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}%a' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE 'zz%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key NOT LIKE '{p}a%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}a%' AND key < '{p}a/b' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}a%' AND key LIKE '{p}ab%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}a%' AND key LIKE '{p}b%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key ILIKE '{p}KEY%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key ILIKE '{p}é%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key ~~ '{p}k%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key ~ '^{p}a/' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key SIMILAR TO '{p}(a|b)%' ORDER BY key"),
    # ---- starts_with / ^@ --------------------------------------------------
    ("O", "SELECT key FROM {t} WHERE starts_with(key, '{p}a/') ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key ^@ '{p}日' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE starts_with(key, '{p}') ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE starts_with(key, 'zz') ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE starts_with(key, '{p}a%') ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE starts_with(key, '{p}ÿ') ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE starts_with(key, '{stem}') ORDER BY key"),
    # ---- IN / ANY / ALL ---------------------------------------------------
    ("O", "SELECT key FROM {t} WHERE key IN ('{p}a', '{p}b', '{p}nope', '{p}a') ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key IN ('{p}a', NULL) ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key NOT IN ('{p}a', NULL) ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key NOT IN ('{p}a', '{p}b') ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key = ANY(ARRAY['{p}ab', '{p}日本', 'outside']) ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key = ANY(ARRAY['{p}ab', NULL]) ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key = ANY('{}'::text[]) ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key = ANY(NULL::text[]) ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key <> ALL(ARRAY['{p}a']) ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key >= ALL(ARRAY['{p}a', '{p}a/']) AND key < '{p}b' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key < ANY(ARRAY['{p}a', '{p}5']) ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key = ANY(ARRAY['{p}a', '{p}b']) AND key > '{p}a' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key IN ('{p}a', '{p}b') OR key LIKE '{p}日%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key IN ('{p}a', '{p}ab') AND key LIKE '{p}ab%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key IN ('{p}a/b', '{p}😀', '{p}\U0010ffff', '{p}K') ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key IN ('{p}z', '{p}a', '{p}m', '{p}B') ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key = ANY(ARRAY['{p}😀', '{p}b', '{p}a/b', '{p}a']) ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key IN ('{p}z', '{p}a', '{p}m', '{p}ab') ORDER BY key DESC LIMIT 2"),
    ("O", "SELECT key FROM {t} WHERE key = '{p}key '::char(30) ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key = '{p}a' COLLATE \"POSIX\" ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key < '{p}' || chr(32) ORDER BY key"),
    # ---- overlapping / unsorted OR branches --------------------------------
    ("O", "SELECT key FROM {t} WHERE key = '{p}z' OR key = '{p}a' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}a/%' OR key LIKE '{p}a%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key = '{p}a/b' OR key LIKE '{p}a%' OR key = '{p}a/b' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE (key > '{p}a' AND key < '{p}c') OR (key > '{p}b' AND key < '{p}d') ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}é%' OR key < '{p}1' OR key LIKE '{p}a/%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}é%' OR key < '{p}1' OR key LIKE '{p}a/%' ORDER BY key DESC LIMIT 5"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}a%' OR key LIKE '{p}a/%' ORDER BY key DESC LIMIT 3"),
    ("O", "SELECT count(*) FROM {t} WHERE key LIKE '{p}a%' OR key LIKE '{p}a/b%' OR key >= '{p}a/' AND key < '{p}a0'"),
    ("O", "SELECT count(*) FROM (SELECT key FROM {t} WHERE key LIKE '{p}a%' OR key LIKE '{p}a/%' LIMIT 8) s"),
    # ---- NULL tests --------------------------------------------------------
    ("O", "SELECT key FROM {t} WHERE key IS NULL ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key IS NOT NULL ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key IS NULL OR key = '{p}a' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key IS NOT NULL AND key LIKE '{p}z%' ORDER BY key"),
    # ---- OR / AND / NOT combinations ------------------------------------------
    ("O", "SELECT key FROM {t} WHERE key = '{p}a' OR key = '{p}B' OR key = '{p}zz' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE (key >= '{p}a' AND key < '{p}a/') OR key LIKE '{p}é%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key < '{p}5' OR key > '{p}z' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key = '{p}a' OR value = 'apple' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}a%' AND value LIKE 'v%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE NOT (key < '{p}m') ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE NOT (key LIKE '{p}a%' OR key LIKE '{p}n/%') ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE (key = '{p}a' OR key = '{p}b') AND (key = '{p}b' OR key = '{p}c') ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key > '{p}a' AND (key < '{p}b' OR key IS NULL) ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key = '{p}a' AND key = '{p}b' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key < '{p}a' AND key > '{p}b' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key = '{p}a' AND NOT (key = '{p}a') ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key = '{p}a' AND key IS NULL ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}a%' AND key NOT LIKE '{p}a/%' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE (key LIKE '{p}a/%' OR key LIKE '{p}a%') AND key <= '{p}a/b' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key >= '{p}n/1' AND key < '{p}n/2' AND key LIKE '{p}n/1_' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE coalesce(key, '') = '{p}a' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE lower(key) = '{p}key' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key || 'x' = '{p}ax' ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key = value ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE key = '{p}a' AND version > 1 ORDER BY key"),
    ("O", "SELECT key FROM {t} WHERE version >= 2 AND key LIKE '{p}a%' ORDER BY key"),
    # ---- LIMIT / OFFSET ----------------------------------------------------
    ("O", "SELECT key FROM {t} ORDER BY key LIMIT 10"),
    ("O", "SELECT key, value FROM {t} ORDER BY key LIMIT 10 OFFSET 5"),
    ("O", "SELECT key FROM {t} ORDER BY key DESC LIMIT 7"),
    ("O", "SELECT key, value, version FROM {t} ORDER BY key DESC LIMIT 7 OFFSET 3"),
    ("O", "SELECT key FROM {t} ORDER BY key DESC NULLS LAST LIMIT 4"),
    ("O", "SELECT key FROM {t} ORDER BY key ASC NULLS FIRST LIMIT 4"),
    ("O", "SELECT key FROM {t} ORDER BY key DESC NULLS FIRST LIMIT 4"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}a%' ORDER BY key DESC LIMIT 3"),
    ("O", "SELECT key FROM {t} WHERE key < '{p}b' ORDER BY key DESC LIMIT 4"),
    ("O", "SELECT key FROM {t} WHERE key > '{p}b' ORDER BY key LIMIT 4 OFFSET 2"),
    ("O", "SELECT key FROM {t} WHERE key IN ('{p}a', '{p}b', '{p}ab', '{p}z') ORDER BY key DESC LIMIT 2"),
    ("O", "SELECT key FROM {t} WHERE key = '{p}a' OR key LIKE '{p}é%' ORDER BY key DESC LIMIT 3"),
    ("O", "SELECT key FROM {t} WHERE value = 'apple' ORDER BY key DESC LIMIT 3"),
    ("O", "SELECT key FROM {t} WHERE key ILIKE '{p}a%' ORDER BY key DESC LIMIT 2"),
    ("O", "SELECT key FROM {t} WHERE key LIKE '{p}a_b%' ORDER BY key DESC LIMIT 2"),
    ("O", "SELECT key FROM {t} WHERE key > '{p}K' COLLATE \"" + ICU + "\" ORDER BY key DESC LIMIT 3"),
    ("O", "SELECT key FROM {t} ORDER BY key DESC LIMIT 0"),
    ("O", "SELECT key FROM {t} ORDER BY key DESC LIMIT ALL"),
    ("O", "SELECT key FROM {t} ORDER BY key OFFSET 100000"),
    ("O", "SELECT key FROM {t} ORDER BY key DESC OFFSET 5 LIMIT 3"),
    ("O", "SELECT key FROM {t} ORDER BY key DESC OFFSET 2"),
    ("O", "SELECT key FROM {t} ORDER BY key DESC LIMIT (SELECT 4)"),
    ("O", "SELECT key FROM {t} ORDER BY key DESC FETCH FIRST 3 ROWS ONLY"),
    ("O", "SELECT key FROM {t} ORDER BY key DESC LIMIT 1000000"),
    ("O", "SELECT key FROM {t} ORDER BY key DESC LIMIT NULL"),
    ("O", "SELECT key FROM {t} ORDER BY key DESC LIMIT 9223372036854775807 OFFSET 3"),
    ("O", "SELECT key FROM {t} ORDER BY key LIMIT 2 OFFSET 9223372036854775807"),
    ("O", "SELECT key FROM {t} ORDER BY key DESC LIMIT 3 OFFSET (SELECT 2)"),
    ("O", "SELECT key FROM {t} WHERE mod_revision > (SELECT max(mod_revision) - 5 FROM {t}) ORDER BY key"),
    ("O", "SELECT count(*) FROM (SELECT key FROM {t} LIMIT 5) s"),
    ("O", "SELECT count(*) FROM (SELECT key FROM {t} WHERE key LIKE '{p}a%' LIMIT 3 OFFSET 2) s"),
    ("O", "SELECT count(*) FROM (SELECT key FROM {t} LIMIT 3 OFFSET 2) s WHERE key LIKE '{p}%'"),
    ("O", "SELECT count(*) FROM (SELECT key FROM {t} WHERE value = 'apple' LIMIT 2) s WHERE key LIKE '{p}%'"),
    # ---- ORDER BY other columns (with LIMIT: may be pushed to etcd) -----------
    ("O", "SELECT value FROM {t} ORDER BY value LIMIT 15"),
    ("O", "SELECT value FROM {t} ORDER BY value DESC LIMIT 15 OFFSET 4"),
    ("O", "SELECT key, value FROM {t} ORDER BY value, key LIMIT 10"),
    ("O", "SELECT key, value FROM {t} ORDER BY value DESC, key DESC LIMIT 10"),
    ("O", "SELECT version FROM {t} ORDER BY version DESC LIMIT 10"),
] + [
    # a pushed non-key sort (or key DESC) with LIMIT/OFFSET over several key
    # ranges: etcd sorts each range on its own, so the answers must be
    # merged, never concatenated.  Only the sort column is selected: rows
    # that tie on it may come in any order, their values may not.
    ("O", f"SELECT {col} FROM {{t}} WHERE {where} ORDER BY {col} {d} LIMIT {lim}")
    for col in ("mod_revision", "create_revision", "version", "value", "key")
    for d in ("ASC", "DESC")
    for where in (
        "key IN ('{p}a', '{p}z', '{p}日本', '{p}n/5', '{p}b', '{p}N007', '{p}a/b/c')",
        "key LIKE '{p}a/%' OR key LIKE '{p}n/%' OR key LIKE '{p}日本%'",
        "key = ANY(ARRAY['{p}a', '{p}é', '{p}N007', '{p}ab', '{p}n/149', '{p}ÿ'])",
        "key < '{p}a/' OR key > '{p}n/'",
    )
    for lim in ("3", "2 OFFSET 2", "1")
] + [
    ("O", "SELECT version FROM {t} ORDER BY version LIMIT 10"),
    ("O", "SELECT mod_revision FROM {t} ORDER BY mod_revision DESC LIMIT 10"),
    ("O", "SELECT mod_revision FROM {t} ORDER BY mod_revision LIMIT 10 OFFSET 3"),
    ("O", "SELECT create_revision FROM {t} ORDER BY create_revision DESC LIMIT 20"),
    ("O", "SELECT create_revision FROM {t} ORDER BY create_revision LIMIT 5"),
    ("O", "SELECT version FROM {t} WHERE key LIKE '{p}a%' ORDER BY version DESC LIMIT 5"),
    ("O", "SELECT version FROM {t} WHERE key LIKE '{p}a_%' ORDER BY version DESC LIMIT 5"),
    ("O", "SELECT mod_revision FROM {t} WHERE value = 'apple' ORDER BY mod_revision DESC LIMIT 3"),
    ("O", "SELECT value FROM {t} WHERE key >= '{p}a' AND key < '{p}b' ORDER BY value DESC LIMIT 5"),
    ("O", "SELECT key, version FROM {t} ORDER BY version DESC, key LIMIT 10"),
    ("O", "SELECT key FROM {t} ORDER BY mod_revision DESC, key DESC LIMIT 10"),
    # (FETCH FIRST ... WITH TIES: see test_with_ties_not_cut_by_etcd_limit)
    ("O", "SELECT value FROM {t} ORDER BY value"),
    ("O", "SELECT key, value FROM {t} ORDER BY value COLLATE \"C\", key COLLATE \"C\""),
    ("O", "SELECT value FROM {t} ORDER BY value COLLATE \"C\" DESC LIMIT 8"),
    ("O", "SELECT value FROM {t} ORDER BY value COLLATE \"" + ICU + "\" LIMIT 8"),
    ("O", "SELECT key FROM {t} ORDER BY lower(key), key LIMIT 8"),
    # ---- aggregates / grouping -------------------------------------------------
    ("O", "SELECT count(*), count(value), min(key), max(key) FROM {t}"),
    ("O", "SELECT min(key), max(key) FROM {t} WHERE key LIKE '{p}a%'"),
    ("O", "SELECT min(key), max(key), count(*) FROM {t} WHERE key > '{p}a' AND key < '{p}b'"),
    ("O", "SELECT string_agg(key, '|' ORDER BY key) FROM {t}"),
    ("O", "SELECT string_agg(key, '|' ORDER BY key DESC) FROM {t} WHERE key < '{p}b'"),
    ("O", "SELECT sum(version), max(mod_revision), min(create_revision), sum(lease) FROM {t}"),
    ("O", "SELECT count(DISTINCT value) FROM {t}"),
    ("S", "SELECT value, count(*) FROM {t} GROUP BY value"),
    ("S", "SELECT version, count(*) FROM {t} GROUP BY version"),
    ("O", "SELECT key FROM {t} WHERE key = (SELECT max(key) FROM {t}) ORDER BY key"),
    ("O", "SELECT count(*) FROM {t} WHERE key > (SELECT min(key) FROM {t} WHERE key LIKE '{p}é%')"),
    ("O", "SELECT DISTINCT value FROM {t} WHERE key LIKE '{p}n/%' ORDER BY value"),
    # ---- joins / subqueries with a small local table ----------------------------
    ("S", "SELECT f.key, f.value, p.id FROM {t} f JOIN {probe} p ON f.key = p.k"),
    ("S", "SELECT p.id, f.value FROM {probe} p LEFT JOIN {t} f ON f.key = p.k"),
    ("S", "SELECT p.id, f.key FROM {probe} p JOIN {t} f ON f.key = p.k AND f.key LIKE '{p}a%'"),
    ("S", "SELECT p.id, s.value FROM {probe} p, LATERAL (SELECT value FROM {t} f WHERE f.key = p.k OFFSET 0) s"),
    ("S", "SELECT p.id, s.key FROM {probe} p, LATERAL (SELECT key FROM {t} f WHERE f.key > p.k ORDER BY key LIMIT 2) s"),
    ("S", "SELECT p.id, s.key FROM {probe} p, LATERAL (SELECT key FROM {t} f WHERE f.key < p.k ORDER BY key DESC LIMIT 2) s"),
    ("S", "SELECT key FROM {t} WHERE key IN (SELECT k FROM {probe})"),
    ("S", "SELECT key FROM {t} f WHERE EXISTS (SELECT 1 FROM {probe} p WHERE p.k = f.key)"),
    ("S", "SELECT key FROM {t} f WHERE NOT EXISTS (SELECT 1 FROM {probe} p WHERE p.k = f.key)"),
    ("S", "SELECT p.id, (SELECT f.value FROM {t} f WHERE f.key = p.k) FROM {probe} p"),
    ("S", "SELECT p.id, (SELECT count(*) FROM {t} f WHERE f.key >= p.k) FROM {probe} p"),
    ("S", "SELECT p.id, (SELECT count(*) FROM {t} f WHERE f.key < p.k) FROM {probe} p"),
    ("S", "SELECT p.id, (SELECT count(*) FROM {t} f WHERE starts_with(f.key, p.k)) FROM {probe} p"),
    ("S", "SELECT p.id, (SELECT count(*) FROM {t} f WHERE f.key ^@ p.k AND f.key <> p.k) FROM {probe} p"),
    ("S", "SELECT p.id, (SELECT count(*) FROM {t} f WHERE f.key LIKE p.k || '%') FROM {probe} p"),
    ("S", "SELECT p.id, (SELECT max(f.key) FROM {t} f WHERE f.key < p.k) FROM {probe} p"),
    ("S", "SELECT p.id, (SELECT min(f.key) FROM {t} f WHERE f.key = ANY(ARRAY[p.k, p.k || '/'])) FROM {probe} p"),
    ("S", "SELECT p.id, (SELECT count(*) FROM {t} f WHERE f.key IN (p.k, p.k || 'b', NULL)) FROM {probe} p"),
    ("S", "SELECT a.key, b.key FROM {t} a JOIN {t} b ON b.key = a.key || '/'"),
    ("S", "SELECT a.key FROM {t} a WHERE a.key LIKE '{p}n/%' AND EXISTS (SELECT 1 FROM {t} b WHERE b.key = a.key || '0')"),
]

# the joins with the probe table are also run with nested loops forced
# (parameterized foreign scans); self joins of the foreign table (whose
# parameterized inner side would be a full scan per outer row) only without
# enable_material = off, to keep the test fast
JOIN_SETTINGS = [
    (),
    ("SET enable_hashjoin = off", "SET enable_mergejoin = off"),
    ("SET enable_hashjoin = off", "SET enable_mergejoin = off", "SET enable_material = off"),
]


def _settings_for(sql):
    if not re.search(r" JOIN | LATERAL | EXISTS | IN \(SELECT", sql):
        return [()]  # (subplans do not depend on the join settings)
    if "{probe}" in sql:
        return JOIN_SETTINGS
    return JOIN_SETTINGS[:2]

# probe rows: (id, suffix-or-absolute key). None = NULL key
PROBE = [
    (1, "{p}a"), (2, "{p}a/"), (3, "{p}A"), (4, "{p}日本"), (5, "{p}😀"), (6, "{p}50%"),
    (7, "{p}a_b"), (8, "{p}nope"), (9, "outside"), (10, None), (11, "{p}a"), (12, "{p}"),
    (13, "{p}ÿ"), (14, "{p}n/1"), (15, "{p}a\\"), (16, "{stem}0"), (17, "{p}K"),
    (18, "{p}it's"),
]

VARIANTS = {
    # name: (key type, value type, extra table options)
    "C": ('text COLLATE "C"', 'text COLLATE "C"', {}),
    "C-varchar-paged": ('varchar COLLATE "C"', "varchar", {"fetch_size": "23"}),
    "ICU": ('text COLLATE "' + ICU + '"', 'text COLLATE "' + ICU + '"', {"fetch_size": "97"}),
    # bytea compares bytes like etcd; text-only operators fail on both sides
    "bytea": ("bytea", "bytea", {"fetch_size": "50"}),
}


def _subst(sql, m):
    for k, v in m.items():
        sql = sql.replace("{" + k + "}", v)
    return sql


def _sort_key(row):
    return tuple((x is None, "" if x is None else str(type(x)), x if x is not None else 0) for x in row)


def _run(db, sql, savepoint=False):
    """("ok", rows) or ("error", "SQLSTATE: message"); inside a transaction
    (savepoint=True) the statement runs in a savepoint so that an error
    does not abort it."""
    if savepoint:
        db.conn.execute("SAVEPOINT r")
    try:
        out = ("ok", db.rows(sql))
    except psycopg.Error as e:
        out = ("error", f"{e.sqlstate}: {err_text(e).splitlines()[0]}")
    if savepoint:
        db.conn.execute("ROLLBACK TO SAVEPOINT r")
    return out


def _compare(db, mode, fsql, lsql, mismatches, label="", savepoint=False):
    f = _run(db, fsql, savepoint)
    loc = _run(db, lsql, savepoint)
    if loc[0] != "ok":
        # an error on the local table: the foreign table must raise the same
        if f[0] != "error" or f[1].split(":")[0] != loc[1].split(":")[0]:
            mismatches.append(f"{label}{fsql}\n    local ERROR {loc[1]}, foreign {f[0]} {f[1]!r:.200}")
        return
    if f[0] != "ok":
        mismatches.append(f"{label}{fsql}\n    foreign ERROR {f[1]}")
        return
    a, b = f[1], loc[1]
    if mode == "S":
        a, b = sorted(a, key=_sort_key), sorted(b, key=_sort_key)
    if a != b:
        extra = [r for r in a if r not in b][:5]
        missing = [r for r in b if r not in a][:5]
        mismatches.append(
            f"{label}{fsql}\n    foreign {len(a)} rows, local {len(b)} rows; "
            f"foreign-only {extra!r}; missing {missing!r}"
            + (f"\n    foreign first rows {a[:6]!r}\n    local first rows   {b[:6]!r}" if not extra and not missing else "")
        )


PREPARED = [
    # (name, arg types, body, list of argument lists (SQL literals))
    ("eq", "text", "SELECT " + COLS + " FROM {t} WHERE key = $1", [
        ["{p}a"], ["{p}nope"], ["{p}日本"], ["{p}it's"], ["NULL"], ["{p}"], ["outside"],
        ["{p}😀"], ["{p}a/b/c"], ["{stem}0"],
    ]),
    ("rng", "text, text", "SELECT key FROM {t} WHERE key > $1 AND key <= $2 ORDER BY key", [
        ["{p}a", "{p}b"], ["{p}b", "{p}a"], ["{p}a/", "{p}a0"], ["", "{p}1"], ["{p}y", "{p}~"],
        ["{p}é", "{p}日本"], ["NULL", "{p}b"], ["{p}K", "{p}k"], ["a", "zzzz"],
    ]),
    ("like", "text", "SELECT key FROM {t} WHERE key LIKE $1 ORDER BY key", [
        ["{p}a%"], ["{p}50\\%%"], ["%x"], ["{p}a_b"], ["{p}a\\_b%"], ["{p}"], ["{p}日%"],
        ["NULL"], ["{p}ÿ%"],
    ]),
    ("sw", "text", "SELECT key FROM {t} WHERE starts_with(key, $1) ORDER BY key", [
        ["{p}a/"], ["{p}"], ["{p}a%"], ["zz"], ["{stem}"], ["{p}😀"], ["{p}n/1"], ["NULL"],
    ]),
    ("anyk", "text[]", "SELECT key FROM {t} WHERE key = ANY($1) ORDER BY key", [
        ["ARRAY['{p}a','{p}b']"], ["ARRAY[]"], ["ARRAY['{p}a',NULL]"], ["NULL"],
        ["ARRAY['{p}日本','outside','{p}😀']"], ["ARRAY['{p}a','{p}a']"], ["ARRAY['{p}K']"],
        ["ARRAY['{p}x y','{p}a\\']"], ["ARRAY['{p}b','{p}a','{p}a/b']"],
    ]),
    ("desc", "int", "SELECT key FROM {t} ORDER BY key DESC LIMIT $1", [
        ["3"], ["0"], ["1"], ["10"], ["NULL"], ["1000"], ["2"], ["5"],
    ]),
    ("lo", "int, int", "SELECT key, version FROM {t} ORDER BY key DESC LIMIT $1 OFFSET $2", [
        ["3", "0"], ["2", "5"], ["NULL", "3"], ["4", "NULL"], ["0", "0"], ["1", "1000"],
        ["10", "2"], ["5", "5"],
    ]),
    ("mix", "text, int", "SELECT key, value FROM {t} WHERE key >= $1 ORDER BY key LIMIT $2", [
        ["{p}a", "3"], ["{p}z", "5"], ["{p}", "2"], ["{p}日", "4"], ["zzzz", "1"],
        ["{p}a/b", "0"], ["{p}n/", "7"], ["{p}0", "1"],
    ]),
]


def _prepared_arg(raw, m, kt):
    """An EXECUTE argument: NULL and numbers as they are, ARRAY[...] (elements
    already quoted) cast to the key type's array, anything else as a quoted
    literal."""
    v = _subst(raw, m)
    if raw.startswith("ARRAY["):
        return v.split("::")[0] + f"::{kt}[]"
    if raw == "NULL" or raw.isdigit():
        return v
    return sql_literal(v)


def _differential_tables(db, etcd, kp, variant):
    """Foreign table f and local table l holding the tricky key set, and a
    probe table; returns (substitutions, snapshot, key type)."""
    key_type, value_type, topts = VARIANTS[variant]
    snap = load_tricky(etcd, kp)
    m = {"p": kp, "stem": kp[:-1]}

    db.create_server("s", etcd.endpoint)
    db.create_table("f", "s", columns=foreign_columns(key_type, value_type), prefix=kp, **topts)
    db.execute(f"CREATE TABLE l ({foreign_columns(key_type, value_type)})")
    is_bytea = key_type == "bytea"
    conv = (lambda x: x.encode()) if is_bytea else (lambda x: x)
    with db.conn.cursor() as cur:
        with cur.copy(f"COPY l ({COLS}) FROM STDIN") as cp:
            for r in snap:
                cp.write_row([conv(r["key"]), conv(r["value"]), r["create_revision"],
                              r["mod_revision"], r["version"], r["lease"]])
    db.execute(f"CREATE TABLE probe (id int, k {key_type})")
    with db.conn.cursor() as cur:
        for pid, k in PROBE:
            cur.execute("INSERT INTO probe VALUES (%s, %s)",
                        (pid, None if k is None else conv(_subst(k, m))))
    db.execute("ANALYZE l")
    db.execute("ANALYZE probe")

    # sanity: the snapshot really is what the foreign table shows
    assert db.scalar("SELECT count(*) FROM f") == len(snap)
    assert db.scalar("SELECT count(*) FROM l") == len(snap)
    distinct_versions = db.scalar("SELECT count(DISTINCT version) FROM l")
    assert distinct_versions >= 3
    return m, snap, key_type


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_differential(db, etcd, kp, variant):
    m, snap, key_type = _differential_tables(db, etcd, kp, variant)
    is_bytea = key_type == "bytea"
    mismatches: list[str] = []
    n_queries = 0
    for mode, sql in CORPUS:
        for settings in _settings_for(sql):
            for s in settings:
                db.execute(s)
            fsql = _subst(sql, {**m, "t": "f", "probe": "probe"})
            lsql = _subst(sql, {**m, "t": "l", "probe": "probe"})
            _compare(db, mode, fsql, lsql, mismatches,
                     label=("[" + "; ".join(settings) + "] " if settings else ""))
            n_queries += 1
            db.execute("RESET ALL")

    # a stable function is evaluated at execution time
    db.execute(f"SET etcd_fdw_test.k = {sql_literal(kp + 'a/b')}")
    _compare(db, "O", "SELECT key FROM f WHERE key = current_setting('etcd_fdw_test.k') ORDER BY key",
             "SELECT key FROM l WHERE key = current_setting('etcd_fdw_test.k') ORDER BY key", mismatches)
    db.execute("RESET ALL")

    # prepared statements: 8+ executions (PostgreSQL moves to a generic plan
    # after 5 custom ones when it is not costlier), then forced generic plans
    kt = "bytea" if is_bytea else "text"
    for name, argtypes, body, arglists in PREPARED:
        assert len(arglists) >= 8
        argtypes = argtypes.replace("text", kt)
        prep = f"PREPARE l_{name}({argtypes}) AS " + _subst(body, {**m, "t": "l"})
        if _run(db, prep)[0] != "ok":
            # (text-only functions with bytea): must fail on the foreign table too
            assert _run(db, prep.replace("PREPARE l_", "PREPARE f_").replace(" FROM l ", " FROM f "))[0] == "error"
            continue
        db.execute(f"PREPARE f_{name}({argtypes}) AS " + _subst(body, {**m, "t": "f"}))
        for cache_mode in ("auto", "force_generic_plan", "force_custom_plan"):
            db.execute(f"SET plan_cache_mode = {cache_mode}")
            for args in arglists:
                a = ", ".join(_prepared_arg(x, m, kt) for x in args)
                _compare(db, "O", f"EXECUTE f_{name}({a})", f"EXECUTE l_{name}({a})", mismatches,
                         label=f"[plan_cache_mode={cache_mode}; {body}] ")
                n_queries += 1
        db.execute("RESET plan_cache_mode")
        db.execute(f"DEALLOCATE f_{name}")
        db.execute(f"DEALLOCATE l_{name}")

    assert n_queries >= 60
    assert not mismatches, (
        f"{len(mismatches)} of {n_queries} queries differ between the foreign table "
        f"({variant}) and the local table:\n" + "\n".join(mismatches)
    )


# The same writes on both sides, inside one transaction: the foreign table's
# are pending (not in etcd), the local table's are real.  Changed rows have
# NULL metadata on both sides, as pending rows do.
PENDING_WRITES = [
    "INSERT INTO {t} (key, value) VALUES ('{p}new1', 'v1'), ('{p}a/zz', 'x'), "
    "('{p}日本/new', 'y'), ('{p}0new', 'zero'), ('{p}~new', 'tilde')",
    "UPDATE {t} SET value = 'upd'{meta} WHERE key LIKE '{p}n/1_' OR key = '{p}a'",
    "DELETE FROM {t} WHERE key LIKE '{p}a/b%' OR key = '{p}b' OR key LIKE '{p}é%'",
    "UPDATE {t} SET key = key || '_r'{meta} WHERE key LIKE '{p}N0%'",
    "DELETE FROM {t} WHERE key = '{p}new1'",
]
META_NULL = ", create_revision = NULL, mod_revision = NULL, version = NULL, lease = NULL"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_differential_with_pending_writes(db, etcd, kp, variant):
    """The corpus inside a transaction that has written to the table: scans
    merge the pending writes, and every pushed range, IN list, sort and
    limit must still give the local table's answer."""
    m, snap, key_type = _differential_tables(db, etcd, kp, variant)
    before = etcd_snapshot(etcd, kp)
    c = db.conn
    c.execute("BEGIN")
    for w in PENDING_WRITES:
        fw = _subst(w, {**m, "t": "f", "meta": ""})
        lw = _subst(w, {**m, "t": "l", "meta": META_NULL})
        nf, nl = c.execute(fw).rowcount, c.execute(lw).rowcount
        assert nf == nl, (fw, nf, nl)
    assert db.scalar("SELECT count(*) FROM f") == db.scalar("SELECT count(*) FROM l")
    mismatches: list[str] = []
    n_queries = 0
    for mode, sql in CORPUS:
        for settings in _settings_for(sql):
            c.execute("SAVEPOINT q")
            for st in settings:
                c.execute(st)
            fsql = _subst(sql, {**m, "t": "f", "probe": "probe"})
            lsql = _subst(sql, {**m, "t": "l", "probe": "probe"})
            _compare(db, mode, fsql, lsql, mismatches, label="[pending writes] ",
                     savepoint=True)
            n_queries += 1
            c.execute("ROLLBACK TO SAVEPOINT q")
    c.execute("ROLLBACK")
    assert etcd_snapshot(etcd, kp) == before, "pending writes reached etcd"
    assert n_queries >= 60
    assert not mismatches, (
        f"{len(mismatches)} of {n_queries} queries differ between the foreign table "
        f"({variant}, pending writes) and the local table:\n" + "\n".join(mismatches)
    )


def test_non_key_sort_limit_over_several_ranges(db, etcd, kp):
    """etcd sorts and limits each range of a multi-range scan on its own;
    the scan merges them (the review's wrong-rows case)."""
    for k in ("a/1", "a/2", "a/3", "b/1", "b/2", "b/3"):
        etcd.put(kp + k, "v")
    etcd.put(kp + "a/1", "w")  # written last: the highest mod_revisions
    etcd.put(kp + "a/2", "x")
    db.create_server("s", etcd.endpoint)
    db.create_table("m", "s", columns=foreign_columns('text COLLATE "C"'), prefix=kp)
    both = f"key LIKE '{kp}a/%' OR key LIKE '{kp}b/%'"
    q = f"SELECT key FROM m WHERE {both} ORDER BY mod_revision DESC LIMIT 3"
    plan = explain(db, q)
    assert etcd_prop(plan, "Sort") == "mod_revision DESC", show(plan)
    assert etcd_prop(plan, "Limit") == "3", show(plan)
    assert [r[0] for r in db.rows(q)] == [kp + "a/2", kp + "a/1", kp + "b/3"]
    q = f"SELECT key FROM m WHERE key IN ('{kp}a/1', '{kp}b/3', '{kp}b/2') ORDER BY mod_revision DESC LIMIT 1"
    assert db.rows(q) == [(kp + "a/1",)]
    q = f"SELECT key FROM m WHERE {both} ORDER BY mod_revision DESC LIMIT 2 OFFSET 1"
    assert [r[0] for r in db.rows(q)] == [kp + "a/1", kp + "b/3"]
    q = (f"SELECT key FROM m WHERE key IN ('{kp}b/3', '{kp}a/3', '{kp}b/1') "
         "ORDER BY create_revision LIMIT 2")
    assert [r[0] for r in db.rows(q)] == [kp + "a/3", kp + "b/1"]
    q = f"SELECT key FROM m WHERE {both} ORDER BY version DESC LIMIT 2"
    assert sorted(r[0] for r in db.rows(q)) == [kp + "a/1", kp + "a/2"]
    q = f"SELECT key, value FROM m WHERE key IN ('{kp}b/1', '{kp}a/2', '{kp}a/1') ORDER BY value DESC LIMIT 2"
    assert db.rows(q) == [(kp + "a/2", "x"), (kp + "a/1", "w")]
    # the same without selecting the value (the merge compares values)
    q = f"SELECT key FROM m WHERE key IN ('{kp}b/1', '{kp}a/2', '{kp}a/1') ORDER BY value DESC LIMIT 2"
    assert etcd_prop(explain(db, q), "Sort") == "value DESC"
    assert db.rows(q) == [(kp + "a/2",), (kp + "a/1",)]
    q = f"SELECT key FROM m WHERE key IN ('{kp}b/1', '{kp}a/2', '{kp}b/3') ORDER BY key DESC LIMIT 2"
    assert db.rows(q) == [(kp + "b/3",), (kp + "b/1",)]
    # run-time key lists (a generic plan) with the same sort stay exact
    db.execute("PREPARE p(text[]) AS SELECT key FROM m WHERE key = ANY($1) ORDER BY mod_revision DESC LIMIT 1")
    db.execute("SET plan_cache_mode = force_generic_plan")
    arr = sql_literal("{" + ",".join([kp + "b/3", kp + "a/1", kp + "b/2"]) + "}")
    assert db.rows(f"EXECUTE p({arr})") == [(kp + "a/1",)]


# --------------------------------------------------------------------------
# 2. EXPLAIN
# --------------------------------------------------------------------------


@pytest.fixture
def ex(db, etcd, kp):
    """A server `s`, foreign tables t (C), ti (ICU) over kp with 30 keys, and
    a local table probe(id, k)."""
    items = {f"{kp}k{i:02d}": f"v{i:02d}" for i in range(30)}
    etcd.put_many(items)
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", columns=foreign_columns('text COLLATE "C"'), prefix=kp)
    db.create_table("ti", "s", columns=foreign_columns('text COLLATE "' + ICU + '"', 'text COLLATE "' + ICU + '"'),
                    prefix=kp)
    db.execute('CREATE TABLE probe (id int PRIMARY KEY, k text COLLATE "C")')
    db.execute("INSERT INTO probe VALUES (1, %s), (2, %s), (3, 'nope')", (kp + "k03", kp + "k17"))
    db.execute("ANALYZE probe")
    db.kp = kp
    db.keys = sorted(items)
    return db


def test_explain_point_lookup(ex):
    k = ex.kp + "k05"
    sql = f"SELECT * FROM t WHERE key = {sql_literal(k)}"
    plan = explain(ex, sql)
    assert etcd_prop(plan, "Range") == f"key = '{k}'", show(plan)
    assert etcd_prop(plan, "Conditions") == f"key = '{k}'", show(plan)
    assert scan_estimate(plan) == 1, show(plan)
    assert not any("Filter:" in line for line in plan), show(plan)
    plan = explain(ex, sql, analyze=True)
    assert etcd_prop(plan, "Pages") == "1", show(plan)
    assert etcd_prop(plan, "Keys Fetched") == "1", show(plan)
    assert ex.rows(f"SELECT key, value FROM t WHERE key = {sql_literal(k)}") == [(k, "v05")]
    # same for a quote in the key: shown as an SQL literal
    # a quote in the key is shown unambiguously (doubled, or escaped as \x27)
    plan = explain(ex, "SELECT * FROM t WHERE key = " + sql_literal(ex.kp + "it's"))
    assert etcd_prop(plan, "Range") in (
        "key = " + sql_literal(ex.kp + "it's"), f"key = '{ex.kp}it\\x27s'"
    ), show(plan)


def test_explain_prefix(ex):
    p = ex.kp + "k0"
    for cond in (f"key LIKE '{p}%'", f"starts_with(key, '{p}')", f"key ^@ '{p}'"):
        plan = explain(ex, f"SELECT key FROM t WHERE {cond}")
        assert etcd_prop(plan, "Range") == f"prefix '{p}'", (cond, show(plan))
        assert etcd_prop(plan, "Conditions") == f"key prefix '{p}'", (cond, show(plan))
        assert not any("Filter:" in line for line in plan), (cond, show(plan))
        assert ex.rows(f"SELECT key FROM t WHERE {cond}") == [(k,) for k in ex.keys if k.startswith(p)]
    # LIKE with a wildcard after the prefix: prefix pushed, LIKE rechecked
    plan = explain(ex, f"SELECT key FROM t WHERE key LIKE '{p}_x%'")
    assert etcd_prop(plan, "Range") == f"prefix '{p}'", show(plan)
    assert any("Filter:" in line for line in plan), show(plan)
    # the table prefix alone
    plan = explain(ex, "SELECT key FROM t")
    assert etcd_prop(plan, "Range") == f"prefix '{ex.kp}'", show(plan)
    assert etcd_prop(plan, "Conditions") is None, show(plan)


def test_explain_range(ex):
    lo, hi = ex.kp + "k03", ex.kp + "k07"
    plan = explain(ex, f"SELECT key FROM t WHERE key >= '{lo}' AND key < '{hi}'")
    assert etcd_prop(plan, "Range") == f"['{lo}', '{hi}')", show(plan)
    assert not any("Filter:" in line for line in plan), show(plan)
    assert ex.rows(f"SELECT key FROM t WHERE key >= '{lo}' AND key < '{hi}'") == [
        (k,) for k in ex.keys if lo <= k < hi
    ]
    # not pushed under ICU: filtered locally, still correct
    plan = explain(ex, f"SELECT key FROM ti WHERE key >= '{lo}' AND key < '{hi}'")
    assert etcd_prop(plan, "Range") == f"prefix '{ex.kp}'", show(plan)
    assert any("Filter:" in line for line in plan), show(plan)
    assert etcd_prop(plan, "Conditions") is None, show(plan)
    # ... but equality is pushed under ICU (deterministic collation)
    plan = explain(ex, f"SELECT key FROM ti WHERE key = '{lo}'")
    assert etcd_prop(plan, "Range") == f"key = '{lo}'", show(plan)


@pytest.mark.parametrize(
    "cond",
    [
        "key > '{p}k09' AND key < '{p}k01'",
        "key = '{p}k01' AND key = '{p}k02'",
        "key IS NULL",
        "key = 'outside-the-prefix'",
        "key LIKE 'zz%'",
        "key IN ('{p}k01') AND key LIKE '{p}k2%'",
        "key = ANY('{{}}'::text[])",
    ],
)
def test_explain_contradiction_sends_nothing(ex, cond):
    cond = cond.replace("{p}", ex.kp).replace("{{}}", "{}")
    sql = f"SELECT key, value FROM t WHERE {cond}"
    plan = explain(ex, sql)
    # (for key = 'a' AND key = 'b' PostgreSQL itself finds 'a' = 'b' false
    # and puts a gating "One-Time Filter: false" above the scan)
    gated = any(line.strip() == "One-Time Filter: false" for line in plan)
    assert gated or etcd_prop(plan, "Range") == "none (contradictory conditions)", show(plan)
    plan = explain(ex, sql, analyze=True)
    if gated and not any("Foreign Scan" in line for line in plan):
        # PostgreSQL 18 replaces the proven-empty scan by a Result: no
        # scan, so nothing can be sent to etcd
        assert plan[0].startswith("Result"), show(plan)
    else:
        assert etcd_prop(plan, "Pages") == "0", show(plan)
        assert etcd_prop(plan, "Keys Fetched") == "0", show(plan)
    assert ex.rows(sql) == []


def test_where_intersects_table_key_range(ex):
    kp = ex.kp
    ex.create_table("tr", "s", columns='key text COLLATE "C", value text', key=kp + "k05",
                    range_end=kp + "k15")
    cases = [
        (f"key >= '{kp}k10'", f"['{kp}k10', '{kp}k15')", range(10, 15)),
        (f"key < '{kp}k08'", f"['{kp}k05', '{kp}k08')", range(5, 8)),
        (f"key LIKE '{kp}k1%'", f"['{kp}k1', '{kp}k15')", range(10, 15)),
        (f"key = '{kp}k07'", f"key = '{kp}k07'", [7]),
        (f"key < '{kp}k03'", "none (contradictory conditions)", []),
        (f"key = '{kp}k15'", "none (contradictory conditions)", []),
        (f"key LIKE '{kp}k2%'", "none (contradictory conditions)", []),
    ]
    for cond, rng, idx in cases:
        sql = f"SELECT key FROM tr WHERE {cond}"
        plan = explain(ex, sql)
        assert etcd_prop(plan, "Range") == rng, (cond, show(plan))
        assert ex.rows(sql + " ORDER BY key") == [(f"{kp}k{i:02d}",) for i in idx], cond
    # the single-key table
    ex.create_table("tk", "s", columns='key text COLLATE "C", value text', key=kp + "k05")
    plan = explain(ex, f"SELECT key FROM tk WHERE key > '{kp}k05'", analyze=True)
    assert etcd_prop(plan, "Range") == "none (contradictory conditions)", show(plan)
    assert etcd_prop(plan, "Pages") == "0", show(plan)
    assert ex.rows(f"SELECT key, value FROM tk WHERE key >= '{kp}k05'") == [(kp + "k05", "v05")]


def test_explain_order_by_key(ex):
    # C collation: etcd's order, no Sort node
    plan = explain(ex, "SELECT key FROM t ORDER BY key")
    assert not has_sort_node(plan), show(plan)
    assert etcd_prop(plan, "Sort") is None, show(plan)
    assert ex.rows("SELECT key FROM t ORDER BY key") == [(k,) for k in ex.keys]
    plan = explain(ex, f"SELECT key FROM t WHERE key > '{ex.kp}k1' ORDER BY key")
    assert not has_sort_node(plan), show(plan)
    # ICU: a Sort node (etcd compares bytes)
    plan = explain(ex, "SELECT key FROM ti ORDER BY key")
    assert has_sort_node(plan), show(plan)
    # explicit COLLATE "C" on the ICU table: no sort needed
    plan = explain(ex, 'SELECT key FROM ti ORDER BY key COLLATE "C"')
    assert not has_sort_node(plan), show(plan)
    # explicit ICU collation on the C table: sorted locally
    plan = explain(ex, 'SELECT key FROM t ORDER BY key COLLATE "' + ICU + '"')
    assert has_sort_node(plan), show(plan)


def test_explain_order_by_key_desc_limit(ex):
    sql = "SELECT key FROM t ORDER BY key DESC LIMIT 5"
    plan = explain(ex, sql)
    assert etcd_prop(plan, "Sort") == "key DESC", show(plan)
    assert etcd_prop(plan, "Limit") == "5", show(plan)
    assert not has_sort_node(plan), show(plan)
    assert ex.rows(sql) == [(k,) for k in reversed(ex.keys)][:5]
    plan = explain(ex, sql, analyze=True)
    assert etcd_prop(plan, "Keys Fetched") == "5", show(plan)
    # with a pushed WHERE too
    sql = f"SELECT key FROM t WHERE key < '{ex.kp}k1' ORDER BY key DESC LIMIT 3"
    plan = explain(ex, sql)
    assert etcd_prop(plan, "Sort") == "key DESC" and etcd_prop(plan, "Limit") == "3", show(plan)
    assert ex.rows(sql) == [(ex.kp + f"k{i:02d}",) for i in (9, 8, 7)]
    # ORDER BY key DESC without LIMIT: not pushed (sorted locally)
    plan = explain(ex, "SELECT key FROM t ORDER BY key DESC")
    assert has_sort_node(plan) and etcd_prop(plan, "Sort") is None, show(plan)
    # under ICU: not pushed
    plan = explain(ex, "SELECT key FROM ti ORDER BY key DESC LIMIT 5")
    assert has_sort_node(plan), show(plan)
    assert etcd_prop(plan, "Sort") is None and etcd_prop(plan, "Limit") is None, show(plan)


def test_explain_limit_offset(ex):
    plan = explain(ex, "SELECT key FROM t LIMIT 3 OFFSET 2")
    assert etcd_prop(plan, "Limit") == "5", show(plan)
    assert len(ex.rows("SELECT key FROM t LIMIT 3 OFFSET 2")) == 3
    sql = "SELECT key FROM t ORDER BY key LIMIT 3 OFFSET 2"
    plan = explain(ex, sql)
    assert etcd_prop(plan, "Limit") == "5", show(plan)
    assert ex.rows(sql) == [(k,) for k in ex.keys[2:5]]
    plan = explain(ex, sql, analyze=True)
    assert etcd_prop(plan, "Keys Fetched") == "5", show(plan)
    sql = "SELECT key FROM t ORDER BY key DESC LIMIT 3 OFFSET 2"
    plan = explain(ex, sql)
    assert etcd_prop(plan, "Limit") == "5", show(plan)
    assert ex.rows(sql) == [(k,) for k in list(reversed(ex.keys))[2:5]]


def test_explain_limit_not_pushed(ex):
    # a WHERE clause that is not pushed: etcd must not limit the scan
    for sql in (
        "SELECT key FROM t WHERE value = 'v07' LIMIT 3",
        "SELECT key FROM t WHERE value = 'v07' ORDER BY key DESC LIMIT 3",
        f"SELECT key FROM t WHERE key LIKE '{ex.kp}k_1%' ORDER BY key LIMIT 1",
        "SELECT key FROM t WHERE key ILIKE '%K2%' LIMIT 2",
        "SELECT key FROM t ORDER BY key DESC LIMIT (SELECT 1)",
    ):
        plan = explain(ex, sql)
        assert etcd_prop(plan, "Limit") is None, (sql, show(plan))
    assert ex.rows("SELECT key FROM t WHERE value = 'v07' ORDER BY key DESC LIMIT 3") == [(ex.kp + "k07",)]
    assert ex.rows(f"SELECT key FROM t WHERE key LIKE '{ex.kp}k_1%' ORDER BY key LIMIT 1") == [(ex.kp + "k01",)]
    # joins: not a single-table query
    plan = explain(ex, "SELECT t.key FROM t JOIN probe p ON p.k = t.key ORDER BY t.key DESC LIMIT 1")
    assert etcd_prop(plan, "Limit") is None, show(plan)
    assert ex.rows("SELECT t.key FROM t JOIN probe p ON p.k = t.key ORDER BY t.key DESC LIMIT 1") == [
        (ex.kp + "k17",)
    ]


def test_explain_order_by_other_columns(ex):
    for col in ("value", "create_revision", "mod_revision", "version"):
        for d in ("ASC", "DESC"):
            sql = f"SELECT key, {col} FROM t ORDER BY {col} {d} LIMIT 4"
            plan = explain(ex, sql)
            assert etcd_prop(plan, "Sort") == f"{col} {d}", show(plan)
            assert etcd_prop(plan, "Limit") == "4", show(plan)
            assert not has_sort_node(plan), show(plan)
    assert ex.rows("SELECT value FROM t ORDER BY value DESC LIMIT 2") == [("v29",), ("v28",)]
    # without LIMIT, or with two sort columns: sorted locally
    for sql in ("SELECT key FROM t ORDER BY version", "SELECT key FROM t ORDER BY version, key LIMIT 3",
                "SELECT key FROM t WHERE value > 'v1' ORDER BY mod_revision LIMIT 3"):
        plan = explain(ex, sql)
        assert etcd_prop(plan, "Sort") is None, show(plan)
    # ORDER BY value under an ICU value collation must not be pushed
    plan = explain(ex, "SELECT value FROM ti ORDER BY value LIMIT 4")
    assert etcd_prop(plan, "Sort") is None and has_sort_node(plan), show(plan)


def test_with_ties_not_cut_by_etcd_limit(ex, etcd):
    # FETCH FIRST n ROWS WITH TIES needs the rows tied with the n-th one too:
    # etcd may not be limited to n keys
    for i in (3, 4, 5, 6):
        etcd.put(ex.kp + f"k{i:02d}", "v00")  # now 5 keys have value v00 (version 2)
    kp = ex.kp
    # (sql, keys the rows must come from, expected row count)
    cases = [
        ("SELECT key FROM t ORDER BY value FETCH FIRST 2 ROWS WITH TIES", (0, 3, 4, 5, 6), 5),
        ("SELECT key FROM t ORDER BY version DESC FETCH FIRST 1 ROWS WITH TIES", (3, 4, 5, 6), 4),
        # OFFSET skips one of the four tied rows; the other three are returned
        ("SELECT key FROM t ORDER BY version DESC OFFSET 1 ROWS FETCH FIRST 2 ROWS WITH TIES",
         (3, 4, 5, 6), 3),
        (f"SELECT key FROM t WHERE key < '{kp}k05' ORDER BY mod_revision DESC "
         "FETCH FIRST 1 ROWS WITH TIES", (4,), 1),
        # unique sort key: ties cannot happen
        ("SELECT key FROM t ORDER BY key DESC FETCH FIRST 2 ROWS WITH TIES", (28, 29), 2),
    ]
    bad = []
    for sql, idx, n in cases:
        got = sorted(r[0] for r in ex.rows(sql))
        allowed = {f"{kp}k{i:02d}" for i in idx}
        if len(got) != n or not set(got) <= allowed:
            bad.append(f"{sql}\n  got {got}\n  want {n} rows of {sorted(allowed)}\n" + show(explain(ex, sql)))
    assert not bad, "\n".join(bad)


def test_explain_keys_only(ex):
    for sql, ko in (
        ("SELECT key FROM t", "true"),
        ("SELECT count(*) FROM t", "true"),
        ("SELECT key, version, mod_revision, create_revision, lease FROM t", "true"),
        (f"SELECT key FROM t WHERE key LIKE '{ex.kp}%'", "true"),
        ("SELECT value FROM t", "false"),
        ("SELECT * FROM t", "false"),
        ("SELECT key FROM t WHERE value = 'x'", "false"),
        ("SELECT key FROM t ORDER BY value LIMIT 1", "false"),
    ):
        plan = explain(ex, sql)
        assert etcd_prop(plan, "Keys Only") == ko, (sql, show(plan))
    assert ex.rows("SELECT key, version FROM t LIMIT 1")[0][1] >= 1


def test_explain_options_lines(ex, etcd):
    plan = explain(ex, "SELECT key FROM t")
    assert etcd_prop(plan, "Consistency") == "linearizable", show(plan)
    # no fetch_size option: adaptive paging, starting at 1000 keys
    assert etcd_prop(plan, "Fetch Size").startswith("auto (first 1000"), show(plan)
    assert etcd_prop(plan, "Revision") is None, show(plan)
    rev = etcd.revision()
    ex.execute(f"ALTER FOREIGN TABLE t OPTIONS (ADD revision '{rev}', ADD consistency 'serializable', "
               "ADD fetch_size '7')")
    plan = explain(ex, "SELECT key FROM t")
    assert etcd_prop(plan, "Revision") == str(rev), show(plan)
    assert etcd_prop(plan, "Consistency") == "serializable", show(plan)
    assert etcd_prop(plan, "Fetch Size") == "7", show(plan)
    plan = explain(ex, "SELECT key FROM t", analyze=True)
    assert etcd_prop(plan, "Pages") == "5", show(plan)  # 30 keys / 7
    assert etcd_prop(plan, "Keys Fetched") == "30", show(plan)


def test_explain_prepared_generic_plan(ex):
    ex.execute("PREPARE q(text) AS SELECT key, value FROM t WHERE key = $1")
    # default plan_cache_mode: 7 executions (custom plans, then generic)
    for i in range(8):
        k = ex.kp + f"k{i:02d}"
        assert ex.rows(f"EXECUTE q({sql_literal(k)})") == [(k, f"v{i:02d}")]
    ex.execute("SET plan_cache_mode = force_generic_plan")
    plan = explain(ex, f"EXECUTE q('{ex.kp}k11')")
    assert "(narrowed at run time by parameter" in etcd_prop(plan, "Range"), show(plan)
    assert etcd_prop(plan, "Conditions") == "key = $1", show(plan)
    assert scan_estimate(plan) == 1, show(plan)
    plan = explain(ex, f"EXECUTE q('{ex.kp}k11')", analyze=True)
    assert etcd_prop(plan, "Keys Fetched") == "1", show(plan)
    assert etcd_prop(plan, "Pages") == "1", show(plan)
    assert ex.rows(f"EXECUTE q('{ex.kp}k11')") == [(ex.kp + "k11", "v11")]
    assert ex.rows("EXECUTE q('nope')") == []
    assert ex.rows("EXECUTE q(NULL)") == []
    # a parameter outside the table prefix: no request at all
    plan = explain(ex, "EXECUTE q('outside')", analyze=True)
    assert etcd_prop(plan, "Pages") == "0", show(plan)
    # range and prefix parameters
    ex.execute("PREPARE r(text, text) AS SELECT key FROM t WHERE key >= $1 AND key < $2")
    plan = explain(ex, f"EXECUTE r('{ex.kp}k10', '{ex.kp}k13')", analyze=True)
    assert "narrowed at run time" in etcd_prop(plan, "Range"), show(plan)
    assert etcd_prop(plan, "Keys Fetched") == "3", show(plan)
    ex.execute("PREPARE sw(text) AS SELECT key FROM t WHERE starts_with(key, $1)")
    plan = explain(ex, f"EXECUTE sw('{ex.kp}k2')", analyze=True)
    assert "narrowed at run time" in etcd_prop(plan, "Range"), show(plan)
    assert etcd_prop(plan, "Keys Fetched") == "10", show(plan)
    # LIKE $1 (pattern only known at run time): at least correct
    ex.execute("PREPARE lk(text) AS SELECT key FROM t WHERE key LIKE $1")
    assert ex.rows(f"EXECUTE lk('{ex.kp}k2%')") == [(k,) for k in ex.keys if k.startswith(ex.kp + "k2")]
    assert ex.rows(f"EXECUTE lk('{ex.kp}k_5')") == [(ex.kp + f"k{i}5",) for i in range(3)]


def test_explain_nested_loop_parameterized(ex):
    ex.execute("SET enable_hashjoin = off")
    ex.execute("SET enable_mergejoin = off")
    # one probe row: a parameterized scan per outer row
    sql = "SELECT p.id, t.value FROM probe p JOIN t ON t.key = p.k WHERE p.id = 2"
    plan = explain(ex, sql)
    assert has_node(plan, "Nested Loop"), show(plan)
    assert "narrowed at run time by parameter" in etcd_prop(plan, "Range"), show(plan)
    plan = explain(ex, sql, analyze=True)
    assert etcd_prop(plan, "Keys Fetched") == "1", show(plan)
    assert ex.rows(sql) == [(2, "v17")]
    # the whole probe table (3 rows, one matching nothing); with 3 outer rows
    # the planner prefers one full scan plus a Materialize node over three
    # lookups (each costed like a request), so forbid Materialize as well
    ex.execute("SET enable_material = off")
    sql = "SELECT p.id, t.value FROM probe p JOIN t ON t.key = p.k ORDER BY p.id"
    plan = explain(ex, sql)
    assert has_node(plan, "Nested Loop"), show(plan)
    assert "narrowed at run time by parameter" in (etcd_prop(plan, "Range") or ""), show(plan)
    plan = explain(ex, sql, analyze=True)
    assert etcd_prop(plan, "Keys Fetched") == "2", show(plan)
    assert ex.rows(sql) == [(1, "v03"), (2, "v17")]


def test_runtime_like_pattern_narrows_to_prefix(ex):
    """LIKE $1: the literal prefix of the run-time pattern becomes the range;
    the clause itself is rechecked locally."""
    ex.execute("SET plan_cache_mode = force_generic_plan")
    ex.execute("PREPARE lk2(text) AS SELECT key FROM t WHERE key LIKE $1")
    plan = explain(ex, f"EXECUTE lk2('{ex.kp}k2%')", analyze=True)
    assert "narrowed at run time" in etcd_prop(plan, "Range"), show(plan)
    assert etcd_prop(plan, "Keys Fetched") == "10", show(plan)
    assert any("Filter:" in line for line in plan), "LIKE must be rechecked: " + show(plan)
    plan = explain(ex, f"EXECUTE lk2('{ex.kp}k_5')", analyze=True)
    assert etcd_prop(plan, "Keys Fetched") == "30", show(plan)
    assert ex.rows(f"EXECUTE lk2('{ex.kp}k_5')") == [(ex.kp + f"k{i}5",) for i in range(3)]
    assert ex.rows("EXECUTE lk2('%')") == [(k,) for k in ex.keys]
    assert ex.rows("EXECUTE lk2(NULL)") == []


def test_expression_join_parameter(ex):
    """key = <expression of the outer row> drives point lookups too."""
    ex.execute("SET enable_hashjoin = off")
    ex.execute("SET enable_mergejoin = off")
    ex.execute("SET enable_material = off")
    ex.execute("CREATE TABLE probe2 (id int, suffix text)")
    ex.execute("INSERT INTO probe2 VALUES (1, 'K04'), (2, 'K21'), (3, 'none')")
    ex.execute("ANALYZE probe2")
    sql = (f"SELECT p.id, t.value FROM probe2 p JOIN t ON t.key = {sql_literal(ex.kp)} || lower(p.suffix) "
           "ORDER BY p.id")
    plan = explain(ex, sql, analyze=True)
    assert has_node(plan, "Nested Loop"), show(plan)
    assert "narrowed at run time by parameter" in (etcd_prop(plan, "Range") or ""), show(plan)
    assert etcd_prop(plan, "Keys Fetched") == "2", show(plan)
    assert ex.rows(sql) == [(1, "v04"), (2, "v21")]


def test_explain_lateral_and_subplan_parameterized(ex):
    for sql in (
        "SELECT p.id, s.value FROM probe p, LATERAL (SELECT value FROM t WHERE t.key = p.k OFFSET 0) s ORDER BY 1",
        "SELECT p.id, (SELECT value FROM t WHERE t.key = p.k) FROM probe p WHERE p.k LIKE '%k%' ORDER BY 1",
    ):
        plan = explain(ex, sql, analyze=True)
        assert "narrowed at run time by parameter" in etcd_prop(plan, "Range"), show(plan)
        assert etcd_prop(plan, "Keys Fetched") == "2", show(plan)
        assert ex.rows(sql) == [(1, "v03"), (2, "v17")]


# --------------------------------------------------------------------------
# 3. paging and snapshot
# --------------------------------------------------------------------------


def test_paging(db, etcd, kp):
    items = {f"{kp}{i:03d}": f"v{i}" for i in range(50)}
    etcd.put_many(items)
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", prefix=kp, fetch_size="7")
    plan = explain(db, "SELECT key, value FROM t", analyze=True)
    assert etcd_prop(plan, "Fetch Size") == "7", show(plan)
    assert etcd_prop(plan, "Pages") == "8", show(plan)  # ceil(50 / 7)
    assert etcd_prop(plan, "Keys Fetched") == "50", show(plan)
    # (PostgreSQL 18 prints "actual rows=50.00")
    assert re.search(r"Foreign Scan on t .*actual rows=50(\.00)? ", show(plan)), show(plan)
    assert db.rows("SELECT key, value FROM t") == sorted(items.items())
    assert db.rows("SELECT key FROM t ORDER BY key") == [(k,) for k in sorted(items)]
    # exactly on a page boundary (49 = 7 * 7)
    db.create_table("t49", "s", key=kp + "000", range_end=kp + "049", fetch_size="7")
    plan = explain(db, "SELECT key FROM t49", analyze=True)
    assert etcd_prop(plan, "Keys Fetched") == "49", show(plan)
    assert etcd_prop(plan, "Pages") in ("7", "8"), show(plan)
    assert db.rows("SELECT key FROM t49") == [(k,) for k in sorted(items)[:49]]
    # a DESC scan with a pushed limit larger than a page
    sql = "SELECT key FROM t ORDER BY key DESC LIMIT 20"
    assert db.rows(sql) == [(k,) for k in sorted(items, reverse=True)[:20]]
    plan = explain(db, sql, analyze=True)
    assert etcd_prop(plan, "Keys Fetched") == "20", show(plan)
    # a pushed LIMIT that stops the scan early
    sql = "SELECT key FROM t LIMIT 10"
    plan = explain(db, sql, analyze=True)
    assert etcd_prop(plan, "Pages") == "2", show(plan)
    # server-level fetch_size
    db.execute("ALTER SERVER s OPTIONS (ADD fetch_size '9')")
    db.create_table("t9", "s", prefix=kp)
    plan = explain(db, "SELECT key FROM t9", analyze=True)
    assert etcd_prop(plan, "Fetch Size") == "9", show(plan)
    assert etcd_prop(plan, "Pages") == "6", show(plan)  # ceil(50 / 9)


def test_snapshot_across_pages(db, etcd, kp):
    items = {f"{kp}{i:02d}": f"v{i}" for i in range(10)}
    etcd.put_many(items)
    rev_before = etcd.revision()
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", columns="key text, value text, mod_revision bigint", prefix=kp,
                    fetch_size="2")
    c = db.conn
    c.execute("BEGIN")
    try:
        c.execute("DECLARE c CURSOR FOR SELECT key, value, mod_revision FROM t ORDER BY key")
        first = c.execute("FETCH 1 FROM c").fetchall()
        assert [r[:2] for r in first] == [(kp + "00", "v0")]
        # change etcd behind the scan's back
        etcd.ctl("del", kp + "07")                # deleted, not yet read
        etcd.ctl("del", kp + "01")                # deleted, in the first page already
        etcd.put(kp + "05", "changed")            # modified
        etcd.put(kp + "99", "new at the end")     # inserted after the last key
        etcd.put(kp + "03a", "new in the middle")
        rest = c.execute("FETCH ALL FROM c").fetchall()
    finally:
        c.execute("ROLLBACK")
    got = first + rest
    assert [r[:2] for r in got] == sorted(items.items())
    assert all(r[2] <= rev_before for r in got), got
    # a new scan sees the new state
    now = dict(db.rows("SELECT key, value FROM t"))
    assert kp + "07" not in now and now[kp + "05"] == "changed" and now[kp + "99"] == "new at the end"
    assert len(now) == 10 - 2 + 2


# --------------------------------------------------------------------------
# 4./5. big key spaces: one etcd version, on a private etcd
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def etcd_big():
    with private_etcd() as srv:
        yield srv


def test_point_lookup_in_100k_keys(db, etcd_big):
    n = 100_000
    kp = "big/"
    items = [(f"{kp}{i:06d}", str(i)) for i in range(n)]
    put_many_parallel(etcd_big, items, batch=128, workers=4)
    db.create_server("s", etcd_big.endpoint)
    db.create_table("t", "s", prefix=kp)

    plan = explain(db, f"SELECT value FROM t WHERE key = '{kp}054321'", analyze=True)
    assert etcd_prop(plan, "Keys Fetched") == "1", show(plan)
    assert etcd_prop(plan, "Pages") == "1", show(plan)
    assert scan_estimate(plan) == 1, show(plan)

    # warm up the connection, then time
    assert db.scalar(f"SELECT value FROM t WHERE key = '{kp}000007'") == "7"
    t0 = time.perf_counter()
    # count(value): a full scan (count(*) would be one count_only request)
    total = db.scalar("SELECT count(value) FROM t")
    full = time.perf_counter() - t0
    assert total == n
    lookups = []
    for i in range(20):
        k = (i * 4999 + 17) % n
        t0 = time.perf_counter()
        v = db.scalar(f"SELECT value FROM t WHERE key = '{kp}{k:06d}'")
        lookups.append(time.perf_counter() - t0)
        assert v == str(k)
    avg = sum(lookups) / len(lookups)
    print(f"point lookup avg {avg * 1000:.2f} ms, full count(*) {full * 1000:.1f} ms")
    assert avg * 20 < full, f"point lookup avg {avg * 1000:.2f} ms vs full scan {full * 1000:.1f} ms"


def test_whole_range_scans_start_big(db, etcd_big):
    """A query that reads its whole range (no LIMIT, no join, not a
    cursor or EXISTS) does not grow pages fourfold from 1000 keys: after
    the first page it asks for a full page at once, and after ANALYZE the
    first page already covers the table.  Queries that may stop early
    keep the small first page."""
    n = 20_000
    kp = "whole/"
    put_many_parallel(etcd_big, [(f"{kp}{i:05d}", "v" * 100) for i in range(n)], batch=128, workers=4)
    db.create_server("s", etcd_big.endpoint)
    db.create_table("t", "s", prefix=kp)
    db.create_table("small", "s", prefix=kp + "0000")
    plan = explain(db, "SELECT count(value) FROM t", analyze=True)
    assert "reads the whole range" in etcd_prop(plan, "Fetch Size"), show(plan)
    assert etcd_prop(plan, "Keys Fetched") == str(n), show(plan)
    assert etcd_prop(plan, "Pages") == "2", show(plan)  # 1000, then the rest
    # may stop early: pages grow from 1000 (1000, 4000, 15000)
    plan = explain(db, "SELECT count(*) FROM (SELECT t.value FROM t JOIN small ON small.value = t.value) j",
                   analyze=True)
    assert "reads the whole range" not in show(plan), show(plan)
    plan = explain(db, "SELECT EXISTS (SELECT 1 FROM t WHERE value = 'nothing')", analyze=True)
    assert "reads the whole range" not in show(plan), show(plan)
    plan = explain(db, "SELECT value FROM t ORDER BY key LIMIT 3", analyze=True)
    assert "reads the whole range" not in show(plan), show(plan)
    assert etcd_prop(plan, "Pages") == "1", show(plan)
    # after ANALYZE the first page holds the whole table
    db.execute("ANALYZE t")
    plan = explain(db, "SELECT count(value) FROM t", analyze=True)
    assert etcd_prop(plan, "Pages") == "1", show(plan)
    assert db.scalar("SELECT count(value) FROM t") == n
    assert db.scalar("SELECT sum(length(value)) FROM t") == 100 * n


def test_bounded_memory_80mb_scan(db, etcd_big):
    n, size = 20_000, 4096
    kp = "mem/"
    val = "x" * size
    put_many_parallel(etcd_big, [(f"{kp}{i:05d}", val) for i in range(n)], batch=100, workers=4)
    db.create_server("s", etcd_big.endpoint)
    db.create_table("t", "s", prefix=kp)
    pid = db.backend_pid()
    # warm up the backend (extension, runtime, connection) first
    assert db.scalar(f"SELECT length(value) FROM t WHERE key = '{kp}00000'") == size
    before = vm_hwm_kb(pid)
    assert db.scalar("SELECT sum(length(value)) FROM t") == n * size
    after = vm_hwm_kb(pid)
    growth_mb = (after - before) / 1024
    print(f"VmHWM before {before} kB, after {after} kB")
    assert growth_mb < 64, f"backend peak RSS grew by {growth_mb:.1f} MB for an 80 MB scan"


def test_pages_are_bounded_by_bytes_after_small_keys(db, etcd_big):
    """A run of tiny keys grows adaptive pages to thousands of keys; large
    values right after them must not make one answer of that many keys:
    the answer is refused by its size and asked for again in smaller
    pages, at the same revision, with bounded backend memory."""
    kp = "grow/"
    tiny = [(f"{kp}a{i:04d}", "x") for i in range(1000)]
    size = 20 * 1024
    big = [(f"{kp}b{i:04d}", chr(ord("a") + i % 26) * size) for i in range(4100)]
    put_many_parallel(etcd_big, tiny + big, batch=50, workers=4)
    db.create_server("s", etcd_big.endpoint)
    db.create_table("t", "s", prefix=kp)
    pid = db.backend_pid()
    assert db.scalar(f"SELECT length(value) FROM t WHERE key = '{kp}b0000'") == size
    before = vm_hwm_kb(pid)
    assert db.scalar("SELECT sum(length(value)), count(*) FROM t") == 1000 + 4100 * size
    growth_mb = (vm_hwm_kb(pid) - before) / 1024
    # the second page would have asked for 4000 keys (80 MB)
    plan = explain(db, "SELECT sum(length(value)) FROM t", analyze=True)
    assert int(etcd_prop(plan, "Keys Fetched")) == 5100, show(plan)
    assert int(etcd_prop(plan, "Pages")) >= 6, show(plan)
    assert growth_mb < 64, f"backend peak RSS grew by {growth_mb:.1f} MB"


@pytest.fixture(scope="module")
def etcd_huge_values():
    """A private etcd that accepts requests of up to 80 MiB."""
    with private_etcd(["--max-request-bytes", str(80 << 20)]) as srv:
        yield srv


@pytest.mark.usefixtures("statement_mode")
def test_key_larger_than_an_answer_is_54000_naming_it(db, etcd_huge_values):
    etcd = etcd_huge_values
    kp = "huge/"
    etcd.put(kp + "a", "small")
    db.create_server("s", etcd.endpoint, request_timeout="60")
    db.create_table("t", "s", prefix=kp)
    # 65 MiB: more than etcd_fdw accepts in one answer (64 MiB)
    db.execute(f"INSERT INTO t VALUES ('{kp}big', repeat('x', 65 * 1024 * 1024))")
    db.execute(f"INSERT INTO t VALUES ('{kp}c', 'after')")
    e = expect_error(db.conn, "SELECT key, length(value) FROM t", sqlstate="54000",
                     contains=[f"{kp}big", '"t"'])
    assert "64 MiB" in err_text(e), err_text(e)
    assert_session_usable(db.conn)
    # what fits is still readable, and the key can be listed without its value
    assert db.rows(f"SELECT key FROM t ORDER BY key") == [(kp + "a",), (kp + "big",), (kp + "c",)]
    assert db.scalar(f"SELECT value FROM t WHERE key = '{kp}c'") == "after"


# --------------------------------------------------------------------------
# 6. invalid UTF-8 and NUL bytes
# --------------------------------------------------------------------------


def test_invalid_utf8_key(db, etcd, kp):
    bad = kp.encode() + b"k\xff"
    etcd.put_many([(kp + "a", "ok"), (bad, b"v"), (kp + "z", "ok")])
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", prefix=kp)
    db.create_table("tb", "s", columns="key bytea, value bytea", prefix=kp)
    e = expect_error(db.conn, "SELECT key, value FROM t", sqlstate="22021")
    text = err_text(e)
    assert "k\\xff" in text or "k\\\\xff" in text, text
    assert_session_usable(db.conn)
    # the same key through a bytea key column: the raw bytes
    rows = db.rows("SELECT key, value FROM tb ORDER BY key")
    assert [bytes(r[0]) for r in rows] == [(kp + "a").encode(), bad, (kp + "z").encode()]
    assert bytes(rows[1][1]) == b"v"
    # a point lookup of a valid key does not touch the bad one
    assert db.rows(f"SELECT value FROM t WHERE key = '{kp}a'") == [("ok",)]
    assert_session_usable(db.conn)


def test_invalid_bytes_in_value(db, etcd, kp):
    etcd.put_many([(kp + "nul", b"a\x00b"), (kp + "ff", b"\xfe\xff"), (kp + "ok", b"fine")])
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", prefix=kp)
    db.create_table("tb", "s", columns="key text, value bytea", prefix=kp)
    e = expect_error(db.conn, f"SELECT value FROM t WHERE key = '{kp}nul'", sqlstate="22021")
    assert kp + "nul" in err_text(e), err_text(e)
    assert_session_usable(db.conn)
    expect_error(db.conn, f"SELECT value FROM t WHERE key = '{kp}ff'", sqlstate="22021")
    assert_session_usable(db.conn)
    assert db.rows(f"SELECT value FROM t WHERE key = '{kp}ok'") == [("fine",)]
    rows = {k: bytes(v) for k, v in db.rows("SELECT key, value FROM tb")}
    assert rows == {kp + "nul": b"a\x00b", kp + "ff": b"\xfe\xff", kp + "ok": b"fine"}
    # keys only: the bad values are never decoded
    assert db.scalar("SELECT count(*) FROM t") == 3


def test_unused_columns_are_not_converted(db, etcd, kp):
    """Only the columns a query reads are converted: a bad key or value
    fails the queries that read it, not the ones that count rows or read
    metadata."""
    bad = kp.encode() + b"k\xff"
    etcd.put_many([(kp + "a", b"\xfe"), (bad, b"v")])
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", columns="key text, value text, version bigint", prefix=kp)
    assert db.scalar("SELECT count(*) FROM t") == 2
    assert db.rows("SELECT version FROM t") == [(1,), (1,)]
    assert db.scalar(f"SELECT count(*) FROM t WHERE key = '{kp}a'") == 1
    expect_error(db.conn, "SELECT key FROM t", sqlstate="22021")
    expect_error(db.conn, f"SELECT value FROM t WHERE key = '{kp}a'", sqlstate="22021")
    expect_error(db.conn, "SELECT t FROM t", sqlstate="22021")  # whole row
    expect_error(db.conn, "SELECT version FROM t WHERE value <> ''", sqlstate="22021")
    assert_session_usable(db.conn)


# --------------------------------------------------------------------------
# 7. column checks
# --------------------------------------------------------------------------


def test_unknown_column_refused(db, etcd):
    db.create_server("s", etcd.endpoint)
    expect_error(
        db.conn,
        "CREATE FOREIGN TABLE t (key text, value text, foo text) SERVER s OPTIONS (rowid_column 'key')",
        sqlstate="HV007",
        contains="foo",
    )
    assert db.scalar("SELECT count(*) FROM pg_class WHERE relname = 't'") == 0


def test_wrong_key_type_refused(db, etcd):
    db.create_server("s", etcd.endpoint)
    expect_error(
        db.conn,
        "CREATE FOREIGN TABLE t (key integer, value text) SERVER s OPTIONS (rowid_column 'key')",
        sqlstate="HV004",
    )
    expect_error(
        db.conn,
        "CREATE FOREIGN TABLE t (key text, version text) SERVER s OPTIONS (rowid_column 'key')",
        sqlstate="HV004",
    )


def test_rowid_column_must_be_key(db, etcd):
    db.create_server("s", etcd.endpoint)
    e = expect_error(
        db.conn,
        "CREATE FOREIGN TABLE t (key text, value text) SERVER s OPTIONS (rowid_column 'value')",
    )
    assert "rowid_column" in err_text(e), err_text(e)


def test_jsonb_value_column(db, etcd, kp):
    etcd.put_many([(kp + "j1", '{"a": "x", "n": 1}'), (kp + "j2", '{"a": "y", "n": [1, 2]}')])
    db.create_server("s", etcd.endpoint)
    db.create_table("t", "s", columns="key text, value jsonb", prefix=kp)
    assert db.rows("SELECT key, value->>'a' FROM t ORDER BY key") == [(kp + "j1", "x"), (kp + "j2", "y")]
    assert db.scalar("SELECT value FROM t WHERE value @> '{\"n\": [2]}'") == {"a": "y", "n": [1, 2]}
    etcd.put(kp + "j3", "not json")
    expect_error(db.conn, "SELECT value FROM t", sqlstate="22P02")
    assert_session_usable(db.conn)
