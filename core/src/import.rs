//! IMPORT FOREIGN SCHEMA: the remote schema name is a key prefix, and every
//! distinct path segment after it becomes a foreign table.
//!
//! Keys `/app/users/1` and `/app/config/x` under `/app/` give the tables
//! `users` (option `prefix '/app/users/'`) and `config`.  [`SegmentScan`]
//! finds the segments with keys-only range requests at one revision (the
//! first answer's), and skips each segment's whole range as soon as it has
//! seen one of its keys: the next request starts at the end of the
//! segment's prefix range (`/app/users0`), so an import makes about one
//! request per table, not one per page of keys, and keeps only the
//! segments in memory.  [`create_table_sql`] writes the statements.

use crate::keyrange::{prefix_end, successor, KeyRange};
use crate::options::OptionError;
use crate::scan::PageRequest;

/// Options of IMPORT FOREIGN SCHEMA.
pub const IMPORT_OPTIONS: &[&str] = &["separator", "value_type", "metadata", "prefix", "layout"];

/// How the keys under the prefix become tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One table per distinct segment (the default).
    Segments,
    /// A Patroni cluster (the prefix is `<namespace><scope>/`): the table
    /// `members` (jsonb values) and one table per single key of
    /// [`crate::patroni::SINGLE_KEYS`].
    Patroni,
}

/// The metadata columns `metadata 'true'` adds, all `bigint`.
pub const METADATA_COLUMNS: &[&str] = &["create_revision", "mod_revision", "version", "lease"];

/// How many keys without a segment (or skipped segments of one kind) a
/// NOTICE names; the rest are only counted.
pub const LISTED: usize = 5;

/// The type of the imported tables' `value` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    Text,
    Jsonb,
    Bytea,
}

impl ValueType {
    pub fn sql(self) -> &'static str {
        match self {
            ValueType::Text => "text",
            ValueType::Jsonb => "jsonb",
            ValueType::Bytea => "bytea",
        }
    }
}

/// IMPORT FOREIGN SCHEMA's OPTIONS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportOptions {
    /// What ends a table's segment (default `/`).
    pub separator: String,
    pub value_type: ValueType,
    /// Add the metadata columns.
    pub metadata: bool,
    /// The key prefix to import instead of the remote schema name (which
    /// PostgreSQL truncates to 63 bytes and cannot be empty).
    pub prefix: Option<String>,
    pub layout: Layout,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            separator: "/".into(),
            value_type: ValueType::Text,
            metadata: false,
            prefix: None,
            layout: Layout::Segments,
        }
    }
}

/// Why IMPORT's options were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImportOptionError {
    /// Not an IMPORT option (HV00D).
    #[error("invalid option \"{0}\"")]
    Unknown(String),
    /// A bad value or a repeated option, as for the other objects.
    #[error(transparent)]
    Invalid(#[from] OptionError),
}

impl ImportOptionError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ImportOptionError::Unknown(_) => Some(format!(
                "Valid options of IMPORT FOREIGN SCHEMA are: {}",
                IMPORT_OPTIONS.join(", ")
            )),
            ImportOptionError::Invalid(e) => e.hint(),
        }
    }
}

/// Parse IMPORT's OPTIONS (name, value) pairs.
pub fn parse_options(pairs: &[(String, String)]) -> Result<ImportOptions, ImportOptionError> {
    let mut o = ImportOptions::default();
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in pairs {
        if seen.contains(&name.as_str()) {
            return Err(OptionError::Duplicate(name.clone()).into());
        }
        seen.push(name);
        let invalid = |name: &'static str, expected: &'static str| {
            ImportOptionError::from(OptionError::InvalidValue {
                name,
                value: value.clone(),
                expected,
            })
        };
        match name.as_str() {
            "separator" => {
                if value.is_empty() {
                    return Err(invalid("separator", "a non-empty string"));
                }
                o.separator = value.clone();
            }
            "value_type" => {
                o.value_type = match value.trim().to_ascii_lowercase().as_str() {
                    "text" => ValueType::Text,
                    "jsonb" => ValueType::Jsonb,
                    "bytea" => ValueType::Bytea,
                    _ => return Err(invalid("value_type", "text, jsonb or bytea")),
                }
            }
            "metadata" => o.metadata = crate::options::parse_bool("metadata", value)?,
            "prefix" => o.prefix = Some(value.clone()),
            "layout" => {
                o.layout = match value.trim().to_ascii_lowercase().as_str() {
                    "segments" => Layout::Segments,
                    "patroni" => Layout::Patroni,
                    _ => return Err(invalid("layout", "segments or patroni")),
                }
            }
            _ => return Err(ImportOptionError::Unknown(name.clone())),
        }
    }
    if o.layout == Layout::Patroni {
        // The layout decides the tables and their value types.
        for name in ["separator", "value_type"] {
            if seen.contains(&name) {
                return Err(OptionError::Conflict(
                    if name == "separator" {
                        "separator"
                    } else {
                        "value_type"
                    },
                    "layout",
                )
                .into());
            }
        }
    }
    Ok(o)
}

/// The tables of a Patroni cluster under `prefix` (`<namespace><scope>/`):
/// `members` (prefix `<prefix>members/`, jsonb values) and each single key
/// (option `key`), jsonb or text as Patroni writes it.
pub fn patroni_tables(prefix: &str) -> Vec<PatroniTable> {
    let mut out = vec![PatroniTable {
        name: "members".into(),
        range: TableRange::Prefix(format!("{prefix}members/")),
        value_type: ValueType::Jsonb,
    }];
    out.extend(
        crate::patroni::SINGLE_KEYS
            .iter()
            .map(|(name, json)| PatroniTable {
                name: (*name).into(),
                range: TableRange::Key(format!("{prefix}{name}")),
                value_type: if *json {
                    ValueType::Jsonb
                } else {
                    ValueType::Text
                },
            }),
    );
    out
}

/// Which keys a table of [`patroni_tables`] reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableRange {
    /// Option `prefix`.
    Prefix(String),
    /// Option `key`: exactly this key.
    Key(String),
}

/// A table of a Patroni cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatroniTable {
    pub name: String,
    pub range: TableRange,
    pub value_type: ValueType,
}

/// Whether a key segment or a key right under a Patroni cluster's prefix
/// is one [`patroni_tables`] reads (the rest gets a NOTICE).
pub fn patroni_imports(relative: &str) -> bool {
    relative == "members"
        || crate::patroni::SINGLE_KEYS
            .iter()
            .any(|(name, _)| *name == relative)
}

/// The CREATE FOREIGN TABLE statement of a Patroni cluster's table.
pub fn create_patroni_table_sql(
    schema_quoted: &str,
    server_quoted: &str,
    table: &PatroniTable,
    metadata: bool,
    quote_ident: &dyn Fn(&str) -> String,
) -> String {
    let mut columns = vec![
        format!("{} text", quote_ident("key")),
        format!("{} {}", quote_ident("value"), table.value_type.sql()),
    ];
    if metadata {
        columns.extend(
            METADATA_COLUMNS
                .iter()
                .map(|c| format!("{} bigint", quote_ident(c))),
        );
    }
    let (option, value) = match &table.range {
        TableRange::Prefix(p) => ("prefix", p),
        TableRange::Key(k) => ("key", k),
    };
    format!(
        "CREATE FOREIGN TABLE {schema_quoted}.{} ({}) SERVER {server_quoted} OPTIONS ({option} {}, rowid_column {})",
        quote_ident(&table.name),
        columns.join(", "),
        quote_literal(value),
        quote_literal("key"),
    )
}

/// Why a segment cannot be a table name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Two separators in a row (`/app//x`).
    Empty,
    NotUtf8,
    /// Holds a zero byte, which no name or option value can.
    ZeroByte,
    /// Longer than a PostgreSQL name (NAMEDATALEN - 1 bytes).
    TooLong,
    /// The database encoding cannot hold the name or prefix.
    NotInDatabaseEncoding,
}

impl SkipReason {
    pub const ALL: [SkipReason; 5] = [
        SkipReason::Empty,
        SkipReason::NotUtf8,
        SkipReason::ZeroByte,
        SkipReason::TooLong,
        SkipReason::NotInDatabaseEncoding,
    ];

    pub fn describe(self, max_name_bytes: usize) -> String {
        match self {
            SkipReason::Empty => "an empty segment (two separators in a row)".into(),
            SkipReason::NotUtf8 => "not valid UTF-8".into(),
            SkipReason::ZeroByte => "contains a zero byte".into(),
            SkipReason::TooLong => format!("longer than {max_name_bytes} bytes"),
            SkipReason::NotInDatabaseEncoding => {
                "characters the database encoding cannot hold".into()
            }
        }
    }
}

/// A segment's table name, or why it cannot have one.
pub fn table_name(segment: &[u8], max_name_bytes: usize) -> Result<&str, SkipReason> {
    if segment.is_empty() {
        return Err(SkipReason::Empty);
    }
    if segment.contains(&0) {
        return Err(SkipReason::ZeroByte);
    }
    let name = std::str::from_utf8(segment).map_err(|_| SkipReason::NotUtf8)?;
    if name.len() > max_name_bytes {
        return Err(SkipReason::TooLong);
    }
    Ok(name)
}

/// A table to create: its name and key prefix (import prefix + segment +
/// separator).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub prefix: String,
}

/// Some items, the first [`LISTED`] of them kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub count: u64,
    pub first: Vec<Vec<u8>>,
}

impl Sample {
    fn add(&mut self, item: &[u8]) {
        self.count += 1;
        if self.first.len() < LISTED {
            self.first.push(item.to_vec());
        }
    }
}

/// First and largest number of keys a request of [`SegmentScan`] asks for.
const FIRST_LIMIT: u64 = 8;
const MAX_LIMIT: u64 = 1000;

/// Finds the distinct segments under a prefix; see the module comment.
#[derive(Clone, Debug)]
pub struct SegmentScan {
    prefix: Vec<u8>,
    separator: Vec<u8>,
    max_name_bytes: usize,
    /// Keys still to read.
    range: KeyRange,
    /// Pinned by the first answer.
    revision: i64,
    limit: u64,
    done: bool,
    /// The prefix of the last segment seen: its keys are not looked at.
    skipping: Option<Vec<u8>>,
    /// Whether any key was under the prefix.
    pub any_key: bool,
    pub tables: Vec<Table>,
    /// Keys right under the prefix, with no separator after it.
    pub direct: Sample,
    /// Segments that cannot be table names, by reason (their key
    /// prefixes: import prefix + segment + separator).
    pub skipped: Vec<(SkipReason, Sample)>,
    pub requests: u64,
}

impl SegmentScan {
    /// Segments under `prefix` (empty: the whole keyspace) ended by
    /// `separator` (not empty); names longer than `max_name_bytes` are
    /// skipped.
    pub fn new(prefix: &[u8], separator: &[u8], max_name_bytes: usize) -> Self {
        assert!(!separator.is_empty(), "empty separator");
        SegmentScan {
            prefix: prefix.to_vec(),
            separator: separator.to_vec(),
            max_name_bytes,
            range: KeyRange::prefix(prefix),
            revision: 0,
            limit: FIRST_LIMIT,
            done: false,
            skipping: None,
            any_key: false,
            tables: Vec::new(),
            direct: Sample::default(),
            skipped: Vec::new(),
            requests: 0,
        }
    }

    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The next keys-only request, or `None` when the scan is complete.
    pub fn next_request(&self) -> Option<PageRequest> {
        if self.done || self.range.is_empty() {
            return None;
        }
        let (key, range_end) = self.range.to_etcd();
        Some(PageRequest {
            key,
            range_end,
            limit: self.limit as i64,
            sort: None,
            revision: self.revision,
            keys_only: true,
            serializable: false,
            count_only: false,
        })
    }

    /// Take the keys (in etcd's order) of the answer to
    /// [`Self::next_request`]; etcd said `more`, at `header_revision`.
    pub fn accept<'a>(
        &mut self,
        keys: impl IntoIterator<Item = &'a [u8]>,
        more: bool,
        header_revision: i64,
    ) {
        self.requests += 1;
        if self.revision == 0 {
            self.revision = header_revision;
        }
        let (mut seen, mut wasted) = (0u64, 0u64);
        let mut last: Option<&[u8]> = None;
        for key in keys {
            seen += 1;
            last = Some(key);
            if self.skipping.as_deref().is_some_and(|p| key.starts_with(p)) {
                wasted += 1;
                continue;
            }
            let Some(rest) = key.strip_prefix(self.prefix.as_slice()) else {
                continue; // etcd answered outside the range: ignore
            };
            self.any_key = true;
            let Some(at) = find(rest, &self.separator) else {
                self.direct.add(key);
                continue;
            };
            let segment = &rest[..at];
            let table_prefix = key[..self.prefix.len() + at + self.separator.len()].to_vec();
            match table_name(segment, self.max_name_bytes) {
                Ok(name) => self.tables.push(Table {
                    name: name.to_string(),
                    // The prefix, segment and separator are all UTF-8.
                    prefix: String::from_utf8_lossy(&table_prefix).into_owned(),
                }),
                Err(reason) => self.skip(reason, &table_prefix),
            }
            self.skipping = Some(table_prefix);
        }
        let next_start = match (more, last) {
            (true, Some(last)) => match &self.skipping {
                // Jump over the rest of the last segment's keys.
                Some(p) if last.starts_with(p) => prefix_end(p),
                _ => Some(successor(last)),
            },
            _ => None,
        };
        match next_start {
            Some(start) => {
                self.range.start = start;
                self.done = self.range.is_empty();
            }
            None => self.done = true,
        }
        // Pages that only held new segments and keys without one grow;
        // pages spent on one segment's keys shrink to what was useful.
        let useful = seen - wasted;
        self.limit = if wasted == 0 {
            self.limit.saturating_mul(4).min(MAX_LIMIT)
        } else {
            (useful * 2).clamp(1, MAX_LIMIT)
        };
    }

    /// Drop the tables `check` refuses (checks that need the database,
    /// such as its encoding), counting them as skipped.
    pub fn retain_tables(&mut self, mut check: impl FnMut(&Table) -> Result<(), SkipReason>) {
        let mut refused = Vec::new();
        self.tables.retain(|t| match check(t) {
            Ok(()) => true,
            Err(reason) => {
                refused.push((reason, t.prefix.clone()));
                false
            }
        });
        for (reason, prefix) in refused {
            self.skip(reason, prefix.as_bytes());
        }
    }

    fn skip(&mut self, reason: SkipReason, table_prefix: &[u8]) {
        let i = match self.skipped.iter().position(|(r, _)| *r == reason) {
            Some(i) => i,
            None => {
                self.skipped.push((reason, Sample::default()));
                self.skipped.len() - 1
            }
        };
        self.skipped[i].1.add(table_prefix);
    }

    /// etcd's answer to [`Self::next_request`] was larger than the client
    /// accepts: ask for fewer keys.  False when one key was asked for.
    pub fn shrink(&mut self) -> bool {
        if self.limit <= 1 {
            return false;
        }
        self.limit = (self.limit / 4).max(1);
        true
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `s` as a SQL string literal, as PostgreSQL's `quote_literal_cstr`
/// writes it: quotes doubled, and with backslashes doubled under an `E`
/// prefix when there are any (right whatever `standard_conforming_strings`
/// says).
pub fn quote_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    if s.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in s.chars() {
        if c == '\'' || c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// The CREATE FOREIGN TABLE statement for `table` on `server_quoted` in
/// `schema_quoted`; `quote_ident` quotes a name as PostgreSQL's
/// `quote_identifier` does.
pub fn create_table_sql(
    schema_quoted: &str,
    server_quoted: &str,
    table: &Table,
    opts: &ImportOptions,
    quote_ident: &dyn Fn(&str) -> String,
) -> String {
    let mut columns = vec![
        format!("{} text", quote_ident("key")),
        format!("{} {}", quote_ident("value"), opts.value_type.sql()),
    ];
    if opts.metadata {
        columns.extend(
            METADATA_COLUMNS
                .iter()
                .map(|c| format!("{} bigint", quote_ident(c))),
        );
    }
    format!(
        "CREATE FOREIGN TABLE {schema_quoted}.{} ({}) SERVER {server_quoted} OPTIONS (prefix {}, rowid_column {})",
        quote_ident(&table.name),
        columns.join(", "),
        quote_literal(&table.prefix),
        quote_literal("key"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn options() {
        assert_eq!(parse_options(&[]).unwrap(), ImportOptions::default());
        let p = parse_options(&o(&[
            ("separator", ":"),
            ("value_type", "JSONB"),
            ("metadata", "on"),
            ("prefix", ""),
        ]))
        .unwrap();
        assert_eq!(p.separator, ":");
        assert_eq!(p.value_type, ValueType::Jsonb);
        assert!(p.metadata);
        assert_eq!(p.prefix.as_deref(), Some(""));
        assert_eq!(
            parse_options(&o(&[("layout", " Patroni ")]))
                .unwrap()
                .layout,
            Layout::Patroni
        );
        assert_eq!(
            parse_options(&o(&[("layout", "segments"), ("separator", ":")]))
                .unwrap()
                .layout,
            Layout::Segments
        );
        assert_eq!(
            parse_options(&o(&[("layout", "patroni"), ("value_type", "text")])).unwrap_err(),
            ImportOptionError::Invalid(OptionError::Conflict("value_type", "layout"))
        );
        assert_eq!(
            parse_options(&o(&[("separator", ":"), ("layout", "patroni")])).unwrap_err(),
            ImportOptionError::Invalid(OptionError::Conflict("separator", "layout"))
        );
        let e = parse_options(&o(&[("bogus", "1")])).unwrap_err();
        assert_eq!(e, ImportOptionError::Unknown("bogus".into()));
        assert!(e
            .hint()
            .unwrap()
            .contains("separator, value_type, metadata"));
        for (n, v) in [
            ("separator", ""),
            ("value_type", "json"),
            ("metadata", "maybe"),
            ("layout", "kubernetes"),
        ] {
            let e = parse_options(&o(&[(n, v)])).unwrap_err();
            assert!(
                matches!(e, ImportOptionError::Invalid(OptionError::InvalidValue { name, .. }) if name == n),
                "{n}={v}: {e:?}"
            );
            assert!(e.to_string().contains(n));
        }
        assert_eq!(
            parse_options(&o(&[("metadata", "t"), ("metadata", "f")])),
            Err(OptionError::Duplicate("metadata".into()).into())
        );
    }

    /// Run a scan against a sorted keyspace the way etcd would answer.
    fn run(keys: &[&str], prefix: &str, sep: &str) -> SegmentScan {
        let mut keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        keys.sort();
        run_bytes(&keys, prefix.as_bytes(), sep.as_bytes())
    }

    fn run_bytes(keys: &[&[u8]], prefix: &[u8], sep: &[u8]) -> SegmentScan {
        let mut s = SegmentScan::new(prefix, sep, 63);
        while let Some(req) = s.next_request() {
            assert!(req.keys_only);
            let range = if req.range_end.is_empty() {
                KeyRange::single(&req.key)
            } else if req.range_end == [0] {
                KeyRange::between(&req.key, None)
            } else {
                KeyRange::between(&req.key, Some(&req.range_end))
            };
            let all: Vec<&[u8]> = keys.iter().copied().filter(|k| range.contains(k)).collect();
            let n = (req.limit as usize).min(all.len());
            let rev = if s.requests == 0 { 7 } else { 8 };
            if s.requests > 0 {
                assert_eq!(
                    req.revision, 7,
                    "later pages read the first page's revision"
                );
            }
            s.accept(all[..n].iter().copied(), all.len() > n, rev);
            assert!(s.requests < 10_000, "runaway scan");
        }
        s
    }

    fn tables(s: &SegmentScan) -> Vec<(&str, &str)> {
        s.tables
            .iter()
            .map(|t| (t.name.as_str(), t.prefix.as_str()))
            .collect()
    }

    #[test]
    fn one_table_per_segment() {
        let s = run(
            &[
                "/app/users/1",
                "/app/users/2",
                "/app/config/x",
                "/app/config/y/z",
                "/other/a",
            ],
            "/app/",
            "/",
        );
        assert_eq!(
            tables(&s),
            [("config", "/app/config/"), ("users", "/app/users/")]
        );
        assert_eq!(s.direct.count, 0);
        assert!(s.skipped.is_empty());
        assert_eq!(s.revision(), 7);
    }

    #[test]
    fn skips_each_segments_range() {
        // 10 tables of 1000 keys each: about one request per table.
        let keys: Vec<String> = (0..10)
            .flat_map(|t| (0..1000).map(move |i| format!("/registry/t{t}/ns/{i:04}")))
            .collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let s = run(&refs, "/registry/", "/");
        assert_eq!(s.tables.len(), 10);
        assert_eq!(s.tables[3].prefix, "/registry/t3/");
        assert!(s.requests <= 12, "{} requests", s.requests);
    }

    #[test]
    fn many_keys_without_a_segment_are_read_in_growing_pages() {
        let keys: Vec<String> = (0..5000).map(|i| format!("/app/flag{i:05}")).collect();
        let mut refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        refs.push("/app/zz/1");
        let s = run(&refs, "/app/", "/");
        assert_eq!(s.direct.count, 5000);
        assert_eq!(s.direct.first.len(), LISTED);
        assert_eq!(s.direct.first[0], b"/app/flag00000");
        assert_eq!(tables(&s), [("zz", "/app/zz/")]);
        assert!(s.requests < 15, "{} requests", s.requests);
    }

    #[test]
    fn separators_prefixes_and_odd_segments() {
        let s = run(
            &["app:users:1", "app:users:2", "app:cfg:x", "app:flag"],
            "app:",
            ":",
        );
        assert_eq!(tables(&s), [("cfg", "app:cfg:"), ("users", "app:users:")]);
        assert_eq!(s.direct.count, 1);
        // Multi-byte separator.
        let s = run(&["a::b::c", "a::d"], "", "::");
        assert_eq!(tables(&s), [("a", "a::")]);
        // The whole keyspace and "/".
        let s = run(&["/registry/pods/ns/p", "x/y", "z"], "", "/");
        assert_eq!(tables(&s), [("x", "x/")]);
        assert_eq!(
            s.skipped,
            vec![(
                SkipReason::Empty,
                Sample {
                    count: 1,
                    first: vec![b"/".to_vec()]
                }
            )]
        );
        assert_eq!(s.direct.count, 1);
        let s = run(
            &["/registry/pods/ns/p", "/registry/services/x", "/a"],
            "/",
            "/",
        );
        assert_eq!(tables(&s), [("registry", "/registry/")]);
        let s = run(
            &[
                "/registry/pods/ns/p",
                "/registry/pods/ns/q",
                "/registry/services/specs/x",
            ],
            "/registry/",
            "/",
        );
        assert_eq!(
            tables(&s),
            [
                ("pods", "/registry/pods/"),
                ("services", "/registry/services/")
            ]
        );
        // Names needing quotes are kept as they are.
        let s = run(&["/app/My Table/1", "/app/Users/1"], "/app/", "/");
        assert_eq!(
            tables(&s),
            [("My Table", "/app/My Table/"), ("Users", "/app/Users/")]
        );
        // Nothing under the prefix.
        let s = run(&["/other/x"], "/app/", "/");
        assert!(!s.any_key && s.tables.is_empty());
    }

    #[test]
    fn segments_that_cannot_be_names_are_skipped() {
        let long = format!("/app/{}/x", "n".repeat(64));
        let fits = format!("/app/{}/x", "n".repeat(63));
        let keys: Vec<&[u8]> = vec![
            b"/app//x",
            b"/app//y",
            b"/app/\xff\xfe/1",
            b"/app/a\0b/1",
            long.as_bytes(),
            fits.as_bytes(),
            b"/app/ok/1",
        ];
        let mut sorted = keys.clone();
        sorted.sort();
        let s = run_bytes(&sorted, b"/app/", b"/");
        assert_eq!(
            s.tables.iter().map(|t| t.name.len()).collect::<Vec<_>>(),
            [63, 2]
        );
        let reasons: Vec<(SkipReason, u64)> =
            s.skipped.iter().map(|(r, n)| (*r, n.count)).collect();
        assert_eq!(
            reasons,
            [
                (SkipReason::Empty, 1),
                (SkipReason::ZeroByte, 1),
                (SkipReason::TooLong, 1),
                (SkipReason::NotUtf8, 1)
            ]
        );
        assert_eq!(table_name(b"ok", 63), Ok("ok"));
    }

    #[test]
    fn tables_refused_later_are_counted_as_skipped() {
        let mut s = run(&["/a/café/1", "/a/tea/1", "/a/日本/1"], "/a/", "/");
        s.retain_tables(|t| {
            if t.name.chars().any(|c| c as u32 > 0xff) {
                Err(SkipReason::NotInDatabaseEncoding)
            } else {
                Ok(())
            }
        });
        assert_eq!(tables(&s), [("café", "/a/café/"), ("tea", "/a/tea/")]);
        assert_eq!(
            s.skipped,
            vec![(
                SkipReason::NotInDatabaseEncoding,
                Sample {
                    count: 1,
                    first: vec!["/a/日本/".as_bytes().to_vec()]
                }
            )]
        );
    }

    #[test]
    fn limits_adapt_and_shrink() {
        let mut s = SegmentScan::new(b"p/", b"/", 63);
        assert_eq!(s.next_request().unwrap().limit, 8);
        s.accept([&b"p/a"[..], b"p/b"], true, 3);
        assert_eq!(s.next_request().unwrap().limit, 32, "no waste: grow");
        s.accept([&b"p/c/1"[..], b"p/c/2", b"p/c/3"], true, 3);
        let r = s.next_request().unwrap();
        assert_eq!(r.limit, 2, "one useful key: shrink");
        assert_eq!(r.key, b"p/c0", "skip the rest of p/c/");
        assert_eq!(r.range_end, b"p0");
        assert!(s.shrink());
        assert_eq!(s.next_request().unwrap().limit, 1);
        assert!(!s.shrink());
        s.accept([], false, 3);
        assert_eq!(s.next_request(), None);
    }

    #[test]
    fn literals_and_statements() {
        assert_eq!(quote_literal("/app/"), "'/app/'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b'"), r"E'a\\b'''");
        let q = |s: &str| -> String {
            let plain = s
                .chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_lowercase() || c == '_' || (i > 0 && c.is_ascii_digit()));
            if plain {
                s.to_string()
            } else {
                format!("\"{}\"", s.replace('"', "\"\""))
            }
        };
        let t = Table {
            name: "My \"T\"".into(),
            prefix: "/app/My \"T\"/".into(),
        };
        let mut opts = ImportOptions::default();
        assert_eq!(
            create_table_sql("public", "s", &t, &opts, &q),
            "CREATE FOREIGN TABLE public.\"My \"\"T\"\"\" (key text, value text) SERVER s \
             OPTIONS (prefix '/app/My \"T\"/', rowid_column 'key')"
        );
        opts.value_type = ValueType::Bytea;
        opts.metadata = true;
        let t = Table {
            name: "users".into(),
            prefix: "it's\\".into(),
        };
        assert_eq!(
            create_table_sql("\"S\"", "\"my srv\"", &t, &opts, &q),
            "CREATE FOREIGN TABLE \"S\".users (key text, value bytea, create_revision bigint, \
             mod_revision bigint, version bigint, lease bigint) SERVER \"my srv\" \
             OPTIONS (prefix E'it''s\\\\', rowid_column 'key')"
        );
    }

    #[test]
    fn patroni_layout() {
        let tables = patroni_tables("/service/demo/");
        let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "members",
                "config",
                "leader",
                "status",
                "initialize",
                "failover",
                "sync",
                "history"
            ]
        );
        assert_eq!(
            tables[0].range,
            TableRange::Prefix("/service/demo/members/".into())
        );
        assert_eq!(
            tables[2].range,
            TableRange::Key("/service/demo/leader".into())
        );
        assert_eq!(tables[2].value_type, ValueType::Text);
        assert_eq!(tables[1].value_type, ValueType::Jsonb);
        assert!(patroni_imports("members") && patroni_imports("history"));
        assert!(!patroni_imports("failsafe") && !patroni_imports("optime"));
        let q = |s: &str| s.to_string();
        assert_eq!(
            create_patroni_table_sql("p", "s", &tables[0], false, &q),
            "CREATE FOREIGN TABLE p.members (key text, value jsonb) SERVER s \
             OPTIONS (prefix '/service/demo/members/', rowid_column 'key')"
        );
        assert_eq!(
            create_patroni_table_sql("p", "s", &tables[1], true, &q),
            "CREATE FOREIGN TABLE p.config (key text, value jsonb, create_revision bigint, \
             mod_revision bigint, version bigint, lease bigint) SERVER s \
             OPTIONS (key '/service/demo/config', rowid_column 'key')"
        );
    }
}
