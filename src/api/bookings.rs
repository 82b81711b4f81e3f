//! Handlers for `/bookings` and `/bookings/{id}`.

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use sha2::{Digest, Sha256};

use super::answers::{BookingList, BookingView, ConflictList};
use super::json::{self, ParseError};
use super::json_response;
use crate::app::{ApiPrincipal, App};
use crate::bookings::{BookingError, ConflictPolicy, UpdateMode};
use crate::config::TenantConfig;
use crate::http::{Body, Problem, RequestBody, empty, if_match, if_none_match, method_not_allowed};
use crate::model::Booking;
use crate::store::IdempotencyClaim;
use crate::tenants::LiveTenant;

/// Widest window a listing may ask for.
const MAX_LIST_DAYS: i64 = 400;
/// Longest accepted Idempotency-Key.
const MAX_IDEMPOTENCY_KEY: usize = 255;

pub async fn collection(
    app: &App,
    req: Request<RequestBody>,
    tenant: &LiveTenant,
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
    req: Request<RequestBody>,
    tenant: &LiveTenant,
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
            let mut body = BookingView::new(&booking, tenant);
            // Where the booking stands in each external calendar it is pushed to.
            let exports = app.export.booking_exports(tenant, &booking)?;
            body.exports = (!exports.is_empty()).then_some(exports);
            let mut resp = json_response(StatusCode::OK, &body);
            set_etag(&mut resp, &booking);
            Ok(resp)
        }
        Method::PUT | Method::PATCH => {
            let mode = if req.method() == Method::PUT {
                UpdateMode::Replace
            } else {
                UpdateMode::Merge
            };
            let expected = if_match(req.headers())?;
            let query_allows = allow_conflict_param(req.uri().query());
            let (request, _) = read_write(app, req).await?;
            let policy = conflict_policy(query_allows || request.allow_conflict);
            let _writing = tenant.write().await?;
            let booking = app
                .bookings
                .update(
                    tenant,
                    id,
                    &request.patch,
                    mode,
                    expected.as_deref(),
                    policy,
                )
                .await
                .map_err(problem)?;
            Ok(booking_response(StatusCode::OK, &booking, tenant))
        }
        Method::DELETE => {
            let expected = if_match(req.headers())?;
            let _writing = tenant.write().await?;
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
    req: &Request<RequestBody>,
    tenant: &TenantConfig,
) -> Result<Response<Body>, Problem> {
    let window = super::parse_window(req.uri().query().unwrap_or(""), MAX_LIST_DAYS)?;
    let bookings = app.bookings.list(tenant, window).map_err(problem)?;
    let body = BookingList {
        bookings: bookings
            .iter()
            .map(|b| BookingView::new(b, tenant))
            .collect(),
    };
    Ok(json_response(StatusCode::OK, &body))
}

async fn create(
    app: &App,
    req: Request<RequestBody>,
    tenant: &LiveTenant,
    principal: &ApiPrincipal,
) -> Result<Response<Body>, Problem> {
    let idempotency_key = idempotency_key(req.headers())?;
    let path = req.uri().path().to_owned();
    let query_allows = allow_conflict_param(req.uri().query());
    let (request, body) = read_write(app, req).await?;
    let policy = conflict_policy(query_allows || request.allow_conflict);
    let claim = idempotency_key.map(|key| IdempotencyClaim {
        api_key: principal.key_name.clone(),
        key,
        fingerprint: hex::encode(Sha256::digest([path.as_bytes(), b"\0", &body].concat())),
    });
    let _writing = tenant.write().await?;
    let created = app
        .bookings
        .create(tenant, request.patch, claim, policy)
        .await
        .map_err(problem)?;
    let mut resp = booking_response(StatusCode::CREATED, &created.booking, tenant);
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

fn allow_conflict_param(query: Option<&str>) -> bool {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .any(|(k, v)| k == "allow_conflict" && (v == "true" || v == "1"))
}

fn conflict_policy(allow: bool) -> ConflictPolicy {
    if allow {
        ConflictPolicy::Allow
    } else {
        ConflictPolicy::Refuse
    }
}

/// Reads a JSON body and parses it into a write request.
async fn read_write(
    app: &App,
    req: Request<RequestBody>,
) -> Result<(json::WriteRequest, bytes::Bytes), Problem> {
    let body = super::read_json_body(app, req).await?;
    match json::parse_write(&body) {
        Ok(request) => Ok((request, body)),
        Err(ParseError::Syntax(msg)) => Err(Problem::malformed_json(msg)),
        Err(ParseError::Fields(fields)) => Err(Problem::invalid(fields)),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    // Visible ASCII only: a TAB or space would make two keys look alike in logs.
    let key = value.as_bytes();
    let visible = key.iter().all(|b| (0x21..=0x7e).contains(b));
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || !visible {
        return Err(Problem::bad_request(format!(
            "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        )));
    }
    Ok(Some(String::from_utf8_lossy(key).into_owned()))
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
        BookingError::Conflict(ref found) => Problem::new(
            StatusCode::CONFLICT,
            "booking-conflict",
            "The time is already taken",
            e.to_string(),
        )
        .with_conflicts(ConflictList::new(found)),
        BookingError::UidConflict(_) => Problem::new(
            StatusCode::CONFLICT,
            "uid-conflict",
            "UID already used",
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

fn booking_response(
    status: StatusCode,
    booking: &Booking,
    tenant: &TenantConfig,
) -> Response<Body> {
    let mut resp = json_response(status, &BookingView::new(booking, tenant));
    set_etag(&mut resp, booking);
    resp
}

fn set_etag(resp: &mut Response<Body>, booking: &Booking) {
    if let Ok(v) = HeaderValue::from_str(&booking.etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
}
