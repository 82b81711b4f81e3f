//! Writing bookings into a Google calendar (Calendar v3, REFERENCE.md §2.4):
//! the event resource, our client-chosen event ids (idempotent inserts), and
//! the [`ExportTarget`] client.

use std::sync::Arc;

use chrono::SecondsFormat;
use http::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::BOOKING_MARKER as GOOGLE_MARKER;
use crate::export::{Api, ExportEvent, Inserted, Patched, calendar_gone, id_of};
use crate::model::BookingTime;
use crate::oauth::Session;
use crate::{ProviderError, path_segment};

/// `extendedProperties.private` key naming the source an event was exported from.
pub const SOURCE_KEY: &str = "gatewaySource";

/// Prefix of our Google event ids (base32hex letters only).
const GOOGLE_ID_PREFIX: &str = "calgate";
/// base32hex, lowercase: the alphabet of Google's client-chosen ids.
const BASE32HEX: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

/// 32 base32hex digits naming a booking of a tenant's source.
fn google_booking_digest(tenant: &str, source: &str, booking: &str) -> String {
    let digest = Sha256::digest(
        [
            tenant.as_bytes(),
            b"\0",
            source.as_bytes(),
            b"\0",
            booking.as_bytes(),
        ]
        .concat(),
    );
    // 20 bytes = 160 bits = 32 digits of 5 bits.
    let mut bits: u64 = 0;
    let mut held = 0;
    let mut out = String::with_capacity(32);
    for byte in &digest[..20] {
        bits = (bits << 8) | u64::from(*byte);
        held += 8;
        while held >= 5 {
            held -= 5;
            out.push(char::from(BASE32HEX[((bits >> held) & 31) as usize]));
        }
    }
    out
}

/// `calgate{digest}{generation}`: the Google event id of a booking's event
/// (REFERENCE.md §2.3: base32hex, 5–1024 characters). Chosen by us, so an
/// insert retried after its answer was lost gets 409 instead of making a
/// second event; a create after a delete (next generation) is a new id.
pub fn event_id(tenant: &str, source: &str, booking: &str, generation: u32) -> String {
    format!(
        "{GOOGLE_ID_PREFIX}{}{generation}",
        google_booking_digest(tenant, source, booking)
    )
}

/// Whether `id` is an id [`event_id`] gives this booking of this source
/// (any generation): an event our insert made, not a person's copy of it.
pub fn is_event_id(tenant: &str, source: &str, booking: &str, id: &str) -> bool {
    id.strip_prefix(GOOGLE_ID_PREFIX)
        .and_then(|rest| rest.strip_prefix(google_booking_digest(tenant, source, booking).as_str()))
        .is_some_and(|generation| generation.parse::<u32>().is_ok())
}

#[derive(Clone)]
pub struct GoogleTarget {
    api: Api,
    calendar: String,
}

impl GoogleTarget {
    pub fn new(http: reqwest::Client, session: Arc<Session>, base: &str, calendar: &str) -> Self {
        GoogleTarget {
            api: Api::new(http, session, base, "Google Calendar"),
            calendar: calendar.to_owned(),
        }
    }

    fn events_path(&self) -> String {
        format!("/calendars/{}/events", path_segment(&self.calendar))
    }
}

/// The event resource (nulls clear fields on patch; they are left out on insert).
pub fn google_body(ev: &ExportEvent) -> Value {
    let (start, end) = match &ev.time {
        BookingTime::Timed { start, end } => {
            let at = |t: &chrono::DateTime<chrono::FixedOffset>| {
                json!({
                    "dateTime": t.with_timezone(&ev.zone).to_rfc3339_opts(SecondsFormat::Secs, false),
                    "timeZone": ev.zone.name(),
                })
            };
            (at(start), at(end))
        }
        BookingTime::AllDay { start, end } => (
            json!({"date": start.format("%Y-%m-%d").to_string()}),
            json!({"date": end.format("%Y-%m-%d").to_string()}),
        ),
    };
    json!({
        "summary": ev.summary,
        "description": ev.description,
        "location": ev.location,
        "start": start,
        "end": end,
        "status": if ev.tentative { "tentative" } else { "confirmed" },
        "transparency": "opaque",
        "extendedProperties": {"private": {
            GOOGLE_MARKER: ev.marker,
            SOURCE_KEY: ev.source,
        }},
        "source": {"title": "Booking", "url": ev.link},
    })
}

fn without_nulls(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, x| !x.is_null());
    }
    v
}

impl GoogleTarget {
    /// With our own event id (§2.4): a repeat of an insert that went through
    /// gets 409 `duplicate`, and the event is then looked up by that id.
    async fn insert_event(&self, ev: &ExportEvent) -> Result<Inserted, ProviderError> {
        let url = self
            .api
            .url(&self.events_path(), &[("sendUpdates", "none")])?;
        let mut body = without_nulls(google_body(ev));
        let id = event_id(&ev.tenant, &ev.source, &ev.booking, ev.generation);
        body["id"] = json!(id);
        let answer = self.api.send(Method::POST, url, Some(&body)).await?;
        match answer.status.as_u16() {
            200..=299 => id_of(&answer.json()?).map(Inserted::Created),
            409 => {
                let path = format!("{}/{}", self.events_path(), path_segment(&id));
                let found = self
                    .api
                    .send(Method::GET, self.api.url(&path, &[])?, None)
                    .await?;
                match found.status.as_u16() {
                    200..=299 => id_of(&found.json()?).map(Inserted::Existing),
                    // Taken by an event we cannot see: nothing to reconcile with.
                    _ => Err(ProviderError::Permanent(format!(
                        "Google Calendar refused event id {} as a duplicate but answered HTTP {} for it",
                        id, found.status
                    ))),
                }
            }
            404 | 410 => Err(calendar_gone(self.api.provider, &answer)),
            _ => Err(answer.error()),
        }
    }

    async fn patch_event(&self, id: &str, ev: &ExportEvent) -> Result<Patched, ProviderError> {
        let path = format!("{}/{}", self.events_path(), path_segment(id));
        let url = self.api.url(&path, &[("sendUpdates", "none")])?;
        self.api
            .send(Method::PATCH, url, Some(&google_body(ev)))
            .await?
            .patched()
    }

    async fn delete_event(&self, id: &str) -> Result<(), ProviderError> {
        let path = format!("{}/{}", self.events_path(), path_segment(id));
        let url = self.api.url(&path, &[("sendUpdates", "none")])?;
        self.api.delete(url).await
    }

    async fn find_events(&self, marker: &str) -> Result<Vec<String>, ProviderError> {
        let filter = format!("{GOOGLE_MARKER}={marker}");
        let url = self.api.url(
            &self.events_path(),
            &[
                ("privateExtendedProperty", filter.as_str()),
                ("showDeleted", "false"),
                ("maxResults", "50"),
            ],
        )?;
        Ok(self
            .api
            .list(url, "items")
            .await?
            .iter()
            .filter(|e| e.get("status").and_then(Value::as_str) != Some("cancelled"))
            .filter_map(|e| e.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect())
    }
}

crate::export::export_target_by_inherent_methods!(GoogleTarget);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_ids_are_base32hex_and_recognised_only_for_their_booking() {
        let id = event_id("salon", "g1", "b-1", 3);
        assert!((5..=1024).contains(&id.len()), "{id}");
        assert!(
            id.bytes().all(|c| BASE32HEX.contains(&c)),
            "{id} is not base32hex"
        );
        assert_ne!(id, event_id("salon", "g1", "b-1", 4));
        assert!(is_event_id("salon", "g1", "b-1", &id));
        assert!(is_event_id(
            "salon",
            "g1",
            "b-1",
            &event_id("salon", "g1", "b-1", 0)
        ));
        assert!(!is_event_id("salon", "g2", "b-1", &id));
        assert!(!is_event_id("salon", "g1", "b-2", &id));
        assert!(!is_event_id("salon", "g1", "b-1", "5qk0a8fe2m3o"));
        assert!(!is_event_id("salon", "g1", "b-1", &format!("{id}x")));
    }
}
