//! HTTP plumbing on hyper 1.x: accept loop, graceful shutdown, request ids, access
//! logs, routing, body limits and conditional-request helpers.
//!
//! Handlers live with their protocol ([`crate::api`] for JSON, [`feeds`] for .ics);
//! this module decides which one runs and turns their errors into responses.
//! [`handle`] is that router without a connection: [`serve`] calls it for every
//! request, and tests call it directly with a whole body.

pub mod feeds;
pub mod problem;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::{Instrument, error, info, info_span, warn};

use crate::app::App;
pub use problem::Problem;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Response body: a boxed body so handlers may stream.
pub type Body = BoxBody<Bytes, BoxError>;

/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body fed chunk by chunk through a channel (answers written while sent); an
/// error item aborts the connection.
pub fn channel_body(rx: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>) -> Body {
    ChannelBody { rx }.boxed()
}

struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|chunk| chunk.map(hyper::body::Frame::data)))
    }
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A request body: streamed from a connection, or given whole by an in-process
/// caller of [`handle`].
#[derive(Debug)]
pub enum RequestBody {
    Incoming(Incoming),
    Full(Full<Bytes>),
}

impl RequestBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        RequestBody::Full(Full::new(bytes.into()))
    }

    pub fn empty() -> Self {
        RequestBody::full(Bytes::new())
    }
}

impl From<Incoming> for RequestBody {
    fn from(body: Incoming) -> Self {
        RequestBody::Incoming(body)
    }
}

impl From<Bytes> for RequestBody {
    fn from(bytes: Bytes) -> Self {
        RequestBody::full(bytes)
    }
}

impl From<Vec<u8>> for RequestBody {
    fn from(bytes: Vec<u8>) -> Self {
        RequestBody::full(bytes)
    }
}

impl From<String> for RequestBody {
    fn from(text: String) -> Self {
        RequestBody::full(text)
    }
}

impl From<&'static str> for RequestBody {
    fn from(text: &'static str) -> Self {
        RequestBody::full(text)
    }
}

impl From<()> for RequestBody {
    fn from((): ()) -> Self {
        RequestBody::empty()
    }
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Incoming(body) => {
                std::pin::Pin::new(body).poll_frame(cx).map_err(Into::into)
            }
            RequestBody::Full(body) => std::pin::Pin::new(body)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Incoming(body) => body.is_end_stream(),
            RequestBody::Full(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            RequestBody::Incoming(body) => body.size_hint(),
            RequestBody::Full(body) => body.size_hint(),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains connections.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    if let Ok(addr) = listener.local_addr() {
        // What public_url defaults to: the real address, not the file's.
        app.public_url.bind(addr);
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that never finishes its headers must not hold a connection forever.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = Arc::clone(&app);
                let service = hyper::service::service_fn(move |req| {
                    let app = Arc::clone(&app);
                    async move {
                        let req = req.map(RequestBody::Incoming);
                        Ok::<_, Infallible>(respond(app, req, Some(peer)).await)
                    }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => info!("all connections closed"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => warn!("shutdown grace period over; closing remaining connections"),
    }
}

/// One request without a connection: request id, span, routing, problem+json
/// errors, access log: everything [`serve`] does per request, body limits and
/// authentication included.
pub async fn handle<B: Into<RequestBody>>(app: Arc<App>, req: Request<B>) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    let resp = respond(app, req.map(Into::into), None).await;
    if head {
        // What hyper does on a connection: a HEAD answer keeps its headers
        // (Content-Length included) and sends no body.
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, empty());
    }
    resp
}

/// One request: id, span, routing, access log (with the peer's address when
/// the request came over a connection).
async fn respond(
    app: Arc<App>,
    req: Request<RequestBody>,
    peer: Option<SocketAddr>,
) -> Response<Body> {
    let started = Instant::now();
    let request_id = request_id(req.headers());
    let method = req.method().clone();
    let path = redact_path(req.uri().path());
    let span = info_span!("request", id = %request_id, %method, path = %path);
    let mut resp = route(&app, req).instrument(span.clone()).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let status = resp.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            match peer {
                Some(peer) => error!(status, latency_ms, %peer, "request failed"),
                None => error!(status, latency_ms, "request failed"),
            }
        } else {
            info!(status, latency_ms, "request");
        }
    });
    resp
}

async fn route(app: &Arc<App>, req: Request<RequestBody>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    // Clients probe with OPTIONS anywhere, and PROPFIND or REPORT (principal
    // search) on "/", the URL they were given: never a 405.
    if req.method() == Method::OPTIONS {
        return crate::dav::options(app, req.headers()).await;
    }
    let result = match segs.as_slice() {
        ["healthz"] => Ok(Response::new(full("ok\n"))),
        [".well-known", "caldav"] => Ok(crate::dav::well_known()),
        ["dav", rest @ ..] => dav(app, req, rest).await,
        [""] if matches!(req.method().as_str(), "PROPFIND" | "REPORT") => dav(app, req, &[]).await,
        ["api", "v1", "tenants"] => crate::api::tenants::list(app, req).await,
        ["api", "v1", "scheduler"] => crate::api::scheduler(app, req).await,
        ["api", "v1", "tenants", tenant, rest @ ..] => {
            crate::api::route(app, req, tenant, rest).await
        }
        ["feeds", tenant, file] => feeds::serve(app, req, tenant, file).await,
        ["oauth", provider, action] => crate::api::oauth(app, req, provider, action).await,
        _ => Err(Problem::not_found(format!("nothing is served at {path}"))),
    };
    result.unwrap_or_else(Problem::into_response)
}

/// CalDAV, over a connection or in process alike.
async fn dav(
    app: &Arc<App>,
    req: Request<RequestBody>,
    segments: &[&str],
) -> Result<Response<Body>, Problem> {
    Ok(crate::dav::serve(app, req, segments).await)
}

/// A client-supplied request id if it is short and plain, else a fresh one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let mut bytes = [0u8; 8];
            rand::fill(&mut bytes);
            hex::encode(bytes)
        })
}

/// The path as logged: feed tokens are secrets and never reach the logs.
pub fn redact_path(path: &str) -> String {
    match path.strip_prefix("/feeds/") {
        Some(rest) => match rest.split_once('/') {
            Some((tenant, _)) => format!("/feeds/{tenant}/<token>"),
            None => "/feeds/<token>".to_owned(),
        },
        None => path.to_owned(),
    }
}

/// 405 with the methods a resource supports.
pub fn method_not_allowed(method: &Method, allow: &str) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("{method} is not supported here; use {allow}"),
    )
    .with_header(header::ALLOW, allow)
}

/// Reads a request body, refusing more than `limit` bytes with 413.
pub async fn read_body<B>(body: B, headers: &HeaderMap, limit: usize) -> Result<Bytes, Problem>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
            format!("request bodies are limited to {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(Problem::bad_request(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison, RFC 9110 §13.1.2).
pub fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag.trim_start_matches("W/"))
}

/// The entity tag an `If-Match` header requires: `Ok(None)` when absent or `*`.
/// Weak tags never match (strong comparison, RFC 9110 §13.1.1).
pub fn if_match(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Problem::bad_request("If-Match is not valid ASCII"))?
        .trim();
    if value == "*" {
        return Ok(None);
    }
    if !(value.starts_with('"') && value.ends_with('"') && value.len() >= 2) {
        return Err(Problem::bad_request(format!(
            "If-Match must be a quoted strong entity tag such as \"abc\", got {value}"
        )));
    }
    Ok(Some(value.to_owned()))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
pub fn http_date(t: chrono::DateTime<chrono::Utc>) -> String {
    let secs = t.timestamp().max(0) as u64;
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

pub fn parse_http_date(value: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = httpdate::parse_http_date(value).ok()?;
    Some(chrono::DateTime::<chrono::Utc>::from(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_tokens_are_redacted() {
        assert_eq!(redact_path("/feeds/demo/s3cret.ics"), "/feeds/demo/<token>");
        assert_eq!(redact_path("/api/v1/tenants/demo"), "/api/v1/tenants/demo");
    }

    #[test]
    fn if_none_match_lists() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\", W/\"b\""),
        );
        assert!(if_none_match(&h, "\"b\""));
        assert!(!if_none_match(&h, "\"c\""));
    }
}
