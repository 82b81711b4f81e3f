//! .ics feeds through the router in process (HEAD over TCP), validated by an
//! independent parser (python icalendar, which reads the fetched feed from a file).

mod common;

use common::{
    BUSY_FEED, FULL_FEED, GARAGE_FEED, GARAGE_KEY, SALON_KEY, TestGateway, booking, run_python,
    split,
};
use serde_json::{Value, json};

/// Writes the feed and the expectations to files and runs the Python validator.
fn validate(feed: &[u8], expected: &Value) {
    let dir = tempfile::tempdir().unwrap();
    let feed_path = dir.path().join("feed.ics");
    let expected_path = dir.path().join("expected.json");
    std::fs::write(&feed_path, feed).unwrap();
    std::fs::write(&expected_path, expected.to_string()).unwrap();
    let out = run_python(
        "validate_feed.py",
        &[feed_path.to_str().unwrap(), expected_path.to_str().unwrap()],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "validator rejected the feed:\n{stdout}\n{stderr}\n--- feed ---\n{}",
        String::from_utf8_lossy(feed)
    );
}

/// Bookings with hostile text, several zones, all-day, DST edge and a cancellation.
async fn hostile_bookings(s: &TestGateway) -> Vec<Value> {
    let notes = format!(
        "Line one, with comma; and semicolon\nLine two \\ backslash\r\nEmoji 🎉💇‍♀️ and ümlauts {}",
        "é".repeat(440)
    );
    let bodies = vec![
        json!({
            "start": "2026-12-01T10:00:00+01:00", "end": "2026-12-01T10:45:00+01:00",
            "title": "Cut, wash; blow-dry \\ \"deluxe\" 💈",
            "service": "cut;wash",
            "customer": {"name": "Zoë O'Brien, Jr.", "email": "zoe@example.com", "phone": "+33 6 12 34 56 78"},
            "location": "Chair 3, upstairs; left",
            "notes": notes,
        }),
        json!({
            "start": "2026-07-14T15:00:00-04:00", "end": "2026-07-14T16:00:00-04:00",
            "time_zone": "America/New_York", "title": "Remote consult"
        }),
        json!({"all_day": true, "start": "2026-12-24", "end": "2026-12-26", "title": "Closed for Christmas"}),
        // 02:30 Paris on 2026-10-25 happens twice; this is the second one (01:30 UTC).
        json!({"start": "2026-10-25T01:30:00Z", "end": "2026-10-25T02:15:00Z", "title": "Night shift"}),
        json!({"start": "2026-12-02T10:00:00+01:00", "end": "2026-12-02T11:00:00+01:00", "title": "Cancelled one", "status": "cancelled"}),
        json!({"start": "2026-12-03T10:00:00+01:00", "end": "2026-12-03T11:00:00+01:00", "title": "Maybe", "status": "tentative"}),
    ];
    let mut created = Vec::new();
    for body in bodies {
        let (status, b, _) = s.create(&body).await;
        assert_eq!(status, 201, "{b}");
        created.push(b);
    }
    created
}

#[tokio::test(flavor = "multi_thread")]
async fn full_feed_is_valid_rfc5545_for_an_independent_parser() {
    let s = TestGateway::start().await;
    let b = hostile_bookings(&s).await;
    let resp = s.feed("salon", FULL_FEED).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/calendar; charset=utf-8"
    );
    let feed = resp.bytes().await.unwrap();
    let text = String::from_utf8(feed.to_vec()).unwrap();
    assert!(text.contains("BEGIN:VTIMEZONE\r\nTZID:America/New_York"));
    assert!(text.contains("REFRESH-INTERVAL;VALUE=DURATION:PT30M"));
    // The repeated hour can only be named in UTC.
    assert!(text.contains("DTSTART:20261025T013000Z"), "{text}");

    let description = format!(
        "Service: cut;wash\nCustomer: Zoë O'Brien, Jr.\nEmail: zoe@example.com\nPhone: +33 6 12 34 56 78\n\n{}",
        b[0]["notes"].as_str().unwrap().replace("\r\n", "\n")
    );
    let expected = json!({
        "calendar": {
            "X-WR-CALNAME": "Salon Ümlaut, Paris; \"Chez Ana\"",
            "X-WR-TIMEZONE": "Europe/Paris",
            "VERSION": "2.0",
            "CALSCALE": "GREGORIAN",
        },
        "events": [
            {
                "uid": b[0]["uid"], "summary": "Cut, wash; blow-dry \\ \"deluxe\" 💈",
                "location": "Chair 3, upstairs; left", "description": description,
                "status": "CONFIRMED",
                "start_utc": "2026-12-01T09:00:00Z", "end_utc": "2026-12-01T09:45:00Z",
            },
            {
                "uid": b[1]["uid"], "summary": "Remote consult",
                "start_utc": "2026-07-14T19:00:00Z", "end_utc": "2026-07-14T20:00:00Z",
                "absent": ["LOCATION", "DESCRIPTION"],
            },
            {"uid": b[2]["uid"], "all_day": true, "start": "2026-12-24", "end": "2026-12-26",
             "summary": "Closed for Christmas"},
            {"uid": b[3]["uid"], "start_utc": "2026-10-25T01:30:00Z", "end_utc": "2026-10-25T02:15:00Z"},
            {"uid": b[5]["uid"], "status": "TENTATIVE",
             "start_utc": "2026-12-03T09:00:00Z", "end_utc": "2026-12-03T10:00:00Z"},
        ],
    });
    validate(&feed, &expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_feed_reveals_nothing_but_time() {
    let s = TestGateway::start().await;
    let b = hostile_bookings(&s).await;
    let feed = s.feed("salon", BUSY_FEED).await.bytes().await.unwrap();
    let text = String::from_utf8(feed.to_vec()).unwrap();
    for secret in [
        "Zoë",
        "zoe@example.com",
        "Chair 3",
        "Cut",
        "Emoji",
        "Remote consult",
    ] {
        assert!(!text.contains(secret), "busy feed leaks {secret}");
    }
    for booking in &b {
        assert!(
            !text.contains(booking["id"].as_str().unwrap()),
            "busy feed leaks booking ids"
        );
    }
    assert_eq!(
        text.matches("BEGIN:VEVENT").count(),
        5,
        "cancelled bookings are not busy"
    );
    assert_eq!(text.matches("SUMMARY:Busy").count(), 5);
    // The opaque UIDs are stable across renders.
    let again = s.feed("salon", BUSY_FEED).await.bytes().await.unwrap();
    assert_eq!(feed, again);
    let uids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("UID:"))
        .map(str::trim_end)
        .collect();
    // Times are covered by the full-feed test; here the shape and the secrecy.
    let events: Vec<Value> = uids
        .iter()
        .map(|u| json!({"uid": u, "summary": "Busy", "absent": ["LOCATION", "DESCRIPTION"], "skip_times": true}))
        .collect();
    validate(&feed, &json!({ "events": events }));
}

/// In process: `http::handle` drops a HEAD answer's body as hyper does on a
/// connection (the feed handler renders it for GET and HEAD alike).
#[tokio::test(flavor = "multi_thread")]
async fn conditional_get_and_head() {
    let s = TestGateway::start().await;
    s.create(&booking("2026-12-01", "10:00", "11:00", "First"))
        .await;
    let resp = s.feed("salon", FULL_FEED).await;
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let last_modified = resp.headers()["last-modified"].to_str().unwrap().to_owned();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "strong ETag: {etag}"
    );
    let body = resp.bytes().await.unwrap();

    let url = s.url(&format!("/feeds/salon/{FULL_FEED}.ics"));
    let resp = s
        .client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers()["etag"], etag.as_str());
    assert!(resp.bytes().await.unwrap().is_empty());

    let resp = s
        .client
        .get(&url)
        .header("if-modified-since", &last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);

    let resp = s.client.head(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["etag"], etag.as_str());
    assert_eq!(
        resp.headers()["content-length"],
        body.len().to_string().as_str()
    );
    assert!(resp.bytes().await.unwrap().is_empty());

    // A change moves the ETag; the old one no longer matches.
    s.create(&booking("2026-12-02", "10:00", "11:00", "Second"))
        .await;
    let resp = s
        .client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let new_etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    assert!(resp.text().await.unwrap().contains("SUMMARY:Second"));

    // So does a deletion.
    let (_, listed, _) = split(
        s.client
            .get(format!(
                "{}?start=2026-12-02T00:00:00Z&end=2026-12-03T00:00:00Z",
                s.bookings_url("salon")
            ))
            .bearer_auth(SALON_KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = listed["bookings"][0]["id"].as_str().unwrap();
    s.client
        .delete(s.url(&format!("/api/v1/tenants/salon/bookings/{id}")))
        .bearer_auth(SALON_KEY)
        .send()
        .await
        .unwrap();
    let resp = s
        .client
        .get(&url)
        .header("if-none-match", &new_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.text().await.unwrap().contains("SUMMARY:Second"));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_tokens_reveal_nothing() {
    let s = TestGateway::start().await;
    let not_found = |resp: common::InProcessResponse| async move {
        assert_eq!(resp.status(), 404);
        resp.text().await.unwrap()
    };
    let wrong_token = not_found(s.feed("salon", "guess").await).await;
    let unknown_tenant = not_found(s.feed("nobody", "guess").await).await;
    let other_tenants_token = not_found(s.feed("salon", GARAGE_FEED).await).await;
    assert_eq!(wrong_token, unknown_tenant);
    assert_eq!(wrong_token, other_tenants_token);
    let no_suffix = s
        .client
        .get(s.url(&format!("/feeds/salon/{FULL_FEED}")))
        .send()
        .await
        .unwrap();
    assert_eq!(no_suffix.status(), 404);
    let post = s
        .client
        .post(s.url(&format!("/feeds/salon/{FULL_FEED}.ics")))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
}

#[tokio::test(flavor = "multi_thread")]
async fn feeds_are_tenant_private() {
    let s = TestGateway::start().await;
    s.create(&booking("2026-12-01", "10:00", "11:00", "Salon only"))
        .await;
    let resp = s
        .client
        .post(s.bookings_url("garage"))
        .bearer_auth(GARAGE_KEY)
        .json(&json!({"start": "2026-12-01T10:00:00-05:00", "end": "2026-12-01T11:00:00-05:00", "title": "Oil change"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let garage = s.feed("garage", GARAGE_FEED).await.text().await.unwrap();
    assert!(garage.contains("SUMMARY:Oil change"));
    assert!(!garage.contains("Salon only"));
    assert!(garage.contains("X-WR-TIMEZONE:America/New_York"));
}
