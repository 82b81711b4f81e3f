//! VTIMEZONE components generated from the IANA database (chrono-tz).
//!
//! chrono-tz does not expose its transition table, so transitions are found by
//! sampling the UTC offset once a day and bisecting to the second where it changes.
//! Each transition becomes its own STANDARD/DAYLIGHT observance with an explicit
//! DTSTART: valid RFC 5545 that every client reads, exact for the covered years.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::{OffsetComponents, OffsetName, Tz};

use super::format_local;
use super::writer::ContentWriter;

/// The zone's state at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ZoneState {
    offset_secs: i32,
    dst: bool,
    name: String,
}

fn state_at(tz: Tz, t: DateTime<Utc>) -> ZoneState {
    let offset = tz.offset_from_utc_datetime(&t.naive_utc());
    let offset_secs = offset.fix().local_minus_utc();
    ZoneState {
        offset_secs,
        dst: !offset.dst_offset().is_zero(),
        name: offset
            .abbreviation()
            .map(str::to_owned)
            .unwrap_or_else(|| format_offset(offset_secs)),
    }
}

/// A change of offset (or of name/DST flag) at `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Transition {
    at: DateTime<Utc>,
    from: ZoneState,
    to: ZoneState,
}

fn transitions(tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Transition> {
    let mut found = Vec::new();
    let mut t = from;
    let mut state = state_at(tz, t);
    while t < to {
        let next = t + Duration::days(1);
        let next_state = state_at(tz, next);
        if next_state != state {
            // Bisect (t, next] for the first whole second in the new state.
            let (mut lo, mut hi) = (t.timestamp(), next.timestamp());
            let at = |secs: i64| Utc.timestamp_opt(secs, 0).single().unwrap_or(t);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if state_at(tz, at(mid)) == state {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            let hi = at(hi);
            let to_state = state_at(tz, hi);
            found.push(Transition {
                at: hi,
                from: state,
                to: to_state.clone(),
            });
            state = to_state;
        }
        t = next;
        // Several changes within one day are caught one per step from `hi` on.
        if let Some(last) = found.last()
            && last.at > t
        {
            t = last.at;
        }
    }
    found
}

/// `+HHMM` or `+HHMMSS`, as UTC-OFFSET values are written.
pub fn format_offset(secs: i32) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let abs = secs.unsigned_abs();
    let (h, m, s) = (abs / 3600, abs / 60 % 60, abs % 60);
    if s == 0 {
        format!("{sign}{h:02}{m:02}")
    } else {
        format!("{sign}{h:02}{m:02}{s:02}")
    }
}

/// Writes a VTIMEZONE for `tz` valid from January 1st of `from`'s year through `to`.
pub fn write_vtimezone(w: &mut ContentWriter, tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) {
    let year_start = NaiveDate::from_ymd_opt(from.year(), 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|n| Utc.from_utc_datetime(&n))
        .unwrap_or(from);
    let initial = state_at(tz, year_start);
    w.begin("VTIMEZONE");
    w.text("TZID", &[], tz.name());
    let mut observance = |kind_dst: bool, start_local: String, from: &ZoneState, to: &ZoneState| {
        let kind = if kind_dst { "DAYLIGHT" } else { "STANDARD" };
        w.begin(kind);
        w.raw("DTSTART", &[], &start_local);
        w.raw("TZOFFSETFROM", &[], &format_offset(from.offset_secs));
        w.raw("TZOFFSETTO", &[], &format_offset(to.offset_secs));
        w.text("TZNAME", &[], &to.name);
        w.end(kind);
    };
    let initial_local = year_start + Duration::seconds(initial.offset_secs.into());
    observance(
        initial.dst,
        format_local(initial_local.naive_utc()),
        &initial,
        &initial,
    );
    for tr in transitions(tz, year_start, to) {
        // DTSTART of an observance is the local time just before the change.
        let local = tr.at + Duration::seconds(tr.from.offset_secs.into());
        observance(tr.to.dst, format_local(local.naive_utc()), &tr.from, &tr.to);
    }
    w.end("VTIMEZONE");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paris_2026_has_its_two_transitions() {
        let from = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let to = Utc.with_ymd_and_hms(2026, 12, 31, 0, 0, 0).unwrap();
        let found = transitions(chrono_tz::Europe::Paris, from, to);
        assert_eq!(found.len(), 2);
        // Last Sunday of March, 01:00 UTC; last Sunday of October, 01:00 UTC.
        assert_eq!(
            found[0].at,
            Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap()
        );
        assert_eq!(found[0].to.offset_secs, 7200);
        assert!(found[0].to.dst);
        assert_eq!(
            found[1].at,
            Utc.with_ymd_and_hms(2026, 10, 25, 1, 0, 0).unwrap()
        );
    }

    #[test]
    fn writes_observances_with_local_dtstart() {
        let mut w = ContentWriter::default();
        let from = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        let to = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        write_vtimezone(&mut w, chrono_tz::Europe::Paris, from, to);
        let text = w.finish();
        assert!(text.starts_with("BEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\n"));
        assert!(text.contains(
            "BEGIN:DAYLIGHT\r\nDTSTART:20260329T020000\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nTZNAME:CEST\r\nEND:DAYLIGHT"
        ));
        assert!(text.contains("DTSTART:20261025T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100"));
        assert!(!text.contains("UID") && !text.contains("DTSTAMP"));
    }

    #[test]
    fn zone_without_dst_has_one_observance() {
        let mut w = ContentWriter::default();
        let from = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        write_vtimezone(
            &mut w,
            chrono_tz::Asia::Kolkata,
            from,
            from + Duration::days(400),
        );
        let text = w.finish();
        assert_eq!(text.matches("BEGIN:STANDARD").count(), 1);
        assert!(text.contains("TZOFFSETTO:+0530"));
    }
}
