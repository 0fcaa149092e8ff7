//! etcd's change feed (`etcd_watch`): the rules for its arguments, the key
//! range a prefix watches, events as rows, and the decisions of a running
//! watch (what a response means, where to resume after a reconnect).
//!
//! The PostgreSQL layer (src/api/watch.rs) drives the watch stream; nothing
//! here does I/O.

use std::time::Duration;

use etcd_client::{EventType, WatchResponse};

use crate::keyrange::prefix_end;

/// The validated arguments of a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchArgs {
    /// First revision to return (0: changes after the call started).
    pub start_revision: i64,
    /// Stop after this many events.
    pub max_events: u64,
    /// Stop when no event arrived for this long (idle timeout).
    pub idle_timeout: Duration,
}

/// A refused argument (22023 in SQL), naming it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("start_revision must not be negative (got {0})")]
    StartRevision(i64),
    #[error("max_events must be greater than zero (got {0})")]
    MaxEvents(i32),
    #[error("timeout_ms must not be negative (got {0})")]
    Timeout(i32),
}

impl ArgError {
    pub fn hint(&self) -> &'static str {
        match self {
            ArgError::StartRevision(_) => {
                "Use 0 for changes from now on, or a revision (etcd_revision()) to replay history from it."
            }
            ArgError::MaxEvents(_) => "max_events bounds the rows of one call; the default is 1000.",
            ArgError::Timeout(_) => {
                "timeout_ms is how long the watch waits for the next event; the default is 10000."
            }
        }
    }
}

/// Check the SQL arguments of `etcd_watch`.
pub fn check_args(
    start_revision: i64,
    max_events: i32,
    timeout_ms: i32,
) -> Result<WatchArgs, ArgError> {
    if start_revision < 0 {
        return Err(ArgError::StartRevision(start_revision));
    }
    if max_events <= 0 {
        return Err(ArgError::MaxEvents(max_events));
    }
    if timeout_ms < 0 {
        return Err(ArgError::Timeout(timeout_ms));
    }
    Ok(WatchArgs {
        start_revision,
        max_events: max_events as u64,
        idle_timeout: Duration::from_millis(timeout_ms as u64),
    })
}

/// The `(key, range_end)` of a watch (and of the range read that checks
/// permission first) on every key starting with `prefix`.  The empty
/// prefix is every key: etcd's `("\0", "\0")` (from the lowest key, no
/// end); a prefix of only 0xff bytes has no successor and ends nowhere
/// (`"\0"`) too.
pub fn watch_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        return (vec![0], vec![0]);
    }
    (
        prefix.to_vec(),
        prefix_end(prefix).unwrap_or_else(|| vec![0]),
    )
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Put => "PUT",
            EventKind::Delete => "DELETE",
        }
    }
}

/// One event as a row of `etcd_watch`.  A deletion has no value, and no
/// create revision, version or lease (etcd reports them as 0: the key no
/// longer exists): those are `None` (NULL).  `prev_value` is the value
/// before the event, `None` when the key did not exist (or that revision
/// was compacted away).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The revision of the change (the key's mod_revision).
    pub revision: i64,
    pub kind: EventKind,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub prev_value: Option<Vec<u8>>,
    pub create_revision: Option<i64>,
    pub mod_revision: i64,
    pub version: Option<i64>,
    pub lease: Option<i64>,
}

impl WatchEvent {
    /// The row of an etcd event (`None` for an event without a key-value
    /// pair, which etcd does not send).
    pub fn from_etcd(ev: &etcd_client::Event) -> Option<WatchEvent> {
        let kv = ev.kv()?;
        let kind = match ev.event_type() {
            EventType::Put => EventKind::Put,
            EventType::Delete => EventKind::Delete,
        };
        let put = kind == EventKind::Put;
        Some(WatchEvent {
            revision: kv.mod_revision(),
            kind,
            key: kv.key().to_vec(),
            value: put.then(|| kv.value().to_vec()),
            prev_value: ev.prev_kv().map(|p| p.value().to_vec()),
            create_revision: put.then(|| kv.create_revision()),
            mod_revision: kv.mod_revision(),
            version: put.then(|| kv.version()),
            lease: put.then(|| kv.lease()),
        })
    }
}

/// What one message of the watch stream means.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Events, in revision order (at least one).
    Events(Vec<WatchEvent>),
    /// A message without events: a progress report (the answer to a
    /// progress request, or etcd's periodic one) at the cluster's
    /// `revision` then.
    Progress { revision: i64 },
    /// The start revision (or, for a watcher that fell behind, its next
    /// revision) was compacted away; etcd keeps history from
    /// `compact_revision` on.  The watch is over.
    Compacted { compact_revision: i64 },
    /// etcd canceled the watch (`reason` from etcd, possibly empty).
    Canceled { reason: String },
}

/// Interpret a watch response.
pub fn classify(resp: &WatchResponse) -> Received {
    if resp.compact_revision() > 0 {
        return Received::Compacted {
            compact_revision: resp.compact_revision(),
        };
    }
    if resp.canceled() {
        return Received::Canceled {
            reason: resp.cancel_reason().to_string(),
        };
    }
    let events: Vec<WatchEvent> = resp
        .events()
        .iter()
        .filter_map(WatchEvent::from_etcd)
        .collect();
    if events.is_empty() {
        return Received::Progress {
            revision: resp.header().map_or(0, |h| h.revision()),
        };
    }
    Received::Events(events)
}

/// A watch from a start revision in the past first catches up: it returns
/// every event of the watched range up to the revision that was current
/// when the call began (`target`), whatever the idle timeout, and only then
/// lets the idle timeout end it.
///
/// etcd sends a replay's events some time after it created the watch (its
/// loop that serves watchers behind the current revision runs every 100
/// ms), in one message per pass of that loop (the events of at most 1000
/// revisions each) whose header revision is the cluster's revision then,
/// and nothing at all when the range had no event in the replayed
/// revisions.  So the catch-up is over when
///
/// * an event at or after `target` arrives (events come in revision
///   order: everything before it came first); or
/// * a message whose header revision is at or after `target` holds the
///   events of fewer than [`WATCH_BATCH_MAX_REVS`] revisions: the pass
///   that sent it had nothing more up to that revision; or
/// * etcd answers a progress request with a revision at or after `target`,
///   on servers that answer only once every watcher of the stream has
///   caught up (etcd 3.5.8 and later, [`progress_waits_for_sync`]).  etcd
///   3.4 answers at once, even for a watcher still behind: there a replay
///   of revisions without any event of the range is over when no message
///   came within [`CATCH_UP_GRACE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatchUp {
    target: i64,
    /// Whether a progress answer proves the watch caught up.
    progress_proves: bool,
    done: bool,
}

/// etcd sends a watcher that is behind the events of at most this many
/// revisions per message (mvcc's watchBatchMaxRevs).
pub const WATCH_BATCH_MAX_REVS: usize = 1000;

/// Where progress answers prove nothing (etcd 3.4): how long a catch-up
/// waits for etcd's first message before concluding that the replayed
/// revisions hold no event of the range (etcd serves watchers that are
/// behind every 100 ms).
pub const CATCH_UP_GRACE: Duration = Duration::from_secs(1);

impl CatchUp {
    /// The catch-up of a watch from `start_revision` when the cluster was at
    /// `current_revision`; `None` when there is nothing to catch up (a watch
    /// from now on, or from a revision after the current one).
    /// `progress_proves`: whether the server answers progress requests
    /// only for caught-up watchers ([`progress_waits_for_sync`]).
    pub fn new(
        start_revision: i64,
        current_revision: i64,
        progress_proves: bool,
    ) -> Option<CatchUp> {
        (start_revision > 0 && start_revision <= current_revision).then_some(CatchUp {
            target: current_revision,
            progress_proves,
            done: false,
        })
    }

    /// The revision the catch-up goes up to.
    pub fn target(&self) -> i64 {
        self.target
    }

    pub fn done(&self) -> bool {
        self.done
    }

    /// Whether progress answers can end the catch-up (else only messages
    /// with events, and [`CATCH_UP_GRACE`] without any).
    pub fn progress_proves(&self) -> bool {
        self.progress_proves
    }

    /// Note a message of `events` (in revision order) whose header
    /// revision is `header_revision`.
    pub fn events(&mut self, events: &[WatchEvent], header_revision: i64) {
        let mut revisions: Vec<i64> = events.iter().map(|e| e.revision).collect();
        revisions.dedup();
        if revisions.last().is_some_and(|r| *r >= self.target)
            || (header_revision >= self.target && revisions.len() < WATCH_BATCH_MAX_REVS)
        {
            self.done = true;
        }
    }

    /// Note a progress report at `revision`.
    pub fn progress(&mut self, revision: i64) {
        if self.progress_proves && revision >= self.target {
            self.done = true;
        }
    }

    /// Give up catching up (etcd stayed silent for the whole request
    /// timeout): the idle timeout applies from now on.
    pub fn abandon(&mut self) {
        self.done = true;
    }

    /// No message came within [`CATCH_UP_GRACE`] where progress answers
    /// prove nothing: the replayed revisions hold no event of the range.
    pub fn grace_passed(&mut self) {
        if !self.progress_proves {
            self.done = true;
        }
    }
}

/// Whether an etcd server of `version` (as its status reports it, e.g.
/// "3.5.16") answers a progress request only once the stream's watchers
/// have caught up: 3.5.8 and later (etcd-io/etcd#15237; 3.4 answers at
/// once).  An unparsable version counts as an old one.
pub fn progress_waits_for_sync(version: &str) -> bool {
    let mut parts = version.trim().split('.').map(|p| {
        p.chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse::<u32>()
            .ok()
    });
    let (Some(Some(major)), Some(Some(minor)), patch) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let patch = patch.flatten().unwrap_or(0);
    (major, minor, patch) >= (3, 5, 8)
}

/// Where a watch stands: the first revision it has not received yet, so a
/// watch re-created after a broken connection resumes exactly there.
/// etcd sends all events of a revision in one message (without
/// `fragment`), so every received revision is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    next_revision: i64,
}

impl Position {
    /// A watch from `start_revision`, or, for 0 ("from now on"), from the
    /// revision after `current_revision` (the cluster's revision when the
    /// watch began): explicit, so a resumed watch misses nothing.
    pub fn new(start_revision: i64, current_revision: i64) -> Position {
        Position {
            next_revision: if start_revision > 0 {
                start_revision
            } else {
                current_revision + 1
            },
        }
    }

    /// The revision to (re)create the watch from.
    pub fn next_revision(&self) -> i64 {
        self.next_revision
    }

    /// Note received events.
    pub fn advance(&mut self, events: &[WatchEvent]) {
        if let Some(last) = events.iter().map(|e| e.revision).max() {
            self.next_revision = self.next_revision.max(last + 1);
        }
    }
}

/// What a cancel reason from etcd is about, for its SQLSTATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelKind {
    PermissionDenied,
    Other,
}

pub fn cancel_kind(reason: &str) -> CancelKind {
    if reason.contains("permission denied") {
        CancelKind::PermissionDenied
    } else {
        CancelKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::{PbEvent, PbKeyValue, PbWatchResponse};

    fn kv(key: &str, value: &str, create: i64, modr: i64, version: i64, lease: i64) -> PbKeyValue {
        PbKeyValue {
            key: key.as_bytes().to_vec(),
            create_revision: create,
            mod_revision: modr,
            version,
            value: value.as_bytes().to_vec(),
            lease,
        }
    }

    fn event(kind: i32, kv: PbKeyValue, prev: Option<PbKeyValue>) -> PbEvent {
        PbEvent {
            r#type: kind,
            kv: Some(kv),
            prev_kv: prev,
        }
    }

    fn response(events: Vec<PbEvent>) -> WatchResponse {
        WatchResponse(PbWatchResponse {
            events,
            ..Default::default()
        })
    }

    #[test]
    fn arguments() {
        assert_eq!(
            check_args(0, 1000, 10000),
            Ok(WatchArgs {
                start_revision: 0,
                max_events: 1000,
                idle_timeout: Duration::from_secs(10)
            })
        );
        assert_eq!(check_args(5, 1, 0).unwrap().idle_timeout, Duration::ZERO);
        assert_eq!(check_args(-1, 1, 1), Err(ArgError::StartRevision(-1)));
        assert_eq!(check_args(0, 0, 1), Err(ArgError::MaxEvents(0)));
        assert_eq!(check_args(0, -3, 1), Err(ArgError::MaxEvents(-3)));
        assert_eq!(check_args(0, 1, -1), Err(ArgError::Timeout(-1)));
        // each message names its argument
        for (e, name) in [
            (ArgError::StartRevision(-1), "start_revision"),
            (ArgError::MaxEvents(0), "max_events"),
            (ArgError::Timeout(-1), "timeout_ms"),
        ] {
            assert!(e.to_string().starts_with(name), "{e}");
        }
    }

    #[test]
    fn ranges() {
        // every key: etcd's ("\0", "\0")
        assert_eq!(watch_range(b""), (vec![0], vec![0]));
        assert_eq!(
            watch_range(b"/service/"),
            (b"/service/".to_vec(), b"/service0".to_vec())
        );
        assert_eq!(watch_range(b"a\xff"), (b"a\xff".to_vec(), b"b".to_vec()));
        // no successor: to the end of the key space
        assert_eq!(watch_range(b"\xff\xff"), (b"\xff\xff".to_vec(), vec![0]));
    }

    #[test]
    fn puts_and_deletes_as_rows() {
        let resp = response(vec![
            event(0, kv("a", "1", 5, 5, 1, 0), None),
            event(0, kv("a", "2", 5, 6, 2, 7), Some(kv("a", "1", 5, 5, 1, 0))),
            event(1, kv("a", "", 0, 7, 0, 0), Some(kv("a", "2", 5, 6, 2, 7))),
        ]);
        let Received::Events(evs) = classify(&resp) else {
            panic!("not events")
        };
        assert_eq!(
            evs[0],
            WatchEvent {
                revision: 5,
                kind: EventKind::Put,
                key: b"a".to_vec(),
                value: Some(b"1".to_vec()),
                prev_value: None,
                create_revision: Some(5),
                mod_revision: 5,
                version: Some(1),
                lease: Some(0),
            }
        );
        assert_eq!(evs[1].prev_value.as_deref(), Some(&b"1"[..]));
        assert_eq!(evs[1].lease, Some(7));
        assert_eq!(
            evs[2],
            WatchEvent {
                revision: 7,
                kind: EventKind::Delete,
                key: b"a".to_vec(),
                value: None,
                prev_value: Some(b"2".to_vec()),
                create_revision: None,
                mod_revision: 7,
                version: None,
                lease: None,
            }
        );
        assert_eq!(evs[2].kind.as_str(), "DELETE");
        assert_eq!(evs[0].kind.as_str(), "PUT");
        // an empty value of a put stays a value
        let resp = response(vec![event(0, kv("e", "", 9, 9, 1, 0), None)]);
        let Received::Events(evs) = classify(&resp) else {
            panic!("not events")
        };
        assert_eq!(evs[0].value.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn compaction_and_cancel() {
        let resp = WatchResponse(PbWatchResponse {
            canceled: true,
            compact_revision: 42,
            ..Default::default()
        });
        assert_eq!(
            classify(&resp),
            Received::Compacted {
                compact_revision: 42
            }
        );
        let resp = WatchResponse(PbWatchResponse {
            canceled: true,
            cancel_reason: "etcdserver: permission denied".into(),
            ..Default::default()
        });
        let Received::Canceled { reason } = classify(&resp) else {
            panic!("not canceled")
        };
        assert_eq!(cancel_kind(&reason), CancelKind::PermissionDenied);
        assert_eq!(cancel_kind("mvcc: something"), CancelKind::Other);
        // a progress report: no events
        assert_eq!(
            classify(&response(vec![])),
            Received::Progress { revision: 0 }
        );
    }

    #[test]
    fn resume_position() {
        // from now on: the revision after the current one
        let mut p = Position::new(0, 10);
        assert_eq!(p.next_revision(), 11);
        p.advance(&[]);
        assert_eq!(p.next_revision(), 11);
        let Received::Events(evs) = classify(&response(vec![
            event(0, kv("a", "1", 12, 12, 1, 0), None),
            event(1, kv("b", "", 0, 14, 0, 0), None),
            event(1, kv("c", "", 0, 14, 0, 0), None),
        ])) else {
            panic!("not events")
        };
        p.advance(&evs);
        assert_eq!(p.next_revision(), 15);
        // a replay starts at its start revision, whatever the current one
        assert_eq!(Position::new(3, 10).next_revision(), 3);
        let mut p = Position::new(3, 10);
        p.advance(&evs[..1]);
        assert_eq!(p.next_revision(), 13);
    }

    #[test]
    fn catch_up() {
        // nothing to catch up: from now on, or from the future
        assert_eq!(CatchUp::new(0, 10, true), None);
        assert_eq!(CatchUp::new(11, 10, true), None);
        let ev = |rev| WatchEvent {
            revision: rev,
            kind: EventKind::Put,
            key: b"k".to_vec(),
            value: Some(vec![]),
            prev_value: None,
            create_revision: Some(rev),
            mod_revision: rev,
            version: Some(1),
            lease: Some(0),
        };
        let mut c = CatchUp::new(3, 10, true).unwrap();
        assert_eq!(c.target(), 10);
        // a message of a pass at revision 9 (before the target)
        c.events(&[ev(4), ev(9)], 9);
        assert!(!c.done());
        c.progress(9);
        assert!(!c.done());
        c.events(&[ev(10)], 10);
        assert!(c.done());
        // the replay's message of a pass at revision 12 without the target's
        // event: the range has no event at 10
        let mut c = CatchUp::new(3, 10, false).unwrap();
        c.events(&[ev(4), ev(7)], 12);
        assert!(c.done());
        // ... unless the pass sent the events of 1000 revisions: more follow
        let mut c = CatchUp::new(3, 5000, false).unwrap();
        let many: Vec<WatchEvent> = (3..1003).map(ev).collect();
        c.events(&many, 6000);
        assert!(!c.done());
        c.events(&[ev(1003)], 6000);
        assert!(c.done());
        // a progress answer at or after the target ends it (etcd 3.5.8+)
        let mut c = CatchUp::new(10, 10, true).unwrap();
        c.grace_passed();
        assert!(!c.done());
        c.progress(12);
        assert!(c.done());
        // not where etcd answers at once (3.4): there the grace does
        let mut c = CatchUp::new(5, 10, false).unwrap();
        c.progress(12);
        assert!(!c.done());
        c.grace_passed();
        assert!(c.done());
        let mut c = CatchUp::new(5, 10, true).unwrap();
        c.abandon();
        assert!(c.done());
    }

    #[test]
    fn progress_semantics_by_version() {
        assert!(progress_waits_for_sync("3.5.16"));
        assert!(progress_waits_for_sync("3.5.8"));
        assert!(progress_waits_for_sync("3.6.0"));
        assert!(progress_waits_for_sync("4.0.0"));
        assert!(!progress_waits_for_sync("3.5.7"));
        assert!(!progress_waits_for_sync("3.4.23"));
        assert!(!progress_waits_for_sync("3.5"));
        assert!(!progress_waits_for_sync("garbage"));
        assert!(!progress_waits_for_sync(""));
    }
}
