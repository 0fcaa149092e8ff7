//! Reading etcd_fdw's options out of PostgreSQL's catalogs (server, user
//! mapping, foreign table) and parsing them with the core crate.
//!
//! Parsed options are cached per backend, so a prepared point lookup does
//! not re-read and re-parse them on every execution.  PostgreSQL's
//! invalidation callbacks (servers, user mappings, foreign tables,
//! relcache) bump a generation counter; an entry from an older generation
//! is never used.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use etcd_fdw_core::options::{self, ServerOptions, TableOptions};
use pgrx::pg_sys;
use pgrx::PgList;

use crate::encoding;
use crate::error::option_error;

/// A `List` of `DefElem` as name/value pairs.
///
/// # Safety
/// `list` must be NIL or a valid `List *` of `DefElem *`.
pub unsafe fn deflist_to_pairs(list: *mut pg_sys::List) -> Vec<(String, String)> {
    let list = PgList::<pg_sys::DefElem>::from_pg(list);
    list.iter_ptr()
        .map(|def| {
            // Option values are in the database encoding; etcd speaks
            // UTF-8 (a prefix must select the bytes etcd stores).
            let name = encoding::server_cstr((*def).defname);
            let value = encoding::server_cstr(pg_sys::defGetString(def));
            (name, value)
        })
        .collect()
}

/// A server with the options that apply to one user.
#[derive(Clone)]
pub struct ServerInfo {
    pub server_oid: pg_sys::Oid,
    pub user_oid: pg_sys::Oid,
    pub server_name: String,
    pub options: ServerOptions,
    /// Identifies the options a connection was opened with.
    pub fingerprint: u64,
}

thread_local! {
    static SERVER_GEN: Cell<u64> = const { Cell::new(0) };
    static TABLE_GEN: Cell<u64> = const { Cell::new(0) };
    static SERVERS: RefCell<HashMap<(u32, u32), (u64, ServerInfo)>> = RefCell::new(HashMap::new());
    static TABLES: RefCell<HashMap<u32, (u64, TableInfo)>> = RefCell::new(HashMap::new());
}

/// A foreign table's options, server and column mapping.
pub type TableInfo = (TableOptions, pg_sys::Oid, crate::columns::TableColumns);

unsafe extern "C-unwind" fn servers_changed(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    SERVER_GEN.with(|g| g.set(g.get() + 1));
}

unsafe extern "C-unwind" fn tables_changed(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    TABLE_GEN.with(|g| g.set(g.get() + 1));
}

unsafe extern "C-unwind" fn relation_changed(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    TABLE_GEN.with(|g| g.set(g.get() + 1));
}

/// Register the invalidation callbacks; once per backend, from _PG_init.
pub fn register_invalidation_callbacks() {
    use pg_sys::SysCacheIdentifier as S;
    // SAFETY: the callbacks only bump thread-local counters.
    unsafe {
        for id in [
            S::FOREIGNSERVEROID,
            S::USERMAPPINGOID,
            S::USERMAPPINGUSERSERVER,
        ] {
            pg_sys::CacheRegisterSyscacheCallback(
                id as i32,
                Some(servers_changed),
                pg_sys::Datum::from(0),
            );
        }
        pg_sys::CacheRegisterSyscacheCallback(
            S::FOREIGNTABLEREL as i32,
            Some(tables_changed),
            pg_sys::Datum::from(0),
        );
        pg_sys::CacheRegisterRelcacheCallback(Some(relation_changed), pg_sys::Datum::from(0));
    }
}

/// `compute()`, or its cached result while no invalidation happened.  No
/// borrow is held while computing: catalog access may run callbacks.
fn cached<K, V>(
    cache: &'static std::thread::LocalKey<RefCell<HashMap<K, (u64, V)>>>,
    gen: &'static std::thread::LocalKey<Cell<u64>>,
    key: K,
    compute: impl FnOnce() -> V,
) -> V
where
    K: std::hash::Hash + Eq,
    V: Clone,
{
    let now = gen.with(Cell::get);
    if let Some(v) = cache.with(|c| {
        c.borrow()
            .get(&key)
            .filter(|(g, _)| *g == now)
            .map(|(_, v)| v.clone())
    }) {
        return v;
    }
    let v = compute();
    // Only cache what was computed without an invalidation in between.
    if gen.with(Cell::get) == now {
        cache.with(|c| c.borrow_mut().insert(key, (now, v.clone())));
    }
    v
}

/// A foreign table's options, server and columns (cached).
pub fn table_info_cached(relid: pg_sys::Oid, compute: impl FnOnce() -> TableInfo) -> TableInfo {
    cached(&TABLES, &TABLE_GEN, u32::from(relid), compute)
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

/// Server options merged with the user mapping of `userid` (cached).
pub fn server_info(server_oid: pg_sys::Oid, userid: pg_sys::Oid) -> ServerInfo {
    cached(
        &SERVERS,
        &SERVER_GEN,
        (u32::from(server_oid), u32::from(userid)),
        || read_server_info(server_oid, userid),
    )
}

fn read_server_info(server_oid: pg_sys::Oid, userid: pg_sys::Oid) -> ServerInfo {
    // SAFETY: GetForeignServer raises an ERROR for a missing server; the
    // returned struct lives in the current memory context.
    unsafe {
        let server = pg_sys::GetForeignServer(server_oid);
        let server_name = encoding::server_cstr((*server).servername);
        let pairs = deflist_to_pairs((*server).options);
        let mapping = user_mapping_options(userid, server_oid);
        let options = options::parse_server(&pairs, &mapping).unwrap_or_else(|e| option_error(&e));
        let mut h = DefaultHasher::new();
        format!("{options:?}").hash(&mut h);
        ServerInfo {
            server_oid,
            user_oid: userid,
            server_name,
            options,
            fingerprint: h.finish(),
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
/// `schema.name` of a relation, each part quoted when SQL needs it (for
/// hints that show a command to run).
pub fn qualified_name(relid: pg_sys::Oid) -> String {
    // SAFETY: catalog lookups returning NULL or palloc'd C strings;
    // quote_qualified_identifier accepts a NULL qualifier.
    unsafe {
        let name = pg_sys::get_rel_name(relid);
        if name.is_null() {
            return rel_name(relid);
        }
        let schema = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
        encoding::server_cstr(pg_sys::quote_qualified_identifier(schema, name))
    }
}

pub fn rel_name(relid: pg_sys::Oid) -> String {
    // SAFETY: get_rel_name returns NULL or a palloc'd C string.
    unsafe {
        let p = pg_sys::get_rel_name(relid);
        if p.is_null() {
            format!("relation {}", u32::from(relid))
        } else {
            encoding::server_cstr(p)
        }
    }
}
