//! calgate's engines: what the gateway does with its data, with no HTTP.
//!
//! - [`bookings`]: create, update and cancel bookings with concurrency control
//!   and the conflict check.
//! - [`calendars`]: calendar sources and their iCalendar objects, expanded
//!   within a budget into the busy index.
//! - [`freebusy`]: merged busy time, availability and slots.
//! - [`conflicts`]: conflicts found after the fact, and their webhook.
//! - [`secrets`]: the key that encrypts provider tokens at rest.
//! - [`connect`]: connected provider accounts (OAuth2), their API sessions,
//!   and the public URL people reach the gateway at.
//! - [`sync`]: the scheduler and the runs that import external sources.
//! - [`export`]: bookings pushed to Google and Microsoft calendars, and what
//!   their imports say back (through [`sync::ImportObserver`]).
//! - [`scheduling`]: implicit scheduling between a tenant's users (RFC 6638):
//!   who is told what on a write, and delivery from the durable outbox.
//! - [`tenants`]: the tenants the engines serve.
//!
//! Each engine is built with what it uses (a store handle, the engines it
//! calls, the horizon), never with the whole server. The server crate wires
//! them together and puts HTTP in front of them.

/// The lower layers, under the paths the engines use.
pub use calgate_model::{ical, model, settings};
pub use calgate_providers as providers;
/// Storage as the engines see it: the store traits of `calgate-store`, behind
/// one shared handle, whatever the backend.
pub mod store {
    /// The embedded sled backend (the concrete type, for opening one).
    pub use calgate_store::Store as SledStore;
    pub use calgate_store::*;

    /// A shared handle on a storage backend (sled today; any backend that
    /// passes `calgate_store::conformance`). It shadows the concrete sled
    /// `Store`, so no engine can depend on one backend.
    pub type Store = std::sync::Arc<dyn Backend>;
}

pub mod bookings;
pub mod calendars;
pub mod conflicts;
pub mod connect;
pub mod export;
pub mod freebusy;
pub mod scheduling;
pub mod secrets;
pub mod sync;
pub mod tenants;
