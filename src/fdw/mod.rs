//! The foreign data wrapper: handler, validator and FdwRoutine callbacks.

mod analyze;
mod deferred;
mod explain;
mod import;
mod modify;
pub(crate) mod plan;
mod private;
mod pushdown;
mod range_sizes;
mod scan;
mod upper;
mod validator;

pub use validator::check_table_ddl;

use pgrx::pg_sys;

/// `pg_finfo_*` record: these are version-1 C functions.
macro_rules! v1_function_info {
    ($finfo:ident) => {
        #[no_mangle]
        pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}

v1_function_info!(pg_finfo_etcd_fdw_handler);
v1_function_info!(pg_finfo_etcd_fdw_validator);

/// `etcd_fdw_handler() RETURNS fdw_handler`.
#[no_mangle]
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn etcd_fdw_handler(
    _fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let r = pg_sys::palloc0(std::mem::size_of::<pg_sys::FdwRoutine>()) as *mut pg_sys::FdwRoutine;
    (*r).type_ = pg_sys::NodeTag::T_FdwRoutine;
    (*r).GetForeignRelSize = Some(plan::get_foreign_rel_size);
    (*r).GetForeignPaths = Some(plan::get_foreign_paths);
    (*r).GetForeignPlan = Some(plan::get_foreign_plan);
    (*r).GetForeignUpperPaths = Some(upper::get_foreign_upper_paths);
    (*r).BeginForeignScan = Some(scan::begin_foreign_scan);
    (*r).IterateForeignScan = Some(scan::iterate_foreign_scan);
    (*r).ReScanForeignScan = Some(scan::rescan_foreign_scan);
    (*r).EndForeignScan = Some(scan::end_foreign_scan);
    (*r).ExplainForeignScan = Some(explain::explain_foreign_scan);
    (*r).IsForeignRelUpdatable = Some(modify::is_foreign_rel_updatable);
    (*r).AddForeignUpdateTargets = Some(modify::add_foreign_update_targets);
    (*r).PlanForeignModify = Some(modify::plan_foreign_modify);
    (*r).BeginForeignModify = Some(modify::begin_foreign_modify);
    (*r).ExecForeignInsert = Some(modify::exec_foreign_insert);
    (*r).ExecForeignBatchInsert = Some(modify::exec_foreign_batch_insert);
    (*r).GetForeignModifyBatchSize = Some(modify::get_foreign_modify_batch_size);
    (*r).ExecForeignUpdate = Some(modify::exec_foreign_update);
    (*r).ExecForeignDelete = Some(modify::exec_foreign_delete);
    (*r).EndForeignModify = Some(modify::end_foreign_modify);
    (*r).BeginForeignInsert = Some(modify::begin_foreign_insert);
    (*r).EndForeignInsert = Some(modify::end_foreign_modify);
    (*r).ExplainForeignModify = Some(modify::explain_foreign_modify);
    (*r).ExecForeignTruncate = Some(modify::exec_foreign_truncate);
    (*r).AnalyzeForeignTable = Some(analyze::analyze_foreign_table);
    (*r).ImportForeignSchema = Some(import::import_foreign_schema);
    pg_sys::Datum::from(r)
}

/// `etcd_fdw_validator(text[], oid) RETURNS void`.
#[no_mangle]
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn etcd_fdw_validator(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let args = (*fcinfo).args.as_slice(2);
    validator::validate(
        args[0].value,
        pg_sys::Oid::from(args[1].value.value() as u32),
    );
    pg_sys::Datum::from(0)
}
