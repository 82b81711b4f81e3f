//! `GET|HEAD /feeds/{tenant}/{token}.ics`: the webcal subscription endpoint.
//!
//! An unknown tenant and a wrong token get the same 404, so the URL space reveals
//! nothing. Conditional requests are answered from the feed's validators alone.

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use super::{
    Body, Problem, RequestBody, empty, full, http_date, if_none_match, method_not_allowed,
    parse_http_date,
};
use crate::app::App;

pub async fn serve(
    app: &Arc<App>,
    req: Request<RequestBody>,
    tenant_id: &str,
    file: &str,
) -> Result<Response<Body>, Problem> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(method_not_allowed(req.method(), "GET, HEAD"));
    }
    let no_such_feed = || Problem::not_found("no such feed");
    let token = file.strip_suffix(".ics").ok_or_else(no_such_feed)?;
    let principal = app
        .verify_feed_token(token)
        .await
        .filter(|p| p.tenant == tenant_id)
        .ok_or_else(no_such_feed)?;
    let tenant = &*app.tenant(tenant_id).ok_or_else(no_such_feed)?;
    let feed = tenant
        .feeds
        .iter()
        .find(|f| f.name == principal.feed)
        .ok_or_else(no_such_feed)?;

    let now = chrono::Utc::now();
    let storage_failed = |e: String| {
        tracing::error!(error = %e, "feed could not be read");
        Problem::internal()
    };
    let validators = app
        .feeds
        .validators(tenant, feed, now)
        .map_err(|e| storage_failed(e.to_string()))?;
    let headers = req.headers();
    let not_modified = if headers.contains_key(header::IF_NONE_MATCH) {
        if_none_match(headers, &validators.etag)
    } else {
        headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date)
            .is_some_and(|since| validators.last_modified <= since)
    };

    let mut resp = if not_modified {
        let mut r = Response::new(empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let doc = match app.feeds.cached(tenant, feed, &validators) {
            Some(doc) => doc,
            None => render_off_runtime(app, &tenant.id, &feed.name, now)
                .await
                .map_err(storage_failed)?,
        };
        let mut r = Response::new(full(doc.body.clone()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/calendar; charset=utf-8"),
        );
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(doc.body.len()));
        if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{}.ics\"", tenant.id)) {
            r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&validators.etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&http_date(validators.last_modified)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    // Subscribers may keep a copy but must revalidate; the feed is tenant-private.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    Ok(resp)
}

/// Renders on the blocking pool: a large feed takes tens of milliseconds of CPU.
async fn render_off_runtime(
    app: &Arc<App>,
    tenant_id: &str,
    feed_name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Arc<crate::feeds::FeedDocument>, String> {
    let (app, tenant_id, feed_name) = (Arc::clone(app), tenant_id.to_owned(), feed_name.to_owned());
    tokio::task::spawn_blocking(move || {
        let tenant = app.tenant(&tenant_id).ok_or("tenant vanished")?;
        let feed = tenant
            .feeds
            .iter()
            .find(|f| f.name == feed_name)
            .ok_or("feed vanished")?;
        app.feeds
            .document(&tenant, feed, now)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("feed rendering failed: {e}"))?
}
