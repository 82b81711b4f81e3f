//! Connected provider accounts: the OAuth2 code flow with PKCE that connects
//! Google and Microsoft accounts to sources, and the authorised API sessions
//! the sync engine and the exporter work with.
//!
//! [`Connections`] holds what that takes (the providers' OAuth applications,
//! the outbound HTTP client for their APIs, the secret box that seals tokens,
//! the store, the public URL for redirects), so the engines ask it for a
//! session instead of reaching into each other. The HTTP routes over this
//! (`/oauth/{provider}/start` and `/callback`) are in the server's API.
//! Authorizations are single-use and expire after ten minutes; tokens are
//! stored sealed and never reach a log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::model::{Horizon, Source};
use crate::providers::ics::{FeedDigests, FeedFetch};
use crate::providers::oauth::{self, OAuthEndpoints, Session, Tokens};
use crate::providers::{
    Cursor, FetchMode, FetchRequest, Provider, ProviderError, ProviderKind, Providers,
    RemoteCalendar,
};
use crate::secrets::SecretBox;
use crate::settings::TenantConfig;
use crate::store::Store;

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
    /// The tenant or the source was deleted while the person was at the
    /// provider: nothing of the connection was stored.
    #[error("{0} was deleted while it was being connected; nothing was stored")]
    Gone(String),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// What a finished connection gives back to the caller.
pub struct Connected {
    pub tenant: String,
    pub source: String,
    pub calendars: Vec<RemoteCalendar>,
}

/// Where people's browsers reach the gateway: the configured public URL, or
/// else the address the server really listens on (known once it is bound).
pub struct PublicUrl {
    configured: Option<String>,
    listen: SocketAddr,
    bound: OnceLock<SocketAddr>,
}

impl PublicUrl {
    /// `configured` without a trailing slash; `listen` until [`PublicUrl::bind`].
    pub fn new(configured: Option<String>, listen: SocketAddr) -> Self {
        PublicUrl {
            configured,
            listen,
            bound: OnceLock::new(),
        }
    }

    /// Records the address actually bound (with `--listen` or port 0 it
    /// differs from the file's).
    pub fn bind(&self, addr: SocketAddr) {
        let _ = self.bound.set(addr);
    }

    pub fn get(&self) -> String {
        match &self.configured {
            Some(url) => url.clone(),
            None => format!("http://{}", self.bound.get().unwrap_or(&self.listen)),
        }
    }
}

/// The providers and what talking to them for a source takes.
pub struct Connections {
    store: Store,
    secrets: SecretBox,
    /// For OAuth token requests: the registry's API client.
    http: reqwest::Client,
    providers: Arc<Providers>,
    /// The configuration file, named when an application is missing.
    config_file: String,
    public_url: Arc<PublicUrl>,
    horizon: Horizon,
    pending: PendingAuthorizations,
    /// The callback writes only for a tenant still live, under its write fence.
    tenants: Arc<crate::tenants::Tenants>,
}

impl Connections {
    pub fn new(
        store: Store,
        secrets: SecretBox,
        providers: Arc<Providers>,
        config_file: &std::path::Path,
        public_url: Arc<PublicUrl>,
        horizon: Horizon,
        tenants: Arc<crate::tenants::Tenants>,
    ) -> Connections {
        Connections {
            tenants,
            store,
            secrets,
            http: providers.http().clone(),
            providers,
            config_file: config_file.display().to_string(),
            public_url,
            horizon,
            pending: PendingAuthorizations::default(),
        }
    }

    /// Where people's browsers reach the gateway.
    pub fn public_url(&self) -> String {
        self.public_url.get()
    }

    /// The provider of `kind`, or why there is none.
    pub fn provider(&self, kind: ProviderKind) -> Result<&Arc<dyn Provider>, ProviderError> {
        self.providers.get(kind).ok_or_else(|| {
            ProviderError::Permanent(format!(
                "no [providers.{}] application is configured in {}",
                kind.name(),
                self.config_file
            ))
        })
    }

    /// The OAuth endpoints of a provider that connects accounts with OAuth.
    fn oauth_of(&self, provider: &dyn Provider) -> Option<OAuthEndpoints> {
        let kind = provider.kind();
        provider.oauth(format!(
            "{}/oauth/{}/callback",
            self.public_url(),
            kind.name()
        ))
    }

    fn endpoints(&self, kind: ProviderKind) -> Result<OAuthEndpoints, ProviderError> {
        self.oauth_of(self.provider(kind)?.as_ref()).ok_or_else(|| {
            ProviderError::Permanent(format!(
                "{} sources have no account to connect",
                kind.name()
            ))
        })
    }

    /// Starts connecting `source` (which must be of `kind`): the provider URL to
    /// send the person to.
    pub fn start(
        &self,
        tenant: &TenantConfig,
        source: &Source,
        kind: ProviderKind,
    ) -> Result<String, ProviderError> {
        let pending = oauth::authorize(&self.endpoints(kind)?)?;
        let mut by_state = self.pending.lock();
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

    /// Finishes a connection: `state` is checked and spent, the code exchanged,
    /// the tokens stored durably, the account's calendars listed. The caller
    /// wakes the engines that wait for connected sources.
    pub async fn callback(
        &self,
        kind: ProviderKind,
        state: &str,
        code: &str,
    ) -> Result<Connected, ConnectError> {
        let pending = self.pending.lock().remove(state);
        let Some(pending) =
            pending.filter(|p| p.started.elapsed() < STATE_LIFETIME && p.provider == kind)
        else {
            return Err(ConnectError::UnknownState);
        };
        let e = self.endpoints(kind)?;
        let mut tokens = oauth::exchange_code(&e, &self.http, code, &pending.pkce_verifier).await?;
        // The person may have spent minutes at the provider: the tenant or
        // the source may be gone, and nothing of theirs may be written back.
        let gone_tenant = || ConnectError::Gone(format!("tenant \"{}\"", pending.tenant));
        let live = self.tenants.live(&pending.tenant).ok_or_else(gone_tenant)?;
        let _writing = live.write().await.map_err(|_| gone_tenant())?;
        if self
            .store
            .source(&pending.tenant, &pending.source)
            .map_err(internal)?
            .is_none()
        {
            return Err(ConnectError::Gone(format!("source \"{}\"", pending.source)));
        }
        if tokens.refresh_token.is_none() {
            // A reconnection may bring no new refresh token (Google only issues
            // one on consent): keep the one we have rather than lose offline access.
            tokens.refresh_token = self
                .stored_tokens(&pending.tenant, &pending.source)
                .ok()
                .and_then(|t| t.refresh_token);
        }
        self.store_tokens(&pending.tenant, &pending.source, &tokens)
            .await?;
        let mut status = self
            .store
            .sync_status(&pending.tenant, &pending.source)
            .map_err(internal)?;
        status.connected = true;
        status.needs_reauth = false;
        status.next_run = None;
        self.store
            .put_sync_status(&pending.tenant, &pending.source, &status)
            .map_err(internal)?;
        self.store.flush().await.map_err(internal)?;
        let session = self.session(&pending.tenant, &pending.source, kind)?;
        let calendars = self.list_calendars(kind, &session).await?;
        Ok(Connected {
            tenant: pending.tenant,
            source: pending.source,
            calendars,
        })
    }

    async fn store_tokens(
        &self,
        tenant: &str,
        source: &str,
        tokens: &Tokens,
    ) -> Result<(), ProviderError> {
        let plain =
            serde_json::to_vec(tokens).map_err(|e| ProviderError::Permanent(e.to_string()))?;
        let sealed = self.secrets.seal(&plain);
        self.store
            .put_secret(tenant, source, &sealed)
            .await
            .map_err(internal)
    }

    /// The tokens stored (sealed) for a source.
    fn stored_tokens(&self, tenant: &str, source: &str) -> Result<Tokens, ProviderError> {
        let sealed = self
            .store
            .secret(tenant, source)
            .map_err(internal)?
            .ok_or_else(|| {
                ProviderError::Reauth("the account is not connected yet; use /oauth/…/start".into())
            })?;
        let plain = self
            .secrets
            .open_sealed(&sealed)
            .map_err(|e| ProviderError::Reauth(e.to_string()))?;
        serde_json::from_slice(&plain)
            .map_err(|e| ProviderError::Reauth(format!("stored tokens unreadable: {e}")))
    }

    /// An authorised session for a connected source; refreshed tokens are
    /// stored (sealed) as they come, and made durable with the run's flush.
    pub fn session(
        &self,
        tenant: &str,
        source: &str,
        kind: ProviderKind,
    ) -> Result<Session, ProviderError> {
        self.session_with(self.endpoints(kind)?, tenant, source)
    }

    fn session_with(
        &self,
        endpoints: OAuthEndpoints,
        tenant: &str,
        source: &str,
    ) -> Result<Session, ProviderError> {
        let tokens = self.stored_tokens(tenant, source)?;
        let store = self.store.clone();
        let secrets = self.secrets.clone();
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
        Ok(Session::new(endpoints, self.http.clone(), tokens, persist))
    }

    /// The calendars of a connected account, to pick from.
    pub async fn list_calendars(
        &self,
        kind: ProviderKind,
        session: &Session,
    ) -> Result<Vec<RemoteCalendar>, ProviderError> {
        self.provider(kind)?.list_calendars(session).await
    }

    /// Fetches a source's calendar through its provider, with the source's
    /// stored grant when the provider connects accounts. `known`: the digests
    /// of the last applied listing, for providers that keep them.
    pub async fn fetch(
        &self,
        tenant: &TenantConfig,
        source: &Source,
        cursor: &Cursor,
        mode: FetchMode,
        known: Option<FeedDigests>,
    ) -> Result<FeedFetch, ProviderError> {
        let Some(remote) = &source.remote else {
            return Err(ProviderError::Permanent("not an external source".into()));
        };
        let provider = self.provider(remote.kind)?;
        let session = match self.oauth_of(provider.as_ref()) {
            Some(endpoints) => Some(self.session_with(endpoints, &tenant.id, &source.id)?),
            None => None,
        };
        let horizon = self.horizon.window(Utc::now());
        let at = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
        provider
            .fetch(FetchRequest {
                session: session.as_ref(),
                calendar: &remote.target,
                cursor,
                mode,
                known,
                window: (at(horizon.start), at(horizon.end)),
            })
            .await
    }
}

fn internal(e: crate::store::StoreError) -> ProviderError {
    ProviderError::retryable(format!("storage: {e}"))
}
