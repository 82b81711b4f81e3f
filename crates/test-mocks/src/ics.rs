//! Mock iCal URL feed host (REFERENCE.md §4.1, checklist §4.3).
//!
//! One loopback HTTP/1.1 server serving any number of feeds keyed by path (or path + query when the
//! key contains `?`). Per feed: body, `Content-Type`, a strong quoted `ETag` and a `Last-Modified`
//! HTTP-date that change on every [`IcsMock::set_feed`] (a logical clock advances at least one
//! second per change, so two changes within the same wall-clock second still get different
//! `Last-Modified` values), conditional GET (304 with an empty body), optional gzip, a mode that
//! ignores validators, redirects (to a path on this mock or to any absolute URL, so chains and
//! loops across mocks can be built), fault queues (global and per path), a persistent 410, and a
//! "stalled body" mode that sends the headers and the first part of the body, then stalls.
//!
//! Per-feed settings (`set_content_type`, `set_gzip`, …) create an empty feed if the path has none
//! yet; they survive later `set_feed` calls.
//!
//! This mock runs its own accept loop (not `serve` from `lib.rs`) because a stalled body needs a
//! streaming response body.
//!
//! Not covered: https (and therefore a real https→http downgrade: a test can only point an
//! `http://` redirect at another `http://` mock). `webcal://` URLs are just [`IcsMock::webcal_url`]
//! strings; the client under test must rewrite them.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::{Fault, FaultQueue, RecordedRequest, RequestLog};

/// Default `Content-Type` of a feed.
pub const TEXT_CALENDAR: &str = "text/calendar; charset=utf-8";

/// Reads `fixtures/feeds/<name>` of this repository (panics if missing: fixtures are test input).
pub fn fixture(name: &str) -> Vec<u8> {
    // This crate lives in `crates/test-mocks`; the fixtures are at the workspace root.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join("feeds")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read fixture {}: {e}", path.display()))
}

/// A large generated feed: `events` one-hour UTC events, one per hour starting
/// 2030-05-01T00:00Z, CRLF, for size / event-count caps ("huge generated feed").
pub fn generated_feed(events: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(events * 160 + 128);
    out.extend_from_slice(
        b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Fake Org//Generated Feed//EN\r\n",
    );
    let base = chrono::NaiveDate::from_ymd_opt(2030, 5, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("valid base date");
    for i in 0..events {
        let start = base + chrono::TimeDelta::hours(i as i64);
        let end = start + chrono::TimeDelta::hours(1);
        let _ = write!(
            out,
            "BEGIN:VEVENT\r\nUID:gen-{i:07}@feed.example.test\r\nDTSTAMP:20300501T000000Z\r\n\
             DTSTART:{}\r\nDTEND:{}\r\nSUMMARY:Generated {i}\r\nEND:VEVENT\r\n",
            start.format("%Y%m%dT%H%M%SZ"),
            end.format("%Y%m%dT%H%M%SZ"),
        );
    }
    out.extend_from_slice(b"END:VCALENDAR\r\n");
    out
}

#[derive(Clone, Debug)]
struct Feed {
    body: Vec<u8>,
    content_type: String,
    etag: String,
    /// Unix seconds.
    last_modified: u64,
    gzip: bool,
    ignore_validators: bool,
    stall: Option<Duration>,
    gone: bool,
}

#[derive(Debug, Default)]
struct State {
    feeds: HashMap<String, Feed>,
    /// from → (Location, status)
    redirects: HashMap<String, (String, u16)>,
    path_faults: HashMap<String, FaultQueue>,
    hits: HashMap<String, usize>,
    conditional_hits: HashMap<String, usize>,
    /// Logical clock (unix seconds) for `Last-Modified`.
    clock: u64,
    version: u64,
    latency: Duration,
}

impl State {
    fn tick(&mut self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.clock = now.max(self.clock + 1);
        self.clock
    }

    fn feed_mut(&mut self, path: &str) -> &mut Feed {
        if !self.feeds.contains_key(path) {
            let lm = self.tick();
            self.version += 1;
            let feed = Feed {
                body: Vec::new(),
                content_type: TEXT_CALENDAR.to_string(),
                etag: format!("\"feed-v{}\"", self.version),
                last_modified: lm,
                gzip: false,
                ignore_validators: false,
                stall: None,
                gone: false,
            };
            self.feeds.insert(path.to_string(), feed);
        }
        self.feeds.get_mut(path).expect("feed just inserted")
    }
}

struct Shared {
    origin: String,
    state: Mutex<State>,
    requests: RequestLog,
    faults: FaultQueue,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Aborts the accept loop (and with it every open connection) when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running mock feed host. Dropping it stops the server.
pub struct IcsMock {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _task: AbortOnDrop,
}

impl IcsMock {
    pub async fn start() -> IcsMock {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind ics mock");
        let addr = listener.local_addr().expect("ics mock address");
        let shared = Arc::new(Shared {
            origin: format!("http://{addr}"),
            state: Mutex::new(State::default()),
            requests: RequestLog::default(),
            faults: FaultQueue::default(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        IcsMock {
            addr,
            shared,
            _task: AbortOnDrop(task),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn origin(&self) -> String {
        self.shared.origin.clone()
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.shared.origin)
    }

    /// `webcal://127.0.0.1:PORT{path}` (the client must rewrite the scheme).
    pub fn webcal_url(&self, path: &str) -> String {
        format!("webcal://{}{path}", self.addr)
    }

    /// Creates or replaces the feed at `path`; bumps its `ETag` and `Last-Modified`.
    pub fn set_feed(&self, path: &str, body: impl Into<Vec<u8>>) {
        let mut st = self.shared.lock();
        let lm = st.tick();
        st.version += 1;
        let etag = format!("\"feed-v{}\"", st.version);
        let feed = st.feed_mut(path);
        feed.body = body.into();
        feed.etag = etag;
        feed.last_modified = lm;
        feed.gone = false;
    }

    /// Serves `fixtures/feeds/<name>` at `path`.
    pub fn set_feed_fixture(&self, path: &str, name: &str) {
        self.set_feed(path, fixture(name));
    }

    /// Bumps `ETag` and `Last-Modified` without changing the body.
    pub fn touch(&self, path: &str) {
        let body = self.shared.lock().feeds.get(path).map(|f| f.body.clone());
        self.set_feed(path, body.unwrap_or_default());
    }

    /// Removes the feed (→ 404).
    pub fn remove_feed(&self, path: &str) {
        self.shared.lock().feeds.remove(path);
    }

    /// Persistent 410 Gone for `path` (until the next `set_feed` or `set_gone(path, false)`).
    pub fn set_gone(&self, path: &str, gone: bool) {
        self.shared.lock().feed_mut(path).gone = gone;
    }

    pub fn set_content_type(&self, path: &str, content_type: &str) {
        self.shared.lock().feed_mut(path).content_type = content_type.to_string();
    }

    /// With `true`, a request whose `Accept-Encoding` allows gzip gets a gzip body and
    /// `Content-Encoding: gzip`.
    pub fn set_gzip(&self, path: &str, gzip: bool) {
        self.shared.lock().feed_mut(path).gzip = gzip;
    }

    /// With `true`, the feed is served without `ETag`/`Last-Modified` and always with 200.
    pub fn set_ignore_validators(&self, path: &str, ignore: bool) {
        self.shared.lock().feed_mut(path).ignore_validators = ignore;
    }

    /// With `Some(d)`, a 200 sends the headers (with the full `Content-Length`) and the first half
    /// of the body, then waits `d` before sending the rest.
    pub fn set_body_stall(&self, path: &str, stall: Option<Duration>) {
        self.shared.lock().feed_mut(path).stall = stall;
    }

    /// `from` answers `status` (301/302/303/307/308) with `Location: to`. `to` is either an
    /// absolute URL (another mock, `webcal://…`, a loop back here) or a path on this mock.
    /// A redirect takes precedence over a feed at the same path.
    pub fn redirect(&self, from: &str, to: &str, status: u16) {
        let location = if to.starts_with('/') {
            self.url(to)
        } else {
            to.to_string()
        };
        self.shared
            .lock()
            .redirects
            .insert(from.to_string(), (location, status));
    }

    pub fn remove_redirect(&self, from: &str) {
        self.shared.lock().redirects.remove(from);
    }

    /// Faults applied to any path (popped before the per-path queue).
    pub fn faults(&self) -> &FaultQueue {
        &self.shared.faults
    }

    /// Faults for requests to `path` only. `Fault::Status` → that status (429/503 with the given
    /// `Retry-After`), `Fault::Gone` → 410, `Fault::Slow` → delayed normal answer,
    /// `Fault::Reset` → connection closed without an answer.
    pub fn faults_for(&self, path: &str) -> FaultQueue {
        self.shared
            .lock()
            .path_faults
            .entry(path.to_string())
            .or_default()
            .clone()
    }

    /// Delay added to every response.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.all()
    }

    /// The most requests this mock was answering at once (latency included).
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Requests received for `path` (any outcome, including 304s, redirects and faults).
    pub fn hits(&self, path: &str) -> usize {
        self.shared.lock().hits.get(path).copied().unwrap_or(0)
    }

    /// 304 answers served for `path`.
    pub fn conditional_hits(&self, path: &str) -> usize {
        self.shared
            .lock()
            .conditional_hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Current `ETag` of the feed (quoted), if any.
    pub fn etag(&self, path: &str) -> Option<String> {
        self.shared.lock().feeds.get(path).map(|f| f.etag.clone())
    }

    /// Current `Last-Modified` of the feed as an HTTP-date, if any.
    pub fn last_modified(&self, path: &str) -> Option<String> {
        self.shared
            .lock()
            .feeds
            .get(path)
            .map(|f| http_date(f.last_modified))
    }
}

// ---------------------------------------------------------------------------------------------
// Server

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.map_err(std::io::Error::other)?;
                    let req = Request::from_parts(parts, body.to_bytes());
                    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
                    let plan = handle(&shared, &req);
                    if !plan.delay.is_zero() {
                        tokio::time::sleep(plan.delay).await;
                    }
                    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                    match plan.outcome {
                        Outcome::Reset => Err(std::io::Error::other("ics mock: reset connection")),
                        Outcome::Respond(resp) => Ok(resp),
                    }
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Response body: either complete, or streamed through a channel (stalled bodies).
pub enum IcsBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for IcsBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            IcsBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            IcsBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, IcsBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            IcsBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            IcsBody::Full(None) => SizeHint::with_exact(0),
            IcsBody::Stream(_) => SizeHint::default(),
        }
    }
}

type IcsResp = Response<IcsBody>;

enum Outcome {
    Respond(IcsResp),
    Reset,
}

struct Plan {
    delay: Duration,
    outcome: Outcome,
}

fn response(status: u16, content_type: Option<&str>, body: impl Into<Bytes>) -> IcsResp {
    let body: Bytes = body.into();
    let mut resp = Response::new(IcsBody::Full(Some(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(ct) = content_type.and_then(|ct| HeaderValue::from_str(ct).ok()) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, ct);
    }
    resp
}

fn set_header(resp: &mut IcsResp, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

fn http_date(unix_secs: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix_secs))
}

fn status_text(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

fn fault_response(status: u16, retry_after: Option<&str>) -> IcsResp {
    let mut resp = match status {
        // Hosts commonly send 429 with an empty body (examples/ical_feed_cases.json `throttled`).
        429 => response(429, None, Bytes::new()),
        404 => response(404, Some("text/html"), "Not Found"),
        s => response(s, Some("text/plain; charset=utf-8"), status_text(s)),
    };
    if let Some(ra) = retry_after {
        set_header(&mut resp, "retry-after", ra);
    }
    resp
}

/// `If-None-Match` matches `etag` (list, `*`, weak comparison).
fn etag_matches(header: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let etag = strip(etag);
    header
        .split(',')
        .any(|t| t.trim() == "*" || strip(t) == etag)
}

fn accepts_gzip(req: &Request<Bytes>) -> bool {
    req.headers()
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
        })
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

fn handle(shared: &Shared, req: &Request<Bytes>) -> Plan {
    shared.requests.record(req);
    let path = req.uri().path().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| path.clone());

    let mut st = shared.lock();
    let mut delay = st.latency;
    // Feeds / redirects whose key carries a query match first.
    let key =
        if st.feeds.contains_key(&path_and_query) || st.redirects.contains_key(&path_and_query) {
            path_and_query
        } else {
            path
        };
    *st.hits.entry(key.clone()).or_default() += 1;

    let fault = shared
        .faults
        .take()
        .or_else(|| st.path_faults.get(&key).and_then(|q| q.take()));
    match fault {
        None => {}
        Some(Fault::Slow(d)) => delay += d,
        // A GET has nothing to lose but its answer.
        Some(Fault::Reset | Fault::AnswerLost) => {
            return Plan {
                delay,
                outcome: Outcome::Reset,
            };
        }
        Some(Fault::Gone) => {
            return Plan {
                delay,
                outcome: Outcome::Respond(fault_response(410, None)),
            };
        }
        Some(Fault::Status {
            status,
            retry_after,
        }) => {
            return Plan {
                delay,
                outcome: Outcome::Respond(fault_response(status, retry_after.as_deref())),
            };
        }
    }

    let respond = |resp| Plan {
        delay,
        outcome: Outcome::Respond(resp),
    };

    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        let mut resp = response(405, Some("text/plain; charset=utf-8"), "Method Not Allowed");
        set_header(&mut resp, "allow", "GET, HEAD");
        return respond(resp);
    }

    if let Some((location, status)) = st.redirects.get(&key).cloned() {
        let mut resp = response(status, None, Bytes::new());
        set_header(&mut resp, "location", &location);
        return respond(resp);
    }

    let Some(feed) = st.feeds.get(&key).cloned() else {
        return respond(fault_response(404, None));
    };
    if feed.gone {
        return respond(fault_response(410, None));
    }

    let validators = !feed.ignore_validators;
    if validators {
        let inm = req
            .headers()
            .get(http::header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok());
        let ims = req
            .headers()
            .get(http::header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok());
        let not_modified = match (inm, ims) {
            // RFC 9110 §13.1.3: If-Modified-Since is ignored when If-None-Match is present.
            (Some(inm), _) => etag_matches(inm, &feed.etag),
            (None, Some(ims)) => httpdate::parse_http_date(ims)
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .is_some_and(|t| t.as_secs() >= feed.last_modified),
            (None, None) => false,
        };
        if not_modified {
            *st.conditional_hits.entry(key.clone()).or_default() += 1;
            let mut resp = response(304, None, Bytes::new());
            set_header(&mut resp, "etag", &feed.etag);
            set_header(&mut resp, "last-modified", &http_date(feed.last_modified));
            return respond(resp);
        }
    }
    drop(st);

    let gzipped = feed.gzip && accepts_gzip(req);
    let body = if gzipped {
        gzip(&feed.body)
    } else {
        feed.body.clone()
    };
    let len = body.len();
    let head = req.method() == http::Method::HEAD;

    let mut resp = match feed.stall {
        Some(stall) if !head && len > 0 => {
            let (tx, rx) = mpsc::channel(2);
            let body = Bytes::from(body);
            let first = body.slice(..len.div_ceil(2));
            let rest = body.slice(len.div_ceil(2)..);
            tokio::spawn(async move {
                if tx.send(first).await.is_err() {
                    return;
                }
                tokio::time::sleep(stall).await;
                if !rest.is_empty() {
                    let _ = tx.send(rest).await;
                }
            });
            let mut resp = Response::new(IcsBody::Stream(rx));
            set_header(&mut resp, "content-length", &len.to_string());
            resp
        }
        _ if head => {
            let mut resp = Response::new(IcsBody::Full(None));
            set_header(&mut resp, "content-length", &len.to_string());
            resp
        }
        _ => Response::new(IcsBody::Full(Some(Bytes::from(body)))),
    };
    set_header(&mut resp, "content-type", &feed.content_type);
    set_header(
        &mut resp,
        "cache-control",
        "no-cache, no-store, max-age=0, must-revalidate",
    );
    if validators {
        set_header(&mut resp, "etag", &feed.etag);
        set_header(&mut resp, "last-modified", &http_date(feed.last_modified));
    }
    if feed.gzip {
        set_header(&mut resp, "vary", "Accept-Encoding");
    }
    if gzipped {
        set_header(&mut resp, "content-encoding", "gzip");
    }
    respond(resp)
}
