//! calgate's lowest layer, with no IO: what the gateway's data is.
//!
//! - [`model`]: bookings, sources, calendar objects, busy time, provider kinds and
//!   cursors, the indexing horizon, and their invariants.
//! - [`settings`]: a tenant's validated settings (users, keys, feeds, sources,
//!   opening hours, webhook) and the providers' OAuth applications.
//! - [`stored`]: records the store keeps beside them (export mapping and state,
//!   inbox messages, busy-index entries), whatever backend holds them.
//! - [`provisioned`]: tenants provisioned at run time, as the store keeps them.
//! - [`ical`]: the iCalendar codec: parsing, zones, recurrence expansion within a
//!   budget, writing, VTIMEZONE/VFREEBUSY, iTIP.
//!
//! Every crate above depends on this one; it depends on none of them.

pub mod ical;
pub mod model;
pub mod provisioned;
pub mod settings;
pub mod stored;
