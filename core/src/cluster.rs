//! The cluster as etcd reports it: member ids as etcdctl prints them, the
//! status of each endpoint (asked separately and concurrently, so that a
//! dead member costs its own row, not the others' time), alarm names.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use etcd_client::{AlarmType, StatusResponse};

use crate::client::{self, EtcdError};
use crate::options::ServerOptions;

/// A member id as `etcdctl member list` prints it: lowercase hex, no `0x`
/// (e.g. `8e9e05c52164694d`).
pub fn member_id_hex(id: u64) -> String {
    format!("{id:x}")
}

/// The leader's id in hex, `None` when the member knows no leader (0).
pub fn leader_hex(leader: u64) -> Option<String> {
    (leader != 0).then(|| member_id_hex(leader))
}

/// An alarm's name as etcdctl prints it (`NOSPACE`, `CORRUPT`).
pub fn alarm_name(alarm: AlarmType) -> &'static str {
    alarm.as_str_name()
}

/// What one member said about itself (`Maintenance.Status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    pub member_id: String,
    pub version: String,
    pub db_size: i64,
    /// Bytes of the database in use (etcd 3.4 and later; 0 from older ones).
    pub db_size_in_use: i64,
    pub leader: Option<String>,
    pub is_leader: bool,
    pub raft_term: i64,
    pub raft_index: i64,
    /// etcd's own errors (e.g. an alarm, "etcdserver: no leader").
    pub errors: Vec<String>,
}

impl MemberStatus {
    /// From the raw fields of a status answer.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        member_id: u64,
        version: &str,
        db_size: i64,
        db_size_in_use: i64,
        leader: u64,
        raft_term: u64,
        raft_index: u64,
        errors: &[String],
    ) -> Self {
        MemberStatus {
            member_id: member_id_hex(member_id),
            version: version.to_string(),
            db_size,
            db_size_in_use,
            leader: leader_hex(leader),
            is_leader: leader != 0 && leader == member_id,
            // raft's counters are u64; bigint holds any value a cluster reaches
            raft_term: i64::try_from(raft_term).unwrap_or(i64::MAX),
            raft_index: i64::try_from(raft_index).unwrap_or(i64::MAX),
            errors: errors.to_vec(),
        }
    }

    pub fn from_response(resp: &StatusResponse) -> Self {
        MemberStatus::new(
            resp.header().map_or(0, |h| h.member_id()),
            resp.version(),
            resp.db_size(),
            resp.raft_used_db_size(),
            resp.leader(),
            resp.raft_term(),
            resp.raft_index(),
            resp.errors(),
        )
    }
}

/// One endpoint of a server's `connstr` and what it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointStatus {
    /// As written in `connstr`.
    pub endpoint: String,
    /// Ok: the member's status; Err: why it could not be asked.
    pub status: Result<MemberStatus, String>,
}

/// Poll every future of `futs` concurrently (on the caller's task) until
/// all are done; their outputs in order.  (`futures::join_all` without the
/// dependency.)
pub async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future completed"))
        .collect()
}

/// Ask endpoint `index` of `opts` alone (its own connection, with the
/// server's TLS and authentication) for its status, within `timeout`.
pub async fn endpoint_status(
    opts: &ServerOptions,
    index: usize,
    timeout: Duration,
) -> EndpointStatus {
    let asking = async {
        let connected = client::connect_in_order(opts, &[index]).await?;
        let mut c = connected.client;
        c.status().await.map_err(EtcdError::from)
    };
    let endpoint = opts.endpoints[index].to_string();
    let status = match tokio::time::timeout(timeout, asking).await {
        Ok(Ok(resp)) => Ok(MemberStatus::from_response(&resp)),
        Ok(Err(e)) => Err(one_endpoint_error(&endpoint, &e)),
        Err(_) => Err(format!("no answer within {timeout:?} (request_timeout)")),
    };
    EndpointStatus { endpoint, status }
}

/// `e`, met asking `endpoint` alone, without the list of every endpoint
/// the connect errors carry (the row already names its endpoint).
fn one_endpoint_error(endpoint: &str, e: &EtcdError) -> String {
    match e {
        EtcdError::Connect { detail, .. } => {
            let prefix = format!("{endpoint}: ");
            format!(
                "could not connect: {}",
                detail.strip_prefix(&prefix).unwrap_or(detail)
            )
        }
        EtcdError::Auth { user, detail, .. } => {
            format!("etcd authentication failed for user \"{user}\": {detail}")
        }
        e => e.to_string(),
    }
}

/// [`endpoint_status`] of every endpoint of `opts`, concurrently: the
/// whole call takes at most about `timeout`, however many are dead.
pub async fn endpoints_status(opts: &ServerOptions, timeout: Duration) -> Vec<EndpointStatus> {
    let asks = (0..opts.endpoints.len())
        .map(|i| endpoint_status(opts, i, timeout))
        .collect();
    join_all(asks).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_printed_like_etcdctl() {
        assert_eq!(member_id_hex(0x8e9e05c52164694d), "8e9e05c52164694d");
        assert_eq!(member_id_hex(0xabc), "abc");
        assert_eq!(member_id_hex(u64::MAX), "ffffffffffffffff");
        assert_eq!(leader_hex(0), None);
        assert_eq!(leader_hex(255).as_deref(), Some("ff"));
    }

    #[test]
    fn alarms_are_named_like_etcdctl() {
        assert_eq!(alarm_name(AlarmType::Nospace), "NOSPACE");
        assert_eq!(alarm_name(AlarmType::Corrupt), "CORRUPT");
    }

    #[test]
    fn status_fields() {
        let s = MemberStatus::new(0x10, "3.5.1", 100, 50, 0x10, 3, 42, &[]);
        assert!(s.is_leader);
        assert_eq!(s.member_id, "10");
        assert_eq!(s.leader.as_deref(), Some("10"));
        assert_eq!((s.raft_term, s.raft_index), (3, 42));
        let f = MemberStatus::new(0x11, "3.4.23", 1, 1, 0x10, 3, u64::MAX, &["x".into()]);
        assert!(!f.is_leader);
        assert_eq!(f.raft_index, i64::MAX);
        assert_eq!(f.errors, vec!["x".to_string()]);
        let none = MemberStatus::new(0x11, "3.5.1", 1, 1, 0, 3, 1, &[]);
        assert!(!none.is_leader && none.leader.is_none());
    }

    #[test]
    fn join_all_runs_concurrently_and_keeps_order() {
        let rt = tokio_rt();
        let start = std::time::Instant::now();
        let out = rt.block_on(join_all(
            [300u64, 100, 200]
                .into_iter()
                .map(|ms| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    ms
                })
                .collect(),
        ));
        assert_eq!(out, vec![300, 100, 200]);
        assert!(
            start.elapsed() < Duration::from_millis(550),
            "{:?}",
            start.elapsed()
        );
        assert!(rt
            .block_on(join_all(Vec::<std::future::Ready<u8>>::new()))
            .is_empty());
    }

    #[test]
    fn a_dead_endpoint_is_a_row_not_a_failure() {
        // Port 1 on loopback: nobody listens (connection refused at once).
        let opts = crate::options::parse_server(
            &[
                ("connstr".into(), "127.0.0.1:1,http://127.0.0.1:1".into()),
                ("connect_timeout".into(), "1".into()),
            ],
            &[],
        )
        .unwrap();
        let rows = tokio_rt().block_on(endpoints_status(&opts, Duration::from_secs(2)));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].endpoint, "127.0.0.1:1");
        assert_eq!(rows[1].endpoint, "http://127.0.0.1:1");
        for r in rows {
            let e = r.status.unwrap_err();
            assert!(e.starts_with("could not connect: "), "{e}");
            assert!(!e.contains("127.0.0.1:1,"), "names only its endpoint: {e}");
        }
    }

    fn tokio_rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }
}
