//! Google and Microsoft calendars end to end, through the real gateway over HTTP:
//! connect the account with the OAuth code flow (start → the mock's consent page →
//! our callback), pick a calendar, sync, see the events in free/busy and in the
//! source's read-only CalDAV collection, follow changes incrementally, refresh
//! expired access tokens, survive revoked grants, throttling, outages, forged
//! callbacks and a `kill -9` in the middle of a sync, and record conflicts with
//! bookings.

mod common;
use calgate_test_mocks as providers;

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{Extra, SALON_KEY, TestServer, WEBHOOK_SECRET};
use providers::Fault;
use providers::google::{GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET, GoogleMock};
use providers::graph::{CLIENT_ID as MS_CLIENT_ID, CLIENT_SECRET as MS_CLIENT_SECRET, GraphMock};
use serde_json::{Value, json};

/// Where the gateway says it lives (behind a proxy); the mocks redirect there.
const PUBLIC_URL: &str = "https://calendar.example.test";
const TEAM: &str = "team#rota@group.calendar.google.com";
const MAY_2030: &str = "start=2030-05-01T00:00:00Z&end=2030-06-01T00:00:00Z";

// ---------------------------------------------------------------------------------------------
// Gateway plumbing

fn google_extra(g: &GoogleMock) -> String {
    format!(
        "fetch_allow = [\"127.0.0.1/32\"]\npublic_url = \"{PUBLIC_URL}\"\n\n[providers.google]\nclient_id = \"{GOOGLE_CLIENT_ID}\"\nclient_secret = \"{GOOGLE_CLIENT_SECRET}\"\nauth_url = \"{}\"\ntoken_url = \"{}\"\napi_base = \"{}\"\n",
        g.authorize_url(),
        g.token_url(),
        g.base_url()
    )
}

fn microsoft_extra(m: &GraphMock) -> String {
    format!(
        "fetch_allow = [\"127.0.0.1/32\"]\npublic_url = \"{PUBLIC_URL}\"\n\n[providers.microsoft]\nclient_id = \"{MS_CLIENT_ID}\"\nclient_secret = \"{MS_CLIENT_SECRET}\"\nauth_url = \"{}\"\ntoken_url = \"{}\"\napi_base = \"{}\"\n",
        m.authorize_url(),
        m.token_url(),
        m.base_url()
    )
}

/// A Google mock whose registered redirect URI is the gateway's callback.
async fn google_mock() -> GoogleMock {
    let g = GoogleMock::start().await;
    g.set_redirect_uri(format!("{PUBLIC_URL}/oauth/google/callback"));
    g.add_calendar(TEAM, "Team rota", "Europe/Berlin", "reader");
    g
}

/// A client that shows redirects instead of following them (as a test browser).
fn browser() -> reqwest::Client {
    calgate::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// A gateway reachable at `base` (in-process or the real binary).
struct Gw {
    base: String,
    http: reqwest::Client,
}

impl Gw {
    fn of(s: &TestServer) -> Gw {
        Gw {
            base: s.base.clone(),
            http: browser(),
        }
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1/tenants/salon{path}", self.base))
            .bearer_auth(SALON_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.api(reqwest::Method::GET, path, None).await
    }

    async fn sync(&self, source: &str, mode: &str) -> (u16, Value) {
        self.api(
            reqwest::Method::POST,
            &format!("/sources/{source}/sync?mode={mode}"),
            None,
        )
        .await
    }

    /// Runs a sync that must succeed; returns its log entry.
    async fn sync_ok(&self, source: &str, mode: &str) -> Value {
        let (status, log) = self.sync(source, mode).await;
        assert_eq!(status, 200, "sync of {source} failed: {log}");
        assert!(log["error"].is_null(), "{log}");
        log
    }

    async fn source(&self, source: &str) -> Value {
        let (status, body) = self.get(&format!("/sources/{source}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The source's busy blocks in May 2030 as (start, end) UTC text.
    async fn busy(&self, source: &str) -> Vec<(String, String)> {
        let (status, body) = self
            .get(&format!("/freebusy?{MAY_2030}&sources={source}"))
            .await;
        assert_eq!(status, 200, "{body}");
        body["busy"]
            .as_array()
            .expect("busy list")
            .iter()
            .map(|b| {
                (
                    b["start"].as_str().unwrap_or_default().to_owned(),
                    b["end"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Connects `source` through the whole browser flow: our start (API key) →
    /// the provider's consent page → our callback. Returns the callback's answer.
    async fn connect(&self, provider: &str, source: &str) -> Value {
        let (code, state, path) = self.authorize(provider, source).await;
        let resp = self
            .http
            .get(format!("{}{path}?code={code}&state={state}", self.base))
            .send()
            .await
            .expect("callback");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "callback failed: {body}");
        assert_eq!(body["connected"], true, "{body}");
        assert_eq!(body["source"], source, "{body}");
        body
    }

    /// Start and consent, stopping before our callback: (code, state, callback path),
    /// the first two percent-encoded.
    async fn authorize(&self, provider: &str, source: &str) -> (String, String, String) {
        let start = format!(
            "{}/oauth/{provider}/start?tenant=salon&source={source}",
            self.base
        );
        let resp = self
            .http
            .get(&start)
            .bearer_auth(SALON_KEY)
            .send()
            .await
            .expect("start");
        assert_eq!(resp.status(), 302, "start must redirect to the provider");
        let to_provider = location(&resp);
        // Without the API key nobody may start connecting the tenant's accounts.
        let anonymous = self.http.get(&start).send().await.expect("start");
        assert_eq!(anonymous.status(), 401);

        let resp = self
            .http
            .get(&to_provider)
            .send()
            .await
            .expect("consent page");
        assert_eq!(resp.status(), 302, "the provider must redirect back");
        let back = reqwest::Url::parse(&location(&resp)).expect("callback URL");
        assert_eq!(
            back.origin().ascii_serialization(),
            PUBLIC_URL,
            "redirect_uri is built from public_url"
        );
        let pairs: HashMap<String, String> = back.query_pairs().into_owned().collect();
        let enc = |s: &str| providers::percent_encode(s);
        (
            enc(pairs.get("code").expect("a code")),
            enc(pairs.get("state").expect("a state")),
            back.path().to_owned(),
        )
    }

    /// The objects of the source's CalDAV collection: (href, UIDs, calendar data).
    async fn dav_objects(&self, source: &str) -> Vec<(String, BTreeSet<String>, String)> {
        let body = r#"<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/></D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"/></C:comp-filter></C:filter></C:calendar-query>"#;
        let resp = self
            .http
            .request(
                reqwest::Method::from_bytes(b"REPORT").expect("method"),
                format!("{}/dav/calendars/salon/{source}/", self.base),
            )
            .basic_auth("ana", Some("secret"))
            .header("depth", "1")
            .header("content-type", "application/xml")
            .body(body)
            .send()
            .await
            .expect("REPORT");
        assert_eq!(resp.status(), 207);
        let text = resp.text().await.expect("multistatus");
        text.split("<d:response>")
            .skip(1)
            .map(|block| {
                let href = between(block, "<d:href>", "</d:href>").unwrap_or_default();
                let uids = block
                    .split("UID:")
                    .skip(1)
                    .map(|rest| {
                        rest.split(['\r', '\n', '&', '<'])
                            .next()
                            .unwrap_or_default()
                            .to_owned()
                    })
                    .collect();
                (href.to_owned(), uids, block.to_owned())
            })
            .collect()
    }

    /// Asserts one UID per object, no UID in two objects; returns the object count.
    async fn dav_objects_checked(&self, source: &str) -> usize {
        let objects = self.dav_objects(source).await;
        let mut seen = BTreeSet::new();
        for (href, uids, data) in &objects {
            assert_eq!(uids.len(), 1, "{href}: one UID per object: {data}");
            for uid in uids {
                assert!(seen.insert(uid.clone()), "UID {uid} is in two objects");
            }
        }
        objects.len()
    }
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("a Location header")
        .to_owned()
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}

/// A timed Google event on 2030-05-`day`, `from`–`to` o'clock Berlin summer time.
fn google_event(id: &str, summary: &str, day: u32, from: u32, to: u32) -> Value {
    json!({
        "id": id,
        "summary": summary,
        "start": {"dateTime": format!("2030-05-{day:02}T{from:02}:00:00+02:00"), "timeZone": "Europe/Berlin"},
        "end": {"dateTime": format!("2030-05-{day:02}T{to:02}:00:00+02:00"), "timeZone": "Europe/Berlin"},
    })
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

async fn create_google_source(gw: &Gw, id: &str) {
    let (status, body) = gw
        .api(
            reqwest::Method::POST,
            "/sources",
            Some(json!({"id": id, "name": "Anna (Google)", "kind": "google", "enabled": false})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// Creates, connects and points a Google source at `calendar`.
async fn connected_google_source(gw: &Gw, id: &str, calendar: &str) {
    create_google_source(gw, id).await;
    gw.connect("google", id).await;
    let (status, body) = gw
        .api(
            reqwest::Method::PATCH,
            &format!("/sources/{id}"),
            Some(json!({"calendar": calendar})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

// ---------------------------------------------------------------------------------------------
// 1. Google

#[tokio::test(flavor = "multi_thread")]
async fn google_connect_pick_sync_refresh_and_reauth() {
    let g = google_mock().await;
    g.put_event(
        &g.primary_id(),
        google_event("private0001", "Not this calendar", 7, 9, 10),
    );
    g.put_event(TEAM, google_event("dentist0001", "Dentist", 14, 10, 11));
    g.put_event(
        TEAM,
        json!({
            "id": "standup0001",
            "summary": "Standup",
            "start": {"dateTime": "2030-05-06T09:00:00+02:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2030-05-06T09:30:00+02:00", "timeZone": "Europe/Berlin"},
            "recurrence": ["RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=3"],
        }),
    );
    g.put_event(
        TEAM,
        json!({"id": "offsite0001", "summary": "Offsite",
               "start": {"date": "2030-05-22"}, "end": {"date": "2030-05-23"}}),
    );
    g.put_event(
        TEAM,
        json!({"id": "lunch0001", "summary": "Lunch (free)", "transparency": "transparent",
               "start": {"dateTime": "2030-05-15T12:00:00+02:00"}, "end": {"dateTime": "2030-05-15T13:00:00+02:00"}}),
    );
    let s = TestServer::start_with_extra(Extra {
        server: google_extra(&g),
        salon: String::new(),
    })
    .await;
    let gw = Gw::of(&s);

    create_google_source(&gw, "anna").await;
    // Not connected yet: no calendars to list, syncing needs the account.
    let (status, _) = gw.get("/sources/anna/calendars").await;
    assert_eq!(status, 409);
    let (status, problem) = gw.sync("anna", "incremental").await;
    assert_eq!(status, 409, "{problem}");

    let connected = gw.connect("google", "anna").await;
    let listed: Vec<&str> = connected["calendars"]
        .as_array()
        .expect("calendars in the callback")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert!(listed.contains(&TEAM), "{connected}");
    // PKCE S256, offline access with consent (so a refresh token comes back).
    let grant = g.oauth().last_grant().expect("a grant");
    assert_eq!(grant.code_challenge_method.as_deref(), Some("S256"));
    assert!(grant.refresh_token_due);

    let (status, calendars) = gw.get("/sources/anna/calendars").await;
    assert_eq!(status, 200, "{calendars}");
    let list = calendars["calendars"].as_array().expect("calendars");
    assert_eq!(list.len(), 2, "{calendars}");
    let team = list
        .iter()
        .find(|c| c["id"] == TEAM)
        .expect("team calendar");
    assert_eq!(team["name"], "Team rota");
    assert!(
        list.iter()
            .any(|c| c["primary"] == true && c["id"] == g.primary_id().as_str())
    );

    // Pick the team calendar (bad input is named, unknown fields refused).
    let (status, body) = gw
        .api(
            reqwest::Method::PATCH,
            "/sources/anna",
            Some(json!({"calendar": ""})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = gw
        .api(
            reqwest::Method::PATCH,
            "/sources/anna",
            Some(json!({"colour": "red"})),
        )
        .await;
    assert_eq!(status, 422);
    let (status, body) = gw
        .api(
            reqwest::Method::PATCH,
            "/sources/anna",
            Some(json!({"calendar": TEAM})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["target"], TEAM);
    assert_eq!(body["status"]["connected"], true, "{body}");

    let log = gw.sync_ok("anna", "incremental").await;
    assert_eq!(log["created"], 4, "{log}");
    let first = sorted(vec![
        ("2030-05-06T07:00:00Z".into(), "2030-05-06T07:30:00Z".into()),
        ("2030-05-13T07:00:00Z".into(), "2030-05-13T07:30:00Z".into()),
        ("2030-05-14T08:00:00Z".into(), "2030-05-14T09:00:00Z".into()),
        ("2030-05-20T07:00:00Z".into(), "2030-05-20T07:30:00Z".into()),
        // All-day: the tenant's day (Europe/Paris).
        ("2030-05-21T22:00:00Z".into(), "2030-05-22T22:00:00Z".into()),
    ]);
    assert_eq!(gw.busy("anna").await, first);
    assert_eq!(gw.dav_objects_checked("anna").await, 4);
    let team_requests = g.api_requests();
    let listing = team_requests
        .iter()
        .rev()
        .find(|r| r.path.ends_with("/events"))
        .expect("an events.list call");
    // The calendar id is percent-encoded in the path ('#' and '@' in it).
    assert!(
        listing.path.contains("team%23rota%40group")
            && providers::percent_decode(&listing.path).is_some_and(|p| p.contains(TEAM)),
        "{}",
        listing.path
    );
    assert_eq!(listing.query_param("singleEvents"), Some("false"));

    // Changes on the provider: a move, a deletion, a new event, a cancelled instance.
    g.patch_event(
        TEAM,
        "dentist0001",
        json!({"start": {"dateTime": "2030-05-14T15:00:00+02:00"}, "end": {"dateTime": "2030-05-14T16:00:00+02:00"}}),
    );
    g.cancel_event(TEAM, "offsite0001");
    g.put_event(TEAM, google_event("review0001", "Review", 28, 12, 13));
    g.cancel_event(TEAM, "standup0001_20300513T070000Z");
    g.clear_requests();
    let log = gw.sync_ok("anna", "incremental").await;
    assert_eq!(
        (&log["created"], &log["updated"], &log["deleted"]),
        (&json!(1), &json!(2), &json!(1)),
        "{log}"
    );
    let incremental = g.api_requests();
    assert!(
        !incremental.is_empty()
            && incremental
                .iter()
                .all(|r| r.query_param("syncToken").is_some()),
        "the incremental sync must send the syncToken: {incremental:?}"
    );
    let second = sorted(vec![
        ("2030-05-06T07:00:00Z".into(), "2030-05-06T07:30:00Z".into()),
        ("2030-05-14T13:00:00Z".into(), "2030-05-14T14:00:00Z".into()),
        ("2030-05-20T07:00:00Z".into(), "2030-05-20T07:30:00Z".into()),
        ("2030-05-28T10:00:00Z".into(), "2030-05-28T11:00:00Z".into()),
    ]);
    assert_eq!(gw.busy("anna").await, second);
    assert_eq!(gw.dav_objects_checked("anna").await, 4);

    // The access token expires: one 401, one refresh, the sync goes through.
    let refreshes = g.oauth().refreshes();
    g.oauth().expire_access_tokens();
    g.put_event(TEAM, google_event("oneone0001", "1:1", 29, 9, 10));
    let log = gw.sync_ok("anna", "incremental").await;
    assert_eq!(log["created"], 1, "{log}");
    assert_eq!(g.oauth().refreshes(), refreshes + 1);
    let mut third = second.clone();
    third.push(("2030-05-29T07:00:00Z".into(), "2030-05-29T08:00:00Z".into()));
    let third = sorted(third);
    assert_eq!(gw.busy("anna").await, third);

    // The grant is revoked: needs_reauth with a clear message, the cache stays.
    g.oauth().revoke_refresh_tokens();
    g.oauth().expire_access_tokens();
    let (status, problem) = gw.sync("anna", "incremental").await;
    assert_eq!(status, 409, "{problem}");
    let one = gw.source("anna").await;
    assert_eq!(one["status"]["needs_reauth"], true, "{one}");
    let message = one["status"]["last_error"].as_str().unwrap_or_default();
    assert!(
        message.contains("connected again") && message.contains("revoked"),
        "{message}"
    );
    assert_eq!(gw.busy("anna").await, third);
    assert_eq!(gw.dav_objects_checked("anna").await, 5);
    let (_, logs) = gw.get("/sources/anna/logs").await;
    assert!(
        logs["logs"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("connected again")),
        "{logs}"
    );

    // Connecting again clears it; syncing works again.
    gw.connect("google", "anna").await;
    let one = gw.source("anna").await;
    assert_eq!(one["status"]["needs_reauth"], false, "{one}");
    g.put_event(TEAM, google_event("late0001", "Late", 30, 18, 19));
    let log = gw.sync_ok("anna", "incremental").await;
    assert_eq!(log["created"], 1, "{log}");
    let one = gw.source("anna").await;
    assert!(one["status"]["last_error"].is_null(), "{one}");
    assert_eq!(one["status"]["consecutive_failures"], 0, "{one}");

    // Tokens are sealed at rest: no access or refresh token in the database files
    // (and the sled files are really there to look at).
    let files = walk(s.dir.path());
    assert!(files.iter().any(|f| f.ends_with("secret.key")), "{files:?}");
    let mut leaked = Vec::new();
    for file in &files {
        let bytes = std::fs::read(file).unwrap_or_default();
        for prefix in [&b"ya29.mock-"[..], b"1//mock-"] {
            if bytes.windows(prefix.len()).any(|w| w == prefix) {
                leaked.push(file.clone());
            }
        }
    }
    assert!(
        leaked.is_empty(),
        "tokens stored in the clear in {leaked:?}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 2. Microsoft Graph

fn graph_event(subject: &str, day: u32, from: &str, to: &str, zone: &str) -> Value {
    json!({
        "subject": subject,
        "start": {"dateTime": format!("2030-05-{day:02}T{from}:00"), "timeZone": zone},
        "end": {"dateTime": format!("2030-05-{day:02}T{to}:00"), "timeZone": zone},
        "showAs": "busy",
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn microsoft_connect_sync_removals_series_and_sync_reset() {
    let m = GraphMock::start().await;
    m.set_redirect_uri(&format!("{PUBLIC_URL}/oauth/microsoft/callback"));
    m.insert_empty_pages(true);
    let cal = providers::graph::DEFAULT_CALENDAR_ID;
    let planning = m.put_event(
        cal,
        graph_event("Planning", 15, "10:00", "11:30", "W. Europe Standard Time"),
    );
    let mut free = graph_event("Focus (free)", 16, "08:00", "09:00", "UTC");
    free["showAs"] = json!("free");
    m.put_event(cal, free);
    let master = m.put_event(
        cal,
        json!({
            "subject": "Weekly",
            "start": {"dateTime": "2030-05-06T14:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2030-05-06T14:30:00", "timeZone": "UTC"},
            "recurrence": {
                "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"], "firstDayOfWeek": "sunday"},
                "range": {"type": "numbered", "startDate": "2030-05-06", "numberOfOccurrences": 4, "recurrenceTimeZone": "UTC"},
            },
        }),
    );
    let series_uid = m.event(cal, &master).expect("master")["iCalUId"]
        .as_str()
        .expect("iCalUId")
        .to_owned();
    // Two moved instances that carry the series' iCalUId (as Outlook's do).
    let exception = |day: u32, at: &str, to: &str| {
        json!({
            "type": "exception",
            "seriesMasterId": master,
            "iCalUId": series_uid,
            "originalStart": format!("2030-05-{day:02}T14:00:00Z"),
            "subject": "Weekly (moved)",
            "start": {"dateTime": format!("2030-05-{day:02}T{at}:00"), "timeZone": "UTC"},
            "end": {"dateTime": format!("2030-05-{day:02}T{to}:00"), "timeZone": "UTC"},
        })
    };
    let moved_13 = m.put_event(cal, exception(13, "16:00", "16:30"));
    m.put_event(cal, exception(20, "17:00", "17:30"));

    // Declared in the file, without a calendar: the account's default one.
    let s = TestServer::start_with_extra(Extra {
        server: microsoft_extra(&m),
        salon: "[[tenant.source]]\nid = \"outlook\"\nname = \"Ben (Outlook)\"\nkind = \"microsoft\"\nenabled = false\n".into(),
    })
    .await;
    let gw = Gw::of(&s);
    let connected = gw.connect("microsoft", "outlook").await;
    assert!(
        connected["calendars"]
            .as_array()
            .is_some_and(|l| l.iter().any(|c| c["id"] == cal && c["primary"] == true)),
        "{connected}"
    );
    assert!(
        m.oauth()
            .last_authorize_param("scope")
            .is_some_and(|sc| sc.contains("offline_access")),
        "a refresh token needs offline_access"
    );
    // Declared sources are changed in the file, not over the API.
    let (status, _) = gw
        .api(
            reqwest::Method::PATCH,
            "/sources/outlook",
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 409);

    let log = gw.sync_ok("outlook", "full").await;
    // Planning, the free event, and the weekly series as one object.
    assert_eq!(log["created"], 3, "{log}");
    let first = sorted(vec![
        ("2030-05-06T14:00:00Z".into(), "2030-05-06T14:30:00Z".into()),
        ("2030-05-13T16:00:00Z".into(), "2030-05-13T16:30:00Z".into()),
        ("2030-05-15T08:00:00Z".into(), "2030-05-15T09:30:00Z".into()),
        ("2030-05-20T17:00:00Z".into(), "2030-05-20T17:30:00Z".into()),
        ("2030-05-27T14:00:00Z".into(), "2030-05-27T14:30:00Z".into()),
    ]);
    assert_eq!(gw.busy("outlook").await, first);
    assert_eq!(gw.dav_objects_checked("outlook").await, 3);
    let objects = gw.dav_objects("outlook").await;
    let series = objects
        .iter()
        .find(|(_, _, data)| data.contains("Weekly"))
        .expect("the series object");
    assert_eq!(series.2.matches("RECURRENCE-ID").count(), 4, "{}", series.2);
    assert!(
        m.requests()
            .iter()
            .any(|r| r.path.ends_with("/me/calendar/calendarView/delta")),
        "no calendar picked: the default calendar's delta"
    );

    // Deleted on the provider (→ @removed, by id only), an instance moved back,
    // a new event.
    assert!(m.delete_event(&planning));
    assert!(m.delete_event(&moved_13));
    m.put_event(cal, graph_event("Review", 28, "09:00", "10:00", "UTC"));
    let mark = m.requests().len();
    let log = gw.sync_ok("outlook", "incremental").await;
    assert_eq!(
        (&log["created"], &log["updated"], &log["deleted"]),
        (&json!(1), &json!(1), &json!(1)),
        "{log}"
    );
    let round = m.requests().split_off(mark);
    assert!(
        round
            .first()
            .is_some_and(|r| r.query_param("$deltatoken").is_some()),
        "the incremental round starts from the deltaLink: {round:?}"
    );
    let second = sorted(vec![
        ("2030-05-06T14:00:00Z".into(), "2030-05-06T14:30:00Z".into()),
        ("2030-05-13T14:00:00Z".into(), "2030-05-13T14:30:00Z".into()),
        ("2030-05-20T17:00:00Z".into(), "2030-05-20T17:30:00Z".into()),
        ("2030-05-27T14:00:00Z".into(), "2030-05-27T14:30:00Z".into()),
        ("2030-05-28T09:00:00Z".into(), "2030-05-28T10:00:00Z".into()),
    ]);
    assert_eq!(gw.busy("outlook").await, second);
    assert_eq!(gw.dav_objects_checked("outlook").await, 3);

    // Graph forgets the sync state (410 with a reset Location): the engine starts a
    // fresh round and ends with exactly the remote calendar.
    m.set_sync_reset_location(true);
    m.expire_delta_tokens();
    let rounds = m.delta_tokens_issued();
    let review = m
        .live_events(cal)
        .iter()
        .find(|e| e["subject"] == "Review")
        .and_then(|e| e["id"].as_str().map(str::to_owned))
        .expect("review");
    assert!(m.delete_event(&review));
    gw.sync_ok("outlook", "incremental").await;
    assert!(m.delta_tokens_issued() > rounds, "a new round was run");
    let mut third = second.clone();
    third.retain(|(start, _)| !start.starts_with("2030-05-28"));
    assert_eq!(gw.busy("outlook").await, third);
    assert_eq!(gw.dav_objects_checked("outlook").await, 2);

    // Microsoft rotates refresh tokens: the new one must be kept (the old one is
    // made invalid here), over two expiries in a row.
    m.oauth().set_invalidate_rotated(true);
    for day in [29, 30] {
        m.oauth().expire_access_tokens();
        m.put_event(cal, graph_event("Late", day, "18:00", "19:00", "UTC"));
        let log = gw.sync_ok("outlook", "incremental").await;
        assert_eq!(log["created"], 1, "{log}");
    }
    assert!(m.oauth().rotations() >= 2);
}

// ---------------------------------------------------------------------------------------------
// 3. Failures

#[tokio::test(flavor = "multi_thread")]
async fn throttling_and_outages_keep_the_cache() {
    let g = google_mock().await;
    g.put_event(TEAM, google_event("dentist0001", "Dentist", 14, 10, 11));
    let s = TestServer::start_with_extra(Extra {
        server: google_extra(&g),
        salon: String::new(),
    })
    .await;
    let gw = Gw::of(&s);
    connected_google_source(&gw, "anna", TEAM).await;
    gw.sync_ok("anna", "full").await;
    let cached = vec![(
        "2030-05-14T08:00:00Z".to_owned(),
        "2030-05-14T09:00:00Z".to_owned(),
    )];
    assert_eq!(gw.busy("anna").await, cached);
    g.put_event(TEAM, google_event("new0001", "New", 15, 10, 11));

    // 429 with Retry-After: the error is shown, the next run waits at least that long.
    g.faults().push(Fault::status_retry_after(429, "120"));
    let before = Utc::now();
    let (status, problem) = gw.sync("anna", "incremental").await;
    assert_eq!(status, 502, "{problem}");
    let one = gw.source("anna").await;
    let error = one["status"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("429"), "{one}");
    let next_run: DateTime<Utc> = one["status"]["next_run"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("next_run");
    assert!(
        next_run >= before + chrono::Duration::seconds(120),
        "next run {next_run} is sooner than Retry-After"
    );
    assert_eq!(one["status"]["consecutive_failures"], 1, "{one}");
    assert_eq!(gw.busy("anna").await, cached);

    // A 500: cache kept, the log says what happened.
    g.faults().push(Fault::status(500));
    let (status, _) = gw.sync("anna", "full").await;
    assert_eq!(status, 502);
    assert_eq!(gw.busy("anna").await, cached);
    assert_eq!(gw.dav_objects_checked("anna").await, 1);
    let (_, logs) = gw.get("/sources/anna/logs").await;
    let logs = logs["logs"].as_array().expect("logs").clone();
    assert!(
        logs[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("500") && e.contains("backendError")),
        "{logs:?}"
    );
    assert_eq!(logs[0]["mode"], "full");
    assert!(logs[1]["error"].as_str().is_some_and(|e| e.contains("429")));
    let one = gw.source("anna").await;
    assert_eq!(one["status"]["consecutive_failures"], 2, "{one}");

    // The provider is back: everything caught up, the failures forgotten.
    let log = gw.sync_ok("anna", "incremental").await;
    assert_eq!(log["created"], 1, "{log}");
    let one = gw.source("anna").await;
    assert_eq!(one["status"]["consecutive_failures"], 0, "{one}");
    assert!(one["status"]["last_error"].is_null(), "{one}");
    assert_eq!(gw.busy("anna").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth_state_is_single_use_and_cannot_be_forged() {
    let g = google_mock().await;
    let s = TestServer::start_with_extra(Extra {
        server: google_extra(&g),
        salon: String::new(),
    })
    .await;
    let gw = Gw::of(&s);
    create_google_source(&gw, "anna").await;

    let (code, state, path) = gw.authorize("google", "anna").await;
    let callback = format!("{}{path}?code={code}&state={state}", gw.base);
    let first = gw.http.get(&callback).send().await.expect("callback");
    assert_eq!(first.status(), 200);
    // Replayed: the state is spent (and the code is never sent twice).
    let exchanges = g.oauth().code_exchanges();
    let replay = gw.http.get(&callback).send().await.expect("replay");
    assert_eq!(replay.status(), 400);
    assert!(
        replay
            .text()
            .await
            .unwrap_or_default()
            .contains("start the connection again")
    );
    assert_eq!(g.oauth().token_requests(), exchanges);

    // A state we never handed out, with a code the provider did issue.
    let (code, _, _) = gw.authorize("google", "anna").await;
    let forged = format!("{}{path}?code={code}&state=forged-state-0000", gw.base);
    let resp = gw.http.get(&forged).send().await.expect("forged");
    assert_eq!(resp.status(), 400);
    // A Google state presented to the Microsoft callback.
    let (code, state, _) = gw.authorize("google", "anna").await;
    let crossed = format!(
        "{}/oauth/microsoft/callback?code={code}&state={state}",
        gw.base
    );
    assert_eq!(
        gw.http
            .get(&crossed)
            .send()
            .await
            .expect("crossed")
            .status(),
        400
    );
    // Missing parameters, and a refusal on the consent page.
    let bare = format!("{}{path}", gw.base);
    assert_eq!(gw.http.get(&bare).send().await.expect("bare").status(), 400);
    let denied = format!("{}{path}?error=access_denied&state={state}", gw.base);
    assert_eq!(
        gw.http.get(&denied).send().await.expect("denied").status(),
        403
    );
    assert_eq!(
        g.oauth().code_exchanges(),
        1,
        "only the first callback exchanged"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Restart in the middle of a sync (the real binary, kill -9)

const BIN: &str = env!("CARGO_BIN_EXE_calgate");

/// Starts `calgate serve` and waits for its "listening" line; returns the base URL.
fn spawn_gateway(config: &Path) -> (Child, String) {
    spawn_gateway_with(config, &[])
}

/// [`spawn_gateway`] with more command-line arguments.
fn spawn_gateway_with(config: &Path, args: &[&str]) -> (Child, String) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_file_name("server.log"))
        .expect("log file");
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("calgate starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read listening line");
    let base = line
        .trim()
        .strip_prefix("calgate listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    (child, base)
}

/// The mock calendar's events as busy blocks (disjoint by construction).
fn mock_busy(g: &GoogleMock, calendar: &str) -> Vec<(String, String)> {
    let utc = |v: &Value| {
        DateTime::parse_from_rfc3339(v["dateTime"].as_str().unwrap_or_default())
            .map(|t| {
                t.with_timezone(&Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            })
            .unwrap_or_default()
    };
    sorted(
        g.live_events(calendar)
            .iter()
            .map(|e| (utc(&e["start"]), utc(&e["end"])))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_killed_midway_converges_after_restart() {
    let g = google_mock().await;
    let primary = g.primary_id();
    // 28 one-hour events on distinct days, listed five per page.
    for day in 1..=28u32 {
        g.put_event(
            &primary,
            google_event(&format!("evt{day:04}"), "Slot", day, 10, 11),
        );
    }
    g.set_page_size_cap(5);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("gateway.toml");
    let extra = Extra {
        server: google_extra(&g),
        salon: "[[tenant.source]]\nid = \"anna\"\nkind = \"google\"\nenabled = false\n".into(),
    };
    std::fs::write(
        &config,
        common::config_text_with(&dir.path().join("data"), "127.0.0.1:0", None, &extra),
    )
    .expect("config written");
    let (mut child, base) = spawn_gateway(&config);
    let gw = Gw {
        base,
        http: browser(),
    };
    gw.connect("google", "anna").await;
    gw.sync_ok("anna", "full").await;
    assert_eq!(gw.busy("anna").await, mock_busy(&g, &primary));

    // Many changes, served slowly; the gateway dies while it is paging through them.
    for day in 1..=8u32 {
        g.cancel_event(&primary, &format!("evt{day:04}"));
    }
    for day in 9..=14u32 {
        g.patch_event(
            &primary,
            &format!("evt{day:04}"),
            json!({"start": {"dateTime": format!("2030-05-{day:02}T14:00:00+02:00")},
                   "end": {"dateTime": format!("2030-05-{day:02}T15:30:00+02:00")}}),
        );
    }
    for day in 1..=8u32 {
        g.put_event(
            &primary,
            google_event(&format!("new{day:04}"), "New", day, 16, 17),
        );
    }
    g.set_latency(Duration::from_millis(150));
    g.clear_requests();
    let pending = {
        let (http, url) = (
            gw.http.clone(),
            format!("{}/api/v1/tenants/salon/sources/anna/sync", gw.base),
        );
        tokio::spawn(async move { http.post(url).bearer_auth(SALON_KEY).send().await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while g.api_requests().len() < 2 {
        assert!(Instant::now() < deadline, "the sync never started paging");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("SIGKILL delivered");
    child.wait().expect("reaped");
    assert!(
        pending.await.expect("task").is_err(),
        "the killed sync cannot have answered"
    );

    g.set_latency(Duration::ZERO);
    let (mut child, base) = spawn_gateway(&config);
    let gw = Gw {
        base,
        http: browser(),
    };
    gw.sync_ok("anna", "incremental").await;
    let expected = mock_busy(&g, &primary);
    assert_eq!(expected.len(), 28);
    assert_eq!(gw.busy("anna").await, expected);
    assert_eq!(gw.dav_objects_checked("anna").await, 28);
    // And again from scratch: nothing left over, nothing doubled.
    gw.sync_ok("anna", "full").await;
    assert_eq!(gw.busy("anna").await, expected);
    assert_eq!(gw.dav_objects_checked("anna").await, 28);

    // Killed while writing: every page is in, the first objects are written (not
    // yet flushed, the cursor not yet stored) when the process dies.
    for day in 1..=28u32 {
        let id = if day <= 8 {
            format!("new{day:04}")
        } else {
            format!("evt{day:04}")
        };
        g.cancel_event(&primary, &id);
        for hour in [8, 12, 18] {
            g.put_event(
                &primary,
                google_event(&format!("x{day:02}h{hour:02}"), "Busy", day, hour, hour + 1),
            );
        }
    }
    let before = gw.source("anna").await["events"].clone();
    let pending = {
        let (http, url) = (
            gw.http.clone(),
            format!("{}/api/v1/tenants/salon/sources/anna/sync", gw.base),
        );
        tokio::spawn(async move { http.post(url).bearer_auth(SALON_KEY).send().await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.source("anna").await["events"] == before && !pending.is_finished() {
        assert!(Instant::now() < deadline, "the sync never started writing");
    }
    child.kill().expect("SIGKILL delivered");
    child.wait().expect("reaped");
    let _ = pending.await;
    let (mut child, base) = spawn_gateway(&config);
    let gw = Gw {
        base,
        http: browser(),
    };
    gw.sync_ok("anna", "incremental").await;
    let expected = mock_busy(&g, &primary);
    assert_eq!(expected.len(), 3 * 28);
    assert_eq!(gw.busy("anna").await, expected);
    assert_eq!(gw.dav_objects_checked("anna").await, 3 * 28);
    child.kill().expect("stopped");
    child.wait().expect("reaped");
}

// ---------------------------------------------------------------------------------------------
// 5. Conflicts with bookings

/// A webhook receiver that accepts everything and hands bodies to the test.
async fn receiver() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) {
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let signature = req
                            .headers()
                            .get("x-calgate-signature")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let _ = tx.send((signature, String::from_utf8_lossy(&body).into_owned()));
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, rx)
}

fn signed(signature: &str, body: &str) -> bool {
    use hmac::{Hmac, KeyInit, Mac};
    let Some((t, v1)) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let Ok(mut mac) = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(WEBHOOK_SECRET.as_bytes())
    else {
        return false;
    };
    mac.update(format!("{t}.{body}").as_bytes());
    hex::decode(v1).is_ok_and(|sig| mac.verify_slice(&sig).is_ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_imported_event_on_a_booking_is_a_conflict_and_is_webhooked() {
    let (hook, mut hooks) = receiver().await;
    let g = google_mock().await;
    let s = TestServer::start_with_extra(Extra {
        server: google_extra(&g),
        salon: format!("[tenant.webhook]\nurl = \"{hook}\"\nsecret = \"{WEBHOOK_SECRET}\"\n"),
    })
    .await;
    let gw = Gw::of(&s);
    connected_google_source(&gw, "anna", TEAM).await;
    gw.sync_ok("anna", "full").await;

    let (status, booking, _) = s
        .create(&json!({
            "start": "2030-05-14T10:30:00+02:00",
            "end": "2030-05-14T11:30:00+02:00",
            "title": "Colour",
        }))
        .await;
    assert_eq!(status, 201, "{booking}");
    let booking_id = booking["id"].as_str().expect("id").to_owned();

    // The dentist lands in Google afterwards, half an hour into the booking.
    g.put_event(TEAM, google_event("dentist0001", "Dentist", 14, 10, 11));
    gw.sync_ok("anna", "incremental").await;
    let (status, body) = gw.get("/conflicts?status=open").await;
    assert_eq!(status, 200, "{body}");
    let open = body["conflicts"].as_array().expect("conflicts").clone();
    assert_eq!(open.len(), 1, "{body}");
    assert_eq!(open[0]["booking_id"], booking_id.as_str());
    assert_eq!(open[0]["source"], "anna");
    assert_eq!(open[0]["start"], "2030-05-14T08:30:00Z");
    assert_eq!(open[0]["end"], "2030-05-14T09:00:00Z");

    let (signature, delivered) = tokio::time::timeout(Duration::from_secs(5), hooks.recv())
        .await
        .expect("a webhook within 5 s")
        .expect("receiver open");
    assert!(delivered.contains(&booking_id), "{delivered}");
    assert!(signed(&signature, &delivered), "bad signature {signature}");

    // It goes away in Google: the conflict resolves at the next sync.
    g.cancel_event(TEAM, "dentist0001");
    gw.sync_ok("anna", "incremental").await;
    let (_, body) = gw.get("/conflicts?status=open").await;
    assert_eq!(
        body["conflicts"].as_array().map(Vec::len),
        Some(0),
        "{body}"
    );
}

/// Without `public_url`, the OAuth redirect URI names the address the gateway
/// really listens on (`--listen`, here with a free port), not the file's.
#[tokio::test(flavor = "multi_thread")]
async fn without_public_url_the_redirect_uri_is_the_bound_address() {
    let g = GoogleMock::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("gateway.toml");
    let provider = format!(
        "[providers.google]\nclient_id = \"{GOOGLE_CLIENT_ID}\"\nclient_secret = \"{GOOGLE_CLIENT_SECRET}\"\nauth_url = \"{}\"\ntoken_url = \"{}\"\napi_base = \"{}\"\n",
        g.authorize_url(),
        g.token_url(),
        g.base_url()
    );
    let text = common::config_text_with(
        &dir.path().join("data"),
        "127.0.0.1:9",
        None,
        &Extra {
            server: provider,
            salon: String::new(),
        },
    );
    std::fs::write(&config, text).expect("config written");
    let (mut child, base) = spawn_gateway_with(&config, &["--listen", "127.0.0.1:0"]);
    let http = browser();
    let created = http
        .post(format!("{base}/api/v1/tenants/salon/sources"))
        .bearer_auth(SALON_KEY)
        .json(&json!({"id": "anna", "kind": "google", "enabled": false}))
        .send()
        .await
        .expect("source created");
    let created_status = created.status();
    let start = http
        .get(format!(
            "{base}/oauth/google/start?tenant=salon&source=anna"
        ))
        .bearer_auth(SALON_KEY)
        .send()
        .await
        .expect("start");
    let start_status = start.status();
    let redirect = reqwest::Url::parse(&location(&start))
        .expect("provider URL")
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned());
    child.kill().expect("stop");
    child.wait().expect("reaped");
    assert_eq!((created_status.as_u16(), start_status.as_u16()), (201, 302));
    assert_eq!(
        redirect.as_deref(),
        Some(format!("{base}/oauth/google/callback").as_str())
    );
}
