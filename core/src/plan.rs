//! The planner's decision for one foreign scan, as plain data: which keys,
//! which conditions still need run-time values (parameters), sort, limit
//! and request flags.  Encoded to a string so it can travel in the plan
//! tree's `fdw_private` (plans are copied and cached by PostgreSQL).

use crate::keyrange::{KeyRange, KeySet};
use crate::options::{Consistency, TableOptions};
use crate::scan::SortField;

/// A pushed-down comparison of the key with a value known at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CondOp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
    /// `starts_with(key, v)`, `key ^@ v`, `key LIKE 'v%'`
    Prefix,
    /// `key = ANY(array)`: the value is every element.
    In,
    /// `key LIKE pattern`: the keys starting with the pattern's literal
    /// prefix (a superset; the clause is rechecked).
    LikePrefix,
}

impl CondOp {
    pub fn name(self) -> &'static str {
        match self {
            CondOp::Eq => "=",
            CondOp::Lt => "<",
            CondOp::Le => "<=",
            CondOp::Gt => ">",
            CondOp::Ge => ">=",
            CondOp::Prefix => "prefix",
            CondOp::In => "= ANY",
            CondOp::LikePrefix => "LIKE",
        }
    }

    fn code(self) -> char {
        match self {
            CondOp::Eq => 'e',
            CondOp::Lt => 'l',
            CondOp::Le => 'L',
            CondOp::Gt => 'g',
            CondOp::Ge => 'G',
            CondOp::Prefix => 'p',
            CondOp::In => 'i',
            CondOp::LikePrefix => 'k',
        }
    }

    fn from_code(c: char) -> Option<CondOp> {
        Some(match c {
            'e' => CondOp::Eq,
            'l' => CondOp::Lt,
            'L' => CondOp::Le,
            'g' => CondOp::Gt,
            'G' => CondOp::Ge,
            'p' => CondOp::Prefix,
            'i' => CondOp::In,
            'k' => CondOp::LikePrefix,
            _ => return None,
        })
    }

    /// Swap sides: `v < key` is `key > v`.
    pub fn commute(self) -> CondOp {
        match self {
            CondOp::Lt => CondOp::Gt,
            CondOp::Le => CondOp::Ge,
            CondOp::Gt => CondOp::Lt,
            CondOp::Ge => CondOp::Le,
            other => other,
        }
    }

    /// The keys satisfying `key <op> value` (for `In`, any of `values`).
    /// A NULL value (`None`) satisfies nothing.
    pub fn key_set(self, values: &[Option<Vec<u8>>]) -> KeySet {
        let one = |v: &[u8]| -> KeyRange {
            match self {
                CondOp::Eq | CondOp::In => KeyRange::single(v),
                CondOp::Lt => KeyRange::to(v, false),
                CondOp::Le => KeyRange::to(v, true),
                CondOp::Gt => KeyRange::from(v, false),
                CondOp::Ge => KeyRange::from(v, true),
                CondOp::Prefix => KeyRange::prefix(v),
                CondOp::LikePrefix => match crate::keyrange::like_prefix(v) {
                    Some((p, _)) => KeyRange::prefix(&p),
                    // A dangling escape: PostgreSQL will raise the error.
                    None => KeyRange::all(),
                },
            }
        };
        KeySet::from_ranges(values.iter().flatten().map(|v| one(v)).collect())
    }
}

/// A condition whose value is the `expr_index`-th expression of the plan's
/// `fdw_exprs`, evaluated when the scan starts or is rescanned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamCond {
    pub op: CondOp,
    pub expr_index: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPlan {
    /// Keys known at plan time: the table's range intersected with every
    /// constant condition.
    pub keys: KeySet,
    pub params: Vec<ParamCond>,
    pub sort: Option<(SortField, bool)>,
    pub limit: Option<u64>,
    /// The table says keys_only, or no query column needs the value.
    pub keys_only: bool,
    pub revision: i64,
    pub serializable: bool,
    pub fetch_size: u32,
    pub adaptive_fetch: bool,
    /// Human-readable pushed conditions, for EXPLAIN.
    pub pushed: Vec<String>,
    /// Attributes (0-based) the query never reads: left NULL instead of
    /// being converted.
    pub unused: Vec<u16>,
    /// Keys per read-only transaction when the keys are a key list (the
    /// `batch_size` option); 0: one request per key.
    pub batch_size: u32,
    /// A pushed-down `count(*)`: etcd counts the keys (`count_only`), the
    /// scan returns one row holding the count.
    pub count_only: bool,
    /// The query reads every key of the range (see `ScanSpec::whole_range`).
    pub whole_range: bool,
}

/// First line of an encoded plan: the format and its version.
const PLAN_HEADER: &str = "etcd_fdw scan 1";

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl ScanPlan {
    /// Every key of `table`, every column, in key order: the plan that
    /// conditions, sorts, limits and projections then narrow.
    pub fn whole_table(table: &TableOptions, fetch_size: u32, adaptive_fetch: bool) -> ScanPlan {
        ScanPlan {
            keys: table.key_set(),
            params: Vec::new(),
            sort: None,
            limit: None,
            keys_only: table.keys_only,
            revision: table.revision,
            serializable: table.consistency == Consistency::Serializable,
            fetch_size,
            adaptive_fetch,
            pushed: Vec::new(),
            unused: Vec::new(),
            batch_size: 0,
            count_only: false,
            whole_range: false,
        }
    }

    /// One `name value` pair per line after a version header; bytes in
    /// hex, free text last.
    pub fn encode(&self) -> String {
        let mut out = format!("{PLAN_HEADER}\n");
        for r in self.keys.ranges() {
            out.push_str(&format!(
                "range {} {}\n",
                hex(&r.start),
                r.end.as_deref().map_or("-".to_string(), hex)
            ));
        }
        for p in &self.params {
            out.push_str(&format!("param {} {}\n", p.op.code(), p.expr_index));
        }
        if let Some((f, desc)) = self.sort {
            out.push_str(&format!(
                "sort {} {}\n",
                f.name(),
                if desc { "desc" } else { "asc" }
            ));
        }
        if let Some(l) = self.limit {
            out.push_str(&format!("limit {l}\n"));
        }
        out.push_str(&format!(
            "flags {} {} {} {} {}\n",
            self.keys_only as u8,
            self.revision,
            self.serializable as u8,
            self.fetch_size,
            self.adaptive_fetch as u8
        ));
        if self.batch_size > 0 {
            out.push_str(&format!("batch {}\n", self.batch_size));
        }
        if self.count_only {
            out.push_str("count 1\n");
        }
        if self.whole_range {
            out.push_str("whole 1\n");
        }
        if !self.unused.is_empty() {
            let cols: Vec<String> = self.unused.iter().map(u16::to_string).collect();
            out.push_str(&format!("unused {}\n", cols.join(" ")));
        }
        for p in &self.pushed {
            out.push_str(&format!("pushed {}\n", p.replace('\n', " ")));
        }
        out
    }

    /// The plan [`Self::encode`] wrote; `None` for anything else (an
    /// empty string included: no plan is never "no keys").
    pub fn decode(s: &str) -> Option<ScanPlan> {
        let mut lines = s.lines();
        if lines.next()? != PLAN_HEADER {
            return None;
        }
        let mut ranges = Vec::new();
        let mut flags = false;
        let mut plan = ScanPlan {
            keys: KeySet::empty(),
            params: Vec::new(),
            sort: None,
            limit: None,
            keys_only: false,
            revision: 0,
            serializable: false,
            fetch_size: 1,
            adaptive_fetch: false,
            pushed: Vec::new(),
            unused: Vec::new(),
            batch_size: 0,
            count_only: false,
            whole_range: false,
        };
        for line in lines {
            let (tag, rest) = line.split_once(' ')?;
            let mut it = rest.split(' ');
            match tag {
                "range" => {
                    let start = unhex(it.next()?)?;
                    let end = match it.next()? {
                        "-" => None,
                        e => Some(unhex(e)?),
                    };
                    ranges.push(KeyRange { start, end });
                }
                "param" => plan.params.push(ParamCond {
                    op: CondOp::from_code(it.next()?.chars().next()?)?,
                    expr_index: it.next()?.parse().ok()?,
                }),
                "sort" => {
                    let f = SortField::from_name(it.next()?)?;
                    plan.sort = Some((f, it.next()? == "desc"));
                }
                "limit" => plan.limit = Some(it.next()?.parse().ok()?),
                "batch" => plan.batch_size = it.next()?.parse().ok()?,
                "count" if rest == "1" => plan.count_only = true,
                "whole" if rest == "1" => plan.whole_range = true,
                "flags" => {
                    flags = true;
                    plan.keys_only = it.next()? == "1";
                    plan.revision = it.next()?.parse().ok()?;
                    plan.serializable = it.next()? == "1";
                    plan.fetch_size = it.next()?.parse().ok()?;
                    plan.adaptive_fetch = it.next()? == "1";
                }
                "unused" => {
                    for c in it {
                        plan.unused.push(c.parse().ok()?);
                    }
                }
                "pushed" => plan.pushed.push(rest.to_string()),
                _ => return None,
            }
        }
        if !flags {
            return None;
        }
        plan.keys = KeySet::from_ranges(ranges);
        Some(plan)
    }
}

/// What the planner tells the modify callbacks about a statement (things
/// BeginForeignModify cannot see yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModifyFlags {
    /// `INSERT ... ON CONFLICT DO NOTHING`.
    pub do_nothing: bool,
    /// The statement has a RETURNING list for this relation.
    pub returning: bool,
}

impl ModifyFlags {
    pub fn encode(&self) -> String {
        format!(
            "etcd_fdw modify 1 {} {}",
            self.do_nothing as u8, self.returning as u8
        )
    }

    pub fn decode(s: &str) -> Option<ModifyFlags> {
        let rest = s.strip_prefix("etcd_fdw modify 1 ")?;
        let mut it = rest.split(' ').map(|f| match f {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        });
        let flags = ModifyFlags {
            do_nothing: it.next()??,
            returning: it.next()??,
        };
        it.next().is_none().then_some(flags)
    }
}

/// A key as an SQL-style literal for EXPLAIN: quotes doubled, control
/// characters and invalid UTF-8 bytes as `\xNN`.
pub fn quote_key(b: &[u8]) -> String {
    let mut s = String::new();
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                s.push_str(&format!("\\x{:02x}", c as u32));
            } else if c == '\'' {
                s.push_str("''");
            } else {
                s.push(c);
            }
        }
        for x in chunk.invalid() {
            s.push_str(&format!("\\x{x:02x}"));
        }
    }
    format!("'{s}'")
}

/// Describe a key set the way EXPLAIN shows it.
pub fn describe_keys(keys: &KeySet) -> String {
    let show = quote_key;
    if keys.is_empty() {
        return "none (contradictory conditions)".to_string();
    }
    if keys.is_all() {
        return "all keys".to_string();
    }
    let parts: Vec<String> = keys
        .ranges()
        .iter()
        .map(|r| {
            if let Some(k) = r.as_single_key() {
                return format!("key = {}", show(k));
            }
            if let Some(end) = &r.end {
                if crate::keyrange::prefix_end(&r.start).as_deref() == Some(end.as_slice())
                    && !r.start.is_empty()
                {
                    return format!("prefix {}", show(&r.start));
                }
            }
            let start = if r.start.is_empty() {
                "-inf".to_string()
            } else {
                show(&r.start)
            };
            let end = r.end.as_deref().map_or("+inf".to_string(), show);
            format!("[{start}, {end})")
        })
        .collect();
    if parts.len() > 8 {
        format!("{} ranges: {}, ...", parts.len(), parts[..8].join(", "))
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_roundtrip() {
        let plan = ScanPlan {
            keys: KeySet::from_ranges(vec![
                KeyRange::prefix(b"a\n b"),
                KeyRange::between(b"x", None),
            ]),
            params: vec![ParamCond {
                op: CondOp::Ge,
                expr_index: 1,
            }],
            sort: Some((SortField::ModRevision, true)),
            limit: Some(10),
            keys_only: true,
            revision: 5,
            serializable: true,
            fetch_size: 100,
            adaptive_fetch: true,
            pushed: vec!["key = 'a'".into()],
            unused: vec![0, 3],
            batch_size: 128,
            count_only: true,
            whole_range: true,
        };
        assert_eq!(ScanPlan::decode(&plan.encode()), Some(plan.clone()));
        let all_used = ScanPlan {
            unused: Vec::new(),
            batch_size: 0,
            count_only: false,
            ..plan
        };
        assert_eq!(ScanPlan::decode(&all_used.encode()), Some(all_used.clone()));
        assert_eq!(ScanPlan::decode("bogus 1"), None);
        assert_eq!(ScanPlan::decode(""), None, "no plan is not an empty scan");
        let no_keys = ScanPlan {
            keys: KeySet::empty(),
            ..all_used.clone()
        };
        assert_eq!(ScanPlan::decode(&no_keys.encode()), Some(no_keys.clone()));
        let headless: String = no_keys
            .encode()
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(ScanPlan::decode(&headless), None, "the header is required");
        let flagless: String = no_keys
            .encode()
            .lines()
            .filter(|l| !l.starts_with("flags"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            ScanPlan::decode(&flagless),
            None,
            "a truncated plan is refused"
        );
    }

    #[test]
    fn modify_flags_roundtrip() {
        for (do_nothing, returning) in [(false, false), (true, false), (false, true), (true, true)]
        {
            let f = ModifyFlags {
                do_nothing,
                returning,
            };
            assert_eq!(ModifyFlags::decode(&f.encode()), Some(f));
        }
        assert_eq!(ModifyFlags::decode(""), None);
        assert_eq!(ModifyFlags::decode("etcd_fdw modify 1 1"), None);
        assert_eq!(ModifyFlags::decode("etcd_fdw modify 1 1 0 1"), None);
    }

    #[test]
    fn whole_table_plan_follows_the_table_options() {
        let opts = |pairs: &[(&str, &str)]| {
            let v: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            crate::options::parse_table(&v).unwrap()
        };
        let t = opts(&[
            ("rowid_column", "key"),
            ("prefix", "a/"),
            ("keys_only", "true"),
            ("revision", "7"),
            ("consistency", "s"),
        ]);
        let p = ScanPlan::whole_table(&t, 1000, true);
        assert_eq!(p.keys, KeySet::from_range(KeyRange::prefix(b"a/")));
        assert!(p.keys_only && p.serializable && p.adaptive_fetch);
        assert_eq!(
            (p.revision, p.fetch_size, p.limit, p.sort),
            (7, 1000, None, None)
        );
        assert!(p.params.is_empty() && p.unused.is_empty());
        let p = ScanPlan::whole_table(&opts(&[("rowid_column", "key")]), 50, false);
        assert!(p.keys.is_all() && !p.keys_only && !p.serializable && !p.adaptive_fetch);
    }

    #[test]
    fn cond_key_sets() {
        let v = |s: &str| Some(s.as_bytes().to_vec());
        assert_eq!(CondOp::Eq.key_set(&[v("a")]).point_count(), Some(1));
        assert!(
            CondOp::Eq.key_set(&[None]).is_empty(),
            "= NULL matches nothing"
        );
        assert_eq!(
            CondOp::In.key_set(&[v("b"), None, v("a")]).point_count(),
            Some(2)
        );
        assert!(CondOp::Gt.key_set(&[v("a")]).contains(b"a\0"));
        assert!(!CondOp::Gt.key_set(&[v("a")]).contains(b"a"));
        assert_eq!(CondOp::Lt.commute(), CondOp::Gt);
    }

    #[test]
    fn explain_descriptions() {
        assert_eq!(describe_keys(&KeySet::all()), "all keys");
        assert_eq!(
            describe_keys(&KeySet::from_range(KeyRange::prefix(b"ab"))),
            "prefix 'ab'"
        );
        assert_eq!(describe_keys(&KeySet::from_keys([&b"k"[..]])), "key = 'k'");
        assert_eq!(
            describe_keys(&KeySet::from_range(KeyRange::from(b"m", true))),
            "['m', +inf)"
        );
        assert!(describe_keys(&KeySet::empty()).starts_with("none"));
        assert_eq!(quote_key(b"it's\x01\xff"), "'it''s\\x01\\xff'");
        let v = |s: &str| Some(s.as_bytes().to_vec());
        assert_eq!(
            CondOp::LikePrefix.key_set(&[v("ab%c")]).ranges(),
            &[KeyRange::prefix(b"ab")]
        );
        assert!(CondOp::LikePrefix.key_set(&[v("%")]).is_all());
    }
}
