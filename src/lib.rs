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
//! * [`encoding`]: the database encoding and text conversions to/from UTF-8;
//! * [`columns`]: column mapping and etcd bytes <-> datums;
//! * [`fdw`]: the `FdwRoutine` callbacks (planning, scanning, modifying,
//!   EXPLAIN) and the validator;
//! * [`sqlfuncs`]: SQL-callable helper functions.

use pgrx::prelude::*;

pg_module_magic!(name, version);

#[allow(non_snake_case)]
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    catalog::register_invalidation_callbacks();
    xact::register();
}

mod catalog;
mod columns;
mod connection;
mod encoding;
mod error;
mod fdw;
mod runtime;
mod sqlfuncs;
mod xact;
