//! Stateful mock of Google OAuth 2.0 + Google Calendar API v3 (REFERENCE.md §1.1, §2).
//!
//! One HTTP server serves:
//! * OAuth: `GET /o/oauth2/v2/auth`, `POST /token`, `POST /revoke` (an [`OAuthServer`], flavour
//!   Google, client `google-client-id` / `google-client-secret`).
//! * API under `/calendar/v3`: `GET /users/me/calendarList[/{cid}]`, `GET|POST
//!   /calendars/{cid}/events`, `GET|PATCH|PUT|DELETE /calendars/{cid}/events/{eid}`,
//!   `POST /calendars/{cid}/events/watch`, `POST /channels/stop`, `POST /freeBusy`.
//!
//! Every API request needs a valid bearer token (401 `authError` + `WWW-Authenticate`), then pops
//! one [`Fault`] from [`GoogleMock::faults`], then is answered after [`GoogleMock::set_latency`]
//! ([`Fault::AnswerLost`]: processed, then the connection closes unanswered). With
//! [`GoogleMock::hold_inserts`], new events stay out of listings until released (an insert the
//! provider is still processing).
//!
//! Limits (documented, deliberate):
//! * Recurrence expansion (`singleEvents=true`, freeBusy, instance ids) understands only
//!   `RRULE:FREQ=DAILY|WEEKLY` with `INTERVAL`, `COUNT`, `UNTIL` and (weekly) plain `BYDAY`
//!   weekdays, plus `EXDATE` lines. Masters with any other rule expand to their first occurrence
//!   only. Rules without `COUNT`/`UNTIL` are expanded up to `timeMax` (or 3 years, ≤ 5000).
//! * The `timeZone` list parameter re-expresses `dateTime` values; without it values are returned
//!   as stored. `maxAttendees`, `showHiddenInvitations`, `sendUpdates` are accepted and ignored.
//! * `updatedMin` never answers 410; calendar access roles are enforced for writes only
//!   (`reader`/`freeBusyReader` → 403 `requiredAccessLevel`).

// Handlers return ready-made error responses as `Err`.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use http::Method;
use serde_json::{Map, Value, json};

use crate::oauth::{Flavour, OAuthServer};
use crate::{
    FaultAction, FaultQueue, MockCommon, MockHttp, RecordedRequest, Req, Resp, empty_response,
    header_str, json_response, parse_query, percent_decode, percent_encode, query_all, query_get,
    random_token, reset_connection, with_delay, with_header,
};

pub const GOOGLE_CLIENT_ID: &str = "google-client-id";
pub const GOOGLE_CLIENT_SECRET: &str = "google-client-secret";
/// Id (= e-mail) of the primary calendar created by [`GoogleMock::start`].
pub const GOOGLE_PRIMARY_ID: &str = "alex.doe@example.test";
/// Page tokens kept alive (oldest evicted first; an evicted token answers 400).
const MAX_PAGE_TOKENS: usize = 512;
const DEFAULT_REDIRECT: &str = "http://127.0.0.1/oauth/google/callback";
const WWW_AUTHENTICATE: &str =
    "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"";

// ---------------------------------------------------------------------------------------------
// Error bodies (examples/google_errors.json)

fn error_body(
    code: u16,
    domain: &str,
    reason: &str,
    message: &str,
    location: Option<(&str, &str)>,
) -> Value {
    let mut e = json!({"domain": domain, "reason": reason, "message": message});
    if let Some((lt, l)) = location {
        e["locationType"] = json!(lt);
        e["location"] = json!(l);
    }
    json!({"error": {"errors": [e], "code": code, "message": message}})
}

fn api_error(
    code: u16,
    domain: &str,
    reason: &str,
    message: &str,
    location: Option<(&str, &str)>,
) -> Resp {
    json_response(code, &error_body(code, domain, reason, message, location))
}

fn err_unauthorized() -> Resp {
    with_header(
        api_error(
            401,
            "global",
            "authError",
            "Invalid Credentials",
            Some(("header", "Authorization")),
        ),
        "www-authenticate",
        WWW_AUTHENTICATE,
    )
}

fn err_not_found() -> Resp {
    api_error(404, "global", "notFound", "Not Found", None)
}

fn err_invalid(message: &str, location: Option<&str>) -> Resp {
    api_error(
        400,
        "global",
        "invalid",
        message,
        location.map(|l| ("parameter", l)),
    )
}

fn err_bad_request(message: &str) -> Resp {
    api_error(400, "global", "badRequest", message, None)
}

fn err_required(message: &str) -> Resp {
    api_error(400, "global", "required", message, None)
}

fn err_time_range_empty(location: &str) -> Resp {
    api_error(
        400,
        "calendar",
        "timeRangeEmpty",
        "The specified time range is empty.",
        Some(("parameter", location)),
    )
}

fn err_sync_token_restrictions() -> Resp {
    api_error(
        400,
        "calendar",
        "syncTokenWithRequestRestrictions",
        "Sync token cannot be used with other request restrictions.",
        None,
    )
}

fn err_full_sync_required() -> Resp {
    api_error(
        410,
        "calendar",
        "fullSyncRequired",
        "Sync token is no longer valid, a full sync is required.",
        Some(("parameter", "syncToken")),
    )
}

fn err_deleted() -> Resp {
    api_error(410, "global", "deleted", "Resource has been deleted", None)
}

fn err_duplicate() -> Resp {
    api_error(
        409,
        "global",
        "duplicate",
        "The requested identifier already exists.",
        None,
    )
}

fn err_condition_not_met() -> Resp {
    api_error(
        412,
        "global",
        "conditionNotMet",
        "Precondition Failed",
        Some(("header", "If-Match")),
    )
}

fn err_forbidden_access() -> Resp {
    api_error(
        403,
        "calendar",
        "requiredAccessLevel",
        "You need to have writer access to this calendar.",
        None,
    )
}

fn fault_status_response(status: u16, forbidden_reason: &str, retry_after: Option<&str>) -> Resp {
    let resp = match status {
        400 => err_bad_request("Bad Request"),
        401 => err_unauthorized(),
        403 => {
            let message = match forbidden_reason {
                "userRateLimitExceeded" => "User Rate Limit Exceeded",
                "quotaExceeded" => "Calendar usage limits exceeded.",
                "dailyLimitExceeded" => "Daily Limit Exceeded",
                "forbidden" => "Forbidden",
                _ => "Rate Limit Exceeded",
            };
            let domain = if forbidden_reason == "forbidden" {
                "global"
            } else {
                "usageLimits"
            };
            api_error(403, domain, forbidden_reason, message, None)
        }
        404 => err_not_found(),
        409 => err_duplicate(),
        410 => err_full_sync_required(),
        412 => err_condition_not_met(),
        429 => api_error(
            429,
            "usageLimits",
            "rateLimitExceeded",
            "Rate Limit Exceeded",
            None,
        ),
        s => api_error(s, "global", "backendError", "Backend Error", None),
    };
    match retry_after {
        Some(ra) => with_header(resp, "retry-after", ra),
        None => resp,
    }
}

// ---------------------------------------------------------------------------------------------
// Time helpers

/// A start/end value: all-day date or instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum When {
    Date(NaiveDate),
    At(DateTime<Utc>),
}

impl When {
    fn instant(self, tz: Tz) -> DateTime<Utc> {
        match self {
            When::At(t) => t,
            When::Date(d) => local_to_utc(tz, d.and_hms_opt(0, 0, 0).unwrap_or_default()),
        }
    }
}

fn local_to_utc(tz: Tz, naive: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&naive).earliest() {
        Some(t) => t.with_timezone(&Utc),
        // In a DST gap: shift forward by an hour.
        None => tz
            .from_local_datetime(&(naive + chrono::Duration::hours(1)))
            .earliest()
            .map_or_else(|| naive.and_utc(), |t| t.with_timezone(&Utc)),
    }
}

fn parse_tz(name: &str) -> Option<Tz> {
    name.parse::<Tz>().ok()
}

/// Parses an `EventDateTime` object. Returns the value and its `timeZone` (if valid).
fn parse_edt(v: Option<&Value>) -> Option<(When, Option<Tz>)> {
    let v = v?;
    let tz = v.get("timeZone").and_then(Value::as_str).and_then(parse_tz);
    if let Some(d) = v.get("date").and_then(Value::as_str) {
        return NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .ok()
            .map(|d| (When::Date(d), tz));
    }
    let s = v.get("dateTime").and_then(Value::as_str)?;
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some((When::At(t.with_timezone(&Utc)), tz));
    }
    // No offset: interpreted in `timeZone`.
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    Some((When::At(local_to_utc(tz?, naive)), tz))
}

fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn fmt_in_tz(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .fixed_offset()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn str_field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get(name).and_then(Value::as_str)
}

fn status_of(v: &Value) -> &str {
    str_field(v, "status").unwrap_or("confirmed")
}

fn is_cancelled(v: &Value) -> bool {
    status_of(v) == "cancelled"
}

fn is_instance(v: &Value) -> bool {
    str_field(v, "recurringEventId").is_some()
}

fn recurrence_lines(v: &Value) -> Vec<String> {
    v.get("recurrence")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn is_master(v: &Value) -> bool {
    !is_instance(v) && !recurrence_lines(v).is_empty()
}

fn valid_client_id(id: &str) -> bool {
    (5..=1024).contains(&id.len()) && id.bytes().all(|b| matches!(b, b'a'..=b'v' | b'0'..=b'9'))
}

// ---------------------------------------------------------------------------------------------
// Recurrence expansion (limited, see module docs)

#[derive(Clone, Debug)]
struct Occurrence {
    id: String,
    orig: When,
    start: When,
    end: When,
}

struct Rule {
    weekly: bool,
    interval: i64,
    count: Option<usize>,
    until: Option<When>,
    byday: Vec<Weekday>,
}

fn parse_rule(line: &str) -> Option<Rule> {
    let body = line.strip_prefix("RRULE:")?;
    let mut rule = Rule {
        weekly: false,
        interval: 1,
        count: None,
        until: None,
        byday: Vec::new(),
    };
    let mut freq = None;
    for part in body.split(';') {
        let (k, v) = part.split_once('=')?;
        match k {
            "FREQ" => freq = Some(v.to_string()),
            "INTERVAL" => rule.interval = v.parse().ok().filter(|i: &i64| *i >= 1)?,
            "COUNT" => rule.count = Some(v.parse().ok()?),
            "UNTIL" => rule.until = Some(parse_ical_when(v, None)?),
            "WKST" if v == "MO" => {}
            "BYDAY" => {
                for d in v.split(',') {
                    rule.byday.push(match d {
                        "MO" => Weekday::Mon,
                        "TU" => Weekday::Tue,
                        "WE" => Weekday::Wed,
                        "TH" => Weekday::Thu,
                        "FR" => Weekday::Fri,
                        "SA" => Weekday::Sat,
                        "SU" => Weekday::Sun,
                        _ => return None,
                    });
                }
            }
            _ => return None,
        }
    }
    match freq.as_deref() {
        Some("DAILY") if rule.byday.is_empty() => {}
        Some("WEEKLY") => rule.weekly = true,
        _ => return None,
    }
    Some(rule)
}

/// `20300520`, `20300520T090000Z`, or `20300520T090000` (local in `tz`).
fn parse_ical_when(v: &str, tz: Option<Tz>) -> Option<When> {
    if v.len() == 8 {
        return NaiveDate::parse_from_str(v, "%Y%m%d").ok().map(When::Date);
    }
    if let Some(utc) = v.strip_suffix('Z') {
        let n = NaiveDateTime::parse_from_str(utc, "%Y%m%dT%H%M%S").ok()?;
        return Some(When::At(n.and_utc()));
    }
    let n = NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S").ok()?;
    Some(When::At(local_to_utc(tz.unwrap_or(Tz::UTC), n)))
}

/// EXDATE values of a master (in its zone).
fn exdates(lines: &[String], tz: Tz) -> Vec<When> {
    let mut out = Vec::new();
    for line in lines.iter().filter(|l| l.starts_with("EXDATE")) {
        let Some((params, values)) = line.split_once(':') else {
            continue;
        };
        let ex_tz = params
            .split(';')
            .find_map(|p| p.strip_prefix("TZID="))
            .and_then(parse_tz)
            .unwrap_or(tz);
        for v in values.split(',') {
            if let Some(w) = parse_ical_when(v.trim(), Some(ex_tz)) {
                out.push(w);
            }
        }
    }
    out
}

fn same_slot(a: When, b: When, tz: Tz) -> bool {
    match (a, b) {
        (When::Date(x), When::Date(y)) => x == y,
        _ => a.instant(tz) == b.instant(tz),
    }
}

fn instance_id(master_id: &str, orig: When) -> String {
    match orig {
        When::Date(d) => format!("{master_id}_{}", d.format("%Y%m%d")),
        When::At(t) => format!("{master_id}_{}", t.format("%Y%m%dT%H%M%SZ")),
    }
}

/// Occurrences of a master up to `limit` (exclusive upper bound on start).
fn expand(master: &Value, cal_tz: Tz, limit: Option<DateTime<Utc>>) -> Vec<Occurrence> {
    let Some(master_id) = str_field(master, "id") else {
        return Vec::new();
    };
    let Some((start, start_tz)) = parse_edt(master.get("start")) else {
        return Vec::new();
    };
    let tz = start_tz.unwrap_or(cal_tz);
    let end = parse_edt(master.get("end")).map_or(start, |e| e.0);
    let lines = recurrence_lines(master);
    let rule = lines
        .iter()
        .filter(|l| l.starts_with("RRULE:"))
        .map(|l| parse_rule(l))
        .next()
        .flatten();
    let mut starts: Vec<When> = vec![start];
    if let Some(rule) = rule {
        let horizon = limit.unwrap_or_else(|| start.instant(tz) + chrono::Duration::days(3 * 366));
        let (start_date, time) = match start {
            When::Date(d) => (d, None),
            When::At(t) => {
                let local = t.with_timezone(&tz).naive_local();
                (local.date(), Some(local.time()))
            }
        };
        let make = |d: NaiveDate| match time {
            None => When::Date(d),
            Some(tm) => When::At(local_to_utc(tz, d.and_time(tm))),
        };
        let mut candidates = Vec::new();
        let max = 5000usize;
        let mut k: i64 = 0;
        'outer: loop {
            let batch: Vec<NaiveDate> = if rule.weekly {
                let week_start = start_date
                    - chrono::Duration::days(i64::from(
                        start_date.weekday().num_days_from_monday(),
                    ))
                    + chrono::Duration::weeks(k * rule.interval);
                if rule.byday.is_empty() {
                    vec![start_date + chrono::Duration::weeks(k * rule.interval)]
                } else {
                    let mut days: Vec<NaiveDate> = rule
                        .byday
                        .iter()
                        .map(|w| {
                            week_start + chrono::Duration::days(i64::from(w.num_days_from_monday()))
                        })
                        .filter(|d| *d > start_date)
                        .collect();
                    days.sort();
                    days
                }
            } else {
                vec![start_date + chrono::Duration::days(k * rule.interval)]
            };
            for d in batch {
                if d <= start_date {
                    continue; // DTSTART is always the first occurrence
                }
                let w = make(d);
                if let Some(until) = rule.until {
                    let past = match (until, w) {
                        (When::Date(u), When::Date(x)) => x > u,
                        (When::Date(u), When::At(x)) => x.with_timezone(&tz).date_naive() > u,
                        (u, x) => x.instant(tz) > u.instant(tz),
                    };
                    if past {
                        break 'outer;
                    }
                }
                if let Some(c) = rule.count
                    && candidates.len() + 1 >= c
                {
                    break 'outer;
                }
                if w.instant(tz) >= horizon || candidates.len() >= max {
                    break 'outer;
                }
                candidates.push(w);
            }
            k += 1;
            if k > 100_000 {
                break;
            }
        }
        starts.extend(candidates);
    }
    let ex = exdates(&lines, tz);
    starts.retain(|s| !ex.iter().any(|e| same_slot(*s, *e, tz)));
    starts
        .into_iter()
        .map(|s| {
            let e = match (s, start, end) {
                (When::Date(d), When::Date(d0), When::Date(e0)) => When::Date(d + (e0 - d0)),
                (When::At(t), When::At(t0), When::At(e0)) => When::At(t + (e0 - t0)),
                (s, _, _) => s,
            };
            Occurrence {
                id: instance_id(master_id, s),
                orig: s,
                start: s,
                end: e,
            }
        })
        .collect()
}

/// An `EventDateTime` for `w`, in the master's zone, keeping its `timeZone` field.
fn edt_value(w: When, tz: Tz, tz_field: Option<&Value>) -> Value {
    match w {
        When::Date(d) => json!({"date": d.format("%Y-%m-%d").to_string()}),
        When::At(t) => {
            let mut v = json!({"dateTime": fmt_in_tz(t, tz)});
            if let Some(z) = tz_field {
                v["timeZone"] = z.clone();
            }
            v
        }
    }
}

fn instance_value(master: &Value, occ: &Occurrence, cal_tz: Tz) -> Value {
    let tz_field = master.get("start").and_then(|s| s.get("timeZone")).cloned();
    let tz = tz_field
        .as_ref()
        .and_then(Value::as_str)
        .and_then(parse_tz)
        .unwrap_or(cal_tz);
    let mut v = master.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("recurrence");
        o.insert("id".into(), json!(occ.id));
        o.insert("recurringEventId".into(), master["id"].clone());
        o.insert("start".into(), edt_value(occ.start, tz, tz_field.as_ref()));
        o.insert("end".into(), edt_value(occ.end, tz, tz_field.as_ref()));
        o.insert(
            "originalStartTime".into(),
            edt_value(occ.orig, tz, tz_field.as_ref()),
        );
        if o.contains_key("htmlLink") {
            o.insert(
                "htmlLink".into(),
                json!(format!(
                    "https://www.google.com/calendar/event?eid={}",
                    occ.id
                )),
            );
        }
    }
    v
}

/// Minimal cancelled representation used in listings.
fn cancelled_stub(v: &Value) -> Value {
    let mut out = json!({
        "kind": "calendar#event",
        "etag": v.get("etag").cloned().unwrap_or(Value::Null),
        "id": v.get("id").cloned().unwrap_or(Value::Null),
        "status": "cancelled",
    });
    if is_instance(v) {
        out["recurringEventId"] = v["recurringEventId"].clone();
        if let Some(o) = v.get("originalStartTime") {
            out["originalStartTime"] = o.clone();
        }
    }
    out
}

/// JSON merge for PATCH: objects merge recursively, arrays and scalars replace, `null` removes.
fn merge_patch(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else if v.is_object() && t.get(k).is_some_and(Value::is_object) {
                    if let Some(slot) = t.get_mut(k) {
                        merge_patch(slot, v);
                    }
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Debug)]
struct Stored {
    value: Value,
    seq: u64,
}

#[derive(Debug)]
struct Calendar {
    id: String,
    summary: String,
    time_zone: String,
    access_role: String,
    primary: bool,
    hidden: bool,
    deleted: bool,
    etag: String,
    list_seq: u64,
    /// Change sequence of this calendar's events (drives sync tokens).
    seq: u64,
    /// Sync tokens minted under another epoch are invalid (410).
    epoch: u64,
    order: Vec<String>,
    events: HashMap<String, Stored>,
}

impl Calendar {
    fn tz(&self) -> Tz {
        parse_tz(&self.time_zone).unwrap_or(Tz::UTC)
    }

    fn writable(&self) -> bool {
        matches!(self.access_role.as_str(), "owner" | "writer")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum TokenScope {
    CalendarList,
    Events(String),
}

#[derive(Debug)]
struct SyncToken {
    scope: TokenScope,
    seq: u64,
    epoch: u64,
    issued: Instant,
}

#[derive(Debug)]
struct PageToken {
    fingerprint: String,
    items: Arc<Vec<Value>>,
    offset: usize,
    empty_next: bool,
    sync_token: Option<String>,
}

/// A push notification sent (or attempted) to a watch channel.
#[derive(Clone, Debug)]
pub struct Notification {
    pub channel_id: String,
    pub resource_state: String,
    pub message_number: u64,
    /// HTTP status of the delivery, `None` if the request failed.
    pub status: Option<u16>,
}

#[derive(Debug)]
struct Channel {
    id: String,
    resource_id: String,
    calendar: String,
    expiration_ms: i64,
    stopped: bool,
    message_number: u64,
    tx: tokio::sync::mpsc::UnboundedSender<(String, u64)>,
    value: Value,
}

#[derive(Debug)]
struct State {
    calendars: Vec<Calendar>,
    list_seq: u64,
    list_epoch: u64,
    etag_counter: u64,
    sync_tokens: HashMap<String, SyncToken>,
    page_tokens: HashMap<String, PageToken>,
    /// Insertion order of `page_tokens`, for eviction (bounded memory in long benchmarks).
    page_token_order: VecDeque<String>,
    page_size_cap: Option<usize>,
    empty_pages: bool,
    token_max_age: Option<Duration>,
    forbidden_reason: String,
    channels: Vec<Channel>,
    /// Inserts are held back from `events.list` (still being processed: `get`
    /// and duplicate-id checks see them, searches do not yet).
    hold_inserts: bool,
    /// (calendar id, event id) of the events held back.
    held: HashSet<(String, String)>,
}

impl State {
    fn next_etag(&mut self) -> String {
        self.etag_counter += 1;
        format!("\"{}\"", 3_400_000_000_000_000u64 + self.etag_counter)
    }

    fn cal_index(&self, id: &str) -> Option<usize> {
        if id == "primary" {
            return self.calendars.iter().position(|c| c.primary && !c.deleted);
        }
        self.calendars.iter().position(|c| c.id == id && !c.deleted)
    }

    fn mint_sync_token(&mut self, scope: TokenScope, seq: u64, epoch: u64) -> String {
        let token = random_token("CPDmock");
        self.sync_tokens.insert(
            token.clone(),
            SyncToken {
                scope,
                seq,
                epoch,
                issued: Instant::now(),
            },
        );
        token
    }

    /// `Some(seq)` if `token` is a live token for `scope`; `None` → 410.
    fn check_sync_token(&self, token: &str, scope: &TokenScope) -> Option<u64> {
        let t = self.sync_tokens.get(token)?;
        if &t.scope != scope {
            return None;
        }
        let epoch = match scope {
            TokenScope::CalendarList => self.list_epoch,
            TokenScope::Events(id) => self.calendars.iter().find(|c| &c.id == id)?.epoch,
        };
        if t.epoch != epoch {
            return None;
        }
        if let Some(max) = self.token_max_age
            && t.issued.elapsed() > max
        {
            return None;
        }
        Some(t.seq)
    }

    /// Records a change in calendar `ci` and notifies its watch channels.
    fn touch(&mut self, ci: usize) -> u64 {
        self.calendars[ci].seq += 1;
        let seq = self.calendars[ci].seq;
        let cal_id = self.calendars[ci].id.clone();
        let now_ms = Utc::now().timestamp_millis();
        for ch in self.channels.iter_mut() {
            if ch.calendar == cal_id && !ch.stopped && now_ms < ch.expiration_ms {
                ch.message_number += 1;
                let _ = ch.tx.send(("exists".to_string(), ch.message_number));
            }
        }
        seq
    }

    fn touch_list(&mut self, ci: usize) {
        self.list_seq += 1;
        self.calendars[ci].list_seq = self.list_seq;
        let etag = self.next_etag();
        self.calendars[ci].etag = etag;
    }

    /// Fills server-managed fields and stores `value` (create or replace) in calendar `ci`.
    fn store_event(&mut self, ci: usize, mut value: Value, bump_sequence: bool) -> String {
        let id = match str_field(&value, "id") {
            Some(id) => id.to_string(),
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        let etag = self.next_etag();
        let now = now_rfc3339();
        let cal_id = self.calendars[ci].id.clone();
        let previous = self.calendars[ci].events.get(&id).map(|s| s.value.clone());
        let master_uid = str_field(&value, "recurringEventId")
            .and_then(|m| self.calendars[ci].events.get(m))
            .and_then(|m| str_field(&m.value, "iCalUID"))
            .map(str::to_string);
        if let Some(o) = value.as_object_mut() {
            o.insert("id".into(), json!(id));
            o.insert("kind".into(), json!("calendar#event"));
            o.insert("etag".into(), json!(etag));
            o.insert("updated".into(), json!(now));
            let created = previous
                .as_ref()
                .and_then(|p| p.get("created").cloned())
                .or_else(|| o.get("created").cloned())
                .unwrap_or_else(|| json!(now));
            o.insert("created".into(), created);
            let prev_seq = previous
                .as_ref()
                .and_then(|p| p.get("sequence"))
                .and_then(Value::as_u64);
            let seq = match prev_seq {
                Some(s) if bump_sequence => s + 1,
                Some(s) => s,
                None => o.get("sequence").and_then(Value::as_u64).unwrap_or(0),
            };
            o.insert("sequence".into(), json!(seq));
            if !o.contains_key("iCalUID") {
                let uid = previous
                    .as_ref()
                    .and_then(|p| p.get("iCalUID").cloned())
                    .or(master_uid.map(Value::from))
                    .unwrap_or_else(|| json!(format!("{id}@google.com")));
                o.insert("iCalUID".into(), uid);
            }
            o.entry("status").or_insert(json!("confirmed"));
            o.entry("eventType").or_insert(json!("default"));
            o.entry("htmlLink").or_insert(json!(format!(
                "https://www.google.com/calendar/event?eid={id}"
            )));
            o.entry("creator")
                .or_insert(json!({"email": cal_id, "self": true}));
            o.entry("organizer")
                .or_insert(json!({"email": cal_id, "self": true}));
        }
        let seq = self.touch(ci);
        let cal = &mut self.calendars[ci];
        if !cal.events.contains_key(&id) {
            cal.order.push(id.clone());
        }
        cal.events.insert(id.clone(), Stored { value, seq });
        id
    }

    /// Cancels an event: a deleted event (tombstone) or a cancelled instance; a cancelled
    /// master also cancels its exceptions.
    fn cancel(&mut self, ci: usize, id: &str) -> bool {
        let Some(stored) = self.calendars[ci].events.get(id) else {
            return false;
        };
        let mut v = stored.value.clone();
        let master = is_master(&v);
        v["status"] = json!("cancelled");
        self.store_event(ci, v, false);
        if master {
            let exceptions: Vec<String> = self.calendars[ci]
                .events
                .values()
                .filter(|s| str_field(&s.value, "recurringEventId") == Some(id))
                .filter(|s| !is_cancelled(&s.value))
                .filter_map(|s| str_field(&s.value, "id").map(str::to_string))
                .collect();
            for ex in exceptions {
                if let Some(s) = self.calendars[ci].events.get(&ex) {
                    let mut v = s.value.clone();
                    v["status"] = json!("cancelled");
                    self.store_event(ci, v, false);
                }
            }
        }
        true
    }

    /// The stored event, or a generated instance `<master>_<stamp>` of a stored master.
    fn lookup_event(&self, ci: usize, id: &str) -> Option<(Value, bool)> {
        let cal = &self.calendars[ci];
        if let Some(s) = cal.events.get(id) {
            return Some((s.value.clone(), true));
        }
        let (master_id, _) = id.rsplit_once('_')?;
        let master = &cal.events.get(master_id)?.value;
        if !is_master(master) || is_cancelled(master) {
            return None;
        }
        let occ = expand(master, cal.tz(), None)
            .into_iter()
            .find(|o| o.id == id)?;
        Some((instance_value(master, &occ, cal.tz()), false))
    }
}

// ---------------------------------------------------------------------------------------------
// Listing

#[derive(Debug, Default)]
struct ListParams {
    single: bool,
    show_deleted: bool,
    order_by: Option<String>,
    time_min: Option<DateTime<Utc>>,
    time_max: Option<DateTime<Utc>>,
    updated_min: Option<DateTime<Utc>>,
    sync_token: Option<String>,
    max_results: usize,
    tz: Option<Tz>,
    event_types: Vec<String>,
    private_props: Vec<(String, String)>,
    shared_props: Vec<(String, String)>,
    q: Option<String>,
    ical_uid: Option<String>,
}

fn parse_bool(q: &[(String, String)], name: &str) -> Result<Option<bool>, Resp> {
    match query_get(q, name) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(err_invalid("Invalid boolean value", Some(name))),
    }
}

fn parse_max_results(q: &[(String, String)], default: usize, max: usize) -> Result<usize, Resp> {
    match query_get(q, "maxResults") {
        None => Ok(default),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n >= 1 => Ok((n as usize).min(max)),
            _ => Err(err_invalid(
                "Invalid value for maxResults",
                Some("maxResults"),
            )),
        },
    }
}

fn parse_props(q: &[(String, String)], name: &str) -> Result<Vec<(String, String)>, Resp> {
    query_all(q, name)
        .into_iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| err_invalid("Invalid extended property filter", Some(name)))
        })
        .collect()
}

fn parse_list_params(q: &[(String, String)]) -> Result<ListParams, Resp> {
    let sync_token = query_get(q, "syncToken").map(str::to_string);
    let show_deleted = parse_bool(q, "showDeleted")?;
    let single = parse_bool(q, "singleEvents")?.unwrap_or(false);
    if sync_token.is_some() {
        const FORBIDDEN: [&str; 8] = [
            "iCalUID",
            "orderBy",
            "privateExtendedProperty",
            "q",
            "sharedExtendedProperty",
            "timeMin",
            "timeMax",
            "updatedMin",
        ];
        if FORBIDDEN.iter().any(|p| query_get(q, p).is_some()) {
            return Err(err_sync_token_restrictions());
        }
        if show_deleted == Some(false) {
            return Err(err_invalid(
                "showDeleted=false cannot be used with syncToken; deletions are always returned.",
                Some("showDeleted"),
            ));
        }
    }
    let time = |name: &str| -> Result<Option<DateTime<Utc>>, Resp> {
        match query_get(q, name) {
            None => Ok(None),
            Some(s) => parse_rfc3339(s)
                .map(Some)
                .ok_or_else(|| err_bad_request(&format!("Bad Request: invalid {name}"))),
        }
    };
    let time_min = time("timeMin")?;
    let time_max = time("timeMax")?;
    let updated_min = time("updatedMin")?;
    if let (Some(a), Some(b)) = (time_min, time_max)
        && b <= a
    {
        return Err(err_time_range_empty("timeMax"));
    }
    let order_by = query_get(q, "orderBy").map(str::to_string);
    match order_by.as_deref() {
        None | Some("updated") => {}
        Some("startTime") if single => {}
        Some(_) => {
            return Err(err_invalid(
                "The requested ordering is not available for the particular query.",
                Some("orderBy"),
            ));
        }
    }
    let tz = match query_get(q, "timeZone") {
        None => None,
        Some(z) => {
            Some(parse_tz(z).ok_or_else(|| err_invalid("Invalid time zone", Some("timeZone")))?)
        }
    };
    Ok(ListParams {
        single,
        show_deleted: show_deleted.unwrap_or(false),
        order_by,
        time_min,
        time_max,
        updated_min,
        sync_token,
        max_results: parse_max_results(q, 250, 2500)?,
        tz,
        event_types: query_all(q, "eventTypes")
            .into_iter()
            .map(str::to_string)
            .collect(),
        private_props: parse_props(q, "privateExtendedProperty")?,
        shared_props: parse_props(q, "sharedExtendedProperty")?,
        q: query_get(q, "q").map(str::to_lowercase),
        ical_uid: query_get(q, "iCalUID").map(str::to_string),
    })
}

fn in_window(start: When, end: When, p: &ListParams, tz: Tz) -> bool {
    let s = start.instant(tz);
    let e = end.instant(tz);
    if let Some(min) = p.time_min
        && !(e > min || (e == s && s >= min))
    {
        return false;
    }
    if let Some(max) = p.time_max
        && s >= max
    {
        return false;
    }
    true
}

fn event_window(v: &Value) -> Option<(When, When)> {
    let (s, _) = parse_edt(v.get("start")).or_else(|| parse_edt(v.get("originalStartTime")))?;
    let e = parse_edt(v.get("end")).map_or(s, |e| e.0);
    Some((s, e))
}

fn matches_window(v: &Value, p: &ListParams, tz: Tz) -> bool {
    match event_window(v) {
        Some((s, e)) => in_window(s, e, p, tz),
        None => true,
    }
}

/// Filters that apply to any listed item (evaluated on the full stored value).
fn matches_filters(v: &Value, p: &ListParams) -> bool {
    if !p.event_types.is_empty() {
        let t = str_field(v, "eventType").unwrap_or("default");
        if !p.event_types.iter().any(|e| e == t) {
            return false;
        }
    }
    let props_ok = |kind: &str, wanted: &[(String, String)]| {
        wanted.iter().all(|(k, val)| {
            v.get("extendedProperties")
                .and_then(|e| e.get(kind))
                .and_then(|m| m.get(k))
                .and_then(Value::as_str)
                == Some(val.as_str())
        })
    };
    if !props_ok("private", &p.private_props) || !props_ok("shared", &p.shared_props) {
        return false;
    }
    if let Some(uid) = &p.ical_uid
        && str_field(v, "iCalUID") != Some(uid.as_str())
    {
        return false;
    }
    if let Some(q) = &p.q {
        let hay = ["summary", "description", "location"]
            .iter()
            .filter_map(|f| str_field(v, f))
            .collect::<Vec<_>>()
            .join("\n")
            .to_lowercase();
        if !hay.contains(q.as_str()) {
            return false;
        }
    }
    if let Some(um) = p.updated_min {
        let updated = str_field(v, "updated").and_then(parse_rfc3339);
        if updated.is_some_and(|u| u < um) {
            return false;
        }
    }
    true
}

/// (item to emit, value used for filters)
type Listed = (Value, Value);

/// Occurrences of master `m` with exceptions applied (singleEvents=true rendering).
fn render_series(
    cal: &Calendar,
    m: &Value,
    exceptions: &[&Value],
    limit: Option<DateTime<Utc>>,
    out: &mut Vec<Listed>,
    include_cancelled: bool,
    window: Option<&ListParams>,
) {
    let tz = cal.tz();
    let mut used: HashSet<usize> = HashSet::new();
    for occ in expand(m, tz, limit) {
        let ex = exceptions.iter().enumerate().find(|(_, e)| {
            parse_edt(e.get("originalStartTime")).is_some_and(|(o, _)| same_slot(o, occ.orig, tz))
        });
        match ex {
            Some((i, e)) => {
                used.insert(i);
                if is_cancelled(e) {
                    if include_cancelled {
                        out.push((cancelled_stub(e), (*e).clone()));
                    }
                } else if window.is_none_or(|p| matches_window(e, p, tz)) {
                    out.push(((*e).clone(), (*e).clone()));
                }
            }
            None => {
                if window.is_none_or(|p| in_window(occ.start, occ.end, p, tz)) {
                    let v = instance_value(m, &occ, tz);
                    out.push((v.clone(), v));
                }
            }
        }
    }
    // Exceptions whose slot the (limited) expansion did not produce.
    for (i, e) in exceptions.iter().enumerate() {
        if used.contains(&i) {
            continue;
        }
        if is_cancelled(e) {
            if include_cancelled {
                out.push((cancelled_stub(e), (*e).clone()));
            }
        } else if window.is_none_or(|p| matches_window(e, p, tz)) {
            out.push(((*e).clone(), (*e).clone()));
        }
    }
}

fn exceptions_by_master(cal: &Calendar) -> HashMap<String, Vec<&Value>> {
    let mut map: HashMap<String, Vec<&Value>> = HashMap::new();
    for id in &cal.order {
        let v = &cal.events[id].value;
        if let Some(m) = str_field(v, "recurringEventId") {
            map.entry(m.to_string()).or_default().push(v);
        }
    }
    map
}

/// A full (non-incremental) listing.
fn full_listing(cal: &Calendar, p: &ListParams) -> Vec<Value> {
    let tz = cal.tz();
    let show_deleted = p.show_deleted || p.updated_min.is_some();
    let exceptions = exceptions_by_master(cal);
    let master_live = |id: &str| {
        cal.events
            .get(id)
            .is_some_and(|m| is_master(&m.value) && !is_cancelled(&m.value))
    };
    let mut out: Vec<Listed> = Vec::new();
    for id in &cal.order {
        let v = &cal.events[id].value;
        if is_instance(v) {
            let master_id = str_field(v, "recurringEventId").unwrap_or_default();
            let master_exists = cal.events.contains_key(master_id);
            if master_exists && p.single {
                continue; // rendered with its series
            }
            if master_exists && !master_live(master_id) && !show_deleted {
                continue; // deleted series
            }
            if is_cancelled(v) {
                // Cancelled instances are listed with singleEvents=false even without showDeleted.
                if (master_exists && !p.single) || show_deleted {
                    out.push((cancelled_stub(v), v.clone()));
                }
            } else if matches_window(v, p, tz) {
                out.push((v.clone(), v.clone()));
            }
        } else if is_master(v) {
            if is_cancelled(v) {
                if show_deleted {
                    out.push((cancelled_stub(v), v.clone()));
                }
            } else if p.single {
                let ex = exceptions.get(id.as_str()).cloned().unwrap_or_default();
                render_series(cal, v, &ex, p.time_max, &mut out, show_deleted, Some(p));
            } else {
                let occs = expand(v, tz, p.time_max);
                if occs.iter().any(|o| in_window(o.start, o.end, p, tz)) || occs.is_empty() {
                    out.push((v.clone(), v.clone()));
                }
            }
        } else if is_cancelled(v) {
            if show_deleted {
                out.push((cancelled_stub(v), v.clone()));
            }
        } else if matches_window(v, p, tz) {
            out.push((v.clone(), v.clone()));
        }
    }
    out.retain(|(_, full)| matches_filters(full, p));
    match p.order_by.as_deref() {
        Some("startTime") => {
            out.sort_by_key(|(item, _)| event_window(item).map(|(s, _)| s.instant(tz)))
        }
        Some("updated") => {
            out.sort_by_key(|(_, full)| str_field(full, "updated").and_then(parse_rfc3339))
        }
        _ => {}
    }
    out.into_iter().map(|(item, _)| item).collect()
}

/// Changes since `since` (incremental listing).
fn incremental_listing(cal: &Calendar, p: &ListParams, since: u64) -> Vec<Value> {
    let tz = cal.tz();
    let exceptions = exceptions_by_master(cal);
    let mut out: Vec<Listed> = Vec::new();
    let mut changed: Vec<&Stored> = cal
        .order
        .iter()
        .map(|id| &cal.events[id])
        .filter(|s| s.seq > since)
        .collect();
    changed.sort_by_key(|s| s.seq);
    for s in changed {
        let v = &s.value;
        if p.single && is_master(v) {
            let ex = exceptions
                .get(str_field(v, "id").unwrap_or_default())
                .cloned()
                .unwrap_or_default();
            if is_cancelled(v) {
                for occ in expand(v, tz, None) {
                    let inst = instance_value(v, &occ, tz);
                    let mut stub = cancelled_stub(&inst);
                    stub["etag"] = v["etag"].clone();
                    out.push((stub, inst));
                }
            } else {
                render_series(cal, v, &ex, None, &mut out, true, None);
            }
        } else if is_cancelled(v) {
            out.push((cancelled_stub(v), v.clone()));
        } else {
            out.push((v.clone(), v.clone()));
        }
    }
    out.retain(|(_, full)| {
        p.event_types.is_empty()
            || p.event_types
                .iter()
                .any(|t| t == str_field(full, "eventType").unwrap_or("default"))
    });
    // One entry per id, the latest one.
    let mut seen = HashSet::new();
    let mut items: Vec<Value> = Vec::new();
    for (item, _) in out.into_iter().rev() {
        let id = str_field(&item, "id").unwrap_or_default().to_string();
        if seen.insert(id) {
            items.push(item);
        }
    }
    items.reverse();
    items
}

/// Re-expresses `dateTime` values in `tz`.
fn convert_times(item: &mut Value, tz: Tz) {
    for field in ["start", "end", "originalStartTime"] {
        if let Some(edt) = item.get_mut(field)
            && let Some(s) = edt.get("dateTime").and_then(Value::as_str)
            && let Some(t) = parse_rfc3339(s)
        {
            edt["dateTime"] = json!(fmt_in_tz(t, tz));
        }
    }
}

fn access_rank(role: &str) -> u8 {
    match role {
        "freeBusyReader" => 0,
        "reader" => 1,
        "writerWithoutPrivateAccess" => 2,
        "writer" => 3,
        "owner" => 4,
        _ => 0,
    }
}

fn calendar_entry(c: &Calendar) -> Value {
    let mut v = json!({
        "kind": "calendar#calendarListEntry",
        "etag": c.etag,
        "id": c.id,
        "summary": c.summary,
        "timeZone": c.time_zone,
        "colorId": "14",
        "backgroundColor": "#9fe1e7",
        "foregroundColor": "#000000",
        "accessRole": c.access_role,
        "defaultReminders": [],
    });
    if c.primary {
        v["primary"] = json!(true);
    }
    if c.hidden {
        v["hidden"] = json!(true);
    } else {
        v["selected"] = json!(true);
    }
    if c.deleted {
        v["deleted"] = json!(true);
    }
    v
}

// ---------------------------------------------------------------------------------------------
// The mock

#[derive(Debug)]
struct Inner {
    oauth: OAuthServer,
    common: MockCommon,
    origin: String,
    st: Mutex<State>,
    notifications: Arc<Mutex<Vec<Notification>>>,
}

/// The Google mock: one HTTP server with OAuth + Calendar API v3 and the test-side controls.
pub struct GoogleMock {
    http: MockHttp,
    inner: Arc<Inner>,
}

impl GoogleMock {
    /// Starts the server with one primary calendar (`alex.doe@example.test`, Europe/Berlin,
    /// owner). The OAuth redirect URI defaults to a placeholder: set it with
    /// [`GoogleMock::set_redirect_uri`].
    pub async fn start() -> GoogleMock {
        let listener_slot: Arc<Mutex<Option<Arc<Inner>>>> = Arc::new(Mutex::new(None));
        let slot = listener_slot.clone();
        let http = MockHttp::start(move |req| {
            let inner = slot.lock().unwrap().clone();
            match inner {
                Some(inner) => inner.handle(req),
                None => empty_response(503),
            }
        })
        .await;
        let origin = http.origin();
        let oauth = OAuthServer::new(
            Flavour::Google,
            GOOGLE_CLIENT_ID,
            GOOGLE_CLIENT_SECRET,
            DEFAULT_REDIRECT,
        );
        let inner = Arc::new(Inner {
            oauth,
            common: MockCommon::default(),
            origin,
            st: Mutex::new(State {
                calendars: Vec::new(),
                list_seq: 0,
                list_epoch: 0,
                etag_counter: 0,
                sync_tokens: HashMap::new(),
                page_tokens: HashMap::new(),
                page_token_order: VecDeque::new(),
                page_size_cap: None,
                empty_pages: false,
                token_max_age: None,
                forbidden_reason: "rateLimitExceeded".into(),
                channels: Vec::new(),
                hold_inserts: false,
                held: HashSet::new(),
            }),
            notifications: Arc::new(Mutex::new(Vec::new())),
        });
        *listener_slot.lock().unwrap() = Some(inner.clone());
        let mock = GoogleMock { http, inner };
        mock.add_calendar_inner(
            GOOGLE_PRIMARY_ID,
            GOOGLE_PRIMARY_ID,
            "Europe/Berlin",
            "owner",
            true,
        );
        mock
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.inner.st.lock().unwrap()
    }

    // ---- addresses --------------------------------------------------------------------------

    /// `http://127.0.0.1:PORT`
    pub fn origin(&self) -> String {
        self.inner.origin.clone()
    }

    /// `http://127.0.0.1:PORT/calendar/v3`
    pub fn base_url(&self) -> String {
        format!("{}/calendar/v3", self.inner.origin)
    }

    /// `http://127.0.0.1:PORT/o/oauth2/v2/auth`
    pub fn authorize_url(&self) -> String {
        format!("{}/o/oauth2/v2/auth", self.inner.origin)
    }

    /// `http://127.0.0.1:PORT/token`
    pub fn token_url(&self) -> String {
        format!("{}/token", self.inner.origin)
    }

    /// `http://127.0.0.1:PORT/revoke`
    pub fn revoke_url(&self) -> String {
        format!("{}/revoke", self.inner.origin)
    }

    pub fn oauth(&self) -> &OAuthServer {
        &self.inner.oauth
    }

    pub fn set_redirect_uri(&self, uri: impl Into<String>) {
        self.inner.oauth.set_redirect_uri(uri);
    }

    /// Stops serving (also happens on drop).
    pub fn shutdown(&self) {
        self.http.shutdown();
    }

    // ---- knobs ------------------------------------------------------------------------------

    /// Faults popped by API requests (not OAuth ones; see [`OAuthServer::fail_token_endpoint`]).
    /// `Status{403}` uses the reason set by [`GoogleMock::set_forbidden_reason`].
    pub fn faults(&self) -> &FaultQueue {
        &self.inner.common.faults
    }

    /// Reason for injected 403 faults: `rateLimitExceeded` (default), `userRateLimitExceeded`,
    /// `quotaExceeded`, `dailyLimitExceeded`, `forbidden`.
    pub fn set_forbidden_reason(&self, reason: &str) {
        self.st().forbidden_reason = reason.to_string();
    }

    /// Delay applied to every API response.
    pub fn set_latency(&self, latency: Duration) {
        self.inner.common.set_latency(latency);
    }

    /// While on, inserted events stay out of `events.list` results (the provider
    /// is still processing them) until [`GoogleMock::release_held_inserts`];
    /// `get`, duplicate-id checks and the test accessors see them.
    pub fn hold_inserts(&self, on: bool) {
        self.st().hold_inserts = on;
    }

    /// Ends the processing of held inserts: they show up in listings, and in
    /// incremental ones as changes.
    pub fn release_held_inserts(&self) {
        let mut st = self.st();
        st.hold_inserts = false;
        for (cal, id) in std::mem::take(&mut st.held) {
            let Some(ci) = st.cal_index(&cal) else {
                continue;
            };
            if let Some(value) = st.calendars[ci].events.get(&id).map(|e| e.value.clone()) {
                st.store_event(ci, value, false);
            }
        }
    }

    /// Caps page sizes below `maxResults` (`0` removes the cap).
    pub fn set_page_size_cap(&self, n: usize) {
        self.st().page_size_cap = (n > 0).then_some(n);
    }

    /// Emit an empty page (still carrying `nextPageToken`) between every two non-empty pages.
    pub fn insert_empty_pages(&self, on: bool) {
        self.st().empty_pages = on;
    }

    /// Every existing sync token (events of all calendars, calendar list) → 410 from now on.
    pub fn invalidate_sync_tokens(&self) {
        let mut st = self.st();
        st.list_epoch += 1;
        for c in st.calendars.iter_mut() {
            c.epoch += 1;
        }
    }

    /// Sync tokens of one calendar → 410.
    pub fn invalidate_sync_tokens_for(&self, calendar: &str) {
        let mut st = self.st();
        if let Some(ci) = st.cal_index(calendar) {
            st.calendars[ci].epoch += 1;
        }
    }

    /// Sync tokens older than this → 410 (`None`: no limit).
    pub fn set_sync_token_max_age(&self, max_age: Option<Duration>) {
        self.st().token_max_age = max_age;
    }

    // ---- request log ------------------------------------------------------------------------

    /// Every request received (OAuth and API).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.common.requests.all()
    }

    /// API requests only (paths under `/calendar/v3`).
    pub fn api_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/calendar/v3"))
            .collect()
    }

    pub fn clear_requests(&self) {
        self.inner.common.requests.clear();
    }

    // ---- calendars --------------------------------------------------------------------------

    /// Id of the primary calendar (what `primary` aliases).
    pub fn primary_id(&self) -> String {
        GOOGLE_PRIMARY_ID.to_string()
    }

    /// Adds a (non-primary) calendar to the user's calendar list.
    pub fn add_calendar(&self, id: &str, summary: &str, time_zone: &str, access_role: &str) {
        self.add_calendar_inner(id, summary, time_zone, access_role, false);
    }

    fn add_calendar_inner(
        &self,
        id: &str,
        summary: &str,
        time_zone: &str,
        access_role: &str,
        primary: bool,
    ) {
        let mut st = self.st();
        st.calendars.retain(|c| c.id != id);
        st.calendars.push(Calendar {
            id: id.to_string(),
            summary: summary.to_string(),
            time_zone: time_zone.to_string(),
            access_role: access_role.to_string(),
            primary,
            hidden: false,
            deleted: false,
            etag: String::new(),
            list_seq: 0,
            seq: 0,
            epoch: 0,
            order: Vec::new(),
            events: HashMap::new(),
        });
        let ci = st.calendars.len() - 1;
        st.touch_list(ci);
    }

    /// Removes a calendar from the list (shows as `deleted: true` on incremental list calls).
    pub fn remove_calendar(&self, id: &str) {
        let mut st = self.st();
        if let Some(ci) = st.cal_index(id) {
            st.calendars[ci].deleted = true;
            st.touch_list(ci);
        }
    }

    pub fn set_calendar_hidden(&self, id: &str, hidden: bool) {
        let mut st = self.st();
        if let Some(ci) = st.cal_index(id) {
            st.calendars[ci].hidden = hidden;
            st.touch_list(ci);
        }
    }

    // ---- events (test side) -----------------------------------------------------------------

    /// Creates or replaces an event (keeps `id` if given, else assigns one); fills `etag`,
    /// `updated`, `created`, `sequence`, `iCalUID`, `kind`, `status`. Returns the id.
    /// Panics on an unknown calendar.
    pub fn put_event(&self, calendar: &str, event: Value) -> String {
        let mut st = self.st();
        let ci = st.cal_index(calendar).expect("unknown calendar");
        let replace =
            str_field(&event, "id").is_some_and(|id| st.calendars[ci].events.contains_key(id));
        st.store_event(ci, event, replace)
    }

    /// Merges `patch` into a stored event (PATCH semantics). Panics if missing.
    pub fn patch_event(&self, calendar: &str, id: &str, patch: Value) {
        let mut st = self.st();
        let ci = st.cal_index(calendar).expect("unknown calendar");
        let (mut v, _) = st.lookup_event(ci, id).expect("unknown event");
        merge_patch(&mut v, &patch);
        v["id"] = json!(id);
        st.store_event(ci, v, true);
    }

    /// Cancels an event: a plain event/master becomes a deleted tombstone (incremental sync
    /// reports `{kind, etag, id, status:"cancelled"}`), an instance becomes a cancelled
    /// exception (generated instances are materialised first). Panics if missing.
    pub fn cancel_event(&self, calendar: &str, id: &str) {
        let mut st = self.st();
        let ci = st.cal_index(calendar).expect("unknown calendar");
        let (v, stored) = st.lookup_event(ci, id).expect("unknown event");
        if !stored {
            st.store_event(ci, v, false);
        }
        st.cancel(ci, id);
    }

    /// The stored event (cancelled ones too), or a generated instance of a series.
    pub fn event(&self, calendar: &str, id: &str) -> Option<Value> {
        let st = self.st();
        let ci = st.cal_index(calendar)?;
        st.lookup_event(ci, id).map(|(v, _)| v)
    }

    /// Stored, non-cancelled events (masters and exceptions as stored, not expanded).
    pub fn live_events(&self, calendar: &str) -> Vec<Value> {
        let st = self.st();
        let Some(ci) = st.cal_index(calendar) else {
            return Vec::new();
        };
        let cal = &st.calendars[ci];
        cal.order
            .iter()
            .map(|id| &cal.events[id].value)
            .filter(|v| !is_cancelled(v))
            .cloned()
            .collect()
    }

    /// Every stored event, cancelled ones included.
    pub fn all_events(&self, calendar: &str) -> Vec<Value> {
        let st = self.st();
        let Some(ci) = st.cal_index(calendar) else {
            return Vec::new();
        };
        let cal = &st.calendars[ci];
        cal.order
            .iter()
            .map(|id| cal.events[id].value.clone())
            .collect()
    }

    /// Live events carrying `extendedProperties.private[name] == value`.
    pub fn events_with_private_property(
        &self,
        calendar: &str,
        name: &str,
        value: &str,
    ) -> Vec<Value> {
        self.live_events(calendar)
            .into_iter()
            .filter(|v| {
                v.get("extendedProperties")
                    .and_then(|e| e.get("private"))
                    .and_then(|p| p.get(name))
                    .and_then(Value::as_str)
                    == Some(value)
            })
            .collect()
    }

    // ---- watch channels ---------------------------------------------------------------------

    /// Channels created through `events.watch` (the Channel resources returned).
    pub fn channels(&self) -> Vec<Value> {
        self.st().channels.iter().map(|c| c.value.clone()).collect()
    }

    /// Push notifications delivered so far.
    pub fn notifications(&self) -> Vec<Notification> {
        self.inner.notifications.lock().unwrap().clone()
    }
}

impl Drop for GoogleMock {
    fn drop(&mut self) {
        self.http.shutdown();
        // Break the handler ↔ state cycle and stop notification tasks.
        self.st().channels.clear();
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP handling

impl Inner {
    fn st(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap()
    }

    fn handle(&self, req: Req) -> Resp {
        self.common.requests.record(&req);
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        match (method.as_str(), path.as_str()) {
            ("GET", "/o/oauth2/v2/auth") => {
                return self.oauth.handle_authorize(&parse_query(req.uri().query()));
            }
            ("POST", "/token") => return self.oauth.handle_token(req.headers(), req.body()),
            ("POST", "/revoke") => {
                let mut body = req.body().to_vec();
                if let Some(q) = req.uri().query() {
                    if !body.is_empty() {
                        body.push(b'&');
                    }
                    body.extend_from_slice(q.as_bytes());
                }
                return self.oauth.handle_revoke(&body);
            }
            _ => {}
        }
        let Some(api_path) = path.strip_prefix("/calendar/v3/") else {
            return err_not_found();
        };
        // Auth, then one fault, then the real work; latency on everything.
        if !self
            .oauth
            .validate_bearer(header_str(req.headers(), "authorization"))
        {
            return self.common.finish(err_unauthorized());
        }
        let reason = self.st().forbidden_reason.clone();
        let (delay, lose_answer) = match self.common.next_fault(
            |s, ra| fault_status_response(s, &reason, ra),
            err_full_sync_required,
        ) {
            FaultAction::Proceed => (Duration::ZERO, false),
            FaultAction::ProceedDelayed(d) => (d, false),
            FaultAction::Respond(r) => return self.common.finish(r),
            FaultAction::ProceedThenReset => (Duration::ZERO, true),
        };
        let segments: Option<Vec<String>> = api_path.split('/').map(percent_decode).collect();
        let resp = match segments {
            None => err_bad_request("Bad Request"),
            Some(seg) => self.route(&method, &seg, &req),
        };
        if lose_answer {
            // Processed; the connection then closes (after the usual latency).
            return self.common.finish(reset_connection());
        }
        self.common.finish(with_delay(resp, delay))
    }

    fn route(&self, method: &Method, seg: &[String], req: &Req) -> Resp {
        let q = parse_query(req.uri().query());
        let seg: Vec<&str> = seg.iter().map(String::as_str).collect();
        match (method.as_str(), seg.as_slice()) {
            ("GET", ["users", "me", "calendarList"]) => self.calendar_list(&q),
            ("GET", ["users", "me", "calendarList", cid]) => {
                let st = self.st();
                match st.cal_index(cid) {
                    Some(ci) => json_response(200, &calendar_entry(&st.calendars[ci])),
                    None => err_not_found(),
                }
            }
            ("GET", ["calendars", cid, "events"]) => self.events_list(cid, &q),
            ("POST", ["calendars", cid, "events"]) => self.events_insert(cid, req),
            ("POST", ["calendars", cid, "events", "watch"]) => self.events_watch(cid, req),
            ("GET", ["calendars", cid, "events", eid]) => self.events_get(cid, eid),
            ("PATCH", ["calendars", cid, "events", eid]) => self.events_update(cid, eid, req, true),
            ("PUT", ["calendars", cid, "events", eid]) => self.events_update(cid, eid, req, false),
            ("DELETE", ["calendars", cid, "events", eid]) => self.events_delete(cid, eid, req),
            ("POST", ["channels", "stop"]) => self.channels_stop(req),
            ("POST", ["freeBusy"]) => self.free_busy(req),
            _ => err_not_found(),
        }
    }

    // ---- pagination ----------------------------------------------------------------------

    /// Serves one page of `items` (or continues `page_token`), building the envelope with `head`.
    fn page(
        &self,
        st: &mut State,
        fingerprint: String,
        page_token: Option<&str>,
        max_results: usize,
        first: impl FnOnce(&mut State) -> (Vec<Value>, Option<String>),
        mut head: Map<String, Value>,
    ) -> Resp {
        let (items, offset, empty_now, sync_token) = match page_token {
            Some(t) => match st.page_tokens.get(t) {
                Some(pt) if pt.fingerprint == fingerprint => (
                    pt.items.clone(),
                    pt.offset,
                    pt.empty_next,
                    pt.sync_token.clone(),
                ),
                _ => {
                    return err_invalid(
                        "Invalid page token (parameters must be identical to the first request).",
                        Some("pageToken"),
                    );
                }
            },
            None => {
                let (items, sync) = first(st);
                (Arc::new(items), 0, false, sync)
            }
        };
        let size = st
            .page_size_cap
            .map_or(max_results, |cap| cap.min(max_results))
            .max(1);
        let (slice, next_offset) = if empty_now {
            (Vec::new(), offset)
        } else {
            let end = (offset + size).min(items.len());
            (items[offset..end].to_vec(), end)
        };
        let more = next_offset < items.len();
        head.insert("items".into(), Value::Array(slice));
        if more {
            let token = random_token("EhIKmockpage");
            st.page_tokens.insert(
                token.clone(),
                PageToken {
                    fingerprint,
                    items,
                    offset: next_offset,
                    empty_next: !empty_now && st.empty_pages,
                    sync_token,
                },
            );
            st.page_token_order.push_back(token.clone());
            while st.page_token_order.len() > MAX_PAGE_TOKENS {
                if let Some(old) = st.page_token_order.pop_front() {
                    st.page_tokens.remove(&old);
                }
            }
            head.insert("nextPageToken".into(), json!(token));
        } else if let Some(s) = sync_token {
            head.insert("nextSyncToken".into(), json!(s));
        }
        json_response(200, &Value::Object(head))
    }

    fn fingerprint(scope: &str, q: &[(String, String)]) -> String {
        let mut pairs: Vec<String> = q
            .iter()
            .filter(|(k, _)| k != "pageToken")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.sort();
        format!("{scope}\n{}", pairs.join("&"))
    }

    // ---- calendarList.list ---------------------------------------------------------------

    fn calendar_list(&self, q: &[(String, String)]) -> Resp {
        let max_results = match parse_max_results(q, 100, 250) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let (show_deleted, show_hidden) =
            match (parse_bool(q, "showDeleted"), parse_bool(q, "showHidden")) {
                (Ok(a), Ok(b)) => (a.unwrap_or(false), b.unwrap_or(false)),
                (Err(r), _) | (_, Err(r)) => return r,
            };
        let min_role = query_get(q, "minAccessRole");
        if let Some(r) = min_role
            && !matches!(
                r,
                "freeBusyReader" | "reader" | "writerWithoutPrivateAccess" | "writer" | "owner"
            )
        {
            return err_invalid("Invalid minAccessRole", Some("minAccessRole"));
        }
        let sync = query_get(q, "syncToken");
        if sync.is_some() && min_role.is_some() {
            return err_sync_token_restrictions();
        }
        let mut st = self.st();
        let since = match sync {
            None => None,
            Some(t) => match st.check_sync_token(t, &TokenScope::CalendarList) {
                Some(seq) => Some(seq),
                None => return err_full_sync_required(),
            },
        };
        let head = json!({"kind": "calendar#calendarList", "etag": format!("\"p33fmock{:08}\"", st.list_seq)});
        let Value::Object(head) = head else {
            unreachable!()
        };
        let fingerprint = Self::fingerprint("calendarList", q);
        self.page(
            &mut st,
            fingerprint,
            query_get(q, "pageToken"),
            max_results,
            |st| {
                let items = st
                    .calendars
                    .iter()
                    .filter(|c| match since {
                        Some(seq) => c.list_seq > seq,
                        None => {
                            (show_deleted || !c.deleted)
                                && (show_hidden || !c.hidden)
                                && min_role
                                    .is_none_or(|r| access_rank(&c.access_role) >= access_rank(r))
                        }
                    })
                    .map(calendar_entry)
                    .collect();
                let (seq, epoch) = (st.list_seq, st.list_epoch);
                let token = st.mint_sync_token(TokenScope::CalendarList, seq, epoch);
                (items, Some(token))
            },
            head,
        )
    }

    // ---- events.list ---------------------------------------------------------------------

    fn events_list(&self, cid: &str, q: &[(String, String)]) -> Resp {
        let p = match parse_list_params(q) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let mut st = self.st();
        let Some(ci) = st.cal_index(cid) else {
            return err_not_found();
        };
        let cal_id = st.calendars[ci].id.clone();
        let scope = TokenScope::Events(cal_id.clone());
        let since = match &p.sync_token {
            None => None,
            Some(t) => match st.check_sync_token(t, &scope) {
                Some(seq) => Some(seq),
                None => return err_full_sync_required(),
            },
        };
        let cal = &st.calendars[ci];
        let latest_updated = cal
            .events
            .values()
            .filter_map(|s| str_field(&s.value, "updated"))
            .max()
            .map(str::to_string)
            .unwrap_or_else(now_rfc3339);
        let head = json!({
            "kind": "calendar#events",
            "etag": format!("\"p32cmock{:08}\"", cal.seq),
            "summary": cal.summary,
            "description": "",
            "updated": latest_updated,
            "timeZone": p.tz.map_or_else(|| cal.time_zone.clone(), |t| t.name().to_string()),
            "accessRole": cal.access_role,
            "defaultReminders": [],
        });
        let Value::Object(head) = head else {
            unreachable!()
        };
        let no_sync_token = p.order_by.is_some()
            || p.q.is_some()
            || p.ical_uid.is_some()
            || !p.private_props.is_empty()
            || !p.shared_props.is_empty();
        let fingerprint = Self::fingerprint(&format!("events\n{cal_id}"), q);
        self.page(
            &mut st,
            fingerprint,
            query_get(q, "pageToken"),
            p.max_results,
            |st| {
                let cal = &st.calendars[ci];
                let mut items = match since {
                    Some(seq) => incremental_listing(cal, &p, seq),
                    None => full_listing(cal, &p),
                };
                items.retain(|it| {
                    let id = str_field(it, "id").unwrap_or_default().to_string();
                    !st.held.contains(&(cal.id.clone(), id))
                });
                if let Some(tz) = p.tz {
                    for it in items.iter_mut() {
                        convert_times(it, tz);
                    }
                }
                let (seq, epoch) = (cal.seq, cal.epoch);
                let token = (!no_sync_token).then(|| st.mint_sync_token(scope, seq, epoch));
                (items, token)
            },
            head,
        )
    }

    // ---- events.get / insert / patch / update / delete -----------------------------------

    fn events_get(&self, cid: &str, eid: &str) -> Resp {
        let st = self.st();
        let Some(ci) = st.cal_index(cid) else {
            return err_not_found();
        };
        match st.lookup_event(ci, eid) {
            Some((v, _)) => with_etag(json_response(200, &v), &v),
            None => err_not_found(),
        }
    }

    /// Validates a full event body for insert/update.
    fn validate_event(v: &Value) -> Result<(), Resp> {
        if !v.is_object() {
            return Err(err_bad_request("Bad Request: body must be a JSON object"));
        }
        let start = v.get("start");
        let end = v.get("end");
        if start.is_none() {
            return Err(err_required("Missing start time."));
        }
        if end.is_none() {
            return Err(err_required("Missing end time."));
        }
        let Some((s, s_tz)) = parse_edt(start) else {
            return Err(err_invalid("Invalid start time.", None));
        };
        let Some((e, _)) = parse_edt(end) else {
            return Err(err_invalid("Invalid end time.", None));
        };
        if matches!(
            (s, e),
            (When::Date(_), When::At(_)) | (When::At(_), When::Date(_))
        ) {
            return Err(err_invalid(
                "Start and end times must either both be date or both be dateTime.",
                None,
            ));
        }
        if e.instant(Tz::UTC) < s.instant(Tz::UTC) {
            return Err(api_error(
                400,
                "calendar",
                "timeRangeEmpty",
                "The specified time range is empty.",
                Some(("parameter", "end")),
            ));
        }
        if !recurrence_lines(v).is_empty() && matches!(s, When::At(_)) && s_tz.is_none() {
            return Err(err_required("Missing time zone definition for start time."));
        }
        if let Some(t) = str_field(v, "transparency")
            && t != "opaque"
            && t != "transparent"
        {
            return Err(err_invalid("Invalid transparency value.", None));
        }
        if let Some(s) = str_field(v, "status")
            && !matches!(s, "confirmed" | "tentative" | "cancelled")
        {
            return Err(err_invalid("Invalid status value.", None));
        }
        Ok(())
    }

    fn body_json(req: &Req) -> Result<Value, Resp> {
        serde_json::from_slice(req.body())
            .map_err(|_| err_bad_request("Parse Error: the request body is not valid JSON"))
    }

    fn events_insert(&self, cid: &str, req: &Req) -> Resp {
        let mut body = match Self::body_json(req) {
            Ok(v) => v,
            Err(r) => return r,
        };
        if let Err(r) = Self::validate_event(&body) {
            return r;
        }
        let mut st = self.st();
        let Some(ci) = st.cal_index(cid) else {
            return err_not_found();
        };
        if !st.calendars[ci].writable() {
            return err_forbidden_access();
        }
        if let Some(id) = body.get("id") {
            let Some(id) = id.as_str().filter(|id| valid_client_id(id)) else {
                return err_invalid("Invalid resource id value.", None);
            };
            if st.calendars[ci].events.contains_key(id) {
                return err_duplicate();
            }
        }
        if let Some(o) = body.as_object_mut() {
            for k in ["etag", "created", "updated", "kind", "htmlLink", "sequence"] {
                o.remove(k);
            }
        }
        let id = st.store_event(ci, body, false);
        if st.hold_inserts {
            let cal_id = st.calendars[ci].id.clone();
            st.held.insert((cal_id, id.clone()));
        }
        let v = st.calendars[ci].events[&id].value.clone();
        with_etag(json_response(200, &v), &v)
    }

    fn events_update(&self, cid: &str, eid: &str, req: &Req, patch: bool) -> Resp {
        let body = match Self::body_json(req) {
            Ok(v) if v.is_object() => v,
            Ok(_) => return err_bad_request("Bad Request: body must be a JSON object"),
            Err(r) => return r,
        };
        let mut st = self.st();
        let Some(ci) = st.cal_index(cid) else {
            return err_not_found();
        };
        if !st.calendars[ci].writable() {
            return err_forbidden_access();
        }
        let Some((current, _)) = st.lookup_event(ci, eid) else {
            return err_not_found();
        };
        if is_cancelled(&current) && !is_instance(&current) {
            return err_deleted();
        }
        if let Some(r) = check_if_match(req, &current) {
            return r;
        }
        if let Some(id) = str_field(&body, "id")
            && id != eid
        {
            return err_invalid("The event id in the body does not match the URL.", None);
        }
        let mut next = if patch {
            let mut v = current.clone();
            merge_patch(&mut v, &body);
            v
        } else {
            let mut v = body;
            // Server-managed and series-linking fields survive a full update.
            for k in [
                "created",
                "iCalUID",
                "recurringEventId",
                "originalStartTime",
            ] {
                if let Some(x) = current.get(k) {
                    v[k] = x.clone();
                }
            }
            v
        };
        if let Err(r) = Self::validate_event(&next) {
            return r;
        }
        if let Some(o) = next.as_object_mut() {
            o.insert("id".into(), json!(eid));
            o.remove("sequence");
            o.remove("etag");
            o.remove("updated");
            if let Some(seq) = current.get("sequence") {
                o.insert("sequence".into(), seq.clone());
            }
        }
        let significant = ["start", "end", "recurrence", "status"]
            .iter()
            .any(|k| current.get(*k) != next.get(*k));
        st.store_event(ci, next, significant);
        let v = st.calendars[ci].events[eid].value.clone();
        with_etag(json_response(200, &v), &v)
    }

    fn events_delete(&self, cid: &str, eid: &str, req: &Req) -> Resp {
        let mut st = self.st();
        let Some(ci) = st.cal_index(cid) else {
            return err_not_found();
        };
        if !st.calendars[ci].writable() {
            return err_forbidden_access();
        }
        let Some((current, stored)) = st.lookup_event(ci, eid) else {
            return err_not_found();
        };
        if is_cancelled(&current) {
            return err_deleted();
        }
        if let Some(r) = check_if_match(req, &current) {
            return r;
        }
        if !stored {
            st.store_event(ci, current, false);
        }
        st.cancel(ci, eid);
        empty_response(204)
    }

    // ---- watch ---------------------------------------------------------------------------

    fn events_watch(&self, cid: &str, req: &Req) -> Resp {
        let body = match Self::body_json(req) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let Some(id) = str_field(&body, "id").filter(|s| !s.is_empty() && s.len() <= 64) else {
            return err_required("Required channel id (≤ 64 characters).");
        };
        if str_field(&body, "type") != Some("web_hook") {
            return err_invalid("Invalid channel type (must be web_hook).", None);
        }
        let Some(address) = str_field(&body, "address")
            .filter(|a| a.starts_with("https://") || a.starts_with("http://"))
        else {
            return err_required("Required channel address.");
        };
        let mut st = self.st();
        let Some(ci) = st.cal_index(cid) else {
            return err_not_found();
        };
        if st.channels.iter().any(|c| c.id == id && !c.stopped) {
            return api_error(
                400,
                "global",
                "channelIdNotUnique",
                "Channel id not unique",
                None,
            );
        }
        let default_exp = Utc::now().timestamp_millis() + 7 * 24 * 3600 * 1000;
        let expiration_ms = body
            .get("expiration")
            .and_then(|e| {
                e.as_i64()
                    .or_else(|| e.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(default_exp);
        let resource_id = random_token("mockres");
        let resource_uri = format!(
            "{}/calendar/v3/calendars/{}/events?alt=json",
            self.origin,
            percent_encode(&st.calendars[ci].id)
        );
        let mut channel = json!({
            "kind": "api#channel",
            "id": id,
            "resourceId": resource_id,
            "resourceUri": resource_uri,
            "expiration": expiration_ms.to_string(),
        });
        if let Some(t) = body.get("token") {
            channel["token"] = t.clone();
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(String, u64)>();
        let _ = tx.send(("sync".to_string(), 1));
        tokio::spawn(deliver(
            rx,
            address.to_string(),
            channel.clone(),
            expiration_ms,
            self.notifications.clone(),
        ));
        let calendar = st.calendars[ci].id.clone();
        st.channels.push(Channel {
            id: id.to_string(),
            resource_id,
            calendar,
            expiration_ms,
            stopped: false,
            message_number: 1,
            tx,
            value: channel.clone(),
        });
        json_response(200, &channel)
    }

    fn channels_stop(&self, req: &Req) -> Resp {
        let body = match Self::body_json(req) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let (Some(id), Some(rid)) = (str_field(&body, "id"), str_field(&body, "resourceId")) else {
            return err_required("Required: id and resourceId.");
        };
        let mut st = self.st();
        let Some(pos) = st
            .channels
            .iter()
            .position(|c| c.id == id && c.resource_id == rid && !c.stopped)
        else {
            return err_not_found();
        };
        let ch = st.channels.remove(pos);
        drop(ch); // closes the delivery queue
        empty_response(204)
    }

    // ---- freeBusy ------------------------------------------------------------------------

    fn free_busy(&self, req: &Req) -> Resp {
        let body = match Self::body_json(req) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let (Some(min), Some(max)) = (
            str_field(&body, "timeMin").and_then(parse_rfc3339),
            str_field(&body, "timeMax").and_then(parse_rfc3339),
        ) else {
            return err_required("Missing or invalid timeMin/timeMax.");
        };
        if max <= min {
            return err_time_range_empty("timeMax");
        }
        let out_tz = match str_field(&body, "timeZone") {
            None => Tz::UTC,
            Some(z) => match parse_tz(z) {
                Some(t) => t,
                None => return err_invalid("Invalid time zone", Some("timeZone")),
            },
        };
        let fmt = |t: DateTime<Utc>| {
            if out_tz == Tz::UTC {
                t.to_rfc3339_opts(SecondsFormat::Secs, true)
            } else {
                fmt_in_tz(t, out_tz)
            }
        };
        let items = body
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if items.len() > 50 {
            return api_error(
                400,
                "calendar",
                "tooManyCalendarsRequested",
                "The number of calendars requested is too large.",
                None,
            );
        }
        let st = self.st();
        let mut calendars = Map::new();
        for item in items {
            let Some(id) = str_field(&item, "id") else {
                continue;
            };
            let Some(ci) = st.cal_index(id) else {
                calendars.insert(
                    id.to_string(),
                    json!({"errors": [{"domain": "global", "reason": "notFound"}], "busy": []}),
                );
                continue;
            };
            let cal = &st.calendars[ci];
            let tz = cal.tz();
            let p = ListParams {
                single: true,
                time_min: Some(min),
                time_max: Some(max),
                ..ListParams::default()
            };
            let mut busy: Vec<(DateTime<Utc>, DateTime<Utc>)> = full_listing(cal, &p)
                .iter()
                .filter(|v| !is_cancelled(v))
                .filter(|v| str_field(v, "transparency") != Some("transparent"))
                .filter(|v| {
                    !v.get("attendees")
                        .and_then(Value::as_array)
                        .is_some_and(|a| {
                            a.iter().any(|x| {
                                x.get("self").and_then(Value::as_bool) == Some(true)
                                    && str_field(x, "responseStatus") == Some("declined")
                            })
                        })
                })
                .filter_map(event_window)
                .map(|(s, e)| (s.instant(tz).max(min), e.instant(tz).min(max)))
                .filter(|(s, e)| s < e)
                .collect();
            busy.sort();
            let busy: Vec<Value> = busy
                .into_iter()
                .map(|(s, e)| json!({"start": fmt(s), "end": fmt(e)}))
                .collect();
            calendars.insert(id.to_string(), json!({"busy": busy}));
        }
        json_response(
            200,
            &json!({
                "kind": "calendar#freeBusy",
                "timeMin": min.to_rfc3339_opts(SecondsFormat::Millis, true),
                "timeMax": max.to_rfc3339_opts(SecondsFormat::Millis, true),
                "calendars": calendars,
            }),
        )
    }
}

fn with_etag(resp: Resp, v: &Value) -> Resp {
    match str_field(v, "etag") {
        Some(e) => with_header(resp, "etag", e),
        None => resp,
    }
}

/// `If-Match` against the current etag (`*` matches anything) → 412 on mismatch.
fn check_if_match(req: &Req, current: &Value) -> Option<Resp> {
    let wanted = header_str(req.headers(), "if-match")?;
    let etag = str_field(current, "etag").unwrap_or_default();
    let ok = wanted
        .split(',')
        .map(str::trim)
        .any(|w| w == "*" || w == etag || w.trim_start_matches("W/") == etag);
    (!ok).then(err_condition_not_met)
}

/// Delivers a channel's notifications in order until the queue closes or the channel expires.
async fn deliver(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(String, u64)>,
    address: String,
    channel: Value,
    expiration_ms: i64,
    log: Arc<Mutex<Vec<Notification>>>,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    else {
        return;
    };
    let expiration_http = DateTime::<Utc>::from_timestamp_millis(expiration_ms)
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_default();
    while let Some((state, number)) = rx.recv().await {
        if Utc::now().timestamp_millis() >= expiration_ms {
            break;
        }
        let mut req = client
            .post(&address)
            .header(
                "X-Goog-Channel-ID",
                str_field(&channel, "id").unwrap_or_default(),
            )
            .header("X-Goog-Channel-Expiration", expiration_http.as_str())
            .header(
                "X-Goog-Resource-ID",
                str_field(&channel, "resourceId").unwrap_or_default(),
            )
            .header(
                "X-Goog-Resource-URI",
                str_field(&channel, "resourceUri").unwrap_or_default(),
            )
            .header("X-Goog-Resource-State", state.as_str())
            .header("X-Goog-Message-Number", number.to_string())
            .header("Content-Length", "0");
        if let Some(t) = str_field(&channel, "token") {
            req = req.header("X-Goog-Channel-Token", t);
        }
        let status = req.send().await.ok().map(|r| r.status().as_u16());
        log.lock().unwrap().push(Notification {
            channel_id: str_field(&channel, "id").unwrap_or_default().to_string(),
            resource_state: state,
            message_number: number,
            status,
        });
    }
}
