//! Time zones as they occur in real calendar data, resolved to something that can
//! convert between local wall-clock time and UTC.
//!
//! A TZID is tried, in order, as: an IANA name (exact, then case-insensitive); a
//! prefixed IANA name (`/mozilla.org/20050126_1/Europe/Paris`,
//! `/softwarestudio.org/Olson_20011030_5/America/New_York`); a Windows zone name
//! (`W. Europe Standard Time`, via CLDR); the calendar's own VTIMEZONE rules.
//! Anything else is reported and treated as floating (the tenant's zone).
//!
//! Local→UTC follows RFC 5545 §3.3.5: a time in a DST gap is read with the offset
//! before the gap; an ambiguous time (the repeated hour) is its first occurrence.

use std::sync::Arc;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// A zone that local times can be converted with.
#[derive(Debug, Clone)]
pub enum Zone {
    Iana(Tz),
    /// Rules from a VTIMEZONE component the calendar carried.
    Custom(Arc<CustomZone>),
}

impl Zone {
    /// The instant a local wall-clock time denotes in this zone.
    pub fn to_utc(&self, local: NaiveDateTime) -> DateTime<Utc> {
        match self {
            Zone::Iana(tz) => iana_to_utc(*tz, local),
            Zone::Custom(z) => z.to_utc(local),
        }
    }

    /// The wall-clock time of an instant in this zone.
    pub fn to_local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        match self {
            Zone::Iana(tz) => t.with_timezone(tz).naive_local(),
            Zone::Custom(z) => t.naive_utc() + Duration::seconds(z.offset_at(t).into()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Zone::Iana(tz) => tz.name(),
            Zone::Custom(z) => &z.tzid,
        }
    }
}

fn iana_to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // In a gap: use the offset in force before it (RFC 5545 §3.3.5).
            let before = tz
                .offset_from_utc_datetime(&(local - Duration::hours(12)))
                .fix()
                .local_minus_utc();
            Utc.from_utc_datetime(&(local - Duration::seconds(before.into())))
        }
    }
}

/// One STANDARD or DAYLIGHT sub-component of a VTIMEZONE.
#[derive(Debug, Clone)]
pub struct Observance {
    /// Local time (in the `offset_from` offset) at which it first takes effect.
    pub start: NaiveDateTime,
    pub offset_from: i32,
    pub offset_to: i32,
    /// The RRULE value, if the observance recurs.
    pub rrule: Option<String>,
    /// Further local onsets (RDATE).
    pub rdates: Vec<NaiveDateTime>,
}

/// A zone defined by VTIMEZONE rules: its transitions, precomputed.
#[derive(Debug)]
pub struct CustomZone {
    pub tzid: String,
    /// (instant of the change, offset from then on), sorted by instant.
    transitions: Vec<(i64, i32)>,
    /// Offset before the first transition.
    initial: i32,
}

/// Transitions are computed up to this year; later instants keep the last offset.
const CUSTOM_ZONE_LAST_YEAR: i32 = 2200;
/// Most transitions one VTIMEZONE may define (a real zone has two a year for
/// 600 years): the rules of a hostile one would otherwise cost unbounded time.
pub const MAX_TRANSITIONS: usize = 2_400;

impl CustomZone {
    pub fn new(tzid: &str, observances: &[Observance]) -> CustomZone {
        let mut transitions = Vec::new();
        let last = chrono::NaiveDate::from_ymd_opt(CUSTOM_ZONE_LAST_YEAR, 12, 31)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .unwrap_or_default();
        for o in observances {
            let mut onsets = vec![o.start];
            onsets.extend(o.rdates.iter().copied());
            if let Some(rule) = &o.rrule {
                let room = MAX_TRANSITIONS.saturating_sub(transitions.len() + onsets.len());
                onsets.extend(super::expand::naive_rule_instances(
                    rule, o.start, last, room,
                ));
            }
            onsets.truncate(MAX_TRANSITIONS.saturating_sub(transitions.len()));
            for local in onsets {
                let instant = (local - Duration::seconds(o.offset_from.into()))
                    .and_utc()
                    .timestamp();
                transitions.push((instant, o.offset_to));
            }
        }
        transitions.sort_unstable();
        transitions.dedup();
        // Before the earliest onset the earliest observance's "from" offset applies.
        let initial = observances
            .iter()
            .min_by_key(|o| o.start)
            .map_or(0, |o| o.offset_from);
        CustomZone {
            tzid: tzid.to_owned(),
            transitions,
            initial,
        }
    }

    /// UTC offset in seconds at an instant.
    pub fn offset_at(&self, t: DateTime<Utc>) -> i32 {
        let secs = t.timestamp();
        match self.transitions.partition_point(|(at, _)| *at <= secs) {
            0 => self.initial,
            i => self.transitions[i - 1].1,
        }
    }

    fn to_utc(&self, local: NaiveDateTime) -> DateTime<Utc> {
        // Candidate offsets: every offset the zone ever uses near this time.
        let approx = local.and_utc();
        let mut candidates: Vec<i32> = [-1, 1]
            .iter()
            .map(|d| self.offset_at(approx + Duration::hours(26 * d)))
            .collect();
        candidates.push(self.offset_at(approx));
        candidates.sort_unstable();
        candidates.dedup();
        // A consistent reading: the offset in force at the instant it gives.
        let mut valid: Vec<DateTime<Utc>> = candidates
            .iter()
            .map(|o| approx - Duration::seconds((*o).into()))
            .filter(|utc| self.offset_at(*utc) == (approx - *utc).num_seconds() as i32)
            .collect();
        valid.sort();
        match valid.first() {
            // Ambiguous: the first occurrence.
            Some(first) => *first,
            // Gap: the offset before the gap.
            None => {
                let before = self.offset_at(approx - Duration::hours(12));
                approx - Duration::seconds(before.into())
            }
        }
    }
}

/// How a TZID was understood.
#[derive(Debug, Clone)]
pub enum Resolution {
    Zone(Zone),
    /// Not a zone we could find: the caller treats the time as floating.
    Unknown,
}

/// Resolves a TZID string against IANA, prefixes, Windows names and, last, the
/// calendar's own VTIMEZONEs (`calendar_zone` builds one on demand: computing a
/// VTIMEZONE's transitions is the expensive part, and rarely needed).
pub fn resolve(
    tzid: &str,
    calendar_zone: impl FnOnce(&str) -> Option<Arc<CustomZone>>,
) -> Resolution {
    let name = tzid.trim().trim_matches('"');
    if let Some(tz) = iana(name) {
        return Resolution::Zone(Zone::Iana(tz));
    }
    if let Some(iana_name) = super::windows_zones::iana_for_windows(name)
        && let Some(tz) = iana(iana_name)
    {
        return Resolution::Zone(Zone::Iana(tz));
    }
    match calendar_zone(name) {
        Some(zone) => Resolution::Zone(Zone::Custom(zone)),
        None => Resolution::Unknown,
    }
}

/// An IANA zone by exact, case-insensitive or path-suffix name.
pub fn iana(name: &str) -> Option<Tz> {
    if let Ok(tz) = name.parse::<Tz>() {
        return Some(tz);
    }
    if let Ok(tz) = Tz::from_str_insensitive(name) {
        return Some(tz);
    }
    // "/mozilla.org/20050126_1/Europe/Paris": try the last 3, 2, then 1 segments.
    let segments: Vec<&str> = name.split('/').filter(|s| !s.is_empty()).collect();
    (1..=3.min(segments.len()))
        .rev()
        .filter(|n| *n < segments.len())
        .find_map(|n| {
            let candidate = segments[segments.len() - n..].join("/");
            candidate.parse::<Tz>().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn local(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
    }

    #[test]
    fn resolves_names_in_the_wild() {
        for (tzid, expected) in [
            ("Europe/Paris", "Europe/Paris"),
            ("europe/paris", "Europe/Paris"),
            ("/mozilla.org/20050126_1/Europe/Paris", "Europe/Paris"),
            (
                "/softwarestudio.org/Olson_20011030_5/America/New_York",
                "America/New_York",
            ),
            (
                "/citadel.org/20190914_1/America/Argentina/Buenos_Aires",
                "America/Argentina/Buenos_Aires",
            ),
            ("\"America/Chicago\"", "America/Chicago"),
        ] {
            match resolve(tzid, |_| None) {
                Resolution::Zone(z) => assert_eq!(z.name(), expected, "{tzid}"),
                Resolution::Unknown => panic!("{tzid} unresolved"),
            }
        }
        assert!(matches!(
            resolve("Mars/Olympus_Mons", |_| None),
            Resolution::Unknown
        ));
    }

    #[test]
    fn gap_and_overlap_follow_rfc5545() {
        let paris = Zone::Iana(chrono_tz::Europe::Paris);
        // 02:30 does not exist on 2026-03-29: read with +01:00 -> 01:30 UTC.
        assert_eq!(
            paris.to_utc(local(2026, 3, 29, 2, 30)),
            Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 0).unwrap()
        );
        // 02:30 happens twice on 2026-10-25: the first one, at +02:00.
        assert_eq!(
            paris.to_utc(local(2026, 10, 25, 2, 30)),
            Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0).unwrap()
        );
    }

    /// Outlook-style VTIMEZONE rules must give the same instants as the IANA zone.
    #[test]
    fn custom_zone_from_outlook_rules_matches_iana() {
        let zone = CustomZone::new(
            "W. Europe Standard Time",
            &[
                Observance {
                    start: local(1601, 1, 1, 3, 0),
                    offset_from: 7200,
                    offset_to: 3600,
                    rrule: Some("FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU".into()),
                    rdates: vec![],
                },
                Observance {
                    start: local(1601, 1, 1, 2, 0),
                    offset_from: 3600,
                    offset_to: 7200,
                    rrule: Some("FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU".into()),
                    rdates: vec![],
                },
            ],
        );
        let custom = Zone::Custom(Arc::new(zone));
        let iana = Zone::Iana(chrono_tz::Europe::Berlin);
        let mut t = local(2025, 1, 1, 0, 15);
        while t < local(2027, 1, 1, 0, 0) {
            assert_eq!(custom.to_utc(t), iana.to_utc(t), "local {t}");
            let utc = iana.to_utc(t);
            assert_eq!(custom.to_local(utc), iana.to_local(utc), "utc {utc}");
            t += Duration::minutes(7 * 60 + 13);
        }
    }
}
