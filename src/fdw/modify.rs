//! INSERT, UPDATE, DELETE, COPY FROM and TRUNCATE.
//!
//! Every row change becomes a guarded [`WriteOp`] (core `writes` module):
//! an INSERT requires the key to be absent (create_revision = 0), an UPDATE
//! or DELETE requires the key to still be at the mod_revision the scan read
//! (carried in the row's ctid, so the table needs no mod_revision column).
//! Without RETURNING, ops are buffered and sent as etcd transactions of up
//! to `batch_size` operations (PostgreSQL's batch-insert API for INSERT,
//! an internal buffer for UPDATE/DELETE/COPY, flushed at the end of the
//! statement); with RETURNING each row is written at once so the returned
//! metadata is real.

use std::ffi::CStr;

use etcd_fdw_core::client::{self, EtcdError};
use etcd_fdw_core::etcd_client::{GetOptions, Txn, TxnOp, TxnOpResponse};
use etcd_fdw_core::keyrange::KeySet;
use etcd_fdw_core::options::{
    effective_batch_size, effective_insert_mode, InsertMode, InvalidValues, TableOptions,
};
use etcd_fdw_core::outcome;
use etcd_fdw_core::plan::ModifyFlags;
use etcd_fdw_core::writes::{
    self, pack, tid_to_revision, Conflict, EtcdRow, RowAfter, TxnLimits, WriteBatch, WriteOp,
};
use pgrx::pg_sys;
use pgrx::{PgList, PgMemoryContexts, PgSqlErrorCode};

use super::plan::table_info;
use super::private;
use crate::catalog::{self, ServerInfo};
use crate::columns::{self, display_key, Column, Field, IoInput, Repr, TableColumns};
use crate::connection;
use crate::error::{raise, raise_with};
use crate::pgver;
use crate::resolve;
use crate::xact::CreatedBy;

const ROWID_JUNK: &CStr = c"etcd_rowid";
const MODREV_JUNK: &CStr = c"etcd_modrev";
/// A DELETE ... RETURNING's scan carries each row's value here, so that
/// the deleted row is returned without reading it from etcd again.
const VALUE_JUNK: &CStr = c"etcd_value";

/// Refuse writes through a read-only view of etcd.
fn check_writable(table: &TableOptions, relid: pg_sys::Oid) {
    if let Some(opt) = table.read_only_reason() {
        raise_with(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "foreign table \"{}\" is read-only because of its option \"{opt}\"",
                catalog::rel_name(relid)
            ),
            None,
            Some(format!(
                "Write through a foreign table without \"{opt}\" over the same keys."
            )),
        );
    }
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn is_foreign_rel_updatable(_rel: pg_sys::Relation) -> i32 {
    // Read-only tables get a precise error from PlanForeignModify instead
    // of PostgreSQL's generic one.
    (1i32 << pg_sys::CmdType::CMD_INSERT)
        | (1i32 << pg_sys::CmdType::CMD_UPDATE)
        | (1i32 << pg_sys::CmdType::CMD_DELETE)
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn add_foreign_update_targets(
    _root: *mut pg_sys::PlannerInfo,
    rtindex: pg_sys::Index,
    _target_rte: *mut pg_sys::RangeTblEntry,
    rel: pg_sys::Relation,
) {
    let (_, _, cols) = table_info((*rel).rd_id);
    let Some(key) = cols.find(Field::Key) else {
        return;
    };
    let var = column_var(rel, rtindex, key.index);
    pg_sys::add_row_identity_var(_root, var, rtindex, ROWID_JUNK.as_ptr());
    let tid = pg_sys::makeVar(
        rtindex as i32,
        pg_sys::SelfItemPointerAttributeNumber as i16,
        pg_sys::TIDOID,
        -1,
        pg_sys::InvalidOid,
        0,
    );
    pg_sys::add_row_identity_var(_root, tid, rtindex, MODREV_JUNK.as_ptr());
    // SAFETY: the planner's root always has its Query.
    let parse = (*_root).parse;
    // Only for the statement's own target, not for a partition or child
    // (their value columns may differ in type or position, which row
    // identity columns shared by the children may not): those read the
    // deleted row back.
    if (*parse).commandType == pg_sys::CmdType::CMD_DELETE
        && !(*parse).returningList.is_null()
        && (*parse).resultRelation == rtindex as i32
    {
        if let Some(value) = cols.find(Field::Value) {
            let var = column_var(rel, rtindex, value.index);
            pg_sys::add_row_identity_var(_root, var, rtindex, VALUE_JUNK.as_ptr());
        }
    }
}

/// A Var of column `index` (0-based) of `rel`, range table entry `rtindex`.
///
/// # Safety
/// `rel` is an open relation with at least `index + 1` attributes.
unsafe fn column_var(
    rel: pg_sys::Relation,
    rtindex: pg_sys::Index,
    index: usize,
) -> *mut pg_sys::Var {
    // SAFETY: the caller's relation; makeVar pallocs in the current context.
    unsafe {
        let a = columns::attr((*rel).rd_att, index);
        pg_sys::makeVar(
            rtindex as i32,
            index as i16 + 1,
            a.atttypid,
            a.atttypmod,
            a.attcollation,
            0,
        )
    }
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn plan_foreign_modify(
    root: *mut pg_sys::PlannerInfo,
    plan: *mut pg_sys::ModifyTable,
    result_relation: pg_sys::Index,
    subplan_index: i32,
) -> *mut pg_sys::List {
    let rte = *(*root).simple_rte_array.add(result_relation as usize);
    let (table, _, _) = table_info((*rte).relid);
    check_writable(&table, (*rte).relid);
    // BeginForeignModify runs before the executor sets up RETURNING, so
    // the plan records whether there is one.
    let returning = PgList::<pg_sys::List>::from_pg((*plan).returningLists);
    let flags = ModifyFlags {
        do_nothing: (*plan).onConflictAction == pg_sys::OnConflictAction::ONCONFLICT_NOTHING,
        returning: returning
            .get_ptr(subplan_index as usize)
            .is_some_and(|l| !l.is_null()),
    };
    private::to_private(&flags.encode())
}

/// Per result relation state of a modifying statement.
pub struct ModifyExec {
    pub(super) server: ServerInfo,
    cols: TableColumns,
    /// Shared, so that a conversion can name the table without a copy.
    relname: std::rc::Rc<str>,
    key_col: Column,
    rowid_attno: i16,
    modrev_attno: i16,
    /// The scan's value of the row being deleted (0: not carried).
    value_attno: i16,
    pub(super) returning: bool,
    /// `etcd_fdw.commit_mode = 'transaction'`: row changes go into the
    /// transaction's pending writes (see `deferred`), not to etcd.
    deferred: bool,
    /// The table sets `commit_mode` itself (a hint says SET, not ADD).
    pub(super) table_sets_commit_mode: bool,
    /// Write each row before the callback returns it (RETURNING, or AFTER
    /// triggers that may read etcd), instead of buffering.
    write_each_row: bool,
    /// Whether an UPDATE sets `value` / `lease` (otherwise the key keeps
    /// its own bytes exactly, also when renamed).
    sets_value: bool,
    sets_lease: bool,
    do_nothing: bool,
    /// `insert_mode 'put'`: INSERT overwrites existing keys.
    insert_mode: InsertMode,
    /// The kind of statement: an existing key's HINT depends on it.
    pub(super) created_by: CreatedBy,
    /// The foreign table sets `insert_mode` itself (the hint says SET,
    /// not ADD).
    pub(super) table_sets_insert_mode: bool,
    pub(super) relid: pg_sys::Oid,
    /// The value column's input function, when it is read through its
    /// type's text I/O (RETURNING).
    value_input: Option<IoInput>,
    /// The table option `invalid_values` (RETURNING reads like a scan).
    invalid_values: InvalidValues,
    pub(super) batch_size: u32,
    /// Per-row scratch memory (detoasted datums, output function results,
    /// converted text, RETURNING datums), reset at the start of each row
    /// like postgres_fdw's temp_cxt: after the executor consumed the
    /// previous row's slot.
    row_cxt: pg_sys::MemoryContext,
    key_set: KeySet,
    /// Buffered ops, sent when `batch_size` is reached and at the end.
    pending: Vec<WriteOp>,
    output_fns: Vec<(usize, pg_sys::FmgrInfo)>,
}

impl ModifyExec {
    unsafe fn new(
        estate: *mut pg_sys::EState,
        rinfo: *mut pg_sys::ResultRelInfo,
        subplan_tlist: *mut pg_sys::List,
        do_nothing: bool,
    ) -> ModifyExec {
        let rel = (*rinfo).ri_RelationDesc;
        let relid = (*rel).rd_id;
        let (table, server_oid, cols) = table_info(relid);
        check_writable(&table, relid);
        let userid = connection::effective_user(pgver::result_rel_check_as_user(rinfo, estate));
        let server = catalog::server_info(server_oid, userid);
        let relname: std::rc::Rc<str> = catalog::rel_name(relid).into();
        let Some(key_col) = cols.find(Field::Key).copied() else {
            raise(
                PgSqlErrorCode::ERRCODE_FDW_INVALID_COLUMN_NAME,
                format!("foreign table \"{relname}\" has no key column"),
            );
        };
        let (rowid_attno, modrev_attno, value_attno) = if subplan_tlist.is_null() {
            (0, 0, 0)
        } else {
            (
                pg_sys::ExecFindJunkAttributeInTlist(subplan_tlist, ROWID_JUNK.as_ptr()),
                pg_sys::ExecFindJunkAttributeInTlist(subplan_tlist, MODREV_JUNK.as_ptr()),
                pg_sys::ExecFindJunkAttributeInTlist(subplan_tlist, VALUE_JUNK.as_ptr()),
            )
        };
        let output_fns = cols
            .columns
            .iter()
            .filter(|c| c.repr == Repr::Io)
            .map(|c| {
                let mut func = pg_sys::InvalidOid;
                let mut varlena = false;
                pg_sys::getTypeOutputInfo(c.typoid, &mut func, &mut varlena);
                let mut fi = pg_sys::FmgrInfo::default();
                pg_sys::fmgr_info_cxt(func, &mut fi, (*estate).es_query_cxt);
                (c.index, fi)
            })
            .collect();
        let row_cxt = pg_sys::AllocSetContextCreateExtended(
            (*estate).es_query_cxt,
            c"etcd_fdw modify row".as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        );
        let trig = (*rinfo).ri_TrigDesc;
        let after_triggers = !trig.is_null()
            && ((*trig).trig_insert_after_row
                || (*trig).trig_update_after_row
                || (*trig).trig_delete_after_row
                || (*trig).trig_insert_after_statement
                || (*trig).trig_update_after_statement
                || (*trig).trig_delete_after_statement);
        ModifyExec {
            deferred: crate::xact::deferring(&server, Some(&table)),
            table_sets_commit_mode: table.commit_mode.is_some(),
            write_each_row: after_triggers,
            sets_value: true,
            sets_lease: true,
            row_cxt,
            batch_size: effective_batch_size(&server.options, &table),
            insert_mode: effective_insert_mode(&server.options, &table),
            created_by: CreatedBy::Insert,
            table_sets_insert_mode: table.insert_mode.is_some(),
            relid,
            value_input: cols
                .find(Field::Value)
                .filter(|c| c.repr == Repr::Io)
                .map(|c| IoInput::new(c, (*estate).es_query_cxt)),
            invalid_values: table.invalid_values,
            key_set: table.key_set(),
            server,
            cols,
            relname,
            key_col,
            rowid_attno,
            modrev_attno,
            value_attno,
            returning: !(*rinfo).ri_returningList.is_null(),
            do_nothing,
            pending: Vec::new(),
            output_fns,
        }
    }

    /// The op for an inserted row: a guarded create, or with `insert_mode
    /// 'put'` an overwrite (ON CONFLICT DO NOTHING always creates: it
    /// skips existing keys in both modes).
    fn insert_op(&self, key: Vec<u8>, value: Vec<u8>, lease: Option<i64>) -> WriteOp {
        if self.insert_mode == InsertMode::Put && !self.do_nothing {
            WriteOp::Put { key, value, lease }
        } else {
            WriteOp::Insert { key, value, lease }
        }
    }

    fn limits(&self) -> TxnLimits {
        TxnLimits {
            max_ops: self.batch_size as usize,
            ..TxnLimits::default()
        }
    }

    /// The bytes of column `col` in `slot`, `None` for NULL.
    unsafe fn column_bytes(
        &mut self,
        slot: *mut pg_sys::TupleTableSlot,
        col: Column,
    ) -> Option<Vec<u8>> {
        self.column_bytes_at(slot, col.index as i16 + 1, col)
    }

    /// The bytes of column `col`'s datum at attribute `attno` of `slot`
    /// (its own, or a junk copy in a plan slot), `None` for NULL.
    unsafe fn column_bytes_at(
        &mut self,
        slot: *mut pg_sys::TupleTableSlot,
        attno: i16,
        col: Column,
    ) -> Option<Vec<u8>> {
        let (d, isnull) = slot_attr(slot, attno);
        if isnull {
            return None;
        }
        Some(match col.repr {
            Repr::Text | Repr::Bytea => columns::varlena_bytes(d, col.repr).into_owned(),
            Repr::Io => {
                let fi = &mut self
                    .output_fns
                    .iter_mut()
                    .find(|(i, _)| *i == col.index)
                    .unwrap_or_else(|| {
                        raise(
                            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                            "etcd_fdw: no output function for an I/O column",
                        )
                    })
                    .1;
                // SAFETY: output functions return a palloc'd C string.
                let s = pg_sys::OutputFunctionCall(fi, d);
                crate::encoding::server_to_utf8(CStr::from_ptr(s).to_bytes()).into_owned()
            }
            Repr::Int8 => d.value().to_string().into_bytes(),
        })
    }

    /// Key, value (when `with_value`; empty without a value column) and
    /// lease of the new row in `slot`, checked.
    unsafe fn new_row(
        &mut self,
        slot: *mut pg_sys::TupleTableSlot,
        with_value: bool,
    ) -> (Vec<u8>, Option<Vec<u8>>, Option<i64>) {
        let key_col = self.key_col;
        let Some(key) = self.converting(None, key_col, |st| st.column_bytes(slot, key_col)) else {
            self.not_null(self.key_col);
        };
        if key.is_empty() {
            raise(
                PgSqlErrorCode::ERRCODE_CHECK_VIOLATION,
                format!(
                    "etcd keys cannot be empty (foreign table \"{}\")",
                    self.relname
                ),
            );
        }
        if !self.key_set.contains(&key) {
            raise_with(
                PgSqlErrorCode::ERRCODE_CHECK_VIOLATION,
                format!(
                    "key \"{}\" is outside the key range of foreign table \"{}\"",
                    display_key(&key),
                    self.relname
                ),
                Some(format!(
                    "The table covers {}.",
                    etcd_fdw_core::plan::describe_keys(&self.key_set)
                )),
                None,
            );
        }
        let value = match self.cols.find(Field::Value).copied() {
            _ if !with_value => None,
            Some(vc) => match self.converting(Some(&key), vc, |st| st.column_bytes(slot, vc)) {
                Some(v) => Some(v),
                None => self.not_null(vc),
            },
            None => Some(Vec::new()),
        };
        let lease = self.cols.find(Field::Lease).copied().and_then(|lc| {
            let (d, isnull) = slot_attr(slot, lc.index as i16 + 1);
            (!isnull).then(|| d.value() as i64)
        });
        (key, value, lease)
    }

    /// Run the conversion `f` of column `col` (of the row with `key`, when
    /// known); its errors name them and the table in a CONTEXT line.
    fn converting<R>(
        &mut self,
        key: Option<&[u8]>,
        col: Column,
        f: impl FnOnce(&mut Self) -> R,
    ) -> R {
        let relname = std::rc::Rc::clone(&self.relname);
        crate::errcontext::with_context(
            || f(self),
            || crate::errcontext::conversion_line(key, col.field.name(), &relname),
        )
    }

    fn not_null(&self, col: Column) -> ! {
        raise(
            PgSqlErrorCode::ERRCODE_NOT_NULL_VIOLATION,
            format!(
                "null value in column \"{}\" of foreign table \"{}\": etcd cannot store NULL",
                col.field.name(),
                self.relname
            ),
        )
    }

    /// The key and mod_revision the scan read for the row being changed.
    unsafe fn old_row(&self, plan_slot: *mut pg_sys::TupleTableSlot) -> (Vec<u8>, i64) {
        if self.rowid_attno <= 0 || self.modrev_attno <= 0 {
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "etcd_fdw: row identity columns are missing from the plan",
            );
        }
        let (k, knull) = slot_attr(plan_slot, self.rowid_attno);
        let (t, tnull) = slot_attr(plan_slot, self.modrev_attno);
        if knull || tnull {
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "etcd_fdw: row identity is NULL",
            );
        }
        let key = columns::varlena_bytes(k, self.key_col.repr).into_owned();
        let tid = t.cast_mut_ptr::<pg_sys::ItemPointerData>();
        let block = ((*tid).ip_blkid.bi_hi as u32) << 16 | (*tid).ip_blkid.bi_lo as u32;
        (key, tid_to_revision(block, (*tid).ip_posid))
    }

    /// What a write was doing, for error messages.
    pub(super) fn what(&self) -> String {
        format!(
            "writing to foreign table \"{}\" on etcd server \"{}\"",
            self.relname, self.server.server_name
        )
    }

    /// Renames that keep the old key's value or lease: read the old rows
    /// and copy them in, before the ops are packed by their real size.
    pub(super) fn resolve_renames(&self, ops: &mut [WriteOp]) -> Result<(), Conflict> {
        let idx = writes::renames_to_resolve(ops);
        if idx.is_empty() {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = idx.iter().map(|&i| ops[i].keys()[0].to_vec()).collect();
        let rows = self.read_rows(&keys, false);
        writes::fill_old_rows(ops, &idx, &rows)
    }

    /// For each key, etcd's row now, if it has one: read-only transactions
    /// (one revision each), retried like scans.  With values, few keys per
    /// transaction, so that an answer of values up to etcd's request limit
    /// (1.5 MiB by default) stays well within the client's response limit.
    pub(super) fn read_rows(&self, keys: &[Vec<u8>], keys_only: bool) -> Vec<Option<EtcdRow>> {
        let per_txn = if keys_only { 64 } else { 16 };
        let opts = if keys_only {
            GetOptions::new().with_keys_only()
        } else {
            GetOptions::new()
        };
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(per_txn) {
            let txn = Txn::new().and_then(
                chunk
                    .iter()
                    .map(|k| TxnOp::get(k.clone(), Some(opts.clone())))
                    .collect::<Vec<_>>(),
            );
            let resp = connection::with_retry(&self.server, &|| self.what(), |mut kv| {
                let txn = txn.clone();
                async move { kv.txn(txn).await.map_err(EtcdError::from) }
            });
            out.extend(resp.op_responses().iter().map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| EtcdRow {
                    value: kv.value().to_vec(),
                    mod_revision: kv.mod_revision(),
                    lease: kv.lease(),
                }),
                _ => None,
            }));
        }
        out
    }

    /// Send `ops` now; returns the rows after, or the conflict.
    fn send(&self, batch: &WriteBatch) -> Result<Vec<RowAfter>, Conflict> {
        let timeout = self.server.options.request_timeout;
        let txn = batch.txn(self.returning);
        // Name the key(s): "request is too large" must say which row.
        let what = || match batch.ops.as_slice() {
            [op] => format!("{} (key \"{}\")", self.what(), display_key(op.keys()[0])),
            ops => format!(
                "{} ({} keys, the first \"{}\")",
                self.what(),
                ops.len(),
                ops.first()
                    .map_or(String::new(), |op| display_key(op.keys()[0]))
            ),
        };
        let sent = connection::try_once(&self.server, &what, |mut kv| {
            let txn = txn.clone();
            async move { client::with_timeout(timeout, kv.txn(txn)).await }
        });
        match sent {
            Ok(resp) if resp.succeeded() => Ok(writes::rows_after(batch, &resp)),
            Ok(resp) => Err(writes::diagnose(batch, &resp)),
            Err(lost) => Ok(self.decide_lost(batch, lost, &what)),
        }
    }

    /// The answer to `batch` was lost (`lost`): decide from etcd's state
    /// and history ([`resolve`]) and return the rows it wrote, or raise
    /// the conflict (40001) or the unknown outcome (08007).
    fn decide_lost(
        &self,
        batch: &WriteBatch,
        lost: EtcdError,
        what: &dyn Fn() -> String,
    ) -> Vec<RowAfter> {
        let revision = resolve::decide_lost(&self.server, &outcome::batch_txn(batch), &lost, what);
        resolve::rows_applied_at(&self.server, batch, revision).unwrap_or_else(|e| {
            resolve::unknown(
                &self.server,
                &lost,
                &format!(
                    "{}; etcd's history shows it applied at revision {revision}, but the rows it wrote could not be read ({e}).",
                    what()
                ),
            )
        })
    }

    pub(super) fn conflict_error(&self, c: &Conflict) -> ! {
        match c {
            Conflict::KeyExists(keys) => raise_with(
                PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
                format!(
                    "duplicate key value: key \"{}\" already exists in etcd (foreign table \"{}\")",
                    display_key(keys.first().map_or(&[][..], |k| k.as_slice())),
                    self.relname
                ),
                (keys.len() > 1).then(|| format!("{} keys of the batch exist.", keys.len())),
                self.duplicate_hint(),
            ),
            Conflict::Changed(k) => raise_with(
                PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
                format!(
                    "could not serialize access: key \"{}\" was changed in etcd after it was read (foreign table \"{}\")",
                    display_key(k),
                    self.relname
                ),
                Some("Another client wrote or deleted the key; nothing was written for it.".into()),
                Some("Retry the statement.".into()),
            ),
        }
    }

    /// The HINT of a key this statement wanted to create but etcd (or the
    /// transaction) has: INSERT can skip it with ON CONFLICT DO NOTHING;
    /// COPY cannot, the table option `insert_mode 'put'` overwrites; an
    /// UPDATE renaming onto an existing key gets neither.
    fn duplicate_hint(&self) -> Option<String> {
        match self.created_by {
            CreatedBy::Insert => Some(crate::xact::DUPLICATE_HINT_INSERT.into()),
            CreatedBy::Copy => Some(crate::xact::duplicate_hint_copy(
                Some(&catalog::qualified_name(self.relid)),
                self.table_sets_insert_mode,
            )),
            CreatedBy::Other => None,
        }
    }

    /// Write one op immediately (RETURNING): the row after it.
    fn write_now(&self, op: WriteOp) -> RowAfter {
        let mut ops = vec![op];
        if let Err(c) = self.resolve_renames(&mut ops) {
            self.conflict_error(&c);
        }
        match self.send(&WriteBatch { ops }) {
            Ok(mut rows) => rows.pop().unwrap_or_default(),
            Err(c) => self.conflict_error(&c),
        }
    }

    /// Write `op` at once when RETURNING needs its outcome (filling `slot`;
    /// every column when `whole_row`), else buffer it.
    unsafe fn apply(
        &mut self,
        op: WriteOp,
        slot: *mut pg_sys::TupleTableSlot,
        whole_row: bool,
        old_value: Option<Vec<u8>>,
    ) {
        if self.deferred {
            self.defer(op, slot, whole_row, old_value);
        } else if self.returning {
            let row = self.write_now(op);
            self.fill_slot(slot, &row, whole_row, true);
        } else if self.write_each_row {
            self.write_now(op);
        } else {
            self.buffer(op);
        }
    }

    fn buffer(&mut self, op: WriteOp) {
        self.pending.push(op);
        if self.pending.len() >= self.batch_size as usize {
            self.flush();
        }
    }

    /// Send ops in guarded transactions, raising on the first conflict.
    fn send_all(&self, mut ops: Vec<WriteOp>) {
        if let Some(k) = writes::duplicate_insert(&ops) {
            self.conflict_error(&Conflict::KeyExists(vec![k.to_vec()]));
        }
        if let Err(c) = self.resolve_renames(&mut ops) {
            self.conflict_error(&c);
        }
        for batch in pack(ops, self.limits()) {
            if let Err(c) = self.send(&batch) {
                self.conflict_error(&c);
            }
        }
    }

    /// Send every buffered op.
    fn flush(&mut self) {
        let ops = std::mem::take(&mut self.pending);
        self.send_all(ops);
    }

    /// Insert a batch with ON CONFLICT DO NOTHING: for each op, the row
    /// it created, or `None` when its key existed.
    fn insert_skipping_existing(&self, ops: Vec<WriteOp>) -> Vec<Option<RowAfter>> {
        let mut applied = vec![None; ops.len()];
        let mut idx: Vec<usize> = (0..ops.len()).collect();
        let mut ops = ops;
        // Each round either succeeds or removes every key that existed.
        while !ops.is_empty() {
            let mut next_ops = Vec::new();
            let mut next_idx = Vec::new();
            let mut start = 0;
            for batch in pack(ops.clone(), self.limits()) {
                let n = batch.ops.len();
                match self.send(&batch) {
                    Ok(rows) => {
                        for (i, row) in (start..start + n).zip(rows) {
                            applied[idx[i]] = Some(row);
                        }
                    }
                    Err(Conflict::KeyExists(existing)) => {
                        // Drop every existing key at once; retry the rest.
                        for i in start..start + n {
                            if !existing.iter().any(|k| k.as_slice() == ops[i].keys()[0]) {
                                next_ops.push(ops[i].clone());
                                next_idx.push(idx[i]);
                            }
                        }
                    }
                    Err(c) => self.conflict_error(&c),
                }
                start += n;
            }
            ops = next_ops;
            idx = next_idx;
        }
        applied
    }

    /// Rebuild a RETURNING slot: the metadata columns (and, for a delete,
    /// every column) come from the row after the write (NULL without
    /// `with_meta`: a pending write has none yet); the rest are kept.
    pub(super) unsafe fn fill_slot(
        &self,
        slot: *mut pg_sys::TupleTableSlot,
        row: &RowAfter,
        all: bool,
        with_meta: bool,
    ) {
        let tupdesc = (*slot).tts_tupleDescriptor;
        let natts = (*tupdesc).natts as usize;
        let mut vals = vec![pg_sys::Datum::from(0); natts];
        let mut nulls = vec![true; natts];
        if !all {
            pg_sys::slot_getsomeattrs_int(slot, natts as i32);
            for i in 0..natts {
                if !*(*slot).tts_isnull.add(i) {
                    let a = columns::attr(tupdesc, i);
                    vals[i] = datum_copy(*(*slot).tts_values.add(i), a.attbyval, a.attlen);
                    nulls[i] = false;
                }
            }
        }
        for c in &self.cols.columns {
            let d = match c.field {
                Field::CreateRevision | Field::ModRevision | Field::Version | Field::Lease
                    if !with_meta =>
                {
                    nulls[c.index] = true;
                    continue;
                }
                Field::CreateRevision => pg_sys::Datum::from(row.create_revision),
                Field::ModRevision => pg_sys::Datum::from(row.mod_revision),
                Field::Version => pg_sys::Datum::from(row.version),
                Field::Lease => pg_sys::Datum::from(row.lease),
                Field::Key | Field::Value if all => {
                    let bytes = if c.field == Field::Key {
                        &row.key
                    } else {
                        &row.value
                    };
                    let table = || self.relname.to_string();
                    let io = self
                        .value_input
                        .as_ref()
                        .filter(|_| c.field == Field::Value);
                    match columns::field_datum(c, io, bytes, &row.key, self.invalid_values, &table)
                    {
                        Some(d) => d,
                        None => continue,
                    }
                }
                _ => continue,
            };
            vals[c.index] = d;
            nulls[c.index] = false;
        }
        pg_sys::ExecClearTuple(slot);
        std::ptr::copy_nonoverlapping(vals.as_ptr(), (*slot).tts_values, natts);
        std::ptr::copy_nonoverlapping(nulls.as_ptr(), (*slot).tts_isnull, natts);
        pg_sys::ExecStoreVirtualTuple(slot);
    }
}

/// While alive, allocations go to a modify state's per-row context (reset
/// when the scope starts: the previous row's datums are consumed by then).
struct RowScope {
    previous: pg_sys::MemoryContext,
}

impl RowScope {
    /// # Safety
    /// `cxt` must be a live memory context.
    unsafe fn enter(cxt: pg_sys::MemoryContext) -> RowScope {
        pg_sys::MemoryContextReset(cxt);
        RowScope {
            previous: pg_sys::MemoryContextSwitchTo(cxt),
        }
    }
}

impl Drop for RowScope {
    fn drop(&mut self) {
        // SAFETY: `previous` was current when the scope began and outlives
        // the callback (on an ERROR, PostgreSQL resets it anyway).
        unsafe {
            pg_sys::MemoryContextSwitchTo(self.previous);
        }
    }
}

/// Whether an UPDATE sets the `value` and `lease` columns: in its SET
/// list, or possibly through a BEFORE ROW UPDATE trigger.
///
/// # Safety
/// `rinfo` is a result relation of `estate` being set up for UPDATE.
unsafe fn updated_fields(
    estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    cols: &TableColumns,
) -> (bool, bool) {
    let trig = (*rinfo).ri_TrigDesc;
    if !trig.is_null() && (*trig).trig_update_before_row {
        return (true, true);
    }
    let updated = pg_sys::ExecGetUpdatedCols(rinfo, estate);
    let sets = |f: Field| {
        cols.find(f).is_some_and(|c| {
            let attno = c.index as i32 + 1;
            pg_sys::bms_is_member(attno - pg_sys::FirstLowInvalidHeapAttributeNumber, updated)
        })
    };
    (sets(Field::Value), sets(Field::Lease))
}

/// `datumCopy()`: a copy of a datum in the current memory context.
unsafe fn datum_copy(d: pg_sys::Datum, byval: bool, len: i16) -> pg_sys::Datum {
    if byval {
        return d;
    }
    let size = match len {
        -1 => pgrx::varsize_any(d.cast_mut_ptr()),
        -2 => CStr::from_ptr(d.cast_mut_ptr()).to_bytes().len() + 1,
        n => n as usize,
    };
    let p = pg_sys::palloc(size);
    std::ptr::copy_nonoverlapping(d.cast_mut_ptr::<u8>(), p as *mut u8, size);
    pg_sys::Datum::from(p)
}

/// `slot_getattr()`: attribute `attno` (1-based) of a slot.
unsafe fn slot_attr(slot: *mut pg_sys::TupleTableSlot, attno: i16) -> (pg_sys::Datum, bool) {
    if (*slot).tts_nvalid < attno {
        pg_sys::slot_getsomeattrs_int(slot, attno as i32);
    }
    let i = attno as usize - 1;
    (*(*slot).tts_values.add(i), *(*slot).tts_isnull.add(i))
}

unsafe fn state<'a>(rinfo: *mut pg_sys::ResultRelInfo) -> &'a mut ModifyExec {
    &mut *((*rinfo).ri_FdwState as *mut ModifyExec)
}

unsafe fn install(estate: *mut pg_sys::EState, rinfo: *mut pg_sys::ResultRelInfo, st: ModifyExec) {
    let cxt = (*estate).es_query_cxt;
    (*rinfo).ri_FdwState = PgMemoryContexts::For(cxt).leak_and_drop_on_delete(st) as *mut _;
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn begin_foreign_modify(
    mtstate: *mut pg_sys::ModifyTableState,
    rinfo: *mut pg_sys::ResultRelInfo,
    fdw_private: *mut pg_sys::List,
    _subplan_index: i32,
    eflags: i32,
) {
    if eflags as u32 & pg_sys::EXEC_FLAG_EXPLAIN_ONLY != 0 {
        return;
    }
    let flags = private::from_private(fdw_private)
        .and_then(ModifyFlags::decode)
        .unwrap_or_else(|| {
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "etcd_fdw: malformed modify plan",
            )
        });
    let subplan = (*(*mtstate).ps.lefttree).plan;
    let estate = (*mtstate).ps.state;
    let mut st = ModifyExec::new(estate, rinfo, (*subplan).targetlist, flags.do_nothing);
    st.returning = flags.returning;
    if (*mtstate).operation != pg_sys::CmdType::CMD_INSERT {
        st.created_by = CreatedBy::Other;
    }
    if (*mtstate).operation == pg_sys::CmdType::CMD_UPDATE {
        (st.sets_value, st.sets_lease) = updated_fields(estate, rinfo, &st.cols);
    }
    install((*mtstate).ps.state, rinfo, st);
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn begin_foreign_insert(
    mtstate: *mut pg_sys::ModifyTableState,
    rinfo: *mut pg_sys::ResultRelInfo,
) {
    let plan = (*mtstate).ps.plan as *mut pg_sys::ModifyTable;
    let do_nothing =
        !plan.is_null() && (*plan).onConflictAction == pg_sys::OnConflictAction::ONCONFLICT_NOTHING;
    let mut st = ModifyExec::new((*mtstate).ps.state, rinfo, std::ptr::null_mut(), do_nothing);
    // BeginForeignInsert is called for COPY FROM and for rows routed into
    // a foreign partition.  COPY FROM (copyfrom.c, PostgreSQL 14 to 18)
    // passes a ModifyTableState it made itself, with no plan
    // (`mtstate->ps.plan = NULL`, `operation = CMD_INSERT`); tuple routing
    // passes the ModifyTable node's state, which has its plan, and its
    // operation is CMD_UPDATE when an UPDATE moves a row into the
    // partition.  COPY into a partitioned table routes with COPY's own
    // plan-less state, so it is COPY too.
    st.created_by = if plan.is_null() {
        CreatedBy::Copy
    } else if (*mtstate).operation == pg_sys::CmdType::CMD_INSERT {
        CreatedBy::Insert
    } else {
        CreatedBy::Other
    };
    install((*mtstate).ps.state, rinfo, st);
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_modify_batch_size(
    rinfo: *mut pg_sys::ResultRelInfo,
) -> i32 {
    let trig = (*rinfo).ri_TrigDesc;
    let row_triggers =
        !trig.is_null() && ((*trig).trig_insert_before_row || (*trig).trig_insert_after_row);
    let mut returning = !(*rinfo).ri_returningList.is_null();
    let batch_size = if (*rinfo).ri_FdwState.is_null() {
        // EXPLAIN without ANALYZE: BeginForeignModify set nothing up.
        let relid = (*(*rinfo).ri_RelationDesc).rd_id;
        let (table, server_oid, _) = table_info(relid);
        let server = catalog::server_info(server_oid, pg_sys::GetUserId());
        effective_batch_size(&server.options, &table)
    } else {
        let st = state(rinfo);
        st.returning |= returning;
        returning = st.returning;
        st.batch_size
    };
    if returning || !(*rinfo).ri_WithCheckOptions.is_null() || row_triggers {
        1
    } else {
        batch_size as i32
    }
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn exec_foreign_insert(
    _estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    _plan_slot: *mut pg_sys::TupleTableSlot,
) -> *mut pg_sys::TupleTableSlot {
    let st = state(rinfo);
    let _row = RowScope::enter(st.row_cxt);
    let (key, value, lease) = st.new_row(slot, true);
    let op = st.insert_op(key, value.unwrap_or_default(), lease);
    if st.do_nothing {
        let skipped = if st.deferred {
            st.defer_skipping_existing(vec![op])
        } else {
            st.insert_skipping_existing(vec![op])
        };
        let Some(Some(row)) = skipped.into_iter().next() else {
            return std::ptr::null_mut();
        };
        if st.returning {
            st.fill_slot(slot, &row, false, !st.deferred);
        }
        return slot;
    }
    st.apply(op, slot, false, None);
    slot
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn exec_foreign_batch_insert(
    _estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    slots: *mut *mut pg_sys::TupleTableSlot,
    _plan_slots: *mut *mut pg_sys::TupleTableSlot,
    num_slots: *mut i32,
) -> *mut *mut pg_sys::TupleTableSlot {
    let st = state(rinfo);
    let _row = RowScope::enter(st.row_cxt);
    let n = *num_slots as usize;
    let slots_arr = std::slice::from_raw_parts_mut(slots, n);
    let ops: Vec<WriteOp> = slots_arr
        .iter()
        .map(|&s| {
            let (key, value, lease) = st.new_row(s, true);
            st.insert_op(key, value.unwrap_or_default(), lease)
        })
        .collect();
    if st.do_nothing {
        let applied = if st.deferred {
            st.defer_skipping_existing(ops)
        } else {
            st.insert_skipping_existing(ops)
        };
        // Inserted rows first: PostgreSQL counts the first *num_slots.
        let mut inserted = 0;
        for (i, row) in applied.into_iter().enumerate() {
            if row.is_some() {
                slots_arr.swap(inserted, i);
                inserted += 1;
            }
        }
        *num_slots = inserted as i32;
    } else if st.deferred {
        for op in ops {
            st.defer(op, std::ptr::null_mut(), false, None);
        }
    } else {
        st.send_all(ops);
    }
    slots
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn exec_foreign_update(
    _estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    plan_slot: *mut pg_sys::TupleTableSlot,
) -> *mut pg_sys::TupleTableSlot {
    let st = state(rinfo);
    let _row = RowScope::enter(st.row_cxt);
    let (old_key, mod_revision) = st.old_row(plan_slot);
    let (new_key, value, lease) = st.new_row(slot, st.sets_value);
    let op = WriteOp::Update {
        old_key,
        new_key,
        value,
        // SET lease = NULL detaches the key, like 0.
        lease: st.sets_lease.then(|| lease.unwrap_or(0)),
        mod_revision,
    };
    st.apply(op, slot, false, None);
    slot
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn exec_foreign_delete(
    _estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    plan_slot: *mut pg_sys::TupleTableSlot,
) -> *mut pg_sys::TupleTableSlot {
    let st = state(rinfo);
    let _row = RowScope::enter(st.row_cxt);
    let (key, mod_revision) = st.old_row(plan_slot);
    // The value the scan read (RETURNING of a deferred delete returns it).
    let old_value = match st.cols.find(Field::Value).copied() {
        Some(vc) if st.value_attno > 0 => st.column_bytes_at(plan_slot, st.value_attno, vc),
        _ => None,
    };
    st.apply(WriteOp::Delete { key, mod_revision }, slot, true, old_value);
    slot
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn end_foreign_modify(
    _estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
) {
    if !(*rinfo).ri_FdwState.is_null() {
        state(rinfo).flush();
    }
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn explain_foreign_modify(
    mtstate: *mut pg_sys::ModifyTableState,
    rinfo: *mut pg_sys::ResultRelInfo,
    _fdw_private: *mut pg_sys::List,
    _subplan_index: i32,
    es: *mut pg_sys::ExplainState,
) {
    let relid = (*(*rinfo).ri_RelationDesc).rd_id;
    let (table, server_oid, _) = table_info(relid);
    let server = catalog::server_info(server_oid, pg_sys::GetUserId());
    let n = effective_batch_size(&server.options, &table);
    pg_sys::ExplainPropertyInteger(c"etcd Batch Size".as_ptr(), std::ptr::null(), n as i64, es);
    // The mode a run of the statement now would use, and where it came
    // from (ASCII only).
    let mode = std::ffi::CString::new(crate::xact::describe_commit_mode(&server, Some(&table)))
        .unwrap_or_default();
    pg_sys::ExplainPropertyText(c"etcd Commit Mode".as_ptr(), mode.as_ptr(), es);
    if (*mtstate).operation == pg_sys::CmdType::CMD_INSERT {
        let plan = (*mtstate).ps.plan as *mut pg_sys::ModifyTable;
        let do_nothing = !plan.is_null()
            && (*plan).onConflictAction == pg_sys::OnConflictAction::ONCONFLICT_NOTHING;
        let mode = effective_insert_mode(&server.options, &table);
        let shown = match (mode, do_nothing) {
            (InsertMode::Put, true) => c"put (ON CONFLICT DO NOTHING: create)",
            (InsertMode::Put, false) => c"put",
            (InsertMode::Create, _) => c"create",
        };
        pg_sys::ExplainPropertyText(c"etcd Insert Mode".as_ptr(), shown.as_ptr(), es);
    }
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn exec_foreign_truncate(
    rels: *mut pg_sys::List,
    _behavior: pg_sys::DropBehavior::Type,
    _restart_seqs: bool,
) {
    for rel in PgList::<pg_sys::RelationData>::from_pg(rels).iter_ptr() {
        let relid = (*rel).rd_id;
        let (table, server_oid, _) = table_info(relid);
        check_writable(&table, relid);
        let server = catalog::server_info(server_oid, pg_sys::GetUserId());
        if crate::xact::deferring(&server, Some(&table)) {
            super::deferred::defer_truncate(&server, &table.key_set(), &table, relid);
            continue;
        }
        let timeout = server.options.request_timeout;
        let name = catalog::rel_name(relid);
        for range in table.key_set().ranges() {
            let (key, end) = range.to_etcd();
            let what = || {
                format!(
                    "truncating foreign table \"{name}\" on etcd server \"{}\"",
                    server.server_name
                )
            };
            connection::run_once(&server, &what, |mut kv| {
                let (key, end) = (key.clone(), end.clone());
                async move {
                    let opts = etcd_fdw_core::etcd_client::DeleteOptions::new().with_range(end);
                    client::with_timeout(timeout, kv.delete(key, Some(opts))).await
                }
            });
        }
    }
}
