//! Everyday key-value work as one-line functions: get, put, delete.
//!
//! Writes follow `etcd_fdw.commit_mode` like a foreign table's: in
//! `transaction` mode (the default) they join the transaction's pending
//! writes and reach etcd in its commit Txn (ROLLBACK discards them), in
//! `statement` mode they are sent at once.  Puts and deletes are unguarded,
//! like `etcdctl put` / `etcdctl del`.  Reads see the transaction's own
//! pending writes and its snapshot (REPEATABLE READ).

use etcd_fdw_core::client;
use etcd_fdw_core::etcd_client::{DeleteOptions, GetOptions, PutOptions};
use etcd_fdw_core::keyrange::{KeyRange, KeySet};
use etcd_fdw_core::pending::{CommitOp, CommitTxn, Guard, Pending, Step};
use etcd_fdw_core::scan::{Pager, ScanSpec};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::{ServerName, TextDatum, Utf8Text};
use crate::catalog::ServerInfo;
use crate::columns::{self, display_key, Field};
use crate::connection;
use crate::error::{raise, raise_with};
use crate::resolve;
use crate::xact;

/// The value of `key` as the transaction sees it (`None`: absent).
fn read_value(info: &ServerInfo, key: &[u8]) -> Option<Vec<u8>> {
    if key.is_empty() {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "etcd keys cannot be empty",
        );
    }
    // Read your own writes.
    if let Some(p) = xact::pending_snapshot(info) {
        match p.get(key) {
            Some(Pending::Put { value: Some(v), .. }) => return Some(v.clone()),
            Some(Pending::Deleted) => return None,
            None if p.in_truncated(key) => return None,
            // An update that kept the value, or no pending write: etcd's.
            _ => {}
        }
    }
    let revision = xact::snapshot_revision(info).unwrap_or(0);
    let resp = connection::with_client_retry(
        info,
        &|| {
            format!(
                "reading key \"{}\" from etcd server \"{}\"",
                display_key(key),
                info.server_name
            )
        },
        |mut c| {
            let key = key.to_vec();
            async move {
                let opts = GetOptions::new().with_revision(revision);
                c.get(key, Some(opts)).await.map_err(Into::into)
            }
        },
    );
    if revision == 0 {
        xact::pin_snapshot(info, resp.header().map_or(0, |h| h.revision()));
    }
    resp.kvs().first().map(|kv| kv.value().to_vec())
}

/// The value of `key` on `server` as text (NULL when the key is absent).
#[pg_extern(strict, volatile, parallel_unsafe)]
fn etcd_get(server: ServerName, key: Utf8Text) -> Option<TextDatum> {
    let info = server.resolve();
    let value = read_value(&info, &key.0)?;
    // SAFETY: allocates the result in the function's memory context.
    Some(TextDatum(unsafe {
        columns::text_datum(&value, Field::Value, &key.0)
    }))
}

/// The value of `key` on `server` as its raw bytes.
#[pg_extern(strict, volatile, parallel_unsafe)]
fn etcd_get_bytea(server: ServerName, key: Utf8Text) -> Option<Vec<u8>> {
    let info = server.resolve();
    read_value(&info, &key.0)
}

/// `arg`, or 22004 naming the argument of `func`.
fn required<T>(arg: Option<T>, func: &str, name: &str) -> T {
    arg.unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("argument \"{name}\" of {func}() must not be NULL"),
        )
    })
}

/// Put `key` = `value` (with `lease`, 0: none): the revision of the write
/// in statement mode, NULL in transaction mode (it is written at COMMIT).
fn put(
    func: &str,
    server: Option<ServerName>,
    key: Option<Utf8Text>,
    value: Option<Vec<u8>>,
    lease: Option<i64>,
) -> Option<i64> {
    let info = required(server, func, "server").resolve();
    let key = required(key, func, "key").0;
    let value = required(value, func, "value");
    let lease = lease.unwrap_or(0);
    if key.is_empty() {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "etcd keys cannot be empty",
        );
    }
    if lease < 0 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("argument \"lease\" of {func}() must be a lease id or 0, not {lease}"),
        );
    }
    let batch_size = etcd_fdw_core::options::server_batch_size(&info.options);
    if xact::deferring(&info, None) {
        let level = xact::nest_level();
        xact::with_pending(&info, |p| p.put(&key, value, Some(lease), level));
        xact::check_size(&info, batch_size, Some(&key), xact::Writer::Server);
        return None;
    }
    let timeout = info.options.request_timeout;
    let what = || {
        format!(
            "putting key \"{}\" on etcd server \"{}\"",
            display_key(&key),
            info.server_name
        )
    };
    let sent = connection::try_once(&info, &what, |mut kv| {
        let (k, v) = (key.clone(), value.clone());
        async move {
            let opts = PutOptions::new().with_lease(lease);
            client::with_timeout(timeout, kv.put(k, v, Some(opts))).await
        }
    });
    Some(match sent {
        Ok(resp) => resp.header().map_or(0, |h| h.revision()),
        // The answer was lost: the value visible since is taken for it.
        Err(lost) => resolve::decide_lost(
            &info,
            &CommitTxn {
                ops: vec![CommitOp::Put {
                    key: key.clone(),
                    value: Some(value.clone()),
                    lease: Some(lease),
                    guard: Guard::None,
                }],
            },
            &lost,
            &what,
        ),
    })
}

/// Put a text value: `etcdctl put` (creates or overwrites).
#[pg_extern(volatile, parallel_unsafe)]
fn etcd_put(
    server: Option<ServerName>,
    key: Option<Utf8Text>,
    value: Option<Utf8Text>,
    lease: default!(Option<i64>, 0),
) -> Option<i64> {
    put("etcd_put", server, key, value.map(|v| v.0), lease)
}

/// Put a bytea value (any bytes).
#[pg_extern(volatile, parallel_unsafe, name = "etcd_put")]
fn etcd_put_bytea(
    server: Option<ServerName>,
    key: Option<Utf8Text>,
    value: Option<Vec<u8>>,
    lease: default!(Option<i64>, 0),
) -> Option<i64> {
    put("etcd_put", server, key, value, lease)
}

/// How many keys of `range` the transaction sees now: etcd's count at the
/// transaction's revision, merged with its pending writes when they touch
/// the range.
fn visible_count(info: &ServerInfo, range: &KeyRange) -> i64 {
    let keys = KeySet::from_range(range.clone());
    let revision = xact::snapshot_revision(info).unwrap_or(0);
    let what = || format!("counting keys on etcd server \"{}\"", info.server_name);
    let overlay = xact::pending_snapshot(info)
        .filter(|p| p.touches(&keys))
        .map(|p| p.overlay(&keys, false));
    let Some(mut overlay) = overlay else {
        let (key, end) = range.to_etcd();
        let resp = connection::with_client_retry(info, &what, |mut c| {
            let (key, end) = (key.clone(), end.clone());
            async move {
                let opts = GetOptions::new()
                    .with_range(end)
                    .with_count_only()
                    .with_revision(revision);
                c.get(key, Some(opts)).await.map_err(Into::into)
            }
        });
        return resp.count();
    };
    // Walk etcd's keys (keys only, in pages at one revision) beside the
    // pending writes, counting what the transaction would read.
    let mut pager = Pager::new(ScanSpec {
        keys,
        sort: None,
        limit: None,
        keys_only: true,
        revision,
        serializable: false,
        fetch_size: etcd_fdw_core::options::DEFAULT_FETCH_SIZE,
        adaptive: true,
        whole_range: false,
    });
    let mut count = 0i64;
    let mut page: std::collections::VecDeque<_> = Default::default();
    loop {
        if page.is_empty() {
            if let Some(req) = pager.next_request() {
                let resp = connection::with_client_retry(info, &what, |mut c| {
                    let req = req.clone();
                    async move {
                        let opts = req.get_options();
                        c.get(req.key, Some(opts)).await.map_err(Into::into)
                    }
                });
                page = pager.accept(resp).into();
                continue;
            }
        }
        let next = page.front().map(|kv| kv.key().to_vec());
        match overlay.step(next.as_deref()) {
            Step::Etcd | Step::Merge { .. } => {
                count += 1;
                page.pop_front();
            }
            Step::SkipEtcd => {
                page.pop_front();
            }
            Step::Own { .. } => count += 1,
            Step::Done => return count,
        }
    }
}

/// Delete `range`: the number of keys deleted (in transaction mode, the
/// keys the transaction sees in it; they go at COMMIT).
fn delete(func: &str, info: &ServerInfo, range: KeyRange, allow_all: bool) -> i64 {
    if range.is_all() && !allow_all {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "{func}() would delete every key of etcd server \"{}\"",
                info.server_name
            ),
            None,
            Some("Pass allow_all => true to delete the whole keyspace.".into()),
        );
    }
    if range.is_empty() {
        return 0;
    }
    if xact::deferring(info, None) {
        let count = visible_count(info, &range);
        let level = xact::nest_level();
        let first = range.start.clone();
        xact::with_pending(info, |p| p.truncate(range, level));
        let batch_size = etcd_fdw_core::options::server_batch_size(&info.options);
        xact::check_size(info, batch_size, Some(&first), xact::Writer::Server);
        return count;
    }
    let timeout = info.options.request_timeout;
    let (key, end) = range.to_etcd();
    let what = || {
        format!(
            "deleting keys from \"{}\" on etcd server \"{}\"",
            display_key(&range.start),
            info.server_name
        )
    };
    let resp = connection::run_once(info, &what, |mut kv| {
        let (key, end) = (key.clone(), end.clone());
        async move {
            let opts = if end.is_empty() {
                DeleteOptions::new()
            } else {
                DeleteOptions::new().with_range(end)
            };
            client::with_timeout(timeout, kv.delete(key, Some(opts))).await
        }
    });
    resp.deleted()
}

/// Delete `key`, or with `range_end` the keys `[key, range_end)` (`''`:
/// every key `>= key`), like `etcdctl del`.  Returns the keys deleted.
#[pg_extern(volatile, parallel_unsafe)]
fn etcd_delete(
    server: Option<ServerName>,
    key: Option<Utf8Text>,
    range_end: default!(Option<Utf8Text>, "NULL"),
    allow_all: default!(Option<bool>, false),
) -> i64 {
    let func = "etcd_delete";
    let info = required(server, func, "server").resolve();
    let key = required(key, func, "key").0;
    let end = range_end.map(|e| e.0);
    let Some(range) = KeyRange::of_request(&key, end.as_deref()) else {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "etcd keys cannot be empty".into(),
            None,
            Some(
                "Give range_end => '' as well to delete every key (with allow_all => true).".into(),
            ),
        );
    };
    delete(func, &info, range, allow_all.unwrap_or(false))
}

/// Delete every key starting with `prefix` (`''`: every key, which needs
/// `allow_all => true`).  Returns the keys deleted.
#[pg_extern(volatile, parallel_unsafe)]
fn etcd_delete_prefix(
    server: Option<ServerName>,
    prefix: Option<Utf8Text>,
    allow_all: default!(Option<bool>, false),
) -> i64 {
    let func = "etcd_delete_prefix";
    let info = required(server, func, "server").resolve();
    let prefix = required(prefix, func, "prefix").0;
    delete(
        func,
        &info,
        KeyRange::prefix(&prefix),
        allow_all.unwrap_or(false),
    )
}
