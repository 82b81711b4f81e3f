//! The sync engine against the mock iCal feed host: runs import a feed into the
//! source's calendar (and the busy index), an unchanged feed changes nothing, a
//! failing feed keeps the last good cache and says why in the status, and the
//! imported items are reported through [`ImportObserver`] only (a recording
//! double stands in for the exporter).

mod common;

use std::sync::{Arc, Mutex};

use calgate_engine::freebusy;
use calgate_engine::model::{Direction, ProviderKind, RemoteSource, Source, Span};
use calgate_engine::providers::FetchMode;
use calgate_engine::settings::TenantConfig;
use calgate_engine::store::StoreError;
use calgate_engine::sync::{BoxFuture, ImportObserver, Recognised, SyncEngine, SyncError};
use calgate_test_mocks::Fault;
use calgate_test_mocks::ics::IcsMock;
use common::{Engines, at, calendar, span, tenant, vevent};
use serde_json::Value;

const FEED: &str = "/team.ics";
const SOURCE: &str = "team";

/// What the engine told the observer.
#[derive(Default)]
struct Recorder {
    /// Per `recognise` call: tenant, source, and the UIDs in the items.
    recognised: Mutex<Vec<(String, String, Vec<String>)>>,
    /// Per `observe_import` call: source, series, booking.
    observed: Mutex<Vec<(String, String, String)>>,
    /// Series with this UID are "our exported event" of this booking.
    ours: Option<(String, String)>,
}

fn uid_of(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("UID:"))
        .map(|u| u.trim().to_owned())
}

impl Recorder {
    /// The UIDs recognised so far, sorted, from call `from` on.
    fn uids_since(&self, from: usize) -> Vec<String> {
        let calls = self.recognised.lock().unwrap();
        let mut uids: Vec<String> = calls[from..]
            .iter()
            .flat_map(|(_, _, uids)| uids.clone())
            .collect();
        uids.sort();
        uids
    }

    fn calls(&self) -> usize {
        self.recognised.lock().unwrap().len()
    }
}

impl ImportObserver for Recorder {
    fn recognise(
        &self,
        tenant: &str,
        source: &Source,
        items: &mut [Value],
    ) -> Result<Recognised, StoreError> {
        let uids: Vec<String> = items
            .iter()
            .filter_map(Value::as_str)
            .filter_map(uid_of)
            .collect();
        let booking = self
            .ours
            .as_ref()
            .filter(|(uid, _)| uids.contains(uid))
            .map(|(_, booking)| booking.clone());
        self.recognised
            .lock()
            .unwrap()
            .push((tenant.to_owned(), source.id.clone(), uids));
        Ok(Recognised {
            booking,
            strays: Vec::new(),
        })
    }

    fn remove_strays<'a>(
        &'a self,
        _tenant: &'a TenantConfig,
        _source: &'a Source,
        strays: &'a [(String, String)],
    ) -> BoxFuture<'a, ()> {
        panic!("no strays were reported, yet {strays:?} are to be removed");
    }

    fn observe_import<'a>(
        &'a self,
        _tenant: &'a TenantConfig,
        source: &'a str,
        series: &'a str,
        booking: &'a str,
    ) -> BoxFuture<'a, Result<(), Box<dyn std::error::Error + Send + Sync>>> {
        self.observed.lock().unwrap().push((
            source.to_owned(),
            series.to_owned(),
            booking.to_owned(),
        ));
        Box::pin(async { Ok(()) })
    }
}

/// An iCal feed source of the salon importing `url`.
fn feed_source(url: &str, direction: Direction) -> Source {
    let mut source = Source::new(SOURCE, "Team");
    source.read_only = true;
    source.components = vec!["VEVENT".into()];
    source.remote = Some(RemoteSource {
        kind: ProviderKind::Ics,
        target: url.to_owned(),
        direction,
        interval_minutes: 60,
        enabled: true,
        privacy: Default::default(),
    });
    source
}

/// The mock feed host, the engines with the feed source, and a sync engine
/// reporting to a fresh recorder.
struct Fixture {
    mock: IcsMock,
    t: TenantConfig,
    e: Engines,
    recorder: Arc<Recorder>,
    sync: SyncEngine,
}

async fn fixture(direction: Direction, recorder: Recorder) -> Fixture {
    let mock = IcsMock::start().await;
    let t = tenant("salon");
    let e = Engines::start(&t);
    e.add_source(&t, feed_source(&mock.url(FEED), direction));
    let recorder = Arc::new(recorder);
    let sync = e.sync(Arc::clone(&recorder) as Arc<dyn ImportObserver>);
    Fixture {
        mock,
        t,
        e,
        recorder,
        sync,
    }
}

impl Fixture {
    fn objects(&self) -> Vec<(String, String)> {
        let mut objects: Vec<(String, String)> = self
            .e
            .store
            .objects("salon", SOURCE)
            .expect("objects")
            .into_iter()
            .map(|o| (o.id, o.etag))
            .collect();
        objects.sort();
        objects
    }

    fn busy(&self) -> Vec<Span> {
        freebusy::busy_blocks(
            &self.e.store,
            "salon",
            span(at(0, 0, 0), at(30, 0, 0)),
            None,
            false,
        )
        .expect("busy")
        .into_iter()
        .map(|b| b.span)
        .collect()
    }

    async fn run(&self) -> Result<calgate_engine::model::SyncLog, SyncError> {
        self.sync.run(&self.t, SOURCE, FetchMode::Incremental).await
    }
}

/// Two events: `a` on day 2, and `b` weekly twice from day 3.
fn first_feed() -> String {
    calendar(&[
        vevent("a", at(2, 9, 0), at(2, 10, 0), &[]),
        vevent(
            "b",
            at(3, 9, 0),
            at(3, 10, 0),
            &["RRULE:FREQ=WEEKLY;COUNT=2"],
        ),
    ])
}

fn first_busy() -> Vec<Span> {
    vec![
        span(at(2, 9, 0), at(2, 10, 0)),
        span(at(3, 9, 0), at(3, 10, 0)),
        span(at(10, 9, 0), at(10, 10, 0)),
    ]
}

#[tokio::test]
async fn a_run_imports_the_feed_and_an_unchanged_feed_changes_nothing() {
    let f = fixture(Direction::Import, Recorder::default()).await;
    f.mock.set_feed(FEED, first_feed());

    let log = f.run().await.expect("first run");
    assert_eq!(
        (log.created, log.updated, log.deleted),
        (2, 0, 0),
        "{log:?}"
    );
    assert_eq!(log.error, None);
    assert_eq!(log.mode, "incremental");
    let imported = f.objects();
    let ids: Vec<&str> = imported.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(f.busy(), first_busy());
    let status = f.e.store.sync_status("salon", SOURCE).expect("status");
    assert!(status.last_success.is_some());
    assert_eq!(status.last_error, None);
    assert_eq!(status.consecutive_failures, 0);
    assert!(status.next_run.is_some());
    assert_eq!(f.e.store.sync_logs("salon", SOURCE).expect("logs"), [log]);
    // Every imported series went past the observer, for this tenant and source.
    assert_eq!(f.recorder.uids_since(0), ["a", "b"]);
    assert!(
        f.recorder
            .recognised
            .lock()
            .unwrap()
            .iter()
            .all(|(t, s, _)| t == "salon" && s == SOURCE)
    );
    // An import-only source reports no external changes.
    assert!(f.recorder.observed.lock().unwrap().is_empty());

    // Unchanged (the host answers 304): nothing is written or reported.
    let calls = f.recorder.calls();
    let log = f.run().await.expect("second run");
    assert_eq!(
        (log.created, log.updated, log.deleted),
        (0, 0, 0),
        "{log:?}"
    );
    assert_eq!(f.mock.conditional_hits(FEED), 1);
    assert_eq!(f.objects(), imported);
    assert_eq!(f.recorder.calls(), calls);

    // New validators, same body: read again, still nothing changes.
    f.mock.touch(FEED);
    let log = f.run().await.expect("third run");
    assert_eq!(
        (log.created, log.updated, log.deleted),
        (0, 0, 0),
        "{log:?}"
    );
    assert_eq!(f.objects(), imported);
    assert_eq!(f.busy(), first_busy());
    assert_eq!(f.e.store.sync_logs("salon", SOURCE).expect("logs").len(), 3);
}

#[tokio::test]
async fn a_changed_feed_creates_updates_and_deletes() {
    let f = fixture(Direction::Import, Recorder::default()).await;
    f.mock.set_feed(FEED, first_feed());
    f.run().await.expect("first run");
    let before = f.objects();
    let calls = f.recorder.calls();

    // `a` moves, `b` goes, `c` is new.
    f.mock.set_feed(
        FEED,
        calendar(&[
            vevent("a", at(2, 14, 0), at(2, 15, 0), &[]),
            vevent("c", at(4, 9, 0), at(4, 11, 0), &[]),
        ]),
    );
    let log = f.run().await.expect("second run");
    assert_eq!(
        (log.created, log.updated, log.deleted),
        (1, 1, 1),
        "{log:?}"
    );
    let after = f.objects();
    let ids: Vec<&str> = after.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["a", "c"]);
    assert_ne!(after[0].1, before[0].1, "a's text changed");
    assert_eq!(
        f.busy(),
        [
            span(at(2, 14, 0), at(2, 15, 0)),
            span(at(4, 9, 0), at(4, 11, 0)),
        ]
    );
    // Only the series that changed were looked at again.
    assert_eq!(f.recorder.uids_since(calls), ["a", "c"]);
}

#[tokio::test]
async fn a_failing_feed_keeps_the_last_good_cache_and_records_the_error() {
    let f = fixture(Direction::Import, Recorder::default()).await;
    f.mock.set_feed(FEED, first_feed());
    f.run().await.expect("first run");
    let good = f.objects();
    let succeeded =
        f.e.store
            .sync_status("salon", SOURCE)
            .expect("status")
            .last_success;

    // The host fails.
    f.mock.faults_for(FEED).push(Fault::status(500));
    let failed = f.run().await;
    assert!(matches!(failed, Err(SyncError::Provider(_))), "{failed:?}");
    let status = f.e.store.sync_status("salon", SOURCE).expect("status");
    assert!(status.last_error.is_some());
    assert_eq!(status.consecutive_failures, 1);
    assert_eq!(status.last_success, succeeded);
    assert!(!status.permanent_error, "a server error is retried");
    assert!(status.next_run.is_some());
    let logs = f.e.store.sync_logs("salon", SOURCE).expect("logs");
    assert_eq!(logs.len(), 2);
    // Newest first.
    assert_eq!(logs[0].error, status.last_error);
    assert_eq!(logs[1].error, None);
    assert_eq!(f.objects(), good);
    assert_eq!(f.busy(), first_busy());

    // The feed comes back cut off (no END:VCALENDAR): not mistaken for a feed
    // whose events went.
    let body = first_feed();
    let cut = &body[..body.find("END:VCALENDAR").expect("end")];
    f.mock.set_feed(FEED, cut);
    assert!(f.run().await.is_err());
    let status = f.e.store.sync_status("salon", SOURCE).expect("status");
    assert_eq!(status.consecutive_failures, 2);
    assert_eq!(f.objects(), good);
    assert_eq!(f.busy(), first_busy());

    // Whole again: the error clears, and the cache was right all along.
    f.mock.set_feed(FEED, first_feed());
    let log = f.run().await.expect("recovered");
    assert_eq!(
        (log.created, log.updated, log.deleted),
        (0, 0, 0),
        "{log:?}"
    );
    let status = f.e.store.sync_status("salon", SOURCE).expect("status");
    assert_eq!(status.last_error, None);
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(f.objects(), good);
}

#[tokio::test]
async fn a_feed_address_outside_the_allow_list_is_a_permanent_error() {
    let f = fixture(Direction::Import, Recorder::default()).await;
    f.mock.set_feed(FEED, first_feed());
    // Loopback is private: without the allow-list entry it is never contacted.
    let strict =
        f.e.sync_allowing(Arc::clone(&f.recorder) as Arc<dyn ImportObserver>, &[]);
    let result = strict.run(&f.t, SOURCE, FetchMode::Incremental).await;
    assert!(matches!(result, Err(SyncError::Provider(_))), "{result:?}");
    assert_eq!(f.mock.hits(FEED), 0);
    let status = f.e.store.sync_status("salon", SOURCE).expect("status");
    assert!(status.permanent_error);
    assert_eq!(status.next_run, None, "no retry is scheduled");
    assert!(f.objects().is_empty());
}

#[tokio::test]
async fn only_importing_external_sources_are_run() {
    let f = fixture(Direction::Import, Recorder::default()).await;
    let run = |source: &'static str| f.sync.run(&f.t, source, FetchMode::Full);
    assert!(matches!(
        run("nowhere").await,
        Err(SyncError::UnknownSource(_))
    ));
    f.e.add_source(&f.t, Source::new("caldav", "CalDAV"));
    assert!(matches!(
        run("caldav").await,
        Err(SyncError::NotExternal(_))
    ));
    let mut export_only = feed_source(&f.mock.url(FEED), Direction::Export);
    export_only.id = "out".into();
    f.e.add_source(&f.t, export_only);
    assert!(matches!(run("out").await, Err(SyncError::ExportOnly(_))));
    assert_eq!(f.mock.hits(FEED), 0);
}

#[tokio::test]
async fn series_the_observer_recognises_are_reported_back_after_import() {
    let recorder = Recorder {
        ours: Some(("ours".into(), "booking-1".into())),
        ..Recorder::default()
    };
    let f = fixture(Direction::Both, recorder).await;
    f.mock.set_feed(
        FEED,
        calendar(&[
            vevent("ours", at(2, 9, 0), at(2, 10, 0), &[]),
            vevent("theirs", at(2, 11, 0), at(2, 12, 0), &[]),
        ]),
    );
    let log = f.run().await.expect("run");
    assert_eq!(log.created, 2);
    assert_eq!(
        *f.recorder.observed.lock().unwrap(),
        [(SOURCE.to_owned(), "ours".to_owned(), "booking-1".to_owned())]
    );
}

/// Polls `done` every 20 ms until it holds, for at most 20 s.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `n` feed sources of the salon, `s0`…, each importing its own feed.
fn many_sources(f: &Fixture, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let id = format!("s{i}");
            let path = format!("/feed{i}.ics");
            f.mock.set_feed(&path, first_feed());
            let mut source = feed_source(&f.mock.url(&path), Direction::Import);
            source.id = id.clone();
            f.e.add_source(&f.t, source);
            id
        })
        .collect()
}

fn last_success(f: &Fixture, source: &str) -> bool {
    f.e.store
        .sync_status("salon", source)
        .expect("status")
        .last_success
        .is_some()
}

#[tokio::test]
async fn the_scheduler_runs_every_due_source_but_no_more_at_once_than_allowed() {
    let f = fixture(Direction::Import, Recorder::default()).await;
    f.mock.set_feed(FEED, first_feed());
    let ids = many_sources(&f, 24);
    // Slow answers make the runs overlap, were they allowed to.
    f.mock.set_latency(std::time::Duration::from_millis(60));
    let recorder = Arc::new(Recorder::default());
    let sync = Arc::new(
        f.e.sync(recorder as Arc<dyn ImportObserver>)
            .with_max_concurrent_runs(3),
    );
    let scheduler = tokio::spawn(calgate_engine::sync::scheduler(Arc::clone(&sync)));
    eventually("every source synced once", || {
        ids.iter().all(|id| last_success(&f, id)) && last_success(&f, SOURCE)
    })
    .await;
    assert!(
        f.mock.max_in_flight() <= 3,
        "{} fetches at once, 3 allowed",
        f.mock.max_in_flight()
    );
    eventually("every run ended and queued again", || {
        let r = sync.report();
        r.runs_in_progress == 0 && r.sources_scheduled == 25
    })
    .await;
    let report = sync.report();
    assert_eq!(report.runs_started, 25);
    assert_eq!(report.sources_due, 0, "{report:?}");
    assert_eq!(report.runs_late_over_60s, 0);
    assert_eq!(report.max_concurrent_runs, 3);
    // Each was fetched once: the next runs are an interval away.
    assert!(
        ids.iter()
            .all(|id| f.mock.hits(&format!("/feed{}.ics", &id[1..])) == 1)
    );
    scheduler.abort();
}

#[tokio::test]
async fn a_source_added_or_removed_while_the_scheduler_sleeps_is_scheduled_or_dropped() {
    let f = fixture(Direction::Import, Recorder::default()).await;
    f.mock.set_feed(FEED, first_feed());
    let recorder = Arc::new(Recorder::default());
    let sync = Arc::new(f.e.sync(recorder as Arc<dyn ImportObserver>));
    let scheduler = tokio::spawn(calgate_engine::sync::scheduler(Arc::clone(&sync)));
    eventually("the first source synced", || last_success(&f, SOURCE)).await;
    eventually("queued for its next run", || {
        sync.report().sources_scheduled == 1
    })
    .await;

    // Added behind the scheduler's back, then announced: no rescan needed.
    let ids = many_sources(&f, 1);
    sync.source_changed("salon", &ids[0]);
    eventually("the new source synced", || last_success(&f, &ids[0])).await;
    eventually("both queued", || sync.report().sources_scheduled == 2).await;

    // Disabled: it leaves the queue.
    let mut source =
        f.e.store
            .source("salon", &ids[0])
            .expect("read")
            .expect("exists");
    if let Some(remote) = source.remote.as_mut() {
        remote.enabled = false;
    }
    f.e.store.put_source("salon", &source).expect("stored");
    sync.source_changed("salon", &ids[0]);
    assert_eq!(sync.report().sources_scheduled, 1);

    sync.tenant_removed("salon");
    assert_eq!(sync.report().sources_scheduled, 0);
    scheduler.abort();
}
