//! etcd's change feed as SQL: `etcd_watch()` (text) and `etcd_watch_bytea()`.
//!
//! Both are value-per-call set-returning functions (pgrx's
//! `TableIterator`): the first call checks the caller's permission with a
//! count-only range read of the watched range, then creates the watch; each
//! call returns one event, pulling the next message of the watch stream only
//! when the previous one's events are used up (inside
//! `runtime::block_on`, so query cancel and statement_timeout stop the wait
//! at once).  The iterator lives in the SRF's multi-call memory context
//! between calls; when the function ends early (a LIMIT, an error) PostgreSQL
//! deletes that context and the watch stream is dropped with it, which
//! cancels the watch on etcd.
//!
//! A watch that loses its connection is re-created from the first revision
//! it has not received, on a fresh connection (another member first), for up
//! to `request_timeout`; after that it raises 08006 naming the server and
//! the revision to resume from.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use etcd_fdw_core::client::{Backoff, EtcdError, MAX_RESPONSE_BYTES};
use etcd_fdw_core::etcd_client::{GetOptions, WatchOptions, WatchStream, Watcher};
use etcd_fdw_core::watch::{
    self as core_watch, CancelKind, CatchUp, Position, Received, WatchEvent, CATCH_UP_GRACE,
};
use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};

use super::{ServerName, TextDatum, Utf8Text};
use crate::catalog::ServerInfo;
use crate::columns::{self, display_key, Field};
use crate::connection;
use crate::encoding;
use crate::error::{etcd_error, raise_with};
use crate::runtime::{block_on, block_on_uncancellable};

type TextRow = (
    name!(revision, i64),
    name!(event, &'static str),
    name!(key, TextDatum),
    name!(value, Option<TextDatum>),
    name!(prev_value, Option<TextDatum>),
    name!(create_revision, Option<i64>),
    name!(mod_revision, i64),
    name!(version, Option<i64>),
    name!(lease, Option<i64>),
);

type ByteaRow = (
    name!(revision, i64),
    name!(event, &'static str),
    name!(key, Vec<u8>),
    name!(value, Option<Vec<u8>>),
    name!(prev_value, Option<Vec<u8>>),
    name!(create_revision, Option<i64>),
    name!(mod_revision, i64),
    name!(version, Option<i64>),
    name!(lease, Option<i64>),
);

/// The changes to keys starting with `prefix` (`''`: every key), one row
/// per event, from `start_revision` (0: changes after the call started;
/// earlier revisions are replayed from etcd's history) until `max_events`
/// rows or `timeout_ms` without a new event.  Keys and values must be
/// UTF-8 (22021 otherwise; see `etcd_watch_bytea`).
// pgrx needs the row type spelled out here (no alias).
#[allow(clippy::type_complexity)]
#[pg_extern(strict, volatile, parallel_unsafe)]
fn etcd_watch(
    server: ServerName,
    prefix: Utf8Text,
    start_revision: default!(i64, 0),
    max_events: default!(i32, 1000),
    timeout_ms: default!(i32, 10000),
) -> TableIterator<
    'static,
    (
        name!(revision, i64),
        name!(event, &'static str),
        name!(key, TextDatum),
        name!(value, Option<TextDatum>),
        name!(prev_value, Option<TextDatum>),
        name!(create_revision, Option<i64>),
        name!(mod_revision, i64),
        name!(version, Option<i64>),
        name!(lease, Option<i64>),
    ),
> {
    let feed = Feed::start(&server, prefix.0, start_revision, max_events, timeout_ms);
    TableIterator::new(feed.map(|ev| text_row(&ev)))
}

/// `etcd_watch` with keys and values as bytea (any bytes).
#[allow(clippy::type_complexity)]
#[pg_extern(strict, volatile, parallel_unsafe)]
fn etcd_watch_bytea(
    server: ServerName,
    prefix: Utf8Text,
    start_revision: default!(i64, 0),
    max_events: default!(i32, 1000),
    timeout_ms: default!(i32, 10000),
) -> TableIterator<
    'static,
    (
        name!(revision, i64),
        name!(event, &'static str),
        name!(key, Vec<u8>),
        name!(value, Option<Vec<u8>>),
        name!(prev_value, Option<Vec<u8>>),
        name!(create_revision, Option<i64>),
        name!(mod_revision, i64),
        name!(version, Option<i64>),
        name!(lease, Option<i64>),
    ),
> {
    let feed = Feed::start(&server, prefix.0, start_revision, max_events, timeout_ms);
    TableIterator::new(feed.map(bytea_row))
}

fn text_row(ev: &WatchEvent) -> TextRow {
    let text = |bytes: &[u8], what: &str| server_text(bytes, what, &ev.key);
    (
        ev.revision,
        ev.kind.as_str(),
        text(&ev.key, "key"),
        ev.value.as_deref().map(|v| text(v, "value")),
        ev.prev_value.as_deref().map(|v| text(v, "prev_value")),
        ev.create_revision,
        ev.mod_revision,
        ev.version,
        ev.lease,
    )
}

fn bytea_row(ev: WatchEvent) -> ByteaRow {
    (
        ev.revision,
        ev.kind.as_str(),
        ev.key,
        ev.value,
        ev.prev_value,
        ev.create_revision,
        ev.mod_revision,
        ev.version,
        ev.lease,
    )
}

/// `bytes` from etcd (UTF-8) as text in the database encoding: 22021 when
/// they are not UTF-8 or hold a zero byte, naming the key (checked here
/// first for a hint that fits a function rather than a column).
fn server_text(bytes: &[u8], what: &str, key: &[u8]) -> TextDatum {
    let why = if bytes.contains(&0) {
        Some("contains a zero byte, which text cannot hold")
    } else if encoding::db_encoding() != pg_sys::pg_enc::PG_SQL_ASCII
        && std::str::from_utf8(bytes).is_err()
    {
        // No validation in a SQL_ASCII database, as PostgreSQL does.
        Some("is not valid UTF-8")
    } else {
        None
    };
    if let Some(why) = why {
        let subject = if what == "key" {
            format!("etcd key \"{}\"", display_key(key))
        } else {
            format!("the {what} of etcd key \"{}\"", display_key(key))
        };
        raise_with(
            PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
            format!("{subject} {why}"),
            None,
            Some("Use etcd_watch_bytea() to read keys and values as bytes.".into()),
        );
    }
    let field = if what == "key" {
        Field::Key
    } else {
        Field::Value
    };
    // SAFETY: palloc'd in the current memory context (the function
    // call's), where pgrx builds the row; converted as scans do
    // (untranslatable characters raise 22P05).
    TextDatum(unsafe { columns::text_datum(bytes, field, key) })
}

/// A running watch: the rows of one `etcd_watch` call.
struct Feed {
    info: ServerInfo,
    /// The prefix, for messages.
    prefix: String,
    key: Vec<u8>,
    range_end: Vec<u8>,
    max_events: u64,
    idle_timeout: Duration,
    position: Position,
    /// A replay's catch-up to the revision current when the call began
    /// (`None`: a watch from now on).
    catch_up: Option<CatchUp>,
    /// When etcd last sent a message (or the watch was created).
    last_message: Instant,
    stream: Option<(Watcher, WatchStream)>,
    /// Received events not returned yet (one watch message's worth).
    pending: VecDeque<WatchEvent>,
    returned: u64,
    done: bool,
}

impl Feed {
    /// Check the arguments and the caller's access, then create the watch.
    fn start(
        server: &ServerName,
        prefix: Vec<u8>,
        start_revision: i64,
        max_events: i32,
        timeout_ms: i32,
    ) -> Feed {
        let args =
            core_watch::check_args(start_revision, max_events, timeout_ms).unwrap_or_else(|e| {
                raise_with(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    e.to_string(),
                    None,
                    Some(e.hint().into()),
                )
            });
        let info = server.resolve();
        let (key, range_end) = core_watch::watch_range(&prefix);
        let prefix = display_key(&prefix);
        // etcd checks a watch's permission as it does a read of its range,
        // but reports a refused watch only in the message the client
        // library consumes: read the range first (count only), which also
        // fixes the revision a watch "from now on" starts after.
        let current_revision = connection::with_client_retry(
            &info,
            &|| {
                format!(
                    "watching prefix \"{prefix}\" of server \"{}\"",
                    info.server_name
                )
            },
            |mut client| {
                let (key, range_end) = (key.clone(), range_end.clone());
                async move {
                    let resp = client
                        .get(
                            key,
                            Some(
                                GetOptions::new()
                                    .with_range(range_end)
                                    .with_count_only()
                                    .with_limit(1),
                            ),
                        )
                        .await
                        .map_err(EtcdError::from)?;
                    Ok(resp.header().map_or(0, |h| h.revision()))
                }
            },
        );
        // A replay catches up to the current revision before the idle
        // timeout applies; how it knows it has depends on the server's
        // version (core::watch::CatchUp).
        let catch_up = (args.start_revision > 0 && args.start_revision <= current_revision)
            .then(|| {
                let version = connection::try_with_retry_client(&info, |mut client| async move {
                    let resp = client.status().await.map_err(EtcdError::from)?;
                    Ok(resp.version().to_string())
                })
                .unwrap_or_default();
                CatchUp::new(
                    args.start_revision,
                    current_revision,
                    core_watch::progress_waits_for_sync(&version),
                )
            })
            .flatten();
        let mut feed = Feed {
            position: Position::new(args.start_revision, current_revision),
            catch_up,
            last_message: Instant::now(),
            info,
            prefix,
            key,
            range_end,
            max_events: args.max_events,
            idle_timeout: args.idle_timeout,
            stream: None,
            pending: VecDeque::new(),
            returned: 0,
            done: false,
        };
        feed.connect(None);
        feed
    }

    fn context(&self) -> String {
        format!(
            "watching prefix \"{}\" of server \"{}\" from revision {}",
            self.prefix,
            self.info.server_name,
            self.position.next_revision()
        )
    }

    /// Create the watch from the first revision not received yet, on the
    /// cached connection (or a new one), waiting at most `timeout` for
    /// etcd's answer.
    fn open(&mut self, timeout: Duration) -> Result<(), EtcdError> {
        let client = connection::try_client(&self.info)?;
        let mut watch = client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let options = WatchOptions::new()
            .with_range(self.range_end.clone())
            .with_start_revision(self.position.next_revision())
            .with_prev_key();
        let key = self.key.clone();
        let progress = self.catching_up_by_progress();
        let stream = block_on(async move {
            match tokio::time::timeout(timeout, async {
                let (mut watcher, stream) = watch.watch(key, Some(options)).await?;
                if progress {
                    watcher.request_progress().await?;
                }
                Ok::<_, etcd_fdw_core::etcd_client::Error>((watcher, stream))
            })
            .await
            {
                Ok(r) => r.map_err(EtcdError::from),
                Err(_) => Err(EtcdError::Timeout(timeout)),
            }
        })?;
        // etcd has created the watch (its "created" answer came): the
        // idle timeout counts from now, not from before connecting.
        self.last_message = Instant::now();
        self.stream = Some(stream);
        Ok(())
    }

    /// Whether the watch is still catching up and progress answers can
    /// say when it has.
    fn catching_up_by_progress(&self) -> bool {
        self.catch_up
            .is_some_and(|c| !c.done() && c.progress_proves())
    }

    fn catching_up(&self) -> bool {
        self.catch_up.is_some_and(|c| !c.done())
    }

    /// Whether a failure of the watch (or of creating it) is a lost
    /// connection worth another attempt: re-creating a watch from the
    /// first revision not received is idempotent, so any sign of a broken
    /// connection (a stream cut with "h2 protocol error" is `Unknown`) or
    /// of an unavailable member counts.
    fn resumable(&self, e: &EtcdError) -> bool {
        e.retryable(self.info.options.endpoints.len(), true) || e.breaks_connection()
    }

    /// (Re)create the watch, retrying lost connections with backoff for up
    /// to `request_timeout` from now.  `broken`: why the previous stream
    /// ended (none for the first watch).
    fn connect(&mut self, broken: Option<EtcdError>) {
        self.stream = None;
        let start = Instant::now();
        let budget = self.info.options.request_timeout;
        let mut backoff = Backoff::default();
        let mut failure = broken;
        loop {
            if let Some(e) = failure.take() {
                connection::note_error(&self.info, &e);
                match backoff.next_delay_within(start, budget) {
                    Some(delay) => block_on(async move { tokio::time::sleep(delay).await }),
                    None => self.lost(&e, budget),
                }
            }
            let left = budget
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(100));
            match self.open(left) {
                Ok(()) => return,
                Err(e) if self.resumable(&e) => failure = Some(e),
                Err(e) => {
                    connection::note_error(&self.info, &e);
                    etcd_error(&connection::identify(&self.info, e), &self.context())
                }
            }
        }
    }

    /// The connection is gone for good: 08006, saying where to resume.
    fn lost(&self, e: &EtcdError, budget: Duration) -> ! {
        let next = self.position.next_revision();
        raise_with(
            PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
            format!(
                "the watch on etcd server \"{}\" lost its connection: {e}",
                self.info.server_name
            ),
            Some(format!(
                "Could not resume watching prefix \"{}\" from revision {next} within request_timeout ({budget:?}).",
                self.prefix
            )),
            Some(format!(
                "Call etcd_watch() again with start_revision {next} to continue where it stopped."
            )),
        )
    }

    /// Wait for the next events, for at most the idle timeout (after a
    /// replay has caught up): `None` when it passed without one.  Resumes a
    /// broken watch.
    fn wait(&mut self) -> Option<Vec<WatchEvent>> {
        let mut deadline = Instant::now() + self.idle_timeout;
        loop {
            let catching_up = self.catching_up();
            let by_progress = self.catching_up_by_progress();
            let left = if by_progress {
                // etcd 3.5 ignores a progress request while one is
                // deferred; ask again now and then.
                PROGRESS_REQUEST_INTERVAL
            } else if catching_up {
                (self.last_message + CATCH_UP_GRACE).saturating_duration_since(Instant::now())
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            let Some((watcher, stream)) = self.stream.as_mut() else {
                unreachable!("the watch is connected")
            };
            let got = block_on(async { tokio::time::timeout(left, stream.message()).await });
            let broken = match got {
                Err(_) if by_progress => {
                    if self.last_message.elapsed() >= self.info.options.request_timeout {
                        // A safety net: etcd neither sent an event nor
                        // answered a progress request for request_timeout;
                        // the idle timeout decides from now on.
                        if let Some(c) = self.catch_up.as_mut() {
                            c.abandon();
                        }
                        deadline = deadline.max(Instant::now() + self.idle_timeout);
                        continue;
                    }
                    if let Err(e) = block_on(watcher.request_progress()) {
                        EtcdError::from(e)
                    } else {
                        continue;
                    }
                }
                Err(_) if catching_up => {
                    if let Some(c) = self.catch_up.as_mut() {
                        c.grace_passed();
                    }
                    deadline = deadline.max(Instant::now() + self.idle_timeout);
                    continue;
                }
                Err(_) => return None,
                Ok(Ok(Some(resp))) => {
                    self.last_message = Instant::now();
                    let header_revision = resp.header().map_or(0, |h| h.revision());
                    match core_watch::classify(&resp) {
                        Received::Events(evs) => {
                            self.position.advance(&evs);
                            if let Some(c) = self.catch_up.as_mut() {
                                c.events(&evs, header_revision);
                            }
                            return Some(evs);
                        }
                        Received::Progress { revision } => {
                            if let Some(c) = self.catch_up.as_mut() {
                                c.progress(revision);
                            }
                            if catching_up && !self.catching_up() {
                                // Caught up: idle from now on.
                                deadline = deadline.max(Instant::now() + self.idle_timeout);
                            }
                            continue;
                        }
                        Received::Compacted { compact_revision } => {
                            self.compacted(compact_revision)
                        }
                        Received::Canceled { reason } => self.canceled(&reason),
                    }
                }
                // The member ended the stream (shutting down).
                Ok(Ok(None)) => EtcdError::Other("the watch stream ended".into()),
                Ok(Err(e)) => EtcdError::from(e),
            };
            if !self.resumable(&broken) {
                connection::note_error(&self.info, &broken);
                etcd_error(&connection::identify(&self.info, broken), &self.context());
            }
            self.connect(Some(broken));
            // Reconnecting is not idleness: the events since the last one
            // received are replayed now.
            deadline = deadline.max(Instant::now() + self.idle_timeout.min(RESUME_GRACE));
        }
    }

    fn compacted(&self, compact_revision: i64) -> ! {
        let next = self.position.next_revision();
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "revision {next} of etcd server \"{}\" has been compacted: etcd keeps history from revision {compact_revision} on",
                self.info.server_name
            ),
            Some(self.context()),
            Some(format!(
                "Watch from revision {compact_revision} or later, or from 0 for changes from now on."
            )),
        )
    }

    fn canceled(&self, reason: &str) -> ! {
        let (code, hint) = match core_watch::cancel_kind(reason) {
            CancelKind::PermissionDenied => (
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                Some(
                    "The etcd user of the user mapping needs read permission on the watched keys."
                        .to_string(),
                ),
            ),
            CancelKind::Other => (PgSqlErrorCode::ERRCODE_FDW_ERROR, None),
        };
        let reason = if reason.is_empty() {
            "no reason given"
        } else {
            reason
        };
        raise_with(
            code,
            format!(
                "etcd server \"{}\" canceled the watch: {reason}",
                self.info.server_name
            ),
            Some(self.context()),
            hint,
        )
    }

    /// End the watch: cancel it on etcd and let the connection send that.
    fn finish(&mut self) {
        self.done = true;
        self.pending.clear();
        if let Some((mut watcher, stream)) = self.stream.take() {
            block_on_uncancellable(async move {
                // Best effort: the stream reset below cancels it anyway.
                let _ = watcher.cancel().await;
                drop(stream);
                drop(watcher);
                flush().await;
            });
        }
    }
}

/// How long a resumed watch waits for the events it missed, at least
/// (within the idle timeout).
const RESUME_GRACE: Duration = Duration::from_secs(1);

/// While a replay catches up on a server whose progress answers say so:
/// how often it asks again.
const PROGRESS_REQUEST_INTERVAL: Duration = Duration::from_millis(100);

/// Let the connection's tasks run a little, so that a dropped stream's
/// reset reaches etcd now rather than with the session's next request.
async fn flush() {
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

impl Iterator for Feed {
    type Item = WatchEvent;

    fn next(&mut self) -> Option<WatchEvent> {
        if self.done {
            return None;
        }
        if self.returned >= self.max_events {
            self.finish();
            return None;
        }
        loop {
            if let Some(ev) = self.pending.pop_front() {
                self.returned += 1;
                return Some(ev);
            }
            match self.wait() {
                Some(evs) => self.pending.extend(evs),
                None => {
                    self.finish();
                    return None;
                }
            }
        }
    }
}

impl Drop for Feed {
    /// Ended early (a LIMIT, an error): PostgreSQL deletes the SRF's memory
    /// context, and with it this watch.  Dropping the stream resets it,
    /// which cancels the watch on etcd.
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            drop(stream);
            // Not while unwinding (a Rust panic in flight), where the
            // runtime may be the one unwinding.
            if !std::thread::panicking() {
                block_on_uncancellable(flush());
            }
        }
    }
}
