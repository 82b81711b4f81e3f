//! Google Calendar API v3 import (REFERENCE.md §2).
//!
//! [`GoogleApi::fetch`] reads `events.list` with `singleEvents=false`: series
//! masters, their exceptions and cancelled instances arrive as separate items and
//! recurrence is expanded by our own engine. A full listing pages with `pageToken`
//! until a page carries `nextSyncToken` (empty pages are not the end); later calls
//! send that `syncToken` and get only the changes. Items are grouped into series by
//! master id, and [`render`] turns one series into one iCalendar object whose busy
//! semantics follow §2.3.

pub mod export;
mod provider;

pub use provider::{EXPORT_CONCURRENCY, Google};

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    Cursor, FetchMode, Fetched, ItemChange, ProviderError, RemoteCalendar, RenderContext, Rendered,
    TokenSource, path_segment, status_error,
};
use crate::ical::{ContentWriter, format_date, format_utc, zoned_value, zones};

/// The production API base.
pub const API_BASE: &str = "https://www.googleapis.com/calendar/v3";
/// Google's production endpoints: authorize, token, API.
pub const DEFAULT_ENDPOINTS: [&str; 3] = [
    "https://accounts.google.com/o/oauth2/v2/auth",
    "https://oauth2.googleapis.com/token",
    API_BASE,
];
pub const PRODID: &str = "-//calgate//google import//EN";
/// Our export marker in `extendedProperties.private` (REFERENCE.md §2.4).
pub const BOOKING_MARKER: &str = "gatewayBookingId";
/// `maxResults` for events.list (Google's maximum; the server may send less).
const EVENTS_PAGE_SIZE: &str = "2500";
const CALENDARS_PAGE_SIZE: &str = "250";
/// A listing longer than this many pages is taken as a server loop.
const MAX_PAGES: usize = 10_000;
/// VTIMEZONE coverage after the first year of a series without UNTIL.
const OPEN_SERIES_YEARS: i32 = 5;
/// No VTIMEZONE covers more years than this.
const MAX_ZONE_YEARS: i32 = 50;

/// A Google Calendar API client for one base URL.
#[derive(Debug, Clone)]
pub struct GoogleApi {
    base_url: String,
    http: reqwest::Client,
}

/// One page of a list call.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page<T> {
    #[serde(default = "Vec::new")]
    items: Vec<T>,
    next_page_token: Option<String>,
    next_sync_token: Option<String>,
}

/// The calendarList entry fields we use.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CalendarEntry {
    id: String,
    summary: Option<String>,
    summary_override: Option<String>,
    time_zone: Option<String>,
    access_role: Option<String>,
    #[serde(default)]
    primary: bool,
    #[serde(default)]
    deleted: bool,
}

impl CalendarEntry {
    fn into_remote(self) -> RemoteCalendar {
        let writable = matches!(self.access_role.as_deref(), Some("writer" | "owner"));
        RemoteCalendar {
            name: self
                .summary_override
                .or(self.summary)
                .unwrap_or_else(|| self.id.clone()),
            id: self.id,
            time_zone: self.time_zone,
            primary: self.primary,
            writable,
        }
    }
}

impl GoogleApi {
    /// `base_url` is [`API_BASE`] in production (a trailing `/` is ignored).
    pub fn new(base_url: impl Into<String>, http: reqwest::Client) -> Self {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        GoogleApi { base_url, http }
    }

    /// The account's calendars (hidden and deleted entries left out).
    pub async fn list_calendars(
        &self,
        tokens: &dyn TokenSource,
    ) -> Result<Vec<RemoteCalendar>, ProviderError> {
        let mut out = Vec::new();
        let mut page_token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("maxResults", CALENDARS_PAGE_SIZE)];
            if let Some(p) = &page_token {
                query.push(("pageToken", p));
            }
            let url = self.url("/users/me/calendarList", &query)?;
            let page: Page<CalendarEntry> = self.get_json(tokens, url).await?;
            out.extend(
                page.items
                    .into_iter()
                    .filter(|c| !c.deleted)
                    .map(CalendarEntry::into_remote),
            );
            match page.next_page_token {
                Some(p) => page_token = Some(p),
                None => return Ok(out),
            }
        }
        Err(too_many_pages())
    }

    /// The calendar's events: everything (`Full`, or no cursor token yet) or the
    /// changes since `cursor` (`Delta`; `Unchanged` when there are none). A 410 on an
    /// incremental call is [`ProviderError::CursorExpired`]: fetch again with
    /// [`FetchMode::Full`].
    pub async fn fetch(
        &self,
        tokens: &dyn TokenSource,
        calendar_id: &str,
        cursor: &Cursor,
        mode: FetchMode,
    ) -> Result<Fetched, ProviderError> {
        let sync_token = match mode {
            FetchMode::Incremental => cursor.token.as_deref().filter(|t| !t.is_empty()),
            FetchMode::Full => None,
        };
        let path = format!("/calendars/{}/events", path_segment(calendar_id));
        let mut changes = Vec::new();
        let mut page_token: Option<String> = None;
        let mut pages = 0;
        let next_sync = loop {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(too_many_pages());
            }
            // Every page resends the same parameters (Google requires it).
            let mut query = vec![("singleEvents", "false"), ("maxResults", EVENTS_PAGE_SIZE)];
            match sync_token {
                // Deletions always come with a sync token; showDeleted=false is refused.
                Some(t) => query.push(("syncToken", t)),
                None => query.push(("showDeleted", "false")),
            }
            if let Some(p) = &page_token {
                query.push(("pageToken", p));
            }
            let url = self.url(&path, &query)?;
            let page: Page<Value> = match self.get_json(tokens, url).await {
                Ok(page) => page,
                Err(ProviderError::CursorExpired) if sync_token.is_none() => {
                    return Err(ProviderError::retryable(
                        "Google answered 410 Gone to a full listing",
                    ));
                }
                Err(e) => return Err(e),
            };
            let incremental = sync_token.is_some();
            changes.extend(
                page.items
                    .into_iter()
                    .filter_map(|item| change_of(item, incremental)),
            );
            match (page.next_page_token, page.next_sync_token) {
                (Some(p), _) => page_token = Some(p),
                (None, sync) => break sync,
            }
        };
        if next_sync.is_none() {
            tracing::warn!(
                calendar = calendar_id,
                "Google listing ended without nextSyncToken; the next sync will be full"
            );
        }
        let cursor = Cursor {
            token: next_sync,
            ..Cursor::default()
        };
        Ok(match sync_token {
            None => Fetched::Full {
                items: changes,
                cursor,
            },
            Some(_) if changes.is_empty() => Fetched::Unchanged { cursor },
            Some(_) => Fetched::Delta { changes, cursor },
        })
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<reqwest::Url, ProviderError> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base_url)).map_err(|e| {
            ProviderError::Permanent(format!(
                "invalid Google API base URL {}: {e}",
                self.base_url
            ))
        })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// GET with the bearer token; one refresh and replay on 401.
    async fn get_json<T: DeserializeOwned>(
        &self,
        tokens: &dyn TokenSource,
        url: reqwest::Url,
    ) -> Result<T, ProviderError> {
        let mut token = tokens.access_token(false).await?;
        let mut refreshed = false;
        loop {
            let response = self
                .http
                .get(url.clone())
                .bearer_auth(&token)
                .header(http::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(transport_error)?;
            let status = response.status();
            if status == http::StatusCode::UNAUTHORIZED {
                if refreshed {
                    return Err(ProviderError::Reauth(
                        "Google rejected a freshly refreshed access token (HTTP 401)".to_owned(),
                    ));
                }
                token = tokens.access_token(true).await?;
                refreshed = true;
                continue;
            }
            if !status.is_success() {
                let retry_after = response.headers().get(http::header::RETRY_AFTER).cloned();
                let body = response.text().await.unwrap_or_default();
                return Err(status_error(status, retry_after.as_ref(), &body));
            }
            let body = response.bytes().await.map_err(transport_error)?;
            return serde_json::from_slice(&body).map_err(|e| {
                ProviderError::retryable(format!("unreadable Google API response: {e}"))
            });
        }
    }
}

fn too_many_pages() -> ProviderError {
    ProviderError::retryable(format!(
        "Google kept paginating past {MAX_PAGES} pages; giving up this round"
    ))
}

fn transport_error(e: reqwest::Error) -> ProviderError {
    super::api_transport_error("Google Calendar API", e)
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn is_cancelled(v: &Value) -> bool {
    str_at(v, "status") == Some("cancelled")
}

/// One listed event as an item: instances (exceptions and cancelled occurrences)
/// join their master's series; a cancelled non-instance is a deleted event, which
/// deletes its item on an incremental call and is skipped in a full listing.
fn change_of(event: Value, incremental: bool) -> Option<ItemChange> {
    let id = str_at(&event, "id")?.to_owned();
    if let Some(master) = str_at(&event, "recurringEventId") {
        return Some(ItemChange {
            series: master.to_owned(),
            item: id,
            body: Some(event),
        });
    }
    if is_cancelled(&event) {
        return incremental.then(|| ItemChange {
            series: id.clone(),
            item: id,
            body: None,
        });
    }
    Some(ItemChange {
        series: id.clone(),
        item: id,
        body: Some(event),
    })
}

// ---------------------------------------------------------------------------------------
// Rendering

/// An `EventDateTime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    Date(NaiveDate),
    /// An instant and the zone to write it in (`None`: UTC).
    At(DateTime<Utc>, Option<Tz>),
}

impl When {
    /// `{date}` or `{dateTime[, timeZone]}`; `zone_fallback` for a `dateTime` without a
    /// usable `timeZone`.
    fn of(v: Option<&Value>, zone_fallback: Option<Tz>) -> Option<When> {
        let v = v?;
        if let Some(date) = str_at(v, "date") {
            return NaiveDate::parse_from_str(date, "%Y-%m-%d")
                .ok()
                .map(When::Date);
        }
        let at = DateTime::parse_from_rfc3339(str_at(v, "dateTime")?).ok()?;
        let zone = str_at(v, "timeZone")
            .and_then(zones::iana)
            .or(zone_fallback);
        Some(When::At(at.with_timezone(&Utc), zone))
    }

    fn year(self) -> i32 {
        match self {
            When::Date(d) => d.year(),
            When::At(t, zone) => zone.map_or(t.year(), |z| t.with_timezone(&z).year()),
        }
    }

    /// Sort key: milliseconds since the epoch (dates at UTC midnight).
    fn key(self) -> i64 {
        match self {
            When::Date(d) => d
                .and_hms_opt(0, 0, 0)
                .map_or(0, |n| n.and_utc().timestamp_millis()),
            When::At(t, _) => t.timestamp_millis(),
        }
    }

    /// `self` moved by the length of `start..end` (same kinds only).
    fn plus_length(self, start: When, end: When) -> Option<When> {
        match (self, start, end) {
            (When::Date(d), When::Date(s), When::Date(e)) => d
                .checked_add_signed(e.signed_duration_since(s))
                .map(When::Date),
            (When::At(t, z), When::At(s, _), When::At(e, _)) => {
                t.checked_add_signed(e - s).map(|t| When::At(t, z))
            }
            _ => None,
        }
    }
}

/// What writing the VEVENTs needs to remember for the VTIMEZONEs.
#[derive(Default)]
struct ZonesUsed {
    zones: Vec<Tz>,
    first_year: Option<i32>,
    last_year: Option<i32>,
}

impl ZonesUsed {
    fn add_zone(&mut self, tz: Tz) {
        if !self.zones.contains(&tz) {
            self.zones.push(tz);
        }
    }

    fn add_year(&mut self, year: i32) {
        self.first_year = Some(self.first_year.map_or(year, |y| y.min(year)));
        self.last_year = Some(self.last_year.map_or(year, |y| y.max(year)));
    }
}

/// Writes a DATE, zoned DATE-TIME or UTC DATE-TIME property.
fn write_when(w: &mut ContentWriter, name: &str, when: When, used: &mut ZonesUsed) {
    used.add_year(when.year());
    match when {
        When::Date(d) => w.raw(name, &[("VALUE", "DATE")], &format_date(d)),
        When::At(t, Some(tz)) => match zoned_value(t, tz) {
            (Some(tzid), local) => {
                used.add_zone(tz);
                w.raw(name, &[("TZID", tzid)], &local);
            }
            (None, utc) => w.raw(name, &[], &utc),
        },
        When::At(t, None) => w.raw(name, &[], &format_utc(t)),
    }
}

/// Property parameters: upper-case names, unquoted values.
type Params = Vec<(String, String)>;

/// `NAME;P=V;P2="a:b":VALUE` → name (upper-case), params (unquoted), value.
fn split_content_line(line: &str) -> Option<(String, Params, &str)> {
    let mut in_quotes = false;
    let mut colon = None;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ':' if !in_quotes => {
                colon = Some(i);
                break;
            }
            _ => {}
        }
    }
    let colon = colon?;
    let (head, value) = (&line[..colon], &line[colon + 1..]);
    let mut parts = Vec::new();
    let mut current = String::new();
    in_quotes = false;
    for c in head.chars() {
        match c {
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    let mut parts = parts.into_iter();
    let name = parts.next()?.trim().to_ascii_uppercase();
    if name.is_empty() {
        return None;
    }
    let params = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_ascii_uppercase(), v.to_owned()))
        })
        .collect();
    Some((name, params, value.trim()))
}

/// A `recurrence` line written as given (TZIDs normalised to IANA names).
fn write_recurrence_line(w: &mut ContentWriter, line: &str, used: &mut ZonesUsed) -> bool {
    let Some((name, mut params, value)) = split_content_line(line.trim()) else {
        return false;
    };
    if !matches!(name.as_str(), "RRULE" | "EXRULE" | "RDATE" | "EXDATE") {
        return false;
    }
    for (key, val) in params.iter_mut() {
        if key == "TZID"
            && let Some(tz) = zones::iana(val)
        {
            used.add_zone(tz);
            *val = tz.name().to_owned();
        }
    }
    let refs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    w.raw(&name, &refs, value);
    true
}

/// The year of a rule's UNTIL, if it has one.
fn until_year(rule: &str) -> Option<i32> {
    let (_, rest) = rule.split_once("UNTIL=")?;
    rest.get(..4)?.parse().ok()
}

fn self_declined(event: &Value) -> bool {
    event
        .get("attendees")
        .and_then(Value::as_array)
        .is_some_and(|attendees| {
            attendees.iter().any(|a| {
                a.get("self").and_then(Value::as_bool) == Some(true)
                    && str_at(a, "responseStatus") == Some("declined")
            })
        })
}

pub(crate) fn booking_marker(event: &Value) -> Option<&str> {
    event
        .get("extendedProperties")?
        .get("private")?
        .get(BOOKING_MARKER)?
        .as_str()
}

/// REFERENCE.md §2.3: what does not block time.
fn is_transparent(event: &Value) -> bool {
    str_at(event, "transparency") == Some("transparent")
        || self_declined(event)
        || matches!(
            str_at(event, "eventType"),
            Some("workingLocation" | "birthday")
        )
        || booking_marker(event).is_some()
}

fn dtstamp(event: &Value) -> Option<String> {
    let at = str_at(event, "updated").or_else(|| str_at(event, "created"))?;
    DateTime::parse_from_rfc3339(at)
        .ok()
        .map(|t| format_utc(t.with_timezone(&Utc)))
}

/// How a VEVENT relates to its series.
enum Role {
    Master,
    /// A moved or changed occurrence: RECURRENCE-ID = its original start.
    Exception(When),
    /// A cancelled occurrence.
    Cancelled(When),
}

struct EventWriter<'a> {
    w: ContentWriter,
    used: ZonesUsed,
    uid: String,
    /// DTSTAMP for items that carry no `updated` (cancelled stubs).
    default_stamp: String,
    ctx: &'a RenderContext<'a>,
}

impl EventWriter<'_> {
    fn event(&mut self, event: &Value, role: &Role, start: When, end: Option<When>) {
        let w = &mut self.w;
        w.begin("VEVENT");
        w.text("UID", &[], &self.uid);
        let stamp = dtstamp(event).unwrap_or_else(|| self.default_stamp.clone());
        w.raw("DTSTAMP", &[], &stamp);
        match role {
            Role::Master => {}
            Role::Exception(original) | Role::Cancelled(original) => {
                write_when(w, "RECURRENCE-ID", *original, &mut self.used);
            }
        }
        write_when(w, "DTSTART", start, &mut self.used);
        if let Some(end) = end {
            write_when(w, "DTEND", end, &mut self.used);
        }
        if matches!(role, Role::Master)
            && let Some(lines) = event.get("recurrence").and_then(Value::as_array)
        {
            for line in lines.iter().filter_map(Value::as_str) {
                if !write_recurrence_line(w, line, &mut self.used) {
                    tracing::debug!(
                        source = self.ctx.source,
                        line,
                        "skipped a recurrence line we do not understand"
                    );
                }
            }
        }
        for (key, name) in [
            ("summary", "SUMMARY"),
            ("location", "LOCATION"),
            ("description", "DESCRIPTION"),
        ] {
            if let Some(text) = str_at(event, key).filter(|t| !t.is_empty()) {
                w.text(name, &[], text);
            }
        }
        let status = match (role, str_at(event, "status")) {
            (Role::Cancelled(..), _) | (_, Some("cancelled")) => "CANCELLED",
            (_, Some("tentative")) => "TENTATIVE",
            _ => "CONFIRMED",
        };
        w.raw("STATUS", &[], status);
        let transparent = is_transparent(event);
        w.raw(
            "TRANSP",
            &[],
            if transparent { "TRANSPARENT" } else { "OPAQUE" },
        );
        if !transparent
            && !matches!(role, Role::Cancelled(..))
            && str_at(event, "eventType") == Some("outOfOffice")
        {
            w.raw("X-MICROSOFT-CDO-BUSYSTATUS", &[], "OOF");
        }
        if let Some(seq) = event.get("sequence").and_then(Value::as_u64) {
            w.raw("SEQUENCE", &[], &seq.to_string());
        }
        if let Some(id) = str_at(event, "id") {
            w.text("X-CALGATE-REMOTE-ID", &[], id);
        }
        if let Some(booking) = booking_marker(event) {
            w.text("X-CALGATE-BOOKING", &[], booking);
        }
        w.end("VEVENT");
    }

    fn finish(self) -> String {
        let mut head = ContentWriter::with_capacity(128);
        head.begin("VCALENDAR");
        head.text("PRODID", &[], PRODID);
        head.raw("VERSION", &[], "2.0");
        head.raw("CALSCALE", &[], "GREGORIAN");
        let mut out = head.finish();
        if let (Some(first), Some(last)) = (self.used.first_year, self.used.last_year) {
            let last = last.clamp(first, first + MAX_ZONE_YEARS);
            for tz in &self.used.zones {
                out.push_str(&vtimezone(*tz, first, last));
            }
        }
        let mut w = self.w;
        w.end("VCALENDAR");
        out.push_str(&w.finish());
        out
    }
}

/// VTIMEZONE text for `tz` over whole years, cached (computing transitions is the
/// expensive part of rendering and many series share a zone and years).
fn vtimezone(tz: Tz, first_year: i32, last_year: i32) -> Arc<str> {
    type Cache = HashMap<(Tz, i32, i32), Arc<str>>;
    static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| Mutex::new(HashMap::new()));
    let key = (tz, first_year, last_year);
    if let Some(text) = CACHE.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return text.clone();
    }
    let year_start = |y: i32| {
        NaiveDate::from_ymd_opt(y, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|n| n.and_utc())
            .unwrap_or_default()
    };
    let mut w = ContentWriter::with_capacity(1024);
    crate::ical::vtimezone::write_vtimezone(
        &mut w,
        tz,
        year_start(first_year),
        year_start(last_year.saturating_add(1)),
    );
    let text: Arc<str> = w.finish().into();
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= 512 {
        cache.clear();
    }
    cache.insert(key, text.clone());
    text
}

/// One series (a master and/or its exceptions and cancelled occurrences, or a single
/// event) as one iCalendar object; `None` when nothing in it is live.
///
/// Exceptions whose master is absent (an invitation to single occurrences) are
/// written as RECURRENCE-ID overrides without a master: valid CalDAV, several can
/// share the UID, and expansion places each as a standalone occurrence.
pub fn render(items: &[Value], ctx: &RenderContext) -> Rendered {
    let (instances, masters): (Vec<&Value>, Vec<&Value>) = items
        .iter()
        .partition(|v| str_at(v, "recurringEventId").is_some());
    let master = masters.first().copied();
    if master.is_some_and(is_cancelled) {
        return None;
    }
    let recurring = master.is_some_and(|m| {
        m.get("recurrence")
            .and_then(Value::as_array)
            .is_some_and(|r| !r.is_empty())
    });
    // Google requires timeZone on recurring masters; if it is missing, expanding in
    // UTC would drift by an hour across DST, so assume the tenant's zone.
    let master_fallback = recurring.then_some(ctx.default_zone);
    let master_times = master.and_then(|m| {
        let start = When::of(m.get("start"), master_fallback)?;
        Some((m, start, When::of(m.get("end"), master_fallback)))
    });
    if master.is_some() && master_times.is_none() {
        tracing::warn!(
            source = ctx.source,
            id = master.and_then(|m| str_at(m, "id")),
            "Google event without a usable start; its series is written without it"
        );
    }

    let mut overrides: Vec<(When, &Value, Role, When, Option<When>)> = Vec::new();
    for ev in &instances {
        let Some(original) = When::of(ev.get("originalStartTime"), None) else {
            tracing::debug!(
                source = ctx.source,
                id = str_at(ev, "id"),
                "instance without originalStartTime skipped"
            );
            continue;
        };
        if is_cancelled(ev) {
            // Only meaningful against a master.
            if let Some((_, start, Some(end))) = master_times {
                overrides.push((
                    original,
                    ev,
                    Role::Cancelled(original),
                    original,
                    original.plus_length(start, end),
                ));
            } else if master_times.is_some() {
                overrides.push((original, ev, Role::Cancelled(original), original, None));
            }
            continue;
        }
        let Some(start) = When::of(ev.get("start"), None) else {
            continue;
        };
        let end = When::of(ev.get("end"), None);
        overrides.push((original, ev, Role::Exception(original), start, end));
    }
    overrides.sort_by_key(|(original, ..)| original.key());

    let live_overrides = overrides
        .iter()
        .any(|(_, _, role, ..)| matches!(role, Role::Exception(_)));
    if master_times.is_none() && !live_overrides {
        return None;
    }

    let uid = master
        .and_then(|m| str_at(m, "iCalUID").or_else(|| str_at(m, "id")))
        .or_else(|| instances.iter().find_map(|v| str_at(v, "iCalUID")))
        .or_else(|| instances.iter().find_map(|v| str_at(v, "recurringEventId")))
        .unwrap_or("unknown@google")
        .to_owned();
    let default_stamp = master
        .and_then(dtstamp)
        .or_else(|| instances.iter().find_map(|v| dtstamp(v)))
        .unwrap_or_else(|| "19700101T000000Z".to_owned());

    let mut out = EventWriter {
        w: ContentWriter::with_capacity(1024),
        used: ZonesUsed::default(),
        uid,
        default_stamp,
        ctx,
    };
    if let Some((m, start, end)) = master_times {
        out.event(m, &Role::Master, start, end);
        if recurring {
            let rules: Vec<&str> = m
                .get("recurrence")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let open = rules
                .iter()
                .filter(|l| l.trim_start().to_ascii_uppercase().starts_with("RRULE"))
                .any(|l| until_year(l).is_none());
            let until = rules.iter().filter_map(|l| until_year(l)).max();
            let first = start.year();
            if open {
                out.used.add_year(first.saturating_add(OPEN_SERIES_YEARS));
            } else if let Some(y) = until {
                out.used
                    .add_year(y.clamp(first, first.saturating_add(MAX_ZONE_YEARS)));
            }
        }
    }
    for (_, ev, role, start, end) in &overrides {
        out.event(ev, role, *start, *end);
    }
    Some(out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ical::expand::{ExpandOptions, expand};
    use crate::ical::parse::parse;
    use crate::model::{BusyKind, Span};
    use chrono::TimeZone;

    const PAGE1: &str = include_str!("../../../../fixtures/providers/google/events_page1.json");
    const PAGE2: &str =
        include_str!("../../../../fixtures/providers/google/events_page2_final.json");
    const INCREMENTAL: &str =
        include_str!("../../../../fixtures/providers/google/events_incremental.json");
    const CALENDAR_LIST: &str =
        include_str!("../../../../fixtures/providers/google/calendar_list.json");

    fn body(example: &str) -> Value {
        let v: Value = serde_json::from_str(example).expect("fixture is JSON");
        v["response"]["body"].clone()
    }

    fn changes(example: &str, incremental: bool) -> Vec<ItemChange> {
        let page: Page<Value> = serde_json::from_value(body(example)).expect("an events page");
        page.items
            .into_iter()
            .filter_map(|v| change_of(v, incremental))
            .collect()
    }

    /// Applies item changes to a mirror: series → item → body.
    fn apply(mirror: &mut HashMap<String, HashMap<String, Value>>, changes: Vec<ItemChange>) {
        for c in changes {
            let series = mirror.entry(c.series).or_default();
            match c.body {
                Some(b) => {
                    series.insert(c.item, b);
                }
                None => {
                    series.remove(&c.item);
                }
            }
        }
    }

    fn ctx() -> RenderContext<'static> {
        RenderContext {
            default_zone: chrono_tz::Europe::Berlin,
            source: "src1",
        }
    }

    fn render_series(series: &HashMap<String, Value>) -> Rendered {
        let mut items: Vec<(&String, &Value)> = series.iter().collect();
        items.sort_by_key(|(id, _)| id.as_str());
        let items: Vec<Value> = items.into_iter().map(|(_, v)| v.clone()).collect();
        render(&items, &ctx())
    }

    fn berlin(d: u32, h: u32, m: u32) -> i64 {
        chrono_tz::Europe::Berlin
            .with_ymd_and_hms(2030, 5, d, h, m, 0)
            .single()
            .expect("valid time")
            .timestamp_millis()
    }

    fn berlin_june(d: u32, h: u32, m: u32) -> i64 {
        chrono_tz::Europe::Berlin
            .with_ymd_and_hms(2030, 6, d, h, m, 0)
            .single()
            .expect("valid time")
            .timestamp_millis()
    }

    /// Busy (non-free) intervals of the whole mirror in May and June 2030.
    fn busy(mirror: &HashMap<String, HashMap<String, Value>>) -> Vec<(i64, i64, BusyKind, String)> {
        let window = Span::new(berlin(1, 0, 0), berlin_june(30, 23, 0));
        let mut out = Vec::new();
        for series in mirror.values() {
            let Some(text) = render_series(series) else {
                continue;
            };
            let cal = parse(&text).expect("rendered iCalendar parses");
            assert!(cal.diagnostics.is_empty(), "{:?}\n{text}", cal.diagnostics);
            let (occurrences, diagnostics) = expand(
                &cal,
                &ExpandOptions {
                    default_zone: chrono_tz::Europe::Berlin,
                    window,
                },
            );
            assert!(diagnostics.is_empty(), "{diagnostics:?}");
            for o in occurrences {
                if o.busy != BusyKind::Free {
                    out.push((o.span.start, o.span.end, o.busy, o.uid));
                }
            }
        }
        out.sort();
        out
    }

    fn full_mirror() -> HashMap<String, HashMap<String, Value>> {
        let mut mirror = HashMap::new();
        apply(&mut mirror, changes(PAGE1, false));
        apply(&mut mirror, changes(PAGE2, false));
        mirror
    }

    #[test]
    fn items_group_into_series() {
        let page2 = changes(PAGE2, false);
        let moved = page2
            .iter()
            .find(|c| c.item == "fakerecur0001_20300513T070000Z")
            .expect("the moved exception");
        assert_eq!(moved.series, "fakerecur0001");
        let cancelled = page2
            .iter()
            .find(|c| c.item == "fakerecur0001_20300527T070000Z")
            .expect("the cancelled instance");
        assert_eq!(cancelled.series, "fakerecur0001");
        assert!(cancelled.body.is_some());
        let delta = changes(INCREMENTAL, true);
        assert_eq!(
            delta[0],
            ItemChange {
                series: "fake0evt0001".into(),
                item: "fake0evt0001".into(),
                body: None
            }
        );
        // A deleted stub in a full listing is not an item.
        let stub = serde_json::json!({"id": "gone1", "status": "cancelled"});
        assert_eq!(change_of(stub, false), None);
    }

    #[test]
    fn full_listing_renders_the_busy_time_the_examples_describe() {
        let blocks = busy(&full_mirror());
        let busy_kind = BusyKind::Busy;
        let day = |d: u32| {
            chrono_tz::Europe::Berlin
                .with_ymd_and_hms(2030, 5, d, 0, 0, 0)
                .single()
                .expect("midnight")
                .timestamp_millis()
        };
        let expected: Vec<(i64, i64, BusyKind, String)> = vec![
            // Weekly sync: 6 May, 13 May moved to 14:00, 20 May EXDATE, 27 May cancelled.
            (
                berlin(6, 9, 0),
                berlin(6, 9, 30),
                busy_kind,
                "fakerecur0001@google.com".into(),
            ),
            (
                berlin(13, 14, 0),
                berlin(13, 14, 30),
                busy_kind,
                "fakerecur0001@google.com".into(),
            ),
            (
                berlin(14, 10, 0),
                berlin(14, 11, 0),
                busy_kind,
                "fake0evt0001@google.com".into(),
            ),
            // Two-day all-day event: 21 and 22 May.
            (
                day(21),
                day(23),
                busy_kind,
                "fakealld0001@google.com".into(),
            ),
            (
                berlin_june(3, 9, 0),
                berlin_june(3, 9, 30),
                busy_kind,
                "fakerecur0001@google.com".into(),
            ),
            (
                berlin_june(10, 9, 0),
                berlin_june(10, 9, 30),
                busy_kind,
                "fakerecur0001@google.com".into(),
            ),
            (
                berlin_june(17, 9, 0),
                berlin_june(17, 9, 30),
                busy_kind,
                "fakerecur0001@google.com".into(),
            ),
            (
                berlin_june(24, 9, 0),
                berlin_june(24, 9, 30),
                busy_kind,
                "fakerecur0001@google.com".into(),
            ),
        ];
        let mut expected = expected;
        expected.sort();
        assert_eq!(blocks, expected);
    }

    #[test]
    fn incremental_changes_free_their_slots() {
        let mut mirror = full_mirror();
        apply(&mut mirror, changes(INCREMENTAL, true));
        let blocks = busy(&mirror);
        let starts: Vec<i64> = blocks.iter().map(|b| b.0).collect();
        assert_eq!(
            starts,
            vec![
                berlin(6, 9, 0),
                berlin(13, 14, 0),
                berlin_june(10, 9, 0),
                berlin_june(17, 9, 0),
                berlin_june(24, 9, 0),
            ]
        );
        // The deleted event's series is empty: nothing to render.
        assert_eq!(render(&[], &ctx()), None);
    }

    #[test]
    fn rendered_objects_carry_markers_zones_and_recurrence() {
        let mirror = full_mirror();
        let series = render_series(&mirror["fakerecur0001"]).expect("live series");
        assert!(series.starts_with("BEGIN:VCALENDAR\r\nPRODID:-//calgate//google import//EN\r\n"));
        assert!(series.contains("BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\n"));
        assert!(series.contains("DTSTART;TZID=Europe/Berlin:20300506T090000\r\n"));
        assert!(series.contains("RRULE:FREQ=WEEKLY;BYDAY=MO;UNTIL=20300630T215959Z\r\n"));
        assert!(series.contains("EXDATE;TZID=Europe/Berlin:20300520T090000\r\n"));
        assert!(series.contains("RECURRENCE-ID;TZID=Europe/Berlin:20300513T090000\r\n"));
        assert!(series.contains("RECURRENCE-ID;TZID=Europe/Berlin:20300527T090000\r\n"));
        assert!(series.contains("STATUS:CANCELLED\r\n"));
        assert!(series.contains("X-CALGATE-REMOTE-ID:fakerecur0001_20300513T070000Z\r\n"));
        assert_eq!(
            series.matches("UID:fakerecur0001@google.com\r\n").count(),
            3
        );
        assert_eq!(series.matches("BEGIN:VTIMEZONE").count(), 1);

        let booking = render_series(&mirror["bkfake00000000000001"]).expect("live");
        assert!(booking.contains("X-CALGATE-BOOKING:bk_fake_0001\r\n"));
        assert!(booking.contains("TRANSP:TRANSPARENT\r\n"));
        let declined = render_series(&mirror["fakeinv0001"]).expect("live");
        assert!(declined.contains("TRANSP:TRANSPARENT\r\n"));
        let all_day = render_series(&mirror["fakealld0001"]).expect("live");
        assert!(all_day.contains("DTSTART;VALUE=DATE:20300521\r\nDTEND;VALUE=DATE:20300523\r\n"));
        assert!(!all_day.contains("VTIMEZONE"));
        assert!(all_day.contains("TRANSP:OPAQUE\r\n"));
    }

    #[test]
    fn series_without_master_or_with_a_cancelled_one() {
        let mirror = full_mirror();
        let recur = &mirror["fakerecur0001"];
        let cancelled = recur["fakerecur0001_20300527T070000Z"].clone();
        let moved = recur["fakerecur0001_20300513T070000Z"].clone();
        // Only cancelled instances left: nothing to write.
        assert_eq!(render(std::slice::from_ref(&cancelled), &ctx()), None);
        // A cancelled master: nothing either.
        let mut master = recur["fakerecur0001"].clone();
        master["status"] = "cancelled".into();
        assert_eq!(render(&[master, moved.clone()], &ctx()), None);
        // An orphan exception is still busy, at its own time.
        let text = render(&[moved, cancelled], &ctx()).expect("live exception");
        assert!(!text.contains("STATUS:CANCELLED"));
        let cal = parse(&text).expect("parses");
        let (occ, _) = expand(
            &cal,
            &ExpandOptions {
                default_zone: chrono_tz::Europe::Berlin,
                window: Span::new(berlin(1, 0, 0), berlin(31, 0, 0)),
            },
        );
        assert_eq!(occ.len(), 1);
        assert_eq!(
            occ[0].span,
            Span::new(berlin(13, 14, 0), berlin(13, 14, 30))
        );
        assert_eq!(occ[0].busy, BusyKind::Busy);
    }

    #[test]
    fn tentative_utc_and_out_of_office_events() {
        let ev = serde_json::json!({
            "id": "t1", "status": "tentative", "summary": "Maybe; perhaps, \\ later",
            "start": {"dateTime": "2030-05-14T08:00:00Z"},
            "end": {"dateTime": "2030-05-14T09:00:00Z"},
        });
        let text = render(&[ev], &ctx()).expect("live");
        assert!(text.contains("DTSTART:20300514T080000Z\r\n"));
        assert!(text.contains("STATUS:TENTATIVE\r\n"));
        assert!(text.contains("UID:t1\r\n"));
        assert!(text.contains("SUMMARY:Maybe\\; perhaps\\, \\\\ later\r\n"));
        let cal = parse(&text).expect("parses");
        let (occ, _) = expand(
            &cal,
            &ExpandOptions {
                default_zone: chrono_tz::Europe::Berlin,
                window: Span::new(berlin(1, 0, 0), berlin(31, 0, 0)),
            },
        );
        assert_eq!(occ[0].busy, BusyKind::Tentative);

        let ooo = serde_json::json!({
            "id": "o1", "eventType": "outOfOffice",
            "start": {"dateTime": "2030-05-15T09:00:00+02:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2030-05-15T17:00:00+02:00", "timeZone": "Europe/Berlin"},
        });
        let text = render(&[ooo], &ctx()).expect("live");
        let cal = parse(&text).expect("parses");
        let (occ, _) = expand(
            &cal,
            &ExpandOptions {
                default_zone: chrono_tz::Europe::Berlin,
                window: Span::new(berlin(1, 0, 0), berlin(31, 0, 0)),
            },
        );
        assert_eq!(occ[0].busy, BusyKind::Oof);
    }

    #[test]
    fn content_lines_split_on_the_first_unquoted_colon() {
        let (name, params, value) =
            split_content_line("exdate;TZID=\"Europe/Berlin\";X=\"a:b\":20300520T090000")
                .expect("a line");
        assert_eq!(name, "EXDATE");
        assert_eq!(
            params,
            vec![
                ("TZID".to_owned(), "Europe/Berlin".to_owned()),
                ("X".to_owned(), "a:b".to_owned())
            ]
        );
        assert_eq!(value, "20300520T090000");
        assert_eq!(split_content_line("no colon"), None);
    }

    #[test]
    fn calendar_list_entries() {
        let page: Page<CalendarEntry> =
            serde_json::from_value(body(CALENDAR_LIST)).expect("a calendar list page");
        let cals: Vec<RemoteCalendar> = page
            .items
            .into_iter()
            .map(CalendarEntry::into_remote)
            .collect();
        assert_eq!(cals.len(), 4);
        assert!(cals[0].primary && cals[0].writable);
        assert_eq!(cals[0].time_zone.as_deref(), Some("Europe/Berlin"));
        assert!(!cals[1].writable && !cals[1].primary);
        assert_eq!(cals[1].name, "Team rota (fake)");
        assert!(!cals[2].writable);
    }
}
