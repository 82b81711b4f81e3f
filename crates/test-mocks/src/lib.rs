//! Local, stateful mock servers emulating third-party calendar providers
//! (Google OAuth2 + Calendar API v3, Microsoft identity + Graph, iCal feeds), as
//! described in `/work/shared/providers/REFERENCE.md`.
//!
//! These mocks are emulated third parties: they never use `calgate::…`.
//!
//! Dev-only crate `calgate-test-mocks` (`publish = false`): the root package's tests and benches
//! use it as `use calgate_test_mocks as providers;`.
//!
//! Shared plumbing lives here:
//! * [`serve`] / [`MockHttp`]: a hyper 1 HTTP/1.1 server on `127.0.0.1:0` whose handler is a plain
//!   synchronous `Fn(Req) -> Resp` (the request body is collected first). A handler asks for a
//!   delayed answer with [`with_delay`] and for a dropped connection with [`reset_connection`].
//!   Dropping the [`ShutdownHandle`] / [`MockHttp`] stops the accept loop and every open connection.
//! * [`RecordedRequest`] / [`RequestLog`]: what each mock received.
//! * [`Fault`] / [`FaultQueue`]: one fault popped per API request.
//! * [`MockCommon`]: request log + fault queue + latency bundle every API mock embeds.
//! * small helpers: JSON responses, query/form parsing, percent decoding, base64, PKCE.

pub mod google;
pub mod graph;
pub mod ics;
pub mod oauth;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// A request as handlers see it: the body is already collected.
pub type Req = Request<Bytes>;
/// A response as handlers produce it.
pub type Resp = Response<Full<Bytes>>;

/// Response extension: [`serve`] sleeps this long before writing the response.
#[derive(Clone, Copy, Debug)]
pub struct Delay(pub Duration);

/// Response extension: [`serve`] closes the connection without writing any response.
#[derive(Clone, Copy, Debug)]
pub struct ResetConnection;

/// Marks `resp` to be sent only after `delay` (adds to a delay already present).
pub fn with_delay(mut resp: Resp, delay: Duration) -> Resp {
    if delay.is_zero() {
        return resp;
    }
    let total = resp
        .extensions()
        .get::<Delay>()
        .map_or(delay, |d| d.0 + delay);
    resp.extensions_mut().insert(Delay(total));
    resp
}

/// A "response" that makes [`serve`] drop the connection without answering.
pub fn reset_connection() -> Resp {
    let mut resp = Response::new(Full::new(Bytes::new()));
    resp.extensions_mut().insert(ResetConnection);
    resp
}

/// Stops a server started by [`serve`] when dropped (or on [`ShutdownHandle::shutdown`]).
#[derive(Debug)]
pub struct ShutdownHandle {
    task: JoinHandle<()>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

impl Drop for ShutdownHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `127.0.0.1:0` and serves HTTP/1.1 with `handler`. Connections are owned by the accept
/// task, so dropping the [`ShutdownHandle`] also closes every open (keep-alive) connection.
pub async fn serve<F>(handler: F) -> (SocketAddr, ShutdownHandle)
where
    F: Fn(Req) -> Resp + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind mock server");
    let addr = listener.local_addr().expect("mock server address");
    let handler = Arc::new(handler);
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let Ok((stream, _)) = listener.accept().await else {
                // e.g. EMFILE: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let handler = handler.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = match body.collect().await {
                            Ok(b) => b.to_bytes(),
                            Err(e) => return Err(std::io::Error::other(e)),
                        };
                        let resp = handler(Request::from_parts(parts, body));
                        if let Some(Delay(d)) = resp.extensions().get::<Delay>().copied() {
                            tokio::time::sleep(d).await;
                        }
                        if resp.extensions().get::<ResetConnection>().is_some() {
                            // A service error makes hyper drop the connection unanswered.
                            return Err(std::io::Error::other("mock: reset connection"));
                        }
                        Ok::<_, std::io::Error>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, ShutdownHandle { task })
}

/// A running mock HTTP server (address + shutdown on drop).
#[derive(Debug)]
pub struct MockHttp {
    pub addr: SocketAddr,
    shutdown: ShutdownHandle,
}

impl MockHttp {
    pub async fn start<F>(handler: F) -> MockHttp
    where
        F: Fn(Req) -> Resp + Send + Sync + 'static,
    {
        let (addr, shutdown) = serve(handler).await;
        MockHttp { addr, shutdown }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn shutdown(&self) {
        self.shutdown.shutdown();
    }
}

// ---------------------------------------------------------------------------------------------
// Request log

/// One request received by a mock.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Raw (still percent-encoded) path.
    pub path: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// Header names lower-case, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    pub fn from_request(req: &Req) -> RecordedRequest {
        RecordedRequest {
            method: req.method().as_str().to_string(),
            path: req.uri().path().to_string(),
            query: parse_query(req.uri().query()),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: req.body().to_vec(),
        }
    }

    /// First query value named `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        query_get(&self.query, name)
    }

    /// First header value named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Shared, cloneable request log.
#[derive(Clone, Debug, Default)]
pub struct RequestLog(Arc<Mutex<Vec<RecordedRequest>>>);

impl RequestLog {
    pub fn record(&self, req: &Req) {
        self.0
            .lock()
            .unwrap()
            .push(RecordedRequest::from_request(req));
    }

    pub fn all(&self) -> Vec<RecordedRequest> {
        self.0.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---------------------------------------------------------------------------------------------
// Faults

/// An injected failure, consumed by one request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and the provider's error body for it (optionally `Retry-After`).
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    /// The provider's "sync cursor invalid" answer (Google 410 `fullSyncRequired`, Graph 410 …).
    Gone,
    /// Wait this long, then process the request normally.
    Slow(Duration),
    /// Close the connection without any response.
    Reset,
    /// Do the work (an insert is stored), then close the connection without
    /// answering: the provider processed the request, the answer was lost.
    AnswerLost,
}

impl Fault {
    pub fn status(status: u16) -> Fault {
        Fault::Status {
            status,
            retry_after: None,
        }
    }

    pub fn status_retry_after(status: u16, retry_after: impl Into<String>) -> Fault {
        Fault::Status {
            status,
            retry_after: Some(retry_after.into()),
        }
    }
}

/// FIFO of faults shared between the test and a mock.
#[derive(Clone, Debug, Default)]
pub struct FaultQueue(Arc<Mutex<VecDeque<Fault>>>);

impl FaultQueue {
    pub fn push(&self, fault: Fault) {
        self.0.lock().unwrap().push_back(fault);
    }

    pub fn push_n(&self, n: usize, fault: Fault) {
        let mut q = self.0.lock().unwrap();
        for _ in 0..n {
            q.push_back(fault.clone());
        }
    }

    pub fn take(&self) -> Option<Fault> {
        self.0.lock().unwrap().pop_front()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a mock does for the fault popped by an API request.
#[derive(Debug)]
pub enum FaultAction {
    /// Process the request normally.
    Proceed,
    /// Process the request normally, then delay the response (a [`Fault::Slow`]).
    ProceedDelayed(Duration),
    /// Answer with this response right away (already built from a status / gone / reset fault).
    Respond(Resp),
    /// Process the request normally, then close the connection instead of answering.
    ProceedThenReset,
}

/// Bundle embedded by every API mock: request log, fault queue and per-response latency.
#[derive(Clone, Debug, Default)]
pub struct MockCommon {
    pub requests: RequestLog,
    pub faults: FaultQueue,
    latency: Arc<Mutex<Duration>>,
}

impl MockCommon {
    pub fn set_latency(&self, latency: Duration) {
        *self.latency.lock().unwrap() = latency;
    }

    pub fn latency(&self) -> Duration {
        *self.latency.lock().unwrap()
    }

    /// Pops one fault and turns it into an action. `status_response(status, retry_after)` and
    /// `gone_response()` build the provider-specific error responses.
    pub fn next_fault(
        &self,
        status_response: impl FnOnce(u16, Option<&str>) -> Resp,
        gone_response: impl FnOnce() -> Resp,
    ) -> FaultAction {
        match self.faults.take() {
            None => FaultAction::Proceed,
            Some(Fault::Slow(d)) => FaultAction::ProceedDelayed(d),
            Some(Fault::Reset) => FaultAction::Respond(reset_connection()),
            Some(Fault::AnswerLost) => FaultAction::ProceedThenReset,
            Some(Fault::Gone) => FaultAction::Respond(gone_response()),
            Some(Fault::Status {
                status,
                retry_after,
            }) => FaultAction::Respond(status_response(status, retry_after.as_deref())),
        }
    }

    /// Applies the configured latency to an API response.
    pub fn finish(&self, resp: Resp) -> Resp {
        with_delay(resp, self.latency())
    }
}

// ---------------------------------------------------------------------------------------------
// Response helpers

pub const JSON_UTF8: &str = "application/json; charset=UTF-8";

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// `status` + JSON body, `Content-Type: application/json; charset=UTF-8`.
pub fn json_response(status: u16, body: &Value) -> Resp {
    let bytes = serde_json::to_vec(body).expect("serialize JSON");
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status_code(status);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_UTF8),
    );
    resp
}

/// `status` + a body with the given content type.
pub fn bytes_response(status: u16, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status_code(status);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// `status` + a `text/plain` body.
pub fn text_response(status: u16, body: impl Into<String>) -> Resp {
    bytes_response(status, "text/plain; charset=utf-8", body.into())
}

/// `status` with an empty body (e.g. 204).
pub fn empty_response(status: u16) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status_code(status);
    resp
}

/// Adds (appends) a header; invalid values are ignored.
pub fn with_header(mut resp: Resp, name: &'static str, value: &str) -> Resp {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().append(name, v);
    }
    resp
}

// ---------------------------------------------------------------------------------------------
// Parsing helpers

/// Decodes an `application/x-www-form-urlencoded` query string (`+` = space).
pub fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query.map(|q| parse_form(q.as_bytes())).unwrap_or_default()
}

/// Decodes an `application/x-www-form-urlencoded` body.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// First value named `name`.
pub fn query_get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Every value named `name`, in order (repeatable parameters).
pub fn query_all<'a>(pairs: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Header value as text (first occurrence).
pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Percent-decodes one path segment (`+` stays `+`). `None` if the result is not UTF-8.
pub fn percent_decode(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Percent-encodes a string for use as a URL path segment or query value.
pub fn percent_encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// Builds `a=b&c=d` with form encoding.
pub fn encode_query(pairs: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    ser.finish()
}

// ---------------------------------------------------------------------------------------------
// base64 / PKCE

const B64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64_encode(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    b64_encode(data, B64_STD, true)
}

/// base64url without padding (PKCE, JWT).
pub fn base64url_nopad(data: &[u8]) -> String {
    b64_encode(data, B64_URL, false)
}

/// Decodes standard or url-safe base64, padded or not. `None` on invalid input.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    if bits >= 6 {
        return None; // a single dangling character
    }
    Some(out)
}

/// PKCE S256: `base64url_nopad(sha256(verifier))`.
pub fn pkce_s256(verifier: &str) -> String {
    use sha2::Digest;
    base64url_nopad(&sha2::Sha256::digest(verifier.as_bytes()))
}

/// A random opaque token with the given prefix.
pub fn random_token(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_roundtrip_and_pkce_vector() {
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
        assert_eq!(base64_decode("Zm9vYg=="), Some(b"foob".to_vec()));
        // RFC 7636 appendix B.
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
