//! CalDAV scheduling (RFC 6638) through the router in process: what OPTIONS and
//! principals advertise per tenant, invitations, replies and cancellations
//! delivered to the inboxes of the tenant's users, SCHEDULE-STATUS,
//! Schedule-Tags, inbox access and REPORTs, and tenants whose clients schedule
//! themselves.

mod common;

use common::{Extra, Gateway, TestGateway, booking, password_hash};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};

const ANA: &str = "mailto:ana@salon.calgate.invalid";
const BEA: &str = "mailto:bea@salon.calgate.invalid";
const OUTSIDER: &str = "mailto:zoe@example.com";
const GUS: &str = "mailto:gus@garage.calgate.invalid";
const TEAM: &str = "/dav/calendars/salon/team/";

/// One CalDAV user of the test server.
struct User<'a> {
    s: &'a TestGateway,
    name: &'a str,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl User<'_> {
    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let (status, headers, body) = (self.s)
            .send_as(self.name, method, path, headers, body.to_owned())
            .await;
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn put(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
        let mut all = vec![("content-type", "text/calendar; charset=utf-8")];
        all.extend_from_slice(headers);
        self.send("PUT", path, &all, body).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, &[], "").await
    }

    async fn propfind(&self, path: &str, depth: &str, props: &str) -> Answer {
        let body = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav" xmlns:cs="http://calendarserver.org/ns/"><d:prop>{props}</d:prop></d:propfind>"#
        );
        self.send("PROPFIND", path, &[("depth", depth)], &body)
            .await
    }

    /// The messages in this user's inbox (PROPFIND Depth 1, then GET each).
    async fn inbox(&self) -> Vec<(String, String)> {
        let inbox = format!("/dav/principals/{}/inbox/", self.name);
        let listing = self
            .propfind(&inbox, "1", "<d:getetag/><d:resourcetype/>")
            .await;
        assert_eq!(listing.status, 207, "{}", listing.body);
        let mut out = Vec::new();
        for href in hrefs(&listing.body).into_iter().filter(|h| *h != inbox) {
            let item = self.get(&href).await;
            assert_eq!(item.status, 200, "{href}: {}", item.body);
            assert!(item.header("etag").is_some(), "{href}");
            out.push((href, item.body));
        }
        out
    }

    async fn make_calendar(&self, path: &str) {
        let made = self.send("MKCALENDAR", path, &[], "").await;
        assert_eq!(made.status, 201, "{}", made.body);
    }
}

fn hrefs(body: &str) -> Vec<String> {
    body.split("<d:href>")
        .skip(1)
        .filter_map(|rest| rest.split("</d:href>").next())
        .map(str::to_owned)
        .collect()
}

/// A meeting Ana organizes, with her, Bea and someone outside the salon.
fn meeting(uid: &str, summary: &str, hour: u32) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261101T000000Z\r\nDTSTART:20261222T{hour:02}0000Z\r\nDTEND:20261222T{end:02}0000Z\r\nSUMMARY:{summary}\r\nORGANIZER;CN=Ana:{ANA}\r\nATTENDEE;CN=Ana;PARTSTAT=ACCEPTED:{ANA}\r\nATTENDEE;CN=Bea;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:{BEA}\r\nATTENDEE;CN=Zoe;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:{OUTSIDER}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        end = hour + 1
    )
}

/// The value of a property in a multistatus body.
fn prop<'b>(body: &'b str, element: &str) -> Option<&'b str> {
    let open = format!("<{element}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{element}>"))?;
    Some(&body[start..start + end])
}

/// A third tenant whose calendar clients schedule themselves.
fn studio() -> Extra {
    let hash = password_hash();
    Extra {
        server: format!(
            "[[tenant]]\nid = \"studio\"\ntimezone = \"Europe/Berlin\"\nscheduling = \"client\"\n\
             [[tenant.user]]\nusername = \"sol\"\npassword_hash = \"{hash}\"\n\
             [[tenant.user]]\nusername = \"tim\"\npassword_hash = \"{hash}\"\n"
        ),
        salon: format!(
            "[[tenant.user]]\nusername = \"cleo\"\npassword_hash = \"{hash}\"\nemail = \"Cleo@Salon.example\"\n"
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn options_and_principals_say_who_schedules() {
    let s = TestGateway::start_with_extra(studio()).await;
    let options = |user: Option<&'static str>| {
        let mut req = s.client.request(Method::OPTIONS, s.url("/dav/"));
        if let Some(user) = user {
            req = req.basic_auth(user, Some("secret"));
        }
        async move {
            let resp = req.send().await.expect("request sent");
            assert_eq!(resp.status(), 200);
            resp.headers()["dav"]
                .to_str()
                .unwrap_or_default()
                .to_owned()
        }
    };
    let anonymous = options(None).await;
    assert!(anonymous.contains("calendar-access"), "{anonymous}");
    assert!(!anonymous.contains("calendar-auto-schedule"), "{anonymous}");
    let ana = options(Some("ana")).await;
    assert!(
        ana.contains("calendar-access, extended-mkcol, calendar-auto-schedule"),
        "{ana}"
    );
    let sol = options(Some("sol")).await;
    assert!(
        !sol.contains("calendar-auto-schedule"),
        "client scheduling: {sol}"
    );
    // Also on OPTIONS of other paths, as python caldav probes the principal.
    let resp = s
        .client
        .request(Method::OPTIONS, s.url("/dav/principals/ana/"))
        .basic_auth("ana", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert!(
        !resp.headers()["dav"]
            .to_str()
            .unwrap()
            .contains("auto-schedule")
    );

    let props = "<c:schedule-inbox-URL/><c:schedule-outbox-URL/><c:calendar-user-address-set/><c:calendar-user-type/>";
    let ana = User { s: &s, name: "ana" };
    let p = ana.propfind("/dav/principals/ana/", "0", props).await;
    assert_eq!(p.status, 207);
    assert!(
        p.body.contains("<cal:schedule-inbox-URL><d:href>/dav/principals/ana/inbox/</d:href></cal:schedule-inbox-URL>"),
        "{}",
        p.body
    );
    assert!(
        p.body
            .contains("<cal:schedule-outbox-URL><d:href>/dav/calendars/salon/outbox/</d:href>"),
        "{}",
        p.body
    );
    assert!(
        p.body.contains(&format!("<cal:calendar-user-address-set><d:href>{ANA}</d:href><d:href>/dav/principals/ana/</d:href>")),
        "{}",
        p.body
    );
    assert!(
        p.body
            .contains("<cal:calendar-user-type>INDIVIDUAL</cal:calendar-user-type>"),
        "{}",
        p.body
    );
    // A configured e-mail address comes first.
    let cleo = User {
        s: &s,
        name: "cleo",
    };
    let p = cleo.propfind("/dav/principals/cleo/", "0", props).await;
    assert!(
        p.body.contains("<cal:calendar-user-address-set><d:href>mailto:Cleo@Salon.example</d:href><d:href>mailto:cleo@salon.calgate.invalid</d:href>"),
        "{}",
        p.body
    );
    // Client scheduling: no inbox at all.
    let sol = User { s: &s, name: "sol" };
    let p = sol.propfind("/dav/principals/sol/", "0", props).await;
    assert!(!p.body.contains("/inbox/"), "{}", p.body);
    assert!(
        p.body.contains("schedule-inbox-URL"),
        "answered 404: {}",
        p.body
    );
    assert_eq!(sol.get("/dav/principals/sol/inbox/").await.status, 404);
    let p = ana
        .propfind(
            "/dav/principals/ana/inbox/",
            "0",
            "<d:resourcetype/><d:displayname/><d:current-user-privilege-set/>",
        )
        .await;
    assert!(
        p.body.contains("<d:collection/><cal:schedule-inbox/>"),
        "{}",
        p.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invitations_replies_and_cancellations_reach_the_inboxes() {
    let s = TestGateway::start().await;
    let ana = User { s: &s, name: "ana" };
    let bea = User { s: &s, name: "bea" };
    ana.make_calendar(TEAM).await;
    let url = format!("{TEAM}weekly.ics");
    let sent = meeting("weekly-1", "Team meeting", 9);

    // The organizer saves the meeting: Bea is invited, Zoe cannot be reached.
    let put = ana.put(&url, &sent, &[]).await;
    assert_eq!(put.status, 201, "{}", put.body);
    assert!(
        put.header("etag").is_none(),
        "stored differs from what was sent: no ETag"
    );
    let tag = put
        .header("schedule-tag")
        .expect("Schedule-Tag on PUT")
        .to_owned();
    let stored = ana.get(&url).await;
    assert_eq!(
        stored.header("schedule-tag"),
        Some(tag.as_str()),
        "and on GET"
    );
    assert!(stored.header("etag").is_some());
    let unfolded = stored.body.replace("\r\n ", "");
    assert!(
        unfolded.contains(&format!(
            "ATTENDEE;CN=Bea;PARTSTAT=NEEDS-ACTION;RSVP=TRUE;SCHEDULE-STATUS=1.2:{BEA}"
        )),
        "{unfolded}"
    );
    assert!(
        unfolded.contains(&format!("SCHEDULE-STATUS=5.2:{OUTSIDER}")),
        "{unfolded}"
    );
    assert!(
        unfolded.contains(&format!("ATTENDEE;CN=Ana;PARTSTAT=ACCEPTED:{ANA}")),
        "the organizer gets no message: {unfolded}"
    );
    let inbox = bea.inbox().await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    let request = &inbox[0].1;
    assert!(request.contains("METHOD:REQUEST\r\n"), "{request}");
    assert!(
        request.contains("UID:weekly-1\r\n") && request.contains("SUMMARY:Team meeting"),
        "{request}"
    );
    assert!(!request.contains("SCHEDULE-STATUS"), "{request}");
    assert!(ana.inbox().await.is_empty(), "nothing for the organizer");
    // The property, in PROPFIND and in REPORTs.
    // The property, wherever clients ask for it.
    let multiget = format!(
        r#"<c:calendar-multiget xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><d:getetag/><c:schedule-tag/></d:prop><d:href>{url}</d:href></c:calendar-multiget>"#
    );
    let sync = r#"<d:sync-collection xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:sync-token/><d:sync-level>1</d:sync-level><d:prop><d:getetag/><c:schedule-tag/></d:prop></d:sync-collection>"#;
    for answer in [
        ana.propfind(&url, "0", "<c:schedule-tag/><d:getetag/>")
            .await,
        ana.propfind(TEAM, "1", "<d:getetag/><c:schedule-tag/>")
            .await,
        ana.send("REPORT", TEAM, &[("depth", "1")], &multiget).await,
        ana.send("REPORT", TEAM, &[], sync).await,
    ] {
        let found = prop(&answer.body, "cal:schedule-tag");
        assert_eq!(found, Some(tag.as_str()), "{}", answer.body);
    }

    // Bea accepts from her own client, which sends what it read back.
    let accepted = stored
        .body
        .replace("CN=Bea;PARTSTAT=NEEDS-ACTION", "CN=Bea;PARTSTAT=ACCEPTED")
        .replace("DTSTAMP:20261101T000000Z", "DTSTAMP:20261102T090000Z");
    let reply = bea
        .put(&url, &accepted, &[("if-schedule-tag-match", &tag)])
        .await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_eq!(
        reply.header("schedule-tag"),
        Some(tag.as_str()),
        "a reply keeps the tag"
    );
    let replies = ana.inbox().await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    let message = replies[0].1.replace("\r\n ", "");
    assert!(message.contains("METHOD:REPLY\r\n"), "{message}");
    assert!(
        message.contains(&format!("PARTSTAT=ACCEPTED;RSVP=TRUE:{BEA}")),
        "{message}"
    );
    assert!(
        !message.contains(OUTSIDER),
        "only the one who replied: {message}"
    );
    assert_eq!(bea.inbox().await.len(), 1, "no new invitation for a reply");
    let after = ana.get(&url).await.body.replace("\r\n ", "");
    assert!(
        after.contains(&format!("ORGANIZER;CN=Ana;SCHEDULE-STATUS=1.2:{ANA}")),
        "{after}"
    );
    assert!(
        after.contains("PARTSTAT=ACCEPTED;RSVP=TRUE;SCHEDULE-STATUS=1.2"),
        "{after}"
    );

    // The organizer adds an alarm to the copy she read before the reply: under
    // a matching Schedule-Tag, Bea's answer is merged in rather than lost, and
    // an alarm is nobody else's business.
    let alarm = stored.body.replace(
        "END:VEVENT",
        "BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-PT10M\r\nDESCRIPTION:Soon\r\nEND:VALARM\r\nEND:VEVENT",
    );
    let put = ana
        .put(&url, &alarm, &[("if-schedule-tag-match", &tag)])
        .await;
    assert_eq!(put.status, 204, "{}", put.body);
    assert_eq!(put.header("schedule-tag"), Some(tag.as_str()));
    let merged = ana.get(&url).await.body.replace("\r\n ", "");
    assert!(
        merged.contains("CN=Bea;PARTSTAT=ACCEPTED") && merged.contains("TRIGGER:-PT10M"),
        "{merged}"
    );
    assert_eq!(bea.inbox().await.len(), 1);

    // She moves it: the tag changes and Bea is invited again.
    let current = ana.get(&url).await.body;
    let moved = current
        .replace("T090000Z", "T080000Z")
        .replace("T100000Z", "T090000Z");
    let stale = ana
        .put(
            &url,
            &moved,
            &[("if-schedule-tag-match", "\"not-the-tag\"")],
        )
        .await;
    assert_eq!(stale.status, 412, "If-Schedule-Tag-Match mismatch");
    assert_eq!(
        bea.inbox().await.len(),
        1,
        "nothing sent for a refused write"
    );
    let put = ana
        .put(&url, &moved, &[("if-schedule-tag-match", &tag)])
        .await;
    assert_eq!(put.status, 204, "{}", put.body);
    let new_tag = put.header("schedule-tag").expect("tag").to_owned();
    assert_ne!(new_tag, tag, "an organizer change moves the tag");
    let invitations = bea.inbox().await;
    assert_eq!(invitations.len(), 2);
    assert!(
        invitations
            .iter()
            .any(|(_, m)| m.contains("DTSTART:20261222T080000Z")),
        "{invitations:?}"
    );
    let deleted_with_old_tag = ana
        .send("DELETE", &url, &[("if-schedule-tag-match", &tag)], "")
        .await;
    assert_eq!(deleted_with_old_tag.status, 412);

    // Deleting the meeting cancels it for Bea.
    let deleted = ana
        .send("DELETE", &url, &[("if-schedule-tag-match", &new_tag)], "")
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let messages = bea.inbox().await;
    assert_eq!(messages.len(), 3);
    let cancel = messages
        .iter()
        .find(|(_, m)| m.contains("METHOD:CANCEL"))
        .expect("a CANCEL");
    assert!(
        cancel.1.contains("STATUS:CANCELLED\r\n") && cancel.1.contains("UID:weekly-1"),
        "{}",
        cancel.1
    );
    assert_eq!(ana.get(&url).await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_attendees_are_cancelled_and_plain_events_stay_as_sent() {
    let s = TestGateway::start().await;
    let ana = User { s: &s, name: "ana" };
    let bea = User { s: &s, name: "bea" };
    ana.make_calendar(TEAM).await;
    let url = format!("{TEAM}one.ics");
    assert_eq!(
        ana.put(&url, &meeting("one", "One", 9), &[]).await.status,
        201
    );
    let without_bea = meeting("one", "One", 9).replace(
        &format!("ATTENDEE;CN=Bea;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:{BEA}\r\n"),
        "",
    );
    assert_eq!(ana.put(&url, &without_bea, &[]).await.status, 204);
    let messages = bea.inbox().await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages.iter().any(|(_, m)| m.contains("METHOD:CANCEL")),
        "{messages:?}"
    );

    // Bea edits Ana's meeting (every staff member may): a change like the
    // organizer's, sent to the others but not to Bea herself.
    let edited = ana
        .get(&url)
        .await
        .body
        .replace("SUMMARY:One", "SUMMARY:One (room 2)");
    let with_bea = edited.replace(
        "END:VEVENT",
        &format!("ATTENDEE;PARTSTAT=NEEDS-ACTION:{BEA}\r\nATTENDEE:mailto:cleo@salon.example\r\nEND:VEVENT"),
    );
    assert_eq!(bea.put(&url, &with_bea, &[]).await.status, 204);
    assert_eq!(
        bea.inbox().await.len(),
        2,
        "no message about her own change"
    );
    let stored = ana.get(&url).await.body.replace("\r\n ", "");
    assert!(
        stored.contains("SCHEDULE-STATUS=5.2:mailto:cleo@salon.example"),
        "{stored}"
    );

    // A plain event (no ORGANIZER) is stored exactly as sent, with its ETag.
    let plain = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nBEGIN:VEVENT\r\nUID:plain-1\r\nDTSTAMP:20261101T000000Z\r\nDTSTART:20261223T090000Z\r\nDTEND:20261223T100000Z\r\nSUMMARY:Plain\r\nATTENDEE:mailto:bea@salon.calgate.invalid\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let put = ana.put(&format!("{TEAM}plain.ics"), plain, &[]).await;
    assert!(put.header("etag").is_some() && put.header("schedule-tag").is_none());
    assert_eq!(ana.get(&format!("{TEAM}plain.ics")).await.body, plain);
    // A meeting sent back unchanged, statuses and all, keeps its ETag.
    let again = ana.put(&url, &ana.get(&url).await.body, &[]).await;
    assert_eq!(again.status, 204);
    assert!(again.header("etag").is_some(), "nothing changed: ETag");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_calendar_cancels_its_meetings() {
    let s = TestGateway::start().await;
    let ana = User { s: &s, name: "ana" };
    let bea = User { s: &s, name: "bea" };
    ana.make_calendar(TEAM).await;
    for (uid, hour) in [("first", 9), ("second", 11)] {
        let put = ana
            .put(&format!("{TEAM}{uid}.ics"), &meeting(uid, uid, hour), &[])
            .await;
        assert_eq!(put.status, 201, "{}", put.body);
    }
    assert_eq!(bea.inbox().await.len(), 2, "two invitations");

    let deleted = ana.send("DELETE", TEAM, &[], "").await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let messages = bea.inbox().await;
    let mut cancelled: Vec<&str> = messages
        .iter()
        .filter(|(_, m)| m.contains("METHOD:CANCEL\r\n"))
        .filter_map(|(_, m)| {
            ["first", "second"]
                .into_iter()
                .find(|u| m.contains(&format!("UID:{u}\r\n")))
        })
        .collect();
    cancelled.sort();
    assert_eq!(cancelled, ["first", "second"], "{messages:?}");
    assert!(ana.inbox().await.is_empty(), "nothing for the organizer");
}

#[tokio::test(flavor = "multi_thread")]
async fn inboxes_are_private_and_only_the_server_writes_them() {
    let s = TestGateway::start().await;
    let ana = User { s: &s, name: "ana" };
    let bea = User { s: &s, name: "bea" };
    let gus = User { s: &s, name: "gus" };
    ana.make_calendar(TEAM).await;
    assert_eq!(
        ana.put(&format!("{TEAM}m.ics"), &meeting("m", "M", 9), &[])
            .await
            .status,
        201
    );
    let inbox = bea.inbox().await;
    let (item, _) = &inbox[0];
    assert_eq!(
        ana.get("/dav/principals/bea/inbox/").await.status,
        403,
        "another user of the tenant"
    );
    assert_eq!(ana.get(item).await.status, 403);
    assert_eq!(ana.send("DELETE", item, &[], "").await.status, 403);
    assert_eq!(
        gus.get("/dav/principals/bea/inbox/").await.status,
        404,
        "another tenant"
    );
    assert_eq!(gus.get(item).await.status, 404);
    let p = gus
        .propfind("/dav/principals/bea/inbox/", "1", "<d:getetag/>")
        .await;
    assert_eq!(p.status, 404);
    // Invitations to another tenant's user go nowhere.
    assert!(gus.inbox().await.is_empty());
    let to_gus = meeting("g", "G", 11).replace(OUTSIDER, GUS);
    assert_eq!(
        ana.put(&format!("{TEAM}g.ics"), &to_gus, &[]).await.status,
        201
    );
    assert!(gus.inbox().await.is_empty());
    let stored = ana
        .get(&format!("{TEAM}g.ics"))
        .await
        .body
        .replace("\r\n ", "");
    assert!(
        stored.contains(&format!("SCHEDULE-STATUS=5.2:{GUS}")),
        "{stored}"
    );
    // Nobody writes into an inbox.
    let put = bea
        .put(
            "/dav/principals/bea/inbox/x.ics",
            &meeting("x", "X", 9),
            &[],
        )
        .await;
    assert_eq!(put.status, 403, "{}", put.body);
    assert_eq!(bea.put(item, &meeting("x", "X", 9), &[]).await.status, 403);
    // Its owner reads and removes messages.
    let stale = bea
        .send("DELETE", item, &[("if-match", "\"nope\"")], "")
        .await;
    assert_eq!(stale.status, 412);
    assert_eq!(bea.send("DELETE", item, &[], "").await.status, 204);
    assert_eq!(bea.get(item).await.status, 404);
    assert_eq!(
        bea.inbox().await.len(),
        1,
        "the invitation to g.ics is left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn inbox_reports_and_restarts() {
    let s = TestGateway::start().await;
    let ana = User { s: &s, name: "ana" };
    let bea = User { s: &s, name: "bea" };
    ana.make_calendar(TEAM).await;
    let sync = |token: &str| {
        format!(
            r#"<d:sync-collection xmlns:d="DAV:"><d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"#
        )
    };
    let inbox = "/dav/principals/bea/inbox/";
    let first = bea.send("REPORT", inbox, &[], &sync("")).await;
    assert_eq!(first.status, 207, "{}", first.body);
    let token = prop(&first.body, "d:sync-token")
        .expect("a token")
        .to_owned();
    assert!(hrefs(&first.body).is_empty());
    assert_eq!(
        ana.put(&format!("{TEAM}a.ics"), &meeting("a", "A", 9), &[])
            .await
            .status,
        201
    );
    let second = bea.send("REPORT", inbox, &[], &sync(&token)).await;
    let added = hrefs(&second.body);
    assert_eq!(added.len(), 1, "{}", second.body);
    let token = prop(&second.body, "d:sync-token")
        .expect("a token")
        .to_owned();
    assert_eq!(bea.send("DELETE", &added[0], &[], "").await.status, 204);
    let third = bea.send("REPORT", inbox, &[], &sync(&token)).await;
    assert!(
        third.body.contains("404 Not Found"),
        "deletions are reported: {}",
        third.body
    );
    let bad = bea
        .send("REPORT", inbox, &[], &sync("urn:calgate:sync:salon:team:1"))
        .await;
    assert_eq!(bad.status, 403);
    assert!(bad.body.contains("valid-sync-token"), "{}", bad.body);

    assert_eq!(
        ana.put(&format!("{TEAM}b.ics"), &meeting("b", "B", 10), &[])
            .await
            .status,
        201
    );
    let query = r#"<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><d:getetag/><c:calendar-data/></d:prop><c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT"/></c:comp-filter></c:filter></c:calendar-query>"#;
    let found = bea.send("REPORT", inbox, &[("depth", "1")], query).await;
    assert_eq!(found.status, 207, "{}", found.body);
    assert!(
        found.body.contains("METHOD:REQUEST") && found.body.contains("UID:b"),
        "{}",
        found.body
    );
    let todos = query.replace("VEVENT", "VTODO");
    let none = bea.send("REPORT", inbox, &[("depth", "1")], &todos).await;
    assert!(hrefs(&none.body).is_empty(), "{}", none.body);
    let item = hrefs(&found.body)[0].clone();
    let multiget = format!(
        r#"<c:calendar-multiget xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><d:getetag/><c:calendar-data/></d:prop><d:href>{item}</d:href><d:href>{inbox}missing.ics</d:href></c:calendar-multiget>"#
    );
    let got = bea.send("REPORT", inbox, &[], &multiget).await;
    assert!(
        got.body.contains("UID:b") && got.body.contains("404 Not Found"),
        "{}",
        got.body
    );
    assert_eq!(ana.send("REPORT", inbox, &[], &multiget).await.status, 403);

    // Delivered means durable.
    let before = bea.inbox().await;
    let s = s.restart().await;
    let bea = User { s: &s, name: "bea" };
    assert_eq!(bea.inbox().await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn meetings_in_the_bookings_calendar_are_bookings_once() {
    let s = TestGateway::start().await;
    let ana = User { s: &s, name: "ana" };
    let bea = User { s: &s, name: "bea" };
    let url = "/dav/calendars/salon/bookings/consult.ics";
    let put = ana
        .put(url, &meeting("consult-1", "Consultation", 9), &[])
        .await;
    assert_eq!(put.status, 201, "{}", put.body);
    assert!(put.header("schedule-tag").is_some());
    assert!(bea.inbox().await[0].1.contains("SUMMARY:Consultation"));
    let list = s.list("2026-12-22T00:00:00Z", "2026-12-23T00:00:00Z").await;
    assert_eq!(list.len(), 1, "one booking: {list:?}");
    assert_eq!(list[0]["title"], "Consultation");
    // Free/busy counts the meeting once, for the whole tenant.
    let (status, fb, _) = s
        .get("/api/v1/tenants/salon/freebusy?start=2026-12-22T00:00:00Z&end=2026-12-23T00:00:00Z")
        .await;
    assert_eq!(status, 200, "{fb}");
    assert_eq!(fb["busy"].as_array().map(Vec::len), Some(1), "{fb}");
    // The booking serves the text with its statuses, and a booking conflict
    // sends no invitation.
    assert!(
        ana.get(url)
            .await
            .body
            .replace("\r\n ", "")
            .contains("SCHEDULE-STATUS=1.2")
    );
    s.create(&booking("2026-12-23", "10:00", "11:00", "Cut"))
        .await;
    let clash = meeting("clash", "Clash", 9).replace("20261222", "20261223");
    let refused = ana
        .put("/dav/calendars/salon/bookings/clash.ics", &clash, &[])
        .await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(
        bea.inbox().await.len(),
        1,
        "nothing sent for a refused booking"
    );
    let deleted = bea.send("DELETE", url, &[], "").await;
    assert_eq!(deleted.status, 204);
    assert!(
        ana.inbox().await.is_empty(),
        "the organizer is not sent a CANCEL"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn outbox_free_busy_of_a_colleague() {
    let s = TestGateway::start_with_extra(studio()).await;
    let ana = User { s: &s, name: "ana" };
    ana.make_calendar(TEAM).await;
    assert_eq!(
        ana.put(&format!("{TEAM}a.ics"), &meeting("a", "A", 9), &[])
            .await
            .status,
        201
    );
    let request = |attendees: &[&str]| {
        let attendees: String = attendees
            .iter()
            .map(|a| format!("ATTENDEE:{a}\r\n"))
            .collect();
        format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nMETHOD:REQUEST\r\nBEGIN:VFREEBUSY\r\nUID:fb-2\r\nDTSTAMP:20261201T000000Z\r\nDTSTART:20261222T000000Z\r\nDTEND:20261223T000000Z\r\nORGANIZER:{ANA}\r\n{attendees}END:VFREEBUSY\r\nEND:VCALENDAR\r\n"
        )
    };
    let answer = ana
        .send(
            "POST",
            "/dav/calendars/salon/outbox/",
            &[("content-type", "text/calendar")],
            &request(&[
                BEA,
                "mailto:cleo@salon.example",
                "mailto:sol@studio.calgate.invalid",
            ]),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let responses: Vec<&str> = answer.body.split("<cal:response>").skip(1).collect();
    assert_eq!(responses.len(), 3, "{}", answer.body);
    assert!(
        responses[0].contains("2.0;Success")
            && responses[0].contains("FREEBUSY;FBTYPE=BUSY:20261222T090000Z/20261222T100000Z"),
        "{}",
        responses[0]
    );
    assert!(
        responses[1].contains("2.0;Success"),
        "by e-mail address: {}",
        responses[1]
    );
    assert!(
        responses[2].contains("3.7;Invalid calendar user"),
        "another tenant: {}",
        responses[2]
    );
    assert!(!responses[2].contains("FREEBUSY"), "{}", responses[2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_scheduling_tenants_store_what_is_sent() {
    let s = TestGateway::start_with_extra(studio()).await;
    let sol = User { s: &s, name: "sol" };
    let tim = User { s: &s, name: "tim" };
    let cal = "/dav/calendars/studio/team/";
    sol.make_calendar(cal).await;
    let sent = meeting("s-1", "Shoot", 9)
        .replace(ANA, "mailto:sol@studio.calgate.invalid")
        .replace(BEA, "mailto:tim@studio.calgate.invalid");
    let url = format!("{cal}shoot.ics");
    let put = sol
        .put(&url, &sent, &[("if-schedule-tag-match", "\"ignored\"")])
        .await;
    assert_eq!(put.status, 201, "{}", put.body);
    assert!(put.header("etag").is_some(), "stored as sent: ETag");
    assert!(put.header("schedule-tag").is_none());
    let got = sol.get(&url).await;
    assert_eq!(got.body, sent);
    assert!(got.header("schedule-tag").is_none());
    assert_eq!(tim.get("/dav/principals/tim/inbox/").await.status, 404);
    assert_eq!(sol.send("DELETE", &url, &[], "").await.status, 204);
}

/// A provisioned user deleted and created again under the same name starts
/// with an empty inbox: the scheduling messages of the one deleted go too.
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_users_inbox_goes_with_them() {
    const OPERATOR_KEY: &str = "operator-key-scheduling-01";
    let hash = calgate::auth::hash_secret(OPERATOR_KEY).expect("hashing works");
    let s = TestGateway::start_with_extra(Extra {
        server: format!("\n[admin]\nkey_hash = \"{hash}\"\n"),
        ..Extra::default()
    })
    .await;
    let provision = |path: String, body: serde_json::Value| {
        let req = s
            .client
            .request(
                reqwest::Method::PUT,
                format!("/api/v1/tenants/clinic{path}"),
            )
            .bearer_auth(OPERATOR_KEY)
            .json(&body);
        async move {
            let resp = req.send().await.expect("request sent");
            assert!(resp.status().is_success(), "PUT {path}: {}", resp.status());
        }
    };
    provision(
        String::new(),
        serde_json::json!({"timezone": "Europe/Paris"}),
    )
    .await;
    for (name, email) in [
        ("dora", "dora@clinic.example"),
        ("eli", "eli@clinic.example"),
    ] {
        provision(
            format!("/users/{name}"),
            serde_json::json!({"password": "secret", "email": email}),
        )
        .await;
    }
    let dora = User {
        s: &s,
        name: "dora",
    };
    let eli = User { s: &s, name: "eli" };
    dora.make_calendar("/dav/calendars/clinic/rounds/").await;
    let invite = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nBEGIN:VEVENT\r\nUID:rounds-1\r\nDTSTAMP:20261101T000000Z\r\nDTSTART:20261222T090000Z\r\nDTEND:20261222T100000Z\r\nSUMMARY:Ward rounds\r\nORGANIZER:mailto:dora@clinic.example\r\nATTENDEE;PARTSTAT=ACCEPTED:mailto:dora@clinic.example\r\nATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:eli@clinic.example\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let put = dora
        .put("/dav/calendars/clinic/rounds/rounds-1.ics", invite, &[])
        .await;
    assert_eq!(put.status, 201, "{}", put.body);
    assert_eq!(eli.inbox().await.len(), 1, "the invitation arrived");

    let gone = s
        .client
        .request(reqwest::Method::DELETE, "/api/v1/tenants/clinic/users/eli")
        .bearer_auth(OPERATOR_KEY)
        .send()
        .await
        .expect("request sent");
    assert_eq!(gone.status(), 204);
    provision(
        "/users/eli".to_owned(),
        serde_json::json!({"password": "secret", "email": "eli@clinic.example"}),
    )
    .await;
    assert!(
        eli.inbox().await.is_empty(),
        "the new eli reads nothing of the old one's"
    );
}
