//! Deciding the outcome of a commit whose answer was lost (the connection
//! broke or the request timed out while etcd had it), from etcd's own
//! state and history.
//!
//! A commit transaction ([`CommitTxn`]) compares each key's mod_revision
//! (a key the transaction read) or its absence (a key it creates), and on
//! success writes every key at ONE new revision.  So:
//!
//! * if etcd shows every write of the transaction at one revision, it was
//!   applied;
//! * the first change to a key guarded by a mod_revision after that
//!   revision is either the transaction's own write (then every key of the
//!   transaction changed at that same revision, with the values sent) or
//!   another writer's, and then the guard can never hold again
//!   (mod_revisions only grow): the transaction certainly was not applied
//!   and never will be;
//! * if no guarded key has changed, the request may still be queued at the
//!   member that took it (a paused member applies it once it runs again),
//!   so nothing can be decided; nor when etcd's history was compacted past
//!   the guard, or etcd could not be asked.
//!
//! A key guarded by its absence proves less: another writer's key can be
//! deleted again, and then the transaction's guard holds once more.  Such a
//! transaction is decided only when it was visibly applied.
//!
//! The one thing etcd cannot tell apart is another client writing exactly
//! the same values to exactly the same keys in one transaction: that is
//! taken for this transaction's write (the keys hold what was committed).
//! So is, for a transaction that guards nothing (blind puts), its values
//! visible at one revision, however they got there.
//!
//! The steps are pure: [`from_now`] looks at the keys as they are now and
//! says what else it needs ([`Outcome::FirstChanges`], [`Outcome::StateAt`]),
//! [`from_first_changes`] and [`from_state_at`] take those answers.

use crate::pending::{CommitConflict, CommitOp, CommitTxn, Guard};
use crate::writes::{WriteBatch, WriteOp};

/// A key as etcd holds it at some revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyState {
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub create_revision: i64,
}

/// The first change to a key after a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirstChange {
    pub key: Vec<u8>,
    pub revision: i64,
}

/// Why an outcome cannot be decided (the DETAIL of 08007).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undecided {
    /// etcd does not show the transaction's write, and nothing shows that
    /// it cannot still apply (no key guarded by its mod_revision was
    /// changed by another writer): the request may still be queued.
    NoChangeYet,
    /// A key the transaction creates was created by another writer; the
    /// transaction still applies if that key is deleted before it arrives.
    CreatedByAnother(Vec<u8>),
    /// The history needed was compacted away (etcd keeps it from
    /// `compact_revision` on, when etcd said).
    Compacted { compact_revision: Option<i64> },
    /// The transaction keeps this key's value (an UPDATE that set only
    /// other columns): its write looks like any other write of the key.
    ValueKept(Vec<u8>),
    /// etcd could not be asked within request_timeout.
    Unreachable(String),
}

/// What is known so far, or what is needed next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The transaction was applied, at this revision.
    Applied {
        revision: i64,
    },
    /// It was not applied and never will be: another writer changed a
    /// guarded key first.
    NotApplied(CommitConflict),
    /// Needed: the first change after `start - 1` of each key (every key
    /// listed did change since).
    FirstChanges(Vec<(Vec<u8>, i64)>),
    /// Needed: the transaction's keys as they were at this revision
    /// ([`CommitTxn::written_keys`] order).
    StateAt(i64),
    Undecided(Undecided),
}

/// A statement-mode batch as the guarded transaction it is: the same
/// compares and writes, in the terms decided here.
pub fn batch_txn(batch: &WriteBatch) -> CommitTxn {
    let absent = Guard::Absent {
        decided_by_read: false,
    };
    let mut ops = Vec::new();
    for op in &batch.ops {
        match op {
            WriteOp::Insert { key, value, lease } => ops.push(CommitOp::Put {
                key: key.clone(),
                value: Some(value.clone()),
                lease: *lease,
                guard: absent,
            }),
            WriteOp::Put { key, value, lease } => ops.push(CommitOp::Put {
                key: key.clone(),
                value: Some(value.clone()),
                lease: *lease,
                guard: Guard::None,
            }),
            WriteOp::Update {
                old_key,
                new_key,
                value,
                lease,
                mod_revision,
            } => {
                if old_key == new_key {
                    ops.push(CommitOp::Put {
                        key: new_key.clone(),
                        value: value.clone(),
                        lease: *lease,
                        guard: Guard::ModRevision(*mod_revision),
                    });
                } else {
                    ops.push(CommitOp::Put {
                        key: new_key.clone(),
                        value: value.clone(),
                        lease: *lease,
                        guard: absent,
                    });
                    ops.push(CommitOp::Delete {
                        key: old_key.clone(),
                        guard: Guard::ModRevision(*mod_revision),
                    });
                }
            }
            WriteOp::Delete { key, mod_revision } => ops.push(CommitOp::Delete {
                key: key.clone(),
                guard: Guard::ModRevision(*mod_revision),
            }),
        }
    }
    CommitTxn { ops }
}

impl CommitTxn {
    /// The keys the transaction puts or deletes one by one (not its range
    /// deletes), in operation order: the order of the `now` and `at`
    /// arguments below.
    pub fn written_keys(&self) -> Vec<&[u8]> {
        self.ops
            .iter()
            .filter_map(|op| match op {
                CommitOp::Put { key, .. } | CommitOp::Delete { key, .. } => Some(key.as_slice()),
                CommitOp::DeleteRange(_) => None,
            })
            .collect()
    }
}

/// One put or delete of the transaction, with its key's state.
struct Written<'a> {
    key: &'a [u8],
    /// `Some(value)`: a put (`None` inside: keep etcd's value); `None`: a delete.
    put: Option<Option<&'a [u8]>>,
    guard: Guard,
}

fn written(txn: &CommitTxn) -> Vec<Written<'_>> {
    txn.ops
        .iter()
        .filter_map(|op| match op {
            CommitOp::Put {
                key, value, guard, ..
            } => Some(Written {
                key,
                put: Some(value.as_deref()),
                guard: *guard,
            }),
            CommitOp::Delete { key, guard } => Some(Written {
                key,
                put: None,
                guard: *guard,
            }),
            CommitOp::DeleteRange(_) => None,
        })
        .collect()
}

/// What a key's state says of the transaction's write to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// The key is as the write leaves it.
    Ours,
    /// The write did not leave this.
    NotOurs,
    /// A put that keeps etcd's value: any write of the key at that
    /// revision looks the same.
    CannotTell,
}

/// What `state` (the key at revision `at`) says of the transaction's write
/// to it, as if applied at `at`.
fn seen(w: &Written, state: Option<&KeyState>, at: i64) -> Seen {
    let guard_ok = match w.guard {
        Guard::ModRevision(r) => at > r,
        Guard::Absent { .. } | Guard::None => true,
    };
    match (w.put, state) {
        (Some(value), Some(s)) => {
            let dated = guard_ok
                && s.mod_revision == at
                && (!matches!(w.guard, Guard::Absent { .. }) || s.create_revision == at);
            match value {
                _ if !dated => Seen::NotOurs,
                Some(v) if v == s.value.as_slice() => Seen::Ours,
                Some(_) => Seen::NotOurs,
                None => Seen::CannotTell,
            }
        }
        (Some(_), None) => Seen::NotOurs,
        (None, None) if guard_ok => Seen::Ours,
        (None, _) => Seen::NotOurs,
    }
}

/// What the keys' states say of the whole transaction's write at `at`.
fn seen_all(ws: &[Written], states: &[Option<KeyState>], at: i64) -> Seen {
    let each: Vec<Seen> = ws
        .iter()
        .zip(states)
        .map(|(w, s)| seen(w, s.as_ref(), at))
        .collect();
    // A value the transaction wrote, seen at `at`, dates its puts of kept
    // values too: all of them are one write.  Deletes date nothing (any
    // client's delete is the same).
    let a_value_seen = ws
        .iter()
        .zip(&each)
        .any(|(w, s)| matches!(w.put, Some(Some(_))) && *s == Seen::Ours);
    if each.contains(&Seen::NotOurs) {
        Seen::NotOurs
    } else if each.contains(&Seen::CannotTell) && !a_value_seen {
        Seen::CannotTell
    } else {
        Seen::Ours
    }
}

/// The conflict a changed key stands for, as a refused commit reports it.
fn changed(w: &Written) -> CommitConflict {
    CommitConflict::Changed(w.key.to_vec())
}

/// Step 1: the keys as they are now (`now[i]` for the i-th of
/// [`CommitTxn::written_keys`], `None`: absent).
pub fn from_now(txn: &CommitTxn, now: &[Option<KeyState>]) -> Outcome {
    let ws = written(txn);
    debug_assert_eq!(ws.len(), now.len());
    if ws.is_empty() {
        return Outcome::Undecided(Undecided::NoChangeYet);
    }
    // Every put visible at one revision, every delete done: applied (the
    // revision is that of the puts; a transaction of deletes only leaves
    // nothing to date it by and goes through its history below).
    let put_revision = ws
        .iter()
        .zip(now)
        .find(|(w, _)| w.put.is_some())
        .and_then(|(_, s)| s.as_ref().map(|s| s.mod_revision));
    // Dated: the revision must be one of the transaction's own keys
    // changing after the transaction read it (a key at its mod_revision,
    // changed there) or being created there (a key it creates); a key it
    // deletes after reading it is dated only by its history (below), and
    // a put in a truncated range is not dated at all (the key may have
    // held that value before).
    let dated = |at: i64| {
        ws.iter().zip(now).any(|(w, s)| match (w.guard, s) {
            (Guard::ModRevision(r), Some(s)) => w.put.is_some() && s.mod_revision == at && at > r,
            (Guard::Absent { .. }, Some(s)) => w.put.is_some() && s.create_revision == at,
            _ => false,
        }) && !ws
            .iter()
            .any(|w| w.put.is_none() && matches!(w.guard, Guard::ModRevision(_)))
    };
    // A transaction without any guard (blind puts: etcd_put, a put in a
    // truncated range) and without a range delete: its values visible at
    // one revision are taken for it, whenever written (sent again later
    // it would write the same).
    let unguarded = txn.guarded().is_empty()
        && !txn
            .ops
            .iter()
            .any(|op| matches!(op, CommitOp::DeleteRange(_)));
    if let Some(at) = put_revision {
        if (dated(at) || unguarded) && seen_all(&ws, now, at) == Seen::Ours {
            return Outcome::Applied { revision: at };
        }
    }
    let by_revision: Vec<(&Written, i64, bool)> = ws
        .iter()
        .zip(now)
        .filter_map(|(w, s)| match w.guard {
            Guard::ModRevision(r) => Some((w, r, s.as_ref().is_none_or(|s| s.mod_revision != r))),
            _ => None,
        })
        .collect();
    if !by_revision.is_empty() {
        let unchanged = by_revision.iter().find(|(_, _, c)| !c);
        let changed_key = by_revision.iter().find(|(_, _, c)| *c);
        return match (unchanged, changed_key) {
            // The transaction writes every key at once: a key changed
            // while another did not is another writer's change.
            (Some(_), Some((w, _, _))) => Outcome::NotApplied(changed(w)),
            (Some(_), None) => not_yet(&ws, now),
            (None, _) => Outcome::FirstChanges(
                by_revision
                    .iter()
                    .map(|(w, r, _)| (w.key.to_vec(), r + 1))
                    .collect(),
            ),
        };
    }
    // Only keys the transaction creates (or that lie in a range it
    // truncates): a key created since may be ours, later changed by
    // another writer.  Created together at one revision: look there.
    let created: Vec<Option<i64>> = ws
        .iter()
        .zip(now)
        .filter(|(w, _)| w.put.is_some() && matches!(w.guard, Guard::Absent { .. }))
        .map(|(_, s)| s.as_ref().map(|s| s.create_revision))
        .collect();
    match created.first() {
        Some(Some(c)) if created.iter().all(|x| *x == Some(*c)) => Outcome::StateAt(*c),
        _ => not_yet(&ws, now),
    }
}

/// Not applied, and nothing proves it never will be: a key the
/// transaction creates that exists in `states` was created by another
/// client (it may yet be deleted), else no change is seen yet.
fn not_yet(ws: &[Written], states: &[Option<KeyState>]) -> Outcome {
    Outcome::Undecided(
        match ws
            .iter()
            .zip(states)
            .find(|(w, s)| matches!(w.guard, Guard::Absent { .. }) && s.is_some())
        {
            Some((w, _)) => Undecided::CreatedByAnother(w.key.to_vec()),
            None => Undecided::NoChangeYet,
        },
    )
}

/// Step 2: the first change of every key [`Outcome::FirstChanges`] listed.
/// The transaction's write is the first change of each of them, all at one
/// revision; first changes at different revisions are another writer's.
pub fn from_first_changes(firsts: &[FirstChange]) -> Outcome {
    let Some(earliest) = firsts.iter().min_by_key(|f| f.revision) else {
        return Outcome::Undecided(Undecided::NoChangeYet);
    };
    if firsts.iter().all(|f| f.revision == earliest.revision) {
        Outcome::StateAt(earliest.revision)
    } else {
        Outcome::NotApplied(CommitConflict::Changed(earliest.key.clone()))
    }
}

/// Step 3: the keys at `at` (the revision [`Outcome::StateAt`] named).
/// The transaction's write at `at` leaves every key as it wrote it.
pub fn from_state_at(txn: &CommitTxn, at: i64, state: &[Option<KeyState>]) -> Outcome {
    let ws = written(txn);
    debug_assert_eq!(ws.len(), state.len());
    match seen_all(&ws, state, at) {
        Seen::Ours => return Outcome::Applied { revision: at },
        Seen::CannotTell => {
            let kept = ws
                .iter()
                .find(|w| w.put == Some(None))
                .map_or(Vec::new(), |w| w.key.to_vec());
            return Outcome::Undecided(Undecided::ValueKept(kept));
        }
        Seen::NotOurs => {}
    }
    // Someone else's write at `at`.  With a key guarded by its
    // mod_revision changed there, the guard can never hold again.
    if let Some(w) = ws.iter().find(|w| matches!(w.guard, Guard::ModRevision(_))) {
        return Outcome::NotApplied(changed(w));
    }
    not_yet(&ws, state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str, guard: Guard) -> CommitOp {
        CommitOp::Put {
            key: key.into(),
            value: Some(value.into()),
            lease: None,
            guard,
        }
    }

    fn del(key: &str, guard: Guard) -> CommitOp {
        CommitOp::Delete {
            key: key.into(),
            guard,
        }
    }

    const NEW: Guard = Guard::Absent {
        decided_by_read: false,
    };

    fn kv(value: &str, create: i64, modr: i64) -> Option<KeyState> {
        Some(KeyState {
            value: value.into(),
            mod_revision: modr,
            create_revision: create,
        })
    }

    fn txn(ops: Vec<CommitOp>) -> CommitTxn {
        CommitTxn { ops }
    }

    #[test]
    fn visible_at_one_revision_is_applied() {
        let t = txn(vec![
            put("a", "1", NEW),
            put("b", "2", Guard::ModRevision(5)),
        ]);
        assert_eq!(
            from_now(&t, &[kv("1", 9, 9), kv("2", 3, 9)]),
            Outcome::Applied { revision: 9 }
        );
        // not at one revision: not visibly applied
        assert_ne!(
            from_now(&t, &[kv("1", 9, 9), kv("2", 3, 10)]),
            Outcome::Applied { revision: 9 }
        );
    }

    #[test]
    fn a_created_key_must_be_created_by_the_write() {
        // "a" holds our value at the revision, but was created earlier: it
        // existed, our guard (absent) could not have held
        let t = txn(vec![put("a", "1", NEW), put("b", "2", NEW)]);
        assert_ne!(
            from_now(&t, &[kv("1", 4, 9), kv("2", 9, 9)]),
            Outcome::Applied { revision: 9 }
        );
    }

    #[test]
    fn untouched_guarded_keys_are_undecided() {
        let t = txn(vec![put("a", "1", Guard::ModRevision(5))]);
        assert_eq!(
            from_now(&t, &[kv("0", 2, 5)]),
            Outcome::Undecided(Undecided::NoChangeYet)
        );
        let t = txn(vec![put("a", "1", NEW)]);
        assert_eq!(
            from_now(&t, &[None]),
            Outcome::Undecided(Undecided::NoChangeYet)
        );
    }

    #[test]
    fn one_guarded_key_changed_and_another_not_is_a_conflict() {
        let t = txn(vec![
            put("a", "1", Guard::ModRevision(5)),
            put("b", "2", Guard::ModRevision(6)),
        ]);
        assert_eq!(
            from_now(&t, &[kv("x", 2, 5), kv("y", 2, 8)]),
            Outcome::NotApplied(CommitConflict::Changed(b"b".to_vec()))
        );
        // a guarded key deleted by another writer
        assert_eq!(
            from_now(&t, &[kv("x", 2, 5), None]),
            Outcome::NotApplied(CommitConflict::Changed(b"b".to_vec()))
        );
    }

    #[test]
    fn every_guarded_key_changed_asks_for_first_changes() {
        let t = txn(vec![
            put("a", "1", Guard::ModRevision(5)),
            del("b", Guard::ModRevision(6)),
            put("c", "3", NEW),
        ]);
        assert_eq!(
            from_now(&t, &[kv("z", 2, 12), None, kv("3", 12, 12)]),
            Outcome::FirstChanges(vec![(b"a".to_vec(), 6), (b"b".to_vec(), 7)])
        );
        // at one revision: look at the keys there
        let firsts = [
            FirstChange {
                key: b"a".to_vec(),
                revision: 10,
            },
            FirstChange {
                key: b"b".to_vec(),
                revision: 10,
            },
        ];
        assert_eq!(from_first_changes(&firsts), Outcome::StateAt(10));
        // ours at 10, changed since by another writer: applied
        assert_eq!(
            from_state_at(&t, 10, &[kv("1", 2, 10), None, kv("3", 10, 10)]),
            Outcome::Applied { revision: 10 }
        );
        // another writer's change at 10 (other value): never ours
        assert_eq!(
            from_state_at(&t, 10, &[kv("9", 2, 10), None, kv("3", 10, 10)]),
            Outcome::NotApplied(CommitConflict::Changed(b"a".to_vec()))
        );
        // "c" existed before 10: our guard could not have held at 10
        assert_eq!(
            from_state_at(&t, 10, &[kv("1", 2, 10), None, kv("3", 7, 10)]),
            Outcome::NotApplied(CommitConflict::Changed(b"a".to_vec()))
        );
        // first changes at different revisions: one is another writer's
        let firsts = [
            FirstChange {
                key: b"a".to_vec(),
                revision: 10,
            },
            FirstChange {
                key: b"b".to_vec(),
                revision: 8,
            },
        ];
        assert_eq!(
            from_first_changes(&firsts),
            Outcome::NotApplied(CommitConflict::Changed(b"b".to_vec()))
        );
    }

    #[test]
    fn deletes_only_are_dated_by_history() {
        let t = txn(vec![del("a", Guard::ModRevision(5))]);
        // gone now: by us or by another writer; the first change says
        assert_eq!(
            from_now(&t, &[None]),
            Outcome::FirstChanges(vec![(b"a".to_vec(), 6)])
        );
        // a delete is a delete: another client's is the same write (the
        // key is gone, as committed)
        assert_eq!(
            from_state_at(&t, 9, &[None]),
            Outcome::Applied { revision: 9 }
        );
        // the first change was a put by another writer
        assert_eq!(
            from_state_at(&t, 9, &[kv("q", 2, 9)]),
            Outcome::NotApplied(CommitConflict::Changed(b"a".to_vec()))
        );
    }

    #[test]
    fn created_keys_are_dated_by_their_create_revision() {
        let t = txn(vec![put("a", "1", NEW), put("b", "2", NEW)]);
        // both created at 9, "a" changed since: look at 9
        assert_eq!(
            from_now(&t, &[kv("x", 9, 11), kv("2", 9, 9)]),
            Outcome::StateAt(9)
        );
        assert_eq!(
            from_state_at(&t, 9, &[kv("1", 9, 9), kv("2", 9, 9)]),
            Outcome::Applied { revision: 9 }
        );
        // created at 9 with other values: another writer's keys, which may
        // yet be deleted before our queued request arrives
        assert_eq!(
            from_state_at(&t, 9, &[kv("7", 9, 9), kv("2", 9, 9)]),
            Outcome::Undecided(Undecided::CreatedByAnother(b"a".to_vec()))
        );
        // created at different revisions: not ours
        assert_eq!(
            from_now(&t, &[kv("1", 8, 8), kv("2", 9, 9)]),
            Outcome::Undecided(Undecided::CreatedByAnother(b"a".to_vec()))
        );
        // one created, one absent
        assert_eq!(
            from_now(&t, &[None, kv("2", 9, 9)]),
            Outcome::Undecided(Undecided::CreatedByAnother(b"b".to_vec()))
        );
    }

    #[test]
    fn a_kept_value_cannot_be_told_from_another_write() {
        let t = txn(vec![CommitOp::Put {
            key: b"a".to_vec(),
            value: None,
            lease: Some(7),
            guard: Guard::ModRevision(5),
        }]);
        // unchanged: never "applied" (it was, before this module)
        assert_eq!(
            from_now(&t, &[kv("old", 2, 5)]),
            Outcome::Undecided(Undecided::NoChangeYet)
        );
        // changed: its first change cannot be told apart
        assert_eq!(
            from_now(&t, &[kv("old", 2, 9)]),
            Outcome::FirstChanges(vec![(b"a".to_vec(), 6)])
        );
        assert_eq!(
            from_state_at(&t, 9, &[kv("old", 2, 9)]),
            Outcome::Undecided(Undecided::ValueKept(b"a".to_vec()))
        );
        // but a change at another revision than the one asked about is not ours
        assert_eq!(
            from_state_at(&t, 9, &[kv("old", 2, 8)]),
            Outcome::NotApplied(CommitConflict::Changed(b"a".to_vec()))
        );
    }

    #[test]
    fn a_batch_is_the_transaction_it_sends() {
        let batch = WriteBatch {
            ops: vec![
                WriteOp::Insert {
                    key: b"i".to_vec(),
                    value: b"1".to_vec(),
                    lease: None,
                },
                WriteOp::Put {
                    key: b"p".to_vec(),
                    value: b"2".to_vec(),
                    lease: Some(3),
                },
                WriteOp::Update {
                    old_key: b"u".to_vec(),
                    new_key: b"u".to_vec(),
                    value: None,
                    lease: None,
                    mod_revision: 4,
                },
                WriteOp::Update {
                    old_key: b"o".to_vec(),
                    new_key: b"n".to_vec(),
                    value: Some(b"5".to_vec()),
                    lease: None,
                    mod_revision: 6,
                },
                WriteOp::Delete {
                    key: b"d".to_vec(),
                    mod_revision: 7,
                },
            ],
        };
        let t = batch_txn(&batch);
        assert_eq!(
            t.written_keys(),
            vec![&b"i"[..], b"p", b"u", b"n", b"o", b"d"]
        );
        // the same compares as the batch's own transaction
        assert_eq!(
            t.guarded(),
            vec![
                (&b"i"[..], NEW),
                (&b"u"[..], Guard::ModRevision(4)),
                (&b"n"[..], NEW),
                (&b"o"[..], Guard::ModRevision(6)),
                (&b"d"[..], Guard::ModRevision(7)),
            ]
        );
    }

    mod model {
        //! etcd's keyspace as a small model: writers' transactions at
        //! revisions, ours applied at a chosen point only if its guards
        //! hold; the decision is checked against what really happened.
        use super::super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        const KEYS: [&str; 3] = ["a", "b", "c"];

        type Store = BTreeMap<Vec<u8>, KeyState>;

        struct World {
            rev: i64,
            store: Store,
            /// (revision, the store after it)
            history: Vec<(i64, Store)>,
        }

        impl World {
            /// Apply `writes` (key index, value or delete) at the next
            /// revision; without `always`, only if something changed (an
            /// etcd transaction that deletes nothing creates no revision).
            fn write(&mut self, writes: &[(usize, Option<Vec<u8>>)], always: bool) {
                let mut next = self.store.clone();
                let rev = self.rev + 1;
                let mut changed = always;
                for (k, v) in writes {
                    let key = KEYS[*k].as_bytes().to_vec();
                    match v {
                        Some(v) => {
                            let create = next.get(&key).map_or(rev, |s| s.create_revision);
                            next.insert(
                                key,
                                KeyState {
                                    value: v.clone(),
                                    mod_revision: rev,
                                    create_revision: create,
                                },
                            );
                            changed = true;
                        }
                        None => changed |= next.remove(&key).is_some(),
                    }
                }
                if changed {
                    self.rev = rev;
                    self.store = next.clone();
                    self.history.push((rev, next));
                }
            }

            fn apply(&mut self, writes: &[(usize, Option<Vec<u8>>)]) {
                self.write(writes, false)
            }

            fn guards_hold(&self, txn: &CommitTxn) -> bool {
                txn.guarded()
                    .iter()
                    .all(|(k, g)| match (g, self.store.get(*k)) {
                        (Guard::ModRevision(r), Some(s)) => s.mod_revision == *r,
                        (Guard::ModRevision(_), None) => false,
                        (Guard::Absent { .. }, s) => s.is_none(),
                        (Guard::None, _) => true,
                    })
            }

            fn apply_ours(&mut self, txn: &CommitTxn) {
                let writes: Vec<(usize, Option<Vec<u8>>)> = txn
                    .ops
                    .iter()
                    .filter_map(|op| match op {
                        CommitOp::Put { key, value, .. } => {
                            let k = KEYS.iter().position(|x| x.as_bytes() == key.as_slice())?;
                            let v = value
                                .clone()
                                .or_else(|| self.store.get(key).map(|s| s.value.clone()));
                            Some((k, v))
                        }
                        CommitOp::Delete { key, .. } => KEYS
                            .iter()
                            .position(|x| x.as_bytes() == key.as_slice())
                            .map(|k| (k, None)),
                        CommitOp::DeleteRange(_) => None,
                    })
                    .collect();
                // a put of a kept value is still a write (a new mod_revision)
                self.write(&writes, true);
            }

            fn state_at(&self, initial: &Store, at: i64, keys: &[&[u8]]) -> Vec<Option<KeyState>> {
                let store = self
                    .history
                    .iter()
                    .rev()
                    .find(|(r, _)| *r <= at)
                    .map_or(initial, |(_, s)| s);
                keys.iter().map(|k| store.get(*k).cloned()).collect()
            }

            fn first_change(&self, initial: &Store, key: &[u8], start: i64) -> Option<i64> {
                let mut before = self.state_at(initial, start - 1, &[key]).pop().flatten();
                for (r, s) in &self.history {
                    if *r < start {
                        continue;
                    }
                    let now = s.get(key).cloned();
                    if now != before {
                        return Some(*r);
                    }
                    before = now;
                }
                None
            }
        }

        /// Whether another writer made exactly the transaction's change
        /// at some revision, its guards holding just before (etcd cannot
        /// tell that from the transaction's own write; see the module).
        fn identical_write(w: &World, initial: &Store, txn: &CommitTxn) -> bool {
            let mut before = initial;
            for (x, after) in &w.history {
                let held = txn
                    .guarded()
                    .iter()
                    .all(|(k, g)| match (g, before.get(*k)) {
                        (Guard::ModRevision(r), Some(s)) => s.mod_revision == *r,
                        (Guard::ModRevision(_), None) => false,
                        (Guard::Absent { .. }, s) => s.is_none(),
                        (Guard::None, _) => true,
                    });
                let same = txn.ops.iter().all(|op| match op {
                    CommitOp::Put {
                        key,
                        value: Some(v),
                        ..
                    } => after
                        .get(key)
                        .is_some_and(|s| &s.value == v && s.mod_revision == *x),
                    CommitOp::Put {
                        key, value: None, ..
                    } => after.get(key).is_some_and(|s| s.mod_revision == *x),
                    CommitOp::Delete { key, .. } => {
                        before.contains_key(key) && !after.contains_key(key)
                    }
                    CommitOp::DeleteRange(_) => true,
                });
                if held && same {
                    return true;
                }
                before = after;
            }
            false
        }

        fn decide(w: &World, initial: &Store, txn: &CommitTxn) -> Outcome {
            let keys = txn.written_keys();
            let now: Vec<Option<KeyState>> =
                keys.iter().map(|k| w.store.get(*k).cloned()).collect();
            let mut step = from_now(txn, &now);
            for _ in 0..4 {
                step = match step {
                    Outcome::FirstChanges(list) => {
                        let firsts: Vec<FirstChange> = list
                            .iter()
                            .map(|(k, start)| FirstChange {
                                key: k.clone(),
                                revision: w
                                    .first_change(initial, k, *start)
                                    .expect("a key said to have changed has a first change"),
                            })
                            .collect();
                        from_first_changes(&firsts)
                    }
                    Outcome::StateAt(at) => from_state_at(txn, at, &w.state_at(initial, at, &keys)),
                    done => return done,
                };
            }
            step
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]
            #[test]
            fn decisions_agree_with_what_happened(
                exists in proptest::collection::vec(any::<bool>(), 3),
                ops in proptest::collection::vec(0u8..5, 3),
                others in proptest::collection::vec(
                    proptest::collection::vec((0usize..3, any::<bool>()), 1..3), 0..6),
                ours_at in proptest::option::of(0usize..7),
                mine_value in 0u8..2,
                init_is_mine in any::<bool>(),
            ) {
                let mut w = World { rev: 0, store: Store::new(), history: Vec::new() };
                // a key may already hold the value the transaction writes
                // (an UPDATE to the same value)
                for (k, e) in exists.iter().enumerate() {
                    if *e {
                        let v = if init_is_mine { format!("mine{k}{mine_value}") } else { "init".into() };
                        w.apply(&[(k, Some(v.into_bytes()))]);
                    }
                }
                let initial = w.store.clone();
                // our transaction, guarded by what it read
                let mut txn_ops = Vec::new();
                for (k, op) in ops.iter().enumerate() {
                    let key = KEYS[k].as_bytes().to_vec();
                    let guard = match w.store.get(&key) {
                        Some(s) => Guard::ModRevision(s.mod_revision),
                        None => Guard::Absent { decided_by_read: false },
                    };
                    let exists = w.store.contains_key(&key);
                    match op {
                        1 => txn_ops.push(CommitOp::Put {
                            key,
                            value: Some(format!("mine{k}{mine_value}").into_bytes()),
                            lease: None,
                            guard,
                        }),
                        2 if exists => txn_ops.push(CommitOp::Put { key, value: None, lease: None, guard }),
                        3 if exists => txn_ops.push(CommitOp::Delete { key, guard }),
                        // a put in a range the transaction truncated: unguarded
                        4 => txn_ops.push(CommitOp::Put {
                            key,
                            value: Some(format!("mine{k}{mine_value}").into_bytes()),
                            lease: None,
                            guard: Guard::None,
                        }),
                        _ => {}
                    }
                }
                if txn_ops.is_empty() {
                    // never empty (a commit writes something): put "a"
                    let key = KEYS[0].as_bytes().to_vec();
                    let guard = match w.store.get(&key) {
                        Some(s) => Guard::ModRevision(s.mod_revision),
                        None => Guard::Absent { decided_by_read: false },
                    };
                    txn_ops.push(CommitOp::Put { key, value: Some(b"mine00".to_vec()), lease: None, guard });
                }
                let txn = CommitTxn { ops: txn_ops };
                let mut applied_at = None;
                for (i, writes) in others.iter().enumerate() {
                    if ours_at == Some(i) && applied_at.is_none() && w.guards_hold(&txn) {
                        w.apply_ours(&txn);
                        applied_at = Some(w.rev);
                    }
                    let writes: Vec<(usize, Option<Vec<u8>>)> = writes
                        .iter()
                        .map(|(k, put)| (*k, put.then(|| format!("other{}", w.rev).into_bytes())))
                        .collect();
                    w.apply(&writes);
                }
                if ours_at.is_some_and(|p| p >= others.len()) && applied_at.is_none() && w.guards_hold(&txn) {
                    w.apply_ours(&txn);
                    applied_at = Some(w.rev);
                }
                let decision = decide(&w, &initial, &txn);
                match &decision {
                    Outcome::Applied { revision } => prop_assert!(
                        applied_at == Some(*revision) || identical_write(&w, &initial, &txn)
                            || (txn.guarded().is_empty() && txn.ops.iter().all(|op| match op {
                                CommitOp::Put { key, value: Some(v), .. } => w.store.get(key)
                                    .is_some_and(|s| &s.value == v && s.mod_revision == *revision),
                                CommitOp::Delete { key, .. } => !w.store.contains_key(key),
                                _ => false,
                            })),
                        "taken for applied: {:?}", txn
                    ),
                    Outcome::NotApplied(_) => {
                        prop_assert!(applied_at.is_none(), "taken for refused, was applied at {:?}", applied_at);
                        prop_assert!(!w.guards_hold(&txn), "refused, but could still apply");
                        // nor ever after: a mod_revision guard is broken for good
                        prop_assert!(txn.guarded().iter().any(|(k, g)| matches!(g, Guard::ModRevision(r)
                            if w.store.get(*k).is_none_or(|s| s.mod_revision != *r))));
                    }
                    Outcome::Undecided(_) => {}
                    other => prop_assert!(false, "unfinished: {:?}", other),
                }
                // complete where it can be: applied, nothing after it, a
                // value written to a key it read or creates (a put in a
                // truncated range alone dates nothing)
                let has_value = txn.ops.iter().any(|op| matches!(op,
                    CommitOp::Put { value: Some(_), guard: Guard::ModRevision(_) | Guard::Absent { .. }, .. }));
                if applied_at == Some(w.rev) && has_value {
                    prop_assert_eq!(decision, Outcome::Applied { revision: w.rev });
                }
            }
        }
    }
}
