//! Shared by the export tests: a gateway whose salon tenant exports to the mock
//! Google or Microsoft servers, connected through the real OAuth flow over HTTP.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{self, Extra, SALON_KEY};
use crate::providers::google::{GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET, GoogleMock};
use crate::providers::graph::{CLIENT_ID, CLIENT_SECRET, GraphMock};

/// Where the gateway says it lives (OAuth redirects); the tests call the real
/// address themselves.
pub const PUBLIC_URL: &str = "http://gateway.test";
pub const SOURCE: &str = "staff";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Provider {
    Google,
    Microsoft,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::Google => "google",
            Provider::Microsoft => "microsoft",
        }
    }
}

/// How the salon's exporting source is declared.
#[derive(Clone, Debug)]
pub struct Setup {
    pub provider: Provider,
    pub direction: &'static str,
    pub privacy: &'static str,
    pub calendar: String,
    pub accept_external_moves: bool,
    /// `[providers.*]` table: auth_url, token_url, api_base of the mock.
    pub provider_table: String,
}

impl Setup {
    pub fn google(g: &GoogleMock) -> Setup {
        g.set_redirect_uri(format!("{PUBLIC_URL}/oauth/google/callback"));
        Setup {
            provider: Provider::Google,
            direction: "export",
            privacy: "full",
            calendar: g.primary_id(),
            accept_external_moves: false,
            provider_table: format!(
                "[providers.google]\nclient_id = \"{GOOGLE_CLIENT_ID}\"\nclient_secret = \"{GOOGLE_CLIENT_SECRET}\"\nauth_url = \"{}\"\ntoken_url = \"{}\"\napi_base = \"{}\"\n",
                g.authorize_url(),
                g.token_url(),
                g.base_url()
            ),
        }
    }

    pub fn microsoft(m: &GraphMock, calendar: &str) -> Setup {
        m.set_redirect_uri(&format!("{PUBLIC_URL}/oauth/microsoft/callback"));
        Setup {
            provider: Provider::Microsoft,
            direction: "export",
            privacy: "full",
            calendar: calendar.to_owned(),
            accept_external_moves: false,
            provider_table: format!(
                "[providers.microsoft]\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\nauth_url = \"{}\"\ntoken_url = \"{}\"\napi_base = \"{}\"\n",
                m.authorize_url(),
                m.token_url(),
                m.base_url()
            ),
        }
    }

    /// The whole gateway.toml for a data directory.
    pub fn config_text(&self, data: &Path) -> String {
        let extra = Extra {
            server: format!("public_url = \"{PUBLIC_URL}\"\n{}", self.provider_table),
            salon: format!(
                "[[tenant.source]]\nid = \"{SOURCE}\"\nname = \"Staff calendar\"\nkind = \"{}\"\ncalendar = \"{}\"\ndirection = \"{}\"\nprivacy = \"{}\"\n",
                self.provider.name(),
                self.calendar,
                self.direction,
                self.privacy
            ),
        };
        let text = common::config_text_with(data, "127.0.0.1:0", None, &extra);
        // A tenant key must come before the tenant's sub-tables.
        text.replacen(
            "buffer_minutes = 10\n",
            &format!(
                "buffer_minutes = 10\naccept_external_moves = {}\n",
                self.accept_external_moves
            ),
            1,
        )
    }
}

/// A gateway in this process.
pub struct Gw {
    pub base: String,
    pub client: reqwest::Client,
    pub running: Option<calgate::Running>,
    pub dir: tempfile::TempDir,
}

impl Gw {
    pub async fn start(setup: &Setup) -> Gw {
        Self::start_with(|data| setup.config_text(data)).await
    }

    /// A gateway whose gateway.toml `config_text` writes for its data directory.
    pub async fn start_with(config_text: impl FnOnce(&Path) -> String) -> Gw {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = config_text(dir.path());
        let config =
            calgate::config::Config::parse(&text, Path::new("test.toml")).expect("valid config");
        let running = calgate::start(config).await.expect("server starts");
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        Gw {
            base: format!("http://{}", running.addr),
            client,
            running: Some(running),
            dir,
        }
    }

    pub fn app(&self) -> &calgate::app::App {
        &self.running.as_ref().expect("running").app
    }
}

pub fn client() -> reqwest::Client {
    calgate::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// A request with the salon's key: (status, JSON or text).
pub async fn call(
    client: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let url = format!("{base}/api/v1/tenants/salon{path}");
    let mut req = client.request(method, url).bearer_auth(SALON_KEY);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Connects the salon's source through the provider's OAuth flow: start at the
/// gateway, "consent" at the mock, hand the code back to the gateway.
pub async fn connect(client: &reqwest::Client, base: &str, provider: Provider) {
    connect_source(client, base, provider, SOURCE).await;
}

/// [`connect`] for the salon's source `source`.
pub async fn connect_source(
    client: &reqwest::Client,
    base: &str,
    provider: Provider,
    source: &str,
) {
    connect_tenant_source(client, base, provider, ("salon", SALON_KEY), source).await;
}

/// [`connect`] for `source` of a tenant, with a key it accepts.
pub async fn connect_tenant_source(
    client: &reqwest::Client,
    base: &str,
    provider: Provider,
    (tenant, key): (&str, &str),
    source: &str,
) {
    // A source that imports is run by the scheduler as soon as it exists
    // (failing, unconnected): that run must be over before the connection,
    // or it becomes a real import at an arbitrary point of the test.
    until(
        "the scheduler's first run of the source",
        Duration::from_secs(20),
        || async {
            let shown: Value = client
                .get(format!("{base}/api/v1/tenants/{tenant}/sources/{source}"))
                .bearer_auth(key)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            if shown["direction"] == "export" || !shown["status"]["last_attempt"].is_null() {
                Ok(())
            } else {
                Err(shown.to_string())
            }
        },
    )
    .await;
    let callback = authorize(client, base, provider, (tenant, key), source).await;
    let done = client.get(callback).send().await.expect("callback");
    let status = done.status();
    let text = done.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{text}");
}

/// The first half of a connection: start at the gateway and "consent" at the
/// mock; answers the gateway's callback URL the browser would be sent to.
pub async fn authorize(
    client: &reqwest::Client,
    base: &str,
    provider: Provider,
    (tenant, key): (&str, &str),
    source: &str,
) -> String {
    let start = client
        .get(format!(
            "{base}/oauth/{}/start?tenant={tenant}&source={source}",
            provider.name()
        ))
        .bearer_auth(key)
        .send()
        .await
        .expect("start");
    assert_eq!(start.status(), 302, "{:?}", start.text().await);
    let to_provider = location(&start);
    let consent = client.get(&to_provider).send().await.expect("authorize");
    assert_eq!(consent.status(), 302);
    let back = location(&consent);
    let back = reqwest::Url::parse(&back).expect("callback URL");
    assert!(back.as_str().starts_with(PUBLIC_URL), "{back}");
    format!(
        "{base}{}?{}",
        back.path(),
        back.query().expect("code and state")
    )
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("a Location header")
        .to_owned()
}

/// `2026-12-{day}` from `h:00` for `minutes` (Paris, winter).
pub fn slot(day: u32, hour: u32, minutes: i64, title: &str) -> Value {
    let start =
        chrono::DateTime::parse_from_rfc3339(&format!("2026-12-{day:02}T{hour:02}:00:00+01:00"))
            .expect("a time");
    let end = start + chrono::Duration::minutes(minutes);
    json!({
        "start": start.to_rfc3339(),
        "end": end.to_rfc3339(),
        "title": title,
        "service": "Colour",
        "location": "Chair 2",
        "notes": "Allergic to ammonia",
        "customer": {"name": "Ana Lima", "email": "ana@example.com", "phone": "+33 6 12 34 56 78"},
    })
}

/// The source as the API shows it.
pub async fn source(client: &reqwest::Client, base: &str) -> Value {
    source_named(client, base, SOURCE).await
}

/// The salon's source `id` as the API shows it.
pub async fn source_named(client: &reqwest::Client, base: &str, id: &str) -> Value {
    let (status, body) = call(
        client,
        base,
        reqwest::Method::GET,
        &format!("/sources/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls until `check` holds, or fails with what it last saw.
pub async fn until<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let end = Instant::now() + deadline;
    let mut last = String::new();
    while Instant::now() < end {
        match check().await {
            Ok(()) => return,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}: {last}");
}

/// Waits until the export of the salon's source has nothing pending.
pub async fn drained(client: &reqwest::Client, base: &str, deadline: Duration) {
    drained_source(client, base, SOURCE, deadline).await;
}

/// [`drained`] for the salon's source `id`.
pub async fn drained_source(client: &reqwest::Client, base: &str, id: &str, deadline: Duration) {
    until("the export outbox to drain", deadline, || async {
        let s = source_named(client, base, id).await;
        let export = &s["status"]["export"];
        if export["pending_changes"] == json!(0) {
            Ok(())
        } else {
            Err(export.to_string())
        }
    })
    .await;
}

/// The marker our exported events carry for salon booking `id`.
pub fn marker(id: &str) -> String {
    format!("salon/{id}")
}

/// Live Google events of `calendar` carrying our marker for `id`.
pub fn google_events_in(g: &GoogleMock, calendar: &str, id: &str) -> Vec<Value> {
    g.events_with_private_property(calendar, "gatewayBookingId", &marker(id))
}

/// The booking marker of a Graph event (its single-value extended property).
pub fn graph_marker(e: &Value) -> Option<String> {
    e.get("singleValueExtendedProperties")?
        .as_array()?
        .iter()
        .find(|p| {
            p["id"]
                .as_str()
                .is_some_and(|i| i.to_ascii_lowercase().contains("gatewaybookingid"))
        })?["value"]
        .as_str()
        .map(str::to_owned)
}

/// Live Graph events of `calendar` carrying our marker for `id`.
pub fn graph_events_in(m: &GraphMock, calendar: &str, id: &str) -> Vec<Value> {
    m.live_events(calendar)
        .into_iter()
        .filter(|e| graph_marker(e).as_deref() == Some(marker(id).as_str()))
        .collect()
}
