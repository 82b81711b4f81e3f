//! iCal URL sources end to end: configured in gateway.toml, fetched from a local
//! feed host (allowed by the operator allow-list), cached, served over CalDAV and
//! free/busy, kept through outages, dropped with the source.

mod common;
use calgate_test_mocks as providers;

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
    let resp = post(serde_json::json!({"id": "meta", "kind": "ics", "url": "http://1.1.1.1/cal.ics", "enabled": false}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
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

/// An LF-only feed with folded lines in a fake zone of fixed `offset` hours:
/// a weekly series (a UID folded across lines, one instance moved by a
/// RECURRENCE-ID override at the end of the feed) and one-hour single events
/// `(uid, day, hour)`, all in May 2030.
fn digest_feed(offset: i64, singles: &[(&str, u32, u32)]) -> String {
    let mut f = format!(
        "BEGIN:VCALENDAR\nPRODID:-//test//digests//EN\nVERSION:2.0\n\
BEGIN:VTIMEZONE\nTZID:Test/Zone\nBEGIN:STANDARD\nTZOFFSETFROM:+{offset:02}00\nTZOFFSETTO:+{offset:02}00\n\
DTSTART:19700101T000000\nEND:STANDARD\nEND:VTIMEZONE\n\
BEGIN:VEVENT\nUID:weekly-with-a-long-\n uid-folded@example.test\nDTSTAMP:20300101T000000Z\n\
DTSTART;TZID=Test/Zone:20300506T090000\nDTEND;TZID=Test/Zone:20300506T100000\n\
RRULE:FREQ=WEEKLY;COUNT=4\nSUMMARY:Weekly \n folded\nEND:VEVENT\n"
    );
    for (uid, day, hour) in singles {
        f.push_str(&format!(
            "BEGIN:VEVENT\nUID:{uid}\nDTSTAMP:20300101T000000Z\n\
DTSTART;TZID=Test/Zone:203005{day:02}T{hour:02}0000\n\
DTEND;TZID=Test/Zone:203005{day:02}T{:02}0000\nSUMMARY:Single {uid}\nEND:VEVENT\n",
            hour + 1
        ));
    }
    f.push_str(
        "BEGIN:VEVENT\nUID:weekly-with-a-long-uid-folded@example.test\nDTSTAMP:20300101T000000Z\n\
RECURRENCE-ID;TZID=Test/Zone:20300513T090000\nDTSTART;TZID=Test/Zone:20300513T140000\n\
DTEND;TZID=Test/Zone:20300513T150000\nSUMMARY:Moved\nEND:VEVENT\nEND:VCALENDAR\n",
    );
    f
}

/// The busy blocks [`digest_feed`] should give, in UTC.
fn digest_busy(offset: i64, singles: &[(&str, u32, u32)]) -> Vec<(String, String)> {
    let mut local: Vec<(u32, u32)> = vec![(6, 9), (13, 14), (20, 9), (27, 9)];
    local.extend(singles.iter().map(|(_, day, hour)| (*day, *hour)));
    let mut out: Vec<(String, String)> = local
        .into_iter()
        .map(|(day, hour)| {
            let start = chrono::NaiveDate::from_ymd_opt(2030, 5, day)
                .and_then(|d| d.and_hms_opt(hour, 0, 0))
                .expect("valid date")
                - chrono::TimeDelta::hours(offset);
            let end = start + chrono::TimeDelta::hours(1);
            let f = |t: chrono::NaiveDateTime| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
            (f(start), f(end))
        })
        .collect();
    out.sort();
    out
}

fn counts(log: &Value) -> (u64, u64, u64) {
    let n = |k: &str| log[k].as_u64().unwrap_or(u64::MAX);
    (n("created"), n("updated"), n("deleted"))
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_feed_syncs_skip_unchanged_events_and_apply_every_change() {
    let feed = IcsMock::start().await;
    let first = [("a", 1, 9), ("b", 2, 9), ("c", 3, 9)];
    feed.set_feed("/team.ics", digest_feed(2, &first));
    let s = TestServer::start_with_extra(extra(
        &feed.webcal_url("/team.ics").replace("webcal://", "http://"),
        false,
    ))
    .await;
    let (status, log) = sync(&s, "incremental").await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(counts(&log), (4, 0, 0), "{log}");
    assert_eq!(busy(&s).await, digest_busy(2, &first));

    // One event moved, one removed, one added; the rest (the folded series
    // with its override among them) untouched.
    let second = [("a", 1, 9), ("b", 2, 15), ("d", 4, 9)];
    feed.set_feed("/team.ics", digest_feed(2, &second));
    let (_, log) = sync(&s, "incremental").await;
    assert_eq!(counts(&log), (1, 1, 1), "{log}");
    assert_eq!(busy(&s).await, digest_busy(2, &second));

    // Only the override of the series changes: the series is updated.
    let moved = digest_feed(2, &second)
        .replace("20300513T140000", "20300513T160000")
        .replace("20300513T150000", "20300513T170000");
    feed.set_feed("/team.ics", moved.clone());
    let (_, log) = sync(&s, "incremental").await;
    assert_eq!(counts(&log), (0, 1, 0), "{log}");
    let mut expected: Vec<(String, String)> = digest_busy(2, &second)
        .into_iter()
        .map(|(a, b)| {
            if a == "2030-05-13T12:00:00Z" {
                ("2030-05-13T14:00:00Z".into(), "2030-05-13T15:00:00Z".into())
            } else {
                (a, b)
            }
        })
        .collect();
    expected.sort();
    assert_eq!(busy(&s).await, expected);

    // The same events with CRLF line ends and other folds: nothing to do.
    let crlf = moved
        .replace("SUMMARY:Weekly \n folded", "SUMMARY:Weekly fol\n ded")
        .replace('\n', "\r\n");
    feed.set_feed("/team.ics", crlf);
    let (_, log) = sync(&s, "incremental").await;
    assert_eq!(counts(&log), (0, 0, 0), "{log}");
    assert_eq!(busy(&s).await, expected);

    // The zone changes: every event is rendered again and moves.
    feed.set_feed("/team.ics", digest_feed(3, &second));
    let (_, log) = sync(&s, "incremental").await;
    assert_eq!(counts(&log), (0, 4, 0), "{log}");
    assert_eq!(busy(&s).await, digest_busy(3, &second));

    // A failed run keeps the cache; the next one still applies the changes.
    feed.faults().push(Fault::Status {
        status: 503,
        retry_after: None,
    });
    let third = [("a", 1, 9), ("d", 4, 9), ("e", 5, 9)];
    feed.set_feed("/team.ics", digest_feed(3, &third));
    let (status, _) = sync(&s, "incremental").await;
    assert_eq!(status, 502);
    assert_eq!(busy(&s).await, digest_busy(3, &second));
    let (_, log) = sync(&s, "incremental").await;
    assert_eq!(counts(&log), (1, 0, 1), "{log}");
    assert_eq!(busy(&s).await, digest_busy(3, &third));

    // Across a restart, and a forced full sync finds nothing new.
    let s = s.restart().await;
    let fourth = [("a", 1, 10), ("d", 4, 9), ("e", 5, 9)];
    feed.set_feed("/team.ics", digest_feed(3, &fourth));
    let (_, log) = sync(&s, "incremental").await;
    assert_eq!(counts(&log), (0, 1, 0), "{log}");
    assert_eq!(busy(&s).await, digest_busy(3, &fourth));
    feed.touch("/team.ics");
    let (_, log) = sync(&s, "full").await;
    assert_eq!(counts(&log), (0, 0, 0), "{log}");
    assert_eq!(busy(&s).await, digest_busy(3, &fourth));
}

/// POSTs a source to the salon: (status, problem or source).
async fn post_source(s: &TestServer, body: Value) -> (u16, Value) {
    let resp = s
        .client
        .post(s.url("/api/v1/tenants/salon/sources"))
        .bearer_auth(SALON_KEY)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A feed URL no sync could ever fetch is refused when the source is created
/// (API and configuration file), naming the rule but not what a name resolves
/// to; one that turns out unfetchable later (a redirect inward) is a
/// permanent error, not retried on a schedule.
#[tokio::test(flavor = "multi_thread")]
async fn unfetchable_feed_urls_are_refused_up_front_and_not_retried() {
    let feed = IcsMock::start().await;
    feed.set_feed_fixture("/team.ics", "google_style.ics");
    feed.redirect("/inward.ics", "http://10.1.2.3/admin", 302);
    // No fetch_allow: every special address is refused.
    let s = TestServer::start().await;
    for (url, rule) in [
        ("http://localhost:9/private-SECRET/basic.ics", "loopback"),
        ("http://[::1]:9/x.ics", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("webcal://10.0.0.7/x.ics", "private"),
    ] {
        let (status, problem) = post_source(
            &s,
            serde_json::json!({"id": "bad", "kind": "ics", "url": url}),
        )
        .await;
        assert_eq!(status, 422, "{url}: {problem}");
        assert_eq!(problem["invalid_params"][0]["name"], "url", "{problem}");
        let reason = problem["invalid_params"][0]["reason"]
            .as_str()
            .unwrap_or_default();
        assert!(
            reason.contains(rule) && reason.contains("fetch_allow"),
            "{url}: {reason}"
        );
        assert!(!reason.contains("SECRET"), "{reason}");
    }
    // The rule, not the resolution.
    let (_, problem) = post_source(
        &s,
        serde_json::json!({"id": "bad", "kind": "ics", "url": "http://localhost:9/x.ics"}),
    )
    .await;
    let reason = problem["invalid_params"][0]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("localhost resolves to a loopback address"),
        "{reason}"
    );
    assert!(
        !reason.contains("127.0.0.1") && !reason.contains("::1"),
        "{reason}"
    );
    let (status, list) = api(&s, reqwest::Method::GET, "/sources").await;
    assert_eq!(
        (status, list["sources"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{list}"
    );

    // The configuration file: a clear error at start.
    let text = common::config_text_with(
        s.dir.path(),
        "127.0.0.1:0",
        None,
        &Extra {
            server: String::new(),
            salon: "[[tenant.source]]\nid = \"local\"\nkind = \"ics\"\nurl = \"http://127.0.0.1:9/x.ics\"\n".into(),
        },
    );
    let err = calgate::config::Config::parse(&text, std::path::Path::new("gw.toml"))
        .expect_err("an unfetchable source is a config error")
        .to_string();
    assert!(
        err.contains("tenant[0].source[0].url")
            && err.contains("loopback")
            && err.contains("fetch_allow"),
        "{err}"
    );

    // Allowed at creation (loopback is on the list), refused at the redirect
    // hop when synced: a permanent error, no retry scheduled.
    let s = TestServer::start_with_extra(Extra {
        server: "fetch_allow = [\"127.0.0.1/32\"]".into(),
        salon: String::new(),
    })
    .await;
    let (status, body) = post_source(
        &s,
        serde_json::json!({"id": "inward", "kind": "ics", "url": feed.url("/inward.ics"), "enabled": true}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // The scheduler runs it at once, and then leaves it alone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, one) = api(&s, reqwest::Method::GET, "/sources/inward").await;
        if one["status"]["permanent_error"] == true {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never synced: {one}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Asked for, it runs (once the scheduler's run has let go) and says why it failed.
    let (status, problem) = loop {
        let (status, problem) = api(&s, reqwest::Method::POST, "/sources/inward/sync").await;
        let running = problem["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("sync-running"));
        if !running || std::time::Instant::now() > deadline {
            break (status, problem);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(status, 409, "{problem}");
    assert_eq!(
        problem["type"].as_str().map(|t| t.ends_with("url-refused")),
        Some(true),
        "{problem}"
    );
    let (_, one) = api(&s, reqwest::Method::GET, "/sources/inward").await;
    assert_eq!(one["status"]["permanent_error"], true, "{one}");
    assert!(one["status"]["next_run"].is_null(), "not retried: {one}");
    assert!(
        one["status"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("private")),
        "{one}"
    );
}

/// `POST …/sync` takes the mode from the query string or a JSON body.
#[tokio::test(flavor = "multi_thread")]
async fn sync_mode_from_the_query_or_a_json_body() {
    let feed = IcsMock::start().await;
    feed.set_feed_fixture("/team.ics", "google_style.ics");
    let s = TestServer::start_with_extra(extra(&feed.url("/team.ics"), false)).await;
    let send = |query: &str, body: Option<&str>| {
        let mut req = s
            .client
            .post(s.url(&format!(
                "/api/v1/tenants/salon/sources/{SOURCE}/sync{query}"
            )))
            .bearer_auth(SALON_KEY);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        async move {
            let resp = req.send().await.expect("request sent");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, log) = send("", None).await;
    assert_eq!(
        (status, log["mode"].as_str()),
        (200, Some("incremental")),
        "{log}"
    );
    let (status, log) = send("", Some(r#"{"mode":"full"}"#)).await;
    assert_eq!((status, log["mode"].as_str()), (200, Some("full")), "{log}");
    let (status, log) = send("?mode=full", Some(r#"{"mode": "full"}"#)).await;
    assert_eq!((status, log["mode"].as_str()), (200, Some("full")), "{log}");
    let (status, log) = send("?mode=full", None).await;
    assert_eq!((status, log["mode"].as_str()), (200, Some("full")), "{log}");

    let (status, problem) = send("?mode=incremental", Some(r#"{"mode":"full"}"#)).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["invalid_params"][0]["name"], "mode", "{problem}");
    let (status, problem) = send("", Some(r#"{"mode":"fast"}"#)).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem["invalid_params"][0]["name"], "body.mode",
        "{problem}"
    );
    let (status, problem) = send("", Some(r#"{"mode":"full""#)).await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not valid JSON")),
        "{problem}"
    );
    let (status, problem) = send("", Some(r#"{"mood":"full"}"#)).await;
    assert_eq!(status, 422, "{problem}");
    assert!(problem.to_string().contains("mood"), "{problem}");
}
