//! The exporter against the Google mock: a booking is delivered as one event,
//! an update patches it, a deletion removes it; a pass with nothing new sends
//! nothing. The account is connected by sealing the mock's tokens with the
//! engines' secret box, as the OAuth callback would store them.

mod common;

use calgate_engine::bookings::{BookingPatch, ConflictPolicy};
use calgate_engine::export::is_for;
use calgate_engine::model::{
    Booking, BookingStatus, Direction, ExportPrivacy, Horizon, ProviderKind, RemoteSource, Source,
};
use calgate_engine::providers::export::marker;
use calgate_engine::providers::oauth::Tokens;
use calgate_engine::settings::{
    ProviderConfig, ProvidersConfig, ResourceConfig, ResourceKind, TenantConfig,
};
use calgate_test_mocks::google::{GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET, GoogleMock};
use chrono::{DateTime, Utc};
use common::{Engines, at, moved_to, tenant, timed};
use serde_json::Value;

const SOURCE: &str = "google";

/// The engines with an exporting Google source whose tokens are stored.
async fn connected(g: &GoogleMock) -> (TenantConfig, Engines) {
    connected_as(g, tenant("salon"), None).await
}

/// [`connected`] for tenant `t` (its id `salon`), the source attached to `resource`.
async fn connected_as(
    g: &GoogleMock,
    t: TenantConfig,
    resource: Option<&str>,
) -> (TenantConfig, Engines) {
    let providers = ProvidersConfig {
        google: Some(ProviderConfig {
            client_id: GOOGLE_CLIENT_ID.into(),
            client_secret: GOOGLE_CLIENT_SECRET.into(),
            auth_url: g.authorize_url(),
            token_url: g.token_url(),
            api_base: g.base_url(),
        }),
        microsoft: None,
    };
    let e = Engines::with(&t, Horizon::default(), providers);
    let mut source = Source::new(SOURCE, "Google");
    source.remote = Some(RemoteSource {
        kind: ProviderKind::Google,
        target: g.primary_id(),
        direction: Direction::Export,
        interval_minutes: 60,
        enabled: true,
        privacy: ExportPrivacy::Full,
    });
    source.resource = resource.map(str::to_owned);
    e.add_source(&t, source);
    let (access_token, refresh_token) = g.oauth().issue_tokens_for_test();
    let tokens = Tokens {
        access_token,
        expires_at: Utc::now() + chrono::Duration::hours(1),
        refresh_token: Some(refresh_token),
    };
    let sealed = e
        .secrets
        .seal(&serde_json::to_vec(&tokens).expect("tokens"));
    e.store
        .put_secret("salon", SOURCE, &sealed)
        .await
        .expect("tokens stored");
    (t, e)
}

/// Live events in the primary calendar carrying the booking's marker.
fn exported(g: &GoogleMock, booking: &str) -> Vec<Value> {
    g.events_with_private_property(
        &g.primary_id(),
        "gatewayBookingId",
        &marker("salon", booking),
    )
}

fn instant(v: &Value) -> DateTime<Utc> {
    let text = v["dateTime"].as_str().expect("a timed event");
    DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

#[tokio::test]
async fn a_booking_is_inserted_patched_and_deleted() {
    let g = GoogleMock::start().await;
    let (t, e) = connected(&g).await;
    let deliver = || e.export.deliver(&t, SOURCE, false);

    let b = e
        .book(&t, timed("Cut", at(5, 9, 0), at(5, 10, 0)))
        .await
        .booking;
    let pass = deliver().await.expect("first pass");
    assert_eq!(
        (pass.created, pass.updated, pass.deleted),
        (1, 0, 0),
        "{pass:?}"
    );
    assert_eq!(pass.error, None);
    let events = exported(&g, &b.id);
    assert_eq!(events.len(), 1, "{events:?}");
    let event_id = events[0]["id"].as_str().expect("id").to_owned();
    assert!(
        events[0]["summary"]
            .as_str()
            .expect("summary")
            .contains("Cut")
    );
    assert_eq!(instant(&events[0]["start"]), at(5, 9, 0));
    assert_eq!(instant(&events[0]["end"]), at(5, 10, 0));

    // Nothing new: no request at all.
    g.clear_requests();
    let pass = deliver().await.expect("idle pass");
    assert_eq!((pass.created, pass.updated, pass.deleted), (0, 0, 0));
    assert!(g.api_requests().is_empty(), "{:?}", g.api_requests());

    // A move and a new title patch the same event.
    let change = BookingPatch {
        title: Some("Cut and colour".into()),
        ..moved_to(at(5, 11, 0), at(5, 12, 30))
    };
    e.change(&t, &b.id, change, None, ConflictPolicy::Refuse)
        .await
        .expect("update");
    let pass = deliver().await.expect("second pass");
    assert_eq!(
        (pass.created, pass.updated, pass.deleted),
        (0, 1, 0),
        "{pass:?}"
    );
    let events = exported(&g, &b.id);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["id"], event_id.as_str());
    assert!(
        events[0]["summary"]
            .as_str()
            .expect("summary")
            .contains("Cut and colour")
    );
    assert_eq!(instant(&events[0]["start"]), at(5, 11, 0));
    assert_eq!(instant(&events[0]["end"]), at(5, 12, 30));

    // Deleted: the event goes.
    e.bookings.delete(&t, &b.id, None).await.expect("delete");
    let pass = deliver().await.expect("third pass");
    assert_eq!(
        (pass.created, pass.updated, pass.deleted),
        (0, 0, 1),
        "{pass:?}"
    );
    assert!(exported(&g, &b.id).is_empty());
    assert!(
        g.event(&g.primary_id(), &event_id)
            .is_some_and(|ev| ev["status"] == "cancelled")
    );
}

#[tokio::test]
async fn a_cancelled_booking_loses_its_event_and_the_others_keep_theirs() {
    let g = GoogleMock::start().await;
    let (t, e) = connected(&g).await;
    let kept = e
        .book(&t, timed("Kept", at(6, 9, 0), at(6, 10, 0)))
        .await
        .booking;
    let cancelled = e
        .book(&t, timed("Cancelled", at(6, 10, 0), at(6, 11, 0)))
        .await
        .booking;
    let pass = e.export.deliver(&t, SOURCE, false).await.expect("pass");
    assert_eq!(pass.created, 2, "{pass:?}");
    assert_eq!(exported(&g, &cancelled.id).len(), 1);

    let cancel = BookingPatch {
        status: Some(BookingStatus::Cancelled),
        ..BookingPatch::default()
    };
    e.change(&t, &cancelled.id, cancel, None, ConflictPolicy::Refuse)
        .await
        .expect("cancel");
    let pass = e.export.deliver(&t, SOURCE, false).await.expect("pass");
    assert_eq!(
        (pass.created, pass.updated, pass.deleted),
        (0, 0, 1),
        "{pass:?}"
    );
    assert!(exported(&g, &cancelled.id).is_empty());
    assert_eq!(exported(&g, &kept.id).len(), 1);
}

/// The salon with two stylists, Anna and Ben.
fn salon_with_stylists() -> TenantConfig {
    let mut t = tenant("salon");
    for id in ["anna", "ben"] {
        t.resources.push(ResourceConfig {
            id: id.into(),
            name: id.into(),
            kind: ResourceKind::Staff,
            timezone: None,
            opening_hours: None,
            buffer_minutes: None,
            capacity: 1,
            email: None,
        });
    }
    t
}

fn taking(mut patch: BookingPatch, resources: &[&str]) -> BookingPatch {
    patch.resources = Some(resources.iter().map(|r| (*r).to_owned()).collect());
    patch
}

#[tokio::test]
async fn a_source_of_one_resource_exports_only_its_bookings() {
    let g = GoogleMock::start().await;
    let (t, e) = connected_as(&g, salon_with_stylists(), Some("anna")).await;
    let deliver = || e.export.deliver(&t, SOURCE, false);
    let anna = e
        .book(
            &t,
            taking(timed("Anna", at(7, 9, 0), at(7, 10, 0)), &["anna"]),
        )
        .await
        .booking;
    let ben = e
        .book(
            &t,
            taking(timed("Ben", at(7, 9, 0), at(7, 10, 0)), &["ben"]),
        )
        .await
        .booking;
    // Stored before the salon declared its stylists: tenant-wide sources only.
    let mut before = t.clone();
    before.resources.clear();
    let old = e
        .book(&before, timed("Old", at(7, 11, 0), at(7, 12, 0)))
        .await
        .booking;
    let pass = deliver().await.expect("pass");
    assert_eq!((pass.created, pass.deleted), (1, 0), "{pass:?}");
    assert_eq!(exported(&g, &anna.id).len(), 1);
    assert!(exported(&g, &ben.id).is_empty());
    assert!(exported(&g, &old.id).is_empty());
    let sources: Vec<String> = e
        .export
        .booking_exports(&t, &ben)
        .expect("exports")
        .into_iter()
        .map(|x| x.source)
        .collect();
    assert!(sources.is_empty(), "{sources:?}");

    // Anna's booking moves to Ben: its event leaves her calendar.
    e.change(
        &t,
        &anna.id,
        taking(BookingPatch::default(), &["ben"]),
        None,
        ConflictPolicy::Allow,
    )
    .await
    .expect("moved to ben");
    let pass = deliver().await.expect("pass");
    assert_eq!((pass.created, pass.deleted), (0, 1), "{pass:?}");
    assert!(exported(&g, &anna.id).is_empty());

    // The source is attached to Ben now: every booking is looked at again.
    let mut source = e
        .store
        .source("salon", SOURCE)
        .expect("read")
        .expect("source");
    source.resource = Some("ben".into());
    e.add_source(&t, source);
    let pass = deliver().await.expect("pass");
    assert_eq!((pass.created, pass.deleted), (2, 0), "{pass:?}");
    assert_eq!(exported(&g, &anna.id).len(), 1);
    assert_eq!(exported(&g, &ben.id).len(), 1);
    assert!(exported(&g, &old.id).is_empty());
}

#[tokio::test]
async fn which_bookings_a_source_is_for() {
    let plain = tenant("salon");
    let sample = Engines::start(&plain)
        .book(&plain, timed("Cut", at(8, 9, 0), at(8, 10, 0)))
        .await
        .booking;
    let booking = |resources: &[&str]| Booking {
        resources: resources.iter().map(|r| (*r).to_owned()).collect(),
        ..sample.clone()
    };
    let source = |resource: Option<&str>| Source {
        resource: resource.map(str::to_owned),
        ..Source::new("s", "s")
    };
    let salon = salon_with_stylists();
    // A tenant without resources: every booking is the implicit resource's.
    assert!(is_for(&plain, &source(None), &booking(&[])));
    assert!(is_for(&plain, &source(Some("default")), &booking(&[])));
    // With stylists: theirs only; tenant-wide bookings to tenant-wide sources.
    assert!(is_for(
        &salon,
        &source(Some("anna")),
        &booking(&["anna", "ben"])
    ));
    assert!(!is_for(&salon, &source(Some("anna")), &booking(&["ben"])));
    assert!(!is_for(&salon, &source(Some("anna")), &booking(&[])));
    assert!(is_for(&salon, &source(None), &booking(&[])));
    assert!(is_for(&salon, &source(None), &booking(&["ben"])));
}
