//! Scan execution: evaluate run-time key conditions, page through etcd at
//! one revision, and turn key-value pairs into tuples.
//!
//! Only one page (`fetch_size` pairs) is held at a time; every page after
//! the first reads at the revision the first one saw, so a scan is one
//! consistent snapshot of etcd.

use std::cell::RefCell;

use etcd_fdw_core::client::{EtcdError, MAX_RESPONSE_BYTES};
use etcd_fdw_core::etcd_client::KeyValue;
use etcd_fdw_core::keyrange::KeySet;
use etcd_fdw_core::options::InvalidValues;
use etcd_fdw_core::pending::{Overlay, PendingTxn, Step};
use etcd_fdw_core::plan::{CondOp, ScanPlan};
use etcd_fdw_core::scan::{
    batch_refused, first_page_for, merge_top, Oversized, PageRequest, Pager, ScanSpec, SortField,
    SortKey,
};
use etcd_fdw_core::writes::revision_to_tid;
use pgrx::pg_sys;
use pgrx::{PgList, PgMemoryContexts, PgSqlErrorCode};

use super::plan::{decode_plan, table_info};
use super::pushdown;
use super::range_sizes;
use crate::catalog::{self, ServerInfo};
use crate::columns::{self, Column, Field, IoInput, Repr};
use crate::connection;
use crate::pgver;
use crate::xact;

pub struct ScanExec {
    pub plan: ScanPlan,
    server: ServerInfo,
    columns: Vec<Column>,
    key_repr: Repr,
    param_exprs: Vec<*mut pg_sys::ExprState>,
    econtext: *mut pg_sys::ExprContext,
    /// Input functions of the columns read through their type's text I/O
    /// (by attribute index).
    io_inputs: Vec<(usize, IoInput)>,
    /// The table option `invalid_values`.
    invalid_values: InvalidValues,
    pager: Option<Pager>,
    page: std::iter::Peekable<std::vec::IntoIter<KeyValue>>,
    /// The transaction's pending writes when the scan began (read your own
    /// writes; not the statement's own).
    pending: Option<PendingTxn>,
    /// Those in this scan's keys, merged into etcd's rows, when any.
    overlay: Option<Overlay>,
    /// A non-key sort over an overlay: every row, merged and sorted here
    /// (only the best `limit`), handed out from this buffer.
    sorted: Option<std::vec::IntoIter<ScanRow>>,
    pub pages: u64,
    pub keys_fetched: u64,
    /// A counting scan (`plan.count_only`): the keys counted, once done.
    pub counted: Option<u64>,
    relid: pg_sys::Oid,
    /// The table is in 'statement' commit mode: read etcd as it is now
    /// (no pending writes, no transaction snapshot).
    direct: bool,
}

impl ScanExec {
    /// # Safety
    /// `node` must be a ForeignScanState being initialised by the executor.
    pub unsafe fn new(node: *mut pg_sys::ForeignScanState) -> ScanExec {
        let fsplan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        let estate = (*node).ss.ps.state;
        let plan = cached_plan((*fsplan).fdw_private);
        // A pushed-down count scans no relation of its own (scanrelid 0).
        let relid = if (*node).ss.ss_currentRelation.is_null() {
            (*pg_sys::exec_rt_fetch(pgver::scan_rti(fsplan), estate)).relid
        } else {
            (*(*node).ss.ss_currentRelation).rd_id
        };
        let userid = connection::effective_user(pgver::scan_check_as_user(fsplan, estate));
        let mut exec = ScanExec::for_relation(relid, userid, plan, (*estate).es_query_cxt);
        exec.param_exprs = PgList::<pg_sys::ExprState>::from_pg(pg_sys::ExecInitExprList(
            (*fsplan).fdw_exprs,
            node as *mut pg_sys::PlanState,
        ))
        .iter_ptr()
        .collect();
        exec.econtext = (*node).ss.ps.ps_ExprContext;
        exec
    }

    /// A scan of `relid` as `userid` that `plan` describes, without
    /// run-time parameters (ANALYZE uses it directly).  Function lookups
    /// for I/O columns live in `cxt`.
    ///
    /// # Safety
    /// The caller holds a lock on the relation; `cxt` outlives the scan.
    pub unsafe fn for_relation(
        relid: pg_sys::Oid,
        userid: pg_sys::Oid,
        plan: ScanPlan,
        cxt: pg_sys::MemoryContext,
    ) -> ScanExec {
        let (table, server_oid, cols) = table_info(relid);
        let server = catalog::server_info(server_oid, userid);
        // A table in 'statement' commit mode is read as etcd has it now:
        // without the transaction's pending writes (of tables in
        // 'transaction' mode) and at the latest revision.
        let direct = !xact::deferring(&server, Some(&table));
        let pending = if direct {
            None
        } else {
            xact::pending_snapshot(&server)
        };
        let key_repr = cols.find(Field::Key).map_or(Repr::Text, |c| c.repr);
        let io_inputs = cols
            .columns
            .iter()
            .filter(|c| c.repr == Repr::Io)
            .map(|c| (c.index, IoInput::new(c, cxt)))
            .collect();
        // Columns the query never reads stay NULL.
        let columns = (cols.columns.into_iter())
            .filter(|c| !plan.unused.contains(&(c.index as u16)))
            .collect();
        ScanExec {
            plan,
            server,
            columns,
            key_repr,
            param_exprs: Vec::new(),
            econtext: std::ptr::null_mut(),
            io_inputs,
            invalid_values: table.invalid_values,
            pager: None,
            page: Vec::new().into_iter().peekable(),
            pending,
            overlay: None,
            sorted: None,
            pages: 0,
            keys_fetched: 0,
            counted: None,
            relid,
            direct,
        }
    }

    /// The key set with run-time conditions applied.
    unsafe fn runtime_keys(&self) -> KeySet {
        let mut keys = self.plan.keys.clone();
        for p in &self.plan.params {
            let state = self.param_exprs[p.expr_index];
            let mut isnull = false;
            let d = pg_sys::ExecEvalExprSwitchContext(state, self.econtext, &mut isnull);
            let values = if isnull {
                vec![None]
            } else if p.op == CondOp::In {
                pushdown::array_bytes(d, self.key_repr)
            } else {
                vec![Some(columns::varlena_bytes(d, self.key_repr).into_owned())]
            };
            keys = keys.intersect(&p.op.key_set(&values));
        }
        keys
    }

    fn start(&mut self) {
        // SAFETY: called from IterateForeignScan with a live econtext.
        let keys = unsafe { self.runtime_keys() };
        let mut spec = ScanSpec {
            keys,
            sort: self.plan.sort,
            limit: self.plan.limit,
            keys_only: self.plan.keys_only,
            revision: self.plan.revision,
            serializable: self.plan.serializable,
            fetch_size: self.plan.fetch_size,
            adaptive: self.plan.adaptive_fetch,
            whole_range: self.plan.whole_range,
        };
        if spec.revision == 0 && !self.direct {
            // REPEATABLE READ / SERIALIZABLE: the transaction's snapshot.
            spec.revision = xact::snapshot_revision(&self.server).unwrap_or(0);
        }
        let desc = matches!(spec.sort, Some((SortField::Key, true)));
        self.overlay = self
            .pending
            .as_ref()
            .filter(|p| p.touches(&spec.keys))
            .map(|p| p.overlay(&spec.keys, desc));
        if self.overlay.is_some() {
            // Pending writes decide which rows come out: etcd's limit
            // could cut rows the overlay removes, and etcd cannot sort
            // rows it does not have.
            spec.limit = None;
            if !desc {
                spec.sort = None;
            }
        }
        let sized_by_last_scan = self.remembered_size(&spec);
        let mut pager = Pager::new(spec).with_key_batches(self.plan.batch_size);
        if self.plan.count_only && self.overlay.is_none() {
            pager = pager.count_only();
        }
        if let Some((rows, bytes)) = sized_by_last_scan {
            pager = pager
                .with_first_page(first_page_for(rows, bytes).max(u64::from(self.plan.fetch_size)));
        }
        self.pager = Some(pager);
    }

    /// A scan that reads its whole range in adaptive pages, in key order,
    /// without pending writes to merge, count-only answers or key-list
    /// batches: its size is remembered when it completes, and the size an
    /// earlier one found (`Some`) sizes its first page.
    fn remembered_size(&self, spec: &ScanSpec) -> Option<(u64, u64)> {
        self.size_remembered(spec)
            .then(|| range_sizes::get(self.server.server_oid.into(), &spec.keys))
            .flatten()
    }

    fn size_remembered(&self, spec: &ScanSpec) -> bool {
        spec.adaptive
            && spec.whole_range
            && spec.limit.is_none()
            && spec.sort.is_none()
            && self.overlay.is_none()
            && !self.plan.count_only
            && spec.keys.point_count().is_none()
    }

    /// The rows of a pushed-down count: etcd's counts, or, when pending
    /// writes of the transaction lie in the keys, the rows of the scan
    /// with them merged (exactly what a scan would return).
    fn count(&mut self) -> u64 {
        self.start();
        if self.overlay.is_some() {
            let mut n = 0;
            while self.next_merged().is_some() {
                n += 1;
            }
            return n;
        }
        while self.fetch_page() {}
        self.pager.as_ref().map_or(0, Pager::counted)
    }

    /// The next row of etcd's answer merged with the overlay.
    fn next_merged(&mut self) -> Option<ScanRow> {
        loop {
            if self.page.peek().is_none() && !self.fetch_page() {
                // etcd has no more rows; pending ones may remain.
                let ov = self.overlay.as_mut()?;
                return match ov.step(None) {
                    Step::Own { key, value, .. } => Some(ScanRow::Own { key, value }),
                    _ => None,
                };
            }
            let Some(next) = self.page.peek() else {
                continue;
            };
            let Some(ov) = self.overlay.as_mut() else {
                return self.page.next().map(ScanRow::Etcd);
            };
            match ov.step(Some(next.key())) {
                Step::Etcd => return self.page.next().map(ScanRow::Etcd),
                Step::SkipEtcd => {
                    self.page.next();
                }
                Step::Merge { value, .. } => {
                    return self.page.next().map(|kv| ScanRow::Merged { kv, value });
                }
                Step::Own { key, value, .. } => return Some(ScanRow::Own { key, value }),
                Step::Done => return None,
            }
        }
    }

    /// A non-key sort with pending writes in range: merge everything, keep
    /// the best `limit` rows in the sort's order (pending metadata is NULL,
    /// which sorts last ascending and first descending, PostgreSQL's
    /// default and the only order the planner pushes).
    fn sort_merged(&mut self) -> std::vec::IntoIter<ScanRow> {
        let Some((field, desc)) = self.plan.sort else {
            return Vec::new().into_iter();
        };
        let limit = self.plan.limit.map_or(usize::MAX, |l| l as usize);
        let mut top: Vec<ScanRow> = Vec::new();
        let mut chunk = Vec::new();
        while let Some(row) = self.next_merged() {
            chunk.push(row);
            if chunk.len() >= 1024 {
                merge_top(&mut top, std::mem::take(&mut chunk), limit, desc, |r| {
                    r.sort_key(field)
                });
            }
        }
        merge_top(&mut top, chunk, limit, desc, |r| r.sort_key(field));
        top.into_iter()
    }

    /// Fetch the next page; false when the scan is complete.
    fn fetch_page(&mut self) -> bool {
        let batched = self.pager.as_ref().is_some_and(Pager::batched);
        let kvs = if batched {
            self.fetch_batch()
        } else {
            self.fetch_range()
        };
        let (Some(kvs), Some(pager)) = (kvs, self.pager.as_ref()) else {
            // Complete: remember what it found, for the next scan of it.
            if let Some(p) = self.pager.as_ref() {
                if self.size_remembered(p.spec()) && !p.batched() {
                    range_sizes::put(
                        self.server.server_oid.into(),
                        &p.spec().keys,
                        p.returned(),
                        p.bytes_read(),
                    );
                }
            }
            return false;
        };
        if self.pages == 0 && self.plan.revision == 0 && !self.direct {
            xact::pin_snapshot(&self.server, pager.revision());
        }
        self.pages += 1;
        self.keys_fetched += kvs.len() as u64;
        self.page = kvs.into_iter().peekable();
        true
    }

    /// The next range request's rows; `None` when the scan is complete.
    /// A page etcd cannot send within the response limit is asked for
    /// again with fewer keys, at the same revision.
    fn fetch_range(&mut self) -> Option<Vec<KeyValue>> {
        let resp = loop {
            let req = self.pager.as_ref().and_then(Pager::next_request)?;
            // try_with_retry bounds each attempt by request_timeout.
            let result = connection::try_with_retry(&self.server, |mut kv| {
                let key = req.key.clone();
                let opts = req.get_options();
                async move { kv.get(key, Some(opts)).await.map_err(EtcdError::from) }
            });
            let e = match result {
                Ok(resp) => break resp,
                Err(e) => e,
            };
            let (Some(found), Some(pager)) = (e.response_too_large(), self.pager.as_mut()) else {
                crate::error::etcd_error(&e, &self.what())
            };
            match pager.shrink(found, MAX_RESPONSE_BYTES as u64) {
                Oversized::Retry => continue,
                Oversized::SingleKey => self.key_too_large(&req),
                Oversized::Sorted => crate::error::raise_with(
                    PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                    format!(
                        "the sorted answer of etcd for foreign table \"{}\" is larger than {} MiB",
                        catalog::rel_name(self.relid),
                        MAX_RESPONSE_BYTES >> 20
                    ),
                    Some(format!("{e}")),
                    Some(
                        "A sort etcd does for a LIMIT is one request; use a smaller LIMIT.".into(),
                    ),
                ),
            }
        };
        Some(self.pager.as_mut()?.accept(resp))
    }

    /// The rows of the next keys of a key list, read in one read-only
    /// etcd transaction; `None` when the scan is complete.  A batch etcd
    /// refuses for its size (too large an answer, too many operations or
    /// bytes in the request) is asked for again with half as many keys.
    fn fetch_batch(&mut self) -> Option<Vec<KeyValue>> {
        loop {
            let batch = self.pager.as_ref().and_then(Pager::next_batch)?;
            let result = connection::try_with_retry(&self.server, |mut kv| {
                let txn = batch.txn();
                async move { kv.txn(txn).await.map_err(EtcdError::from) }
            });
            let e = match result {
                Ok(resp) => return Some(self.pager.as_mut()?.accept_batch(resp)),
                Err(e) => e,
            };
            if !batch_refused(&e) {
                crate::error::etcd_error(&e, &self.what());
            }
            let pager = self.pager.as_mut()?;
            if pager.shrink_batch() != Oversized::Retry {
                // One key alone is too large.
                let req = pager.next_request()?;
                self.key_too_large(&req);
            }
        }
    }

    /// What the scan was doing, for error messages.
    fn what(&self) -> String {
        let at = match self.pager.as_ref().map(Pager::revision) {
            Some(r) if r > 0 => format!(" at revision {r}"),
            _ => String::new(),
        };
        format!(
            "reading foreign table \"{}\" from etcd server \"{}\" ({}){at}",
            catalog::rel_name(self.relid),
            self.server.server_name,
            self.server.options.endpoints_display()
        )
    }

    /// Raise 54000 for the next key of `req`, which alone exceeds the
    /// response limit, naming it (read again with keys_only, which fits).
    fn key_too_large(&self, req: &PageRequest) -> ! {
        let probe = PageRequest {
            limit: 1,
            keys_only: true,
            ..req.clone()
        };
        let named = connection::try_with_retry(&self.server, |mut kv| {
            let probe = probe.clone();
            async move {
                let opts = probe.get_options();
                kv.get(probe.key, Some(opts)).await.map_err(EtcdError::from)
            }
        })
        .ok()
        .and_then(|mut r| r.take_kvs().into_iter().next())
        .map(|kv| format!(" \"{}\"", columns::display_key(kv.key())))
        .unwrap_or_default();
        crate::error::raise_with(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "etcd key{named} of foreign table \"{}\" is larger than the {} MiB etcd_fdw accepts in one answer",
                catalog::rel_name(self.relid),
                MAX_RESPONSE_BYTES >> 20
            ),
            Some(self.what()),
            None,
        )
    }

    /// The next row of the scan, fetching pages as needed.
    pub fn next_row(&mut self) -> Option<ScanRow> {
        if self.pager.is_none() {
            self.start();
            let sorted_overlay =
                self.overlay.is_some() && self.plan.sort.is_some_and(|(f, _)| f != SortField::Key);
            if sorted_overlay {
                let rows = self.sort_merged();
                self.sorted = Some(rows);
            }
        }
        match self.sorted.as_mut() {
            Some(rows) => rows.next(),
            None => self.next_merged(),
        }
    }

    /// Store the next row into `slot`; false at the end.
    ///
    /// # Safety
    /// `slot` must be the scan's virtual tuple slot; runs in the per-tuple
    /// memory context.
    pub unsafe fn next_into(&mut self, slot: *mut pg_sys::TupleTableSlot) -> bool {
        if self.plan.count_only {
            return self.count_into(slot);
        }
        let Some(row) = self.next_row() else {
            return false;
        };
        pg_sys::ExecClearTuple(slot);
        let natts = (*(*slot).tts_tupleDescriptor).natts as usize;
        let values = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
        let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
        self.fill(&row, values, nulls);
        pg_sys::ExecStoreVirtualTuple(slot);
        // The ctid carries the mod_revision to UPDATE/DELETE (see
        // modify.rs); 0 marks a row of the transaction's pending writes.
        if let Some((block, offset)) = revision_to_tid(row.mod_revision()) {
            let tid = &mut (*slot).tts_tid;
            tid.ip_blkid.bi_hi = (block >> 16) as u16;
            tid.ip_blkid.bi_lo = (block & 0xffff) as u16;
            tid.ip_posid = offset;
        }
        true
    }

    /// The one row of a pushed-down count: every column of the scan tuple
    /// is a count aggregate (`bigint`), all the same number.
    ///
    /// # Safety
    /// `slot` is the scan's tuple slot (described by `fdw_scan_tlist`).
    unsafe fn count_into(&mut self, slot: *mut pg_sys::TupleTableSlot) -> bool {
        if self.counted.is_some() {
            return false;
        }
        let n = self.count();
        self.counted = Some(n);
        pg_sys::ExecClearTuple(slot);
        let natts = (*(*slot).tts_tupleDescriptor).natts as usize;
        let values = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
        let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
        values.fill(pg_sys::Datum::from(n as i64));
        nulls.fill(false);
        pg_sys::ExecStoreVirtualTuple(slot);
        true
    }

    /// Convert `kv` into the relation's columns (`values`/`nulls` have one
    /// entry per attribute; unmapped ones are NULL).
    ///
    /// # Safety
    /// Datums are allocated in the current memory context.
    pub unsafe fn fill(&mut self, row: &ScanRow, values: &mut [pg_sys::Datum], nulls: &mut [bool]) {
        nulls.fill(true);
        let key = row.key();
        let meta = row.meta();
        let keys_only = self.plan.keys_only && !row.is_pending();
        let relid = self.relid;
        let table = move || catalog::rel_name(relid);
        for c in &self.columns {
            let d = match c.field {
                Field::Value if keys_only => continue,
                Field::Key | Field::Value => {
                    let bytes = if c.field == Field::Key {
                        key
                    } else {
                        row.value()
                    };
                    let io = (self.io_inputs.iter())
                        .find(|(i, _)| *i == c.index)
                        .map(|(_, io)| io);
                    // A conversion can fail (bad UTF-8, a type's input
                    // function): the error names key, column and table;
                    // with invalid_values 'null' a value is NULL instead.
                    match columns::field_datum(c, io, bytes, key, self.invalid_values, &table) {
                        Some(d) => d,
                        None => continue,
                    }
                }
                _ => {
                    // Metadata: NULL for a pending row until the commit.
                    let Some(kv) = meta else { continue };
                    match c.field {
                        Field::CreateRevision => pg_sys::Datum::from(kv.create_revision()),
                        Field::ModRevision => pg_sys::Datum::from(kv.mod_revision()),
                        Field::Version => pg_sys::Datum::from(kv.version()),
                        _ => pg_sys::Datum::from(kv.lease()),
                    }
                }
            };
            values[c.index] = d;
            nulls[c.index] = false;
        }
    }

    pub fn rescan(&mut self) {
        self.counted = None;
        self.pager = None;
        self.page = Vec::new().into_iter().peekable();
        self.overlay = None;
        self.sorted = None;
    }
}

/// A row of a scan: etcd's, etcd's with the transaction's pending put
/// applied, or one only the transaction has.
pub enum ScanRow {
    Etcd(KeyValue),
    /// `value` `None`: the put keeps etcd's value.
    Merged {
        kv: KeyValue,
        value: Option<Vec<u8>>,
    },
    Own {
        key: Vec<u8>,
        value: Vec<u8>,
    },
}

impl ScanRow {
    pub fn key(&self) -> &[u8] {
        match self {
            ScanRow::Etcd(kv) | ScanRow::Merged { kv, .. } => kv.key(),
            ScanRow::Own { key, .. } => key,
        }
    }

    pub fn value(&self) -> &[u8] {
        match self {
            ScanRow::Etcd(kv) | ScanRow::Merged { kv, value: None } => kv.value(),
            ScanRow::Merged { value: Some(v), .. } | ScanRow::Own { value: v, .. } => v,
        }
    }

    /// etcd's metadata, for a row without pending changes.
    fn meta(&self) -> Option<&KeyValue> {
        match self {
            ScanRow::Etcd(kv) => Some(kv),
            _ => None,
        }
    }

    fn is_pending(&self) -> bool {
        !matches!(self, ScanRow::Etcd(_))
    }

    /// The revision the ctid carries to UPDATE/DELETE; 0 for a pending row.
    fn mod_revision(&self) -> i64 {
        self.meta().map_or(0, KeyValue::mod_revision)
    }

    fn sort_key(&self, field: SortField) -> SortKey<'_> {
        match (field, self.meta()) {
            (SortField::Key, _) => SortKey::Bytes(self.key()),
            (SortField::Value, _) => SortKey::Bytes(self.value()),
            (f, Some(kv)) => SortKey::Int(match f {
                SortField::CreateRevision => kv.create_revision(),
                SortField::ModRevision => kv.mod_revision(),
                _ => kv.version(),
            }),
            (_, None) => SortKey::Null,
        }
    }
}

/// The scan plan in `private`, decoded once per plan string: a prepared
/// statement runs the same plan again and again, and decoding it (parsing
/// text, one allocation per line) cost more than the rest of the scan's
/// set-up.  The decoded plan depends on the string alone.
///
/// # Safety
/// As [`decode_plan`].
unsafe fn cached_plan(private: *mut pg_sys::List) -> ScanPlan {
    thread_local! {
        static LAST: RefCell<Option<(String, ScanPlan)>> = const { RefCell::new(None) };
    }
    let Some(text) = super::private::from_private(private) else {
        return decode_plan(private);
    };
    let hit = LAST.with(|l| {
        l.borrow()
            .as_ref()
            .filter(|(t, _)| t == text)
            .map(|(_, p)| p.clone())
    });
    if let Some(plan) = hit {
        return plan;
    }
    let plan = decode_plan(private);
    LAST.with(|l| *l.borrow_mut() = Some((text.to_string(), plan.clone())));
    plan
}

unsafe fn exec<'a>(node: *mut pg_sys::ForeignScanState) -> &'a mut ScanExec {
    &mut *((*node).fdw_state as *mut ScanExec)
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn begin_foreign_scan(
    node: *mut pg_sys::ForeignScanState,
    eflags: std::ffi::c_int,
) {
    if eflags as u32 & pg_sys::EXEC_FLAG_EXPLAIN_ONLY != 0 {
        return;
    }
    let st = ScanExec::new(node);
    // Owned by the query's memory context: dropped (page buffers
    // included) when the query ends, also on error.
    let cxt = (*(*node).ss.ps.state).es_query_cxt;
    (*node).fdw_state = PgMemoryContexts::For(cxt).leak_and_drop_on_delete(st) as *mut _;
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn iterate_foreign_scan(
    node: *mut pg_sys::ForeignScanState,
) -> *mut pg_sys::TupleTableSlot {
    let slot = (*node).ss.ss_ScanTupleSlot;
    if !exec(node).next_into(slot) {
        pg_sys::ExecClearTuple(slot);
    }
    slot
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn rescan_foreign_scan(node: *mut pg_sys::ForeignScanState) {
    if !(*node).fdw_state.is_null() {
        exec(node).rescan();
    }
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn end_foreign_scan(node: *mut pg_sys::ForeignScanState) {
    if !(*node).fdw_state.is_null() {
        // Release the page buffer now; the struct itself goes with the
        // query context.
        exec(node).rescan();
    }
}
