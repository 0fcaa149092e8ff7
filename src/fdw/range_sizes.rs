//! What the backend's earlier complete scans of a key range found (keys
//! and bytes), so that the next scan of the same range that reads all of
//! it sizes its first page to take it at once
//! ([`etcd_fdw_core::scan::first_page_for`]) without statistics.  Only a
//! first page's size comes from here: a range that changed since costs at
//! most one refused or one extra request, never a wrong row.

use std::cell::RefCell;
use std::collections::HashMap;

use etcd_fdw_core::keyrange::KeySet;

/// Ranges remembered per backend; the map starts over when full.
const MAX_RANGES: usize = 256;

/// (server, key set) -> (keys, bytes).
type Sizes = HashMap<(u32, String), (u64, u64)>;

thread_local! {
    static SIZES: RefCell<Sizes> = RefCell::new(HashMap::new());
}

fn key(server_oid: u32, keys: &KeySet) -> (u32, String) {
    (server_oid, format!("{keys:?}"))
}

/// What the last complete scan of `keys` on the server found.
pub fn get(server_oid: u32, keys: &KeySet) -> Option<(u64, u64)> {
    SIZES.with(|s| s.borrow().get(&key(server_oid, keys)).copied())
}

/// Remember a complete scan of `keys`: `rows` keys, `bytes` bytes.
pub fn put(server_oid: u32, keys: &KeySet, rows: u64, bytes: u64) {
    SIZES.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() >= MAX_RANGES {
            s.clear();
        }
        s.insert(key(server_oid, keys), (rows, bytes));
    })
}
