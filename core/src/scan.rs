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
    /// a limit and read in one request.
    fn single_request(&self) -> bool {
        matches!(self.sort, Some((f, _)) if f != SortField::Key)
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
}

impl Pager {
    pub fn new(spec: ScanSpec) -> Self {
        let mut pending: Vec<KeyRange> = spec.keys.ranges().to_vec();
        // Stored reversed so that `pop` yields the next range.
        if !spec.descending() {
            pending.reverse();
        }
        let done = pending.is_empty() || spec.limit == Some(0);
        Pager {
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
        let remaining = self.spec.limit.map(|l| l - self.returned);
        let limit = if self.spec.single_request() {
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
            keys_only: self.spec.keys_only,
            serializable: self.spec.serializable,
        })
    }

    /// Take the key-value pairs of the response to [`Self::next_request`]
    /// and advance past them.
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
        kvs
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
        if self.spec.limit.is_some_and(|l| self.returned >= l) {
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
}
