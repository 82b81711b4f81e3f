//! Calendar sources in the tenant's .ics feed (`include_sources`): imported events
//! published as opaque busy blocks, nothing of their content, validators that move
//! when (and only when) a published source changes.

mod common;
use calgate_test_mocks as providers;

use common::{BUSY_FEED, Extra, FULL_FEED, SALON_KEY, TestGateway};
use providers::ics::IcsMock;

const SOURCE: &str = "anna-ics";
const TEAM_FEED: &str = "feed-team-secret-0123";
const ALL_FEED: &str = "feed-all-secret-4567";

/// Private content of the imported events: none of it may reach a feed.
const SECRETS: [&str; 7] = [
    "Root canal",
    "Dr. Molar",
    "42 Tooth Street",
    "patient-notes",
    "anna.private@example.com",
    "Weekly therapy",
    "Holiday plans",
];

/// Anna's calendar: a single event with private details, a weekly series (4
/// instances, one excluded, one moved), a transparent event and a cancelled one.
fn anna_calendar(with_single: bool, extra_event: bool) -> String {
    let mut ics = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//Anna//EN\r\n");
    if with_single {
        ics.push_str(
            "BEGIN:VEVENT\r\nUID:single-1@anna\r\nDTSTAMP:20300101T000000Z\r\n\
             DTSTART:20300506T080000Z\r\nDTEND:20300506T093000Z\r\nSUMMARY:Root canal\r\n\
             DESCRIPTION:Dr. Molar\\, bring patient-notes\r\nLOCATION:42 Tooth Street\r\n\
             ATTENDEE;CN=Anna:mailto:anna.private@example.com\r\nEND:VEVENT\r\n",
        );
    }
    ics.push_str(
        "BEGIN:VEVENT\r\nUID:series-1@anna\r\nDTSTAMP:20300101T000000Z\r\n\
         DTSTART:20300507T150000Z\r\nDTEND:20300507T160000Z\r\nRRULE:FREQ=WEEKLY;COUNT=4\r\n\
         EXDATE:20300514T150000Z\r\nSUMMARY:Weekly therapy\r\nEND:VEVENT\r\n\
         BEGIN:VEVENT\r\nUID:series-1@anna\r\nDTSTAMP:20300101T000000Z\r\n\
         RECURRENCE-ID:20300521T150000Z\r\nDTSTART:20300521T170000Z\r\nDTEND:20300521T180000Z\r\n\
         SUMMARY:Weekly therapy (moved)\r\nEND:VEVENT\r\n\
         BEGIN:VEVENT\r\nUID:free-1@anna\r\nDTSTAMP:20300101T000000Z\r\n\
         DTSTART:20300508T080000Z\r\nDTEND:20300508T170000Z\r\nTRANSP:TRANSPARENT\r\n\
         SUMMARY:Holiday plans\r\nEND:VEVENT\r\n\
         BEGIN:VEVENT\r\nUID:cancelled-1@anna\r\nDTSTAMP:20300101T000000Z\r\n\
         DTSTART:20300509T080000Z\r\nDTEND:20300509T090000Z\r\nSTATUS:CANCELLED\r\n\
         SUMMARY:Holiday plans\r\nEND:VEVENT\r\n",
    );
    if extra_event {
        ics.push_str(
            "BEGIN:VEVENT\r\nUID:added-1@anna\r\nDTSTAMP:20300101T000000Z\r\n\
             DTSTART:20300603T120000Z\r\nDTEND:20300603T123000Z\r\nSUMMARY:Root canal again\r\n\
             END:VEVENT\r\n",
        );
    }
    ics.push_str("END:VCALENDAR\r\n");
    ics
}

/// The busy blocks expected from [`anna_calendar`], as (DTSTART, DTEND) in UTC.
fn anna_blocks(with_single: bool, extra_event: bool) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    if with_single {
        blocks.push(("20300506T080000Z", "20300506T093000Z"));
    }
    blocks.extend([
        ("20300507T150000Z", "20300507T160000Z"),
        ("20300521T170000Z", "20300521T180000Z"),
        ("20300528T150000Z", "20300528T160000Z"),
    ]);
    if extra_event {
        blocks.push(("20300603T120000Z", "20300603T123000Z"));
    }
    blocks
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
}

fn extra(url: &str) -> Extra {
    let hash = |s: &str| calgate::auth::hash_secret(s).expect("hashing works");
    Extra {
        server: "fetch_allow = [\"127.0.0.1/32\"]".into(),
        salon: format!(
            "[[tenant.source]]\nid = \"{SOURCE}\"\nkind = \"ics\"\nurl = \"{url}\"\nenabled = false\n\
             [[tenant.feed]]\nname = \"team\"\ntoken_hash = \"{}\"\ninclude_sources = [\"{SOURCE}\"]\n\
             [[tenant.feed]]\nname = \"everything\"\ntoken_hash = \"{}\"\nprivacy = \"busy\"\ninclude_sources = \"all\"\n",
            hash(TEAM_FEED),
            hash(ALL_FEED),
        ),
    }
}

/// The VEVENTs of a feed, each as its unfolded property lines.
fn events(feed: &str) -> Vec<Vec<String>> {
    let unfolded = feed.replace("\r\n ", "");
    let mut out = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in unfolded.split("\r\n") {
        match line {
            "BEGIN:VEVENT" => current = Some(Vec::new()),
            "END:VEVENT" => out.extend(current.take()),
            _ => {
                if let Some(props) = current.as_mut() {
                    props.push(line.to_owned());
                }
            }
        }
    }
    out
}

fn prop<'a>(event: &'a [String], name: &str) -> Option<&'a str> {
    event
        .iter()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
}

/// The busy blocks of a feed (events with `SUMMARY:Busy` and UTC times), sorted.
fn blocks(feed: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = events(feed)
        .iter()
        .filter(|e| prop(e, "UID").is_some_and(|u| u.starts_with("busy-")))
        .map(|e| {
            (
                prop(e, "DTSTART").unwrap_or_default().to_owned(),
                prop(e, "DTEND").unwrap_or_default().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn get_feed(
    s: &TestGateway,
    token: &str,
    etag: Option<&str>,
) -> (u16, Option<String>, String) {
    let mut req = s.client.get(s.url(&format!("/feeds/salon/{token}.ics")));
    if let Some(etag) = etag {
        req = req.header("if-none-match", etag);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, etag, resp.text().await.unwrap_or_default())
}

async fn sync(s: &TestGateway) -> serde_json::Value {
    let resp = s
        .client
        .post(s.url(&format!(
            "/api/v1/tenants/salon/sources/{SOURCE}/sync?mode=incremental"
        )))
        .bearer_auth(SALON_KEY)
        .send()
        .await
        .expect("request sent");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("sync log")
}

fn assert_private(feed: &str) {
    for secret in SECRETS {
        assert!(!feed.contains(secret), "{secret:?} leaked:\n{feed}");
    }
    for name in ["DESCRIPTION", "LOCATION", "ATTENDEE", "ORGANIZER", "RRULE"] {
        assert!(
            !events(feed)
                .iter()
                .filter(|e| prop(e, "UID").is_some_and(|u| u.starts_with("busy-")))
                .any(|e| e.iter().any(|l| l.starts_with(name))),
            "{name} in a busy block:\n{feed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn imported_events_are_published_as_busy_blocks() {
    let mock = IcsMock::start().await;
    mock.set_feed("/anna.ics", anna_calendar(true, false));
    let s = TestGateway::start_with_extra(extra(&mock.url("/anna.ics"))).await;
    // A booking, so the feed has both kinds of events.
    let (status, body, _) = s
        .create(&common::booking("2030-05-06", "14:00", "15:00", "Haircut"))
        .await;
    assert_eq!(status, 201, "{body}");

    let (status, etag_before_sync, text) = get_feed(&s, TEAM_FEED, None).await;
    assert_eq!(status, 200);
    assert!(blocks(&text).is_empty(), "nothing synced yet:\n{text}");

    let log = sync(&s).await;
    assert_eq!(log["created"], 4, "{log}");

    // The feed with the option: one block per blocking occurrence.
    let (status, etag, team) = get_feed(&s, TEAM_FEED, etag_before_sync.as_deref()).await;
    assert_eq!(status, 200, "the sync changed the source: a new ETag");
    let etag = etag.expect("etag");
    assert_ne!(Some(&etag), etag_before_sync.as_ref());
    assert_eq!(blocks(&team), anna_blocks(true, false), "{team}");
    assert_private(&team);
    // The booking itself is still there, in full.
    assert!(team.contains("SUMMARY:Haircut"), "{team}");
    let busy: Vec<Vec<String>> = events(&team)
        .into_iter()
        .filter(|e| prop(e, "UID").is_some_and(|u| u.starts_with("busy-")))
        .collect();
    let mut uids: Vec<&str> = busy.iter().filter_map(|e| prop(e, "UID")).collect();
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), busy.len(), "one UID per block");
    for e in &busy {
        assert_eq!(prop(e, "SUMMARY"), Some("Busy"), "{e:?}");
        assert_eq!(prop(e, "TRANSP"), Some("OPAQUE"), "{e:?}");
        assert!(prop(e, "DTSTAMP").is_some(), "{e:?}");
        assert!(
            !prop(e, "UID").unwrap_or_default().contains("anna"),
            "{e:?}"
        );
    }

    // The feeds without the option publish bookings only.
    for token in [FULL_FEED, BUSY_FEED] {
        let (status, _, text) = get_feed(&s, token, None).await;
        assert_eq!(status, 200);
        assert!(blocks(&text).is_empty(), "{text}");
        assert_private(&text);
    }

    // "all" takes CalDAV calendars too; privacy "busy" hides the booking as well.
    s.add_source("staff-ben", false);
    s.put_ics(
        "staff-ben",
        "lunch.ics",
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:lunch@ben\r\n\
         DTSTAMP:20300101T000000Z\r\nDTSTART:20300510T110000Z\r\nDTEND:20300510T120000Z\r\n\
         SUMMARY:Lunch with Molar\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    )
    .await;
    let (_, _, all) = get_feed(&s, ALL_FEED, None).await;
    let mut expected = anna_blocks(true, false);
    expected.push(("20300510T110000Z".into(), "20300510T120000Z".into()));
    expected.sort();
    assert_eq!(blocks(&all), expected, "{all}");
    assert!(!all.contains("Haircut") && !all.contains("Lunch"), "{all}");
    assert_private(&all);
    // Blocks of one occurrence differ between feeds (UIDs are per feed).
    let (_, _, team_again) = get_feed(&s, TEAM_FEED, None).await;
    let team_uids: Vec<String> = events(&team_again)
        .iter()
        .filter_map(|e| prop(e, "UID").map(str::to_owned))
        .collect();
    assert!(
        events(&all)
            .iter()
            .filter_map(|e| prop(e, "UID"))
            .all(|u| !team_uids.iter().any(|t| t == u))
    );

    // A sync that finds nothing new (the mock answers 304) keeps the ETag.
    let (_, team_etag, _) = get_feed(&s, TEAM_FEED, None).await;
    let team_etag = team_etag.expect("etag");
    let log = sync(&s).await;
    assert_eq!(
        (
            log["created"].as_u64(),
            log["updated"].as_u64(),
            log["deleted"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{log}"
    );
    let (status, _, body) = get_feed(&s, TEAM_FEED, Some(&team_etag)).await;
    assert_eq!(status, 304, "{body}");
    assert!(body.is_empty());

    // The source changes: one event gone, one added. New ETag, new blocks.
    mock.set_feed("/anna.ics", anna_calendar(false, true));
    let log = sync(&s).await;
    assert_eq!(
        (log["created"].as_u64(), log["deleted"].as_u64()),
        (Some(1), Some(1)),
        "{log}"
    );
    let (status, etag_changed, text) = get_feed(&s, TEAM_FEED, Some(&team_etag)).await;
    assert_eq!(status, 200);
    assert_ne!(etag_changed.as_deref(), Some(team_etag.as_str()));
    assert_eq!(blocks(&text), anna_blocks(false, true), "{text}");
    assert_private(&text);
    // Unchanged blocks keep their UID from one render to the next.
    let series_uid = |feed: &str| {
        events(feed)
            .iter()
            .find(|e| prop(e, "DTSTART") == Some("20300507T150000Z"))
            .and_then(|e| prop(e, "UID").map(str::to_owned))
    };
    assert!(series_uid(&text).is_some());
    assert_eq!(series_uid(&text), series_uid(&team_again));
    let (status, _, _) = get_feed(&s, TEAM_FEED, etag_changed.as_deref()).await;
    assert_eq!(status, 304);

    // Removing the source removes its blocks (and moves the ETag).
    let resp = s
        .client
        .delete(s.url(&format!("/api/v1/tenants/salon/sources/{SOURCE}")))
        .bearer_auth(SALON_KEY)
        .send()
        .await
        .expect("request sent");
    assert_eq!(resp.status(), 204);
    let (status, _, text) = get_feed(&s, TEAM_FEED, etag_changed.as_deref()).await;
    assert_eq!(status, 200);
    assert!(blocks(&text).is_empty(), "{text}");
    assert!(text.contains("SUMMARY:Haircut"));
    let (_, _, all) = get_feed(&s, ALL_FEED, None).await;
    assert_eq!(
        blocks(&all),
        vec![("20300510T110000Z".to_owned(), "20300510T120000Z".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transparent_source_publishes_nothing() {
    let mock = IcsMock::start().await;
    mock.set_feed("/anna.ics", anna_calendar(true, true));
    let mut extra = extra(&mock.url("/anna.ics"));
    extra.salon = extra
        .salon
        .replace("enabled = false\n", "enabled = false\ntransparent = true\n");
    let s = TestGateway::start_with_extra(extra).await;
    let log = sync(&s).await;
    assert_eq!(log["created"], 5, "{log}");
    let (status, _, text) = get_feed(&s, TEAM_FEED, None).await;
    assert_eq!(status, 200);
    assert!(blocks(&text).is_empty(), "{text}");
    assert_private(&text);
}
