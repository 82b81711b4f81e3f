//! The booking domain: what a booking is and which bookings are valid.
//!
//! No HTTP, JSON-protocol or iCalendar knowledge lives here: the API, the feeds and
//! (later) CalDAV translate to and from these types. The types are serde-serialisable
//! because the store persists them, not because they are a wire format.

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Limits that keep a booking meaningful and bounded in size.
pub mod limits {
    pub const TITLE_CHARS: usize = 500;
    pub const TEXT_CHARS: usize = 10_000;
    pub const SHORT_CHARS: usize = 500;
    pub const METADATA_BYTES: usize = 16 * 1024;
    /// Longest booking, timed or all-day.
    pub const MAX_DAYS: i64 = 366;
    pub const MIN_YEAR: i32 = 1900;
    pub const MAX_YEAR: i32 = 2200;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BookingStatus {
    Confirmed,
    Tentative,
    Cancelled,
}

impl BookingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::Confirmed => "confirmed",
            BookingStatus::Tentative => "tentative",
            BookingStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "confirmed" => Some(BookingStatus::Confirmed),
            "tentative" => Some(BookingStatus::Tentative),
            "cancelled" => Some(BookingStatus::Cancelled),
            _ => None,
        }
    }
}

/// When a booking takes place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BookingTime {
    /// Exact instants; the offsets are kept as the client sent them.
    Timed {
        start: DateTime<FixedOffset>,
        end: DateTime<FixedOffset>,
    },
    /// Whole days in the booking's zone; `end` is exclusive.
    AllDay { start: NaiveDate, end: NaiveDate },
}

/// How an interval of time is taken, ordered by how strongly it blocks booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusyKind {
    /// Shown but not blocking (transparent, cancelled, Outlook "free").
    Free,
    Tentative,
    Busy,
    /// Out of office.
    Oof,
}

impl BusyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BusyKind::Free => "free",
            BusyKind::Tentative => "tentative",
            BusyKind::Busy => "busy",
            BusyKind::Oof => "oof",
        }
    }
}

/// A half-open UTC interval `[start, end)` in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Span {
    pub start: i64,
    pub end: i64,
}

impl Span {
    pub fn new(start: i64, end: i64) -> Self {
        Span { start, end }
    }

    pub fn from_instants(start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        Span::new(start.timestamp_millis(), end.timestamp_millis())
    }

    /// Whether two spans share time (touching ends do not overlap).
    pub fn overlaps(&self, other: &Span) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// RFC 3339 UTC text of an instant in milliseconds since the epoch, as the API
/// and webhooks write it (`None` outside chrono's range).
pub fn instant_rfc3339(ms: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// A requested change. `None` leaves a field as it is; for optional fields
/// `Some(None)` clears it. Times are kept as text until the final `all_day` is known.
#[derive(Debug, Clone, Default)]
pub struct BookingPatch {
    pub all_day: Option<bool>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub time_zone: Option<chrono_tz::Tz>,
    pub title: Option<String>,
    pub service: Option<Option<String>>,
    pub customer: Option<Option<Customer>>,
    pub location: Option<Option<String>>,
    pub notes: Option<Option<String>>,
    pub status: Option<BookingStatus>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// iCalendar UID for a new booking (CalDAV); the id otherwise.
    pub uid: Option<String>,
    /// The iCalendar text a CalDAV client wrote, to serve back as written.
    pub calendar_text: Option<String>,
    /// The resources the booking takes (`None`: as it was, or the default).
    pub resources: Option<Vec<String>>,
}

/// The reserved source id of a tenant's own bookings.
pub const BOOKINGS_SOURCE: &str = "bookings";

/// Where a tenant's busy time comes from besides its bookings: a calendar of
/// iCalendar objects (a staff calendar, an imported Google/Outlook/iCal calendar).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub id: String,
    pub name: String,
    /// Events here never block time (CalDAV `schedule-calendar-transp: transparent`).
    pub transparent: bool,
    #[serde(default)]
    pub description: Option<String>,
    /// Apple `calendar-color`, as the client wrote it (`#RRGGBBAA`).
    #[serde(default)]
    pub color: Option<String>,
    /// Apple `calendar-order`.
    #[serde(default)]
    pub order: Option<u32>,
    /// Imported from a provider: clients may read, not write.
    #[serde(default)]
    pub read_only: bool,
    /// Component types it holds (CalDAV supported-calendar-component-set); empty
    /// means all of [`CALENDAR_COMPONENTS`] (a calendar made without saying, as
    /// clients expect). Only events take time.
    #[serde(default)]
    pub components: Vec<String>,
    /// An external calendar this source mirrors (import) or feeds (export).
    #[serde(default)]
    pub remote: Option<RemoteSource>,
    /// The resource whose calendar this is; `None` (and every source stored
    /// before resources existed): the whole tenant's, blocking every resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// Component types a calendar may be made to hold.
pub const CALENDAR_COMPONENTS: [&str; 3] = ["VEVENT", "VTODO", "VJOURNAL"];

impl Source {
    /// A writable, blocking calendar named `name`.
    pub fn new(id: &str, name: &str) -> Source {
        Source {
            id: id.to_owned(),
            name: name.to_owned(),
            transparent: false,
            description: None,
            color: None,
            order: None,
            read_only: false,
            components: Vec::new(),
            remote: None,
            resource: None,
        }
    }

    /// The component types this calendar holds.
    pub fn component_set(&self) -> Vec<&str> {
        if self.components.is_empty() {
            CALENDAR_COMPONENTS.to_vec()
        } else {
            self.components.iter().map(String::as_str).collect()
        }
    }
}

/// One occurrence as kept in the busy index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusySpan {
    pub span: Span,
    pub kind: BusyKind,
}

/// An iCalendar object stored in a source, with what the engine derived from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalendarObject {
    /// Name within the source (CalDAV resource name, provider event id, ...).
    pub id: String,
    pub uid: Option<String>,
    /// The iCalendar text exactly as received.
    pub ics: String,
    pub etag: String,
    pub updated: DateTime<Utc>,
    /// Has RRULE/RDATE: must be re-expanded as the horizon moves.
    pub recurring: bool,
    /// What could not be honoured exactly (unknown zone, bad EXDATE, ...).
    pub diagnostics: Vec<String>,
    /// Occurrences within the horizon, as indexed, with how each takes time
    /// (`Free` ones are indexed for time-range queries but block nothing).
    pub occurrences: Vec<BusySpan>,
}

/// A booking overlapped by calendar time that appeared after it was made (an
/// imported event, a staff calendar entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// Stable for one booking/object pair, so re-imports do not repeat it. Records
    /// written before 2026-12 have one per overlapping occurrence instead; they are
    /// folded into one when the object is next written or re-expanded.
    pub id: String,
    pub booking_id: String,
    pub source: String,
    pub object_id: String,
    /// The overlapping time of the first overlapping occurrence.
    pub span: Span,
    /// How many occurrences of the object overlap the booking (1 in old records).
    #[serde(default = "one")]
    pub occurrences: u32,
    pub kind: BusyKind,
    pub detected: DateTime<Utc>,
    pub acknowledged: Option<DateTime<Utc>>,
    /// Set when the overlap went away (event moved or removed, booking moved).
    pub resolved: Option<DateTime<Utc>>,
    pub webhook: WebhookState,
}

fn one() -> u32 {
    1
}

/// Delivery of a conflict to the tenant's webhook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookState {
    pub delivered: Option<DateTime<Utc>>,
    pub attempts: u32,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

impl Customer {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.email.is_none() && self.phone.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Booking {
    pub id: String,
    /// iCalendar UID; the id for bookings made through the API.
    pub uid: String,
    pub tenant: String,
    pub time: BookingTime,
    /// Zone the booking is shown in (and all-day dates are anchored to).
    pub time_zone: Tz,
    pub title: String,
    pub service: Option<String>,
    pub customer: Option<Customer>,
    pub location: Option<String>,
    pub notes: Option<String>,
    pub status: BookingStatus,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    /// iCalendar SEQUENCE: bumped on every revision.
    pub sequence: u32,
    /// Strong entity tag of this revision, quoted (`"..."`).
    pub etag: String,
    /// The iCalendar text a CalDAV client wrote, served back as written (with its
    /// alarms and X- properties) while the booking is unchanged since.
    #[serde(default)]
    pub calendar_text: Option<String>,
    /// The `sequence` the booking had when `calendar_text` was written.
    #[serde(default)]
    pub calendar_text_sequence: Option<u32>,
    /// The resources it takes, one unit of each. Empty on a tenant without
    /// declared resources (it takes the implicit one; stored records stay as
    /// they were) and on bookings stored before resources existed: on a
    /// tenant that now declares resources those are tenant-wide and take
    /// every resource, so no conflict is ever lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
}

/// One thing wrong with a booking, named by its field (`customer.email`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Midnight of `date` in `tz`, or the first instant after a DST gap at midnight.
pub fn start_of_day(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    match tz.from_local_datetime(&midnight).earliest() {
        Some(t) => t.with_timezone(&Utc),
        // Zones such as America/Santiago skip midnight: the day starts an hour later.
        None => (1..=4)
            .filter_map(|h| {
                tz.from_local_datetime(&(midnight + chrono::Duration::hours(h)))
                    .earliest()
            })
            .map(|t| t.with_timezone(&Utc))
            .next()
            .unwrap_or_else(|| Utc.from_utc_datetime(&midnight)),
    }
}

/// Whether a booking naming `resources` blocks `resource`: it names it, or it
/// names none (the implicit resource, or a tenant-wide booking stored before
/// its tenant declared resources).
pub fn takes(resources: &[String], resource: &str) -> bool {
    resources.is_empty() || resources.iter().any(|r| r == resource)
}

impl Booking {
    /// Whether the booking blocks `resource`: it names it, or it names none
    /// (the implicit resource, or a tenant-wide booking stored before the
    /// tenant declared resources, which takes every one).
    pub fn takes(&self, resource: &str) -> bool {
        takes(&self.resources, resource)
    }

    /// The UTC interval this booking occupies.
    pub fn span(&self) -> Span {
        match &self.time {
            BookingTime::Timed { start, end } => {
                Span::new(start.timestamp_millis(), end.timestamp_millis())
            }
            BookingTime::AllDay { start, end } => Span::from_instants(
                start_of_day(*start, self.time_zone),
                start_of_day(*end, self.time_zone),
            ),
        }
    }

    pub fn is_all_day(&self) -> bool {
        matches!(self.time, BookingTime::AllDay { .. })
    }

    /// How this booking blocks time: cancelled bookings do not.
    pub fn busy_kind(&self) -> BusyKind {
        match self.status {
            BookingStatus::Confirmed => BusyKind::Busy,
            BookingStatus::Tentative => BusyKind::Tentative,
            BookingStatus::Cancelled => BusyKind::Free,
        }
    }

    /// Checks the invariants every stored booking satisfies.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        use limits::*;
        let mut errors = Vec::new();
        let (start_year, end_year, days) = match &self.time {
            BookingTime::Timed { start, end } => {
                if end <= start {
                    errors.push(FieldError::new("end", "must be after start"));
                }
                // RFC 3339 allows second 60; iCalendar readers and clients do not.
                for (field, t) in [("start", start), ("end", end)] {
                    if chrono::Timelike::nanosecond(t) >= 1_000_000_000 {
                        errors.push(FieldError::new(
                            field,
                            "has second 60 (a leap second), which calendars cannot show: use second 59 or the next minute",
                        ));
                    }
                }
                (start.year_ce(), end.year_ce(), (*end - *start).num_days())
            }
            BookingTime::AllDay { start, end } => {
                if end <= start {
                    errors.push(FieldError::new(
                        "end",
                        "must be after start (the end date of an all-day booking is exclusive)",
                    ));
                }
                (start.year_ce(), end.year_ce(), (*end - *start).num_days())
            }
        };
        for (field, year) in [("start", start_year), ("end", end_year)] {
            if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
                errors.push(FieldError::new(
                    field,
                    format!("year must be between {MIN_YEAR} and {MAX_YEAR}"),
                ));
            }
        }
        if days > MAX_DAYS {
            errors.push(FieldError::new(
                "end",
                format!("a booking may last at most {MAX_DAYS} days"),
            ));
        }
        if self.title.trim().is_empty() {
            errors.push(FieldError::new("title", "must not be empty"));
        }
        check_text(&mut errors, "title", Some(&self.title), TITLE_CHARS);
        check_text(&mut errors, "service", self.service.as_deref(), SHORT_CHARS);
        check_text(
            &mut errors,
            "location",
            self.location.as_deref(),
            SHORT_CHARS,
        );
        check_text(&mut errors, "notes", self.notes.as_deref(), TEXT_CHARS);
        if let Some(c) = &self.customer {
            check_text(&mut errors, "customer.name", c.name.as_deref(), SHORT_CHARS);
            check_text(
                &mut errors,
                "customer.phone",
                c.phone.as_deref(),
                SHORT_CHARS,
            );
            check_text(
                &mut errors,
                "customer.email",
                c.email.as_deref(),
                SHORT_CHARS,
            );
            if let Some(email) = &c.email
                && !is_email_address(email)
            {
                errors.push(FieldError::new(
                    "customer.email",
                    "is not an email address such as name@example.com (one @, a domain with a dot, no spaces, quotes, angle brackets or other punctuation)",
                ));
            }
        }
        let metadata_size = serde_json::to_vec(&self.metadata).map_or(0, |v| v.len());
        if metadata_size > METADATA_BYTES {
            errors.push(FieldError::new(
                "metadata",
                format!("is {metadata_size} bytes as JSON; at most {METADATA_BYTES} allowed"),
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Whether `s` is a plain e-mail address, `local@domain.tld`: one `@`, a local
/// part without spaces, quotes, angle brackets or other RFC 5322 specials (so it
/// is safe in headers, iCalendar and HTML alike), and a domain of dot-separated
/// labels of letters, digits and inner hyphens.
pub fn is_email_address(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let local_ok = (1..=64).contains(&local.len())
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !"\"(),:;<>@[\\]`".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels.last().is_some_and(|tld| {
            tld.chars().count() >= 2 && !tld.chars().all(|c| c.is_ascii_digit())
        });
    s.len() <= 254 && local_ok && domain_ok
}

trait YearCe {
    fn year_ce(&self) -> i32;
}
impl YearCe for DateTime<FixedOffset> {
    fn year_ce(&self) -> i32 {
        chrono::Datelike::year(self)
    }
}
impl YearCe for NaiveDate {
    fn year_ce(&self) -> i32 {
        chrono::Datelike::year(self)
    }
}

fn check_text(errors: &mut Vec<FieldError>, field: &str, value: Option<&str>, max_chars: usize) {
    let Some(value) = value else { return };
    let chars = value.chars().count();
    if chars > max_chars {
        errors.push(FieldError::new(
            field,
            format!("is {chars} characters long; at most {max_chars} allowed"),
        ));
    }
    // Tabs and newlines are text; other control characters corrupt feeds and clients.
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        errors.push(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Booking {
        let start = DateTime::parse_from_rfc3339("2026-12-01T10:00:00+01:00").unwrap();
        Booking {
            id: "b1".into(),
            uid: "b1".into(),
            tenant: "demo".into(),
            time: BookingTime::Timed {
                start,
                end: start + chrono::Duration::minutes(30),
            },
            time_zone: chrono_tz::Europe::Paris,
            title: "Haircut".into(),
            service: None,
            customer: None,
            location: None,
            notes: None,
            status: BookingStatus::Confirmed,
            metadata: Default::default(),
            created: Utc::now(),
            updated: Utc::now(),
            sequence: 0,
            etag: String::new(),
            calendar_text: None,
            calendar_text_sequence: None,
            resources: Vec::new(),
        }
    }

    #[test]
    fn all_day_span_is_anchored_in_the_zone() {
        let mut b = sample();
        b.time = BookingTime::AllDay {
            start: NaiveDate::from_ymd_opt(2026, 7, 1).unwrap(),
            end: NaiveDate::from_ymd_opt(2026, 7, 2).unwrap(),
        };
        let span = b.span();
        // Paris is UTC+2 in July: the day starts at 22:00 UTC the evening before.
        let expected = DateTime::parse_from_rfc3339("2026-06-30T22:00:00Z").unwrap();
        assert_eq!(span.start, expected.timestamp_millis());
        assert_eq!(span.end - span.start, 24 * 3600 * 1000);
    }

    #[test]
    fn start_of_day_survives_midnight_dst_gap() {
        // Santiago springs forward at 00:00 on 2026-09-06: the day begins at 01:00.
        let d = NaiveDate::from_ymd_opt(2026, 9, 6).unwrap();
        let t = start_of_day(d, chrono_tz::America::Santiago);
        let local = t.with_timezone(&chrono_tz::America::Santiago);
        assert_eq!(local.date_naive(), d);
    }

    #[test]
    fn validation_names_fields() {
        let mut b = sample();
        if let BookingTime::Timed { start, end } = &mut b.time {
            *end = *start - chrono::Duration::minutes(1);
        }
        b.title = " ".into();
        b.customer = Some(Customer {
            email: Some("nobody".into()),
            ..Default::default()
        });
        let errors = b.validate().unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["end", "title", "customer.email"]);
    }

    #[test]
    fn email_addresses() {
        for good in [
            "ana@example.com",
            "ana.b+salon@mail.example.co.uk",
            "o'neil@exämple.de",
        ] {
            assert!(is_email_address(good), "{good}");
        }
        for bad in [
            "a@b.c\"><script>",
            "nobody",
            "a@@b.example",
            "a@b@c.example",
            "a b@example.com",
            "a@example",
            "a@-x.example",
            "a@x..example",
            ".a@example.com",
            "<a>@example.com",
            "a@example.c",
            "a\t@example.com",
        ] {
            assert!(!is_email_address(bad), "{bad}");
        }
    }

    #[test]
    fn leap_seconds_are_refused() {
        let mut b = sample();
        let leap = DateTime::parse_from_rfc3339("2027-06-30T23:59:60Z").unwrap();
        b.time = BookingTime::Timed {
            start: leap,
            end: leap + chrono::Duration::minutes(30),
        };
        let errors = b.validate().unwrap_err();
        assert_eq!(errors[0].field, "start", "{errors:?}");
    }

    #[test]
    fn span_overlap_is_half_open() {
        assert!(Span::new(0, 10).overlaps(&Span::new(9, 20)));
        assert!(!Span::new(0, 10).overlaps(&Span::new(10, 20)));
    }
}

/// How a source is tied to an external calendar (`None` on [`Source::remote`]
/// for calendars made over CalDAV).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSource {
    pub kind: ProviderKind,
    /// Google/Graph calendar id, or the feed URL (a credential: never logged).
    pub target: String,
    pub direction: Direction,
    /// Minutes between scheduled syncs.
    pub interval_minutes: u32,
    pub enabled: bool,
    /// What exported events reveal (export and both directions only).
    #[serde(default)]
    pub privacy: ExportPrivacy,
}

/// How much of a booking an exported event shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportPrivacy {
    /// Title, service, location, customer details and notes.
    #[default]
    Full,
    /// An opaque "Busy" block: times only.
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Import,
    Export,
    Both,
}

impl Direction {
    pub fn imports(self) -> bool {
        matches!(self, Direction::Import | Direction::Both)
    }

    pub fn exports(self) -> bool {
        matches!(self, Direction::Export | Direction::Both)
    }
}

/// Where a source's sync stands; kept across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    #[serde(default)]
    pub cursor: Cursor,
    pub last_success: Option<DateTime<Utc>>,
    pub last_attempt: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub next_run: Option<DateTime<Utc>>,
    /// The account must be connected again (revoked grant); no syncs until then.
    #[serde(default)]
    pub needs_reauth: bool,
    /// The last run failed in a way no retry mends (the feed URL's address is
    /// refused): no scheduled syncs until the source or the gateway's
    /// configuration changes, or someone asks for one.
    #[serde(default)]
    pub permanent_error: bool,
    /// OAuth sources: whether tokens are stored.
    #[serde(default)]
    pub connected: bool,
    #[serde(default)]
    pub consecutive_failures: u32,
}

/// One sync run, for the source's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncLog {
    pub started: DateTime<Utc>,
    pub duration_ms: u64,
    /// `incremental` or `full`.
    pub mode: String,
    pub created: u32,
    pub updated: u32,
    pub deleted: u32,
    /// Set when the run failed; the cache was left as it was.
    pub error: Option<String>,
    /// Events the run left out (unreadable, over the gateway's limits), each
    /// with the reason; at most [`SyncLog::MAX_SKIPPED`] are named.
    #[serde(default)]
    pub skipped: Vec<SkippedItem>,
    /// How many were left out in all.
    #[serde(default)]
    pub skipped_total: u32,
}

impl SyncLog {
    pub const MAX_SKIPPED: usize = 50;
}

/// An imported event a sync run did not store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedItem {
    /// The series (the provider's event id, or the feed's UID).
    pub series: String,
    pub reason: String,
}

/// Which API a source talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Google,
    Microsoft,
    Ics,
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Google => "google",
            ProviderKind::Microsoft => "microsoft",
            ProviderKind::Ics => "ics",
        }
    }

    /// Whether connecting needs the OAuth dance.
    pub fn uses_oauth(self) -> bool {
        !matches!(self, ProviderKind::Ics)
    }
}

/// Where a source stands with its provider between two syncs; opaque to the
/// engine, stored with the source and handed back on the next fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Google `nextSyncToken` / Graph `@odata.deltaLink`.
    #[serde(default)]
    pub token: Option<String>,
    /// iCal feeds: validators for conditional GET and a digest of the last body.
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub last_modified: Option<String>,
    #[serde(default)]
    pub body_sha256: Option<String>,
    /// iCal feeds: the URL to use next (after a permanent redirect).
    #[serde(default)]
    pub url: Option<String>,
}

/// The span of time occurrences are materialised for, relative to now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon {
    pub past_days: u32,
    pub future_days: u32,
}

impl Default for Horizon {
    fn default() -> Self {
        Horizon {
            past_days: 365,
            future_days: 730,
        }
    }
}

impl Horizon {
    /// The indexed window at `now`, aligned to whole days so it moves once a day.
    pub fn window(&self, now: DateTime<Utc>) -> Span {
        let today = now
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc();
        Span::from_instants(
            today - Duration::days(self.past_days.into()),
            today + Duration::days(i64::from(self.future_days) + 1),
        )
    }
}

/// A merged stretch of busy time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusyBlock {
    pub span: Span,
    /// The strongest kind covering the block (OOF > busy > tentative).
    pub kind: BusyKind,
    /// What contributes to it (filled on request).
    pub contributors: Vec<Contributor>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Contributor {
    pub source: String,
    pub object: String,
}
