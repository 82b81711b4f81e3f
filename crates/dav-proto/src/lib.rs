//! The WebDAV/CalDAV protocol, pure: no IO, no storage, no HTTP server (the `http`
//! crate's types only).
//!
//! - [`xml`]: request bodies parsed into typed requests through a hardened reader,
//!   multistatus and `DAV:error` bodies written from typed values, typed
//!   preconditions.
//! - [`request`]: a request's method, path, DAV headers (typed, parsed once) and
//!   body, built from the HTTP request head.
//! - [`paths`]: the URL layout of the DAV tree, parsed into [`paths::DavPath`] and
//!   built back into hrefs.
//!
//! It depends on no other calgate crate; the DAV handlers in `calgate` load
//! resources and answer requests with it.

pub mod paths;
pub mod request;
pub mod xml;
