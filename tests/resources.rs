//! Resources inside a tenant, over HTTP (issue 15, points 1 and 2): bookings
//! naming the staff, chairs and rooms they take; the conflict check per
//! resource with capacity, atomic under concurrent requests; calendars of one
//! resource; free/busy, availability, slots and conflicts per resource; the
//! implicit resource of a tenant that declares none; and bookings stored
//! before a tenant declared resources.

mod common;

use std::path::Path;

use common::{Extra, SALON_KEY, TestServer, add_salon_resource_source, booking, problem_fields};
use serde_json::{Value, json};

/// A Monday in Paris winter time (+01:00), far enough ahead for slots.
const MONDAY: &str = "2027-03-01";
const TUESDAY: &str = "2027-03-02";

/// Two stylists (Anna and Ben, no buffer), a stylist with her own hours and
/// the salon's buffer (Carla, Monday 13:00-15:00), a chair, and a class
/// with three seats.
fn salon_resources() -> Extra {
    Extra {
        salon: r#"
[[tenant.resource]]
id = "anna"
name = "Anna"
kind = "staff"
buffer_minutes = 0
[[tenant.resource]]
id = "ben"
name = "Ben"
kind = "staff"
buffer_minutes = 0
[[tenant.resource]]
id = "carla"
name = "Carla"
kind = "staff"
[tenant.resource.opening_hours]
monday = ["13:00-15:00"]
[[tenant.resource]]
id = "chair-1"
name = "Chair 1"
kind = "equipment"
buffer_minutes = 0
[[tenant.resource]]
id = "class"
name = "Yoga class"
kind = "room"
capacity = 3
buffer_minutes = 0
"#
        .into(),
        ..Extra::default()
    }
}

/// A booking body taking `resources`.
fn taking(day: &str, from: &str, to: &str, resources: &[&str]) -> Value {
    let mut body = booking(day, from, to, "Haircut");
    body["resources"] = json!(resources);
    body
}

/// `path` with the salon's key, as (status, JSON).
async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    let (status, body, _) = server.get(&format!("/api/v1/tenants/salon/{path}")).await;
    (status, body)
}

/// The resource each conflict entry of a 409 names.
fn conflict_resources(body: &Value) -> Vec<String> {
    body["conflicts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["resource"].as_str().unwrap_or("(none)").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Slots of `query` (after `start`, `end` of MONDAY in Paris) as
/// (start UTC, free resources).
async fn slots(server: &TestServer, query: &str) -> Vec<(String, Vec<String>)> {
    slots_of(
        server,
        &format!("start={MONDAY}T08:00:00Z&end={MONDAY}T16:00:00Z&duration=60&step=60&{query}"),
    )
    .await
}

/// Slots of `GET …/slots?{query}` as (start UTC, free resources).
async fn slots_of(server: &TestServer, query: &str) -> Vec<(String, Vec<String>)> {
    let (status, body) = get(server, &format!("slots?{query}")).await;
    assert_eq!(status, 200, "{body}");
    body["slots"]
        .as_array()
        .expect("slots")
        .iter()
        .map(|s| {
            let resources = s["resources"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .map(|x| x.as_str().unwrap_or_default().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            (
                s["start"].as_str().unwrap_or_default().to_owned(),
                resources,
            )
        })
        .collect()
}

fn at(hour: &str) -> String {
    format!("{MONDAY}T{hour}:00:00Z")
}

#[tokio::test]
async fn two_stylists_book_one_hour_and_one_stylist_cannot_twice() {
    let server = TestServer::start_with_extra(salon_resources()).await;
    let (status, anna, _) = server
        .create(&taking(MONDAY, "10:00", "10:45", &["anna"]))
        .await;
    assert_eq!(status, 201, "{anna}");
    assert_eq!(anna["resources"], json!(["anna"]));
    let (status, ben, _) = server
        .create(&taking(MONDAY, "10:00", "10:45", &["ben"]))
        .await;
    assert_eq!(status, 201, "different stylists at 10:00: {ben}");

    let (status, refused, _) = server
        .create(&taking(MONDAY, "10:15", "11:00", &["anna"]))
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(conflict_resources(&refused), ["anna"]);
    assert_eq!(refused["conflicts"][0]["id"], anna["id"]);
    assert_eq!(refused["conflicts_total"], 1);

    // A stylist and a chair at once; then the chair is taken for Anna.
    let (status, both, _) = server
        .create(&taking(MONDAY, "11:00", "11:30", &["ben", "chair-1"]))
        .await;
    assert_eq!(status, 201, "{both}");
    assert_eq!(both["resources"], json!(["ben", "chair-1"]));
    let (status, refused, _) = server
        .create(&taking(MONDAY, "11:00", "11:30", &["anna", "chair-1"]))
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(conflict_resources(&refused), ["chair-1"]);

    // Moving Anna's booking to Ben, who is busy then, is refused; to the
    // free Carla it works. allow_conflict still overrides.
    let url = server.url(&format!(
        "/api/v1/tenants/salon/bookings/{}",
        anna["id"].as_str().unwrap_or_default()
    ));
    let patch = |body: Value| {
        server
            .client
            .patch(&url)
            .bearer_auth(SALON_KEY)
            .json(&body)
            .send()
    };
    let (status, body, _) =
        common::split(patch(json!({"resources": ["ben"]})).await.expect("sent")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(conflict_resources(&body), ["ben"]);
    let (status, body, _) =
        common::split(patch(json!({"resources": ["carla"]})).await.expect("sent")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["resources"], json!(["carla"]));
    let mut forced = taking(MONDAY, "10:00", "10:45", &["ben"]);
    forced["allow_conflict"] = json!(true);
    assert_eq!(server.create(&forced).await.0, 201);

    // The listing shows what each booking takes.
    let listed = server
        .list(
            &format!("{MONDAY}T00:00:00Z"),
            &format!("{TUESDAY}T00:00:00Z"),
        )
        .await;
    assert!(listed.iter().all(|b| b["resources"].is_array()));
}

#[tokio::test]
async fn capacity_three_takes_three_overlapping_bookings_and_refuses_the_fourth() {
    let server = TestServer::start_with_extra(salon_resources()).await;
    for (from, to) in [("10:00", "11:00"), ("10:30", "11:30"), ("10:45", "11:15")] {
        let (status, body, _) = server.create(&taking(MONDAY, from, to, &["class"])).await;
        assert_eq!(status, 201, "{from}: {body}");
    }
    let (status, refused, _) = server
        .create(&taking(MONDAY, "10:50", "11:00", &["class"]))
        .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        conflict_resources(&refused).iter().all(|r| r == "class"),
        "{refused}"
    );
    assert_eq!(refused["conflicts_total"], 3);
    // Where only two overlap, a third seat is free.
    let (status, body, _) = server
        .create(&taking(MONDAY, "11:15", "11:45", &["class"]))
        .await;
    assert_eq!(status, 201, "{body}");

    // Free/busy of the class is busy only where it is full.
    let (status, fb) = get(
        &server,
        &format!("freebusy?start={MONDAY}T00:00:00Z&end={TUESDAY}T00:00:00Z&resource=class"),
    )
    .await;
    assert_eq!(status, 200, "{fb}");
    assert_eq!(fb["resource"], "class");
    // Full only where all three overlap: 10:45-11:00 Paris.
    assert_eq!(
        fb["busy"],
        json!([{"end": at("10"), "kind": "busy", "start": format!("{MONDAY}T09:45:00Z")}]),
        "{fb}"
    );
}

#[tokio::test]
async fn concurrent_requests_never_both_take_the_last_seat() {
    let server = TestServer::start_with_extra(salon_resources()).await;
    for _ in 0..2 {
        let (status, body, _) = server
            .create(&taking(MONDAY, "18:00", "19:00", &["class"]))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let racers: Vec<_> = (0..8)
        .map(|_| tokio::spawn(server.create_owned(taking(MONDAY, "18:00", "19:00", &["class"]))))
        .collect();
    let mut statuses = Vec::new();
    for racer in racers {
        statuses.push(racer.await.expect("request task").0);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    let listed = server
        .list(
            &format!("{MONDAY}T17:00:00Z"),
            &format!("{MONDAY}T18:00:00Z"),
        )
        .await;
    assert_eq!(listed.len(), 3, "exactly the capacity is booked");
}

#[tokio::test]
async fn a_stylists_calendar_blocks_only_her_and_a_salon_calendar_blocks_everyone() {
    let server = TestServer::start_with_extra(salon_resources()).await;
    add_salon_resource_source(server.app(), "anna-google", Some("anna"));
    add_salon_resource_source(server.app(), "holidays", None);
    // Anna is at the dentist 14:00-15:00; the salon closes 16:00-17:00.
    server
        .put_ics(
            "anna-google",
            "dentist.ics",
            &common::paris_event("dentist", "20270301T140000", "20270301T150000"),
        )
        .await;
    server
        .put_ics(
            "holidays",
            "closed.ics",
            &common::paris_event("closed", "20270301T160000", "20270301T170000"),
        )
        .await;

    let (status, body, _) = server
        .create(&taking(MONDAY, "14:00", "15:00", &["ben"]))
        .await;
    assert_eq!(status, 201, "Anna's calendar does not block Ben: {body}");
    let (status, body, _) = server
        .create(&taking(MONDAY, "14:00", "15:00", &["anna"]))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["conflicts"][0]["source"], "anna-google");
    assert_eq!(conflict_resources(&body), ["anna"]);
    for who in ["anna", "ben"] {
        let (status, body, _) = server
            .create(&taking(MONDAY, "16:00", "16:30", &[who]))
            .await;
        assert_eq!(status, 409, "the salon's calendar blocks {who}: {body}");
        assert_eq!(body["conflicts"][0]["source"], "holidays");
    }

    // Slots for any stylist: 13:00 UTC (14:00 Paris) has only Ben, who is
    // now booked then too; 15:00 UTC (16:00 Paris) nobody.
    let found = slots(&server, "resources=anna,ben").await;
    let at_14 = found.iter().find(|(s, _)| s == &at("13"));
    assert_eq!(at_14, None, "Anna at the dentist, Ben booked: {found:?}");
    assert!(found.iter().all(|(s, _)| s != &at("15")), "{found:?}");
    let free_ben = slots(&server, "resource=ben").await;
    assert!(free_ben.iter().all(|(s, _)| s != &at("13")), "{free_ben:?}");
    let free_anna = slots(&server, "resource=anna").await;
    assert!(
        free_anna.iter().all(|(s, _)| s != &at("13")),
        "{free_anna:?}"
    );
    assert!(
        free_anna.iter().any(|(s, _)| s == &at("14")),
        "{free_anna:?}"
    );

    // Availability at 14:00 Paris: both stylists are taken, the chair is
    // free; any of Anna and the chair is free (the chair), all is not.
    let (status, body) = availability(&server, "resources=anna,ben", "14:00", "15:00").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["slots"][0]["free"], false, "Ben is booked: {body}");
    let (status, body) = availability(&server, "resource=chair-1", "14:00", "15:00").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["slots"][0]["free"], true);
    assert_eq!(body["slots"][0]["resources"], json!(["chair-1"]));
    let (status, body) = availability(
        &server,
        "resources=anna,chair-1&match=any",
        "14:00",
        "15:00",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["slots"][0]["free"], true, "{body}");
    assert_eq!(body["slots"][0]["resources"], json!(["chair-1"]));
    assert_eq!(conflict_resources(&body["slots"][0]), ["anna"]);
    let (_, body) = availability(
        &server,
        "resources=anna,chair-1&match=all",
        "14:00",
        "15:00",
    )
    .await;
    assert_eq!(body["slots"][0]["free"], false, "{body}");

    // Conflicts found later: an event in Anna's calendar over Ben's booking
    // is none; over Anna's booking it is one, listed under her.
    let (status, anna_late, _) = server
        .create(&taking(MONDAY, "11:00", "11:30", &["anna"]))
        .await;
    assert_eq!(status, 201, "{anna_late}");
    let (status, ben_late, _) = server
        .create(&taking(MONDAY, "11:00", "11:30", &["ben"]))
        .await;
    assert_eq!(status, 201, "{ben_late}");
    server
        .put_ics(
            "anna-google",
            "late.ics",
            &common::paris_event("late", "20270301T110000", "20270301T120000"),
        )
        .await;
    let listed = |body: &Value| -> Vec<String> {
        body["conflicts"]
            .as_array()
            .expect("conflicts")
            .iter()
            .map(|c| c["booking_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let (status, all) = get(&server, "conflicts").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(listed(&all), [anna_late["id"].as_str().unwrap_or_default()]);
    let (_, of_anna) = get(&server, "conflicts?resource=anna").await;
    assert_eq!(listed(&of_anna), listed(&all));
    let (_, of_ben) = get(&server, "conflicts?resource=ben").await;
    assert!(listed(&of_ben).is_empty(), "{of_ben}");
}

/// POST …/availability?{query} for one Monday slot (Paris times).
async fn availability(server: &TestServer, query: &str, from: &str, to: &str) -> (u16, Value) {
    let resp = server
        .client
        .post(server.url(&format!("/api/v1/tenants/salon/availability?{query}")))
        .bearer_auth(SALON_KEY)
        .json(&json!({"slots": [{
            "start": format!("{MONDAY}T{from}:00+01:00"),
            "end": format!("{MONDAY}T{to}:00+01:00"),
        }]}))
        .send()
        .await
        .expect("sent");
    let (status, body, _) = common::split(resp).await;
    (status, body)
}

#[tokio::test]
async fn slots_for_any_stylist_or_a_stylist_and_a_chair_at_once() {
    let server = TestServer::start_with_extra(salon_resources()).await;
    // Anna 09:00-10:00; Ben with the chair 10:00-11:00 (Paris).
    assert_eq!(
        server
            .create(&taking(MONDAY, "09:00", "10:00", &["anna"]))
            .await
            .0,
        201
    );
    assert_eq!(
        server
            .create(&taking(MONDAY, "10:00", "11:00", &["ben", "chair-1"]))
            .await
            .0,
        201
    );
    let morning = |found: Vec<(String, Vec<String>)>| -> Vec<(String, Vec<String>)> {
        found.into_iter().filter(|(s, _)| s < &at("11")).collect()
    };
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        morning(slots(&server, "resources=anna,ben").await),
        [
            (at("08"), owned(&["ben"])),
            (at("09"), owned(&["anna"])),
            (at("10"), owned(&["anna", "ben"])),
        ]
    );
    assert_eq!(
        morning(slots(&server, "resources=anna,chair-1&match=all").await),
        [(at("10"), owned(&["anna", "chair-1"]))]
    );
    let (_, body) = get(
        &server,
        &format!("slots?start={MONDAY}T08:00:00Z&end={MONDAY}T09:00:00Z&duration=60&resources=anna,ben&match=all"),
    )
    .await;
    assert_eq!(body["match"], "all");
    assert_eq!(body["slots"], json!([]), "{body}");
}

#[tokio::test]
async fn opening_hours_and_buffers_are_per_resource() {
    let server = TestServer::start_with_extra(salon_resources()).await;
    // Carla works Monday 13:00-15:00 Paris with the salon's 10-minute
    // buffer; Anna keeps the salon's hours with none.
    for who in ["carla", "anna"] {
        let (status, body, _) = server
            .create(&taking(MONDAY, "14:30", "15:00", &[who]))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let half_hourly = |who: &str| {
        let query = format!(
            "start={MONDAY}T11:00:00Z&end={MONDAY}T15:00:00Z&duration=60&step=30&resource={who}"
        );
        let server = &server;
        async move {
            slots_of(server, &query)
                .await
                .into_iter()
                .map(|(start, _)| start)
                .collect::<Vec<_>>()
        }
    };
    let half = |h: &str| format!("{MONDAY}T{h}Z");
    assert_eq!(half_hourly("carla").await, [half("12:00:00")]);
    assert_eq!(
        half_hourly("anna").await,
        [half("12:00:00"), half("12:30:00"), half("14:00:00")],
        "Anna: no buffer, the salon's hours (closed 12:00-13:00 Paris, open to 17:00)"
    );

    let (status, listed) = get(&server, "resources").await;
    assert_eq!(status, 200, "{listed}");
    let carla = &listed["resources"][2];
    assert_eq!(carla["id"], "carla");
    assert_eq!(carla["buffer_minutes"], 10);
    assert_eq!(carla["opening_hours"], true);
    assert_eq!(carla["implicit"], false);
    assert_eq!(listed["resources"][4]["capacity"], 3);
    assert_eq!(listed["resources"][4]["kind"], "room");
}

#[tokio::test]
async fn a_tenant_without_resources_has_the_implicit_one_and_answers_as_before() {
    let server = TestServer::start().await;
    let (status, listed) = get(&server, "resources").await;
    assert_eq!(status, 200, "{listed}");
    let resources = listed["resources"].as_array().expect("resources");
    assert_eq!(resources.len(), 1);
    assert_eq!(resources[0]["id"], "default");
    assert_eq!(resources[0]["implicit"], true);
    assert_eq!(resources[0]["name"], "Salon Ümlaut, Paris; \"Chez Ana\"");
    assert_eq!(resources[0]["capacity"], 1);

    let (status, first, _) = server
        .create(&booking(MONDAY, "10:00", "11:00", "Cut"))
        .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["resources"], json!(["default"]));
    let (status, named, _) = server
        .create(&taking(MONDAY, "11:00", "12:00", &["default"]))
        .await;
    assert_eq!(status, 201, "{named}");
    assert_eq!(named["resources"], json!(["default"]));
    let (status, refused, _) = server
        .create(&booking(MONDAY, "10:30", "11:30", "Cut"))
        .await;
    assert_eq!(status, 409);
    assert!(
        refused["conflicts"][0].get("resource").is_none(),
        "the 409 is as it was: {refused}"
    );
    let (status, body, _) = server
        .create(&taking(MONDAY, "15:00", "16:00", &["anna"]))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(problem_fields(&body), ["resources"]);

    // The implicit resource's slots and free/busy are the tenant's.
    let tenant_wide = slots(&server, "").await;
    let of_default = slots(&server, "resource=default").await;
    let starts = |v: &[(String, Vec<String>)]| v.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>();
    assert_eq!(starts(&tenant_wide), starts(&of_default));
    assert!(of_default.iter().all(|(_, r)| r == &["default"]));
    let window = format!("start={MONDAY}T00:00:00Z&end={TUESDAY}T00:00:00Z");
    let (_, plain) = get(&server, &format!("freebusy?{window}")).await;
    let (_, of_default) = get(&server, &format!("freebusy?{window}&resource=default")).await;
    assert_eq!(plain["busy"], of_default["busy"]);
    assert!(plain.get("resource").is_none(), "{plain}");
}

#[tokio::test]
async fn bookings_stored_before_resources_open_and_block_every_resource() {
    // Bookings written on a tenant without resources (stored exactly as
    // before resources existed) ...
    let server = TestServer::start().await;
    let (status, old, etag) = server
        .create(&booking(MONDAY, "10:00", "11:00", "Cut"))
        .await;
    assert_eq!(status, 201, "{old}");
    let id = old["id"].as_str().unwrap_or_default().to_owned();
    // ... then the salon declares its staff and restarts.
    let server = server.restart_with_extra(salon_resources()).await;
    let (status, reread, reread_etag) = server
        .get(&format!("/api/v1/tenants/salon/bookings/{id}"))
        .await;
    assert_eq!(status, 200, "{reread}");
    assert_eq!(reread_etag, etag, "the stored record is unchanged");
    assert_eq!(reread["resources"], json!([]), "tenant-wide: {reread}");
    for who in ["anna", "ben", "chair-1"] {
        let (status, body, _) = server
            .create(&taking(MONDAY, "10:30", "11:30", &[who]))
            .await;
        assert_eq!(status, 409, "the old booking blocks {who}: {body}");
        assert_eq!(body["conflicts"][0]["id"], id.as_str());
        assert_eq!(conflict_resources(&body), [who]);
    }
    // In the class it takes one seat of three.
    let (status, body, _) = server
        .create(&taking(MONDAY, "10:30", "11:30", &["class"]))
        .await;
    assert_eq!(status, 201, "{body}");
    let found = slots(&server, "resources=anna,ben").await;
    assert!(found.iter().all(|(s, _)| s != &at("09")), "{found:?}");
    // Moving the old booking keeps it tenant-wide and checks every resource.
    let (status, body, _) = server
        .create(&taking(MONDAY, "14:00", "15:00", &["class"]))
        .await;
    assert_eq!(status, 201, "{body}");
    let resp = server
        .client
        .patch(server.url(&format!("/api/v1/tenants/salon/bookings/{id}")))
        .bearer_auth(SALON_KEY)
        .json(&json!({"start": format!("{MONDAY}T14:30:00+01:00"), "end": format!("{MONDAY}T15:00:00+01:00")}))
        .send()
        .await
        .expect("sent");
    let (status, body, _) = common::split(resp).await;
    assert_eq!(status, 200, "capacity 3 has room for it: {body}");
    let (status, body, _) = server
        .create(&taking(MONDAY, "14:30", "15:00", &["anna"]))
        .await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test]
async fn bad_resources_are_refused_naming_the_field() {
    let server = TestServer::start_with_extra(salon_resources()).await;
    for (body, why) in [
        (booking(MONDAY, "10:00", "11:00", "Cut"), "none named"),
        (taking(MONDAY, "10:00", "11:00", &[]), "empty"),
        (taking(MONDAY, "10:00", "11:00", &["zoe"]), "unknown"),
        (taking(MONDAY, "10:00", "11:00", &["anna", "anna"]), "twice"),
        (
            {
                let mut b = booking(MONDAY, "10:00", "11:00", "Cut");
                b["resources"] = json!("anna");
                b
            },
            "not a list",
        ),
    ] {
        let (status, answer, _) = server.create(&body).await;
        assert_eq!(status, 422, "{why}: {answer}");
        assert_eq!(problem_fields(&answer), ["resources"], "{why}");
    }
    for (query, field) in [
        ("resource=zoe", "resource"),
        ("resources=anna,zoe", "resources"),
        ("resources=anna,anna", "resources"),
        ("resources=anna&resource=ben", "resources"),
        ("resources=anna,ben&match=most", "match"),
    ] {
        let (status, body) = get(
            &server,
            &format!("slots?start={MONDAY}T08:00:00Z&end={MONDAY}T16:00:00Z&duration=60&{query}"),
        )
        .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(problem_fields(&body), [field], "{query}");
    }
    let (status, body) = get(&server, "conflicts?resource=zoe").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(problem_fields(&body), ["resource"]);

    // A source of an unknown resource is refused; of a known one, kept.
    let post_source = |resource: &str| {
        server
            .client
            .post(server.url("/api/v1/tenants/salon/sources"))
            .bearer_auth(SALON_KEY)
            .json(&json!({"id": format!("cal-{resource}"), "kind": "google", "resource": resource}))
            .send()
    };
    let (status, body, _) = common::split(post_source("zoe").await.expect("sent")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(problem_fields(&body), ["resource"]);
    let (status, body, _) = common::split(post_source("anna").await.expect("sent")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["resource"], "anna");
}

#[test]
fn config_errors_name_the_resource_key() {
    let dir = Path::new("/nonexistent");
    let with = |salon: &str| {
        let extra = Extra {
            salon: salon.into(),
            ..Extra::default()
        };
        let text = common::config_text_with(dir, "127.0.0.1:0", None, &extra);
        calgate::config::Config::parse(&text, Path::new("gateway.toml"))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert!(with(&salon_resources().salon).is_ok());
    for (salon, key) in [
        (
            "[[tenant.resource]]\nid = \"a\"\n[[tenant.resource]]\nid = \"b\"\ncapacity = 0\n",
            "gateway.toml: tenant[0].resource[1].capacity:",
        ),
        (
            "[[tenant.resource]]\nid = \"a\"\n[[tenant.resource]]\nid = \"a\"\n",
            "gateway.toml: tenant[0].resource[1].id:",
        ),
        (
            "[[tenant.resource]]\nid = \"a\"\nkind = \"person\"\n",
            "gateway.toml: tenant[0].resource[0].kind:",
        ),
        (
            "[[tenant.resource]]\nid = \"a\"\n[[tenant.source]]\nid = \"g\"\nkind = \"google\"\nresource = \"b\"\n",
            "gateway.toml: tenant[0].source[0].resource:",
        ),
    ] {
        let err = with(salon).expect_err(salon);
        assert!(err.starts_with(key), "{salon}: {err}");
    }
}
