//! The booking engine driven directly over a temporary store: the life of a
//! booking, the conflict check and its policy, Idempotency-Keys, optimistic
//! concurrency, and two racing creates.

mod common;

use calgate_engine::bookings::{BookingError, BookingPatch, ConflictPolicy, Created};
use calgate_engine::model::{BOOKINGS_SOURCE, Booking, BookingStatus, BusyKind};
use calgate_engine::settings::TenantConfig;
use calgate_engine::store::IdempotencyClaim;
use common::{Engines, at, moved_to, span, tenant, timed};

/// Creates a booking under the front desk's Idempotency-Key `key`, for a
/// request whose digest is `fingerprint`.
async fn create_with_key(
    e: &Engines,
    t: &TenantConfig,
    patch: BookingPatch,
    key: &str,
    fingerprint: &str,
) -> Result<Created, BookingError> {
    let claim = IdempotencyClaim {
        api_key: "frontdesk".into(),
        key: key.into(),
        fingerprint: fingerprint.into(),
    };
    e.bookings
        .create(t, patch, Some(claim), ConflictPolicy::Refuse)
        .await
}

#[tokio::test]
async fn a_booking_is_created_read_updated_cancelled_and_deleted() {
    let t = tenant("salon");
    let e = Engines::start(&t);
    let created = e.book(&t, timed("Cut", at(10, 9, 0), at(10, 10, 0))).await;
    assert!(!created.replayed);
    let b = created.booking;
    assert_eq!(b.tenant, "salon");
    assert_eq!(b.title, "Cut");
    assert_eq!(b.status, BookingStatus::Confirmed);
    assert_eq!(b.span(), span(at(10, 9, 0), at(10, 10, 0)));
    assert_eq!(b.sequence, 0);
    assert!(!b.etag.is_empty());

    assert_eq!(e.bookings.get(&t, &b.id).expect("stored"), b);
    let listed = e
        .bookings
        .list(&t, span(at(10, 0, 0), at(11, 0, 0)))
        .expect("list");
    assert_eq!(listed, std::slice::from_ref(&b));
    assert!(
        e.bookings
            .list(&t, span(at(10, 10, 0), at(11, 0, 0)))
            .expect("list")
            .is_empty(),
        "a window starting at the booking's end does not overlap it"
    );

    // Merge: only the title changes; sequence and ETag move on.
    let rename = BookingPatch {
        title: Some("Cut and colour".into()),
        ..BookingPatch::default()
    };
    let renamed = e
        .change(&t, &b.id, rename, Some(&b.etag), ConflictPolicy::Refuse)
        .await
        .expect("update");
    assert_eq!(renamed.title, "Cut and colour");
    assert_eq!(renamed.span(), b.span());
    assert_eq!(renamed.sequence, 1);
    assert_ne!(renamed.etag, b.etag);
    assert_eq!(e.bookings.get(&t, &b.id).expect("stored"), renamed);

    // Cancelling frees the time: it is no longer busy, and the slot can be taken.
    let cancel = BookingPatch {
        status: Some(BookingStatus::Cancelled),
        ..BookingPatch::default()
    };
    let cancelled = e
        .change(&t, &b.id, cancel, None, ConflictPolicy::Refuse)
        .await
        .expect("cancel");
    assert_eq!(cancelled.status, BookingStatus::Cancelled);
    assert_eq!(cancelled.busy_kind(), BusyKind::Free);
    assert!(
        e.store
            .booking_busy("salon", b.span())
            .expect("busy")
            .is_empty()
    );
    let other = e
        .book(&t, timed("Walk-in", at(10, 9, 0), at(10, 10, 0)))
        .await;

    // Deleting removes the record; a second delete finds nothing.
    e.bookings
        .delete(&t, &b.id, Some(&cancelled.etag))
        .await
        .expect("delete");
    assert!(matches!(
        e.bookings.get(&t, &b.id),
        Err(BookingError::NotFound(id)) if id == b.id
    ));
    assert!(matches!(
        e.bookings.delete(&t, &b.id, None).await,
        Err(BookingError::NotFound(_))
    ));
    let left = e
        .bookings
        .list(&t, span(at(10, 0, 0), at(11, 0, 0)))
        .expect("list");
    assert_eq!(left, [other.booking]);
}

#[tokio::test]
async fn an_invalid_request_is_refused_with_its_fields() {
    let t = tenant("salon");
    let e = Engines::start(&t);
    let backwards = timed("Backwards", at(10, 10, 0), at(10, 9, 0));
    let Err(BookingError::Invalid(errors)) = e.try_book(&t, backwards).await else {
        panic!("an end before the start must be refused");
    };
    assert!(!errors.is_empty());
    let untitled = BookingPatch {
        title: None,
        ..timed("", at(10, 9, 0), at(10, 10, 0))
    };
    let Err(BookingError::Invalid(errors)) = e.try_book(&t, untitled).await else {
        panic!("a booking without a title must be refused");
    };
    assert!(errors.iter().any(|f| f.field == "title"), "{errors:?}");
    assert!(
        e.bookings
            .list(&t, span(at(0, 0, 0), at(20, 0, 0)))
            .expect("list")
            .is_empty()
    );
}

/// The salon's engines with one booking, `First`, on day 10 from 10:00 to 11:00.
async fn booked_at_ten() -> (TenantConfig, Engines, Booking) {
    let t = tenant("salon");
    let e = Engines::start(&t);
    let first = e
        .book(&t, timed("First", at(10, 10, 0), at(10, 11, 0)))
        .await
        .booking;
    (t, e, first)
}

#[tokio::test]
async fn an_overlapping_create_is_refused_and_names_what_it_overlaps() {
    let (t, e, first) = booked_at_ten().await;
    let found = e
        .refused(&t, timed("Second", at(10, 10, 30), at(10, 11, 30)))
        .await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].source, BOOKINGS_SOURCE);
    assert_eq!(found[0].object, first.id);
    assert_eq!(found[0].span, first.span());
    assert_eq!(found[0].kind, BusyKind::Busy);
    // Nothing was written.
    let all = e
        .bookings
        .list(&t, span(at(10, 0, 0), at(11, 0, 0)))
        .expect("list");
    assert_eq!(all, [first]);
}

#[tokio::test]
async fn touching_bookings_do_not_conflict() {
    let t = tenant("salon");
    let e = Engines::start(&t);
    e.book(&t, timed("Middle", at(10, 10, 0), at(10, 11, 0)))
        .await;
    e.book(&t, timed("After", at(10, 11, 0), at(10, 12, 0)))
        .await;
    e.book(&t, timed("Before", at(10, 9, 0), at(10, 10, 0)))
        .await;
    // One minute into the middle one is refused again.
    assert_eq!(
        e.refused(&t, timed("Overlap", at(10, 8, 0), at(10, 9, 1)))
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn allow_conflict_double_books_and_only_moves_are_checked_afterwards() {
    let (t, e, first) = booked_at_ten().await;
    let second = e
        .bookings
        .create(
            &t,
            timed("Second", at(10, 10, 0), at(10, 11, 0)),
            None,
            ConflictPolicy::Allow,
        )
        .await
        .expect("allowed to double-book")
        .booking;
    let both = e
        .bookings
        .list(&t, span(at(10, 0, 0), at(11, 0, 0)))
        .expect("list");
    assert_eq!(both.len(), 2);

    // Editing a note of the double-booked one does not re-check its time.
    let note = BookingPatch {
        notes: Some(Some("knowingly double-booked".into())),
        ..BookingPatch::default()
    };
    let noted = e
        .change(&t, &second.id, note, None, ConflictPolicy::Refuse)
        .await
        .expect("a note on a double-booked booking");
    assert_eq!(noted.notes.as_deref(), Some("knowingly double-booked"));

    // Moving it onto still-busy time is checked, and refused by default.
    let shift = moved_to(at(10, 10, 30), at(10, 11, 30));
    let refused = e
        .change(&t, &second.id, shift.clone(), None, ConflictPolicy::Refuse)
        .await;
    assert!(
        matches!(&refused, Err(BookingError::Conflict(f)) if f.len() == 1 && f[0].object == first.id),
        "{refused:?}"
    );
    assert_eq!(
        e.bookings.get(&t, &second.id).expect("stored").span(),
        second.span()
    );
    // With the policy set, the move goes through.
    let moved = e
        .change(&t, &second.id, shift, None, ConflictPolicy::Allow)
        .await
        .expect("allowed move");
    assert_eq!(moved.span(), span(at(10, 10, 30), at(10, 11, 30)));
    // A booking's own time never conflicts with itself when it moves.
    let later = moved_to(at(10, 11, 0), at(10, 12, 0));
    e.change(&t, &second.id, later, None, ConflictPolicy::Refuse)
        .await
        .expect("moving off the other booking, over its own old time");
}

#[tokio::test]
async fn an_idempotency_key_replays_its_booking_and_refuses_another_request() {
    let t = tenant("salon");
    let e = Engines::start(&t);
    let request = || timed("Cut", at(10, 9, 0), at(10, 10, 0));
    let first = create_with_key(&e, &t, request(), "k1", "f1")
        .await
        .expect("create");
    assert!(!first.replayed);
    // The retry would overlap the first booking: it is a replay, not a conflict.
    let again = create_with_key(&e, &t, request(), "k1", "f1")
        .await
        .expect("replay");
    assert!(again.replayed);
    assert_eq!(again.booking, first.booking);

    let other = create_with_key(
        &e,
        &t,
        timed("Colour", at(11, 9, 0), at(11, 10, 0)),
        "k1",
        "f2",
    )
    .await;
    assert!(
        matches!(other, Err(BookingError::IdempotencyKeyReused)),
        "{:?}",
        other.map(|c| c.booking)
    );
    let all = e
        .bookings
        .list(&t, span(at(0, 0, 0), at(20, 0, 0)))
        .expect("list");
    assert_eq!(all, std::slice::from_ref(&first.booking));

    // Keys and their bookings survive a restart.
    let id = first.booking.id.clone();
    let e = e.reopen();
    let replay = create_with_key(&e, &t, request(), "k1", "f1")
        .await
        .expect("replay after reopen");
    assert!(replay.replayed);
    assert_eq!(replay.booking.id, id);
    assert_eq!(e.bookings.get(&t, &id).expect("durable"), first.booking);
}

#[tokio::test]
async fn a_stale_etag_is_refused_for_updates_and_deletes() {
    let t = tenant("salon");
    let e = Engines::start(&t);
    let b = e
        .book(&t, timed("Cut", at(10, 9, 0), at(10, 10, 0)))
        .await
        .booking;
    let stale = b.etag.clone();
    let rename = |title: &str| BookingPatch {
        title: Some(title.into()),
        ..BookingPatch::default()
    };
    let fresh = e
        .change(
            &t,
            &b.id,
            rename("One"),
            Some(&stale),
            ConflictPolicy::Refuse,
        )
        .await
        .expect("first writer");
    let late = e
        .change(
            &t,
            &b.id,
            rename("Two"),
            Some(&stale),
            ConflictPolicy::Refuse,
        )
        .await;
    match late {
        Err(BookingError::PreconditionFailed { expected, current }) => {
            assert_eq!(expected, stale);
            assert_eq!(current, fresh.etag);
        }
        other => panic!("expected a precondition failure, got {other:?}"),
    }
    assert!(matches!(
        e.bookings.delete(&t, &b.id, Some(&stale)).await,
        Err(BookingError::PreconditionFailed { .. })
    ));
    assert_eq!(e.bookings.get(&t, &b.id).expect("still there"), fresh);
    e.bookings
        .delete(&t, &b.id, Some(&fresh.etag))
        .await
        .expect("delete with the current ETag");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_creates_of_one_slot_exactly_one_wins() {
    let t = tenant("salon");
    let e = Engines::start(&t);
    // Each create on its own task, so that the two really run in parallel on
    // the two workers (futures joined on one task never interleave their
    // synchronous check-and-commit).
    let create = |title: &str, start, end| {
        let (bookings, t, patch) = (e.bookings.clone(), t.clone(), timed(title, start, end));
        tokio::spawn(async move {
            bookings
                .create(&t, patch, None, ConflictPolicy::Refuse)
                .await
        })
    };
    for round in 0..16 {
        let (start, end) = (at(10 + round, 9, 0), at(10 + round, 10, 0));
        let (a, b) = tokio::join!(create("A", start, end), create("B", start, end));
        let (a, b) = (a.expect("task A"), b.expect("task B"));
        let (winner, loser) = match (a, b) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w.booking, l),
            (a, b) => panic!(
                "round {round}: expected one winner, got {:?} and {:?}",
                a.map(|c| c.booking.id),
                b.map(|c| c.booking.id)
            ),
        };
        assert!(
            matches!(&loser, BookingError::Conflict(f) if f.len() == 1 && f[0].object == winner.id),
            "round {round}: {loser:?}"
        );
        let stored = e.bookings.list(&t, span(start, end)).expect("list");
        assert_eq!(stored, [winner], "round {round}");
    }
}
