//! What a calendar object resource must be before it is stored (RFC 4791 §4.1,
//! RFC 5545): every component with one and the same UID, every VEVENT with a
//! readable DTSTART, ends not before starts, and date-times every client can
//! read (no leap seconds) in the years the calendar holds.
//!
//! Checked on the parsed calendar, in the DAV layer, before any calendar or the
//! booking engine sees the object; each refusal names what is wrong and the
//! precondition of RFC 4791 §5.3.2.1 it breaks.

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc};
use chrono_tz::Tz;
use http::StatusCode;

use super::error::{Condition, DavError};
use crate::ical::parse::{self, IcalTime, Kind, ParseError, ParsedCalendar, PeriodEnd, RDate};
use crate::ical::zones::Zone;

/// The years a calendar's objects may use (`CALDAV:min-date-time` and
/// `max-date-time`, RFC 4791 §5.2.6-7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Years {
    pub first: i32,
    pub last: i32,
}

impl Years {
    /// Staff calendars: what every calendar library represents (year 0000 is
    /// valid iCalendar syntax, but most of them cannot).
    pub const ANY: Years = Years {
        first: 1,
        last: 9999,
    };
    /// The bookings calendar: the years a booking may take.
    pub const BOOKINGS: Years = Years {
        first: crate::model::limits::MIN_YEAR,
        last: crate::model::limits::MAX_YEAR,
    };

    /// `CALDAV:min-date-time`.
    pub fn min_date_time(self) -> String {
        format!("{:04}0101T000000Z", self.first)
    }

    /// `CALDAV:max-date-time`.
    pub fn max_date_time(self) -> String {
        format!("{:04}1231T235959Z", self.last)
    }
}

/// Why a calendar object resource is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ObjectError {
    #[error("{0}")]
    Syntax(String),
    /// What the parser found unusable: an event without a readable DTSTART
    /// (RFC 5545 requires one), an unreadable or absurd DURATION.
    #[error("{0}")]
    Unusable(String),
    #[error("the {component} has no UID: give every component a UID (RFC 5545 §3.8.4.7)")]
    MissingUid { component: &'static str },
    #[error(
        "one calendar object resource holds the components of one UID; this one has \"{0}\" and \"{1}\": store each in its own resource"
    )]
    SeveralUids(String, String),
    #[error("{component} \"{uid}\": {end_property} {end} is before DTSTART {start}")]
    EndBeforeStart {
        component: &'static str,
        uid: String,
        end_property: &'static str,
        start: String,
        end: String,
    },
    #[error(
        "{component} \"{uid}\": {property} {value} has second 60 (a leap second), which this server and most clients cannot store: use second 59 or the next minute"
    )]
    LeapSecond {
        component: &'static str,
        uid: String,
        property: &'static str,
        value: String,
    },
    #[error(
        "{component} \"{uid}\": {property} {value} is outside the years {}-{} this calendar holds (min-date-time {}, max-date-time {})",
        years.first, years.last, years.min_date_time(), years.max_date_time()
    )]
    OutOfRange {
        component: &'static str,
        uid: String,
        property: &'static str,
        value: String,
        year: i32,
        years: Years,
    },
}

impl ObjectError {
    /// The CalDAV precondition the object breaks (RFC 4791 §5.3.2.1).
    fn condition(&self) -> Condition {
        match self {
            ObjectError::SeveralUids(..) => Condition::ValidCalendarObjectResource,
            ObjectError::OutOfRange { year, years, .. } if *year < years.first => {
                Condition::MinDateTime
            }
            ObjectError::OutOfRange { .. } => Condition::MaxDateTime,
            ObjectError::Syntax(_)
            | ObjectError::Unusable(_)
            | ObjectError::MissingUid { .. }
            | ObjectError::EndBeforeStart { .. }
            | ObjectError::LeapSecond { .. } => Condition::ValidCalendarData,
        }
    }
}

impl From<ObjectError> for DavError {
    fn from(e: ObjectError) -> Self {
        DavError::condition(StatusCode::FORBIDDEN, e.condition(), e.to_string())
    }
}

/// Checks the text of a calendar object resource for a calendar holding
/// `years`; `zone` reads floating times and dates (the tenant's) when ends are
/// compared with starts.
pub fn object(text: &str, zone: Tz, years: Years) -> Result<(), ObjectError> {
    let syntax = |e: ParseError| ObjectError::Syntax(e.to_string());
    let events = parse::parse(text).map_err(syntax)?;
    if !events.errors.is_empty() {
        return Err(ObjectError::Unusable(events.errors.join("; ")));
    }
    let mut calendars = Vec::new();
    for kind in [Kind::Todo, Kind::Journal] {
        if events.other_components.iter().any(|c| c == kind.name()) {
            calendars.push((kind, parse::parse_as(text, kind).map_err(syntax)?));
        }
    }
    calendars.insert(0, (Kind::Event, events));
    let mut first_uid: Option<&str> = None;
    for (kind, calendar) in &calendars {
        for uid in components(*kind, calendar, zone, years)? {
            match first_uid {
                None => first_uid = Some(uid),
                Some(first) if first != uid => {
                    return Err(ObjectError::SeveralUids(first.to_owned(), uid.to_owned()));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Checks each `kind` component of `calendar`; yields their UIDs.
fn components(
    kind: Kind,
    calendar: &ParsedCalendar,
    zone: Tz,
    years: Years,
) -> Result<Vec<&str>, ObjectError> {
    let component = kind.name();
    let end_property = match kind {
        Kind::Todo => "DUE",
        Kind::Event | Kind::Journal => "DTEND",
    };
    let mut uids = Vec::with_capacity(calendar.events.len());
    for event in &calendar.events {
        let uid = event.uid.trim();
        if uid.is_empty() {
            return Err(ObjectError::MissingUid { component });
        }
        let check = |property: &'static str, t: &IcalTime| time(component, uid, property, t, years);
        check("DTSTART", &event.start)?;
        if let Some(end) = &event.end {
            check(end_property, end)?;
            if instant(end, zone) < instant(&event.start, zone) {
                return Err(ObjectError::EndBeforeStart {
                    component,
                    uid: uid.to_owned(),
                    end_property,
                    start: written(&event.start),
                    end: written(end),
                });
            }
        }
        if let Some(id) = &event.recurrence_id {
            check("RECURRENCE-ID", id)?;
        }
        for exdate in &event.exdates {
            check("EXDATE", exdate)?;
        }
        for rdate in &event.rdates {
            match rdate {
                RDate::At(t) | RDate::Period(t, PeriodEnd::Duration(_)) => check("RDATE", t)?,
                RDate::Period(t, PeriodEnd::At(end)) => {
                    check("RDATE", t)?;
                    check("RDATE", end)?;
                }
            }
        }
        uids.push(uid);
    }
    Ok(uids)
}

/// Refuses a value no client can read back (a leap second), or outside `years`.
fn time(
    component: &'static str,
    uid: &str,
    property: &'static str,
    t: &IcalTime,
    years: Years,
) -> Result<(), ObjectError> {
    let (year, leap) = match t {
        IcalTime::Date(d) => (d.year(), false),
        IcalTime::Floating(n) | IcalTime::Zoned(n, _) => (n.year(), is_leap(n)),
        IcalTime::Utc(u) => (u.year(), is_leap(&u.naive_utc())),
    };
    if leap {
        return Err(ObjectError::LeapSecond {
            component,
            uid: uid.to_owned(),
            property,
            value: written(t),
        });
    }
    if !(years.first..=years.last).contains(&year) {
        return Err(ObjectError::OutOfRange {
            component,
            uid: uid.to_owned(),
            property,
            value: written(t),
            year,
            years,
        });
    }
    Ok(())
}

/// chrono keeps second 60 as second 59 with a nanosecond count of a second or more.
fn is_leap(t: &NaiveDateTime) -> bool {
    t.nanosecond() >= 1_000_000_000
}

/// The instant a value stands for; floating times and dates in `zone`.
fn instant(t: &IcalTime, zone: Tz) -> DateTime<Utc> {
    match t {
        IcalTime::Date(d) => crate::model::start_of_day(*d, zone),
        IcalTime::Floating(n) => Zone::Iana(zone).to_utc(*n),
        IcalTime::Zoned(n, z) => z.to_utc(*n),
        IcalTime::Utc(u) => *u,
    }
}

/// A value as iCalendar writes it, for messages.
fn written(t: &IcalTime) -> String {
    match t {
        IcalTime::Date(d) => d.format("%Y%m%d").to_string(),
        IcalTime::Floating(n) | IcalTime::Zoned(n, _) => n.format("%Y%m%dT%H%M%S").to_string(),
        IcalTime::Utc(u) => u.format("%Y%m%dT%H%M%SZ").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(body: &str) -> String {
        format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//T//EN\r\n{body}END:VCALENDAR\r\n")
    }

    fn check(body: &str) -> Result<(), ObjectError> {
        object(&event(body), chrono_tz::Europe::Paris, Years::ANY)
    }

    const OK: &str = "BEGIN:VEVENT\r\nUID:a\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20261201T100000Z\r\nDTEND:20261201T110000Z\r\nEND:VEVENT\r\n";

    #[test]
    fn accepts_a_plain_event_and_a_task_without_due() {
        assert_eq!(check(OK), Ok(()));
        assert_eq!(
            check("BEGIN:VTODO\r\nUID:t\r\nDTSTART;VALUE=DATE:20261201\r\nEND:VTODO\r\n"),
            Ok(())
        );
    }

    #[test]
    fn names_what_is_wrong() {
        let no_uid = OK.replace("UID:a\r\n", "");
        assert_eq!(
            check(&no_uid),
            Err(ObjectError::MissingUid {
                component: "VEVENT"
            })
        );
        let two = format!("{OK}{}", OK.replace("UID:a", "UID:b"));
        assert_eq!(
            check(&two),
            Err(ObjectError::SeveralUids("a".into(), "b".into()))
        );
        let backwards = OK.replace("DTEND:20261201T110000Z", "DTEND:20261201T090000Z");
        let e = check(&backwards).unwrap_err();
        assert_eq!(e.condition(), Condition::ValidCalendarData);
        assert!(e.to_string().contains("DTEND 20261201T090000Z"), "{e}");
        let leap = OK.replace("DTSTART:20261201T100000Z", "DTSTART:20261201T095960Z");
        let e = check(&leap).unwrap_err();
        assert!(matches!(e, ObjectError::LeapSecond { .. }), "{e}");
        let year0 = OK
            .replace("DTSTART:20261201T100000Z", "DTSTART:00001201T100000Z")
            .replace("DTEND:20261201T110000Z", "DTEND:00001201T110000Z");
        let e = check(&year0).unwrap_err();
        assert_eq!(e.condition(), Condition::MinDateTime, "{e}");
        let e = object(
            &event(OK),
            chrono_tz::Europe::Paris,
            Years {
                first: 1900,
                last: 2000,
            },
        )
        .unwrap_err();
        assert_eq!(e.condition(), Condition::MaxDateTime, "{e}");
        assert!(e.to_string().contains("years 1900-2000"), "{e}");
    }

    #[test]
    fn an_event_without_a_readable_start_is_refused() {
        let bad = OK.replace("DTSTART:20261201T100000Z", "DTSTART:20261301T100000Z");
        let e = check(&format!(
            "{OK}{}",
            bad.replace("UID:a", "UID:a\r\nRECURRENCE-ID:20261208T100000Z")
        ))
        .unwrap_err();
        assert!(matches!(e, ObjectError::Unusable(_)), "{e}");
        assert!(e.to_string().contains("20261301T100000Z"), "{e}");
        let e = check(&OK.replace("DTSTART:20261201T100000Z\r\n", "")).unwrap_err();
        assert!(matches!(e, ObjectError::Unusable(_)), "{e}");
    }

    #[test]
    fn a_task_due_before_its_start_is_refused() {
        let e = check("BEGIN:VTODO\r\nUID:t\r\nDTSTART:20261201T100000Z\r\nDUE:20261130T100000Z\r\nEND:VTODO\r\n")
            .unwrap_err();
        assert!(e.to_string().contains("DUE 20261130T100000Z"), "{e}");
    }
}
