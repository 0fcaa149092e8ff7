//! Leases: grant one, keep it alive, revoke it, look at it, list them.
//! The `lease` column of a foreign table attaches keys to a lease; so does
//! `etcdctl put --lease`.

use std::cell::Cell;

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::ServerName;
use crate::catalog::ServerInfo;
use crate::columns::{self, display_key, Field};
use crate::connection;
use crate::error::{raise, raise_with};
use etcd_fdw_core::client::{self, EtcdError};
use etcd_fdw_core::etcd_client::{self, LeaseTimeToLiveOptions};
use etcd_fdw_core::lease as core_lease;

/// 42704 for a lease `info`'s cluster does not know (never granted there,
/// expired or revoked): the same error from every function taking a lease.
#[cold]
fn lease_not_found(info: &ServerInfo, id: i64) -> ! {
    raise_with(
        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        core_lease::not_found_message(id, &info.server_name),
        None,
        Some("A lease is gone once its TTL passed without a keep-alive, or after etcd_lease_revoke().".into()),
    )
}

/// Grant a lease of `ttl_seconds` (etcd may raise a very short TTL to its
/// minimum, about 2 s); returns its id.  Not retried: a grant whose
/// answer was lost may have made a lease, which then expires unused.
#[pg_extern(strict, volatile, parallel_unsafe)]
fn etcd_lease_grant(server: ServerName, ttl_seconds: i64) -> i64 {
    if let Some(problem) = core_lease::ttl_problem(ttl_seconds) {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, problem);
    }
    let info = server.resolve();
    let what = || {
        format!(
            "granting a lease of {ttl_seconds} s on server \"{}\"",
            info.server_name
        )
    };
    let timeout = info.options.request_timeout;
    let hint = "A lease granted without an answer expires unused after its TTL; etcd_leases() lists the leases that exist.";
    let resp = connection::run_once_client_hinted(&info, &what, hint, |c| async move {
        let mut lease = c.lease_client();
        client::with_timeout(timeout, lease.grant(ttl_seconds, None)).await
    });
    resp.id()
}

/// Refresh a lease once; returns its TTL from now on (the TTL it was
/// granted with).
#[pg_extern(strict, volatile, parallel_unsafe)]
fn etcd_lease_keepalive(server: ServerName, lease: i64) -> i64 {
    let info = server.resolve();
    let ttl = connection::with_client_retry(
        &info,
        &|| {
            format!(
                "keeping lease {} alive on server \"{}\"",
                core_lease::label(lease),
                info.server_name
            )
        },
        |client| async move {
            let mut leases = client.lease_client();
            // etcd-client's keep_alive opens the stream, sends one refresh
            // and reads its answer, but keeps only the id (and turns TTL 0,
            // etcd's "no such lease", into an error of its own).  A second
            // refresh on the same stream gives the TTL.
            let (mut keeper, mut stream) = match leases.keep_alive(lease).await {
                Ok(pair) => pair,
                Err(etcd_client::Error::LeaseKeepAliveError(m)) if m.contains("not found") => {
                    return Ok(None)
                }
                Err(e) => return Err(EtcdError::from(e)),
            };
            keeper.keep_alive().await.map_err(EtcdError::from)?;
            match stream.message().await.map_err(EtcdError::from)? {
                Some(resp) => Ok(core_lease::keepalive_ttl(resp.ttl())),
                None => Err(EtcdError::Other(
                    "etcd closed the keep-alive stream without an answer".into(),
                )),
            }
        },
    );
    ttl.unwrap_or_else(|| lease_not_found(&info, lease))
}

/// Revoke a lease: etcd deletes the keys attached to it.
#[pg_extern(strict, volatile, parallel_unsafe)]
fn etcd_lease_revoke(server: ServerName, lease: i64) {
    let info = server.resolve();
    // Revoking twice is harmless, so the request is retried like a read;
    // but a retry finds no lease when the attempt before it revoked the
    // lease and only its answer was lost: that is success, not 42704.
    let attempt = Cell::new(0u32);
    let revoked = connection::with_client_retry(
        &info,
        &|| {
            format!(
                "revoking lease {} on server \"{}\"",
                core_lease::label(lease),
                info.server_name
            )
        },
        |client| {
            attempt.set(attempt.get() + 1);
            let attempt = attempt.get();
            async move {
                match client.lease_client().revoke(lease).await {
                    Ok(_) => Ok(true),
                    Err(e) => {
                        let e = EtcdError::from(e);
                        if core_lease::is_not_found(&e) {
                            Ok(core_lease::revoke_not_found_is_done(attempt))
                        } else {
                            Err(e)
                        }
                    }
                }
            }
        },
    );
    if !revoked {
        lease_not_found(&info, lease);
    }
}

/// A key attached to a lease, as SQL text (converted to the database
/// encoding); checked by [`LeaseKey::new`].
struct LeaseKey(Vec<u8>);

impl LeaseKey {
    /// 22021 when `key` cannot be text (not UTF-8, or a zero byte),
    /// naming the lease and the key with its odd bytes escaped.
    fn new(info: &ServerInfo, lease: i64, key: Vec<u8>) -> LeaseKey {
        if let Some(why) = core_lease::key_text_problem(&key) {
            raise_with(
                PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
                format!(
                    "etcd key \"{}\" attached to lease {} on server \"{}\" {why}",
                    display_key(&key),
                    core_lease::label(lease),
                    info.server_name
                ),
                None,
                Some("Read such keys through a foreign table with a bytea key column (its lease column shows the lease).".into()),
            );
        }
        LeaseKey(key)
    }
}

impl pgrx::IntoDatum for LeaseKey {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        // SAFETY: called while the function's result is built, in the
        // memory context pgrx gives it; the bytes were checked (UTF-8, no
        // zero byte) by LeaseKey::new, so text_datum only converts.
        Some(unsafe { columns::text_datum(&self.0, Field::Key, &self.0) })
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::TEXTOID
    }
}

sql_type!(LeaseKey, "text");

/// A lease's remaining TTL, the TTL it was granted (or last refreshed)
/// with, and the keys attached to it (in etcd's order).
#[pg_extern(strict, volatile, parallel_unsafe)]
fn etcd_lease_info(
    server: ServerName,
    lease: i64,
) -> TableIterator<
    'static,
    (
        name!(ttl, i64),
        name!(granted_ttl, i64),
        name!(keys, Vec<LeaseKey>),
    ),
> {
    let info = server.resolve();
    let (ttl, granted_ttl, keys) = connection::with_client_retry(
        &info,
        &|| {
            format!(
                "reading lease {} on server \"{}\"",
                core_lease::label(lease),
                info.server_name
            )
        },
        |client| async move {
            let resp = client
                .lease_client()
                .time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
                .await
                .map_err(EtcdError::from)?;
            Ok((resp.ttl(), resp.granted_ttl(), resp.keys().to_vec()))
        },
    );
    let Some((ttl, granted_ttl)) = core_lease::time_to_live(ttl, granted_ttl) else {
        lease_not_found(&info, lease)
    };
    let keys = keys
        .into_iter()
        .map(|k| LeaseKey::new(&info, lease, k))
        .collect();
    TableIterator::once((ttl, granted_ttl, keys))
}

/// The ids of the cluster's leases, in ascending order.
#[pg_extern(strict, volatile, parallel_unsafe)]
fn etcd_leases(server: ServerName) -> SetOfIterator<'static, i64> {
    let info = server.resolve();
    let mut ids = connection::with_client_retry(
        &info,
        &|| format!("listing the leases of server \"{}\"", info.server_name),
        |client| async move {
            let resp = client
                .lease_client()
                .leases()
                .await
                .map_err(EtcdError::from)?;
            Ok(resp.leases().iter().map(|l| l.id()).collect::<Vec<i64>>())
        },
    );
    ids.sort_unstable();
    SetOfIterator::new(ids)
}
