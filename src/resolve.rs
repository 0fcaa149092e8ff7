//! A commit whose answer was lost (the connection broke or the request
//! timed out while etcd had it), decided by asking etcd: the keys now, the
//! first change to each guarded key after its guard (a watch from the
//! guard's next revision), and the keys at the revision that change
//! happened.  The decisions are the core crate's ([`outcome`]); this
//! module only asks etcd, each request under `request_timeout`.

use etcd_fdw_core::client::{self, EtcdError};
use etcd_fdw_core::etcd_client::{GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse, WatchOptions};
use etcd_fdw_core::outcome::{self, FirstChange, KeyState, Outcome, Undecided};
use etcd_fdw_core::pending::{CommitConflict, CommitTxn};
use etcd_fdw_core::watch::{classify, Received};
use etcd_fdw_core::writes::{self, RowAfter, WriteBatch};

use crate::catalog::ServerInfo;
use crate::columns::display_key;
use crate::connection;
use crate::runtime;

/// The decision.
pub enum Resolved {
    /// Applied at this revision.
    Applied {
        revision: i64,
    },
    /// Certainly not applied, and it never will be.
    NotApplied(CommitConflict),
    Undecided(Undecided),
}

/// Decide `txn`'s outcome from etcd's state and history.
pub fn resolve(server: &ServerInfo, txn: &CommitTxn) -> Resolved {
    let keys: Vec<Vec<u8>> = txn.written_keys().into_iter().map(<[u8]>::to_vec).collect();
    let mut step = match read_keys(server, &keys, None) {
        Ok(now) => outcome::from_now(txn, &now),
        Err(e) => lost(&e),
    };
    loop {
        step = match step {
            Outcome::Applied { revision } => return Resolved::Applied { revision },
            Outcome::NotApplied(c) => return Resolved::NotApplied(c),
            Outcome::Undecided(why) => return Resolved::Undecided(why),
            Outcome::FirstChanges(watch) => match first_changes(server, &watch) {
                Ok(firsts) => outcome::from_first_changes(&firsts),
                Err(why) => Outcome::Undecided(why),
            },
            Outcome::StateAt(at) => match read_keys(server, &keys, Some(at)) {
                Ok(state) => outcome::from_state_at(txn, at, &state),
                Err(e) => lost(&e),
            },
        }
    }
}

/// A read that failed: the history is gone, or etcd could not be asked.
fn lost(e: &EtcdError) -> Outcome {
    Outcome::Undecided(if e.compacted() {
        Undecided::Compacted {
            compact_revision: None,
        }
    } else {
        Undecided::Unreachable(e.to_string())
    })
}

/// The keys now (`at` `None`, a linearizable read) or at revision `at`.
fn read_keys(
    server: &ServerInfo,
    keys: &[Vec<u8>],
    at: Option<i64>,
) -> Result<Vec<Option<KeyState>>, EtcdError> {
    let reads = keys.iter().map(|k| (k.clone(), at)).collect();
    Ok(get_each(server, reads)?
        .into_iter()
        .map(|kv| {
            kv.map(|kv| KeyState {
                value: kv.value().to_vec(),
                mod_revision: kv.mod_revision(),
                create_revision: kv.create_revision(),
            })
        })
        .collect())
}

/// Each key as it is (revision `None`) or was at a revision, in one
/// read-only transaction, retried like any read.
fn get_each(
    server: &ServerInfo,
    reads: Vec<(Vec<u8>, Option<i64>)>,
) -> Result<Vec<Option<KeyValue>>, EtcdError> {
    let txn = Txn::new().and_then(
        reads
            .into_iter()
            .map(|(k, at)| {
                let opts = GetOptions::new();
                TxnOp::get(k, Some(at.map_or(opts.clone(), |r| opts.with_revision(r))))
            })
            .collect::<Vec<_>>(),
    );
    let resp = connection::try_with_retry(server, |mut kv| {
        let txn = txn.clone();
        async move { kv.txn(txn).await.map_err(EtcdError::from) }
    })?;
    Ok(resp
        .op_responses()
        .iter()
        .map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        })
        .collect())
}

/// The first change of each key from its start revision on: one watch
/// stream, a watcher per key.  Every key listed has changed since (the
/// keys were read), so each watcher gets an event, unless the history was
/// compacted.  The whole exchange is bounded by `request_timeout`.
fn first_changes(
    server: &ServerInfo,
    watch: &[(Vec<u8>, i64)],
) -> Result<Vec<FirstChange>, Undecided> {
    if watch.is_empty() {
        return Ok(Vec::new());
    }
    let timeout = server.options.request_timeout;
    let unreachable = |e: EtcdError| Undecided::Unreachable(e.to_string());
    let client = connection::try_client(server).map_err(unreachable)?;
    let keys: Vec<Vec<u8>> = watch.iter().map(|(k, _)| k.clone()).collect();
    let watch = watch.to_vec();
    let exchange = async move {
        let mut wc = client.watch_client();
        let opts = |start: i64| WatchOptions::new().with_start_revision(start);
        let (first_key, first_start) = &watch[0];
        let (mut watcher, mut stream) = wc
            .watch(first_key.clone(), Some(opts(*first_start)))
            .await?;
        for (key, start) in &watch[1..] {
            watcher.watch(key.clone(), Some(opts(*start))).await?;
        }
        // Watch ids in the order the watchers were created (etcd answers
        // the creates of a stream in order).
        let mut ids: Vec<i64> = vec![watcher.watch_id()];
        let mut found: Vec<Option<i64>> = vec![None; watch.len()];
        let ended = |why: String| etcd_fdw_core::etcd_client::Error::WatchError(why);
        while found.iter().any(Option::is_none) {
            let Some(resp) = stream.message().await? else {
                return Err(ended("etcd ended the watch stream".into()));
            };
            if resp.created() && !ids.contains(&resp.watch_id()) {
                if resp.canceled() {
                    return Err(ended(format!(
                        "etcd refused a watch: {}",
                        resp.cancel_reason()
                    )));
                }
                ids.push(resp.watch_id());
                continue;
            }
            let Some(i) = ids.iter().position(|id| *id == resp.watch_id()) else {
                continue;
            };
            match classify(&resp) {
                Received::Compacted { compact_revision } => return Ok(Err(compact_revision)),
                Received::Canceled { reason } => {
                    return Err(ended(format!("etcd canceled the watch: {reason}")))
                }
                Received::Events(events) => {
                    if found[i].is_none() {
                        found[i] = events.first().map(|e| e.mod_revision);
                    }
                }
                Received::Progress { .. } => {}
            }
        }
        let _ = watcher.cancel().await;
        Ok(Ok(found.into_iter().flatten().collect::<Vec<i64>>()))
    };
    // Not interruptible: the commit is being decided; request_timeout
    // bounds the wait.
    let revisions = runtime::block_on_uncancellable(client::with_timeout(timeout, exchange))
        .map_err(unreachable)?
        .map_err(|compact_revision| Undecided::Compacted {
            compact_revision: Some(compact_revision),
        })?;
    Ok(keys
        .into_iter()
        .zip(revisions)
        .map(|(key, revision)| FirstChange { key, revision })
        .collect())
}

/// A write sent once (`txn`, as [`CommitTxn`]) whose answer was lost
/// (`lost`): its revision when etcd's history shows it applied; otherwise
/// raise 40001 (another client changed a key it read first: it was not
/// applied and never will be) or 08007 with the reason.  `what` names the
/// write.
pub fn decide_lost(
    server: &ServerInfo,
    txn: &CommitTxn,
    lost: &EtcdError,
    what: &dyn Fn() -> String,
) -> i64 {
    match resolve(server, txn) {
        Resolved::Applied { revision } => revision,
        Resolved::NotApplied(CommitConflict::Changed(k) | CommitConflict::KeyExists(k)) => {
            crate::error::raise_with(
                pgrx::PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
                format!(
                    "could not serialize access: key \"{}\" was changed in etcd server \"{}\" after it was read",
                    display_key(&k),
                    server.server_name
                ),
                Some(format!(
                    "{}: the answer was lost ({lost}); etcd's history shows another client changed the key first, so the write was not applied and never will be.",
                    what()
                )),
                Some("Retry.".into()),
            )
        }
        Resolved::Undecided(why) => unknown(server, lost, &format!("{}; {}.", what(), undecided_detail(&why))),
    }
}

/// 08007 for a write whose outcome stays unknown.
pub fn unknown(server: &ServerInfo, lost: &EtcdError, detail: &str) -> ! {
    crate::error::raise_with(
        pgrx::PgSqlErrorCode::ERRCODE_TRANSACTION_RESOLUTION_UNKNOWN,
        format!(
            "the outcome of the write to etcd server \"{}\" is unknown: {lost}",
            server.server_name
        ),
        Some(detail.to_string()),
        Some("Read the keys to find out.".into()),
    )
}

/// Why an outcome stays unknown, as the DETAIL of 08007 says it.
pub fn undecided_detail(why: &Undecided) -> String {
    match why {
        Undecided::NoChangeYet => "etcd does not show the write, and nothing shows that it cannot still apply: the request may still be queued at the member that took it".into(),
        Undecided::CreatedByAnother(k) => format!(
            "key \"{}\" was created by another client, so the write did not apply yet, but it still would if that key were deleted before the request arrives",
            display_key(k)
        ),
        Undecided::ValueKept(k) => format!(
            "the write keeps the value of key \"{}\", so it cannot be told from another client's write of that key",
            display_key(k)
        ),
        Undecided::Compacted { compact_revision: Some(r) } => format!(
            "etcd's history of the keys was compacted (it is kept from revision {r} on), so their first change after they were read cannot be found"
        ),
        Undecided::Compacted { compact_revision: None } => "etcd's history of the keys was compacted, so their first change after they were read cannot be found".into(),
        Undecided::Unreachable(e) => format!(
            "etcd could not be reached within request_timeout to decide it ({e})"
        ),
    }
}

/// The rows of a statement-mode batch that was applied at `revision`
/// although its answer was lost ([`writes::rows_after`]'s rows): each key
/// written as it was at `revision`, each key deleted as it was before.
pub fn rows_applied_at(
    server: &ServerInfo,
    batch: &WriteBatch,
    revision: i64,
) -> Result<Vec<RowAfter>, EtcdError> {
    let reads = writes::row_reads(batch, revision)
        .into_iter()
        .map(|(k, r)| (k, Some(r)))
        .collect();
    Ok(get_each(server, reads)?
        .iter()
        .map(|kv| kv.as_ref().map(RowAfter::from).unwrap_or_default())
        .collect())
}
