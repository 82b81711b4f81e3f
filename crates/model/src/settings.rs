//! A tenant's validated settings: who it is, its users, keys, feeds, sources,
//! opening hours and webhook, and the OAuth applications of the providers.
//!
//! The server reads them from `gateway.toml` (and, for sources, the API) and
//! checks them there; engines take them as plain data. They live here, at the
//! bottom, so every layer can name them without depending on the server.

use chrono::NaiveTime;
use chrono_tz::Tz;
use serde::Deserialize;

/// OAuth applications registered with the providers.
#[derive(Debug, Clone, Default)]
pub struct ProvidersConfig {
    pub google: Option<ProviderConfig>,
    pub microsoft: Option<ProviderConfig>,
}

#[derive(Clone)]
pub struct ProviderConfig {
    pub client_id: String,
    pub client_secret: String,
    pub auth_url: String,
    pub token_url: String,
    /// API root: `https://www.googleapis.com/calendar/v3`, `https://graph.microsoft.com/v1.0`.
    pub api_base: String,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("auth_url", &self.auth_url)
            .field("token_url", &self.token_url)
            .field("api_base", &self.api_base)
            .finish()
    }
}

/// An external calendar declared in the file (also creatable over the API).
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub id: String,
    pub name: String,
    pub transparent: bool,
    pub remote: crate::model::RemoteSource,
    /// The resource whose calendar this is; `None`: the whole tenant's (it
    /// blocks every resource).
    pub resource: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub id: String,
    pub name: String,
    pub timezone: Tz,
    pub users: Vec<UserConfig>,
    pub api_keys: Vec<ApiKeyConfig>,
    pub feeds: Vec<FeedConfig>,
    /// When bookings may take place; `None`: any time.
    pub opening_hours: Option<OpeningHours>,
    /// Free time kept before and after every booking when offering slots.
    pub buffer_minutes: u32,
    /// Where new conflicts are POSTed.
    pub webhook: Option<WebhookConfig>,
    pub sources: Vec<SourceConfig>,
    /// Exported events moved in the external calendar move their booking (with
    /// the usual conflict check); otherwise the move is only reported.
    pub accept_external_moves: bool,
    /// Who delivers invitations between the tenant's CalDAV users.
    pub scheduling: Scheduling,
    /// Declared resources (`[[tenant.resource]]`); empty: the one implicit
    /// resource of [`TenantConfig::resources`].
    pub resources: Vec<ResourceConfig>,
}

impl TenantConfig {
    /// A tenant with nothing but its id, name and zone: no users, keys,
    /// feeds, sources or webhook, open at any time, no buffer, server-side
    /// scheduling. The file and the provisioning API fill in the rest.
    pub fn new(id: impl Into<String>, name: impl Into<String>, timezone: Tz) -> Self {
        TenantConfig {
            id: id.into(),
            name: name.into(),
            timezone,
            users: Vec::new(),
            api_keys: Vec::new(),
            feeds: Vec::new(),
            opening_hours: None,
            buffer_minutes: 0,
            webhook: None,
            sources: Vec::new(),
            accept_external_moves: false,
            scheduling: Scheduling::Server,
            resources: Vec::new(),
        }
    }

    /// The tenant's resources as bookings and slots see them, with the
    /// tenant's zone, hours and buffer filled in where a resource sets none.
    /// A tenant that declares none has exactly one, [`IMPLICIT_RESOURCE`]:
    /// this is the one place that knows it.
    pub fn resources(&self) -> Vec<Resource> {
        if self.resources.is_empty() {
            return vec![Resource {
                id: IMPLICIT_RESOURCE.to_owned(),
                name: self.name.clone(),
                kind: ResourceKind::Other,
                timezone: self.timezone,
                opening_hours: self.opening_hours.clone(),
                buffer_minutes: self.buffer_minutes,
                capacity: 1,
                implicit: true,
            }];
        }
        self.resources
            .iter()
            .map(|r| Resource {
                id: r.id.clone(),
                name: r.name.clone(),
                kind: r.kind,
                timezone: r.timezone.unwrap_or(self.timezone),
                opening_hours: r
                    .opening_hours
                    .clone()
                    .or_else(|| self.opening_hours.clone()),
                buffer_minutes: r.buffer_minutes.unwrap_or(self.buffer_minutes),
                capacity: r.capacity,
                implicit: false,
            })
            .collect()
    }

    /// Whether the tenant declares resources (else it has the implicit one).
    pub fn declares_resources(&self) -> bool {
        !self.resources.is_empty()
    }

    /// Whether `id` names one of the tenant's resources (the implicit one
    /// included, on a tenant that declares none).
    pub fn has_resource(&self, id: &str) -> bool {
        if self.resources.is_empty() {
            id == IMPLICIT_RESOURCE
        } else {
            self.resources.iter().any(|r| r.id == id)
        }
    }

    /// The calendar user address of declared resource `id` (free/busy
    /// lookups in the scheduling outbox): `mailto:` its e-mail when it has
    /// one, else `urn:x-calgate:resource:{tenant}:{id}`.
    pub fn resource_address(&self, resource: &ResourceConfig) -> String {
        match &resource.email {
            Some(email) => format!("mailto:{email}"),
            None => format!("urn:x-calgate:resource:{}:{}", self.id, resource.id),
        }
    }

    /// The declared resource whose calendar user address is `address`
    /// (`mailto:` compared without case, as e-mail addresses are).
    pub fn resource_by_address(&self, address: &str) -> Option<&ResourceConfig> {
        let address = address.trim();
        self.resources.iter().find(|r| {
            let own = self.resource_address(r);
            match own.strip_prefix("mailto:") {
                Some(_) => own.eq_ignore_ascii_case(address),
                None => own == address,
            }
        })
    }

    /// The resource CalDAV user `username` is linked to, if any.
    pub fn user_resource(&self, username: &str) -> Option<&str> {
        self.users
            .iter()
            .find(|u| u.username == username)
            .and_then(|u| u.resource.as_deref())
    }

    /// The ids of the tenant's resources, for messages.
    pub fn resource_ids(&self) -> Vec<String> {
        self.resources().into_iter().map(|r| r.id).collect()
    }
}

/// The id of the one resource of a tenant that declares none.
pub const IMPLICIT_RESOURCE: &str = "default";

/// What a resource is (`kind` in `[[tenant.resource]]`); only shown, never
/// acted on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    Staff,
    Room,
    Equipment,
    #[default]
    Other,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Staff => "staff",
            ResourceKind::Room => "room",
            ResourceKind::Equipment => "equipment",
            ResourceKind::Other => "other",
        }
    }
}

/// A resource as declared (`[[tenant.resource]]`): what it leaves out comes
/// from the tenant (see [`TenantConfig::resources`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceConfig {
    pub id: String,
    pub name: String,
    pub kind: ResourceKind,
    pub timezone: Option<Tz>,
    pub opening_hours: Option<OpeningHours>,
    pub buffer_minutes: Option<u32>,
    /// Bookings it holds at once (≥ 1): a class with ten seats has 10.
    pub capacity: u32,
    /// Its e-mail address: its calendar user address (`mailto:`) for
    /// free/busy lookups; see [`TenantConfig::resource_address`].
    pub email: Option<String>,
}

/// A resource with the tenant's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub id: String,
    pub name: String,
    pub kind: ResourceKind,
    pub timezone: Tz,
    pub opening_hours: Option<OpeningHours>,
    pub buffer_minutes: u32,
    pub capacity: u32,
    /// The one resource of a tenant that declares none.
    pub implicit: bool,
}

/// Who schedules (RFC 6638): `scheduling = "server" | "client"` on a tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scheduling {
    /// The gateway advertises `calendar-auto-schedule`: it delivers invitations,
    /// replies and cancellations between the tenant's users (their scheduling
    /// inboxes) and records SCHEDULE-STATUS; clients then send none themselves.
    #[default]
    Server,
    /// Nothing is advertised and nothing delivered: calendar clients send their
    /// own (e-mail) invitations, and objects are stored exactly as written.
    Client,
}

#[derive(Clone)]
pub struct WebhookConfig {
    pub url: String,
    /// HMAC-SHA256 key for the signature header (never logged).
    pub secret: String,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Weekly opening periods in the tenant's local time, Monday first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpeningHours {
    /// `days[0]` is Monday; each period is `[open, close)`; `close` may be
    /// midnight (written `24:00`), stored as `None`.
    pub days: [Vec<(NaiveTime, Option<NaiveTime>)>; 7],
}

#[derive(Debug, Clone)]
pub struct UserConfig {
    pub username: String,
    /// argon2 PHC string, as printed by `calgate hash-password`.
    pub password_hash: String,
    /// The user's e-mail address: one of their calendar user addresses, so
    /// attendees picked from an address book reach them.
    pub email: Option<String>,
    /// The resource the user is (a stylist logging in with their own
    /// calendar client): their CalDAV home shows that resource's bookings and
    /// calendars, and their new events book it. `None`: the whole tenant.
    pub resource: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ApiKeyConfig {
    /// A label for logs and idempotency scoping; never the key itself.
    pub name: String,
    pub key_hash: String,
}

/// What a published .ics feed reveals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedPrivacy {
    /// Titles, customers, locations and notes.
    Full,
    /// Opaque "Busy" blocks only.
    Busy,
}

#[derive(Debug, Clone)]
pub struct FeedConfig {
    pub name: String,
    pub token_hash: String,
    pub privacy: FeedPrivacy,
    /// Suggested polling interval for subscribers, in minutes.
    pub refresh_minutes: u32,
    /// Only bookings ending at most this many days ago; `None` publishes all history.
    pub past_days: Option<u32>,
    pub include_cancelled: bool,
    /// Calendar sources whose events are published as opaque busy blocks.
    pub include_sources: FeedSources,
    /// The resource whose feed this is: only bookings taking it, and only
    /// sources of it or of the whole tenant. `None`: the tenant's feed.
    pub resource: Option<String>,
}

/// Which calendar sources (imported calendars, CalDAV calendars) a feed publishes
/// as busy blocks, besides the bookings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FeedSources {
    /// Bookings only.
    #[default]
    None,
    /// Every source of the tenant, including ones created later over the API.
    All,
    /// These source ids (a source that does not exist yet contributes nothing).
    Only(Vec<String>),
}

impl FeedSources {
    /// Whether the feed publishes any source at all.
    pub fn any(&self) -> bool {
        match self {
            FeedSources::None => false,
            FeedSources::All => true,
            FeedSources::Only(ids) => !ids.is_empty(),
        }
    }

    /// Whether the source `id` is published.
    pub fn includes(&self, id: &str) -> bool {
        match self {
            FeedSources::None => false,
            FeedSources::All => true,
            FeedSources::Only(ids) => ids.iter().any(|x| x == id),
        }
    }
}
