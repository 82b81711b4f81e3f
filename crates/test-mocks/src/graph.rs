//! Mock Microsoft Graph v1.0 calendar API + Microsoft identity platform OAuth
//! (REFERENCE.md §1.2, §3, checklist §3.10).
//!
//! One loopback server: `/v1.0/…` is the API (every call needs a bearer token issued by this mock's
//! own [`OAuthServer`] — Microsoft flavour, client `ms-client-id` / `ms-client-secret`), and
//! `/{tenant}/oauth2/v2.0/{authorize,token}` is the identity platform.
//!
//! API surface:
//! * `GET /me/calendars` (`$top`/`$skip` paging, default 10), `GET /me/calendar`,
//!   `GET /me/calendars/{id}`.
//! * `GET /me/calendarView`, `/me/calendar/calendarView`, `/me/calendars/{id}/calendarView`:
//!   `startDateTime` + `endDateTime` required (400 otherwise; an offset is honoured, none = UTC),
//!   series expanded (occurrences + exceptions + single instances, never masters), sorted by start,
//!   default page 10, `$top`, `@odata.nextLink` with `$skip`. `$select`/`$orderby` are ignored.
//! * `GET …/calendarView/delta`: a round is frozen when it starts (initial call with the window, or a
//!   GET on a deltaLink); pages are served through `$skiptoken` nextLinks, the deltaLink
//!   (`$deltatoken`) only on the final page. Page size from `Prefer: odata.maxpagesize` (default 10).
//!   Tokens remember the calendar, the window and what the client has seen, so an incremental round
//!   returns changed/new items in full and `{"@odata.type","id","@removed":{"reason":"deleted"}}`
//!   for deleted items and items that left the window. Options: empty middle pages, duplicate replay,
//!   token expiry → 410 `SyncStateNotFound` (or 410 `resyncRequired` + `Location`).
//! * `POST /me/events`, `/me/calendar/events`, `/me/calendars/{id}/events` → 201 (+ `Location`,
//!   `ETag`); the same `transactionId` returns the existing event. `GET/PATCH/DELETE
//!   /me/events/{id}` (also under `/me/calendars/{cid}/events/{id}`): PATCH → 200, stale
//!   `If-Match` → 412, DELETE → 204, unknown id → 404 `ErrorItemNotFound`. Occurrence ids can be
//!   read and deleted (deleting one removes that instance).
//! * `GET /me/events` (all calendars) / `/me/calendars/{id}/events`: single instances + masters;
//!   `$filter=singleValueExtendedProperties/any(ep: ep/id eq '…' and ep/value eq '…')` is the only
//!   filter understood (others → 400). `$expand=singleValueExtendedProperties($filter=id eq '…')`
//!   on list and single GETs; without it extended properties are never returned.
//! * `Prefer: outlook.timezone="…"` (IANA names, and the Windows names in [`windows_to_iana`])
//!   converts timed `start`/`end` of responses; default `UTC`; unknown names fall back to UTC.
//!   All-day items keep `T00:00:00.0000000` (date unchanged). Create/PATCH responses without the
//!   preference echo the zone the event was written in (as in `graph_event_create_response.json`).
//!   Times always carry 7 fractional digits.
//! * Faults (after the bearer check): `Fault::Status` → the status with Graph's error body for it
//!   (429 `TooManyRequests`, 503 `serviceNotAvailable`, 500 `generalException`, …) and the given
//!   `Retry-After` verbatim (so `"2.128"` works); `Fault::Gone` → 410 `SyncStateNotFound`;
//!   `Fault::Slow`; `Fault::Reset`; `Fault::AnswerLost` (the request is processed, then the
//!   connection closes without an answer).
//!
//! Series expansion limit: only `daily` and `weekly` patterns (`interval`, `daysOfWeek`,
//! `firstDayOfWeek`) with `endDate`/`noEnd`/`numbered` ranges are expanded, at most 5,000
//! occurrences / 10 years per series; other pattern types yield no occurrences. Exceptions are
//! stored events with `type: "exception"`, `seriesMasterId` and `originalStart` (UTC) — they replace
//! the generated occurrence with the same original start.
//!
//! Not implemented: getSchedule, subscriptions / change notifications, `$select`, `$orderby`
//! other than by start, `Prefer: IdType="ImmutableId"` (ids are always stable here).

// Handlers bail out with a ready `Resp` as the error value: size does not matter in a test mock.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{
    DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, TimeDelta, TimeZone,
    Utc, Weekday,
};
use chrono_tz::Tz;
use http::{HeaderMap, HeaderValue, Method};
use serde_json::{Map, Value, json};

use crate::oauth::{Flavour, OAuthServer};
use crate::{
    FaultAction, FaultQueue, MockCommon, MockHttp, RecordedRequest, Req, Resp, empty_response,
    encode_query, json_response, percent_decode, percent_encode, query_get, random_token,
    reset_connection, with_delay, with_header,
};

pub const CLIENT_ID: &str = "ms-client-id";
pub const CLIENT_SECRET: &str = "ms-client-secret";
/// Registered redirect URI until [`GraphMock::set_redirect_uri`] changes it.
pub const DEFAULT_REDIRECT_URI: &str = "http://127.0.0.1/oauth/microsoft/callback";
/// The calendar the mock starts with (the user's default calendar).
pub const DEFAULT_CALENDAR_ID: &str = "AAMkAGFAKE-calendar-default-AAAAAAEGAAA=";
const USER_ID: &str = "00000000-0000-4000-8000-0000000a1e40";
const OWNER_NAME: &str = "Alex Doe";
const OWNER_ADDRESS: &str = "alex.doe@example.test";
pub const ODATA_JSON: &str = "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8";
const DEFAULT_PAGE: usize = 10;
const MAX_OCCURRENCES: usize = 5000;
const OCCURRENCE_MARK: &str = "_OID_";

/// Windows time-zone ids the mock understands (CLDR `windowsZones`, territory 001).
pub fn windows_to_iana(name: &str) -> Option<&'static str> {
    const TABLE: &[(&str, &str)] = &[
        ("W. Europe Standard Time", "Europe/Berlin"),
        ("Romance Standard Time", "Europe/Paris"),
        ("Central Europe Standard Time", "Europe/Budapest"),
        ("Central European Standard Time", "Europe/Warsaw"),
        ("GMT Standard Time", "Europe/London"),
        ("Greenwich Standard Time", "Atlantic/Reykjavik"),
        ("Pacific Standard Time", "America/Los_Angeles"),
        ("Mountain Standard Time", "America/Denver"),
        ("Central Standard Time", "America/Chicago"),
        ("Eastern Standard Time", "America/New_York"),
        ("Tokyo Standard Time", "Asia/Tokyo"),
        ("India Standard Time", "Asia/Kolkata"),
        ("AUS Eastern Standard Time", "Australia/Sydney"),
        ("UTC", "Etc/UTC"),
        ("Coordinated Universal Time", "Etc/UTC"),
    ];
    TABLE
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(name.trim()))
        .map(|(_, iana)| *iana)
}

/// Resolves a Graph `timeZone` value (Windows or IANA; `UTC`).
pub fn resolve_zone(name: &str) -> Option<Tz> {
    let name = name.trim();
    if name.eq_ignore_ascii_case("utc") || name.is_empty() {
        return Some(Tz::UTC);
    }
    if let Some(iana) = windows_to_iana(name) {
        return iana.parse().ok();
    }
    name.parse::<Tz>()
        .ok()
        .or_else(|| Tz::from_str_insensitive(name).ok())
}

/// `YYYY-MM-DDTHH:MM:SS.fffffff` (7 fractional digits, no offset).
pub fn graph_datetime(t: NaiveDateTime) -> String {
    format!(
        "{}.{:07}",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.and_utc().timestamp_subsec_nanos() / 100
    )
}

/// `YYYY-MM-DDTHH:MM:SS.fffffffZ` (timestamps such as `lastModifiedDateTime`).
fn graph_timestamp(t: DateTime<Utc>) -> String {
    format!("{}Z", graph_datetime(t.naive_utc()))
}

fn now_ts() -> String {
    graph_timestamp(Utc::now())
}

fn parse_naive(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .map(|d| d.and_time(NaiveTime::MIN))
        })
}

/// An ISO 8601 instant: an explicit offset / `Z` is honoured, none means UTC.
fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| parse_naive(s).map(|n| n.and_utc()))
}

fn local_to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
        chrono::LocalResult::Ambiguous(a, _) => a.with_timezone(&Utc),
        // In a DST gap: move forward by an hour, like Exchange does.
        chrono::LocalResult::None => tz
            .from_local_datetime(&(local + TimeDelta::hours(1)))
            .earliest()
            .map_or_else(|| local.and_utc(), |t| t.with_timezone(&Utc)),
    }
}

/// `{dateTime, timeZone}` → UTC instant (unknown zones: UTC).
fn dtz_instant(v: &Value) -> Option<DateTime<Utc>> {
    let local = parse_naive(v.get("dateTime")?.as_str()?)?;
    let tz = v
        .get("timeZone")
        .and_then(Value::as_str)
        .and_then(resolve_zone)
        .unwrap_or(Tz::UTC);
    Some(local_to_utc(tz, local))
}

fn dtz_local(v: &Value) -> Option<NaiveDateTime> {
    parse_naive(v.get("dateTime")?.as_str()?)
}

fn is_all_day(v: &Value) -> bool {
    v.get("isAllDay").and_then(Value::as_bool).unwrap_or(false)
}

fn str_field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get(name).and_then(Value::as_str)
}

// ---------------------------------------------------------------------------------------------
// Errors

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn graph_json(status: u16, body: &Value) -> Resp {
    let mut resp = json_response(status, body);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(ODATA_JSON),
    );
    resp
}

/// Graph error body `{"error":{"code","message","innerError":{date, request-id, client-request-id}}}`.
pub fn error_body(code: &str, message: &str) -> Value {
    let id = request_id();
    json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                "request-id": id,
                "client-request-id": id,
            }
        }
    })
}

fn graph_error(status: u16, code: &str, message: &str) -> Resp {
    graph_json(status, &error_body(code, message))
}

fn throttled_body() -> Value {
    json!({
        "error": {
            "code": "TooManyRequests",
            "message": "Please retry again later.",
            "innerError": {
                "code": "429",
                "date": Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                "message": "Please retry after",
                "request-id": request_id(),
                "status": "429",
            }
        }
    })
}

/// The error answer for an injected status (bodies as in `examples/graph_errors.json`).
pub fn status_error(status: u16, retry_after: Option<&str>) -> Resp {
    let resp = match status {
        429 => graph_json(429, &throttled_body()),
        400 => graph_error(400, "BadRequest", "Invalid request."),
        401 => return unauthorized(),
        403 => graph_error(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        ),
        404 => not_found(),
        409 => graph_error(
            409,
            "ErrorIrresolvableConflict",
            "The request conflicts with the current state of the item.",
        ),
        410 => sync_state_not_found(),
        412 => precondition_failed(),
        500 => graph_error(
            500,
            "generalException",
            "General exception while processing.",
        ),
        502 => graph_error(502, "BadGateway", "Bad gateway."),
        503 => graph_error(
            503,
            "serviceNotAvailable",
            "The service is temporarily unavailable. Try again later.",
        ),
        504 => graph_error(504, "GatewayTimeout", "Gateway timeout."),
        s => graph_error(s, "UnknownError", "An error occurred."),
    };
    match retry_after {
        Some(ra) => with_header(resp, "retry-after", ra),
        None => resp,
    }
}

fn unauthorized() -> Resp {
    let resp = graph_error(
        401,
        "InvalidAuthenticationToken",
        "Access token has expired or is not yet valid.",
    );
    with_header(
        resp,
        "www-authenticate",
        "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
    )
}

fn not_found() -> Resp {
    graph_error(
        404,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

fn precondition_failed() -> Resp {
    graph_error(
        412,
        "ErrorIrresolvableConflict",
        "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.",
    )
}

fn sync_state_not_found() -> Resp {
    graph_error(
        410,
        "SyncStateNotFound",
        "The sync state generation is not found; generation=149;[highest=157][157][155][156].",
    )
}

fn bad_request(message: &str) -> Resp {
    graph_error(400, "BadRequest", message)
}

fn missing_window() -> Resp {
    graph_error(
        400,
        "ErrorInvalidParameter",
        "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
    )
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Clone, Debug)]
struct Calendar {
    id: String,
    name: String,
    is_default: bool,
    can_edit: bool,
    change_key: String,
}

#[derive(Clone, Debug)]
struct Stored {
    cal: String,
    value: Value,
    version: u64,
    order: u64,
    /// Original local start dates of deleted occurrences (series masters).
    deleted_occurrences: HashSet<NaiveDate>,
}

/// One item of a calendar view: a single instance, an exception or a generated occurrence.
#[derive(Clone, Debug)]
struct Instance {
    id: String,
    version: u64,
    start: DateTime<Utc>,
    value: Value,
}

#[derive(Clone, Debug)]
enum DeltaItem {
    Event(Value),
    Removed(String),
}

#[derive(Clone, Debug)]
struct Window {
    cal: String,
    /// Path prefix for links, e.g. `/v1.0/me/calendarView/delta`.
    link_path: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    start_raw: String,
    end_raw: String,
}

#[derive(Clone, Debug)]
struct DeltaToken {
    window: Window,
    seen: HashMap<String, u64>,
    expired: bool,
}

#[derive(Clone, Debug)]
struct Round {
    window: Window,
    pages: Vec<Vec<DeltaItem>>,
    seen: HashMap<String, u64>,
    /// Delta token handed out on the final page (created once).
    delta_token: Option<String>,
}

#[derive(Clone, Debug)]
struct SkipToken {
    round: usize,
    page: usize,
    expired: bool,
}

#[derive(Debug)]
struct State {
    calendars: Vec<Calendar>,
    events: HashMap<String, Stored>,
    version: u64,
    order: u64,
    id_counter: u64,
    rounds: Vec<Round>,
    skip_tokens: HashMap<String, SkipToken>,
    delta_tokens: HashMap<String, DeltaToken>,
    replay_duplicates: bool,
    insert_empty_pages: bool,
    reset_with_location: bool,
}

impl State {
    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    fn default_calendar(&self) -> Option<&Calendar> {
        self.calendars
            .iter()
            .find(|c| c.is_default)
            .or_else(|| self.calendars.first())
    }

    fn calendar(&self, id: &str) -> Option<&Calendar> {
        self.calendars.iter().find(|c| c.id == id)
    }

    fn new_event_id(&mut self) -> (String, u64) {
        self.id_counter += 1;
        let n = self.id_counter;
        (format!("AAMkADg5ZmFrZS1tb2Nr-{n:06}_BGAAAAAAENAAA="), n)
    }

    /// Stored events of a calendar in insertion order.
    fn events_of(&self, cal: Option<&str>) -> Vec<&Stored> {
        let mut list: Vec<&Stored> = self
            .events
            .values()
            .filter(|e| cal.is_none_or(|c| e.cal == c))
            .collect();
        list.sort_by_key(|e| e.order);
        list
    }

    /// Fills in server-managed fields and normalises times; bumps the version.
    fn stamp(&mut self, value: &mut Value, created: bool) -> u64 {
        let version = self.next_version();
        let change_key = format!("DwAAABYAAAA{version:08}mock==");
        let now = now_ts();
        if let Some(obj) = value.as_object_mut() {
            if created {
                obj.entry("createdDateTime").or_insert(json!(now.clone()));
            }
            obj.insert("lastModifiedDateTime".into(), json!(now));
            obj.insert("changeKey".into(), json!(change_key.clone()));
            obj.insert("@odata.etag".into(), json!(format!("W/\"{change_key}\"")));
        }
        version
    }
}

/// Fills defaults for a new event and normalises `start`/`end`.
fn complete_event(value: &mut Value, id: &str, n: u64) {
    let Some(obj) = value.as_object_mut() else {
        return;
    };
    obj.insert("id".into(), json!(id));
    let recurring = obj.get("recurrence").is_some_and(|r| !r.is_null());
    let defaults = [
        ("subject", json!("")),
        ("bodyPreview", json!("")),
        ("categories", json!([])),
        ("transactionId", Value::Null),
        ("isAllDay", json!(false)),
        ("isCancelled", json!(false)),
        ("isOrganizer", json!(true)),
        ("isReminderOn", json!(true)),
        ("reminderMinutesBeforeStart", json!(15)),
        ("importance", json!("normal")),
        ("sensitivity", json!("normal")),
        ("showAs", json!("busy")),
        (
            "type",
            json!(if recurring {
                "seriesMaster"
            } else {
                "singleInstance"
            }),
        ),
        ("seriesMasterId", Value::Null),
        ("recurrence", Value::Null),
        (
            "responseStatus",
            json!({"response": "organizer", "time": "0001-01-01T00:00:00Z"}),
        ),
        (
            "organizer",
            json!({"emailAddress": {"name": OWNER_NAME, "address": OWNER_ADDRESS}}),
        ),
        ("attendees", json!([])),
        (
            "iCalUId",
            json!(format!(
                "040000008200E00074C5B7101A82E00800000000{n:016X}00000000000000001000000{n:033X}"
            )),
        ),
    ];
    for (k, v) in defaults {
        obj.entry(k).or_insert(v);
    }
    for (field, tz_field) in [
        ("start", "originalStartTimeZone"),
        ("end", "originalEndTimeZone"),
    ] {
        let zone = obj
            .get(field)
            .and_then(|v| v.get("timeZone"))
            .and_then(Value::as_str)
            .unwrap_or("UTC")
            .to_string();
        obj.entry(tz_field).or_insert(json!(zone));
    }
    normalise_times(value);
}

/// 7-digit fractions; all-day events widened to midnights (end ≥ start + 1 day).
fn normalise_times(value: &mut Value) {
    let all_day = is_all_day(value);
    let Some(obj) = value.as_object_mut() else {
        return;
    };
    let mut start_date = None;
    for field in ["start", "end"] {
        let Some(dtz) = obj.get_mut(field).and_then(Value::as_object_mut) else {
            continue;
        };
        let Some(local) = dtz
            .get("dateTime")
            .and_then(Value::as_str)
            .and_then(parse_naive)
        else {
            continue;
        };
        let local = if all_day {
            let mut date = local.date();
            if field == "end" && local.time() != NaiveTime::MIN {
                date = date.succ_opt().unwrap_or(date);
            }
            if field == "end" && start_date.is_some_and(|s| date <= s) {
                date = start_date
                    .and_then(|s: NaiveDate| s.succ_opt())
                    .unwrap_or(date);
            }
            if field == "start" {
                start_date = Some(date);
            }
            date.and_time(NaiveTime::MIN)
        } else {
            local
        };
        dtz.insert("dateTime".into(), json!(graph_datetime(local)));
        dtz.entry("timeZone").or_insert(json!("UTC"));
    }
}

// ---------------------------------------------------------------------------------------------
// Series expansion

fn weekday_from(name: &str) -> Option<Weekday> {
    match name.to_ascii_lowercase().as_str() {
        "monday" => Some(Weekday::Mon),
        "tuesday" => Some(Weekday::Tue),
        "wednesday" => Some(Weekday::Wed),
        "thursday" => Some(Weekday::Thu),
        "friday" => Some(Weekday::Fri),
        "saturday" => Some(Weekday::Sat),
        "sunday" => Some(Weekday::Sun),
        _ => None,
    }
}

fn occurrence_id(master_id: &str, date: NaiveDate) -> String {
    format!(
        "{}{OCCURRENCE_MARK}{}=",
        master_id.trim_end_matches('='),
        date.format("%Y%m%d")
    )
}

/// `(master id, original local start date)` of a generated occurrence id.
fn parse_occurrence_id(id: &str) -> Option<(String, NaiveDate)> {
    let (master, rest) = id.rsplit_once(OCCURRENCE_MARK)?;
    let date = NaiveDate::parse_from_str(rest.trim_end_matches('='), "%Y%m%d").ok()?;
    let master_id = format!("{master}=");
    Some((master_id, date))
}

/// Original local start dates of a daily/weekly series, up to `until` (inclusive).
fn series_dates(master: &Value, until: NaiveDate) -> Vec<NaiveDate> {
    let Some(rec) = master.get("recurrence").filter(|r| !r.is_null()) else {
        return Vec::new();
    };
    let Some(first_local) = master.get("start").and_then(dtz_local) else {
        return Vec::new();
    };
    let pattern = &rec["pattern"];
    let range = &rec["range"];
    let interval = pattern
        .get("interval")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .max(1) as i64;
    let range_start = str_field(range, "startDate")
        .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .unwrap_or(first_local.date())
        .max(first_local.date());
    let range_type = str_field(range, "type").unwrap_or("noEnd");
    let end_date = match range_type {
        "endDate" => {
            str_field(range, "endDate").and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        }
        _ => None,
    };
    let count = match range_type {
        "numbered" => range
            .get("numberOfOccurrences")
            .and_then(Value::as_u64)
            .map(|n| n as usize),
        _ => None,
    };
    let mut limit = until.min(range_start + TimeDelta::days(3660));
    if let Some(e) = end_date {
        limit = limit.min(e);
    }
    let kind = str_field(pattern, "type").unwrap_or("");
    let mut days: Vec<Weekday> = pattern
        .get("daysOfWeek")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(weekday_from)
                .collect()
        })
        .unwrap_or_default();
    if days.is_empty() {
        days.push(first_local.weekday());
    }
    let first_day = str_field(pattern, "firstDayOfWeek")
        .and_then(weekday_from)
        .unwrap_or(Weekday::Sun);
    let week_start = |d: NaiveDate| {
        let back = (7 + d.weekday().num_days_from_monday() as i64
            - first_day.num_days_from_monday() as i64)
            % 7;
        d - TimeDelta::days(back)
    };
    let anchor_week = week_start(range_start);

    let mut out = Vec::new();
    let mut produced = 0usize;
    let mut d = range_start;
    while d <= limit && produced < MAX_OCCURRENCES {
        let hit = match kind {
            "daily" => (d - range_start).num_days() % interval == 0,
            "weekly" => {
                let weeks = (week_start(d) - anchor_week).num_days() / 7;
                weeks % interval == 0 && days.contains(&d.weekday())
            }
            _ => return Vec::new(),
        };
        if hit {
            produced += 1;
            out.push(d);
            if count.is_some_and(|c| produced >= c) {
                break;
            }
        }
        d = match d.succ_opt() {
            Some(n) => n,
            None => break,
        };
    }
    out
}

fn overlaps(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    ws: DateTime<Utc>,
    we: DateTime<Utc>,
) -> bool {
    if start == end {
        return start >= ws && start < we;
    }
    start < we && end > ws
}

/// Start/end instants of a stored (non-master) event or an instance value.
fn instants(value: &Value) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    Some((
        dtz_instant(value.get("start")?)?,
        dtz_instant(value.get("end")?)?,
    ))
}

impl State {
    /// Occurrences / exceptions / single instances of `cal` overlapping `[ws, we)`, by start.
    fn instances(&self, cal: &str, ws: DateTime<Utc>, we: DateTime<Utc>) -> Vec<Instance> {
        let mut out = Vec::new();
        let events = self.events_of(Some(cal));
        for ev in &events {
            let v = &ev.value;
            let kind = str_field(v, "type").unwrap_or("singleInstance");
            let Some(id) = str_field(v, "id") else {
                continue;
            };
            if kind == "seriesMaster" {
                out.extend(self.occurrences(ev, &events, ws, we));
                continue;
            }
            if kind == "exception"
                && str_field(v, "seriesMasterId").is_some_and(|m| !self.events.contains_key(m))
            {
                continue; // its series is gone
            }
            if let Some((s, e)) = instants(v)
                && overlaps(s, e, ws, we)
            {
                out.push(Instance {
                    id: id.to_string(),
                    version: ev.version,
                    start: s,
                    value: v.clone(),
                });
            }
        }
        out.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.id.cmp(&b.id)));
        out
    }

    fn occurrences(
        &self,
        master: &Stored,
        all: &[&Stored],
        ws: DateTime<Utc>,
        we: DateTime<Utc>,
    ) -> Vec<Instance> {
        let v = &master.value;
        let Some(master_id) = str_field(v, "id") else {
            return Vec::new();
        };
        let (Some(start_local), Some(end_local)) = (
            v.get("start").and_then(dtz_local),
            v.get("end").and_then(dtz_local),
        ) else {
            return Vec::new();
        };
        let zone = v
            .get("recurrence")
            .and_then(|r| r.get("range"))
            .and_then(|r| str_field(r, "recurrenceTimeZone"))
            .filter(|z| !z.is_empty())
            .or_else(|| v.get("start").and_then(|s| str_field(s, "timeZone")))
            .and_then(resolve_zone)
            .unwrap_or(Tz::UTC);
        let all_day = is_all_day(v);
        let length = end_local - start_local;
        let exceptions: HashSet<DateTime<Utc>> = all
            .iter()
            .filter(|e| {
                str_field(&e.value, "type") == Some("exception")
                    && str_field(&e.value, "seriesMasterId") == Some(master_id)
            })
            .filter_map(|e| str_field(&e.value, "originalStart").and_then(parse_instant))
            .collect();
        let until = (we + TimeDelta::days(2)).date_naive();
        let mut out = Vec::new();
        for date in series_dates(v, until) {
            if master.deleted_occurrences.contains(&date) {
                continue;
            }
            let local = date.and_time(start_local.time());
            let (start, end) = if all_day {
                (local.and_utc(), (local + length).and_utc())
            } else {
                let s = local_to_utc(zone, local);
                (s, s + length)
            };
            let original = local_to_utc(zone, local);
            if exceptions.contains(&original) || exceptions.contains(&start) {
                continue;
            }
            // All-day occurrences are compared as dates in the series zone.
            let (cs, ce) = if all_day {
                (
                    local_to_utc(zone, local),
                    local_to_utc(zone, local + length),
                )
            } else {
                (start, end)
            };
            if !overlaps(cs, ce, ws, we) {
                continue;
            }
            let mut occ = v.clone();
            let id = occurrence_id(master_id, date);
            if let Some(obj) = occ.as_object_mut() {
                obj.insert("id".into(), json!(id));
                obj.insert("type".into(), json!("occurrence"));
                obj.insert("seriesMasterId".into(), json!(master_id));
                obj.insert("recurrence".into(), Value::Null);
                obj.insert(
                    "originalStart".into(),
                    json!(original.to_rfc3339_opts(SecondsFormat::Secs, true)),
                );
                let (s, e) = if all_day {
                    (local, local + length)
                } else {
                    (start.naive_utc(), end.naive_utc())
                };
                let tz_label = if all_day {
                    v.get("start")
                        .and_then(|s| str_field(s, "timeZone"))
                        .unwrap_or("UTC")
                } else {
                    "UTC"
                };
                obj.insert(
                    "start".into(),
                    json!({"dateTime": graph_datetime(s), "timeZone": tz_label}),
                );
                obj.insert(
                    "end".into(),
                    json!({"dateTime": graph_datetime(e), "timeZone": tz_label}),
                );
                if let Some(uid) = str_field(v, "iCalUId") {
                    obj.insert(
                        "iCalUId".into(),
                        json!(format!("{uid}{}", date.format("%Y%m%d"))),
                    );
                }
            }
            out.push(Instance {
                id,
                version: master.version,
                start: cs,
                value: occ,
            });
        }
        out
    }

    /// A stored event or a generated occurrence, by id.
    fn lookup(&self, id: &str) -> Option<(String, Value)> {
        if let Some(ev) = self.events.get(id) {
            return Some((ev.cal.clone(), ev.value.clone()));
        }
        let (master_id, date) = parse_occurrence_id(id)?;
        let master = self.events.get(&master_id)?;
        let day = date.and_time(NaiveTime::MIN);
        let ws = (day - TimeDelta::days(2)).and_utc();
        let we = (day + TimeDelta::days(3)).and_utc();
        let all: Vec<&Stored> = self.events_of(Some(&master.cal));
        self.occurrences(master, &all, ws, we)
            .into_iter()
            .find(|i| i.id == id)
            .map(|i| (master.cal.clone(), i.value))
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// Response-time options from the request.
#[derive(Clone, Debug, Default)]
struct Render {
    /// `Prefer: outlook.timezone` as sent (None → default).
    zone_name: Option<String>,
    /// Extended-property expansion: None = strip all; Some(None) = all; Some(Some(id)) = that id.
    expand: Option<Option<String>>,
}

impl Render {
    fn target(&self) -> (String, Tz) {
        match &self.zone_name {
            Some(name) => match resolve_zone(name) {
                Some(tz) => (name.clone(), tz),
                None => ("UTC".to_string(), Tz::UTC),
            },
            None => ("UTC".to_string(), Tz::UTC),
        }
    }
}

fn render_times(value: &mut Value, label: &str, tz: Tz) {
    let all_day = is_all_day(value);
    let Some(obj) = value.as_object_mut() else {
        return;
    };
    for field in ["start", "end"] {
        let Some(dtz) = obj.get(field).cloned() else {
            continue;
        };
        let text = if all_day {
            dtz_local(&dtz).map(|l| graph_datetime(l.date().and_time(NaiveTime::MIN)))
        } else {
            dtz_instant(&dtz).map(|t| graph_datetime(t.with_timezone(&tz).naive_local()))
        };
        if let Some(text) = text {
            obj.insert(field.into(), json!({"dateTime": text, "timeZone": label}));
        }
    }
}

/// Converts an event for a response.
fn render_event(value: &Value, render: &Render, echo_zone: bool) -> Value {
    let mut out = value.clone();
    if !(echo_zone && render.zone_name.is_none()) {
        let (label, tz) = render.target();
        render_times(&mut out, &label, tz);
    } else if let Some(obj) = out.as_object_mut() {
        // Echo the written zone, 7-digit fractions.
        for field in ["start", "end"] {
            if let Some(dtz) = obj.get_mut(field).and_then(Value::as_object_mut)
                && let Some(l) = dtz
                    .get("dateTime")
                    .and_then(Value::as_str)
                    .and_then(parse_naive)
            {
                dtz.insert("dateTime".into(), json!(graph_datetime(l)));
            }
        }
    }
    if let Some(obj) = out.as_object_mut() {
        match &render.expand {
            None => {
                obj.remove("singleValueExtendedProperties");
            }
            Some(None) => {}
            Some(Some(id)) => {
                let props: Vec<Value> = obj
                    .get("singleValueExtendedProperties")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter(|p| {
                                str_field(p, "id").is_some_and(|i| i.eq_ignore_ascii_case(id))
                            })
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                if props.is_empty() {
                    obj.remove("singleValueExtendedProperties");
                } else {
                    obj.insert("singleValueExtendedProperties".into(), json!(props));
                }
            }
        }
    }
    out
}

fn render_delta_item(item: &DeltaItem, render: &Render) -> Value {
    match item {
        DeltaItem::Removed(id) => json!({
            "@odata.type": "#microsoft.graph.event",
            "id": id,
            "@removed": {"reason": "deleted"},
        }),
        DeltaItem::Event(v) => {
            let mut out = render_event(
                v,
                &Render {
                    zone_name: render.zone_name.clone(),
                    expand: None,
                },
                false,
            );
            if let Some(obj) = out.as_object_mut() {
                obj.insert("@odata.type".into(), json!("#microsoft.graph.event"));
            }
            out
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request parsing helpers

/// All `Prefer` preferences as (name, value) pairs, names lower-case, quotes stripped.
fn prefer(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for h in headers.get_all("prefer") {
        let Ok(text) = h.to_str() else {
            continue;
        };
        // Split on commas outside quotes.
        let mut parts = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        for c in text.chars() {
            match c {
                '"' => {
                    quoted = !quoted;
                    cur.push(c);
                }
                ',' if !quoted => parts.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        parts.push(cur);
        for p in parts {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            out.push((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            ));
        }
    }
    out
}

fn prefer_get(prefs: &[(String, String)], name: &str) -> Option<String> {
    prefs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// Reads an OData string literal starting right after the opening quote; returns (value, rest).
fn odata_literal(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                out.push('\'');
                chars.next();
                continue;
            }
            return Some((out, &s[i + 1..]));
        }
        out.push(c);
    }
    None
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `singleValueExtendedProperties/any(ep: ep/id eq 'X' and ep/value eq 'Y')` → (X, Y).
fn parse_marker_filter(filter: &str) -> Option<(String, String)> {
    let rest = strip_prefix_ci(filter.trim(), "singleValueExtendedProperties/any(")?;
    let (var, rest) = rest.split_once(':')?;
    let var = var.trim();
    let rest = strip_prefix_ci(rest.trim_start(), &format!("{var}/id eq '"))?;
    let (id, rest) = odata_literal(rest)?;
    let rest = strip_prefix_ci(rest.trim_start(), "and ")?;
    let rest = strip_prefix_ci(rest.trim_start(), &format!("{var}/value eq '"))?;
    let (value, rest) = odata_literal(rest)?;
    (rest.trim() == ")").then_some((id, value))
}

/// `$expand=singleValueExtendedProperties($filter=id eq 'X')` → Some(Some(X)); without a filter
/// Some(None); anything else → None.
fn parse_expand(expand: &str) -> Option<Option<String>> {
    let expand = expand.trim();
    let rest = strip_prefix_ci(expand, "singleValueExtendedProperties")?;
    let rest = rest.trim();
    if rest.is_empty() {
        return Some(None);
    }
    let rest = strip_prefix_ci(rest, "($filter=")?;
    let rest = strip_prefix_ci(rest.trim_start(), "id eq '")?;
    let (id, rest) = odata_literal(rest)?;
    (rest.trim() == ")").then_some(Some(id))
}

fn parse_usize(pairs: &[(String, String)], name: &str) -> Result<Option<usize>, Resp> {
    match query_get(pairs, name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map(Some)
            .map_err(|_| bad_request(&format!("Invalid value for {name}."))),
    }
}

// ---------------------------------------------------------------------------------------------
// The mock

struct Shared {
    origin: String,
    oauth: OAuthServer,
    common: MockCommon,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running Graph + identity-platform mock. Dropping it stops the server.
pub struct GraphMock {
    http: MockHttp,
    shared: Arc<Shared>,
}

impl GraphMock {
    /// Starts the mock with one default calendar ([`DEFAULT_CALENDAR_ID`], "Calendar").
    pub async fn start() -> GraphMock {
        let oauth = OAuthServer::new(
            Flavour::Microsoft,
            CLIENT_ID,
            CLIENT_SECRET,
            DEFAULT_REDIRECT_URI,
        );
        let state = State {
            calendars: vec![Calendar {
                id: DEFAULT_CALENDAR_ID.to_string(),
                name: "Calendar".to_string(),
                is_default: true,
                can_edit: true,
                change_key: "FAKEcalKey01==".to_string(),
            }],
            events: HashMap::new(),
            version: 0,
            order: 0,
            id_counter: 0,
            rounds: Vec::new(),
            skip_tokens: HashMap::new(),
            delta_tokens: HashMap::new(),
            replay_duplicates: false,
            insert_empty_pages: false,
            reset_with_location: false,
        };
        // The handler needs the origin, known only after binding: fill it in through a cell.
        let cell: Arc<Mutex<Option<Arc<Shared>>>> = Arc::new(Mutex::new(None));
        let handler_cell = cell.clone();
        let http = MockHttp::start(move |req: Req| {
            let shared = handler_cell.lock().ok().and_then(|g| g.as_ref().cloned());
            match shared {
                Some(shared) => handle(&shared, req),
                None => graph_error(503, "serviceNotAvailable", "Starting up."),
            }
        })
        .await;
        let shared = Arc::new(Shared {
            origin: http.origin(),
            oauth,
            common: MockCommon::default(),
            state: Mutex::new(state),
        });
        if let Ok(mut g) = cell.lock() {
            *g = Some(shared.clone());
        }
        GraphMock { http, shared }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        self.shared.origin.clone()
    }

    /// `http://127.0.0.1:PORT/v1.0` (Graph base URL).
    pub fn base_url(&self) -> String {
        format!("{}/v1.0", self.shared.origin)
    }

    pub fn authorize_url(&self) -> String {
        format!("{}/common/oauth2/v2.0/authorize", self.shared.origin)
    }

    pub fn token_url(&self) -> String {
        format!("{}/common/oauth2/v2.0/token", self.shared.origin)
    }

    pub fn oauth(&self) -> &OAuthServer {
        &self.shared.oauth
    }

    pub fn set_redirect_uri(&self, redirect_uri: &str) {
        self.shared.oauth.set_redirect_uri(redirect_uri);
    }

    /// A valid access token (and refresh token) without the browser flow.
    pub fn issue_tokens(&self) -> (String, String) {
        self.shared.oauth.issue_tokens_for_test()
    }

    pub fn faults(&self) -> &FaultQueue {
        &self.shared.common.faults
    }

    pub fn set_latency(&self, latency: Duration) {
        self.shared.common.set_latency(latency);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.common.requests.all()
    }

    /// Delta pages repeat the last item of the previous page (Graph "replays").
    pub fn replay_duplicates(&self, on: bool) {
        self.shared.lock().replay_duplicates = on;
    }

    /// Delta rounds get an empty page (with a nextLink) after their first page.
    pub fn insert_empty_pages(&self, on: bool) {
        self.shared.lock().insert_empty_pages = on;
    }

    /// Every delta token handed out so far becomes invalid: the next GET on such a deltaLink →
    /// 410 `SyncStateNotFound` (or, with [`GraphMock::set_sync_reset_location`], 410
    /// `resyncRequired` + `Location`).
    pub fn expire_delta_tokens(&self) {
        for t in self.shared.lock().delta_tokens.values_mut() {
            t.expired = true;
        }
    }

    /// Every `$skiptoken` handed out so far becomes invalid (410, as for delta tokens).
    pub fn expire_skip_tokens(&self) {
        for t in self.shared.lock().skip_tokens.values_mut() {
            t.expired = true;
        }
    }

    /// Expired tokens answer with the documented "synchronization reset" shape: 410
    /// `resyncRequired` + a `Location` header holding a fresh initial delta URL.
    pub fn set_sync_reset_location(&self, on: bool) {
        self.shared.lock().reset_with_location = on;
    }

    /// Adds (or updates) a calendar. `is_default` makes it the only default calendar.
    pub fn add_calendar(&self, id: &str, name: &str, is_default: bool) {
        let mut st = self.shared.lock();
        if is_default {
            for c in &mut st.calendars {
                c.is_default = false;
            }
        }
        let n = st.calendars.len() + 1;
        match st.calendars.iter_mut().find(|c| c.id == id) {
            Some(c) => {
                c.name = name.to_string();
                c.is_default = is_default;
            }
            None => st.calendars.push(Calendar {
                id: id.to_string(),
                name: name.to_string(),
                is_default,
                can_edit: true,
                change_key: format!("FAKEcalKey{n:02}=="),
            }),
        }
    }

    pub fn set_calendar_can_edit(&self, id: &str, can_edit: bool) {
        if let Some(c) = self.shared.lock().calendars.iter_mut().find(|c| c.id == id) {
            c.can_edit = can_edit;
        }
    }

    pub fn remove_calendar(&self, id: &str) {
        let mut st = self.shared.lock();
        st.calendars.retain(|c| c.id != id);
        st.events.retain(|_, e| e.cal != id);
    }

    /// Inserts or replaces an event (Graph shape) in calendar `cal`; returns its id. Missing
    /// server fields (`id`, `changeKey`, `@odata.etag`, `iCalUId`, timestamps, defaults) are
    /// filled in; `start`/`end` are normalised to 7 fractional digits. Replacing bumps the version
    /// (the event shows up in the next delta round).
    pub fn put_event(&self, cal: &str, mut event: Value) -> String {
        let mut st = self.shared.lock();
        let given = str_field(&event, "id").map(str::to_string);
        let (id, n) = match given {
            Some(id) => {
                st.id_counter += 1;
                (id, st.id_counter)
            }
            None => st.new_event_id(),
        };
        if let (Some(old), Some(obj)) = (st.events.get(&id), event.as_object_mut()) {
            // A replacement keeps the server-assigned identity fields unless given.
            for k in ["createdDateTime", "iCalUId"] {
                if let Some(v) = old.value.get(k) {
                    obj.entry(k).or_insert(v.clone());
                }
            }
        }
        complete_event(&mut event, &id, n);
        let created = !st.events.contains_key(&id);
        let version = st.stamp(&mut event, created);
        st.order += 1;
        let order = st.order;
        let (order, deleted) = match st.events.get(&id) {
            Some(old) => (old.order, old.deleted_occurrences.clone()),
            None => (order, HashSet::new()),
        };
        st.events.insert(
            id.clone(),
            Stored {
                cal: cal.to_string(),
                value: event,
                version,
                order,
                deleted_occurrences: deleted,
            },
        );
        id
    }

    /// Shallow-merges `patch` into the event (like Graph PATCH); `false` if unknown.
    pub fn patch_event(&self, id: &str, patch: Value) -> bool {
        let mut st = self.shared.lock();
        apply_patch(&mut st, id, &patch)
    }

    /// Deletes an event (or one generated occurrence); `false` if unknown.
    pub fn delete_event(&self, id: &str) -> bool {
        let mut st = self.shared.lock();
        delete(&mut st, id)
    }

    /// The stored event (raw, as written, with extended properties), or a generated occurrence.
    pub fn event(&self, cal: &str, id: &str) -> Option<Value> {
        let st = self.shared.lock();
        st.lookup(id).filter(|(c, _)| c == cal).map(|(_, v)| v)
    }

    /// Stored events of `cal` (single instances, masters, exceptions), insertion order.
    pub fn live_events(&self, cal: &str) -> Vec<Value> {
        let st = self.shared.lock();
        st.events_of(Some(cal))
            .into_iter()
            .map(|e| e.value.clone())
            .collect()
    }

    /// The calendar view of `cal` (expanded, UTC), as the API would list it.
    pub fn view(&self, cal: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Value> {
        let st = self.shared.lock();
        st.instances(cal, start, end)
            .into_iter()
            .map(|i| render_event(&i.value, &Render::default(), false))
            .collect()
    }

    /// How many delta tokens have been handed out.
    pub fn delta_tokens_issued(&self) -> usize {
        self.shared.lock().delta_tokens.len()
    }

    pub fn shutdown(&self) {
        self.http.shutdown();
    }
}

fn apply_patch(st: &mut State, id: &str, patch: &Value) -> bool {
    let Some(patch) = patch.as_object() else {
        return false;
    };
    let Some(mut value) = st.events.get(id).map(|e| e.value.clone()) else {
        return false;
    };
    if let Some(obj) = value.as_object_mut() {
        for (k, v) in patch {
            if matches!(
                k.as_str(),
                "id" | "changeKey"
                    | "@odata.etag"
                    | "createdDateTime"
                    | "iCalUId"
                    | "transactionId"
            ) {
                continue;
            }
            obj.insert(k.clone(), v.clone());
        }
    }
    normalise_times(&mut value);
    let version = st.stamp(&mut value, false);
    if let Some(e) = st.events.get_mut(id) {
        e.value = value;
        e.version = version;
    }
    true
}

fn delete(st: &mut State, id: &str) -> bool {
    if st.events.remove(id).is_some() {
        // Deleting a master deletes its exceptions.
        st.events
            .retain(|_, e| str_field(&e.value, "seriesMasterId") != Some(id));
        return true;
    }
    let Some((master_id, date)) = parse_occurrence_id(id) else {
        return false;
    };
    if st.lookup(id).is_none() {
        return false;
    }
    let version = st.next_version();
    match st.events.get_mut(&master_id) {
        Some(m) => {
            m.deleted_occurrences.insert(date);
            m.version = version;
            true
        }
        None => false,
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP handling

fn handle(shared: &Shared, req: Req) -> Resp {
    shared.common.requests.record(&req);
    let raw_path = req.uri().path().to_string();
    let segments: Option<Vec<String>> = raw_path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let Some(segments) = segments else {
        return bad_request("Invalid path encoding.");
    };
    let query = crate::parse_query(req.uri().query());

    // Identity platform: /{tenant}/oauth2/v2.0/{authorize,token}
    if segments.len() == 4 && segments[1] == "oauth2" && segments[2] == "v2.0" {
        return match (req.method().clone(), segments[3].as_str()) {
            (Method::GET, "authorize") => shared.oauth.handle_authorize(&query),
            (Method::POST, "token") => shared.oauth.handle_token(req.headers(), req.body()),
            _ => crate::text_response(404, "Not Found"),
        };
    }

    if segments.first().map(String::as_str) != Some("v1.0") {
        return graph_error(404, "ResourceNotFound", "Resource not found.");
    }

    let auth = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !shared.oauth.validate_bearer(auth) {
        return shared.common.finish(unauthorized());
    }

    let mut delay = Duration::ZERO;
    let mut lose_answer = false;
    match shared.common.next_fault(status_error, sync_state_not_found) {
        FaultAction::Proceed => {}
        FaultAction::ProceedDelayed(d) => delay = d,
        FaultAction::Respond(resp) => return shared.common.finish(resp),
        FaultAction::ProceedThenReset => lose_answer = true,
    }

    let resp = route(shared, &req, &segments[1..], &query);
    if lose_answer {
        return reset_connection();
    }
    shared.common.finish(with_delay(resp, delay))
}

fn seg_is(seg: Option<&String>, word: &str) -> bool {
    seg.is_some_and(|s| s.eq_ignore_ascii_case(word))
}

/// Calendar scope of a path: `me/calendar/...` or `me/calendars/{id}/...` or `me/...`.
enum Scope {
    Default,
    Calendar(String),
}

fn route(shared: &Shared, req: &Req, segs: &[String], query: &[(String, String)]) -> Resp {
    if !seg_is(segs.first(), "me") {
        return bad_request(&format!(
            "Resource not found for the segment '{}'.",
            segs.first().map(String::as_str).unwrap_or("")
        ));
    }
    let rest = &segs[1..];
    let method = req.method().clone();

    // me/calendars (list)
    if rest.len() == 1 && seg_is(rest.first(), "calendars") {
        return match method {
            Method::GET => list_calendars(shared, query),
            _ => method_not_allowed(),
        };
    }

    // Scope prefix.
    let (scope, tail, link_prefix) = if seg_is(rest.first(), "calendars") && rest.len() >= 2 {
        (
            Scope::Calendar(rest[1].clone()),
            &rest[2..],
            format!("/v1.0/me/calendars/{}", percent_encode(&rest[1])),
        )
    } else if seg_is(rest.first(), "calendar") {
        (Scope::Default, &rest[1..], "/v1.0/me/calendar".to_string())
    } else {
        (Scope::Default, rest, "/v1.0/me".to_string())
    };
    let explicit_calendar = seg_is(rest.first(), "calendars") || seg_is(rest.first(), "calendar");

    let cal_id = {
        let st = shared.lock();
        match &scope {
            Scope::Default => st.default_calendar().map(|c| c.id.clone()),
            Scope::Calendar(id) => st.calendar(id).map(|c| c.id.clone()),
        }
    };
    let Some(cal_id) = cal_id else {
        return not_found();
    };

    match tail {
        [] if explicit_calendar => match method {
            Method::GET => get_calendar(shared, &cal_id),
            _ => method_not_allowed(),
        },
        [v] if v.eq_ignore_ascii_case("calendarView") => match method {
            Method::GET => calendar_view(shared, req, query, &cal_id, &link_prefix),
            _ => method_not_allowed(),
        },
        [v, d] if v.eq_ignore_ascii_case("calendarView") && d.eq_ignore_ascii_case("delta") => {
            match method {
                Method::GET => delta(shared, req, query, &cal_id, &link_prefix),
                _ => method_not_allowed(),
            }
        }
        [e] if e.eq_ignore_ascii_case("events") => match method {
            Method::GET => {
                let scope_cal = explicit_calendar.then_some(cal_id.as_str());
                list_events(shared, req, query, scope_cal, &link_prefix)
            }
            Method::POST => create_event(shared, req, &cal_id),
            _ => method_not_allowed(),
        },
        [e, id] if e.eq_ignore_ascii_case("events") => match method {
            Method::GET => get_event(shared, req, query, id),
            Method::PATCH => patch_event(shared, req, id),
            Method::DELETE => delete_event(shared, req, id),
            _ => method_not_allowed(),
        },
        _ => bad_request("Resource not found for the segment."),
    }
}

fn method_not_allowed() -> Resp {
    graph_error(
        405,
        "Request_BadRequest",
        "The HTTP method is not allowed for this resource.",
    )
}

fn render_from(req: &Req, query: &[(String, String)]) -> Result<Render, Resp> {
    let prefs = prefer(req.headers());
    let expand = match query_get(query, "$expand") {
        None => None,
        Some(e) => match parse_expand(e) {
            Some(x) => Some(x),
            None => return Err(bad_request("Unsupported $expand.")),
        },
    };
    Ok(Render {
        zone_name: prefer_get(&prefs, "outlook.timezone"),
        expand,
    })
}

fn calendar_json(c: &Calendar) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "color": "auto",
        "hexColor": "",
        "isDefaultCalendar": c.is_default,
        "changeKey": c.change_key,
        "canShare": c.can_edit,
        "canViewPrivateItems": true,
        "canEdit": c.can_edit,
        "allowedOnlineMeetingProviders": ["teamsForBusiness"],
        "defaultOnlineMeetingProvider": "teamsForBusiness",
        "isTallyingResponses": c.is_default,
        "isRemovable": !c.is_default,
        "owner": {"name": OWNER_NAME, "address": OWNER_ADDRESS},
    })
}

fn context(shared: &Shared, what: &str) -> String {
    format!("{}/v1.0/$metadata#users('{USER_ID}')/{what}", shared.origin)
}

/// `$top`/`$skip` paging: (page, nextLink).
fn page_with_skip<T: Clone>(
    shared: &Shared,
    items: &[T],
    query: &[(String, String)],
    link_path: &str,
) -> Result<(Vec<T>, Option<String>), Resp> {
    let top = parse_usize(query, "$top")?.unwrap_or(DEFAULT_PAGE).max(1);
    let skip = parse_usize(query, "$skip")?.unwrap_or(0);
    let page: Vec<T> = items.iter().skip(skip).take(top).cloned().collect();
    let next = (skip + top < items.len()).then(|| {
        let mut pairs: Vec<(String, String)> = query
            .iter()
            .filter(|(k, _)| k != "$skip" && k != "$top")
            .cloned()
            .collect();
        pairs.push(("$top".into(), top.to_string()));
        pairs.push(("$skip".into(), (skip + top).to_string()));
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        format!("{}{link_path}?{}", shared.origin, encode_query(&refs))
    });
    Ok((page, next))
}

fn list_calendars(shared: &Shared, query: &[(String, String)]) -> Resp {
    let cals: Vec<Value> = shared.lock().calendars.iter().map(calendar_json).collect();
    let (page, next) = match page_with_skip(shared, &cals, query, "/v1.0/me/calendars") {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let mut body = json!({
        "@odata.context": context(shared, "calendars"),
        "value": page,
    });
    if let Some(next) = next {
        body["@odata.nextLink"] = json!(next);
    }
    graph_json(200, &body)
}

fn get_calendar(shared: &Shared, cal_id: &str) -> Resp {
    let st = shared.lock();
    let Some(c) = st.calendar(cal_id) else {
        return not_found();
    };
    let mut body = calendar_json(c);
    body["@odata.context"] = json!(context(shared, "calendars/$entity"));
    graph_json(200, &body)
}

fn window_from(
    query: &[(String, String)],
) -> Result<(DateTime<Utc>, DateTime<Utc>, String, String), Resp> {
    let (Some(s), Some(e)) = (
        query_get(query, "startDateTime"),
        query_get(query, "endDateTime"),
    ) else {
        return Err(missing_window());
    };
    let (Some(start), Some(end)) = (parse_instant(s), parse_instant(e)) else {
        return Err(bad_request("Invalid startDateTime or endDateTime."));
    };
    Ok((start, end, s.to_string(), e.to_string()))
}

fn calendar_view(
    shared: &Shared,
    req: &Req,
    query: &[(String, String)],
    cal_id: &str,
    link_prefix: &str,
) -> Resp {
    let (start, end, _, _) = match window_from(query) {
        Ok(w) => w,
        Err(resp) => return resp,
    };
    let render = match render_from(req, query) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let items: Vec<Value> = shared
        .lock()
        .instances(cal_id, start, end)
        .into_iter()
        .map(|i| render_event(&i.value, &render, false))
        .collect();
    let link_path = format!("{link_prefix}/calendarView");
    let (page, next) = match page_with_skip(shared, &items, query, &link_path) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let mut body = json!({
        "@odata.context": context(shared, "calendarView"),
        "value": page,
    });
    if let Some(next) = next {
        body["@odata.nextLink"] = json!(next);
    }
    let mut resp = graph_json(200, &body);
    if let Some(z) = &render.zone_name {
        resp = with_header(
            resp,
            "preference-applied",
            &format!("outlook.timezone=\"{z}\""),
        );
    }
    resp
}

fn list_events(
    shared: &Shared,
    req: &Req,
    query: &[(String, String)],
    cal: Option<&str>,
    link_prefix: &str,
) -> Resp {
    let render = match render_from(req, query) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let marker = match query_get(query, "$filter") {
        None => None,
        Some(f) => match parse_marker_filter(f) {
            Some(m) => Some(m),
            None => {
                return bad_request(
                    "Invalid filter clause: only singleValueExtendedProperties/any(ep: ep/id eq '…' and ep/value eq '…') is supported by this mock.",
                );
            }
        },
    };
    let items: Vec<Value> = {
        let st = shared.lock();
        st.events_of(cal)
            .into_iter()
            .filter(|e| {
                matches!(
                    str_field(&e.value, "type"),
                    Some("singleInstance" | "seriesMaster") | None
                )
            })
            .filter(|e| {
                marker.as_ref().is_none_or(|(pid, pval)| {
                    e.value
                        .get("singleValueExtendedProperties")
                        .and_then(Value::as_array)
                        .is_some_and(|props| {
                            props.iter().any(|p| {
                                str_field(p, "id").is_some_and(|i| i.eq_ignore_ascii_case(pid))
                                    && str_field(p, "value") == Some(pval.as_str())
                            })
                        })
                })
            })
            .map(|e| render_event(&e.value, &render, false))
            .collect()
    };
    let link_path = format!("{link_prefix}/events");
    let (page, next) = match page_with_skip(shared, &items, query, &link_path) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let mut body = json!({
        "@odata.context": context(shared, "events"),
        "value": page,
    });
    if let Some(next) = next {
        body["@odata.nextLink"] = json!(next);
    }
    graph_json(200, &body)
}

fn event_response(
    shared: &Shared,
    status: u16,
    value: &Value,
    render: &Render,
    echo: bool,
) -> Resp {
    let mut body = render_event(value, render, echo);
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "@odata.context".into(),
            json!(context(shared, "events/$entity")),
        );
    }
    let mut resp = graph_json(status, &body);
    if let Some(etag) = str_field(value, "@odata.etag") {
        resp = with_header(resp, "etag", etag);
    }
    if let Some(z) = &render.zone_name {
        resp = with_header(
            resp,
            "preference-applied",
            &format!("outlook.timezone=\"{z}\""),
        );
    }
    resp
}

fn get_event(shared: &Shared, req: &Req, query: &[(String, String)], id: &str) -> Resp {
    let render = match render_from(req, query) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let found = shared.lock().lookup(id);
    match found {
        Some((_, value)) => event_response(shared, 200, &value, &render, false),
        None => not_found(),
    }
}

fn json_body(req: &Req) -> Result<Map<String, Value>, Resp> {
    match serde_json::from_slice::<Value>(req.body()) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(bad_request("Unable to deserialize the request body.")),
    }
}

fn valid_dtz(v: Option<&Value>) -> bool {
    v.is_some_and(|v| {
        str_field(v, "dateTime").and_then(parse_naive).is_some()
            && str_field(v, "timeZone").is_some_and(|z| resolve_zone(z).is_some())
    })
}

fn create_event(shared: &Shared, req: &Req, cal_id: &str) -> Resp {
    let body = match json_body(req) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if !valid_dtz(body.get("start")) || !valid_dtz(body.get("end")) {
        return bad_request(
            "start and end are required, each with a dateTime and a known timeZone.",
        );
    }
    let render = match render_from(req, &[]) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let mut st = shared.lock();
    if st.calendar(cal_id).is_some_and(|c| !c.can_edit) {
        drop(st);
        return graph_error(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        );
    }
    // Same transactionId → the event created earlier, no duplicate.
    if let Some(tx) = body.get("transactionId").and_then(Value::as_str) {
        let existing = st
            .events
            .values()
            .find(|e| str_field(&e.value, "transactionId") == Some(tx))
            .map(|e| e.value.clone());
        if let Some(value) = existing {
            drop(st);
            return created_response(shared, &value, &render);
        }
    }
    let mut value = Value::Object(body);
    if let Some(obj) = value.as_object_mut() {
        for k in [
            "id",
            "changeKey",
            "@odata.etag",
            "createdDateTime",
            "lastModifiedDateTime",
        ] {
            obj.remove(k);
        }
    }
    let (id, n) = st.new_event_id();
    complete_event(&mut value, &id, n);
    let version = st.stamp(&mut value, true);
    st.order += 1;
    let order = st.order;
    st.events.insert(
        id,
        Stored {
            cal: cal_id.to_string(),
            value: value.clone(),
            version,
            order,
            deleted_occurrences: HashSet::new(),
        },
    );
    drop(st);
    created_response(shared, &value, &render)
}

fn created_response(shared: &Shared, value: &Value, render: &Render) -> Resp {
    let resp = event_response(shared, 201, value, render, true);
    let id = str_field(value, "id").unwrap_or("");
    with_header(
        resp,
        "location",
        &format!("{}/v1.0/me/events('{}')", shared.origin, percent_encode(id)),
    )
}

/// `If-Match` check: `*`, `W/"ck"`, `"ck"` or bare `ck` against the current change key.
fn if_match_ok(req: &Req, value: &Value) -> bool {
    let Some(h) = req
        .headers()
        .get(http::header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    let current = str_field(value, "changeKey").unwrap_or("");
    h.split(',').any(|t| {
        let t = t.trim();
        t == "*" || t.trim_start_matches("W/").trim_matches('"') == current
    })
}

fn patch_event(shared: &Shared, req: &Req, id: &str) -> Resp {
    let body = match json_body(req) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    for field in ["start", "end"] {
        if body.contains_key(field) && !valid_dtz(body.get(field)) {
            return bad_request("Invalid start or end.");
        }
    }
    let render = match render_from(req, &[]) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let mut st = shared.lock();
    let Some(current) = st.events.get(id).map(|e| e.value.clone()) else {
        return not_found();
    };
    if !if_match_ok(req, &current) {
        return precondition_failed();
    }
    apply_patch(&mut st, id, &Value::Object(body));
    let value = st.events.get(id).map(|e| e.value.clone());
    drop(st);
    match value {
        Some(v) => event_response(shared, 200, &v, &render, true),
        None => not_found(),
    }
}

fn delete_event(shared: &Shared, req: &Req, id: &str) -> Resp {
    let mut st = shared.lock();
    let Some((_, current)) = st.lookup(id) else {
        return not_found();
    };
    if !if_match_ok(req, &current) {
        return precondition_failed();
    }
    if delete(&mut st, id) {
        empty_response(204)
    } else {
        not_found()
    }
}

// ---------------------------------------------------------------------------------------------
// Delta

fn delta(
    shared: &Shared,
    req: &Req,
    query: &[(String, String)],
    cal_id: &str,
    link_prefix: &str,
) -> Resp {
    let prefs = prefer(req.headers());
    let render = Render {
        zone_name: prefer_get(&prefs, "outlook.timezone"),
        expand: None,
    };
    let max_page = prefer_get(&prefs, "odata.maxpagesize").and_then(|v| v.parse::<usize>().ok());
    for unsupported in ["$select", "$expand", "$filter", "$orderby", "$search"] {
        if query_get(query, unsupported).is_some() {
            return bad_request(&format!(
                "The query parameter '{unsupported}' is not supported with change tracking over the 'CalendarView' resource."
            ));
        }
    }
    // An empty `$deltatoken=` (as in a sync-reset `Location`) means "initial request".
    let token_param = |name: &str| query_get(query, name).filter(|v| !v.is_empty());
    let skip_token = token_param("$skiptoken");
    let delta_token = token_param("$deltatoken");
    let continuation = skip_token.is_some() || delta_token.is_some();
    if continuation
        && (query_get(query, "startDateTime").is_some()
            || query_get(query, "endDateTime").is_some())
    {
        // REFERENCE.md §3.3: the window is encoded in the token; never re-append it.
        return bad_request(
            "startDateTime/endDateTime must not be combined with $skiptoken/$deltatoken.",
        );
    }
    let mut st = shared.lock();

    let (round_idx, page_idx) = if let Some(skip) = skip_token {
        match st.skip_tokens.get(skip) {
            Some(t) if !t.expired => (t.round, t.page),
            Some(t) => {
                let window = st.rounds.get(t.round).map(|r| r.window.clone());
                let reset = st.reset_with_location;
                drop(st);
                return expired_answer(shared, window.as_ref(), reset);
            }
            None => return sync_state_not_found(),
        }
    } else if let Some(token) = delta_token {
        let Some(t) = st.delta_tokens.get(token).cloned() else {
            return sync_state_not_found();
        };
        if t.expired {
            let reset = st.reset_with_location;
            drop(st);
            return expired_answer(shared, Some(&t.window), reset);
        }
        let current = st.instances(&t.window.cal, t.window.start, t.window.end);
        let mut items = Vec::new();
        let mut seen = HashMap::new();
        let now_ids: HashSet<&str> = current.iter().map(|i| i.id.as_str()).collect();
        let mut removed: Vec<&String> = t
            .seen
            .keys()
            .filter(|id| !now_ids.contains(id.as_str()))
            .collect();
        removed.sort();
        for id in removed {
            items.push(DeltaItem::Removed(id.clone()));
        }
        let mut changed: Vec<&Instance> = current
            .iter()
            .filter(|i| t.seen.get(&i.id) != Some(&i.version))
            .collect();
        changed.sort_by_key(|i| i.version);
        for i in changed {
            items.push(DeltaItem::Event(i.value.clone()));
        }
        for i in &current {
            seen.insert(i.id.clone(), i.version);
        }
        let idx = new_round(&mut st, t.window.clone(), items, seen, max_page);
        (idx, 0)
    } else {
        let (start, end, start_raw, end_raw) = match window_from(query) {
            Ok(w) => w,
            Err(resp) => return resp,
        };
        let window = Window {
            cal: cal_id.to_string(),
            link_path: format!("{link_prefix}/calendarView/delta"),
            start,
            end,
            start_raw,
            end_raw,
        };
        let current = st.instances(cal_id, start, end);
        let seen = current.iter().map(|i| (i.id.clone(), i.version)).collect();
        let items = current
            .into_iter()
            .map(|i| DeltaItem::Event(i.value))
            .collect();
        let idx = new_round(&mut st, window, items, seen, max_page);
        (idx, 0)
    };

    let Some(round) = st.rounds.get(round_idx).cloned() else {
        return sync_state_not_found();
    };
    let page = round.pages.get(page_idx).cloned().unwrap_or_default();
    let last = page_idx + 1 >= round.pages.len();
    let link_base = format!("{}{}", shared.origin, round.window.link_path);
    let mut body = json!({
        "@odata.context": format!("{}/v1.0/$metadata#Collection(event)", shared.origin),
        "value": page.iter().map(|i| render_delta_item(i, &render)).collect::<Vec<_>>(),
    });
    if last {
        let token = match &round.delta_token {
            Some(t) => t.clone(),
            None => {
                let t = random_token("dt");
                st.delta_tokens.insert(
                    t.clone(),
                    DeltaToken {
                        window: round.window.clone(),
                        seen: round.seen.clone(),
                        expired: false,
                    },
                );
                if let Some(r) = st.rounds.get_mut(round_idx) {
                    r.delta_token = Some(t.clone());
                }
                t
            }
        };
        body["@odata.deltaLink"] = json!(format!("{link_base}?$deltatoken={token}"));
    } else {
        let token = random_token("sk");
        st.skip_tokens.insert(
            token.clone(),
            SkipToken {
                round: round_idx,
                page: page_idx + 1,
                expired: false,
            },
        );
        body["@odata.nextLink"] = json!(format!("{link_base}?$skiptoken={token}"));
    }
    drop(st);
    let mut applied = Vec::new();
    if let Some(n) = max_page {
        applied.push(format!("odata.maxpagesize={n}"));
    }
    applied.push("odata.track-changes".to_string());
    if let Some(z) = &render.zone_name {
        applied.push(format!("outlook.timezone=\"{z}\""));
    }
    with_header(
        graph_json(200, &body),
        "preference-applied",
        &applied.join(", "),
    )
}

fn expired_answer(shared: &Shared, window: Option<&Window>, reset: bool) -> Resp {
    match (reset, window) {
        (true, Some(w)) => {
            let location = format!(
                "{}{}?{}&$deltatoken=",
                shared.origin,
                w.link_path,
                encode_query(&[
                    ("startDateTime", w.start_raw.as_str()),
                    ("endDateTime", w.end_raw.as_str()),
                ])
            );
            with_header(
                graph_error(410, "resyncRequired", "Resync is required."),
                "location",
                &location,
            )
        }
        _ => sync_state_not_found(),
    }
}

/// Splits a round's items into pages (duplicate replay, empty middle page) and stores it.
fn new_round(
    st: &mut State,
    window: Window,
    items: Vec<DeltaItem>,
    seen: HashMap<String, u64>,
    max_page: Option<usize>,
) -> usize {
    let size = max_page.unwrap_or(DEFAULT_PAGE).max(1);
    let mut pages: Vec<Vec<DeltaItem>> = items.chunks(size).map(<[DeltaItem]>::to_vec).collect();
    if pages.is_empty() {
        pages.push(Vec::new());
    }
    if st.replay_duplicates {
        for i in 1..pages.len() {
            if let Some(prev) = pages[i - 1].last().cloned() {
                pages[i].insert(0, prev);
            }
        }
        // A single page replays its own first item.
        if pages.len() == 1
            && let Some(first) = pages[0].first().cloned()
        {
            pages[0].push(first);
        }
    }
    if st.insert_empty_pages {
        // An empty page that still carries a nextLink: in the middle when there are two or more
        // pages, else first.
        let at = if pages.len() >= 2 { 1 } else { 0 };
        pages.insert(at, Vec::new());
    }
    st.rounds.push(Round {
        window,
        pages,
        seen,
        delta_token: None,
    });
    st.rounds.len() - 1
}
