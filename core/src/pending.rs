//! A PostgreSQL transaction's writes to one etcd connection, kept in the
//! backend until COMMIT and then sent as ONE guarded etcd transaction.
//!
//! Every key the transaction writes has an entry: the *guard* etcd must
//! still satisfy at commit for the transaction's decisions to hold (the key
//! was absent, or at the mod_revision a scan read), and a stack of pending
//! states tagged with the subtransaction level that wrote them, so that
//! `ROLLBACK TO SAVEPOINT` drops exactly what the subtransaction wrote.
//! A TRUNCATE is a pending range delete (with the same level rule).
//!
//! Scans merge the pending states into what etcd returns ([`Overlay`]), so
//! a transaction reads its own writes.  Nothing here knows PostgreSQL.

use std::collections::BTreeMap;

use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp};

use crate::keyrange::{successor, KeyRange, KeySet};
use crate::writes::{put_keeping, TxnLimits};

/// What a key will be once the transaction commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pending {
    /// Put the key.  `value`/`lease` `None`: keep etcd's current value /
    /// lease (an UPDATE that did not set them; etcd's `ignore_value` /
    /// `ignore_lease`).
    Put {
        value: Option<Vec<u8>>,
        lease: Option<i64>,
    },
    Deleted,
}

/// What etcd must still hold at commit for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// The key did not exist when the transaction decided to create it.
    /// `decided_by_read`: the decision came from a read (ON CONFLICT DO
    /// NOTHING), so a key that appeared meanwhile is a serialization
    /// failure rather than a unique violation.
    Absent { decided_by_read: bool },
    /// The key was at this mod_revision when the transaction read it.
    ModRevision(i64),
    /// No condition: the key lies in a range the transaction truncated.
    None,
}

/// How the row being changed was read: from etcd at a mod_revision, or
/// from the transaction's own pending state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    Etcd { mod_revision: i64 },
    Pending,
}

/// A write the pending set refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingError {
    /// INSERT of a key this transaction already put.
    DuplicateKey(Vec<u8>),
    /// UPDATE/DELETE of a row said to be pending that is not (a bug).
    NotPending(Vec<u8>),
}

#[derive(Clone, Debug)]
struct KeyEntry {
    guard: Guard,
    /// (subtransaction level, state), oldest first; never empty.
    versions: Vec<(u32, Pending)>,
}

impl KeyEntry {
    fn current(&self) -> &Pending {
        // Never empty: entries are removed when their last version goes.
        &self.versions[self.versions.len() - 1].1
    }
}

/// The size of the commit transaction as it stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitCost {
    /// Operations in the success branch (one per key, one per range
    /// delete piece); compares and failure reads are never more.
    pub ops: usize,
    /// Estimated request bytes.
    pub bytes: usize,
}

impl CommitCost {
    pub fn within(&self, limits: &TxnLimits) -> bool {
        self.ops <= limits.max_ops && self.bytes <= limits.max_bytes
    }
}

/// One operation of the commit transaction, in key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitOp {
    Put {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        lease: Option<i64>,
        guard: Guard,
    },
    Delete {
        key: Vec<u8>,
        guard: Guard,
    },
    /// Unguarded delete of `[start, end)` (a TRUNCATE), split around the
    /// keys that have operations of their own.
    DeleteRange(KeyRange),
}

impl CommitOp {
    fn guard(&self) -> Option<(&[u8], Guard)> {
        match self {
            CommitOp::Put { key, guard, .. } | CommitOp::Delete { key, guard } => {
                Some((key, *guard))
            }
            CommitOp::DeleteRange(_) => None,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            // key in the compare, the op and the failure read
            CommitOp::Put { key, value, .. } => {
                3 * key.len() + value.as_ref().map_or(0, Vec::len) + 48
            }
            CommitOp::Delete { key, .. } => 3 * key.len() + 32,
            CommitOp::DeleteRange(r) => r.start.len() + r.end.as_ref().map_or(1, Vec::len) + 16,
        }
    }
}

/// Why a commit transaction did not apply, from its failure-branch reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitConflict {
    /// A key the transaction created exists now (23505).
    KeyExists(Vec<u8>),
    /// A key changed, vanished or appeared since the transaction read it
    /// (40001).
    Changed(Vec<u8>),
}

/// The guarded etcd transaction of a commit, with what is needed to
/// explain a failure and to check an unknown outcome.
#[derive(Clone, Debug)]
pub struct CommitTxn {
    pub ops: Vec<CommitOp>,
}

impl CommitTxn {
    /// Compares for every guard and the writes: the same request a client
    /// of etcd would send.  A failure is explained afterwards from
    /// [`Self::failure_reads`] (failures are rare; the commit request
    /// stays small).
    pub fn txn(&self) -> Txn {
        let mut compares = Vec::new();
        let mut success = Vec::new();
        for op in &self.ops {
            if let Some((key, guard)) = op.guard() {
                match guard {
                    Guard::Absent { .. } => {
                        compares.push(Compare::create_revision(key.to_vec(), CompareOp::Equal, 0))
                    }
                    Guard::ModRevision(r) => {
                        compares.push(Compare::mod_revision(key.to_vec(), CompareOp::Equal, r))
                    }
                    Guard::None => {}
                }
            }
            success.push(match op {
                CommitOp::Put {
                    key, value, lease, ..
                } => put_keeping(key, value.as_deref(), *lease, false),
                CommitOp::Delete { key, .. } => TxnOp::delete(key.clone(), None),
                CommitOp::DeleteRange(r) => {
                    let (key, end) = r.to_etcd();
                    TxnOp::delete(key, Some(DeleteOptions::new().with_range(end)))
                }
            });
        }
        Txn::new().when(compares).and_then(success)
    }

    /// A read-only transaction reading every guarded key (keys only), in
    /// the order [`Self::diagnose`] expects.
    pub fn failure_reads(&self) -> Txn {
        Txn::new().and_then(
            self.guarded()
                .into_iter()
                .map(|(k, _)| TxnOp::get(k.to_vec(), Some(GetOptions::new().with_keys_only())))
                .collect::<Vec<_>>(),
        )
    }

    /// The keys the transaction guards, in the order of [`Self::failure_reads`].
    pub fn guarded(&self) -> Vec<(&[u8], Guard)> {
        self.ops
            .iter()
            .filter_map(CommitOp::guard)
            .filter(|(_, g)| *g != Guard::None)
            .collect()
    }

    /// Explain a failed commit: `now[i]` is the mod_revision etcd holds for
    /// the i-th guarded key (`None`: absent), read after the failure.
    pub fn diagnose(&self, now: &[Option<i64>]) -> CommitConflict {
        let guarded = self.guarded();
        for ((key, guard), cur) in guarded.iter().zip(now) {
            match (guard, cur) {
                (Guard::ModRevision(r), Some(m)) if m == r => {}
                (Guard::ModRevision(_), _) => return CommitConflict::Changed(key.to_vec()),
                (Guard::Absent { .. }, None) => {}
                (Guard::Absent { decided_by_read }, Some(_)) => {
                    return if *decided_by_read {
                        CommitConflict::Changed(key.to_vec())
                    } else {
                        CommitConflict::KeyExists(key.to_vec())
                    }
                }
                (Guard::None, _) => {}
            }
        }
        // Every guard holds now: something changed and changed back
        // between the transaction and its failure reads.
        CommitConflict::Changed(guarded.first().map_or(Vec::new(), |(k, _)| k.to_vec()))
    }

    pub fn cost(&self) -> CommitCost {
        CommitCost {
            ops: self.ops.len(),
            bytes: self.ops.iter().map(CommitOp::bytes).sum::<usize>() + 64,
        }
    }
}

/// A pending TRUNCATE.
#[derive(Clone, Debug)]
struct RangeDelete {
    range: KeyRange,
    level: u32,
}

/// The pending writes of one transaction on one connection.
#[derive(Clone, Debug, Default)]
pub struct PendingTxn {
    keys: BTreeMap<Vec<u8>, KeyEntry>,
    truncated: Vec<RangeDelete>,
    /// Bytes of every state ever pushed (never less than the commit's
    /// bytes), so that [`Self::fits`] is O(1) while far from the limits.
    pushed_bytes: usize,
}

impl PendingTxn {
    pub fn new() -> Self {
        Self::default()
    }

    /// Nothing to commit and nothing for scans to merge.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.truncated.is_empty()
    }

    /// The pending state of `key`, if the transaction wrote it.
    pub fn get(&self, key: &[u8]) -> Option<&Pending> {
        self.keys.get(key).map(KeyEntry::current)
    }

    /// Whether a TRUNCATE of the transaction covers `key` (etcd's row, if
    /// any, is gone for the transaction unless it wrote the key again).
    pub fn in_truncated(&self, key: &[u8]) -> bool {
        self.truncated.iter().any(|t| t.range.contains(key))
    }

    /// Push `state` for `key` at `level` (a new entry guarded by `guard`).
    /// A put that keeps the value or lease inherits them from the key's
    /// previous pending put.
    fn push(&mut self, key: &[u8], guard: Guard, state: Pending, level: u32) {
        self.pushed_bytes += 3 * key.len()
            + 48
            + match &state {
                Pending::Put { value, .. } => value.as_ref().map_or(0, Vec::len),
                Pending::Deleted => 0,
            };
        let entry = self.keys.entry(key.to_vec()).or_insert_with(|| KeyEntry {
            guard,
            versions: Vec::new(),
        });
        let state = match (state, entry.versions.last()) {
            (
                Pending::Put { value, lease },
                Some((
                    _,
                    Pending::Put {
                        value: old_value,
                        lease: old_lease,
                    },
                )),
            ) => Pending::Put {
                value: value.or_else(|| old_value.clone()),
                lease: lease.or(*old_lease),
            },
            (s, _) => s,
        };
        match entry.versions.last_mut() {
            // The same subtransaction wrote the key again: keep one state.
            Some((l, s)) if *l == level => *s = state,
            _ => entry.versions.push((level, state)),
        }
    }

    /// INSERT of `key` (`decided_by_read`: after a read found it absent,
    /// for ON CONFLICT DO NOTHING).
    pub fn insert(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        lease: Option<i64>,
        level: u32,
        decided_by_read: bool,
    ) -> Result<(), PendingError> {
        if let Some(Pending::Put { .. }) = self.get(key) {
            return Err(PendingError::DuplicateKey(key.to_vec()));
        }
        // A key the transaction deleted or truncated may be created again;
        // its guard stays what it was.
        let guard = if self.in_truncated(key) {
            Guard::None
        } else {
            Guard::Absent { decided_by_read }
        };
        let state = Pending::Put {
            value: Some(value),
            lease: Some(lease.unwrap_or(0)),
        };
        self.push(key, guard, state, level);
        Ok(())
    }

    /// An unguarded put of `key` (`insert_mode 'put'`, `etcd_put()`):
    /// created or overwritten whatever etcd holds at commit.  A key the
    /// transaction already wrote keeps the guard it had.
    pub fn put(&mut self, key: &[u8], value: Vec<u8>, lease: Option<i64>, level: u32) {
        let state = Pending::Put {
            value: Some(value),
            lease: Some(lease.unwrap_or(0)),
        };
        self.push(key, Guard::None, state, level);
    }

    /// UPDATE (same key) or DELETE of a row read as `read`.
    pub fn change(
        &mut self,
        key: &[u8],
        read: ReadFrom,
        state: Pending,
        level: u32,
    ) -> Result<(), PendingError> {
        let guard = match read {
            ReadFrom::Etcd { mod_revision } => Guard::ModRevision(mod_revision),
            ReadFrom::Pending => match self.get(key) {
                Some(Pending::Put { .. }) => Guard::None, // unused: the entry exists
                _ => return Err(PendingError::NotPending(key.to_vec())),
            },
        };
        self.push(key, guard, state, level);
        Ok(())
    }

    /// TRUNCATE of `range` at `level`: every key of it is deleted at
    /// commit, and pending puts inside it are undone.
    pub fn truncate(&mut self, range: KeyRange, level: u32) {
        let inside: Vec<Vec<u8>> = self
            .keys
            .iter()
            .filter(|(k, e)| range.contains(k) && *e.current() != Pending::Deleted)
            .map(|(k, _)| k.clone())
            .collect();
        for k in inside {
            self.push(&k, Guard::None, Pending::Deleted, level);
        }
        self.truncated.push(RangeDelete { range, level });
    }

    /// `ROLLBACK TO SAVEPOINT` (or an aborted subtransaction) of `level`:
    /// forget everything written at `level` and deeper.
    pub fn rollback_to(&mut self, level: u32) {
        self.keys.retain(|_, e| {
            e.versions.retain(|(l, _)| *l < level);
            !e.versions.is_empty()
        });
        self.truncated.retain(|t| t.level < level);
    }

    /// `RELEASE SAVEPOINT` (a committed subtransaction) of `level`: what it
    /// wrote now belongs to its parent.
    pub fn release(&mut self, level: u32) {
        let parent = level.saturating_sub(1);
        for e in self.keys.values_mut() {
            let mut merged: Vec<(u32, Pending)> = Vec::with_capacity(e.versions.len());
            for (l, s) in e.versions.drain(..) {
                let l = if l >= level { parent } else { l };
                match merged.last_mut() {
                    Some((ml, ms)) if *ml == l => *ms = s,
                    _ => merged.push((l, s)),
                }
            }
            e.versions = merged;
        }
        for t in &mut self.truncated {
            if t.level >= level {
                t.level = parent;
            }
        }
    }

    /// What scans of `keys` must merge into etcd's answer, in key order:
    /// the pending state of each key, and the truncated ranges.
    pub fn overlay(&self, keys: &KeySet, desc: bool) -> Overlay {
        let mut entries: Vec<(Vec<u8>, Pending)> = self
            .keys
            .iter()
            .filter(|(k, _)| keys.contains(k))
            .map(|(k, e)| (k.clone(), e.current().clone()))
            .collect();
        if desc {
            entries.reverse();
        }
        let truncated = self
            .truncated
            .iter()
            .map(|t| t.range.clone())
            .filter(|r| !keys.intersect(&KeySet::from_range(r.clone())).is_empty())
            .collect();
        Overlay {
            entries: entries.into_iter().collect(),
            truncated,
            desc,
        }
    }

    /// Whether anything pending lies in `keys` (a scan of them needs the
    /// overlay, and etcd's LIMIT or sort no longer decides the result).
    pub fn touches(&self, keys: &KeySet) -> bool {
        self.keys.keys().any(|k| keys.contains(k))
            || self.truncated.iter().any(|t| {
                !keys
                    .intersect(&KeySet::from_range(t.range.clone()))
                    .is_empty()
            })
    }

    /// The commit transaction, or `None` when there is nothing to send.
    pub fn commit(&self) -> Option<CommitTxn> {
        let mut ops = Vec::new();
        for (key, e) in &self.keys {
            match (e.guard, e.current()) {
                // Created and gone again within the transaction: nothing.
                (Guard::Absent { .. }, Pending::Deleted) => {}
                // Deleted by a truncate: the range delete covers it.
                (Guard::None, Pending::Deleted) if self.in_truncated(key) => {}
                (guard, Pending::Deleted) => ops.push(CommitOp::Delete {
                    key: key.clone(),
                    guard,
                }),
                (guard, Pending::Put { value, lease }) => ops.push(CommitOp::Put {
                    key: key.clone(),
                    value: value.clone(),
                    lease: *lease,
                    guard,
                }),
            }
        }
        // Range deletes, cut around every key with an op of its own (etcd
        // refuses a put inside a range deleted by the same transaction).
        let own: Vec<Vec<u8>> = ops
            .iter()
            .filter_map(|o| o.guard().map(|(k, _)| k.to_vec()))
            .collect();
        let ranges = KeySet::from_ranges(self.truncated.iter().map(|t| t.range.clone()).collect());
        for r in ranges.ranges() {
            let mut start = r.start.clone();
            for k in own.iter().filter(|k| r.contains(k)) {
                let piece = KeyRange::between(&start, Some(k));
                if !piece.is_empty() {
                    ops.push(CommitOp::DeleteRange(piece));
                }
                start = successor(k);
            }
            let last = KeyRange {
                start,
                end: r.end.clone(),
            };
            if !last.is_empty() {
                ops.push(CommitOp::DeleteRange(last));
            }
        }
        (!ops.is_empty()).then_some(CommitTxn { ops })
    }

    /// Whether the commit transaction stays within `limits`: O(1) while
    /// clearly below them (an upper bound of its size), exact otherwise.
    pub fn fits(&self, limits: &TxnLimits) -> Result<(), CommitCost> {
        let quick = CommitCost {
            ops: 2 * self.keys.len() + self.truncated.len(),
            bytes: 64 + self.pushed_bytes + self.truncated.len() * 4096,
        };
        if quick.within(limits) {
            return Ok(());
        }
        let exact = self.cost();
        if exact.within(limits) {
            Ok(())
        } else {
            Err(exact)
        }
    }

    /// The size of [`Self::commit`]'s transaction (an upper bound when
    /// ranges are truncated), without building it.
    pub fn cost(&self) -> CommitCost {
        if self.is_empty() {
            return CommitCost::default();
        }
        let ranges = KeySet::from_ranges(self.truncated.iter().map(|t| t.range.clone()).collect());
        let mut cost = CommitCost { ops: 0, bytes: 64 };
        for (key, e) in &self.keys {
            let bytes = match (e.guard, e.current()) {
                (Guard::Absent { .. }, Pending::Deleted) => continue,
                (Guard::None, Pending::Deleted) if ranges.contains(key) => continue,
                (_, Pending::Deleted) => 3 * key.len() + 32,
                (_, Pending::Put { value, .. }) => {
                    3 * key.len() + value.as_ref().map_or(0, Vec::len) + 48
                }
            };
            cost.ops += 1;
            cost.bytes += bytes;
            if ranges.contains(key) {
                // one more piece of the range it cuts
                cost.ops += 1;
                cost.bytes += 2 * key.len() + 24;
            }
        }
        for r in ranges.ranges() {
            cost.ops += 1;
            cost.bytes += r.start.len() + r.end.as_ref().map_or(1, Vec::len) + 16;
        }
        cost
    }
}

/// A transaction's pending writes as a scan merges them with etcd's rows.
#[derive(Clone, Debug)]
pub struct Overlay {
    /// In the scan's order.
    entries: std::collections::VecDeque<(Vec<u8>, Pending)>,
    truncated: Vec<KeyRange>,
    desc: bool,
}

/// What a scan emits next, given the next row etcd has (if any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// etcd's row, as it is.
    Etcd,
    /// Skip etcd's row: the transaction deleted (or truncated) it.
    SkipEtcd,
    /// etcd's row with the transaction's pending put applied (`value` /
    /// `lease` `None`: etcd's own).
    Merge {
        value: Option<Vec<u8>>,
        lease: Option<i64>,
    },
    /// A row only the transaction has, before etcd's next row.
    Own {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: Option<i64>,
    },
    /// Nothing more.
    Done,
}

impl Overlay {
    /// No pending state at all in the scan's keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.truncated.is_empty()
    }

    /// Decide what comes next when etcd's next row has key `etcd_key`
    /// (`None`: etcd has no more rows).  `Etcd`, `SkipEtcd` and `Merge`
    /// consume etcd's row; `Own` does not.
    pub fn step(&mut self, etcd_key: Option<&[u8]>) -> Step {
        loop {
            let pending_first = match (self.entries.front(), etcd_key) {
                (None, None) => return Step::Done,
                (None, Some(_)) => false,
                (Some(_), None) => true,
                (Some((p, _)), Some(e)) if p.as_slice() == e => {
                    let Some((_, state)) = self.entries.pop_front() else {
                        return Step::Done;
                    };
                    return match state {
                        Pending::Deleted => Step::SkipEtcd,
                        Pending::Put { value, lease } => Step::Merge { value, lease },
                    };
                }
                (Some((p, _)), Some(e)) => {
                    if self.desc {
                        p.as_slice() > e
                    } else {
                        p.as_slice() < e
                    }
                }
            };
            if !pending_first {
                // etcd's row comes first and has no pending state.
                let Some(e) = etcd_key else {
                    return Step::Done;
                };
                return if self.truncated.iter().any(|r| r.contains(e)) {
                    Step::SkipEtcd
                } else {
                    Step::Etcd
                };
            }
            match self.entries.pop_front() {
                None => return Step::Done,
                Some((_, Pending::Deleted)) => continue,
                // A kept value with no row in etcd: the key vanished
                // meanwhile (the commit will fail its guard); nothing to
                // show.
                Some((_, Pending::Put { value: None, .. })) => continue,
                Some((
                    key,
                    Pending::Put {
                        value: Some(value),
                        lease,
                    },
                )) => return Step::Own { key, value, lease },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(v: &str) -> Pending {
        Pending::Put {
            value: Some(v.as_bytes().to_vec()),
            lease: None,
        }
    }

    fn etcd(rev: i64) -> ReadFrom {
        ReadFrom::Etcd { mod_revision: rev }
    }

    #[test]
    fn unguarded_puts_and_their_deletes() {
        let mut p = PendingTxn::new();
        p.put(b"a", b"1".to_vec(), None, 1);
        p.put(b"a", b"2".to_vec(), Some(5), 1);
        let c = p.commit().unwrap();
        assert_eq!(
            c.ops,
            vec![CommitOp::Put {
                key: b"a".to_vec(),
                value: Some(b"2".to_vec()),
                lease: Some(5),
                guard: Guard::None
            }]
        );
        assert!(c.guarded().is_empty());
        // put over a key etcd may hold, then deleted through the pending
        // row: etcd's key must go (an unguarded delete, not nothing)
        p.change(b"a", ReadFrom::Pending, Pending::Deleted, 1)
            .unwrap();
        let c = p.commit().unwrap();
        assert_eq!(
            c.ops,
            vec![CommitOp::Delete {
                key: b"a".to_vec(),
                guard: Guard::None
            }]
        );
        assert_eq!(c.cost(), p.cost());
        // inside a truncated range the range delete covers it
        p.truncate(KeyRange::prefix(b"a"), 1);
        let c = p.commit().unwrap();
        assert_eq!(c.ops, vec![CommitOp::DeleteRange(KeyRange::prefix(b"a"))]);
        // an INSERT of a key the transaction put is a duplicate
        let mut q = PendingTxn::new();
        q.put(b"k", b"1".to_vec(), None, 1);
        assert_eq!(
            q.insert(b"k", b"x".to_vec(), None, 1, false),
            Err(PendingError::DuplicateKey(b"k".to_vec()))
        );
    }

    #[test]
    fn guards_and_commit_ops() {
        let mut p = PendingTxn::new();
        assert!(p.is_empty() && p.commit().is_none());
        p.insert(b"a", b"1".to_vec(), None, 1, false).unwrap();
        p.change(b"b", etcd(7), put("2"), 1).unwrap();
        p.change(b"c", etcd(9), Pending::Deleted, 1).unwrap();
        assert_eq!(
            p.insert(b"a", b"x".to_vec(), None, 1, false),
            Err(PendingError::DuplicateKey(b"a".to_vec()))
        );
        let c = p.commit().unwrap();
        assert_eq!(
            c.ops,
            vec![
                CommitOp::Put {
                    key: b"a".to_vec(),
                    value: Some(b"1".to_vec()),
                    lease: Some(0),
                    guard: Guard::Absent {
                        decided_by_read: false
                    }
                },
                CommitOp::Put {
                    key: b"b".to_vec(),
                    value: Some(b"2".to_vec()),
                    lease: None,
                    guard: Guard::ModRevision(7)
                },
                CommitOp::Delete {
                    key: b"c".to_vec(),
                    guard: Guard::ModRevision(9)
                },
            ]
        );
        assert_eq!(c.cost(), p.cost());
        assert_eq!(c.cost().ops, 3);
        // an inserted key updated keeps its Absent guard and the value
        p.change(
            b"a",
            ReadFrom::Pending,
            Pending::Put {
                value: None,
                lease: Some(5),
            },
            1,
        )
        .unwrap();
        assert_eq!(
            p.get(b"a"),
            Some(&Pending::Put {
                value: Some(b"1".to_vec()),
                lease: Some(5)
            })
        );
        // inserted then deleted: nothing to send for it
        p.change(b"a", ReadFrom::Pending, Pending::Deleted, 1)
            .unwrap();
        assert_eq!(p.commit().unwrap().ops.len(), 2);
        // deleted then inserted again: a put guarded by the first read
        p.insert(b"c", b"again".to_vec(), None, 1, false).unwrap();
        assert!(p.commit().unwrap().ops.contains(&CommitOp::Put {
            key: b"c".to_vec(),
            value: Some(b"again".to_vec()),
            lease: Some(0),
            guard: Guard::ModRevision(9)
        }));
        assert_eq!(
            p.change(b"zz", ReadFrom::Pending, Pending::Deleted, 1),
            Err(PendingError::NotPending(b"zz".to_vec()))
        );
    }

    #[test]
    fn savepoints_drop_and_merge_levels() {
        let mut p = PendingTxn::new();
        p.insert(b"a", b"1".to_vec(), None, 1, false).unwrap();
        // SAVEPOINT s1 (level 2)
        p.change(b"a", ReadFrom::Pending, put("2"), 2).unwrap();
        p.insert(b"b", b"b".to_vec(), None, 2, false).unwrap();
        // SAVEPOINT s2 (level 3)
        p.change(b"a", ReadFrom::Pending, Pending::Deleted, 3)
            .unwrap();
        p.truncate(KeyRange::prefix(b"x"), 3);
        assert_eq!(p.get(b"a"), Some(&Pending::Deleted));
        // ROLLBACK TO s2
        p.rollback_to(3);
        // (an inserted key's lease is 0 unless set: later puts inherit it)
        let put0 = |v: &str| Pending::Put {
            value: Some(v.as_bytes().to_vec()),
            lease: Some(0),
        };
        assert_eq!(p.get(b"a"), Some(&put0("2")));
        assert!(p.truncated.is_empty());
        // RELEASE s1: level 2 becomes level 1
        p.release(2);
        assert_eq!(p.keys[&b"a"[..]].versions, vec![(1, put0("2"))]);
        // a rollback of a later level 2 no longer touches them
        p.rollback_to(2);
        assert_eq!(p.get(b"a"), Some(&put0("2")));
        assert_eq!(p.get(b"b"), Some(&put0("b")));
        // the whole transaction
        p.rollback_to(1);
        assert!(p.is_empty());
        // inside a rolled-back subtransaction: the key disappears entirely
        p.insert(b"k", b"v".to_vec(), None, 2, false).unwrap();
        p.rollback_to(2);
        assert_eq!(p.get(b"k"), None);
    }

    #[test]
    fn truncate_is_a_range_delete_cut_around_own_keys() {
        let mut p = PendingTxn::new();
        p.insert(b"a/1", b"x".to_vec(), None, 1, false).unwrap();
        p.truncate(KeyRange::prefix(b"a/"), 1);
        assert_eq!(p.get(b"a/1"), Some(&Pending::Deleted));
        // keys created after the truncate are unguarded puts
        p.insert(b"a/5", b"y".to_vec(), None, 1, false).unwrap();
        let c = p.commit().unwrap();
        assert_eq!(
            c.ops,
            vec![
                CommitOp::Put {
                    key: b"a/5".to_vec(),
                    value: Some(b"y".to_vec()),
                    lease: Some(0),
                    guard: Guard::None
                },
                CommitOp::DeleteRange(KeyRange::between(b"a/", Some(b"a/5"))),
                CommitOp::DeleteRange(KeyRange::between(b"a/5\0", Some(b"a0"))),
            ]
        );
        assert!(c.guarded().is_empty());
        assert!(p.cost().ops >= c.cost().ops && p.cost().bytes >= c.cost().bytes);
    }

    #[test]
    fn truncating_everything_then_writing_the_least_key() {
        // The piece of the truncated keyspace below key "\0" is ["", "\0"),
        // which holds no etcd key; sent, it would delete ("\0", "\0"): every
        // key, the one put by the same transaction too.
        let mut p = PendingTxn::new();
        p.truncate(KeyRange::all(), 1);
        p.insert(b"\0", b"v".to_vec(), None, 1, false).unwrap();
        assert_eq!(
            p.commit().unwrap().ops,
            vec![
                CommitOp::Put {
                    key: b"\0".to_vec(),
                    value: Some(b"v".to_vec()),
                    lease: Some(0),
                    guard: Guard::None
                },
                CommitOp::DeleteRange(KeyRange::from(b"\0", false)),
            ]
        );
    }

    #[test]
    fn diagnosis_names_the_failed_guard() {
        let mut p = PendingTxn::new();
        p.insert(b"new", b"1".to_vec(), None, 1, false).unwrap();
        p.insert(b"dn", b"1".to_vec(), None, 1, true).unwrap();
        p.change(b"old", etcd(4), put("2"), 1).unwrap();
        let c = p.commit().unwrap();
        // guarded keys in key order: dn, new, old
        assert_eq!(
            c.diagnose(&[None, Some(8), Some(4)]),
            CommitConflict::KeyExists(b"new".to_vec())
        );
        assert_eq!(
            c.diagnose(&[Some(8), None, Some(4)]),
            CommitConflict::Changed(b"dn".to_vec()),
            "a key that appeared after ON CONFLICT DO NOTHING read it"
        );
        assert_eq!(
            c.diagnose(&[None, None, Some(5)]),
            CommitConflict::Changed(b"old".to_vec())
        );
        assert_eq!(
            c.diagnose(&[None, None, None]),
            CommitConflict::Changed(b"old".to_vec())
        );
    }

    #[test]
    fn limits_count_ops_and_bytes() {
        let mut p = PendingTxn::new();
        for i in 0..128 {
            p.insert(
                format!("k{i:03}").as_bytes(),
                vec![b'v'; 100],
                None,
                1,
                false,
            )
            .unwrap();
        }
        assert!(p.cost().within(&TxnLimits::one_request(128)));
        assert_eq!(p.fits(&TxnLimits::one_request(128)), Ok(()));
        p.insert(b"k999", vec![], None, 1, false).unwrap();
        assert!(!p.cost().within(&TxnLimits::one_request(128)));
        assert_eq!(p.fits(&TxnLimits::one_request(128)).unwrap_err().ops, 129);
        let mut p = PendingTxn::new();
        p.insert(b"big", vec![0; 1536 * 1024], None, 1, false)
            .unwrap();
        assert!(!p.cost().within(&TxnLimits::one_request(128)));
    }

    /// Merge etcd's keys with an overlay the way a scan does; pending rows
    /// are written `key=value*`.
    fn merged(etcd_keys: &[&str], ov: &mut Overlay) -> Vec<String> {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            let e = etcd_keys.get(i).map(|k| k.as_bytes());
            match ov.step(e) {
                Step::Etcd => {
                    out.push(etcd_keys[i].to_string());
                    i += 1;
                }
                Step::SkipEtcd => i += 1,
                Step::Merge { value, .. } => {
                    let v = value.map_or("kept".to_string(), |v| String::from_utf8(v).unwrap());
                    out.push(format!("{}={v}*", etcd_keys[i]));
                    i += 1;
                }
                Step::Own { key, value, .. } => out.push(format!(
                    "{}={}*",
                    String::from_utf8(key).unwrap(),
                    String::from_utf8(value).unwrap()
                )),
                Step::Done => return out,
            }
        }
    }

    #[test]
    fn overlay_merges_in_scan_order() {
        let mut p = PendingTxn::new();
        p.insert(b"a", b"A".to_vec(), None, 1, false).unwrap();
        p.change(b"c", etcd(3), put("C"), 1).unwrap();
        p.change(b"d", etcd(3), Pending::Deleted, 1).unwrap();
        p.change(
            b"e",
            etcd(3),
            Pending::Put {
                value: None,
                lease: Some(1),
            },
            1,
        )
        .unwrap();
        p.insert(b"z", b"Z".to_vec(), None, 1, false).unwrap();
        p.insert(b"q/out", b"Q".to_vec(), None, 1, false).unwrap();
        let keys = KeySet::from_ranges(vec![
            KeyRange::between(b"a", Some(b"q")),
            KeyRange::between(b"r", None),
        ]);
        let etcd_rows = ["b", "c", "d", "e", "f"];
        assert_eq!(
            merged(&etcd_rows, &mut p.overlay(&keys, false)),
            vec!["a=A*", "b", "c=C*", "e=kept*", "f", "z=Z*"]
        );
        let mut rev: Vec<&str> = etcd_rows.to_vec();
        rev.reverse();
        assert_eq!(
            merged(&rev, &mut p.overlay(&keys, true)),
            vec!["z=Z*", "f", "e=kept*", "c=C*", "b", "a=A*"]
        );
        assert!(p.touches(&keys));
        assert!(!p.touches(&KeySet::from_range(KeyRange::prefix(b"m"))));
        assert!(p
            .overlay(&KeySet::from_range(KeyRange::prefix(b"m")), false)
            .is_empty());
        // a truncate hides etcd's rows of its range, not later puts
        p.truncate(KeyRange::between(b"b", Some(b"e")), 1);
        p.insert(b"bb", b"new".to_vec(), None, 1, false).unwrap();
        assert_eq!(
            merged(&etcd_rows, &mut p.overlay(&keys, false)),
            vec!["a=A*", "bb=new*", "e=kept*", "f", "z=Z*"]
        );
    }

    /// A small deterministic PRNG (xorshift64*), so the model test needs no
    /// extra crate and every failure is reproducible from its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    type View = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

    /// What a full scan (ascending or descending) of `base` shows through
    /// the overlay.
    fn scan_through(
        p: &PendingTxn,
        base: &BTreeMap<Vec<u8>, (Vec<u8>, i64)>,
        desc: bool,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut rows: Vec<(&Vec<u8>, &Vec<u8>)> = base.iter().map(|(k, (v, _))| (k, v)).collect();
        if desc {
            rows.reverse();
        }
        let mut ov = p.overlay(&KeySet::all(), desc);
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            match ov.step(rows.get(i).map(|(k, _)| k.as_slice())) {
                Step::Etcd => {
                    out.push((rows[i].0.clone(), rows[i].1.clone()));
                    i += 1;
                }
                Step::SkipEtcd => i += 1,
                Step::Merge { value, .. } => {
                    out.push((
                        rows[i].0.clone(),
                        value.unwrap_or_else(|| rows[i].1.clone()),
                    ));
                    i += 1;
                }
                Step::Own { key, value, .. } => out.push((key, value)),
                Step::Done => return out,
            }
        }
    }

    /// Random transactions (writes, renames, truncates, savepoints) against
    /// a model that simply keeps the view each savepoint started from: the
    /// overlay must always show the model's view, in both scan orders, and
    /// applying the commit transaction to etcd's rows must give it too.
    #[test]
    fn random_transactions_match_a_model() {
        let keys: Vec<Vec<u8>> = ["a", "a/1", "a/2", "b", "b/1", "c", "d", "e/x"]
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect();
        for seed in 1..=400u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            // etcd's rows: (value, mod_revision)
            let mut base: BTreeMap<Vec<u8>, (Vec<u8>, i64)> = BTreeMap::new();
            for (i, k) in keys.iter().enumerate() {
                if rng.below(2) == 0 {
                    base.insert(k.clone(), (format!("e{i}").into_bytes(), 10 + i as i64));
                }
            }
            let mut view: View = base
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect();
            let mut saved: Vec<View> = Vec::new(); // view at the start of each open savepoint
            let mut level = 1u32;
            let mut p = PendingTxn::new();
            let mut log = Vec::new();
            for step in 0..40 {
                let k = keys[rng.below(keys.len())].clone();
                let v = format!("v{seed}.{step}").into_bytes();
                let read = |p: &PendingTxn, k: &[u8]| match p.get(k) {
                    Some(_) => ReadFrom::Pending,
                    None => ReadFrom::Etcd {
                        mod_revision: base.get(k).map_or(0, |(_, r)| *r),
                    },
                };
                match rng.below(9) {
                    0 | 1 if !view.contains_key(&k) => {
                        log.push(format!("insert {k:?}"));
                        p.insert(&k, v.clone(), None, level, false).unwrap();
                        view.insert(k, v);
                    }
                    2 | 3 if view.contains_key(&k) => {
                        log.push(format!("update {k:?}"));
                        let r = read(&p, &k);
                        let keep = rng.below(3) == 0;
                        let state = Pending::Put {
                            value: (!keep).then(|| v.clone()),
                            lease: None,
                        };
                        p.change(&k, r, state, level).unwrap();
                        if !keep {
                            view.insert(k, v);
                        }
                    }
                    4 if view.contains_key(&k) => {
                        log.push(format!("delete {k:?}"));
                        let r = read(&p, &k);
                        p.change(&k, r, Pending::Deleted, level).unwrap();
                        view.remove(&k);
                    }
                    5 if view.contains_key(&k) => {
                        let to = keys[rng.below(keys.len())].clone();
                        if !view.contains_key(&to) {
                            log.push(format!("rename {k:?} -> {to:?}"));
                            let value = view[&k].clone();
                            let r = read(&p, &k);
                            p.change(&k, r, Pending::Deleted, level).unwrap();
                            p.insert(&to, value.clone(), None, level, false).unwrap();
                            view.remove(&k);
                            view.insert(to, value);
                        }
                    }
                    6 => {
                        let prefix = &k[..1];
                        log.push(format!("truncate {prefix:?}"));
                        p.truncate(KeyRange::prefix(prefix), level);
                        view.retain(|key, _| !key.starts_with(prefix));
                    }
                    7 => {
                        log.push("savepoint".into());
                        saved.push(view.clone());
                        level += 1;
                    }
                    8 if level > 1 => {
                        if rng.below(2) == 0 {
                            log.push("rollback to savepoint".into());
                            p.rollback_to(level);
                            view = saved.last().cloned().unwrap_or_default();
                        } else {
                            log.push("release savepoint".into());
                            p.release(level);
                            saved.pop();
                            level -= 1;
                        }
                    }
                    _ => continue,
                }
                // the O(1) size check agrees with the exact one
                for lim in [(4, 10_000), (6, 400), (200, 150)] {
                    let lim = TxnLimits {
                        max_ops: lim.0,
                        max_bytes: lim.1,
                    };
                    assert_eq!(
                        p.fits(&lim).is_ok(),
                        p.cost().within(&lim),
                        "seed {seed}: {log:?}"
                    );
                }
                let want: Vec<(Vec<u8>, Vec<u8>)> = view.clone().into_iter().collect();
                assert_eq!(scan_through(&p, &base, false), want, "seed {seed}: {log:?}");
                let mut rev = want.clone();
                rev.reverse();
                assert_eq!(scan_through(&p, &base, true), rev, "seed {seed}: {log:?}");
            }
            // COMMIT: every guard holds against the unchanged etcd, and
            // applying the operations gives the transaction's view.
            let mut after = base.clone();
            if let Some(c) = p.commit() {
                for op in &c.ops {
                    if let Some((key, guard)) = op.guard() {
                        let cur = base.get(key);
                        match guard {
                            Guard::Absent { .. } => assert!(cur.is_none(), "seed {seed}: {log:?}"),
                            Guard::ModRevision(r) => {
                                assert_eq!(cur.map(|(_, m)| *m), Some(r), "seed {seed}: {log:?}")
                            }
                            Guard::None => {}
                        }
                    }
                }
                let mut seen = std::collections::HashSet::new();
                for op in &c.ops {
                    match op {
                        CommitOp::Put { key, value, .. } => {
                            assert!(seen.insert(key.clone()), "a key twice in one txn");
                            let v = value.clone().unwrap_or_else(|| base[key].0.clone());
                            after.insert(key.clone(), (v, 0));
                        }
                        CommitOp::Delete { key, .. } => {
                            assert!(seen.insert(key.clone()), "a key twice in one txn");
                            after.remove(key);
                        }
                        CommitOp::DeleteRange(r) => {
                            assert!(
                                !c.ops
                                    .iter()
                                    .any(|o| o.guard().is_some_and(|(k, _)| r.contains(k))),
                                "seed {seed}: a range delete covers a key written by the same txn"
                            );
                            after.retain(|k, _| !r.contains(k));
                        }
                    }
                }
            }
            let got: View = after.into_iter().map(|(k, (v, _))| (k, v)).collect();
            assert_eq!(got, view, "seed {seed}: {log:?}");
        }
    }
}
