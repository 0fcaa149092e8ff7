//! Property tests of `etcd_fdw_core` (proptest), one module per area:
//!
//! * [`keyrange`]: the key range algebra against brute force over small
//!   byte alphabets with the edges 0x00 and 0xff;
//! * [`options`]: option parsing never panics, checks every value, and
//!   valid options round-trip;
//! * [`scan`]: the pager against a fake etcd (revisions, limits, sorts,
//!   oversized answers), `merge_top` against sorting the union,
//!   `requests_for` against the pager;
//! * [`pending`]: the pending-writes overlay and its commit transaction
//!   against a model with savepoints;
//! * [`plan`]: pushed-down conditions, the plan's text encoding, EXPLAIN's
//!   key literals.
//!
//! Each property runs [`cases`] cases by default (the whole suite stays
//! well under a minute in debug builds); `PROPTEST_CASES=N` runs N instead.

mod keyrange;
mod options;
mod pending;
mod plan;
mod scan;

use proptest::prelude::*;

/// The configuration of every property: `default_cases` cases unless
/// `PROPTEST_CASES` says otherwise (proptest reads it for its default).
pub fn cases(default_cases: u32) -> ProptestConfig {
    let config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_some() {
        config
    } else {
        ProptestConfig {
            cases: default_cases,
            ..config
        }
    }
}

/// The bytes keys are drawn from: the edges 0x00 and 0xff, their
/// neighbours and two ordinary letters.
pub const ALPHABET: [u8; 6] = [0x00, 0x01, b'a', b'b', 0xfe, 0xff];

/// A byte of [`ALPHABET`].
pub fn byte() -> impl Strategy<Value = u8> {
    prop::sample::select(&ALPHABET[..])
}

/// A key of 0 to `max_len` bytes of [`ALPHABET`] (may be empty).
pub fn key(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(byte(), 0..=max_len)
}

/// Every key of length 0 to `max_len` over [`ALPHABET`], sorted.
pub fn universe(max_len: usize) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new()];
    let mut layer = vec![Vec::new()];
    for _ in 0..max_len {
        let mut next = Vec::new();
        for k in &layer {
            for &b in &ALPHABET {
                let mut k2: Vec<u8> = k.clone();
                k2.push(b);
                next.push(k2);
            }
        }
        out.extend(next.iter().cloned());
        layer = next;
    }
    out.sort();
    out
}
