//! Shared test harness: a real gateway on an ephemeral loopback port, talked to
//! over HTTP, or the gateway's [`App`] alone for in-process requests; helpers for
//! the Python-based third-party validators.

#![allow(dead_code)] // each test binary uses a different subset

mod inprocess;

#[allow(unused_imports)] // each test binary uses a different subset
pub use inprocess::{
    InProcessClient, InProcessError, InProcessRequest, InProcessResponse, TestGateway,
};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use calgate::app::App;
use calgate::config::Config;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub const SALON_KEY: &str = "key-salon-0123";
pub const GARAGE_KEY: &str = "key-garage-4567";
pub const FULL_FEED: &str = "feed-full-secret";
pub const BUSY_FEED: &str = "feed-busy-secret";
pub const GARAGE_FEED: &str = "feed-garage-secret";

struct Hashes {
    salon_key: String,
    garage_key: String,
    full_feed: String,
    busy_feed: String,
    garage_feed: String,
    password: String,
}

/// argon2 is slow on purpose: hash the test secrets once per test binary.
fn hashes() -> &'static Hashes {
    static HASHES: OnceLock<Hashes> = OnceLock::new();
    HASHES.get_or_init(|| {
        let h = |s: &str| calgate::auth::hash_secret(s).expect("hashing works");
        Hashes {
            salon_key: h(SALON_KEY),
            garage_key: h(GARAGE_KEY),
            full_feed: h(FULL_FEED),
            busy_feed: h(BUSY_FEED),
            garage_feed: h(GARAGE_FEED),
            password: h("secret"),
        }
    })
}

/// Signing secret of the salon's webhook, when [`config_text_with_webhook`] sets one.
pub const WEBHOOK_SECRET: &str = "whsec-0123456789abcdef";

/// Two tenants: `salon` (Europe/Paris, CalDAV users `ana` and `bea`, a full and
/// a busy-only feed) and `garage` (America/New_York, CalDAV user `gus`). Every
/// CalDAV password is `secret`.
pub fn config_text(data_dir: &Path, listen: &str) -> String {
    config_text_with_webhook(data_dir, listen, None)
}

/// [`config_text`], with the salon's conflict webhook pointing at `webhook`.
pub fn config_text_with_webhook(data_dir: &Path, listen: &str, webhook: Option<&str>) -> String {
    config_text_with(data_dir, listen, webhook, &Extra::default())
}

/// Configuration added to the test file: `server` at the end of `[server]` (may
/// open further top-level tables such as `[providers.google]`, or whole
/// `[[tenant]]`s), `salon` at the end of the salon tenant (e.g.
/// `[[tenant.source]]` tables).
#[derive(Debug, Clone, Default)]
pub struct Extra {
    pub server: String,
    pub salon: String,
}

/// The argon2 hash of `secret`, every test user's password.
pub fn password_hash() -> &'static str {
    &hashes().password
}

pub fn config_text_with(
    data_dir: &Path,
    listen: &str,
    webhook: Option<&str>,
    extra: &Extra,
) -> String {
    let webhook = webhook
        .map(|url| format!("[tenant.webhook]\nurl = \"{url}\"\nsecret = \"{WEBHOOK_SECRET}\"\n"))
        .unwrap_or_default();
    let h = hashes();
    format!(
        r#"
[server]
listen = "{listen}"
data_dir = "{data}"
max_body_bytes = 65536
# Tests use fixed dates in 2026: keep them inside the horizon for years to come.
busy_horizon_past_days = 3650
busy_horizon_future_days = 3650
{server_extra}

[[tenant]]
id = "salon"
name = "Salon Ümlaut, Paris; \"Chez Ana\""
timezone = "Europe/Paris"
buffer_minutes = 10
{webhook}
[tenant.opening_hours]
monday = ["09:00-12:00", "13:00-17:00"]
tuesday = ["09:00-12:00", "13:00-17:00"]
wednesday = ["09:00-12:00", "13:00-17:00"]
thursday = ["09:00-12:00", "13:00-17:00"]
friday = ["09:00-12:00", "13:00-17:00"]
saturday = ["10:00-14:00"]
[[tenant.user]]
username = "ana"
password_hash = "{password}"
[[tenant.user]]
username = "bea"
password_hash = "{password}"
[[tenant.api_key]]
name = "frontdesk"
key_hash = "{salon_key}"
[[tenant.feed]]
name = "full"
token_hash = "{full_feed}"
refresh_minutes = 30
[[tenant.feed]]
name = "busy"
token_hash = "{busy_feed}"
privacy = "busy"
{salon_extra}

[[tenant]]
id = "garage"
name = "Garage"
timezone = "America/New_York"
[[tenant.user]]
username = "gus"
password_hash = "{password}"
[[tenant.api_key]]
name = "main"
key_hash = "{garage_key}"
[[tenant.feed]]
name = "full"
token_hash = "{garage_feed}"
"#,
        data = data_dir.display(),
        password = h.password,
        salon_key = h.salon_key,
        garage_key = h.garage_key,
        full_feed = h.full_feed,
        busy_feed = h.busy_feed,
        garage_feed = h.garage_feed,
        server_extra = extra.server,
        salon_extra = extra.salon,
    )
}

/// The test configuration ([`config_text_with`]), parsed.
pub fn config(data_dir: &Path, listen: &str, webhook: Option<&str>, extra: &Extra) -> Config {
    let text = config_text_with(data_dir, listen, webhook, extra);
    Config::parse(&text, Path::new("test.toml")).expect("test config is valid")
}

/// The gateway's application state on `data_dir`, without a listener or the
/// background tasks (sync scheduler, exporter): for in-process requests.
pub fn open_app(data_dir: &Path, extra: &Extra) -> App {
    App::open(config(data_dir, "127.0.0.1:0", None, extra)).expect("app opens")
}

/// Adds a calendar source to the salon (as CalDAV MKCALENDAR or a provider will).
pub fn add_salon_source(app: &App, id: &str, transparent: bool) {
    let tenant = &*app.tenant("salon").expect("salon");
    let source = calgate::model::Source {
        transparent,
        ..calgate::model::Source::new(id, id)
    };
    app.calendars
        .put_source(tenant, &source)
        .expect("source stored");
}

/// Stores an iCalendar object in a salon source.
pub async fn put_salon_ics(
    app: &App,
    source: &str,
    id: &str,
    ics: &str,
) -> calgate::model::CalendarObject {
    let tenant = &*app.tenant("salon").expect("salon");
    app.calendars
        .put_object(tenant, source, id, ics, &calgate::store::Precondition::None)
        .await
        .expect("object stored")
}

/// A gateway running in this test's runtime, with its own data directory.
pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub running: Option<calgate::Running>,
    pub dir: tempfile::TempDir,
    extra: Extra,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir).await
    }

    pub async fn start_in(dir: tempfile::TempDir) -> TestServer {
        Self::start_with(dir, None).await
    }

    /// A server whose salon tenant POSTs conflicts to `webhook`.
    pub async fn start_with_webhook(webhook: &str) -> TestServer {
        Self::start_with(tempfile::tempdir().expect("temp dir"), Some(webhook)).await
    }

    /// A server with extra configuration (sources, providers, fetch allow-list).
    pub async fn start_with_extra(extra: Extra) -> TestServer {
        Self::start_full(tempfile::tempdir().expect("temp dir"), None, extra).await
    }

    /// [`TestServer::start_with_extra`] whose salon tenant POSTs conflicts to `webhook`.
    pub async fn start_with_webhook_and_extra(webhook: &str, extra: Extra) -> TestServer {
        Self::start_full(tempfile::tempdir().expect("temp dir"), Some(webhook), extra).await
    }

    async fn start_with(dir: tempfile::TempDir, webhook: Option<&str>) -> TestServer {
        Self::start_full(dir, webhook, Extra::default()).await
    }

    async fn start_full(dir: tempfile::TempDir, webhook: Option<&str>, extra: Extra) -> TestServer {
        let config = config(dir.path(), "127.0.0.1:0", webhook, &extra);
        let running = calgate::start(config).await.expect("server starts");
        TestServer {
            base: format!("http://{}", running.addr),
            client: http_client(),
            running: Some(running),
            dir,
            extra,
        }
    }

    /// Graceful stop, then a fresh server on the same data directory.
    pub async fn restart(self) -> TestServer {
        self.restart_full(None).await
    }

    /// [`TestServer::restart`], the salon's conflicts now POSTed to `webhook`.
    pub async fn restart_with_webhook(self, webhook: &str) -> TestServer {
        self.restart_full(Some(webhook)).await
    }

    async fn restart_full(mut self, webhook: Option<&str>) -> TestServer {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("clean stop");
        }
        Self::start_full(self.dir, webhook, self.extra).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn bookings_url(&self, tenant: &str) -> String {
        self.url(&format!("/api/v1/tenants/{tenant}/bookings"))
    }

    /// POSTs a booking to the salon with its key; returns (status, body, etag).
    pub async fn create(&self, body: &Value) -> (u16, Value, Option<String>) {
        let resp = self
            .client
            .post(self.bookings_url("salon"))
            .bearer_auth(SALON_KEY)
            .json(body)
            .send()
            .await
            .expect("request sent");
        split(resp).await
    }

    /// Like [`TestServer::create`], as an owned future (to run several at once).
    pub fn create_owned(
        &self,
        body: Value,
    ) -> impl std::future::Future<Output = (u16, Value, Option<String>)> + Send + 'static {
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
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            self.url(path_or_url)
        };
        let resp = self.client.get(url).bearer_auth(SALON_KEY).send().await;
        split(resp.expect("request sent")).await
    }

    /// The salon's bookings overlapping [start, end) (RFC 3339, `+` allowed).
    pub async fn list(&self, start: &str, end: &str) -> Vec<Value> {
        let (status, body, _) = self
            .get(&range_url(&self.bookings_url("salon"), start, end))
            .await;
        listed(status, &body)
    }

    pub fn app(&self) -> &calgate::app::App {
        &self.running.as_ref().expect("server running").app
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

    pub async fn feed(&self, tenant: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/feeds/{tenant}/{token}.ics")))
            .send()
            .await
            .expect("request sent")
    }
}

/// `bookings` (a collection URL) asked for [start, end) (RFC 3339, `+` allowed).
fn range_url(bookings: &str, start: &str, end: &str) -> String {
    let enc = |s: &str| s.replace('+', "%2B");
    format!("{bookings}?start={}&end={}", enc(start), enc(end))
}

/// The bookings of a successful listing.
fn listed(status: u16, body: &Value) -> Vec<Value> {
    assert_eq!(status, 200, "{body}");
    body["bookings"].as_array().expect("bookings array").clone()
}

/// A gateway under test, over TCP ([`TestServer`]) or in process
/// ([`TestGateway`]), for helpers shared by tests of both kinds.
pub trait Gateway {
    /// `method path` as CalDAV user `user` (password `secret`) with `headers` and
    /// `body`: (status, headers, body text).
    fn send_as(
        &self,
        user: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> impl std::future::Future<Output = (StatusCode, HeaderMap, String)> + Send;
}

impl Gateway for TestServer {
    async fn send_as(
        &self,
        user: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> (StatusCode, HeaderMap, String) {
        let method = Method::from_bytes(method.as_bytes()).expect("method name");
        let mut req = self.client.request(method, self.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.basic_auth(user, Some("secret")).body(body);
        let resp = req.send().await.expect("request sent");
        let (status, headers) = (resp.status(), resp.headers().clone());
        (status, headers, resp.text().await.unwrap_or_default())
    }
}

/// (status, JSON body or Null, ETag header), from an answer over TCP or in process.
pub async fn split(resp: impl Answer) -> (u16, Value, Option<String>) {
    let status = resp.status_code();
    let etag = resp
        .header_map()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = resp.body_bytes().await;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body, etag)
}

/// An answer [`split`] reads: `reqwest::Response` or [`InProcessResponse`].
pub trait Answer {
    fn status_code(&self) -> u16;
    fn header_map(&self) -> &reqwest::header::HeaderMap;
    fn body_bytes(self) -> impl std::future::Future<Output = bytes::Bytes> + Send;
}

impl Answer for reqwest::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }

    fn header_map(&self) -> &reqwest::header::HeaderMap {
        self.headers()
    }

    async fn body_bytes(self) -> bytes::Bytes {
        self.bytes().await.expect("body read")
    }
}

/// The fields a problem+json body's `invalid_params` names, in order.
pub fn problem_fields(body: &Value) -> Vec<String> {
    body["invalid_params"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A valid booking body at `day` (YYYY-MM-DD) from `from` to `to` (HH:MM, Paris winter time).
pub fn booking(day: &str, from: &str, to: &str, title: &str) -> Value {
    serde_json::json!({
        "start": format!("{day}T{from}:00+01:00"),
        "end": format!("{day}T{to}:00+01:00"),
        "title": title,
    })
}

/// A one-event calendar, `start` to `end` local times in Paris (`20260302T103000`).
pub fn paris_event(uid: &str, start: &str, end: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261101T000000Z\r\nDTSTART;TZID=Europe/Paris:{start}\r\nDTEND;TZID=Europe/Paris:{end}\r\nSUMMARY:Dentist\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

/// Runs a Python script from tests/python with third-party packages from
/// tests/python/requirements.txt, installed once into the target directory.
pub fn run_python(script: &str, args: &[&str]) -> std::process::Output {
    let deps = python_deps();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Command::new("python3")
        .arg(root.join("tests/python").join(script))
        .args(args)
        .env("PYTHONPATH", deps)
        .output()
        .expect("python3 runs")
}

fn python_deps() -> &'static PathBuf {
    static DEPS: OnceLock<PathBuf> = OnceLock::new();
    DEPS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let requirements = root.join("tests/python/requirements.txt");
        let wanted = std::fs::read_to_string(&requirements).expect("requirements readable");
        let deps = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pydeps");
        let stamp = deps.join(".requirements");
        if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
            // Another test binary may be installing too: install into a private
            // directory, then move it into place.
            let staging = deps.with_extension(format!("tmp{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&staging);
            let status = Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .arg("--target")
                .arg(&staging)
                .arg("-r")
                .arg(&requirements)
                .status()
                .expect("pip runs");
            assert!(
                status.success(),
                "pip install -r {} failed",
                requirements.display()
            );
            std::fs::write(staging.join(".requirements"), &wanted).expect("stamp written");
            let _ = std::fs::remove_dir_all(&deps);
            if std::fs::rename(&staging, &deps).is_err() {
                // Lost the race to a concurrent installer: theirs is as good.
                let _ = std::fs::remove_dir_all(&staging);
            }
        }
        deps
    })
}

/// An HTTP client for tests (with the TLS provider calgate uses installed).
pub fn http_client() -> reqwest::Client {
    calgate::install_crypto_provider();
    reqwest::Client::new()
}

impl TestServer {
    /// Graceful stop, then a fresh server on the same data directory with
    /// `extra` instead of the configuration it ran with (e.g. resources
    /// declared after bookings were stored).
    pub async fn restart_with_extra(mut self, extra: Extra) -> TestServer {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("clean stop");
        }
        Self::start_full(self.dir, None, extra).await
    }
}

/// Adds a calendar source to the salon that belongs to `resource` (`None`:
/// the whole salon's), as a resource's imported calendar is stored.
pub fn add_salon_resource_source(app: &App, id: &str, resource: Option<&str>) {
    let tenant = app.tenant("salon").expect("salon");
    let source = calgate::model::Source {
        resource: resource.map(str::to_owned),
        ..calgate::model::Source::new(id, id)
    };
    app.calendars
        .put_source(&tenant, &source)
        .expect("source stored");
}

/// Stores a salon booking that takes no resource, `start` to `end` (RFC
/// 3339), as one stored before the salon declared resources is (tenant-wide:
/// it blocks every resource); its id. The API cannot make one any more.
pub async fn create_salon_legacy_booking(app: &App, start: &str, end: &str, title: &str) -> String {
    let mut before_resources = (*app.tenant("salon").expect("salon")).clone();
    before_resources.resources.clear();
    let patch = calgate::model::BookingPatch {
        start: Some(start.to_owned()),
        end: Some(end.to_owned()),
        title: Some(title.to_owned()),
        ..calgate::model::BookingPatch::default()
    };
    let created = app
        .bookings
        .create(
            &before_resources,
            patch,
            None,
            calgate::bookings::ConflictPolicy::Allow,
        )
        .await
        .expect("legacy booking stored");
    assert!(created.booking.resources.is_empty());
    created.booking.id
}
