//! External calendar import benchmark (issue 5): full import of a 10,000-event iCal
//! feed and of a 10,000-event Google calendar (pages of 250), then an incremental
//! sync after 10 changes (5 modified, 3 added, 2 deleted). Target: full import
//! under 1 s and incremental under 50 ms of our own time, bounded memory.
//!
//! The gateway runs in process (`calgate::start`), with a fresh sled store in a
//! temporary directory per repetition, and syncs are triggered over HTTP
//! (`POST /api/v1/tenants/bench/sources/{id}/sync?mode=…`), so the run is exactly
//! what the scheduler does. The provider mocks of the test suite
//! (crate `calgate-test-mocks`, `crates/test-mocks`) run on their own tokio runtime, whose threads are
//! named `mock-rt`, so their CPU can be told apart from ours:
//!
//! - **wall**: the sync request, client side (≈ the log's `duration_ms`);
//! - **provider**: the same fetches made by a bare HTTP client (the ICS feed GET;
//!   the Google `events.list` pages with the same page size and sync token), i.e.
//!   mock time + loopback transfer, which our sync waits for;
//! - **own** = wall − provider;
//! - **CPU**: on-CPU time of every thread of the process except the mock's
//!   (`/proc/self/task/*/schedstat`), i.e. the gateway, sled and its commit thread;
//! - **peak RSS growth**: `VmHWM` after the sync minus `VmRSS` before it (the
//!   high-water mark is reset through `/proc/self/clear_refs` first).
//!
//! `cargo bench --bench import`; `CALGATE_BENCH_REPS` (default 5) repetitions,
//! medians reported. Tables go to stdout, progress to stderr.

use calgate_test_mocks as providers;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as TimeDelta, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Europe::Paris;
use providers::google::{GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET, GoogleMock};
use providers::ics::IcsMock;
use serde_json::{Value, json};

const EVENTS: usize = 10_000;
const PAGE: usize = 250;
const TENANT: &str = "bench";
const API_KEY: &str = "bench-import-key";
const REDIRECT: &str = "http://127.0.0.1:9/oauth/google/callback";
const FEED_PATH: &str = "/calendar.ics";

// ---- the workload ----------------------------------------------------------------------------

/// A tiny deterministic generator (the run must be reproducible).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone)]
enum When {
    Timed {
        start: NaiveDateTime,
        minutes: i64,
    },
    AllDay {
        date: NaiveDate,
        days: i64,
    },
    Weekly {
        start: NaiveDateTime,
        minutes: i64,
        count: u32,
        /// Instances (by index) cancelled.
        exdates: Vec<u32>,
        /// An instance (by index) moved two hours later.
        moved: Option<u32>,
    },
}

#[derive(Clone)]
struct Event {
    id: String,
    summary: String,
    details: Option<(String, String)>,
    when: When,
}

const TITLES: &[&str] = &[
    "Team sync",
    "Dentist",
    "Client call",
    "1:1",
    "Lunch with Sam",
    "Training",
    "Supplier visit",
    "Planning",
];

/// 10,000 events around the coming year: 89 % single timed events (business hours,
/// 30–120 min, from two months back to ten months ahead), 1 % all-day (1–3 days),
/// 10 % weekly series of 10–52 instances, a third of them with 1–2 cancelled
/// instances and a quarter with one moved instance. One in three has a location
/// and a description.
fn workload(today: NaiveDate) -> Vec<Event> {
    let mut rng = Rng(42);
    let first = today - TimeDelta::days(60);
    (0..EVENTS)
        .map(|i| {
            let day = first + TimeDelta::days(rng.below(365) as i64);
            let start = day
                .and_hms_opt(
                    8 + rng.below(9) as u32,
                    [0, 15, 30, 45][rng.below(4) as usize],
                    0,
                )
                .unwrap_or_default();
            let minutes = 30 + 15 * rng.below(7) as i64;
            let when = match i % 100 {
                0 => When::AllDay {
                    date: day,
                    days: 1 + rng.below(3) as i64,
                },
                1..=10 => When::Weekly {
                    start,
                    minutes,
                    count: 10 + rng.below(43) as u32,
                    exdates: match rng.below(3) {
                        0 => vec![2 + rng.below(5) as u32, 8],
                        _ => Vec::new(),
                    },
                    moved: (rng.below(4) == 0).then_some(1),
                },
                _ => When::Timed { start, minutes },
            };
            Event {
                id: format!("ev{i:05}"),
                summary: format!("{} #{i}", TITLES[i % TITLES.len()]),
                details: (rng.below(3) == 0).then(|| {
                    (
                        format!("Room {}, 2nd floor", rng.below(40)),
                        format!("Agenda:\n- item one\n- item two for event {i}"),
                    )
                }),
                when,
            }
        })
        .collect()
}

/// The incremental change of repetition `rep`: modify 5, add 3, delete 2 (single
/// events, spread over the calendar). Returns the ids touched.
fn mutate(events: &mut Vec<Event>, rep: usize) -> [Vec<String>; 3] {
    let singles: Vec<usize> = (0..events.len())
        .filter(|&i| matches!(events[i].when, When::Timed { .. }))
        .collect();
    let pick = |k: usize| singles[(rep * 7919 + k * 1543) % singles.len()];
    let mut modified = Vec::new();
    for k in 0..5 {
        let e = &mut events[pick(k)];
        e.summary.push_str(" (moved)");
        if let When::Timed { start, .. } = &mut e.when {
            *start += TimeDelta::hours(1);
        }
        modified.push(e.id.clone());
    }
    let deleted: Vec<String> = (5..7).map(|k| events[pick(k)].id.clone()).collect();
    events.retain(|e| !deleted.contains(&e.id));
    let mut added = Vec::new();
    for k in 0..3 {
        let day = Utc::now().date_naive() + TimeDelta::days(10 + k as i64);
        events.push(Event {
            id: format!("new{rep:02}x{k}"),
            summary: format!("Added {rep}/{k}"),
            details: None,
            when: When::Timed {
                start: day.and_hms_opt(14, 0, 0).unwrap_or_default(),
                minutes: 45,
            },
        });
        added.push(format!("new{rep:02}x{k}"));
    }
    [modified, added, deleted]
}

fn local(t: NaiveDateTime) -> String {
    t.format("%Y%m%dT%H%M%S").to_string()
}

fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    Paris
        .from_local_datetime(&t)
        .earliest()
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_default()
}

/// The feed, as Google Calendar exports it (a VTIMEZONE, TZID'd local times).
fn ics_feed(events: &[Event]) -> String {
    let mut out = String::with_capacity(events.len() * 400);
    out.push_str(
        "BEGIN:VCALENDAR\r\nPRODID:-//Google Inc//Google Calendar 70.9054//EN\r\nVERSION:2.0\r\n\
         CALSCALE:GREGORIAN\r\nMETHOD:PUBLISH\r\nX-WR-CALNAME:Bench\r\nX-WR-TIMEZONE:Europe/Paris\r\n\
         BEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\nX-LIC-LOCATION:Europe/Paris\r\n\
         BEGIN:DAYLIGHT\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nTZNAME:CEST\r\n\
         DTSTART:19700329T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nEND:DAYLIGHT\r\n\
         BEGIN:STANDARD\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nTZNAME:CET\r\n\
         DTSTART:19701025T030000\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\nEND:STANDARD\r\n\
         END:VTIMEZONE\r\n",
    );
    for e in events {
        let head = |out: &mut String| {
            let _ = write!(
                out,
                "BEGIN:VEVENT\r\nUID:{}@google.com\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:{}\r\n",
                e.id, e.summary
            );
            if let Some((location, description)) = &e.details {
                let _ = write!(
                    out,
                    "LOCATION:{}\r\nDESCRIPTION:{}\r\n",
                    location.replace(',', "\\,"),
                    description.replace('\n', "\\n")
                );
            }
        };
        match &e.when {
            When::Timed { start, minutes } => {
                head(&mut out);
                let _ = write!(
                    out,
                    "DTSTART;TZID=Europe/Paris:{}\r\nDTEND;TZID=Europe/Paris:{}\r\nEND:VEVENT\r\n",
                    local(*start),
                    local(*start + TimeDelta::minutes(*minutes))
                );
            }
            When::AllDay { date, days } => {
                head(&mut out);
                let _ = write!(
                    out,
                    "DTSTART;VALUE=DATE:{}\r\nDTEND;VALUE=DATE:{}\r\nTRANSP:TRANSPARENT\r\nEND:VEVENT\r\n",
                    date.format("%Y%m%d"),
                    (*date + TimeDelta::days(*days)).format("%Y%m%d")
                );
            }
            When::Weekly {
                start,
                minutes,
                count,
                exdates,
                moved,
            } => {
                head(&mut out);
                let end = *start + TimeDelta::minutes(*minutes);
                let _ = write!(
                    out,
                    "DTSTART;TZID=Europe/Paris:{}\r\nDTEND;TZID=Europe/Paris:{}\r\nRRULE:FREQ=WEEKLY;COUNT={count}\r\n",
                    local(*start),
                    local(end)
                );
                for x in exdates {
                    let _ = write!(
                        out,
                        "EXDATE;TZID=Europe/Paris:{}\r\n",
                        local(*start + TimeDelta::weeks(i64::from(*x)))
                    );
                }
                out.push_str("END:VEVENT\r\n");
                if let Some(m) = moved {
                    let original = *start + TimeDelta::weeks(i64::from(*m));
                    head(&mut out);
                    let _ = write!(
                        out,
                        "RECURRENCE-ID;TZID=Europe/Paris:{}\r\nDTSTART;TZID=Europe/Paris:{}\r\nDTEND;TZID=Europe/Paris:{}\r\nEND:VEVENT\r\n",
                        local(original),
                        local(original + TimeDelta::hours(2)),
                        local(original + TimeDelta::hours(2) + TimeDelta::minutes(*minutes))
                    );
                }
            }
        }
    }
    out.push_str("END:VCALENDAR\r\n");
    out
}

fn google_time(t: NaiveDateTime) -> Value {
    let zoned = Paris
        .from_local_datetime(&t)
        .earliest()
        .map(|d| d.to_rfc3339())
        .unwrap_or_default();
    json!({"dateTime": zoned, "timeZone": "Europe/Paris"})
}

/// Puts one event (and its exceptions) into the Google mock.
fn google_put(g: &GoogleMock, e: &Event) {
    let mut v = json!({"id": e.id, "summary": e.summary});
    if let Some((location, description)) = &e.details {
        v["location"] = json!(location);
        v["description"] = json!(description);
    }
    match &e.when {
        When::Timed { start, minutes } => {
            v["start"] = google_time(*start);
            v["end"] = google_time(*start + TimeDelta::minutes(*minutes));
        }
        When::AllDay { date, days } => {
            v["start"] = json!({"date": date.format("%Y-%m-%d").to_string()});
            v["end"] =
                json!({"date": (*date + TimeDelta::days(*days)).format("%Y-%m-%d").to_string()});
            v["transparency"] = json!("transparent");
        }
        When::Weekly {
            start,
            minutes,
            count,
            ..
        } => {
            v["start"] = google_time(*start);
            v["end"] = google_time(*start + TimeDelta::minutes(*minutes));
            v["recurrence"] = json!([format!("RRULE:FREQ=WEEKLY;COUNT={count}")]);
        }
    }
    g.put_event("primary", v);
    if let When::Weekly {
        start,
        minutes,
        exdates,
        moved,
        ..
    } = &e.when
    {
        let instance = |x: u32| {
            let original = *start + TimeDelta::weeks(i64::from(x));
            (
                original,
                format!("{}_{}", e.id, utc(original).format("%Y%m%dT%H%M%SZ")),
            )
        };
        for x in exdates {
            g.cancel_event("primary", &instance(*x).1);
        }
        if let Some(m) = moved {
            let (original, id) = instance(*m);
            let to = original + TimeDelta::hours(2);
            g.patch_event(
                "primary",
                &id,
                json!({"start": google_time(to), "end": google_time(to + TimeDelta::minutes(*minutes))}),
            );
        }
    }
}

// ---- measurement -----------------------------------------------------------------------------

/// On-CPU nanoseconds of this process's threads, split into (ours, mock's).
fn cpu_ns() -> (u64, u64) {
    let (mut ours, mut mock) = (0, 0);
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let path = task.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let ns: u64 = std::fs::read_to_string(path.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
                .unwrap_or(0);
            if comm.starts_with("mock-rt") {
                mock += ns;
            } else {
                ours += ns;
            }
        }
    }
    (ours, mock)
}

/// (VmRSS, VmHWM) in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn reset_peak() {
    // "5" resets VmHWM to the current RSS (Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[derive(Debug, Clone, Copy, Default)]
struct Run {
    wall_ms: f64,
    log_ms: f64,
    provider_ms: f64,
    cpu_ms: f64,
    mock_cpu_ms: f64,
    rss_growth_mib: f64,
    changes: (u64, u64, u64),
}

impl Run {
    fn own_ms(&self) -> f64 {
        (self.wall_ms - self.provider_ms).max(0.0)
    }
}

struct Bench {
    http: reqwest::Client,
    base: String,
}

impl Bench {
    async fn sync(&self, source: &str, mode: &str) -> Run {
        let url = format!(
            "{}/api/v1/tenants/{TENANT}/sources/{source}/sync?mode={mode}",
            self.base
        );
        reset_peak();
        let (rss_before, _) = memory_kib();
        let (cpu0, mock0) = cpu_ns();
        let clock = Instant::now();
        let resp = self
            .http
            .post(url)
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("sync request");
        let status = resp.status();
        let log: Value = resp.json().await.expect("sync log");
        let wall = clock.elapsed();
        let (cpu1, mock1) = cpu_ns();
        let (_, hwm) = memory_kib();
        assert!(status.is_success(), "sync of {source} failed: {log}");
        Run {
            wall_ms: wall.as_secs_f64() * 1e3,
            log_ms: log["duration_ms"].as_f64().unwrap_or(0.0),
            provider_ms: 0.0,
            cpu_ms: (cpu1 - cpu0) as f64 / 1e6,
            mock_cpu_ms: (mock1 - mock0) as f64 / 1e6,
            rss_growth_mib: hwm.saturating_sub(rss_before) as f64 / 1024.0,
            changes: (
                log["created"].as_u64().unwrap_or(0),
                log["updated"].as_u64().unwrap_or(0),
                log["deleted"].as_u64().unwrap_or(0),
            ),
        }
    }
}

/// The ICS fetch alone: one GET of the whole feed.
async fn fetch_ics(http: &reqwest::Client, url: &str) -> f64 {
    let clock = Instant::now();
    let body = http
        .get(url)
        .send()
        .await
        .expect("feed GET")
        .bytes()
        .await
        .expect("feed body");
    assert!(body.len() > 1000);
    clock.elapsed().as_secs_f64() * 1e3
}

/// The Google fetch alone: every page of events.list (from `sync_token` when
/// given); returns (ms, items, next sync token).
async fn fetch_google(
    http: &reqwest::Client,
    g: &GoogleMock,
    access: &str,
    sync_token: Option<&str>,
) -> (f64, usize, String) {
    let url = format!("{}/calendars/primary/events", g.base_url());
    let clock = Instant::now();
    let mut page: Option<String> = None;
    let mut items = 0;
    loop {
        let mut query = vec![
            ("singleEvents", "false".to_owned()),
            ("maxResults", PAGE.to_string()),
        ];
        match sync_token {
            Some(t) => query.push(("syncToken", t.to_owned())),
            None => query.push(("showDeleted", "false".to_owned())),
        }
        if let Some(p) = &page {
            query.push(("pageToken", p.clone()));
        }
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&query)
            .finish();
        let body: Value = http
            .get(format!("{url}?{query}"))
            .bearer_auth(access)
            .send()
            .await
            .expect("events.list")
            .json()
            .await
            .expect("events.list JSON");
        items += body["items"].as_array().map_or(0, Vec::len);
        match body["nextPageToken"].as_str() {
            Some(p) => page = Some(p.to_owned()),
            None => {
                let token = body["nextSyncToken"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                return (clock.elapsed().as_secs_f64() * 1e3, items, token);
            }
        }
    }
}

fn config_text(dir: &Path, ics_url: &str, g: &GoogleMock) -> String {
    let key_hash = calgate::auth::hash_secret(API_KEY).expect("argon2 hashes the bench key");
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = {data}
fetch_allow = ["127.0.0.1/32"]
public_url = "http://127.0.0.1:9"

[providers.google]
client_id = "{GOOGLE_CLIENT_ID}"
client_secret = "{GOOGLE_CLIENT_SECRET}"
auth_url = "{auth}"
token_url = "{token}"
api_base = "{api}"

[[tenant]]
id = "{TENANT}"
timezone = "Europe/Paris"
[[tenant.api_key]]
name = "bench"
key_hash = "{key_hash}"
[[tenant.source]]
id = "ics"
kind = "ics"
url = "{ics_url}"
enabled = false
[[tenant.source]]
id = "google"
kind = "google"
calendar = "primary"
enabled = false
"#,
        data = toml::Value::String(dir.display().to_string()),
        auth = g.authorize_url(),
        token = g.token_url(),
        api = g.base_url(),
    )
}

/// Connects the Google source: OAuth start, the mock's consent redirect, callback.
async fn connect_google(app: &calgate::app::App, http: &reqwest::Client) {
    let tenant = &*app.tenant(TENANT).expect("tenant");
    let source = app
        .store
        .source(TENANT, "google")
        .expect("store readable")
        .expect("source declared");
    let url = app
        .connections
        .start(tenant, &source, calgate::providers::ProviderKind::Google)
        .expect("OAuth start");
    let resp = http.get(url).send().await.expect("authorize");
    let location = resp
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("consent redirects")
        .to_owned();
    let pairs: Vec<(String, String)> = reqwest::Url::parse(&location)
        .expect("callback URL")
        .query_pairs()
        .into_owned()
        .collect();
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    app.connections
        .callback(
            calgate::providers::ProviderKind::Google,
            &get("state"),
            &get("code"),
        )
        .await
        .expect("OAuth callback");
    app.sync.wake();
    app.export.wake();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

fn main() {
    // As the server binary does.
    calgate::limit_malloc_arenas();
    calgate::install_crypto_provider();
    let reps: usize = std::env::var("CALGATE_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let mock_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("mock-rt")
        .enable_all()
        .build()
        .expect("mock runtime");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("gateway-rt")
        .enable_all()
        .build()
        .expect("gateway runtime");
    let (ics, google) = mock_rt.block_on(async {
        let ics = IcsMock::start().await;
        let google = GoogleMock::start().await;
        google.set_redirect_uri(REDIRECT);
        google.set_page_size_cap(PAGE);
        (ics, google)
    });
    let results = rt.block_on(run(reps, &ics, &google));
    report(reps, &results);
    drop((ics, google));
    mock_rt.shutdown_timeout(Duration::from_secs(1));
}

/// Per repetition: [ics full, ics incremental, ics unchanged full resync,
/// google full, google incremental, google full resync].
type Results = Vec<[Run; 6]>;

async fn run(reps: usize, ics: &IcsMock, google: &GoogleMock) -> Results {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let today = Utc::now().date_naive();
    let mut events = workload(today);
    let clock = Instant::now();
    for e in &events {
        google_put(google, e);
    }
    let feed = ics_feed(&events);
    eprintln!(
        "workload: {} events ({} series), feed {:.1} MiB, Google mock filled in {:.1} s",
        events.len(),
        events
            .iter()
            .filter(|e| matches!(e.when, When::Weekly { .. }))
            .count(),
        feed.len() as f64 / 1048576.0,
        clock.elapsed().as_secs_f64()
    );
    ics.set_feed(FEED_PATH, feed);
    let (access, _) = google.oauth().issue_tokens_for_test();
    let mut results = Vec::new();
    for rep in 0..reps {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = config_text(dir.path(), &ics.url(FEED_PATH), google);
        let config = calgate::config::Config::parse(&text, Path::new("bench.toml"))
            .expect("bench config is valid");
        let running = calgate::start(config).await.expect("gateway starts");
        let bench = Bench {
            http: http.clone(),
            base: format!("http://{}", running.addr),
        };
        connect_google(&running.app, &http).await;

        let mut ics_full = bench.sync("ics", "full").await;
        ics_full.provider_ms = fetch_ics(&http, &ics.url(FEED_PATH)).await;
        let mut g_full = bench.sync("google", "full").await;
        let (ms, items, token) = fetch_google(&http, google, &access, None).await;
        g_full.provider_ms = ms;
        assert!(items >= EVENTS, "Google listed {items}");

        let [modified, added, deleted] = mutate(&mut events, rep);
        ics.set_feed(FEED_PATH, ics_feed(&events));
        for id in &modified {
            if let Some(e) = events.iter().find(|e| &e.id == id) {
                google_put(google, e);
            }
        }
        for id in &added {
            if let Some(e) = events.iter().find(|e| &e.id == id) {
                google_put(google, e);
            }
        }
        for id in &deleted {
            google.cancel_event("primary", id);
        }
        let mut ics_inc = bench.sync("ics", "incremental").await;
        ics_inc.provider_ms = fetch_ics(&http, &ics.url(FEED_PATH)).await;
        let mut g_inc = bench.sync("google", "incremental").await;
        let (ms, items, _) = fetch_google(&http, google, &access, Some(&token)).await;
        g_inc.provider_ms = ms;
        assert_eq!(items, 10, "the mock reports the 10 changes");

        // A full resync that finds nothing new (a 410 recovery, a forced refresh).
        ics.touch(FEED_PATH);
        let mut ics_resync = bench.sync("ics", "full").await;
        ics_resync.provider_ms = fetch_ics(&http, &ics.url(FEED_PATH)).await;
        let mut g_resync = bench.sync("google", "full").await;
        g_resync.provider_ms = fetch_google(&http, google, &access, None).await.0;

        for (name, r) in [
            ("ics full", &ics_full),
            ("ics incremental", &ics_inc),
            ("google full", &g_full),
            ("google incremental", &g_inc),
        ] {
            eprintln!(
                "rep {rep}: {name:<18} wall {:7.1} ms (log {:6.0}), provider {:6.1} ms, own {:7.1} ms, CPU {:7.1} ms, peak RSS +{:5.1} MiB, c/u/d {:?}",
                r.wall_ms,
                r.log_ms,
                r.provider_ms,
                r.own_ms(),
                r.cpu_ms,
                r.rss_growth_mib,
                r.changes
            );
        }
        assert_eq!(ics_inc.changes, (3, 5, 2), "ICS incremental counts");
        assert_eq!(g_inc.changes, (3, 5, 2), "Google incremental counts");
        running.stop().await.expect("clean stop");
        results.push([ics_full, ics_inc, ics_resync, g_full, g_inc, g_resync]);
    }
    results
}

fn report(reps: usize, results: &Results) {
    let col =
        |i: usize, f: fn(&Run) -> f64| -> Vec<f64> { results.iter().map(|r| f(&r[i])).collect() };
    println!(
        "\n| Run (median of {reps}) | Wall | Provider (mock + transfer) | **Own** (wall − provider) | Our CPU | Mock CPU | Peak RSS growth (max) | Target | |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let rows = [
        ("ICS full import (10,000 events)", 0, Some(1000.0)),
        (
            "ICS incremental (10 changes; whole feed re-fetched)",
            1,
            Some(50.0),
        ),
        ("ICS full resync, nothing changed", 2, None),
        (
            "Google full import (10,000 events, 40 pages)",
            3,
            Some(1000.0),
        ),
        ("Google incremental (10 changes, syncToken)", 4, Some(50.0)),
        ("Google full resync, nothing changed", 5, None),
    ];
    for (name, i, target) in rows {
        let own = median(col(i, Run::own_ms));
        let verdict = match target {
            Some(t) if own < t => format!("< {t} ms | PASS"),
            Some(t) => format!("< {t} ms | MISS"),
            None => "– | –".into(),
        };
        println!(
            "| {name} | {:.1} ms | {:.1} ms | **{:.1} ms** | {:.1} ms | {:.1} ms | +{:.1} MiB | {verdict} |",
            median(col(i, |r| r.wall_ms)),
            median(col(i, |r| r.provider_ms)),
            own,
            median(col(i, |r| r.cpu_ms)),
            median(col(i, |r| r.mock_cpu_ms)),
            max(&col(i, |r| r.rss_growth_mib)),
        );
    }
    let (rss, hwm) = memory_kib();
    println!(
        "\nProcess at the end: VmRSS {:.1} MiB, VmHWM {:.1} MiB (mocks with 10,000 events included).",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}
