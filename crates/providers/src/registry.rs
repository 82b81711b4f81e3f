//! One abstraction over every provider, and the registry built from config.
//!
//! The engines (sync, export, connect) talk to providers only through
//! [`Provider`]: how an account is connected, which calendars it has, fetching
//! a calendar's items, rendering a series as iCalendar, writing our bookings
//! back ([`ExportTarget`]) and recognising the events we wrote. Each provider
//! implements it in its own folder (`google/`, `microsoft/`, `ics/`); adding a
//! provider means adding a folder, a [`ProviderKind`] and a line in
//! [`Providers::new`].

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::export::ExportTarget;
use crate::fetch::{AllowList, FetchLimits, SafeClient};
use crate::ics::{FeedDigests, FeedFetch};
use crate::oauth::{OAuthEndpoints, Session};
use crate::settings::ProvidersConfig;
use crate::{
    BoxFuture, Cursor, FetchMode, ProviderError, ProviderKind, RemoteCalendar, RenderContext,
    Rendered,
};

/// What one fetch of a source's calendar needs.
pub struct FetchRequest<'a> {
    /// The connected account's session (providers connected by OAuth).
    pub session: Option<&'a Session>,
    /// The calendar: a provider's calendar id, or a feed's URL.
    pub calendar: &'a str,
    pub cursor: &'a Cursor,
    pub mode: FetchMode,
    /// What the last applied listing looked like (providers that keep digests).
    pub known: Option<FeedDigests>,
    /// The indexed window, for providers that list a time range.
    pub window: (DateTime<Utc>, DateTime<Utc>),
}

impl<'a> FetchRequest<'a> {
    /// The session of a provider that connects accounts, or why there is none.
    pub fn connected(&self) -> Result<&'a Session, ProviderError> {
        self.session.ok_or_else(|| {
            ProviderError::Reauth("the account is not connected yet; use /oauth/…/start".into())
        })
    }
}

/// What the engines need from a provider, whatever its wire format.
pub trait Provider: Send + Sync {
    fn kind(&self) -> ProviderKind;

    /// The OAuth endpoints an account is connected with, redirecting to
    /// `redirect`; `None` when there is no account to connect (an iCal URL).
    fn oauth(&self, redirect: String) -> Option<OAuthEndpoints>;

    /// The calendars of a connected account, to pick from.
    fn list_calendars<'a>(
        &'a self,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<Vec<RemoteCalendar>, ProviderError>>;

    /// Whether a calendar address could ever be fetched, checked when a source
    /// is created (an iCal URL whose address the operator's rules refuse).
    fn check_calendar<'a>(
        &'a self,
        _calendar: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async { Ok(()) })
    }

    /// The calendar's items: everything, or the changes since the cursor.
    fn fetch<'a>(
        &'a self,
        request: FetchRequest<'a>,
    ) -> BoxFuture<'a, Result<FeedFetch, ProviderError>>;

    /// Whether fetches compare the listing with the last one by digests the
    /// sync engine keeps between runs ([`FetchRequest::known`]).
    fn keeps_digests(&self) -> bool {
        false
    }

    /// One series of items as one iCalendar object.
    fn render(&self, items: &[Value], ctx: &RenderContext) -> Rendered;

    /// The write client of a calendar; `None` when bookings cannot be exported there.
    fn export_target(&self, session: Arc<Session>, calendar: &str)
    -> Option<Arc<dyn ExportTarget>>;

    /// The id an insert of `event` gives it, when the provider lets us choose
    /// ids (then an insert repeated after a lost answer finds its event).
    fn chosen_event_id(&self, _event: &crate::export::ExportEvent) -> Option<String> {
        None
    }

    /// Bookings reconciled at once per exporting source (the provider's limits).
    fn export_concurrency(&self) -> usize {
        4
    }

    /// The booking of `tenant` an imported item says it is the exported event
    /// of, by the marks our export puts on events.
    fn claimed_booking(&self, tenant: &str, source: &str, item: &Value) -> Option<String>;

    /// Whether an item claiming `booking`, though not the booking's exported
    /// event, was made by one of our own inserts (a stray to delete) rather
    /// than being a person's copy of our event (theirs, left alone).
    fn inserted_by_us(&self, tenant: &str, source: &str, booking: &str, item: &Value) -> bool;

    /// Whether an event id found by our marker may be one our inserts made
    /// (a person's copy keeps the marker on some providers).
    fn may_be_ours(&self, tenant: &str, source: &str, booking: &str, id: &str) -> bool;

    /// Marks an item as our exported event the way rendering reads it, so it
    /// is rendered transparent.
    fn mark_ours(&self, item: &mut Value, marker: &str);

    /// Takes our marks off a person's copy, so it blocks time like their events.
    fn unmark(&self, item: &mut Value);
}

/// The providers this gateway talks to, by kind: iCal URLs always, Google
/// and Microsoft when their OAuth application is configured.
pub struct Providers {
    by_kind: HashMap<ProviderKind, Arc<dyn Provider>>,
    /// For the providers' APIs and OAuth token requests.
    api: reqwest::Client,
}

impl Providers {
    /// `allow`: networks feed URLs may reach although private (CIDR strings).
    pub fn new(apps: &ProvidersConfig, allow: &[String]) -> Result<Providers, ProviderError> {
        crate::install_crypto_provider();
        let allow = AllowList::parse(allow).map_err(ProviderError::Permanent)?;
        let feeds = SafeClient::new(allow, FetchLimits::default())?;
        // For the providers' APIs (operator-configured endpoints, not user input).
        let api = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ProviderError::Permanent(format!("HTTP client: {e}")))?;
        let mut by_kind: HashMap<ProviderKind, Arc<dyn Provider>> = HashMap::new();
        by_kind.insert(ProviderKind::Ics, Arc::new(crate::ics::Ics::new(feeds)));
        if let Some(app) = &apps.google {
            by_kind.insert(
                ProviderKind::Google,
                Arc::new(crate::google::Google::new(app.clone(), api.clone())),
            );
        }
        if let Some(app) = &apps.microsoft {
            by_kind.insert(
                ProviderKind::Microsoft,
                Arc::new(crate::microsoft::Microsoft::new(app.clone(), api.clone())),
            );
        }
        Ok(Providers { by_kind, api })
    }

    /// The client for the providers' APIs (operator-configured endpoints, not
    /// user input): OAuth token requests use it too.
    pub fn http(&self) -> &reqwest::Client {
        &self.api
    }

    /// The provider of `kind`, when it is configured.
    pub fn get(&self, kind: ProviderKind) -> Option<&Arc<dyn Provider>> {
        self.by_kind.get(&kind)
    }
}
