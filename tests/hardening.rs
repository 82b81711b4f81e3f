//! Hostile calendar data (issue 13): objects whose recurrence would cost minutes
//! of CPU or gigabytes of memory are refused with a CalDAV precondition, skipped
//! on import with their name in the sync log, and capped when already stored;
//! and none of it holds up another tenant's requests.

mod common;
use calgate_test_mocks as providers;

use std::time::{Duration, Instant};

use calgate::ical::expand::MAX_INSTANCES;
use common::{Extra, GARAGE_KEY, SALON_KEY, TestServer};
use providers::ics::IcsMock;
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn calendar(events: &str) -> String {
    format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Hostile//EN\r\n{events}END:VCALENDAR\r\n")
}

/// The probe's object: one minute every minute (or second) since 1900.
fn every(freq: &str, uid: &str) -> String {
    calendar(&format!(
        "BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261201T000000Z\r\nDTSTART:19000101T000000Z\r\nDTEND:19000101T000100Z\r\nRRULE:FREQ={freq}\r\nEND:VEVENT\r\n"
    ))
}

fn many_rules(lines: usize) -> String {
    let mut event = String::from(
        "BEGIN:VEVENT\r\nUID:many\r\nDTSTAMP:20261201T000000Z\r\nDTSTART:20261201T000000Z\r\nDURATION:PT1M\r\n",
    );
    for n in 0..lines {
        event.push_str(&format!("RRULE:FREQ=MINUTELY;BYSECOND={}\r\n", n % 60));
    }
    event.push_str("END:VEVENT\r\n");
    calendar(&event)
}

async fn dav(s: &TestServer, method: &str, path: &str, body: &str) -> (StatusCode, String) {
    let resp = s
        .client
        .request(
            Method::from_bytes(method.as_bytes()).expect("method"),
            s.url(path),
        )
        .basic_auth("ana", Some("secret"))
        .header("content-type", "text/calendar; charset=utf-8")
        .body(body.to_owned())
        .send()
        .await
        .expect("request sent");
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

async fn staff_calendar(s: &TestServer) {
    let (status, body) = dav(s, "MKCALENDAR", "/dav/calendars/salon/staff/", "").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_fine_grained_rules_are_refused_with_max_instances() {
    let s = TestServer::start().await;
    staff_calendar(&s).await;
    for freq in ["MINUTELY", "SECONDLY"] {
        let path = format!("/dav/calendars/salon/staff/{freq}.ics");
        let (status, body) = dav(&s, "PUT", &path, &every(freq, freq)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{freq}: {body}");
        assert!(body.contains("max-instances"), "{body}");
        assert!(body.contains(&MAX_INSTANCES.to_string()), "{body}");
        let (status, _) = dav(&s, "GET", &path, "").await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "a refused object is not stored"
        );
    }
    // The limit is announced on the calendar (RFC 4791 §5.2.8).
    let (status, body) = dav(
        &s,
        "PROPFIND",
        "/dav/calendars/salon/staff/",
        "<d:propfind xmlns:d=\"DAV:\" xmlns:c=\"urn:ietf:params:xml:ns:caldav\"><d:prop><c:max-instances/></d:prop></d:propfind>",
    )
    .await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{body}");
    assert!(
        body.contains(&format!("max-instances>{MAX_INSTANCES}<")),
        "{body}"
    );
    // A daily rule since 1900 is fine: it is expanded from the window, not 1900.
    let daily = every("DAILY", "daily");
    let (status, body) = dav(&s, "PUT", "/dav/calendars/salon/staff/daily.ics", &daily).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_with_a_thousand_rrule_lines_is_refused() {
    let s = TestServer::start().await;
    staff_calendar(&s).await;
    let (status, body) = dav(
        &s,
        "PUT",
        "/dav/calendars/salon/staff/many.ics",
        &many_rules(1000),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("valid-calendar-object-resource"), "{body}");
    assert!(body.contains("1000 RRULE lines"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_durations_and_missing_starts_get_valid_calendar_data() {
    let s = TestServer::start().await;
    staff_calendar(&s).await;
    for duration in ["P999999999999999999W", "PT9999999999999999H", "P200000000D"] {
        let ics = calendar(&format!(
            "BEGIN:VEVENT\r\nUID:long\r\nDTSTAMP:20261201T000000Z\r\nDTSTART:20270301T090000Z\r\nDURATION:{duration}\r\nEND:VEVENT\r\n"
        ));
        let (status, body) = dav(&s, "PUT", "/dav/calendars/salon/staff/long.ics", &ics).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{duration}: {body}");
        assert!(
            body.contains("valid-calendar-data") && body.contains(duration),
            "{body}"
        );
    }
    let ics = calendar(
        "BEGIN:VEVENT\r\nUID:nostart\r\nDTSTAMP:20261201T000000Z\r\nDTEND:20270301T090000Z\r\nEND:VEVENT\r\n",
    );
    let (status, body) = dav(&s, "PUT", "/dav/calendars/salon/staff/nostart.ics", &ics).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("no DTSTART"), "{body}");
}

/// While one tenant's CalDAV user keeps sending hostile objects, another tenant's
/// requests are answered at once: expansion is bounded and runs off the async
/// workers.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_puts_do_not_hold_up_another_tenant() {
    let s = TestServer::start().await;
    staff_calendar(&s).await;
    let url = format!(
        "{}?start=2026-12-01T00:00:00Z&end=2026-12-08T00:00:00Z",
        s.bookings_url("garage")
    );
    // Both credentials verified once (argon2 is slow on purpose, then memoised).
    let resp = s.client.get(&url).bearer_auth(GARAGE_KEY).send().await;
    assert_eq!(resp.expect("sent").status(), StatusCode::OK);
    let (status, _) = dav(
        &s,
        "PUT",
        "/dav/calendars/salon/staff/warm.ics",
        &every("SECONDLY", "w"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    for n in 0..2 {
        let client = s.client.clone();
        let url = s.url(&format!("/dav/calendars/salon/staff/h{n}.ics"));
        let done = done.clone();
        attackers.push(tokio::spawn(async move {
            let bodies = [every("SECONDLY", "s"), many_rules(1_000)];
            let mut sent = 0;
            // Bounded: the other tenant's 100 requests end it long before.
            while !done.load(std::sync::atomic::Ordering::Relaxed) && sent < 500 {
                let resp = client
                    .put(&url)
                    .basic_auth("ana", Some("secret"))
                    .header("content-type", "text/calendar")
                    .body(bodies[sent % 2].clone())
                    .send()
                    .await
                    .expect("hostile PUT sent");
                assert_eq!(resp.status(), StatusCode::FORBIDDEN);
                sent += 1;
            }
            sent
        }));
    }
    let mut slowest = Duration::ZERO;
    for _ in 0..100 {
        let clock = Instant::now();
        let resp = s
            .client
            .get(&url)
            .bearer_auth(GARAGE_KEY)
            .send()
            .await
            .expect("request sent");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.bytes().await.expect("body read");
        slowest = slowest.max(clock.elapsed());
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut hostile = 0;
    for a in attackers {
        hostile += a.await.expect("attacker finished");
    }
    assert!(hostile > 0, "the hostile PUTs ran alongside");
    eprintln!("slowest of 100 requests: {slowest:?}, with {hostile} hostile PUTs alongside");
    assert!(
        slowest < Duration::from_millis(100),
        "the other tenant waited {slowest:?} while {hostile} hostile PUTs ran"
    );
}

/// Objects stored before the limits existed (written here straight into the
/// store, as an older version would have) do not slow the start, and are indexed
/// within their budget.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_with_hostile_objects_stored_is_quick_and_capped() {
    let s = TestServer::start().await;
    staff_calendar(&s).await;
    let ids = ["m1", "m2", "s1", "s2"];
    {
        let app = s.app();
        for id in ids {
            let freq = if id.starts_with('m') {
                "MINUTELY"
            } else {
                "SECONDLY"
            };
            let object = calgate::model::CalendarObject {
                id: format!("{id}.ics"),
                uid: Some(id.to_owned()),
                ics: every(freq, id),
                etag: format!("\"{id}\""),
                updated: chrono::Utc::now(),
                recurring: true,
                diagnostics: Vec::new(),
                occurrences: Vec::new(),
            };
            app.store
                .put_object(
                    "salon",
                    "staff",
                    &object,
                    &calgate::store::Precondition::None,
                    calgate::store::ObjectWrite::Change,
                )
                .await
                .expect("stored as an older version would have");
        }
    }
    let clock = Instant::now();
    let s = s.restart().await;
    // Wait (with a deadline) until the start-up re-expansion has indexed them all.
    loop {
        let indexed = ids.iter().all(|id| {
            s.app()
                .store
                .object("salon", "staff", &format!("{id}.ics"))
                .ok()
                .flatten()
                .is_some_and(|o| !o.occurrences.is_empty())
        });
        if indexed {
            break;
        }
        assert!(
            clock.elapsed() < Duration::from_secs(2),
            "the stored objects were not re-expanded within 2 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = clock.elapsed();
    for id in ids {
        let object = s
            .app()
            .store
            .object("salon", "staff", &format!("{id}.ics"))
            .expect("store readable")
            .expect("still stored");
        assert_eq!(object.occurrences.len(), MAX_INSTANCES, "{id}");
        assert!(
            object
                .diagnostics
                .iter()
                .any(|d| d.contains("only the first occurrences are indexed")),
            "{:?}",
            object.diagnostics
        );
    }
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    // And the gateway answers meanwhile.
    let (status, _, _) = s
        .get(&format!(
            "{}?start=2026-12-01T00:00:00Z&end=2026-12-08T00:00:00Z",
            s.bookings_url("salon")
        ))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_over_budget_event_in_a_feed_is_skipped_and_named_in_the_sync_log() {
    let feed = IcsMock::start().await;
    let body = calendar(
        "BEGIN:VEVENT\r\nUID:fine\r\nDTSTAMP:20261201T000000Z\r\nDTSTART:20300506T090000Z\r\nDTEND:20300506T100000Z\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:every-minute\r\nDTSTAMP:20261201T000000Z\r\nDTSTART:19000101T000000Z\r\nDTEND:19000101T000100Z\r\nRRULE:FREQ=MINUTELY\r\nEND:VEVENT\r\n",
    );
    feed.set_feed("/team.ics", body);
    let s = TestServer::start_with_extra(Extra {
        server: "fetch_allow = [\"127.0.0.1/32\"]".into(),
        salon: format!(
            "[[tenant.source]]\nid = \"team\"\nname = \"Team\"\nkind = \"ics\"\nurl = \"{}\"\nenabled = false\n",
            feed.url("/team.ics")
        ),
    })
    .await;
    let resp = s
        .client
        .post(s.url("/api/v1/tenants/salon/sources/team/sync?mode=full"))
        .bearer_auth(SALON_KEY)
        .send()
        .await
        .expect("request sent");
    assert_eq!(resp.status(), StatusCode::OK);
    let log: Value = resp.json().await.expect("log JSON");
    assert_eq!(log["created"], 1, "{log}");
    assert_eq!(log["skipped_total"], 1, "{log}");
    assert_eq!(log["skipped"][0]["series"], "every-minute", "{log}");
    let reason = log["skipped"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("occurrences"), "{reason}");
    // The run's log keeps it.
    let (status, logs, _) = s.get("/api/v1/tenants/salon/sources/team/logs").await;
    assert_eq!(status, 200);
    assert!(logs.to_string().contains("every-minute"), "{logs}");
}
