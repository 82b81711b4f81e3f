//! Hostile and sloppy input to CalDAV and the booking API (issue 13): each is
//! refused with a precise 4xx naming what is wrong, and nothing is stored.

mod common;

use common::{SALON_KEY, TestGateway, booking, problem_fields, split};
use reqwest::{Method, StatusCode};
use serde_json::json;

fn m(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).expect("method name")
}

/// Sends a CalDAV request as `ana` (salon); (status, body).
async fn dav(s: &TestGateway, method: &str, path: &str, body: &str) -> (StatusCode, String) {
    let mut req = s
        .client
        .request(m(method), s.url(path))
        .basic_auth("ana", Some("secret"))
        .header("depth", "1")
        .body(body.to_owned());
    if method == "PUT" {
        req = req.header("content-type", "text/calendar; charset=utf-8");
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

/// A request sent as written: HTTP clients resolve `%2e%2e` segments (WHATWG
/// URL) before sending, a hostile client does not, nor does the in-process
/// client. Returns the status.
async fn raw(s: &TestGateway, method: &str, path: &str) -> u16 {
    let resp = s
        .client
        .request(m(method), path)
        .basic_auth("ana", Some("secret"))
        .header("depth", "1")
        .header("content-length", "0")
        .header("connection", "close")
        .send()
        .await
        .expect("request sent");
    resp.status().as_u16()
}

fn ics(event: &str) -> String {
    format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\n{event}END:VCALENDAR\r\n")
}

fn vevent(uid: Option<&str>, start: &str, end: &str) -> String {
    let uid = uid.map(|u| format!("UID:{u}\r\n")).unwrap_or_default();
    format!(
        "BEGIN:VEVENT\r\n{uid}DTSTAMP:20261101T000000Z\r\nDTSTART:{start}\r\nDTEND:{end}\r\nSUMMARY:Probe\r\nEND:VEVENT\r\n"
    )
}

const MKCALENDAR: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<c:mkcalendar xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"/>"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_put_into_another_tenant_is_404_and_stores_nothing() {
    let s = TestGateway::start().await;
    let (status, body) = dav(&s, "MKCALENDAR", "/dav/calendars/salon/staff2/", MKCALENDAR).await;
    assert_eq!(status, 201, "{body}");
    let event = ics(&vevent(
        Some("probe-1"),
        "20261201T100000Z",
        "20261201T110000Z",
    ));
    for path in [
        "/dav/calendars/garage/staff2/x.ics",
        "/dav/calendars/nosuchtenant/staff2/x.ics",
        "/dav/calendars/garage/bookings/x.ics",
    ] {
        let (status, body) = dav(&s, "PUT", path, &event).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    for own in [
        "/dav/calendars/salon/staff2/x.ics",
        "/dav/calendars/salon/bookings/x.ics",
    ] {
        let (status, _) = dav(&s, "GET", own, "").await;
        assert_eq!(status, 404, "{own} must not have been written");
    }
    // Other methods answer 404 there too.
    for (method, path) in [
        ("MKCALENDAR", "/dav/calendars/garage/new/"),
        ("PROPPATCH", "/dav/calendars/garage/bookings/"),
        ("DELETE", "/dav/calendars/garage/bookings/x.ics"),
    ] {
        let (status, body) = dav(&s, method, path, MKCALENDAR).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_segments_never_name_a_resource() {
    let s = TestGateway::start().await;
    for (method, path) in [
        ("MKCALENDAR", "/dav/calendars/salon/%2e%2e/"),
        ("MKCALENDAR", "/dav/calendars/salon/%2E/"),
        ("PUT", "/dav/calendars/salon/bookings/%2e%2e"),
        ("PROPFIND", "/dav/calendars/salon/%2e%2e/bookings/"),
    ] {
        assert_eq!(raw(&s, method, path).await, 400, "{method} {path}");
    }
    // A name starting with a dot is refused as a calendar name too.
    let (status, body) = dav(
        &s,
        "MKCALENDAR",
        "/dav/calendars/salon/.hidden/",
        MKCALENDAR,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not starting with"), "{body}");
    let (status, listing) = dav(&s, "PROPFIND", "/dav/calendars/salon/", "").await;
    assert_eq!(status, 207, "{listing}");
    assert!(!listing.contains("/salon/../"), "{listing}");
    assert!(!listing.contains("/salon/./"), "{listing}");
    assert!(!listing.contains(".hidden"), "{listing}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_calendar_objects_are_refused_with_their_precondition() {
    let s = TestGateway::start().await;
    let (status, body) = dav(&s, "MKCALENDAR", "/dav/calendars/salon/staff/", MKCALENDAR).await;
    assert_eq!(status, 201, "{body}");
    let good = vevent(Some("a"), "20261201T100000Z", "20261201T110000Z");
    let cases = [
        (
            "missing UID",
            ics(&vevent(None, "20261201T100000Z", "20261201T110000Z")),
            "valid-calendar-data",
            "no UID",
        ),
        (
            "two UIDs",
            ics(&format!("{good}{}", good.replace("UID:a", "UID:b"))),
            "valid-calendar-object-resource",
            "\"a\" and \"b\"",
        ),
        (
            "DTEND before DTSTART",
            ics(&vevent(Some("c"), "20261201T100000Z", "20261201T090000Z")),
            "valid-calendar-data",
            "DTEND 20261201T090000Z is before DTSTART",
        ),
        (
            "year 0000",
            ics(&vevent(Some("d"), "00001201T100000Z", "00001201T110000Z")),
            "min-date-time",
            "DTSTART 00001201T100000Z is outside the years",
        ),
        (
            "unreadable DTSTART",
            ics(&vevent(Some("g"), "20261301T100000Z", "20261301T110000Z")),
            "valid-calendar-data",
            "its DTSTART \"20261301T100000Z\" is not a valid date or date-time",
        ),
        (
            "leap second",
            ics(&vevent(Some("e"), "20270630T235960Z", "20270701T003000Z")),
            "valid-calendar-data",
            "second 60",
        ),
    ];
    for calendar in ["staff", "bookings"] {
        for (what, text, condition, says) in &cases {
            let path = format!("/dav/calendars/salon/{calendar}/probe.ics");
            let (status, body) = dav(&s, "PUT", &path, text).await;
            assert_eq!(status, 403, "{calendar}, {what}: {body}");
            assert!(
                body.contains(&format!("<cal:{condition}")),
                "{what}: {body}"
            );
            assert!(body.contains(says), "{what}: {body}");
        }
    }
    // Each calendar says which years it holds: bookings those a booking may take.
    let years = r#"<d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><c:min-date-time/><c:max-date-time/></d:prop></d:propfind>"#;
    for (calendar, min, max) in [
        ("staff", "00010101T000000Z", "99991231T235959Z"),
        ("bookings", "19000101T000000Z", "22001231T235959Z"),
    ] {
        let (status, body) = dav(
            &s,
            "PROPFIND",
            &format!("/dav/calendars/salon/{calendar}/"),
            years,
        )
        .await;
        assert_eq!(status, 207, "{body}");
        assert!(
            body.contains(&format!("<cal:min-date-time>{min}</cal:min-date-time>")),
            "{body}"
        );
        assert!(
            body.contains(&format!("<cal:max-date-time>{max}</cal:max-date-time>")),
            "{body}"
        );
    }
    let old = ics(&vevent(Some("f"), "18501201T100000Z", "18501201T110000Z"));
    let (status, body) = dav(&s, "PUT", "/dav/calendars/salon/bookings/old.ics", &old).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("<cal:min-date-time"), "{body}");
    assert!(body.contains("min-date-time 19000101T000000Z"), "{body}");
    let (status, body) = dav(&s, "PUT", "/dav/calendars/salon/staff/old.ics", &old).await;
    assert_eq!(status, 201, "a staff calendar holds 1850: {body}");
    // A second UID-less PUT into the bookings is told the same, not "same UID".
    let no_uid = ics(&vevent(None, "20261202T100000Z", "20261202T110000Z"));
    let (status, body) = dav(
        &s,
        "PUT",
        "/dav/calendars/salon/bookings/other.ics",
        &no_uid,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("no UID"), "{body}");
    let (_, bookings, _) = s
        .get("/api/v1/tenants/salon/bookings?start=2026-11-01T00:00:00Z&end=2027-08-01T00:00:00Z")
        .await;
    assert_eq!(bookings["bookings"], json!([]), "nothing was stored");
    // A zoned event: a leap second in local time is refused as well.
    let zoned = "BEGIN:VEVENT\r\nUID:z\r\nDTSTAMP:20261101T000000Z\r\nDTSTART;TZID=Europe/Paris:20270701T015960\r\nDTEND;TZID=Europe/Paris:20270701T030000\r\nEND:VEVENT\r\n";
    let (status, body) = dav(&s, "PUT", "/dav/calendars/salon/staff/z.ics", &ics(zoned)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("20270701T015960"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_requests_are_413_and_oversized_objects_max_resource_size() {
    let s = TestGateway::start().await;
    // The test server's limit is 65536 bytes.
    let padding = "x".repeat(70_000);
    let propfind = format!(
        "<?xml version=\"1.0\"?><d:propfind xmlns:d=\"DAV:\"><d:prop><d:displayname/></d:prop><!-- {padding} --></d:propfind>"
    );
    // Refused by its declared length, before the body is read.
    let once = |method: &'static str, path: &'static str, body: String| {
        let req = s
            .client
            .request(m(method), s.url(path))
            .basic_auth("ana", Some("secret"))
            .header("content-type", "text/calendar; charset=utf-8")
            .body(body);
        async move {
            let resp = req.send().await.expect("request sent");
            (resp.status(), resp.text().await.unwrap_or_default())
        }
    };
    for (method, path) in [
        ("PROPFIND", "/dav/calendars/salon/"),
        ("REPORT", "/dav/calendars/salon/bookings/"),
        ("PROPPATCH", "/dav/calendars/salon/bookings/"),
    ] {
        let (status, body) = once(method, path, propfind.clone()).await;
        assert_eq!(status, 413, "{method}: {body}");
        assert!(body.contains("65536"), "{body}");
    }
    let big = ics(&vevent(Some("big"), "20261201T100000Z", "20261201T110000Z"))
        .replace("SUMMARY:Probe", &format!("SUMMARY:{padding}"));
    let (status, body) = once("PUT", "/dav/calendars/salon/bookings/big.ics", big).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("<cal:max-resource-size"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn proppatch_refuses_oversized_and_malformed_values_by_name() {
    let s = TestGateway::start().await;
    let (status, body) = dav(&s, "MKCALENDAR", "/dav/calendars/salon/staff/", MKCALENDAR).await;
    assert_eq!(status, 201, "{body}");
    let patch = |props: &str| {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<d:propertyupdate xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav" xmlns:i="http://apple.com/ns/ical/">
  <d:set><d:prop>{props}</d:prop></d:set>
</d:propertyupdate>"#
        )
    };
    let long_name = "n".repeat(2000);
    let long_description = "d".repeat(20_000);
    let (status, body) = dav(
        &s,
        "PROPPATCH",
        "/dav/calendars/salon/staff/",
        &patch(&format!(
            "<d:displayname>{long_name}</d:displayname><c:calendar-description>{long_description}</c:calendar-description><i:calendar-order>soon</i:calendar-order><i:calendar-color>#112233FF</i:calendar-color>"
        )),
    )
    .await;
    assert_eq!(status, 207, "{body}");
    let propstat = |prop: &str| {
        body.split("<d:propstat>")
            .find(|p| p.contains(prop))
            .unwrap_or_else(|| panic!("no propstat for {prop} in {body}"))
            .to_owned()
    };
    let name = propstat("<d:displayname");
    assert!(name.contains("507 Insufficient Storage"), "{name}");
    assert!(
        name.contains("displayname is 2000 bytes long; at most 1024"),
        "{name}"
    );
    let description = propstat("calendar-description");
    assert!(
        description.contains("calendar-description is 20000 bytes long; at most 16384"),
        "{description}"
    );
    let order = propstat("calendar-order");
    assert!(order.contains("409 Conflict"), "{order}");
    assert!(order.contains("\"soon\""), "{order}");
    assert!(propstat("calendar-color").contains("424 Failed Dependency"));
    // All or nothing: nothing was set.
    let (_, found) = dav(
        &s,
        "PROPFIND",
        "/dav/calendars/salon/staff/",
        r#"<d:propfind xmlns:d="DAV:" xmlns:i="http://apple.com/ns/ical/"><d:prop><d:displayname/><i:calendar-color/></d:prop></d:propfind>"#,
    )
    .await;
    assert!(
        found.contains("<d:displayname>staff</d:displayname>"),
        "{found}"
    );
    assert!(!found.contains("#112233FF"), "{found}");
    // MKCALENDAR sets the same properties under the same limits.
    let make = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<c:mkcalendar xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:set><d:prop><d:displayname>{long_name}</d:displayname></d:prop></d:set></c:mkcalendar>"#
    );
    let (status, body) = dav(&s, "MKCALENDAR", "/dav/calendars/salon/long/", &make).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("displayname is 2000 bytes long"), "{body}");
    let (status, _) = dav(&s, "PROPFIND", "/dav/calendars/salon/long/", "").await;
    assert_eq!(status, 404, "the calendar was not made");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leap_second_booking_is_refused_by_name() {
    let s = TestGateway::start().await;
    let (status, body, _) = s
        .create(&json!({"start": "2027-06-30T23:59:60Z", "end": "2027-07-01T00:30:00Z", "title": "Leap"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(problem_fields(&body), ["start"], "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("second 60"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn customer_emails_must_be_plain_addresses() {
    let s = TestGateway::start().await;
    let with_email = |email: &str| {
        let mut body = booking("2026-12-01", "10:00", "10:30", "Cut");
        body["customer"] = json!({ "email": email });
        body
    };
    for bad in [
        "a@b.c\"><script>",
        "a b@example.com",
        "a@example",
        "a@@example.com",
    ] {
        let (status, body, _) = s.create(&with_email(bad)).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(problem_fields(&body), ["customer.email"], "{body}");
    }
    let (status, body, _) = s.create(&with_email("ana.lima+salon@example.com")).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_is_visible_ascii_only() {
    let s = TestGateway::start().await;
    for key in ["order\t1", "order 1"] {
        let resp = s
            .client
            .post(s.bookings_url("salon"))
            .bearer_auth(SALON_KEY)
            .header("idempotency-key", key)
            .json(&booking("2026-12-01", "10:00", "10:30", "Cut"))
            .send()
            .await
            .expect("request sent");
        let (status, body, _) = split(resp).await;
        assert_eq!(status, 400, "{key:?}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("visible ASCII"),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_fields_are_refused_not_ignored() {
    let s = TestGateway::start().await;
    let cut = booking("2026-12-01", "10:00", "10:30", "Cut");
    let (status, created, _) = s.create(&cut).await;
    assert_eq!(status, 201, "{created}");
    let item = s.url(&format!(
        "/api/v1/tenants/salon/bookings/{}",
        created["id"].as_str().unwrap()
    ));
    for (method, body, field) in [
        (Method::PATCH, json!({"sequence": 7}), "sequence"),
        (Method::PATCH, json!({"title": "New", "uid": "mine"}), "uid"),
        (
            Method::PUT,
            {
                let mut replace = cut.clone();
                replace["etag"] = json!("\"x\"");
                replace
            },
            "etag",
        ),
    ] {
        let resp = s
            .client
            .request(method.clone(), &item)
            .bearer_auth(SALON_KEY)
            .json(&body)
            .send()
            .await
            .expect("request sent");
        let (status, problem, _) = split(resp).await;
        assert_eq!(status, 422, "{method} {body}: {problem}");
        assert_eq!(problem_fields(&problem), [field], "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains("read-only"),
            "{problem}"
        );
    }
    let (_, now, _) = s.get(&item).await;
    assert_eq!(now["sequence"], 0, "nothing was written: {now}");
    assert_eq!(now["title"], "Cut");
}
