//! The write layer: every INSERT, UPDATE and DELETE becomes a [`WriteOp`]
//! with the guard that makes it safe (the key must not exist yet, or must
//! still be at the revision the scan read).  Ops are packed into etcd
//! transactions that respect etcd's per-transaction operation limit and a
//! request-size budget; each transaction is all-or-nothing, and a failed
//! guard is diagnosed from the values etcd returns in the `else` branch.
//!
//! Deferring a whole PostgreSQL transaction's writes to COMMIT would only
//! change *when* [`WriteBatch`]es are sent, not what they contain.

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};

/// One row-level change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Put a key that must not exist.
    Insert {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: Option<i64>,
    },
    /// Rewrite (and possibly rename) a key still at `mod_revision`.
    /// `value`/`lease` `None`: the statement did not set them, keep the
    /// old key's exactly (a rename copies them, see [`old_row_reads`]).
    Update {
        old_key: Vec<u8>,
        new_key: Vec<u8>,
        value: Option<Vec<u8>>,
        lease: Option<i64>,
        mod_revision: i64,
    },
    /// Delete a key still at `mod_revision`.
    Delete { key: Vec<u8>, mod_revision: i64 },
    /// Create or overwrite a key, unguarded (`insert_mode 'put'`, like
    /// `etcdctl put`): lease `None` is no lease.
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: Option<i64>,
    },
}

impl WriteOp {
    fn is_rename(&self) -> bool {
        matches!(self, WriteOp::Update { old_key, new_key, .. } if old_key != new_key)
    }

    /// Keys this op touches (for duplicate detection inside a txn).
    pub fn keys(&self) -> Vec<&[u8]> {
        match self {
            WriteOp::Insert { key, .. }
            | WriteOp::Delete { key, .. }
            | WriteOp::Put { key, .. } => {
                vec![key]
            }
            WriteOp::Update {
                old_key, new_key, ..
            } => {
                if old_key == new_key {
                    vec![old_key]
                } else {
                    vec![old_key, new_key]
                }
            }
        }
    }

    /// (compares, success ops) this op adds to a transaction.
    fn op_counts(&self) -> (usize, usize) {
        if matches!(self, WriteOp::Put { .. }) {
            (0, 1)
        } else if self.is_rename() {
            (2, 2)
        } else {
            (1, 1)
        }
    }

    /// Request bytes this op adds (keys and value, roughly).
    fn bytes(&self) -> usize {
        match self {
            WriteOp::Insert { key, value, .. } | WriteOp::Put { key, value, .. } => {
                2 * key.len() + value.len() + 16
            }
            WriteOp::Update {
                old_key,
                new_key,
                value,
                ..
            } => 2 * old_key.len() + 2 * new_key.len() + value.as_ref().map_or(0, Vec::len) + 32,
            WriteOp::Delete { key, .. } => 3 * key.len() + 16,
        }
    }

    fn compares(&self) -> Vec<Compare> {
        match self {
            WriteOp::Put { .. } => Vec::new(),
            WriteOp::Insert { key, .. } => {
                vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)]
            }
            WriteOp::Update {
                old_key,
                new_key,
                mod_revision,
                ..
            } => {
                let mut c = vec![Compare::mod_revision(
                    old_key.clone(),
                    CompareOp::Equal,
                    *mod_revision,
                )];
                if old_key != new_key {
                    c.push(Compare::create_revision(
                        new_key.clone(),
                        CompareOp::Equal,
                        0,
                    ));
                }
                c
            }
            WriteOp::Delete { key, mod_revision } => vec![Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                *mod_revision,
            )],
        }
    }

    /// A rename whose value or lease the statement did not set: the old
    /// key's must be read first (etcd cannot copy them in a transaction).
    pub fn needs_old_row(&self) -> bool {
        matches!(self, WriteOp::Update { value, lease, .. }
            if self.is_rename() && (value.is_none() || lease.is_none()))
    }

    /// With `prev`, puts and deletes return the previous key-value (for
    /// RETURNING); otherwise etcd is spared sending it.  A value or lease
    /// of `None` is etcd's `ignore_value`/`ignore_lease`: the key keeps
    /// its own (and a put of a key that does not exist fails, so an
    /// unresolved rename can never write an empty value).
    fn success_ops(&self, prev: bool) -> Vec<TxnOp> {
        let put = |key: &Vec<u8>, value: &Option<Vec<u8>>, lease: &Option<i64>| {
            put_keeping(key, value.as_deref(), *lease, prev)
        };
        match self {
            WriteOp::Insert { key, value, lease } => {
                let o = PutOptions::new().with_lease(lease.unwrap_or(0));
                vec![TxnOp::put(key.clone(), value.clone(), Some(o))]
            }
            WriteOp::Put { key, value, lease } => {
                vec![put_keeping(
                    key,
                    Some(value),
                    Some(lease.unwrap_or(0)),
                    prev,
                )]
            }
            WriteOp::Update {
                old_key,
                new_key,
                value,
                lease,
                ..
            } => {
                if old_key == new_key {
                    vec![put(new_key, value, lease)]
                } else {
                    vec![
                        put(new_key, value, lease),
                        TxnOp::delete(old_key.clone(), None),
                    ]
                }
            }
            WriteOp::Delete { key, .. } => {
                let o = if prev {
                    DeleteOptions::new().with_prev_key()
                } else {
                    DeleteOptions::new()
                };
                vec![TxnOp::delete(key.clone(), Some(o))]
            }
        }
    }
}

/// Indexes of the ops in `ops` that must read their old row first (see
/// [`WriteOp::needs_old_row`]).
pub fn renames_to_resolve(ops: &[WriteOp]) -> Vec<usize> {
    (0..ops.len()).filter(|&i| ops[i].needs_old_row()).collect()
}

/// What etcd holds for a key (read back when a write needs it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdRow {
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub lease: i64,
}

/// Copy the old rows read for `ops[i]`, `i` in `idx` (`rows[n]` for
/// `idx[n]`; `None`: the key is gone) into the renames.  A key that is
/// gone or changed since the scan read it is a conflict: the rename would
/// fail its guard anyway.
pub fn fill_old_rows(
    ops: &mut [WriteOp],
    idx: &[usize],
    rows: &[Option<EtcdRow>],
) -> Result<(), Conflict> {
    for (n, &i) in idx.iter().enumerate() {
        if let WriteOp::Update {
            old_key,
            value,
            lease,
            mod_revision,
            ..
        } = &mut ops[i]
        {
            match rows.get(n).and_then(Option::as_ref) {
                Some(r) if r.mod_revision == *mod_revision => {
                    value.get_or_insert_with(|| r.value.clone());
                    lease.get_or_insert(r.lease);
                }
                _ => return Err(Conflict::Changed(old_key.clone())),
            }
        }
    }
    Ok(())
}

/// A put of `key`; a `value` or `lease` of `None` keeps the key's own
/// (etcd's `ignore_value` / `ignore_lease`, which fail for a key that does
/// not exist).  With `prev`, the previous key-value comes back.
pub fn put_keeping(key: &[u8], value: Option<&[u8]>, lease: Option<i64>, prev: bool) -> TxnOp {
    let mut o = PutOptions::new();
    if prev {
        o = o.with_prev_key();
    }
    o = match lease {
        Some(l) => o.with_lease(l),
        None => o.with_ignore_lease(),
    };
    let bytes = match value {
        Some(v) => v.to_vec(),
        None => {
            o = o.with_ignore_value();
            Vec::new()
        }
    };
    TxnOp::put(key.to_vec(), bytes, Some(o))
}

/// Limits of one etcd transaction.
#[derive(Clone, Copy, Debug)]
pub struct TxnLimits {
    /// etcd's `--max-txn-ops` (default 128).
    pub max_ops: usize,
    /// Request-size budget (when packing several transactions, one op
    /// larger than this still goes alone).
    pub max_bytes: usize,
}

impl TxnLimits {
    /// A transaction that must be one request (a PostgreSQL transaction's
    /// commit): etcd's whole default --max-request-bytes (1.5 MiB) less
    /// headroom for the request's framing.
    pub fn one_request(max_ops: usize) -> Self {
        TxnLimits {
            max_ops,
            max_bytes: 1536 * 1024 - 16 * 1024,
        }
    }
}

impl Default for TxnLimits {
    fn default() -> Self {
        TxnLimits {
            max_ops: 128,
            max_bytes: 1024 * 1024,
        }
    }
}

/// Ops that go to etcd in one transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<WriteOp>,
}

/// The first key inserted twice by `ops`: a unique violation of the
/// statement itself, refused before anything is sent.
pub fn duplicate_insert(ops: &[WriteOp]) -> Option<&[u8]> {
    let mut seen = std::collections::HashSet::new();
    ops.iter().find_map(|op| match op {
        WriteOp::Insert { key, .. } if !seen.insert(key.as_slice()) => Some(key.as_slice()),
        _ => None,
    })
}

/// Split `ops` into transactions: each within `limits`, and no key twice
/// in one transaction (etcd refuses that).  Inserts larger than the size
/// budget go first, each alone, largest first: if etcd refuses one as too
/// large, it is the first request, so nothing else of the statement's
/// batch has been written.  Otherwise order is preserved.
pub fn pack(mut ops: Vec<WriteOp>, limits: TxnLimits) -> Vec<WriteBatch> {
    let oversized = |op: &WriteOp| {
        matches!(op, WriteOp::Insert { .. } | WriteOp::Put { .. }) && op.bytes() > limits.max_bytes
    };
    // Puts of one key twice must keep their order (the last one wins).
    let puts_repeat_a_key = || {
        let mut seen = std::collections::HashSet::new();
        ops.iter()
            .any(|op| matches!(op, WriteOp::Put { key, .. } if !seen.insert(key.as_slice())))
    };
    if ops.iter().any(oversized) && !puts_repeat_a_key() {
        let (mut big, rest): (Vec<_>, Vec<_>) = ops.into_iter().partition(oversized);
        // Stable: equal sizes keep their order.
        big.sort_by_key(|op| std::cmp::Reverse(op.bytes()));
        ops = big.into_iter().chain(rest).collect();
    }
    let mut out = Vec::new();
    let mut cur = WriteBatch::default();
    let (mut compares, mut success, mut bytes) = (0usize, 0usize, 0usize);
    let mut keys: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    for op in ops {
        let (c, s) = op.op_counts();
        let b = op.bytes();
        let dup = op.keys().iter().any(|k| keys.contains(*k));
        let full = compares + c > limits.max_ops
            || success + s > limits.max_ops
            || (bytes + b > limits.max_bytes && !cur.ops.is_empty());
        if !cur.ops.is_empty() && (dup || full) {
            out.push(std::mem::take(&mut cur));
            compares = 0;
            success = 0;
            bytes = 0;
            keys.clear();
        }
        compares += c;
        success += s;
        bytes += b;
        keys.extend(op.keys().into_iter().map(<[u8]>::to_vec));
        cur.ops.push(op);
    }
    if !cur.ops.is_empty() {
        out.push(cur);
    }
    out
}

impl WriteBatch {
    /// The guarded transaction; its `else` branch reads every compared key
    /// back (keys only) so a failure can be explained.  `returning` asks
    /// for the previous values needed by [`rows_after`].
    pub fn txn(&self, returning: bool) -> Txn {
        let mut compares = Vec::new();
        let mut success = Vec::new();
        let mut failure = Vec::new();
        for op in &self.ops {
            compares.extend(op.compares());
            success.extend(op.success_ops(returning));
            for k in op.keys() {
                failure.push(TxnOp::get(
                    k.to_vec(),
                    Some(GetOptions::new().with_keys_only()),
                ));
            }
        }
        Txn::new().when(compares).and_then(success).or_else(failure)
    }
}

/// Why a guarded transaction did not apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// Inserted or renamed-to keys exist (every one the transaction
    /// tried, in op order; at least one).
    KeyExists(Vec<Vec<u8>>),
    /// A key changed or vanished since the scan read it.
    Changed(Vec<u8>),
}

/// What a row looks like after a successful op, for RETURNING.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowAfter {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

impl From<&KeyValue> for RowAfter {
    fn from(kv: &KeyValue) -> Self {
        RowAfter {
            key: kv.key().to_vec(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            lease: kv.lease(),
        }
    }
}

fn first_kv(resp: Option<&TxnOpResponse>) -> Option<KeyValue> {
    match resp? {
        TxnOpResponse::Get(g) => g.kvs().first().cloned(),
        _ => None,
    }
}

/// Explain a failed transaction from its `else`-branch reads: the first
/// key that changed since it was read, or else every key that exists
/// although it was to be created.
pub fn diagnose(batch: &WriteBatch, resp: &TxnResponse) -> Conflict {
    let reads = resp.op_responses();
    let mut i = 0;
    let mut existing = Vec::new();
    for op in &batch.ops {
        let n = op.keys().len();
        let got: Vec<Option<KeyValue>> = (0..n).map(|j| first_kv(reads.get(i + j))).collect();
        i += n;
        let changed = |key: &Vec<u8>, rev: &i64, kv: &Option<KeyValue>| {
            (kv.as_ref().map(|kv| kv.mod_revision()) != Some(*rev)).then(|| key.clone())
        };
        match op {
            WriteOp::Insert { key, .. } => {
                if got[0].is_some() {
                    existing.push(key.clone());
                }
            }
            WriteOp::Update {
                old_key,
                new_key,
                mod_revision,
                ..
            } => {
                if let Some(k) = changed(old_key, mod_revision, &got[0]) {
                    return Conflict::Changed(k);
                }
                if old_key != new_key && got.get(1).is_some_and(|g| g.is_some()) {
                    existing.push(new_key.clone());
                }
            }
            WriteOp::Delete { key, mod_revision } => {
                if let Some(k) = changed(key, mod_revision, &got[0]) {
                    return Conflict::Changed(k);
                }
            }
            WriteOp::Put { .. } => {}
        }
    }
    if !existing.is_empty() {
        return Conflict::KeyExists(existing);
    }
    // Every guard holds now: someone changed things between the
    // transaction and the reads.  Report the first key as changed.
    Conflict::Changed(
        batch
            .ops
            .first()
            .map_or(Vec::new(), |o| o.keys()[0].to_vec()),
    )
}

/// The rows after a successful transaction, one per op (for a delete: the
/// row as it was).
pub fn rows_after(batch: &WriteBatch, resp: &TxnResponse) -> Vec<RowAfter> {
    let rev = resp.header().map_or(0, |h| h.revision());
    let results = resp.op_responses();
    let mut i = 0;
    let mut out = Vec::with_capacity(batch.ops.len());
    for op in &batch.ops {
        let prev = |r: Option<&TxnOpResponse>| -> RowAfter {
            let kv = match r {
                Some(TxnOpResponse::Put(p)) => p.prev_key(),
                Some(TxnOpResponse::Delete(d)) => d.prev_kvs().first(),
                _ => None,
            };
            kv.map(RowAfter::from).unwrap_or_default()
        };
        match op {
            WriteOp::Insert { key, value, lease } => {
                i += 1;
                out.push(RowAfter {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: rev,
                    mod_revision: rev,
                    version: 1,
                    lease: lease.unwrap_or(0),
                });
            }
            WriteOp::Update {
                old_key,
                new_key,
                value,
                lease,
                ..
            } => {
                let p = prev(results.get(i));
                if old_key == new_key {
                    i += 1;
                    out.push(RowAfter {
                        key: new_key.clone(),
                        value: value.clone().unwrap_or(p.value),
                        create_revision: p.create_revision,
                        mod_revision: rev,
                        version: p.version + 1,
                        lease: lease.unwrap_or(p.lease),
                    });
                } else {
                    i += 2;
                    out.push(RowAfter {
                        key: new_key.clone(),
                        value: value.clone().unwrap_or_default(),
                        create_revision: rev,
                        mod_revision: rev,
                        version: 1,
                        lease: lease.unwrap_or(p.lease),
                    });
                }
            }
            WriteOp::Put { key, value, lease } => {
                // The previous row (RETURNING asks for it) says whether
                // the put created the key or overwrote it.
                let p = prev(results.get(i));
                i += 1;
                let existed = p.create_revision != 0;
                out.push(RowAfter {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: if existed { p.create_revision } else { rev },
                    mod_revision: rev,
                    version: p.version + 1,
                    lease: lease.unwrap_or(0),
                });
            }
            WriteOp::Delete { key, .. } => {
                let p = prev(results.get(i));
                i += 1;
                out.push(RowAfter {
                    key: key.clone(),
                    value: p.value,
                    create_revision: p.create_revision,
                    mod_revision: p.mod_revision,
                    version: p.version,
                    lease: p.lease,
                });
            }
        }
    }
    out
}

/// What to read for [`rows_after`]'s rows when a batch was applied at
/// `revision` but its answer was lost: per op, the key it wrote as it was
/// at `revision`, or the key it deleted as it was just before.
pub fn row_reads(batch: &WriteBatch, revision: i64) -> Vec<(Vec<u8>, i64)> {
    batch
        .ops
        .iter()
        .map(|op| match op {
            WriteOp::Insert { key, .. } | WriteOp::Put { key, .. } => (key.clone(), revision),
            WriteOp::Update { new_key, .. } => (new_key.clone(), revision),
            WriteOp::Delete { key, .. } => (key.clone(), revision - 1),
        })
        .collect()
}

/// etcd's `ItemPointer` trick: the mod_revision a scan read travels to the
/// modify callbacks in the tuple's ctid (48 bits: block number and offset).
pub fn revision_to_tid(rev: i64) -> Option<(u32, u16)> {
    if !(0..(1i64 << 48)).contains(&rev) {
        return None;
    }
    Some(((rev >> 16) as u32, (rev & 0xffff) as u16))
}

pub fn tid_to_revision(block: u32, offset: u16) -> i64 {
    ((block as i64) << 16) | offset as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_are_unguarded_and_keep_their_order() {
        let put = |k: &str, v: usize| WriteOp::Put {
            key: k.as_bytes().to_vec(),
            value: vec![b'x'; v],
            lease: None,
        };
        let limits = TxnLimits {
            max_ops: 128,
            max_bytes: 1000,
        };
        // a key twice: two transactions, in statement order (the last wins),
        // also when the second one is oversized
        let batches = pack(vec![put("a", 1), put("b", 1), put("a", 5000)], limits);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].ops, vec![put("a", 1), put("b", 1)]);
        assert_eq!(batches[1].ops, vec![put("a", 5000)]);
        // no compares: a put needs no guard
        assert!(put("a", 1).compares().is_empty());
        assert_eq!(put("a", 1).op_counts(), (0, 1));
        assert_eq!(duplicate_insert(&[put("a", 1), put("a", 2)]), None);
    }

    fn ins(k: &str) -> WriteOp {
        WriteOp::Insert {
            key: k.as_bytes().to_vec(),
            value: b"v".to_vec(),
            lease: None,
        }
    }

    #[test]
    fn packs_by_op_limit() {
        let ops: Vec<_> = (0..300).map(|i| ins(&format!("k{i}"))).collect();
        let b = pack(ops, TxnLimits::default());
        assert_eq!(
            b.iter().map(|b| b.ops.len()).collect::<Vec<_>>(),
            vec![128, 128, 44]
        );
        assert!(pack(Vec::new(), TxnLimits::default()).is_empty());
        let renames: Vec<_> = (0..100)
            .map(|i| WriteOp::Update {
                old_key: format!("a{i}").into_bytes(),
                new_key: format!("b{i}").into_bytes(),
                value: Some(vec![]),
                lease: None,
                mod_revision: 1,
            })
            .collect();
        // Each rename is two compares and two ops: 64 per transaction.
        assert_eq!(pack(renames, TxnLimits::default())[0].ops.len(), 64);
    }

    #[test]
    fn packs_by_bytes_and_duplicates() {
        let big = |k: &str| WriteOp::Insert {
            key: k.as_bytes().to_vec(),
            value: vec![0; 600 * 1024],
            lease: None,
        };
        let b = pack(vec![big("a"), big("b"), ins("c")], TxnLimits::default());
        assert_eq!(b.len(), 2, "two 600 KiB values do not share a 1 MiB txn");
        let huge = WriteOp::Insert {
            key: b"a".to_vec(),
            value: vec![0; 1200 * 1024],
            lease: None,
        };
        let b = pack(vec![ins("c"), huge, ins("d")], TxnLimits::default());
        assert_eq!(
            b[0].ops[0].keys(),
            vec![&b"a"[..]],
            "oversized inserts go first"
        );
        assert_eq!(b.len(), 2);
        assert_eq!(
            duplicate_insert(&[ins("a"), ins("b"), ins("a")]),
            Some(&b"a"[..])
        );
        assert_eq!(duplicate_insert(&[ins("a"), ins("b")]), None);
        let b = pack(vec![ins("a"), ins("b"), ins("a")], TxnLimits::default());
        assert_eq!(
            b.iter().map(|b| b.ops.len()).collect::<Vec<_>>(),
            vec![2, 1],
            "a key never appears twice in one txn"
        );
    }

    #[test]
    fn renames_read_what_the_statement_did_not_set() {
        let upd = |old: &str, new: &str, value: Option<&str>, lease: Option<i64>| WriteOp::Update {
            old_key: old.as_bytes().to_vec(),
            new_key: new.as_bytes().to_vec(),
            value: value.map(|v| v.as_bytes().to_vec()),
            lease,
            mod_revision: 5,
        };
        assert!(upd("a", "b", Some("v"), None).needs_old_row(), "lease kept");
        assert!(upd("a", "b", None, Some(0)).needs_old_row(), "value kept");
        assert!(!upd("a", "b", Some("v"), Some(7)).needs_old_row());
        assert!(
            !upd("a", "a", None, None).needs_old_row(),
            "same key: etcd's ignore_value/ignore_lease keep them"
        );
        let ops = vec![
            ins("x"),
            upd("a", "a", None, None),
            upd("a2", "b", Some("v"), Some(1)),
            upd("a3", "c", Some("v"), None),
            upd("a4", "d", None, None),
        ];
        assert_eq!(renames_to_resolve(&ops), vec![3, 4]);
        let mut ops = ops;
        let row = |rev| {
            Some(EtcdRow {
                value: b"old".to_vec(),
                mod_revision: rev,
                lease: 9,
            })
        };
        assert_eq!(fill_old_rows(&mut ops, &[3, 4], &[row(5), row(5)]), Ok(()));
        assert_eq!(
            ops[3],
            upd("a3", "c", Some("v"), Some(9)),
            "the set value stays"
        );
        assert_eq!(ops[4], upd("a4", "d", Some("old"), Some(9)));
        assert_eq!(
            fill_old_rows(&mut ops, &[3], &[row(6)]),
            Err(Conflict::Changed(b"a3".to_vec())),
            "changed since the scan read it"
        );
        assert_eq!(
            fill_old_rows(&mut ops, &[4], &[None]),
            Err(Conflict::Changed(b"a4".to_vec()))
        );
    }

    #[test]
    fn revisions_fit_in_a_tid() {
        for rev in [0, 1, 65535, 65536, (1 << 48) - 1] {
            let (b, o) = revision_to_tid(rev).unwrap();
            assert_eq!(tid_to_revision(b, o), rev);
        }
        assert_eq!(revision_to_tid(1 << 48), None);
        assert_eq!(revision_to_tid(-1), None);
    }
}
