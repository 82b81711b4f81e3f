//! Persistent storage on sled 0.34 — the only crate that touches sled.
//!
//! A handful of trees shared by all tenants, each keyed by a tenant-scoped composite
//! key (see [`keys`]); sled degrades with many trees, so there is no tree per tenant.
//!
//! | tree          | key                                   | value                     |
//! |---------------|---------------------------------------|---------------------------|
//! | `bookings`    | tenant \0 booking id                  | booking (JSON)            |
//! | `booking_time`| tenant \0 class start id ([`time_index`]) | end, busy kind, resources ([`booking_index`]) |
//! | `changes`     | tenant \0 collection \0 seq           | [`Change`] (JSON)         |
//! | `meta`        | `version` \0 tenant                   | seq, modified             |
//! | `meta`        | `resource-version` \0 tenant \0 resource, `every-resource-version` \0 tenant | seq of the newest change to that resource's bookings ([`Store::resource_version`]) |
//! | `idempotency` | tenant \0 api key \0 idempotency key  | [`IdempotencyRecord`]     |
//! | `sources`     | tenant \0 source                      | [`Source`] (JSON)         |
//! | `objects`     | tenant \0 source \0 object            | [`CalendarObject`] (JSON) |
//! | `busy`        | tenant \0 class start source \0 object \0 n | end, busy kind   |
//! | `conflicts`   | tenant \0 source \0 object \0 id      | [`Conflict`] (JSON)       |
//! | `uids`        | tenant \0 source \0 UID               | object id                 |
//! | `export_map`, `export_remote`, `export_state` | see [`export`] | booking ↔ exported event, delivery cursor |
//! | `inbox`, `schedule_outbox` | see [`inbox`]            | scheduling inboxes and what is on its way to them |
//! | `tenants`     | tenant id                             | provisioned tenant (see [`tenants`]) |
//!
//! Bookings and calendar objects are each indexed by time ([`time_index`]) with
//! their busy kind in the index value (and, for bookings, the resources they
//! take), so free/busy, slots and conflict checks never decode a record.
//!
//! A bookings change records the resources the booking took before and after
//! ([`ResourceMove`]), so each resource's bookings collection reads the one
//! bookings log filtered ([`Change::for_resource`]), and a version per
//! resource moves with it, so a resource's CTag stays put while only other
//! resources' bookings change.
//!
//! Every write is one multi-tree transaction (record, index, change log and version
//! move together) followed by a flush, so a write method that returns `Ok` has
//! reached the disk: callers may acknowledge it. Writes of meetings also store,
//! in that transaction, the scheduling messages they send ([`Outgoing`]).
//! Callers see only domain types.
//!
//! # Store traits and a second backend
//!
//! [`traits`] splits this API into one trait per aggregate ([`BookingStore`],
//! [`ObjectStore`], [`ChangeLog`], [`SourceStore`], [`ExportStore`],
//! [`InboxStore`], [`ConflictStore`], all with [`Durable`]); [`Store`]
//! implements each by delegating to its inherent methods, and [`Backend`] is all
//! of them. Engines can take `Arc<dyn ObjectStore>` or a generic instead of
//! `Store`. The domain records the traits pass around live in
//! `calgate_model::stored` and are re-exported here.
//!
//! A second backend (PostgreSQL) plugs in by implementing every trait for its
//! own type (with the same atomicity: one write method, one transaction) and
//! running the shared suite in its tests, as `tests/conformance_sled.rs` does
//! for sled:
//!
//! ```ignore
//! let ran = calgate_store::conformance::run_all(|| async { PgStore::fresh_schema().await }).await;
//! assert_eq!(ran, calgate_store::conformance::CHECKS.len());
//! ```
//!
//! [`conformance`] is the contract: a behaviour it does not check is not one
//! the engines may rely on across backends.

// The domain types this crate stores, under the paths its modules use.
use calgate_model::model;

mod booking_index;
mod conflicts;
pub mod conformance;
mod export;
mod group_commit;
mod inbox;
pub mod keys;
mod object_record;
mod sync;
mod tenants;
pub mod time_index;
pub mod traits;

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::model::{Booking, BusyKind, BusySpan, CalendarObject, Conflict, Source, Span};
pub use calgate_model::stored::{BusyEntry, IndexedBooking};
pub use conflicts::ConflictPage;
pub use export::{ExportRecord, ExportState, ExternalChange, Parked};
pub use inbox::{Delivery, INBOX_CAPACITY, InboxDelete, InboxItem, Outgoing};
use keys::{decode_i64, decode_u64, encode_i64, join, prefix};
pub use sync::{MirrorWrites, SYNC_LOG_LIMIT};
pub use tenants::ProvisionedTenant;
pub use traits::{
    Backend, BookingStore, ChangeLog, ConflictStore, Durable, ExportStore, InboxStore, ObjectStore,
    PreparedMirrorWrites, SourceStore, StoreFuture, StoreIter, TenantStore,
};

/// Name of the change-log collection holding a tenant's bookings.
pub const BOOKINGS_COLLECTION: &str = "bookings";
/// How long an Idempotency-Key is remembered.
pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the database in {path}: {source} (is another calgate using this data directory?)"
    )]
    Open { path: String, source: sled::Error },
    #[error("storage failure: {0}")]
    Sled(#[from] sled::Error),
    #[error("could not make the write durable: {0}")]
    Durability(String),
    #[error("corrupt record under key {key:?}: {reason}")]
    Corrupt { key: String, reason: String },
}

/// A tenant's position in its change history: bumps with every write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TenantVersion {
    pub seq: u64,
    /// When the last change was committed (ms since the epoch); 0 if never.
    pub modified_ms: i64,
}

/// One entry of a collection's change log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub seq: u64,
    pub id: String,
    pub deleted: bool,
    /// In the bookings log: the resources the booking took before and after
    /// the change, which say whose bookings collections it entered, changed
    /// in or left. None in other logs and in bookings entries written before
    /// they said (those concern every resource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceMove>,
}

/// The resources a booking took before and after one change (see
/// [`crate::model::takes`]: an empty list takes every resource).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceMove {
    /// None: the change created the booking.
    pub before: Option<Vec<String>>,
    /// None: the change deleted it.
    pub after: Option<Vec<String>>,
}

impl ResourceMove {
    /// Whether the booking took `resource` before, and whether it does after.
    fn sides(&self, resource: &str) -> (bool, bool) {
        let takes = |side: &Option<Vec<String>>| {
            side.as_deref()
                .is_some_and(|rs| crate::model::takes(rs, resource))
        };
        (takes(&self.before), takes(&self.after))
    }

    /// The resources whose bookings the change concerns, each once, and
    /// whether it concerns every resource (a side naming none).
    fn concerned(&self) -> (Vec<&str>, bool) {
        let mut named: Vec<&str> = Vec::new();
        let mut every = false;
        for side in [&self.before, &self.after].into_iter().flatten() {
            every |= side.is_empty();
            for r in side {
                if !named.contains(&r.as_str()) {
                    named.push(r);
                }
            }
        }
        (named, every)
    }
}

impl Change {
    /// This change as resource `resource`'s bookings see it: None when the
    /// booking neither took nor takes it; a deletion when it stopped taking
    /// it. An entry that does not say what it took (written before entries
    /// did) is kept as logged.
    pub fn for_resource(&self, resource: &str) -> Option<Change> {
        let Some(moved) = &self.resources else {
            return Some(self.clone());
        };
        match moved.sides(resource) {
            (false, false) => None,
            (_, takes_now) => Some(Change {
                deleted: !takes_now,
                ..self.clone()
            }),
        }
    }
}

/// What a write requires of the current record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    None,
    MustNotExist,
    /// `If-Match: *`: something must be there, whatever its ETag.
    MustExist,
    /// The stored record must carry exactly this ETag.
    EtagIs(String),
}

/// A claim on an Idempotency-Key made together with a create.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub api_key: String,
    pub key: String,
    /// Digest of the request, to tell a retry from a reuse.
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub fingerprint: String,
    pub booking_id: String,
    pub created_ms: i64,
}

#[derive(Debug)]
pub enum WriteOutcome {
    Written(TenantVersion),
    /// The precondition did not hold; here is what is stored now.
    PreconditionFailed(Option<Box<Booking>>),
    /// The Idempotency-Key was used before for the same request: its booking.
    Replayed(String),
    /// The Idempotency-Key was used before for a different request.
    IdempotencyKeyReused,
    /// Another booking of the tenant has this UID: its id.
    UidConflict(String),
}

/// What an object write is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectWrite {
    /// New content: logged for sync, durable on return.
    Change,
    /// The same content re-expanded (the horizon moved): not a change for sync
    /// clients, and synced by the caller after the batch.
    Reindex,
    /// New content in a batch (a provider import): logged for sync, made durable
    /// by the caller's [`Store::flush`] after the batch.
    BatchedChange,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ObjectOutcome {
    Written(TenantVersion),
    /// The precondition did not hold; the stored ETag, if the object exists.
    PreconditionFailed(Option<String>),
    /// Another object of the source has this UID (CalDAV `no-uid-conflict`): its id.
    UidConflict(String),
}

#[derive(Debug)]
pub enum DeleteOutcome {
    Deleted(TenantVersion),
    NotFound,
    PreconditionFailed(Box<Booking>),
}

/// Why a transaction stopped early (internal).
enum Abort {
    Outcome(WriteOutcome),
    Corrupt(Box<StoreError>),
}

type TxResult<T> = Result<T, ConflictableTransactionError<Abort>>;

fn abort<T>(outcome: WriteOutcome) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(Abort::Outcome(outcome)))
}

fn corrupt(key: &[u8], reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        reason: reason.to_string(),
    }
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(key, e))
}

/// The record under `key`, decoded.
fn get_json<T: for<'de> Deserialize<'de>>(
    tree: &sled::Tree,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    tree.get(key)?.map(|raw| decode(key, &raw)).transpose()
}

/// Every record under `prefix`, decoded, in key order.
fn scan_json<T: for<'de> Deserialize<'de>>(
    tree: &sled::Tree,
    prefix: &[u8],
) -> Result<Vec<T>, StoreError> {
    iter_json(tree, prefix).collect()
}

/// Records under `prefix`, decoded one at a time as the caller asks for them.
fn iter_json<T: for<'de> Deserialize<'de>>(
    tree: &sled::Tree,
    prefix: &[u8],
) -> impl Iterator<Item = Result<T, StoreError>> + use<T> {
    tree.scan_prefix(prefix).map(|item| {
        let (key, raw) = item?;
        decode(&key, &raw)
    })
}

fn decode_object(key: &[u8], raw: &[u8]) -> Result<CalendarObject, StoreError> {
    object_record::decode(raw).map_err(|e| corrupt(key, e))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our own plain data types always serialise.
    serde_json::to_vec(value).expect("store records serialise to JSON")
}

/// An object's ETag and text as stored (see [`Store::object_text`]).
pub struct ObjectText {
    pub etag: String,
    pub ics: String,
}

#[derive(Clone)]
pub struct Store {
    bookings: sled::Tree,
    booking_time: sled::Tree,
    changes: sled::Tree,
    meta: sled::Tree,
    idempotency: sled::Tree,
    sources: sled::Tree,
    objects: sled::Tree,
    busy: sled::Tree,
    conflicts: sled::Tree,
    uids: sled::Tree,
    /// Provider items as received (`tenant \0 source \0 series \0 item`).
    mirror: sled::Tree,
    /// Per source: cursor and status (`tenant \0 source`).
    sync_state: sled::Tree,
    /// Per source: recent sync runs (`tenant \0 source \0 seq`).
    sync_logs: sled::Tree,
    /// Per source: encrypted OAuth tokens (`tenant \0 source`).
    secrets: sled::Tree,
    /// Export: booking ↔ exported event, event id → booking, delivery state
    /// (see [`export`]).
    export_map: sled::Tree,
    export_remote: sled::Tree,
    export_state: sled::Tree,
    /// Scheduling inboxes, and messages written but not yet delivered to them
    /// (see [`inbox`]).
    inbox: sled::Tree,
    schedule_outbox: sled::Tree,
    /// Tenants provisioned at run time (see [`tenants`]).
    tenants: sled::Tree,
    commit: Arc<group_commit::GroupCommit>,
}

fn kind_byte(kind: BusyKind) -> u8 {
    kind_payload(kind)[0]
}

/// A busy kind as the one-byte payload of its index entries.
fn kind_payload(kind: BusyKind) -> &'static [u8] {
    match kind {
        BusyKind::Free => &[0],
        BusyKind::Tentative => &[1],
        BusyKind::Busy => &[2],
        BusyKind::Oof => &[3],
    }
}

fn kind_of(byte: Option<&u8>) -> BusyKind {
    match byte {
        Some(1) => BusyKind::Tentative,
        Some(2) => BusyKind::Busy,
        Some(3) => BusyKind::Oof,
        _ => BusyKind::Free,
    }
}

/// Non-blocking occurrences live in their own group, which free/busy never reads.
fn busy_group(kind: BusyKind) -> u8 {
    if kind == BusyKind::Free {
        time_index::SECONDARY
    } else {
        time_index::MAIN
    }
}

/// Busy-index id of the entry whose first occurrence is the `n`th of an object:
/// `source \0 object \0 n`.
fn busy_id(source: &str, object: &str, n: u32) -> Vec<u8> {
    let mut id = join(&[source.as_bytes(), object.as_bytes()]);
    id.push(keys::SEP);
    id.extend_from_slice(&n.to_be_bytes());
    id
}

/// Meta key present once the busy index files recurring occurrences in runs.
const BUSY_RUNS_KEY: &[u8] = b"format\0busy-runs";
/// Meta key present once every booking's time-index entry names the resources
/// it takes ([`booking_index`]).
const BOOKING_RESOURCES_KEY: &[u8] = b"format\0booking-resources";
/// Meta key present once per-resource versions are kept ([`Store::resource_version`]).
const RESOURCE_VERSIONS_KEY: &[u8] = b"format\0resource-versions";

/// Meta key of the seq of the newest change to the bookings taking `resource`
/// (one that names it before or after); `resource` empty: the prefix of a
/// tenant's keys.
fn resource_version_key(tenant: &str, resource: &str) -> Vec<u8> {
    join(&[b"resource-version", tenant.as_bytes(), resource.as_bytes()])
}

/// Meta key of the seq of the newest change to a booking naming no resource
/// before or after (it takes every one), or of the last change of the
/// bookings log when per-resource versions began (entries before do not say
/// what they took, so they concern every resource).
fn every_resource_version_key(tenant: &str) -> Vec<u8> {
    join(&[b"every-resource-version", tenant.as_bytes()])
}

/// Memory sled may use for cached pages.
const STORE_CACHE_BYTES: u64 = 32 * 1024 * 1024;

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            // Durability is ours (group commit after each write); a timer flush would
            // only hide a write path that forgot to sync.
            .flush_every_ms(None)
            // sled's default page cache is 1 GiB; the time indexes and the CalDAV
            // listings keep hot paths off it, and the OS caches the file anyway.
            .cache_capacity(STORE_CACHE_BYTES)
            .open()
            .map_err(|source| StoreError::Open {
                path: dir.display().to_string(),
                source,
            })?;
        let commit =
            group_commit::GroupCommit::start(db.clone(), dir).map_err(|e| StoreError::Open {
                path: dir.display().to_string(),
                source: e.into(),
            })?;
        let store = Store {
            commit: Arc::new(commit),
            bookings: db.open_tree("bookings")?,
            booking_time: db.open_tree("booking_time")?,
            changes: db.open_tree("changes")?,
            meta: db.open_tree("meta")?,
            idempotency: db.open_tree("idempotency")?,
            sources: db.open_tree("sources")?,
            objects: db.open_tree("objects")?,
            busy: db.open_tree("busy")?,
            conflicts: db.open_tree("conflicts")?,
            uids: db.open_tree("uids")?,
            mirror: db.open_tree("mirror")?,
            sync_state: db.open_tree("sync_state")?,
            sync_logs: db.open_tree("sync_logs")?,
            secrets: db.open_tree("secrets")?,
            export_map: db.open_tree("export_map")?,
            export_remote: db.open_tree("export_remote")?,
            export_state: db.open_tree("export_state")?,
            inbox: db.open_tree("inbox")?,
            schedule_outbox: db.open_tree("schedule_outbox")?,
            tenants: db.open_tree("tenants")?,
        };
        let reindexed = store.index_busy_in_runs()?;
        let resources_indexed = store.index_booking_resources()?;
        let resource_versions = store.start_resource_versions()?;
        let delivered = store.deliver_leftovers()?;
        if delivered > 0 {
            tracing::info!(
                messages = delivered,
                "scheduling messages a crash held back delivered"
            );
        }
        if reindexed || resources_indexed || resource_versions || delivered > 0 {
            db.flush()?;
        }
        Ok(store)
    }

    /// Brings a store written before busy runs existed (every occurrence its own
    /// entry) to the current busy index, once: its entries are rebuilt from the
    /// object records. Whether anything was written.
    fn index_busy_in_runs(&self) -> Result<bool, StoreError> {
        if self.meta.get(BUSY_RUNS_KEY)?.is_some() {
            return Ok(false);
        }
        // A rebuild that stopped half-way runs again: the marker comes last.
        if !self.objects.is_empty() {
            tracing::info!("rebuilding the busy index in runs (once, after an upgrade)");
            self.busy.clear()?;
            let mut batch = sled::Batch::default();
            let mut pending = 0;
            for item in self.objects.iter() {
                let (key, raw) = item?;
                let object = decode_object(&key, &raw)?;
                let mut parts = key.splitn(3, |b| *b == keys::SEP);
                let (Some(tenant), Some(source)) = (parts.next(), parts.next()) else {
                    return Err(corrupt(&key, "an object key without tenant and source"));
                };
                let (tenant, source) = (
                    String::from_utf8_lossy(tenant),
                    String::from_utf8_lossy(source),
                );
                for (key, value) in busy_entries(&tenant, &source, &object.id, &object.occurrences)
                {
                    batch.insert(key, value);
                    pending += 1;
                }
                // Batches of bounded size: each one holds sled's write lock.
                if pending >= 4096 {
                    self.busy.apply_batch(std::mem::take(&mut batch))?;
                    pending = 0;
                }
            }
            self.busy.apply_batch(batch)?;
        }
        self.meta.insert(BUSY_RUNS_KEY, b"1".as_slice())?;
        Ok(true)
    }

    /// Brings a store written before the bookings' time index held their
    /// resources to the current index, once: the entries of bookings naming
    /// resources are rewritten from their records (the others are already
    /// right, see [`booking_index`]). Whether anything was written.
    fn index_booking_resources(&self) -> Result<bool, StoreError> {
        if self.meta.get(BOOKING_RESOURCES_KEY)?.is_some() {
            return Ok(false);
        }
        let mut batch = sled::Batch::default();
        let mut pending = 0;
        let mut rewritten = 0usize;
        for item in self.bookings.iter() {
            let (key, raw) = item?;
            let booking: Booking = decode(&key, &raw)?;
            if booking.resources.is_empty() {
                continue;
            }
            let span = booking.span();
            batch.insert(
                time_index::entry_key(&[booking.tenant.as_bytes()], span, booking.id.as_bytes()),
                time_index::entry_value(span, &booking_index::payload_of(&booking)),
            );
            pending += 1;
            rewritten += 1;
            // Batches of bounded size: each one holds sled's write lock.
            if pending >= 4096 {
                self.booking_time.apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        self.booking_time.apply_batch(batch)?;
        if rewritten > 0 {
            tracing::info!(
                bookings = rewritten,
                "the bookings' time index now names the resources each takes (once, after an upgrade)"
            );
        }
        // Last, so a rewrite that stopped half-way runs again.
        self.meta.insert(BOOKING_RESOURCES_KEY, b"1".as_slice())?;
        Ok(true)
    }

    /// Starts per-resource versions on a store from before them, once: every
    /// tenant's bookings log so far concerns every resource (its entries do
    /// not say what they took), so each resource's version starts at its end.
    /// Whether anything was written.
    fn start_resource_versions(&self) -> Result<bool, StoreError> {
        if self.meta.get(RESOURCE_VERSIONS_KEY)?.is_some() {
            return Ok(false);
        }
        let versions = prefix(&[b"version"]);
        for item in self.meta.scan_prefix(&versions).keys() {
            let key = item?;
            let tenant = String::from_utf8_lossy(&key[versions.len()..]).into_owned();
            let seq = self.collection_version(&tenant, BOOKINGS_COLLECTION)?;
            if seq > 0 {
                self.meta
                    .insert(every_resource_version_key(&tenant), &seq.to_be_bytes())?;
            }
        }
        self.meta.insert(RESOURCE_VERSIONS_KEY, b"1".as_slice())?;
        Ok(true)
    }

    /// Makes everything written so far durable (group-committed with other writers).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.commit.sync().await.map_err(StoreError::Durability)
    }

    pub fn booking(&self, tenant: &str, id: &str) -> Result<Option<Booking>, StoreError> {
        let key = join(&[tenant.as_bytes(), id.as_bytes()]);
        get_json(&self.bookings, &key)
    }

    /// Bookings overlapping `window`, ordered by start — through the time index.
    pub fn bookings_in(&self, tenant: &str, window: Span) -> Result<Vec<Booking>, StoreError> {
        let hits = time_index::query(&self.booking_time, &[tenant.as_bytes()], window)?;
        let mut out = Vec::with_capacity(hits.len());
        for hit in hits {
            let key = join(&[tenant.as_bytes(), &hit.id]);
            if let Some(raw) = self.bookings.get(&key)? {
                out.push(decode(&key, &raw)?);
            }
        }
        Ok(out)
    }

    /// Bookings overlapping `window` as the time index holds them (every kind),
    /// ordered by start then id: never reads a record.
    pub fn booking_index(
        &self,
        tenant: &str,
        window: Span,
    ) -> Result<Vec<IndexedBooking>, StoreError> {
        let mut out = Vec::new();
        let mut bad: Option<Vec<u8>> = None;
        time_index::for_each(
            &self.booking_time,
            &[tenant.as_bytes()],
            time_index::ALL,
            window,
            |span, id, payload| match booking_index::decode(id, span, payload) {
                Some(booking) => out.push(booking),
                None => {
                    bad.get_or_insert_with(|| id.to_vec());
                }
            },
        )?;
        if let Some(id) = bad {
            return Err(corrupt(
                &join(&[tenant.as_bytes(), &id]),
                "a booking's time-index entry does not decode",
            ));
        }
        out.sort_by(|a, b| (a.span.start, &a.id).cmp(&(b.span.start, &b.id)));
        Ok(out)
    }

    /// Ids of the bookings overlapping `window`, from the time index alone.
    pub fn booking_ids_in(&self, tenant: &str, window: Span) -> Result<Vec<String>, StoreError> {
        Ok(
            time_index::query(&self.booking_time, &[tenant.as_bytes()], window)?
                .into_iter()
                .map(|hit| String::from_utf8_lossy(&hit.id).into_owned())
                .collect(),
        )
    }

    pub fn version(&self, tenant: &str) -> Result<TenantVersion, StoreError> {
        let key = join(&[b"version", tenant.as_bytes()]);
        Ok(self
            .meta
            .get(&key)?
            .map(|raw| decode_version(&raw))
            .unwrap_or_default())
    }

    /// Changes of a collection after `since`, oldest first.
    pub fn changes_since(
        &self,
        tenant: &str,
        collection: &str,
        since: u64,
    ) -> Result<Vec<Change>, StoreError> {
        let scope = prefix(&[tenant.as_bytes(), collection.as_bytes()]);
        changes_after(&self.changes, scope, since)
    }

    /// Seq of the newest change to the bookings that take `resource` or took
    /// it before the change (0: none yet).
    pub fn resource_version(&self, tenant: &str, resource: &str) -> Result<u64, StoreError> {
        let seq = |key: Vec<u8>| -> Result<u64, StoreError> {
            Ok(self
                .meta
                .get(key)?
                .and_then(|raw| decode_u64(&raw))
                .unwrap_or(0))
        };
        Ok(seq(resource_version_key(tenant, resource))?
            .max(seq(every_resource_version_key(tenant))?))
    }

    /// Inserts or replaces a booking if `precondition` holds, recording the change
    /// and, for creates, the Idempotency-Key claim. Durable when it returns.
    pub async fn put_booking(
        &self,
        booking: &Booking,
        precondition: &Precondition,
        claim: Option<&IdempotencyClaim>,
    ) -> Result<WriteOutcome, StoreError> {
        let outcome = self.commit_booking(booking, precondition, claim, None)?;
        if matches!(outcome, WriteOutcome::Written(_)) {
            self.flush().await?;
        }
        Ok(outcome)
    }

    /// [`Store::put_booking`] without waiting for durability: the write is visible
    /// to readers at once, but must not be acknowledged before [`Store::flush`].
    /// Lets callers hold a lock over check-and-write without holding it over a sync.
    /// `outgoing`: the scheduling messages the write sends, stored with it.
    pub fn commit_booking(
        &self,
        booking: &Booking,
        precondition: &Precondition,
        claim: Option<&IdempotencyClaim>,
        outgoing: Option<&Outgoing>,
    ) -> Result<WriteOutcome, StoreError> {
        let tenant = booking.tenant.as_bytes();
        let key = join(&[tenant, booking.id.as_bytes()]);
        let record = encode(booking);
        let now = Utc::now().timestamp_millis();
        let claim_key = claim.map(|c| join(&[tenant, c.api_key.as_bytes(), c.key.as_bytes()]));
        let uid_key = join(&[
            tenant,
            BOOKINGS_COLLECTION.as_bytes(),
            booking.uid.as_bytes(),
        ]);
        let result = (
            &self.bookings,
            &self.booking_time,
            &self.changes,
            &self.meta,
            &self.idempotency,
            &self.uids,
            &self.schedule_outbox,
        )
            .transaction(|(bookings, time, changes, meta, idempotency, uids, out)| {
                if let Some(owner) = uids.get(&uid_key)?
                    && owner.as_ref() != booking.id.as_bytes()
                {
                    return abort(WriteOutcome::UidConflict(
                        String::from_utf8_lossy(&owner).into_owned(),
                    ));
                }
                if let (Some(claim), Some(claim_key)) = (claim, &claim_key)
                    && let Some(raw) = idempotency.get(claim_key)?
                {
                    let seen: IdempotencyRecord = decode(claim_key, &raw).map_err(tx_corrupt)?;
                    if now - seen.created_ms < IDEMPOTENCY_TTL_MS {
                        return abort(if seen.fingerprint == claim.fingerprint {
                            WriteOutcome::Replayed(seen.booking_id)
                        } else {
                            WriteOutcome::IdempotencyKeyReused
                        });
                    }
                }
                let current: Option<Booking> = bookings
                    .get(&key)?
                    .map(|raw| decode(&key, &raw))
                    .transpose()
                    .map_err(tx_corrupt)?;
                let holds = match (precondition, &current) {
                    (Precondition::None, _) => true,
                    (Precondition::MustExist, existing) => existing.is_some(),
                    (Precondition::MustNotExist, existing) => existing.is_none(),
                    (Precondition::EtagIs(etag), Some(existing)) => &existing.etag == etag,
                    (Precondition::EtagIs(_), None) => false,
                };
                if !holds {
                    return abort(WriteOutcome::PreconditionFailed(current.map(Box::new)));
                }
                if let Some(old) = &current {
                    time.remove(time_index::entry_key(
                        &[tenant],
                        old.span(),
                        old.id.as_bytes(),
                    ))?;
                }
                let span = booking.span();
                uids.insert(uid_key.as_slice(), booking.id.as_bytes())?;
                bookings.insert(key.as_slice(), record.as_slice())?;
                time.insert(
                    time_index::entry_key(&[tenant], span, booking.id.as_bytes()),
                    time_index::entry_value(span, &booking_index::payload_of(booking)),
                )?;
                let version = record_booking_change(
                    changes,
                    meta,
                    &booking.tenant,
                    &booking.id,
                    ResourceMove {
                        before: current.as_ref().map(|old| old.resources.clone()),
                        after: Some(booking.resources.clone()),
                    },
                    now,
                )?;
                if let (Some(claim), Some(claim_key)) = (claim, &claim_key) {
                    let seen = IdempotencyRecord {
                        fingerprint: claim.fingerprint.clone(),
                        booking_id: booking.id.clone(),
                        created_ms: now,
                    };
                    idempotency.insert(claim_key.as_slice(), encode(&seen))?;
                }
                inbox::stage(out, &booking.tenant, outgoing)?;
                Ok(version)
            });
        match result {
            Ok(version) => Ok(WriteOutcome::Written(version)),
            Err(TransactionError::Abort(Abort::Outcome(outcome))) => Ok(outcome),
            Err(TransactionError::Abort(Abort::Corrupt(e))) => Err(*e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    /// The id of the booking with this iCalendar UID, if any.
    pub fn booking_with_uid(&self, tenant: &str, uid: &str) -> Result<Option<String>, StoreError> {
        let key = join(&[
            tenant.as_bytes(),
            BOOKINGS_COLLECTION.as_bytes(),
            uid.as_bytes(),
        ]);
        Ok(self
            .uids
            .get(key)?
            .map(|id| String::from_utf8_lossy(&id).into_owned()))
    }

    /// What an Idempotency-Key claim would find: a replay, a reuse, or nothing yet.
    pub fn idempotency_outcome(
        &self,
        tenant: &str,
        claim: &IdempotencyClaim,
    ) -> Result<Option<WriteOutcome>, StoreError> {
        let key = join(&[
            tenant.as_bytes(),
            claim.api_key.as_bytes(),
            claim.key.as_bytes(),
        ]);
        let Some(raw) = self.idempotency.get(&key)? else {
            return Ok(None);
        };
        let seen: IdempotencyRecord = decode(&key, &raw)?;
        if Utc::now().timestamp_millis() - seen.created_ms >= IDEMPOTENCY_TTL_MS {
            return Ok(None);
        }
        Ok(Some(if seen.fingerprint == claim.fingerprint {
            WriteOutcome::Replayed(seen.booking_id)
        } else {
            WriteOutcome::IdempotencyKeyReused
        }))
    }

    /// Deletes a booking if `etag` (when given) matches, storing the scheduling
    /// messages it sends with it. Durable when it returns.
    pub async fn delete_booking(
        &self,
        tenant: &str,
        id: &str,
        etag: Option<&str>,
        outgoing: Option<&Outgoing>,
    ) -> Result<DeleteOutcome, StoreError> {
        let key = join(&[tenant.as_bytes(), id.as_bytes()]);
        let now = Utc::now().timestamp_millis();
        let result = (
            &self.bookings,
            &self.booking_time,
            &self.changes,
            &self.meta,
            &self.uids,
            &self.schedule_outbox,
        )
            .transaction(|(bookings, time, changes, meta, uids, outbox)| {
                let Some(raw) = bookings.get(&key)? else {
                    return Ok(DeleteOutcome::NotFound);
                };
                let current: Booking = decode(&key, &raw).map_err(tx_corrupt)?;
                if etag.is_some_and(|e| e != current.etag) {
                    return Ok(DeleteOutcome::PreconditionFailed(Box::new(current)));
                }
                bookings.remove(key.as_slice())?;
                uids.remove(join(&[
                    tenant.as_bytes(),
                    BOOKINGS_COLLECTION.as_bytes(),
                    current.uid.as_bytes(),
                ]))?;
                time.remove(time_index::entry_key(
                    &[tenant.as_bytes()],
                    current.span(),
                    id.as_bytes(),
                ))?;
                let version = record_booking_change(
                    changes,
                    meta,
                    tenant,
                    id,
                    ResourceMove {
                        before: Some(current.resources),
                        after: None,
                    },
                    now,
                )?;
                inbox::stage(outbox, tenant, outgoing)?;
                Ok(DeleteOutcome::Deleted(version))
            });
        let outcome = settled(result)?;
        if matches!(outcome, DeleteOutcome::Deleted(_)) {
            self.flush().await?;
        }
        Ok(outcome)
    }

    /// Blocking time overlapping `window` as bare (span, kind) pairs, from bookings
    /// and calendar objects of the given sources (all when None): the free/busy hot
    /// path, which needs no names.
    pub fn busy_spans(
        &self,
        tenant: &str,
        window: Span,
        sources: Option<&[String]>,
    ) -> Result<Vec<(Span, BusyKind)>, StoreError> {
        let wanted = |id: &[u8]| {
            sources.is_none_or(|s| {
                s.iter().any(|x| {
                    id.len() > x.len() && id.starts_with(x.as_bytes()) && id[x.len()] == keys::SEP
                })
            })
        };
        let mut out = Vec::new();
        let scope = [tenant.as_bytes()];
        if sources.is_none_or(|s| s.iter().any(|x| x == crate::model::BOOKINGS_SOURCE)) {
            time_index::for_each(
                &self.booking_time,
                &scope,
                &[time_index::MAIN],
                window,
                |span, _, payload| {
                    let kind = kind_of(payload.first());
                    if kind != BusyKind::Free {
                        out.push((span, kind));
                    }
                },
            )?;
        }
        time_index::for_each(
            &self.busy,
            &scope,
            &[time_index::MAIN],
            window,
            |span, id, payload| {
                let kind = kind_of(payload.first());
                if kind != BusyKind::Free && wanted(id) {
                    out.push((span, kind));
                }
            },
        )?;
        Ok(out)
    }

    /// Blocking occurrences of calendar objects overlapping `window`, from the
    /// sources `wanted` accepts, ordered by start, source and object: the busy
    /// blocks a feed publishes. Reads the index only (never an object record) and
    /// skips the non-blocking group, so transparent and cancelled events never show.
    pub fn object_busy_in(
        &self,
        tenant: &str,
        window: Span,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<BusyEntry>, StoreError> {
        let mut out = Vec::new();
        time_index::for_each(
            &self.busy,
            &[tenant.as_bytes()],
            &[time_index::MAIN],
            window,
            |span, id, payload| {
                let kind = kind_of(payload.first());
                let mut parts = id.splitn(3, |b| *b == keys::SEP);
                let (Some(source), Some(object)) = (parts.next(), parts.next()) else {
                    return;
                };
                let source = String::from_utf8_lossy(source);
                if kind != BusyKind::Free && wanted(&source) {
                    out.push(BusyEntry {
                        span,
                        kind,
                        source: source.into_owned(),
                        object: String::from_utf8_lossy(object).into_owned(),
                        resource: None,
                    });
                }
            },
        )?;
        out.sort_by(|a, b| {
            (a.span.start, &a.source, &a.object, a.span.end).cmp(&(
                b.span.start,
                &b.source,
                &b.object,
                b.span.end,
            ))
        });
        Ok(out)
    }

    /// Occurrences of calendar objects overlapping `window`, of every kind
    /// (callers asking about busy time skip `Free`).
    pub fn object_occurrences(
        &self,
        tenant: &str,
        window: Span,
    ) -> Result<Vec<BusyEntry>, StoreError> {
        let hits = time_index::query(&self.busy, &[tenant.as_bytes()], window)?;
        Ok(hits
            .into_iter()
            .filter_map(|h| {
                let mut parts = h.id.splitn(3, |b| *b == keys::SEP);
                let source = String::from_utf8_lossy(parts.next()?).into_owned();
                let object = String::from_utf8_lossy(parts.next()?).into_owned();
                Some(BusyEntry {
                    span: h.span,
                    kind: kind_of(h.payload.first()),
                    source,
                    object,
                    resource: None,
                })
            })
            .collect())
    }

    pub fn put_source(&self, tenant: &str, source: &Source) -> Result<(), StoreError> {
        let key = join(&[tenant.as_bytes(), source.id.as_bytes()]);
        self.sources.insert(key, encode(source))?;
        Ok(())
    }

    pub fn source(&self, tenant: &str, id: &str) -> Result<Option<Source>, StoreError> {
        let key = join(&[tenant.as_bytes(), id.as_bytes()]);
        get_json(&self.sources, &key)
    }

    pub fn sources(&self, tenant: &str) -> Result<Vec<Source>, StoreError> {
        scan_json(&self.sources, &prefix(&[tenant.as_bytes()]))
    }

    pub fn object(
        &self,
        tenant: &str,
        source: &str,
        id: &str,
    ) -> Result<Option<CalendarObject>, StoreError> {
        let key = join(&[tenant.as_bytes(), source.as_bytes(), id.as_bytes()]);
        self.objects
            .get(&key)?
            .map(|raw| decode_object(&key, &raw))
            .transpose()
    }

    /// An object's ETag and iCalendar text, read without decoding the rest of its
    /// record (occurrences, diagnostics).
    pub fn object_text(
        &self,
        tenant: &str,
        source: &str,
        id: &str,
    ) -> Result<Option<ObjectText>, StoreError> {
        let key = join(&[tenant.as_bytes(), source.as_bytes(), id.as_bytes()]);
        let Some(raw) = self.objects.get(&key)? else {
            return Ok(None);
        };
        Ok(Some(
            match object_record::etag_and_text_offset(&raw).map_err(|e| corrupt(&key, e))? {
                Some((etag, start)) => ObjectText {
                    etag,
                    ics: std::str::from_utf8(&raw[start..])
                        .map_err(|e| corrupt(&key, e))?
                        .to_owned(),
                },
                None => {
                    let object = decode_object(&key, &raw)?;
                    ObjectText {
                        etag: object.etag,
                        ics: object.ics,
                    }
                }
            },
        ))
    }

    /// Every object of a source, in id order.
    /// A source's objects one at a time (collection listings stream them).
    pub fn iter_objects(
        &self,
        tenant: &str,
        source: &str,
    ) -> impl Iterator<Item = Result<CalendarObject, StoreError>> + use<> {
        self.objects
            .scan_prefix(prefix(&[tenant.as_bytes(), source.as_bytes()]))
            .map(|item| {
                let (key, raw) = item?;
                decode_object(&key, &raw)
            })
    }

    /// A tenant's bookings one at a time, in id order.
    pub fn iter_bookings(
        &self,
        tenant: &str,
    ) -> impl Iterator<Item = Result<Booking, StoreError>> + use<> {
        iter_json(&self.bookings, &prefix(&[tenant.as_bytes()]))
    }

    pub fn objects(&self, tenant: &str, source: &str) -> Result<Vec<CalendarObject>, StoreError> {
        self.iter_objects(tenant, source).collect()
    }

    /// Stores an object and replaces its index entries, atomically. A
    /// [`ObjectWrite::Change`] is logged for sync and durable when this returns; a
    /// [`ObjectWrite::Reindex`] is neither (the caller flushes once for many).
    pub async fn put_object(
        &self,
        tenant: &str,
        source: &str,
        object: &CalendarObject,
        precondition: &Precondition,
        mode: ObjectWrite,
    ) -> Result<ObjectOutcome, StoreError> {
        self.put_object_sending(tenant, source, object, precondition, mode, None)
            .await
    }

    /// [`Store::put_object`], storing in its transaction the scheduling
    /// messages the write sends.
    pub async fn put_object_sending(
        &self,
        tenant: &str,
        source: &str,
        object: &CalendarObject,
        precondition: &Precondition,
        mode: ObjectWrite,
        outgoing: Option<&Outgoing>,
    ) -> Result<ObjectOutcome, StoreError> {
        let log_change = mode != ObjectWrite::Reindex;
        let key = join(&[tenant.as_bytes(), source.as_bytes(), object.id.as_bytes()]);
        let record = object_record::encode(object);
        let now = Utc::now().timestamp_millis();
        let uid_key = |uid: &str| join(&[tenant.as_bytes(), source.as_bytes(), uid.as_bytes()]);
        let result = (
            &self.objects,
            &self.busy,
            &self.changes,
            &self.meta,
            &self.uids,
            &self.schedule_outbox,
        )
            .transaction(|(objects, busy, changes, meta, uids, outbox)| {
                if let Some(uid) = &object.uid
                    && let Some(owner) = uids.get(uid_key(uid))?
                    && owner.as_ref() != object.id.as_bytes()
                {
                    return Ok(ObjectOutcome::UidConflict(
                        String::from_utf8_lossy(&owner).into_owned(),
                    ));
                }
                let current: Option<CalendarObject> = objects
                    .get(&key)?
                    .map(|raw| decode_object(&key, &raw))
                    .transpose()
                    .map_err(tx_corrupt)?;
                let holds = match (precondition, &current) {
                    (Precondition::None, _) => true,
                    (Precondition::MustExist, existing) => existing.is_some(),
                    (Precondition::MustNotExist, existing) => existing.is_none(),
                    (Precondition::EtagIs(etag), Some(existing)) => &existing.etag == etag,
                    (Precondition::EtagIs(_), None) => false,
                };
                if !holds {
                    return Ok(ObjectOutcome::PreconditionFailed(current.map(|c| c.etag)));
                }
                swap_object_index(busy, uids, tenant, source, current.as_ref(), object)?;
                objects.insert(key.as_slice(), record.as_slice())?;
                let version = if log_change {
                    record_change(changes, meta, tenant, source, &object.id, false, now)?
                } else {
                    TenantVersion::default()
                };
                inbox::stage(outbox, tenant, outgoing)?;
                Ok(ObjectOutcome::Written(version))
            });
        let outcome = settled(result)?;
        if mode == ObjectWrite::Change && matches!(outcome, ObjectOutcome::Written(_)) {
            self.flush().await?;
        }
        Ok(outcome)
    }

    /// Deletes an object and its busy-index entries, storing with them the
    /// scheduling messages the deletion sends. Durable when it returns.
    pub async fn delete_object(
        &self,
        tenant: &str,
        source: &str,
        id: &str,
        etag: Option<&str>,
        outgoing: Option<&Outgoing>,
    ) -> Result<ObjectOutcome, StoreError> {
        let outcome = self.remove_object(tenant, source, id, etag, outgoing)?;
        if matches!(outcome, ObjectOutcome::Written(_)) {
            self.flush().await?;
        }
        Ok(outcome)
    }

    /// [`Store::delete_object`] within a batch: durable after the caller's flush.
    pub fn delete_object_batched(
        &self,
        tenant: &str,
        source: &str,
        id: &str,
        etag: Option<&str>,
    ) -> Result<ObjectOutcome, StoreError> {
        self.remove_object(tenant, source, id, etag, None)
    }

    /// Removes an object in one transaction (with what its deletion sends); not flushed.
    fn remove_object(
        &self,
        tenant: &str,
        source: &str,
        id: &str,
        etag: Option<&str>,
        outgoing: Option<&Outgoing>,
    ) -> Result<ObjectOutcome, StoreError> {
        let key = join(&[tenant.as_bytes(), source.as_bytes(), id.as_bytes()]);
        let now = Utc::now().timestamp_millis();
        let result = (
            &self.objects,
            &self.busy,
            &self.changes,
            &self.meta,
            &self.uids,
            &self.schedule_outbox,
        )
            .transaction(|(objects, busy, changes, meta, uids, outbox)| {
                let Some(raw) = objects.get(&key)? else {
                    return Ok(ObjectOutcome::PreconditionFailed(None));
                };
                let current = decode_object(&key, &raw).map_err(tx_corrupt)?;
                if etag.is_some_and(|e| e != current.etag) {
                    return Ok(ObjectOutcome::PreconditionFailed(Some(current.etag)));
                }
                remove_busy(busy, tenant, source, id, &current.occurrences)?;
                if let Some(uid) = &current.uid {
                    uids.remove(join(&[
                        tenant.as_bytes(),
                        source.as_bytes(),
                        uid.as_bytes(),
                    ]))?;
                }
                objects.remove(key.as_slice())?;
                let version = record_change(changes, meta, tenant, source, id, true, now)?;
                inbox::stage(outbox, tenant, outgoing)?;
                Ok(ObjectOutcome::Written(version))
            });
        settled(result)
    }

    /// Sequence number of the newest change in a collection (0: none yet).
    pub fn collection_version(&self, tenant: &str, collection: &str) -> Result<u64, StoreError> {
        let scope = prefix(&[tenant.as_bytes(), collection.as_bytes()]);
        Ok(match self.changes.scan_prefix(&scope).next_back() {
            Some(item) => decode_u64(&item?.0[scope.len()..]).unwrap_or(0),
            None => 0,
        })
    }

    /// Removes a source with all its objects, their index entries and UIDs; the
    /// change log keeps a deletion per object. Durable when it returns.
    pub async fn delete_source(&self, tenant: &str, source: &str) -> Result<bool, StoreError> {
        if self.source(tenant, source)?.is_none() {
            return Ok(false);
        }
        for object in self.objects(tenant, source)? {
            self.delete_object_batched(tenant, source, &object.id, None)?;
        }
        self.sources
            .remove(join(&[tenant.as_bytes(), source.as_bytes()]))?;
        self.drop_sync_data(tenant, source)?;
        self.drop_export_data(tenant, source)?;
        self.flush().await?;
        Ok(true)
    }

    /// One conflict by id (a scan of the tenant's: acknowledging is rare).
    pub fn conflict(&self, tenant: &str, id: &str) -> Result<Option<Conflict>, StoreError> {
        Ok(self.conflicts(tenant)?.into_iter().find(|c| c.id == id))
    }

    /// The conflicts one calendar object is part of.
    pub fn object_conflicts(
        &self,
        tenant: &str,
        source: &str,
        object: &str,
    ) -> Result<Vec<Conflict>, StoreError> {
        scan_json(
            &self.conflicts,
            &prefix(&[tenant.as_bytes(), source.as_bytes(), object.as_bytes()]),
        )
    }

    /// Ids of a source's objects that are part of an open (unresolved) conflict.
    pub fn objects_in_open_conflicts(
        &self,
        tenant: &str,
        source: &str,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        iter_json::<Conflict>(
            &self.conflicts,
            &prefix(&[tenant.as_bytes(), source.as_bytes()]),
        )
        .filter_map(|c| match c {
            Ok(c) if c.resolved.is_some() => None,
            Ok(c) => Some(Ok(c.object_id)),
            Err(e) => Some(Err(e)),
        })
        .collect()
    }

    /// Every conflict of a tenant (open and closed), in id order.
    pub fn conflicts(&self, tenant: &str) -> Result<Vec<Conflict>, StoreError> {
        scan_json(&self.conflicts, &prefix(&[tenant.as_bytes()]))
    }

    /// Stores conflict records; durable when it returns.
    pub async fn put_conflicts(
        &self,
        tenant: &str,
        conflicts: &[Conflict],
    ) -> Result<(), StoreError> {
        self.replace_conflicts(tenant, conflicts, &[]).await
    }

    /// Forgets Idempotency-Keys older than their TTL; returns how many were removed.
    pub fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let cutoff = now.timestamp_millis() - IDEMPOTENCY_TTL_MS;
        let mut removed = 0;
        for item in self.idempotency.iter() {
            let (key, raw) = item?;
            let expired = decode::<IdempotencyRecord>(&key, &raw)
                .map(|r| r.created_ms < cutoff)
                .unwrap_or(true);
            if expired {
                self.idempotency.remove(&key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The changes of a log whose keys are `scope` then the big-endian seq, after
/// `since`, oldest first.
fn changes_after(tree: &sled::Tree, scope: Vec<u8>, since: u64) -> Result<Vec<Change>, StoreError> {
    let mut from = scope.clone();
    from.extend_from_slice(&since.saturating_add(1).to_be_bytes());
    let mut out = Vec::new();
    for item in tree.range(from..) {
        let (key, raw) = item?;
        if !key.starts_with(&scope) {
            break;
        }
        out.extend(decode_changes(&key, &raw, since)?);
    }
    Ok(out)
}

/// Inside a transaction: drops the busy entries and UID of `old` (the object's
/// previous version, if any) and records those of `object`.
fn swap_object_index(
    busy: &TransactionalTree,
    uids: &TransactionalTree,
    tenant: &str,
    source: &str,
    old: Option<&CalendarObject>,
    object: &CalendarObject,
) -> TxResult<()> {
    let uid_key = |uid: &str| join(&[tenant.as_bytes(), source.as_bytes(), uid.as_bytes()]);
    if let Some(old) = old {
        remove_busy(busy, tenant, source, &old.id, &old.occurrences)?;
        if let Some(uid) = &old.uid {
            uids.remove(uid_key(uid))?;
        }
    }
    if let Some(uid) = &object.uid {
        uids.insert(uid_key(uid), object.id.as_bytes())?;
    }
    for (key, value) in busy_entries(tenant, source, &object.id, &object.occurrences) {
        busy.insert(key, value)?;
    }
    Ok(())
}

/// Removes an object's busy-index entries, as recorded in its occurrences.
fn remove_busy(
    busy: &TransactionalTree,
    tenant: &str,
    source: &str,
    object: &str,
    spans: &[BusySpan],
) -> TxResult<()> {
    for (key, _) in busy_entries(tenant, source, object, spans) {
        busy.remove(key)?;
    }
    Ok(())
}

/// The busy-index entries (key, value) of an object's occurrences: a recurring
/// event's are packed into runs ([`time_index::entries`]).
fn busy_entries(
    tenant: &str,
    source: &str,
    object: &str,
    spans: &[BusySpan],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let intervals: Vec<time_index::Interval<'_>> = spans
        .iter()
        .map(|b| time_index::Interval {
            group: busy_group(b.kind),
            span: b.span,
            payload: kind_payload(b.kind),
        })
        .collect();
    time_index::entries(&[tenant.as_bytes()], &intervals, |n| {
        busy_id(source, object, n as u32)
    })
}

/// The result of a transaction that only aborts for corruption.
fn settled<T>(result: Result<T, TransactionError<Abort>>) -> Result<T, StoreError> {
    match result {
        Ok(value) => Ok(value),
        Err(TransactionError::Abort(Abort::Corrupt(e))) => Err(*e),
        // Only booking writes abort with an outcome, and they do not come here.
        Err(TransactionError::Abort(Abort::Outcome(_))) => Err(StoreError::Corrupt {
            key: String::new(),
            reason: "unexpected transaction outcome".into(),
        }),
        Err(TransactionError::Storage(e)) => Err(e.into()),
    }
}

fn tx_corrupt(e: StoreError) -> ConflictableTransactionError<Abort> {
    ConflictableTransactionError::Abort(Abort::Corrupt(Box::new(e)))
}

fn decode_version(raw: &[u8]) -> TenantVersion {
    TenantVersion {
        seq: decode_u64(raw).unwrap_or(0),
        modified_ms: raw.get(8..).and_then(decode_i64).unwrap_or(0),
    }
}

/// Bumps the tenant's version and appends to the collection's change log.
fn record_change(
    changes: &TransactionalTree,
    meta: &TransactionalTree,
    tenant: &str,
    collection: &str,
    id: &str,
    deleted: bool,
    now_ms: i64,
) -> TxResult<TenantVersion> {
    let versions = record_changes(changes, meta, tenant, collection, &[(id, deleted)], now_ms)?;
    Ok(versions[0])
}

/// [`record_change`] for many objects of one collection written together: each
/// gets its own version, and the log one entry (keyed by the last version) for
/// all of them, so a large import writes one log entry per batch.
fn record_changes(
    changes: &TransactionalTree,
    meta: &TransactionalTree,
    tenant: &str,
    collection: &str,
    ids: &[(&str, bool)],
    now_ms: i64,
) -> TxResult<Vec<TenantVersion>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let versions = next_versions(meta, tenant, ids.len() as u64, now_ms)?;
    let logged: Vec<Change> = ids
        .iter()
        .zip(&versions)
        .map(|((id, deleted), version)| Change {
            seq: version.seq,
            id: (*id).to_owned(),
            deleted: *deleted,
            resources: None,
        })
        .collect();
    append_log(changes, tenant, collection, &logged)?;
    Ok(versions)
}

/// [`record_change`] for a booking, with the resources it took before and
/// after (see [`Change::for_resource`]); moves the versions of the
/// resources whose bookings that changes, in the same transaction.
fn record_booking_change(
    changes: &TransactionalTree,
    meta: &TransactionalTree,
    tenant: &str,
    id: &str,
    moved: ResourceMove,
    now_ms: i64,
) -> TxResult<TenantVersion> {
    let version = next_versions(meta, tenant, 1, now_ms)?[0];
    let seq = version.seq.to_be_bytes();
    let (named, every) = moved.concerned();
    for resource in named {
        meta.insert(resource_version_key(tenant, resource), &seq)?;
    }
    if every {
        meta.insert(every_resource_version_key(tenant), &seq)?;
    }
    let change = Change {
        seq: version.seq,
        id: id.to_owned(),
        deleted: moved.after.is_none(),
        resources: Some(moved),
    };
    append_log(changes, tenant, BOOKINGS_COLLECTION, &[change])?;
    Ok(version)
}

/// Moves the tenant's version on by `n` changes; each one's version.
fn next_versions(
    meta: &TransactionalTree,
    tenant: &str,
    n: u64,
    now_ms: i64,
) -> TxResult<Vec<TenantVersion>> {
    let version_key = join(&[b"version", tenant.as_bytes()]);
    let previous = meta
        .get(&version_key)?
        .map(|raw| decode_version(&raw))
        .unwrap_or_default();
    // Never move backwards, even if the clock does.
    let modified_ms = now_ms.max(previous.modified_ms);
    let versions: Vec<TenantVersion> = (1..=n)
        .map(|k| TenantVersion {
            seq: previous.seq + k,
            modified_ms,
        })
        .collect();
    if let Some(last) = versions.last() {
        let mut raw = last.seq.to_be_bytes().to_vec();
        raw.extend_from_slice(&encode_i64(last.modified_ms));
        meta.insert(version_key, raw)?;
    }
    Ok(versions)
}

/// Appends one log entry for `logged` (a batch shares one, keyed by its last seq).
fn append_log(
    changes: &TransactionalTree,
    tenant: &str,
    collection: &str,
    logged: &[Change],
) -> TxResult<()> {
    let Some(last) = logged.last() else {
        return Ok(());
    };
    let mut change_key = prefix(&[tenant.as_bytes(), collection.as_bytes()]);
    change_key.extend_from_slice(&last.seq.to_be_bytes());
    let entry = match logged {
        [one] => encode(one),
        _ => encode(&logged),
    };
    changes.insert(change_key, entry)?;
    Ok(())
}

/// A change-log entry: one change, or the changes of a batch ([`record_changes`]).
#[derive(Deserialize)]
#[serde(untagged)]
enum LoggedChanges {
    One(Change),
    Batch(Vec<Change>),
}

/// The changes of one change-log entry after `since`.
fn decode_changes(key: &[u8], raw: &[u8], since: u64) -> Result<Vec<Change>, StoreError> {
    let changes = match decode::<LoggedChanges>(key, raw)? {
        LoggedChanges::One(change) => vec![change],
        LoggedChanges::Batch(changes) => changes,
    };
    Ok(changes.into_iter().filter(|c| c.seq > since).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BusySpan;

    const DAY: i64 = 86_400_000;

    /// Opens a store again after its last handle was dropped. sled's worker
    /// threads may still hold the database's file lock for a moment after that
    /// (seen under load in CI), so a lock conflict is waited out, up to 10 s.
    pub(super) fn reopen(dir: &std::path::Path) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(dir) {
                Ok(store) => return store,
                Err(e)
                    if std::time::Instant::now() < deadline && e.to_string().contains("lock") =>
                {
                    std::thread::yield_now();
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("store does not reopen: {e}"),
            }
        }
    }

    /// A weekly event with `weeks` occurrences from `first_day`, one of them free.
    pub(super) fn weekly(id: &str, first_day: i64, weeks: i64) -> CalendarObject {
        CalendarObject {
            id: id.into(),
            uid: Some(format!("{id}@test")),
            ics: String::new(),
            etag: format!("\"{id}-{first_day}\""),
            updated: Utc::now(),
            recurring: true,
            diagnostics: Vec::new(),
            occurrences: (0..weeks)
                .map(|w| BusySpan {
                    span: Span::new(
                        (first_day + 7 * w) * DAY,
                        (first_day + 7 * w) * DAY + DAY / 24,
                    ),
                    kind: if w == 3 {
                        BusyKind::Free
                    } else {
                        BusyKind::Busy
                    },
                })
                .collect(),
        }
    }

    fn busy_starts(store: &Store) -> Vec<i64> {
        let mut spans: Vec<i64> = store
            .busy_spans("t", Span::new(-1000 * DAY, 1000 * DAY), None)
            .unwrap()
            .into_iter()
            .map(|(span, _)| span.start / DAY)
            .collect();
        spans.sort();
        spans
    }

    #[tokio::test]
    async fn recurring_busy_time_is_indexed_in_runs_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let object = weekly("series", 0, 20);
        store
            .put_object("t", "s", &object, &Precondition::None, ObjectWrite::Change)
            .await
            .unwrap();
        let expected: Vec<i64> = (0..20).filter(|w| *w != 3).map(|w| 7 * w).collect();
        assert_eq!(busy_starts(&store), expected);
        assert!(
            store.busy.len() < 10,
            "20 occurrences in {} entries",
            store.busy.len()
        );
        // Moved by a day: the old runs go, none left behind.
        store
            .put_object(
                "t",
                "s",
                &weekly("series", 1, 20),
                &Precondition::None,
                ObjectWrite::Change,
            )
            .await
            .unwrap();
        let moved: Vec<i64> = expected.iter().map(|d| d + 1).collect();
        assert_eq!(busy_starts(&store), moved);
        store
            .delete_object("t", "s", "series", None, None)
            .await
            .unwrap();
        assert!(store.busy.is_empty());
    }

    #[tokio::test]
    async fn a_store_from_before_runs_is_reindexed_once_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let object = weekly("series", 0, 12);
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .put_object("t", "s", &object, &Precondition::None, ObjectWrite::Change)
                .await
                .unwrap();
            // Rewrite the index as the previous release filed it: one entry per
            // occurrence, and no format marker.
            store.busy.clear().unwrap();
            for (n, b) in object.occurrences.iter().enumerate() {
                store
                    .busy
                    .insert(
                        time_index::entry_key_in(
                            &[b"t"],
                            busy_group(b.kind),
                            b.span,
                            &busy_id("s", "series", n as u32),
                        ),
                        time_index::entry_value(b.span, kind_payload(b.kind)),
                    )
                    .unwrap();
            }
            store.meta.remove(BUSY_RUNS_KEY).unwrap();
            store.flush().await.unwrap();
        }
        let store = reopen(dir.path());
        let expected: Vec<i64> = (0..12).filter(|w| *w != 3).map(|w| 7 * w).collect();
        assert_eq!(busy_starts(&store), expected, "each occurrence once");
        // The rebuilt entries are the ones a change removes.
        store
            .delete_object("t", "s", "series", None, None)
            .await
            .unwrap();
        assert!(store.busy.is_empty(), "no entry of the old layout left");
    }

    /// A confirmed booking on day 0 from `hour` for an hour, taking `resources`.
    fn booking(id: &str, hour: i64, resources: &[&str]) -> Booking {
        let at = |h: i64| {
            DateTime::from_timestamp_millis(h * DAY / 24)
                .expect("in range")
                .fixed_offset()
        };
        Booking {
            id: id.into(),
            uid: format!("{id}@test"),
            tenant: "t".into(),
            time: crate::model::BookingTime::Timed {
                start: at(hour),
                end: at(hour + 1),
            },
            time_zone: "UTC".parse().expect("UTC is a zone"),
            title: id.into(),
            service: None,
            customer: None,
            location: None,
            notes: None,
            status: crate::model::BookingStatus::Confirmed,
            metadata: serde_json::Map::new(),
            created: Utc::now(),
            updated: Utc::now(),
            sequence: 0,
            etag: format!("\"{id}\""),
            calendar_text: None,
            calendar_text_sequence: None,
            resources: resources.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[tokio::test]
    async fn a_store_from_before_indexed_resources_is_reindexed_once_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let bookings = [booking("anna", 9, &["anna"]), booking("all", 10, &[])];
        {
            let store = Store::open(dir.path()).unwrap();
            for b in &bookings {
                store
                    .put_booking(b, &Precondition::MustNotExist, None)
                    .await
                    .unwrap();
                // The entry as the previous release wrote it: the kind alone.
                store
                    .booking_time
                    .insert(
                        time_index::entry_key(&[b"t"], b.span(), b.id.as_bytes()),
                        time_index::entry_value(b.span(), kind_payload(b.busy_kind())),
                    )
                    .unwrap();
            }
            store.meta.remove(BOOKING_RESOURCES_KEY).unwrap();
            let old = store.booking_index("t", Span::new(0, DAY)).unwrap();
            assert!(old.iter().all(|b| b.resources.is_empty()), "{old:?}");
            store.flush().await.unwrap();
        }
        let store = reopen(dir.path());
        let taken: Vec<(String, Vec<String>)> = store
            .booking_index("t", Span::new(0, DAY))
            .unwrap()
            .into_iter()
            .map(|b| (b.id, b.resources))
            .collect();
        assert_eq!(
            taken,
            [("anna".into(), vec!["anna".into()]), ("all".into(), vec![])]
        );
        assert_eq!(store.booking_time.len(), 2, "rewritten in place");
        assert!(store.meta.get(BOOKING_RESOURCES_KEY).unwrap().is_some());
    }

    #[tokio::test]
    async fn resource_versions_start_at_the_end_of_an_older_bookings_log() {
        let dir = tempfile::tempdir().unwrap();
        let seq = {
            let store = Store::open(dir.path()).unwrap();
            let written = store
                .put_booking(
                    &booking("a1", 9, &["anna"]),
                    &Precondition::MustNotExist,
                    None,
                )
                .await
                .unwrap();
            let WriteOutcome::Written(version) = written else {
                panic!("not written: {written:?}");
            };
            // The log and meta as the previous release left them: entries
            // that do not say what they took, no per-resource versions.
            for item in store.changes.iter() {
                let (key, raw) = item.unwrap();
                let mut change: Change = serde_json::from_slice(&raw).unwrap();
                change.resources = None;
                store.changes.insert(key, encode(&change)).unwrap();
            }
            for key in [
                resource_version_key("t", "anna"),
                every_resource_version_key("t"),
                RESOURCE_VERSIONS_KEY.to_vec(),
            ] {
                store.meta.remove(key).unwrap();
            }
            assert_eq!(store.resource_version("t", "ben").unwrap(), 0);
            store.flush().await.unwrap();
            version.seq
        };
        let store = reopen(dir.path());
        // What came before concerns every resource: versions start there, and
        // the old entries are every resource's, as logged.
        assert_eq!(store.resource_version("t", "ben").unwrap(), seq);
        let ben = ChangeLog::resource_changes_since(&store, "t", "ben", 0).unwrap();
        assert_eq!(
            (ben[0].seq, ben[0].id.as_str(), ben[0].deleted),
            (seq, "a1", false)
        );
        // New writes say what they take.
        store
            .put_booking(
                &booking("a2", 11, &["anna"]),
                &Precondition::MustNotExist,
                None,
            )
            .await
            .unwrap();
        assert_eq!(store.resource_version("t", "ben").unwrap(), seq);
        assert!(
            ChangeLog::resource_changes_since(&store, "t", "ben", seq)
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.resource_version("t", "anna").unwrap(), seq + 1);
    }

    #[tokio::test]
    async fn a_batch_logs_one_entry_with_a_version_per_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let objects: Vec<CalendarObject> = (0..3).map(|n| weekly(&format!("e{n}"), n, 1)).collect();
        let outcomes = store.put_objects_batched("t", "s", &objects).unwrap();
        let seqs: Vec<u64> = outcomes
            .iter()
            .map(|o| match o {
                ObjectOutcome::Written(v) => v.seq,
                other => panic!("not written: {other:?}"),
            })
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(store.changes.len(), 1, "one log entry for the batch");
        assert_eq!(store.collection_version("t", "s").unwrap(), 3);
        let after = |since| {
            store
                .changes_since("t", "s", since)
                .unwrap()
                .into_iter()
                .map(|c| (c.seq, c.id))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            after(0),
            [(1, "e0".into()), (2, "e1".into()), (3, "e2".into())]
        );
        assert_eq!(after(2), [(3, "e2".to_owned())], "a token inside the batch");
        assert!(after(3).is_empty());
        // A single write after it logs on its own and follows on.
        store
            .delete_object("t", "s", "e1", None, None)
            .await
            .unwrap();
        let last = store.changes_since("t", "s", 3).unwrap();
        assert_eq!(
            (last[0].seq, last[0].id.as_str(), last[0].deleted),
            (4, "e1", true)
        );
    }
}
