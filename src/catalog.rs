//! Reading etcd_fdw's options out of PostgreSQL's catalogs (server, user
//! mapping, foreign table) and parsing them with the core crate.

use std::ffi::CStr;

use etcd_fdw_core::options::{self, ServerOptions, TableOptions};
use pgrx::pg_sys;
use pgrx::PgList;

use crate::error::option_error;

/// A `List` of `DefElem` as name/value pairs.
///
/// # Safety
/// `list` must be NIL or a valid `List *` of `DefElem *`.
pub unsafe fn deflist_to_pairs(list: *mut pg_sys::List) -> Vec<(String, String)> {
    let list = PgList::<pg_sys::DefElem>::from_pg(list);
    list.iter_ptr()
        .map(|def| {
            let name = CStr::from_ptr((*def).defname)
                .to_string_lossy()
                .into_owned();
            let value = CStr::from_ptr(pg_sys::defGetString(def))
                .to_string_lossy()
                .into_owned();
            (name, value)
        })
        .collect()
}

/// A server with the options that apply to one user.
pub struct ServerInfo {
    pub server_oid: pg_sys::Oid,
    pub user_oid: pg_sys::Oid,
    pub server_name: String,
    pub options: ServerOptions,
}

/// The user mapping options of `userid` (or PUBLIC) for `serverid`; empty
/// when there is no user mapping (etcd_fdw does not require one).
unsafe fn user_mapping_options(
    userid: pg_sys::Oid,
    serverid: pg_sys::Oid,
) -> Vec<(String, String)> {
    for uid in [userid, pg_sys::InvalidOid] {
        let tup = pg_sys::SearchSysCache2(
            pg_sys::SysCacheIdentifier::USERMAPPINGUSERSERVER as _,
            pg_sys::Datum::from(uid),
            pg_sys::Datum::from(serverid),
        );
        if tup.is_null() {
            continue;
        }
        let mut isnull = false;
        let datum = pg_sys::SysCacheGetAttr(
            pg_sys::SysCacheIdentifier::USERMAPPINGUSERSERVER as _,
            tup,
            pg_sys::Anum_pg_user_mapping_umoptions as _,
            &mut isnull,
        );
        let pairs = if isnull {
            Vec::new()
        } else {
            deflist_to_pairs(pg_sys::untransformRelOptions(datum))
        };
        pg_sys::ReleaseSysCache(tup);
        return pairs;
    }
    Vec::new()
}

/// Server options merged with the user mapping of `userid`.
pub fn server_info(server_oid: pg_sys::Oid, userid: pg_sys::Oid) -> ServerInfo {
    // SAFETY: GetForeignServer raises an ERROR for a missing server; the
    // returned struct lives in the current memory context.
    unsafe {
        let server = pg_sys::GetForeignServer(server_oid);
        let server_name = CStr::from_ptr((*server).servername)
            .to_string_lossy()
            .into_owned();
        let pairs = deflist_to_pairs((*server).options);
        let mapping = user_mapping_options(userid, server_oid);
        let options = options::parse_server(&pairs, &mapping).unwrap_or_else(|e| option_error(&e));
        ServerInfo {
            server_oid,
            user_oid: userid,
            server_name,
            options,
        }
    }
}

/// The foreign table's options and its server's oid.
pub fn table_options(relid: pg_sys::Oid) -> (TableOptions, pg_sys::Oid) {
    // SAFETY: GetForeignTable raises an ERROR for a non-foreign table.
    unsafe {
        let table = pg_sys::GetForeignTable(relid);
        let pairs = deflist_to_pairs((*table).options);
        let opts = options::parse_table(&pairs).unwrap_or_else(|e| option_error(&e));
        (opts, (*table).serverid)
    }
}

/// The name of a relation, for messages.
pub fn rel_name(relid: pg_sys::Oid) -> String {
    // SAFETY: get_rel_name returns NULL or a palloc'd C string.
    unsafe {
        let p = pg_sys::get_rel_name(relid);
        if p.is_null() {
            format!("relation {}", u32::from(relid))
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}
