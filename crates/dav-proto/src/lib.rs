//! The WebDAV/CalDAV protocol, pure: no IO, no storage, no HTTP server.
//!
//! - [`xml`]: request bodies parsed into typed requests through a hardened reader,
//!   multistatus and `DAV:error` bodies written from typed values, typed
//!   preconditions.
//! - [`paths`]: the URL layout of the DAV tree, parsed into [`paths::DavPath`] and
//!   built back into hrefs.
//!
//! It depends on no other calgate crate; the DAV handlers in `calgate` load
//! resources and answer requests with it.

pub mod paths;
pub mod xml;
