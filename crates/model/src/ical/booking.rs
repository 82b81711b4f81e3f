//! Bookings as iCalendar, both ways: the one writer of a booking's VEVENT, used
//! by the CalDAV object of a booking, the .ics feeds and iTIP messages, so each
//! shows a booking the same way; and the one reader of a VEVENT a calendar
//! client writes into the bookings calendar ([`patch_from_event`]).

use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};

use super::{ContentWriter, vtimezone};
use crate::ical;
use crate::ical::parse::{EventStatus, IcalTime, VEvent};
use crate::ical::zones::Zone;
use crate::model::{Booking, BookingPatch, BookingStatus, BookingTime, Span};

/// Identifies this software in PRODID.
pub const PRODID: &str = concat!("-//calgate//calgate ", env!("CARGO_PKG_VERSION"), "//EN");

/// Each zone a timed booking is written in, with the time it must cover; the
/// tenant's own zone (named by X-WR-TIMEZONE) covers every booking. Derived from the
/// bookings alone, so equal inputs render equal bytes (the ETag relies on it).
pub fn zones_used(tenant_tz: Tz, bookings: &[&Booking]) -> Vec<(Tz, Span)> {
    let mut zones: Vec<(Tz, Span)> = Vec::new();
    let mut cover = |tz: Tz, span: Span| match zones.iter_mut().find(|(z, _)| *z == tz) {
        Some((_, s)) => *s = Span::new(s.start.min(span.start), s.end.max(span.end)),
        None => zones.push((tz, span)),
    };
    let all = bookings
        .iter()
        .map(|b| b.span())
        .reduce(|a, b| Span::new(a.start.min(b.start), a.end.max(b.end)))
        .unwrap_or(Span::new(0, 0));
    cover(tenant_tz, all);
    for b in bookings {
        if !b.is_all_day() {
            cover(b.time_zone, b.span());
        }
    }
    zones
}

/// One booking as a complete VCALENDAR with its VTIMEZONE: the CalDAV object of a
/// booking, identical to its event in a full-privacy feed.
pub fn render_booking(tenant_zone: Tz, booking: &Booking) -> String {
    let mut w = ContentWriter::with_capacity(2048);
    w.begin("VCALENDAR");
    w.text("PRODID", &[], PRODID);
    w.raw("VERSION", &[], "2.0");
    w.raw("CALSCALE", &[], "GREGORIAN");
    for (tz, span) in zones_used(tenant_zone, &[booking]) {
        if tz == booking.time_zone && !booking.is_all_day() {
            let at = |ms: i64| Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
            vtimezone::write_vtimezone(&mut w, tz, at(span.start), at(span.end));
        }
    }
    // What a CalDAV client wrote beyond the booking's own fields stays after an
    // API change (its alarms, attendees, X- properties).
    write_event(&mut w, None, booking, booking.calendar_text.as_deref());
    w.end("VCALENDAR");
    w.finish()
}

/// Properties a booking's VEVENT takes from the booking itself; a client's values
/// for them give way to the booking's.
const BOOKING_OWNED: [&str; 17] = [
    "UID",
    "DTSTAMP",
    "CREATED",
    "LAST-MODIFIED",
    "SEQUENCE",
    "DTSTART",
    "DTEND",
    "DURATION",
    "STATUS",
    "TRANSP",
    "SUMMARY",
    "LOCATION",
    "DESCRIPTION",
    "CLASS",
    "RRULE",
    "RDATE",
    "EXDATE",
];

/// Writes a booking's VEVENT; with `opaque_uids` (the feed name) only busy time,
/// under a UID from which nothing can be learnt. `client_text`, the iCalendar a
/// CalDAV client last wrote for it, adds that VEVENT's other properties and
/// sub-components.
pub fn write_event(
    w: &mut ContentWriter,
    opaque_uids: Option<&str>,
    b: &Booking,
    client_text: Option<&str>,
) {
    let busy_only = opaque_uids.is_some();
    w.begin("VEVENT");
    if let Some(feed_name) = opaque_uids {
        // An opaque UID: the same event across renders, nothing learnt from it.
        let digest = Sha256::digest(format!("{}\0{}\0{}", b.tenant, feed_name, b.uid));
        w.text(
            "UID",
            &[],
            &format!("{}@calgate", hex::encode(&digest[..16])),
        );
    } else {
        w.text("UID", &[], &b.uid);
    }
    w.raw("DTSTAMP", &[], &ical::format_utc(b.updated));
    w.raw("CREATED", &[], &ical::format_utc(b.created));
    w.raw("LAST-MODIFIED", &[], &ical::format_utc(b.updated));
    w.raw("SEQUENCE", &[], &b.sequence.to_string());
    match &b.time {
        BookingTime::AllDay { start, end } => {
            w.raw("DTSTART", &[("VALUE", "DATE")], &ical::format_date(*start));
            w.raw("DTEND", &[("VALUE", "DATE")], &ical::format_date(*end));
        }
        BookingTime::Timed { start, end } => {
            for (name, t) in [("DTSTART", start), ("DTEND", end)] {
                match ical::zoned_value(t.with_timezone(&Utc), b.time_zone) {
                    (Some(tzid), value) => w.raw(name, &[("TZID", tzid)], &value),
                    (None, value) => w.raw(name, &[], &value),
                }
            }
        }
    }
    let status = match b.status {
        BookingStatus::Confirmed => "CONFIRMED",
        BookingStatus::Tentative => "TENTATIVE",
        BookingStatus::Cancelled => "CANCELLED",
    };
    w.raw("STATUS", &[], status);
    let transparent = b.status == BookingStatus::Cancelled;
    w.raw(
        "TRANSP",
        &[],
        if transparent { "TRANSPARENT" } else { "OPAQUE" },
    );
    if busy_only {
        w.text("SUMMARY", &[], "Busy");
        w.raw("CLASS", &[], "PRIVATE");
    } else {
        w.text("SUMMARY", &[], &b.title);
        if let Some(location) = &b.location {
            w.text("LOCATION", &[], location);
        }
        let description = describe(b);
        if !description.is_empty() {
            w.text("DESCRIPTION", &[], &description);
        }
    }
    if let Some(text) = client_text {
        write_client_extras(w, text);
    }
    w.end("VEVENT");
}

fn write_client_extras(w: &mut ContentWriter, text: &str) {
    let unfolded = ical::parse::unfolded(text);
    let Ok(cal) = ical::parse::read(&unfolded) else {
        return;
    };
    let Some(event) = cal.components.iter().find(|c| c.name.as_str() == "VEVENT") else {
        return;
    };
    for p in &event.properties {
        if !BOOKING_OWNED.contains(&p.name.as_str()) {
            w.parsed_property(p);
        }
    }
    for sub in &event.components {
        w.parsed_component(sub);
    }
}

/// The human-readable DESCRIPTION: service and customer first, then notes.
pub fn describe(b: &Booking) -> String {
    let mut lines = Vec::new();
    if let Some(service) = &b.service {
        lines.push(format!("Service: {service}"));
    }
    if let Some(c) = &b.customer {
        for (label, value) in [
            ("Customer", &c.name),
            ("Email", &c.email),
            ("Phone", &c.phone),
        ] {
            if let Some(v) = value {
                lines.push(format!("{label}: {v}"));
            }
        }
    }
    if let Some(notes) = &b.notes {
        if !lines.is_empty() {
            lines.push(String::new());
        }
        lines.push(notes.clone());
    }
    lines.join("\n")
}
/// Why a VEVENT cannot be a booking.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("an all-day DTSTART needs an all-day DTEND")]
    AllDayEndNotDate,
    #[error("DTSTART is not a date-time")]
    StartNotDateTime,
    #[error("DTEND is not a date-time")]
    EndNotDateTime,
}

fn rfc3339(t: DateTime<Utc>, zone: Option<Tz>) -> String {
    match zone {
        Some(tz) => t
            .with_timezone(&tz)
            .to_rfc3339_opts(SecondsFormat::AutoSi, false),
        None => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    }
}

/// The instant and, when the value names one, the IANA zone of a DATE-TIME.
fn instant(t: &IcalTime, tenant_zone: Tz) -> Option<(DateTime<Utc>, Option<Tz>)> {
    match t {
        IcalTime::Date(_) => None,
        IcalTime::Utc(u) => Some((*u, None)),
        IcalTime::Floating(n) => Some((Zone::Iana(tenant_zone).to_utc(*n), Some(tenant_zone))),
        IcalTime::Zoned(n, zone) => {
            let tz = match zone {
                Zone::Iana(tz) => Some(*tz),
                Zone::Custom(_) => None,
            };
            Some((zone.to_utc(*n), tz))
        }
    }
}

/// The booking fields a VEVENT written by a calendar client states (`text` is
/// the client's object, kept to serve back as written). Floating times are in
/// `tenant_zone`; a DESCRIPTION that is just our own rendering of `existing`
/// says nothing new.
pub fn patch_from_event(
    event: &VEvent,
    tenant_zone: Tz,
    existing: Option<&Booking>,
    text: &str,
) -> Result<BookingPatch, EventError> {
    let tz = tenant_zone;
    let mut patch = BookingPatch {
        uid: Some(event.uid.clone()),
        calendar_text: Some(text.to_owned()),
        title: Some(
            event
                .summary
                .clone()
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| "Untitled booking".to_owned()),
        ),
        location: Some(event.location.clone()),
        status: Some(match event.status {
            Some(EventStatus::Cancelled) => BookingStatus::Cancelled,
            Some(EventStatus::Tentative) => BookingStatus::Tentative,
            _ => BookingStatus::Confirmed,
        }),
        ..BookingPatch::default()
    };
    // A DESCRIPTION that is just our own rendering (customer, service, notes) sent
    // back by the client says nothing new; anything else is the client's notes.
    let ours = existing.map(describe);
    if event.description.as_deref() != ours.as_deref() {
        patch.notes = Some(event.description.clone());
    }
    match &event.start {
        IcalTime::Date(d) => {
            let end = match (&event.end, event.duration) {
                (Some(IcalTime::Date(e)), _) => *e,
                (None, Some(dur)) => *d + Duration::days(dur.num_days().max(1)),
                (None, None) => *d + Duration::days(1),
                (Some(_), _) => {
                    return Err(EventError::AllDayEndNotDate);
                }
            };
            patch.all_day = Some(true);
            patch.start = Some(d.to_string());
            patch.end = Some(end.to_string());
        }
        start => {
            let (begin, zone) = instant(start, tz).ok_or(EventError::StartNotDateTime)?;
            let finish = match (&event.end, event.duration) {
                (Some(end), _) => instant(end, tz)
                    .map(|(t, _)| t)
                    .ok_or(EventError::EndNotDateTime)?,
                (None, Some(dur)) => begin + dur,
                (None, None) => begin,
            };
            patch.all_day = Some(false);
            patch.time_zone = Some(zone.unwrap_or(tz));
            patch.start = Some(rfc3339(begin, zone));
            patch.end = Some(rfc3339(finish, zone));
        }
    }
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(lines: &str) -> VEvent {
        let text = format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:u1\r\nDTSTAMP:20260101T000000Z\r\n{lines}END:VEVENT\r\nEND:VCALENDAR\r\n"
        );
        let mut parsed = crate::ical::parse::parse(&text).expect("parses");
        parsed.events.remove(0)
    }

    #[test]
    fn a_zoned_event_keeps_its_zone_and_a_missing_title_gets_one() {
        let ev = event(
            "DTSTART;TZID=Europe/Paris:20260302T100000\r\nDTEND;TZID=Europe/Paris:20260302T110000\r\nSTATUS:TENTATIVE\r\n",
        );
        let patch = patch_from_event(&ev, chrono_tz::UTC, None, "text").expect("a booking");
        assert_eq!(patch.start.as_deref(), Some("2026-03-02T10:00:00+01:00"));
        assert_eq!(patch.end.as_deref(), Some("2026-03-02T11:00:00+01:00"));
        assert_eq!(patch.time_zone, Some(chrono_tz::Europe::Paris));
        assert_eq!(patch.all_day, Some(false));
        assert_eq!(patch.title.as_deref(), Some("Untitled booking"));
        assert_eq!(patch.status, Some(BookingStatus::Tentative));
        assert_eq!(patch.uid.as_deref(), Some("u1"));
        assert_eq!(patch.calendar_text.as_deref(), Some("text"));
    }

    #[test]
    fn floating_times_are_in_the_tenant_zone_and_a_duration_gives_the_end() {
        let ev = event("SUMMARY:Cut\r\nDTSTART:20260302T100000\r\nDURATION:PT45M\r\n");
        let patch = patch_from_event(&ev, chrono_tz::Europe::Berlin, None, "").expect("a booking");
        assert_eq!(patch.start.as_deref(), Some("2026-03-02T10:00:00+01:00"));
        assert_eq!(patch.end.as_deref(), Some("2026-03-02T10:45:00+01:00"));
        assert_eq!(patch.title.as_deref(), Some("Cut"));
    }

    #[test]
    fn all_day_events_need_an_all_day_end() {
        let ev = event("DTSTART;VALUE=DATE:20260302\r\n");
        let patch = patch_from_event(&ev, chrono_tz::UTC, None, "").expect("a booking");
        assert_eq!(patch.all_day, Some(true));
        assert_eq!(patch.end.as_deref(), Some("2026-03-03"));
        let ev = event("DTSTART;VALUE=DATE:20260302\r\nDTEND:20260303T100000Z\r\n");
        assert_eq!(
            patch_from_event(&ev, chrono_tz::UTC, None, "").err(),
            Some(EventError::AllDayEndNotDate)
        );
    }
}
