//! iCalendar (RFC 5545) building blocks shared by feeds, CalDAV and provider sync.
//!
//! - [`booking`]: a booking as iCalendar (its VEVENT, its CalDAV object, PRODID).
//! - [`parse`]: iCalendar text to typed events (via the `icalendar` crate's parser).
//! - [`zones`]: TZIDs in the wild (IANA, prefixed, Windows, VTIMEZONE rules).
//! - [`expand`]: recurrence expansion into concrete occurrences.
//! - [`matching`]: RFC 4791 time-range tests for tasks, journals and alarms.
//! - [`writer`]: content lines with escaping and folding.
//! - [`vtimezone`]: VTIMEZONE components from the IANA database.
//! - [`freebusy`]: VFREEBUSY components from merged busy blocks.
//! - [`itip`]: scheduling (RFC 5546/6638) on stored objects: participants,
//!   Schedule-Tags, SCHEDULE-STATUS, REQUEST/REPLY/CANCEL messages.
//! - value formatting helpers below.
//!
//! Nothing here knows about bookings, HTTP or storage.

pub mod booking;
pub mod expand;
pub mod freebusy;
pub mod itip;
pub mod matching;
pub mod merge;
pub mod parse;
pub mod vtimezone;
pub mod windows_zones;
pub mod writer;
pub mod zones;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

pub use writer::ContentWriter;

/// `20261201T093000Z`
pub fn format_utc(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// `20261201T103000` (local or floating time)
pub fn format_local(t: NaiveDateTime) -> String {
    t.format("%Y%m%dT%H%M%S").to_string()
}

/// `20261201`
pub fn format_date(d: NaiveDate) -> String {
    d.format("%Y%m%d").to_string()
}

/// An instant as a DATE-TIME value in `tz`: `Some(TZID)` and the local time when the
/// local time names the instant unambiguously, else UTC. RFC 5545 reads an ambiguous
/// local time (the repeated hour when clocks go back) as its first occurrence, so an
/// instant in the second occurrence can only be written in UTC.
pub fn zoned_value(t: DateTime<Utc>, tz: Tz) -> (Option<&'static str>, String) {
    let local = t.with_timezone(&tz).naive_local();
    match tz.from_local_datetime(&local).earliest() {
        Some(first) if first.with_timezone(&Utc) == t => (Some(tz.name()), format_local(local)),
        _ => (None, format_utc(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoned_values_use_utc_for_the_repeated_hour() {
        let paris = chrono_tz::Europe::Paris;
        // 2026-10-25 02:30 happens twice in Paris: 00:30 UTC and 01:30 UTC.
        let first = Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0).unwrap();
        let second = Utc.with_ymd_and_hms(2026, 10, 25, 1, 30, 0).unwrap();
        assert_eq!(
            zoned_value(first, paris),
            (Some("Europe/Paris"), "20261025T023000".to_owned())
        );
        assert_eq!(
            zoned_value(second, paris),
            (None, "20261025T013000Z".to_owned())
        );
    }
}
