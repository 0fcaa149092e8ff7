//! CONTEXT lines for errors raised while converting between etcd's bytes
//! and column values, like postgres_fdw's conversion error callback: a
//! non-JSON value in a jsonb column or bad UTF-8 says which key, column
//! and foreign table it came from.  The error's own SQLSTATE, message,
//! detail and hint are untouched.
//!
//! pgrx (0.18) re-raises a PostgreSQL error caught in Rust without its
//! context and offers no `errcontext`, so this is a small shim over
//! PostgreSQL's own mechanism: when a conversion unwinds, a callback that
//! adds the line is pushed onto `error_context_stack`, and PostgreSQL calls
//! it when the error is finally raised at the callback boundary.  The
//! entry is never popped: error recovery resets the stack (PostgresMain,
//! PG_CATCH), and both the entry and its text live in `ErrorContext`,
//! which error recovery resets too.  Nothing is done, and nothing is
//! allocated, while a conversion succeeds.

use std::ffi::{c_char, c_int, c_void};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use pgrx::pg_sys;

unsafe extern "C-unwind" {
    // elog.h's errcontext() is a macro over this; pgrx binds neither.
    fn errcontext_msg(fmt: *const c_char, ...) -> c_int;
}

/// Adds the line `arg` points at to the error being raised.
unsafe extern "C-unwind" fn add_line(arg: *mut c_void) {
    // SAFETY: called by errfinish() while an error is being raised; `arg`
    // is the NUL-terminated string `push_line` copied into ErrorContext.
    unsafe {
        pg_sys::set_errcontext_domain(c"etcd_fdw".as_ptr());
        errcontext_msg(c"%s".as_ptr(), arg as *const c_char);
    }
}

/// Push a context line for the error that is unwinding now.
fn push_line(line: &str) {
    let line = crate::encoding::for_server(line);
    let bytes = line.as_bytes();
    // SAFETY: plain allocations in ErrorContext (it exists from backend
    // start and is reset only by error recovery, after the callback ran);
    // the node is fully initialised before it is linked in.
    unsafe {
        let text = pg_sys::MemoryContextAlloc(pg_sys::ErrorContext, bytes.len() + 1) as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), text, bytes.len());
        *text.add(bytes.len()) = 0;
        let node = pg_sys::MemoryContextAlloc(
            pg_sys::ErrorContext,
            std::mem::size_of::<pg_sys::ErrorContextCallback>(),
        ) as *mut pg_sys::ErrorContextCallback;
        node.write(pg_sys::ErrorContextCallback {
            previous: pg_sys::error_context_stack,
            callback: Some(add_line),
            arg: text as *mut c_void,
        });
        pg_sys::error_context_stack = node;
    }
}

/// Run `f`; an error raised inside it (PostgreSQL's or ours) gets the
/// CONTEXT line `line()` computes.
pub fn with_context<R>(f: impl FnOnce() -> R, line: impl FnOnce() -> String) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            push_line(&line());
            resume_unwind(payload)
        }
    }
}

/// The context of a conversion: `key "k", column "c" of foreign table "t"`
/// (without the key when it is the key itself that failed to convert
/// from a column).
pub fn conversion_line(key: Option<&[u8]>, column: &str, table: &str) -> String {
    match key {
        Some(k) => format!(
            "key \"{}\", column \"{column}\" of foreign table \"{table}\"",
            crate::columns::display_key(k)
        ),
        None => format!("column \"{column}\" of foreign table \"{table}\""),
    }
}
