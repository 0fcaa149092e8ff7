//! The certificates a TLS server set-up uses, with their expiry: for
//! monitoring (an alert some days before one expires).

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};

use super::ServerName;
use crate::catalog::ServerInfo;
use crate::error::{raise_with, warning_with_hint};
use crate::runtime::block_on;
use etcd_fdw_core::certs::{self, CertInfo};
use etcd_fdw_core::cluster::join_all;

/// Seconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_UNIX: i64 = 946_684_800;

fn timestamptz(unix: i64) -> TimestampWithTimeZone {
    let micros = (unix - PG_EPOCH_UNIX).saturating_mul(1_000_000);
    TimestampWithTimeZone::try_from(micros).unwrap_or_else(|_| {
        if unix < 0 {
            TimestampWithTimeZone::negative_infinity()
        } else {
            TimestampWithTimeZone::positive_infinity()
        }
    })
}

/// Only a superuser or a member of the server's owning role: the function
/// reads files the server options name and the configured client
/// certificate is presented to the endpoints.
fn check_owner(info: &ServerInfo) {
    // SAFETY: GetForeignServer raises for a missing server (resolve() found
    // it); superuser() and GetUserId() have no preconditions; the role
    // membership check reads catalogs.
    let allowed = unsafe {
        let s = pg_sys::GetForeignServer(info.server_oid);
        pg_sys::superuser() || pg_sys::has_privs_of_role(pg_sys::GetUserId(), (*s).owner)
    };
    if !allowed {
        raise_with(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!(
                "permission denied to read the certificates of server \"{}\"",
                info.server_name
            ),
            None,
            Some(
                "Only a superuser or the owner of the server may call etcd_certificates().".into(),
            ),
        );
    }
}

/// Every certificate the server's TLS set-up uses: each one in the
/// `ssl_ca` file (source `ssl_ca`), in the `ssl_cert` file (source
/// `ssl_cert`), and the chain each TLS endpoint presents (source: the
/// endpoint's URL), fetched concurrently without verifying it, each within
/// `request_timeout`.  An endpoint that cannot be reached is a WARNING and
/// no rows; a server without TLS has no rows (and a NOTICE says why).
#[pg_extern(strict, volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn etcd_certificates(
    server: ServerName,
) -> TableIterator<
    'static,
    (
        name!(source, String),
        name!(subject, String),
        name!(issuer, String),
        name!(not_before, TimestampWithTimeZone),
        name!(not_after, TimestampWithTimeZone),
        name!(days_left, i32),
    ),
> {
    let info = server.resolve();
    check_owner(&info);
    let opts = &info.options;
    let name = &info.server_name;
    let mut found: Vec<(String, CertInfo)> = Vec::new();
    for (option, path) in [("ssl_ca", &opts.ssl_ca), ("ssl_cert", &opts.ssl_cert)] {
        let Some(path) = path else { continue };
        match certs::file_certificates(option, path) {
            Ok(list) => found.extend(list.into_iter().map(|c| (option.to_string(), c))),
            Err(why) => raise_with(
                PgSqlErrorCode::ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION,
                why,
                Some(format!("reading the certificates of server \"{name}\"")),
                None,
            ),
        }
    }
    let endpoints = certs::tls_endpoints(opts);
    if endpoints.is_empty() && found.is_empty() {
        pgrx::notice!("server \"{name}\" does not use TLS: it has no certificates to show");
    }
    let timeout = opts.request_timeout;
    let chains = block_on(join_all(
        endpoints
            .iter()
            .map(|ep| certs::peer_chain(opts, ep, timeout))
            .collect(),
    ));
    for (ep, chain) in endpoints.iter().zip(chains) {
        let url = ep.url(true);
        match chain {
            Ok(list) => found.extend(list.into_iter().map(|c| (url.clone(), c))),
            Err(why) => warning_with_hint(
                PgSqlErrorCode::ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION,
                format!(
                    "could not get the certificates of endpoint {url} of server \"{name}\": {why}"
                ),
                "The endpoint has no rows; etcd_status() shows which endpoints answer.".into(),
            ),
        }
    }
    // days_left is counted from the statement's start, PostgreSQL's own
    // statement_timestamp(): one "now" for every row, and the same clock a
    // query comparing not_after with statement_timestamp() reads.
    // SAFETY: reads a backend global set at the start of every statement.
    let statement_start = unsafe { pg_sys::GetCurrentStatementStartTimestamp() };
    let now = statement_start.saturating_add(PG_EPOCH_UNIX * 1_000_000);
    TableIterator::new(found.into_iter().map(move |(source, c)| {
        let days = c.days_left(now);
        (
            source,
            c.subject,
            c.issuer,
            timestamptz(c.not_before),
            timestamptz(c.not_after),
            days,
        )
    }))
}
