//! etcd_fdw: a PostgreSQL foreign data wrapper for etcd v3.
//!
//! Module map (PostgreSQL-facing side; the pure logic lives in the
//! `etcd_fdw_core` crate under `core/`):
//!
//! * [`error`]: etcd and option errors -> `ereport(ERROR)` with SQLSTATEs;
//! * [`runtime`]: the per-backend tokio runtime and interruptible waits;
//! * [`connection`]: the per-backend connection cache;
//! * [`xact`]: transactions over etcd (pending writes, COMMIT, savepoints,
//!   snapshots);
//! * [`catalog`]: reading server, user mapping and table options;
//! * [`errcontext`]: CONTEXT lines naming the key, column and table of a
//!   conversion error;
//! * [`encoding`]: the database encoding and text conversions to/from UTF-8;
//! * [`columns`]: column mapping and etcd bytes <-> datums;
//! * [`fdw`]: the `FdwRoutine` callbacks (planning, scanning, modifying,
//!   EXPLAIN) and the validator;
//! * [`sqlfuncs`]: SQL-callable helper functions (handler, connections);
//! * [`api`]: etcd's API as SQL functions (leases, watch, cluster, get/put);
//! * [`pgver`]: the differences between PostgreSQL majors (15 to 18).

use pgrx::prelude::*;

pg_module_magic!(name, version);

#[allow(non_snake_case)]
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // pgrx's panic hook captures a std Backtrace for every error raised
    // through Rust, and PostgreSQL's errors re-raised by pgrx carry it in
    // their DETAIL when the server runs with RUST_BACKTRACE set.  Clients
    // never get Rust backtraces: RUST_LIB_BACKTRACE wins over
    // RUST_BACKTRACE for captured backtraces (not for panic messages).
    // Loading the library is single-threaded, so setting it is sound.
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    catalog::register_invalidation_callbacks();
    xact::register();
}

mod api;
mod catalog;
mod columns;
mod connection;
mod encoding;
mod errcontext;
mod error;
mod fdw;
mod pgver;
mod resolve;
mod runtime;
mod sqlfuncs;
mod xact;
