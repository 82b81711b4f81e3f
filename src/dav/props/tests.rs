//! Fixture pairs: a resource (built here, no store) answering a PROPFIND body
//! from `fixtures/dav/requests/` must render `fixtures/dav/propfind/{case}.xml`
//! byte for byte. `CALGATE_UPDATE_FIXTURES=1 cargo test --lib dav::props`
//! writes the expected files after an intended change; review their diff.

use std::path::PathBuf;

use chrono::{TimeZone, Utc};

use super::{Env, Resource, propstats};
use crate::config::{TenantConfig, UserConfig};
use crate::dav::node::{Calendar, Node};
use crate::dav::xml::{self, parse_propfind};
use crate::model::{CalendarObject, Source};

fn tenant() -> TenantConfig {
    let user = |name: &str, email: Option<&str>| UserConfig {
        username: name.to_owned(),
        password_hash: String::new(),
        email: email.map(str::to_owned),
        resource: None,
    };
    TenantConfig {
        users: vec![user("ana", Some("ana@example.com")), user("bea", None)],
        ..TenantConfig::new("salon", "Salon Ana", chrono_tz::Europe::Berlin)
    }
}

fn staff_calendar() -> Calendar {
    let mut source = Source::new("ana-work", "Ana & work");
    source.description = Some("Ana's appointments".into());
    source.color = Some("#FF0000FF".into());
    source.order = Some(3);
    source.components = vec!["VEVENT".into(), "VTODO".into()];
    Calendar::Source(source)
}

fn object() -> Node {
    let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\n\
               UID:meeting-1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260302T090000Z\r\n\
               DTEND:20260302T100000Z\r\nSUMMARY:Cut & colour\r\n\
               ORGANIZER:mailto:ana@example.com\r\nATTENDEE:mailto:bea@salon.calgate.invalid\r\n\
               END:VEVENT\r\nEND:VCALENDAR\r\n";
    Node::Object(
        staff_calendar(),
        Box::new(CalendarObject {
            id: "meeting-1.ics".into(),
            uid: Some("meeting-1".into()),
            ics: ics.into(),
            etag: "\"e1\"".into(),
            updated: Utc
                .with_ymd_and_hms(2026, 2, 1, 12, 30, 0)
                .single()
                .expect("date"),
            recurring: false,
            diagnostics: Vec::new(),
            occurrences: Vec::new(),
        }),
    )
}

/// `(case, resource, its collection version, request fixture)`.
fn cases() -> Vec<(&'static str, Node, Option<u64>, &'static str)> {
    vec![
        (
            "calendar-apple-home",
            Node::Calendar(staff_calendar()),
            Some(42),
            "01-propfind-apple-calendar-home",
        ),
        (
            "calendar-allprop",
            Node::Calendar(staff_calendar()),
            Some(42),
            "10-propfind-allprop-include",
        ),
        (
            "bookings-apple-home",
            Node::Calendar(Calendar::Bookings),
            Some(7),
            "01-propfind-apple-calendar-home",
        ),
        (
            "bookings-ctag-sync-token",
            Node::Calendar(Calendar::Bookings),
            Some(7),
            "04-propfind-apple-getctag-sync-token",
        ),
        (
            "principal-apple",
            Node::Principal("ana".into()),
            None,
            "02-propfind-apple-principal",
        ),
        (
            "principal-python-caldav",
            Node::Principal("ana".into()),
            None,
            "09-propfind-python-caldav-principal",
        ),
        (
            "object-thunderbird-etags",
            object(),
            None,
            "06-propfind-thunderbird-etags",
        ),
        ("object-propname", object(), None, "11-propfind-propname"),
        (
            "object-allprop",
            object(),
            None,
            "10-propfind-allprop-include",
        ),
    ]
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/dav")
}

#[test]
fn propfind_fixture_pairs() {
    let tenant = tenant();
    let env = Env {
        tenant: &tenant,
        user: "ana",
        max_resource_size: 1 << 20,
        now: Utc
            .with_ymd_and_hms(2026, 1, 15, 0, 0, 0)
            .single()
            .expect("date"),
    };
    let update = std::env::var_os("CALGATE_UPDATE_FIXTURES").is_some();
    let mut failures = Vec::new();
    for (case, node, version, request) in cases() {
        let body = std::fs::read(fixtures().join(format!("requests/{request}.xml")))
            .expect("request fixture");
        let request = parse_propfind(&body).expect("the fixture parses");
        let resource = Resource {
            node: &node,
            version,
        };
        let response = propstats(&env, &resource, &request);
        let got = xml::multistatus(&[xml::Response::Props(response)], None);
        let path = fixtures().join(format!("propfind/{case}.xml"));
        if update {
            std::fs::write(&path, &got).expect("write fixture");
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if got != expected {
            failures.push(format!("{case}:\n--- expected\n{expected}\n--- got\n{got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
