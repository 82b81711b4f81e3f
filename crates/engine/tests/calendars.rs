//! The calendar service driven directly: iCalendar objects put into a source
//! land in the busy index (expanded within the horizon and the budget), leave
//! it when deleted, block nothing when transparent, and meet the booking
//! engine's conflict check both ways.

mod common;

use calgate_engine::calendars::CalendarError;
use calgate_engine::freebusy;
use calgate_engine::model::{BusyKind, Contributor, Horizon, Source, Span};
use calgate_engine::settings::{ProvidersConfig, TenantConfig};
use calgate_engine::store::Precondition;
use common::{Engines, at, event, span, tenant, timed};

const STAFF: &str = "staff";

/// A tenant and its engines with one blocking source, `staff`.
fn with_staff() -> (TenantConfig, Engines) {
    let t = tenant("salon");
    let e = Engines::start(&t);
    e.add_source(&t, Source::new(STAFF, "Staff"));
    (t, e)
}

/// Merged busy time of the salon over `window`, with contributors.
fn busy(e: &Engines, window: Span) -> Vec<(Span, BusyKind, Vec<Contributor>)> {
    freebusy::busy_blocks(&e.store, "salon", window, None, true)
        .expect("busy blocks")
        .into_iter()
        .map(|b| (b.span, b.kind, b.contributors))
        .collect()
}

fn staff(object: &str) -> Contributor {
    Contributor {
        source: STAFF.into(),
        object: object.into(),
    }
}

#[tokio::test]
async fn an_object_put_into_a_source_is_busy_time() {
    let (t, e) = with_staff();
    let ics = event("meeting", at(5, 14, 0), at(5, 15, 0), &[]);
    let object = e
        .calendars
        .put_object(&t, STAFF, "meeting.ics", &ics, &Precondition::None)
        .await
        .expect("put");
    assert_eq!(object.uid.as_deref(), Some("meeting"));
    assert!(!object.recurring);
    assert_eq!(
        e.store
            .object("salon", STAFF, "meeting.ics")
            .expect("read")
            .expect("stored")
            .ics,
        ics
    );
    let day = span(at(5, 0, 0), at(6, 0, 0));
    assert_eq!(
        busy(&e, day),
        [(
            span(at(5, 14, 0), at(5, 15, 0)),
            BusyKind::Busy,
            vec![staff("meeting.ics")]
        )]
    );
    // The index is what the booking check reads.
    let found = freebusy::conflicts(&e.store, "salon", span(at(5, 14, 30), at(5, 16, 0)), None)
        .expect("conflicts");
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].source.as_str(), found[0].object.as_str()),
        (STAFF, "meeting.ics")
    );

    // A write with a stale ETag is refused and changes nothing.
    let moved = event("meeting", at(5, 16, 0), at(5, 17, 0), &[]);
    let stale = e
        .calendars
        .put_object(
            &t,
            STAFF,
            "meeting.ics",
            &moved,
            &Precondition::EtagIs("\"not-the-etag\"".into()),
        )
        .await;
    assert!(matches!(
        stale,
        Err(CalendarError::PreconditionFailed { current: Some(ref c) }) if *c == object.etag
    ));
    // With the right one it moves the busy time.
    e.calendars
        .put_object(
            &t,
            STAFF,
            "meeting.ics",
            &moved,
            &Precondition::EtagIs(object.etag.clone()),
        )
        .await
        .expect("update");
    assert_eq!(
        busy(&e, day),
        [(
            span(at(5, 16, 0), at(5, 17, 0)),
            BusyKind::Busy,
            vec![staff("meeting.ics")]
        )]
    );
}

#[tokio::test]
async fn a_recurring_event_is_expanded_within_the_horizon() {
    let t = tenant("salon");
    let horizon = Horizon {
        past_days: 7,
        future_days: 30,
    };
    let e = Engines::with(&t, horizon, ProvidersConfig::default());
    e.add_source(&t, Source::new(STAFF, "Staff"));
    // Weekly without end: the indexed window ends 31 days from today's midnight,
    // so the occurrences on days 1, 8, 15, 22 and 29 are indexed, day 36 is not.
    let ics = event("weekly", at(1, 9, 0), at(1, 10, 0), &["RRULE:FREQ=WEEKLY"]);
    let object = e
        .calendars
        .put_object(&t, STAFF, "weekly.ics", &ics, &Precondition::None)
        .await
        .expect("put");
    assert!(object.recurring);
    let expected: Vec<Span> = [1, 8, 15, 22, 29]
        .into_iter()
        .map(|d| span(at(d, 9, 0), at(d, 10, 0)))
        .collect();
    let indexed: Vec<Span> = object.occurrences.iter().map(|o| o.span).collect();
    assert_eq!(indexed, expected);
    let blocks: Vec<Span> = busy(&e, span(at(-30, 0, 0), at(60, 0, 0)))
        .into_iter()
        .map(|(s, _, _)| s)
        .collect();
    assert_eq!(blocks, expected);
}

#[tokio::test]
async fn an_object_over_its_budget_is_refused_and_not_stored() {
    let (t, e) = with_staff();
    // Every minute for ever: far more occurrences than one object may have.
    let ics = event("flood", at(1, 9, 0), at(1, 9, 1), &["RRULE:FREQ=MINUTELY"]);
    let result = e
        .calendars
        .put_object(&t, STAFF, "flood.ics", &ics, &Precondition::None)
        .await;
    assert!(
        matches!(result, Err(CalendarError::OverBudget(_))),
        "{result:?}"
    );
    assert!(
        e.store
            .object("salon", STAFF, "flood.ics")
            .expect("read")
            .is_none()
    );
    assert!(busy(&e, span(at(0, 0, 0), at(3, 0, 0))).is_empty());
}

#[tokio::test]
async fn unknown_sources_and_unreadable_text_are_refused() {
    let (t, e) = with_staff();
    let ics = event("x", at(1, 9, 0), at(1, 10, 0), &[]);
    let unknown = e
        .calendars
        .put_object(&t, "nowhere", "x.ics", &ics, &Precondition::None)
        .await;
    assert!(matches!(unknown, Err(CalendarError::UnknownSource(ref s)) if s == "nowhere"));
    let garbage = e
        .calendars
        .put_object(&t, STAFF, "x.ics", "not a calendar", &Precondition::None)
        .await;
    assert!(
        matches!(garbage, Err(CalendarError::Invalid(_))),
        "{garbage:?}"
    );
    assert!(e.store.objects("salon", STAFF).expect("objects").is_empty());
}

#[tokio::test]
async fn deleting_an_object_removes_its_busy_time() {
    let (t, e) = with_staff();
    let ics = event(
        "daily",
        at(2, 8, 0),
        at(2, 9, 0),
        &["RRULE:FREQ=DAILY;COUNT=3"],
    );
    let object = e
        .calendars
        .put_object(&t, STAFF, "daily.ics", &ics, &Precondition::None)
        .await
        .expect("put");
    let window = span(at(0, 0, 0), at(10, 0, 0));
    assert_eq!(busy(&e, window).len(), 3);
    e.calendars
        .delete_object(&t, STAFF, "daily.ics", Some(&object.etag), None)
        .await
        .expect("delete");
    assert!(busy(&e, window).is_empty());
    assert!(
        freebusy::conflicts(&e.store, "salon", window, None)
            .expect("conflicts")
            .is_empty()
    );
    assert!(
        e.store
            .object("salon", STAFF, "daily.ics")
            .expect("read")
            .is_none()
    );
    // The time is bookable again.
    e.book(&t, timed("Cut", at(2, 8, 0), at(2, 9, 0))).await;
}

#[tokio::test]
async fn transparent_events_and_transparent_sources_block_nothing() {
    let (t, e) = with_staff();
    let mut holidays = Source::new("holidays", "Holidays");
    holidays.transparent = true;
    e.add_source(&t, holidays);
    let free = event("free", at(3, 9, 0), at(3, 10, 0), &["TRANSP:TRANSPARENT"]);
    let object = e
        .calendars
        .put_object(&t, STAFF, "free.ics", &free, &Precondition::None)
        .await
        .expect("put");
    // Indexed (time-range queries see it), but as free time.
    assert_eq!(object.occurrences.len(), 1);
    assert_eq!(object.occurrences[0].kind, BusyKind::Free);
    let opaque = event("day-off", at(3, 11, 0), at(3, 12, 0), &[]);
    e.calendars
        .put_object(&t, "holidays", "day-off.ics", &opaque, &Precondition::None)
        .await
        .expect("put");
    assert!(busy(&e, span(at(3, 0, 0), at(4, 0, 0))).is_empty());
    e.book(&t, timed("Over the free event", at(3, 9, 0), at(3, 10, 0)))
        .await;
    e.book(&t, timed("Over the holiday", at(3, 11, 0), at(3, 12, 0)))
        .await;
}

#[tokio::test]
async fn a_booking_over_calendar_time_conflicts_and_a_later_event_is_recorded() {
    let (t, e) = with_staff();
    let ics = event("meeting", at(4, 14, 0), at(4, 15, 0), &[]);
    e.calendars
        .put_object(&t, STAFF, "meeting.ics", &ics, &Precondition::None)
        .await
        .expect("put");
    let found = e
        .refused(&t, timed("Cut", at(4, 14, 30), at(4, 15, 30)))
        .await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].source, STAFF);
    assert_eq!(found[0].object, "meeting.ics");
    assert_eq!(found[0].span, span(at(4, 14, 0), at(4, 15, 0)));

    // The other way round: an event written over an existing booking is a
    // conflict after the fact, recorded until the event goes.
    let booking = e
        .book(&t, timed("Colour", at(6, 10, 0), at(6, 11, 0)))
        .await
        .booking;
    assert!(e.store.conflicts("salon").expect("conflicts").is_empty());
    let late = event("late", at(6, 10, 30), at(6, 12, 0), &[]);
    let object = e
        .calendars
        .put_object(&t, STAFF, "late.ics", &late, &Precondition::None)
        .await
        .expect("put");
    let recorded = e.store.conflicts("salon").expect("conflicts");
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let c = &recorded[0];
    assert_eq!(c.booking_id, booking.id);
    assert_eq!(
        (c.source.as_str(), c.object_id.as_str()),
        (STAFF, "late.ics")
    );
    assert_eq!(c.span, span(at(6, 10, 30), at(6, 11, 0)));
    assert!(c.resolved.is_none());
    e.calendars
        .delete_object(&t, STAFF, "late.ics", Some(&object.etag), None)
        .await
        .expect("delete");
    let after = e.store.conflicts("salon").expect("conflicts");
    assert!(
        after.iter().all(|c| c.resolved.is_some()),
        "the conflict resolves when the event goes: {after:?}"
    );
}
