//! The PostgreSQL major versions' differences, in one place.
//!
//! Everything else calls these helpers instead of touching a field or a
//! function whose shape changed between majors, so `#[cfg(feature = "pgNN")]`
//! appears only here.  Built and tested: PostgreSQL 15, 16, 17 and 18 (the
//! crate's features `pg15` to `pg18`; 13 and 14 lack fields the FDW
//! routine sets, e.g. `ExecForeignBatchInsert`).

use pgrx::pg_sys;

/// The range-table index of the relation a foreign scan reads: its
/// `scanrelid`, or for a scan of an upper relation (a pushed-down
/// aggregate, `scanrelid` 0) the one base relation it covers
/// (`fs_relids` up to 15, `fs_base_relids` from 16 on).
///
/// # Safety
/// `fsplan` is a valid ForeignScan of the executing plan.
pub unsafe fn scan_rti(fsplan: *mut pg_sys::ForeignScan) -> pg_sys::Index {
    // SAFETY (all arms): the caller's fsplan is valid.
    let scanrelid = unsafe { (*fsplan).scan.scanrelid };
    if scanrelid > 0 {
        return scanrelid;
    }
    #[cfg(feature = "pg15")]
    let relids = unsafe { (*fsplan).fs_relids };
    #[cfg(not(feature = "pg15"))]
    let relids = unsafe { (*fsplan).fs_base_relids };
    // SAFETY: a valid (possibly NULL) Bitmapset of the plan.
    let first = unsafe { pg_sys::bms_next_member(relids, -1) };
    first.max(0) as pg_sys::Index
}

/// The user a foreign scan runs as (a view owner), or `InvalidOid` for the
/// current user.
///
/// # Safety
/// `fsplan` is the ForeignScan being initialised in `estate`.
pub unsafe fn scan_check_as_user(
    fsplan: *mut pg_sys::ForeignScan,
    estate: *mut pg_sys::EState,
) -> pg_sys::Oid {
    #[cfg(feature = "pg15")]
    {
        // SAFETY: scan_rti is a valid range-table index of estate's plan.
        unsafe { (*pg_sys::exec_rt_fetch(scan_rti(fsplan), estate)).checkAsUser }
    }
    #[cfg(not(feature = "pg15"))]
    {
        // 16+: permissions moved to RTEPermissionInfo; the planner copies
        // the relation's userid into the plan node (an upper relation's
        // too: it inherits its input relation's).
        let _ = estate;
        // SAFETY: the caller's fsplan is a valid ForeignScan.
        unsafe { (*fsplan).checkAsUser }
    }
}

/// The user a result relation is modified as (a view owner), or
/// `InvalidOid` for the current user.
///
/// # Safety
/// `rinfo` is a result relation of `estate`.
pub unsafe fn result_rel_check_as_user(
    rinfo: *mut pg_sys::ResultRelInfo,
    estate: *mut pg_sys::EState,
) -> pg_sys::Oid {
    #[cfg(feature = "pg15")]
    {
        // SAFETY: a positive ri_RangeTableIndex indexes estate's range table
        // (0 for relations routed to without one: current user).
        unsafe {
            let rti = (*rinfo).ri_RangeTableIndex;
            if rti == 0 {
                return pg_sys::InvalidOid;
            }
            (*pg_sys::exec_rt_fetch(rti, estate)).checkAsUser
        }
    }
    #[cfg(not(feature = "pg15"))]
    {
        // SAFETY: the executor's own helper, for a result relation of estate
        // (it resolves routed partitions through the root relation).
        unsafe { pg_sys::ExecGetResultRelCheckAsUser(rinfo, estate) }
    }
}

/// `bms_is_empty` (a function up to 15, a NULL test from 16 on, where
/// empty sets are always NULL).
///
/// # Safety
/// `set` is NULL or a valid Bitmapset.
pub unsafe fn bms_is_empty(set: *const pg_sys::Bitmapset) -> bool {
    #[cfg(feature = "pg15")]
    {
        // SAFETY: the caller's set is valid or NULL.
        unsafe { pg_sys::bms_is_empty(set) }
    }
    #[cfg(not(feature = "pg15"))]
    {
        set.is_null()
    }
}

/// Whether a path key asks for descending order: `Some(false)` for `<`
/// (ascending), `Some(true)` for `>`, `None` for anything else (a B-tree
/// strategy up to 17, a CompareType from 18 on).
///
/// # Safety
/// `pk` is a valid PathKey.
pub unsafe fn pathkey_descending(pk: *const pg_sys::PathKey) -> Option<bool> {
    #[cfg(not(feature = "pg18"))]
    {
        // SAFETY: the caller's pk is valid.
        match unsafe { (*pk).pk_strategy } as u32 {
            pg_sys::BTLessStrategyNumber => Some(false),
            pg_sys::BTGreaterStrategyNumber => Some(true),
            _ => None,
        }
    }
    #[cfg(feature = "pg18")]
    {
        // SAFETY: the caller's pk is valid.
        match unsafe { (*pk).pk_cmptype } {
            pg_sys::CompareType::COMPARE_LT => Some(false),
            pg_sys::CompareType::COMPARE_GT => Some(true),
            _ => None,
        }
    }
}

/// Attribute `i` (0-based) of a tuple descriptor.
///
/// # Safety
/// `tupdesc` is valid, `i < natts`, and the descriptor outlives the use of
/// the reference.
pub unsafe fn tupdesc_attr(
    tupdesc: pg_sys::TupleDesc,
    i: usize,
) -> &'static pg_sys::FormData_pg_attribute {
    // SAFETY (both arms): the caller guarantees a valid descriptor and i < natts.
    let natts = unsafe { (*tupdesc).natts } as usize;
    assert!(
        i < natts,
        "attribute {i} of a {natts}-column tuple descriptor"
    );
    #[cfg(not(feature = "pg18"))]
    {
        unsafe { &(*tupdesc).attrs.as_slice(natts)[i] }
    }
    #[cfg(feature = "pg18")]
    {
        // 18: the full attributes follow the natts CompactAttributes
        // (what the TupleDescAttr() inline function computes).
        unsafe {
            let first = (*tupdesc)
                .compact_attrs
                .as_ptr()
                .add(natts)
                .cast::<pg_sys::FormData_pg_attribute>();
            &*first.add(i)
        }
    }
}

/// `create_foreignscan_path` for a base relation, without an outer plan or
/// restriction list (17 added `fdw_restrictinfo`, 18 `disabled_nodes`).
///
/// # Safety
/// Planner context: `root` and `baserel` are the planner's; the lists are
/// valid or NULL.
#[allow(clippy::too_many_arguments)]
pub unsafe fn create_foreignscan_path(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    rows: f64,
    startup_cost: f64,
    total_cost: f64,
    pathkeys: *mut pg_sys::List,
    required_outer: pg_sys::Relids,
    fdw_private: *mut pg_sys::List,
) -> *mut pg_sys::ForeignPath {
    let no_target = std::ptr::null_mut();
    let no_outer = std::ptr::null_mut();
    // SAFETY (all arms): the caller's planner context.
    #[cfg(any(feature = "pg15", feature = "pg16"))]
    unsafe {
        pg_sys::create_foreignscan_path(
            root,
            baserel,
            no_target,
            rows,
            startup_cost,
            total_cost,
            pathkeys,
            required_outer,
            no_outer,
            fdw_private,
        )
    }
    #[cfg(feature = "pg17")]
    unsafe {
        pg_sys::create_foreignscan_path(
            root,
            baserel,
            no_target,
            rows,
            startup_cost,
            total_cost,
            pathkeys,
            required_outer,
            no_outer,
            std::ptr::null_mut(),
            fdw_private,
        )
    }
    #[cfg(feature = "pg18")]
    unsafe {
        pg_sys::create_foreignscan_path(
            root,
            baserel,
            no_target,
            rows,
            0,
            startup_cost,
            total_cost,
            pathkeys,
            required_outer,
            no_outer,
            std::ptr::null_mut(),
            fdw_private,
        )
    }
}

/// Whether `role` holds USAGE on the foreign server `server_oid`.
///
/// # Safety
/// Catalog lookups: must run inside a transaction.
pub unsafe fn has_server_usage(server_oid: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    #[cfg(feature = "pg15")]
    let result =
        unsafe { pg_sys::pg_foreign_server_aclcheck(server_oid, role, pg_sys::ACL_USAGE as _) };
    #[cfg(not(feature = "pg15"))]
    let result = unsafe {
        pg_sys::object_aclcheck(
            pg_sys::ForeignServerRelationId,
            server_oid,
            role,
            pg_sys::ACL_USAGE as _,
        )
    };
    result == pg_sys::AclResult::ACLCHECK_OK
}

/// `create_foreign_upper_path` without pathkeys, outer plan or
/// restriction list (17 added `fdw_restrictinfo`, 18 `disabled_nodes`).
///
/// # Safety
/// Planner context: `root` and `rel` (an upper relation) are the
/// planner's; `target` and `fdw_private` are valid.
pub unsafe fn create_foreign_upper_path(
    root: *mut pg_sys::PlannerInfo,
    rel: *mut pg_sys::RelOptInfo,
    target: *mut pg_sys::PathTarget,
    rows: f64,
    startup_cost: f64,
    total_cost: f64,
    fdw_private: *mut pg_sys::List,
) -> *mut pg_sys::ForeignPath {
    let no_pathkeys = std::ptr::null_mut();
    let no_outer = std::ptr::null_mut();
    // SAFETY (all arms): the caller's planner context.
    #[cfg(any(feature = "pg15", feature = "pg16"))]
    unsafe {
        pg_sys::create_foreign_upper_path(
            root,
            rel,
            target,
            rows,
            startup_cost,
            total_cost,
            no_pathkeys,
            no_outer,
            fdw_private,
        )
    }
    #[cfg(feature = "pg17")]
    unsafe {
        pg_sys::create_foreign_upper_path(
            root,
            rel,
            target,
            rows,
            startup_cost,
            total_cost,
            no_pathkeys,
            no_outer,
            std::ptr::null_mut(),
            fdw_private,
        )
    }
    #[cfg(feature = "pg18")]
    unsafe {
        pg_sys::create_foreign_upper_path(
            root,
            rel,
            target,
            rows,
            0,
            startup_cost,
            total_cost,
            no_pathkeys,
            no_outer,
            std::ptr::null_mut(),
            fdw_private,
        )
    }
}

/// Whether a type's input function can report a value it refuses instead
/// of raising it (soft input errors, `InputFunctionCallSafe`, PostgreSQL
/// 16 and later).  The table option `invalid_values 'null'` needs them.
pub const SOFT_INPUT_ERRORS: bool = cfg!(not(feature = "pg15"));

/// Why an input function refused a value (a soft error's report).
pub struct SoftError {
    pub sqlstate: i32,
    /// The error's message, and its detail after a colon.
    pub message: String,
}

/// A type's input function on `cstr`: the datum, or with soft input
/// errors (16+) the error the function would have raised.  On 15 an
/// invalid value raises its ERROR, as `InputFunctionCall` does.
///
/// # Safety
/// `flinfo` is the type's looked-up input function; `cstr` a valid C
/// string; the datum is allocated in the current memory context.
pub unsafe fn input_function_call_safe(
    flinfo: *mut pg_sys::FmgrInfo,
    cstr: *mut std::ffi::c_char,
    typioparam: pg_sys::Oid,
    typmod: i32,
) -> Result<pg_sys::Datum, SoftError> {
    #[cfg(feature = "pg15")]
    {
        // SAFETY: the caller's arguments.
        Ok(unsafe { pg_sys::InputFunctionCall(flinfo, cstr, typioparam, typmod) })
    }
    #[cfg(not(feature = "pg15"))]
    {
        // An ErrorSaveContext node (nodes/miscnodes.h) asking for the
        // error's details: input functions that support soft errors
        // (json, jsonb, the integer and numeric types, ...) fill it in and
        // return; those that do not still raise their ERROR.
        let mut escontext = pg_sys::ErrorSaveContext {
            type_: pg_sys::NodeTag::T_ErrorSaveContext,
            error_occurred: false,
            details_wanted: true,
            error_data: std::ptr::null_mut(),
        };
        let mut result = pg_sys::Datum::from(0);
        // SAFETY: the caller's arguments; escontext lives through the call.
        let ok = unsafe {
            pg_sys::InputFunctionCallSafe(
                flinfo,
                cstr,
                typioparam,
                typmod,
                (&raw mut escontext).cast(),
                &mut result,
            )
        };
        if ok {
            return Ok(result);
        }
        let edata = escontext.error_data;
        if edata.is_null() {
            return Err(SoftError {
                sqlstate: pgrx::PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION as i32,
                message: "invalid input".into(),
            });
        }
        // SAFETY: a palloc'd ErrorData the input function filled in.
        unsafe {
            let mut message = if (*edata).message.is_null() {
                String::from("invalid input")
            } else {
                crate::encoding::server_cstr((*edata).message)
            };
            if !(*edata).detail.is_null() {
                message = format!(
                    "{message}: {}",
                    crate::encoding::server_cstr((*edata).detail)
                );
            }
            let sqlstate = (*edata).sqlerrcode;
            pg_sys::FreeErrorData(edata);
            Err(SoftError { sqlstate, message })
        }
    }
}

/// Where the current value of the GUC `name` came from (`PGC_S_DEFAULT`:
/// its built-in default), or `None` when there is no such setting.  A
/// setting's `config_generic` record never moves once defined (15 keeps
/// pointers to it in a sorted array, 16+ in a hash table).
///
/// # Safety
/// Reads the GUC tables of this backend.
pub unsafe fn guc_source(name: &std::ffi::CStr) -> Option<pg_sys::GucSource::Type> {
    #[cfg(feature = "pg15")]
    let record = {
        thread_local! {
            // The last record found and its name: 15 has no exported
            // lookup, so the array is searched once, not per statement.
            static FOUND: std::cell::Cell<(*mut pg_sys::config_generic, *const std::ffi::c_char)> =
                const { std::cell::Cell::new((std::ptr::null_mut(), std::ptr::null())) };
        }
        let (cached, cached_name) = FOUND.with(|f| f.get());
        if !cached.is_null() && std::ptr::eq(cached_name, name.as_ptr()) {
            cached
        } else {
            // SAFETY: get_guc_variables returns the array of
            // GetNumConfigOptions() valid records.
            let vars = unsafe { pg_sys::get_guc_variables() };
            let n = unsafe { pg_sys::GetNumConfigOptions() } as usize;
            let found = (0..n)
                .map(|i| unsafe { *vars.add(i) })
                .find(|&v| {
                    !v.is_null()
                        && unsafe { std::ffi::CStr::from_ptr((*v).name) } == name
                        // a placeholder is replaced when the library
                        // defines the setting: do not keep one
                        && unsafe { (*v).flags } & pg_sys::GUC_CUSTOM_PLACEHOLDER as i32 == 0
                })
                .unwrap_or(std::ptr::null_mut());
            FOUND.with(|f| f.set((found, name.as_ptr())));
            found
        }
    };
    #[cfg(not(feature = "pg15"))]
    // SAFETY: skip_errors = true: NULL for an unknown name, no ERROR; no
    // placeholder is created.
    let record =
        unsafe { pg_sys::find_option(name.as_ptr(), false, true, pgrx::PgLogLevel::ERROR as i32) };
    // SAFETY: a non-NULL record is a live config_generic.
    (!record.is_null()).then(|| unsafe { (*record).source })
}
