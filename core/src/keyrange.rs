//! Key range algebra over etcd's raw-byte key space.
//!
//! etcd orders keys by their raw bytes and addresses them with half-open
//! intervals `[key, range_end)`.  A [`KeySet`] is a sorted list of disjoint
//! [`KeyRange`]s; every predicate the planner pushes down becomes a `KeySet`,
//! and conjunctions become intersections.  Nothing here knows PostgreSQL.

use std::cmp::Ordering;

/// A half-open interval of keys `[start, end)`; `end == None` is unbounded.
/// An empty `start` means "from the lowest key".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

/// The smallest key strictly greater than `key`: `key + "\0"`.
pub fn successor(key: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(key.len() + 1);
    s.extend_from_slice(key);
    s.push(0);
    s
}

/// The exclusive end of the range holding every key that starts with
/// `prefix`, or `None` when that range is unbounded (empty prefix or a prefix
/// of only 0xff bytes).  Same rule as etcd's `GetPrefixRangeEnd`.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl KeyRange {
    /// Every key.
    pub fn all() -> Self {
        KeyRange {
            start: Vec::new(),
            end: None,
        }
    }

    /// Exactly one key.
    pub fn single(key: &[u8]) -> Self {
        KeyRange {
            start: key.to_vec(),
            end: Some(successor(key)),
        }
    }

    /// Keys starting with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        KeyRange {
            start: prefix.to_vec(),
            end: prefix_end(prefix),
        }
    }

    /// `[start, end)`.
    pub fn between(start: &[u8], end: Option<&[u8]>) -> Self {
        KeyRange {
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
        }
    }

    /// The range of etcd's delete request as `etcdctl del` takes it: `key`
    /// alone (`range_end` `None`), `[key, range_end)`, or with an empty
    /// `range_end` every key `>= key` (etcd's `\0`).  An empty `key`
    /// alone names no key: `None`.
    pub fn of_request(key: &[u8], range_end: Option<&[u8]>) -> Option<Self> {
        match range_end {
            None if key.is_empty() => None,
            None => Some(KeyRange::single(key)),
            Some([]) => Some(KeyRange::from(key, true)),
            Some(end) => Some(KeyRange::between(key, Some(end))),
        }
    }

    /// Whether this is every key etcd can hold.
    pub fn is_all(&self) -> bool {
        self.start.is_empty() && self.end.is_none()
    }

    /// Keys `> k` (`inclusive == false`) or `>= k`.
    pub fn from(k: &[u8], inclusive: bool) -> Self {
        KeyRange {
            start: if inclusive { k.to_vec() } else { successor(k) },
            end: None,
        }
    }

    /// Keys `< k` (`inclusive == false`) or `<= k`.
    pub fn to(k: &[u8], inclusive: bool) -> Self {
        KeyRange {
            start: Vec::new(),
            end: Some(if inclusive { successor(k) } else { k.to_vec() }),
        }
    }

    /// Whether the range holds no etcd key: its end is at or below its
    /// start, or it is `["", "\0")`, which holds only the empty key (etcd
    /// has none, and [`Self::to_etcd`] could not say so: it would send
    /// `("\0", "\0")`, every key).
    pub fn is_empty(&self) -> bool {
        match &self.end {
            Some(end) => end.as_slice() <= self.start.as_slice() || end.as_slice() == b"\0",
            None => false,
        }
    }

    /// The single key this range holds, if it holds exactly one.
    pub fn as_single_key(&self) -> Option<&[u8]> {
        match &self.end {
            Some(end)
                if end.len() == self.start.len() + 1
                    && end.last() == Some(&0)
                    && end[..self.start.len()] == self.start[..] =>
            {
                Some(&self.start)
            }
            _ => None,
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|e| key < e)
    }

    pub fn intersect(&self, other: &KeyRange) -> KeyRange {
        let start = std::cmp::max(&self.start, &other.start).clone();
        let end = match (&self.end, &other.end) {
            (None, e) | (e, None) => e.clone(),
            (Some(a), Some(b)) => Some(std::cmp::min(a, b).clone()),
        };
        KeyRange { start, end }
    }

    /// The `(key, range_end)` pair of an etcd range request for this
    /// (non-empty, see [`Self::is_empty`]) range.  etcd has no empty key, so
    /// "from the beginning" is `\0`, and an unbounded end is `\0` too
    /// (etcd's "all keys >= key").
    pub fn to_etcd(&self) -> (Vec<u8>, Vec<u8>) {
        // One key: etcd's single-key form (no range_end), so a request
        // carries a long key once, not twice (key and key + "\0").
        if let Some(k) = self.as_single_key() {
            if !k.is_empty() {
                return (k.to_vec(), Vec::new());
            }
        }
        let key = if self.start.is_empty() {
            vec![0]
        } else {
            self.start.clone()
        };
        let end = self.end.clone().unwrap_or_else(|| vec![0]);
        (key, end)
    }
}

fn cmp_end(a: &Option<Vec<u8>>, b: &Option<Vec<u8>>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => x.cmp(y),
    }
}

/// A union of disjoint key ranges, kept sorted by start key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySet {
    ranges: Vec<KeyRange>,
}

impl KeySet {
    pub fn all() -> Self {
        KeySet {
            ranges: vec![KeyRange::all()],
        }
    }

    pub fn empty() -> Self {
        KeySet { ranges: Vec::new() }
    }

    /// Union of arbitrary (possibly overlapping or empty) ranges.
    pub fn from_ranges(mut ranges: Vec<KeyRange>) -> Self {
        ranges.retain(|r| !r.is_empty());
        ranges.sort_by(|a, b| a.start.cmp(&b.start));
        let mut out: Vec<KeyRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            if let Some(last) = out.last_mut() {
                // Overlapping or adjacent: merge.
                let touches = last.end.as_deref().is_none_or(|e| r.start.as_slice() <= e);
                if touches {
                    if cmp_end(&r.end, &last.end) == Ordering::Greater {
                        last.end = r.end;
                    }
                    continue;
                }
            }
            out.push(r);
        }
        KeySet { ranges: out }
    }

    pub fn from_range(r: KeyRange) -> Self {
        Self::from_ranges(vec![r])
    }

    /// Union of single keys (an `IN` list).
    pub fn from_keys<'a>(keys: impl IntoIterator<Item = &'a [u8]>) -> Self {
        Self::from_ranges(keys.into_iter().map(KeyRange::single).collect())
    }

    pub fn ranges(&self) -> &[KeyRange] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn is_all(&self) -> bool {
        self.ranges.len() == 1 && self.ranges[0] == KeyRange::all()
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.ranges.iter().any(|r| r.contains(key))
    }

    /// The number of keys when every range is a single key.
    pub fn point_count(&self) -> Option<usize> {
        self.ranges
            .iter()
            .all(|r| r.as_single_key().is_some())
            .then_some(self.ranges.len())
    }

    pub fn intersect(&self, other: &KeySet) -> KeySet {
        let mut out = Vec::new();
        for a in &self.ranges {
            for b in &other.ranges {
                let r = a.intersect(b);
                if !r.is_empty() {
                    out.push(r);
                }
            }
        }
        KeySet::from_ranges(out)
    }

    pub fn union(&self, other: &KeySet) -> KeySet {
        let mut all = self.ranges.clone();
        all.extend(other.ranges.iter().cloned());
        KeySet::from_ranges(all)
    }
}

/// The literal prefix of a `LIKE` pattern with backslash as escape
/// character, and whether the pattern is exactly `prefix%` (so that the
/// prefix range alone decides the predicate) or has no wildcard at all (then
/// it means equality with the prefix, see [`like_is_equality`]).  Returns
/// `None` when the literal prefix ends in a dangling escape (PostgreSQL
/// raises an error for it; we leave that to the local recheck); a dangling
/// escape after a wildcard gives a prefix that is not exact, so the clause
/// is rechecked too.
pub fn like_prefix(pattern: &[u8]) -> Option<(Vec<u8>, bool)> {
    let mut prefix = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' => {
                let next = *pattern.get(i + 1)?;
                prefix.push(next);
                i += 2;
            }
            b'%' => {
                // Exact when the rest is only '%' wildcards.
                let exact = pattern[i..].iter().all(|&c| c == b'%');
                return Some((prefix, exact));
            }
            b'_' => return Some((prefix, false)),
            c => {
                prefix.push(c);
                i += 1;
            }
        }
    }
    // No wildcard at all: LIKE is plain equality.
    Some((prefix, true))
}

/// Whether a `LIKE` pattern contains no wildcard, i.e. means equality.
pub fn like_is_equality(pattern: &[u8]) -> bool {
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' => i += 2,
            b'%' | b'_' => return false,
            _ => i += 1,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ranges() {
        assert_eq!(KeyRange::of_request(b"", None), None);
        assert_eq!(
            KeyRange::of_request(b"a", None),
            Some(KeyRange::single(b"a"))
        );
        let all = KeyRange::of_request(b"", Some(b"")).unwrap();
        assert!(all.is_all());
        assert_eq!(all.to_etcd(), (vec![0], vec![0]));
        let from = KeyRange::of_request(b"m", Some(b"")).unwrap();
        assert!(!from.is_all() && from.contains(b"zz") && !from.contains(b"a"));
        let between = KeyRange::of_request(b"a", Some(b"c")).unwrap();
        assert!(between.contains(b"b") && !between.contains(b"c"));
        assert!(!KeyRange::prefix(b"/").is_all() && KeyRange::prefix(b"").is_all());
    }

    #[test]
    fn prefix_end_rules() {
        assert_eq!(prefix_end(b"abc"), Some(b"abd".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn single_key_detection() {
        assert_eq!(KeyRange::single(b"k").as_single_key(), Some(&b"k"[..]));
        assert_eq!(KeyRange::prefix(b"k").as_single_key(), None);
        assert!(KeyRange::single(b"k").contains(b"k"));
        assert!(!KeyRange::single(b"k").contains(b"k\0"));
    }

    #[test]
    fn comparison_ranges() {
        let gt = KeyRange::from(b"b", false);
        assert!(!gt.contains(b"b"));
        assert!(gt.contains(b"b\0"));
        let le = KeyRange::to(b"b", true);
        assert!(le.contains(b"b"));
        assert!(!le.contains(b"b\0"));
        let both = gt.intersect(&le);
        assert!(both.is_empty(), "b < x <= b is a contradiction");
    }

    #[test]
    fn set_intersection_and_merge() {
        let inlist = KeySet::from_keys([&b"c"[..], b"a", b"b", b"a"]);
        assert_eq!(inlist.point_count(), Some(3));
        let pre = KeySet::from_range(KeyRange::prefix(b"a"));
        let both = inlist.intersect(&pre);
        assert_eq!(both.ranges(), &[KeyRange::single(b"a")]);
        let none = both.intersect(&KeySet::from_range(KeyRange::from(b"z", true)));
        assert!(none.is_empty());
        let merged = KeySet::from_ranges(vec![
            KeyRange::between(b"a", Some(b"c")),
            KeyRange::between(b"b", Some(b"d")),
            KeyRange::between(b"x", None),
        ]);
        assert_eq!(
            merged.ranges(),
            &[
                KeyRange::between(b"a", Some(b"d")),
                KeyRange::between(b"x", None)
            ]
        );
        assert!(KeySet::all().intersect(&KeySet::all()).is_all());
    }

    #[test]
    fn etcd_encoding() {
        assert_eq!(KeyRange::all().to_etcd(), (vec![0], vec![0]));
        assert_eq!(KeyRange::single(b"ab").to_etcd(), (b"ab".to_vec(), vec![]));
        assert_eq!(
            KeyRange::prefix(b"ab").to_etcd(),
            (b"ab".to_vec(), b"ac".to_vec())
        );
    }

    #[test]
    fn a_range_of_only_the_empty_key_is_empty() {
        // `key = ''`, `key <= ''`, `key < '\x00'`: only the empty key,
        // which etcd does not have.  Sent to etcd, `["", "\0")` would be
        // `("\0", "\0")`: every key.
        for r in [
            KeyRange::single(b""),
            KeyRange::to(b"", true),
            KeyRange::to(b"\0", false),
            KeyRange::between(b"", Some(b"\0")),
        ] {
            assert!(r.is_empty(), "{r:?}");
            assert!(KeySet::from_range(r).is_empty());
        }
        assert!(!KeyRange::to(b"\0", true).is_empty());
        assert!(!KeyRange::between(b"", Some(b"\0\0")).is_empty());
        assert_eq!(
            KeySet::from_keys([&b""[..], b"a"]).ranges(),
            &[KeyRange::single(b"a")]
        );
    }

    #[test]
    fn like_patterns() {
        assert_eq!(like_prefix(b"abc%"), Some((b"abc".to_vec(), true)));
        assert_eq!(like_prefix(b"abc%%"), Some((b"abc".to_vec(), true)));
        assert_eq!(like_prefix(b"abc%d"), Some((b"abc".to_vec(), false)));
        assert_eq!(like_prefix(b"a_c%"), Some((b"a".to_vec(), false)));
        assert_eq!(like_prefix(b"50\\%%"), Some((b"50%".to_vec(), true)));
        assert_eq!(like_prefix(b"a\\\\b%"), Some((b"a\\b".to_vec(), true)));
        assert_eq!(like_prefix(b"abc"), Some((b"abc".to_vec(), true)));
        assert_eq!(like_prefix(b"abc\\"), None);
        assert!(like_is_equality(b"a\\%b"));
        assert!(!like_is_equality(b"a%"));
    }
}
