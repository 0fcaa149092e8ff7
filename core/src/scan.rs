//! What one foreign scan asks etcd for, and how it pages through it.
//!
//! A [`ScanSpec`] is the planner's decision (key set, sort, limit, flags);
//! a [`Pager`] turns it into a sequence of range requests, each reading at
//! the revision the first one saw, so the whole scan is one snapshot.

use etcd_client::{GetOptions, GetResponse, KeyValue, SortOrder, SortTarget};

use crate::keyrange::{successor, KeyRange, KeySet};

/// etcd sort targets the planner may push down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortField {
    Key,
    Value,
    CreateRevision,
    ModRevision,
    Version,
}

impl SortField {
    pub fn name(self) -> &'static str {
        match self {
            SortField::Key => "key",
            SortField::Value => "value",
            SortField::CreateRevision => "create_revision",
            SortField::ModRevision => "mod_revision",
            SortField::Version => "version",
        }
    }

    pub fn from_name(s: &str) -> Option<SortField> {
        Some(match s {
            "key" => SortField::Key,
            "value" => SortField::Value,
            "create_revision" => SortField::CreateRevision,
            "mod_revision" => SortField::ModRevision,
            "version" => SortField::Version,
            _ => return None,
        })
    }

    /// The value of this field in `kv`, comparable the way etcd sorts.
    fn sort_key(self, kv: &KeyValue) -> SortKey<'_> {
        match self {
            SortField::Key => SortKey::Bytes(kv.key()),
            SortField::Value => SortKey::Bytes(kv.value()),
            SortField::CreateRevision => SortKey::Int(kv.create_revision()),
            SortField::ModRevision => SortKey::Int(kv.mod_revision()),
            SortField::Version => SortKey::Int(kv.version()),
        }
    }

    fn target(self) -> SortTarget {
        match self {
            SortField::Key => SortTarget::Key,
            SortField::Value => SortTarget::Value,
            SortField::CreateRevision => SortTarget::Create,
            SortField::ModRevision => SortTarget::Mod,
            SortField::Version => SortTarget::Version,
        }
    }
}

/// A sort field's value: raw bytes (etcd's order), a number, or NULL
/// (metadata of a row not committed yet), which sorts after everything,
/// as in PostgreSQL's default `NULLS LAST` ascending / `NULLS FIRST`
/// descending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SortKey<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    Null,
}

/// Merge `more` into `top`, the best `limit` items so far in the order of
/// `key` (descending when `desc`).  Both inputs are whole answers of
/// ranges, so the result holds the best `limit` items of their union.
/// Stable: among equal keys, earlier items stay first.
pub fn merge_top<T>(
    top: &mut Vec<T>,
    more: Vec<T>,
    limit: usize,
    desc: bool,
    key: impl for<'a> Fn(&'a T) -> SortKey<'a>,
) {
    top.extend(more);
    if desc {
        top.sort_by(|a, b| key(b).cmp(&key(a)));
    } else {
        top.sort_by(|a, b| key(a).cmp(&key(b)));
    }
    top.truncate(limit);
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanSpec {
    pub keys: KeySet,
    /// `None`: etcd's natural order, key ascending.
    pub sort: Option<(SortField, bool)>,
    /// Total rows wanted (a pushed-down LIMIT + OFFSET).
    pub limit: Option<u64>,
    pub keys_only: bool,
    /// 0 = latest.
    pub revision: i64,
    pub serializable: bool,
    /// Keys per request (the first request's, when `adaptive`).
    pub fetch_size: u32,
    /// Grow (or shrink) pages towards [`PAGE_BYTES`] of data.
    pub adaptive: bool,
}

/// Data per page an adaptive scan aims for.  etcd walks the rest of the
/// range on every range request (to count it), so a fixed small page makes
/// a full scan quadratic in the number of keys; pages that grow fourfold up
/// to a few MiB keep it near-linear while bounding the backend's memory
/// (see the README's performance section for the measurements).
pub const PAGE_BYTES: usize = 16 * 1024 * 1024;

/// Growth factor of adaptive pages.
const PAGE_GROWTH: u64 = 4;

/// Range requests a scan of `rows` keys of about `row_bytes` bytes each
/// makes (at least one): pages of `fetch_size` keys, or, when `adaptive`,
/// pages starting at `fetch_size` and growing like [`Pager`]'s.  For the
/// planner's cost estimates.
pub fn requests_for(rows: f64, fetch_size: u32, adaptive: bool, row_bytes: f64) -> f64 {
    let first = f64::from(fetch_size.max(1));
    if !adaptive {
        return (rows / first).ceil().max(1.0);
    }
    let cap = (PAGE_BYTES as f64 / row_bytes.max(1.0)).floor().max(1.0);
    let (mut page, mut read, mut requests) = (first.min(cap), 0.0, 1.0);
    while read + page < rows {
        read += page;
        page = (page * PAGE_GROWTH as f64).min(cap);
        requests += 1.0;
        if page >= cap {
            // Whole pages of the cap from here on.
            return requests + ((rows - read - page) / page).ceil().max(0.0);
        }
    }
    requests
}

impl ScanSpec {
    fn descending(&self) -> bool {
        matches!(self.sort, Some((_, true)))
    }

    /// Non-key sorts cannot be paged by key; they are only pushed down with
    /// a limit and read in one request per range.
    fn single_request(&self) -> bool {
        matches!(self.sort, Some((f, _)) if f != SortField::Key)
    }

    /// A non-key sort over several ranges: etcd sorts each range on its
    /// own, so each range is asked for the whole limit and the answers are
    /// merged, keeping the best `limit` rows (never concatenated).
    fn merges_ranges(&self) -> bool {
        self.single_request() && self.keys.ranges().len() > 1
    }
}

/// One range request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// 0 = no limit.
    pub limit: i64,
    pub sort: Option<(SortField, bool)>,
    pub revision: i64,
    pub keys_only: bool,
    pub serializable: bool,
}

impl PageRequest {
    pub fn get_options(&self) -> GetOptions {
        let mut o = GetOptions::new()
            .with_range(self.range_end.clone())
            .with_limit(self.limit)
            .with_revision(self.revision);
        if let Some((f, desc)) = self.sort {
            let order = if desc {
                SortOrder::Descend
            } else {
                SortOrder::Ascend
            };
            o = o.with_sort(f.target(), order);
        }
        if self.keys_only {
            o = o.with_keys_only();
        }
        if self.serializable {
            o = o.with_serializable();
        }
        o
    }
}

/// Pages through a [`ScanSpec`].
#[derive(Clone, Debug)]
pub struct Pager {
    spec: ScanSpec,
    /// Ranges still to read, in the order they are read.
    pending: Vec<KeyRange>,
    /// Revision pinned by the first response (or the table's revision).
    revision: i64,
    returned: u64,
    done: bool,
    pages: u64,
    /// Keys to ask for in the next request.
    page_limit: u64,
    /// With [`ScanSpec::merges_ranges`]: the best rows of the ranges read
    /// so far, handed out once the last range is read.
    merged: Option<Vec<KeyValue>>,
}

/// What to do after etcd refused to send a page because the response
/// would exceed the client's message limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Oversized {
    /// Ask again for fewer keys (the pager has shrunk its page).
    Retry,
    /// The next key alone is too large: give up.
    SingleKey,
    /// A non-key sort is one request per range and cannot be split.
    Sorted,
}

impl Pager {
    pub fn new(spec: ScanSpec) -> Self {
        let mut pending: Vec<KeyRange> = spec.keys.ranges().to_vec();
        // Stored reversed so that `pop` yields the next range.
        if !spec.descending() {
            pending.reverse();
        }
        let done = pending.is_empty() || spec.limit == Some(0);
        let merged = spec.merges_ranges().then(Vec::new);
        Pager {
            merged,
            revision: spec.revision,
            page_limit: spec.fetch_size.max(1) as u64,
            spec,
            pending,
            returned: 0,
            done,
            pages: 0,
        }
    }

    pub fn spec(&self) -> &ScanSpec {
        &self.spec
    }

    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The next request to send, or `None` when the scan is complete.
    pub fn next_request(&self) -> Option<PageRequest> {
        if self.done {
            return None;
        }
        let range = self.pending.last()?;
        let (key, range_end) = range.to_etcd();
        let remaining = self.spec.limit.map(|l| l.saturating_sub(self.returned));
        let limit = if self.merged.is_some() {
            // Every range may hold the best rows.
            self.spec.limit.unwrap_or(0)
        } else if self.spec.single_request() {
            remaining.unwrap_or(0)
        } else {
            remaining.map_or(self.page_limit, |r| r.min(self.page_limit))
        };
        Some(PageRequest {
            key,
            range_end,
            limit: limit as i64,
            sort: self.spec.sort.filter(|s| *s != (SortField::Key, false)),
            revision: self.revision,
            // Merging by value needs the values even when the query does not.
            keys_only: self.spec.keys_only
                && !(self.merged.is_some()
                    && matches!(self.spec.sort, Some((SortField::Value, _)))),
            serializable: self.spec.serializable,
        })
    }

    /// Take the key-value pairs of the response to [`Self::next_request`]
    /// and advance past them.  When several ranges' sorted answers are
    /// merged, nothing is returned until the last range is read.
    pub fn accept(&mut self, mut resp: GetResponse) -> Vec<KeyValue> {
        let header_revision = resp.header().map_or(0, |h| h.revision());
        let more = resp.more();
        let kvs = resp.take_kvs();
        let bytes = kvs.iter().map(|kv| kv.key().len() + kv.value().len()).sum();
        self.advance(
            kvs.len(),
            bytes,
            kvs.last().map(|kv| kv.key()),
            more,
            header_revision,
        );
        match (self.merged.as_mut(), self.spec.sort) {
            (Some(top), Some((field, desc))) => {
                let limit = self.spec.limit.map_or(usize::MAX, |l| l as usize);
                merge_top(top, kvs, limit, desc, |kv| field.sort_key(kv));
                if self.done {
                    std::mem::take(top)
                } else {
                    Vec::new()
                }
            }
            _ => kvs,
        }
    }

    /// etcd could not send the answer to [`Self::next_request`] within the
    /// client's response limit (`limit_bytes`; `found_bytes` when etcd's
    /// error said how large it was): shrink the page so the next request
    /// fits, keeping the revision and position.  Pages are bounded by
    /// bytes this way even when a run of small keys made them grow before
    /// large values came.
    pub fn shrink(&mut self, found_bytes: Option<u64>, limit_bytes: u64) -> Oversized {
        let asked = match self.next_request() {
            Some(r) if r.limit > 0 => r.limit as u64,
            // A whole-range request (non-key sort without limit) or none.
            _ => u64::MAX,
        };
        if self.spec.single_request() {
            return Oversized::Sorted;
        }
        if asked <= 1 {
            return Oversized::SingleKey;
        }
        // Aim at an adaptive page (at most half the limit), assuming the
        // keys are alike in size.
        let aim = (PAGE_BYTES as u64).min(limit_bytes / 2);
        let fit = match found_bytes {
            Some(found) if found > 0 && asked != u64::MAX => {
                ((asked as u128 * aim as u128) / found as u128) as u64
            }
            _ => asked / 4,
        };
        self.page_limit = fit.clamp(1, asked - 1);
        Oversized::Retry
    }

    /// Keys the next request asks for (before any LIMIT).
    pub fn page_limit(&self) -> u64 {
        self.page_limit
    }

    /// Account for a response to [`Self::next_request`]: `count` keys of
    /// `bytes` bytes (keys and values) came back, the last of them
    /// `last_key`, etcd said `more`, at `header_revision`.
    pub fn advance(
        &mut self,
        count: usize,
        bytes: usize,
        last_key: Option<&[u8]>,
        more: bool,
        header_revision: i64,
    ) {
        self.pages += 1;
        if self.spec.adaptive && count > 0 {
            let avg = (bytes / count).max(1);
            let cap = (PAGE_BYTES / avg).max(1) as u64;
            self.page_limit = (self.page_limit * PAGE_GROWTH).min(cap);
        }
        if self.revision == 0 {
            self.revision = header_revision;
        }
        self.returned += count as u64;
        let merging = self.merged.is_some();
        if !merging && self.spec.limit.is_some_and(|l| self.returned >= l) {
            self.done = true;
            return;
        }
        let single = self.spec.single_request();
        let desc = self.spec.descending();
        match (more && !single, last_key) {
            (true, Some(last)) => {
                if let Some(range) = self.pending.last_mut() {
                    if desc {
                        range.end = Some(last.to_vec());
                    } else {
                        range.start = successor(last);
                    }
                    if range.is_empty() {
                        self.pending.pop();
                    }
                }
            }
            _ => {
                self.pending.pop();
            }
        }
        self.done = self.pending.is_empty();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_estimates_follow_the_pager() {
        assert_eq!(requests_for(0.0, 1000, false, 100.0), 1.0);
        assert_eq!(requests_for(2500.0, 1000, false, 100.0), 3.0);
        // adaptive: 1000, 4000, 16000, 64000, ... keys per request
        assert_eq!(requests_for(1000.0, 1000, true, 100.0), 1.0);
        assert_eq!(requests_for(1001.0, 1000, true, 100.0), 2.0);
        assert_eq!(requests_for(21_000.0, 1000, true, 100.0), 3.0);
        assert_eq!(requests_for(100_000.0, 1000, true, 100.0), 5.0);
        // 1 KiB rows: pages stop growing at 16 MiB = 16384 rows
        assert_eq!(requests_for(150_000.0, 1000, true, 1024.0), 3.0 + 8.0);
        // simulate the pager to cross-check
        for &(rows, bytes) in &[
            (10_000u64, 100usize),
            (1_000_000, 100),
            (150_000, 1024),
            (77_777, 3000),
        ] {
            let mut s = spec(KeySet::all());
            s.fetch_size = 1000;
            s.adaptive = true;
            let mut p = Pager::new(s);
            let mut left = rows;
            let mut n = 0;
            while let Some(req) = p.next_request() {
                let got = (req.limit as u64).min(left);
                left -= got;
                n += 1;
                p.advance(got as usize, got as usize * bytes, Some(b"k"), left > 0, 1);
            }
            assert_eq!(
                requests_for(rows as f64, 1000, true, bytes as f64),
                n as f64,
                "{rows} rows of {bytes} bytes"
            );
        }
    }

    fn spec(keys: KeySet) -> ScanSpec {
        ScanSpec {
            keys,
            sort: None,
            limit: None,
            keys_only: false,
            revision: 0,
            serializable: false,
            fetch_size: 2,
            adaptive: false,
        }
    }

    #[test]
    fn pages_ascending_at_one_revision() {
        let mut p = Pager::new(spec(KeySet::from_range(KeyRange::prefix(b"a/"))));
        let r1 = p.next_request().unwrap();
        assert_eq!(
            (r1.key.as_slice(), r1.range_end.as_slice()),
            (&b"a/"[..], &b"a0"[..])
        );
        assert_eq!((r1.limit, r1.revision), (2, 0));
        p.advance(2, 20, Some(b"a/2"), true, 42);
        let r2 = p.next_request().unwrap();
        assert_eq!(r2.key, b"a/2\0".to_vec());
        assert_eq!(
            r2.revision, 42,
            "later pages read the first page's revision"
        );
        p.advance(1, 10, Some(b"a/3"), false, 43);
        assert_eq!(p.next_request(), None);
        assert_eq!(p.pages(), 2);
    }

    #[test]
    fn adaptive_pages_grow_to_the_byte_budget_and_shrink_for_big_values() {
        let mut s = spec(KeySet::all());
        s.fetch_size = 1000;
        s.adaptive = true;
        let mut p = Pager::new(s.clone());
        let mut limits = vec![p.next_request().unwrap().limit];
        for i in 0..8 {
            let n = p.page_limit() as usize;
            p.advance(n, n * 128, Some(format!("k{i}").as_bytes()), true, 1);
            limits.push(p.next_request().unwrap().limit);
        }
        assert_eq!(limits[..4], [1000, 4000, 16000, 64000]);
        assert_eq!(
            *limits.last().unwrap(),
            (PAGE_BYTES / 128) as i64,
            "capped by bytes"
        );
        let mut p = Pager::new(s.clone());
        p.advance(1000, 1000 * 1024 * 1024, Some(b"k"), true, 1);
        assert_eq!(
            p.next_request().unwrap().limit,
            (PAGE_BYTES >> 20) as i64,
            "1 MiB values: PAGE_BYTES / 1 MiB per page"
        );
        s.adaptive = false;
        let mut p = Pager::new(s);
        p.advance(1000, 1000 * 128, Some(b"k"), true, 1);
        assert_eq!(
            p.next_request().unwrap().limit,
            1000,
            "an explicit fetch_size is kept"
        );
    }

    #[test]
    fn descending_pages_shrink_the_end() {
        let mut s = spec(KeySet::from_range(KeyRange::between(b"a", Some(b"z"))));
        s.sort = Some((SortField::Key, true));
        let mut p = Pager::new(s);
        p.advance(2, 20, Some(b"m"), true, 5);
        let r = p.next_request().unwrap();
        assert_eq!(
            (r.key.as_slice(), r.range_end.as_slice()),
            (&b"a"[..], &b"m"[..])
        );
        assert_eq!(r.sort, Some((SortField::Key, true)));
    }

    #[test]
    fn limit_caps_pages_and_ends_scan() {
        let mut s = spec(KeySet::all());
        s.limit = Some(3);
        let mut p = Pager::new(s);
        assert_eq!(p.next_request().unwrap().limit, 2);
        p.advance(2, 20, Some(b"b"), true, 1);
        assert_eq!(p.next_request().unwrap().limit, 1);
        p.advance(1, 10, Some(b"c"), true, 1);
        assert_eq!(p.next_request(), None);
    }

    #[test]
    fn point_sets_read_each_key_in_order() {
        let mut s = spec(KeySet::from_keys([&b"b"[..], b"a"]));
        s.sort = Some((SortField::Key, true));
        let mut p = Pager::new(s);
        assert_eq!(p.next_request().unwrap().key, b"b".to_vec());
        p.advance(1, 10, Some(b"b"), false, 9);
        assert_eq!(p.next_request().unwrap().key, b"a".to_vec());
        p.advance(0, 0, None, false, 9);
        assert_eq!(p.next_request(), None);
        assert!(Pager::new(spec(KeySet::empty())).next_request().is_none());
    }

    #[test]
    fn non_key_sort_is_one_request() {
        let mut s = spec(KeySet::all());
        s.sort = Some((SortField::ModRevision, true));
        s.limit = Some(10);
        let mut p = Pager::new(s);
        let r = p.next_request().unwrap();
        assert_eq!(r.limit, 10);
        p.advance(2, 20, Some(b"x"), true, 1);
        assert_eq!(p.next_request(), None);
    }

    #[test]
    fn merge_keeps_the_best_rows_of_every_range() {
        fn key<'a>(t: &'a (i64, &'static str)) -> SortKey<'a> {
            SortKey::Int(t.0)
        }
        // Range a: mod_revisions 9, 8, 1; range b: 7, 6, 5 (each sorted
        // descending by etcd).  The best three overall: 9, 8, 7.
        let mut top = Vec::new();
        merge_top(
            &mut top,
            vec![(7, "b/3"), (6, "b/2"), (5, "b/1")],
            3,
            true,
            key,
        );
        merge_top(
            &mut top,
            vec![(9, "a/2"), (8, "a/1"), (1, "a/3")],
            3,
            true,
            key,
        );
        assert_eq!(top, vec![(9, "a/2"), (8, "a/1"), (7, "b/3")]);
        let mut top = Vec::new();
        merge_top(&mut top, vec![(2, "x"), (4, "y")], 1, false, key);
        merge_top(&mut top, vec![(1, "z")], 1, false, key);
        assert_eq!(top, vec![(1, "z")]);
        fn bytes<'a>(t: &'a &'static [u8]) -> SortKey<'a> {
            SortKey::Bytes(t)
        }
        let mut top: Vec<&[u8]> = vec![b"b"];
        merge_top(&mut top, vec![&b"a\xff"[..], b"c"], 2, true, bytes);
        assert_eq!(top, vec![&b"c"[..], b"b"], "bytes compare unsigned");
    }

    #[test]
    fn non_key_sort_over_several_ranges_asks_each_for_the_whole_limit() {
        let mut s = spec(KeySet::from_keys([&b"a/1"[..], b"b/3", b"b/2"]));
        s.sort = Some((SortField::ModRevision, true));
        s.limit = Some(1);
        let mut p = Pager::new(s);
        let mut asked = Vec::new();
        while let Some(r) = p.next_request() {
            asked.push((r.key.clone(), r.limit));
            p.advance(1, 10, Some(&r.key), false, 7);
        }
        asked.sort();
        assert_eq!(
            asked,
            vec![
                (b"a/1".to_vec(), 1),
                (b"b/2".to_vec(), 1),
                (b"b/3".to_vec(), 1)
            ],
            "one request per range, none cut short by the first range's rows"
        );
        // Merging by value asks for the values, even for a keys-only query.
        let mut s = spec(KeySet::from_keys([&b"a"[..], b"b"]));
        s.sort = Some((SortField::Value, true));
        s.limit = Some(1);
        s.keys_only = true;
        assert!(!Pager::new(s.clone()).next_request().unwrap().keys_only);
        s.sort = Some((SortField::Version, true));
        assert!(Pager::new(s).next_request().unwrap().keys_only);
        // A single range is not merged: etcd's sort and limit are exact.
        let mut s = spec(KeySet::from_range(KeyRange::prefix(b"a/")));
        s.sort = Some((SortField::Value, false));
        s.limit = Some(2);
        assert!(Pager::new(s).merged.is_none());
    }

    #[test]
    fn oversized_pages_shrink_until_one_key() {
        let mut s = spec(KeySet::from_range(KeyRange::prefix(b"p/")));
        s.fetch_size = 1000;
        s.adaptive = true;
        let mut p = Pager::new(s);
        // Small keys first: the page grows to 4000 keys.
        p.advance(1000, 1000 * 10, Some(b"p/0999"), true, 3);
        assert_eq!(p.next_request().unwrap().limit, 4000);
        // That page would be 1 GiB against a 64 MiB limit: aim at 16 MiB.
        assert_eq!(p.shrink(Some(1 << 30), 64 << 20), Oversized::Retry);
        assert_eq!(p.next_request().unwrap().limit, 62);
        let r = p.next_request().unwrap();
        assert_eq!(
            (r.key.as_slice(), r.revision),
            (&b"p/0999\0"[..], 3),
            "same position, same revision"
        );
        // Without a size in the error: a quarter each time, then one key.
        assert_eq!(p.shrink(None, 64 << 20), Oversized::Retry);
        assert_eq!(p.next_request().unwrap().limit, 15);
        while p.next_request().unwrap().limit > 1 {
            assert_eq!(p.shrink(None, 64 << 20), Oversized::Retry);
        }
        assert_eq!(p.shrink(None, 64 << 20), Oversized::SingleKey);
        let mut s = spec(KeySet::all());
        s.sort = Some((SortField::Value, true));
        s.limit = Some(5);
        assert_eq!(Pager::new(s).shrink(None, 1), Oversized::Sorted);
    }
}
