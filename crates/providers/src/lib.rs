//! External calendar providers: Google Calendar, Microsoft Graph and iCal URLs.
//!
//! A provider turns one remote calendar into *items* (its events as the provider
//! sends them, kept verbatim in a mirror) and renders a *series* of items (a
//! recurring master with its exceptions, or a single event) as one iCalendar
//! object, which the rest of the gateway stores, indexes and serves like any
//! other calendar object. Scheduling, retries, the mirror, logs and status live
//! in the gateway's sync engine; OAuth tokens in [`oauth`]; safe outbound HTTP in
//! [`fetch`].
//!
//! Every provider lives in its own folder and implements [`Provider`]; the
//! engines reach them through the [`Providers`] registry built from config.
//! Writing bookings back is [`export`]'s.
//!
//! Nothing here writes to the store or knows about CalDAV.

// The domain types and the iCalendar codec, under the paths these modules use.
use calgate_model::{ical, model, settings};

pub mod export;
pub mod fetch;
pub mod google;
pub mod ics;
pub mod microsoft;
pub mod oauth;
pub mod registry;

pub use registry::{FetchRequest, Provider, Providers};

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use crate::model::{Cursor, ProviderKind};
use serde::Serialize;

/// Why a fetch failed, in the terms the sync engine acts on.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Try again later (429, 5xx, timeouts, connection errors); honour the delay
    /// when the provider gave one.
    #[error("temporarily unavailable: {message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The sync cursor is no longer valid (Google/Graph 410): drop it and fetch
    /// everything again.
    #[error("the provider invalidated the sync cursor; a full sync is needed")]
    CursorExpired,
    /// The grant is gone (revoked refresh token, `invalid_grant`): a person must
    /// connect the account again.
    #[error("the account must be connected again: {0}")]
    Reauth(String),
    /// Will not get better by retrying (404 calendar, 403 permission, bad URL,
    /// not a calendar).
    #[error("{0}")]
    Permanent(String),
    /// The URL's address is one the operator's rules never let us reach
    /// (loopback, private, link-local… not in `fetch_allow`): no retry helps
    /// until the URL or the configuration changes.
    #[error("{0}")]
    Refused(String),
}

impl ProviderError {
    pub fn retryable(message: impl Into<String>) -> Self {
        ProviderError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }
}

/// One item as the provider sent it. `series` groups the items rendered into
/// one object (a master and its exceptions share it); `body: None` deletes.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemChange {
    pub series: String,
    pub item: String,
    pub body: Option<serde_json::Value>,
}

/// What a fetch brought back.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// Nothing changed (304, same body, empty delta without a new token).
    Unchanged { cursor: Cursor },
    /// The complete set of items: anything not in it is gone.
    Full {
        items: Vec<ItemChange>,
        cursor: Cursor,
    },
    /// Changes since the cursor the fetch was given.
    Delta {
        changes: Vec<ItemChange>,
        cursor: Cursor,
    },
}

/// What the fetch is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchMode {
    /// From the cursor when there is one.
    Incremental,
    /// Ignore the cursor: everything again.
    Full,
}

/// A boxed future, for the provider traits' objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Hands out a valid access token; `force_refresh` after the API answered 401.
pub trait TokenSource: Send + Sync {
    fn access_token(
        &self,
        force_refresh: bool,
    ) -> Pin<Box<dyn Future<Output = Result<String, ProviderError>> + Send + '_>>;
}

/// A calendar of the connected account, offered for picking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteCalendar {
    pub id: String,
    pub name: String,
    /// IANA (Google) or Windows/IANA (Graph) zone name, when the provider says.
    pub time_zone: Option<String>,
    pub primary: bool,
    /// Whether the account may write events there (export needs it).
    pub writable: bool,
}

/// What rendering a series needs besides its items.
#[derive(Debug, Clone, Copy)]
pub struct RenderContext<'a> {
    /// The tenant's zone (for all-day dates and unknown zones).
    pub default_zone: chrono_tz::Tz,
    /// Source id, for UIDs and markers.
    pub source: &'a str,
}

/// A series rendered for storage: iCalendar text (one VCALENDAR, one or more
/// VEVENTs with the same UID), or nothing when no item of the series is live
/// (e.g. only cancelled instances whose master is gone).
pub type Rendered = Option<String>;

/// A request to a provider's API (`api`: "Google", "Microsoft Graph") that got no
/// answer: retryable, with the cause but not the URL (it carries calendar ids and
/// sync tokens). A request we could not even build is our bug: permanent.
pub fn api_transport_error(api: &str, e: reqwest::Error) -> ProviderError {
    if e.is_builder() {
        return ProviderError::Permanent(format!("bad {api} request: {}", fetch::chain(&e)));
    }
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    ProviderError::retryable(format!("{api}: {what} ({})", fetch::chain(&e)))
}

/// Percent-encodes one URL path segment (ids contain `@`, `#`, `/`, `+`, `=`).
pub fn path_segment(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `Retry-After` as decimal seconds (Graph sends `2.128`) or an HTTP date.
pub fn retry_after(value: Option<&http::HeaderValue>) -> Option<Duration> {
    let text = value?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(3600.0)));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            .min(Duration::from_secs(3600)),
    )
}

/// The usual classification of an API status that is not a success.
pub fn status_error(
    status: http::StatusCode,
    retry_after_header: Option<&http::HeaderValue>,
    body: &str,
) -> ProviderError {
    let snippet: String = body.chars().take(300).collect();
    let message = format!("HTTP {status}: {snippet}");
    match status.as_u16() {
        410 => ProviderError::CursorExpired,
        429 | 500 | 502 | 503 | 504 => ProviderError::Retryable {
            message,
            retry_after: retry_after(retry_after_header),
        },
        // Google signals rate limits as 403 with these reasons.
        403 if body.contains("rateLimitExceeded") || body.contains("userRateLimitExceeded") => {
            ProviderError::Retryable {
                message,
                retry_after: retry_after(retry_after_header),
            }
        }
        _ => ProviderError::Permanent(message),
    }
}

/// Selects ring as rustls' crypto provider for every outbound TLS client (reqwest is
/// built without one). Idempotent; call before building an HTTP client.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No answer at all is worth retrying, and the message names the API and the
    /// cause but not the URL (calendar ids, sync tokens).
    #[tokio::test]
    async fn an_unreachable_api_is_a_retryable_error_without_the_url() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9);
        let url =
            format!("http://127.0.0.1:{closed}/calendars/secret-calendar-id/events?syncToken=tok");
        // The server installs the TLS provider at start; this test builds its own client.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let Err(e) = reqwest::Client::new().get(&url).send().await else {
            panic!("nothing listens on port {closed}");
        };
        match api_transport_error("Google Calendar API", e) {
            ProviderError::Retryable {
                message,
                retry_after,
            } => {
                assert!(
                    message.starts_with("Google Calendar API: cannot connect"),
                    "{message}"
                );
                assert!(!message.contains("secret-calendar-id"), "{message}");
                assert!(!message.contains("tok"), "{message}");
                assert_eq!(retry_after, None);
            }
            other => panic!("{other:?}"),
        }
    }
}
