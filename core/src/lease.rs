//! etcd leases as the SQL functions show them: argument checks, how etcd
//! says "no such lease" on each call, and the messages naming a lease.

use crate::client::EtcdError;

/// The largest TTL etcd grants (its `lease.MaxLeaseTTL`, 9e9 s); a larger
/// one is refused with "too large lease TTL".
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// Why a TTL argument cannot be granted, or `None` when it can.
pub fn ttl_problem(ttl: i64) -> Option<String> {
    if ttl <= 0 {
        Some(format!(
            "argument \"ttl_seconds\" must be positive, got {ttl}"
        ))
    } else if ttl > MAX_LEASE_TTL {
        Some(format!(
            "argument \"ttl_seconds\" must be at most {MAX_LEASE_TTL} (etcd's largest lease TTL), got {ttl}"
        ))
    } else {
        None
    }
}

/// A lease id as etcd_fdw names it: decimal (SQL's bigint) and the hex
/// etcdctl shows, e.g. `123 (0x7b)`.
pub fn label(id: i64) -> String {
    format!("{id} ({id:#x})")
}

/// The message for a lease the server does not know.
pub fn not_found_message(id: i64, server: &str) -> String {
    format!(
        "etcd lease {} does not exist on server \"{server}\"",
        label(id)
    )
}

/// Whether etcd answered "requested lease not found" (LeaseRevoke; gRPC
/// NotFound).
pub fn is_not_found(e: &EtcdError) -> bool {
    matches!(
        e.root(),
        EtcdError::Status { code: tonic::Code::NotFound, message } if message.contains("lease not found")
    )
}

/// A keep-alive answer's TTL, or `None` when etcd does not know the lease
/// (it answers TTL 0 then, with no error).
pub fn keepalive_ttl(ttl: i64) -> Option<i64> {
    (ttl > 0).then_some(ttl)
}

/// A LeaseTimeToLive answer as (ttl, granted_ttl), or `None` for an
/// unknown lease: etcd answers TTL -1 and granted TTL 0 then, with no
/// error.  A lease that expired but is not revoked yet (the leader revokes
/// expired leases in the background) shows TTL 0.
pub fn time_to_live(ttl: i64, granted_ttl: i64) -> Option<(i64, i64)> {
    if ttl < 0 && granted_ttl <= 0 {
        None
    } else {
        Some((ttl.max(0), granted_ttl))
    }
}

/// Whether a revoke that etcd answered with "lease not found" has done
/// its job: on a retry (`attempt` > 1) an earlier attempt may have revoked
/// the lease before its answer was lost, so the lease being gone is the
/// outcome asked for; on the first attempt the lease never existed here
/// (or had expired or been revoked before).
pub fn revoke_not_found_is_done(attempt: u32) -> bool {
    attempt > 1
}

/// Why an attached key cannot be returned as SQL text, or `None` when it
/// can.
pub fn key_text_problem(key: &[u8]) -> Option<&'static str> {
    if key.contains(&0) {
        Some("contains a zero byte, which text cannot hold")
    } else if std::str::from_utf8(key).is_err() {
        Some("is not valid UTF-8")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_bounds() {
        assert!(ttl_problem(0).unwrap().contains("\"ttl_seconds\""));
        assert!(ttl_problem(-5).unwrap().contains("got -5"));
        assert_eq!(ttl_problem(1), None);
        assert_eq!(ttl_problem(MAX_LEASE_TTL), None);
        assert!(ttl_problem(MAX_LEASE_TTL + 1).unwrap().contains("at most"));
    }

    #[test]
    fn labels_show_decimal_and_hex() {
        assert_eq!(label(123), "123 (0x7b)");
        assert_eq!(
            not_found_message(7587869139421512203, "s"),
            "etcd lease 7587869139421512203 (0x694d86c7b15e420b) does not exist on server \"s\""
        );
    }

    #[test]
    fn not_found_only_for_etcds_lease_not_found() {
        let nf = EtcdError::Status {
            code: tonic::Code::NotFound,
            message: "etcdserver: requested lease not found".into(),
        };
        assert!(is_not_found(&nf));
        let retried = EtcdError::Retried {
            last: Box::new(nf),
            attempts: Default::default(),
        };
        assert!(is_not_found(&retried));
        assert!(!is_not_found(&EtcdError::Status {
            code: tonic::Code::Unavailable,
            message: "etcdserver: request timed out".into(),
        }));
        assert!(!is_not_found(&EtcdError::Other("lease not found".into())));
    }

    #[test]
    fn unknown_leases() {
        assert_eq!(keepalive_ttl(0), None);
        assert_eq!(keepalive_ttl(-1), None);
        assert_eq!(keepalive_ttl(10), Some(10));
        assert_eq!(time_to_live(-1, 0), None);
        assert_eq!(time_to_live(-1, 10), Some((0, 10)));
        assert_eq!(time_to_live(7, 10), Some((7, 10)));
    }

    #[test]
    fn a_retried_revoke_finding_no_lease_succeeded() {
        assert!(!revoke_not_found_is_done(1));
        assert!(revoke_not_found_is_done(2));
    }

    #[test]
    fn key_text() {
        assert_eq!(key_text_problem(b"a/b"), None);
        assert_eq!(key_text_problem("é".as_bytes()), None);
        assert!(key_text_problem(b"a\0b").unwrap().contains("zero byte"));
        assert!(key_text_problem(b"\xff").unwrap().contains("UTF-8"));
    }
}
