//! What the engines need of storage, one trait per aggregate, so that an engine
//! can take `Arc<dyn ObjectStore>` (or a generic) instead of the sled [`Store`],
//! and a second backend (PostgreSQL) can stand in for sled.
//!
//! | trait            | aggregate                                                        |
//! |------------------|------------------------------------------------------------------|
//! | [`Durable`]      | making writes durable (`flush`); every writing trait requires it |
//! | [`BookingStore`] | bookings, their time index and UIDs, Idempotency-Keys            |
//! | [`ObjectStore`]  | calendar objects, their busy index and UIDs, free/busy reads     |
//! | [`ChangeLog`]    | tenant versions, per-collection change logs (sync tokens), each resource's view of the bookings log |
//! | [`SourceStore`]  | sources, sync status and log, provider mirror, feed digests, tokens |
//! | [`ExportStore`]  | export mapping, export state (cursor into the bookings log)      |
//! | [`InboxStore`]   | scheduling inboxes and the outbox that feeds them                |
//! | [`ConflictStore`]| conflict records                                                 |
//! | [`TenantStore`]  | tenants provisioned at run time; removing all of a tenant's data  |
//! | [`Backend`]      | all of the above: what [`crate::conformance`] checks             |
//!
//! Each method mirrors the inherent [`Store`] method of the same name: same
//! arguments, same result, same [`StoreError`], same durability promise (a
//! method documented "durable when it returns" must not return `Ok` before
//! the write would survive a crash; "durable with the next flush" may wait for
//! [`Durable::flush`]). The sled implementations only delegate. Calls on a
//! concrete `Store` still reach the inherent methods, so callers are unchanged.
//!
//! Three shapes differ, to keep the traits object-safe: async methods return a
//! boxed [`StoreFuture`]; methods that take a closure take `&dyn Fn`; methods that
//! return an iterator return a boxed [`StoreIter`]. A prepared mirror batch is
//! a boxed [`PreparedMirrorWrites`].
//!
//! Writes that are atomic across aggregates (a booking with its change-log entry
//! and its scheduling messages; an object with its busy index and change log)
//! stay atomic: such a method sits in the trait of the record it writes, and a
//! backend commits everything it touches in one transaction.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};

use crate::model::{
    Booking, BusyKind, CalendarObject, Conflict, Source, Span, SyncLog, SyncStatus,
};
use crate::{
    BusyEntry, Change, ConflictPage, DeleteOutcome, ExportRecord, ExportState, IdempotencyClaim,
    InboxDelete, InboxItem, IndexedBooking, MirrorWrites, ObjectOutcome, ObjectText, ObjectWrite,
    Outgoing, Precondition, ProvisionedTenant, Store, StoreError, TenantVersion, WriteOutcome,
};

/// The future of an async store method (boxed, so the traits stay object-safe).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Records read one at a time (collection listings stream them).
pub type StoreIter<T> = Box<dyn Iterator<Item = Result<T, StoreError>> + Send>;

/// Mirror writes prepared by [`SourceStore::mirror_changes`], applied later so a
/// large import can write while it goes on; durable with the next flush.
pub trait PreparedMirrorWrites: Send {
    fn apply(self: Box<Self>) -> Result<(), StoreError>;
}

/// Making writes durable.
pub trait Durable: Send + Sync {
    /// Makes everything written so far durable (callers of the "durable with the
    /// next flush" methods call it before they acknowledge).
    fn flush(&self) -> StoreFuture<'_, ()>;
}

/// Bookings: records, their time index, UIDs and Idempotency-Keys. Every write
/// also appends to the bookings change log ([`crate::BOOKINGS_COLLECTION`]) and
/// moves the tenant's version, in the same transaction.
pub trait BookingStore: Durable {
    fn booking(&self, tenant: &str, id: &str) -> Result<Option<Booking>, StoreError>;
    /// Bookings overlapping `window` (touching ends do not), ordered by start.
    fn bookings_in(&self, tenant: &str, window: Span) -> Result<Vec<Booking>, StoreError>;
    /// Ids of the bookings overlapping `window`, ordered by start.
    fn booking_ids_in(&self, tenant: &str, window: Span) -> Result<Vec<String>, StoreError>;
    /// A tenant's bookings one at a time, in id order.
    fn iter_bookings(&self, tenant: &str) -> StoreIter<Booking>;
    /// The id of the booking with this iCalendar UID, if any.
    fn booking_with_uid(&self, tenant: &str, uid: &str) -> Result<Option<String>, StoreError>;
    /// Insert or replace if `precondition` holds; durable when it returns.
    fn put_booking<'a>(
        &'a self,
        booking: &'a Booking,
        precondition: &'a Precondition,
        claim: Option<&'a IdempotencyClaim>,
    ) -> StoreFuture<'a, WriteOutcome>;
    /// [`BookingStore::put_booking`], visible at once but durable only with the
    /// next flush; `outgoing` is stored in the same transaction.
    fn commit_booking(
        &self,
        booking: &Booking,
        precondition: &Precondition,
        claim: Option<&IdempotencyClaim>,
        outgoing: Option<&Outgoing>,
    ) -> Result<WriteOutcome, StoreError>;
    /// Deletes if `etag` (when given) matches; durable when it returns.
    fn delete_booking<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        etag: Option<&'a str>,
        outgoing: Option<&'a Outgoing>,
    ) -> StoreFuture<'a, DeleteOutcome>;
    /// What an Idempotency-Key claim would find: a replay, a reuse, or nothing.
    fn idempotency_outcome(
        &self,
        tenant: &str,
        claim: &IdempotencyClaim,
    ) -> Result<Option<WriteOutcome>, StoreError>;
    /// Forgets Idempotency-Keys older than [`crate::IDEMPOTENCY_TTL_MS`]; how many.
    fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<usize, StoreError>;
    /// Bookings overlapping `window` as their time index holds them: id, span,
    /// busy kind (`Free` for cancelled ones) and the resources each takes, as
    /// last written; ordered by start, then id. Free/busy, slots and conflict
    /// checks run on this alone, so it must not read booking records.
    fn booking_index(&self, tenant: &str, window: Span) -> Result<Vec<IndexedBooking>, StoreError>;
    /// Busy time of bookings overlapping `window` (cancelled ones excluded),
    /// ordered by start.
    fn booking_busy(&self, tenant: &str, window: Span) -> Result<Vec<BusyEntry>, StoreError> {
        Ok(self
            .booking_index(tenant, window)?
            .iter()
            .filter(|b| b.kind != BusyKind::Free)
            .map(|b| b.busy_entry(None))
            .collect())
    }
}

/// Calendar objects of a tenant's sources: records, their busy index and UIDs.
/// Every logged write appends to the source's change log and moves the tenant's
/// version in the same transaction.
pub trait ObjectStore: Durable {
    fn object(
        &self,
        tenant: &str,
        source: &str,
        id: &str,
    ) -> Result<Option<CalendarObject>, StoreError>;
    /// An object's ETag and text, without the rest of its record.
    fn object_text(
        &self,
        tenant: &str,
        source: &str,
        id: &str,
    ) -> Result<Option<ObjectText>, StoreError>;
    /// A source's objects one at a time, in id order.
    fn iter_objects(&self, tenant: &str, source: &str) -> StoreIter<CalendarObject>;
    /// A source's objects, in id order.
    fn objects(&self, tenant: &str, source: &str) -> Result<Vec<CalendarObject>, StoreError>;
    /// Ids of a source's objects, in id order.
    fn object_ids(&self, tenant: &str, source: &str) -> Result<Vec<String>, StoreError>;
    /// Stores an object and replaces its index entries atomically (see [`ObjectWrite`]).
    fn put_object<'a>(
        &'a self,
        tenant: &'a str,
        source: &'a str,
        object: &'a CalendarObject,
        precondition: &'a Precondition,
        mode: ObjectWrite,
    ) -> StoreFuture<'a, ObjectOutcome>;
    /// [`ObjectStore::put_object`], storing `outgoing` in the same transaction.
    fn put_object_sending<'a>(
        &'a self,
        tenant: &'a str,
        source: &'a str,
        object: &'a CalendarObject,
        precondition: &'a Precondition,
        mode: ObjectWrite,
        outgoing: Option<&'a Outgoing>,
    ) -> StoreFuture<'a, ObjectOutcome>;
    /// Deletes an object and its index entries if `etag` (when given) matches;
    /// durable when it returns.
    fn delete_object<'a>(
        &'a self,
        tenant: &'a str,
        source: &'a str,
        id: &'a str,
        etag: Option<&'a str>,
        outgoing: Option<&'a Outgoing>,
    ) -> StoreFuture<'a, ObjectOutcome>;
    /// [`ObjectStore::delete_object`] within a batch: durable with the next flush.
    fn delete_object_batched(
        &self,
        tenant: &str,
        source: &str,
        id: &str,
        etag: Option<&str>,
    ) -> Result<ObjectOutcome, StoreError>;
    /// Many objects of one source in one transaction, each as an unconditional
    /// [`ObjectWrite::BatchedChange`]; durable with the next flush.
    fn put_objects_batched(
        &self,
        tenant: &str,
        source: &str,
        objects: &[CalendarObject],
    ) -> Result<Vec<ObjectOutcome>, StoreError>;
    /// Blocking (span, kind) pairs overlapping `window` from bookings and the
    /// objects of `sources` (all when None; [`crate::model::BOOKINGS_SOURCE`]
    /// names the bookings): the free/busy hot path, in no particular order.
    fn busy_spans(
        &self,
        tenant: &str,
        window: Span,
        sources: Option<&[String]>,
    ) -> Result<Vec<(Span, BusyKind)>, StoreError>;
    /// Blocking occurrences of objects of the sources `wanted` accepts,
    /// overlapping `window`, ordered by start, source and object.
    fn object_busy_in(
        &self,
        tenant: &str,
        window: Span,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<BusyEntry>, StoreError>;
    /// Occurrences of every kind (`Free` included) overlapping `window`.
    fn object_occurrences(&self, tenant: &str, window: Span) -> Result<Vec<BusyEntry>, StoreError>;
}

/// Where a tenant's data stands: its version and each collection's change log
/// (bookings and every source), which sync tokens point into.
pub trait ChangeLog: Send + Sync {
    /// The tenant's newest change (seq 0: none yet).
    fn version(&self, tenant: &str) -> Result<TenantVersion, StoreError>;
    /// Changes of a collection after `since`, oldest first.
    fn changes_since(
        &self,
        tenant: &str,
        collection: &str,
        since: u64,
    ) -> Result<Vec<Change>, StoreError>;
    /// Seq of the newest change in a collection (0: none yet).
    fn collection_version(&self, tenant: &str, collection: &str) -> Result<u64, StoreError>;
    /// Seq of the newest change to the bookings of `resource`: those taking it
    /// or taking it before the change ([`crate::model::takes`]: a booking
    /// naming none takes every resource); 0: none yet. It moves with such
    /// changes only, in the transaction that logs them, and is never below
    /// the seq of a bookings-log entry [`Change::for_resource`] keeps for
    /// `resource`.
    fn resource_version(&self, tenant: &str, resource: &str) -> Result<u64, StoreError>;
    /// The bookings log after `since` as `resource` sees it, oldest first:
    /// changes to bookings that take or took it, a booking that stopped
    /// taking it as a deletion ([`Change::for_resource`]).
    fn resource_changes_since(
        &self,
        tenant: &str,
        resource: &str,
        since: u64,
    ) -> Result<Vec<Change>, StoreError> {
        Ok(self
            .changes_since(tenant, crate::BOOKINGS_COLLECTION, since)?
            .iter()
            .filter_map(|c| c.for_resource(resource))
            .collect())
    }
}

/// Sources and what sync keeps per source.
pub trait SourceStore: Durable {
    /// Durable with the next flush.
    fn put_source(&self, tenant: &str, source: &Source) -> Result<(), StoreError>;
    fn source(&self, tenant: &str, id: &str) -> Result<Option<Source>, StoreError>;
    /// A tenant's sources, in id order.
    fn sources(&self, tenant: &str) -> Result<Vec<Source>, StoreError>;
    /// Removes a source with its objects (a deletion logged per object) and
    /// everything sync and export kept for it; false if there was none.
    /// Durable when it returns.
    fn delete_source<'a>(&'a self, tenant: &'a str, source: &'a str) -> StoreFuture<'a, bool>;
    /// The stored status, or the default.
    fn sync_status(&self, tenant: &str, source: &str) -> Result<SyncStatus, StoreError>;
    fn put_sync_status(
        &self,
        tenant: &str,
        source: &str,
        status: &SyncStatus,
    ) -> Result<(), StoreError>;
    /// Appends a run, keeping the newest [`crate::SYNC_LOG_LIMIT`].
    fn append_sync_log(&self, tenant: &str, source: &str, log: &SyncLog) -> Result<(), StoreError>;
    /// The source's runs, newest first.
    fn sync_logs(&self, tenant: &str, source: &str) -> Result<Vec<SyncLog>, StoreError>;
    fn feed_digests(&self, tenant: &str, source: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn put_feed_digests(
        &self,
        tenant: &str,
        source: &str,
        digests: Option<&[u8]>,
    ) -> Result<(), StoreError>;
    /// The mirrored provider items of one series, in item order.
    fn mirror_series(
        &self,
        tenant: &str,
        source: &str,
        series: &str,
    ) -> Result<Vec<serde_json::Value>, StoreError>;
    /// Every (series, item) of a source's mirror, in order.
    fn mirror_keys(&self, tenant: &str, source: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// Stores (`Some`) or removes (`None`) one item.
    fn put_mirror_item(
        &self,
        tenant: &str,
        source: &str,
        series: &str,
        item: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(), StoreError>;
    /// Stores one item unless the same is stored; whether it wrote.
    fn put_mirror_item_if_changed(
        &self,
        tenant: &str,
        source: &str,
        series: &str,
        item: &str,
        body: &serde_json::Value,
    ) -> Result<bool, StoreError>;
    /// The writes for many (series, item, body) and, per item, whether it
    /// differs from the mirror; nothing is written until they are applied.
    fn mirror_changes<'i>(
        &self,
        tenant: &str,
        source: &str,
        items: &mut dyn Iterator<Item = (&'i str, &'i str, Option<&'i serde_json::Value>)>,
    ) -> Result<(Box<dyn PreparedMirrorWrites>, Vec<bool>), StoreError>;
    /// The encrypted token blob of a source.
    fn secret(&self, tenant: &str, source: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Durable when it returns.
    fn put_secret<'a>(
        &'a self,
        tenant: &'a str,
        source: &'a str,
        sealed: &'a [u8],
    ) -> StoreFuture<'a, ()>;
    /// Durable with the next flush.
    fn put_secret_batched(
        &self,
        tenant: &str,
        source: &str,
        sealed: &[u8],
    ) -> Result<(), StoreError>;
}

/// Booking export: per (source, booking) the exported event, per source where
/// delivery stands. The outbox is the bookings change log itself
/// ([`ExportStore::booking_changes_after`]); the cursor in [`ExportState`] acks it.
pub trait ExportStore: Durable {
    fn export_record(
        &self,
        tenant: &str,
        source: &str,
        booking: &str,
    ) -> Result<Option<ExportRecord>, StoreError>;
    /// Stores or forgets a record, keeping the event-id index in step.
    fn put_export_record(
        &self,
        tenant: &str,
        source: &str,
        booking: &str,
        record: Option<&ExportRecord>,
    ) -> Result<(), StoreError>;
    /// The booking exported as event `remote_id`, if any.
    fn exported_booking(
        &self,
        tenant: &str,
        source: &str,
        remote_id: &str,
    ) -> Result<Option<String>, StoreError>;
    /// Every (booking id, record) of a source, in booking id order.
    fn export_records(
        &self,
        tenant: &str,
        source: &str,
    ) -> Result<Vec<(String, ExportRecord)>, StoreError>;
    fn export_parked_count(&self, tenant: &str, source: &str) -> Result<usize, StoreError>;
    /// Up to `limit` bookings changes after `since`, oldest first.
    fn booking_changes_after(
        &self,
        tenant: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError>;
    /// The stored state, or the default (cursor 0).
    fn export_state(&self, tenant: &str, source: &str) -> Result<ExportState, StoreError>;
    fn put_export_state(
        &self,
        tenant: &str,
        source: &str,
        state: &ExportState,
    ) -> Result<(), StoreError>;
    /// Forgets a source's mappings (not its state).
    fn forget_export_mappings(&self, tenant: &str, source: &str) -> Result<(), StoreError>;
}

/// Scheduling inboxes (RFC 6638): messages delivered per user, with a change
/// log per inbox. Messages are staged by the booking and object writes that
/// send them ([`Outgoing`]) and moved in by [`InboxStore::deliver`].
pub trait InboxStore: Durable {
    /// A user's inbox, oldest message first.
    fn inbox_items(&self, tenant: &str, user: &str) -> Result<Vec<InboxItem>, StoreError>;
    fn inbox_item(
        &self,
        tenant: &str,
        user: &str,
        name: &str,
    ) -> Result<Option<InboxItem>, StoreError>;
    /// Seq of the inbox's newest change (0: none yet).
    fn inbox_version(&self, tenant: &str, user: &str) -> Result<u64, StoreError>;
    fn inbox_changes_since(
        &self,
        tenant: &str,
        user: &str,
        since: u64,
    ) -> Result<Vec<Change>, StoreError>;
    /// Delivers a staged entry (once: again, it adds nothing); the items added.
    /// Durable when it returns.
    fn deliver<'a>(
        &'a self,
        tenant: &'a str,
        outgoing: &'a Outgoing,
    ) -> StoreFuture<'a, Vec<InboxItem>>;
    /// Deletes a message if `etag` (when given) matches; durable when it returns.
    fn delete_inbox_item<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        name: &'a str,
        etag: Option<&'a str>,
    ) -> StoreFuture<'a, InboxDelete>;
    /// Removes every message of a user's inbox, each logged as a removal (the
    /// user was deleted); durable when it returns. The number removed.
    fn clear_inbox<'a>(&'a self, tenant: &'a str, user: &'a str) -> StoreFuture<'a, usize>;
}

/// Conflict records (a booking overlapped by calendar time that came later).
pub trait ConflictStore: Durable {
    /// One conflict by id.
    fn conflict(&self, tenant: &str, id: &str) -> Result<Option<Conflict>, StoreError>;
    /// One conflict by its full key.
    fn conflict_of(
        &self,
        tenant: &str,
        source: &str,
        object: &str,
        id: &str,
    ) -> Result<Option<Conflict>, StoreError>;
    fn object_conflicts(
        &self,
        tenant: &str,
        source: &str,
        object: &str,
    ) -> Result<Vec<Conflict>, StoreError>;
    /// Ids of a source's objects in an unresolved conflict.
    fn objects_in_open_conflicts(
        &self,
        tenant: &str,
        source: &str,
    ) -> Result<HashSet<String>, StoreError>;
    /// Every conflict of a tenant, open and closed.
    fn conflicts(&self, tenant: &str) -> Result<Vec<Conflict>, StoreError>;
    /// Durable when it returns.
    fn put_conflicts<'a>(
        &'a self,
        tenant: &'a str,
        conflicts: &'a [Conflict],
    ) -> StoreFuture<'a, ()>;
    /// Stores `put` and removes `remove` together; durable when it returns.
    fn replace_conflicts<'a>(
        &'a self,
        tenant: &'a str,
        put: &'a [Conflict],
        remove: &'a [Conflict],
    ) -> StoreFuture<'a, ()>;
    /// Up to `limit` conflicts `keep` accepts, after `after` (an earlier page's
    /// [`ConflictPage::next`]): every record once, even while others are written.
    fn conflicts_page(
        &self,
        tenant: &str,
        after: Option<&[u8]>,
        limit: usize,
        keep: &dyn Fn(&Conflict) -> bool,
    ) -> Result<ConflictPage, StoreError>;
}

/// Tenants provisioned at run time (the API's; `gateway.toml`'s have no record),
/// and the removal of everything a tenant owns.
pub trait TenantStore: Durable {
    /// Creates or replaces the record of `record.id`; durable when it returns.
    fn put_tenant_record<'a>(&'a self, record: &'a ProvisionedTenant) -> StoreFuture<'a, ()>;
    fn tenant_record(&self, id: &str) -> Result<Option<ProvisionedTenant>, StoreError>;
    /// Every record, in id order.
    fn tenant_records(&self) -> Result<Vec<ProvisionedTenant>, StoreError>;
    /// Forgets the record (not the data); whether there was one. Durable when
    /// it returns.
    fn delete_tenant_record<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;
    /// Removes every record of the tenant in every aggregate above (bookings,
    /// Idempotency-Keys, sources, objects, change logs, sync state and logs,
    /// mirror, tokens, export mapping and state, inboxes and outbox,
    /// conflicts), and nothing of another tenant. The tenant's version moves
    /// on, never back (a re-created tenant's sync tokens and ETags cannot match
    /// old ones).
    /// Need not be atomic; durable when it returns.
    fn delete_tenant_data<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, ()>;
}

/// A whole storage backend: every aggregate. [`crate::conformance::run_all`]
/// checks one; implement the traits and it is a `Backend`.
pub trait Backend:
    BookingStore
    + ObjectStore
    + ChangeLog
    + SourceStore
    + ExportStore
    + InboxStore
    + ConflictStore
    + TenantStore
{
}

impl<T> Backend for T where
    T: BookingStore
        + ObjectStore
        + ChangeLog
        + SourceStore
        + ExportStore
        + InboxStore
        + ConflictStore
        + TenantStore
        + ?Sized
{
}

// The sled backend: every method delegates to the inherent `Store` method of the
// same name (inherent methods win over trait methods in `Store::name` paths).

impl PreparedMirrorWrites for MirrorWrites {
    fn apply(self: Box<Self>) -> Result<(), StoreError> {
        MirrorWrites::apply(*self)
    }
}

impl Durable for Store {
    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(Store::flush(self))
    }
}

impl BookingStore for Store {
    fn booking(&self, tenant: &str, id: &str) -> Result<Option<Booking>, StoreError> {
        Store::booking(self, tenant, id)
    }
    fn bookings_in(&self, tenant: &str, window: Span) -> Result<Vec<Booking>, StoreError> {
        Store::bookings_in(self, tenant, window)
    }
    fn booking_ids_in(&self, tenant: &str, window: Span) -> Result<Vec<String>, StoreError> {
        Store::booking_ids_in(self, tenant, window)
    }
    fn iter_bookings(&self, tenant: &str) -> StoreIter<Booking> {
        Box::new(Store::iter_bookings(self, tenant))
    }
    fn booking_with_uid(&self, tenant: &str, uid: &str) -> Result<Option<String>, StoreError> {
        Store::booking_with_uid(self, tenant, uid)
    }
    fn put_booking<'a>(
        &'a self,
        booking: &'a Booking,
        precondition: &'a Precondition,
        claim: Option<&'a IdempotencyClaim>,
    ) -> StoreFuture<'a, WriteOutcome> {
        Box::pin(Store::put_booking(self, booking, precondition, claim))
    }
    fn commit_booking(
        &self,
        booking: &Booking,
        precondition: &Precondition,
        claim: Option<&IdempotencyClaim>,
        outgoing: Option<&Outgoing>,
    ) -> Result<WriteOutcome, StoreError> {
        Store::commit_booking(self, booking, precondition, claim, outgoing)
    }
    fn delete_booking<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        etag: Option<&'a str>,
        outgoing: Option<&'a Outgoing>,
    ) -> StoreFuture<'a, DeleteOutcome> {
        Box::pin(Store::delete_booking(self, tenant, id, etag, outgoing))
    }
    fn idempotency_outcome(
        &self,
        tenant: &str,
        claim: &IdempotencyClaim,
    ) -> Result<Option<WriteOutcome>, StoreError> {
        Store::idempotency_outcome(self, tenant, claim)
    }
    fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        Store::purge_idempotency(self, now)
    }
    fn booking_index(&self, tenant: &str, window: Span) -> Result<Vec<IndexedBooking>, StoreError> {
        Store::booking_index(self, tenant, window)
    }
}

impl ObjectStore for Store {
    fn object(
        &self,
        tenant: &str,
        source: &str,
        id: &str,
    ) -> Result<Option<CalendarObject>, StoreError> {
        Store::object(self, tenant, source, id)
    }
    fn object_text(
        &self,
        tenant: &str,
        source: &str,
        id: &str,
    ) -> Result<Option<ObjectText>, StoreError> {
        Store::object_text(self, tenant, source, id)
    }
    fn iter_objects(&self, tenant: &str, source: &str) -> StoreIter<CalendarObject> {
        Box::new(Store::iter_objects(self, tenant, source))
    }
    fn objects(&self, tenant: &str, source: &str) -> Result<Vec<CalendarObject>, StoreError> {
        Store::objects(self, tenant, source)
    }
    fn object_ids(&self, tenant: &str, source: &str) -> Result<Vec<String>, StoreError> {
        Store::object_ids(self, tenant, source)
    }
    fn put_object<'a>(
        &'a self,
        tenant: &'a str,
        source: &'a str,
        object: &'a CalendarObject,
        precondition: &'a Precondition,
        mode: ObjectWrite,
    ) -> StoreFuture<'a, ObjectOutcome> {
        Box::pin(Store::put_object(
            self,
            tenant,
            source,
            object,
            precondition,
            mode,
        ))
    }
    fn put_object_sending<'a>(
        &'a self,
        tenant: &'a str,
        source: &'a str,
        object: &'a CalendarObject,
        precondition: &'a Precondition,
        mode: ObjectWrite,
        outgoing: Option<&'a Outgoing>,
    ) -> StoreFuture<'a, ObjectOutcome> {
        Box::pin(Store::put_object_sending(
            self,
            tenant,
            source,
            object,
            precondition,
            mode,
            outgoing,
        ))
    }
    fn delete_object<'a>(
        &'a self,
        tenant: &'a str,
        source: &'a str,
        id: &'a str,
        etag: Option<&'a str>,
        outgoing: Option<&'a Outgoing>,
    ) -> StoreFuture<'a, ObjectOutcome> {
        Box::pin(Store::delete_object(
            self, tenant, source, id, etag, outgoing,
        ))
    }
    fn delete_object_batched(
        &self,
        tenant: &str,
        source: &str,
        id: &str,
        etag: Option<&str>,
    ) -> Result<ObjectOutcome, StoreError> {
        Store::delete_object_batched(self, tenant, source, id, etag)
    }
    fn put_objects_batched(
        &self,
        tenant: &str,
        source: &str,
        objects: &[CalendarObject],
    ) -> Result<Vec<ObjectOutcome>, StoreError> {
        Store::put_objects_batched(self, tenant, source, objects)
    }
    fn busy_spans(
        &self,
        tenant: &str,
        window: Span,
        sources: Option<&[String]>,
    ) -> Result<Vec<(Span, BusyKind)>, StoreError> {
        Store::busy_spans(self, tenant, window, sources)
    }
    fn object_busy_in(
        &self,
        tenant: &str,
        window: Span,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<BusyEntry>, StoreError> {
        Store::object_busy_in(self, tenant, window, wanted)
    }
    fn object_occurrences(&self, tenant: &str, window: Span) -> Result<Vec<BusyEntry>, StoreError> {
        Store::object_occurrences(self, tenant, window)
    }
}

impl ChangeLog for Store {
    fn version(&self, tenant: &str) -> Result<TenantVersion, StoreError> {
        Store::version(self, tenant)
    }
    fn changes_since(
        &self,
        tenant: &str,
        collection: &str,
        since: u64,
    ) -> Result<Vec<Change>, StoreError> {
        Store::changes_since(self, tenant, collection, since)
    }
    fn collection_version(&self, tenant: &str, collection: &str) -> Result<u64, StoreError> {
        Store::collection_version(self, tenant, collection)
    }
    fn resource_version(&self, tenant: &str, resource: &str) -> Result<u64, StoreError> {
        Store::resource_version(self, tenant, resource)
    }
}

impl SourceStore for Store {
    fn put_source(&self, tenant: &str, source: &Source) -> Result<(), StoreError> {
        Store::put_source(self, tenant, source)
    }
    fn source(&self, tenant: &str, id: &str) -> Result<Option<Source>, StoreError> {
        Store::source(self, tenant, id)
    }
    fn sources(&self, tenant: &str) -> Result<Vec<Source>, StoreError> {
        Store::sources(self, tenant)
    }
    fn delete_source<'a>(&'a self, tenant: &'a str, source: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(Store::delete_source(self, tenant, source))
    }
    fn sync_status(&self, tenant: &str, source: &str) -> Result<SyncStatus, StoreError> {
        Store::sync_status(self, tenant, source)
    }
    fn put_sync_status(
        &self,
        tenant: &str,
        source: &str,
        status: &SyncStatus,
    ) -> Result<(), StoreError> {
        Store::put_sync_status(self, tenant, source, status)
    }
    fn append_sync_log(&self, tenant: &str, source: &str, log: &SyncLog) -> Result<(), StoreError> {
        Store::append_sync_log(self, tenant, source, log)
    }
    fn sync_logs(&self, tenant: &str, source: &str) -> Result<Vec<SyncLog>, StoreError> {
        Store::sync_logs(self, tenant, source)
    }
    fn feed_digests(&self, tenant: &str, source: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Store::feed_digests(self, tenant, source)
    }
    fn put_feed_digests(
        &self,
        tenant: &str,
        source: &str,
        digests: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        Store::put_feed_digests(self, tenant, source, digests)
    }
    fn mirror_series(
        &self,
        tenant: &str,
        source: &str,
        series: &str,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        Store::mirror_series(self, tenant, source, series)
    }
    fn mirror_keys(&self, tenant: &str, source: &str) -> Result<Vec<(String, String)>, StoreError> {
        Store::mirror_keys(self, tenant, source)
    }
    fn put_mirror_item(
        &self,
        tenant: &str,
        source: &str,
        series: &str,
        item: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        Store::put_mirror_item(self, tenant, source, series, item, body)
    }
    fn put_mirror_item_if_changed(
        &self,
        tenant: &str,
        source: &str,
        series: &str,
        item: &str,
        body: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        Store::put_mirror_item_if_changed(self, tenant, source, series, item, body)
    }
    fn mirror_changes<'i>(
        &self,
        tenant: &str,
        source: &str,
        items: &mut dyn Iterator<Item = (&'i str, &'i str, Option<&'i serde_json::Value>)>,
    ) -> Result<(Box<dyn PreparedMirrorWrites>, Vec<bool>), StoreError> {
        let (writes, changed) = Store::mirror_changes(self, tenant, source, items)?;
        Ok((Box::new(writes), changed))
    }
    fn secret(&self, tenant: &str, source: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Store::secret(self, tenant, source)
    }
    fn put_secret<'a>(
        &'a self,
        tenant: &'a str,
        source: &'a str,
        sealed: &'a [u8],
    ) -> StoreFuture<'a, ()> {
        Box::pin(Store::put_secret(self, tenant, source, sealed))
    }
    fn put_secret_batched(
        &self,
        tenant: &str,
        source: &str,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        Store::put_secret_batched(self, tenant, source, sealed)
    }
}

impl ExportStore for Store {
    fn export_record(
        &self,
        tenant: &str,
        source: &str,
        booking: &str,
    ) -> Result<Option<ExportRecord>, StoreError> {
        Store::export_record(self, tenant, source, booking)
    }
    fn put_export_record(
        &self,
        tenant: &str,
        source: &str,
        booking: &str,
        record: Option<&ExportRecord>,
    ) -> Result<(), StoreError> {
        Store::put_export_record(self, tenant, source, booking, record)
    }
    fn exported_booking(
        &self,
        tenant: &str,
        source: &str,
        remote_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Store::exported_booking(self, tenant, source, remote_id)
    }
    fn export_records(
        &self,
        tenant: &str,
        source: &str,
    ) -> Result<Vec<(String, ExportRecord)>, StoreError> {
        Store::export_records(self, tenant, source)
    }
    fn export_parked_count(&self, tenant: &str, source: &str) -> Result<usize, StoreError> {
        Store::export_parked_count(self, tenant, source)
    }
    fn booking_changes_after(
        &self,
        tenant: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        Store::booking_changes_after(self, tenant, since, limit)
    }
    fn export_state(&self, tenant: &str, source: &str) -> Result<ExportState, StoreError> {
        Store::export_state(self, tenant, source)
    }
    fn put_export_state(
        &self,
        tenant: &str,
        source: &str,
        state: &ExportState,
    ) -> Result<(), StoreError> {
        Store::put_export_state(self, tenant, source, state)
    }
    fn forget_export_mappings(&self, tenant: &str, source: &str) -> Result<(), StoreError> {
        Store::forget_export_mappings(self, tenant, source)
    }
}

impl InboxStore for Store {
    fn inbox_items(&self, tenant: &str, user: &str) -> Result<Vec<InboxItem>, StoreError> {
        Store::inbox_items(self, tenant, user)
    }
    fn inbox_item(
        &self,
        tenant: &str,
        user: &str,
        name: &str,
    ) -> Result<Option<InboxItem>, StoreError> {
        Store::inbox_item(self, tenant, user, name)
    }
    fn inbox_version(&self, tenant: &str, user: &str) -> Result<u64, StoreError> {
        Store::inbox_version(self, tenant, user)
    }
    fn inbox_changes_since(
        &self,
        tenant: &str,
        user: &str,
        since: u64,
    ) -> Result<Vec<Change>, StoreError> {
        Store::inbox_changes_since(self, tenant, user, since)
    }
    fn deliver<'a>(
        &'a self,
        tenant: &'a str,
        outgoing: &'a Outgoing,
    ) -> StoreFuture<'a, Vec<InboxItem>> {
        Box::pin(Store::deliver(self, tenant, outgoing))
    }
    fn delete_inbox_item<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        name: &'a str,
        etag: Option<&'a str>,
    ) -> StoreFuture<'a, InboxDelete> {
        Box::pin(Store::delete_inbox_item(self, tenant, user, name, etag))
    }
    fn clear_inbox<'a>(&'a self, tenant: &'a str, user: &'a str) -> StoreFuture<'a, usize> {
        Box::pin(Store::clear_inbox(self, tenant, user))
    }
}

impl ConflictStore for Store {
    fn conflict(&self, tenant: &str, id: &str) -> Result<Option<Conflict>, StoreError> {
        Store::conflict(self, tenant, id)
    }
    fn conflict_of(
        &self,
        tenant: &str,
        source: &str,
        object: &str,
        id: &str,
    ) -> Result<Option<Conflict>, StoreError> {
        Store::conflict_of(self, tenant, source, object, id)
    }
    fn object_conflicts(
        &self,
        tenant: &str,
        source: &str,
        object: &str,
    ) -> Result<Vec<Conflict>, StoreError> {
        Store::object_conflicts(self, tenant, source, object)
    }
    fn objects_in_open_conflicts(
        &self,
        tenant: &str,
        source: &str,
    ) -> Result<HashSet<String>, StoreError> {
        Store::objects_in_open_conflicts(self, tenant, source)
    }
    fn conflicts(&self, tenant: &str) -> Result<Vec<Conflict>, StoreError> {
        Store::conflicts(self, tenant)
    }
    fn put_conflicts<'a>(
        &'a self,
        tenant: &'a str,
        conflicts: &'a [Conflict],
    ) -> StoreFuture<'a, ()> {
        Box::pin(Store::put_conflicts(self, tenant, conflicts))
    }
    fn replace_conflicts<'a>(
        &'a self,
        tenant: &'a str,
        put: &'a [Conflict],
        remove: &'a [Conflict],
    ) -> StoreFuture<'a, ()> {
        Box::pin(Store::replace_conflicts(self, tenant, put, remove))
    }
    fn conflicts_page(
        &self,
        tenant: &str,
        after: Option<&[u8]>,
        limit: usize,
        keep: &dyn Fn(&Conflict) -> bool,
    ) -> Result<ConflictPage, StoreError> {
        Store::conflicts_page(self, tenant, after, limit, keep)
    }
}

impl TenantStore for Store {
    fn put_tenant_record<'a>(&'a self, record: &'a ProvisionedTenant) -> StoreFuture<'a, ()> {
        Box::pin(Store::put_tenant_record(self, record))
    }
    fn tenant_record(&self, id: &str) -> Result<Option<ProvisionedTenant>, StoreError> {
        Store::tenant_record(self, id)
    }
    fn tenant_records(&self) -> Result<Vec<ProvisionedTenant>, StoreError> {
        Store::tenant_records(self)
    }
    fn delete_tenant_record<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(Store::delete_tenant_record(self, id))
    }
    fn delete_tenant_data<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(Store::delete_tenant_data(self, tenant))
    }
}
