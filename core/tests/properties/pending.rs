//! The pending writes of a transaction (`pending.rs`) against a model: the
//! rows the transaction sees are a map key -> (value, lease) over etcd's
//! rows, and each savepoint keeps the view it started from.  After every
//! statement a scan through the overlay (both orders, any key set) shows
//! the model's view, and the commit transaction, applied to etcd's rows
//! the way etcd applies a transaction, leaves exactly that view.

use std::collections::BTreeMap;

use etcd_fdw_core::keyrange::{KeyRange, KeySet};
use etcd_fdw_core::pending::{
    CommitConflict, CommitOp, CommitTxn, Guard, Overlay, Pending, PendingError, PendingTxn,
    ReadFrom, Step,
};
use etcd_fdw_core::writes::TxnLimits;
use proptest::prelude::*;

use crate::cases;

/// The keys statements write: the edges 0x00 and 0xff, prefixes of each
/// other, neighbours.
const KEYS: [&[u8]; 14] = [
    b"\x00",
    b"\x00\x00",
    b"\x01",
    b"a",
    b"a\x00",
    b"a/1",
    b"a/2",
    b"ab",
    b"b",
    b"b/1",
    b"\xfe",
    b"\xff",
    b"\xff\x00",
    b"\xff\xff",
];

/// etcd's rows: value, mod_revision, lease.
#[derive(Clone, Debug, PartialEq)]
struct EtcdRow {
    value: Vec<u8>,
    modr: i64,
    lease: i64,
}

type Base = BTreeMap<Vec<u8>, EtcdRow>;
/// What the transaction sees: value and lease of every row.
type View = BTreeMap<Vec<u8>, (Vec<u8>, i64)>;

/// One statement (keys are indices into [`KEYS`]).
#[derive(Clone, Debug)]
enum Op {
    /// INSERT (`by_read`: ON CONFLICT DO NOTHING that found no row).
    Insert {
        key: usize,
        lease: Option<i64>,
        by_read: bool,
    },
    /// UPDATE of the value (unless `keep_value`) and/or lease (`None`:
    /// kept).
    Update {
        key: usize,
        keep_value: bool,
        lease: Option<i64>,
    },
    Delete {
        key: usize,
    },
    /// UPDATE of the key: delete the old row, insert the new one.
    Rename {
        key: usize,
        to: usize,
        keep_value: bool,
    },
    /// An INSERT of a row the transaction already put: refused.
    DuplicateInsert {
        key: usize,
    },
    Truncate(KeyRange),
    Savepoint,
    /// RELEASE SAVEPOINT.
    Release,
    /// ROLLBACK TO SAVEPOINT (the savepoint stays).
    RollbackTo,
    /// A subtransaction that failed (rolled back and gone).
    Abort,
}

fn key_index() -> impl Strategy<Value = usize> {
    0..KEYS.len()
}

fn bound() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        key_index().prop_map(|i| KEYS[i].to_vec()),
        prop::collection::vec(crate::byte(), 0..=2),
    ]
}

/// A truncated range: a table's range (prefix, key range) or all keys.
fn trunc_range() -> impl Strategy<Value = KeyRange> {
    prop_oneof![
        Just(KeyRange::all()),
        prop::collection::vec(crate::byte(), 0..=2).prop_map(|p| KeyRange::prefix(&p)),
        (bound(), prop::option::of(bound())).prop_map(|(a, b)| KeyRange::between(&a, b.as_deref())),
        key_index().prop_map(|i| KeyRange::single(KEYS[i])),
    ]
}

fn lease() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![Just(None), Just(Some(0)), Just(Some(7)), Just(Some(8))]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key_index(), lease(), any::<bool>())
            .prop_map(|(key, lease, by_read)| Op::Insert { key, lease, by_read }),
        4 => (key_index(), any::<bool>(), lease())
            .prop_map(|(key, keep_value, lease)| Op::Update { key, keep_value, lease }),
        3 => key_index().prop_map(|key| Op::Delete { key }),
        2 => (key_index(), key_index(), any::<bool>())
            .prop_map(|(key, to, keep_value)| Op::Rename { key, to, keep_value }),
        1 => key_index().prop_map(|key| Op::DuplicateInsert { key }),
        2 => trunc_range().prop_map(Op::Truncate),
        2 => Just(Op::Savepoint),
        1 => Just(Op::Release),
        1 => Just(Op::RollbackTo),
        1 => Just(Op::Abort),
    ]
}

fn base() -> impl Strategy<Value = Base> {
    prop::collection::vec(
        (any::<bool>(), prop_oneof![Just(0i64), Just(3)]),
        KEYS.len(),
    )
    .prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .filter(|(_, (present, _))| *present)
            .map(|(i, (_, lease))| {
                let row = EtcdRow {
                    value: format!("e{i}").into_bytes(),
                    modr: 100 + i as i64,
                    lease,
                };
                (KEYS[i].to_vec(), row)
            })
            .collect()
    })
}

/// The key set a scan reads (the overlay only merges what is in it).
fn scan_keys() -> impl Strategy<Value = KeySet> {
    prop::collection::vec(trunc_range(), 0..3).prop_map(KeySet::from_ranges)
}

/// A scan of `keys`: etcd's rows in them (in scan order) merged with the
/// overlay, as the FDW's scan does.
fn scan_through(
    p: &PendingTxn,
    base: &Base,
    keys: &KeySet,
    desc: bool,
) -> Result<Vec<(Vec<u8>, (Vec<u8>, i64))>, TestCaseError> {
    let mut rows: Vec<(&Vec<u8>, &EtcdRow)> =
        base.iter().filter(|(k, _)| keys.contains(k)).collect();
    if desc {
        rows.reverse();
    }
    let mut ov: Overlay = p.overlay(keys, desc);
    let mut out = Vec::new();
    let mut i = 0;
    for _ in 0..1000 {
        match ov.step(rows.get(i).map(|(k, _)| k.as_slice())) {
            Step::Etcd => {
                let (k, r) = rows[i];
                out.push((k.clone(), (r.value.clone(), r.lease)));
                i += 1;
            }
            Step::SkipEtcd => i += 1,
            Step::Merge { value, lease } => {
                let (k, r) = rows[i];
                out.push((
                    k.clone(),
                    (
                        value.unwrap_or_else(|| r.value.clone()),
                        lease.unwrap_or(r.lease),
                    ),
                ));
                i += 1;
            }
            Step::Own { key, value, lease } => {
                prop_assert!(
                    lease.is_some(),
                    "a row of the transaction's own without lease: {:?}",
                    key
                );
                prop_assert!(keys.contains(&key), "{:?} is outside the scan", key);
                out.push((key, (value, lease.unwrap_or(0))));
            }
            Step::Done => {
                prop_assert_eq!(i, rows.len(), "etcd rows left unread");
                return Ok(out);
            }
        }
    }
    prop_assert!(false, "the overlay does not end");
    Ok(out)
}

/// The view restricted to `keys`, in scan order.
fn view_in(view: &View, keys: &KeySet, desc: bool) -> Vec<(Vec<u8>, (Vec<u8>, i64))> {
    let mut v: Vec<_> = view
        .iter()
        .filter(|(k, _)| keys.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if desc {
        v.reverse();
    }
    v
}

/// What etcd's `(key, range_end)` selects ("" = one key, "\0" = no end).
fn etcd_selects(key: &[u8], range_end: &[u8], k: &[u8]) -> bool {
    match range_end {
        [] => k == key,
        [0] => k >= key,
        end => key <= k && k < end,
    }
}

/// Apply the commit transaction to `base` as etcd would: every compare
/// must hold (etcd is unchanged), no key may be written twice or inside a
/// range the same transaction deletes (etcd refuses such a transaction),
/// a put that keeps the value or lease needs the key to exist, and range
/// deletes go through `to_etcd`.
fn apply(c: &CommitTxn, base: &Base) -> Result<View, TestCaseError> {
    let mut after: View = base
        .iter()
        .map(|(k, r)| (k.clone(), (r.value.clone(), r.lease)))
        .collect();
    let mut written: Vec<&[u8]> = Vec::new();
    let mut deleted: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut pieces: Vec<&KeyRange> = Vec::new();
    for op in &c.ops {
        let (key, guard) = match op {
            CommitOp::Put { key, guard, .. } | CommitOp::Delete { key, guard } => (key, guard),
            CommitOp::DeleteRange(r) => {
                prop_assert!(!r.is_empty(), "an empty range delete: {:?}", r);
                deleted.push(r.to_etcd());
                pieces.push(r);
                continue;
            }
        };
        prop_assert!(
            !written.contains(&key.as_slice()),
            "{:?} twice in one txn",
            key
        );
        written.push(key);
        let cur = base.get(key);
        match guard {
            Guard::Absent { .. } => {
                prop_assert!(cur.is_none(), "{:?} guarded absent, but exists", key)
            }
            Guard::ModRevision(r) => prop_assert_eq!(cur.map(|r| r.modr), Some(*r), "{:?}", key),
            Guard::None => {}
        }
    }
    for (k, e) in &deleted {
        for w in &written {
            prop_assert!(
                !etcd_selects(k, e, w),
                "{:?} is written and range-deleted",
                w
            );
        }
    }
    pieces.sort_by(|a, b| a.start.cmp(&b.start));
    for w in pieces.windows(2) {
        prop_assert!(
            w[0].end.as_ref().is_some_and(|e| *e <= w[1].start),
            "range deletes overlap: {:?}",
            w
        );
    }
    for (k, e) in &deleted {
        after.retain(|key, _| !etcd_selects(k, e, key));
    }
    for op in &c.ops {
        match op {
            CommitOp::Put {
                key, value, lease, ..
            } => {
                let old = base.get(key);
                prop_assert!(
                    (value.is_some() && lease.is_some()) || old.is_some(),
                    "put of {:?} keeps what etcd does not have",
                    key
                );
                let v = value
                    .clone()
                    .or_else(|| old.map(|r| r.value.clone()))
                    .unwrap_or_default();
                let l = lease.or_else(|| old.map(|r| r.lease)).unwrap_or(0);
                after.insert(key.clone(), (v, l));
            }
            CommitOp::Delete { key, .. } => {
                after.remove(key);
            }
            CommitOp::DeleteRange(_) => {}
        }
    }
    Ok(after)
}

/// Run the statements, checking the overlay after each; returns the
/// pending writes and the final view.
fn run(base: &Base, ops: &[Op], keys: &KeySet) -> Result<(PendingTxn, View, bool), TestCaseError> {
    let mut view: View = base
        .iter()
        .map(|(k, r)| (k.clone(), (r.value.clone(), r.lease)))
        .collect();
    let mut saved: Vec<View> = Vec::new();
    let mut level = 1u32;
    let mut p = PendingTxn::new();
    let mut truncated = false;
    for (step, op) in ops.iter().enumerate() {
        let value = format!("v{step}").into_bytes();
        let read = |p: &PendingTxn, k: &[u8]| match p.get(k) {
            Some(_) => ReadFrom::Pending,
            None => ReadFrom::Etcd {
                mod_revision: base.get(k).map_or(0, |r| r.modr),
            },
        };
        match op.clone() {
            Op::Insert {
                key,
                lease,
                by_read,
            } => {
                let k = KEYS[key];
                if view.contains_key(k) {
                    continue;
                }
                p.insert(k, value.clone(), lease, level, by_read).unwrap();
                view.insert(k.to_vec(), (value, lease.unwrap_or(0)));
            }
            Op::Update {
                key,
                keep_value,
                lease,
            } => {
                let k = KEYS[key];
                let Some((old_value, old_lease)) = view.get(k).cloned() else {
                    continue;
                };
                let r = read(&p, k);
                let state = Pending::Put {
                    value: (!keep_value).then(|| value.clone()),
                    lease,
                };
                p.change(k, r, state, level).unwrap();
                let v = if keep_value { old_value } else { value };
                view.insert(k.to_vec(), (v, lease.unwrap_or(old_lease)));
            }
            Op::Delete { key } => {
                let k = KEYS[key];
                if !view.contains_key(k) {
                    continue;
                }
                let r = read(&p, k);
                p.change(k, r, Pending::Deleted, level).unwrap();
                view.remove(k);
            }
            Op::Rename {
                key,
                to,
                keep_value,
            } => {
                let (k, to) = (KEYS[key], KEYS[to]);
                let Some((old_value, old_lease)) = view.get(k).cloned() else {
                    continue;
                };
                if view.contains_key(to) {
                    continue;
                }
                // The FDW reads the old row's value and lease for the new key.
                let v = if keep_value { old_value } else { value };
                let r = read(&p, k);
                p.change(k, r, Pending::Deleted, level).unwrap();
                p.insert(to, v.clone(), Some(old_lease), level, false)
                    .unwrap();
                view.remove(k);
                view.insert(to.to_vec(), (v, old_lease));
            }
            Op::DuplicateInsert { key } => {
                let k = KEYS[key];
                if !matches!(p.get(k), Some(Pending::Put { .. })) {
                    continue;
                }
                let before = p.commit().map(|c| c.ops);
                prop_assert_eq!(
                    p.insert(k, value, None, level, false),
                    Err(PendingError::DuplicateKey(k.to_vec()))
                );
                prop_assert_eq!(
                    p.commit().map(|c| c.ops),
                    before,
                    "a refused insert changed something"
                );
            }
            Op::Truncate(r) => {
                p.truncate(r.clone(), level);
                view.retain(|k, _| !r.contains(k));
                truncated = true;
            }
            Op::Savepoint => {
                saved.push(view.clone());
                level += 1;
            }
            Op::Release => {
                if level == 1 {
                    continue;
                }
                p.release(level);
                saved.pop();
                level -= 1;
            }
            Op::RollbackTo => {
                if level == 1 {
                    continue;
                }
                p.rollback_to(level);
                view = saved.last().cloned().unwrap_or_default();
            }
            Op::Abort => {
                if level == 1 {
                    continue;
                }
                p.rollback_to(level);
                view = saved.pop().unwrap_or_default();
                level -= 1;
            }
        }
        check_step(&p, base, &view, keys, truncated)
            .map_err(|e| TestCaseError::fail(format!("after step {step} ({op:?}): {e}")))?;
    }
    Ok((p, view, truncated))
}

/// What must hold after every statement.
fn check_step(
    p: &PendingTxn,
    base: &Base,
    view: &View,
    keys: &KeySet,
    truncated: bool,
) -> Result<(), TestCaseError> {
    for desc in [false, true] {
        prop_assert_eq!(
            scan_through(p, base, &KeySet::all(), desc)?,
            view_in(view, &KeySet::all(), desc)
        );
        prop_assert_eq!(
            scan_through(p, base, keys, desc)?,
            view_in(view, keys, desc)
        );
    }
    // What ON CONFLICT DO NOTHING reads to decide whether a row exists.
    for k in KEYS {
        let exists = match p.get(k) {
            Some(Pending::Put { .. }) => true,
            Some(Pending::Deleted) => false,
            None => base.contains_key(k) && !p.in_truncated(k),
        };
        prop_assert_eq!(exists, view.contains_key(k), "{:?}", k);
    }
    // A scan the transaction does not touch may skip the overlay.
    if !p.touches(keys) {
        prop_assert!(p.overlay(keys, false).is_empty());
        let etcd: View = base
            .iter()
            .map(|(k, r)| (k.clone(), (r.value.clone(), r.lease)))
            .collect();
        prop_assert_eq!(view_in(view, keys, false), view_in(&etcd, keys, false));
    }
    // The size checks: fits agrees with the exact cost, which bounds the
    // commit's (and is it, without truncation).
    for (max_ops, max_bytes) in [
        (1, 10_000),
        (4, 10_000),
        (6, 400),
        (200, 150),
        (200, 100_000),
    ] {
        let lim = TxnLimits { max_ops, max_bytes };
        prop_assert_eq!(p.fits(&lim).is_ok(), p.cost().within(&lim));
    }
    let commit = p.commit();
    let cost = commit.as_ref().map(CommitTxn::cost).unwrap_or_default();
    prop_assert!(
        p.cost().ops >= cost.ops && p.cost().bytes >= cost.bytes,
        "{:?} < {:?}",
        p.cost(),
        cost
    );
    if !truncated {
        // (With nothing to send, `cost` may still count the request's
        // framing.)
        match &commit {
            Some(_) => prop_assert_eq!(p.cost(), cost),
            None => prop_assert_eq!(p.cost().ops, 0),
        }
    }
    if p.is_empty() {
        prop_assert!(commit.is_none());
    }
    // Committing now would leave etcd as the transaction sees it.
    let after = match &commit {
        Some(c) => apply(c, base)?,
        None => base
            .iter()
            .map(|(k, r)| (k.clone(), (r.value.clone(), r.lease)))
            .collect(),
    };
    prop_assert_eq!(&after, view);
    Ok(())
}

/// The conflict a failed commit reports when exactly the `i`-th guarded
/// key changed in etcd.
fn expected_conflict(guarded: &[(&[u8], Guard)], i: usize) -> CommitConflict {
    let (key, guard) = guarded[i];
    match guard {
        Guard::Absent {
            decided_by_read: false,
        } => CommitConflict::KeyExists(key.to_vec()),
        _ => CommitConflict::Changed(key.to_vec()),
    }
}

proptest! {
    #![proptest_config(cases(256))]

    /// Random transactions against the model: after every statement the
    /// overlay shows the model's view (any key set, both orders), the size
    /// checks agree, and the commit transaction would leave etcd as the
    /// transaction sees it.  When one guarded key changes in etcd before
    /// the commit, the failure names it.
    #[test]
    fn transactions_match_the_model(
        base in base(),
        ops in prop::collection::vec(op(), 0..40),
        keys in scan_keys(),
        changed in any::<prop::sample::Index>(),
    ) {
        let (p, _view, _) = run(&base, &ops, &keys)?;
        let Some(c) = p.commit() else {
            return Ok(());
        };
        let guarded = c.guarded();
        for (k, g) in &guarded {
            prop_assert!(*g != Guard::None);
            let has_op = c.ops.iter().any(|o| matches!(o,
                CommitOp::Put { key, .. } | CommitOp::Delete { key, .. } if key.as_slice() == *k));
            prop_assert!(has_op, "guarded {:?} without an op", k);
        }
        if guarded.is_empty() {
            return Ok(());
        }
        // etcd now, for the failure reads: as it was, except key i, which
        // appeared (guarded absent) or changed / vanished.
        let i = changed.index(guarded.len());
        let now: Vec<Option<i64>> = guarded
            .iter()
            .enumerate()
            .map(|(j, (k, g))| {
                let cur = base.get(*k).map(|r| r.modr);
                if j != i {
                    return cur;
                }
                match g {
                    Guard::Absent { .. } => Some(999),
                    _ if j % 2 == 0 => None,
                    _ => cur.map(|m| m + 1000),
                }
            })
            .collect();
        prop_assert_eq!(c.diagnose(&now), expected_conflict(&guarded, i));
    }
}
