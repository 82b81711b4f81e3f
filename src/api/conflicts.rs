//! `/conflicts`: the tenant's conflicts found after the fact, a page at a time,
//! and acknowledging one.

use http::{Request, Response, StatusCode};

use super::answers::{ConflictPage, ConflictView};
use super::json_response;
use crate::app::App;
use crate::config::TenantConfig;
use crate::http::{Body, Problem, RequestBody};
use crate::model::{Conflict, FieldError};

/// Page size when the request names none.
const DEFAULT_LIMIT: usize = 100;
/// Largest page a request may ask for.
const MAX_LIMIT: usize = 1000;

/// What a listing asks for.
struct ListQuery {
    keep: fn(&Conflict) -> bool,
    /// Only conflicts of bookings taking this resource (`resource=`).
    resource: Option<String>,
    limit: usize,
    /// Where the previous page ended (decoded `cursor`).
    after: Option<Vec<u8>>,
}

fn parse_query(query: &str) -> Result<ListQuery, Problem> {
    let (mut status, mut limit, mut cursor, mut resource) = (None, None, None, None);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "status" => status = Some(v.into_owned()),
            "resource" => resource = Some(v.into_owned()),
            "limit" => limit = Some(v.into_owned()),
            "cursor" => cursor = Some(v.into_owned()),
            _ => {}
        }
    }
    let keep: fn(&Conflict) -> bool = match status.as_deref().unwrap_or("open") {
        "open" => |c| c.resolved.is_none() && c.acknowledged.is_none(),
        "acknowledged" => |c| c.resolved.is_none() && c.acknowledged.is_some(),
        "resolved" => |c| c.resolved.is_some(),
        "all" => |_| true,
        other => {
            return Err(
                Problem::bad_request("invalid query parameters").with_params(vec![
                    FieldError::new(
                        "status",
                        format!("\"{other}\" is not one of open, acknowledged, resolved, all"),
                    ),
                ]),
            );
        }
    };
    let mut errors = Vec::new();
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                errors.push(FieldError::new(
                    "limit",
                    format!("\"{text}\" is not a whole number from 1 to {MAX_LIMIT}"),
                ));
                DEFAULT_LIMIT
            }
        },
    };
    let after = match cursor {
        None => None,
        Some(text) => match hex::decode(&text) {
            Ok(bytes) if !bytes.is_empty() => Some(bytes),
            _ => {
                errors.push(FieldError::new(
                    "cursor",
                    "is not a next_cursor this API returned; start again without it",
                ));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    Ok(ListQuery {
        keep,
        resource,
        limit,
        after,
    })
}

/// `GET /conflicts?status=open|acknowledged|resolved|all&limit=&cursor=` (default:
/// open, i.e. neither resolved nor acknowledged), ordered by calendar source and
/// object; `next_cursor` continues the listing when there is more.
pub fn list(
    app: &App,
    req: &Request<RequestBody>,
    tenant: &TenantConfig,
) -> Result<Response<Body>, Problem> {
    if req.method() != http::Method::GET {
        return Err(crate::http::method_not_allowed(req.method(), "GET"));
    }
    let q = parse_query(req.uri().query().unwrap_or(""))?;
    if let Some(resource) = &q.resource
        && !tenant.has_resource(resource)
    {
        return Err(
            Problem::bad_request("invalid query parameters").with_params(vec![FieldError::new(
                "resource",
                format!(
                    "\"{resource}\" is not a resource of this tenant; it has {}",
                    tenant.resource_ids().join(", ")
                ),
            )]),
        );
    }
    // A booking stored before the tenant declared resources takes them all;
    // a booking gone since keeps its conflicts listed.
    let takes = |c: &Conflict| match &q.resource {
        None => true,
        Some(r) => match app.store.booking(&tenant.id, &c.booking_id) {
            Ok(Some(b)) => b.takes(r),
            _ => true,
        },
    };
    let keep = |c: &Conflict| (q.keep)(c) && takes(c);
    let page = app
        .store
        .conflicts_page(&tenant.id, q.after.as_deref(), q.limit, &keep)
        .map_err(|e| {
            tracing::error!(error = %e, "conflicts could not be read");
            Problem::internal()
        })?;
    let body = ConflictPage {
        conflicts: page.conflicts.iter().map(ConflictView::from).collect(),
        next_cursor: page.next.map(hex::encode),
    };
    Ok(json_response(StatusCode::OK, &body))
}

pub async fn acknowledge(
    app: &App,
    req: &Request<RequestBody>,
    tenant: &crate::tenants::LiveTenant,
    id: &str,
) -> Result<Response<Body>, Problem> {
    if req.method() != http::Method::POST {
        return Err(crate::http::method_not_allowed(req.method(), "POST"));
    }
    let _writing = tenant.write().await?;
    let conflict = app
        .conflicts
        .acknowledge(tenant, id)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "conflict could not be acknowledged");
            Problem::internal()
        })?
        .ok_or_else(|| Problem::not_found(format!("conflict \"{id}\" does not exist")))?;
    Ok(json_response(
        StatusCode::OK,
        &ConflictView::from(&conflict),
    ))
}
