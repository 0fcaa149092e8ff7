//! Patroni's cluster state in etcd (its `etcd3` DCS), read and edited from
//! SQL: the key layout, member JSON, replication lag, and the dynamic
//! configuration's merge and rules.
//!
//! Patroni 4.x keeps a cluster ("scope") under `<namespace><scope>/`
//! (namespace `/service/` by default):
//!
//! | key | value |
//! |---|---|
//! | `config` | the dynamic configuration (JSON) |
//! | `initialize` | the cluster's system identifier (text) |
//! | `leader` | the leader's member name (text, on the leader's lease) |
//! | `members/<name>` | a member's state (JSON, on its lease) |
//! | `status` | `{"optime": <leader's WAL LSN>, "slots": ..., "retain_slots": ...}` |
//! | `failover` | a requested switchover/failover (JSON) |
//! | `sync` | synchronous replication state (JSON) |
//! | `history` | the timeline history (JSON array) |
//! | `failsafe` | the failsafe mode's member list (JSON) |
//! | `optime/leader` | the leader's LSN (text; Patroni before 2.1) |
//!
//! Nothing here does I/O: the PostgreSQL layer (src/api/patroni.rs) reads
//! the keys and hands them to [`ClusterState::from_kvs`].

use serde_json::{Map, Value};

/// Patroni's default namespace.
pub const DEFAULT_NAMESPACE: &str = "/service/";

/// The single keys of a cluster (IMPORT FOREIGN SCHEMA `layout 'patroni'`
/// makes a table of each): name, and whether the value is JSON.
pub const SINGLE_KEYS: &[(&str, bool)] = &[
    ("config", true),
    ("leader", false),
    ("status", true),
    ("initialize", false),
    ("failover", true),
    ("sync", true),
    ("history", true),
];

/// The key prefix of a cluster, as Patroni builds it: `'/' +
/// namespace.strip('/')`, then `/<scope>`, with runs of `/` collapsed, and a
/// final `/`.  `None` for an empty scope.
pub fn scope_prefix(namespace: &str, scope: &str) -> Option<String> {
    if scope.is_empty() {
        return None;
    }
    let joined = format!("/{}/{}/", namespace.trim_matches('/'), scope);
    let mut out = String::with_capacity(joined.len());
    for c in joined.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    Some(out)
}

/// One key of the cluster as read from etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub lease: i64,
}

/// A single key: its value and metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry<T> {
    pub value: T,
    pub mod_revision: i64,
    pub lease: i64,
}

/// One member (`members/<name>`).
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub name: String,
    /// The member's JSON (`None` when the value is not a JSON object).
    pub data: Option<Map<String, Value>>,
    pub mod_revision: i64,
    pub lease: i64,
}

impl Member {
    fn str_field(&self, name: &str) -> Option<String> {
        match self.data.as_ref()?.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            v => Some(v.to_string()),
        }
    }

    fn int_field(&self, name: &str) -> Option<i64> {
        int_value(self.data.as_ref()?.get(name)?)
    }

    /// `primary`, `replica`, `standby_leader`, ... (`master` before
    /// Patroni 3.0).
    pub fn role(&self) -> Option<String> {
        self.str_field("role")
    }

    /// `running`, `starting`, `stopped`, `streaming` ...
    pub fn state(&self) -> Option<String> {
        self.str_field("state")
    }

    pub fn api_url(&self) -> Option<String> {
        self.str_field("api_url")
    }

    pub fn version(&self) -> Option<String> {
        self.str_field("version")
    }

    pub fn timeline(&self) -> Option<i64> {
        self.int_field("timeline")
    }

    /// The member's WAL position (`xlog_location`, bytes).
    pub fn lsn(&self) -> Option<u64> {
        self.int_field("xlog_location")
            .and_then(|v| u64::try_from(v).ok())
    }

    /// Host and port of PostgreSQL: from `conn_url`
    /// (`postgres://host:port/db`), else `conn_kwargs`.
    pub fn host_port(&self) -> (Option<String>, Option<i32>) {
        if let Some(url) = self.str_field("conn_url") {
            if let Some(hp) = parse_conn_url(&url) {
                return hp;
            }
        }
        if let Some(Value::Object(kw)) = self.data.as_ref().and_then(|d| d.get("conn_kwargs")) {
            let host = kw.get("host").and_then(|h| h.as_str()).map(str::to_string);
            let port = kw
                .get("port")
                .and_then(int_value)
                .and_then(|p| i32::try_from(p).ok())
                .or(host.as_ref().map(|_| 5432));
            return (host, port);
        }
        (None, None)
    }
}

/// `postgres://[user[:pw]@]host[:port][/db]` -> host (IPv6 without its
/// brackets), port (5432 when absent).
fn parse_conn_url(url: &str) -> Option<(Option<String>, Option<i32>)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<i32>().ok()?),
        None => Some(5432),
    };
    Some(((!host.is_empty()).then_some(host), port))
}

/// An integer in Patroni's JSON: a number, or a string holding one.
fn int_value(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A cluster's keys at one revision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterState {
    /// The revision of the read.
    pub revision: i64,
    /// `None` (SQL NULL) when absent or not JSON.
    pub config: Option<Entry<Value>>,
    pub initialize: Option<Entry<String>>,
    pub leader: Option<Entry<String>>,
    pub status: Option<Entry<Value>>,
    pub failover: Option<Entry<Value>>,
    pub sync: Option<Entry<Value>>,
    pub history: Option<Entry<Value>>,
    /// `optime/leader` (Patroni before 2.1).
    pub legacy_optime: Option<u64>,
    /// By name.
    pub members: Vec<Member>,
}

impl ClusterState {
    /// The cluster under `prefix` (from [`scope_prefix`]) from its keys;
    /// keys outside it and unknown keys are ignored.
    pub fn from_kvs(prefix: &[u8], kvs: impl IntoIterator<Item = Kv>, revision: i64) -> Self {
        let mut s = ClusterState {
            revision,
            ..Default::default()
        };
        for kv in kvs {
            let Some(rest) = kv.key.strip_prefix(prefix) else {
                continue;
            };
            let text = || String::from_utf8_lossy(&kv.value).into_owned();
            let json = || serde_json::from_slice::<Value>(&kv.value).ok();
            fn entry<T>(kv: &Kv, value: T) -> Entry<T> {
                Entry {
                    value,
                    mod_revision: kv.mod_revision,
                    lease: kv.lease,
                }
            }
            match rest {
                b"config" => s.config = json().map(|v| entry(&kv, v)),
                b"initialize" => s.initialize = Some(entry(&kv, text())),
                b"leader" => s.leader = Some(entry(&kv, text())),
                b"status" => s.status = json().map(|v| entry(&kv, v)),
                b"failover" => s.failover = json().map(|v| entry(&kv, v)),
                b"sync" => s.sync = json().map(|v| entry(&kv, v)),
                b"history" => s.history = json().map(|v| entry(&kv, v)),
                b"optime/leader" => s.legacy_optime = text().trim().parse().ok(),
                _ => {
                    if let Some(name) = rest.strip_prefix(b"members/") {
                        if name.is_empty() || name.contains(&b'/') {
                            continue;
                        }
                        let data = match json() {
                            Some(Value::Object(m)) => Some(m),
                            _ => None,
                        };
                        s.members.push(Member {
                            name: String::from_utf8_lossy(name).into_owned(),
                            data,
                            mod_revision: kv.mod_revision,
                            lease: kv.lease,
                        });
                    }
                }
            }
        }
        s.members.sort_by(|a, b| a.name.cmp(&b.name));
        s
    }

    /// The leader's WAL position: `status`'s `optime`, else the legacy
    /// `optime/leader` key.
    pub fn optime(&self) -> Option<u64> {
        self.status
            .as_ref()
            .and_then(|s| s.value.get("optime"))
            .and_then(int_value)
            .and_then(|v| u64::try_from(v).ok())
            .or(self.legacy_optime)
    }

    pub fn leader_name(&self) -> Option<&str> {
        self.leader.as_ref().map(|l| l.value.as_str())
    }

    pub fn is_leader(&self, m: &Member) -> bool {
        self.leader_name() == Some(m.name.as_str())
    }

    /// How far `m` is behind the leader's optime, in bytes: 0 for the
    /// leader, `None` when the optime or the member's position is unknown;
    /// never negative (a replica's report can be newer than the leader's
    /// last optime).
    pub fn lag_bytes(&self, m: &Member) -> Option<i64> {
        if self.is_leader(m) {
            return Some(0);
        }
        let optime = self.optime()?;
        let lsn = m.lsn()?;
        Some(i64::try_from(optime.saturating_sub(lsn)).unwrap_or(i64::MAX))
    }

    /// The distinct leases of the members and the leader key (0: none),
    /// for their TTLs.
    pub fn leases(&self) -> Vec<i64> {
        let mut l: Vec<i64> = self
            .members
            .iter()
            .map(|m| m.lease)
            .chain(self.leader.as_ref().map(|e| e.lease))
            .filter(|l| *l != 0)
            .collect();
        l.sort_unstable();
        l.dedup();
        l
    }

    /// Whether any key of the cluster was found.
    pub fn is_empty(&self) -> bool {
        self.config.is_none()
            && self.initialize.is_none()
            && self.leader.is_none()
            && self.status.is_none()
            && self.failover.is_none()
            && self.sync.is_none()
            && self.history.is_none()
            && self.legacy_optime.is_none()
            && self.members.is_empty()
    }
}

// ---------------------------------------------------------------------------
// The dynamic configuration: patches and Patroni's rules
// ---------------------------------------------------------------------------

/// Merge `patch` into `config` as `patronictl edit-config --set` and
/// Patroni's `PATCH /config` do: objects merge key by key, recursively; a
/// `null` removes the key; anything else replaces the value.  Like
/// `--set`, an object the patch left empty is removed, and the `null`s of
/// a new object are dropped (nothing to remove there).
pub fn merge_patch(config: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (name, value) in patch {
        match value {
            Value::Null => {
                config.remove(name);
            }
            Value::Object(p) => {
                let slot = config
                    .entry(name.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                let Value::Object(inner) = slot else {
                    unreachable!("made an object above")
                };
                merge_patch(inner, p);
                if inner.is_empty() {
                    config.remove(name);
                }
            }
            v => {
                config.insert(name.clone(), v.clone());
            }
        }
    }
}

/// Which SQLSTATE a refused configuration gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKind {
    /// A value of the wrong type or form (22023).
    InvalidValue,
    /// A value Patroni would ignore, replace or adjust (23514).
    Violation,
}

/// A configuration Patroni would refuse, ignore or adjust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    pub kind: RuleKind,
    /// The rule, as the message names it (`loop_wait + 2*retry_timeout <= ttl`).
    pub rule: String,
    /// What is wrong with the configuration.
    pub detail: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Patroni rule \"{}\": {}", self.rule, self.detail)
    }
}

fn invalid(rule: impl Into<String>, detail: impl Into<String>) -> RuleError {
    RuleError {
        kind: RuleKind::InvalidValue,
        rule: rule.into(),
        detail: detail.into(),
    }
}

fn violation(rule: impl Into<String>, detail: impl Into<String>) -> RuleError {
    RuleError {
        kind: RuleKind::Violation,
        rule: rule.into(),
        detail: detail.into(),
    }
}

/// Patroni's `parse_bool`: on/true/yes/1, off/false/no/0 (any case).
fn boolish(v: &Value) -> bool {
    let s = match v {
        Value::Bool(_) => return true,
        Value::String(s) => s.to_ascii_lowercase(),
        Value::Number(n) => n.to_string(),
        _ => return false,
    };
    matches!(
        s.as_str(),
        "on" | "true" | "yes" | "1" | "off" | "false" | "no" | "0"
    )
}

fn is_true(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "on" | "true" | "yes" | "1"),
        Value::Number(n) => n.as_i64() == Some(1),
        _ => false,
    }
}

/// An integer setting (Patroni's `int()` / `parse_int`): a JSON integer
/// or a string holding one; with `mb_units`, also a size with a unit (kB,
/// MB, GB, TB), in MB.
fn setting_int(path: &str, v: &Value, mb_units: bool) -> Result<i64, RuleError> {
    let bad = || {
        invalid(
            format!("{path} is an integer"),
            format!(
                "{path} is {v}, not an integer{}",
                if mb_units {
                    " or a size (e.g. \"128MB\")"
                } else {
                    ""
                }
            ),
        )
    };
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(bad),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i64>() {
                return Ok(i);
            }
            if mb_units {
                let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
                let (num, unit) = s.split_at(digits);
                let num: i64 = num.parse().map_err(|_| bad())?;
                let mb = match unit.trim() {
                    "kB" => num / 1024,
                    "MB" => num,
                    "GB" => num.saturating_mul(1024),
                    "TB" => num.saturating_mul(1024 * 1024),
                    _ => return Err(bad()),
                };
                return Ok(mb);
            }
            Err(bad())
        }
        _ => Err(bad()),
    }
}

fn check_min(path: &str, v: &Value, min: i64, what_patroni_does: &str) -> Result<i64, RuleError> {
    let i = setting_int(path, v, false)?;
    if i < min {
        return Err(violation(
            format!("{path} >= {min}"),
            format!("{path} is {i}; {what_patroni_does}"),
        ));
    }
    Ok(i)
}

/// Local settings Patroni drops from the `postgresql` section of the
/// dynamic configuration (Config._safe_copy_dynamic_configuration).
const LOCAL_ONLY_POSTGRESQL: &[&str] = &[
    "connect_address",
    "proxy_address",
    "listen",
    "config_dir",
    "data_dir",
    "pgpass",
    "authentication",
];

/// PostgreSQL parameters Patroni validates in the dynamic configuration
/// (ConfigHandler.CMDLINE_OPTIONS): name, minimum (integers; `None`: not
/// an integer), whether the value is a size in MB.
const PG_INT_PARAMS: &[(&str, i64, bool)] = &[
    ("max_connections", 25, false),
    ("max_wal_senders", 3, false),
    ("wal_keep_segments", 1, false),
    ("wal_keep_size", 16, true),
    ("max_prepared_transactions", 0, false),
    ("max_locks_per_transaction", 32, false),
    ("max_replication_slots", 4, false),
    ("max_worker_processes", 2, false),
];

/// Check a whole dynamic configuration against the rules of Patroni
/// 4.1 that would make it refuse, ignore or silently adjust a setting
/// (patroni/config.py, patroni/validator.py, patroni/postgresql/config.py);
/// the first violation found.
pub fn check_config(config: &Map<String, Value>) -> Result<(), RuleError> {
    // Config._validate_and_adjust_timeouts: int() of each (an exception
    // there makes Patroni ignore the whole configuration), minimums, and
    // loop_wait + 2*retry_timeout <= ttl (defaults 30, 10, 10).
    let get = |name: &str, default: i64, min: i64| -> Result<i64, RuleError> {
        match config.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => check_min(name, v, min, &format!("Patroni would raise it to {min}")),
        }
    };
    let ttl = get("ttl", 30, 20)?;
    let loop_wait = get("loop_wait", 10, 1)?;
    let retry_timeout = get("retry_timeout", 10, 3)?;
    if loop_wait + 2 * retry_timeout > ttl {
        return Err(violation(
            "loop_wait + 2*retry_timeout <= ttl",
            format!(
                "loop_wait {loop_wait} + 2*retry_timeout {retry_timeout} = {} exceeds ttl {ttl}; Patroni would lower loop_wait (or retry_timeout)",
                loop_wait + 2 * retry_timeout
            ),
        ));
    }
    // validator.py's bootstrap.dcs schema (the same settings at runtime).
    for (name, min) in [
        ("maximum_lag_on_failover", 0),
        ("maximum_lag_on_syncnode", -1),
        ("synchronous_node_count", 1),
        ("primary_start_timeout", 0),
        ("primary_stop_timeout", 0),
        ("master_start_timeout", 0),
        ("master_stop_timeout", 0),
    ] {
        if let Some(v) = config.get(name).filter(|v| !v.is_null()) {
            check_min(name, v, min, "Patroni's validator refuses it")?;
        }
    }
    if let Some(v) = config.get("synchronous_mode").filter(|v| !v.is_null()) {
        let ok = matches!(v, Value::String(s) if s.eq_ignore_ascii_case("quorum")) || boolish(v);
        if !ok {
            return Err(invalid(
                "synchronous_mode is on, off or quorum",
                format!("synchronous_mode is {v}"),
            ));
        }
    }
    for name in ["synchronous_mode_strict", "failsafe_mode", "check_timeline"] {
        if let Some(v) = config.get(name).filter(|v| !v.is_null()) {
            if !boolish(v) {
                return Err(invalid(
                    format!("{name} is a boolean"),
                    format!("{name} is {v}"),
                ));
            }
        }
    }
    let Some(pg) = config.get("postgresql").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let Value::Object(pg) = pg else {
        return Err(invalid(
            "postgresql is an object",
            format!("postgresql is {pg}"),
        ));
    };
    for name in LOCAL_ONLY_POSTGRESQL {
        if pg.contains_key(*name) {
            return Err(violation(
                "postgresql local settings are not dynamic",
                format!("postgresql.{name} belongs in each node's patroni.yml; Patroni drops it from the dynamic configuration"),
            ));
        }
    }
    for name in [
        "use_slots",
        "use_pg_rewind",
        "remove_data_directory_on_rewind_failure",
        "remove_data_directory_on_diverged_timelines",
    ] {
        if let Some(v) = pg.get(name).filter(|v| !v.is_null()) {
            if !boolish(v) {
                return Err(invalid(
                    format!("postgresql.{name} is a boolean"),
                    format!("postgresql.{name} is {v}"),
                ));
            }
        }
    }
    let Some(params) = pg.get("parameters").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let Value::Object(params) = params else {
        return Err(invalid(
            "postgresql.parameters is an object",
            format!("postgresql.parameters is {params}"),
        ));
    };
    for (name, value) in params {
        let lower = name.to_ascii_lowercase();
        let path = format!("postgresql.parameters.{name}");
        if value.is_null() {
            continue;
        }
        match lower.as_str() {
            "listen_addresses" | "port" | "cluster_name" => {
                return Err(violation(
                    format!("{lower} is not dynamic"),
                    format!("{path} comes from each node's postgresql.listen / scope; Patroni ignores it in the dynamic configuration"),
                ))
            }
            "hot_standby" => {
                if !is_true(value) {
                    return Err(violation(
                        "hot_standby is on",
                        format!("{path} is {value}; Patroni always runs with hot_standby on"),
                    ));
                }
            }
            "wal_level" => {
                let ok = matches!(value, Value::String(s)
                    if ["hot_standby", "replica", "logical"].contains(&s.to_ascii_lowercase().as_str()));
                if !ok {
                    return Err(violation(
                        "wal_level is replica, hot_standby or logical",
                        format!("{path} is {value}; Patroni would use hot_standby instead"),
                    ));
                }
            }
            "track_commit_timestamp" | "wal_log_hints" => {
                if !boolish(value) {
                    return Err(violation(
                        format!("{lower} is a boolean"),
                        format!("{path} is {value}; Patroni would use its default instead"),
                    ));
                }
            }
            _ => {
                if let Some((_, min, mb)) = PG_INT_PARAMS.iter().find(|(n, _, _)| *n == lower) {
                    let i = setting_int(&path, value, *mb)?;
                    if i < *min {
                        return Err(violation(
                            format!("{lower} >= {min}{}", if *mb { "MB" } else { "" }),
                            format!("{path} is {value}; Patroni would use its default instead"),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Why a patch cannot be applied at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("the patch must be a JSON object, not {0}")]
    PatchNotObject(String),
    #[error("the stored configuration is not a JSON object")]
    ConfigNotObject,
}

/// The configuration `current` (the `config` key's JSON) with `patch`
/// merged, checked against Patroni's rules.
pub fn edit_config(current: &Value, patch: &Value) -> Result<Result<Value, RuleError>, PatchError> {
    let Value::Object(patch) = patch else {
        let kind = match patch {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        return Err(PatchError::PatchNotObject(kind.into()));
    };
    let Value::Object(config) = current else {
        return Err(PatchError::ConfigNotObject);
    };
    let mut new = config.clone();
    merge_patch(&mut new, patch);
    Ok(check_config(&new).map(|()| Value::Object(new)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(scope_prefix("/service/", "demo").unwrap(), "/service/demo/");
        assert_eq!(scope_prefix("service", "demo").unwrap(), "/service/demo/");
        assert_eq!(scope_prefix("/service", "demo").unwrap(), "/service/demo/");
        assert_eq!(scope_prefix("//a//b//", "c").unwrap(), "/a/b/c/");
        assert_eq!(scope_prefix("/", "demo").unwrap(), "/demo/");
        assert_eq!(scope_prefix("", "demo").unwrap(), "/demo/");
        assert_eq!(scope_prefix("/service/", ""), None);
    }

    fn kv(key: &str, value: &str, rev: i64, lease: i64) -> Kv {
        Kv {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            mod_revision: rev,
            lease,
        }
    }

    fn sample() -> ClusterState {
        ClusterState::from_kvs(
            b"/service/demo/",
            vec![
                kv("/service/demo/config", r#"{"ttl":30,"loop_wait":10}"#, 5, 0),
                kv("/service/demo/initialize", "7123456789", 4, 0),
                kv("/service/demo/leader", "n1", 9, 77),
                kv(
                    "/service/demo/members/n1",
                    r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"primary","version":"4.1.5","xlog_location":50331800,"timeline":2}"#,
                    10,
                    77,
                ),
                kv(
                    "/service/demo/members/n2",
                    r#"{"conn_url":"postgres://[::1]:5433/postgres","state":"streaming","role":"replica","xlog_location":50331000,"timeline":"2"}"#,
                    11,
                    78,
                ),
                kv("/service/demo/members/broken", "not json", 12, 0),
                kv(
                    "/service/demo/status",
                    r#"{"optime":50331900,"slots":{"n2":1}}"#,
                    13,
                    0,
                ),
                kv(
                    "/service/demo/history",
                    "[[1,25165984,\"no recovery target specified\"]]",
                    3,
                    0,
                ),
                kv("/service/demo/unknown", "x", 3, 0),
                kv("/service/other/leader", "zz", 3, 0),
            ],
            20,
        )
    }

    #[test]
    fn cluster_from_keys() {
        let s = sample();
        assert_eq!(s.revision, 20);
        assert_eq!(s.leader_name(), Some("n1"));
        assert_eq!(s.initialize.as_ref().unwrap().value, "7123456789");
        assert_eq!(s.config.as_ref().unwrap().mod_revision, 5);
        assert_eq!(s.optime(), Some(50331900));
        assert!(s.history.as_ref().unwrap().value.is_array());
        assert!(s.failover.is_none() && s.sync.is_none());
        let names: Vec<&str> = s.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["broken", "n1", "n2"]);
        let [broken, n1, n2] = &s.members[..] else {
            panic!()
        };
        assert_eq!(n1.role().as_deref(), Some("primary"));
        assert_eq!(n1.state().as_deref(), Some("running"));
        assert_eq!(n1.host_port(), (Some("127.0.0.1".into()), Some(5432)));
        assert_eq!(
            n1.api_url().as_deref(),
            Some("http://127.0.0.1:8008/patroni")
        );
        assert_eq!(n1.timeline(), Some(2));
        assert_eq!(n1.version().as_deref(), Some("4.1.5"));
        assert!(s.is_leader(n1) && !s.is_leader(n2));
        assert_eq!(s.lag_bytes(n1), Some(0));
        assert_eq!(s.lag_bytes(n2), Some(900));
        assert_eq!(n2.host_port(), (Some("::1".into()), Some(5433)));
        assert_eq!(n2.timeline(), Some(2));
        assert_eq!(broken.data, None);
        assert_eq!(broken.role(), None);
        assert_eq!(s.lag_bytes(broken), None);
        assert_eq!(s.leases(), vec![77, 78]);
        assert!(!s.is_empty());
        assert!(ClusterState::from_kvs(b"/x/", vec![], 1).is_empty());
    }

    #[test]
    fn lag_edge_cases() {
        let mut s = sample();
        // a replica ahead of the last optime: 0, not negative
        s.status = Some(Entry {
            value: json!({"optime": 100}),
            mod_revision: 1,
            lease: 0,
        });
        assert_eq!(s.lag_bytes(&s.members[2]), Some(0));
        // no status: the legacy key, else unknown
        s.status = None;
        assert_eq!(s.lag_bytes(&s.members[2]), None);
        s.legacy_optime = Some(50331100);
        assert_eq!(s.lag_bytes(&s.members[2]), Some(100));
    }

    #[test]
    fn conn_urls() {
        assert_eq!(
            parse_conn_url("postgres://u:p@db.example:6543/postgres?x=1"),
            Some((Some("db.example".into()), Some(6543)))
        );
        assert_eq!(
            parse_conn_url("postgresql://host/postgres"),
            Some((Some("host".into()), Some(5432)))
        );
        assert_eq!(parse_conn_url("nonsense"), None);
        assert_eq!(parse_conn_url("postgres://h:notaport/x"), None);
        let m = Member {
            name: "x".into(),
            data: Some(obj(json!({"conn_kwargs": {"host": "h", "port": "5499"}}))),
            mod_revision: 1,
            lease: 0,
        };
        assert_eq!(m.host_port(), (Some("h".into()), Some(5499)));
    }

    #[test]
    fn merging_like_patronictl() {
        let mut c = obj(json!({
            "ttl": 30,
            "postgresql": {"parameters": {"max_connections": 100, "work_mem": "4MB"}, "use_slots": true},
            "tags": {"a": 1}
        }));
        merge_patch(
            &mut c,
            &obj(json!({
                "ttl": 40,
                "postgresql": {"parameters": {"work_mem": null, "shared_buffers": "64MB"}},
                "tags": {"a": null},
                "new": {"x": null, "y": 1},
                "loop_wait": 5,
                "missing": null
            })),
        );
        assert_eq!(
            Value::Object(c),
            json!({
                "ttl": 40,
                "loop_wait": 5,
                "postgresql": {"parameters": {"max_connections": 100, "shared_buffers": "64MB"}, "use_slots": true},
                "new": {"y": 1}
            })
        );
        // an object replaces a scalar
        let mut c = obj(json!({"a": 1}));
        merge_patch(&mut c, &obj(json!({"a": {"b": 2}})));
        assert_eq!(Value::Object(c), json!({"a": {"b": 2}}));
        // a scalar or array replaces an object
        let mut c = obj(json!({"a": {"b": 2}}));
        merge_patch(&mut c, &obj(json!({"a": [1, 2]})));
        assert_eq!(Value::Object(c), json!({"a": [1, 2]}));
    }

    fn rule(config: Value) -> Option<RuleError> {
        check_config(&obj(config)).err()
    }

    #[test]
    fn timeouts() {
        assert_eq!(rule(json!({})), None);
        assert_eq!(
            rule(json!({"ttl": 30, "loop_wait": 10, "retry_timeout": 10})),
            None
        );
        assert_eq!(rule(json!({"ttl": "30", "loop_wait": " 10 "})), None);
        let e = rule(json!({"ttl": 25})).unwrap();
        assert_eq!(e.kind, RuleKind::Violation);
        assert_eq!(e.rule, "loop_wait + 2*retry_timeout <= ttl");
        assert!(e.detail.contains("exceeds ttl 25"), "{e}");
        let e = rule(json!({"ttl": 10})).unwrap();
        assert_eq!(
            (e.kind, e.rule.as_str()),
            (RuleKind::Violation, "ttl >= 20")
        );
        let e = rule(json!({"loop_wait": 0})).unwrap();
        assert_eq!(e.rule, "loop_wait >= 1");
        let e = rule(json!({"retry_timeout": 2})).unwrap();
        assert_eq!(e.rule, "retry_timeout >= 3");
        let e = rule(json!({"ttl": "thirty"})).unwrap();
        assert_eq!(
            (e.kind, e.rule.as_str()),
            (RuleKind::InvalidValue, "ttl is an integer")
        );
        let e = rule(json!({"ttl": 30.5})).unwrap();
        assert_eq!(e.kind, RuleKind::InvalidValue);
        assert!(e
            .to_string()
            .starts_with("Patroni rule \"ttl is an integer\""));
    }

    #[test]
    fn other_settings() {
        assert_eq!(
            rule(
                json!({"maximum_lag_on_failover": 1048576, "synchronous_mode": "quorum",
                        "synchronous_mode_strict": "off", "synchronous_node_count": 1,
                        "failsafe_mode": true})
            ),
            None
        );
        assert_eq!(
            rule(json!({"maximum_lag_on_failover": -1})).unwrap().rule,
            "maximum_lag_on_failover >= 0"
        );
        assert_eq!(rule(json!({"maximum_lag_on_syncnode": -1})), None);
        assert_eq!(
            rule(json!({"synchronous_node_count": 0})).unwrap().rule,
            "synchronous_node_count >= 1"
        );
        assert_eq!(
            rule(json!({"synchronous_mode": "sometimes"})).unwrap().kind,
            RuleKind::InvalidValue
        );
        assert_eq!(
            rule(json!({"synchronous_mode_strict": "maybe"}))
                .unwrap()
                .rule,
            "synchronous_mode_strict is a boolean"
        );
        assert_eq!(
            rule(json!({"postgresql": 3})).unwrap().rule,
            "postgresql is an object"
        );
        assert_eq!(
            rule(json!({"postgresql": {"use_slots": "x"}}))
                .unwrap()
                .rule,
            "postgresql.use_slots is a boolean"
        );
        assert_eq!(
            rule(json!({"postgresql": {"data_dir": "/x"}}))
                .unwrap()
                .rule,
            "postgresql local settings are not dynamic"
        );
    }

    #[test]
    fn postgresql_parameters() {
        let p = |params: Value| rule(json!({"postgresql": {"parameters": params}}));
        assert_eq!(
            p(
                json!({"max_connections": 100, "wal_level": "Logical", "hot_standby": "on",
                     "wal_keep_size": "1GB", "work_mem": "anything", "wal_log_hints": true,
                     "max_wal_senders": "10", "old": null})
            ),
            None
        );
        assert_eq!(
            rule(json!({"postgresql": {"parameters": []}}))
                .unwrap()
                .rule,
            "postgresql.parameters is an object"
        );
        let e = p(json!({"max_connections": 10})).unwrap();
        assert_eq!(
            (e.kind, e.rule.as_str()),
            (RuleKind::Violation, "max_connections >= 25")
        );
        assert_eq!(
            p(json!({"MAX_CONNECTIONS": 10})).unwrap().rule,
            "max_connections >= 25"
        );
        let e = p(json!({"max_connections": "lots"})).unwrap();
        assert_eq!(e.kind, RuleKind::InvalidValue);
        assert_eq!(
            p(json!({"wal_keep_size": "8MB"})).unwrap().rule,
            "wal_keep_size >= 16MB"
        );
        assert_eq!(p(json!({"wal_keep_size": 16})), None);
        assert_eq!(
            p(json!({"wal_level": "minimal"})).unwrap().rule,
            "wal_level is replica, hot_standby or logical"
        );
        assert_eq!(
            p(json!({"hot_standby": "off"})).unwrap().rule,
            "hot_standby is on"
        );
        assert_eq!(
            p(json!({"port": 5432})).unwrap().rule,
            "port is not dynamic"
        );
        assert_eq!(
            p(json!({"listen_addresses": "*"})).unwrap().rule,
            "listen_addresses is not dynamic"
        );
        assert_eq!(
            p(json!({"track_commit_timestamp": "sure"})).unwrap().rule,
            "track_commit_timestamp is a boolean"
        );
        for (name, min) in [
            ("max_locks_per_transaction", 32),
            ("max_replication_slots", 4),
            ("max_worker_processes", 2),
            ("wal_keep_segments", 1),
        ] {
            assert_eq!(p(json!({name: min})), None, "{name}");
            assert_eq!(
                p(json!({name: min - 1})).unwrap().rule,
                format!("{name} >= {min}")
            );
        }
    }

    #[test]
    fn edits() {
        let current = json!({"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "postgresql": {"parameters": {"work_mem": "4MB"}}});
        let new = edit_config(
            &current,
            &json!({"postgresql": {"parameters": {"work_mem": "8MB"}}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(new["postgresql"]["parameters"]["work_mem"], "8MB");
        assert_eq!(new["ttl"], 30);
        let refused = edit_config(&current, &json!({"loop_wait": 15}))
            .unwrap()
            .unwrap_err();
        assert_eq!(refused.rule, "loop_wait + 2*retry_timeout <= ttl");
        // fixing it in the same patch is fine
        assert!(edit_config(&current, &json!({"loop_wait": 15, "ttl": 40}))
            .unwrap()
            .is_ok());
        assert_eq!(
            edit_config(&current, &json!([1])).unwrap_err(),
            PatchError::PatchNotObject("an array".into())
        );
        assert_eq!(
            edit_config(&json!("x"), &json!({})).unwrap_err(),
            PatchError::ConfigNotObject
        );
    }
}
