//! EXPLAIN output: the etcd request a scan sends, and with ANALYZE what it
//! fetched.

use std::ffi::CString;

use etcd_fdw_core::plan::{describe_keys, CondOp, ScanPlan};
use etcd_fdw_core::scan::SortField;
use pgrx::pg_sys;

use super::plan::decode_plan;
use super::scan::ScanExec;

unsafe fn text(label: &str, value: &str, es: *mut pg_sys::ExplainState) {
    let l = CString::new(label).unwrap_or_default();
    let v = CString::new(crate::encoding::for_server(value).replace('\0', "")).unwrap_or_default();
    pg_sys::ExplainPropertyText(l.as_ptr(), v.as_ptr(), es);
}

unsafe fn int(label: &str, value: i64, es: *mut pg_sys::ExplainState) {
    let l = CString::new(label).unwrap_or_default();
    pg_sys::ExplainPropertyInteger(l.as_ptr(), std::ptr::null(), value, es);
}

/// What the scan's keys are at run time, as far as the plan tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyShape {
    /// At most one key (`key = ...`, a parameter `key = outer.col`, or
    /// contradictory conditions): one single-key get, no paging.
    OneKey,
    /// Several single keys (`key IN (...)`, `= ANY`): read key by key, in
    /// read-only transactions of `batch_size` keys (or one request per key
    /// with `batch_size` 0); no paging either.
    KeyList,
    /// Ranges (prefix, bounds, the whole table): paged range requests.
    Ranges,
}

/// The run-time key set is the plan's keys intersected with each
/// parameter's condition (see `ScanExec::runtime_keys`): single keys when
/// either side is single keys.
fn key_shape(plan: &ScanPlan) -> KeyShape {
    let eq_param = plan.params.iter().any(|p| p.op == CondOp::Eq);
    let in_param = plan.params.iter().any(|p| p.op == CondOp::In);
    match plan.keys.point_count() {
        Some(n) if n <= 1 => KeyShape::OneKey,
        _ if eq_param => KeyShape::OneKey,
        Some(_) => KeyShape::KeyList,
        None if in_param => KeyShape::KeyList,
        None => KeyShape::Ranges,
    }
}

/// Whether `fetch_size` decides the requests: only for ranges read in
/// pages.  Not for single keys and key lists (one key per get), counts (no
/// rows), a non-key sort (one request per range, the LIMIT its size) or a
/// LIMIT no larger than the first page (one request of LIMIT keys).
fn pages_by_fetch_size(plan: &ScanPlan, shape: KeyShape) -> bool {
    let non_key_sort = plan.sort.is_some_and(|(f, _)| f != SortField::Key);
    shape == KeyShape::Ranges
        && !plan.count_only
        && !non_key_sort
        && plan.limit.is_none_or(|l| l > u64::from(plan.fetch_size))
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn explain_foreign_scan(
    node: *mut pg_sys::ForeignScanState,
    es: *mut pg_sys::ExplainState,
) {
    let fsplan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
    let plan = decode_plan((*fsplan).fdw_private);
    if plan.count_only {
        // An aggregate scan names no relation in its node line.
        let rti = crate::pgver::scan_rti(fsplan) as usize;
        let rtable = pgrx::PgList::<pg_sys::RangeTblEntry>::from_pg((*es).rtable);
        if let Some(rte) = rti.checked_sub(1).and_then(|i| rtable.get_ptr(i)) {
            let name = crate::catalog::rel_name((*rte).relid);
            text("Relations", &format!("Aggregate on ({name})"), es);
        }
    }
    let mut range = describe_keys(&plan.keys);
    for p in &plan.params {
        range.push_str(&format!(
            " (narrowed at run time by parameter {})",
            p.expr_index + 1
        ));
    }
    text("etcd Range", &range, es);
    if !plan.pushed.is_empty() {
        text("etcd Conditions", &plan.pushed.join(" AND "), es);
    }
    if let Some((f, desc)) = plan.sort {
        text(
            "etcd Sort",
            &format!("{} {}", f.name(), if desc { "DESC" } else { "ASC" }),
            es,
        );
    }
    if let Some(l) = plan.limit {
        int("etcd Limit", l as i64, es);
    }
    text(
        "etcd Keys Only",
        if plan.keys_only { "true" } else { "false" },
        es,
    );
    if plan.count_only {
        text("etcd Count Only", "true", es);
    }
    let shape = key_shape(&plan);
    match shape {
        KeyShape::KeyList if plan.batch_size > 0 => text(
            "etcd Key Lists",
            &format!("read-only transactions of up to {} keys", plan.batch_size),
            es,
        ),
        KeyShape::KeyList => text("etcd Key Lists", "one request per key", es),
        _ => {}
    }
    if plan.revision != 0 {
        int("etcd Revision", plan.revision, es);
    }
    text(
        "etcd Consistency",
        if plan.serializable {
            "serializable"
        } else {
            "linearizable"
        },
        es,
    );
    if pages_by_fetch_size(&plan, shape) {
        if plan.adaptive_fetch {
            // A whole-range scan's first page takes what the backend's
            // last complete scan of the range found, when there was one.
            let then = if plan.whole_range {
                ", or the size the last complete scan of the range found, then"
            } else {
                ", then growing"
            };
            text(
                "etcd Fetch Size",
                &format!(
                    "auto (first {}{then} up to {} MiB per request{})",
                    plan.fetch_size,
                    etcd_fdw_core::scan::PAGE_BYTES >> 20,
                    if plan.whole_range {
                        ": the query reads the whole range"
                    } else {
                        ""
                    }
                ),
                es,
            );
        } else {
            int("etcd Fetch Size", plan.fetch_size as i64, es);
        }
    }
    if (*es).analyze && !(*node).fdw_state.is_null() {
        let st = &*((*node).fdw_state as *const ScanExec);
        int("etcd Pages", st.pages as i64, es);
        if let Some(n) = st.counted {
            int("etcd Keys Counted", n as i64, es);
        } else {
            int("etcd Keys Fetched", st.keys_fetched as i64, es);
        }
    }
}
