//! Time-range matching of calendar components and alarms (RFC 4791 §9.9), every
//! recurrence instance considered.
//!
//! Events are matched through the occurrence index, not here; this module answers
//! the rarer questions a calendar-query can ask of tasks, journals and alarms, by
//! parsing the object at hand. The DAV layer decides which objects to ask about.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use icalendar::parser::{Component, Property};

use super::expand::{self, ExpandOptions, Occurrence};
use super::parse::{self, Kind, ParsedCalendar};
use super::zones::{self, Resolution};
use crate::model::Span;

/// Whether some `kind` component of `text` (or one of its recurrence instances)
/// matches the time-range `window` under the RFC 4791 §9.9 rules for that kind.
pub fn component_in_range(text: &str, kind: Kind, window: Span, zone: Tz) -> bool {
    if let Ok(parsed) = parse::parse_as(text, kind) {
        let hit = instances(&parsed, widen(window, Duration::zero()), zone)
            .iter()
            .any(|o| instance_matches(kind, &parsed, o, window));
        if hit {
            return true;
        }
    }
    // Components without DTSTART have no instances; their own dates decide.
    let unfolded = parse::unfolded(text);
    let Ok(raw) = parse::read(&unfolded) else {
        return false;
    };
    raw.components
        .iter()
        .filter(|c| c.name.as_str() == kind.name() && c.find_prop("DTSTART").is_none())
        .any(|c| kind == Kind::Todo && undated_todo_matches(c, window, zone))
}

/// Whether an alarm of a VEVENT in `text` triggers inside `window` (RFC 4791 §9.9,
/// VALARM row): relative triggers are placed on every occurrence, repetitions
/// (REPEAT/DURATION) included.
pub fn alarm_in_range(text: &str, window: Span, zone: Tz) -> bool {
    let unfolded = parse::unfolded(text);
    let Ok(raw) = parse::read(&unfolded) else {
        return false;
    };
    let alarms: Vec<Vec<Alarm>> = raw
        .components
        .iter()
        .filter(|c| c.name.as_str() == Kind::Event.name())
        .map(|event| {
            event
                .components
                .iter()
                .filter(|c| c.name.as_str() == "VALARM")
                .filter_map(|c| Alarm::read(c, zone))
                .collect()
        })
        .collect();
    let in_window = |t: i64| t >= window.start && t < window.end;
    if alarms
        .iter()
        .flatten()
        .any(|a| matches!(a.trigger, Trigger::At(_)) && a.times(0, 0).any(in_window))
    {
        return true;
    }
    // An occurrence can trigger inside the window only if it lies within the
    // largest trigger offset (plus repetitions) of it.
    let reach = alarms
        .iter()
        .flatten()
        .filter_map(|a| match a.trigger {
            Trigger::Relative { offset, .. } => Some(offset.abs() + a.repeat_span()),
            Trigger::At(_) => None,
        })
        .max();
    let Some(reach) = reach else {
        return false;
    };
    let Ok(parsed) = parse::parse(text) else {
        return false;
    };
    instances(&parsed, widen(window, reach), zone)
        .iter()
        .any(|o| {
            alarms.get(o.event).is_some_and(|list| {
                list.iter()
                    .any(|a| a.times(o.span.start, o.span.end).any(in_window))
            })
        })
}

fn widen(window: Span, by: Duration) -> Span {
    // One extra millisecond keeps zero-length instances on the edges.
    let by = by.num_milliseconds().saturating_add(1);
    Span::new(
        window.start.saturating_sub(by),
        window.end.saturating_add(by),
    )
}

fn instances(parsed: &ParsedCalendar, window: Span, zone: Tz) -> Vec<Occurrence> {
    let opts = ExpandOptions {
        default_zone: zone,
        window,
    };
    expand::expand(parsed, &opts).0
}

/// The RFC 4791 §9.9 table for one instance `[s, e)` against `[start, end)`.
fn instance_matches(kind: Kind, parsed: &ParsedCalendar, o: &Occurrence, w: Span) -> bool {
    let (s, e) = (o.span.start, o.span.end);
    if s == e && !o.all_day {
        // DTSTART alone (or a zero duration): the instant must lie in the range.
        return w.start <= s && w.end > s;
    }
    if kind != Kind::Todo {
        return w.start < e && w.end > s;
    }
    let by_duration = parsed
        .events
        .iter()
        .find(|v| v.index == o.event)
        .is_some_and(|v| v.end.is_none() && v.duration.is_some());
    let starts_in = if by_duration {
        w.start <= e
    } else {
        w.start < e || w.start <= s
    };
    starts_in && (w.end > s || w.end >= e)
}

/// RFC 4791 §9.9 rows for a VTODO without DTSTART: DUE, then COMPLETED/CREATED.
fn undated_todo_matches(c: &Component<'_>, w: Span, zone: Tz) -> bool {
    let at = |name: &str| c.find_prop(name).and_then(|p| instant(p, zone));
    if let Some(due) = at("DUE") {
        return w.start < due && w.end >= due;
    }
    match (at("COMPLETED"), at("CREATED")) {
        (Some(done), Some(created)) => {
            (w.start <= created || w.start <= done) && (w.end >= created || w.end >= done)
        }
        (Some(done), None) => w.start <= done && w.end >= done,
        (None, Some(created)) => w.end > created,
        (None, None) => true,
    }
}

/// A DATE or DATE-TIME property value as epoch milliseconds; dates start the day
/// in `zone`, floating and unknown-zone times are read in `zone`.
fn instant(p: &Property<'_>, zone: Tz) -> Option<i64> {
    let v = p.val.as_str().trim();
    if let Some(date) = parse::parse_date(v) {
        return Some(crate::model::start_of_day(date, zone).timestamp_millis());
    }
    let naive = parse::parse_naive(v)?;
    if v.ends_with(['Z', 'z']) {
        return Some(naive.and_utc().timestamp_millis());
    }
    let utc: DateTime<Utc> =
        match parse::param(p, "TZID").map(|name| zones::resolve(name, |_| None)) {
            Some(Resolution::Zone(z)) => z.to_utc(naive),
            _ => zones::Zone::Iana(zone).to_utc(naive),
        };
    Some(utc.timestamp_millis())
}

enum Trigger {
    /// Relative to the instance's start, or its end with `RELATED=END`.
    Relative {
        offset: Duration,
        from_end: bool,
    },
    At(i64),
}

struct Alarm {
    trigger: Trigger,
    repeat: u32,
    interval: Duration,
}

impl Alarm {
    fn read(c: &Component<'_>, zone: Tz) -> Option<Alarm> {
        let p = c.find_prop("TRIGGER")?;
        let param = |key: &str| parse::param(p, key).map(str::to_ascii_uppercase);
        let trigger = if param("VALUE").as_deref() == Some("DATE-TIME") {
            Trigger::At(instant(p, zone)?)
        } else {
            Trigger::Relative {
                offset: parse::parse_duration(p.val.as_str().trim())?,
                from_end: param("RELATED").as_deref() == Some("END"),
            }
        };
        let interval = c
            .find_prop("DURATION")
            .and_then(|d| parse::parse_duration(d.val.as_str().trim()));
        let repeat = c
            .find_prop("REPEAT")
            .and_then(|r| r.val.as_str().trim().parse::<u32>().ok())
            .unwrap_or(0);
        Some(match interval {
            // RFC 5545 §3.6.6: REPEAT and DURATION come together, or not at all.
            Some(interval) if repeat > 0 => Alarm {
                trigger,
                repeat: repeat.min(1000),
                interval,
            },
            _ => Alarm {
                trigger,
                repeat: 0,
                interval: Duration::zero(),
            },
        })
    }

    fn repeat_span(&self) -> Duration {
        self.interval * self.repeat as i32
    }

    /// Every time this alarm fires for an instance `[start, end)`.
    fn times(&self, start: i64, end: i64) -> impl Iterator<Item = i64> + '_ {
        let first = match self.trigger {
            Trigger::At(t) => t,
            Trigger::Relative { offset, from_end } => {
                (if from_end { end } else { start }) + offset.num_milliseconds()
            }
        };
        let step = self.interval.num_milliseconds();
        (0..=i64::from(self.repeat)).map(move |k| first + k * step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    fn range(a: &str, b: &str) -> Span {
        Span::new(ms(a), ms(b))
    }

    const UTC: Tz = chrono_tz::UTC;

    fn cal(body: &str) -> String {
        format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:t\r\n{body}END:VCALENDAR\r\n")
    }

    #[test]
    fn recurring_task_matches_each_instance() {
        let text = cal(
            "BEGIN:VTODO\r\nUID:t\r\nDTSTART:20300112T100000Z\r\nDUE:20300112T110000Z\r\nRRULE:FREQ=MONTHLY;COUNT=6\r\nEND:VTODO\r\n",
        );
        let hit = |a, b| component_in_range(&text, Kind::Todo, range(a, b), UTC);
        assert!(hit("2030-02-12T00:00:00Z", "2030-02-13T00:00:00Z"));
        assert!(!hit("2030-02-13T00:00:00Z", "2030-02-14T00:00:00Z"));
        assert!(!hit("2030-08-12T00:00:00Z", "2030-08-13T00:00:00Z"));
    }

    #[test]
    fn task_with_duration_matches_overlaps_on_both_sides() {
        let text = cal(
            "BEGIN:VTODO\r\nUID:d\r\nDTSTART:20300118T120000Z\r\nDURATION:PT2H\r\nEND:VTODO\r\n",
        );
        let hit = |a, b| component_in_range(&text, Kind::Todo, range(a, b), UTC);
        assert!(hit("2030-01-18T13:00:00Z", "2030-01-18T15:00:00Z"));
        assert!(hit("2030-01-18T11:00:00Z", "2030-01-18T13:00:00Z"));
        assert!(!hit("2030-01-18T14:30:00Z", "2030-01-18T15:00:00Z"));
        assert!(!hit("2030-01-18T10:00:00Z", "2030-01-18T11:00:00Z"));
    }

    #[test]
    fn undated_tasks_follow_due_then_completed_then_created() {
        let due =
            cal("BEGIN:VTODO\r\nUID:a\r\nDUE;TZID=Europe/Paris:20300109T140000\r\nEND:VTODO\r\n");
        // 14:00 Paris is 13:00 UTC.
        assert!(component_in_range(
            &due,
            Kind::Todo,
            range("2030-01-09T12:00:00Z", "2030-01-09T13:00:00Z"),
            UTC
        ));
        assert!(!component_in_range(
            &due,
            Kind::Todo,
            range("2030-01-09T13:00:00Z", "2030-01-09T14:00:00Z"),
            UTC
        ));
        let created = cal("BEGIN:VTODO\r\nUID:b\r\nCREATED:20300101T000000Z\r\nEND:VTODO\r\n");
        assert!(component_in_range(
            &created,
            Kind::Todo,
            range("2030-02-01T00:00:00Z", "2030-02-02T00:00:00Z"),
            UTC
        ));
        assert!(!component_in_range(
            &created,
            Kind::Todo,
            range("2029-02-01T00:00:00Z", "2029-02-02T00:00:00Z"),
            UTC
        ));
        let bare = cal("BEGIN:VTODO\r\nUID:c\r\nSUMMARY:whenever\r\nEND:VTODO\r\n");
        assert!(component_in_range(
            &bare,
            Kind::Todo,
            range("1999-01-01T00:00:00Z", "1999-01-02T00:00:00Z"),
            UTC
        ));
    }

    #[test]
    fn journal_date_covers_its_day() {
        let text =
            cal("BEGIN:VJOURNAL\r\nUID:j\r\nDTSTART;VALUE=DATE:20300110\r\nEND:VJOURNAL\r\n");
        assert!(component_in_range(
            &text,
            Kind::Journal,
            range("2030-01-10T12:00:00Z", "2030-01-10T13:00:00Z"),
            UTC
        ));
        assert!(!component_in_range(
            &text,
            Kind::Journal,
            range("2030-01-11T00:00:00Z", "2030-01-12T00:00:00Z"),
            UTC
        ));
    }

    #[test]
    fn alarm_fires_relative_to_each_occurrence() {
        let text = cal(
            "BEGIN:VEVENT\r\nUID:e\r\nDTSTART:20300110T080000Z\r\nDTEND:20300110T090000Z\r\nRRULE:FREQ=DAILY;COUNT=3\r\nBEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:x\r\nTRIGGER:-PT15M\r\nEND:VALARM\r\nEND:VEVENT\r\n",
        );
        let hit = |a, b| alarm_in_range(&text, range(a, b), UTC);
        assert!(hit("2030-01-10T07:40:00Z", "2030-01-10T07:55:00Z"));
        assert!(hit("2030-01-12T07:40:00Z", "2030-01-12T07:55:00Z"));
        assert!(!hit("2030-01-10T08:00:00Z", "2030-01-10T08:15:00Z"));
        assert!(!hit("2030-01-13T07:40:00Z", "2030-01-13T07:55:00Z"));
    }

    #[test]
    fn alarm_related_end_repeats_and_absolute() {
        let text = cal(
            "BEGIN:VEVENT\r\nUID:e\r\nDTSTART:20300110T080000Z\r\nDTEND:20300110T090000Z\r\nBEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:x\r\nTRIGGER;RELATED=END:PT0S\r\nREPEAT:2\r\nDURATION:PT10M\r\nEND:VALARM\r\nBEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:y\r\nTRIGGER;VALUE=DATE-TIME:20300105T120000Z\r\nEND:VALARM\r\nEND:VEVENT\r\n",
        );
        let hit = |a, b| alarm_in_range(&text, range(a, b), UTC);
        assert!(hit("2030-01-10T09:15:00Z", "2030-01-10T09:25:00Z"));
        assert!(!hit("2030-01-10T09:25:00Z", "2030-01-10T09:35:00Z"));
        assert!(hit("2030-01-05T11:00:00Z", "2030-01-05T12:30:00Z"));
        assert!(!hit("2030-01-10T08:00:00Z", "2030-01-10T08:59:00Z"));
    }
}
