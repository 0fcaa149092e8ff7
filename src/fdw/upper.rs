//! Aggregate pushdown: `count(*)` (and `count(key)`, the key is never
//! NULL) of one foreign table whose WHERE clauses etcd decides exactly
//! becomes `count_only` range requests, one per range of keys (a key list:
//! read-only transactions of `batch_size` counts), whose counts add up;
//! all read at the revision of the first answer.  The scan returns one row.
//!
//! Pending writes of the transaction are known only when the scan runs
//! (a prepared plan outlives them); a scan whose keys they touch counts
//! the merged rows instead (see `ScanExec::count`).

use etcd_fdw_core::plan::ScanPlan;
use pgrx::pg_sys;
use pgrx::{is_a, PgList, PgSqlErrorCode};

use super::plan::{push_clauses, restriction_clauses, state, RelState, ROUND_TRIP_COST};
use super::private;
use super::pushdown;
use crate::error::raise;
use crate::pgver;

/// The fdw_private of an upper path: it counts.
const COUNT_PATH: &str = "count";

/// Whether `e` is `count(*)` or `count(key)` of `st`'s relation, plain:
/// no DISTINCT, ORDER BY or FILTER, not split into partial aggregates.
unsafe fn is_key_count(e: *mut pg_sys::Node, st: &RelState) -> bool {
    if e.is_null() || !is_a(e, pg_sys::NodeTag::T_Aggref) {
        return false;
    }
    let a = e as *mut pg_sys::Aggref;
    let plain = (*a).aggkind as u8 == b'n'
        && (*a).agglevelsup == 0
        && (*a).aggsplit == pg_sys::AggSplit::AGGSPLIT_SIMPLE
        && (*a).aggdistinct.is_null()
        && (*a).aggorder.is_null()
        && (*a).aggfilter.is_null()
        && (*a).aggdirectargs.is_null();
    if !plain {
        return false;
    }
    let args = PgList::<pg_sys::TargetEntry>::from_pg((*a).args);
    match u32::from((*a).aggfnoid) {
        pg_sys::F_COUNT_ => (*a).aggstar && args.is_empty(),
        pg_sys::F_COUNT_ANY => {
            let Some(kc) = st.key else { return false };
            args.len() == 1
                && args.get_ptr(0).is_some_and(|te| {
                    pushdown::as_var((*te).expr as *mut pg_sys::Node).is_some_and(|v| {
                        (*v).varno as u32 == st.relid
                            && (*v).varattno == kc.attno
                            && (*v).varlevelsup == 0
                    })
                })
        }
        _ => false,
    }
}

/// Requests a count of the relation's keys makes (as far as the planner
/// knows them).
fn count_requests(st: &RelState) -> f64 {
    if st.has_params {
        return 1.0;
    }
    match st.keys.point_count() {
        Some(n) if n > 1 && st.batch_size > 0 => (n as f64 / f64::from(st.batch_size)).ceil(),
        Some(n) => n as f64,
        None => st.keys.ranges().len() as f64,
    }
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_upper_paths(
    root: *mut pg_sys::PlannerInfo,
    stage: pg_sys::UpperRelationKind::Type,
    input_rel: *mut pg_sys::RelOptInfo,
    output_rel: *mut pg_sys::RelOptInfo,
    _extra: *mut std::ffi::c_void,
) {
    if stage != pg_sys::UpperRelationKind::UPPERREL_GROUP_AGG
        || (*input_rel).reloptkind != pg_sys::RelOptKind::RELOPT_BASEREL
        || (*input_rel).rtekind != pg_sys::RTEKind::RTE_RELATION
        || (*input_rel).fdw_private.is_null()
        || !(*output_rel).fdw_private.is_null()
    {
        return;
    }
    let parse = (*root).parse;
    let rte = *(*root).simple_rte_array.add((*input_rel).relid as usize);
    if (*rte).inh
        || (*parse).commandType != pg_sys::CmdType::CMD_SELECT
        || !(*parse).groupClause.is_null()
        || !(*parse).groupingSets.is_null()
        || !(*parse).havingQual.is_null()
        || (*parse).hasTargetSRFs
        || !(*parse).rowMarks.is_null()
        // Gating quals of the scan would be lost above an upper path.
        || (*root).hasPseudoConstantQuals
    {
        return;
    }
    let st = state(input_rel);
    if !st.all_exact || st.key.is_none() {
        return;
    }
    let target = (*output_rel).reltarget;
    let exprs = PgList::<pg_sys::Node>::from_pg((*target).exprs);
    if exprs.is_empty() || !exprs.iter_ptr().all(|e| is_key_count(e, st)) {
        return;
    }
    // A count answers with one number: never dearer than reading the keys
    // it counts, which takes at least as many requests.
    let cheapest = (*(*input_rel).cheapest_total_path).total_cost;
    let cost = (ROUND_TRIP_COST * count_requests(st).max(1.0)).min(0.9 * cheapest);
    (*output_rel).fdw_private = (*input_rel).fdw_private;
    let path = pgver::create_foreign_upper_path(
        root,
        output_rel,
        target,
        1.0,
        cost,
        cost,
        private::to_private(COUNT_PATH),
    );
    pg_sys::add_path(output_rel, path as *mut pg_sys::Path);
}

/// The ForeignScan of a counting upper path: the relation's pushed
/// conditions, `count_only`, and the count aggregates as its scan tuple.
///
/// # Safety
/// Planner context: `upper_rel` got its path from
/// [`get_foreign_upper_paths`]; `tlist` is that path's target list.
pub unsafe fn count_plan(
    root: *mut pg_sys::PlannerInfo,
    upper_rel: *mut pg_sys::RelOptInfo,
    tlist: *mut pg_sys::List,
) -> *mut pg_sys::ForeignScan {
    let st = state(upper_rel);
    let base = *(*root).simple_rel_array.add(st.relid as usize);
    let p = push_clauses(root, st, restriction_clauses(base));
    if !p.all_exact || !p.local.is_empty() {
        // get_foreign_upper_paths saw every clause pushed exactly.
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "etcd_fdw: a pushed-down count has conditions etcd cannot decide",
        );
    }
    let plan = ScanPlan {
        keys: p.keys,
        params: p.params,
        keys_only: true,
        pushed: p.pushed,
        batch_size: st.batch_size,
        count_only: true,
        ..ScanPlan::whole_table(&st.table, st.fetch_size, st.adaptive_fetch)
    };
    // The scan tuple: one column per count of the target list.
    let mut scan_tlist = PgList::<pg_sys::TargetEntry>::new();
    for (i, te) in PgList::<pg_sys::TargetEntry>::from_pg(tlist)
        .iter_ptr()
        .enumerate()
    {
        let expr = pg_sys::copyObjectImpl((*te).expr as *const std::ffi::c_void);
        scan_tlist.push(pg_sys::makeTargetEntry(
            expr as *mut pg_sys::Expr,
            (i + 1) as pg_sys::AttrNumber,
            std::ptr::null_mut(),
            false,
        ));
    }
    pg_sys::make_foreignscan(
        tlist,
        std::ptr::null_mut(),
        0,
        p.fdw_exprs.into_pg(),
        private::to_private(&plan.encode()),
        scan_tlist.into_pg(),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
}
