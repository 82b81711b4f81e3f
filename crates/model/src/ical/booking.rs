//! Bookings as iCalendar: the one writer of a booking's VEVENT, used by the
//! CalDAV object of a booking, the .ics feeds and iTIP messages, so each shows a
//! booking the same way.

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};

use super::{ContentWriter, vtimezone};
use crate::ical;
use crate::model::{Booking, BookingStatus, BookingTime, Span};

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
