//! The free/busy engine: "when is this tenant busy?" from bookings and every
//! calendar source, merged into sorted, non-overlapping blocks.
//!
//! Inputs come from the store's time indexes (bookings and the busy index of
//! calendar objects), already expanded and carrying their busy kind, so a query is a
//! handful of ordered range scans plus a sweep — no iCalendar is parsed here.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc};

use crate::ical::zones::Zone;
use crate::model::{BOOKINGS_SOURCE, BusyKind, Span};
use crate::settings::TenantConfig;
use crate::store::{BusyEntry, Store, StoreError};

pub use crate::model::{BusyBlock, Contributor};

/// Merges intervals into sorted, non-overlapping blocks; each instant of a block
/// has the strongest kind of the inputs covering it, and adjacent blocks of one kind
/// are joined. `Free` and empty inputs are ignored.
pub fn merge(inputs: &[(Span, BusyKind)]) -> Vec<(Span, BusyKind)> {
    // Sweep over boundaries, counting open intervals per kind.
    let mut edges: Vec<(i64, i32, BusyKind)> = Vec::with_capacity(inputs.len() * 2);
    for (span, kind) in inputs {
        if *kind != BusyKind::Free && span.end > span.start {
            edges.push((span.start, 1, *kind));
            edges.push((span.end, -1, *kind));
        }
    }
    edges.sort_unstable_by_key(|(t, _, _)| *t);
    let mut open = [0i32; 4];
    let strongest = |open: &[i32; 4]| {
        [BusyKind::Oof, BusyKind::Busy, BusyKind::Tentative]
            .into_iter()
            .find(|k| open[*k as usize] > 0)
    };
    let mut out: Vec<(Span, BusyKind)> = Vec::new();
    let mut i = 0;
    let mut current: Option<(i64, BusyKind)> = None;
    while i < edges.len() {
        let t = edges[i].0;
        while i < edges.len() && edges[i].0 == t {
            open[edges[i].2 as usize] += edges[i].1;
            i += 1;
        }
        let now = strongest(&open);
        match (current, now) {
            (Some((_, kind)), Some(k)) if kind == k => {}
            (Some((start, kind)), next) => {
                push_joined(&mut out, Span::new(start, t), kind);
                current = next.map(|k| (t, k));
            }
            (None, next) => current = next.map(|k| (t, k)),
        }
    }
    out
}

fn push_joined(out: &mut Vec<(Span, BusyKind)>, span: Span, kind: BusyKind) {
    if let Some((last, last_kind)) = out.last_mut()
        && *last_kind == kind
        && last.end == span.start
    {
        last.end = span.end;
        return;
    }
    out.push((span, kind));
}

/// Busy entries of a tenant overlapping `window`, from the given sources (all when
/// `sources` is None).
pub fn entries(
    store: &Store,
    tenant: &str,
    window: Span,
    sources: Option<&[String]>,
) -> Result<Vec<BusyEntry>, StoreError> {
    let wanted = |id: &str| sources.is_none_or(|s| s.iter().any(|x| x == id));
    let mut all = Vec::new();
    if wanted(BOOKINGS_SOURCE) {
        all.extend(store.booking_busy(tenant, window)?);
    }
    all.extend(
        store
            .object_occurrences(tenant, window)?
            .into_iter()
            .filter(|e| e.kind != BusyKind::Free && wanted(&e.source)),
    );
    Ok(all)
}

/// Merged busy blocks of a tenant within `window` (clipped to it).
pub fn busy_blocks(
    store: &Store,
    tenant: &str,
    window: Span,
    sources: Option<&[String]>,
    with_contributors: bool,
) -> Result<Vec<BusyBlock>, StoreError> {
    let clip = |span: Span| Span::new(span.start.max(window.start), span.end.min(window.end));
    if !with_contributors {
        let spans: Vec<(Span, BusyKind)> = store
            .busy_spans(tenant, window, sources)?
            .into_iter()
            .map(|(span, kind)| (clip(span), kind))
            .collect();
        return Ok(merge(&spans)
            .into_iter()
            .map(|(span, kind)| BusyBlock {
                span,
                kind,
                contributors: Vec::new(),
            })
            .collect());
    }
    let entries = entries(store, tenant, window, sources)?;
    let clipped: Vec<(Span, BusyKind)> = entries
        .iter()
        .map(|e| {
            let span = Span::new(e.span.start.max(window.start), e.span.end.min(window.end));
            (span, e.kind)
        })
        .collect();
    let mut blocks: Vec<BusyBlock> = merge(&clipped)
        .into_iter()
        .map(|(span, kind)| BusyBlock {
            span,
            kind,
            contributors: Vec::new(),
        })
        .collect();
    if with_contributors {
        for (e, (span, kind)) in entries.iter().zip(&clipped) {
            if *kind == BusyKind::Free || span.end <= span.start {
                continue;
            }
            let first = blocks.partition_point(|b| b.span.end <= span.start);
            for b in blocks[first..]
                .iter_mut()
                .take_while(|b| b.span.start < span.end)
            {
                b.contributors.push(Contributor {
                    source: e.source.clone(),
                    object: e.object.clone(),
                });
            }
        }
        for b in &mut blocks {
            b.contributors.sort();
            b.contributors.dedup();
        }
    }
    Ok(blocks)
}

/// What blocks `span`: every busy entry overlapping it, except booking `ignore`
/// (the booking being moved).
pub fn conflicts(
    store: &Store,
    tenant: &str,
    span: Span,
    ignore: Option<&str>,
) -> Result<Vec<BusyEntry>, StoreError> {
    let mut found: Vec<BusyEntry> = entries(store, tenant, span, None)?
        .into_iter()
        .filter(|e| e.span.overlaps(&span) && e.kind != BusyKind::Free)
        .filter(|e| !(e.source == BOOKINGS_SOURCE && Some(e.object.as_str()) == ignore))
        .collect();
    found.sort_by_key(|e| (e.span.start, e.span.end));
    Ok(found)
}

/// What a slot search asks for.
#[derive(Debug, Clone, Copy)]
pub struct SlotQuery {
    pub window: Span,
    pub duration_ms: i64,
    /// Distance between candidate starts.
    pub step_ms: i64,
    /// Slots starting before this are not offered.
    pub not_before: i64,
    pub limit: usize,
}

/// Bookable slots: inside the tenant's opening hours (its local time), not starting
/// in the past, and clear of busy time by the tenant's buffer on both sides.
/// Returns the slots and whether `limit` cut the list.
pub fn bookable_slots(
    store: &Store,
    tenant: &TenantConfig,
    q: &SlotQuery,
) -> Result<(Vec<Span>, bool), StoreError> {
    let buffer = i64::from(tenant.buffer_minutes) * 60_000;
    let widened = Span::new(q.window.start - buffer, q.window.end + buffer);
    let busy: Vec<Span> = merge(&store.busy_spans(&tenant.id, widened, None)?)
        .into_iter()
        .map(|(span, _)| span)
        .collect();
    let is_clear = |slot: Span| {
        let guarded = Span::new(slot.start - buffer, slot.end + buffer);
        let i = busy.partition_point(|b| b.end <= guarded.start);
        busy.get(i).is_none_or(|b| !b.overlaps(&guarded))
    };
    let zone = Zone::Iana(tenant.timezone);
    let local_day = |ms: i64| {
        zone.to_local(DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default())
            .date()
    };
    let mut slots = Vec::new();
    let mut day = local_day(q.window.start);
    let last_day = local_day(q.window.end);
    while day <= last_day {
        for (open, close) in opening_periods(tenant, day) {
            let open_ms = zone.to_utc(day.and_time(open)).timestamp_millis();
            let close_ms = zone.to_utc(close).timestamp_millis();
            let mut start = open_ms;
            while start + q.duration_ms <= close_ms {
                let slot = Span::new(start, start + q.duration_ms);
                if slot.start >= q.window.start
                    && slot.end <= q.window.end
                    && slot.start >= q.not_before
                    && is_clear(slot)
                {
                    if slots.len() == q.limit {
                        return Ok((slots, true));
                    }
                    slots.push(slot);
                }
                start += q.step_ms;
            }
        }
        day = match day.succ_opt() {
            Some(d) => d,
            None => break,
        };
    }
    Ok((slots, false))
}

/// A day's opening periods as (local open time, local close date-time).
fn opening_periods(
    tenant: &TenantConfig,
    day: NaiveDate,
) -> Vec<(NaiveTime, chrono::NaiveDateTime)> {
    let next_midnight = day.and_time(NaiveTime::MIN) + Duration::days(1);
    match &tenant.opening_hours {
        None => vec![(NaiveTime::MIN, next_midnight)],
        Some(hours) => hours.days[day.weekday().num_days_from_monday() as usize]
            .iter()
            .map(|(open, close)| (*open, close.map_or(next_midnight, |c| day.and_time(c))))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BusyKind::*;

    fn s(a: i64, b: i64) -> Span {
        Span::new(a, b)
    }

    #[test]
    fn merges_overlaps_and_keeps_the_strongest_kind() {
        let merged = merge(&[
            (s(0, 10), Tentative),
            (s(5, 15), Busy),
            (s(20, 30), Busy),
            (s(30, 40), Busy),
            (s(35, 38), Oof),
            (s(50, 60), Free),
            (s(70, 70), Busy),
        ]);
        assert_eq!(
            merged,
            [
                (s(0, 5), Tentative),
                (s(5, 15), Busy),
                (s(20, 35), Busy),
                (s(35, 38), Oof),
                (s(38, 40), Busy),
            ]
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn kind() -> impl Strategy<Value = BusyKind> {
            prop_oneof![Just(Free), Just(Tentative), Just(Busy), Just(Oof)]
        }

        fn input() -> impl Strategy<Value = Vec<(Span, BusyKind)>> {
            prop::collection::vec(
                (0i64..200, 0i64..40, kind())
                    .prop_map(|(start, len, k)| (Span::new(start, start + len), k)),
                0..40,
            )
        }

        /// The strongest blocking kind covering instant `t` in the inputs.
        fn strongest_at(inputs: &[(Span, BusyKind)], t: i64) -> Option<BusyKind> {
            inputs
                .iter()
                .filter(|(s, k)| *k != Free && s.start <= t && t < s.end)
                .map(|(_, k)| *k)
                .max()
        }

        proptest! {
            #[test]
            fn output_is_sorted_disjoint_and_exact(inputs in input()) {
                let merged = merge(&inputs);
                for pair in merged.windows(2) {
                    prop_assert!(pair[0].0.end <= pair[1].0.start, "sorted and disjoint: {:?}", pair);
                    prop_assert!(
                        !(pair[0].0.end == pair[1].0.start && pair[0].1 == pair[1].1),
                        "touching blocks of one kind are joined: {:?}", pair
                    );
                }
                for (span, _) in &merged {
                    prop_assert!(span.start < span.end);
                }
                // Every instant is covered exactly as the union of inputs says, with
                // the strongest kind.
                for t in -1..=241 {
                    let got = merged
                        .iter()
                        .find(|(s, _)| s.start <= t && t < s.end)
                        .map(|(_, k)| *k);
                    prop_assert_eq!(got, strongest_at(&inputs, t), "instant {}", t);
                }
            }
        }
    }
}
