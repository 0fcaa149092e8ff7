//! PostgreSQL transactions over etcd.
//!
//! With `etcd_fdw.commit_mode = 'transaction'` (the default) writes are not
//! sent when a statement runs: they go into a [`PendingTxn`] per
//! connection (server, user) and are committed at `XACT_EVENT_PRE_COMMIT`
//! as ONE guarded etcd transaction per connection.  ROLLBACK, an error and
//! `ROLLBACK TO SAVEPOINT` discard them (sub-transaction callback).  Scans
//! merge them into what etcd returns (read your own writes).  REPEATABLE
//! READ and SERIALIZABLE transactions read every scan at the revision the
//! first one saw on that connection.
//!
//! The pending sets live in thread-local state of the backend, like
//! postgres_fdw's connection cache, and the callbacks sit beside it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Instant;

use etcd_fdw_core::client::{self, EtcdError};
use etcd_fdw_core::etcd_client::{TxnOpResponse, TxnResponse};
use etcd_fdw_core::options::{effective_commit_mode, CommitMode, CommitModeFrom, TableOptions};
use etcd_fdw_core::outcome::Undecided;
use etcd_fdw_core::pending::{CommitConflict, CommitTxn, PendingTxn};
use etcd_fdw_core::retry::{Retrier, Step};
use etcd_fdw_core::writes::TxnLimits;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::{pg_sys, PgSqlErrorCode};

use crate::catalog::ServerInfo;
use crate::columns::display_key;
use crate::connection;
use crate::error::raise_with;
use crate::resolve::{self, Resolved};
use crate::runtime;

/// When writes reach etcd: the values of the GUC (the server and table
/// options of the same name are parsed by the core crate).
#[derive(pgrx::PostgresGucEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GucCommitMode {
    /// At COMMIT, one etcd transaction per connection.
    #[name = c"transaction"]
    Transaction,
    /// When each statement runs (in etcd transactions of `batch_size`).
    #[name = c"statement"]
    Statement,
}

static COMMIT_MODE: GucSetting<GucCommitMode> =
    GucSetting::<GucCommitMode>::new(GucCommitMode::Transaction);

/// What kind of statement wrote a key that must not exist in etcd at
/// commit (a guarded create): it decides the HINT of a duplicate key found
/// at COMMIT, when the statement itself is long over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreatedBy {
    /// INSERT (it can skip existing keys with ON CONFLICT DO NOTHING).
    Insert,
    /// COPY FROM (it cannot; `insert_mode 'put'` overwrites instead).
    Copy,
    /// An UPDATE that renamed a key (or moved a row into a partition).
    Other,
}

/// A statement kind that created keys, and the foreign table it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Creator {
    pub by: CreatedBy,
    pub relid: pg_sys::Oid,
    /// The table sets `insert_mode` itself (a hint says SET, not ADD).
    pub table_sets_insert_mode: bool,
}

/// The writes and the snapshot of one connection in this transaction.
struct ConnTxn {
    server: ServerInfo,
    pending: PendingTxn,
    /// REPEATABLE READ / SERIALIZABLE: the revision every scan reads at.
    snapshot: Option<i64>,
    /// The kinds of statement that added guarded creates, with the foreign
    /// table each wrote (kept when a savepoint's writes are rolled back:
    /// then the hint may name more than needed, never less).
    created_by: Vec<Creator>,
}

thread_local! {
    /// Keyed like the connection cache: (server oid, user oid).
    static XACT: RefCell<BTreeMap<(u32, u32), ConnTxn>> = const { RefCell::new(BTreeMap::new()) };
}

fn conn_key(server: &ServerInfo) -> (u32, u32) {
    (u32::from(server.server_oid), u32::from(server.user_oid))
}

/// Define the GUC and register the transaction callbacks; from _PG_init.
pub fn register() {
    GucRegistry::define_enum_guc(
        c"etcd_fdw.commit_mode",
        c"When etcd_fdw sends writes to etcd.",
        c"'transaction': at COMMIT, as one etcd transaction per connection (ROLLBACK discards them); 'statement': when each statement runs.",
        &COMMIT_MODE,
        GucContext::Userset,
        GucFlags::default(),
    );
    // Every etcd_fdw.* name is ours: a placeholder set before the library
    // loaded with a name etcd_fdw does not define (a typo such as
    // etcd_fdw.comit_mode) is removed with a WARNING now, and SET of such a
    // name fails from now on, instead of silently doing nothing.
    // SAFETY: called from _PG_init with a static NUL-terminated name.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"etcd_fdw".as_ptr()) };
    // SAFETY: the callbacks are plain functions living as long as the
    // library; they only touch this module's thread-local state.
    unsafe {
        pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_callback), std::ptr::null_mut());
    }
}

/// The value of `etcd_fdw.commit_mode` when it was set (its source is not
/// the built-in default: SET, SET LOCAL, a function's SET clause, ALTER
/// ROLE/DATABASE ... SET, postgresql.conf, PGOPTIONS ...), with where it
/// was set; `None` while it has its default, so that the table's and the
/// server's `commit_mode` options decide.
fn setting() -> Option<(CommitMode, pg_sys::GucSource::Type)> {
    // SAFETY: reads this backend's GUC tables.
    let source = unsafe { crate::pgver::guc_source(c"etcd_fdw.commit_mode") }?;
    if source == pg_sys::GucSource::PGC_S_DEFAULT {
        return None;
    }
    let mode = match COMMIT_MODE.get() {
        GucCommitMode::Transaction => CommitMode::Transaction,
        GucCommitMode::Statement => CommitMode::Statement,
    };
    Some((mode, source))
}

/// The commit mode of a write to `table` (`None`: a function's write that
/// belongs to no table) on `server`, and where it came from:
/// `etcd_fdw.commit_mode` when set, then the table option, then the server
/// option, then `'transaction'`.  Decided when each statement starts.
pub fn commit_mode(
    server: &ServerInfo,
    table: Option<&TableOptions>,
) -> (CommitMode, CommitModeFrom) {
    effective_commit_mode(setting().map(|(m, _)| m), &server.options, table)
}

/// Whether writes to `table` (or the server's functions, without one) are
/// deferred to COMMIT.
pub fn deferring(server: &ServerInfo, table: Option<&TableOptions>) -> bool {
    commit_mode(server, table).0 == CommitMode::Transaction
}

/// EXPLAIN's "etcd Commit Mode" of a write to `table`: the mode and where
/// it came from, e.g. `statement (table option)`.
pub fn describe_commit_mode(server: &ServerInfo, table: Option<&TableOptions>) -> String {
    let (mode, from) = commit_mode(server, table);
    let from = match from {
        CommitModeFrom::Setting => {
            use pg_sys::GucSource as S;
            match setting().map_or(S::PGC_S_DEFAULT, |(_, s)| s) {
                S::PGC_S_FILE => "etcd_fdw.commit_mode in the configuration file",
                S::PGC_S_DATABASE | S::PGC_S_USER | S::PGC_S_DATABASE_USER | S::PGC_S_GLOBAL => {
                    "etcd_fdw.commit_mode of ALTER ROLE/DATABASE ... SET"
                }
                S::PGC_S_CLIENT => "etcd_fdw.commit_mode of the client's connection options",
                S::PGC_S_SESSION => "SET etcd_fdw.commit_mode",
                _ => "etcd_fdw.commit_mode",
            }
        }
        CommitModeFrom::Table => "table option",
        CommitModeFrom::Server => "server option",
        CommitModeFrom::Default => "default",
    };
    format!("{} ({from})", mode.name())
}

/// The current (sub)transaction nesting level, which tags pending writes.
pub fn nest_level() -> u32 {
    // SAFETY: reads the transaction state of this backend.
    unsafe { pg_sys::GetCurrentTransactionNestLevel() as u32 }
}

/// Run `f` on this transaction's state of `server`'s connection.
fn with_conn<R>(server: &ServerInfo, f: impl FnOnce(&mut ConnTxn) -> R) -> R {
    XACT.with(|x| {
        let mut x = x.borrow_mut();
        let entry = x.entry(conn_key(server)).or_insert_with(|| ConnTxn {
            server: server.clone(),
            pending: PendingTxn::new(),
            snapshot: None,
            created_by: Vec::new(),
        });
        f(entry)
    })
}

/// Run `f` on the pending writes of `server`'s connection.
pub fn with_pending<R>(server: &ServerInfo, f: impl FnOnce(&mut PendingTxn) -> R) -> R {
    with_conn(server, |c| f(&mut c.pending))
}

/// Note that a statement (`who`) added a guarded create (a key that must
/// be absent at commit) to `server`'s connection.
pub fn note_created_by(server: &ServerInfo, who: Creator) {
    with_conn(server, |c| {
        if !c.created_by.contains(&who) {
            c.created_by.push(who);
        }
    });
}

/// The HINT of a duplicate key found at COMMIT: the remedy of the kind of
/// statement that created keys (naming the table when COPY into one table
/// did), both remedies when INSERT and COPY did, none when only renames
/// did.
fn duplicate_hint_at_commit(who: &[Creator]) -> Option<String> {
    let insert = who.iter().any(|w| w.by == CreatedBy::Insert);
    let copies: Vec<&Creator> = who.iter().filter(|w| w.by == CreatedBy::Copy).collect();
    match (insert, copies.as_slice()) {
        (true, []) => Some(DUPLICATE_HINT_INSERT.into()),
        (false, [one]) => Some(duplicate_hint_copy(
            Some(&crate::catalog::qualified_name(one.relid)),
            one.table_sets_insert_mode,
        )),
        (false, [_, ..]) => Some(duplicate_hint_copy(None, false)),
        (false, []) => None,
        (true, [_, ..]) => Some(
            "To skip existing keys, use INSERT ... ON CONFLICT DO NOTHING; COPY cannot skip them, but with the foreign table option insert_mode 'put' INSERT and COPY overwrite them (ALTER FOREIGN TABLE ... OPTIONS (ADD insert_mode 'put'))."
                .into(),
        ),
    }
}

/// The HINT of a duplicate key an INSERT wrote.
pub const DUPLICATE_HINT_INSERT: &str =
    "Use INSERT ... ON CONFLICT DO NOTHING to skip existing keys.";

/// The HINT of a duplicate key a COPY wrote: COPY has no ON CONFLICT, the
/// table option `insert_mode 'put'` makes it overwrite existing keys.
/// `table`: the foreign table's name, quoted, when known; `has_option`:
/// the table sets `insert_mode` already (SET instead of ADD).
pub fn duplicate_hint_copy(table: Option<&str>, has_option: bool) -> String {
    format!(
        "COPY cannot skip existing keys; to overwrite them, set the foreign table option insert_mode 'put': ALTER FOREIGN TABLE {} OPTIONS ({} insert_mode 'put').",
        table.unwrap_or("..."),
        if has_option { "SET" } else { "ADD" }
    )
}

/// The transaction's pending writes on `server`'s connection as they are
/// now, for a scan to merge (`None` when there are none).  Taken when the
/// scan begins, so a statement does not see its own writes, also on
/// rescans (PostgreSQL's command-level visibility).
pub fn pending_snapshot(server: &ServerInfo) -> Option<PendingTxn> {
    XACT.with(|x| {
        let x = x.borrow();
        let c = x.get(&conn_key(server))?;
        (!c.pending.is_empty()).then(|| c.pending.clone())
    })
}

/// Whether scans read at one revision for the whole transaction.
fn snapshot_isolation() -> bool {
    // SAFETY: reads a backend global.
    unsafe { pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 }
}

/// The revision scans of `server` read at in this transaction (REPEATABLE
/// READ and SERIALIZABLE), once the first scan has pinned it.
pub fn snapshot_revision(server: &ServerInfo) -> Option<i64> {
    if !snapshot_isolation() {
        return None;
    }
    XACT.with(|x| x.borrow().get(&conn_key(server)).and_then(|c| c.snapshot))
}

/// Pin the revision the transaction's first scan of `server` read.
pub fn pin_snapshot(server: &ServerInfo, revision: i64) {
    if !snapshot_isolation() || revision <= 0 {
        return;
    }
    with_conn(server, |c| {
        c.snapshot.get_or_insert(revision);
    });
}

/// What the writes that overflowed the commit transaction belong to, for
/// the HINT of [`check_size`].
#[derive(Clone, Copy, Debug)]
pub enum Writer {
    /// A foreign table; `sets_commit_mode`: it has the option already.
    Table {
        relid: pg_sys::Oid,
        sets_commit_mode: bool,
    },
    /// A function writing through the server (no table).
    Server,
}

/// Refuse a statement whose writes would make the commit transaction
/// larger than etcd accepts; `key`: the row just added, which made it so.
pub fn check_size(server: &ServerInfo, max_ops: u32, key: Option<&[u8]>, writer: Writer) {
    let limits = TxnLimits::one_request(max_ops as usize);
    let Err(cost) = with_pending(server, |p| p.fits(&limits)) else {
        return;
    };
    let raise_limits = "raise etcd's --max-txn-ops and --max-request-bytes together with the option \"batch_size\"";
    let hint = if let Some((_, source)) = setting() {
        format!(
            "etcd_fdw.commit_mode is set to 'transaction'{}, which overrides the commit_mode options of tables and servers: SET etcd_fdw.commit_mode = 'statement' for bulk loads, or {raise_limits}.",
            if source == pg_sys::GucSource::PGC_S_SESSION { "" } else { " (not by SET in this session)" }
        )
    } else {
        match writer {
            Writer::Table { relid, sets_commit_mode } => format!(
                "To write this table as each statement runs (bulk loads), mark it: ALTER FOREIGN TABLE {} OPTIONS ({} commit_mode 'statement'); or {raise_limits}.",
                crate::catalog::qualified_name(relid),
                if sets_commit_mode { "SET" } else { "ADD" }
            ),
            Writer::Server => format!(
                "To write as each statement runs (bulk loads), SET etcd_fdw.commit_mode = 'statement', or set the server option: ALTER SERVER {} OPTIONS ({} commit_mode 'statement'); or {raise_limits}.",
                quote_ident(&server.server_name),
                if server.options.commit_mode.is_some() { "SET" } else { "ADD" }
            ),
        }
    };
    raise_with(
        PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        format!(
            "the transaction's writes to etcd server \"{}\" do not fit in one etcd transaction",
            server.server_name
        ),
        Some(format!(
            "{}They hold {} operations and about {} bytes; the limits are {} operations (option \"batch_size\") and {} bytes.",
            key.map_or(String::new(), |k| format!("Writing key \"{}\" made them exceed the limits. ", display_key(k))),
            cost.ops, cost.bytes, limits.max_ops, limits.max_bytes
        )),
        Some(hint),
    )
}

/// `name` quoted as SQL needs it in a command to run (PostgreSQL's
/// quote_identifier: keywords and anything but lower-case ASCII letters,
/// digits and underscores are quoted).
fn quote_ident(name: &str) -> String {
    let Ok(c) = std::ffi::CString::new(name) else {
        return format!("\"{}\"", name.replace('"', "\"\""));
    };
    // SAFETY: quote_identifier reads the NUL-terminated string and returns
    // it or a palloc'd quoted copy; both are valid until copied here.
    unsafe {
        std::ffi::CStr::from_ptr(pg_sys::quote_identifier(c.as_ptr()))
            .to_string_lossy()
            .into_owned()
    }
}

/// Relies on: PostgreSQL calling it on this backend's thread at each
/// transaction event; an ERROR is allowed only before the commit record
/// (PRE_COMMIT, PRE_PREPARE), which is the only place it raises.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn xact_callback(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent as E;
    match event {
        E::XACT_EVENT_PRE_COMMIT | E::XACT_EVENT_PARALLEL_PRE_COMMIT => commit_all(),
        E::XACT_EVENT_PRE_PREPARE => {
            let pending = XACT.with(|x| x.borrow().values().any(|c| !c.pending.is_empty()));
            if pending {
                raise_with(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    "cannot PREPARE a transaction that has written to etcd".into(),
                    Some("etcd has no two-phase commit; nothing was written.".into()),
                    None,
                );
            }
        }
        // Whatever happened, the transaction is over.
        E::XACT_EVENT_COMMIT
        | E::XACT_EVENT_PARALLEL_COMMIT
        | E::XACT_EVENT_ABORT
        | E::XACT_EVENT_PARALLEL_ABORT
        | E::XACT_EVENT_PREPARE => XACT.with(|x| x.borrow_mut().clear()),
        _ => {}
    }
}

/// Relies on: being called while the ending subtransaction is still the
/// current one, so the nesting level names the savepoint's writes; never
/// raises.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    _my_subid: pg_sys::SubTransactionId,
    _parent_subid: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::SubXactEvent as E;
    let level = nest_level();
    match event {
        E::SUBXACT_EVENT_COMMIT_SUB => XACT.with(|x| {
            for c in x.borrow_mut().values_mut() {
                c.pending.release(level);
            }
        }),
        E::SUBXACT_EVENT_ABORT_SUB => XACT.with(|x| {
            for c in x.borrow_mut().values_mut() {
                c.pending.rollback_to(level);
            }
        }),
        _ => {}
    }
}

/// Commit every connection's pending writes, in a fixed order.
fn commit_all() {
    let conns: Vec<(ServerInfo, CommitTxn, Vec<Creator>)> = XACT.with(|x| {
        x.borrow()
            .values()
            .filter_map(|c| {
                c.pending
                    .commit()
                    .map(|t| (c.server.clone(), t, c.created_by.clone()))
            })
            .collect()
    });
    let mut committed: Vec<String> = Vec::new();
    for (server, txn, created_by) in conns {
        if let Err(f) = commit_one(&server, &txn) {
            report_failure(&server, &f, &committed, &created_by);
        }
        committed.push(server.server_name.clone());
    }
}

/// How one connection's commit failed.
enum CommitFailure {
    /// A guard failed: nothing of this connection was written.
    Conflict(CommitConflict),
    /// etcd refused the transaction or could not be reached before it was
    /// sent: nothing was written.
    NotApplied(EtcdError),
    /// The answer was lost (`error`), and etcd's history shows another
    /// writer changed a guarded key first: nothing was written, and never
    /// will be.
    LostThenRefused {
        conflict: CommitConflict,
        error: Box<EtcdError>,
    },
    /// The transaction may or may not have been applied.
    Unknown {
        error: Box<EtcdError>,
        keys: Vec<Vec<u8>>,
        why: Undecided,
    },
}

fn commit_one(server: &ServerInfo, txn: &CommitTxn) -> Result<(), CommitFailure> {
    let timeout = server.options.request_timeout;
    let start = Instant::now();
    let mut retrier = Retrier::new(&server.options);
    // Sent again only while etcd certainly did not apply it (no member
    // could be reached, or it refused the request for want of a valid
    // token: see connection::run_once_with), by the rules of Retrier.
    let result =
        loop {
            let was_connected = connection::was_connected(server);
            let sent = connection::try_kv_client(server).and_then(|kv| {
                let request = txn.txn();
                // Not interruptible: a cancel now would leave the outcome
                // unknown; request_timeout bounds the wait.
                runtime::block_on_uncancellable(async move {
                    let mut kv = kv;
                    client::with_timeout(timeout, kv.txn(request)).await
                })
            });
            match sent {
                Err(e) if e.definitely_not_applied() => {
                    connection::note_error(server, &e);
                    match retrier.step(&e, start.elapsed(), was_connected) {
                        Step::Reauthenticate => connection::drop_connection(server),
                        Step::RetryAfter(delay) => runtime::block_on_uncancellable(async move {
                            tokio::time::sleep(delay).await
                        }),
                        Step::GiveUp => break Err(connection::identify(server, e)),
                    }
                }
                other => break other,
            }
        };
    match result {
        Ok(resp) if resp.succeeded() => Ok(()),
        Ok(_) => {
            // A guard failed: nothing was written.  Read the guarded keys
            // to say which one (a read error still reports a conflict).
            let reads = txn.failure_reads();
            let now = connection::try_with_retry(server, |mut kv| {
                let reads = reads.clone();
                async move { kv.txn(reads).await.map_err(EtcdError::from) }
            })
            .map(|r| failure_revisions(&r))
            .unwrap_or_default();
            Err(CommitFailure::Conflict(txn.diagnose(&now)))
        }
        Err(e) if e.definitely_not_applied() => {
            connection::note_error(server, &e);
            Err(CommitFailure::NotApplied(e))
        }
        Err(e) => {
            connection::note_error(server, &e);
            resolve_unknown(server, txn, e)
        }
    }
}

/// The mod_revision of each guarded key in a failed commit's reads.
fn failure_revisions(resp: &TxnResponse) -> Vec<Option<i64>> {
    resp.op_responses()
        .iter()
        .map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        })
        .collect()
}

/// The connection broke (or timed out) while the commit was in flight:
/// decide from etcd's state and history ([`resolve`]).
fn resolve_unknown(
    server: &ServerInfo,
    txn: &CommitTxn,
    error: EtcdError,
) -> Result<(), CommitFailure> {
    match resolve::resolve(server, txn) {
        Resolved::Applied { .. } => Ok(()),
        Resolved::NotApplied(conflict) => Err(CommitFailure::LostThenRefused {
            conflict,
            error: Box::new(error),
        }),
        Resolved::Undecided(why) => Err(CommitFailure::Unknown {
            error: Box::new(error),
            keys: txn.written_keys().into_iter().map(<[u8]>::to_vec).collect(),
            why,
        }),
    }
}

fn report_failure(
    server: &ServerInfo,
    f: &CommitFailure,
    committed: &[String],
    created_by: &[Creator],
) -> ! {
    let earlier = if committed.is_empty() {
        String::new()
    } else {
        format!(
            " The writes to etcd server(s) {} were committed before.",
            committed
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let name = &server.server_name;
    match f {
        CommitFailure::Conflict(CommitConflict::KeyExists(k)) => raise_with(
            PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
            format!(
                "duplicate key value: key \"{}\" already exists in etcd server \"{name}\"",
                display_key(k)
            ),
            Some(format!(
                "The key exists in etcd (it did when the row was inserted, or another client created it before the commit); nothing of the transaction was written to \"{name}\".{earlier}"
            )),
            duplicate_hint_at_commit(created_by),
        ),
        CommitFailure::Conflict(CommitConflict::Changed(k)) => raise_with(
            PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
            format!(
                "could not serialize access: key \"{}\" was changed in etcd server \"{name}\" after this transaction read it",
                display_key(k)
            ),
            Some(format!(
                "Nothing of the transaction was written to \"{name}\".{earlier}"
            )),
            Some("Retry the transaction.".into()),
        ),
        CommitFailure::LostThenRefused {
            conflict: CommitConflict::Changed(k) | CommitConflict::KeyExists(k),
            error,
        } => raise_with(
            PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
            format!(
                "could not serialize access: key \"{}\" was changed in etcd server \"{name}\" after this transaction read it",
                display_key(k)
            ),
            Some(format!(
                "The commit's answer was lost ({error}); etcd's history shows another client changed the key first, so the commit was not applied and never will be: nothing of the transaction was written to \"{name}\".{earlier}"
            )),
            Some("Retry the transaction.".into()),
        ),
        CommitFailure::NotApplied(e) => raise_with(
            if matches!(e.root(), EtcdError::Connect { .. }) {
                PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE
            } else {
                crate::error::etcd_sqlstate(e)
            },
            format!("could not commit to etcd server \"{name}\": {e}"),
            Some(format!(
                "The transaction's writes were not applied to \"{name}\".{earlier}"
            )),
            crate::error::etcd_hint(e),
        ),
        CommitFailure::Unknown { error, keys, why } => raise_with(
            PgSqlErrorCode::ERRCODE_TRANSACTION_RESOLUTION_UNKNOWN,
            format!(
                "the outcome of the commit to etcd server \"{name}\" is unknown: {error}"
            ),
            Some(format!(
                "The connection failed while etcd was committing; {}; check the keys {}.{earlier}",
                resolve::undecided_detail(why),
                keys.iter()
                    .take(10)
                    .map(|k| format!("\"{}\"", display_key(k)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            None,
        ),
    }
}
