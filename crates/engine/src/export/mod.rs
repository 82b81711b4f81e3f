//! Booking export: every booking of a tenant pushed to each of its exporting
//! Google / Microsoft sources (`direction = "export"` or `"both"`), following
//! every change, without duplicates or lost updates.
//!
//! What lives here:
//! - the **deliverer** ([`deliverer`]): one task for all sources, woken after each
//!   booking change and by retry deadlines;
//! - **reconciliation** of one booking with one source: the booking's latest state
//!   against the stored mapping (event id, exported ETag), giving insert, patch,
//!   delete or nothing;
//! - the hooks the import path calls for sources that also import
//!   ([`ImportObserver::recognise`], [`ImportObserver::observe_import`]): loop prevention and external moves;
//! - purge on disconnect ([`purge`]) and what the API shows ([`booking_exports`],
//!   [`source_status`]).
//!
//! Event content, markers and the write clients are the providers' (
//! `calgate_providers::export` and each provider's `export` module); what is
//! provider-specific here goes through the [`Provider`] trait. The mapping and
//! cursors are in `store::export`.
//!
//! **Outbox.** There is no separate queue: the bookings change log, appended in
//! the same sled transaction as every booking write, is the durable outbox. Each
//! source keeps a cursor into it. A pass reads entries after the cursor, takes
//! each booking id once (the latest state wins, so an update can never overtake
//! its create, and a delete of a never-exported booking sends nothing),
//! reconciles up to [`Provider::export_concurrency`] bookings at a
//! time, then moves the cursor past the longest prefix of entries whose bookings
//! are done. Retryable failures back the source off (Retry-After when given,
//! else exponential with full jitter); throttling (429, Retry-After) stops the
//! pass at once, a single failed request (500, timeout) lets the rest of the
//! batch go on;
//! permanent ones (403, target calendar gone, 400) park the booking at that
//! revision, in the sync log and the source status, until it changes again or a
//! manual `POST …/sync` retries it.
//!
//! **Recovery.** Before a create is sent, the mapping records `create_pending`
//! durably; if we crash between the provider's answer and storing the event id,
//! the next pass looks the marked event up (`find_by_marker`) instead of creating
//! a second one. The insert itself is idempotent as well, for an insert the
//! provider is still processing when the lookup runs: Google events get a
//! client-chosen id derived from the booking (a repeat answers 409 and the event
//! is taken over), Graph creates carry a `transactionId` derived from the
//! booking, which Graph deduplicates. Should such an insert land after the
//! booking was exported as another event, the import deletes that stray
//! ([`ImportObserver::recognise`], [`ImportObserver::remove_strays`]).
//!
//! **Per resource.** A source attached to a resource exports only the bookings
//! taking it; a tenant-wide one exports every booking ([`is_for`], the one
//! place that decides). A booking that stops taking the resource is
//! reconciled like a cancelled one there (its event is deleted), and the
//! resource's new source creates one. A source attached to another resource
//! reconciles every booking again from the start of the log.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{StreamExt, stream};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::bookings::BookingEngine;
use crate::bookings::{BookingError, BookingPatch, ConflictPolicy, UpdateMode};
use crate::connect::Connections;
use crate::model::Horizon;
use crate::model::{Booking, BookingStatus, BookingTime, Source, Span, SyncLog};
use crate::providers::Provider;
use crate::providers::export::{
    self as event, ExportEvent, ExportTarget, Inserted, Patched, is_throttled,
};
use crate::providers::{ProviderError, ProviderKind};
use crate::settings::TenantConfig;
use crate::store::Store;
use crate::store::{ExportRecord, ExportState, ExternalChange, Parked, StoreError};
use crate::sync::{BoxFuture, ImportObserver, Recognised};
use crate::tenants::Tenants;

/// The write client of one exporting source.
type Target = Arc<dyn ExportTarget>;

/// Change-log entries read per batch.
const BATCH: usize = 512;
/// Backoff after retryable failures: full jitter over `base · 2^(n-1)`, capped.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(64);
/// The deliverer looks again at least this often (sources added over the API,
/// connections finished).
const IDLE_LOOK: Duration = Duration::from_secs(30);
/// How long an import waits for a delivery pass of the same source before it
/// leaves an external move to the next import (a source being removed holds
/// the lock while it waits for the import to end).
const MOVE_CHECK_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("source \"{0}\" does not exist")]
    UnknownSource(String),
    #[error(
        "source \"{0}\" does not export; set direction = \"export\" or \"both\" to push bookings to it"
    )]
    NotExporting(String),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type SourceLock = Arc<tokio::sync::Mutex<()>>;

/// The exporter: what it works with, and one lock per source.
pub struct Exporter {
    /// One delivery (or purge) per source at a time.
    locks: Mutex<HashMap<(String, String), SourceLock>>,
    /// Pokes the deliverer (sources changed, connections made, manual runs).
    wake: tokio::sync::Notify,
    store: Store,
    /// Applies external moves (with the usual conflict check) and says when
    /// bookings change.
    bookings: BookingEngine,
    connections: Arc<Connections>,
    tenants: Arc<Tenants>,
    horizon: Horizon,
}

impl Exporter {
    pub fn new(
        store: Store,
        bookings: BookingEngine,
        connections: Arc<Connections>,
        tenants: Arc<Tenants>,
        horizon: Horizon,
    ) -> Self {
        Exporter {
            locks: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            store,
            bookings,
            connections,
            tenants,
            horizon,
        }
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn lock_for(&self, tenant: &str, source: &str) -> SourceLock {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            locks
                .entry((tenant.to_owned(), source.to_owned()))
                .or_default(),
        )
    }

    /// Waits until no delivery of the source runs, and keeps others out while the
    /// guard lives (for removing the source). Passes that take the lock after a
    /// tenant left [`Tenants`] write nothing.
    pub async fn quiesce(&self, tenant: &str, source: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.lock_for(tenant, source).lock_owned().await
    }
}

/// Whether a source is pushed to.
pub fn exports(source: &Source) -> bool {
    source
        .remote
        .as_ref()
        .is_some_and(|r| r.enabled && r.direction.exports() && r.kind != ProviderKind::Ics)
}

/// Whether `booking` goes to `source`: a tenant-wide source takes every
/// booking; a resource's source only the bookings naming that resource. A
/// booking that names none is the implicit resource's on a tenant without
/// declared resources, and tenant-wide (for tenant-wide sources only) on one
/// that declares them. The deliverer, a booking's `exports` and nothing else
/// decide with it.
pub fn is_for(tenant: &TenantConfig, source: &Source, booking: &Booking) -> bool {
    match &source.resource {
        None => true,
        Some(resource) if !tenant.declares_resources() => tenant.has_resource(resource),
        Some(resource) => booking.resources.iter().any(|r| r == resource),
    }
}

/// The deliverer: runs every exporting source that has work and is not backing
/// off, then sleeps until a booking changes, something pokes it, or the next
/// retry is due. A booking change makes it look at that tenant's sources only;
/// the other wake-ups look at every tenant's.
pub async fn deliverer(exporter: Arc<Exporter>) {
    let changed = exporter.bookings.change_signal();
    let mut look_at_all = true;
    // The earliest retry the last look at every tenant found.
    let mut next_retry: Option<DateTime<Utc>> = None;
    loop {
        let now = Utc::now();
        let dirty = changed.take();
        let (sources, mut next) = if look_at_all {
            let all = exporter
                .tenants
                .sources_where(&exporter.store, "exporter", exports);
            (all, None)
        } else {
            let some = exporter
                .tenants
                .sources_of(&dirty, &exporter.store, "exporter", exports);
            (some, next_retry.filter(|at| *at > now))
        };
        let mut passes = JoinSet::new();
        for (tenant, source) in sources {
            let state = exporter
                .store
                .export_state(&tenant.id, &source.id)
                .unwrap_or_default();
            if let Some(at) = state.retry_at
                && at > now
            {
                next = Some(next.map_or(at, |n| n.min(at)));
                continue;
            }
            let status = exporter
                .store
                .sync_status(&tenant.id, &source.id)
                .unwrap_or_default();
            if status.needs_reauth || !status.connected {
                continue;
            }
            let exporter = Arc::clone(&exporter);
            passes.spawn(async move {
                match exporter.deliver(&tenant, &source.id, false).await {
                    Ok(pass) => pass.retry_at,
                    Err(e) => {
                        warn!(tenant = %tenant.id, source = %source.id, error = %e, "export pass failed");
                        Some(Utc::now() + chrono::Duration::seconds(5))
                    }
                }
            });
        }
        while let Some(done) = passes.join_next().await {
            if let Ok(Some(at)) = done {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next_retry = next;
        let pause = next
            .map(|n| (n - Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(IDLE_LOOK)
            .clamp(Duration::from_millis(20), IDLE_LOOK);
        look_at_all = tokio::select! {
            _ = tokio::time::sleep(pause) => true,
            _ = changed.notified() => false,
            _ = exporter.wake.notified() => true,
        };
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone)]
pub struct Pass {
    pub created: u32,
    pub updated: u32,
    pub deleted: u32,
    pub parked: u32,
    /// The first permanent error of the pass.
    pub parked_error: Option<String>,
    /// Set when the pass stopped on a retryable error.
    pub retry_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

impl Pass {
    /// The sync-log entry of a pass that started at `started` (`clock` then).
    fn log(
        &self,
        started: DateTime<Utc>,
        clock: std::time::Instant,
        error: Option<String>,
    ) -> SyncLog {
        SyncLog {
            started,
            duration_ms: clock.elapsed().as_millis() as u64,
            mode: "export".into(),
            created: self.created,
            updated: self.updated,
            deleted: self.deleted,
            error,
            skipped: Vec::new(),
            skipped_total: 0,
        }
    }

    /// Counts what reconciling one booking did; the reason, when it was parked.
    fn count(&mut self, outcome: Outcome) -> Option<String> {
        match outcome {
            Outcome::Created => self.created += 1,
            Outcome::Updated => self.updated += 1,
            Outcome::Deleted => self.deleted += 1,
            Outcome::Unchanged => {}
            Outcome::Parked(msg) => {
                self.parked += 1;
                self.parked_error.get_or_insert_with(|| msg.clone());
                return Some(msg);
            }
        }
        None
    }
}

/// What reconciling one booking did.
#[derive(Debug)]
enum Outcome {
    Created,
    Updated,
    Deleted,
    Unchanged,
    Parked(String),
}

/// Everything a reconciliation needs, shared by the bookings in flight.
struct Ctx<'a> {
    exporter: &'a Exporter,
    tenant: String,
    source: String,
    /// The tenant's settings and the source, for [`is_for`].
    settings: &'a TenantConfig,
    record: Source,
    privacy: crate::model::ExportPrivacy,
    provider: Arc<dyn Provider>,
    target: Target,
    window: Span,
    /// Retry parked bookings too (a manual run).
    retry_parked: bool,
}

/// The provider and write client of an exporting source, with its
/// authorised session.
fn target_for(
    connections: &Connections,
    tenant: &str,
    source: &Source,
) -> Result<(Arc<dyn Provider>, Target), ProviderError> {
    let Some(remote) = &source.remote else {
        return Err(ProviderError::Permanent("not an external source".into()));
    };
    let provider = Arc::clone(connections.provider(remote.kind)?);
    let session = Arc::new(connections.session(tenant, &source.id, remote.kind)?);
    let target = provider
        .export_target(session, &remote.target)
        .ok_or_else(|| {
            ProviderError::Permanent(format!(
                "{} sources cannot be exported to",
                remote.kind.name()
            ))
        })?;
    Ok((provider, target))
}

impl Exporter {
    /// One delivery pass over a source: everything after its cursor, batch by batch.
    pub async fn deliver(
        &self,
        tenant: &TenantConfig,
        source_id: &str,
        retry_parked: bool,
    ) -> Result<Pass, ExportError> {
        let lock = self.lock_for(&tenant.id, source_id);
        let _guard = lock.lock().await;
        let (t, s) = (tenant.id.as_str(), source_id);
        // A deleted tenant's pass must not write its data back (see `quiesce`).
        if self.tenants.get(t).is_none() {
            return Err(ExportError::UnknownSource(s.to_owned()));
        }
        let source = self
            .store
            .source(t, s)?
            .ok_or_else(|| ExportError::UnknownSource(s.to_owned()))?;
        if !exports(&source) {
            return Err(ExportError::NotExporting(s.to_owned()));
        }
        let mut pass = Pass::default();
        let mut state = self.store.export_state(t, s)?;
        let target_id = source.remote.as_ref().map(|r| r.target.clone());
        if state.target != target_id {
            if state.target.is_some() {
                // Pointed at another calendar: export everything there afresh; the
                // events in the old calendar stay, as on a disconnect.
                info!(
                    tenant = t,
                    source = s,
                    "export target changed; starting over"
                );
                self.store.forget_export_mappings(t, s)?;
            }
            state = ExportState {
                target: target_id,
                resource: source.resource.clone(),
                ..ExportState::default()
            };
            self.store.put_export_state(t, s, &state)?;
        }
        if state.resource != source.resource {
            // Attached to another resource: which bookings belong here changed,
            // so reconcile every one again (the mappings stay: events of
            // bookings no longer for it are deleted, the others patched).
            info!(
                tenant = t,
                source = s,
                "export source's resource changed; reconciling every booking"
            );
            state.cursor = 0;
            state.resource = source.resource.clone();
            self.store.put_export_state(t, s, &state)?;
        }
        if self
            .store
            .booking_changes_after(t, state.cursor, 1)?
            .is_empty()
            && !retry_parked
        {
            return Ok(pass);
        }
        let started = Utc::now();
        let clock = std::time::Instant::now();
        let (provider, target) = match target_for(&self.connections, t, &source) {
            Ok(found) => found,
            Err(e) => {
                self.fail(t, s, &mut state, &mut pass, &e)?;
                self.store.flush().await?;
                return Ok(pass);
            }
        };
        let ctx = Ctx {
            exporter: self,
            tenant: t.to_owned(),
            source: s.to_owned(),
            settings: tenant,
            record: source.clone(),
            privacy: source
                .remote
                .as_ref()
                .map(|r| r.privacy)
                .unwrap_or_default(),
            provider,
            target,
            window: self.horizon.window(Utc::now()),
            retry_parked,
        };
        let mut stop: Option<ProviderError> = None;
        loop {
            let changes = self.store.booking_changes_after(t, state.cursor, BATCH)?;
            let Some(last) = changes.last().map(|c| c.seq) else {
                break;
            };
            // Each booking once, in order of first appearance.
            let mut order = Vec::new();
            let mut seen = HashSet::new();
            for c in &changes {
                if seen.insert(c.id.as_str()) {
                    order.push(c.id.clone());
                }
            }
            let mut done: HashSet<String> = HashSet::new();
            // After a retryable failure nothing new starts; what is in flight ends.
            let stopping = AtomicBool::new(false);
            let ctx = &ctx;
            let stopping = &stopping;
            let mut results = stream::iter(order)
                .map(|id| async move {
                    if stopping.load(Ordering::Relaxed) {
                        return (id, None);
                    }
                    let outcome = reconcile(ctx, &id).await;
                    if let Err(ExportError::Provider(e)) = &outcome
                        && stops_pass(e)
                    {
                        stopping.store(true, Ordering::Relaxed);
                    }
                    (id, Some(outcome))
                })
                .buffer_unordered(ctx.provider.export_concurrency());
            while let Some((id, outcome)) = results.next().await {
                let Some(outcome) = outcome else { continue };
                match outcome {
                    Ok(o) => {
                        if let Some(msg) = pass.count(o) {
                            warn!(tenant = t, source = s, booking = %id, error = %msg, "export parked");
                        }
                        done.insert(id);
                    }
                    Err(ExportError::Provider(e)) => {
                        // Throttling wins over a single failed request.
                        if stop
                            .as_ref()
                            .is_none_or(|s| !stops_pass(s) && stops_pass(&e))
                        {
                            stop = Some(e);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            // Past every entry whose booking is done, up to the first that is not.
            let mut cursor = state.cursor;
            for c in &changes {
                if !done.contains(&c.id) {
                    break;
                }
                cursor = c.seq;
            }
            let advanced = cursor > state.cursor;
            state.cursor = cursor;
            self.store.put_export_state(t, s, &state)?;
            self.store.flush().await?;
            if stop.is_some() || cursor < last || !advanced {
                break;
            }
            // Removed or switched off meanwhile: stop here.
            if !self.store.source(t, s)?.is_some_and(|x| exports(&x)) {
                break;
            }
        }
        if retry_parked {
            retry_parked_records(&ctx, &mut pass).await?;
        }
        state.delivered += u64::from(pass.created + pass.updated + pass.deleted);
        match stop {
            Some(e) => self.fail(t, s, &mut state, &mut pass, &e)?,
            None => {
                state.consecutive_failures = 0;
                state.retry_at = None;
                state.last_success = Some(Utc::now());
                if let Some(msg) = &pass.parked_error {
                    state.last_error = Some(format!(
                        "{msg} ({} booking(s) not exported; they are retried when they change or on POST …/sync)",
                        pass.parked
                    ));
                    state.last_error_at = Some(Utc::now());
                }
            }
        }
        self.store.put_export_state(t, s, &state)?;
        let worked = pass.created + pass.updated + pass.deleted + pass.parked > 0;
        if worked || pass.error.is_some() {
            let error = pass
                .error
                .clone()
                .or_else(|| state.last_error.clone().filter(|_| pass.parked > 0));
            let log = pass.log(started, clock, error);
            self.store.append_sync_log(t, s, &log)?;
            info!(
                tenant = t,
                source = s,
                created = pass.created,
                updated = pass.updated,
                deleted = pass.deleted,
                parked = pass.parked,
                "bookings exported"
            );
        }
        self.store.flush().await?;
        Ok(pass)
    }
}

/// Whether a failure concerns the whole source (throttling, lost grant), so no
/// further request should start; other failures concern one request and the
/// rest of the batch goes on (the source backs off after the pass).
fn stops_pass(e: &ProviderError) -> bool {
    match e {
        ProviderError::Retryable { retry_after, .. } => retry_after.is_some() || is_throttled(e),
        ProviderError::Reauth(_) => true,
        _ => false,
    }
}

impl Exporter {
    /// Records a failure that stopped a pass: back off (retryable) or wait for a
    /// person (reauth, permanent failures of the whole source).
    fn fail(
        &self,
        t: &str,
        s: &str,
        state: &mut ExportState,
        pass: &mut Pass,
        e: &ProviderError,
    ) -> Result<(), StoreError> {
        // Backoff grows only while nothing gets through.
        let progressed = pass.created + pass.updated + pass.deleted > 0;
        state.consecutive_failures = if progressed {
            1
        } else {
            state.consecutive_failures.saturating_add(1)
        };
        state.last_error = Some(e.to_string());
        state.last_error_at = Some(Utc::now());
        let delay = match e {
            ProviderError::Retryable {
                retry_after: Some(d),
                ..
            } => *d,
            ProviderError::Reauth(_) => {
                let mut status = self.store.sync_status(t, s)?;
                status.needs_reauth = true;
                status.last_error = Some(e.to_string());
                self.store.put_sync_status(t, s, &status)?;
                MAX_BACKOFF
            }
            _ => backoff(state.consecutive_failures),
        };
        let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        // A lost grant waits for the person to reconnect (needs_reauth), not a clock.
        if !matches!(e, ProviderError::Reauth(_)) {
            state.retry_at = Some(at);
            pass.retry_at = Some(at);
        }
        pass.error = Some(e.to_string());
        warn!(tenant = t, source = s, error = %e, retry_in_ms = delay.as_millis() as u64, "export paused");
        Ok(())
    }
}

/// Full jitter over `FIRST_BACKOFF · 2^(failures-1)`, capped at [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(10);
    let ceiling = (FIRST_BACKOFF * factor).min(MAX_BACKOFF);
    let ms = ceiling.as_millis() as u64;
    Duration::from_millis(rand::random_range(ms / 4..=ms.max(1)))
}

/// Manual retry: every parked booking of the source once more.
async fn retry_parked_records(ctx: &Ctx<'_>, pass: &mut Pass) -> Result<(), ExportError> {
    let parked: Vec<String> = ctx
        .exporter
        .store
        .export_records(&ctx.tenant, &ctx.source)?
        .into_iter()
        .filter(|(_, r)| r.parked.is_some())
        .map(|(id, _)| id)
        .collect();
    for id in parked {
        pass.count(reconcile(ctx, &id).await?);
    }
    Ok(())
}

/// Brings one booking's event in line with the booking's current state.
/// `Err(Provider)` only for failures worth retrying (or reauth); permanent ones
/// park the booking and answer `Parked`.
async fn reconcile(ctx: &Ctx<'_>, id: &str) -> Result<Outcome, ExportError> {
    let store = &ctx.exporter.store;
    let (t, s) = (ctx.tenant.as_str(), ctx.source.as_str());
    let booking = store.booking(t, id)?;
    let mut rec = store.export_record(t, s, id)?.unwrap_or_default();
    let etag = booking.as_ref().map(|b| b.etag.clone());
    if !ctx.retry_parked && rec.parked.as_ref().is_some_and(|p| p.etag == etag) {
        return Ok(Outcome::Unchanged);
    }
    // A booking not (or no longer) for this source is removed here, as a
    // cancelled one is.
    let live = booking
        .as_ref()
        .filter(|b| b.status != BookingStatus::Cancelled && is_for(ctx.settings, &ctx.record, b));
    let result = match live {
        Some(b) => put_event(ctx, b, &mut rec).await,
        None => remove_event(ctx, id, &mut rec).await,
    };
    match result {
        Ok(outcome) => {
            rec.parked = None;
            save(ctx, id, booking.is_some(), &rec)?;
            Ok(outcome)
        }
        Err(ProviderError::Permanent(msg)) => {
            rec.parked = Some(Parked {
                etag,
                error: msg.clone(),
                at: Utc::now(),
            });
            save(ctx, id, true, &rec)?;
            Ok(Outcome::Parked(msg))
        }
        Err(e) => {
            // Keep what was learnt (create_pending, a new event id) for the retry.
            save(ctx, id, true, &rec)?;
            Err(e.into())
        }
    }
}

/// Stores a record, or forgets it when there is nothing left to remember.
fn save(
    ctx: &Ctx<'_>,
    id: &str,
    booking_exists: bool,
    rec: &ExportRecord,
) -> Result<(), StoreError> {
    let empty = rec.remote_id.is_none() && !rec.create_pending && rec.parked.is_none();
    let keep = !empty || booking_exists;
    ctx.exporter
        .store
        .put_export_record(&ctx.tenant, &ctx.source, id, keep.then_some(rec))
}

fn event_of(ctx: &Ctx<'_>, b: &Booking, rec: &ExportRecord) -> ExportEvent {
    event::build(
        b,
        &ctx.source,
        ctx.privacy,
        &ctx.exporter.connections.public_url(),
        rec.generation,
    )
}

/// Live booking: patch its event, or create it (after looking for one a crash
/// may have left behind).
async fn put_event(
    ctx: &Ctx<'_>,
    b: &Booking,
    rec: &mut ExportRecord,
) -> Result<Outcome, ProviderError> {
    let ev = event_of(ctx, b, rec);
    if let Some(remote) = rec.remote_id.clone() {
        if rec.exported_etag.as_deref() == Some(b.etag.as_str()) {
            return Ok(Outcome::Unchanged);
        }
        match ctx.target.patch(&remote, &ev).await? {
            Patched::Done => {
                rec.exported_etag = Some(b.etag.clone());
                rec.exported_span = Some(b.span());
                return Ok(Outcome::Updated);
            }
            // Deleted by someone in the external calendar: create it again.
            Patched::Gone => {
                rec.remote_id = None;
                rec.exported_etag = None;
                rec.exported_span = None;
                rec.generation = rec.generation.wrapping_add(1);
            }
        }
    }
    if !b.span().overlaps(&ctx.window) && !rec.create_pending {
        // Outside the horizon and never exported: nothing to show.
        return Ok(Outcome::Unchanged);
    }
    let ev = event_of(ctx, b, rec);
    if rec.create_pending {
        // A create may have landed before a crash: find it by its marker,
        // this generation's event first; other events of our inserts are strays.
        let found = find_ours(ctx, &b.id).await?;
        let chosen = ctx.provider.chosen_event_id(&ev);
        let keep = found
            .iter()
            .position(|id| Some(id) == chosen.as_ref())
            .unwrap_or(0);
        if let Some(remote) = found.get(keep).cloned() {
            for (i, stray) in found.iter().enumerate() {
                if i != keep {
                    ctx.target.delete(stray).await?;
                }
            }
            return adopt(ctx, b, rec, remote, &ev).await;
        }
    }
    // Durable before the request: a crash after the provider's answer is then
    // recovered above, not answered with a second event.
    rec.create_pending = true;
    ctx.exporter
        .store
        .put_export_record(&ctx.tenant, &ctx.source, &b.id, Some(rec))
        .map_err(|e| ProviderError::retryable(format!("storage: {e}")))?;
    ctx.exporter
        .store
        .flush()
        .await
        .map_err(|e| ProviderError::retryable(format!("storage: {e}")))?;
    // The provider may still be processing an insert whose answer was lost
    // (the lookup above cannot see it yet): the insert is idempotent (Google
    // event id, Graph transactionId), so repeating it finds that event.
    match ctx.target.insert(&ev).await? {
        Inserted::Created(remote) => {
            rec.remote_id = Some(remote);
            rec.create_pending = false;
            rec.exported_etag = Some(b.etag.clone());
            rec.exported_span = Some(b.span());
            rec.external = None;
            Ok(Outcome::Created)
        }
        Inserted::Existing(remote) => adopt(ctx, b, rec, remote, &ev).await,
    }
}

/// Takes `remote`, an event an earlier insert of ours made, as the booking's
/// event, and brings it up to date (it may show an older revision).
async fn adopt(
    ctx: &Ctx<'_>,
    b: &Booking,
    rec: &mut ExportRecord,
    remote: String,
    ev: &ExportEvent,
) -> Result<Outcome, ProviderError> {
    rec.remote_id = Some(remote.clone());
    rec.create_pending = false;
    match ctx.target.patch(&remote, ev).await? {
        Patched::Done => {
            rec.exported_etag = Some(b.etag.clone());
            rec.exported_span = Some(b.span());
            rec.external = None;
            Ok(Outcome::Created)
        }
        Patched::Gone => {
            // Deleted meanwhile: the next insert is a new one (a new id).
            rec.remote_id = None;
            rec.generation = rec.generation.wrapping_add(1);
            Err(ProviderError::retryable(
                "the recovered event vanished while being updated",
            ))
        }
    }
}

/// The live events our inserts made for a booking: carrying its marker, with
/// an id our inserts may have made (a person's copy keeps the marker on Google
/// but gets Google's own id; Graph copies lose the `transactionId`).
async fn find_ours_in(
    provider: &dyn Provider,
    target: &Target,
    tenant: &str,
    source: &str,
    booking: &str,
) -> Result<Vec<String>, ProviderError> {
    let found = target
        .find_by_marker(&event::marker(tenant, booking))
        .await?;
    Ok(found
        .into_iter()
        .filter(|id| provider.may_be_ours(tenant, source, booking, id))
        .collect())
}

async fn find_ours(ctx: &Ctx<'_>, booking: &str) -> Result<Vec<String>, ProviderError> {
    find_ours_in(
        ctx.provider.as_ref(),
        &ctx.target,
        &ctx.tenant,
        &ctx.source,
        booking,
    )
    .await
}

/// Deleted or cancelled booking: delete its event if there is one.
async fn remove_event(
    ctx: &Ctx<'_>,
    id: &str,
    rec: &mut ExportRecord,
) -> Result<Outcome, ProviderError> {
    let mut deleted = false;
    if let Some(remote) = rec.remote_id.clone() {
        ctx.target.delete(&remote).await?;
        deleted = true;
    }
    if rec.create_pending {
        // A create may have landed before a crash: find it by its marker.
        for found in find_ours(ctx, id).await? {
            ctx.target.delete(&found).await?;
            deleted = true;
        }
    }
    let was_exported = rec.remote_id.is_some() || rec.create_pending;
    rec.remote_id = None;
    rec.create_pending = false;
    rec.exported_etag = None;
    rec.exported_span = None;
    rec.external = None;
    if was_exported {
        rec.generation = rec.generation.wrapping_add(1);
    }
    Ok(if deleted {
        Outcome::Deleted
    } else {
        Outcome::Unchanged
    })
}

// ---------------------------------------------------------------------------------------
// Import side: our own events coming back, and external moves

impl Exporter {
    /// Marks the items of a series that are our own exported events, so rendering
    /// makes them transparent (they must not count twice, nor conflict with their
    /// own booking). The provider reads its marks (Google's marker property,
    /// Graph's `transactionId`); otherwise the stored event id says it.
    ///
    /// A second event with one of our markers is one of two things:
    /// - our own stray insert (an insert that went through after its answer was
    ///   lost, once the booking had been exported as another event): it has an
    ///   id of our scheme for that booking and this source (Google), or our
    ///   `transactionId` (Graph). It is marked ours (so it blocks nothing) and
    ///   listed in `strays`, to be deleted;
    /// - a person's copy (a duplicated event in Google keeps its extended
    ///   properties but gets Google's own id): their event, blocking time like
    ///   any other, left alone.
    fn recognise_items(
        &self,
        tenant: &str,
        source: &Source,
        items: &mut [Value],
    ) -> Result<Recognised, StoreError> {
        let mut found = Recognised::default();
        let Some(provider) = source
            .remote
            .as_ref()
            .and_then(|r| self.connections.provider(r.kind).ok())
        else {
            return Ok(found);
        };
        for item in items.iter_mut() {
            let Some(id) = item.get("id").and_then(Value::as_str).map(str::to_owned) else {
                continue;
            };
            let claimed = provider.claimed_booking(tenant, &source.id, item);
            let booking = match claimed {
                // With no event id stored yet (a create whose answer was lost) the
                // marker is all there is: ours.
                Some(b) => {
                    let exported_as = self
                        .store
                        .export_record(tenant, &source.id, &b)?
                        .and_then(|r| r.remote_id);
                    if exported_as.is_some_and(|e| e != id) {
                        if provider.inserted_by_us(tenant, &source.id, &b, item) {
                            provider.mark_ours(item, &event::marker(tenant, &b));
                            found.strays.push((b, id));
                        } else {
                            // Someone's copy: it blocks time like any of their events.
                            provider.unmark(item);
                        }
                        continue;
                    }
                    Some(b)
                }
                None => self.store.exported_booking(tenant, &source.id, &id)?,
            };
            let Some(booking) = booking else { continue };
            provider.mark_ours(item, &event::marker(tenant, &booking));
            found.booking = Some(booking);
        }
        Ok(found)
    }
}

impl Exporter {
    /// Deletes the stray events [`ImportObserver::recognise`] found, unless one became its
    /// booking's event meanwhile. Failures are only logged: the next import
    /// finds the stray again.
    async fn delete_strays(
        &self,
        tenant: &TenantConfig,
        source: &Source,
        strays: &[(String, String)],
    ) {
        let (t, s) = (tenant.id.as_str(), source.id.as_str());
        // No delivery of the source meanwhile: it could be adopting one of them.
        let _quiet = self.quiesce(t, s).await;
        let target = match target_for(&self.connections, t, source) {
            Ok((_, target)) => target,
            Err(e) => {
                warn!(tenant = t, source = s, error = %e, "stray exported events not removed");
                return;
            }
        };
        for (booking, id) in strays {
            let current = self
                .store
                .export_record(t, s, booking)
                .ok()
                .flatten()
                .and_then(|r| r.remote_id);
            if current.is_none_or(|c| c == *id) {
                continue;
            }
            match target.delete(id).await {
                Ok(()) => {
                    info!(tenant = t, source = s, booking = %booking, "stray copy of an exported event deleted")
                }
                Err(e) => {
                    warn!(tenant = t, source = s, booking = %booking, error = %e, "stray exported event not deleted")
                }
            }
        }
    }

    /// After an imported series that shows one of our bookings was stored: if the
    /// event's time is neither the booking's nor what we last exported, someone
    /// moved it in the external calendar. The move is recorded on the booking's
    /// export record (shown with the booking) and, when the tenant accepts external
    /// moves, applied to the booking with the usual conflict check.
    async fn check_external_move(
        &self,
        tenant: &TenantConfig,
        source: &str,
        series: &str,
        booking_id: &str,
    ) -> Result<(), ExportError> {
        let (t, s) = (tenant.id.as_str(), source);
        // The export record is read, changed and written back here and by a
        // delivery pass: without the source's lock a pass started by the
        // move below can write back the record it read before, losing the
        // move's report.
        let lock = self.lock_for(t, s);
        let Ok(_guard) = tokio::time::timeout(MOVE_CHECK_WAIT, lock.lock()).await else {
            warn!(
                tenant = t,
                source = s,
                booking = booking_id,
                "external move check left to the next import: the source is busy"
            );
            return Ok(());
        };
        let Some(object) = self.store.object(t, s, series)? else {
            return Ok(());
        };
        // A single event: one occurrence is its time.
        let [occurrence] = object.occurrences.as_slice() else {
            return Ok(());
        };
        let remote_span = occurrence.span;
        let Some(booking) = self.store.booking(t, booking_id)? else {
            return Ok(());
        };
        if booking.status == BookingStatus::Cancelled {
            return Ok(());
        }
        let Some(mut rec) = self.store.export_record(t, s, booking_id)? else {
            return Ok(());
        };
        let in_step = remote_span == booking.span() || Some(remote_span) == rec.exported_span;
        if in_step {
            if rec.external.is_some() && remote_span == booking.span() {
                rec.external = None;
                self.store.put_export_record(t, s, booking_id, Some(&rec))?;
            }
            return Ok(());
        }
        if rec.external.as_ref().is_some_and(|x| x.span == remote_span) {
            return Ok(()); // already seen
        }
        let (outcome, detail) = if tenant.accept_external_moves {
            match self.move_booking(tenant, &booking, remote_span).await {
                Ok(()) => ("applied", None),
                Err(reason) => ("rejected", Some(reason)),
            }
        } else {
            ("reported", None)
        };
        info!(
            tenant = t,
            source = s,
            booking = booking_id,
            outcome,
            "exported event moved externally"
        );
        // Re-read: applying the move changed the booking (and nothing else may have).
        let mut rec = self.store.export_record(t, s, booking_id)?.unwrap_or(rec);
        if outcome == "applied" {
            rec.exported_span = Some(remote_span);
        }
        rec.external = Some(ExternalChange {
            detected: Utc::now(),
            span: remote_span,
            outcome: outcome.into(),
            detail,
        });
        self.store.put_export_record(t, s, booking_id, Some(&rec))?;
        Ok(())
    }

    /// Moves a booking to `span`, keeping its kind of time; the reason when refused.
    async fn move_booking(
        &self,
        tenant: &TenantConfig,
        booking: &Booking,
        span: Span,
    ) -> Result<(), String> {
        let at = |ms: i64| {
            DateTime::<Utc>::from_timestamp_millis(ms)
                .map(|t| t.with_timezone(&booking.time_zone))
                .ok_or_else(|| "the external time is out of range".to_owned())
        };
        let (start, end) = (at(span.start)?, at(span.end)?);
        let (start, end) = match booking.time {
            BookingTime::Timed { .. } => (start.to_rfc3339(), end.to_rfc3339()),
            BookingTime::AllDay { .. } => (
                start.date_naive().format("%Y-%m-%d").to_string(),
                end.date_naive().format("%Y-%m-%d").to_string(),
            ),
        };
        let patch = BookingPatch {
            start: Some(start),
            end: Some(end),
            ..BookingPatch::default()
        };
        match self
            .bookings
            .update(
                tenant,
                &booking.id,
                &patch,
                UpdateMode::Merge,
                Some(&booking.etag),
                ConflictPolicy::Refuse,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(BookingError::Conflict(found)) => Err(format!(
                "the new time overlaps {} other busy entr{}; the booking keeps its time",
                found.len(),
                if found.len() == 1 { "y" } else { "ies" }
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Disconnect, manual runs, what the API shows

impl Exporter {
    /// Deletes every event exported to the source (`DELETE …/sources/{id}?purge=true`),
    /// then keeps deliveries out until the returned guard is dropped (the caller
    /// removes the source meanwhile). Stops at the first failure, leaving the rest
    /// recorded so the purge can be retried.
    pub async fn purge(
        &self,
        tenant: &TenantConfig,
        source: &Source,
    ) -> Result<(usize, tokio::sync::OwnedMutexGuard<()>), ExportError> {
        let guard = self.quiesce(&tenant.id, &source.id).await;
        let (t, s) = (tenant.id.as_str(), source.id.as_str());
        let records = self.store.export_records(t, s)?;
        if records
            .iter()
            .all(|(_, r)| r.remote_id.is_none() && !r.create_pending)
        {
            return Ok((0, guard));
        }
        let (provider, target) = target_for(&self.connections, t, source)?;
        let mut removed = 0;
        for (booking, mut rec) in records {
            if let Some(remote) = rec.remote_id.take() {
                target.delete(&remote).await?;
                removed += 1;
            }
            if rec.create_pending {
                for found in find_ours_in(provider.as_ref(), &target, t, s, &booking).await? {
                    target.delete(&found).await?;
                    removed += 1;
                }
            }
            self.store.put_export_record(t, s, &booking, None)?;
        }
        self.store.flush().await?;
        Ok((removed, guard))
    }

    /// `POST …/sources/{id}/sync` of an exporting source: a delivery pass now, parked
    /// bookings included; its log entry.
    pub async fn sync_now(
        &self,
        tenant: &TenantConfig,
        source_id: &str,
    ) -> Result<SyncLog, ExportError> {
        let started = Utc::now();
        let clock = std::time::Instant::now();
        let pass = self.deliver(tenant, source_id, true).await?;
        let error = pass.error.clone().or_else(|| pass.parked_error.clone());
        Ok(pass.log(started, clock, error))
    }
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A span as millisecond-precision RFC 3339 instants.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportedSpan {
    pub end: Option<String>,
    pub start: Option<String>,
}

impl From<Span> for ExportedSpan {
    fn from(span: Span) -> Self {
        let at = |ms| DateTime::<Utc>::from_timestamp_millis(ms).map(|t| ts(&t));
        ExportedSpan {
            end: at(span.end),
            start: at(span.start),
        }
    }
}

/// How a booking stands with one exporting source (a booking's `exports`).
/// Fields are in alphabetical order: the order the API has always written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BookingExport {
    pub error: Option<String>,
    pub event_id: Option<String>,
    pub external_change: Option<ExternalChangeView>,
    pub source: String,
    /// `exported`, `pending`, `removed` or `failed`.
    pub state: &'static str,
}

/// A move of an exported event made in the external calendar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExternalChangeView {
    pub detail: Option<String>,
    pub detected: String,
    pub external_time: ExportedSpan,
    /// `applied`, `rejected` or `reported`.
    pub outcome: String,
}

/// The `export` part of an exporting source's status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportStatus {
    pub consecutive_failures: u32,
    pub delivered: u64,
    pub failed_bookings: usize,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub last_success: Option<String>,
    pub pending_changes: usize,
    pub privacy: Option<crate::model::ExportPrivacy>,
    pub retry_at: Option<String>,
}

impl Exporter {
    /// How a booking stands with each exporting source it is for ([`is_for`]),
    /// and with any other that still holds an event of it (`pending`: being
    /// removed, after the booking left the source's resource).
    pub fn booking_exports(
        &self,
        tenant: &TenantConfig,
        booking: &Booking,
    ) -> Result<Vec<BookingExport>, StoreError> {
        let mut out = Vec::new();
        for source in self.store.sources(&tenant.id)? {
            if !source
                .remote
                .as_ref()
                .is_some_and(|r| r.direction.exports())
            {
                continue;
            }
            let rec = self
                .store
                .export_record(&tenant.id, &source.id, &booking.id)?
                .unwrap_or_default();
            let holds_event = rec.remote_id.is_some() || rec.create_pending;
            let state = if !is_for(tenant, &source, booking) {
                if !holds_event {
                    continue;
                }
                "pending"
            } else if rec.parked.is_some() {
                "failed"
            } else if booking.status == BookingStatus::Cancelled {
                if rec.remote_id.is_some() {
                    "pending"
                } else {
                    "removed"
                }
            } else if rec.remote_id.is_some()
                && rec.exported_etag.as_deref() == Some(booking.etag.as_str())
            {
                "exported"
            } else {
                "pending"
            };
            out.push(BookingExport {
                error: rec.parked.as_ref().map(|p| p.error.clone()),
                event_id: rec.remote_id,
                external_change: rec.external.map(|x| ExternalChangeView {
                    detail: x.detail,
                    detected: ts(&x.detected),
                    external_time: x.span.into(),
                    outcome: x.outcome,
                }),
                source: source.id,
                state,
            });
        }
        Ok(out)
    }

    /// The `export` part of a source's status; `None` when it does not export.
    pub fn source_status(
        &self,
        tenant: &str,
        source: &Source,
    ) -> Result<Option<ExportStatus>, StoreError> {
        let Some(remote) = source.remote.as_ref().filter(|r| r.direction.exports()) else {
            return Ok(None);
        };
        let state = self.store.export_state(tenant, &source.id)?;
        let pending_changes = self
            .store
            .booking_changes_after(tenant, state.cursor, usize::MAX)?
            .len();
        Ok(Some(ExportStatus {
            consecutive_failures: state.consecutive_failures,
            delivered: state.delivered,
            failed_bookings: self.store.export_parked_count(tenant, &source.id)?,
            last_error: state.last_error,
            last_error_at: state.last_error_at.as_ref().map(ts),
            last_success: state.last_success.as_ref().map(ts),
            pending_changes,
            privacy: Some(remote.privacy),
            retry_at: state.retry_at.as_ref().map(ts),
        }))
    }
}

/// What sync tells the exporter about the items it imports.
impl ImportObserver for Exporter {
    fn recognise(
        &self,
        tenant: &str,
        source: &Source,
        items: &mut [Value],
    ) -> Result<Recognised, StoreError> {
        self.recognise_items(tenant, source, items)
    }

    fn remove_strays<'a>(
        &'a self,
        tenant: &'a TenantConfig,
        source: &'a Source,
        strays: &'a [(String, String)],
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.delete_strays(tenant, source, strays))
    }

    fn observe_import<'a>(
        &'a self,
        tenant: &'a TenantConfig,
        source: &'a str,
        series: &'a str,
        booking: &'a str,
    ) -> BoxFuture<'a, Result<(), Box<dyn std::error::Error + Send + Sync>>> {
        Box::pin(async move {
            self.check_external_move(tenant, source, series, booking)
                .await
                .map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        for _ in 0..50 {
            assert!(backoff(1) <= FIRST_BACKOFF);
            assert!(backoff(3) <= FIRST_BACKOFF * 4);
            assert!(backoff(30) <= MAX_BACKOFF);
            assert!(backoff(30) >= MAX_BACKOFF / 4);
        }
    }
}
