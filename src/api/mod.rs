//! etcd's own API as SQL functions (beyond the rows a foreign table maps):
//! each takes a foreign server's name, checks the caller's USAGE on it and
//! talks to etcd with the caller's user mapping, like a scan would.

use pgrx::{pg_sys, PgSqlErrorCode};

use crate::catalog::{self, ServerInfo};
use crate::encoding;
use crate::error::raise;

/// The etcd_fdw server `server` with the current user's mapping applied,
/// after checking the current user's USAGE on it: 42704 when there is no
/// such server, 42809 when it belongs to another foreign data wrapper,
/// 42501 without USAGE.
pub fn server_for_call(server: &ServerName) -> ServerInfo {
    let name = &server.display;
    // SAFETY: catalog lookups in the caller's transaction; missing_ok =
    // true returns NULL instead of raising, get_func_name returns NULL or
    // a palloc'd string.
    let (server_oid, is_ours) = unsafe {
        let server = pg_sys::GetForeignServerByName(server.raw.as_ptr(), true);
        if server.is_null() {
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("server \"{name}\" does not exist"),
            );
        }
        let fdw = pg_sys::GetForeignDataWrapper((*server).fdwid);
        let handler = if (*fdw).fdwhandler == pg_sys::InvalidOid {
            std::ptr::null_mut()
        } else {
            pg_sys::get_func_name((*fdw).fdwhandler)
        };
        let is_ours = !handler.is_null()
            && std::ffi::CStr::from_ptr(handler).to_bytes() == b"etcd_fdw_handler";
        ((*server).serverid, is_ours)
    };
    if !is_ours {
        raise(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("server \"{name}\" is not an etcd_fdw server"),
        );
    }
    // SAFETY: GetUserId has no preconditions; the ACL check reads catalogs.
    let user = unsafe { pg_sys::GetUserId() };
    if !unsafe { crate::pgver::has_server_usage(server_oid, user) } {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied for foreign server {name}"),
        );
    }
    catalog::server_info(server_oid, user)
}

/// A NULL where a function needs a value: STRICT functions never get
/// here (PostgreSQL returns NULL without calling them); any other caller
/// gets an ERROR, not a panic.
fn null_argument(index: usize) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        format!("argument {} must not be NULL", index + 1),
    )
}

/// A function argument of SQL type `name` (a foreign server's name): pgrx
/// maps no Rust type to `name`, whose datum points at a fixed 64-byte,
/// NUL-padded `NameData` (not a varlena like `text`).
pub struct ServerName {
    /// As stored in the catalogs (server encoding), for the lookup.
    raw: std::ffi::CString,
    /// As UTF-8, for messages.
    display: String,
}

impl pgrx::FromDatum for ServerName {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: a non-null `name` datum points at a NUL-terminated
        // NameData in the function call's memory.
        let p = datum.cast_mut_ptr::<std::ffi::c_char>();
        // SAFETY: as above.
        let (raw, display) = unsafe {
            (
                std::ffi::CStr::from_ptr(p).to_owned(),
                encoding::server_cstr(p),
            )
        };
        Some(ServerName { raw, display })
    }
}

// SAFETY: unboxes like pgrx's own FromDatum-based argument types; a NULL
// argument of a STRICT function never reaches here.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for ServerName {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: the argument is a `name` datum (the SQL signature says so).
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| null_argument(index))
    }
}

impl ServerName {
    /// The server, after the checks of [`server_for_call`].
    pub fn resolve(&self) -> ServerInfo {
        server_for_call(self)
    }
}

mod certificates;
mod cluster;

/// A `text` argument as the UTF-8 bytes etcd stores (converted from the
/// database encoding exactly as a key column's value is).
pub struct Utf8Text(pub Vec<u8>);

impl pgrx::FromDatum for Utf8Text {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        // SAFETY: a non-null `text` datum (the SQL signature says so).
        (!is_null).then(|| {
            Utf8Text(unsafe {
                crate::columns::varlena_bytes(datum, crate::columns::Repr::Text).into_owned()
            })
        })
    }
}

// SAFETY: as for ServerName.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for Utf8Text {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: the argument is a `text` datum.
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| null_argument(index))
    }
}

/// A `text` result already converted into the database encoding (by
/// `columns::text_datum`, the conversion scans use).
pub struct TextDatum(pg_sys::Datum);

impl TextDatum {
    /// A name read from the catalogs (a server's, a role's), held as UTF-8
    /// by etcd_fdw, as text in the database encoding.  It came from the
    /// database encoding, so it converts back.
    pub fn from_catalog_name(name: &str) -> TextDatum {
        // SAFETY: palloc'd in the function call's memory context, where
        // pgrx builds the result.
        unsafe {
            let bytes = encoding::utf8_to_server(name.as_bytes());
            TextDatum(crate::columns::text_from_bytes(&bytes))
        }
    }

    /// Bytes already in the database encoding (a catalog string) as text.
    pub fn from_server_bytes(bytes: &[u8]) -> TextDatum {
        // SAFETY: as above.
        TextDatum(unsafe { crate::columns::text_from_bytes(bytes) })
    }
}

// SAFETY: the datum is a text varlena palloc'd in the function's context.
unsafe impl pgrx::callconv::BoxRet for TextDatum {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        // SAFETY: see above.
        unsafe { fcinfo.return_raw_datum(self.0) }
    }
}

// A table function's text columns: a TextDatum is made (converted,
// checked) while pulling the row, then pgrx builds the row from it.
impl pgrx::IntoDatum for TextDatum {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.0)
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::TEXTOID
    }
}

macro_rules! sql_type {
    ($t:ty, $sql:literal) => {
        // SAFETY: the SQL type named here is the one the Rust type reads
        // or returns.
        unsafe impl pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable for $t {
            const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!($t);
            const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
                pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::External;
            const ARGUMENT_SQL: Result<
                pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef,
                pgrx::pgrx_sql_entity_graph::metadata::ArgumentError,
            > = Ok(pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal($sql));
            const RETURN_SQL: Result<
                pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef,
                pgrx::pgrx_sql_entity_graph::metadata::ReturnsError,
            > = Ok(pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef::One(
                pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal($sql),
            ));
        }
    };
}
sql_type!(ServerName, "name");
sql_type!(Utf8Text, "text");
sql_type!(TextDatum, "text");

mod kv;
mod lease;
mod patroni;
mod watch;
