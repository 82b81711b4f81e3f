//! Export per resource (issue 15, point 4), against the mock providers: each
//! stylist's bookings go to the calendar of the source attached to them, and
//! only there; moving a booking to another stylist moves its event; a
//! tenant-wide exporting source gets every booking (and the tenant-wide ones
//! stored before resources); a booking's `exports` lists the sources it is for.

mod common;
mod export_support;
use calgate_test_mocks as providers;

use std::time::Duration;

use export_support::{
    Gw, Provider, Setup, call, connect_source, drained_source, google_events_in, graph_events_in,
    slot, until,
};
use providers::google::GoogleMock;
use providers::graph::{DEFAULT_CALENDAR_ID, GraphMock};
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);
/// The salon's own Google calendar, exported to by the tenant-wide source.
const SHOP_CALENDAR: &str = "shop@group.calendar.google.com";
const SOURCES: [&str; 3] = ["anna-google", "ben-outlook", "shop"];

/// Anna (her Google calendar), Ben (his Outlook calendar) and the shop's
/// Google calendar, which takes every booking.
async fn salon() -> (GoogleMock, GraphMock, Gw) {
    let g = GoogleMock::start().await;
    let m = GraphMock::start().await;
    g.add_calendar(SHOP_CALENDAR, "Salon", "Europe/Paris", "owner");
    let tables = format!(
        "{}{}",
        Setup::google(&g).provider_table,
        Setup::microsoft(&m, DEFAULT_CALENDAR_ID).provider_table
    );
    let primary = g.primary_id();
    let gw = Gw::start_with(|data| {
        let extra = common::Extra {
            server: format!("public_url = \"{}\"\n{tables}", export_support::PUBLIC_URL),
            salon: format!(
                "[[tenant.resource]]\nid = \"anna\"\nname = \"Anna\"\nkind = \"staff\"\n\
                 [[tenant.resource]]\nid = \"ben\"\nname = \"Ben\"\nkind = \"staff\"\n\
                 [[tenant.source]]\nid = \"anna-google\"\nkind = \"google\"\ncalendar = \"{primary}\"\ndirection = \"export\"\nresource = \"anna\"\n\
                 [[tenant.source]]\nid = \"ben-outlook\"\nkind = \"microsoft\"\ncalendar = \"{DEFAULT_CALENDAR_ID}\"\ndirection = \"export\"\nresource = \"ben\"\n\
                 [[tenant.source]]\nid = \"shop\"\nkind = \"google\"\ncalendar = \"{SHOP_CALENDAR}\"\ndirection = \"export\"\n"
            ),
        };
        common::config_text_with(data, "127.0.0.1:0", None, &extra)
    })
    .await;
    for (source, provider) in [
        ("anna-google", Provider::Google),
        ("ben-outlook", Provider::Microsoft),
        ("shop", Provider::Google),
    ] {
        connect_source(&gw.client, &gw.base, provider, source).await;
    }
    (g, m, gw)
}

/// Creates a booking taking `resources`; its id.
async fn book(gw: &Gw, day: u32, title: &str, resources: &[&str]) -> String {
    let mut body = slot(day, 10, 45, title);
    body["resources"] = json!(resources);
    let (status, b) = call(&gw.client, &gw.base, Method::POST, "/bookings", Some(&body)).await;
    assert_eq!(status, 201, "{b}");
    b["id"].as_str().expect("id").to_owned()
}

async fn drained_all(gw: &Gw) {
    for source in SOURCES {
        drained_source(&gw.client, &gw.base, source, WAIT).await;
    }
}

/// How many live events for booking `id` are in Anna's, Ben's and the shop's calendars.
fn placed(g: &GoogleMock, m: &GraphMock, id: &str) -> [usize; 3] {
    [
        google_events_in(g, &g.primary_id(), id).len(),
        graph_events_in(m, DEFAULT_CALENDAR_ID, id).len(),
        google_events_in(g, SHOP_CALENDAR, id).len(),
    ]
}

async fn placed_when(g: &GoogleMock, m: &GraphMock, id: &str, want: [usize; 3], what: &str) {
    until(what, WAIT, || async {
        match placed(g, m, id) {
            found if found == want => Ok(()),
            found => Err(format!("events in anna, ben, shop: {found:?}")),
        }
    })
    .await;
}

/// The booking's `exports` as (source, state), sorted, once every state is settled.
async fn exports_when(gw: &Gw, id: &str, want: &[(&str, &str)]) {
    until("the booking's exports", WAIT, || async {
        let (status, b) = call(
            &gw.client,
            &gw.base,
            Method::GET,
            &format!("/bookings/{id}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{b}");
        let mut found: Vec<(String, String)> = b["exports"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                        (text(&e["source"]), text(&e["state"]))
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(s, st)| ((*s).to_owned(), (*st).to_owned()))
            .collect();
        if found == want {
            Ok(())
        } else {
            Err(format!("{found:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stylists_bookings_go_to_their_calendar_only() {
    let (g, m, gw) = salon().await;
    let anna = book(&gw, 1, "Anna's cut", &["anna"]).await;
    let ben = book(&gw, 2, "Ben's cut", &["ben"]).await;
    drained_all(&gw).await;
    placed_when(
        &g,
        &m,
        &anna,
        [1, 0, 1],
        "Anna's booking in her calendar and the shop's",
    )
    .await;
    placed_when(
        &g,
        &m,
        &ben,
        [0, 1, 1],
        "Ben's booking in his calendar and the shop's",
    )
    .await;
    exports_when(
        &gw,
        &anna,
        &[("anna-google", "exported"), ("shop", "exported")],
    )
    .await;
    exports_when(
        &gw,
        &ben,
        &[("ben-outlook", "exported"), ("shop", "exported")],
    )
    .await;

    // Moved from Anna to Ben: out of her calendar, into his; the shop's is patched.
    let (status, b) = call(
        &gw.client,
        &gw.base,
        Method::PATCH,
        &format!("/bookings/{anna}"),
        Some(&json!({"resources": ["ben"]})),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    drained_all(&gw).await;
    placed_when(
        &g,
        &m,
        &anna,
        [0, 1, 1],
        "the moved booking in Ben's calendar",
    )
    .await;
    exports_when(
        &gw,
        &anna,
        &[("ben-outlook", "exported"), ("shop", "exported")],
    )
    .await;
    let in_ben = graph_events_in(&m, DEFAULT_CALENDAR_ID, &anna);
    assert_eq!(in_ben[0]["subject"], "Anna's cut (Colour)", "{in_ben:?}");

    // Cancelled: gone everywhere, as before.
    let (status, b) = call(
        &gw.client,
        &gw.base,
        Method::PATCH,
        &format!("/bookings/{ben}"),
        Some(&json!({"status": "cancelled"})),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    drained_all(&gw).await;
    placed_when(&g, &m, &ben, [0, 0, 0], "the cancelled booking removed").await;
    exports_when(
        &gw,
        &ben,
        &[("ben-outlook", "removed"), ("shop", "removed")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_wide_bookings_go_to_tenant_wide_sources_only() {
    let (g, m, gw) = salon().await;
    // A booking stored before the salon declared its stylists takes them all:
    // it belongs to no one stylist's calendar, only to the shop's.
    let old = common::create_salon_legacy_booking(
        gw.app(),
        "2026-12-03T10:00:00+01:00",
        "2026-12-03T11:00:00+01:00",
        "Old booking",
    )
    .await;
    let both = book(&gw, 4, "Cut and colour", &["anna", "ben"]).await;
    drained_all(&gw).await;
    placed_when(
        &g,
        &m,
        &old,
        [0, 0, 1],
        "the tenant-wide booking in the shop's calendar",
    )
    .await;
    placed_when(
        &g,
        &m,
        &both,
        [1, 1, 1],
        "a booking of both stylists everywhere",
    )
    .await;
    exports_when(&gw, &old, &[("shop", "exported")]).await;
    exports_when(
        &gw,
        &both,
        &[
            ("anna-google", "exported"),
            ("ben-outlook", "exported"),
            ("shop", "exported"),
        ],
    )
    .await;
}
