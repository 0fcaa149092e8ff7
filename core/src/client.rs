//! Connecting to etcd and talking to it: endpoint probing with TLS and
//! authentication, and the range/txn calls the FDW makes.  Async, with no
//! runtime of its own: the PostgreSQL layer drives these futures on its
//! per-backend runtime (and the benchmark's raw client on its own).

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};
use tonic::transport::Endpoint;

use crate::options::ServerOptions;

/// What went wrong talking to etcd.  The PostgreSQL layer maps each kind to
/// a SQLSTATE; messages never contain a password.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("could not connect to etcd at {endpoints}: {detail}")]
    Connect {
        endpoints: String,
        detail: String,
        /// Each endpoint tried and why it failed (empty for an address
        /// that cannot be used at all).
        failures: Vec<ConnectFailure>,
    },
    #[error("could not load {option} file \"{path}\": {detail}")]
    TlsFile {
        option: &'static str,
        path: String,
        detail: String,
    },
    #[error("etcd authentication failed for user \"{user}\" at {endpoints}: {detail}")]
    Auth {
        user: String,
        endpoints: String,
        detail: String,
    },
    #[error("etcd request timed out after {0:?}")]
    Timeout(Duration),
    #[error("etcd request failed: {message}")]
    Status { code: tonic::Code, message: String },
    #[error("etcd request failed: {0}")]
    Other(String),
    /// A request on an open connection whose member went away: reconnecting
    /// to it was refused (nothing listens there any more), so the request
    /// was never sent.
    #[error("etcd request failed: the connection was refused: {0}")]
    Refused(String),
    /// An idempotent request tried more than once until the retry rules
    /// (crate::retry::Retrier) gave up: the last error, and a summary of
    /// the attempts.
    #[error("{last}")]
    Retried {
        last: Box<EtcdError>,
        attempts: crate::retry::Attempts,
    },
    /// etcd has authentication enabled and the request carried no user:
    /// no user mapping (or one without `username`) for server `server`.
    #[error("etcd server \"{server}\" has authentication enabled and no etcd user name was given: {detail}")]
    NoUser { server: String, detail: String },
    /// etcd got a request without a user although etcd_fdw had logged in
    /// as `user` (again, after the first such answer): something between
    /// them drops the login, such as etcd's gRPC proxy.
    #[error("etcd server \"{server}\" received the request without the login of etcd user \"{user}\": {detail}")]
    LoginNotPassedOn {
        server: String,
        user: String,
        detail: String,
    },
}

/// Why one endpoint could not be connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectFailure {
    pub endpoint: String,
    pub reason: String,
    /// Nothing listens there: the TCP connect was refused.
    pub refused: bool,
}

/// Whether an error (or one of its sources) is a refused TCP connect
/// (ECONNREFUSED: nothing listens on the port).
pub fn is_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        cur = err.source();
    }
    // hyper/tonic may flatten the io::Error into text
    error_chain(e).contains("Connection refused")
}

/// etcd's answers to a request without a valid token for its user: the
/// request was refused before anything was applied (see
/// [`EtcdError::needs_token`]).
const TOKEN_ERRORS: [&str; 3] = [
    // ErrUserEmpty: no token at all (the connection was made while
    // authentication was off)
    "etcdserver: user name is empty",
    // ErrInvalidAuthToken: a token etcd does not know (it forgot its
    // tokens when authentication was disabled, or restarted)
    "etcdserver: invalid auth token",
    // ErrAuthOldRevision: the token predates a change of users or roles
    "etcdserver: revision of auth store is old",
];

impl EtcdError {
    /// The error itself, under any [`EtcdError::Retried`] wrapper.
    pub fn root(&self) -> &EtcdError {
        match self {
            EtcdError::Retried { last, .. } => last.root(),
            e => e,
        }
    }

    /// Whether the connection itself is suspect (drop it from the cache).
    pub fn breaks_connection(&self) -> bool {
        match self.root() {
            EtcdError::Connect { .. }
            | EtcdError::Timeout(_)
            | EtcdError::Other(_)
            | EtcdError::Refused(_) => true,
            EtcdError::Status { code, message } => {
                matches!(
                    code,
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                ) || message.contains("invalid auth token")
            }
            _ => false,
        }
    }

    /// Whether etcd refused the request for want of a valid token: no
    /// token (the connection was made while etcd's authentication was
    /// off, or there is no user), a token it no longer knows, or one from
    /// before a change of its users and roles.  With a user name and
    /// password, authenticating again on a new connection and sending the
    /// request once more is what etcd's own client (clientv3's
    /// shouldRefreshToken) does, for writes too: etcd checks the token
    /// before proposing a write (invalid token) or, when applying it,
    /// before touching the key-value store (no user, old auth revision),
    /// so a write refused this way was not applied.
    pub fn needs_token(&self) -> bool {
        match self.root() {
            EtcdError::Status { code, message } => {
                matches!(
                    code,
                    tonic::Code::InvalidArgument | tonic::Code::Unauthenticated
                ) && TOKEN_ERRORS.iter().any(|m| message.contains(m))
            }
            _ => false,
        }
    }

    /// etcd has no user for the request: "user name is empty".
    pub fn user_empty(&self) -> bool {
        matches!(self.root(), EtcdError::Status { message, .. } if message.contains(TOKEN_ERRORS[0]))
    }

    /// A connect that failed because every endpoint refused the TCP
    /// connection: nothing listens on any of them.
    pub fn all_refused(&self) -> bool {
        match self.root() {
            EtcdError::Connect { failures, .. } => {
                !failures.is_empty() && failures.iter().all(|f| f.refused)
            }
            _ => false,
        }
    }

    /// `Some(size)` when the answer was larger than the client accepts
    /// (tonic refuses to decode it; `size` is what etcd sent, when the
    /// message says): the request must ask for less.
    pub fn response_too_large(&self) -> Option<Option<u64>> {
        let EtcdError::Status { code, message } = self.root() else {
            return None;
        };
        if *code != tonic::Code::OutOfRange || !message.contains("message length too large") {
            return None;
        }
        let found = message
            .split("found ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok());
        Some(found)
    }

    /// Whether etcd refused a read at a revision its history no longer
    /// holds (compacted).
    pub fn compacted(&self) -> bool {
        matches!(self.root(), EtcdError::Status { code, message }
            if *code == tonic::Code::OutOfRange && message.contains("required revision has been compacted"))
    }

    /// Whether a write certainly did not take effect: it was never sent,
    /// or etcd answered with an error it gives only without applying
    /// anything.  A timeout, a broken connection, `Unavailable` (which
    /// includes etcd's own "request timed out") may hide an applied write.
    pub fn definitely_not_applied(&self) -> bool {
        match self.root() {
            EtcdError::Connect { .. }
            | EtcdError::TlsFile { .. }
            | EtcdError::Auth { .. }
            | EtcdError::NoUser { .. }
            | EtcdError::LoginNotPassedOn { .. }
            | EtcdError::Refused(_) => true,
            EtcdError::Status { code, .. } => matches!(
                code,
                tonic::Code::InvalidArgument
                    | tonic::Code::PermissionDenied
                    | tonic::Code::Unauthenticated
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::OutOfRange
                    | tonic::Code::NotFound
                    | tonic::Code::AlreadyExists
            ),
            EtcdError::Timeout(_) | EtcdError::Other(_) | EtcdError::Retried { .. } => false,
        }
    }

    /// Whether an idempotent request may be tried again, after a backoff,
    /// on a new connection (the next endpoint first): the member went away
    /// (the connection broke, or it is unavailable: no leader, leader
    /// changed, etcd's own "request timed out"), the auth token expired,
    /// or, when there are other members to try (`endpoints > 1`), it
    /// stopped answering.  `was_connected`: this backend reached the
    /// cluster before, so failing to connect now is an outage to wait out
    /// (members restarting) rather than a wrong address.
    pub fn retryable(&self, endpoints: usize, was_connected: bool) -> bool {
        match self.root() {
            EtcdError::Status { code, message } => {
                *code == tonic::Code::Unavailable
                    // a stream cut when its member died mid-request
                    || *code == tonic::Code::Cancelled
                    || (*code == tonic::Code::Unknown && message.contains("transport error"))
                    || message.contains("invalid auth token")
            }
            EtcdError::Other(_) | EtcdError::Refused(_) => true,
            EtcdError::Timeout(_) => endpoints > 1,
            EtcdError::Connect { .. } => was_connected,
            _ => false,
        }
    }

    /// The attempts of a retried request (`None`: it was sent once).
    pub fn attempts(&self) -> Option<&crate::retry::Attempts> {
        match self {
            EtcdError::Retried { attempts, .. } => Some(attempts),
            _ => None,
        }
    }
}

/// The waits between attempts of an idempotent request: 50 ms, doubling
/// up to 1 s (an etcd election takes about one election timeout, 1 s by
/// default; a restarted member a few seconds).
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(50),
        }
    }
}

impl Backoff {
    pub const MAX: Duration = Duration::from_secs(1);

    /// The wait before the next attempt, or `None` when it would end
    /// at or after `budget` from `start` (give up instead).
    pub fn next_delay_within(
        &mut self,
        start: std::time::Instant,
        budget: Duration,
    ) -> Option<Duration> {
        self.next_delay_before(start.elapsed(), budget)
    }

    /// The wait before the next attempt, or `None` when it would end at
    /// or after `deadline` (`elapsed`: time used so far).
    pub fn next_delay_before(&mut self, elapsed: Duration, deadline: Duration) -> Option<Duration> {
        let d = self.next_delay();
        (elapsed + d < deadline).then_some(d)
    }

    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }
}

/// The order to try endpoints in: those that have not failed first (in
/// connstr order), then the failed ones, longest ago first, so that a
/// member that failed recently is tried last but never skipped for good.
/// `failed_at[i]`: when endpoint `i` last failed (any monotonic stamp).
pub fn endpoint_order<T: Ord + Copy>(failed_at: &[Option<T>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..failed_at.len()).collect();
    // Stable: equal stamps (and all the never-failed ones) keep connstr order.
    order.sort_by_key(|&i| failed_at[i]);
    order
}

/// Full cause chain of an error, `a: b: c`, without repeats.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        cur = s.source();
    }
    parts.join(": ")
}

impl From<etcd_client::Error> for EtcdError {
    fn from(e: etcd_client::Error) -> Self {
        match e {
            // tonic's own status for a request it could not send: the
            // connection to the member broke and reconnecting was refused
            etcd_client::Error::GRpcStatus(s)
                if std::error::Error::source(&s).is_some_and(is_refused) =>
            {
                let source = std::error::Error::source(&s).map(error_chain);
                EtcdError::Refused(match source {
                    Some(src) if !s.message().is_empty() => format!("{}: {src}", s.message()),
                    Some(src) => src,
                    None => s.message().to_string(),
                })
            }
            // tonic's own statuses (a broken connection) carry their
            // cause: say it ("transport error" alone says little)
            etcd_client::Error::GRpcStatus(s) => EtcdError::Status {
                code: s.code(),
                message: match std::error::Error::source(&s).map(error_chain) {
                    Some(src) if src.starts_with(s.message()) => src,
                    Some(src) if !s.message().contains(&src) => {
                        format!("{}: {src}", s.message())
                    }
                    _ => s.message().to_string(),
                },
            },
            other => EtcdError::Other(error_chain(&other)),
        }
    }
}

/// Largest gRPC response the client accepts (tonic's default is 4 MiB; a
/// page of large values can exceed it).  This is also the hard byte bound
/// of a scan's page: a larger answer is refused by the client and the scan
/// asks again for fewer keys (adaptive pages aim at a quarter of it).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// HTTP/2 flow-control window per stream (a scan page is at most
/// `scan::PAGE_BYTES` of data plus framing).
const STREAM_WINDOW: u32 = 32 * 1024 * 1024;

/// Why one endpoint could not be used.
enum EndpointFailure {
    /// Unreachable, hung, or broken: try the next member.  `refused`:
    /// the TCP connect was refused (nothing listens there).
    Dead { why: String, refused: bool },
    /// The member answered and refused us (wrong password, TLS settings
    /// that cannot work): the same everywhere, so stop.
    Fatal(EtcdError),
}

/// Open a connection: try each endpoint in turn and keep the first that
/// completes TCP, TLS and HTTP/2 set-up *and answers* (authentication, or a
/// cheap serializable read) within `connect_timeout`.  A member that
/// accepts TCP but does not answer (paused, overloaded) is skipped like a
/// dead one; when every member fails, the error lists each one's reason.
pub async fn connect(opts: &ServerOptions) -> Result<Client, EtcdError> {
    let order: Vec<usize> = (0..opts.endpoints.len()).collect();
    connect_in_order(opts, &order).await.map(|c| c.client)
}

/// A connection and how it was made.
pub struct Connected {
    pub client: Client,
    /// Index (in `opts.endpoints`) of the member connected to.
    pub endpoint: usize,
    /// Endpoints tried first that did not answer.
    pub skipped: Vec<usize>,
}

/// [`connect`], trying the endpoints in `order` (indices into
/// `opts.endpoints`; see [`endpoint_order`]).
pub async fn connect_in_order(
    opts: &ServerOptions,
    order: &[usize],
) -> Result<Connected, EtcdError> {
    let tls = crate::tls::tls_setup(opts)?;
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    for &i in order {
        let ep = &opts.endpoints[i];
        match connect_endpoint(opts, ep, tls.as_ref()).await {
            Ok(client) => {
                return Ok(Connected {
                    client,
                    endpoint: i,
                    skipped,
                })
            }
            Err(EndpointFailure::Dead { why, refused }) => {
                failures.push(ConnectFailure {
                    endpoint: ep.to_string(),
                    reason: why,
                    refused,
                });
                skipped.push(i);
            }
            Err(EndpointFailure::Fatal(e)) => return Err(e),
        }
    }
    Err(EtcdError::Connect {
        endpoints: opts.endpoints_display(),
        detail: failures
            .iter()
            .map(|f| format!("{}: {}", f.endpoint, f.reason))
            .collect::<Vec<_>>()
            .join("; "),
        failures,
    })
}

async fn connect_endpoint(
    opts: &ServerOptions,
    ep: &crate::options::EtcdEndpoint,
    tls: Option<&crate::tls::TlsSetup>,
) -> Result<Client, EndpointFailure> {
    let timed_out = |what: &str| EndpointFailure::Dead {
        why: format!(
            "{what} timed out after {:?} (connect_timeout)",
            opts.connect_timeout
        ),
        refused: false,
    };
    let dead = |why: String| EndpointFailure::Dead {
        why,
        refused: false,
    };
    let url = ep.url(tls.is_some());
    let bad_endpoint = |e: &(dyn std::error::Error + 'static)| {
        EndpointFailure::Fatal(EtcdError::Connect {
            endpoints: ep.to_string(),
            detail: error_chain(e),
            failures: Vec::new(),
        })
    };
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| bad_endpoint(&e))?
        .connect_timeout(opts.connect_timeout)
        .tcp_nodelay(true)
        // HTTP/2's default 64 KiB flow-control window would make etcd
        // wait for a window update every 64 KiB of a scan's page.
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(2 * STREAM_WINDOW)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let connecting = async {
        match tls {
            // TLS with OpenSSL in our connector (see crate::tls).
            Some(tls) if url.starts_with("https://") => {
                endpoint
                    .connect_with_connector(crate::tls::TlsConnector::new(tls.clone()))
                    .await
            }
            _ => endpoint.connect().await,
        }
    };
    let channel = match tokio::time::timeout(opts.connect_timeout, connecting).await {
        Ok(Ok(ch)) => ch,
        Ok(Err(e)) => {
            return Err(EndpointFailure::Dead {
                why: error_chain(&e),
                refused: is_refused(&e),
            })
        }
        Err(_) => return Err(timed_out("connecting")),
    };
    let mut copts = ConnectOptions::new();
    if let Some(user) = &opts.username {
        copts = copts.with_user(user.clone(), opts.password.clone().unwrap_or_default());
    }
    // With a user, authenticating is the member's first answer.
    let connecting =
        Client::from_channel(etcd_client::Channel::Tonic(channel.clone()), Some(copts));
    let client = match tokio::time::timeout(opts.connect_timeout, connecting).await {
        Ok(Ok(c)) => c,
        // etcd's authentication is off (disabled, or never enabled): no
        // token is needed, so go on without one, as etcd's own client
        // does with ErrAuthNotEnabled.  Should it be enabled later, the
        // requests of this connection get "user name is empty" and are
        // sent again on a new, authenticated connection (needs_token).
        Ok(Err(e)) if auth_not_enabled(&e) => {
            Client::from_channel(etcd_client::Channel::Tonic(channel), None)
                .await
                .map_err(|e| dead(EtcdError::from(e).to_string()))?
        }
        Ok(Err(e)) => {
            return Err(match (EtcdError::from(e), &opts.username) {
                (EtcdError::Status { code, message }, Some(user))
                    if code != tonic::Code::Unavailable =>
                {
                    EndpointFailure::Fatal(EtcdError::Auth {
                        user: user.clone(),
                        endpoints: opts.endpoints_display(),
                        detail: message,
                    })
                }
                (e, _) => dead(e.to_string()),
            })
        }
        Err(_) => return Err(timed_out("authentication")),
    };
    if opts.username.is_none() {
        // Any gRPC answer (even "permission denied") proves the member is
        // alive; a serializable count of one key costs it next to nothing.
        let mut kv = client.kv_client();
        let probe = GetOptions::new()
            .with_count_only()
            .with_serializable()
            .with_limit(1);
        match tokio::time::timeout(opts.connect_timeout, kv.get(vec![0u8], Some(probe))).await {
            Ok(Ok(_)) => {}
            // tonic reports a connection that broke under the request
            // (reset, TLS alert) as a status of its own making, Unknown
            // or Unavailable: that is no answer from the member.
            Ok(Err(etcd_client::Error::GRpcStatus(s)))
                if !matches!(s.code(), tonic::Code::Unknown | tonic::Code::Unavailable) => {}
            Ok(Err(e)) => return Err(dead(error_chain(&e))),
            Err(_) => return Err(timed_out("waiting for an answer")),
        }
    }
    Ok(client)
}

/// etcd's answer to Authenticate while its authentication is off
/// (rpctypes.ErrGRPCAuthNotEnabled, FailedPrecondition).
fn auth_not_enabled(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.message().contains("authentication is not enabled"))
}

/// Run one request future under `request_timeout`.
pub async fn with_timeout<T, F>(timeout: Duration, fut: F) -> Result<T, EtcdError>
where
    F: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(EtcdError::from),
        Err(_) => Err(EtcdError::Timeout(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_that_failed_recently_go_last() {
        assert_eq!(endpoint_order::<u32>(&[None, None, None]), vec![0, 1, 2]);
        // 0 failed at 5, 2 at 3: never-failed 1 first, then 2 (longer ago), then 0
        assert_eq!(endpoint_order(&[Some(5), None, Some(3)]), vec![1, 2, 0]);
        // B (1) failed after A (0): back to A first
        assert_eq!(endpoint_order(&[Some(1), Some(2)]), vec![0, 1]);
    }

    #[test]
    fn backoff_doubles_up_to_a_second() {
        let mut b = Backoff::default();
        let d: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(d, vec![50, 100, 200, 400, 800, 1000, 1000, 1000]);
        let now = std::time::Instant::now();
        assert_eq!(
            Backoff::default().next_delay_within(now, Duration::from_secs(5)),
            Some(Duration::from_millis(50))
        );
        assert_eq!(
            Backoff::default().next_delay_within(now, Duration::from_millis(40)),
            None
        );
    }

    #[test]
    fn elections_are_retryable_and_wrappers_delegate() {
        let status = |code, m: &str| EtcdError::Status {
            code,
            message: m.to_string(),
        };
        for m in [
            "etcdserver: no leader",
            "etcdserver: leader changed",
            "etcdserver: request timed out",
        ] {
            assert!(
                status(tonic::Code::Unavailable, m).retryable(1, false),
                "{m}"
            );
        }
        let cancelled = status(tonic::Code::Cancelled, "operation was canceled");
        assert!(cancelled.retryable(1, true) && cancelled.breaks_connection());
        let refused = EtcdError::Connect {
            endpoints: "a".into(),
            detail: "refused".into(),
            failures: vec![ConnectFailure {
                endpoint: "a".into(),
                reason: "refused".into(),
                refused: true,
            }],
        };
        assert!(refused.all_refused());
        assert!(
            !refused.retryable(3, false),
            "a wrong address fails at once"
        );
        assert!(
            refused.retryable(1, true),
            "a cluster that was there is waited for"
        );
        assert!(!status(tonic::Code::PermissionDenied, "x").retryable(3, true));
        let wrapped = EtcdError::Retried {
            last: Box::new(status(tonic::Code::Unavailable, "etcdserver: no leader")),
            attempts: {
                let mut a = crate::retry::Attempts::default();
                a.record("a", &status(tonic::Code::Unavailable, "x"));
                a.record("b", &status(tonic::Code::Unavailable, "y"));
                a
            },
        };
        assert!(wrapped.breaks_connection());
        assert!(matches!(wrapped.root(), EtcdError::Status { .. }));
        assert_eq!(
            wrapped.to_string(),
            "etcd request failed: etcdserver: no leader"
        );
        assert_eq!(wrapped.attempts().map(|a| a.count()), Some(2));
        assert!(!wrapped.definitely_not_applied());
    }

    #[test]
    fn refused_connects_are_recognised_through_the_chain() {
        #[derive(Debug)]
        struct Wrap(std::io::Error);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("tcp connect error")
            }
        }
        impl std::error::Error for Wrap {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let refused = Wrap(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_refused(&refused));
        let timed_out = Wrap(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(!is_refused(&timed_out));
        // tonic's status for a request it could not send
        let status = |e: std::io::Error| {
            EtcdError::from(etcd_client::Error::GRpcStatus(tonic::Status::from_error(
                Box::new(e),
            )))
        };
        let e = status(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(e, EtcdError::Refused(_)), "{e:?}");
        assert!(e.definitely_not_applied() && e.retryable(1, true) && e.breaks_connection());
        let e = status(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(e, EtcdError::Status { .. }), "{e:?}");
        assert!(!e.definitely_not_applied());
        // etcd's own statuses have no source
        let e = EtcdError::from(etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
            "Connection refused",
        )));
        assert!(matches!(e, EtcdError::Status { .. }), "{e:?}");
    }

    #[test]
    fn too_large_answers_are_recognised() {
        let e = |code, m: &str| EtcdError::Status {
            code,
            message: m.to_string(),
        };
        let tonic_msg = "Error, decoded message length too large: found 83886300 bytes, the limit is: 67108864 bytes";
        assert_eq!(
            e(tonic::Code::OutOfRange, tonic_msg).response_too_large(),
            Some(Some(83_886_300))
        );
        assert_eq!(
            e(tonic::Code::OutOfRange, "decoded message length too large").response_too_large(),
            Some(None)
        );
        assert_eq!(
            e(
                tonic::Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted"
            )
            .response_too_large(),
            None,
            "a compacted revision is not a size problem"
        );
        assert!(e(
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted"
        )
        .compacted());
        assert!(!e(tonic::Code::OutOfRange, tonic_msg).compacted());
    }
}
