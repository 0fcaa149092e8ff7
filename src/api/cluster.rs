//! The cluster as a whole: its current revision, members, each endpoint's
//! status, alarms, and compaction.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::ServerName;
use crate::connection;
use crate::error::{etcd_error, raise, raise_with};
use crate::runtime::block_on;
use etcd_fdw_core::client::{self, EtcdError};
use etcd_fdw_core::cluster::{self as core_cluster, alarm_name, member_id_hex};
use etcd_fdw_core::etcd_client::{AlarmAction, AlarmType, CompactionOptions, GetOptions};

/// The cluster's current revision (a starting point for `etcd_watch`): the
/// header of a one-key count-only read, or, for an etcd user who may not
/// read that key, of the endpoint's status.
#[pg_extern(strict, volatile, parallel_unsafe)]
fn etcd_revision(server: ServerName) -> i64 {
    let info = server.resolve();
    let what = || format!("reading the revision of server \"{}\"", info.server_name);
    let read = connection::try_with_retry_client(&info, |mut client| async move {
        let resp = client
            .get(
                vec![0u8],
                Some(GetOptions::new().with_count_only().with_limit(1)),
            )
            .await
            .map_err(EtcdError::from)?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    });
    match read {
        Ok(rev) => rev,
        Err(e)
            if crate::error::etcd_sqlstate(&e)
                == PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE =>
        {
            connection::with_client_retry(&info, &what, |mut client| async move {
                let resp = client.status().await.map_err(EtcdError::from)?;
                Ok(resp.header().map_or(0, |h| h.revision()))
            })
        }
        Err(e) => etcd_error(&e, &what()),
    }
}

/// The cluster's members as etcd lists them (`etcdctl member list`), ids in
/// hex; ordered by name, then id (a member added but not started yet has
/// no name).
#[pg_extern(strict, volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn etcd_members(
    server: ServerName,
) -> TableIterator<
    'static,
    (
        name!(id, String),
        name!(name, String),
        name!(peer_urls, Vec<String>),
        name!(client_urls, Vec<String>),
        name!(is_learner, bool),
    ),
> {
    let info = server.resolve();
    let mut members = connection::with_client_retry(
        &info,
        &|| format!("listing the members of server \"{}\"", info.server_name),
        |mut client| async move {
            let resp = client.member_list().await.map_err(EtcdError::from)?;
            Ok(resp
                .members()
                .iter()
                .map(|m| {
                    (
                        m.id(),
                        m.name().to_string(),
                        m.peer_urls().to_vec(),
                        m.client_urls().to_vec(),
                        m.is_learner(),
                    )
                })
                .collect::<Vec<_>>())
        },
    );
    members.sort_by(|a, b| (&a.1, a.0).cmp(&(&b.1, b.0)));
    TableIterator::new(
        members
            .into_iter()
            .map(|(id, name, peers, clients, learner)| {
                (member_id_hex(id), name, peers, clients, learner)
            }),
    )
}

/// One row per endpoint of the server's `connstr`, each asked for its
/// status on a connection of its own (concurrently, each within
/// `request_timeout`): an endpoint that does not answer is a row with
/// `reachable = false` and the reason in `errors`, not a failure.
#[pg_extern(strict, volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn etcd_status(
    server: ServerName,
) -> TableIterator<
    'static,
    (
        name!(endpoint, String),
        name!(reachable, bool),
        name!(version, Option<String>),
        name!(db_size, Option<i64>),
        name!(db_size_in_use, Option<i64>),
        name!(leader, Option<String>),
        name!(is_leader, Option<bool>),
        name!(raft_term, Option<i64>),
        name!(raft_index, Option<i64>),
        name!(errors, Vec<String>),
    ),
> {
    let info = server.resolve();
    connection::check_identity(&info);
    let rows = block_on(core_cluster::endpoints_status(
        &info.options,
        info.options.request_timeout,
    ));
    TableIterator::new(rows.into_iter().map(|r| match r.status {
        Ok(s) => (
            r.endpoint,
            true,
            Some(s.version),
            Some(s.db_size),
            Some(s.db_size_in_use),
            s.leader,
            Some(s.is_leader),
            Some(s.raft_term),
            Some(s.raft_index),
            s.errors,
        ),
        Err(why) => (
            r.endpoint,
            false,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            vec![why],
        ),
    }))
}

/// The cluster's active alarms (`etcdctl alarm list`): one row per member
/// and alarm (NOSPACE, CORRUPT); none, no rows.
#[pg_extern(strict, volatile, parallel_unsafe)]
fn etcd_alarms(
    server: ServerName,
) -> TableIterator<'static, (name!(member_id, String), name!(alarm, String))> {
    let info = server.resolve();
    let alarms = connection::with_client_retry(
        &info,
        &|| format!("listing the alarms of server \"{}\"", info.server_name),
        |mut client| async move {
            let resp = client
                .alarm(AlarmAction::Get, AlarmType::None, None)
                .await
                .map_err(EtcdError::from)?;
            Ok(resp
                .alarms()
                .iter()
                .map(|a| {
                    (
                        member_id_hex(a.member_id()),
                        alarm_name(a.alarm()).to_string(),
                    )
                })
                .collect::<Vec<_>>())
        },
    );
    TableIterator::new(alarms)
}

/// Compact etcd's history up to `revision` (`etcdctl compaction`): older
/// revisions can no longer be read or watched.  `physical`: wait until the
/// compaction is applied to the storage.  EXECUTE is revoked from PUBLIC.
#[pg_extern(strict, volatile, parallel_unsafe)]
fn etcd_compact(server: ServerName, revision: i64, physical: default!(bool, false)) {
    let info = server.resolve();
    if revision < 1 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "cannot compact server \"{}\" at revision {revision}: revisions start at 1",
                info.server_name
            ),
        );
    }
    let timeout = info.options.request_timeout;
    let result = connection::try_client(&info).and_then(|mut c| {
        let opts = physical.then(|| CompactionOptions::new().with_physical());
        block_on(async move { client::with_timeout(timeout, c.compact(revision, opts)).await })
    });
    let Err(e) = result else {
        return;
    };
    connection::note_error(&info, &e);
    let e = connection::identify(&info, e);
    let server = &info.server_name;
    if let EtcdError::Status { message, .. } = e.root() {
        if message.contains("future revision") {
            raise_with(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("cannot compact server \"{server}\" at revision {revision}: it is beyond the current revision"),
                Some(format!("etcd: {message}")),
                Some(format!("etcd_revision('{server}') returns the current revision.")),
            );
        }
        if message.contains("compacted") {
            raise_with(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("cannot compact server \"{server}\" at revision {revision}: it is already compacted"),
                Some(format!("etcd: {message}")),
                Some("Compact at a revision after the last compaction.".into()),
            );
        }
    }
    etcd_error(
        &e,
        &format!("compacting server \"{server}\" at revision {revision}"),
    )
}

pgrx::extension_sql!(
    "REVOKE EXECUTE ON FUNCTION etcd_compact(name, bigint, boolean) FROM PUBLIC;\n",
    name = "etcd_compact_revoke",
    requires = [etcd_compact],
);
