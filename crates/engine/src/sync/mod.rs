//! The sync engine: one scheduler for every external source of every tenant.
//!
//! A run fetches a source through its provider, applies the items to the mirror,
//! re-renders the series they belong to and imports those objects into the
//! source's calendar in one batch (one disk sync), then records the cursor,
//! status and a log entry. A failed run changes nothing but the status and the
//! log: the last good cache stays. At most one run per source at a time; errors
//! back off exponentially, honouring the provider's Retry-After, except a
//! refused feed address, which no retry mends: the status says
//! `permanent_error` and the scheduler leaves the source alone until it changes.
//!
//! The [`scheduler`] keeps every scheduled source in an in-memory due-queue
//! ([`schedule`]) and runs at most [`SyncEngine::max_concurrent_runs`] at once,
//! so 20,000 sources cost a loop only the ones that are due, and a start with
//! all of them due does not open 20,000 connections at once.
//!
//! What the items mean is the providers' business ([`crate::providers`]); the
//! HTTP API over this is in the server's `api::sources`. Items that are our own
//! exported events are reported to an [`ImportObserver`] (the exporter), which
//! this engine knows only through that trait.

pub mod schedule;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore};
use tracing::{info, warn};

use crate::calendars::{CalendarError, CalendarService, Imported, PreparedImports};
use crate::connect::Connections;
use crate::model::{SkippedItem, Source, SyncLog, SyncStatus};
use crate::providers::{
    self, Cursor, FetchMode, Fetched, ItemChange, Provider, ProviderError, RenderContext,
};
use crate::settings::TenantConfig;
use crate::store::{Store, StoreError};
use crate::tenants::Tenants;

/// Longest pause after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60 * 60);
/// First pause after a failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
/// Objects imported per store transaction (and conflict check): large enough to
/// pay the per-transaction cost rarely, small enough to keep a run's memory and
/// its hold on the store's writers short.
const IMPORT_BATCH: usize = 256;
/// Scheduled runs at once, unless configured: enough to keep a 2-core node busy
/// while each run waits tens of milliseconds on its provider.
pub const DEFAULT_CONCURRENT_RUNS: usize = 32;
/// How often the scheduler re-reads every source from the store, in case a
/// change reached the store without [`SyncEngine::source_changed`].
const RESCAN_EVERY: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("source \"{0}\" does not exist")]
    UnknownSource(String),
    #[error("source \"{0}\" is a CalDAV calendar, not an external one: nothing to sync")]
    NotExternal(String),
    #[error("source \"{0}\" is already syncing; try again when the run ends")]
    AlreadyRunning(String),
    #[error("source \"{0}\" only exports; there is nothing to import")]
    ExportOnly(String),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Calendar(#[from] CalendarError),
}

/// A boxed future, for the [`ImportObserver`] trait object.
pub use crate::providers::BoxFuture;

/// What [`ImportObserver::recognise`] found in a series.
#[derive(Debug, Default)]
pub struct Recognised {
    /// The booking the series shows, when it is our exported event.
    pub booking: Option<String>,
    /// (booking, event id) of events our own inserts left besides the
    /// booking's event (see [`ImportObserver::remove_strays`]).
    pub strays: Vec<(String, String)>,
}

/// Told about the items a run imports, for sources that also export: the
/// exporter's loop prevention and external-move detection. Sync calls it and
/// knows nothing else of the exporter.
pub trait ImportObserver: Send + Sync {
    /// Marks the items of a series that are our own exported events, so they are
    /// rendered transparent; names the booking and any stray copies.
    fn recognise(
        &self,
        tenant: &str,
        source: &Source,
        items: &mut [serde_json::Value],
    ) -> Result<Recognised, StoreError>;

    /// Deletes the stray copies [`ImportObserver::recognise`] found (best effort).
    fn remove_strays<'a>(
        &'a self,
        tenant: &'a TenantConfig,
        source: &'a Source,
        strays: &'a [(String, String)],
    ) -> BoxFuture<'a, ()>;

    /// An imported series that shows `booking` was stored: notice external moves.
    fn observe_import<'a>(
        &'a self,
        tenant: &'a TenantConfig,
        source: &'a str,
        series: &'a str,
        booking: &'a str,
    ) -> BoxFuture<'a, Result<(), Box<dyn std::error::Error + Send + Sync>>>;
}

/// The sync engine: what it runs with, and the runs under way.
pub struct SyncEngine {
    running: Mutex<HashSet<(String, String)>>,
    wake: Notify,
    /// Scheduled sources by due time (an index of the stored `next_run`s).
    queue: Mutex<schedule::DueQueue>,
    /// Set by [`SyncEngine::wake`]: the scheduler re-reads every source.
    rescan: AtomicBool,
    lateness: Mutex<schedule::Lateness>,
    max_concurrent_runs: usize,
    /// Runs due before this were due while the gateway was down: their
    /// lateness counts from here.
    started: DateTime<Utc>,
    store: Store,
    calendars: CalendarService,
    connections: Arc<Connections>,
    imports: Arc<dyn ImportObserver>,
    tenants: Arc<Tenants>,
}

/// Counts of one run.
#[derive(Debug, Default, Clone)]
struct Applied {
    created: u32,
    updated: u32,
    deleted: u32,
    skipped: Vec<SkippedItem>,
    skipped_total: u32,
}

impl Applied {
    fn skip(&mut self, series: &str, reason: String) {
        self.skipped_total += 1;
        if self.skipped.len() < SyncLog::MAX_SKIPPED {
            self.skipped.push(SkippedItem {
                series: series.to_owned(),
                reason,
            });
        }
    }
}

/// Releases a source's run slot when the run ends, however it ends.
struct RunSlot<'a> {
    engine: &'a SyncEngine,
    key: (String, String),
}

impl Drop for RunSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut running) = self.engine.running.lock() {
            running.remove(&self.key);
        }
    }
}

impl SyncEngine {
    pub fn new(
        store: Store,
        calendars: CalendarService,
        connections: Arc<Connections>,
        imports: Arc<dyn ImportObserver>,
        tenants: Arc<Tenants>,
    ) -> SyncEngine {
        SyncEngine {
            running: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            queue: Mutex::default(),
            rescan: AtomicBool::new(true),
            lateness: Mutex::default(),
            max_concurrent_runs: DEFAULT_CONCURRENT_RUNS,
            started: Utc::now(),
            store,
            calendars,
            connections,
            imports,
            tenants,
        }
    }

    /// Whether a source's calendar could ever be fetched (an iCal URL's
    /// address is allowed), so a source no sync can reach is refused when it
    /// is created.
    pub async fn check_calendar(
        &self,
        remote: &crate::model::RemoteSource,
    ) -> Result<(), ProviderError> {
        self.connections
            .provider(remote.kind)?
            .check_calendar(&remote.target)
            .await
    }

    /// Waits until no run of `tenant` is under way. Called once the tenant is
    /// gone from [`Tenants`]: runs that start later see that and stop before
    /// writing, so after this nothing of the tenant is written by sync.
    pub async fn wait_for_tenant(&self, tenant: &str) {
        loop {
            let busy = {
                let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
                running.iter().any(|(t, _)| t == tenant)
            };
            if !busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs at most `n` (at least 1) scheduled syncs at once.
    pub fn with_max_concurrent_runs(mut self, n: usize) -> Self {
        self.max_concurrent_runs = n.max(1);
        self
    }

    pub fn max_concurrent_runs(&self) -> usize {
        self.max_concurrent_runs
    }

    /// Makes the scheduler re-read every source from the store. Prefer
    /// [`SyncEngine::source_changed`] when the source is known.
    pub fn wake(&self) {
        self.rescan.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// A source was added, changed, connected or deleted: (re)schedules it from
    /// what the store now says.
    pub fn source_changed(&self, tenant: &str, source: &str) {
        let key = (tenant.to_owned(), source.to_owned());
        let due = match (
            self.store.source(tenant, source),
            self.store.sync_status(tenant, source),
        ) {
            (Ok(Some(s)), Ok(status)) => due_at(&s, &status, Utc::now()),
            (Ok(None), _) => None,
            (Err(e), _) | (_, Err(e)) => {
                warn!(tenant, source, error = %e, "cannot read the source; the scheduler looks again");
                return self.wake();
            }
        };
        self.queue().set(key, due);
        self.wake.notify_one();
    }

    /// The tenant is gone: its sources leave the queue.
    pub fn tenant_removed(&self, tenant: &str) {
        self.queue().forget_tenant(tenant);
    }

    /// How the scheduler keeps up.
    pub fn report(&self) -> schedule::SchedulerReport {
        let now = Utc::now();
        let (sources_scheduled, sources_due, oldest_due_wait_ms) = {
            let queue = self.queue();
            let (all, due) = queue.counts(now);
            (all, due, queue.oldest_wait_ms(now))
        };
        let mut report = schedule::SchedulerReport {
            sources_scheduled,
            sources_due,
            runs_in_progress: self.running.lock().unwrap_or_else(|e| e.into_inner()).len(),
            max_concurrent_runs: self.max_concurrent_runs,
            oldest_due_wait_ms,
            ..Default::default()
        };
        self.lateness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fill(&mut report);
        report
    }

    /// The queue; a panic elsewhere while it was held leaves it usable.
    fn queue(&self) -> MutexGuard<'_, schedule::DueQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads every scheduled source from the store into the queue. Sources
    /// already queued keep their time (runs and changes keep it current), and
    /// running ones are left to their run, which queues them when it ends.
    fn rescan(&self) {
        let now = Utc::now();
        let mut found = HashMap::new();
        for (tenant, source) in self
            .tenants
            .sources_where(&self.store, "scheduler", scheduled)
        {
            let status = match self.store.sync_status(&tenant.id, &source.id) {
                Ok(status) => status,
                Err(e) => {
                    warn!(tenant = %tenant.id, source = %source.id, error = %e, "cannot read sync status");
                    continue;
                }
            };
            found.insert(
                (tenant.id.clone(), source.id.clone()),
                due_at(&source, &status, now),
            );
        }
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut queue = self.queue();
        for stale in queue.keys_not_in(&found) {
            queue.set(stale, None);
        }
        for (key, due) in found {
            if !running.contains(&key) && (due.is_none() || !queue.contains(&key)) {
                queue.set(key, due);
            }
        }
    }

    /// One scheduled run of a source the queue said was due at `due`.
    async fn run_due(&self, key: schedule::SourceKey, due: DateTime<Utc>) {
        let Some(tenant) = self.tenants.get(&key.0) else {
            return;
        };
        // The queue is an index; the store says whether the run is still due.
        let (source, status) = match (
            self.store.source(&key.0, &key.1),
            self.store.sync_status(&key.0, &key.1),
        ) {
            (Ok(Some(source)), Ok(status)) => (source, status),
            (Ok(None), _) => return,
            (Err(e), _) | (_, Err(e)) => {
                warn!(tenant = %key.0, source = %key.1, error = %e, "cannot read the source; retrying later");
                let retry = Utc::now() + FIRST_BACKOFF;
                self.queue().set(key, Some(retry));
                return;
            }
        };
        let now = Utc::now();
        match due_at(&source, &status, now) {
            None => return,
            Some(at) if at > now => return self.queue().set(key, Some(at)),
            Some(_) => {}
        }
        let late = (now - due.max(self.started)).num_milliseconds().max(0) as u64;
        self.lateness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(late);
        // Errors are in the status and the log already; the run queues the
        // source again, and a run already under way will when it ends.
        let _ = self.run(&tenant, &key.1, FetchMode::Incremental).await;
    }

    /// Stores new settings of an external source. With `drop_cache` (it now
    /// mirrors another calendar) its cached events, mirror and cursor go as
    /// well, so the next run imports the new calendar from scratch. Refused while
    /// the source syncs, so a run cannot write the old calendar back.
    pub async fn update_source(
        &self,
        tenant: &TenantConfig,
        source: &Source,
        drop_cache: bool,
    ) -> Result<(), SyncError> {
        let key = (tenant.id.clone(), source.id.clone());
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if !running.insert(key.clone()) {
                return Err(SyncError::AlreadyRunning(source.id.clone()));
            }
        }
        let slot = RunSlot { engine: self, key };
        if self.tenants.get(&tenant.id).is_none() {
            return Err(SyncError::UnknownSource(source.id.clone()));
        }
        let (t, s) = (tenant.id.as_str(), source.id.as_str());
        self.store.put_source(t, source)?;
        // Changed settings deserve a run even after a permanent error.
        let mut status = self.store.sync_status(t, s)?;
        if status.permanent_error {
            status.permanent_error = false;
            self.store.put_sync_status(t, s, &status)?;
        }
        if drop_cache {
            for object in self.store.objects(t, s)? {
                self.calendars
                    .remove_imported(tenant, s, &object.id)
                    .await?;
            }
            for (series, item) in self.store.mirror_keys(t, s)? {
                self.store.put_mirror_item(t, s, &series, &item, None)?;
            }
            self.store.put_feed_digests(t, s, None)?;
            let mut status = self.store.sync_status(t, s)?;
            status.cursor = Cursor::default();
            status.next_run = None;
            self.store.put_sync_status(t, s, &status)?;
        }
        self.store.flush().await?;
        drop(slot);
        self.source_changed(t, s);
        Ok(())
    }

    /// Runs one sync of a source now and returns its log entry (also stored).
    pub async fn run(
        &self,
        tenant: &TenantConfig,
        source_id: &str,
        mode: FetchMode,
    ) -> Result<SyncLog, SyncError> {
        let source = self
            .store
            .source(&tenant.id, source_id)?
            .ok_or_else(|| SyncError::UnknownSource(source_id.to_owned()))?;
        let Some(remote) = source.remote.clone() else {
            return Err(SyncError::NotExternal(source_id.to_owned()));
        };
        if !remote.direction.imports() {
            return Err(SyncError::ExportOnly(source_id.to_owned()));
        }
        let key = (tenant.id.clone(), source.id.clone());
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if !running.insert(key.clone()) {
                return Err(SyncError::AlreadyRunning(source_id.to_owned()));
            }
        }
        let _slot = RunSlot { engine: self, key };
        // A deleted tenant's run must not write its data back: checked after
        // taking the slot, which is what `wait_for_tenant` waits on.
        if self.tenants.get(&tenant.id).is_none() {
            return Err(SyncError::UnknownSource(source_id.to_owned()));
        }
        let started = Utc::now();
        let clock = std::time::Instant::now();
        let mut status = self.store.sync_status(&tenant.id, &source.id)?;
        status.last_attempt = Some(started);
        let result = self
            .fetch_and_apply(tenant, &source, &status.cursor, mode)
            .await;
        let mut log = SyncLog {
            started,
            duration_ms: clock.elapsed().as_millis() as u64,
            mode: match mode {
                FetchMode::Full => "full".into(),
                FetchMode::Incremental => "incremental".into(),
            },
            created: 0,
            updated: 0,
            deleted: 0,
            error: None,
            skipped: Vec::new(),
            skipped_total: 0,
        };
        let interval = Duration::from_secs(u64::from(remote.interval_minutes) * 60);
        let outcome = match result {
            Ok((applied, cursor)) => {
                log.created = applied.created;
                log.updated = applied.updated;
                log.deleted = applied.deleted;
                log.skipped = applied.skipped;
                log.skipped_total = applied.skipped_total;
                status.cursor = cursor;
                status.last_success = Some(Utc::now());
                status.last_error = None;
                status.consecutive_failures = 0;
                status.needs_reauth = false;
                status.permanent_error = false;
                status.next_run = Some(Utc::now() + jittered(interval));
                info!(tenant = %tenant.id, source = %source.id, created = log.created,
                    updated = log.updated, deleted = log.deleted, ms = log.duration_ms, "source synced");
                Ok(())
            }
            Err(e) => {
                status.consecutive_failures = status.consecutive_failures.saturating_add(1);
                status.last_error = Some(e.to_string());
                let delay = match &e {
                    SyncError::Provider(ProviderError::Retryable {
                        retry_after: Some(d),
                        ..
                    }) => *d,
                    _ => backoff(status.consecutive_failures).min(interval.max(FIRST_BACKOFF)),
                };
                if let SyncError::Provider(ProviderError::Reauth(_)) = e {
                    status.needs_reauth = true;
                }
                status.permanent_error =
                    matches!(e, SyncError::Provider(ProviderError::Refused(_)));
                status.next_run = (!status.permanent_error).then(|| Utc::now() + delay);
                log.error = Some(e.to_string());
                warn!(tenant = %tenant.id, source = %source.id, error = %e, "source sync failed; cache kept");
                Err(e)
            }
        };
        self.store
            .put_sync_status(&tenant.id, &source.id, &status)?;
        self.store.append_sync_log(&tenant.id, &source.id, &log)?;
        self.queue().set(
            (tenant.id.clone(), source.id.clone()),
            due_at(&source, &status, Utc::now()),
        );
        self.store.flush().await?;
        outcome.map(|()| log)
    }

    async fn fetch_and_apply(
        &self,
        tenant: &TenantConfig,
        source: &Source,
        cursor: &Cursor,
        mode: FetchMode,
    ) -> Result<(Applied, Cursor), SyncError> {
        let (t, s) = (tenant.id.as_str(), source.id.as_str());
        let Some(remote) = &source.remote else {
            return Err(SyncError::NotExternal(source.id.clone()));
        };
        let provider = Arc::clone(self.connections.provider(remote.kind)?);
        let keeps_digests = provider.keeps_digests();
        // What the last applied listing looked like: its unchanged events are
        // not split again. A forced full sync ignores them.
        let known = if keeps_digests && mode == FetchMode::Incremental {
            self.store
                .feed_digests(t, s)?
                .and_then(|raw| providers::ics::FeedDigests::decode(&raw))
        } else {
            None
        };
        let fetch = |mode, known| self.connections.fetch(tenant, source, cursor, mode, known);
        let got = match fetch(mode, known).await {
            // The provider forgot our cursor: start over from scratch.
            Err(ProviderError::CursorExpired) if mode == FetchMode::Incremental => {
                fetch(FetchMode::Full, None).await?
            }
            other => other?,
        };
        let touches_mirror = !matches!(got.fetched, Fetched::Unchanged { .. });
        if keeps_digests && touches_mirror {
            // The digests describe the mirror: forget them until the run has
            // applied the whole listing (a failed run leaves none, and the next
            // one splits everything).
            self.store.put_feed_digests(t, s, None)?;
        }
        let listing = FeedListing {
            kept: got.kept.into_iter().collect(),
            removed: got.removed,
        };
        let result = apply(self, tenant, source, provider, got.fetched, &listing).await?;
        if keeps_digests
            && touches_mirror
            && let Some(digests) = got.digests
        {
            self.store.put_feed_digests(t, s, Some(&digests.encode()))?;
        }
        Ok(result)
    }
}

/// What an iCal feed's digests said about its full listing (empty otherwise).
#[derive(Default)]
struct FeedListing {
    /// Series (each one item of the same id) still listed, unchanged, though not
    /// among the items: the mirror keeps them as they are.
    kept: HashSet<String>,
    /// When the listing is a delta against the mirror (its items the new and
    /// changed series, all the others `kept`): the series the feed no longer has.
    removed: Option<Vec<String>>,
}

/// Applies a fetch to the mirror and the calendar, in one batch.
async fn apply(
    engine: &SyncEngine,
    tenant: &TenantConfig,
    source: &Source,
    provider: Arc<dyn Provider>,
    fetched: Fetched,
    listing: &FeedListing,
) -> Result<(Applied, Cursor), SyncError> {
    let kept = &listing.kept;
    let store = &engine.store;
    let (t, s) = (tenant.id.as_str(), source.id.as_str());
    let mut affected = BTreeSet::new();
    // A full listing's items by series and item (as the mirror now holds them),
    // so its series are rendered without reading the mirror back.
    let mut listed: Option<HashMap<String, BTreeMap<String, serde_json::Value>>> = None;
    // A full listing's mirror writes (a large batch on a first import) go on
    // while the series are rendered and written: nothing below reads them back,
    // and either order heals after a crash (a series without its object, or an
    // object whose mirror item differs, is rendered again by the next run).
    let mut mirror_written = None;
    // The source's objects before the run, when a full listing read them: the
    // others are new, and need no look-up before they are written (a look-up
    // waits while another batch commits).
    let mut existing: Option<Arc<HashSet<String>>> = None;
    let cursor = match fetched {
        Fetched::Unchanged { cursor } => return Ok((Applied::default(), cursor)),
        Fetched::Full { items, cursor } if listing.removed.is_some() => {
            // The digests matched: the mirror holds the last feed's series, the
            // kept ones unchanged; only the others are written and rendered
            // (all of them, so one whose earlier import did not finish heals).
            for series in listing.removed.iter().flatten() {
                store.put_mirror_item(t, s, series, series, None)?;
                affected.insert(series.clone());
            }
            let (written, _) = write_mirror(store, t, s, &items)?;
            mirror_written = Some(written);
            affected.extend(items.iter().map(|i| i.series.clone()));
            listed = Some(group_by_series(items));
            cursor
        }
        Fetched::Full { items, cursor } => {
            let fresh: HashSet<(&str, &str)> = items
                .iter()
                .map(|i| (i.series.as_str(), i.item.as_str()))
                .collect();
            for (series, item) in store.mirror_keys(t, s)? {
                let still_kept = series == item && kept.contains(&series);
                if !still_kept && !fresh.contains(&(series.as_str(), item.as_str())) {
                    store.put_mirror_item(t, s, &series, &item, None)?;
                    affected.insert(series);
                }
            }
            // Only items that differ from the mirror are written, and only their
            // series re-rendered: a full listing (every iCal fetch, a 410 resync)
            // that changed little costs little beyond reading it.
            let (written, changed) = write_mirror(store, t, s, &items)?;
            mirror_written = Some(written);
            for (change, changed) in items.iter().zip(changed) {
                if changed {
                    affected.insert(change.series.clone());
                }
            }
            // Objects whose series vanished from the mirror entirely go too, and
            // series without an object are rendered again (a run that stopped
            // between mirror and import, an event skipped before).
            let objects: HashSet<String> = store.object_ids(t, s)?.into_iter().collect();
            let series: HashSet<&str> = items
                .iter()
                .map(|i| i.series.as_str())
                .chain(kept.iter().map(String::as_str))
                .collect();
            for id in &objects {
                if !series.contains(id.as_str()) {
                    affected.insert(id.clone());
                }
            }
            for id in series {
                if !objects.contains(id) {
                    affected.insert(id.to_owned());
                }
            }
            existing = Some(Arc::new(objects));
            listed = Some(group_by_series(items));
            cursor
        }
        Fetched::Delta { changes, cursor } => {
            // A change may name an item filed under another series (Graph's
            // `@removed` entries carry the item id only): move it out of there.
            if !changes.is_empty() {
                let mut filed: HashMap<String, String> = store
                    .mirror_keys(t, s)?
                    .into_iter()
                    .map(|(series, item)| (item, series))
                    .collect();
                for change in &changes {
                    let moved = match filed.get(&change.item) {
                        Some(old) if *old != change.series => Some(old.clone()),
                        _ => None,
                    };
                    if let Some(old) = moved {
                        store.put_mirror_item(t, s, &old, &change.item, None)?;
                        affected.insert(old);
                    }
                    if change.body.is_some() {
                        filed.insert(change.item.clone(), change.series.clone());
                    } else {
                        filed.remove(&change.item);
                    }
                }
            }
            put_items(store, t, s, &changes, &mut affected)?;
            cursor
        }
    };
    let mut applied = Applied::default();
    // Batches are pipelined: while one is parsed and expanded on a blocking
    // thread, the previous one is written and the next one rendered.
    let affected: Vec<String> = affected.into_iter().collect();
    let mut in_flight: Option<InFlight> = None;
    // Events our own inserts left behind (export::recognise): deleted after the run.
    let mut strays = Vec::new();
    for chunk in affected.chunks(IMPORT_BATCH) {
        // Each series' items, and the booking it is an export of.
        let mut series_items: Vec<(String, Vec<serde_json::Value>)> =
            Vec::with_capacity(chunk.len());
        let mut own_bookings: Vec<Option<String>> = Vec::with_capacity(chunk.len());
        for series in chunk {
            let mut items = match listed.as_mut().and_then(|l| l.remove(series.as_str())) {
                Some(items) => items.into_values().collect(),
                // Kept unchanged (not listed again): the mirror has it.
                None if listed.is_none() || kept.contains(series) => {
                    store.mirror_series(t, s, series)?
                }
                None => Vec::new(),
            };
            // Our own exported events come back here: mark them (loop prevention).
            let recognised = engine.imports.recognise(t, source, &mut items)?;
            strays.extend(recognised.strays);
            own_bookings.push(recognised.booking);
            series_items.push((series.clone(), items));
        }
        let (calendars, provider_copy, tenant_copy, source_copy, existing) = (
            engine.calendars.clone(),
            Arc::clone(&provider),
            tenant.clone(),
            source.clone(),
            existing.clone(),
        );
        let prepared = tokio::task::spawn_blocking(move || {
            let batch = Batch {
                provider: provider_copy.as_ref(),
                series_items,
                existing: existing.as_deref(),
            };
            render_and_prepare(&calendars, &tenant_copy, &source_copy, batch)
        });
        if let Some(previous) = in_flight.replace(InFlight {
            prepared,
            own_bookings,
        }) {
            commit_batch(engine, tenant, source, previous, &mut applied).await?;
        }
    }
    if let Some(last) = in_flight.take() {
        commit_batch(engine, tenant, source, last, &mut applied).await?;
    }
    if let Some(written) = mirror_written {
        match written.await {
            Ok(result) => result?,
            // A panic while writing stays a panic; the task is never cancelled.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    if !strays.is_empty() {
        engine.imports.remove_strays(tenant, source, &strays).await;
    }
    Ok((applied, cursor))
}

/// A mirror write running on the blocking pool.
type MirrorWrite = tokio::task::JoinHandle<Result<(), StoreError>>;

/// Starts writing a full listing's items to the mirror on the blocking pool;
/// returns the write and, per item, whether it differs from the mirror.
fn write_mirror(
    store: &Store,
    tenant: &str,
    source: &str,
    items: &[ItemChange],
) -> Result<(MirrorWrite, Vec<bool>), SyncError> {
    let (writes, changed) = store.mirror_changes(
        tenant,
        source,
        &mut items
            .iter()
            .map(|i| (i.series.as_str(), i.item.as_str(), i.body.as_ref())),
    )?;
    Ok((tokio::task::spawn_blocking(move || writes.apply()), changed))
}

/// A full listing's items by series and item (as the mirror now holds them).
fn group_by_series(items: Vec<ItemChange>) -> HashMap<String, BTreeMap<String, serde_json::Value>> {
    let mut by_series: HashMap<String, BTreeMap<String, serde_json::Value>> = HashMap::new();
    for change in items {
        let entry = by_series.entry(change.series).or_default();
        match change.body {
            Some(body) => entry.insert(change.item, body),
            None => entry.remove(&change.item),
        };
    }
    by_series
}

/// An import batch being rendered, parsed and expanded.
struct InFlight {
    prepared: tokio::task::JoinHandle<Result<Prepared, CalendarError>>,
    /// Per series of the batch, the booking it is an export of.
    own_bookings: Vec<Option<String>>,
}

/// A batch ready to be written.
struct Prepared {
    /// The rendered series (their objects in `objects`), as indexes of the batch.
    rendered: Vec<(usize, String)>,
    /// Series with nothing left to show: their objects go.
    gone: Vec<String>,
    objects: PreparedImports,
}

/// One import batch to render and prepare.
struct Batch<'a> {
    /// Renders the series.
    provider: &'a dyn Provider,
    /// Each series' items.
    series_items: Vec<(String, Vec<serde_json::Value>)>,
    /// The source's objects, when known: a series not among them is new.
    existing: Option<&'a HashSet<String>>,
}

/// Renders a batch's series and parses and expands them: the CPU-bound part of an
/// import, which reads the store but writes nothing.
fn render_and_prepare(
    calendars: &crate::calendars::CalendarService,
    tenant: &TenantConfig,
    source: &Source,
    batch: Batch<'_>,
) -> Result<Prepared, CalendarError> {
    let Batch {
        provider,
        series_items,
        existing,
    } = batch;
    let ctx = RenderContext {
        default_zone: tenant.timezone,
        source: &source.id,
    };
    let mut rendered = Vec::with_capacity(series_items.len());
    let mut texts = Vec::with_capacity(series_items.len());
    let mut gone = Vec::new();
    for (i, (series, items)) in series_items.into_iter().enumerate() {
        let text = if items.is_empty() {
            None
        } else {
            provider.render(&items, &ctx)
        };
        match text {
            Some(ics) => {
                rendered.push((i, series.clone()));
                texts.push((series, ics));
            }
            None => gone.push(series),
        }
    }
    let objects = calendars.prepare_imports(tenant, source, &texts, |id| {
        existing.is_none_or(|e| e.contains(id))
    })?;
    Ok(Prepared {
        rendered,
        gone,
        objects,
    })
}

/// Writes a prepared batch and counts what it did.
async fn commit_batch(
    engine: &SyncEngine,
    tenant: &TenantConfig,
    source: &Source,
    batch: InFlight,
    applied: &mut Applied,
) -> Result<(), SyncError> {
    let (t, s) = (tenant.id.as_str(), source.id.as_str());
    let exports = source
        .remote
        .as_ref()
        .is_some_and(|r| r.direction.exports());
    let prepared = match batch.prepared.await {
        Ok(prepared) => prepared?,
        // A panic while parsing stays a panic, as when it ran on this task; the
        // task is never cancelled.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    for series in &prepared.gone {
        if engine.calendars.remove_imported(tenant, s, series).await? {
            applied.deleted += 1;
        }
    }
    let results = engine
        .calendars
        .commit_imports(tenant, source, prepared.objects)
        .await?;
    for ((i, series), result) in prepared.rendered.iter().zip(results) {
        match result {
            Ok(imported) => {
                match imported {
                    Imported::Created => applied.created += 1,
                    Imported::Updated => applied.updated += 1,
                    Imported::Unchanged => {}
                }
                if let Some(booking) = batch
                    .own_bookings
                    .get(*i)
                    .and_then(Option::as_deref)
                    .filter(|_| exports)
                    && let Err(e) = engine
                        .imports
                        .observe_import(tenant, s, series, booking)
                        .await
                {
                    warn!(tenant = t, source = s, series = %series, error = %e, "external change check failed");
                }
            }
            // One unreadable event must not stop the rest of the calendar.
            Err(
                e @ (CalendarError::Invalid(_)
                | CalendarError::UnsupportedComponent { .. }
                | CalendarError::UidConflict(_)
                | CalendarError::OverBudget(_)),
            ) => {
                warn!(tenant = t, source = s, series = %series, error = %e, "imported event skipped");
                applied.skip(series, e.to_string());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn put_items(
    store: &Store,
    tenant: &str,
    source: &str,
    items: &[ItemChange],
    affected: &mut BTreeSet<String>,
) -> Result<(), StoreError> {
    for change in items {
        store.put_mirror_item(
            tenant,
            source,
            &change.series,
            &change.item,
            change.body.as_ref(),
        )?;
        affected.insert(change.series.clone());
    }
    Ok(())
}

/// `2^(failures-1)` times the first pause, capped.
fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(10);
    (FIRST_BACKOFF * factor).min(MAX_BACKOFF)
}

/// The interval ±10 %, so sources added together do not stay in lockstep.
fn jittered(interval: Duration) -> Duration {
    let tenth = interval.as_millis() as u64 / 10;
    let offset = if tenth == 0 {
        0
    } else {
        rand::random_range(0..=2 * tenth)
    };
    Duration::from_millis(interval.as_millis() as u64 - tenth + offset)
}

/// Sources whose configuration says they sync on their own.
fn scheduled(source: &Source) -> bool {
    source
        .remote
        .as_ref()
        .is_some_and(|r| r.enabled && r.direction.imports())
}

/// When the scheduler should run `source` next (`now` if it never ran), or
/// `None` if it should not until something changes.
fn due_at(source: &Source, status: &SyncStatus, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (scheduled(source) && !status.needs_reauth && !status.permanent_error)
        .then(|| status.next_run.unwrap_or(now))
}

/// The scheduler: starts every due source while a run slot is free, then
/// sleeps until the next one is due, a run ends, or a source changes.
pub async fn scheduler(engine: Arc<SyncEngine>) {
    let slots = Arc::new(Semaphore::new(engine.max_concurrent_runs));
    let mut last_scan: Option<std::time::Instant> = None;
    loop {
        if engine.rescan.swap(false, Ordering::Relaxed)
            || last_scan.is_none_or(|at| at.elapsed() >= RESCAN_EVERY)
        {
            // Every tenant's sources: store reads, off the async workers.
            let scanning = Arc::clone(&engine);
            let _ = tokio::task::spawn_blocking(move || scanning.rescan()).await;
            last_scan = Some(std::time::Instant::now());
        }
        while let Ok(slot) = Arc::clone(&slots).try_acquire_owned() {
            let Some((due, key)) = engine.queue().pop_due(Utc::now()) else {
                break;
            };
            let engine = Arc::clone(&engine);
            tokio::spawn(async move {
                engine.run_due(key, due).await;
                drop(slot);
                engine.wake.notify_one();
            });
        }
        let until_rescan =
            RESCAN_EVERY.saturating_sub(last_scan.map_or(Duration::ZERO, |at| at.elapsed()));
        // With every slot taken, the end of a run is what to wait for.
        let pause = if slots.available_permits() == 0 {
            until_rescan
        } else {
            engine
                .queue()
                .next_due()
                .map(|n| (n - Utc::now()).to_std().unwrap_or_default())
                .unwrap_or(until_rescan)
                .clamp(
                    Duration::from_millis(10),
                    until_rescan.max(Duration::from_millis(10)),
                )
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = engine.wake.notified() => {}
        }
    }
}

/// Puts the sources declared in the configuration into the store (new ones, and
/// changed settings of existing ones; their cache and status stay). Permanent
/// errors of earlier runs are forgotten: the allow-list may have changed.
pub fn declare_configured_sources(
    store: &Store,
    tenants: &[TenantConfig],
) -> Result<(), StoreError> {
    for tenant in tenants {
        for source in store.sources(&tenant.id)? {
            let mut status = store.sync_status(&tenant.id, &source.id)?;
            if status.permanent_error {
                status.permanent_error = false;
                store.put_sync_status(&tenant.id, &source.id, &status)?;
            }
        }
        for declared in &tenant.sources {
            let mut source = store
                .source(&tenant.id, &declared.id)?
                .unwrap_or_else(|| Source::new(&declared.id, &declared.name));
            source.name = declared.name.clone();
            source.transparent = declared.transparent;
            source.read_only = true;
            source.components = vec!["VEVENT".into()];
            source.remote = Some(declared.remote.clone());
            source.resource = declared.resource.clone();
            store.put_source(&tenant.id, &source)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), FIRST_BACKOFF);
        assert_eq!(backoff(2), FIRST_BACKOFF * 2);
        assert_eq!(backoff(30), MAX_BACKOFF);
    }

    #[test]
    fn jitter_stays_within_a_tenth() {
        let interval = Duration::from_secs(1800);
        for _ in 0..100 {
            let j = jittered(interval);
            assert!(
                j >= Duration::from_secs(1620) && j <= Duration::from_secs(1980),
                "{j:?}"
            );
        }
    }
}
