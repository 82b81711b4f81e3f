//! Conflicts that appear after a booking was made: calendar time (an imported
//! Google/Outlook event, a staff calendar entry) that now overlaps it.
//!
//! Detection runs whenever a calendar object is written or re-expanded, and when a
//! booking changes its time, its resources or whether it blocks (a move allowed
//! over busy time is recorded then); there is one record per (booking, object)
//! pair however many occurrences of the object overlap the booking (it counts them
//! and keeps the first overlapping span). A resource's own calendar conflicts only
//! with the bookings that take that resource (`can_conflict`). A conflict is
//! resolved when the overlap goes away (the event moves or goes, the booking moves,
//! stops taking the resource or is cancelled). The conflicts one write finds are
//! logged in one line and POSTed to the tenant's webhook together,
//! [`WEBHOOK_BATCH`] per call, with an HMAC-SHA256 signature, retried with backoff;
//! undelivered ones are retried after a restart, since the conflict records (which
//! hold the delivery state) are durable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::{Booking, BusyKind, CalendarObject, Conflict, Span, WebhookState};
use crate::settings::{TenantConfig, WebhookConfig};
use crate::store::{Store, StoreError};

/// Delays before each webhook attempt; after the last one the conflict stays
/// undelivered (and is listed so) until the next restart.
const WEBHOOK_BACKOFF: [Duration; 6] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
];
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Most conflicts one webhook call carries: a write that overlaps many bookings
/// makes a few calls, not one per booking.
pub const WEBHOOK_BATCH: usize = 100;
/// Booking ids named in the one log line about a write's new conflicts.
const LOGGED_BOOKINGS: usize = 5;
/// Header carrying `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "x-calgate-signature";

/// Finds, resolves and announces conflicts.
pub struct ConflictTracker {
    store: Store,
    http: reqwest::Client,
    /// Webhook deliveries under way (some wait minutes between attempts); ended
    /// by [`ConflictTracker::stop_deliveries`] so a stopped gateway lets go of its
    /// store. Undelivered conflicts are sent again at the next start.
    deliveries: std::sync::Mutex<tokio::task::JoinSet<()>>,
}

/// The span from the first blocking occurrence's start to the last one's end.
fn blocking_envelope(object: &CalendarObject) -> Option<Span> {
    blocking(object)
        .map(|b| b.span)
        .reduce(|a, b| Span::new(a.start.min(b.start), a.end.max(b.end)))
}

/// The id of the one record of a (booking, object) pair. (Records written before
/// that had the overlap's start in the digest: one per occurrence.)
fn conflict_id(tenant: &str, booking: &str, source: &str, object: &str) -> String {
    let digest = Sha256::digest(format!("{tenant}\0{booking}\0{source}\0{object}"));
    hex::encode(&digest[..12])
}

/// Whether calendar time of a source that belongs to `owner` (None: the whole
/// tenant's) can conflict with a booking taking `resources`: a resource's
/// calendar only with the bookings that take it (tenant-wide bookings, stored
/// before resources, take every one), any other with every booking. On a
/// tenant without declared resources every calendar conflicts with every
/// booking, as the booking check sees it.
fn can_conflict(tenant: &TenantConfig, owner: Option<&str>, resources: &[String]) -> bool {
    match owner {
        Some(owner) if tenant.declares_resources() => crate::model::takes(resources, owner),
        _ => true,
    }
}

/// A conflict found now between a booking and an object, not recorded before.
fn new_conflict(
    tenant: &TenantConfig,
    booking: &str,
    source: &str,
    object_id: &str,
    overlap: &Overlap,
    now: chrono::DateTime<Utc>,
) -> Conflict {
    Conflict {
        id: conflict_id(&tenant.id, booking, source, object_id),
        booking_id: booking.to_owned(),
        source: source.to_owned(),
        object_id: object_id.to_owned(),
        span: overlap.span,
        occurrences: overlap.occurrences,
        kind: overlap.kind,
        detected: now,
        acknowledged: None,
        resolved: None,
        webhook: WebhookState::default(),
    }
}

/// How an object overlaps one booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Overlap {
    /// The first overlapping occurrence's overlap, and how it takes time.
    span: Span,
    kind: BusyKind,
    occurrences: u32,
}

impl Overlap {
    fn new(span: Span, kind: BusyKind) -> Self {
        Overlap {
            span,
            kind,
            occurrences: 1,
        }
    }

    /// Counts one more overlapping occurrence, keeping the earliest.
    fn add(&mut self, span: Span, kind: BusyKind) {
        self.occurrences = self.occurrences.saturating_add(1);
        if span.start < self.span.start {
            self.span = span;
            self.kind = kind;
        }
    }

    /// How `object` overlaps `booking`, if it does.
    fn of(object: &CalendarObject, booking: Span) -> Option<Overlap> {
        let mut found: Option<Overlap> = None;
        for b in blocking(object).filter(|b| b.span.overlaps(&booking)) {
            let span = intersection(b.span, booking);
            match &mut found {
                Some(o) => o.add(span, b.kind),
                None => found = Some(Overlap::new(span, b.kind)),
            }
        }
        found
    }

    /// Whether `c` already says this.
    fn is_recorded(&self, c: &Conflict) -> bool {
        c.span == self.span && c.kind == self.kind && c.occurrences == self.occurrences
    }

    fn record(&self, c: &mut Conflict) {
        c.span = self.span;
        c.kind = self.kind;
        c.occurrences = self.occurrences;
    }
}

fn blocking(object: &CalendarObject) -> impl Iterator<Item = &crate::model::BusySpan> {
    object
        .occurrences
        .iter()
        .filter(|b| b.kind != BusyKind::Free)
}

fn intersection(a: Span, b: Span) -> Span {
    Span::new(a.start.max(b.start), a.end.min(b.end))
}

/// What reconciling one object changes: records to write, records to drop
/// (per-occurrence ones folded into their pair's record), and the new ones.
#[derive(Default)]
struct Changes {
    put: Vec<Conflict>,
    remove: Vec<Conflict>,
    fresh: Vec<Conflict>,
}

impl Changes {
    fn extend(&mut self, other: Changes) {
        self.put.extend(other.put);
        self.remove.extend(other.remove);
        self.fresh.extend(other.fresh);
    }
}

impl ConflictTracker {
    pub fn new(store: Store) -> Arc<Self> {
        calgate_providers::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .user_agent(concat!("calgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Arc::new(ConflictTracker {
            store,
            http,
            deliveries: std::sync::Mutex::new(tokio::task::JoinSet::new()),
        })
    }

    /// Records the bookings `object` now overlaps and resolves the ones it no longer
    /// does; announces new ones. `object` None: the object was deleted.
    pub async fn object_changed(
        self: &Arc<Self>,
        tenant: &TenantConfig,
        source: &str,
        object_id: &str,
        object: Option<&CalendarObject>,
    ) -> Result<(), StoreError> {
        // One index query over the object's whole extent, then matching in memory:
        // a recurring object has hundreds of occurrences.
        let bookings = match object.and_then(blocking_envelope) {
            Some(span) => self.blocked_by(tenant, source, span)?,
            None => Vec::new(),
        };
        let changes = self.reconcile(tenant, source, object_id, object, &bookings)?;
        self.apply(tenant, source, changes).await
    }

    /// The blocking bookings overlapping `span` that a calendar of `source`
    /// can conflict with, ordered by start: all of them for a tenant-wide
    /// source; for a resource's own calendar, the bookings taking that
    /// resource and the tenant-wide ones (stored before resources). One read
    /// of the bookings' time index, which says what each takes.
    fn blocked_by(
        &self,
        tenant: &TenantConfig,
        source: &str,
        span: Span,
    ) -> Result<Vec<crate::store::BusyEntry>, StoreError> {
        let found = self.store.booking_index(&tenant.id, span)?;
        let owner = match found.is_empty() || !tenant.declares_resources() {
            true => None,
            false => self
                .store
                .source(&tenant.id, source)?
                .and_then(|s| s.resource),
        };
        Ok(found
            .iter()
            .filter(|b| b.kind != BusyKind::Free)
            .filter(|b| can_conflict(tenant, owner.as_deref(), &b.resources))
            .map(|b| b.busy_entry(None))
            .collect())
    }

    /// Stores what reconciling found (durable when this returns), then logs and
    /// announces the new conflicts.
    async fn apply(
        self: &Arc<Self>,
        tenant: &TenantConfig,
        source: &str,
        changes: Changes,
    ) -> Result<(), StoreError> {
        self.store
            .replace_conflicts(&tenant.id, &changes.put, &changes.remove)
            .await?;
        self.announce(tenant, Some(source), changes.fresh);
        Ok(())
    }

    /// [`ConflictTracker::object_changed`] for a batch of objects of one source
    /// that were just written (an import): one bookings query over the whole
    /// batch's extent and one read of the source's open conflicts, instead of a
    /// query per object; an object that overlaps no booking and had no open
    /// conflict needs nothing more. Conflict records of the batch are stored
    /// together (durable when this returns), then announced.
    pub async fn objects_changed(
        self: &Arc<Self>,
        tenant: &TenantConfig,
        source: &str,
        objects: &[&CalendarObject],
    ) -> Result<(), StoreError> {
        let envelope = objects
            .iter()
            .filter_map(|o| blocking_envelope(o))
            .reduce(|a, b| Span::new(a.start.min(b.start), a.end.max(b.end)));
        let bookings = match envelope {
            Some(span) => self.blocked_by(tenant, source, span)?,
            None => Vec::new(),
        };
        let open = self.store.objects_in_open_conflicts(&tenant.id, source)?;
        if bookings.is_empty() && open.is_empty() {
            return Ok(());
        }
        let mut changes = Changes::default();
        for object in objects {
            changes.extend(self.reconcile(tenant, source, &object.id, Some(object), &bookings)?);
        }
        self.apply(tenant, source, changes).await
    }

    /// The conflict records `object` changes, given (at least) the bookings that
    /// overlap its extent, ordered by start.
    fn reconcile(
        &self,
        tenant: &TenantConfig,
        source: &str,
        object_id: &str,
        object: Option<&CalendarObject>,
        bookings: &[crate::store::BusyEntry],
    ) -> Result<Changes, StoreError> {
        // `bookings` is ordered by start: only those starting in
        // [b.start - longest, b.end) can overlap occurrence b.
        let longest = bookings
            .iter()
            .map(|k| k.span.end - k.span.start)
            .max()
            .unwrap_or(0);
        // One entry per booking, however many occurrences overlap it.
        let mut current: BTreeMap<&str, Overlap> = BTreeMap::new();
        for b in object.into_iter().flat_map(blocking) {
            let from = bookings.partition_point(|k| k.span.start < b.span.start - longest);
            let to = bookings.partition_point(|k| k.span.start < b.span.end);
            for booking in bookings[from..to.max(from)]
                .iter()
                .filter(|k| k.span.overlaps(&b.span))
            {
                let span = intersection(booking.span, b.span);
                current
                    .entry(booking.object.as_str())
                    .and_modify(|o| o.add(span, b.kind))
                    .or_insert_with(|| Overlap::new(span, b.kind));
            }
        }
        let known = self.store.object_conflicts(&tenant.id, source, object_id)?;
        let now = Utc::now();
        let mut changes = Changes::default();
        // Gone: resolved.
        for mut c in known
            .iter()
            .filter(|c| c.resolved.is_none())
            .filter(|c| !current.contains_key(c.booking_id.as_str()))
            .cloned()
        {
            c.resolved = Some(now);
            changes.put.push(c);
        }
        for (booking, overlap) in current {
            let id = conflict_id(&tenant.id, booking, source, object_id);
            // Open per-occurrence records of this pair, from before one per pair.
            let legacy: Vec<&Conflict> = known
                .iter()
                .filter(|c| c.booking_id == booking && c.id != id && c.resolved.is_none())
                .collect();
            let open = known
                .iter()
                .find(|c| c.id == id)
                .filter(|c| c.resolved.is_none());
            match (open, fold(&legacy, &id)) {
                // Still open: only what it says may change.
                (Some(c), _) => {
                    changes.remove.extend(legacy.into_iter().cloned());
                    if !overlap.is_recorded(c) {
                        let mut c = c.clone();
                        overlap.record(&mut c);
                        changes.put.push(c);
                    }
                }
                // Already known (and announced) per occurrence: one record now.
                (None, Some(mut c)) => {
                    overlap.record(&mut c);
                    changes.put.push(c);
                    changes.remove.extend(legacy.into_iter().cloned());
                }
                // New (or back after being resolved): open.
                (None, None) => {
                    let c = new_conflict(tenant, booking, source, object_id, &overlap, now);
                    changes.fresh.push(c.clone());
                    changes.put.push(c);
                }
            }
        }
        Ok(changes)
    }

    /// Looks at a booking's conflicts again after its time, its resources or
    /// whether it blocks changed (`booking`: as stored now; None: deleted):
    /// open ones it no longer overlaps, or whose calendar belongs to a resource
    /// it no longer takes, are resolved; calendar time it now overlaps is
    /// recorded and announced, as an object's write would.
    pub async fn booking_changed(
        self: &Arc<Self>,
        tenant: &TenantConfig,
        booking_id: &str,
        booking: Option<&Booking>,
    ) -> Result<(), StoreError> {
        let blocking = booking.filter(|b| b.busy_kind() != BusyKind::Free);
        let current = match blocking {
            Some(b) => self.overlaps(tenant, b)?,
            None => BTreeMap::new(),
        };
        let now = Utc::now();
        let mut changes = Changes::default();
        // Pairs with an open record (per-occurrence ones included: they stay as
        // written until the object's next write folds them).
        let mut open = std::collections::HashSet::new();
        for mut c in self.store.conflicts(&tenant.id)? {
            if c.booking_id != booking_id || c.resolved.is_some() {
                continue;
            }
            let pair = (c.source.clone(), c.object_id.clone());
            match current.get(&pair) {
                None => {
                    c.resolved = Some(now);
                    changes.put.push(c);
                }
                Some(o) => {
                    let is_pair_record =
                        c.id == conflict_id(&tenant.id, booking_id, &c.source, &c.object_id);
                    if is_pair_record && !o.is_recorded(&c) {
                        o.record(&mut c);
                        changes.put.push(c);
                    }
                    open.insert(pair);
                }
            }
        }
        for ((source, object_id), overlap) in &current {
            if !open.contains(&(source.clone(), object_id.clone())) {
                let c = new_conflict(tenant, booking_id, source, object_id, overlap, now);
                changes.fresh.push(c.clone());
                changes.put.push(c);
            }
        }
        if changes.put.is_empty() {
            return Ok(());
        }
        self.store.put_conflicts(&tenant.id, &changes.put).await?;
        self.announce(tenant, None, changes.fresh);
        Ok(())
    }

    /// How each calendar object that can conflict with `booking` overlaps it,
    /// by (source, object): the busy index finds them, their occurrences say how
    /// (as [`ConflictTracker::reconcile`] counts them from the object's side).
    fn overlaps(
        &self,
        tenant: &TenantConfig,
        booking: &Booking,
    ) -> Result<BTreeMap<(String, String), Overlap>, StoreError> {
        let span = booking.span();
        let owners: std::collections::HashMap<String, Option<String>> =
            if tenant.declares_resources() {
                self.store
                    .sources(&tenant.id)?
                    .into_iter()
                    .map(|s| (s.id, s.resource))
                    .collect()
            } else {
                Default::default()
            };
        let wanted = |source: &str| {
            let owner = owners.get(source).and_then(Option::as_deref);
            can_conflict(tenant, owner, &booking.resources)
        };
        let pairs: std::collections::BTreeSet<(String, String)> = self
            .store
            .object_busy_in(&tenant.id, span, &wanted)?
            .into_iter()
            .map(|e| (e.source, e.object))
            .collect();
        let mut found = BTreeMap::new();
        for (source, object_id) in pairs {
            let overlap = self
                .store
                .object(&tenant.id, &source, &object_id)?
                .and_then(|object| Overlap::of(&object, span));
            if let Some(overlap) = overlap {
                found.insert((source, object_id), overlap);
            }
        }
        Ok(found)
    }

    /// Marks a conflict as seen by a person. Returns the updated record.
    pub async fn acknowledge(
        &self,
        tenant: &TenantConfig,
        id: &str,
    ) -> Result<Option<Conflict>, StoreError> {
        let Some(mut c) = self.store.conflict(&tenant.id, id)? else {
            return Ok(None);
        };
        if c.acknowledged.is_none() {
            c.acknowledged = Some(Utc::now());
            self.store
                .put_conflicts(&tenant.id, std::slice::from_ref(&c))
                .await?;
        }
        Ok(Some(c))
    }

    /// Retries deliveries a restart interrupted, [`WEBHOOK_BATCH`] per call.
    pub fn redeliver_pending(self: &Arc<Self>, tenants: &[TenantConfig]) {
        for tenant in tenants.iter().filter(|t| t.webhook.is_some()) {
            match self.store.conflicts(&tenant.id) {
                Ok(all) => {
                    let pending: Vec<_> = all
                        .into_iter()
                        .filter(|c| c.webhook.delivered.is_none() && c.resolved.is_none())
                        .collect();
                    self.send(tenant, pending);
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant.id, error = %e, "pending webhooks not read")
                }
            }
        }
    }

    /// One log line for the new conflicts of a write (of an object of `source`,
    /// or of a booking: None), then the webhook calls.
    fn announce(
        self: &Arc<Self>,
        tenant: &TenantConfig,
        source: Option<&str>,
        fresh: Vec<Conflict>,
    ) {
        if fresh.is_empty() {
            return;
        }
        let bookings: Vec<&str> = fresh
            .iter()
            .take(LOGGED_BOOKINGS)
            .map(|c| c.booking_id.as_str())
            .collect();
        match source {
            Some(source) => {
                tracing::info!(tenant = %tenant.id, source, new = fresh.len(), ?bookings, "booking conflicts detected")
            }
            None => {
                tracing::info!(tenant = %tenant.id, new = fresh.len(), ?bookings, "booking conflicts detected")
            }
        }
        self.send(tenant, fresh);
    }

    /// Delivers `conflicts` to the tenant's webhook, if it has one, in batches.
    fn send(self: &Arc<Self>, tenant: &TenantConfig, conflicts: Vec<Conflict>) {
        let Some(hook) = tenant.webhook.clone() else {
            return;
        };
        let Ok(mut deliveries) = self.deliveries.lock() else {
            return; // a delivery task panicked while spawning; the next start resends
        };
        // Finished deliveries are reaped here, so the set holds only live ones.
        while deliveries.try_join_next().is_some() {}
        for batch in conflicts.chunks(WEBHOOK_BATCH) {
            let this = Arc::clone(self);
            let (tenant_id, hook, batch) = (tenant.id.clone(), hook.clone(), batch.to_vec());
            deliveries.spawn(async move { this.deliver(&tenant_id, &hook, batch).await });
        }
    }

    /// Ends the webhook deliveries under way (at shutdown). What they had not
    /// delivered stays pending in the store and is sent after the next start.
    pub fn stop_deliveries(&self) {
        if let Ok(mut deliveries) = self.deliveries.lock() {
            deliveries.abort_all();
        }
    }

    async fn deliver(&self, tenant: &str, hook: &WebhookConfig, batch: Vec<Conflict>) {
        let Some(first) = batch.first() else {
            return;
        };
        let body = WebhookBody {
            kind: "booking.conflict",
            tenant,
            conflict: ConflictView::from(first),
            conflicts: batch.iter().map(ConflictView::from).collect(),
        };
        let Ok(body) = serde_json::to_string(&body) else {
            return;
        };
        // Records of one batch share their delivery state from here on; a batch
        // re-formed after a restart goes on from its least-tried record.
        let mut state = WebhookState {
            attempts: batch.iter().map(|c| c.webhook.attempts).min().unwrap_or(0),
            ..WebhookState::default()
        };
        for delay in WEBHOOK_BACKOFF.iter().skip(state.attempts as usize) {
            tokio::time::sleep(*delay).await;
            let timestamp = Utc::now().timestamp();
            let result = self
                .http
                .post(&hook.url)
                .header("content-type", "application/json")
                .header(SIGNATURE_HEADER, signature(&hook.secret, timestamp, &body))
                .body(body.clone())
                .send()
                .await;
            state.attempts += 1;
            match result {
                Ok(resp) if resp.status().is_success() => {
                    state.delivered = Some(Utc::now());
                    state.last_error = None;
                }
                Ok(resp) => state.last_error = Some(format!("HTTP {}", resp.status())),
                Err(e) => state.last_error = Some(e.without_url().to_string()),
            }
            self.save_delivery(tenant, &batch, &state).await;
            if state.delivered.is_some() {
                return;
            }
            tracing::warn!(tenant, conflicts = batch.len(), first = %first.id, error = ?state.last_error, "webhook delivery failed");
        }
    }

    /// Records `state` on the batch's records, keeping acknowledgements made
    /// meanwhile (only the delivery state is ours); records folded away are skipped.
    async fn save_delivery(&self, tenant: &str, batch: &[Conflict], state: &WebhookState) {
        let mut stored = Vec::with_capacity(batch.len());
        for c in batch {
            match self
                .store
                .conflict_of(tenant, &c.source, &c.object_id, &c.id)
            {
                Ok(Some(mut s)) => {
                    s.webhook = state.clone();
                    stored.push(s);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "webhook state not read"),
            }
        }
        if let Err(e) = self.store.put_conflicts(tenant, &stored).await {
            tracing::warn!(error = %e, "webhook state not saved");
        }
    }
}

/// One record for a pair that has several per-occurrence ones: the earliest
/// detection, acknowledged only if every one was, announced if any was.
fn fold(legacy: &[&Conflict], id: &str) -> Option<Conflict> {
    let mut c = (*legacy.iter().min_by_key(|c| c.detected)?).clone();
    c.id = id.to_owned();
    c.acknowledged = legacy
        .iter()
        .map(|c| c.acknowledged)
        .collect::<Option<Vec<_>>>()
        .and_then(|all| all.into_iter().max());
    if let Some(delivered) = legacy.iter().find(|c| c.webhook.delivered.is_some()) {
        c.webhook = delivered.webhook.clone();
    }
    Some(c)
}

/// `t=<unix>,v1=<hex>`: HMAC-SHA256 over `"<t>.<body>"`, as Stripe-style receivers
/// verify (the timestamp lets them refuse replays).
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// A conflict in its wire shape: as the API lists it and the webhook sends it.
#[derive(Debug, Serialize)]
pub struct ConflictView<'a> {
    pub acknowledged: Option<String>,
    pub booking_id: &'a str,
    pub detected: String,
    pub end: Option<String>,
    pub id: &'a str,
    pub kind: &'static str,
    pub object_id: &'a str,
    pub occurrences: u32,
    pub resolved: Option<String>,
    pub source: &'a str,
    pub start: Option<String>,
    pub webhook: WebhookView<'a>,
}

/// Where a conflict's webhook delivery stands.
#[derive(Debug, Serialize)]
pub struct WebhookView<'a> {
    pub attempts: u32,
    pub delivered: Option<String>,
    pub last_error: Option<&'a str>,
}

impl<'a> From<&'a Conflict> for ConflictView<'a> {
    fn from(c: &'a Conflict) -> Self {
        ConflictView {
            acknowledged: c.acknowledged.as_ref().map(seconds_text),
            booking_id: &c.booking_id,
            detected: seconds_text(&c.detected),
            end: crate::model::instant_rfc3339(c.span.end),
            id: &c.id,
            kind: c.kind.as_str(),
            object_id: &c.object_id,
            occurrences: c.occurrences,
            resolved: c.resolved.as_ref().map(seconds_text),
            source: &c.source,
            start: crate::model::instant_rfc3339(c.span.start),
            webhook: WebhookView {
                attempts: c.webhook.attempts,
                delivered: c.webhook.delivered.as_ref().map(seconds_text),
                last_error: c.webhook.last_error.as_deref(),
            },
        }
    }
}

/// Second-precision UTC text, as conflicts show their dates.
fn seconds_text(t: &chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// What a conflict webhook POSTs.
#[derive(Serialize)]
struct WebhookBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    tenant: &'a str,
    /// The first of the batch, kept for receivers written when a call carried one.
    conflict: ConflictView<'a>,
    conflicts: Vec<ConflictView<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn legacy(id: &str, start: i64, acknowledged: bool, delivered: bool) -> Conflict {
        let at = |s| chrono::DateTime::from_timestamp(s, 0).unwrap_or_default();
        // As written before `occurrences` existed.
        let mut json = json!({
            "id": id, "booking_id": "b", "source": "staff", "object_id": "x.ics",
            "span": Span::new(start, start + 60_000), "kind": "busy",
            "detected": at(start / 1000), "acknowledged": null, "resolved": null,
            "webhook": {"delivered": null, "attempts": 1, "last_error": null},
        });
        if acknowledged {
            json["acknowledged"] = json!(at(1));
        }
        if delivered {
            json["webhook"]["delivered"] = json!(at(2));
        }
        serde_json::from_value(json).expect("old records still decode")
    }

    #[test]
    fn per_occurrence_records_fold_into_one() {
        let a = legacy("a", 120_000, true, false);
        let b = legacy("b", 60_000, false, true);
        assert_eq!(a.occurrences, 1);
        let c = fold(&[&a, &b], "pair").expect("two records");
        assert_eq!((c.id.as_str(), c.detected), ("pair", b.detected));
        assert_eq!(c.acknowledged, None, "b was not acknowledged");
        assert_eq!(c.webhook, b.webhook, "b was announced");
        let both = fold(&[&a, &a], "pair").expect("two records");
        assert_eq!(both.acknowledged, a.acknowledged);
        assert!(fold(&[], "pair").is_none());
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_and_body() {
        // Reference value computed with Python: hmac.new(b"0123456789abcdef",
        // b"1700000000.{}", hashlib.sha256).hexdigest()
        assert_eq!(
            signature("0123456789abcdef", 1_700_000_000, "{}"),
            "t=1700000000,v1=e4f8e2ecae2295b2ddb2f0b5584c8275e226c0ebe9b3b819e70156bb67122e3e"
        );
    }
}
