//! Microsoft Graph (Outlook, Microsoft 365) as a [`Provider`]: connected with
//! OAuth2, fetched with delta rounds over the indexed window, written to with
//! our `transactionId`s, our events recognised by them (Graph's delta cannot
//! expand extended properties).

use std::sync::Arc;

use serde_json::{Value, json};

use super::GraphApi;
use super::export::{self, GraphTarget, MARKER_PROPERTY};
use crate::export::ExportTarget;
use crate::ics::FeedFetch;
use crate::oauth::{OAuthEndpoints, Session};
use crate::registry::{FetchRequest, Provider};
use crate::settings::ProviderConfig;
use crate::{BoxFuture, ProviderError, ProviderKind, RemoteCalendar, RenderContext, Rendered};

/// Bookings in flight per exporting source (Outlook allows 4 concurrent
/// requests per mailbox, REFERENCE.md §3.7).
pub const EXPORT_CONCURRENCY: usize = 4;

/// Microsoft Graph, with the operator's OAuth application.
pub struct Microsoft {
    app: ProviderConfig,
    api: GraphApi,
    http: reqwest::Client,
}

impl Microsoft {
    pub fn new(app: ProviderConfig, http: reqwest::Client) -> Self {
        Microsoft {
            api: GraphApi::new(&app.api_base, http.clone()),
            app,
            http,
        }
    }
}

impl Provider for Microsoft {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Microsoft
    }

    fn oauth(&self, redirect: String) -> Option<OAuthEndpoints> {
        let app = &self.app;
        Some(
            OAuthEndpoints::microsoft("common", &app.client_id, &app.client_secret, redirect)
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
                .fetch(
                    session,
                    request.calendar,
                    request.cursor,
                    request.mode,
                    request.window,
                )
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
        Some(Arc::new(GraphTarget::new(
            self.http.clone(),
            session,
            &self.app.api_base,
            calendar,
        )))
    }

    fn export_concurrency(&self) -> usize {
        EXPORT_CONCURRENCY
    }

    fn claimed_booking(&self, tenant: &str, source: &str, item: &Value) -> Option<String> {
        item.get("transactionId")
            .and_then(Value::as_str)
            .and_then(|tx| export::booking_of_transaction(tenant, source, tx))
            .map(str::to_owned)
    }

    /// Copies lose the `transactionId`, so an item claiming a booking by it
    /// was made by one of our inserts.
    fn inserted_by_us(&self, _tenant: &str, _source: &str, _booking: &str, _item: &Value) -> bool {
        true
    }

    fn may_be_ours(&self, _tenant: &str, _source: &str, _booking: &str, _id: &str) -> bool {
        true
    }

    fn mark_ours(&self, item: &mut Value, marker: &str) {
        item["singleValueExtendedProperties"] = json!([{"id": MARKER_PROPERTY, "value": marker}]);
    }

    /// Graph copies carry none of our marks.
    fn unmark(&self, _item: &mut Value) {}
}
