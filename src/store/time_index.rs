//! An interval index on an ordered key-value tree: "which entries overlap [s, e)?"
//! answered by ordered range scans, never a full scan.
//!
//! Entries are split into duration classes: class `c` holds intervals no longer than
//! `BASE_MS << c`. Within a class, keys are ordered by start, so the entries that can
//! overlap `[s, e)` all start in `[s - (BASE_MS << c), e)`: one range scan per class,
//! and each scan reads at most about twice the entries it returns. Bookings (and
//! later, expanded occurrences) are short, so almost everything lives in class 0.
//!
//! Entries may be split into groups (the class byte is `group * 64 + class`) so a
//! reader can skip a whole group: the busy index keeps non-blocking occurrences in
//! their own group, and free/busy never reads them.
//!
//! Key layout: `scope \0 | group*64+class u8 | start i64 | id`; value: `end i64 | payload`
//! (a few bytes the owner wants back without reading the record, e.g. a busy kind).

use super::keys::{decode_i64, encode_i64, prefix};
use crate::model::Span;

/// Upper bound on the duration of class-0 entries: one hour.
const BASE_MS: i64 = 3_600_000;
/// Class 40 covers ~125 million years: anything representable.
const MAX_CLASS: u8 = 40;

/// The smallest class whose maximum duration covers `duration_ms`.
fn class_of(duration_ms: i64) -> u8 {
    let mut class = 0u8;
    while class < MAX_CLASS && (BASE_MS << class) < duration_ms {
        class += 1;
    }
    class
}

/// The default group.
pub const MAIN: u8 = 0;
/// A second group, read only when asked for.
pub const SECONDARY: u8 = 1;
/// Every group.
pub const ALL: &[u8] = &[MAIN, SECONDARY];
const GROUP_STRIDE: u8 = 64;

/// The index key of one interval in the main group.
pub fn entry_key(scope: &[&[u8]], span: Span, id: &[u8]) -> Vec<u8> {
    entry_key_in(scope, MAIN, span, id)
}

/// The index key of one interval in `group`.
pub fn entry_key_in(scope: &[&[u8]], group: u8, span: Span, id: &[u8]) -> Vec<u8> {
    let mut key = prefix(scope);
    key.push(group * GROUP_STRIDE + class_of(span.end - span.start));
    key.extend_from_slice(&encode_i64(span.start));
    key.extend_from_slice(id);
    key
}

pub fn entry_value(span: Span, payload: &[u8]) -> Vec<u8> {
    let mut value = encode_i64(span.end).to_vec();
    value.extend_from_slice(payload);
    value
}

/// One index hit: the stored interval and the id it was filed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub span: Span,
    pub id: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Calls `f(span, id, payload)` for every entry of `scope` overlapping `window`, in
/// no particular order, without allocating per entry (the free/busy hot path).
/// Zero-length entries count when they lie inside the window.
pub fn for_each(
    tree: &sled::Tree,
    scope: &[&[u8]],
    groups: &[u8],
    window: Span,
    mut f: impl FnMut(Span, &[u8], &[u8]),
) -> sled::Result<()> {
    let base = prefix(scope);
    let offset = base.len() + 1;
    let mut lo = base.clone();
    let mut hi = base;
    lo.push(0);
    hi.push(0);
    for (group, class) in groups
        .iter()
        .flat_map(|g| (0..=MAX_CLASS).map(move |c| (*g, c)))
    {
        let reach = BASE_MS.saturating_mul(1i64 << class);
        lo.truncate(offset);
        hi.truncate(offset);
        lo[offset - 1] = group * GROUP_STRIDE + class;
        hi[offset - 1] = group * GROUP_STRIDE + class;
        lo.extend_from_slice(&encode_i64(window.start.saturating_sub(reach)));
        hi.extend_from_slice(&encode_i64(window.end));
        for item in tree.range(lo.as_slice()..hi.as_slice()) {
            let (key, value) = item?;
            let (Some(start), Some(end)) = (decode_i64(&key[offset..]), decode_i64(&value)) else {
                continue;
            };
            let span = Span::new(start, end);
            let inside = if start == end {
                start >= window.start
            } else {
                span.overlaps(&window)
            };
            if inside {
                f(span, &key[offset + 8..], &value[8..]);
            }
        }
    }
    Ok(())
}

/// All entries of `scope` (every group) overlapping `window`, ordered by start then id.
pub fn query(tree: &sled::Tree, scope: &[&[u8]], window: Span) -> sled::Result<Vec<Hit>> {
    let mut hits = Vec::new();
    for_each(tree, scope, ALL, window, |span, id, payload| {
        hits.push(Hit {
            span,
            id: id.to_vec(),
            payload: payload.to_vec(),
        });
    })?;
    hits.sort_by(|a, b| (a.span.start, &a.id).cmp(&(b.span.start, &b.id)));
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("t").unwrap()
    }

    fn insert(tree: &sled::Tree, span: Span, id: &str) {
        tree.insert(
            entry_key(&[b"t1"], span, id.as_bytes()),
            entry_value(span, b"p"),
        )
        .unwrap();
    }

    fn ids(hits: &[Hit]) -> Vec<String> {
        hits.iter()
            .map(|h| String::from_utf8(h.id.clone()).unwrap())
            .collect()
    }

    const H: i64 = BASE_MS;

    #[test]
    fn classes_grow_by_powers_of_two() {
        assert_eq!(class_of(0), 0);
        assert_eq!(class_of(H), 0);
        assert_eq!(class_of(H + 1), 1);
        assert_eq!(class_of(24 * H), 5);
    }

    #[test]
    fn finds_exactly_the_overlapping_entries() {
        let t = tree();
        insert(&t, Span::new(0, H / 2), "short-early");
        insert(&t, Span::new(10 * H, 11 * H), "short-late");
        insert(&t, Span::new(-30 * 24 * H, 60 * 24 * H), "long");
        insert(&t, Span::new(5 * H, 5 * H), "instant");
        // Another scope must never show up.
        let other = Span::new(0, 100 * H);
        t.insert(entry_key(&[b"t2"], other, b"x"), entry_value(other, b""))
            .unwrap();

        assert_eq!(
            ids(&query(&t, &[b"t1"], Span::new(H / 4, 6 * H)).unwrap()),
            ["long", "short-early", "instant"]
        );
        assert_eq!(
            ids(&query(&t, &[b"t1"], Span::new(H / 2, 5 * H)).unwrap()),
            ["long"]
        );
        assert_eq!(
            ids(&query(&t, &[b"t1"], Span::new(11 * H, 12 * H)).unwrap()),
            ["long"]
        );
        assert!(
            query(&t, &[b"t1"], Span::new(61 * 24 * H, 62 * 24 * H))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn agrees_with_brute_force() {
        let t = tree();
        let mut all = Vec::new();
        let mut x: i64 = 12345;
        for i in 0..500 {
            // Cheap deterministic pseudo-random spans of widely varying length.
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let start = (x >> 20) % (1000 * H);
            let len = ((x >> 8) & 0xffff) * (1 << (i % 12)) * 1000;
            let span = Span::new(start, start + len.max(1));
            let id = format!("{i:04}");
            insert(&t, span, &id);
            all.push((span, id));
        }
        for w in 0..50 {
            let window = Span::new(w * 20 * H, w * 20 * H + 7 * H);
            let mut expected: Vec<_> = all
                .iter()
                .filter(|(s, _)| s.overlaps(&window))
                .map(|(s, id)| (s.start, id.clone()))
                .collect();
            expected.sort();
            let got: Vec<_> = query(&t, &[b"t1"], window)
                .unwrap()
                .into_iter()
                .map(|h| (h.span.start, String::from_utf8(h.id).unwrap()))
                .collect();
            assert_eq!(got, expected, "window {w}");
        }
    }
}
