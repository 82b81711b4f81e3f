//! Gateway configuration: the `gateway.toml` schema, loading and validation.
//!
//! Everything that can be checked before the server starts is checked here, so the
//! server never starts half-configured: a broken file fails with the file name, the
//! key path (`tenant[0].timezone`) and what is wrong. Secrets are only ever present
//! as argon2 PHC hashes; this module checks that they parse but never verifies them
//! (that is [`crate::auth`]'s job).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use calgate_model::provisioned::ProvisionedTenant;
use chrono::NaiveTime;
use chrono_tz::Tz;
use serde::Deserialize;

/// Default listen address of `calgate serve`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory (sled database and keys), relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default cap on request bodies, in bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

/// Why a configuration could not be used. The message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// File this configuration was read from (for messages only).
    pub source: PathBuf,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub max_body_bytes: usize,
    /// How far back and ahead recurring events are materialised for free/busy.
    pub horizon: crate::calendars::Horizon,
    pub tenants: Vec<TenantConfig>,
    /// Networks user-supplied feed URLs may reach although private or loopback
    /// (CIDR strings, e.g. a local test server or an intranet calendar host).
    pub fetch_allow: Vec<String>,
    /// Base URL people's browsers reach the gateway at (OAuth redirects, links
    /// in exported events), without a trailing slash. `None`: the address the
    /// server actually listens on (see `App::public_url`).
    pub public_url: Option<String>,
    pub providers: ProvidersConfig,
    /// Source syncs the scheduler runs at once (`[server] max_concurrent_syncs`).
    pub max_concurrent_syncs: usize,
    /// The operator key of the provisioning API (`[admin]`); `None`: the API
    /// cannot create, change or delete tenants.
    pub admin: Option<AdminConfig>,
}

/// `[admin]`: who may provision tenants over the API.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// argon2 PHC hash of the operator key (`calgate hash-password`).
    pub key_hash: String,
}

pub use calgate_model::settings::{
    ApiKeyConfig, FeedConfig, FeedPrivacy, FeedSources, IMPLICIT_RESOURCE, OpeningHours,
    ProviderConfig, ProvidersConfig, Resource, ResourceConfig, ResourceKind, Scheduling,
    SourceConfig, TenantConfig, UserConfig, WebhookConfig,
};

/// The days of `opening_hours`, in the order `OpeningHours::days` keeps them.
pub(crate) const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

// ---- raw (file) schema -------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    tenant: Vec<RawTenant>,
    #[serde(default)]
    providers: RawProviders,
    admin: Option<RawAdmin>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    key_hash: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProviders {
    google: Option<RawProvider>,
    microsoft: Option<RawProvider>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    client_id: String,
    client_secret: Option<String>,
    client_secret_env: Option<String>,
    auth_url: Option<String>,
    token_url: Option<String>,
    api_base: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    id: String,
    name: Option<String>,
    kind: crate::providers::ProviderKind,
    /// Google/Microsoft calendar id (default: the primary/default calendar).
    calendar: Option<String>,
    /// iCal feed URL (`kind = "ics"`).
    url: Option<String>,
    direction: Option<crate::model::Direction>,
    interval_minutes: Option<u32>,
    enabled: Option<bool>,
    transparent: Option<bool>,
    /// Export: `full` (default) or `busy` (opaque blocks, no customer details).
    privacy: Option<crate::model::ExportPrivacy>,
    /// The resource whose calendar this is (default: the whole tenant's).
    resource: Option<String>,
}

/// `[[tenant.resource]]`: a staff member, room, chair or piece of equipment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    id: String,
    name: Option<String>,
    kind: Option<String>,
    timezone: Option<String>,
    opening_hours: Option<BTreeMap<String, Vec<String>>>,
    buffer_minutes: Option<u32>,
    capacity: Option<i64>,
    email: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    max_body_bytes: Option<usize>,
    busy_horizon_past_days: Option<u32>,
    busy_horizon_future_days: Option<u32>,
    #[serde(default)]
    fetch_allow: Vec<String>,
    public_url: Option<String>,
    max_concurrent_syncs: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    id: String,
    name: Option<String>,
    timezone: String,
    #[serde(default)]
    user: Vec<RawUser>,
    #[serde(default)]
    api_key: Vec<RawApiKey>,
    #[serde(default)]
    feed: Vec<RawFeed>,
    opening_hours: Option<BTreeMap<String, Vec<String>>>,
    buffer_minutes: Option<u32>,
    webhook: Option<RawWebhook>,
    #[serde(default)]
    source: Vec<RawSource>,
    accept_external_moves: Option<bool>,
    scheduling: Option<String>,
    #[serde(default)]
    resource: Vec<RawResource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    /// The secret itself, or the name of an environment variable holding it.
    secret: Option<String>,
    secret_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    username: String,
    password_hash: String,
    email: Option<String>,
    resource: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    name: String,
    key_hash: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeed {
    name: String,
    token_hash: String,
    privacy: Option<FeedPrivacy>,
    refresh_minutes: Option<u32>,
    past_days: Option<u32>,
    include_cancelled: Option<bool>,
    include_sources: Option<RawFeedSources>,
    /// The resource whose feed this is (default: the tenant's feed).
    resource: Option<String>,
}

/// `include_sources = "all"` or `include_sources = ["id", ...]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawFeedSources {
    Keyword(String),
    Ids(Vec<String>),
}

/// Overrides given on the command line; they win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Reads, parses and validates `path`, then applies command-line overrides.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::parse(&text, path)?;
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir = dir.clone();
        }
        Ok(config)
    }

    /// Parses and validates configuration text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        Validator { path }.config(raw)
    }

    pub fn tenant(&self, id: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.id == id)
    }
}

/// Validates a source as the API receives it (the same fields as
/// `[[tenant.source]]`), so both routes share one set of rules.
pub fn parse_source_json(body: &[u8]) -> Result<SourceConfig, (String, String)> {
    let raw: RawSource =
        serde_json::from_slice(body).map_err(|e| ("body".to_owned(), e.to_string()))?;
    let path = Path::new("request body");
    Validator { path }
        .source("source", raw)
        .map_err(|e| match e {
            ConfigError::Invalid { key, message, .. } => {
                (key.trim_start_matches("source.").to_owned(), message)
            }
            other => ("body".to_owned(), other.to_string()),
        })
}

/// Checks a provisioned tenant with the rules of a `[[tenant]]` table and
/// builds its settings. An error names the field as a request body does
/// (`timezone`, `opening_hours.monday[0]`, `refresh_minutes`: the prefix of a
/// user, key or feed entry left out) and says what is wrong.
pub fn tenant_from_record(record: &ProvisionedTenant) -> Result<TenantConfig, (String, String)> {
    let path = Path::new("request body");
    let raw = raw_tenant(record)?;
    Validator { path }.tenant(0, raw).map_err(|e| match e {
        ConfigError::Invalid { key, message, .. } => (body_field(&key), message),
        other => ("body".to_owned(), other.to_string()),
    })
}

/// `tenant[0].feed[2].privacy` → `privacy`; `tenant[0].timezone` → `timezone`.
fn body_field(key: &str) -> String {
    let key = key.strip_prefix("tenant[0].").unwrap_or(key);
    for list in ["user[", "api_key[", "feed[", "resource["] {
        if let Some(rest) = key.strip_prefix(list)
            && let Some((_, field)) = rest.split_once("].")
        {
            return field.to_owned();
        }
    }
    key.to_owned()
}

/// A stored record as the `[[tenant]]` table it stands for.
fn raw_tenant(record: &ProvisionedTenant) -> Result<RawTenant, (String, String)> {
    let settings = &record.settings;
    let mut feed = Vec::with_capacity(record.feeds.len());
    for f in &record.feeds {
        let s = &f.settings;
        let privacy = match &s.privacy {
            None => None,
            Some(p) => Some(
                serde_json::from_value(serde_json::Value::String(p.clone())).map_err(|_| {
                    (
                        "privacy".to_owned(),
                        format!("\"{p}\" is neither \"full\" nor \"busy\""),
                    )
                })?,
            ),
        };
        let include_sources = match &s.include_sources {
            None => None,
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(|_| {
                (
                    "include_sources".to_owned(),
                    "must be \"all\" or a list of source ids such as [\"anna-google\"]".to_owned(),
                )
            })?),
        };
        feed.push(RawFeed {
            name: f.name.clone(),
            token_hash: f.token_hash.clone(),
            privacy,
            refresh_minutes: s.refresh_minutes,
            past_days: s.past_days,
            include_cancelled: s.include_cancelled,
            include_sources,
            resource: s.resource.clone(),
        });
    }
    Ok(RawTenant {
        id: record.id.clone(),
        name: settings.name.clone(),
        timezone: settings.timezone.clone(),
        user: record
            .users
            .iter()
            .map(|u| RawUser {
                username: u.username.clone(),
                password_hash: u.password_hash.clone(),
                email: u.email.clone(),
                resource: u.resource.clone(),
            })
            .collect(),
        api_key: record
            .api_keys
            .iter()
            .map(|k| RawApiKey {
                name: k.name.clone(),
                key_hash: k.key_hash.clone(),
            })
            .collect(),
        feed,
        opening_hours: settings.opening_hours.clone(),
        buffer_minutes: settings.buffer_minutes,
        webhook: None,
        source: Vec::new(),
        resource: record
            .resources
            .iter()
            .map(|r| RawResource {
                id: r.id.clone(),
                name: r.settings.name.clone(),
                kind: r.settings.kind.clone(),
                timezone: r.settings.timezone.clone(),
                opening_hours: r.settings.opening_hours.clone(),
                buffer_minutes: r.settings.buffer_minutes,
                capacity: r.settings.capacity,
                email: r.settings.email.clone(),
            })
            .collect(),
        accept_external_moves: settings.accept_external_moves,
        scheduling: settings.scheduling.clone(),
    })
}

struct Validator<'a> {
    path: &'a Path,
}

impl Validator<'_> {
    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let listen = match raw.server.listen.as_deref() {
            None => DEFAULT_LISTEN
                .parse()
                .expect("default listen address parses"),
            Some(text) => text.parse().map_err(|_| {
                self.invalid(
                    "server.listen",
                    format!("\"{text}\" is not an address:port such as \"127.0.0.1:8080\""),
                )
            })?,
        };
        let max_body_bytes = raw.server.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if !(1024..=64 * 1024 * 1024).contains(&max_body_bytes) {
            return Err(self.invalid("server.max_body_bytes", "must be between 1024 and 67108864"));
        }
        let max_concurrent_syncs = raw
            .server
            .max_concurrent_syncs
            .unwrap_or(crate::sync::DEFAULT_CONCURRENT_RUNS);
        if !(1..=1024).contains(&max_concurrent_syncs) {
            return Err(self.invalid("server.max_concurrent_syncs", "must be between 1 and 1024"));
        }
        let defaults = crate::calendars::Horizon::default();
        let horizon = crate::calendars::Horizon {
            past_days: raw
                .server
                .busy_horizon_past_days
                .unwrap_or(defaults.past_days),
            future_days: raw
                .server
                .busy_horizon_future_days
                .unwrap_or(defaults.future_days),
        };
        for (key, days) in [
            ("server.busy_horizon_past_days", horizon.past_days),
            ("server.busy_horizon_future_days", horizon.future_days),
        ] {
            if !(1..=3660).contains(&days) {
                return Err(self.invalid(key, "must be between 1 and 3660 days"));
            }
        }
        let mut tenants = Vec::with_capacity(raw.tenant.len());
        let mut tenant_ids = HashSet::new();
        let mut usernames = HashSet::new();
        for (i, t) in raw.tenant.into_iter().enumerate() {
            let tenant = self.tenant(i, t)?;
            if !tenant_ids.insert(tenant.id.clone()) {
                return Err(self.invalid(
                    format!("tenant[{i}].id"),
                    format!("tenant \"{}\" is declared twice", tenant.id),
                ));
            }
            for (j, user) in tenant.users.iter().enumerate() {
                // CalDAV principals are addressed by user name alone, so names are global.
                if !usernames.insert(user.username.clone()) {
                    return Err(self.invalid(
                        format!("tenant[{i}].user[{j}].username"),
                        format!(
                            "user \"{}\" already exists; user names must be unique across tenants",
                            user.username
                        ),
                    ));
                }
            }
            tenants.push(tenant);
        }
        let allow = crate::providers::fetch::AllowList::parse(&raw.server.fetch_allow)
            .map_err(|message| self.invalid("server.fetch_allow", message))?;
        self.fetchable_sources(&tenants, &allow)?;
        let public_url = raw
            .server
            .public_url
            .map(|u| u.trim_end_matches('/').to_owned());
        let providers = ProvidersConfig {
            google: match raw.providers.google {
                None => None,
                Some(p) => Some(self.provider(
                    "providers.google",
                    p,
                    crate::providers::google::DEFAULT_ENDPOINTS,
                )?),
            },
            microsoft: match raw.providers.microsoft {
                None => None,
                Some(p) => Some(self.provider(
                    "providers.microsoft",
                    p,
                    crate::providers::microsoft::DEFAULT_ENDPOINTS,
                )?),
            },
        };
        let admin = match raw.admin {
            None => None,
            Some(admin) => {
                self.hash("admin.key_hash", &admin.key_hash)?;
                Some(AdminConfig {
                    key_hash: admin.key_hash,
                })
            }
        };
        Ok(Config {
            admin,
            source: self.path.to_owned(),
            fetch_allow: raw.server.fetch_allow,
            public_url,
            providers,
            listen,
            data_dir: raw
                .server
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            max_body_bytes,
            max_concurrent_syncs,
            horizon,
            tenants,
        })
    }

    /// iCal sources whose URL could never be fetched (a literal or `localhost`
    /// address that `fetch_allow` does not list) stop the start, rather than
    /// fail every sync. Names are resolved only when fetched.
    fn fetchable_sources(
        &self,
        tenants: &[TenantConfig],
        allow: &crate::providers::fetch::AllowList,
    ) -> Result<(), ConfigError> {
        for (i, tenant) in tenants.iter().enumerate() {
            for (j, source) in tenant.sources.iter().enumerate() {
                let remote = &source.remote;
                if remote.kind != crate::providers::ProviderKind::Ics {
                    continue;
                }
                if let Err(e) = crate::providers::fetch::check_url_offline(&remote.target, allow) {
                    return Err(self.invalid(format!("tenant[{i}].source[{j}].url"), e.to_string()));
                }
            }
        }
        Ok(())
    }

    fn tenant(&self, i: usize, raw: RawTenant) -> Result<TenantConfig, ConfigError> {
        let key = |field: &str| format!("tenant[{i}].{field}");
        if !is_identifier(&raw.id) {
            return Err(self.invalid(
                key("id"),
                format!(
                    "\"{}\" is not a valid id: use 1-64 characters of a-z, 0-9, '-' and '_'",
                    raw.id
                ),
            ));
        }
        let timezone: Tz = raw.timezone.parse().map_err(|_| {
            self.invalid(
                key("timezone"),
                format!(
                    "\"{}\" is not an IANA time zone such as \"Europe/Paris\"",
                    raw.timezone
                ),
            )
        })?;
        let mut users = Vec::new();
        for (j, u) in raw.user.into_iter().enumerate() {
            if u.username.is_empty()
                || u.username.len() > 64
                || u.username.contains([':', '/'])
                || u.username.chars().any(char::is_control)
            {
                return Err(self.invalid(
                    key(&format!("user[{j}].username")),
                    "must be 1-64 characters without ':', '/' or control characters",
                ));
            }
            self.hash(&key(&format!("user[{j}].password_hash")), &u.password_hash)?;
            let email = match u.email {
                None => None,
                Some(email) => {
                    Some(self.email(&key(&format!("user[{j}].email")), email, &users)?)
                }
            };
            users.push(UserConfig {
                username: u.username,
                password_hash: u.password_hash,
                email,
                resource: u.resource,
            });
        }
        let scheduling = match raw.scheduling.as_deref() {
            None | Some("server") => Scheduling::Server,
            Some("client") => Scheduling::Client,
            Some(other) => {
                return Err(self.invalid(
                    key("scheduling"),
                    format!(
                        "\"{other}\" is neither \"server\" (the gateway delivers invitations between the tenant's users) nor \"client\" (calendar clients send their own invitations)"
                    ),
                ));
            }
        };
        let mut api_keys = Vec::new();
        for (j, k) in raw.api_key.into_iter().enumerate() {
            self.label(&key(&format!("api_key[{j}].name")), &k.name)?;
            self.hash(&key(&format!("api_key[{j}].key_hash")), &k.key_hash)?;
            if api_keys.iter().any(|a: &ApiKeyConfig| a.name == k.name) {
                return Err(self.invalid(
                    key(&format!("api_key[{j}].name")),
                    format!("api key name \"{}\" is used twice in this tenant", k.name),
                ));
            }
            api_keys.push(ApiKeyConfig {
                name: k.name,
                key_hash: k.key_hash,
            });
        }
        let mut feeds = Vec::new();
        for (j, f) in raw.feed.into_iter().enumerate() {
            self.label(&key(&format!("feed[{j}].name")), &f.name)?;
            self.hash(&key(&format!("feed[{j}].token_hash")), &f.token_hash)?;
            if feeds.iter().any(|x: &FeedConfig| x.name == f.name) {
                return Err(self.invalid(
                    key(&format!("feed[{j}].name")),
                    format!("feed name \"{}\" is used twice in this tenant", f.name),
                ));
            }
            let refresh_minutes = f.refresh_minutes.unwrap_or(15);
            if !(1..=10_080).contains(&refresh_minutes) {
                return Err(self.invalid(
                    key(&format!("feed[{j}].refresh_minutes")),
                    "must be between 1 and 10080 (one week)",
                ));
            }
            let include_sources = match f.include_sources {
                None => FeedSources::None,
                Some(raw) => self.feed_sources(&key(&format!("feed[{j}].include_sources")), raw)?,
            };
            feeds.push(FeedConfig {
                include_sources,
                name: f.name,
                token_hash: f.token_hash,
                privacy: f.privacy.unwrap_or(FeedPrivacy::Full),
                refresh_minutes,
                past_days: f.past_days,
                include_cancelled: f.include_cancelled.unwrap_or(false),
                resource: f.resource,
            });
        }
        let opening_hours = match &raw.opening_hours {
            None => None,
            Some(days) => Some(self.opening_hours(&key("opening_hours"), days)?),
        };
        let buffer_minutes = raw.buffer_minutes.unwrap_or(0);
        if buffer_minutes > 24 * 60 {
            return Err(self.invalid(key("buffer_minutes"), "must be at most 1440 (one day)"));
        }
        let webhook = match raw.webhook {
            None => None,
            Some(w) => Some(self.webhook(&key("webhook"), w)?),
        };
        let name = raw.name.unwrap_or_else(|| raw.id.clone());
        if name.chars().any(char::is_control) {
            return Err(self.invalid(key("name"), "must not contain control characters"));
        }
        let mut resources = Vec::with_capacity(raw.resource.len());
        for (j, resource) in raw.resource.into_iter().enumerate() {
            let resource = self.resource(&key(&format!("resource[{j}]")), resource)?;
            if resources
                .iter()
                .any(|r: &ResourceConfig| r.id == resource.id)
            {
                return Err(self.invalid(
                    key(&format!("resource[{j}].id")),
                    format!("resource \"{}\" is declared twice", resource.id),
                ));
            }
            resources.push(resource);
        }
        let mut sources = Vec::with_capacity(raw.source.len());
        for (j, source) in raw.source.into_iter().enumerate() {
            let source = self.source(&key(&format!("source[{j}]")), source)?;
            if sources.iter().any(|s: &SourceConfig| s.id == source.id) {
                return Err(self.invalid(
                    key(&format!("source[{j}].id")),
                    format!("source \"{}\" is declared twice", source.id),
                ));
            }
            sources.push(source);
        }
        let tenant = TenantConfig {
            sources,
            scheduling,
            accept_external_moves: raw.accept_external_moves.unwrap_or(false),
            id: raw.id,
            name,
            timezone,
            users,
            api_keys,
            feeds,
            opening_hours,
            buffer_minutes,
            webhook,
            resources,
        };
        for (j, user) in tenant.users.iter().enumerate() {
            if let Some(resource) = &user.resource {
                check_user_resource(&tenant, resource).map_err(|message| {
                    self.invalid(key(&format!("user[{j}].resource")), message)
                })?;
            }
        }
        for (j, source) in tenant.sources.iter().enumerate() {
            if let Some(resource) = &source.resource {
                check_source_resource(&tenant, resource).map_err(|message| {
                    self.invalid(key(&format!("source[{j}].resource")), message)
                })?;
            }
        }
        for (j, feed) in tenant.feeds.iter().enumerate() {
            if let Some(resource) = &feed.resource {
                check_feed_resource(&tenant, resource).map_err(|message| {
                    self.invalid(key(&format!("feed[{j}].resource")), message)
                })?;
            }
        }
        Ok(tenant)
    }

    /// One `[[tenant.resource]]` table; `key` is `tenant[i].resource[j]`.
    fn resource(&self, key: &str, raw: RawResource) -> Result<ResourceConfig, ConfigError> {
        if !is_identifier(&raw.id) {
            return Err(self.invalid(
                format!("{key}.id"),
                format!(
                    "\"{}\" is not a valid resource id: use 1-64 characters of a-z, 0-9, '-' and '_'",
                    raw.id
                ),
            ));
        }
        let kind = match raw.kind.as_deref() {
            None => ResourceKind::Other,
            Some("staff") => ResourceKind::Staff,
            Some("room") => ResourceKind::Room,
            Some("equipment") => ResourceKind::Equipment,
            Some("other") => ResourceKind::Other,
            Some(other) => {
                return Err(self.invalid(
                    format!("{key}.kind"),
                    format!("\"{other}\" is not a kind: use \"staff\", \"room\", \"equipment\" or \"other\""),
                ));
            }
        };
        let timezone = match &raw.timezone {
            None => None,
            Some(zone) => Some(zone.parse::<Tz>().map_err(|_| {
                self.invalid(
                    format!("{key}.timezone"),
                    format!("\"{zone}\" is not an IANA time zone such as \"Europe/Paris\""),
                )
            })?),
        };
        let opening_hours = match &raw.opening_hours {
            None => None,
            Some(days) => Some(self.opening_hours(&format!("{key}.opening_hours"), days)?),
        };
        if raw.buffer_minutes.is_some_and(|b| b > 24 * 60) {
            return Err(self.invalid(
                format!("{key}.buffer_minutes"),
                "must be at most 1440 (one day)",
            ));
        }
        let capacity = match raw.capacity {
            None => 1,
            Some(c) if (1..=100_000).contains(&c) => c as u32,
            Some(c) => {
                return Err(self.invalid(
                    format!("{key}.capacity"),
                    format!("{c} is not a capacity: give how many bookings the resource holds at once, 1 to 100000"),
                ));
            }
        };
        let name = raw.name.unwrap_or_else(|| raw.id.clone());
        if name.chars().any(char::is_control) {
            return Err(self.invalid(format!("{key}.name"), "must not contain control characters"));
        }
        if let Some(email) = &raw.email
            && !crate::model::is_email_address(email)
        {
            return Err(self.invalid(
                format!("{key}.email"),
                format!("\"{email}\" is not an e-mail address such as \"chair-1@salon.example\""),
            ));
        }
        Ok(ResourceConfig {
            id: raw.id,
            name,
            kind,
            timezone,
            opening_hours,
            buffer_minutes: raw.buffer_minutes,
            capacity,
            email: raw.email,
        })
    }

    fn feed_sources(&self, key: &str, raw: RawFeedSources) -> Result<FeedSources, ConfigError> {
        match raw {
            RawFeedSources::Keyword(word) if word == "all" => Ok(FeedSources::All),
            RawFeedSources::Keyword(word) => Err(self.invalid(
                key,
                format!("\"{word}\" is neither \"all\" nor a list of source ids such as [\"anna-google\"]"),
            )),
            RawFeedSources::Ids(ids) => {
                for (n, id) in ids.iter().enumerate() {
                    if !is_identifier(id) || id == crate::model::BOOKINGS_SOURCE {
                        return Err(self.invalid(
                            format!("{key}[{n}]"),
                            format!("\"{id}\" is not a source id (bookings are always published)"),
                        ));
                    }
                    if ids[..n].contains(id) {
                        return Err(self.invalid(
                            format!("{key}[{n}]"),
                            format!("source \"{id}\" is listed twice"),
                        ));
                    }
                }
                Ok(FeedSources::Only(ids))
            }
        }
    }

    fn source(&self, key: &str, raw: RawSource) -> Result<SourceConfig, ConfigError> {
        use crate::providers::ProviderKind;
        let valid_id = is_identifier(&raw.id) && raw.id != crate::model::BOOKINGS_SOURCE;
        if !valid_id {
            return Err(self.invalid(
                format!("{key}.id"),
                format!(
                    "\"{}\" is not a valid source id: use 1-64 characters of a-z, 0-9, '-' and '_' (not \"bookings\")",
                    raw.id
                ),
            ));
        }
        let target = match raw.kind {
            ProviderKind::Ics => {
                let Some(url) = raw.url else {
                    return Err(
                        self.invalid(format!("{key}.url"), "an ics source needs the feed url")
                    );
                };
                if let Err(e) = crate::providers::fetch::normalize_url(&url) {
                    return Err(self.invalid(format!("{key}.url"), e.to_string()));
                }
                url
            }
            ProviderKind::Google => raw.calendar.unwrap_or_else(|| "primary".into()),
            ProviderKind::Microsoft => raw.calendar.unwrap_or_default(),
        };
        let direction = raw.direction.unwrap_or(crate::model::Direction::Import);
        if raw.kind == ProviderKind::Ics && direction.exports() {
            return Err(self.invalid(
                format!("{key}.direction"),
                "an ics source can only be imported: use direction = \"import\" (bookings are published as .ics through [[tenant.feed]])",
            ));
        }
        let interval_minutes = raw.interval_minutes.unwrap_or(30);
        if !(1..=7 * 24 * 60).contains(&interval_minutes) {
            return Err(self.invalid(
                format!("{key}.interval_minutes"),
                "must be between 1 and 10080 (a week)",
            ));
        }
        if let Some(resource) = &raw.resource
            && !is_identifier(resource)
        {
            return Err(self.invalid(
                format!("{key}.resource"),
                format!(
                    "\"{resource}\" is not a resource id (1-64 characters of a-z, 0-9, '-' and '_')"
                ),
            ));
        }
        Ok(SourceConfig {
            resource: raw.resource,
            name: raw.name.unwrap_or_else(|| raw.id.clone()),
            id: raw.id,
            transparent: raw.transparent.unwrap_or(false),
            remote: crate::model::RemoteSource {
                kind: raw.kind,
                target,
                direction,
                interval_minutes,
                enabled: raw.enabled.unwrap_or(true),
                privacy: raw.privacy.unwrap_or_default(),
            },
        })
    }

    fn provider(
        &self,
        key: &str,
        raw: RawProvider,
        defaults: [&str; 3],
    ) -> Result<ProviderConfig, ConfigError> {
        let client_secret = match (raw.client_secret, raw.client_secret_env) {
            (Some(s), None) => s,
            (None, Some(var)) => std::env::var(&var).map_err(|_| {
                self.invalid(
                    format!("{key}.client_secret_env"),
                    format!("environment variable {var} is not set"),
                )
            })?,
            _ => {
                return Err(self.invalid(
                    key,
                    "give exactly one of client_secret or client_secret_env",
                ));
            }
        };
        let url = |field: &str, value: Option<String>, default: &str| {
            let value = value.unwrap_or_else(|| default.to_owned());
            match value.parse::<http::Uri>() {
                Ok(u) if matches!(u.scheme_str(), Some("https" | "http")) && u.host().is_some() => {
                    Ok(value.trim_end_matches('/').to_owned())
                }
                _ => Err(self.invalid(
                    format!("{key}.{field}"),
                    format!("\"{value}\" is not an http(s) URL"),
                )),
            }
        };
        Ok(ProviderConfig {
            client_id: raw.client_id,
            client_secret,
            auth_url: url("auth_url", raw.auth_url, defaults[0])?,
            token_url: url("token_url", raw.token_url, defaults[1])?,
            api_base: url("api_base", raw.api_base, defaults[2])?,
        })
    }

    fn webhook(&self, key: &str, raw: RawWebhook) -> Result<WebhookConfig, ConfigError> {
        let uri: http::Uri = raw.url.parse().map_err(|_| {
            self.invalid(
                format!("{key}.url"),
                format!("\"{}\" is not a URL", raw.url),
            )
        })?;
        if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none() {
            return Err(self.invalid(
                format!("{key}.url"),
                "must be an http:// or https:// URL with a host",
            ));
        }
        let secret = match (raw.secret, raw.secret_env) {
            (Some(s), None) => s,
            (None, Some(var)) => std::env::var(&var).map_err(|_| {
                self.invalid(
                    format!("{key}.secret_env"),
                    format!("environment variable {var} is not set"),
                )
            })?,
            _ => {
                return Err(self.invalid(
                    key,
                    "give exactly one of secret or secret_env (the HMAC signing key)",
                ));
            }
        };
        if secret.len() < 16 {
            return Err(self.invalid(key, "the signing secret must be at least 16 characters"));
        }
        Ok(WebhookConfig {
            url: raw.url,
            secret,
        })
    }

    /// `monday = ["09:00-12:00", "13:00-18:00"]`, ... ; unnamed days are closed.
    fn opening_hours(
        &self,
        key: &str,
        days: &BTreeMap<String, Vec<String>>,
    ) -> Result<OpeningHours, ConfigError> {
        let mut hours = OpeningHours::default();
        for (day, periods) in days {
            let Some(index) = WEEKDAYS.iter().position(|d| d.eq_ignore_ascii_case(day)) else {
                return Err(self.invalid(
                    format!("{key}.{day}"),
                    "is not a weekday; use monday ... sunday",
                ));
            };
            let mut parsed: Vec<(NaiveTime, Option<NaiveTime>)> = Vec::new();
            for (i, period) in periods.iter().enumerate() {
                let field = format!("{key}.{day}[{i}]");
                let bad = || {
                    self.invalid(
                        field.clone(),
                        format!("\"{period}\" is not a period such as \"09:00-12:30\""),
                    )
                };
                let (open, close) = period.split_once('-').ok_or_else(bad)?;
                let open = NaiveTime::parse_from_str(open.trim(), "%H:%M").map_err(|_| bad())?;
                let close = match close.trim() {
                    "24:00" => None,
                    c => Some(NaiveTime::parse_from_str(c, "%H:%M").map_err(|_| bad())?),
                };
                if close.is_some_and(|c| c <= open) {
                    return Err(self.invalid(field, "closes before it opens"));
                }
                parsed.push((open, close));
            }
            parsed.sort();
            for pair in parsed.windows(2) {
                if pair[0].1.is_none_or(|close| close > pair[1].0) {
                    return Err(self.invalid(format!("{key}.{day}"), "periods overlap"));
                }
            }
            hours.days[index] = parsed;
        }
        Ok(hours)
    }

    /// A user's e-mail address: `name@domain`, unique among the tenant's users
    /// (attendees are found by it). Kept as written; compared without case.
    fn email(
        &self,
        key: &str,
        email: String,
        others: &[UserConfig],
    ) -> Result<String, ConfigError> {
        if !crate::model::is_email_address(&email) {
            return Err(self.invalid(
                key,
                format!("\"{email}\" is not an e-mail address such as \"anna@salon.example\""),
            ));
        }
        let taken = others.iter().find(|u| {
            u.email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(&email))
        });
        if let Some(owner) = taken {
            return Err(self.invalid(
                key,
                format!(
                    "\"{email}\" is already the address of user \"{}\"; each user needs their own",
                    owner.username
                ),
            ));
        }
        Ok(email)
    }

    fn label(&self, key: &str, value: &str) -> Result<(), ConfigError> {
        if is_identifier(value) {
            Ok(())
        } else {
            Err(self.invalid(
                key,
                format!("\"{value}\" must be 1-64 characters of a-z, 0-9, '-' and '_'"),
            ))
        }
    }

    fn hash(&self, key: &str, value: &str) -> Result<(), ConfigError> {
        crate::auth::check_hash_format(value).map_err(|why| {
            self.invalid(
                key,
                format!("{why}; generate one with `calgate hash-password`"),
            )
        })
    }
}

/// Whether a source may belong to `resource` of `tenant`: it must be one of the
/// tenant's resources (the implicit `default` on a tenant that declares none).
/// The error says which exist.
pub fn check_source_resource(tenant: &TenantConfig, resource: &str) -> Result<(), String> {
    check_resource(tenant, resource, "a calendar of the whole tenant")
}

/// Whether a feed may publish `resource` of `tenant` (as for sources).
pub fn check_feed_resource(tenant: &TenantConfig, resource: &str) -> Result<(), String> {
    check_resource(tenant, resource, "the whole tenant's feed")
}

/// `resource` must be one of `tenant`'s; the error lists them and says that
/// leaving it out gives `whole`.
fn check_resource(tenant: &TenantConfig, resource: &str, whole: &str) -> Result<(), String> {
    if tenant.has_resource(resource) {
        Ok(())
    } else {
        Err(format!(
            "\"{resource}\" is not a resource of tenant \"{}\"; it has {} (leave resource out for {whole})",
            tenant.id,
            tenant
                .resource_ids()
                .iter()
                .map(|r| format!("\"{r}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Whether a CalDAV user may be linked to `resource` of `tenant`: it must be
/// declared (`[[tenant.resource]]`), since only declared resources have their
/// own bookings collection. The error says which exist.
pub fn check_user_resource(tenant: &TenantConfig, resource: &str) -> Result<(), String> {
    if tenant.resources.iter().any(|r| r.id == resource) {
        return Ok(());
    }
    if !tenant.declares_resources() {
        return Err(format!(
            "tenant \"{}\" declares no resources: declare \"{resource}\" with [[tenant.resource]] first, or leave resource out so the user sees the whole tenant",
            tenant.id
        ));
    }
    Err(format!(
        "\"{resource}\" is not a resource of tenant \"{}\"; it has {} (leave resource out so the user sees the whole tenant)",
        tenant.id,
        tenant
            .resource_ids()
            .iter()
            .map(|r| format!("\"{r}\""))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Tenant ids, key names and feed names: short, URL- and key-safe.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$K4Jvj9oKz9Wq+6bYkzF9dZ8p3BqHhU5yU8cK0rQw4Zs";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("gateway.toml"))
    }

    #[test]
    fn concurrent_syncs_default_and_bounds() {
        assert_eq!(
            parse("").unwrap().max_concurrent_syncs,
            crate::sync::DEFAULT_CONCURRENT_RUNS
        );
        assert_eq!(
            parse("[server]\nmax_concurrent_syncs = 4\n")
                .unwrap()
                .max_concurrent_syncs,
            4
        );
        let e = parse("[server]\nmax_concurrent_syncs = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("server.max_concurrent_syncs") && e.contains("between 1 and 1024"),
            "{e}"
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(c.tenants.is_empty());
    }

    #[test]
    fn full_tenant_parses() {
        let c = parse(&format!(
            r#"
            [[tenant]]
            id = "demo"
            timezone = "Europe/Paris"
            [[tenant.user]]
            username = "demo"
            password_hash = "{HASH}"
            [[tenant.api_key]]
            name = "main"
            key_hash = "{HASH}"
            [[tenant.feed]]
            name = "public"
            token_hash = "{HASH}"
            privacy = "busy"
            "#
        ))
        .unwrap();
        let t = &c.tenants[0];
        assert_eq!(t.timezone, chrono_tz::Europe::Paris);
        assert_eq!(t.name, "demo");
        assert_eq!(t.feeds[0].privacy, FeedPrivacy::Busy);
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        let err = parse(
            r#"
            [[tenant]]
            id = "demo"
            timezone = "Europe/Pariss"
            "#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("gateway.toml: tenant[0].timezone:"),
            "{err}"
        );
        assert!(err.contains("Europe/Pariss"), "{err}");

        let err = parse("[server]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.listen"), "{err}");

        let err = parse("[server]\nlisen = \"127.0.0.1:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `lisen`"), "{err}");

        let err = parse(
            "[[tenant]]\nid=\"a\"\ntimezone=\"UTC\"\n[[tenant.api_key]]\nname=\"k\"\nkey_hash=\"plain\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("tenant[0].api_key[0].key_hash"), "{err}");
        assert!(err.contains("calgate hash-password"), "{err}");
    }

    #[test]
    fn duplicate_tenants_and_users_are_refused() {
        let twice =
            "[[tenant]]\nid=\"a\"\ntimezone=\"UTC\"\n[[tenant]]\nid=\"a\"\ntimezone=\"UTC\"\n";
        assert!(
            parse(twice)
                .unwrap_err()
                .to_string()
                .contains("tenant[1].id")
        );
        let users = format!(
            "[[tenant]]\nid=\"a\"\ntimezone=\"UTC\"\n[[tenant.user]]\nusername=\"x\"\npassword_hash=\"{HASH}\"\n\
             [[tenant]]\nid=\"b\"\ntimezone=\"UTC\"\n[[tenant.user]]\nusername=\"x\"\npassword_hash=\"{HASH}\"\n"
        );
        let err = parse(&users).unwrap_err().to_string();
        assert!(err.contains("tenant[1].user[0].username"), "{err}");
    }

    #[test]
    fn opening_hours_parse_and_are_checked() {
        let base = "[[tenant]]\nid=\"a\"\ntimezone=\"UTC\"\n[tenant.opening_hours]\n";
        let c = parse(&format!(
            "{base}monday = [\"13:00-18:00\", \"09:00-12:00\"]\nsunday = [\"20:00-24:00\"]\n"
        ))
        .unwrap();
        let hours = c.tenants[0].opening_hours.as_ref().unwrap();
        assert_eq!(hours.days[0].len(), 2);
        assert_eq!(
            hours.days[0][0].0,
            NaiveTime::from_hms_opt(9, 0, 0).unwrap()
        );
        assert_eq!(hours.days[6][0].1, None, "24:00 is midnight");
        assert!(hours.days[1].is_empty());
        for (bad, key) in [
            ("funday = [\"09:00-10:00\"]", "opening_hours.funday"),
            ("monday = [\"9-10\"]", "opening_hours.monday[0]"),
            ("monday = [\"10:00-09:00\"]", "opening_hours.monday[0]"),
            (
                "monday = [\"09:00-11:00\", \"10:00-12:00\"]",
                "opening_hours.monday",
            ),
        ] {
            let err = parse(&format!("{base}{bad}\n")).unwrap_err().to_string();
            assert!(err.contains(&format!("tenant[0].{key}")), "{bad}: {err}");
        }
    }

    #[test]
    fn feed_sources_parse_and_are_checked() {
        let feed = |extra: &str| {
            format!(
                "[[tenant]]\nid=\"a\"\ntimezone=\"UTC\"\n[[tenant.feed]]\nname=\"f\"\ntoken_hash=\"{HASH}\"\n{extra}\n"
            )
        };
        let sources = |extra: &str| {
            parse(&feed(extra)).map(|c| c.tenants[0].feeds[0].include_sources.clone())
        };
        assert_eq!(sources("").unwrap(), FeedSources::None);
        assert_eq!(
            sources("include_sources = \"all\"").unwrap(),
            FeedSources::All
        );
        assert_eq!(
            sources("include_sources = [\"anna-google\", \"team\"]").unwrap(),
            FeedSources::Only(vec!["anna-google".into(), "team".into()])
        );
        for bad in [
            "include_sources = \"everything\"",
            "include_sources = [\"bookings\"]",
            "include_sources = [\"Not An Id\"]",
            "include_sources = [\"a\", \"a\"]",
        ] {
            let err = sources(bad).unwrap_err().to_string();
            assert!(
                err.contains("tenant[0].feed[0].include_sources"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn scheduling_and_emails_parse_and_are_checked() {
        let tenant = |extra: &str, users: &str| {
            parse(&format!(
                "[[tenant]]\nid=\"a\"\ntimezone=\"UTC\"\n{extra}\n{users}"
            ))
        };
        let user = |name: &str, email: &str| {
            format!(
                "[[tenant.user]]\nusername=\"{name}\"\npassword_hash=\"{HASH}\"\nemail=\"{email}\"\n"
            )
        };
        let c = tenant("", "").unwrap();
        assert_eq!(c.tenants[0].scheduling, Scheduling::Server, "the default");
        let c = tenant("scheduling = \"client\"", &user("x", "X@Salon.example")).unwrap();
        assert_eq!(c.tenants[0].scheduling, Scheduling::Client);
        assert_eq!(
            c.tenants[0].users[0].email.as_deref(),
            Some("X@Salon.example")
        );
        let err = tenant("scheduling = \"auto\"", "").unwrap_err().to_string();
        assert!(err.contains("tenant[0].scheduling"), "{err}");
        assert!(
            err.contains("\"server\"") && err.contains("\"client\""),
            "{err}"
        );
        let err = tenant("", &user("x", "not an address"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tenant[0].user[0].email"), "{err}");
        let twice = user("x", "a@b.example") + &user("y", "A@B.example");
        let err = tenant("", &twice).unwrap_err().to_string();
        assert!(err.contains("tenant[0].user[1].email"), "{err}");
        assert!(err.contains("user \"x\""), "{err}");
    }

    #[test]
    fn ics_sources_that_could_never_be_fetched_are_refused() {
        let file = |allow: &str, url: &str| {
            format!(
                "[server]\nfetch_allow = [{allow}]\n[[tenant]]\nid=\"demo\"\ntimezone=\"UTC\"\n[[tenant.source]]\nid = \"feed\"\nkind = \"ics\"\nurl = \"{url}\"\n"
            )
        };
        for url in [
            "http://127.0.0.1:8/x.ics",
            "webcal://localhost/x.ics",
            "http://[fe80::1]/x.ics",
            "http://10.1.2.3/x.ics",
        ] {
            let err = parse(&file("", url)).unwrap_err().to_string();
            assert!(
                err.contains("tenant[0].source[0].url") && err.contains("fetch_allow"),
                "{url}: {err}"
            );
        }
        assert!(parse(&file("\"127.0.0.1/32\"", "http://localhost:8/x.ics")).is_ok());
        assert!(parse(&file("\"10.0.0.0/8\"", "http://10.1.2.3/x.ics")).is_ok());
        // Names are judged when fetched, not at start.
        assert!(parse(&file("", "https://calendar.example.com/x.ics")).is_ok());
    }

    #[test]
    fn public_url_defaults_to_none() {
        assert_eq!(parse("").unwrap().public_url, None);
        let c = parse("[server]\npublic_url = \"https://cal.example.com/\"\n").unwrap();
        assert_eq!(c.public_url.as_deref(), Some("https://cal.example.com"));
    }

    #[test]
    fn admin_key_hash_is_checked() {
        assert!(parse("").unwrap().admin.is_none());
        let c = parse(&format!("[admin]\nkey_hash = \"{HASH}\"\n")).unwrap();
        assert_eq!(c.admin.map(|a| a.key_hash).as_deref(), Some(HASH));
        let err = parse("[admin]\nkey_hash = \"plain\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("admin.key_hash") && err.contains("calgate hash-password"),
            "{err}"
        );
    }

    #[test]
    fn records_are_checked_as_the_file_is() {
        use calgate_model::provisioned::{FeedSettings, ProvisionedFeed, TenantSettings};
        let mut record = ProvisionedTenant::new(
            "bakery",
            TenantSettings {
                timezone: "Europe/Berlin".into(),
                ..TenantSettings::default()
            },
        );
        let t = tenant_from_record(&record).unwrap();
        assert_eq!(t.timezone, chrono_tz::Europe::Berlin);
        assert_eq!(t.name, "bakery");
        record.feeds.push(ProvisionedFeed {
            name: "public".into(),
            token_hash: HASH.into(),
            lookup: "0011".into(),
            settings: FeedSettings {
                refresh_minutes: Some(0),
                ..FeedSettings::default()
            },
        });
        let (field, message) = tenant_from_record(&record).unwrap_err();
        assert_eq!(field, "refresh_minutes", "{message}");
        record.settings.timezone = "Mars/Olympus".into();
        assert_eq!(tenant_from_record(&record).unwrap_err().0, "timezone");
    }

    #[test]
    fn resources_parse_with_defaults_and_errors_name_the_key() {
        let base =
            "[[tenant]]\nid=\"a\"\nname=\"Salon\"\ntimezone=\"Europe/Paris\"\nbuffer_minutes=5\n";
        let c = parse(base).unwrap();
        let implicit = c.tenants[0].resources();
        assert_eq!(implicit.len(), 1);
        assert_eq!(implicit[0].id, IMPLICIT_RESOURCE);
        assert_eq!(implicit[0].name, "Salon");
        assert!(implicit[0].implicit);
        assert_eq!((implicit[0].capacity, implicit[0].buffer_minutes), (1, 5));
        let c = parse(&format!(
            "{base}[[tenant.resource]]\nid=\"anna\"\nkind=\"staff\"\n\
             [[tenant.resource]]\nid=\"room\"\nkind=\"room\"\ncapacity=10\ntimezone=\"UTC\"\nbuffer_minutes=0\n\
             [tenant.resource.opening_hours]\nmonday=[\"09:00-10:00\"]\n\
             [[tenant.source]]\nid=\"g\"\nkind=\"google\"\nresource=\"anna\"\n"
        ))
        .unwrap();
        let t = &c.tenants[0];
        let r = t.resources();
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].kind, r[0].capacity, r[0].buffer_minutes),
            (ResourceKind::Staff, 1, 5)
        );
        assert_eq!(r[0].name, "anna");
        assert_eq!(r[0].timezone, chrono_tz::Europe::Paris);
        assert_eq!((r[1].capacity, r[1].buffer_minutes), (10, 0));
        assert_eq!(r[1].timezone, chrono_tz::UTC);
        assert!(r[1].opening_hours.is_some());
        assert_eq!(t.sources[0].resource.as_deref(), Some("anna"));
        for (bad, key) in [
            (
                "[[tenant.resource]]\nid=\"Anna B\"\n",
                "tenant[0].resource[0].id",
            ),
            (
                "[[tenant.resource]]\nid=\"a\"\n[[tenant.resource]]\nid=\"a\"\n",
                "tenant[0].resource[1].id",
            ),
            (
                "[[tenant.resource]]\nid=\"a\"\n[[tenant.resource]]\nid=\"b\"\ncapacity=0\n",
                "tenant[0].resource[1].capacity",
            ),
            (
                "[[tenant.resource]]\nid=\"a\"\nkind=\"robot\"\n",
                "tenant[0].resource[0].kind",
            ),
            (
                "[[tenant.resource]]\nid=\"a\"\ntimezone=\"Mars\"\n",
                "tenant[0].resource[0].timezone",
            ),
            (
                "[[tenant.resource]]\nid=\"a\"\nbuffer_minutes=2000\n",
                "tenant[0].resource[0].buffer_minutes",
            ),
            (
                "[[tenant.resource]]\nid=\"a\"\n[tenant.resource.opening_hours]\nmonday=[\"9-10\"]\n",
                "tenant[0].resource[0].opening_hours.monday[0]",
            ),
            (
                "[[tenant.resource]]\nid=\"a\"\n[[tenant.source]]\nid=\"g\"\nkind=\"google\"\nresource=\"b\"\n",
                "tenant[0].source[0].resource",
            ),
            (
                "[[tenant.source]]\nid=\"g\"\nkind=\"google\"\nresource=\"anna\"\n",
                "tenant[0].source[0].resource",
            ),
        ] {
            let err = parse(&format!("{base}{bad}")).unwrap_err().to_string();
            assert!(err.contains(&format!("{key}:")), "{bad}: {err}");
        }
        // The implicit resource may own a source.
        let c = parse(&format!(
            "{base}[[tenant.source]]\nid=\"g\"\nkind=\"google\"\nresource=\"default\"\n"
        ))
        .unwrap();
        assert_eq!(c.tenants[0].sources[0].resource.as_deref(), Some("default"));
    }

    #[test]
    fn bad_tenant_id_is_refused() {
        let err = parse("[[tenant]]\nid=\"Demo Salon\"\ntimezone=\"UTC\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tenant[0].id"), "{err}");
    }
}
