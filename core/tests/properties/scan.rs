//! The pager (`scan.rs`) against a fake etcd: a store with a history of
//! revisions, answering each [`PageRequest`] the way etcd's range does
//! (its `[key, range_end)` convention, sort, limit and `more`, reads at a
//! revision, keys-only, and refusing answers above a size), while a
//! concurrent writer changes the store between pages.  The scan must
//! return the snapshot it pinned: every key of its range exactly once, in
//! order, never more than its limit.  `merge_top` and `requests_for` are
//! checked against sorting and against the pager itself.

use std::collections::{BTreeMap, BTreeSet};

use etcd_client::proto::{PbKeyValue, PbRangeResponse, PbResponseHeader};
use etcd_client::{GetResponse, KeyValue};
use etcd_fdw_core::keyrange::{KeyRange, KeySet};
use etcd_fdw_core::scan::{
    merge_top, requests_for, Oversized, PageRequest, Pager, ScanSpec, SortField, SortKey,
    PAGE_BYTES,
};
use proptest::prelude::*;

use crate::{byte, cases};

/// One key in the fake store.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    value: Vec<u8>,
    create: i64,
    modr: i64,
    version: i64,
}

/// A change by some other client.
#[derive(Clone, Debug)]
enum Write {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

type Store = BTreeMap<Vec<u8>, Row>;

/// etcd's key-value store with its whole history (no compaction).
struct FakeEtcd {
    /// `history[i]` is the store at revision `i + 1` (revision 1 is the
    /// empty store).
    history: Vec<Store>,
    /// Answers larger than this many bytes (keys and values) are refused,
    /// like a gRPC message above the client's limit.
    max_bytes: Option<u64>,
    /// What a refusal says about the size of the answer.
    tells_size: Told,
    /// Ties of a non-key sort come out in an order of this seed (etcd's
    /// sort is not stable).
    tie_seed: u64,
}

/// What etcd's "message too large" error says about the size.
#[derive(Clone, Copy, Debug)]
enum Told {
    /// The size.
    Size,
    /// Nothing.
    Nothing,
    /// A wrong size (the pager must not trust it to grow a page).
    Wrong(u64),
}

/// What etcd answered.
enum Answer {
    Page(GetResponse),
    /// Too large: the bytes (when the error says).
    TooLarge(Option<u64>),
}

fn row_bytes(key: &[u8], row: &Row) -> usize {
    key.len() + row.value.len()
}

fn sort_value(field: SortField, key: &[u8], row: &Row) -> (i64, Vec<u8>) {
    match field {
        SortField::Key => (0, key.to_vec()),
        SortField::Value => (0, row.value.clone()),
        SortField::CreateRevision => (row.create, Vec::new()),
        SortField::ModRevision => (row.modr, Vec::new()),
        SortField::Version => (row.version, Vec::new()),
    }
}

fn hash(seed: u64, key: &[u8]) -> u64 {
    key.iter().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl FakeEtcd {
    fn new(writes: &[Write]) -> Self {
        let mut etcd = FakeEtcd {
            history: vec![Store::new()],
            max_bytes: None,
            tells_size: Told::Size,
            tie_seed: 0,
        };
        for w in writes {
            etcd.apply(w);
        }
        etcd
    }

    fn revision(&self) -> i64 {
        self.history.len() as i64
    }

    fn at(&self, revision: i64) -> &Store {
        &self.history[revision as usize - 1]
    }

    /// A write, at a new revision (a delete of a missing key is none).
    fn apply(&mut self, w: &Write) {
        let rev = self.revision() + 1;
        let mut store = self.history.last().cloned().unwrap_or_default();
        match w {
            Write::Put(k, v) => {
                let (create, version) =
                    store.get(k).map_or((rev, 1), |r| (r.create, r.version + 1));
                store.insert(
                    k.clone(),
                    Row {
                        value: v.clone(),
                        create,
                        modr: rev,
                        version,
                    },
                );
            }
            Write::Delete(k) => {
                if store.remove(k).is_none() {
                    return;
                }
            }
        }
        self.history.push(store);
    }

    /// etcd's answer to a range request.
    fn answer(&self, req: &PageRequest) -> Answer {
        assert!(!req.key.is_empty(), "etcd refuses an empty key: {req:?}");
        assert!(req.limit >= 0, "{req:?}");
        assert!(
            req.revision <= self.revision(),
            "a future revision: {req:?}"
        );
        let rev = if req.revision == 0 {
            self.revision()
        } else {
            req.revision
        };
        let mut rows: Vec<(&Vec<u8>, &Row)> = self
            .at(rev)
            .iter()
            .filter(|(k, _)| etcd_selects(&req.key, &req.range_end, k))
            .collect();
        match req.sort {
            None | Some((SortField::Key, false)) => {}
            Some((field, desc)) => {
                rows.sort_by_key(|(k, r)| (sort_value(field, k, r), hash(self.tie_seed, k)));
                if desc {
                    rows.reverse();
                }
            }
        }
        let mut more = false;
        if req.limit > 0 && rows.len() > req.limit as usize {
            rows.truncate(req.limit as usize);
            more = true;
        }
        let kvs: Vec<PbKeyValue> = rows
            .iter()
            .map(|(k, r)| PbKeyValue {
                key: k.to_vec(),
                create_revision: r.create,
                mod_revision: r.modr,
                version: r.version,
                value: if req.keys_only {
                    Vec::new()
                } else {
                    r.value.clone()
                },
                lease: 0,
            })
            .collect();
        let bytes: u64 = kvs
            .iter()
            .map(|kv| (kv.key.len() + kv.value.len()) as u64)
            .sum();
        if self.max_bytes.is_some_and(|m| bytes > m) {
            return Answer::TooLarge(match self.tells_size {
                Told::Size => Some(bytes),
                Told::Nothing => None,
                Told::Wrong(n) => Some(n),
            });
        }
        Answer::Page(GetResponse(PbRangeResponse {
            header: Some(PbResponseHeader {
                revision: self.revision(),
                ..Default::default()
            }),
            count: kvs.len() as i64,
            kvs,
            more,
        }))
    }
}

/// What etcd's `(key, range_end)` selects: empty end = the key alone,
/// "\0" = every key from `key` on, else `[key, range_end)`.
fn etcd_selects(key: &[u8], range_end: &[u8], k: &[u8]) -> bool {
    match range_end {
        [] => k == key,
        [0] => k >= key,
        end => key <= k && k < end,
    }
}

/// How a scan ended.
#[derive(Debug)]
struct Scan {
    rows: Vec<KeyValue>,
    requests: Vec<PageRequest>,
    /// The pager gave up on an oversized answer.
    gave_up: Option<(Oversized, PageRequest)>,
    revision: i64,
    pages: u64,
}

/// Drive a pager the way the FDW's scan does (src/fdw/scan.rs), applying
/// one of `concurrent` writes after every page, and check what holds for
/// every request on the way.
fn run(spec: ScanSpec, etcd: &mut FakeEtcd, concurrent: &[Write]) -> Result<Scan, TestCaseError> {
    let mut pager = Pager::new(spec.clone());
    let mut scan = Scan {
        rows: Vec::new(),
        requests: Vec::new(),
        gave_up: None,
        revision: 0,
        pages: 0,
    };
    let mut writes = concurrent.iter();
    let mut pinned: Option<i64> = (spec.revision != 0).then_some(spec.revision);
    let mut retried: Option<PageRequest> = None;
    let key_order = !matches!(spec.sort, Some((f, _)) if f != SortField::Key);
    while let Some(req) = pager.next_request() {
        prop_assert!(
            scan.requests.len() < 10_000,
            "the scan does not end: {:?}",
            spec
        );
        // Every page after the first reads the revision the first saw.
        prop_assert_eq!(req.revision, pinned.unwrap_or(0), "{:?}", req);
        prop_assert_eq!(req.serializable, spec.serializable);
        prop_assert_eq!(
            req.sort,
            spec.sort.filter(|s| *s != (SortField::Key, false))
        );
        let merging_by_value = !key_order
            && spec.keys.ranges().len() > 1
            && matches!(spec.sort, Some((SortField::Value, _)));
        prop_assert_eq!(req.keys_only, spec.keys_only && !merging_by_value);
        if key_order {
            // Never 0, which etcd reads as "no limit".
            prop_assert!(req.limit >= 1, "{:?}", req);
            if let Some(l) = spec.limit {
                let remaining = l - scan.rows.len() as u64;
                prop_assert!(
                    req.limit as u64 <= remaining,
                    "{:?} with {} to go",
                    req,
                    remaining
                );
            }
        } else {
            prop_assert_eq!(req.limit as u64, spec.limit.unwrap_or(0));
        }
        if let Some(prev) = retried.take() {
            // A retry after an oversized answer: same place, fewer keys.
            prop_assert_eq!((&req.key, &req.range_end), (&prev.key, &prev.range_end));
            prop_assert!(
                req.limit >= 1 && req.limit < prev.limit,
                "{:?} after {:?}",
                req,
                prev
            );
        }
        scan.requests.push(req.clone());
        match etcd.answer(&req) {
            Answer::TooLarge(found) => {
                let limit_bytes = etcd.max_bytes.unwrap_or(u64::MAX);
                match pager.shrink(found, limit_bytes) {
                    Oversized::Retry => retried = Some(req),
                    other => {
                        scan.gave_up = Some((other, req));
                        break;
                    }
                }
            }
            Answer::Page(resp) => {
                let header = resp.header().map(|h| h.revision());
                let got = pager.accept(resp);
                pinned = pinned.or(header);
                scan.rows.extend(got);
                if let Some(w) = writes.next() {
                    etcd.apply(w);
                }
            }
        }
    }
    scan.revision = pager.revision();
    scan.pages = pager.pages();
    Ok(scan)
}

/// Drive a batched key-list pager ([`Pager::with_key_batches`]) the way
/// the FDW does: each read-only transaction answered key by key by the
/// fake etcd at the batch's revision, refused (and halved) when it holds
/// more than `max_rows` rows, one concurrent write after each answer.
fn run_batched(
    spec: ScanSpec,
    batch: u32,
    max_rows: usize,
    etcd: &mut FakeEtcd,
    concurrent: &[Write],
) -> Result<(Vec<KeyValue>, u64, bool), TestCaseError> {
    let mut pager = Pager::new(spec.clone()).with_key_batches(batch);
    let mut rows = Vec::new();
    let mut writes = concurrent.iter();
    let mut pinned: Option<i64> = (spec.revision != 0).then_some(spec.revision);
    let mut refused = 0;
    let mut sent = 0;
    while let Some(b) = pager.next_batch() {
        prop_assert!(sent + refused < 10_000, "the scan does not end");
        prop_assert!(
            !b.keys.is_empty() && b.keys.len() <= batch as usize,
            "{:?}",
            b
        );
        prop_assert_eq!(b.revision, pinned.unwrap_or(0));
        prop_assert_eq!(b.serializable, spec.serializable);
        let mut gets = Vec::new();
        for k in &b.keys {
            prop_assert!(spec.keys.contains(k), "{:?} is not in the list", k);
            let req = PageRequest {
                key: k.clone(),
                range_end: Vec::new(),
                limit: 0,
                sort: None,
                revision: b.revision,
                keys_only: b.keys_only,
                serializable: b.serializable,
                count_only: false,
            };
            match etcd.answer(&req) {
                Answer::Page(g) => gets.push(g),
                Answer::TooLarge(_) => unreachable!("no byte limit here"),
            }
        }
        let found: usize = gets.iter().map(|g| g.kvs().len()).sum();
        if found > max_rows {
            refused += 1;
            if pager.shrink_batch() != Oversized::Retry {
                return Ok((rows, pager.pages(), true));
            }
            continue;
        }
        sent += 1;
        let header = etcd.revision();
        rows.extend(pager.accept_gets(header, gets));
        pinned = pinned.or(Some(header));
        if let Some(w) = writes.next() {
            etcd.apply(w);
        }
    }
    prop_assert_eq!(pager.pages(), sent);
    Ok((rows, pager.pages(), false))
}

/// Keys of the fake store: one to three bytes of the alphabet.
fn store_key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(byte(), 1..=3)
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        3 => (store_key(), prop::collection::vec(any::<u8>(), 0..24)).prop_map(|(k, v)| Write::Put(k, v)),
        1 => store_key().prop_map(Write::Delete),
    ]
}

fn short_key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(byte(), 0..=2)
}

/// The key set of a scan: everything, a prefix, a range, a comparison,
/// an IN list or several ranges.
fn key_set() -> impl Strategy<Value = KeySet> {
    let range = prop_oneof![
        Just(KeyRange::all()),
        short_key().prop_map(|p| KeyRange::prefix(&p)),
        (short_key(), prop::option::of(short_key()))
            .prop_map(|(a, b)| KeyRange::between(&a, b.as_deref())),
        (short_key(), any::<bool>()).prop_map(|(k, i)| KeyRange::from(&k, i)),
        (short_key(), any::<bool>()).prop_map(|(k, i)| KeyRange::to(&k, i)),
    ];
    prop_oneof![
        2 => range.clone().prop_map(KeySet::from_range),
        1 => prop::collection::vec(store_key(), 0..5)
            .prop_map(|ks| KeySet::from_keys(ks.iter().map(Vec::as_slice))),
        1 => prop::collection::vec(range, 0..4).prop_map(KeySet::from_ranges),
    ]
}

fn key_sort() -> impl Strategy<Value = Option<(SortField, bool)>> {
    prop_oneof![
        Just(None),
        Just(Some((SortField::Key, false))),
        Just(Some((SortField::Key, true))),
    ]
}

fn other_sort() -> impl Strategy<Value = (SortField, bool)> {
    (
        prop::sample::select(vec![
            SortField::Value,
            SortField::CreateRevision,
            SortField::ModRevision,
            SortField::Version,
        ]),
        any::<bool>(),
    )
}

/// A scan spec with the given sort.
fn spec(sort: impl Strategy<Value = Option<(SortField, bool)>>) -> impl Strategy<Value = ScanSpec> {
    (
        key_set(),
        sort,
        prop::option::of(0u64..12),
        any::<bool>(),
        any::<bool>(),
        1u32..6,
        any::<bool>(),
    )
        .prop_map(
            |(keys, sort, limit, keys_only, serializable, fetch_size, adaptive)| ScanSpec {
                keys,
                sort,
                limit,
                keys_only,
                revision: 0,
                serializable,
                fetch_size,
                adaptive,
                whole_range: false,
            },
        )
}

/// The fake etcd's history, a revision to read (0 = latest) and what
/// other clients write during the scan.
fn world() -> impl Strategy<Value = (Vec<Write>, f64, Vec<Write>)> {
    (
        prop::collection::vec(write(), 0..40),
        0.0..1.0f64,
        prop::collection::vec(write(), 0..8),
    )
}

/// The rows the scan must return: the store at `revision`, in its key set,
/// in key order (descending when asked), at most `limit`.
fn expected_by_key(etcd: &FakeEtcd, revision: i64, spec: &ScanSpec) -> Vec<(Vec<u8>, Row)> {
    let mut rows: Vec<(Vec<u8>, Row)> = etcd
        .at(revision)
        .iter()
        .filter(|(k, _)| spec.keys.contains(k))
        .map(|(k, r)| (k.clone(), r.clone()))
        .collect();
    if matches!(spec.sort, Some((SortField::Key, true))) {
        rows.reverse();
    }
    if let Some(l) = spec.limit {
        rows.truncate(l as usize);
    }
    rows
}

/// Pick the revision the scan reads: latest (0) or a past one.
fn pick_revision(etcd: &FakeEtcd, at: f64) -> i64 {
    if at < 0.5 {
        0
    } else {
        1 + ((at - 0.5) * 2.0 * etcd.revision() as f64) as i64 % etcd.revision()
    }
}

proptest! {
    #![proptest_config(cases(256))]

    /// A scan in key order (ascending or descending) returns exactly the
    /// rows of the snapshot it pinned (the table's revision, else the one
    /// the first page saw), each once, in order, never more than its
    /// limit, while other clients write between its pages.
    #[test]
    fn key_order_scans_return_their_snapshot(
        mut spec in spec(key_sort()),
        (history, at, concurrent) in world(),
    ) {
        let mut etcd = FakeEtcd::new(&history);
        spec.revision = pick_revision(&etcd, at);
        let revision = if spec.revision == 0 { etcd.revision() } else { spec.revision };
        let want = expected_by_key(&etcd, revision, &spec);
        let scan = run(spec.clone(), &mut etcd, &concurrent)?;
        prop_assert!(scan.gave_up.is_none());
        let got: Vec<(Vec<u8>, Row)> = scan
            .rows
            .iter()
            .map(|kv| (kv.key().to_vec(), Row {
                value: kv.value().to_vec(),
                create: kv.create_revision(),
                modr: kv.mod_revision(),
                version: kv.version(),
            }))
            .collect();
        let want: Vec<(Vec<u8>, Row)> = want
            .into_iter()
            .map(|(k, mut r)| {
                if spec.keys_only {
                    r.value.clear();
                }
                (k, r)
            })
            .collect();
        prop_assert_eq!(got, want);
        if !scan.requests.is_empty() {
            prop_assert_eq!(scan.revision, revision);
        }
        prop_assert_eq!(scan.pages, scan.requests.len() as u64);
        // Without a limit, a fixed page size bounds the requests: one per
        // full page, plus one per range to find its end.
        if spec.limit.is_none() && !spec.adaptive {
            let per = u64::from(spec.fetch_size);
            let bound = scan.rows.len() as u64 / per + spec.keys.ranges().len() as u64;
            prop_assert!(scan.pages <= bound, "{} pages for {} rows", scan.pages, scan.rows.len());
        }
    }

    /// A key list read in read-only transactions of `batch` keys returns
    /// what the same scan reads one key per request: the snapshot's rows
    /// of the listed keys, each once, in the scan's order (key ascending
    /// or descending, or the best `limit` by another field), never more
    /// than the limit; every batch reads the pinned revision; a batch
    /// refused for its size is asked for again with fewer keys, and with
    /// no limit the scan takes ceil(keys / batch) transactions.
    #[test]
    fn batched_key_lists_read_like_single_gets(
        keys in prop::collection::vec(store_key(), 2..24),
        sort in prop_oneof![3 => key_sort(), 1 => other_sort().prop_map(Some)],
        limit in prop::option::weighted(0.4, 0u64..10),
        keys_only in any::<bool>(),
        serializable in any::<bool>(),
        batch in 1u32..9,
        max_rows in prop_oneof![Just(usize::MAX), 1usize..4],
        (history, at, concurrent) in world(),
    ) {
        let spec = ScanSpec {
            keys: KeySet::from_keys(keys.iter().map(Vec::as_slice)),
            sort,
            limit: if matches!(sort, Some((f, _)) if f != SortField::Key) { limit.or(Some(5)) } else { limit },
            keys_only,
            revision: 0,
            serializable,
            fetch_size: 3,
            adaptive: false,
            whole_range: false,
        };
        prop_assume!(spec.keys.point_count().is_some_and(|n| n > 1));
        let mut etcd = FakeEtcd::new(&history);
        let revision = pick_revision(&etcd, at);
        let spec = ScanSpec { revision, ..spec };
        let mut single = FakeEtcd::new(&history);
        single.tie_seed = etcd.tie_seed;
        let want = run(spec.clone(), &mut single, &concurrent)?;
        prop_assert!(want.gave_up.is_none());
        let (got, pages, gave_up) = run_batched(spec.clone(), batch, max_rows, &mut etcd, &concurrent)?;
        prop_assert!(!gave_up || max_rows == 0, "a batch of one key holds at most one row");
        let summary = |kvs: &[KeyValue]| -> Vec<(Vec<u8>, Vec<u8>, i64)> {
            kvs.iter().map(|kv| (kv.key().to_vec(), kv.value().to_vec(), kv.mod_revision())).collect()
        };
        prop_assert_eq!(summary(&got), summary(&want.rows));
        let n = spec.keys.point_count().unwrap_or(0) as u64;
        if spec.limit.is_none() && max_rows == usize::MAX && n > 1 {
            prop_assert_eq!(pages, n.div_ceil(u64::from(batch)));
        }
    }

    /// A non-key sort (only pushed down with a limit, but the pager also
    /// takes none) returns the best `limit` rows of the snapshot by that
    /// field, over one range or merged over several.
    #[test]
    fn sorted_scans_return_the_best_rows(
        (field, desc) in other_sort(),
        mut spec in spec(Just(None)),
        (history, at, concurrent) in world(),
        tie_seed in any::<u64>(),
    ) {
        spec.sort = Some((field, desc));
        let mut etcd = FakeEtcd::new(&history);
        etcd.tie_seed = tie_seed;
        spec.revision = pick_revision(&etcd, at);
        let revision = if spec.revision == 0 { etcd.revision() } else { spec.revision };
        let store = etcd.at(revision).clone();
        let mut want: Vec<(i64, Vec<u8>)> = store
            .iter()
            .filter(|(k, _)| spec.keys.contains(k))
            .map(|(k, r)| sort_value(field, k, r))
            .collect();
        want.sort();
        if desc {
            want.reverse();
        }
        want.truncate(spec.limit.map_or(usize::MAX, |l| l as usize));
        let scan = run(spec.clone(), &mut etcd, &concurrent)?;
        prop_assert!(scan.gave_up.is_none());
        let keys: BTreeSet<&[u8]> = scan.rows.iter().map(|kv| kv.key()).collect();
        prop_assert_eq!(keys.len(), scan.rows.len(), "a row twice");
        let mut got = Vec::new();
        for kv in &scan.rows {
            prop_assert!(spec.keys.contains(kv.key()));
            let row = store.get(kv.key());
            prop_assert!(row.is_some(), "{:?} is not in the snapshot", kv.key());
            if let Some(r) = row {
                prop_assert_eq!((kv.mod_revision(), kv.version()), (r.modr, r.version));
                got.push(sort_value(field, kv.key(), r));
            }
        }
        prop_assert_eq!(got, want);
        prop_assert!(scan.requests.len() <= spec.keys.ranges().len());
    }

    /// Answers above a size limit: a key-order scan shrinks its page (same
    /// place, same revision, fewer keys) and still returns its snapshot,
    /// giving up only when one row alone is too large; a non-key sort
    /// cannot be split and gives up at once.
    #[test]
    fn oversized_answers_shrink_the_page(
        mut spec in spec(prop_oneof![3 => key_sort(), 1 => other_sort().prop_map(Some)]),
        wide in prop_oneof![
            Just(KeySet::all()),
            byte().prop_map(|b| KeySet::from_range(KeyRange::prefix(&[b]))),
        ],
        (history, at, concurrent) in (
            prop::collection::vec(write(), 10..60),
            0.0..1.0f64,
            prop::collection::vec(write(), 0..8),
        ),
        max_bytes in 8u64..100,
        tells_size in prop_oneof![
            2 => Just(Told::Size),
            1 => Just(Told::Nothing),
            2 => prop_oneof![Just(0u64), 1u64..100, Just(u64::MAX)].prop_map(Told::Wrong),
        ],
        fetch_size in prop_oneof![1u32..6, 6u32..100, 100u32..2000],
        limit in prop::option::weighted(0.3, 1u64..30),
        keys_only in prop::bool::weighted(0.2),
    ) {
        if spec.keys.ranges().len() < 2 {
            spec.keys = wide;
        }
        spec.limit = limit;
        spec.keys_only = keys_only;
        let mut etcd = FakeEtcd::new(&history);
        etcd.max_bytes = Some(max_bytes);
        etcd.tells_size = tells_size;
        spec.revision = pick_revision(&etcd, at);
        spec.fetch_size = fetch_size;
        let revision = if spec.revision == 0 { etcd.revision() } else { spec.revision };
        let key_order = !matches!(spec.sort, Some((f, _)) if f != SortField::Key);
        let want = expected_by_key(&etcd, revision, &spec);
        let store = etcd.at(revision).clone();
        let scan = run(spec.clone(), &mut etcd, &concurrent)?;
        let size = |k: &[u8], r: &Row| if spec.keys_only { k.len() as u64 } else { row_bytes(k, r) as u64 };
        match &scan.gave_up {
            None => {
                if key_order {
                    let got: Vec<&[u8]> = scan.rows.iter().map(|kv| kv.key()).collect();
                    let want: Vec<&[u8]> = want.iter().map(|(k, _)| k.as_slice()).collect();
                    prop_assert_eq!(got, want);
                }
            }
            Some((Oversized::SingleKey, req)) => {
                prop_assert!(key_order);
                prop_assert_eq!(req.limit, 1);
                // The next row alone is too large; every row before it fit.
                let next = want.get(scan.rows.len());
                prop_assert!(next.is_some_and(|(k, r)| size(k, r) > max_bytes), "{:?}", next);
                for kv in &scan.rows {
                    prop_assert!(size(kv.key(), &store[kv.key()]) <= max_bytes);
                }
            }
            Some((Oversized::Sorted, _)) => prop_assert!(!key_order),
            Some((Oversized::Retry, _)) => prop_assert!(false, "Retry ends no scan"),
        }
        if key_order && want.iter().all(|(k, r)| size(k, r) <= max_bytes) {
            prop_assert!(scan.gave_up.is_none(), "every row fits, yet {:?}", scan.gave_up);
        }
    }

    /// `merge_top` over the chunks of several answers keeps what a stable
    /// sort of all of them, cut at `limit`, keeps (NULLs last ascending,
    /// first descending).
    #[test]
    fn merge_top_is_sort_and_take(
        chunks in prop::collection::vec(
            prop::collection::vec(
                prop_oneof![
                    4 => (0i64..6).prop_map(Some),
                    1 => Just(None),
                ],
                0..30,
            ),
            0..5,
        ),
        bytes in any::<bool>(),
        limit in prop_oneof![0usize..12, 12usize..80, Just(usize::MAX)],
        desc in any::<bool>(),
    ) {
        // Items: (sort value, position in the input); the value is an
        // integer or, with `bytes`, its one-byte encoding (0xfN).
        type Item = (Option<i64>, Vec<u8>, usize);
        fn key(bytes: bool) -> impl for<'a> Fn(&'a Item) -> SortKey<'a> {
            move |it: &Item| match it.0 {
                None => SortKey::Null,
                Some(_) if bytes => SortKey::Bytes(&it.1),
                Some(v) => SortKey::Int(v),
            }
        }
        let mut n = 0;
        let chunks: Vec<Vec<Item>> = chunks
            .into_iter()
            .map(|c| {
                c.into_iter()
                    .map(|v| {
                        n += 1;
                        (v, v.map_or(Vec::new(), |v| vec![0xf0 + v as u8]), n)
                    })
                    .collect()
            })
            .collect();
        let mut top: Vec<Item> = Vec::new();
        for c in chunks.clone() {
            merge_top(&mut top, c, limit, desc, key(bytes));
        }
        // Reference: a stable sort by (NULL last, value), reversed for
        // descending (stable: reverse the order of equal items back).
        let mut all: Vec<Item> = chunks.concat();
        let rank = |it: &Item| (it.0.is_none(), it.0);
        if desc {
            all.sort_by(|a, b| rank(b).cmp(&rank(a)));
        } else {
            all.sort_by_key(rank);
        }
        all.truncate(limit);
        prop_assert_eq!(top, all);
    }

    /// The planner's request estimate is the number of requests the pager
    /// makes over `rows` keys of `row_bytes` bytes each, as long as the
    /// first page fits `PAGE_BYTES` (beyond that the estimate counts the
    /// smaller pages the pager's shrinking ends up with).
    #[test]
    fn requests_for_counts_the_pagers_requests(
        adaptive in any::<bool>(),
        fetch_size in prop_oneof![1u32..20, 20u32..5000],
        row_bytes in prop_oneof![1usize..200, 200usize..(1 << 20), Just(PAGE_BYTES)],
        rows in 0u64..60_000,
    ) {
        let fetch_size = fetch_size.min((PAGE_BYTES / row_bytes) as u32);
        // A fixed page size: keep the simulation short.
        let rows = if adaptive { rows } else { rows.min(u64::from(fetch_size) * 2_000) };
        let mut pager = Pager::new(ScanSpec {
            keys: KeySet::all(),
            sort: None,
            limit: None,
            keys_only: false,
            revision: 0,
            serializable: false,
            fetch_size,
            adaptive,
            whole_range: false,
        });
        let mut left = rows;
        let mut n = 0u64;
        while let Some(req) = pager.next_request() {
            let got = (req.limit as u64).min(left);
            left -= got;
            n += 1;
            pager.advance(got as usize, got as usize * row_bytes, Some(b"k"), left > 0, 1);
        }
        prop_assert_eq!(requests_for(rows as f64, fetch_size, adaptive, row_bytes as f64), n as f64);
    }
}
