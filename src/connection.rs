//! The per-backend connection cache.
//!
//! One etcd connection per (server, user) per backend, reused by every
//! query of the session.  An entry remembers a fingerprint of the options
//! it was opened with; when ALTER SERVER or ALTER USER MAPPING changes them
//! the next use reconnects.  An entry is also dropped when etcd breaks the
//! connection, so the next query reconnects (and, with several endpoints,
//! fails over to a live member).

use std::cell::RefCell;
use std::collections::HashMap;

use etcd_fdw_core::client::{self, EtcdError};
use etcd_fdw_core::etcd_client::{Client, KvClient};
use pgrx::pg_sys;

use crate::catalog::ServerInfo;
use crate::error::etcd_error;
use crate::runtime::block_on;

struct Entry {
    client: Client,
    fingerprint: u64,
    connects: i64,
    server_name: String,
    endpoints: String,
}

type Key = (u32, u32);

thread_local! {
    static CACHE: RefCell<HashMap<Key, Entry>> = RefCell::new(HashMap::new());
}

fn key(info: &ServerInfo) -> Key {
    (u32::from(info.server_oid), u32::from(info.user_oid))
}

use etcd_fdw_core::client::MAX_RESPONSE_BYTES;

/// A KV client for `info`, connecting (or reconnecting) when needed.
pub fn kv_client(info: &ServerInfo) -> KvClient {
    try_kv_client(info)
        .unwrap_or_else(|e| etcd_error(&e, &format!("server \"{}\"", info.server_name)))
}

/// [`kv_client`], handing a connection failure to the caller.
pub fn try_kv_client(info: &ServerInfo) -> Result<KvClient, EtcdError> {
    let k = key(info);
    let fp = info.fingerprint;
    let cached = CACHE.with(|c| {
        c.borrow().get(&k).filter(|e| e.fingerprint == fp).map(|e| {
            e.client
                .kv_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES)
        })
    });
    if let Some(kv) = cached {
        return Ok(kv);
    }
    let client = block_on(client::connect(&info.options))?;
    let kv = client
        .kv_client()
        .max_decoding_message_size(MAX_RESPONSE_BYTES);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let connects = c.get(&k).map_or(0, |e| e.connects) + 1;
        c.insert(
            k,
            Entry {
                client,
                fingerprint: fp,
                connects,
                server_name: info.server_name.clone(),
                endpoints: info.options.endpoints_display(),
            },
        );
    });
    Ok(kv)
}

/// Forget the connection of `info` if `err` says it is broken.
pub fn note_error(info: &ServerInfo, err: &EtcdError) {
    if err.breaks_connection() {
        let k = key(info);
        CACHE.with(|c| {
            if let Some(e) = c.borrow_mut().get_mut(&k) {
                // Keep the entry (and its connect count) but force a
                // reconnect on next use.
                e.fingerprint = 0;
            }
        });
    }
}

/// Run an idempotent request, retrying once on a fresh connection when the
/// cached one turned out to be broken (etcd restarted, member died, auth
/// token expired).
pub fn with_retry<T, F, Fut>(info: &ServerInfo, what: &dyn Fn() -> String, f: F) -> T
where
    F: Fn(KvClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, EtcdError>>,
{
    try_with_retry(info, f).unwrap_or_else(|e| etcd_error(&e, &what()))
}

/// [`with_retry`], handing the final error to the caller.
pub fn try_with_retry<T, F, Fut>(info: &ServerInfo, f: F) -> Result<T, EtcdError>
where
    F: Fn(KvClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, EtcdError>>,
{
    let first = match try_kv_client(info) {
        Ok(kv) => block_on(f(kv)),
        Err(e) => Err(e),
    };
    let result = match first {
        Err(e) if e.retryable(info.options.endpoints.len()) => {
            note_error(info, &e);
            match try_kv_client(info) {
                Ok(kv) => block_on(f(kv)),
                Err(e) => Err(e),
            }
        }
        other => other,
    };
    if let Err(e) = &result {
        note_error(info, e);
    }
    result
}

/// Run a non-idempotent request (a write) once.
pub fn run_once<T, Fut>(info: &ServerInfo, what: &dyn Fn() -> String, fut: Fut) -> T
where
    Fut: std::future::Future<Output = Result<T, EtcdError>>,
{
    match block_on(fut) {
        Ok(v) => v,
        Err(e) => {
            note_error(info, &e);
            etcd_error(&e, &what())
        }
    }
}

/// One row per cached connection: server name, user oid, endpoints,
/// connects.
pub fn list() -> Vec<(String, u32, String, i64)> {
    CACHE.with(|c| {
        let mut v: Vec<_> = c
            .borrow()
            .iter()
            .map(|(k, e)| (e.server_name.clone(), k.1, e.endpoints.clone(), e.connects))
            .collect();
        v.sort();
        v
    })
}

/// Drop every cached connection.
pub fn disconnect_all() -> bool {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let had = !c.is_empty();
        c.clear();
        had
    })
}

/// The user whose mapping applies to a relation scanned with
/// `check_as_user` (a view owner, or invalid for the current user).
pub fn effective_user(check_as_user: pg_sys::Oid) -> pg_sys::Oid {
    if check_as_user != pg_sys::InvalidOid {
        check_as_user
    } else {
        // SAFETY: GetUserId has no preconditions.
        unsafe { pg_sys::GetUserId() }
    }
}
