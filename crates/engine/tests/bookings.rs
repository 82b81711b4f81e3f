//! The booking engine driven directly over a temporary store: the life of a
//! booking, the conflict check and its policy, Idempotency-Keys, optimistic
//! concurrency, and two racing creates.

mod common;

use calgate_engine::bookings::{BookingError, BookingPatch, ConflictPolicy, UpdateMode};
use calgate_engine::model::{BOOKINGS_SOURCE, BookingStatus, BusyKind};
use calgate_engine::store::IdempotencyClaim;
use common::{Engines, at, span, tenant, timed};

fn claim(key: &str, fingerprint: &str) -> IdempotencyClaim {
    IdempotencyClaim {
        api_key: "frontdesk".into(),
        key: key.into(),
        fingerprint: fingerprint.into(),
    }
}

#[tokio::test]
async fn a_booking_is_created_read_updated_cancelled_and_deleted() {
    let t = tenant("salon");
    let e = Engines::start(std::slice::from_ref(&t));
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
        .bookings
        .update(
            &t,
            &b.id,
            &rename,
            UpdateMode::Merge,
            Some(&b.etag),
            ConflictPolicy::Refuse,
        )
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
        .bookings
        .update(
            &t,
            &b.id,
            &cancel,
            UpdateMode::Merge,
            None,
            ConflictPolicy::Refuse,
        )
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
    let e = Engines::start(std::slice::from_ref(&t));
    let backwards = timed("Backwards", at(10, 10, 0), at(10, 9, 0));
    let Err(BookingError::Invalid(errors)) = e
        .bookings
        .create(&t, backwards, None, ConflictPolicy::Refuse)
        .await
    else {
        panic!("an end before the start must be refused");
    };
    assert!(!errors.is_empty());
    let untitled = BookingPatch {
        title: None,
        ..timed("", at(10, 9, 0), at(10, 10, 0))
    };
    let Err(BookingError::Invalid(errors)) = e
        .bookings
        .create(&t, untitled, None, ConflictPolicy::Refuse)
        .await
    else {
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

#[tokio::test]
async fn an_overlapping_create_is_refused_and_names_what_it_overlaps() {
    let t = tenant("salon");
    let e = Engines::start(std::slice::from_ref(&t));
    let first = e
        .book(&t, timed("First", at(10, 10, 0), at(10, 11, 0)))
        .await
        .booking;
    let result = e
        .bookings
        .create(
            &t,
            timed("Second", at(10, 10, 30), at(10, 11, 30)),
            None,
            ConflictPolicy::Refuse,
        )
        .await;
    let Err(BookingError::Conflict(found)) = result else {
        panic!("expected a conflict, got {:?}", result.map(|c| c.booking));
    };
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
    let e = Engines::start(std::slice::from_ref(&t));
    e.book(&t, timed("Middle", at(10, 10, 0), at(10, 11, 0)))
        .await;
    e.book(&t, timed("After", at(10, 11, 0), at(10, 12, 0)))
        .await;
    e.book(&t, timed("Before", at(10, 9, 0), at(10, 10, 0)))
        .await;
    // One minute into the middle one is refused again.
    let result = e
        .bookings
        .create(
            &t,
            timed("Overlap", at(10, 8, 0), at(10, 9, 1)),
            None,
            ConflictPolicy::Refuse,
        )
        .await;
    assert!(matches!(result, Err(BookingError::Conflict(ref f)) if f.len() == 1));
}

#[tokio::test]
async fn allow_conflict_double_books_and_only_moves_are_checked_afterwards() {
    let t = tenant("salon");
    let e = Engines::start(std::slice::from_ref(&t));
    let first = e
        .book(&t, timed("First", at(10, 10, 0), at(10, 11, 0)))
        .await
        .booking;
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
        .bookings
        .update(
            &t,
            &second.id,
            &note,
            UpdateMode::Merge,
            None,
            ConflictPolicy::Refuse,
        )
        .await
        .expect("a note on a double-booked booking");
    assert_eq!(noted.notes.as_deref(), Some("knowingly double-booked"));

    // Moving it onto still-busy time is checked, and refused by default.
    let shift = BookingPatch {
        start: Some(at(10, 10, 30).to_rfc3339()),
        end: Some(at(10, 11, 30).to_rfc3339()),
        ..BookingPatch::default()
    };
    let refused = e
        .bookings
        .update(
            &t,
            &second.id,
            &shift,
            UpdateMode::Merge,
            None,
            ConflictPolicy::Refuse,
        )
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
        .bookings
        .update(
            &t,
            &second.id,
            &shift,
            UpdateMode::Merge,
            None,
            ConflictPolicy::Allow,
        )
        .await
        .expect("allowed move");
    assert_eq!(moved.span(), span(at(10, 10, 30), at(10, 11, 30)));
    // A booking's own time never conflicts with itself when it moves.
    let later = BookingPatch {
        start: Some(at(10, 11, 0).to_rfc3339()),
        end: Some(at(10, 12, 0).to_rfc3339()),
        ..BookingPatch::default()
    };
    e.bookings
        .update(
            &t,
            &second.id,
            &later,
            UpdateMode::Merge,
            None,
            ConflictPolicy::Refuse,
        )
        .await
        .expect("moving off the other booking, over its own old time");
}

#[tokio::test]
async fn an_idempotency_key_replays_its_booking_and_refuses_another_request() {
    let t = tenant("salon");
    let e = Engines::start(std::slice::from_ref(&t));
    let request = || timed("Cut", at(10, 9, 0), at(10, 10, 0));
    let first = e
        .bookings
        .create(
            &t,
            request(),
            Some(claim("k1", "f1")),
            ConflictPolicy::Refuse,
        )
        .await
        .expect("create");
    assert!(!first.replayed);
    // The retry would overlap the first booking: it is a replay, not a conflict.
    let again = e
        .bookings
        .create(
            &t,
            request(),
            Some(claim("k1", "f1")),
            ConflictPolicy::Refuse,
        )
        .await
        .expect("replay");
    assert!(again.replayed);
    assert_eq!(again.booking, first.booking);

    let other = e
        .bookings
        .create(
            &t,
            timed("Colour", at(11, 9, 0), at(11, 10, 0)),
            Some(claim("k1", "f2")),
            ConflictPolicy::Refuse,
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
    let replay = e
        .bookings
        .create(
            &t,
            request(),
            Some(claim("k1", "f1")),
            ConflictPolicy::Refuse,
        )
        .await
        .expect("replay after reopen");
    assert!(replay.replayed);
    assert_eq!(replay.booking.id, id);
    assert_eq!(e.bookings.get(&t, &id).expect("durable"), first.booking);
}

#[tokio::test]
async fn a_stale_etag_is_refused_for_updates_and_deletes() {
    let t = tenant("salon");
    let e = Engines::start(std::slice::from_ref(&t));
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
        .bookings
        .update(
            &t,
            &b.id,
            &rename("One"),
            UpdateMode::Merge,
            Some(&stale),
            ConflictPolicy::Refuse,
        )
        .await
        .expect("first writer");
    let late = e
        .bookings
        .update(
            &t,
            &b.id,
            &rename("Two"),
            UpdateMode::Merge,
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
    let e = Engines::start(std::slice::from_ref(&t));
    for round in 0..8 {
        let (start, end) = (at(10 + round, 9, 0), at(10 + round, 10, 0));
        let (a, b) = tokio::join!(
            e.bookings
                .create(&t, timed("A", start, end), None, ConflictPolicy::Refuse),
            e.bookings
                .create(&t, timed("B", start, end), None, ConflictPolicy::Refuse),
        );
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
