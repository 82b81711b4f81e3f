//! Free/busy over a temporary store: bookings and calendar objects merged into
//! busy blocks (kinds, contributors, clipping, source filters), and bookable
//! slots within a tenant's local opening hours, kept clear by its buffer.

mod common;

use calgate_engine::freebusy::{self, SlotQuery};
use calgate_engine::model::{BOOKINGS_SOURCE, BusyKind, Contributor, Source, Span};
use calgate_engine::settings::{OpeningHours, TenantConfig};
use calgate_engine::store::Precondition;
use chrono::{Datelike, Duration, NaiveDate, NaiveTime, Utc, Weekday};
use chrono_tz::Europe::Paris;
use common::{Engines, at, event, local, span, tenant, timed};

fn blocks(
    e: &Engines,
    window: Span,
    sources: Option<&[String]>,
    with_contributors: bool,
) -> Vec<(Span, BusyKind, Vec<Contributor>)> {
    freebusy::busy_blocks(&e.store, "salon", window, sources, with_contributors)
        .expect("busy blocks")
        .into_iter()
        .map(|b| (b.span, b.kind, b.contributors))
        .collect()
}

fn contributor(source: &str, object: &str) -> Contributor {
    Contributor {
        source: source.into(),
        object: object.into(),
    }
}

#[tokio::test]
async fn bookings_and_events_merge_into_blocks_of_the_strongest_kind() {
    let t = tenant("salon");
    let e = Engines::start(&t);
    e.add_source(&t, Source::new("staff", "Staff"));
    let early = e.book(&t, timed("Early", at(5, 9, 0), at(5, 10, 0))).await;
    let late = e.book(&t, timed("Late", at(5, 11, 0), at(5, 12, 0))).await;
    for (id, ics) in [
        (
            "meeting.ics",
            event("meeting", at(5, 9, 30), at(5, 11, 0), &[]),
        ),
        (
            "maybe.ics",
            event("maybe", at(5, 13, 0), at(5, 14, 0), &["STATUS:TENTATIVE"]),
        ),
    ] {
        e.calendars
            .put_object(&t, "staff", id, &ics, &Precondition::None)
            .await
            .expect("put");
    }
    let day = span(at(5, 0, 0), at(6, 0, 0));
    let mut bookings = vec![
        contributor(BOOKINGS_SOURCE, &early.booking.id),
        contributor(BOOKINGS_SOURCE, &late.booking.id),
    ];
    bookings.sort();
    let mut expected_first = bookings.clone();
    expected_first.push(contributor("staff", "meeting.ics"));
    assert_eq!(
        blocks(&e, day, None, true),
        [
            (
                span(at(5, 9, 0), at(5, 12, 0)),
                BusyKind::Busy,
                expected_first
            ),
            (
                span(at(5, 13, 0), at(5, 14, 0)),
                BusyKind::Tentative,
                vec![contributor("staff", "maybe.ics")]
            ),
        ]
    );
    // The fast path without contributors gives the same blocks.
    let bare: Vec<(Span, BusyKind)> = blocks(&e, day, None, false)
        .into_iter()
        .map(|(s, k, c)| {
            assert!(c.is_empty());
            (s, k)
        })
        .collect();
    assert_eq!(
        bare,
        [
            (span(at(5, 9, 0), at(5, 12, 0)), BusyKind::Busy),
            (span(at(5, 13, 0), at(5, 14, 0)), BusyKind::Tentative),
        ]
    );
    // Blocks are clipped to the window asked about.
    let inside = span(at(5, 9, 45), at(5, 10, 30));
    assert_eq!(
        blocks(&e, inside, None, false),
        [(inside, BusyKind::Busy, vec![])]
    );
    // Only the bookings: two blocks with a gap where the meeting was.
    let only_bookings = [BOOKINGS_SOURCE.to_owned()];
    let spans: Vec<Span> = blocks(&e, day, Some(&only_bookings), true)
        .into_iter()
        .map(|(s, _, _)| s)
        .collect();
    assert_eq!(
        spans,
        [
            span(at(5, 9, 0), at(5, 10, 0)),
            span(at(5, 11, 0), at(5, 12, 0))
        ]
    );
}

/// The first Monday at least a week ahead.
fn next_monday() -> NaiveDate {
    let mut d = Utc::now().date_naive() + Duration::days(7);
    while d.weekday() != Weekday::Mon {
        d = d.succ_opt().expect("date");
    }
    d
}

/// A Paris tenant open Monday 09:00–12:00 and Wednesday 22:00–24:00, with a
/// 15-minute buffer.
fn paris_tenant() -> TenantConfig {
    let hm = |h, m| NaiveTime::from_hms_opt(h, m, 0).expect("time");
    let mut hours = OpeningHours::default();
    hours.days[0] = vec![(hm(9, 0), Some(hm(12, 0)))];
    hours.days[2] = vec![(hm(22, 0), None)];
    TenantConfig {
        timezone: Paris,
        opening_hours: Some(hours),
        buffer_minutes: 15,
        ..tenant("salon")
    }
}

fn query(window: Span, not_before: i64, limit: usize) -> SlotQuery {
    SlotQuery {
        window,
        duration_ms: 60 * 60_000,
        step_ms: 30 * 60_000,
        not_before,
        limit,
    }
}

#[tokio::test]
async fn slots_fall_in_local_opening_hours_clear_of_busy_time_by_the_buffer() {
    let t = paris_tenant();
    let e = Engines::start(&t);
    let monday = next_monday();
    let wednesday = monday + Duration::days(2);
    let paris = |d: NaiveDate, h, m| local(Paris, d, h, m);
    e.book(
        &t,
        timed("Busy", paris(monday, 10, 0), paris(monday, 10, 30)),
    )
    .await;
    // Monday 00:00 to Thursday 00:00, Paris time.
    let window = span(paris(monday, 0, 0), paris(monday + Duration::days(3), 0, 0));
    let slots = |tenant: &TenantConfig, q: SlotQuery| {
        freebusy::bookable_slots(&e.store, tenant, &q).expect("slots")
    };
    let wednesday_night = vec![
        span(paris(wednesday, 22, 0), paris(wednesday, 23, 0)),
        span(paris(wednesday, 22, 30), paris(wednesday, 23, 30)),
        span(
            paris(wednesday, 23, 0),
            paris(wednesday + Duration::days(1), 0, 0),
        ),
    ];

    // With the buffer, Monday's only slot starts 30 minutes after the booking.
    let (found, cut) = slots(&t, query(window, 0, 100));
    let mut expected = vec![span(paris(monday, 11, 0), paris(monday, 12, 0))];
    expected.extend(wednesday_night.clone());
    assert_eq!(found, expected);
    assert!(!cut);

    // Without it, slots may touch the booking on either side.
    let no_buffer = TenantConfig {
        buffer_minutes: 0,
        ..t.clone()
    };
    let (found, _) = slots(&no_buffer, query(window, 0, 100));
    let mut expected = vec![
        span(paris(monday, 9, 0), paris(monday, 10, 0)),
        span(paris(monday, 10, 30), paris(monday, 11, 30)),
        span(paris(monday, 11, 0), paris(monday, 12, 0)),
    ];
    expected.extend(wednesday_night);
    assert_eq!(found, expected);

    // The limit cuts the list and says so; nothing starts before `not_before`.
    let (found, cut) = slots(&no_buffer, query(window, 0, 1));
    assert_eq!(found, [span(paris(monday, 9, 0), paris(monday, 10, 0))]);
    assert!(cut);
    let not_before = paris(monday, 11, 0).timestamp_millis();
    let (found, _) = slots(&no_buffer, query(window, not_before, 2));
    assert_eq!(
        found,
        [
            span(paris(monday, 11, 0), paris(monday, 12, 0)),
            span(paris(wednesday, 22, 0), paris(wednesday, 23, 0)),
        ]
    );

    // Busy time from a calendar counts as well: with an event at 11:00 too,
    // only 9:00 is left that day.
    e.add_source(&t, Source::new("staff", "Staff"));
    let morning = event("training", paris(monday, 11, 0), paris(monday, 11, 30), &[]);
    e.calendars
        .put_object(&t, "staff", "training.ics", &morning, &Precondition::None)
        .await
        .expect("put");
    let monday_only = span(paris(monday, 0, 0), paris(monday + Duration::days(1), 0, 0));
    let (found, cut) = slots(&no_buffer, query(monday_only, 0, 100));
    assert_eq!(found, [span(paris(monday, 9, 0), paris(monday, 10, 0))]);
    assert!(!cut);
}
