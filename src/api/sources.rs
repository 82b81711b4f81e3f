//! External calendar sources over the JSON API:
//! `GET/POST /sources`, `GET/DELETE /sources/{id}`, `POST /sources/{id}/sync`,
//! `GET /sources/{id}/logs`. The engine behind them is [`crate::sync`].

use super::answers::{
    CalendarList, CalendarView, Connected, LogList, SourceList, SourceStatusView, SourceView,
    SyncLogView,
};
use super::{json_response, read_json_body};
use crate::app::App;
use crate::config::TenantConfig;
use crate::http::{Body, Problem, RequestBody};
use crate::model::FieldError;
use crate::model::Source;
use crate::providers::{FetchMode, ProviderError, ProviderKind};
use crate::sync::SyncError;
use crate::tenants::LiveTenant;
use http::{Method, Request, Response, StatusCode};

pub async fn collection(
    app: &App,
    req: Request<RequestBody>,
    tenant: &LiveTenant,
) -> Result<Response<Body>, Problem> {
    match *req.method() {
        Method::GET => {
            let mut list = Vec::new();
            for source in app.store.sources(&tenant.id)? {
                if source.remote.is_some() {
                    list.push(source_view(app, tenant, &source)?);
                }
            }
            Ok(json_response(StatusCode::OK, &SourceList { sources: list }))
        }
        Method::POST => {
            let body = read_json_body(app, req).await?;
            let declared =
                crate::config::parse_source_json(&body).map_err(|(field, message)| {
                    Problem::invalid(vec![FieldError::new(&field, message)])
                })?;
            if let Some(resource) = &declared.resource {
                crate::config::check_source_resource(tenant, resource).map_err(|message| {
                    Problem::invalid(vec![FieldError::new("resource", message)])
                })?;
            }
            if declared.remote.kind == ProviderKind::Ics {
                // A URL no sync could ever fetch is refused now, not at every run.
                app.sync
                    .check_calendar(&declared.remote)
                    .await
                    .map_err(|e| Problem::invalid(vec![FieldError::new("url", e.to_string())]))?;
            }
            let _writing = tenant.write().await?;
            if app.store.source(&tenant.id, &declared.id)?.is_some() {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "source-exists",
                    "Source exists",
                    format!(
                        "a calendar \"{}\" exists already; pick another id or DELETE it first",
                        declared.id
                    ),
                ));
            }
            let source = Source {
                transparent: declared.transparent,
                read_only: true,
                components: vec!["VEVENT".into()],
                remote: Some(declared.remote),
                resource: declared.resource,
                ..Source::new(&declared.id, &declared.name)
            };
            app.store.put_source(&tenant.id, &source)?;
            app.store.flush().await?;
            app.sync.source_changed(&tenant.id, &source.id);
            app.export.wake();
            Ok(json_response(
                StatusCode::CREATED,
                &source_view(app, tenant, &source)?,
            ))
        }
        _ => Err(method_not_allowed("GET, POST")),
    }
}

pub async fn item(
    app: &App,
    req: Request<RequestBody>,
    tenant: &LiveTenant,
    id: &str,
    action: Option<&str>,
) -> Result<Response<Body>, Problem> {
    let source = app
        .store
        .source(&tenant.id, id)?
        .filter(|s| s.remote.is_some())
        .ok_or_else(|| Problem::not_found(format!("source \"{id}\" does not exist")))?;
    match (action, req.method().clone()) {
        (None, Method::GET) => Ok(json_response(
            StatusCode::OK,
            &source_view(app, tenant, &source)?,
        )),
        (None, Method::DELETE) => {
            // Its cached events go; events in the external calendar stay there,
            // exported bookings included, unless ?purge=true removes those first.
            let purge = matches!(query_value(&req, "purge").as_deref(), Some("true" | "1"));
            let _writing = tenant.write().await?;
            let _quiet = if purge {
                let (removed, guard) = app
                    .export
                    .purge(tenant, &source)
                    .await
                    .map_err(export_problem)?;
                tracing::info!(tenant = %tenant.id, source = id, removed, "exported events purged");
                guard
            } else {
                app.export.quiesce(&tenant.id, id).await
            };
            app.calendars.delete_source(tenant, id).await?;
            app.sync.source_changed(&tenant.id, id);
            let mut resp = Response::new(crate::http::empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            Ok(resp)
        }
        (None, Method::PATCH) => {
            let body = read_json_body(app, req).await?;
            let updated = patch_source(tenant, &source, &body)?;
            let _writing = tenant.write().await?;
            let retarget = updated.remote.as_ref().map(|r| &r.target)
                != source.remote.as_ref().map(|r| &r.target);
            app.sync
                .update_source(tenant, &updated, retarget)
                .await
                .map_err(sync_problem)?;
            Ok(json_response(
                StatusCode::OK,
                &source_view(app, tenant, &updated)?,
            ))
        }
        (Some("sync"), Method::POST) => {
            let mode = sync_mode(app, req).await?;
            let _writing = tenant.write().await?;
            let direction = source.remote.as_ref().map(|r| r.direction);
            if direction == Some(crate::model::Direction::Export) {
                // Nothing to import: deliver now, parked bookings included.
                return match app.export.sync_now(tenant, id).await {
                    Ok(log) => Ok(json_response(StatusCode::OK, &SyncLogView::from(&log))),
                    Err(e) => Err(export_problem(e)),
                };
            }
            let outcome = app.sync.run(tenant, id, mode).await;
            app.export.wake();
            match outcome {
                Ok(log) => Ok(json_response(StatusCode::OK, &SyncLogView::from(&log))),
                Err(e) => Err(sync_problem(e)),
            }
        }
        (Some("calendars"), Method::GET) => {
            let kind = source.remote.as_ref().map(|r| r.kind);
            let kind = kind.filter(|k| k.uses_oauth()).ok_or_else(|| {
                Problem::new(
                    StatusCode::CONFLICT,
                    "not-oauth",
                    "No account",
                    "only Google and Microsoft sources have an account with calendars",
                )
            })?;
            let session = app
                .connections
                .session(&tenant.id, id, kind)
                .map_err(provider_problem)?;
            let calendars = app
                .connections
                .list_calendars(kind, &session)
                .await
                .map_err(provider_problem)?;
            Ok(json_response(
                StatusCode::OK,
                &CalendarList {
                    calendars: calendars.iter().map(CalendarView::from).collect(),
                },
            ))
        }
        (Some("logs"), Method::GET) => {
            let logs = app.store.sync_logs(&tenant.id, id)?;
            Ok(json_response(
                StatusCode::OK,
                &LogList {
                    logs: logs.iter().map(SyncLogView::from).collect(),
                },
            ))
        }
        (None, _) => Err(method_not_allowed("GET, PATCH, DELETE")),
        (Some("sync"), _) => Err(method_not_allowed("POST")),
        (Some("logs"), _) => Err(method_not_allowed("GET")),
        (Some(other), _) => Err(Problem::not_found(format!(
            "sources have no \"{other}\"; use sync or logs"
        ))),
    }
}

/// The body of `POST …/sync`, all optional.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncRequest {
    mode: Option<String>,
}

fn parse_mode(field: &str, text: &str) -> Result<FetchMode, FieldError> {
    match text {
        "incremental" => Ok(FetchMode::Incremental),
        "full" => Ok(FetchMode::Full),
        other => Err(FieldError::new(
            field,
            format!("\"{other}\" is not a sync mode: use incremental or full"),
        )),
    }
}

/// The mode of `POST …/sync`: `?mode=` or a JSON body `{"mode": …}` (both may
/// be given if they agree); incremental by default.
async fn sync_mode(app: &App, req: Request<RequestBody>) -> Result<FetchMode, Problem> {
    let query = query_value(&req, "mode");
    let (parts, body) = req.into_parts();
    let bytes = crate::http::read_body(body, &parts.headers, app.config.max_body_bytes).await?;
    let in_body = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let parsed: SyncRequest = serde_json::from_slice(&bytes).map_err(|e| {
            let params = vec![FieldError::new("body", e.to_string())];
            if e.is_data() {
                Problem::invalid(params)
            } else {
                Problem::bad_request(format!("the body is not valid JSON: {e}")).with_params(params)
            }
        })?;
        parsed.mode
    };
    let from_query = query.as_deref().map(|m| parse_mode("mode", m)).transpose();
    let from_body = in_body
        .as_deref()
        .map(|m| parse_mode("body.mode", m))
        .transpose();
    match (from_query, from_body) {
        (Ok(q), Ok(b)) => match (q, b) {
            (Some(q), Some(b)) if q != b => Err(Problem::invalid(vec![FieldError::new(
                "mode",
                format!(
                    "the query says {:?} and the body {:?}: give one, or the same in both",
                    query.unwrap_or_default(),
                    in_body.unwrap_or_default()
                ),
            )])),
            (q, b) => Ok(q.or(b).unwrap_or(FetchMode::Incremental)),
        },
        (q, b) => Err(Problem::invalid(
            q.err().into_iter().chain(b.err()).collect(),
        )),
    }
}

/// Fields a source may change over the API (`PATCH`): picking the account's
/// calendar after connecting, pausing, the interval.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SourcePatch {
    calendar: Option<String>,
    enabled: Option<bool>,
    interval_minutes: Option<u32>,
}

/// `source` with the changes of a `PATCH` body applied (validated).
fn patch_source(tenant: &TenantConfig, source: &Source, body: &[u8]) -> Result<Source, Problem> {
    if tenant.sources.iter().any(|d| d.id == source.id) {
        // The file is the truth for these: a change here would be undone at start.
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "declared-in-config",
            "Declared in the configuration",
            format!(
                "source \"{}\" is declared in the configuration file; change it there",
                source.id
            ),
        ));
    }
    let patch: SourcePatch = serde_json::from_slice(body)
        .map_err(|e| Problem::invalid(vec![FieldError::new("body", e.to_string())]))?;
    let mut updated = source.clone();
    let Some(remote) = updated.remote.as_mut() else {
        return Err(Problem::not_found(format!(
            "source \"{}\" does not exist",
            source.id
        )));
    };
    let mut invalid = Vec::new();
    if let Some(calendar) = patch.calendar {
        if !remote.kind.uses_oauth() {
            invalid.push(FieldError::new(
                "calendar",
                "only Google and Microsoft sources have a calendar; an iCal source has its url",
            ));
        } else if calendar.trim().is_empty() || calendar.chars().any(char::is_control) {
            invalid.push(FieldError::new(
                "calendar",
                "must be a calendar id from GET …/calendars",
            ));
        } else {
            remote.target = calendar;
        }
    }
    if let Some(minutes) = patch.interval_minutes {
        if (1..=7 * 24 * 60).contains(&minutes) {
            remote.interval_minutes = minutes;
        } else {
            invalid.push(FieldError::new(
                "interval_minutes",
                "must be between 1 and 10080 (one week)",
            ));
        }
    }
    if let Some(enabled) = patch.enabled {
        remote.enabled = enabled;
    }
    if invalid.is_empty() {
        Ok(updated)
    } else {
        Err(Problem::invalid(invalid))
    }
}

fn source_view(app: &App, tenant: &TenantConfig, source: &Source) -> Result<SourceView, Problem> {
    let status = app.store.sync_status(&tenant.id, &source.id)?;
    let remote = source.remote.as_ref();
    let events = app.store.objects(&tenant.id, &source.id)?.len();
    let export = app.export.source_status(&tenant.id, source)?;
    Ok(SourceView {
        caldav: crate::dav::paths::calendar_href(&tenant.id, &source.id),
        direction: remote.map(|r| r.direction),
        enabled: remote.map(|r| r.enabled),
        events,
        id: source.id.clone(),
        interval_minutes: remote.map(|r| r.interval_minutes),
        kind: remote.map(|r| r.kind.name()),
        name: source.name.clone(),
        privacy: remote.map(|r| r.privacy),
        resource: source.resource.clone(),
        status: SourceStatusView::new(status, export),
        // Feed URLs carry secrets: only their host is shown.
        target: remote.map(|r| match r.kind {
            ProviderKind::Ics => crate::providers::fetch::redact_url(&r.target),
            _ => r.target.clone(),
        }),
        transparent: source.transparent,
    })
}

fn query_value(req: &Request<RequestBody>, name: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn method_not_allowed(allow: &str) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("use {allow}"),
    )
    .with_header(http::header::ALLOW, allow)
}

/// `GET /oauth/{provider}/start?tenant=&source=` (API key of the tenant) and
/// `GET /oauth/{provider}/callback?code=&state=` (the provider's redirect).
pub async fn oauth(
    app: &App,
    req: Request<RequestBody>,
    provider: &str,
    action: &str,
) -> Result<Response<Body>, Problem> {
    let kind = match provider {
        "google" => ProviderKind::Google,
        "microsoft" => ProviderKind::Microsoft,
        other => {
            return Err(Problem::not_found(format!(
                "no OAuth provider \"{other}\": use google or microsoft"
            )));
        }
    };
    match action {
        "start" => {
            let tenant_id = query_value(&req, "tenant").unwrap_or_default();
            let source_id = query_value(&req, "source").unwrap_or_default();
            let tenant = app.tenant(&tenant_id).ok_or_else(|| {
                Problem::not_found(format!("tenant \"{tenant_id}\" does not exist"))
            })?;
            let tenant = &*tenant;
            super::authenticate(app, &req, tenant).await?;
            let source = app
                .store
                .source(&tenant.id, &source_id)?
                .filter(|s| s.remote.as_ref().is_some_and(|r| r.kind == kind))
                .ok_or_else(|| {
                    Problem::not_found(format!(
                        "no {provider} source \"{source_id}\" in tenant \"{}\"",
                        tenant.id
                    ))
                })?;
            let url = app
                .connections
                .start(tenant, &source, kind)
                .map_err(provider_problem)?;
            let mut resp = Response::new(crate::http::empty());
            *resp.status_mut() = StatusCode::FOUND;
            resp.headers_mut().insert(
                http::header::LOCATION,
                http::HeaderValue::from_str(&url).map_err(|_| Problem::internal())?,
            );
            Ok(resp)
        }
        "callback" => {
            if let Some(error) = query_value(&req, "error") {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "authorization-refused",
                    "Authorization refused",
                    format!("the provider answered {error}; start the connection again to retry"),
                ));
            }
            let (Some(code), Some(state)) = (query_value(&req, "code"), query_value(&req, "state"))
            else {
                return Err(Problem::bad_request("the callback needs code and state"));
            };
            let connected = app
                .connections
                .callback(kind, &state, &code)
                .await
                .map_err(|e| match e {
                    // A replayed or forged callback is the caller's fault.
                    crate::connect::ConnectError::UnknownState => {
                        Problem::bad_request(e.to_string())
                    }
                    crate::connect::ConnectError::Gone(_) => Problem::not_found(e.to_string()),
                    crate::connect::ConnectError::Provider(e) => provider_problem(e),
                })?;
            // The source is connected: it may sync and export now.
            app.sync
                .source_changed(&connected.tenant, &connected.source);
            app.export.wake();
            Ok(json_response(
                StatusCode::OK,
                &Connected {
                    calendars: connected.calendars.iter().map(CalendarView::from).collect(),
                    connected: true,
                    source: &connected.source,
                    tenant: &connected.tenant,
                },
            ))
        }
        other => Err(Problem::not_found(format!(
            "no OAuth step \"{other}\": use start or callback"
        ))),
    }
}

pub(super) fn export_problem(e: crate::export::ExportError) -> Problem {
    use crate::export::ExportError;
    match e {
        ExportError::UnknownSource(_) => Problem::not_found(e.to_string()),
        ExportError::NotExporting(_) => Problem::new(
            StatusCode::CONFLICT,
            "not-exporting",
            "Not exporting",
            e.to_string(),
        ),
        ExportError::Provider(p) => provider_problem(p),
        ExportError::Store(s) => s.into(),
    }
}

fn provider_problem(e: ProviderError) -> Problem {
    sync_problem(SyncError::Provider(e))
}

fn sync_problem(e: SyncError) -> Problem {
    let (status, kind) = match &e {
        SyncError::UnknownSource(_) => (StatusCode::NOT_FOUND, "not-found"),
        SyncError::NotExternal(_) | SyncError::ExportOnly(_) => {
            (StatusCode::CONFLICT, "nothing-to-sync")
        }
        SyncError::AlreadyRunning(_) => (StatusCode::CONFLICT, "sync-running"),
        SyncError::Provider(ProviderError::Reauth(_)) => (StatusCode::CONFLICT, "needs-reauth"),
        SyncError::Provider(ProviderError::Refused(_)) => (StatusCode::CONFLICT, "url-refused"),
        SyncError::Provider(_) => (StatusCode::BAD_GATEWAY, "provider-error"),
        SyncError::Store(_) | SyncError::Calendar(_) => return Problem::internal(),
    };
    Problem::new(status, kind, "Sync failed", e.to_string())
}
