//! iCalendar text → the typed events the recurrence engine needs.
//!
//! Parsing of the content-line grammar is the `icalendar` crate's; this module reads
//! the properties that matter for time (DTSTART, DTEND, DURATION, RRULE, RDATE,
//! EXDATE, RECURRENCE-ID) and busy status, resolving each TZID once. Problems that
//! do not make the object unusable (an unknown zone, a bad EXDATE) are collected as
//! diagnostics instead of failing the whole object.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use icalendar::parser::{Component, Property};

use super::zones::{self, CustomZone, Observance, Resolution, Zone};

/// Why an object could not be read at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("not iCalendar data: {0}")]
    Syntax(String),
    #[error("the calendar has no VCALENDAR component")]
    NoCalendar,
}

/// A DATE or DATE-TIME value as written.
#[derive(Debug, Clone)]
pub enum IcalTime {
    Date(NaiveDate),
    /// No zone: the reader's (tenant's) local time.
    Floating(NaiveDateTime),
    Utc(DateTime<Utc>),
    Zoned(NaiveDateTime, Zone),
}

impl IcalTime {
    pub fn is_date(&self) -> bool {
        matches!(self, IcalTime::Date(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatus {
    Confirmed,
    Tentative,
    Cancelled,
}

/// One VEVENT (or a VTODO / VJOURNAL read by [`parse_as`]): a series master, a
/// single event, or an override (RECURRENCE-ID).
#[derive(Debug, Clone)]
pub struct VEvent {
    /// Position among the calendar's VEVENTs (to find the source component again).
    pub index: usize,
    pub uid: String,
    pub summary: Option<String>,
    pub location: Option<String>,
    pub description: Option<String>,
    pub start: IcalTime,
    pub end: Option<IcalTime>,
    pub duration: Option<Duration>,
    pub rrules: Vec<String>,
    pub rdates: Vec<RDate>,
    pub exdates: Vec<IcalTime>,
    pub recurrence_id: Option<IcalTime>,
    /// RECURRENCE-ID;RANGE=THISANDFUTURE
    pub this_and_future: bool,
    /// SEQUENCE (0 when absent): of two revisions of one instance, the higher wins.
    pub sequence: i64,
    pub status: Option<EventStatus>,
    pub transparent: bool,
    /// X-MICROSOFT-CDO-BUSYSTATUS, upper-cased.
    pub ms_busy_status: Option<String>,
}

#[derive(Debug, Clone)]
pub enum RDate {
    At(IcalTime),
    Period(IcalTime, PeriodEnd),
}

#[derive(Debug, Clone)]
pub enum PeriodEnd {
    At(IcalTime),
    Duration(Duration),
}

/// A parsed calendar object (one or more VEVENTs sharing zones).
#[derive(Debug, Clone, Default)]
pub struct ParsedCalendar {
    pub events: Vec<VEvent>,
    /// Names of the other top-level components (VTODO, VJOURNAL, ...), VTIMEZONE aside.
    pub other_components: Vec<String>,
    /// Google's calendar-wide zone, applied to floating times.
    pub x_wr_timezone: Option<Zone>,
    /// Things we could not honour exactly, in words.
    pub diagnostics: Vec<String>,
    /// What makes the object unfit to store, in words: a component without a
    /// DTSTART, an unreadable or absurd DURATION. Readers that only need the
    /// usable events (feeds, reports) may ignore them; writers refuse the object.
    pub errors: Vec<String>,
}

/// iCalendar text with CRLF line ends and folded lines joined, ready for
/// `icalendar::parser::read_calendar` (which expects exactly that).
pub fn unfolded(text: &str) -> String {
    icalendar::parser::unfold(&normalize(text))
}

/// Which top-level component [`parse_as`] reads as [`VEvent`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Event,
    /// VTODO: DUE plays the part of DTEND.
    Todo,
    Journal,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Event => "VEVENT",
            Kind::Todo => "VTODO",
            Kind::Journal => "VJOURNAL",
        }
    }

    fn end_property(self) -> &'static str {
        match self {
            Kind::Todo => "DUE",
            Kind::Event | Kind::Journal => "DTEND",
        }
    }
}

/// Parses iCalendar text. Lenient about line endings (LF-only) and folding.
pub fn parse(text: &str) -> Result<ParsedCalendar, ParseError> {
    parse_as(text, Kind::Event)
}

/// Parses the `kind` components of iCalendar text into [`ParsedCalendar::events`],
/// so tasks and journals recur with the same engine as events. Components without
/// a DTSTART are left out (with a diagnostic): they have no recurrence.
pub fn parse_as(text: &str, kind: Kind) -> Result<ParsedCalendar, ParseError> {
    let unfolded = unfolded(text);
    let cal = read(&unfolded)?;
    from_syntax(&cal, kind)
}

/// The syntax tree of [`unfolded`] text.
///
/// The crate's plain parser reads it: its verbose twin (same grammar, errors with
/// line numbers) allocates on every alternative it tries, which made it most of
/// the cost of reading an event. Only text the plain parser rejects is read again
/// by the verbose one, for the message.
pub fn read(unfolded: &str) -> Result<icalendar::parser::Calendar<'_>, ParseError> {
    let mut components = read_components(unfolded)?;
    let root_is_calendar = components
        .first()
        .is_some_and(|first| first.name.as_str() == "VCALENDAR");
    Ok(if root_is_calendar {
        let root = components.swap_remove(0);
        icalendar::parser::Calendar {
            properties: root.properties,
            components: root.components,
        }
    } else {
        icalendar::parser::Calendar {
            components,
            properties: Vec::new(),
        }
    })
}

/// Deepest nesting of components accepted (VCALENDAR > VEVENT > VALARM is 3;
/// the parser recurses per level, so thousands of levels would exhaust a stack).
pub const MAX_NESTING: usize = 8;

/// Refuses text nested deeper than [`MAX_NESTING`], before the parser sees it.
fn check_nesting(unfolded: &str) -> Result<(), ParseError> {
    let mut depth = 0usize;
    for line in unfolded.split('\n') {
        let line = line.trim_end_matches('\r');
        let name = |prefix: &str| {
            line.get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        };
        if name("BEGIN:") {
            depth += 1;
            if depth > MAX_NESTING {
                return Err(ParseError::Syntax(format!(
                    "components are nested more than {MAX_NESTING} deep (at \"{}\")",
                    line.chars().take(40).collect::<String>()
                )));
            }
        } else if name("END:") {
            depth = depth.saturating_sub(1);
        }
    }
    Ok(())
}

/// The top-level components of [`unfolded`] text, as [`read`] reads them.
pub fn read_components(unfolded: &str) -> Result<Vec<Component<'_>>, ParseError> {
    check_nesting(unfolded)?;
    icalendar::parser::read_calendar_simple(unfolded).map_err(|_| {
        let message = match icalendar::parser::read_components(unfolded) {
            Err(verbose) => verbose.lines().take(6).collect::<Vec<_>>().join(" "),
            // The two parsers share one grammar; should they ever disagree, the
            // text is still refused, without a line number.
            Ok(_) => "the text does not follow the iCalendar grammar".to_owned(),
        };
        ParseError::Syntax(message)
    })
}

/// [`parse_as`] for a syntax tree already read (callers that also copy properties
/// from the tree read the text once).
pub fn from_syntax(
    cal: &icalendar::parser::Calendar<'_>,
    kind: Kind,
) -> Result<ParsedCalendar, ParseError> {
    if cal.components.is_empty() && cal.properties.is_empty() {
        return Err(ParseError::NoCalendar);
    }
    let mut out = ParsedCalendar::default();
    for c in &cal.components {
        let name = c.name.as_str();
        if name != kind.name()
            && name != "VTIMEZONE"
            && !out.other_components.iter().any(|n| n == name)
        {
            out.other_components.push(name.to_owned());
        }
    }
    // A bare VEVENT (no VCALENDAR wrapper) is accepted as well.
    let mut zone_defs = CalendarZones {
        defs: cal
            .components
            .iter()
            .filter(|c| c.name.as_str() == "VTIMEZONE")
            .filter_map(|c| Some((c.find_prop("TZID")?.val.as_str().trim().to_owned(), c)))
            .collect(),
        built: HashMap::new(),
    };
    if let Some(p) = cal
        .properties
        .iter()
        .find(|p| p.name.as_str() == "X-WR-TIMEZONE")
    {
        match zones::resolve(p.val.as_str(), |name| {
            zone_defs.get(name, &mut out.diagnostics)
        }) {
            Resolution::Zone(z) => out.x_wr_timezone = Some(z),
            Resolution::Unknown => out.diagnostics.push(format!(
                "X-WR-TIMEZONE \"{}\" is not a known zone",
                p.val.as_str()
            )),
        }
    }
    let mut reader = Reader {
        zones: &mut zone_defs,
        diagnostics: &mut out.diagnostics,
        errors: &mut out.errors,
    };
    for (index, c) in cal
        .components
        .iter()
        .filter(|c| c.name.as_str() == kind.name())
        .enumerate()
    {
        if let Some(mut event) = reader.vevent(c, kind) {
            event.index = index;
            out.events.push(event);
        }
    }
    Ok(out)
}

/// LF-only and CR-only line ends become CRLF, which the parser expects.
fn normalize(text: &str) -> String {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = String::with_capacity(text.len() + text.len() / 40);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\r\n");
            }
            '\n' => out.push_str("\r\n"),
            c => out.push(c),
        }
    }
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out
}

/// A parameter of `p` (case-insensitive name), unquoted.
pub(crate) fn param<'a>(p: &'a Property<'_>, key: &str) -> Option<&'a str> {
    p.params
        .iter()
        .find(|x| x.key.as_str().eq_ignore_ascii_case(key))
        .and_then(|x| x.val.as_ref())
        .map(|v| v.as_str().trim_matches('"'))
}

/// Parses `+HHMM[SS]` / `-HHMM[SS]` into seconds.
fn parse_offset(s: &str) -> Option<i32> {
    let s = s.trim();
    let (sign, digits) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => (1, s),
    };
    if !(digits.len() == 4 || digits.len() == 6) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| digits.get(r).and_then(|d| d.parse::<i32>().ok());
    let secs = n(0..2)? * 3600 + n(2..4)? * 60 + if digits.len() == 6 { n(4..6)? } else { 0 };
    Some(sign * secs)
}

pub fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y%m%d").ok()
}

pub fn parse_naive(s: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(s.trim().trim_end_matches(['Z', 'z']), "%Y%m%dT%H%M%S").ok()
}

/// Longest DURATION accepted (about 100 years): anything longer is a mistake or an
/// attack, and would overflow date arithmetic further on.
pub const MAX_DURATION: Duration = Duration::days(36_600);

/// RFC 5545 DURATION: `[+-]P[nW]` or `[+-]P[nD][T[nH][nM][nS]]`; None when it is
/// malformed or longer than [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (neg, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let rest = rest.strip_prefix(['P', 'p'])?;
    let mut total = Duration::zero();
    let mut number = String::new();
    let mut in_time = false;
    let mut any = false;
    for c in rest.chars() {
        match c.to_ascii_uppercase() {
            d if d.is_ascii_digit() => number.push(d),
            'T' => in_time = true,
            unit => {
                let n: i64 = number.parse().ok()?;
                number.clear();
                any = true;
                let part = match (unit, in_time) {
                    ('W', false) => Duration::try_weeks(n),
                    ('D', false) => Duration::try_days(n),
                    ('H', true) => Duration::try_hours(n),
                    ('M', true) => Duration::try_minutes(n),
                    ('S', true) => Duration::try_seconds(n),
                    _ => return None,
                }?;
                total = total.checked_add(&part)?;
                if total > MAX_DURATION {
                    return None;
                }
            }
        }
    }
    if !number.is_empty() || !any {
        return None;
    }
    Some(if neg { -total } else { total })
}

fn vtimezone(
    c: &Component<'_>,
    diagnostics: &mut Vec<String>,
) -> Option<(String, Arc<CustomZone>)> {
    let tzid = c.find_prop("TZID")?.val.as_str().to_owned();
    let mut observances = Vec::new();
    for sub in &c.components {
        let kind = sub.name.as_str();
        if kind != "STANDARD" && kind != "DAYLIGHT" {
            continue;
        }
        // Some producers write the onset as a DATE; its midnight is unambiguous.
        let start = sub.find_prop("DTSTART").and_then(|p| {
            let v = p.val.as_str();
            parse_naive(v).or_else(|| Some(parse_date(v)?.and_time(chrono::NaiveTime::MIN)))
        });
        let from = sub
            .find_prop("TZOFFSETFROM")
            .and_then(|p| parse_offset(p.val.as_str()));
        let to = sub
            .find_prop("TZOFFSETTO")
            .and_then(|p| parse_offset(p.val.as_str()));
        let (Some(start), Some(offset_from), Some(offset_to)) = (start, from, to) else {
            diagnostics.push(format!(
                "VTIMEZONE {tzid}: a {kind} lacks DTSTART or offsets; ignored"
            ));
            continue;
        };
        let rdates = sub
            .properties
            .iter()
            .filter(|p| p.name.as_str() == "RDATE")
            .flat_map(|p| {
                p.val
                    .as_str()
                    .split(',')
                    .filter_map(parse_naive)
                    .collect::<Vec<_>>()
            })
            .collect();
        observances.push(Observance {
            start,
            offset_from,
            offset_to,
            rrule: sub.find_prop("RRULE").map(|p| p.val.as_str().to_owned()),
            rdates,
        });
    }
    if observances.is_empty() {
        diagnostics.push(format!("VTIMEZONE {tzid} has no usable observances"));
        return None;
    }
    Some((tzid.clone(), Arc::new(CustomZone::new(&tzid, &observances))))
}

/// The calendar's VTIMEZONE components, turned into zones only when a TZID needs
/// one (Outlook's Windows names and IANA names never do).
struct CalendarZones<'c> {
    defs: Vec<(String, &'c Component<'c>)>,
    built: HashMap<String, Option<Arc<CustomZone>>>,
}

/// Most VTIMEZONEs one object may have built (a real object uses one or two).
const MAX_CUSTOM_ZONES: usize = 16;

impl CalendarZones<'_> {
    fn get(&mut self, name: &str, diagnostics: &mut Vec<String>) -> Option<Arc<CustomZone>> {
        if let Some(known) = self.built.get(name) {
            return known.clone();
        }
        if self.built.len() >= MAX_CUSTOM_ZONES {
            diagnostics.push(format!(
                "VTIMEZONE {name}: more than {MAX_CUSTOM_ZONES} time zones in one object; not read"
            ));
            return None;
        }
        let zone = self
            .defs
            .iter()
            .find(|(tzid, _)| tzid == name)
            .and_then(|(_, c)| vtimezone(c, diagnostics))
            .map(|(_, zone)| zone);
        self.built.insert(name.to_owned(), zone.clone());
        zone
    }
}

struct Reader<'a, 'c> {
    zones: &'a mut CalendarZones<'c>,
    diagnostics: &'a mut Vec<String>,
    errors: &'a mut Vec<String>,
}

impl Reader<'_, '_> {
    fn vevent(&mut self, c: &Component<'_>, kind: Kind) -> Option<VEvent> {
        let uid = c
            .find_prop("UID")
            .map(|p| p.val.as_str().to_owned())
            .unwrap_or_default();
        let Some(start) = c.find_prop("DTSTART").and_then(|p| self.time(p, &uid)) else {
            let what = match c.find_prop("DTSTART") {
                Some(p) => format!(
                    "its DTSTART \"{}\" is not a valid date or date-time",
                    p.val.as_str()
                ),
                None => "it has no DTSTART".to_owned(),
            };
            let message = format!("{} {uid:?} cannot be placed in time: {what}", kind.name());
            // Tasks and journals may lack a start (RFC 5545 §3.6.2); an event may not.
            if kind == Kind::Event {
                self.errors.push(message);
            } else {
                self.diagnostics.push(format!("{message}; ignored"));
            }
            return None;
        };
        let duration = c.find_prop("DURATION").and_then(|p| {
            let parsed = parse_duration(p.val.as_str());
            if parsed.is_none() {
                self.errors.push(format!(
                    "{} {uid:?}: DURATION \"{}\" is not a duration of at most {} days",
                    kind.name(),
                    p.val.as_str(),
                    MAX_DURATION.num_days()
                ));
            }
            parsed
        });
        let mut event = VEvent {
            index: 0,
            summary: c.find_prop("SUMMARY").map(|p| p.val.as_str().to_owned()),
            location: c.find_prop("LOCATION").map(|p| p.val.as_str().to_owned()),
            description: c
                .find_prop("DESCRIPTION")
                .map(|p| p.val.as_str().to_owned()),
            start,
            end: c
                .find_prop(kind.end_property())
                .and_then(|p| self.time(p, &uid)),
            duration,
            rrules: Vec::new(),
            rdates: Vec::new(),
            exdates: Vec::new(),
            recurrence_id: None,
            this_and_future: false,
            sequence: c
                .find_prop("SEQUENCE")
                .and_then(|p| p.val.as_str().trim().parse().ok())
                .unwrap_or(0),
            status: c.find_prop("STATUS").and_then(|p| {
                match p.val.as_str().trim().to_ascii_uppercase().as_str() {
                    "CANCELLED" => Some(EventStatus::Cancelled),
                    "TENTATIVE" => Some(EventStatus::Tentative),
                    "CONFIRMED" => Some(EventStatus::Confirmed),
                    _ => None,
                }
            }),
            transparent: c
                .find_prop("TRANSP")
                .is_some_and(|p| p.val.as_str().trim().eq_ignore_ascii_case("TRANSPARENT")),
            ms_busy_status: c
                .find_prop("X-MICROSOFT-CDO-BUSYSTATUS")
                .map(|p| p.val.as_str().trim().to_ascii_uppercase()),
            uid,
        };
        for p in &c.properties {
            match p.name.as_str() {
                "RRULE" => event.rrules.push(p.val.as_str().to_owned()),
                "EXDATE" => {
                    for v in p.val.as_str().split(',') {
                        if let Some(t) = self.value(p, v, &event.uid) {
                            event.exdates.push(t);
                        }
                    }
                }
                "RDATE" => {
                    let period =
                        param(p, "VALUE").is_some_and(|v| v.eq_ignore_ascii_case("PERIOD"));
                    for v in p.val.as_str().split(',') {
                        if let Some(rdate) = self.rdate(p, v, period, &event.uid) {
                            event.rdates.push(rdate);
                        }
                    }
                }
                "RECURRENCE-ID" => {
                    event.recurrence_id = self.time(p, &event.uid);
                    event.this_and_future =
                        param(p, "RANGE").is_some_and(|r| r.eq_ignore_ascii_case("THISANDFUTURE"));
                }
                _ => {}
            }
        }
        Some(event)
    }

    fn rdate(&mut self, p: &Property<'_>, v: &str, period: bool, uid: &str) -> Option<RDate> {
        match v.split_once('/') {
            Some((start, end)) if period || v.contains('/') => {
                let start = self.value(p, start, uid)?;
                let end = if end.trim_start_matches(['+', '-']).starts_with(['P', 'p']) {
                    PeriodEnd::Duration(parse_duration(end)?)
                } else {
                    PeriodEnd::At(self.value(p, end, uid)?)
                };
                Some(RDate::Period(start, end))
            }
            _ => self.value(p, v, uid).map(RDate::At),
        }
    }

    fn time(&mut self, p: &Property<'_>, uid: &str) -> Option<IcalTime> {
        self.value(p, p.val.as_str(), uid)
    }

    /// One DATE / DATE-TIME value of property `p` (which supplies VALUE and TZID).
    fn value(&mut self, p: &Property<'_>, v: &str, uid: &str) -> Option<IcalTime> {
        let v = v.trim();
        let is_date = param(p, "VALUE").is_some_and(|x| x.eq_ignore_ascii_case("DATE"))
            || (v.len() == 8 && !v.contains('T'));
        let parsed = if is_date {
            parse_date(v).map(IcalTime::Date)
        } else if v.ends_with(['Z', 'z']) {
            parse_naive(v).map(|n| IcalTime::Utc(n.and_utc()))
        } else {
            parse_naive(v).map(|n| match param(p, "TZID") {
                None => IcalTime::Floating(n),
                Some(tzid) => match zones::resolve(tzid, |name| self.zones.get(name, self.diagnostics)) {
                    Resolution::Zone(z) => IcalTime::Zoned(n, z),
                    Resolution::Unknown => {
                        self.diagnostics.push(format!(
                            "event {uid:?}: time zone \"{tzid}\" is unknown; its times are read in the calendar's default zone"
                        ));
                        IcalTime::Floating(n)
                    }
                },
            })
        };
        if parsed.is_none() {
            self.diagnostics.push(format!(
                "event {uid:?}: {} value \"{v}\" is not a valid date or date-time; ignored",
                p.name.as_str()
            ));
        }
        parsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("PT1H30M"), Some(Duration::minutes(90)));
        assert_eq!(parse_duration("P1W"), Some(Duration::weeks(1)));
        assert_eq!(parse_duration("-P1DT2H"), Some(-Duration::hours(26)));
        assert_eq!(parse_duration("P"), None);
        assert_eq!(parse_duration("PT5"), None);
        assert_eq!(parse_duration("1H"), None);
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("+0130"), Some(5400));
        assert_eq!(parse_offset("-0800"), Some(-28800));
        assert_eq!(parse_offset("+013015"), Some(5415));
        assert_eq!(parse_offset("bad"), None);
    }

    #[test]
    fn reads_lf_only_and_reports_unknown_zones() {
        let text = "BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nUID:a\nDTSTART;TZID=Nowhere/Land:20260101T100000\nDURATION:PT1H\nEXDATE;TZID=Europe/Paris:20260108T100000,20260115T100000\nEND:VEVENT\nEND:VCALENDAR\n";
        let cal = parse(text).unwrap();
        assert_eq!(cal.events.len(), 1);
        let e = &cal.events[0];
        assert!(matches!(e.start, IcalTime::Floating(_)));
        assert_eq!(e.exdates.len(), 2);
        assert_eq!(e.duration, Some(Duration::hours(1)));
        assert_eq!(cal.diagnostics.len(), 1, "{:?}", cal.diagnostics);
        assert!(cal.diagnostics[0].contains("Nowhere/Land"));
    }

    #[test]
    fn deep_nesting_is_refused_before_the_parser_recurses() {
        let text = format!(
            "BEGIN:VCALENDAR\r\n{}{}END:VCALENDAR\r\n",
            "BEGIN:VEVENT\r\n".repeat(100_000),
            "END:VEVENT\r\n".repeat(100_000)
        );
        match parse(&text) {
            Err(ParseError::Syntax(msg)) => assert!(msg.contains("nested"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_a_syntax_error() {
        assert!(matches!(
            parse("BEGIN:VCALENDAR\r\nthis is not ical\r\n"),
            Err(ParseError::Syntax(_))
        ));
    }
}
