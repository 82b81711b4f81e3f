//! `GET /freebusy` and `POST /availability`: the booking engine's questions to the
//! free/busy engine.

use chrono::{DateTime, Utc};
use http::{Method, Request, Response, StatusCode};
use serde_json::Value;

use super::answers::{
    AvailabilityAnswer, BusyBlockView, ConflictList, FreeBusyAnswer, SlotAvailability, SlotsAnswer,
    SpanView, instant_text,
};
use super::{json_response, parse_window, read_json_body};
use crate::app::App;
use crate::config::TenantConfig;
use crate::freebusy;
use crate::http::{Body, Problem, RequestBody, method_not_allowed};
use crate::model::{BOOKINGS_SOURCE, FieldError, Span};

/// Widest free/busy window: occurrences are materialised for a bounded horizon.
const MAX_FREEBUSY_DAYS: i64 = 366;
/// Widest slot search, and most slots returned.
const MAX_SLOT_DAYS: i64 = 62;
const MAX_SLOT_RESULTS: usize = 2000;
/// Most slots one availability request may ask about.
const MAX_SLOTS: usize = 200;

pub fn freebusy(
    app: &App,
    req: Request<RequestBody>,
    tenant: &TenantConfig,
) -> Result<Response<Body>, Problem> {
    if req.method() != Method::GET {
        return Err(method_not_allowed(req.method(), "GET"));
    }
    let query = req.uri().query().unwrap_or("");
    let window = parse_window(query, MAX_FREEBUSY_DAYS)?;
    let mut sources = None;
    let mut detail = false;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "sources" => {
                sources = Some(
                    v.split(',')
                        .map(|s| s.trim().to_owned())
                        .collect::<Vec<_>>(),
                )
            }
            "detail" => detail = v == "true" || v == "1",
            _ => {}
        }
    }
    let sources = checked_sources(app, tenant, sources)?;
    check_horizon(app, window, sources.as_deref())?;
    let blocks = freebusy::busy_blocks(&app.store, &tenant.id, window, sources.as_deref(), detail)
        .map_err(storage_failed)?;
    Ok(json_response(
        StatusCode::OK,
        &FreeBusyAnswer {
            busy: blocks
                .iter()
                .map(|b| BusyBlockView::new(b, detail))
                .collect(),
            end: instant_text(window.end),
            start: instant_text(window.start),
        },
    ))
}

pub async fn availability(
    app: &App,
    req: Request<RequestBody>,
    tenant: &TenantConfig,
) -> Result<Response<Body>, Problem> {
    if req.method() != Method::POST {
        return Err(method_not_allowed(req.method(), "POST"));
    }
    let body = read_json_body(app, req).await?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON",
            e.to_string(),
        )
    })?;
    let (slots, sources) = parse_availability(&value).map_err(Problem::invalid)?;
    let sources = checked_sources(app, tenant, sources)?;
    let mut results = Vec::with_capacity(slots.len());
    for slot in &slots {
        check_horizon(app, *slot, sources.as_deref())?;
        let conflicts: Vec<_> =
            freebusy::entries(&app.store, &tenant.id, *slot, sources.as_deref())
                .map_err(storage_failed)?
                .into_iter()
                .filter(|e| e.span.overlaps(slot))
                .collect();
        // Bounded like a 409's list.
        results.push(SlotAvailability {
            conflicts: ConflictList::new(&conflicts),
            end: instant_text(slot.end),
            free: conflicts.is_empty(),
            start: instant_text(slot.start),
        });
    }
    Ok(json_response(
        StatusCode::OK,
        &AvailabilityAnswer { slots: results },
    ))
}

pub fn slots(
    app: &App,
    req: Request<RequestBody>,
    tenant: &TenantConfig,
) -> Result<Response<Body>, Problem> {
    if req.method() != Method::GET {
        return Err(method_not_allowed(req.method(), "GET"));
    }
    let query = req.uri().query().unwrap_or("");
    let window = parse_window(query, MAX_SLOT_DAYS)?;
    check_horizon(app, window, None)?;
    let (mut duration, mut step) = (None, None);
    let mut errors = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let target = match k.as_ref() {
            "duration" => &mut duration,
            "step" => &mut step,
            _ => continue,
        };
        match minutes(&v) {
            Some(m) if (5..=24 * 60).contains(&m) => *target = Some(m),
            _ => errors.push(FieldError::new(
                k.as_ref(),
                format!("\"{v}\" is not a length of 5 to 1440 minutes (e.g. 30 or PT30M)"),
            )),
        }
    }
    if duration.is_none() && errors.is_empty() {
        errors.push(FieldError::new(
            "duration",
            "is required (minutes, e.g. 30, or PT30M)",
        ));
    }
    let (Some(duration), true) = (duration, errors.is_empty()) else {
        return Err(Problem::bad_request("invalid query parameters").with_params(errors));
    };
    let step = step.unwrap_or(duration);
    let q = freebusy::SlotQuery {
        window,
        duration_ms: duration * 60_000,
        step_ms: step * 60_000,
        not_before: Utc::now().timestamp_millis(),
        limit: MAX_SLOT_RESULTS,
    };
    let (found, truncated) =
        freebusy::bookable_slots(&app.store, tenant, &q).map_err(storage_failed)?;
    Ok(json_response(
        StatusCode::OK,
        &SlotsAnswer {
            buffer_minutes: tenant.buffer_minutes,
            duration_minutes: duration,
            slots: found.iter().map(SpanView::from).collect(),
            step_minutes: step,
            truncated,
        },
    ))
}

/// Minutes from `30` or an ISO 8601 duration such as `PT1H30M`.
fn minutes(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().or_else(|| {
        let d = crate::ical::parse::parse_duration(text)?;
        (d.num_seconds() % 60 == 0).then(|| d.num_minutes())
    })
}

/// Slots to check, and the sources to check them against (None: all).
type AvailabilityRequest = (Vec<Span>, Option<Vec<String>>);

/// `{"slots": [{"start", "end"}], "sources"?: [..]}`
fn parse_availability(value: &Value) -> Result<AvailabilityRequest, Vec<FieldError>> {
    let mut errors = Vec::new();
    let Some(obj) = value.as_object() else {
        return Err(vec![FieldError::new(
            "(body)",
            "must be a JSON object with \"slots\"",
        )]);
    };
    for key in obj.keys() {
        if key != "slots" && key != "sources" {
            errors.push(FieldError::new(
                key.as_str(),
                "is not an availability field (slots, sources)",
            ));
        }
    }
    let sources = match obj.get("sources") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let names: Vec<String> = items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            if names.len() != items.len() {
                errors.push(FieldError::new("sources", "must be a list of source ids"));
            }
            Some(names)
        }
        Some(_) => {
            errors.push(FieldError::new("sources", "must be a list of source ids"));
            None
        }
    };
    let mut slots = Vec::new();
    match obj.get("slots").and_then(Value::as_array) {
        None => errors.push(FieldError::new(
            "slots",
            "is required: a list of {\"start\", \"end\"}",
        )),
        Some(items) if items.is_empty() || items.len() > MAX_SLOTS => errors.push(FieldError::new(
            "slots",
            format!("must list 1 to {MAX_SLOTS} slots"),
        )),
        Some(items) => {
            for (i, item) in items.iter().enumerate() {
                let time = |key: &str| {
                    item.get(key)
                        .and_then(Value::as_str)
                        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                        .map(|t| t.with_timezone(&Utc))
                };
                match (time("start"), time("end")) {
                    (Some(start), Some(end)) if end > start => {
                        slots.push(Span::from_instants(start, end))
                    }
                    (Some(_), Some(_)) => errors.push(FieldError::new(
                        format!("slots[{i}].end"),
                        "must be after start",
                    )),
                    _ => errors.push(FieldError::new(
                        format!("slots[{i}]"),
                        "needs start and end as RFC 3339 date-times with offset",
                    )),
                }
            }
        }
    }
    if errors.is_empty() {
        Ok((slots, sources))
    } else {
        Err(errors)
    }
}

/// Rejects unknown source ids, naming them.
fn checked_sources(
    app: &App,
    tenant: &TenantConfig,
    sources: Option<Vec<String>>,
) -> Result<Option<Vec<String>>, Problem> {
    let Some(sources) = sources else {
        return Ok(None);
    };
    let known = app.calendars.source_ids(tenant).map_err(|e| {
        tracing::error!(error = %e, "sources could not be read");
        Problem::internal()
    })?;
    let unknown: Vec<&String> = sources.iter().filter(|s| !known.contains(s)).collect();
    if !unknown.is_empty() {
        return Err(
            Problem::bad_request("unknown source").with_params(vec![FieldError::new(
                "sources",
                format!(
                    "unknown source(s) {}; this tenant has {}",
                    unknown
                        .iter()
                        .map(|s| format!("\"{s}\""))
                        .collect::<Vec<_>>()
                        .join(", "),
                    known.join(", ")
                ),
            )]),
        );
    }
    Ok(Some(sources))
}

/// Calendar sources are materialised only within the horizon: refuse to answer
/// (rather than answer wrongly) outside it. Bookings are indexed without limit.
fn check_horizon(app: &App, window: Span, sources: Option<&[String]>) -> Result<(), Problem> {
    let only_bookings = sources.is_some_and(|s| s.iter().all(|x| x == BOOKINGS_SOURCE));
    let horizon = app.calendars.horizon().window(Utc::now());
    if only_bookings || (window.start >= horizon.start && window.end <= horizon.end) {
        return Ok(());
    }
    let as_text = |ms| instant_text(ms).unwrap_or_default();
    Err(Problem::bad_request("outside the free/busy horizon").with_params(vec![FieldError::new(
        "start",
        format!(
            "calendar events are indexed from {} to {} (server.busy_horizon_*_days); ask within that range",
            as_text(horizon.start),
            as_text(horizon.end)
        ),
    )]))
}

fn storage_failed(e: crate::store::StoreError) -> Problem {
    tracing::error!(error = %e, "free/busy read failed");
    Problem::internal()
}
