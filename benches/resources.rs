//! Per-resource hot paths on a tenant that declares resources: 5 resources
//! (4 staff, one room with capacity 2), ~2,000 bookings over 13 weeks, one
//! calendar per resource with a daily stand-up. In process, against the
//! engines and a sled store in a temporary directory (`TMPDIR` picks the disk),
//! no HTTP.
//!
//! Run with `cargo bench --bench resources`. It measures, after a warm-up:
//! 1. `freebusy::resource_slots` for all 5 resources (any of them), one-week
//!    and one-month windows (30-minute slots every 15 minutes);
//! 2. `ResourceBusy::load` over one month (what per-resource free/busy,
//!    availability and the CalDAV free-busy-query start with);
//! 3. `freebusy::resource_conflicts` over one hour for one resource (the
//!    check before every booking write);
//! 4. `ConflictTracker::object_changed` for a resource's stand-up series
//!    over the 13 weeks (the after-the-fact conflict scan a calendar write
//!    runs; unchanged conflicts, so nothing is written).
//!
//! Numbers are p50 / p95 and are for comparing revisions on the same machine.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use calgate::config::Config;
use calgate::conflicts::ConflictTracker;
use calgate::freebusy::{self, ResourceBusy, ResourceMatch, SlotQuery};
use calgate::model::{
    Booking, BookingStatus, BookingTime, BusyKind, BusySpan, CalendarObject, Customer, Source, Span,
};
use calgate::store::{Precondition, SledStore, Store};
use chrono::{DateTime, Utc};
use support::{Rng, machine, ms, percentile, sorted};

const TENANT: &str = "bench";
const RESOURCES: [&str; 5] = ["anna", "ben", "carla", "dan", "room"];
const BOOKINGS: usize = 2_000;
const WEEKS: i64 = 13;
const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;
const QUERIES: usize = 300;

fn config_text(data_dir: &Path) -> String {
    let data_dir = toml::Value::String(
        data_dir
            .to_str()
            .expect("the temporary directory path is UTF-8")
            .to_owned(),
    );
    let mut text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = {data_dir}

[[tenant]]
id = "{TENANT}"
name = "Bench Salon"
timezone = "Europe/Paris"
buffer_minutes = 0
[tenant.opening_hours]
monday = ["09:00-18:00"]
tuesday = ["09:00-18:00"]
wednesday = ["09:00-18:00"]
thursday = ["09:00-18:00"]
friday = ["09:00-18:00"]
"#
    );
    for r in RESOURCES {
        let capacity = if r == "room" { 2 } else { 1 };
        text.push_str(&format!(
            "[[tenant.resource]]\nid = \"{r}\"\nname = \"{r}\"\nkind = \"staff\"\ncapacity = {capacity}\n"
        ));
    }
    text
}

fn instant(ms: i64) -> chrono::DateTime<chrono::FixedOffset> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .expect("bench instants are in range")
        .fixed_offset()
}

/// A booking as the API stores one (customer, notes, metadata), taking `resources`.
fn booking(n: usize, start: i64, minutes: i64, resources: Vec<String>) -> Booking {
    let mut metadata = serde_json::Map::new();
    metadata.insert("crm_id".into(), format!("crm-{n:06}").into());
    metadata.insert("channel".into(), "web".into());
    Booking {
        id: format!("b{n:05}"),
        uid: format!("b{n:05}@bench"),
        tenant: TENANT.into(),
        time: BookingTime::Timed {
            start: instant(start),
            end: instant(start + minutes * 60_000),
        },
        time_zone: chrono_tz::Europe::Paris,
        title: format!("Appointment {n}"),
        service: Some("Cut and colour".into()),
        customer: Some(Customer {
            name: Some(format!("Customer {n}")),
            email: Some(format!("customer{n}@example.com")),
            phone: Some("+33 1 23 45 67 89".into()),
        }),
        location: Some("Salon, 12 rue de la Paix".into()),
        notes: Some("Prefers the window seat; allergic to ammonia-based dyes.".into()),
        status: BookingStatus::Confirmed,
        metadata,
        created: Utc::now(),
        updated: Utc::now(),
        sequence: 0,
        etag: format!("\"b{n:05}-0\""),
        calendar_text: None,
        calendar_text_sequence: None,
        resources,
    }
}

/// A daily 09:00-09:15 UTC stand-up over the bench's weeks, in `resource`'s calendar.
fn standup(first_day: i64) -> CalendarObject {
    CalendarObject {
        id: "standup".into(),
        uid: Some("standup@bench".into()),
        ics: String::new(),
        etag: "\"standup\"".into(),
        updated: Utc::now(),
        recurring: true,
        diagnostics: Vec::new(),
        occurrences: (0..WEEKS * 7)
            .map(|d| BusySpan {
                span: Span::new(
                    first_day + d * DAY + 9 * HOUR,
                    first_day + d * DAY + 9 * HOUR + HOUR / 4,
                ),
                kind: BusyKind::Busy,
            })
            .collect(),
    }
}

fn p50_95(samples: Vec<Duration>) -> String {
    let s = sorted(samples);
    format!(
        "{} / {}",
        ms(percentile(&s, 50.0)),
        ms(percentile(&s, 95.0))
    )
}

fn time(n: usize, mut f: impl FnMut(usize)) -> Vec<Duration> {
    // Warm-up pass: the page cache and sled's own.
    for i in 0..n.min(20) {
        f(i);
    }
    (0..n)
        .map(|i| {
            let started = Instant::now();
            f(i);
            started.elapsed()
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::Builder::new()
        .prefix("calgate-resources-bench-")
        .tempdir()
        .expect("a temporary directory can be created");
    let config = Config::parse(&config_text(dir.path()), Path::new("bench.toml"))
        .expect("the bench configuration is valid");
    let tenant = config.tenants[0].clone();
    let store: Store = Arc::new(SledStore::open(&dir.path().join("db")).expect("store opens"));

    // Monday 00:00 UTC a week from now: the bookings fill the next 13 weeks.
    let now = Utc::now().timestamp_millis();
    let monday = {
        let days = (now / DAY + 3) % 7; // 1970-01-01 was a Thursday
        (now / DAY - days + 7) * DAY
    };
    let mut rng = Rng(0x5E50_0000_07EA);
    for n in 0..BOOKINGS {
        // Weekdays, 08:00-17:00 UTC, 30 to 90 minutes.
        let day = monday + (rng.below(WEEKS as usize * 5) as i64 / 5 * 7 + rng.between(0, 5)) * DAY;
        let start = day + 8 * HOUR + rng.between(0, 36) * HOUR / 4;
        let minutes = 30 * rng.between(1, 4);
        let resources = match rng.below(20) {
            0 => Vec::new(),
            1 => vec!["anna".to_owned(), "room".to_owned()],
            _ => vec![(*rng.pick(&RESOURCES)).to_owned()],
        };
        store
            .commit_booking(
                &booking(n, start, minutes, resources),
                &Precondition::MustNotExist,
                None,
                None,
            )
            .expect("bookings are written");
    }
    for r in RESOURCES {
        let mut source = Source::new(&format!("cal-{r}"), &format!("{r}'s calendar"));
        source.resource = Some(r.to_owned());
        store
            .put_source(TENANT, &source)
            .expect("sources are stored");
        store
            .put_object(
                TENANT,
                &source.id,
                &standup(monday),
                &Precondition::None,
                calgate::store::ObjectWrite::Change,
            )
            .await
            .expect("objects are stored");
    }
    store.flush().await.expect("the store flushes");
    eprintln!(
        "calgate resources bench: {BOOKINGS} bookings over {WEEKS} weeks, {} resources; {}",
        RESOURCES.len(),
        machine()
    );

    let resources = tenant.resources();
    let weeks: Vec<i64> = (0..QUERIES)
        .map(|_| monday + rng.between(0, WEEKS - 1) * 7 * DAY)
        .collect();
    let slots_over = |days: i64| {
        let (store, tenant, resources, weeks) = (&store, &tenant, &resources, &weeks);
        move |i: usize| {
            let q = SlotQuery {
                window: Span::new(weeks[i], weeks[i] + days * DAY),
                duration_ms: 30 * 60_000,
                step_ms: 15 * 60_000,
                not_before: 0,
                limit: 10_000,
            };
            let found = freebusy::resource_slots(store, tenant, resources, ResourceMatch::Any, &q)
                .expect("slots read the store");
            std::hint::black_box(found);
        }
    };
    let slots_week = time(QUERIES, slots_over(7));
    let slots_month = time(QUERIES / 3, slots_over(28));
    let load_month = time(QUERIES, |i| {
        let busy = ResourceBusy::load(
            &store,
            &tenant,
            Span::new(weeks[i], weeks[i] + 28 * DAY),
            None,
            None,
        )
        .expect("busy time reads the store");
        std::hint::black_box(busy.busy(&resources[0]));
    });
    let check = time(QUERIES, |i| {
        let start = weeks[i] + (i as i64 % 5) * DAY + 10 * HOUR;
        let found = freebusy::resource_conflicts(
            &store,
            &tenant,
            Span::new(start, start + HOUR),
            &["anna".to_owned()],
            None,
        )
        .expect("the check reads the store");
        std::hint::black_box(found);
    });
    let tracker = ConflictTracker::new(Arc::clone(&store));
    let object = standup(monday);
    let mut scans = Vec::new();
    for i in 0..QUERIES / 3 + 5 {
        let source = format!("cal-{}", RESOURCES[i % RESOURCES.len()]);
        let started = Instant::now();
        tracker
            .object_changed(&tenant, &source, "standup", Some(&object))
            .await
            .expect("the conflict scan runs");
        // The first pass per source records the conflicts; the rest find them unchanged.
        if i >= RESOURCES.len() {
            scans.push(started.elapsed());
        }
    }

    println!("| resources bench ({BOOKINGS} bookings, 5 resources) | p50 / p95 |");
    println!("|---|---|");
    println!(
        "| `resource_slots`, 5 resources, one week | {} |",
        p50_95(slots_week)
    );
    println!(
        "| `resource_slots`, 5 resources, four weeks | {} |",
        p50_95(slots_month)
    );
    println!(
        "| `ResourceBusy::load` + `busy`, four weeks | {} |",
        p50_95(load_month)
    );
    println!(
        "| `resource_conflicts`, one hour, one resource | {} |",
        p50_95(check)
    );
    println!(
        "| `ConflictTracker::object_changed`, 13-week daily series | {} |",
        p50_95(scans)
    );
    drop(tracker);
    drop(store);
    drop(dir);
}
