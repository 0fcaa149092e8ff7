//! ANALYZE: count the table's keys and take a random sample of its rows,
//! so PostgreSQL keeps `reltuples` and per-column statistics (histograms
//! of keys, widths of values) for the planner.
//!
//! The whole key range of the table is read once, page by page at one
//! revision like any scan; only the sampled rows are converted into tuples,
//! so memory stays at one page plus the sample.

use etcd_fdw_core::options::effective_fetch_size;
use etcd_fdw_core::plan::ScanPlan;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgMemoryContexts, PgSqlErrorCode};

use super::plan::table_info;
use super::scan::ScanExec;
use crate::catalog;

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn analyze_foreign_table(
    _relation: pg_sys::Relation,
    func: *mut pg_sys::AcquireSampleRowsFunc,
    totalpages: *mut pg_sys::BlockNumber,
) -> bool {
    *func = Some(acquire_sample_rows);
    // etcd has no pages; relpages is not used for foreign tables.
    *totalpages = 1;
    true
}

/// A uniform random sample of `target` rows from a stream of unknown
/// length, drawn with PostgreSQL's reservoir sampling
/// (utils/misc/sampling.c) the way ANALYZE of a heap table draws it.
struct Reservoir {
    state: pg_sys::ReservoirStateData,
    target: i32,
    filled: i32,
    seen: f64,
    skip: f64,
}

impl Reservoir {
    unsafe fn new(target: i32) -> Reservoir {
        let mut state = pg_sys::ReservoirStateData::default();
        pg_sys::reservoir_init_selection_state(&mut state, target);
        Reservoir {
            state,
            target,
            filled: 0,
            seen: 0.0,
            skip: -1.0,
        }
    }

    /// The slot for the next row: `Some((i, replaces))`, or None to skip it.
    unsafe fn next_slot(&mut self) -> Option<(usize, bool)> {
        let seen_before = self.seen;
        self.seen += 1.0;
        if self.target <= 0 {
            return None;
        }
        if self.filled < self.target {
            self.filled += 1;
            return Some(((self.filled - 1) as usize, false));
        }
        if self.skip < 0.0 {
            self.skip = pg_sys::reservoir_get_next_S(&mut self.state, seen_before, self.target);
        }
        let slot = if self.skip <= 0.0 {
            let f = pg_sys::sampler_random_fract(&mut self.state.randstate);
            Some((
                ((self.target as f64 * f) as usize).min(self.target as usize - 1),
                true,
            ))
        } else {
            None
        };
        self.skip -= 1.0;
        slot
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn acquire_sample_rows(
    relation: pg_sys::Relation,
    elevel: std::ffi::c_int,
    rows: *mut pg_sys::HeapTuple,
    targrows: std::ffi::c_int,
    totalrows: *mut f64,
    totaldeadrows: *mut f64,
) -> std::ffi::c_int {
    let relid = (*relation).rd_id;
    // Like postgres_fdw, ANALYZE connects as the table's owner.
    let owner = (*(*relation).rd_rel).relowner;
    let (table, server_oid, _cols) = table_info(relid);
    let server = catalog::server_info(server_oid, owner);
    let (fetch_size, adaptive_fetch) = effective_fetch_size(&server.options, &table);
    let plan = ScanPlan::whole_table(&table, fetch_size, adaptive_fetch);
    // The sample lives in ANALYZE's context (current on entry); each
    // row's datums are built in a scratch context reset after every row.
    let sample_cxt = pg_sys::CurrentMemoryContext;
    let mut row_cxt = PgMemoryContexts::new("etcd_fdw ANALYZE row");
    let mut exec = ScanExec::for_relation(relid, owner, plan, sample_cxt);
    let tupdesc = (*relation).rd_att;
    let natts = (*tupdesc).natts as usize;
    let mut values = vec![pg_sys::Datum::from(0); natts];
    let mut nulls = vec![true; natts];
    let sample = std::slice::from_raw_parts_mut(rows, targrows.max(0) as usize);
    let mut reservoir = Reservoir::new(targrows);
    let mut fetched_pages = 0;
    while let Some(row) = exec.next_row() {
        if exec.pages != fetched_pages {
            fetched_pages = exec.pages;
            pgrx::check_for_interrupts!();
        }
        let Some((i, replaces)) = reservoir.next_slot() else {
            continue;
        };
        row_cxt.switch_to(|_| exec.fill(&row, &mut values, &mut nulls));
        if replaces {
            pg_sys::heap_freetuple(sample[i]);
        }
        sample[i] = pg_sys::heap_form_tuple(tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
        row_cxt.reset();
    }
    *totalrows = reservoir.seen;
    *totaldeadrows = 0.0;
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
        crate::encoding::for_server(&format!(
            "\"{}\": etcd holds {} keys in the table's range, {} rows in sample ({} requests)",
            catalog::rel_name(relid),
            reservoir.seen,
            reservoir.filled,
            exec.pages
        ))
        .into_owned(),
        "etcd_fdw",
    )
    .report(PgLogLevel::from(elevel));
    reservoir.filled
}
