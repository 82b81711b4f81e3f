//! What a booking's entry in the time index (`booking_time`) holds besides its
//! span: its busy kind and the resources it takes, so free/busy, slots and the
//! conflict checks answer per resource without decoding a booking record.
//!
//! Payload: `kind u8 | (length u32 | resource id)*`. A booking naming no
//! resources has the kind alone, which is byte for byte the entry written
//! before resources were indexed; such a booking takes every resource
//! ([`crate::model::takes`]), so those old entries still say the truth. Old
//! entries of bookings that do name resources are rewritten once, when the
//! store opens ([`crate::Store::open`]).

use crate::model::{Booking, BusyKind, Span};
use crate::{IndexedBooking, kind_of, kind_payload};

/// The time-index payload of `booking`.
pub(crate) fn payload_of(booking: &Booking) -> Vec<u8> {
    payload(booking.busy_kind(), &booking.resources)
}

/// The time-index payload of a booking of `kind` taking `resources`.
fn payload(kind: BusyKind, resources: &[String]) -> Vec<u8> {
    let mut out = kind_payload(kind).to_vec();
    for resource in resources {
        // A resource id is a few bytes (1-64 by the settings' rule); the length
        // field could hold 4 GiB.
        out.extend_from_slice(&(resource.len() as u32).to_be_bytes());
        out.extend_from_slice(resource.as_bytes());
    }
    out
}

/// The booking an entry describes; None when its payload is not one
/// [`payload`] writes.
pub(crate) fn decode(id: &[u8], span: Span, payload: &[u8]) -> Option<IndexedBooking> {
    let (kind, mut rest) = payload.split_first()?;
    let mut resources = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        let (resource, tail) = tail.split_at_checked(len)?;
        resources.push(String::from_utf8(resource.to_vec()).ok()?);
        rest = tail;
    }
    Some(IndexedBooking {
        id: String::from_utf8_lossy(id).into_owned(),
        span,
        kind: kind_of(Some(kind)),
        resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_a_bare_kind_takes_everything() {
        let span = Span::new(0, 10);
        // Naming none: the kind alone, as entries were before resources.
        let bare = payload(BusyKind::Tentative, &[]);
        assert_eq!(bare, kind_payload(BusyKind::Tentative));
        let entry = decode(b"b1", span, &bare).expect("decodes");
        assert!(entry.resources.is_empty() && entry.takes("anyone"));
        let whole = payload(BusyKind::Tentative, &["anna".into(), "chair-1".into()]);
        let entry = decode(b"b1", span, &whole).expect("decodes");
        assert_eq!(
            (entry.id.as_str(), entry.span, entry.kind),
            ("b1", span, BusyKind::Tentative)
        );
        assert_eq!(entry.resources, ["anna", "chair-1"]);
        assert!(entry.takes("anna") && !entry.takes("ben"));
        // A payload cut inside a resource is refused, not read as another one.
        let first_ends = 1 + 4 + "anna".len();
        for cut in (2..first_ends).chain(first_ends + 1..whole.len()) {
            assert_eq!(decode(b"b1", span, &whole[..cut]), None, "cut at {cut}");
        }
        assert_eq!(decode(b"b1", span, &[]), None);
        assert_eq!(
            decode(b"b1", span, &[2, 0, 0, 0, 2, 0xff, 0xfe]),
            None,
            "not UTF-8"
        );
    }
}
