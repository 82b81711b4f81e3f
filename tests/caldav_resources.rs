//! CalDAV per resource (issue 15, point 3), through the router in process: a
//! bookings collection per declared resource (`bookings.{resource}/`), CalDAV
//! users linked to a resource (a stylist's client sees only her bookings and
//! calendars and books herself), free-busy-query and the outbox's VFREEBUSY
//! per resource, and tenants without resources unchanged.

mod common;

use common::{
    Extra, Gateway, SALON_KEY, TestGateway, add_salon_resource_source, create_salon_legacy_booking,
    password_hash,
};
use reqwest::StatusCode;

/// Anna (with an e-mail address), Ben, and a room with two places; users
/// `stylist-anna` (linked to Anna) and `stylist-ben` (linked to Ben), beside
/// the salon's unlinked `ana` and `bea`.
fn salon() -> Extra {
    Extra {
        salon: format!(
            r#"
[[tenant.resource]]
id = "anna"
name = "Anna"
kind = "staff"
email = "anna@salon.example"
[[tenant.resource]]
id = "ben"
name = "Ben"
kind = "staff"
[[tenant.resource]]
id = "room"
name = "Treatment room"
kind = "room"
capacity = 2
[[tenant.user]]
username = "stylist-anna"
password_hash = "{hash}"
resource = "anna"
[[tenant.user]]
username = "stylist-ben"
password_hash = "{hash}"
resource = "ben"
"#,
            hash = password_hash()
        ),
        ..Extra::default()
    }
}

/// The salon with its resources, Anna's and Ben's own calendars and a
/// tenant-wide holidays calendar.
async fn start() -> TestGateway {
    let s = TestGateway::start_with_extra(salon()).await;
    add_salon_resource_source(s.app(), "anna-google", Some("anna"));
    add_salon_resource_source(s.app(), "ben-google", Some("ben"));
    add_salon_resource_source(s.app(), "holidays", None);
    s
}

/// An event on Monday 2027-03-01, Paris time (+01:00).
fn event(uid: &str, from: &str, to: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20270101T000000Z\r\nDTSTART;TZID=Europe/Paris:20270301T{from}00\r\nDTEND;TZID=Europe/Paris:20270301T{to}00\r\nSUMMARY:Haircut\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

async fn put(s: &TestGateway, user: &str, path: &str, body: &str) -> (StatusCode, String) {
    let (status, _, text) = s
        .send_as(
            user,
            "PUT",
            path,
            &[("content-type", "text/calendar; charset=utf-8")],
            body.to_owned(),
        )
        .await;
    (status, text)
}

async fn dav(
    s: &TestGateway,
    user: &str,
    method: &str,
    path: &str,
    depth: &str,
    body: &str,
) -> (StatusCode, String) {
    let (status, _, text) = s
        .send_as(
            user,
            method,
            path,
            &[("depth", depth), ("content-type", "application/xml")],
            body.to_owned(),
        )
        .await;
    (status, text)
}

const HOME: &str = "/dav/calendars/salon/";
const FREE_BUSY: &str = r#"<?xml version="1.0" encoding="utf-8"?><C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav"><C:time-range start="20270301T000000Z" end="20270302T000000Z"/></C:free-busy-query>"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_stylist_sees_only_her_resource() {
    let s = start().await;
    let (status, body) = dav(&s, "stylist-anna", "PROPFIND", HOME, "1", "").await;
    assert_eq!(status, 207, "{body}");
    for shown in ["bookings.anna/", "anna-google/", "holidays/", "outbox/"] {
        assert!(
            body.contains(&format!("{HOME}{shown}</")),
            "{shown}: {body}"
        );
    }
    for hidden in [
        "bookings/",
        "bookings.ben/",
        "bookings.room/",
        "ben-google/",
    ] {
        assert!(
            !body.contains(&format!("{HOME}{hidden}</")),
            "{hidden}: {body}"
        );
    }
    assert!(body.contains("Anna bookings"), "{body}");
    // Direct requests: as if nothing were there.
    for hidden in [
        "bookings/",
        "bookings.ben/",
        "ben-google/",
        "bookings.nobody/",
    ] {
        let path = format!("{HOME}{hidden}");
        let (status, _) = dav(&s, "stylist-anna", "PROPFIND", &path, "0", "").await;
        assert_eq!(status, 404, "{hidden}");
        let (status, _, _) = s
            .send_as("stylist-anna", "GET", &path, &[], String::new())
            .await;
        assert_eq!(status, 404, "{hidden}");
    }
    // Her client puts new events into her bookings.
    let props = r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><c:schedule-default-calendar-URL/><c:calendar-home-set/></d:prop></d:propfind>"#;
    let (status, body) = dav(
        &s,
        "stylist-anna",
        "PROPFIND",
        "/dav/principals/stylist-anna/",
        "0",
        props,
    )
    .await;
    assert_eq!(status, 207, "{body}");
    assert!(
        body.contains("<d:href>/dav/calendars/salon/bookings.anna/</d:href>"),
        "{body}"
    );
    // A calendar she makes is hers: Ben does not see it.
    let (status, _) = dav(
        &s,
        "stylist-anna",
        "MKCALENDAR",
        "/dav/calendars/salon/anna-private/",
        "0",
        "",
    )
    .await;
    assert_eq!(status, 201);
    let (_, body) = dav(&s, "stylist-ben", "PROPFIND", HOME, "1", "").await;
    assert!(!body.contains("anna-private/"), "{body}");
    assert!(!body.contains("anna-google/"), "{body}");
    assert!(body.contains(&format!("{HOME}bookings.ben/</")), "{body}");
    // Nor can she take over Ben's calendar by making one of its name.
    let (status, _) = dav(
        &s,
        "stylist-anna",
        "MKCALENDAR",
        "/dav/calendars/salon/ben-google/",
        "0",
        "",
    )
    .await;
    assert_eq!(status, 405);
    // An unlinked user sees everything.
    let (_, body) = dav(&s, "ana", "PROPFIND", HOME, "1", "").await;
    for shown in [
        "bookings/",
        "bookings.anna/",
        "bookings.ben/",
        "bookings.room/",
        "anna-google/",
        "ben-google/",
        "holidays/",
        "anna-private/",
    ] {
        assert!(
            body.contains(&format!("{HOME}{shown}</")),
            "{shown}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_put_books_the_resource_of_its_collection() {
    let s = start().await;
    let anna = "/dav/calendars/salon/bookings.anna/";
    let (status, body) = put(
        &s,
        "stylist-anna",
        &format!("{anna}cut-1.ics"),
        &event("cut-1", "1000", "1100"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, booking, _) = s.get("/api/v1/tenants/salon/bookings/cut-1").await;
    assert_eq!(status, 200);
    assert_eq!(booking["resources"], serde_json::json!(["anna"]));
    // Anna is taken at that time.
    let (status, body) = put(
        &s,
        "stylist-anna",
        &format!("{anna}cut-2.ics"),
        &event("cut-2", "1030", "1130"),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("already taken"), "{body}");
    // Ben is not.
    let (status, body) = put(
        &s,
        "stylist-ben",
        "/dav/calendars/salon/bookings.ben/ben-1.ics",
        &event("ben-1", "1030", "1130"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // Anna's collection lists her booking only; the tenant-wide one both.
    let (_, body) = dav(&s, "stylist-anna", "PROPFIND", anna, "1", "").await;
    assert!(body.contains(&format!("{anna}cut-1.ics")), "{body}");
    assert!(!body.contains("ben-1.ics"), "{body}");
    let sync = r#"<?xml version="1.0"?><d:sync-collection xmlns:d="DAV:"><d:sync-token/><d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"#;
    let (status, body) = dav(&s, "stylist-anna", "REPORT", anna, "1", sync).await;
    assert_eq!(status, 207, "{body}");
    assert!(
        body.contains("cut-1.ics") && !body.contains("ben-1.ics"),
        "{body}"
    );
    let (_, body) = dav(
        &s,
        "ana",
        "PROPFIND",
        "/dav/calendars/salon/bookings/",
        "1",
        "",
    )
    .await;
    assert!(
        body.contains("cut-1.ics") && body.contains("ben-1.ics"),
        "{body}"
    );
    let (status, _, text) = s
        .send_as(
            "stylist-anna",
            "GET",
            &format!("{anna}cut-1.ics"),
            &[],
            String::new(),
        )
        .await;
    assert_eq!(status, 200);
    assert!(text.contains("UID:cut-1"));
    // Another resource's collection does not hold it.
    let (status, _, _) = s
        .send_as(
            "ana",
            "GET",
            "/dav/calendars/salon/bookings.ben/cut-1.ics",
            &[],
            String::new(),
        )
        .await;
    assert_eq!(status, 404);
    // Saved through the room's collection, the booking also takes the room
    // and keeps Anna.
    let (status, body) = put(
        &s,
        "ana",
        "/dav/calendars/salon/bookings.room/cut-1.ics",
        &event("cut-1", "1000", "1100"),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (_, booking, _) = s.get("/api/v1/tenants/salon/bookings/cut-1").await;
    assert_eq!(booking["resources"], serde_json::json!(["anna", "room"]));
    // The room holds two at once: a second fits, a third does not.
    let room = "/dav/calendars/salon/bookings.room/";
    let (status, body) = put(
        &s,
        "ana",
        &format!("{room}r-2.ics"),
        &event("r-2", "1000", "1100"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = put(
        &s,
        "ana",
        &format!("{room}r-3.ics"),
        &event("r-3", "1030", "1100"),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    // Deleting through her collection cancels it.
    let (status, _, _) = s
        .send_as(
            "stylist-anna",
            "DELETE",
            &format!("{anna}cut-1.ics"),
            &[],
            String::new(),
        )
        .await;
    assert_eq!(status, 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn new_bookings_in_the_tenant_wide_collection_must_name_a_resource() {
    let s = start().await;
    let (status, body) = put(
        &s,
        "ana",
        "/dav/calendars/salon/bookings/x-1.ics",
        &event("x-1", "1000", "1100"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("valid-calendar-object-resource"), "{body}");
    assert!(body.contains("bookings.anna/"), "{body}");
    // An existing booking is changed there as before.
    let (status, _) = put(
        &s,
        "ana",
        "/dav/calendars/salon/bookings.ben/x-2.ics",
        &event("x-2", "1000", "1100"),
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = put(
        &s,
        "ana",
        "/dav/calendars/salon/bookings/x-2.ics",
        &event("x-2", "1400", "1500"),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (_, booking, _) = s.get("/api/v1/tenants/salon/bookings/x-2").await;
    assert_eq!(booking["resources"], serde_json::json!(["ben"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn free_busy_per_resource() {
    let s = start().await;
    // Anna: a booking 09:00-10:00Z and her own calendar 13:00-14:00Z; Ben: a
    // booking 11:00-12:00Z and his calendar 15:00-16:00Z; the whole salon:
    // 17:00-18:00Z.
    let (status, _) = put(
        &s,
        "stylist-anna",
        "/dav/calendars/salon/bookings.anna/a.ics",
        &event("a", "1000", "1100"),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = put(
        &s,
        "stylist-ben",
        "/dav/calendars/salon/bookings.ben/b.ics",
        &event("b", "1200", "1300"),
    )
    .await;
    assert_eq!(status, 201);
    s.put_ics("anna-google", "ag.ics", &event("ag", "1400", "1500"))
        .await;
    s.put_ics("ben-google", "bg.ics", &event("bg", "1600", "1700"))
        .await;
    s.put_ics("holidays", "h.ics", &event("h", "1800", "1900"))
        .await;
    let (status, body) = dav(
        &s,
        "stylist-anna",
        "REPORT",
        "/dav/calendars/salon/bookings.anna/",
        "1",
        FREE_BUSY,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for busy in ["T090000Z/", "T130000Z/", "T170000Z/"] {
        assert!(body.contains(busy), "{busy}: {body}");
    }
    for free in ["T110000Z/", "T150000Z/"] {
        assert!(!body.contains(free), "{free}: {body}");
    }
    // The room (capacity 2) is busy only where two bookings overlap.
    for (id, from, to) in [("r1", "1000", "1200"), ("r2", "1100", "1300")] {
        let (status, _) = put(
            &s,
            "ana",
            &format!("/dav/calendars/salon/bookings.room/{id}.ics"),
            &event(id, from, to),
        )
        .await;
        assert_eq!(status, 201);
    }
    let (_, body) = dav(
        &s,
        "ana",
        "REPORT",
        "/dav/calendars/salon/bookings.room/",
        "1",
        FREE_BUSY,
    )
    .await;
    assert!(body.contains("T100000Z/20270301T110000Z"), "{body}");
    assert!(!body.contains("T090000Z/"), "{body}");

    // The outbox: Anna by her e-mail, Ben by the resource URN.
    let request = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nMETHOD:REQUEST\r\nBEGIN:VFREEBUSY\r\nUID:fb-1\r\nDTSTAMP:20270101T000000Z\r\nDTSTART:20270301T000000Z\r\nDTEND:20270302T000000Z\r\nORGANIZER:mailto:ana@salon.calgate.invalid\r\nATTENDEE:mailto:Anna@salon.example\r\nATTENDEE:urn:x-calgate:resource:salon:ben\r\nATTENDEE:urn:x-calgate:resource:salon:nobody\r\nEND:VFREEBUSY\r\nEND:VCALENDAR\r\n";
    let (status, _, body) = s
        .send_as(
            "ana",
            "POST",
            "/dav/calendars/salon/outbox/",
            &[("content-type", "text/calendar")],
            request.to_owned(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let responses: Vec<&str> = body.split("<cal:response>").skip(1).collect();
    assert_eq!(responses.len(), 3, "{body}");
    let (anna, ben, nobody) = (responses[0], responses[1], responses[2]);
    assert!(anna.contains("2.0;Success"), "{anna}");
    assert!(
        anna.contains("T090000Z/") && anna.contains("T130000Z/"),
        "{anna}"
    );
    assert!(
        !anna.contains("T110000Z/") && !anna.contains("T150000Z/"),
        "{anna}"
    );
    assert!(
        ben.contains("T110000Z/") && ben.contains("T150000Z/"),
        "{ben}"
    );
    assert!(!ben.contains("T130000Z/"), "{ben}");
    assert!(nobody.contains("3.7;Invalid calendar user"), "{nobody}");
}

/// A sync-collection REPORT of `collection` from `token` (empty: initial), as
/// "ana" (who sees every collection): the members reported, as (resource
/// name, present; false for a 404), and the token that closes the answer.
async fn sync_of(s: &TestGateway, collection: &str, token: &str) -> (Vec<(String, bool)>, String) {
    let body = format!(
        r#"<?xml version="1.0"?><d:sync-collection xmlns:d="DAV:"><d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"#
    );
    let (status, body) = dav(s, "ana", "REPORT", collection, "1", &body).await;
    assert_eq!(status, 207, "{body}");
    let members = body
        .split("<d:response>")
        .skip(1)
        .map(|response| {
            let href = text_of(response, "d:href");
            let name = href.rsplit('/').next().unwrap_or_default().to_owned();
            (name, !response.contains("<d:status>HTTP/1.1 404"))
        })
        .collect();
    (members, text_of(&body, "d:sync-token"))
}

/// The text of the first `<{element}>` in `xml`.
fn text_of(xml: &str, element: &str) -> String {
    let open = format!("<{element}>");
    let start = xml.find(&open).map_or(xml.len(), |at| at + open.len());
    let rest = &xml[start..];
    rest[..rest.find('<').unwrap_or(rest.len())].to_owned()
}

/// A collection's CTag (`CS:getctag`).
async fn ctag(s: &TestGateway, collection: &str) -> String {
    let ask = r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:cs="http://calendarserver.org/ns/"><d:prop><cs:getctag/></d:prop></d:propfind>"#;
    let (status, body) = dav(s, "ana", "PROPFIND", collection, "0", ask).await;
    assert_eq!(status, 207, "{body}");
    let at = body.find("getctag>").expect("a getctag") + "getctag>".len();
    body[at..][..body[at..].find('<').unwrap_or(0)].to_owned()
}

fn present(names: &[&str]) -> Vec<(String, bool)> {
    names.iter().map(|n| ((*n).to_owned(), true)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_sync_of_a_resource_reports_only_its_bookings() {
    let s = start().await;
    let anna = "/dav/calendars/salon/bookings.anna/";
    let ben = "/dav/calendars/salon/bookings.ben/";
    let (status, body) = put(
        &s,
        "stylist-anna",
        &format!("{anna}move-1.ics"),
        &event("move-1", "0900", "1000"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (found, anna_token) = sync_of(&s, anna, "").await;
    assert_eq!(found, present(&["move-1.ics"]));
    let (found, ben_token) = sync_of(&s, ben, "").await;
    assert!(found.is_empty(), "{found:?}");
    let anna_ctag = ctag(&s, anna).await;

    // A booking of Ben's is no change of Anna's: nothing reported, and her
    // token and CTag stay.
    let (status, body) = put(
        &s,
        "stylist-ben",
        &format!("{ben}ben-1.ics"),
        &event("ben-1", "1100", "1200"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (found, token) = sync_of(&s, anna, &anna_token).await;
    assert!(
        found.is_empty(),
        "Ben's booking leaks into Anna's: {found:?}"
    );
    assert_eq!(token, anna_token);
    assert_eq!(ctag(&s, anna).await, anna_ctag);
    let (found, ben_token) = sync_of(&s, ben, &ben_token).await;
    assert_eq!(found, present(&["ben-1.ics"]));

    // Moved from Anna to Ben: gone from hers, new in his.
    let (status, body, _) = common::split(
        s.client
            .patch(s.url("/api/v1/tenants/salon/bookings/move-1"))
            .bearer_auth(SALON_KEY)
            .json(&serde_json::json!({"resources": ["ben"]}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (found, anna_token) = sync_of(&s, anna, &anna_token).await;
    assert_eq!(found, [("move-1.ics".to_owned(), false)]);
    assert_ne!(ctag(&s, anna).await, anna_ctag, "a booking left Anna's");
    let (found, ben_token) = sync_of(&s, ben, &ben_token).await;
    assert_eq!(found, present(&["move-1.ics"]));

    // A booking naming no resource (stored before the salon declared them)
    // takes every one: new in both, and listed there too.
    let everyone = create_salon_legacy_booking(
        s.app(),
        "2027-03-01T14:00:00+01:00",
        "2027-03-01T15:00:00+01:00",
        "Salon closed",
    )
    .await;
    let name = format!("{everyone}.ics");
    for (collection, token) in [(anna, &anna_token), (ben, &ben_token)] {
        let (found, _) = sync_of(&s, collection, token).await;
        assert_eq!(found, present(&[&name]), "{collection}");
        let (_, listing) = dav(&s, "ana", "PROPFIND", collection, "1", "").await;
        assert!(listing.contains(&name), "{collection}: {listing}");
    }
    // A full resync agrees with the incremental answers.
    let (found, _) = sync_of(&s, anna, "").await;
    assert_eq!(found, present(&[&name]));
    let (mut found, _) = sync_of(&s, ben, "").await;
    found.sort();
    let mut expected = present(&["ben-1.ics", "move-1.ics", &name]);
    expected.sort();
    assert_eq!(found, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_booking_naming_no_resource_is_in_every_resources_collection() {
    let s = start().await;
    // Stored before the salon declared resources: it takes every one.
    let everyone = create_salon_legacy_booking(
        s.app(),
        "2027-03-01T14:00:00+01:00",
        "2027-03-01T15:00:00+01:00",
        "Salon closed",
    )
    .await;
    let name = format!("{everyone}.ics");
    for collection in ["bookings.anna", "bookings.ben", "bookings.room", "bookings"] {
        let path = format!("{HOME}{collection}/");
        let (_, listing) = dav(&s, "ana", "PROPFIND", &path, "1", "").await;
        assert!(listing.contains(&format!("{path}{name}")), "{listing}");
        let (status, _, text) = s
            .send_as("ana", "GET", &format!("{path}{name}"), &[], String::new())
            .await;
        assert_eq!(status, 200, "{collection}");
        assert!(text.contains("Salon closed"), "{text}");
    }
    // Anna's client sees it, but it is the salon's: not hers to change or
    // cancel (it would be for every resource).
    let anna = format!("{HOME}bookings.anna/{name}");
    let (status, body) = put(&s, "stylist-anna", &anna, &event(&everyone, "1400", "1600")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("takes every resource"), "{body}");
    let (status, _, body) = s
        .send_as("stylist-anna", "DELETE", &anna, &[], String::new())
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("takes every resource"), "{body}");
    let (status, booking, _) = s
        .get(&format!("/api/v1/tenants/salon/bookings/{everyone}"))
        .await;
    assert_eq!(status, 200, "still there");
    assert_eq!(booking["end"], "2027-03-01T15:00:00+01:00", "unchanged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_without_resources_is_unchanged() {
    let s = TestGateway::start().await;
    let (status, body) = dav(&s, "ana", "PROPFIND", HOME, "1", "").await;
    assert_eq!(status, 207);
    assert!(!body.contains("bookings."), "{body}");
    assert!(body.contains(&format!("{HOME}bookings/</")), "{body}");
    let (status, _) = dav(
        &s,
        "ana",
        "PROPFIND",
        &format!("{HOME}bookings.default/"),
        "0",
        "",
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = put(
        &s,
        "ana",
        "/dav/calendars/salon/bookings/plain.ics",
        &event("plain", "1000", "1100"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

#[test]
fn a_user_links_only_to_a_declared_resource() {
    let dir = tempfile::tempdir().unwrap();
    let extra = |salon: String| Extra {
        salon,
        ..Extra::default()
    };
    let user = |resource: &str| {
        format!(
            "[[tenant.user]]\nusername = \"linked\"\npassword_hash = \"{}\"\nresource = \"{resource}\"\n",
            password_hash()
        )
    };
    let parse = |e: &Extra| {
        let text = common::config_text_with(dir.path(), "127.0.0.1:0", None, e);
        calgate::config::Config::parse(&text, std::path::Path::new("t.toml"))
    };
    let err = parse(&extra(user("anna"))).unwrap_err().to_string();
    assert!(
        err.contains("user[2].resource") && err.contains("declares no resources"),
        "{err}"
    );
    let declared = "[[tenant.resource]]\nid = \"ben\"\n".to_owned();
    let err = parse(&extra(format!("{declared}{}", user("anna"))))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"ben\""), "{err}");
    assert!(parse(&extra(format!("{declared}{}", user("ben")))).is_ok());
}
