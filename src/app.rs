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
use crate::store::{ProvisionedTenant, SledStore, Store, StoreError};
use crate::tenants::Tenants;

/// Who a booking-API key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPrincipal {
    pub tenant: String,
    pub key_name: String,
}

/// Provisioning changes of a tenant happen one at a time (read its record,
/// check, store, apply); different tenants' changes do not wait on each other,
/// so a tenant DELETE purging exported events from a slow provider holds up
/// only that tenant. Creating a CalDAV user also takes `user_names`, since
/// names are unique across tenants.
#[derive(Default)]
pub struct ProvisioningLocks {
    tenants: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub user_names: tokio::sync::Mutex<()>,
}

impl ProvisioningLocks {
    /// Waits for `tenant`'s provisioning turn.
    pub async fn tenant(&self, tenant: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = Arc::clone(
            self.tenants
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(tenant.to_owned())
                .or_default(),
        );
        lock.lock_owned().await
    }
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

/// The holder of the operator key (`[admin]`): may provision tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operator;

/// Prefix of generated API keys and feed tokens (they are told apart from the
/// file's, which are tried one by one, by their lookup: [`crate::auth::lookup_of`]).
pub const API_KEY_PREFIX: &str = "ck_";
pub const FEED_TOKEN_PREFIX: &str = "cf_";

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
    /// The operator key, when `[admin]` is configured.
    pub operator: Option<Arc<Verifier<Operator>>>,
    /// One provisioning change at a time per tenant (read, check, store, apply).
    pub provisioning: ProvisioningLocks,
    /// Provisioned tenants whose deletion a crash interrupted: finished by
    /// [`crate::start`] before serving.
    pub interrupted_deletions: Vec<String>,
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
        let api_keys = Arc::new(Verifier::new());
        let feed_tokens = Arc::new(Verifier::new());
        let users = Arc::new(Verifier::new());
        let operator = config.admin.as_ref().map(|admin| {
            let verifier = Verifier::new();
            verifier.add(None, &admin.key_hash, Operator);
            Arc::new(verifier)
        });
        let credentials = Credentials {
            api_keys: &api_keys,
            feed_tokens: &feed_tokens,
            users: &users,
        };
        for t in &config.tenants {
            credentials.register(t, None);
        }
        let (provisioned, interrupted_deletions) =
            load_provisioned(&store, &config.tenants, &credentials)?;
        crate::sync::declare_configured_sources(&store, &config.tenants)?;
        let conflicts = ConflictTracker::new(store.clone());
        let bookings = BookingEngine::new(store.clone(), Arc::clone(&conflicts));
        let calendars = CalendarService::new(store.clone(), config.horizon, Arc::clone(&conflicts));
        let tenants = Arc::new(Tenants::new(
            config.tenants.iter().cloned().chain(provisioned),
        ));
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
            Arc::clone(&tenants),
        ));
        let export = Arc::new(crate::export::Exporter::new(
            store.clone(),
            bookings.clone(),
            Arc::clone(&connections),
            Arc::clone(&tenants),
            config.horizon,
        ));
        let sync = Arc::new(
            crate::sync::SyncEngine::new(
                store.clone(),
                calendars.clone(),
                Arc::clone(&connections),
                Arc::clone(&export) as Arc<dyn crate::sync::ImportObserver>,
                Arc::clone(&tenants),
            )
            .with_max_concurrent_runs(config.max_concurrent_syncs),
        );
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
            api_keys,
            feed_tokens,
            users,
            operator,
            provisioning: ProvisioningLocks::default(),
            interrupted_deletions,
            store,
            config,
        })
    }

    /// A tenant as it is now (the file's or a provisioned one).
    pub fn tenant(&self, id: &str) -> Option<Arc<TenantConfig>> {
        self.tenants.get(id)
    }

    /// Whether `gateway.toml` declares the tenant (then only the file changes it).
    pub fn declared_in_file(&self, id: &str) -> bool {
        self.config.tenant(id).is_some()
    }

    /// Whose booking-API key this is (see [`crate::auth::Verifier::verify_bearer`]).
    pub async fn verify_api_key(&self, key: &str) -> Option<ApiPrincipal> {
        self.api_keys.verify_bearer(key).await
    }

    /// Which feed a feed token opens (as [`App::verify_api_key`]).
    pub async fn verify_feed_token(&self, token: &str) -> Option<FeedPrincipal> {
        self.feed_tokens.verify_bearer(token).await
    }

    /// The verifiers, to add or remove a tenant's secrets.
    pub fn credentials(&self) -> Credentials<'_> {
        Credentials {
            api_keys: &self.api_keys,
            feed_tokens: &self.feed_tokens,
            users: &self.users,
        }
    }

    /// Where browsers reach the gateway: `server.public_url`, or else the
    /// address actually listened on (not the file's, which `--listen` and port
    /// 0 override).
    pub fn public_url(&self) -> String {
        self.public_url.get()
    }
}

/// The three verifiers together: a tenant's secrets come and go as one.
pub struct Credentials<'a> {
    pub api_keys: &'a Verifier<ApiPrincipal>,
    pub feed_tokens: &'a Verifier<FeedPrincipal>,
    pub users: &'a Verifier<UserPrincipal>,
}

impl Credentials<'_> {
    /// Makes a tenant's users, keys and feed tokens valid. `record` gives the
    /// lookups of a provisioned tenant's generated secrets; without it (the
    /// file's) keys and tokens are tried one by one.
    pub fn register(&self, t: &TenantConfig, record: Option<&ProvisionedTenant>) {
        let lookup_of_key = |name: &str| {
            record
                .and_then(|r| r.api_keys.iter().find(|k| k.name == name))
                .map(|k| k.lookup.as_str())
        };
        let lookup_of_feed = |name: &str| {
            record
                .and_then(|r| r.feeds.iter().find(|f| f.name == name))
                .map(|f| f.lookup.as_str())
        };
        for k in &t.api_keys {
            let who = ApiPrincipal {
                tenant: t.id.clone(),
                key_name: k.name.clone(),
            };
            self.api_keys.add(lookup_of_key(&k.name), &k.key_hash, who);
        }
        for f in &t.feeds {
            let which = FeedPrincipal {
                tenant: t.id.clone(),
                feed: f.name.clone(),
            };
            self.feed_tokens
                .add(lookup_of_feed(&f.name), &f.token_hash, which);
        }
        for u in &t.users {
            let who = UserPrincipal {
                tenant: t.id.clone(),
                username: u.username.clone(),
            };
            self.users.add(Some(&u.username), &u.password_hash, who);
        }
    }

    /// Makes every secret of a tenant invalid at once.
    pub fn forget(&self, tenant: &str) {
        self.api_keys.remove(|p| p.tenant == tenant);
        self.feed_tokens.remove(|p| p.tenant == tenant);
        self.users.remove(|p| p.tenant == tenant);
    }
}

/// The provisioned tenants in the store, checked as the file is, with their
/// secrets registered; and the ids whose deletion a crash interrupted. A
/// record that no longer passes (the file now declares its id or one of its
/// user names) is left out with an error in the log, never dropped.
fn load_provisioned(
    store: &Store,
    declared: &[TenantConfig],
    credentials: &Credentials<'_>,
) -> Result<(Vec<TenantConfig>, Vec<String>), StoreError> {
    let mut usernames: std::collections::HashSet<String> = declared
        .iter()
        .flat_map(|t| t.users.iter().map(|u| u.username.clone()))
        .collect();
    let mut tenants = Vec::new();
    let mut interrupted = Vec::new();
    for record in store.tenant_records()? {
        if record.deleting {
            interrupted.push(record.id);
            continue;
        }
        if declared.iter().any(|t| t.id == record.id) {
            tracing::error!(tenant = %record.id, "a provisioned tenant has the id of one gateway.toml declares; the file's is served (rename one of them)");
            continue;
        }
        let tenant = match crate::config::tenant_from_record(&record) {
            Ok(t) => t,
            Err((field, message)) => {
                tracing::error!(tenant = %record.id, field, message, "a provisioned tenant no longer passes validation and is not served");
                continue;
            }
        };
        if let Some(taken) = tenant
            .users
            .iter()
            .find(|u| usernames.contains(&u.username))
        {
            tracing::error!(tenant = %record.id, user = %taken.username, "a provisioned user name is taken by another tenant; the tenant is not served");
            continue;
        }
        usernames.extend(tenant.users.iter().map(|u| u.username.clone()));
        credentials.register(&tenant, Some(&record));
        tenants.push(tenant);
    }
    Ok((tenants, interrupted))
}
