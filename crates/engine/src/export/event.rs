//! What an exported event says: a booking turned into provider-neutral event
//! content ([`ExportEvent`]), honouring the source's privacy setting, and the
//! markers that let the import path (and crash recovery) recognise it.

use chrono_tz::Tz;
use sha2::{Digest, Sha256};

use crate::model::{Booking, BookingStatus, BookingTime, ExportPrivacy};

/// Prefix of our Graph `transactionId`s.
const TRANSACTION_PREFIX: &str = "calgate-";

/// One booking as an event of one exporting source.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportEvent {
    /// `{tenant}/{booking id}`: Google `extendedProperties.private.gatewayBookingId`,
    /// Graph single-value extended property.
    pub marker: String,
    pub source: String,
    /// Graph create idempotency key (stable per booking, source and generation).
    pub transaction_id: String,
    /// Google client-chosen event id, the same idempotency for Google.
    pub google_id: String,
    pub summary: String,
    pub description: Option<String>,
    pub location: Option<String>,
    pub time: BookingTime,
    /// The zone the booking is shown in (all-day dates are in it).
    pub zone: Tz,
    pub tentative: bool,
    /// The booking in the gateway's API.
    pub link: String,
}

/// The marker value of a booking.
pub fn marker(tenant: &str, booking: &str) -> String {
    format!("{tenant}/{booking}")
}

/// The booking id a marker names, if it is one of `tenant`'s.
pub fn booking_of_marker<'a>(tenant: &str, marker: &'a str) -> Option<&'a str> {
    marker
        .strip_prefix(tenant)?
        .strip_prefix('/')
        .filter(|id| !id.is_empty())
}

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
pub fn google_event_id(tenant: &str, source: &str, booking: &str, generation: u32) -> String {
    format!(
        "{GOOGLE_ID_PREFIX}{}{generation}",
        google_booking_digest(tenant, source, booking)
    )
}

/// Whether `id` is an id [`google_event_id`] gives this booking of this source
/// (any generation): an event our insert made, not a person's copy of it.
pub fn is_google_event_id(tenant: &str, source: &str, booking: &str, id: &str) -> bool {
    id.strip_prefix(GOOGLE_ID_PREFIX)
        .and_then(|rest| rest.strip_prefix(google_booking_digest(tenant, source, booking).as_str()))
        .is_some_and(|generation| generation.parse::<u32>().is_ok())
}

/// Builds the event for `booking` as exported to `source`.
pub fn build(
    booking: &Booking,
    source: &str,
    privacy: ExportPrivacy,
    public_url: &str,
    generation: u32,
) -> ExportEvent {
    let link = format!(
        "{}/api/v1/tenants/{}/bookings/{}",
        public_url.trim_end_matches('/'),
        booking.tenant,
        booking.id
    );
    let (summary, description, location) = match privacy {
        ExportPrivacy::Busy => ("Busy".to_owned(), Some(format!("Booking: {link}")), None),
        ExportPrivacy::Full => {
            let summary = match booking.service.as_deref() {
                Some(service) if !service.is_empty() && service != booking.title => {
                    format!("{} ({service})", booking.title)
                }
                _ => booking.title.clone(),
            };
            let mut lines = Vec::new();
            if let Some(c) = &booking.customer {
                if let Some(name) = &c.name {
                    lines.push(format!("Customer: {name}"));
                }
                if let Some(email) = &c.email {
                    lines.push(format!("Email: {email}"));
                }
                if let Some(phone) = &c.phone {
                    lines.push(format!("Phone: {phone}"));
                }
            }
            if let Some(notes) = booking.notes.as_deref().filter(|n| !n.is_empty()) {
                lines.push(format!("Notes: {notes}"));
            }
            if !lines.is_empty() {
                lines.push(String::new());
            }
            lines.push(format!("Booking: {link}"));
            (summary, Some(lines.join("\n")), booking.location.clone())
        }
    };
    ExportEvent {
        marker: marker(&booking.tenant, &booking.id),
        source: source.to_owned(),
        transaction_id: transaction_id(&booking.tenant, source, &booking.id, generation),
        google_id: google_event_id(&booking.tenant, source, &booking.id, generation),
        summary,
        description,
        location,
        time: booking.time.clone(),
        zone: booking.time_zone,
        tentative: booking.status == BookingStatus::Tentative,
        link,
    }
}

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

    #[test]
    fn google_ids_are_base32hex_and_recognised_only_for_their_booking() {
        let id = google_event_id("salon", "g1", "b-1", 3);
        assert!((5..=1024).contains(&id.len()), "{id}");
        assert!(
            id.bytes().all(|c| BASE32HEX.contains(&c)),
            "{id} is not base32hex"
        );
        assert_ne!(id, google_event_id("salon", "g1", "b-1", 4));
        assert!(is_google_event_id("salon", "g1", "b-1", &id));
        assert!(is_google_event_id(
            "salon",
            "g1",
            "b-1",
            &google_event_id("salon", "g1", "b-1", 0)
        ));
        assert!(!is_google_event_id("salon", "g2", "b-1", &id));
        assert!(!is_google_event_id("salon", "g1", "b-2", &id));
        assert!(!is_google_event_id("salon", "g1", "b-1", "5qk0a8fe2m3o"));
        assert!(!is_google_event_id("salon", "g1", "b-1", &format!("{id}x")));
    }

    #[test]
    fn markers_name_the_tenant() {
        assert_eq!(booking_of_marker("salon", "salon/b1"), Some("b1"));
        assert_eq!(booking_of_marker("salon", "salonx/b1"), None);
        assert_eq!(booking_of_marker("salon", "salon/"), None);
    }
}
