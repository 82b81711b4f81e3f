//! Free/busy, availability and conflict detection through the router in
//! process, with calendar sources (recurring events in real zones) next to
//! bookings.

mod common;

use common::{SALON_KEY, TestGateway, booking, split};
use serde_json::{Value, json};

/// A weekly Monday 09:00-10:00 Paris meeting from 2026-11-30 on, one week
/// moved to Tuesday, one week excluded; and an OOF day.
const STAFF_CALENDAR: &str = "BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//Test//EN\r
BEGIN:VTIMEZONE\r
TZID:W. Europe Standard Time\r
BEGIN:STANDARD\r
DTSTART:16010101T030000\r
TZOFFSETFROM:+0200\r
TZOFFSETTO:+0100\r
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10\r
END:STANDARD\r
BEGIN:DAYLIGHT\r
DTSTART:16010101T020000\r
TZOFFSETFROM:+0100\r
TZOFFSETTO:+0200\r
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3\r
END:DAYLIGHT\r
END:VTIMEZONE\r
BEGIN:VEVENT\r
UID:team-weekly\r
DTSTART;TZID=W. Europe Standard Time:20261130T090000\r
DTEND;TZID=W. Europe Standard Time:20261130T100000\r
RRULE:FREQ=WEEKLY;BYDAY=MO\r
EXDATE;TZID=W. Europe Standard Time:20261214T090000\r
SUMMARY:Team meeting\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:team-weekly\r
RECURRENCE-ID;TZID=W. Europe Standard Time:20261207T090000\r
DTSTART;TZID=W. Europe Standard Time:20261208T140000\r
DTEND;TZID=W. Europe Standard Time:20261208T150000\r
SUMMARY:Team meeting (moved)\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:oof\r
DTSTART;VALUE=DATE:20261218\r
DTEND;VALUE=DATE:20261219\r
X-MICROSOFT-CDO-BUSYSTATUS:OOF\r
SUMMARY:Training\r
END:VEVENT\r
END:VCALENDAR\r
";

async fn freebusy(s: &TestGateway, query: &str) -> (u16, Value) {
    let url = format!("/api/v1/tenants/salon/freebusy?{query}");
    let (status, body, _) = s.get(&url).await;
    (status, body)
}

fn blocks(body: &Value) -> Vec<(String, String, String)> {
    body["busy"]
        .as_array()
        .unwrap_or_else(|| panic!("no busy array: {body}"))
        .iter()
        .map(|b| {
            (
                b["start"].as_str().unwrap().to_owned(),
                b["end"].as_str().unwrap().to_owned(),
                b["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn seeded() -> TestGateway {
    let s = TestGateway::start().await;
    s.add_source("staff-ana", false);
    let object = s.put_ics("staff-ana", "team.ics", STAFF_CALENDAR).await;
    assert!(object.recurring);
    assert!(object.diagnostics.is_empty(), "{:?}", object.diagnostics);
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn merges_bookings_and_recurring_calendar_events() {
    let s = seeded().await;
    // Overlaps the 2026-11-30 meeting's end: merged into one block.
    let mut b = booking("2026-11-30", "09:30", "11:00", "Cut");
    b["allow_conflict"] = json!(true);
    assert_eq!(s.create(&b).await.0, 201);
    let mut t = booking("2026-12-01", "15:00", "16:00", "Maybe");
    t["status"] = json!("tentative");
    assert_eq!(s.create(&t).await.0, 201);
    let mut c = booking("2026-12-02", "15:00", "16:00", "Called off");
    c["status"] = json!("cancelled");
    assert_eq!(s.create(&c).await.0, 201);

    let (status, body) = freebusy(&s, "start=2026-11-30T00:00:00Z&end=2026-12-22T00:00:00Z").await;
    assert_eq!(status, 200, "{body}");
    let got = blocks(&body);
    let expected = [
        ("2026-11-30T08:00:00Z", "2026-11-30T10:00:00Z", "busy"),
        ("2026-12-01T14:00:00Z", "2026-12-01T15:00:00Z", "tentative"),
        // 12-07 moved to 12-08 14:00; 12-14 excluded; OOF all day on 12-18 (Paris).
        ("2026-12-08T13:00:00Z", "2026-12-08T14:00:00Z", "busy"),
        ("2026-12-17T23:00:00Z", "2026-12-18T23:00:00Z", "oof"),
        ("2026-12-21T08:00:00Z", "2026-12-21T09:00:00Z", "busy"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(got, expected);

    // Only the calendar source; with contributors.
    let (_, body) = freebusy(
        &s,
        "start=2026-11-30T00:00:00Z&end=2026-12-01T00:00:00Z&sources=staff-ana&detail=true",
    )
    .await;
    assert_eq!(
        body["busy"],
        json!([{"start": "2026-11-30T08:00:00Z", "end": "2026-11-30T09:00:00Z", "kind": "busy",
                "sources": [{"source": "staff-ana", "id": "team.ics"}]}])
    );
    // Only the calendar source, without contributors (the allocation-free path).
    let (_, body) = freebusy(
        &s,
        "start=2026-11-30T00:00:00Z&end=2026-12-01T00:00:00Z&sources=staff-ana",
    )
    .await;
    assert_eq!(
        blocks(&body),
        [(
            "2026-11-30T08:00:00Z".to_owned(),
            "2026-11-30T09:00:00Z".to_owned(),
            "busy".to_owned()
        )]
    );
    // Only bookings.
    let (_, body) = freebusy(
        &s,
        "start=2026-11-30T00:00:00Z&end=2026-12-01T00:00:00Z&sources=bookings",
    )
    .await;
    assert_eq!(blocks(&body).len(), 1);
    assert_eq!(body["busy"][0]["start"], "2026-11-30T08:30:00Z");

    // Blocks are clipped to the window.
    let (_, body) = freebusy(&s, "start=2026-11-30T08:15:00Z&end=2026-11-30T08:45:00Z").await;
    assert_eq!(
        blocks(&body),
        [(
            "2026-11-30T08:15:00Z".to_owned(),
            "2026-11-30T08:45:00Z".to_owned(),
            "busy".to_owned()
        )]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transparent_sources_do_not_block() {
    let s = TestGateway::start().await;
    s.add_source("holidays", true);
    let object = s.put_ics("holidays", "h.ics", STAFF_CALENDAR).await;
    // Indexed (CalDAV time-range queries see them), but blocking nothing.
    assert!(!object.occurrences.is_empty());
    assert!(
        object
            .occurrences
            .iter()
            .all(|o| o.kind == calgate::model::BusyKind::Free)
    );
    let (_, body) = freebusy(&s, "start=2026-11-30T00:00:00Z&end=2026-12-31T00:00:00Z").await;
    assert_eq!(body["busy"], json!([]));
    assert_eq!(
        s.create(&booking("2026-11-30", "09:00", "10:00", "Fine"))
            .await
            .0,
        201
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn freebusy_rejects_bad_queries_precisely() {
    let s = seeded().await;
    for (query, field) in [
        ("start=2026-12-01T00:00:00Z", "end"),
        ("start=2026-12-02T00:00:00Z&end=2026-12-01T00:00:00Z", "end"),
        ("start=soon&end=2026-12-01T00:00:00Z", "start"),
        ("start=2026-01-01T00:00:00Z&end=2027-06-01T00:00:00Z", "end"),
        (
            "start=2026-12-01T00:00:00Z&end=2026-12-02T00:00:00Z&sources=staff-ana,nope",
            "sources",
        ),
        // Beyond the materialised horizon (the test config: 3650 days ahead).
        (
            "start=2045-01-01T00:00:00Z&end=2045-01-02T00:00:00Z",
            "start",
        ),
    ] {
        let (status, body) = freebusy(&s, query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["invalid_params"][0]["name"], field, "{query}: {body}");
    }
    let (_, body) = freebusy(
        &s,
        "start=2026-12-01T00:00:00Z&end=2026-12-02T00:00:00Z&sources=nope",
    )
    .await;
    assert!(
        body["invalid_params"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("\"nope\"")
    );
    // Bookings alone have no horizon.
    let (status, _) = freebusy(
        &s,
        "start=2045-01-01T00:00:00Z&end=2045-01-02T00:00:00Z&sources=bookings",
    )
    .await;
    assert_eq!(status, 200);
    // Auth as everywhere.
    let resp = s
        .client
        .get(s.url(
            "/api/v1/tenants/salon/freebusy?start=2026-12-01T00:00:00Z&end=2026-12-02T00:00:00Z",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn availability_answers_each_slot() {
    let s = seeded().await;
    let resp = s
        .client
        .post(s.url("/api/v1/tenants/salon/availability"))
        .bearer_auth(SALON_KEY)
        .json(&json!({"slots": [
            {"start": "2026-12-21T09:30:00+01:00", "end": "2026-12-21T10:30:00+01:00"},
            {"start": "2026-12-21T10:00:00+01:00", "end": "2026-12-21T11:00:00+01:00"},
        ]}))
        .send()
        .await
        .unwrap();
    let (status, body, _) = split(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["slots"][0]["free"], false);
    assert_eq!(
        body["slots"][0]["conflicts"],
        json!([{"start": "2026-12-21T08:00:00Z", "end": "2026-12-21T09:00:00Z", "kind": "busy",
                "source": "staff-ana", "id": "team.ics"}])
    );
    // Touching the meeting's end is free.
    assert_eq!(body["slots"][1]["free"], true);
    assert_eq!(body["slots"][1]["conflicts"], json!([]));

    for (bad, field) in [
        (json!({}), "slots"),
        (json!({"slots": []}), "slots"),
        (
            json!({"slots": [{"start": "2026-12-21T10:00:00Z"}]}),
            "slots[0]",
        ),
        (
            json!({"slots": [{"start": "2026-12-21T10:00:00Z", "end": "2026-12-21T09:00:00Z"}]}),
            "slots[0].end",
        ),
        (
            json!({"slots": [{"start": "2026-12-21T10:00:00Z", "end": "2026-12-21T11:00:00Z"}], "when": 1}),
            "when",
        ),
    ] {
        let resp = s
            .client
            .post(s.url("/api/v1/tenants/salon/availability"))
            .bearer_auth(SALON_KEY)
            .json(&bad)
            .send()
            .await
            .unwrap();
        let (status, body, _) = split(resp).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["invalid_params"][0]["name"], field, "{bad}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bookings_on_busy_time_are_refused_with_the_conflicts() {
    let s = seeded().await;
    // Onto the recurring meeting (third Monday occurrence).
    let (status, body, _) = s
        .create(&booking("2026-12-21", "09:30", "10:30", "Clash"))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["type"], "urn:calgate:problem:booking-conflict");
    assert_eq!(body["conflicts"][0]["source"], "staff-ana");
    assert_eq!(body["conflicts"][0]["start"], "2026-12-21T08:00:00Z");
    // The excluded week is free.
    assert_eq!(
        s.create(&booking("2026-12-14", "09:00", "10:00", "Free week"))
            .await
            .0,
        201
    );
    // Onto another booking.
    let (_, first, _) = s
        .create(&booking("2026-12-22", "10:00", "11:00", "First"))
        .await;
    let (status, body, _) = s
        .create(&booking("2026-12-22", "10:30", "11:30", "Second"))
        .await;
    assert_eq!(status, 409);
    assert_eq!(body["conflicts"][0]["source"], "bookings");
    assert_eq!(body["conflicts"][0]["id"], first["id"]);
    // Knowingly.
    let mut forced = booking("2026-12-22", "10:30", "11:30", "Second");
    forced["allow_conflict"] = json!(true);
    let (status, second, _) = s.create(&forced).await;
    assert_eq!(status, 201);
    // Editing a note on a double-booked booking is not a move: allowed.
    let item = s.url(&format!(
        "/api/v1/tenants/salon/bookings/{}",
        second["id"].as_str().unwrap()
    ));
    let resp = s
        .client
        .patch(&item)
        .bearer_auth(SALON_KEY)
        .json(&json!({"notes": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Moving it onto the meeting is.
    let resp = s
        .client
        .patch(&item)
        .bearer_auth(SALON_KEY)
        .json(&json!({"start": "2026-12-28T09:00:00+01:00", "end": "2026-12-28T09:30:00+01:00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    // Moving within its own time does not conflict with itself.
    let resp = s
        .client
        .patch(format!("{item}?allow_conflict=false"))
        .bearer_auth(SALON_KEY)
        .json(&json!({"start": "2026-12-22T11:00:00+01:00", "end": "2026-12-22T11:45:00+01:00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Cancelling the first frees its time.
    let first_url = s.url(&format!(
        "/api/v1/tenants/salon/bookings/{}",
        first["id"].as_str().unwrap()
    ));
    let resp = s
        .client
        .patch(&first_url)
        .bearer_auth(SALON_KEY)
        .json(&json!({"status": "cancelled"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        s.create(&booking("2026-12-22", "10:00", "10:45", "Takes the slot"))
            .await
            .0,
        201
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_for_one_slot_book_it_once() {
    let s = TestGateway::start().await;
    let attempts: Vec<_> = (0..10)
        .map(|i| {
            s.create_owned(booking(
                "2026-12-23",
                "10:00",
                "11:00",
                &format!("attempt {i}"),
            ))
        })
        .collect();
    let mut statuses = Vec::new();
    for a in attempts {
        statuses.push(a.await.0);
    }
    statuses.sort();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        9,
        "{statuses:?}"
    );
}

/// The Monday at least a week from today, in Paris.
fn next_monday() -> chrono::NaiveDate {
    use chrono::Datelike;
    let mut day = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Paris)
        .date_naive()
        + chrono::Duration::days(7);
    while day.weekday() != chrono::Weekday::Mon {
        day = day.succ_opt().unwrap();
    }
    day
}

/// `day` at `hh:mm` Paris time, as RFC 3339 UTC text.
fn paris(day: chrono::NaiveDate, hh: u32, mm: u32) -> String {
    use chrono::TimeZone;
    chrono_tz::Europe::Paris
        .from_local_datetime(&day.and_hms_opt(hh, mm, 0).unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn slots_follow_opening_hours_busy_time_and_buffer() {
    let s = TestGateway::start().await;
    let monday = next_monday();
    let booked =
        json!({"start": paris(monday, 10, 0), "end": paris(monday, 10, 30), "title": "Booked"});
    assert_eq!(s.create(&booked).await.0, 201);

    let slots = |query: String| {
        let s = &s;
        async move {
            let (status, body, _) = s.get(&format!("/api/v1/tenants/salon/slots?{query}")).await;
            (status, body)
        }
    };
    let day_query = |day: chrono::NaiveDate, extra: &str| {
        format!(
            "start={}&end={}&{extra}",
            paris(day, 0, 0),
            paris(day.succ_opt().unwrap(), 0, 0)
        )
    };
    let (status, body) = slots(day_query(monday, "duration=30")).await;
    assert_eq!(status, 200, "{body}");
    let starts: Vec<String> = body["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["start"].as_str().unwrap().to_owned())
        .collect();
    // 09:30 and 10:30 are within 10 minutes of the 10:00-10:30 booking.
    let expected: Vec<String> = [
        (9, 0),
        (11, 0),
        (11, 30),
        (13, 0),
        (13, 30),
        (14, 0),
        (14, 30),
        (15, 0),
        (15, 30),
        (16, 0),
        (16, 30),
    ]
    .iter()
    .map(|(h, m)| paris(monday, *h, *m))
    .collect();
    assert_eq!(starts, expected);
    assert_eq!(body["buffer_minutes"], 10);
    assert_eq!(body["truncated"], false);
    assert_eq!(body["slots"][0]["end"], paris(monday, 9, 30));

    // ISO durations and a finer step: 10:45 clears the 10:30 end plus 10 minutes.
    let (_, body) = slots(day_query(monday, "duration=PT1H&step=15")).await;
    let first: Vec<&str> = body["slots"]
        .as_array()
        .unwrap()
        .iter()
        .take(3)
        .map(|x| x["start"].as_str().unwrap())
        .collect();
    assert_eq!(
        first,
        [
            paris(monday, 10, 45),
            paris(monday, 11, 0),
            paris(monday, 13, 0)
        ]
    );

    // Sunday is closed; Saturday has its own hours.
    let sunday = monday - chrono::Duration::days(1);
    let (_, body) = slots(day_query(sunday, "duration=30")).await;
    assert_eq!(body["slots"], json!([]));
    let saturday = monday - chrono::Duration::days(2);
    let (_, body) = slots(day_query(saturday, "duration=60")).await;
    assert_eq!(body["slots"].as_array().unwrap().len(), 4);

    // Nothing in the past is offered.
    let today = chrono::Utc::now().date_naive();
    let (_, body) = slots(format!(
        "start={}T00:00:00Z&end={}T00:00:00Z&duration=30",
        today - chrono::Duration::days(30),
        today - chrono::Duration::days(1)
    ))
    .await;
    assert_eq!(body["slots"], json!([]));

    // Errors.
    for (query, field) in [
        (day_query(monday, ""), "duration"),
        (day_query(monday, "duration=3"), "duration"),
        (day_query(monday, "duration=half-an-hour"), "duration"),
        (day_query(monday, "duration=30&step=0"), "step"),
        (
            format!(
                "start={}&end={}&duration=30",
                paris(monday, 0, 0),
                paris(monday + chrono::Duration::days(70), 0, 0)
            ),
            "end",
        ),
    ] {
        let (status, body) = slots(query.clone()).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["invalid_params"][0]["name"], field, "{query}: {body}");
    }
}

/// One recurring event overlapping a long slot many times lists a bounded number
/// of its occurrences, with the total (issue 13: no answer grows with an object).
#[tokio::test(flavor = "multi_thread")]
async fn availability_lists_a_bounded_number_of_conflicts() {
    let s = TestGateway::start().await;
    s.add_source("staff-ana", false);
    let hourly = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:t\r\nBEGIN:VEVENT\r\nUID:hourly\r\nDTSTAMP:20261201T000000Z\r\nDTSTART:20261201T000000Z\r\nDURATION:PT10M\r\nRRULE:FREQ=HOURLY;COUNT=500\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    s.put_ics("staff-ana", "hourly.ics", hourly).await;
    let resp = s
        .client
        .post(s.url("/api/v1/tenants/salon/availability"))
        .bearer_auth(SALON_KEY)
        .json(&json!({"slots": [{"start": "2026-12-01T00:00:00Z", "end": "2026-12-11T00:00:00Z"}]}))
        .send()
        .await
        .unwrap();
    let (status, body, _) = split(resp).await;
    assert_eq!(status, 200, "{body}");
    let slot = &body["slots"][0];
    assert_eq!(slot["free"], false);
    assert_eq!(slot["conflicts_total"], 240, "{slot}");
    assert_eq!(slot["conflicts_truncated"], true);
    assert_eq!(
        slot["conflicts"].as_array().map(Vec::len),
        Some(calgate::bookings::LISTED_CONFLICTS)
    );
}
