//! `GET /freebusy` and `POST /availability`: the booking engine's questions to the
//! free/busy engine.
//!
//! Each takes an optional resource filter (`resource=a`, or `resources=a,b`
//! with `match=any|all`); without one the answers are the tenant-wide view
//! they always were, on the same code path.

use chrono::{DateTime, Utc};
use http::{Method, Request, Response, StatusCode};
use serde_json::Value;

use super::answers::{
    AvailabilityAnswer, BusyBlockView, ConflictList, FreeBusyAnswer, ResourceBusyView,
    ResourceSlotView, ResourceSlotsAnswer, ResourcesFreeBusyAnswer, SlotAvailability, SlotsAnswer,
    SpanView, instant_text,
};
use super::{json_response, parse_window, read_json_body};
use crate::app::App;
use crate::config::{Resource, TenantConfig};
use crate::freebusy::{self, ResourceBusy, ResourceMatch};
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
    let filter = resource_filter(query, tenant)?;
    let sources = checked_sources(app, tenant, sources)?;
    check_horizon(app, window, sources.as_deref())?;
    if let Some(filter) = filter {
        let busy = ResourceBusy::load(&app.store, tenant, window, sources.as_deref(), None)
            .map_err(storage_failed)?;
        let blocks_of = |r: &Resource| {
            freebusy::resource_blocks(&busy, r, window, detail)
                .iter()
                .map(|b| BusyBlockView::new(b, detail))
                .collect::<Vec<_>>()
        };
        return Ok(match (filter.several, filter.resources.as_slice()) {
            (false, [one]) => json_response(
                StatusCode::OK,
                &FreeBusyAnswer {
                    busy: blocks_of(one),
                    end: instant_text(window.end),
                    resource: Some(one.id.clone()),
                    start: instant_text(window.start),
                },
            ),
            _ => json_response(
                StatusCode::OK,
                &ResourcesFreeBusyAnswer {
                    end: instant_text(window.end),
                    resources: filter
                        .resources
                        .iter()
                        .map(|r| ResourceBusyView {
                            busy: blocks_of(r),
                            id: r.id.clone(),
                        })
                        .collect(),
                    start: instant_text(window.start),
                },
            ),
        });
    }
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
            resource: None,
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
    let filter = resource_filter(req.uri().query().unwrap_or(""), tenant)?;
    let body = read_json_body(app, req).await?;
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| Problem::malformed_json(e.to_string()))?;
    let (slots, sources) = parse_availability(&value).map_err(Problem::invalid)?;
    let sources = checked_sources(app, tenant, sources)?;
    let mut results = Vec::with_capacity(slots.len());
    for slot in &slots {
        check_horizon(app, *slot, sources.as_deref())?;
        if let Some(filter) = &filter {
            results.push(resource_availability(
                app,
                tenant,
                filter,
                *slot,
                sources.as_deref(),
            )?);
            continue;
        }
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
            resources: None,
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
    let filter = resource_filter(query, tenant)?;
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
    if let Some(filter) = filter {
        let (found, truncated) =
            freebusy::resource_slots(&app.store, tenant, &filter.resources, filter.mode, &q)
                .map_err(storage_failed)?;
        return Ok(json_response(
            StatusCode::OK,
            &ResourceSlotsAnswer {
                duration_minutes: duration,
                match_: match filter.mode {
                    ResourceMatch::Any => "any",
                    ResourceMatch::All => "all",
                },
                slots: found
                    .into_iter()
                    .map(|s| ResourceSlotView {
                        end: instant_text(s.span.end),
                        resources: s.resources,
                        start: instant_text(s.span.start),
                    })
                    .collect(),
                step_minutes: step,
                truncated,
            },
        ));
    }
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

/// Which resources a question is about (`resource=a`, or `resources=a,b`
/// with `match=any|all`, default any) and how.
struct ResourceFilter {
    resources: Vec<Resource>,
    mode: ResourceMatch,
    /// Asked with `resources=` (free/busy then answers per resource).
    several: bool,
}

/// Reads the resource filter of a query; `None` without one. Unknown or
/// repeated ids, both parameters at once and a bad `match` are refused,
/// naming the parameter.
fn resource_filter(query: &str, tenant: &TenantConfig) -> Result<Option<ResourceFilter>, Problem> {
    let (mut one, mut several, mut mode) = (None, None, None);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "resource" => one = Some(v.trim().to_owned()),
            "resources" => several = Some(v.into_owned()),
            "match" => mode = Some(v.into_owned()),
            _ => {}
        }
    }
    let bad = |field: &str, reason: String| {
        Problem::bad_request("invalid query parameters")
            .with_params(vec![FieldError::new(field, reason)])
    };
    let mode = match mode.as_deref() {
        None | Some("any") => ResourceMatch::Any,
        Some("all") => ResourceMatch::All,
        Some(other) => {
            return Err(bad(
                "match",
                format!(
                    "\"{other}\" is neither \"any\" (a slot for one of the resources) nor \"all\" (a slot needing all of them)"
                ),
            ));
        }
    };
    let (field, ids): (&str, Vec<String>) = match (one, several) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(bad(
                "resources",
                "give either resource=a or resources=a,b, not both".into(),
            ));
        }
        (Some(id), None) => ("resource", vec![id]),
        (None, Some(list)) => (
            "resources",
            list.split(',').map(|s| s.trim().to_owned()).collect(),
        ),
    };
    let known = tenant.resources();
    let mut resources: Vec<Resource> = Vec::with_capacity(ids.len());
    for id in &ids {
        if resources.iter().any(|r| &r.id == id) {
            return Err(bad(field, format!("\"{id}\" is named twice")));
        }
        match known.iter().find(|r| &r.id == id) {
            Some(r) => resources.push(r.clone()),
            None => {
                return Err(bad(
                    field,
                    format!(
                        "\"{id}\" is not a resource of this tenant; it has {} (GET …/resources lists them)",
                        known
                            .iter()
                            .map(|r| format!("\"{}\"", r.id))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
    }
    Ok(Some(ResourceFilter {
        resources,
        mode,
        several: field == "resources",
    }))
}

/// One availability slot asked about resources: which of them could take
/// one more booking there; free when any (or, with `match=all`, every) can.
fn resource_availability(
    app: &App,
    tenant: &TenantConfig,
    filter: &ResourceFilter,
    slot: Span,
    sources: Option<&[String]>,
) -> Result<SlotAvailability, Problem> {
    let busy =
        ResourceBusy::load(&app.store, tenant, slot, sources, None).map_err(storage_failed)?;
    let mut conflicts = Vec::new();
    let mut free = Vec::new();
    for resource in &filter.resources {
        let found = busy.conflicts(resource, slot);
        if found.is_empty() {
            free.push(resource.id.clone());
        }
        conflicts.extend(found);
    }
    conflicts.sort_by_key(|e| (e.span.start, e.span.end));
    let is_free = match filter.mode {
        ResourceMatch::Any => !free.is_empty(),
        ResourceMatch::All => free.len() == filter.resources.len(),
    };
    Ok(SlotAvailability {
        conflicts: ConflictList::new(&conflicts),
        end: instant_text(slot.end),
        free: is_free,
        resources: Some(free),
        start: instant_text(slot.start),
    })
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
