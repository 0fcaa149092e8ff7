//! The key range algebra (`keyrange.rs`) against brute force: every claim
//! about which keys a range or set holds is checked key by key over all
//! keys of up to four bytes of [`ALPHABET`] (1555 keys, with 0x00 and 0xff)
//! plus the bounds at hand and their neighbours.
//!
//! `KeyRange::contains` is about every byte string, the empty one too;
//! emptiness, `KeySet` and `to_etcd` are about etcd's keys, which are never
//! empty, so those properties look at non-empty keys only.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use etcd_fdw_core::keyrange::{
    like_is_equality, like_prefix, prefix_end, successor, KeyRange, KeySet,
};
use proptest::prelude::*;

use crate::{byte, cases, key, universe, ALPHABET};

/// All keys of up to four bytes of the alphabet, the empty key included.
fn base_universe() -> &'static [Vec<u8>] {
    static U: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    U.get_or_init(|| universe(4))
}

/// The base universe plus, for every bound of `ranges`, the bound, its
/// successor and its prefix end: the keys where an off-by-one would show.
fn keys_around(ranges: &[&KeyRange], extra: &[&[u8]]) -> Vec<Vec<u8>> {
    around(base_universe(), ranges, extra)
}

fn around(base: &[Vec<u8>], ranges: &[&KeyRange], extra: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut set: Vec<Vec<u8>> = base.to_vec();
    let mut add = |k: &[u8]| {
        set.push(k.to_vec());
        set.push(successor(k));
        if let Some(e) = prefix_end(k) {
            set.push(e);
        }
        if let Some((_, init)) = k.split_last() {
            set.push(init.to_vec());
        }
    };
    for r in ranges {
        add(&r.start);
        if let Some(e) = &r.end {
            add(e);
        }
    }
    for k in extra {
        add(k);
    }
    set.sort();
    set.dedup();
    set
}

/// [`keys_around`] without the empty key: the keys etcd can hold.
fn etcd_keys_around(ranges: &[&KeyRange], extra: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut keys = keys_around(ranges, extra);
    keys.retain(|k| !k.is_empty());
    keys
}

/// A prefix: often empty or all 0xff (no upper bound).
fn prefix() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => key(4),
        1 => (0..4usize).prop_map(|n| vec![0xff; n]),
        1 => key(2).prop_map(|mut k| { k.extend([0xff, 0xff]); k }),
    ]
}

/// A range from one of `KeyRange`'s constructors (possibly empty).
fn range() -> impl Strategy<Value = KeyRange> {
    prop_oneof![
        Just(KeyRange::all()),
        key(4).prop_map(|k| KeyRange::single(&k)),
        prefix().prop_map(|p| KeyRange::prefix(&p)),
        (key(4), key(4)).prop_map(|(a, b)| KeyRange::between(&a, Some(&b))),
        key(4).prop_map(|a| KeyRange::between(&a, None)),
        (key(4), any::<bool>()).prop_map(|(k, i)| KeyRange::from(&k, i)),
        (key(4), any::<bool>()).prop_map(|(k, i)| KeyRange::to(&k, i)),
    ]
}

/// Up to `max` ranges: independent ones, or ones whose bounds come from a
/// handful of short keys (so ranges often touch, overlap or nest), or a
/// chain of adjacent ranges `[k0, k1), [k1, k2), ...` in any order.
fn ranges(max: usize) -> impl Strategy<Value = Vec<KeyRange>> {
    let short = || prop_oneof![key(1), Just(vec![0xff, 0xff])];
    let close = (short(), prop::option::weighted(0.8, short()))
        .prop_map(|(a, b)| KeyRange::between(&a, b.as_deref()));
    prop_oneof![
        prop::collection::vec(range(), 0..=max),
        prop::collection::vec(close, 0..=max),
        (prop::collection::vec(key(2), 1..=max + 1), any::<bool>())
            .prop_map(|(mut ks, open)| {
                ks.sort();
                ks.dedup();
                let mut rs: Vec<KeyRange> = ks
                    .windows(2)
                    .map(|w| KeyRange::between(&w[0], Some(&w[1])))
                    .collect();
                if open {
                    rs.push(KeyRange::between(ks.last().unwrap(), None));
                }
                rs
            })
            .prop_shuffle(),
    ]
}

fn set() -> impl Strategy<Value = KeySet> {
    prop_oneof![
        1 => Just(KeySet::all()),
        1 => Just(KeySet::empty()),
        4 => ranges(4).prop_map(KeySet::from_ranges),
        2 => prop::collection::vec(key(3), 0..5)
            .prop_map(|ks| KeySet::from_keys(ks.iter().map(Vec::as_slice))),
    ]
}

/// The invariants `KeySet` keeps: ranges non-empty, sorted, disjoint and
/// not even adjacent (so the form is canonical), only the last unbounded.
fn assert_normal(s: &KeySet) -> Result<(), TestCaseError> {
    let rs = s.ranges();
    for r in rs {
        prop_assert!(!r.is_empty(), "empty range {:?} in {:?}", r, s);
    }
    for w in rs.windows(2) {
        let end = w[0].end.as_ref();
        prop_assert!(end.is_some(), "unbounded range before another in {:?}", s);
        prop_assert!(
            end.is_some_and(|e| e < &w[1].start),
            "ranges overlap or touch in {:?}",
            s
        );
    }
    Ok(())
}

/// What etcd's range request `(key, range_end)` selects: an empty
/// `range_end` is the single key, `"\0"` every key >= `key`, otherwise
/// `[key, range_end)`.  etcd has no empty key.
fn etcd_selects(key: &[u8], range_end: &[u8], k: &[u8]) -> bool {
    if k.is_empty() {
        return false;
    }
    match range_end {
        [] => k == key,
        [0] => k >= key,
        end => key <= k && k < end,
    }
}

/// A LIKE pattern token.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Tok {
    Lit(u8),
    /// `%`
    Any,
    /// `_`
    One,
}

/// Parse a LIKE pattern with backslash escapes; `None` for a dangling
/// escape at the end (PostgreSQL raises an error).
fn parse_like(p: &[u8]) -> Option<Vec<Tok>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < p.len() {
        out.push(match p[i] {
            b'\\' => {
                i += 1;
                Tok::Lit(*p.get(i)?)
            }
            b'%' => Tok::Any,
            b'_' => Tok::One,
            c => Tok::Lit(c),
        });
        i += 1;
    }
    Some(out)
}

/// Brute-force LIKE (bytes; `_` is one byte).
fn like_matches(toks: &[Tok], s: &[u8]) -> bool {
    match toks.split_first() {
        None => s.is_empty(),
        Some((Tok::Lit(c), rest)) => s.first() == Some(c) && like_matches(rest, &s[1..]),
        Some((Tok::One, rest)) => !s.is_empty() && like_matches(rest, &s[1..]),
        Some((Tok::Any, rest)) => (0..=s.len()).any(|i| like_matches(rest, &s[i..])),
    }
}

/// A LIKE pattern over the alphabet, wildcards and backslashes.
fn pattern() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => byte(),
            2 => Just(b'%'),
            1 => Just(b'_'),
            2 => Just(b'\\'),
        ],
        0..7,
    )
}

/// A key matching `toks`, filling each `%` and `_` from `fill`.
fn instantiate(toks: &[Tok], fill: &[u8]) -> Vec<u8> {
    let mut fill = fill.iter().copied().cycle();
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Lit(c) => out.push(*c),
            Tok::One => out.push(fill.next().unwrap_or(b'a')),
            Tok::Any => {
                for _ in 0..(i % 3) {
                    out.push(fill.next().unwrap_or(b'a'));
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(cases(256))]

    /// Every constructor holds exactly the keys its doc comment says.
    #[test]
    fn constructors_hold_what_they_say(k in key(4), p in prefix(), a in key(4), b in key(4)) {
        let single = KeyRange::single(&k);
        let pre = KeyRange::prefix(&p);
        let between = KeyRange::between(&a, Some(&b));
        let open = KeyRange::between(&a, None);
        let gt = KeyRange::from(&k, false);
        let ge = KeyRange::from(&k, true);
        let lt = KeyRange::to(&k, false);
        let le = KeyRange::to(&k, true);
        let all = [&single, &pre, &between, &open, &gt, &ge, &lt, &le];
        for u in keys_around(&all, &[&k, &p, &a, &b]) {
            let u = u.as_slice();
            prop_assert!(KeyRange::all().contains(u));
            prop_assert_eq!(single.contains(u), u == k.as_slice(), "single {:?} / {:?}", k, u);
            prop_assert_eq!(pre.contains(u), u.starts_with(&p), "prefix {:?} / {:?}", p, u);
            prop_assert_eq!(between.contains(u), a.as_slice() <= u && u < b.as_slice());
            prop_assert_eq!(open.contains(u), a.as_slice() <= u);
            prop_assert_eq!(gt.contains(u), u > k.as_slice(), "> {:?} / {:?}", k, u);
            prop_assert_eq!(ge.contains(u), u >= k.as_slice());
            prop_assert_eq!(lt.contains(u), u < k.as_slice());
            prop_assert_eq!(le.contains(u), u <= k.as_slice(), "<= {:?} / {:?}", k, u);
        }
    }

    /// `successor(k)` is greater than `k`, and no key lies between them.
    #[test]
    fn successor_is_the_next_key(k in key(4)) {
        let s = successor(&k);
        prop_assert!(s > k);
        for u in keys_around(&[], &[&k]) {
            prop_assert!(!(k < u && u < s), "{:?} lies between {:?} and its successor", u, k);
        }
    }

    /// `prefix_end(p)` is the smallest key above every key starting with
    /// `p`, or `None` (no bound) exactly for empty and all-0xff prefixes.
    #[test]
    fn prefix_end_is_the_tight_bound(p in prefix()) {
        let end = prefix_end(&p);
        prop_assert_eq!(end.is_none(), p.iter().all(|&c| c == 0xff), "{:?} -> {:?}", p, end);
        let mut probe = p.clone();
        probe.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        for u in keys_around(&[], &[&p, &probe]) {
            let below = end.as_ref().is_none_or(|e| &u < e);
            if u.starts_with(&p) {
                prop_assert!(below, "{:?} starts with {:?} but is not below {:?}", u, p, end);
            } else if u > p {
                prop_assert!(!below, "{:?} does not start with {:?} but is below {:?}", u, p, end);
            }
        }
    }

    /// `KeyRange::intersect` holds the keys both ranges hold.
    #[test]
    fn range_intersection_is_and(r1 in range(), r2 in range()) {
        let both = r1.intersect(&r2);
        for u in keys_around(&[&r1, &r2], &[]) {
            prop_assert_eq!(both.contains(&u), r1.contains(&u) && r2.contains(&u), "key {:?}", u);
        }
    }

    /// `is_empty` exactly when no etcd key is held (the brute-force keys
    /// include the least key a non-empty range holds: its start, or "\0"
    /// for an empty start); `as_single_key` exactly when one key is.
    #[test]
    fn emptiness_and_single_keys(r in range()) {
        let held: Vec<Vec<u8>> = etcd_keys_around(&[&r], &[])
            .into_iter()
            .filter(|u| r.contains(u))
            .collect();
        prop_assert_eq!(r.is_empty(), held.is_empty(), "{:?} holds {:?}", r, held);
        let one = r.end.as_ref() == Some(&successor(&r.start));
        prop_assert_eq!(r.as_single_key().is_some(), one, "{:?}", r);
        if r.is_empty() {
            // nothing more to hold
        } else if let Some(k) = r.as_single_key() {
            prop_assert_eq!(&held, &vec![k.to_vec()]);
        } else {
            // Two byte strings at least (one may be the empty key, as in
            // `["", "\0\0")`).
            let strings = keys_around(&[&r], &[]).into_iter().filter(|u| r.contains(u)).count();
            prop_assert!(strings > 1, "{:?} holds {:?} but is no single key", r, held);
        }
    }

    /// `KeySet::from_ranges` normalises (sorted, disjoint, non-empty,
    /// canonical) without changing which keys are held.
    #[test]
    fn from_ranges_normalises(rs in ranges(6)) {
        let s = KeySet::from_ranges(rs.clone());
        assert_normal(&s)?;
        let refs: Vec<&KeyRange> = rs.iter().collect();
        for u in etcd_keys_around(&refs, &[]) {
            prop_assert_eq!(s.contains(&u), rs.iter().any(|r| r.contains(&u)), "key {:?}", u);
        }
        // Normalising is idempotent and the order of the input is irrelevant.
        prop_assert_eq!(KeySet::from_ranges(s.ranges().to_vec()), s.clone());
        let mut rev = rs.clone();
        rev.reverse();
        prop_assert_eq!(KeySet::from_ranges(rev), s.clone());
        prop_assert_eq!(s.is_empty(), rs.iter().all(KeyRange::is_empty));
    }

    /// Set intersection and union are boolean and/or, stay normal, and
    /// obey the usual identities.
    #[test]
    fn set_algebra_is_boolean(a in set(), b in set()) {
        let and = a.intersect(&b);
        let or = a.union(&b);
        assert_normal(&and)?;
        assert_normal(&or)?;
        let refs: Vec<&KeyRange> = a.ranges().iter().chain(b.ranges()).collect();
        for u in etcd_keys_around(&refs, &[]) {
            prop_assert_eq!(and.contains(&u), a.contains(&u) && b.contains(&u), "and, key {:?}", u);
            prop_assert_eq!(or.contains(&u), a.contains(&u) || b.contains(&u), "or, key {:?}", u);
        }
        prop_assert_eq!(&and, &b.intersect(&a));
        prop_assert_eq!(&or, &b.union(&a));
        prop_assert_eq!(&a.intersect(&KeySet::all()), &a);
        prop_assert!(a.intersect(&KeySet::empty()).is_empty());
        prop_assert_eq!(&a.union(&KeySet::empty()), &a);
        prop_assert!(a.union(&KeySet::all()).is_all());
        prop_assert_eq!(&a.intersect(&a), &a);
        prop_assert_eq!(&a.union(&a), &a);
    }

    /// An IN list holds exactly its distinct keys, one single-key range
    /// each (and `point_count` counts them) unless two keys are adjacent
    /// (`k` and `k\0`), which merge into one range; `point_count` is
    /// `Some` exactly when every range holds one key.
    #[test]
    fn in_lists_and_point_counts(ks in prop::collection::vec(key(4), 0..6), other in set()) {
        let s = KeySet::from_keys(ks.iter().map(Vec::as_slice));
        // etcd has no empty key: an IN list holding '' does not hold it.
        let distinct: BTreeSet<&Vec<u8>> = ks.iter().filter(|k| !k.is_empty()).collect();
        let adjacent = distinct.iter().any(|k| distinct.contains(&successor(k)));
        if adjacent {
            prop_assert_eq!(s.point_count(), None);
        } else {
            prop_assert_eq!(s.point_count(), Some(distinct.len()));
            let starts: Vec<&Vec<u8>> = s.ranges().iter().map(|r| &r.start).collect();
            prop_assert_eq!(starts, distinct.iter().copied().collect::<Vec<_>>());
        }
        let extra: Vec<&[u8]> = ks.iter().map(Vec::as_slice).collect();
        for u in etcd_keys_around(&[], &extra) {
            prop_assert_eq!(s.contains(&u), distinct.contains(&u));
        }
        for set in [&s, &other] {
            match set.point_count() {
                Some(n) => {
                    prop_assert_eq!(n, set.ranges().len());
                    prop_assert!(set.ranges().iter().all(|r| r.as_single_key().is_some()));
                }
                None => prop_assert!(set.ranges().iter().any(|r| r.as_single_key().is_none())),
            }
        }
    }

    /// `to_etcd` asks etcd (with its `[key, range_end)` convention: empty
    /// end = one key, "\0" = no end) for exactly the keys the range holds,
    /// for every range a `KeySet` keeps (the ones scans and commits send).
    #[test]
    fn to_etcd_selects_what_contains_holds(rs in ranges(4)) {
        let s = KeySet::from_ranges(rs);
        for r in s.ranges() {
            let (key, end) = r.to_etcd();
            prop_assert!(!key.is_empty(), "etcd has no empty key");
            for u in etcd_keys_around(&[r], &[]) {
                prop_assert_eq!(
                    etcd_selects(&key, &end, &u),
                    r.contains(&u),
                    "{:?} sent as ({:?}, {:?}), key {:?}",
                    r, key, end, u
                );
            }
        }
    }

    /// `like_prefix` / `like_is_equality` agree with a brute-force LIKE:
    /// every match starts with the prefix, an equality pattern matches only
    /// its literal, and an exact `prefix%` pattern matches every key with
    /// the prefix.
    #[test]
    fn like_patterns_agree_with_brute_force(p in pattern(), fill in prop::collection::vec(byte(), 0..6)) {
        let toks = parse_like(&p);
        let got = like_prefix(&p);
        let Some(toks) = toks else {
            // A dangling escape (PostgreSQL raises an error when it matches
            // the pattern): `None`, or a prefix that is never exact, so the
            // clause is rechecked and the error raised.
            prop_assert!(got.as_ref().is_none_or(|(_, exact)| !exact), "{:?} -> {:?}", p, got);
            return Ok(());
        };
        prop_assert!(got.is_some(), "{:?}", p);
        let Some((prefix, exact)) = got else {
            return Ok(());
        };
        let literal: Vec<u8> = toks
            .iter()
            .map_while(|t| match t { Tok::Lit(c) => Some(*c), _ => None })
            .collect();
        prop_assert_eq!(&prefix, &literal, "literal prefix of {:?}", p);
        let equality = toks.iter().all(|t| matches!(t, Tok::Lit(_)));
        prop_assert_eq!(like_is_equality(&p), equality, "{:?}", p);
        let matching = instantiate(&toks, &fill);
        prop_assert!(like_matches(&toks, &matching));
        let range = KeyRange::prefix(&prefix);
        static SMALL: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
        let small = SMALL.get_or_init(|| universe(3));
        for u in around(small, &[&range], &[&matching, &prefix]) {
            let m = like_matches(&toks, &u);
            if m {
                prop_assert!(u.starts_with(&prefix), "{:?} matches {:?} but lacks prefix {:?}", u, p, prefix);
            }
            if equality {
                prop_assert_eq!(m, u == prefix, "equality pattern {:?}, key {:?}", p, u);
            } else if exact {
                prop_assert_eq!(m, range.contains(&u), "exact prefix pattern {:?}, key {:?}", p, u);
            }
        }
        // `exact` for a wildcard pattern means: only `%` after the prefix.
        if !equality {
            let rest_all_any = toks[literal.len()..].iter().all(|t| *t == Tok::Any);
            prop_assert_eq!(exact, rest_all_any, "{:?}", p);
        }
    }
}

/// The alphabet has the edges the properties rely on.
#[test]
fn alphabet_has_the_edges() {
    assert!(ALPHABET.contains(&0x00) && ALPHABET.contains(&0xff));
    assert_eq!(base_universe().len(), 1 + 6 + 36 + 216 + 1296);
}
