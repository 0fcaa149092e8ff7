//! Option names, parsing and validation for every object etcd_fdw accepts
//! options on.  The PostgreSQL validator and the executor both call into
//! here, so an option means the same thing at DDL time and at run time.

use std::time::Duration;

use crate::keyrange::{KeyRange, KeySet};

/// Where an option list was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionContext {
    Wrapper,
    Server,
    UserMapping,
    Table,
    Column,
}

impl OptionContext {
    pub fn valid_options(self) -> &'static [&'static str] {
        match self {
            OptionContext::Wrapper => &[],
            OptionContext::Server => &[
                "connstr",
                "ssl_key",
                "ssl_cert",
                "ssl_ca",
                "ssl_servername",
                "username",
                "password",
                "connect_timeout",
                "request_timeout",
                "fetch_size",
                "batch_size",
                "insert_mode",
                "commit_mode",
            ],
            OptionContext::UserMapping => &["username", "password", "password_required"],
            OptionContext::Table => &[
                "rowid_column",
                "prefix",
                "keys_only",
                "revision",
                "key",
                "range_end",
                "consistency",
                "fetch_size",
                "batch_size",
                "insert_mode",
                "commit_mode",
                "invalid_values",
            ],
            OptionContext::Column => &[],
        }
    }

    pub fn object_name(self) -> &'static str {
        match self {
            OptionContext::Wrapper => "foreign-data wrapper",
            OptionContext::Server => "server",
            OptionContext::UserMapping => "user mapping",
            OptionContext::Table => "foreign table",
            OptionContext::Column => "column",
        }
    }
}

/// Why an option list was refused.  The PostgreSQL layer maps each kind to
/// its SQLSTATE.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    #[error("invalid option \"{name}\"")]
    Unknown {
        name: String,
        context: OptionContext,
    },
    #[error("invalid value for option \"{name}\": \"{}\"", shown_value(value))]
    InvalidValue {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("option \"{name}\" is required for an etcd_fdw {object}")]
    Missing {
        name: &'static str,
        object: &'static str,
    },
    #[error("option \"{0}\" cannot be combined with option \"{1}\"")]
    Conflict(&'static str, &'static str),
    #[error("option \"{0}\" requires option \"{1}\"")]
    Requires(&'static str, &'static str),
    #[error("option \"{0}\" is specified more than once")]
    Duplicate(String),
}

/// How many characters of a refused option value a message shows; longer
/// values are cut there and end in "...", as PostgreSQL cuts long
/// literals in its messages (a 100 KiB `prefix` is not echoed whole).
pub const SHOWN_VALUE_CHARS: usize = 64;

/// `value` as a refusal message shows it: whole up to
/// [`SHOWN_VALUE_CHARS`] characters, else its first ones and "...".
pub fn shown_value(value: &str) -> std::borrow::Cow<'_, str> {
    match value.char_indices().nth(SHOWN_VALUE_CHARS) {
        None => std::borrow::Cow::Borrowed(value),
        Some((cut, _)) => std::borrow::Cow::Owned(format!("{}...", &value[..cut])),
    }
}

impl OptionError {
    /// The hint listing accepted values or names, like postgres_fdw does.
    pub fn hint(&self) -> Option<String> {
        match self {
            OptionError::Unknown { context, .. } => {
                let valid = context.valid_options();
                Some(if valid.is_empty() {
                    format!(
                        "There are no valid options in this context ({}).",
                        context.object_name()
                    )
                } else {
                    format!("Valid options in this context are: {}", valid.join(", "))
                })
            }
            OptionError::InvalidValue { expected, .. } => Some(format!("Expected {expected}.")),
            _ => None,
        }
    }
}

/// Read consistency of range requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Serializable,
}

impl Consistency {
    pub fn name(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Serializable => "serializable",
        }
    }
}

pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;
/// Keys per range request of a scan; see the README's performance section.
pub const DEFAULT_FETCH_SIZE: u32 = 1000;
/// Operations per etcd transaction of a batched write.  etcd's default
/// `--max-txn-ops` is 128.
pub const DEFAULT_BATCH_SIZE: u32 = 128;

/// A boolean option value, in the spellings PostgreSQL accepts.
pub fn parse_bool(name: &'static str, value: &str) -> Result<bool, OptionError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" | "t" | "y" => Ok(true),
        "false" | "off" | "no" | "0" | "f" | "n" => Ok(false),
        _ => Err(OptionError::InvalidValue {
            name,
            value: value.to_string(),
            expected: "a boolean (true or false)",
        }),
    }
}

fn parse_int(
    name: &'static str,
    value: &str,
    min: i64,
    max: i64,
    expected: &'static str,
) -> Result<i64, OptionError> {
    match value.trim().parse::<i64>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ => Err(OptionError::InvalidValue {
            name,
            value: value.to_string(),
            expected,
        }),
    }
}

fn parse_seconds(name: &'static str, value: &str) -> Result<Duration, OptionError> {
    let expected = "a positive number of seconds";
    match value.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 * 365.0 => {
            // Below a nanosecond, a positive number is still no time at all.
            let d = Duration::from_secs_f64(v);
            if !d.is_zero() {
                return Ok(d);
            }
        }
        _ => {}
    }
    Err(OptionError::InvalidValue {
        name,
        value: value.to_string(),
        expected,
    })
}

fn parse_fetch_size(value: &str) -> Result<u32, OptionError> {
    parse_int(
        "fetch_size",
        value,
        1,
        1_000_000,
        "an integer between 1 and 1000000",
    )
    .map(|v| v as u32)
}

fn parse_batch_size(value: &str) -> Result<u32, OptionError> {
    parse_int(
        "batch_size",
        value,
        1,
        10_000,
        "an integer between 1 and 10000",
    )
    .map(|v| v as u32)
}

/// What INSERT (and COPY) does with a key that exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InsertMode {
    /// The key must not exist (23505 otherwise): SQL's INSERT.
    #[default]
    Create,
    /// Create or overwrite, like `etcdctl put`.
    Put,
}

impl InsertMode {
    pub fn name(self) -> &'static str {
        match self {
            InsertMode::Create => "create",
            InsertMode::Put => "put",
        }
    }
}

fn parse_insert_mode(value: &str) -> Result<InsertMode, OptionError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "create" => Ok(InsertMode::Create),
        "put" => Ok(InsertMode::Put),
        _ => Err(OptionError::InvalidValue {
            name: "insert_mode",
            value: value.to_string(),
            expected: "create or put",
        }),
    }
}

/// What a scan does with a value that does not convert to its column's
/// type (not JSON for a jsonb column, not UTF-8 for a text one, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InvalidValues {
    /// Raise the conversion's ERROR (naming key, column and table).
    #[default]
    Error,
    /// Read it as NULL, with a WARNING naming key, column and table
    /// (PostgreSQL 16 and later: soft input errors).
    Null,
}

impl InvalidValues {
    pub fn name(self) -> &'static str {
        match self {
            InvalidValues::Error => "error",
            InvalidValues::Null => "null",
        }
    }
}

fn parse_invalid_values(value: &str) -> Result<InvalidValues, OptionError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "error" => Ok(InvalidValues::Error),
        "null" => Ok(InvalidValues::Null),
        _ => Err(OptionError::InvalidValue {
            name: "invalid_values",
            value: value.to_string(),
            expected: "error or null",
        }),
    }
}

/// When writes reach etcd: the GUC `etcd_fdw.commit_mode`, and the server
/// and table option of the same name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CommitMode {
    /// At COMMIT, as one etcd transaction per connection.
    #[default]
    Transaction,
    /// When each statement runs, in etcd transactions of `batch_size`.
    Statement,
}

impl CommitMode {
    pub fn name(self) -> &'static str {
        match self {
            CommitMode::Transaction => "transaction",
            CommitMode::Statement => "statement",
        }
    }
}

fn parse_commit_mode(value: &str) -> Result<CommitMode, OptionError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "transaction" => Ok(CommitMode::Transaction),
        "statement" => Ok(CommitMode::Statement),
        _ => Err(OptionError::InvalidValue {
            name: "commit_mode",
            value: value.to_string(),
            expected: "transaction or statement",
        }),
    }
}

fn parse_consistency(value: &str) -> Result<Consistency, OptionError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "l" | "linearizable" => Ok(Consistency::Linearizable),
        "s" | "serializable" => Ok(Consistency::Serializable),
        _ => Err(OptionError::InvalidValue {
            name: "consistency",
            value: value.to_string(),
            expected: "l, s, linearizable or serializable",
        }),
    }
}

/// One etcd endpoint of a `connstr`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EtcdEndpoint {
    /// `host:port` as written (without scheme).
    pub authority: String,
    /// `Some(true)` for an explicit `https://`, `Some(false)` for `http://`.
    pub tls: Option<bool>,
}

impl EtcdEndpoint {
    /// The URL to dial, given whether TLS is configured by `ssl_*` options.
    pub fn url(&self, tls_configured: bool) -> String {
        let tls = self.tls.unwrap_or(tls_configured);
        format!(
            "{}://{}",
            if tls { "https" } else { "http" },
            self.authority
        )
    }
}

impl std::fmt::Display for EtcdEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.tls {
            Some(true) => write!(f, "https://{}", self.authority),
            Some(false) => write!(f, "http://{}", self.authority),
            None => f.write_str(&self.authority),
        }
    }
}

pub fn parse_connstr(value: &str) -> Result<Vec<EtcdEndpoint>, OptionError> {
    let invalid = || OptionError::InvalidValue {
        name: "connstr",
        value: value.to_string(),
        expected:
            "a comma-separated list of host:port endpoints, optionally with http:// or https://",
    };
    let mut out = Vec::new();
    for part in value.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(invalid());
        }
        let (tls, rest) = if let Some(r) = part.strip_prefix("https://") {
            (Some(true), r)
        } else if let Some(r) = part.strip_prefix("http://") {
            (Some(false), r)
        } else if part.contains("://") {
            return Err(invalid());
        } else {
            (None, part)
        };
        let rest = rest.trim_end_matches('/');
        // host:port, with IPv6 hosts in brackets.
        let (host, port) = rest.rsplit_once(':').ok_or_else(invalid)?;
        if host.is_empty()
            || host.contains('/')
            || host.contains('@')
            || port.parse::<u16>().map(|p| p == 0).unwrap_or(true)
        {
            return Err(invalid());
        }
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(invalid());
        }
        // What connecting will dial (client.rs): refuse here what it would
        // refuse then (spaces, non-ASCII or other characters no URI has).
        if tonic::transport::Endpoint::from_shared(format!("http://{rest}")).is_err() {
            return Err(invalid());
        }
        out.push(EtcdEndpoint {
            authority: rest.to_string(),
            tls,
        });
    }
    Ok(out)
}

/// Options of a server, merged with the current user's mapping.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerOptions {
    pub endpoints: Vec<EtcdEndpoint>,
    pub ssl_key: Option<String>,
    pub ssl_cert: Option<String>,
    pub ssl_ca: Option<String>,
    pub ssl_servername: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub fetch_size: Option<u32>,
    pub batch_size: Option<u32>,
    pub insert_mode: Option<InsertMode>,
    pub commit_mode: Option<CommitMode>,
    /// User mapping option `password_required` (default true): whether a
    /// non-superuser must bring a password of their own (see
    /// [`ServerOptions::borrowed_identity`]).
    pub password_required: bool,
    /// Whether the user mapping supplies the password.
    pub mapping_password: bool,
}

impl ServerOptions {
    /// The etcd identity this connection would act with that the user
    /// mapping did not supply a password for: the server option that
    /// carries it (`ssl_cert`, a client certificate only a superuser can
    /// configure, or a server-level `username`).  A non-superuser may not
    /// act with it unless a superuser set `password_required 'false'` on
    /// the user mapping (postgres_fdw's rule for passwords).  `None`:
    /// the mapping's own password authenticates, or there is no identity
    /// at all (etcd without authentication).
    pub fn borrowed_identity(&self) -> Option<&'static str> {
        if !self.password_required || self.mapping_password {
            return None;
        }
        if self.username.is_some() {
            Some("username")
        } else if self.ssl_cert.is_some() {
            Some("ssl_cert")
        } else {
            None
        }
    }

    pub fn tls_configured(&self) -> bool {
        self.ssl_ca.is_some() || self.ssl_cert.is_some() || self.ssl_servername.is_some()
    }

    /// The endpoints as written, for messages.
    pub fn endpoints_display(&self) -> String {
        self.endpoints
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Options of a foreign table.
#[derive(Clone, Debug, PartialEq)]
pub struct TableOptions {
    pub rowid_column: String,
    pub prefix: Option<Vec<u8>>,
    pub keys_only: bool,
    pub revision: i64,
    pub key: Option<Vec<u8>>,
    pub range_end: Option<Vec<u8>>,
    pub consistency: Consistency,
    pub fetch_size: Option<u32>,
    pub batch_size: Option<u32>,
    pub insert_mode: Option<InsertMode>,
    pub commit_mode: Option<CommitMode>,
    pub invalid_values: InvalidValues,
}

impl TableOptions {
    /// The keys this table covers.  Without `prefix` or `key` that is every
    /// key; `key` alone is that single key; `key` + `range_end` is
    /// `[key, range_end)`; `range_end` alone is `[\0, range_end)`.
    pub fn key_set(&self) -> KeySet {
        let r = match (&self.prefix, &self.key, &self.range_end) {
            (Some(p), _, _) => KeyRange::prefix(p),
            (None, Some(k), None) => KeyRange::single(k),
            (None, Some(k), Some(e)) => KeyRange::between(k, Some(e)),
            (None, None, Some(e)) => KeyRange::between(b"", Some(e)),
            (None, None, None) => KeyRange::all(),
        };
        KeySet::from_range(r)
    }

    /// Whether writes are refused (a historical or keys-only view).
    pub fn read_only_reason(&self) -> Option<&'static str> {
        if self.keys_only {
            Some("keys_only")
        } else if self.revision != 0 {
            Some("revision")
        } else {
            None
        }
    }
}

fn check_names(ctx: OptionContext, opts: &[(String, String)]) -> Result<(), OptionError> {
    let valid = ctx.valid_options();
    let mut seen: Vec<&str> = Vec::new();
    for (name, _) in opts {
        if !valid.contains(&name.as_str()) {
            return Err(OptionError::Unknown {
                name: name.clone(),
                context: ctx,
            });
        }
        if seen.contains(&name.as_str()) {
            return Err(OptionError::Duplicate(name.clone()));
        }
        seen.push(name);
    }
    Ok(())
}

fn get<'a>(opts: &'a [(String, String)], name: &str) -> Option<&'a str> {
    opts.iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A user mapping's `password_required` (default true).
pub fn password_required(mapping: &[(String, String)]) -> Result<bool, OptionError> {
    get(mapping, "password_required")
        .map(|v| parse_bool("password_required", v))
        .transpose()
        .map(|v| v.unwrap_or(true))
}

/// Parse a server's options, with the user mapping's `username`/`password`
/// taking precedence.
pub fn parse_server(
    server: &[(String, String)],
    mapping: &[(String, String)],
) -> Result<ServerOptions, OptionError> {
    check_names(OptionContext::Server, server)?;
    check_names(OptionContext::UserMapping, mapping)?;
    let connstr = get(server, "connstr").ok_or(OptionError::Missing {
        name: "connstr",
        object: "server",
    })?;
    let endpoints = parse_connstr(connstr)?;
    let s = |n: &str| get(server, n).map(str::to_string);
    let (username, password) = if get(mapping, "username").is_some() {
        (
            get(mapping, "username").map(str::to_string),
            get(mapping, "password").map(str::to_string),
        )
    } else {
        (
            s("username"),
            get(mapping, "password")
                .map(str::to_string)
                .or_else(|| s("password")),
        )
    };
    let opts = ServerOptions {
        endpoints,
        ssl_key: s("ssl_key"),
        ssl_cert: s("ssl_cert"),
        ssl_ca: s("ssl_ca"),
        ssl_servername: s("ssl_servername"),
        username,
        password,
        connect_timeout: match get(server, "connect_timeout") {
            Some(v) => parse_seconds("connect_timeout", v)?,
            None => Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS),
        },
        request_timeout: match get(server, "request_timeout") {
            Some(v) => parse_seconds("request_timeout", v)?,
            None => Duration::from_secs(DEFAULT_REQUEST_TIMEOUT_SECS),
        },
        fetch_size: get(server, "fetch_size")
            .map(parse_fetch_size)
            .transpose()?,
        batch_size: get(server, "batch_size")
            .map(parse_batch_size)
            .transpose()?,
        insert_mode: get(server, "insert_mode")
            .map(parse_insert_mode)
            .transpose()?,
        commit_mode: get(server, "commit_mode")
            .map(parse_commit_mode)
            .transpose()?,
        password_required: password_required(mapping)?,
        mapping_password: get(mapping, "password").is_some(),
    };
    match (&opts.ssl_cert, &opts.ssl_key) {
        (Some(_), None) => return Err(OptionError::Requires("ssl_cert", "ssl_key")),
        (None, Some(_)) => return Err(OptionError::Requires("ssl_key", "ssl_cert")),
        _ => {}
    }
    for (field, name) in [
        (&opts.ssl_key, "ssl_key"),
        (&opts.ssl_cert, "ssl_cert"),
        (&opts.ssl_ca, "ssl_ca"),
        (&opts.ssl_servername, "ssl_servername"),
    ] {
        if field.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(OptionError::InvalidValue {
                name,
                value: String::new(),
                expected: "a non-empty string",
            });
        }
    }
    if opts.password.is_some() && opts.username.is_none() {
        return Err(OptionError::Requires("password", "username"));
    }
    if opts.tls_configured() && opts.endpoints.iter().any(|e| e.tls == Some(false)) {
        return Err(OptionError::Conflict("ssl_ca", "connstr"));
    }
    Ok(opts)
}

/// Parse a foreign table's options.
pub fn parse_table(opts: &[(String, String)]) -> Result<TableOptions, OptionError> {
    check_names(OptionContext::Table, opts)?;
    let rowid_column = get(opts, "rowid_column")
        .ok_or(OptionError::Missing {
            name: "rowid_column",
            object: "foreign table",
        })?
        .to_string();
    if rowid_column.is_empty() {
        return Err(OptionError::InvalidValue {
            name: "rowid_column",
            value: rowid_column,
            expected: "the name of a column of the table",
        });
    }
    let bytes = |n: &str| get(opts, n).map(|v| v.as_bytes().to_vec());
    let t = TableOptions {
        rowid_column,
        prefix: bytes("prefix"),
        keys_only: get(opts, "keys_only")
            .map(|v| parse_bool("keys_only", v))
            .transpose()?
            .unwrap_or(false),
        revision: get(opts, "revision")
            .map(|v| {
                parse_int(
                    "revision",
                    v,
                    0,
                    i64::MAX,
                    "a non-negative integer (0 means the latest revision)",
                )
            })
            .transpose()?
            .unwrap_or(0),
        key: bytes("key"),
        range_end: bytes("range_end"),
        consistency: get(opts, "consistency")
            .map(parse_consistency)
            .transpose()?
            .unwrap_or(Consistency::Linearizable),
        fetch_size: get(opts, "fetch_size").map(parse_fetch_size).transpose()?,
        batch_size: get(opts, "batch_size").map(parse_batch_size).transpose()?,
        insert_mode: get(opts, "insert_mode")
            .map(parse_insert_mode)
            .transpose()?,
        commit_mode: get(opts, "commit_mode")
            .map(parse_commit_mode)
            .transpose()?,
        invalid_values: get(opts, "invalid_values")
            .map(parse_invalid_values)
            .transpose()?
            .unwrap_or_default(),
    };
    if t.prefix.is_some() {
        if t.key.is_some() {
            return Err(OptionError::Conflict("prefix", "key"));
        }
        if t.range_end.is_some() {
            return Err(OptionError::Conflict("prefix", "range_end"));
        }
    }
    if t.key.as_deref() == Some(b"") {
        return Err(OptionError::InvalidValue {
            name: "key",
            value: String::new(),
            expected: "a non-empty key",
        });
    }
    // In etcd an empty range_end means "the key alone" and "\0" means
    // "every key from key on"; here range_end is the exclusive end of the
    // table's range, so '' would be a range no key is in (an always-empty
    // table).  Refuse it like key ''.
    if t.range_end.as_deref() == Some(b"") {
        return Err(OptionError::InvalidValue {
            name: "range_end",
            value: String::new(),
            expected: "a non-empty key, the exclusive end of the range (an empty range_end would select no key; for every key from option \"key\" on, omit range_end and key and query WHERE key >= '...', or use option \"prefix\")",
        });
    }
    if let (Some(k), Some(e)) = (&t.key, &t.range_end) {
        if e.as_slice() <= k.as_slice() {
            return Err(OptionError::InvalidValue {
                name: "range_end",
                value: String::from_utf8_lossy(e).into_owned(),
                expected: "a key greater than option \"key\"",
            });
        }
    }
    Ok(t)
}

/// DDL-time validation of one object's option list.  User mapping and
/// server lists are checked on their own; the merge happens at run time.
pub fn validate(ctx: OptionContext, opts: &[(String, String)]) -> Result<(), OptionError> {
    match ctx {
        OptionContext::Server => parse_server(opts, &[]).map(|_| ()),
        OptionContext::UserMapping => {
            check_names(ctx, opts)?;
            password_required(opts).map(|_| ())
        }
        OptionContext::Table => parse_table(opts).map(|_| ()),
        OptionContext::Wrapper | OptionContext::Column => check_names(ctx, opts),
    }
}

/// Effective page size: table option, then server option, else the
/// adaptive default.  Returns `(keys per request, adaptive)`: an explicit
/// `fetch_size` is used for every request; the default starts at
/// [`DEFAULT_FETCH_SIZE`] and adapts (see `scan::Pager`).
pub fn effective_fetch_size(server: &ServerOptions, table: &TableOptions) -> (u32, bool) {
    match table.fetch_size.or(server.fetch_size) {
        Some(n) => (n, false),
        None => (DEFAULT_FETCH_SIZE, true),
    }
}

/// Effective write batch size: table option, then server option, then default.
pub fn effective_batch_size(server: &ServerOptions, table: &TableOptions) -> u32 {
    table
        .batch_size
        .unwrap_or_else(|| server_batch_size(server))
}

/// The write batch size of writes that belong to no table (the key-value
/// functions): the server option, then the default.
pub fn server_batch_size(server: &ServerOptions) -> u32 {
    server.batch_size.unwrap_or(DEFAULT_BATCH_SIZE)
}

/// Where the commit mode in force came from, most specific first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitModeFrom {
    /// `etcd_fdw.commit_mode` was set (SET, ALTER ROLE/DATABASE ... SET,
    /// postgresql.conf, ...: any source but the built-in default).
    Setting,
    /// The foreign table's `commit_mode` option.
    Table,
    /// The server's `commit_mode` option.
    Server,
    /// None of them: `transaction`.
    Default,
}

/// The commit mode of a write: `setting` (the GUC's value when it was set,
/// `None` while it has its built-in default), then the table option
/// (`None` for writes that belong to no table), then the server option,
/// then `transaction`.
pub fn effective_commit_mode(
    setting: Option<CommitMode>,
    server: &ServerOptions,
    table: Option<&TableOptions>,
) -> (CommitMode, CommitModeFrom) {
    if let Some(m) = setting {
        return (m, CommitModeFrom::Setting);
    }
    if let Some(m) = table.and_then(|t| t.commit_mode) {
        return (m, CommitModeFrom::Table);
    }
    if let Some(m) = server.commit_mode {
        return (m, CommitModeFrom::Server);
    }
    (CommitMode::default(), CommitModeFrom::Default)
}

/// Effective insert mode: table option, then server option, then `create`.
pub fn effective_insert_mode(server: &ServerOptions, table: &TableOptions) -> InsertMode {
    table.insert_mode.or(server.insert_mode).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_mode_table_over_server() {
        let o = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let server = parse_server(
            &o(&[("connstr", "127.0.0.1:2379"), ("insert_mode", "PUT")]),
            &[],
        )
        .unwrap();
        let plain = parse_table(&o(&[("rowid_column", "key")])).unwrap();
        let create =
            parse_table(&o(&[("rowid_column", "key"), ("insert_mode", "create")])).unwrap();
        assert_eq!(effective_insert_mode(&server, &plain), InsertMode::Put);
        assert_eq!(effective_insert_mode(&server, &create), InsertMode::Create);
        let bare = parse_server(&o(&[("connstr", "127.0.0.1:2379")]), &[]).unwrap();
        assert_eq!(effective_insert_mode(&bare, &plain), InsertMode::Create);
        let err =
            parse_table(&o(&[("rowid_column", "key"), ("insert_mode", "upsert")])).unwrap_err();
        assert!(err.to_string().contains("insert_mode"), "{err}");
        assert!(err.hint().unwrap().contains("create or put"), "{err}");
    }

    #[test]
    fn identities_a_non_superuser_would_borrow() {
        let o = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let srv = |extra: &[(&str, &str)]| {
            let mut v = vec![("connstr", "127.0.0.1:2379")];
            v.extend_from_slice(extra);
            o(&v)
        };
        let cert = [("ssl_ca", "ca"), ("ssl_cert", "c"), ("ssl_key", "k")];
        let borrowed = |server: &[(&str, &str)], mapping: &[(&str, &str)]| {
            parse_server(&srv(server), &o(mapping))
                .unwrap()
                .borrowed_identity()
        };
        // no identity at all, or the mapping's own password
        assert_eq!(borrowed(&[], &[]), None);
        assert_eq!(borrowed(&[], &[("username", "u"), ("password", "p")]), None);
        assert_eq!(
            borrowed(&cert, &[("username", "u"), ("password", "p")]),
            None
        );
        assert_eq!(borrowed(&[("username", "u")], &[("password", "p")]), None);
        // borrowed: a client certificate or a server-level user
        assert_eq!(borrowed(&cert, &[]), Some("ssl_cert"));
        assert_eq!(
            borrowed(&[("username", "u"), ("password", "p")], &[]),
            Some("username")
        );
        assert_eq!(borrowed(&cert, &[("username", "u")]), Some("username"));
        // ... unless a superuser said so on the mapping
        assert_eq!(borrowed(&cert, &[("password_required", "false")]), None);
        assert_eq!(
            borrowed(&cert, &[("password_required", "true")]),
            Some("ssl_cert")
        );
        assert!(validate(
            OptionContext::UserMapping,
            &o(&[("password_required", "maybe")])
        )
        .is_err());
        assert!(validate(
            OptionContext::UserMapping,
            &o(&[("password_required", "off")])
        )
        .is_ok());
    }

    fn o(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn server_requires_connstr() {
        assert_eq!(
            validate(OptionContext::Server, &[]),
            Err(OptionError::Missing {
                name: "connstr",
                object: "server"
            })
        );
    }

    #[test]
    fn connstr_lists() {
        let eps = parse_connstr("127.0.0.1:2379, https://h:1,http://[::1]:3").unwrap();
        assert_eq!(eps.len(), 3);
        assert_eq!(eps[0].url(false), "http://127.0.0.1:2379");
        assert_eq!(eps[0].url(true), "https://127.0.0.1:2379");
        assert_eq!(eps[1].url(false), "https://h:1");
        assert_eq!(eps[2].url(true), "http://[::1]:3");
        for bad in [
            "",
            "host",
            "a:b",
            "127.0.0.1:2379,",
            "ftp://x:1",
            "h:0",
            "::1:2",
        ] {
            assert!(parse_connstr(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn connstrs_that_cannot_be_dialled_are_refused() {
        // Accepted here once, they failed only when connecting ("invalid
        // URI"); the validator refuses them now.
        for bad in [
            "a b:1",
            "http:// h:1",
            "h<x>:1",
            "caf\u{e9}:2379",
            "h\u{0}:1",
        ] {
            assert!(parse_connstr(bad).is_err(), "{bad:?} must be refused");
        }
        for good in [
            "h:1",
            "my-host.example:2379",
            "[fe80::1]:2379",
            "10.0.0.1:1",
        ] {
            assert!(parse_connstr(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn unknown_option_lists_valid_ones() {
        let e = validate(
            OptionContext::Server,
            &o(&[("connstr", "h:1"), ("bogus", "x")]),
        )
        .unwrap_err();
        assert!(matches!(e, OptionError::Unknown { ref name, .. } if name == "bogus"));
        assert!(e.hint().unwrap().contains("connstr"));
        let e = validate(OptionContext::UserMapping, &o(&[("connstr", "h:1")])).unwrap_err();
        assert!(e.hint().unwrap().contains("username, password"));
    }

    #[test]
    fn server_values() {
        let s = parse_server(
            &o(&[
                ("connstr", "h:1"),
                ("connect_timeout", "2.5"),
                ("username", "srv"),
                ("password", "p1"),
            ]),
            &o(&[("username", "um"), ("password", "p2")]),
        )
        .unwrap();
        assert_eq!(s.connect_timeout, Duration::from_millis(2500));
        assert_eq!(s.request_timeout, Duration::from_secs(30));
        assert_eq!(s.username.as_deref(), Some("um"));
        assert_eq!(s.password.as_deref(), Some("p2"));
        for (n, v) in [
            ("connect_timeout", "0"),
            ("connect_timeout", "ten"),
            ("request_timeout", "-1"),
            ("fetch_size", "0"),
            ("batch_size", "x"),
        ] {
            let e = parse_server(&o(&[("connstr", "h:1"), (n, v)]), &[]).unwrap_err();
            assert!(
                matches!(e, OptionError::InvalidValue { name, .. } if name == n),
                "{n}={v}: {e:?}"
            );
        }
        assert_eq!(
            parse_server(&o(&[("connstr", "h:1"), ("ssl_cert", "/c")]), &[]),
            Err(OptionError::Requires("ssl_cert", "ssl_key"))
        );
        assert_eq!(
            parse_server(&o(&[("connstr", "h:1"), ("ssl_key", "/k")]), &[]),
            Err(OptionError::Requires("ssl_key", "ssl_cert"))
        );
        assert!(parse_server(&o(&[("connstr", "http://h:1"), ("ssl_ca", "/ca")]), &[]).is_err());
    }

    #[test]
    fn timeouts_below_a_nanosecond_are_refused() {
        // Positive, but Duration::from_secs_f64 makes them zero: a timeout
        // that expires at once.
        for v in ["1e-10", "0.0000000001", "4e-300"] {
            let e = parse_server(&o(&[("connstr", "h:1"), ("request_timeout", v)]), &[]);
            assert!(
                matches!(
                    e,
                    Err(OptionError::InvalidValue {
                        name: "request_timeout",
                        ..
                    })
                ),
                "{v}: {e:?}"
            );
        }
        let s = parse_server(&o(&[("connstr", "h:1"), ("connect_timeout", "1e-9")]), &[]);
        assert_eq!(s.unwrap().connect_timeout, Duration::from_nanos(1));
    }

    #[test]
    fn table_values() {
        assert_eq!(
            validate(OptionContext::Table, &[]),
            Err(OptionError::Missing {
                name: "rowid_column",
                object: "foreign table"
            })
        );
        let t = parse_table(&o(&[
            ("rowid_column", "key"),
            ("keys_only", "TRUE"),
            ("revision", "7"),
            ("consistency", "s"),
        ]))
        .unwrap();
        assert!(t.keys_only);
        assert_eq!(t.revision, 7);
        assert_eq!(t.consistency, Consistency::Serializable);
        assert_eq!(t.read_only_reason(), Some("keys_only"));
        assert_eq!(t.invalid_values, InvalidValues::Error);
        for (v, want) in [
            ("error", InvalidValues::Error),
            ("NULL", InvalidValues::Null),
            (" null ", InvalidValues::Null),
        ] {
            let t = parse_table(&o(&[("rowid_column", "key"), ("invalid_values", v)])).unwrap();
            assert_eq!(t.invalid_values, want, "{v:?}");
        }
        for (n, v) in [
            ("keys_only", "maybe"),
            ("revision", "-1"),
            ("revision", "1.5"),
            ("consistency", "x"),
            ("invalid_values", "skip"),
            ("invalid_values", ""),
            ("invalid_values", "nulls"),
        ] {
            let e = parse_table(&o(&[("rowid_column", "key"), (n, v)])).unwrap_err();
            assert!(matches!(e, OptionError::InvalidValue { name, .. } if name == n));
        }
        assert_eq!(
            parse_table(&o(&[
                ("rowid_column", "key"),
                ("prefix", "a"),
                ("key", "b")
            ])),
            Err(OptionError::Conflict("prefix", "key"))
        );
        assert!(parse_table(&o(&[
            ("rowid_column", "key"),
            ("key", "b"),
            ("range_end", "a")
        ]))
        .is_err());
    }

    #[test]
    fn commit_mode_precedence() {
        let server = |m: Option<&str>| {
            let mut v = o(&[("connstr", "h:1")]);
            v.extend(m.map(|m| ("commit_mode".to_string(), m.to_string())));
            parse_server(&v, &[]).unwrap()
        };
        let table = |m: Option<&str>| {
            let mut v = o(&[("rowid_column", "key")]);
            v.extend(m.map(|m| ("commit_mode".to_string(), m.to_string())));
            parse_table(&v).unwrap()
        };
        use CommitMode::*;
        use CommitModeFrom as F;
        let (s0, s1) = (server(None), server(Some("Statement")));
        let (t0, t1, tt) = (
            table(None),
            table(Some("statement")),
            table(Some("transaction")),
        );
        assert_eq!(
            effective_commit_mode(None, &s0, Some(&t0)),
            (Transaction, F::Default)
        );
        assert_eq!(
            effective_commit_mode(None, &s0, None),
            (Transaction, F::Default)
        );
        assert_eq!(
            effective_commit_mode(None, &s1, Some(&t0)),
            (Statement, F::Server)
        );
        assert_eq!(
            effective_commit_mode(None, &s1, None),
            (Statement, F::Server)
        );
        assert_eq!(
            effective_commit_mode(None, &s0, Some(&t1)),
            (Statement, F::Table)
        );
        assert_eq!(
            effective_commit_mode(None, &s1, Some(&tt)),
            (Transaction, F::Table)
        );
        assert_eq!(
            effective_commit_mode(Some(Transaction), &s1, Some(&t1)),
            (Transaction, F::Setting)
        );
        for bad in ["", "stmt", "transactions", "on"] {
            let e = parse_table(&o(&[("rowid_column", "key"), ("commit_mode", bad)])).unwrap_err();
            assert!(
                matches!(
                    e,
                    OptionError::InvalidValue {
                        name: "commit_mode",
                        ..
                    }
                ),
                "{bad:?}: {e:?}"
            );
            assert!(e.hint().unwrap().contains("transaction or statement"));
            let e = parse_server(&o(&[("connstr", "h:1"), ("commit_mode", bad)]), &[]).unwrap_err();
            assert!(matches!(
                e,
                OptionError::InvalidValue {
                    name: "commit_mode",
                    ..
                }
            ));
        }
    }

    #[test]
    fn empty_range_end_is_refused_and_long_values_are_cut() {
        for extra in [&[][..], &[("key", "a")][..]] {
            let mut v = o(&[("rowid_column", "key"), ("range_end", "")]);
            v.extend(o(extra));
            let e = parse_table(&v).unwrap_err();
            assert!(
                matches!(
                    e,
                    OptionError::InvalidValue {
                        name: "range_end",
                        ..
                    }
                ),
                "{e:?}"
            );
            assert!(e.hint().unwrap().contains("prefix"), "{e:?}");
        }
        let long = "x".repeat(100 * 1024);
        let e = parse_table(&o(&[("rowid_column", "key"), ("keys_only", &long)])).unwrap_err();
        let msg = e.to_string();
        assert!(msg.len() < 200, "{}", msg.len());
        assert!(
            msg.ends_with(&format!("\"{}...\"", "x".repeat(SHOWN_VALUE_CHARS))),
            "{msg}"
        );
        // cut at a character, not a byte
        let wide = "\u{e9}".repeat(100);
        let shown = shown_value(&wide);
        assert_eq!(shown.chars().count(), SHOWN_VALUE_CHARS + 3);
        assert_eq!(shown_value("short"), "short");
        assert_eq!(
            shown_value(&"y".repeat(SHOWN_VALUE_CHARS)),
            "y".repeat(SHOWN_VALUE_CHARS)
        );
    }

    #[test]
    fn table_key_sets() {
        let t = |pairs: &[(&str, &str)]| {
            let mut v = o(&[("rowid_column", "key")]);
            v.extend(o(pairs));
            parse_table(&v).unwrap().key_set()
        };
        assert!(t(&[]).is_all());
        assert_eq!(t(&[("key", "a")]).point_count(), Some(1));
        assert_eq!(
            t(&[("prefix", "app/")]).ranges(),
            &[KeyRange::prefix(b"app/")]
        );
        assert_eq!(
            t(&[("key", "a"), ("range_end", "c")]).ranges(),
            &[KeyRange::between(b"a", Some(b"c"))]
        );
    }
}
