//! CalDAV server (RFC 4791, 4918, 6578).
pub mod xml;
