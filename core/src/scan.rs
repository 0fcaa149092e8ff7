//! What one foreign scan asks etcd for, and how it pages through it.
//!
//! A [`ScanSpec`] is the planner's decision (key set, sort, limit, flags);
//! a [`Pager`] turns it into a sequence of range requests, each reading at
//! the revision the first one saw, so the whole scan is one snapshot.

use etcd_client::{
    GetOptions, GetResponse, KeyValue, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};

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
    /// The query reads the whole range (the planner saw no LIMIT and no
    /// early stop): with `adaptive`, the page after the first goes straight
    /// to [`PAGE_BYTES`] of data instead of growing fourfold, since etcd
    /// walks the rest of the range on every request.
    pub whole_range: bool,
}

/// Data per page an adaptive scan aims for.  etcd walks the rest of the
/// range on every range request (to count it), so a fixed small page makes
/// a full scan quadratic in the number of keys; pages that grow fourfold up
/// to a few MiB keep it near-linear while bounding the backend's memory
/// (see the README's performance section for the measurements).
pub const PAGE_BYTES: usize = 16 * 1024 * 1024;

/// The first page of a scan that reads its whole range, sized from an
/// earlier complete scan of the same range that found `rows` keys of
/// `bytes` bytes in all: a whole page budget ([`PAGE_BYTES`]) of keys of
/// that average size, so a range that still fits is one request.  A range
/// whose values have grown since is shrunk like any page that comes back
/// too large.
pub fn first_page_for(rows: u64, bytes: u64) -> u64 {
    let avg = (bytes / rows.max(1)).max(1);
    (PAGE_BYTES as u64 / avg).max(1)
}

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
    /// Ask only for the number of keys (`count_only`): no key-value pairs.
    pub count_only: bool,
}

impl PageRequest {
    pub fn get_options(&self) -> GetOptions {
        let mut o = GetOptions::new()
            .with_range(self.range_end.clone())
            .with_limit(self.limit)
            .with_revision(self.revision);
        if self.count_only {
            o = o.with_count_only();
        }
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

/// A read-only etcd transaction of one range request per key of a key
/// list (`key IN (...)`, `key = ANY($1)`): the keys of several requests in
/// one round trip, all read at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRequest {
    /// In the order the scan returns them (the transaction answers in the
    /// order of its operations).
    pub keys: Vec<Vec<u8>>,
    /// 0 = latest (the first batch); later batches read the first one's.
    pub revision: i64,
    pub keys_only: bool,
    pub serializable: bool,
    pub count_only: bool,
}

impl BatchRequest {
    /// The options of each key's range request.  A transaction is
    /// serializable when all its reads are.
    pub fn get_options(&self) -> GetOptions {
        let mut o = GetOptions::new().with_revision(self.revision);
        if self.keys_only {
            o = o.with_keys_only();
        }
        if self.count_only {
            o = o.with_count_only();
        }
        if self.serializable {
            o = o.with_serializable();
        }
        o
    }

    /// The transaction: no compares, one get per key.
    pub fn txn(&self) -> Txn {
        let ops: Vec<TxnOp> = self
            .keys
            .iter()
            .map(|k| TxnOp::get(k.clone(), Some(self.get_options())))
            .collect();
        Txn::new().and_then(ops)
    }
}

/// Whether etcd (or the client) refused a batch for its size: the answer
/// exceeds the client's limit, or the request etcd's `--max-txn-ops` or
/// `--max-request-bytes`.  A smaller batch may pass
/// ([`Pager::shrink_batch`]).
pub fn batch_refused(e: &crate::client::EtcdError) -> bool {
    if e.response_too_large().is_some() {
        return true;
    }
    match e.root() {
        crate::client::EtcdError::Status { code, message } => {
            matches!(
                code,
                tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted
            ) && (message.contains("too many operations in txn request")
                || message.contains("request is too large")
                || message.contains("received message larger than max"))
        }
        _ => false,
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
    /// Keys per read-only transaction when the key set is a key list
    /// ([`Self::with_key_batches`]); 0: one range request per range.
    batch: u64,
    /// Ask for counts only ([`Self::count_only`]).
    count_only: bool,
    /// The sum of the counts etcd answered.
    counted: u64,
    /// Keys etcd said are left in the current range after the last page
    /// (its `count` minus the keys sent), when known.
    remaining: Option<u64>,
    /// Bytes (keys and values) of every page so far.
    bytes: u64,
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
            batch: 0,
            count_only: false,
            counted: 0,
            remaining: None,
            bytes: 0,
        }
    }

    /// An adaptive scan's first page of `keys` keys instead of
    /// `fetch_size` (see [`first_page_for`]); a fixed `fetch_size` is
    /// kept as given.
    pub fn with_first_page(mut self, keys: u64) -> Self {
        if self.spec.adaptive {
            self.page_limit = keys.max(1);
        }
        self
    }

    /// Bytes (keys and values) of the pages read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// Rows handed out so far.
    pub fn returned(&self) -> u64 {
        self.returned
    }

    /// Read a key set of several single keys (a key list) in read-only
    /// transactions of up to `max_keys` keys each, in the scan's order.
    /// Other key sets (and `max_keys` 0) keep one request per range.
    pub fn with_key_batches(mut self, max_keys: u32) -> Self {
        let list = self.spec.keys.point_count().is_some_and(|n| n > 1);
        self.batch = if list { u64::from(max_keys) } else { 0 };
        self
    }

    /// Count the keys instead of reading them: each request asks etcd for
    /// the number of keys only (`count_only`); see [`Self::counted`].
    pub fn count_only(mut self) -> Self {
        self.count_only = true;
        self
    }

    /// The number of keys etcd counted so far (with [`Self::count_only`]).
    pub fn counted(&self) -> u64 {
        self.counted
    }

    /// Whether the key set is read in transactions ([`Self::next_batch`]).
    pub fn batched(&self) -> bool {
        self.batch > 0
    }

    /// Keys the next batch asks for: never more than a pushed-down limit
    /// still needs (each key is at most one row), unless the rows are
    /// merged by a non-key sort (every key may be among the best).
    fn batch_len(&self) -> usize {
        let mut n = self.batch.min(self.pending.len() as u64);
        if self.merged.is_none() {
            if let Some(l) = self.spec.limit {
                n = n.min(l.saturating_sub(self.returned));
            }
        }
        n as usize
    }

    /// The next read-only transaction of a batched key list, or `None`
    /// when the scan is complete (or not batched).
    pub fn next_batch(&self) -> Option<BatchRequest> {
        if self.done || self.batch == 0 {
            return None;
        }
        let n = self.batch_len().max(1);
        let keys: Vec<Vec<u8>> = (self.pending.iter().rev().take(n))
            .map(|r| r.as_single_key().unwrap_or(&r.start).to_vec())
            .collect();
        let first = self.next_request()?;
        Some(BatchRequest {
            keys,
            revision: self.revision,
            keys_only: first.keys_only,
            serializable: self.spec.serializable,
            count_only: self.count_only,
        })
    }

    /// Take the answer to [`Self::next_batch`]: the rows of its keys in
    /// the scan's order.
    pub fn accept_batch(&mut self, resp: TxnResponse) -> Vec<KeyValue> {
        let header_revision = resp.header().map_or(0, |h| h.revision());
        let gets = resp
            .op_responses()
            .into_iter()
            .filter_map(|op| match op {
                TxnOpResponse::Get(g) => Some(g),
                _ => None,
            })
            .collect();
        self.accept_gets(header_revision, gets)
    }

    /// [`Self::accept_batch`] of the transaction's range answers, one per
    /// key of the batch in order, read at `header_revision`.
    pub fn accept_gets(&mut self, header_revision: i64, gets: Vec<GetResponse>) -> Vec<KeyValue> {
        self.pages += 1;
        if self.revision == 0 {
            self.revision = header_revision;
        }
        let mut kvs = Vec::new();
        for mut g in gets {
            self.counted += g.count().max(0) as u64;
            kvs.extend(g.take_kvs());
            self.pending.pop();
        }
        self.returned += kvs.len() as u64;
        self.done = self.pending.is_empty()
            || (self.merged.is_none() && self.spec.limit.is_some_and(|l| self.returned >= l));
        self.take_merged(kvs)
    }

    /// A batch's answer was too large for the client, or its request
    /// too large (or with too many operations) for etcd: ask again for
    /// half as many keys, at the same revision and position.
    pub fn shrink_batch(&mut self) -> Oversized {
        let asked = self.batch_len() as u64;
        if asked <= 1 {
            return Oversized::SingleKey;
        }
        self.batch = asked / 2;
        Oversized::Retry
    }

    /// With a merging non-key sort: add `kvs` to the best rows so far and
    /// hand them out once the last range is read.
    fn take_merged(&mut self, kvs: Vec<KeyValue>) -> Vec<KeyValue> {
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
        let limit = if self.count_only {
            0
        } else if self.merged.is_some() {
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
            keys_only: self.count_only
                || (self.spec.keys_only
                    && !(self.merged.is_some()
                        && matches!(self.spec.sort, Some((SortField::Value, _))))),
            serializable: self.spec.serializable,
            count_only: self.count_only,
        })
    }

    /// Take the key-value pairs of the response to [`Self::next_request`]
    /// and advance past them.  When several ranges' sorted answers are
    /// merged, nothing is returned until the last range is read.
    pub fn accept(&mut self, mut resp: GetResponse) -> Vec<KeyValue> {
        let header_revision = resp.header().map_or(0, |h| h.revision());
        let more = resp.more();
        if self.count_only {
            self.counted += resp.count().max(0) as u64;
        }
        let count = resp.count().max(0) as u64;
        let kvs = resp.take_kvs();
        if !self.count_only {
            self.note_count(count, kvs.len(), more);
        }
        let bytes = kvs.iter().map(|kv| kv.key().len() + kv.value().len()).sum();
        self.advance(
            kvs.len(),
            bytes,
            kvs.last().map(|kv| kv.key()),
            more,
            header_revision,
        );
        self.take_merged(kvs)
    }

    /// etcd counts the whole rest of the range with every page (`count`
    /// keys from the request's start): remember what is left after the
    /// `sent` keys of this page, for [`Self::shrink`].
    pub fn note_count(&mut self, count: u64, sent: usize, more: bool) {
        self.remaining = (more && count > 0).then(|| count.saturating_sub(sent as u64));
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
        // A request for more keys than the range has left gets only
        // those: its size says how large *they* are.
        let sent = self.remaining.map_or(asked, |r| r.clamp(1, asked));
        let fit = match found_bytes {
            Some(found) if found > 0 && asked != u64::MAX => {
                ((sent as u128 * aim as u128) / found as u128) as u64
            }
            _ => sent / 4,
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
        self.bytes += bytes as u64;
        if self.spec.adaptive && count > 0 {
            let avg = (bytes / count).max(1);
            let cap = (PAGE_BYTES / avg).max(1) as u64;
            self.page_limit = if self.spec.whole_range {
                cap
            } else {
                (self.page_limit * PAGE_GROWTH).min(cap)
            };
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
            whole_range: false,
        }
    }

    fn get_answer(keys: &[&[u8]], revision: i64) -> GetResponse {
        use etcd_client::proto::{PbKeyValue, PbRangeResponse, PbResponseHeader};
        GetResponse(PbRangeResponse {
            header: Some(PbResponseHeader {
                revision,
                ..Default::default()
            }),
            count: keys.len() as i64,
            kvs: keys
                .iter()
                .map(|k| PbKeyValue {
                    key: k.to_vec(),
                    mod_revision: 1,
                    ..Default::default()
                })
                .collect(),
            more: false,
        })
    }

    fn keys_of(kvs: &[KeyValue]) -> Vec<Vec<u8>> {
        kvs.iter().map(|kv| kv.key().to_vec()).collect()
    }

    #[test]
    fn key_lists_are_read_in_batches_at_one_revision() {
        let list: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        let mut s = spec(KeySet::from_keys(list.iter().map(|k| k.as_bytes())));
        s.serializable = true;
        let mut p = Pager::new(s).with_key_batches(4);
        assert!(p.batched());
        let b1 = p.next_batch().unwrap();
        assert_eq!(
            b1.keys,
            vec![
                b"k0".to_vec(),
                b"k1".to_vec(),
                b"k2".to_vec(),
                b"k3".to_vec()
            ]
        );
        assert_eq!(
            (b1.revision, b1.serializable, b1.count_only),
            (0, true, false)
        );
        let txn = format!("{:?}", b1.txn());
        assert_eq!(
            txn.matches("serializable: true").count(),
            4,
            "one serializable get per key: {txn}"
        );
        assert!(!txn.contains("compare: [RangeRequest"), "{txn}");
        let rows = p.accept_gets(
            17,
            vec![
                get_answer(&[b"k0"], 17),
                get_answer(&[], 17),
                get_answer(&[b"k2"], 17),
                get_answer(&[], 17),
            ],
        );
        assert_eq!(keys_of(&rows), vec![b"k0".to_vec(), b"k2".to_vec()]);
        let b2 = p.next_batch().unwrap();
        assert_eq!(b2.keys[0], b"k4".to_vec());
        assert_eq!(
            b2.revision, 17,
            "later batches read the first one's revision"
        );
        p.accept_gets(18, vec![get_answer(&[], 18); 4]);
        let b3 = p.next_batch().unwrap();
        assert_eq!(b3.keys, vec![b"k8".to_vec(), b"k9".to_vec()]);
        assert_eq!(b3.revision, 17);
        p.accept_gets(17, vec![get_answer(&[], 17); 2]);
        assert_eq!(p.next_batch(), None);
        assert_eq!(p.pages(), 3, "ceil(10 / 4) requests");
    }

    #[test]
    fn batches_follow_a_descending_key_order_and_a_limit() {
        let mut s = spec(KeySet::from_keys([&b"b"[..], b"a", b"d", b"c", b"a"]));
        s.sort = Some((SortField::Key, true));
        s.limit = Some(3);
        let mut p = Pager::new(s).with_key_batches(128);
        let b = p.next_batch().unwrap();
        assert_eq!(
            b.keys,
            vec![b"d".to_vec(), b"c".to_vec(), b"b".to_vec()],
            "duplicates once, at most the limit"
        );
        let rows = p.accept_gets(
            5,
            vec![
                get_answer(&[b"d"], 5),
                get_answer(&[], 5),
                get_answer(&[b"b"], 5),
            ],
        );
        assert_eq!(keys_of(&rows), vec![b"d".to_vec(), b"b".to_vec()]);
        let b = p.next_batch().unwrap();
        assert_eq!(b.keys, vec![b"a".to_vec()], "one row still wanted");
        p.accept_gets(5, vec![get_answer(&[b"a"], 5)]);
        assert_eq!(p.next_batch(), None);
        // single keys and ranges keep their range requests
        assert!(!Pager::new(spec(KeySet::from_keys([&b"a"[..]])))
            .with_key_batches(128)
            .batched());
        assert!(
            !Pager::new(spec(KeySet::from_range(KeyRange::prefix(b"a"))))
                .with_key_batches(128)
                .batched()
        );
        assert!(!Pager::new(spec(KeySet::from_keys([&b"a"[..], b"b"])))
            .with_key_batches(0)
            .batched());
    }

    #[test]
    fn oversized_batches_halve_down_to_one_key() {
        let list: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        let mut p = Pager::new(spec(KeySet::from_keys(list.iter().map(|k| k.as_bytes()))))
            .with_key_batches(8);
        assert_eq!(p.shrink_batch(), Oversized::Retry);
        assert_eq!(p.next_batch().unwrap().keys.len(), 4);
        assert_eq!(p.shrink_batch(), Oversized::Retry);
        assert_eq!(p.shrink_batch(), Oversized::Retry);
        let b = p.next_batch().unwrap();
        assert_eq!(
            (b.keys.len(), b.keys[0].as_slice()),
            (1, &b"k0"[..]),
            "same position"
        );
        assert_eq!(p.shrink_batch(), Oversized::SingleKey);
        p.accept_gets(3, vec![get_answer(&[b"k0"], 3)]);
        assert_eq!(
            p.next_batch().unwrap().keys.len(),
            1,
            "the smaller batch is kept"
        );
    }

    #[test]
    fn refused_batches_are_recognised() {
        use crate::client::EtcdError;
        let st = |code, m: &str| EtcdError::Status {
            code,
            message: m.to_string(),
        };
        for e in [
            st(
                tonic::Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            st(tonic::Code::InvalidArgument, "etcdserver: request is too large"),
            st(
                tonic::Code::ResourceExhausted,
                "grpc: received message larger than max (3000000 vs. 2097152)",
            ),
            st(
                tonic::Code::OutOfRange,
                "Error, decoded message length too large: found 83886300 bytes, the limit is: 67108864 bytes",
            ),
        ] {
            assert!(batch_refused(&e), "{e:?}");
        }
        assert!(!batch_refused(&st(
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted"
        )));
        assert!(!batch_refused(&st(
            tonic::Code::PermissionDenied,
            "etcdserver: permission denied"
        )));
    }

    #[test]
    fn counts_add_up_over_ranges_and_key_lists() {
        let mut s = spec(KeySet::from_ranges(vec![
            KeyRange::prefix(b"a/"),
            KeyRange::prefix(b"c/"),
        ]));
        s.fetch_size = 2;
        let mut p = Pager::new(s).count_only();
        let r = p.next_request().unwrap();
        assert!(r.count_only && r.keys_only && r.limit == 0, "{r:?}");
        let mut a = get_answer(&[], 9);
        a.0.count = 5;
        assert!(p.accept(a).is_empty());
        let r = p.next_request().unwrap();
        assert_eq!(
            (r.key.as_slice(), r.revision),
            (&b"c/"[..], 9),
            "the second range at the first's revision"
        );
        let mut c = get_answer(&[], 9);
        c.0.count = 7;
        p.accept(c);
        assert_eq!(p.next_request(), None);
        assert_eq!(p.counted(), 12);
        let mut p = Pager::new(spec(KeySet::from_keys([&b"x"[..], b"y", b"z"])))
            .count_only()
            .with_key_batches(2);
        let b = p.next_batch().unwrap();
        assert!(b.count_only && b.keys.len() == 2);
        let mut one = get_answer(&[], 4);
        one.0.count = 1;
        p.accept_gets(4, vec![one.clone(), get_answer(&[], 4)]);
        p.accept_gets(4, vec![one]);
        assert_eq!((p.next_batch(), p.counted(), p.pages()), (None, 2, 2));
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
    fn a_first_page_from_an_earlier_scan_takes_the_range_at_once() {
        // 100k keys of 110 bytes: 11 MB, within the 16 MiB budget
        let first = first_page_for(100_000, 11_000_000);
        assert!(first >= 100_000, "{first}");
        // the budget still bounds a page: 1M keys of 110 bytes
        assert_eq!(
            first_page_for(1_000_000, 110_000_000),
            PAGE_BYTES as u64 / 110
        );
        // nothing found: one key's budget is all of it
        assert_eq!(first_page_for(0, 0), PAGE_BYTES as u64);
        let mut s = spec(KeySet::from_ranges(vec![KeyRange::prefix(b"p/")]));
        s.fetch_size = 1000;
        s.adaptive = true;
        s.whole_range = true;
        let pager = Pager::new(s.clone()).with_first_page(first);
        assert_eq!(pager.page_limit(), first);
        // an explicit fetch_size is kept
        s.adaptive = false;
        assert_eq!(Pager::new(s).with_first_page(first).page_limit(), 1000);
    }

    #[test]
    fn whole_range_pages_go_to_the_byte_budget_at_once() {
        let mut s = spec(KeySet::all());
        s.fetch_size = 1000;
        s.adaptive = true;
        s.whole_range = true;
        let mut p = Pager::new(s);
        assert_eq!(p.next_request().unwrap().limit, 1000);
        p.advance(1000, 1000 * 128, Some(b"k1"), true, 1);
        assert_eq!(p.next_request().unwrap().limit, (PAGE_BYTES / 128) as i64);
    }

    #[test]
    fn a_refused_page_is_shrunk_by_what_the_range_has_left() {
        // 1000 tiny keys, then etcd counts 4100 more; asking for a page of
        // a million keys got an 82 MB refusal: those 4100 keys are 82 MB.
        let mut s = spec(KeySet::all());
        s.fetch_size = 1000;
        s.adaptive = true;
        s.whole_range = true;
        let mut p = Pager::new(s);
        p.note_count(5100, 1000, true);
        p.advance(1000, 12_000, Some(b"a"), true, 1);
        let asked = p.next_request().unwrap().limit as u64;
        assert!(asked > 1_000_000, "{asked}");
        let found = 4100 * 20 * 1024;
        assert_eq!(p.shrink(Some(found), 64 << 20), Oversized::Retry);
        let next = p.next_request().unwrap().limit as u64;
        let fits = (PAGE_BYTES as u64) / (20 * 1024);
        assert!(next <= fits && next >= fits / 2, "{next} keys of 20 KiB");
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
