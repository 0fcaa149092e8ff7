//! DDL-time checks: the validator function PostgreSQL calls for every
//! CREATE/ALTER of a server, user mapping or foreign table, and the check
//! of a foreign table's columns run by the extension's event trigger
//! (the validator never sees the table's columns).

use etcd_fdw_core::options::{self, OptionContext};
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::catalog::deflist_to_pairs;
use crate::error::{option_error, raise_with, warning_with_hint};

fn context_of(catalog: pg_sys::Oid) -> OptionContext {
    match catalog {
        pg_sys::ForeignServerRelationId => OptionContext::Server,
        pg_sys::UserMappingRelationId => OptionContext::UserMapping,
        pg_sys::ForeignTableRelationId => OptionContext::Table,
        pg_sys::AttributeRelationId => OptionContext::Column,
        _ => OptionContext::Wrapper,
    }
}

/// Options that name files the backend reads with the server's OS
/// privileges: like postgres_fdw's sslcert/sslkey, superuser only.
const SUPERUSER_OPTIONS: &[&str] = &["ssl_key", "ssl_cert", "ssl_ca"];

/// # Safety
/// `options` is the text[] datum PostgreSQL passes to a validator.
pub unsafe fn validate(options: pg_sys::Datum, catalog: pg_sys::Oid) {
    let ctx = context_of(catalog);
    let list = pg_sys::untransformRelOptions(options);
    refuse_non_utf8(list);
    let pairs = deflist_to_pairs(list);
    if let Err(e) = options::validate(ctx, &pairs) {
        option_error(&e);
    }
    if ctx == OptionContext::Table && !crate::pgver::SOFT_INPUT_ERRORS {
        refuse_invalid_values_null(&pairs);
    }
    if ctx == OptionContext::Server && pairs.iter().any(|(n, _)| n == "password") {
        // pg_foreign_server.srvoptions is readable by every role, unlike
        // pg_user_mapping's umoptions.
        warning_with_hint(
            PgSqlErrorCode::ERRCODE_WARNING,
            "the password of a foreign server is visible to every role in pg_foreign_server".into(),
            "Set \"password\" (and \"username\") in a user mapping instead: CREATE USER MAPPING FOR ... SERVER ... OPTIONS (username '...', password '...').".into(),
        );
    }
    if ctx == OptionContext::UserMapping && !pg_sys::superuser() {
        // As postgres_fdw: only a superuser may let a non-superuser act
        // without a password of their own.
        // (options::validate above has refused a value that is no boolean)
        if options::password_required(&pairs) == Ok(false) {
            raise_with(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                "password_required=false is superuser-only".into(),
                None,
                Some("User mappings with the password_required option set to false may only be created or modified by the superuser.".into()),
            );
        }
    }
    if ctx == OptionContext::Server && !pg_sys::superuser() {
        if let Some((name, _)) = pairs
            .iter()
            .find(|(n, _)| SUPERUSER_OPTIONS.contains(&n.as_str()))
        {
            raise_with(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("only superuser can set option \"{name}\""),
                Some("The ssl_* options name files the database server reads.".into()),
                None,
            );
        }
    }
}

/// `invalid_values 'null'` reads a value that does not convert as NULL by
/// asking the type's input function for a soft error, which PostgreSQL 15
/// lacks: refuse it at CREATE/ALTER FOREIGN TABLE rather than fail every
/// query (or read values that fail as errors after all).
fn refuse_invalid_values_null(pairs: &[(String, String)]) {
    let null =
        options::parse_table(pairs).is_ok_and(|t| t.invalid_values == options::InvalidValues::Null);
    if null {
        raise_with(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "option \"invalid_values\" 'null' requires PostgreSQL 16 or later".into(),
            Some("It reads a value that does not convert as NULL through the soft input errors of PostgreSQL 16 (InputFunctionCallSafe); this server is PostgreSQL 15.".into()),
            Some("Use invalid_values 'error' (the default), or declare the value column as text or bytea and convert it in the query.".into()),
        );
    }
}

/// In a SQL_ASCII database an option value may hold any bytes, but options
/// are read as UTF-8 text: a value that is not UTF-8 would silently change
/// (to U+FFFD) and select other keys than it says.  Refuse it.
///
/// # Safety
/// `list` is a List of DefElem (the validator's options).
unsafe fn refuse_non_utf8(list: *mut pg_sys::List) {
    if crate::encoding::db_encoding() != pg_sys::pg_enc::PG_SQL_ASCII {
        return;
    }
    let bad: Vec<String> = pgrx::PgList::<pg_sys::DefElem>::from_pg(list)
        .iter_ptr()
        .filter(|&def| {
            // SAFETY: defGetString returns the option's NUL-terminated value.
            let value = std::ffi::CStr::from_ptr(pg_sys::defGetString(def)).to_bytes();
            std::str::from_utf8(value).is_err()
        })
        .map(|def| {
            std::ffi::CStr::from_ptr((*def).defname)
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    if let Some(first) = bad.first() {
        raise_with(
            PgSqlErrorCode::ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE,
            format!("invalid value for option \"{first}\": not valid UTF-8"),
            Some(format!(
                "etcd_fdw reads option values as UTF-8 text; in this SQL_ASCII database the value of {} holds other bytes.",
                bad.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ")
            )),
            Some("Give the key bytes as UTF-8, or reach other keys through a bytea key column and WHERE conditions.".into()),
        );
    }
}

/// Check a foreign table after CREATE/ALTER FOREIGN TABLE: when it belongs
/// to etcd_fdw, its columns must map to etcd data and `rowid_column` must
/// name the key column.
pub fn check_table_ddl(relid: pg_sys::Oid) {
    // SAFETY: catalog lookups on a relation the DDL command just touched.
    unsafe {
        if pg_sys::get_rel_relkind(relid) as u8 != pg_sys::RELKIND_FOREIGN_TABLE {
            return;
        }
        let server = pg_sys::GetForeignServer(pg_sys::GetForeignServerIdByRelId(relid));
        let fdw = pg_sys::GetForeignDataWrapper((*server).fdwid);
        if (*fdw).fdwhandler == pg_sys::InvalidOid {
            return;
        }
        let handler = std::ffi::CStr::from_ptr(pg_sys::get_func_name((*fdw).fdwhandler));
        if handler.to_bytes() != b"etcd_fdw_handler" {
            return;
        }
    }
    // Raises the error if anything is wrong (never from the cache: the
    // definition just changed).
    super::plan::read_table_info(relid);
}
