//! The Graph and iCal-feed mocks behave as `/work/shared/providers/REFERENCE.md` (§3, §4)
//! describes. These tests exercise the mocks directly over HTTP; the gateway is not involved.

use calgate_test_mocks as providers;

use std::io::Read as _;
use std::time::{Duration, Instant};

use providers::Fault;
use providers::graph::{DEFAULT_CALENDAR_ID, GraphMock};
use providers::ics::{IcsMock, fixture};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

fn following_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(5))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

// ---------------------------------------------------------------------------------------------
// iCal feed mock

#[tokio::test]
async fn ics_serves_validators_and_answers_304_on_etag_and_if_modified_since() {
    let mock = IcsMock::start().await;
    let body = fixture("google_style.ics");
    mock.set_feed("/cal/basic.ics", body.clone());
    let http = client();
    let url = mock.url("/cal/basic.ics");

    let first = http.get(&url).send().await.expect("first fetch");
    assert_eq!(first.status(), 200);
    assert!(header(&first, "content-type").is_some_and(|ct| ct.starts_with("text/calendar")));
    let etag = header(&first, "etag").expect("ETag");
    let last_modified = header(&first, "last-modified").expect("Last-Modified");
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong quoted ETag: {etag}"
    );
    assert!(httpdate::parse_http_date(&last_modified).is_ok());
    assert_eq!(first.bytes().await.expect("body").as_ref(), body.as_slice());

    // If-None-Match (+ If-Modified-Since, as a client echoes both) → 304, empty body.
    let r = http
        .get(&url)
        .header("if-none-match", &etag)
        .header("if-modified-since", &last_modified)
        .send()
        .await
        .expect("conditional");
    assert_eq!(r.status(), 304);
    assert_eq!(header(&r, "etag").as_deref(), Some(etag.as_str()));
    assert!(r.bytes().await.expect("body").is_empty());

    // If-Modified-Since alone → 304.
    let r = http
        .get(&url)
        .header("if-modified-since", &last_modified)
        .send()
        .await
        .expect("ims");
    assert_eq!(r.status(), 304);

    // A stale ETag → 200 (If-Modified-Since is ignored when If-None-Match is present).
    let r = http
        .get(&url)
        .header("if-none-match", "\"something-else\"")
        .header("if-modified-since", &last_modified)
        .send()
        .await
        .expect("stale etag");
    assert_eq!(r.status(), 200);
    assert_eq!(mock.conditional_hits("/cal/basic.ics"), 2);
    assert_eq!(mock.hits("/cal/basic.ics"), 4);

    // A change in the same second still gets a new ETag and a later Last-Modified.
    mock.set_feed("/cal/basic.ics", fixture("outlook_style.ics"));
    let r = http
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("after change");
    assert_eq!(r.status(), 200);
    let etag2 = header(&r, "etag").expect("ETag");
    let lm2 = header(&r, "last-modified").expect("Last-Modified");
    assert_ne!(etag2, etag);
    assert!(
        httpdate::parse_http_date(&lm2).expect("date")
            > httpdate::parse_http_date(&last_modified).expect("date")
    );
    let r = http
        .get(&url)
        .header("if-modified-since", &last_modified)
        .send()
        .await
        .expect("old ims");
    assert_eq!(r.status(), 200, "old If-Modified-Since after a change");

    // Validators ignored: no ETag / Last-Modified, always 200.
    mock.set_ignore_validators("/cal/basic.ics", true);
    let r = http
        .get(&url)
        .header("if-none-match", &etag2)
        .header("if-modified-since", &lm2)
        .send()
        .await
        .expect("ignored");
    assert_eq!(r.status(), 200);
    assert!(header(&r, "etag").is_none() && header(&r, "last-modified").is_none());
}

#[tokio::test]
async fn ics_gzip_only_when_accepted() {
    let mock = IcsMock::start().await;
    let body = fixture("outlook_style.ics");
    mock.set_feed("/owa/calendar.ics", body.clone());
    mock.set_gzip("/owa/calendar.ics", true);
    mock.set_content_type("/owa/calendar.ics", "application/octet-stream");
    // Raw bytes: reqwest's own gzip decoding (on for the feed client) would hide them.
    let _ = client();
    let http = reqwest::Client::builder()
        .no_gzip()
        .build()
        .expect("client");
    let url = mock.url("/owa/calendar.ics");

    let r = http
        .get(&url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("gzip fetch");
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-encoding").as_deref(), Some("gzip"));
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/octet-stream")
    );
    let compressed = r.bytes().await.expect("body");
    assert_ne!(compressed.as_ref(), body.as_slice());
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(compressed.as_ref())
        .read_to_end(&mut decoded)
        .expect("valid gzip");
    assert_eq!(decoded, body);

    let r = http.get(&url).send().await.expect("plain fetch");
    assert!(header(&r, "content-encoding").is_none());
    assert_eq!(r.bytes().await.expect("body").as_ref(), body.as_slice());
}

#[tokio::test]
async fn ics_redirect_chain_loop_and_404() {
    let a = IcsMock::start().await;
    let b = IcsMock::start().await;
    b.set_feed("/feeds/team.ics", fixture("quirks_lf_only.ics"));
    a.redirect("/cal/team.ics", "/cal/moved.ics", 301);
    a.redirect("/cal/moved.ics", &b.url("/old/team.ics"), 302);
    b.redirect("/old/team.ics", "/feeds/team.ics", 308);

    let http = client();
    let r = http
        .get(a.url("/cal/team.ics"))
        .send()
        .await
        .expect("hop 1");
    assert_eq!(r.status(), 301);
    assert_eq!(
        header(&r, "location").as_deref(),
        Some(a.url("/cal/moved.ics").as_str())
    );

    let r = following_client()
        .get(a.url("/cal/team.ics"))
        .send()
        .await
        .expect("chain");
    assert_eq!(r.status(), 200);
    assert_eq!(r.url().as_str(), b.url("/feeds/team.ics"));
    assert_eq!(
        r.bytes().await.expect("body").as_ref(),
        fixture("quirks_lf_only.ics").as_slice()
    );
    assert_eq!(
        (
            a.hits("/cal/team.ics"),
            a.hits("/cal/moved.ics"),
            b.hits("/old/team.ics"),
            b.hits("/feeds/team.ics")
        ),
        (2, 1, 1, 1),
        "the first hop was fetched twice"
    );

    // A loop across two hosts: the client gives up.
    a.redirect("/loop.ics", &b.url("/loop.ics"), 307);
    b.redirect("/loop.ics", &a.url("/loop.ics"), 307);
    assert!(
        following_client()
            .get(a.url("/loop.ics"))
            .send()
            .await
            .is_err()
    );

    let r = http.get(a.url("/nope.ics")).send().await.expect("404");
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn ics_faults_html_and_stalled_body() {
    let mock = IcsMock::start().await;
    mock.set_feed("/f.ics", fixture("google_style.ics"));
    mock.faults_for("/f.ics")
        .push(Fault::status_retry_after(429, "120"));
    mock.faults().push(Fault::status(500));
    mock.faults().push(Fault::Gone);
    let http = client();

    let r = http.get(mock.url("/f.ics")).send().await.expect("500");
    assert_eq!(r.status(), 500, "global queue first");
    let r = http.get(mock.url("/f.ics")).send().await.expect("410");
    assert_eq!(r.status(), 410);
    let r = http.get(mock.url("/f.ics")).send().await.expect("429");
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("120"));
    let r = http.get(mock.url("/f.ics")).send().await.expect("200");
    assert_eq!(r.status(), 200);

    mock.faults().push(Fault::Reset);
    assert!(http.get(mock.url("/f.ics")).send().await.is_err());

    mock.set_feed("/login", fixture("html_login_page.html"));
    mock.set_content_type("/login", "text/html; charset=utf-8");
    let r = http.get(mock.url("/login")).send().await.expect("html");
    assert_eq!(r.status(), 200);
    assert!(r.text().await.expect("text").starts_with("<!DOCTYPE html>"));

    // Headers arrive at once, the body stalls.
    mock.set_body_stall("/f.ics", Some(Duration::from_millis(500)));
    let t0 = Instant::now();
    let r = http.get(mock.url("/f.ics")).send().await.expect("headers");
    let headers_after = t0.elapsed();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.expect("stalled body");
    assert!(
        headers_after < Duration::from_millis(400),
        "{headers_after:?}"
    );
    assert!(t0.elapsed() >= Duration::from_millis(500));
    assert_eq!(body.as_ref(), fixture("google_style.ics").as_slice());
}

#[test]
fn feed_fixtures_have_the_advertised_quirks() {
    let quirks = fixture("quirks_lf_only.ics");
    assert!(!quirks.contains(&b'\r'), "LF only");
    // A fold at 75 octets splitting "ü" (C3 BC).
    assert!(quirks.windows(4).any(|w| w == [0xC3, b'\n', b' ', 0xBC]));
    for name in ["google_style", "outlook_style", "quirks_lf_only"] {
        let ics = fixture(&format!("{name}.ics"));
        assert!(ics.starts_with(b"BEGIN:VCALENDAR"));
        let max_line = ics
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).len())
            .max();
        assert!(
            max_line.is_some_and(|m| m <= 75),
            "{name}: folded at 75 octets"
        );
        let expected: serde_json::Value =
            serde_json::from_slice(&fixture(&format!("{name}.expected.json"))).expect("json");
        let list = expected.as_array().expect("array");
        assert!(!list.is_empty());
        for item in list {
            for key in ["start", "end", "uid"] {
                assert!(item[key].is_string(), "{name}: {key}");
            }
            assert!(item["start"].as_str() < item["end"].as_str());
        }
    }
    let outlook = fixture("outlook_style.ics");
    let text = String::from_utf8_lossy(&outlook);
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert!(
        lines
            .windows(2)
            .any(|w| w[0].starts_with("UID:") && w[0].len() == 75 && w[1].starts_with(' ')),
        "folded hex UID"
    );
}

// ---------------------------------------------------------------------------------------------
// Graph mock

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn get_json(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    prefer: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = http.get(url).header("authorization", bearer(token));
    if let Some(p) = prefer {
        req = req.header("prefer", p);
    }
    let resp = req.send().await.expect("graph request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn timed(subject: &str, start: &str, end: &str) -> Value {
    json!({
        "subject": subject,
        "showAs": "busy",
        "start": {"dateTime": start, "timeZone": "UTC"},
        "end": {"dateTime": end, "timeZone": "UTC"},
    })
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn graph_delta_round_pages_empty_page_and_incremental_removals() {
    let graph = GraphMock::start().await;
    let (token, _) = graph.issue_tokens();
    let cal = DEFAULT_CALENDAR_ID;
    let mut created = Vec::new();
    for day in 10..15 {
        created.push(graph.put_event(
            cal,
            timed(
                &format!("Meeting {day}"),
                &format!("2030-05-{day}T08:00:00"),
                &format!("2030-05-{day}T09:00:00"),
            ),
        ));
    }
    // Outside the window: never reported.
    graph.put_event(
        cal,
        timed("July", "2030-07-10T08:00:00", "2030-07-10T09:00:00"),
    );
    graph.insert_empty_pages(true);
    let http = client();
    let prefer = Some("odata.maxpagesize=2, outlook.timezone=\"UTC\"");

    let mut url = format!(
        "{}/me/calendarView/delta?startDateTime=2030-05-01T00:00:00Z&endDateTime=2030-07-01T00:00:00Z",
        graph.base_url()
    );
    let mut seen = Vec::new();
    let mut page_sizes = Vec::new();
    let delta_link = loop {
        let (status, headers, body) = get_json(&http, &url, &token, prefer).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            headers
                .get("preference-applied")
                .and_then(|v| v.to_str().ok())
                .is_some_and(
                    |v| v.contains("odata.maxpagesize=2") && v.contains("odata.track-changes")
                )
        );
        let items = body["value"].as_array().expect("value").clone();
        page_sizes.push(items.len());
        assert!(items.len() <= 2);
        seen.extend(ids(&items));
        match (
            body["@odata.nextLink"].as_str(),
            body["@odata.deltaLink"].as_str(),
        ) {
            (Some(next), None) => {
                assert!(next.contains("$skiptoken="), "{next}");
                url = next.to_string();
            }
            (None, Some(delta)) => {
                assert!(delta.contains("$deltatoken="), "{delta}");
                break delta.to_string();
            }
            other => panic!("exactly one of nextLink/deltaLink expected: {other:?}"),
        }
    };
    assert_eq!(page_sizes, vec![2, 0, 2, 1], "empty middle page");
    assert_eq!(seen, created);
    let first = graph.event(cal, &created[0]).expect("stored");
    assert!(
        first["id"]
            .as_str()
            .is_some_and(|id| id.contains('=') && id.contains('-') && id.contains('_'))
    );

    // Changes: delete one, move one out of the window, edit one, add one.
    assert!(graph.delete_event(&created[0]));
    assert!(graph.patch_event(
        &created[1],
        json!({"start": {"dateTime": "2030-08-01T08:00:00", "timeZone": "UTC"},
               "end": {"dateTime": "2030-08-01T09:00:00", "timeZone": "UTC"}})
    ));
    assert!(graph.patch_event(&created[2], json!({"subject": "Renamed"})));
    let added = graph.put_event(
        cal,
        timed("New", "2030-05-20T10:00:00", "2030-05-20T11:00:00"),
    );
    graph.insert_empty_pages(false);

    let (status, _, body) = get_json(&http, &delta_link, &token, prefer).await;
    assert_eq!(status, 200);
    // 4 changes at 2 per page → a nextLink first.
    let mut items = body["value"].as_array().expect("value").clone();
    let next = body["@odata.nextLink"]
        .as_str()
        .expect("nextLink")
        .to_string();
    let (_, _, body) = get_json(&http, &next, &token, prefer).await;
    items.extend(body["value"].as_array().expect("value").iter().cloned());
    let delta_link2 = body["@odata.deltaLink"]
        .as_str()
        .expect("deltaLink")
        .to_string();
    let removed: Vec<&Value> = items
        .iter()
        .filter(|i| i.get("@removed").is_some())
        .collect();
    let mut removed_ids: Vec<String> = removed
        .iter()
        .map(|i| i["id"].as_str().unwrap_or("").to_string())
        .collect();
    removed_ids.sort();
    let mut expected_removed = vec![created[0].clone(), created[1].clone()];
    expected_removed.sort();
    assert_eq!(removed_ids, expected_removed);
    for r in &removed {
        assert_eq!(
            **r,
            json!({"@odata.type": "#microsoft.graph.event", "id": r["id"], "@removed": {"reason": "deleted"}})
        );
    }
    let changed: Vec<&Value> = items
        .iter()
        .filter(|i| i.get("@removed").is_none())
        .collect();
    assert_eq!(
        ids(&changed.iter().map(|v| (*v).clone()).collect::<Vec<_>>()),
        vec![created[2].clone(), added]
    );
    assert_eq!(changed[0]["subject"], "Renamed");
    assert_eq!(
        changed[0]["start"]["dateTime"],
        "2030-05-12T08:00:00.0000000"
    );
    assert!(changed[0]["changeKey"].is_string() && changed[0]["iCalUId"].is_string());

    // Nothing changed since: an empty final page.
    let (status, _, body) = get_json(&http, &delta_link2, &token, prefer).await;
    assert_eq!(status, 200);
    assert_eq!(body["value"], json!([]));
    assert!(body["@odata.deltaLink"].is_string() && body.get("@odata.nextLink").is_none());

    // Expired token → 410 SyncStateNotFound.
    graph.expire_delta_tokens();
    let (status, _, body) = get_json(&http, &delta_link2, &token, prefer).await;
    assert_eq!(status, 410);
    assert_eq!(body["error"]["code"], "SyncStateNotFound");
    assert!(body["error"]["innerError"]["request-id"].is_string());

    // Documented variant: 410 + Location with a fresh initial URL for the same window.
    graph.set_sync_reset_location(true);
    let (status, headers, body) = get_json(&http, &delta_link2, &token, prefer).await;
    assert_eq!(status, 410);
    assert_eq!(body["error"]["code"], "resyncRequired");
    let location = headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location");
    assert!(
        location.contains("startDateTime=2030-05-01") && location.contains("/calendarView/delta?")
    );
    // Following it starts a new round.
    let (status, _, body) = get_json(&http, location, &token, prefer).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["@odata.nextLink"].is_string());
}

#[tokio::test]
async fn graph_delta_replays_duplicates_when_asked() {
    let graph = GraphMock::start().await;
    let (token, _) = graph.issue_tokens();
    for day in 10..13 {
        graph.put_event(
            DEFAULT_CALENDAR_ID,
            timed(
                "x",
                &format!("2030-05-{day}T08:00:00"),
                &format!("2030-05-{day}T09:00:00"),
            ),
        );
    }
    graph.replay_duplicates(true);
    let http = client();
    let mut url = format!(
        "{}/me/calendars/{}/calendarView/delta?startDateTime=2030-05-01T00:00:00Z&endDateTime=2030-06-01T00:00:00Z",
        graph.base_url(),
        providers::percent_encode(DEFAULT_CALENDAR_ID)
    );
    let mut all = Vec::new();
    loop {
        let (status, _, body) = get_json(&http, &url, &token, Some("odata.maxpagesize=2")).await;
        assert_eq!(status, 200);
        all.extend(ids(body["value"].as_array().expect("value")));
        match body["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    let unique: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), 3);
    assert!(all.len() > 3, "some item replayed: {all:?}");
}

#[tokio::test]
async fn graph_calendar_view_requires_window_expands_series_and_converts_zones() {
    let graph = GraphMock::start().await;
    let (token, _) = graph.issue_tokens();
    let master = graph.put_event(
        DEFAULT_CALENDAR_ID,
        json!({
            "subject": "Weekly sync (fake)",
            "start": {"dateTime": "2030-05-06T09:00:00", "timeZone": "W. Europe Standard Time"},
            "end": {"dateTime": "2030-05-06T09:30:00", "timeZone": "W. Europe Standard Time"},
            "recurrence": {
                "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"], "firstDayOfWeek": "sunday"},
                "range": {"type": "endDate", "startDate": "2030-05-06", "endDate": "2030-06-30",
                          "recurrenceTimeZone": "W. Europe Standard Time"}
            }
        }),
    );
    graph.put_event(
        DEFAULT_CALENDAR_ID,
        json!({
            "subject": "Weekly sync (fake) - moved",
            "type": "exception",
            "seriesMasterId": master,
            "originalStart": "2030-05-20T07:00:00Z",
            "start": {"dateTime": "2030-05-20T12:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2030-05-20T12:30:00", "timeZone": "UTC"},
        }),
    );
    graph.put_event(
        DEFAULT_CALENDAR_ID,
        json!({
            "subject": "Conference", "isAllDay": true,
            "start": {"dateTime": "2030-05-21T00:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2030-05-23T00:00:00", "timeZone": "UTC"},
        }),
    );
    let http = client();
    let base = graph.base_url();

    let (status, _, body) = get_json(
        &http,
        &format!("{base}/me/calendarView?startDateTime=2030-05-13T00:00:00Z"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "ErrorInvalidParameter");

    let mut url = format!(
        "{base}/me/calendarView?startDateTime=2030-05-13T00:00:00Z&endDateTime=2030-05-28T00:00:00Z&$top=2"
    );
    let mut items = Vec::new();
    let mut pages = 0;
    loop {
        let (status, _, body) = get_json(&http, &url, &token, None).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        items.extend(body["value"].as_array().expect("value").iter().cloned());
        match body["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(
                    next.contains("%24skip=") || next.contains("$skip="),
                    "{next}"
                );
                url = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!(pages, 2);
    let summary: Vec<(String, String, String)> = items
        .iter()
        .map(|i| {
            (
                i["type"].as_str().unwrap_or("").to_string(),
                i["start"]["dateTime"].as_str().unwrap_or("").to_string(),
                i["start"]["timeZone"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let s = |t: &str, d: &str| (t.to_string(), d.to_string(), "UTC".to_string());
    assert_eq!(
        summary,
        vec![
            s("occurrence", "2030-05-13T07:00:00.0000000"),
            s("exception", "2030-05-20T12:00:00.0000000"),
            s("singleInstance", "2030-05-21T00:00:00.0000000"),
            s("occurrence", "2030-05-27T07:00:00.0000000"),
        ]
    );
    assert!(
        items
            .iter()
            .all(|i| i["seriesMasterId"] == json!(master) || i["type"] == "singleInstance")
    );

    // Prefer outlook.timezone (Windows and IANA): timed values converted, all-day kept.
    for zone in ["W. Europe Standard Time", "Europe/Berlin"] {
        let (_, headers, body) = get_json(
            &http,
            &format!("{base}/me/calendarView?startDateTime=2030-05-13T00:00:00Z&endDateTime=2030-05-22T00:00:00Z"),
            &token,
            Some(&format!("outlook.timezone=\"{zone}\"")),
        )
        .await;
        assert!(headers.get("preference-applied").is_some());
        let v = body["value"].as_array().expect("value");
        assert_eq!(
            v[0]["start"],
            json!({"dateTime": "2030-05-13T09:00:00.0000000", "timeZone": zone})
        );
        assert_eq!(v[2]["start"]["dateTime"], "2030-05-21T00:00:00.0000000");
    }
    let (status, _, body) = get_json(
        &http,
        &format!("{base}/me/events/{}", providers::percent_encode(&master)),
        &token,
        Some("outlook.timezone=\"Pacific Standard Time\""),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["type"], "seriesMaster");
    assert_eq!(body["start"]["dateTime"], "2030-05-06T00:00:00.0000000");
}

#[tokio::test]
async fn graph_writes_transaction_id_if_match_marker_lookup_and_404() {
    let graph = GraphMock::start().await;
    let (token, _) = graph.issue_tokens();
    let http = client();
    let base = graph.base_url();
    let marker = "String {6f1d7f0e-0000-4000-8000-00000000fa4e} Name gatewayBookingId";
    let request = json!({
        "subject": "Busy",
        "start": {"dateTime": "2030-05-16T09:00:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2030-05-16T10:00:00", "timeZone": "Europe/Berlin"},
        "showAs": "busy",
        "transactionId": "bk_fake_0002-v1",
        "singleValueExtendedProperties": [{"id": marker, "value": "bk_fake_0002"}],
    });
    let post = |body: Value| {
        http.post(format!(
            "{base}/me/calendars/{}/events",
            providers::percent_encode(DEFAULT_CALENDAR_ID)
        ))
        .header("authorization", bearer(&token))
        .json(&body)
        .send()
    };
    let r = post(request.clone()).await.expect("create");
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.expect("json");
    for key in [
        "id",
        "@odata.etag",
        "changeKey",
        "iCalUId",
        "createdDateTime",
        "lastModifiedDateTime",
    ] {
        assert!(created[key].is_string(), "{key} in {created}");
    }
    assert_eq!(created["start"]["dateTime"], "2030-05-16T09:00:00.0000000");
    let id = created["id"].as_str().expect("id").to_string();
    let r = post(request).await.expect("retry");
    assert_eq!(r.status(), 201);
    let again: Value = r.json().await.expect("json");
    assert_eq!(
        again["id"], created["id"],
        "same transactionId → same event"
    );
    assert_eq!(
        graph.live_events(DEFAULT_CALENDAR_ID).len(),
        1,
        "no duplicate"
    );

    // Marker lookup.
    let filter = format!(
        "singleValueExtendedProperties/Any(ep: ep/id eq '{marker}' and ep/value eq 'bk_fake_0002')"
    );
    let expand = format!("singleValueExtendedProperties($filter=id eq '{marker}')");
    let url = format!(
        "{base}/me/events?{}",
        providers::encode_query(&[("$filter", &filter), ("$expand", &expand)])
    );
    let (status, _, body) = get_json(&http, &url, &token, None).await;
    assert_eq!(status, 200, "{body}");
    let found = body["value"].as_array().expect("value");
    assert_eq!(ids(found), vec![id.clone()]);
    assert_eq!(
        found[0]["singleValueExtendedProperties"][0]["value"],
        "bk_fake_0002"
    );
    let other = filter.replace("bk_fake_0002", "bk_other");
    let (_, _, body) = get_json(
        &http,
        &format!(
            "{base}/me/events?{}",
            providers::encode_query(&[("$filter", &other)])
        ),
        &token,
        None,
    )
    .await;
    assert_eq!(body["value"], json!([]));
    let (_, _, body) = get_json(
        &http,
        &format!("{base}/me/events/{}", providers::percent_encode(&id)),
        &token,
        None,
    )
    .await;
    assert!(
        body.get("singleValueExtendedProperties").is_none(),
        "not expanded"
    );

    // Ids with `/` and `+` work when percent-encoded in the path.
    let odd = graph.put_event(
        DEFAULT_CALENDAR_ID,
        json!({"id": "AAMkAD+odd/id-x_y=", "subject": "odd",
               "start": {"dateTime": "2030-05-17T09:00:00", "timeZone": "UTC"},
               "end": {"dateTime": "2030-05-17T10:00:00", "timeZone": "UTC"}}),
    );
    let (status, _, body) = get_json(
        &http,
        &format!("{base}/me/events/{}", providers::percent_encode(&odd)),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], "AAMkAD+odd/id-x_y=");

    // PATCH with a stale If-Match → 412; with the current one → 200.
    let event_url = format!("{base}/me/events/{}", providers::percent_encode(&id));
    let patch = |etag: String| {
        http.patch(&event_url)
            .header("authorization", bearer(&token))
            .header("if-match", etag)
            .json(&json!({"end": {"dateTime": "2030-05-16T10:30:00", "timeZone": "Europe/Berlin"}}))
            .send()
    };
    let etag = created["@odata.etag"].as_str().expect("etag").to_string();
    let r = patch(etag.clone()).await.expect("patch");
    assert_eq!(r.status(), 200);
    let patched: Value = r.json().await.expect("json");
    assert_ne!(patched["@odata.etag"], created["@odata.etag"]);
    let r = patch(etag).await.expect("stale patch");
    assert_eq!(r.status(), 412);

    // DELETE → 204; again → 404 ErrorItemNotFound.
    let delete = || {
        http.delete(&event_url)
            .header("authorization", bearer(&token))
            .send()
    };
    assert_eq!(delete().await.expect("delete").status(), 204);
    let r = delete().await.expect("delete again");
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "ErrorItemNotFound");
}

#[tokio::test]
async fn graph_401_after_expiry_and_microsoft_refresh_rotates() {
    let graph = GraphMock::start().await;
    let redirect = "http://127.0.0.1:9/oauth/microsoft/callback";
    graph.set_redirect_uri(redirect);
    let http = client();

    // Browser leg + code exchange with PKCE.
    let verifier = "FAKE-verifier-FAKE-verifier-FAKE-verifier-0002";
    let authorize = format!(
        "{}?{}",
        graph.authorize_url(),
        providers::encode_query(&[
            ("client_id", "ms-client-id"),
            ("response_type", "code"),
            ("redirect_uri", redirect),
            ("scope", "offline_access User.Read Calendars.ReadWrite"),
            ("state", "st1"),
            ("code_challenge", &providers::pkce_s256(verifier)),
            ("code_challenge_method", "S256"),
        ])
    );
    let r = http.get(&authorize).send().await.expect("authorize");
    assert_eq!(r.status(), 302);
    let location = header(&r, "location").expect("location");
    let query = providers::parse_query(location.split_once('?').map(|(_, q)| q));
    let code = providers::query_get(&query, "code")
        .expect("code")
        .to_string();
    let token = |form: &[(&str, &str)]| {
        http.post(graph.token_url())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(providers::encode_query(form))
            .send()
    };
    let r = token(&[
        ("client_id", "ms-client-id"),
        ("client_secret", "ms-client-secret"),
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", redirect),
        ("code_verifier", verifier),
    ])
    .await
    .expect("exchange");
    assert_eq!(r.status(), 200);
    let tokens: Value = r.json().await.expect("json");
    let access = tokens["access_token"].as_str().expect("access").to_string();
    let refresh1 = tokens["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_string();

    graph.add_calendar(
        "AAMkAGFAKE-calendar-holidays-AAAAAAEHAAA=",
        "Holidays",
        false,
    );
    let me = format!("{}/me/calendars", graph.base_url());
    let (status, _, body) = get_json(&http, &format!("{me}?$top=1"), &access, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["value"][0]["isDefaultCalendar"], true);
    let next = body["@odata.nextLink"].as_str().expect("calendar paging");
    let (_, _, body) = get_json(&http, next, &access, None).await;
    assert_eq!(body["value"][0]["name"], "Holidays");
    assert!(body.get("@odata.nextLink").is_none());

    graph.oauth().expire_access_tokens();
    let (status, headers, body) = get_json(&http, &me, &access, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    assert!(
        headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer "))
    );
    let r = http.get(&me).send().await.expect("no token");
    assert_eq!(r.status(), 401);

    let refresh = |rt: &str| {
        let form = [
            ("client_id", "ms-client-id"),
            ("client_secret", "ms-client-secret"),
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
        ];
        token(&form)
    };
    let r = refresh(&refresh1).await.expect("refresh");
    assert_eq!(r.status(), 200);
    let t2: Value = r.json().await.expect("json");
    let refresh2 = t2["refresh_token"].as_str().expect("rotated refresh token");
    assert_ne!(refresh2, refresh1);
    let access2 = t2["access_token"].as_str().expect("access");
    let (status, _, _) = get_json(&http, &me, access2, None).await;
    assert_eq!(status, 200);

    graph.oauth().revoke_refresh_tokens();
    let r = refresh(refresh2).await.expect("refresh revoked");
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn graph_throttling_faults_with_retry_after() {
    let graph = GraphMock::start().await;
    let (token, _) = graph.issue_tokens();
    graph.faults().push(Fault::status_retry_after(429, "2.128"));
    graph.faults().push(Fault::status_retry_after(429, "1"));
    graph.faults().push(Fault::status_retry_after(503, "1"));
    graph.faults().push(Fault::status(500));
    let http = client();
    let url = format!("{}/me/calendars", graph.base_url());

    let (status, headers, body) = get_json(&http, &url, &token, None).await;
    assert_eq!(status, 429);
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("2.128")
    );
    assert_eq!(body["error"]["code"], "TooManyRequests");
    assert_eq!(body["error"]["innerError"]["status"], "429");
    let (status, headers, _) = get_json(&http, &url, &token, None).await;
    assert_eq!(status, 429);
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let (status, headers, body) = get_json(&http, &url, &token, None).await;
    assert_eq!(status, 503);
    assert!(headers.get("retry-after").is_some());
    assert_eq!(body["error"]["code"], "serviceNotAvailable");
    let (status, _, _) = get_json(&http, &url, &token, None).await;
    assert_eq!(status, 500);
    let (status, _, _) = get_json(&http, &url, &token, None).await;
    assert_eq!(status, 200);
    // An unauthenticated request does not consume a fault.
    graph.faults().push(Fault::status(500));
    assert_eq!(http.get(&url).send().await.expect("anon").status(), 401);
    assert_eq!(graph.faults().len(), 1);
}

#[tokio::test]
async fn graph_daily_series_occurrence_delete_shows_as_removed() {
    let graph = GraphMock::start().await;
    let (token, _) = graph.issue_tokens();
    graph.put_event(
        DEFAULT_CALENDAR_ID,
        json!({
            "subject": "Every other day",
            "start": {"dateTime": "2030-05-10T10:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2030-05-10T11:00:00", "timeZone": "UTC"},
            "recurrence": {
                "pattern": {"type": "daily", "interval": 2},
                "range": {"type": "numbered", "startDate": "2030-05-10", "numberOfOccurrences": 3}
            }
        }),
    );
    let http = client();
    let url = format!(
        "{}/me/calendarView/delta?startDateTime=2030-05-01T00:00:00Z&endDateTime=2030-06-01T00:00:00Z",
        graph.base_url()
    );
    let (status, _, body) = get_json(&http, &url, &token, None).await;
    assert_eq!(status, 200);
    let items = body["value"].as_array().expect("value");
    let starts: Vec<&str> = items
        .iter()
        .filter_map(|i| i["start"]["dateTime"].as_str())
        .collect();
    assert_eq!(
        starts,
        vec![
            "2030-05-10T10:00:00.0000000",
            "2030-05-12T10:00:00.0000000",
            "2030-05-14T10:00:00.0000000"
        ]
    );
    assert!(items.iter().all(|i| i["type"] == "occurrence"));
    let occ = ids(items);
    let delta_link = body["@odata.deltaLink"].as_str().expect("deltaLink");

    let r = http
        .delete(format!(
            "{}/me/events/{}",
            graph.base_url(),
            providers::percent_encode(&occ[1])
        ))
        .header("authorization", bearer(&token))
        .send()
        .await
        .expect("delete occurrence");
    assert_eq!(r.status(), 204);
    let (status, _, body) = get_json(
        &http,
        &format!(
            "{}/me/events/{}",
            graph.base_url(),
            providers::percent_encode(&occ[2])
        ),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["type"], "occurrence");

    let (status, _, body) = get_json(&http, delta_link, &token, None).await;
    assert_eq!(status, 200);
    let removed: Vec<&Value> = body["value"]
        .as_array()
        .expect("value")
        .iter()
        .filter(|i| i.get("@removed").is_some())
        .collect();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0]["id"], json!(occ[1]));
    let (status, _, body) = get_json(&http, &format!("{url}&$deltatoken=x"), &token, None).await;
    assert_eq!(status, 400, "window re-appended to a token: {body}");
}
