//! The backend's tokio runtime and waits on it that PostgreSQL can
//! interrupt.
//!
//! One current-thread runtime per backend process, created on first use.
//! Futures run on the backend's own thread inside `block_on`; the only
//! other threads tokio may start (its blocking pool, e.g. for DNS lookups)
//! block every signal, so PostgreSQL's signal handlers always run on the
//! main thread.  While waiting we poll PostgreSQL's interrupt flags every
//! few milliseconds: a query cancel, statement_timeout or termination
//! drops the pending etcd request and raises the usual ERROR.

use std::cell::OnceCell;
use std::future::Future;
use std::time::Duration;

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::error::raise;

thread_local! {
    static RUNTIME: OnceCell<tokio::runtime::Runtime> = const { OnceCell::new() };
}

/// How often a wait looks at PostgreSQL's interrupt flags.
const INTERRUPT_POLL: Duration = Duration::from_millis(10);

fn block_all_signals() {
    // SAFETY: plain libc calls on a fresh sigset owned by this frame.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn build_runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2)
        .on_thread_start(block_all_signals)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("etcd_fdw could not start its I/O runtime: {e}"),
        ),
    }
}

/// Whether PostgreSQL wants this query to stop (cancel, statement_timeout,
/// termination) and may act on it now.
fn cancel_requested() -> bool {
    // SAFETY: reading PostgreSQL's volatile interrupt globals, which are
    // only written by this thread's signal handlers.
    unsafe {
        pg_sys::InterruptPending != 0
            && (pg_sys::QueryCancelPending != 0 || pg_sys::ProcDiePending != 0)
            && pg_sys::InterruptHoldoffCount == 0
            && pg_sys::QueryCancelHoldoffCount == 0
            && pg_sys::CritSectionCount == 0
    }
}

/// Run `fut` to completion on the backend's runtime, ignoring query
/// cancel: for a commit, whose outcome a cancel would leave unknown.  The
/// future must bound its own wait (request_timeout).
pub fn block_on_uncancellable<F: Future>(fut: F) -> F::Output {
    RUNTIME.with(|cell| cell.get_or_init(build_runtime).block_on(fut))
}

/// Run `fut` to completion on the backend's runtime, abandoning it (and
/// raising PostgreSQL's cancel/timeout ERROR) if the query is interrupted.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    // A cancel that arrived between two waits is acted on before the next
    // request goes out: a loop of fast requests (a key list in batches, a
    // count over many pages) would otherwise finish each one inside the
    // first INTERRUPT_POLL and never see it.
    pgrx::check_for_interrupts!();
    let out = RUNTIME.with(|cell| {
        let rt = cell.get_or_init(build_runtime);
        rt.block_on(async {
            tokio::pin!(fut);
            // The first look after INTERRUPT_POLL: a tick at once would
            // only cost a wake-up (and an extra poll of `fut`).
            let start = tokio::time::Instant::now() + INTERRUPT_POLL;
            let mut tick = tokio::time::interval_at(start, INTERRUPT_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    out = &mut fut => return Some(out),
                    _ = tick.tick() => {
                        if cancel_requested() {
                            return None;
                        }
                    }
                }
            }
        })
    });
    match out {
        Some(v) => v,
        None => {
            // The etcd request was dropped; let PostgreSQL raise its own
            // error ("canceling statement due to statement timeout", ...).
            pgrx::check_for_interrupts!();
            raise(
                PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
                "canceling etcd request due to user request",
            )
        }
    }
}
