//! Writing bookings into a Microsoft 365 / Outlook calendar (Graph,
//! REFERENCE.md §3.5): the event resource, our `transactionId`s (idempotent
//! creates), the marker property, and the [`ExportTarget`] client.

use std::sync::Arc;

use http::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::export::{Api, ExportEvent, Inserted, Patched, calendar_gone, id_of};
use crate::model::BookingTime;
use crate::oauth::Session;
use crate::{ProviderError, path_segment};

/// Single-value extended property of our marker (PS_PUBLIC_STRINGS set).
pub const MARKER_PROPERTY: &str =
    "String {00020329-0000-0000-C000-000000000046} Name gatewayBookingId";
/// Prefix of our `transactionId`s.
const TRANSACTION_PREFIX: &str = "calgate-";

/// 8 hex digits naming a tenant's source inside transaction ids.
fn scope_digest(tenant: &str, source: &str) -> String {
    let digest = Sha256::digest([tenant.as_bytes(), b"\0", source.as_bytes()].concat());
    hex::encode(&digest[..4])
}

/// `calgate-{scope}-{generation}-{booking}`: the same create retried is the same
/// transaction; a create after a delete is a new one.
pub fn transaction_id(tenant: &str, source: &str, booking: &str, generation: u32) -> String {
    format!(
        "{TRANSACTION_PREFIX}{}-{generation}-{booking}",
        scope_digest(tenant, source)
    )
}

/// The booking id a transaction id of ours names (for this tenant and source).
pub fn booking_of_transaction<'a>(tenant: &str, source: &str, txid: &'a str) -> Option<&'a str> {
    let rest = txid.strip_prefix(TRANSACTION_PREFIX)?;
    let rest = rest.strip_prefix(scope_digest(tenant, source).as_str())?;
    let rest = rest.strip_prefix('-')?;
    let (generation, booking) = rest.split_once('-')?;
    generation.parse::<u32>().ok()?;
    (!booking.is_empty()).then_some(booking)
}

#[derive(Clone)]
pub struct GraphTarget {
    api: Api,
    /// Empty: the default calendar.
    calendar: String,
}

impl GraphTarget {
    pub fn new(http: reqwest::Client, session: Arc<Session>, base: &str, calendar: &str) -> Self {
        GraphTarget {
            api: Api::new(http, session, base, "Microsoft Graph"),
            calendar: calendar.to_owned(),
        }
    }

    fn calendar_path(&self) -> String {
        if self.calendar.is_empty() {
            "/me/calendar".to_owned()
        } else {
            format!("/me/calendars/{}", path_segment(&self.calendar))
        }
    }
}

/// The event resource without `transactionId` (which cannot change after create).
pub fn graph_body(ev: &ExportEvent) -> Value {
    let zone = ev.zone.name();
    let (start, end, all_day) = match &ev.time {
        BookingTime::Timed { start, end } => {
            let at = |t: &chrono::DateTime<chrono::FixedOffset>| {
                json!({
                    "dateTime": t.with_timezone(&ev.zone).naive_local().format("%Y-%m-%dT%H:%M:%S").to_string(),
                    "timeZone": zone,
                })
            };
            (at(start), at(end), false)
        }
        BookingTime::AllDay { start, end } => {
            let at = |d: &chrono::NaiveDate| json!({"dateTime": format!("{}T00:00:00", d.format("%Y-%m-%d")), "timeZone": zone});
            (at(start), at(end), true)
        }
    };
    json!({
        "subject": ev.summary,
        "body": {"contentType": "text", "content": ev.description.clone().unwrap_or_default()},
        "location": {"displayName": ev.location.clone().unwrap_or_default()},
        "start": start,
        "end": end,
        "isAllDay": all_day,
        "showAs": if ev.tentative { "tentative" } else { "busy" },
        "isReminderOn": false,
        "singleValueExtendedProperties": [{"id": MARKER_PROPERTY, "value": ev.marker}],
    })
}

impl GraphTarget {
    /// Graph answers a repeated `transactionId` with the event made first
    /// (§3.5), as a creation.
    async fn insert_event(&self, ev: &ExportEvent) -> Result<Inserted, ProviderError> {
        let url = self
            .api
            .url(&format!("{}/events", self.calendar_path()), &[])?;
        let mut body = graph_body(ev);
        body["transactionId"] = json!(transaction_id(
            &ev.tenant,
            &ev.source,
            &ev.booking,
            ev.generation
        ));
        let answer = self.api.send(Method::POST, url, Some(&body)).await?;
        match answer.status.as_u16() {
            200..=299 => id_of(&answer.json()?).map(Inserted::Created),
            404 | 410 => Err(calendar_gone(self.api.provider, &answer)),
            _ => Err(answer.error()),
        }
    }

    async fn patch_event(&self, id: &str, ev: &ExportEvent) -> Result<Patched, ProviderError> {
        let url = self
            .api
            .url(&format!("/me/events/{}", path_segment(id)), &[])?;
        self.api
            .send(Method::PATCH, url, Some(&graph_body(ev)))
            .await?
            .patched()
    }

    async fn delete_event(&self, id: &str) -> Result<(), ProviderError> {
        let url = self
            .api
            .url(&format!("/me/events/{}", path_segment(id)), &[])?;
        self.api.delete(url).await
    }

    async fn find_events(&self, marker: &str) -> Result<Vec<String>, ProviderError> {
        let filter = format!(
            "singleValueExtendedProperties/any(ep: ep/id eq '{MARKER_PROPERTY}' and ep/value eq '{}')",
            marker.replace('\'', "''")
        );
        let url = self.api.url(
            &format!("{}/events", self.calendar_path()),
            &[("$filter", filter.as_str())],
        )?;
        Ok(self
            .api
            .list(url, "value")
            .await?
            .iter()
            .filter_map(|e| e.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect())
    }
}

crate::export::export_target_by_inherent_methods!(GraphTarget);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_round_trip_only_for_their_source() {
        let tx = transaction_id("salon", "g1", "b-1-2", 3);
        assert_eq!(booking_of_transaction("salon", "g1", &tx), Some("b-1-2"));
        assert_eq!(booking_of_transaction("salon", "g2", &tx), None);
        assert_eq!(booking_of_transaction("garage", "g1", &tx), None);
        assert_eq!(booking_of_transaction("salon", "g1", "other"), None);
    }
}
