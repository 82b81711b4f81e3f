//! Feeds per resource (issue 15, point 3): a feed with `resource` publishes
//! the bookings taking that resource (tenant-wide ones too) and, of the
//! sources it includes, only the resource's own and the tenant-wide ones; a
//! provisioned feed takes `resource` as well; an unknown resource is refused
//! naming the field. In process, through `http::handle`.

mod common;

use std::path::Path;

use common::{
    Extra, FULL_FEED, TestGateway, add_salon_resource_source, create_salon_legacy_booking,
    paris_event, problem_fields, split,
};
use serde_json::{Value, json};

const ANNA_FEED: &str = "feed-anna-secret-0123";
const MONDAY: &str = "2027-03-01";
const OPERATOR_KEY: &str = "operator-key-feeds-0123";

/// Anna and Ben, and Anna's feed with every source.
fn salon_with_anna_feed() -> Extra {
    let hash = |s: &str| calgate::auth::hash_secret(s).expect("hashing works");
    Extra {
        salon: format!(
            "[[tenant.feed]]\nname = \"anna\"\ntoken_hash = \"{}\"\nresource = \"anna\"\ninclude_sources = \"all\"\n\
             [[tenant.resource]]\nid = \"anna\"\nname = \"Anna\"\nkind = \"staff\"\n\
             [[tenant.resource]]\nid = \"ben\"\nname = \"Ben\"\nkind = \"staff\"\n",
            hash(ANNA_FEED)
        ),
        ..Extra::default()
    }
}

/// A salon booking taking `resources`, 201 expected; its body.
async fn book(s: &TestGateway, from: &str, to: &str, title: &str, resources: &[&str]) -> Value {
    let mut body = common::booking(MONDAY, from, to, title);
    body["resources"] = json!(resources);
    let (status, body, _) = s.create(&body).await;
    assert_eq!(status, 201, "{body}");
    body
}

/// GET `path` without credentials: (status, ETag, body).
async fn fetch(s: &TestGateway, path: &str) -> (u16, Option<String>, String) {
    let resp = s.client.get(s.url(path)).send().await.expect("sent");
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, etag, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resource_feed_shows_its_bookings_and_its_calendars_only() {
    let s = TestGateway::start_with_extra(salon_with_anna_feed()).await;
    book(&s, "10:00", "11:00", "Anna cut", &["anna"]).await;
    book(&s, "10:00", "11:00", "Ben cut", &["ben"]).await;
    create_salon_legacy_booking(
        s.app(),
        &format!("{MONDAY}T12:00:00+01:00"),
        &format!("{MONDAY}T12:30:00+01:00"),
        "Old cut",
    )
    .await;
    // Anna's calendar, Ben's, and the shop's (the whole salon's).
    for (source, resource, hour) in [
        ("anna-cal", Some("anna"), "14"),
        ("ben-cal", Some("ben"), "15"),
        ("shop", None, "16"),
    ] {
        add_salon_resource_source(s.app(), source, resource);
        let event = paris_event(
            &format!("{source}-1"),
            &format!("20270301T{hour}0000"),
            &format!("20270301T{hour}3000"),
        );
        s.put_ics(source, "e.ics", &event).await;
    }

    let (status, anna_etag, anna) = fetch(&s, &format!("/feeds/salon/{ANNA_FEED}.ics")).await;
    assert_eq!(status, 200, "{anna}");
    assert!(anna.contains("SUMMARY:Anna cut"), "{anna}");
    assert!(
        anna.contains("SUMMARY:Old cut"),
        "tenant-wide blocks Anna: {anna}"
    );
    assert!(!anna.contains("Ben cut"), "{anna}");
    assert!(
        anna.contains("DTSTART:20270301T130000Z"),
        "her calendar: {anna}"
    );
    assert!(
        anna.contains("DTSTART:20270301T150000Z"),
        "the shop's: {anna}"
    );
    assert!(
        !anna.contains("DTSTART:20270301T140000Z"),
        "not Ben's: {anna}"
    );
    assert_eq!(anna.matches("UID:busy-").count(), 2, "{anna}");
    assert!(
        anna.contains("X-WR-CALNAME:") && anna.contains(" – Anna\r\n"),
        "{anna}"
    );

    // The tenant's feed is unchanged: every booking, no sources.
    let (status, full_etag, full) = fetch(&s, &format!("/feeds/salon/{FULL_FEED}.ics")).await;
    assert_eq!(status, 200);
    for title in ["Anna cut", "Ben cut", "Old cut"] {
        assert!(full.contains(&format!("SUMMARY:{title}")), "{full}");
    }
    assert!(!full.contains("UID:busy-"), "{full}");
    assert!(!full.contains("– Anna"), "{full}");
    assert_ne!(anna_etag, full_etag);

    // A conditional GET of Anna's feed is answered from its own validators.
    let resp = s
        .client
        .get(s.url(&format!("/feeds/salon/{ANNA_FEED}.ics")))
        .header("if-none-match", anna_etag.as_deref().unwrap_or_default())
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 304);

    // Moving Ben's calendar to Anna publishes it in her feed.
    add_salon_resource_source(s.app(), "ben-cal", Some("anna"));
    let (status, etag, anna) = fetch(&s, &format!("/feeds/salon/{ANNA_FEED}.ics")).await;
    assert_eq!(status, 200);
    assert_ne!(etag, anna_etag, "the published sources changed");
    assert!(anna.contains("DTSTART:20270301T140000Z"), "{anna}");
}

#[test]
fn an_unknown_resource_of_a_feed_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut extra = salon_with_anna_feed();
    extra.salon = extra
        .salon
        .replace("resource = \"anna\"", "resource = \"zoe\"");
    let text = common::config_text_with(dir.path(), "127.0.0.1:0", None, &extra);
    let err = calgate::config::Config::parse(&text, Path::new("test.toml"))
        .expect_err("zoe is no resource")
        .to_string();
    assert!(err.contains("tenant[0].feed[2].resource"), "{err}");
    assert!(
        err.contains("\"zoe\"") && err.contains("\"anna\", \"ben\""),
        "{err}"
    );
}

/// One call with the operator key: (status, JSON).
async fn op(s: &TestGateway, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = s
        .client
        .request(method, s.url(path))
        .bearer_auth(OPERATOR_KEY);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let (status, body, _) = split(req.send().await.expect("sent")).await;
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provisioned_feed_takes_a_resource() {
    let hash = calgate::auth::hash_secret(OPERATOR_KEY).expect("hashing works");
    let s = TestGateway::start_with_extra(Extra {
        server: format!("\n[admin]\nkey_hash = \"{hash}\"\n"),
        ..Extra::default()
    })
    .await;
    let (status, body) = op(
        &s,
        "PUT",
        "/api/v1/tenants/bakery",
        Some(json!({"name": "Bakery", "timezone": "Europe/Berlin"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = op(&s, "PUT", "/api/v1/tenants/bakery/api-keys/front", None).await;
    assert_eq!(status, 201, "{body}");
    let key = body["key"].as_str().expect("the key, once").to_owned();

    // The bakery declares no resources: only its implicit one exists.
    let (status, body) = op(
        &s,
        "PUT",
        "/api/v1/tenants/bakery/feeds/oven",
        Some(json!({"resource": "anna"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(problem_fields(&body), ["resource"], "{body}");
    assert!(body.to_string().contains("\\\"default\\\""), "{body}");

    let (status, body) = op(
        &s,
        "PUT",
        "/api/v1/tenants/bakery/feeds/oven",
        Some(json!({"resource": "default", "privacy": "busy"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["feed"]["resource"], "default", "{body}");
    let token = body["token"].as_str().expect("the token, once").to_owned();

    let resp = s
        .client
        .post(s.url("/api/v1/tenants/bakery/bookings"))
        .bearer_auth(&key)
        .json(&json!({
            "start": "2027-03-01T08:00:00+01:00",
            "end": "2027-03-01T09:00:00+01:00",
            "title": "Bread tasting",
        }))
        .send()
        .await
        .expect("sent");
    let (status, body, _) = split(resp).await;
    assert_eq!(status, 201, "{body}");
    let (status, _, feed) = fetch(&s, &format!("/feeds/bakery/{token}.ics")).await;
    assert_eq!(status, 200, "{feed}");
    assert!(feed.contains("SUMMARY:Busy"), "the booking, opaque: {feed}");

    // The tenant shows the feed's resource; a PUT without it makes it the tenant's.
    let (status, body) = op(&s, "GET", "/api/v1/tenants/bakery", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.to_string().contains("\"resource\":\"default\""),
        "{body}"
    );
    let (status, body) = op(
        &s,
        "PUT",
        "/api/v1/tenants/bakery/feeds/oven",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["feed"]["resource"], Value::Null, "{body}");

    // A provisioned resource's feed is named after it, and follows a rename
    // (the document is not served from the cache under the old name).
    let (status, body) = op(
        &s,
        "PUT",
        "/api/v1/tenants/bakery/resources/oven",
        Some(json!({"name": "Stone oven"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = op(
        &s,
        "PUT",
        "/api/v1/tenants/bakery/feeds/oven-feed",
        Some(json!({"resource": "oven"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let url = format!(
        "/feeds/bakery/{}.ics",
        body["token"].as_str().expect("token")
    );
    let (status, _, feed) = fetch(&s, &url).await;
    assert_eq!(status, 200, "{feed}");
    assert!(feed.contains("X-WR-CALNAME:Bakery – Stone oven"), "{feed}");
    let (status, body) = op(
        &s,
        "PUT",
        "/api/v1/tenants/bakery/resources/oven",
        Some(json!({"name": "Wood oven"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, _, feed) = fetch(&s, &url).await;
    assert!(feed.contains("X-WR-CALNAME:Bakery – Wood oven"), "{feed}");
}
