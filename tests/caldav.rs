//! The CalDAV server through the router in process: discovery, authentication,
//! PROPFIND, MKCALENDAR/PROPPATCH, object GET/PUT/DELETE with preconditions,
//! isolation. Over real TCP: the third-party clients (python caldav,
//! caldav-server-tester) and the chunked streaming of large listings.

mod common;

use common::{Gateway, TestGateway, TestServer, booking};
use reqwest::{Method, StatusCode};

fn m(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).expect("method name")
}

const EVENT: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nBEGIN:VEVENT\r\nUID:dentist-1\r\nDTSTAMP:20261101T000000Z\r\nDTSTART;TZID=Europe/Paris:20261222T100000\r\nDTEND;TZID=Europe/Paris:20261222T110000\r\nSUMMARY:Dentist\r\nBEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-PT15M\r\nDESCRIPTION:Reminder\r\nEND:VALARM\r\nX-CUSTOM-THING:kept as is\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

const PROPFIND_DISCOVERY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<A:propfind xmlns:A="DAV:" xmlns:B="urn:ietf:params:xml:ns:caldav" xmlns:X="http://example.com/unknown">
  <A:prop><A:current-user-principal/><A:resourcetype/><A:displayname/><B:calendar-home-set/><X:whatever/></A:prop>
</A:propfind>"#;

struct Dav<'a, S> {
    s: &'a S,
    user: &'a str,
}

impl<S: Gateway> Dav<'_, S> {
    async fn send(
        &self,
        method: &str,
        path: &str,
        depth: Option<&str>,
        body: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut headers = Vec::new();
        if let Some(d) = depth {
            headers.push(("depth", d));
        }
        if method == "PUT" {
            headers.push(("content-type", "text/calendar; charset=utf-8"));
        }
        let body = body.to_owned();
        self.s
            .send_as(self.user, method, path, &headers, body)
            .await
    }

    async fn put(
        &self,
        path: &str,
        body: &str,
        header: Option<(&str, &str)>,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut headers = vec![("content-type", "text/calendar; charset=utf-8")];
        headers.extend(header);
        let body = body.to_owned();
        self.s.send_as(self.user, "PUT", path, &headers, body).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_and_probing() {
    let s = TestGateway::start().await;
    // OPTIONS anywhere, unauthenticated: never a 405.
    for path in ["/", "/dav/", "/some/unknown/path"] {
        let resp = s
            .client
            .request(Method::OPTIONS, s.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(
            resp.headers()["dav"]
                .to_str()
                .unwrap()
                .contains("calendar-access")
        );
    }
    // Well-known redirect (the in-process client follows none).
    let resp = s
        .client
        .get(s.url("/.well-known/caldav"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "/dav/");
    // Unauthenticated first, as clients do: a clean 401, then success.
    let resp = s
        .client
        .request(m("PROPFIND"), s.url("/dav/"))
        .header("depth", "0")
        .body(PROPFIND_DISCOVERY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic realm=\"calgate\"")
    );
    let dav = Dav { s: &s, user: "ana" };
    let (status, _, body) = dav
        .send("PROPFIND", "/dav/", Some("0"), PROPFIND_DISCOVERY)
        .await;
    assert_eq!(status, 207, "{body}");
    assert!(body.contains("<d:current-user-principal><d:href>/dav/principals/ana/</d:href></d:current-user-principal>"), "{body}");
    // Unknown property: 404 propstat, not an error.
    assert!(body.contains("HTTP/1.1 404 Not Found"), "{body}");
    assert!(body.contains("whatever"), "{body}");
    // Thunderbird/GNOME probe "/" with PROPFIND.
    let (status, _, body) = dav
        .send("PROPFIND", "/", Some("0"), PROPFIND_DISCOVERY)
        .await;
    assert_eq!(status, 207);
    assert!(body.contains("/dav/principals/ana/"));
    // The principal points to the home.
    let (status, _, body) = dav
        .send(
            "PROPFIND",
            "/dav/principals/ana/",
            Some("0"),
            PROPFIND_DISCOVERY,
        )
        .await;
    assert_eq!(status, 207);
    assert!(
        body.contains(
            "<cal:calendar-home-set><d:href>/dav/calendars/salon/</d:href></cal:calendar-home-set>"
        ),
        "{body}"
    );
    // Wrong password.
    let resp = s
        .client
        .request(m("PROPFIND"), s.url("/dav/"))
        .basic_auth("ana", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // Depth: infinity is refused with the precondition.
    let (status, _, body) = dav
        .send("PROPFIND", "/dav/calendars/salon/", Some("infinity"), "")
        .await;
    assert_eq!(status, 403);
    assert!(body.contains("propfind-finite-depth"), "{body}");
    // Hostile XML.
    let xxe = r#"<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><d:propfind xmlns:d="DAV:"><d:prop>&x;</d:prop></d:propfind>"#;
    let (status, _, body) = dav.send("PROPFIND", "/dav/", Some("0"), xxe).await;
    assert_eq!(status, 400);
    assert!(body.contains("DOCTYPE"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn calendars_and_objects() {
    let s = TestGateway::start().await;
    let dav = Dav { s: &s, user: "ana" };
    let home = "/dav/calendars/salon/";
    let mk = r#"<?xml version="1.0" encoding="utf-8"?>
<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:I="http://apple.com/ns/ical/">
  <D:set><D:prop><D:displayname>Ana (staff)</D:displayname><I:calendar-color>#FF5733FF</I:calendar-color>
  <C:supported-calendar-component-set><C:comp name="VEVENT"/></C:supported-calendar-component-set></D:prop></D:set>
</C:mkcalendar>"#;
    let (status, _, body) = dav
        .send("MKCALENDAR", "/dav/calendars/salon/ana/", None, mk)
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = dav
        .send("MKCALENDAR", "/dav/calendars/salon/ana/", None, mk)
        .await;
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("resource-must-be-null"));

    let (status, _, body) = dav.send("PROPFIND", home, Some("1"), "").await;
    assert_eq!(status, 207);
    assert!(
        body.contains("<d:href>/dav/calendars/salon/bookings/</d:href>"),
        "{body}"
    );
    assert!(
        body.contains("<d:href>/dav/calendars/salon/ana/</d:href>"),
        "{body}"
    );
    assert!(
        body.contains("<d:displayname>Ana (staff)</d:displayname>"),
        "{body}"
    );
    assert!(body.contains("#FF5733FF"), "{body}");
    assert!(body.contains("<cal:calendar/>"), "{body}");

    // PUT: created, then fetched byte for byte (alarms and X- properties kept).
    let cal = "/dav/calendars/salon/ana/dentist.ics";
    let (status, headers, _) = dav.put(cal, EVENT, Some(("if-none-match", "*"))).await;
    assert_eq!(status, 201);
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let (status, headers, body) = dav.send("GET", cal, None, "").await;
    assert_eq!(status, 200);
    assert_eq!(body, EVENT);
    assert_eq!(headers["etag"].to_str().unwrap(), etag);
    // The booking engine sees it at once.
    let (code, problem, _) = s
        .create(&booking("2026-12-22", "10:30", "11:30", "Clash"))
        .await;
    assert_eq!(code, 409, "{problem}");
    // Preconditions.
    let (status, _, _) = dav.put(cal, EVENT, Some(("if-none-match", "*"))).await;
    assert_eq!(status, 412);
    let (status, _, _) = dav.put(cal, EVENT, Some(("if-match", "\"stale\""))).await;
    assert_eq!(status, 412);
    let moved = EVENT.replace("20261222T1", "20261223T1");
    let (status, headers, _) = dav.put(cal, &moved, Some(("if-match", &etag))).await;
    assert_eq!(status, 204);
    assert_ne!(headers["etag"].to_str().unwrap(), etag);
    assert_eq!(
        s.create(&booking("2026-12-22", "10:30", "11:30", "Now free"))
            .await
            .0,
        201
    );
    // The same UID under another name.
    let (status, _, body) = dav
        .put("/dav/calendars/salon/ana/copy.ics", EVENT, None)
        .await;
    assert_eq!(status, 403);
    assert!(
        body.contains("no-uid-conflict") && body.contains("/dav/calendars/salon/ana/dentist.ics"),
        "{body}"
    );
    // Bad data.
    let (status, _, body) = dav
        .put(
            "/dav/calendars/salon/ana/bad.ics",
            "BEGIN:VCALENDAR\r\nnonsense\r\n",
            None,
        )
        .await;
    assert_eq!(status, 403);
    assert!(body.contains("valid-calendar-data"), "{body}");
    let todo = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTODO\r\nUID:t\r\nSUMMARY:x\r\nEND:VTODO\r\nEND:VCALENDAR\r\n";
    let (status, _, body) = dav
        .put("/dav/calendars/salon/ana/todo.ics", todo, None)
        .await;
    assert_eq!(status, 403);
    assert!(body.contains("supported-calendar-component"), "{body}");
    let resp = s
        .client
        .put(s.url("/dav/calendars/salon/ana/x.ics"))
        .basic_auth("ana", Some("secret"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // PUT into a calendar that does not exist.
    let (status, _, _) = dav
        .put("/dav/calendars/salon/nope/x.ics", EVENT, None)
        .await;
    assert_eq!(status, 409);

    // Objects list with their ETags.
    let (status, _, body) = dav
        .send("PROPFIND", "/dav/calendars/salon/ana/", Some("1"), "")
        .await;
    assert_eq!(status, 207);
    assert!(
        body.contains("/dav/calendars/salon/ana/dentist.ics"),
        "{body}"
    );
    assert!(body.contains("text/calendar"), "{body}");

    // PROPPATCH: all or nothing.
    let patch = r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
      <D:set><D:prop><D:displayname>Ana</D:displayname><C:calendar-description>Chair 2</C:calendar-description></D:prop></D:set></D:propertyupdate>"#;
    let (status, _, body) = dav
        .send("PROPPATCH", "/dav/calendars/salon/ana/", None, patch)
        .await;
    assert_eq!(status, 207);
    assert!(body.contains("HTTP/1.1 200 OK"), "{body}");
    let protected = r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:displayname>X</D:displayname><D:getetag>"1"</D:getetag></D:prop></D:set></D:propertyupdate>"#;
    let (_, _, body) = dav
        .send("PROPPATCH", "/dav/calendars/salon/ana/", None, protected)
        .await;
    assert!(
        body.contains("HTTP/1.1 403 Forbidden") && body.contains("HTTP/1.1 424 Failed Dependency"),
        "{body}"
    );
    let (_, _, body) = dav
        .send("PROPFIND", "/dav/calendars/salon/ana/", Some("0"), "")
        .await;
    assert!(
        body.contains("<d:displayname>Ana</d:displayname>") && body.contains("Chair 2"),
        "{body}"
    );

    // DELETE object, then the calendar.
    let (status, _, _) = dav.send("DELETE", cal, None, "").await;
    assert_eq!(status, 204);
    let (status, _, _) = dav.send("GET", cal, None, "").await;
    assert_eq!(status, 404);
    let (status, _, _) = dav
        .send("DELETE", "/dav/calendars/salon/ana/", None, "")
        .await;
    assert_eq!(status, 204);
    let (status, _, _) = dav
        .send("DELETE", "/dav/calendars/salon/bookings/", None, "")
        .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn bookings_appear_as_objects_and_tenants_stay_apart() {
    let s = TestGateway::start().await;
    let (_, created, _) = s
        .create(&booking("2026-12-01", "10:00", "11:00", "Haircut"))
        .await;
    let id = created["id"].as_str().unwrap();
    let dav = Dav { s: &s, user: "ana" };
    let (status, _, body) = dav
        .send("PROPFIND", "/dav/calendars/salon/bookings/", Some("1"), "")
        .await;
    assert_eq!(status, 207);
    let href = format!("/dav/calendars/salon/bookings/{id}.ics");
    assert!(body.contains(&href), "{body}");
    let (status, headers, body) = dav.send("GET", &href, None, "").await;
    assert_eq!(status, 200);
    assert!(
        body.contains(&format!("UID:{id}")) && body.contains("SUMMARY:Haircut"),
        "{body}"
    );
    assert!(body.contains("BEGIN:VTIMEZONE"), "{body}");
    assert_eq!(
        headers["etag"].to_str().unwrap(),
        created["etag"].as_str().unwrap()
    );

    // Another tenant's user sees nothing of the salon.
    let gus = Dav { s: &s, user: "gus" };
    for (method, path) in [
        ("PROPFIND", "/dav/calendars/salon/"),
        ("GET", href.as_str()),
        ("PROPFIND", "/dav/principals/ana/"),
    ] {
        let (status, _, _) = gus.send(method, path, Some("0"), "").await;
        assert_eq!(status, 404, "{method} {path}");
    }
    let (status, _, _) = gus.send("DELETE", &href, None, "").await;
    assert_eq!(status, 404);
    // The salon's booking is still there.
    let (status, _, _) = dav.send("GET", &href, None, "").await;
    assert_eq!(status, 200);
    // Deleting the object deletes the booking.
    let (status, _, _) = dav.send("DELETE", &href, None, "").await;
    assert_eq!(status, 204);
    let (status, _, _) = s.get(&format!("/api/v1/tenants/salon/bookings/{id}")).await;
    assert_eq!(status, 404);
}

const WEEKLY: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nBEGIN:VEVENT\r\nUID:weekly-1\r\nDTSTAMP:20261101T000000Z\r\nDTSTART;TZID=Europe/Paris:20261130T090000\r\nDTEND;TZID=Europe/Paris:20261130T100000\r\nRRULE:FREQ=WEEKLY;COUNT=10\r\nSUMMARY:Team meeting\r\nLOCATION:Back room\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

fn report_body(inner: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>{inner}")
}

#[tokio::test(flavor = "multi_thread")]
async fn reports() {
    let s = TestGateway::start().await;
    let dav = Dav { s: &s, user: "ana" };
    let cal = "/dav/calendars/salon/staff/";
    assert_eq!(dav.send("MKCALENDAR", cal, None, "").await.0, 201);
    assert_eq!(
        dav.put("/dav/calendars/salon/staff/weekly.ics", WEEKLY, None)
            .await
            .0,
        201
    );
    assert_eq!(
        dav.put("/dav/calendars/salon/staff/dentist.ics", EVENT, None)
            .await
            .0,
        201
    );

    // calendar-query: the weekly meeting matches a week in January it recurs in.
    let query = |start: &str, end: &str, extra: &str| {
        report_body(&format!(
            r#"<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/></D:prop>
            <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"><C:time-range start="{start}" end="{end}"/>{extra}</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"#
        ))
    };
    let (status, _, body) = dav
        .send(
            "REPORT",
            cal,
            Some("1"),
            &query("20270111T000000Z", "20270112T000000Z", ""),
        )
        .await;
    assert_eq!(status, 207, "{body}");
    assert!(
        body.contains("weekly.ics") && !body.contains("dentist.ics"),
        "{body}"
    );
    // After COUNT=10 ends: nothing.
    let (_, _, body) = dav
        .send(
            "REPORT",
            cal,
            Some("1"),
            &query("20270301T000000Z", "20270308T000000Z", ""),
        )
        .await;
    assert!(!body.contains("weekly.ics"), "{body}");
    // text-match, case-insensitive by default; negated.
    let tm =
        r#"<C:prop-filter name="SUMMARY"><C:text-match>DENTIST</C:text-match></C:prop-filter>"#;
    let (_, _, body) = dav
        .send(
            "REPORT",
            cal,
            Some("1"),
            &query("20261201T000000Z", "20261231T000000Z", tm),
        )
        .await;
    assert!(
        body.contains("dentist.ics") && !body.contains("weekly.ics"),
        "{body}"
    );
    let neg = r#"<C:prop-filter name="SUMMARY"><C:text-match negate-condition="yes">dentist</C:text-match></C:prop-filter>"#;
    let (_, _, body) = dav
        .send(
            "REPORT",
            cal,
            Some("1"),
            &query("20261201T000000Z", "20261231T000000Z", neg),
        )
        .await;
    assert!(
        !body.contains("dentist.ics") && body.contains("weekly.ics"),
        "{body}"
    );
    let bad = r#"<C:prop-filter name="SUMMARY"><C:text-match collation="i;klingon">x</C:text-match></C:prop-filter>"#;
    let (status, _, body) = dav
        .send(
            "REPORT",
            cal,
            Some("1"),
            &query("20261201T000000Z", "20261231T000000Z", bad),
        )
        .await;
    assert_eq!(status, 403);
    assert!(body.contains("supported-collation"), "{body}");

    // expand: instances in UTC with RECURRENCE-ID, no RRULE, no VTIMEZONE.
    let expand = report_body(
        r#"<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><C:calendar-data><C:expand start="20261207T000000Z" end="20261221T000000Z"/></C:calendar-data></D:prop>
        <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"><C:time-range start="20261207T000000Z" end="20261221T000000Z"/></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"#,
    );
    let (status, _, body) = dav.send("REPORT", cal, Some("1"), &expand).await;
    assert_eq!(status, 207, "{body}");
    assert!(
        body.contains("DTSTART:20261207T080000Z")
            && body.contains("RECURRENCE-ID:20261214T080000Z"),
        "{body}"
    );
    assert!(
        !body.contains("RRULE") && !body.contains("VTIMEZONE"),
        "{body}"
    );
    assert_eq!(body.matches("BEGIN:VEVENT").count(), 2, "{body}"); // two meetings (the dentist is on the 22nd)

    // Outside the materialised horizon (old dates, open-ended ranges): still found.
    let old = EVENT
        .replace("dentist-1", "old-1")
        .replace("20261222T1", "20050110T1");
    assert_eq!(
        dav.put("/dav/calendars/salon/staff/old.ics", &old, None)
            .await
            .0,
        201
    );
    let (_, _, body) = dav
        .send(
            "REPORT",
            cal,
            Some("1"),
            &query("20050101T000000Z", "20050201T000000Z", ""),
        )
        .await;
    assert!(
        body.contains("old.ics") && !body.contains("weekly.ics"),
        "{body}"
    );
    let open_ended = report_body(
        r#"<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/></D:prop>
        <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"><C:time-range start="20261215T000000Z"/></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"#,
    );
    let (_, _, body) = dav.send("REPORT", cal, Some("1"), &open_ended).await;
    assert!(
        body.contains("weekly.ics") && body.contains("dentist.ics") && !body.contains("old.ics"),
        "{body}"
    );

    // multiget, with one unknown href.
    let mg = report_body(
        r#"<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/></D:prop>
        <D:href>/dav/calendars/salon/staff/dentist.ics</D:href><D:href>/dav/calendars/salon/staff/missing.ics</D:href></C:calendar-multiget>"#,
    );
    let (status, _, body) = dav.send("REPORT", cal, Some("1"), &mg).await;
    assert_eq!(status, 207);
    assert!(
        body.contains("SUMMARY:Dentist") && body.contains("X-CUSTOM-THING"),
        "{body}"
    );
    assert!(
        body.contains("missing.ics") && body.contains("404"),
        "{body}"
    );

    // free-busy-query answers VFREEBUSY.
    let fb = report_body(
        r#"<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav"><C:time-range start="20261222T000000Z" end="20261223T000000Z"/></C:free-busy-query>"#,
    );
    let (status, headers, body) = dav.send("REPORT", cal, Some("1"), &fb).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/calendar")
    );
    assert!(
        body.contains("FREEBUSY;FBTYPE=BUSY:20261222T090000Z/20261222T100000Z"),
        "{body}"
    );
}

fn sync(token: &str, limit: Option<u32>) -> String {
    let limit = limit
        .map(|n| format!("<D:limit><D:nresults>{n}</D:nresults></D:limit>"))
        .unwrap_or_default();
    report_body(&format!(
        r#"<D:sync-collection xmlns:D="DAV:"><D:sync-token>{token}</D:sync-token><D:sync-level>1</D:sync-level>{limit}<D:prop><D:getetag/></D:prop></D:sync-collection>"#
    ))
}

fn token_of(body: &str) -> String {
    let start = body.find("<d:sync-token>").expect("sync-token") + "<d:sync-token>".len();
    body[start..start + body[start..].find('<').unwrap()].to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_collection_with_limits_deletions_and_restarts() {
    let s = TestGateway::start().await;
    let dav = Dav { s: &s, user: "ana" };
    let cal = "/dav/calendars/salon/staff/";
    assert_eq!(dav.send("MKCALENDAR", cal, None, "").await.0, 201);
    for i in 0..5 {
        let ics = EVENT.replace("dentist-1", &format!("ev-{i}"));
        assert_eq!(dav.put(&format!("{cal}ev{i}.ics"), &ics, None).await.0, 201);
    }
    // Initial sync, two at a time: truncated with 507 on the collection, and a token
    // from which the rest follows; nothing lost.
    let mut seen = std::collections::BTreeSet::new();
    let mut token = String::new();
    for round in 0..3 {
        let (status, _, body) = dav
            .send("REPORT", cal, Some("1"), &sync(&token, Some(2)))
            .await;
        assert_eq!(status, 207, "{body}");
        for i in 0..5 {
            if body.contains(&format!("ev{i}.ics")) {
                seen.insert(i);
            }
        }
        let truncated = body.contains("507 Insufficient Storage");
        assert_eq!(truncated, round < 2, "round {round}: {body}");
        if truncated {
            assert!(body.contains("number-of-matches-within-limits"), "{body}");
        }
        token = token_of(&body);
    }
    assert_eq!(seen.len(), 5);
    // Incremental: one change and one deletion.
    let changed = EVENT
        .replace("dentist-1", "ev-1")
        .replace("Dentist", "Dentist (moved)");
    assert_eq!(
        dav.put(&format!("{cal}ev1.ics"), &changed, None).await.0,
        204
    );
    assert_eq!(
        dav.send("DELETE", &format!("{cal}ev3.ics"), None, "")
            .await
            .0,
        204
    );
    // Tokens survive a restart.
    let s = s.restart().await;
    let dav = Dav { s: &s, user: "ana" };
    let (status, _, body) = dav
        .send("REPORT", cal, Some("1"), &sync(&token, None))
        .await;
    assert_eq!(status, 207, "{body}");
    assert!(
        body.contains("ev1.ics") && body.contains("ev3.ics") && !body.contains("ev0.ics"),
        "{body}"
    );
    assert!(
        body.contains("HTTP/1.1 404 Not Found"),
        "the deletion is reported: {body}"
    );
    let next = token_of(&body);
    let (_, _, body) = dav.send("REPORT", cal, Some("1"), &sync(&next, None)).await;
    assert!(!body.contains(".ics"), "nothing new: {body}");
    // Invalid tokens, and tokens of another calendar.
    for bad in [
        "garbage",
        "urn:calgate:sync:salon:staff:999999",
        "urn:calgate:sync:garage:staff:1",
        "urn:calgate:sync:salon:bookings:1",
    ] {
        let (status, _, body) = dav.send("REPORT", cal, Some("1"), &sync(bad, None)).await;
        assert_eq!(status, 403, "{bad}: {body}");
        assert!(body.contains("valid-sync-token"), "{body}");
    }
    // Bookings sync too: an API change shows up in the next sync.
    let (_, _, body) = dav
        .send(
            "REPORT",
            "/dav/calendars/salon/bookings/",
            Some("1"),
            &sync("", None),
        )
        .await;
    let token = token_of(&body);
    let (_, created, _) = s
        .create(&booking("2026-12-05", "10:00", "11:00", "New"))
        .await;
    let (_, _, body) = dav
        .send(
            "REPORT",
            "/dav/calendars/salon/bookings/",
            Some("1"),
            &sync(&token, None),
        )
        .await;
    assert!(
        body.contains(&format!("{}.ics", created["id"].as_str().unwrap())),
        "{body}"
    );
}

/// Interop: the third-party python `caldav` client drives a whole scenario.
#[tokio::test(flavor = "multi_thread")]
async fn python_caldav_client_scenario() {
    let s = TestServer::start().await;
    let base = format!("{}/", s.base);
    let out = tokio::task::spawn_blocking(move || {
        common::run_python("caldav_scenario.py", &[&base, "ana", "secret"])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python caldav scenario failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all steps passed"), "{stdout}");
}

/// The third-party caldav-server-tester (python caldav's compatibility checker):
/// every feature in fixtures/peercheck/expected.json marked PASS must still pass.
#[tokio::test(flavor = "multi_thread")]
async fn caldav_server_tester_finds_no_regression() {
    let s = TestServer::start().await;
    let base = format!("{}/", s.base);
    let root = env!("CARGO_MANIFEST_DIR");
    let expected = format!("{root}/fixtures/peercheck/expected.json");
    let report = format!("{}/server_tester_report.json", env!("CARGO_TARGET_TMPDIR"));
    let out = tokio::task::spawn_blocking(move || {
        common::run_python(
            "server_tester.py",
            // bea: a second user of the salon, for the multi-user scheduling checks.
            &[&base, "ana", "secret", &expected, &report, "bea:secret"],
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "caldav-server-tester regressions:\n{stdout}\n{}",
        stderr.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    assert!(stdout.contains(" passed, "), "{stdout}");
}

/// RFC 6638 free/busy through the scheduling outbox, as Apple Calendar asks it.
#[tokio::test(flavor = "multi_thread")]
async fn outbox_answers_free_busy_requests() {
    let s = TestGateway::start().await;
    let dav = Dav { s: &s, user: "ana" };
    assert_eq!(
        dav.send("MKCALENDAR", "/dav/calendars/salon/staff/", None, "")
            .await
            .0,
        201
    );
    assert_eq!(
        dav.put("/dav/calendars/salon/staff/dentist.ics", EVENT, None)
            .await
            .0,
        201
    );
    s.create(&booking("2026-12-22", "14:00", "15:00", "Cut"))
        .await;
    // The principal names the outbox.
    let (_, _, body) = dav
        .send("PROPFIND", "/dav/principals/ana/", Some("0"), "")
        .await;
    assert!(
        body.contains("<cal:schedule-outbox-URL><d:href>/dav/calendars/salon/outbox/</d:href>"),
        "{body}"
    );
    let request = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Apple Inc.//Mac OS X//EN\r\nMETHOD:REQUEST\r\nBEGIN:VFREEBUSY\r\nUID:fb-1\r\nDTSTAMP:20261201T000000Z\r\nDTSTART:20261222T000000Z\r\nDTEND:20261223T000000Z\r\nORGANIZER:mailto:ana@salon.calgate.invalid\r\nATTENDEE:mailto:ana@salon.calgate.invalid\r\nATTENDEE:mailto:nobody@example.com\r\nEND:VFREEBUSY\r\nEND:VCALENDAR\r\n";
    let resp = s
        .client
        .post(s.url("/dav/calendars/salon/outbox/"))
        .basic_auth("ana", Some("secret"))
        .header("content-type", "text/calendar; charset=utf-8")
        .body(request)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    assert!(body.contains("<cal:schedule-response"), "{body}");
    assert!(
        body.contains("2.0;Success") && body.contains("3.7;Invalid calendar user"),
        "{body}"
    );
    // The staff event (09:00-10:00Z) and the booking (13:00-14:00Z), merged busy time.
    assert!(
        body.contains("FREEBUSY;FBTYPE=BUSY:20261222T090000Z/20261222T100000Z"),
        "{body}"
    );
    assert!(
        body.contains("FREEBUSY;FBTYPE=BUSY:20261222T130000Z/20261222T140000Z"),
        "{body}"
    );
    // Not a free/busy request.
    let resp = s
        .client
        .post(s.url("/dav/calendars/salon/outbox/"))
        .basic_auth("ana", Some("secret"))
        .body(request.replace("METHOD:REQUEST", "METHOD:PUBLISH"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("valid-scheduling-message")
    );
}

const APPOINTMENT: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Apple Inc.//macOS 15.0//EN\r\nBEGIN:VEVENT\r\nUID:3F2504E0-4F89-11D3-9A0C-0305E82C3301\r\nDTSTAMP:20261101T000000Z\r\nDTSTART;TZID=Europe/Paris:20261210T100000\r\nDTEND;TZID=Europe/Paris:20261210T110000\r\nSUMMARY:Colour\r\nLOCATION:Chair 1\r\nDESCRIPTION:Bring the swatches\r\nX-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC\r\nBEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-PT30M\r\nDESCRIPTION:Reminder\r\nEND:VALARM\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn bookings_written_over_caldav_are_bookings() {
    let s = TestGateway::start().await;
    let dav = Dav { s: &s, user: "ana" };
    let href = "/dav/calendars/salon/bookings/appt-1.ics";
    let (status, headers, body) = dav
        .put(href, APPOINTMENT, Some(("if-none-match", "*")))
        .await;
    assert_eq!(status, 201, "{body}");
    let etag = headers["etag"].to_str().unwrap().to_owned();

    // The booking engine has it.
    let (status, b, api_etag) = s.get("/api/v1/tenants/salon/bookings/appt-1").await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["title"], "Colour");
    assert_eq!(b["start"], "2026-12-10T10:00:00+01:00");
    assert_eq!(b["end"], "2026-12-10T11:00:00+01:00");
    assert_eq!(b["time_zone"], "Europe/Paris");
    assert_eq!(b["location"], "Chair 1");
    assert_eq!(b["notes"], "Bring the swatches");
    assert_eq!(b["uid"], "3F2504E0-4F89-11D3-9A0C-0305E82C3301");
    assert_eq!(api_etag.as_deref(), Some(etag.as_str()));
    // What the client PUT, it gets back (alarm and X- property included).
    let (_, _, text) = dav.send("GET", href, None, "").await;
    assert_eq!(text, APPOINTMENT);
    // It blocks time.
    let (code, _, _) = s
        .create(&booking("2026-12-10", "10:30", "11:30", "Clash"))
        .await;
    assert_eq!(code, 409);

    // Preconditions and refusals.
    assert_eq!(
        dav.put(href, APPOINTMENT, Some(("if-none-match", "*")))
            .await
            .0,
        412
    );
    let (status, _, body) = dav
        .put(
            "/dav/calendars/salon/bookings/appt-2.ics",
            APPOINTMENT,
            None,
        )
        .await;
    assert_eq!(status, 403);
    assert!(
        body.contains("no-uid-conflict") && body.contains("appt-1.ics"),
        "{body}"
    );
    let overlapping = APPOINTMENT.replace("3F2504E0-4F89-11D3-9A0C-0305E82C3301", "other-uid");
    let (status, _, body) = dav
        .put(
            "/dav/calendars/salon/bookings/appt-3.ics",
            &overlapping,
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let recurring = overlapping.replace("SUMMARY:Colour", "SUMMARY:Colour\r\nRRULE:FREQ=WEEKLY");
    let (status, _, body) = dav
        .put("/dav/calendars/salon/bookings/appt-4.ics", &recurring, None)
        .await;
    assert_eq!(status, 403);
    assert!(body.contains("valid-calendar-object-resource"), "{body}");

    // Moved in the client (with its ETag): the booking moves, the notes stay.
    let moved = APPOINTMENT.replace("20261210T1", "20261211T1");
    let (status, headers, _) = dav.put(href, &moved, Some(("if-match", &etag))).await;
    assert_eq!(status, 204);
    let (_, b, _) = s.get("/api/v1/tenants/salon/bookings/appt-1").await;
    assert_eq!(b["start"], "2026-12-11T10:00:00+01:00");
    assert_eq!(b["notes"], "Bring the swatches");
    assert_eq!(
        dav.put(href, &moved, Some(("if-match", &etag))).await.0,
        412,
        "stale ETag"
    );
    assert_ne!(headers["etag"].to_str().unwrap(), etag);

    // Changed through the API: the client now gets the booking as it is.
    let resp = s
        .client
        .patch(s.url("/api/v1/tenants/salon/bookings/appt-1"))
        .bearer_auth(common::SALON_KEY)
        .json(&serde_json::json!({"title": "Colour and cut"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, _, text) = dav.send("GET", href, None, "").await;
    assert!(
        text.contains("SUMMARY:Colour and cut")
            && text.contains("UID:3F2504E0-4F89-11D3-9A0C-0305E82C3301"),
        "{text}"
    );
    assert!(
        text.contains("DTSTART;TZID=Europe/Paris:20261211T100000"),
        "{text}"
    );
    // ... and keeps what the client added: its alarm and X- property, once each.
    assert_eq!(text.matches("BEGIN:VALARM").count(), 1, "{text}");
    assert!(
        text.contains("X-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC"),
        "{text}"
    );
    assert_eq!(
        text.matches("SUMMARY:").count(),
        1,
        "the booking's title only: {text}"
    );
    assert!(text.contains("TRIGGER:-PT30M"), "{text}");
}

/// Calendars may hold tasks (as clients expect); tasks never block time.
#[tokio::test(flavor = "multi_thread")]
async fn task_calendars() {
    let s = TestGateway::start().await;
    let dav = Dav { s: &s, user: "ana" };
    let mk = r#"<?xml version="1.0"?><C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop>
      <C:supported-calendar-component-set><C:comp name="VTODO"/></C:supported-calendar-component-set></D:prop></D:set></C:mkcalendar>"#;
    assert_eq!(
        dav.send("MKCALENDAR", "/dav/calendars/salon/tasks/", None, mk)
            .await
            .0,
        201
    );
    let (_, _, body) = dav
        .send("PROPFIND", "/dav/calendars/salon/tasks/", Some("0"), "")
        .await;
    assert!(body.contains("<cal:comp name=\"VTODO\"/>"), "{body}");
    let todo = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nBEGIN:VTODO\r\nUID:todo-1\r\nDTSTAMP:20261101T000000Z\r\nDUE:20261222T100000Z\r\nSUMMARY:Order dye\r\nEND:VTODO\r\nEND:VCALENDAR\r\n";
    assert_eq!(
        dav.put("/dav/calendars/salon/tasks/t1.ics", todo, None)
            .await
            .0,
        201
    );
    // Events do not belong here; tasks do not belong in an event calendar.
    let (status, _, body) = dav
        .put("/dav/calendars/salon/tasks/e1.ics", EVENT, None)
        .await;
    assert_eq!(status, 403);
    assert!(body.contains("supported-calendar-component"), "{body}");
    let query = |start: &str, end: &str| {
        report_body(&format!(
            r#"<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/></D:prop>
            <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VTODO"><C:time-range start="{start}" end="{end}"/></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"#
        ))
    };
    let (_, _, body) = dav
        .send(
            "REPORT",
            "/dav/calendars/salon/tasks/",
            Some("1"),
            &query("20261222T000000Z", "20261223T000000Z"),
        )
        .await;
    assert!(body.contains("t1.ics"), "{body}");
    let (_, _, body) = dav
        .send(
            "REPORT",
            "/dav/calendars/salon/tasks/",
            Some("1"),
            &query("20270101T000000Z", "20270102T000000Z"),
        )
        .await;
    assert!(!body.contains("t1.ics"), "{body}");
    // A calendar made without a component set holds events and tasks; an event
    // query there returns only the events.
    assert_eq!(
        dav.send("MKCALENDAR", "/dav/calendars/salon/mixed/", None, "")
            .await
            .0,
        201
    );
    assert_eq!(
        dav.put("/dav/calendars/salon/mixed/t.ics", todo, None)
            .await
            .0,
        201
    );
    assert_eq!(
        dav.put("/dav/calendars/salon/mixed/e.ics", EVENT, None)
            .await
            .0,
        201
    );
    let events = report_body(
        r#"<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/></D:prop>
        <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"/></C:comp-filter></C:filter></C:calendar-query>"#,
    );
    let (_, _, body) = dav
        .send("REPORT", "/dav/calendars/salon/mixed/", Some("1"), &events)
        .await;
    assert!(body.contains("e.ics") && !body.contains("t.ics"), "{body}");
    // If-Match: * needs something to match.
    assert_eq!(
        dav.put(
            "/dav/calendars/salon/mixed/new.ics",
            &EVENT.replace("dentist-1", "n"),
            Some(("if-match", "*"))
        )
        .await
        .0,
        412
    );
    assert_eq!(
        dav.put(
            "/dav/calendars/salon/mixed/e.ics",
            EVENT,
            Some(("if-match", "*"))
        )
        .await
        .0,
        204
    );
    // The task is due at 11:00 Paris (after the event); it blocks nothing.
    assert_eq!(
        s.create(&booking("2026-12-22", "11:00", "11:30", "Free"))
            .await
            .0,
        201
    );
}

/// Bad request bodies and headers get precise 4xx answers, never a 500.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_puts() {
    let s = TestGateway::start().await;
    let dav = Dav { s: &s, user: "ana" };
    assert_eq!(
        dav.send("MKCALENDAR", "/dav/calendars/salon/staff/", None, "")
            .await
            .0,
        201
    );
    let resp = s
        .client
        .put(s.url("/dav/calendars/salon/staff/latin1.ics"))
        .basic_auth("ana", Some("secret"))
        .header("content-type", "text/calendar")
        .body(b"BEGIN:VCALENDAR\r\nSUMMARY:Caf\xe9\r\nEND:VCALENDAR\r\n".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("valid-calendar-data"));
    let (status, _, body) = dav
        .put(
            "/dav/calendars/salon/staff/x.ics",
            EVENT,
            Some(("if-match", "not-quoted")),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("If-Match"), "{body}");
    // Same for a booking resource name that cannot be a booking id.
    let (status, _, body) = dav
        .put("/dav/calendars/salon/bookings/a%20b.ics", APPOINTMENT, None)
        .await;
    assert_eq!(status, 400, "{body}");
}

/// Recurring tasks match the weeks they recur in, expand into instances; alarms are
/// searched by trigger time; principals are found by name.
#[tokio::test(flavor = "multi_thread")]
async fn recurring_tasks_alarms_and_principal_search() {
    let s = TestGateway::start().await;
    let dav = Dav { s: &s, user: "ana" };
    assert_eq!(
        dav.send("MKCALENDAR", "/dav/calendars/salon/team@salon/", None, "")
            .await
            .0,
        201
    );
    let cal = "/dav/calendars/salon/team@salon/";
    let task = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nBEGIN:VTODO\r\nUID:weekly-task\r\nDTSTAMP:20261101T000000Z\r\nDTSTART:20270104T090000Z\r\nDUE:20270104T100000Z\r\nRRULE:FREQ=WEEKLY;COUNT=4\r\nSUMMARY:Clean the chairs\r\nEND:VTODO\r\nEND:VCALENDAR\r\n";
    assert_eq!(dav.put(&format!("{cal}task.ics"), task, None).await.0, 201);
    assert_eq!(
        dav.put(&format!("{cal}event.ics"), EVENT, None).await.0,
        201
    );
    let todo_query = |start: &str, end: &str, data: &str| {
        report_body(&format!(
            r#"<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/>{data}</D:prop>
            <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VTODO"><C:time-range start="{start}" end="{end}"/></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"#
        ))
    };
    // The third week holds an instance; the fifth does not.
    let (_, _, body) = dav
        .send(
            "REPORT",
            cal,
            Some("1"),
            &todo_query("20270118T000000Z", "20270119T000000Z", ""),
        )
        .await;
    assert!(
        body.contains("task.ics") && !body.contains("event.ics"),
        "{body}"
    );
    let (_, _, body) = dav
        .send(
            "REPORT",
            cal,
            Some("1"),
            &todo_query("20270201T000000Z", "20270202T000000Z", ""),
        )
        .await;
    assert!(!body.contains("task.ics"), "{body}");
    // Expanded: the two instances in the window, in UTC, each with its RECURRENCE-ID.
    let expand = r#"<C:calendar-data><C:expand start="20270110T000000Z" end="20270120T000000Z"/></C:calendar-data>"#;
    let (_, _, body) = dav
        .send(
            "REPORT",
            cal,
            Some("1"),
            &todo_query("20270110T000000Z", "20270120T000000Z", expand),
        )
        .await;
    assert_eq!(body.matches("BEGIN:VTODO").count(), 2, "{body}");
    assert!(body.contains("RECURRENCE-ID:20270111T090000Z"), "{body}");
    assert!(
        body.contains("DUE:20270118T100000Z") && !body.contains("RRULE"),
        "{body}"
    );
    // The dentist (10:00 Paris = 09:00 UTC) reminds 15 minutes before.
    let alarm_query = |start: &str, end: &str| {
        report_body(&format!(
            r#"<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/></D:prop>
            <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"><C:comp-filter name="VALARM"><C:time-range start="{start}" end="{end}"/></C:comp-filter></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"#
        ))
    };
    let (_, _, body) = dav
        .send(
            "REPORT",
            cal,
            Some("1"),
            &alarm_query("20261222T084000Z", "20261222T085000Z"),
        )
        .await;
    assert!(body.contains("event.ics"), "{body}");
    let (_, _, body) = dav
        .send(
            "REPORT",
            cal,
            Some("1"),
            &alarm_query("20261222T090000Z", "20261222T091500Z"),
        )
        .await;
    assert!(!body.contains("event.ics"), "{body}");
    // Principal search on "/" as python caldav sends it (properties beside D:prop).
    let search = |name: &str| {
        format!(
            r#"<D:principal-property-search xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:property-search><D:prop><D:displayname/></D:prop><D:match>{name}</D:match></D:property-search><D:prop/><C:calendar-home-set/><D:displayname/></D:principal-property-search>"#
        )
    };
    let (status, _, body) = dav.send("REPORT", "/", None, &search("AN")).await;
    assert_eq!(status, 207);
    assert!(body.contains("/dav/principals/ana/"), "{body}");
    assert!(
        body.contains("<d:displayname>ana</d:displayname>"),
        "{body}"
    );
    assert!(
        body.contains("/dav/calendars/salon/</d:href></cal:calendar-home-set>"),
        "{body}"
    );
    let (_, _, body) = dav.send("REPORT", "/", None, &search("gus")).await;
    assert!(
        !body.contains("/dav/principals/"),
        "another tenant's user: {body}"
    );
    let (status, _, body) = dav
        .send(
            "REPORT",
            "/dav/principals/",
            None,
            r#"<D:principal-search-property-set xmlns:D="DAV:"/>"#,
        )
        .await;
    assert_eq!(status, 200);
    assert!(body.contains("displayname"), "{body}");
}

/// Collection-wide answers larger than a chunk are streamed (chunked transfer, no
/// Content-Length) and still complete, well-formed multistatus documents.
#[tokio::test(flavor = "multi_thread")]
async fn large_listings_stream() {
    let s = TestServer::start().await;
    let dav = Dav { s: &s, user: "ana" };
    s.add_source("big", false);
    let objects = 400;
    for i in 0..objects {
        let ics = EVENT
            .replace("dentist-1", &format!("big-{i}"))
            .replace("20261222T1", &format!("202612{:02}T1", 1 + i % 28));
        s.put_ics("big", &format!("e{i}.ics"), &ics).await;
    }
    let check = |headers: &reqwest::header::HeaderMap, body: &str, members: usize| {
        assert!(headers.get("content-length").is_none(), "{headers:?}");
        assert_eq!(headers["transfer-encoding"], "chunked");
        assert!(body.len() > 64 * 1024, "{}", body.len());
        assert_eq!(body.matches("<d:response>").count(), members);
        assert!(
            body.trim_end().ends_with("</d:multistatus>"),
            "complete document"
        );
    };
    let (status, headers, body) = dav
        .send(
            "PROPFIND",
            "/dav/calendars/salon/big/",
            Some("1"),
            r#"<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><D:getcontenttype/><D:resourcetype/><D:displayname/><D:getcontentlength/></D:prop></D:propfind>"#,
        )
        .await;
    assert_eq!(status, 207);
    check(&headers, &body, objects + 1);
    let query = report_body(
        r#"<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/></D:prop>
        <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"><C:time-range start="20261201T000000Z" end="20270101T000000Z"/></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"#,
    );
    let (status, headers, body) = dav
        .send("REPORT", "/dav/calendars/salon/big/", Some("1"), &query)
        .await;
    assert_eq!(status, 207);
    check(&headers, &body, objects);
    let (status, headers, body) = dav
        .send(
            "REPORT",
            "/dav/calendars/salon/big/",
            Some("1"),
            &sync("", None),
        )
        .await;
    assert_eq!(status, 207);
    check(&headers, &body, objects);
    assert!(body.contains("<d:sync-token>"), "token closes the answer");
}

/// The hrefs and ETags of a multistatus, in document order.
fn hrefs_and_etags(body: &str) -> Vec<(String, String)> {
    body.split("<d:response>")
        .skip(1)
        .filter_map(|r| {
            let href = r.split("<d:href>").nth(1)?.split('<').next()?.to_owned();
            let etag = r.split("<d:getetag>").nth(1)?.split('<').next()?.to_owned();
            Some((href, etag))
        })
        .collect()
}

/// Collection listings (PROPFIND Depth 1, initial sync-collection) and expanded
/// queries are answered from what the server keeps in memory; every write, over
/// CalDAV or the booking API, must show in the very next answer.
#[tokio::test(flavor = "multi_thread")]
async fn listings_and_expansions_follow_every_change() {
    let s = TestGateway::start().await;
    let dav = Dav { s: &s, user: "ana" };
    let cal = "/dav/calendars/salon/staff/";
    assert_eq!(dav.send("MKCALENDAR", cal, None, "").await.0, 201);
    let propfind = r#"<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><D:getcontentlength/></D:prop></D:propfind>"#;
    let listing = |body: String| {
        hrefs_and_etags(&body)
            .into_iter()
            .filter(|(h, _)| h.ends_with(".ics"))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    for i in 0..3 {
        let ics = EVENT.replace("dentist-1", &format!("ev-{i}"));
        assert_eq!(dav.put(&format!("{cal}ev{i}.ics"), &ics, None).await.0, 201);
    }
    let first = listing(dav.send("PROPFIND", cal, Some("1"), propfind).await.2);
    assert_eq!(first.len(), 3, "{first:?}");
    // Event `n` renamed; answers the new ETag.
    let dav = &dav;
    let rename = |n: u32, summary: &'static str| async move {
        let ics = EVENT
            .replace("dentist-1", &format!("ev-{n}"))
            .replace("Dentist", summary);
        let (_, headers, _) = dav.put(&format!("{cal}ev{n}.ics"), &ics, None).await;
        headers["etag"].to_str().unwrap_or_default().to_owned()
    };
    // A change, a new member and a deletion, then the same request again.
    let new_etag = rename(1, "Dentist, moved").await;
    let ics = EVENT.replace("dentist-1", "ev-9");
    assert_eq!(dav.put(&format!("{cal}ev9.ics"), &ics, None).await.0, 201);
    assert_eq!(
        dav.send("DELETE", &format!("{cal}ev0.ics"), None, "")
            .await
            .0,
        204
    );
    let second = listing(dav.send("PROPFIND", cal, Some("1"), propfind).await.2);
    let names: Vec<&str> = second.keys().map(|h| &h[cal.len()..]).collect();
    assert_eq!(names, ["ev1.ics", "ev2.ics", "ev9.ics"]);
    assert_eq!(second[&format!("{cal}ev1.ics")], new_etag);
    assert_ne!(first[&format!("{cal}ev1.ics")], new_etag);
    assert_eq!(
        second[&format!("{cal}ev2.ics")],
        first[&format!("{cal}ev2.ics")]
    );
    // An initial sync lists the same members and ETags, oldest change first.
    let (_, _, body) = dav.send("REPORT", cal, Some("1"), &sync("", None)).await;
    let synced = hrefs_and_etags(&body);
    let order: Vec<&str> = synced.iter().map(|(h, _)| &h[cal.len()..]).collect();
    assert_eq!(order, ["ev2.ics", "ev1.ics", "ev9.ics"]);
    assert_eq!(
        synced
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
        second
    );

    // Multiget answers from the stored text: the new version, 404 for the deleted,
    // the same bytes whichever properties are asked beside calendar-data.
    let multiget = |props: &str| {
        report_body(&format!(
            r#"<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop>{props}</D:prop><D:href>{cal}ev1.ics</D:href><D:href>{cal}ev0.ics</D:href><D:href>{cal}ev2.ics</D:href></C:calendar-multiget>"#
        ))
    };
    let fast_request = multiget("<D:getetag/><C:calendar-data/>");
    let (status, _, fast) = dav.send("REPORT", cal, None, &fast_request).await;
    assert_eq!(status, 207);
    assert_eq!(hrefs_and_etags(&fast).len(), 2, "{fast}");
    assert!(
        fast.contains(&format!("<d:getetag>{new_etag}</d:getetag>")),
        "{fast}"
    );
    assert!(fast.contains("SUMMARY:Dentist, moved&#13;"), "{fast}");
    assert!(
        fast.contains(&format!(
            "<d:href>{cal}ev0.ics</d:href><d:status>HTTP/1.1 404 Not Found</d:status>"
        )),
        "{fast}"
    );
    let (_, _, general) = dav
        .send(
            "REPORT",
            cal,
            None,
            &multiget("<D:getetag/><C:calendar-data/><D:getcontenttype/>"),
        )
        .await;
    let data = |body: &str| -> Vec<String> {
        body.split("<cal:calendar-data>")
            .skip(1)
            .filter_map(|d| d.split("</cal:calendar-data>").next().map(str::to_owned))
            .collect()
    };
    assert_eq!(data(&fast), data(&general));
    assert_eq!(data(&fast).len(), 2);
    assert!(
        general.contains("<d:getcontenttype>text/calendar"),
        "{general}"
    );
    // The bodies that multiget kept in memory do not outlive a change.
    let ev2_etag = rename(2, "Dentist, again").await;
    let (_, _, again) = dav.send("REPORT", cal, None, &fast_request).await;
    assert!(again.contains("SUMMARY:Dentist, again&#13;"), "{again}");
    assert!(
        again.contains(&format!("<d:getetag>{ev2_etag}</d:getetag>")),
        "{again}"
    );
    assert!(again.contains("SUMMARY:Dentist, moved&#13;"), "{again}");

    // Bookings: an API move changes the member's ETag in the next listing.
    let (status, created, etag) = s
        .create(&booking("2026-12-07", "10:00", "11:00", "Cut"))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let bookings = "/dav/calendars/salon/bookings/";
    let href = format!("{bookings}{id}.ics");
    let before = listing(dav.send("PROPFIND", bookings, Some("1"), propfind).await.2);
    assert!(before.contains_key(&href), "{before:?}");
    let booking_multiget = report_body(&format!(
        r#"<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/></D:prop><D:href>{href}</D:href></C:calendar-multiget>"#
    ));
    let (_, _, body) = dav.send("REPORT", bookings, None, &booking_multiget).await;
    assert!(body.contains("T110000"), "{body}");
    let resp = s
        .client
        .patch(format!("{}/{id}", s.bookings_url("salon")))
        .bearer_auth(common::SALON_KEY)
        .header("if-match", etag.unwrap_or_default())
        .json(&serde_json::json!({"end": "2026-12-07T12:00:00+01:00"}))
        .send()
        .await
        .expect("patch sent");
    assert_eq!(resp.status(), 200);
    let after = listing(dav.send("PROPFIND", bookings, Some("1"), propfind).await.2);
    assert_ne!(
        after[&href], before[&href],
        "the moved booking has a new ETag"
    );
    let (_, _, body) = dav.send("REPORT", bookings, None, &booking_multiget).await;
    assert!(body.contains("T120000"), "{body}");
    assert!(body.contains(&after[&href]), "{body}");

    // Expansion: the edited text is what the next expanded query shows.
    let weekly = WEEKLY.replace("Team meeting", "Stand-up");
    assert_eq!(
        dav.put(&format!("{cal}weekly.ics"), &weekly, None).await.0,
        201
    );
    let expand = report_body(
        r#"<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><C:calendar-data><C:expand start="20261201T000000Z" end="20261215T000000Z"/></C:calendar-data></D:prop>
        <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"><C:time-range start="20261201T000000Z" end="20261215T000000Z"/></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"#,
    );
    let (_, _, body) = dav.send("REPORT", cal, Some("1"), &expand).await;
    assert_eq!(body.matches("SUMMARY:Stand-up").count(), 2, "{body}");
    let renamed = weekly.replace("Stand-up", "Retro");
    assert_eq!(
        dav.put(&format!("{cal}weekly.ics"), &renamed, None).await.0,
        204
    );
    let (_, _, body) = dav.send("REPORT", cal, Some("1"), &expand).await;
    assert!(!body.contains("Stand-up"), "{body}");
    assert_eq!(body.matches("SUMMARY:Retro").count(), 2, "{body}");
}

/// GET on a calendar collection: the whole calendar as one VCALENDAR (what a
/// subscription to the collection's URL reads), time zones written once, with
/// the collection's ETag; bookings as events too.
#[tokio::test(flavor = "multi_thread")]
async fn a_collection_is_one_calendar_on_get() {
    let s = TestGateway::start().await;
    let dav = Dav { s: &s, user: "ana" };
    let cal = "/dav/calendars/salon/staff/";
    assert_eq!(dav.send("MKCALENDAR", cal, None, "").await.0, 201);
    let zone = "BEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n";
    for i in 0..3 {
        let ics = EVENT
            .replace("dentist-1", &format!("ev-{i}"))
            .replace("BEGIN:VEVENT", &format!("{zone}BEGIN:VEVENT"));
        assert_eq!(dav.put(&format!("{cal}ev{i}.ics"), &ics, None).await.0, 201);
    }
    let (status, headers, body) = dav.send("GET", cal, None, "").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/calendar; charset=utf-8");
    assert!(body.starts_with("BEGIN:VCALENDAR\r\n"), "{body}");
    assert!(body.ends_with("END:VCALENDAR\r\n"), "{body}");
    assert_eq!(body.matches("BEGIN:VCALENDAR").count(), 1);
    assert_eq!(body.matches("BEGIN:VTIMEZONE").count(), 1, "{body}");
    assert_eq!(body.matches("BEGIN:VEVENT").count(), 3);
    assert_eq!(
        body.matches("BEGIN:VALARM").count(),
        3,
        "components kept whole"
    );
    for i in 0..3 {
        assert!(body.contains(&format!("UID:ev-{i}\r\n")), "{body}");
    }
    let (_, _, propfind) = dav
        .send(
            "PROPFIND",
            cal,
            Some("0"),
            r#"<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>"#,
        )
        .await;
    let etag = headers["etag"].to_str().unwrap_or_default();
    assert!(
        propfind.contains(&format!("<d:getetag>{etag}</d:getetag>")),
        "{etag} in {propfind}"
    );
    // Valid for a third-party parser too.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("whole.ics");
    std::fs::write(&file, &body).expect("written");
    let out = common::run_python("count_events.py", &[file.to_str().unwrap_or_default()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3", "{out:?}");

    let (status, headers, body) = dav.send("HEAD", cal, None, "").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, ""));
    assert_eq!(headers["etag"].to_str().unwrap_or_default(), etag);

    let (status, created, _) = s
        .create(&booking("2026-12-07", "10:00", "11:00", "Cut"))
        .await;
    assert_eq!(status, 201, "{created}");
    let (_, _, bookings) = dav
        .send("GET", "/dav/calendars/salon/bookings/", None, "")
        .await;
    assert_eq!(bookings.matches("BEGIN:VEVENT").count(), 1, "{bookings}");
    assert!(bookings.contains("SUMMARY:Cut"), "{bookings}");
}
