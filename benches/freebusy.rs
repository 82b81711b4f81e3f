//! Free/busy engine benchmark (issue 3): one tenant holding 10,000 iCalendar objects
//! (1,500 of them recurring) in 3 calendar sources plus 500 bookings, asked for
//! free/busy over one-month windows, in process and over HTTP, and re-indexed.
//!
//! Run with `cargo bench --bench freebusy`. The workload:
//! 1. a fresh sled store in a temporary directory (`TMPDIR` picks the disk), the
//!    gateway started in process on `127.0.0.1:0`, tenant `bench` in Europe/Paris;
//! 2. 3 sources (`staff-ana`: Apple/CalDAV style, `staff-ben`: Outlook style with
//!    Windows zone names, VTIMEZONEs and X-MICROSOFT-CDO-BUSYSTATUS,
//!    `google-owner`: Google style, UTC singles) and 10,000 objects written with
//!    `CalendarService::put_object`, 32 in flight (durable writes, group-committed):
//!    8,500 single events in business hours from ~11 months ago to ~22 months ahead
//!    and 1,500 series (weekly, daily stand-ups with COUNT/UNTIL, bi-weekly, monthly
//!    BYSETPOS=-1, EXDATEs + a moved instance, all-day, OOF/tentative);
//! 3. 500 bookings over HTTP (`allow_conflict`), so free/busy merges both kinds;
//! 4. `freebusy::busy_blocks` for 1,000 random one-month windows inside the horizon
//!    (after a warm-up pass), without and with contributors, plus a breakdown of
//!    where a query spends its time;
//! 5. `GET /api/v1/tenants/bench/freebusy` for 500 random one-month windows,
//!    sequential, after a warm-up pass;
//! 6. `CalendarService::rebuild` of the whole tenant and of its recurring objects,
//!    once right after the load (no bookings yet) and once with the bookings present
//!    (conflict detection runs too), each stopped after 40 s; with a breakdown (read,
//!    parse with and without Outlook's VTIMEZONE, expand, durable writes).
//!
//! Client and server share one tokio runtime and the machine's cores. Numbers are
//! for comparing revisions on the same machine. A watchdog thread fails the run
//! (exit status 2) if no step makes progress for 60 s.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use calgate::app::App;
use calgate::config::Config;
use calgate::freebusy;
use calgate::ical::expand::{ExpandOptions, expand};
use calgate::model::{BusyKind, BusySpan, CalendarObject, Source, Span};
use calgate::store::{Precondition, keys, time_index};
use chrono::{
    DateTime, Datelike, Days, FixedOffset, Months, NaiveDate, NaiveDateTime, TimeZone, Utc, Weekday,
};
use chrono_tz::Europe::Paris;
use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};
use support::{Rng, cpu_time, machine, ms, percentile, sorted, tick};
use tokio::task::JoinSet;

const TENANT: &str = "bench";
const API_KEY: &str = "bench-api-key-0c5d7e42";
const OBJECTS: usize = 10_000;
const RECURRING: usize = 1_500;
const BOOKINGS: usize = 500;
/// Writes in flight while loading.
const CONCURRENCY: usize = 32;
/// A run that makes no progress for this long is declared stalled.
const STALL_AFTER: Duration = Duration::from_secs(60);
const INPROC_QUERIES: usize = 1_000;
const HTTP_QUERIES: usize = 500;
/// Small-window HTTP requests, to show the transport's own cost.
const HTTP_SMALL_QUERIES: usize = 200;
/// Objects re-written one by one (and then concurrently) in the rebuild breakdown.
const WRITE_PROBE: usize = 500;
/// A rebuild still running after this long is stopped and reported as such.
const REBUILD_LIMIT: Duration = Duration::from_secs(40);

const TARGET_INPROC_P50: Duration = Duration::from_millis(1);
const TARGET_HTTP_P50: Duration = Duration::from_millis(3);
const TARGET_REBUILD: Duration = Duration::from_secs(2);

/// (id, name); indexes below.
const SOURCES: [(&str, &str); 3] = [
    ("staff-ana", "Ana (Apple Calendar over CalDAV)"),
    ("staff-ben", "Ben (Outlook)"),
    ("google-owner", "Owner (Google Calendar)"),
];
const BEN: usize = 1;
const GOOGLE: usize = 2;

// ---------------------------------------------------------------------------
// The calendar data.

/// A zone as events name it; `tzid: None` is UTC (`...Z`).
#[derive(Clone, Copy)]
struct Zone {
    tzid: Option<&'static str>,
    /// The VTIMEZONE an Outlook export carries along.
    vtimezone: Option<&'static str>,
}

const UTC: Zone = Zone {
    tzid: None,
    vtimezone: None,
};
const PARIS: Zone = Zone {
    tzid: Some("Europe/Paris"),
    vtimezone: None,
};
const NEW_YORK: Zone = Zone {
    tzid: Some("America/New_York"),
    vtimezone: None,
};
const W_EUROPE: Zone = Zone {
    tzid: Some("W. Europe Standard Time"),
    vtimezone: Some(concat!(
        "BEGIN:VTIMEZONE\r\nTZID:W. Europe Standard Time\r\n",
        "BEGIN:STANDARD\r\nDTSTART:16010101T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\n",
        "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10\r\nEND:STANDARD\r\n",
        "BEGIN:DAYLIGHT\r\nDTSTART:16010101T020000\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\n",
        "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3\r\nEND:DAYLIGHT\r\n",
        "END:VTIMEZONE\r\n"
    )),
};
const EASTERN: Zone = Zone {
    tzid: Some("Eastern Standard Time"),
    vtimezone: Some(concat!(
        "BEGIN:VTIMEZONE\r\nTZID:Eastern Standard Time\r\n",
        "BEGIN:STANDARD\r\nDTSTART:16010101T020000\r\nTZOFFSETFROM:-0400\r\nTZOFFSETTO:-0500\r\n",
        "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=1SU;BYMONTH=11\r\nEND:STANDARD\r\n",
        "BEGIN:DAYLIGHT\r\nDTSTART:16010101T020000\r\nTZOFFSETFROM:-0500\r\nTZOFFSETTO:-0400\r\n",
        "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=2SU;BYMONTH=3\r\nEND:DAYLIGHT\r\n",
        "END:VTIMEZONE\r\n"
    )),
};

fn zone_for(rng: &mut Rng, source: usize, recurring: bool) -> Zone {
    let r = rng.below(100);
    match source {
        BEN => match r {
            0..80 => W_EUROPE,
            80..90 => EASTERN,
            _ => PARIS,
        },
        GOOGLE if !recurring => match r {
            0..60 => UTC,
            60..85 => PARIS,
            _ => NEW_YORK,
        },
        GOOGLE => match r {
            0..70 => PARIS,
            _ => NEW_YORK,
        },
        _ => match r {
            0..85 => PARIS,
            _ => NEW_YORK,
        },
    }
}

fn stamp(t: NaiveDateTime) -> String {
    t.format("%Y%m%dT%H%M%S").to_string()
}

fn dt_line(prop: &str, zone: Zone, times: &[NaiveDateTime]) -> String {
    let z = if zone.tzid.is_none() { "Z" } else { "" };
    let values: Vec<String> = times.iter().map(|t| format!("{}{z}", stamp(*t))).collect();
    match zone.tzid {
        None => format!("{prop}:{}", values.join(",")),
        Some(tz) => format!("{prop};TZID={tz}:{}", values.join(",")),
    }
}

fn date_line(prop: &str, d: NaiveDate) -> String {
    format!("{prop};VALUE=DATE:{}", d.format("%Y%m%d"))
}

/// `UNTIL=` the end of day `last`: mostly the UTC form RFC 5545 asks for, sometimes
/// the DATE form seen in the wild.
fn until(rng: &mut Rng, last: NaiveDate) -> String {
    if rng.below(5) == 0 {
        format!("UNTIL={}", last.format("%Y%m%d"))
    } else {
        format!("UNTIL={}T225959Z", last.format("%Y%m%d"))
    }
}

struct Event(String);

impl Event {
    fn new(uid: &str, summary: &str) -> Event {
        let mut e = Event(String::with_capacity(640));
        e.line("BEGIN:VEVENT");
        e.line(format!("UID:{uid}"));
        e.line("DTSTAMP:20260105T101500Z");
        e.line(format!("SUMMARY:{summary}"));
        e
    }

    fn line(&mut self, line: impl AsRef<str>) {
        self.0.push_str(line.as_ref());
        self.0.push_str("\r\n");
    }

    fn end(mut self) -> String {
        self.line("END:VEVENT");
        self.0
    }
}

fn calendar(source: usize, zone: Zone, events: &[String]) -> String {
    let mut out = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n");
    out.push_str(match source {
        BEN => "PRODID:-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN\r\nMETHOD:PUBLISH\r\n",
        GOOGLE => {
            "PRODID:-//Google Inc//Google Calendar 70.9054//EN\r\nCALSCALE:GREGORIAN\r\n\
             X-WR-TIMEZONE:Europe/Paris\r\n"
        }
        _ => "PRODID:-//Apple Inc.//macOS 15.2//EN\r\nCALSCALE:GREGORIAN\r\n",
    });
    if let Some(vtimezone) = zone.vtimezone {
        out.push_str(vtimezone);
    }
    for e in events {
        out.push_str(e);
    }
    out.push_str("END:VCALENDAR\r\n");
    out
}

/// How an event blocks time, in its source's dialect.
fn busy_flavour(rng: &mut Rng, source: usize, e: &mut Event) {
    let r = rng.below(100);
    if source == BEN {
        let (status, transp) = match r {
            0..4 => ("FREE", "TRANSPARENT"),
            4..10 => ("TENTATIVE", "OPAQUE"),
            10..13 => ("OOF", "OPAQUE"),
            _ => ("BUSY", "OPAQUE"),
        };
        e.line(format!("TRANSP:{transp}"));
        e.line(format!("X-MICROSOFT-CDO-BUSYSTATUS:{status}"));
    } else {
        match r {
            0..6 => e.line("TRANSP:TRANSPARENT"),
            6..10 => {
                e.line("STATUS:TENTATIVE");
                e.line("TRANSP:OPAQUE");
            }
            _ => {
                e.line("STATUS:CONFIRMED");
                e.line("TRANSP:OPAQUE");
            }
        }
    }
}

const PEOPLE: &[&str] = &["ana", "ben", "chloe", "dimitri", "elif", "farid", "greta"];
const ROOMS: &[&str] = &["Room Lumière", "Room Eiffel", "Zoom", "Teams", "Café"];

/// Location, description, organizer and attendees, for realistic object sizes.
fn details(rng: &mut Rng, e: &mut Event) {
    if rng.below(2) == 0 {
        e.line(format!("LOCATION:{}", rng.pick(ROOMS)));
    }
    if rng.below(3) == 0 {
        e.line(
            "DESCRIPTION:Agenda: review last week\\, open points\\, next steps.\\nJoin link: \
             https://meet.example.com/abc-defg-hij",
        );
    }
    if rng.below(4) == 0 {
        e.line(format!(
            "ORGANIZER;CN={0}:mailto:{0}@example.com",
            rng.pick(PEOPLE)
        ));
        for _ in 0..2 {
            e.line(format!(
                "ATTENDEE;ROLE=REQ-PARTICIPANT;PARTSTAT=ACCEPTED;CN={0}:mailto:{0}@example.com",
                rng.pick(PEOPLE)
            ));
        }
    }
}

fn weekday_on_or_after(mut d: NaiveDate, wd: Weekday) -> NaiveDate {
    while d.weekday() != wd {
        d = d.succ_opt().expect("dates stay in range");
    }
    d
}

fn is_weekend(d: NaiveDate) -> bool {
    matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

fn last_weekday_of_month(d: NaiveDate) -> NaiveDate {
    let first = d.with_day(1).expect("day 1 exists");
    let mut last = first + Months::new(1) - Days::new(1);
    while is_weekend(last) {
        last = last.pred_opt().expect("dates stay in range");
    }
    last
}

fn at(d: NaiveDate, minutes: i64) -> NaiveDateTime {
    d.and_hms_opt((minutes / 60) as u32, (minutes % 60) as u32, 0)
        .expect("minutes stay within the day")
}

fn day(today: NaiveDate, offset: i64) -> NaiveDate {
    today
        .checked_add_signed(chrono::Duration::days(offset))
        .expect("dates stay in range")
}

const SINGLE_TITLES: &[&str] = &[
    "Client call",
    "Design review",
    "Lunch with supplier",
    "Interview",
    "Dentist",
    "Workshop",
    "Sales demo",
    "Budget meeting",
    "Focus time",
    "Training",
];

/// One non-recurring event in business hours, between ~11 months ago and ~22 ahead.
fn single(rng: &mut Rng, n: usize, source: usize, today: NaiveDate) -> String {
    let zone = zone_for(rng, source, false);
    let uid = format!(
        "evt-{n:05}-{:08x}@{}",
        rng.next_u64() as u32,
        SOURCES[source].0
    );
    let mut date = day(today, rng.between(-335, 670));
    while is_weekend(date) {
        date = date.succ_opt().expect("dates stay in range");
    }
    let title = *rng.pick(SINGLE_TITLES);
    let mut e = Event::new(&uid, title);
    if rng.below(100) < 2 {
        // Vacation, conference: all-day, 1-5 days.
        e.line(date_line("DTSTART", date));
        e.line(date_line(
            "DTEND",
            date + Days::new(1 + rng.below(5) as u64),
        ));
        if source == BEN {
            e.line("X-MICROSOFT-CDO-BUSYSTATUS:OOF");
        } else if rng.below(2) == 0 {
            e.line("TRANSP:TRANSPARENT");
        }
    } else {
        let (open, close) = if zone.tzid.is_none() {
            (7 * 60, 16 * 60)
        } else {
            (8 * 60, 18 * 60)
        };
        let length = *rng.pick(&[30, 45, 60, 60, 90, 120]);
        let start = open + 15 * rng.below(((close - open - length) / 15 + 1) as usize) as i64;
        let t = at(date, start);
        e.line(dt_line("DTSTART", zone, &[t]));
        if rng.below(100) < 15 {
            e.line(format!("DURATION:PT{length}M"));
        } else {
            e.line(dt_line(
                "DTEND",
                zone,
                &[t + chrono::Duration::minutes(length)],
            ));
        }
        busy_flavour(rng, source, &mut e);
    }
    details(rng, &mut e);
    calendar(source, zone, &[e.end()])
}

/// One series, started between ~18 months ago and ~18 months ahead; most are
/// bounded (COUNT or UNTIL), as a calendar's history of series is.
fn series(rng: &mut Rng, n: usize, source: usize, today: NaiveDate) -> String {
    let zone = zone_for(rng, source, true);
    let uid = format!(
        "series-{n:05}-{:08x}@{}",
        rng.next_u64() as u32,
        SOURCES[source].0
    );
    let first = day(today, rng.between(-540, 540));
    let minutes = chrono::Duration::minutes;
    let mut extra = Vec::new();
    let e = match rng.below(100) {
        // Weekly team meeting.
        0..26 => {
            let (days, wd, time) = if rng.below(2) == 0 {
                ("MO,WE", Weekday::Mon, 10 * 60)
            } else {
                ("TU,TH", Weekday::Tue, 14 * 60)
            };
            let start = at(weekday_on_or_after(first, wd), time);
            let mut e = Event::new(&uid, "Team meeting");
            e.line(dt_line("DTSTART", zone, &[start]));
            e.line(dt_line(
                "DTEND",
                zone,
                &[start + minutes(*rng.pick(&[45, 60]))],
            ));
            let bound = match rng.below(4) {
                0 | 1 => {
                    let last = start.date() + Days::new(rng.between(90, 365) as u64);
                    format!(";{}", until(rng, last))
                }
                2 => format!(";COUNT={}", rng.between(16, 100)),
                _ => String::new(),
            };
            e.line(format!("RRULE:FREQ=WEEKLY;BYDAY={days}{bound}"));
            busy_flavour(rng, source, &mut e);
            e
        }
        // Daily stand-up.
        26..48 => {
            let start = at(weekday_on_or_after(first, Weekday::Mon), 9 * 60 + 30);
            let mut e = Event::new(&uid, "Stand-up");
            e.line(dt_line("DTSTART", zone, &[start]));
            e.line(dt_line("DTEND", zone, &[start + minutes(15)]));
            if rng.below(2) == 0 {
                e.line(format!("RRULE:FREQ=DAILY;COUNT={}", rng.between(10, 60)));
            } else {
                let last = start.date() + Days::new(rng.between(30, 120) as u64);
                e.line(format!(
                    "RRULE:FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR;{}",
                    until(rng, last)
                ));
            }
            busy_flavour(rng, source, &mut e);
            e
        }
        // Bi-weekly 1:1.
        48..62 => {
            let start = at(weekday_on_or_after(first, Weekday::Thu), 11 * 60);
            let mut e = Event::new(&uid, "1:1");
            e.line(dt_line("DTSTART", zone, &[start]));
            e.line(dt_line("DTEND", zone, &[start + minutes(30)]));
            let bound = if rng.below(2) == 0 {
                String::new()
            } else {
                format!(";COUNT={}", rng.between(6, 26))
            };
            e.line(format!("RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=TH{bound}"));
            busy_flavour(rng, source, &mut e);
            e
        }
        // Monthly review on the last weekday of the month.
        62..72 => {
            let start = at(last_weekday_of_month(first), 16 * 60);
            let mut e = Event::new(&uid, "Monthly review");
            e.line(dt_line("DTSTART", zone, &[start]));
            e.line(dt_line("DTEND", zone, &[start + minutes(90)]));
            let bound = if rng.below(5) < 2 {
                String::new()
            } else {
                format!(";COUNT={}", rng.between(6, 24))
            };
            e.line(format!(
                "RRULE:FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1{bound}"
            ));
            busy_flavour(rng, source, &mut e);
            e
        }
        // Weekly with cancelled instances (EXDATE) and one moved (RECURRENCE-ID).
        72..86 => {
            let start = at(weekday_on_or_after(first, Weekday::Tue), 15 * 60);
            let week = |k: u64| start + Days::new(7 * k);
            let mut e = Event::new(&uid, "Project sync");
            e.line(dt_line("DTSTART", zone, &[start]));
            e.line(dt_line("DTEND", zone, &[start + minutes(60)]));
            e.line(format!(
                "RRULE:FREQ=WEEKLY;BYDAY=TU;COUNT={}",
                rng.between(20, 52)
            ));
            e.line(dt_line("EXDATE", zone, &[week(2), week(6)]));
            if rng.below(3) == 0 {
                e.line(dt_line("EXDATE", zone, &[week(9)]));
            }
            busy_flavour(rng, source, &mut e);
            let moved = week(4);
            let mut o = Event::new(&uid, "Project sync (moved)");
            o.line(dt_line("RECURRENCE-ID", zone, &[moved]));
            let new_start = moved + Days::new(1) + chrono::Duration::hours(1);
            o.line(dt_line("DTSTART", zone, &[new_start]));
            o.line(dt_line("DTEND", zone, &[new_start + minutes(90)]));
            o.line("SEQUENCE:1");
            extra.push(o.end());
            e
        }
        // All-day: remote Fridays (transparent) or a yearly two-day offsite.
        86..93 => {
            if rng.below(2) == 0 {
                let d = weekday_on_or_after(first, Weekday::Fri);
                let mut e = Event::new(&uid, "Remote day");
                e.line(date_line("DTSTART", d));
                e.line(date_line("DTEND", d + Days::new(1)));
                e.line(format!(
                    "RRULE:FREQ=WEEKLY;BYDAY=FR;COUNT={}",
                    rng.between(10, 40)
                ));
                e.line("TRANSP:TRANSPARENT");
                e
            } else {
                let d = weekday_on_or_after(first, Weekday::Wed);
                let mut e = Event::new(&uid, "Company offsite");
                e.line(date_line("DTSTART", d));
                e.line(date_line("DTEND", d + Days::new(2)));
                e.line("RRULE:FREQ=YEARLY;COUNT=3");
                if source == BEN {
                    e.line("X-MICROSOFT-CDO-BUSYSTATUS:OOF");
                }
                e
            }
        }
        // Out of office / tentative habits.
        _ => {
            if rng.below(2) == 0 {
                let start = at(weekday_on_or_after(first, Weekday::Fri), 12 * 60);
                let mut e = Event::new(&uid, "Gym");
                e.line(dt_line("DTSTART", zone, &[start]));
                e.line(dt_line("DTEND", zone, &[start + minutes(90)]));
                let last = start.date() + Days::new(rng.between(60, 240) as u64);
                e.line(format!("RRULE:FREQ=WEEKLY;BYDAY=FR;{}", until(rng, last)));
                e.line("X-MICROSOFT-CDO-BUSYSTATUS:OOF");
                e
            } else {
                let start = at(weekday_on_or_after(first, Weekday::Thu), 16 * 60);
                let mut e = Event::new(&uid, "Office hours (optional)");
                e.line(dt_line("DTSTART", zone, &[start]));
                e.line(dt_line("DTEND", zone, &[start + minutes(60)]));
                e.line("RRULE:FREQ=WEEKLY;BYDAY=TH;COUNT=30");
                e.line("STATUS:TENTATIVE");
                e
            }
        }
    };
    let mut e = e;
    details(rng, &mut e);
    let mut events = vec![e.end()];
    events.extend(extra);
    calendar(source, zone, &events)
}

/// (source index, object id, iCalendar text), recurring and single interleaved.
fn objects(rng: &mut Rng, today: NaiveDate) -> Vec<(usize, String, String)> {
    let mut out = Vec::with_capacity(OBJECTS);
    for n in 0..OBJECTS {
        // Ana 40 %, Ben 35 %, the Google calendar 25 %.
        let source = match rng.below(100) {
            0..40 => 0,
            40..75 => BEN,
            _ => GOOGLE,
        };
        let ics = if n < RECURRING {
            series(rng, n, source, today)
        } else {
            single(rng, n, source, today)
        };
        out.push((source, format!("obj-{n:05}.ics"), ics));
    }
    for i in (1..out.len()).rev() {
        let j = rng.below(i + 1);
        out.swap(i, j);
    }
    out
}

fn paris(date: NaiveDate, minutes: i64) -> DateTime<FixedOffset> {
    Paris
        .from_local_datetime(&at(date, minutes))
        .single()
        .expect("business hours never fall in a Paris DST transition")
        .fixed_offset()
}

fn booking_body(rng: &mut Rng, n: usize, today: NaiveDate) -> String {
    let mut date = day(today, rng.between(-30, 365));
    while is_weekend(date) {
        date = date.succ_opt().expect("dates stay in range");
    }
    let start = 9 * 60 + 15 * rng.between(0, 30);
    let length = *rng.pick(&[30, 45, 60, 90]);
    let status = if rng.below(10) == 0 {
        "tentative"
    } else {
        "confirmed"
    };
    json!({
        "start": paris(date, start).to_rfc3339(),
        "end": paris(date, start + length).to_rfc3339(),
        "title": format!("Appointment {n:03}"),
        "service": "Consultation",
        "status": status,
        "allow_conflict": true,
    })
    .to_string()
}

fn config_text(data_dir: &Path) -> String {
    let key_hash = calgate::auth::hash_secret(API_KEY).expect("argon2 hashes the bench key");
    let data_dir = data_dir
        .to_str()
        .expect("the temporary directory path is UTF-8");
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = {data_dir}

[[tenant]]
id = "{TENANT}"
name = "Bench Agency"
timezone = "Europe/Paris"

[[tenant.api_key]]
name = "bench"
key_hash = {key_hash}
"#,
        data_dir = toml::Value::String(data_dir.to_owned()),
        key_hash = toml::Value::String(key_hash),
    )
}

// ---------------------------------------------------------------------------
// Measuring.

fn p50_95_99(s: &[Duration]) -> String {
    format!(
        "{} / {} / {}",
        ms(percentile(s, 50.0)),
        ms(percentile(s, 95.0)),
        ms(percentile(s, 99.0))
    )
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

/// Random one-month windows (UTC midnight to the same day a month later) kept a
/// day inside the horizon at both ends.
fn month_windows(rng: &mut Rng, horizon: Span, n: usize) -> Vec<Span> {
    let date = |ms: i64| {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .expect("horizon bounds are valid instants")
            .date_naive()
    };
    let first = date(horizon.start) + Days::new(1);
    let last = date(horizon.end) - Days::new(1) - Months::new(1);
    let choices = (last - first).num_days();
    (0..n)
        .map(|_| {
            let start = first + Days::new(rng.between(0, choices + 1) as u64);
            let midnight = |d: NaiveDate| at(d, 0).and_utc();
            Span::from_instants(midnight(start), midnight(start + Months::new(1)))
        })
        .collect()
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .expect("window bounds are valid instants")
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Least-squares fit `y = a + b x`.
fn fit(xs: &[f64], ys: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - b * mx, b)
}

fn in_process(app: &App, windows: &[Span], contributors: bool) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::with_capacity(windows.len());
    let mut blocks = 0;
    for &w in windows {
        let started = Instant::now();
        let found = freebusy::busy_blocks(&app.store, TENANT, w, None, contributors)
            .expect("free/busy reads the store");
        latencies.push(started.elapsed());
        blocks += std::hint::black_box(found).len();
        tick();
    }
    (latencies, blocks)
}

/// Runs a rebuild of the tenant, giving up after [`REBUILD_LIMIT`]; the count is
/// None if it did not finish. A ticker on the runtime keeps the watchdog quiet for as
/// long as the runtime itself is alive.
async fn timed_rebuild(app: &Arc<App>, only_recurring: bool) -> (Duration, Option<usize>) {
    let ticker = tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tick();
        }
    });
    let started = Instant::now();
    let result = tokio::time::timeout(
        REBUILD_LIMIT,
        app.calendars
            // Forced: every object re-expanded and rewritten (the worst case, as
            // after an engine upgrade); the daily roll skips unchanged objects.
            .rebuild(&app.config.tenants[0], only_recurring, true),
    )
    .await;
    let elapsed = started.elapsed();
    ticker.abort();
    tick();
    (
        elapsed,
        result.ok().map(|r| r.expect("the tenant rebuilds")),
    )
}

fn kind_byte(kind: BusyKind) -> u8 {
    match kind {
        BusyKind::Free => 0,
        BusyKind::Tentative => 1,
        BusyKind::Busy => 2,
        BusyKind::Oof => 3,
    }
}

/// What `time_index::query` does for `window`, minus building hits: the 41
/// per-class range scans, only counting what they visit.
fn raw_scan(tree: &sled::Tree, window: Span) -> usize {
    let base = keys::prefix(&[TENANT.as_bytes()]);
    let mut visited = 0;
    for class in 0u8..=40 {
        let reach = 3_600_000i64.saturating_mul(1i64 << class);
        let mut lo = base.clone();
        lo.push(class);
        let mut hi = lo.clone();
        lo.extend_from_slice(&keys::encode_i64(window.start.saturating_sub(reach)));
        hi.extend_from_slice(&keys::encode_i64(window.end));
        for item in tree.range(lo..hi) {
            let (_key, value) = item.expect("the mirror tree reads");
            visited += usize::from(!value.is_empty());
        }
    }
    visited
}

struct Gateway {
    client: Client,
    base: String,
}

impl Gateway {
    async fn create(&self, body: String) {
        let resp = self
            .client
            .post(format!("{}/api/v1/tenants/{TENANT}/bookings", self.base))
            .bearer_auth(API_KEY)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .expect("create request reaches the server");
        let status = resp.status();
        let text = resp.text().await.expect("create response body is readable");
        tick();
        assert_eq!(status, StatusCode::CREATED, "create failed: {text}");
    }

    /// Free/busy for a window; returns the latency and the raw body.
    async fn freebusy(&self, window: Span) -> (Duration, bytes::Bytes) {
        let url = format!(
            "{}/api/v1/tenants/{TENANT}/freebusy?start={}&end={}",
            self.base,
            rfc3339(window.start),
            rfc3339(window.end)
        );
        let started = Instant::now();
        let resp = self
            .client
            .get(url)
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("free/busy request reaches the server");
        let status = resp.status();
        let body = resp.bytes().await.expect("free/busy body is readable");
        let elapsed = started.elapsed();
        tick();
        assert_eq!(
            status,
            StatusCode::OK,
            "free/busy failed: {}",
            String::from_utf8_lossy(&body)
        );
        (elapsed, body)
    }
}

fn count_blocks(body: &[u8]) -> usize {
    let value: Value = serde_json::from_slice(body).expect("free/busy answers JSON");
    value["busy"]
        .as_array()
        .expect("free/busy answers have a busy array")
        .len()
}

/// What the load kept of each written object.
struct Loaded {
    source: usize,
    id: String,
    recurring: bool,
    /// Every occurrence in the horizon, as indexed (`Free` ones included).
    occurrences: Vec<BusySpan>,
    diagnostics: Vec<String>,
}

#[tokio::main]
async fn main() {
    let total = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("calgate-freebusy-bench-")
        .tempdir()
        .expect("a temporary directory can be created");
    support::watchdog("freebusy", dir.path().to_owned(), STALL_AFTER);
    let config = Config::parse(&config_text(dir.path()), Path::new("bench.toml"))
        .expect("the bench configuration is valid");
    let running = calgate::start(config)
        .await
        .expect("the gateway starts on an ephemeral port");
    let app = Arc::clone(&running.app);
    // reqwest is built without a TLS crypto provider; a client needs one installed.
    calgate::install_crypto_provider();
    let gw = Arc::new(Gateway {
        client: Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(CONCURRENCY)
            .build()
            .expect("the HTTP client builds"),
        base: format!("http://{}", running.addr),
    });
    eprintln!(
        "calgate freebusy bench: server on {}, data in {}",
        running.addr,
        dir.path().display()
    );
    let today = Utc::now().date_naive();
    let mut rng = Rng(0xF8EE_B005_2026);

    // 1. Sources and objects.
    {
        let tenant = &app.config.tenants[0];
        for (id, name) in SOURCES {
            let source = Source::new(id, name);
            app.calendars
                .put_source(tenant, &source)
                .expect("sources can be created");
        }
    }
    let work = Arc::new(objects(&mut rng, today));
    let ics_bytes: usize = work.iter().map(|(_, _, ics)| ics.len()).sum();
    eprintln!(
        "writing {OBJECTS} objects ({:.1} MiB of iCalendar), {CONCURRENCY} in flight...",
        ics_bytes as f64 / (1024.0 * 1024.0)
    );
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu_time();
    let load_started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (app, work, next) = (Arc::clone(&app), Arc::clone(&work), Arc::clone(&next));
        workers.spawn(async move {
            let tenant = &app.config.tenants[0];
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((source, id, ics)) = work.get(i) else {
                    break;
                };
                let started = Instant::now();
                let object: CalendarObject = app
                    .calendars
                    .put_object(tenant, SOURCES[*source].0, id, ics, &Precondition::None)
                    .await
                    .unwrap_or_else(|e| panic!("object {id} is accepted: {e}"));
                let latency = started.elapsed();
                tick();
                if (i + 1) % 2500 == 0 {
                    eprintln!("  {} written", i + 1);
                }
                done.push((
                    latency,
                    Loaded {
                        source: *source,
                        id: object.id,
                        recurring: object.recurring,
                        occurrences: object.occurrences,
                        diagnostics: object.diagnostics,
                    },
                ));
            }
            done
        });
    }
    let mut insert_latency = Vec::with_capacity(OBJECTS);
    let mut loaded = Vec::with_capacity(OBJECTS);
    while let Some(done) = workers.join_next().await {
        for (latency, object) in done.expect("a writer panicked") {
            insert_latency.push(latency);
            loaded.push(object);
        }
    }
    let load_wall = load_started.elapsed();
    let load_cpu = cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let insert_latency = sorted(insert_latency);
    let recurring_count = loaded.iter().filter(|o| o.recurring).count();
    assert_eq!(
        recurring_count, RECURRING,
        "every series is seen as recurring"
    );
    let entries_total: usize = loaded.iter().map(|o| o.occurrences.len()).sum();
    let entries_recurring: usize = loaded
        .iter()
        .filter(|o| o.recurring)
        .map(|o| o.occurrences.len())
        .sum();
    let entries_free = loaded
        .iter()
        .flat_map(|o| &o.occurrences)
        .filter(|b| b.kind == BusyKind::Free)
        .count();
    let with_diagnostics: Vec<&Loaded> = loaded
        .iter()
        .filter(|o| !o.diagnostics.is_empty())
        .collect();
    for o in with_diagnostics.iter().take(3) {
        eprintln!("  diagnostics for {}: {:?}", o.id, o.diagnostics);
    }

    // The index rebuild before any booking exists: expansion and writes alone.
    eprintln!("rebuilding the index (no bookings yet)...");
    let (bare_full, bare_full_count) = timed_rebuild(&app, false).await;
    let (bare_recurring, bare_recurring_count) = timed_rebuild(&app, true).await;

    // 2. Bookings over HTTP.
    eprintln!("creating {BOOKINGS} bookings over HTTP...");
    let bodies: Vec<String> = (0..BOOKINGS)
        .map(|n| booking_body(&mut rng, n, today))
        .collect();
    let bookings_started = Instant::now();
    let mut creators = JoinSet::new();
    for chunk in bodies.chunks(BOOKINGS.div_ceil(CONCURRENCY)) {
        let (gw, chunk) = (Arc::clone(&gw), chunk.to_vec());
        creators.spawn(async move {
            for body in chunk {
                gw.create(body).await;
            }
        });
    }
    while let Some(done) = creators.join_next().await {
        done.expect("a booking creator panicked");
    }
    let bookings_wall = bookings_started.elapsed();

    // 3. In-process free/busy.
    let horizon = app.calendars.horizon().window(Utc::now());
    let windows = month_windows(&mut rng, horizon, INPROC_QUERIES);
    eprintln!("{INPROC_QUERIES} in-process one-month queries (after a warm-up pass)...");
    in_process(&app, &windows, false);
    let (plain, plain_blocks) = in_process(&app, &windows, false);
    let (detailed, detailed_blocks) = in_process(&app, &windows, true);
    let detailed = sorted(detailed);
    assert_eq!(
        plain_blocks, detailed_blocks,
        "contributors change no block"
    );

    // Where a query's time goes: the two index reads, then clipping and merging.
    let (mut booking_reads, mut object_reads, mut merges, mut empty_reads) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut entries_per_window = Vec::with_capacity(windows.len());
    for &w in &windows {
        let t0 = Instant::now();
        let b = app
            .store
            .booking_busy(TENANT, w)
            .expect("bookings index reads");
        let t1 = Instant::now();
        let o = app
            .store
            .object_occurrences(TENANT, w)
            .expect("busy index reads");
        let t2 = Instant::now();
        let clipped: Vec<(Span, BusyKind)> = b
            .iter()
            .chain(&o)
            .map(|e| {
                let span = Span::new(e.span.start.max(w.start), e.span.end.min(w.end));
                (span, e.kind)
            })
            .collect();
        std::hint::black_box(freebusy::merge(&clipped));
        let t3 = Instant::now();
        app.store
            .object_occurrences("no-such-tenant", w)
            .expect("busy index reads");
        empty_reads.push(t3.elapsed());
        booking_reads.push(t1 - t0);
        object_reads.push(t2 - t1);
        merges.push(t3 - t2);
        entries_per_window.push((b.len(), o.len()));
        tick();
    }
    let avg = |f: &dyn Fn(&(usize, usize)) -> usize| {
        entries_per_window.iter().map(f).sum::<usize>() as f64 / windows.len() as f64
    };
    let (avg_booking_entries, avg_object_entries) = (avg(&|e| e.0), avg(&|e| e.1));
    // Latency against entries read, leaving out the slowest 5 % (scheduler noise).
    let cutoff = percentile(&sorted(plain.clone()), 95.0);
    let (xs, ys): (Vec<f64>, Vec<f64>) = entries_per_window
        .iter()
        .zip(&plain)
        .filter(|(_, d)| **d <= cutoff)
        .map(|((b, o), d)| ((b + o) as f64, d.as_secs_f64() * 1e6))
        .unzip();
    let (fixed_us, per_entry_us) = fit(&xs, &ys);
    let plain = sorted(plain);

    // The same busy index in a bare sled tree: raw range scans vs. the time index's
    // hits vs. the store's entries (strings per hit).
    eprintln!("mirroring the busy index for the scan breakdown...");
    let mirror_db = sled::Config::new()
        .temporary(true)
        .open()
        .expect("a temporary sled opens");
    let mirror = mirror_db.open_tree("busy").expect("the mirror tree opens");
    for o in &loaded {
        for (n, b) in o.occurrences.iter().enumerate() {
            let mut id = keys::join(&[SOURCES[o.source].0.as_bytes(), o.id.as_bytes()]);
            id.push(keys::SEP);
            id.extend_from_slice(&(n as u32).to_be_bytes());
            mirror
                .insert(
                    time_index::entry_key(&[TENANT.as_bytes()], b.span, &id),
                    time_index::entry_value(b.span, &[kind_byte(b.kind)]),
                )
                .expect("the mirror takes the entry");
        }
    }
    tick();
    let (mut raw_scans, mut hit_scans) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        raw_scans.clear();
        hit_scans.clear();
        for &w in &windows {
            let t0 = Instant::now();
            std::hint::black_box(raw_scan(&mirror, w));
            let t1 = Instant::now();
            let hits = time_index::query(&mirror, &[TENANT.as_bytes()], w).expect("mirror reads");
            hit_scans.push(t1.elapsed());
            raw_scans.push(t1 - t0);
            std::hint::black_box(hits);
        }
        tick();
    }
    drop(mirror);
    drop(mirror_db);

    // 4. Over HTTP.
    let http_windows = month_windows(&mut rng, horizon, HTTP_QUERIES);
    eprintln!("{HTTP_QUERIES} one-month GET /freebusy (after a warm-up pass)...");
    let mut http_blocks = 0;
    for &w in &http_windows {
        let (_, body) = gw.freebusy(w).await;
        let blocks = count_blocks(&body);
        let local = freebusy::busy_blocks(&app.store, TENANT, w, None, false)
            .expect("free/busy reads the store")
            .len();
        assert_eq!(blocks, local, "HTTP and in-process agree");
        http_blocks += blocks;
    }
    let mut http = Vec::with_capacity(HTTP_QUERIES);
    let mut http_bytes = 0;
    for &w in &http_windows {
        let (elapsed, body) = gw.freebusy(w).await;
        http.push(elapsed);
        http_bytes += body.len();
    }
    let http = sorted(http);
    // One-hour windows: the transport, auth and routing with almost no engine work.
    let mut small = Vec::with_capacity(HTTP_SMALL_QUERIES);
    for &w in http_windows.iter().take(HTTP_SMALL_QUERIES) {
        let hour = Span::new(w.start, w.start + 3_600_000);
        gw.freebusy(hour).await;
        let (elapsed, _) = gw.freebusy(hour).await;
        small.push(elapsed);
    }
    let small = sorted(small);

    // 5. Index rebuild, now that bookings exist (what the horizon roll does daily).
    eprintln!("rebuilding the index with bookings present...");
    let tenant = &app.config.tenants[0];
    let check: Vec<Span> = windows.iter().take(20).copied().collect();
    let before: Vec<_> = check
        .iter()
        .map(|w| freebusy::busy_blocks(&app.store, TENANT, *w, None, false).expect("reads"))
        .collect();
    let (rebuild_full, rebuilt) = timed_rebuild(&app, false).await;
    let (rebuild_recurring, rebuilt_recurring) = timed_rebuild(&app, true).await;
    if rebuilt.is_some() && rebuilt_recurring.is_some() {
        for (w, old) in check.iter().zip(&before) {
            let new = freebusy::busy_blocks(&app.store, TENANT, *w, None, false).expect("reads");
            assert_eq!(&new, old, "a rebuild on the same day changes no block");
        }
    }
    let rebuild_done = |elapsed: Duration, count: Option<usize>, expected: usize| match count {
        Some(n) => {
            assert_eq!(n, expected, "the rebuild re-expands what it should");
            format!("{:.2} s", elapsed.as_secs_f64())
        }
        None => format!(
            "> {:.0} s (stopped unfinished)",
            REBUILD_LIMIT.as_secs_f64()
        ),
    };

    // Where a rebuild's time goes: reading the objects, parsing, expanding, writing.
    let started = Instant::now();
    let mut stored = Vec::new();
    for (id, _) in SOURCES {
        for o in app.store.objects(TENANT, id).expect("objects read back") {
            stored.push((id, o));
        }
    }
    let read_time = started.elapsed();
    let started = Instant::now();
    let parsed: Vec<_> = stored
        .iter()
        .map(|(_, o)| calgate::ical::parse::parse(&o.ics).expect("stored objects parse"))
        .collect();
    let parse_time = started.elapsed();
    tick();
    let opts = ExpandOptions {
        default_zone: tenant.timezone,
        window: app.calendars.horizon().window(Utc::now()),
    };
    let (mut expand_recurring, mut expand_single) = (Duration::ZERO, Duration::ZERO);
    for ((_, o), p) in stored.iter().zip(&parsed) {
        let started = Instant::now();
        std::hint::black_box(expand(p, &opts));
        if o.recurring {
            expand_recurring += started.elapsed();
        } else {
            expand_single += started.elapsed();
        }
    }
    // Outlook sends a VTIMEZONE along with its Windows TZID; the TZID resolves
    // through CLDR either way, so parsing without it gives the same events.
    let (mut vtz_objects, mut vtz_time, mut stripped_time, mut other_time) =
        (0usize, Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for (_, o) in &stored {
        let started = Instant::now();
        std::hint::black_box(calgate::ical::parse::parse(&o.ics).expect("parses"));
        let elapsed = started.elapsed();
        let vtimezone = [W_EUROPE, EASTERN]
            .iter()
            .filter_map(|z| z.vtimezone)
            .find(|v| o.ics.contains(v));
        match vtimezone {
            Some(v) => {
                vtz_objects += 1;
                vtz_time += elapsed;
                let stripped = o.ics.replace(v, "");
                let started = Instant::now();
                std::hint::black_box(calgate::ical::parse::parse(&stripped).expect("parses"));
                stripped_time += started.elapsed();
            }
            None => other_time += elapsed,
        }
    }
    tick();
    let recurring_parse_time = {
        let started = Instant::now();
        for (_, o) in stored.iter().filter(|(_, o)| o.recurring) {
            std::hint::black_box(calgate::ical::parse::parse(&o.ics).expect("parses"));
        }
        started.elapsed()
    };
    tick();
    let probe: Vec<(&str, CalendarObject)> = stored
        .iter()
        .take(WRITE_PROBE)
        .map(|(s, o)| (*s, o.clone()))
        .collect();
    let started = Instant::now();
    for (source, o) in &probe {
        app.store
            .put_object(
                TENANT,
                source,
                o,
                &Precondition::EtagIs(o.etag.clone()),
                calgate::store::ObjectWrite::Change,
            )
            .await
            .expect("the object is rewritten");
        tick();
    }
    let sequential_write = started.elapsed() / WRITE_PROBE as u32;
    let probe = Arc::new(probe);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut writers = JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (app, probe, next) = (Arc::clone(&app), Arc::clone(&probe), Arc::clone(&next));
        writers.spawn(async move {
            while let Some((source, o)) = probe.get(next.fetch_add(1, Ordering::Relaxed)) {
                app.store
                    .put_object(
                        TENANT,
                        source,
                        o,
                        &Precondition::EtagIs(o.etag.clone()),
                        calgate::store::ObjectWrite::Change,
                    )
                    .await
                    .expect("the object is rewritten");
                tick();
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("a writer panicked");
    }
    let concurrent_write_rate = WRITE_PROBE as f64 / started.elapsed().as_secs_f64();

    drop(app);
    running.stop().await.expect("the gateway stops and flushes");
    drop(dir);

    // Report.
    let inproc_p50 = percentile(&plain, 50.0);
    let http_p50 = percentile(&http, 50.0);
    let n = windows.len() as f64;
    let rows: Vec<(String, String)> = vec![
        (
            format!("Object writes ({CONCURRENCY} in flight, durable)"),
            format!(
                "{:.0} objects/s ({OBJECTS} in {:.1} s; p50 {} / p99 {})",
                OBJECTS as f64 / load_wall.as_secs_f64(),
                load_wall.as_secs_f64(),
                ms(percentile(&insert_latency, 50.0)),
                ms(percentile(&insert_latency, 99.0))
            ),
        ),
        (
            "CPU during the object load".into(),
            load_cpu.map_or_else(
                || "unavailable".to_owned(),
                |cpu| {
                    format!(
                        "{:.2} cores busy, {:.0} µs CPU per object",
                        cpu.as_secs_f64() / load_wall.as_secs_f64(),
                        cpu.as_secs_f64() * 1e6 / OBJECTS as f64
                    )
                },
            ),
        ),
        (
            "Index entries: occurrences in the horizon".into(),
            format!(
                "{entries_total} ({} from {} singles, {entries_recurring} from {RECURRING} series, \
                 {:.0} per series; {entries_free} of them Free)",
                entries_total - entries_recurring,
                OBJECTS - RECURRING,
                entries_recurring as f64 / RECURRING as f64
            ),
        ),
        (
            "Objects with diagnostics".into(),
            with_diagnostics.len().to_string(),
        ),
        (
            format!("Bookings over HTTP ({CONCURRENCY} in flight)"),
            format!("{BOOKINGS} in {:.2} s", bookings_wall.as_secs_f64()),
        ),
        (
            "Entries read per 1-month window (avg): bookings + object occurrences".into(),
            format!(
                "{avg_booking_entries:.1} + {avg_object_entries:.0}, merged into {:.0} blocks",
                plain_blocks as f64 / n
            ),
        ),
        (
            format!(
                "In-process `busy_blocks`, 1 month, p50 / p95 / p99 ({INPROC_QUERIES} windows)"
            ),
            p50_95_99(&plain),
        ),
        (
            "In-process `busy_blocks` with contributors, p50 / p95 / p99".into(),
            p50_95_99(&detailed),
        ),
        (
            format!("HTTP `GET /freebusy`, 1 month, p50 / p95 / p99 ({HTTP_QUERIES} windows)"),
            format!(
                "{} ({:.0} blocks, {:.1} KiB JSON avg)",
                p50_95_99(&http),
                http_blocks as f64 / HTTP_QUERIES as f64,
                http_bytes as f64 / HTTP_QUERIES as f64 / 1024.0
            ),
        ),
        (
            format!("HTTP `GET /freebusy`, 1 hour, p50 ({HTTP_SMALL_QUERIES} windows)"),
            ms(percentile(&small, 50.0)),
        ),
        (
            format!("Index rebuild, whole tenant ({OBJECTS} objects), before any booking"),
            rebuild_done(bare_full, bare_full_count, OBJECTS),
        ),
        (
            format!("Index rebuild, recurring only ({RECURRING} objects), before any booking"),
            rebuild_done(bare_recurring, bare_recurring_count, RECURRING),
        ),
        (
            format!("Index rebuild, whole tenant, with the {BOOKINGS} bookings"),
            rebuild_done(rebuild_full, rebuilt, OBJECTS),
        ),
        (
            "Index rebuild, recurring only, with the bookings".into(),
            rebuild_done(rebuild_recurring, rebuilt_recurring, RECURRING),
        ),
    ];
    let breakdown: Vec<(String, String)> = vec![
        (
            "`store.booking_busy` p50".into(),
            ms(percentile(&sorted(booking_reads), 50.0)),
        ),
        (
            "`store.object_occurrences` p50".into(),
            ms(percentile(&sorted(object_reads), 50.0)),
        ),
        (
            "clip + `freebusy::merge` p50".into(),
            ms(percentile(&sorted(merges), 50.0)),
        ),
        (
            "`store.object_occurrences` on an empty tenant p50 (41 empty class scans)".into(),
            ms(percentile(&sorted(empty_reads), 50.0)),
        ),
        (
            "`busy_blocks` latency fit (fastest 95 %): fixed + per entry read".into(),
            format!("{fixed_us:.0} µs + {per_entry_us:.3} µs × entries"),
        ),
        (
            "Mirror tree: raw sled range scans p50 (no decoding)".into(),
            ms(percentile(&sorted(raw_scans), 50.0)),
        ),
        (
            "Mirror tree: `time_index::query` p50 (hits: Vec allocs + sort)".into(),
            ms(percentile(&sorted(hit_scans), 50.0)),
        ),
        (
            format!("Rebuild: read + decode {OBJECTS} objects (`store.objects`)"),
            ms(read_time),
        ),
        (
            "Rebuild: parse all / recurring only".into(),
            format!("{} / {}", ms(parse_time), ms(recurring_parse_time)),
        ),
        (
            format!(
                "Rebuild: parse the {vtz_objects} objects with a VTIMEZONE: as stored / without it"
            ),
            format!("{} / {}", ms(vtz_time), ms(stripped_time)),
        ),
        (
            format!(
                "Rebuild: parse the other {} objects",
                stored.len() - vtz_objects
            ),
            ms(other_time),
        ),
        (
            "Rebuild: expand recurring / singles".into(),
            format!("{} / {}", ms(expand_recurring), ms(expand_single)),
        ),
        (
            "Rebuild: one durable `put_object` at a time (avg)".into(),
            format!(
                "{} → {:.1} s for {OBJECTS}",
                ms(sequential_write),
                sequential_write.as_secs_f64() * OBJECTS as f64
            ),
        ),
        (
            format!("Rebuild: `put_object` with {CONCURRENCY} in flight"),
            format!(
                "{concurrent_write_rate:.0} objects/s → {:.1} s for {OBJECTS}",
                OBJECTS as f64 / concurrent_write_rate
            ),
        ),
    ];

    println!();
    println!("## calgate free/busy bench");
    println!();
    println!("Machine: {}", machine());
    println!(
        "Workload: {OBJECTS} objects ({RECURRING} recurring) in 3 sources, {:.1} MiB of \
         iCalendar, plus {BOOKINGS} bookings; one-month windows inside the horizon.",
        ics_bytes as f64 / (1024.0 * 1024.0)
    );
    println!();
    println!("| Measurement | Result |");
    println!("|---|---|");
    for (name, value) in rows {
        println!("| {name} | {value} |");
    }
    println!();
    println!("Breakdown:");
    println!();
    println!("| Part | Time |");
    println!("|---|---|");
    for (name, value) in breakdown {
        println!("| {name} | {value} |");
    }
    println!();
    println!(
        "Target in-process p50 < {}: {} ({})",
        ms(TARGET_INPROC_P50),
        verdict(inproc_p50 < TARGET_INPROC_P50),
        ms(inproc_p50)
    );
    println!(
        "Target HTTP p50 < {}: {} ({})",
        ms(TARGET_HTTP_P50),
        verdict(http_p50 < TARGET_HTTP_P50),
        ms(http_p50)
    );
    println!(
        "Target index rebuild < {:.0} s: {} (whole tenant with bookings {}; recurring only {}; \
         before any booking {} / {})",
        TARGET_REBUILD.as_secs_f64(),
        verdict(rebuilt.is_some() && rebuild_full < TARGET_REBUILD),
        rebuild_done(rebuild_full, rebuilt, OBJECTS),
        rebuild_done(rebuild_recurring, rebuilt_recurring, RECURRING),
        rebuild_done(bare_full, bare_full_count, OBJECTS),
        rebuild_done(bare_recurring, bare_recurring_count, RECURRING),
    );
    println!();
    println!("Total bench time: {:.1} s", total.elapsed().as_secs_f64());
}
