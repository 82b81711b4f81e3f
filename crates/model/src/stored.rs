//! Domain records the store keeps beside bookings, sources and calendar objects:
//! how a booking stands with an exporting source, a delivered scheduling
//! message, an entry of the busy index, a booking as its time index holds it.
//!
//! They live here, not in `calgate-store`, because they are data the engines
//! reason about, whatever backend holds them; the store crate re-exports them
//! under their old paths (`calgate_store::ExportRecord`, ...). How a backend lays
//! them out (sled keys, SQL columns) stays in the store. The serde derives are
//! the sled backend's record format: renaming a field changes what is on disk.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{BOOKINGS_SOURCE, Booking, BusyKind, Span};

/// How one booking stands with one exporting source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRecord {
    /// The provider's event id, while the booking is exported.
    #[serde(default)]
    pub remote_id: Option<String>,
    /// ETag of the booking revision the event shows.
    #[serde(default)]
    pub exported_etag: Option<String>,
    /// The time the event was given (to tell our own changes from external moves).
    #[serde(default)]
    pub exported_span: Option<Span>,
    /// Bumped whenever the event is deleted, so a later create is a new
    /// transaction for providers that deduplicate creates (Graph `transactionId`).
    #[serde(default)]
    pub generation: u32,
    /// A create was sent and its answer may not have been stored: look for the
    /// marked event before creating another one.
    #[serde(default)]
    pub create_pending: bool,
    /// Delivery failed for good at this booking revision; retried when the
    /// booking changes again (or on a manual export run).
    #[serde(default)]
    pub parked: Option<Parked>,
    /// The event was moved in the external calendar.
    #[serde(default)]
    pub external: Option<ExternalChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    pub etag: Option<String>,
    pub error: String,
    pub at: DateTime<Utc>,
}

/// A move of an exported event made in the external calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalChange {
    pub detected: DateTime<Utc>,
    /// The event's time in the external calendar.
    pub span: Span,
    /// `reported` (the tenant does not accept external moves), `applied` (the
    /// booking was moved), or `rejected` (moving the booking would conflict).
    pub outcome: String,
    #[serde(default)]
    pub detail: Option<String>,
}

/// Where a source's export stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportState {
    /// Every bookings change-log entry up to here is delivered (or parked). A
    /// new source starts at 0: the whole log, i.e. every booking there is.
    pub cursor: u64,
    /// The calendar the cursor and mappings belong to; another calendar (the
    /// source was pointed elsewhere) starts over, leaving the old one as it is.
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub last_success: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_error_at: Option<DateTime<Utc>>,
    /// Bookings delivered since the source started exporting.
    #[serde(default)]
    pub delivered: u64,
    #[serde(default)]
    pub consecutive_failures: u32,
    /// No delivery before this (backoff after retryable errors).
    #[serde(default)]
    pub retry_at: Option<DateTime<Utc>>,
    /// The resource the source exported for when the cursor moved (`None`:
    /// the whole tenant, as every state stored before resources). Attached to
    /// another one since, every booking is reconciled again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// One delivered iTIP message in a user's scheduling inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxItem {
    /// Resource name in the inbox (`{uuid}.ics`).
    pub name: String,
    pub etag: String,
    pub created: DateTime<Utc>,
    /// Position in the inbox's change log.
    pub seq: u64,
    pub ics: String,
}

/// A message for one user's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub user: String,
    pub ics: String,
}

/// One entry of the busy index: who blocks which time, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusyEntry {
    pub span: Span,
    pub kind: BusyKind,
    pub source: String,
    /// Booking id or calendar object id.
    pub object: String,
    /// The resource a per-resource check found it blocking; `None` in the
    /// tenant-wide view.
    pub resource: Option<String>,
}

/// A booking as its time index holds it: what free/busy, slots and conflict
/// checks ask of a booking, so they never read its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedBooking {
    pub id: String,
    pub span: Span,
    /// `Free` for a cancelled booking.
    pub kind: BusyKind,
    /// The resources it takes; empty: every one (see [`crate::model::takes`]).
    pub resources: Vec<String>,
}

impl IndexedBooking {
    /// What the index holds of `booking`.
    pub fn of(booking: &Booking) -> Self {
        IndexedBooking {
            id: booking.id.clone(),
            span: booking.span(),
            kind: booking.busy_kind(),
            resources: booking.resources.clone(),
        }
    }

    /// Whether it blocks `resource` (the one rule, [`crate::model::takes`]).
    pub fn takes(&self, resource: &str) -> bool {
        crate::model::takes(&self.resources, resource)
    }

    /// Its busy entry, naming `resource` when a per-resource check found it.
    pub fn busy_entry(&self, resource: Option<&str>) -> BusyEntry {
        BusyEntry {
            span: self.span,
            kind: self.kind,
            source: BOOKINGS_SOURCE.to_owned(),
            object: self.id.clone(),
            resource: resource.map(str::to_owned),
        }
    }
}
