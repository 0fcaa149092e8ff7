//! The database encoding, and the one way etcd_fdw converts text between
//! it and etcd's UTF-8: by length, never by reading up to a NUL byte.
//!
//! PostgreSQL's `pg_any_to_server`/`pg_server_to_any` return their input
//! pointer unchanged when nothing needs converting (always for an empty
//! string, which is then *not* NUL-terminated), and a palloc'd,
//! NUL-terminated copy otherwise.  [`convert`] handles both cases; every
//! datum, option value and catalog name goes through it.

use std::borrow::Cow;
use std::ffi::{c_char, CStr};

use pgrx::pg_sys;

/// The database's encoding, cached per backend.
pub fn db_encoding() -> u32 {
    thread_local! {
        // SAFETY: GetDatabaseEncoding reads a backend global.
        static ENC: u32 = unsafe { pg_sys::GetDatabaseEncoding() } as u32;
    }
    ENC.with(|e| *e)
}

/// Whether text in this database is stored as UTF-8 bytes (or unchecked
/// bytes), so that byte order on etcd equals byte order in PostgreSQL and
/// no conversion is needed.
pub fn db_text_is_utf8_bytes() -> bool {
    let e = db_encoding();
    e == pg_sys::pg_enc::PG_UTF8 || e == pg_sys::pg_enc::PG_SQL_ASCII
}

/// Which way [`convert`] goes.
#[derive(Clone, Copy)]
enum Direction {
    Utf8ToServer,
    ServerToUtf8,
}

/// Convert `bytes` between UTF-8 and the server encoding.  Borrowed when
/// nothing changed.  Untranslatable characters raise PostgreSQL's ERROR
/// (22P05), invalid input 22021.
///
/// # Safety
/// Calls into PostgreSQL; the result of a conversion is palloc'd in the
/// current memory context (copied out before returning).
unsafe fn convert(bytes: &[u8], dir: Direction) -> Cow<'_, [u8]> {
    if bytes.is_empty() || db_text_is_utf8_bytes() {
        return Cow::Borrowed(bytes);
    }
    let src = bytes.as_ptr() as *const c_char;
    let len = bytes.len() as i32;
    let utf8 = pg_sys::pg_enc::PG_UTF8 as i32;
    // SAFETY: both functions read exactly `len` bytes of `src`.
    let out = match dir {
        Direction::Utf8ToServer => pg_sys::pg_any_to_server(src, len, utf8),
        Direction::ServerToUtf8 => pg_sys::pg_server_to_any(src, len, utf8),
    };
    if std::ptr::eq(out, src) {
        return Cow::Borrowed(bytes);
    }
    // SAFETY: a converted result is a fresh palloc'd, NUL-terminated
    // string (conversions never produce NUL from input without one).
    let converted = CStr::from_ptr(out).to_bytes().to_vec();
    pg_sys::pfree(out as *mut _);
    Cow::Owned(converted)
}

/// UTF-8 bytes from etcd in the server encoding.
///
/// # Safety
/// As [`convert`].
pub unsafe fn utf8_to_server(bytes: &[u8]) -> Cow<'_, [u8]> {
    convert(bytes, Direction::Utf8ToServer)
}

/// Server-encoded bytes (a text datum's) as UTF-8 for etcd.
///
/// # Safety
/// As [`convert`].
pub unsafe fn server_to_utf8(bytes: &[u8]) -> Cow<'_, [u8]> {
    convert(bytes, Direction::ServerToUtf8)
}

/// A NUL-terminated string of the catalogs (an option value, an object
/// name), stored in the server encoding, as a Rust string.  Bytes that are
/// still not UTF-8 (a SQL_ASCII database holds anything) are replaced.
///
/// # Safety
/// `p` must be a valid NUL-terminated C string.
pub unsafe fn server_cstr(p: *const c_char) -> String {
    let bytes = CStr::from_ptr(p).to_bytes();
    match server_to_utf8(bytes) {
        Cow::Borrowed(b) => String::from_utf8_lossy(b).into_owned(),
        Cow::Owned(v) => {
            String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into())
        }
    }
}

/// A message or EXPLAIN text as the server expects it.  Rust strings are
/// UTF-8; in a database of another encoding, non-ASCII characters are
/// written as `\u{XXXX}` escapes so nothing is misread (or unconvertible).
pub fn for_server(s: &str) -> Cow<'_, str> {
    if db_text_is_utf8_bytes() || s.is_ascii() {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_ascii() {
                    c.to_string()
                } else {
                    format!("\\u{{{:04x}}}", c as u32)
                }
            })
            .collect(),
    )
}
