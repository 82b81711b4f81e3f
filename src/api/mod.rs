//! The booking-engine JSON API under `/api/v1/tenants/{tenant}/...`.
//!
//! Authentication is `Authorization: Bearer <api key>`, scoped to one tenant:
//! unknown tenant → 404, missing or wrong key → 401, another tenant's key → 403.
//! A write holds the tenant's write permit ([`crate::tenants::LiveTenant::write`])
//! from after its body is read to its answer, so a tenant deleted meanwhile is
//! answered 404 and never written to.
//! Handlers translate between HTTP/JSON and the [`crate::bookings`] engine; what
//! they answer is typed in [`answers`]. [`tenants`] is the provisioning API
//! (the operator key of `[admin]`).

pub mod answers;
mod bookings;
mod conflicts;
mod freebusy;
mod sources;
pub use sources::oauth;
pub mod json;
pub mod tenants;

use chrono::{DateTime, Duration};
use http::{Request, Response, StatusCode, header};

use crate::model::{FieldError, Span};

use crate::app::{ApiPrincipal, App};
use crate::config::TenantConfig;
use crate::http::{Body, Problem, RequestBody};

pub async fn route(
    app: &App,
    req: Request<RequestBody>,
    tenant_id: &str,
    rest: &[&str],
) -> Result<Response<Body>, Problem> {
    // Provisioning (the operator's, and the tenant itself): before the lookup,
    // since a PUT creates the tenant.
    match rest {
        [] => return tenants::tenant(app, req, tenant_id).await,
        ["users", name] => return tenants::user(app, req, tenant_id, name).await,
        ["api-keys", name] => return tenants::api_key(app, req, tenant_id, name).await,
        ["feeds", name] => return tenants::feed(app, req, tenant_id, name).await,
        ["resources", name] => return tenants::resource(app, req, tenant_id, name).await,
        _ => {}
    }
    // Found with its write fence: handlers that write take a permit once the
    // body is read (see `crate::tenants`).
    let tenant = app
        .tenants
        .live(tenant_id)
        .ok_or_else(|| Problem::not_found(format!("tenant \"{tenant_id}\" does not exist")))?;
    let tenant = &tenant;
    let principal = authenticate(app, &req, tenant).await?;
    match rest {
        ["bookings"] => bookings::collection(app, req, tenant, &principal).await,
        ["bookings", id] => bookings::item(app, req, tenant, id).await,
        ["freebusy"] => freebusy::freebusy(app, req, tenant),
        ["availability"] => freebusy::availability(app, req, tenant).await,
        ["slots"] => freebusy::slots(app, req, tenant),
        ["conflicts"] => conflicts::list(app, &req, tenant),
        ["conflicts", id, "acknowledge"] => conflicts::acknowledge(app, &req, tenant, id).await,
        ["resources"] => resources(&req, tenant),
        ["sources"] => sources::collection(app, req, tenant).await,
        ["sources", id] => sources::item(app, req, tenant, id, None).await,
        ["sources", id, action] => sources::item(app, req, tenant, id, Some(action)).await,
        _ => Err(Problem::not_found(format!(
            "nothing is served at {}",
            req.uri().path()
        ))),
    }
}

/// `GET /api/v1/scheduler` (operator): how the sync scheduler keeps up:
/// sources queued and due, runs under way, and how late runs started.
pub async fn scheduler(app: &App, req: Request<RequestBody>) -> Result<Response<Body>, Problem> {
    if req.method() != http::Method::GET {
        return Err(crate::http::method_not_allowed(req.method(), "GET"));
    }
    tenants::operator(app, &req).await?;
    Ok(json_response(StatusCode::OK, &app.sync.report()))
}

/// `GET …/resources`: the tenant's resources as bookings see them, the
/// implicit one of a tenant that declares none included.
fn resources(req: &Request<RequestBody>, tenant: &TenantConfig) -> Result<Response<Body>, Problem> {
    if req.method() != http::Method::GET {
        return Err(crate::http::method_not_allowed(req.method(), "GET"));
    }
    let resources = tenant.resources();
    Ok(json_response(
        StatusCode::OK,
        &answers::ResourceList {
            resources: resources.iter().map(answers::ResourceView::from).collect(),
        },
    ))
}

/// The key name bookings record when the operator key made them.
pub const OPERATOR_KEY_NAME: &str = "operator";

pub(crate) async fn authenticate(
    app: &App,
    req: &Request<RequestBody>,
    tenant: &TenantConfig,
) -> Result<ApiPrincipal, Problem> {
    let key = bearer_token(req)?;
    let principal = match app.verify_api_key(key).await {
        Some(principal) => principal,
        // The operator may act for any tenant (a platform connecting its
        // businesses' calendars); tried second, so tenants' keys cost no more.
        None if tenants::is_operator_key(app, key).await => ApiPrincipal {
            tenant: tenant.id.clone(),
            key_name: OPERATOR_KEY_NAME.to_owned(),
        },
        None => return Err(unauthorized("the API key is not valid", "invalid_token")),
    };
    if principal.tenant != tenant.id {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            format!("this API key is not valid for tenant \"{}\"", tenant.id),
        ));
    }
    Ok(principal)
}

/// A 401 with the Bearer challenge (`error` as RFC 6750 names it).
pub(crate) fn unauthorized(detail: &str, error: &str) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Unauthorized",
        detail,
    )
    .with_header(
        header::WWW_AUTHENTICATE,
        &format!("Bearer realm=\"calgate\", error=\"{error}\""),
    )
}

/// The key of `Authorization: Bearer <key>`, or a 401 saying what to send.
pub(crate) fn bearer_token(req: &Request<RequestBody>) -> Result<&str, Problem> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("send Authorization: Bearer <api key>", "invalid_request"))?;
    header
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            unauthorized(
                "the Authorization header must be \"Bearer <api key>\"",
                "invalid_request",
            )
        })
}

/// RFC 3339 UTC text of an index instant, as a JSON value (null when out of range).
pub fn instant_json(ms: i64) -> serde_json::Value {
    answers::instant_text(ms).into()
}

/// `?start=...&end=...` as a span, at most `max_days` wide.
pub fn parse_window(query: &str, max_days: i64) -> Result<Span, Problem> {
    let (mut start, mut end) = (None, None);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "start" => start = Some(v.into_owned()),
            "end" => end = Some(v.into_owned()),
            _ => {}
        }
    }
    let mut errors = Vec::new();
    let mut parse = |name: &str, value: Option<String>| match value {
        None => {
            errors.push(FieldError::new(
                name,
                "query parameter is required (RFC 3339 date-time)",
            ));
            None
        }
        Some(v) => match DateTime::parse_from_rfc3339(&v) {
            Ok(t) => Some(t),
            Err(_) => {
                errors.push(FieldError::new(
                    name,
                    format!("\"{v}\" is not an RFC 3339 date-time with offset"),
                ));
                None
            }
        },
    };
    let (start, end) = (parse("start", start), parse("end", end));
    let bad = |errors: Vec<FieldError>| {
        Problem::bad_request("invalid query parameters").with_params(errors)
    };
    let (Some(start), Some(end)) = (start, end) else {
        return Err(bad(errors));
    };
    if end <= start {
        return Err(bad(vec![FieldError::new("end", "must be after start")]));
    }
    if end - start > Duration::days(max_days) {
        return Err(bad(vec![FieldError::new(
            "end",
            format!("the range may span at most {max_days} days; split longer ranges"),
        )]));
    }
    Ok(Span::new(start.timestamp_millis(), end.timestamp_millis()))
}

/// Checks the JSON media type and reads the body within the configured limit.
pub async fn read_json_body(app: &App, req: Request<RequestBody>) -> Result<bytes::Bytes, Problem> {
    let media_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let is_json = media_type
        .as_deref()
        .is_some_and(|t| t == "application/json" || t.ends_with("+json"));
    if !is_json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the body as Content-Type: application/json",
        ));
    }
    let (parts, body) = req.into_parts();
    crate::http::read_body(body, &parts.headers, app.config.max_body_bytes).await
}

/// A JSON response carrying one of the [`answers`].
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Body> {
    let json = match serde_json::to_vec(body) {
        Ok(json) => json,
        Err(e) => {
            // Only a map with non-string keys fails, and no answer has one.
            tracing::error!(error = %e, "answer could not be serialised");
            return Problem::internal().into_response();
        }
    };
    let mut resp = Response::new(crate::http::full(json));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
