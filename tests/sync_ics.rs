//! iCal URL sources end to end: configured in gateway.toml, fetched from a local
//! feed host (allowed by the operator allow-list), cached, served over CalDAV and
//! free/busy, kept through outages, dropped with the source.

mod common;
#[path = "common/providers/mod.rs"]
mod providers;

use common::{Extra, SALON_KEY, TestServer};
use providers::Fault;
use providers::ics::IcsMock;
use serde_json::Value;

const SOURCE: &str = "team-feed";
const MAY_2030: &str = "start=2030-05-01T00:00:00Z&end=2030-06-01T00:00:00Z";

fn extra(url: &str, enabled: bool) -> Extra {
    Extra {
        server: "fetch_allow = [\"127.0.0.1/32\"]".into(),
        salon: format!(
            "[[tenant.source]]\nid = \"{SOURCE}\"\nname = \"Team feed\"\nkind = \"ics\"\nurl = \"{url}\"\ninterval_minutes = 15\nenabled = {enabled}\n"
        ),
    }
}

async fn api(s: &TestServer, method: reqwest::Method, path: &str) -> (u16, Value) {
    let resp = s
        .client
        .request(method, s.url(&format!("/api/v1/tenants/salon{path}")))
        .bearer_auth(SALON_KEY)
        .send()
        .await
        .expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn sync(s: &TestServer, mode: &str) -> (u16, Value) {
    api(
        s,
        reqwest::Method::POST,
        &format!("/sources/{SOURCE}/sync?mode={mode}"),
    )
    .await
}

/// The busy blocks of the source in May 2030, as (start, end) text.
async fn busy(s: &TestServer) -> Vec<(String, String)> {
    let (status, body) = api(
        s,
        reqwest::Method::GET,
        &format!("/freebusy?{MAY_2030}&sources={SOURCE}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["busy"]
        .as_array()
        .expect("busy list")
        .iter()
        .map(|b| {
            (
                b["start"].as_str().unwrap_or_default().to_owned(),
                b["end"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn expected(fixture: &str) -> Vec<(String, String)> {
    let path = format!(
        "{}/fixtures/feeds/{fixture}.expected.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let list: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture"))
        .expect("expected json");
    let mut out: Vec<(String, String)> = list
        .iter()
        .map(|v| {
            (
                v["start"].as_str().unwrap_or_default().to_owned(),
                v["end"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn feed_import_cache_and_changes() {
    let feed = IcsMock::start().await;
    feed.set_feed_fixture("/team.ics", "google_style.ics");
    let s = TestServer::start_with_extra(extra(
        &feed.webcal_url("/team.ics").replace("webcal://", "http://"),
        false,
    ))
    .await;

    // Declared in the file: listed, not yet synced.
    let (status, list) = api(&s, reqwest::Method::GET, "/sources").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["sources"][0]["id"], SOURCE);
    assert_eq!(list["sources"][0]["kind"], "ics");
    assert!(list["sources"][0]["status"]["last_success"].is_null());
    // The feed URL is a credential: only its host is shown.
    let shown = list["sources"][0]["target"].as_str().unwrap_or_default();
    assert!(
        shown.starts_with("http://127.0.0.1:") && shown.ends_with("/…") && !shown.contains("team"),
        "{shown}"
    );

    let (status, log) = sync(&s, "incremental").await;
    assert_eq!(status, 200, "{log}");
    assert!(log["created"].as_u64().unwrap_or(0) >= 4, "{log}");
    assert_eq!(busy(&s).await, expected("google_style"));

    // Unchanged feed: a conditional GET answered 304, nothing parsed or written.
    let (status, log) = sync(&s, "incremental").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            log["created"].as_u64(),
            log["updated"].as_u64(),
            log["deleted"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    assert_eq!(feed.conditional_hits("/team.ics"), 1);

    // The feed changes to another calendar: old events free their slots.
    feed.set_feed_fixture("/team.ics", "outlook_style.ics");
    let (_, log) = sync(&s, "incremental").await;
    assert!(log["deleted"].as_u64().unwrap_or(0) >= 4, "{log}");
    assert_eq!(busy(&s).await, expected("outlook_style"));

    // An outage keeps the last good cache and is visible in status and log.
    feed.faults().push(Fault::Status {
        status: 503,
        retry_after: Some("120".into()),
    });
    let (status, problem) = sync(&s, "full").await;
    assert_eq!(status, 502, "{problem}");
    assert_eq!(busy(&s).await, expected("outlook_style"));
    let (_, one) = api(&s, reqwest::Method::GET, &format!("/sources/{SOURCE}")).await;
    assert_eq!(one["status"]["consecutive_failures"], 1, "{one}");
    assert!(
        one["status"]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("503"),
        "{one}"
    );
    let (_, logs) = api(&s, reqwest::Method::GET, &format!("/sources/{SOURCE}/logs")).await;
    let logs = logs["logs"].as_array().expect("logs").clone();
    assert_eq!(logs.len(), 4);
    assert!(logs[0]["error"].is_string() && logs[1]["error"].is_null());

    // An HTML page served with 200 is not a calendar: refused, cache kept.
    feed.set_feed_fixture("/team.ics", "html_login_page.html");
    feed.set_content_type("/team.ics", "text/html");
    let (status, problem) = sync(&s, "full").await;
    assert_eq!(status, 502, "{problem}");
    assert_eq!(busy(&s).await, expected("outlook_style"));

    // Read-only over CalDAV.
    let dav = |method: &str, path: &str| {
        s.client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                s.url(path),
            )
            .basic_auth("ana", Some("secret"))
    };
    let listing = dav("PROPFIND", &format!("/dav/calendars/salon/{SOURCE}/"))
        .header("depth", "1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listing.matches("<d:response>").count() >= 5, "{listing}");
    let put = dav("PUT", &format!("/dav/calendars/salon/{SOURCE}/mine.ics"))
        .header("content-type", "text/calendar")
        .body("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:m\r\nDTSTART:20300501T100000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 403);
    assert!(put.text().await.unwrap().contains("need-privileges"));

    // Survives a restart: the cursor is kept (next sync is conditional).
    feed.set_feed_fixture("/team.ics", "outlook_style.ics");
    feed.set_content_type("/team.ics", "text/calendar");
    let s = s.restart().await;
    let (_, log) = sync(&s, "incremental").await;
    assert_eq!(log["created"], 0, "{log}");
    assert_eq!(busy(&s).await, expected("outlook_style"));

    // Removing the source drops its cached events.
    let (status, _) = api(&s, reqwest::Method::DELETE, &format!("/sources/{SOURCE}")).await;
    assert_eq!(status, 204);
    let (status, _) = api(&s, reqwest::Method::GET, &format!("/sources/{SOURCE}")).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduler_syncs_and_api_manages_sources() {
    let feed = IcsMock::start().await;
    feed.set_feed_fixture("/a.ics", "quirks_lf_only.ics");
    let s = TestServer::start_with_extra(extra(&feed.url("/a.ics"), true)).await;
    // The scheduler runs a never-synced source at once; wait for its first run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, one) = api(&s, reqwest::Method::GET, &format!("/sources/{SOURCE}")).await;
        if one["status"]["last_success"].is_string() {
            assert!(one["status"]["next_run"].is_string(), "{one}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "scheduler never ran: {one}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(busy(&s).await, expected("quirks_lf_only"));

    // Created over the API; bad input is named.
    let post = |body: Value| {
        s.client
            .post(s.url("/api/v1/tenants/salon/sources"))
            .bearer_auth(SALON_KEY)
            .json(&body)
            .send()
    };
    let resp = post(serde_json::json!({"id": "x", "kind": "ics"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert!(resp.text().await.unwrap().contains("url"));
    let resp = post(serde_json::json!({"id": "x", "kind": "carrier-pigeon", "url": "http://a/"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let resp = post(serde_json::json!({"id": "meta", "kind": "ics", "url": "http://169.254.169.254/latest/", "enabled": false}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // A private address the operator did not allow is refused before connecting.
    let (status, problem) = api(&s, reqwest::Method::POST, "/sources/meta/sync").await;
    assert_eq!(status, 502, "{problem}");
    let resp = post(serde_json::json!({"id": "meta", "kind": "ics", "url": "http://a/"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
}

/// Answers 200 to every webhook call and hands each body to the test.
async fn webhook_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(hyper::body::Bytes::new()),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, rx)
}

async fn open_conflicts(s: &TestServer) -> Vec<Value> {
    let (status, body) = api(s, reqwest::Method::GET, "/conflicts?status=open").await;
    assert_eq!(status, 200, "{body}");
    body["conflicts"].as_array().expect("conflicts").clone()
}

/// A large feed is imported in batches (one store transaction and one conflict
/// check per batch): imported events that land on bookings are still recorded
/// and announced, moving one away still resolves its conflict and frees its old
/// slot, and events far from any booking raise nothing.
#[tokio::test(flavor = "multi_thread")]
async fn batched_import_raises_and_resolves_conflicts() {
    // One event an hour from 2030-05-01T00:00Z: several import batches.
    const EVENTS: usize = 600;
    let (hook, mut hooks) = webhook_receiver().await;
    let feed = IcsMock::start().await;
    let body = String::from_utf8(providers::ics::generated_feed(EVENTS)).unwrap();
    feed.set_feed("/team.ics", body.clone());
    let s =
        TestServer::start_with_webhook_and_extra(&hook, extra(&feed.url("/team.ics"), false)).await;
    // Overlaps event 34 (2030-05-02 10:00-11:00 UTC), and event 500 (2030-05-21
    // 20:00-21:00 UTC), which lands in another batch.
    let mut bookings = Vec::new();
    for (start, end) in [
        ("2030-05-02T10:15:00Z", "2030-05-02T10:45:00Z"),
        ("2030-05-21T20:30:00Z", "2030-05-21T20:50:00Z"),
    ] {
        let (status, b, _) = s
            .create(&serde_json::json!({"start": start, "end": end, "title": "Cut"}))
            .await;
        assert_eq!(status, 201, "{b}");
        bookings.push(b["id"].as_str().unwrap().to_owned());
    }

    let (status, log) = sync(&s, "full").await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(log["created"], EVENTS, "{log}");
    let open = open_conflicts(&s).await;
    assert_eq!(open.len(), 2, "{open:?}");
    let mut booked: Vec<&str> = open
        .iter()
        .map(|c| c["booking_id"].as_str().unwrap_or_default())
        .collect();
    booked.sort();
    let mut expected_bookings: Vec<&str> = bookings.iter().map(String::as_str).collect();
    expected_bookings.sort();
    assert_eq!(booked, expected_bookings, "{open:?}");
    assert!(open.iter().all(|c| c["source"] == SOURCE), "{open:?}");
    let spans: Vec<(&str, &str)> = open
        .iter()
        .map(|c| (c["start"].as_str().unwrap(), c["end"].as_str().unwrap()))
        .collect();
    assert!(
        spans.contains(&("2030-05-02T10:15:00Z", "2030-05-02T10:45:00Z"))
            && spans.contains(&("2030-05-21T20:30:00Z", "2030-05-21T20:50:00Z")),
        "{spans:?}"
    );
    // Both announced.
    for _ in 0..2 {
        let call = tokio::time::timeout(std::time::Duration::from_secs(20), hooks.recv())
            .await
            .expect("webhook called")
            .expect("receiver open");
        assert!(call.contains("booking.conflict"), "{call}");
    }

    // Event 34 moves to July: its conflict resolves, its old hour is free.
    let moved = body.replace(
        "DTSTART:20300502T100000Z\r\nDTEND:20300502T110000Z",
        "DTSTART:20300701T100000Z\r\nDTEND:20300701T110000Z",
    );
    assert_ne!(moved, body);
    feed.set_feed("/team.ics", moved);
    let (status, log) = sync(&s, "incremental").await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(
        (&log["created"], &log["updated"], &log["deleted"]),
        (&Value::from(0), &Value::from(1), &Value::from(0)),
        "{log}"
    );
    let open = open_conflicts(&s).await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["booking_id"], bookings[1].as_str());
    let (status, fb) = api(
        &s,
        reqwest::Method::GET,
        &format!("/freebusy?start=2030-05-02T00:00:00Z&end=2030-05-03T00:00:00Z&sources={SOURCE}"),
    )
    .await;
    assert_eq!(status, 200, "{fb}");
    let blocks: Vec<(&str, &str)> = fb["busy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["start"].as_str().unwrap(), b["end"].as_str().unwrap()))
        .collect();
    assert_eq!(
        blocks,
        [
            ("2030-05-02T00:00:00Z", "2030-05-02T10:00:00Z"),
            ("2030-05-02T11:00:00Z", "2030-05-03T00:00:00Z")
        ],
        "{fb}"
    );
}
