//! Conflicts found after the fact: a calendar event that lands on a booking is
//! recorded, listed, acknowledged, resolved when the overlap goes, and POSTed to
//! the tenant's webhook with an HMAC signature (retried after a failure).

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{SALON_KEY, TestServer, WEBHOOK_SECRET, booking};
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

fn event(uid: &str, start: &str, end: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261101T000000Z\r\nDTSTART;TZID=Europe/Paris:{start}\r\nDTEND;TZID=Europe/Paris:{end}\r\nSUMMARY:Dentist\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

async fn conflicts(s: &TestServer, status: &str) -> Vec<Value> {
    let (code, body, _) = s
        .get(&format!("/api/v1/tenants/salon/conflicts?status={status}"))
        .await;
    assert_eq!(code, 200, "{body}");
    body["conflicts"].as_array().unwrap().clone()
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
    let s = TestServer::start_with_webhook(&url).await;
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
    let resp = s
        .client
        .post(s.url(&format!(
            "/api/v1/tenants/salon/conflicts/{conflict_id}/acknowledge"
        )))
        .bearer_auth(SALON_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
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
    let s = TestServer::start().await;
    let (status, body, _) = s.get("/api/v1/tenants/salon/conflicts?status=maybe").await;
    assert_eq!(status, 400);
    assert_eq!(body["invalid_params"][0]["name"], "status");
    let resp = s
        .client
        .post(s.url("/api/v1/tenants/salon/conflicts/nope/acknowledge"))
        .bearer_auth(SALON_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = s
        .client
        .get(s.url("/api/v1/tenants/salon/conflicts"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}
