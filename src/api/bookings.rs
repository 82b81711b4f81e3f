//! Handlers for `/bookings` and `/bookings/{id}`.

use chrono::{DateTime, Duration};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::json::{self, ParseError};
use crate::app::{ApiPrincipal, App};
use crate::bookings::{BookingError, BookingPatch, UpdateMode};
use crate::config::TenantConfig;
use crate::http::{
    Body, Problem, empty, full, if_match, if_none_match, method_not_allowed, read_body,
};
use crate::model::{Booking, FieldError, Span};
use crate::store::IdempotencyClaim;

/// Widest window a listing may ask for.
const MAX_LIST_DAYS: i64 = 400;
/// Longest accepted Idempotency-Key.
const MAX_IDEMPOTENCY_KEY: usize = 255;

pub async fn collection(
    app: &App,
    req: Request<Incoming>,
    tenant: &TenantConfig,
    principal: &ApiPrincipal,
) -> Result<Response<Body>, Problem> {
    match *req.method() {
        Method::GET => list(app, &req, tenant),
        Method::POST => create(app, req, tenant, principal).await,
        ref other => Err(method_not_allowed(other, "GET, POST")),
    }
}

pub async fn item(
    app: &App,
    req: Request<Incoming>,
    tenant: &TenantConfig,
    id: &str,
) -> Result<Response<Body>, Problem> {
    match *req.method() {
        Method::GET | Method::HEAD => {
            let booking = app.bookings.get(tenant, id).map_err(problem)?;
            if if_none_match(req.headers(), &booking.etag) {
                let mut resp = Response::new(empty());
                *resp.status_mut() = StatusCode::NOT_MODIFIED;
                set_etag(&mut resp, &booking);
                return Ok(resp);
            }
            Ok(booking_response(StatusCode::OK, &booking))
        }
        Method::PUT | Method::PATCH => {
            let mode = if req.method() == Method::PUT {
                UpdateMode::Replace
            } else {
                UpdateMode::Merge
            };
            let expected = if_match(req.headers())?;
            let (patch, _) = read_patch(app, req).await?;
            let booking = app
                .bookings
                .update(tenant, id, &patch, mode, expected.as_deref())
                .await
                .map_err(problem)?;
            Ok(booking_response(StatusCode::OK, &booking))
        }
        Method::DELETE => {
            let expected = if_match(req.headers())?;
            app.bookings
                .delete(tenant, id, expected.as_deref())
                .await
                .map_err(problem)?;
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            Ok(resp)
        }
        ref other => Err(method_not_allowed(other, "GET, HEAD, PUT, PATCH, DELETE")),
    }
}

fn list(
    app: &App,
    req: &Request<Incoming>,
    tenant: &TenantConfig,
) -> Result<Response<Body>, Problem> {
    let window = query_window(req.uri().query().unwrap_or(""))?;
    let bookings = app.bookings.list(tenant, window).map_err(problem)?;
    let body = json!({
        "bookings": bookings.iter().map(json::booking).collect::<Vec<_>>(),
    });
    Ok(json_response(StatusCode::OK, &body))
}

async fn create(
    app: &App,
    req: Request<Incoming>,
    tenant: &TenantConfig,
    principal: &ApiPrincipal,
) -> Result<Response<Body>, Problem> {
    let idempotency_key = idempotency_key(req.headers())?;
    let path = req.uri().path().to_owned();
    let (patch, body) = read_patch(app, req).await?;
    let claim = idempotency_key.map(|key| IdempotencyClaim {
        api_key: principal.key_name.clone(),
        key,
        fingerprint: hex::encode(Sha256::digest([path.as_bytes(), b"\0", &body].concat())),
    });
    let created = app
        .bookings
        .create(tenant, patch, claim)
        .await
        .map_err(problem)?;
    let mut resp = booking_response(StatusCode::CREATED, &created.booking);
    let location = format!(
        "/api/v1/tenants/{}/bookings/{}",
        tenant.id, created.booking.id
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if created.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// Checks the media type, reads the body and parses it into a patch.
async fn read_patch(
    app: &App,
    req: Request<Incoming>,
) -> Result<(BookingPatch, bytes::Bytes), Problem> {
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
            "send the booking as Content-Type: application/json",
        ));
    }
    let (parts, body) = req.into_parts();
    let body = read_body(body, &parts.headers, app.config.max_body_bytes).await?;
    match json::parse_patch(&body) {
        Ok(patch) => Ok((patch, body)),
        Err(ParseError::Syntax(msg)) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON",
            msg,
        )),
        Err(ParseError::Fields(fields)) => Err(Problem::invalid(fields)),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or("").trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || key.contains('\0') {
        return Err(Problem::bad_request(format!(
            "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

/// `?start=...&end=...` as a span, at most [`MAX_LIST_DAYS`] wide.
fn query_window(query: &str) -> Result<Span, Problem> {
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
    if end - start > Duration::days(MAX_LIST_DAYS) {
        return Err(bad(vec![FieldError::new(
            "end",
            format!("the range may span at most {MAX_LIST_DAYS} days; page through longer ranges"),
        )]));
    }
    Ok(Span::new(start.timestamp_millis(), end.timestamp_millis()))
}

fn problem(e: BookingError) -> Problem {
    match e {
        BookingError::NotFound(id) => {
            Problem::not_found(format!("booking \"{id}\" does not exist"))
        }
        BookingError::Invalid(fields) => Problem::invalid(fields),
        BookingError::PreconditionFailed { .. } => Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            "Precondition failed",
            e.to_string(),
        ),
        BookingError::IdempotencyKeyReused => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency-Key reused",
            e.to_string(),
        ),
        BookingError::Store(err) => {
            tracing::error!(error = %err, "booking storage failed");
            Problem::internal()
        }
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn booking_response(status: StatusCode, booking: &Booking) -> Response<Body> {
    let mut resp = json_response(status, &json::booking(booking));
    set_etag(&mut resp, booking);
    resp
}

fn set_etag(resp: &mut Response<Body>, booking: &Booking) {
    if let Ok(v) = HeaderValue::from_str(&booking.etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
}
