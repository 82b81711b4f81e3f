//! Tenants provisioned at run time (`PUT /api/v1/tenants/{id}`): the record the
//! store keeps for each, with its CalDAV users, API keys and feeds.
//!
//! Settings are kept as the client sent them, in the field names and forms of a
//! `[[tenant]]` table in `gateway.toml`, so the server checks a stored record with
//! the very rules it checks the file with (at every start too) and this crate
//! needs no validation of its own. Secrets are only ever argon2 PHC hashes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One provisioned tenant: its settings and credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvisionedTenant {
    pub id: String,
    pub settings: TenantSettings,
    #[serde(default)]
    pub users: Vec<ProvisionedUser>,
    #[serde(default)]
    pub api_keys: Vec<ProvisionedKey>,
    #[serde(default)]
    pub feeds: Vec<ProvisionedFeed>,
    /// Staff, rooms, equipment (`PUT …/resources/{id}`); none: the implicit one.
    #[serde(default)]
    pub resources: Vec<ProvisionedResource>,
    /// Set (durably) before its data is removed: a deletion a crash interrupted
    /// is finished at the next start instead of leaving half a tenant.
    #[serde(default)]
    pub deleting: bool,
}

/// What `PUT /api/v1/tenants/{id}` sets: the `[[tenant]]` fields besides
/// credentials, sources and webhook.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    pub name: Option<String>,
    pub timezone: String,
    pub opening_hours: Option<BTreeMap<String, Vec<String>>>,
    pub buffer_minutes: Option<u32>,
    pub scheduling: Option<String>,
    pub accept_external_moves: Option<bool>,
}

/// A resource: what `PUT …/resources/{id}` sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvisionedResource {
    pub id: String,
    pub settings: ResourceSettings,
}

/// The fields of a `[[tenant.resource]]` table besides its id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSettings {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub timezone: Option<String>,
    pub opening_hours: Option<BTreeMap<String, Vec<String>>>,
    pub buffer_minutes: Option<u32>,
    pub capacity: Option<i64>,
    /// Its calendar user address for free/busy lookups (`mailto:`).
    pub email: Option<String>,
}

/// A CalDAV user: the password only as its argon2 hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvisionedUser {
    pub username: String,
    pub password_hash: String,
    pub email: Option<String>,
    /// The resource the user is linked to (`resource` on `[[tenant.user]]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// A booking-API key: its argon2 hash and `lookup`, a digest prefix of the
/// secret that finds the entry without trying every key's hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvisionedKey {
    pub name: String,
    pub key_hash: String,
    pub lookup: String,
}

/// A feed: the `[[tenant.feed]]` settings, the token's hash and lookup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvisionedFeed {
    pub name: String,
    pub token_hash: String,
    pub lookup: String,
    pub settings: FeedSettings,
}

/// What `PUT …/feeds/{name}` sets (the fields of `[[tenant.feed]]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedSettings {
    pub privacy: Option<String>,
    pub refresh_minutes: Option<u32>,
    pub past_days: Option<u32>,
    pub include_cancelled: Option<bool>,
    /// `"all"` or a list of source ids, as in the file.
    pub include_sources: Option<serde_json::Value>,
    /// The resource whose feed this is; absent (and in records stored before
    /// resources existed): the tenant's feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

impl ProvisionedTenant {
    pub fn new(id: impl Into<String>, settings: TenantSettings) -> Self {
        ProvisionedTenant {
            id: id.into(),
            settings,
            users: Vec::new(),
            api_keys: Vec::new(),
            feeds: Vec::new(),
            resources: Vec::new(),
            deleting: false,
        }
    }
}
