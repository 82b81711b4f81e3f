//! Gateway core benchmark (issue 2): the booking API, range queries and .ics feeds
//! of one tenant holding a year of bookings, measured end to end over HTTP against
//! an in-process server.
//!
//! Run with `cargo bench --bench gateway`. The workload:
//! 1. a fresh sled store in a temporary directory (`TMPDIR` picks the disk);
//! 2. 10,000 bookings created with `POST /api/v1/tenants/bench/bookings`, 32 in
//!    flight by default, `CALGATE_BENCH_CONCURRENCY=N` to change it (the server
//!    flushes sled before answering each create);
//! 3. 500 one-week `GET .../bookings?start=&end=` queries, sequential, after a
//!    warm-up pass over the same weeks;
//! 4. the full .ics feed: first (uncached) GET, cached GETs, conditional GETs (304),
//!    and in-process `feeds::render` of all bookings;
//! 5. a short sequential create probe (one request in flight) to show what a single
//!    durable write costs.
//!
//! Client and server share one tokio runtime (and the machine's cores), so numbers
//! include the client's own work; they are meant for comparing revisions on the
//! same machine, not as absolute capacity figures. A watchdog thread fails the run
//! (exit status 2) if no request completes for 30 s, rather than hanging forever on
//! a wedged server.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use calgate::config::Config;
use calgate::model::Span;
use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Weekday};
use chrono_tz::Europe::Paris;
use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};
use support::{Rng, cpu_time, machine, ms, percentile, sorted};
use tokio::task::JoinSet;

const TENANT: &str = "bench";
const API_KEY: &str = "bench-api-key-5f1c9e27";
const FEED_TOKEN: &str = "bench-feed-token-8a3d41b6";
/// The year the bookings are spread over.
const YEAR: i32 = 2026;
const BOOKINGS: usize = 10_000;
/// Creates in flight during the load (override with `CALGATE_BENCH_CONCURRENCY`).
const CONCURRENCY: usize = 32;
/// A run that completes no request for this long is declared stalled.
const STALL_AFTER: Duration = Duration::from_secs(30);
/// Staff members working in parallel, each with their own back-to-back schedule.
const STAFF: usize = 5;
/// Business hours, minutes after local midnight.
const OPEN: u32 = 9 * 60;
const CLOSE: u32 = 18 * 60;
const WEEK_QUERIES: usize = 500;
const YEAR_QUERIES: usize = 3;
const FEED_CACHED_GETS: usize = 20;
const FEED_CONDITIONAL_GETS: usize = 200;
const RENDERS: usize = 10;
const SEQUENTIAL_CREATES: usize = 200;

const SERVICES: &[&str] = &[
    "Haircut",
    "Colour",
    "Beard trim",
    "Blow-dry",
    "Highlights",
    "Consultation",
];
const STAFF_NAMES: &[&str] = &["Ana", "Bruno", "Chloé", "Dimitri", "Elif"];
const NOTES: &[&str] = &[
    "First visit; allergic to ammonia-based products.",
    "Prefers the window seat.",
    "Will bring a reference photo.",
    "Running late possible, call ahead.",
];

/// `minutes` after midnight on `date`, Paris time.
fn paris(date: NaiveDate, minutes: u32) -> DateTime<FixedOffset> {
    let local = date
        .and_hms_opt(minutes / 60, minutes % 60, 0)
        .expect("minutes stay within the day");
    Paris
        .from_local_datetime(&local)
        .single()
        .expect("business hours and midnight never fall in a Paris DST transition")
        .fixed_offset()
}

fn days_of_year() -> Vec<NaiveDate> {
    let first = NaiveDate::from_ymd_opt(YEAR, 1, 1).expect("valid year");
    first.iter_days().take_while(|d| d.year() == YEAR).collect()
}

/// A salon's year: on every weekday each staff member works 09:00-18:00 in 30-90
/// minute appointments with occasional gaps (~40 bookings a day); 10,000 of those
/// slots, in random order, become the request bodies.
fn workload(rng: &mut Rng) -> Vec<String> {
    let mut slots = Vec::new();
    for date in days_of_year()
        .into_iter()
        .filter(|d| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun))
    {
        for staff in 0..STAFF {
            let mut cursor = OPEN;
            loop {
                cursor += *rng.pick(&[0, 0, 0, 15, 30]);
                let length = *rng.pick(&[30, 45, 60, 60, 90]);
                if cursor + length > CLOSE {
                    break;
                }
                slots.push((date, cursor, length, staff));
                cursor += length;
            }
        }
    }
    assert!(
        slots.len() >= BOOKINGS,
        "the schedule yields only {} slots; need {BOOKINGS}",
        slots.len()
    );
    // Fisher-Yates, then keep the first BOOKINGS: random arrival order, whole year.
    for i in (1..slots.len()).rev() {
        let j = rng.below(i + 1);
        slots.swap(i, j);
    }
    slots.truncate(BOOKINGS);
    slots
        .into_iter()
        .enumerate()
        .map(|(n, (date, start, length, staff))| booking_body(rng, n, date, start, length, staff))
        .collect()
}

fn booking_body(
    rng: &mut Rng,
    n: usize,
    date: NaiveDate,
    start: u32,
    length: u32,
    staff: usize,
) -> String {
    let service = *rng.pick(SERVICES);
    let notes = if rng.below(4) == 0 {
        Value::from(*rng.pick(NOTES))
    } else {
        Value::Null
    };
    json!({
        "start": paris(date, start).to_rfc3339(),
        "end": paris(date, start + length).to_rfc3339(),
        "title": format!("{service} with {}", STAFF_NAMES[staff]),
        "service": service,
        "customer": {
            "name": format!("Customer {n:05}"),
            "email": format!("customer{n:05}@example.com"),
            "phone": format!("+33 6 12 {:02} {:02} {:02}", n / 10_000, (n / 100) % 100, n % 100),
        },
        "location": format!("Chair {}", staff + 1),
        "notes": notes,
        // Five staff work in parallel; conflicts are per tenant, so the bench books
        // concurrent chairs knowingly.
        "allow_conflict": true,
    })
    .to_string()
}

fn config_text(data_dir: &Path) -> String {
    let hash = |secret: &str| {
        let phc = calgate::auth::hash_secret(secret).expect("argon2 hashes the bench secrets");
        toml::Value::String(phc).to_string()
    };
    let data_dir = toml::Value::String(
        data_dir
            .to_str()
            .expect("the temporary directory path is UTF-8")
            .to_owned(),
    );
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = {data_dir}

[[tenant]]
id = "{TENANT}"
name = "Bench Salon"
timezone = "Europe/Paris"

[[tenant.api_key]]
name = "bench"
key_hash = {key_hash}

[[tenant.feed]]
name = "all"
token_hash = {token_hash}
privacy = "full"
"#,
        key_hash = hash(API_KEY),
        token_hash = hash(FEED_TOKEN),
    )
}

/// `+` in an offset must not reach the server as a space.
fn query_time(t: DateTime<FixedOffset>) -> String {
    t.to_rfc3339().replace('+', "%2B")
}

struct Gateway {
    client: Client,
    base: String,
}

impl Gateway {
    fn bookings_url(&self) -> String {
        format!("{}/api/v1/tenants/{TENANT}/bookings", self.base)
    }

    fn feed_url(&self) -> String {
        format!("{}/feeds/{TENANT}/{FEED_TOKEN}.ics", self.base)
    }

    /// One create; returns its latency (request sent to full response read).
    async fn create(&self, body: String) -> Duration {
        let started = Instant::now();
        let resp = self
            .client
            .post(self.bookings_url())
            .bearer_auth(API_KEY)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .expect("create request reaches the server");
        let status = resp.status();
        let text = resp.text().await.expect("create response body is readable");
        let elapsed = started.elapsed();
        support::tick();
        assert_eq!(status, StatusCode::CREATED, "create failed: {text}");
        elapsed
    }

    /// Lists a window; returns the latency and the raw JSON body.
    async fn list(
        &self,
        start: DateTime<FixedOffset>,
        end: DateTime<FixedOffset>,
    ) -> (Duration, bytes::Bytes) {
        let url = format!(
            "{}?start={}&end={}",
            self.bookings_url(),
            query_time(start),
            query_time(end)
        );
        let started = Instant::now();
        let resp = self
            .client
            .get(url)
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("list request reaches the server");
        let status = resp.status();
        let body = resp.bytes().await.expect("list response body is readable");
        let elapsed = started.elapsed();
        support::tick();
        assert_eq!(
            status,
            StatusCode::OK,
            "list failed: {}",
            String::from_utf8_lossy(&body)
        );
        (elapsed, body)
    }

    /// Fetches the feed (optionally conditionally); returns latency, status, ETag, body.
    async fn feed(
        &self,
        if_none_match: Option<&str>,
    ) -> (Duration, StatusCode, String, bytes::Bytes) {
        let mut req = self.client.get(self.feed_url());
        if let Some(etag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, etag);
        }
        let started = Instant::now();
        let resp = req.send().await.expect("feed request reaches the server");
        let status = resp.status();
        let etag = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .expect("feed responses carry an ETag")
            .to_owned();
        let body = resp.bytes().await.expect("feed body is readable");
        let elapsed = started.elapsed();
        support::tick();
        (elapsed, status, etag, body)
    }
}

fn count_bookings(body: &[u8]) -> usize {
    let value: Value = serde_json::from_slice(body).expect("list responses are JSON");
    value["bookings"]
        .as_array()
        .expect("list responses have a bookings array")
        .len()
}

/// Creates `bodies` with `concurrency` requests in flight; returns per-request
/// latencies and the wall time of the whole batch.
async fn load(
    gw: &Arc<Gateway>,
    bodies: Vec<String>,
    concurrency: usize,
) -> (Vec<Duration>, Duration) {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (gw, bodies, next) = (Arc::clone(gw), Arc::clone(&bodies), Arc::clone(&next));
        workers.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                latencies.push(gw.create(body.clone()).await);
                if (i + 1) % 2000 == 0 {
                    eprintln!("  {} created", i + 1);
                }
            }
            latencies
        });
    }
    let mut latencies = Vec::with_capacity(bodies.len());
    while let Some(done) = workers.join_next().await {
        latencies.extend(done.expect("a create worker panicked"));
    }
    (latencies, started.elapsed())
}

#[tokio::main]
async fn main() {
    let total = Instant::now();
    let concurrency: usize = match std::env::var("CALGATE_BENCH_CONCURRENCY") {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .expect("CALGATE_BENCH_CONCURRENCY is a positive number"),
        Err(_) => CONCURRENCY,
    };
    let dir = tempfile::Builder::new()
        .prefix("calgate-bench-")
        .tempdir()
        .expect("a temporary directory can be created");
    support::watchdog("gateway", dir.path().to_owned(), STALL_AFTER);
    let config = Config::parse(&config_text(dir.path()), Path::new("bench.toml"))
        .expect("the bench configuration is valid");
    let running = calgate::start(config)
        .await
        .expect("the gateway starts on an ephemeral port");
    let gw = Arc::new(Gateway {
        client: Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(concurrency)
            .build()
            .expect("the HTTP client builds"),
        base: format!("http://{}", running.addr),
    });
    let mut rng = Rng(0xCA16_A7E0_2026);
    let bodies = workload(&mut rng);
    eprintln!(
        "calgate bench: server on {}, data in {}",
        running.addr,
        dir.path().display()
    );

    // Warm the argon2 verification caches (key and token are verified once, then
    // remembered) so no measured request pays for them.
    let year_start = paris(NaiveDate::from_ymd_opt(YEAR, 1, 1).expect("valid date"), 0);
    let year_end = paris(
        NaiveDate::from_ymd_opt(YEAR + 1, 1, 1).expect("valid date"),
        0,
    );
    let (_, empty) = gw.list(year_start, year_end).await;
    assert_eq!(count_bookings(&empty), 0, "the store starts empty");
    let (_, status, _, _) = gw.feed(None).await;
    assert_eq!(status, StatusCode::OK, "the bench feed is served");

    // 1. Load.
    eprintln!("creating {BOOKINGS} bookings, {concurrency} in flight...");
    let cpu_before = cpu_time();
    let (create, create_wall) = load(&gw, bodies, concurrency).await;
    let create_cpu = cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let create = sorted(create);
    let create_rate = BOOKINGS as f64 / create_wall.as_secs_f64();

    // 2. Whole-year listing: also checks every booking landed.
    let mut year = Vec::new();
    for _ in 0..YEAR_QUERIES {
        let (elapsed, body) = gw.list(year_start, year_end).await;
        assert_eq!(count_bookings(&body), BOOKINGS, "all bookings are listed");
        year.push(elapsed);
    }
    let year = sorted(year);

    // 3. One-week range queries.
    eprintln!("{WEEK_QUERIES} one-week range queries...");
    let days = days_of_year();
    let weeks: Vec<(DateTime<FixedOffset>, DateTime<FixedOffset>)> = (0..WEEK_QUERIES)
        .map(|_| {
            let first = days[rng.below(days.len() - 7)];
            (paris(first, 0), paris(first + chrono::Days::new(7), 0))
        })
        .collect();
    for &(start, end) in &weeks {
        gw.list(start, end).await;
    }
    let mut week = Vec::with_capacity(WEEK_QUERIES);
    let (mut returned, mut week_bytes) = (0usize, 0usize);
    for &(start, end) in &weeks {
        let (elapsed, body) = gw.list(start, end).await;
        week.push(elapsed);
        returned += count_bookings(&body);
        week_bytes += body.len();
    }
    let week = sorted(week);
    let avg_returned = returned as f64 / WEEK_QUERIES as f64;
    let avg_week_kib = week_bytes as f64 / WEEK_QUERIES as f64 / 1024.0;

    // 4. The feed over HTTP.
    eprintln!("feed...");
    let (feed_first, status, etag, feed_body) = gw.feed(None).await;
    assert_eq!(status, StatusCode::OK, "the feed renders");
    let feed_bytes = feed_body.len();
    let events = feed_body
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"BEGIN:VEVENT"))
        .count();
    assert_eq!(events, BOOKINGS, "the feed lists every booking");
    let mut cached = Vec::with_capacity(FEED_CACHED_GETS);
    for _ in 0..FEED_CACHED_GETS {
        let (elapsed, status, again, body) = gw.feed(None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again, etag, "nothing changed, so the ETag holds");
        assert_eq!(body.len(), feed_bytes);
        cached.push(elapsed);
    }
    let cached = sorted(cached);
    let mut conditional = Vec::with_capacity(FEED_CONDITIONAL_GETS);
    for _ in 0..FEED_CONDITIONAL_GETS {
        let (elapsed, status, _, body) = gw.feed(Some(&etag)).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "a matching ETag gets 304");
        assert!(body.is_empty());
        conditional.push(elapsed);
    }
    let conditional = sorted(conditional);

    // 5. The feed in process: store read, then rendering alone.
    let app = &running.app;
    let tenant = &app.config.tenants[0];
    let feed = &tenant.feeds[0];
    let read_started = Instant::now();
    let all = app
        .store
        .bookings_in(TENANT, Span::new(i64::MIN / 2, i64::MAX / 2))
        .expect("the store reads back");
    let store_read = read_started.elapsed();
    assert_eq!(all.len(), BOOKINGS);
    let mut renders = Vec::with_capacity(RENDERS);
    let mut rendered_bytes = 0;
    for _ in 0..RENDERS {
        let started = Instant::now();
        let text = calgate::feeds::render(tenant, feed, &all);
        renders.push(started.elapsed());
        rendered_bytes = std::hint::black_box(text).len();
    }
    let renders = sorted(renders);

    // 6. One durable write at a time.
    eprintln!("{SEQUENTIAL_CREATES} sequential creates...");
    let mut probe_rng = Rng(0x5E0_0E17);
    let probe: Vec<String> = workload(&mut probe_rng)
        .into_iter()
        .take(SEQUENTIAL_CREATES)
        .collect();
    let (sequential, sequential_wall) = load(&gw, probe, 1).await;
    let sequential = sorted(sequential);
    let sequential_rate = SEQUENTIAL_CREATES as f64 / sequential_wall.as_secs_f64();

    running.stop().await.expect("the gateway stops and flushes");
    drop(dir);

    let rows: Vec<(String, String)> = vec![
        (
            format!("Create throughput ({concurrency} in flight)"),
            format!(
                "{create_rate:.0} bookings/s ({BOOKINGS} in {:.1} s)",
                create_wall.as_secs_f64()
            ),
        ),
        (
            "Create latency p50 / p99".into(),
            format!(
                "{} / {}",
                ms(percentile(&create, 50.0)),
                ms(percentile(&create, 99.0))
            ),
        ),
        (
            "CPU during the load (client + server)".into(),
            create_cpu.map_or_else(
                || "unavailable".to_owned(),
                |cpu| {
                    format!(
                        "{:.2} of {} cores busy, {:.0} µs CPU per create",
                        cpu.as_secs_f64() / create_wall.as_secs_f64(),
                        std::thread::available_parallelism().map_or(0, |n| n.get()),
                        cpu.as_secs_f64() * 1e6 / BOOKINGS as f64
                    )
                },
            ),
        ),
        (
            format!("Create, 1 in flight ({SEQUENTIAL_CREATES} more): throughput, p50 / p99"),
            format!(
                "{sequential_rate:.0} bookings/s, {} / {}",
                ms(percentile(&sequential, 50.0)),
                ms(percentile(&sequential, 99.0))
            ),
        ),
        (
            "Week query p50 / p95 / p99".into(),
            format!(
                "{} / {} / {}",
                ms(percentile(&week, 50.0)),
                ms(percentile(&week, 95.0)),
                ms(percentile(&week, 99.0))
            ),
        ),
        (
            "Week query: bookings returned (avg)".into(),
            format!("{avg_returned:.1} ({avg_week_kib:.0} KiB JSON)"),
        ),
        (
            format!("Year query, all {BOOKINGS} bookings (median of {YEAR_QUERIES})"),
            ms(percentile(&year, 50.0)),
        ),
        (
            "Feed: first GET after load (uncached render)".into(),
            ms(feed_first),
        ),
        (
            format!("Feed: cached GET (median of {FEED_CACHED_GETS})"),
            ms(percentile(&cached, 50.0)),
        ),
        (
            format!("Feed: conditional GET, 304 (p50 of {FEED_CONDITIONAL_GETS})"),
            ms(percentile(&conditional, 50.0)),
        ),
        (
            "Feed size".into(),
            format!(
                "{feed_bytes} bytes ({:.1} MiB, {events} events)",
                feed_bytes as f64 / (1024.0 * 1024.0)
            ),
        ),
        (
            format!("In-process `store.bookings_in` (all {BOOKINGS})"),
            ms(store_read),
        ),
        (
            format!("In-process `feeds::render` (median of {RENDERS})"),
            format!(
                "{} ({rendered_bytes} bytes)",
                ms(percentile(&renders, 50.0))
            ),
        ),
    ];

    println!();
    println!("## calgate gateway bench");
    println!();
    println!("Machine: {}", machine());
    println!(
        "Workload: {BOOKINGS} bookings over the weekdays of {YEAR}, {STAFF} staff, \
         30-90 min slots 09:00-18:00 Europe/Paris; client and server in one process."
    );
    println!();
    println!("| Measurement | Result |");
    println!("|---|---|");
    for (name, value) in rows {
        println!("| {name} | {value} |");
    }
    println!();
    println!("Total bench time: {:.1} s", total.elapsed().as_secs_f64());
}
