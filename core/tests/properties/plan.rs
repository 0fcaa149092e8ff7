//! The planner's data (`plan.rs`): pushed-down comparisons hold exactly
//! the keys they should, plans survive their text encoding (plans travel
//! through PostgreSQL as strings), decoding any other text never panics,
//! and EXPLAIN's key literals are well-formed.

use etcd_fdw_core::keyrange::{successor, KeyRange, KeySet};
use etcd_fdw_core::plan::{quote_key, CondOp, ModifyFlags, ParamCond, ScanPlan};
use etcd_fdw_core::scan::SortField;
use proptest::prelude::*;

use crate::{byte, cases, key, universe};

const OPS: [CondOp; 8] = [
    CondOp::Eq,
    CondOp::Lt,
    CondOp::Le,
    CondOp::Gt,
    CondOp::Ge,
    CondOp::Prefix,
    CondOp::In,
    CondOp::LikePrefix,
];

/// `k <op> v` as PostgreSQL evaluates it on bytes (for LIKE: whether `k`
/// may match, i.e. starts with the literal prefix; the clause is
/// rechecked).
fn holds(op: CondOp, k: &[u8], v: &[u8]) -> bool {
    match op {
        CondOp::Eq | CondOp::In => k == v,
        CondOp::Lt => k < v,
        CondOp::Le => k <= v,
        CondOp::Gt => k > v,
        CondOp::Ge => k >= v,
        CondOp::Prefix => k.starts_with(v),
        CondOp::LikePrefix => match etcd_fdw_core::keyrange::like_prefix(v) {
            Some((p, _)) => k.starts_with(&p),
            None => true,
        },
    }
}

fn range() -> impl Strategy<Value = KeyRange> {
    prop_oneof![
        key(3).prop_map(|k| KeyRange::single(&k)),
        key(3).prop_map(|p| KeyRange::prefix(&p)),
        (key(3), prop::option::of(key(3))).prop_map(|(a, b)| KeyRange::between(&a, b.as_deref())),
    ]
}

fn plan() -> impl Strategy<Value = ScanPlan> {
    let sort = prop::option::of((
        prop::sample::select(vec![
            SortField::Key,
            SortField::Value,
            SortField::CreateRevision,
            SortField::ModRevision,
            SortField::Version,
        ]),
        any::<bool>(),
    ));
    let params = prop::collection::vec(
        (prop::sample::select(OPS.to_vec()), any::<usize>())
            .prop_map(|(op, expr_index)| ParamCond { op, expr_index }),
        0..3,
    );
    // EXPLAIN texts: quoted keys and words, no control characters but
    // (to see them replaced) newlines.
    let pushed = prop::collection::vec("([^\\p{Cc}]|\n){0,16}", 0..3);
    (
        prop::collection::vec(range(), 0..4),
        params,
        sort,
        prop::option::of(any::<u64>()),
        (
            any::<bool>(),
            any::<i64>(),
            any::<bool>(),
            any::<u32>(),
            any::<bool>(),
        ),
        pushed,
        prop::collection::vec(any::<u16>(), 0..4),
    )
        .prop_map(
            |(
                ranges,
                params,
                sort,
                limit,
                (keys_only, revision, serializable, fetch_size, adaptive_fetch),
                pushed,
                unused,
            )| {
                ScanPlan {
                    keys: KeySet::from_ranges(ranges),
                    params,
                    sort,
                    limit,
                    keys_only,
                    revision,
                    serializable,
                    fetch_size,
                    adaptive_fetch,
                    pushed,
                    unused,
                    batch_size: (fetch_size % 3) * 64,
                    count_only: keys_only && limit.is_none(),
                    whole_range: adaptive_fetch && limit.is_none(),
                }
            },
        )
}

/// Text near an encoded plan: lines of one, shuffled, cut or altered.
fn plan_like_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("etcd_fdw scan 1".to_string()),
        "range [0-9a-fA-Fé+-]{0,5} [0-9a-fé-]{0,4}",
        "param [a-zA-Z]{0,2} [0-9-]{0,3}",
        "sort [a-z_]{0,8} (asc|desc|x)?",
        "limit [0-9-]{0,22}",
        "flags( [0-9-]{0,3}){0,6}",
        "unused( [0-9-]{0,6}){0,3}",
        "batch [0-9-]{0,6}",
        "count [01]?",
        "pushed .{0,8}",
        ".{0,10}",
    ];
    (prop::bool::weighted(0.9), prop::collection::vec(line, 0..8)).prop_map(|(header, ls)| {
        let body = ls.join("\n");
        if header {
            format!("etcd_fdw scan 1\n{body}")
        } else {
            body
        }
    })
}

proptest! {
    #![proptest_config(cases(256))]

    /// `CondOp::key_set` holds exactly the keys for which `key <op> v`
    /// holds (for any of the values of an IN list; NULL matches nothing;
    /// LIKE: the keys with the pattern's literal prefix), and `commute`
    /// swaps the sides.
    #[test]
    fn conditions_hold_their_keys(
        values in prop::collection::vec(prop::option::weighted(0.9, key(3)), 1..4),
        pattern in prop::collection::vec(prop_oneof![byte(), Just(b'%'), Just(b'_'), Just(b'\\')], 0..4),
    ) {
        let mut u = universe(3);
        u.retain(|k| !k.is_empty());
        for v in values.iter().flatten() {
            u.push(successor(v));
        }
        for op in OPS {
            let vals: Vec<Option<Vec<u8>>> = match op {
                CondOp::In => values.clone(),
                CondOp::LikePrefix => vec![Some(pattern.clone())],
                _ => vec![values[0].clone()],
            };
            let set = op.key_set(&vals);
            for k in &u {
                let want = vals.iter().flatten().any(|v| holds(op, k, v));
                prop_assert_eq!(set.contains(k), want, "key {:?} {} {:?}", k, op.name(), vals);
                if let Some(v) = vals[0].as_deref().filter(|_| op != CondOp::LikePrefix) {
                    // v <op> key  is  key <commute(op)> v
                    let swapped = match op {
                        CondOp::Lt => v < k.as_slice(),
                        CondOp::Le => v <= k.as_slice(),
                        CondOp::Gt => v > k.as_slice(),
                        CondOp::Ge => v >= k.as_slice(),
                        _ => holds(op, k, v),
                    };
                    prop_assert_eq!(holds(op.commute(), k, v), swapped, "{} commuted", op.name());
                }
            }
        }
    }

    /// A plan survives encode/decode (its EXPLAIN texts, made by
    /// `quote_key` and friends, have no control characters; a newline
    /// would come back as a space).
    #[test]
    fn plans_round_trip(p in plan()) {
        let text = p.encode();
        let back = ScanPlan::decode(&text);
        let mut want = p.clone();
        for t in &mut want.pushed {
            *t = t.replace('\n', " ");
        }
        prop_assert_eq!(back.as_ref(), Some(&want), "{}", text);
    }

    /// Decoding any text never panics; what decodes re-encodes to a plan
    /// that decodes the same, with normalised key ranges.
    #[test]
    fn decoding_anything_never_panics(s in prop_oneof![plan_like_text(), any::<String>()]) {
        if let Some(p) = ScanPlan::decode(&s) {
            let again = ScanPlan::decode(&p.encode());
            prop_assert_eq!(again.as_ref(), Some(&p));
        }
        let _ = ModifyFlags::decode(&s);
    }

    /// Modify flags round-trip; other texts are refused unless they are
    /// exactly what `encode` writes.
    #[test]
    fn modify_flags_round_trip(
        do_nothing in any::<bool>(),
        returning in any::<bool>(),
        tokens in prop::collection::vec(prop::sample::select(vec!["0", "1", "2", "", "x", "01"]), 0..4),
        junk in ".{0,6}",
    ) {
        let f = ModifyFlags { do_nothing, returning };
        prop_assert_eq!(ModifyFlags::decode(&f.encode()), Some(f));
        for text in [format!("etcd_fdw modify 1 {}", tokens.join(" ")), format!("{}{junk}", f.encode())] {
            if let Some(g) = ModifyFlags::decode(&text) {
                prop_assert_eq!(g.encode(), text);
            }
        }
    }

    /// EXPLAIN's key literal: quoted, no control character, quotes
    /// doubled, and the same as the key for printable UTF-8 keys.
    #[test]
    fn key_literals_are_well_formed(k in prop_oneof![any::<Vec<u8>>(), any::<String>().prop_map(String::into_bytes)]) {
        let q = quote_key(&k);
        prop_assert!(q.len() >= 2 && q.starts_with('\'') && q.ends_with('\''), "{}", q);
        prop_assert!(!q.chars().any(char::is_control), "{:?}", q);
        let inner = &q[1..q.len() - 1];
        prop_assert!(!inner.replace("''", "").contains('\''), "{:?}", q);
        if let Ok(s) = std::str::from_utf8(&k) {
            if !s.chars().any(char::is_control) && !s.contains('\\') {
                prop_assert_eq!(inner.replace("''", "'"), s);
            }
        }
    }
}
