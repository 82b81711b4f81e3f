//! The backend conformance suite: the contract of the [store traits](crate::traits)
//! as executable checks. Every backend runs all of it — sled in
//! `tests/conformance_sled.rs`, a PostgreSQL backend in its own test — so the
//! engines can rely on the contract, not on one backend's behaviour.
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread")]
//! async fn my_backend_conforms() {
//!     let ran = calgate_store::conformance::run_all(|| async { MyBackend::fresh().await }).await;
//!     assert_eq!(ran, calgate_store::conformance::CHECKS.len());
//! }
//! ```
//!
//! Each check gets a fresh, empty backend and panics (like `assert!`) when the
//! backend breaks the contract; [`run_all`] names each check on stderr before it
//! runs, so a failure says which one. The checks are public, so a backend under
//! construction can run them one at a time. They use only the trait methods.
//!
//! This is test code compiled into the library (it needs nothing the library
//! does not): panicking on a failed expectation is its purpose.

use std::future::Future;

use chrono::{DateTime, FixedOffset, Utc};

use crate::model::{
    BOOKINGS_SOURCE, Booking, BookingStatus, BookingTime, BusyKind, BusySpan, CalendarObject,
    Conflict, Cursor, Source, Span, SyncLog, SyncStatus, WebhookState,
};
use crate::traits::Backend;
use crate::{
    BOOKINGS_COLLECTION, DeleteOutcome, Delivery, ExportRecord, ExportState, IDEMPOTENCY_TTL_MS,
    INBOX_CAPACITY, IdempotencyClaim, InboxDelete, ObjectOutcome, ObjectWrite, Outgoing, Parked,
    Precondition, SYNC_LOG_LIMIT, TenantVersion, WriteOutcome,
};
use calgate_model::provisioned::{
    ProvisionedKey, ProvisionedTenant, ProvisionedUser, TenantSettings,
};

const T: &str = "tenant-a";
const OTHER: &str = "tenant-b";
const HOUR: i64 = 3_600_000;
/// 2030-01-01T00:00:00Z: checks work in hours from here.
const BASE: i64 = 1_893_456_000_000;

fn h(hours: i64) -> i64 {
    BASE + hours * HOUR
}

fn window(from_h: i64, to_h: i64) -> Span {
    Span::new(h(from_h), h(to_h))
}

fn instant(ms: i64) -> DateTime<FixedOffset> {
    DateTime::from_timestamp_millis(ms)
        .expect("test instants are in range")
        .fixed_offset()
}

fn fixed_time() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(BASE).expect("test instants are in range")
}

/// A confirmed booking from hour `start` to hour `end`, revision `rev`.
fn booking(tenant: &str, id: &str, start: i64, end: i64, rev: u32) -> Booking {
    Booking {
        id: id.into(),
        uid: format!("{id}@conformance"),
        tenant: tenant.into(),
        time: BookingTime::Timed {
            start: instant(h(start)),
            end: instant(h(end)),
        },
        time_zone: "UTC".parse().expect("UTC is a zone"),
        title: format!("booking {id}"),
        service: None,
        customer: None,
        location: None,
        notes: None,
        status: BookingStatus::Confirmed,
        metadata: serde_json::Map::new(),
        created: fixed_time(),
        updated: fixed_time(),
        sequence: rev,
        etag: format!("\"{id}-{rev}\""),
        calendar_text: None,
        calendar_text_sequence: None,
        resources: Vec::new(),
    }
}

/// A calendar object with one occurrence per (start hour, end hour, kind).
fn object(id: &str, rev: u32, occurrences: &[(i64, i64, BusyKind)]) -> CalendarObject {
    CalendarObject {
        id: id.into(),
        uid: Some(format!("{id}@conformance")),
        ics: format!("BEGIN:VCALENDAR\r\nX-REV:{rev}\r\nEND:VCALENDAR\r\n"),
        etag: format!("\"{id}-{rev}\""),
        updated: fixed_time(),
        recurring: occurrences.len() > 1,
        diagnostics: Vec::new(),
        occurrences: occurrences
            .iter()
            .map(|&(s, e, kind)| BusySpan {
                span: window(s, e),
                kind,
            })
            .collect(),
    }
}

fn claim(key: &str, fingerprint: &str) -> IdempotencyClaim {
    IdempotencyClaim {
        api_key: "api-key".into(),
        key: key.into(),
        fingerprint: fingerprint.into(),
    }
}

fn conflict(id: &str, source: &str, object: &str, resolved: bool) -> Conflict {
    Conflict {
        id: id.into(),
        booking_id: format!("booking-of-{id}"),
        source: source.into(),
        object_id: object.into(),
        span: window(0, 1),
        occurrences: 1,
        kind: BusyKind::Busy,
        detected: fixed_time(),
        acknowledged: None,
        resolved: resolved.then(fixed_time),
        webhook: WebhookState::default(),
    }
}

fn sync_log(n: u32) -> SyncLog {
    SyncLog {
        started: fixed_time(),
        duration_ms: u64::from(n),
        mode: "full".into(),
        created: n,
        updated: 0,
        deleted: 0,
        error: None,
        skipped: Vec::new(),
        skipped_total: 0,
    }
}

fn written(outcome: &WriteOutcome) -> TenantVersion {
    match outcome {
        WriteOutcome::Written(v) => *v,
        other => panic!("expected a written booking, got {other:?}"),
    }
}

fn object_written(outcome: &ObjectOutcome) -> TenantVersion {
    match outcome {
        ObjectOutcome::Written(v) => *v,
        other => panic!("expected a written object, got {other:?}"),
    }
}

fn ids<'a>(items: impl IntoIterator<Item = &'a Booking>) -> Vec<&'a str> {
    items.into_iter().map(|b| b.id.as_str()).collect()
}

async fn create<B: Backend + ?Sized>(store: &B, b: &Booking) -> TenantVersion {
    let outcome = store
        .put_booking(b, &Precondition::MustNotExist, None)
        .await
        .expect("put_booking");
    written(&outcome)
}

async fn put<B: Backend + ?Sized>(store: &B, source: &str, o: &CalendarObject) -> TenantVersion {
    let outcome = store
        .put_object(T, source, o, &Precondition::None, ObjectWrite::Change)
        .await
        .expect("put_object");
    object_written(&outcome)
}

/// Changes of a collection after `since` as (seq, id, deleted).
fn log<B: Backend + ?Sized>(store: &B, collection: &str, since: u64) -> Vec<(u64, String, bool)> {
    store
        .changes_since(T, collection, since)
        .expect("changes_since")
        .into_iter()
        .map(|c| (c.seq, c.id, c.deleted))
        .collect()
}

fn busy_starts<B: Backend + ?Sized>(
    store: &B,
    within: Span,
    sources: Option<&[String]>,
) -> Vec<(i64, BusyKind)> {
    let mut spans: Vec<(i64, BusyKind)> = store
        .busy_spans(T, within, sources)
        .expect("busy_spans")
        .into_iter()
        .map(|(span, kind)| ((span.start - BASE) / HOUR, kind))
        .collect();
    spans.sort();
    spans
}

macro_rules! suite {
    ($($check:ident),* $(,)?) => {
        /// Every check, in the order [`run_all`] runs them.
        pub const CHECKS: &[&str] = &[$(stringify!($check)),*];

        /// Runs every check, each against a backend `fresh` makes empty for
        /// it; returns how many ran (all of [`CHECKS`], or it panicked).
        pub async fn run_all<B, F, Fut>(mut fresh: F) -> usize
        where
            B: Backend,
            F: FnMut() -> Fut,
            Fut: Future<Output = B>,
        {
            let mut ran = 0;
            $(
                eprintln!("store conformance: {}", stringify!($check));
                let store = fresh().await;
                $check(&store).await;
                drop(store);
                ran += 1;
            )*
            ran
        }
    };
}

suite!(
    booking_create_read_replace,
    booking_preconditions,
    booking_delete,
    booking_time_queries_treat_touching_as_apart,
    booking_move_reindexes,
    booking_status_sets_busy_kind,
    booking_index_names_the_resources_taken,
    booking_uids_are_unique_per_tenant,
    bookings_list_in_id_order,
    tenants_are_isolated,
    committed_booking_is_visible_before_flush,
    idempotency_replays_and_refuses_reuse,
    idempotency_purge_forgets_expired_keys,
    versions_move_with_every_logged_write,
    change_log_answers_sync_tokens,
    each_resource_sees_the_changes_of_its_bookings,
    object_round_trip,
    object_preconditions,
    object_uids_are_unique_per_source,
    object_writes_update_the_busy_index,
    busy_spans_filter_by_source,
    object_busy_in_orders_and_filters,
    object_delete,
    reindex_writes_are_not_logged,
    batched_object_writes,
    batched_deletes_are_logged,
    source_round_trip,
    delete_source_removes_what_it_owns,
    sync_status_round_trip,
    sync_log_keeps_the_newest,
    mirror_items_round_trip,
    mirror_changes_apply_later,
    feed_digests_and_secrets,
    export_mapping_round_trip,
    export_outbox_is_the_bookings_log,
    inbox_delivery_list_delete,
    inbox_delivery_happens_once,
    inbox_keeps_its_capacity,
    clearing_an_inbox_logs_each_removal,
    refused_writes_send_nothing,
    conflicts_round_trip,
    conflict_pages_see_every_record_once,
    flush_makes_writes_durable,
    tenant_records_round_trip,
    delete_tenant_data_removes_that_tenant_only,
);

/// A booking reads back as written; a replace with the right ETag wins and
/// moves the version on.
pub async fn booking_create_read_replace<B: Backend + ?Sized>(store: &B) {
    let first = booking(T, "b1", 10, 11, 1);
    let v1 = create(store, &first).await;
    assert_eq!(
        store.booking(T, "b1").expect("booking"),
        Some(first.clone())
    );
    let second = booking(T, "b1", 10, 12, 2);
    let outcome = store
        .put_booking(&second, &Precondition::EtagIs(first.etag.clone()), None)
        .await
        .expect("put_booking");
    let v2 = written(&outcome);
    assert!(v2.seq > v1.seq, "a replace moves the version on");
    assert_eq!(store.booking(T, "b1").expect("booking"), Some(second));
    assert_eq!(store.booking(T, "missing").expect("booking"), None);
}

/// Preconditions: MustNotExist, MustExist and EtagIs refuse with what is stored.
pub async fn booking_preconditions<B: Backend + ?Sized>(store: &B) {
    let stored = booking(T, "b1", 10, 11, 1);
    create(store, &stored).await;
    let again = booking(T, "b1", 10, 11, 2);
    for pre in [
        Precondition::MustNotExist,
        Precondition::EtagIs("\"stale\"".into()),
    ] {
        let outcome = store.put_booking(&again, &pre, None).await.expect("put");
        match outcome {
            WriteOutcome::PreconditionFailed(Some(current)) => assert_eq!(*current, stored),
            other => panic!("{pre:?} on an existing booking: {other:?}"),
        }
    }
    let missing = booking(T, "b2", 10, 11, 1);
    for pre in [
        Precondition::MustExist,
        Precondition::EtagIs("\"b2-1\"".into()),
    ] {
        let outcome = store.put_booking(&missing, &pre, None).await.expect("put");
        assert!(
            matches!(outcome, WriteOutcome::PreconditionFailed(None)),
            "{pre:?} on a missing booking: {outcome:?}"
        );
    }
    let outcome = store
        .put_booking(&again, &Precondition::MustExist, None)
        .await
        .expect("put");
    written(&outcome);
    assert_eq!(store.booking(T, "b2").expect("booking"), None);
}

/// Delete checks the ETag, removes the booking from reads and the time index,
/// and says NotFound the second time.
pub async fn booking_delete<B: Backend + ?Sized>(store: &B) {
    let b = booking(T, "b1", 10, 11, 1);
    create(store, &b).await;
    match store
        .delete_booking(T, "b1", Some("\"stale\""), None)
        .await
        .expect("delete")
    {
        DeleteOutcome::PreconditionFailed(current) => assert_eq!(*current, b),
        other => panic!("delete with a stale ETag: {other:?}"),
    }
    let outcome = store
        .delete_booking(T, "b1", Some(&b.etag), None)
        .await
        .expect("delete");
    assert!(matches!(outcome, DeleteOutcome::Deleted(_)), "{outcome:?}");
    assert_eq!(store.booking(T, "b1").expect("booking"), None);
    assert!(store.bookings_in(T, window(0, 24)).expect("in").is_empty());
    assert!(
        store
            .booking_busy(T, window(0, 24))
            .expect("busy")
            .is_empty()
    );
    let again = store
        .delete_booking(T, "b1", None, None)
        .await
        .expect("delete");
    assert!(matches!(again, DeleteOutcome::NotFound), "{again:?}");
}

/// Time-range reads are half-open: intervals that only touch do not overlap.
pub async fn booking_time_queries_treat_touching_as_apart<B: Backend + ?Sized>(store: &B) {
    create(store, &booking(T, "late", 11, 12, 1)).await;
    create(store, &booking(T, "early", 10, 11, 1)).await;
    let found = |w: Span| {
        let bookings = store.bookings_in(T, w).expect("bookings_in");
        let by_id = store.booking_ids_in(T, w).expect("booking_ids_in");
        let names: Vec<String> = ids(&bookings).into_iter().map(str::to_owned).collect();
        assert_eq!(names, by_id, "bookings_in and booking_ids_in agree");
        by_id
    };
    assert_eq!(
        found(window(11, 12)),
        ["late"],
        "ends at 11 is not in [11, 12)"
    );
    assert_eq!(found(window(9, 10)), Vec::<String>::new(), "starts at 10");
    assert_eq!(found(window(12, 13)), Vec::<String>::new(), "ends at 12");
    let around = Span::new(h(11) - 1, h(11) + 1);
    assert_eq!(found(around), ["early", "late"], "ordered by start");
    assert_eq!(found(window(0, 24)), ["early", "late"]);
}

/// A booking moved in time is found at its new time only.
pub async fn booking_move_reindexes<B: Backend + ?Sized>(store: &B) {
    let b = booking(T, "b1", 10, 11, 1);
    create(store, &b).await;
    let moved = booking(T, "b1", 20, 21, 2);
    let outcome = store
        .put_booking(&moved, &Precondition::EtagIs(b.etag), None)
        .await
        .expect("put");
    written(&outcome);
    assert!(
        store
            .booking_ids_in(T, window(10, 11))
            .expect("ids")
            .is_empty()
    );
    assert_eq!(
        store.booking_ids_in(T, window(20, 21)).expect("ids"),
        ["b1"]
    );
    assert_eq!(
        busy_starts(store, window(0, 48), None),
        [(20, BusyKind::Busy)]
    );
}

/// Confirmed bookings are busy, tentative ones tentative, cancelled ones block
/// nothing (yet are still listed by time).
pub async fn booking_status_sets_busy_kind<B: Backend + ?Sized>(store: &B) {
    let confirmed = booking(T, "c", 10, 11, 1);
    let mut tentative = booking(T, "t", 12, 13, 1);
    tentative.status = BookingStatus::Tentative;
    let mut cancelled = booking(T, "x", 14, 15, 1);
    cancelled.status = BookingStatus::Cancelled;
    for b in [&confirmed, &tentative, &cancelled] {
        create(store, b).await;
    }
    let busy: Vec<(String, BusyKind, String)> = store
        .booking_busy(T, window(0, 24))
        .expect("booking_busy")
        .into_iter()
        .map(|e| (e.object, e.kind, e.source))
        .collect();
    assert_eq!(
        busy,
        [
            ("c".into(), BusyKind::Busy, BOOKINGS_SOURCE.into()),
            ("t".into(), BusyKind::Tentative, BOOKINGS_SOURCE.into()),
        ]
    );
    assert_eq!(
        busy_starts(store, window(0, 24), None),
        [(10, BusyKind::Busy), (12, BusyKind::Tentative)]
    );
    assert_eq!(
        store.booking_ids_in(T, window(0, 24)).expect("ids"),
        ["c", "t", "x"]
    );
}

/// The bookings' time index says what each booking takes, as last written:
/// a replace that changes only the resources changes them there too, a move
/// takes them along, and a booking naming none takes every resource.
pub async fn booking_index_names_the_resources_taken<B: Backend + ?Sized>(store: &B) {
    let taking = |id: &str, start: i64, resources: &[&str], rev: u32| {
        let mut b = booking(T, id, start, start + 1, rev);
        b.resources = resources.iter().map(|r| (*r).to_owned()).collect();
        b
    };
    let anna = taking("b1", 10, &["anna"], 1);
    create(store, &anna).await;
    create(store, &taking("b2", 11, &[], 1)).await;
    let mut cancelled = taking("b3", 12, &["ben", "room"], 1);
    cancelled.status = BookingStatus::Cancelled;
    create(store, &cancelled).await;
    let index = |w: Span| -> Vec<(String, i64, BusyKind, Vec<String>)> {
        store
            .booking_index(T, w)
            .expect("booking_index")
            .into_iter()
            .map(|b| (b.id, (b.span.start - BASE) / HOUR, b.kind, b.resources))
            .collect()
    };
    let strings = |rs: &[&str]| rs.iter().map(|r| (*r).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        index(window(0, 24)),
        [
            ("b1".into(), 10, BusyKind::Busy, strings(&["anna"])),
            ("b2".into(), 11, BusyKind::Busy, Vec::new()),
            ("b3".into(), 12, BusyKind::Free, strings(&["ben", "room"])),
        ],
        "ordered by start, every kind, with what each takes"
    );
    let entries = store
        .booking_index(T, window(0, 24))
        .expect("booking_index");
    assert!(entries[0].takes("anna") && !entries[0].takes("ben"));
    assert!(
        entries[1].takes("anna") && entries[1].takes("ben"),
        "naming none takes all"
    );
    // Only the resources change: the index follows.
    let ben = taking("b1", 10, &["ben"], 2);
    written(
        &store
            .put_booking(&ben, &Precondition::EtagIs(anna.etag.clone()), None)
            .await
            .expect("put"),
    );
    assert_eq!(
        index(window(10, 11)),
        [("b1".into(), 10, BusyKind::Busy, strings(&["ben"]))]
    );
    // Moved and changed at once: found at the new time only, with the new ones.
    let moved = taking("b1", 20, &["anna", "room"], 3);
    written(
        &store
            .put_booking(&moved, &Precondition::EtagIs(ben.etag.clone()), None)
            .await
            .expect("put"),
    );
    assert!(index(window(10, 11)).is_empty());
    assert_eq!(
        index(window(20, 21)),
        [("b1".into(), 20, BusyKind::Busy, strings(&["anna", "room"]))]
    );
    // Back to naming none: every resource again.
    let everyone = taking("b1", 20, &[], 4);
    written(
        &store
            .put_booking(&everyone, &Precondition::EtagIs(moved.etag.clone()), None)
            .await
            .expect("put"),
    );
    assert_eq!(
        index(window(20, 21)),
        [("b1".into(), 20, BusyKind::Busy, Vec::new())]
    );
    // booking_busy is the index's blocking entries.
    let busy: Vec<String> = store
        .booking_busy(T, window(0, 24))
        .expect("booking_busy")
        .into_iter()
        .map(|e| e.object)
        .collect();
    assert_eq!(busy, ["b2", "b1"]);
    store
        .delete_booking(T, "b1", None, None)
        .await
        .expect("delete");
    assert!(index(window(20, 21)).is_empty());
    assert!(
        store
            .booking_index(OTHER, window(0, 24))
            .expect("booking_index")
            .is_empty()
    );
}

/// Two bookings of a tenant never share a UID; deleting frees it; other
/// tenants have their own.
pub async fn booking_uids_are_unique_per_tenant<B: Backend + ?Sized>(store: &B) {
    let first = booking(T, "b1", 10, 11, 1);
    create(store, &first).await;
    let mut twin = booking(T, "b2", 12, 13, 1);
    twin.uid = first.uid.clone();
    let outcome = store
        .put_booking(&twin, &Precondition::MustNotExist, None)
        .await
        .expect("put");
    assert!(
        matches!(&outcome, WriteOutcome::UidConflict(owner) if owner == "b1"),
        "{outcome:?}"
    );
    assert_eq!(store.booking(T, "b2").expect("booking"), None);
    assert_eq!(
        store.booking_with_uid(T, &first.uid).expect("uid"),
        Some("b1".into())
    );
    let mut elsewhere = twin.clone();
    elsewhere.tenant = OTHER.into();
    written(
        &store
            .put_booking(&elsewhere, &Precondition::MustNotExist, None)
            .await
            .expect("put"),
    );
    store
        .delete_booking(T, "b1", None, None)
        .await
        .expect("delete");
    assert_eq!(store.booking_with_uid(T, &first.uid).expect("uid"), None);
    create(store, &twin).await;
    assert_eq!(
        store.booking_with_uid(T, &first.uid).expect("uid"),
        Some("b2".into())
    );
}

/// `iter_bookings` streams a tenant's bookings in id order.
pub async fn bookings_list_in_id_order<B: Backend + ?Sized>(store: &B) {
    for (id, start) in [("c", 1), ("a", 5), ("b", 3)] {
        create(store, &booking(T, id, start, start + 1, 1)).await;
    }
    let listed: Vec<Booking> = store
        .iter_bookings(T)
        .collect::<Result<_, _>>()
        .expect("iter_bookings");
    assert_eq!(ids(&listed), ["a", "b", "c"]);
    assert_eq!(store.iter_bookings(OTHER).count(), 0);
}

/// Nothing of one tenant is visible to another.
pub async fn tenants_are_isolated<B: Backend + ?Sized>(store: &B) {
    create(store, &booking(T, "b1", 10, 11, 1)).await;
    put(store, "cal", &object("o1", 1, &[(10, 11, BusyKind::Busy)])).await;
    store
        .put_source(T, &Source::new("cal", "Calendar"))
        .expect("put_source");
    assert_eq!(store.booking(OTHER, "b1").expect("booking"), None);
    assert!(
        store
            .bookings_in(OTHER, window(0, 24))
            .expect("in")
            .is_empty()
    );
    assert!(
        store
            .busy_spans(OTHER, window(0, 24), None)
            .expect("busy")
            .is_empty()
    );
    assert_eq!(store.object(OTHER, "cal", "o1").expect("object"), None);
    assert!(store.sources(OTHER).expect("sources").is_empty());
    assert_eq!(
        store.version(OTHER).expect("version"),
        TenantVersion::default()
    );
    assert!(
        store
            .changes_since(OTHER, BOOKINGS_COLLECTION, 0)
            .expect("changes")
            .is_empty()
    );
}

/// `commit_booking` is visible at once; `flush` then makes it durable.
pub async fn committed_booking_is_visible_before_flush<B: Backend + ?Sized>(store: &B) {
    let b = booking(T, "b1", 10, 11, 1);
    let outcome = store
        .commit_booking(&b, &Precondition::MustNotExist, None, None)
        .expect("commit_booking");
    written(&outcome);
    assert_eq!(store.booking(T, "b1").expect("booking"), Some(b));
    assert_eq!(
        store.booking_ids_in(T, window(10, 11)).expect("ids"),
        ["b1"]
    );
    store.flush().await.expect("flush");
}

/// A create with an Idempotency-Key: the same request again is a replay of the
/// first booking, another request with that key is refused, and nothing is
/// written either time.
pub async fn idempotency_replays_and_refuses_reuse<B: Backend + ?Sized>(store: &B) {
    let first = booking(T, "b1", 10, 11, 1);
    let key = claim("k1", "fp-1");
    written(
        &store
            .put_booking(&first, &Precondition::MustNotExist, Some(&key))
            .await
            .expect("put"),
    );
    let version = store.version(T).expect("version");
    let retry = booking(T, "b2", 10, 11, 1);
    let outcome = store
        .put_booking(&retry, &Precondition::MustNotExist, Some(&key))
        .await
        .expect("put");
    assert!(
        matches!(&outcome, WriteOutcome::Replayed(id) if id == "b1"),
        "{outcome:?}"
    );
    let reuse = claim("k1", "fp-other");
    let outcome = store
        .put_booking(&retry, &Precondition::MustNotExist, Some(&reuse))
        .await
        .expect("put");
    assert!(
        matches!(outcome, WriteOutcome::IdempotencyKeyReused),
        "{outcome:?}"
    );
    assert_eq!(store.booking(T, "b2").expect("booking"), None);
    assert_eq!(
        store.version(T).expect("version"),
        version,
        "nothing written"
    );
    let found = store.idempotency_outcome(T, &key).expect("outcome");
    assert!(
        matches!(&found, Some(WriteOutcome::Replayed(id)) if id == "b1"),
        "{found:?}"
    );
    let found = store.idempotency_outcome(T, &reuse).expect("outcome");
    assert!(
        matches!(found, Some(WriteOutcome::IdempotencyKeyReused)),
        "{found:?}"
    );
    assert!(
        store
            .idempotency_outcome(T, &claim("k2", "fp-1"))
            .expect("outcome")
            .is_none()
    );
    assert!(
        store
            .idempotency_outcome(OTHER, &key)
            .expect("outcome")
            .is_none(),
        "keys are per tenant"
    );
}

/// Purging forgets only keys older than the TTL.
pub async fn idempotency_purge_forgets_expired_keys<B: Backend + ?Sized>(store: &B) {
    let key = claim("k1", "fp-1");
    written(
        &store
            .put_booking(
                &booking(T, "b1", 10, 11, 1),
                &Precondition::None,
                Some(&key),
            )
            .await
            .expect("put"),
    );
    assert_eq!(store.purge_idempotency(Utc::now()).expect("purge"), 0);
    assert!(
        store
            .idempotency_outcome(T, &key)
            .expect("outcome")
            .is_some()
    );
    let later = Utc::now() + chrono::Duration::milliseconds(IDEMPOTENCY_TTL_MS + 60_000);
    assert_eq!(store.purge_idempotency(later).expect("purge"), 1);
    assert!(
        store
            .idempotency_outcome(T, &key)
            .expect("outcome")
            .is_none()
    );
    assert_eq!(
        store.booking(T, "b1").expect("booking").map(|b| b.id),
        Some("b1".into()),
        "purging keys leaves bookings"
    );
}

/// The tenant's version counts every logged write, in bookings and sources
/// alike; refused writes do not count; `modified_ms` never goes back.
pub async fn versions_move_with_every_logged_write<B: Backend + ?Sized>(store: &B) {
    assert_eq!(store.version(T).expect("version"), TenantVersion::default());
    let v1 = create(store, &booking(T, "b1", 10, 11, 1)).await;
    assert_eq!(v1.seq, 1);
    assert!(v1.modified_ms > 0);
    let v2 = put(store, "cal", &object("o1", 1, &[(10, 11, BusyKind::Busy)])).await;
    assert_eq!(v2.seq, 2, "one sequence per tenant across collections");
    assert!(v2.modified_ms >= v1.modified_ms);
    let refused = store
        .put_booking(
            &booking(T, "b1", 10, 11, 2),
            &Precondition::MustNotExist,
            None,
        )
        .await
        .expect("put");
    assert!(matches!(refused, WriteOutcome::PreconditionFailed(_)));
    assert_eq!(store.version(T).expect("version"), v2);
    let DeleteOutcome::Deleted(v3) = store
        .delete_booking(T, "b1", None, None)
        .await
        .expect("delete")
    else {
        panic!("delete of an existing booking");
    };
    assert_eq!(v3.seq, 3);
    assert_eq!(store.version(T).expect("version"), v3);
}

/// A sync token is a seq: the changes after it, oldest first, per collection.
pub async fn change_log_answers_sync_tokens<B: Backend + ?Sized>(store: &B) {
    assert_eq!(store.collection_version(T, "cal").expect("cv"), 0);
    put(store, "cal", &object("o1", 1, &[(10, 11, BusyKind::Busy)])).await;
    create(store, &booking(T, "b1", 10, 11, 1)).await;
    put(store, "cal", &object("o2", 1, &[(12, 13, BusyKind::Busy)])).await;
    put(store, "cal", &object("o1", 2, &[(14, 15, BusyKind::Busy)])).await;
    store
        .delete_object(T, "cal", "o2", None, None)
        .await
        .expect("delete");
    assert_eq!(
        log(store, "cal", 0),
        [
            (1, "o1".into(), false),
            (3, "o2".into(), false),
            (4, "o1".into(), false),
            (5, "o2".into(), true),
        ]
    );
    assert_eq!(
        log(store, "cal", 3),
        [(4, "o1".into(), false), (5, "o2".into(), true)]
    );
    assert!(log(store, "cal", 5).is_empty());
    assert_eq!(
        log(store, BOOKINGS_COLLECTION, 0),
        [(2, "b1".into(), false)]
    );
    assert_eq!(store.collection_version(T, "cal").expect("cv"), 5);
    assert_eq!(
        store
            .collection_version(T, BOOKINGS_COLLECTION)
            .expect("cv"),
        2
    );
    assert_eq!(store.collection_version(T, "other").expect("cv"), 0);
}

/// Each resource sees the bookings log through what the bookings take: a
/// change to another resource's booking is not one of its changes and does
/// not move its version; a booking that stops taking it is gone from it, and
/// one that starts is new; a booking naming none is every resource's. The
/// bookings log itself (the export outbox) still holds every change.
pub async fn each_resource_sees_the_changes_of_its_bookings<B: Backend + ?Sized>(store: &B) {
    let taking = |id: &str, resources: &[&str], rev: u32| {
        let mut b = booking(T, id, 10, 11, rev);
        b.resources = resources.iter().map(|r| (*r).to_owned()).collect();
        b
    };
    let seen = |resource: &str, since: u64| -> Vec<(u64, String, bool)> {
        store
            .resource_changes_since(T, resource, since)
            .expect("resource_changes_since")
            .into_iter()
            .map(|c| (c.seq, c.id, c.deleted))
            .collect()
    };
    let version = |resource: &str| store.resource_version(T, resource).expect("version");
    assert_eq!(version("anna"), 0);
    let a1 = taking("a1", &["anna"], 1);
    let v_a1 = create(store, &a1).await.seq;
    let v_b1 = create(store, &taking("b1", &["ben"], 1)).await.seq;
    let v_all = create(store, &taking("all", &[], 1)).await.seq;
    assert_eq!(
        seen("anna", 0),
        [(v_a1, "a1".into(), false), (v_all, "all".into(), false)]
    );
    assert_eq!(
        seen("ben", 0),
        [(v_b1, "b1".into(), false), (v_all, "all".into(), false)]
    );
    assert_eq!((version("anna"), version("ben")), (v_all, v_all));
    assert_eq!(seen("room", 0), [(v_all, "all".into(), false)]);

    // Another of Ben's: Anna sees nothing, her version stays.
    let v_b2 = create(store, &taking("b2", &["ben"], 1)).await.seq;
    assert!(seen("anna", v_all).is_empty());
    assert_eq!(version("anna"), v_all);
    assert_eq!(version("ben"), v_b2);

    // a1 moves from Anna to Ben: gone from hers, new in his.
    let moved = taking("a1", &["ben"], 2);
    let v_move = written(
        &store
            .put_booking(&moved, &Precondition::EtagIs(a1.etag.clone()), None)
            .await
            .expect("put"),
    )
    .seq;
    assert_eq!(seen("anna", v_all), [(v_move, "a1".into(), true)]);
    assert_eq!(
        seen("ben", v_b2),
        [(v_move, "a1".into(), false)],
        "new in Ben's"
    );
    assert_eq!((version("anna"), version("ben")), (v_move, v_move));
    assert!(seen("room", v_all).is_empty());
    assert_eq!(version("room"), v_all);

    // The tenant-wide booking comes to name Anna: Ben and the room lose it.
    let all = taking("all", &[], 1);
    let v_named = written(
        &store
            .put_booking(
                &taking("all", &["anna"], 2),
                &Precondition::EtagIs(all.etag.clone()),
                None,
            )
            .await
            .expect("put"),
    )
    .seq;
    assert_eq!(seen("anna", v_move), [(v_named, "all".into(), false)]);
    assert_eq!(seen("ben", v_move), [(v_named, "all".into(), true)]);
    assert_eq!(seen("room", v_move), [(v_named, "all".into(), true)]);
    assert_eq!(version("room"), v_named);

    // A deletion is a deletion for the resources it took only.
    let v_gone = match store
        .delete_booking(T, "b1", None, None)
        .await
        .expect("delete")
    {
        DeleteOutcome::Deleted(v) => v.seq,
        other => panic!("delete: {other:?}"),
    };
    assert_eq!(seen("ben", v_named), [(v_gone, "b1".into(), true)]);
    assert!(seen("anna", v_named).is_empty());
    assert_eq!((version("anna"), version("ben")), (v_named, v_gone));

    // The bookings log keeps every change, as logged, for the exporter.
    assert_eq!(
        log(store, BOOKINGS_COLLECTION, v_b2),
        [
            (v_move, "a1".into(), false),
            (v_named, "all".into(), false),
            (v_gone, "b1".into(), true),
        ]
    );
    assert_eq!(store.resource_version(OTHER, "anna").expect("version"), 0);
    assert!(
        store
            .resource_changes_since(OTHER, "anna", 0)
            .expect("changes")
            .is_empty()
    );
}

/// An object reads back whole, as text, and in listings (id order).
pub async fn object_round_trip<B: Backend + ?Sized>(store: &B) {
    let b = object("b.ics", 1, &[(10, 11, BusyKind::Busy)]);
    let a = object(
        "a.ics",
        1,
        &[(12, 13, BusyKind::Busy), (36, 37, BusyKind::Free)],
    );
    let mut with_diagnostics = b.clone();
    with_diagnostics.diagnostics = vec!["unknown zone".into()];
    with_diagnostics.uid = None;
    put(store, "cal", &with_diagnostics).await;
    put(store, "cal", &a).await;
    assert_eq!(
        store.object(T, "cal", "b.ics").expect("object"),
        Some(with_diagnostics.clone())
    );
    let text = store
        .object_text(T, "cal", "a.ics")
        .expect("object_text")
        .expect("stored");
    assert_eq!((text.etag, text.ics), (a.etag.clone(), a.ics.clone()));
    assert!(
        store
            .object_text(T, "cal", "c.ics")
            .expect("text")
            .is_none()
    );
    assert_eq!(
        store.objects(T, "cal").expect("objects"),
        [a.clone(), with_diagnostics.clone()]
    );
    let streamed: Vec<CalendarObject> = store
        .iter_objects(T, "cal")
        .collect::<Result<_, _>>()
        .expect("iter_objects");
    assert_eq!(streamed, [a, with_diagnostics]);
    assert_eq!(store.object_ids(T, "cal").expect("ids"), ["a.ics", "b.ics"]);
    assert!(store.objects(T, "other").expect("objects").is_empty());
}

/// Object preconditions refuse with the stored ETag.
pub async fn object_preconditions<B: Backend + ?Sized>(store: &B) {
    let o = object("o1", 1, &[(10, 11, BusyKind::Busy)]);
    put(store, "cal", &o).await;
    let next = object("o1", 2, &[(10, 11, BusyKind::Busy)]);
    for pre in [
        Precondition::MustNotExist,
        Precondition::EtagIs("\"stale\"".into()),
    ] {
        let outcome = store
            .put_object(T, "cal", &next, &pre, ObjectWrite::Change)
            .await
            .expect("put");
        assert_eq!(
            outcome,
            ObjectOutcome::PreconditionFailed(Some(o.etag.clone()))
        );
    }
    let missing = object("o2", 1, &[]);
    for pre in [
        Precondition::MustExist,
        Precondition::EtagIs("\"x\"".into()),
    ] {
        let outcome = store
            .put_object(T, "cal", &missing, &pre, ObjectWrite::Change)
            .await
            .expect("put");
        assert_eq!(outcome, ObjectOutcome::PreconditionFailed(None), "{pre:?}");
    }
    assert_eq!(
        store.object(T, "cal", "o1").expect("object"),
        Some(o.clone())
    );
    let outcome = store
        .put_object(
            T,
            "cal",
            &next,
            &Precondition::EtagIs(o.etag),
            ObjectWrite::Change,
        )
        .await
        .expect("put");
    object_written(&outcome);
    assert_eq!(store.object(T, "cal", "o1").expect("object"), Some(next));
}

/// Two objects of a source never share a UID; other sources have their own.
pub async fn object_uids_are_unique_per_source<B: Backend + ?Sized>(store: &B) {
    let first = object("o1", 1, &[(10, 11, BusyKind::Busy)]);
    put(store, "cal", &first).await;
    let mut twin = object("o2", 1, &[(12, 13, BusyKind::Busy)]);
    twin.uid = first.uid.clone();
    let outcome = store
        .put_object(T, "cal", &twin, &Precondition::None, ObjectWrite::Change)
        .await
        .expect("put");
    assert_eq!(outcome, ObjectOutcome::UidConflict("o1".into()));
    assert_eq!(store.object(T, "cal", "o2").expect("object"), None);
    put(store, "other-cal", &twin).await;
    // A new version of the owner may keep its UID.
    put(store, "cal", &object("o1", 2, &[(10, 11, BusyKind::Busy)])).await;
    store
        .delete_object(T, "cal", "o1", None, None)
        .await
        .expect("delete");
    put(store, "cal", &twin).await;
}

/// The busy index follows an object's writes: blocking occurrences are found,
/// free ones only by `object_occurrences`, moved ones at their new time, deleted
/// ones nowhere.
pub async fn object_writes_update_the_busy_index<B: Backend + ?Sized>(store: &B) {
    let all = window(-100, 1000);
    let o = object(
        "o1",
        1,
        &[
            (10, 11, BusyKind::Busy),
            (34, 35, BusyKind::Free),
            (58, 59, BusyKind::Tentative),
            (82, 83, BusyKind::Oof),
        ],
    );
    put(store, "cal", &o).await;
    assert_eq!(
        busy_starts(store, all, None),
        [
            (10, BusyKind::Busy),
            (58, BusyKind::Tentative),
            (82, BusyKind::Oof)
        ]
    );
    let occurrences: Vec<(i64, BusyKind)> = store
        .object_occurrences(T, all)
        .expect("occurrences")
        .into_iter()
        .map(|e| ((e.span.start - BASE) / HOUR, e.kind))
        .collect();
    assert_eq!(
        occurrences,
        [
            (10, BusyKind::Busy),
            (34, BusyKind::Free),
            (58, BusyKind::Tentative),
            (82, BusyKind::Oof)
        ]
    );
    assert_eq!(
        busy_starts(store, window(11, 58), None),
        Vec::<(i64, BusyKind)>::new(),
        "touching ends are apart"
    );
    put(store, "cal", &object("o1", 2, &[(20, 21, BusyKind::Busy)])).await;
    assert_eq!(busy_starts(store, all, None), [(20, BusyKind::Busy)]);
    assert_eq!(store.object_occurrences(T, all).expect("occ").len(), 1);
    store
        .delete_object(T, "cal", "o1", None, None)
        .await
        .expect("delete");
    assert!(busy_starts(store, all, None).is_empty());
    assert!(store.object_occurrences(T, all).expect("occ").is_empty());
}

/// `busy_spans` reads the sources asked for; `BOOKINGS_SOURCE` names bookings.
pub async fn busy_spans_filter_by_source<B: Backend + ?Sized>(store: &B) {
    create(store, &booking(T, "b1", 1, 2, 1)).await;
    put(store, "s1", &object("o1", 1, &[(3, 4, BusyKind::Busy)])).await;
    put(store, "s2", &object("o2", 1, &[(5, 6, BusyKind::Busy)])).await;
    // A source whose name starts like another's is not that source.
    put(store, "s10", &object("o3", 1, &[(7, 8, BusyKind::Busy)])).await;
    let w = window(0, 24);
    let starts = |sources: Option<&[String]>| -> Vec<i64> {
        busy_starts(store, w, sources)
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    };
    assert_eq!(starts(None), [1, 3, 5, 7]);
    assert_eq!(starts(Some(&["s1".into()])), [3]);
    assert_eq!(starts(Some(&[BOOKINGS_SOURCE.into()])), [1]);
    assert_eq!(starts(Some(&[BOOKINGS_SOURCE.into(), "s2".into()])), [1, 5]);
    assert!(starts(Some(&[])).is_empty());
}

/// `object_busy_in`: blocking occurrences of the wanted sources, ordered by
/// start, source, object.
pub async fn object_busy_in_orders_and_filters<B: Backend + ?Sized>(store: &B) {
    put(store, "s2", &object("b", 1, &[(5, 6, BusyKind::Busy)])).await;
    put(store, "s2", &object("a", 1, &[(5, 7, BusyKind::Busy)])).await;
    put(store, "s1", &object("z", 1, &[(5, 6, BusyKind::Tentative)])).await;
    put(
        store,
        "s1",
        &object("y", 1, &[(3, 4, BusyKind::Busy), (8, 9, BusyKind::Free)]),
    )
    .await;
    put(store, "s3", &object("x", 1, &[(1, 2, BusyKind::Busy)])).await;
    let entries = store
        .object_busy_in(T, window(0, 24), &|s| s != "s3")
        .expect("object_busy_in");
    let got: Vec<(i64, &str, &str, BusyKind)> = entries
        .iter()
        .map(|e| {
            (
                (e.span.start - BASE) / HOUR,
                e.source.as_str(),
                e.object.as_str(),
                e.kind,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (3, "s1", "y", BusyKind::Busy),
            (5, "s1", "z", BusyKind::Tentative),
            (5, "s2", "a", BusyKind::Busy),
            (5, "s2", "b", BusyKind::Busy),
        ]
    );
}

/// Object delete checks the ETag, says PreconditionFailed(None) when missing,
/// and logs a deletion.
pub async fn object_delete<B: Backend + ?Sized>(store: &B) {
    let o = object("o1", 1, &[(10, 11, BusyKind::Busy)]);
    put(store, "cal", &o).await;
    let stale = store
        .delete_object(T, "cal", "o1", Some("\"stale\""), None)
        .await
        .expect("delete");
    assert_eq!(
        stale,
        ObjectOutcome::PreconditionFailed(Some(o.etag.clone()))
    );
    let missing = store
        .delete_object(T, "cal", "nope", None, None)
        .await
        .expect("delete");
    assert_eq!(missing, ObjectOutcome::PreconditionFailed(None));
    let v = object_written(
        &store
            .delete_object(T, "cal", "o1", Some(&o.etag), None)
            .await
            .expect("delete"),
    );
    assert_eq!(store.object(T, "cal", "o1").expect("object"), None);
    assert_eq!(log(store, "cal", 1), [(v.seq, "o1".into(), true)]);
    assert!(store.object_ids(T, "cal").expect("ids").is_empty());
}

/// A reindex rewrites the record and its busy entries but is no change for
/// sync: no log entry, no version.
pub async fn reindex_writes_are_not_logged<B: Backend + ?Sized>(store: &B) {
    put(store, "cal", &object("o1", 1, &[(10, 11, BusyKind::Busy)])).await;
    let before = store.version(T).expect("version");
    let reexpanded = object(
        "o1",
        1,
        &[(10, 11, BusyKind::Busy), (34, 35, BusyKind::Busy)],
    );
    let outcome = store
        .put_object(
            T,
            "cal",
            &reexpanded,
            &Precondition::None,
            ObjectWrite::Reindex,
        )
        .await
        .expect("put");
    assert_eq!(outcome, ObjectOutcome::Written(TenantVersion::default()));
    store.flush().await.expect("flush");
    assert_eq!(store.version(T).expect("version"), before);
    assert_eq!(store.collection_version(T, "cal").expect("cv"), before.seq);
    assert_eq!(
        busy_starts(store, window(0, 48), None),
        [(10, BusyKind::Busy), (34, BusyKind::Busy)]
    );
    assert_eq!(
        store.object(T, "cal", "o1").expect("object"),
        Some(reexpanded)
    );
}

/// A batch writes every object (or names its UID conflict), each with its own
/// consecutive version, and a token inside the batch sees the rest of it.
pub async fn batched_object_writes<B: Backend + ?Sized>(store: &B) {
    put(store, "cal", &object("held", 1, &[])).await;
    let mut clash = object("clash", 1, &[(1, 2, BusyKind::Busy)]);
    clash.uid = Some("held@conformance".into());
    let batch = [
        object("e0", 1, &[(10, 11, BusyKind::Busy)]),
        clash,
        object("e1", 1, &[(12, 13, BusyKind::Busy)]),
        object("e2", 1, &[(14, 15, BusyKind::Busy)]),
    ];
    let outcomes = store
        .put_objects_batched(T, "cal", &batch)
        .expect("put_objects_batched");
    assert_eq!(outcomes.len(), 4);
    assert_eq!(outcomes[1], ObjectOutcome::UidConflict("held".into()));
    let seqs: Vec<u64> = [0, 2, 3]
        .iter()
        .map(|&i| object_written(&outcomes[i]).seq)
        .collect();
    assert_eq!(seqs, [2, 3, 4]);
    store.flush().await.expect("flush");
    assert_eq!(store.object(T, "cal", "clash").expect("object"), None);
    assert_eq!(
        store.object_ids(T, "cal").expect("ids"),
        ["e0", "e1", "e2", "held"]
    );
    assert_eq!(
        log(store, "cal", 2),
        [(3, "e1".into(), false), (4, "e2".into(), false)]
    );
    assert_eq!(store.collection_version(T, "cal").expect("cv"), 4);
    assert_eq!(store.version(T).expect("version").seq, 4);
    assert_eq!(busy_starts(store, window(0, 24), None).len(), 3);
    assert!(
        store
            .put_objects_batched(T, "cal", &[])
            .expect("empty batch")
            .is_empty()
    );
    assert_eq!(
        store.version(T).expect("version").seq,
        4,
        "an empty batch logs nothing"
    );
}

/// Batched deletes are logged and leave the busy index like single ones.
pub async fn batched_deletes_are_logged<B: Backend + ?Sized>(store: &B) {
    let o = object("o1", 1, &[(10, 11, BusyKind::Busy)]);
    put(store, "cal", &o).await;
    let stale = store
        .delete_object_batched(T, "cal", "o1", Some("\"stale\""))
        .expect("delete");
    assert_eq!(
        stale,
        ObjectOutcome::PreconditionFailed(Some(o.etag.clone()))
    );
    let v = object_written(
        &store
            .delete_object_batched(T, "cal", "o1", Some(&o.etag))
            .expect("delete"),
    );
    store.flush().await.expect("flush");
    assert_eq!(log(store, "cal", 1), [(v.seq, "o1".into(), true)]);
    assert!(busy_starts(store, window(0, 24), None).is_empty());
}

/// Sources read back as stored, replaced whole, listed in id order.
pub async fn source_round_trip<B: Backend + ?Sized>(store: &B) {
    let mut b = Source::new("b", "Bea");
    b.color = Some("#FF0000FF".into());
    b.components = vec!["VEVENT".into()];
    let a = Source::new("a", "Ana");
    store.put_source(T, &b).expect("put_source");
    store.put_source(T, &a).expect("put_source");
    assert_eq!(store.source(T, "b").expect("source"), Some(b.clone()));
    assert_eq!(store.sources(T).expect("sources"), [a.clone(), b.clone()]);
    let mut renamed = b.clone();
    renamed.name = "Bea R.".into();
    renamed.transparent = true;
    store.put_source(T, &renamed).expect("put_source");
    assert_eq!(store.sources(T).expect("sources"), [a, renamed]);
    assert_eq!(store.source(T, "c").expect("source"), None);
}

/// Deleting a source removes it, its objects (a logged deletion each, busy
/// index emptied) and what sync and export kept for it; other sources stay.
pub async fn delete_source_removes_what_it_owns<B: Backend + ?Sized>(store: &B) {
    for id in ["gone", "kept"] {
        store
            .put_source(T, &Source::new(id, id))
            .expect("put_source");
        put(
            store,
            id,
            &object(&format!("{id}-1"), 1, &[(10, 11, BusyKind::Busy)]),
        )
        .await;
        store
            .put_sync_status(
                T,
                id,
                &SyncStatus {
                    last_error: Some("x".into()),
                    ..SyncStatus::default()
                },
            )
            .expect("status");
        store.append_sync_log(T, id, &sync_log(1)).expect("log");
        store
            .put_mirror_item(T, id, "series", "item", Some(&serde_json::json!({"n": 1})))
            .expect("mirror");
        store
            .put_feed_digests(T, id, Some(b"digests"))
            .expect("digests");
        store.put_secret(T, id, b"sealed").await.expect("secret");
        store
            .put_export_record(
                T,
                id,
                "b1",
                Some(&ExportRecord {
                    remote_id: Some(format!("{id}-event")),
                    ..ExportRecord::default()
                }),
            )
            .expect("export record");
        store
            .put_export_state(
                T,
                id,
                &ExportState {
                    cursor: 7,
                    ..ExportState::default()
                },
            )
            .expect("export state");
    }
    let before = store.version(T).expect("version").seq;
    assert!(store.delete_source(T, "gone").await.expect("delete_source"));
    assert_eq!(store.source(T, "gone").expect("source"), None);
    assert!(store.objects(T, "gone").expect("objects").is_empty());
    assert_eq!(
        log(store, "gone", before),
        [(before + 1, "gone-1".into(), true)]
    );
    assert_eq!(
        store.sync_status(T, "gone").expect("status"),
        SyncStatus::default()
    );
    assert!(store.sync_logs(T, "gone").expect("logs").is_empty());
    assert!(store.mirror_keys(T, "gone").expect("mirror").is_empty());
    assert_eq!(store.feed_digests(T, "gone").expect("digests"), None);
    assert_eq!(store.secret(T, "gone").expect("secret"), None);
    assert!(store.export_records(T, "gone").expect("export").is_empty());
    assert_eq!(
        store.exported_booking(T, "gone", "gone-event").expect("e"),
        None
    );
    assert_eq!(
        store.export_state(T, "gone").expect("state"),
        ExportState::default()
    );
    let kept: Vec<i64> = busy_starts(store, window(0, 24), None)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(kept, [10], "only the kept source's busy time is left");
    assert_eq!(store.sources(T).expect("sources").len(), 1);
    assert_eq!(store.sync_logs(T, "kept").expect("logs").len(), 1);
    assert_eq!(
        store.secret(T, "kept").expect("secret"),
        Some(b"sealed".to_vec())
    );
    assert_eq!(store.export_state(T, "kept").expect("state").cursor, 7);
    assert!(!store.delete_source(T, "gone").await.expect("again"));
}

/// The sync status reads back as stored, the default when there is none.
pub async fn sync_status_round_trip<B: Backend + ?Sized>(store: &B) {
    assert_eq!(
        store.sync_status(T, "cal").expect("status"),
        SyncStatus::default()
    );
    let status = SyncStatus {
        cursor: Cursor {
            token: Some("next-sync-token".into()),
            etag: Some("\"feed\"".into()),
            ..Cursor::default()
        },
        last_success: Some(fixed_time()),
        last_error: Some("timeout".into()),
        needs_reauth: true,
        connected: true,
        consecutive_failures: 3,
        ..SyncStatus::default()
    };
    store.put_sync_status(T, "cal", &status).expect("put");
    store.flush().await.expect("flush");
    assert_eq!(store.sync_status(T, "cal").expect("status"), status);
    assert_eq!(
        store.sync_status(T, "other").expect("status"),
        SyncStatus::default()
    );
}

/// A source's log lists runs newest first and keeps the newest `SYNC_LOG_LIMIT`.
pub async fn sync_log_keeps_the_newest<B: Backend + ?Sized>(store: &B) {
    assert!(store.sync_logs(T, "cal").expect("logs").is_empty());
    let runs = SYNC_LOG_LIMIT as u32 + 5;
    for n in 0..runs {
        store
            .append_sync_log(T, "cal", &sync_log(n))
            .expect("append");
    }
    store
        .append_sync_log(T, "other", &sync_log(999))
        .expect("append");
    let logs = store.sync_logs(T, "cal").expect("logs");
    assert_eq!(logs.len(), SYNC_LOG_LIMIT);
    assert_eq!(logs[0], sync_log(runs - 1), "newest first");
    assert_eq!(logs[SYNC_LOG_LIMIT - 1], sync_log(5), "oldest kept");
    assert_eq!(store.sync_logs(T, "other").expect("logs"), [sync_log(999)]);
}

/// Mirror items: stored, listed by (series, item), unchanged ones not rewritten,
/// removed by `None`.
pub async fn mirror_items_round_trip<B: Backend + ?Sized>(store: &B) {
    let one = serde_json::json!({"id": "1", "summary": "x"});
    let two = serde_json::json!({"id": "2"});
    store
        .put_mirror_item(T, "cal", "s1", "i2", Some(&two))
        .expect("put");
    store
        .put_mirror_item(T, "cal", "s1", "i1", Some(&one))
        .expect("put");
    store
        .put_mirror_item(T, "cal", "s0", "i9", Some(&one))
        .expect("put");
    assert_eq!(
        store.mirror_keys(T, "cal").expect("keys"),
        [
            ("s0".into(), "i9".into()),
            ("s1".into(), "i1".into()),
            ("s1".into(), "i2".into())
        ]
    );
    assert_eq!(
        store.mirror_series(T, "cal", "s1").expect("series"),
        [one.clone(), two.clone()]
    );
    assert!(
        !store
            .put_mirror_item_if_changed(T, "cal", "s1", "i1", &one)
            .expect("same")
    );
    assert!(
        store
            .put_mirror_item_if_changed(T, "cal", "s1", "i1", &two)
            .expect("changed")
    );
    assert_eq!(
        store.mirror_series(T, "cal", "s1").expect("series"),
        [two.clone(), two.clone()]
    );
    store
        .put_mirror_item(T, "cal", "s1", "i1", None)
        .expect("remove");
    assert_eq!(store.mirror_series(T, "cal", "s1").expect("series"), [two]);
    assert!(store.mirror_keys(T, "other").expect("keys").is_empty());
}

/// `mirror_changes` tells which items differ and writes nothing until applied.
pub async fn mirror_changes_apply_later<B: Backend + ?Sized>(store: &B) {
    let same = serde_json::json!({"v": 1});
    let new = serde_json::json!({"v": 2});
    store
        .put_mirror_item(T, "cal", "s", "same", Some(&same))
        .expect("put");
    store
        .put_mirror_item(T, "cal", "s", "gone", Some(&same))
        .expect("put");
    let items = [
        ("s", "same", Some(&same)),
        ("s", "new", Some(&new)),
        ("s", "gone", None),
    ];
    let (writes, changed) = store
        .mirror_changes(T, "cal", &mut items.iter().copied())
        .expect("mirror_changes");
    assert_eq!(changed, [false, true, true]);
    assert_eq!(
        store.mirror_keys(T, "cal").expect("keys").len(),
        2,
        "not yet"
    );
    writes.apply().expect("apply");
    store.flush().await.expect("flush");
    assert_eq!(
        store.mirror_keys(T, "cal").expect("keys"),
        [("s".into(), "new".into()), ("s".into(), "same".into())]
    );
}

/// Feed digests and token blobs: opaque bytes, read back as stored.
pub async fn feed_digests_and_secrets<B: Backend + ?Sized>(store: &B) {
    assert_eq!(store.feed_digests(T, "cal").expect("digests"), None);
    store
        .put_feed_digests(T, "cal", Some(&[0, 1, 255]))
        .expect("put");
    assert_eq!(
        store.feed_digests(T, "cal").expect("digests"),
        Some(vec![0, 1, 255])
    );
    store.put_feed_digests(T, "cal", None).expect("forget");
    assert_eq!(store.feed_digests(T, "cal").expect("digests"), None);
    assert_eq!(store.secret(T, "cal").expect("secret"), None);
    store
        .put_secret(T, "cal", b"\x00sealed")
        .await
        .expect("put");
    assert_eq!(
        store.secret(T, "cal").expect("secret"),
        Some(b"\x00sealed".to_vec())
    );
    store
        .put_secret_batched(T, "cal", b"resealed")
        .expect("put");
    store.flush().await.expect("flush");
    assert_eq!(
        store.secret(T, "cal").expect("secret"),
        Some(b"resealed".to_vec())
    );
    assert_eq!(store.secret(OTHER, "cal").expect("secret"), None);
}

/// Export records and the event-id index move together.
pub async fn export_mapping_round_trip<B: Backend + ?Sized>(store: &B) {
    let record = ExportRecord {
        remote_id: Some("ev-1".into()),
        exported_etag: Some("\"b1-1\"".into()),
        exported_span: Some(window(10, 11)),
        generation: 2,
        ..ExportRecord::default()
    };
    store
        .put_export_record(T, "out", "b1", Some(&record))
        .expect("put");
    assert_eq!(
        store.export_record(T, "out", "b1").expect("record"),
        Some(record.clone())
    );
    assert_eq!(
        store.exported_booking(T, "out", "ev-1").expect("by event"),
        Some("b1".into())
    );
    let moved = ExportRecord {
        remote_id: Some("ev-2".into()),
        ..record.clone()
    };
    store
        .put_export_record(T, "out", "b1", Some(&moved))
        .expect("put");
    assert_eq!(store.exported_booking(T, "out", "ev-1").expect("e"), None);
    assert_eq!(
        store.exported_booking(T, "out", "ev-2").expect("e"),
        Some("b1".into())
    );
    let parked = ExportRecord {
        parked: Some(Parked {
            etag: Some("\"a-1\"".into()),
            error: "refused".into(),
            at: fixed_time(),
        }),
        ..ExportRecord::default()
    };
    store
        .put_export_record(T, "out", "a0", Some(&parked))
        .expect("put");
    assert_eq!(
        store.export_records(T, "out").expect("records"),
        [("a0".into(), parked), ("b1".into(), moved)]
    );
    assert_eq!(store.export_parked_count(T, "out").expect("parked"), 1);
    store
        .put_export_record(T, "out", "b1", None)
        .expect("forget");
    assert_eq!(store.export_record(T, "out", "b1").expect("record"), None);
    assert_eq!(store.exported_booking(T, "out", "ev-2").expect("e"), None);
    store
        .put_export_record(T, "out", "b1", Some(&record))
        .expect("put");
    store
        .put_export_state(
            T,
            "out",
            &ExportState {
                cursor: 3,
                ..ExportState::default()
            },
        )
        .expect("state");
    store.forget_export_mappings(T, "out").expect("forget");
    assert!(store.export_records(T, "out").expect("records").is_empty());
    assert_eq!(store.exported_booking(T, "out", "ev-1").expect("e"), None);
    assert_eq!(
        store.export_state(T, "out").expect("state").cursor,
        3,
        "forgetting mappings keeps the state"
    );
}

/// The export outbox is the bookings change log: every booking change in
/// order, read `limit` at a time after the cursor the state acknowledges.
pub async fn export_outbox_is_the_bookings_log<B: Backend + ?Sized>(store: &B) {
    assert_eq!(
        store.export_state(T, "out").expect("state"),
        ExportState::default()
    );
    create(store, &booking(T, "b1", 10, 11, 1)).await;
    put(store, "cal", &object("o1", 1, &[(10, 11, BusyKind::Busy)])).await;
    create(store, &booking(T, "b2", 12, 13, 1)).await;
    create(store, &booking(T, "b3", 14, 15, 1)).await;
    store
        .delete_booking(T, "b1", None, None)
        .await
        .expect("delete");
    let pending = |since: u64, limit: usize| -> Vec<(u64, String, bool)> {
        store
            .booking_changes_after(T, since, limit)
            .expect("booking_changes_after")
            .into_iter()
            .map(|c| (c.seq, c.id, c.deleted))
            .collect()
    };
    assert_eq!(
        pending(0, 10),
        [
            (1, "b1".into(), false),
            (3, "b2".into(), false),
            (4, "b3".into(), false),
            (5, "b1".into(), true),
        ],
        "object changes are not in it"
    );
    assert_eq!(
        pending(0, 2),
        [(1, "b1".into(), false), (3, "b2".into(), false)]
    );
    let state = ExportState {
        cursor: 3,
        target: Some("primary".into()),
        last_success: Some(fixed_time()),
        delivered: 2,
        ..ExportState::default()
    };
    store.put_export_state(T, "out", &state).expect("ack");
    store.flush().await.expect("flush");
    let acked = store.export_state(T, "out").expect("state");
    assert_eq!(acked, state);
    assert_eq!(
        pending(acked.cursor, 10),
        [(4, "b3".into(), false), (5, "b1".into(), true)]
    );
    assert!(pending(5, 10).is_empty());
}

fn invite(user: &str, n: u32) -> Delivery {
    Delivery {
        user: user.into(),
        ics: format!("BEGIN:VCALENDAR\r\nX-N:{n}\r\nEND:VCALENDAR\r\n"),
    }
}

/// Messages staged with a write arrive on delivery, per user, with a change
/// log per inbox; deletion checks the ETag.
pub async fn inbox_delivery_list_delete<B: Backend + ?Sized>(store: &B) {
    let outgoing = Outgoing::new(vec![invite("bea", 1), invite("ana", 2), invite("bea", 3)])
        .expect("something to send");
    written(
        &store
            .commit_booking(
                &booking(T, "b1", 10, 11, 1),
                &Precondition::MustNotExist,
                None,
                Some(&outgoing),
            )
            .expect("commit"),
    );
    assert!(
        store.inbox_items(T, "bea").expect("items").is_empty(),
        "not yet delivered"
    );
    let delivered = store.deliver(T, &outgoing).await.expect("deliver");
    assert_eq!(delivered.len(), 3);
    let bea = store.inbox_items(T, "bea").expect("items");
    assert_eq!(
        bea.iter()
            .map(|i| (i.seq, i.ics.contains("X-N:1")))
            .collect::<Vec<_>>(),
        [(1, true), (2, false)],
        "oldest first"
    );
    assert_eq!(store.inbox_items(T, "ana").expect("items").len(), 1);
    assert!(store.inbox_items(OTHER, "bea").expect("items").is_empty());
    let first = &bea[0];
    assert_eq!(
        store.inbox_item(T, "bea", &first.name).expect("item"),
        Some(first.clone())
    );
    assert_eq!(
        store
            .delete_inbox_item(T, "bea", &first.name, Some("\"stale\""))
            .await
            .expect("delete"),
        InboxDelete::PreconditionFailed(first.etag.clone())
    );
    assert_eq!(
        store
            .delete_inbox_item(T, "bea", &first.name, Some(&first.etag))
            .await
            .expect("delete"),
        InboxDelete::Deleted
    );
    assert_eq!(
        store
            .delete_inbox_item(T, "bea", &first.name, None)
            .await
            .expect("delete"),
        InboxDelete::NotFound
    );
    assert_eq!(store.inbox_item(T, "bea", &first.name).expect("item"), None);
    let changes: Vec<(u64, bool)> = store
        .inbox_changes_since(T, "bea", 1)
        .expect("changes")
        .into_iter()
        .map(|c| (c.seq, c.deleted))
        .collect();
    assert_eq!(changes, [(2, false), (3, true)]);
    assert_eq!(store.inbox_version(T, "bea").expect("version"), 3);
    assert_eq!(store.inbox_version(T, "ana").expect("version"), 1);
    assert_eq!(store.inbox_version(T, "cy").expect("version"), 0);
}

/// Clearing a user's inbox (the user was deleted) removes every message of
/// that user only, each logged as removed after the inbox's newest change.
pub async fn clearing_an_inbox_logs_each_removal<B: Backend + ?Sized>(store: &B) {
    let outgoing = Outgoing::new(vec![invite("bea", 1), invite("ana", 2), invite("bea", 3)])
        .expect("something to send");
    written(
        &store
            .commit_booking(
                &booking(T, "b1", 10, 11, 1),
                &Precondition::MustNotExist,
                None,
                Some(&outgoing),
            )
            .expect("commit"),
    );
    store.deliver(T, &outgoing).await.expect("deliver");
    let before = store.inbox_version(T, "bea").expect("version");
    assert_eq!(store.clear_inbox(T, "bea").await.expect("clear"), 2);
    assert!(store.inbox_items(T, "bea").expect("items").is_empty());
    let removed: Vec<bool> = store
        .inbox_changes_since(T, "bea", before)
        .expect("changes")
        .into_iter()
        .map(|c| c.deleted)
        .collect();
    assert_eq!(removed, [true, true]);
    assert_eq!(
        store.inbox_items(T, "ana").expect("items").len(),
        1,
        "another user's stays"
    );
    assert_eq!(store.clear_inbox(T, "bea").await.expect("again"), 0);
    assert_eq!(store.clear_inbox(T, "nobody").await.expect("none"), 0);
}

/// Delivering an entry twice adds nothing the second time.
pub async fn inbox_delivery_happens_once<B: Backend + ?Sized>(store: &B) {
    let outgoing = Outgoing::new(vec![invite("bea", 1)]).expect("something to send");
    let outcome = store
        .put_object_sending(
            T,
            "team",
            &object("m", 1, &[(10, 11, BusyKind::Busy)]),
            &Precondition::None,
            ObjectWrite::Change,
            Some(&outgoing),
        )
        .await
        .expect("put");
    object_written(&outcome);
    assert_eq!(store.deliver(T, &outgoing).await.expect("deliver").len(), 1);
    assert!(store.deliver(T, &outgoing).await.expect("again").is_empty());
    assert_eq!(store.inbox_items(T, "bea").expect("items").len(), 1);
    assert_eq!(store.inbox_version(T, "bea").expect("version"), 1);
}

/// A full inbox drops its oldest messages.
pub async fn inbox_keeps_its_capacity<B: Backend + ?Sized>(store: &B) {
    let outgoing = Outgoing::new(
        (0..INBOX_CAPACITY as u32 + 3)
            .map(|n| invite("bea", n))
            .collect(),
    )
    .expect("something to send");
    written(
        &store
            .commit_booking(
                &booking(T, "b1", 10, 11, 1),
                &Precondition::None,
                None,
                Some(&outgoing),
            )
            .expect("commit"),
    );
    store.deliver(T, &outgoing).await.expect("deliver");
    let items = store.inbox_items(T, "bea").expect("items");
    assert_eq!(items.len(), INBOX_CAPACITY);
    assert!(items[0].ics.contains("X-N:3\r\n"), "{}", items[0].ics);
}

/// Writes that do not happen store no messages; deletions that happen do.
pub async fn refused_writes_send_nothing<B: Backend + ?Sized>(store: &B) {
    let refused_put = Outgoing::new(vec![invite("bea", 1)]).expect("something to send");
    let outcome = store
        .put_object_sending(
            T,
            "team",
            &object("m", 1, &[]),
            &Precondition::MustExist,
            ObjectWrite::Change,
            Some(&refused_put),
        )
        .await
        .expect("put");
    assert_eq!(outcome, ObjectOutcome::PreconditionFailed(None));
    assert!(
        store
            .deliver(T, &refused_put)
            .await
            .expect("deliver")
            .is_empty()
    );
    let refused_delete = Outgoing::new(vec![invite("bea", 2)]).expect("something to send");
    let outcome = store
        .delete_booking(T, "nope", None, Some(&refused_delete))
        .await
        .expect("delete");
    assert!(matches!(outcome, DeleteOutcome::NotFound));
    assert!(
        store
            .deliver(T, &refused_delete)
            .await
            .expect("deliver")
            .is_empty()
    );
    put(store, "team", &object("m", 1, &[])).await;
    let cancel = Outgoing::new(vec![invite("bea", 3)]).expect("something to send");
    object_written(
        &store
            .delete_object(T, "team", "m", None, Some(&cancel))
            .await
            .expect("delete"),
    );
    assert_eq!(store.deliver(T, &cancel).await.expect("deliver").len(), 1);
    let inbox = store.inbox_items(T, "bea").expect("items");
    assert_eq!(inbox.len(), 1);
    assert!(inbox[0].ics.contains("X-N:3"));
}

/// Conflict records: stored, read by id, key and object, replaced and removed.
pub async fn conflicts_round_trip<B: Backend + ?Sized>(store: &B) {
    let open = conflict("c1", "cal", "o1", false);
    let closed = conflict("c2", "cal", "o2", true);
    let elsewhere = conflict("c3", "other", "o1", false);
    store
        .put_conflicts(T, &[open.clone(), closed.clone(), elsewhere.clone()])
        .await
        .expect("put");
    assert_eq!(
        store.conflict(T, "c2").expect("conflict"),
        Some(closed.clone())
    );
    assert_eq!(store.conflict(T, "c9").expect("conflict"), None);
    assert_eq!(
        store
            .conflict_of(T, "cal", "o1", "c1")
            .expect("conflict_of"),
        Some(open.clone())
    );
    assert_eq!(store.conflict_of(T, "cal", "o2", "c1").expect("of"), None);
    assert_eq!(
        store.object_conflicts(T, "cal", "o1").expect("object"),
        std::slice::from_ref(&open)
    );
    let open_ids = store.objects_in_open_conflicts(T, "cal").expect("open");
    assert_eq!(open_ids.into_iter().collect::<Vec<_>>(), ["o1"]);
    assert_eq!(store.conflicts(T).expect("all").len(), 3);
    assert!(store.conflicts(OTHER).expect("all").is_empty());
    let acknowledged = Conflict {
        acknowledged: Some(fixed_time()),
        ..open.clone()
    };
    store
        .replace_conflicts(
            T,
            std::slice::from_ref(&acknowledged),
            std::slice::from_ref(&closed),
        )
        .await
        .expect("replace");
    assert_eq!(
        store.conflict(T, "c1").expect("conflict"),
        Some(acknowledged)
    );
    assert_eq!(store.conflict(T, "c2").expect("conflict"), None);
    assert_eq!(store.conflicts(T).expect("all").len(), 2);
    store.replace_conflicts(T, &[], &[]).await.expect("nothing");
}

/// Paging through conflicts returns each accepted record once, in a stable
/// order, even when records are written between pages.
pub async fn conflict_pages_see_every_record_once<B: Backend + ?Sized>(store: &B) {
    let all: Vec<Conflict> = (0..7)
        .map(|n| conflict(&format!("c{n}"), "cal", &format!("o{n}"), n % 3 == 2))
        .collect();
    store.put_conflicts(T, &all).await.expect("put");
    let open_only = |c: &Conflict| c.resolved.is_none();
    let mut seen = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    let mut pages = 0;
    loop {
        let page = store
            .conflicts_page(T, after.as_deref(), 2, &open_only)
            .expect("page");
        assert!(page.conflicts.len() <= 2);
        seen.extend(page.conflicts.into_iter().map(|c| c.id));
        pages += 1;
        if pages == 1 {
            // Written mid-listing: before the cursor, so not in a later page.
            store
                .put_conflicts(T, &[conflict("c0a", "cal", "o0", false)])
                .await
                .expect("put");
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
        assert!(pages < 10, "paging ends");
    }
    assert_eq!(seen, ["c0", "c1", "c3", "c4", "c6"]);
    let everything = store.conflicts_page(T, None, 100, &|_| true).expect("page");
    assert_eq!(everything.conflicts.len(), 8);
    assert!(everything.next.is_none());
}

/// `flush` succeeds on an empty backend and after writes that wait for it,
/// which are readable before and after.
pub async fn flush_makes_writes_durable<B: Backend + ?Sized>(store: &B) {
    store.flush().await.expect("flush of nothing");
    store
        .put_source(T, &Source::new("cal", "Calendar"))
        .expect("put_source");
    store
        .put_export_state(
            T,
            "cal",
            &ExportState {
                cursor: 1,
                ..ExportState::default()
            },
        )
        .expect("state");
    store
        .commit_booking(
            &booking(T, "b1", 10, 11, 1),
            &Precondition::None,
            None,
            None,
        )
        .expect("commit");
    store.flush().await.expect("flush");
    store.flush().await.expect("flush again");
    assert!(store.source(T, "cal").expect("source").is_some());
    assert!(store.booking(T, "b1").expect("booking").is_some());
    assert_eq!(store.export_state(T, "cal").expect("state").cursor, 1);
}

fn provisioned(id: &str, zone: &str) -> ProvisionedTenant {
    ProvisionedTenant {
        users: vec![ProvisionedUser {
            username: format!("{id}-user"),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            email: None,
            resource: None,
        }],
        api_keys: vec![ProvisionedKey {
            name: "main".into(),
            key_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$a2V5".into(),
            lookup: "0123456789abcdef".into(),
        }],
        ..ProvisionedTenant::new(
            id,
            TenantSettings {
                timezone: zone.into(),
                ..TenantSettings::default()
            },
        )
    }
}

/// Provisioned tenants read back as stored, list in id order, are replaced
/// by id and forgotten on delete.
pub async fn tenant_records_round_trip<B: Backend + ?Sized>(store: &B) {
    assert!(store.tenant_records().expect("records").is_empty());
    assert_eq!(store.tenant_record(T).expect("record"), None);
    let b = provisioned(OTHER, "UTC");
    let a = provisioned(T, "Europe/Paris");
    store.put_tenant_record(&b).await.expect("put");
    store.put_tenant_record(&a).await.expect("put");
    assert_eq!(store.tenant_record(T).expect("record"), Some(a.clone()));
    let ids: Vec<String> = store
        .tenant_records()
        .expect("records")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [T, OTHER], "in id order");
    let replaced = ProvisionedTenant {
        deleting: true,
        users: Vec::new(),
        ..a
    };
    store.put_tenant_record(&replaced).await.expect("replace");
    assert_eq!(store.tenant_record(T).expect("record"), Some(replaced));
    assert_eq!(store.tenant_records().expect("records").len(), 2);
    assert!(store.delete_tenant_record(T).await.expect("delete"));
    assert!(!store.delete_tenant_record(T).await.expect("again"));
    assert_eq!(store.tenant_record(T).expect("record"), None);
    assert_eq!(store.tenant_record(OTHER).expect("record"), Some(b));
}

/// Deleting a tenant's data leaves nothing of it in any aggregate, leaves the
/// other tenant whole, and moves the tenant's version on (never back).
pub async fn delete_tenant_data_removes_that_tenant_only<B: Backend + ?Sized>(store: &B) {
    let outgoing = Outgoing::new(vec![invite("bea", 1)]).expect("something to send");
    for tenant in [T, OTHER] {
        let outcome = store
            .commit_booking(
                &booking(tenant, "b1", 10, 11, 1),
                &Precondition::MustNotExist,
                Some(&claim("k1", "f1")),
                Some(&outgoing),
            )
            .expect("commit");
        written(&outcome);
        store.deliver(tenant, &outgoing).await.expect("deliver");
        store
            .put_source(tenant, &Source::new("cal", "cal"))
            .expect("source");
        let object_in_tenant = object("o2", 1, &[(14, 15, BusyKind::Busy)]);
        store
            .put_object(
                tenant,
                "cal",
                &object_in_tenant,
                &Precondition::None,
                ObjectWrite::Change,
            )
            .await
            .expect("object");
        store
            .put_sync_status(tenant, "cal", &SyncStatus::default())
            .expect("status");
        store
            .append_sync_log(tenant, "cal", &sync_log(1))
            .expect("log");
        store
            .put_mirror_item(tenant, "cal", "s", "i", Some(&serde_json::json!({})))
            .expect("mirror");
        store
            .put_secret(tenant, "cal", b"sealed")
            .await
            .expect("secret");
        store
            .put_export_record(
                tenant,
                "cal",
                "b1",
                Some(&ExportRecord {
                    remote_id: Some("event".into()),
                    ..ExportRecord::default()
                }),
            )
            .expect("export record");
        store
            .put_export_state(
                tenant,
                "cal",
                &ExportState {
                    cursor: 3,
                    ..ExportState::default()
                },
            )
            .expect("export state");
        store
            .put_conflicts(tenant, &[conflict("c1", "cal", "o2", false)])
            .await
            .expect("conflicts");
    }
    let version = store.version(T).expect("version").seq;
    store.delete_tenant_data(T).await.expect("delete");

    assert_eq!(store.booking(T, "b1").expect("booking"), None);
    assert!(store.bookings_in(T, window(0, 100)).expect("in").is_empty());
    assert_eq!(
        store.booking_with_uid(T, "b1@conformance").expect("uid"),
        None
    );
    assert_eq!(
        store
            .idempotency_outcome(T, &claim("k1", "f1"))
            .expect("idempotency")
            .map(|_| ()),
        None,
        "the Idempotency-Key is forgotten"
    );
    assert!(store.sources(T).expect("sources").is_empty());
    assert!(store.objects(T, "cal").expect("objects").is_empty());
    assert!(
        store
            .busy_spans(T, window(0, 100), None)
            .expect("busy")
            .is_empty()
    );
    assert!(store.changes_since(T, "cal", 0).expect("log").is_empty());
    assert!(
        store
            .changes_since(T, BOOKINGS_COLLECTION, 0)
            .expect("log")
            .is_empty()
    );
    assert_eq!(
        store.sync_status(T, "cal").expect("status"),
        SyncStatus::default()
    );
    assert!(store.sync_logs(T, "cal").expect("logs").is_empty());
    assert!(store.mirror_keys(T, "cal").expect("mirror").is_empty());
    assert_eq!(store.secret(T, "cal").expect("secret"), None);
    assert!(store.export_records(T, "cal").expect("export").is_empty());
    assert_eq!(store.exported_booking(T, "cal", "event").expect("e"), None);
    assert_eq!(
        store.export_state(T, "cal").expect("state"),
        ExportState::default()
    );
    assert!(store.inbox_items(T, "bea").expect("inbox").is_empty());
    assert_eq!(store.inbox_version(T, "bea").expect("inbox version"), 0);
    assert_eq!(
        store.resource_version(T, "anna").expect("resource version"),
        0,
        "a resource's version goes with the bookings log"
    );
    assert!(store.conflicts(T).expect("conflicts").is_empty());
    assert!(
        store.version(T).expect("version").seq > version,
        "the version moves on, never back"
    );

    assert!(store.booking(OTHER, "b1").expect("booking").is_some());
    assert!(
        store
            .resource_version(OTHER, "anna")
            .expect("resource version")
            > 0
    );
    assert!(
        store
            .idempotency_outcome(OTHER, &claim("k1", "f1"))
            .expect("idempotency")
            .is_some()
    );
    assert_eq!(store.objects(OTHER, "cal").expect("objects").len(), 1);
    assert_eq!(
        busy_starts_of(store, OTHER).len(),
        2,
        "the booking and the object"
    );
    assert_eq!(store.sync_logs(OTHER, "cal").expect("logs").len(), 1);
    assert_eq!(store.mirror_keys(OTHER, "cal").expect("mirror").len(), 1);
    assert!(store.secret(OTHER, "cal").expect("secret").is_some());
    assert_eq!(store.export_records(OTHER, "cal").expect("export").len(), 1);
    assert_eq!(store.export_state(OTHER, "cal").expect("state").cursor, 3);
    assert_eq!(store.inbox_items(OTHER, "bea").expect("inbox").len(), 1);
    assert_eq!(store.conflicts(OTHER).expect("conflicts").len(), 1);

    // A tenant re-created under the same id starts empty and works.
    written(
        &store
            .commit_booking(
                &booking(T, "b1", 10, 11, 1),
                &Precondition::MustNotExist,
                Some(&claim("k1", "f1")),
                None,
            )
            .expect("commit"),
    );
    assert_eq!(
        ids(&store.bookings_in(T, window(0, 100)).expect("in")),
        ["b1"]
    );
}

fn busy_starts_of<B: Backend + ?Sized>(store: &B, tenant: &str) -> Vec<(Span, BusyKind)> {
    store
        .busy_spans(tenant, window(0, 100), None)
        .expect("busy")
}
