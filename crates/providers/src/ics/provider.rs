//! iCal URLs as a [`Provider`]: fetched through the SSRF-safe client, split
//! into one item per UID, compared with the last feed by digests; nothing to
//! connect and nothing to export to.

use std::sync::Arc;

use serde_json::Value;

use crate::export::ExportTarget;
use crate::fetch::SafeClient;
use crate::oauth::{OAuthEndpoints, Session};
use crate::registry::{FetchRequest, Provider};
use crate::{BoxFuture, ProviderError, ProviderKind, RemoteCalendar, RenderContext, Rendered};

use super::FeedFetch;

/// Subscribed iCalendar feeds.
pub struct Ics {
    client: SafeClient,
}

impl Ics {
    pub fn new(client: SafeClient) -> Self {
        Ics { client }
    }
}

impl Provider for Ics {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Ics
    }

    fn oauth(&self, _redirect: String) -> Option<OAuthEndpoints> {
        None
    }

    fn list_calendars<'a>(
        &'a self,
        _session: &'a Session,
    ) -> BoxFuture<'a, Result<Vec<RemoteCalendar>, ProviderError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn check_calendar<'a>(&'a self, calendar: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.client.check_url(calendar))
    }

    fn fetch<'a>(
        &'a self,
        request: FetchRequest<'a>,
    ) -> BoxFuture<'a, Result<FeedFetch, ProviderError>> {
        // After a permanent redirect the feed lives at the new URL.
        let url = request.cursor.url.as_deref().unwrap_or(request.calendar);
        Box::pin(super::fetch_with_digests(
            &self.client,
            url,
            request.cursor,
            request.mode,
            request.known,
        ))
    }

    fn keeps_digests(&self) -> bool {
        true
    }

    fn render(&self, items: &[Value], ctx: &RenderContext) -> Rendered {
        super::render(items, ctx)
    }

    fn export_target(
        &self,
        _session: Arc<Session>,
        _calendar: &str,
    ) -> Option<Arc<dyn ExportTarget>> {
        None
    }

    fn claimed_booking(&self, _tenant: &str, _source: &str, _item: &Value) -> Option<String> {
        None
    }

    fn inserted_by_us(&self, _tenant: &str, _source: &str, _booking: &str, _item: &Value) -> bool {
        false
    }

    fn may_be_ours(&self, _tenant: &str, _source: &str, _booking: &str, _id: &str) -> bool {
        false
    }

    fn mark_ours(&self, _item: &mut Value, _marker: &str) {}

    fn unmark(&self, _item: &mut Value) {}
}
