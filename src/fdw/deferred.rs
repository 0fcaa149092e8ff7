//! Writes in `etcd_fdw.commit_mode = 'transaction'`: every row change goes
//! into the transaction's pending set (core `pending` module) instead of
//! etcd; `xact` commits it.  Guards are the same as for immediate writes:
//! an inserted key must be absent, a changed row must still be at the
//! mod_revision its scan read (or be the transaction's own pending row).
//! RETURNING shows key and value; the metadata columns are NULL until the
//! commit assigns them.

use etcd_fdw_core::client::EtcdError;
use etcd_fdw_core::etcd_client::GetOptions;
use etcd_fdw_core::keyrange::KeySet;
use etcd_fdw_core::options::effective_batch_size;
use etcd_fdw_core::pending::{Pending, PendingError, PendingTxn, ReadFrom};
use etcd_fdw_core::writes::{Conflict, RowAfter, WriteOp};
use pgrx::pg_sys;

use super::modify::ModifyExec;
use crate::catalog::ServerInfo;
use crate::connection;
use crate::xact::{self, CreatedBy};

/// How a scan's row reached the modify callbacks: a mod_revision of 0
/// marks a row of the transaction's own pending state.
pub fn read_from(mod_revision: i64) -> ReadFrom {
    if mod_revision == 0 {
        ReadFrom::Pending
    } else {
        ReadFrom::Etcd { mod_revision }
    }
}

impl ModifyExec {
    fn pending<R>(&self, f: impl FnOnce(&mut PendingTxn) -> R) -> R {
        xact::with_pending(&self.server, f)
    }

    /// This statement as the creator of keys, for the HINT at COMMIT.
    fn creator(&self, by: CreatedBy) -> xact::Creator {
        xact::Creator {
            by,
            relid: self.relid,
            table_sets_insert_mode: self.table_sets_insert_mode,
        }
    }

    /// This table, for the HINT of a transaction grown too large.
    fn writer(&self) -> xact::Writer {
        xact::Writer::Table {
            relid: self.relid,
            sets_commit_mode: self.table_sets_commit_mode,
        }
    }

    fn refused(&self, e: PendingError) -> ! {
        match e {
            PendingError::DuplicateKey(k) => self.conflict_error(&Conflict::KeyExists(vec![k])),
            PendingError::NotPending(k) => self.conflict_error(&Conflict::Changed(k)),
        }
    }

    /// Record `op` in the transaction (filling `slot` for RETURNING; every
    /// column when `whole_row`).  `old_value`: a deleted row's value as the
    /// statement's scan read it, when it carried it.
    ///
    /// # Safety
    /// `slot` is the callback's slot; runs in the per-row context.
    pub(super) unsafe fn defer(
        &mut self,
        op: WriteOp,
        slot: *mut pg_sys::TupleTableSlot,
        whole_row: bool,
        old_value: Option<Vec<u8>>,
    ) {
        let level = xact::nest_level();
        // The key this row writes, to name it if it overflows the commit.
        let written_key = match &op {
            WriteOp::Insert { key, .. }
            | WriteOp::Delete { key, .. }
            | WriteOp::Put { key, .. } => key.clone(),
            WriteOp::Update { new_key, .. } => new_key.clone(),
        };
        let returned = match op {
            WriteOp::Insert { key, value, lease } => {
                let row = self.returning.then(|| RowAfter {
                    key: key.clone(),
                    value: value.clone(),
                    ..RowAfter::default()
                });
                if let Err(e) = self.pending(|p| p.insert(&key, value, lease, level, false)) {
                    self.refused(e);
                }
                xact::note_created_by(&self.server, self.creator(self.created_by));
                row.unwrap_or_default()
            }
            WriteOp::Put { key, value, lease } => {
                let row = self.returning.then(|| RowAfter {
                    key: key.clone(),
                    value: value.clone(),
                    ..RowAfter::default()
                });
                self.pending(|p| p.put(&key, value, lease, level));
                row.unwrap_or_default()
            }
            WriteOp::Update {
                old_key,
                new_key,
                value,
                lease,
                mod_revision,
            } => {
                let read = read_from(mod_revision);
                if old_key == new_key {
                    let state = Pending::Put {
                        value: value.clone(),
                        lease,
                    };
                    if let Err(e) = self.pending(|p| p.change(&old_key, read, state, level)) {
                        self.refused(e);
                    }
                    let value =
                        value.or_else(|| match self.pending(|p| p.get(&old_key).cloned()) {
                            Some(Pending::Put { value, .. }) => value,
                            _ => None,
                        });
                    RowAfter {
                        key: new_key,
                        value: value.unwrap_or_default(),
                        ..RowAfter::default()
                    }
                } else {
                    let (value, lease) = self.rename_source(&old_key, read, value, lease);
                    let r = self.pending(|p| {
                        p.change(&old_key, read, Pending::Deleted, level)?;
                        p.insert(&new_key, value.clone(), Some(lease), level, false)
                    });
                    if let Err(e) = r {
                        self.refused(e);
                    }
                    xact::note_created_by(&self.server, self.creator(CreatedBy::Other));
                    RowAfter {
                        key: new_key,
                        value,
                        ..RowAfter::default()
                    }
                }
            }
            WriteOp::Delete { key, mod_revision } => {
                let read = read_from(mod_revision);
                let value = if self.returning {
                    self.row_value(&key, read, old_value)
                } else {
                    Vec::new()
                };
                if let Err(e) = self.pending(|p| p.change(&key, read, Pending::Deleted, level)) {
                    self.refused(e);
                }
                RowAfter {
                    key,
                    value,
                    ..RowAfter::default()
                }
            }
        };
        xact::check_size(
            &self.server,
            self.batch_size,
            Some(&written_key),
            self.writer(),
        );
        if self.returning {
            self.fill_slot(slot, &returned, whole_row, false);
        }
    }

    /// Value and lease of a renamed key: those the statement set, else the
    /// old key's (its pending put, or etcd's row at the revision read).
    fn rename_source(
        &self,
        old_key: &[u8],
        read: ReadFrom,
        value: Option<Vec<u8>>,
        lease: Option<i64>,
    ) -> (Vec<u8>, i64) {
        let (mut value, mut lease) = (value, lease);
        if let Some(Pending::Put { value: v, lease: l }) = self.pending(|p| p.get(old_key).cloned())
        {
            value = value.or(v);
            lease = lease.or(l);
        }
        if value.is_none() || lease.is_none() {
            // etcd's row; when the scan read it from etcd, it must still be
            // at that revision (the commit would fail anyway).
            let row = self.read_rows(&[old_key.to_vec()], false).pop().flatten();
            match (row, read) {
                (Some(r), ReadFrom::Etcd { mod_revision }) if r.mod_revision != mod_revision => {
                    self.conflict_error(&Conflict::Changed(old_key.to_vec()))
                }
                (Some(r), _) => {
                    value = value.or(Some(r.value));
                    lease = lease.or(Some(r.lease));
                }
                (None, _) => self.conflict_error(&Conflict::Changed(old_key.to_vec())),
            }
        }
        (value.unwrap_or_default(), lease.unwrap_or(0))
    }

    /// The value of the row being deleted, for RETURNING: the pending
    /// state's, or the one the scan carried (`scanned`), or etcd's at the
    /// revision the scan read.
    fn row_value(&self, key: &[u8], read: ReadFrom, scanned: Option<Vec<u8>>) -> Vec<u8> {
        if let Some(Pending::Put { value: Some(v), .. }) = self.pending(|p| p.get(key).cloned()) {
            return v;
        }
        if let Some(v) = scanned {
            return v;
        }
        let revision = match read {
            ReadFrom::Etcd { mod_revision } => mod_revision,
            ReadFrom::Pending => 0,
        };
        let key = key.to_vec();
        let resp = connection::with_retry(&self.server, &|| self.what(), |mut kv| {
            let key = key.clone();
            async move {
                let o = GetOptions::new().with_revision(revision);
                kv.get(key, Some(o)).await.map_err(EtcdError::from)
            }
        });
        resp.kvs()
            .first()
            .map_or(Vec::new(), |kv| kv.value().to_vec())
    }

    /// INSERT ... ON CONFLICT DO NOTHING in a transaction: decide now
    /// which keys exist (etcd's, or the transaction's own puts), record
    /// the others guarded by that decision.  The row each op created, or
    /// `None` for a skipped one.
    pub(super) fn defer_skipping_existing(&mut self, ops: Vec<WriteOp>) -> Vec<Option<RowAfter>> {
        let keys: Vec<Vec<u8>> = ops.iter().map(|op| op.keys()[0].to_vec()).collect();
        let in_etcd = self.read_rows(&keys, true);
        let level = xact::nest_level();
        let mut out = Vec::with_capacity(ops.len());
        for (op, etcd_row) in ops.into_iter().zip(in_etcd) {
            let WriteOp::Insert { key, value, lease } = op else {
                out.push(None);
                continue;
            };
            let exists = self.pending(|p| match p.get(&key) {
                Some(Pending::Put { .. }) => true,
                Some(Pending::Deleted) => false,
                None => etcd_row.is_some() && !p.in_truncated(&key),
            });
            if exists {
                out.push(None);
                continue;
            }
            let row = RowAfter {
                key: key.clone(),
                value: value.clone(),
                ..RowAfter::default()
            };
            if let Err(e) = self.pending(|p| p.insert(&key, value, lease, level, true)) {
                self.refused(e);
            }
            xact::check_size(&self.server, self.batch_size, Some(&key), self.writer());
            out.push(Some(row));
        }
        out
    }
}

/// TRUNCATE in a transaction: the table's ranges are deleted at commit.
pub fn defer_truncate(
    server: &ServerInfo,
    keys: &KeySet,
    table: &etcd_fdw_core::options::TableOptions,
    relid: pg_sys::Oid,
) {
    let level = xact::nest_level();
    xact::with_pending(server, |p| {
        for r in keys.ranges() {
            p.truncate(r.clone(), level);
        }
    });
    let writer = xact::Writer::Table {
        relid,
        sets_commit_mode: table.commit_mode.is_some(),
    };
    xact::check_size(
        server,
        effective_batch_size(&server.options, table),
        None,
        writer,
    );
}
