//! Booking export end to end (issue 6): bookings made over the API appear in the
//! mock Google / Microsoft calendars and follow every change; retries honour
//! Retry-After; permanent failures are parked and reported; our own events are
//! recognised when the same calendar is imported; external moves are reported
//! (or applied); disconnecting keeps or purges the exported events.

mod common;
mod export_support;
use calgate_test_mocks as providers;

use std::time::{Duration, Instant};

use export_support::{
    Gw, Provider, SOURCE, Setup, call, connect, drained, google_events_in, graph_events_in, marker,
    slot, source, until,
};
use providers::Fault;
use providers::google::GoogleMock;
use providers::graph::{DEFAULT_CALENDAR_ID, GraphMock};
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

async fn google(setup: impl FnOnce(&mut Setup)) -> (GoogleMock, Gw) {
    let g = GoogleMock::start().await;
    let mut s = Setup::google(&g);
    setup(&mut s);
    let gw = Gw::start(&s).await;
    connect(&gw.client, &gw.base, Provider::Google).await;
    (g, gw)
}

async fn graph(setup: impl FnOnce(&mut Setup)) -> (GraphMock, Gw) {
    let m = GraphMock::start().await;
    let mut s = Setup::microsoft(&m, DEFAULT_CALENDAR_ID);
    setup(&mut s);
    let gw = Gw::start(&s).await;
    connect(&gw.client, &gw.base, Provider::Microsoft).await;
    (m, gw)
}

async fn create(gw: &Gw, body: &Value) -> Value {
    let (status, b) = call(&gw.client, &gw.base, Method::POST, "/bookings", Some(body)).await;
    assert_eq!(status, 201, "{b}");
    b
}

async fn patch(gw: &Gw, id: &str, body: &Value) -> Value {
    let (status, b) = call(
        &gw.client,
        &gw.base,
        Method::PATCH,
        &format!("/bookings/{id}"),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    b
}

async fn booking(gw: &Gw, id: &str) -> Value {
    let (status, b) = call(
        &gw.client,
        &gw.base,
        Method::GET,
        &format!("/bookings/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{b}");
    b
}

/// Runs the source's import now (waiting out a scheduled run in progress).
async fn import_now(gw: &Gw, mode: &str) {
    until("a manual import", WAIT, || async {
        let (status, log) = call(
            &gw.client,
            &gw.base,
            Method::POST,
            &format!("/sources/{SOURCE}/sync?mode={mode}"),
            None,
        )
        .await;
        match status {
            200 => Ok(()),
            409 if log["type"]
                .as_str()
                .is_some_and(|t| t.contains("sync-running")) =>
            {
                Err(log.to_string())
            }
            _ => panic!("import failed: {status} {log}"),
        }
    })
    .await;
}

/// Free/busy with contributors for `range` (a query string's start and end).
async fn freebusy_detail(gw: &Gw, range: &str) -> Value {
    let (status, fb) = call(
        &gw.client,
        &gw.base,
        Method::GET,
        &format!("/freebusy?{range}&detail=true"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{fb}");
    fb
}

/// Live Google events carrying our marker for `id`.
fn google_events(g: &GoogleMock, id: &str) -> Vec<Value> {
    google_events_in(g, &g.primary_id(), id)
}

fn graph_events(m: &GraphMock, id: &str) -> Vec<Value> {
    graph_events_in(m, DEFAULT_CALENDAR_ID, id)
}

/// Waits until `n` live Graph events carry the booking's marker.
async fn graph_count_when(m: &GraphMock, id: &str, what: &str, n: usize) {
    until(what, WAIT, || async {
        match graph_events(m, id).len() {
            found if found == n => Ok(()),
            found => Err(format!("{found} events")),
        }
    })
    .await;
}

async fn google_event_when(
    g: &GoogleMock,
    id: &str,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    until(what, WAIT, || async {
        let events = google_events(g, id);
        if check(&events) {
            Ok(())
        } else {
            Err(format!("{events:?}"))
        }
    })
    .await;
    google_events(g, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_create_move_edit_cancel_delete() {
    let (g, gw) = google(|_| {}).await;
    let b = create(&gw, &slot(1, 10, 45, "Haircut")).await;
    let id = b["id"].as_str().expect("id").to_owned();

    let events = google_event_when(&g, &id, "the insert", |e| e.len() == 1).await;
    let e = &events[0];
    assert_eq!(e["summary"], "Haircut (Colour)");
    assert_eq!(e["location"], "Chair 2");
    assert_eq!(e["start"]["timeZone"], "Europe/Paris");
    assert_eq!(e["start"]["dateTime"], "2026-12-01T10:00:00+01:00");
    assert_eq!(e["end"]["dateTime"], "2026-12-01T10:45:00+01:00");
    let description = e["description"].as_str().expect("description");
    assert!(description.contains("ana@example.com"), "{description}");
    assert!(description.contains("Allergic to ammonia"), "{description}");
    assert!(
        description.contains(&format!(
            "http://gateway.test/api/v1/tenants/salon/bookings/{id}"
        )),
        "{description}"
    );
    assert_eq!(
        e["extendedProperties"]["private"]["gatewaySource"],
        json!(SOURCE)
    );
    let event_id = e["id"].as_str().expect("event id").to_owned();
    let inserts = || {
        g.api_requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
            .count()
    };
    assert_eq!(inserts(), 1);
    // Visible on the booking.
    drained(&gw.client, &gw.base, WAIT).await;
    let shown = booking(&gw, &id).await;
    assert_eq!(shown["exports"][0]["state"], "exported", "{shown}");
    assert_eq!(shown["exports"][0]["event_id"], json!(event_id));

    // Move and edit: the same event follows.
    patch(
        &gw,
        &id,
        &json!({"start": "2026-12-01T14:00:00+01:00", "end": "2026-12-01T15:00:00+01:00", "title": "Cut & colour"}),
    )
    .await;
    let events = google_event_when(&g, &id, "the move", |e| {
        e.len() == 1 && e[0]["start"]["dateTime"] == "2026-12-01T14:00:00+01:00"
    })
    .await;
    assert_eq!(events[0]["id"], json!(event_id), "patched, not re-created");
    assert_eq!(events[0]["summary"], "Cut & colour (Colour)");
    assert_eq!(events[0]["end"]["dateTime"], "2026-12-01T15:00:00+01:00");

    // Cancel: the event goes; confirm again: a new one comes.
    patch(&gw, &id, &json!({"status": "cancelled"})).await;
    google_event_when(&g, &id, "the cancellation", |e| e.is_empty()).await;
    patch(&gw, &id, &json!({"status": "confirmed"})).await;
    let events = google_event_when(&g, &id, "the re-creation", |e| e.len() == 1).await;
    assert_ne!(events[0]["id"], json!(event_id));

    // Delete: gone; nothing is left over.
    let (status, _) = call(
        &gw.client,
        &gw.base,
        Method::DELETE,
        &format!("/bookings/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    google_event_when(&g, &id, "the deletion", |e| e.is_empty()).await;
    drained(&gw.client, &gw.base, WAIT).await;
    assert!(g.live_events(&g.primary_id()).is_empty());

    // A booking created and cancelled before delivery costs nothing remotely
    // (both changes are coalesced into its latest state) — or at worst a create
    // and its delete; never a leftover.
    let b2 = create(&gw, &slot(2, 9, 30, "Quick")).await;
    let id2 = b2["id"].as_str().expect("id").to_owned();
    patch(&gw, &id2, &json!({"status": "cancelled"})).await;
    drained(&gw.client, &gw.base, WAIT).await;
    assert!(google_events(&g, &id2).is_empty());
    let log = call(
        &gw.client,
        &gw.base,
        Method::GET,
        &format!("/sources/{SOURCE}/logs"),
        None,
    )
    .await
    .1;
    assert!(
        log["logs"]
            .as_array()
            .expect("logs")
            .iter()
            .any(|l| l["mode"] == "export" && l["created"].as_u64() >= Some(1)),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_privacy_hides_customer_details() {
    let (g, gw) = google(|s| s.privacy = "busy").await;
    let b = create(&gw, &slot(3, 10, 60, "Root canal")).await;
    let id = b["id"].as_str().expect("id").to_owned();
    let events = google_event_when(&g, &id, "the insert", |e| e.len() == 1).await;
    let text = events[0].to_string();
    assert_eq!(events[0]["summary"], "Busy");
    for private in [
        "Root canal",
        "Ana Lima",
        "ana@example.com",
        "+33 6",
        "Chair 2",
        "ammonia",
        "Colour",
    ] {
        assert!(!text.contains(private), "{private} leaked: {text}");
    }
    assert_eq!(events[0]["start"]["dateTime"], "2026-12-03T10:00:00+01:00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_honour_retry_after_and_survive_500() {
    let (g, gw) = google(|_| {}).await;
    // The first insert is throttled with Retry-After: 2 s.
    g.faults().push(Fault::status_retry_after(429, "2"));
    let started = Instant::now();
    let b = create(&gw, &slot(4, 10, 30, "Throttled")).await;
    let id = b["id"].as_str().expect("id").to_owned();
    google_event_when(&g, &id, "the insert after 429", |e| e.len() == 1).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    // The pass records its success after the provider has the event: wait
    // for that rather than read the state the moment the event shows.
    until("the failures to be forgotten", WAIT, || async {
        let status = source(&gw.client, &gw.base).await;
        if status["status"]["export"]["consecutive_failures"] == json!(0) {
            Ok(())
        } else {
            Err(status.to_string())
        }
    })
    .await;

    // Two 500s: retried with backoff, delivered once.
    g.faults().push_n(2, Fault::status(500));
    let b = create(&gw, &slot(4, 14, 30, "Flaky")).await;
    let id = b["id"].as_str().expect("id").to_owned();
    google_event_when(&g, &id, "the insert after 500s", |e| e.len() == 1).await;
    drained(&gw.client, &gw.base, WAIT).await;
    assert_eq!(g.live_events(&g.primary_id()).len(), 2);
    let posts = g
        .api_requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
        .count();
    // 429 then the insert; 500, then (the create may have landed) a lookup by
    // marker that meets the second 500, another lookup, and the insert.
    assert_eq!(posts, 4);
    let lookups = g
        .api_requests()
        .iter()
        .filter(|r| r.method == "GET" && r.query_param("privateExtendedProperty").is_some())
        .count();
    assert_eq!(lookups, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_target_calendar_parks_bookings_and_says_so() {
    let (g, gw) = google(|_| {}).await;
    let first = create(&gw, &slot(7, 10, 30, "Before")).await;
    let first = first["id"].as_str().expect("id").to_owned();
    google_event_when(&g, &first, "the first insert", |e| e.len() == 1).await;

    g.remove_calendar(&g.primary_id());
    let b = create(&gw, &slot(7, 11, 30, "Lost")).await;
    let id = b["id"].as_str().expect("id").to_owned();
    // The parking and the status are written at different moments of a pass.
    until("the booking to be parked and reported", WAIT, || async {
        let s = source(&gw.client, &gw.base).await;
        if s["status"]["export"]["failed_bookings"] == json!(1)
            && s["status"]["last_error"].is_string()
        {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;
    let s = source(&gw.client, &gw.base).await;
    let error = s["status"]["last_error"]
        .as_str()
        .expect("an error")
        .to_owned();
    assert!(error.contains("404"), "{error}");
    assert!(error.contains("calendar"), "{error}");
    assert_eq!(s["status"]["export"]["pending_changes"], json!(0), "{s}");
    let shown = booking(&gw, &id).await;
    assert_eq!(shown["exports"][0]["state"], "failed", "{shown}");
    // The log entry is written just after the status.
    until("the log entry", WAIT, || async {
        let logs = call(
            &gw.client,
            &gw.base,
            Method::GET,
            &format!("/sources/{SOURCE}/logs"),
            None,
        )
        .await
        .1;
        if logs["logs"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("404"))
        {
            Ok(())
        } else {
            Err(logs.to_string())
        }
    })
    .await;

    // Not retried forever: another booking costs one more attempt, the parked one none.
    let attempts = |g: &GoogleMock| {
        g.api_requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
            .count()
    };
    let before = attempts(&g);
    let b2 = create(&gw, &slot(7, 15, 30, "Also lost")).await;
    assert!(b2["id"].is_string());
    until("the second booking to be parked", WAIT, || async {
        let s = source(&gw.client, &gw.base).await;
        if s["status"]["export"]["failed_bookings"] == json!(2) {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;
    assert_eq!(attempts(&g), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_directions_count_our_events_once_and_report_external_moves() {
    let (g, gw) = google(|s| s.direction = "both").await;
    let b = create(&gw, &slot(8, 10, 60, "Perm")).await;
    let id = b["id"].as_str().expect("id").to_owned();
    let events = google_event_when(&g, &id, "the insert", |e| e.len() == 1).await;
    drained(&gw.client, &gw.base, WAIT).await;

    // Import the same calendar: our event comes back.
    import_now(&gw, "full").await;
    let range = "start=2026-12-08T00:00:00Z&end=2026-12-09T00:00:00Z";
    let fb = freebusy_detail(&gw, range).await;
    let busy = fb["busy"].as_array().expect("busy");
    assert_eq!(busy.len(), 1, "{fb}");
    assert_eq!(
        busy[0]["sources"].as_array().map(Vec::len),
        Some(1),
        "counted once: {fb}"
    );
    assert_eq!(busy[0]["sources"][0]["source"], "bookings", "{fb}");
    // The event was imported (so this is not vacuous), as transparent time.
    assert_eq!(source(&gw.client, &gw.base).await["events"], 1);
    let (_, conflicts) = call(
        &gw.client,
        &gw.base,
        Method::GET,
        "/conflicts?status=all",
        None,
    )
    .await;
    assert_eq!(conflicts["conflicts"], json!([]), "{conflicts}");

    // Moving the booking re-exports; the import sees our own change, not an external one.
    patch(
        &gw,
        &id,
        &json!({"start": "2026-12-08T11:00:00+01:00", "end": "2026-12-08T12:00:00+01:00"}),
    )
    .await;
    google_event_when(&g, &id, "the move", |e| {
        e.len() == 1 && e[0]["start"]["dateTime"] == "2026-12-08T11:00:00+01:00"
    })
    .await;
    import_now(&gw, "incremental").await;
    let shown = booking(&gw, &id).await;
    assert_eq!(
        shown["exports"][0]["external_change"],
        Value::Null,
        "{shown}"
    );

    // Someone drags the event in Google: reported, booking unchanged.
    let event_id = events[0]["id"].as_str().expect("event id");
    g.patch_event(
        &g.primary_id(),
        event_id,
        json!({"start": {"dateTime": "2026-12-08T15:00:00+01:00", "timeZone": "Europe/Paris"},
               "end": {"dateTime": "2026-12-08T16:00:00+01:00", "timeZone": "Europe/Paris"}}),
    );
    import_now(&gw, "incremental").await;
    let shown = booking(&gw, &id).await;
    let change = &shown["exports"][0]["external_change"];
    assert_eq!(change["outcome"], "reported", "{shown}");
    assert_eq!(change["external_time"]["start"], "2026-12-08T14:00:00.000Z");
    assert_eq!(shown["start"], "2026-12-08T11:00:00+01:00");
    // Still counted once, at the booking's time.
    let fb = freebusy_detail(&gw, range).await;
    assert_eq!(fb["busy"].as_array().map(Vec::len), Some(1), "{fb}");

    // Someone duplicates the event in Google (the copy keeps our marker) and
    // puts it later that day: the copy is their event, busy in its own right,
    // and not a move of the booking.
    let mut copy = g.event(&g.primary_id(), event_id).expect("our event");
    for field in ["id", "iCalUID", "etag"] {
        copy[field] = Value::Null;
    }
    copy["start"] = json!({"dateTime": "2026-12-08T17:00:00+01:00", "timeZone": "Europe/Paris"});
    copy["end"] = json!({"dateTime": "2026-12-08T18:00:00+01:00", "timeZone": "Europe/Paris"});
    let copy_id = g.put_event(&g.primary_id(), copy);
    assert_ne!(copy_id, event_id);
    assert_eq!(
        google_events(&g, &id).len(),
        2,
        "the copy carries the marker"
    );
    import_now(&gw, "incremental").await;
    let fb = freebusy_detail(&gw, range).await;
    let busy = fb["busy"].as_array().expect("busy");
    assert_eq!(busy.len(), 2, "{fb}");
    assert_eq!(busy[1]["start"], "2026-12-08T16:00:00Z", "{fb}");
    assert_eq!(busy[1]["sources"][0]["source"], SOURCE, "{fb}");
    let shown = booking(&gw, &id).await;
    assert_eq!(
        shown["exports"][0]["external_change"]["external_time"]["start"],
        "2026-12-08T14:00:00.000Z",
        "the copy is not taken for a move: {shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_external_moves_move_the_booking_with_the_conflict_check() {
    let (g, gw) = google(|s| {
        s.direction = "both";
        s.accept_external_moves = true;
    })
    .await;
    let b = create(&gw, &slot(9, 10, 60, "Movable")).await;
    let id = b["id"].as_str().expect("id").to_owned();
    let other = create(&gw, &slot(9, 16, 60, "Fixed")).await;
    assert!(other["id"].is_string());
    let events = google_event_when(&g, &id, "the insert", |e| e.len() == 1).await;
    drained(&gw.client, &gw.base, WAIT).await;
    let sync = || import_now(&gw, "incremental");
    sync().await;
    let event_id = events[0]["id"].as_str().expect("id");
    let move_to = |h: u32| {
        json!({"start": {"dateTime": format!("2026-12-09T{h}:00:00+01:00"), "timeZone": "Europe/Paris"},
               "end": {"dateTime": format!("2026-12-09T{}:00:00+01:00", h + 1), "timeZone": "Europe/Paris"}})
    };
    // Onto free time: applied.
    g.patch_event(&g.primary_id(), event_id, move_to(13));
    sync().await;
    let shown = booking(&gw, &id).await;
    assert_eq!(shown["start"], "2026-12-09T13:00:00+01:00", "{shown}");
    assert_eq!(shown["exports"][0]["external_change"]["outcome"], "applied");
    // The applied move is exported back (same time) before the next drag.
    drained(&gw.client, &gw.base, WAIT).await;
    // Onto the other booking: refused, reported.
    g.patch_event(&g.primary_id(), event_id, move_to(16));
    sync().await;
    let shown = booking(&gw, &id).await;
    assert_eq!(shown["start"], "2026-12-09T13:00:00+01:00", "{shown}");
    assert_eq!(
        shown["exports"][0]["external_change"]["outcome"], "rejected",
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_keeps_exported_events_unless_purged() {
    // Keep.
    let (g, gw) = google(|_| {}).await;
    let b = create(&gw, &slot(10, 10, 30, "Kept")).await;
    let id = b["id"].as_str().expect("id").to_owned();
    google_event_when(&g, &id, "the insert", |e| e.len() == 1).await;
    drained(&gw.client, &gw.base, WAIT).await;
    let (status, _) = call(
        &gw.client,
        &gw.base,
        Method::DELETE,
        &format!("/sources/{SOURCE}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    // Later changes are not exported any more.
    patch(&gw, &id, &json!({"title": "Changed after disconnect"})).await;
    create(&gw, &slot(10, 14, 30, "After")).await;
    let requests = g.api_requests().len();
    // No delivery pass can run for the source any more (the deliverer runs only
    // what deliver accepts), and none ran.
    let app = gw.app();
    let tenant = &*app.tenant("salon").expect("salon");
    let refused = app.export.deliver(tenant, SOURCE, false).await;
    assert!(
        matches!(refused, Err(calgate::export::ExportError::UnknownSource(_))),
        "{refused:?}"
    );
    assert_eq!(g.api_requests().len(), requests);
    let events = google_events(&g, &id);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["summary"], "Kept (Colour)");

    // Purge.
    let (g, gw) = google(|_| {}).await;
    for h in [10, 11, 12] {
        create(&gw, &slot(11, h, 30, "Purged")).await;
    }
    until("three inserts", WAIT, || async {
        match g.live_events(&g.primary_id()).len() {
            3 => Ok(()),
            n => Err(format!("{n} events")),
        }
    })
    .await;
    drained(&gw.client, &gw.base, WAIT).await;
    let (status, body) = call(
        &gw.client,
        &gw.base,
        Method::DELETE,
        &format!("/sources/{SOURCE}?purge=true"),
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert!(g.live_events(&g.primary_id()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_create_move_cancel_and_import_loop() {
    let (m, gw) = graph(|s| s.direction = "both").await;
    let b = create(&gw, &slot(14, 10, 45, "Beard trim")).await;
    let id = b["id"].as_str().expect("id").to_owned();
    graph_count_when(&m, &id, "the Graph create", 1).await;
    let e = graph_events(&m, &id).remove(0);
    assert_eq!(e["subject"], "Beard trim (Colour)");
    assert_eq!(e["start"]["timeZone"], "Europe/Paris");
    assert!(
        e["start"]["dateTime"]
            .as_str()
            .is_some_and(|t| t.starts_with("2026-12-14T10:00:00")),
        "{e}"
    );
    assert_eq!(e["showAs"], "busy");
    assert_eq!(e["isReminderOn"], false);
    assert!(
        e["transactionId"]
            .as_str()
            .is_some_and(|t| t.starts_with("calgate-") && t.ends_with(&id)),
        "{e}"
    );
    assert!(
        e["body"]["content"]
            .as_str()
            .is_some_and(|c| c.contains("ana@example.com"))
    );
    let event_id = e["id"].as_str().expect("id").to_owned();

    // Import the same calendar: delta has no extended properties; the event is
    // recognised by its id / transactionId and not counted twice.
    import_now(&gw, "full").await;
    let range = "start=2026-12-14T00:00:00Z&end=2026-12-15T00:00:00Z";
    let fb = freebusy_detail(&gw, range).await;
    assert_eq!(fb["busy"].as_array().map(Vec::len), Some(1), "{fb}");
    assert_eq!(
        fb["busy"][0]["sources"].as_array().map(Vec::len),
        Some(1),
        "{fb}"
    );
    assert_eq!(fb["busy"][0]["sources"][0]["source"], "bookings", "{fb}");
    assert_eq!(source(&gw.client, &gw.base).await["events"], 1);

    patch(
        &gw,
        &id,
        &json!({"start": "2026-12-14T15:00:00+01:00", "end": "2026-12-14T15:45:00+01:00"}),
    )
    .await;
    until("the Graph update", WAIT, || async {
        let e = graph_events(&m, &id);
        match e.first().and_then(|e| e["start"]["dateTime"].as_str()) {
            Some(t) if t.starts_with("2026-12-14T15:00:00") && e.len() == 1 => Ok(()),
            _ => Err(format!("{e:?}")),
        }
    })
    .await;
    assert_eq!(graph_events(&m, &id)[0]["id"], json!(event_id));

    patch(&gw, &id, &json!({"status": "cancelled"})).await;
    graph_count_when(&m, &id, "the Graph delete", 0).await;
    // Throttled with a fractional Retry-After, then delivered.
    m.faults().push(Fault::status_retry_after(429, "0.3"));
    patch(&gw, &id, &json!({"status": "confirmed"})).await;
    graph_count_when(&m, &id, "the Graph re-create", 1).await;
    drained(&gw.client, &gw.base, WAIT).await;
    assert_eq!(m.live_events(DEFAULT_CALENDAR_ID).len(), 1);
}

/// Starts the real binary on `config`; (child, base URL).
fn spawn_gateway(config: &std::path::Path) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_file_name("server.log"))
        .expect("log file");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_calgate"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("calgate starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("listening line");
    let base = line
        .trim()
        .strip_prefix("calgate listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, base)
}

/// A gateway binary killed (SIGKILL) while the provider has stored a booking's
/// insert but not yet answered it; `processing` keeps the insert out of the
/// provider's listings (still being processed). (temp dir, config, booking id)
async fn kill_9_during_an_insert(
    g: &GoogleMock,
    processing: bool,
) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let setup = Setup::google(g);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, setup.config_text(&dir.path().join("data"))).expect("config");
    let client = export_support::client();

    let (mut child, base) = spawn_gateway(&config);
    connect(&client, &base, Provider::Google).await;
    // The provider creates events at once but answers only after 5 s.
    g.set_latency(Duration::from_secs(5));
    g.hold_inserts(processing);
    let (status, b) = call(
        &client,
        &base,
        Method::POST,
        "/bookings",
        Some(&slot(15, 10, 30, "Crash")),
    )
    .await;
    assert_eq!(status, 201, "{b}");
    let id = b["id"].as_str().expect("id").to_owned();
    until("the provider to hold the event", WAIT, || async {
        match google_events(g, &id).len() {
            1 => Ok(()),
            n => Err(format!("{n} events")),
        }
    })
    .await;
    // The insert succeeded remotely; its answer (the event id) is still on the way.
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    g.set_latency(Duration::ZERO);
    (dir, config, id)
}

/// Starts the binary again, lets it deliver, stops it: the booking as shown then.
async fn restart_until_drained(config: &std::path::Path, id: &str) -> Value {
    let client = export_support::client();
    let (mut child, base) = spawn_gateway(config);
    drained(&client, &base, WAIT).await;
    let (_, shown) = call(
        &client,
        &base,
        Method::GET,
        &format!("/bookings/{id}"),
        None,
    )
    .await;
    child.kill().expect("stop");
    child.wait().expect("reaped");
    shown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_the_provider_created_the_event_leaves_exactly_one() {
    let g = GoogleMock::start().await;
    let (_dir, config, id) = kill_9_during_an_insert(&g, false).await;
    let remote_id = google_events(&g, &id)[0]["id"].clone();
    g.clear_requests();

    let shown = restart_until_drained(&config, &id).await;
    let events = google_events(&g, &id);
    assert_eq!(events.len(), 1, "no second event: {events:?}");
    assert_eq!(g.live_events(&g.primary_id()).len(), 1);
    assert_eq!(shown["exports"][0]["event_id"], remote_id, "{shown}");
    assert_eq!(shown["exports"][0]["state"], "exported", "{shown}");
    let requests = g.api_requests();
    assert!(
        requests
            .iter()
            .any(|r| r.method == "GET" && r.query_param("privateExtendedProperty").is_some()),
        "recovered by marker lookup"
    );
    assert!(
        !requests.iter().any(|r| r.method == "POST"),
        "no second insert"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pointing_the_source_at_another_calendar_exports_there_afresh() {
    let (g, gw) = google(|_| {}).await;
    let team = "team#rota@group.calendar.google.com";
    g.add_calendar(team, "Team rota", "Europe/Paris", "owner");
    let b = create(&gw, &slot(16, 10, 30, "Moving house")).await;
    let id = b["id"].as_str().expect("id").to_owned();
    google_event_when(&g, &id, "the insert", |e| e.len() == 1).await;
    drained(&gw.client, &gw.base, WAIT).await;

    // What PATCH …/sources/{id} {"calendar": …} stores.
    let app = gw.app();
    let mut source = app
        .store
        .source("salon", SOURCE)
        .expect("store")
        .expect("source");
    if let Some(remote) = source.remote.as_mut() {
        remote.target = team.to_owned();
    }
    app.store.put_source("salon", &source).expect("stored");
    app.export.wake();

    until("the booking in the new calendar", WAIT, || async {
        match g
            .events_with_private_property(team, "gatewayBookingId", &marker(&id))
            .len()
        {
            1 => Ok(()),
            n => Err(format!("{n} events")),
        }
    })
    .await;
    // The old calendar keeps its event (as on a disconnect); later changes go to
    // the new calendar only.
    assert_eq!(google_events(&g, &id).len(), 1);
    patch(&gw, &id, &json!({"title": "Moved"})).await;
    until("the edit in the new calendar", WAIT, || async {
        let e = g.events_with_private_property(team, "gatewayBookingId", &marker(&id));
        match e.first().map(|e| e["summary"].clone()) {
            Some(s) if s == "Moved (Colour)" && e.len() == 1 => Ok(()),
            _ => Err(format!("{e:?}")),
        }
    })
    .await;
    assert_eq!(
        google_events(&g, &id)[0]["summary"],
        "Moving house (Colour)"
    );
}

/// Bookings written by a CalDAV client are exported like API ones: the PUT that
/// creates, the PUT that moves, the DELETE that removes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_written_over_caldav_are_exported() {
    let (g, gw) = google(|_| {}).await;
    let href = format!("{}/dav/calendars/salon/bookings/from-phone.ics", gw.base);
    let event = |start: &str, end: &str| {
        format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nBEGIN:VEVENT\r\nUID:from-phone-1\r\nDTSTAMP:20261101T000000Z\r\nDTSTART;TZID=Europe/Paris:{start}\r\nDTEND;TZID=Europe/Paris:{end}\r\nSUMMARY:Beard trim\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        )
    };
    let put = |body: String| {
        gw.client
            .put(&href)
            .basic_auth("ana", Some("secret"))
            .header("content-type", "text/calendar; charset=utf-8")
            .body(body)
            .send()
    };
    let created = put(event("20261203T100000", "20261203T103000"))
        .await
        .expect("PUT sent");
    assert_eq!(created.status(), 201);
    let events = google_event_when(&g, "from-phone", "the insert", |e| e.len() == 1).await;
    assert_eq!(events[0]["start"]["dateTime"], "2026-12-03T10:00:00+01:00");
    assert_eq!(events[0]["summary"], "Beard trim");
    let event_id = events[0]["id"].clone();

    let moved = put(event("20261203T160000", "20261203T163000"))
        .await
        .expect("PUT sent");
    assert_eq!(moved.status(), 204);
    let events = google_event_when(&g, "from-phone", "the move", |e| {
        e.len() == 1 && e[0]["start"]["dateTime"] == "2026-12-03T16:00:00+01:00"
    })
    .await;
    assert_eq!(events[0]["id"], event_id, "patched, not re-created");

    let deleted = gw
        .client
        .delete(&href)
        .basic_auth("ana", Some("secret"))
        .send()
        .await
        .expect("DELETE sent");
    assert_eq!(deleted.status(), 204);
    google_event_when(&g, "from-phone", "the deletion", |e| e.is_empty()).await;
    drained(&gw.client, &gw.base, WAIT).await;
    assert!(g.live_events(&g.primary_id()).is_empty());
}

/// The POSTs that reached the mock's events collection (inserts).
fn inserts(g: &GoogleMock) -> usize {
    g.api_requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
        .count()
}

/// The provider stores an insert but the answer is lost, and it is still
/// processing it when the gateway looks (not listed yet): the repeated insert
/// carries the same client-chosen id, is refused as a duplicate and taken as
/// success — one event, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_whose_answer_was_lost_is_not_made_twice() {
    let (g, gw) = google(|_| {}).await;
    g.hold_inserts(true);
    g.faults().push(Fault::AnswerLost);
    let b = create(&gw, &slot(17, 10, 30, "Lost answer")).await;
    let id = b["id"].as_str().expect("id").to_owned();
    google_event_when(&g, &id, "the provider to store the insert", |e| {
        e.len() == 1
    })
    .await;
    until("the insert to be repeated", WAIT, || async {
        match inserts(&g) {
            n if n >= 2 => Ok(()),
            n => Err(format!("{n} inserts")),
        }
    })
    .await;
    drained(&gw.client, &gw.base, WAIT).await;
    g.release_held_inserts();

    let events = google_events(&g, &id);
    assert_eq!(events.len(), 1, "no second event: {events:?}");
    assert_eq!(g.live_events(&g.primary_id()).len(), 1);
    let shown = booking(&gw, &id).await;
    assert_eq!(shown["exports"][0]["state"], "exported", "{shown}");
    assert_eq!(shown["exports"][0]["event_id"], events[0]["id"], "{shown}");
    assert_eq!(events[0]["summary"], "Lost answer (Colour)");
}

/// An insert whose answer was lost lands only after the booking was cancelled
/// and confirmed again (so exported anew as another event): when the import
/// sees that stray copy of ours, it deletes it. (A copy a person makes keeps
/// blocking time: see both_directions_count_our_events_once_and_report_external_moves.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_insert_of_ours_is_deleted_when_imported() {
    let (g, gw) = google(|s| s.direction = "both").await;
    until("the first import", WAIT, || async {
        let s = source(&gw.client, &gw.base).await;
        match s["status"]["last_success"].is_null() {
            false => Ok(()),
            true => Err(s.to_string()),
        }
    })
    .await;
    // The next insert is stored at once, answered (with a lost answer) only
    // after 2 s, and not listed until released.
    g.hold_inserts(true);
    g.set_latency(Duration::from_secs(2));
    g.faults().push(Fault::AnswerLost);
    let b = create(&gw, &slot(18, 10, 30, "Stray")).await;
    let id = b["id"].as_str().expect("id").to_owned();
    let first = google_event_when(&g, &id, "the insert to be stored", |e| e.len() == 1).await;
    let stray_id = first[0]["id"].clone();
    // Cancelled while the insert is under way: nothing to delete is found.
    patch(&gw, &id, &json!({"status": "cancelled"})).await;
    g.set_latency(Duration::ZERO);
    // Done once the outbox is empty (the create stays pending until then).
    drained(&gw.client, &gw.base, Duration::from_secs(20)).await;
    assert_eq!(booking(&gw, &id).await["exports"][0]["state"], "removed");
    g.hold_inserts(false);
    patch(&gw, &id, &json!({"status": "confirmed"})).await;
    google_event_when(&g, &id, "the new export", |e| e.len() == 2).await;
    drained(&gw.client, &gw.base, WAIT).await;
    let exported = booking(&gw, &id).await["exports"][0]["event_id"].clone();
    assert_ne!(exported, stray_id, "exported anew");

    // The lost insert finishes; the import sees two events with the marker.
    g.release_held_inserts();
    import_now(&gw, "incremental").await;
    let events = google_event_when(&g, &id, "the stray to be deleted", |e| e.len() == 1).await;
    assert_eq!(events[0]["id"], exported, "{events:?}");
    assert_eq!(g.live_events(&g.primary_id()).len(), 1);
    // Counted once, as the booking.
    import_now(&gw, "incremental").await;
    let fb = freebusy_detail(&gw, "start=2026-12-18T00:00:00Z&end=2026-12-19T00:00:00Z").await;
    let busy = fb["busy"].as_array().expect("busy");
    assert_eq!(busy.len(), 1, "{fb}");
    assert_eq!(busy[0]["sources"][0]["source"], "bookings", "{fb}");
    assert_eq!(busy[0]["sources"].as_array().map(Vec::len), Some(1), "{fb}");
}

/// The gateway restarts while the provider is still processing an insert whose
/// answer was lost: the marker lookup finds nothing yet, so the insert is
/// repeated — with the same event id, which the provider refuses as a
/// duplicate. One event, exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_the_provider_still_processes_the_insert_leaves_exactly_one() {
    let g = GoogleMock::start().await;
    let (_dir, config, id) = kill_9_during_an_insert(&g, true).await;
    let shown = restart_until_drained(&config, &id).await;
    g.release_held_inserts();
    let events = google_events(&g, &id);
    assert_eq!(events.len(), 1, "no second event: {events:?}");
    assert_eq!(g.live_events(&g.primary_id()).len(), 1);
    assert_eq!(inserts(&g), 2, "the insert was repeated");
    assert_eq!(shown["exports"][0]["state"], "exported", "{shown}");
    assert_eq!(shown["exports"][0]["event_id"], events[0]["id"], "{shown}");
}

/// Graph: an event carrying our `transactionId` for a booking that is exported
/// as another event is a late insert of ours (an earlier generation, whose
/// answer was lost): the import deletes it, and the booking counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_a_stray_insert_of_ours_is_deleted_when_imported() {
    let (m, gw) = graph(|s| s.direction = "both").await;
    let b = create(&gw, &slot(19, 10, 30, "Stray")).await;
    let id = b["id"].as_str().expect("id").to_owned();
    graph_count_when(&m, &id, "the Graph insert", 1).await;
    drained(&gw.client, &gw.base, WAIT).await;
    let exported = booking(&gw, &id).await["exports"][0]["event_id"].clone();
    let exported_id = exported.as_str().expect("event id");

    // What the provider made of an earlier create of this booking.
    let mut stray = m
        .event(DEFAULT_CALENDAR_ID, exported_id)
        .expect("our event");
    for field in ["id", "iCalUId", "@odata.etag", "changeKey"] {
        stray[field] = Value::Null;
    }
    stray["transactionId"] = json!(calgate::providers::microsoft::export::transaction_id(
        "salon", SOURCE, &id, 7
    ));
    let stray_id = m.put_event(DEFAULT_CALENDAR_ID, stray);
    assert_ne!(stray_id, exported_id);

    import_now(&gw, "full").await;
    until("the stray to be deleted", WAIT, || async {
        let ids: Vec<Value> = graph_events(&m, &id)
            .iter()
            .map(|e| e["id"].clone())
            .collect();
        if ids == [exported.clone()] {
            Ok(())
        } else {
            Err(format!("{ids:?}"))
        }
    })
    .await;
    import_now(&gw, "full").await;
    let fb = freebusy_detail(&gw, "start=2026-12-19T00:00:00Z&end=2026-12-20T00:00:00Z").await;
    let busy = fb["busy"].as_array().expect("busy");
    assert_eq!(busy.len(), 1, "{fb}");
    assert_eq!(busy[0]["sources"].as_array().map(Vec::len), Some(1), "{fb}");
    assert_eq!(busy[0]["sources"][0]["source"], "bookings", "{fb}");
}

const OPERATOR_KEY: &str = "operator-key-export-0123";

/// A gateway as `setup` declares the salon, with the operator key as well.
async fn with_operator(setup: &Setup) -> Gw {
    let hash = calgate::auth::hash_secret(OPERATOR_KEY).expect("hashing works");
    Gw::start_with(|data| {
        format!(
            "{}\n[admin]\nkey_hash = \"{hash}\"\n",
            setup.config_text(data)
        )
    })
    .await
}

/// `/api/v1/tenants{path}` with the operator key: (status, JSON or null).
async fn as_operator(gw: &Gw, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = gw
        .client
        .request(method, format!("{}/api/v1/tenants{path}", gw.base))
        .bearer_auth(OPERATOR_KEY);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

/// Provisions tenant `bakery` with an unconnected Google source `owner`
/// exporting to the mock's primary calendar.
async fn bakery_exporting_to(g: &GoogleMock, gw: &Gw) {
    let (status, body) = as_operator(
        gw,
        Method::PUT,
        "/bakery",
        Some(json!({"name": "Bakery", "timezone": "Europe/Paris"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = as_operator(
        gw,
        Method::POST,
        "/bakery/sources",
        Some(json!({"id": "owner", "kind": "google", "calendar": g.primary_id(), "direction": "export"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

/// A person connecting a calendar spends a while at the provider; a tenant
/// deleted meanwhile gets nothing written back when they return.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_finished_after_its_tenant_was_deleted_stores_nothing() {
    let g = GoogleMock::start().await;
    let gw = with_operator(&Setup::google(&g)).await;
    bakery_exporting_to(&g, &gw).await;
    let callback = export_support::authorize(
        &gw.client,
        &gw.base,
        Provider::Google,
        ("bakery", OPERATOR_KEY),
        "owner",
    )
    .await;
    assert_eq!(
        as_operator(&gw, Method::DELETE, "/bakery", None).await.0,
        204
    );
    let back = gw.client.get(callback).send().await.expect("callback");
    assert_eq!(back.status(), 404);
    let text = back.text().await.unwrap_or_default();
    assert!(text.contains("tenant \\\"bakery\\\" was deleted"), "{text}");
    let store = &gw.app().store;
    assert_eq!(
        store.secret("bakery", "owner").expect("read"),
        None,
        "no tokens"
    );
    assert!(
        !store
            .sync_status("bakery", "owner")
            .expect("read")
            .connected
    );
    // The same id created again starts unconnected.
    bakery_exporting_to(&g, &gw).await;
    let (status, shown) = as_operator(&gw, Method::GET, "/bakery/sources/owner", None).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["status"]["connected"], false, "{shown}");
}

/// A provisioned tenant's DELETE with `?purge_exports=true` removes the events
/// it exported before its data, and while it waits on a slow provider, other
/// tenants are provisioned: it holds up only its own tenant.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_delete_purges_its_exports_without_holding_up_other_tenants() {
    let g = GoogleMock::start().await;
    let gw = with_operator(&Setup::google(&g)).await;
    bakery_exporting_to(&g, &gw).await;
    export_support::connect_tenant_source(
        &gw.client,
        &gw.base,
        Provider::Google,
        ("bakery", OPERATOR_KEY),
        "owner",
    )
    .await;
    for day in [14, 15] {
        let (status, body) = as_operator(
            &gw,
            Method::POST,
            "/bakery/bookings",
            Some(slot(day, 9, 30, "Bread class")),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    export_support::until(
        "both bookings exported",
        Duration::from_secs(20),
        || async {
            match g.live_events(&g.primary_id()).len() {
                2 => Ok(()),
                n => Err(format!("{n} events")),
            }
        },
    )
    .await;

    // Each removal now takes 1.5 s at the provider.
    g.clear_requests();
    g.set_latency(Duration::from_millis(1500));
    let deleting = tokio::spawn(
        gw.client
            .delete(format!(
                "{}/api/v1/tenants/bakery?purge_exports=true",
                gw.base
            ))
            .bearer_auth(OPERATOR_KEY)
            .send(),
    );
    export_support::until(
        "the purge to reach Google",
        Duration::from_secs(20),
        || async {
            if g.requests().iter().any(|r| r.method == "DELETE") {
                Ok(())
            } else {
                Err("no DELETE yet".into())
            }
        },
    )
    .await;
    let (status, body) = as_operator(
        &gw,
        Method::PUT,
        "/garden",
        Some(json!({"name": "Garden", "timezone": "Europe/Paris"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        !deleting.is_finished(),
        "another tenant was provisioned only after the purge ended"
    );
    let deleted = deleting.await.expect("delete ran").expect("answered");
    assert_eq!(deleted.status(), 204);
    assert!(
        g.live_events(&g.primary_id()).is_empty(),
        "exported events purged"
    );
    assert_eq!(as_operator(&gw, Method::GET, "/bakery", None).await.0, 404);
}
