//! The provisioning API over HTTP (issue 15, point 5): tenants, CalDAV users,
//! API keys and feeds created, changed and deleted with the operator key, in
//! effect at once, refused to anyone else, and durable across `kill -9`.

mod common;
use calgate_test_mocks as providers;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::{Extra, GARAGE_KEY, SALON_KEY, TestServer, problem_fields, split};
use reqwest::Method;
use serde_json::{Value, json};

const OPERATOR_KEY: &str = "operator-key-0123456789";

fn operator_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| calgate::auth::hash_secret(OPERATOR_KEY).expect("hashing works"))
}

/// `[admin]` (after `server`, which stays in `[server]`).
fn with_admin(server: &str) -> Extra {
    Extra {
        server: format!("{server}\n[admin]\nkey_hash = \"{}\"\n", operator_hash()),
        ..Extra::default()
    }
}

/// Where the calls go: a [`TestServer`] in this process or a spawned binary.
struct Gw {
    client: reqwest::Client,
    base: String,
}

impl Gw {
    fn of(s: &TestServer) -> Gw {
        Gw {
            client: s.client.clone(),
            base: s.base.clone(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// One call: (status, JSON body or Null).
async fn call(
    s: &Gw,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = s.client.request(method, s.url(path));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let (status, body, _) = split(req.send().await.expect("request sent")).await;
    (status, body)
}

async fn op(s: &Gw, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call(s, method, path, Some(OPERATOR_KEY), body).await
}

/// PROPFIND Depth 0 on the DAV root as `user`: the status.
async fn propfind(s: &Gw, user: &str, password: &str) -> u16 {
    s.client
        .request(
            Method::from_bytes(b"PROPFIND").expect("method"),
            s.url("/dav/"),
        )
        .basic_auth(user, Some(password))
        .header("Depth", "0")
        .send()
        .await
        .expect("request sent")
        .status()
        .as_u16()
}

async fn get_url(s: &Gw, url: &str) -> (u16, String) {
    let resp = s.client.get(url).send().await.expect("request sent");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

/// A tenant `bakery` with user `baker` (password `pw-1`) and API key `front`: the key.
async fn provision_bakery(s: &Gw) -> String {
    let (status, body) = op(
        s,
        "PUT",
        "/api/v1/tenants/bakery",
        Some(json!({"name": "Bakery", "timezone": "Europe/Berlin"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = op(
        s,
        "PUT",
        "/api/v1/tenants/bakery/users/baker",
        Some(json!({"password": "pw-1"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = op(s, "PUT", "/api/v1/tenants/bakery/api-keys/front", None).await;
    assert_eq!(status, 201, "{body}");
    body["key"].as_str().expect("the key, once").to_owned()
}

/// The feed host serving `/bakery.ics` with `events` events, and a gateway
/// with the operator key that may fetch from it.
async fn bakery_feed_and_gateway(events: usize) -> (providers::ics::IcsMock, TestServer) {
    let feed = providers::ics::IcsMock::start().await;
    feed.set_feed("/bakery.ics", providers::ics::generated_feed(events));
    let server = TestServer::start_with_extra(with_admin("fetch_allow = [\"127.0.0.1/32\"]")).await;
    (feed, server)
}

fn booking_at(hour: u32) -> Value {
    json!({
        "start": format!("2026-06-01T{hour:02}:00:00+02:00"),
        "end": format!("2026-06-01T{hour:02}:45:00+02:00"),
        "title": "Bread tasting",
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provisioned_tenant_works_at_once_and_repeats_are_idempotent() {
    let server = TestServer::start_with_extra(with_admin("")).await;
    let s = &Gw::of(&server);
    let (status, body) = op(
        s,
        "PUT",
        "/api/v1/tenants/bakery",
        Some(json!({
            "name": "Bakery", "timezone": "Europe/Berlin", "buffer_minutes": 5,
            "opening_hours": {"monday": ["08:00-13:00"]}, "scheduling": "client",
        })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["managed_by"], "api");
    assert_eq!(body["opening_hours"]["monday"], json!(["08:00-13:00"]));
    let (status, body) = op(
        s,
        "PUT",
        "/api/v1/tenants/bakery",
        Some(json!({"name": "Bakery Bros", "timezone": "Europe/Berlin"})),
    )
    .await;
    assert_eq!(status, 200, "the same id replaces: {body}");
    assert_eq!(body["name"], "Bakery Bros");

    let (status, body) = op(
        s,
        "PUT",
        "/api/v1/tenants/bakery/users/baker",
        Some(json!({"password": "pw-1", "email": "baker@bakery.example"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body.to_string().find("pw-1").is_none(),
        "no password in {body}"
    );
    let (status, _) = op(
        s,
        "PUT",
        "/api/v1/tenants/bakery/users/baker",
        Some(json!({"password": "pw-1"})),
    )
    .await;
    assert_eq!(status, 200);

    let (status, body) = op(s, "PUT", "/api/v1/tenants/bakery/api-keys/front", None).await;
    assert_eq!(status, 201, "{body}");
    let key = body["key"].as_str().expect("the key, once").to_owned();
    assert!(key.starts_with("ck_") && key.len() >= 3 + 64, "{key}");
    let (status, again) = op(s, "PUT", "/api/v1/tenants/bakery/api-keys/front", None).await;
    assert_eq!(status, 200, "{again}");
    assert!(again.get("key").is_none(), "shown once: {again}");
    assert!(
        again["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("DELETE"),
        "{again}"
    );

    let (status, body) = op(
        s,
        "PUT",
        "/api/v1/tenants/bakery/feeds/public",
        Some(json!({"refresh_minutes": 30})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let feed_url = body["url"].as_str().expect("the feed URL, once").to_owned();
    assert!(
        body["token"].as_str().is_some_and(|t| feed_url.contains(t)),
        "{body}"
    );

    // Used at once, no restart: a booking with the key, CalDAV as the user, the feed.
    let (status, body) = call(
        s,
        "POST",
        "/api/v1/tenants/bakery/bookings",
        Some(&key),
        Some(booking_at(10)),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(propfind(s, "baker", "pw-1").await, 207);
    assert_eq!(propfind(s, "baker", "wrong").await, 401);
    let (status, text) = get_url(s, &feed_url).await;
    assert_eq!(status, 200);
    assert!(text.contains("Bread tasting"), "{text}");

    // A repeated feed PUT changes its settings, shows no token, and the feed follows.
    let (status, body) = op(
        s,
        "PUT",
        "/api/v1/tenants/bakery/feeds/public",
        Some(json!({"privacy": "busy"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.get("token").is_none() && body.get("url").is_none(),
        "{body}"
    );
    assert_eq!(body["feed"]["privacy"], "busy");
    let (_, text) = get_url(s, &feed_url).await;
    assert!(
        !text.contains("Bread tasting") && text.contains("Busy"),
        "{text}"
    );

    // The tenant reads itself with its key; the operator lists every tenant.
    let (status, body) = call(s, "GET", "/api/v1/tenants/bakery", Some(&key), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["users"], json!([{"email": null, "username": "baker"}]));
    assert_eq!(body["api_keys"], json!([{"name": "front"}]));
    let (status, body) = op(s, "GET", "/api/v1/tenants", None).await;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<(String, String)> = body["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap_or_default().to_owned(),
                t["managed_by"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("bakery".to_owned(), "api".to_owned()),
            ("garage".into(), "file".into()),
            ("salon".into(), "file".into())
        ]
    );

    // Revoked at once: the key, the user, the feed.
    assert_eq!(
        op(s, "DELETE", "/api/v1/tenants/bakery/api-keys/front", None)
            .await
            .0,
        204
    );
    let (status, _) = call(
        s,
        "POST",
        "/api/v1/tenants/bakery/bookings",
        Some(&key),
        Some(booking_at(11)),
    )
    .await;
    assert_eq!(
        status, 401,
        "a revoked key is refused although it was just used"
    );
    assert_eq!(
        op(s, "DELETE", "/api/v1/tenants/bakery/users/baker", None)
            .await
            .0,
        204
    );
    assert_eq!(propfind(s, "baker", "pw-1").await, 401);
    assert_eq!(
        op(s, "DELETE", "/api/v1/tenants/bakery/feeds/public", None)
            .await
            .0,
        204
    );
    assert_eq!(get_url(s, &feed_url).await.0, 404);
    assert_eq!(
        op(s, "DELETE", "/api/v1/tenants/bakery/feeds/public", None)
            .await
            .0,
        404
    );

    // Rotation: a new key under the same name works, the old one stays dead.
    let (status, body) = op(s, "PUT", "/api/v1/tenants/bakery/api-keys/front", None).await;
    assert_eq!(status, 201, "{body}");
    let rotated = body["key"].as_str().expect("a new key").to_owned();
    assert_ne!(rotated, key);
    assert_eq!(
        call(s, "GET", "/api/v1/tenants/bakery", Some(&rotated), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(s, "GET", "/api/v1/tenants/bakery", Some(&key), None)
            .await
            .0,
        401
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn other_credentials_and_none_are_refused_everywhere() {
    let server = TestServer::start_with_extra(with_admin("")).await;
    let s = &Gw::of(&server);
    let bakery_key = provision_bakery(s).await;
    let calls: [(&str, &str, Option<Value>); 10] = [
        ("GET", "/api/v1/tenants", None),
        ("GET", "/api/v1/tenants/bakery", None),
        (
            "PUT",
            "/api/v1/tenants/bakery",
            Some(json!({"timezone": "UTC"})),
        ),
        ("DELETE", "/api/v1/tenants/bakery", None),
        (
            "PUT",
            "/api/v1/tenants/bakery/users/baker",
            Some(json!({"password": "x"})),
        ),
        ("DELETE", "/api/v1/tenants/bakery/users/baker", None),
        ("PUT", "/api/v1/tenants/bakery/api-keys/other", None),
        ("DELETE", "/api/v1/tenants/bakery/api-keys/front", None),
        (
            "PUT",
            "/api/v1/tenants/bakery/feeds/public",
            Some(json!({})),
        ),
        ("DELETE", "/api/v1/tenants/bakery/feeds/public", None),
    ];
    for (method, path, body) in &calls {
        let (status, problem) = call(s, method, path, Some(SALON_KEY), body.clone()).await;
        assert_eq!(
            status, 403,
            "another tenant's key on {method} {path}: {problem}"
        );
        assert_eq!(problem["status"], 403);
        let (status, _) = call(s, method, path, None, body.clone()).await;
        assert_eq!(status, 401, "no key on {method} {path}");
        let (status, _) = call(s, method, path, Some("ck_not-a-key"), body.clone()).await;
        assert_eq!(status, 401, "a wrong key on {method} {path}");
    }
    // The tenant's own key reads the tenant, nothing more.
    for (method, path, body) in &calls {
        let (status, _) = call(s, method, path, Some(&bakery_key), body.clone()).await;
        let expected = if *method == "GET" && *path == "/api/v1/tenants/bakery" {
            200
        } else {
            403
        };
        assert_eq!(status, expected, "the tenant's own key on {method} {path}");
    }
    assert_eq!(
        call(s, "GET", "/api/v1/tenants/salon", Some(&bakery_key), None)
            .await
            .0,
        403
    );
    assert_eq!(
        call(
            s,
            "GET",
            "/api/v1/tenants/bakery/bookings?start=2026-06-01T00:00:00Z&end=2026-06-02T00:00:00Z",
            Some(GARAGE_KEY),
            None
        )
        .await
        .0,
        403
    );
    // Everything is still there.
    assert_eq!(op(s, "GET", "/api/v1/tenants/bakery", None).await.0, 200);
    assert_eq!(propfind(s, "baker", "pw-1").await, 207);
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_file_declares_is_changed_there() {
    let server = TestServer::start_with_extra(with_admin("")).await;
    let s = &Gw::of(&server);
    provision_bakery(s).await;
    for (method, path, body) in [
        (
            "PUT",
            "/api/v1/tenants/salon",
            Some(json!({"timezone": "UTC"})),
        ),
        ("DELETE", "/api/v1/tenants/salon", None),
        (
            "PUT",
            "/api/v1/tenants/salon/users/ana",
            Some(json!({"password": "x"})),
        ),
        ("DELETE", "/api/v1/tenants/salon/users/ana", None),
        (
            "PUT",
            "/api/v1/tenants/salon/users/newcomer",
            Some(json!({"password": "x"})),
        ),
        ("PUT", "/api/v1/tenants/garage/api-keys/more", None),
        ("DELETE", "/api/v1/tenants/salon/api-keys/frontdesk", None),
        ("PUT", "/api/v1/tenants/salon/feeds/full", Some(json!({}))),
    ] {
        let (status, problem) = op(s, method, path, body).await;
        assert_eq!(status, 409, "{method} {path}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("gateway.toml"),
            "{problem}"
        );
    }
    // A user name of the file's is taken.
    let (status, problem) = op(
        s,
        "PUT",
        "/api/v1/tenants/bakery/users/ana",
        Some(json!({"password": "x"})),
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    let (status, body) = op(s, "GET", "/api/v1/tenants/salon", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["managed_by"], "file");
    assert_eq!(
        propfind(s, "ana", "secret").await,
        207,
        "the file's users are untouched"
    );
    assert_eq!(
        call(s, "GET", "/api/v1/tenants/salon", Some(SALON_KEY), None)
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_naming_the_field() {
    let server = TestServer::start_with_extra(with_admin("")).await;
    let s = &Gw::of(&server);
    let bad = [
        (
            "/api/v1/tenants/bakery",
            json!({"timezone": "Europe/Nowhere"}),
            "timezone",
        ),
        ("/api/v1/tenants/bakery", json!({"name": "B"}), "timezone"),
        (
            "/api/v1/tenants/bakery",
            json!({"timezone": "UTC", "colour": "red"}),
            "colour",
        ),
        (
            "/api/v1/tenants/bakery",
            json!({"timezone": "UTC", "buffer_minutes": "ten"}),
            "buffer_minutes",
        ),
        (
            "/api/v1/tenants/bakery",
            json!({"timezone": "UTC", "opening_hours": {"monday": ["9-17"]}}),
            "opening_hours.monday[0]",
        ),
        (
            "/api/v1/tenants/bakery",
            json!({"timezone": "UTC", "scheduling": "auto"}),
            "scheduling",
        ),
        ("/api/v1/tenants/Bad%20Id", json!({"timezone": "UTC"}), "id"),
    ];
    for (path, body, field) in bad {
        let (status, problem) = op(s, "PUT", path, Some(body.clone())).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem_fields(&problem), [field], "{body}: {problem}");
    }
    assert_eq!(
        op(s, "GET", "/api/v1/tenants/bakery", None).await.0,
        404,
        "nothing was created"
    );
    assert_eq!(
        op(
            s,
            "PUT",
            "/api/v1/tenants/bakery",
            Some(json!({"timezone": "UTC"}))
        )
        .await
        .0,
        201
    );
    let bad = [
        (
            "/api/v1/tenants/bakery/users/baker",
            json!({"password": ""}),
            "password",
        ),
        ("/api/v1/tenants/bakery/users/baker", json!({}), "password"),
        (
            "/api/v1/tenants/bakery/users/baker",
            json!({"password": "x", "email": "nope"}),
            "email",
        ),
        (
            "/api/v1/tenants/bakery/users/a:b",
            json!({"password": "x"}),
            "username",
        ),
        (
            "/api/v1/tenants/bakery/feeds/public",
            json!({"refresh_minutes": 0}),
            "refresh_minutes",
        ),
        (
            "/api/v1/tenants/bakery/feeds/public",
            json!({"privacy": "secret"}),
            "privacy",
        ),
        (
            "/api/v1/tenants/bakery/feeds/public",
            json!({"include_sources": "everything"}),
            "include_sources",
        ),
        ("/api/v1/tenants/bakery/feeds/Public", json!({}), "name"),
    ];
    for (path, body, field) in bad {
        let (status, problem) = op(s, "PUT", path, Some(body.clone())).await;
        assert_eq!(status, 422, "{path} {body}: {problem}");
        assert_eq!(
            problem_fields(&problem),
            [field],
            "{path} {body}: {problem}"
        );
    }
    let (status, problem) = op(
        s,
        "PUT",
        "/api/v1/tenants/bakery/api-keys/Not%20A%20Name",
        None,
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem_fields(&problem), ["name"]);
    let (status, body) = op(s, "GET", "/api/v1/tenants/bakery", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["users"], json!([]), "{body}");
    assert_eq!(body["feeds"], json!([]), "{body}");
    assert_eq!(body["api_keys"], json!([]), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_admin_provisioning_says_how_to_enable_it() {
    let server = TestServer::start().await;
    let s = &Gw::of(&server);
    let (status, problem) = call(s, "GET", "/api/v1/tenants", Some(SALON_KEY), None).await;
    assert_eq!(status, 403, "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("[admin]") && detail.contains("calgate hash-password"),
        "{detail}"
    );
    let (status, _) = call(
        s,
        "PUT",
        "/api/v1/tenants/bakery",
        Some(SALON_KEY),
        Some(json!({"timezone": "UTC"})),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(call(s, "GET", "/api/v1/tenants", None, None).await.0, 401);
    assert_eq!(
        call(s, "GET", "/api/v1/tenants", Some(OPERATOR_KEY), None)
            .await
            .0,
        401
    );
    // The tenant itself still reads its settings.
    assert_eq!(
        call(s, "GET", "/api/v1/tenants/salon", Some(SALON_KEY), None)
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_tenant_removes_its_data_and_stops_its_syncs() {
    let (feed, server) = bakery_feed_and_gateway(5).await;
    let s = &Gw::of(&server);
    let key = provision_bakery(s).await;
    let (status, body) = call(
        s,
        "POST",
        "/api/v1/tenants/bakery/bookings",
        Some(&key),
        Some(booking_at(10)),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        s,
        "POST",
        "/api/v1/tenants/bakery/sources",
        Some(&key),
        Some(json!({
            "id": "supplier", "kind": "ics", "url": feed.url("/bakery.ics"), "interval_minutes": 1,
        })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // The scheduler runs the new source at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server
        .app()
        .store
        .objects("bakery", "supplier")
        .expect("objects")
        .len()
        < 5
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the source was never synced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A run in flight when the tenant goes: it must not write anything back.
    feed.set_feed("/bakery.ics", providers::ics::generated_feed(8));
    feed.set_latency(Duration::from_millis(1500));
    let in_flight = {
        let (client, url, key) = (
            s.client.clone(),
            s.url("/api/v1/tenants/bakery/sources/supplier/sync?mode=full"),
            key.clone(),
        );
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, body) = op(s, "DELETE", "/api/v1/tenants/bakery", None).await;
    assert_eq!(status, 204, "{body}");
    let _ = in_flight.await;
    feed.set_latency(Duration::ZERO);
    let hits = feed.hits("/bakery.ics");

    // Gone: the tenant, its credentials, its data.
    assert_eq!(op(s, "GET", "/api/v1/tenants/bakery", None).await.0, 404);
    assert_eq!(
        call(s, "GET", "/api/v1/tenants/bakery", Some(&key), None)
            .await
            .0,
        401
    );
    assert_eq!(propfind(s, "baker", "pw-1").await, 401);
    assert_eq!(op(s, "DELETE", "/api/v1/tenants/bakery", None).await.0, 404);
    let store = &server.app().store;
    assert!(store.sources("bakery").expect("sources").is_empty());
    assert!(
        store
            .objects("bakery", "supplier")
            .expect("objects")
            .is_empty()
    );
    assert_eq!(store.iter_bookings("bakery").count(), 0);
    assert!(
        store
            .sync_logs("bakery", "supplier")
            .expect("logs")
            .is_empty()
    );

    // Re-created under the same id: empty, and the old source is never fetched again.
    let key = provision_bakery(s).await;
    let (status, body) = call(
        s,
        "GET",
        "/api/v1/tenants/bakery/bookings?start=2026-06-01T00:00:00Z&end=2026-06-02T00:00:00Z",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["bookings"], json!([]), "{body}");
    let (status, body) = call(s, "GET", "/api/v1/tenants/bakery/sources", Some(&key), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["sources"], json!([]), "{body}");
    assert_eq!(propfind(s, "baker", "pw-1").await, 207);
    server.app().sync.wake();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        feed.hits("/bakery.ics"),
        hits,
        "a deleted tenant's source is not fetched again"
    );
    assert!(
        store
            .objects("bakery", "supplier")
            .expect("objects")
            .is_empty()
    );
    // The file's tenants are untouched.
    assert_eq!(
        call(s, "GET", "/api/v1/tenants/salon", Some(SALON_KEY), None)
            .await
            .0,
        200
    );
}

/// A request sent up to its body, on its own connection: the server answered
/// `100 Continue`, which it does when a handler starts reading the body, so
/// the tenant was looked up and the caller authenticated; the write is next.
struct Paused {
    stream: tokio::net::TcpStream,
    body: Vec<u8>,
}

impl Paused {
    async fn send(
        s: &Gw,
        method: &str,
        path: &str,
        authorization: &str,
        content_type: &str,
        body: &str,
    ) -> Paused {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = s.base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {authorization}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("head sent");
        let mut answer = Vec::new();
        let interim = async {
            while !answer.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8];
                if stream.read(&mut byte).await.expect("reads") == 0 {
                    break;
                }
                answer.push(byte[0]);
            }
        };
        tokio::time::timeout(Duration::from_secs(20), interim)
            .await
            .expect("an answer to the head");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 100"),
            "{method} {path} was answered before its body: {answer}"
        );
        Paused {
            stream,
            body: body.as_bytes().to_vec(),
        }
    }

    /// Sends the body: the final status and body text.
    async fn finish(mut self) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.stream.write_all(&self.body).await.expect("body sent");
        let mut answer = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(20),
            self.stream.read_to_end(&mut answer),
        )
        .await
        .expect("an answer")
        .expect("reads");
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, answer)
    }
}

/// Writes of the bakery paused at their body, one of each kind: a booking
/// POST over the API, a CalDAV PUT into the bookings calendar, a CalDAV PUT
/// into the staff calendar, and a MKCALENDAR.
async fn paused_writes(s: &Gw, key: &str) -> Vec<(&'static str, Paused)> {
    let bearer = format!("Bearer {key}");
    let basic = http_auth_basic::Credentials::new("baker", "pw-1").as_http_header();
    let event = |uid: &str| {
        format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260601T130000Z\r\nDTEND:20260601T134500Z\r\nSUMMARY:Late\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        )
    };
    let mkcalendar = r#"<?xml version="1.0" encoding="utf-8"?><c:mkcalendar xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:set><d:prop><d:displayname>Late</d:displayname></d:prop></d:set></c:mkcalendar>"#;
    vec![
        (
            "booking POST",
            Paused::send(
                s,
                "POST",
                "/api/v1/tenants/bakery/bookings",
                &bearer,
                "application/json",
                &booking_at(15).to_string(),
            )
            .await,
        ),
        (
            "CalDAV PUT of a booking",
            Paused::send(
                s,
                "PUT",
                "/dav/calendars/bakery/bookings/late-booking.ics",
                &basic,
                "text/calendar",
                &event("late-booking"),
            )
            .await,
        ),
        (
            "CalDAV PUT into a staff calendar",
            Paused::send(
                s,
                "PUT",
                "/dav/calendars/bakery/staff/late-event.ics",
                &basic,
                "text/calendar",
                &event("late-event"),
            )
            .await,
        ),
        (
            "MKCALENDAR",
            Paused::send(
                s,
                "MKCALENDAR",
                "/dav/calendars/bakery/late/",
                &basic,
                "application/xml",
                mkcalendar,
            )
            .await,
        ),
    ]
}

/// Nothing of the bakery is stored: no booking, calendar or event.
fn bakery_is_empty(server: &TestServer) {
    let store = &server.app().store;
    assert_eq!(store.iter_bookings("bakery").count(), 0, "bookings");
    assert_eq!(
        store.sources("bakery").expect("sources"),
        vec![],
        "calendars"
    );
    for calendar in ["staff", "late"] {
        assert_eq!(
            store.iter_objects("bakery", calendar).count(),
            0,
            "events in {calendar}"
        );
    }
}

/// Writes that found the tenant and authenticated before its DELETE, and
/// write after it: refused with 404, nothing stored under its id, and a
/// tenant created again under the id starts empty (the writes that found
/// the deleted tenant cannot land in the new one either).
#[tokio::test(flavor = "multi_thread")]
async fn writes_in_flight_when_a_tenant_is_deleted_write_nothing() {
    let server = TestServer::start_with_extra(with_admin("")).await;
    let s = &Gw::of(&server);
    for recreate in [false, true] {
        let key = provision_bakery(s).await;
        let staff = s
            .client
            .request(
                Method::from_bytes(b"MKCALENDAR").expect("method"),
                s.url("/dav/calendars/bakery/staff/"),
            )
            .basic_auth("baker", Some("pw-1"))
            .send()
            .await
            .expect("request sent");
        assert_eq!(staff.status(), 201);
        let paused = paused_writes(s, &key).await;

        let (status, body) = op(s, "DELETE", "/api/v1/tenants/bakery", None).await;
        assert_eq!(status, 204, "{body}");
        let key = if recreate {
            Some(provision_bakery(s).await)
        } else {
            None
        };
        for (what, write) in paused {
            let (status, answer) = write.finish().await;
            assert_eq!(status, 404, "{what} after the tenant's DELETE: {answer}");
            if what == "booking POST" {
                assert!(
                    answer.contains("tenant \\\"bakery\\\" does not exist"),
                    "{answer}"
                );
            }
        }
        bakery_is_empty(&server);
        if let Some(key) = key {
            let (status, body) = call(
                s,
                "GET",
                "/api/v1/tenants/bakery/bookings?start=2026-06-01T00:00:00Z&end=2026-06-02T00:00:00Z",
                Some(&key),
                None,
            )
            .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["bookings"], json!([]), "{body}");
            let (status, _) = op(s, "DELETE", "/api/v1/tenants/bakery", None).await;
            assert_eq!(status, 204);
        }
    }
}

/// Writes racing a tenant's DELETE: each is either done before the data goes
/// (and removed with it) or refused; none lands after. Several rounds, the
/// writes started together with the DELETE.
#[tokio::test(flavor = "multi_thread")]
async fn writes_racing_a_tenant_delete_leave_nothing_behind() {
    let server = TestServer::start_with_extra(with_admin("")).await;
    let s = &Gw::of(&server);
    for round in 0..4 {
        let key = provision_bakery(s).await;
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..12u32 {
            let (client, key) = (s.client.clone(), key.clone());
            let url = if i % 2 == 0 {
                s.url("/api/v1/tenants/bakery/bookings")
            } else {
                s.url(&format!("/dav/calendars/bakery/bookings/r{round}-{i}.ics"))
            };
            writes.spawn(async move {
                let req = if i % 2 == 0 {
                    client.post(url).bearer_auth(key).json(&json!({
                        "start": format!("2026-06-01T{:02}:00:00Z", i),
                        "end": format!("2026-06-01T{:02}:30:00Z", i),
                        "title": "Race", "allow_conflict": true,
                    }))
                } else {
                    client.put(url).basic_auth("baker", Some("pw-1")).header("content-type", "text/calendar").body(format!(
                        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nBEGIN:VEVENT\r\nUID:race-{i}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260601T{i:02}0000Z\r\nDTEND:20260601T{i:02}3000Z\r\nSUMMARY:Race\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
                    ))
                };
                req.send().await.map(|r| r.status().as_u16())
            });
        }
        let (status, body) = op(s, "DELETE", "/api/v1/tenants/bakery", None).await;
        assert_eq!(status, 204, "{body}");
        while let Some(done) = writes.join_next().await {
            let status = done.expect("joined").expect("answered");
            assert!(
                [201, 401, 404].contains(&status),
                "a racing write answered {status}"
            );
        }
        bakery_is_empty(&server);
    }
}

/// `calgate serve` on `config` (a real process): it and its base URL.
fn spawn(config: &Path) -> (std::process::Child, String) {
    let log = std::fs::File::create(config.with_file_name("server.log")).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_calgate"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("calgate starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the listening line");
    let base = line
        .trim()
        .trim_start_matches("calgate listening on ")
        .to_owned();
    (child, base)
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioning_survives_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("gateway.toml");
    let text = common::config_text_with(
        &dir.path().join("data"),
        "127.0.0.1:0",
        None,
        &with_admin(""),
    );
    std::fs::write(&config, text).expect("config written");
    let (mut child, base) = spawn(&config);
    let remote = Gw {
        client: common::http_client(),
        base,
    };
    let key = provision_bakery(&remote).await;
    // SIGKILL the moment the last answer is in.
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");

    let (mut child, base) = spawn(&config);
    let remote = Gw { base, ..remote };
    let (status, body) = call(
        &remote,
        "POST",
        "/api/v1/tenants/bakery/bookings",
        Some(&key),
        Some(booking_at(9)),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(propfind(&remote, "baker", "pw-1").await, 207);
    let (status, body) = op(&remote, "GET", "/api/v1/tenants/bakery", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["timezone"], "Europe/Berlin");
    child.kill().expect("stopped");
    child.wait().expect("reaped");
}

/// Resources provisioned at run time: a salon with two stylists and a chair,
/// booked at once; capacity and the per-resource conflict check apply; a
/// resource in use cannot be deleted; bad input names the field.
#[tokio::test(flavor = "multi_thread")]
async fn resources_are_provisioned_and_booked_at_once() {
    let server = TestServer::start_with_extra(with_admin("")).await;
    let s = &Gw::of(&server);
    let key = provision_bakery(s).await;
    // Still to come, so a resource they take is in use.
    let book = |resources: Value, hour: u32| {
        json!({
            "start": format!("2030-06-03T{hour:02}:00:00+02:00"),
            "end": format!("2030-06-03T{hour:02}:45:00+02:00"),
            "title": "Cut", "resources": resources,
        })
    };
    // Before any resource: the implicit one.
    let (status, body) = call(
        s,
        "GET",
        "/api/v1/tenants/bakery/resources",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["resources"][0]["id"], "default");
    assert_eq!(body["resources"][0]["implicit"], true);

    for (id, settings) in [
        ("anna", json!({"name": "Anna", "kind": "staff"})),
        (
            "ben",
            json!({"name": "Ben", "kind": "staff", "buffer_minutes": 0}),
        ),
        ("chair", json!({"kind": "equipment", "capacity": 2})),
    ] {
        let path = format!("/api/v1/tenants/bakery/resources/{id}");
        let (status, body) = op(s, "PUT", &path, Some(settings.clone())).await;
        assert_eq!(status, 201, "{id}: {body}");
        assert_eq!(body["id"], id);
        // A repeat changes nothing and says so with 200.
        let (status, again) = op(s, "PUT", &path, Some(settings)).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again, body);
    }
    let (_, body) = call(
        s,
        "GET",
        "/api/v1/tenants/bakery/resources",
        Some(&key),
        None,
    )
    .await;
    let ids: Vec<&str> = body["resources"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, ["anna", "ben", "chair"]);
    let (status, body) = call(
        s,
        "GET",
        "/api/v1/tenants/bakery/resources/chair",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(
        (status, body["capacity"].clone()),
        (200, json!(2)),
        "{body}"
    );

    // In effect at once: bookings name them, conflicts are per resource.
    let bookings = "/api/v1/tenants/bakery/bookings";
    let (status, body) = call(
        s,
        "POST",
        bookings,
        Some(&key),
        Some(book(json!(["anna", "chair"]), 10)),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        s,
        "POST",
        bookings,
        Some(&key),
        Some(book(json!(["ben", "chair"]), 10)),
    )
    .await;
    assert_eq!(status, 201, "ben and the chair's second seat: {body}");
    let (status, body) = call(
        s,
        "POST",
        bookings,
        Some(&key),
        Some(book(json!(["anna"]), 10)),
    )
    .await;
    assert_eq!(status, 409, "anna is taken: {body}");
    assert_eq!(body["conflicts"][0]["resource"], "anna", "{body}");
    let (status, body) = call(
        s,
        "POST",
        bookings,
        Some(&key),
        Some(json!({
            "start": "2030-06-03T10:15:00+02:00", "end": "2030-06-03T10:30:00+02:00",
            "title": "Third chair", "resources": ["chair"],
        })),
    )
    .await;
    assert_eq!(status, 409, "the chair's two seats are taken: {body}");
    let (status, body) = call(
        s,
        "POST",
        bookings,
        Some(&key),
        Some(book(json!(["nobody"]), 12)),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(problem_fields(&body), ["resources"]);

    // Bad settings name the field; a resource in use is not deleted.
    let (status, body) = op(
        s,
        "PUT",
        "/api/v1/tenants/bakery/resources/room",
        Some(json!({"capacity": 0})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(problem_fields(&body), ["capacity"]);
    let (status, body) = op(
        s,
        "PUT",
        "/api/v1/tenants/bakery/resources/room",
        Some(json!({"seats": 3})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = op(s, "DELETE", "/api/v1/tenants/bakery/resources/anna", None).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("booking"),
        "{body}"
    );
    let (status, _) = op(s, "DELETE", "/api/v1/tenants/bakery/resources/nobody", None).await;
    assert_eq!(status, 404);

    // Another tenant's key cannot read or change them; the file's tenants are the file's.
    let (status, _) = call(
        s,
        "GET",
        "/api/v1/tenants/bakery/resources/anna",
        Some(SALON_KEY),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        s,
        "PUT",
        "/api/v1/tenants/bakery/resources/anna",
        Some(&key),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = op(
        s,
        "PUT",
        "/api/v1/tenants/salon/resources/anna",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 409, "{body}");

    // An unused resource goes, and with it its bookings' claim.
    let (status, _) = op(s, "PUT", "/api/v1/tenants/bakery/resources/spare", None).await;
    assert_eq!(status, 201);
    let (status, _) = op(s, "DELETE", "/api/v1/tenants/bakery/resources/spare", None).await;
    assert_eq!(status, 204);
    let (status, _) = call(
        s,
        "GET",
        "/api/v1/tenants/bakery/resources/spare",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // A resource a user or a feed is linked to is in use too.
    let (status, _) = op(s, "PUT", "/api/v1/tenants/bakery/resources/desk", None).await;
    assert_eq!(status, 201);
    let (status, body) = op(
        s,
        "PUT",
        "/api/v1/tenants/bakery/users/clerk",
        Some(json!({"password": "pw", "resource": "desk"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = op(s, "DELETE", "/api/v1/tenants/bakery/resources/desk", None).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("user clerk"),
        "{body}"
    );
    let (status, _) = op(s, "DELETE", "/api/v1/tenants/bakery/users/clerk", None).await;
    assert_eq!(status, 204);
    let (status, body) = op(
        s,
        "PUT",
        "/api/v1/tenants/bakery/feeds/desk",
        Some(json!({"resource": "desk"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = op(s, "DELETE", "/api/v1/tenants/bakery/resources/desk", None).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("feed desk"),
        "{body}"
    );
    let (status, _) = op(s, "DELETE", "/api/v1/tenants/bakery/feeds/desk", None).await;
    assert_eq!(status, 204);
    let (status, _) = op(s, "DELETE", "/api/v1/tenants/bakery/resources/desk", None).await;
    assert_eq!(status, 204);

    // A stylist's CalDAV user, linked to her resource: her client sees her
    // bookings calendar and not Ben's.
    let (status, body) = op(
        s,
        "PUT",
        "/api/v1/tenants/bakery/users/anna",
        Some(json!({"password": "pw-anna", "resource": "anna"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = op(
        s,
        "PUT",
        "/api/v1/tenants/bakery/users/zed",
        Some(json!({"password": "pw", "resource": "nobody"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(problem_fields(&body), ["resource"]);
    let home = s
        .client
        .request(
            Method::from_bytes(b"PROPFIND").expect("method"),
            s.url("/dav/calendars/bakery/"),
        )
        .basic_auth("anna", Some("pw-anna"))
        .header("Depth", "1")
        .send()
        .await
        .expect("request sent");
    assert_eq!(home.status().as_u16(), 207);
    let listing = home.text().await.expect("a body");
    assert!(
        listing.contains("/dav/calendars/bakery/bookings.anna/"),
        "{listing}"
    );
    assert!(!listing.contains("bookings.ben"), "{listing}");

    // Durable: a restart keeps them.
    let server = server.restart().await;
    let s = &Gw::of(&server);
    let (_, body) = call(
        s,
        "GET",
        "/api/v1/tenants/bakery/resources",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(
        body["resources"].as_array().map(Vec::len),
        Some(3),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_acts_for_any_tenant_and_alone_reads_the_scheduler() {
    let (feed, server) = bakery_feed_and_gateway(3).await;
    let s = &Gw::of(&server);
    let bakery_key = provision_bakery(s).await;
    // A platform connects its businesses' calendars and books for them.
    let (status, body) = op(
        s,
        "POST",
        "/api/v1/tenants/bakery/sources",
        Some(json!({"id": "supplier", "kind": "ics", "url": feed.url("/bakery.ics")})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = op(
        s,
        "POST",
        "/api/v1/tenants/bakery/bookings",
        Some(booking_at(10)),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = op(s, "GET", "/api/v1/tenants/bakery/sources/supplier", None).await;
    assert_eq!((status, &body["id"]), (200, &json!("supplier")), "{body}");

    // The scheduler's report: the operator's only.
    assert_eq!(
        call(s, "GET", "/api/v1/scheduler", Some(&bakery_key), None)
            .await
            .0,
        403
    );
    assert_eq!(call(s, "GET", "/api/v1/scheduler", None, None).await.0, 401);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let report = loop {
        let (status, report) = op(s, "GET", "/api/v1/scheduler", None).await;
        assert_eq!(status, 200, "{report}");
        if report["runs_started"] == 1 && report["runs_in_progress"] == 0 {
            break report;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the source never ran: {report}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(report["sources_scheduled"], 1, "{report}");
    assert_eq!(report["sources_due"], 0, "{report}");
    assert_eq!(report["runs_late_over_60s"], 0, "{report}");
    assert!(
        report["max_concurrent_runs"].as_u64() >= Some(1),
        "{report}"
    );

    // Deleting the source takes it off the queue.
    let (status, _) = op(s, "DELETE", "/api/v1/tenants/bakery/sources/supplier", None).await;
    assert_eq!(status, 204);
    let (_, report) = op(s, "GET", "/api/v1/scheduler", None).await;
    assert_eq!(report["sources_scheduled"], 0, "{report}");
}
