//! The sync scheduler at scale (issue 15, point 6): 10,000 tenants × 5
//! resources × 2 iCal sources (20,000 sources on 15-minute intervals) against
//! the mock feed host answering after 20 ms, while booking POSTs keep coming.
//!
//! The gateway is the release binary in its own process (`serve`, sled in a
//! temporary directory, the operator key in `[admin]`); the mock feed host
//! (crate `calgate-test-mocks`) and the HTTP client run in this process. Steps:
//!
//! 1. provision the tenants and resources over the API;
//! 2. book for `BASELINE_S` seconds with no source: the baseline latency;
//! 3. create the sources (each tied to one resource) over the API;
//! 4. keep booking for `OBSERVE_MIN` minutes while the scheduler works, and
//!    read `GET /api/v1/scheduler` every 10 s.
//!
//! Reported: provisioning rates; booking POST p50/p99/max without and with the
//! sync load (and in the first two minutes, when every source is due at once);
//! the scheduler's lateness (`runs_late_over_60s`, p99, max); fetches per feed
//! (with 20 minutes observed and a 15-minute interval ±10 %, every feed should
//! have been fetched exactly twice); the gateway's CPU time and RSS; then,
//! with the sync load over, slots and CalDAV discovery latency, and a restart
//! after `kill -9` with all that data (time to listen, idle RSS, and the
//! scheduler's queue after it).
//!
//! `cargo bench --bench sync_scale`. Knobs (environment): `TENANTS` (10000),
//! `RESOURCES` (5), `SOURCES` (2), `LATENCY_MS` (20), `INTERVAL_MIN` (15),
//! `OBSERVE_MIN` (20), `BASELINE_S` (60), `BOOKINGS_PER_S` (20),
//! `CONCURRENT_SYNCS` (the gateway's default).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use calgate_test_mocks::ics::IcsMock;
use chrono::{Duration as TimeDelta, Utc};
use serde_json::{Value, json};
use support::{ms, percentile, sorted};

const OPERATOR_KEY: &str = "the-operator-key";
const CLIENTS: usize = 16;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Five one-hour events over the next weeks: inside the busy horizon, so a
/// run indexes them as it would a real feed.
fn feed() -> Vec<u8> {
    let mut out = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//feed//EN\r\n");
    let base = Utc::now().date_naive() + TimeDelta::days(1);
    for i in 0..5i64 {
        let day = base + TimeDelta::days(i * 3);
        let start = day.format("%Y%m%d");
        out.push_str(&format!(
            "BEGIN:VEVENT\r\nUID:bench-{i}@feed.test\r\nDTSTAMP:20260101T000000Z\r\n\
             DTSTART:{start}T120000Z\r\nDTEND:{start}T130000Z\r\nSUMMARY:Busy {i}\r\nEND:VEVENT\r\n"
        ));
    }
    out.push_str("END:VCALENDAR\r\n");
    out.into_bytes()
}

/// The gateway process, killed however the bench ends (a failed assertion too).
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_gateway(config: &std::path::Path, data: &std::path::Path) -> (Gateway, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_calgate"))
        .args(["serve", "--config"])
        .arg(config)
        .arg("--data")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the gateway starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("the gateway says where it listens")
            .expect("stdout readable");
        if let Some(url) = line.strip_prefix("calgate listening on ") {
            break url.trim().to_owned();
        }
    };
    // Keep draining stdout so the gateway never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Gateway(child), base)
}

/// (user+system CPU seconds, RSS MiB) of a process.
fn process_usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rfind(')')
        .map(|i| stat[i + 1..].split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (tick(11) + tick(12)) / 100.0;
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0;
    (cpu, rss)
}

/// Stops the bench, showing the first failures, if any request of a step failed.
fn expect_no_failures(step: &str, failed: &[(u16, String)]) {
    assert!(
        failed.is_empty(),
        "{step}: {} failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
}

/// Sends `requests` with [`CLIENTS`] at once, as the operator; answers the
/// elapsed time and the failures (status, body) seen.
async fn send_all(
    client: &reqwest::Client,
    requests: Vec<(reqwest::Method, String, Option<Value>)>,
) -> (Duration, Vec<(u16, String)>) {
    let started = Instant::now();
    let builders = requests
        .into_iter()
        .map(|(method, url, body)| {
            let req = client.request(method, url).bearer_auth(OPERATOR_KEY);
            match body {
                Some(body) => req.json(&body),
                None => req,
            }
        })
        .collect();
    let (_, failed) = timed(builders, CLIENTS).await;
    (started.elapsed(), failed)
}

/// Sends `requests`, `at_once` at a time; answers each success's latency and
/// the failures (status, body).
async fn timed(
    requests: Vec<reqwest::RequestBuilder>,
    at_once: usize,
) -> (Vec<Duration>, Vec<(u16, String)>) {
    let queue = Arc::new(std::sync::Mutex::new(requests));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..at_once {
        let queue = Arc::clone(&queue);
        workers.spawn(async move {
            let (mut took, mut failed) = (Vec::new(), Vec::new());
            loop {
                let next = queue.lock().expect("queue").pop();
                let Some(req) = next else {
                    return (took, failed);
                };
                let sent = Instant::now();
                match req.send().await {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.bytes().await;
                        took.push(sent.elapsed());
                    }
                    Ok(resp) => failed.push((
                        resp.status().as_u16(),
                        resp.text().await.unwrap_or_default(),
                    )),
                    Err(e) => failed.push((0, e.to_string())),
                }
            }
        });
    }
    let (mut took, mut failed) = (Vec::new(), Vec::new());
    while let Some(done) = workers.join_next().await {
        let (t, f) = done.expect("worker");
        took.extend(t);
        failed.extend(f);
    }
    (took, failed)
}

/// Books at `per_second` until `stop`, spreading bookings over tenants,
/// resources and days so none conflicts; answers (latency, seconds since
/// `t0`) per booking and the failures.
#[derive(Clone)]
struct Booker {
    client: reqwest::Client,
    base: String,
    tenants: usize,
    resources: usize,
    per_second: u64,
}

async fn book_until(
    booker: Booker,
    first: usize,
    stop: Arc<AtomicBool>,
    t0: Instant,
) -> (Vec<(Duration, f64)>, Vec<(u16, String)>) {
    let Booker {
        client,
        base,
        tenants,
        resources,
        per_second,
    } = booker;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_second.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let counter = Arc::new(AtomicUsize::new(first));
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut inflight = tokio::task::JoinSet::new();
    let first_day = Utc::now().date_naive() + TimeDelta::days(60);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let k = counter.fetch_add(1, Ordering::Relaxed);
        let tenant = k % tenants;
        let slot = k / tenants;
        let resource = slot % resources;
        let day = first_day + TimeDelta::days((slot / resources) as i64);
        let body = json!({
            "title": "Haircut",
            "start": format!("{day}T10:00:00Z"),
            "end": format!("{day}T10:30:00Z"),
            "resources": [format!("r{resource}")],
        });
        let (client, url) = (
            client.clone(),
            format!("{base}/api/v1/tenants/t{tenant}/bookings"),
        );
        let (samples, failures) = (Arc::clone(&samples), Arc::clone(&failures));
        inflight.spawn(async move {
            let sent = Instant::now();
            let outcome = client
                .post(url)
                .bearer_auth(OPERATOR_KEY)
                .json(&body)
                .send()
                .await;
            let took = sent.elapsed();
            let failure = match outcome {
                Ok(resp) if resp.status().as_u16() == 201 => {
                    samples
                        .lock()
                        .expect("samples")
                        .push((took, t0.elapsed().as_secs_f64()));
                    return;
                }
                Ok(resp) => (
                    resp.status().as_u16(),
                    resp.text().await.unwrap_or_default(),
                ),
                Err(e) => (0, e.to_string()),
            };
            failures.lock().expect("failures").push(failure);
        });
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
    let samples = std::mem::take(&mut *samples.lock().expect("samples"));
    let failures = std::mem::take(&mut *failures.lock().expect("failures"));
    (samples, failures)
}

fn latency_line(name: &str, samples: &[Duration]) -> String {
    let s = sorted(samples.to_vec());
    if s.is_empty() {
        return format!("| {name} | 0 | – | – | – |");
    }
    format!(
        "| {name} | {} | {} | {} | {} |",
        s.len(),
        ms(percentile(&s, 50.0)),
        ms(percentile(&s, 99.0)),
        ms(*s.last().unwrap_or(&Duration::ZERO)),
    )
}

#[tokio::main]
async fn main() {
    calgate::install_crypto_provider();
    let tenants = knob("TENANTS", 10_000) as usize;
    let resources = knob("RESOURCES", 5) as usize;
    let sources = knob("SOURCES", 2) as usize;
    let latency = Duration::from_millis(knob("LATENCY_MS", 20));
    let interval = knob("INTERVAL_MIN", 15);
    let observe = Duration::from_secs(knob("OBSERVE_MIN", 20) * 60);
    let baseline = Duration::from_secs(knob("BASELINE_S", 60));
    let rate = knob("BOOKINGS_PER_S", 20);
    let concurrency = std::env::var("CONCURRENT_SYNCS")
        .map(|n| format!("max_concurrent_syncs = {n}\n"))
        .unwrap_or_default();

    let dir = std::env::temp_dir().join(format!("calgate-sync-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("gateway.toml");
    let hash = calgate::auth::hash_secret(OPERATOR_KEY).expect("hash");
    std::fs::write(
        &config,
        format!(
            "[server]\nfetch_allow = [\"127.0.0.1/32\"]\n{concurrency}\n[admin]\nkey_hash = \"{hash}\"\n"
        ),
    )
    .expect("config written");

    let mock = IcsMock::start().await;
    mock.set_latency(latency);
    let body = feed();
    for t in 0..tenants {
        for s in 0..sources {
            mock.set_feed(&format!("/t{t}/s{s}.ics"), body.clone());
        }
    }
    let (gateway, base) = start_gateway(&config, &dir.join("data"));
    let pid = gateway.0.id();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    eprintln!("{}", support::machine());

    let put = reqwest::Method::PUT;
    let (took, failed) = send_all(
        &client,
        (0..tenants)
            .map(|t| {
                (
                    put.clone(),
                    format!("{base}/api/v1/tenants/t{t}"),
                    Some(json!({"name": format!("Salon {t}"), "timezone": "Europe/Paris"})),
                )
            })
            .collect(),
    )
    .await;
    expect_no_failures("tenants", &failed);
    let tenant_rate = tenants as f64 / took.as_secs_f64();
    let (took, failed) = send_all(
        &client,
        (0..tenants)
            .flat_map(|t| (0..resources).map(move |r| (t, r)))
            .map(|(t, r)| {
                (
                    put.clone(),
                    format!("{base}/api/v1/tenants/t{t}/resources/r{r}"),
                    Some(json!({"kind": "staff"})),
                )
            })
            .collect(),
    )
    .await;
    expect_no_failures("resources", &failed);
    let resource_rate = (tenants * resources) as f64 / took.as_secs_f64();
    eprintln!(
        "provisioned {tenants} tenants ({tenant_rate:.0}/s) and {} resources ({resource_rate:.0}/s)",
        tenants * resources
    );

    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let booking = Booker {
        client: client.clone(),
        base: base.clone(),
        tenants,
        resources,
        per_second: rate,
    };
    let booker = tokio::spawn(book_until(booking.clone(), 0, Arc::clone(&stop), t0));
    tokio::time::sleep(baseline).await;
    stop.store(true, Ordering::Relaxed);
    let (base_samples, base_failed) = booker.await.expect("booker");
    let booked = base_samples.len() + base_failed.len();
    let (cpu_before, rss_before) = process_usage(pid);
    eprintln!(
        "baseline: {} bookings, {} failed",
        base_samples.len(),
        base_failed.len()
    );

    // The sources, then the load: booking continues while they are created.
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let booker = tokio::spawn(book_until(booking, booked, Arc::clone(&stop), t0));
    let post = reqwest::Method::POST;
    let (took, failed) = send_all(
        &client,
        (0..tenants)
            .flat_map(|t| (0..sources).map(move |s| (t, s)))
            .map(|(t, s)| {
                (
                    post.clone(),
                    format!("{base}/api/v1/tenants/t{t}/sources"),
                    Some(json!({
                        "id": format!("s{s}"), "kind": "ics", "url": mock.url(&format!("/t{t}/s{s}.ics")),
                        "interval_minutes": interval, "resource": format!("r{}", s % resources),
                    })),
                )
            })
            .collect(),
    )
    .await;
    expect_no_failures("sources", &failed);
    let source_rate = (tenants * sources) as f64 / took.as_secs_f64();
    eprintln!("created {} sources ({source_rate:.0}/s)", tenants * sources);

    let mut report = Value::Null;
    let mut progress = Vec::new();
    while t0.elapsed() < observe {
        tokio::time::sleep(Duration::from_secs(10)).await;
        report = client
            .get(format!("{base}/api/v1/scheduler"))
            .bearer_auth(OPERATOR_KEY)
            .send()
            .await
            .expect("scheduler report")
            .json()
            .await
            .expect("JSON");
        let (cpu, rss) = process_usage(pid);
        let line = format!(
            "{:>5.0} s: scheduled {} due {} running {} started {} late>60s {} oldest wait {} ms lateness p99 {} ms max {} ms; gateway CPU {:.1} s RSS {:.0} MiB",
            t0.elapsed().as_secs_f64(),
            report["sources_scheduled"],
            report["sources_due"],
            report["runs_in_progress"],
            report["runs_started"],
            report["runs_late_over_60s"],
            report["oldest_due_wait_ms"],
            report["lateness_p99_ms"],
            report["lateness_max_ms"],
            cpu - cpu_before,
            rss
        );
        eprintln!("{line}");
        progress.push(line);
    }
    stop.store(true, Ordering::Relaxed);
    let (load_samples, load_failed) = booker.await.expect("booker");
    let (cpu_after, rss_after) = process_usage(pid);

    let mut fetches: BTreeMap<usize, usize> = BTreeMap::new();
    for t in 0..tenants {
        for s in 0..sources {
            *fetches
                .entry(mock.hits(&format!("/t{t}/s{s}.ics")))
                .or_default() += 1;
        }
    }
    // Reads on the tenants as they now are (5 resources, 2 imported calendars).
    let week = Utc::now().date_naive() + TimeDelta::days(1);
    let slots_of = |t: usize| {
        client
            .get(format!(
                "{base}/api/v1/tenants/t{t}/slots?start={week}T00:00:00Z&end={}T00:00:00Z&duration=30&resources=r0,r1,r2,r3,r4",
                week + TimeDelta::days(7)
            ))
            .bearer_auth(OPERATOR_KEY)
    };
    let (slots, slots_failed) =
        timed((0..500).map(|i| slots_of(i * tenants / 500)).collect(), 8).await;
    expect_no_failures("slots", &slots_failed);
    const USERS: usize = 20;
    let (_, failed) = send_all(
        &client,
        (0..USERS)
            .map(|i| {
                (
                    reqwest::Method::PUT,
                    format!("{base}/api/v1/tenants/t{i}/users/u{i}"),
                    Some(json!({"password": "pw", "resource": "r0"})),
                )
            })
            .collect(),
    )
    .await;
    expect_no_failures("users", &failed);
    let propfind = reqwest::Method::from_bytes(b"PROPFIND").expect("method");
    let discover = |i: usize| {
        client
            .request(propfind.clone(), format!("{base}/dav/principals/u{i}/"))
            .basic_auth(format!("u{i}"), Some("pw"))
            .header("Depth", "0")
    };
    // The first use of each password is an argon2 check; then it is memoised.
    let _ = timed((0..USERS).map(discover).collect(), 4).await;
    let (dav, dav_failed) = timed((0..10 * USERS).map(|i| discover(i % USERS)).collect(), 8).await;
    expect_no_failures("PROPFIND", &dav_failed);

    // kill -9 and start again with all that data: how fast, how big, and
    // whether the scheduler finds every source again.
    drop(gateway);
    let restarted = Instant::now();
    let (gateway, base) = start_gateway(&config, &dir.join("data"));
    let start_up = restarted.elapsed();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (_, idle_rss) = process_usage(gateway.0.id());
    let after_restart: Value = client
        .get(format!("{base}/api/v1/scheduler"))
        .bearer_auth(OPERATOR_KEY)
        .send()
        .await
        .expect("scheduler report")
        .json()
        .await
        .expect("JSON");

    let first_two: Vec<Duration> = load_samples
        .iter()
        .filter(|(_, at)| *at < 120.0)
        .map(|(d, _)| *d)
        .collect();
    let later: Vec<Duration> = load_samples
        .iter()
        .filter(|(_, at)| *at >= 120.0)
        .map(|(d, _)| *d)
        .collect();
    let base_only: Vec<Duration> = base_samples.iter().map(|(d, _)| *d).collect();
    let all_load: Vec<Duration> = load_samples.iter().map(|(d, _)| *d).collect();

    println!("## Sync scheduler at scale\n");
    println!("{}\n", support::machine());
    println!(
        "{tenants} tenants × {resources} resources × {sources} iCal sources = {} sources, every {interval} min, feed host latency {} ms, {rate} booking POSTs/s, {} min observed.\n",
        tenants * sources,
        latency.as_millis(),
        observe.as_secs() / 60
    );
    println!("| provisioning | per second |\n|---|---|");
    println!(
        "| tenants | {tenant_rate:.0} |\n| resources | {resource_rate:.0} |\n| sources | {source_rate:.0} |\n"
    );
    println!("| booking POST | n | p50 | p99 | max |\n|---|---|---|---|---|");
    println!("{}", latency_line("no sources (baseline)", &base_only));
    println!("{}", latency_line("sync load, whole window", &all_load));
    println!(
        "{}",
        latency_line("sync load, first 2 min (every source due)", &first_two)
    );
    println!("{}", latency_line("sync load, after 2 min", &later));
    println!(
        "\nbooking failures: baseline {}, under load {} {:?}\n",
        base_failed.len(),
        load_failed.len(),
        &load_failed[..load_failed.len().min(3)]
    );
    println!("| read, under no load | n | p50 | p99 | max |\n|---|---|---|---|---|");
    println!(
        "{}",
        latency_line("slots, 5 resources, 2 imported calendars, 1 week", &slots)
    );
    println!(
        "{}",
        latency_line("CalDAV PROPFIND of a principal (Depth 0)", &dav)
    );
    println!(
        "\nrestart after kill -9 with all the data: listening after {} ms; RSS after 10 s idle {idle_rss:.0} MiB; scheduler then: {after_restart}\n",
        start_up.as_millis()
    );
    println!("scheduler report at the end: {report}\n");
    println!("fetches per feed (count: feeds): {fetches:?}\n");
    println!(
        "gateway: CPU {:.1} s over the observed window ({:.1} % of one core); RSS {:.0} MiB before the sources, {:.0} MiB at the end\n",
        cpu_after - cpu_before,
        100.0 * (cpu_after - cpu_before) / observe.as_secs_f64(),
        rss_before,
        rss_after
    );
    println!("progress:\n```\n{}\n```", progress.join("\n"));

    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}
