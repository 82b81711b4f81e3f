//! The gateway in process: [`TestGateway`] opens the [`App`] on a data directory
//! without a listener, and [`InProcessClient`] answers requests through
//! `calgate::http::handle` with the subset of reqwest's builder API the tests use
//! (`client.get(url).bearer_auth(key).json(&body).send().await`), so a test moves
//! between TCP and in process by changing which server it starts.
//!
//! Not here: what only a connection does (hyper's own headers such as
//! `content-length` computed from a body or `transfer-encoding`, header-read
//! timeouts, closing a connection early, redirects), and the background loops
//! (sync scheduler, exporter, idempotency sweeper, horizon roller). Tests of those
//! stay on [`super::TestServer`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use calgate::app::App;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    Answer, Extra, Gateway, SALON_KEY, add_salon_source, config, listed, put_salon_ics, range_url,
    split,
};

/// The authority in-process URLs carry (any host works; this one reads as fake).
const BASE: &str = "http://calgate.in-process";

/// Why an in-process request or the reading of its answer failed.
#[derive(Debug)]
pub struct InProcessError(String);

impl fmt::Display for InProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InProcessError {}

/// Asks one [`App`] in process; cheap to clone, like `reqwest::Client`.
#[derive(Clone)]
pub struct InProcessClient {
    app: Arc<App>,
}

impl InProcessClient {
    pub fn new(app: Arc<App>) -> InProcessClient {
        InProcessClient { app }
    }

    pub fn request(&self, method: Method, url: impl AsRef<str>) -> InProcessRequest {
        InProcessRequest {
            app: Arc::clone(&self.app),
            method,
            target: path_and_query(url.as_ref()),
            headers: HeaderMap::new(),
            body: None,
            error: None,
        }
    }

    pub fn get(&self, url: impl AsRef<str>) -> InProcessRequest {
        self.request(Method::GET, url)
    }

    pub fn head(&self, url: impl AsRef<str>) -> InProcessRequest {
        self.request(Method::HEAD, url)
    }

    pub fn post(&self, url: impl AsRef<str>) -> InProcessRequest {
        self.request(Method::POST, url)
    }

    pub fn put(&self, url: impl AsRef<str>) -> InProcessRequest {
        self.request(Method::PUT, url)
    }

    pub fn patch(&self, url: impl AsRef<str>) -> InProcessRequest {
        self.request(Method::PATCH, url)
    }

    pub fn delete(&self, url: impl AsRef<str>) -> InProcessRequest {
        self.request(Method::DELETE, url)
    }
}

/// `http://host/path?q` or `/path?q`: the request target the router sees.
fn path_and_query(url: &str) -> String {
    let rest = match url.split_once("://") {
        Some((_, after_scheme)) => match after_scheme.find('/') {
            Some(slash) => &after_scheme[slash..],
            None => "/",
        },
        None => url,
    };
    // A fragment never reaches a server.
    rest.split('#').next().unwrap_or("/").to_owned()
}

/// A request being built, as `reqwest::RequestBuilder`: a bad header name or
/// value is reported by [`InProcessRequest::send`].
pub struct InProcessRequest {
    app: Arc<App>,
    method: Method,
    target: String,
    headers: HeaderMap,
    body: Option<Bytes>,
    error: Option<String>,
}

impl InProcessRequest {
    pub fn header<K, V>(mut self, key: K, value: V) -> InProcessRequest
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        match (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            (Err(e), _) => self.fail(e.into()),
            (_, Err(e)) => self.fail(e.into()),
        }
        self
    }

    /// Adds every header of `headers` (replacing those of the same name, as reqwest does).
    pub fn headers(mut self, headers: HeaderMap) -> InProcessRequest {
        let mut last = None;
        for (name, value) in headers {
            let name = name.or(last.clone()).expect("the first header has a name");
            if last.as_ref() != Some(&name) {
                self.headers.remove(&name);
            }
            self.headers.append(name.clone(), value);
            last = Some(name);
        }
        self
    }

    pub fn bearer_auth(self, token: impl fmt::Display) -> InProcessRequest {
        self.authorization(format!("Bearer {token}"))
    }

    pub fn basic_auth(
        self,
        username: impl fmt::Display,
        password: Option<impl fmt::Display>,
    ) -> InProcessRequest {
        let password = password.map(|p| p.to_string()).unwrap_or_default();
        let credentials = http_auth_basic::Credentials::new(&username.to_string(), &password);
        self.authorization(credentials.as_http_header())
    }

    fn authorization(mut self, value: String) -> InProcessRequest {
        match HeaderValue::try_from(value) {
            Ok(mut value) => {
                value.set_sensitive(true);
                self.headers.insert(header::AUTHORIZATION, value);
            }
            Err(e) => self.fail(e.into()),
        }
        self
    }

    /// A JSON body, with `content-type: application/json` unless one is set.
    pub fn json(mut self, body: &(impl Serialize + ?Sized)) -> InProcessRequest {
        match serde_json::to_vec(body) {
            Ok(bytes) => {
                self.headers
                    .entry(header::CONTENT_TYPE)
                    .or_insert(HeaderValue::from_static("application/json"));
                self.body = Some(bytes.into());
            }
            Err(e) => self.error = Some(format!("JSON body: {e}")),
        }
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> InProcessRequest {
        self.body = Some(body.into());
        self
    }

    fn fail(&mut self, e: http::Error) {
        self.error.get_or_insert_with(|| e.to_string());
    }

    /// Answers the request through the router (`calgate::http::handle`); the
    /// answer's body is read whole.
    pub async fn send(self) -> Result<InProcessResponse, InProcessError> {
        if let Some(e) = self.error {
            return Err(InProcessError(e));
        }
        let mut headers = self.headers;
        // What a client on a connection adds.
        let authority = BASE.trim_start_matches("http://");
        headers
            .entry(header::HOST)
            .or_insert(HeaderValue::from_static(authority));
        if let Some(body) = &self.body {
            headers
                .entry(header::CONTENT_LENGTH)
                .or_insert(HeaderValue::from(body.len()));
        }
        let mut req = Request::builder()
            .method(self.method)
            .uri(&self.target)
            .body(())
            .map_err(|e| InProcessError(format!("{}: {e}", self.target)))?;
        *req.headers_mut() = headers;
        let req = req.map(|()| self.body.unwrap_or_default());
        let resp = calgate::http::handle(self.app, req).await;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .map_err(|e| InProcessError(format!("answer body: {e}")));
        Ok(InProcessResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// What the router answered, as `reqwest::Response`.
#[derive(Debug)]
pub struct InProcessResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Result<Bytes, InProcessError>,
}

impl InProcessResponse {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub async fn bytes(self) -> Result<Bytes, InProcessError> {
        self.body
    }

    pub async fn text(self) -> Result<String, InProcessError> {
        Ok(String::from_utf8_lossy(&self.body?).into_owned())
    }

    pub async fn json<T: DeserializeOwned>(self) -> Result<T, InProcessError> {
        serde_json::from_slice(&self.body?).map_err(|e| InProcessError(format!("JSON: {e}")))
    }
}

impl Answer for InProcessResponse {
    fn status_code(&self) -> u16 {
        self.status.as_u16()
    }

    fn header_map(&self) -> &HeaderMap {
        &self.headers
    }

    async fn body_bytes(self) -> Bytes {
        self.body.expect("body read")
    }
}

/// The gateway's state on its own data directory, asked in process: the
/// in-process twin of [`super::TestServer`] (the same helpers, `client` an
/// [`InProcessClient`]).
pub struct TestGateway {
    pub base: String,
    pub client: InProcessClient,
    pub dir: tempfile::TempDir,
    extra: Extra,
}

impl TestGateway {
    pub async fn start() -> TestGateway {
        Self::start_in(tempfile::tempdir().expect("temp dir")).await
    }

    pub async fn start_in(dir: tempfile::TempDir) -> TestGateway {
        Self::start_full(dir, None, Extra::default()).await
    }

    /// A gateway whose salon tenant POSTs conflicts to `webhook`.
    pub async fn start_with_webhook(webhook: &str) -> TestGateway {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_full(dir, Some(webhook), Extra::default()).await
    }

    /// A gateway with extra configuration (sources, providers, fetch allow-list).
    pub async fn start_with_extra(extra: Extra) -> TestGateway {
        Self::start_full(tempfile::tempdir().expect("temp dir"), None, extra).await
    }

    /// [`TestGateway::start_with_extra`] whose salon tenant POSTs conflicts to `webhook`.
    pub async fn start_with_webhook_and_extra(webhook: &str, extra: Extra) -> TestGateway {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_full(dir, Some(webhook), extra).await
    }

    /// Opens the App as `calgate::start` does, without the listener and the
    /// background loops: conflicts whose webhook was not delivered are sent again.
    async fn start_full(
        dir: tempfile::TempDir,
        webhook: Option<&str>,
        extra: Extra,
    ) -> TestGateway {
        let app = Arc::new(open_when_released(dir.path(), webhook, &extra).await);
        calgate::prepare(&app).await.expect("the gateway prepares");
        TestGateway {
            base: BASE.to_owned(),
            client: InProcessClient::new(app),
            dir,
            extra,
        }
    }

    /// Stops as `calgate::Running::stop` does (webhook deliveries ended, the
    /// store flushed and released), then opens the same data directory again.
    /// Like `TestServer::restart`, without the webhook the gateway started with.
    pub async fn restart(self) -> TestGateway {
        self.restart_full(None).await
    }

    /// [`TestGateway::restart`], the salon's conflicts now POSTed to `webhook`.
    pub async fn restart_with_webhook(self, webhook: &str) -> TestGateway {
        self.restart_full(Some(webhook)).await
    }

    async fn restart_full(self, webhook: Option<&str>) -> TestGateway {
        let TestGateway {
            client, dir, extra, ..
        } = self;
        // Requests still running (an owned `create` future, say) hold the app
        // a moment longer: release waits for them.
        calgate::release(client.app).await.expect("clean stop");
        Self::start_full(dir, webhook, extra).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn bookings_url(&self, tenant: &str) -> String {
        self.url(&format!("/api/v1/tenants/{tenant}/bookings"))
    }

    /// POSTs a booking to the salon with its key; returns (status, body, etag).
    pub async fn create(&self, body: &Value) -> (u16, Value, Option<String>) {
        self.create_owned(body.clone()).await
    }

    /// Like [`TestGateway::create`], as an owned future (to run several at once).
    pub fn create_owned(
        &self,
        body: Value,
    ) -> impl Future<Output = (u16, Value, Option<String>)> + Send + 'static {
        let request = self
            .client
            .post(self.bookings_url("salon"))
            .bearer_auth(SALON_KEY)
            .json(&body)
            .send();
        async move { split(request.await.expect("request sent")).await }
    }

    /// GETs an API path (or full URL) with the salon's key: (status, JSON, ETag).
    pub async fn get(&self, path_or_url: &str) -> (u16, Value, Option<String>) {
        let resp = self.client.get(path_or_url).bearer_auth(SALON_KEY).send();
        split(resp.await.expect("request sent")).await
    }

    /// The salon's bookings overlapping [start, end) (RFC 3339, `+` allowed).
    pub async fn list(&self, start: &str, end: &str) -> Vec<Value> {
        let (status, body, _) = self
            .get(&range_url(&self.bookings_url("salon"), start, end))
            .await;
        listed(status, &body)
    }

    pub fn app(&self) -> &App {
        &self.client.app
    }

    /// Adds a calendar source to the salon (as CalDAV MKCALENDAR or a provider will).
    pub fn add_source(&self, id: &str, transparent: bool) {
        add_salon_source(self.app(), id, transparent);
    }

    /// Stores an iCalendar object in a salon source.
    pub async fn put_ics(
        &self,
        source: &str,
        id: &str,
        ics: &str,
    ) -> calgate::model::CalendarObject {
        put_salon_ics(self.app(), source, id, ics).await
    }

    pub async fn feed(&self, tenant: &str, token: &str) -> InProcessResponse {
        self.client
            .get(format!("/feeds/{tenant}/{token}.ics"))
            .send()
            .await
            .expect("request sent")
    }
}

impl Gateway for TestGateway {
    async fn send_as(
        &self,
        user: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> (StatusCode, HeaderMap, String) {
        let method = Method::from_bytes(method.as_bytes()).expect("method name");
        let mut req = self.client.request(method, path);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.basic_auth(user, Some("secret")).body(body);
        let resp = req.send().await.expect("request sent");
        let (status, headers) = (resp.status(), resp.headers().clone());
        (status, headers, resp.text().await.unwrap_or_default())
    }
}

/// The App on `dir`, once a previous one on the same directory has let go of
/// it: a delivery or blocking task may hold the store a moment after the App
/// is dropped, and sled allows one handle per directory.
async fn open_when_released(dir: &std::path::Path, webhook: Option<&str>, extra: &Extra) -> App {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let config = config(dir, "127.0.0.1:0", webhook, extra);
        match App::open(config) {
            Ok(app) => return app,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("app opens: {e}"),
        }
    }
}
