//! Export throughput (issue 6): 1,000 bookings pushed to the mock Google Calendar
//! and the mock Microsoft Graph, each answering every API call after 20 ms of
//! simulated latency.
//!
//! The gateway runs in-process with an exporting source that is not connected
//! yet; 1,000 bookings are made through the API first. The clock starts when the
//! OAuth connection is made (the exporter's trigger) and stops when the source's
//! outbox is drained; the mock then must hold exactly 1,000 marked events.
//!
//! `cargo bench --bench export`

// The test harness pieces (mock providers, OAuth connect) are shared with the tests.
#[allow(dead_code, unused, clippy::all)]
#[path = "../tests/common/mod.rs"]
mod common;
#[allow(dead_code, unused, clippy::all)]
#[path = "../tests/export_support/mod.rs"]
mod export_support;
use calgate_test_mocks as providers;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use export_support::{Gw, Provider, Setup, call, connect};
use providers::google::GoogleMock;
use providers::graph::{DEFAULT_CALENDAR_ID, GraphMock};
use reqwest::Method;
use serde_json::json;

const BOOKINGS: usize = 1_000;
const LATENCY: Duration = Duration::from_millis(20);

struct Run {
    provider: &'static str,
    concurrency: usize,
    elapsed: Duration,
    requests: usize,
    events: usize,
}

async fn load(gw: &Gw) {
    let mut tasks = tokio::task::JoinSet::new();
    let per = BOOKINGS / 10;
    for w in 0..10 {
        let (client, base) = (gw.client.clone(), gw.base.clone());
        tasks.spawn(async move {
            for i in 0..per {
                let n = (w * per + i) as i64;
                let start = chrono::DateTime::parse_from_rfc3339("2026-11-02T08:00:00+01:00")
                    .expect("time")
                    + chrono::Duration::hours(n);
                let body = json!({
                    "start": start.to_rfc3339(),
                    "end": (start + chrono::Duration::minutes(45)).to_rfc3339(),
                    "title": format!("Booking {n}"),
                    "service": "Cut",
                    "customer": {"name": "Bench", "email": "bench@example.com"},
                });
                let (status, answer) =
                    call(&client, &base, Method::POST, "/bookings", Some(&body)).await;
                assert_eq!(status, 201, "{answer}");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("loader");
    }
}

/// Connects, then waits until the outbox is empty; the time it took.
async fn export(gw: &Gw, provider: Provider) -> Duration {
    let started = Instant::now();
    connect(&gw.client, &gw.base, provider).await;
    let deadline = started + Duration::from_secs(300);
    loop {
        let state = gw
            .app()
            .store
            .export_state("salon", export_support::SOURCE)
            .expect("state");
        let pending = gw
            .app()
            .store
            .booking_changes_after("salon", state.cursor, 1)
            .expect("changes");
        if pending.is_empty() {
            return started.elapsed();
        }
        support::tick();
        assert!(Instant::now() < deadline, "export did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn google() -> Run {
    let g = GoogleMock::start().await;
    let gw = Gw::start(&Setup::google(&g)).await;
    load(&gw).await;
    g.set_latency(LATENCY);
    g.clear_requests();
    let elapsed = export(&gw, Provider::Google).await;
    Run {
        provider: "Google Calendar mock",
        concurrency: calgate::providers::google::EXPORT_CONCURRENCY,
        elapsed,
        requests: g.api_requests().len(),
        events: g.live_events(&g.primary_id()).len(),
    }
}

async fn graph() -> Run {
    let m = GraphMock::start().await;
    let gw = Gw::start(&Setup::microsoft(&m, DEFAULT_CALENDAR_ID)).await;
    load(&gw).await;
    m.set_latency(LATENCY);
    let before = m.requests().len();
    let elapsed = export(&gw, Provider::Microsoft).await;
    Run {
        provider: "Microsoft Graph mock",
        concurrency: calgate::providers::microsoft::EXPORT_CONCURRENCY,
        elapsed,
        requests: m
            .requests()
            .iter()
            .skip(before)
            .filter(|r| r.path.starts_with("/v1.0/"))
            .count(),
        events: m.live_events(DEFAULT_CALENDAR_ID).len(),
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The gateways keep their data in their own temporary directories; the
    // watchdog only gets an empty one of its own to remove.
    let scratch = tempfile::tempdir().expect("temp dir");
    support::watchdog("export", scratch.path().to_owned(), Duration::from_secs(60));
    println!(
        "calgate export bench: {BOOKINGS} bookings, {} ms simulated latency per API call",
        LATENCY.as_millis()
    );
    println!("machine: {}", support::machine());
    for run in [runtime.block_on(google()), runtime.block_on(graph())] {
        assert_eq!(
            run.events, BOOKINGS,
            "{}: every booking exported once",
            run.provider
        );
        let secs = run.elapsed.as_secs_f64();
        let serial = LATENCY.as_secs_f64() * run.requests as f64;
        println!(
            "{:<22} concurrency {:>2}: {} bookings in {:>6.2} s = {:>6.1} bookings/s; {} API requests ({:.2} per booking); one at a time would take ≥ {:.1} s",
            run.provider,
            run.concurrency,
            run.events,
            secs,
            run.events as f64 / secs,
            run.requests,
            run.requests as f64 / run.events as f64,
            serial
        );
    }
}
