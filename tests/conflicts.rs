//! Conflicts found after the fact: a calendar event that lands on a booking is
//! recorded (once per booking and object), listed a page at a time, acknowledged,
//! resolved when the overlap goes, and POSTed to the tenant's webhook with an HMAC
//! signature (retried after a failure, many conflicts per call). Refusals of
//! bookings over busy time list a bounded number of entries.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{
    Extra, SALON_KEY, TestGateway, WEBHOOK_SECRET, add_salon_resource_source, booking,
    paris_event as event,
};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A webhook receiver: answers 500 to the first request and 200 after that, and
/// hands every request's signature header and body to the test.
async fn receiver() -> (String, mpsc::UnboundedReceiver<(String, String)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/calgate", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (tx, calls) = (tx.clone(), Arc::clone(&calls));
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let (tx, calls) = (tx.clone(), Arc::clone(&calls));
                    async move {
                        let signature = req
                            .headers()
                            .get("x-calgate-signature")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let _ = tx.send((signature, String::from_utf8_lossy(&body).into_owned()));
                        let status = if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                            500
                        } else {
                            200
                        };
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, rx)
}

async fn conflicts(s: &TestGateway, status: &str) -> Vec<Value> {
    let (code, body, _) = s
        .get(&format!("/api/v1/tenants/salon/conflicts?status={status}"))
        .await;
    assert_eq!(code, 200, "{body}");
    body["conflicts"].as_array().unwrap().clone()
}

/// POSTs the acknowledgement of conflict `id`: the status.
async fn acknowledge(s: &TestGateway, id: &str) -> u16 {
    let path = format!("/api/v1/tenants/salon/conflicts/{id}/acknowledge");
    let resp = s.client.post(s.url(&path)).bearer_auth(SALON_KEY);
    resp.send().await.unwrap().status().as_u16()
}

/// Verifies `t=<ts>,v1=<hex>` against the shared secret, as a receiver would.
fn verify(signature: &str, body: &str) -> bool {
    use hmac::{Hmac, KeyInit, Mac};
    let Some((t, v1)) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let mut mac =
        <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    hex::decode(v1).is_ok_and(|sig| mac.verify_slice(&sig).is_ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn imported_event_on_a_booking_is_recorded_announced_and_resolved() {
    let (url, mut hooks) = receiver().await;
    let s = TestGateway::start_with_webhook(&url).await;
    s.add_source("staff-ana", false);
    let (_, b, _) = s
        .create(&booking("2026-12-22", "10:00", "11:00", "Colour"))
        .await;
    let booking_id = b["id"].as_str().unwrap().to_owned();

    s.put_ics(
        "staff-ana",
        "dentist.ics",
        &event("d1", "20261222T103000", "20261222T113000"),
    )
    .await;
    let open = conflicts(&s, "open").await;
    assert_eq!(open.len(), 1, "{open:?}");
    let c = &open[0];
    assert_eq!(c["booking_id"], booking_id.as_str());
    assert_eq!(c["source"], "staff-ana");
    assert_eq!(c["object_id"], "dentist.ics");
    assert_eq!(c["start"], "2026-12-22T09:30:00Z");
    assert_eq!(c["end"], "2026-12-22T10:00:00Z");
    let conflict_id = c["id"].as_str().unwrap().to_owned();

    // Delivered, signed; the first attempt failed and was retried.
    let wait = Duration::from_secs(20);
    let (sig1, body1) = tokio::time::timeout(wait, hooks.recv())
        .await
        .unwrap()
        .unwrap();
    let (sig2, body2) = tokio::time::timeout(wait, hooks.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body1, body2);
    assert!(
        verify(&sig1, &body1) && verify(&sig2, &body2),
        "bad signature {sig1} / {sig2}"
    );
    assert!(!verify(
        &sig2,
        &body2
            .replace("Colour", "x")
            .replace("staff-ana", "staff-bob")
    ));
    let payload: Value = serde_json::from_str(&body2).unwrap();
    assert_eq!(payload["type"], "booking.conflict");
    assert_eq!(payload["conflict"]["id"], conflict_id.as_str());
    // The delivery is recorded on the conflict (the receiver answered 200 above).
    let delivered = async {
        loop {
            let all = conflicts(&s, "all").await;
            if all[0]["webhook"]["delivered"].is_string() {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let all = tokio::time::timeout(wait, delivered)
        .await
        .expect("delivery recorded");
    assert_eq!(all[0]["webhook"]["attempts"], 2);

    // Re-importing the same event is not a new conflict.
    s.put_ics(
        "staff-ana",
        "dentist.ics",
        &event("d1", "20261222T103000", "20261222T113000"),
    )
    .await;
    assert_eq!(conflicts(&s, "all").await.len(), 1);

    // Acknowledged: no longer open.
    assert_eq!(acknowledge(&s, &conflict_id).await, 200);
    assert!(conflicts(&s, "open").await.is_empty());
    assert_eq!(conflicts(&s, "acknowledged").await.len(), 1);

    // The dentist moves to the afternoon: resolved.
    s.put_ics(
        "staff-ana",
        "dentist.ics",
        &event("d1", "20261222T150000", "20261222T160000"),
    )
    .await;
    let resolved = conflicts(&s, "resolved").await;
    assert_eq!(resolved.len(), 1);
    assert!(resolved[0]["resolved"].is_string());

    // A new clash, then the booking is cancelled: resolved too.
    s.put_ics(
        "staff-ana",
        "gym.ics",
        &event("g1", "20261222T100000", "20261222T101500"),
    )
    .await;
    assert_eq!(conflicts(&s, "open").await.len(), 1);
    let resp = s
        .client
        .patch(s.url(&format!("/api/v1/tenants/salon/bookings/{booking_id}")))
        .bearer_auth(SALON_KEY)
        .json(&json!({"status": "cancelled"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(conflicts(&s, "open").await.is_empty());
    assert_eq!(conflicts(&s, "resolved").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn conflict_api_errors() {
    let s = TestGateway::start().await;
    let (status, body, _) = s.get("/api/v1/tenants/salon/conflicts?status=maybe").await;
    assert_eq!(status, 400);
    assert_eq!(body["invalid_params"][0]["name"], "status");
    assert_eq!(acknowledge(&s, "nope").await, 404);
    let resp = s
        .client
        .get(s.url("/api/v1/tenants/salon/conflicts"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

/// A VEVENT of `count` occurrences every `freq` (MINUTELY, DAILY, ...), each
/// `minutes` long, from `start` (Paris time).
fn recurring(uid: &str, start: &str, minutes: u32, freq: &str, count: u32) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261101T000000Z\r\nDTSTART;TZID=Europe/Paris:{start}\r\nDURATION:PT{minutes}M\r\nRRULE:FREQ={freq};COUNT={count}\r\nSUMMARY:Blocked\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

/// Ana's staff calendar, made over CalDAV.
async fn staff_calendar(s: &TestGateway) {
    let resp = s
        .client
        .request(
            reqwest::Method::from_bytes(b"MKCALENDAR").unwrap(),
            s.url("/dav/calendars/salon/staff/"),
        )
        .basic_auth("ana", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

/// PUTs `ics` to a CalDAV path as ana: (status, body).
async fn dav_put(s: &TestGateway, path: &str, ics: &str) -> (u16, String) {
    let resp = s
        .client
        .put(s.url(path))
        .basic_auth("ana", Some("secret"))
        .header("content-type", "text/calendar; charset=utf-8")
        .body(ics.to_owned())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Creates one 10:00-11:00 booking a day from 2026-12-01: their ids.
async fn daily_bookings(s: &TestGateway, days: u32) -> Vec<String> {
    let mut ids = Vec::new();
    for day in 1..=days {
        let (status, b, _) = s
            .create(&booking(
                &format!("2026-12-{day:02}"),
                "10:00",
                "11:00",
                "Cut",
            ))
            .await;
        assert_eq!(status, 201, "{b}");
        ids.push(b["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// Every page of a listing: (records in order, pages).
async fn walk(s: &TestGateway, query: &str) -> (Vec<Value>, usize) {
    let (mut all, mut pages) = (Vec::new(), 0);
    let mut url = format!("/api/v1/tenants/salon/conflicts?{query}");
    loop {
        let (status, body, _) = s.get(&url).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        all.extend(body["conflicts"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(cursor) => {
                url = format!("/api/v1/tenants/salon/conflicts?{query}&cursor={cursor}")
            }
            None => return (all, pages),
        }
        assert!(pages < 100, "the listing does not end");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn recurring_object_over_one_booking_is_one_conflict_record() {
    let s = TestGateway::start().await;
    staff_calendar(&s).await;
    let (status, b, _) = s
        .create(&booking("2026-12-22", "10:00", "15:00", "Long colour"))
        .await;
    assert_eq!(status, 201, "{b}");
    let booking_id = b["id"].as_str().unwrap().to_owned();

    // 300 one-minute occurrences, all inside the five-hour booking.
    let path = "/dav/calendars/salon/staff/x.ics";
    let ics = recurring("x1", "20261222T100000", 1, "MINUTELY", 300);
    assert_eq!(dav_put(&s, path, &ics).await.0, 201);
    let all = conflicts(&s, "all").await;
    assert_eq!(all.len(), 1, "one record per booking and object");
    let c = &all[0];
    assert_eq!(c["booking_id"], booking_id.as_str());
    assert_eq!(c["object_id"], "x.ics");
    assert_eq!(c["occurrences"], 300);
    assert_eq!(c["start"], "2026-12-22T09:00:00Z", "the first overlap");
    assert_eq!(c["end"], "2026-12-22T09:01:00Z");
    let id = c["id"].as_str().unwrap().to_owned();

    // Fewer occurrences: the same record, saying so.
    let ics = recurring("x1", "20261222T100000", 1, "MINUTELY", 120);
    assert_eq!(dav_put(&s, path, &ics).await.0, 204);
    let all = conflicts(&s, "all").await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["id"], id.as_str());
    assert_eq!(all[0]["occurrences"], 120);
    assert!(all[0]["resolved"].is_null());

    // Moved off the booking: resolved.
    let ics = recurring("x1", "20261223T100000", 1, "MINUTELY", 120);
    assert_eq!(dav_put(&s, path, &ics).await.0, 204);
    let resolved = conflicts(&s, "resolved").await;
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0]["id"], id.as_str());
    assert_eq!(conflicts(&s, "all").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn conflicts_are_listed_page_by_page() {
    let s = TestGateway::start().await;
    s.add_source("staff-ana", false);
    daily_bookings(&s, 12).await;
    // Two objects, each over all twelve bookings: 24 records.
    s.put_ics(
        "staff-ana",
        "a.ics",
        &recurring("a", "20261201T103000", 15, "DAILY", 12),
    )
    .await;
    s.put_ics(
        "staff-ana",
        "b.ics",
        &recurring("b", "20261201T100000", 15, "DAILY", 12),
    )
    .await;

    let (all, pages) = walk(&s, "status=all&limit=5").await;
    assert_eq!(pages, 5, "5 + 5 + 5 + 5 + 4");
    let ids: std::collections::HashSet<&str> =
        all.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(all.len(), 24);
    assert_eq!(ids.len(), 24, "no record twice");
    let (one_page, pages) = walk(&s, "status=all").await;
    assert_eq!((one_page.len(), pages), (24, 1), "default limit");
    assert_eq!(one_page, all, "the same records in the same order");

    // The status filter applies before paging.
    for c in all.iter().take(7) {
        assert_eq!(acknowledge(&s, c["id"].as_str().unwrap()).await, 200);
    }
    let (open, pages) = walk(&s, "status=open&limit=4").await;
    assert_eq!((open.len(), pages), (17, 5));
    let (acked, pages) = walk(&s, "status=acknowledged&limit=7").await;
    assert_eq!((acked.len(), pages), (7, 1));

    for (query, name) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-cursor", "cursor"),
    ] {
        let (status, body, _) = s
            .get(&format!("/api/v1/tenants/salon/conflicts?{query}"))
            .await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["invalid_params"][0]["name"], name, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_list_a_bounded_number_of_conflicting_entries() {
    let s = TestGateway::start().await;
    staff_calendar(&s).await;
    let ics = recurring("x1", "20261222T100000", 1, "MINUTELY", 300);
    assert_eq!(
        dav_put(&s, "/dav/calendars/salon/staff/x.ics", &ics)
            .await
            .0,
        201
    );

    // API create over the 300 occurrences.
    let resp = s
        .client
        .post(s.bookings_url("salon"))
        .bearer_auth(SALON_KEY)
        .json(&booking("2026-12-22", "10:00", "15:00", "Long colour"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let text = resp.text().await.unwrap();
    assert!(text.len() < 16 * 1024, "{} bytes", text.len());
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["conflicts"].as_array().unwrap().len(), 20);
    assert_eq!(body["conflicts"][0]["start"], "2026-12-22T09:00:00Z");
    assert_eq!(body["conflicts_total"], 300);
    assert_eq!(body["conflicts_truncated"], true);

    // API move onto them.
    let (status, b, _) = s
        .create(&booking("2026-12-23", "10:00", "15:00", "Long colour"))
        .await;
    assert_eq!(status, 201, "{b}");
    let resp = s
        .client
        .patch(s.url(&format!(
            "/api/v1/tenants/salon/bookings/{}",
            b["id"].as_str().unwrap()
        )))
        .bearer_auth(SALON_KEY)
        .json(&json!({"start": "2026-12-22T12:00:00+01:00", "end": "2026-12-22T13:00:00+01:00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["conflicts"].as_array().unwrap().len(), 20);
    assert_eq!(body["conflicts_total"], 60);

    // A small clash is listed whole.
    let (status, body, _) = s
        .create(&booking("2026-12-22", "14:58", "15:30", "Short"))
        .await;
    assert_eq!(status, 409);
    assert_eq!(body["conflicts"].as_array().unwrap().len(), 2);
    assert_eq!(body["conflicts_total"], 2);
    assert_eq!(body["conflicts_truncated"], false);

    // CalDAV PUT into bookings/.
    let event = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nBEGIN:VEVENT\r\nUID:b1\r\nDTSTAMP:20261101T000000Z\r\nDTSTART;TZID=Europe/Paris:20261222T100000\r\nDTEND;TZID=Europe/Paris:20261222T150000\r\nSUMMARY:Long colour\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let (status, body) = dav_put(&s, "/dav/calendars/salon/bookings/b1.ics", event).await;
    assert_eq!(status, 409);
    assert!(body.len() < 4 * 1024, "{} bytes: {body}", body.len());
    assert!(body.contains("and 280 more (300 in all)"), "{body}");
}

/// Requests the receiver got so far.
fn drain(hooks: &mut mpsc::UnboundedReceiver<(String, String)>) -> Vec<(String, String)> {
    std::iter::from_fn(|| hooks.try_recv().ok()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_write_over_many_bookings_makes_one_webhook_call() {
    let (url, mut hooks) = receiver().await;
    let s = TestGateway::start_with_webhook(&url).await;
    s.add_source("staff-ana", false);
    let bookings = daily_bookings(&s, 30).await;
    // Every booking is overlapped four times: 30 conflicts.
    s.put_ics(
        "staff-ana",
        "training.ics",
        &recurring(
            "t1",
            "20261201T100000",
            15,
            "DAILY;BYHOUR=10;BYMINUTE=0,15,30,45",
            30 * 4,
        ),
    )
    .await;

    // Wait until every record says it was delivered (the receiver failed the
    // first call, so that took a retry).
    let delivered = async {
        loop {
            let all = conflicts(&s, "all").await;
            if all.iter().all(|c| c["webhook"]["delivered"].is_string()) {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let all = tokio::time::timeout(Duration::from_secs(20), delivered)
        .await
        .expect("deliveries recorded");
    assert!(all.iter().all(|c| c["webhook"]["attempts"] == 2), "{all:?}");
    // Every delivery is recorded after its call was answered: nothing is in flight.
    let calls = drain(&mut hooks);
    assert_eq!(calls.len(), 2, "one call and its retry");
    assert_eq!(all.len(), 30);
    let (signature, body) = &calls[1];
    assert!(verify(signature, body), "bad signature {signature}");
    assert_eq!(calls[0].1, calls[1].1, "a retry sends the same body");
    let payload: Value = serde_json::from_str(body).unwrap();
    assert_eq!(payload["type"], "booking.conflict");
    let sent: std::collections::HashSet<&str> = payload["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["booking_id"].as_str().unwrap())
        .collect();
    let expected: std::collections::HashSet<&str> = bookings.iter().map(String::as_str).collect();
    assert_eq!(sent, expected);
    assert_eq!(payload["conflict"], payload["conflicts"][0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_conflicts_are_redelivered_in_batches_after_a_restart() {
    // No webhook yet: 150 conflicts wait undelivered.
    let s = TestGateway::start().await;
    s.add_source("staff-ana", false);
    daily_bookings(&s, 30).await;
    for n in 0..5 {
        let ics = recurring(&format!("o{n}"), "20261201T100000", 10, "DAILY", 30);
        s.put_ics("staff-ana", &format!("o{n}.ics"), &ics).await;
    }
    let (all, _) = walk(&s, "status=all&limit=1000").await;
    assert_eq!(all.len(), 150);

    let (url, mut hooks) = receiver().await;
    let s = s.restart_with_webhook(&url).await;
    let delivered = async {
        loop {
            let (all, _) = walk(&s, "status=all&limit=1000").await;
            if all.iter().all(|c| c["webhook"]["delivered"].is_string()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), delivered)
        .await
        .expect("deliveries recorded");
    // Two batches (100 + 50); the receiver failed the first call, which was retried.
    let calls = drain(&mut hooks);
    assert_eq!(calls.len(), 3, "two batches and one retry");
    let mut ids = std::collections::HashSet::new();
    let mut bodies = std::collections::HashSet::new();
    for (signature, body) in &calls {
        assert!(verify(signature, body), "bad signature {signature}");
        bodies.insert(body.as_str());
        let payload: Value = serde_json::from_str(body).unwrap();
        for c in payload["conflicts"].as_array().unwrap() {
            ids.insert(c["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!((bodies.len(), ids.len()), (2, 150));
}

/// Log output of everything this thread runs while the guard lives.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Lines that contain both.
    fn lines_with(&self, a: &str, b: &str) -> usize {
        let log = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        log.lines()
            .filter(|l| l.contains(a) && l.contains(b))
            .count()
    }
}

/// The log of this test binary from the first call on (a thread-scoped
/// subscriber misses events when other tests hit the same call sites first).
fn captured_log() -> &'static Captured {
    static LOG: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
        log
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn one_log_line_per_write_that_finds_conflicts() {
    let log = captured_log();
    // A source no other test uses: their lines do not count.
    let lines = || log.lines_with("detected", "staff-logged");
    let s = TestGateway::start().await;
    s.add_source("staff-logged", false);
    daily_bookings(&s, 3).await;
    // 3 bookings, 30 occurrences over each.
    let minutes: Vec<String> = (0..30).map(|m| m.to_string()).collect();
    let freq = format!("DAILY;BYHOUR=10;BYMINUTE={}", minutes.join(","));
    let ics = recurring("x1", "20261201T100000", 1, &freq, 90);
    s.put_ics("staff-logged", "x.ics", &ics).await;
    assert_eq!(conflicts(&s, "all").await.len(), 3);
    assert_eq!(lines(), 1, "one line for the write");
    // Nothing new: nothing logged.
    let ics = ics.replace("COUNT=90", "COUNT=80");
    s.put_ics("staff-logged", "x.ics", &ics).await;
    assert_eq!(lines(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn per_occurrence_records_of_older_versions_read_fold_and_resolve() {
    let s = TestGateway::start().await;
    s.add_source("staff-ana", false);
    let (_, b, _) = s
        .create(&booking("2026-12-22", "10:00", "15:00", "Long colour"))
        .await;
    assert!(b["id"].is_string(), "{b}");
    let store = &s.app().store;
    // As the previous version stored them: one record per overlapping occurrence,
    // the second one acknowledged, all announced.
    let mut legacy = Vec::new();
    for object in ["x.ics", "y.ics"] {
        let ics = recurring(object, "20261222T100000", 1, "MINUTELY", 3);
        s.put_ics("staff-ana", object, &ics).await;
        let record = store.conflicts("salon").unwrap().pop().unwrap();
        store
            .replace_conflicts("salon", &[], std::slice::from_ref(&record))
            .await
            .unwrap();
        for n in 0..3 {
            let mut c = record.clone();
            c.id = format!("{object}-legacy-{n}");
            c.span = calgate::model::Span::new(c.span.start + n * 60_000, c.span.end + n * 60_000);
            c.occurrences = 1;
            c.detected += chrono::Duration::seconds(n);
            c.acknowledged = (n == 1).then_some(c.detected);
            c.webhook.delivered = Some(c.detected);
            legacy.push(c);
        }
    }
    store.put_conflicts("salon", &legacy).await.unwrap();
    let all = conflicts(&s, "all").await;
    assert_eq!(all.len(), 6, "listed as they are");
    assert!(all.iter().all(|c| c["occurrences"] == 1));

    // x.ics is written again: its three records become one, still open (not all
    // three were acknowledged), detected when the first was.
    let ics = recurring("x.ics", "20261222T100000", 1, "MINUTELY", 4);
    s.put_ics("staff-ana", "x.ics", &ics).await;
    let x: Vec<Value> = conflicts(&s, "all")
        .await
        .into_iter()
        .filter(|c| c["object_id"] == "x.ics")
        .collect();
    assert_eq!(x.len(), 1, "{x:?}");
    assert_eq!(x[0]["occurrences"], 4);
    assert!(x[0]["resolved"].is_null() && x[0]["acknowledged"].is_null());
    assert!(x[0]["webhook"]["delivered"].is_string(), "announced before");
    assert_eq!(
        x[0]["detected"],
        all.iter().find(|c| c["id"] == "x.ics-legacy-0").unwrap()["detected"]
    );

    // y.ics moves off the booking: its three records resolve.
    let ics = recurring("y.ics", "20261223T100000", 1, "MINUTELY", 3);
    s.put_ics("staff-ana", "y.ics", &ics).await;
    let resolved = conflicts(&s, "resolved").await;
    assert_eq!(resolved.len(), 3);
    assert!(resolved.iter().all(|c| c["object_id"] == "y.ics"));
    assert_eq!(conflicts(&s, "open").await.len(), 1);
}

/// A webhook delivery waiting for its next attempt (seconds to minutes) used to
/// keep the store open after the gateway stopped, so a restart on the same data
/// could not open it. Stopping ends the deliveries; what they had not delivered
/// goes out after the restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_during_a_webhook_retry_ends_it_and_delivers_after() {
    let (url, mut hooks) = receiver().await;
    let s = TestGateway::start_with_webhook(&url).await;
    s.add_source("staff-ana", false);
    daily_bookings(&s, 1).await;
    let ics = recurring("o", "20261201T100000", 10, "DAILY", 1);
    s.put_ics("staff-ana", "o.ics", &ics).await;
    // The receiver fails the first call; the delivery then waits 1 s to retry.
    let first = tokio::time::timeout(Duration::from_secs(10), hooks.recv())
        .await
        .expect("first call made");
    assert!(first.is_some());
    let s = tokio::time::timeout(Duration::from_secs(30), s.restart_with_webhook(&url))
        .await
        .expect("the restart is not held up by the waiting delivery");
    let delivered = async {
        loop {
            let (all, _) = walk(&s, "status=all&limit=1000").await;
            if !all.is_empty() && all.iter().all(|c| c["webhook"]["delivered"].is_string()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), delivered)
        .await
        .expect("delivered after the restart");
}

/// Two stylists, each with an imported calendar of their own.
fn stylists() -> Extra {
    Extra {
        salon: r#"
[[tenant.resource]]
id = "anna"
name = "Anna"
kind = "staff"
[[tenant.resource]]
id = "ben"
name = "Ben"
kind = "staff"
"#
        .into(),
        ..Extra::default()
    }
}

/// PATCHes a salon booking: (status, body).
async fn patch(s: &TestGateway, id: &str, body: Value) -> (u16, Value) {
    let resp = s
        .client
        .patch(s.url(&format!("/api/v1/tenants/salon/bookings/{id}")))
        .bearer_auth(SALON_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, body, _) = common::split(resp).await;
    (status, body)
}

/// (source, object, start, end) of each conflict listed with `query`.
async fn pairs(s: &TestGateway, query: &str) -> Vec<(String, String, String, String)> {
    let (status, body, _) = s
        .get(&format!("/api/v1/tenants/salon/conflicts?{query}"))
        .await;
    assert_eq!(status, 200, "{body}");
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut found: Vec<_> = body["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                text(&c["source"]),
                text(&c["object_id"]),
                text(&c["start"]),
                text(&c["end"]),
            )
        })
        .collect();
    found.sort();
    found
}

/// A booking whose resources change has its conflicts looked at again, as a
/// move in time does: the calendar of the resource it no longer takes stops
/// conflicting with it, the calendar of the one it now takes starts to (and
/// is announced).
#[tokio::test(flavor = "multi_thread")]
async fn a_change_of_resources_re_evaluates_the_bookings_conflicts() {
    let (url, mut hooks) = receiver().await;
    let s = TestGateway::start_with_webhook_and_extra(&url, stylists()).await;
    add_salon_resource_source(s.app(), "anna-google", Some("anna"));
    add_salon_resource_source(s.app(), "ben-google", Some("ben"));
    let mut body = booking("2026-12-22", "10:00", "11:00", "Colour");
    body["resources"] = json!(["anna"]);
    let (status, b, _) = s.create(&body).await;
    assert_eq!(status, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    // Anna goes to the dentist over the booking; Ben is at the gym at ten.
    s.put_ics(
        "anna-google",
        "dentist.ics",
        &event("d1", "20261222T103000", "20261222T113000"),
    )
    .await;
    s.put_ics(
        "ben-google",
        "gym.ics",
        &event("g1", "20261222T100000", "20261222T101500"),
    )
    .await;
    let dentist = |at: (&str, &str)| {
        (
            "anna-google".to_owned(),
            "dentist.ics".to_owned(),
            at.0.to_owned(),
            at.1.to_owned(),
        )
    };
    let gym = (
        "ben-google".to_owned(),
        "gym.ics".to_owned(),
        "2026-12-22T09:00:00Z".to_owned(),
        "2026-12-22T09:15:00Z".to_owned(),
    );
    let at_half_past = ("2026-12-22T09:30:00Z", "2026-12-22T10:00:00Z");
    assert_eq!(pairs(&s, "status=open").await, [dentist(at_half_past)]);

    // To Ben: refused (he is at the gym), nothing changes.
    let (status, refused) = patch(&s, &id, json!({"resources": ["ben"]})).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(pairs(&s, "status=open").await, [dentist(at_half_past)]);

    // To Ben knowingly: the dentist is no conflict of the booking any more,
    // the gym is one, listed under Ben, and announced.
    let (status, moved) = patch(
        &s,
        &id,
        json!({"resources": ["ben"], "allow_conflict": true}),
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(pairs(&s, "status=open").await, std::slice::from_ref(&gym));
    assert_eq!(pairs(&s, "status=resolved").await, [dentist(at_half_past)]);
    assert_eq!(
        pairs(&s, "status=open&resource=ben").await,
        std::slice::from_ref(&gym)
    );
    assert!(pairs(&s, "status=open&resource=anna").await.is_empty());
    let announced = async {
        while let Some((_, body)) = hooks.recv().await {
            if body.contains("gym.ics") {
                return body;
            }
        }
        panic!("the receiver stopped");
    };
    let body = tokio::time::timeout(Duration::from_secs(20), announced)
        .await
        .expect("the new conflict is announced");
    let payload: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(payload["conflicts"][0]["booking_id"], id.as_str());
    assert_eq!(payload["conflicts"][0]["source"], "ben-google");

    // Taking both: both calendars conflict (the dentist's record is open again).
    let (status, both) = patch(
        &s,
        &id,
        json!({"resources": ["anna", "ben"], "allow_conflict": true}),
    )
    .await;
    assert_eq!(status, 200, "{both}");
    assert_eq!(
        pairs(&s, "status=open").await,
        [dentist(at_half_past), gym.clone()]
    );
    assert_eq!(
        pairs(&s, "status=all").await.len(),
        2,
        "one record per pair"
    );

    // Back to Anna alone, later in the morning: the gym is resolved, the
    // dentist's overlap is what it is now.
    let (status, back) = patch(
        &s,
        &id,
        json!({"resources": ["anna"], "start": "2026-12-22T10:45:00+01:00", "end": "2026-12-22T11:45:00+01:00", "allow_conflict": true}),
    )
    .await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(
        pairs(&s, "status=open").await,
        [dentist(("2026-12-22T09:45:00Z", "2026-12-22T10:30:00Z"))]
    );
    assert_eq!(pairs(&s, "status=resolved").await, [gym]);
}
