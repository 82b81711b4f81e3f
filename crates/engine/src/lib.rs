//! calgate's engines: what the gateway does with its data, with no HTTP.
//!
//! - [`bookings`]: create, update and cancel bookings with concurrency control
//!   and the conflict check.
//! - [`calendars`]: calendar sources and their iCalendar objects, expanded
//!   within a budget into the busy index.
//! - [`freebusy`]: merged busy time, availability and slots.
//! - [`conflicts`]: conflicts found after the fact, and their webhook.
//! - [`secrets`]: the key that encrypts provider tokens at rest.
//!
//! Each engine is built with what it uses (a store handle, the engines it
//! calls, the horizon), never with the whole server. The server crate wires
//! them together and puts HTTP in front of them.

/// The lower layers, under the paths the engines use.
pub use calgate_model::{ical, model, settings};
pub use calgate_store as store;

pub mod bookings;
pub mod calendars;
pub mod conflicts;
pub mod freebusy;
pub mod secrets;
