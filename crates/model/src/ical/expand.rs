//! Occurrence expansion: a parsed calendar and a window → the concrete occurrences.
//!
//! Recurrence is computed in the series' local wall-clock time, as RFC 5545 intends
//! ("every Monday at 09:00" stays at 09:00 across DST): the `rrule` crate expands the
//! rule over naive local times presented to it as UTC, and each instance is then
//! placed in its real zone. This sidesteps `rrule`'s DST handling for sub-daily
//! rules and its reading of floating times in the *server's* zone. RDATE, EXDATE
//! and RECURRENCE-ID (including RANGE=THISANDFUTURE) are applied here.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use rrule::{RRule, RRuleSet, Unvalidated};

use super::parse::{EventStatus, IcalTime, Kind, ParsedCalendar, PeriodEnd, RDate, VEvent};
use super::zones::Zone;
use crate::model::{BusyKind, Span, start_of_day};

/// Earliest and latest instants expansion considers (1900-01-01, 2201-01-01).
const WINDOW_MIN_MS: i64 = -2_208_988_800_000;
const WINDOW_MAX_MS: i64 = 7_289_654_400_000;

/// Most occurrences one object (all its series, RRULE and RDATE lines and
/// overrides together) may have inside one window: the CalDAV `max-instances`.
pub const MAX_INSTANCES: usize = 20_000;
/// Most RRULE lines one component may carry (RFC 5545 expects one).
pub const MAX_RRULES: usize = 4;
/// Most RDATE or EXDATE values one component may carry.
pub const MAX_DATES: usize = 10_000;
/// Most components (a series, its overrides, other series) one object may hold.
pub const MAX_COMPONENTS: usize = 5_000;
/// Most rule instances expansion may step through for one object, including the
/// ones before the window that it cannot skip arithmetically (a rule with COUNT
/// and BY parts, a monthly or yearly rule): a bound on CPU per object.
pub const MAX_RULE_STEPS: usize = 200_000;

/// Why an object is over its expansion budget. Writers refuse such an object;
/// readers of stored objects get the occurrences found within the budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverBudget {
    #[error(
        "the object has more than {MAX_INSTANCES} occurrences in the indexed window; end the rule sooner (COUNT or UNTIL) or use a longer INTERVAL"
    )]
    Instances,
    #[error(
        "event {uid:?} has {found} RRULE lines; at most {MAX_RRULES} are accepted (RFC 5545 expects one)"
    )]
    Rules { uid: String, found: usize },
    #[error("event {uid:?} has {found} RDATE or EXDATE values; at most {MAX_DATES} are accepted")]
    Dates { uid: String, found: usize },
    #[error(
        "the object has {found} components; at most {MAX_COMPONENTS} (series and their overrides) are accepted"
    )]
    Components { found: usize },
    #[error(
        "event {uid:?}: its rule takes more than {MAX_RULE_STEPS} steps to expand; start the series later (DTSTART) or simplify the rule"
    )]
    Steps { uid: String },
}

impl OverBudget {
    /// Whether the limit is the number of instances (CalDAV `max-instances`).
    pub fn is_instances(&self) -> bool {
        matches!(self, OverBudget::Instances | OverBudget::Steps { .. })
    }
}

/// An expansion's result.
#[derive(Debug, Default)]
pub struct Expansion {
    /// Ordered by start; when over budget, those found within it.
    pub occurrences: Vec<Occurrence>,
    pub diagnostics: Vec<String>,
    /// Set when the object exceeded a limit (the first one met).
    pub over_budget: Option<OverBudget>,
}

/// What an expansion of one object may still spend.
struct Budget {
    instances: usize,
    steps: usize,
    over: Option<OverBudget>,
}

impl Budget {
    fn exceed(&mut self, why: OverBudget) {
        self.over.get_or_insert(why);
    }
}

/// What the expansion needs to know besides the calendar.
#[derive(Debug, Clone, Copy)]
pub struct ExpandOptions {
    /// Zone for floating times and all-day dates (the tenant's).
    pub default_zone: Tz,
    /// Occurrences overlapping this UTC window are returned.
    pub window: Span,
}

/// When an occurrence was originally scheduled (its RECURRENCE-ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OriginalStart {
    Date(NaiveDate),
    Instant(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    /// The VEVENT it comes from ([`VEvent::index`]).
    pub event: usize,
    pub uid: String,
    pub span: Span,
    pub all_day: bool,
    /// None for a non-recurring event.
    pub recurrence_id: Option<OriginalStart>,
    pub busy: BusyKind,
    pub status: Option<EventStatus>,
    pub summary: Option<String>,
}

/// The zones a calendar's times are read in, besides explicit TZIDs.
struct Zones {
    /// For floating times: X-WR-TIMEZONE, else the tenant's zone.
    floating: Zone,
    /// For series anchored in UTC: X-WR-TIMEZONE, else UTC. Google writes recurring
    /// events in UTC with X-WR-TIMEZONE and shows them at a fixed wall-clock time
    /// in that zone all year, which is what the calendar's users see.
    utc_series: Zone,
    /// The tenant's zone, for all-day dates.
    default: Tz,
}

/// How a series places local times: its zone, or floating/all-day in the default one.
#[derive(Clone)]
struct Frame {
    zone: Zone,
    all_day: bool,
    /// Written without a zone (so a floating UNTIL is local time, too).
    floating: bool,
    default_zone: Tz,
}

impl Frame {
    fn for_start(start: &IcalTime, zones: &Zones) -> Frame {
        let zone = match start {
            IcalTime::Zoned(_, z) => z.clone(),
            IcalTime::Utc(_) => zones.utc_series.clone(),
            IcalTime::Floating(_) | IcalTime::Date(_) => zones.floating.clone(),
        };
        Frame {
            zone,
            all_day: start.is_date(),
            floating: matches!(start, IcalTime::Floating(_)),
            default_zone: zones.default,
        }
    }

    /// A value as local wall-clock time of this frame.
    fn local(&self, t: &IcalTime) -> NaiveDateTime {
        match t {
            IcalTime::Date(d) => d.and_time(NaiveTime::MIN),
            IcalTime::Floating(n) => *n,
            IcalTime::Utc(u) => self.zone.to_local(*u),
            IcalTime::Zoned(n, z) if z.name() == self.zone.name() => *n,
            IcalTime::Zoned(n, z) => self.zone.to_local(z.to_utc(*n)),
        }
    }

    fn instant(&self, local: NaiveDateTime) -> i64 {
        if self.all_day {
            start_of_day(local.date(), self.default_zone).timestamp_millis()
        } else {
            self.zone.to_utc(local).timestamp_millis()
        }
    }

    /// The instants an instance at `local` lasting `duration` takes.
    fn span(&self, local: NaiveDateTime, duration: Duration) -> Span {
        let start = self.instant(local);
        let mut end = self.instant(shifted(local, duration));
        if end < start || (end == start && duration > Duration::zero()) {
            // The start fell into a DST gap and moved past the local end: keep the
            // event's length rather than collapsing or inverting it.
            end = start.saturating_add(duration.num_milliseconds());
        }
        Span::new(start, end)
    }

    fn original(&self, local: NaiveDateTime) -> OriginalStart {
        if self.all_day {
            OriginalStart::Date(local.date())
        } else {
            OriginalStart::Instant(self.zone.to_utc(local).timestamp_millis())
        }
    }
}

/// Whether an occurrence taking `span` is in `window` (an instant, when it is one).
fn inside(span: Span, window: Span) -> bool {
    if span.start == span.end {
        span.start >= window.start && span.start < window.end
    } else {
        span.overlaps(&window)
    }
}

/// The original start a RECURRENCE-ID value names.
fn original_of(t: &IcalTime, zones: &Zones) -> OriginalStart {
    match t {
        IcalTime::Date(d) => OriginalStart::Date(*d),
        IcalTime::Floating(n) => {
            OriginalStart::Instant(zones.floating.to_utc(*n).timestamp_millis())
        }
        IcalTime::Utc(u) => OriginalStart::Instant(u.timestamp_millis()),
        IcalTime::Zoned(n, z) => OriginalStart::Instant(z.to_utc(*n).timestamp_millis()),
    }
}

fn busy_of(e: &VEvent) -> BusyKind {
    if e.status == Some(EventStatus::Cancelled) {
        return BusyKind::Free;
    }
    // Outlook's own busy status is the most specific statement there is.
    match e.ms_busy_status.as_deref() {
        Some("FREE") => return BusyKind::Free,
        Some("TENTATIVE") => return BusyKind::Tentative,
        Some("OOF") => return BusyKind::Oof,
        Some("BUSY") => return BusyKind::Busy,
        _ => {}
    }
    if e.transparent {
        BusyKind::Free
    } else if e.status == Some(EventStatus::Tentative) {
        BusyKind::Tentative
    } else {
        BusyKind::Busy
    }
}

/// Local duration of an event (wall-clock, as its DTEND/DURATION says).
fn local_duration(e: &VEvent, frame: &Frame) -> Duration {
    let start = frame.local(&e.start);
    match (&e.end, e.duration) {
        (Some(end), _) => (frame.local(end) - start).max(Duration::zero()),
        (None, Some(d)) => d.max(Duration::zero()),
        // RFC 5545 §3.6.1: a DATE start alone lasts one day; a DATE-TIME start, no time.
        (None, None) if frame.all_day => Duration::days(1),
        (None, None) => Duration::zero(),
    }
}

/// All occurrences of every event in `cal` overlapping the window, ordered by
/// start, and what could not be honoured; an object over budget is cut short and
/// says so in the diagnostics (see [`expand_within_budget`]).
pub fn expand(cal: &ParsedCalendar, opts: &ExpandOptions) -> (Vec<Occurrence>, Vec<String>) {
    let mut expansion = expand_within_budget(cal, opts);
    if let Some(over) = expansion.over_budget.take() {
        expansion
            .diagnostics
            .push(format!("{over}; the rest are ignored"));
    }
    (expansion.occurrences, expansion.diagnostics)
}

/// [`expand`] within the object's budget ([`MAX_INSTANCES`] and the other
/// limits): whatever the object says, the work done is bounded.
pub fn expand_within_budget(cal: &ParsedCalendar, opts: &ExpandOptions) -> Expansion {
    let zones = Zones {
        floating: cal
            .x_wr_timezone
            .clone()
            .unwrap_or(Zone::Iana(opts.default_zone)),
        utc_series: cal
            .x_wr_timezone
            .clone()
            .unwrap_or(Zone::Iana(chrono_tz::UTC)),
        default: opts.default_zone,
    };
    let mut budget = Budget {
        instances: MAX_INSTANCES,
        steps: MAX_RULE_STEPS,
        over: None,
    };
    let mut events: &[VEvent] = &cal.events;
    if events.len() > MAX_COMPONENTS {
        budget.exceed(OverBudget::Components {
            found: events.len(),
        });
        events = &events[..MAX_COMPONENTS];
    }
    let mut diagnostics = Vec::new();
    let mut by_uid: HashMap<&str, Vec<&VEvent>> = HashMap::new();
    let mut order = Vec::new();
    for e in events {
        by_uid
            .entry(e.uid.as_str())
            .or_insert_with(|| {
                order.push(e.uid.as_str());
                Vec::new()
            })
            .push(e);
    }
    let mut out = Vec::new();
    for uid in order {
        let (master, overrides) = latest_revisions(&by_uid[uid], &zones, &mut diagnostics);
        series(
            master,
            &overrides,
            &zones,
            opts,
            &mut out,
            &mut diagnostics,
            &mut budget,
        );
        if budget.instances == 0 {
            break;
        }
    }
    out.sort_by(|a, b| (a.span.start, &a.uid).cmp(&(b.span.start, &b.uid)));
    Expansion {
        occurrences: out,
        diagnostics,
        over_budget: budget.over,
    }
}

/// The master and overrides of one UID, keeping the highest SEQUENCE where the
/// object holds several revisions of the same component (some feeds publish every
/// revision): an older one must not show next to the newer.
fn latest_revisions<'a>(
    events: &[&'a VEvent],
    zones: &Zones,
    diagnostics: &mut Vec<String>,
) -> (Option<&'a VEvent>, Vec<&'a VEvent>) {
    let mut master: Option<&VEvent> = None;
    let mut by_original: HashMap<OriginalStart, Option<&VEvent>> = HashMap::new();
    let mut stale = 0;
    for e in events {
        let slot = match &e.recurrence_id {
            None => &mut master,
            Some(rid) => by_original.entry(original_of(rid, zones)).or_default(),
        };
        match slot {
            // Of equal SEQUENCEs the first in the file stays.
            Some(kept) if kept.sequence >= e.sequence => stale += 1,
            Some(_) => {
                stale += 1;
                *slot = Some(e);
            }
            None => *slot = Some(e),
        }
    }
    if stale > 0 {
        let uid = events.first().map_or("", |e| e.uid.as_str());
        diagnostics.push(format!(
            "event {uid:?}: {stale} older revision(s) of the same component left out (the highest SEQUENCE is kept)"
        ));
    }
    let mut overrides: Vec<&VEvent> = by_original.into_values().flatten().collect();
    overrides.sort_by_key(|o| o.index);
    (master, overrides)
}

/// One instance before placement: local start, local duration, the event it takes
/// its properties from, and the original start it replaces.
struct Instance<'a> {
    start: NaiveDateTime,
    duration: Duration,
    event: &'a VEvent,
    original: Option<OriginalStart>,
    frame: Frame,
}

/// `t + d`, saturating at the ends of the representable range: instants out there
/// are outside every window, and must not panic on the way.
fn shifted(t: NaiveDateTime, d: Duration) -> NaiveDateTime {
    t.checked_add_signed(d).unwrap_or(if d < Duration::zero() {
        NaiveDateTime::MIN
    } else {
        NaiveDateTime::MAX
    })
}

fn series(
    master: Option<&VEvent>,
    overrides: &[&VEvent],
    zones: &Zones,
    opts: &ExpandOptions,
    out: &mut Vec<Occurrence>,
    diagnostics: &mut Vec<String>,
    budget: &mut Budget,
) {
    let mut overridden: HashMap<OriginalStart, &VEvent> = overrides
        .iter()
        .filter_map(|o| Some((original_of(o.recurrence_id.as_ref()?, zones), *o)))
        .collect();
    let mut instances: Vec<Instance> = Vec::new();
    if let Some(m) = master {
        let frame = Frame::for_start(&m.start, zones);
        let duration = local_duration(m, &frame);
        let recurring = !m.rrules.is_empty() || !m.rdates.is_empty();
        // Rule instances outside the window are dropped as they are generated,
        // unless a THISANDFUTURE override may move them into it.
        let exact = !overrides.iter().any(|o| o.this_and_future);
        for (start, duration) in
            master_starts(m, &frame, duration, opts, exact, diagnostics, budget)
        {
            instances.push(Instance {
                start,
                duration,
                event: m,
                original: recurring.then(|| frame.original(start)),
                frame: frame.clone(),
            });
        }
        // RANGE=THISANDFUTURE: an override reshapes every later instance too. Each
        // instance takes the shift of the latest such override at or before its
        // *original* start (RFC 5545 §3.8.4.4), so two of them never compound.
        let mut future: Vec<(NaiveDateTime, Duration, Duration, &VEvent)> = overrides
            .iter()
            .filter(|o| o.this_and_future)
            .filter_map(|o| {
                let rid_local = frame.local(o.recurrence_id.as_ref()?);
                let o_frame = Frame::for_start(&o.start, zones);
                let shift = o_frame.local(&o.start) - rid_local;
                Some((rid_local, shift, local_duration(o, &o_frame), *o))
            })
            .collect();
        future.sort_by_key(|(rid_local, ..)| *rid_local);
        if !future.is_empty() {
            for inst in instances.iter_mut() {
                if inst
                    .original
                    .is_some_and(|orig| overridden.contains_key(&orig))
                {
                    continue;
                }
                let after = future.partition_point(|(rid_local, ..)| *rid_local < inst.start);
                if let Some((_, shift, o_duration, o)) = after.checked_sub(1).map(|i| future[i]) {
                    inst.start = shifted(inst.start, shift);
                    inst.duration = o_duration;
                    inst.event = o;
                }
            }
        }
        // Single-instance overrides replace the instance they name.
        for inst in instances.iter_mut() {
            if let Some(o) = inst.original.and_then(|orig| overridden.remove(&orig)) {
                let o_frame = Frame::for_start(&o.start, zones);
                inst.start = o_frame.local(&o.start);
                inst.duration = local_duration(o, &o_frame);
                inst.event = o;
                inst.frame = o_frame;
            }
        }
    }
    // Overrides of instances the master does not produce still happened.
    let mut orphans: Vec<(&OriginalStart, &&VEvent)> = overridden.iter().collect();
    orphans.sort_by_key(|(orig, _)| **orig);
    for (orig, o) in orphans {
        let frame = Frame::for_start(&o.start, zones);
        instances.push(Instance {
            start: frame.local(&o.start),
            duration: local_duration(o, &frame),
            event: o,
            original: Some(*orig),
            frame,
        });
    }
    // Distinct local times can name one instant (a sub-daily rule stepping into a
    // DST gap lands on the next valid hour): one instant is one occurrence.
    let mut seen = std::collections::HashSet::new();
    for inst in instances {
        let span = inst.frame.span(inst.start, inst.duration);
        if !seen.insert(span.start) {
            continue;
        }
        if inside(span, opts.window) {
            if budget.instances == 0 {
                budget.exceed(OverBudget::Instances);
                break;
            }
            budget.instances -= 1;
            out.push(Occurrence {
                event: inst.event.index,
                uid: inst.event.uid.clone(),
                span,
                all_day: inst.frame.all_day,
                recurrence_id: inst.original,
                busy: busy_of(inst.event),
                status: inst.event.status,
                summary: inst.event.summary.clone(),
            });
        }
    }
}

/// Local starts (with their durations) of a master: DTSTART, RRULE and RDATE
/// instances minus EXDATEs, limited to those that can reach the window.
fn master_starts(
    m: &VEvent,
    frame: &Frame,
    duration: Duration,
    opts: &ExpandOptions,
    exact: bool,
    diagnostics: &mut Vec<String>,
    budget: &mut Budget,
) -> Vec<(NaiveDateTime, Duration)> {
    let dtstart = frame.local(&m.start);
    // Local bounds that surely contain every instance overlapping the UTC window:
    // widen by the duration and by the largest zone offsets.
    let margin = Duration::hours(30);
    // Open-ended windows reach far beyond representable dates: clamp to the
    // calendar range bookings and events may use (years 1900-2200).
    let utc = |ms: i64| {
        DateTime::<Utc>::from_timestamp_millis(ms.clamp(WINDOW_MIN_MS, WINDOW_MAX_MS))
            .unwrap_or_default()
            .naive_utc()
    };
    let lo = shifted(utc(opts.window.start), -(duration + margin));
    let hi = shifted(utc(opts.window.end), margin);
    let mut starts: Vec<(NaiveDateTime, Duration)> = vec![(dtstart, duration)];
    let mut rules: &[String] = &m.rrules;
    if rules.len() > MAX_RRULES {
        budget.exceed(OverBudget::Rules {
            uid: m.uid.clone(),
            found: rules.len(),
        });
        rules = &rules[..MAX_RRULES];
    }
    for rule in rules {
        let until_local = |value: &str| -> Option<NaiveDateTime> {
            let v = value.trim();
            // UNTIL must have DTSTART's value type (RFC 5545 §3.3.10); when it does
            // not, read it as dateutil/recurring-ical-events do: a DATE is that
            // day's midnight, and a floating time on a zoned series is UTC.
            if let Some(d) = super::parse::parse_date(v) {
                return Some(d.and_time(NaiveTime::MIN));
            }
            let naive = super::parse::parse_naive(v)?;
            let is_utc = v.ends_with(['Z', 'z']) || !(frame.floating || frame.all_day);
            Some(if is_utc {
                frame.zone.to_local(naive.and_utc())
            } else {
                naive
            })
        };
        let set = match local_rule(rule, dtstart, lo, &until_local) {
            Ok(set) => set,
            Err(e) => {
                diagnostics.push(format!(
                    "event {:?}: RRULE \"{rule}\" cannot be expanded ({e}); only DTSTART is used",
                    m.uid
                ));
                continue;
            }
        };
        let Some((set, until)) = set else {
            continue; // every instance ended before the window
        };
        for t in &set {
            let local = t.naive_utc();
            if local > hi || until.is_some_and(|u| local > u) {
                break;
            }
            if budget.steps == 0 {
                budget.exceed(OverBudget::Steps { uid: m.uid.clone() });
                break;
            }
            budget.steps -= 1;
            if local >= lo && (!exact || inside(frame.span(local, duration), opts.window)) {
                // Counted again, exactly, when placed; this bounds the list.
                if starts.len() > budget.instances {
                    budget.exceed(OverBudget::Instances);
                    break;
                }
                starts.push((local, duration));
            }
        }
    }
    let dates = m.rdates.len().max(m.exdates.len());
    if dates > MAX_DATES {
        budget.exceed(OverBudget::Dates {
            uid: m.uid.clone(),
            found: dates,
        });
    }
    for r in m.rdates.iter().take(MAX_DATES) {
        match r {
            RDate::At(t) => starts.push((frame.local(t), duration)),
            RDate::Period(t, end) => {
                let start = frame.local(t);
                let d = match end {
                    PeriodEnd::At(e) => frame.local(e) - start,
                    PeriodEnd::Duration(d) => *d,
                };
                starts.push((start, d.max(Duration::zero())));
            }
        }
    }
    starts.sort_by_key(|(s, _)| *s);
    starts.dedup_by_key(|(s, _)| *s);
    let excluded: HashSet<NaiveDateTime> = m
        .exdates
        .iter()
        .take(MAX_DATES)
        .map(|x| frame.local(x))
        .collect();
    let exdate_days: HashSet<NaiveDate> = m
        .exdates
        .iter()
        .take(MAX_DATES)
        .filter_map(|x| match x {
            IcalTime::Date(d) if !frame.all_day => Some(*d),
            _ => None,
        })
        .collect();
    starts.retain(|(s, _)| !excluded.contains(s) && !exdate_days.contains(&s.date()));
    starts
}

/// The rule as an `rrule` set over naive local times presented as UTC, plus the
/// UNTIL bound in the same local terms (checked by the caller, since the crate
/// insists UNTIL and DTSTART share a zone kind). None: no instance reaches `from`.
///
/// A rule with a fixed period (SECONDLY to WEEKLY) starts from the last whole
/// period before `from` instead of DTSTART: in naive local time every period has
/// the same length, and a rule's instances repeat from one period to the next, so
/// the instances from there on are the same, without stepping through decades of
/// them (`FREQ=MINUTELY` from 1900 is 66 million). With COUNT this is exact only
/// when each period yields one instance (no BY parts), so COUNT is reduced by the
/// periods skipped; other rules are stepped through within [`MAX_RULE_STEPS`].
fn local_rule(
    rule: &str,
    dtstart: NaiveDateTime,
    from: NaiveDateTime,
    until_local: &dyn Fn(&str) -> Option<NaiveDateTime>,
) -> Result<Option<(RRuleSet, Option<NaiveDateTime>)>, String> {
    let mut until = None;
    let mut period_secs = None;
    let mut interval: i64 = 1;
    let mut count: Option<i64> = None;
    let mut by_parts = false;
    let mut parts: Vec<String> = Vec::new();
    for p in rule.trim().trim_start_matches("RRULE:").split(';') {
        let Some((k, v)) = p.split_once('=') else {
            if !p.is_empty() {
                parts.push(p.to_owned());
            }
            continue;
        };
        let key = k.trim().to_ascii_uppercase();
        match key.as_str() {
            "UNTIL" => {
                until = until_local(v);
                continue;
            }
            "COUNT" => count = v.trim().parse().ok(),
            "INTERVAL" => interval = v.trim().parse().unwrap_or(1),
            "FREQ" => {
                period_secs = match v.trim().to_ascii_uppercase().as_str() {
                    "SECONDLY" => Some(1),
                    "MINUTELY" => Some(60),
                    "HOURLY" => Some(3_600),
                    "DAILY" => Some(86_400),
                    "WEEKLY" => Some(604_800),
                    _ => None,
                }
            }
            k if k.starts_with("BY") => by_parts = true,
            _ => {}
        }
        parts.push(p.to_owned());
    }
    let mut start = dtstart;
    if let Some(period) = period_secs.filter(|_| interval >= 1)
        && from > dtstart
        && (count.is_none() || !by_parts)
    {
        let step = period * interval;
        let skipped = (from - dtstart).num_seconds() / step;
        if skipped > 0 {
            if let Some(n) = count {
                if n <= skipped {
                    return Ok(None);
                }
                for p in parts.iter_mut() {
                    if p.trim().to_ascii_uppercase().starts_with("COUNT=") {
                        *p = format!("COUNT={}", n - skipped);
                    }
                }
            }
            start = shifted(dtstart, Duration::seconds(skipped.saturating_mul(step)));
        }
    }
    let rrule: RRule<Unvalidated> = RRule::from_str(&parts.join(";")).map_err(|e| e.to_string())?;
    let start = rrule::Tz::UTC.from_utc_datetime(&start);
    let validated = rrule.validate(start).map_err(|e| e.to_string())?;
    Ok(Some((RRuleSet::new(start).rrule(validated).limit(), until)))
}

/// Instances of `rule` from `start` to `last` in naive local time (for VTIMEZONE
/// observances); at most `max`.
pub(crate) fn naive_rule_instances(
    rule: &str,
    start: NaiveDateTime,
    last: NaiveDateTime,
    max: usize,
) -> Vec<NaiveDateTime> {
    let until = |v: &str| super::parse::parse_naive(v);
    let Ok(Some((set, until))) = local_rule(rule, start, start, &until) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in &set {
        let local = t.naive_utc();
        if local > last || until.is_some_and(|u| local > u) || out.len() >= max {
            break;
        }
        out.push(local);
    }
    out
}

/// Properties that describe *when*, replaced by the instance's own in an expansion.
const TIMING: [&str; 8] = [
    "DTSTART",
    "DTEND",
    "DURATION",
    "DUE",
    "RRULE",
    "RDATE",
    "EXDATE",
    "RECURRENCE-ID",
];

/// CalDAV `expand` (RFC 4791 §9.6.5): every instance overlapping `window` as its own
/// VEVENT with UTC DTSTART/DTEND and a RECURRENCE-ID (for recurring ones), no
/// VTIMEZONE and no recurrence properties; other properties are copied as written.
/// An object of tasks (or journals) expands its VTODOs (VJOURNALs) the same way,
/// DUE in place of DTEND.
pub fn expand_to_utc_text(ics: &str, window: Span, default_zone: Tz) -> Result<String, String> {
    ExpandPlan::new(ics)?
        .expand(window, default_zone)
        .map_err(|e| e.to_string())
}

/// Most text one object's expansion may produce: each instance copies the
/// component, so a large component times many instances would otherwise take
/// hundreds of megabytes for one REPORT.
pub const MAX_EXPANDED_BYTES: usize = 8 << 20;

/// An expansion over [`MAX_EXPANDED_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "expanding this object over the requested range would write {bytes} bytes (at most {MAX_EXPANDED_BYTES}); ask for a shorter range"
)]
pub struct ExpansionTooLarge {
    pub bytes: usize,
}

/// An object prepared for [`expand_to_utc_text`] over any window: parsed once, and
/// what every instance copies (calendar properties, the component's properties
/// other than its timing, its sub-components) already written out. Parsing is
/// most of an expansion, so callers keep plans of objects they expand often.
pub struct ExpandPlan {
    kind: Kind,
    parsed: ParsedCalendar,
    /// `BEGIN:VCALENDAR` and the calendar's properties.
    head: String,
    /// Per component of `kind`, in order: its copied properties, its sub-components.
    components: Vec<(String, String)>,
}

impl ExpandPlan {
    pub fn new(ics: &str) -> Result<ExpandPlan, String> {
        let kind = [Kind::Todo, Kind::Journal]
            .into_iter()
            .find(|k| !ics.contains("BEGIN:VEVENT") && ics.contains(&format!("BEGIN:{}", k.name())))
            .unwrap_or(Kind::Event);
        let unfolded = super::parse::unfolded(ics);
        let raw = super::parse::read(&unfolded).map_err(|e| e.to_string())?;
        let parsed = super::parse::from_syntax(&raw, kind).map_err(|e| e.to_string())?;
        let mut head = super::ContentWriter::with_capacity(256);
        head.begin("VCALENDAR");
        for p in raw
            .properties
            .iter()
            .filter(|p| p.name.as_str() != "X-WR-TIMEZONE")
        {
            head.parsed_property(p);
        }
        let components = raw
            .components
            .iter()
            .filter(|c| c.name.as_str() == kind.name())
            .map(|c| {
                let mut props = super::ContentWriter::with_capacity(ics.len());
                for p in c
                    .properties
                    .iter()
                    .filter(|p| !TIMING.contains(&p.name.as_str()))
                {
                    props.parsed_property(p);
                }
                let mut subs = super::ContentWriter::with_capacity(0);
                for sub in &c.components {
                    subs.parsed_component(sub);
                }
                (props.finish(), subs.finish())
            })
            .collect();
        Ok(ExpandPlan {
            kind,
            parsed,
            head: head.finish(),
            components,
        })
    }

    /// Bytes this plan holds, roughly (for cache budgets).
    pub fn size(&self) -> usize {
        self.head.len()
            + self
                .components
                .iter()
                .map(|(p, s)| p.len() + s.len() + 256)
                .sum::<usize>()
    }

    /// The instances overlapping `window`, as [`expand_to_utc_text`] writes them.
    pub fn expand(&self, window: Span, default_zone: Tz) -> Result<String, ExpansionTooLarge> {
        let kind = self.kind;
        let (occurrences, _) = expand(
            &self.parsed,
            &ExpandOptions {
                default_zone,
                window,
            },
        );
        let utc = |ms: i64| {
            super::format_utc(DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default())
        };
        // The zone all-day dates were placed in by the expansion.
        let date_zone = self
            .parsed
            .x_wr_timezone
            .clone()
            .unwrap_or(Zone::Iana(default_zone));
        // What each instance copies, plus its timing lines.
        let per_instance = |event: usize| {
            self.components
                .get(event)
                .map_or(0, |(p, s)| p.len() + s.len() + 128)
        };
        let bytes = occurrences
            .iter()
            .map(|o| per_instance(o.event))
            .fold(self.head.len(), usize::saturating_add);
        if bytes > MAX_EXPANDED_BYTES {
            return Err(ExpansionTooLarge { bytes });
        }
        let mut w = super::ContentWriter::with_capacity(bytes);
        w.rendered(&self.head);
        for o in &occurrences {
            let Some((props, subs)) = self.components.get(o.event) else {
                continue;
            };
            w.begin(kind.name());
            w.rendered(props);
            // All-day instances stay dates (as stored; clients show them as all-day);
            // timed ones are written in UTC as §9.6.5 requires.
            let value = |ms: i64| {
                if o.all_day {
                    let local = date_zone
                        .to_local(DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default());
                    super::format_date(local.date())
                } else {
                    utc(ms)
                }
            };
            let date_param: &[(&str, &str)] = if o.all_day { &[("VALUE", "DATE")] } else { &[] };
            w.raw("DTSTART", date_param, &value(o.span.start));
            match kind {
                Kind::Event => w.raw("DTEND", date_param, &value(o.span.end)),
                // A task without DUE or DURATION stays without one.
                Kind::Todo if o.span.end > o.span.start => {
                    w.raw("DUE", date_param, &value(o.span.end))
                }
                Kind::Todo | Kind::Journal => {}
            }
            match o.recurrence_id {
                Some(OriginalStart::Instant(ms)) => w.raw("RECURRENCE-ID", &[], &utc(ms)),
                Some(OriginalStart::Date(d)) => w.raw(
                    "RECURRENCE-ID",
                    &[("VALUE", "DATE")],
                    &super::format_date(d),
                ),
                None => {}
            }
            w.rendered(subs);
            w.end(kind.name());
        }
        w.end("VCALENDAR");
        Ok(w.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ical::parse::parse;

    fn window(from: &str, to: &str) -> ExpandOptions {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
        ExpandOptions {
            default_zone: chrono_tz::Europe::Paris,
            window: Span::new(t(from), t(to)),
        }
    }

    fn utc(ms: i64) -> String {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    fn starts(text: &str, opts: &ExpandOptions) -> Vec<String> {
        let cal = parse(text).unwrap();
        let (occ, diags) = expand(&cal, opts);
        assert!(diags.is_empty(), "{diags:?}");
        occ.iter().map(|o| utc(o.span.start)).collect()
    }

    #[test]
    fn weekly_rule_keeps_wall_clock_across_dst() {
        let text = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:w\r\nDTSTART;TZID=Europe/Paris:20260316T090000\r\nDTEND;TZID=Europe/Paris:20260316T100000\r\nRRULE:FREQ=WEEKLY;COUNT=3\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let got = starts(
            text,
            &window("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        );
        assert_eq!(
            got,
            [
                "2026-03-16T08:00:00Z",
                "2026-03-23T08:00:00Z",
                "2026-03-30T07:00:00Z"
            ]
        );
    }

    #[test]
    fn overrides_exdates_and_cancellations() {
        let text = "BEGIN:VCALENDAR\r\n\
BEGIN:VEVENT\r\nUID:s\r\nRECURRENCE-ID;TZID=Europe/Paris:20260107T100000\r\nDTSTART;TZID=Europe/Paris:20260107T150000\r\nDTEND;TZID=Europe/Paris:20260107T153000\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:s\r\nDTSTART;TZID=Europe/Paris:20260105T100000\r\nDURATION:PT1H\r\nRRULE:FREQ=DAILY;UNTIL=20260109T090000Z\r\nEXDATE;TZID=Europe/Paris:20260106T100000\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:s\r\nRECURRENCE-ID;TZID=Europe/Paris:20260108T100000\r\nDTSTART;TZID=Europe/Paris:20260108T100000\r\nDURATION:PT1H\r\nSTATUS:CANCELLED\r\nEND:VEVENT\r\n\
END:VCALENDAR\r\n";
        let cal = parse(text).unwrap();
        let (occ, _) = expand(
            &cal,
            &window("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),
        );
        let summary: Vec<(String, i64, BusyKind)> = occ
            .iter()
            .map(|o| {
                (
                    utc(o.span.start),
                    (o.span.end - o.span.start) / 60_000,
                    o.busy,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("2026-01-05T09:00:00Z".to_owned(), 60, BusyKind::Busy),
                ("2026-01-07T14:00:00Z".to_owned(), 30, BusyKind::Busy),
                ("2026-01-08T09:00:00Z".to_owned(), 60, BusyKind::Free),
                ("2026-01-09T09:00:00Z".to_owned(), 60, BusyKind::Busy),
            ]
        );
    }

    #[test]
    fn floating_and_all_day_use_the_default_zone() {
        let text = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:f\r\nDTSTART:20260701T090000\r\nDTEND:20260701T100000\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:d\r\nDTSTART;VALUE=DATE:20260702\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let cal = parse(text).unwrap();
        let (occ, _) = expand(
            &cal,
            &window("2026-06-01T00:00:00Z", "2026-08-01T00:00:00Z"),
        );
        assert_eq!(utc(occ[0].span.start), "2026-07-01T07:00:00Z");
        assert!(occ[1].all_day);
        assert_eq!(utc(occ[1].span.start), "2026-07-01T22:00:00Z");
        assert_eq!(occ[1].span.end - occ[1].span.start, 24 * 3_600_000);
    }

    #[test]
    fn infinite_rules_are_cut_by_the_window() {
        let text = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:i\r\nDTSTART:20200106T090000Z\r\nDURATION:PT30M\r\nRRULE:FREQ=WEEKLY\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let got = starts(
            text,
            &window("2027-03-01T00:00:00Z", "2027-03-15T00:00:00Z"),
        );
        assert_eq!(got, ["2027-03-01T09:00:00Z", "2027-03-08T09:00:00Z"]);
    }

    #[test]
    fn microsoft_busy_status_wins_over_transp() {
        let text = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:o\r\nDTSTART:20260701T090000Z\r\nDURATION:PT1H\r\nTRANSP:TRANSPARENT\r\nX-MICROSOFT-CDO-BUSYSTATUS:OOF\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let cal = parse(text).unwrap();
        let (occ, _) = expand(
            &cal,
            &window("2026-06-01T00:00:00Z", "2026-08-01T00:00:00Z"),
        );
        assert_eq!(occ[0].busy, BusyKind::Oof);
    }

    #[test]
    fn expanded_all_day_instances_stay_dates() {
        let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:t\r\nBEGIN:VEVENT\r\nUID:a\r\nDTSTART;VALUE=DATE:20260328\r\nDTEND;VALUE=DATE:20260331\r\nRRULE:FREQ=WEEKLY;COUNT=2\r\nSUMMARY:Trip\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:b\r\nDTSTART:20260310T090000Z\r\nDTEND:20260310T100000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let w = window("2026-03-01T00:00:00Z", "2026-04-30T00:00:00Z");
        let text = expand_to_utc_text(ics, w.window, w.default_zone).unwrap();
        assert!(
            text.contains("DTSTART;VALUE=DATE:20260328\r\nDTEND;VALUE=DATE:20260331"),
            "{text}"
        );
        assert!(text.contains("RECURRENCE-ID;VALUE=DATE:20260404"), "{text}");
        assert!(
            text.contains("DTSTART:20260310T090000Z\r\nDTEND:20260310T100000Z"),
            "{text}"
        );
        assert!(
            !text.contains("T230000Z") && !text.contains("RRULE"),
            "{text}"
        );
    }

    fn calendar(events: &str) -> String {
        format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:t\r\n{events}END:VCALENDAR\r\n")
    }

    #[test]
    fn this_and_future_overrides_shift_from_their_own_original_start() {
        // Issue 13 item 14: the second override must not compound the first's shift.
        let text = calendar(
            "BEGIN:VEVENT\r\nUID:tf\r\nDTSTART:20270301T120000Z\r\nDTEND:20270301T130000Z\r\nRRULE:FREQ=DAILY;COUNT=6\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:tf\r\nRECURRENCE-ID;RANGE=THISANDFUTURE:20270302T120000Z\r\nDTSTART:20270302T090000Z\r\nDTEND:20270302T100000Z\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:tf\r\nRECURRENCE-ID;RANGE=THISANDFUTURE:20270304T120000Z\r\nDTSTART:20270304T090000Z\r\nDTEND:20270304T110000Z\r\nEND:VEVENT\r\n",
        );
        let cal = parse(&text).unwrap();
        let (occ, _) = expand(
            &cal,
            &window("2027-02-01T00:00:00Z", "2027-04-01T00:00:00Z"),
        );
        let got: Vec<(String, String)> = occ
            .iter()
            .map(|o| (utc(o.span.start), utc(o.span.end)))
            .collect();
        let want = [
            ("2027-03-01T12:00:00Z", "2027-03-01T13:00:00Z"),
            ("2027-03-02T09:00:00Z", "2027-03-02T10:00:00Z"),
            ("2027-03-03T09:00:00Z", "2027-03-03T10:00:00Z"),
            ("2027-03-04T09:00:00Z", "2027-03-04T11:00:00Z"),
            ("2027-03-05T09:00:00Z", "2027-03-05T11:00:00Z"),
            ("2027-03-06T09:00:00Z", "2027-03-06T11:00:00Z"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn vtimezone_observance_with_a_date_start_is_read() {
        let text = calendar(
            "BEGIN:VTIMEZONE\r\nTZID:UTC+11\r\nBEGIN:STANDARD\r\nDTSTART;VALUE=DATE:20170101\r\nTZOFFSETFROM:+1100\r\nTZOFFSETTO:+1100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n\
BEGIN:VEVENT\r\nUID:z\r\nDTSTART;TZID=UTC+11:20270301T230000\r\nDURATION:PT1H\r\nEND:VEVENT\r\n",
        );
        assert_eq!(
            starts(
                &text,
                &window("2027-02-01T00:00:00Z", "2027-04-01T00:00:00Z")
            ),
            ["2027-03-01T12:00:00Z"]
        );
    }

    #[test]
    fn the_highest_sequence_of_several_revisions_wins() {
        let text = calendar(
            "BEGIN:VEVENT\r\nUID:r\r\nSEQUENCE:1\r\nDTSTART:20270301T090000Z\r\nDURATION:PT1H\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:r\r\nSEQUENCE:3\r\nDTSTART:20270301T140000Z\r\nDURATION:PT1H\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:r\r\nSEQUENCE:2\r\nDTSTART:20270301T110000Z\r\nDURATION:PT1H\r\nEND:VEVENT\r\n",
        );
        let cal = parse(&text).unwrap();
        let (occ, diags) = expand(
            &cal,
            &window("2027-02-01T00:00:00Z", "2027-04-01T00:00:00Z"),
        );
        let got: Vec<String> = occ.iter().map(|o| utc(o.span.start)).collect();
        assert_eq!(got, ["2027-03-01T14:00:00Z"]);
        assert!(
            diags.iter().any(|d| d.contains("older revision")),
            "{diags:?}"
        );
    }

    /// Expansion of a rule whose DTSTART is far before the window, against the
    /// `rrule` crate walking it from DTSTART: skipping whole periods must give
    /// exactly the same instances.
    #[test]
    fn skipping_to_the_window_matches_walking_from_dtstart() {
        let rules = [
            "FREQ=WEEKLY;INTERVAL=3;BYDAY=MO,TH",
            "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=28,29",
            "FREQ=HOURLY;INTERVAL=7;BYHOUR=1,8,15",
            "FREQ=MINUTELY;INTERVAL=997",
            "FREQ=WEEKLY;COUNT=1200",
            "FREQ=DAILY;INTERVAL=2;COUNT=4000",
            "FREQ=DAILY;COUNT=300;BYDAY=MO",
            "FREQ=WEEKLY;WKST=SU;INTERVAL=2;BYDAY=SU,SA",
            "FREQ=SECONDLY;INTERVAL=50021",
        ];
        let w = window("2026-01-05T00:00:00Z", "2026-03-20T00:00:00Z");
        for rule in rules {
            let text = calendar(&format!(
                "BEGIN:VEVENT\r\nUID:k\r\nDTSTART:20030107T103000Z\r\nDURATION:PT10M\r\nRRULE:{rule}\r\nEND:VEVENT\r\n"
            ));
            let got = starts(&text, &w);
            let set: RRuleSet = format!("DTSTART:20030107T103000Z\nRRULE:{rule}")
                .parse()
                .unwrap();
            let lo = w.window.start - 10 * 60_000;
            let want: Vec<String> = set
                .into_iter()
                .map(|t| t.timestamp_millis())
                .skip_while(|ms| *ms <= lo)
                .take_while(|ms| *ms < w.window.end)
                .map(utc)
                .collect();
            assert_eq!(got, want, "{rule}");
        }
    }

    #[test]
    fn a_minutely_rule_from_1900_is_cut_at_the_budget_without_walking_there() {
        let text = calendar(
            "BEGIN:VEVENT\r\nUID:m\r\nDTSTAMP:20261201T000000Z\r\nDTSTART:19000101T000000Z\r\nDTEND:19000101T000100Z\r\nRRULE:FREQ=SECONDLY\r\nEND:VEVENT\r\n",
        );
        let cal = parse(&text).unwrap();
        let opts = window("2025-12-07T00:00:00Z", "2028-12-08T00:00:00Z");
        let clock = std::time::Instant::now();
        let e = expand_within_budget(&cal, &opts);
        // Walking from 1900 took minutes; a generous bound that only the walk breaks.
        assert!(clock.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(e.over_budget, Some(OverBudget::Instances));
        assert_eq!(e.occurrences.len(), MAX_INSTANCES);
        // The instances kept are the first ones overlapping the window (each
        // lasts a minute, so those of the minute before it overlap too).
        assert_eq!(utc(e.occurrences[0].span.start), "2025-12-06T23:59:01Z");
        assert_eq!(utc(e.occurrences[59].span.start), "2025-12-07T00:00:00Z");
    }

    #[test]
    fn many_rrule_lines_are_over_budget_and_bounded() {
        let mut events = String::from(
            "BEGIN:VEVENT\r\nUID:many\r\nDTSTART:20261201T000000Z\r\nDURATION:PT1M\r\n",
        );
        for n in 0..1000 {
            events.push_str(&format!("RRULE:FREQ=MINUTELY;BYSECOND={}\r\n", n % 60));
        }
        events.push_str("END:VEVENT\r\n");
        let cal = parse(&calendar(&events)).unwrap();
        let e = expand_within_budget(
            &cal,
            &window("2025-12-07T00:00:00Z", "2028-12-08T00:00:00Z"),
        );
        assert_eq!(
            e.over_budget,
            Some(OverBudget::Rules {
                uid: "many".into(),
                found: 1000
            })
        );
        assert!(e.occurrences.len() <= MAX_INSTANCES);
    }

    #[test]
    fn huge_durations_are_refused_not_panicking() {
        for d in [
            "P999999999999999999W",
            "PT9999999999999999H",
            "P200000000D",
            "P100000000D",
            "P36601D",
        ] {
            assert_eq!(crate::ical::parse::parse_duration(d), None, "{d}");
            let text = calendar(&format!(
                "BEGIN:VEVENT\r\nUID:d\r\nDTSTART:20270301T090000Z\r\nDURATION:{d}\r\nRRULE:FREQ=DAILY\r\nEND:VEVENT\r\n"
            ));
            let cal = parse(&text).unwrap();
            assert!(cal.errors.iter().any(|e| e.contains("DURATION")), "{d}");
            let _ = expand(
                &cal,
                &window("2027-02-01T00:00:00Z", "2027-04-01T00:00:00Z"),
            );
        }
        // The longest accepted duration, at the end of time, does not overflow.
        let text = calendar(
            "BEGIN:VEVENT\r\nUID:e\r\nDTSTART:99991231T000000Z\r\nDURATION:P36600D\r\nRRULE:FREQ=YEARLY\r\nEND:VEVENT\r\n",
        );
        let cal = parse(&text).unwrap();
        let _ = expand(
            &cal,
            &window("2027-02-01T00:00:00Z", "2027-04-01T00:00:00Z"),
        );
    }

    #[test]
    fn an_expansion_that_would_write_too_much_is_refused() {
        // Found by tests/fuzz.rs: a 20 KB component times 20,000 instances.
        let filler = "X-FILLER:0123456789012345678901234567890123456789\r\n".repeat(400);
        let text = calendar(&format!(
            "BEGIN:VEVENT\r\nUID:big\r\nDTSTART:20260101T000000Z\r\nDURATION:PT1M\r\nRRULE:FREQ=MINUTELY\r\n{filler}END:VEVENT\r\n"
        ));
        let w = window("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z");
        let plan = ExpandPlan::new(&text).unwrap();
        let err = plan.expand(w.window, w.default_zone).unwrap_err();
        assert!(err.bytes > MAX_EXPANDED_BYTES, "{err}");
        // A short range of the same object is fine.
        let w = window("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z");
        assert!(plan.expand(w.window, w.default_zone).is_ok());
    }

    #[test]
    fn an_event_without_dtstart_is_an_error_that_names_it() {
        let cal = parse(&calendar(
            "BEGIN:VEVENT\r\nUID:nostart\r\nDTEND:20270301T090000Z\r\nEND:VEVENT\r\n",
        ))
        .unwrap();
        assert!(cal.events.is_empty());
        assert_eq!(cal.errors.len(), 1);
        assert!(cal.errors[0].contains("no DTSTART"), "{:?}", cal.errors);
    }
}
