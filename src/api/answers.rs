//! What the booking API answers: one `Serialize` type per JSON body, and view
//! structs that show a domain type (booking, busy entry, conflict, sync log ...)
//! in its wire shape. Handlers fill these; engines never build JSON for the API.
//!
//! Fields are declared in alphabetical order on purpose: these types replaced
//! `json!` maps, which serde_json (without `preserve_order`) writes with sorted
//! keys, so declaring them sorted keeps the answers byte for byte as they were.
//! `tests::declared_order_is_the_sorted_order` fails when a field is out of place.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::config::{IMPLICIT_RESOURCE, Resource, TenantConfig};
use crate::model::{
    Booking, BookingTime, BusyBlock, Contributor, Customer, Direction, ExportPrivacy, SkippedItem,
    Span, SyncLog, SyncStatus,
};
use crate::providers::RemoteCalendar;
use crate::store::BusyEntry;

/// RFC 3339 UTC text of an index instant (`None` outside chrono's range).
pub use crate::model::instant_rfc3339 as instant_text;

/// A booking as `GET/POST/PUT/PATCH …/bookings[/{id}]` answer it.
#[derive(Debug, Serialize)]
pub struct BookingView<'a> {
    pub all_day: bool,
    pub created: String,
    pub customer: Option<CustomerView<'a>>,
    /// Times in the booking's offset (timed) or dates (all day).
    pub end: String,
    pub etag: &'a str,
    /// Where the booking stands in each external calendar it is pushed to; only
    /// on `GET …/bookings/{id}`, and only when some source exports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exports: Option<Vec<crate::export::BookingExport>>,
    pub id: &'a str,
    pub location: Option<&'a str>,
    pub metadata: &'a serde_json::Map<String, Value>,
    pub notes: Option<&'a str>,
    /// The resources it takes: `["default"]` on a tenant without declared
    /// resources; empty for a booking stored before the tenant declared
    /// them (it takes every resource).
    pub resources: Vec<&'a str>,
    pub sequence: u32,
    pub service: Option<&'a str>,
    pub start: String,
    pub status: &'static str,
    pub time_zone: &'static str,
    pub title: &'a str,
    pub uid: &'a str,
    pub updated: String,
}

/// `b` as a tenant without declared resources shows it (its resources, or
/// the implicit one); handlers use [`BookingView::new`], which knows the tenant.
impl<'a> From<&'a Booking> for BookingView<'a> {
    fn from(b: &'a Booking) -> Self {
        BookingView::shown(b, !b.resources.is_empty())
    }
}

impl<'a> BookingView<'a> {
    /// `b` as `tenant`'s API shows it.
    pub fn new(b: &'a Booking, tenant: &TenantConfig) -> Self {
        BookingView::shown(b, tenant.declares_resources())
    }

    /// `b`, on a tenant that declares resources or not.
    fn shown(b: &'a Booking, declared_resources: bool) -> Self {
        let (start, end) = match &b.time {
            BookingTime::Timed { start, end } => (
                start.to_rfc3339_opts(SecondsFormat::AutoSi, false),
                end.to_rfc3339_opts(SecondsFormat::AutoSi, false),
            ),
            BookingTime::AllDay { start, end } => (start.to_string(), end.to_string()),
        };
        let ts = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        BookingView {
            all_day: b.is_all_day(),
            created: ts(&b.created),
            customer: b.customer.as_ref().map(CustomerView::from),
            end,
            etag: &b.etag,
            exports: None,
            id: &b.id,
            location: b.location.as_deref(),
            metadata: &b.metadata,
            notes: b.notes.as_deref(),
            resources: if declared_resources {
                b.resources.iter().map(String::as_str).collect()
            } else {
                vec![IMPLICIT_RESOURCE]
            },
            sequence: b.sequence,
            service: b.service.as_deref(),
            start,
            status: b.status.as_str(),
            time_zone: b.time_zone.name(),
            title: &b.title,
            uid: &b.uid,
            updated: ts(&b.updated),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CustomerView<'a> {
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    pub phone: Option<&'a str>,
}

impl<'a> From<&'a Customer> for CustomerView<'a> {
    fn from(c: &'a Customer) -> Self {
        CustomerView {
            email: c.email.as_deref(),
            name: c.name.as_deref(),
            phone: c.phone.as_deref(),
        }
    }
}

/// `GET …/bookings?start=&end=`
#[derive(Debug, Serialize)]
pub struct BookingList<'a> {
    pub bookings: Vec<BookingView<'a>>,
}

/// A busy-index entry as conflicts show it: when, how, and which object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BusyEntryView {
    pub end: Option<String>,
    /// Booking id or calendar object id.
    pub id: String,
    pub kind: &'static str,
    /// The resource it blocks, when the question was about resources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub source: String,
    pub start: Option<String>,
}

impl From<&BusyEntry> for BusyEntryView {
    fn from(e: &BusyEntry) -> Self {
        BusyEntryView {
            end: instant_text(e.span.end),
            id: e.object.clone(),
            kind: e.kind.as_str(),
            resource: e.resource.clone(),
            source: e.source.clone(),
            start: instant_text(e.span.start),
        }
    }
}

/// The busy entries a time overlaps: the first [`crate::bookings::LISTED_CONFLICTS`]
/// listed, all counted. Members of a 409 problem and of each availability slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConflictList {
    pub conflicts: Vec<BusyEntryView>,
    pub conflicts_total: usize,
    pub conflicts_truncated: bool,
}

impl ConflictList {
    /// Bounded: one recurring event can overlap a long slot thousands of times.
    pub fn new(found: &[BusyEntry]) -> Self {
        let listed = crate::bookings::listed_conflicts(found);
        ConflictList {
            conflicts: listed.iter().map(BusyEntryView::from).collect(),
            conflicts_total: found.len(),
            conflicts_truncated: listed.len() < found.len(),
        }
    }
}

/// `[start, end)` as RFC 3339 UTC text.
#[derive(Debug, Serialize)]
pub struct SpanView {
    pub end: Option<String>,
    pub start: Option<String>,
}

impl From<&Span> for SpanView {
    fn from(s: &Span) -> Self {
        SpanView {
            end: instant_text(s.end),
            start: instant_text(s.start),
        }
    }
}

/// `GET …/freebusy`
#[derive(Debug, Serialize)]
pub struct FreeBusyAnswer {
    pub busy: Vec<BusyBlockView>,
    pub end: Option<String>,
    /// With `resource=`: the resource asked about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub start: Option<String>,
}

/// `GET …/freebusy?resources=a,b`: busy blocks per resource.
#[derive(Debug, Serialize)]
pub struct ResourcesFreeBusyAnswer {
    pub end: Option<String>,
    pub resources: Vec<ResourceBusyView>,
    pub start: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ResourceBusyView {
    pub busy: Vec<BusyBlockView>,
    pub id: String,
}

/// One of a tenant's resources, as `GET …/resources` lists it.
#[derive(Debug, Serialize)]
pub struct ResourceView<'a> {
    pub buffer_minutes: u32,
    pub capacity: u32,
    pub id: &'a str,
    /// The one resource of a tenant that declares none.
    pub implicit: bool,
    pub kind: &'static str,
    pub name: &'a str,
    /// Whether it has opening hours of its own or the tenant's (false: any time).
    pub opening_hours: bool,
    pub time_zone: &'static str,
}

impl<'a> From<&'a Resource> for ResourceView<'a> {
    fn from(r: &'a Resource) -> Self {
        ResourceView {
            buffer_minutes: r.buffer_minutes,
            capacity: r.capacity,
            id: &r.id,
            implicit: r.implicit,
            kind: r.kind.as_str(),
            name: &r.name,
            opening_hours: r.opening_hours.is_some(),
            time_zone: r.timezone.name(),
        }
    }
}

/// `GET …/resources`
#[derive(Debug, Serialize)]
pub struct ResourceList<'a> {
    pub resources: Vec<ResourceView<'a>>,
}

#[derive(Debug, Serialize)]
pub struct BusyBlockView {
    pub end: Option<String>,
    pub kind: &'static str,
    /// Only with `detail=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<ContributorView>>,
    pub start: Option<String>,
}

impl BusyBlockView {
    pub fn new(b: &BusyBlock, detail: bool) -> Self {
        BusyBlockView {
            end: instant_text(b.span.end),
            kind: b.kind.as_str(),
            sources: detail.then(|| b.contributors.iter().map(ContributorView::from).collect()),
            start: instant_text(b.span.start),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ContributorView {
    pub id: String,
    pub source: String,
}

impl From<&Contributor> for ContributorView {
    fn from(c: &Contributor) -> Self {
        ContributorView {
            id: c.object.clone(),
            source: c.source.clone(),
        }
    }
}

/// `POST …/availability`
#[derive(Debug, Serialize)]
pub struct AvailabilityAnswer {
    pub slots: Vec<SlotAvailability>,
}

#[derive(Debug, Serialize)]
pub struct SlotAvailability {
    #[serde(flatten)]
    pub conflicts: ConflictList,
    pub end: Option<String>,
    pub free: bool,
    /// With a resource filter: the resources free for the slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<String>>,
    pub start: Option<String>,
}

/// `GET …/slots`
#[derive(Debug, Serialize)]
pub struct SlotsAnswer {
    pub buffer_minutes: u32,
    pub duration_minutes: i64,
    pub slots: Vec<SpanView>,
    pub step_minutes: i64,
    pub truncated: bool,
}

/// `GET …/slots?resource(s)=`: each slot with the resources free for it
/// (buffers are each resource's own, so none is shown for all).
#[derive(Debug, Serialize)]
pub struct ResourceSlotsAnswer {
    pub duration_minutes: i64,
    #[serde(rename = "match")]
    pub match_: &'static str,
    pub slots: Vec<ResourceSlotView>,
    pub step_minutes: i64,
    pub truncated: bool,
}

#[derive(Debug, Serialize)]
pub struct ResourceSlotView {
    pub end: Option<String>,
    pub resources: Vec<String>,
    pub start: Option<String>,
}

/// A conflict as `…/conflicts` lists it (the webhook sends the same shape).
pub use crate::conflicts::{ConflictView, WebhookView};

/// `GET …/conflicts`: one page; `next_cursor` is null on the last.
#[derive(Debug, Serialize)]
pub struct ConflictPage<'a> {
    pub conflicts: Vec<ConflictView<'a>>,
    pub next_cursor: Option<String>,
}

/// An external calendar source with where its sync stands.
#[derive(Debug, Serialize)]
pub struct SourceView {
    /// Its read-only CalDAV calendar.
    pub caldav: String,
    pub direction: Option<Direction>,
    pub enabled: Option<bool>,
    /// Cached events.
    pub events: usize,
    pub id: String,
    pub interval_minutes: Option<u32>,
    pub kind: Option<&'static str>,
    pub name: String,
    pub privacy: Option<ExportPrivacy>,
    /// The resource whose calendar it is; absent: the whole tenant's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub status: SourceStatusView,
    /// Feed URLs carry secrets: only their host is shown.
    pub target: Option<String>,
    pub transparent: bool,
}

#[derive(Debug, Serialize)]
pub struct SourceStatusView {
    pub connected: bool,
    pub consecutive_failures: u32,
    /// The export engine's own status object (null for import-only sources).
    pub export: Option<crate::export::ExportStatus>,
    pub last_attempt: Option<DateTime<Utc>>,
    /// The sync's last error, else the export's.
    pub last_error: Option<String>,
    pub last_success: Option<DateTime<Utc>>,
    pub needs_reauth: bool,
    pub next_run: Option<DateTime<Utc>>,
    pub permanent_error: bool,
}

impl SourceStatusView {
    pub fn new(status: SyncStatus, export: Option<crate::export::ExportStatus>) -> Self {
        let last_error = status
            .last_error
            .or_else(|| export.as_ref().and_then(|e| e.last_error.clone()));
        SourceStatusView {
            connected: status.connected,
            consecutive_failures: status.consecutive_failures,
            export,
            last_attempt: status.last_attempt,
            last_error,
            last_success: status.last_success,
            needs_reauth: status.needs_reauth,
            next_run: status.next_run,
            permanent_error: status.permanent_error,
        }
    }
}

/// `GET …/sources`
#[derive(Debug, Serialize)]
pub struct SourceList {
    pub sources: Vec<SourceView>,
}

/// One sync run, as `…/sync` answers and `…/logs` lists.
#[derive(Debug, Serialize)]
pub struct SyncLogView<'a> {
    pub created: u32,
    pub deleted: u32,
    pub duration_ms: u64,
    pub error: Option<&'a str>,
    pub mode: &'a str,
    pub skipped: Vec<SkippedView<'a>>,
    pub skipped_total: u32,
    pub started: DateTime<Utc>,
    pub updated: u32,
}

impl<'a> From<&'a SyncLog> for SyncLogView<'a> {
    fn from(log: &'a SyncLog) -> Self {
        SyncLogView {
            created: log.created,
            deleted: log.deleted,
            duration_ms: log.duration_ms,
            error: log.error.as_deref(),
            mode: &log.mode,
            skipped: log.skipped.iter().map(SkippedView::from).collect(),
            skipped_total: log.skipped_total,
            started: log.started,
            updated: log.updated,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SkippedView<'a> {
    pub reason: &'a str,
    pub series: &'a str,
}

impl<'a> From<&'a SkippedItem> for SkippedView<'a> {
    fn from(s: &'a SkippedItem) -> Self {
        SkippedView {
            reason: &s.reason,
            series: &s.series,
        }
    }
}

/// `GET …/sources/{id}/logs`
#[derive(Debug, Serialize)]
pub struct LogList<'a> {
    pub logs: Vec<SyncLogView<'a>>,
}

/// A calendar of a connected account, offered for picking.
#[derive(Debug, Serialize)]
pub struct CalendarView<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub primary: bool,
    pub time_zone: Option<&'a str>,
    pub writable: bool,
}

impl<'a> From<&'a RemoteCalendar> for CalendarView<'a> {
    fn from(c: &'a RemoteCalendar) -> Self {
        CalendarView {
            id: &c.id,
            name: &c.name,
            primary: c.primary,
            time_zone: c.time_zone.as_deref(),
            writable: c.writable,
        }
    }
}

/// `GET …/sources/{id}/calendars`
#[derive(Debug, Serialize)]
pub struct CalendarList<'a> {
    pub calendars: Vec<CalendarView<'a>>,
}

/// `GET /oauth/{provider}/callback`: the account is connected.
#[derive(Debug, Serialize)]
pub struct Connected<'a> {
    pub calendars: Vec<CalendarView<'a>>,
    pub connected: bool,
    pub source: &'a str,
    pub tenant: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BookingStatus, BusyKind, Conflict, WebhookState};
    use serde_json::json;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn ms(text: &str) -> i64 {
        at(text).timestamp_millis()
    }

    fn tenant() -> TenantConfig {
        TenantConfig::new("salon", "Salon", chrono_tz::Europe::Paris)
    }

    fn booking() -> Booking {
        Booking {
            id: "b1".into(),
            uid: "b1".into(),
            tenant: "salon".into(),
            time: BookingTime::Timed {
                start: DateTime::parse_from_rfc3339("2026-03-02T10:00:00+01:00").expect("start"),
                end: DateTime::parse_from_rfc3339("2026-03-02T10:30:00+01:00").expect("end"),
            },
            time_zone: chrono_tz::Europe::Paris,
            title: "Cut".into(),
            service: Some("haircut".into()),
            customer: Some(Customer {
                name: Some("Zoé".into()),
                email: Some("zoe@example.com".into()),
                phone: None,
            }),
            location: None,
            notes: Some("short".into()),
            status: BookingStatus::Confirmed,
            metadata: json!({"crm": 7}).as_object().cloned().unwrap_or_default(),
            created: at("2026-01-05T08:00:00.123Z"),
            updated: at("2026-01-05T09:00:00Z"),
            resources: Vec::new(),
            sequence: 2,
            etag: "\"e1\"".into(),
            calendar_text: Some("BEGIN:VCALENDAR".into()),
            calendar_text_sequence: Some(2),
        }
    }

    fn entry(source: &str, object: &str, start: &str, end: &str) -> BusyEntry {
        BusyEntry {
            span: Span::new(ms(start), ms(end)),
            kind: BusyKind::Busy,
            source: source.into(),
            object: object.into(),
            resource: None,
        }
    }

    fn conflict() -> Conflict {
        Conflict {
            id: "c1".into(),
            booking_id: "b1".into(),
            source: "staff".into(),
            object_id: "ev1".into(),
            span: Span::new(ms("2026-03-02T09:00:00Z"), ms("2026-03-02T09:30:00Z")),
            occurrences: 3,
            kind: BusyKind::Tentative,
            detected: at("2026-01-06T10:00:00.900Z"),
            acknowledged: None,
            resolved: Some(at("2026-01-07T11:00:00Z")),
            webhook: WebhookState {
                delivered: None,
                attempts: 2,
                last_error: Some("HTTP 500".into()),
            },
        }
    }

    fn sync_log() -> SyncLog {
        SyncLog {
            started: at("2026-01-05T08:00:00Z"),
            duration_ms: 12,
            mode: "full".into(),
            created: 3,
            updated: 1,
            deleted: 0,
            error: None,
            skipped: vec![SkippedItem {
                series: "s1".into(),
                reason: "too big".into(),
            }],
            skipped_total: 1,
        }
    }

    fn text(answer: &impl Serialize) -> String {
        serde_json::to_string(answer).expect("answers serialise")
    }

    #[test]
    fn booking_as_documented() {
        let b = booking();
        assert_eq!(
            text(&BookingView::new(&b, &tenant())),
            concat!(
                r#"{"all_day":false,"created":"2026-01-05T08:00:00.123Z","#,
                r#""customer":{"email":"zoe@example.com","name":"Zoé","phone":null},"#,
                r#""end":"2026-03-02T10:30:00+01:00","etag":"\"e1\"","id":"b1","#,
                r#""location":null,"metadata":{"crm":7},"notes":"short","resources":["default"],"#,
                r#""sequence":2,"#,
                r#""service":"haircut","start":"2026-03-02T10:00:00+01:00","#,
                r#""status":"confirmed","time_zone":"Europe/Paris","title":"Cut","#,
                r#""uid":"b1","updated":"2026-01-05T09:00:00.000Z"}"#
            )
        );
    }

    #[test]
    fn all_day_booking_shows_dates_and_exports_only_when_given() {
        let mut b = booking();
        b.time = BookingTime::AllDay {
            start: chrono::NaiveDate::from_ymd_opt(2026, 3, 2).expect("date"),
            end: chrono::NaiveDate::from_ymd_opt(2026, 3, 3).expect("date"),
        };
        b.customer = None;
        let mut view = BookingView::new(&b, &tenant());
        let value = serde_json::to_value(&view).expect("serialises");
        assert_eq!(value["all_day"], true);
        assert_eq!(value["start"], "2026-03-02");
        assert_eq!(value["end"], "2026-03-03");
        assert_eq!(value["customer"], Value::Null);
        assert!(value.get("exports").is_none(), "{value}");
        view.exports = Some(vec![pending_export()]);
        let value = serde_json::to_value(&view).expect("serialises");
        assert_eq!(value["exports"][0]["state"], "pending");
    }

    #[test]
    fn booking_list_wraps_bookings() {
        let b = booking();
        let list = BookingList {
            bookings: vec![BookingView::new(&b, &tenant())],
        };
        let value = serde_json::to_value(&list).expect("serialises");
        assert_eq!(value["bookings"][0]["id"], "b1");
    }

    #[test]
    fn conflict_list_is_bounded_and_counted() {
        let found: Vec<BusyEntry> = (0..25)
            .map(|i| {
                entry(
                    "bookings",
                    &format!("b{i}"),
                    "2026-03-02T09:00:00Z",
                    "2026-03-02T10:00:00Z",
                )
            })
            .collect();
        let list = ConflictList::new(&found);
        assert_eq!(list.conflicts.len(), crate::bookings::LISTED_CONFLICTS);
        assert_eq!(list.conflicts_total, 25);
        assert!(list.conflicts_truncated);
        let one = ConflictList::new(&found[..1]);
        assert_eq!(
            text(&one),
            concat!(
                r#"{"conflicts":[{"end":"2026-03-02T10:00:00Z","id":"b0","kind":"busy","#,
                r#""source":"bookings","start":"2026-03-02T09:00:00Z"}],"#,
                r#""conflicts_total":1,"conflicts_truncated":false}"#
            )
        );
    }

    #[test]
    fn availability_slot_as_documented() {
        let found = [entry(
            "staff",
            "ev1",
            "2026-03-02T09:00:00Z",
            "2026-03-02T09:30:00Z",
        )];
        let answer = AvailabilityAnswer {
            slots: vec![SlotAvailability {
                conflicts: ConflictList::new(&found),
                end: instant_text(ms("2026-03-02T10:00:00Z")),
                free: false,
                resources: None,
                start: instant_text(ms("2026-03-02T09:00:00Z")),
            }],
        };
        assert_eq!(
            text(&answer),
            concat!(
                r#"{"slots":[{"conflicts":[{"end":"2026-03-02T09:30:00Z","id":"ev1","#,
                r#""kind":"busy","source":"staff","start":"2026-03-02T09:00:00Z"}],"#,
                r#""conflicts_total":1,"conflicts_truncated":false,"#,
                r#""end":"2026-03-02T10:00:00Z","free":false,"start":"2026-03-02T09:00:00Z"}]}"#
            )
        );
    }

    #[test]
    fn freebusy_as_documented() {
        let block = BusyBlock {
            span: Span::new(ms("2026-03-02T09:00:00Z"), ms("2026-03-02T10:00:00Z")),
            kind: BusyKind::Oof,
            contributors: vec![Contributor {
                source: "staff".into(),
                object: "ev1".into(),
            }],
        };
        let answer = |detail| FreeBusyAnswer {
            busy: vec![BusyBlockView::new(&block, detail)],
            end: instant_text(ms("2026-03-03T00:00:00Z")),
            resource: None,
            start: instant_text(ms("2026-03-02T00:00:00Z")),
        };
        assert_eq!(
            text(&answer(false)),
            concat!(
                r#"{"busy":[{"end":"2026-03-02T10:00:00Z","kind":"oof","start":"2026-03-02T09:00:00Z"}],"#,
                r#""end":"2026-03-03T00:00:00Z","start":"2026-03-02T00:00:00Z"}"#
            )
        );
        assert_eq!(
            text(&answer(true)),
            concat!(
                r#"{"busy":[{"end":"2026-03-02T10:00:00Z","kind":"oof","#,
                r#""sources":[{"id":"ev1","source":"staff"}],"start":"2026-03-02T09:00:00Z"}],"#,
                r#""end":"2026-03-03T00:00:00Z","start":"2026-03-02T00:00:00Z"}"#
            )
        );
    }

    #[test]
    fn slots_as_documented() {
        let answer = SlotsAnswer {
            buffer_minutes: 10,
            duration_minutes: 30,
            slots: vec![SpanView::from(&Span::new(
                ms("2026-03-02T08:00:00Z"),
                ms("2026-03-02T08:30:00Z"),
            ))],
            step_minutes: 15,
            truncated: false,
        };
        assert_eq!(
            text(&answer),
            concat!(
                r#"{"buffer_minutes":10,"duration_minutes":30,"#,
                r#""slots":[{"end":"2026-03-02T08:30:00Z","start":"2026-03-02T08:00:00Z"}],"#,
                r#""step_minutes":15,"truncated":false}"#
            )
        );
    }

    #[test]
    fn conflict_as_documented() {
        let c = conflict();
        let page = ConflictPage {
            conflicts: vec![ConflictView::from(&c)],
            next_cursor: None,
        };
        assert_eq!(
            text(&page),
            concat!(
                r#"{"conflicts":[{"acknowledged":null,"booking_id":"b1","#,
                r#""detected":"2026-01-06T10:00:00Z","end":"2026-03-02T09:30:00Z","id":"c1","#,
                r#""kind":"tentative","object_id":"ev1","occurrences":3,"#,
                r#""resolved":"2026-01-07T11:00:00Z","source":"staff","#,
                r#""start":"2026-03-02T09:00:00Z","#,
                r#""webhook":{"attempts":2,"delivered":null,"last_error":"HTTP 500"}}],"#,
                r#""next_cursor":null}"#
            )
        );
    }

    #[test]
    fn sync_log_as_documented() {
        let log = sync_log();
        let list = LogList {
            logs: vec![SyncLogView::from(&log)],
        };
        assert_eq!(
            text(&list),
            concat!(
                r#"{"logs":[{"created":3,"deleted":0,"duration_ms":12,"error":null,"#,
                r#""mode":"full","skipped":[{"reason":"too big","series":"s1"}],"#,
                r#""skipped_total":1,"started":"2026-01-05T08:00:00Z","updated":1}]}"#
            )
        );
    }

    fn pending_export() -> crate::export::BookingExport {
        crate::export::BookingExport {
            error: None,
            event_id: None,
            external_change: Some(crate::export::ExternalChangeView {
                detail: None,
                detected: "2026-01-05T09:00:00.000Z".into(),
                external_time: Span::new(0, 3_600_000).into(),
                outcome: "reported".into(),
            }),
            source: "g".into(),
            state: "pending",
        }
    }

    fn failing_export() -> crate::export::ExportStatus {
        crate::export::ExportStatus {
            consecutive_failures: 2,
            delivered: 7,
            failed_bookings: 0,
            last_error: Some("export failed".into()),
            last_error_at: Some("2026-01-05T09:00:00.000Z".into()),
            last_success: None,
            pending_changes: 3,
            privacy: Some(ExportPrivacy::Busy),
            retry_at: None,
        }
    }

    fn source() -> SourceView {
        let status = SyncStatus {
            last_success: Some(at("2026-01-05T08:00:00Z")),
            consecutive_failures: 1,
            ..SyncStatus::default()
        };
        SourceView {
            caldav: "/dav/calendars/salon/feed/".into(),
            direction: Some(Direction::Import),
            enabled: Some(true),
            events: 4,
            id: "feed".into(),
            interval_minutes: Some(30),
            kind: Some("ics"),
            name: "Feed".into(),
            privacy: Some(ExportPrivacy::Full),
            resource: None,
            status: SourceStatusView::new(status, Some(failing_export())),
            target: Some("https://example.com/…".into()),
            transparent: false,
        }
    }

    #[test]
    fn source_as_documented() {
        assert_eq!(
            text(&SourceList {
                sources: vec![source()]
            }),
            concat!(
                r#"{"sources":[{"caldav":"/dav/calendars/salon/feed/","direction":"import","#,
                r#""enabled":true,"events":4,"id":"feed","interval_minutes":30,"kind":"ics","#,
                r#""name":"Feed","privacy":"full","status":{"connected":false,"#,
                r#""consecutive_failures":1,"export":{"consecutive_failures":2,"delivered":7,"#,
                r#""failed_bookings":0,"last_error":"export failed","#,
                r#""last_error_at":"2026-01-05T09:00:00.000Z","last_success":null,"#,
                r#""pending_changes":3,"privacy":"busy","retry_at":null},"#,
                r#""last_attempt":null,"last_error":"export failed","#,
                r#""last_success":"2026-01-05T08:00:00Z","needs_reauth":false,"#,
                r#""next_run":null,"permanent_error":false},"#,
                r#""target":"https://example.com/…","transparent":false}]}"#
            )
        );
    }

    fn calendar() -> RemoteCalendar {
        RemoteCalendar {
            id: "primary".into(),
            name: "Ana".into(),
            time_zone: Some("Europe/Paris".into()),
            primary: true,
            writable: false,
        }
    }

    #[test]
    fn calendars_and_oauth_callback_as_documented() {
        let c = calendar();
        assert_eq!(
            text(&CalendarList {
                calendars: vec![CalendarView::from(&c)]
            }),
            concat!(
                r#"{"calendars":[{"id":"primary","name":"Ana","primary":true,"#,
                r#""time_zone":"Europe/Paris","writable":false}]}"#
            )
        );
        let connected = Connected {
            calendars: vec![],
            connected: true,
            source: "g",
            tenant: "salon",
        };
        assert_eq!(
            text(&connected),
            r#"{"calendars":[],"connected":true,"source":"g","tenant":"salon"}"#
        );
    }

    /// serde_json's `Value` sorts object keys: an answer written directly must
    /// come out the same, or a field was declared out of alphabetical order.
    #[test]
    fn declared_order_is_the_sorted_order() {
        fn check(answer: &impl Serialize) {
            let direct = text(answer);
            let sorted = serde_json::to_value(answer)
                .expect("serialises")
                .to_string();
            assert_eq!(direct, sorted);
        }
        let (b, c, log, cal) = (booking(), conflict(), sync_log(), calendar());
        let mut view = BookingView::new(&b, &tenant());
        view.exports = Some(vec![pending_export()]);
        check(&view.exports);
        check(&view);
        check(&ConflictView::from(&c));
        check(&SyncLogView::from(&log));
        check(&CalendarView::from(&cal));
        check(&source());
        check(&SourceView {
            resource: Some("anna".into()),
            ..source()
        });
        let found = [entry(
            "s",
            "o",
            "2026-03-02T09:00:00Z",
            "2026-03-02T10:00:00Z",
        )];
        check(&SlotAvailability {
            conflicts: ConflictList::new(&found),
            end: None,
            free: false,
            resources: Some(vec!["a".into()]),
            start: None,
        });
        let mut at_resource = found.clone();
        at_resource[0].resource = Some("anna".into());
        check(&ConflictList::new(&at_resource));
        let mut salon = tenant();
        salon.resources.push(crate::config::ResourceConfig {
            id: "anna".into(),
            name: "Anna".into(),
            kind: crate::config::ResourceKind::Staff,
            timezone: None,
            opening_hours: None,
            buffer_minutes: None,
            capacity: 1,
            email: None,
        });
        for r in salon.resources() {
            check(&ResourceList {
                resources: vec![ResourceView::from(&r)],
            });
        }
        let block = BusyBlock {
            span: Span::new(0, 1),
            kind: BusyKind::Busy,
            contributors: vec![Contributor {
                source: "s".into(),
                object: "o".into(),
            }],
        };
        check(&FreeBusyAnswer {
            busy: vec![BusyBlockView::new(&block, true)],
            end: None,
            resource: Some("anna".into()),
            start: None,
        });
        check(&ResourcesFreeBusyAnswer {
            end: None,
            resources: vec![ResourceBusyView {
                busy: vec![BusyBlockView::new(&block, false)],
                id: "anna".into(),
            }],
            start: None,
        });
        check(&ResourceSlotsAnswer {
            duration_minutes: 30,
            match_: "any",
            slots: vec![ResourceSlotView {
                end: None,
                resources: vec!["anna".into()],
                start: None,
            }],
            step_minutes: 30,
            truncated: false,
        });
        check(&SlotsAnswer {
            buffer_minutes: 0,
            duration_minutes: 30,
            slots: vec![SpanView::from(&Span::new(0, 1))],
            step_minutes: 30,
            truncated: true,
        });
        check(&ConflictPage {
            conflicts: vec![],
            next_cursor: Some("00".into()),
        });
        check(&Connected {
            calendars: vec![CalendarView::from(&cal)],
            connected: true,
            source: "g",
            tenant: "t",
        });
    }
}
