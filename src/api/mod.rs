//! The booking-engine JSON API under `/api/v1/tenants/{tenant}/...`.
//!
//! Authentication is `Authorization: Bearer <api key>`, scoped to one tenant:
//! unknown tenant → 404, missing or wrong key → 401, another tenant's key → 403.
//! Handlers translate between HTTP/JSON and the [`crate::bookings`] engine.

mod bookings;
pub mod json;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::app::{ApiPrincipal, App};
use crate::config::TenantConfig;
use crate::http::{Body, Problem};

pub async fn route(
    app: &App,
    req: Request<Incoming>,
    tenant_id: &str,
    rest: &[&str],
) -> Result<Response<Body>, Problem> {
    let tenant = app
        .tenant(tenant_id)
        .ok_or_else(|| Problem::not_found(format!("tenant \"{tenant_id}\" does not exist")))?;
    let principal = authenticate(app, &req, tenant).await?;
    match rest {
        ["bookings"] => bookings::collection(app, req, tenant, &principal).await,
        ["bookings", id] => bookings::item(app, req, tenant, id).await,
        _ => Err(Problem::not_found(format!(
            "nothing is served at {}",
            req.uri().path()
        ))),
    }
}

async fn authenticate(
    app: &App,
    req: &Request<Incoming>,
    tenant: &TenantConfig,
) -> Result<ApiPrincipal, Problem> {
    let unauthorized = |detail: &str, error: &str| {
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
    };
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("send Authorization: Bearer <api key>", "invalid_request"))?;
    let key = header
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
        })?;
    let principal = app
        .api_keys
        .verify(None, key)
        .await
        .ok_or_else(|| unauthorized("the API key is not valid", "invalid_token"))?;
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
