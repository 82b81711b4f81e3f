//! The exporter against the Google mock: a booking is delivered as one event,
//! an update patches it, a deletion removes it; a pass with nothing new sends
//! nothing. The account is connected by sealing the mock's tokens with the
//! engines' secret box, as the OAuth callback would store them.

mod common;

use calgate_engine::bookings::{BookingPatch, ConflictPolicy};
use calgate_engine::model::{
    BookingStatus, Direction, ExportPrivacy, Horizon, ProviderKind, RemoteSource, Source,
};
use calgate_engine::providers::export::marker;
use calgate_engine::providers::oauth::Tokens;
use calgate_engine::settings::{ProviderConfig, ProvidersConfig, TenantConfig};
use calgate_test_mocks::google::{GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET, GoogleMock};
use chrono::{DateTime, Utc};
use common::{Engines, at, moved_to, tenant, timed};
use serde_json::Value;

const SOURCE: &str = "google";

/// The engines with an exporting Google source whose tokens are stored.
async fn connected(g: &GoogleMock) -> (TenantConfig, Engines) {
    let t = tenant("salon");
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
