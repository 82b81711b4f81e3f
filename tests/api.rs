//! The booking API through the router in process (`calgate::http::handle`): CRUD,
//! validation, auth, concurrency control, idempotency and range queries.

mod common;

use common::{GARAGE_KEY, SALON_KEY, TestGateway, booking, problem_fields, split};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn create_get_update_delete_round_trip() {
    let s = TestGateway::start().await;
    let body = json!({
        "start": "2026-12-01T10:00:00+01:00",
        "end": "2026-12-01T10:45:00+01:00",
        "time_zone": "Europe/Paris",
        "title": "Colour",
        "service": "colour-long",
        "customer": {"name": "Ana Lima", "email": "ana@example.com", "phone": "+33 1 23 45 67 89"},
        "location": "Chair 2",
        "notes": "allergic to ammonia",
        "status": "tentative",
        "metadata": {"source": "web", "price": 85}
    });
    let (status, created, etag) = s.create(&body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["title"], "Colour");
    assert_eq!(created["start"], "2026-12-01T10:00:00+01:00");
    assert_eq!(created["customer"]["email"], "ana@example.com");
    assert_eq!(created["status"], "tentative");
    assert_eq!(created["metadata"]["price"], 85);
    assert_eq!(created["sequence"], 0);
    assert_eq!(created["all_day"], false);
    let etag = etag.expect("ETag on create");
    assert_eq!(created["etag"], etag.as_str());

    let item = s.url(&format!("/api/v1/tenants/salon/bookings/{id}"));
    let (status, fetched, fetched_etag) = s.get(&item).await;
    assert_eq!(status, 200);
    assert_eq!(fetched, created);
    assert_eq!(fetched_etag.as_deref(), Some(etag.as_str()));

    // Conditional GET.
    let resp = s
        .client
        .get(&item)
        .bearer_auth(SALON_KEY)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);

    // PATCH merges: only the named fields change; null clears.
    let resp = s
        .client
        .patch(&item)
        .bearer_auth(SALON_KEY)
        .header("if-match", &etag)
        .json(&json!({"status": "confirmed", "location": null}))
        .send()
        .await
        .unwrap();
    let (status, patched, new_etag) = split(resp).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["status"], "confirmed");
    assert_eq!(patched["location"], Value::Null);
    assert_eq!(patched["notes"], "allergic to ammonia");
    assert_eq!(patched["sequence"], 1);
    assert_eq!(patched["created"], created["created"]);
    let new_etag = new_etag.unwrap();
    assert_ne!(new_etag, etag);

    // A stale ETag is refused and changes nothing.
    let resp = s
        .client
        .patch(&item)
        .bearer_auth(SALON_KEY)
        .header("if-match", &etag)
        .json(&json!({"title": "Lost update"}))
        .send()
        .await
        .unwrap();
    let (status, problem, _) = split(resp).await;
    assert_eq!(status, 412, "{problem}");
    assert_eq!(problem["type"], "urn:calgate:problem:precondition-failed");

    // PUT replaces: fields left out are cleared.
    let resp = s
        .client
        .put(&item)
        .bearer_auth(SALON_KEY)
        .header("if-match", &new_etag)
        .json(&booking("2026-12-02", "09:00", "09:30", "Cut"))
        .send()
        .await
        .unwrap();
    let (status, replaced, _) = split(resp).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["title"], "Cut");
    assert_eq!(replaced["notes"], Value::Null);
    assert_eq!(replaced["customer"], Value::Null);
    assert_eq!(replaced["status"], "confirmed");
    assert_eq!(replaced["id"], id.as_str());

    // DELETE, then it is gone.
    let resp = s
        .client
        .delete(&item)
        .bearer_auth(SALON_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = s
        .client
        .get(&item)
        .bearer_auth(SALON_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = s
        .client
        .delete(&item)
        .bearer_auth(SALON_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_honours_if_match() {
    let s = TestGateway::start().await;
    let (_, created, etag) = s
        .create(&booking("2026-12-01", "10:00", "11:00", "A"))
        .await;
    let item = s.url(&format!(
        "/api/v1/tenants/salon/bookings/{}",
        created["id"].as_str().unwrap()
    ));
    let resp = s
        .client
        .delete(&item)
        .bearer_auth(SALON_KEY)
        .header("if-match", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 412);
    let resp = s
        .client
        .delete(&item)
        .bearer_auth(SALON_KEY)
        .header("if-match", etag.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_via_status_keeps_the_booking() {
    let s = TestGateway::start().await;
    let (_, created, _) = s
        .create(&booking("2026-12-01", "10:00", "11:00", "A"))
        .await;
    let item = s.url(&format!(
        "/api/v1/tenants/salon/bookings/{}",
        created["id"].as_str().unwrap()
    ));
    let resp = s
        .client
        .patch(&item)
        .bearer_auth(SALON_KEY)
        .json(&json!({"status": "cancelled"}))
        .send()
        .await
        .unwrap();
    let (status, body, _) = split(resp).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "cancelled");
    let (status, body, _) = s.get(&item).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn all_day_bookings_take_dates() {
    let s = TestGateway::start().await;
    let (status, created, _) = s
        .create(&json!({"all_day": true, "start": "2026-12-24", "end": "2026-12-26", "title": "Closed"}))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["start"], "2026-12-24");
    assert_eq!(created["end"], "2026-12-26");
    assert_eq!(created["all_day"], true);
    assert_eq!(created["time_zone"], "Europe/Paris");

    // A date-time where a date is due names the field and the expected format.
    let (status, problem, _) = s
        .create(&json!({"all_day": true, "start": "2026-12-24T00:00:00+01:00", "end": "2026-12-26", "title": "X"}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(problem_fields(&problem), ["start"]);
    assert!(problem["detail"].as_str().unwrap().contains("YYYY-MM-DD"));

    // Listing finds it through the index in the tenant's zone: Dec 24 00:00 Paris
    // is Dec 23 23:00 UTC.
    let found = s.list("2026-12-23T23:30:00Z", "2026-12-23T23:59:00Z").await;
    assert_eq!(found.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_errors_name_each_field() {
    let s = TestGateway::start().await;
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({"start": "2026-12-01T10:00:00+01:00", "end": "2026-12-01T09:00:00+01:00", "title": "x"}),
            vec!["end"],
        ),
        (
            json!({"start": "2026-12-01 10:00", "end": "2026-12-01T11:00:00+01:00", "title": "x"}),
            vec!["start"],
        ),
        (
            json!({"start": "2026-12-01T10:00:00", "end": "2026-12-01T11:00:00+01:00", "title": "x"}),
            vec!["start"],
        ),
        (
            json!({"start": "2026-02-30T10:00:00+01:00", "end": "2026-03-01T11:00:00+01:00", "title": "x"}),
            vec!["start"],
        ),
        (
            json!({"start": "2026-12-01T10:00:00+01:00", "end": "2026-12-01T11:00:00+01:00", "title": "x", "time_zone": "Europe/Pariss"}),
            vec!["time_zone"],
        ),
        (json!({"title": "x"}), vec!["start", "end"]),
        (
            json!({"start": "2026-12-01T10:00:00+01:00", "end": "2026-12-01T11:00:00+01:00"}),
            vec!["title"],
        ),
        (
            json!({"start": "2026-12-01T10:00:00+01:00", "end": "2026-12-01T11:00:00+01:00", "title": "x", "status": "maybe"}),
            vec!["status"],
        ),
        (
            json!({"start": "2026-12-01T10:00:00+01:00", "end": "2026-12-01T11:00:00+01:00", "title": "x", "customer": {"email": "not-an-address"}}),
            vec!["customer.email"],
        ),
        (
            json!({"start": "2026-12-01T10:00:00+01:00", "end": "2026-12-01T11:00:00+01:00", "title": "x", "notes": "n".repeat(10_001)}),
            vec!["notes"],
        ),
        (
            json!({"start": "2026-12-01T10:00:00+01:00", "end": "2028-12-01T11:00:00+01:00", "title": "x"}),
            vec!["end"],
        ),
        (
            json!({"start": "2026-12-01T10:00:00+01:00", "end": "2026-12-01T11:00:00+01:00", "title": "x", "colour": "red"}),
            vec!["colour"],
        ),
    ];
    for (body, fields) in cases {
        let (status, problem, _) = s.create(&body).await;
        assert_eq!(status, 422, "{body} -> {problem}");
        assert_eq!(problem_fields(&problem), fields, "{body} -> {problem}");
        assert_eq!(problem["status"], 422);
        assert!(!problem["detail"].as_str().unwrap().is_empty());
    }
    // Nothing was stored by any of them.
    assert!(
        s.list("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_bodies_get_precise_4xx() {
    let s = TestGateway::start().await;
    let post = |body: &'static str, content_type: &'static str| {
        s.client
            .post(s.bookings_url("salon"))
            .bearer_auth(SALON_KEY)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let (status, problem, _) = split(post("{\"title\": ", "application/json").await.unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(problem["type"], "urn:calgate:problem:malformed-json");
    assert!(
        problem["detail"].as_str().unwrap().contains("line 1"),
        "{problem}"
    );

    let (status, _, _) = split(post("[1,2]", "application/json").await.unwrap()).await;
    assert_eq!(status, 400);

    let (status, problem, _) = split(post("{}", "text/plain").await.unwrap()).await;
    assert_eq!(status, 415, "{problem}");

    // Oversize body: the test config allows 64 KiB.
    let big = format!("{{\"title\": \"{}\"}}", "x".repeat(70_000));
    let resp = s
        .client
        .post(s.bookings_url("salon"))
        .bearer_auth(SALON_KEY)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (status, problem, _) = split(resp).await;
    assert_eq!(status, 413);
    assert_eq!(problem["type"], "urn:calgate:problem:body-too-large");
    assert_eq!(
        problem["detail"],
        "request bodies are limited to 65536 bytes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn authentication_and_tenant_scoping() {
    let s = TestGateway::start().await;
    let (status, created, _) = s
        .create(&booking("2026-12-01", "10:00", "11:00", "A"))
        .await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap();

    // No key.
    let resp = s.client.get(s.bookings_url("salon")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer realm=\"calgate\""),
        "{challenge}"
    );
    assert_eq!(resp.headers()["content-type"], "application/problem+json");

    // Wrong key.
    let resp = s
        .client
        .get(s.url(&format!("/api/v1/tenants/salon/bookings/{id}")))
        .bearer_auth("not-a-key")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Malformed scheme.
    let resp = s
        .client
        .get(s.url(&format!("/api/v1/tenants/salon/bookings/{id}")))
        .header("authorization", format!("Token {SALON_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Another tenant's key: 403, and the booking stays invisible.
    let resp = s
        .client
        .get(s.url(&format!("/api/v1/tenants/salon/bookings/{id}")))
        .bearer_auth(GARAGE_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // ... and the garage's own namespace does not contain it.
    let resp = s
        .client
        .get(s.url(&format!("/api/v1/tenants/garage/bookings/{id}")))
        .bearer_auth(GARAGE_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // Unknown tenant.
    let (status, problem, _) = s.get(&s.bookings_url("nowhere")).await;
    assert_eq!(status, 404);
    assert!(problem["detail"].as_str().unwrap().contains("nowhere"));
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_key_replays_and_detects_reuse() {
    let s = TestGateway::start().await;
    let body = booking("2026-12-01", "10:00", "11:00", "Once");
    let send = |body: Value, key: &'static str| {
        s.client
            .post(s.bookings_url("salon"))
            .bearer_auth(SALON_KEY)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first = send(body.clone(), "order-42").await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let (_, first, _) = split(first).await;

    let again = send(body.clone(), "order-42").await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let (_, again, _) = split(again).await;
    assert_eq!(again["id"], first["id"]);

    let (status, problem, _) = split(
        send(booking("2026-12-02", "10:00", "11:00", "Other"), "order-42")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        problem["type"],
        "urn:calgate:problem:idempotency-key-reused"
    );

    // Concurrent retries of one request create exactly one booking.
    let other = booking("2026-12-01", "14:00", "15:00", "Once more");
    let concurrent: Vec<_> = (0..8).map(|_| send(other.clone(), "order-43")).collect();
    let mut ids = std::collections::HashSet::new();
    for resp in concurrent {
        let (status, b, _) = split(resp.await.unwrap()).await;
        assert_eq!(status, 201);
        ids.insert(b["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1);

    let found = s.list("2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z").await;
    assert_eq!(found.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn range_query_returns_overlapping_bookings_in_order() {
    let s = TestGateway::start().await;
    for (day, from, to, title) in [
        ("2026-12-03", "09:00", "10:00", "C"),
        ("2026-12-01", "09:00", "10:00", "A"),
        ("2026-12-01", "09:30", "12:00", "B"),
        ("2026-12-10", "09:00", "10:00", "outside"),
    ] {
        // B overlaps A: booked knowingly, so listing shows overlapping bookings.
        let mut body = booking(day, from, to, title);
        body["allow_conflict"] = json!(true);
        assert_eq!(s.create(&body).await.0, 201);
    }
    // A long one starting before the window and ending inside it.
    let (status, _, _) = s
        .create(&json!({"start": "2026-11-20T09:00:00+01:00", "end": "2026-12-01T08:30:00+01:00", "title": "long"}))
        .await;
    assert_eq!(status, 201);

    let s = &s;
    let query = |start: &'static str, end: &'static str| async move {
        s.list(start, end)
            .await
            .iter()
            .map(|b| b["title"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        query("2026-12-01T00:00:00+01:00", "2026-12-08T00:00:00+01:00").await,
        ["long", "A", "B", "C"]
    );
    // Touching ends do not overlap: A ends at 10:00.
    assert_eq!(
        query("2026-12-01T10:00:00+01:00", "2026-12-01T11:00:00+01:00").await,
        ["B"]
    );
    assert!(
        query("2026-12-04T00:00:00+01:00", "2026-12-05T00:00:00+01:00")
            .await
            .is_empty()
    );

    // Bad ranges.
    for (q, field) in [
        ("start=2026-12-01T00:00:00Z", "end"),
        ("start=yesterday&end=2026-12-01T00:00:00Z", "start"),
        ("start=2026-12-02T00:00:00Z&end=2026-12-01T00:00:00Z", "end"),
        ("start=2026-01-01T00:00:00Z&end=2028-01-01T00:00:00Z", "end"),
    ] {
        let url = format!("{}?{q}", s.bookings_url("salon"));
        let (status, problem, _) = s.get(&url).await;
        assert_eq!(status, 400, "{q}: {problem}");
        assert_eq!(problem_fields(&problem), [field], "{q}: {problem}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn moving_a_booking_moves_it_in_the_index() {
    let s = TestGateway::start().await;
    let (_, created, _) = s
        .create(&booking("2026-12-01", "10:00", "11:00", "Move me"))
        .await;
    let item = s.url(&format!(
        "/api/v1/tenants/salon/bookings/{}",
        created["id"].as_str().unwrap()
    ));
    let resp = s
        .client
        .patch(&item)
        .bearer_auth(SALON_KEY)
        .json(&json!({"start": "2026-12-05T14:00:00+01:00", "end": "2026-12-05T15:00:00+01:00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let s = &s;
    let count = |day: &'static str| async move {
        let (start, end) = (format!("{day}T00:00:00Z"), format!("{day}T23:59:59Z"));
        s.list(&start, &end).await.len()
    };
    assert_eq!(count("2026-12-01").await, 0);
    assert_eq!(count("2026-12-05").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_patches_without_if_match_all_apply() {
    let s = TestGateway::start().await;
    let (_, created, _) = s
        .create(&booking("2026-12-01", "10:00", "11:00", "Counter"))
        .await;
    let item = s.url(&format!(
        "/api/v1/tenants/salon/bookings/{}",
        created["id"].as_str().unwrap()
    ));
    let patches: Vec<_> = (0..6)
        .map(|i| {
            s.client
                .patch(&item)
                .bearer_auth(SALON_KEY)
                .json(&json!({"metadata": {"writer": i}}))
                .send()
        })
        .collect();
    for p in patches {
        assert_eq!(p.await.unwrap().status(), 200);
    }
    let (_, body, _) = s.get(&item).await;
    // Every write was applied on top of the previous one: 6 revisions after creation.
    assert_eq!(body["sequence"], 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_and_methods() {
    let s = TestGateway::start().await;
    let resp = s.client.get(s.url("/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let resp = s
        .client
        .delete(s.bookings_url("salon"))
        .bearer_auth(SALON_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, POST");
    let resp = s.client.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bookings_survive_a_restart() {
    let s = TestGateway::start().await;
    let (_, created, etag) = s
        .create(&booking("2026-12-01", "10:00", "11:00", "Persisted"))
        .await;
    let s = s.restart().await;
    let item = s.url(&format!(
        "/api/v1/tenants/salon/bookings/{}",
        created["id"].as_str().unwrap()
    ));
    let (status, fetched, fetched_etag) = s.get(&item).await;
    assert_eq!(status, 200);
    assert_eq!(fetched, created);
    assert_eq!(fetched_etag, etag);
}
