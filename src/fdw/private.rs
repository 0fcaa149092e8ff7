//! `fdw_private` lists: etcd_fdw keeps one string in each (a path's sort,
//! a scan plan, a modify plan), encoded and decoded by the core crate.
//! PostgreSQL copies these lists with the plan, so they must be nodes.

use std::ffi::{CStr, CString};

use pgrx::{pg_sys, PgList, PgSqlErrorCode};

use crate::error::raise;

/// A one-element `List` holding `s` as a String node.
///
/// # Safety
/// Allocates in the current memory context (the planner's).
pub unsafe fn to_private(s: &str) -> *mut pg_sys::List {
    let Ok(cs) = CString::new(s) else {
        // Encoders escape every byte; a NUL here is a bug, never data.
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "etcd_fdw: a plan string contains a NUL byte",
        );
    };
    let mut l = PgList::<pg_sys::Node>::new();
    l.push(pg_sys::makeString(pg_sys::pstrdup(cs.as_ptr())) as *mut pg_sys::Node);
    l.into_pg()
}

/// The string [`to_private`] stored, if `list` holds one.
///
/// # Safety
/// `list` must be NIL or a list built by [`to_private`].
pub unsafe fn from_private<'a>(list: *mut pg_sys::List) -> Option<&'a str> {
    let l = PgList::<pg_sys::Node>::from_pg(list);
    let node = l.head()?;
    if (*node).type_ != pg_sys::NodeTag::T_String {
        return None;
    }
    let sval = (*(node as *mut pg_sys::String)).sval;
    if sval.is_null() {
        return None;
    }
    CStr::from_ptr(sval).to_str().ok()
}
