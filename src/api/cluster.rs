//! The cluster as a whole: its current revision.

use pgrx::prelude::*;

use super::ServerName;
use crate::connection;
use etcd_fdw_core::client::EtcdError;
use etcd_fdw_core::etcd_client::GetOptions;

/// The cluster's current revision (a starting point for `etcd_watch`): the
/// header of a one-key count-only read.
#[pg_extern(strict, volatile, parallel_unsafe)]
fn etcd_revision(server: ServerName) -> i64 {
    let info = server.resolve();
    connection::with_client_retry(
        &info,
        &|| format!("reading the revision of server \"{}\"", info.server_name),
        |mut client| async move {
            let resp = client
                .get(
                    vec![0u8],
                    Some(GetOptions::new().with_count_only().with_limit(1)),
                )
                .await
                .map_err(EtcdError::from)?;
            Ok(resp.header().map_or(0, |h| h.revision()))
        },
    )
}
