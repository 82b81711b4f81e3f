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
use crate::connect::{Connections, PublicUrl};
use crate::feeds::FeedService;
use crate::store::{SledStore, Store, StoreError};
use crate::tenants::Tenants;

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
    pub sync: Arc<crate::sync::SyncEngine>,
    /// Member summaries of recently listed CalDAV collections.
    pub dav_listings: crate::dav::listing::Listings,
    /// Parsed forms of recently expanded CalDAV objects.
    pub dav_plans: crate::dav::plans::ExpandPlans,
    pub export: Arc<crate::export::Exporter>,
    /// Connected provider accounts (OAuth) and their API sessions.
    pub connections: Arc<Connections>,
    /// The tenants, as the engines see them.
    pub tenants: Arc<Tenants>,
    /// Where browsers reach the gateway (set to the bound address once known).
    pub public_url: Arc<PublicUrl>,
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
        let store = SledStore::open(&config.data_dir)?;
        App::with_store(config, Arc::new(store))
    }

    pub fn with_store(config: Config, store: Store) -> Result<App, AppError> {
        let secrets = crate::secrets::SecretBox::open(&config.data_dir)?;
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
        crate::sync::declare_configured_sources(&store, &config.tenants)?;
        let conflicts = ConflictTracker::new(store.clone());
        let bookings = BookingEngine::new(store.clone(), Arc::clone(&conflicts));
        let calendars = CalendarService::new(store.clone(), config.horizon, Arc::clone(&conflicts));
        let tenants = Arc::new(Tenants::new(config.tenants.iter().cloned()));
        let public_url = Arc::new(PublicUrl::new(config.public_url.clone(), config.listen));
        let providers = Arc::new(crate::providers::Providers::new(
            &config.providers,
            &config.fetch_allow,
        )?);
        let connections = Arc::new(Connections::new(
            store.clone(),
            secrets,
            providers,
            &config.source,
            Arc::clone(&public_url),
            config.horizon,
        )?);
        let export = Arc::new(crate::export::Exporter::new(
            store.clone(),
            bookings.clone(),
            Arc::clone(&connections),
            Arc::clone(&tenants),
            config.horizon,
        ));
        let sync = Arc::new(crate::sync::SyncEngine::new(
            store.clone(),
            calendars.clone(),
            Arc::clone(&connections),
            Arc::clone(&export) as Arc<dyn crate::sync::ImportObserver>,
            Arc::clone(&tenants),
        ));
        Ok(App {
            sync,
            export,
            connections,
            tenants,
            public_url,
            dav_listings: Default::default(),
            dav_plans: Default::default(),
            bookings,
            calendars,
            conflicts,
            feeds: FeedService::new(store.clone(), config.horizon),
            api_keys: Arc::new(api_keys),
            feed_tokens: Arc::new(feed_tokens),
            users: Arc::new(users),
            store,
            config,
        })
    }

    pub fn tenant(&self, id: &str) -> Option<&TenantConfig> {
        self.config.tenant(id)
    }

    /// Where browsers reach the gateway: `server.public_url`, or else the
    /// address actually listened on (not the file's, which `--listen` and port
    /// 0 override).
    pub fn public_url(&self) -> String {
        self.public_url.get()
    }
}
