//! Google Calendar as a [`Provider`]: connected with OAuth2, fetched with sync
//! tokens, written to with our own event ids, our events recognised by the
//! `gatewayBookingId` private extended property.

use std::sync::Arc;

use serde_json::{Value, json};

use super::export::{self, GoogleTarget, SOURCE_KEY};
use super::{BOOKING_MARKER, GoogleApi};
use crate::export::{ExportTarget, booking_of_marker};
use crate::ics::FeedFetch;
use crate::oauth::{OAuthEndpoints, Session};
use crate::registry::{FetchRequest, Provider};
use crate::settings::ProviderConfig;
use crate::{BoxFuture, ProviderError, ProviderKind, RemoteCalendar, RenderContext, Rendered};

/// Bookings in flight per exporting Google source.
pub const EXPORT_CONCURRENCY: usize = 8;

/// Google Calendar, with the operator's OAuth application.
pub struct Google {
    app: ProviderConfig,
    api: GoogleApi,
    http: reqwest::Client,
}

impl Google {
    pub fn new(app: ProviderConfig, http: reqwest::Client) -> Self {
        Google {
            api: GoogleApi::new(&app.api_base, http.clone()),
            app,
            http,
        }
    }
}

fn private_str<'a>(item: &'a Value, key: &str) -> Option<&'a str> {
    item.pointer(&format!("/extendedProperties/private/{key}"))
        .and_then(Value::as_str)
}

impl Provider for Google {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Google
    }

    fn oauth(&self, redirect: String) -> Option<OAuthEndpoints> {
        let app = &self.app;
        Some(
            OAuthEndpoints::google(&app.client_id, &app.client_secret, redirect)
                .with_endpoints(&app.auth_url, &app.token_url),
        )
    }

    fn list_calendars<'a>(
        &'a self,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<Vec<RemoteCalendar>, ProviderError>> {
        Box::pin(self.api.list_calendars(session))
    }

    fn fetch<'a>(
        &'a self,
        request: FetchRequest<'a>,
    ) -> BoxFuture<'a, Result<FeedFetch, ProviderError>> {
        Box::pin(async move {
            let session = request.connected()?;
            let fetched = self
                .api
                .fetch(session, request.calendar, request.cursor, request.mode)
                .await?;
            Ok(FeedFetch::of(fetched))
        })
    }

    fn render(&self, items: &[Value], ctx: &RenderContext) -> Rendered {
        super::render(items, ctx)
    }

    fn export_target(
        &self,
        session: Arc<Session>,
        calendar: &str,
    ) -> Option<Arc<dyn ExportTarget>> {
        Some(Arc::new(GoogleTarget::new(
            self.http.clone(),
            session,
            &self.app.api_base,
            calendar,
        )))
    }

    fn chosen_event_id(&self, ev: &crate::export::ExportEvent) -> Option<String> {
        Some(export::event_id(
            &ev.tenant,
            &ev.source,
            &ev.booking,
            ev.generation,
        ))
    }

    fn export_concurrency(&self) -> usize {
        EXPORT_CONCURRENCY
    }

    fn claimed_booking(&self, tenant: &str, _source: &str, item: &Value) -> Option<String> {
        super::booking_marker(item)
            .and_then(|m| booking_of_marker(tenant, m))
            .map(str::to_owned)
    }

    /// Ours when exported from this source under an id of our scheme for the
    /// booking; a duplicated event keeps the properties but gets Google's id.
    fn inserted_by_us(&self, tenant: &str, source: &str, booking: &str, item: &Value) -> bool {
        let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
        private_str(item, SOURCE_KEY) == Some(source)
            && export::is_event_id(tenant, source, booking, id)
    }

    fn may_be_ours(&self, tenant: &str, source: &str, booking: &str, id: &str) -> bool {
        export::is_event_id(tenant, source, booking, id)
    }

    fn mark_ours(&self, item: &mut Value, marker: &str) {
        if item
            .get("extendedProperties")
            .is_none_or(|e| !e.is_object())
        {
            item["extendedProperties"] = json!({});
        }
        if item["extendedProperties"]
            .get("private")
            .is_none_or(|p| !p.is_object())
        {
            item["extendedProperties"]["private"] = json!({});
        }
        item["extendedProperties"]["private"][BOOKING_MARKER] = json!(marker);
    }

    fn unmark(&self, item: &mut Value) {
        if let Some(private) = item
            .pointer_mut("/extendedProperties/private")
            .and_then(Value::as_object_mut)
        {
            private.remove(BOOKING_MARKER);
        }
    }
}
