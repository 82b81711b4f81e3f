//! Microsoft Graph (Outlook calendars) import.
//!
//! [`GraphApi::fetch`] runs `calendarView/delta` rounds over a time window: the
//! first round lists every instance in the window (single events, occurrences
//! and exceptions: Graph expands series itself), later rounds start from the
//! stored `@odata.deltaLink` and bring only changes and `@removed` entries. No
//! `Prefer: outlook.timezone` is sent, so timed values arrive in UTC. Links from
//! Graph are followed verbatim but only to Graph's own origin (they carry our
//! bearer token).
//!
//! Every instance is its own item. Single events are their own series; the
//! occurrences and exceptions of a recurring event are grouped by
//! `seriesMasterId` into one series, rendered by [`render`] as one object: one
//! VEVENT per instance, all with one UID, told apart by RECURRENCE-ID (the
//! instance's `originalStart`). Graph sends `@removed` entries with an id only:
//! the engine finds the series such an item was filed under. Busy semantics
//! follow `showAs`.

/// Microsoft identity platform (any account) and Graph: authorize, token, API.
pub const DEFAULT_ENDPOINTS: [&str; 3] = [
    "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
    "https://login.microsoftonline.com/common/oauth2/v2.0/token",
    "https://graph.microsoft.com/v1.0",
];

pub mod export;
mod provider;

pub use provider::{EXPORT_CONCURRENCY, Microsoft};

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDateTime, SecondsFormat, Utc};
use http::StatusCode;
use http::header::{ACCEPT, RETRY_AFTER};
use reqwest::Url;
use serde_json::Value;

use super::{
    Cursor, FetchMode, Fetched, ItemChange, ProviderError, RemoteCalendar, RenderContext, Rendered,
    TokenSource, path_segment, status_error,
};
use crate::ical::zones::{self, Resolution, Zone};
use crate::ical::{ContentWriter, format_date, format_utc};

/// `Prefer: odata.maxpagesize` unless [`GraphApi::with_page_size`] says otherwise.
pub const DEFAULT_PAGE_SIZE: usize = 200;
/// Pages one round may take before we suspect a loop.
const MAX_PAGES: usize = 10_000;
const PRODID: &str = "-//calgate//Microsoft Graph import//EN";
/// Part of the id of the single-value extended property our exports carry.
const MARKER_NAME: &str = "name gatewaybookingid";

/// A Graph v1.0 endpoint (`https://graph.microsoft.com/v1.0`, or a mock).
#[derive(Debug, Clone)]
pub struct GraphApi {
    base_url: String,
    http: reqwest::Client,
    page_size: usize,
}

impl GraphApi {
    /// `http` should not follow redirects on its own (they would carry the token).
    pub fn new(base_url: impl Into<String>, http: reqwest::Client) -> Self {
        GraphApi {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            http,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }

    /// Asks for pages of at most `n` items (Graph may send fewer).
    pub fn with_page_size(mut self, n: usize) -> Self {
        self.page_size = n.max(1);
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The account's calendars (`GET /me/calendars`, every page).
    pub async fn list_calendars(
        &self,
        tokens: &dyn TokenSource,
    ) -> Result<Vec<RemoteCalendar>, ProviderError> {
        let mut url = format!("{}/me/calendars", self.base_url);
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let mut page = self.get_json(tokens, &url, None).await?;
            for c in take_values(&mut page)? {
                let Some(id) = c.get("id").and_then(Value::as_str) else {
                    continue;
                };
                out.push(RemoteCalendar {
                    id: id.to_owned(),
                    name: c
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or(id)
                        .to_owned(),
                    time_zone: None,
                    primary: c
                        .get("isDefaultCalendar")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    writable: c.get("canEdit").and_then(Value::as_bool).unwrap_or(false),
                });
            }
            match page.get("@odata.nextLink").and_then(Value::as_str) {
                Some(next) => url = self.own_link(next)?,
                None => return Ok(out),
            }
        }
        Err(too_many_pages())
    }

    /// One delta round over `window` for calendar `calendar_id` (see module docs).
    /// `Incremental` with a cursor token → [`Fetched::Delta`]; otherwise a fresh
    /// round → [`Fetched::Full`]. An expired token → [`ProviderError::CursorExpired`].
    pub async fn fetch(
        &self,
        tokens: &dyn TokenSource,
        calendar_id: &str,
        cursor: &Cursor,
        mode: FetchMode,
        window: (DateTime<Utc>, DateTime<Utc>),
    ) -> Result<Fetched, ProviderError> {
        let previous = cursor.token.as_deref().filter(|t| !t.is_empty());
        let incremental = mode == FetchMode::Incremental && previous.is_some();
        let mut url = match previous {
            // A token from another origin (the base URL was reconfigured) is of
            // no use there: start over rather than send our token elsewhere.
            Some(token) if incremental => self
                .own_link(token)
                .map_err(|_| ProviderError::CursorExpired)?,
            _ => {
                let query = form_urlencoded::Serializer::new(String::new())
                    .append_pair(
                        "startDateTime",
                        &window.0.to_rfc3339_opts(SecondsFormat::Secs, true),
                    )
                    .append_pair(
                        "endDateTime",
                        &window.1.to_rfc3339_opts(SecondsFormat::Secs, true),
                    )
                    .finish();
                // No calendar picked: the account's default calendar.
                if calendar_id.trim().is_empty() {
                    format!("{}/me/calendar/calendarView/delta?{query}", self.base_url)
                } else {
                    format!(
                        "{}/me/calendars/{}/calendarView/delta?{query}",
                        self.base_url,
                        path_segment(calendar_id)
                    )
                }
            }
        };
        let prefer = format!("odata.maxpagesize={}", self.page_size);
        let mut changes: Vec<ItemChange> = Vec::new();
        let mut position: HashMap<String, usize> = HashMap::new();
        for _ in 0..MAX_PAGES {
            let mut page = match self.get_json(tokens, &url, Some(&prefer)).await {
                // A fresh round has no cursor to drop: the state went away mid-round.
                Err(ProviderError::CursorExpired) if !incremental => {
                    return Err(ProviderError::retryable(
                        "Microsoft Graph discarded the sync state during a full round",
                    ));
                }
                other => other?,
            };
            for entry in take_values(&mut page)? {
                let Some(id) = entry.get("id").and_then(Value::as_str).map(str::to_owned) else {
                    continue;
                };
                let body = (entry.get("@removed").is_none()).then_some(entry);
                // Occurrences and exceptions join their series (one object, one
                // UID); a removal names the item only, the engine finds its series.
                let series = body
                    .as_ref()
                    .and_then(series_master)
                    .map_or_else(|| id.clone(), str::to_owned);
                let change = ItemChange {
                    series,
                    item: id.clone(),
                    body,
                };
                // Graph replays items: the last word on an id wins.
                match position.get(&id) {
                    Some(&i) => changes[i] = change,
                    None => {
                        position.insert(id, changes.len());
                        changes.push(change);
                    }
                }
            }
            if let Some(delta) = page.get("@odata.deltaLink").and_then(Value::as_str) {
                let token = self.own_link(delta)?;
                let next_cursor = Cursor {
                    token: Some(token),
                    ..Cursor::default()
                };
                return Ok(if !incremental {
                    changes.retain(|c| c.body.is_some());
                    Fetched::Full {
                        items: changes,
                        cursor: next_cursor,
                    }
                } else if changes.is_empty() && next_cursor.token.as_deref() == previous {
                    Fetched::Unchanged {
                        cursor: next_cursor,
                    }
                } else {
                    Fetched::Delta {
                        changes,
                        cursor: next_cursor,
                    }
                });
            }
            match page.get("@odata.nextLink").and_then(Value::as_str) {
                Some(next) => url = self.own_link(next)?,
                None => {
                    return Err(ProviderError::retryable(
                        "Microsoft Graph sent a delta page with neither nextLink nor deltaLink",
                    ));
                }
            }
        }
        Err(too_many_pages())
    }

    /// A link Graph handed us, if it points back at Graph.
    fn own_link(&self, link: &str) -> Result<String, ProviderError> {
        let ours = Url::parse(&self.base_url).map_err(|_| {
            ProviderError::Permanent(format!(
                "the Microsoft Graph base URL {:?} is not a URL",
                self.base_url
            ))
        })?;
        match Url::parse(link) {
            Ok(u) if u.origin() == ours.origin() => Ok(link.to_owned()),
            _ => Err(ProviderError::Permanent(
                "Microsoft Graph sent a link to another host; not followed".into(),
            )),
        }
    }

    /// GET with the bearer token; on 401 one forced refresh and one replay.
    async fn get_json(
        &self,
        tokens: &dyn TokenSource,
        url: &str,
        prefer: Option<&str>,
    ) -> Result<Value, ProviderError> {
        let mut token = tokens.access_token(false).await?;
        let mut refreshed = false;
        loop {
            let mut req = self
                .http
                .get(url)
                .bearer_auth(&token)
                .header(ACCEPT, "application/json");
            if let Some(p) = prefer {
                req = req.header("Prefer", p);
            }
            let resp = req.send().await.map_err(transport_error)?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED {
                if refreshed {
                    return Err(ProviderError::Reauth(
                        "Microsoft Graph rejected a freshly refreshed access token (HTTP 401)"
                            .into(),
                    ));
                }
                refreshed = true;
                token = tokens.access_token(true).await?;
                continue;
            }
            let retry = resp.headers().get(RETRY_AFTER).cloned();
            let body = resp.bytes().await.map_err(transport_error)?;
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body);
                return Err(status_error(status, retry.as_ref(), &text));
            }
            return serde_json::from_slice(&body).map_err(|e| {
                ProviderError::retryable(format!("Microsoft Graph sent unreadable JSON: {e}"))
            });
        }
    }
}

fn too_many_pages() -> ProviderError {
    ProviderError::Permanent(format!(
        "Microsoft Graph kept paging past {MAX_PAGES} pages"
    ))
}

/// The page's `value` array, taken out of it.
fn take_values(page: &mut Value) -> Result<Vec<Value>, ProviderError> {
    match page.get_mut("value").map(Value::take) {
        Some(Value::Array(values)) => Ok(values),
        _ => Err(ProviderError::retryable(
            "Microsoft Graph sent a page without a value array",
        )),
    }
}

fn transport_error(e: reqwest::Error) -> ProviderError {
    super::api_transport_error("Microsoft Graph", e)
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// The series an instance belongs to (`seriesMasterId` of occurrences and
/// exceptions), if any.
fn series_master(e: &Value) -> Option<&str> {
    e.get("seriesMasterId")
        .and_then(Value::as_str)
        .filter(|m| !m.trim().is_empty())
}

/// One VCALENDAR with a VEVENT per live item of one series; `None` when every
/// item is cancelled or removed (nothing to store). Instances of a recurring
/// event share one UID and carry RECURRENCE-ID, so a series is one object (two
/// objects of a calendar may not share a UID).
pub fn render(items: &[Value], ctx: &RenderContext) -> Rendered {
    let mut w = ContentWriter::with_capacity(768 * items.len().max(1));
    w.begin("VCALENDAR");
    w.raw("VERSION", &[], "2.0");
    w.raw("PRODID", &[], PRODID);
    let series_uid = series_uid(items);
    let mut any = false;
    for item in items {
        any |= write_event(&mut w, item, series_uid.as_deref(), ctx);
    }
    w.end("VCALENDAR");
    any.then(|| w.finish())
}

/// The UID of a recurring series: the `iCalUId` its instances share, or (Graph
/// documents per-occurrence `iCalUId`s) the series master's id. `None` for a
/// single event, which keeps its own `iCalUId`.
fn series_uid(items: &[Value]) -> Option<String> {
    let master = items.iter().find_map(series_master)?;
    let mut uids = items
        .iter()
        .filter(|e| e.get("@removed").is_none())
        .map(|e| e.get("iCalUId").and_then(Value::as_str).unwrap_or(""));
    let first = uids.next().unwrap_or("");
    if !first.trim().is_empty() && uids.all(|u| u == first) {
        Some(first.to_owned())
    } else {
        Some(master.to_owned())
    }
}

/// A `{dateTime, timeZone}` value: the wall-clock time as written and its instant.
struct GraphTime {
    local: NaiveDateTime,
    utc: DateTime<Utc>,
}

fn parse_local(text: &str) -> Option<NaiveDateTime> {
    let text = text.trim().trim_end_matches(['Z', 'z']);
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M"))
        .ok()
}

/// Graph's `timeZone`: `UTC`, IANA or Windows; anything else is read as UTC.
fn zone_of(name: &str, event: &str, ctx: &RenderContext) -> Zone {
    let name = name.trim();
    if name.is_empty() || name.eq_ignore_ascii_case("UTC") {
        return Zone::Iana(chrono_tz::UTC);
    }
    match zones::resolve(name, |_| None) {
        Resolution::Zone(z) => z,
        Resolution::Unknown => {
            tracing::warn!(
                source = ctx.source,
                event,
                zone = name,
                "Microsoft event in an unknown time zone; its times are read as UTC"
            );
            Zone::Iana(chrono_tz::UTC)
        }
    }
}

fn graph_time(v: Option<&Value>, event: &str, ctx: &RenderContext) -> Option<GraphTime> {
    let v = v?;
    let local = parse_local(v.get("dateTime")?.as_str()?)?;
    let zone = zone_of(
        v.get("timeZone").and_then(Value::as_str).unwrap_or("UTC"),
        event,
        ctx,
    );
    Some(GraphTime {
        local,
        utc: zone.to_utc(local),
    })
}

fn timestamp(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let text = v?.as_str()?.trim();
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| parse_local(text).map(|n| n.and_utc()))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, key| v.get(key))
        .and_then(Value::as_str)
}

/// The booking id our export tagged the event with, if any.
fn booking_marker(e: &Value) -> Option<&str> {
    e.get("singleValueExtendedProperties")?
        .as_array()?
        .iter()
        .find(|p| {
            p.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| id.to_ascii_lowercase().contains(MARKER_NAME))
        })
        .and_then(|p| p.get("value"))
        .and_then(Value::as_str)
}

/// Writes one VEVENT (with `series_uid` and a RECURRENCE-ID when it is an
/// instance of a series); `false` when the item has nothing to store.
fn write_event(
    w: &mut ContentWriter,
    e: &Value,
    series_uid: Option<&str>,
    ctx: &RenderContext,
) -> bool {
    if e.get("@removed").is_some() || e.get("isCancelled").and_then(Value::as_bool) == Some(true) {
        return false;
    }
    let Some(id) = e.get("id").and_then(Value::as_str) else {
        return false;
    };
    let Some(start) = graph_time(e.get("start"), id, ctx) else {
        tracing::warn!(
            source = ctx.source,
            event = id,
            "Microsoft event without a readable start; skipped"
        );
        return false;
    };
    let end = graph_time(e.get("end"), id, ctx);
    let uid = series_uid
        .or_else(|| e.get("iCalUId").and_then(Value::as_str))
        .filter(|u| !u.trim().is_empty())
        .unwrap_or(id);
    let all_day = e.get("isAllDay").and_then(Value::as_bool) == Some(true);
    let stamp = timestamp(e.get("lastModifiedDateTime"))
        .or_else(|| timestamp(e.get("createdDateTime")))
        .unwrap_or(start.utc);

    w.begin("VEVENT");
    w.text("UID", &[], uid);
    w.raw("DTSTAMP", &[], &format_utc(stamp));
    if series_uid.is_some() && series_master(e).is_some() {
        // The slot the instance was generated for (stable when it is moved).
        let original = timestamp(e.get("originalStart"));
        if all_day {
            let date = original
                .map(|t| {
                    let zone = e
                        .get("originalStartTimeZone")
                        .and_then(Value::as_str)
                        .unwrap_or("UTC");
                    zone_of(zone, id, ctx).to_local(t).date()
                })
                .unwrap_or(start.local.date());
            w.raw("RECURRENCE-ID", &[("VALUE", "DATE")], &format_date(date));
        } else {
            w.raw(
                "RECURRENCE-ID",
                &[],
                &format_utc(original.unwrap_or(start.utc)),
            );
        }
    }
    if all_day {
        // Midnight to midnight, labelled in whatever zone: the dates are the point.
        let first = start.local.date();
        let last = end
            .map(|t| {
                let d = t.local.date();
                if t.local.time() == chrono::NaiveTime::MIN {
                    d
                } else {
                    d + Duration::days(1)
                }
            })
            .filter(|d| *d > first)
            .unwrap_or(first + Duration::days(1));
        w.raw("DTSTART", &[("VALUE", "DATE")], &format_date(first));
        w.raw("DTEND", &[("VALUE", "DATE")], &format_date(last));
    } else {
        w.raw("DTSTART", &[], &format_utc(start.utc));
        if let Some(end) = end.filter(|t| t.utc >= start.utc) {
            w.raw("DTEND", &[], &format_utc(end.utc));
        }
    }
    if let Some(subject) = e.get("subject").and_then(Value::as_str)
        && !subject.is_empty()
    {
        w.text("SUMMARY", &[], subject);
    }
    if let Some(place) = str_at(e, &["location", "displayName"])
        && !place.is_empty()
    {
        w.text("LOCATION", &[], place);
    }
    match e.get("sensitivity").and_then(Value::as_str) {
        Some("private") => w.raw("CLASS", &[], "PRIVATE"),
        Some("confidential") => w.raw("CLASS", &[], "CONFIDENTIAL"),
        _ => {}
    }
    let declined = str_at(e, &["responseStatus", "response"]) == Some("declined");
    if let Some(booking) = booking_marker(e) {
        // One of our own bookings, exported earlier: it must not block itself.
        w.text("X-CALGATE-BOOKING", &[], booking);
        w.raw("TRANSP", &[], "TRANSPARENT");
    } else if declined {
        w.raw("TRANSP", &[], "TRANSPARENT");
    } else {
        let show_as = e
            .get("showAs")
            .and_then(Value::as_str)
            .unwrap_or("busy")
            .to_ascii_lowercase();
        match show_as.as_str() {
            "free" | "unknown" => w.raw("TRANSP", &[], "TRANSPARENT"),
            "tentative" => {
                w.raw("STATUS", &[], "TENTATIVE");
                w.raw("TRANSP", &[], "OPAQUE");
            }
            "oof" => {
                w.raw("TRANSP", &[], "OPAQUE");
                w.raw("X-MICROSOFT-CDO-BUSYSTATUS", &[], "OOF");
            }
            // busy, workingElsewhere
            _ => w.raw("TRANSP", &[], "OPAQUE"),
        }
    }
    w.text("X-CALGATE-REMOTE-ID", &[], id);
    w.end("VEVENT");
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> RenderContext<'static> {
        RenderContext {
            default_zone: chrono_tz::Europe::Berlin,
            source: "outlook",
        }
    }

    #[test]
    fn renders_windows_zones_and_all_day_dates() {
        let item = json!({
            "id": "AAMk=1",
            "subject": "Planning, with; specials",
            "start": {"dateTime": "2030-05-15T10:00:00.0000000", "timeZone": "W. Europe Standard Time"},
            "end": {"dateTime": "2030-05-15T11:30:00.0000000", "timeZone": "W. Europe Standard Time"},
            "location": {"displayName": "Room 1"},
            "showAs": "busy",
        });
        let text = render(&[item], &ctx()).unwrap();
        assert!(text.contains("UID:AAMk=1\r\n"), "{text}");
        assert!(text.contains("DTSTART:20300515T080000Z\r\n"), "{text}");
        assert!(text.contains("DTEND:20300515T093000Z\r\n"), "{text}");
        assert!(
            text.contains("SUMMARY:Planning\\, with\\; specials\r\n"),
            "{text}"
        );
        assert!(text.contains("LOCATION:Room 1\r\n"), "{text}");
        assert!(text.contains("X-CALGATE-REMOTE-ID:AAMk=1\r\n"), "{text}");

        let all_day = json!({
            "id": "x", "iCalUId": "uid-x", "isAllDay": true,
            "start": {"dateTime": "2030-05-21T00:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2030-05-23T00:00:00.0000000", "timeZone": "UTC"},
        });
        let text = render(&[all_day], &ctx()).unwrap();
        assert!(text.contains("UID:uid-x\r\n"), "{text}");
        assert!(text.contains("DTSTART;VALUE=DATE:20300521\r\n"), "{text}");
        assert!(text.contains("DTEND;VALUE=DATE:20300523\r\n"), "{text}");
    }

    #[test]
    fn unknown_zones_fall_back_to_utc_and_cancelled_items_render_nothing() {
        let item = json!({
            "id": "y",
            "start": {"dateTime": "2030-05-15T10:00:00", "timeZone": "tzone://Microsoft/Custom"},
            "end": {"dateTime": "2030-05-15T11:00:00", "timeZone": "tzone://Microsoft/Custom"},
        });
        let text = render(&[item], &ctx()).unwrap();
        assert!(text.contains("DTSTART:20300515T100000Z\r\n"), "{text}");
        let cancelled = json!({"id": "z", "isCancelled": true,
            "start": {"dateTime": "2030-05-15T10:00:00", "timeZone": "UTC"}});
        assert_eq!(render(&[cancelled], &ctx()), None);
        let removed = json!({"id": "z", "@removed": {"reason": "deleted"}});
        assert_eq!(render(&[removed], &ctx()), None);
        assert_eq!(render(&[json!({"id": "no start"})], &ctx()), None);
    }

    // -----------------------------------------------------------------------------------------
    // Fixture-driven tests (fixtures/providers/microsoft, see its README.md).

    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use crate::ical::expand::{ExpandOptions, expand};
    use crate::ical::parse::parse;
    use crate::model::{BusyKind, Span};
    use chrono::TimeZone;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const CALENDARS: &str = include_str!("../../../../fixtures/providers/microsoft/calendars.json");
    const PAGE1: &str = include_str!("../../../../fixtures/providers/microsoft/delta_page1.json");
    const PAGE2_EMPTY: &str =
        include_str!("../../../../fixtures/providers/microsoft/delta_page2_empty.json");
    const PAGE3_FINAL: &str =
        include_str!("../../../../fixtures/providers/microsoft/delta_page3_final.json");
    const INCREMENTAL: &str =
        include_str!("../../../../fixtures/providers/microsoft/delta_incremental.json");
    const SERIES_MASTER: &str =
        include_str!("../../../../fixtures/providers/microsoft/event_series_master.json");
    const PACIFIC: &str =
        include_str!("../../../../fixtures/providers/microsoft/calendarview_pacific.json");

    /// The origin the fixtures' links point at.
    const GRAPH: &str = "https://graph.microsoft.com/v1.0";
    const CALENDAR: &str = "AAMkAGFAKE-calendar-default-AAAAAAEGAAA=";
    const MASTER: &str = "AAMkAGFAKE-event-0100-AAAAAAENAAA=";
    const SERIES_UID: &str = "040000008200E00074C5B7101A82E00807EE050DFAKE010000000000000000100000000000000000000000000000000000";

    fn eid(n: &str) -> String {
        format!("AAMkAGFAKE-event-{n}-AAAAAAENAAA=")
    }

    fn fixture_body(fixture: &str) -> Value {
        let v: Value = serde_json::from_str(fixture).expect("fixture is JSON");
        v["response"]["body"].clone()
    }

    /// The items of a fixture page, by id (the last copy of a replayed id).
    fn fixture_item(fixture: &str, id: &str) -> Value {
        fixture_body(fixture)["value"]
            .as_array()
            .expect("a value array")
            .iter()
            .rev()
            .find(|v| v["id"] == id)
            .unwrap_or_else(|| panic!("{id} in fixture"))
            .clone()
    }

    /// Rendered text with folded lines joined again (long Outlook UIDs fold).
    fn unfold(text: &str) -> String {
        text.replace("\r\n ", "")
    }

    fn utc(d: u32, h: u32, m: u32) -> i64 {
        Utc.with_ymd_and_hms(2030, 5, d, h, m, 0)
            .single()
            .expect("valid time")
            .timestamp_millis()
    }

    fn berlin_midnight(d: u32) -> i64 {
        chrono_tz::Europe::Berlin
            .with_ymd_and_hms(2030, 5, d, 0, 0, 0)
            .single()
            .expect("valid time")
            .timestamp_millis()
    }

    fn may() -> (DateTime<Utc>, DateTime<Utc>) {
        (
            Utc.with_ymd_and_hms(2030, 5, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2030, 6, 1, 0, 0, 0).unwrap(),
        )
    }

    struct FixedToken;

    impl TokenSource for FixedToken {
        fn access_token(
            &self,
            _force_refresh: bool,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<String, ProviderError>> + Send + '_>,
        > {
            Box::pin(async { Ok("fake-token".to_owned()) })
        }
    }

    /// A request's target and its `Prefer` header.
    type Request = (String, Option<String>);

    /// A Graph stand-in on loopback serving fixture bodies (their links rewritten
    /// to it): the first route whose needle occurs in the request target answers,
    /// anything else gets a 404. Records each request's target and `Prefer`.
    struct FixtureServer {
        base: String,
        requests: Arc<Mutex<Vec<Request>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for FixtureServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl FixtureServer {
        async fn start(routes: &[(&'static str, &'static str)]) -> FixtureServer {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let base = format!("http://{}/v1.0", listener.local_addr().expect("addr"));
            let routes: Arc<Vec<(&'static str, String)>> = Arc::new(
                routes
                    .iter()
                    .map(|(needle, fixture)| {
                        (
                            *needle,
                            fixture_body(fixture).to_string().replace(GRAPH, &base),
                        )
                    })
                    .collect(),
            );
            let requests = Arc::new(Mutex::new(Vec::new()));
            let seen = Arc::clone(&requests);
            let task = tokio::spawn(async move {
                while let Ok((mut sock, _)) = listener.accept().await {
                    let routes = Arc::clone(&routes);
                    let seen = Arc::clone(&seen);
                    tokio::spawn(async move {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 4096];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match sock.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let head = String::from_utf8_lossy(&head).into_owned();
                        let target = head.split(' ').nth(1).unwrap_or("").to_owned();
                        let prefer = head.lines().find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("prefer")
                                .then(|| value.trim().to_owned())
                        });
                        seen.lock().unwrap().push((target.clone(), prefer));
                        let (status, body) = routes
                            .iter()
                            .find(|(needle, _)| target.contains(needle))
                            .map_or(("404 Not Found", "{}"), |(_, b)| ("200 OK", b.as_str()));
                        let response = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = sock.write_all(response.as_bytes()).await;
                        let _ = sock.shutdown().await;
                    });
                }
            });
            FixtureServer {
                base,
                requests,
                task,
            }
        }

        /// The whole delta conversation: full round, then the incremental one.
        async fn delta() -> FixtureServer {
            FixtureServer::start(&[
                ("$skiptoken=FAKE-SKIPTOKEN-0001", PAGE2_EMPTY),
                ("$skiptoken=FAKE-SKIPTOKEN-0002", PAGE3_FINAL),
                ("$deltatoken=FAKE-DELTATOKEN-0001", INCREMENTAL),
                ("/calendarView/delta?startDateTime=", PAGE1),
                ("/me/calendars", CALENDARS),
            ])
            .await
        }

        fn api(&self) -> GraphApi {
            crate::install_crypto_provider();
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .expect("client");
            GraphApi::new(&self.base, http)
        }

        fn requests(&self) -> Vec<Request> {
            self.requests.lock().unwrap().clone()
        }
    }

    async fn full_round(server: &FixtureServer) -> (Vec<ItemChange>, Cursor) {
        let fetched = server
            .api()
            .fetch(
                &FixedToken,
                CALENDAR,
                &Cursor::default(),
                FetchMode::Incremental,
                may(),
            )
            .await
            .expect("full round");
        match fetched {
            Fetched::Full { items, cursor } => (items, cursor),
            other => panic!("expected Full, got {other:?}"),
        }
    }

    async fn incremental_round(
        server: &FixtureServer,
        cursor: &Cursor,
    ) -> (Vec<ItemChange>, Cursor) {
        let fetched = server
            .api()
            .fetch(&FixedToken, CALENDAR, cursor, FetchMode::Incremental, may())
            .await
            .expect("incremental round");
        match fetched {
            Fetched::Delta { changes, cursor } => (changes, cursor),
            other => panic!("expected Delta, got {other:?}"),
        }
    }

    type Mirror = HashMap<String, BTreeMap<String, Value>>;
    /// An occurrence as (start, end, busy kind, UID).
    type Block = (i64, i64, BusyKind, String);

    /// What the sync engine does with changes: an item filed under another series
    /// (a removal names the item only) leaves it first; `None` deletes.
    fn apply(mirror: &mut Mirror, changes: Vec<ItemChange>) {
        for c in changes {
            for (series, items) in mirror.iter_mut() {
                if *series != c.series {
                    items.remove(&c.item);
                }
            }
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
        mirror.retain(|_, items| !items.is_empty());
    }

    fn render_series(items: &BTreeMap<String, Value>) -> Rendered {
        let items: Vec<Value> = items.values().cloned().collect();
        render(&items, &ctx())
    }

    /// Every occurrence of the mirror in May 2030 (free ones too), and the series
    /// that render to nothing (their objects are deleted).
    fn occurrences(mirror: &Mirror) -> (Vec<Block>, Vec<String>) {
        let (from, to) = may();
        let window = Span::new(from.timestamp_millis(), to.timestamp_millis());
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (series, items) in mirror {
            let Some(text) = render_series(items) else {
                gone.push(series.clone());
                continue;
            };
            let cal = parse(&text).expect("rendered iCalendar parses");
            assert!(cal.diagnostics.is_empty(), "{:?}\n{text}", cal.diagnostics);
            let (occ, diagnostics) = expand(
                &cal,
                &ExpandOptions {
                    default_zone: chrono_tz::Europe::Berlin,
                    window,
                },
            );
            assert!(diagnostics.is_empty(), "{diagnostics:?}\n{text}");
            out.extend(
                occ.into_iter()
                    .map(|o| (o.span.start, o.span.end, o.busy, o.uid)),
            );
        }
        out.sort();
        gone.sort();
        (out, gone)
    }

    fn uid_of(fixture: &str, id: &str) -> String {
        fixture_item(fixture, id)["iCalUId"]
            .as_str()
            .expect("iCalUId")
            .to_owned()
    }

    #[tokio::test]
    async fn a_full_round_follows_next_links_through_an_empty_page_to_the_delta_link() {
        let server = FixtureServer::delta().await;
        let (items, cursor) = full_round(&server).await;
        assert_eq!(
            cursor.token,
            Some(format!(
                "{}/me/calendarView/delta?$deltatoken=FAKE-DELTATOKEN-0001",
                server.base
            ))
        );
        let requests = server.requests();
        assert_eq!(requests.len(), 3, "{requests:?}");
        let (first, prefer) = &requests[0];
        assert!(
            first.starts_with(&format!(
                "/v1.0/me/calendars/{}/calendarView/delta?",
                path_segment(CALENDAR)
            )),
            "{first}"
        );
        assert!(
            first.contains("startDateTime=2030-05-01T00%3A00%3A00Z")
                && first.contains("endDateTime=2030-06-01T00%3A00%3A00Z"),
            "{first}"
        );
        // No outlook.timezone: timed values arrive in UTC.
        assert_eq!(prefer.as_deref(), Some("odata.maxpagesize=200"));
        assert!(requests[1].0.ends_with("$skiptoken=FAKE-SKIPTOKEN-0001"));
        assert!(requests[2].0.ends_with("$skiptoken=FAKE-SKIPTOKEN-0002"));

        // Every item once, in first-seen order; the replayed 0001 is the later copy.
        let ids: Vec<&str> = items.iter().map(|c| c.item.as_str()).collect();
        let expected: Vec<String> = [
            "0001", "0101", "0102", "0002", "0003", "0103", "0104", "0004", "0005", "0006", "0007",
        ]
        .iter()
        .map(|n| eid(n))
        .collect();
        assert_eq!(ids, expected);
        let dentist = items[0].body.as_ref().expect("live");
        assert_eq!(dentist["subject"], "Dentist (fake, rescheduled)");
        for c in &items {
            assert!(c.body.is_some(), "{c:?}");
            let instance = ["0101", "0102", "0103", "0104"]
                .iter()
                .any(|n| c.item == eid(n));
            let series = if instance {
                MASTER.to_owned()
            } else {
                c.item.clone()
            };
            assert_eq!(c.series, series, "{}", c.item);
        }
    }

    #[tokio::test]
    async fn an_incremental_round_brings_removed_ids_and_the_next_delta_link() {
        let server = FixtureServer::delta().await;
        let cursor = Cursor {
            token: Some(format!(
                "{}/me/calendarView/delta?$deltatoken=FAKE-DELTATOKEN-0001",
                server.base
            )),
            ..Cursor::default()
        };
        let (changes, next) = incremental_round(&server, &cursor).await;
        assert_eq!(
            next.token,
            Some(format!(
                "{}/me/calendarView/delta?$deltatoken=FAKE-DELTATOKEN-0002",
                server.base
            ))
        );
        let requests = server.requests();
        assert_eq!(requests.len(), 1, "{requests:?}");
        assert!(requests[0].0.ends_with("$deltatoken=FAKE-DELTATOKEN-0001"));

        let summary: Vec<(&str, &str, bool)> = changes
            .iter()
            .map(|c| (c.series.as_str(), c.item.as_str(), c.body.is_some()))
            .collect();
        let never_seen = "AAMkAGFAKE-event-never-seen-AAAAAAENAAA=";
        assert_eq!(
            summary,
            vec![
                // Removals name the item only: filed under their own id here.
                (eid("0001").as_str(), eid("0001").as_str(), false),
                (MASTER, eid("0102").as_str(), true),
                (eid("0004").as_str(), eid("0004").as_str(), true),
                (eid("0104").as_str(), eid("0104").as_str(), false),
                (eid("0009").as_str(), eid("0009").as_str(), true),
                (never_seen, never_seen, false),
            ]
        );
        // The replayed exception: the last copy in the page wins.
        let moved = changes[1].body.as_ref().expect("live");
        assert_eq!(moved["start"]["dateTime"], "2030-05-13T14:00:00.0000000");

        // A full fetch ignores the cursor and starts a fresh round from the window.
        let fetched = server
            .api()
            .fetch(&FixedToken, CALENDAR, &cursor, FetchMode::Full, may())
            .await
            .expect("full round");
        assert!(matches!(fetched, Fetched::Full { ref items, .. } if items.len() == 11));
        assert!(
            server.requests()[1]
                .0
                .contains("/calendarView/delta?startDateTime=")
        );
    }

    #[tokio::test]
    async fn calendars_fixture_lists_default_and_read_only_calendars() {
        let server = FixtureServer::delta().await;
        let cals = server
            .api()
            .list_calendars(&FixedToken)
            .await
            .expect("calendars");
        let summary: Vec<(&str, bool, bool)> = cals
            .iter()
            .map(|c| (c.name.as_str(), c.primary, c.writable))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("Calendar", true, true),
                ("Germany holidays (fake)", false, false),
                ("Jo Bloggs (shared, fake)", false, false),
            ]
        );
        assert_eq!(cals[0].id, CALENDAR);
        assert_eq!(cals[1].id, "AAMkAGFAKE-calendar-holidays+/AAAAAAEHAAA=");
    }

    #[tokio::test]
    async fn delta_rounds_render_the_busy_time_the_fixtures_describe() {
        let server = FixtureServer::delta().await;
        let (items, cursor) = full_round(&server).await;
        let mut mirror = Mirror::new();
        apply(&mut mirror, items);
        let uid = |n: &str| {
            [PAGE1, PAGE3_FINAL, INCREMENTAL]
                .iter()
                .find(|f| {
                    fixture_body(f)["value"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|v| v["id"] == eid(n) && v.get("iCalUId").is_some())
                })
                .map(|f| uid_of(f, &eid(n)))
                .expect("an iCalUId")
        };
        let series = SERIES_UID.to_owned();
        let (occ, gone) = occurrences(&mirror);
        assert_eq!(
            occ,
            vec![
                (utc(6, 7, 0), utc(6, 7, 30), BusyKind::Busy, series.clone()),
                // The moved exception, at its new time.
                (
                    utc(13, 12, 0),
                    utc(13, 12, 30),
                    BusyKind::Busy,
                    series.clone()
                ),
                (utc(14, 9, 0), utc(14, 10, 0), BusyKind::Busy, uid("0001")),
                (utc(15, 10, 0), utc(15, 11, 0), BusyKind::Free, uid("0002")),
                (
                    utc(16, 11, 0),
                    utc(16, 12, 0),
                    BusyKind::Tentative,
                    uid("0003")
                ),
                // Declined.
                (utc(17, 9, 0), utc(17, 10, 0), BusyKind::Free, uid("0007")),
                // All-day dates are floating: the tenant's midnights, end exclusive.
                (
                    berlin_midnight(21),
                    berlin_midnight(23),
                    BusyKind::Busy,
                    uid("0004")
                ),
                (
                    utc(27, 7, 0),
                    utc(27, 7, 30),
                    BusyKind::Busy,
                    series.clone()
                ),
                (
                    berlin_midnight(28),
                    berlin_midnight(30),
                    BusyKind::Oof,
                    uid("0005")
                ),
            ]
        );
        // The cancelled meeting (still showAs busy) has no object; the cancelled
        // exception (0103, 20 May) is simply not in its series' object.
        assert_eq!(gone, vec![eid("0006")]);

        let (changes, _) = incremental_round(&server, &cursor).await;
        apply(&mut mirror, changes);
        assert!(!mirror.contains_key(&eid("0001")));
        assert!(!mirror[MASTER].contains_key(&eid("0104")));
        let (occ, gone) = occurrences(&mirror);
        assert_eq!(
            occ,
            vec![
                (utc(6, 7, 0), utc(6, 7, 30), BusyKind::Busy, series.clone()),
                (
                    utc(13, 14, 0),
                    utc(13, 14, 30),
                    BusyKind::Busy,
                    series.clone()
                ),
                (utc(15, 10, 0), utc(15, 11, 0), BusyKind::Free, uid("0002")),
                (
                    utc(16, 11, 0),
                    utc(16, 12, 0),
                    BusyKind::Tentative,
                    uid("0003")
                ),
                (utc(17, 9, 0), utc(17, 10, 0), BusyKind::Free, uid("0007")),
                (utc(17, 13, 0), utc(17, 15, 0), BusyKind::Oof, uid("0009")),
                (
                    berlin_midnight(21),
                    berlin_midnight(23),
                    BusyKind::Free,
                    uid("0004")
                ),
                (
                    berlin_midnight(28),
                    berlin_midnight(30),
                    BusyKind::Oof,
                    uid("0005")
                ),
            ]
        );
        assert_eq!(gone, vec![eid("0006")]);
    }

    #[tokio::test]
    async fn a_series_renders_as_one_object_with_one_uid_and_recurrence_ids() {
        let server = FixtureServer::delta().await;
        let (items, _) = full_round(&server).await;
        let mut mirror = Mirror::new();
        apply(&mut mirror, items);
        let series = &mirror[MASTER];
        assert_eq!(series.len(), 4);
        let text = unfold(&render_series(series).expect("live series"));
        assert!(
            text.starts_with(
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calgate//Microsoft Graph import//EN\r\n"
            ),
            "{text}"
        );
        // The cancelled exception is left out: three VEVENTs, one UID.
        assert_eq!(text.matches("BEGIN:VEVENT\r\n").count(), 3, "{text}");
        assert_eq!(
            text.matches(&format!("UID:{SERIES_UID}\r\n")).count(),
            3,
            "{text}"
        );
        assert_eq!(text.matches("UID:").count(), 3, "{text}");
        // RECURRENCE-ID is the slot the instance was generated for (originalStart),
        // also for the exception moved to 12:00.
        for day in [6, 13, 27] {
            assert!(
                text.contains(&format!("RECURRENCE-ID:203005{day:02}T070000Z\r\n")),
                "{text}"
            );
        }
        assert!(!text.contains("RECURRENCE-ID:20300520"), "{text}");
        assert!(!text.contains(&eid("0103")), "{text}");
        assert!(
            text.contains(
                "RECURRENCE-ID:20300513T070000Z\r\nDTSTART:20300513T120000Z\r\nDTEND:20300513T123000Z\r\nSUMMARY:Weekly sync (fake) - moved\r\n"
            ),
            "{text}"
        );
        assert!(text.contains("DTSTAMP:20300503T090000Z\r\n"), "{text}");
        assert!(text.contains(&format!("X-CALGATE-REMOTE-ID:{}\r\n", eid("0102"))));

        // Graph documents per-occurrence iCalUIds: then the series is named by its master.
        let mut items: Vec<Value> = series.values().cloned().collect();
        items[0]["iCalUId"] = json!("040000008200E00074C5B7101A82E00807EE0506FAKE-other");
        let text = unfold(&render(&items, &ctx()).expect("live"));
        assert_eq!(
            text.matches(&format!("UID:{MASTER}\r\n")).count(),
            3,
            "{text}"
        );

        // A single event keeps its own iCalUId and has no RECURRENCE-ID.
        let single = render_series(&mirror[&eid("0003")]).expect("live");
        let single = unfold(&single);
        assert!(single.contains(&format!("UID:{}\r\n", uid_of(PAGE3_FINAL, &eid("0003")))));
        assert!(!single.contains("RECURRENCE-ID"), "{single}");
    }

    #[test]
    fn show_as_all_day_and_cancelled_items_render_as_intended() {
        let one = |fixture: &str, n: &str| render(&[fixture_item(fixture, &eid(n))], &ctx());
        let busy = one(PAGE1, "0001").expect("live");
        assert!(busy.contains("DTSTART:20300514T080000Z\r\nDTEND:20300514T090000Z\r\n"));
        assert!(busy.contains("TRANSP:OPAQUE\r\n"), "{busy}");
        assert!(!busy.contains("STATUS:"), "{busy}");
        let free = one(PAGE1, "0002").expect("live");
        assert!(free.contains("TRANSP:TRANSPARENT\r\n"), "{free}");
        let tentative = one(PAGE3_FINAL, "0003").expect("live");
        assert!(
            tentative.contains("STATUS:TENTATIVE\r\nTRANSP:OPAQUE\r\n"),
            "{tentative}"
        );
        let oof = one(INCREMENTAL, "0009").expect("live");
        assert!(
            oof.contains("TRANSP:OPAQUE\r\nX-MICROSOFT-CDO-BUSYSTATUS:OOF\r\n"),
            "{oof}"
        );
        let declined = one(PAGE3_FINAL, "0007").expect("live");
        assert!(declined.contains("TRANSP:TRANSPARENT\r\n"), "{declined}");

        // All-day: DATE values from the local dates, whatever the zone label.
        let conference = one(PAGE3_FINAL, "0004").expect("live");
        assert!(
            conference.contains("DTSTART;VALUE=DATE:20300521\r\nDTEND;VALUE=DATE:20300523\r\n"),
            "{conference}"
        );
        let vacation = one(PAGE3_FINAL, "0005").expect("live");
        assert!(
            vacation.contains("DTSTART;VALUE=DATE:20300528\r\nDTEND;VALUE=DATE:20300530\r\n"),
            "{vacation}"
        );
        assert!(vacation.contains("X-MICROSOFT-CDO-BUSYSTATUS:OOF\r\n"));
        assert!(!vacation.contains("T000000"), "{vacation}");

        // Cancelled (though still showAs busy): nothing to store, the object goes.
        assert_eq!(one(PAGE3_FINAL, "0006"), None);
        assert_eq!(one(PAGE3_FINAL, "0103"), None);
    }

    #[test]
    fn windows_zones_give_the_same_instants_as_utc() {
        // The master, in W. Europe Standard Time: 09:00 CEST is the instances' 07:00Z slot.
        let master = fixture_body(SERIES_MASTER);
        let start = graph_time(master.get("start"), MASTER, &ctx()).expect("start");
        assert_eq!(
            start.utc,
            Utc.with_ymd_and_hms(2030, 5, 6, 7, 0, 0).unwrap()
        );
        let occurrence = fixture_item(PAGE1, &eid("0101"));
        assert_eq!(timestamp(occurrence.get("originalStart")), Some(start.utc));
        let text = unfold(&render(&[master], &ctx()).expect("live"));
        assert!(
            text.contains("DTSTART:20300506T070000Z\r\nDTEND:20300506T073000Z\r\n"),
            "{text}"
        );
        assert!(text.contains(&format!("UID:{SERIES_UID}\r\n")), "{text}");

        // Pacific Standard Time is on DST in May (UTC-7, not -8).
        let times = |text: &str| -> Vec<String> {
            unfold(text)
                .lines()
                .filter(|l| l.starts_with("DTSTART") || l.starts_with("DTEND"))
                .map(str::to_owned)
                .collect()
        };
        for (n, utc_fixture, expected) in [
            (
                "0101",
                PAGE1,
                ["DTSTART:20300506T070000Z", "DTEND:20300506T073000Z"],
            ),
            (
                "0001",
                PAGE1,
                ["DTSTART:20300514T080000Z", "DTEND:20300514T090000Z"],
            ),
            (
                "0004",
                PAGE3_FINAL,
                ["DTSTART;VALUE=DATE:20300521", "DTEND;VALUE=DATE:20300523"],
            ),
        ] {
            let pacific = render(&[fixture_item(PACIFIC, &eid(n))], &ctx()).expect("live");
            let in_utc = render(&[fixture_item(utc_fixture, &eid(n))], &ctx()).expect("live");
            assert_eq!(times(&pacific), expected, "{n}: {pacific}");
            assert_eq!(times(&pacific), times(&in_utc), "{n}");
        }
        // The occurrence alone still names its slot.
        let occ = render(&[fixture_item(PACIFIC, &eid("0101"))], &ctx()).expect("live");
        assert!(occ.contains("RECURRENCE-ID:20300506T070000Z\r\n"), "{occ}");
        // India Standard Time: UTC+05:30.
        let india = render(&[fixture_item(PACIFIC, &eid("0010"))], &ctx()).expect("live");
        assert_eq!(
            times(&india),
            ["DTSTART:20300522T090000Z", "DTEND:20300522T100000Z"]
        );
    }
}
