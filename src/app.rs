//! The running gateway's shared state: configuration, store, engines and verifiers.
//!
//! Built once at start from a validated [`Config`]; handlers receive it behind an
//! `Arc`. Nothing here handles requests.

use std::sync::Arc;

use crate::auth::Verifier;
use crate::bookings::BookingEngine;
use crate::calendars::CalendarService;
use crate::config::{Config, TenantConfig};
use crate::conflicts::ConflictTracker;
use crate::feeds::FeedService;
use crate::store::{Store, StoreError};

/// Who a booking-API key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPrincipal {
    pub tenant: String,
    pub key_name: String,
}

/// Which feed a feed token opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPrincipal {
    pub tenant: String,
    pub feed: String,
}

/// A CalDAV user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPrincipal {
    pub tenant: String,
    pub username: String,
}

pub struct App {
    pub config: Config,
    pub store: Store,
    pub bookings: BookingEngine,
    pub calendars: CalendarService,
    pub conflicts: Arc<ConflictTracker>,
    pub feeds: FeedService,
    pub api_keys: Arc<Verifier<ApiPrincipal>>,
    pub feed_tokens: Arc<Verifier<FeedPrincipal>>,
    pub users: Arc<Verifier<UserPrincipal>>,
    pub sync: crate::sync::SyncEngine,
    /// Member summaries of recently listed CalDAV collections.
    pub dav_listings: crate::dav::listing::Listings,
    /// Parsed forms of recently expanded CalDAV objects.
    pub dav_plans: crate::dav::plans::ExpandPlans,
    pub export: crate::export::Exporter,
    /// The address the server is bound to, once it is (with `--listen` or port
    /// 0 it differs from the file's `server.listen`).
    pub bound: std::sync::OnceLock<std::net::SocketAddr>,
}

/// Why the gateway could not be wired up.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("secret key: {0}")]
    Secrets(#[from] crate::secrets::SecretError),
    #[error("outbound HTTP: {0}")]
    Providers(#[from] crate::providers::ProviderError),
}

impl App {
    /// Opens the store in the configured data directory and wires everything up.
    pub fn open(config: Config) -> Result<App, AppError> {
        let store = Store::open(&config.data_dir)?;
        App::with_store(config, store)
    }

    pub fn with_store(config: Config, store: Store) -> Result<App, AppError> {
        let secrets = crate::secrets::SecretBox::open(&config.data_dir)?;
        let sync = crate::sync::SyncEngine::new(&config.fetch_allow, secrets)?;
        let mut api_keys = Verifier::new();
        let mut feed_tokens = Verifier::new();
        let mut users = Verifier::new();
        for t in &config.tenants {
            for k in &t.api_keys {
                let who = ApiPrincipal {
                    tenant: t.id.clone(),
                    key_name: k.name.clone(),
                };
                api_keys.add(None, &k.key_hash, who);
            }
            for f in &t.feeds {
                let which = FeedPrincipal {
                    tenant: t.id.clone(),
                    feed: f.name.clone(),
                };
                feed_tokens.add(None, &f.token_hash, which);
            }
            for u in &t.users {
                let who = UserPrincipal {
                    tenant: t.id.clone(),
                    username: u.username.clone(),
                };
                users.add(Some(&u.username), &u.password_hash, who);
            }
        }
        let conflicts = ConflictTracker::new(store.clone());
        let app = App {
            sync,
            dav_listings: Default::default(),
            dav_plans: Default::default(),
            export: crate::export::Exporter::new(),
            bound: std::sync::OnceLock::new(),
            bookings: BookingEngine::new(store.clone(), Arc::clone(&conflicts)),
            calendars: CalendarService::new(store.clone(), config.horizon, Arc::clone(&conflicts)),
            conflicts,
            feeds: FeedService::new(store.clone(), config.horizon),
            api_keys: Arc::new(api_keys),
            feed_tokens: Arc::new(feed_tokens),
            users: Arc::new(users),
            store,
            config,
        };
        crate::sync::declare_configured_sources(&app)?;
        Ok(app)
    }

    pub fn tenant(&self, id: &str) -> Option<&TenantConfig> {
        self.config.tenant(id)
    }

    /// Where browsers reach the gateway: `server.public_url`, or else the
    /// address actually listened on (not the file's, which `--listen` and port
    /// 0 override).
    pub fn public_url(&self) -> String {
        match &self.config.public_url {
            Some(url) => url.clone(),
            None => format!("http://{}", self.bound.get().unwrap_or(&self.config.listen)),
        }
    }
}
