//! Patroni's cluster state as SQL: `etcd_patroni_members()`,
//! `etcd_patroni_cluster()` and `etcd_patroni_edit_config()`.
//!
//! The pure logic (key layout, member JSON, lag, the configuration's merge
//! and Patroni's rules) is `etcd_fdw_core::patroni`; this layer reads the
//! keys (one range request over the scope's prefix, so every key comes
//! from one revision), asks etcd for the TTL left of each distinct lease
//! (one LeaseTimeToLive per lease: etcd has no batch form), and writes the
//! configuration like the other write functions (`etcd_fdw.commit_mode`).

use etcd_fdw_core::client::{self, EtcdError};
use etcd_fdw_core::etcd_client::GetOptions;
use etcd_fdw_core::patroni::{self as core_patroni, ClusterState, Kv, PatchError, RuleKind};
use etcd_fdw_core::pending::{CommitOp, CommitTxn, Guard, Pending, ReadFrom};
use etcd_fdw_core::serde_json::Value;
use pgrx::prelude::*;
use pgrx::{pg_sys, JsonB, PgSqlErrorCode};

use super::{ServerName, TextDatum, Utf8Text};
use crate::catalog::ServerInfo;
use crate::columns::{self, display_key, Field};
use crate::connection;
use crate::error::{raise, raise_with};
use crate::resolve;
use crate::xact;

/// A `pg_lsn` result (a WAL position in bytes).
pub struct PgLsn(u64);

impl pgrx::IntoDatum for PgLsn {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        // pg_lsn is a pass-by-value 64-bit integer.
        Some(pg_sys::Datum::from(self.0 as i64))
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::PG_LSNOID
    }
}

// SAFETY: as TextDatum's: a by-value datum of the declared type.
unsafe impl pgrx::callconv::BoxRet for PgLsn {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        // SAFETY: see above.
        unsafe { fcinfo.return_raw_datum(pg_sys::Datum::from(self.0 as i64)) }
    }
}

sql_type!(PgLsn, "pg_lsn");

/// A text argument as UTF-8 (a scope or namespace).
fn arg_text(arg: Utf8Text, name: &str) -> String {
    String::from_utf8(arg.0).unwrap_or_else(|_| {
        raise(
            PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
            format!("argument \"{name}\" is not valid UTF-8"),
        )
    })
}

/// The key prefix of `scope` under `namespace`, as Patroni builds it.
fn prefix_of(scope: &str, namespace: &str) -> String {
    core_patroni::scope_prefix(namespace, scope).unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "argument \"scope\" must not be empty (Patroni's scope: the cluster's name)",
        )
    })
}

/// `s` as a text datum in the database encoding; `key`: the etcd key it
/// comes from, for the error of a value text cannot hold.
fn text(s: &str, key: &[u8]) -> TextDatum {
    // SAFETY: palloc'd in the current memory context (the call's).
    TextDatum(unsafe { columns::text_datum(s.as_bytes(), Field::Value, key) })
}

/// Every key of the cluster, read in one range request (one revision).
fn read_cluster(info: &ServerInfo, scope: &str, namespace: &str) -> (String, ClusterState) {
    let prefix = prefix_of(scope, namespace);
    let what = || {
        format!(
            "reading Patroni cluster \"{scope}\" (keys \"{prefix}\") from etcd server \"{}\"",
            info.server_name
        )
    };
    let resp = connection::with_retry(info, &what, |mut kv| {
        let prefix = prefix.clone();
        async move {
            kv.get(prefix.as_bytes(), Some(GetOptions::new().with_prefix()))
                .await
                .map_err(EtcdError::from)
        }
    });
    let revision = resp.header().map_or(0, |h| h.revision());
    let kvs = resp.kvs().iter().map(|kv| Kv {
        key: kv.key().to_vec(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    });
    let state = ClusterState::from_kvs(prefix.as_bytes(), kvs, revision);
    if state.is_empty() {
        raise_with(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!(
                "etcd server \"{}\" holds no Patroni cluster \"{scope}\": no keys under \"{prefix}\"",
                info.server_name
            ),
            Some(format!("Read at revision {revision}.")),
            Some("The scope is the cluster's name in patroni.yml; pass namespace => when it is not /service/.".into()),
        );
    }
    (prefix, state)
}

/// The seconds left of each lease (`None`: expired or revoked), one
/// LeaseTimeToLive request per lease.
fn lease_ttls(info: &ServerInfo, leases: &[i64]) -> Vec<(i64, Option<i64>)> {
    leases
        .iter()
        .map(|&id| {
            let ttl = connection::with_client_retry(
                info,
                &|| {
                    format!(
                        "reading the TTL of lease {id:x} on etcd server \"{}\"",
                        info.server_name
                    )
                },
                |client| async move {
                    let resp = client
                        .lease_client()
                        .time_to_live(id, None)
                        .await
                        .map_err(EtcdError::from)?;
                    Ok(resp.ttl())
                },
            );
            (id, (ttl >= 0).then_some(ttl))
        })
        .collect()
}

type MemberRow = (
    name!(name, TextDatum),
    name!(role, Option<TextDatum>),
    name!(state, Option<TextDatum>),
    name!(host, Option<TextDatum>),
    name!(port, Option<i32>),
    name!(api_url, Option<TextDatum>),
    name!(timeline, Option<i64>),
    name!(lsn, Option<PgLsn>),
    name!(lag_bytes, Option<i64>),
    name!(is_leader, bool),
    name!(version, Option<TextDatum>),
    name!(lease_ttl_left, Option<i64>),
    name!(mod_revision, i64),
);

/// The members of Patroni cluster `scope` (keys `<namespace><scope>/members/`),
/// one row each, from one read of the cluster's keys; `lag_bytes` against the
/// leader's optime (`status`), `lease_ttl_left` from etcd's leases.
#[allow(clippy::type_complexity)]
#[pg_extern(strict, volatile, parallel_unsafe)]
fn etcd_patroni_members(
    server: ServerName,
    scope: Utf8Text,
    namespace: default!(Utf8Text, "'/service/'"),
) -> TableIterator<
    'static,
    (
        name!(name, TextDatum),
        name!(role, Option<TextDatum>),
        name!(state, Option<TextDatum>),
        name!(host, Option<TextDatum>),
        name!(port, Option<i32>),
        name!(api_url, Option<TextDatum>),
        name!(timeline, Option<i64>),
        name!(lsn, Option<PgLsn>),
        name!(lag_bytes, Option<i64>),
        name!(is_leader, bool),
        name!(version, Option<TextDatum>),
        name!(lease_ttl_left, Option<i64>),
        name!(mod_revision, i64),
    ),
> {
    let info = server.resolve();
    let scope = arg_text(scope, "scope");
    let namespace = arg_text(namespace, "namespace");
    let (prefix, state) = read_cluster(&info, &scope, &namespace);
    let ttls = lease_ttls(&info, &state.leases());
    let rows: Vec<MemberRow> = state
        .members
        .iter()
        .map(|m| {
            let key = format!("{prefix}members/{}", m.name);
            let key = key.as_bytes();
            let t = |s: Option<String>| s.map(|s| text(&s, key));
            let (host, port) = m.host_port();
            let ttl = ttls
                .iter()
                .find(|(id, _)| *id == m.lease)
                .and_then(|(_, t)| *t);
            (
                text(&m.name, key),
                t(m.role()),
                t(m.state()),
                t(host),
                port,
                t(m.api_url()),
                m.timeline(),
                m.lsn().map(PgLsn),
                state.lag_bytes(m),
                state.is_leader(m),
                t(m.version()),
                ttl,
                m.mod_revision,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// One row about Patroni cluster `scope`: its leader, system identifier
/// (`initialize`), dynamic configuration, the leader's optime, the
/// failover, sync and history keys, how many members it has, and the
/// revision all of it was read at.
#[allow(clippy::type_complexity)]
#[pg_extern(strict, volatile, parallel_unsafe)]
fn etcd_patroni_cluster(
    server: ServerName,
    scope: Utf8Text,
    namespace: default!(Utf8Text, "'/service/'"),
) -> TableIterator<
    'static,
    (
        name!(leader, Option<TextDatum>),
        name!(system_identifier, Option<TextDatum>),
        name!(config, Option<JsonB>),
        name!(optime, Option<PgLsn>),
        name!(failover, Option<JsonB>),
        name!(sync, Option<JsonB>),
        name!(history, Option<JsonB>),
        name!(members, i32),
        name!(revision, i64),
    ),
> {
    let info = server.resolve();
    let scope = arg_text(scope, "scope");
    let namespace = arg_text(namespace, "namespace");
    let (prefix, state) = read_cluster(&info, &scope, &namespace);
    let leader_key = format!("{prefix}leader");
    let init_key = format!("{prefix}initialize");
    let json = |e: &Option<core_patroni::Entry<Value>>| e.as_ref().map(|e| JsonB(e.value.clone()));
    TableIterator::once((
        state
            .leader
            .as_ref()
            .map(|l| text(&l.value, leader_key.as_bytes())),
        state
            .initialize
            .as_ref()
            .map(|l| text(&l.value, init_key.as_bytes())),
        json(&state.config),
        state.optime().map(PgLsn),
        json(&state.failover),
        json(&state.sync),
        json(&state.history),
        i32::try_from(state.members.len()).unwrap_or(i32::MAX),
        state.revision,
    ))
}

/// `arg`, or 22004 naming the argument.
fn required<T>(arg: Option<T>, name: &str) -> T {
    arg.unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("argument \"{name}\" of etcd_patroni_edit_config() must not be NULL"),
        )
    })
}

/// The configuration as the transaction sees it: its JSON and how it was
/// read (a pending edit of this transaction, or etcd at a mod_revision).
fn read_config(info: &ServerInfo, key: &[u8], scope: &str) -> (Value, ReadFrom) {
    let missing = || -> ! {
        raise_with(
            PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
            format!(
                "Patroni cluster \"{scope}\" has no configuration: key \"{}\" does not exist on etcd server \"{}\"",
                display_key(key),
                info.server_name
            ),
            None,
            Some("Patroni writes it when it bootstraps the cluster; check scope and namespace.".into()),
        )
    };
    let parse = |bytes: &[u8]| -> Value {
        etcd_fdw_core::serde_json::from_slice(bytes).unwrap_or_else(|e| {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
                format!("the value of key \"{}\" is not JSON: {e}", display_key(key)),
            )
        })
    };
    if xact::deferring(info, None) {
        if let Some(p) = xact::pending_snapshot(info) {
            match p.get(key) {
                Some(Pending::Put { value: Some(v), .. }) => return (parse(v), ReadFrom::Pending),
                Some(Pending::Deleted) => missing(),
                None if p.in_truncated(key) => missing(),
                _ => {}
            }
        }
    }
    let revision = if xact::deferring(info, None) {
        xact::snapshot_revision(info).unwrap_or(0)
    } else {
        0
    };
    let resp = connection::with_retry(
        info,
        &|| {
            format!(
                "reading key \"{}\" from etcd server \"{}\"",
                display_key(key),
                info.server_name
            )
        },
        |mut kv| {
            let key = key.to_vec();
            async move {
                let opts = GetOptions::new().with_revision(revision);
                kv.get(key, Some(opts)).await.map_err(EtcdError::from)
            }
        },
    );
    if revision == 0 && xact::deferring(info, None) {
        xact::pin_snapshot(info, resp.header().map_or(0, |h| h.revision()));
    }
    let Some(kv) = resp.kvs().first() else {
        missing()
    };
    (
        parse(kv.value()),
        ReadFrom::Etcd {
            mod_revision: kv.mod_revision(),
        },
    )
}

/// Merge `patch` into the dynamic configuration of Patroni cluster `scope`
/// (its `config` key) as `patronictl edit-config --set` does (nested
/// objects merge, `null` removes a key), after checking the result against
/// the rules Patroni enforces (22023 for a malformed value, 23514 for one
/// Patroni would ignore or adjust).  Guarded by the key's mod_revision: a
/// concurrent change is a serialization failure (40001), never overwritten.
/// Follows `etcd_fdw.commit_mode`: written at COMMIT in transaction mode,
/// at once in statement mode; a patch that changes nothing writes nothing.
/// Returns the new configuration.
#[pg_extern(volatile, parallel_unsafe)]
fn etcd_patroni_edit_config(
    server: Option<ServerName>,
    scope: Option<Utf8Text>,
    patch: Option<JsonB>,
    namespace: default!(Option<Utf8Text>, "'/service/'"),
) -> JsonB {
    let info = required(server, "server").resolve();
    let scope = arg_text(required(scope, "scope"), "scope");
    let patch = required(patch, "patch").0;
    let namespace = arg_text(required(namespace, "namespace"), "namespace");
    let key = format!("{}config", prefix_of(&scope, &namespace)).into_bytes();
    let (current, read) = read_config(&info, &key, &scope);
    let new = match core_patroni::edit_config(&current, &patch) {
        Ok(Ok(new)) => new,
        Ok(Err(rule)) => raise_with(
            match rule.kind {
                RuleKind::InvalidValue => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                RuleKind::Violation => PgSqlErrorCode::ERRCODE_CHECK_VIOLATION,
            },
            format!(
                "the patched configuration of Patroni cluster \"{scope}\" breaks Patroni's rule \"{}\"",
                rule.rule
            ),
            Some(format!("{}. Nothing was written to key \"{}\".", rule.detail, display_key(&key))),
            Some("Patroni would refuse, ignore or adjust such a configuration; change the patch.".into()),
        ),
        Err(e @ PatchError::PatchNotObject(_)) => raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("argument \"patch\" of etcd_patroni_edit_config(): {e}"),
        ),
        Err(e @ PatchError::ConfigNotObject) => raise(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("{e} (key \"{}\")", display_key(&key)),
        ),
    };
    if new == current {
        // Nothing changes: nothing is written (patronictl says "Not
        // changed" and writes nothing either).
        return JsonB(new);
    }
    // A JSON value always serializes (its object keys are strings).
    let bytes = etcd_fdw_core::serde_json::to_vec(&new).unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("etcd_fdw: the merged configuration does not serialize: {e}"),
        )
    });
    if xact::deferring(&info, None) {
        let level = xact::nest_level();
        let value = Pending::Put {
            value: Some(bytes),
            lease: None,
        };
        let pushed = xact::with_pending(&info, |p| p.change(&key, read, value, level));
        if pushed.is_err() {
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!(
                    "etcd_fdw: no pending write of key \"{}\"",
                    display_key(&key)
                ),
            );
        }
        let batch_size = etcd_fdw_core::options::server_batch_size(&info.options);
        xact::check_size(&info, batch_size, Some(&key), xact::Writer::Server);
        return JsonB(new);
    }
    let ReadFrom::Etcd { mod_revision } = read else {
        // read_config reads pending state only while writes are deferred
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "etcd_fdw: the configuration was read from pending writes outside a deferring transaction",
        )
    };
    let what = || {
        format!(
            "writing key \"{}\" to etcd server \"{}\"",
            display_key(&key),
            info.server_name
        )
    };
    let timeout = info.options.request_timeout;
    // The write, guarded by the config key's mod_revision and keeping its
    // lease: one description for the request and for deciding a lost answer.
    let guarded = CommitTxn {
        ops: vec![CommitOp::Put {
            key: key.clone(),
            value: Some(bytes),
            lease: None,
            guard: Guard::ModRevision(mod_revision),
        }],
    };
    let txn = guarded.txn();
    let sent = connection::try_once(&info, &what, |mut kv| {
        let txn = txn.clone();
        async move { client::with_timeout(timeout, kv.txn(txn)).await }
    });
    let succeeded = match sent {
        Ok(resp) => resp.succeeded(),
        // The answer was lost: decided from the key's history (a change by
        // another client first is 40001 there, as below).
        Err(lost) => {
            resolve::decide_lost(&info, &guarded, &lost, &what);
            true
        }
    };
    if !succeeded {
        raise_with(
            PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
            format!(
                "could not serialize access: key \"{}\" was changed in etcd server \"{}\" after etcd_patroni_edit_config() read it",
                display_key(&key),
                info.server_name
            ),
            Some("Nothing was written: another client (patronictl, Patroni) changed the configuration.".into()),
            Some("Retry: the patch is merged into the configuration as it is then.".into()),
        );
    }
    JsonB(new)
}
