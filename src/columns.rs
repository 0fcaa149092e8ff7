//! How a foreign table's columns map onto an etcd key-value pair, and the
//! conversions between etcd's bytes and PostgreSQL datums.
//!
//! Columns are matched by name: `key`, `value`, `create_revision`,
//! `mod_revision`, `version`, `lease`.  `key` may be text, varchar or
//! bytea; `value` text, varchar, bytea or any type with a text input and
//! output function (json, jsonb, integers, ...); the metadata columns are
//! bigint.  Text columns hold etcd bytes converted from UTF-8 to the
//! database encoding; invalid bytes raise an ERROR naming the key.

use etcd_fdw_core::options::InvalidValues;
use etcd_fdw_core::text::{check_text, BadText};
use pgrx::pg_sys;
use pgrx::{PgLogLevel, PgSqlErrorCode};

use crate::encoding;
use crate::error::raise;

/// The part of an etcd key-value pair a column shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Key,
    Value,
    CreateRevision,
    ModRevision,
    Version,
    Lease,
}

impl Field {
    pub fn from_name(name: &str) -> Option<Field> {
        Some(match name {
            "key" => Field::Key,
            "value" => Field::Value,
            "create_revision" => Field::CreateRevision,
            "mod_revision" => Field::ModRevision,
            "version" => Field::Version,
            "lease" => Field::Lease,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Field::Key => "key",
            Field::Value => "value",
            Field::CreateRevision => "create_revision",
            Field::ModRevision => "mod_revision",
            Field::Version => "version",
            Field::Lease => "lease",
        }
    }
}

/// How a column's datums are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repr {
    Text,
    Bytea,
    Int8,
    /// Any other type, through its text input/output functions.
    Io,
}

#[derive(Clone, Copy, Debug)]
pub struct Column {
    /// 0-based attribute index.
    pub index: usize,
    pub field: Field,
    pub repr: Repr,
    pub typoid: pg_sys::Oid,
    pub typmod: i32,
}

/// Whether `typoid` is acceptable for `field`, and how it is represented.
pub fn repr_for(field: Field, typoid: pg_sys::Oid) -> Result<Repr, &'static str> {
    match field {
        Field::Key => match typoid {
            pg_sys::TEXTOID | pg_sys::VARCHAROID => Ok(Repr::Text),
            pg_sys::BYTEAOID => Ok(Repr::Bytea),
            _ => Err("text, varchar or bytea"),
        },
        Field::Value => match typoid {
            pg_sys::TEXTOID | pg_sys::VARCHAROID => Ok(Repr::Text),
            pg_sys::BYTEAOID => Ok(Repr::Bytea),
            _ => Ok(Repr::Io),
        },
        _ => match typoid {
            pg_sys::INT8OID => Ok(Repr::Int8),
            _ => Err("bigint"),
        },
    }
}

/// The column layout of a foreign table.
#[derive(Clone, Debug)]
pub struct TableColumns {
    pub columns: Vec<Column>,
}

impl TableColumns {
    pub fn find(&self, field: Field) -> Option<&Column> {
        self.columns.iter().find(|c| c.field == field)
    }

    pub fn by_index(&self, index: usize) -> Option<&Column> {
        self.columns.iter().find(|c| c.index == index)
    }

    pub fn by_name<'a>(&'a self, tupdesc: pg_sys::TupleDesc, name: &str) -> Option<&'a Column> {
        self.columns
            .iter()
            .find(|c| unsafe { attr_name(tupdesc, c.index) } == name)
    }
}

/// # Safety
/// `tupdesc` must be valid and `i < natts`.
pub unsafe fn attr(tupdesc: pg_sys::TupleDesc, i: usize) -> &'static pg_sys::FormData_pg_attribute {
    crate::pgver::tupdesc_attr(tupdesc, i)
}

/// # Safety
/// As [`attr`].
pub unsafe fn attr_name(tupdesc: pg_sys::TupleDesc, i: usize) -> String {
    encoding::server_cstr(attr(tupdesc, i).attname.data.as_ptr())
}

/// Map the columns of `tupdesc`.  Unknown column names and unsupported
/// types are refused with an ERROR naming the column.
///
/// # Safety
/// `tupdesc` must be a valid tuple descriptor.
pub unsafe fn map_columns(tupdesc: pg_sys::TupleDesc, table: &str) -> TableColumns {
    let natts = (*tupdesc).natts as usize;
    let mut columns = Vec::new();
    for i in 0..natts {
        let a = attr(tupdesc, i);
        if a.attisdropped {
            continue;
        }
        let name = attr_name(tupdesc, i);
        let Some(field) = Field::from_name(&name) else {
            crate::error::raise_with(
                PgSqlErrorCode::ERRCODE_FDW_INVALID_COLUMN_NAME,
                format!("column \"{name}\" of foreign table \"{table}\" does not map to etcd data"),
                None,
                Some("etcd_fdw columns are key, value, create_revision, mod_revision, version and lease.".into()),
            );
        };
        if columns.iter().any(|c: &Column| c.field == field) {
            raise(
                PgSqlErrorCode::ERRCODE_FDW_INVALID_COLUMN_NAME,
                format!(
                    "foreign table \"{table}\" maps etcd's {} twice",
                    field.name()
                ),
            );
        }
        let repr = repr_for(field, a.atttypid).unwrap_or_else(|expected| {
            raise(
                PgSqlErrorCode::ERRCODE_FDW_INVALID_DATA_TYPE,
                format!(
                    "column \"{name}\" of foreign table \"{table}\" must be of type {expected}"
                ),
            )
        });
        columns.push(Column {
            index: i,
            field,
            repr,
            typoid: a.atttypid,
            typmod: a.atttypmod,
        });
    }
    TableColumns { columns }
}

/// A key for messages: as text when printable UTF-8, else with `\xNN`
/// escapes for the offending bytes.
pub fn display_key(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            if ch.is_control() {
                out.push_str(&format!("\\x{:02x}", ch as u32));
            } else {
                out.push(ch);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cold]
fn bad_text(field: Field, key: &[u8], why: &str) -> ! {
    let what = match field {
        Field::Key => format!("etcd key \"{}\"", display_key(key)),
        _ => format!("the {} of etcd key \"{}\"", field.name(), display_key(key)),
    };
    crate::error::raise_with(
        PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
        format!("{what} {why}"),
        None,
        Some("Declare the column as bytea to read arbitrary bytes.".into()),
    )
}

/// Why `bytes` cannot be a text datum, if they cannot.
fn text_problem(bytes: &[u8]) -> Option<&'static str> {
    // One pass for both checks (see etcd_fdw_core::text); no UTF-8
    // validation in a SQL_ASCII database, as PostgreSQL does.
    let utf8 = encoding::db_encoding() != pg_sys::pg_enc::PG_SQL_ASCII;
    match check_text(bytes, utf8) {
        Ok(()) => None,
        Err(BadText::ZeroByte) => Some("contains a zero byte, which text cannot hold"),
        Err(BadText::InvalidUtf8) => Some("is not valid UTF-8"),
    }
}

/// A text datum of `bytes` (UTF-8 from etcd), in the server encoding.
///
/// # Safety
/// Must run in a memory context suitable for the datum's lifetime.
pub unsafe fn text_datum(bytes: &[u8], field: Field, key: &[u8]) -> pg_sys::Datum {
    if let Some(why) = text_problem(bytes) {
        bad_text(field, key, why);
    }
    let text = encoding::utf8_to_server(bytes);
    text_from_bytes(&text)
}

/// The input function of a column read through its type's text I/O.
pub struct IoInput {
    /// palloc'd in the context given to [`IoInput::new`], so a shared
    /// reference can call it (the function may cache in `fn_extra`).
    flinfo: *mut pg_sys::FmgrInfo,
    typioparam: pg_sys::Oid,
    typmod: i32,
}

impl IoInput {
    /// Look up `col`'s type input function, living in `cxt`.
    ///
    /// # Safety
    /// Catalog lookups; `cxt` outlives every use.
    pub unsafe fn new(col: &Column, cxt: pg_sys::MemoryContext) -> IoInput {
        let mut func = pg_sys::InvalidOid;
        let mut typioparam = pg_sys::InvalidOid;
        pg_sys::getTypeInputInfo(col.typoid, &mut func, &mut typioparam);
        let flinfo = pg_sys::MemoryContextAllocZero(cxt, std::mem::size_of::<pg_sys::FmgrInfo>())
            as *mut pg_sys::FmgrInfo;
        pg_sys::fmgr_info_cxt(func, flinfo, cxt);
        IoInput {
            flinfo,
            typioparam,
            typmod: col.typmod,
        }
    }
}

/// The one conversion of etcd's bytes into a key or value column's datum
/// (text, varchar, bytea, or any type through its input function).  An
/// error names the key, the column and the table (CONTEXT line).
///
/// With `invalid` = [`InvalidValues::Null`] (PostgreSQL 16 and later) a
/// value that does not convert -- not UTF-8, a zero byte in text, refused
/// by its type's input function as a soft error -- is `None` (NULL)
/// after a WARNING naming key, column and table.  Keys always raise (a
/// row has no NULL key), and so do errors that are not soft: a character
/// the database encoding cannot hold, a type whose input function raises.
///
/// `io` is the column's input function when its repr is [`Repr::Io`];
/// `table` names the foreign table for messages (computed on failure only).
///
/// # Safety
/// The datum is allocated in the current memory context.
pub unsafe fn field_datum(
    col: &Column,
    io: Option<&IoInput>,
    bytes: &[u8],
    key: &[u8],
    invalid: InvalidValues,
    table: &dyn Fn() -> String,
) -> Option<pg_sys::Datum> {
    if col.repr == Repr::Bytea {
        return Some(bytea_datum(bytes));
    }
    let soft = invalid == InvalidValues::Null
        && col.field == Field::Value
        && crate::pgver::SOFT_INPUT_ERRORS;
    crate::errcontext::with_context(
        || {
            if soft {
                if let Some(why) = text_problem(bytes) {
                    let sqlstate = PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE as i32;
                    read_as_null(col, key, &table(), sqlstate, &format!("the value {why}"));
                    return None;
                }
            }
            let text = text_datum(bytes, col.field, key);
            if col.repr != Repr::Io {
                return Some(text);
            }
            let Some(io) = io else {
                crate::error::raise(
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    "etcd_fdw: no input function for an I/O column",
                )
            };
            let cstr = pg_sys::text_to_cstring(text.cast_mut_ptr());
            if !soft {
                return Some(pg_sys::InputFunctionCall(
                    io.flinfo,
                    cstr,
                    io.typioparam,
                    io.typmod,
                ));
            }
            match crate::pgver::input_function_call_safe(io.flinfo, cstr, io.typioparam, io.typmod)
            {
                Ok(d) => Some(d),
                Err(e) => {
                    read_as_null(col, key, &table(), e.sqlstate, &e.message);
                    None
                }
            }
        },
        || crate::errcontext::conversion_line(Some(key), col.field.name(), &table()),
    )
}

/// The WARNING of a value read as NULL (`invalid_values 'null'`).
#[cold]
fn read_as_null(col: &Column, key: &[u8], table: &str, sqlstate: i32, why: &str) {
    let conv = |t: String| encoding::for_server(&t).into_owned();
    pgrx::pg_sys::panic::ErrorReport::new(
        PgSqlErrorCode::from(sqlstate),
        conv(format!(
            "invalid value of etcd key \"{}\" read as NULL: column \"{}\" of foreign table \"{table}\"",
            display_key(key),
            col.field.name()
        )),
        "etcd_fdw",
    )
    .set_detail(conv(why.to_string()))
    .set_hint("The foreign table's option invalid_values 'null' reads values that do not convert as NULL; 'error' (the default) raises the error.")
    .report(PgLogLevel::WARNING);
}

/// A text datum holding exactly `bytes` (already in the server encoding).
///
/// # Safety
/// As [`text_datum`].
pub(crate) unsafe fn text_from_bytes(bytes: &[u8]) -> pg_sys::Datum {
    let total = bytes.len() + pg_sys::VARHDRSZ;
    let p = pg_sys::palloc(total) as *mut pg_sys::varlena;
    pgrx::set_varsize_4b(p, total as i32);
    // SAFETY: p has room for the header plus bytes.len() bytes.
    std::ptr::copy_nonoverlapping(
        bytes.as_ptr(),
        (p as *mut u8).add(pg_sys::VARHDRSZ),
        bytes.len(),
    );
    pg_sys::Datum::from(p)
}

/// A bytea datum of `bytes`.
///
/// # Safety
/// As [`text_datum`].
pub unsafe fn bytea_datum(bytes: &[u8]) -> pg_sys::Datum {
    // text and bytea share the varlena layout.
    text_from_bytes(bytes)
}

/// The bytes of a text or bytea datum; text is converted to UTF-8.
///
/// # Safety
/// `d` must be a non-null datum of a varlena type.
pub unsafe fn varlena_bytes<'a>(d: pg_sys::Datum, repr: Repr) -> std::borrow::Cow<'a, [u8]> {
    let v = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
    let len = pgrx::varsize_any_exhdr(v);
    let data = std::slice::from_raw_parts(pgrx::vardata_any(v) as *const u8, len);
    if repr == Repr::Text {
        return encoding::server_to_utf8(data);
    }
    std::borrow::Cow::Borrowed(data)
}
