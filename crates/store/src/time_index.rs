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
//!
//! An owner with many intervals (the occurrences of a recurring event) may file
//! them as *runs* ([`entries`]): up to [`RUN_MAX`] consecutive intervals with the
//! same group and payload, within [`RUN_SPAN_MS`], in one entry of group
//! `group + RUNS` keyed by the run's envelope; value: `end i64 | payload length u8 |
//! payload | (start i64, end i64)*`. A weekly series then costs a quarter of the
//! writes, and readers still see one interval at a time.

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

/// Most intervals one run holds.
pub const RUN_MAX: usize = 16;
/// Longest envelope (first start to last end) of a run: runs stay in low classes,
/// so a query reads few runs that start long before its window.
pub const RUN_SPAN_MS: i64 = 28 * 24 * BASE_MS;
/// Runs of group `g` are filed in group `g + RUNS`.
const RUNS: u8 = 2;

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

/// One interval of an owner, as given to [`entries`].
#[derive(Debug, Clone, Copy)]
pub struct Interval<'p> {
    pub group: u8,
    pub span: Span,
    pub payload: &'p [u8],
}

/// The index entries (key, value) of one owner's intervals, in their order:
/// consecutive intervals with the same group and payload, each starting no
/// earlier than the first, share a run (see the module docs); the others stand
/// alone. `id(n)` names the entry whose first interval is the `n`th. The same
/// intervals always give the same keys, so an owner's entries are removed by
/// computing them again.
pub fn entries(
    scope: &[&[u8]],
    intervals: &[Interval<'_>],
    id: impl Fn(usize) -> Vec<u8>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut first = 0;
    while let Some(head) = intervals.get(first) {
        let mut end = head.span.end;
        let mut next = first + 1;
        while let Some(more) = intervals.get(next) {
            let envelope_end = end.max(more.span.end);
            let joins = next - first < RUN_MAX
                && head.payload.len() <= usize::from(u8::MAX)
                && more.group == head.group
                && more.payload == head.payload
                && more.span.start >= head.span.start
                && envelope_end.saturating_sub(head.span.start) <= RUN_SPAN_MS;
            if !joins {
                break;
            }
            end = envelope_end;
            next += 1;
        }
        if next - first == 1 {
            out.push((
                entry_key_in(scope, head.group, head.span, &id(first)),
                entry_value(head.span, head.payload),
            ));
        } else {
            let envelope = Span::new(head.span.start, end);
            let mut value = encode_i64(end).to_vec();
            // Payloads are a few bytes (a busy kind); longer ones are never packed.
            value.push(head.payload.len() as u8);
            value.extend_from_slice(head.payload);
            for member in &intervals[first..next] {
                value.extend_from_slice(&encode_i64(member.span.start));
                value.extend_from_slice(&encode_i64(member.span.end));
            }
            out.push((
                entry_key_in(scope, head.group + RUNS, envelope, &id(first)),
                value,
            ));
        }
        first = next;
    }
    out
}

/// One index hit: the stored interval and the id it was filed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub span: Span,
    pub id: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Calls `f(span, id, payload)` for every interval of `scope` overlapping `window`
/// (each member of a run on its own), in no particular order, without allocating
/// per entry (the free/busy hot path). Zero-length intervals count when they lie
/// inside the window.
pub fn for_each(
    tree: &sled::Tree,
    scope: &[&[u8]],
    groups: &[u8],
    window: Span,
    mut f: impl FnMut(Span, &[u8], &[u8]),
) -> sled::Result<()> {
    let inside = |span: Span| {
        if span.start == span.end {
            span.start >= window.start && span.start < window.end
        } else {
            span.overlaps(&window)
        }
    };
    let base = prefix(scope);
    let offset = base.len() + 1;
    let mut lo = base.clone();
    let mut hi = base;
    lo.push(0);
    hi.push(0);
    let plain = groups
        .iter()
        .flat_map(|g| (0..=MAX_CLASS).map(move |c| (*g, c, false)));
    let runs = groups
        .iter()
        .flat_map(|g| (0..=class_of(RUN_SPAN_MS)).map(move |c| (*g + RUNS, c, true)));
    for (group, class, packed) in plain.chain(runs) {
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
            let id = &key[offset + 8..];
            let envelope = Span::new(start, end);
            if !packed {
                if inside(envelope) {
                    f(envelope, id, &value[8..]);
                }
                continue;
            }
            let Some((payload, members)) = run_parts(&value) else {
                continue;
            };
            for member in members.chunks_exact(16) {
                let (Some(s), Some(e)) = (decode_i64(member), decode_i64(&member[8..])) else {
                    continue;
                };
                let span = Span::new(s, e);
                if inside(span) {
                    f(span, id, payload);
                }
            }
        }
    }
    Ok(())
}

/// A run's payload and its packed member intervals.
fn run_parts(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = usize::from(*value.get(8)?);
    let payload = value.get(9..9 + len)?;
    Some((payload, value.get(9 + len..)?))
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

    #[test]
    fn runs_answer_like_single_entries_and_remove_cleanly() {
        let t = tree();
        let day = 24 * H;
        let mut all = Vec::new();
        let mut owners = Vec::new();
        let mut x: i64 = 777;
        for owner in 0..60 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let first = (x >> 20) % (400 * day);
            let step = [day, 7 * day, 30 * day, H / 2][(owner % 4) as usize];
            let len = [H, 0, 3 * day, H / 4][((x >> 12) & 3) as usize];
            let count = 1 + ((x >> 30) & 31);
            let spans: Vec<(Span, &[u8])> = (0..count)
                .map(|n| {
                    let start = first + n * step;
                    // Every fifth occurrence has another payload (a moved,
                    // transparent instance), which breaks the run.
                    let payload: &[u8] = if n % 5 == 4 { b"f" } else { b"b" };
                    (Span::new(start, start + len), payload)
                })
                .collect();
            owners.push((format!("o{owner:03}"), spans));
        }
        let write = |owner: &str, spans: &[(Span, &[u8])], insert: bool| {
            let intervals: Vec<Interval<'_>> = spans
                .iter()
                .map(|(span, payload)| Interval {
                    group: if payload == b"f" { SECONDARY } else { MAIN },
                    span: *span,
                    payload,
                })
                .collect();
            for (key, value) in entries(&[b"t1"], &intervals, |n| {
                format!("{owner}/{n:03}").into_bytes()
            }) {
                if insert {
                    t.insert(key, value).unwrap();
                } else {
                    t.remove(key).unwrap();
                }
            }
        };
        for (owner, spans) in &owners {
            write(owner, spans, true);
            all.extend(spans.iter().map(|(s, p)| (*s, owner.clone(), p.to_vec())));
        }
        // Runs are broken by every fifth interval and never span a 30-day step.
        assert!(
            t.len() * 5 < all.len() * 3,
            "{} entries for {} intervals",
            t.len(),
            all.len()
        );
        for w in 0..60 {
            let window = Span::new(w * 7 * day - 3 * H, w * 7 * day + 2 * day);
            let mut expected: Vec<_> = all
                .iter()
                .filter(|(s, _, _)| {
                    if s.start == s.end {
                        s.start >= window.start && s.start < window.end
                    } else {
                        s.overlaps(&window)
                    }
                })
                .map(|(s, o, p)| (s.start, s.end, o.clone(), p.clone()))
                .collect();
            expected.sort();
            let mut got = Vec::new();
            for_each(&t, &[b"t1"], ALL, window, |span, id, payload| {
                let owner = String::from_utf8_lossy(&id[..4]).into_owned();
                got.push((span.start, span.end, owner, payload.to_vec()));
            })
            .unwrap();
            got.sort();
            assert_eq!(got, expected, "window {w}");
        }
        for (owner, spans) in &owners {
            write(owner, spans, false);
        }
        assert!(
            t.is_empty(),
            "removing by recomputed keys leaves nothing behind"
        );
    }
}
