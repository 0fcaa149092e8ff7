//! When to send a failed request again, and how to report the attempts.
//!
//! [`Retrier`] decides, error by error, whether an idempotent request (a
//! read, or a write etcd certainly did not apply) is sent again and after
//! which wait; [`Attempts`] keeps a bounded summary of what went wrong, for
//! the DETAIL of the final error.  Pure logic: the clock is passed in (time
//! since the request began), so the rules are unit-tested here.
//!
//! The rules, in order:
//!
//! 1. A request etcd refused for want of a valid token (no token because
//!    the connection was made while etcd's authentication was off; a token
//!    it forgot; one from before a change of users) is sent once more at
//!    once on a new connection, which authenticates - when there are
//!    credentials to authenticate with ([`EtcdError::needs_token`]).
//! 2. Errors that waiting cannot cure are final
//!    ([`EtcdError::retryable`]: a refusal, a wrong address in a session
//!    that never reached the cluster, ...).
//! 3. When every endpoint refuses the TCP connection (nothing listens on
//!    any of them: the whole cluster is down, or one member being
//!    restarted), the request is tried again only within `connect_timeout`
//!    of the first such round: long enough for a member that restarts at
//!    once, and an open session gives up about as soon as a new one would
//!    (which fails at the first refusal) instead of waiting for the whole
//!    `request_timeout`.
//! 4. Anything else that waiting may cure (no leader, an election, a
//!    member that accepts connections but does not answer, one restarting
//!    while others answer) is tried again with backoff until
//!    `request_timeout` is used up.

use std::time::Duration;

use crate::client::{Backoff, EtcdError};
use crate::options::ServerOptions;

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Drop the connection and send the request again now, on a new
    /// connection that authenticates (rule 1).
    Reauthenticate,
    /// Send it again on a new connection after this wait.
    RetryAfter(Duration),
    /// Report the error.
    GiveUp,
}

/// The retry rules of one request (see the module documentation).
#[derive(Debug)]
pub struct Retrier {
    /// `request_timeout`: the whole request's budget.
    budget: Duration,
    /// `connect_timeout`: how long a cluster that refuses every
    /// connection is waited for.
    refused_grace: Duration,
    endpoints: usize,
    /// The request has a user name to authenticate with.
    credentials: bool,
    backoff: Backoff,
    /// When (time since the start) the current run of all-refused connect
    /// rounds began.
    refused_since: Option<Duration>,
    reauthenticated: bool,
}

impl Retrier {
    pub fn new(opts: &ServerOptions) -> Self {
        Self::with(
            opts.request_timeout,
            opts.connect_timeout,
            opts.endpoints.len(),
            opts.username.is_some(),
        )
    }

    pub fn with(
        request_timeout: Duration,
        connect_timeout: Duration,
        endpoints: usize,
        credentials: bool,
    ) -> Self {
        Retrier {
            budget: request_timeout,
            refused_grace: connect_timeout,
            endpoints,
            credentials,
            backoff: Backoff::default(),
            refused_since: None,
            reauthenticated: false,
        }
    }

    /// What to do after attempt error `e`, `elapsed` after the request
    /// began.  `was_connected`: the session reached the cluster before.
    pub fn step(&mut self, e: &EtcdError, elapsed: Duration, was_connected: bool) -> Step {
        if self.credentials && e.needs_token() && !self.reauthenticated {
            self.reauthenticated = true;
            return Step::Reauthenticate;
        }
        if !e.retryable(self.endpoints, was_connected) {
            return Step::GiveUp;
        }
        let deadline = if e.all_refused() {
            let since = *self.refused_since.get_or_insert(elapsed);
            self.budget.min(since + self.refused_grace)
        } else {
            self.refused_since = None;
            self.budget
        };
        match self.backoff.next_delay_before(elapsed, deadline) {
            Some(d) => Step::RetryAfter(d),
            None => Step::GiveUp,
        }
    }
}

/// The longest a reason is quoted in a summary.
const MAX_REASON: usize = 120;
/// The longest a summary of the reasons gets (the DETAIL adds the
/// request's context to it).
const MAX_SUMMARY: usize = 640;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Reason {
    endpoint: String,
    reason: String,
    times: usize,
}

/// The attempts of one request: how many, over how long, and each
/// distinct (endpoint, reason) once with how often it occurred.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempts {
    count: usize,
    elapsed: Duration,
    reasons: Vec<Reason>,
}

impl Attempts {
    /// Record a failed attempt: `e`, met on the connection to `endpoint`
    /// (a failed connect names each endpoint it tried instead).
    pub fn record(&mut self, endpoint: &str, e: &EtcdError) {
        self.count += 1;
        match e.root() {
            EtcdError::Connect { failures, .. } if !failures.is_empty() => {
                for f in failures {
                    let reason = if f.refused {
                        "connection refused".to_string()
                    } else {
                        f.reason.clone()
                    };
                    self.add(&f.endpoint, reason);
                }
            }
            EtcdError::Refused(_) => self.add(endpoint, "connection refused".into()),
            e => {
                let text = e.to_string();
                let text = text
                    .strip_prefix("etcd request failed: ")
                    .unwrap_or(&text)
                    .to_string();
                self.add(endpoint, text);
            }
        }
    }

    fn add(&mut self, endpoint: &str, reason: String) {
        let reason = shorten(&reason, MAX_REASON);
        match self
            .reasons
            .iter_mut()
            .find(|r| r.endpoint == endpoint && r.reason == reason)
        {
            Some(r) => r.times += 1,
            None => self.reasons.push(Reason {
                endpoint: endpoint.to_string(),
                reason,
                times: 1,
            }),
        }
    }

    /// Set the time the attempts took.
    pub fn finish(&mut self, elapsed: Duration) {
        self.elapsed = elapsed;
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// `6 attempts over 2.1 s: 127.0.0.1:2379: connection refused (x6)`:
    /// each endpoint once, with its distinct reasons in the order they
    /// first occurred (`a:1: transport error, connection refused (x5)`),
    /// at most about `MAX_SUMMARY` bytes long.
    pub fn summary(&self) -> String {
        let mut endpoints: Vec<(&str, Vec<String>)> = Vec::new();
        for r in &self.reasons {
            let mut piece = r.reason.clone();
            if r.times > 1 {
                piece.push_str(&format!(" (x{})", r.times));
            }
            match endpoints.iter_mut().find(|(e, _)| *e == r.endpoint) {
                Some((_, pieces)) => pieces.push(piece),
                None => endpoints.push((&r.endpoint, vec![piece])),
            }
        }
        let mut out = format!(
            "{} attempts over {:.1} s: ",
            self.count,
            self.elapsed.as_secs_f64()
        );
        let head = out.len();
        let mut left_out = 0;
        for (endpoint, pieces) in endpoints {
            let mut part = format!("{endpoint}: ");
            let mut first = true;
            for p in pieces {
                if left_out > 0 || out.len() + part.len() + p.len() + 2 > head + MAX_SUMMARY {
                    left_out += 1;
                    continue;
                }
                if !first {
                    part.push_str(", ");
                }
                part.push_str(&p);
                first = false;
            }
            if first {
                continue; // nothing of this endpoint fitted
            }
            if out.len() > head {
                out.push_str("; ");
            }
            out.push_str(&part);
        }
        if left_out > 0 {
            out.push_str(&format!("; and {left_out} other reason(s)"));
        }
        out
    }
}

/// `s` cut to at most `max` bytes (on a character boundary), with "..."
/// when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ConnectFailure;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn refused(endpoints: &[&str]) -> EtcdError {
        EtcdError::Connect {
            endpoints: endpoints.join(","),
            detail: String::new(),
            failures: endpoints
                .iter()
                .map(|e| ConnectFailure {
                    endpoint: e.to_string(),
                    reason: "transport error: tcp connect error: Connection refused (os error 111)"
                        .into(),
                    refused: true,
                })
                .collect(),
        }
    }

    fn status(code: tonic::Code, m: &str) -> EtcdError {
        EtcdError::Status {
            code,
            message: m.to_string(),
        }
    }

    /// Run the retrier on `errors(i)` for attempt i, each attempt taking
    /// `attempt` of time; returns (attempts made, time when it gave up).
    fn run(
        r: &mut Retrier,
        attempt: Duration,
        errors: impl Fn(usize) -> EtcdError,
    ) -> (usize, Duration) {
        let mut now = Duration::ZERO;
        for i in 0.. {
            now += attempt;
            match r.step(&errors(i), now, true) {
                Step::GiveUp => return (i + 1, now),
                Step::RetryAfter(d) => now += d,
                Step::Reauthenticate => {}
            }
        }
        unreachable!()
    }

    #[test]
    fn a_cluster_refusing_everywhere_is_waited_for_connect_timeout_only() {
        let mut r = Retrier::with(Duration::from_secs(30), Duration::from_secs(2), 3, false);
        let (n, at) = run(&mut r, ms(1), |_| refused(&["a:1", "b:2", "c:3"]));
        assert!(at < Duration::from_secs(2) + ms(10), "gave up at {at:?}");
        assert!(at > Duration::from_secs(1), "gave up at {at:?}");
        assert!(n > 3, "{n} attempts");
    }

    #[test]
    fn the_refused_grace_starts_at_the_first_refused_round() {
        // First the cached connection breaks (Unavailable) for 5 s, then
        // every connect is refused: 2 s more at most.
        let mut r = Retrier::with(Duration::from_secs(30), Duration::from_secs(2), 1, false);
        let mut now = Duration::ZERO;
        let mut first_refused = None;
        loop {
            now += ms(1);
            let e = if now < Duration::from_secs(5) {
                status(tonic::Code::Unavailable, "etcdserver: no leader")
            } else {
                first_refused.get_or_insert(now);
                refused(&["a:1"])
            };
            match r.step(&e, now, true) {
                Step::RetryAfter(d) => now += d,
                Step::GiveUp => break,
                Step::Reauthenticate => unreachable!(),
            }
        }
        let since = now - first_refused.unwrap();
        assert!(since < Duration::from_secs(2) + ms(10), "{since:?}");
    }

    #[test]
    fn elections_and_hung_members_use_the_whole_request_timeout() {
        let mut r = Retrier::with(Duration::from_secs(10), Duration::from_secs(2), 3, false);
        let (_, at) = run(&mut r, ms(1), |_| {
            status(tonic::Code::Unavailable, "etcdserver: no leader")
        });
        assert!(
            at > Duration::from_secs(9) && at < Duration::from_secs(10),
            "{at:?}"
        );

        // one member refuses, another times out connecting: something is
        // there, wait for it
        let mixed = || EtcdError::Connect {
            endpoints: "a:1,b:2".into(),
            detail: String::new(),
            failures: vec![
                ConnectFailure {
                    endpoint: "a:1".into(),
                    reason: "refused".into(),
                    refused: true,
                },
                ConnectFailure {
                    endpoint: "b:2".into(),
                    reason: "connecting timed out".into(),
                    refused: false,
                },
            ],
        };
        let mut r = Retrier::with(Duration::from_secs(10), Duration::from_secs(2), 2, false);
        let (_, at) = run(&mut r, ms(1), |_| mixed());
        assert!(at > Duration::from_secs(9), "{at:?}");
    }

    #[test]
    fn a_new_session_gives_up_at_once_when_refused() {
        let mut r = Retrier::with(Duration::from_secs(30), Duration::from_secs(2), 1, false);
        assert_eq!(r.step(&refused(&["a:1"]), ms(1), false), Step::GiveUp);
    }

    #[test]
    fn missing_tokens_reauthenticate_once_with_credentials() {
        for m in [
            "etcdserver: user name is empty",
            "etcdserver: revision of auth store is old",
        ] {
            let e = status(tonic::Code::InvalidArgument, m);
            assert!(e.needs_token(), "{m}");
            let mut r = Retrier::with(Duration::from_secs(30), Duration::from_secs(2), 1, true);
            assert_eq!(r.step(&e, ms(1), true), Step::Reauthenticate, "{m}");
            // once: the same answer after authenticating again is final
            assert_eq!(r.step(&e, ms(2), true), Step::GiveUp, "{m}");
            // without credentials, authenticating cannot help
            let mut r = Retrier::with(Duration::from_secs(30), Duration::from_secs(2), 1, false);
            assert_eq!(r.step(&e, ms(1), true), Step::GiveUp, "{m}");
        }
        let invalid = status(
            tonic::Code::Unauthenticated,
            "etcdserver: invalid auth token",
        );
        assert!(invalid.needs_token() && invalid.definitely_not_applied());
        let mut r = Retrier::with(Duration::from_secs(30), Duration::from_secs(2), 1, true);
        assert_eq!(r.step(&invalid, ms(1), true), Step::Reauthenticate);
        assert!(matches!(r.step(&invalid, ms(2), true), Step::RetryAfter(_)));
        // other refusals are not about tokens
        assert!(!status(
            tonic::Code::PermissionDenied,
            "etcdserver: permission denied"
        )
        .needs_token());
        assert!(!status(
            tonic::Code::InvalidArgument,
            "etcdserver: key is not provided"
        )
        .needs_token());
    }

    #[test]
    fn the_summary_names_each_reason_once_and_is_bounded() {
        let mut a = Attempts::default();
        for _ in 0..34 {
            a.record("connecting", &refused(&["127.0.0.1:2379"]));
        }
        a.finish(Duration::from_millis(2049));
        assert_eq!(
            a.summary(),
            "34 attempts over 2.0 s: 127.0.0.1:2379: connection refused (x34)"
        );

        let mut a = Attempts::default();
        a.record(
            "127.0.0.1:1",
            &status(tonic::Code::Unavailable, "etcdserver: no leader"),
        );
        a.record("connecting", &refused(&["127.0.0.1:1", "127.0.0.1:2"]));
        a.record("connecting", &refused(&["127.0.0.1:1", "127.0.0.1:2"]));
        a.finish(Duration::from_millis(350));
        assert_eq!(
            a.summary(),
            "3 attempts over 0.3 s: 127.0.0.1:1: etcdserver: no leader, \
             connection refused (x2); 127.0.0.1:2: connection refused (x2)"
        );
        assert_eq!(a.count(), 3);

        // many distinct, long reasons: still short
        let mut a = Attempts::default();
        for i in 0..200 {
            a.record(
                &format!("10.0.0.{i}:2379"),
                &EtcdError::Other(format!("{i} {}", "x".repeat(500))),
            );
        }
        let s = a.summary();
        assert!(s.len() < MAX_SUMMARY + 80, "{} bytes", s.len());
        assert!(s.ends_with("other reason(s)"), "{s}");
        assert!(
            s.starts_with("200 attempts over 0.0 s: 10.0.0.0:2379: 0 xxx"),
            "{s}"
        );
    }

    #[test]
    fn shorten_cuts_on_char_boundaries() {
        assert_eq!(shorten("abc", 10), "abc");
        assert_eq!(shorten("abcdefghij", 8), "abcde...");
        let s = "ééééé"; // 10 bytes
        assert_eq!(shorten(s, 8), "éé...");
    }
}
