//! Writing bookings into external calendars, whatever the provider: what an
//! exported event says ([`ExportEvent`], built from a booking and the source's
//! privacy), the markers that let imports and crash recovery recognise it, and
//! the write client every provider implements ([`ExportTarget`]: insert,
//! patch, delete, find by marker). The clients themselves live in each
//! provider's folder (`google::export`, `microsoft::export`); they share the
//! authorised request helper here: the bearer token of the source's session,
//! one forced refresh and one replay on a 401, errors as [`ProviderError`] in
//! the terms the exporter acts on (retry, park, reauth).

use std::sync::Arc;

use chrono_tz::Tz;
use http::{Method, StatusCode};
use serde_json::Value;

use crate::BoxFuture;
use crate::model::{Booking, BookingStatus, BookingTime, ExportPrivacy};
use crate::oauth::Session;
use crate::{ProviderError, TokenSource, api_transport_error, status_error};

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

/// Writing bookings' events into one external calendar.
pub trait ExportTarget: Send + Sync {
    /// Creates the event, idempotently where the provider allows it.
    fn insert<'a>(&'a self, ev: &'a ExportEvent) -> BoxFuture<'a, Result<Inserted, ProviderError>>;
    fn patch<'a>(
        &'a self,
        id: &'a str,
        ev: &'a ExportEvent,
    ) -> BoxFuture<'a, Result<Patched, ProviderError>>;
    /// Deletes the event; an event already gone is success.
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// Ids of live events carrying the marker (normally none or one).
    fn find_by_marker<'a>(
        &'a self,
        marker: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, ProviderError>>;
}

/// Implements [`ExportTarget`] for a client whose inherent async methods
/// `insert_event`, `patch_event`, `delete_event` and `find_events` do the work
/// (the trait boxes their futures so targets can be trait objects).
macro_rules! export_target_by_inherent_methods {
    ($client:ty) => {
        impl $crate::export::ExportTarget for $client {
            fn insert<'a>(
                &'a self,
                ev: &'a $crate::export::ExportEvent,
            ) -> $crate::BoxFuture<'a, Result<$crate::export::Inserted, $crate::ProviderError>>
            {
                Box::pin(self.insert_event(ev))
            }
            fn patch<'a>(
                &'a self,
                id: &'a str,
                ev: &'a $crate::export::ExportEvent,
            ) -> $crate::BoxFuture<'a, Result<$crate::export::Patched, $crate::ProviderError>> {
                Box::pin(self.patch_event(id, ev))
            }
            fn delete<'a>(
                &'a self,
                id: &'a str,
            ) -> $crate::BoxFuture<'a, Result<(), $crate::ProviderError>> {
                Box::pin(self.delete_event(id))
            }
            fn find_by_marker<'a>(
                &'a self,
                marker: &'a str,
            ) -> $crate::BoxFuture<'a, Result<Vec<String>, $crate::ProviderError>> {
                Box::pin(self.find_events(marker))
            }
        }
    };
}
pub(crate) use export_target_by_inherent_methods;

/// An authorised HTTP client for one API base.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) http: reqwest::Client,
    pub(crate) session: Arc<Session>,
    pub(crate) base: String,
    pub(crate) provider: &'static str,
}

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    retry_after: Option<http::HeaderValue>,
    body: bytes::Bytes,
}

impl Answer {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn error(&self) -> ProviderError {
        status_error(self.status, self.retry_after.as_ref(), &self.text())
    }

    pub(crate) fn json(&self) -> Result<Value, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ProviderError::retryable(format!("unreadable answer from the provider: {e}"))
        })
    }

    pub(crate) fn gone(&self) -> bool {
        matches!(self.status.as_u16(), 404 | 410)
    }

    /// What a PATCH of an event answered.
    pub(crate) fn patched(&self) -> Result<Patched, ProviderError> {
        match self.status.as_u16() {
            200..=299 => Ok(Patched::Done),
            _ if self.gone() => Ok(Patched::Gone),
            _ => Err(self.error()),
        }
    }
}

impl Api {
    pub(crate) fn new(
        http: reqwest::Client,
        session: Arc<Session>,
        base: &str,
        provider: &'static str,
    ) -> Self {
        Api {
            http,
            session,
            base: base.trim_end_matches('/').to_owned(),
            provider,
        }
    }

    /// Sends with the bearer token; on 401 one forced refresh and one replay.
    pub(crate) async fn send(
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
    pub(crate) async fn delete(&self, url: reqwest::Url) -> Result<(), ProviderError> {
        let answer = self.send(Method::DELETE, url, None).await?;
        match answer.status.as_u16() {
            200..=299 => Ok(()),
            _ if answer.gone() => Ok(()),
            _ => Err(answer.error()),
        }
    }

    /// The items of a listing (`field` holds the array), the calendar's absence
    /// (404/410) reported as such.
    pub(crate) async fn list(
        &self,
        url: reqwest::Url,
        field: &str,
    ) -> Result<Vec<Value>, ProviderError> {
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

    pub(crate) fn url(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<reqwest::Url, ProviderError> {
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

pub(crate) fn id_of(v: &Value) -> Result<String, ProviderError> {
    v.get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ProviderError::retryable("the provider answered a create without an id"))
}

pub(crate) fn calendar_gone(provider: &str, answer: &Answer) -> ProviderError {
    ProviderError::Permanent(format!(
        "{provider} answered HTTP {} for the target calendar: it was deleted or this account lost access; pick another calendar (GET …/sources/{{id}}/calendars) or reconnect",
        answer.status
    ))
}

/// One booking as an event of one exporting source.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportEvent {
    /// `{tenant}/{booking id}`: Google `extendedProperties.private.gatewayBookingId`,
    /// Graph single-value extended property.
    pub marker: String,
    pub source: String,
    /// The tenant and booking, and how many times the booking's event was
    /// created in this source before: providers derive their create
    /// idempotency keys from them (a create after a delete is a new one).
    pub tenant: String,
    pub booking: String,
    pub generation: u32,
    pub summary: String,
    pub description: Option<String>,
    pub location: Option<String>,
    pub time: BookingTime,
    /// The zone the booking is shown in (all-day dates are in it).
    pub zone: Tz,
    pub tentative: bool,
    /// The booking in the gateway's API.
    pub link: String,
}

/// The marker value of a booking.
pub fn marker(tenant: &str, booking: &str) -> String {
    format!("{tenant}/{booking}")
}

/// The booking id a marker names, if it is one of `tenant`'s.
pub fn booking_of_marker<'a>(tenant: &str, marker: &'a str) -> Option<&'a str> {
    marker
        .strip_prefix(tenant)?
        .strip_prefix('/')
        .filter(|id| !id.is_empty())
}

/// Builds the event for `booking` as exported to `source`.
pub fn build(
    booking: &Booking,
    source: &str,
    privacy: ExportPrivacy,
    public_url: &str,
    generation: u32,
) -> ExportEvent {
    let link = format!(
        "{}/api/v1/tenants/{}/bookings/{}",
        public_url.trim_end_matches('/'),
        booking.tenant,
        booking.id
    );
    let (summary, description, location) = match privacy {
        ExportPrivacy::Busy => ("Busy".to_owned(), Some(format!("Booking: {link}")), None),
        ExportPrivacy::Full => {
            let summary = match booking.service.as_deref() {
                Some(service) if !service.is_empty() && service != booking.title => {
                    format!("{} ({service})", booking.title)
                }
                _ => booking.title.clone(),
            };
            let mut lines = Vec::new();
            if let Some(c) = &booking.customer {
                if let Some(name) = &c.name {
                    lines.push(format!("Customer: {name}"));
                }
                if let Some(email) = &c.email {
                    lines.push(format!("Email: {email}"));
                }
                if let Some(phone) = &c.phone {
                    lines.push(format!("Phone: {phone}"));
                }
            }
            if let Some(notes) = booking.notes.as_deref().filter(|n| !n.is_empty()) {
                lines.push(format!("Notes: {notes}"));
            }
            if !lines.is_empty() {
                lines.push(String::new());
            }
            lines.push(format!("Booking: {link}"));
            (summary, Some(lines.join("\n")), booking.location.clone())
        }
    };
    ExportEvent {
        marker: marker(&booking.tenant, &booking.id),
        source: source.to_owned(),
        tenant: booking.tenant.clone(),
        booking: booking.id.clone(),
        generation,
        summary,
        description,
        location,
        time: booking.time.clone(),
        zone: booking.time_zone,
        tentative: booking.status == BookingStatus::Tentative,
        link,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_name_the_tenant() {
        assert_eq!(booking_of_marker("salon", "salon/b1"), Some("b1"));
        assert_eq!(booking_of_marker("salon", "salonx/b1"), None);
        assert_eq!(booking_of_marker("salon", "salon/"), None);
    }
}
