//! The free/busy engine: "when is this tenant busy?" from bookings and every
//! calendar source, merged into sorted, non-overlapping blocks.
//!
//! Inputs come from the store's time indexes (bookings and the busy index of
//! calendar objects), already expanded and carrying their busy kind (and, for
//! bookings, the resources they take), so a query is a handful of ordered range
//! scans plus a sweep — no iCalendar is parsed and no booking record is read here.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc};

use std::collections::HashMap;

use crate::ical::zones::Zone;
use crate::model::{BOOKINGS_SOURCE, BusyKind, Span};
use crate::settings::{OpeningHours, Resource, TenantConfig};
use crate::store::{BusyEntry, IndexedBooking, Store, StoreError};

pub use crate::model::{BusyBlock, Contributor};

/// Merges intervals into sorted, non-overlapping blocks; each instant of a block
/// has the strongest kind of the inputs covering it, and adjacent blocks of one kind
/// are joined. `Free` and empty inputs are ignored.
pub fn merge(inputs: &[(Span, BusyKind)]) -> Vec<(Span, BusyKind)> {
    // Sweep over boundaries, counting open intervals per kind.
    let edges = edges(inputs);
    let mut open = [0i32; 4];
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

/// The boundaries of the blocking inputs, sorted by instant: (instant, +1
/// where one opens or -1 where it closes, its kind).
fn edges(inputs: &[(Span, BusyKind)]) -> Vec<(i64, i32, BusyKind)> {
    let mut edges: Vec<(i64, i32, BusyKind)> = Vec::with_capacity(inputs.len() * 2);
    for (span, kind) in inputs {
        if *kind != BusyKind::Free && span.end > span.start {
            edges.push((span.start, 1, *kind));
            edges.push((span.end, -1, *kind));
        }
    }
    edges.sort_unstable_by_key(|(t, _, _)| *t);
    edges
}

/// The strongest kind with an interval open, given open counts per kind.
fn strongest(open: &[i32; 4]) -> Option<BusyKind> {
    [BusyKind::Oof, BusyKind::Busy, BusyKind::Tentative]
        .into_iter()
        .find(|k| open[*k as usize] > 0)
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
        return Ok(bare_blocks(merge(&spans)));
    }
    let entries = entries(store, tenant, window, sources)?;
    let clipped: Vec<(Span, BusyKind)> = entries.iter().map(|e| (clip(e.span), e.kind)).collect();
    let mut blocks = bare_blocks(merge(&clipped));
    let blocking = entries
        .iter()
        .zip(&clipped)
        .filter(|(_, (_, kind))| *kind != BusyKind::Free)
        .map(|(e, (span, _))| (e, *span));
    add_contributors(&mut blocks, blocking);
    Ok(blocks)
}

/// Blocks without contributors.
fn bare_blocks(merged: impl IntoIterator<Item = (Span, BusyKind)>) -> Vec<BusyBlock> {
    merged
        .into_iter()
        .map(|(span, kind)| BusyBlock {
            span,
            kind,
            contributors: Vec::new(),
        })
        .collect()
}

/// Names on each block (sorted, disjoint) the entries whose (clipped) span
/// overlaps it, each once.
fn add_contributors<'a>(
    blocks: &mut [BusyBlock],
    entries: impl Iterator<Item = (&'a BusyEntry, Span)>,
) {
    for (e, span) in entries {
        if span.end <= span.start {
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
    for b in blocks {
        b.contributors.sort();
        b.contributors.dedup();
    }
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
    let rules = SlotRules {
        zone: tenant.timezone,
        opening_hours: tenant.opening_hours.as_ref(),
        buffer_minutes: tenant.buffer_minutes,
    };
    Ok(slots_clear_of(&rules, &busy, q))
}

/// When a slot may be offered: the local zone its opening hours are in, the
/// hours (`None`: any time) and the free time kept around busy time.
struct SlotRules<'a> {
    zone: chrono_tz::Tz,
    opening_hours: Option<&'a OpeningHours>,
    buffer_minutes: u32,
}

/// Candidate slots inside the opening hours, in the window, not before
/// `q.not_before`, and clear of `busy` (sorted, disjoint) by the buffer.
fn slots_clear_of(rules: &SlotRules<'_>, busy: &[Span], q: &SlotQuery) -> (Vec<Span>, bool) {
    let buffer = i64::from(rules.buffer_minutes) * 60_000;
    let is_clear = |slot: Span| {
        let guarded = Span::new(slot.start - buffer, slot.end + buffer);
        let i = busy.partition_point(|b| b.end <= guarded.start);
        busy.get(i).is_none_or(|b| !b.overlaps(&guarded))
    };
    let zone = Zone::Iana(rules.zone);
    let local_day = |ms: i64| {
        zone.to_local(DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default())
            .date()
    };
    let mut slots = Vec::new();
    let mut day = local_day(q.window.start);
    let last_day = local_day(q.window.end);
    while day <= last_day {
        for (open, close) in opening_periods(rules.opening_hours, day) {
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
                        return (slots, true);
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
    (slots, false)
}

/// A day's opening periods as (local open time, local close date-time).
fn opening_periods(
    hours: Option<&OpeningHours>,
    day: NaiveDate,
) -> Vec<(NaiveTime, chrono::NaiveDateTime)> {
    let next_midnight = day.and_time(NaiveTime::MIN) + Duration::days(1);
    match hours {
        None => vec![(NaiveTime::MIN, next_midnight)],
        Some(hours) => hours.days[day.weekday().num_days_from_monday() as usize]
            .iter()
            .map(|(open, close)| (*open, close.map_or(next_midnight, |c| day.and_time(c))))
            .collect(),
    }
}

// ---- per resource -------------------------------------------------------------

/// How several resources are asked about: a slot for any one of them (any
/// stylist) or one that needs all of them at once (a stylist and a chair).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResourceMatch {
    #[default]
    Any,
    All,
}

/// Intervals where at least `capacity` of `inputs` overlap, merged, each
/// with the strongest kind open there. With capacity 1 this is [`merge`].
fn full_spans(inputs: &[(Span, BusyKind)], capacity: u32) -> Vec<(Span, BusyKind)> {
    if capacity <= 1 {
        return merge(inputs);
    }
    let edges = edges(inputs);
    let mut open = [0i32; 4];
    let mut full = Vec::new();
    let mut i = 0;
    let mut previous: Option<i64> = None;
    while i < edges.len() {
        let t = edges[i].0;
        let taken: i64 = open.iter().map(|n| i64::from(*n)).sum();
        if let Some(from) = previous
            && taken >= i64::from(capacity)
            && let Some(kind) = strongest(&open)
        {
            full.push((Span::new(from, t), kind));
        }
        while i < edges.len() && edges[i].0 == t {
            open[edges[i].2 as usize] += edges[i].1;
            i += 1;
        }
        previous = Some(t);
    }
    merge(&full)
}

/// A tenant's busy time within a window, loaded once, asked per resource: a
/// resource is busy where a tenant-wide source or one of its own is, and
/// where its bookings (with the tenant-wide ones) fill its capacity.
pub struct ResourceBusy {
    /// Blocking bookings, from the time index (no record is read).
    bookings: Vec<IndexedBooking>,
    objects: Vec<BusyEntry>,
    /// Source id → the resource it belongs to (`None`: the whole tenant).
    owners: HashMap<String, Option<String>>,
}

impl ResourceBusy {
    /// Loads `window`, from the given sources (all when None), leaving out
    /// booking `ignore` (the one being moved).
    pub fn load(
        store: &Store,
        tenant: &TenantConfig,
        window: Span,
        sources: Option<&[String]>,
        ignore: Option<&str>,
    ) -> Result<Self, StoreError> {
        let wanted = |id: &str| sources.is_none_or(|s| s.iter().any(|x| x == id));
        let bookings = if wanted(BOOKINGS_SOURCE) {
            store
                .booking_index(&tenant.id, window)?
                .into_iter()
                .filter(|b| {
                    b.kind != BusyKind::Free
                        && Some(b.id.as_str()) != ignore
                        && b.span.overlaps(&window)
                })
                .collect()
        } else {
            Vec::new()
        };
        let objects = store
            .object_occurrences(&tenant.id, window)?
            .into_iter()
            .filter(|e| e.kind != BusyKind::Free && e.span.overlaps(&window) && wanted(&e.source))
            .collect();
        let owners = store
            .sources(&tenant.id)?
            .into_iter()
            .map(|s| (s.id, s.resource))
            .collect();
        Ok(ResourceBusy {
            bookings,
            objects,
            owners,
        })
    }

    /// Whether calendar source `source` blocks `resource`: tenant-wide ones
    /// (and ones no longer known) block every resource.
    fn blocks(&self, source: &str, resource: &str) -> bool {
        match self.owners.get(source) {
            Some(Some(owner)) => owner == resource,
            _ => true,
        }
    }

    fn objects_of<'a>(&'a self, resource: &'a str) -> impl Iterator<Item = &'a BusyEntry> {
        self.objects
            .iter()
            .filter(move |e| self.blocks(&e.source, resource))
    }

    fn bookings_of<'a>(&'a self, resource: &'a str) -> impl Iterator<Item = &'a IndexedBooking> {
        self.bookings.iter().filter(move |b| b.takes(resource))
    }

    /// Merged busy time of `resource`: its calendars, and where its bookings
    /// fill its capacity.
    pub fn busy(&self, resource: &Resource) -> Vec<(Span, BusyKind)> {
        let taken: Vec<(Span, BusyKind)> = self
            .bookings_of(&resource.id)
            .map(|b| (b.span, b.kind))
            .collect();
        let mut inputs = full_spans(&taken, resource.capacity);
        inputs.extend(self.objects_of(&resource.id).map(|e| (e.span, e.kind)));
        merge(&inputs)
    }

    /// What stands in the way of one more booking of `resource` over `span`:
    /// every calendar entry of it overlapping, and its overlapping bookings
    /// when they fill its capacity somewhere in `span`. Entries name the
    /// resource; sorted by start.
    pub fn conflicts(&self, resource: &Resource, span: Span) -> Vec<BusyEntry> {
        let mut found: Vec<BusyEntry> = self
            .objects_of(&resource.id)
            .filter(|e| e.span.overlaps(&span))
            .map(|e| BusyEntry {
                resource: Some(resource.id.clone()),
                ..e.clone()
            })
            .collect();
        let overlapping: Vec<&IndexedBooking> = self
            .bookings_of(&resource.id)
            .filter(|b| b.span.overlaps(&span))
            .collect();
        let clipped: Vec<(Span, BusyKind)> = overlapping
            .iter()
            .map(|b| (intersect(b.span, span), b.kind))
            .collect();
        if !full_spans(&clipped, resource.capacity).is_empty() {
            found.extend(overlapping.iter().map(|b| b.busy_entry(Some(&resource.id))));
        }
        found.sort_by_key(|e| (e.span.start, e.span.end));
        found
    }

    /// The busy entries behind `resource`'s busy time (its calendars' and its
    /// bookings'), for `detail`.
    pub fn entries(&self, resource: &Resource) -> Vec<BusyEntry> {
        self.objects_of(&resource.id)
            .map(|e| BusyEntry {
                resource: Some(resource.id.clone()),
                ..e.clone()
            })
            .chain(
                self.bookings_of(&resource.id)
                    .map(|b| b.busy_entry(Some(&resource.id))),
            )
            .collect()
    }
}

fn intersect(a: Span, b: Span) -> Span {
    Span::new(a.start.max(b.start), a.end.min(b.end))
}

/// What blocks one more booking of each of `resources` over `span` (see
/// [`ResourceBusy::conflicts`]), except booking `ignore`. Unknown ids are
/// skipped: callers check them.
pub fn resource_conflicts(
    store: &Store,
    tenant: &TenantConfig,
    span: Span,
    resources: &[String],
    ignore: Option<&str>,
) -> Result<Vec<BusyEntry>, StoreError> {
    let busy = ResourceBusy::load(store, tenant, span, None, ignore)?;
    let mut found: Vec<BusyEntry> = tenant
        .resources()
        .iter()
        .filter(|r| resources.contains(&r.id))
        .flat_map(|r| busy.conflicts(r, span))
        .collect();
    found.sort_by_key(|e| (e.span.start, e.span.end));
    Ok(found)
}

/// Merged busy blocks of one resource within `window` (clipped to it), with
/// contributors on request.
pub fn resource_blocks(
    busy: &ResourceBusy,
    resource: &Resource,
    window: Span,
    with_contributors: bool,
) -> Vec<BusyBlock> {
    let mut blocks = bare_blocks(
        busy.busy(resource)
            .into_iter()
            .map(|(span, kind)| (intersect(span, window), kind))
            .filter(|(span, _)| span.end > span.start),
    );
    if with_contributors {
        let entries = busy.entries(resource);
        add_contributors(
            &mut blocks,
            entries.iter().map(|e| (e, intersect(e.span, window))),
        );
    }
    blocks
}

/// A slot and the resources free for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceSlot {
    pub span: Span,
    pub resources: Vec<String>,
}

/// Bookable slots for `resources`: each resource's slots under its own
/// hours, zone and buffer, clear of its busy time (see [`ResourceBusy`]);
/// with [`ResourceMatch::Any`] a slot is offered when one of them is free and
/// lists those that are, with [`ResourceMatch::All`] only when all are.
pub fn resource_slots(
    store: &Store,
    tenant: &TenantConfig,
    resources: &[Resource],
    mode: ResourceMatch,
    q: &SlotQuery,
) -> Result<(Vec<ResourceSlot>, bool), StoreError> {
    let widest = resources
        .iter()
        .map(|r| i64::from(r.buffer_minutes) * 60_000)
        .max()
        .unwrap_or(0);
    let widened = Span::new(q.window.start - widest, q.window.end + widest);
    let busy = ResourceBusy::load(store, tenant, widened, None, None)?;
    // Each resource's own slots, uncut: the limit applies to the combination.
    let uncut = SlotQuery {
        limit: usize::MAX,
        ..*q
    };
    let mut offered: std::collections::BTreeMap<Span, Vec<String>> = Default::default();
    for resource in resources {
        let spans: Vec<Span> = busy
            .busy(resource)
            .into_iter()
            .map(|(span, _)| span)
            .collect();
        let rules = SlotRules {
            zone: resource.timezone,
            opening_hours: resource.opening_hours.as_ref(),
            buffer_minutes: resource.buffer_minutes,
        };
        for slot in slots_clear_of(&rules, &spans, &uncut).0 {
            offered.entry(slot).or_default().push(resource.id.clone());
        }
    }
    let mut slots = Vec::new();
    for (span, free) in offered {
        if mode == ResourceMatch::All && free.len() < resources.len() {
            continue;
        }
        if slots.len() == q.limit {
            return Ok((slots, true));
        }
        slots.push(ResourceSlot {
            span,
            resources: free,
        });
    }
    Ok((slots, false))
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

    #[test]
    fn full_spans_are_where_the_capacity_is_reached() {
        let taken = [
            (s(0, 60), Busy),
            (s(30, 90), Tentative),
            (s(45, 75), Busy),
            (s(100, 110), Busy),
        ];
        assert_eq!(full_spans(&taken, 1), merge(&taken));
        assert_eq!(full_spans(&taken, 2), [(s(30, 75), Busy)]);
        assert_eq!(full_spans(&taken, 3), [(s(45, 60), Busy)]);
        assert!(full_spans(&taken, 4).is_empty());
        // Free time takes no seat.
        assert!(full_spans(&[(s(0, 10), Free), (s(0, 10), Busy)], 2).is_empty());
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

            #[test]
            fn full_spans_cover_exactly_the_instants_at_capacity(inputs in input(), capacity in 1u32..4) {
                let full = full_spans(&inputs, capacity);
                for t in -1..=241 {
                    let open = inputs
                        .iter()
                        .filter(|(s, k)| *k != Free && s.start <= t && t < s.end)
                        .count();
                    let covered = full.iter().any(|(s, _)| s.start <= t && t < s.end);
                    prop_assert_eq!(covered, open >= capacity as usize, "instant {}", t);
                }
            }
        }
    }
}
