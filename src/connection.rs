//! The per-backend connection cache.
//!
//! One etcd connection per (server, user) per backend, reused by every
//! query of the session.  An entry remembers a fingerprint of the options
//! it was opened with; when ALTER SERVER or ALTER USER MAPPING changes them
//! the next use reconnects.  An entry is also dropped when etcd breaks the
//! connection, so the next query reconnects (and, with several endpoints,
//! fails over to a live member).  The backend remembers when each endpoint
//! last failed: reconnects try the others first, so a member that failed
//! recently is tried last but not skipped for good.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use etcd_fdw_core::client::{self, EtcdError};
use etcd_fdw_core::etcd_client::{Client, KvClient};
use etcd_fdw_core::retry::{Attempts, Retrier, Step};
use pgrx::pg_sys;

use crate::catalog::ServerInfo;
use crate::error::etcd_error;
use crate::runtime::block_on;

struct Entry {
    client: Client,
    /// `client`'s KV client, made once: requests clone only this.
    kv: KvClient,
    fingerprint: u64,
    connects: i64,
    server_name: String,
    endpoints: String,
    /// The member this connection talks to.
    endpoint: String,
}

type Key = (u32, u32);

thread_local! {
    static CACHE: RefCell<HashMap<Key, Entry>> = RefCell::new(HashMap::new());
    /// When each endpoint (as written in connstr) last failed.
    static FAILED_AT: RefCell<HashMap<String, Instant>> = RefCell::new(HashMap::new());
}

fn key(info: &ServerInfo) -> Key {
    (u32::from(info.server_oid), u32::from(info.user_oid))
}

use etcd_fdw_core::client::MAX_RESPONSE_BYTES;

fn mark_failed(endpoint: &str) {
    FAILED_AT.with(|f| f.borrow_mut().insert(endpoint.to_string(), Instant::now()));
}

/// [`kv_client`], handing a connection failure to the caller.
pub fn try_kv_client(info: &ServerInfo) -> Result<KvClient, EtcdError> {
    cached(info, |e| e.kv.clone()).map_or_else(|| try_client(info).map(|c| kv_of(&c)), Ok)
}

/// `get` of the cache entry of `info`, when it is connected with the
/// current options.
fn cached<T>(info: &ServerInfo, get: impl FnOnce(&Entry) -> T) -> Option<T> {
    let k = key(info);
    CACHE.with(|c| {
        c.borrow()
            .get(&k)
            .filter(|e| e.fingerprint == info.fingerprint)
            .map(get)
    })
}

fn kv_of(client: &Client) -> KvClient {
    client
        .kv_client()
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// The whole etcd client of `info` (leases, watch, cluster, maintenance
/// besides KV), connecting (or reconnecting) when needed.  Cloning a
/// `Client` shares its channel.
pub fn try_client(info: &ServerInfo) -> Result<Client, EtcdError> {
    if let Some(client) = cached(info, |e| e.client.clone()) {
        return Ok(client);
    }
    let k = key(info);
    let fp = info.fingerprint;
    check_identity(info);
    let endpoints: Vec<String> = info
        .options
        .endpoints
        .iter()
        .map(|e| e.to_string())
        .collect();
    let failed_at: Vec<Option<Instant>> = FAILED_AT.with(|f| {
        let f = f.borrow();
        endpoints.iter().map(|e| f.get(e).copied()).collect()
    });
    let order = client::endpoint_order(&failed_at);
    let connected = match block_on(client::connect_in_order(&info.options, &order)) {
        Ok(c) => c,
        Err(e) => {
            if matches!(e, EtcdError::Connect { .. }) {
                endpoints.iter().for_each(|e| mark_failed(e));
            }
            return Err(e);
        }
    };
    for &i in &connected.skipped {
        mark_failed(&endpoints[i]);
    }
    let client = connected.client.clone();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let connects = c.get(&k).map_or(0, |e| e.connects) + 1;
        c.insert(
            k,
            Entry {
                kv: kv_of(&connected.client),
                client: connected.client,
                fingerprint: fp,
                connects,
                server_name: info.server_name.clone(),
                endpoints: info.options.endpoints_display(),
                endpoint: endpoints[connected.endpoint].clone(),
            },
        );
    });
    Ok(client)
}

/// A non-superuser must not act with an etcd identity a superuser set up
/// (a client certificate, a server-level user) without a password of their
/// own in the user mapping, unless a superuser set `password_required
/// 'false'` on it: postgres_fdw's rule.  Raises 2F003 otherwise.
pub fn check_identity(info: &ServerInfo) {
    let Some(option) = info.options.borrowed_identity() else {
        return;
    };
    // SAFETY: a syscache lookup of a role id.
    if unsafe { pg_sys::superuser_arg(info.user_oid) } {
        return;
    }
    let what = if option == "ssl_cert" {
        "the client certificate of server option \"ssl_cert\""
    } else {
        "the etcd user of server option \"username\""
    };
    crate::error::raise_with(
        pgrx::PgSqlErrorCode::ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED,
        "password is required".into(),
        Some(format!(
            "Non-superuser cannot connect to etcd server \"{}\" as {what}: the user mapping must supply a password.",
            info.server_name
        )),
        Some("Add username and password to the user mapping, or have a superuser set password_required 'false' on it.".into()),
    )
}

/// The endpoint the cached connection of `info` uses, if any.
fn endpoint_in_use(info: &ServerInfo) -> Option<String> {
    CACHE.with(|c| c.borrow().get(&key(info)).map(|e| e.endpoint.clone()))
}

/// Whether this backend has connected to `info`'s server before.
pub fn was_connected(info: &ServerInfo) -> bool {
    CACHE.with(|c| c.borrow().contains_key(&key(info)))
}

/// Forget the connection of `info` if `err` says it is broken, and
/// remember that its member failed.
pub fn note_error(info: &ServerInfo, err: &EtcdError) {
    if err.breaks_connection() {
        let k = key(info);
        CACHE.with(|c| {
            if let Some(e) = c.borrow_mut().get_mut(&k) {
                // Keep the entry (and its connect count) but force a
                // reconnect on next use.
                e.fingerprint = 0;
                mark_failed(&e.endpoint);
            }
        });
    }
}

/// Force a reconnect of `info`'s connection on next use (keeping its
/// connect count), without blaming its member: the connection works but
/// must authenticate again.
pub fn drop_connection(info: &ServerInfo) {
    let k = key(info);
    CACHE.with(|c| {
        if let Some(e) = c.borrow_mut().get_mut(&k) {
            e.fingerprint = 0;
        }
    });
}

/// `e` as reported for `info`: etcd's "user name is empty" to a request
/// without a user (no user mapping, or one without `username`) says that
/// the server has authentication enabled and the role needs an etcd user
/// ([`EtcdError::NoUser`], 28000 with a hint naming the server).
/// With a user name, the same answer (after logging in again) says that
/// the login did not reach etcd ([`EtcdError::LoginNotPassedOn`]: a proxy
/// in between drops it).
pub fn identify(info: &ServerInfo, e: EtcdError) -> EtcdError {
    if e.user_empty() {
        if let EtcdError::Status { message, .. } = e.root() {
            return match &info.options.username {
                None => EtcdError::NoUser {
                    server: info.server_name.clone(),
                    detail: message.clone(),
                },
                Some(user) => EtcdError::LoginNotPassedOn {
                    server: info.server_name.clone(),
                    user: user.clone(),
                    detail: message.clone(),
                },
            };
        }
    }
    e
}

/// Run an idempotent request, retrying on a fresh connection (the next
/// endpoint first) with backoff while etcd is electing a leader, a member
/// is gone or the cached connection broke (see [`EtcdError::retryable`]),
/// until `request_timeout` is used up.
pub fn with_retry<T, F, Fut>(info: &ServerInfo, what: &dyn Fn() -> String, f: F) -> T
where
    F: Fn(KvClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, EtcdError>>,
{
    try_with_retry(info, f).unwrap_or_else(|e| etcd_error(&e, &what()))
}

/// [`with_retry`], handing the final error (an [`EtcdError::Retried`]
/// listing every attempt when there were several) to the caller.
pub fn try_with_retry<T, F, Fut>(info: &ServerInfo, f: F) -> Result<T, EtcdError>
where
    F: Fn(KvClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, EtcdError>>,
{
    retry_loop(info, try_kv_client, f)
}

/// [`with_retry`] for requests beyond KV (leases, cluster, maintenance):
/// `f` gets the whole client.
pub fn with_client_retry<T, F, Fut>(info: &ServerInfo, what: &dyn Fn() -> String, f: F) -> T
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, EtcdError>>,
{
    try_with_retry_client(info, f).unwrap_or_else(|e| etcd_error(&e, &what()))
}

/// [`try_with_retry`] on the whole client.
pub fn try_with_retry_client<T, F, Fut>(info: &ServerInfo, f: F) -> Result<T, EtcdError>
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, EtcdError>>,
{
    retry_loop(info, try_client, f)
}

/// The retry loop of [`try_with_retry`] and [`try_with_retry_client`]:
/// `client` gets the (cached) client `f` is given.
fn retry_loop<C, T, F, Fut>(
    info: &ServerInfo,
    client: fn(&ServerInfo) -> Result<C, EtcdError>,
    f: F,
) -> Result<T, EtcdError>
where
    F: Fn(C) -> Fut,
    Fut: std::future::Future<Output = Result<T, EtcdError>>,
{
    let budget = info.options.request_timeout;
    // With other members to try, one that stops answering (paused,
    // partitioned) must not use up the whole budget: half of it each.
    let per_attempt = if info.options.endpoints.len() > 1 {
        budget / 2
    } else {
        budget
    };
    let start = Instant::now();
    let mut retrier = Retrier::new(&info.options);
    let mut attempts = Attempts::default();
    loop {
        let was_connected = was_connected(info);
        let result = client(info).and_then(|client| {
            let left = budget
                .saturating_sub(start.elapsed())
                .min(per_attempt)
                .max(Duration::from_millis(1));
            block_on(async {
                match tokio::time::timeout(left, f(client)).await {
                    Ok(r) => r,
                    Err(_) => Err(EtcdError::Timeout(left)),
                }
            })
        });
        let e = match result {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        // (a failed connect names each endpoint it tried itself)
        let endpoint = match &e {
            EtcdError::Connect { .. } => "connecting".to_string(),
            _ => endpoint_in_use(info).unwrap_or_default(),
        };
        note_error(info, &e);
        attempts.record(&endpoint, &e);
        match retrier.step(&e, start.elapsed(), was_connected) {
            Step::Reauthenticate => drop_connection(info),
            Step::RetryAfter(delay) => block_on(async move { tokio::time::sleep(delay).await }),
            Step::GiveUp => {
                let e = identify(info, e);
                if attempts.count() == 1 {
                    return Err(e);
                }
                attempts.finish(start.elapsed());
                return Err(EtcdError::Retried {
                    last: Box::new(e),
                    attempts,
                });
            }
        }
    }
}

/// Run a non-idempotent request (a write) once; `f` makes the request
/// on the KV client.  An error that may hide an applied write is 08007
/// (outcome unknown).
pub fn run_once<T, F, Fut>(info: &ServerInfo, what: &dyn Fn() -> String, f: F) -> T
where
    F: Fn(KvClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, EtcdError>>,
{
    run_once_with(
        info,
        what,
        "Read the keys to find out, or use etcd_fdw.commit_mode 'transaction', whose commits are resolved by reading them back.",
        try_kv_client,
        f,
    )
}

/// [`run_once`] on the whole client, with the hint an unknown outcome
/// gets (what the caller can do to find out).
pub fn run_once_client_hinted<T, F, Fut>(
    info: &ServerInfo,
    what: &dyn Fn() -> String,
    unknown_hint: &str,
    f: F,
) -> T
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, EtcdError>>,
{
    run_once_with(info, what, unknown_hint, try_client, f)
}

/// [`run_once`]: connect with `client`, send `f`'s request; an error that
/// may hide an applied write is 08007 with `unknown_hint`.
fn run_once_with<C, T, F, Fut>(
    info: &ServerInfo,
    what: &dyn Fn() -> String,
    unknown_hint: &str,
    client: fn(&ServerInfo) -> Result<C, EtcdError>,
    f: F,
) -> T
where
    F: Fn(C) -> Fut,
    Fut: std::future::Future<Output = Result<T, EtcdError>>,
{
    try_once_with(info, what, client, f).unwrap_or_else(|e| {
        crate::error::raise_with(
            pgrx::PgSqlErrorCode::ERRCODE_TRANSACTION_RESOLUTION_UNKNOWN,
            format!(
                "the outcome of the write to etcd server \"{}\" is unknown: {e}",
                info.server_name
            ),
            Some(format!(
                "{}; etcd may or may not have applied it (it is not read back).",
                what()
            )),
            Some(unknown_hint.into()),
        )
    })
}

/// [`run_once`], handing an error that may hide an applied write (a
/// timeout, a connection broken mid-request) to the caller to decide;
/// any other error is raised.
pub fn try_once<T, F, Fut>(
    info: &ServerInfo,
    what: &dyn Fn() -> String,
    f: F,
) -> Result<T, EtcdError>
where
    F: Fn(KvClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, EtcdError>>,
{
    try_once_with(info, what, try_kv_client, f)
}

/// Connect with `client`, send `f`'s request.  Sent a
/// second time only when etcd refused it for want of a valid token and
/// there are credentials to authenticate with (the connection was made
/// while etcd's authentication was off, or etcd forgot its token): etcd
/// refuses such a request before applying anything (an invalid token
/// before the write is proposed; no user or an outdated token when it is
/// applied, before the key-value store is touched), so the write was not
/// applied and sending it once more on a new, authenticated connection
/// cannot apply it twice.  That is etcd's own client's rule too.  An error
/// that certainly applied nothing is raised; one that may hide an applied
/// write is returned.
fn try_once_with<C, T, F, Fut>(
    info: &ServerInfo,
    what: &dyn Fn() -> String,
    client: fn(&ServerInfo) -> Result<C, EtcdError>,
    f: F,
) -> Result<T, EtcdError>
where
    F: Fn(C) -> Fut,
    Fut: std::future::Future<Output = Result<T, EtcdError>>,
{
    let start = Instant::now();
    let mut retrier = Retrier::new(&info.options);
    loop {
        let was_connected = was_connected(info);
        let e = match client(info).and_then(|c| block_on(f(c))) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        note_error(info, &e);
        if e.definitely_not_applied()
            && retrier.step(&e, start.elapsed(), was_connected) == Step::Reauthenticate
        {
            drop_connection(info);
            continue;
        }
        let e = identify(info, e);
        if e.definitely_not_applied() {
            etcd_error(&e, &what())
        }
        return Err(e);
    }
}

/// A cached connection, as `etcd_fdw_get_connections()` shows it.
pub struct ConnectionInfo {
    pub server_name: String,
    pub user_oid: u32,
    pub endpoints: String,
    pub endpoint: String,
    pub connects: i64,
}

/// One row per cached connection, by server name and user.
pub fn list() -> Vec<ConnectionInfo> {
    CACHE.with(|c| {
        let mut v: Vec<_> = c
            .borrow()
            .iter()
            .map(|(k, e)| ConnectionInfo {
                server_name: e.server_name.clone(),
                user_oid: k.1,
                endpoints: e.endpoints.clone(),
                endpoint: e.endpoint.clone(),
                connects: e.connects,
            })
            .collect();
        v.sort_by(|a, b| (&a.server_name, a.user_oid).cmp(&(&b.server_name, b.user_oid)));
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
