//! Provider write clients: [`ExportTarget`] (insert, patch, delete, find by
//! marker) for Google Calendar v3 (REFERENCE.md §2.4) and Microsoft Graph
//! (§3.5). Requests carry the bearer token of the source's session; a 401 is
//! answered by one forced refresh and one replay. Errors come back as
//! [`ProviderError`] in the terms the exporter acts on (retry, park, reauth).

use std::future::Future;
use std::sync::Arc;

use chrono::SecondsFormat;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::event::ExportEvent;
use crate::model::BookingTime;
use crate::providers::oauth::Session;
use crate::providers::{
    ProviderError, TokenSource, api_transport_error, path_segment, status_error,
};

/// Graph single-value extended property of our marker (PS_PUBLIC_STRINGS set).
pub const GRAPH_MARKER_PROPERTY: &str =
    "String {00020329-0000-0000-C000-000000000046} Name gatewayBookingId";
/// Google `extendedProperties.private` keys.
pub const GOOGLE_MARKER: &str = crate::providers::google::BOOKING_MARKER;
pub const GOOGLE_SOURCE_KEY: &str = "gatewaySource";

/// Whether a retryable error is the provider throttling us (429, or Google's
/// 403 rate-limit reasons), rather than one request failing.
pub fn is_throttled(e: &ProviderError) -> bool {
    match e {
        ProviderError::Retryable { message, .. } => {
            message.starts_with("HTTP 429")
                || (message.starts_with("HTTP 403") && message.contains("ateLimitExceeded"))
        }
        _ => false,
    }
}

/// What a patch found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patched {
    Done,
    /// The event is gone (404/410): create it again.
    Gone,
}

/// What an insert found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The event was created; its id.
    Created(String),
    /// The provider had this event already (an insert repeated after its
    /// answer was lost): its id. Its content may be older than the booking.
    Existing(String),
}

/// Writing one booking's event into an external calendar.
pub trait ExportTarget: Send + Sync {
    /// Creates the event, idempotently where the provider allows it.
    fn insert(
        &self,
        ev: &ExportEvent,
    ) -> impl Future<Output = Result<Inserted, ProviderError>> + Send;
    fn patch(
        &self,
        id: &str,
        ev: &ExportEvent,
    ) -> impl Future<Output = Result<Patched, ProviderError>> + Send;
    /// Deletes the event; an event already gone is success.
    fn delete(&self, id: &str) -> impl Future<Output = Result<(), ProviderError>> + Send;
    /// Ids of live events carrying the marker (normally none or one).
    fn find_by_marker(
        &self,
        marker: &str,
    ) -> impl Future<Output = Result<Vec<String>, ProviderError>> + Send;
}

/// A connected source's calendar, for either provider.
#[derive(Clone)]
pub enum Target {
    Google(GoogleTarget),
    Graph(GraphTarget),
}

impl ExportTarget for Target {
    async fn insert(&self, ev: &ExportEvent) -> Result<Inserted, ProviderError> {
        match self {
            Target::Google(t) => t.insert(ev).await,
            Target::Graph(t) => t.insert(ev).await,
        }
    }
    async fn patch(&self, id: &str, ev: &ExportEvent) -> Result<Patched, ProviderError> {
        match self {
            Target::Google(t) => t.patch(id, ev).await,
            Target::Graph(t) => t.patch(id, ev).await,
        }
    }
    async fn delete(&self, id: &str) -> Result<(), ProviderError> {
        match self {
            Target::Google(t) => t.delete(id).await,
            Target::Graph(t) => t.delete(id).await,
        }
    }
    async fn find_by_marker(&self, marker: &str) -> Result<Vec<String>, ProviderError> {
        match self {
            Target::Google(t) => t.find_by_marker(marker).await,
            Target::Graph(t) => t.find_by_marker(marker).await,
        }
    }
}

/// An authorised HTTP client for one API base.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    session: Arc<Session>,
    base: String,
    provider: &'static str,
}

struct Answer {
    status: StatusCode,
    retry_after: Option<http::HeaderValue>,
    body: bytes::Bytes,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn error(&self) -> ProviderError {
        status_error(self.status, self.retry_after.as_ref(), &self.text())
    }

    fn json(&self) -> Result<Value, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ProviderError::retryable(format!("unreadable answer from the provider: {e}"))
        })
    }

    fn gone(&self) -> bool {
        matches!(self.status.as_u16(), 404 | 410)
    }

    /// What a PATCH of an event answered.
    fn patched(&self) -> Result<Patched, ProviderError> {
        match self.status.as_u16() {
            200..=299 => Ok(Patched::Done),
            _ if self.gone() => Ok(Patched::Gone),
            _ => Err(self.error()),
        }
    }
}

impl Api {
    /// Sends with the bearer token; on 401 one forced refresh and one replay.
    async fn send(
        &self,
        method: Method,
        url: reqwest::Url,
        body: Option<&Value>,
    ) -> Result<Answer, ProviderError> {
        let mut token = self.session.access_token(false).await?;
        let mut refreshed = false;
        loop {
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(&token)
                .header(http::header::ACCEPT, "application/json");
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| api_transport_error(self.provider, e))?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED {
                if refreshed {
                    return Err(ProviderError::Reauth(format!(
                        "{} rejected a freshly refreshed access token (HTTP 401)",
                        self.provider
                    )));
                }
                token = self.session.access_token(true).await?;
                refreshed = true;
                continue;
            }
            let retry_after = resp.headers().get(http::header::RETRY_AFTER).cloned();
            let body = resp
                .bytes()
                .await
                .map_err(|e| api_transport_error(self.provider, e))?;
            return Ok(Answer {
                status,
                retry_after,
                body,
            });
        }
    }

    /// DELETE of an event; one already gone (404/410) counts as deleted.
    async fn delete(&self, url: reqwest::Url) -> Result<(), ProviderError> {
        let answer = self.send(Method::DELETE, url, None).await?;
        match answer.status.as_u16() {
            200..=299 => Ok(()),
            _ if answer.gone() => Ok(()),
            _ => Err(answer.error()),
        }
    }

    /// The items of a listing (`field` holds the array), the calendar's absence
    /// (404/410) reported as such.
    async fn list(&self, url: reqwest::Url, field: &str) -> Result<Vec<Value>, ProviderError> {
        let answer = self.send(Method::GET, url, None).await?;
        match answer.status.as_u16() {
            200..=299 => {}
            404 | 410 => return Err(calendar_gone(self.provider, &answer)),
            _ => return Err(answer.error()),
        }
        Ok(match answer.json()?.get_mut(field).map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        })
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<reqwest::Url, ProviderError> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base)).map_err(|e| {
            ProviderError::Permanent(format!(
                "the {} API base URL {:?} is not usable: {e}; fix api_base in [providers]",
                self.provider, self.base
            ))
        })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }
}

fn id_of(v: &Value) -> Result<String, ProviderError> {
    v.get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ProviderError::retryable("the provider answered a create without an id"))
}

fn calendar_gone(provider: &str, answer: &Answer) -> ProviderError {
    ProviderError::Permanent(format!(
        "{provider} answered HTTP {} for the target calendar: it was deleted or this account lost access; pick another calendar (GET …/sources/{{id}}/calendars) or reconnect",
        answer.status
    ))
}

// ---------------------------------------------------------------------------------------
// Google Calendar v3

#[derive(Clone)]
pub struct GoogleTarget {
    api: Api,
    calendar: String,
}

impl GoogleTarget {
    pub fn new(http: reqwest::Client, session: Arc<Session>, base: &str, calendar: &str) -> Self {
        GoogleTarget {
            api: Api {
                http,
                session,
                base: base.trim_end_matches('/').to_owned(),
                provider: "Google Calendar",
            },
            calendar: calendar.to_owned(),
        }
    }

    fn events_path(&self) -> String {
        format!("/calendars/{}/events", path_segment(&self.calendar))
    }
}

/// The event resource (nulls clear fields on patch; they are left out on insert).
pub fn google_body(ev: &ExportEvent) -> Value {
    let (start, end) = match &ev.time {
        BookingTime::Timed { start, end } => {
            let at = |t: &chrono::DateTime<chrono::FixedOffset>| {
                json!({
                    "dateTime": t.with_timezone(&ev.zone).to_rfc3339_opts(SecondsFormat::Secs, false),
                    "timeZone": ev.zone.name(),
                })
            };
            (at(start), at(end))
        }
        BookingTime::AllDay { start, end } => (
            json!({"date": start.format("%Y-%m-%d").to_string()}),
            json!({"date": end.format("%Y-%m-%d").to_string()}),
        ),
    };
    json!({
        "summary": ev.summary,
        "description": ev.description,
        "location": ev.location,
        "start": start,
        "end": end,
        "status": if ev.tentative { "tentative" } else { "confirmed" },
        "transparency": "opaque",
        "extendedProperties": {"private": {
            GOOGLE_MARKER: ev.marker,
            GOOGLE_SOURCE_KEY: ev.source,
        }},
        "source": {"title": "Booking", "url": ev.link},
    })
}

fn without_nulls(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, x| !x.is_null());
    }
    v
}

impl ExportTarget for GoogleTarget {
    /// With our own event id (§2.4): a repeat of an insert that went through
    /// gets 409 `duplicate`, and the event is then looked up by that id.
    async fn insert(&self, ev: &ExportEvent) -> Result<Inserted, ProviderError> {
        let url = self
            .api
            .url(&self.events_path(), &[("sendUpdates", "none")])?;
        let mut body = without_nulls(google_body(ev));
        body["id"] = json!(ev.google_id);
        let answer = self.api.send(Method::POST, url, Some(&body)).await?;
        match answer.status.as_u16() {
            200..=299 => id_of(&answer.json()?).map(Inserted::Created),
            409 => {
                let path = format!("{}/{}", self.events_path(), path_segment(&ev.google_id));
                let found = self
                    .api
                    .send(Method::GET, self.api.url(&path, &[])?, None)
                    .await?;
                match found.status.as_u16() {
                    200..=299 => id_of(&found.json()?).map(Inserted::Existing),
                    // Taken by an event we cannot see: nothing to reconcile with.
                    _ => Err(ProviderError::Permanent(format!(
                        "Google Calendar refused event id {} as a duplicate but answered HTTP {} for it",
                        ev.google_id, found.status
                    ))),
                }
            }
            404 | 410 => Err(calendar_gone(self.api.provider, &answer)),
            _ => Err(answer.error()),
        }
    }

    async fn patch(&self, id: &str, ev: &ExportEvent) -> Result<Patched, ProviderError> {
        let path = format!("{}/{}", self.events_path(), path_segment(id));
        let url = self.api.url(&path, &[("sendUpdates", "none")])?;
        self.api
            .send(Method::PATCH, url, Some(&google_body(ev)))
            .await?
            .patched()
    }

    async fn delete(&self, id: &str) -> Result<(), ProviderError> {
        let path = format!("{}/{}", self.events_path(), path_segment(id));
        let url = self.api.url(&path, &[("sendUpdates", "none")])?;
        self.api.delete(url).await
    }

    async fn find_by_marker(&self, marker: &str) -> Result<Vec<String>, ProviderError> {
        let filter = format!("{GOOGLE_MARKER}={marker}");
        let url = self.api.url(
            &self.events_path(),
            &[
                ("privateExtendedProperty", filter.as_str()),
                ("showDeleted", "false"),
                ("maxResults", "50"),
            ],
        )?;
        Ok(self
            .api
            .list(url, "items")
            .await?
            .iter()
            .filter(|e| e.get("status").and_then(Value::as_str) != Some("cancelled"))
            .filter_map(|e| e.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect())
    }
}

// ---------------------------------------------------------------------------------------
// Microsoft Graph

#[derive(Clone)]
pub struct GraphTarget {
    api: Api,
    /// Empty: the default calendar.
    calendar: String,
}

impl GraphTarget {
    pub fn new(http: reqwest::Client, session: Arc<Session>, base: &str, calendar: &str) -> Self {
        GraphTarget {
            api: Api {
                http,
                session,
                base: base.trim_end_matches('/').to_owned(),
                provider: "Microsoft Graph",
            },
            calendar: calendar.to_owned(),
        }
    }

    fn calendar_path(&self) -> String {
        if self.calendar.is_empty() {
            "/me/calendar".to_owned()
        } else {
            format!("/me/calendars/{}", path_segment(&self.calendar))
        }
    }
}

/// The event resource without `transactionId` (which cannot change after create).
pub fn graph_body(ev: &ExportEvent) -> Value {
    let zone = ev.zone.name();
    let (start, end, all_day) = match &ev.time {
        BookingTime::Timed { start, end } => {
            let at = |t: &chrono::DateTime<chrono::FixedOffset>| {
                json!({
                    "dateTime": t.with_timezone(&ev.zone).naive_local().format("%Y-%m-%dT%H:%M:%S").to_string(),
                    "timeZone": zone,
                })
            };
            (at(start), at(end), false)
        }
        BookingTime::AllDay { start, end } => {
            let at = |d: &chrono::NaiveDate| json!({"dateTime": format!("{}T00:00:00", d.format("%Y-%m-%d")), "timeZone": zone});
            (at(start), at(end), true)
        }
    };
    json!({
        "subject": ev.summary,
        "body": {"contentType": "text", "content": ev.description.clone().unwrap_or_default()},
        "location": {"displayName": ev.location.clone().unwrap_or_default()},
        "start": start,
        "end": end,
        "isAllDay": all_day,
        "showAs": if ev.tentative { "tentative" } else { "busy" },
        "isReminderOn": false,
        "singleValueExtendedProperties": [{"id": GRAPH_MARKER_PROPERTY, "value": ev.marker}],
    })
}

impl ExportTarget for GraphTarget {
    /// Graph answers a repeated `transactionId` with the event made first
    /// (§3.5), as a creation.
    async fn insert(&self, ev: &ExportEvent) -> Result<Inserted, ProviderError> {
        let url = self
            .api
            .url(&format!("{}/events", self.calendar_path()), &[])?;
        let mut body = graph_body(ev);
        body["transactionId"] = json!(ev.transaction_id);
        let answer = self.api.send(Method::POST, url, Some(&body)).await?;
        match answer.status.as_u16() {
            200..=299 => id_of(&answer.json()?).map(Inserted::Created),
            404 | 410 => Err(calendar_gone(self.api.provider, &answer)),
            _ => Err(answer.error()),
        }
    }

    async fn patch(&self, id: &str, ev: &ExportEvent) -> Result<Patched, ProviderError> {
        let url = self
            .api
            .url(&format!("/me/events/{}", path_segment(id)), &[])?;
        self.api
            .send(Method::PATCH, url, Some(&graph_body(ev)))
            .await?
            .patched()
    }

    async fn delete(&self, id: &str) -> Result<(), ProviderError> {
        let url = self
            .api
            .url(&format!("/me/events/{}", path_segment(id)), &[])?;
        self.api.delete(url).await
    }

    async fn find_by_marker(&self, marker: &str) -> Result<Vec<String>, ProviderError> {
        let filter = format!(
            "singleValueExtendedProperties/any(ep: ep/id eq '{GRAPH_MARKER_PROPERTY}' and ep/value eq '{}')",
            marker.replace('\'', "''")
        );
        let url = self.api.url(
            &format!("{}/events", self.calendar_path()),
            &[("$filter", filter.as_str())],
        )?;
        Ok(self
            .api
            .list(url, "value")
            .await?
            .iter()
            .filter_map(|e| e.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect())
    }
}
