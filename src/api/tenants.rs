//! The provisioning API: tenants, their CalDAV users, API keys and feeds,
//! created, changed and deleted at run time with the operator key of `[admin]`.
//!
//! | call | who |
//! |---|---|
//! | `GET /api/v1/tenants` | operator |
//! | `GET /api/v1/tenants/{id}` | operator, or the tenant's own API key |
//! | `PUT/DELETE /api/v1/tenants/{id}` | operator (`?purge_exports=true`) |
//! | `PUT/DELETE /api/v1/tenants/{id}/users/{username}` | operator |
//! | `PUT/DELETE /api/v1/tenants/{id}/api-keys/{name}` | operator |
//! | `PUT/DELETE /api/v1/tenants/{id}/feeds/{name}` | operator |
//!
//! Every change is stored (flushed) first, then applied to the live directory
//! ([`crate::tenants::Tenants`]) and the verifiers, so it is in effect when the
//! answer leaves and survives a crash. Settings are checked by the very rules
//! of `gateway.toml` ([`crate::config::tenant_from_record`]); what the file
//! declares is changed there (409). Generated secrets are shown once, in the
//! 201, and kept only as argon2 hashes; they never reach the logs.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{bearer_token, json_response, read_json_body, unauthorized};
use crate::app::{
    API_KEY_PREFIX, ApiPrincipal, App, FEED_TOKEN_PREFIX, FeedPrincipal, UserPrincipal,
};
use crate::config::{FeedPrivacy, FeedSources, TenantConfig};
use crate::http::{Body, Problem, RequestBody};
use crate::model::FieldError;
use calgate_model::provisioned::{
    FeedSettings, ProvisionedFeed, ProvisionedKey, ProvisionedResource, ProvisionedTenant,
    ProvisionedUser, ResourceSettings, TenantSettings,
};

/// Who is calling a provisioning endpoint.
enum Caller {
    Operator,
    Tenant(ApiPrincipal),
}

/// What `[admin]` missing means, for the 403 answers.
const ENABLE: &str = "provisioning is not enabled: add [admin] with key_hash = \"<argon2 hash of an operator key>\" (make one with `calgate hash-password`) to gateway.toml and restart";

async fn caller(app: &App, req: &Request<RequestBody>) -> Result<Caller, Problem> {
    let key = bearer_token(req)?;
    if is_operator_key(app, key).await {
        return Ok(Caller::Operator);
    }
    match app.verify_api_key(key).await {
        Some(principal) => Ok(Caller::Tenant(principal)),
        None => Err(unauthorized(
            "the key is neither the operator key nor an API key",
            "invalid_token",
        )),
    }
}

/// Whether `key` is the operator key of `[admin]`.
pub(crate) async fn is_operator_key(app: &App, key: &str) -> bool {
    match &app.operator {
        Some(operator) => operator.verify(None, key).await.is_some(),
        None => false,
    }
}

fn forbidden(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
}

/// The operator, or a 403 saying what is needed.
pub(crate) async fn operator(app: &App, req: &Request<RequestBody>) -> Result<(), Problem> {
    match caller(app, req).await? {
        Caller::Operator => Ok(()),
        Caller::Tenant(_) if app.operator.is_none() => Err(forbidden(ENABLE)),
        Caller::Tenant(_) => Err(forbidden(
            "this call needs the operator key ([admin] in gateway.toml), not an API key",
        )),
    }
}

/// Reads are the operator's or the tenant's own key's.
async fn operator_or_own(app: &App, req: &Request<RequestBody>, id: &str) -> Result<(), Problem> {
    match caller(app, req).await? {
        Caller::Operator => Ok(()),
        Caller::Tenant(p) if p.tenant == id => Ok(()),
        Caller::Tenant(_) => Err(forbidden(format!(
            "this API key is not valid for tenant \"{id}\""
        ))),
    }
}

fn managed_in_file(what: &str) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "declared-in-config",
        "Declared in the configuration",
        format!("{what} is declared in gateway.toml; change it there"),
    )
}

fn no_tenant(id: &str) -> Problem {
    Problem::not_found(format!("tenant \"{id}\" does not exist"))
}

fn no_content() -> Response<Body> {
    let mut resp = Response::new(crate::http::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

// ---- answers ------------------------------------------------------------------

/// One entry of `GET /api/v1/tenants`.
#[derive(Serialize)]
struct TenantSummary {
    id: String,
    managed_by: &'static str,
    name: String,
}

#[derive(Serialize)]
struct TenantList {
    tenants: Vec<TenantSummary>,
}

/// A tenant's settings and the names of its credentials (never a secret).
#[derive(Serialize)]
struct TenantView {
    accept_external_moves: bool,
    api_keys: Vec<NameView>,
    buffer_minutes: u32,
    feeds: Vec<FeedView>,
    id: String,
    managed_by: &'static str,
    name: String,
    opening_hours: Option<BTreeMap<&'static str, Vec<String>>>,
    scheduling: &'static str,
    timezone: &'static str,
    users: Vec<UserView>,
}

#[derive(Serialize)]
struct NameView {
    name: String,
}

#[derive(Serialize)]
struct UserView {
    email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<String>,
    username: String,
}

#[derive(Serialize)]
struct FeedView {
    include_cancelled: bool,
    include_sources: Value,
    name: String,
    past_days: Option<u32>,
    privacy: &'static str,
    refresh_minutes: u32,
    /// The resource whose feed it is; null: the tenant's.
    resource: Option<String>,
}

/// A created API key (the secret, once) or an existing one (no secret).
#[derive(Serialize)]
struct KeyAnswer {
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    name: String,
    tenant: String,
}

/// A created feed (its token and URL, once) or updated settings.
#[derive(Serialize)]
struct FeedAnswer {
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'static str>,
    feed: FeedView,
    tenant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

#[derive(Serialize)]
struct UserAnswer {
    tenant: String,
    user: UserView,
}

const SHOWN_ONCE: &str =
    "the secret was shown when it was created and is not kept; DELETE and PUT again to rotate it";

fn managed_by(app: &App, id: &str) -> &'static str {
    if app.declared_in_file(id) {
        "file"
    } else {
        "api"
    }
}

fn tenant_view(app: &App, t: &TenantConfig) -> TenantView {
    let opening_hours = t.opening_hours.as_ref().map(|hours| {
        crate::config::WEEKDAYS
            .iter()
            .zip(&hours.days)
            .filter(|(_, periods)| !periods.is_empty())
            .map(|(day, periods)| {
                let periods = periods
                    .iter()
                    .map(|(open, close)| {
                        let close =
                            close.map_or("24:00".to_owned(), |c| c.format("%H:%M").to_string());
                        format!("{}-{close}", open.format("%H:%M"))
                    })
                    .collect();
                (*day, periods)
            })
            .collect()
    });
    TenantView {
        accept_external_moves: t.accept_external_moves,
        api_keys: t
            .api_keys
            .iter()
            .map(|k| NameView {
                name: k.name.clone(),
            })
            .collect(),
        buffer_minutes: t.buffer_minutes,
        feeds: t.feeds.iter().map(feed_view).collect(),
        id: t.id.clone(),
        managed_by: managed_by(app, &t.id),
        name: t.name.clone(),
        opening_hours,
        scheduling: match t.scheduling {
            crate::config::Scheduling::Server => "server",
            crate::config::Scheduling::Client => "client",
        },
        timezone: t.timezone.name(),
        users: t
            .users
            .iter()
            .map(|u| UserView {
                email: u.email.clone(),
                resource: u.resource.clone(),
                username: u.username.clone(),
            })
            .collect(),
    }
}

fn feed_view(f: &crate::config::FeedConfig) -> FeedView {
    FeedView {
        include_cancelled: f.include_cancelled,
        include_sources: match &f.include_sources {
            FeedSources::None => Value::Array(Vec::new()),
            FeedSources::All => Value::from("all"),
            FeedSources::Only(ids) => Value::from(ids.clone()),
        },
        name: f.name.clone(),
        past_days: f.past_days,
        privacy: match f.privacy {
            FeedPrivacy::Full => "full",
            FeedPrivacy::Busy => "busy",
        },
        refresh_minutes: f.refresh_minutes,
        resource: f.resource.clone(),
    }
}

// ---- handlers -----------------------------------------------------------------

/// `GET /api/v1/tenants`: every tenant, the operator's only.
pub async fn list(app: &App, req: Request<RequestBody>) -> Result<Response<Body>, Problem> {
    if req.method() != Method::GET {
        return Err(crate::http::method_not_allowed(req.method(), "GET"));
    }
    operator(app, &req).await?;
    let tenants = app
        .tenants
        .all()
        .iter()
        .map(|t| TenantSummary {
            id: t.id.clone(),
            managed_by: managed_by(app, &t.id),
            name: t.name.clone(),
        })
        .collect();
    Ok(json_response(StatusCode::OK, &TenantList { tenants }))
}

/// `GET/PUT/DELETE /api/v1/tenants/{id}`.
pub async fn tenant(
    app: &App,
    req: Request<RequestBody>,
    id: &str,
) -> Result<Response<Body>, Problem> {
    match *req.method() {
        Method::GET => {
            operator_or_own(app, &req, id).await?;
            let tenant = app.tenant(id).ok_or_else(|| no_tenant(id))?;
            Ok(json_response(StatusCode::OK, &tenant_view(app, &tenant)))
        }
        Method::PUT => put_tenant(app, req, id).await,
        Method::DELETE => delete_tenant(app, req, id).await,
        _ => Err(crate::http::method_not_allowed(
            req.method(),
            "GET, PUT, DELETE",
        )),
    }
}

async fn put_tenant(
    app: &App,
    req: Request<RequestBody>,
    id: &str,
) -> Result<Response<Body>, Problem> {
    operator(app, &req).await?;
    if app.declared_in_file(id) {
        return Err(managed_in_file(&format!("tenant \"{id}\"")));
    }
    let body = read_json_body(app, req).await?;
    let settings: TenantSettings = parse_body(&body, &[("timezone", Value::from("UTC"))])?;
    let _one = app.provisioning.tenant(id).await;
    let existing = app.store.tenant_record(id)?.filter(|r| !r.deleting);
    let created = existing.is_none();
    let record = match existing {
        Some(old) => ProvisionedTenant { settings, ..old },
        None => ProvisionedTenant::new(id, settings),
    };
    let tenant = store_and_apply(app, &record).await?;
    if created {
        // Nothing cached may outlive a deleted tenant of the same id.
        forget_cached(app, id);
        tracing::info!(tenant = id, "tenant provisioned");
    }
    Ok(json_response(
        created_or_ok(created),
        &tenant_view(app, &tenant),
    ))
}

async fn delete_tenant(
    app: &App,
    req: Request<RequestBody>,
    id: &str,
) -> Result<Response<Body>, Problem> {
    operator(app, &req).await?;
    if app.declared_in_file(id) {
        return Err(managed_in_file(&format!("tenant \"{id}\"")));
    }
    let purge = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .any(|(k, v)| k == "purge_exports" && matches!(v.as_ref(), "true" | "1"));
    let _one = app.provisioning.tenant(id).await;
    let mut record = app.store.tenant_record(id)?.ok_or_else(|| no_tenant(id))?;
    // Writes under way finish first, later ones wait; once the tenant is
    // removed below they are refused. Taken before the export guards: a write
    // holding its permit may wait for those (a source's DELETE or sync).
    let held = app.tenants.hold_writes(id).await;
    let sources = app.store.sources(id)?;
    // Exports are held still from here on; a purge first removes the events
    // (a provider failing keeps the tenant, so the DELETE can be repeated).
    let mut quiet = Vec::with_capacity(sources.len());
    if purge && let Some(tenant) = app.tenant(id) {
        for source in sources.iter().filter(|s| crate::export::exports(s)) {
            let (removed, guard) = app
                .export
                .purge(&tenant, source)
                .await
                .map_err(super::sources::export_problem)?;
            tracing::info!(tenant = id, source = %source.id, removed, "exported events purged");
            quiet.push(guard);
        }
    }
    // Durable intent first: a crash from here on is finished at the next start.
    record.deleting = true;
    app.store.put_tenant_record(&record).await?;
    // A record the directory does not serve (it failed validation) has no writes to fence.
    let held = held.map(|held| app.tenants.remove(held));
    app.credentials().forget(id);
    // Runs under way finish (later ones see the tenant gone) before its data goes.
    app.sync.tenant_removed(id);
    app.sync.wait_for_tenant(id).await;
    if !purge {
        for source in &sources {
            quiet.push(app.export.quiesce(id, &source.id).await);
        }
    }
    app.store.delete_tenant_data(id).await?;
    app.store.delete_tenant_record(id).await?;
    forget_cached(app, id);
    drop(quiet);
    drop(held);
    tracing::info!(tenant = id, "tenant deleted with all its data");
    Ok(no_content())
}

/// Finishes deletions a crash interrupted (records marked `deleting`), before
/// the gateway serves.
pub async fn finish_interrupted_deletions(app: &App) -> Result<(), crate::store::StoreError> {
    for id in &app.interrupted_deletions {
        app.store.delete_tenant_data(id).await?;
        app.store.delete_tenant_record(id).await?;
        tracing::info!(tenant = %id, "an interrupted tenant deletion was finished");
    }
    Ok(())
}

fn forget_cached(app: &App, id: &str) {
    app.dav_listings.forget_tenant(id);
    app.dav_plans.forget_tenant(id);
    app.feeds.forget_tenant(id);
}

/// The provisioned record of `id` for a change of its users, keys or feeds
/// (the operator's; 404 unknown, 409 the file's).
async fn record_for_change(
    app: &App,
    req: &Request<RequestBody>,
    id: &str,
) -> Result<ProvisionedTenant, Problem> {
    operator(app, req).await?;
    if app.declared_in_file(id) {
        return Err(managed_in_file(&format!(
            "tenant \"{id}\" (with its users, keys and feeds)"
        )));
    }
    app.store
        .tenant_record(id)?
        .filter(|r| !r.deleting)
        .ok_or_else(|| no_tenant(id))
}

/// Checks `record` as the file's rules would, stores it (durably), then puts
/// its settings in the live directory.
async fn store_and_apply(
    app: &App,
    record: &ProvisionedTenant,
) -> Result<Arc<TenantConfig>, Problem> {
    let tenant = crate::config::tenant_from_record(record)
        .map_err(|(field, message)| Problem::invalid(vec![FieldError::new(&field, message)]))?;
    app.store.put_tenant_record(record).await?;
    let tenant = Arc::new(tenant);
    app.tenants.insert(Arc::clone(&tenant));
    Ok(tenant)
}

/// The body of `PUT …/users/{username}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    password: String,
    email: Option<String>,
    /// The resource the user is (see `[[tenant.user]]` `resource`).
    resource: Option<String>,
}

/// `PUT/DELETE /api/v1/tenants/{id}/users/{username}`.
pub async fn user(
    app: &App,
    req: Request<RequestBody>,
    id: &str,
    username: &str,
) -> Result<Response<Body>, Problem> {
    match *req.method() {
        Method::PUT => put_user(app, req, id, username).await,
        Method::DELETE => {
            let record = record_for_change(app, &req, id).await?;
            let _one = app.provisioning.tenant(id).await;
            let mut record = fresh(app, record)?;
            let before = record.users.len();
            record.users.retain(|u| u.username != username);
            if record.users.len() == before {
                return Err(Problem::not_found(format!(
                    "user \"{username}\" does not exist in tenant \"{id}\""
                )));
            }
            store_and_apply(app, &record).await?;
            app.users
                .remove(|p| p.tenant == id && p.username == username);
            // Their scheduling messages go with them: a user created again
            // under the name must not read them.
            app.store.clear_inbox(id, username).await?;
            Ok(no_content())
        }
        _ => Err(crate::http::method_not_allowed(req.method(), "PUT, DELETE")),
    }
}

async fn put_user(
    app: &App,
    req: Request<RequestBody>,
    id: &str,
    username: &str,
) -> Result<Response<Body>, Problem> {
    let record = record_for_change(app, &req, id).await?;
    let body = read_json_body(app, req).await?;
    let body: UserBody = parse_body(&body, &[("password", Value::from("x"))])?;
    if body.password.is_empty() || body.password.len() > 1024 {
        return Err(Problem::invalid(vec![FieldError::new(
            "password",
            "must be 1 to 1024 bytes",
        )]));
    }
    let password_hash = hash(body.password).await?;
    let _one = app.provisioning.tenant(id).await;
    let _names = app.provisioning.user_names.lock().await;
    let mut record = fresh(app, record)?;
    // CalDAV principals are addressed by user name alone.
    let taken = app
        .tenants
        .all()
        .iter()
        .any(|t| t.id != id && t.users.iter().any(|u| u.username == username));
    if taken {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "username-taken",
            "User name taken",
            format!(
                "user \"{username}\" exists in another tenant; CalDAV user names are unique across tenants, pick another"
            ),
        ));
    }
    let user = ProvisionedUser {
        username: username.to_owned(),
        password_hash: password_hash.clone(),
        email: body.email,
        resource: body.resource,
    };
    let created = match record.users.iter_mut().find(|u| u.username == username) {
        Some(old) => {
            *old = user;
            false
        }
        None => {
            record.users.push(user);
            true
        }
    };
    let tenant = store_and_apply(app, &record).await?;
    // The old password stops working as the new one starts.
    app.users
        .remove(|p| p.tenant == id && p.username == username);
    app.users.add(
        Some(username),
        &password_hash,
        UserPrincipal {
            tenant: id.to_owned(),
            username: username.to_owned(),
        },
    );
    let stored = tenant.users.iter().find(|u| u.username == username);
    let answer = UserAnswer {
        tenant: id.to_owned(),
        user: UserView {
            email: stored.and_then(|u| u.email.clone()),
            resource: stored.and_then(|u| u.resource.clone()),
            username: username.to_owned(),
        },
    };
    Ok(json_response(created_or_ok(created), &answer))
}

/// `PUT/DELETE /api/v1/tenants/{id}/api-keys/{name}`.
pub async fn api_key(
    app: &App,
    req: Request<RequestBody>,
    id: &str,
    name: &str,
) -> Result<Response<Body>, Problem> {
    let method = req.method().clone();
    if method != Method::PUT && method != Method::DELETE {
        return Err(crate::http::method_not_allowed(req.method(), "PUT, DELETE"));
    }
    let record = record_for_change(app, &req, id).await?;
    let _one = app.provisioning.tenant(id).await;
    let mut record = fresh(app, record)?;
    let exists = record.api_keys.iter().any(|k| k.name == name);
    if method == Method::DELETE {
        if !exists {
            return Err(Problem::not_found(format!(
                "API key \"{name}\" does not exist in tenant \"{id}\""
            )));
        }
        record.api_keys.retain(|k| k.name != name);
        store_and_apply(app, &record).await?;
        app.api_keys
            .remove(|p| p.tenant == id && p.key_name == name);
        tracing::info!(tenant = id, key = name, "API key revoked");
        return Ok(no_content());
    }
    if exists {
        return Ok(json_response(
            StatusCode::OK,
            &KeyAnswer {
                detail: Some(SHOWN_ONCE),
                key: None,
                name: name.to_owned(),
                tenant: id.to_owned(),
            },
        ));
    }
    let secret = crate::auth::generate_secret(API_KEY_PREFIX);
    let lookup = crate::auth::lookup_of(&secret);
    let key_hash = hash(secret.clone()).await?;
    record.api_keys.push(ProvisionedKey {
        name: name.to_owned(),
        key_hash: key_hash.clone(),
        lookup: lookup.clone(),
    });
    store_and_apply(app, &record).await?;
    app.api_keys.add(
        Some(&lookup),
        &key_hash,
        ApiPrincipal {
            tenant: id.to_owned(),
            key_name: name.to_owned(),
        },
    );
    tracing::info!(tenant = id, key = name, "API key created");
    Ok(json_response(
        StatusCode::CREATED,
        &KeyAnswer {
            detail: None,
            key: Some(secret),
            name: name.to_owned(),
            tenant: id.to_owned(),
        },
    ))
}

/// `PUT/DELETE /api/v1/tenants/{id}/feeds/{name}`.
pub async fn feed(
    app: &App,
    req: Request<RequestBody>,
    id: &str,
    name: &str,
) -> Result<Response<Body>, Problem> {
    let method = req.method().clone();
    if method != Method::PUT && method != Method::DELETE {
        return Err(crate::http::method_not_allowed(req.method(), "PUT, DELETE"));
    }
    let record = record_for_change(app, &req, id).await?;
    let settings: Option<FeedSettings> = if method == Method::PUT {
        let body = if req.headers().contains_key(http::header::CONTENT_TYPE) {
            read_json_body(app, req).await?
        } else {
            // Every field has a default: a bare PUT is a feed of all bookings.
            bytes::Bytes::from_static(b"{}")
        };
        Some(parse_body(&body, &[])?)
    } else {
        None
    };
    let _one = app.provisioning.tenant(id).await;
    let mut record = fresh(app, record)?;
    let existing = record.feeds.iter().position(|f| f.name == name);
    let Some(settings) = settings else {
        let Some(at) = existing else {
            return Err(Problem::not_found(format!(
                "feed \"{name}\" does not exist in tenant \"{id}\""
            )));
        };
        record.feeds.remove(at);
        store_and_apply(app, &record).await?;
        app.feed_tokens.remove(|p| p.tenant == id && p.feed == name);
        app.feeds.forget_tenant(id);
        tracing::info!(tenant = id, feed = name, "feed deleted");
        return Ok(no_content());
    };
    let (token, detail) = match existing {
        Some(at) => {
            record.feeds[at].settings = settings;
            (None, Some(SHOWN_ONCE))
        }
        None => {
            let token = crate::auth::generate_secret(FEED_TOKEN_PREFIX);
            record.feeds.push(ProvisionedFeed {
                name: name.to_owned(),
                token_hash: hash(token.clone()).await?,
                lookup: crate::auth::lookup_of(&token),
                settings,
            });
            (Some(token), None)
        }
    };
    let tenant = store_and_apply(app, &record).await?;
    app.feeds.forget_tenant(id);
    let feed = tenant
        .feeds
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(Problem::internal)?;
    if token.is_some()
        && let Some(stored) = record.feeds.iter().find(|f| f.name == name)
    {
        app.feed_tokens.add(
            Some(&stored.lookup),
            &stored.token_hash,
            FeedPrincipal {
                tenant: id.to_owned(),
                feed: name.to_owned(),
            },
        );
        tracing::info!(tenant = id, feed = name, "feed created");
    }
    let url = token
        .as_ref()
        .map(|t| format!("{}/feeds/{id}/{t}.ics", app.public_url()));
    Ok(json_response(
        created_or_ok(token.is_some()),
        &FeedAnswer {
            detail,
            feed: feed_view(feed),
            tenant: id.to_owned(),
            token,
            url,
        },
    ))
}

/// `GET/PUT/DELETE /api/v1/tenants/{id}/resources/{resource}`: GET for the
/// operator or the tenant's key; changes are the operator's.
pub async fn resource(
    app: &App,
    req: Request<RequestBody>,
    id: &str,
    resource: &str,
) -> Result<Response<Body>, Problem> {
    match *req.method() {
        Method::GET => {
            operator_or_own(app, &req, id).await?;
            let tenant = app.tenant(id).ok_or_else(|| no_tenant(id))?;
            let found = tenant.resources().into_iter().find(|r| r.id == resource);
            let found = found.ok_or_else(|| no_resource(id, resource))?;
            Ok(json_response(
                StatusCode::OK,
                &crate::api::answers::ResourceView::from(&found),
            ))
        }
        Method::PUT => put_resource(app, req, id, resource).await,
        Method::DELETE => delete_resource(app, req, id, resource).await,
        _ => Err(crate::http::method_not_allowed(
            req.method(),
            "GET, PUT, DELETE",
        )),
    }
}

fn no_resource(id: &str, resource: &str) -> Problem {
    Problem::not_found(format!(
        "resource \"{resource}\" does not exist in tenant \"{id}\""
    ))
}

async fn put_resource(
    app: &App,
    req: Request<RequestBody>,
    id: &str,
    resource: &str,
) -> Result<Response<Body>, Problem> {
    let record = record_for_change(app, &req, id).await?;
    let body = if req.headers().contains_key(http::header::CONTENT_TYPE) {
        read_json_body(app, req).await?
    } else {
        // Every field has a default: a bare PUT is a capacity-1 resource.
        bytes::Bytes::from_static(b"{}")
    };
    let settings: ResourceSettings = parse_body(&body, &[])?;
    let _one = app.provisioning.tenant(id).await;
    let mut record = fresh(app, record)?;
    let created = match record.resources.iter_mut().find(|r| r.id == resource) {
        Some(existing) => {
            existing.settings = settings;
            false
        }
        None => {
            record.resources.push(ProvisionedResource {
                id: resource.to_owned(),
                settings,
            });
            true
        }
    };
    let tenant = store_and_apply(app, &record).await?;
    let found = tenant.resources().into_iter().find(|r| r.id == resource);
    let found = found.ok_or_else(Problem::internal)?;
    if created {
        tracing::info!(tenant = id, resource, "resource provisioned");
    }
    Ok(json_response(
        created_or_ok(created),
        &crate::api::answers::ResourceView::from(&found),
    ))
}

/// Refused while a source is attached to the resource or a booking still to
/// come takes it: those would be left naming a resource that is gone.
async fn delete_resource(
    app: &App,
    req: Request<RequestBody>,
    id: &str,
    resource: &str,
) -> Result<Response<Body>, Problem> {
    let record = record_for_change(app, &req, id).await?;
    let _one = app.provisioning.tenant(id).await;
    let mut record = fresh(app, record)?;
    let Some(at) = record.resources.iter().position(|r| r.id == resource) else {
        return Err(no_resource(id, resource));
    };
    let in_use = |what: String| {
        Problem::new(
            StatusCode::CONFLICT,
            "resource-in-use",
            "Resource in use",
            format!("resource \"{resource}\" {what}; move or remove them first"),
        )
    };
    let sources: Vec<String> = app
        .store
        .sources(id)?
        .into_iter()
        .filter(|s| s.resource.as_deref() == Some(resource))
        .map(|s| s.id)
        .collect();
    if !sources.is_empty() {
        return Err(in_use(format!(
            "has calendars attached ({})",
            sources.join(", ")
        )));
    }
    let linked: Vec<String> = record
        .users
        .iter()
        .filter(|u| u.resource.as_deref() == Some(resource))
        .map(|u| format!("user {}", u.username))
        .chain(
            record
                .feeds
                .iter()
                .filter(|f| f.settings.resource.as_deref() == Some(resource))
                .map(|f| format!("feed {}", f.name)),
        )
        .collect();
    if !linked.is_empty() {
        return Err(in_use(format!("is linked to {}", linked.join(", "))));
    }
    // Bookings still to come, from the time index (to the end of time).
    let now = chrono::Utc::now().timestamp_millis();
    let taken = app
        .store
        .bookings_in(id, crate::model::Span::new(now, i64::MAX))?
        .iter()
        .filter(|b| {
            b.status != crate::model::BookingStatus::Cancelled
                && b.resources.iter().any(|r| r == resource)
        })
        .count();
    if taken > 0 {
        return Err(in_use(format!(
            "is taken by {taken} booking(s) still to come"
        )));
    }
    record.resources.remove(at);
    store_and_apply(app, &record).await?;
    tracing::info!(tenant = id, resource, "resource deleted");
    Ok(no_content())
}

/// The record as stored now (another change may have landed while this one
/// read its body), under the provisioning lock.
fn fresh(app: &App, read: ProvisionedTenant) -> Result<ProvisionedTenant, Problem> {
    app.store
        .tenant_record(&read.id)?
        .filter(|r| !r.deleting)
        .ok_or_else(|| no_tenant(&read.id))
}

/// argon2 of a secret, on the blocking pool (it takes tens of milliseconds).
async fn hash(secret: String) -> Result<String, Problem> {
    tokio::task::spawn_blocking(move || crate::auth::hash_secret(&secret))
        .await
        .map_err(|_| Problem::internal())?
        .map_err(|e| {
            tracing::error!(error = %e, "hashing a secret failed");
            Problem::internal()
        })
}

/// A JSON object body as `T`, each problem named by its field: missing
/// `required` ones, unknown ones, values of the wrong type. `required` pairs
/// each required field with a valid value, used to try the fields one at a time.
fn parse_body<T: DeserializeOwned>(body: &[u8], required: &[(&str, Value)]) -> Result<T, Problem> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Problem::malformed_json(e.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(Problem::invalid(vec![FieldError::new(
            "body",
            "must be a JSON object",
        )]));
    };
    let missing: Vec<FieldError> = required
        .iter()
        .filter(|(name, _)| fields.get(*name).is_none_or(Value::is_null))
        .map(|(name, _)| FieldError::new(*name, "is required"))
        .collect();
    if !missing.is_empty() {
        return Err(Problem::invalid(missing));
    }
    match serde_json::from_value(Value::Object(fields.clone())) {
        Ok(parsed) => Ok(parsed),
        Err(whole) => {
            // Which field is wrong: each alone, beside valid required ones.
            let mut errors = Vec::new();
            for (name, value) in &fields {
                let mut alone: serde_json::Map<String, Value> = required
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect();
                alone.insert(name.clone(), value.clone());
                if let Err(e) = serde_json::from_value::<T>(Value::Object(alone)) {
                    errors.push(FieldError::new(name, e.to_string()));
                }
            }
            if errors.is_empty() {
                errors.push(FieldError::new("body", whole.to_string()));
            }
            Err(Problem::invalid(errors))
        }
    }
}
