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
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // Graph URLs carry ids and delta tokens: leave them out.
    let e = e.without_url();
    let mut detail = Vec::new();
    let mut cur = std::error::Error::source(&e);
    while let Some(err) = cur {
        detail.push(err.to_string());
        cur = err.source();
    }
    let detail = if detail.is_empty() {
        e.to_string()
    } else {
        detail.join(": ")
    };
    ProviderError::retryable(format!("Microsoft Graph: {what} ({detail})"))
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
}
