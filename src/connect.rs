//! Connecting Google and Microsoft accounts to sources (OAuth2 code flow with
//! PKCE), and the authorised API sessions the sync engine fetches with.
//!
//! `GET /oauth/{provider}/start?tenant=&source=` (with the tenant's API key)
//! redirects to the provider with a single-use `state` that expires after ten
//! minutes; `GET /oauth/{provider}/callback` exchanges the code, stores the
//! tokens encrypted ([`crate::secrets`]) and answers with the account's
//! calendars to pick from. Tokens never reach a log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::app::App;
use crate::config::{ProviderConfig, TenantConfig};
use crate::model::Source;
use crate::providers::oauth::{self, OAuthEndpoints, Session, Tokens};
use crate::providers::{
    Cursor, FetchMode, Fetched, ProviderError, ProviderKind, RemoteCalendar, google, microsoft,
};

/// How long a started authorization may take.
const STATE_LIFETIME: Duration = Duration::from_secs(600);

/// Authorizations started and not yet called back, by `state`.
#[derive(Default)]
pub struct PendingAuthorizations {
    by_state: Mutex<HashMap<String, Pending>>,
}

impl PendingAuthorizations {
    /// The map; a panic elsewhere while it was held leaves it usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.by_state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Pending {
    tenant: String,
    source: String,
    provider: ProviderKind,
    pkce_verifier: String,
    started: Instant,
}

/// Why a callback was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The `state` was never handed out, was used already, expired, or belongs
    /// to another provider: a bad (replayed or forged) request, not a provider fault.
    #[error("this authorization is unknown, used or expired; start the connection again")]
    UnknownState,
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// What a finished connection gives back to the caller.
pub struct Connected {
    pub tenant: String,
    pub source: String,
    pub calendars: Vec<RemoteCalendar>,
}

fn provider_config(app: &App, kind: ProviderKind) -> Result<&ProviderConfig, ProviderError> {
    let config = match kind {
        ProviderKind::Google => app.config.providers.google.as_ref(),
        ProviderKind::Microsoft => app.config.providers.microsoft.as_ref(),
        ProviderKind::Ics => None,
    };
    config.ok_or_else(|| {
        ProviderError::Permanent(format!(
            "no [providers.{}] application is configured in {}",
            kind.name(),
            app.config.source.display()
        ))
    })
}

fn endpoints(app: &App, kind: ProviderKind) -> Result<OAuthEndpoints, ProviderError> {
    let c = provider_config(app, kind)?;
    let redirect = format!("{}/oauth/{}/callback", app.public_url(), kind.name());
    let base = match kind {
        ProviderKind::Microsoft => {
            OAuthEndpoints::microsoft("common", &c.client_id, &c.client_secret, redirect)
        }
        _ => OAuthEndpoints::google(&c.client_id, &c.client_secret, redirect),
    };
    Ok(base.with_endpoints(&c.auth_url, &c.token_url))
}

/// Starts connecting `source` (which must be of `kind`): the provider URL to send
/// the person to.
pub fn start(
    app: &App,
    tenant: &TenantConfig,
    source: &Source,
    kind: ProviderKind,
) -> Result<String, ProviderError> {
    let pending = oauth::authorize(&endpoints(app, kind)?)?;
    let mut by_state = app.sync.pending.lock();
    by_state.retain(|_, p| p.started.elapsed() < STATE_LIFETIME);
    by_state.insert(
        pending.state.clone(),
        Pending {
            tenant: tenant.id.clone(),
            source: source.id.clone(),
            provider: kind,
            pkce_verifier: pending.pkce_verifier,
            started: Instant::now(),
        },
    );
    Ok(pending.url)
}

/// Finishes a connection: `state` is checked and spent, the code exchanged, the
/// tokens stored, the account's calendars listed.
pub async fn callback(
    app: &App,
    kind: ProviderKind,
    state: &str,
    code: &str,
) -> Result<Connected, ConnectError> {
    let pending = app.sync.pending.lock().remove(state);
    let Some(pending) =
        pending.filter(|p| p.started.elapsed() < STATE_LIFETIME && p.provider == kind)
    else {
        return Err(ConnectError::UnknownState);
    };
    let e = endpoints(app, kind)?;
    let mut tokens =
        oauth::exchange_code(&e, &app.sync.api_http, code, &pending.pkce_verifier).await?;
    if tokens.refresh_token.is_none() {
        // A reconnection may bring no new refresh token (Google only issues one
        // on consent): keep the one we have rather than lose offline access.
        tokens.refresh_token = stored_tokens(app, &pending.tenant, &pending.source)
            .ok()
            .and_then(|t| t.refresh_token);
    }
    store_tokens(app, &pending.tenant, &pending.source, &tokens).await?;
    let mut status = app
        .store
        .sync_status(&pending.tenant, &pending.source)
        .map_err(internal)?;
    status.connected = true;
    status.needs_reauth = false;
    status.next_run = None;
    app.store
        .put_sync_status(&pending.tenant, &pending.source, &status)
        .map_err(internal)?;
    app.store.flush().await.map_err(internal)?;
    app.sync.wake();
    app.export.wake();
    let session = session(app, &pending.tenant, &pending.source, kind)?;
    let calendars = list_calendars(app, kind, &session).await?;
    Ok(Connected {
        tenant: pending.tenant,
        source: pending.source,
        calendars,
    })
}

fn internal(e: crate::store::StoreError) -> ProviderError {
    ProviderError::retryable(format!("storage: {e}"))
}

async fn store_tokens(
    app: &App,
    tenant: &str,
    source: &str,
    tokens: &Tokens,
) -> Result<(), ProviderError> {
    let plain = serde_json::to_vec(tokens).map_err(|e| ProviderError::Permanent(e.to_string()))?;
    let sealed = app.sync.secrets.seal(&plain);
    app.store
        .put_secret(tenant, source, &sealed)
        .await
        .map_err(internal)
}

/// The tokens stored (sealed) for a source.
fn stored_tokens(app: &App, tenant: &str, source: &str) -> Result<Tokens, ProviderError> {
    let sealed = app
        .store
        .secret(tenant, source)
        .map_err(internal)?
        .ok_or_else(|| {
            ProviderError::Reauth("the account is not connected yet; use /oauth/…/start".into())
        })?;
    let plain = app
        .sync
        .secrets
        .open_sealed(&sealed)
        .map_err(|e| ProviderError::Reauth(e.to_string()))?;
    serde_json::from_slice(&plain)
        .map_err(|e| ProviderError::Reauth(format!("stored tokens unreadable: {e}")))
}

/// An authorised session for a connected source; refreshed tokens are stored
/// (sealed) as they come, and made durable with the run's flush.
pub fn session(
    app: &App,
    tenant: &str,
    source: &str,
    kind: ProviderKind,
) -> Result<Session, ProviderError> {
    let tokens = stored_tokens(app, tenant, source)?;
    let store = app.store.clone();
    let secrets = app.sync.secrets.clone();
    let (t, s) = (tenant.to_owned(), source.to_owned());
    let persist: oauth::PersistTokens = Arc::new(move |fresh: &Tokens| {
        if let Ok(plain) = serde_json::to_vec(fresh) {
            // Durable with the sync run's flush; a crash before it means one more refresh.
            let sealed = secrets.seal(&plain);
            if let Err(e) = store.put_secret_batched(&t, &s, &sealed) {
                tracing::warn!(error = %e, "refreshed tokens could not be stored");
            }
        }
    });
    Ok(Session::new(
        endpoints(app, kind)?,
        app.sync.api_http.clone(),
        tokens,
        persist,
    ))
}

pub async fn list_calendars(
    app: &App,
    kind: ProviderKind,
    session: &Session,
) -> Result<Vec<RemoteCalendar>, ProviderError> {
    let c = provider_config(app, kind)?;
    match kind {
        ProviderKind::Google => {
            google::GoogleApi::new(&c.api_base, app.sync.api_http.clone())
                .list_calendars(session)
                .await
        }
        ProviderKind::Microsoft => {
            microsoft::GraphApi::new(&c.api_base, app.sync.api_http.clone())
                .list_calendars(session)
                .await
        }
        ProviderKind::Ics => Ok(Vec::new()),
    }
}

/// Fetches a Google or Microsoft source with its stored grant.
pub async fn fetch(
    app: &App,
    tenant: &TenantConfig,
    source: &Source,
    cursor: &Cursor,
    mode: FetchMode,
) -> Result<Fetched, ProviderError> {
    let Some(remote) = &source.remote else {
        return Err(ProviderError::Permanent("not an external source".into()));
    };
    let session = session(app, &tenant.id, &source.id, remote.kind)?;
    let c = provider_config(app, remote.kind)?;
    match remote.kind {
        ProviderKind::Google => {
            google::GoogleApi::new(&c.api_base, app.sync.api_http.clone())
                .fetch(&session, &remote.target, cursor, mode)
                .await
        }
        ProviderKind::Microsoft => {
            let horizon = app.config.horizon.window(Utc::now());
            let at = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
            microsoft::GraphApi::new(&c.api_base, app.sync.api_http.clone())
                .fetch(
                    &session,
                    &remote.target,
                    cursor,
                    mode,
                    (at(horizon.start), at(horizon.end)),
                )
                .await
        }
        ProviderKind::Ics => Err(ProviderError::Permanent("not an OAuth source".into())),
    }
}
